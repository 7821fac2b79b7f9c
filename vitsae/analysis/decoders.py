"""Finding 3 at the feature level: do SAEs trained on two datasets learn the same decoder directions?

For two SAEs of one model and layer, A (``F`` features) and B (``G``), on their decoder rows
(``W_dec``, :func:`vitsae.sae.files.read_decoder`) normalised to unit length:

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
  ``cross``, not evidence by itself (it can sit above the ceiling);
* ``ceiling``: same dataset, different seeds (what retraining alone changes);
* ``floor-isotropic``: A against ``floor_draws`` random unit directions, uniform on the sphere: what chance
  gives in ``D`` dimensions (about ``sqrt(2 ln G / D)`` for the best of ``G``). Activations are strongly
  anisotropic and decoder rows follow them, so this floor is too low to test anything: any two SAEs of one
  model sit far above it;
* ``floor-covariance``: A against ``floor_draws`` random directions drawn from ``N(0, Σ_B)`` and normalised,
  ``Σ_B`` the *centred* covariance of the training tokens (of the SAEs' token kind) of B's dataset
  (:func:`data_covariance`). The random directions stand in for B's decoder, so they take B's data: they
  have the second moments of B's activations and nothing else. Centred, because an SAE reconstructs
  ``x − b_dec`` (``b_dec`` near the data mean): decoder rows are directions around the mean, and the
  uncentred second moment would put most draws along the mean itself. One covariance floor per dataset B
  that A is compared with across datasets. "cross above the covariance floor" is what says that two SAEs
  share directions beyond what the data's covariance alone gives.

Both floors of one A draw the same standard normals (``default_rng([seed, i])`` for the ``i``-th SAE
with floors) and the covariance floor maps them through the symmetric square root of ``Σ``: with an
isotropic ``Σ`` the two floors are the same directions. ``floor_draws`` is fixed (the config's
``transfer.floor_draws``), not B's number of live features: the best of ``G`` grows like ``sqrt(ln G)``,
so a floor of 4096 draws stands for a B of 12k features within about 6% of its value (isotropic case);
on the demo (B with 1.8k live features) 4096 draws raise the covariance floor by about 0.015. ``Σ`` comes
from at most ``max_tokens`` (200k) tokens of the store's training split, once per store and token kind.

Uncertainty (:func:`seed_pair_ci`): per kind and (model, layer, sweep, setting), pooling every seed pair
of that kind (with two datasets, the paper's case, one dataset pair; a ceiling pools both datasets), the
mean of a per-pair statistic with a 95% interval over the seed pairs: Student's t-interval with three or
more pairs, the min–max range of the two values with two pairs (``ci_method`` ``range``: no interval a
t-distribution with one degree of freedom gives is of use), none with one. The figure's bands are the same
interval at each quantile level of the curves.

Outputs (:func:`write_transfer_features`): ``out_csv`` one row per pair (:data:`COLUMNS`): per direction
mean and median best cosine and the share of features above each threshold (default 0.7 and 0.9), the
matched mean/median cosine and share above 0.9, the covariance floors' sample (``cov_tokens``) and
effective dimension (``cov_effective_dim`` = (tr Σ)² / tr Σ², ``D`` for isotropic data), and per kind the
pooled statistics of :data:`CI_STATS` with their interval (``*_kind_mean``, ``*_ci_low``, ``*_ci_high``,
``n_pairs``, ``ci_method``); ``out_pdf`` per (model, layer, setting) the cumulative distributions of best
cosine (A→B) and of matched cosine per kind (mean curve over seed pairs, band: interval), and the mean
best cosine per kind with its interval and each seed pair, with the pair kinds explained beneath.
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
from vitsae.analysis.moments import DataCovariance, data_covariance
from vitsae.atomic import atomic_write
from vitsae.data.store import open_store
from vitsae.sae import files
from vitsae.sae.settings import split_seed

KINDS = ("cross", "cross-same-seed", "ceiling", "floor-isotropic", "floor-covariance")
FLOORS = ("floor-isotropic", "floor-covariance")
#: What each kind of pair is, as the figure's legend says it (A → B: A's features looked up in B).
KIND_LABELS = {
    "cross": "cross: other dataset, other seed",
    "cross-same-seed": "cross-same-seed: other dataset, same seed (same initial decoder)",
    "ceiling": "ceiling: same dataset, other seed",
    "floor-isotropic": "floor, isotropic: random unit directions",
    "floor-covariance": "floor, covariance: random directions with B's activation covariance",
}
THRESHOLDS = (0.7, 0.9)
#: Per-pair statistics pooled over the seed pairs of a kind, with a 95% interval.
CI_STATS = ("mean_best_ab", "share_ab_above_0.9", "matched_mean")


# --------------------------------------------------------------------------------------------
# Arrays


def unit_rows(W_FD: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    W_FD = np.asarray(W_FD, dtype=np.float32)
    norm_F = np.linalg.norm(W_FD, axis=1, keepdims=True)
    return np.divide(W_FD, norm_F, out=np.zeros_like(W_FD), where=norm_F > 0)


def random_directions(
    n: int, d: int, seed: int | Sequence[int] = 0, cov_DD: np.ndarray | None = None
) -> np.ndarray:
    """``[n, d]`` unit vectors, seeded: normalised standard normals (uniform on the sphere) or, with
    ``cov_DD``, the same normals mapped through the symmetric square root of ``cov_DD`` (draws from
    ``N(0, cov_DD)``), normalised. A covariance proportional to the identity gives the isotropic draws."""
    z_ND = np.random.default_rng(seed).standard_normal((n, d))
    if cov_DD is not None:
        cov_DD = np.asarray(cov_DD, dtype=np.float64)
        if cov_DD.shape != (d, d):
            raise ValueError(f"covariance of shape {cov_DD.shape} for directions of dimension {d}")
        eig_D, V_DD = np.linalg.eigh(cov_DD)
        z_ND = z_ND @ ((V_DD * np.sqrt(np.clip(eig_D, 0, None))) @ V_DD.T)
    return unit_rows(z_ND)


def store_key(store: str | os.PathLike) -> tuple[str, str, int]:
    """(dataset, model, layer) of a store, from its attrs."""
    attrs = dict(open_store(store).attrs)
    model = attrs["model"]["name"] if isinstance(attrs["model"], dict) else attrs["model"]
    return str(attrs["dataset"]), str(model), int(attrs["layer"])


def seed_pair_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, str]:
    """(mean, low, high, method) of per-seed-pair values: Student's t-interval at ``level`` with three or
    more values (``t95``), the min–max range with two (``range``), no interval (NaN) with one (``single``)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan"), "none"
    mean = float(v.mean())
    if len(v) == 1:
        return mean, float("nan"), float("nan"), "single"
    if len(v) == 2:
        return mean, float(v.min()), float(v.max()), "range"
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half, f"t{round(100 * level)}"


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
    """One SAE checkpoint and its place; ``features``: its ``features.parquet`` (live features only);
    ``token_kind`` and ``split``: the tokens it was trained on."""

    path: Path
    dataset: str
    model: str
    layer: int
    sweep: str
    sae_id: str
    features: Path | None = None
    token_kind: str = "all"
    split: str = "train"

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
    cfg = files.read_cfg(path)
    meta = cfg["meta"]
    token_kind = cfg.get("token_kind") or cfg.get("hook", {}).get("tokens") or "all"
    return DecoderRef(Path(path), str(meta["dataset"]), str(meta["model"]), int(meta["layer"]), str(meta["sweep"]),
                      str(cfg["sae_id"]), None if features is None else Path(features), str(token_kind),
                      str(meta.get("split", "train")))  # fmt: skip


