"""End to end: the real Snakemake DAG on the built-in demo; bad config fails before any job."""

import subprocess
import sys

import pandas as pd
import pytest
import yaml
from pypdf import PdfReader
from workflow_helpers import DEMO_CONFIG, REPO, snakemake

from vitsae import provenance

pytestmark = pytest.mark.e2e


def test_demo_produces_the_transfer_figure_and_table(demo):
    pdf = demo / "results/figures/transfer.pdf"
    df = pd.read_csv(demo / "results/tables/transfer.csv")
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    models, datasets = sorted(cfg["models"]), sorted(cfg["datasets"])
    # the page parses and shows both models, both datasets, every FVU and the demo warning
    (page,) = PdfReader(pdf).pages
    text = page.extract_text()
    for name in models + datasets + ["demo: synthetic data, random weights", "SAE transfer"]:
        assert name in text, name
    for fvu in df["fvu"]:
        assert f"FVU {fvu:.3f}" in text
    assert sorted(df["model"].unique()) == models
    pairs = {(r.model, r.train_dataset, r.eval_dataset) for r in df.itertuples()}
    assert pairs == {(m, a, b) for m in models for a in datasets for b in datasets}
    assert (df["in_domain"] == (df["train_dataset"] == df["eval_dataset"])).all()
    assert df["fvu"].between(0, 2).all() and (df["l0"] > 0).all() and df["dead_pct"].between(0, 100).all()
    # an SAE reconstructs its own dataset's held-out split better than the other dataset
    for m in models:
        for a in datasets:
            rows = df[(df.model == m) & (df.train_dataset == a)].set_index("eval_dataset")["fvu"]
            assert rows[a] < min(rows[b] for b in datasets if b != a), (m, a, rows.to_dict())
    # every stage left its log
    assert len(list((demo / "results/logs/extract").rglob("*.log"))) == len(models) * len(datasets)


def test_second_run_does_nothing(demo):
    out = snakemake(demo, "--configfile", str(DEMO_CONFIG))
    assert "Nothing to be done" in out.stdout + out.stderr


def test_a_typo_in_the_config_fails_before_any_job(tmp_path):
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg["models"]["clip-b16"]["layer"] = cfg["models"]["clip-b16"].pop("layers")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert out.returncode != 0
    assert "unknown config key 'models.clip-b16.layer'; did you mean 'layers'?" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


def test_a_missing_dataset_root_is_named(tmp_path):
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg["datasets"]["imagenet1k"] = {"format": "imagenet", "root": str(tmp_path / "no" / "imagenet")}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert out.returncode != 0
    assert f"dataset 'imagenet1k': root {tmp_path / 'no' / 'imagenet'} does not exist" in out.stdout + out.stderr


def test_lint_passes(tmp_path):
    out = snakemake(REPO, "--lint", check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_artifact_has_a_provenance_record_and_the_figure_verifies(demo):
    results = demo / "results"
    artifacts = [*results.glob("manifests/*.parquet"), *results.glob("activations/*/*/layer*.zarr"),
                 *results.glob("sae/**/sae.safetensors"), *results.glob("sae/**/cfg.json"),
                 *results.glob("sae/**/train_log.csv"), *results.glob("eval/**/*.json"),
                 results / "tables/transfer.csv", results / "figures/transfer.pdf"]
    artifacts = [a for a in artifacts if not a.name.endswith(provenance.RECORD_SUFFIX)]
    assert len(artifacts) == 2 + 4 + 3 * 4 + 8 + 2
    for a in artifacts:
        rec = provenance.read_record(a)
        assert rec["digest"] == provenance.digest_artifact(a), a
        assert rec["code"]["modules"], a
    # the figure's lineage reaches every manifest and every model, and nothing in it has changed
    lin = provenance.lineage(results / "figures/transfer.pdf")
    nodes = set(lin["nodes"])
    assert {f"results/manifests/{d}.parquet" for d in ("imagenet-demo", "inat-demo")} <= nodes
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    assert {f"model:{m}" for m in cfg["models"]} <= nodes
    out = subprocess.run([sys.executable, "-m", "vitsae.provenance", "verify", "results/figures/transfer.pdf"],
                         cwd=demo, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.startswith("ok:"), out.stdout + out.stderr
