"""Finding 3 at the feature level: do SAEs trained on two datasets learn the same decoder directions?

For two SAEs of one model and layer, A (``F`` features) and B (``G``), on their decoder rows
(``W_dec_FD``, :func:`vitsae.sae.checkpoint.load`) normalised to unit length:

* **best cosine** per feature, both ways: ``best_ab_F[f] = max_g cos(a_f, b_g)`` and ``best_ba_G``
  (signed cosine: features are non-negative, so a flipped direction is another feature). Computed in
  blocks of ``block`` rows of A, in float32: O(F·G·D) time, O(block·G) memory.
* **one-to-one matching**: the assignment of A's features to distinct features of B that maximises the
  summed cosine (Hungarian method, ``scipy.optimize.linear_sum_assignment``, ``min(F, G)`` pairs).
  Cost: a dense float64 ``F × G`` matrix (12k × 12k: 1.2 GB) and roughly cubic time (measured here:
  1k × 1k 0.12 s, 3k × 3k 0.9 s on one core; ``bench/feature_match.py``: 12k × 12k 20.6 s; well-separated
  matches, as between trained SAEs, are the easy case). Pairs larger than ``max_match`` features on
  either side are matched on the ``max_match`` features of A (and of B) with the highest best cosine,
  an approximation the table flags (``matched_subset``).
* Only **live** features count when a features table is given (:mod:`vitsae.analysis.stats`
  ``features.parquet``: ``n_active_tokens > 0``): a dead feature keeps its random initial direction.

Kinds of pairs (:func:`plan_pairs`, from SAEs of one model, layer, sweep and setting):

* ``cross``: datasets differ, seeds differ (different data, different initialisation);
* ``cross-same-seed``: datasets differ, same seed. The trainer draws ``W_dec`` from the spec's seed
  (:meth:`vitsae.sae.train.Stack.initialise`), so these share their initial directions: an upper bound of
  ``cross``, not evidence by itself;
* ``ceiling``: same dataset, different seeds (what retraining alone changes);
* ``floor``: A against as many random unit directions (Gaussian, ``default_rng([seed, i])`` for the
  ``i``-th floor pair) of the same dimension as A has live features: what chance gives in ``D``
  dimensions (about ``sqrt(2 ln G / D)`` for the best of ``G``).

Outputs (:func:`write_transfer_features`): ``out_csv`` one row per pair (:data:`COLUMNS`): per direction
mean and median best cosine and the share of features above each threshold (default 0.7 and 0.9), and
the matched mean/median cosine and share above 0.9; ``out_pdf`` the cumulative distributions of best
cosine (A→B) and of matched cosine per kind, one panel row per (model, layer, setting).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from vitsae.analysis import charts
from vitsae.atomic import atomic_write
from vitsae.sae import checkpoint
from vitsae.sae.settings import split_seed

KINDS = ("cross", "cross-same-seed", "ceiling", "floor")
THRESHOLDS = (0.7, 0.9)


# --------------------------------------------------------------------------------------------
# Arrays


def unit_rows(W_FD: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    W_FD = np.asarray(W_FD, dtype=np.float32)
    norm_F = np.linalg.norm(W_FD, axis=1, keepdims=True)
    return np.divide(W_FD, norm_F, out=np.zeros_like(W_FD), where=norm_F > 0)


def random_directions(n: int, d: int, seed: int | Sequence[int] = 0) -> np.ndarray:
    """``[n, d]`` unit vectors, uniform on the sphere (normalised Gaussians), seeded."""
    return unit_rows(np.random.default_rng(seed).standard_normal((n, d)))


@dataclass(frozen=True)
class BestMatch:
    best_ab_F: np.ndarray  # max cosine of each row of A over B
    arg_ab_F: np.ndarray
    best_ba_G: np.ndarray
    arg_ba_G: np.ndarray


def best_cosines(U_a_FD: np.ndarray, U_b_GD: np.ndarray, block: int = 4096) -> BestMatch:
    """Best cosine both ways between unit rows, in blocks of ``block`` rows of A (ties: smaller index)."""
    if U_a_FD.shape[1] != U_b_GD.shape[1]:
        raise ValueError(f"decoder dimensions differ: {U_a_FD.shape[1]} vs {U_b_GD.shape[1]}; "
                         "compare SAEs of the same model and layer")  # fmt: skip
    n_a, n_b = U_a_FD.shape[0], U_b_GD.shape[0]
    if n_a == 0 or n_b == 0:
        raise ValueError(f"nothing to compare: {n_a} and {n_b} directions")
    best_ab = np.empty(n_a, np.float32)
    arg_ab = np.empty(n_a, np.int64)
    best_ba = np.full(n_b, -np.inf, np.float32)
    arg_ba = np.zeros(n_b, np.int64)
    for s in range(0, n_a, block):
        cos_bG = U_a_FD[s : s + block] @ U_b_GD.T
        arg_ab[s : s + block] = cos_bG.argmax(axis=1)
        best_ab[s : s + block] = cos_bG[np.arange(cos_bG.shape[0]), arg_ab[s : s + block]]
        col_arg = cos_bG.argmax(axis=0)
        col_best = cos_bG[col_arg, np.arange(n_b)]
        better = col_best > best_ba  # strict: an earlier block keeps ties
        best_ba[better], arg_ba[better] = col_best[better], s + col_arg[better]
    return BestMatch(best_ab, arg_ab, best_ba, arg_ba)


def one_to_one(U_a_FD: np.ndarray, U_b_GD: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The maximum-total-cosine matching of rows of A to distinct rows of B (``min(F, G)`` pairs):
    ``(rows_M, cols_M, cos_M)`` with rows ascending."""
    from scipy.optimize import linear_sum_assignment

    cos_FG = U_a_FD.astype(np.float64) @ U_b_GD.astype(np.float64).T
    rows, cols = linear_sum_assignment(cos_FG, maximize=True)
    return rows, cols, cos_FG[rows, cols]


