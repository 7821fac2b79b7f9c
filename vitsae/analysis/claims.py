"""Findings 1 and 2 as tested claims: each declared comparison (``claims.comparisons``) as the difference
between two models at matched sparsity, with its uncertainty, a permutation test, a specification curve
over the labelling thresholds, nulls beside it and a verdict from a rule fixed in the config.

Inputs are files the DAG already writes: each SAE's concept table and its null table
(:mod:`vitsae.analysis.concept_tables`), its in-domain evaluation (L0) and ``cfg.json`` (seed,
architecture), and the sweep's feature clusters (:mod:`vitsae.analysis.clusters`).

Definitions
-----------
* **Arm**: one model's SAEs of one sweep on the comparison's dataset and layer (:class:`~vitsae.analysis.
  settings.Arm`). Each SAE is a unit (:class:`vitsae.analysis.compare.SAEUnit`): its seed, its L0 on its
  own evaluation split, and per feature the statistic's numerator and denominator
  (:data:`vitsae.analysis.findings.ABSTRACT`, :data:`~vitsae.analysis.findings.TRAIT`) and cluster.
* **Matched comparison, uncertainty, permutation test, verdict**: :mod:`vitsae.analysis.compare` (one
  primary comparison per claim; Holm's correction over each claim's secondary comparisons; a control row
  is tested alone). The bootstrap has two levels, seeds and feature clusters: both statistics are shares
  of *features* (each labelled once from its top images), so no statistic here is a mean over images and
  there is no image level to resample; the labels' own uncertainty is what the specification curve and
  the nulls probe.
* **Random-image null at matched L0** (``null_favoured``/``null_other``): the same matched statistic
  computed on the SAEs' null tables (each feature's top images replaced by random ones).
* **Structure-free null** (``perm_null_favoured``/``perm_null_other``): the statistic pooled over the
  features of the arm's model in ``claims.null_sweep`` (SAEs trained with ``permute_dims``), NaN without.
* **Specification curve** (:func:`spec_curve`): every cell of ``claims.spec_grid`` (the full product of
  each threshold's values; :func:`vitsae.analysis.relabel.grid_cells`) relabels every SAE's saved table
  (:func:`vitsae.analysis.relabel.relabel`) and recomputes Δ and its CI with the comparison's bootstrap
  draws (``claims.spec_n_boot``). ``spec_agreement`` = share of cells whose CI lies above 0 (the claimed
  direction). A comparison whose dataset kind has no grid gets one cell (the configured thresholds).
* **Baseline models** (``claims.baselines``; :func:`baseline_check`, :func:`baseline_verdict`): models that
  no claim is about (random weights, supervised, MAE, DINO v1), trained in the same sweeps. For each primary
  or secondary comparison, each baseline ``B`` with SAEs in the favoured arm's sweep on the comparison's
  dataset and layer takes the favoured model's place: its statistic ``stat_B`` at the row's matched L0 (the
  same interpolation, :class:`vitsae.analysis.compare.Comparator` against the other arm at that L0) and
  ``Δ_B = stat_B − stat_other``. That is the Δ that would explain the claim away: ``Δ_B ≥ Δ`` means
  ``stat_B ≥ stat_favoured``, a model without the favoured model's training objective is as far above the other
  model, so the difference says that the other model is low, not that the favoured one learned the concept.
  (The opposite pair, the favoured model against a baseline in the other's place, cannot explain the claim
  away: a large ``stat_favoured − stat_B`` only says the favoured model is high.) The row records every
  baseline's statistic (``stat_baselines``), the largest ``Δ_B`` (``baseline_delta``) and its model
  (``baseline_max``). **Rule**: a row that the other checks call "supported" stays supported only if the
  lower end of Δ's 95% CI exceeds ``baseline_delta`` (the CI, not Δ itself: a difference that the
  uncertainty cannot separate from a baseline's does not count; ``baseline_delta`` is a point estimate at
  the same L0, with its own noise reported by nothing else); else it reads "not supported". A baseline whose
  SAEs do not reach the row's L0 leaves the rule unchecked: "inconclusive", unless a baseline that does
  reach it already gives "not supported". A sweep that trains none of the baselines (``topk`` in
  config/paper.yaml) is judged without them, and its reason says so. Control rows, and a run without
  ``claims.baselines`` (the demo), are judged as before.
* **Controls table** (:func:`controls_table`): per concept table and label, the share of live features
  with the label against its null table, paired by feature: an exact one-sided McNemar test (discordant
  features, Binomial(b + c, 1/2)), Holm's correction within each kind of table (``observed``,
  ``shuffled-labels``, ``permuted-dims``). ``above_null`` is Holm p < alpha with the share above the null.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd
from scipy import stats as sps

from vitsae.analysis import charts, compare, findings, relabel
from vitsae.analysis.settings import RULES, TABLE_KIND, ClaimSettings, ComparisonSpec
from vitsae.atomic import atomic_write

STATISTICS = {1: findings.ABSTRACT, 2: findings.TRAIT}
CLAIM_TEXT = {
    1: "CLIP learns abstract semantic relationships, DINOv2 doesn't (share of abstract features)",
    2: "DINOv2 identifies morphological traits in animals more often than CLIP (traits among animal features)",
    3: "An SAE trained on one dataset transfers to another (gap at matched L0, downstream accuracy recovered)",
}
CLAIMS_COLUMNS = [
    "claim", "comparison", "role", "statistic", "dataset", "layer", "architecture", "sweep", "favoured", "favoured_sweep",
    "other", "other_sweep", "primary_l0", "overlap_low", "overlap_high", "n_seeds_favoured", "n_seeds_other",
    "stat_favoured", "stat_other", "delta", "ci_low", "ci_high", "se", "df", "boot_low", "boot_high", "p_perm",
    "p_min", "n_relabelings", "p_holm", "spec_cells", "spec_agreement", "delta_clusters", "clusters_ci_low",
    "clusters_ci_high", "stat_favoured_clusters", "stat_other_clusters", "null_favoured", "null_other",
    "perm_null_favoured", "perm_null_other", "stat_baselines", "baseline_delta", "baseline_max",
    "stability_favoured", "stability_other", "quality_failures",
    "limit", "accuracy_recovered", "accuracy_ci_low", "accuracy_ci_high", "baseline_pca_fvu",
    "baseline_recentred_fvu", "rated_label", "n_rated", "precision_favoured", "precision_other",
    "corrected_favoured", "corrected_other", "verdict", "reason",
]  # fmt: skip
#: The concept label each of findings 1 and 2 counts: its human-rated precision (rule ratings) goes beside the
#: claim's row, with the label's share corrected by it. Reported, never part of the verdict.
CLAIM_LABELS = {1: "abstract", 2: "trait"}
#: Finding 3's rows: one per (model, layer, sweep, source → target) of the transfer table.
TRANSFER_STATISTIC = "transfer_gap_fvu"
CONTROLS_COLUMNS = [
    "kind", "dataset", "model", "layer", "sweep", "label", "n_live", "count", "share", "null_count", "null_share",
    "discordant_up", "discordant_down", "p", "p_holm", "above_null",
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class SAETables:
    """One SAE's concept table, null table and clusters, with what places it (key) and its L0 and seed."""

    key: tuple[str, str, int, str, str]  # dataset, model, layer, sweep, sae_id
    seed: int
    l0: float
    architecture: str
    table: pd.DataFrame
    null: pd.DataFrame
    cluster_F: np.ndarray

    @property
    def group(self) -> tuple[str, str, int, str]:
        return self.key[:4]