@dataclass(frozen=True)
class Pair:
    """SAE ``a`` against SAE ``b``, or (floors) against random directions; ``floor_dataset``: the dataset
    whose activation covariance shapes a covariance floor (the B it stands in for)."""

    kind: str
    a: DecoderRef
    b: DecoderRef | None  # None for a floor pair
    floor_dataset: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"pair kind {self.kind!r} is not one of {KINDS}")
        if (self.b is None) != (self.kind in FLOORS):
            raise ValueError(f"a {self.kind} pair {'needs no' if self.b is None else 'needs a'} second SAE")
        if (self.floor_dataset is None) == (self.kind == "floor-covariance"):
            raise ValueError(f"a {self.kind} pair {'needs' if self.floor_dataset is None else 'takes no'} "
                             "floor_dataset (the dataset whose covariance shapes the random directions)")  # fmt: skip


def plan_pairs(refs: Sequence[DecoderRef], floors: bool = True) -> list[Pair]:
    """Every pair of the module docstring among SAEs of one (model, layer, sweep, setting); floors for
    each SAE that is the ``a`` of a cross pair (or of a ceiling pair when there is none): one isotropic,
    and one covariance floor per dataset it is compared with (its own for a ceiling-only SAE)."""
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
        across = [p for p in pairs if p.kind in ("cross", "cross-same-seed")] or pairs
        partners: dict[str, tuple[DecoderRef, set[str]]] = {}
        for p in across:
            partners.setdefault(p.a.name, (p.a, set()))[1].add(p.b.dataset)
        for _, (a, datasets) in sorted(partners.items()):
            pairs.append(Pair("floor-isotropic", a, None))
            pairs += [Pair("floor-covariance", a, None, d) for d in sorted(datasets)]
    return pairs