def compare(U_a_FD: np.ndarray, U_b_GD: np.ndarray, thresholds: Sequence[float] = THRESHOLDS,
            match: bool = True, max_match: int = 16384, block: int = 4096) -> tuple[dict, BestMatch, np.ndarray]:  # fmt: skip
    """Summary statistics (the table's columns, see :data:`COLUMNS`), the best matches and the matched
    cosines (empty without ``match``) of two sets of unit directions."""
    bm = best_cosines(U_a_FD, U_b_GD, block)
    out: dict = {"n_a": int(U_a_FD.shape[0]), "n_b": int(U_b_GD.shape[0])}
    for name, best in (("ab", bm.best_ab_F), ("ba", bm.best_ba_G)):
        out[f"mean_best_{name}"] = float(best.mean())
        out[f"median_best_{name}"] = float(np.median(best))
        for t in thresholds:
            out[f"share_{name}_above_{t:g}"] = float((best >= t).mean())
    matched = np.zeros(0)
    out["matched_subset"] = False
    if match:
        ia, ib = np.arange(U_a_FD.shape[0]), np.arange(U_b_GD.shape[0])
        if len(ia) > max_match or len(ib) > max_match:
            ia = np.sort(np.argsort(-bm.best_ab_F, kind="stable")[:max_match])
            ib = np.sort(np.argsort(-bm.best_ba_G, kind="stable")[:max_match])
            out["matched_subset"] = True
        _, _, matched = one_to_one(U_a_FD[ia], U_b_GD[ib])
        out["n_matched"] = len(matched)
        out["matched_mean"] = float(matched.mean())
        out["matched_median"] = float(np.median(matched))
        out[f"matched_share_above_{max(thresholds):g}"] = float((matched >= max(thresholds)).mean())
    return out, bm, matched


# --------------------------------------------------------------------------------------------
# SAEs and pairs


@dataclass(frozen=True)
class DecoderRef:
    """One SAE checkpoint and its place; ``features``: its ``features.parquet`` (live features only)."""

    path: Path
    dataset: str
    model: str
    layer: int
    sweep: str
    sae_id: str
    features: Path | None = None

    @property
    def setting(self) -> str:
        return split_seed(self.sae_id)[0]

    @property
    def seed(self) -> int | None:
        return split_seed(self.sae_id)[1]

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.model}/layer{self.layer}/{self.sweep}/{self.sae_id}"


