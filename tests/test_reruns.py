"""Cached partial reruns, job by job: what each kind of change makes Snakemake rerun (dry runs on the demo)."""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from workflow_helpers import DEMO_CONFIG, REPO, job_counts, snakemake

pytestmark = pytest.mark.e2e

CFG = yaml.safe_load(DEMO_CONFIG.read_text())
MODELS, DATASETS = sorted(CFG["models"]), sorted(CFG["datasets"])
N_SAE = len(MODELS) * len(DATASETS)  # one SAE per (train dataset, model) in the demo sweep
# The figure is remade, then its lineage page and the run's RO-Crate (both read every record upstream).
FIGURE_AND_AFTER = {"transfer": 1, "lineage": 1, "ro_crate": 1}
SAE_AND_AFTER = {"all": 1, "train_sae": N_SAE, "evaluate": N_SAE * len(DATASETS), **FIGURE_AND_AFTER}


def dry_run(workdir: Path, *args: str) -> dict[str, int]:
    out = snakemake(workdir, "-n", "--configfile", str(DEMO_CONFIG), *args)
    text = out.stdout + out.stderr
    return {} if "Nothing to be done" in text else job_counts(out.stdout)


@contextmanager
def edited(module_file: Path):
    """Append a comment to one of the package's source files, and put the file back afterwards.

    Editing the real tree (not a copy) keeps everything else about the workflow identical, so the
    only change Snakemake can see is this module's source digest."""
    original, stat = module_file.read_bytes(), module_file.stat()
    try:
        module_file.write_bytes(original + b"\n# an edit made by tests/test_reruns.py\n")
        yield
    finally:
        module_file.write_bytes(original)
        os.utime(module_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_nothing_changed_reruns_nothing(demo):
    assert dry_run(demo) == {}


def test_l1_change_reruns_sae_training_and_what_follows(demo):
    assert dry_run(demo, "--config", "sweeps={paper: {l1_coeff: 9.5}}") == SAE_AND_AFTER


def test_an_lr_change_reruns_training_through_params(demo):
    assert dry_run(demo, "--config", "sweeps={paper: {lr: 0.00123}}") == SAE_AND_AFTER


def test_trainer_edit_reruns_like_an_l1_change(demo):
    with edited(REPO / "vitsae" / "sae.py"):
        jobs = dry_run(demo)
    assert jobs == SAE_AND_AFTER
    assert dry_run(demo) == {}  # put back: nothing to do again


def test_plotting_edit_reruns_the_figure_and_its_provenance_only(demo):
    with edited(REPO / "vitsae" / "transfer.py"):
        jobs = dry_run(demo)
    assert jobs == {"all": 1, **FIGURE_AND_AFTER}


def test_one_demo_image_edited_reruns_that_datasets_branch_only(demo):
    image = min((demo / "results/datasets/inat-demo/val").rglob("*.jpg"))
    original, stat = image.read_bytes(), image.stat()
    try:
        data = bytearray(original)
        data[-10] ^= 0xFF  # a different byte inside the entropy-coded data
        image.write_bytes(bytes(data))
        jobs = dry_run(demo)
    finally:
        image.write_bytes(original)
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # inat-demo's manifest and its stores; every SAE trained on them; every evaluation on them or by them
    n_inat_sae = len(MODELS)
    n_evals = N_SAE * len(DATASETS) - (N_SAE - n_inat_sae) * (len(DATASETS) - 1)
    assert jobs == {"all": 1, "manifest": 1, "extract": len(MODELS), "train_sae": n_inat_sae,
                    "evaluate": n_evals, **FIGURE_AND_AFTER}
    assert dry_run(demo) == {}  # restored: nothing to do again


def test_a_layer_added_runs_only_the_new_layers_jobs_and_the_figure(demo):
    model = MODELS[0]
    layers = CFG["models"][model]["layers"] + [5]
    jobs = dry_run(demo, "--config", f"models={{{model}: {{layers: {layers}}}}}")
    assert jobs == {"all": 1, "extract": len(DATASETS), "train_sae": len(DATASETS),
                    "evaluate": len(DATASETS) ** 2, **FIGURE_AND_AFTER}
