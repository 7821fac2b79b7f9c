"""Dry-run plan: what a config will cost before anything runs (``vitsae plan --configfile config/paper.yaml``).

Per activation store (dataset × model × layer): images per split, the stored shape
``images × tokens × d``, its size in GB (fp16), and the estimated extraction time. Then the total disk
(stores, SAE weights) and GPU hours.

Image counts come, per dataset, from the first of: the manifest (``results/manifests/{dataset}.parquet``
under ``--directory``), a listing of the dataset root (one ``scandir`` per class folder; no image is
opened), or the published size of the dataset (:data:`KNOWN_SIZES`). The output says which.

Time: one extraction job runs at the slowest of three walls (shared/FACTS.md, measured on one
H200, bf16, batch 256):

* the model: :data:`FORWARD_IMG_S` (full forward, img/s), scaled by the share of blocks run
  ((layer + 1) / blocks: extraction stops at its layer); other architectures or sizes are scaled
  from ViT-B/14 at 224 px by their FLOPs (tokens × d² × blocks), and marked "scaled";
* JPEG decoding: :data:`DECODE_IMG_S` (nvJPEG on the GPU for decode tensor, PIL on 16 cores for pil);
* the disk: :data:`DISK_WRITE_GB_S` per job (its local disk, or its share of a parallel filesystem).

A store split into N parts runs N such jobs at once (wall / N; GPU hours unchanged). SAE training is
estimated from the stacked-sweep rate (:data:`SAE_TOKENS_S`) or the disk's read rate, whichever is
slower. These are planning numbers, not promises: rerun bench/gpu/extract_gpu.py on your GPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from vitsae import layout
from vitsae.config import ConfigError, build, check_models, validate
from vitsae.data.models import ModelShape, model_shape
from vitsae.data.store import store_bytes
from vitsae.sae.settings import sweep_specs

#: Full-model forward, img/s on one H100/H200-class GPU (bf16, batch 256), by (arch, image size).
#: shared/FACTS.md "GPU anchors" (H200, torch 2.11, random weights).
FORWARD_IMG_S: dict[tuple[str, int], float] = {
    ("vit_base_patch14_dinov2.lvd142m", 224): 6050.0,
    ("vit_large_patch14_dinov2.lvd142m", 224): 2131.0,
    ("ViT-B-16-quickgelu", 224): 8828.0,
    ("ViT-B-16", 224): 8828.0,
}
#: The reference the others are scaled from: ViT-B/14 at 224 px (257 tokens, d 768, 12 blocks).
REFERENCE = (6050.0, 257 * 768**2 * 12)
#: JPEG decode + resize of a 500x375 JPEG to 224 px, img/s per job: PIL on 16 cores / nvJPEG on the GPU.
DECODE_IMG_S = {"pil": 2018.0, "tensor": 15685.0}
#: Sequential write to local disk, GB/s (FACTS: 0.87-1.12 measured; 0.9 planned).
DISK_WRITE_GB_S = 0.9
#: Sequential read for SAE training, GB/s (FACTS: 1.41).
DISK_READ_GB_S = 1.4
#: Stacked SAE training, SAE-tokens/s at d = 768, 16x (FACTS: 8 SAEs compiled, 4.04-4.50M).
SAE_TOKENS_S = 4.0e6
#: Published image counts, for when neither a manifest nor the dataset root is there.
KNOWN_SIZES = {
    "imagenet": {"train": 1_281_167, "val": 50_000},
    "inat2021": {"train_mini": 500_000, "train": 2_686_843, "val": 100_000},
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
GB = 1e9


@dataclass(frozen=True)
class StorePlan:
    dataset: str
    model: str
    layer: int
    images: dict[str, int]
    tokens: int  # kept per image
    d_model: int
    parts: int
    img_s: float  # one job
    bound: str  # which wall sets img_s
    scaled: bool

    @property
    def n_images(self) -> int:
        return sum(self.images.values())

    @property
    def bytes(self) -> int:
        return store_bytes(self.n_images, self.tokens, self.d_model)

    @property
    def gpu_hours(self) -> float:
        return self.n_images / self.img_s / 3600

    @property
    def wall_hours(self) -> float:
        return self.gpu_hours / self.parts


def kept_tokens(tokens: str | dict, shape: ModelShape) -> int:
    if isinstance(tokens, dict):
        return int(tokens["subset"])
    return {"all": shape.n_tokens, "patches": shape.n_patches, "cls": 1}[tokens]


def forward_img_s(arch: str, image_size: int, shape: ModelShape) -> tuple[float, bool]:
    """Full-model img/s: the table's, else scaled from ViT-B/14 at 224 by FLOPs (second value True)."""
    if (arch, image_size) in FORWARD_IMG_S:
        return FORWARD_IMG_S[(arch, image_size)], False
    ref_img_s, ref_cost = REFERENCE
    return ref_img_s * ref_cost / (shape.n_tokens * shape.d_model**2 * shape.n_blocks), True


