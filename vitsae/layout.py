"""Where every artifact of a run lives: one path pattern per kind of artifact, and the run's keys.

The rule files use these patterns (with Snakemake wildcards in braces) and the functions below that
enumerate a run's artifacts from its typed config (:class:`vitsae.config.Run`); nothing else writes a
path of ``results/``. Analyses never parse these paths back: an SAE's identity is in its ``cfg.json``.

In data-flow order::

    results/datasets/{dataset}/                                        built-in demo datasets
    results/manifests/{dataset}.parquet                                one row per image
    results/activations/{dataset}/{model}/layer{layer}.zarr            one store per (dataset, model, layer)
    results/sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/       sae.safetensors, cfg.json, train_log.csv
    results/eval/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/{eval_dataset}.json
    results/transfer/baselines/{model}/layer{layer}.csv                finding 3: PCA and re-centred baselines
    results/transfer/downstream/{dataset}/{model}/layer{layer}.csv     finding 3: accuracy recovered
    results/features/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/  per-feature statistics
    results/features_on/{eval_dataset}/{dataset}/.../{sae_id}/         ... of an SAE on another dataset
    results/thumbnails/{dataset}/{split}.npz                           model-free image descriptors
    results/tables/concepts/{dataset}/{model}/layer{layer}/{sweep}.csv (and .null.csv; .shuffled[.null].csv)
    results/tables/clusters/{dataset}/{model}/layer{layer}/{sweep}.csv feature clusters ("concepts")
    results/figures/features/{dataset}/{model}/layer{layer}/{sweep}/   feature cards
    results/browser/index.html, rate.html                              feature browser, blinded rating
    results/tables/rating_sample.csv, ratings.csv, rating_agreement.csv the rating sample and the ratings
    results/figures/{figure}.pdf, results/tables/{table}.csv           the paper's figures and tables
    results/provenance/{figure}.html|json, results/ro-crate-metadata.json (+ results/provenance/ro-crate/)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from vitsae.atomic import atomic_write

if TYPE_CHECKING:
    from vitsae.config import Run

RESULTS = "results"
DEMO_DATASET = "results/datasets/{dataset}"
MANIFEST = "results/manifests/{dataset}.parquet"
STORE = "results/activations/{dataset}/{model}/layer{layer}.zarr"
STORE_PART = "results/activations/{dataset}/{model}/layer{layer}.parts/part{part}-of{nparts}.zarr"
SAE_DIR = "results/sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}"
SAE_FILES = ("sae.safetensors", "cfg.json", "train_log.csv")  # the files of an SAE_DIR
TRAIN_STATE = "results/.state/sae/{dataset}/{model}/layer{layer}/{sweep}"
EVAL = "results/eval/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/{eval_dataset}.json"
#: Finding 3's baselines per (model, layer): PCA fitted on the source, the source SAE re-centred on the target.
BASELINES = "results/transfer/baselines/{model}/layer{layer}.csv"
#: Downstream fidelity on one dataset ({dataset}: the evaluated one) of every transfer SAE of (model, layer).
DOWNSTREAM = "results/transfer/downstream/{dataset}/{model}/layer{layer}.csv"
FEATURES = "results/features/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}"
#: Statistics of the SAE trained on {dataset} computed on {eval_dataset}'s store (features on the other
#: dataset), and their concept table in {eval_dataset}'s format, with its null table.
FEATURES_ON = "results/features_on/{eval_dataset}/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}"
CONCEPTS_ON = "results/tables/concepts_on/{eval_dataset}/{dataset}/{model}/layer{layer}/{sweep}.csv"
CONCEPTS_ON_NULL = "results/tables/concepts_on/{eval_dataset}/{dataset}/{model}/layer{layer}/{sweep}.null.csv"
THUMBNAILS = "results/thumbnails/{dataset}/{split}.npz"
CONCEPTS = "results/tables/concepts/{dataset}/{model}/layer{layer}/{sweep}.csv"
CONCEPTS_NULL = "results/tables/concepts/{dataset}/{model}/layer{layer}/{sweep}.null.csv"
CONCEPTS_SHUFFLED = "results/tables/concepts/{dataset}/{model}/layer{layer}/{sweep}.shuffled.csv"
CONCEPTS_SHUFFLED_NULL = "results/tables/concepts/{dataset}/{model}/layer{layer}/{sweep}.shuffled.null.csv"
CLUSTERS = "results/tables/clusters/{dataset}/{model}/layer{layer}/{sweep}.csv"
CARDS = "results/figures/features/{dataset}/{model}/layer{layer}/{sweep}"
#: The static feature browser (open index.html from the file system) and its blinded rating page (rate.html).
BROWSER = "results/browser"
#: The blinded rating sample's key (trial -> SAE, feature, label), kept outside the browser so the rating page
#: never holds it; the raters' scored ratings and their agreement.
RATING_SAMPLE = "results/tables/rating_sample.csv"
RATINGS = "results/tables/ratings.csv"
RATING_AGREEMENT = "results/tables/rating_agreement.csv"
FIGURE = "results/figures/{figure}.pdf"
TABLE = "results/tables/{table}.csv"
LINEAGE_HTML = "results/provenance/{figure}.html"
LINEAGE_JSON = "results/provenance/{figure}.json"
CRATE = "results/provenance/ro-crate"  # copies of what lies outside results/ (workflow, resolved config)
CRATE_METADATA = "results/ro-crate-metadata.json"  # the run's RO-Crate, rooted at results/
LOG = "results/logs/{rule}/{job}.log"
BENCHMARK = "results/benchmarks/{rule}/{job}.tsv"
#: The config files of the last Snakemake run in a working directory (what `vitsae verify` compares with).
CONFIGFILES = ".snakemake/vitsae/configfiles.json"

#: The paper's figures by name, with their titles (one per run) ...
FIGURES: dict[str, str] = {
    "transfer": "SAE transfer: reconstruction across datasets",
    "semantic_abstraction": "Finding 1: abstract semantic features (share of live SAE features)",
    "traits": "Finding 2: morphological-trait features among animal features",
    "transfer_features": "SAE transfer at the feature level: decoder directions across datasets",
    "transfer_labels": "SAE transfer at the feature level: do features keep their label on the other dataset?",
    "claims": "Findings tested: each claim's statistic at matched L0, with its 95% CI and verdict",
    "spec_curve": "Specification curve: the difference between models over every labelling threshold",
}
#: ... and those drawn once per sweep: ``{kind}-{sweep}`` → title with the sweep's name.
PER_SWEEP: dict[str, str] = {
    "training": "SAE training curves: sweep {sweep}",
    "pareto": "Sparsity against reconstruction: sweep {sweep}",
    "quality": "SAE quality: stability across seeds, dead and dense features, training convergence: sweep {sweep}",
}
#: The findings' tables (beside the transfer and Pareto tables).
FINDINGS_TABLES = ("semantic_abstraction", "semantic_abstraction_shares", "semantic_abstraction_branch_pairs",
                   "traits", "traits_shares", "transfer_features", "transfer_labels", "claims", "spec_curve",
                   "controls")  # fmt: skip
#: Finding 3's tables beside ``transfer``: the gap at matched L0 with baselines, downstream accuracy recovered.
TRANSFER_TABLES = ("transfer_matched", "transfer_downstream")

_FIELD = re.compile(r"\{(\w+)\}")


def fill(pattern: str, **values: object) -> str:
    """``pattern`` with the named fields filled in and every other ``{field}`` left as a wildcard:
    ``fill(SAE_DIR, sweep="paper")`` is ``results/sae/{dataset}/{model}/layer{layer}/paper/{sae_id}``."""
    return _FIELD.sub(lambda m: str(values[m[1]]) if m[1] in values else m[0], pattern)


def log(rule: str, job: str) -> str:
    """The log file of one job of ``rule``; ``job`` names it by its wildcards, e.g. ``{dataset}``."""
    return LOG.format(rule=rule, job=job)


def benchmark(rule: str, job: str) -> str:
    """The benchmark file of one job of ``rule`` (as :func:`log`)."""
    return BENCHMARK.format(rule=rule, job=job)


def remember_configfiles(paths: Iterable[str | os.PathLike], workdir: str | os.PathLike = ".") -> Path:
    """Write :data:`CONFIGFILES` under ``workdir``: the absolute paths of the config files this run reads
    (Snakemake's ``workflow.configfiles``, later ones overriding earlier ones), written atomically."""
    out = Path(workdir) / CONFIGFILES
    text = json.dumps([str(Path(p).resolve()) for p in paths], indent=1) + "\n"
    return atomic_write(out, lambda tmp: tmp.write_text(text))


def remembered_configfiles(workdir: str | os.PathLike) -> list[Path] | None:
    """The config files :func:`remember_configfiles` wrote under ``workdir``, or None if it never did."""
    path = Path(workdir) / CONFIGFILES
    return [Path(p) for p in json.loads(path.read_text())] if path.is_file() else None


def figure_titles(sweeps: Iterable[str]) -> dict[str, str]:
    """Every figure of a run with these sweeps: name → title."""
    titles = dict(FIGURES)
    for sweep in sweeps:
        for kind, title in PER_SWEEP.items():
            titles[f"{kind}-{sweep}"] = title.format(sweep=sweep)
    return titles


# ---------------------------------------------------------------------------------------------
# The run's keys


def model_layers(run: Run) -> list[tuple[str, int]]:
    """(model, layer) of every store of a dataset."""
    return [(m, layer) for m, cfg in run.models.items() for layer in cfg.layers]


def stores(run: Run) -> list[str]:
    return [
        STORE.format(dataset=d, model=m, layer=layer) for d in run.datasets for m, layer in model_layers(run)
    ]


def _sae_keys(run: Run, picked: Iterable[tuple[str, str]] | None) -> list[dict]:
    """The place of every SAE (train dataset × model × layer × (sweep, SAE id)); ``picked`` limits the
    (sweep, id) pairs (default: every SAE of every sweep)."""
    pairs = list(picked) if picked is not None else [(s, i) for s, sw in run.sweeps.items() for i in sw.ids]
    return [
        {"dataset": d, "model": m, "layer": layer, "sweep": s, "sae_id": i}
        for d in run.datasets
        for m, layer in model_layers(run)
        for s, i in pairs
        if run.sweeps[s].trains(m)
    ]


def sae_dirs(run: Run, picked: Iterable[tuple[str, str]] | None = None) -> list[str]:
    """One directory per SAE (:func:`_sae_keys`)."""
    return [SAE_DIR.format(**k) for k in _sae_keys(run, picked)]


def sae_files(run: Run, name: str, picked: Iterable[tuple[str, str]] | None = None) -> list[str]:
    """File ``name`` (one of :data:`SAE_FILES`) of each SAE of :func:`sae_dirs`."""
    return [f"{d}/{name}" for d in sae_dirs(run, picked)]


def evals(run: Run, picked: Iterable[tuple[str, str]] | None = None, in_domain: bool = False) -> list[str]:
    """Each SAE of :func:`sae_dirs` evaluated on every dataset, or on its own only (``in_domain``)."""
    return [
        EVAL.format(**k, eval_dataset=e)
        for k in _sae_keys(run, picked)
        for e in ([k["dataset"]] if in_domain else run.datasets)
    ]


def _transfer_keys(run: Run) -> list[dict]:
    """The place of every SAE of ``transfer.saes`` but the baseline models' (``claims.baselines``: they
    serve findings 1 and 2; finding 3 is about the compared models, and each baseline's transfer jobs would
    cost as much as theirs)."""
    return [k for k in _sae_keys(run, run.transfer_saes) if k["model"] not in run.claims.baselines]


def transfer_saes(run: Run, model: str, layer: int) -> list[dict]:
    """The place of every transfer SAE (:func:`_transfer_keys`) on (model, layer), from every training
    dataset."""
    return [k for k in _transfer_keys(run) if k["model"] == model and k["layer"] == int(layer)]


def transfer_evals(run: Run, sweep: str | None = None) -> list[str]:
    """Each transfer SAE (:func:`_transfer_keys`; of ``sweep`` only, if given) evaluated on every dataset."""
    return [EVAL.format(**k, eval_dataset=e) for k in _transfer_keys(run) if sweep in (None, k["sweep"])
            for e in run.datasets]  # fmt: skip


def transfer_model_layers(run: Run) -> list[tuple[str, int]]:
    """(model, layer) with SAEs in ``transfer.saes``: each gets downstream accuracies on every dataset and,
    when the run has two datasets or more, finding 3's baselines."""
    return [(m, layer) for m, layer in model_layers(run) if transfer_saes(run, m, layer)]


def baselines(run: Run) -> list[str]:
    """One baselines table per :func:`transfer_model_layers` entry (none with a single dataset)."""
    if len(run.datasets) < 2:
        return []
    return [BASELINES.format(model=m, layer=layer) for m, layer in transfer_model_layers(run)]


def downstream(run: Run) -> list[str]:
    """One downstream table per dataset and :func:`transfer_model_layers` entry."""
    return [DOWNSTREAM.format(dataset=d, model=m, layer=layer) for d in run.datasets
            for m, layer in transfer_model_layers(run)]  # fmt: skip


def feature_saes(run: Run) -> dict[str, list[str]]:
    """sweep → the ids of its SAEs that ``features.saes`` picks (config order)."""
    out: dict[str, list[str]] = {}
    for sweep, sae_id in run.features.saes:
        out.setdefault(sweep, []).append(sae_id)
    return out


def concept_keys(run: Run) -> list[tuple[str, str, int, str]]:
    """(dataset, model, layer, sweep) of every concept table: datasets whose format has one
    (imagenet, inat2021), sweeps with SAEs picked by ``features.saes``."""
    return [
        (d, m, layer, s)
        for d, ds in run.datasets.items()
        if ds.format in ("imagenet", "inat2021")
        for m, layer in model_layers(run)
        for s in feature_saes(run)
        if run.sweeps[s].trains(m)
    ]


def finding_keys(run: Run) -> list[tuple[str, str, int, str]]:
    """The concept keys of the findings figures and the cards: every sweep but the control sweeps
    (:attr:`vitsae.analysis.settings.ClaimSettings.control_sweeps`)."""
    return [k for k in concept_keys(run) if k[3] not in run.claims.control_sweeps]


def concept_tables(run: Run, null: bool = False, findings: bool = False) -> list[str]:
    """Every concept table (or null table); ``findings``: those of :func:`finding_keys` only."""
    pattern = CONCEPTS_NULL if null else CONCEPTS
    keys = finding_keys(run) if findings else concept_keys(run)
    return [pattern.format(dataset=d, model=m, layer=layer, sweep=s) for d, m, layer, s in keys]


def shuffled_keys(run: Run) -> list[tuple[str, str, int, str]]:
    """The concept-table keys of the sweeps ``controls.shuffled_labels`` names (the negative control)."""
    return [k for k in concept_keys(run) if k[3] in run.shuffled_labels]


def shuffled_tables(run: Run, null: bool = False) -> list[str]:
    pattern = CONCEPTS_SHUFFLED_NULL if null else CONCEPTS_SHUFFLED
    return [pattern.format(dataset=d, model=m, layer=layer, sweep=s) for d, m, layer, s in shuffled_keys(run)]


def cluster_tables(run: Run) -> list[str]:
    """One feature-cluster table per concept table."""
    return [CLUSTERS.format(dataset=d, model=m, layer=layer, sweep=s) for d, m, layer, s in concept_keys(run)]


def card_dirs(run: Run) -> list[str]:
    return [CARDS.format(dataset=d, model=m, layer=layer, sweep=s) for d, m, layer, s in finding_keys(run)]


def feature_keys(run: Run, findings: bool = False) -> list[dict]:
    """The place of every SAE that gets statistics, in concept-table order (``findings``: of
    :func:`finding_keys` only)."""
    return [
        {"dataset": d, "model": m, "layer": layer, "sweep": s, "sae_id": i}
        for d, m, layer, s in (finding_keys(run) if findings else concept_keys(run))
        for i in feature_saes(run)[s]
    ]


def browser_keys(run: Run) -> list[dict]:
    """The place of every SAE the feature browser shows: ``browser.sweeps``, or every sweep of
    :func:`finding_keys` (concept-table order)."""
    sweeps = run.browser.sweeps
    keys = feature_keys(run, findings=not sweeps)
    return [k for k in keys if not sweeps or k["sweep"] in sweeps]


def rating_keys(run: Run) -> list[tuple[str, str, int, str]]:
    """The concept keys the rating sample draws from: those of the browser's sweeps (:func:`browser_keys`),
    but the baseline models' (``claims.baselines``: no claim row reads their precision; the browser shows
    them)."""
    keys = {(k["dataset"], k["model"], k["layer"], k["sweep"]) for k in browser_keys(run)
            if k["model"] not in run.claims.baselines}  # fmt: skip
    return [k for k in concept_keys(run) if k in keys]


def catch_keys(run: Run) -> list[tuple[str, str, int, str]]:
    """The concept keys of the null sweep (``claims.null_sweep``) whose features are the catch trials: one per
    (dataset, model, layer) the rating sample draws from."""
    null = run.claims.null_sweep
    places = {(d, m, layer) for d, m, layer, _s in rating_keys(run)}
    return [k for k in concept_keys(run) if null and k[3] == null and k[:3] in places]


def thumbnails(run: Run) -> list[str]:
    """The thumbnails of the statistics' split of every dataset with concept tables."""
    datasets = sorted({d for d, _m, _l, _s in concept_keys(run)})
    return [THUMBNAILS.format(dataset=d, split=run.features.split) for d in datasets]


def figures(run: Run) -> dict[str, str]:
    """Every figure of the run: name → title."""
    return figure_titles(run.sweeps)


def final_tables(run: Run) -> list[str]:
    """The paper's tables: transfer, each sweep's Pareto and quality tables, the findings'."""
    per_sweep = [f"{kind}-{s}" for kind in ("pareto", "quality") for s in run.sweeps]
    names = ["transfer", *TRANSFER_TABLES, *per_sweep, *FINDINGS_TABLES]
    return [TABLE.format(table=n) for n in names]


def run_artifacts(run: Run) -> list[str]:
    """Every artifact the run makes below the figures: manifests, stores, SAE files, evaluations (in-domain,
    and across datasets for ``transfer.saes``),
    thumbnails, statistics, concept tables and cards, the browser with its rating sample and ratings, and the statistics and concept tables of SAEs read on
    the other datasets (the RO-Crate lists them all, including those no figure reads, such as training
    logs)."""
    return [
        *(MANIFEST.format(dataset=d) for d in run.datasets),
        *stores(run),
        *(f"{s}/{f}" for s in sae_dirs(run) for f in SAE_FILES),
        *dict.fromkeys([*evals(run, in_domain=True), *transfer_evals(run)]),
        *baselines(run),
        *downstream(run),
        *thumbnails(run),
        *(FEATURES.format(**k) for k in feature_keys(run)),
        *concept_tables(run),
        *concept_tables(run, null=True),
        *shuffled_tables(run),
        *shuffled_tables(run, null=True),
        *cluster_tables(run),
        *card_dirs(run),
        *features_on(run),
        *concepts_on_tables(run),
        *concepts_on_tables(run, null=True),
        RATING_SAMPLE,
        RATINGS,
        RATING_AGREEMENT,
        BROWSER,
    ]


# ---------------------------------------------------------------------------------------------
# Features on the other dataset (rules feature_stats_on_<sweep>, concepts_on_<sweep>, transfer_labels)


def transfer_label_keys(run: Run) -> list[tuple[str, str, str, int, str]]:
    """(eval_dataset, dataset, model, layer, sweep): each concept key of :func:`finding_keys` but the baseline
    models' (as :func:`_transfer_keys`) read on every other dataset that has a concept table (imagenet,
    inat2021), in finding-key order."""
    targets = [d for d, ds in run.datasets.items() if ds.format in ("imagenet", "inat2021")]
    return [(e, d, m, layer, s) for d, m, layer, s in finding_keys(run) if m not in run.claims.baselines
            for e in targets if e != d]  # fmt: skip


def features_on(run: Run) -> list[str]:
    """The statistics directory of every SAE of :func:`transfer_label_keys` on the other dataset's store."""
    return [
        FEATURES_ON.format(eval_dataset=e, dataset=d, model=m, layer=layer, sweep=s, sae_id=i)
        for e, d, m, layer, s in transfer_label_keys(run)
        for i in feature_saes(run)[s]
    ]


def concepts_on_tables(run: Run, null: bool = False) -> list[str]:
    """The concept table (or null table) of every :func:`transfer_label_keys` entry."""
    pattern = CONCEPTS_ON_NULL if null else CONCEPTS_ON
    return [pattern.format(eval_dataset=e, dataset=d, model=m, layer=layer, sweep=s)
            for e, d, m, layer, s in transfer_label_keys(run)]  # fmt: skip
