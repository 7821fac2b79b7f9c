"""Finding 3 on the demo: the gap at matched L0 with its baselines, downstream accuracy recovered, and the
claims row, read from the files the DAG wrote."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from pypdf import PdfReader
from workflow_helpers import DEMO_CONFIG

from vitsae.analysis.claims import CLAIMS_COLUMNS
from vitsae.config import build, validate

pytestmark = pytest.mark.e2e

RUN = build(validate(yaml.safe_load(DEMO_CONFIG.read_text())))
MODELS = [m for m in sorted(RUN.models) if m not in RUN.claims.baselines]  # baselines: no transfer
DATASETS = sorted(RUN.datasets)
N_SETTINGS = len({i.rsplit("-s", 1)[0] for _, i in RUN.transfer_saes})
N_SEEDS = len(RUN.transfer_saes) // N_SETTINGS


def test_every_evaluation_sits_on_its_targets_frontier_and_in_domain_gaps_are_zero(demo):
    t = pd.read_csv(demo / "results/tables/transfer.csv")
    own, moved = t[t["in_domain"]], t[~t["in_domain"]]
    assert np.allclose(own["gap"], 0.0, atol=1e-9) and (own["extrapolation"] == 0).all()
    assert len(moved) == len(MODELS) * len(DATASETS) * (len(DATASETS) - 1) * len(RUN.transfer_saes)
    ok = moved.dropna(subset=["gap"])
    assert np.allclose(ok["gap"], ok["fvu"] - ok["frontier_fvu"], atol=1e-5)
    # an empty frontier value only beyond the allowed extrapolation
    assert (moved.loc[moved["gap"].isna(), "extrapolation"] > RUN.transfer.max_extrapolation).all()


def test_the_matched_table_gives_the_gap_with_its_ci_and_both_baselines(demo):
    m = pd.read_csv(demo / "results/tables/transfer_matched.csv")
    assert len(m) == len(MODELS) * len(DATASETS) * (len(DATASETS) - 1) * N_SETTINGS
    assert (m["n_seeds"] == N_SEEDS).all()
    both = m.dropna(subset=["gap_ci_low"])
    assert ((both["gap_ci_low"] <= both["gap"]) & (both["gap"] <= both["gap_ci_high"])).all()
    for col in ("pca_fvu", "pca_target_fvu", "recentred_fvu", "recentred_l0", "mean_shift", "seed_spread"):
        assert m[col].notna().all() and (m[col] >= 0).all(), col
    # PCA fitted on the target itself reconstructs the target at least as well as PCA fitted on the source
    assert (m["pca_target_fvu"] <= m["pca_fvu"] + 1e-6).all()
    for model in MODELS:
        for d in DATASETS:
            base = pd.read_csv(
                demo / f"results/transfer/baselines/{model}/layer{RUN.models[model].layers[0]}.csv"
            )
            assert (
                set(base["eval_dataset"]) == set(DATASETS)
                and (base["train_dataset"] != base["eval_dataset"]).all()
            )
            assert (
                demo / f"results/transfer/downstream/{d}/{model}/layer{RUN.models[model].layers[0]}.csv"
            ).is_file()


def test_downstream_accuracy_recovered_is_reported_for_every_sae_on_every_dataset(demo):
    d = pd.read_csv(demo / "results/tables/transfer_downstream.csv")
    assert len(d) == len(MODELS) * len(DATASETS) * len(DATASETS) * len(RUN.transfer_saes)
    for col in ("acc_clean", "acc_ablated", "acc_spliced"):
        assert d[col].between(0, 1).all(), col
    defined = d.dropna(subset=["accuracy_recovered"])
    span = defined["acc_clean"] - defined["acc_ablated"]
    assert np.allclose(defined["accuracy_recovered"], (defined["acc_spliced"] - defined["acc_ablated"]) / span,
                       atol=1e-6)  # fmt: skip
    assert (d.loc[d["accuracy_recovered"].isna(), "acc_clean"] - d.loc[d["accuracy_recovered"].isna(), "acc_ablated"]
            < RUN.transfer.min_accuracy_span).all()  # fmt: skip


def test_finding_3_has_one_claims_row_per_model_and_direction_with_a_verdict(demo):
    claims = pd.read_csv(demo / "results/tables/claims.csv")
    assert list(claims.columns) == CLAIMS_COLUMNS
    rows = claims[claims["claim"] == 3]
    assert len(rows) == len(MODELS) * len(DATASETS) * (len(DATASETS) - 1)
    assert set(rows["verdict"]) <= {"supported", "not supported", "inconclusive", "not comparable"}
    primary = rows[rows["role"] == "primary"]
    assert len(primary) == len(MODELS) and (primary["dataset"] == "inat-demo").all()
    t = pd.read_csv(demo / "results/tables/transfer.csv")
    for _, r in rows.iterrows():
        assert r["statistic"] == "transfer_gap_fvu" and r["reason"] and len(r["reason"]) > 20
        if r["verdict"] != "not comparable":
            moved = t[~t["in_domain"] & (t["model"] == r["favoured"]) & (t["eval_dataset"] == r["dataset"])]
            assert math.isclose(r["delta"], moved.groupby("seed")["gap"].mean().mean(), rel_tol=1e-4)
            assert math.isclose(r["limit"], r["limit"])  # defined: the seed spread + margin
    text = PdfReader(demo / "results/figures/claims.pdf").pages[0].extract_text()
    assert "Finding 3" in text


def test_the_transfer_and_pareto_figures_draw_the_gap_and_have_lineage_pages(demo):
    text = PdfReader(demo / "results/figures/transfer.pdf").pages[0].extract_text()
    assert "transfer gap at matched L0" in text and "PCA fitted on source" in text and "re-centred" in text
    pareto = PdfReader(demo / "results/figures/pareto-paper.pdf").pages[0].extract_text()
    assert "dashed down to the frontier" in pareto
    for page in ("transfer", "pareto-paper"):
        assert (demo / f"results/provenance/{page}.html").is_file()
