"""Cached partial reruns, job by job: what each kind of change makes Snakemake rerun (dry runs on the demo).

Source edits are made in a copy of the tree (``tree``), whose Snakefile the dry runs use: the checkout is
never edited, so a killed test run leaves nothing behind."""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from workflow_helpers import DEMO_CONFIG, copy_tree, job_counts, snakemake

from vitsae import layout
from vitsae.config import build, validate
from vitsae.sae.settings import sweep_ids

pytestmark = pytest.mark.e2e

CFG = yaml.safe_load(DEMO_CONFIG.read_text())
RUN = build(validate(CFG))
MODELS, DATASETS = sorted(CFG["models"]), sorted(CFG["datasets"])
# the compared models: the baseline model (claims.baselines) has no finding-3 jobs (transfer evaluations,
# baselines, downstream probes, statistics on the other dataset)
COMPARED = [m for m in MODELS if m not in RUN.claims.baselines]
SWEEPS = list(RUN.sweeps)  # paper (the science), twin and permuted (the claims' controls)


def n_saes(sweep: dict) -> int:
    """SAEs per (train dataset, model, layer) of a (validated) sweep."""
    return len(sweep_ids(validate({**CFG, "sweeps": {**CFG["sweeps"], "paper": sweep}})["sweeps"]["paper"]))


N_FIGURES = len(layout.figures(RUN))  # transfer, findings 1 and 2, feature-level transfer, claims, spec
# curve, and per sweep its training curves, Pareto plot and quality checks
# Every figure a paper-sweep change remakes (transfer, its training curves, Pareto plot and quality checks),
# then each figure's lineage page and the run's RO-Crate (they read every record upstream).
FIGURE_AND_AFTER = {"transfer": 1, "training_curves": 1, "pareto": 1, "quality": 1, "ro_crate": 1}
# Finding 3's jobs that read every transfer SAE: baselines per model, downstream per (dataset, model).
TRANSFER_JOBS = {"transfer_baselines": len(COMPARED), "downstream": len(COMPARED) * len(DATASETS)}


def features_after(jobs: int, sweeps=("paper",), on: int | None = None) -> dict[str, int]:
    """New SAEs of ``sweeps`` (``jobs`` (dataset, model) places each): their statistics, clusters, concept
    tables (and the paper sweep's shuffled-labels tables and cards), findings 1 and 2, the feature-level
    transfer, the claims, the specification curve and the controls, and those figures' lineage pages.
    ``on``: the places of the compared models among ``jobs`` (default all), read on the other dataset."""
    out = {"findings": 1, "transfer_features": 1, "spec_curve": 1, "claims": 1, "controls": 1}
    for sweep in sweeps:
        name = sweep.replace("-", "_")
        out.update({f"feature_stats_{name}": jobs, f"clusters_{name}": jobs, f"concepts_{name}": jobs})
    if "paper" in sweeps:
        # the paper SAEs read on the other dataset (finding 3), and whether their labels survive there
        on = jobs if on is None else on
        out.update({"concepts_shuffled_paper": jobs, "cards_paper": jobs, "feature_stats_on_paper": on,
                    "concepts_on_paper": on, "transfer_labels": 1})  # fmt: skip
    if {"paper", "permuted"} & set(sweeps):
        # the browser shows the paper SAEs, its rating sample draws from them and from the null sweep (catch
        # trials); the ratings are scored against the sample
        out.update({"rating_sample": 1, "browser": 1, "browser_lineage": 1, "ratings": 1})
    return out


def sae_and_after() -> dict[str, int]:
    """One training job per (dataset, model), each training the sweep's SAEs; each job's SAEs evaluated
    together on every dataset (one job per training job and dataset, however many SAEs it trains); lineage pages of transfer, training, Pareto, quality, findings 1 and 2, feature-level
    transfer, claims and specification curve."""
    jobs, on = len(MODELS) * len(DATASETS), len(COMPARED) * len(DATASETS)
    return {
        "all": 1,
        "train_sae_paper": jobs,
        "evaluate_paper": jobs + on * (len(DATASETS) - 1),
        **FIGURE_AND_AFTER,
        **TRANSFER_JOBS,
        "lineage": 10,
        **features_after(jobs, on=on),
    }


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the source tree: the Snakefile the dry runs parse, and the sources the tests edit."""
    return copy_tree(tmp_path_factory.mktemp("tree"))


def dry_run(workdir: Path, tree: Path, *args: str) -> dict[str, int]:
    out = snakemake(workdir, "-n", "--configfile", str(DEMO_CONFIG), *args, snakefile=tree / "Snakefile")
    text = out.stdout + out.stderr
    return {} if "Nothing to be done" in text else job_counts(out.stdout)


@contextmanager
def edited(module_file: Path):
    """Append a comment to one of the copied tree's source files, and put the file back afterwards."""
    original = module_file.read_bytes()
    try:
        module_file.write_bytes(original + b"\n# an edit made by tests/e2e/test_reruns.py\n")
        yield
    finally:
        module_file.write_bytes(original)


