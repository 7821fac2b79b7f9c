"""Parallel extraction parts: N parts form a store bitwise equal to one job's (tests/e2e/test_parts_e2e.py
kills one part's job under Snakemake)."""

import itertools
import json
import os

import pytest
from synthetic import SPEC, assert_same_store, make_folder

from vitsae.data import store
from vitsae.data.activations import extract
from vitsae.data.manifest import build_manifest, write_manifest


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
    parts = [
        extract(
            manifest,
            root,
            "toy",
            SPEC,
            3,
            tmp_path / f"part{i}-of{nparts}.zarr",
            ["train", "val"],
            batch_size=4,
            part=(i, nparts),
        )
        for i in range(nparts)
    ]
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
    p0 = extract(
        manifest, root, "toy", SPEC, 3, tmp_path / "p0.zarr", ["train", "val"], batch_size=4, part=(0, 2)
    )
    p1 = extract(
        manifest, root, "toy", SPEC, 2, tmp_path / "p1.zarr", ["train", "val"], batch_size=4, part=(1, 2)
    )
    with pytest.raises(store.StoreError, match=r"need parts 0\.\.1 of 2"):
        store.assemble([p0], tmp_path / "out.zarr")
    with pytest.raises(store.StoreError, match="disagree on .*layer"):
        store.assemble([p0, p1], tmp_path / "out.zarr")
    with pytest.raises(store.StoreError, match="does not exist; run its extract_part job"):
        store.assemble([p0, tmp_path / "nope.zarr"], tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