def read_clusters(paths: Sequence[str | os.PathLike]) -> dict[tuple, np.ndarray]:
    """(dataset, model, layer, sweep, sae_id) → cluster per feature (in feature order)."""
    out = {}
    for path in paths:
        table = pd.read_csv(path)
        for (d, m, layer, s, sae_id), rows in table.groupby(["dataset", "model", "layer", "sweep", "sae_id"]):
            rows = rows.sort_values("feature")
            out[(str(d), str(m), int(layer), str(s), str(sae_id))] = rows["cluster"].to_numpy(np.int64)
    return out


def load_tables(tables: Sequence, nulls: Sequence, evals: Sequence, cfgs: Sequence,
                clusters: Sequence) -> dict[tuple[str, str, int, str], list[SAETables]]:  # fmt: skip
    """Every SAE of the concept tables, grouped by (dataset, model, layer, sweep), SAEs in table order."""
    by_key = read_clusters(clusters)
    out: dict[tuple, list[SAETables]] = {}
    for r in findings.concept_records(tables, nulls, evals, cfgs):
        if r.key not in by_key:
            raise FileNotFoundError(f"no feature clusters of SAE {'/'.join(map(str, r.key))} among the inputs; "
                                    "the rule must list its clusters table")  # fmt: skip
        cluster_F = by_key[r.key]
        if len(cluster_F) != len(r.table):
            raise ValueError(f"clusters of {'/'.join(map(str, r.key))} have {len(cluster_F)} features, its concept "
                             f"table {len(r.table)}; rerun the clusters rule")  # fmt: skip
        sae = SAETables(r.key, int(r.seed), float(r.l0), str(r.settings.get("architecture")), r.table,
                        r.null_table, cluster_F)  # fmt: skip
        out.setdefault(sae.group, []).append(sae)
    return out


def _arm(groups: Mapping, spec: ComparisonSpec, side: str) -> list[SAETables]:
    arm = getattr(spec, side)
    saes = groups.get((spec.dataset, arm.model, spec.layer, arm.sweep), [])
    if not saes:
        raise ValueError(f"comparison {spec.name}: no concept tables of {arm.model} in sweep {arm.sweep} on "
                         f"{spec.dataset} layer {spec.layer} among the inputs")  # fmt: skip
    return saes


def _units(saes: Sequence[SAETables], claim: int) -> list:
    stat = STATISTICS[claim]
    return [compare.SAEUnit(s.seed, s.l0, *stat.numden(s.table), s.cluster_F) for s in saes]


def _numden(claim: int, tables: Sequence[pd.DataFrame]) -> list:
    return [STATISTICS[claim].numden(t) for t in tables]


# --------------------------------------------------------------------------------------------
# The specification curve


def _kind(dataset_format: str) -> str:
    return TABLE_KIND[dataset_format]


