"""The feature stage on the demo DAG: statistics, concept tables, findings 1 and 2, feature-level transfer,
cards, and which planted concepts the SAEs recover."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from pypdf import PdfReader
from workflow_helpers import DEMO_CONFIG

from vitsae import layout
from vitsae.analysis.decoders import KIND_LABELS, KINDS
from vitsae.analysis.planted import planted_recovery
from vitsae.config import build, validate
from vitsae.data.demo import PLANTED
from vitsae.data.store import attrs_json
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


def test_feature_level_transfer_has_every_kind_of_pair(demo, tmp_path):
    table = pd.read_csv(demo / "results/tables/transfer_features.csv")
    assert set(table["kind"]) == set(KINDS)
    # the demo has 2 seeds per setting: 2 seed pairs of each kind per (model, setting), their min-max range
    assert (table["n_pairs"] == 2).all() and (table["ci_method"] == "range").all()
    for _, g in table.groupby(["kind", "model", "setting"]):
        assert g["mean_best_ab_ci_low"].iloc[0] == pytest.approx(g["mean_best_ab"].min(), abs=1e-5)
        assert g["mean_best_ab_ci_high"].iloc[0] == pytest.approx(g["mean_best_ab"].max(), abs=1e-5)
    # the covariance floor is drawn from the stores' (anisotropic) activations: it is not the isotropic one
    floors = table[table["kind"].str.startswith("floor")].pivot_table(
        "mean_best_ab", ["model", "setting", "sae_a"], "kind"
    )
    assert (floors["floor-covariance"] > floors["floor-isotropic"] + 0.1).all()
    cov = table[table["kind"] == "floor-covariance"]
    d_model = {m: attrs_json(demo / "results/activations/imagenet-demo" / m / "layer10.zarr")["d_model"]
               for m in cov["model"]}  # fmt: skip
    assert (cov["cov_tokens"] > 1000).all()
    assert (cov["cov_effective_dim"] < 0.5 * cov["model"].map(d_model)).all()
    # the figure explains its pair kinds, has its lineage page down to the stores, and renders as an image
    pdf = demo / "results/figures/transfer_features.pdf"
    text = PdfReader(pdf).pages[0].extract_text()
    assert all(KIND_LABELS[k] in text for k in KINDS) and "initial decoder" in text
    lineage = json.loads((demo / layout.LINEAGE_JSON.format(figure="transfer_features")).read_text())
    assert (demo / layout.LINEAGE_HTML.format(figure="transfer_features")).exists()
    stores = {str(p.relative_to(demo)) for p in (demo / "results/activations").glob("*/*/layer10.zarr")}
    figure = lineage["root"]
    assert stores and stores <= {src for src, dst in lineage["edges"] if dst == figure}  # read by the rule
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed: the figure is not rendered")
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-singlefile", str(pdf), str(tmp_path / "fig")], check=True
    )
    with Image.open(tmp_path / "fig.png") as im:
        gray = np.asarray(im.convert("L"), dtype=np.float32)
    assert gray.shape[1] > 500 and gray.shape[0] > gray.shape[1] and gray.std() > 10


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
