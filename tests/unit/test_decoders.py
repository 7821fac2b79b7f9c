"""Decoder-direction matching across SAEs (vitsae.analysis.decoders) on planted dictionaries."""

import itertools
import json

import numpy as np
import pandas as pd
import pypdf
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vitsae.analysis import decoders as tf
from vitsae.layout import FIGURES
from vitsae.sae import checkpoint

D, F = 64, 150


def _planted(seed: int = 0, shared: float = 0.8, noise: float = 0.02):
    """A: F random unit directions; B: a permutation of A's first ``shared`` share plus small noise, and
    fresh random directions for the rest. Returns (U_a, U_b, perm) with B[perm[i]] ≈ A[i] for i < n_shared."""
    rng = np.random.default_rng(seed)
    U_a = tf.unit_rows(rng.standard_normal((F, D)))
    n_shared = int(shared * F)
    B = rng.standard_normal((F, D))
    B[:n_shared] = U_a[:n_shared] + noise * rng.standard_normal((n_shared, D)) / np.sqrt(D)
    perm = rng.permutation(F)
    U_b = np.empty_like(B)
    U_b[perm] = B  # row i of B goes to position perm[i]
    return U_a, tf.unit_rows(U_b), perm, n_shared


def test_planted_shared_directions_are_found_and_matched():
    U_a, U_b, perm, n_shared = _planted()
    summary, bm, _ = tf.compare(U_a, U_b)
    assert summary["share_ab_above_0.9"] == pytest.approx(n_shared / F, abs=1e-9)  # exactly the shared ones
    assert summary["share_ba_above_0.9"] == pytest.approx(n_shared / F, abs=1e-9)
    np.testing.assert_array_equal(bm.arg_ab_F[:n_shared], perm[:n_shared])
    np.testing.assert_array_equal(bm.arg_ba_G[perm[:n_shared]], np.arange(n_shared))
    rows, cols, cos = tf.one_to_one(U_a, U_b)
    np.testing.assert_array_equal(rows, np.arange(F))
    np.testing.assert_array_equal(cols[:n_shared], perm[:n_shared])  # the permutation is recovered
    assert (cos[:n_shared] > 0.99).all() and summary["matched_share_above_0.9"] == pytest.approx(0.8)
    assert summary["n_matched"] == F and summary["matched_mean"] == pytest.approx(cos.mean())
    # blockwise equals one block, and both equal a dense float64 reference
    dense = U_a.astype(np.float64) @ U_b.astype(np.float64).T
    small = tf.best_cosines(U_a, U_b, block=7)
    np.testing.assert_allclose(small.best_ab_F, dense.max(axis=1), atol=1e-6)
    np.testing.assert_allclose(small.best_ba_G, dense.max(axis=0), atol=1e-6)
    np.testing.assert_array_equal(small.arg_ba_G, bm.arg_ba_G)