def decoder_ref(path: str | os.PathLike, features: str | os.PathLike | None = None) -> DecoderRef:
    """A :class:`DecoderRef` of the SAE in a directory (or named by a file in it), its place read from
    the ``cfg.json`` there."""
    cfg = checkpoint.read_cfg(path)
    meta = cfg["meta"]
    return DecoderRef(Path(path), str(meta["dataset"]), str(meta["model"]), int(meta["layer"]), str(meta["sweep"]),
                      str(cfg["sae_id"]), None if features is None else Path(features))  # fmt: skip


@dataclass(frozen=True)
class Pair:
    kind: str
    a: DecoderRef
    b: DecoderRef | None  # None for a floor pair

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"pair kind {self.kind!r} is not one of {KINDS}")
        if (self.b is None) != (self.kind == "floor"):
            raise ValueError(f"a {self.kind} pair {'needs no' if self.b is None else 'needs a'} second SAE")


def plan_pairs(refs: Sequence[DecoderRef], floors: bool = True) -> list[Pair]:
    """Every pair of the module docstring among SAEs of one (model, layer, sweep, setting); a floor for
    each SAE that is the ``a`` of a cross pair (or of a ceiling pair when there is none)."""
    groups: dict[tuple, list[DecoderRef]] = {}
    for r in refs:
        groups.setdefault((r.model, r.layer, r.sweep, r.setting), []).append(r)
    pairs: list[Pair] = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda r: (r.dataset, r.seed if r.seed is not None else -1, r.sae_id))
        for a, b in itertools.combinations(group, 2):
            if a.dataset != b.dataset:
                pairs.append(Pair("cross" if a.seed != b.seed else "cross-same-seed", a, b))
            elif a.seed != b.seed:
                pairs.append(Pair("ceiling", a, b))
    if floors:
        firsts = {p.a.name: p.a for p in pairs if p.kind in ("cross", "cross-same-seed")}
        if not firsts:
            firsts = {p.a.name: p.a for p in pairs}
        pairs += [Pair("floor", a, None) for _, a in sorted(firsts.items())]
    return pairs


def load_directions(ref: DecoderRef) -> np.ndarray:
    """Unit decoder rows of the SAE's live features (all features without a features table)."""
    W_FD = checkpoint.load(ref.path).W_dec_FD.detach().cpu().numpy()
    if ref.features is None:
        return unit_rows(W_FD)
    feats = pd.read_parquet(ref.features)
    if len(feats) != W_FD.shape[0] or "n_active_tokens" not in feats.columns:
        raise ValueError(f"features table {ref.features} has {len(feats)} rows (needs n_active_tokens per "
                         f"feature) but SAE {ref.path} has {W_FD.shape[0]} features; pass the SAE's own statistics")  # fmt: skip
    return unit_rows(W_FD[feats.sort_values("feature")["n_active_tokens"].to_numpy() > 0])


COLUMNS = [
    "kind", "model", "layer", "sweep", "setting", "dataset_a", "sae_a", "seed_a", "dataset_b", "sae_b", "seed_b",
    "n_a", "n_b", "mean_best_ab", "median_best_ab", "share_ab_above_0.7", "share_ab_above_0.9", "mean_best_ba",
    "median_best_ba", "share_ba_above_0.7", "share_ba_above_0.9", "n_matched", "matched_mean", "matched_median",
    "matched_share_above_0.9", "matched_subset",
]  # fmt: skip