def load_directions(ref: DecoderRef) -> np.ndarray:
    """Unit decoder rows of the SAE's live features (all features without a features table)."""
    W_FD = files.read_decoder(ref.path)
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
    "matched_share_above_0.9", "matched_subset", "cov_tokens", "cov_effective_dim", "n_pairs", "ci_method",
    *(f"{s}_{c}" for s in CI_STATS for c in ("kind_mean", "ci_low", "ci_high")),
]  # fmt: skip
#: The pooling of :func:`seed_pair_ci`: the seed pairs of one kind in one figure row.
GROUP = ["kind", "model", "layer", "sweep", "setting"]

#: ``covariance(ref, dataset)``: the activation covariance of ``dataset`` for SAEs like ``ref`` (model,
#: layer, token kind, split).
Covariance = Callable[[DecoderRef, str], DataCovariance]


def pair_table(pairs: Sequence[Pair], seed: int = 0, thresholds: Sequence[float] = THRESHOLDS,
               match: bool = True, max_match: int = 16384,
               load: Callable[[DecoderRef], np.ndarray] = load_directions,
               covariance: Covariance | None = None, floor_draws: int = 4096,
               ) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """(one row per pair with its kind's pooled statistics, the cumulative distributions for the figure).
    ``load`` gives unit directions of a reference and ``covariance`` the data covariance of a
    covariance floor (tests pass arrays)."""
    if not pairs:
        raise ValueError("no SAE pairs to compare: the sweep needs two datasets or two seeds of a setting")
    if covariance is None and any(p.kind == "floor-covariance" for p in pairs):
        raise ValueError(
            "covariance floors need the activation covariance: pass covariance= (the rule's stores)"
        )
    cache: dict[str, np.ndarray] = {}

    def get(ref: DecoderRef) -> np.ndarray:
        if ref.name not in cache:
            cache[ref.name] = load(ref)
        return cache[ref.name]

    floor_seed: dict[str, int] = {}  # one stream of normals per SAE with floors, shared by its floors
    rows, curves = [], []
    for pair in pairs:
        U_a = get(pair.a)
        b = pair.b
        row = {"kind": pair.kind, "model": pair.a.model, "layer": pair.a.layer, "sweep": pair.a.sweep,
               "setting": pair.a.setting, "dataset_a": pair.a.dataset, "sae_a": pair.a.sae_id, "seed_a": pair.a.seed,
               "dataset_b": b.dataset if b else (pair.floor_dataset or "random"),
               "sae_b": b.sae_id if b else pair.kind.replace("floor", "random"), "seed_b": b.seed if b else None}  # fmt: skip
        if b is None:
            i = floor_seed.setdefault(pair.a.name, len(floor_seed))
            cov = None
            if pair.kind == "floor-covariance":
                data = covariance(pair.a, pair.floor_dataset)
                cov = data.cov_DD
                row.update(cov_tokens=data.n, cov_effective_dim=data.effective_dim)
            U_b = random_directions(floor_draws, U_a.shape[1], [seed, i], cov)
        else:
            U_b = get(b)
        summary, bm, matched = compare(U_a, U_b, thresholds, match, max_match)
        rows.append({**row, **summary})
        label = f"{pair.a.dataset}/s{pair.a.seed} → " + (f"{b.dataset}/s{b.seed}" if b else row["sae_b"])
        for measure, values in (("best", bm.best_ab_F), ("matched", matched)):
            if len(values):
                curves.append(
                    _ecdf(values).assign(
                        measure=measure,
                        kind=pair.kind,
                        pair=label,
                        panel=_panel(pair.a.model, pair.a.layer, pair.a.sweep, pair.a.setting),
                    )
                )
    table = pd.DataFrame(rows)
    table = _with_ci(table)
    table = table.reindex(columns=list(dict.fromkeys([*COLUMNS, *table.columns])))
    return table, pd.concat(curves, ignore_index=True)


