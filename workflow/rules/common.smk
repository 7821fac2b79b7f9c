# Helpers for every rule file. Validated config, path lists, params, resources, code digests.
import hashlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from vitsae.code import rule_digest
from vitsae.config import check_dataset_roots, validate
from vitsae.demo import demo_files
from vitsae.figures import figure_titles
from vitsae.grid import select, sweep_ids, sweep_specs, training_settings

# Validate before anything runs: a typo in a key fails here, naming the key.
_validated = validate(config, source="config")
config.clear()
config.update(_validated)
check_dataset_roots(config)

DATASETS = sorted(config["datasets"])
GENERATED = [d for d in DATASETS if "generate" in config["datasets"][d]]
MODELS = sorted(config["models"])
SWEEPS = sorted(config["sweeps"])
EVAL_SPLIT = config["evaluation"]["split"]
SWEEP_IDS = {s: sweep_ids(config["sweeps"][s]) for s in SWEEPS}
FIGURES = figure_titles(SWEEPS)  # figure name → title


def alternatives(names):
    """A regex matching exactly one of the names (for wildcard_constraints)."""
    return "|".join(re.escape(n) for n in names)


def model_layers():
    """(model, layer) pairs of the config."""
    return [(m, int(l)) for m in MODELS for l in config["models"][m]["layers"]]


def sae_dirs(sweeps=None):
    """One directory per SAE: (train dataset, model, layer, sweep, SAE of the sweep's grid)."""
    return [
        f"results/sae/{d}/{m}/layer{l}/{s}/{i}"
        for d in DATASETS
        for m, l in model_layers()
        for s in (sweeps or SWEEPS)
        for i in SWEEP_IDS[s]
    ]


def sweep_files(sweep, name):
    """Output patterns of one sweep's training job: ``name`` (e.g. sae.safetensors) of each of its SAEs."""
    return expand(
        "results/sae/{{dataset}}/{{model}}/layer{{layer}}/{sweep}/{sae_id}/{name}",
        sweep=sweep,
        sae_id=SWEEP_IDS[sweep],
        name=name,
    )


def selected_sae_dirs(selector, where):
    """The directories of the SAEs a config selector (``$defs/saes`` in the schema: by sweep, by id,
    by settings) picks, for every training dataset, model and layer (vitsae.grid.select).
    """
    picked = select(config["sweeps"], selector, where)
    return [
        f"results/sae/{d}/{m}/layer{l}/{s}/{i}"
        for d in DATASETS
        for m, l in model_layers()
        for s, i in picked
    ]


def eval_jsons(dirs=None):
    """Each SAE of ``dirs`` (default: every SAE) evaluated on the evaluation split of every dataset
    (its own and the others)."""
    return [
        f"{sae_dir.replace('results/sae/', 'results/eval/', 1)}/{e}.json"
        for sae_dir in (sae_dirs() if dirs is None else dirs)
        for e in DATASETS
    ]


# The SAEs each analysis uses; a selector that picks nothing fails here, before any job.
TRANSFER_SAES = selected_sae_dirs(config["transfer"]["saes"], "transfer.saes")


def run_artifacts():
    """Every artifact the run makes below the figures: manifests, stores, SAE files, evaluations
    (the RO-Crate lists them all, including those no figure reads, such as training logs).
    """
    return [
        *(f"results/manifests/{d}.parquet" for d in DATASETS),
        *(
            f"results/activations/{d}/{m}/layer{l}.zarr"
            for d in DATASETS
            for m, l in model_layers()
        ),
        *(
            f"{s}/{f}"
            for s in sae_dirs()
            for f in ("sae.safetensors", "cfg.json", "train_log.csv")
        ),
        *eval_jsons(),
        *sorted(
            {
                f"results/thumbnails/{d}/{config['features']['split']}.npz"
                for d, _m, _l, _s in concept_keys()
                if config["datasets"][d]["format"] == "imagenet"
            }
        ),
        *(
            d.replace("results/sae/", "results/features/", 1)
            for d in feature_sae_dirs()
        ),
        *concept_tables(),
        *concept_tables(null=True),
        *card_dirs(),
    ]


def demo_outputs(name):
    """Every file the demo dataset ``name`` holds, as the generating rule's outputs."""
    gen = config["datasets"][name]["generate"]
    files = demo_files(
        gen["kind"], gen["seed"], gen["train_per_class"], gen["val_per_class"]
    )
    return [f"results/datasets/{name}/{f}" for f in files]


def dataset_files(wildcards):
    """A demo dataset's files are inputs (an edited image reruns its manifest); a real dataset
    is only a path, checked when the workflow starts (rerun it with --forcerun manifest).
    """
    if wildcards.dataset in GENERATED:
        return demo_outputs(wildcards.dataset)
    return []


def manifest_settings(wildcards):
    """What a manifest depends on: layout, root, splits, subset, corrupt-image policy."""
    ds = config["datasets"][wildcards.dataset]
    return {
        k: ds[k] for k in ("format", "root", "splits", "max_per_class", "on_corrupt")
    }


def dataset_root(wildcards):
    return config["datasets"][wildcards.dataset]["root"]


def extraction_model_settings(wildcards):
    """What a store depends on: the model spec and batch (= chunk) size, not the list of layers."""
    m = config["models"][wildcards.model]
    return dict(
        {k: v for k, v in m.items() if k not in ("layers", "tokens")},
        name=wildcards.model,
    )


def extraction_settings(wildcards):
    """How a store is extracted, besides the model: kept tokens (the model's own setting, else
    extraction.tokens; a subset's seed defaults to the config's seed), decoder and autocast dtype.
    """
    ex = config["extraction"]
    tokens = config["models"][wildcards.model].get("tokens", ex["tokens"])
    if isinstance(tokens, dict):
        tokens = {
            "subset": tokens["subset"],
            "seed": tokens.get("seed", config["seed"]),
        }
    return {"tokens": tokens, "decode": ex["decode"], "precision": ex["precision"]}