def count_images(name: str, ds: dict, splits: list[str], workdir: Path) -> tuple[dict[str, int], str]:
    """Images per split of dataset ``name`` and where the numbers come from."""
    manifest = workdir / layout.MANIFEST.format(dataset=name)
    if manifest.is_file():
        import pandas as pd

        df = pd.read_parquet(manifest, columns=["split", "status"])
        ok = df[df["status"] == "ok"]
        return {s: int((ok["split"] == s).sum()) for s in splits}, f"manifest {manifest}"
    root = Path(ds["root"])
    if not root.is_absolute():
        root = workdir / root
    if all((root / ds["splits"][s]).is_dir() for s in splits):
        cap = ds.get("max_per_class")
        counts = {}
        for s in splits:
            n = 0
            with os.scandir(root / ds["splits"][s]) as classes:
                for c in classes:
                    if c.is_dir() and not c.name.startswith("."):
                        with os.scandir(c.path) as files:
                            k = sum(
                                1
                                for f in files
                                if not f.name.startswith(".") and f.name.lower().endswith(IMAGE_SUFFIXES)
                            )
                        n += min(k, cap) if cap else k
            counts[s] = n
        return counts, f"listing of {root}"
    known = KNOWN_SIZES.get(ds["format"], {})
    dirs = {s: ds["splits"][s] for s in splits}
    if all(d in known for d in dirs.values()):
        return {s: known[d] for s, d in dirs.items()}, f"published size of {ds['format']} ({root} not found)"
    raise ConfigError(
        f"dataset '{name}': no manifest, no {root} with splits {sorted(dirs.values())}, and no "
        f"published size for format {ds['format']!r}; set datasets.{name}.root"
    )


def _trains(sweep: dict, model: str | None) -> bool:
    return model is None or not sweep.get("models") or model in sweep["models"]


def sae_bytes(config: dict, d_model: int, model: str | None = None) -> tuple[int, int]:
    """(number of SAEs, bytes of their fp32 weights) per (train dataset, model, layer) store (the sweeps
    that train on ``model``)."""
    n, size = 0, 0
    for sweep in config["sweeps"].values():
        if not _trains(sweep, model):
            continue
        for spec in sweep_specs(sweep):
            d_sae = int(spec.get("expansion", 8)) * d_model
            n += 1
            size += 4 * (2 * d_model * d_sae + d_sae + d_model)
    return n, size


def sae_hours(config: dict, d_model: int, model: str | None = None) -> dict[str, float]:
    """Estimated GPU hours of each sweep's training job on one store of ``model`` (the slower of compute
    and disk); sweeps that do not train on it are left out."""
    hours = {}
    for name, sweep in config["sweeps"].items():
        if not _trains(sweep, model):
            continue
        n_sae = len(sweep_specs(sweep))
        tokens = int(sweep["train_tokens"])
        compute = tokens * n_sae / SAE_TOKENS_S
        disk = tokens * d_model * 2 / (DISK_READ_GB_S * GB)
        hours[name] = max(compute, disk) / 3600
    return hours


def make_plan(config: dict, workdir: Path = Path(".")) -> dict:
    """The plan of a validated config: per-store rows, dataset counts with their source, totals."""
    ex = config["extraction"]
    splits = list(ex["splits"])
    decode = "tensor" if ex["decode"] in ("auto", "tensor") else "pil"  # auto on a GPU job: tensor
    counts = {
        name: count_images(name, ds, splits, workdir) for name, ds in sorted(config["datasets"].items())
    }
    stores: list[StorePlan] = []
    n_sae = sae_size = 0
    sae_h: dict[str, float] = {}
    model_sae: dict[str, tuple[int, float]] = {}  # model -> (SAE weight bytes, SAE training GPU h)
    for mname, m in sorted(config["models"].items()):
        shape = model_shape(m["family"], m["arch"], int(m["image_size"]))
        tokens = kept_tokens(m.get("tokens", ex["tokens"]), shape)
        full, scaled = forward_img_s(m["arch"], int(m["image_size"]), shape)
        for layer in m["layers"]:
            walls = {
                "model": full * shape.n_blocks / (int(layer) + 1),
                f"decode ({decode})": DECODE_IMG_S[decode],
                "disk": DISK_WRITE_GB_S * GB / (tokens * shape.d_model * 2),
            }
            bound = min(walls, key=walls.get)
            for dname in sorted(config["datasets"]):
                parts = int(ex["parts_by_dataset"].get(dname, ex["parts"]))
                stores.append(
                    StorePlan(
                        dname,
                        mname,
                        int(layer),
                        counts[dname][0],
                        tokens,
                        shape.d_model,
                        parts,
                        walls[bound],
                        bound,
                        scaled,
                    )
                )
                k, size = sae_bytes(config, shape.d_model, mname)
                n_sae, sae_size = n_sae + k, sae_size + size
                hours = sae_hours(config, shape.d_model, mname)
                for sweep, h in hours.items():
                    sae_h[sweep] = sae_h.get(sweep, 0.0) + h
                b, h = model_sae.get(mname, (0, 0.0))
                model_sae[mname] = (b + size, h + sum(hours.values()))
    claims = build(config).claims
    return {"stores": stores, "counts": counts, "sae": (n_sae, sae_size, sae_h), "decode": decode,
            "controls": set(claims.control_sweeps), "baselines": tuple(claims.baselines),
            "model_sae": model_sae}  # fmt: skip


