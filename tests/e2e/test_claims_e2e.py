"""The claims on the demo DAG: the claims table and its verdicts, the identity control, the specification
curve, and the negative controls (shuffled labels, the random-image and permuted-dims nulls)."""

import math

import pandas as pd
import pytest
import yaml
from pypdf import PdfReader
from workflow_helpers import DEMO_CONFIG

from vitsae.analysis.claims import CLAIMS_COLUMNS, CONTROLS_COLUMNS
from vitsae.analysis.concepts import IMAGENET_LABELS, INAT_LABELS
from vitsae.config import build, validate
from vitsae.layout import FIGURES

pytestmark = pytest.mark.e2e

RUN = build(validate(yaml.safe_load(DEMO_CONFIG.read_text())))
VERDICTS = {"supported", "not supported", "inconclusive", "not comparable"}


def test_claims_table_has_every_column_and_one_row_per_declared_comparison(demo):
    claims = pd.read_csv(demo / "results/tables/claims.csv")
    assert list(claims.columns) == CLAIMS_COLUMNS
    claims = claims[claims["claim"] != 3]  # finding 3's rows: tests/e2e/test_transfer_e2e.py
    assert list(claims["comparison"]) == [c.name for c in RUN.claims.comparisons]
    assert set(claims["verdict"]) <= VERDICTS and claims["reason"].str.len().gt(10).all()
    comparable = claims[claims["verdict"] != "not comparable"]
    assert len(comparable) == len(claims)  # the demo's sweeps overlap in L0 for every comparison
    for _, row in comparable.iterrows():
        assert row["overlap_low"] <= row["primary_l0"] <= row["overlap_high"]
        assert math.isclose(row["delta"], row["stat_favoured"] - row["stat_other"], abs_tol=1e-5)
        assert row["ci_low"] < row["delta"] < row["ci_high"]
        assert 0 < row["p_min"] <= row["p_perm"] <= 1 and row["p_holm"] >= row["p_perm"] - 1e-12
        # two seeds per arm: 6 relabelings, so no comparison can reach p < 0.05
        assert row["n_relabelings"] == 6 and math.isclose(row["p_min"], 1 / 6, rel_tol=1e-5)
        assert row["spec_cells"] > 1 and 0 <= row["spec_agreement"] <= 1
        assert (
            row["null_favoured"] == row["null_favoured"] and row["perm_null_other"] == row["perm_null_other"]
        )
    # with p_min = 1/6 > alpha, nothing on the demo can be "supported"
    assert "supported" not in set(claims["verdict"])


def test_the_baseline_model_stands_in_the_favoured_place_of_every_non_control_row(demo):
    """The demo's third model (``claims.baselines``: a random-weight ViT-Ti/16) goes through the pipeline
    and into the claims table: its statistic at each primary or secondary row's L0, its Δ against the
    row's other model, and the baseline rule's verdict (nothing on the demo can be "supported")."""
    assert RUN.claims.baselines == ("vit-t16",) and RUN.models["vit-t16"].spec.family == "timm"
    claims = pd.read_csv(demo / "results/tables/claims.csv", keep_default_na=False).set_index("comparison")
    for c in RUN.claims.comparisons:
        row = claims.loc[c.name]
        if c.role == "control":  # the identity rows are judged without baselines
            assert row["stat_baselines"] == "" and row["baseline_max"] == "", c.name
            continue
        name, _, value = row["stat_baselines"].partition("=")
        assert name == "vit-t16", row["stat_baselines"]
        if value == "not comparable":  # its SAEs miss the row's L0: the rule says so, never guesses
            assert row["baseline_max"] == "" and row["verdict"] != "supported", c.name
            continue
        assert row["baseline_max"] == "vit-t16"
        # Δ_B = the baseline's statistic − the other model's, at the row's L0 (6 significant digits)
        assert math.isclose(
            float(row["baseline_delta"]), float(value) - float(row["stat_other"]), abs_tol=1e-5
        )
    # its tables exist like the compared models' (the statistic was read from them)
    for d in RUN.datasets:
        assert (demo / f"results/tables/concepts/{d}/vit-t16/layer10/paper.csv").is_file()


