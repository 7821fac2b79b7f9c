# The run (its config validated once and typed: vitsae.config), the run's names, and the input
# functions and params of the rule files. Every path comes from vitsae.layout.
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from vitsae import layout
from vitsae.config import as_params, load
from vitsae.data.demo import demo_files
from vitsae.layout import (
    CARDS,
    CLUSTERS,
    CONCEPTS,
    CONCEPTS_NULL,
    CONCEPTS_SHUFFLED,
    CONCEPTS_SHUFFLED_NULL,
    CRATE,
    CRATE_METADATA,
    EVAL,
    FEATURES,
    BASELINES,
    BROWSER,
    DOWNSTREAM,
    FIGURE,
    LINEAGE_HTML,
    LINEAGE_JSON,
    MANIFEST,
    RATING_AGREEMENT,
    RATING_SAMPLE,
    RATINGS,
    SAE_DIR,
    STORE,
    STORE_PART,
    TABLE,
    THUMBNAILS,
    TRAIN_STATE,
    benchmark,
    fill,
    log,
)
from vitsae.provenance.source import script_code

# Checked before anything runs: a typo in a key, a missing dataset root, an unknown architecture or a
# layer the model does not have fails here, naming the key. Models are checked by the main process
# only (jobs on a cluster parse this file again), with their depths cached under .snakemake/.
RUN = load(
    config,
    source="config",
    models_cache=".snakemake/vitsae/model-depths.json",
    models=workflow.is_main_process,
)
config.clear()
config.update(RUN.config)
if workflow.is_main_process and not workflow.dryrun:
    # The config files this run reads, for `vitsae verify` to compare each record's config with today's.
    layout.remember_configfiles(workflow.configfiles)

DATASETS = list(RUN.datasets)
GENERATED = [d for d, ds in RUN.datasets.items() if ds.generate is not None]
MODELS = list(RUN.models)
SWEEPS = list(RUN.sweeps)
FIGURES = layout.figures(RUN)  # figure name → title
FEATURE_SAES = layout.feature_saes(RUN)  # sweep → ids of the SAEs that get statistics


def alternatives(names):
    """A regex matching exactly one of the names (for wildcard_constraints)."""
    return "|".join(re.escape(n) for n in names)


def code(script):
    """The ``code`` param of a rule: {module: digest} of every package module its script imports. A
    function, so a run computes it only for rules that have jobs in its DAG, once per process: a Slurm
    job starts Snakemake twice (batch step, then job step), and each builds that one job only."""

    def digests(wildcards):
        if script not in _CODE:
            _CODE[script] = script_code(Path(workflow.basedir) / "workflow" / "scripts" / f"{script}.py")
        return _CODE[script]

    return digests


_CODE = {}  # script -> its code param, computed at most once per Snakemake process


def scaled(base):
    """A resource that grows with each retry: base on attempt 1, 2 x base on attempt 2, ..."""

    def resource(wildcards, attempt):
        return base * attempt

    return resource


# ---- datasets and stores
def demo_outputs(name):
    """Every file the demo dataset ``name`` holds, as the generating rule's outputs."""
    gen = RUN.datasets[name].generate
    files = demo_files(gen.kind, gen.seed, gen.train_per_class, gen.val_per_class)
    return [f"{layout.DEMO_DATASET.format(dataset=name)}/{f}" for f in files]


def dataset_files(wildcards):
    """A demo dataset's files are inputs (an edited image reruns its manifest); a real dataset
    is only a path, checked when the workflow starts (rerun it with --forcerun manifest).
    """
    if wildcards.dataset in GENERATED:
        return demo_outputs(wildcards.dataset)
    return []


def dataset_root(wildcards):
    return RUN.datasets[wildcards.dataset].root


def multilabels_of(name):
    """The multi-label file of dataset ``name`` for the co-occurrence control: "" for none, "real" for
    timm's ReaL labels (resolved by the job), else its path (relative paths under the dataset root)."""
    ds = RUN.datasets[name]
    if not ds.multilabels:
        return ""
    if ds.multilabels == "real":
        from vitsae.analysis.cooccurrence import real_labels_path

        return str(real_labels_path())
    return ds.multilabels if os.path.isabs(ds.multilabels) else str(Path(ds.root) / ds.multilabels)


def multilabels(wildcards):
    return multilabels_of(wildcards.dataset)


def eval_multilabels(wildcards):
    return multilabels_of(wildcards.eval_dataset)


def manifest_settings(wildcards):
    return RUN.datasets[wildcards.dataset].manifest_settings()


