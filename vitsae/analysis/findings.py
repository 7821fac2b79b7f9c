"""Findings 1 and 2: label shares with bootstrap CIs, the null baseline, robustness over the sweep, and
the headline statistic at matched sparsity.

Input: one :class:`SAEConcepts` per (SAE, dataset): the SAE's concept table (:func:`vitsae.analysis.concepts.
imagenet_table` or :func:`~vitsae.analysis.concepts.inat_table`), the same labelling run on random image sets
(``null_table``, see below), the SAE's place (dataset, model, layer, sweep, sae_id; its setting and seed
from the id, :func:`vitsae.sae.settings.split_seed`), its settings (architecture, expansion, l1_coeff, k,
seed from ``cfg.json``) and its evaluation on the same dataset (``l0``, ``fvu`` from the evaluation JSON,
:mod:`vitsae.sae.evaluate`). :func:`from_files` builds one from those files; :func:`concept_records`
builds them all from the concept tables of a run, finding each SAE's files by their contents.

Definitions
-----------
* **Live features**: rows with ``n_top > 0`` (the feature fires on at least one image of the split).
  Every share is over live features; dead ones are counted (``n_dead``) and left out.
* **Label share**: the share of live features with a label (``concepts.IMAGENET_LABELS`` /
  ``INAT_LABELS``).
* **Headline statistics** (:data:`ABSTRACT`, :data:`TRAIT`): finding 1, the share of live features labelled
  ``abstract``; finding 2, the share of ``trait`` features among *animal* features (live features with
  ``animal`` true: for ImageNet, every core class below animal.n.01 (the table's own column); for iNat,
  add the column with :func:`inat_animal`). A ratio ``#(num) / #(den)``.
* **Bootstrap CI over features**: ``n_boot`` resamples of the live features with replacement, drawn as
  ``numpy.random.default_rng(seed).integers(0, n, size=(n_boot, n))`` (in row blocks, which draws the
  same numbers); the statistic of each resample; the 2.5 and 97.5 percentiles (``numpy.quantile``,
  linear). A resample with an empty denominator gives NaN and is left out of the percentiles.
  The observed table uses ``seed``, the null table ``seed + 1``.
* **Null baseline** (:func:`null_top_images`): each feature's firing top images are replaced by as many
  distinct images drawn uniformly from the split (seeded), keeping the feature's own patch maps (so
  ``localization`` is unchanged), and the *same* labelling with the *same* rules is run on that (e.g.
  ``concepts.imagenet_table(null_top_image_FK, top_map_FKT, ...)``). The baseline share is the share of
  features that get a label when their top images are a random sample: the rate at which the rules
  alone (coherence and concentration tests at ``alpha``, branch count, diversity, purity) produce the
  label by chance. It is reported beside each share with its own bootstrap CI.
  Finding 2's statistic is a share *among animal features*, and random split images are rarely all
  animals (ImageNet: 398 of 1000 classes), so its null is drawn apart (:func:`with_animal_null`): the
  same features as the observed denominator (the observed ``animal``), each with random images of
  animal classes (ImageNet: below animal.n.01; iNat: kingdom Animalia). Its null share answers "how
  often would random animal images of the same number look like a trait (one clade, several classes,
  the feature's own localization)?". Where every animal class of a dataset sits in one small clade
  (the demo's ImageNet: 6 carnivores) that null is high, and says so.
* **Headline SAE** of a (dataset, model): the one the label-share panel draws. By default the deepest
  layer present and, among its SAEs, the one with the median L0 (the lower of the two middle ones,
  ties by sae_id); pass ``headline`` to choose.

Outputs (:func:`write_semantic_abstraction`, :func:`write_traits`)
------------------------------------------------------------------
* ``out_csv``: the robustness table, one row per SAE (so per SAE × layer) of the sweep:
  :data:`ROBUSTNESS_COLUMNS` (``statistic`` with ``ci_low``/``ci_high``, numerator and denominator
  counts, the null's ``null_statistic`` with its CI, ``l0``, ``fvu``, the settings).
* ``shares_csv`` (optional): one row per SAE × label: :data:`SHARES_COLUMNS`.
* ``branch_pairs_csv`` (finding 1, optional): one row per SAE × branch pair (:func:`branch_pair_table`):
  the share of live features that are abstract *and* whose major classes are of that pair of coarse kinds
  (``branch_pair``: ``animal-artifact``, ``artifact-artifact``, ...), with its CI and null, so that a share
  of abstract features cannot hide in one pair type (e.g. artifacts that share a scene).
* ``out_pdf``: the label shares of each headline SAE with CIs and the null beside them; the headline
  statistic of every SAE against L0 and against FVU (both models, every layer and setting, seeds as
  separate points), observed filled, null hollow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from vitsae.analysis import charts, concepts
from vitsae.atomic import atomic_write
from vitsae.sae.settings import split_seed

SETTING_KEYS = ("architecture", "expansion", "l1_coeff", "k", "lr", "seed")
ROBUSTNESS_COLUMNS = [
    "statistic_name", "dataset", "model", "layer", "sweep", "sae_id", "setting", "seed", "architecture",
    "expansion", "l1_coeff", "k", "l0", "fvu", "n_features", "n_live", "n_dead", "numerator", "denominator",
    "statistic", "ci_low", "ci_high", "null_numerator", "null_denominator", "null_statistic", "null_ci_low",
    "null_ci_high", "n_boot", "headline",
]  # fmt: skip
BRANCH_PAIR_COLUMNS = [
    "dataset", "model", "layer", "sweep", "sae_id", "setting", "seed", "branch_pair", "n_live", "numerator",
    "statistic", "ci_low", "ci_high", "null_numerator", "null_statistic", "null_ci_low", "null_ci_high", "l0",
    "headline",
]  # fmt: skip
SHARES_COLUMNS = [
    "dataset", "model", "layer", "sweep", "sae_id", "setting", "seed", "label", "n_live", "count", "share",
    "ci_low", "ci_high", "null_count", "null_share", "null_ci_low", "null_ci_high", "l0", "fvu", "headline",
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class SAEConcepts:
    """One SAE's concept table on one dataset, and what places it in the sweep (module docstring)."""

    table: pd.DataFrame
    dataset: str
    model: str
    layer: int
    sweep: str
    sae_id: str
    l0: float
    fvu: float
    null_table: pd.DataFrame | None = None
    settings: dict = field(default_factory=dict)

    @property
    def setting(self) -> str:
        return split_seed(self.sae_id)[0]

    @property
    def seed(self) -> int | None:
        seed = self.settings.get("seed")
        return int(seed) if seed is not None else split_seed(self.sae_id)[1]

    @property
    def key(self) -> tuple[str, str, int, str, str]:
        return (self.dataset, self.model, self.layer, self.sweep, self.sae_id)