def test_the_identity_control_reads_not_supported_with_a_ci_around_zero(demo):
    claims = pd.read_csv(demo / "results/tables/claims.csv").set_index("comparison")
    controls = [c.name for c in RUN.claims.comparisons if c.role == "control"]
    assert controls == ["identity-abstraction", "identity-traits"]
    for name in controls:
        row = claims.loc[name]
        assert (
            row["favoured"] == row["other"]
            and row["sweep"] == f"{row['favoured_sweep']} vs {row['other_sweep']}"
        )
        assert row["ci_low"] <= 0 <= row["ci_high"], row
        assert row["verdict"] == "not supported", row["reason"]


def test_the_spec_curve_covers_the_grid_and_its_configured_cell_is_the_claims_estimate(demo):
    spec = pd.read_csv(demo / "results/tables/spec_curve.csv")
    claims = pd.read_csv(demo / "results/tables/claims.csv").set_index("comparison")
    kinds = {"imagenet-demo": "imagenet", "inat-demo": "inat"}
    for c in RUN.claims.comparisons:
        cells = spec[spec["comparison"] == c.name]
        grid = RUN.claims.grid(kinds[c.dataset])
        assert len(cells) == math.prod(len(v) for v in grid.values()) == claims.loc[c.name, "spec_cells"]
        assert cells["settings"].is_unique
        assert math.isclose(cells["agrees"].mean(), claims.loc[c.name, "spec_agreement"], abs_tol=1e-6)
        # the cell whose thresholds are the concepts config relabels nothing: its Δ is the claims table's
        rules = RUN.concepts.rules(RUN.datasets[c.dataset].format)
        same = cells
        for key in grid:
            value = getattr(rules, key)
            column = same[f"set_{key}"]
            same = (
                same[column.astype(str) == value]
                if isinstance(value, str)
                else same[column.astype(float) == value]
            )
        assert len(same) == 1, c.name
        assert math.isclose(same["delta"].iloc[0], claims.loc[c.name, "delta"], abs_tol=1e-5), c.name


def test_shuffled_labels_give_no_label_share_above_its_null_while_the_observed_tables_do(demo):
    controls = pd.read_csv(demo / "results/tables/controls.csv")
    assert list(controls.columns) == CONTROLS_COLUMNS
    shuffled = controls[controls["kind"] == "shuffled-labels"]
    # every (dataset, model) of the shuffled sweep, every label of its table
    assert {(d, m) for d, m in zip(shuffled["dataset"], shuffled["model"], strict=True)} == {
        (d, m) for d in RUN.datasets for m in RUN.models
    }
    # per model, ImageNet: its labels but unclear, and trait; iNat: its labels but unclear
    assert len(shuffled) == len(RUN.models) * (len(IMAGENET_LABELS) - 1 + 1 + len(INAT_LABELS) - 1)
    assert not shuffled["above_null"].any(), shuffled[shuffled["above_null"]]
    # the same test finds the planted concepts in the real labels: the control could have failed
    observed = controls[controls["kind"] == "observed"]
    assert observed["above_null"].sum() >= 4, observed
    assert (controls["kind"] == "permuted-dims").sum() == 2 * (
        len(IMAGENET_LABELS) + len(INAT_LABELS) - 2 + 1
    )


def test_the_claims_and_spec_curve_figures_say_what_they_show(demo):
    results = demo / "results"
    claims = pd.read_csv(results / "tables/claims.csv")
    text = PdfReader(results / "figures/claims.pdf").pages[0].extract_text()
    assert FIGURES["claims"].split(":")[0] in text and "demo: synthetic data, random weights" in text
    for verdict in set(claims["verdict"]):
        assert verdict in text
    spec_text = PdfReader(results / "figures/spec_curve.pdf").pages[0].extract_text()
    assert "cells, sorted by Δ" in spec_text and "abstraction (claim 1, primary)" in spec_text
    for page in ("claims", "spec_curve"):
        assert (results / f"provenance/{page}.html").is_file()