def model_spec(wildcards):
    """What a store depends on of its model: the network, not the list of layers."""
    return as_params(RUN.models[wildcards.model].spec)


def model_batch(wildcards):
    return RUN.models[wildcards.model].batch_size


def extraction_settings(wildcards):
    """How a store is extracted: kept tokens (a subset's seed filled in), decoder, autocast dtype."""
    ex = RUN.extraction
    return {
        "tokens": RUN.tokens(wildcards.model).to_config(),
        "decode": ex.decode,
        "precision": ex.precision,
    }


def store_parts(wildcards):
    return RUN.extraction.parts_of(wildcards.dataset)


def extract_inputs(wildcards):
    """The manifest; with parts > 1 also every part of the store (rule extract then only joins them)."""
    inputs = {"manifest": MANIFEST.format(dataset=wildcards.dataset)}
    n = RUN.extraction.parts_of(wildcards.dataset)
    if n > 1:
        inputs["parts"] = [fill(STORE_PART, **wildcards, part=i, nparts=n) for i in range(n)]
    return inputs


def extract_gpus(wildcards):
    """Rule extract needs a GPU only when it runs the model itself (parts: 1); joining parts needs none."""
    return 1 if RUN.extraction.parts_of(wildcards.dataset) == 1 else 0


# ---- SAEs
def sweep_outputs(sweep, name):
    """``name`` (sae.safetensors, cfg.json, train_log.csv) of each SAE of one sweep's training job."""
    return [f"{fill(SAE_DIR, sweep=sweep, sae_id=i)}/{name}" for i in RUN.sweeps[sweep].ids]


def sweep_params(sweep):
    """What one sweep's training job runs: every SAE's settings and the shared training pass."""
    sw = RUN.sweeps[sweep]
    return {
        "specs": as_params(sw.specs),
        "ids": list(sw.ids),
        "training": as_params(sw.training),
        "train_split": sw.train_split,
    }


def state_dir(wildcards):
    return TRAIN_STATE.format(**wildcards)


def sweep_logs(wildcards):
    """Every SAE of a sweep: its training log and, beside it, its cfg.json (its identity)."""
    picked = [(wildcards.sweep, i) for i in RUN.sweeps[wildcards.sweep].ids]
    return {
        "logs": layout.sae_files(RUN, "train_log.csv", picked),
        "cfgs": layout.sae_files(RUN, "cfg.json", picked),
    }


def sweep_evals(wildcards):
    """Every SAE of a sweep evaluated on its own dataset."""
    return layout.evals(RUN, [(wildcards.sweep, i) for i in RUN.sweeps[wildcards.sweep].ids], in_domain=True)


def baseline_inputs(wildcards):
    """Input function of transfer_baselines: the (model, layer)'s store on every dataset, its transfer SAEs
    and their evaluations on the datasets they were not trained on."""
    keys = layout.transfer_saes(RUN, wildcards.model, wildcards.layer)
    return {
        "stores": [STORE.format(dataset=d, model=wildcards.model, layer=wildcards.layer) for d in DATASETS],
        "sae": [f"{SAE_DIR.format(**k)}/sae.safetensors" for k in keys],
        "evals": [EVAL.format(**k, eval_dataset=e) for k in keys for e in DATASETS if e != k["dataset"]],
    }


def transfer_train_split():
    """The training split of the transfer SAEs' sweeps (the baselines' fit and the probe's), which must be one."""
    splits = sorted({RUN.sweeps[s].train_split for s, _ in RUN.transfer_saes})
    if len(splits) > 1:
        raise ValueError(
            f"transfer.saes picks sweeps trained on different splits {splits}; pick sweeps of one split"
        )
    return splits[0] if splits else "train"


def downstream_inputs(wildcards):
    """Input function of downstream: the evaluated dataset's store and manifest, and every transfer SAE of
    the (model, layer), whichever dataset it was trained on."""
    keys = layout.transfer_saes(RUN, wildcards.model, wildcards.layer)
    return {
        "store": STORE.format(**wildcards),
        "manifest": MANIFEST.format(dataset=wildcards.dataset),
        "sae": [f"{SAE_DIR.format(**k)}/sae.safetensors" for k in keys],
        "cfg": [f"{SAE_DIR.format(**k)}/cfg.json" for k in keys],
    }


def pareto_inputs(wildcards):
    """Input function of pareto: every SAE of the sweep on its own dataset and, for the SAEs in
    transfer.saes, on the other datasets (drawn on each target's panel with their gap)."""
    ids = [(wildcards.sweep, i) for i in RUN.sweeps[wildcards.sweep].ids]
    return list(
        dict.fromkeys([*layout.evals(RUN, ids, in_domain=True), *layout.transfer_evals(RUN, wildcards.sweep)])
    )


