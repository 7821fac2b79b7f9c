"""Finding 3 at the label level: do an SAE's features fire on the other dataset, and keep their label there?

An SAE trained on one dataset (the *source*) is read on another dataset's store (the *target*): rule
``feature_stats_on_<sweep>`` computes its feature statistics on the target's features split
(:func:`vitsae.analysis.stats.sweep_feature_stats`) and rule ``concepts_on_<sweep>`` labels its features
with the target's concept table: the target's manifest, format, thumbnails and rules
(:func:`vitsae.analysis.concept_tables.sweep_concept_tables`). This module compares, feature by feature,
the source's concept table of the SAE with the target's.

Definitions (per SAE and (source, target) pair)
-----------------------------------------------
* **Alive** on a dataset: the feature fires (> 0) on at least one token of the split, i.e. the statistics'
  ``n_active_tokens > 0``, which the concept tables carry as ``frequency`` (``n_active_tokens`` over the
  split's tokens). Each feature is alive on ``both`` datasets, on the source only, on the target only, or
  on neither; ``alive_both_share`` is the share of the features alive on the source that are alive on the
  target too.
* **Survives**: the feature's label on the target is the same kind of concept as its label on the source.
  Tables of one format compare labels directly; across formats a pair ``(imagenet_label, inat_label)`` of
  ``label_map`` (:attr:`vitsae.analysis.settings.TransferSettings.label_map`) makes the two labels the same
  kind, in both directions (ImageNet → iNat: ``(source, target)`` is a pair; iNat → ImageNet:
  ``(target, source)`` is). A label that no pair names (iNat's ``trait`` by default) never survives a
  change of format; ``unclear`` never survives.
* **Eligible**: alive on both, with a source label other than ``unclear``. A feature dead on the target
  is counted as alive on the source only (``n_source_only``), never as eligible, so never as surviving.
* **Share surviving** (``share``): ``n_surviving / n_eligible``; its 95% CI from ``n_boot`` resamples of
  the eligible features with replacement (:func:`vitsae.analysis.findings.bootstrap_counts`, seeded by
  ``[seed, row, 1]``; percentiles).
* **Null**: the target labels permuted among the eligible features (``n_null`` draws, the ``d``-th from
  ``default_rng([seed, row, 0])``): the share surviving when a feature's label on the target has nothing to
  do with its label on the source while each dataset's mix of labels is kept. ``null_mean``, the null's
  central 95% (``null_low``, ``null_high``) and ``p``, one-sided: ``(1 + #{null >= share}) / (1 + n_null)``.
  ``row`` is the SAE's position in the table (rows sorted by direction, model, layer, sweep, SAE id).
* **Summary over seeds** (``level`` = ``setting``): the SAEs of one setting (the SAE id less its seed,
  :func:`vitsae.sae.settings.split_seed`) pooled: counts summed, ``share`` = summed survivors over summed
  eligible features; its CI from the ``b``-th resample of every SAE summed (each SAE's features resampled
  apart), its null from the ``d``-th permutation of every SAE summed (so ``p`` tests the pooled share);
  ``share_seed_min`` and ``share_seed_max`` give the spread over seeds.

Outputs (:func:`write_transfer_labels`): ``out_csv`` (:data:`COLUMNS`; ``transitions`` lists the eligible
features' ``source label→target label:count`` pairs, commonest first) and ``out_pdf``: per direction, the
share surviving of each setting (filled, with CI; each seed hollow) beside its null (black tick, grey rule:
the null's 95%), and the share of source-alive features alive on the target.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from vitsae.analysis import charts, concepts
from vitsae.analysis.findings import bootstrap_counts, percentile_ci
from vitsae.analysis.settings import TABLE_KIND
from vitsae.atomic import atomic_write
from vitsae.sae.settings import split_seed

KIND_LABELS = {"imagenet": concepts.IMAGENET_LABELS, "inat": concepts.INAT_LABELS}
PLACE = ("source_dataset", "target_dataset", "model", "layer", "sweep")
COLUMNS = [
    "level", *PLACE, "setting", "seed", "sae_id", "n_seeds", "source_format", "target_format", "n_features",
    "n_alive_source", "n_alive_target", "n_alive_both", "n_source_only", "n_target_only", "n_dead",
    "alive_both_share", "n_eligible", "n_surviving", "share", "ci_low", "ci_high", "null_mean", "null_low",
    "null_high", "p", "share_seed_min", "share_seed_max", "n_null", "n_boot", "transitions",
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Arrays


def _kind(dataset_format: str) -> str:
    kind = TABLE_KIND.get(dataset_format)
    if kind is None:
        raise ValueError(
            f"no concept table for dataset format {dataset_format!r}; known: {sorted(TABLE_KIND)}"
        )
    return kind


def check_label_map(label_map: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``label_map`` as pairs ``(imagenet_label, inat_label)`` of known labels; else an error naming the key."""
    pairs = tuple((str(a), str(b)) for a, b in label_map)
    for a, b in pairs:
        for label, kind in ((a, "imagenet"), (b, "inat")):
            if label not in KIND_LABELS[kind] or label == "unclear":
                raise ValueError(f"transfer.label_map: {label!r} is no {kind} label a feature can keep; "
                                 f"known: {[x for x in KIND_LABELS[kind] if x != 'unclear']}")  # fmt: skip
    return pairs


