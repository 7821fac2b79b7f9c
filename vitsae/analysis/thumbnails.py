"""A visual descriptor of every image that comes from neither model: a small RGB thumbnail.

The concept tables' visual-diversity statistic (and its null model) measures distances between these,
so that "visually diverse" does not depend on the networks being compared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vitsae.atomic import atomic_write
from vitsae.data.manifest import read_manifest, split_rows


def thumbnail_descriptors(paths: Sequence[str | os.PathLike], size: int = 4) -> np.ndarray:
    """``[N, size*size*3]`` float32 in [0, 1]: each image as a ``size``×``size`` RGB thumbnail (box filter)."""
    out = np.zeros((len(paths), size * size * 3), dtype=np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            thumb = im.convert("RGB").resize((size, size), Image.Resampling.BOX)
        out[i] = np.asarray(thumb, dtype=np.float32).reshape(-1) / 255.0
    return out


def thumbnails(manifest_path: str | os.PathLike, root: str | os.PathLike, split: str, out_path: str | os.PathLike,
               size: int = 4) -> Path:  # fmt: skip
    """``[images, size*size*3]`` float32 descriptors of the images of ``split`` in store order (the
    manifest's usable rows, :func:`vitsae.data.manifest.split_rows`), saved as ``.npz`` (``descriptors``)
    with their manifest rows beside (``rows``)."""
    rows = split_rows(read_manifest(Path(manifest_path)), split)
    if len(rows) == 0:
        raise ValueError(f"{manifest_path}: split {split!r} has no usable images")
    paths = [Path(root) / p for p in rows["path"]]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise FileNotFoundError(
            f"image {missing} (manifest {manifest_path}) does not exist; check the dataset root"
        )
    desc_ND = thumbnail_descriptors(paths, size)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez appends no suffix
            np.savez(fh, descriptors=desc_ND, rows=rows.index.to_numpy(np.int64))

    return atomic_write(out_path, save)
