"""SAE sweep training on a lent GPU: 8 stacked 16x SAEs at d=768, steady state, fixed costs and stages.

    python bench/gpu/sae_train_gpu.py                 # on the GPU machine (a few minutes)
    python bench/gpu/sae_train_gpu.py --device cpu --d 32 --expansion 4 --batch 256 --steps 4 --warmup 2 \\
        --store-mb 4 --quality-tokens 40000          # a smoke run here (tests/unit/test_fused_step.py)

Every run goes through vitsae.sae.train.train_sweep with a vitsae.sae.stages.StepProfile (CUDA events on
the current stream, no synchronisation inside the run). The **steady state** is the steps after
``--warmup`` (compilation and the first cold buffers happen there): SAE-tokens/s = S·B·steps over the
profile's total for those steps, which is the sum of its stages (``wait`` for the batch, ``forward``,
``backward``, ``update``, ``log``). The **fixed cost** is the rest of the call's wall time (set-up,
compilation, warm-up steps, writing the SAEs), printed separately.

Runs (one table row each, then the stage table of each):
* ``memory``: the S SAEs stacked, batches already on the device (``--precision``, default the
  trainer's: bf16 on CUDA; compiled on CUDA). Goal on an H100/H200: >= 4M SAE-tokens/s.
* ``store``: the same from a store on local disk through TokenStream and the DeviceFeeder, page cache
  evicted first. Goal: >= 0.95 of ``memory``.
* ``single``: one SAE from memory (what stacking keeps of a single SAE's speed).
* ``precision``: the memory run in fp32 and tf32 too (CUDA only), for the table.
* ``quality``: bf16 against fp32 on a planted store shaped like ViT activations (vitsae.sae.planted: offsets,
  outlier dimensions, power-law frequencies): fp32 SAEs of seeds 0, 1, 2 and a bf16 SAE of seed 0,
  compared by vitsae.analysis.quality.precision_check (FVU, L0, dead share and one-to-one decoder
  matches against the seed-to-seed spread).
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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

from vitsae.analysis.quality import precision_check
from vitsae.sae import planted
from vitsae.sae.checkpoint import load
from vitsae.sae.settings import SAESpec, TrainSettings
from vitsae.sae.stages import STAGES, StepProfile
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


def measured(run, device: torch.device, n_saes: int, batch: int, warmup: int) -> dict:
    """``run(profile)`` timed: steady SAE-tokens/s after ``warmup`` steps, fixed seconds, the stages."""
    profile = StepProfile(device)
    sync(device)
    t0 = time.perf_counter()
    run(profile)
    sync(device)
    wall = time.perf_counter() - t0
    stages = profile.summary(first_step=warmup + 1)
    return {"rate": n_saes * batch * stages["steps"] / stages["total"], "fixed_s": wall - stages["total"],
            "wall_s": wall, "stages": stages}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--expansion", type=int, default=16)
    ap.add_argument("--n-saes", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=100, help="steady-state steps timed, after the warm-up")
    ap.add_argument("--warmup", type=int, default=10, help="steps not counted (compilation, cold buffers)")
    ap.add_argument("--store-mb", type=float, default=4000, help="size of the store trained from")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "tf32", "bf16"])
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--quality-tokens", type=int, default=4_000_000, help="tokens of the bf16/fp32 check")
    ap.add_argument("--dir", type=Path, help="where the store goes (default: a temporary directory)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    d, B, S, W = args.d, args.batch, args.n_saes, args.warmup
    specs = [SAESpec("relu_l1", args.expansion, l1_coeff=c, lr=1e-2, seed=s)
             for c in (1.5, 3.0, 6.0, 12.0) for s in (0, 1)][:S]  # fmt: skip
    n_batches = W + args.steps
    settings = TrainSettings(batch_size=B, train_tokens=n_batches * B, log_every=10**6, checkpoint_every=10**6,
                             lr_warmup_steps=10, l1_warmup_steps=10, precision=args.precision,
                             compile=False if args.no_compile else "auto")  # fmt: skip
    resolved = settings.resolved(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    offset = torch.randn(d, generator=gen)
    batches = [(torch.randn(B, d, generator=gen) + offset).to(device) for _ in range(n_batches)]
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device {name}; {S} x relu_l1 d={d} x{args.expansion} (d_sae {d * args.expansion}); batch {B}; "
          f"{W} warm-up + {args.steps} timed steps; compile {resolved.compile}; precision {resolved.precision}")  # fmt: skip

    def memory(specs_, settings_):
        return lambda profile: train_sweep(lambda start: DeviceStream(batches), specs_, settings_, d,
                                           device=device, profile=profile)  # fmt: skip

    runs = {"memory": measured(memory(specs, settings), device, S, B, W),
            "single": measured(memory(specs[:1], settings), device, 1, B, W)}  # fmt: skip
    if cuda:
        for p in ("fp32", "tf32", "bf16"):
            if p != resolved.precision:
                other = dataclasses.replace(settings, precision=p)
                runs[f"memory {p}"] = measured(memory(specs, other), device, S, B, W)
    batches.clear()  # the device memory goes back before the store run

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
    store_settings = dataclasses.replace(settings, train_tokens=split_tokens // B * B)
    runs["store"] = measured(
        lambda profile: train_sweep_from_store(
            store,
            "train",
            specs,
            store_settings,
            [work / "out" / str(i) for i in range(S)],
            {},
            device=device,
            profile=profile,
        ),
        device,
        S,
        B,
        W,
    )

    # bf16 against fp32 on a planted store shaped like ViT activations
    spec = planted.PlantedSpec()
    q_settings = TrainSettings(batch_size=min(B, 4096), train_tokens=args.quality_tokens, lr_warmup_steps=20,
                               l1_warmup_steps=200, log_every=10**6, checkpoint_every=10**6)  # fmt: skip
    q_store = planted.write_store(
        work / "planted.zarr", 11, spec, math.ceil(args.quality_tokens / 16) + 64, 1024
    )
    q_specs = [SAESpec(expansion=8, l1_coeff=3.0, lr=1e-2, seed=s) for s in (0, 1, 2)]
    fp32_dirs = [work / "q32" / s.id for s in q_specs]
    train_sweep_from_store(q_store, "train", q_specs, dataclasses.replace(q_settings, precision="fp32"), fp32_dirs,
                           {}, device=device)  # fmt: skip
    train_sweep_from_store(q_store, "train", q_specs[:1], dataclasses.replace(q_settings, precision="bf16"),
                           [work / "q16"], {}, device=device)  # fmt: skip
    x_ND, _ = planted.val_tokens(q_store, 11, spec)
    quality = precision_check([load(p) for p in fp32_dirs], load(work / "q16"), torch.from_numpy(x_ND))
    if args.dir is None:
        shutil.rmtree(work)

    disk_tokens_s = disk_mb_s * 1e6 / (d * 2)
    print(f"\n{'run':<16} {'M SAE-tokens/s':>15} {'fixed s':>9}  note")
    for label, r in runs.items():
        note = {"store": f"{r['rate'] / runs['memory']['rate']:.2f} x memory; disk {disk_mb_s:,.0f} MB/s = "
                         f"{disk_tokens_s / 1e6:.2f}M tokens/s = {disk_tokens_s * S / 1e6:.1f}M SAE-tokens/s",
                "single": f"stacked keeps {runs['memory']['rate'] / r['rate'] / S:.2f} of it per SAE"}.get(label, "")  # fmt: skip
        print(f"{label:<16} {r['rate'] / 1e6:>15.3f} {r['fixed_s']:>9.2f}  {note}")
    print(
        f"\nstages, steady state (seconds; share of the total){'':4}" + " ".join(f"{s:>16}" for s in STAGES)
    )
    for label, r in runs.items():
        st = r["stages"]
        print(f"{label:<54}" + " ".join(f"{st[s]:>8.3f} ({st[s] / st['total']:4.0%})" for s in STAGES))
    print("\nbf16 against fp32 (seed 0; spread: the other fp32 seeds)")
    print(quality.to_string(index=False))
    print(json.dumps({
        "device": name, "compile": resolved.compile, "precision": resolved.precision,
        "memory_sae_tokens_per_s": round(runs["memory"]["rate"]),
        "store_sae_tokens_per_s": round(runs["store"]["rate"]),
        "single_sae_tokens_per_s": round(runs["single"]["rate"]),
        "store_vs_memory": round(runs["store"]["rate"] / runs["memory"]["rate"], 3),
        "fixed_s": {k: round(r["fixed_s"], 2) for k, r in runs.items()},
        "stages_s": {k: {s: round(r["stages"][s], 4) for s in (*STAGES, "total")} for k, r in runs.items()},
        "other_precisions_sae_tokens_per_s": {k.split()[1]: round(r["rate"]) for k, r in runs.items() if " " in k},
        "disk_read_mb_per_s": round(disk_mb_s),
        "bf16_within_seed_spread": bool(quality["within"].all()),
        "goal_4M_in_memory_met": runs["memory"]["rate"] >= 4e6 if cuda else None,
        "goal_store_095_met": runs["store"]["rate"] >= 0.95 * runs["memory"]["rate"] if cuda else None,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