def sweep_store_keys(wildcards):
    """(dataset, model, layer) of every store a sweep trains on."""
    sweep = RUN.sweeps[wildcards.sweep]
    return [[d, m, layer] for d in RUN.datasets for m, layer in layout.model_layers(RUN) if sweep.trains(m)]


def sweep_quality_inputs(wildcards):
    """Every SAE of a sweep (weights, cfg.json, training log) and the stores it was trained on, one per
    entry of sweep_store_keys, in that order."""
    picked = [(wildcards.sweep, i) for i in RUN.sweeps[wildcards.sweep].ids]
    return {
        "saes": layout.sae_files(RUN, "sae.safetensors", picked),
        "cfgs": layout.sae_files(RUN, "cfg.json", picked),
        "logs": layout.sae_files(RUN, "train_log.csv", picked),
        "stores": [
            STORE.format(dataset=d, model=m, layer=layer) for d, m, layer in sweep_store_keys(wildcards)
        ],
    }


# ---- features and concepts
def feature_sae_files(sweep, name):
    """``name`` of each SAE of ``sweep`` that gets statistics, as input patterns."""
    return [f"{fill(SAE_DIR, sweep=sweep, sae_id=i)}/{name}" for i in FEATURE_SAES[sweep]]


def feature_dirs(sweep):
    """The statistics directory of each SAE of ``sweep`` that gets them, as output patterns."""
    return [fill(FEATURES, sweep=sweep, sae_id=i) for i in FEATURE_SAES[sweep]]


def concept_inputs(sweep):
    """Input function of concepts_<sweep>: the statistics, the manifest, the thumbnails of the
    statistics' split (cell descriptors: the region tests of both table kinds) and, for an ImageNet
    dataset with multi-labels, those."""

    def inputs(wildcards):
        out = {
            "stats": [fill(p, **wildcards) for p in feature_dirs(sweep)],
            "manifest": MANIFEST.format(dataset=wildcards.dataset),
            "thumbnails": THUMBNAILS.format(dataset=wildcards.dataset, split=RUN.features.split),
        }
        if RUN.datasets[wildcards.dataset].format == "imagenet":
            if multilabels_of(wildcards.dataset):  # recorded in the tables' provenance
                out["multilabels"] = multilabels_of(wildcards.dataset)
        return out

    return inputs


def dataset_format(wildcards):
    return RUN.datasets[wildcards.dataset].format


def concept_rules(wildcards):
    """The label rules of the dataset's table (concepts.imagenet or concepts.inat)."""
    return as_params(RUN.concepts.rules(RUN.datasets[wildcards.dataset].format))


FEATURE_KEYS = layout.feature_keys(RUN)  # the place of every SAE with statistics, in table order
FINDING_KEYS = layout.feature_keys(RUN, findings=True)  # ... but those of control sweeps


# ---- claims
def claim_inputs(wildcards=None):
    """Every concept table with its null, the in-domain evaluations and cfg.json of their SAEs, and the
    feature clusters."""
    return {
        "tables": layout.concept_tables(RUN),
        "nulls": layout.concept_tables(RUN, null=True),
        "evals": [EVAL.format(**k, eval_dataset=k["dataset"]) for k in FEATURE_KEYS],
        "cfgs": [f"{SAE_DIR.format(**k)}/cfg.json" for k in FEATURE_KEYS],
        "clusters": layout.cluster_tables(RUN),
    }


def rule_sources(wildcards):
    """Each rule's file and script, relative to the workflow's base directory, for the crate's
    steps (one per rule) and tools (the script each rule's jobs ran)."""
    base = Path(workflow.basedir)
    sources = {}
    for r in workflow.rules:
        script = None
        if r.script:
            script = os.path.relpath(Path(str(r.basedir)) / r.script, base)
        sources[r.name] = {
            "snakefile": os.path.relpath(str(r.snakefile), base),
            "script": script,
        }
    return sources


# ---- features on the other dataset (workflow/rules/transfer.smk): the SAEs of FINDING_KEYS read on every
# other dataset with a concept table; {eval_dataset} is the dataset read, {dataset} the SAE's own.
from vitsae.layout import CONCEPTS_ON, CONCEPTS_ON_NULL, FEATURES_ON

