# Helpers for every rule file. Validated config, path lists, code digests.
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from vitsae.code import source_digest
from vitsae.config import check_dataset_roots, sae_id, validate

# Validate before anything runs: a typo in a key fails here, naming the key.
_validated = validate(config, source="config")
config.clear()
config.update(_validated)
check_dataset_roots(config)

DATASETS = sorted(config["datasets"])
MODELS = sorted(config["models"])
SWEEPS = sorted(config["sweeps"])
EVAL_SPLIT = config["evaluation"]["split"]


def alternatives(names):
    """A regex matching exactly one of the names (for wildcard_constraints)."""
    return "|".join(re.escape(n) for n in names)


def model_layers():
    """(model, layer) pairs of the config."""
    return [(m, int(l)) for m in MODELS for l in config["models"][m]["layers"]]


def sae_dirs():
    """One SAE directory per (train dataset, model, layer, sweep)."""
    return [
        f"results/sae/{d}/{m}/layer{l}/{s}/{sae_id(config['sweeps'][s])}"
        for d in DATASETS
        for m, l in model_layers()
        for s in SWEEPS
    ]


def eval_jsons():
    """Every SAE evaluated on the evaluation split of every dataset (its own and the others)."""
    return [
        f"{sae_dir.replace('results/sae/', 'results/eval/', 1)}/{e}.json"
        for sae_dir in sae_dirs()
        for e in DATASETS
    ]


def dataset_root_input(wildcards):
    """A generated demo dataset is a rule's output; a real dataset is only a path (checked above)."""
    ds = config["datasets"][wildcards.dataset]
    return [f"results/datasets/{wildcards.dataset}"] if "generate" in ds else []


def sweep_settings(wildcards):
    sweep = config["sweeps"][wildcards.sweep]
    if sae_id(sweep) != wildcards.sae_id:
        raise ValueError(
            f"SAE id {wildcards.sae_id!r} does not match sweep {wildcards.sweep!r}"
        )
    return {k: (float(v) if isinstance(v, float) else v) for k, v in sweep.items()}


def model_settings(wildcards):
    return dict(config["models"][wildcards.model], name=wildcards.model)


def dataset_settings(wildcards):
    return dict(config["datasets"][wildcards.dataset])


def figure_note():
    """What every figure says about where its numbers come from."""
    if config["demo"]:
        return "demo: synthetic data, random weights"
    return f"run: {config['run_name']}"
