"""Extraction on a GPU: one DINOv2 ViT-B/14 layer at 224 px from synthetic 500x375 JPEGs to local disk.

    python bench/gpu/extract_gpu.py [--n 4096] [--out /tmp/vitsae-extract-gpu] [--workers 8]
    python bench/gpu/extract_gpu.py --device cpu --n 64 --arch vit_small_patch14_dinov2.lvd142m --image-size 56
        (the CPU fallback: checks the script end to end in seconds; its numbers mean nothing for a GPU)

Prints a short table and one JSON line:

* forward only: the model to ``--layer`` on already-decoded tensors on the device (bf16 autocast on CUDA);
* disk write: the measured sequential write rate of ``--out`` (fsync'd), as images/s of this store's size;
* extraction: vitsae.data.activations.extract (workers read JPEG bytes, nvJPEG decodes on the GPU, torch-op
  preprocessing, bf16, pinned non-blocking copies, writer thread, validate + publish), as images/s of the
  whole call, and against the lower of the two walls above (goal >= 0.8);
* the same extraction with PIL decoding in the workers (``decode: pil``), for comparison;
* the largest |difference| between GPU-decoded (nvJPEG + tensor transform) and CPU-decoded (PIL + the
  model's transform) model inputs over the first ``--compare`` images, in normalised units and 8-bit levels.
"""

from __future__ import annotations

import argparse
import json
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

from vitsae.data.activations import decode_images, extract, tensor_transform
from vitsae.data.manifest import build_manifest, write_manifest
from vitsae.data.models import load_model
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
    paths = [root / "train" / f"class{i % classes:02d}" / f"img{i:06d}.jpg" for i in range(n)]
    for p in {p.parent for p in paths}:
        p.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_one_jpeg, [(p, i) for i, p in enumerate(paths)], chunksize=32))
    return paths


def disk_write_gb_s(directory: Path, total_gb: float = 4.0, block_mb: int = 64) -> float:
    """Sequential write of ``total_gb`` in ``block_mb`` blocks, fsync'd, to a file in ``directory``."""
    path = directory / "disk-probe.bin"
    block = os.urandom(block_mb << 20)
    n = max(1, int(total_gb * 1024 / block_mb))
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        f.writelines(block for _ in range(n))
        f.flush()
        os.fsync(f.fileno())
    dt = time.perf_counter() - t0
    path.unlink()
    return n * len(block) / dt / 1e9


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def forward_only(spec: ModelSpec, layer: int, paths: list[Path], batch: int, device: str, reps: int) -> float:
    vm = load_model(spec, device=device)
    cuda = device.startswith("cuda")
    x = torch.stack([vm.transform(Image.open(p).convert("RGB")) for p in paths[:batch]]).to(device)
    with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
        for _ in range(2):  # warm-up (cuDNN/cuBLAS autotuning)
            vm.block_output(x, layer)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            vm.block_output(x, layer).to(torch.float16)
        sync(device)
    return reps * x.shape[0] / (time.perf_counter() - t0)


def input_difference(spec: ModelSpec, paths: list[Path], device: str) -> tuple[float, float]:
    """Largest and mean |GPU-path input - PIL-path input| (normalised units) over ``paths``."""
    vm = load_model(spec)
    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    images = decode_images(datas, paths, device)
    worst, mean = 0.0, 0.0
    for image, p in zip(images, paths, strict=True):
        x = tensor_transform(image, vm.preprocessing).cpu()
        ref = vm.transform(Image.open(p).convert("RGB"))
        d = (x - ref).abs()
        worst, mean = max(worst, float(d.max())), mean + float(d.mean()) / len(paths)
    return worst, mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--arch", default="vit_base_patch14_dinov2.lvd142m")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=Path("/tmp/vitsae-extract-gpu"))
    ap.add_argument("--disk-gb", type=float, default=4.0)
    ap.add_argument("--compare", type=int, default=64)
    ap.add_argument("--skip-pil", action="store_true", help="skip the PIL-decoding extraction")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device here; run with --device cpu --n 64 for the CPU fallback")
    torch.backends.cuda.matmul.allow_tf32 = True
    spec = ModelSpec(
        "bench", "dinov2" if "dinov2" in args.arch else "clip", args.arch, False, args.image_size
    )
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    t0 = time.perf_counter()
    paths = synthetic_jpegs(args.out / "data", args.n)
    write_manifest(
        build_manifest("bench", "imagefolder", args.out / "data", {"train": "train"}), args.out / "m.parquet"
    )
    print(f"{args.n} JPEGs 500x375 + manifest in {time.perf_counter() - t0:.1f} s", flush=True)

    vm = load_model(spec)
    bytes_per_image = vm.token_layout["n_tokens"] * vm.d_model * 2
    disk = disk_write_gb_s(args.out, args.disk_gb)
    disk_img_s = disk * 1e9 / bytes_per_image
    fwd = forward_only(
        spec, args.layer, paths, args.batch, args.device, reps=max(2, min(20, args.n // args.batch))
    )
    rows = [("forward only (decoded tensors)", fwd), (f"disk write {disk:.2f} GB/s", disk_img_s)]

    results = {}
    for decode in ("auto",) if args.skip_pil else ("auto", "pil"):
        out = args.out / f"store-{decode}.zarr"
        t0 = time.perf_counter()
        extract(
            args.out / "m.parquet",
            args.out / "data",
            "bench",
            spec,
            args.layer,
            out,
            ["train"],
            batch_size=args.batch,
            num_workers=args.workers,
            device=args.device,
            decode=decode,
        )
        results[decode] = args.n / (time.perf_counter() - t0)
        label = "tensor (nvJPEG)" if decode == "auto" and args.device.startswith("cuda") else decode
        rows.append((f"extraction, decode {label}", results[decode]))
        shutil.rmtree(out)
    worst, mean = input_difference(spec, paths[: args.compare], args.device)
    wall = min(fwd, disk_img_s)
    ext = results["auto"]
    print(f"\n{'':<34} {'img/s':>10}")
    for name, v in rows:
        print(f"{name:<34} {v:>10,.1f}")
    print(f"{'extraction / min(forward, disk)':<34} {ext / wall:>10.3f}")
    print(f"{'extraction / forward':<34} {ext / fwd:>10.3f}")
    level = 1 / 255 / min(vm.preprocessing["std"])
    print(
        f"max |GPU-decoded - CPU-decoded input| over {len(paths[: args.compare])} images: {worst:.4f} "
        f"({worst / level:.2f} 8-bit levels; mean {mean:.5f})"
    )
    print(
        json.dumps(
            {
                "extract_vs_lower_wall": round(ext / wall, 3),
                "extract_vs_forward": round(ext / fwd, 3),
                "extract_img_s": round(ext, 1),
                "extract_pil_img_s": round(results.get("pil", float("nan")), 1),
                "forward_img_s": round(fwd, 1),
                "disk_write_GB_s": round(disk, 3),
                "disk_img_s": round(disk_img_s, 1),
                "max_input_diff": round(worst, 5),
                "max_input_diff_levels": round(worst / level, 2),
                "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                "images": args.n,
                "arch": args.arch,
                "image_size": args.image_size,
                "layer": args.layer,
                "batch": args.batch,
                "workers": args.workers,
            }
        )
    )
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