def _read_table(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concept table {path} does not exist; run the concepts rule that writes it")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def from_files(
    table: pd.DataFrame | str | os.PathLike,
    eval_json: str | os.PathLike,
    null_table: pd.DataFrame | str | os.PathLike | None = None,
    cfg_json: str | os.PathLike | None = None,
) -> SAEConcepts:
    """A :class:`SAEConcepts` from a concept table (DataFrame, .parquet or .csv), the SAE's evaluation
    JSON on the table's dataset (model, layer, sweep, sae_id, eval_dataset, l0, fvu) and, optionally, the
    null table and the SAE's ``cfg.json`` (for its settings)."""
    rec = json.loads(Path(eval_json).read_text())
    missing = [k for k in ("model", "layer", "sweep", "sae_id", "eval_dataset", "l0", "fvu") if k not in rec]
    if missing:
        raise KeyError(
            f"evaluation JSON {eval_json} lacks {missing}; rerun the evaluate_<sweep> rule that writes it"
        )
    settings = {}
    if cfg_json is not None:
        cfg = json.loads(Path(cfg_json).read_text())
        settings = {k: cfg.get(k) for k in SETTING_KEYS}
    return SAEConcepts(
        table=table if isinstance(table, pd.DataFrame) else _read_table(table),
        null_table=null_table
        if null_table is None or isinstance(null_table, pd.DataFrame)
        else _read_table(null_table),
        dataset=str(rec["eval_dataset"]), model=str(rec["model"]), layer=int(rec["layer"]),
        sweep=str(rec["sweep"]), sae_id=str(rec["sae_id"]), l0=float(rec["l0"]), fvu=float(rec["fvu"]),
        settings=settings,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class Statistic:
    """A share ``#(numerator) / #(denominator)`` over a concept table's live features. ``rule`` maps a
    table's label columns (``alive``, ``label``, ``trait``, ``animal``: one array each, per feature) to the
    two boolean arrays; the same rule serves saved tables and relabelled ones
    (:mod:`vitsae.analysis.claims`)."""

    name: str
    title: str
    short: str
    rule: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    uses_animal: bool = False  # reads the trait and animal columns (else they need not exist)

    def numden(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(numerator, denominator) per feature of ``table``."""
        trait = animal = None
        if self.uses_animal:
            animal, trait = _bool(table, "animal"), _bool(table, "trait")
        return self.rule(live(table), table["label"].to_numpy(), trait, animal)


def live(table: pd.DataFrame) -> np.ndarray:
    if "n_top" not in table.columns:
        raise KeyError(f"concept table has no 'n_top' column (columns: {list(table.columns)})")
    return table["n_top"].to_numpy() > 0


def _bool(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        hint = "; add it with vitsae.analysis.nulls.inat_animal" if column == "animal" else ""
        raise KeyError(f"concept table has no {column!r} column (columns: {list(table.columns)}){hint}")
    return table[column].fillna(False).astype(bool).to_numpy()


ABSTRACT = Statistic(
    "share_abstract", "share of live features labelled abstract", "share abstract",
    rule=lambda alive, label, trait, animal: (alive & (label == "abstract"), alive),
)  # fmt: skip
TRAIT = Statistic(
    "share_trait_among_animal", "share of trait features among animal features", "trait / animal features",
    rule=lambda alive, label, trait, animal: (alive & animal & trait, alive & animal), uses_animal=True,
)  # fmt: skip


def bootstrap_counts(code_N: np.ndarray, n_codes: int, n_boot: int = 1000, seed: int | Sequence[int] = 0,
                     block_elems: int = 1 << 22) -> np.ndarray:  # fmt: skip
    """``[n_boot, n_codes]`` counts of each code in ``n_boot`` resamples (with replacement) of the items
    ``code_N`` (ints in ``[0, n_codes)``): resample ``b`` is ``default_rng(seed).integers(0, n, (n_boot,
    n))[b]``, drawn in blocks of rows of at most ``block_elems`` numbers (the same draws)."""
    code_N = np.asarray(code_N, dtype=np.int64)
    n = len(code_N)
    out_BC = np.zeros((n_boot, n_codes), dtype=np.int64)
    if n == 0:
        return out_BC
    rng = np.random.default_rng(seed)
    rows = max(1, block_elems // n)
    for start in range(0, n_boot, rows):
        b = min(rows, n_boot - start)
        idx_bN = rng.integers(0, n, size=(b, n))
        flat = (np.arange(b)[:, None] * n_codes + code_N[idx_bN]).ravel()
        out_BC[start : start + b] = np.bincount(flat, minlength=b * n_codes).reshape(b, n_codes)
    return out_BC


def percentile_ci(values_B: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of the finite values (NaN, NaN if there are none)."""
    v = np.asarray(values_B, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def ratio_ci(num_N: np.ndarray, den_N: np.ndarray, n_boot: int = 1000, seed: int | Sequence[int] = 0,
             level: float = 0.95) -> dict:  # fmt: skip
    """``#num / #den`` over items (``num`` implies ``den``) with its bootstrap CI over *all* items (the
    denominator varies between resamples)."""
    num_N, den_N = np.asarray(num_N, bool), np.asarray(den_N, bool)
    if (num_N & ~den_N).any():
        raise ValueError("a numerator item is outside the denominator")
    code_N = np.where(num_N, 0, np.where(den_N, 1, 2))
    counts_BC = bootstrap_counts(code_N, 3, n_boot, seed)
    den_B = counts_BC[:, 0] + counts_BC[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_B = np.where(den_B > 0, counts_BC[:, 0] / np.maximum(den_B, 1), np.nan)
    num, den = int(num_N.sum()), int(den_N.sum())
    lo, hi = percentile_ci(ratio_B, level)
    return {"numerator": num, "denominator": den, "statistic": num / den if den else float("nan"),
            "ci_low": lo, "ci_high": hi}  # fmt: skip


def label_shares(table: pd.DataFrame, labels: Sequence[str], n_boot: int = 1000,
                 seed: int | Sequence[int] = 0, level: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """Per label: ``count``, ``share`` of the live features, ``ci_low``, ``ci_high`` (one set of resamples
    for all labels); a label outside ``labels`` counts in the denominator only."""
    alive = live(table)
    lab = table["label"].to_numpy()[alive].astype(str)
    lookup = {name: i for i, name in enumerate(labels)}
    code_N = np.array([lookup.get(x, len(labels)) for x in lab], dtype=np.int64)
    n = len(code_N)
    counts_BC = bootstrap_counts(code_N, len(labels) + 1, n_boot, seed)
    rows = []
    for i, name in enumerate(labels):
        count = int((code_N == i).sum())
        lo, hi = percentile_ci(counts_BC[:, i] / n, level) if n else (float("nan"), float("nan"))
        rows.append({"label": name, "n_live": n, "count": count, "share": count / n if n else float("nan"),
                     "ci_low": lo, "ci_high": hi})  # fmt: skip
    return pd.DataFrame(rows)


def _meta(r: SAEConcepts) -> dict:
    return {"dataset": r.dataset, "model": r.model, "layer": r.layer, "sweep": r.sweep, "sae_id": r.sae_id,
            "setting": r.setting, "seed": r.seed}  # fmt: skip


def headline_keys(records: Sequence[SAEConcepts],
                  headline: Mapping[tuple[str, str], tuple[int, str]] | None = None) -> set[tuple]:  # fmt: skip
    """The record keys drawn in the label-share panel: per (dataset, model) ``headline[(dataset, model)]
    = (layer, sae_id)``, else the default of the module docstring."""
    by_dm: dict[tuple[str, str], list[SAEConcepts]] = {}
    for r in records:
        by_dm.setdefault((r.dataset, r.model), []).append(r)
    keys = set()
    for (dataset, model), group in sorted(by_dm.items()):
        if headline is not None and (dataset, model) in headline:
            layer, sae = headline[(dataset, model)]
            hit = [r for r in group if r.layer == int(layer) and r.sae_id == sae]
            if not hit:
                raise KeyError(f"headline SAE {dataset}/{model}/layer{layer}/{sae} is not among the records; "
                               "fix the headline setting")  # fmt: skip
            keys.add(hit[0].key)
            continue
        deepest = max(r.layer for r in group)
        cands = sorted((r for r in group if r.layer == deepest), key=lambda r: (r.l0, r.sae_id))
        keys.add(cands[(len(cands) - 1) // 2].key)
    return keys


def _check_unique(records: Sequence[SAEConcepts]) -> None:
    if not records:
        raise ValueError("no concept tables given")
    seen: set = set()
    for r in records:
        if r.key in seen:
            raise ValueError(f"concept table of {'/'.join(map(str, r.key))} given twice")
        seen.add(r.key)


def robustness_table(records: Sequence[SAEConcepts], stat: Statistic, n_boot: int = 1000, seed: int = 0,
                     headline: Mapping[tuple[str, str], tuple[int, str]] | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per SAE (:data:`ROBUSTNESS_COLUMNS`): the headline statistic, its CI, its null, L0, FVU."""
    _check_unique(records)
    heads = headline_keys(records, headline)
    rows = []
    for r in records:
        alive = live(r.table)
        obs = ratio_ci(*stat.numden(r.table), n_boot, seed)
        row = {"statistic_name": stat.name, **_meta(r), **{k: r.settings.get(k) for k in SETTING_KEYS[:4]},
               "l0": r.l0, "fvu": r.fvu, "n_features": len(r.table), "n_live": int(alive.sum()),
               "n_dead": int((~alive).sum()), **obs, "n_boot": n_boot, "headline": r.key in heads}  # fmt: skip
        if r.null_table is not None:
            nul = ratio_ci(*stat.numden(r.null_table), n_boot, seed + 1)
            row.update({f"null_{k}": v for k, v in nul.items()})
        rows.append(row)
    out = pd.DataFrame(rows).reindex(columns=ROBUSTNESS_COLUMNS)
    return out.sort_values(["dataset", "model", "layer", "sweep", "sae_id"], ignore_index=True)


def branch_pair_table(records: Sequence[SAEConcepts], n_boot: int = 1000, seed: int = 0,
                      headline: Mapping[tuple[str, str], tuple[int, str]] | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per SAE × branch pair of its abstract features (:data:`BRANCH_PAIR_COLUMNS`): ``numerator``
    abstract live features of that pair, ``statistic`` their share of the live features with its
    bootstrap CI (:func:`ratio_ci`), and the same on the null table. Pairs are those of the observed or
    null abstract features; a table without ``branch_pair`` (an older version) gives no rows."""
    _check_unique(records)
    heads = headline_keys(records, headline)
    rows = []
    for r in records:
        if "branch_pair" not in r.table.columns:
            continue
        tables = [r.table] + (
            [r.null_table] if r.null_table is not None and "branch_pair" in r.null_table else []
        )
        abstract = [live(t) & (t["label"].to_numpy() == "abstract") for t in tables]
        pairs = sorted({str(p) for t, a in zip(tables, abstract) for p in t["branch_pair"].to_numpy()[a]})
        for pair in pairs:
            num = [a & (t["branch_pair"].astype(str).to_numpy() == pair) for t, a in zip(tables, abstract)]
            obs = ratio_ci(num[0], live(tables[0]), n_boot, seed)
            row = {**_meta(r), "branch_pair": pair, "n_live": obs["denominator"],
                   **{k: obs[k] for k in ("numerator", "statistic", "ci_low", "ci_high")}, "l0": r.l0,
                   "headline": r.key in heads}  # fmt: skip
            if len(tables) > 1:
                nul = ratio_ci(num[1], live(tables[1]), n_boot, seed + 1)
                row.update({f"null_{k}": nul[k] for k in ("numerator", "statistic", "ci_low", "ci_high")})
            rows.append(row)
    out = pd.DataFrame(rows).reindex(columns=BRANCH_PAIR_COLUMNS)
    return out.sort_values(["dataset", "model", "layer", "sweep", "sae_id", "branch_pair"], ignore_index=True)


def table_labels(table: pd.DataFrame) -> tuple[str, ...]:
    """The label set of a concept table: iNat's if it has ``purity_species``, else ImageNet's."""
    return concepts.INAT_LABELS if "purity_species" in table.columns else concepts.IMAGENET_LABELS


def shares_table(records: Sequence[SAEConcepts], labels: Sequence[str] | None = None, n_boot: int = 1000,
                 seed: int = 0, headline: Mapping[tuple[str, str], tuple[int, str]] | None = None,
                 ) -> pd.DataFrame:  # fmt: skip
    """One row per SAE × label (:data:`SHARES_COLUMNS`), observed and null shares with CIs; ``labels``
    default to each table's own (:func:`table_labels`)."""
    _check_unique(records)
    heads = headline_keys(records, headline)
    frames = []
    for r in records:
        names = table_labels(r.table) if labels is None else labels
        obs = label_shares(r.table, names, n_boot, seed)
        if r.null_table is not None:
            nul = label_shares(r.null_table, names, n_boot, seed + 1)
            obs = obs.assign(null_count=nul["count"], null_share=nul["share"], null_ci_low=nul["ci_low"],
                             null_ci_high=nul["ci_high"])  # fmt: skip
        frames.append(obs.assign(**_meta(r), l0=r.l0, fvu=r.fvu, headline=r.key in heads))
    out = pd.concat(frames, ignore_index=True).reindex(columns=SHARES_COLUMNS)
    return out.sort_values(["dataset", "model", "layer", "sweep", "sae_id"], kind="stable", ignore_index=True)


# --------------------------------------------------------------------------------------------
# Figures


def _shares_chart(shares: pd.DataFrame) -> alt.Chart:
    """Per dataset (one chart each: xOffset does not survive a facet), the headline SAEs' label shares."""
    panels = []
    for dataset, d in shares[shares["headline"]].groupby("dataset", sort=True):
        d = d.assign(sae=d["model"] + " · layer " + d["layer"].astype(str) + " · " + d["sae_id"])
        labels = list(dict.fromkeys(d["label"]))
        base = alt.Chart(d).encode(
            x=alt.X("label:N", sort=labels, title=None, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("model:N"),
            color=alt.Color("model:N", title="model"),
        )
        bars = base.mark_bar().encode(
            y=alt.Y("share:Q", title="share of live features"),
            tooltip=["sae", "label", "count", "n_live", alt.Tooltip("share:Q", format=".3f")],
        )
        layers = [bars, base.mark_rule().encode(y="ci_low:Q", y2="ci_high:Q", color=alt.value("black"))]
        if d["null_share"].notna().any():
            layers.append(base.mark_tick(thickness=2, opacity=0.8).encode(
                y="null_share:Q", color=alt.value("black"), tooltip=[alt.Tooltip("null_share:Q", format=".3f", title="null share")]))  # fmt: skip
        heads = "; ".join(sorted(set(d["sae"])))
        panels.append(alt.layer(*layers).properties(
            width=90 * len(labels), height=200, title=alt.TitleParams(f"{dataset}: {heads}", fontSize=10)))  # fmt: skip
    return alt.hconcat(*panels).properties(
        title="Label shares of the headline SAEs (bars; black rule: 95% bootstrap CI; black tick: null baseline)"
    )


def _sparsity_chart(rob: pd.DataFrame, stat: Statistic, x: str) -> alt.Chart:
    d = rob.copy()
    d["layer_name"] = "layer " + d["layer"].astype(str)
    x_title = {"l0": "L0 (active features per token)", "fvu": "FVU (lower is better)"}[x]
    scale = alt.Scale(type="log", nice=False, padding=12) if x == "l0" else alt.Scale(zero=False, padding=12)
    base = alt.Chart(d).encode(x=alt.X(f"{x}:Q", title=x_title, scale=scale),
                               color=alt.Color("model:N", title="model"))  # fmt: skip
    tip = ["dataset", "model", "layer", "sae_id", alt.Tooltip("statistic:Q", format=".3f"), "l0", "fvu"]
    layers = [
        base.mark_rule(opacity=0.6).encode(y="ci_low:Q", y2="ci_high:Q"),
        base.mark_point(filled=True, size=60).encode(
            y=alt.Y("statistic:Q", title=stat.short), shape=alt.Shape("layer_name:N", title="layer"),
            tooltip=tip,
        ),
    ]  # fmt: skip
    if d["null_statistic"].notna().any():
        layers.append(base.mark_point(filled=False, size=60, opacity=0.7, strokeDash=[2, 2]).encode(
            y="null_statistic:Q", shape="layer_name:N"))  # fmt: skip
    d_panels = d["dataset"].nunique() > 1
    chart = alt.layer(*layers).properties(width=260, height=200)
    if d_panels:
        return chart.facet(row=alt.Row("dataset:N", title=None))
    return chart


def findings_chart(rob: pd.DataFrame, shares: pd.DataFrame, stat: Statistic, title: str,
                   note: str = "") -> alt.Chart:  # fmt: skip
    """Label shares of the headline SAEs; the headline statistic against L0 and FVU (every SAE)."""
    vs = alt.hconcat(_sparsity_chart(rob, stat, "l0"), _sparsity_chart(rob, stat, "fvu")).properties(
        title=f"{stat.title} against sparsity and reconstruction: every SAE (filled: observed with 95% CI; "
        "hollow: null)"
    )  # fmt: skip
    return alt.vconcat(_shares_chart(shares), vs).properties(title=charts.title(title, note))


def write_findings(records: Sequence[SAEConcepts], stat: Statistic, labels: Sequence[str] | None, title: str,
                   out_pdf: str | os.PathLike, out_csv: str | os.PathLike,
                   shares_csv: str | os.PathLike | None = None, note: str = "", n_boot: int = 1000,
                   seed: int = 0, headline: Mapping[tuple[str, str], tuple[int, str]] | None = None,
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Write the robustness table (``out_csv``), the label shares (``shares_csv``) and the figure
    (``out_pdf``; any suffix altair saves: .pdf, .png, .svg). Returns (robustness, shares)."""
    rob = robustness_table(records, stat, n_boot, seed, headline)
    shares = shares_table(records, labels, n_boot, seed, headline)
    chart = findings_chart(rob, shares, stat, title, note)
    atomic_write(out_csv, lambda p: rob.to_csv(p, index=False, float_format="%.6g"))
    if shares_csv is not None:
        atomic_write(shares_csv, lambda p: shares.to_csv(p, index=False, float_format="%.6g"))
    charts.save(chart, out_pdf)
    return rob, shares


def write_semantic_abstraction(records: Sequence[SAEConcepts], out_pdf: str | os.PathLike,
                               out_csv: str | os.PathLike, shares_csv: str | os.PathLike | None = None,
                               title: str = "", note: str = "", n_boot: int = 1000, seed: int = 0,
                               headline: Mapping[tuple[str, str], tuple[int, str]] | None = None,
                               ) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Finding 1 from ImageNet concept tables: share abstract, the ImageNet label shares."""
    return write_findings(records, ABSTRACT, None, title, out_pdf, out_csv, shares_csv, note, n_boot, seed,
                          headline)  # fmt: skip


def write_traits(records: Sequence[SAEConcepts], out_pdf: str | os.PathLike, out_csv: str | os.PathLike,
                 shares_csv: str | os.PathLike | None = None, title: str = "", note: str = "", n_boot: int = 1000,
                 seed: int = 0, headline: Mapping[tuple[str, str], tuple[int, str]] | None = None,
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Finding 2 from iNat tables (with ``animal``, :func:`vitsae.analysis.nulls.inat_animal`) and/or ImageNet
    tables (their animal classes): share of trait among animal features; each table's own label shares."""
    return write_findings(records, TRAIT, None, title, out_pdf, out_csv, shares_csv, note, n_boot, seed,
                          headline)  # fmt: skip


# --------------------------------------------------------------------------------------------
# The rule's work


def concept_records(tables: Sequence[str | os.PathLike], nulls: Sequence[str | os.PathLike],
                    evals: Sequence[str | os.PathLike], cfgs: Sequence[str | os.PathLike]) -> list[SAEConcepts]:  # fmt: skip
    """One :class:`SAEConcepts` per (SAE, dataset) of the concept tables (and their null tables), with the
    SAE's in-domain evaluation (among ``evals``) and its ``cfg.json`` (among ``cfgs``), each found by what
    it says (model, layer, sweep, SAE id, dataset), never by its path."""
    by_eval = {}
    for path in evals:
        rec = json.loads(Path(path).read_text())
        if rec["train_dataset"] == rec["eval_dataset"]:
            by_eval[(rec["eval_dataset"], rec["model"], int(rec["layer"]), rec["sweep"], rec["sae_id"])] = (
                path
            )
    by_cfg = {}
    for path in cfgs:
        cfg = json.loads(Path(path).read_text())
        meta = cfg["meta"]
        by_cfg[(meta["dataset"], meta["model"], int(meta["layer"]), meta["sweep"], cfg["sae_id"])] = path
    records = []
    for table_path, null_path in zip(tables, nulls, strict=True):
        table, null = pd.read_csv(table_path), pd.read_csv(null_path)
        for sae_id, rows in table.groupby("sae_id", sort=False):
            first = rows.iloc[0]
            key = (
                str(first["dataset"]),
                str(first["model"]),
                int(first["layer"]),
                str(first["sweep"]),
                str(sae_id),
            )
            if key not in by_eval or key not in by_cfg:
                what = "in-domain evaluation" if key not in by_eval else "cfg.json"
                raise FileNotFoundError(f"concept table {table_path}: no {what} of SAE {'/'.join(map(str, key))} "
                                        "among the inputs; the findings rule must list it")  # fmt: skip
            records.append(from_files(rows.reset_index(drop=True), by_eval[key],
                                      null[null["sae_id"] == sae_id].reset_index(drop=True), by_cfg[key]))  # fmt: skip
    return records


def write_all(tables: list[str], nulls: list[str], evals: list[str], cfgs: list[str], formats: list[str],
              outputs: Mapping[str, str], titles: Mapping[str, str], note: str, n_boot: int, seed: int) -> None:  # fmt: skip
    """Finding 1 (ImageNet tables: share abstract) and finding 2 (every table: share of traits among
    animal features), each a figure, its robustness table and its label-share table."""
    imagenet = [(t, n) for t, n, f in zip(tables, nulls, formats, strict=True) if f == "imagenet"]
    records_1 = concept_records([t for t, _ in imagenet], [n for _, n in imagenet], evals, cfgs)
    records_2 = concept_records(tables, nulls, evals, cfgs)
    if not records_1:
        raise ValueError("finding 1 needs at least one dataset of format imagenet (WordNet concept tables)")
    write_semantic_abstraction(records_1, outputs["abstraction_pdf"], outputs["abstraction_csv"],
                               outputs["abstraction_shares"], titles["semantic_abstraction"], note, n_boot, seed)  # fmt: skip
    if "abstraction_branch_pairs" in outputs:
        pairs = branch_pair_table(records_1, n_boot, seed)
        atomic_write(outputs["abstraction_branch_pairs"], lambda tmp: pairs.to_csv(tmp, index=False))
    write_traits(records_2, outputs["traits_pdf"], outputs["traits_csv"], outputs["traits_shares"], titles["traits"],
                 note, n_boot, seed)  # fmt: skip
