"""Parallel extraction parts: N parts form a store bitwise equal to one job's; a killed part is the only
one redone (function level, and through Snakemake with one part's job killed)."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_activations import SPEC, make_folder
from workflow_helpers import REPO, job_counts, snakemake

from vitsae import provenance, store
from vitsae.activations import extract
from vitsae.manifest import build_manifest, write_manifest
from vitsae.models import ModelSpec

CLIP64 = ModelSpec("clip-b16", "clip", "ViT-B-16-quickgelu", False, 64)


def store_files(path: Path) -> dict[str, bytes]:
    """Every file of a store by relative path (Snakemake's timestamp file left out)."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".snakemake_timestamp"}


def assert_same_store(a: Path, b: Path) -> None:
    """Same files with the same bytes; the group metadata compared as JSON (key order may differ)."""
    fa, fb = store_files(a), store_files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name == "zarr.json":
            assert json.loads(fa[name]) == json.loads(fb[name])
        else:
            assert fa[name] == fb[name], name
    ga, gb = store.open_store(a), store.open_store(b)
    assert ga.attrs.asdict() == gb.attrs.asdict()
    for split in ga.attrs["splits"]:
        np.testing.assert_array_equal(ga[split][:], gb[split][:])
        np.testing.assert_array_equal(ga[f"{split}_rows"][:], gb[f"{split}_rows"][:])


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts") / "data"
    make_folder(root, {"train": 9, "val": 3})  # 18 and 6 images: 5 and 2 chunks of 4
    manifest = root.parent / "toy.parquet"
    write_manifest(build_manifest("toy", "imagefolder", root, {"train": "train", "val": "val"}), manifest)
    return root, manifest


def test_part_ranges_tile_the_split_in_whole_chunks():
    assert store.part_ranges(18, 4, 1) == [(0, 18)]
    assert store.part_ranges(18, 4, 2) == [(0, 8), (8, 18)]
    assert store.part_ranges(18, 4, 3) == [(0, 4), (4, 12), (12, 18)]
    assert store.part_ranges(6, 4, 3) == [(0, 0), (0, 4), (4, 6)]  # a part may hold no chunk of a small split
    for n, c, k in [(1, 4, 5), (100, 7, 6), (64, 64, 2)]:
        ranges = store.part_ranges(n, c, k)
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert all(s % c == 0 for s, _ in ranges)


@pytest.mark.parametrize("nparts", [2, 3])
def test_n_parts_assemble_into_a_store_bitwise_equal_to_one_job(toy, tmp_path, nparts):
    root, manifest = toy
    whole = extract(manifest, root, "toy", SPEC, 3, tmp_path / "whole.zarr", ["train", "val"], batch_size=4)
    parts = [extract(manifest, root, "toy", SPEC, 3, tmp_path / f"part{i}-of{nparts}.zarr", ["train", "val"],
                     batch_size=4, part=(i, nparts)) for i in range(nparts)]
    # a part is a published store that no reader accepts as a whole
    with pytest.raises(store.StoreError, match=f"is part 0 of {nparts}"):
        store.open_store(parts[0])
    written = [json.loads((p / "zarr.json").read_text())["attributes"]["written"] for p in parts]
    assert sum(w["train"] for w in written) == 18 and sum(w["val"] for w in written) == 6
    out = store.assemble(list(reversed(parts)), tmp_path / "assembled.zarr")
    assert_same_store(out, whole)
    # the assembled store's chunks are the parts' files (hard links), not copies
    for part in parts:
        for f in (part / "train" / "c").rglob("*"):
            if f.is_file():
                assert os.stat(out / f.relative_to(part)).st_ino == os.stat(f).st_ino
    assert not list(tmp_path.glob(".*partial*"))


def test_assemble_refuses_missing_or_foreign_parts(toy, tmp_path):
    root, manifest = toy
    p0 = extract(manifest, root, "toy", SPEC, 3, tmp_path / "p0.zarr", ["train", "val"], batch_size=4, part=(0, 2))
    p1 = extract(manifest, root, "toy", SPEC, 2, tmp_path / "p1.zarr", ["train", "val"], batch_size=4, part=(1, 2))
    with pytest.raises(store.StoreError, match=r"need parts 0\.\.1 of 2"):
        store.assemble([p0], tmp_path / "out.zarr")
    with pytest.raises(store.StoreError, match="disagree on .*layer"):
        store.assemble([p0, p1], tmp_path / "out.zarr")
    with pytest.raises(store.StoreError, match="does not exist; run its extract_part job"):
        store.assemble([p0, tmp_path / "nope.zarr"], tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.e2e
def test_killing_a_part_job_leaves_the_others_and_the_rerun_does_only_that_part(tmp_path):
    """Snakemake with extraction.parts: 3; one part's job is killed half way (SIGKILL); with
    --keep-going the other parts finish. The rerun is exactly that part plus the join, the other
    parts' files are untouched, and the store equals a single job's, byte for byte."""
    data = tmp_path / "data"
    make_folder(data, {"train": 12, "val": 3})  # 24 train images: 12 chunks of 2, 4 per part
    cfg = {
        "run_name": "parts-test", "seed": 0,
        "datasets": {"toy": {"format": "imagefolder", "root": str(data), "splits": {"train": "train", "val": "val"}}},
        "models": {"clip-b16": {"family": "clip", "arch": "ViT-B-16-quickgelu", "pretrained": False,
                                "image_size": 64, "layers": [10], "batch_size": 2}},
        "extraction": {"splits": ["train", "val"], "parts": 3},
        "sweeps": {"paper": {"train_split": "train"}},
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    target = "results/activations/toy/clip-b16/layer10.zarr"
    parts_dir = work / "results/activations/toy/clip-b16/layer10.parts"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", "1", "--keep-going", target, "--configfile", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
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
    before = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for name in finished for f in (parts_dir / name).rglob("*")}

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
        single = extract("results/manifests/toy.parquet", str(data), "toy", CLIP64, 10, tmp_path / "single.zarr",
                         ["train", "val"], batch_size=2)
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    assert_same_store(work / target, single)
    # the joined store's provenance reaches the parts' records and verifies
    assert provenance.verify(work / target) == []
    record = json.loads(provenance.record_path(work / target).read_text())
    assert record["rule"] == "extract"