class Relabeller:
    """Each SAE's label columns under each cell's thresholds, relabelled once for every comparison that uses
    them; the statistic's own rule (:attr:`findings.Statistic.rule`) turns them into its numerator and
    denominator."""

    def __init__(self, hierarchy=None) -> None:
        self.hierarchy = hierarchy
        self._cache: dict = {}
        self._frozen: dict = {}  # sae.key → its table held for relabelling (relabel.Frozen)

    def numden(
        self, sae: SAETables, kind: str, cell: int, rules, claim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        rules = relabel.only_what_decides(rules, kind, claim)
        key = (sae.key, rules)  # cells that differ only in thresholds the statistic ignores: one relabel
        if key not in self._cache:
            frozen = self._frozen.setdefault(sae.key, relabel.Frozen(sae.table))
            label_F, trait_F, animal_F = relabel.relabel_arrays(frozen, kind, rules, self.hierarchy)
            alive_F = frozen.memo(("live",), lambda: findings.live(sae.table))
            self._cache[key] = (alive_F, label_F, trait_F, animal_F)
        return STATISTICS[claim].rule(*self._cache[key])


def _numden_digest(*arms: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """A digest of every SAE's (num, den) masks: cells with equal digests get equal comparisons (the
    comparator's draws are fixed), so a threshold that does not touch a statistic costs no rerun."""
    h = hashlib.blake2b(digest_size=16)
    for arm in arms:
        h.update(b"|")
        for num, den in arm:
            h.update(
                np.packbits(np.asarray(num, bool)).tobytes()
                + b"/"
                + np.packbits(np.asarray(den, bool)).tobytes()
            )
            h.update(len(num).to_bytes(8, "little"))
    return h.digest()


def spec_curve(spec: ComparisonSpec, groups: Mapping, kind: str, base_rules, grid: Mapping[str, list],
               settings: ClaimSettings, relabeller: Relabeller, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """One row per cell of the grid: the cell's settings, Δ with its CI, over features and clusters."""
    fav, oth = _arm(groups, spec, "favoured"), _arm(groups, spec, "other")
    cells = relabel.grid_cells(base_rules, dict(grid))
    comparator = compare.Comparator(_units(fav, spec.claim), _units(oth, spec.claim), settings.primary_l0,
                                    n_boot=settings.spec_n_boot, seed=seed)  # fmt: skip
    if not comparator.ok:
        return pd.DataFrame([{"comparison": spec.name, "claim": spec.claim, "role": spec.role, "cell": 0,
                              "comparable": False}])  # fmt: skip
    rows = []
    done: dict[bytes, compare.Comparison] = {}  # cells that leave every (num, den) as it was: one run
    for i, (cell_settings, rules) in enumerate(cells):
        fav_nd = [relabeller.numden(s, kind, i, rules, spec.claim) for s in fav]
        oth_nd = [relabeller.numden(s, kind, i, rules, spec.claim) for s in oth]
        key = _numden_digest(fav_nd, oth_nd)
        if key not in done:
            done[key] = comparator.run(fav_nd, oth_nd)
        res = done[key]
        rows.append({"comparison": spec.name, "claim": spec.claim, "role": spec.role, "cell": i,
                     "comparable": True, "settings": json.dumps(cell_settings, sort_keys=True),
                     **{f"set_{k}": v for k, v in cell_settings.items()}, "l0": res.l0, "stat_favoured": res.stat_fav,
                     "stat_other": res.stat_other, "delta": res.delta, "ci_low": res.ci_low, "ci_high": res.ci_high,
                     "delta_clusters": res.delta_clusters, "agrees": bool(res.ci_low > 0)})  # fmt: skip
    return pd.DataFrame(rows)


def spec_tables(groups: Mapping, formats: Mapping[str, str], settings: ClaimSettings,
                base_rules: Mapping[str, object], seed: int, hierarchy=None) -> pd.DataFrame:  # fmt: skip
    """The specification curve of every declared comparison (one frame, ``comparison`` column)."""
    relabeller = Relabeller(hierarchy)
    frames = []
    for spec in settings.comparisons:
        kind = _kind(formats[spec.dataset])
        frames.append(spec_curve(spec, groups, kind, base_rules[kind], settings.grid(kind), settings, relabeller,
                                 seed))  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=["comparison", "claim", "role", "cell", "comparable", "settings", "delta",
                                     "ci_low", "ci_high", "agrees"])  # fmt: skip
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# The claims table


def _perm_null(groups: Mapping, spec: ComparisonSpec, side: str, null_sweep: str | None) -> float:
    if null_sweep is None:
        return float("nan")
    saes = groups.get((spec.dataset, getattr(spec, side).model, spec.layer, null_sweep), [])
    if not saes:
        return float("nan")
    num, den = np.sum([[n.sum(), d.sum()] for n, d in _numden(spec.claim, [s.table for s in saes])], axis=0)
    return num / den if den else float("nan")


def _sweeps(c: ComparisonSpec) -> str:
    """The comparison's sweep, or both where the arms differ (the identity control)."""
    return c.favoured.sweep if c.favoured.sweep == c.other.sweep else f"{c.favoured.sweep} vs {c.other.sweep}"


def _architecture(*arms: Sequence[SAETables]) -> str:
    names = sorted({s.architecture for arm in arms for s in arm})
    return " / ".join(names)


@dataclass(frozen=True)
class BaselineCheck:
    """The baseline models' columns of one claims row (:data:`CLAIMS_COLUMNS` ``stat_baselines``,
    ``baseline_delta``, ``baseline_max``) and the state of the baseline rule: ``"applied"``, ``"off"`` (no
    baselines configured, a control row, or a row not comparable), ``"absent"`` (no baseline has SAEs in
    the sweep) or ``"unchecked"`` (a baseline's SAEs do not reach the row's L0); ``note`` says why."""

    columns: dict
    state: str
    note: str = ""
    other: str = ""  # the other model, for the reason


def baseline_check(groups: Mapping, settings: ClaimSettings, c: ComparisonSpec, res, seed: int = 0
                   ) -> BaselineCheck:  # fmt: skip
    """Each baseline of ``claims.baselines`` in the favoured model's place (module docstring): its statistic
    at the L0 of ``res`` (the row's matched comparison) against the other arm, and the largest Δ."""
    empty = {"stat_baselines": "", "baseline_delta": float("nan"), "baseline_max": ""}
    if not settings.baselines or c.role == "control" or not res.comparable:
        return BaselineCheck(empty, "off")
    sweep = c.favoured.sweep
    present = [b for b in settings.baselines if groups.get((c.dataset, b, c.layer, sweep))]
    if not present:
        return BaselineCheck(empty, "absent", f"No baseline model has SAEs in sweep {sweep}: the baseline "
                                              "rule was not applied.")  # fmt: skip
    oth = _units(_arm(groups, c, "other"), c.claim)
    stats_, deltas, missing = [], {}, []
    for b in present:
        units = _units(groups[(c.dataset, b, c.layer, sweep)], c.claim)
        # point estimates only: the fewest replicates the Comparator allows, the other arm's own values
        r = compare.Comparator(units, oth, float(res.l0), n_boot=2, seed=seed, n_perm=100,
                               names=(f"{b}@{sweep}", c.other.name)).run()  # fmt: skip
        if not r.comparable:
            stats_.append(f"{b}=not comparable")
            missing.append(b)
            continue
        stats_.append(f"{b}={r.stat_fav:.6g}")
        deltas[b] = float(r.delta)
    top = max(deltas, key=deltas.get) if deltas else ""
    cols = {"stat_baselines": "; ".join(stats_), "baseline_delta": deltas.get(top, float("nan")),
            "baseline_max": top}  # fmt: skip
    if missing:
        return BaselineCheck(cols, "unchecked", f"Baseline(s) {', '.join(missing)} of sweep {sweep} have no SAEs "
                                                f"around L0 {res.l0:.4g}: the baseline rule cannot be checked; "
                                                f"widen sweeps.{sweep}.", other=c.other.model)  # fmt: skip
    return BaselineCheck(cols, "applied", other=c.other.model)


def baseline_verdict(verdict: str, reason: str, ci_low: float, check: BaselineCheck) -> tuple[str, str]:
    """The baseline rule (module docstring) on the verdict of the other checks: only "supported" changes,
    to "not supported" (Δ's CI lower end ≤ the largest baseline Δ) or "inconclusive" (a baseline not
    comparable at the row's L0, and none that is rules the row out); a sweep without baselines keeps it,
    with a note in the reason."""
    if verdict != "supported" or check.state == "off":
        return verdict, reason
    if check.state == "absent":
        return verdict, f"{reason} {check.note}"
    delta_b, top = check.columns["baseline_delta"], check.columns["baseline_max"]
    if check.state == "unchecked" and not (np.isfinite(delta_b) and ci_low <= delta_b):
        return "inconclusive", check.note
    if not ci_low > delta_b:
        return "not supported", (
            f"Δ's 95% CI lower end {ci_low:.4g} does not exceed the largest baseline Δ {delta_b:.4g} "
            f"({top} − {check.other}): a baseline model lies as far above {check.other} as the favoured one."
        )
    return verdict, f"{reason} Largest baseline Δ {delta_b:.4g} ({top}) lies below the CI."


def claims_table(
    groups: Mapping,
    settings: ClaimSettings,
    spec: pd.DataFrame,
    seed: int = 0,
    quality: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per declared comparison (:data:`CLAIMS_COLUMNS`). ``quality`` (the sweeps' quality tables,
    :mod:`vitsae.analysis.quality`) gives each arm's mean seed stability and names the arms' SAEs that fail
    a quality check, in ``quality_failures`` and in the reason; the verdict does not change (a failing SAE
    is reported, never dropped)."""
    rules = compare.VerdictRules(settings.alpha, settings.min_seeds, settings.min_spec_agreement)
    rows, results, checks = [], [], []
    for c in settings.comparisons:
        fav, oth = _arm(groups, c, "favoured"), _arm(groups, c, "other")
        comparator = compare.Comparator(_units(fav, c.claim), _units(oth, c.claim), settings.primary_l0,
                                        n_boot=settings.n_boot, seed=seed, n_perm=settings.n_perm)  # fmt: skip
        res = comparator.run()
        # the random-image null at the same L0, with the same draws
        null = comparator.run(
            _numden(c.claim, [s.null for s in fav]), _numden(c.claim, [s.null for s in oth])
        )
        null = null if null.comparable else None
        cells = spec[(spec["comparison"] == c.name) & spec["comparable"].astype(bool)] if len(spec) else spec
        agreement = float(cells["agrees"].mean()) if len(cells) else float("nan")
        row = {"claim": c.claim, "comparison": c.name, "role": c.role, "statistic": c.statistic,
               "dataset": c.dataset, "layer": c.layer, "architecture": _architecture(fav, oth),
               "sweep": _sweeps(c),
               "favoured": c.favoured.model, "favoured_sweep": c.favoured.sweep, "other": c.other.model,
               "other_sweep": c.other.sweep, **_result_columns(res), "spec_cells": len(cells),
               "spec_agreement": agreement,
               "null_favoured": null.stat_fav if null is not None else float("nan"),
               "null_other": null.stat_other if null is not None else float("nan"),
               "perm_null_favoured": _perm_null(groups, c, "favoured", settings.null_sweep),
               "perm_null_other": _perm_null(groups, c, "other", settings.null_sweep),
               **_quality_columns(quality, c)}  # fmt: skip
        check = baseline_check(groups, settings, c, res, seed)
        row.update(check.columns)
        checks.append(check)
        rows.append(row)
        results.append(res)
    out = pd.DataFrame(rows).reindex(columns=CLAIMS_COLUMNS)
    if not len(out):
        return out
    out["p_holm"] = out["p_perm"]
    for claim in (1, 2):
        sec = (out["claim"] == claim) & (out["role"] == "secondary")
        if sec.any():
            out.loc[sec, "p_holm"] = compare.holm(out.loc[sec, "p_perm"].to_numpy(dtype=float))
    verdicts, reasons = [], []
    for i, res in enumerate(results):
        agreement = float(out.at[i, "spec_agreement"])
        verdict, reason = compare.verdict(res, float(out.at[i, "p_holm"]), agreement, rules)
        verdict, reason = baseline_verdict(verdict, reason, float(res.ci_low), checks[i])
        if not res.comparable:
            reason = f"{reason} {_sweep_hint(settings.comparisons[i])}"
        failures = out.at[i, "quality_failures"]
        if isinstance(failures, str) and failures not in ("", "not checked"):
            reason = f"{reason} Quality warning: {failures}."
        verdicts.append(verdict)
        reasons.append(reason)
    return out.assign(verdict=verdicts, reason=reasons)


def transfer_rows(transfer: pd.DataFrame, matched: pd.DataFrame, downstream: pd.DataFrame | None,
                  formats: Mapping[str, str], margin: float, min_accuracy: float) -> pd.DataFrame:  # fmt: skip
    """Finding 3's rows of the claims table, one per (model, layer, sweep, source → target).

    ``transfer``: the transfer table with each evaluation's ``gap`` at matched L0
    (:func:`vitsae.analysis.transfer.matched_gaps`); ``matched``: its per-setting summary (seed spread,
    baselines); ``downstream``: the downstream accuracies. Per seed the gap is averaged over the sweep's
    settings; Δ is the mean over seeds with a 95% t-interval (n − 1 df). The rule, declared before any
    number was seen (config ``transfer``): **supported** when the CI's upper end lies below
    ``limit`` = the target's seed-to-seed FVU spread + ``margin`` *and* the transferred SAEs' mean accuracy
    recovered reaches ``min_accuracy``; **not supported** when the CI's lower end lies above ``limit`` or the
    accuracy's CI lies below ``min_accuracy``; **not comparable** when a transferred SAE's L0 lies beyond
    the frontier's reach; **inconclusive** otherwise (one seed, an undefined accuracy, a CI across
    ``limit``). Role: primary for ImageNet → iNat (the paper's direction), secondary otherwise."""
    from vitsae.analysis.matched import t_interval

    rows = []
    moved = transfer[~transfer["in_domain"].astype(bool)]
    keys = ["model", "layer", "sweep", "train_dataset", "eval_dataset"]
    for key, d in moved.groupby(keys, sort=True):
        model, layer, sweep, source, target = key
        per_seed = d.groupby("seed")["gap"].mean()
        delta, lo, hi = t_interval(per_seed.to_numpy())
        n = int(np.isfinite(per_seed.to_numpy()).sum())
        m = matched[(matched["model"] == model) & (matched["layer"] == layer) & (matched["sweep"] == sweep)
                    & (matched["train_dataset"] == source) & (matched["eval_dataset"] == target)]  # fmt: skip
        limit = float(m["seed_spread"].mean()) + margin if len(m) else float("nan")
        acc = pd.Series(dtype=float)
        if downstream is not None and len(downstream):
            dd = downstream[(downstream["model"] == model) & (downstream["layer"] == layer)
                            & (downstream["sweep"] == sweep) & (downstream["train_dataset"] == source)
                            & (downstream["eval_dataset"] == target)]  # fmt: skip
            acc = dd.groupby("seed")["accuracy_recovered"].mean()
        a, alo, ahi = t_interval(acc.to_numpy()) if len(acc) else (float("nan"),) * 3
        own = transfer[transfer["in_domain"].astype(bool) & (transfer["model"] == model) & (transfer["layer"] == layer)
                       & (transfer["sweep"] == sweep) & (transfer["eval_dataset"] == target)]  # fmt: skip
        if d["gap"].isna().any():
            far = d.loc[d["gap"].isna(), "extrapolation"].max()
            verdict, reason = (
                "not comparable",
                (
                    f"a transferred SAE's L0 on {target} lies {far:.2f} log2 units outside the L0 range of {target}'s "
                    "own SAEs (more than transfer.max_extrapolation): sweep more sparsities on the target"
                ),
            )
        elif not np.isfinite(lo):
            verdict, reason = "inconclusive", f"gap {delta:+.4f} from one seed: no interval; train more seeds"
        elif lo > limit:
            verdict, reason = (
                "not supported",
                (
                    f"gap {delta:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] lies above the seed spread + margin {limit:.4f}"
                ),
            )
        elif np.isfinite(ahi) and ahi < min_accuracy:
            verdict, reason = (
                "not supported",
                (f"accuracy recovered {a:.3f}, 95% CI [{alo:.3f}, {ahi:.3f}] lies below {min_accuracy}"),
            )
        elif hi < limit and np.isfinite(a) and a >= min_accuracy:
            verdict, reason = (
                "supported",
                (
                    f"gap {delta:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] below the seed spread + margin {limit:.4f}; "
                    f"accuracy recovered {a:.3f} >= {min_accuracy}"
                ),
            )
        else:
            why = (
                "accuracy recovered is undefined (the layer does not matter to the probe)"
                if not np.isfinite(a)
                else f"accuracy recovered {a:.3f} (min {min_accuracy})"
            )
            verdict, reason = (
                "inconclusive",
                (
                    f"gap {delta:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] against the seed spread + margin {limit:.4f}; {why}"
                ),
            )
        rows.append({
            "claim": 3, "comparison": f"transfer {source} → {target} ({model}, layer {layer}, {sweep})",
            "role": "primary" if (formats.get(source), formats.get(target)) == ("imagenet", "inat2021") else "secondary",
            "statistic": TRANSFER_STATISTIC, "dataset": target, "layer": layer,
            "architecture": "+".join(sorted({str(i).split("-")[0] for i in d["sae_id"]})), "sweep": sweep,
            "favoured": model, "favoured_sweep": sweep, "other": model, "other_sweep": sweep,
            "primary_l0": float(d["l0"].mean()), "n_seeds_favoured": n, "n_seeds_other": int(own["seed"].nunique()),
            "stat_favoured": float(d["fvu"].mean()), "stat_other": float(d["frontier_fvu"].mean()),
            "delta": delta, "ci_low": lo, "ci_high": hi,
            "se": float(per_seed.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
            "df": n - 1 if n > 1 else float("nan"), "limit": limit, "accuracy_recovered": a, "accuracy_ci_low": alo,
            "accuracy_ci_high": ahi,
            "baseline_pca_fvu": float(m["pca_fvu"].mean()) if len(m) else float("nan"),
            "baseline_recentred_fvu": float(m["recentred_fvu"].mean()) if len(m) else float("nan"),
            "verdict": verdict, "reason": reason,
        })  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=CLAIMS_COLUMNS)


def transfer_claims_chart(rows: pd.DataFrame) -> alt.Chart:
    """Finding 3's rows: the gap at matched L0 with its CI beside the limit (seed spread + margin)."""
    d = rows.copy()
    d["row"] = "claim 3 · " + d["comparison"] + " (" + d["role"] + ")"
    d["text"] = d["verdict"] + ": gap " + d["delta"].map("{:+.3f}".format) + ", accuracy recovered " + d[
        "accuracy_recovered"].map(lambda v: "undefined" if not np.isfinite(v) else f"{v:.2f}")  # fmt: skip
    color = alt.Color("verdict:N", scale=alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values())),
                      legend=None)  # fmt: skip
    y = alt.Y("row:N", title=None, axis=alt.Axis(labelLimit=520))
    base = alt.Chart(d).encode(y=y)
    forest = alt.layer(
        base.mark_rule(size=2).encode(x=alt.X("ci_low:Q", title="transfer gap at matched L0 (FVU; 95% CI); "
                                              "| = seed spread + margin"), x2="ci_high:Q", color=color),
        base.mark_point(filled=True, size=80).encode(x="delta:Q", color=color),
        base.mark_tick(color="black", thickness=2, size=16).encode(x="limit:Q"),
    ).properties(width=300, height=28 * len(d), title="Finding 3: an SAE transferred to another dataset")  # fmt: skip
    verdicts = base.mark_text(align="left", dx=4).encode(text="text:N", color=color, x=alt.value(0)).properties(
        width=260, height=28 * len(d), title="verdict (rule: README, finding 3)")  # fmt: skip
    return alt.hconcat(forest, verdicts)


def _quality_columns(quality: pd.DataFrame | None, c: ComparisonSpec) -> dict:
    """Each arm's mean seed stability and the arms' SAEs that fail a quality check (``""``: none; NaN and
    ``"not checked"`` without quality tables)."""
    if quality is None:
        return {
            "stability_favoured": float("nan"),
            "stability_other": float("nan"),
            "quality_failures": "not checked",
        }
    out, failing, n = {}, [], 0
    for side in ("favoured", "other"):
        arm = getattr(c, side)
        q = quality[(quality["dataset"] == c.dataset) & (quality["model"] == arm.model)
                    & (quality["layer"] == c.layer) & (quality["sweep"] == arm.sweep)]  # fmt: skip
        out[f"stability_{side}"] = float(q["stability"].mean()) if len(q) else float("nan")
        n += len(q)
        bad = q[q["failures"].fillna("").astype(str) != ""]
        failing += [f"{arm.model} {r.sae_id} ({r.failures})" for r in bad.itertuples()]
    out["quality_failures"] = f"{len(failing)} of {n} SAEs fail: {'; '.join(failing)}" if failing else ""
    return out


def _sweep_hint(c: ComparisonSpec) -> str:
    sweeps = sorted({c.favoured.sweep, c.other.sweep})
    return (f"Change the sparsity settings (l1_coeff or k) of sweeps.{' / sweeps.'.join(sweeps)} so that both "
            f"models' L0 ranges overlap, or claims.primary_l0.")  # fmt: skip


def _result_columns(res) -> dict:
    r = res.row()
    return {
        "primary_l0": r["l0"], "overlap_low": r["overlap_low"], "overlap_high": r["overlap_high"],
        "n_seeds_favoured": r["n_seeds_fav"], "n_seeds_other": r["n_seeds_other"], "stat_favoured": r["stat_fav"],
        "stat_other": r["stat_other"], "delta": r["delta"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
        "se": r["se"], "df": r["df"], "boot_low": r["boot_low"], "boot_high": r["boot_high"], "p_perm": r["p_perm"],
        "p_min": r["p_min"], "n_relabelings": r["n_relabelings"], "delta_clusters": r["delta_clusters"],
        "clusters_ci_low": r["clusters_ci_low"], "clusters_ci_high": r["clusters_ci_high"],
        "stat_favoured_clusters": r["stat_fav_clusters"], "stat_other_clusters": r["stat_other_clusters"],
    }  # fmt: skip


def delta_curves(groups: Mapping, settings: ClaimSettings, seed: int = 0) -> pd.DataFrame:
    """Δ with its CI at ``claims.curve_points`` log-spaced L0s across each comparison's overlap."""
    frames = []
    for c in settings.comparisons:
        fav, oth = _arm(groups, c, "favoured"), _arm(groups, c, "other")
        curve = compare.delta_curve(_units(fav, c.claim), _units(oth, c.claim), n_points=settings.curve_points,
                                    n_boot=settings.spec_n_boot, seed=seed)  # fmt: skip
        if len(curve):
            frames.append(pd.DataFrame(curve).assign(comparison=c.name, claim=c.claim, role=c.role))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------------------------
# Controls


def mcnemar_greater(up: int, down: int) -> float:
    """One-sided exact McNemar p: P(X >= up) for X ~ Binomial(up + down, 1/2) (1 when there are none)."""
    n = up + down
    return float(sps.binom.sf(up - 1, n, 0.5)) if n else 1.0


def _label_columns(table: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    names = findings.table_labels(table)
    cols = [(name, table["label"].to_numpy() == name) for name in names if name != "unclear"]
    if "purity_species" not in table.columns:  # ImageNet: trait is a column beside the label
        cols.append(("trait", table["trait"].fillna(False).astype(bool).to_numpy()))
    return cols


def controls_rows(kind: str, table: pd.DataFrame, null: pd.DataFrame) -> list[dict]:
    """Per (SAE group, label) of one concept table and its null: shares, discordant pairs, one-sided p."""
    rows = []
    for (d, m, layer, s), t in table.groupby(["dataset", "model", "layer", "sweep"], sort=True):
        n_ = null.loc[t.index]
        alive = findings.live(t)
        obs_cols, null_cols = dict(_label_columns(t)), dict(_label_columns(n_))
        for name, obs in obs_cols.items():
            o, z = obs[alive], null_cols[name][alive]
            up, down = int((o & ~z).sum()), int((~o & z).sum())
            n = int(alive.sum())
            rows.append({"kind": kind, "dataset": d, "model": m, "layer": int(layer), "sweep": s, "label": name,
                         "n_live": n, "count": int(o.sum()), "share": o.mean() if n else float("nan"),
                         "null_count": int(z.sum()), "null_share": z.mean() if n else float("nan"),
                         "discordant_up": up, "discordant_down": down, "p": mcnemar_greater(up, down)})  # fmt: skip
    return rows


def controls_table(observed: Sequence[tuple[str, str]], shuffled: Sequence[tuple[str, str]],
                   null_sweep: str | None, alpha: float) -> pd.DataFrame:  # fmt: skip
    """The controls table (module docstring) from (table, null table) path pairs: the observed tables
    (those of ``null_sweep`` are the ``permuted-dims`` kind) and the shuffled-labels ones."""
    rows = []
    for t_path, n_path in observed:
        t, n = pd.read_csv(t_path), pd.read_csv(n_path)
        if len(t) != len(n) or not (t["feature"].to_numpy() == n["feature"].to_numpy()).all():
            raise ValueError(f"{n_path} does not describe the features of {t_path}; rerun its concepts rule")
        kind = "permuted-dims" if null_sweep is not None and (t["sweep"] == null_sweep).all() else "observed"
        rows += controls_rows(kind, t, n)
    for t_path, n_path in shuffled:
        rows += controls_rows("shuffled-labels", pd.read_csv(t_path), pd.read_csv(n_path))
    out = pd.DataFrame(rows).reindex(columns=CONTROLS_COLUMNS)
    for kind, idx in out.groupby("kind").groups.items():
        out.loc[idx, "p_holm"] = compare.holm(out.loc[idx, "p"].to_numpy(dtype=float))
    out["above_null"] = (out["p_holm"] < alpha) & (out["share"] > out["null_share"])
    return out


# --------------------------------------------------------------------------------------------
# Figures

VERDICT_COLORS = {"supported": "#1a9850", "not supported": "#d73027", "inconclusive": "#fdae61",
                  "not comparable": "#999999"}  # fmt: skip


def _row_name(d: pd.DataFrame) -> pd.Series:
    return (
        "claim " + d["claim"].astype(str) + " · " + d["comparison"] + " (" + d["role"] + "): " + d["favoured"]
        + "@" + d["favoured_sweep"] + " − " + d["other"] + "@" + d["other_sweep"] + " · " + d["dataset"]
    )  # fmt: skip


def claims_chart(claims: pd.DataFrame, curves: pd.DataFrame, title: str, note: str) -> alt.TopLevelMixin:
    """Forest plot of Δ (features: filled, with CI; clusters: hollow) coloured by verdict; Δ across the L0
    overlap per comparison; each arm's statistic at the primary L0 beside its two nulls."""
    if not len(claims):
        return alt.Chart(pd.DataFrame({"t": ["no comparisons declared (claims.comparisons)"]})).mark_text(
            size=14).encode(text="t:N").properties(title=charts.title(title, note), width=400, height=60)  # fmt: skip
    d = claims.copy()
    d["row"] = _row_name(d)
    d["text"] = d["verdict"] + ": Δ " + d["delta"].map("{:+.3f}".format) + " [" + d["ci_low"].map(
        "{:+.3f}".format) + ", " + d["ci_high"].map("{:+.3f}".format) + "], p " + d["p_holm"].map("{:.3g}".format)  # fmt: skip
    order = list(d["row"])
    color = alt.Color(
        "verdict:N", scale=alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values()))
    )
    y = alt.Y("row:N", sort=order, title=None, axis=alt.Axis(labelLimit=520))
    base = alt.Chart(d).encode(y=y)
    forest = alt.layer(
        alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 3], color="black").encode(x="x:Q"),
        base.mark_rule(size=2).encode(
            x=alt.X("ci_low:Q", title="Δ = favoured − other at the primary L0 (95% CI)"),
            x2="ci_high:Q",
            color=color,
        ),
        base.mark_point(filled=True, size=80).encode(x="delta:Q", color=color),
        base.mark_point(filled=False, size=80, shape="diamond").encode(x="delta_clusters:Q", color=color),
        base.mark_tick(color="black", thickness=2, size=16).encode(x="baseline_delta:Q"),
    ).properties(
        width=300,
        height=28 * len(d),
        title="Δ over features (filled) and over clusters (hollow diamond); | = largest baseline Δ",
    )
    verdicts = base.mark_text(align="left", dx=4).encode(text="text:N", color=color, x=alt.value(0)).properties(
        width=260, height=28 * len(d), title="verdict (rule: config claims.verdict)")  # fmt: skip
    top = alt.hconcat(forest, verdicts)
    arms = pd.concat([
        pd.DataFrame({"row": d["row"], "arm": d["favoured"] + "@" + d["favoured_sweep"], "kind": kind, "value": d[col]})
        for kind, col in (("observed", "stat_favoured"), ("random-image null", "null_favoured"),
                          ("permuted-dims SAE", "perm_null_favoured"))
    ] + [
        pd.DataFrame({"row": d["row"], "arm": d["other"] + "@" + d["other_sweep"], "kind": kind, "value": d[col]})
        for kind, col in (("observed", "stat_other"), ("random-image null", "null_other"),
                          ("permuted-dims SAE", "perm_null_other"))
    ], ignore_index=True).dropna(subset=["value"])  # fmt: skip
    arms["arm_row"] = arms["row"].str.split(":").str[0] + " · " + arms["arm"]
    nulls = alt.Chart(arms).mark_point(size=70, filled=True).encode(
        y=alt.Y("arm_row:N", title=None, axis=alt.Axis(labelLimit=420)),
        x=alt.X("value:Q", title="statistic at the primary L0 (permuted-dims: pooled)"),
        shape=alt.Shape("kind:N", legend=None),
        color=alt.Color("kind:N", title="each arm against its nulls",
                        scale=alt.Scale(domain=["observed", "random-image null", "permuted-dims SAE"],
                                        range=["#1f78b4", "#999999", "#6a3d9a"])),
    ).properties(width=300, height=16 * max(1, arms["arm_row"].nunique()))  # fmt: skip
    parts = [top, nulls]
    if len(curves):
        cv = curves.merge(d[["comparison", "row"]], on="comparison")
        band = alt.Chart(cv).encode(
            x=alt.X("l0:Q", scale=alt.Scale(type="log", nice=False, zero=False), title="L0 (log)")
        )
        curve = alt.layer(
            band.mark_area(opacity=0.25).encode(y=alt.Y("ci_low:Q", title="Δ (95% CI)"), y2="ci_high:Q"),
            band.mark_line().encode(y="delta:Q"),
            band.mark_rule(strokeDash=[4, 3], color="black").encode(y=alt.datum(0)),
        ).properties(width=170, height=120).facet(
            facet=alt.Facet("comparison:N", title="Δ across the overlap of both arms' L0 ranges"), columns=4
        ).resolve_scale(x="independent", y="independent")  # fmt: skip
        parts.append(curve)
    return (
        alt.vconcat(*parts)
        .resolve_scale(color="independent", shape="independent")
        .properties(title=charts.title(title, note))
    )


