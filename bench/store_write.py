"""Chunk writes with and without zarr's scan for "all fill value", measured in one run; ends with one JSON line.

    python bench/store_write.py [--chunks 4] [--images 256] [--tokens 257] [--d 768] [--repeats 5] [--dir DIR]

The same fp16 activation chunks (default 256 images x 257 tokens x 768 dims, 101 MB each: one extraction
batch of DINOv2 ViT-B/14 at 224 px) are written one ``arr[lo:hi] = chunk`` at a time, as extraction writes
them, into an array with the store's codecs (:func:`vitsae.data.store.checksum_codecs`) and fill value (NaN):

* ``scan on``: zarr's default ``write_empty_chunks=False``, which compares every chunk with the fill value
  before writing it (``np.array_equal(..., equal_nan=True)``, single-threaded);
* ``scan off``: ``config={"write_empty_chunks": True}``;
* ``store.create_split``: the array the project's stores use (it must match ``scan off``).

Writes go to the page cache (no fsync: the scan is what is measured, not the disk). The settings are
interleaved, their order alternating, ``--repeats`` times; each figure is the median over all chunk writes
of that setting. ``scan_off_vs_on`` is seconds per chunk with the scan over seconds without (how many times
faster a write is without it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from vitsae.data import store

SETTINGS = ("scan on", "scan off", "store.create_split")


def create(path: Path, setting: str, shape: tuple[int, int, int], chunk: int) -> zarr.Array:
    if path.exists():
        shutil.rmtree(path)
    if setting == "store.create_split":
        return store.create_split(store.create_group(path, {}), "train", shape, chunk)
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    return g.create_array("train", shape=shape, chunks=(chunk, *shape[1:]), dtype="float16",
                          compressors=store.checksum_codecs(), fill_value=np.nan,
                          config={"write_empty_chunks": setting == "scan off"})  # fmt: skip


def write_chunks(path: Path, setting: str, chunks: list[np.ndarray]) -> list[float]:
    """Seconds of each chunk's write into a new array of ``setting``."""
    b = chunks[0].shape[0]
    arr = create(path, setting, (b * len(chunks), *chunks[0].shape[1:]), b)
    times = []
    for i, chunk in enumerate(chunks):
        t0 = time.perf_counter()
        arr[i * b : (i + 1) * b] = chunk
        times.append(time.perf_counter() - t0)
    shutil.rmtree(path)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=257)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", type=Path, help="where to write (default: a temporary directory)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.images, args.tokens, args.d)
    chunks = [rng.standard_normal(shape, dtype=np.float32).astype(np.float16) for _ in range(args.chunks)]
    mb = chunks[0].nbytes / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="vitsae-bench-store-write-", dir=args.dir))
    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    try:
        for r in range(args.repeats):
            for setting in SETTINGS if r % 2 == 0 else reversed(SETTINGS):
                times[setting] += write_chunks(tmp / "s.zarr", setting, chunks)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per_chunk = {s: statistics.median(t) for s, t in times.items()}
    print(f"{args.chunks} chunks of {shape} fp16 ({mb:.1f} MB), {args.repeats} interleaved repeats")
    print(f"{'':<20} {'s/chunk':>9} {'MB/s':>8}")
    for s in SETTINGS:
        print(f"{s:<20} {per_chunk[s]:>9.3f} {mb / per_chunk[s]:>8.0f}")
    print(
        json.dumps(
            {
                "scan_off_vs_on": round(per_chunk["scan on"] / per_chunk["scan off"], 2),
                "store_vs_scan_off": round(per_chunk["store.create_split"] / per_chunk["scan off"], 2),
                "s_per_chunk": {s: round(v, 4) for s, v in per_chunk.items()},
                "MB_per_chunk": round(mb, 1),
                "chunk_shape": list(shape),
                "chunks": args.chunks,
                "repeats": args.repeats,
                "zarr": zarr.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
