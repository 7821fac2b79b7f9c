"""End to end: the real Snakemake DAG on the built-in demo; bad config fails before any job."""

import subprocess
import sys

import pandas as pd
import pytest
import yaml
from pypdf import PdfReader
from workflow_helpers import DEMO_CONFIG, REPO, job_counts, snakemake

from vitsae import layout
from vitsae.analysis.quality import COLUMNS
from vitsae.config import build, validate
from vitsae.provenance.lineage import lineage
from vitsae.provenance.records import RECORD_SUFFIX, digest_artifact, read_record
from vitsae.sae.settings import as_list, sweep_ids

pytestmark = pytest.mark.e2e


def test_demo_produces_the_transfer_figure_and_table(demo):
    pdf = demo / "results/figures/transfer.pdf"
    df = pd.read_csv(demo / "results/tables/transfer.csv")
    cfg = validate(yaml.safe_load(DEMO_CONFIG.read_text()))
    datasets = sorted(cfg["datasets"])
    models = [m for m in sorted(cfg["models"]) if m not in cfg["claims"]["baselines"]]  # no baseline model
    ids = sweep_ids(cfg["sweeps"]["paper"])
    # one row per (compared model, SAE of the sweep, train dataset, eval dataset)
    rows = {(r.model, r.sae_id, r.train_dataset, r.eval_dataset) for r in df.itertuples()}
    assert rows == {(m, i, a, b) for m in models for i in ids for a in datasets for b in datasets}
    assert len(df) == len(rows)
    assert (df["in_domain"] == (df["train_dataset"] == df["eval_dataset"])).all()
    assert df["fvu"].between(0, 2).all() and (df["l0"] > 0).all() and df["dead_pct"].between(0, 100).all()
    # the page parses and shows both models, both datasets, the demo warning, and per setting and direction
    # the gap at matched L0 with its CI over seeds (transfer_matched.csv)
    (page,) = PdfReader(pdf).pages
    text = page.extract_text()
    for name in models + datasets + ["demo: synthetic data, random weights", "SAE transfer"]:
        assert name in text, name
    matched = pd.read_csv(demo / "results/tables/transfer_matched.csv")
    assert (matched["n_seeds"] == len(as_list(cfg["sweeps"]["paper"]["seed"]))).all()
    for r in matched.itertuples():
        label = f"gap {r.gap:+.3f}" + (
            f" [{r.gap_ci_low:+.3f}, {r.gap_ci_high:+.3f}]" if r.gap_ci_low == r.gap_ci_low else " (1 seed)"
        )
        assert label in text, label
    # an SAE reconstructs its own dataset's held-out split better than the other dataset (mean over seeds)
    summary = df.groupby(["model", "setting", "train_dataset", "eval_dataset"], as_index=False)[
        ["fvu", "l0"]
    ].mean()
    for (m, setting, a), g in summary.groupby(["model", "setting", "train_dataset"]):
        fvu = g.set_index("eval_dataset")["fvu"]
        assert fvu[a] < min(fvu[b] for b in datasets if b != a), (m, setting, a, fvu.to_dict())
    # a sparser setting (higher L1) has a lower L0 on every dataset
    l1 = cfg["sweeps"]["paper"]["l1_coeff"]
    if isinstance(l1, list) and len(l1) > 1:
        in_domain = df[df.in_domain].assign(l1=df.sae_id.str.extract(r"-l1_([0-9.]+)-")[0].astype(float))
        for (m, a), g in in_domain.groupby(["model", "train_dataset"]):
            l0 = g.groupby("l1")["l0"].mean()
            assert l0[max(l1)] < l0[min(l1)], (m, a, l0.to_dict())
    # every stage left its log
    assert len(list((demo / "results/logs/extract").rglob("*.log"))) == len(cfg["models"]) * len(datasets)


def test_demo_draws_the_sweeps_training_curves_and_pareto_plot(demo):
    cfg = validate(yaml.safe_load(DEMO_CONFIG.read_text()))
    ids = sweep_ids(cfg["sweeps"]["paper"])
    pareto = pd.read_csv(demo / "results/tables/pareto-paper.csv")
    assert len(pareto) == len(cfg["models"]) * len(cfg["datasets"]) * len(ids)  # every SAE, in-domain
    table = pd.read_csv(demo / "results/tables/transfer.csv")
    merged = pareto.merge(
        table[table.in_domain],
        left_on=["model", "sae_id", "dataset"],
        right_on=["model", "sae_id", "train_dataset"],
        suffixes=("", "_t"),
    )
    # the transfer table has the compared models' SAEs (the baseline model's are in the Pareto table only)
    compared = ~pareto["model"].isin(cfg["claims"]["baselines"])
    assert (
        len(merged) == compared.sum() == len(pareto) * 2 // 3
        and (merged["fvu"] - merged["fvu_t"]).abs().max() < 1e-6
    )
    for name, title in (
        ("training-paper", "SAE training curves: sweep paper"),
        ("pareto-paper", "Sparsity against reconstruction: sweep paper"),
    ):
        (page,) = PdfReader(demo / f"results/figures/{name}.pdf").pages
        text = page.extract_text()
        assert title in text and "demo: synthetic data, random weights" in text, name