TRANSFER_LABEL_KEYS = layout.transfer_label_keys(RUN)  # (eval_dataset, dataset, model, layer, sweep)
TRANSFER_LABEL_SWEEPS = list(dict.fromkeys(s for *_, s in TRANSFER_LABEL_KEYS))
# the SAEs' own concept tables, one per (dataset, model, layer, sweep) read on another dataset
TRANSFER_LABEL_SOURCES = list(
    dict.fromkeys(
        CONCEPTS.format(dataset=d, model=m, layer=layer, sweep=s)
        for _e, d, m, layer, s in TRANSFER_LABEL_KEYS
    )
)


def feature_on_dirs(sweep):
    """The statistics directory of each SAE of ``sweep`` on {eval_dataset}'s store, as output patterns."""
    return [fill(FEATURES_ON, sweep=sweep, sae_id=i) for i in FEATURE_SAES[sweep]]


def concept_on_inputs(sweep):
    """Input function of concepts_on_<sweep>: the statistics on {eval_dataset}, its manifest, the
    thumbnails of the statistics' split and, for an ImageNet {eval_dataset} with multi-labels, those."""

    def inputs(wildcards):
        out = {
            "stats": [fill(p, **wildcards) for p in feature_on_dirs(sweep)],
            "manifest": MANIFEST.format(dataset=wildcards.eval_dataset),
            "thumbnails": THUMBNAILS.format(dataset=wildcards.eval_dataset, split=RUN.features.split),
        }
        if RUN.datasets[wildcards.eval_dataset].format == "imagenet":
            if multilabels_of(wildcards.eval_dataset):
                out["multilabels"] = multilabels_of(wildcards.eval_dataset)
        return out

    return inputs


def eval_dataset_format(wildcards):
    return RUN.datasets[wildcards.eval_dataset].format


def eval_concept_rules(wildcards):
    """The label rules of {eval_dataset}'s table (concepts.imagenet or concepts.inat)."""
    return as_params(RUN.concepts.rules(RUN.datasets[wildcards.eval_dataset].format))


# ---- the feature browser and the blinded ratings
BROWSER_KEYS = layout.browser_keys(RUN)  # the place of every SAE the browser shows
CATCH_KEYS = [
    {"dataset": d, "model": m, "layer": layer, "sweep": s, "sae_id": i}
    for d, m, layer, s in layout.catch_keys(RUN)
    for i in FEATURE_SAES[s]
]
FINDING_CONCEPT_KEYS = set(layout.finding_keys(RUN))


def _concept_key(k):
    return (k["dataset"], k["model"], k["layer"], k["sweep"])


def browser_inputs(wildcards=None):
    """Per shown SAE (aligned lists): statistics, concept table, in-domain evaluation, cfg.json and
    decoder, store, card directory (finding sweeps only); the catch trials' statistics, each
    dataset's manifest and files, and the rating sample."""
    keys = BROWSER_KEYS
    return {
        "stats": [FEATURES.format(**k) for k in keys],
        "tables": [CONCEPTS.format(**k) for k in keys],
        "evals": [EVAL.format(**k, eval_dataset=k["dataset"]) for k in keys],
        "cfgs": [f"{SAE_DIR.format(**k)}/cfg.json" for k in keys],
        "saes": [f"{SAE_DIR.format(**k)}/sae.safetensors" for k in keys],
        "stores": [STORE.format(**k) for k in keys],
        "cards": sorted({CARDS.format(**k) for k in keys if _concept_key(k) in FINDING_CONCEPT_KEYS}),
        "catch": [FEATURES.format(**k) for k in CATCH_KEYS],
        "manifests": [MANIFEST.format(dataset=d) for d in browser_datasets()],
        "images": [f for d in browser_datasets() if d in GENERATED for f in demo_outputs(d)],
        "sample": RATING_SAMPLE,
    }


def browser_datasets():
    return sorted({k["dataset"] for k in BROWSER_KEYS})


def browser_params():
    """Per shown SAE its card directory ('' when its sweep has none); per dataset its root and format."""
    return {
        "cards": [CARDS.format(**k) if _concept_key(k) in FINDING_CONCEPT_KEYS else "" for k in BROWSER_KEYS],
        "datasets": {
            d: {"root": RUN.datasets[d].root, "format": RUN.datasets[d].format} for d in browser_datasets()
        },
    }


def rating_files(wildcards=None):
    """Every rater's export (*.json) in rating.dir, found when the workflow is parsed."""
    folder = Path(RUN.rating.dir)
    return sorted(str(p) for p in folder.glob("*.json")) if folder.is_dir() else []


def browser_assets_digest():
    """sha256 of the browser's pages, scripts and style: editing them remakes the site (they are not Python
    modules, so the code digest does not see them)."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted((Path(workflow.basedir) / "vitsae" / "analysis" / "browser_assets").iterdir()):
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()
