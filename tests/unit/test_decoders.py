"""Decoder-direction matching across SAEs (vitsae.analysis.decoders) on planted dictionaries."""

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pypdf
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from synthetic import make_store

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


def _anisotropic(d: int = D, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(Σ, basis): a covariance whose k directions ``basis[:, :k]`` (a random rotation) carry 99.9% of the
    variance, the other d − k almost none."""
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    lam = np.r_[np.full(k, 100.0), np.full(d - k, 0.01)]
    return (basis * lam) @ basis.T, basis


def test_covariance_floor_follows_anisotropic_data():
    # decoder directions in the high-variance subspace, as trained decoders are: random directions with the
    # data's covariance find them (a high floor), isotropic ones do not. Drawing the covariance floor
    # isotropically makes the two floors equal and this test fail.
    cov, basis = _anisotropic()
    U_a = tf.unit_rows(np.random.default_rng(1).standard_normal((F, 4)) @ basis[:, :4].T)
    iso = tf.random_directions(4096, D, [0, 0])
    shaped = tf.random_directions(4096, D, [0, 0], cov)
    s_iso, _, _ = tf.compare(U_a, iso, match=False)
    s_cov, _, _ = tf.compare(U_a, shaped, match=False)
    assert s_iso["mean_best_ab"] < 0.6 and s_cov["mean_best_ab"] > 0.9
    assert s_cov["mean_best_ab"] > s_iso["mean_best_ab"] + 0.3
    # the draws carry the data's second moments: nearly all their squared length in the top subspace
    np.testing.assert_allclose(np.linalg.norm(shaped, axis=1), 1, atol=1e-6)
    top = lambda U: float(((U @ basis[:, :4]) ** 2).sum(axis=1).mean())
    assert top(shaped) > 0.99 and top(iso) == pytest.approx(4 / D, abs=0.01)
    # the same normals: an isotropic covariance (any scale) gives exactly the isotropic floor
    np.testing.assert_allclose(tf.random_directions(4096, D, [0, 0], 7.0 * np.eye(D)), iso, atol=1e-6)
    # through the table: one floor of each kind for the planted SAE, from the covariance given
    ref = tf.DecoderRef(Path("a"), "inet", "clip", 11, "main", "relu-s0")
    ref_b = tf.DecoderRef(Path("b"), "inat", "clip", 11, "main", "relu-s1")
    seen = []

    def covariance(r, dataset):
        seen.append((r.name, dataset))
        return tf.DataCovariance(1000, cov)

    pairs = tf.plan_pairs([ref, ref_b])
    assert [(p.kind, p.floor_dataset) for p in pairs] == [
        ("cross", None),
        ("floor-isotropic", None),
        ("floor-covariance", "inet"),
    ]
    assert pairs[0].a == ref_b  # datasets in name order: inat is A, its covariance floor stands for inet
    table, _ = tf.pair_table(pairs, load=lambda r: U_a, covariance=covariance, floor_draws=1024, match=False)
    row = table.set_index("kind")
    assert seen == [(ref_b.name, "inet")]
    assert row.loc["floor-covariance", "mean_best_ab"] > row.loc["floor-isotropic", "mean_best_ab"] + 0.3
    assert row.loc["floor-covariance", "n_b"] == 1024 and row.loc["floor-covariance", "cov_tokens"] == 1000
    assert row.loc["floor-covariance", "cov_effective_dim"] == pytest.approx(
        (4 * 100 + 60 * 0.01) ** 2 / (4 * 100**2 + 60 * 0.01**2)
    )
    assert (
        row.loc["floor-covariance", "dataset_b"] == "inet"
        and row.loc["floor-isotropic", "dataset_b"] == "random"
    )
    with pytest.raises(ValueError, match="covariance floors need the activation covariance"):
        tf.pair_table(pairs, load=lambda r: U_a)


def test_data_covariance_is_centred_and_bounded(tmp_path):
    # tokens around a large mean along a low-variance direction: the centred covariance (not the second
    # moment) is what the floor draws from, so no draw points along the mean
    cov, basis = _anisotropic(d=16, k=2, seed=3)
    rng = np.random.default_rng(4)
    n_images, n_tokens = 40, 9  # a CLS token and 8 patches per image
    mean_D = 30.0 * basis[:, -1]
    x = mean_D + rng.standard_normal((n_images * n_tokens, 16)) @ np.linalg.cholesky(cov).T
    acts = x.reshape(n_images, n_tokens, 16)
    path = make_store(tmp_path / "s.zarr", {"train": acts, "val": acts[:5]}, chunk_images=5)
    stored = acts.astype(np.float16).astype(np.float64)
    got = tf.data_covariance(path, "train", "patches")
    ref = np.cov(stored[:, 1:].reshape(-1, 16).T)  # float64 reference over every patch token
    assert got.n == n_images * 8
    np.testing.assert_allclose(got.cov_DD, ref, rtol=1e-9, atol=1e-9)
    draws = tf.random_directions(2000, 16, 0, got.cov_DD)
    # the mean's direction has almost no variance; the uncentred second moment would draw along it
    second = stored[:, 1:].reshape(-1, 16).T @ stored[:, 1:].reshape(-1, 16) / (n_images * 8)
    along = np.abs(tf.random_directions(2000, 16, 0, second) @ basis[:, -1]).mean()
    assert np.abs(draws @ basis[:, -1]).mean() < 0.05 and along > 0.5
    # bounded: whole chunks in a seeded order, the last one cut
    got = tf.data_covariance(path, "train", "cls", max_tokens=7, seed=5)
    order = np.random.default_rng(5).permutation(n_images // 5)
    rows = np.concatenate([stored[5 * c : 5 * c + 5, 0] for c in order[:2]])[:7]
    assert got.n == 7
    np.testing.assert_allclose(got.cov_DD, np.cov(rows.T), rtol=1e-9, atol=1e-9)
    assert tf.store_key(path) == ("planted", "synthetic", 3)
    # from the rule's stores: by the store's place, once per (place, token kind, split)
    covariance = tf.store_covariance([path], max_tokens=7, seed=5)
    ref = tf.DecoderRef(Path("x"), "other", "synthetic", 3, "main", "relu-s0", token_kind="cls")
    first = covariance(ref, "planted")
    assert first is covariance(ref, "planted") and first.n == 7
    np.testing.assert_array_equal(first.cov_DD, got.cov_DD)
    with pytest.raises(ValueError, match="no activation store of dataset 'inat', model 'synthetic', layer 3"):
        covariance(ref, "inat")
    with pytest.raises(ValueError, match="has 1 'all' tokens; a covariance needs 2"):
        tf.data_covariance(path, "val", "all", max_tokens=1)


def test_seed_pair_ci_by_hand():
    # three pairs: mean 0.6, sd 0.1, t(0.975, 2) = 4.302653: half width 0.1 * 4.302653 / sqrt(3) = 0.248414
    mean, low, high, method = tf.seed_pair_ci([0.5, 0.7, 0.6])
    assert (mean, method) == (pytest.approx(0.6), "t95")
    assert low == pytest.approx(0.6 - 0.248414, abs=1e-6) and high == pytest.approx(0.6 + 0.248414, abs=1e-6)
    assert tf.seed_pair_ci([0.3, 0.5]) == (pytest.approx(0.4), 0.3, 0.5, "range")
    mean, low, high, method = tf.seed_pair_ci([0.3])
    assert mean == 0.3 and np.isnan(low) and np.isnan(high) and method == "single"


def test_table_pools_each_kind_over_its_seed_pairs():
    # two datasets x three seeds of one setting, and a second setting with one seed per dataset
    rng = np.random.default_rng(0)
    base = tf.unit_rows(rng.standard_normal((40, 16)))
    refs, dirs = [], {}
    for dataset, seed in itertools.product(("inat", "inet"), (0, 1, 2)):
        ref = tf.DecoderRef(Path(f"{dataset}{seed}"), dataset, "clip", 11, "main", f"relu-l1_3-s{seed}")
        refs.append(ref)
        dirs[ref.name] = tf.unit_rows(base + (0.3 + 0.2 * seed) * rng.standard_normal(base.shape))
    for dataset in ("inat", "inet"):
        ref = tf.DecoderRef(Path(dataset), dataset, "clip", 11, "main", "relu-l1_6-s0")
        refs.append(ref)
        dirs[ref.name] = tf.unit_rows(rng.standard_normal((40, 16)))
    pairs = tf.plan_pairs(refs, floors=False)
    table, curves = tf.pair_table(pairs, load=lambda r: dirs[r.name], match=False)
    counts = table.groupby(["setting", "kind"]).size().to_dict()
    assert counts == {("relu-l1_3", "ceiling"): 6, ("relu-l1_3", "cross"): 6, ("relu-l1_3", "cross-same-seed"): 3,
                      ("relu-l1_6", "cross-same-seed"): 1}  # fmt: skip
    for (setting, kind), g in table.groupby(["setting", "kind"]):
        mean, low, high, method = tf.seed_pair_ci(g["mean_best_ab"])
        assert (g["n_pairs"] == len(g)).all() and (g["ci_method"] == method).all()
        assert np.allclose(g["mean_best_ab_kind_mean"], mean)
        assert np.allclose(g["mean_best_ab_ci_low"], low, equal_nan=True)
        assert np.allclose(g["mean_best_ab_ci_high"], high, equal_nan=True)
    ceiling = table[(table["kind"] == "ceiling")].iloc[0]
    assert (
        ceiling["ci_method"] == "t95" and ceiling["mean_best_ab_ci_low"] < ceiling["mean_best_ab_kind_mean"]
    )
    # the figure's bands: at each quantile level, the same interval over the pairs' curves
    bands = tf.curve_bands(curves)
    one = bands[(bands["kind"] == "ceiling") & (bands["measure"] == "best") & (bands["cdf"] == 0.5)].iloc[0]
    medians = table[(table["kind"] == "ceiling") & (table["setting"] == "relu-l1_3")]["median_best_ab"]
    assert one["n_pairs"] == 6 and one["cosine"] == pytest.approx(medians.mean(), abs=1e-6)
    assert (one["low"], one["high"]) == pytest.approx(tf.seed_pair_ci(medians)[1:3], abs=1e-6)


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
           "sae_id": directory.name, "token_kind": "patches", "meta": place}  # fmt: skip
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
    assert (refs[1].token_kind, refs[1].split) == ("patches", "train")

    pairs = tf.plan_pairs(refs)
    kinds = sorted((p.kind, p.a.name, p.b.name if p.b else None) for p in pairs)
    assert [k[0] for k in kinds] == [
        "ceiling",
        "cross",
        "cross-same-seed",
        "floor-covariance",
        "floor-isotropic",
    ]
    cross = next(p for p in pairs if p.kind == "cross")
    assert {cross.a.dataset, cross.b.dataset} == {"inat", "inet"} and cross.a.seed != cross.b.seed

    title = FIGURES["transfer_features"]
    cov, _ = _anisotropic()
    shaped = {"covariance": lambda ref, dataset: tf.DataCovariance(500, cov), "floor_draws": 300}
    table = tf.write_transfer_features(
        pairs, tmp_path / "fig.pdf", tmp_path / "tab.csv", title, "DEMO run", seed=3, **shaped
    )
    assert list(table.columns) == tf.COLUMNS and len(table) == 5
    # one pair of each kind: no interval
    assert (table["n_pairs"] == 1).all() and (table["ci_method"] == "single").all()
    assert table["mean_best_ab_ci_low"].isna().all()
    np.testing.assert_allclose(table["mean_best_ab_kind_mean"], table["mean_best_ab"])
    row = table.set_index("kind")
    assert row.loc["cross-same-seed", "n_a"] == F - 10 or row.loc["cross-same-seed", "n_b"] == F - 10
    # the cross pair is the planted one (A = inat/s1, datasets in name order): its live shared rows
    n_live_shared = int((perm[:n_shared] < F - 10).sum())
    assert row.loc["cross", ["dataset_a", "seed_a", "seed_b"]].tolist() == ["inat", 1, 0]
    assert row.loc["cross", "share_ab_above_0.9"] == pytest.approx(n_live_shared / (F - 10))
    assert row.loc["cross", "share_ba_above_0.9"] == pytest.approx(n_live_shared / F)
    assert row.loc["cross", "matched_share_above_0.9"] == pytest.approx(n_live_shared / (F - 10))
    assert row.loc["floor-isotropic", "mean_best_ab"] < 0.6 and row.loc["ceiling", "mean_best_ab"] > 0.9
    assert (
        row.loc["floor-isotropic", "dataset_b"] == "random"
        and row.loc["floor-covariance", "dataset_b"] == "inet"
    )
    assert row.loc["floor-covariance", "n_b"] == 300 and row.loc["floor-covariance", "cov_tokens"] == 500
    assert pd.read_csv(tmp_path / "tab.csv").shape == table.shape
    text = "".join(p.extract_text() for p in pypdf.PdfReader(str(tmp_path / "fig.pdf")).pages)
    assert FIGURES["transfer_features"] in text and "DEMO run" in text and "matched" in text
    # the pair kinds explained in the figure itself, once each
    for kind in tf.KINDS:
        assert text.count(tf.KIND_LABELS[kind]) == 1, kind
    assert "initial decoder" in text and "covariance of B's activations" in text
    tf.write_transfer_features(
        pairs, tmp_path / "fig.png", tmp_path / "tab2.csv", title, "DEMO run", seed=3, **shaped
    )
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
