"""Parallel extraction parts through Snakemake: one part's job is killed half way; the rerun redoes only
that part and the join, and the store equals a single job's, byte for byte."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from synthetic import assert_same_store, make_folder
from workflow_helpers import job_counts, snakemake, snakemake_cmd

from vitsae.data.activations import extract
from vitsae.data.settings import ModelSpec
from vitsae.provenance.lineage import verify
from vitsae.provenance.records import record_path

pytestmark = pytest.mark.e2e

CLIP64 = ModelSpec("clip-b16", "clip", "ViT-B-16-quickgelu", False, 64)


def test_killing_a_part_job_leaves_the_others_and_the_rerun_does_only_that_part(tmp_path):
    """Snakemake with extraction.parts: 3; one part's job is killed half way (SIGKILL); with
    --keep-going the other parts finish. The rerun is exactly that part plus the join, the other
    parts' files are untouched, and the store equals a single job's, byte for byte."""
    data = tmp_path / "data"
    make_folder(data, {"train": 12, "val": 3})  # 24 train images: 12 chunks of 2, 4 per part
    cfg = {
        "run_name": "parts-test",
        "seed": 0,
        "datasets": {
            "toy": {"format": "imagefolder", "root": str(data), "splits": {"train": "train", "val": "val"}}
        },
        "models": {
            "clip-b16": {
                "family": "clip",
                "arch": "ViT-B-16-quickgelu",
                "pretrained": False,
                "image_size": 64,
                "layers": [10],
                "batch_size": 2,
            }
        },
        "extraction": {"splits": ["train", "val"], "parts": 3},
        "sweeps": {"paper": {"train_split": "train"}},
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    target = "results/activations/toy/clip-b16/layer10.zarr"
    parts_dir = work / "results/activations/toy/clip-b16/layer10.parts"
    cmd = snakemake_cmd(work, "--keep-going", target, "--configfile", str(config), cores="1")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    killed, deadline = None, time.time() + 240
    while killed is None and time.time() < deadline and proc.poll() is None:
        for partial in parts_dir.glob(".part*-of3.zarr.partial-*") if parts_dir.exists() else []:
            if list(partial.glob("train/c/*")):  # the job has written chunks: it is half way
                killed = partial.name.split(".")[1]  # e.g. "part1-of3"
                os.kill(int(partial.name.rsplit("-", 1)[1]), signal.SIGKILL)
                break
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=600)
    assert killed is not None, f"no part job could be caught half way:\n{out[-3000:]}"
    assert proc.returncode != 0
    finished = sorted(p.name for p in parts_dir.glob("part*-of3.zarr"))
    assert finished == sorted(f"part{i}-of3.zarr" for i in range(3) if f"part{i}-of3" != killed)
    assert not (work / target).exists()
    before = {
        f: (f.stat().st_ino, f.stat().st_mtime_ns) for name in finished for f in (parts_dir / name).rglob("*")
    }

    dry = snakemake(work, "-n", target, "--configfile", str(config))
    assert job_counts(dry.stdout) == {"extract_part": 1, "extract": 1}
    assert f"{killed}.zarr" in dry.stdout
    snakemake(work, target, "--configfile", str(config), cores="1")
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in before} == before  # the others untouched
    assert not list(parts_dir.glob(".*partial*"))  # the killed job's leftovers are gone

    # the same store from one job (threads as in the rule's job under --cores 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cwd = Path.cwd()
    try:
        os.chdir(work)
        single = extract(
            "results/manifests/toy.parquet",
            str(data),
            "toy",
            CLIP64,
            10,
            tmp_path / "single.zarr",
            ["train", "val"],
            batch_size=2,
        )
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    assert_same_store(work / target, single)
    # the joined store's provenance reaches the parts' records and verifies
    assert verify(work / target) == []
    record = json.loads(record_path(work / target).read_text())
    assert record["rule"] == "extract"
