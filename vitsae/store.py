"""Zarr v3 activation stores: the on-disk contract between extraction and every later stage.

One store per (dataset, model, layer): a Zarr v3 *group* at
``results/activations/{dataset}/{model}/layer{layer}.zarr`` holding one array per split
(``train``, ``val``, ...), each ``float16 [images, tokens, d]`` with one chunk per extraction
batch of images and all tokens of an image in that chunk, plus ``{split}_rows`` (int64 [images]):
the manifest row of each image. The group's attrs hold::

    complete: true                      # set last, just before publishing
    token_layout: {n_tokens, n_prefix, n_registers, cls_index, grid: [h, w]}
    model: {...}, preprocessing: {...}, layer: int, dataset: str, manifest_sha256: str,
    splits: {split: n_images}

A store is written under a temporary name beside its final path and renamed into place only
after validation (:func:`publish`), so a killed job never leaves a store that a reader accepts:
:func:`open_store` refuses anything without ``complete: true``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zarr

TOKEN_KINDS = ("all", "patches", "cls")


class StoreError(RuntimeError):
    """A store is missing, incomplete or inconsistent."""


def token_slice(layout: dict, kind: str) -> slice:
    """Token positions of ``kind`` ('all', 'patches' or 'cls') in a store with ``layout``."""
    if kind == "all":
        return slice(0, layout["n_tokens"])
    if kind == "patches":
        return slice(layout["n_prefix"], layout["n_tokens"])
    if kind == "cls":
        i = layout["cls_index"]
        return slice(i, i + 1)
    raise ValueError(f"token kind {kind!r} is not one of {TOKEN_KINDS}")


def open_store(path: str | os.PathLike) -> zarr.Group:
    """Open a published store read-only; refuse a missing or unfinished one with a clear message."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"activation store {path} does not exist; run the extraction rule that makes it")
    group = zarr.open_group(str(path), mode="r")
    if group.attrs.get("complete") is not True:
        raise StoreError(
            f"activation store {path} is incomplete (no 'complete: true' in its attrs); "
            "delete it and rerun extraction"
        )
    return group


def split_array(group: zarr.Group, split: str) -> zarr.Array:
    splits = group.attrs.get("splits", {})
    if split not in splits:
        raise StoreError(f"store {group.store} has no split {split!r}; it has {sorted(splits)}")
    return group[split]


def chunk_ranges(n_images: int, chunk_images: int) -> list[tuple[int, int]]:
    """[start, stop) image ranges of the chunks of an array with ``n_images`` rows."""
    return [(s, min(s + chunk_images, n_images)) for s in range(0, n_images, chunk_images)]


def iter_chunks(
    array: zarr.Array, order: np.ndarray | None = None, tokens: slice = slice(None)
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_image, acts_BTD)`` for each whole chunk, in ``order`` (chunk indices) if given.

    Reading whole chunks is what keeps a Zarr store fast (shared/FACTS.md: random single-image
    reads are 20-100x slower than chunk reads).
    """
    ranges = chunk_ranges(array.shape[0], array.chunks[0])
    indices = range(len(ranges)) if order is None else order
    for i in indices:
        start, stop = ranges[int(i)]
        yield start, array[start:stop, tokens]


def temporary_path(final: Path) -> Path:
    """Where a store is written before it is published: beside ``final``, so the rename is atomic."""
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def create_group(tmp: Path, attrs: dict) -> zarr.Group:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    group.attrs.update({**attrs, "complete": False})
    return group


def create_split(group: zarr.Group, split: str, shape: tuple[int, int, int], chunk_images: int) -> zarr.Array:
    """An fp16 ``[images, tokens, d]`` array, one chunk per ``chunk_images`` images, uncompressed.

    fp16 activations compress by ~8% at best (shared/FACTS.md), so no codec: writes and reads
    stay at disk speed.
    """
    n, t, d = shape
    arr = group.create_array(
        split, shape=shape, chunks=(max(1, min(chunk_images, n)), t, d), dtype="float16", compressors=None,
        fill_value=np.nan,
    )
    group.create_array(f"{split}_rows", shape=(n,), chunks=(max(1, n),), dtype="int64", compressors=None)
    return arr


def publish(tmp: Path, final: Path, expected: dict[str, int]) -> None:
    """Validate the store written at ``tmp`` and rename it to ``final``.

    ``expected`` maps split → number of images the manifest says it must hold. The arrays are
    created with NaN as fill value, so a chunk that was never written reads as NaN and fails here.
    """
    group = zarr.open_group(str(tmp), mode="r+")
    for split, n in expected.items():
        if split not in group:
            raise StoreError(f"{final}: split {split!r} was never written")
        arr = group[split]
        if arr.shape[0] != n:
            raise StoreError(f"{final}: split {split!r} holds {arr.shape[0]} images, the manifest has {n}")
        written = group.attrs.get("written", {}).get(split, 0)
        if written != n:
            raise StoreError(f"{final}: split {split!r} has {written} of {n} images written")
    group.attrs["complete"] = True
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def write_arrays(path: str | os.PathLike, attrs: dict, arrays: dict[str, np.ndarray], chunk_images: int) -> Path:
    """Write a complete store from in-memory arrays (tests, synthetic data), through :func:`publish`."""
    final = Path(path)
    tmp = temporary_path(final)
    group = create_group(tmp, {**attrs, "splits": {k: int(v.shape[0]) for k, v in arrays.items()}})
    for split, acts in arrays.items():
        arr = create_split(group, split, acts.shape, chunk_images)
        arr[:] = acts.astype(np.float16)
        group[f"{split}_rows"][:] = np.arange(acts.shape[0])
    group.attrs["written"] = {k: int(v.shape[0]) for k, v in arrays.items()}
    publish(tmp, final, {k: int(v.shape[0]) for k, v in arrays.items()})
    return final