def test_nothing_changed_reruns_nothing(demo, tree):
    assert dry_run(demo, tree) == {}


def test_l1_change_reruns_sae_training_and_what_follows(demo, tree):
    # one L1 coefficient instead of two: the sweep shrinks to its two seeds, and all of it retrains
    assert dry_run(demo, tree, "--config", "sweeps={paper: {l1_coeff: 9.5}}") == sae_and_after()


def test_an_lr_change_reruns_training_through_params(demo, tree):
    assert dry_run(demo, tree, "--config", "sweeps={paper: {lr: 0.00123}}") == sae_and_after()


def test_trainer_edit_reruns_every_sweeps_training_and_what_follows(demo, tree):
    with edited(tree / "vitsae" / "sae" / "train.py"):
        jobs = dry_run(demo, tree)
    places = {s: sum(RUN.sweeps[s].trains(m) for m in MODELS) * len(DATASETS) for s in SWEEPS}
    on = len(COMPARED) * len(DATASETS)  # the paper sweep's places of the compared models
    assert jobs == {
        "all": 1,
        **{f"train_sae_{s}": places[s] for s in SWEEPS},
        # every training job's SAEs on their own dataset, the paper sweep's (transfer.saes) on the other one too
        **{f"evaluate_{s}": places[s] for s in SWEEPS},
        "evaluate_paper": places["paper"] + on * (len(DATASETS) - 1),
        "transfer": 1,
        **TRANSFER_JOBS,
        "training_curves": len(SWEEPS),
        "pareto": len(SWEEPS),
        "quality": len(SWEEPS),
        "lineage": N_FIGURES,
        "ro_crate": 1,
        **features_after(0, SWEEPS),
        **{f"{k}_{s}": places[s] for k in ("feature_stats", "clusters", "concepts") for s in SWEEPS},
        "concepts_shuffled_paper": places["paper"],
        "cards_paper": places["paper"],
        "feature_stats_on_paper": on * (len(DATASETS) - 1),
        "concepts_on_paper": on * (len(DATASETS) - 1),
    }
    assert dry_run(demo, tree) == {}  # put back: nothing to do again


def test_a_transfer_figure_edit_reruns_that_figure_the_claims_it_feeds_and_their_provenance_only(demo, tree):
    with edited(tree / "vitsae" / "analysis" / "transfer.py"):
        jobs = dry_run(demo, tree)
    # the transfer tables feed finding 3's claims rows; no store, SAE, baseline or downstream job
    assert jobs == {"all": 1, "transfer": 1, "claims": 1, "lineage": 2, "ro_crate": 1}


def test_a_chart_edit_reruns_the_figures_and_no_concept_table(demo, tree):
    with edited(tree / "vitsae" / "analysis" / "charts.py"):
        jobs = dry_run(demo, tree)
    # every figure is drawn again (each rule that draws one imports the chart module), and its lineage page;
    # the controls table too (its module, vitsae.analysis.claims, also draws the claims figure); no concept
    # table, card, statistic or SAE. The browser too: it finds best matches with the decoder module, which
    # draws the feature-level transfer figure.
    assert jobs == {
        "all": 1,
        "browser": 1,
        "browser_lineage": 1,
        "transfer": 1,
        "training_curves": len(SWEEPS),
        "pareto": len(SWEEPS),
        "quality": len(SWEEPS),
        "findings": 1,
        "transfer_features": 1,
        "transfer_labels": 1,
        "spec_curve": 1,
        "claims": 1,
        "controls": 1,
        "lineage": N_FIGURES,
        "ro_crate": 1,
    }


