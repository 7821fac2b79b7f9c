"""Finding 3 (vitsae.analysis.matched, .baselines, claims.transfer_rows): the gap at matched L0, the PCA and
re-centred baselines against float64 NumPy references, and the verdict rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from vitsae.analysis import baselines
from vitsae.analysis import matched as transfer
from vitsae.analysis.claims import CLAIMS_COLUMNS, transfer_rows
from vitsae.data.store import write_arrays
from vitsae.sae.checkpoint import SparseAutoencoder
from vitsae.sae.evaluate import evaluate

ATTRS = {"token_layout": {"n_tokens": 5, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [2, 2]},
         "layer": 3, "model": {"name": "synthetic"}}  # fmt: skip
D = 10


def evals(rows: list[tuple]) -> pd.DataFrame:
    """A transfer table from (sae_id, seed, train, eval, l0, fvu) tuples of one model, layer and sweep."""
    return pd.DataFrame([
        {"model": "m", "layer": 3, "sweep": "paper", "sae_id": f"{s}-s{seed}", "setting": s, "seed": seed,
         "train_dataset": tr, "eval_dataset": ev, "in_domain": tr == ev, "l0": l0, "fvu": fvu}
        for s, seed, tr, ev, l0, fvu in rows
    ])  # fmt: skip


OWN = [("a", 0, "T", "T", 10.0, 0.30), ("b", 0, "T", "T", 40.0, 0.10), ("a", 1, "T", "T", 12.0, 0.32),
       ("b", 1, "T", "T", 38.0, 0.12)]  # fmt: skip


def test_an_sae_on_its_own_data_lies_on_its_frontier_with_gap_zero():
    g = transfer.matched_gaps(evals(OWN), max_extrapolation=1.0)
    assert np.allclose(g["gap"], 0.0, atol=1e-12) and np.allclose(g["extrapolation"], 0.0)


def test_the_frontier_interpolates_in_log_l0_and_extends_at_most_max_extrapolation():
    # seed 0's frontier: (10, 0.30) and (40, 0.10); at L0 20 (halfway in log2) it is 0.20
    moved = [("a", 0, "S", "T", 20.0, 0.50), ("b", 0, "S", "T", 80.0, 0.40), ("b", 1, "S", "T", 200.0, 0.4)]
    g = transfer.matched_gaps(evals(OWN + moved), max_extrapolation=1.0).set_index(
        ["sae_id", "train_dataset"]
    )
    assert math.isclose(g.loc[("a-s0", "S"), "frontier_fvu"], 0.20) and math.isclose(
        g.loc[("a-s0", "S"), "gap"], 0.30
    )
    # one log2 unit past 40: the last segment extended, slope -0.1 per log2 unit → 0.0
    assert math.isclose(g.loc[("b-s0", "S"), "frontier_fvu"], 0.0, abs_tol=1e-12)
    assert math.isclose(g.loc[("b-s0", "S"), "extrapolation"], 1.0)
    # seed 1's frontier ends at 38: 200 lies log2(200/38) = 2.4 units beyond → left empty, never guessed
    far = g.loc[("b-s1", "S")]
    assert math.isnan(far["gap"]) and math.isclose(far["extrapolation"], math.log2(200 / 38))


def test_t_interval_matches_scipy():
    v = np.array([0.1, 0.25, 0.18, 0.3])
    m, lo, hi = transfer.t_interval(v)
    ref = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert math.isclose(m, v.mean()) and np.allclose([lo, hi], ref)
    assert all(math.isnan(x) for x in transfer.t_interval(np.array([0.2]))[1:])


def test_finding_3_verdicts_follow_the_declared_rule():
    moved = [("a", 0, "S", "T", 10.0, 0.31), ("b", 0, "S", "T", 40.0, 0.11), ("a", 1, "S", "T", 12.0, 0.33),
             ("b", 1, "S", "T", 38.0, 0.125)]  # fmt: skip
    g = transfer.matched_gaps(evals(OWN + moved), 1.0)
    matched = transfer.matched_summary(g)
    down = pd.DataFrame({"model": "m", "layer": 3, "sweep": "paper", "sae_id": ["a-s0", "b-s0", "a-s1", "b-s1"],
                         "seed": [0, 0, 1, 1], "train_dataset": "S", "eval_dataset": "T",
                         "accuracy_recovered": [0.9, 0.95, 0.92, 0.97]})  # fmt: skip
    formats = {"S": "imagenet", "T": "inat2021"}
    (row,) = transfer_rows(g, matched, down, formats, margin=0.02, min_accuracy=0.8).to_dict("records")
    assert list(transfer_rows(g, matched, down, formats, 0.02, 0.8).columns) == CLAIMS_COLUMNS
    # per seed: mean gap over settings 0.01 (seed 0) and 0.0075 (seed 1); spread: (0.02 + 0.02) / 2
    assert math.isclose(row["delta"], 0.00875) and math.isclose(row["limit"], 0.02 + 0.02)
    assert row["role"] == "primary" and row["verdict"] == "supported", row["reason"]
    # the same gaps with accuracy recovered far below the minimum: not supported
    bad = down.assign(accuracy_recovered=[0.1, 0.12, 0.11, 0.13])
    assert transfer_rows(g, matched, bad, formats, 0.02, 0.8)["verdict"].item() == "not supported"
    # no downstream numbers: the gap alone cannot support the claim
    assert transfer_rows(g, matched, None, formats, 0.02, 0.8)["verdict"].item() == "inconclusive"
    # a gap far above the seed spread: not supported, whatever the accuracy
    worse = evals(OWN + [(s, seed, tr, ev, l0, fvu + 0.3) for s, seed, tr, ev, l0, fvu in moved])
    gw = transfer.matched_gaps(worse, 1.0)
    out = transfer_rows(gw, transfer.matched_summary(gw), down, formats, 0.02, 0.8)
    assert out["verdict"].item() == "not supported" and "lies above" in out["reason"].item()


# ---- baselines on real stores


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """Two datasets with different means and anisotropic covariances, 5 tokens per image (CLS + 4)."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("baselines")
    out = {}
    for name, shift in (("S", 0.0), ("T", 2.0)):
        scale_D = np.linspace(3, 0.2, D)
        train = (shift + rng.normal(0, 1, (60, 5, D)) * scale_D).astype(np.float32)
        val = (shift + 0.5 + rng.normal(0, 1, (40, 5, D)) * scale_D).astype(np.float32)
        out[name] = write_arrays(root / f"{name}.zarr", {**ATTRS, "dataset": name}, {"train": train, "val": val},
                                 chunk_images=8)  # fmt: skip
    return out


