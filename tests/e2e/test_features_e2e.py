"""The feature stage on the demo DAG: statistics, concept tables, findings 1 and 2, feature-level transfer,
cards, and which planted concepts the SAEs recover."""

import json

import pandas as pd
import pytest
import yaml
from PIL import Image
from pypdf import PdfReader
from workflow_helpers import DEMO_CONFIG

from vitsae import layout
from vitsae.analysis.planted import planted_recovery
from vitsae.config import build, validate
from vitsae.data.demo import PLANTED
from vitsae.layout import FIGURES
from vitsae.sae.settings import sweep_ids

pytestmark = pytest.mark.e2e

CFG = validate(yaml.safe_load(DEMO_CONFIG.read_text()))
IDS = sweep_ids(CFG["sweeps"]["paper"])


def test_findings_have_one_row_per_sae_with_ci_and_null(demo):
    results = demo / "results"
    abstraction = pd.read_csv(results / "tables/semantic_abstraction.csv")
    traits = pd.read_csv(results / "tables/traits.csv")
    n_models = len(CFG["models"])
    assert len(abstraction) == n_models * len(IDS)  # finding 1: the ImageNet dataset's SAEs
    assert len(traits) == n_models * len(IDS) * len(CFG["datasets"])  # finding 2: both datasets
    for table in (abstraction, traits):
        assert (table["ci_low"] <= table["statistic"]).all() and (
            table["statistic"] <= table["ci_high"]
        ).all()
        assert (table["n_boot"] == CFG["findings"]["n_boot"]).all()
        assert (table["null_denominator"] >= 0).all()
        assert set(table["sae_id"]) == set(IDS)
        assert table.groupby(["dataset", "model"])["headline"].sum().eq(1).all()  # one headline SAE each
    assert abstraction["null_statistic"].notna().all()  # every SAE has live features in the null too
    for name in ("semantic_abstraction", "traits", "transfer_features"):
        text = PdfReader(results / f"figures/{name}.pdf").pages[0].extract_text()
        assert FIGURES[name].split(":")[0] in text and "demo: synthetic data, random weights" in text, name


def test_feature_level_transfer_has_every_kind_of_pair(demo):
    table = pd.read_csv(demo / "results/tables/transfer_features.csv")
    assert set(table["kind"]) == {"cross", "cross-same-seed", "ceiling", "floor"}
    mean = table.groupby("kind")["mean_best_ab"].mean()
    assert mean["floor"] < mean["cross"] and mean["floor"] < mean["ceiling"]


def test_every_sae_has_cards_with_captions(demo):
    for dataset in CFG["datasets"]:
        for model in CFG["models"]:
            base = demo / f"results/figures/features/{dataset}/{model}/layer10/paper"
            for sae_id in IDS:
                index = pd.read_csv(base / sae_id / "index.csv")
                assert len(index) > 0 and set(index["label"]) <= {
                    "single-class",
                    "taxonomic",
                    "abstract",
                    "unclear",
                    "single-species",
                    "trait",
                    "clade",
                    "cross-clade",
                }
                png = next((base / sae_id).rglob("feature*.png"))
                with Image.open(png) as im:
                    assert im.width > 0 and im.text["caption"].startswith(f"{model}/layer10/paper")
                sidecar = json.loads(png.with_suffix(".json").read_text())
                assert sidecar["feature"] == int(png.stem.removeprefix("feature"))


def test_planted_concepts_found_with_the_right_label(demo):
    tables = layout.concept_tables(build(CFG))
    found = planted_recovery(demo, PLANTED, tables, layout.MANIFEST, layout.FEATURES)
    print(found.to_string())  # the note quotes this table
    hit = found["n_features"] > 0
    # every planted concept, by at least one feature of at least one model (measured 2026-11-26: 42 of 42)
    assert hit.all(), found[~hit]
    # the ImageNet subtree textures and cross-subtree motif, and the iNat order textures, by both models
    both = found["level"].isin(["subtree", "order"]) | (
        (found["dataset"] == "imagenet-demo") & (found["level"] == "abstract")
    )
    for r in found[both].itertuples():
        assert r.models == "clip-b16;dinov2-s14", r