def test_random_directions_give_the_floor():
    U_a, _, _, _ = _planted()
    rand1, rand2 = tf.random_directions(F, D, 1), tf.random_directions(F, D, 2)
    s_floor, _, _ = tf.compare(U_a, rand1)
    s_rand, _, _ = tf.compare(rand2, rand1)
    expected = np.sqrt(2 * np.log(F) / D)  # the best of F random cosines in D dimensions, roughly
    for s in (s_floor, s_rand):
        assert 0.5 * expected < s["mean_best_ab"] < 1.2 * expected and s["share_ab_above_0.7"] == 0
    assert abs(s_floor["mean_best_ab"] - s_rand["mean_best_ab"]) < 0.03
    np.testing.assert_allclose(np.linalg.norm(rand1, axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(rand1, tf.random_directions(F, D, 1))


@pytest.mark.parametrize("shape", [(6, 6), (4, 6), (6, 4)])
def test_matching_equals_brute_force_assignment(shape):
    rng = np.random.default_rng(sum(shape))
    U_a, U_b = (
        tf.unit_rows(rng.standard_normal((shape[0], 5))),
        tf.unit_rows(rng.standard_normal((shape[1], 5))),
    )
    cos = U_a.astype(np.float64) @ U_b.astype(np.float64).T
    n = min(shape)
    best = max(
        (sum(cos[r, c] for r, c in zip(rows, cols)), rows, cols)
        for rows in itertools.combinations(range(shape[0]), n)
        for cols in itertools.permutations(range(shape[1]), n)
    )
    rows, cols, matched = tf.one_to_one(U_a, U_b)
    assert matched.sum() == pytest.approx(best[0], abs=1e-12)
    assert sorted(zip(rows, cols)) == sorted(zip(best[1], best[2]))


def test_subset_matching_is_flagged_and_keeps_the_best():
    U_a, U_b, _, n_shared = _planted()
    summary, _, matched = tf.compare(U_a, U_b, max_match=n_shared)
    assert summary["matched_subset"] and summary["n_matched"] == n_shared and (matched > 0.99).all()


def _save_sae(directory, U_FD: np.ndarray, place: dict, scale: float = 1.0) -> None:
    directory.mkdir(parents=True)
    sae = checkpoint.SparseAutoencoder(U_FD.shape[1], U_FD.shape[0], "relu_l1")
    with torch.no_grad():
        sae.W_dec_FD.copy_(torch.from_numpy(3.0 * U_FD))  # not unit length on disk
    save_file(sae.tensors(), str(directory / checkpoint.WEIGHTS_FILE))
    cfg = {"d_in": D, "d_sae": U_FD.shape[0], "architecture": "relu_l1", "normalisation": {"scale": scale},
           "sae_id": directory.name, "meta": place}  # fmt: skip
    (directory / checkpoint.CFG_FILE).write_text(json.dumps(cfg))


def test_pairs_from_checkpoints_table_and_figure(tmp_path):
    U_a, U_b, perm, n_shared = _planted()
    U_a2 = tf.unit_rows(U_a + 0.3 * np.random.default_rng(9).standard_normal(U_a.shape) / np.sqrt(D))
    setting = "relu_l1-x8-l1_3-lr_0.004"
    paths = {("inet", 0): U_a, ("inet", 1): U_a2, ("inat", 1): U_b}
    refs = []
    for i, ((dataset, seed), U) in enumerate(paths.items()):
        d = tmp_path / f"sae{i}" / f"{setting}-s{seed}"  # the place is read from cfg.json, not the path
        _save_sae(d, U, {"dataset": dataset, "model": "clip", "layer": 11, "sweep": "main"})
        refs.append(tf.decoder_ref(d / checkpoint.WEIGHTS_FILE if seed else d))
    # live features from a statistics table: the last 10 features of inat/s1 never fire
    feats = pd.DataFrame(
        {"feature": np.arange(F), "n_active_tokens": np.r_[np.ones(F - 10, int), np.zeros(10, int)]}
    )
    feats.to_parquet(tmp_path / "features.parquet")
    refs[2] = tf.DecoderRef(**{**refs[2].__dict__, "features": tmp_path / "features.parquet"})
    first = refs[0]
    assert (first.dataset, first.model, first.layer, first.sweep, first.seed) == (
        "inet",
        "clip",
        11,
        "main",
        0,
    )
    assert refs[1].sae_id == f"{setting}-s1" and refs[1].setting == setting

    pairs = tf.plan_pairs(refs)
    kinds = sorted((p.kind, p.a.name, p.b.name if p.b else None) for p in pairs)
    assert [k[0] for k in kinds] == ["ceiling", "cross", "cross-same-seed", "floor"]
    cross = next(p for p in pairs if p.kind == "cross")
    assert {cross.a.dataset, cross.b.dataset} == {"inat", "inet"} and cross.a.seed != cross.b.seed

    title = FIGURES["transfer_features"]
    table = tf.write_transfer_features(
        pairs, tmp_path / "fig.pdf", tmp_path / "tab.csv", title, "DEMO run", seed=3
    )
    assert list(table.columns) == tf.COLUMNS and len(table) == 4
    row = table.set_index("kind")
    assert row.loc["cross-same-seed", "n_a"] == F - 10 or row.loc["cross-same-seed", "n_b"] == F - 10
    # the cross pair is the planted one (A = inat/s1, datasets in name order): its live shared rows
    n_live_shared = int((perm[:n_shared] < F - 10).sum())
    assert row.loc["cross", ["dataset_a", "seed_a", "seed_b"]].tolist() == ["inat", 1, 0]
    assert row.loc["cross", "share_ab_above_0.9"] == pytest.approx(n_live_shared / (F - 10))
    assert row.loc["cross", "share_ba_above_0.9"] == pytest.approx(n_live_shared / F)
    assert row.loc["cross", "matched_share_above_0.9"] == pytest.approx(n_live_shared / (F - 10))
    assert row.loc["floor", "mean_best_ab"] < 0.6 and row.loc["ceiling", "mean_best_ab"] > 0.9
    assert row.loc["floor", "dataset_b"] == "random"
    assert pd.read_csv(tmp_path / "tab.csv").shape == table.shape
    text = "".join(p.extract_text() for p in pypdf.PdfReader(str(tmp_path / "fig.pdf")).pages)
    assert FIGURES["transfer_features"] in text and "DEMO run" in text and "matched" in text
    tf.write_transfer_features(pairs, tmp_path / "fig.png", tmp_path / "tab2.csv", title, "DEMO run", seed=3)
    with Image.open(tmp_path / "fig.png") as im:
        assert im.size[0] > 400 and np.asarray(im.convert("L")).std() > 10
    # seeded: the same floor again
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "tab2.csv"), pd.read_csv(tmp_path / "tab.csv"))

    bad = pd.DataFrame({"feature": np.arange(3), "n_active_tokens": 1})
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="bad.parquet has 3 rows.*pass the SAE's own statistics"):
        tf.load_directions(tf.DecoderRef(**{**refs[0].__dict__, "features": tmp_path / "bad.parquet"}))
    with pytest.raises(FileNotFoundError, match="x/cfg.json does not exist"):
        tf.decoder_ref(tmp_path / "x")
    with pytest.raises(ValueError, match="decoder dimensions differ"):
        tf.best_cosines(U_a, U_a[:, :10])