def test_demo_checks_the_quality_of_every_sae(demo):
    run = build(validate(yaml.safe_load(DEMO_CONFIG.read_text())))
    for sweep in run.sweeps:
        table = pd.read_csv(demo / f"results/tables/quality-{sweep}.csv")
        assert list(table.columns) == COLUMNS
        assert len(table) == len(layout.sae_dirs(run, [(sweep, i) for i in run.sweeps[sweep].ids]))
        assert table["dead_fraction"].between(0, 1).all() and (table["l0"] > 0).all()
        with_seeds = table.groupby("setting")["seed"].transform("nunique") > 1
        assert (table.loc[with_seeds, "stability_seeds"] > 0).all()
        (page,) = PdfReader(demo / f"results/figures/quality-{sweep}.pdf").pages
        assert f"sweep {sweep}" in page.extract_text()


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


def test_an_unknown_architecture_and_a_missing_layer_fail_before_any_job(tmp_path):
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg["models"]["clip-b16"]["arch"] = "ViT-B-16-quickgel"
    cfg["models"]["dinov2-s14"]["layers"] = [12]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "config: models.clip-b16.arch: open_clip has no model 'ViT-B-16-quickgel'; did you mean" in text
    assert "config: models.dinov2-s14.layers: [12] not among the blocks of vit_small_patch14_dinov2" in text
    assert not (tmp_path / "results").exists()


def test_a_missing_dataset_root_is_named(tmp_path):
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg["datasets"]["imagenet1k"] = {"format": "imagenet", "root": str(tmp_path / "no" / "imagenet")}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert out.returncode != 0
    assert (
        f"dataset 'imagenet1k': root {tmp_path / 'no' / 'imagenet'} does not exist" in out.stdout + out.stderr
    )


def test_lint_passes(tmp_path):
    out = snakemake(REPO, "--lint", check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_artifact_has_a_provenance_record_and_the_figure_verifies(demo):
    results = demo / "results"
    artifacts = [
        *results.glob("manifests/*.parquet"),
        *results.glob("activations/*/*/layer*.zarr"),
        *results.glob("sae/**/sae.safetensors"),
        *results.glob("sae/**/cfg.json"),
        *results.glob("sae/**/train_log.csv"),
        *results.glob("eval/**/*.json"),
        *results.glob("tables/*.csv"),
        *results.glob("figures/*.pdf"),
    ]
    artifacts = [a for a in artifacts if not a.name.endswith(RECORD_SUFFIX)]
    run = build(validate(yaml.safe_load(DEMO_CONFIG.read_text())))
    n_sae = len(layout.sae_dirs(run))  # every sweep's, the claims' control sweeps included
    n_evals = len(set(layout.evals(run, in_domain=True)) | set(layout.transfer_evals(run)))
    # tables: transfer with its matched-L0 and downstream tables, a Pareto and a quality table per sweep,
    # findings 1 and 2 with their label shares (and finding 1's branch pairs), feature-level transfer
    # (decoders, labels), claims, specification curve, controls; figures: every one of the run
    n_tables = 3 + 2 * len(run.sweeps) + 5 + 2 + 3
    assert n_tables == len(layout.final_tables(run))
    n_rating = 3  # the rating sample's key, the ratings' precision and their agreement
    assert len(artifacts) == 2 + len(layout.stores(run)) + 3 * n_sae + n_evals + n_tables + n_rating + len(
        layout.figures(run)
    )
    for a in artifacts:
        rec = read_record(a)
        assert rec["digest"] == digest_artifact(a), a
        assert rec["code"]["modules"], a
    # the figure's lineage reaches every manifest and every compared model (finding 3 leaves the baseline
    # model out), and nothing in it has changed
    lin = lineage(results / "figures/transfer.pdf")
    nodes = set(lin["nodes"])
    assert {f"results/manifests/{d}.parquet" for d in ("imagenet-demo", "inat-demo")} <= nodes
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    assert {f"model:{m}" for m in cfg["models"] if m not in cfg["claims"]["baselines"]} <= nodes
    out = subprocess.run(
        [sys.executable, "-m", "vitsae.cli", "verify", "results/figures/transfer.pdf"],
        cwd=demo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.startswith("ok:"), out.stdout + out.stderr


def test_the_transfer_figure_uses_the_saes_its_selector_picks(tmp_path):
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg["transfer"] = {"saes": {"sweeps": ["paper"], "where": {"seed": 0}}}
    path = tmp_path / "seed0.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "results/figures/transfer.pdf", "-n", "--configfile", str(path))
    counts = job_counts(out.stdout)
    # 2 datasets x 2 models, each training job's SAEs evaluated together on both datasets (the job evaluates
    # all four: one pass over the store serves them all)
    assert counts["evaluate_paper"] == 8 and counts["transfer"] == 1
    # the figure reads the 2 seed-0 SAEs (of 4) of each of those 4 jobs, each on both datasets
    lines = out.stdout.splitlines()
    inputs = lines[lines.index("rule transfer:") + 1].removeprefix("    input: ").split(", ")
    evals = [p for p in inputs if p.startswith("results/eval/")]
    assert len(evals) == 16 and all("-s0/" in p for p in evals), evals
    assert counts["train_sae_paper"] == 4  # a sweep still trains in one job: all four SAEs
    cfg["transfer"] = {"saes": {"where": {"seed": 7}}}
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--configfile", str(path), check=False)
    assert out.returncode != 0
    assert (
        "transfer.saes: the selector {'where': {'seed': 7}} picks no SAE of sweeps ['paper', 'permuted', 'twin']"
        in (out.stdout + out.stderr)
    )
