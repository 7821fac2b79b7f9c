"""Synthetic activation stores for the unit tests: a planted dictionary shaped like ViT activations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vitsae.data import store
from vitsae.data.settings import ModelSpec
from vitsae.data.store import write_arrays
from vitsae.sae.settings import TrainSettings

#: A random-weight DINOv2-S/14 at 56 px (4 x 4 patches): the extraction tests' model.
SPEC = ModelSpec("dinov2-s14", "dinov2", "vit_small_patch14_dinov2.lvd142m", False, 56)

N_PREFIX = 1


def layout(n_tokens: int) -> dict:
    grid = [1, n_tokens - N_PREFIX]
    return {"n_tokens": n_tokens, "n_prefix": N_PREFIX, "n_registers": 0, "cls_index": 0, "grid": grid}


def make_store(path: Path, arrays: dict[str, np.ndarray], chunk_images: int) -> Path:
    n_tokens = next(iter(arrays.values())).shape[1]
    model = {"name": "synthetic"}
    attrs = {"token_layout": layout(n_tokens), "dataset": "planted", "layer": 3, "model": model}
    return write_arrays(path, attrs, arrays, chunk_images=chunk_images)


def planted(
    n_images: int = 600, n_tokens: int = 17, d: int = 64, n_atoms: int = 256, k: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """x = Σ aᵢdᵢ + offset + noise: unit-norm atoms, k active per token with magnitudes in [0.5, 2],
    a per-dimension offset with a few large dimensions (as ViT activations have)."""
    rng = np.random.default_rng(seed)
    atoms_AD = rng.standard_normal((n_atoms, d))
    atoms_AD /= np.linalg.norm(atoms_AD, axis=1, keepdims=True)
    n = n_images * n_tokens
    idx_NK = np.argsort(rng.random((n, n_atoms)), axis=1)[:, :k]
    codes_NA = np.zeros((n, n_atoms))
    np.put_along_axis(codes_NA, idx_NK, rng.uniform(0.5, 2.0, (n, k)), axis=1)
    offset_D = 2.0 * rng.standard_normal(d)
    offset_D[:3] = [8.0, -6.0, 5.0]
    x_ND = codes_NA @ atoms_AD + offset_D + 0.02 * rng.standard_normal((n, d))
    return atoms_AD, x_ND.reshape(n_images, n_tokens, d).astype(np.float32)


#: Training settings of the planted-dictionary tests (test_train, test_null_training).
PLANTED_TRAINING = TrainSettings(
    batch_size=256, train_tokens=200_000, shuffle_chunks=4, lr_warmup_steps=5, l1_warmup_steps=20,
    log_every=100, checkpoint_every=1000, dead_steps=50,
)  # fmt: skip


def make_folder(root: Path, n_per_class: dict[str, int], seed: int = 0) -> None:
    """An imagefolder dataset of random JPEGs: ``root/{split}/{cat,dog}/*.jpg``, n per class and split."""
    rng = np.random.default_rng(seed)
    for split, n in n_per_class.items():
        for label in ("cat", "dog"):
            d = root / split / label
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (40 + i % 3 * 8, 64, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{label}_{i}.jpg", quality=90)


def store_files(path: Path) -> dict[str, bytes]:
    """Every file of a store by relative path (Snakemake's timestamp file left out)."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".snakemake_timestamp"}  # fmt: skip


def assert_same_store(a: Path, b: Path) -> None:
    """Same files with the same bytes; the group metadata compared as JSON (key order may differ)."""
    fa, fb = store_files(a), store_files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name == "zarr.json":
            assert json.loads(fa[name]) == json.loads(fb[name])
        else:
            assert fa[name] == fb[name], name
    ga, gb = store.open_store(a), store.open_store(b)
    assert ga.attrs.asdict() == gb.attrs.asdict()
    for split in ga.attrs["splits"]:
        np.testing.assert_array_equal(ga[split][:], gb[split][:])
        np.testing.assert_array_equal(ga[f"{split}_rows"][:], gb[f"{split}_rows"][:])