def format_plan(plan: dict, source: str) -> str:
    """The plan as the text the command prints (README.md quotes it)."""
    lines = [f"vitsae plan for {source}", "", "Images per dataset:"]
    for name, (images, where) in plan["counts"].items():
        per = ", ".join(f"{s} {n:,}" for s, n in images.items())
        lines.append(f"  {name}: {per}  (from {where})")
    lines += ["", "Activation stores (fp16):"]
    header = (
        f"  {'store':<36} {'images × tokens × d':>27} {'GB':>8} {'parts':>5} {'img/s/job':>9} "
        f"{'bound':<14} {'wall h':>6} {'GPU h':>6}"
    )
    lines.append(header)
    for s in plan["stores"]:
        name = f"{s.dataset}/{s.model}/layer{s.layer}"
        shape = f"{s.n_images:,} × {s.tokens} × {s.d_model}"
        mark = "*" if s.scaled else ""
        lines.append(
            f"  {name:<36} {shape:>27} {s.bytes / GB:>8.1f} {s.parts:>5} {s.img_s:>9,.0f} "
            f"{s.bound + mark:<14} {s.wall_hours:>6.2f} {s.gpu_hours:>6.2f}"
        )
    stores = plan["stores"]
    total = sum(s.bytes for s in stores)
    n_sae, sae_size, by_sweep = plan["sae"]
    sae_h = sum(by_sweep.values())
    controls = plan.get("controls", set())
    control_h = sum(h for sweep, h in by_sweep.items() if sweep in controls)
    gpu_h = sum(s.gpu_hours for s in stores)
    lines += [
        "",
        (
            f"Disk: stores {total / GB:,.1f} GB + SAE weights {sae_size / GB:,.1f} GB ({n_sae} SAEs, fp32) "
            f"= {(total + sae_size) / GB:,.1f} GB (training-state checkpoints add ~2x the SAE weights while training)."
        ),
        (
            f"GPU hours: extraction {gpu_h:.2f} (longest store wall {max(s.wall_hours for s in stores):.2f} h) "
            f"+ SAE training ~{sae_h:.2f} = {gpu_h + sae_h:.2f}."
        ),
        "SAE training per sweep (GPU h): "
        + ", ".join(
            f"{sweep} {h:.2f}{' (control)' if sweep in controls else ''}" for sweep, h in by_sweep.items()
        )
        + (
            f"; the claims' control sweeps add {control_h:.2f} GPU h (no new extraction)."
            if controls
            else "."
        ),
        *_baseline_lines(plan),
        (
            f"Walls per job: model forward to the layer (H100/H200 bf16), decode {plan['decode']} "
            f"{DECODE_IMG_S[plan['decode']]:,.0f} img/s, disk write {DISK_WRITE_GB_S} GB/s; img/s/job is the slowest."
            + (
                " * scaled from ViT-B/14 by FLOPs (not in the throughput table)."
                if any(s.scaled for s in stores)
                else ""
            )
        ),
    ]
    return "\n".join(lines)


def _baseline_lines(plan: dict) -> list[str]:
    """What the claims' baseline models (``claims.baselines``) add: their stores and SAEs (in the totals)."""
    baselines = plan.get("baselines", ())
    if not baselines:
        return []
    stores = [s for s in plan["stores"] if s.model in baselines]
    store_gb, extract_h = sum(s.bytes for s in stores) / GB, sum(s.gpu_hours for s in stores)
    size = store_gb + sum(plan["model_sae"][m][0] for m in baselines) / GB
    hours = extract_h + sum(plan["model_sae"][m][1] for m in baselines)
    line = (f"Baseline models ({', '.join(baselines)}): {size:,.1f} GB and {hours:.2f} GPU h of these totals "
            f"(stores {store_gb:,.1f} GB, extraction {extract_h:.2f} h).")  # fmt: skip
    return [line]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configfile",
        type=Path,
        default=Path("config/config.yaml"),
        help="the run's config (default: the demo's config/config.yaml)",
    )
    parser.add_argument(
        "--directory",
        "-d",
        type=Path,
        default=Path("."),
        help="the workflow's working directory (where results/manifests/ is), default: here",
    )


def run(args: argparse.Namespace) -> int:
    try:
        with open(args.configfile) as f:
            config = validate(yaml.safe_load(f), source=str(args.configfile))
        check_models(config, str(args.configfile))  # an unknown architecture: one line naming the key
        print(format_plan(make_plan(config, args.directory), str(args.configfile)))
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitsae plan", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
