"""Visual descriptors of every image that come from neither model: a small RGB thumbnail, and descriptors
of the cells of the image's centre square.

The concept tables' visual-diversity statistic (and its null model) measures distances between the
thumbnails, so that "visually diverse" does not depend on the networks being compared; the region
diversity (:mod:`vitsae.analysis.regions`) measures it on the cells where a feature fires.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vitsae.analysis.regions import REGION_CELLS, cell_descriptors
from vitsae.atomic import atomic_write
from vitsae.data.manifest import read_manifest, split_rows


def thumbnail_descriptors(paths: Sequence[str | os.PathLike], size: int = 4) -> np.ndarray:
    """``[N, size*size*3]`` float32 in [0, 1]: each image as a ``size``×``size`` RGB thumbnail (box filter)."""
    return image_descriptors(paths, size, 0)[0]


def image_descriptors(paths: Sequence[str | os.PathLike], size: int = 4,
                      cells: int = REGION_CELLS) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """Each image opened once: its thumbnail (:func:`thumbnail_descriptors`) and, with ``cells`` > 0, its
    cell descriptors ``[N, cells * cells, descriptors]`` float16 (:func:`vitsae.analysis.regions.
    cell_descriptors`; None with ``cells`` 0)."""
    out = np.zeros((len(paths), size * size * 3), dtype=np.float32)
    cells_NCD = None
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            thumb = rgb.resize((size, size), Image.Resampling.BOX)
            if cells:
                c = cell_descriptors(rgb, cells)
                if cells_NCD is None:
                    cells_NCD = np.zeros((len(paths), *c.shape), dtype=np.float16)
                cells_NCD[i] = c
        out[i] = np.asarray(thumb, dtype=np.float32).reshape(-1) / 255.0
    return out, cells_NCD


def thumbnails(manifest_path: str | os.PathLike, root: str | os.PathLike, split: str, out_path: str | os.PathLike,
               size: int = 4, cells: int = REGION_CELLS) -> Path:  # fmt: skip
    """``[images, size*size*3]`` float32 descriptors of the images of ``split`` in store order (the
    manifest's usable rows, :func:`vitsae.data.manifest.split_rows`), saved as ``.npz`` (``descriptors``)
    with their manifest rows beside (``rows``) and, with ``cells`` > 0, the cell descriptors (``cells``,
    :func:`image_descriptors`)."""
    rows = split_rows(read_manifest(Path(manifest_path)), split)
    if len(rows) == 0:
        raise ValueError(f"{manifest_path}: split {split!r} has no usable images")
    paths = [Path(root) / p for p in rows["path"]]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise FileNotFoundError(
            f"image {missing} (manifest {manifest_path}) does not exist; check the dataset root"
        )
    desc_ND, cells_NCD = image_descriptors(paths, size, cells)
    extra = {} if cells_NCD is None else {"cells": cells_NCD}

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez appends no suffix
            np.savez(fh, descriptors=desc_ND, rows=rows.index.to_numpy(np.int64), **extra)

    return atomic_write(out_path, save)
