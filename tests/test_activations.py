import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitsae import store
from vitsae.activations import extract
from vitsae.manifest import build_manifest, manifest_digest, write_manifest
from vitsae.models import ModelSpec, load_model

SPEC = ModelSpec("dinov2-s14", "dinov2", "vit_small_patch14_dinov2.lvd142m", False, 56)


def make_folder(root: Path, n_per_class: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, n in n_per_class.items():
        for label in ("cat", "dog"):
            d = root / split / label
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (40 + i % 3 * 8, 64, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{label}_{i}.jpg", quality=90)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    make_folder(root, {"train": 5, "val": 2})
    df = build_manifest("toy", "imagefolder", root, {"train": "train", "val": "val"})
    path = root.parent / "toy.parquet"
    write_manifest(df, path)
    return root, path, df


def test_store_holds_the_models_block_output_per_image(dataset, tmp_path):
    root, manifest, df = dataset
    out = extract(manifest, root, "toy", SPEC, 4, tmp_path / "layer4.zarr", ["train", "val"], batch_size=4)
    g = store.open_store(out)
    vm = load_model(SPEC)
    assert g.attrs["token_layout"] == vm.token_layout
    assert g.attrs["layer"] == 4 and g.attrs["model"]["arch"] == SPEC.arch
    assert g.attrs["manifest_sha256"] == manifest_digest(manifest)
    assert g.attrs["preprocessing"]["input_size"] == [3, 56, 56]
    assert g.attrs["splits"] == {"train": 10, "val": 4}
    train = g["train"]
    assert train.shape == (10, vm.token_layout["n_tokens"], 384) and train.chunks[0] == 4
    rows = g["train_rows"][:]
    assert (df.loc[rows, "split"] == "train").all() and len(set(rows)) == 10
    # every stored image equals the model's block output for that image, computed independently
    paths = df.loc[rows, "path"].tolist()
    x = torch.stack([vm.transform(Image.open(root / p).convert("RGB")) for p in paths])
    ref = vm.block_output(x, 4).to(torch.float16).numpy()
    np.testing.assert_array_equal(train[:], ref)
    np.testing.assert_array_equal(g["val_rows"][:], np.flatnonzero(df["split"] == "val"))


def test_corrupt_rows_are_left_out_of_the_store(tmp_path):
    bad_root = tmp_path / "bad"
    make_folder(bad_root, {"train": 3, "val": 1})
    (bad_root / "train" / "cat" / "cat_0.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    df = build_manifest("toy", "imagefolder", bad_root, {"train": "train", "val": "val"}, on_corrupt="skip")
    write_manifest(df, tmp_path / "bad.parquet")
    out = extract(tmp_path / "bad.parquet", bad_root, "toy", SPEC, 1, tmp_path / "l1.zarr", ["train"], batch_size=2)
    g = store.open_store(out)
    assert g.attrs["splits"] == {"train": 5}
    kept = set(df.loc[g["train_rows"][:], "path"])
    assert "train/cat/cat_0.jpg" not in kept and len(kept) == 5


def test_killed_extraction_publishes_nothing_and_the_rerun_completes(tmp_path):
    root = tmp_path / "data"
    make_folder(root, {"train": 60})
    manifest = tmp_path / "m.parquet"
    write_manifest(build_manifest("toy", "imagefolder", root, {"train": "train"}), manifest)
    out = tmp_path / "acts" / "layer10.zarr"
    clip = "ModelSpec('clip-b16', 'clip', 'ViT-B-16-quickgelu', False, 64)"
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from vitsae.activations import extract\nfrom vitsae.models import ModelSpec\n"
        f"extract({str(manifest)!r}, {str(root)!r}, 'toy', {clip}, 10, {str(out)!r}, ['train'], batch_size=2)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 120
    partial = None
    while time.time() < deadline and proc.poll() is None:
        found = list(out.parent.glob(".layer10.zarr.partial-*/train/c/*")) if out.parent.exists() else []
        if len(found) >= 2:  # some chunks are on disk: the job is half way
            partial = found[0].parents[2]
            break
        time.sleep(0.05)
    assert partial is not None and proc.poll() is None, "extraction finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    with pytest.raises(store.StoreError):
        store.open_store(out)
    with pytest.raises(store.StoreError, match="is incomplete"):
        store.open_store(partial)
    extract(manifest, root, "toy", ModelSpec("clip-b16", "clip", "ViT-B-16-quickgelu", False, 64), 10, out,
            ["train"], batch_size=8)
    g = store.open_store(out)
    assert g.attrs["splits"] == {"train": 120}
    assert np.isfinite(g["train"][:]).all()
    assert not partial.exists()  # the killed job's leftovers are cleaned up