def survives(source_label_N: np.ndarray, target_label_N: np.ndarray, source_format: str, target_format: str,
             label_map: Sequence[tuple[str, str]]) -> np.ndarray:  # fmt: skip
    """Per feature: is its label on the target the same kind of concept as on the source? Same table kind:
    equal labels; ImageNet → iNat: ``(source, target)`` in ``label_map``; iNat → ImageNet: ``(target,
    source)`` in it. ``unclear`` never survives."""
    src = np.asarray(source_label_N).astype(str)
    tgt = np.asarray(target_label_N).astype(str)
    if src.shape != tgt.shape:
        raise ValueError(f"{src.shape[0]} source labels but {tgt.shape[0]} target labels")
    kinds = (_kind(source_format), _kind(target_format))
    if kinds[0] == kinds[1]:
        same = src == tgt
    else:
        pairs = set(check_label_map(label_map))
        if kinds == ("inat", "imagenet"):
            pairs = {(b, a) for a, b in pairs}
        same = np.array([(s, t) in pairs for s, t in zip(src, tgt)], dtype=bool)
    return same & (src != "unclear")


def permuted_survivors(survive_LM: np.ndarray, source_code_N: np.ndarray, target_code_N: np.ndarray,
                       n_null: int, seed: int | Sequence[int], block_elems: int = 1 << 22) -> np.ndarray:  # fmt: skip
    """``[n_null]`` survivor counts with the target codes permuted among the features: draw ``d`` is row
    ``d`` of ``default_rng(seed).permuted`` applied to blocks of tiled codes (rows of at most
    ``block_elems`` numbers). ``survive_LM[s, t]``: does source code ``s`` survive as target code ``t``."""
    n = len(source_code_N)
    out_D = np.zeros(n_null, dtype=np.int64)
    if n == 0 or n_null == 0:
        return out_D
    rng = np.random.default_rng(seed)
    rows = max(1, block_elems // n)
    for start in range(0, n_null, rows):
        b = min(rows, n_null - start)
        perm_bN = rng.permuted(np.broadcast_to(target_code_N, (b, n)), axis=1)
        out_D[start : start + b] = survive_LM[source_code_N[None, :], perm_bN].sum(axis=1)
    return out_D


@dataclass
class Survival:
    """One SAE moved from source to target: its counts, observed survivors, and the draws behind its CI
    (``boot_B``: survivors per resample of the eligible features) and null (``null_D``: per permutation)."""

    counts: dict
    n_eligible: int
    n_surviving: int
    boot_B: np.ndarray
    null_D: np.ndarray
    transitions: Counter

    def row(self) -> dict:
        return {**self.counts, **_stats(self.n_surviving, self.n_eligible, self.boot_B, self.null_D),
                "transitions": _transitions(self.transitions)}  # fmt: skip


def _share(num: float, den: float) -> float:
    return num / den if den else float("nan")


def _stats(n_surviving: int, n_eligible: int, boot_B: np.ndarray, null_D: np.ndarray) -> dict:
    share = _share(n_surviving, n_eligible)
    out = {"n_eligible": n_eligible, "n_surviving": n_surviving, "share": share, "ci_low": float("nan"),
           "ci_high": float("nan"), "null_mean": float("nan"), "null_low": float("nan"), "null_high": float("nan"),
           "p": float("nan"), "n_null": len(null_D), "n_boot": len(boot_B)}  # fmt: skip
    if n_eligible == 0:
        return out
    if len(boot_B):
        out["ci_low"], out["ci_high"] = percentile_ci(boot_B / n_eligible)
    if len(null_D):
        null = null_D / n_eligible
        out["null_mean"] = float(null.mean())
        out["null_low"], out["null_high"] = percentile_ci(null)
        out["p"] = float((1 + (null_D >= n_surviving).sum()) / (1 + len(null_D)))
    return out


def _transitions(counter: Counter) -> str:
    return ";".join(f"{s}→{t}:{c}" for (s, t), c in sorted(counter.items(), key=lambda x: (-x[1], x[0])))


def survival(source_label_N: np.ndarray, target_label_N: np.ndarray, alive_source_N: np.ndarray,
             alive_target_N: np.ndarray, source_format: str, target_format: str,
             label_map: Sequence[tuple[str, str]], n_null: int = 1000, n_boot: int = 1000,
             seed: int | Sequence[int] = 0) -> Survival:  # fmt: skip
    """The moved SAE's counts (alive on source / target / both), its eligible and surviving features, the
    bootstrap resamples (seed ``[*seed, 1]``) and the permutation null (seed ``[*seed, 0]``)."""
    alive_s, alive_t = np.asarray(alive_source_N, bool), np.asarray(alive_target_N, bool)
    src, tgt = np.asarray(source_label_N).astype(str), np.asarray(target_label_N).astype(str)
    if not (len(alive_s) == len(alive_t) == len(src) == len(tgt)):
        raise ValueError("source and target tables describe different numbers of features")
    both = alive_s & alive_t
    eligible = both & (src != "unclear")
    survive_N = survives(src, tgt, source_format, target_format, label_map)
    n_s = int(alive_s.sum())
    counts = {"n_features": len(src), "n_alive_source": n_s, "n_alive_target": int(alive_t.sum()),
              "n_alive_both": int(both.sum()), "n_source_only": int((alive_s & ~alive_t).sum()),
              "n_target_only": int((~alive_s & alive_t).sum()), "n_dead": int((~alive_s & ~alive_t).sum()),
              "alive_both_share": _share(int(both.sum()), n_s)}  # fmt: skip
    seed = [int(x) for x in np.atleast_1d(seed)]
    src_e, tgt_e, surv_e = src[eligible], tgt[eligible], survive_N[eligible]
    boot_B = (
        bootstrap_counts(np.where(surv_e, 0, 1), 2, n_boot, [*seed, 1])[:, 0] if len(src_e) else np.zeros(0)
    )
    s_names, s_code = np.unique(src_e, return_inverse=True)
    t_names, t_code = np.unique(tgt_e, return_inverse=True)
    grid_s, grid_t = np.meshgrid(s_names, t_names, indexing="ij")
    survive_LM = survives(grid_s.ravel(), grid_t.ravel(), source_format, target_format, label_map).reshape(
        grid_s.shape
    )
    null_D = permuted_survivors(survive_LM, s_code, t_code, n_null, [*seed, 0])
    return Survival(counts, int(eligible.sum()), int(surv_e.sum()), boot_B, null_D,
                    Counter(zip(src_e.tolist(), tgt_e.tolist())))  # fmt: skip


def pooled(parts: Sequence[Survival]) -> dict:
    """The summary row of SAEs pooled (module docstring): counts summed, the ``b``-th resample and the
    ``d``-th permutation of every SAE summed; ``share_seed_min``/``max`` over the SAEs."""
    counts = {k: sum(p.counts[k] for p in parts) for k in parts[0].counts if k != "alive_both_share"}
    counts["alive_both_share"] = _share(counts["n_alive_both"], counts["n_alive_source"])
    n_boot = min(len(p.boot_B) for p in parts if p.n_eligible) if any(p.n_eligible for p in parts) else 0
    boot_B = sum((p.boot_B[:n_boot] for p in parts if p.n_eligible), np.zeros(n_boot, dtype=np.int64))
    null_D = sum((p.null_D for p in parts), np.zeros(len(parts[0].null_D), dtype=np.int64))
    shares = [_share(p.n_surviving, p.n_eligible) for p in parts]
    finite = [s for s in shares if np.isfinite(s)]
    stats = _stats(sum(p.n_surviving for p in parts), sum(p.n_eligible for p in parts), boot_B, null_D)
    return {**counts, **stats, "transitions": _transitions(sum((p.transitions for p in parts), Counter())),
            "share_seed_min": min(finite) if finite else float("nan"),
            "share_seed_max": max(finite) if finite else float("nan")}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class Moved:
    """One SAE's concept table on its own dataset (``source``) and on another (``target``), aligned by
    feature: columns ``feature``, ``label``, ``alive``."""

    source_dataset: str
    target_dataset: str
    model: str
    layer: int
    sweep: str
    sae_id: str
    source_format: str
    target_format: str
    source: pd.DataFrame
    target: pd.DataFrame

    @property
    def sort_key(self) -> tuple:
        return (self.source_dataset, self.target_dataset, self.model, self.layer, self.sweep, self.sae_id)


def _read(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concept table {path} does not exist; run the concepts rule that writes it")
    table = pd.read_csv(path)
    missing = [c for c in ("sae_id", "dataset", "model", "layer", "sweep", "feature", "label", "frequency")
               if c not in table.columns]  # fmt: skip
    if missing:
        raise KeyError(
            f"concept table {path} has no column {missing}; rerun the concepts rule that writes it"
        )
    return table


def _features(rows: pd.DataFrame) -> pd.DataFrame:
    """feature, label, alive (``frequency > 0``: fires on at least one token), sorted by feature."""
    out = rows[["feature", "label"]].copy()
    out["alive"] = rows["frequency"].fillna(0).to_numpy() > 0
    return out.sort_values("feature").reset_index(drop=True)


def _key(rows: pd.DataFrame, sae_id: str) -> tuple[str, str, int, str, str]:
    first = rows.iloc[0]
    return (str(first["dataset"]), str(first["model"]), int(first["layer"]), str(first["sweep"]), str(sae_id))


def moved_saes(source_tables: Sequence[str | os.PathLike], target_tables: Sequence[str | os.PathLike],
               targets: Sequence[str], formats: Mapping[str, str]) -> list[Moved]:  # fmt: skip
    """One :class:`Moved` per SAE of each target table (``targets[i]``: the dataset ``target_tables[i]``
    was computed on), found in the source tables by its place (dataset, model, layer, sweep, SAE id) as the
    tables' columns say it; ``formats``: dataset → format."""
    by_key = {}
    for path in source_tables:
        table = _read(path)
        for sae_id, rows in table.groupby("sae_id", sort=False):
            by_key[_key(rows, sae_id)] = _features(rows)
    moved = []
    for path, target in zip(target_tables, targets, strict=True):
        table = _read(path)
        for sae_id, rows in table.groupby("sae_id", sort=False):
            key = _key(rows, sae_id)
            if key[0] == target:
                raise ValueError(f"{path}: the SAE {'/'.join(map(str, key))} was trained on {target}, the "
                                 "dataset this table should describe another's SAEs on")  # fmt: skip
            if key not in by_key:
                raise FileNotFoundError(f"{path}: no concept table of SAE {'/'.join(map(str, key))} on its own "
                                        "dataset among the inputs; rule transfer_labels must list it")  # fmt: skip
            source, tgt = by_key[key], _features(rows)
            if not np.array_equal(source["feature"].to_numpy(), tgt["feature"].to_numpy()):
                raise ValueError(f"{path}: SAE {'/'.join(map(str, key))} has other features than in its source "
                                 "table; rerun rule concepts_on for it")  # fmt: skip
            for name, dataset in (("source", key[0]), ("target", target)):
                if dataset not in formats:
                    raise KeyError(
                        f"dataset {dataset!r} ({name} of {path}) has no format among {sorted(formats)}"
                    )
            moved.append(Moved(key[0], target, key[1], key[2], key[3], key[4], formats[key[0]], formats[target],
                               source, tgt))  # fmt: skip
    return sorted(moved, key=lambda m: m.sort_key)


def transfer_labels_table(moved: Sequence[Moved], label_map: Sequence[tuple[str, str]], n_null: int = 1000,
                          n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """One row per moved SAE (``level`` sae) and per setting pooled over its seeds (``level`` setting), in
    :data:`COLUMNS`; row ``i`` of the SAE rows draws from seed ``[seed, i]``."""
    label_map = check_label_map(label_map)
    rows, groups = [], {}
    for i, m in enumerate(moved):
        setting, sae_seed = split_seed(m.sae_id)
        s = survival(m.source["label"].to_numpy(), m.target["label"].to_numpy(), m.source["alive"].to_numpy(),
                     m.target["alive"].to_numpy(), m.source_format, m.target_format, label_map, n_null, n_boot,
                     [seed, i])  # fmt: skip
        place = {"source_dataset": m.source_dataset, "target_dataset": m.target_dataset, "model": m.model,
                 "layer": m.layer, "sweep": m.sweep, "setting": setting,
                 "source_format": m.source_format, "target_format": m.target_format}  # fmt: skip
        share = _share(s.n_surviving, s.n_eligible)
        rows.append({"level": "sae", **place, "seed": sae_seed, "sae_id": m.sae_id, "n_seeds": 1, **s.row(),
                     "share_seed_min": share, "share_seed_max": share})  # fmt: skip
        groups.setdefault(tuple(place.values()), (place, []))[1].append(s)
    for place, parts in groups.values():
        rows.append({"level": "setting", **place, "seed": None, "sae_id": None, "n_seeds": len(parts),
                     **pooled(parts)})  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["seed"] = table["seed"].astype("Int64")
    return table


# --------------------------------------------------------------------------------------------
# Figure


def _panel_data(table: pd.DataFrame) -> pd.DataFrame:
    d = table.copy()
    d["direction"] = d["source_dataset"] + " → " + d["target_dataset"]
    many = d.groupby("model")[["layer", "sweep"]].nunique().max().max() > 1 if len(d) else False
    d["where"] = d["model"] + (" · layer " + d["layer"].astype(str) + " · " + d["sweep"] if many else "")
    return d


def transfer_labels_chart(table: pd.DataFrame, title: str, note: str = "") -> alt.Chart:
    """Per direction (one column each: xOffset does not survive a facet), the share surviving of each
    setting (filled, with its CI) and of each seed (hollow) beside the null (black tick: its mean; grey bar:
    its central 95%); beneath, the share of source-alive features alive on the target."""
    d = _panel_data(table)
    if d.empty:
        text = alt.Chart(pd.DataFrame({"t": ["no SAE has a concept table on another dataset"]}))
        return text.mark_text().encode(text="t:N").properties(title=charts.title(title, note))
    shares, alives = [], []
    for direction, g in d.groupby("direction", sort=True):
        pooled_g, seeds_g = g[g["level"] == "setting"], g[g["level"] == "sae"]
        width = 110 * g["where"].nunique()
        x = alt.X("where:N", title=None, axis=alt.Axis(labelAngle=0))
        off, color = alt.XOffset("setting:N"), alt.Color("setting:N", title="setting")
        tip = ["where", "setting", "sae_id", alt.Tooltip("share:Q", format=".3f"), "n_surviving", "n_eligible",
               alt.Tooltip("null_mean:Q", format=".3f"), alt.Tooltip("p:Q", format=".3g")]  # fmt: skip
        top = alt.Chart(pooled_g).encode(x=x, xOffset=off)
        y = alt.Y("share:Q", title="share of labelled features keeping it", scale=alt.Scale(zero=True))
        shares.append(alt.layer(
            top.mark_bar(width=14, opacity=0.35).encode(y="null_low:Q", y2="null_high:Q", color=alt.value("#888")),
            top.mark_tick(thickness=2, size=18).encode(y="null_mean:Q", color=alt.value("black")),
            top.mark_rule(strokeWidth=2).encode(y="ci_low:Q", y2="ci_high:Q", color=color),
            top.mark_point(filled=True, size=70, opacity=1).encode(y=y, color=color, tooltip=tip),
            alt.Chart(seeds_g).mark_point(filled=False, size=40).encode(
                x=x, xOffset=off, color=color, y="share:Q", tooltip=tip),
        ).properties(width=width, height=200, title=alt.TitleParams(direction, fontSize=11)))  # fmt: skip
        alive_tip = ["where", "setting", "sae_id", "n_alive_source", "n_alive_both",
                     alt.Tooltip("alive_both_share:Q", format=".3f")]  # fmt: skip
        alives.append(alt.layer(
            alt.Chart(pooled_g).mark_bar(opacity=0.7).encode(
                x=x, xOffset=off, color=color, tooltip=alive_tip,
                y=alt.Y("alive_both_share:Q", title="alive on target / alive on source",
                        scale=alt.Scale(domain=[0, 1]))),
            alt.Chart(seeds_g).mark_point(filled=False, size=30).encode(
                x=x, xOffset=off, y="alive_both_share:Q", color=alt.value("black"), tooltip=alive_tip),
        ).properties(width=width, height=120, title=alt.TitleParams(direction, fontSize=11)))  # fmt: skip
    return alt.vconcat(
        alt.hconcat(*shares).resolve_scale(y="shared").properties(title=alt.TitleParams([
            "Labels kept on the other dataset, among features alive on both with a label",
            "(filled: setting, seeds pooled, 95% CI; hollow: each seed; black tick: permutation null, grey: its 95%)",
        ], fontSize=11)),
        alt.hconcat(*alives).properties(title=alt.TitleParams(
            "Features alive on the source that fire on the target (bar: setting; circle: each seed)", fontSize=11)),
    ).properties(title=charts.title(title, note)).configure_legend(orient="bottom")  # fmt: skip


def write_transfer_labels(moved: Sequence[Moved], out_pdf: str | os.PathLike, out_csv: str | os.PathLike,
                          label_map: Sequence[tuple[str, str]], title: str = "", note: str = "",
                          n_null: int = 1000, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Write the table (``out_csv``) and the figure (``out_pdf``; any suffix altair saves); return the table."""
    table = transfer_labels_table(moved, label_map, n_null, n_boot, seed)
    atomic_write(out_csv, lambda p: table.to_csv(p, index=False, float_format="%.6g"))
    charts.save(transfer_labels_chart(table, title, note), out_pdf)
    return table


def write_all(source_tables: Sequence[str], target_tables: Sequence[str], targets: Sequence[str],
              formats: Mapping[str, str], label_map: Sequence[tuple[str, str]], out_pdf: str, out_csv: str,
              title: str, note: str, n_null: int, n_boot: int, seed: int) -> pd.DataFrame:  # fmt: skip
    """Rule transfer_labels: every SAE of the target tables (``targets[i]``: the dataset of
    ``target_tables[i]``) against its own dataset's table."""
    moved = moved_saes(source_tables, target_tables, targets, formats)
    return write_transfer_labels(moved, out_pdf, out_csv, label_map, title, note, n_null, n_boot, seed)
