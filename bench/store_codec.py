"""The cost of the crc32c checksum on every store chunk, measured in one run; ends with one JSON line.

    python bench/store_codec.py [--images 2048] [--tokens 257] [--d 384] [--chunk 256] [--repeats 5]

Two stores of the same fp16 activations, written chunk by chunk as extraction writes them (one
``arr[lo:hi] = block`` per chunk, then fsync), one with the project's codecs
(:func:`vitsae.data.store.checksum_codecs`: bytes + crc32c) and one with none (bytes only, as stores
were before). Then each is read back chunk by chunk, as the token loader reads it, once from the page
cache and once after its pages are evicted (posix_fadvise DONTNEED, as the paper's stores never fit in
RAM). Ratios are checksummed / plain throughput (1.0: free), medians of ``--repeats`` interleaved runs.
``check_chunks_mb_s`` is the rate of ``vitsae verify --deep``'s chunk check (cached).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from vitsae.data.store import check_chunks, checksum_codecs


def evict(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def write(path: Path, acts: np.ndarray, chunk: int, checksum: bool) -> float:
    if path.exists():
        shutil.rmtree(path)
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    arr = g.create_array("train", shape=acts.shape, chunks=(chunk, *acts.shape[1:]), dtype="float16",
                         compressors=checksum_codecs() if checksum else None, fill_value=np.nan)  # fmt: skip
    t0 = time.perf_counter()
    for lo in range(0, acts.shape[0], chunk):
        arr[lo : lo + chunk] = acts[lo : lo + chunk]
    for f in (path / "train").rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    return time.perf_counter() - t0


def read(path: Path, chunk: int, cold: bool) -> float:
    if cold:
        evict(path)
    arr = zarr.open_group(str(path), mode="r")["train"]
    t0 = time.perf_counter()
    total = 0.0
    for lo in range(0, arr.shape[0], chunk):
        total += float(arr[lo : lo + chunk][:, 1:, :1].sum())  # touch the block, as a gather would
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=257)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", type=Path, help="where to write the stores (default: a temporary directory)")
    args = ap.parse_args()
    acts = np.random.default_rng(0).standard_normal((args.images, args.tokens, args.d), dtype=np.float32)
    acts = acts.astype(np.float16)
    mb = acts.nbytes / 1e6
    base = Path(tempfile.mkdtemp(prefix="store-codec-", dir=args.dir))
    times: dict[str, list[float]] = {}
    try:
        for _ in range(args.repeats):
            for checksum in (False, True):
                name = "crc32c" if checksum else "plain"
                path = base / f"{name}.zarr"
                times.setdefault(f"write_{name}", []).append(write(path, acts, args.chunk, checksum))
                times.setdefault(f"read_cached_{name}", []).append(read(path, args.chunk, cold=False))
                times.setdefault(f"read_cold_{name}", []).append(read(path, args.chunk, cold=True))
        t0 = time.perf_counter()
        n, bad = check_chunks(base / "crc32c.zarr")
        check_s = time.perf_counter() - t0
        assert not bad and n == -(-args.images // args.chunk)
    finally:
        shutil.rmtree(base)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{mb:.0f} MB of fp16 activations, {args.images // args.chunk} chunks of {args.chunk} images "
          f"x {args.tokens} tokens x {args.d}; medians of {args.repeats}")  # fmt: skip
    print(f"{'':14s}{'plain MB/s':>12s}{'crc32c MB/s':>13s}{'ratio':>8s}")
    out = {"mb": round(mb, 1)}
    for what in ("write", "read_cached", "read_cold"):
        plain, crc = mb / med[f"{what}_plain"], mb / med[f"{what}_crc32c"]
        out[f"{what}_ratio"] = round(crc / plain, 3)
        print(f"{what:14s}{plain:12.0f}{crc:13.0f}{crc / plain:8.3f}")
    out["check_chunks_mb_s"] = round(mb / check_s)
    print(f"check_chunks (verify --deep, cached): {mb / check_s:.0f} MB/s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