def _panel(model: str, layer: int, sweep: str, setting: str) -> str:
    """The figure row of a (model, layer, sweep, setting)."""
    return f"{model} · layer {int(layer)} · {sweep} · {setting}"


def _with_ci(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the pooled statistics of its kind (:data:`GROUP`) on every row."""
    out = []
    for _, g in table.groupby(GROUP, sort=False, dropna=False):
        g = g.copy()
        g["n_pairs"] = len(g)
        for stat in CI_STATS:
            if stat not in g:
                continue
            mean, low, high, method = seed_pair_ci(g[stat].to_numpy(dtype=float))
            g[f"{stat}_kind_mean"], g[f"{stat}_ci_low"], g[f"{stat}_ci_high"] = mean, low, high
            g["ci_method"] = method
        out.append(g)
    return pd.concat(out).loc[table.index]


def _ecdf(values: np.ndarray, points: int = 101) -> pd.DataFrame:
    """The empirical CDF at ``points`` quantile levels (enough for a line; keeps the PDF small)."""
    level = np.linspace(0, 1, points)
    return pd.DataFrame({"cosine": np.quantile(np.asarray(values, np.float64), level), "cdf": level})


def curve_bands(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (panel, measure, kind) and quantile level: the mean cosine over the seed pairs' curves and its
    interval (:func:`seed_pair_ci`; with one pair, the pair's own curve and no band)."""
    rows = []
    for (panel, measure, kind, cdf), g in curves.groupby(["panel", "measure", "kind", "cdf"], sort=False):
        mean, low, high, method = seed_pair_ci(g["cosine"].to_numpy())
        rows.append((panel, measure, kind, cdf, mean, low, high, len(g), method))
    return pd.DataFrame(rows, columns=["panel", "measure", "kind", "cdf", "cosine", "low", "high", "n_pairs",
                                       "ci_method"])  # fmt: skip


# --------------------------------------------------------------------------------------------
# Figure

_COLORS = ["#d62728", "#ff9896", "#1f77b4", "#7f7f7f", "#8c564b"]
_DASHES = [[1, 0], [5, 2], [1, 0], [2, 2], [6, 3]]
MEASURES = {"best": "best cosine, A → B", "matched": "one-to-one matched cosine"}
CAPTION = [
    "Each SAE A is compared with an SAE B of the same model, layer and setting: its features' best cosine",
    "in B (A → B), and the one-to-one matching. Lines: mean over seed pairs of each pair's curve; bands and",
    "bars: 95% t-interval over seed pairs (the min–max range with 2 pairs, none with 1); circles: seed pairs.",
    "cross-same-seed can sit above the ceiling: both SAEs start from the same initial decoder (same seed).",
    "Floors: random directions, isotropic or drawn from the centred covariance of B's activations (what the",
    "data's second moments alone give); cross above the covariance floor is the evidence of shared features.",
]


def _color() -> dict:
    """One colour and dash per kind of pair, its legend explaining each kind."""
    labels = [KIND_LABELS[k] for k in KINDS]
    legend = alt.Legend(title="pair (A → B)", orient="bottom", direction="vertical", labelLimit=0, columns=2,
                        symbolType="stroke", symbolStrokeWidth=2.5, symbolSize=300, symbolOpacity=1)  # fmt: skip
    return {
        "color": alt.Color("label:N", scale=alt.Scale(domain=labels, range=_COLORS), legend=legend),
        "strokeDash": alt.StrokeDash("label:N", scale=alt.Scale(domain=labels, range=_DASHES), legend=legend),
    }


def transfer_features_chart(
    curves: pd.DataFrame, table: pd.DataFrame, title: str, note: str = ""
) -> alt.VConcatChart:
    """Per figure row (model, layer, sweep, setting): the two cumulative distributions with their bands and
    the mean best cosine per kind with its interval; the pair kinds explained in the legend and beneath."""
    bands = curve_bands(curves)
    bands["label"] = bands["kind"].map(KIND_LABELS)
    pairs = table.assign(panel=[_panel(*r) for r in table[["model", "layer", "sweep", "setting"]].itertuples(False)],
                         label=table["kind"].map(KIND_LABELS))  # fmt: skip
    kinds = [k for k in KINDS if k in set(table["kind"])]
    enc = _color()
    x_cos = alt.Scale(domain=[-0.1, 1.0], clamp=True)
    rows = []
    for r, panel in enumerate(dict.fromkeys(pairs["panel"])):
        charts_row = []
        for c, measure in enumerate(MEASURES):
            data = bands[(bands["panel"] == panel) & (bands["measure"] == measure)]
            base = alt.Chart(data).encode(
                y=alt.Y("cdf:Q", title="share of features ≤ cosine" if c == 0 else None)
            )
            band = base.mark_area(opacity=0.25, orient="horizontal").encode(
                x=alt.X("low:Q", scale=x_cos, title="cosine"), x2="high:Q", color=enc["color"]
            )
            line = base.mark_line(opacity=0.9).encode(
                x=alt.X("cosine:Q", scale=x_cos, title="cosine"), color=enc["color"], strokeDash=enc["strokeDash"],
                order="cdf:Q", tooltip=["kind", "n_pairs", "ci_method", alt.Tooltip("cosine:Q", format=".3f")])  # fmt: skip
            head = MEASURES[measure] if r == 0 else ""
            charts_row.append((band + line).properties(width=220, height=150, title=head))
        data = pairs[pairs["panel"] == panel]
        y = alt.Y("kind:N", sort=kinds, title=None, axis=alt.Axis(ticks=False, labelLimit=0))
        x = alt.X("mean_best_ab:Q", scale=alt.Scale(domain=[0, 1]), title="mean best cosine, A → B")
        dots = alt.Chart(data).mark_point(shape="circle", size=25, opacity=0.6).encode(
            x=x, y=y, color=enc["color"], tooltip=["sae_a", "sae_b", "dataset_b", alt.Tooltip("mean_best_ab:Q", format=".3f")])  # fmt: skip
        kind_rows = data.drop_duplicates("kind")
        bars = (
            alt.Chart(kind_rows)
            .mark_rule(strokeWidth=2)
            .encode(x="mean_best_ab_ci_low:Q", x2="mean_best_ab_ci_high:Q", y=y, color=enc["color"])
        )
        means = alt.Chart(kind_rows).mark_tick(thickness=2, size=14).encode(
            x="mean_best_ab_kind_mean:Q", y=y, color=enc["color"],
            tooltip=["kind", "n_pairs", "ci_method", alt.Tooltip("mean_best_ab_kind_mean:Q", format=".3f"),
                     alt.Tooltip("mean_best_ab_ci_low:Q", format=".3f"), alt.Tooltip("mean_best_ab_ci_high:Q", format=".3f")])  # fmt: skip
        head = "per kind: mean, 95% interval" if r == 0 else ""
        charts_row.append((bars + means + dots).properties(width=180, height=150, title=head))
        rows.append(alt.hconcat(*charts_row, title=alt.TitleParams(panel, anchor="start", fontSize=12)))
    caption = alt.Chart(pd.DataFrame({"line": CAPTION, "i": range(len(CAPTION))})).mark_text(
        align="left", baseline="top", fontSize=11).encode(
        text="line:N", y=alt.Y("i:O", axis=None), x=alt.value(0)).properties(width=700, height=15 * len(CAPTION))  # fmt: skip
    return alt.vconcat(*rows, caption, spacing=14).properties(title=charts.title(title, note)).configure_view(
        stroke=None).configure_legend(labelFontSize=11, titleFontSize=11)  # fmt: skip


def write_transfer_features(pairs: Sequence[Pair], out_pdf: str | os.PathLike, out_csv: str | os.PathLike,
                            title: str = "", note: str = "", seed: int = 0, thresholds: Sequence[float] = THRESHOLDS,
                            match: bool = True, max_match: int = 16384,
                            load: Callable[[DecoderRef], np.ndarray] = load_directions,
                            covariance: Covariance | None = None, floor_draws: int = 4096) -> pd.DataFrame:  # fmt: skip
    """Compare every pair, write the table (``out_csv``) and the figure (``out_pdf``; .pdf/.png/.svg)."""
    table, curves = pair_table(pairs, seed, thresholds, match, max_match, load, covariance, floor_draws)
    atomic_write(out_csv, lambda p: table.to_csv(p, index=False, float_format="%.6g"))
    charts.save(transfer_features_chart(curves, table, title, note), out_pdf)
    return table


def store_covariance(
    stores: Sequence[str | os.PathLike], max_tokens: int = 200_000, seed: int = 0
) -> Covariance:
    """The ``covariance`` of :func:`pair_table` from activation stores: each (dataset, model, layer, token
    kind, split) computed once (:func:`data_covariance`)."""
    index = {store_key(s): Path(s) for s in stores}
    cache: dict[tuple, DataCovariance] = {}

    def covariance(ref: DecoderRef, dataset: str) -> DataCovariance:
        key = (dataset, ref.model, ref.layer)
        if key not in index:
            raise ValueError(f"no activation store of dataset {dataset!r}, model {ref.model!r}, layer {ref.layer} "
                             f"among {sorted(map(str, index.values()))}; the rule's stores must cover every SAE's place")  # fmt: skip
        full = (*key, ref.token_kind, ref.split)
        if full not in cache:
            cache[full] = data_covariance(index[key], ref.split, ref.token_kind, max_tokens, seed)
        return cache[full]

    return covariance


def write_all(sae_files: Sequence[str], stats_dirs: Sequence[str], stores: Sequence[str], out_pdf: str, out_csv: str,
              title: str, note: str, seed: int, floor_draws: int = 4096, max_tokens: int = 200_000) -> pd.DataFrame:  # fmt: skip
    """The rule's work: decoder directions of every SAE (its place from its ``cfg.json``) matched across
    datasets, against seeds (ceiling) and random directions (floors; the covariance floors' from the
    ``stores``), over the live features of each SAE (its own statistics)."""
    refs = [decoder_ref(f, Path(d) / "features.parquet") for f, d in zip(sae_files, stats_dirs, strict=True)]
    return write_transfer_features(plan_pairs(refs), out_pdf, out_csv, title, note, seed,
                                   covariance=store_covariance(stores, max_tokens, seed), floor_draws=floor_draws)  # fmt: skip