def pair_table(pairs: Sequence[Pair], seed: int = 0, thresholds: Sequence[float] = THRESHOLDS,
               match: bool = True, max_match: int = 16384,
               load: Callable[[DecoderRef], np.ndarray] = load_directions,
               ) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """(one row per pair, the cumulative distributions for the figure). ``load`` gives unit directions
    of a reference (tests pass arrays)."""
    if not pairs:
        raise ValueError("no SAE pairs to compare: the sweep needs two datasets or two seeds of a setting")
    cache: dict[str, np.ndarray] = {}

    def get(ref: DecoderRef) -> np.ndarray:
        if ref.name not in cache:
            cache[ref.name] = load(ref)
        return cache[ref.name]

    rows, curves = [], []
    n_floor = 0
    for pair in pairs:
        U_a = get(pair.a)
        if pair.b is None:
            U_b = random_directions(U_a.shape[0], U_a.shape[1], [seed, n_floor])
            n_floor += 1
        else:
            U_b = get(pair.b)
        summary, bm, matched = compare(U_a, U_b, thresholds, match, max_match)
        b = pair.b
        row = {"kind": pair.kind, "model": pair.a.model, "layer": pair.a.layer, "sweep": pair.a.sweep,
               "setting": pair.a.setting, "dataset_a": pair.a.dataset, "sae_a": pair.a.sae_id,
               "seed_a": pair.a.seed, "dataset_b": b.dataset if b else "random", "sae_b": b.sae_id if b else "random",
               "seed_b": b.seed if b else None, **summary}  # fmt: skip
        rows.append(row)
        label = f"{pair.a.dataset}/s{pair.a.seed} → " + (f"{b.dataset}/s{b.seed}" if b else "random")
        for measure, values in (("best cosine, A → B", bm.best_ab_F), ("one-to-one matched cosine", matched)):
            if len(values):
                curves.append(_ecdf(values).assign(measure=measure, kind=pair.kind, pair=label,
                                                   panel=f"{pair.a.model} · layer {pair.a.layer} · {pair.a.setting}"))  # fmt: skip
    table = pd.DataFrame(rows)
    table = table.reindex(columns=list(dict.fromkeys([*COLUMNS, *table.columns])))
    return table, pd.concat(curves, ignore_index=True)


def _ecdf(values: np.ndarray, points: int = 101) -> pd.DataFrame:
    """The empirical CDF at ``points`` quantile levels (enough for a line; keeps the PDF small)."""
    level = np.linspace(0, 1, points)
    return pd.DataFrame({"cosine": np.quantile(np.asarray(values, np.float64), level), "cdf": level})


def transfer_features_chart(curves: pd.DataFrame, title: str, note: str = "") -> alt.Chart:
    kinds = [k for k in KINDS if k in set(curves["kind"])]
    chart = alt.Chart(curves).mark_line(opacity=0.85).encode(
        x=alt.X("cosine:Q", title="cosine", scale=alt.Scale(domain=[-0.1, 1.0], clamp=True)),
        y=alt.Y("cdf:Q", title="share of features with at most this cosine"),
        color=alt.Color("kind:N", sort=kinds, title="pair",
                        scale=alt.Scale(domain=list(KINDS), range=["#d62728", "#ff9896", "#1f77b4", "#7f7f7f"])),
        strokeDash=alt.StrokeDash("kind:N", sort=kinds, title="pair",
                                  scale=alt.Scale(domain=list(KINDS), range=[[1, 0], [4, 2], [1, 0], [2, 2]])),
        detail="pair:N",
        tooltip=["pair", "kind", alt.Tooltip("cosine:Q", format=".3f"), alt.Tooltip("cdf:Q", format=".2f")],
    ).properties(width=260, height=180)  # fmt: skip
    return chart.facet(
        row=alt.Row("panel:N", title=None), column=alt.Column("measure:N", title=None)
    ).properties(title=charts.title(title, note))


def write_transfer_features(pairs: Sequence[Pair], out_pdf: str | os.PathLike, out_csv: str | os.PathLike,
                            title: str = "", note: str = "", seed: int = 0, thresholds: Sequence[float] = THRESHOLDS,
                            match: bool = True, max_match: int = 16384,
                            load: Callable[[DecoderRef], np.ndarray] = load_directions) -> pd.DataFrame:  # fmt: skip
    """Compare every pair, write the table (``out_csv``) and the figure (``out_pdf``; .pdf/.png/.svg)."""
    table, curves = pair_table(pairs, seed, thresholds, match, max_match, load)
    atomic_write(out_csv, lambda p: table.to_csv(p, index=False, float_format="%.6g"))
    charts.save(transfer_features_chart(curves, title, note), out_pdf)
    return table


def write_all(sae_files: Sequence[str], stats_dirs: Sequence[str], out_pdf: str, out_csv: str, title: str, note: str,
              seed: int) -> pd.DataFrame:  # fmt: skip
    """The rule's work: decoder directions of every SAE (its place from its ``cfg.json``) matched across
    datasets, against seeds (ceiling) and random directions (floor), over the live features of each SAE
    (its own statistics)."""
    refs = [decoder_ref(f, Path(d) / "features.parquet") for f, d in zip(sae_files, stats_dirs, strict=True)]
    return write_transfer_features(plan_pairs(refs), out_pdf, out_csv, title, note, seed)
