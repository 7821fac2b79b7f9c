"""SAE sweep training on a lent GPU: 8 stacked 16x SAEs at d=768, from memory and from a store on local disk.

    python bench/gpu/sae_train_gpu.py [--tf32]         # on the GPU machine (about 3 minutes)
    python bench/gpu/sae_train_gpu.py --device cpu --d 64 --steps 4 --store-mb 20   # a smoke run here

Prints a short table and one JSON line:
* ``stacked_memory_sae_tokens_per_s``: 8 SAEs stacked (vitsae.sae.train, compiled), batches already on the GPU.
  The goal is ≥ 3M SAE-tokens/s on an H100/H200.
* ``stacked_store_sae_tokens_per_s``: the same 8 SAEs trained from a store on local disk through
  vitsae.data.loader.TokenStream (pinned memory, non-blocking copies), page cache evicted first.
* ``single_compiled_sae_tokens_per_s``: one SAE, compiled, from memory; ``stacked_vs_single`` is the
  ratio of the stacked rate to it (how much of a single SAE's speed each stacked SAE keeps, times 8).
* ``disk_read_mb_per_s``: the disk's sequential read rate of the store's chunk files (cold), the limit of
  training from disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_train import make_store

from vitsae.sae.settings import SAESpec, TrainSettings
from vitsae.sae.train import train_sweep, train_sweep_from_store


class DeviceStream:
    """The stream interface train_sweep uses, over batches already on the device."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = batches

    def peek(self, n: int) -> np.ndarray:
        return self.batches[0][:n].float().cpu().numpy()

    def __iter__(self):
        return iter(self.batches)

    def close(self) -> None:
        pass


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (written pages are flushed first: dirty pages stay)."""
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def timed_memory_run(
    specs: list[SAESpec], batches: list[torch.Tensor], settings: TrainSettings, d: int, device: torch.device
) -> float:
    """Seconds for the steps after the first two (compilation and warm-up happen there)."""
    marks: list[float] = []

    class Timed(DeviceStream):
        def __iter__(self):
            for i, x in enumerate(self.batches):
                if i == 2:
                    sync(device)
                    marks.append(time.perf_counter())
                yield x

    train_sweep(lambda start: Timed(batches), specs, settings, d, device=device)
    sync(device)
    return time.perf_counter() - marks[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--expansion", type=int, default=16)
    ap.add_argument("--n-saes", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=60, help="timed steps (two more are warm-up)")
    ap.add_argument("--store-mb", type=float, default=6000, help="size of the store trained from")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument(
        "--tf32", action="store_true", help="float32 matmuls on TF32 tensor cores (default: full fp32)"
    )
    ap.add_argument("--dir", type=Path, help="where the store goes (default: a temporary directory)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.tf32:
        torch.set_float32_matmul_precision("high")
    d, B, S = args.d, args.batch, args.n_saes
    compile_ = not args.no_compile and device.type == "cuda"
    specs = [
        SAESpec("relu_l1", args.expansion, l1_coeff=c, lr=4e-4, seed=s)
        for c in (1.5, 3.0, 6.0, 12.0)
        for s in (0, 1)
    ][:S]
    n_batches = args.steps + 2
    settings = TrainSettings(
        batch_size=B,
        train_tokens=n_batches * B,
        log_every=10**6,
        checkpoint_every=10**6,
        lr_warmup_steps=10,
        l1_warmup_steps=10,
        compile=compile_,
    )
    gen = torch.Generator(device="cpu").manual_seed(0)
    offset = torch.randn(d, generator=gen)
    batches = [(torch.randn(B, d, generator=gen) + offset).to(device) for _ in range(n_batches)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {name}; {S} x relu_l1 d={d} x{args.expansion} (d_sae {d * args.expansion}); batch {B}; "
        f"{args.steps} timed steps; compile {compile_}; tf32 {args.tf32}"
    )

    t_single = timed_memory_run(specs[:1], batches, settings, d, device)
    single = args.steps * B / t_single
    t_stacked = timed_memory_run(specs, batches, settings, d, device)
    stacked_mem = S * args.steps * B / t_stacked
    del batches

    work = args.dir or Path(tempfile.mkdtemp(prefix="vitsae-gpu-sae-"))
    work.mkdir(parents=True, exist_ok=True)
    n_tokens = 257  # DINOv2 ViT-B/14 at 224 px: CLS + 256 patches
    n_images = max(64, round(args.store_mb * 1e6 / (n_tokens * d * 2)))
    store = work / "train.zarr"
    if not store.exists():
        make_store(store, n_images, n_tokens, d, chunk_images=256)
    files = [p for p in (store / "train").rglob("*") if p.is_file() and p.name != "zarr.json"]
    evict(files)
    t0, read = time.perf_counter(), 0
    for p in files:
        read += len(p.read_bytes())
    disk_mb_s = read / 1e6 / (time.perf_counter() - t0)
    evict(files)
    split_tokens = n_images * (n_tokens - 1)
    store_settings = TrainSettings(**{**settings.to_dict(), "train_tokens": split_tokens // B * B})
    sync(device)
    t0 = time.perf_counter()
    train_sweep_from_store(
        store, "train", specs, store_settings, [work / "out" / str(i) for i in range(S)], {}, device=device
    )
    sync(device)
    t_store = time.perf_counter() - t0
    stacked_store = S * store_settings.train_tokens / t_store
    if args.dir is None:
        shutil.rmtree(work)

    rows = [
        (f"1 SAE{', compiled' if compile_ else ''}, from memory", single / 1e6, ""),
        (f"{S} stacked, from memory", stacked_mem / 1e6, f"{stacked_mem / single:.2f} x single"),
        (
            f"{S} stacked, from disk ({read / 1e9:.1f} GB)",
            stacked_store / 1e6,
            (
                f"tokens/s {stacked_store / S / 1e6:.2f}M; disk {disk_mb_s:,.0f} MB/s = "
                f"{disk_mb_s * 1e6 / (d * 2) / 1e6:.2f}M tokens/s"
            ),
        ),
    ]
    print(f"{'run':<40} {'M SAE-tokens/s':>15}  note")
    for label, rate, note in rows:
        print(f"{label:<40} {rate:>15.2f}  {note}")
    print(
        json.dumps(
            {
                "device": name,
                "compile": compile_,
                "tf32": args.tf32,
                "single_compiled_sae_tokens_per_s": round(single),
                "stacked_memory_sae_tokens_per_s": round(stacked_mem),
                "stacked_store_sae_tokens_per_s": round(stacked_store),
                "stacked_vs_single": round(stacked_mem / single, 3),
                "disk_read_mb_per_s": round(disk_mb_s),
                "store_tokens_per_s_vs_disk": round(stacked_store / S / (disk_mb_s * 1e6 / (d * 2)), 3),
                "goal_3M_in_memory_met": stacked_mem >= 3e6 if device.type == "cuda" else None,
            }
        )
    )


if __name__ == "__main__":
    main()