def test_a_label_rule_edit_reruns_the_concept_tables_and_what_reads_them_but_no_sae(demo, tree):
    with edited(tree / "vitsae" / "analysis" / "concepts.py"):
        jobs = dry_run(demo, tree)
    places = {s: sum(RUN.sweeps[s].trains(m) for m in MODELS) * len(DATASETS) for s in SWEEPS}
    # tables of every sweep (and the shuffled ones), the cards drawn from them, findings 1 and 2, the
    # claims, specification curve and controls (they relabel and read the tables), their lineage pages
    assert jobs == {
        "all": 1,
        **{f"concepts_{s}": places[s] for s in SWEEPS},
        "concepts_shuffled_paper": places["paper"],
        "cards_paper": places["paper"],
        "concepts_on_paper": len(COMPARED) * len(DATASETS) * (len(DATASETS) - 1),
        "transfer_labels": 1,
        "rating_sample": 1,
        "browser": 1,
        "browser_lineage": 1,
        "ratings": 1,
        "findings": 1,
        "spec_curve": 1,
        "claims": 1,
        "controls": 1,
        "lineage": 5,
        "ro_crate": 1,
    }


def test_a_threshold_grid_edit_reruns_only_the_specification_curve_and_the_claims(demo, tree):
    jobs = dry_run(demo, tree, "--config", "claims={spec_grid: {inat: {trait_min_species: [2, 4]}}}")
    assert jobs == {"all": 1, "spec_curve": 1, "claims": 1, "lineage": 2, "ro_crate": 1}


def test_one_demo_image_edited_reruns_that_datasets_branch_only(demo, tree):
    image = min((demo / "results/datasets/inat-demo/val").rglob("*.jpg"))
    original, stat = image.read_bytes(), image.stat()
    try:
        data = bytearray(original)
        data[-10] ^= 0xFF  # a different byte inside the entropy-coded data
        image.write_bytes(bytes(data))
        jobs = dry_run(demo, tree)
    finally:
        image.write_bytes(original)
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # inat-demo's manifest and its stores; every SAE trained on them (every sweep); every evaluation on
    # them or by them
    places = {s: sum(RUN.sweeps[s].trains(m) for m in MODELS) for s in SWEEPS}  # inat-demo only
    controls = [s for s in SWEEPS if s != "paper"]
    assert jobs == {
        "all": 1,
        "manifest": 1,
        "thumbnails": 1,  # its cell descriptors (the region tests of the iNat tables)
        "extract": len(MODELS),
        **{f"train_sae_{s}": places[s] for s in SWEEPS},
        # in-domain on inat-demo, and the compared models' paper SAEs read across it either way
        **{f"evaluate_{s}": places[s] for s in SWEEPS},
        "evaluate_paper": places["paper"] + 2 * len(COMPARED) * (len(DATASETS) - 1),
        "transfer": 1,
        **TRANSFER_JOBS,
        "training_curves": len(SWEEPS),
        "pareto": len(SWEEPS),
        "quality": len(SWEEPS),
        "lineage": N_FIGURES,
        "ro_crate": 1,
        **features_after(len(MODELS)),
        # the paper SAEs of both datasets read on the other one: every such job reads inat-demo
        "feature_stats_on_paper": len(COMPARED) * len(DATASETS),
        "concepts_on_paper": len(COMPARED) * len(DATASETS),
        **{f"{k}_{s}": places[s] for k in ("feature_stats", "clusters", "concepts") for s in controls},
    }
    assert dry_run(demo, tree) == {}  # restored: nothing to do again


def test_a_layer_added_runs_only_the_new_layers_jobs_and_the_figure(demo, tree):
    model = MODELS[0]  # clip-b16: the paper and permuted sweeps train on it, the twin sweep does not
    layers = CFG["models"][model]["layers"] + [5]
    jobs = dry_run(demo, tree, "--config", f"models={{{model}: {{layers: {layers}}}}}")
    assert not RUN.sweeps["twin"].trains(model) and RUN.sweeps["permuted"].trains(model)
    assert jobs == {
        "all": 1,
        "extract": len(DATASETS),
        "train_sae_paper": len(DATASETS),
        "train_sae_permuted": len(DATASETS),
        "evaluate_paper": len(DATASETS) ** 2,
        "evaluate_permuted": len(DATASETS),
        "transfer": 1,
        "transfer_baselines": 1,
        "downstream": len(DATASETS),
        "training_curves": 2,
        "pareto": 2,
        "quality": 2,
        "lineage": 13,
        "ro_crate": 1,
        **features_after(len(DATASETS), ("paper", "permuted")),
    }