def extraction_parts(dataset):
    """Parallel extraction jobs per store of ``dataset`` (extraction.parts_by_dataset, else .parts)."""
    ex = config["extraction"]
    return int(ex["parts_by_dataset"].get(dataset, ex["parts"]))


def store_parts(wildcards):
    return extraction_parts(wildcards.dataset)


def extract_inputs(wildcards):
    """The manifest; with parts > 1 also every part of the store (rule extract then only joins them)."""
    inputs = {"manifest": f"results/manifests/{wildcards.dataset}.parquet"}
    n = extraction_parts(wildcards.dataset)
    if n > 1:
        inputs["parts"] = [
            f"results/activations/{wildcards.dataset}/{wildcards.model}/layer{wildcards.layer}.parts/"
            f"part{i}-of{n}.zarr"
            for i in range(n)
        ]
    return inputs


def extract_gpus(wildcards):
    """Rule extract needs a GPU only when it runs the model itself (parts: 1); joining parts needs none."""
    return 1 if extraction_parts(wildcards.dataset) == 1 else 0


def sweep_params(sweep):
    """What one sweep's training job runs: every SAE's settings and the shared training settings
    (floats as floats, so that 3 and 3.0 do not differ as params)."""
    plain = lambda d: {
        k: (float(v) if isinstance(v, float) else v) for k, v in d.items()
    }
    cfg = config["sweeps"][sweep]
    return {
        "specs": [plain(x) for x in sweep_specs(cfg)],
        "ids": SWEEP_IDS[sweep],
        "training": plain(training_settings(cfg)),
        "train_split": cfg["train_split"],
    }


def scaled(base):
    """A resource that grows with each retry: base on attempt 1, 2 x base on attempt 2, ..."""

    def resource(wildcards, attempt):
        return base * attempt

    return resource


def config_digest():
    """sha256 (16 hex) of the resolved config, for rules whose output holds all of it."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def figure_note():
    """What every figure says about where its numbers come from."""
    if config["demo"]:
        return "demo: synthetic data, random weights"
    return f"run: {config['run_name']}"


# ---- features and concepts (workflow/rules/features.smk) ----
def _feature_saes():
    """sweep → the ids of its SAEs that the selector features.saes picks (config order)."""
    out = {}
    for sweep, sae_id in select(
        config["sweeps"], config["features"]["saes"], "features.saes"
    ):
        out.setdefault(sweep, []).append(sae_id)
    return out


FEATURE_SAES = _feature_saes()


def feature_inputs(sweep, ids, name):
    """``name`` (sae.safetensors, cfg.json) of each selected SAE of ``sweep``, as input patterns."""
    return [
        f"results/sae/{{dataset}}/{{model}}/layer{{layer}}/{sweep}/{i}/{name}"
        for i in ids
    ]


def feature_dirs_pattern(sweep, ids):
    """The statistics directory of each selected SAE of ``sweep``, as output patterns."""
    return [
        f"results/features/{{dataset}}/{{model}}/layer{{layer}}/{sweep}/{i}"
        for i in ids
    ]


def concept_inputs(sweep, ids):
    """Input function of concepts_<sweep>: the statistics, the manifest and, for an ImageNet
    dataset, the thumbnails of the statistics' split."""

    def inputs(wildcards):
        out = {
            "stats": [
                f"results/features/{wildcards.dataset}/{wildcards.model}/layer{wildcards.layer}/{sweep}/{i}"
                for i in ids
            ],
            "manifest": f"results/manifests/{wildcards.dataset}.parquet",
        }
        if config["datasets"][wildcards.dataset]["format"] == "imagenet":
            split = config["features"]["split"]
            out["thumbnails"] = f"results/thumbnails/{wildcards.dataset}/{split}.npz"
        return out

    return inputs


def concept_keys():
    """(dataset, model, layer, sweep) of every concept table: datasets whose format has one
    (imagenet, inat2021), sweeps with SAEs selected by features.saes."""
    return [
        (d, m, l, s)
        for d in DATASETS
        if config["datasets"][d]["format"] in ("imagenet", "inat2021")
        for m, l in model_layers()
        for s in FEATURE_SAES
    ]


def concept_tables(null=False):
    """Every concept table (or its null table)."""
    ext = "null.csv" if null else "csv"
    return [
        f"results/tables/concepts/{d}/{m}/layer{l}/{s}.{ext}"
        for d, m, l, s in concept_keys()
    ]


def feature_sae_dirs():
    """The SAE directories that get statistics: those of the concept tables, in their order."""
    return [
        f"results/sae/{d}/{m}/layer{l}/{s}/{i}"
        for d, m, l, s in concept_keys()
        for i in FEATURE_SAES[s]
    ]


def feature_eval_jsons():
    """Each statistics SAE's evaluation on its own dataset (its L0 and FVU in the findings)."""
    return [
        f"{d.replace('results/sae/', 'results/eval/', 1)}/{d.split('/')[2]}.json"
        for d in feature_sae_dirs()
    ]


def concept_rules(wildcards):
    """The label thresholds of the dataset's table (config concepts.imagenet or concepts.inat)."""
    fmt = config["datasets"][wildcards.dataset]["format"]
    return config["concepts"]["imagenet" if fmt == "imagenet" else "inat"]


def card_dirs():
    """Every cards directory: one per concept table."""
    return [
        f"results/figures/features/{d}/{m}/layer{l}/{s}"
        for d, m, l, s in concept_keys()
    ]
