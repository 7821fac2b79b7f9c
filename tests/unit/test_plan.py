"""config/paper.yaml is complete: with fake ImageNet-1K and iNat2021 roots it builds the full DAG
(snakemake -n) and the dry-run plan; the plan's numbers follow from shapes, counts and the throughput table."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from workflow_helpers import REPO, job_counts, snakemake

from vitsae import plan
from vitsae.cli import main as vitsae_main
from vitsae.config import validate

PAPER = REPO / "config" / "paper.yaml"
WNIDS = ["n01440764", "n01443537", "n02085620"]
INAT_DIRS = [
    "00000_Animalia_Chordata_Aves_Passeriformes_Corvidae_Corvus_corax",
    "00001_Plantae_Tracheophyta_Magnoliopsida_Rosales_Rosaceae_Rosa_canina",
]


def jpeg(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path, quality=80)


def fake_roots(tmp_path):
    """Tiny trees in the real layouts: ImageNet train/<wnid>/*.JPEG, val/<wnid>/*.JPEG; iNat2021
    train_mini/<dir>/*.jpg, val/<dir>/*.jpg with train_mini.json and val.json."""
    imagenet, inat = tmp_path / "imagenet", tmp_path / "inat21"
    for i, wnid in enumerate(WNIDS):
        for k in range(3):
            jpeg(imagenet / "train" / wnid / f"{wnid}_{k}.JPEG", i * 10 + k)
        jpeg(imagenet / "val" / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", 100 + i)
    for split, n in (("train_mini", 4), ("val", 2)):
        cats = []
        for i, d in enumerate(INAT_DIRS):
            parts = d.split("_")
            cats.append(
                {
                    "id": i,
                    "name": f"{parts[6]} {parts[7]}",
                    "common_name": "",
                    "supercategory": "Birds",
                    "kingdom": parts[1],
                    "phylum": parts[2],
                    "class": parts[3],
                    "order": parts[4],
                    "family": parts[5],
                    "genus": parts[6],
                    "specific_epithet": parts[7],
                    "image_dir_name": d,
                }
            )
            for k in range(n):
                jpeg(inat / split / d / f"{split}-{i}-{k}.jpg", 200 + i * 10 + k)
        (inat / f"{split}.json").write_text(json.dumps({"categories": cats, "images": [], "annotations": []}))
    return imagenet, inat


@pytest.fixture(scope="module")
def paper_copy(tmp_path_factory):
    """config/paper.yaml with only the two dataset roots replaced."""
    tmp = tmp_path_factory.mktemp("paper")
    imagenet, inat = fake_roots(tmp)
    cfg = yaml.safe_load(PAPER.read_text())
    cfg["datasets"]["imagenet1k"]["root"] = str(imagenet)
    cfg["datasets"]["inat21"]["root"] = str(inat)
    path = tmp / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, validate(cfg)


def test_paper_config_builds_the_full_dag_with_fake_roots(paper_copy, tmp_path):
    path, cfg = paper_copy
    out = snakemake(tmp_path, "-n", "--configfile", str(path))
    jobs = job_counts(out.stdout)
    datasets, models = sorted(cfg["datasets"]), sorted(cfg["models"])
    stores = len(datasets) * sum(len(cfg["models"][m]["layers"]) for m in models)
    parts = {d: cfg["extraction"]["parts_by_dataset"].get(d, cfg["extraction"]["parts"]) for d in datasets}
    per_dataset_stores = stores // len(datasets)
    assert parts["imagenet1k"] > 1  # the paper's run splits ImageNet's extraction into parallel parts
    assert jobs["manifest"] == len(datasets)
    assert jobs["extract"] == stores
    assert jobs["extract_part"] == sum(n * per_dataset_stores for n in parts.values() if n > 1)

    def trained(sweep: dict) -> int:  # stores a sweep trains on (a control sweep may name its models)
        return len(datasets) * sum(len(cfg["models"][m]["layers"]) for m in sweep.get("models", models))

    for name, sweep in cfg["sweeps"].items():
        rule = name.replace("-", "_")
        assert jobs[f"train_sae_{rule}"] == trained(sweep), name
        # each training job's SAEs together on their own dataset, at most on every dataset (the transfer matrix)
        assert trained(sweep) <= jobs[f"evaluate_{rule}"] <= trained(sweep) * len(datasets), name
    assert trained(cfg["sweeps"]["twin"]) < stores  # the identity control trains DINOv2 only
    assert jobs["spec_curve"] == jobs["claims"] == jobs["controls"] == 1
    assert jobs["all"] == 1 and "demo_dataset_imagenet_demo" not in jobs
    # every part of every store is in the plan Snakemake made
    for d in datasets:
        if parts[d] > 1:
            for m in models:
                for i in range(parts[d]):
                    assert (
                        f"results/activations/{d}/{m}/layer10.parts/part{i}-of{parts[d]}.zarr" in out.stdout
                    )


def test_plan_of_the_paper_config_counts_the_fake_roots(paper_copy, tmp_path, capsys):
    path, cfg = paper_copy
    assert vitsae_main(["plan", "--configfile", str(path), "--directory", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "imagenet1k: train 9, val 3  (from listing of" in text
    assert "inat21: train 8, val 4  (from listing of" in text
    # 12 ImageNet images x 257 tokens x 768 for DINOv2 B/14 at 224 px; CLIP B/16: 197 tokens
    assert "imagenet1k/dinov2-b14/layer10" in text and "12 × 257 × 768" in text and "12 × 197 × 768" in text
    p = plan.make_plan(cfg, tmp_path)
    (dino,) = [s for s in p["stores"] if s.dataset == "imagenet1k" and s.model == "dinov2-b14"]
    assert dino.bytes == 12 * 257 * 768 * 2
    # B/14 to layer 10 of 12 runs at 6,050 x 12/11 img/s, decode at 15,685: the disk (0.9 GB/s) binds
    assert dino.bound == "disk" and dino.img_s == pytest.approx(0.9e9 / (257 * 768 * 2))


def test_plan_falls_back_to_published_sizes_and_scales_unknown_models(tmp_path):
    cfg = validate(yaml.safe_load(PAPER.read_text()))  # /data/imagenet does not exist here
    cfg["models"]["dinov2-b14"]["tokens"] = {"subset": 64}
    cfg["models"]["clip-b16"]["image_size"] = 112  # not in the throughput table
    p = plan.make_plan(cfg, tmp_path)
    assert p["counts"]["imagenet1k"][0] == {"train": 1_281_167, "val": 50_000}
    assert "published size" in p["counts"]["imagenet1k"][1]
    (dino,) = [s for s in p["stores"] if s.dataset == "imagenet1k" and s.model == "dinov2-b14"]
    assert dino.tokens == 64 and dino.bytes == 1_331_167 * 64 * 768 * 2
    (clip,) = [s for s in p["stores"] if s.dataset == "inat21" and s.model == "clip-b16"]
    assert clip.scaled and clip.tokens == 50
    text = plan.format_plan(p, "x")
    assert "scaled from ViT-B/14 by FLOPs" in text


def test_plan_reports_the_gpu_hours_of_the_claims_control_sweeps(tmp_path):
    cfg = validate(yaml.safe_load(PAPER.read_text()))
    p = plan.make_plan(cfg, tmp_path)
    _, _, by_sweep = p["sae"]
    assert p["controls"] == {"twin", "permuted"}
    # per store: max(tokens x SAEs / 4M SAE-tokens/s, tokens x d x 2 B / 1.4 GB/s); the twin sweep (15 SAEs)
    # trains on DINOv2's 2 stores only, the permuted sweep (1 SAE, disk-bound) on the compared models' stores
    # (3 models x 2 datasets: the register model is in a claim 2 comparison, whose null reads it too; the
    # baseline models get no null)
    tokens = 100_000_000
    stores = len(cfg["datasets"]) * len(cfg["sweeps"]["permuted"]["models"])
    assert stores == 6 and set(cfg["claims"]["baselines"]).isdisjoint(cfg["sweeps"]["permuted"]["models"])
    twin = 2 * max(tokens * 15 / plan.SAE_TOKENS_S, tokens * 768 * 2 / (plan.DISK_READ_GB_S * 1e9)) / 3600
    permuted = (
        stores * max(tokens * 1 / plan.SAE_TOKENS_S, tokens * 768 * 2 / (plan.DISK_READ_GB_S * 1e9)) / 3600
    )
    assert by_sweep["twin"] == pytest.approx(twin) and by_sweep["permuted"] == pytest.approx(permuted)
    text = plan.format_plan(p, "x")
    assert f"the claims' control sweeps add {twin + permuted:.2f} GPU h (no new extraction)" in text
    assert "twin 0.21 (control)" in text


def test_plan_reports_what_the_baseline_models_add(tmp_path):
    cfg = validate(yaml.safe_load(PAPER.read_text()))
    p = plan.make_plan(cfg, tmp_path)
    baselines = ["rand-dinov2-b14", "rand-clip-b16", "supervised-b16", "mae-b16", "dinov1-b16"]
    assert list(p["baselines"]) == baselines
    # 2 stores each (published sizes), every token of block 10 in fp16; disk-bound extraction at 0.9 GB/s;
    # the paper sweep's 15 SAEs per store (16 x 768 features), compute-bound at 4M SAE-tokens/s
    images = 1_331_167 + 600_000
    tokens = {"rand-dinov2-b14": 257}
    store_bytes = sum(images * tokens.get(m, 197) * 768 * 2 for m in baselines)
    assert all(s.bound == "disk" for s in p["stores"] if s.model in baselines)
    extract_h = store_bytes / (plan.DISK_WRITE_GB_S * 1e9) / 3600
    d_sae = 16 * 768
    sae_bytes = 5 * 2 * 15 * 4 * (2 * 768 * d_sae + d_sae + 768)
    sae_h = 5 * 2 * 100_000_000 * 15 / plan.SAE_TOKENS_S / 3600
    text = plan.format_plan(p, "x")
    assert (
        f"Baseline models ({', '.join(baselines)}): {(store_bytes + sae_bytes) / 1e9:,.1f} GB and "
        f"{extract_h + sae_h:.2f} GPU h of these totals (stores {store_bytes / 1e9:,.1f} GB, extraction "
        f"{extract_h:.2f} h)."
    ) in text
    cfg["claims"]["baselines"] = []
    assert "Baseline models" not in plan.format_plan(plan.make_plan(cfg, tmp_path), "x")
