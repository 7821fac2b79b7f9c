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
from vitsae.analysis.concepts import IMAGENET_LABELS, INAT_LABELS
from vitsae.analysis.decoders import KIND_LABELS, KINDS
from vitsae.analysis.planted import LABEL_LEVELS, planted_precision, planted_recovery
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
                assert len(index) > 0 and set(index["label"]) <= set(IMAGENET_LABELS + INAT_LABELS)
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
    # the ImageNet subtree textures, the cross-subtree motif (now as a visual motif) and the iNat order
    # textures (as clade only: a texture fills the background, no trait), by both models. Before the
    # part-uniqueness test no DINOv2 SAE had a clade feature on the brown/tan checkerboard (2026-12-06)
    both = (found["level"].isin(["subtree", "order"])) | (
        (found["dataset"] == "imagenet-demo") & (found["level"] == "motif")
    )
    for r in found[both].itertuples():
        assert {"clip-b16", "dinov2-s14"} <= set(r.models.split(";")), r
    # recall per model on the paper sweep: of its 4 SAEs per model, how many found each concept
    paper = planted_recovery(demo, PLANTED, [t for t in tables if t.endswith("/paper.csv")], layout.MANIFEST,
                             layout.FEATURES)  # fmt: skip
    print(paper.drop(columns=["label"]).to_string())  # the README quotes this table
    for model in CFG["models"]:
        assert {int(v.split("/")[1]) for v in paper[f"saes_{model}"]} == {len(IDS)}, model


def test_precision_of_every_label_on_the_planted_masks(demo):
    """Per dataset, model and label: the share of labelled features whose firing regions lie on a planted
    object of the label's level (the README quotes this table)."""
    tables = [t for t in layout.concept_tables(build(CFG)) if t.endswith("/paper.csv")]
    generators = {d: CFG["datasets"][d]["generate"] for d in CFG["datasets"]}
    precision = planted_precision(demo, tables, layout.MANIFEST, layout.FEATURES, generators)
    print(precision.to_string())
    labels = {r.label for r in precision.itertuples()}
    assert labels <= set(LABEL_LEVELS) and {"single-class", "single-species"} <= labels
    assert precision["n_right"].le(precision["n_features"]).all()
    # the demo plants nothing abstract: an abstract feature is wrong by construction
    assert (precision.loc[precision["label"] == "abstract", "n_right"] == 0).all()
    assert (precision.drop(columns=["precision"]).iloc[:, 3:].le(precision["n_features"], axis=0)).all().all()
    # the negative controls, read off the masks: features called abstract that fire on the bullseye, and
    # features called trait that fire on an order's background texture. The issue asks for none; the demo
    # has some (measured 2026-12-06 at 88116bd on seeds 0/1, 100/101, 200/201, all three models: 9-17 and
    # 4-118; README "What the labels get right on the demo"), so these are reported, not asserted. What is
    # asserted, with margin on all three seeds: the visual-motif rule (whole-set and class-pair region
    # ratios, motif core) takes nearly all of the bullseye's cross-branch features away from "abstract"
    # (there 470-521 against 9-17: 30-53 times as many), and the trait tests make clade, not trait, nearly
    # all of each model's features on an order's texture (at least 0.92 per model; 0.61-0.86 before the
    # part uniqueness, and before any trait test DINOv2 had 1-2 clade features in all)
    on = precision.set_index(["dataset", "label"]).groupby(level=[0, 1]).sum()
    print("bullseye called abstract:", on.loc[("imagenet-demo", "abstract"), "on_motif"],
          "visual-motif:", on.loc[("imagenet-demo", "visual-motif"), "on_motif"],
          "| order textures called trait:", on.loc[("inat-demo", "trait"), "on_order"],
          "clade:", on.loc[("inat-demo", "clade"), "on_order"])  # fmt: skip
    assert (
        on.loc[("imagenet-demo", "visual-motif"), "on_motif"]
        > 15 * on.loc[("imagenet-demo", "abstract"), "on_motif"]
    )
    inat = precision[precision["dataset"] == "inat-demo"].set_index(["model", "label"])
    for model in inat.index.get_level_values(0).unique():
        clade, trait = inat.loc[(model, "clade"), "on_order"], inat.loc[(model, "trait"), "on_order"]
        assert clade >= 0.85 * (clade + trait), (model, clade, trait)
