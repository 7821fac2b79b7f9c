"""Extraction: manifest × model × layer → one Zarr activation store (see vitsae.store for the layout).

The model runs only up to the requested block. One extraction batch is one Zarr chunk, so every
write is chunk-aligned (FACTS.md: misaligned writes are >10x slower). The store is written under
a temporary name, validated, and only then renamed into place.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from vitsae import store
from vitsae.manifest import manifest_digest, read_manifest
from vitsae.models import ModelSpec, load_model

log = logging.getLogger("vitsae.activations")


class ImageDecodeError(ValueError):
    """An image listed as ok in the manifest cannot be decoded any more."""


class _Images(torch.utils.data.Dataset):
    def __init__(self, root: Path, paths: list[str], transform) -> None:
        self.root, self.paths, self.transform = root, paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        path = self.root / self.paths[i]
        try:
            with Image.open(path) as im:
                return self.transform(im.convert("RGB"))
        except Exception as e:
            raise ImageDecodeError(
                f"cannot decode {path} ({type(e).__name__}: {e}); it was readable when the manifest was built: "
                "restore the file, or delete the manifest so it is rebuilt"
            ) from e


def split_rows(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """The images of ``split`` that a store holds: manifest order, corrupt ones left out."""
    ok = manifest[(manifest["split"] == split) & (manifest["status"] == "ok")]
    return ok


def extract(
    manifest_path: str | Path,
    dataset_root: str | Path,
    dataset: str,
    spec: ModelSpec,
    layer: int,
    out_path: str | Path,
    splits: list[str],
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
) -> Path:
    """Write ``out_path`` (a Zarr v3 group, one fp16 array per split) and publish it when complete."""
    out_path, dataset_root = Path(out_path), Path(dataset_root)
    manifest = read_manifest(manifest_path)
    vm = load_model(spec, device=device)
    vm.check_layer(layer)
    for stale in out_path.parent.glob(f".{out_path.name}.partial-*"):
        log.info("removing the unfinished store %s left by an earlier, killed job", stale)
        shutil.rmtree(stale)
    tmp = store.temporary_path(out_path)
    selected = {split: split_rows(manifest, split) for split in splits}
    for split, rows in selected.items():
        if len(rows) == 0:
            raise ValueError(f"{manifest_path}: split {split!r} has no usable images for dataset '{dataset}'")
    attrs = {
        "dataset": dataset,
        "layer": int(layer),
        "model": spec.to_dict(),
        "weights": vm.weights,
        "preprocessing": vm.preprocessing,
        "token_layout": vm.token_layout,
        "d_model": int(vm.d_model),
        "dtype": "float16",
        "manifest": str(manifest_path),
        "manifest_sha256": manifest_digest(manifest_path),
        "splits": {s: len(r) for s, r in selected.items()},
        "written": {},
    }
    group = store.create_group(tmp, attrs)
    layout = vm.token_layout
    written: dict[str, int] = {}
    for split, rows in selected.items():
        n = len(rows)
        arr = store.create_split(group, split, (n, layout["n_tokens"], vm.d_model), batch_size)
        group[f"{split}_rows"][:] = rows.index.to_numpy(dtype=np.int64)
        paths = rows["path"].tolist()
        loader = torch.utils.data.DataLoader(_Images(dataset_root, paths, vm.transform), batch_size=batch_size,
                                             shuffle=False, num_workers=num_workers)
        start, t0 = 0, time.perf_counter()
        for b, x_BCHW in enumerate(loader):
            acts_BTD = vm.block_output(x_BCHW.to(device), layer)
            if acts_BTD.shape[1:] != (layout["n_tokens"], vm.d_model):
                raise RuntimeError(f"{spec.name} layer {layer}: got {tuple(acts_BTD.shape)}, layout says {layout}")
            acts_BTD = acts_BTD.to(torch.float16)
            finite_B = torch.isfinite(acts_BTD).flatten(1).all(dim=1)
            if not bool(finite_B.all()):
                bad = [paths[start + i] for i in torch.nonzero(~finite_B).flatten().tolist()]
                raise FloatingPointError(
                    f"{spec.name} layer {layer} gave NaN/Inf (or fp16 overflow) for {len(bad)} image(s) of "
                    f"{dataset}/{split}, e.g. {bad[:5]}; no store was published"
                )
            stop = start + acts_BTD.shape[0]
            arr[start:stop] = acts_BTD.cpu().numpy()
            start = stop
            if b % 10 == 0 or stop == n:
                rate = stop / max(time.perf_counter() - t0, 1e-9)
                log.info("%s/%s %s layer %d: %d/%d images (%.1f img/s)", dataset, split, spec.name, layer, stop,
                         n, rate)
        written[split] = start
        group.attrs["written"] = dict(written)
    store.publish(tmp, out_path, {s: len(r) for s, r in selected.items()})
    log.info("published %s", out_path)
    return out_path