def patches(path: Path, split: str) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_group(str(path), mode="r")[split][:, 1:], dtype=np.float64).reshape(-1, D)


def test_pca_baseline_matches_a_numpy_reference(stores):
    fit = baselines.moments(stores["S"], "train", "patches", max_tokens=10**9)
    curve = baselines.pca_fvu_curve(fit, stores["T"], "val", "patches")
    xs, xt = patches(stores["S"], "train"), patches(stores["T"], "val")
    mu = xs.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov(xs, rowvar=False))
    for k in (0, 1, 3, D):
        P = vecs[:, ::-1][:, :k]
        xhat = mu + (xt - mu) @ P @ P.T
        ref = ((xt - xhat) ** 2).sum() / ((xt - xt.mean(axis=0)) ** 2).sum()
        assert math.isclose(curve[k], ref, rel_tol=1e-9, abs_tol=1e-12), k
    assert curve[D] < 1e-9  # every component: exact


def test_moments_read_at_most_max_tokens(stores):
    m = baselines.moments(stores["S"], "train", "patches", max_tokens=50)
    assert m.n == 50 and m.mu_D.shape == (D,)
    every = baselines.moments(stores["S"], "train", "patches", max_tokens=10**9)
    assert np.allclose(every.mu_D, patches(stores["S"], "train").mean(axis=0), atol=1e-9)


def identity_sae(d: int, b_dec: np.ndarray) -> SparseAutoencoder:
    """x̂ = x exactly for any x (features ±(x − b_dec))."""
    sae = SparseAutoencoder(d, 2 * d, "relu_l1", 1.0, cfg={"token_kind": "patches"})
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc_DF.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec_FD.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_dec_D.copy_(torch.as_tensor(b_dec, dtype=torch.float32))
    return sae


def test_recentring_moves_b_dec_by_the_mean_shift_and_changes_only_that(stores):
    s = baselines.moments(stores["S"], "train", "patches", 10**9)
    t = baselines.moments(stores["T"], "train", "patches", 10**9)
    # an SAE that only keeps the mean (b_dec = source mean, nothing fires) reconstructs T with FVU > 1;
    # re-centred it predicts T's training mean: FVU = 1 + ‖μ_T,train − μ_T,val‖² / var
    mean_only = SparseAutoencoder(D, 4, "relu_l1", 1.0, cfg={"token_kind": "patches"})
    with torch.no_grad():
        mean_only.b_dec_D.copy_(torch.as_tensor(s.mu_D, dtype=torch.float32))
    moved = baselines.recentred(mean_only, s, t)
    assert np.allclose(moved.b_dec_D.detach().numpy(), t.mu_D, atol=1e-5)
    xt = patches(stores["T"], "val")
    ref = ((xt - t.mu_D) ** 2).sum() / ((xt - xt.mean(axis=0)) ** 2).sum()
    assert math.isclose(evaluate(moved, stores["T"], "val")["fvu"], ref, rel_tol=1e-5)
    assert evaluate(mean_only, stores["T"], "val")["fvu"] > ref + 0.5
    # an exact SAE stays exact when re-centred (its features absorb any b_dec)
    exact = baselines.recentred(identity_sae(D, s.mu_D), s, t)
    assert evaluate(exact, stores["T"], "val")["fvu"] < 1e-9


def test_the_baselines_table_uses_the_saes_l0_on_the_target_as_k(stores, tmp_path):
    sae = identity_sae(D, np.zeros(D))
    sae.cfg.update(
        {
            "sae_id": "x-s0",
            "meta": {"model": "m", "layer": 3, "sweep": "paper", "dataset": "S"},
            "d_in": D,
            "d_sae": 2 * D,
            "architecture": "relu_l1",
            "normalisation": {"kind": "scalar", "scale": 1.0},
        }
    )
    sae.save(tmp_path / "sae")
    ev = tmp_path / "T.json"
    ev.write_text(json.dumps({"train_dataset": "S", "sae_id": "x-s0", "eval_dataset": "T", "l0": 2.6}))
    df = baselines.baselines_table(stores, [tmp_path / "sae"], [ev], "train", "val", 10**9)
    (row,) = df.to_dict("records")
    assert row["pca_k"] == 3 and row["train_dataset"] == "S" and row["eval_dataset"] == "T"
    fit = baselines.moments(stores["S"], "train", "patches", 10**9)
    assert math.isclose(row["pca_fvu"], baselines.pca_fvu_curve(fit, stores["T"], "val", "patches")[3])
    assert row["recentred_fvu"] < 1e-9 and row["pca_fvu"] > row["pca_target_fvu"] * 0.5
    with pytest.raises(ValueError, match="no evaluation of SAE .* on 'T'"):
        baselines.baselines_table(stores, [tmp_path / "sae"], [], "train", "val", 10**9)