#: Above this many cells a comparison's specification curve draws one mark per run of neighbouring cells:
#: per-cell marks made the demo's figure (4,374 ImageNet cells, 9 thresholds) an 88 MB PDF that pypdf refuses to read.
MAX_CELL_MARKS = 120


def _binned(d: pd.DataFrame, n_bins: int) -> pd.DataFrame:
    """Cells sorted by Δ (``rank`` 1..n) in ``n_bins`` runs: per run the median Δ, the lowest CI end and
    the highest, whether most of its cells agree; ``attrs["settings"]``: per run and threshold value the
    share of its cells that use it."""
    d = d.assign(bin=(d["rank"].to_numpy() - 1) * n_bins // len(d))
    out = d.groupby("bin").agg(delta=("delta", "median"), ci_low=("ci_low", "min"), ci_high=("ci_high", "max"),
                               agrees=("agrees", "mean")).reset_index()  # fmt: skip
    out = out.assign(rank=out["bin"] + 1, agrees=out["agrees"] >= 0.5)
    keys = [c for c in d.columns if c.startswith("set_") and d[c].nunique() > 1]
    if keys:
        m = d.melt(id_vars=["bin"], value_vars=keys, var_name="threshold", value_name="value")
        m["setting"] = m["threshold"].str[4:] + " = " + m["value"].astype(str)
        m = m.groupby(["bin", "setting"]).size().rename("n").reset_index()
        m["share"] = m["n"] / m["bin"].map(d.groupby("bin").size())
        out.attrs["settings"] = m.assign(rank=m["bin"] + 1)[["rank", "setting", "share"]]
    return out


def spec_chart(spec: pd.DataFrame, title: str, note: str, width: int = 720) -> alt.TopLevelMixin:
    """Per comparison: the cells sorted by Δ with their CIs (CI above 0: orange) and beneath them which
    threshold values each cell uses (a black mark)."""
    panels = []
    comparable = spec[spec["comparable"].astype(bool)] if len(spec) else spec
    for name, d in comparable.groupby("comparison", sort=False):
        d = d.sort_values("delta", kind="stable").assign(rank=np.arange(1, len(d) + 1))
        agree = d["agrees"].mean()
        head = f"{name} (claim {d['claim'].iloc[0]}, {d['role'].iloc[0]}): CI above 0 in {agree:.0%} of {len(d)} cells"
        n_cells = len(d)
        if n_cells > MAX_CELL_MARKS:  # one mark per run of neighbouring cells (sorted by Δ), not per cell
            d, per = _binned(d, MAX_CELL_MARKS), -(-n_cells // MAX_CELL_MARKS)
            head += f" (each mark: {per} neighbouring cells; median Δ, widest CI, the settings' shares)"
        else:
            d = d.assign(agrees=d["agrees"].astype(bool))
        x = alt.X("rank:Q", title=None, scale=alt.Scale(domain=[0.5, len(d) + 0.5], nice=False),
                  axis=alt.Axis(labels=False, ticks=False, grid=False))  # fmt: skip
        agree_color = alt.Color("agrees:N", title="CI above 0", scale=alt.Scale(domain=[False, True],
                                range=["#555555", "#e66101"]))  # fmt: skip
        top = alt.layer(
            alt.Chart(d).mark_rule(opacity=0.5).encode(x=x, y=alt.Y("ci_low:Q", title="Δ (95% CI)"), y2="ci_high:Q",
                                                       color=agree_color),
            alt.Chart(d).mark_circle(size=8).encode(x=x, y="delta:Q", color=agree_color),
            alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[4, 3], color="black").encode(y="y:Q"),
        ).properties(width=width, height=130, title=alt.TitleParams(head, fontSize=11, anchor="start"))  # fmt: skip
        keys = (
            [c for c in d.columns if c.startswith("set_") and d[c].nunique() > 1] if "share" not in d else []
        )
        m = d.attrs.get("settings")
        if keys or m is not None:
            if m is None:
                m = d.melt(id_vars=["rank"], value_vars=keys, var_name="threshold", value_name="value")
                m["setting"] = m["threshold"].str[4:] + " = " + m["value"].astype(str)
                m["share"] = 1.0
            bottom = alt.Chart(m).mark_tick(thickness=1).encode(
                x=alt.X("rank:Q", title="cells, sorted by Δ", scale=alt.Scale(domain=[0.5, len(d) + 0.5], nice=False),
                        axis=alt.Axis(labels=False, ticks=False, grid=False)),
                y=alt.Y("setting:N", title=None, sort=sorted(m["setting"].unique())),
                color=alt.Color("share:Q", scale=alt.Scale(domain=[0, 1], range=["#dddddd", "black"]), legend=None),
            ).properties(width=width, height=10 * m["setting"].nunique())  # fmt: skip
            panels.append(alt.vconcat(top, bottom, spacing=2))
        else:
            panels.append(top)
    if not panels:
        return alt.Chart(pd.DataFrame({"t": ["no comparable comparisons"]})).mark_text(size=14).encode(
            text="t:N").properties(title=charts.title(title, note), width=400, height=60)  # fmt: skip
    return alt.vconcat(*panels).properties(title=charts.title(title, note))


# --------------------------------------------------------------------------------------------
# The rules' work


def _hierarchy(formats: Mapping[str, str], settings: ClaimSettings):
    if any(TABLE_KIND[formats[c.dataset]] == "imagenet" for c in settings.comparisons):
        from vitsae.analysis.wordnet import load_hierarchy

        return load_hierarchy()
    return None


def write_spec_curve(tables, nulls, evals, cfgs, clusters, formats: Mapping[str, str], settings: ClaimSettings,
                     rules: Mapping[str, dict], out_csv, out_pdf, title: str, note: str, seed: int) -> pd.DataFrame:  # fmt: skip
    groups = load_tables(tables, nulls, evals, cfgs, clusters)
    base = {kind: RULES[kind](**r) for kind, r in rules.items()}
    spec = spec_tables(groups, formats, settings, base, seed, _hierarchy(formats, settings))
    atomic_write(out_csv, lambda p: spec.to_csv(p, index=False, float_format="%.6g"))
    charts.save(spec_chart(spec, title, note), out_pdf)
    return spec


def add_ratings(claims: pd.DataFrame, precision: pd.DataFrame | None) -> pd.DataFrame:
    """Findings 1 and 2's rows with the human-rated precision of the label they count (:data:`CLAIM_LABELS`)
    for each arm's model on the row's dataset (:func:`vitsae.analysis.ratings.claim_columns`): empty where
    nothing was rated. The rating sample is drawn per model, so a control arm (another sweep of one model)
    gets that model's precision."""
    from vitsae.analysis.ratings import claim_columns

    out = claims.copy()
    out["rated_label"] = out["rated_label"].astype(object)
    for i, row in out.iterrows():
        label = CLAIM_LABELS.get(int(row["claim"])) if pd.notna(row["claim"]) else None
        if label is None or precision is None:
            continue
        cols = claim_columns(precision, row["dataset"], label, row["favoured"], row["other"])
        out.loc[i, "rated_label"] = label
        for k, v in cols.items():
            out.loc[i, k] = v
    return out


def write_claims(tables, nulls, evals, cfgs, clusters, spec_csv, settings: ClaimSettings, out_csv, out_pdf,
                 title: str, note: str, seed: int, quality: Sequence[str] = (), transfer: Mapping | None = None,
                 ratings: str | os.PathLike | None = None) -> pd.DataFrame:  # fmt: skip
    """The claims table and figure; ``transfer`` (finding 3): ``{"table", "matched", "downstream"}`` CSV
    paths and ``{"formats", "margin", "min_accuracy"}`` (:func:`transfer_rows`); ``ratings``: the ratings
    table (rule ratings), whose precision columns :func:`add_ratings` puts beside findings 1 and 2."""
    groups = load_tables(tables, nulls, evals, cfgs, clusters)
    spec = pd.read_csv(spec_csv)
    q = pd.concat([pd.read_csv(p) for p in quality]) if quality else None
    claims = claims_table(groups, settings, spec, seed, q)
    if len(claims):
        claims = add_ratings(claims, pd.read_csv(ratings) if ratings is not None else None)
    curves = delta_curves(groups, settings, seed)
    chart = claims_chart(claims, curves, title, note)
    if transfer is not None:
        try:
            down = pd.read_csv(transfer["downstream"])
        except pd.errors.EmptyDataError:  # a run with no downstream tables
            down = None
        rows = transfer_rows(pd.read_csv(transfer["table"]), pd.read_csv(transfer["matched"]), down,
                             transfer["formats"], transfer["margin"], transfer["min_accuracy"])  # fmt: skip
        if len(rows):
            claims = pd.concat([claims, rows], ignore_index=True) if len(claims) else rows
            chart = alt.vconcat(chart, transfer_claims_chart(rows)).resolve_scale(color="independent")
    atomic_write(out_csv, lambda p: claims.to_csv(p, index=False, float_format="%.6g"))
    charts.save(chart, out_pdf)
    return claims


def write_controls(tables, nulls, shuffled, shuffled_nulls, null_sweep, alpha, out_csv) -> pd.DataFrame:
    out = controls_table(list(zip(tables, nulls, strict=True)), list(zip(shuffled, shuffled_nulls, strict=True)),
                         null_sweep, alpha)  # fmt: skip
    atomic_write(out_csv, lambda p: out.to_csv(p, index=False, float_format="%.6g"))
    return out
