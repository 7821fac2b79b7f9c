"""vitsae.analysis.downstream: the model's remaining blocks, the probe, the splice and accuracy recovered, on a
real store of a random-weight DINOv2 (written by the extraction) with exact and mean-only "SAEs"."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import SPEC, make_folder

from vitsae.analysis.downstream import (
    COLUMNS,
    ablated,
    accuracy_recovered,
    downstream_table,
    fit_probe,
    spliced,
    write_downstream,
)
from vitsae.analysis.settings import TransferSettings
from vitsae.data import store
from vitsae.data.activations import extract
from vitsae.data.manifest import build_manifest, write_manifest
from vitsae.data.models import VisionModel, load_model
from vitsae.data.settings import ModelSpec
from vitsae.sae.checkpoint import SparseAutoencoder

LAYER = 0  # the earliest block: mean-ablating its patch tokens leaves the CLS token little to go on
SETTINGS = TransferSettings(ridge=1e-3)


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("dinov2-s14-reg", "dinov2", "vit_small_patch14_reg4_dinov2.lvd142m", False, 28),
        ModelSpec("clip-b16", "clip", "ViT-B-16-quickgelu", False, 32),
    ],
    ids=lambda s: s.name,
)
def test_finish_after_block_output_is_the_full_forward_pass(spec):
    vm = load_model(spec)
    x = torch.randn(3, 3, spec.image_size, spec.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = vm.module(x)
    assert full.shape == (3, 384 if spec.family == "dinov2" else 512)
    tol = 1e-6 * float(full.abs().max())  # random DINOv2 weights give tiny outputs
    for layer in (0, 5, vm.n_blocks - 1):
        torch.testing.assert_close(vm.finish(vm.block_output(x, layer), layer), full, rtol=1e-5, atol=tol)
    acts = vm.block_output(x, 5)
    with pytest.raises(ValueError, match="needs all tokens"):
        vm.finish(acts[:, 1:], 5)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[Path, Path]:
    """A store of every token of block 0 of the random-weight DINOv2-S/14 (56 px), 16 train and 8 val images
    of two classes, and its manifest."""
    root = tmp_path_factory.mktemp("toy")
    make_folder(root / "images", {"train": 8, "val": 4})
    df = build_manifest("toy", "imagefolder", root / "images", {"train": "train", "val": "val"})
    manifest = root / "toy.parquet"
    write_manifest(df, manifest)
    path = extract(
        manifest, root / "images", "toy", SPEC, LAYER, root / "layer0.zarr", ["train", "val"], batch_size=5
    )
    return path, manifest


def save_sae(directory: Path, W_enc_DF: torch.Tensor, W_dec_FD: torch.Tensor, b_dec_D: torch.Tensor,
             sae_id: str, dataset: str = "toy", kind: str = "patches") -> Path:  # fmt: skip
    d, f = W_enc_DF.shape
    cfg = {"d_in": d, "d_sae": f, "architecture": "relu_l1", "normalisation": {"kind": "scalar", "scale": 1.0},
           "token_kind": kind, "sae_id": sae_id,
           "meta": {"dataset": dataset, "model": SPEC.name, "layer": LAYER, "sweep": "unit"}}  # fmt: skip
    sae = SparseAutoencoder(d, f, "relu_l1", 1.0, cfg=cfg)
    with torch.no_grad():
        sae.W_enc_DF.copy_(W_enc_DF)
        sae.W_dec_FD.copy_(W_dec_FD)
        sae.b_dec_D.copy_(b_dec_D)
    sae.save(directory)
    return directory


def patch_mean(path: Path) -> np.ndarray:
    """The mean patch token of the train split, float64, on the whole array at once."""
    g = store.open_store(path)
    x = g["train"][:].astype(np.float64)[:, store.token_slice(dict(g.attrs["token_layout"]), "patches")]
    return x.reshape(-1, x.shape[2]).mean(axis=0)


def test_accuracy_recovered_is_one_for_an_exact_reconstruction_and_zero_for_the_mean(
    toy, tmp_path, monkeypatch
):
    path, manifest = toy
    d = 384
    eye = torch.eye(d)
    # relu(x) - relu(-x) = x exactly: a lossless "SAE"
    exact = save_sae(tmp_path / "exact", torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0), torch.zeros(d),
                     "exact-s0")  # fmt: skip
    mean = torch.as_tensor(patch_mean(path), dtype=torch.float32)
    # no feature ever fires: the reconstruction is b_dec, the ablation's mean
    only_mean = save_sae(tmp_path / "mean", torch.zeros(d, 8), torch.zeros(8, d), mean, "mean-s1", "other")
    out = tmp_path / "downstream.csv"
    seen = []  # every input of the remaining blocks, in order
    finish = VisionModel.finish
    monkeypatch.setattr(
        VisionModel, "finish", lambda vm, acts, layer: seen.append(acts.clone()) or finish(vm, acts, layer)
    )
    # the probe is evaluated on its own training images: the clean representation separates them perfectly
    df = write_downstream(path, manifest, [exact, only_mean], "train", "train", out, SETTINGS)
    assert list(df.columns) == COLUMNS and list(pd.read_csv(out).columns) == COLUMNS
    r = df.set_index("sae_id")
    assert (df["n_train"] == 16).all() and (df["n_eval"] == 16).all() and (df["n_classes"] == 2).all()
    assert (
        (df["labels"] == "label").all()
        and (df["probe"] == "ridge").all()
        and (df["eval_dataset"] == "toy").all()
    )
    assert r.loc["exact-s0", "in_domain"] and not r.loc["mean-s1", "in_domain"]
    assert r.loc["mean-s1", "train_dataset"] == "other" and r.loc["mean-s1", "seed"] == 1
    clean, abl = r.loc["exact-s0", "acc_clean"], r.loc["exact-s0", "acc_ablated"]
    assert clean == 1.0 and clean - abl >= SETTINGS.min_accuracy_span
    assert r.loc["exact-s0", "acc_spliced"] == clean and r.loc["exact-s0", "accuracy_recovered"] == 1.0
    assert r.loc["mean-s1", "acc_spliced"] == abl and r.loc["mean-s1", "accuracy_recovered"] == 0.0
    assert (df["reason"] == "").all()
    # what the blocks after the layer saw: per evaluation chunk (after the 4 chunks of the train pass) clean,
    # mean-ablated patches, each SAE's splice. CLS stays clean; the ablation is the train split's patch mean.
    evals = seen[4:]
    assert len(evals) == 4 * 4
    for clean_x, abl_x, exact_x, mean_x in zip(*[iter(evals)] * 4, strict=True):
        assert torch.equal(exact_x, clean_x) and torch.equal(mean_x, abl_x)
        assert torch.equal(abl_x[:, :1], clean_x[:, :1]) and torch.equal(
            abl_x[:, 1:], mean.expand_as(abl_x[:, 1:])
        )
    monkeypatch.undo()
    # a held-out split with random images and random weights: the numbers are defined and in [0, 1]
    val = downstream_table(path, manifest, [exact, only_mean], "train", "val", SETTINGS)
    assert (
        val["n_eval"].eq(8).all()
        and val[["acc_clean", "acc_ablated", "acc_spliced"]].stack().between(0, 1).all()
    )
    assert (val["acc_spliced"] == val["acc_clean"])[val["sae_id"] == "exact-s0"].all()
    # a capped train sample is a seeded subset
    capped = downstream_table(path, manifest, [exact], "train", "val", TransferSettings(probe_max_images=6))
    assert capped["n_train"].iloc[0] == 6


def test_the_splice_replaces_only_the_sae_token_kind():
    layout = {"n_tokens": 7, "n_prefix": 3, "n_registers": 2, "cls_index": 0, "grid": [2, 2], "kept": "all"}
    acts = torch.randn(2, 7, 4, generator=torch.Generator().manual_seed(0))
    sae = SparseAutoencoder(4, 3, "relu_l1", cfg={})
    with torch.no_grad():
        sae.b_dec_D.fill_(5.0)  # reconstruction = 5 everywhere
    out = spliced(acts, store.token_slice(layout, "patches"), sae, batch_tokens=3)
    assert torch.equal(out[:, :3], acts[:, :3]) and (out[:, 3:] == 5.0).all()  # CLS and registers stay clean
    out = ablated(acts, store.token_slice(layout, "cls"), torch.full((4,), -1.0))
    assert (out[:, 0] == -1.0).all() and torch.equal(out[:, 1:], acts[:, 1:])
    assert not (acts == 5.0).any()  # the input is left as it was


def test_probes_equal_a_float64_reference():
    rng = np.random.default_rng(0)
    n, d, c = 40, 6, 3
    y = rng.integers(0, c, n)
    x = rng.normal(0, 1, (n, d)) * rng.uniform(0.1, 5, d) + rng.normal(0, 3, d) + 2.0 * np.eye(c, d)[y]
    ridge = 0.7
    got = fit_probe(x, y, c, "ridge", ridge)
    # reference: least squares on the standardised features, augmented with √(n λ tr(C)/d) I rows
    z = (x - x.mean(0)) / x.std(0)
    yc = np.eye(c)[y] - np.eye(c)[y].mean(0)
    lam = ridge * np.trace(z.T @ z / n) / d
    a = np.vstack([z, np.sqrt(n * lam) * np.eye(d)])
    w = np.linalg.lstsq(a, np.vstack([yc, np.zeros((d, c))]), rcond=None)[0]
    np.testing.assert_allclose(got.W_DC, w, rtol=1e-10, atol=1e-12)
    x_new = rng.normal(0, 3, (25, d))
    scores = (x_new - x.mean(0)) / x.std(0) @ w + np.eye(c)[y].mean(0)
    np.testing.assert_array_equal(got.predict(x_new), scores.argmax(1))
    # nearest class mean by cosine, one image at a time
    cen = fit_probe(x, y, c, "centroid")
    xc = x - x.mean(0)
    means = [(xc[y == k] / np.linalg.norm(xc[y == k], axis=1, keepdims=True)).sum(0) for k in range(c)]
    for row in x_new:
        v = row - x.mean(0)
        cos = [v @ m / np.linalg.norm(v) / np.linalg.norm(m) for m in means]
        assert cen.predict(row[None])[0] == int(np.argmax(cos))
    with pytest.raises(ValueError, match="ridge or centroid"):
        fit_probe(x, y, c, "knn")


def test_accuracy_recovered_is_undefined_when_the_layer_does_not_matter():
    assert accuracy_recovered(0.9, 0.5, 0.8, 0.05) == (pytest.approx(0.75), "")
    value, reason = accuracy_recovered(0.52, 0.5, 0.51, 0.05)
    assert math.isnan(value) and "min_accuracy_span" in reason
    assert math.isnan(accuracy_recovered(0.5, 0.5, 0.5, 0.0)[0])  # no span at all


def _store(path: Path, kept: str, weights: dict) -> Path:
    n_tok = {"all": 17, "patches": 16}[kept]
    lay = {"n_tokens": n_tok, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [4, 4], "kept": kept}
    attrs = {
        "token_layout": lay,
        "dataset": "toy",
        "layer": LAYER,
        "model": SPEC.to_dict(),
        "weights": weights,
    }
    acts = np.zeros((4, n_tok, 384), dtype=np.float32)
    return store.write_arrays(path, attrs, {"train": acts, "val": acts}, chunk_images=2)


def test_a_store_without_every_token_is_refused(toy, tmp_path):
    path = _store(tmp_path / "patches.zarr", "patches", {})
    with pytest.raises(
        store.StoreError, match=r"extraction.tokens: all \(or models.dinov2-s14.tokens: all\)"
    ):
        downstream_table(path, toy[1], [], "train", "val")


def test_a_store_written_by_other_weights_is_refused(toy, tmp_path):
    path = _store(tmp_path / "other.zarr", "all", {"source": "random", "state_sha256": "sha256:0000"})
    with pytest.raises(store.StoreError, match="sha256:0000.*re-extract the store"):
        downstream_table(path, toy[1], [], "train", "val")
