"""Extraction on a GPU: one DINOv2 ViT-B/14 layer at 224 px from synthetic 500x375 JPEGs to local disk.

    python bench/gpu/extract_gpu.py [--n 4096] [--out /tmp/vitsae-extract-gpu] [--workers 8]
    python bench/gpu/extract_gpu.py --device cpu --n 16 --image-size 56 --batch 4 --workers 0 --disk-gb 0.05 \\
        --arch vit_small_patch14_dinov2.lvd142m
        (the CPU fallback: checks the script end to end in seconds; its numbers mean nothing for a GPU)

Prints tables and one JSON line. Throughputs are steady-state images/s, after ``--warmup`` batches, so that
model build, weight digest, DataLoader worker start and publishing (reported apart, as fixed costs) do not
dilute them:

* walls: forward only (the model to ``--layer`` on decoded tensors on the device, bf16 autocast on CUDA);
  decode (the extraction's input path alone: workers read packed JPEG bytes, nvJPEG decodes on the
  device, batched resize/crop/normalise; no model); disk write (files of one store chunk each, every one
  fsync'd and ``os.sync()`` at the end, all inside the timed region), as images/s of this store;
* extraction (vitsae.data.activations.extract with a profile): the steady-state rate at which the writer
  thread finishes batches, and the whole call (fixed costs included) before and after ``os.sync()``
  (the store's pages reach the disk); then where the calling thread's time went (stages that add up to
  the wall time) and what the input and writer threads were busy with (overlapping those);
* the same extraction with PIL decoding in the workers (``decode: pil``), for comparison;
* the largest |difference| between device-decoded (nvJPEG + batched tensor transform) and CPU-decoded (PIL +
  the model's transform) model inputs over the first ``--compare`` images, in normalised units and 8-bit levels.

``extract_vs_lower_wall``: the extraction's steady-state rate over the lowest of the three walls (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vitsae.data.activations import (
    STAGES,
    _loader,
    batch_transform,
    decode_images,
    extract,
    unpack_bytes,
)
from vitsae.data.manifest import build_manifest, read_manifest, write_manifest
from vitsae.data.models import VisionModel, load_model, state_digest
from vitsae.data.settings import ModelSpec


def _one_jpeg(args: tuple[Path, int]) -> None:
    path, i = args
    rng = np.random.default_rng(i)
    h, w = 375, 500
    yy, xx = np.mgrid[0:h, 0:w]
    f = rng.uniform(5, 40, 3)
    smooth = np.stack([np.sin(xx / f[c] + yy / (f[c] * 1.7) + i) for c in range(3)], -1) * 90 + 128
    arr = np.clip(smooth + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=90)


def synthetic_jpegs(root: Path, n: int, classes: int = 16) -> list[Path]:
    """``n`` photo-like 500x375 JPEGs in ``classes`` folders under ``root/train`` (in processes when many)."""
    paths = [root / "train" / f"class{i % classes:02d}" / f"img{i:06d}.jpg" for i in range(n)]
    for p in {p.parent for p in paths}:
        p.mkdir(parents=True, exist_ok=True)
    jobs = [(p, i) for i, p in enumerate(paths)]
    if n < 256:
        for job in jobs:
            _one_jpeg(job)
    else:
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(_one_jpeg, jobs, chunksize=32))
    return paths


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(spec: ModelSpec, device: torch.device) -> tuple[VisionModel, float, float]:
    """The model, the seconds to build it (weight digest included, as extraction's load_model does it),
    and the seconds of the weight digest alone (timed again on the loaded model)."""
    t0 = time.perf_counter()
    vm = load_model(spec, device=device)
    sync(device)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state_digest(vm.module)
    return vm, build_s, time.perf_counter() - t0


def forward_only(
    vm: VisionModel, layer: int, paths: list[Path], batch: int, device: torch.device, reps: int
) -> float:
    """Steady-state img/s of the model to ``layer`` on one decoded batch already on the device."""
    x = torch.stack([vm.transform(Image.open(p).convert("RGB")) for p in paths[:batch]]).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for _ in range(2):  # warm-up (cuDNN/cuBLAS autotuning)
            vm.block_output(x, layer)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            vm.block_output(x, layer).to(torch.float16)
        sync(device)
    return reps * x.shape[0] / (time.perf_counter() - t0)


def decode_only(
    manifest: Path, root: Path, vm: VisionModel, batch: int, workers: int, device: torch.device, warmup: int
) -> float:
    """Steady-state img/s of the extraction's input path alone (tensor decode): the same DataLoader of
    packed JPEG bytes, decode on ``device`` and :func:`batch_transform`; no model, nothing written."""
    df = read_manifest(manifest)
    df = df[df["status"] == "ok"]
    paths, sha256s = df["path"].tolist(), df["sha256"].tolist()
    loader = _loader(root, paths, sha256s, "bench", vm, "tensor", batch, workers, pin=False)
    n, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        for b, packed in enumerate(loader):
            datas = unpack_bytes(*packed)
            images = decode_images(
                datas, [root / p for p in paths[b * batch : b * batch + len(datas)]], device
            )
            batch_transform(images, vm.preprocessing)
            if b + 1 == warmup:
                sync(device)
                n, t0 = 0, time.perf_counter()
            elif b + 1 > warmup:
                n += len(datas)
    sync(device)
    return n / (time.perf_counter() - t0) if n else float("nan")


def disk_write_gb_s(directory: Path, chunk_bytes: int, total_gb: float) -> float:
    """GB/s of writing files of ``chunk_bytes`` each (one store chunk), ``total_gb`` in all, each fsync'd and
    ``os.sync()`` at the end: all inside the timed region, so the figure is what reaches the disk."""
    probe = directory / "disk-probe"
    probe.mkdir(parents=True, exist_ok=True)
    block = os.urandom(chunk_bytes)
    n = max(1, math.ceil(total_gb * 1e9 / chunk_bytes))
    t0 = time.perf_counter()
    for i in range(n):
        with open(probe / f"chunk{i}", "wb") as f:
            f.write(block)
            f.flush()
            os.fsync(f.fileno())
    os.sync()
    dt = time.perf_counter() - t0
    shutil.rmtree(probe)
    return n * chunk_bytes / dt / 1e9


def steady_rate(written_at: list[tuple[float, int]], warmup: int) -> float:
    """img/s of the batches after the first ``warmup``, from the writer's completion times (seconds since the
    call began, images): from the end of batch ``warmup`` to the end of the last (fewer warm-up batches
    when there are too few; none: from the start of the call)."""
    if not written_at:
        return float("nan")
    k = min(warmup, len(written_at) - 1)
    start = written_at[k - 1][0] if k > 0 else 0.0
    return sum(n for _, n in written_at[k:]) / (written_at[-1][0] - start)


def run_extraction(
    manifest: Path,
    root: Path,
    spec: ModelSpec,
    vm: VisionModel,
    layer: int,
    out: Path,
    batch: int,
    workers: int,
    device: torch.device,
    decode: str,
    warmup: int,
) -> dict:
    """One extraction with a profile: steady-state img/s, the whole call, and the call plus ``os.sync()``."""
    profile: dict = {}
    t0 = time.perf_counter()
    extract(manifest, root, "bench", spec, layer, out, ["train"], batch_size=batch, num_workers=workers,
            device=str(device), decode=decode, model=vm, profile=profile)  # fmt: skip
    call_s = time.perf_counter() - t0
    os.sync()
    synced_s = time.perf_counter() - t0
    return {
        "profile": profile,
        "call_s": call_s,
        "synced_s": synced_s,
        "steady_img_s": steady_rate(profile["written_at"], warmup),
    }


def stage_table(profile: dict) -> str:
    wall = profile["wall"]
    lines = [f"{'calling thread':<20} {'s':>9} {'% wall':>7}"]
    lines += [
        f"{k:<20} {profile['stages'][k]:>9.3f} {100 * profile['stages'][k] / wall:>7.1f}" for k in STAGES
    ]
    lines.append(f"{'wall':<20} {wall:>9.3f} {100.0:>7.1f}")
    lines.append(f"{'other threads, busy':<20} {'s':>9} {'% wall':>7}")
    lines += [f"{k:<20} {v:>9.3f} {100 * v / wall:>7.1f}" for k, v in profile["busy"].items()]
    return "\n".join(lines)


def input_difference(vm: VisionModel, paths: list[Path], device: torch.device) -> tuple[float, float]:
    """Largest and mean |device-path input - PIL-path input| (normalised units) over ``paths``."""
    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    x_BCHW = batch_transform(decode_images(datas, paths, device), vm.preprocessing).cpu()
    ref_BCHW = torch.stack([vm.transform(Image.open(p).convert("RGB")) for p in paths])
    d = (x_BCHW - ref_BCHW).abs()
    return float(d.max()), float(d.mean())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--arch", default="vit_base_patch14_dinov2.lvd142m")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--decode", default="tensor", choices=["tensor", "pil", "auto"])
    ap.add_argument("--warmup", type=int, default=2, help="batches left out of the steady-state rates")
    ap.add_argument("--out", type=Path, default=Path("/tmp/vitsae-extract-gpu"))
    ap.add_argument("--disk-gb", type=float, default=4.0)
    ap.add_argument("--compare", type=int, default=64)
    ap.add_argument("--skip-pil", action="store_true", help="skip the PIL-decoding extraction")
    ap.add_argument("--keep", action="store_true", help="keep --out (data, manifest and the stores)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here; run with --device cpu --n 16 --image-size 56 for the CPU fallback")
    torch.backends.cuda.matmul.allow_tf32 = True
    spec = ModelSpec(
        "bench", "dinov2" if "dinov2" in args.arch else "clip", args.arch, False, args.image_size
    )
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    t0 = time.perf_counter()
    paths = synthetic_jpegs(args.out / "data", args.n)
    manifest, root = args.out / "m.parquet", args.out / "data"
    write_manifest(build_manifest("bench", "imagefolder", root, {"train": "train"}), manifest)
    print(f"{args.n} JPEGs 500x375 + manifest in {time.perf_counter() - t0:.1f} s", flush=True)

    vm, build_s, digest_s = build_model(spec, device)
    bytes_per_image = vm.token_layout["n_tokens"] * vm.d_model * 2
    disk = disk_write_gb_s(args.out, args.batch * bytes_per_image, args.disk_gb)
    walls = {
        "forward": forward_only(
            vm, args.layer, paths, args.batch, device, reps=max(2, min(20, args.n // args.batch))
        ),
        "decode": decode_only(manifest, root, vm, args.batch, args.workers, device, args.warmup),
        "disk": disk * 1e9 / bytes_per_image,
    }
    lower = min(walls, key=lambda k: walls[k] if not math.isnan(walls[k]) else math.inf)

    runs = {}
    for decode in (args.decode,) if args.skip_pil or args.decode == "pil" else (args.decode, "pil"):
        out = args.out / f"store-{decode}.zarr"
        runs[decode] = run_extraction(
            manifest, root, spec, vm, args.layer, out, args.batch, args.workers, device, decode, args.warmup
        )
        if not args.keep:
            shutil.rmtree(out)
    main_run = runs[args.decode]
    prof = main_run["profile"]
    steady = main_run["steady_img_s"]
    worst, mean = input_difference(vm, paths[: args.compare], device)
    level = 1 / 255 / min(vm.preprocessing["std"])

    print(f"\n{'walls (steady state)':<40} {'img/s':>10}")
    print(f"{'forward only (decoded tensors)':<40} {walls['forward']:>10,.1f}")
    print(f"{'decode (workers + device decode + transform)':<40} {walls['decode']:>10,.1f}")
    print(f"{f'disk write {disk:.2f} GB/s (fsync + sync)':<40} {walls['disk']:>10,.1f}")
    print(f"\n{'extraction':<40} {'img/s':>10}")
    for decode, run in runs.items():
        print(f"{f'decode {decode}, steady state':<40} {run['steady_img_s']:>10,.1f}")
        print(f"{f'decode {decode}, whole call':<40} {args.n / run['call_s']:>10,.1f}")
        print(f"{f'decode {decode}, whole call + os.sync':<40} {args.n / run['synced_s']:>10,.1f}")
    print(f"{f'steady / lower wall ({lower})':<40} {steady / walls[lower]:>10.3f}")
    first = prof["written_at"][0][0] if prof["written_at"] else float("nan")
    fixed = {
        "model_build": build_s,
        "weight_digest": digest_s,
        "setup": prof["stages"]["setup"],
        "first_batch_written": first,
        "publish": prof["stages"]["publish"],
    }
    print(f"\n{'fixed costs':<40} {'s':>10}")
    for k, v in fixed.items():
        print(f"{k:<40} {v:>10.3f}")
    print(f"\nextraction (decode {args.decode}), where the time went:\n{stage_table(prof)}")
    print(
        f"\nmax |device-decoded - CPU-decoded input| over {len(paths[: args.compare])} images: {worst:.4f} "
        f"({worst / level:.2f} 8-bit levels; mean {mean:.5f})"
    )
    result = {
        "extract_vs_lower_wall": round(steady / walls[lower], 3),
        "lower_wall": lower,
        "extract_steady_img_s": round(steady, 1),
        "extract_call_img_s": round(args.n / main_run["call_s"], 1),
        "extract_synced_img_s": round(args.n / main_run["synced_s"], 1),
        "extract_pil_steady_img_s": round(runs["pil"]["steady_img_s"], 1) if "pil" in runs else None,
        "forward_img_s": round(walls["forward"], 1),
        "decode_img_s": round(walls["decode"], 1),
        "disk_img_s": round(walls["disk"], 1),
        "disk_write_GB_s": round(disk, 3),
        "stages_s": {k: round(v, 3) for k, v in prof["stages"].items()},
        "busy_s": {k: round(v, 3) for k, v in prof["busy"].items()},
        "wall_s": round(prof["wall"], 3),
        "fixed_s": {k: round(v, 3) for k, v in fixed.items()},
        "max_input_diff": round(worst, 5),
        "max_input_diff_levels": round(worst / level, 2),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "images": args.n,
        "arch": args.arch,
        "image_size": args.image_size,
        "layer": args.layer,
        "batch": args.batch,
        "workers": args.workers,
        "decode": args.decode,
        "warmup_batches": args.warmup,
    }
    print(json.dumps(result))
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
