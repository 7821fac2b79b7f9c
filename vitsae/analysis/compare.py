"""Model A's SAEs against model B's at matched sparsity: does A have the higher share? The statistical core.

Terms
-----
* *Unit* (:class:`SAEUnit`): one SAE: its training seed, its L0 (mean active features per token) and, per
  feature, ``num_F`` and ``den_F`` (booleans; ``num`` implies ``den``) and ``cluster_F`` (its feature
  cluster, a "concept": the features of one cluster are near-duplicates). Cluster ids are the SAE's own.
* *Arm*: the units of one model: several seeds, each seed with SAEs at several sparsity settings. The
  *favoured* arm is the one the claim says is higher; the other is the baseline.
* *Share over features* of a unit: ``sum(num_F) / sum(den_F)``. *Share over clusters*: the mean, over the
  clusters holding at least one ``den`` feature, of (#num / #den features in the cluster): each such
  cluster weighs 1, so a concept split into many near-duplicate features counts once. Both are reported;
  over features is primary.

Matching the sparsity
---------------------
* A seed's L0 range is [min, max] of its SAEs' L0s. An arm's range is [max over its seeds of the mins, min
  over its seeds of the maxes]: where every seed's curve is defined. The *overlap* (:func:`overlap`) is the
  intersection of the two arms' ranges, None if empty.
* The primary L0, ``L0*`` (:func:`primary_l0`): the overlap's geometric midpoint (``"midpoint"``) or a
  given number. No overlap, or an ``L0*`` outside it, gives a result flagged not comparable whose message
  names both arms' ranges (:func:`comparable`); nothing is extrapolated and no other L0 is picked.
* A seed's *matched value* at ``L0*``: linear interpolation in log L0 between the seed's two SAEs whose
  L0s bracket ``L0*``. With ``l_lo < L0* < l_hi`` adjacent in the seed's sorted L0s,
  ``w_hi = (log L0* - log l_lo) / (log l_hi - log l_lo)``, ``w_lo = 1 - w_hi`` and every other SAE of the
  seed weighs 0; an exact hit puts weight 1 on that SAE (split evenly if several SAEs of the seed share
  that L0). So value(seed) = Σ_u w_u · share_u with fixed weights (:func:`interpolation_weights`), the
  same for both shares. An arm's value is the mean over its seeds; Δ = value(favoured) − value(other) at
  ``L0*``, and the claimed direction is Δ > 0.

Uncertainty: a hierarchical bootstrap
-------------------------------------
Each of ``n_boot`` replicates, independently per arm,

1. draws the arm's ``n`` seeds with replacement (stage 1);
2. for each drawn seed occurrence independently (a seed drawn twice gets two independent draws), resamples
   the clusters of each of that seed's SAEs with replacement, as many as the SAE has (stage 2). A cluster
   carries all its features, in ``den`` or not, so the denominator is random too. The shares, the seed's
   matched value (same weights) and the arm's mean follow.

A replicate in which a resampled SAE has no ``den`` feature is undefined and dropped (the result's
``n_boot`` counts the replicates kept). Δ's replicates are the differences of the arms' replicates.

A bootstrap of a mean over ``n`` units has variance (n−1)/n of the truth and normal tails, so over 2–5 seeds
its percentile interval undercovers. The reported interval is therefore studentized::

    CI = Δ ± t_{ν, (1+level)/2} · SE,    SE² = Σ_arms Var_boot(arm value) · n_a / (n_a − 1)

(the factor only where n_a ≥ 2; Var_boot with ddof 1 over the kept replicates), and ν the
Welch–Satterthwaite degrees of freedom of the *seed-level* values (each seed's matched value):
ν = (Σ_a v_a)² / Σ_{a: n_a ≥ 2} v_a² / (n_a − 1), with v_a = s_a² / n_a and s_a² the sample variance of
arm a's seed values. An arm with one seed enters the numerator with its bootstrap variance (within-SAE
noise only; its seed-to-seed variance is unknown, and the message says so) and adds no df term. Two
one-seed arms give ν = ∞, a normal interval, and the message says that too. Where the seed values do not
vary at all (0/0), ν = min(n_a − 1), Welch's lower bound. Δ over clusters gets its own SE, ν and CI the same
way. The plain percentile interval of Δ's replicates (``boot_low``, ``boot_high``) is returned for
transparency; it is expected to undercover.

Stage 2 re-adds the within-SAE (cluster sampling) noise, which the seed-to-seed spread of matched values
already contains: SE² ≈ s²/n + σ_w²/(n − 1) per arm, σ_w² the within-seed variance of a matched value. So
the interval is close to exact (for normal seed values) when seed noise dominates, and conservative when
within-SAE noise is comparable to seed noise. Measured on the unit tests' synthetic sweeps (4 + 5 seeds,
3 SAEs each, 2000 features in clusters of 1–3, n_boot 200, 2000 repeats; σ_w ≈ 0.022): with seed noise
τ = 0.12 and 0.08 in the two arms, studentized 95.8 %, percentile 85 %; with τ = 0.1 in both, studentized
96.4 % (Welch's ν is itself conservative, 95.6 %, for equal variances at these n); with τ = 0.02 ≈ σ_w
(400 repeats), studentized 99.8 %, percentile 95 %.

Permutation test
----------------
At the seed level (:func:`permutation_test`): the units are the seeds' matched values over features, the
statistic mean(favoured) − mean(other). All C(n1+n2, n1) relabelings when that is ≤ ``n_perm``, else
``n_perm`` seeded random ones plus the observed; one-sided p in the claimed direction =
#{Δ_perm ≥ Δ_obs − 1e-12} / #relabelings (the observed one included). ``p_min`` is the smallest p
attainable: 1/C(n1+n2, n1) when exact, 1/(n_perm + 1) otherwise (2 + 2 seeds: 1/6, which no claim at
alpha 0.05 can pass). :func:`holm` adjusts a family of such p-values; :func:`verdict` turns a result into
"supported", "not supported", "inconclusive" or "not comparable".

Reuse
-----
A specification curve re-evaluates one comparison under hundreds of relabelings (same SAEs, clusters and
L0s; other ``num``/``den``). :class:`Comparator` makes every random draw once, from the units' seeds, L0s
and clusters: stage 1's seed indices per arm, and per SAE a matrix ``counts_RC`` (uint8) of how often each
cluster is drawn in each occurrence ``R`` of its seed. The draws of the SAEs that weigh at ``L0*`` are made
in ``__init__``, others (for :func:`delta_curve`) when first needed, each from its own seeded stream, so
they do not depend on the order of requests. :meth:`Comparator.run` then needs only per-cluster counts
(a bincount of the relabeling over a precomputed cluster index) and one matrix product per SAE: common
random numbers across relabelings and across L0s. Memory: n_boot bytes per cluster of each SAE drawn (1000
replicates × 12,288 clusters: 12 MB). Measured for 5 seeds × 6 SAEs per arm, 12,288 features in ~6,000
clusters each, n_boot 1000: ``__init__`` 1 s, :meth:`~Comparator.run` 70 ms per relabeling, a 20-point
:func:`delta_curve` 3 s (every SAE drawn then: 350 MB).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from scipy import stats

#: Elements per block of the stage-2 draws' temporaries (random cluster indices): ~32 MB of int64.
_BLOCK = 1 << 22
#: Counts per matrix product (a product of fewer than 65536 × 4 multiply-adds stays on one BLAS thread).
_BLAS_BLOCK = 1 << 16
#: Tolerance of the permutation test's "as large as observed" and of L0 comparisons (relative).
_TIE = 1e-12

NumDen = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class SAEUnit:
    """One SAE: ``seed`` (its training seed: the top level of the hierarchy), ``l0`` (its mean active
    features per token, > 0) and, per feature, ``num_F`` and ``den_F`` (bool; ``num`` implies ``den``)
    and ``cluster_F`` (int: its feature cluster). Arrays are normalised on construction; a feature in
    ``num`` but not in ``den`` raises a ValueError that names the unit; 0/1 arrays are taken as booleans."""

    seed: int
    l0: float
    num_F: np.ndarray
    den_F: np.ndarray
    cluster_F: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "l0", float(self.l0))
        if not (np.isfinite(self.l0) and self.l0 > 0):
            raise ValueError(f"{self.name}: L0 must be finite and > 0")
        cluster_F = np.asarray(self.cluster_F)
        if cluster_F.ndim != 1 or not np.issubdtype(cluster_F.dtype, np.integer):
            raise ValueError(f"{self.name}: cluster_F must be a 1-D integer array, got {cluster_F.dtype}")
        object.__setattr__(self, "cluster_F", cluster_F)
        num_F, den_F = _check_numden(self.num_F, self.den_F, len(cluster_F), self.name)
        object.__setattr__(self, "num_F", num_F)
        object.__setattr__(self, "den_F", den_F)

    @property
    def name(self) -> str:
        return f"SAE (seed {self.seed}, L0 {self.l0:g})"


def _check_numden(num_F: np.ndarray, den_F: np.ndarray, n_features: int, name: str) -> NumDen:
    """``num_F``, ``den_F`` as 1-D bool arrays of ``n_features``, ``num`` ⊆ ``den``; else a ValueError."""
    out = []
    for what, arr in (("num_F", np.asarray(num_F)), ("den_F", np.asarray(den_F))):
        if arr.shape != (n_features,):
            raise ValueError(f"{name}: {what} has shape {arr.shape}, expected ({n_features},)")
        if arr.dtype != bool:  # 0/1 values (ints, objects) are booleans too; anything else (NaN, None) is not
            if not np.isin(arr, [0, 1]).all():
                raise ValueError(f"{name}: {what} must be boolean (0/1), got values {np.unique(arr)[:5]}")
            arr = arr.astype(bool)
        out.append(arr)
    num_F, den_F = out
    stray = int((num_F & ~den_F).sum())
    if stray:
        raise ValueError(f"{name}: {stray} features are in num but not in den; num must imply den")
    return num_F, den_F


@dataclass(frozen=True)
class Comparison:
    """One comparison at ``l0`` (see the module docstring for every quantity). ``stat_*`` are the arms'
    values, ``delta`` = stat_fav − stat_other (over features; ``*_clusters`` the same over clusters), ``se``,
    ``df`` (ν) and ``ci_low``/``ci_high`` the studentized interval at ``level``, ``boot_low``/``boot_high``
    the percentile interval of the replicates, ``p_perm``/``p_min``/``n_relabelings`` the seed-level
    permutation test, ``seed_values_*`` each seed's matched value over features (seeds in ascending order).
    ``comparable`` False: only ``message``, the names, the overlap and the seed counts are meaningful."""

    comparable: bool
    message: str
    name_fav: str
    name_other: str
    level: float
    l0: float
    overlap_low: float
    overlap_high: float
    stat_fav: float
    stat_other: float
    delta: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    boot_low: float
    boot_high: float
    stat_fav_clusters: float
    stat_other_clusters: float
    delta_clusters: float
    se_clusters: float
    df_clusters: float
    clusters_ci_low: float
    clusters_ci_high: float
    p_perm: float
    p_min: float
    n_relabelings: int
    n_boot: int
    n_seeds_fav: int
    n_seeds_other: int
    seed_values_fav: tuple[float, ...] = ()
    seed_values_other: tuple[float, ...] = ()

    def row(self) -> dict[str, bool | str | float | int]:
        """The scalar fields as a flat dict (the seed values left out), one row of a results table."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("seed_values")}


# ---------------------------------------------------------------------------------------------------------
# matching the sparsity


def seed_ranges(units: Sequence[SAEUnit]) -> dict[int, tuple[float, float]]:
    """Per seed (ascending), [min L0, max L0] of its SAEs."""
    out: dict[int, tuple[float, float]] = {}
    for u in units:
        lo, hi = out.get(u.seed, (u.l0, u.l0))
        out[u.seed] = (min(lo, u.l0), max(hi, u.l0))
    return dict(sorted(out.items()))


def arm_range(units: Sequence[SAEUnit]) -> tuple[float, float] | None:
    """[max over seeds of the seeds' min L0, min over seeds of their max L0]: where every seed's curve is
    defined; None if that is empty (or the arm has no units)."""
    ranges = list(seed_ranges(units).values())
    if not ranges:
        return None
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return (lo, hi) if lo <= hi else None


def overlap(arm_a: Sequence[SAEUnit], arm_b: Sequence[SAEUnit]) -> tuple[float, float] | None:
    """The intersection of the two arms' L0 ranges (:func:`arm_range`), None if empty."""
    ra, rb = arm_range(arm_a), arm_range(arm_b)
    if ra is None or rb is None:
        return None
    lo, hi = max(ra[0], rb[0]), min(ra[1], rb[1])
    return (lo, hi) if lo <= hi else None


def primary_l0(setting: str | float, overlap: tuple[float, float] | None) -> float | None:
    """The primary L0: ``"midpoint"`` → the geometric mean of the overlap's ends (None without overlap);
    a number → that number (checked against the overlap by :func:`comparable`, not here)."""
    if isinstance(setting, str):
        if setting != "midpoint":
            raise ValueError(f"primary L0 setting {setting!r}: use 'midpoint' or a number")
        return None if overlap is None else math.sqrt(overlap[0] * overlap[1])
    return float(setting)


def _describe(name: str, units: Sequence[SAEUnit]) -> str:
    r = arm_range(units)
    if r is not None:
        return f"'{name}' covers L0 [{r[0]:.4g}, {r[1]:.4g}]"
    per_seed = ", ".join(f"seed {s} [{lo:.4g}, {hi:.4g}]" for s, (lo, hi) in seed_ranges(units).items())
    return f"'{name}' has no L0 that all its seeds reach ({per_seed or 'no SAEs'})"


def _inside(l0: float, rng: tuple[float, float]) -> bool:
    return rng[0] * (1 - _TIE) <= l0 <= rng[1] * (1 + _TIE)


def comparable(
    fav: Sequence[SAEUnit],
    other: Sequence[SAEUnit],
    l0: str | float = "midpoint",
    names: tuple[str, str] = ("favoured", "other"),
) -> tuple[bool, str, float]:
    """(ok, message, primary L0). Not ok when the arms' L0 ranges do not overlap or the primary L0 lies
    outside the overlap; the message then names both arms' ranges (the caller adds which sweep settings
    to change). The primary L0 is NaN when there is no overlap to take a midpoint of."""
    ov = overlap(fav, other)
    target = primary_l0(l0, ov)
    ranges = f"{_describe(names[0], fav)} and {_describe(names[1], other)}"
    if ov is None:
        return (
            False,
            f"not comparable: no L0 common to both arms: {ranges}",
            math.nan if target is None else target,
        )
    if not (np.isfinite(target) and target > 0 and _inside(target, ov)):
        return (
            False,
            f"not comparable: primary L0 {target:.4g} lies outside the overlap "
            + f"[{ov[0]:.4g}, {ov[1]:.4g}]: {ranges}",
            target,
        )
    return True, "", target


def interpolation_weights(l0_U: Sequence[float] | np.ndarray, target: float) -> np.ndarray:
    """Weights over one seed's SAEs (in the given order) of its matched value at ``target``: linear in
    log L0 between the two SAEs whose L0s bracket it (``w_hi = (log t − log l_lo) / (log l_hi − log
    l_lo)``, ``w_lo = 1 − w_hi``), 1 on an exact hit (split evenly among SAEs at that L0), 0 elsewhere.
    A target outside [min, max] of ``l0_U`` raises a ValueError."""
    log_U = np.log(np.asarray(l0_U, dtype=np.float64))
    t = math.log(target)
    w_U = np.zeros(len(log_U))
    hit_U = np.abs(log_U - t) <= _TIE
    if hit_U.any():
        w_U[hit_U] = 1.0 / hit_U.sum()
        return w_U
    below, above = log_U < t, log_U > t
    if not (below.any() and above.any()):
        raise ValueError(f"L0 {target:g} lies outside this seed's L0s {np.exp(log_U).round(4).tolist()}")
    lo_val, hi_val = log_U[below].max(), log_U[above].min()
    lo_U, hi_U = log_U == lo_val, log_U == hi_val
    w_hi = (t - lo_val) / (hi_val - lo_val)
    w_U[lo_U] = (1 - w_hi) / lo_U.sum()
    w_U[hi_U] = w_hi / hi_U.sum()
    return w_U


# ---------------------------------------------------------------------------------------------------------
# shares of one SAE


def feature_share(num_F: np.ndarray, den_F: np.ndarray) -> float:
    """``sum(num_F) / sum(den_F)``; NaN without a ``den`` feature."""
    den = int(np.count_nonzero(den_F))
    return np.count_nonzero(num_F) / den if den else math.nan


def cluster_share(num_F: np.ndarray, den_F: np.ndarray, cluster_F: np.ndarray) -> float:
    """Mean over the clusters with a ``den`` feature of (#num / #den in the cluster); NaN without one."""
    _, inv_F = np.unique(cluster_F, return_inverse=True)
    den_C = np.bincount(inv_F, weights=den_F)
    has_C = den_C > 0
    if not has_C.any():
        return math.nan
    return float((np.bincount(inv_F, weights=num_F)[has_C] / den_C[has_C]).mean())


def _cluster_columns(inv_F: np.ndarray, n_clusters: int, num_F: np.ndarray, den_F: np.ndarray) -> np.ndarray:
    """``[C, 4]``: per cluster #num, #den, #num/#den (0 without den) and 1 if it has a den feature."""
    num_C = np.bincount(inv_F, weights=num_F, minlength=n_clusters)
    den_C = np.bincount(inv_F, weights=den_F, minlength=n_clusters)
    has_C = den_C > 0
    share_C = np.divide(num_C, den_C, out=np.zeros(n_clusters), where=has_C)
    return np.stack([num_C, den_C, share_C, has_C.astype(np.float64)], axis=1)


def _draw_counts(rng: np.random.Generator, n_rows: int, n_clusters: int) -> np.ndarray:
    """``[n_rows, n_clusters]``: per row, how often each cluster is drawn in ``n_clusters`` draws with
    replacement (uint8, widened only if a count would overflow it); built by bincount in blocks."""
    out_RC = np.zeros((n_rows, n_clusters), dtype=np.uint8)
    block = max(1, _BLOCK // max(n_clusters, 1))
    for start in range(0, n_rows, block):
        b = min(block, n_rows - start)
        idx_BC = rng.integers(0, n_clusters, size=(b, n_clusters))
        idx_BC += (np.arange(b) * n_clusters)[:, None]
        counts_BC = np.bincount(idx_BC.ravel(), minlength=b * n_clusters).reshape(b, n_clusters)
        top = int(counts_BC.max(initial=0))
        if top > np.iinfo(out_RC.dtype).max:
            out_RC = out_RC.astype(np.min_scalar_type(max(top, n_clusters)))
        out_RC[start : start + b] = counts_BC
    return out_RC


def _products(counts_RC: np.ndarray, cols_C4: np.ndarray) -> np.ndarray:
    """``counts_RC @ cols_C4`` as float64, computed in float32 over blocks of rows of about ``_BLAS_BLOCK``
    counts (cast a block at a time). Blocks that small keep OpenBLAS on one thread: faster for this skinny
    product than its threads, and not slowed down when other jobs hold the cores."""
    n_rows, n_clusters = counts_RC.shape
    cols32_C4 = cols_C4.astype(np.float32)
    out_R4 = np.empty((n_rows, cols_C4.shape[1]))
    block = max(1, _BLAS_BLOCK // max(n_clusters, 1))
    for start in range(0, n_rows, block):
        out_R4[start : start + block] = counts_RC[start : start + block].astype(np.float32) @ cols32_C4
    return out_R4


def _stream(seq: np.random.SeedSequence, *key: int) -> np.random.Generator:
    """The generator of the stream ``key`` under ``seq``: fixed by (seed, key), whatever is drawn before."""
    return np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, *key)))


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.full(np.shape(a), np.nan), where=b > 0)


# ---------------------------------------------------------------------------------------------------------
# the comparison


class _Arm:
    """The units of one arm, grouped by seed (ascending), with their cluster indices and stage-1 draws."""

    def __init__(self, name: str, units: Sequence[SAEUnit], n_boot: int, seq: np.random.SeedSequence) -> None:
        if not units:
            raise ValueError(f"arm '{name}' has no SAEs")
        self.name, self.units, self.seq = name, list(units), seq
        self.seeds = sorted({u.seed for u in self.units})
        self.members = [[i for i, u in enumerate(self.units) if u.seed == s] for s in self.seeds]
        self.inv_F, self.n_clusters = [], []
        for u in self.units:
            _, inv = np.unique(u.cluster_F, return_inverse=True)
            self.inv_F.append(inv.astype(np.intp))
            self.n_clusters.append(int(inv.max(initial=-1)) + 1)
        n = len(self.seeds)
        draw_BN = _stream(seq, 0).integers(0, n, size=(n_boot, n))
        flat = draw_BN.ravel()
        # per seed, the replicate of each of its occurrences (row R of its SAEs' count matrices)
        self.rep_R = [np.flatnonzero(flat == k) // n for k in range(n)]
        self.counts: dict[int, np.ndarray] = {}

    def counts_RC(self, i: int) -> np.ndarray:
        """Stage 2 for unit ``i``: per occurrence of its seed, its clusters' counts (own seeded stream)."""
        if i not in self.counts:
            k = self.seeds.index(self.units[i].seed)
            self.counts[i] = _draw_counts(_stream(self.seq, 1, i), len(self.rep_R[k]), self.n_clusters[i])
        return self.counts[i]

    def weights(self, l0: float) -> list[np.ndarray]:
        return [interpolation_weights([self.units[i].l0 for i in m], l0) for m in self.members]


@dataclass(frozen=True)
class _ArmValues:
    seed_S: np.ndarray  # matched value per seed, over features
    seed_clusters_S: np.ndarray
    rep_B: np.ndarray  # arm value per replicate, over features
    rep_clusters_B: np.ndarray


class Comparator:
    """A reusable comparison of ``fav_units`` (the arm claimed higher) against ``other_units`` at the
    primary L0 ``l0`` (``"midpoint"`` or a number), with ``n_boot`` bootstrap replicates drawn once from
    ``seed`` (see the module docstring). :meth:`run` evaluates one labelling; ``names`` name the arms in
    messages. If the arms are not comparable at ``l0`` no draw is made and every run returns that."""

    def __init__(
        self,
        fav_units: Sequence[SAEUnit],
        other_units: Sequence[SAEUnit],
        l0: str | float = "midpoint",
        n_boot: int = 1000,
        seed: int = 0,
        level: float = 0.95,
        n_perm: int = 10000,
        names: tuple[str, str] = ("favoured", "other"),
    ) -> None:
        if n_boot < 2:
            raise ValueError(f"n_boot={n_boot} must be >= 2")
        if not 0 < level < 1:
            raise ValueError(f"level={level} must lie in (0, 1)")
        self.n_boot, self.seed, self.level, self.n_perm, self.names = n_boot, seed, level, n_perm, names
        root = np.random.SeedSequence(seed)
        self.arms = (
            _Arm(names[0], fav_units, n_boot, np.random.SeedSequence(root.entropy, spawn_key=(0,))),
            _Arm(names[1], other_units, n_boot, np.random.SeedSequence(root.entropy, spawn_key=(1,))),
        )
        self.overlap = overlap(fav_units, other_units)
        self.ok, self.message, self.l0 = comparable(fav_units, other_units, l0, names)
        if self.ok:  # the draws the primary L0 needs, now
            for arm in self.arms:
                for members, w in zip(arm.members, arm.weights(self.l0)):
                    for i, w_i in zip(members, w):
                        if w_i > 0:
                            arm.counts_RC(i)

    def _not_comparable(self, message: str, l0: float) -> Comparison:
        ov = self.overlap or (math.nan, math.nan)
        out = {f.name: math.nan for f in fields(Comparison) if not f.name.startswith("seed_values")}
        out.update(comparable=False, message=message, name_fav=self.names[0], name_other=self.names[1])
        out.update(level=self.level, l0=l0, overlap_low=ov[0], overlap_high=ov[1], n_relabelings=0, n_boot=0)
        out.update(n_seeds_fav=len(self.arms[0].seeds), n_seeds_other=len(self.arms[1].seeds))
        return Comparison(**out)

    def _arm_values(self, arm: _Arm, numden: Sequence[NumDen], l0: float) -> _ArmValues | str:
        """The arm's seed values and replicate values at ``l0``; a message if a weighted SAE has no den."""
        n = len(arm.seeds)
        seed_S, seed_clusters_S = np.zeros(n), np.zeros(n)
        rep_B, rep_clusters_B = np.zeros(self.n_boot), np.zeros(self.n_boot)
        for k, (members, w) in enumerate(zip(arm.members, arm.weights(l0))):
            occ_R = np.zeros(len(arm.rep_R[k]))
            occ_clusters_R = np.zeros(len(arm.rep_R[k]))
            for i, w_i in zip(members, w):
                if w_i == 0:
                    continue
                num_F, den_F = numden[i]
                cols_C4 = _cluster_columns(arm.inv_F[i], arm.n_clusters[i], num_F, den_F)
                totals_4 = cols_C4.sum(axis=0)
                if totals_4[1] == 0:
                    return f"'{arm.name}' {arm.units[i].name} has no den feature: its share is undefined"
                seed_S[k] += w_i * totals_4[0] / totals_4[1]
                seed_clusters_S[k] += w_i * totals_4[2] / totals_4[3]
                prod_R4 = _products(arm.counts_RC(i), cols_C4)
                occ_R += w_i * _ratio(prod_R4[:, 0], prod_R4[:, 1])
                occ_clusters_R += w_i * _ratio(prod_R4[:, 2], prod_R4[:, 3])
            rep_B += np.bincount(arm.rep_R[k], weights=occ_R, minlength=self.n_boot)
            rep_clusters_B += np.bincount(arm.rep_R[k], weights=occ_clusters_R, minlength=self.n_boot)
        return _ArmValues(seed_S, seed_clusters_S, rep_B / n, rep_clusters_B / n)

    def _interval(
        self, fav_S: np.ndarray, other_S: np.ndarray, fav_B: np.ndarray, other_B: np.ndarray
    ) -> tuple[float, float, float, float, float]:
        """(Δ, SE, ν, CI low, CI high) of one share from seed values and kept replicates."""
        delta = float(fav_S.mean() - other_S.mean())
        boot_var, var_terms = [], []
        for vals_S, rep_B in ((fav_S, fav_B), (other_S, other_B)):
            n = len(vals_S)
            v = float(np.var(rep_B, ddof=1)) if len(rep_B) > 1 else math.nan
            boot_var.append(v * n / (n - 1) if n >= 2 else v)
            var_terms.append((float(np.var(vals_S, ddof=1)) / n, n - 1) if n >= 2 else (v, None))
        se = math.sqrt(sum(boot_var))
        df = welch_df(var_terms)
        half = float(stats.t.ppf((1 + self.level) / 2, df)) * se
        return delta, se, df, delta - half, delta + half

    def run(
        self,
        fav_numden: Sequence[NumDen] | None = None,
        other_numden: Sequence[NumDen] | None = None,
        l0: float | None = None,
    ) -> Comparison:
        """The comparison under one labelling: ``fav_numden``/``other_numden`` are lists of
        ``(num_F, den_F)`` aligned with the units as given (None: the units' own), at ``l0`` (None: the
        primary L0; another L0 inside the overlap reuses the same draws). Uses only the draws made once."""
        target = self.l0 if l0 is None else float(l0)
        if not self.ok:
            return self._not_comparable(self.message, target)
        if l0 is not None:
            ok, message, _ = comparable(self.arms[0].units, self.arms[1].units, target, self.names)
            if not ok:
                return self._not_comparable(message, target)
        values = []
        for arm, numden in zip(self.arms, (fav_numden, other_numden)):
            if numden is None:
                numden = [(u.num_F, u.den_F) for u in arm.units]
            elif len(numden) != len(arm.units):
                raise ValueError(
                    f"arm '{arm.name}': {len(numden)} (num, den) pairs for {len(arm.units)} SAEs"
                )
            else:
                numden = [
                    _check_numden(num, den, len(u.cluster_F), f"arm '{arm.name}' SAE {i} ({u.name})")
                    for i, (u, (num, den)) in enumerate(zip(arm.units, numden))
                ]
            v = self._arm_values(arm, numden, target)
            if isinstance(v, str):
                return self._not_comparable(f"not comparable: {v}", target)
            values.append(v)
        fav, other = values
        keep_B = np.isfinite(fav.rep_B) & np.isfinite(other.rep_B)
        keep_B &= np.isfinite(fav.rep_clusters_B) & np.isfinite(other.rep_clusters_B)
        delta, se, df, lo, hi = self._interval(
            fav.seed_S, other.seed_S, fav.rep_B[keep_B], other.rep_B[keep_B]
        )
        delta_c, se_c, df_c, lo_c, hi_c = self._interval(
            fav.seed_clusters_S,
            other.seed_clusters_S,
            fav.rep_clusters_B[keep_B],
            other.rep_clusters_B[keep_B],
        )
        d_B = fav.rep_B[keep_B] - other.rep_B[keep_B]
        q = 100 * (1 - self.level) / 2
        boot_lo, boot_hi = np.percentile(d_B, [q, 100 - q]) if len(d_B) else (math.nan, math.nan)
        p, p_min, n_relabelings = permutation_test(fav.seed_S, other.seed_S, self.n_perm, self.seed)
        notes = []
        n_fav, n_other = len(fav.seed_S), len(other.seed_S)
        if n_fav == 1 and n_other == 1:
            notes.append(
                "both arms have one seed: the interval is normal (ν = ∞) and holds within-SAE noise only"
            )
        else:
            notes += [
                f"'{a.name}' has one seed: its seed-to-seed variance is not estimated"
                for a, n in zip(self.arms, (n_fav, n_other))
                if n == 1
            ]
        if keep_B.sum() < self.n_boot:
            notes.append(f"{self.n_boot - keep_B.sum()} of {self.n_boot} replicates dropped (no den feature)")
        return Comparison(
            comparable=True,
            message="; ".join(notes),
            name_fav=self.names[0],
            name_other=self.names[1],
            level=self.level,
            l0=target,
            overlap_low=self.overlap[0],
            overlap_high=self.overlap[1],
            stat_fav=float(fav.seed_S.mean()),
            stat_other=float(other.seed_S.mean()),
            delta=delta,
            se=se,
            df=df,
            ci_low=lo,
            ci_high=hi,
            boot_low=float(boot_lo),
            boot_high=float(boot_hi),
            stat_fav_clusters=float(fav.seed_clusters_S.mean()),
            stat_other_clusters=float(other.seed_clusters_S.mean()),
            delta_clusters=delta_c,
            se_clusters=se_c,
            df_clusters=df_c,
            clusters_ci_low=lo_c,
            clusters_ci_high=hi_c,
            p_perm=p,
            p_min=p_min,
            n_relabelings=n_relabelings,
            n_boot=int(keep_B.sum()),
            n_seeds_fav=n_fav,
            n_seeds_other=n_other,
            seed_values_fav=tuple(float(x) for x in fav.seed_S),
            seed_values_other=tuple(float(x) for x in other.seed_S),
        )


def welch_df(terms: Sequence[tuple[float, int | None]]) -> float:
    """Welch–Satterthwaite ν = (Σ v_a)² / Σ v_a² / df_a over ``terms`` of ``(v_a, df_a)``; a term with
    ``df_a`` None (a one-seed arm) adds to the numerator only. No df term at all: ∞; a zero denominator
    (seed values that do not vary): the smallest df_a (Welch's lower bound)."""
    dfs = [d for _, d in terms if d is not None]
    if not dfs:
        return math.inf
    num = sum(v for v, _ in terms) ** 2
    den = sum(v**2 / d for v, d in terms if d is not None)
    if not (den > 0 and np.isfinite(num)):
        return float(min(dfs))
    return max(num / den, float(min(dfs)))


def permutation_test(
    values_fav: Sequence[float] | np.ndarray,
    values_other: Sequence[float] | np.ndarray,
    n_perm: int = 10000,
    seed: int = 0,
) -> tuple[float, float, int]:
    """(p, p_min, #relabelings) of the one-sided test of mean(fav) − mean(other) > 0 over seed values: all
    C(n1+n2, n1) relabelings when that is ≤ ``n_perm``, else ``n_perm`` random ones (seeded) plus the
    observed; p = #{Δ_perm ≥ Δ_obs − 1e-12} / #relabelings. NaN values: (NaN, NaN, 0)."""
    fav_S, other_S = np.asarray(values_fav, dtype=np.float64), np.asarray(values_other, dtype=np.float64)
    n1, n2 = len(fav_S), len(other_S)
    all_S = np.concatenate([fav_S, other_S])
    if n1 == 0 or n2 == 0 or not np.isfinite(all_S).all():
        return math.nan, math.nan, 0
    n = n1 + n2
    total = math.comb(n, n1)
    if total <= n_perm:
        group_PS = np.zeros((total, n), dtype=bool)
        for r, chosen in enumerate(itertools.combinations(range(n), n1)):
            group_PS[r, list(chosen)] = True
    else:
        rng = _stream(np.random.SeedSequence(seed), 2)
        order_PS = np.argsort(rng.random((n_perm, n)), axis=1)[:, :n1]
        group_PS = np.zeros((n_perm + 1, n), dtype=bool)
        np.put_along_axis(group_PS[:n_perm], order_PS, True, axis=1)
        group_PS[n_perm, :n1] = True  # the observed labelling
    delta_P = group_PS @ all_S / n1 - (~group_PS) @ all_S / n2
    observed = fav_S.mean() - other_S.mean()
    n_relabelings = len(group_PS)
    p = float(np.count_nonzero(delta_P >= observed - _TIE)) / n_relabelings
    return p, 1.0 / n_relabelings, n_relabelings


def compare(
    fav: Sequence[SAEUnit], other: Sequence[SAEUnit], l0: str | float = "midpoint", **options
) -> Comparison:
    """One comparison of the units' own labels: ``Comparator(fav, other, l0, **options).run()`` (options:
    ``n_boot``, ``seed``, ``level``, ``n_perm``, ``names``, as :class:`Comparator` takes them)."""
    return Comparator(fav, other, l0, **options).run()


def delta_curve(
    source: Comparator | Sequence[SAEUnit] | tuple[Sequence[SAEUnit], Sequence[SAEUnit]],
    other: Sequence[SAEUnit] | None = None,
    *,
    n_points: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, np.ndarray]:
    """Δ with its CI on the shared grid: ``n_points`` log-spaced L0s across the overlap (ends included).
    ``source`` is a :class:`Comparator` (its draws and its units' labels; ``n_boot``, ``seed``, ``level``
    unused), the favoured arm's units with ``other`` the other arm's, or the pair ``(fav, other)``. Returns
    arrays of the numeric fields of :class:`Comparison` (``l0``, ``delta``, ``ci_low``, ``ci_high``,
    ``boot_low``, ``delta_clusters``, ``clusters_ci_low``, ...), each of length 0 without overlap."""
    if isinstance(source, Comparator):
        if other is not None:
            raise TypeError("delta_curve(comparator, ...): pass no other arm (and n_points by keyword)")
        comp = source
    else:
        fav, oth = (source, other) if other is not None else source
        comp = Comparator(fav, oth, n_boot=n_boot, seed=seed, level=level)
    keys = [f.name for f in fields(Comparison) if f.type in ("float", "int", float, int)]
    if comp.overlap is None:
        return {k: np.array([]) for k in keys}
    lo, hi = comp.overlap
    rows = [comp.run(l0=float(x)).row() for x in np.geomspace(lo, hi, n_points)]
    return {k: np.array([r[k] for r in rows]) for k in keys}


# ---------------------------------------------------------------------------------------------------------
# a family of claims


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: with the m non-NaN p sorted ascending, the j-th (from 1) becomes
    max over i ≤ j of min(1, (m − i + 1) · p_(i)); NaN stays NaN and is not counted in m."""
    p_P = np.asarray(p_values, dtype=np.float64)
    out_P = np.full(p_P.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(p_P))
    m = len(valid)
    if m == 0:
        return out_P
    order = valid[np.argsort(p_P[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p_P[order])
    out_P[order] = np.maximum.accumulate(scaled)
    return out_P


@dataclass(frozen=True)
class VerdictRules:
    """When a claim is called supported: Holm-adjusted permutation p ≤ ``alpha``, at least ``min_seeds``
    seeds per arm, and at least ``min_spec_agreement`` of the specification curve agreeing."""

    alpha: float = 0.05
    min_seeds: int = 2
    min_spec_agreement: float = 0.8


def verdict(
    result: Comparison, p_adjusted: float, spec_agreement: float, rules: VerdictRules | None = None
) -> tuple[str, str]:
    """(verdict, reason), decided in this order: "not comparable" (a flagged result) → "inconclusive" if an
    arm has fewer than ``min_seeds`` seeds → "not supported" if the CI's lower end ≤ 0 → "inconclusive" if
    ``p_adjusted`` (Holm) > alpha → "inconclusive" if ``spec_agreement`` < ``min_spec_agreement`` (NaN: not
    checked) → "inconclusive" if Δ over clusters ≤ 0 → "supported"."""
    rules = rules or VerdictRules()
    r = result
    if not r.comparable:
        return "not comparable", r.message
    if min(r.n_seeds_fav, r.n_seeds_other) < rules.min_seeds:
        return "inconclusive", (
            f"'{r.name_fav}' has {r.n_seeds_fav} seed(s) and '{r.name_other}' {r.n_seeds_other}; "
            f"a claim needs at least {rules.min_seeds} per arm."
        )
    ci = f"Δ = {r.delta:.4g}, {r.level:.0%} CI [{r.ci_low:.4g}, {r.ci_high:.4g}]"
    if not r.ci_low > 0:
        where = "lies below 0" if r.ci_high < 0 else "does not exclude 0"
        return "not supported", f"{ci} {where} at L0 {r.l0:.4g}."
    if not p_adjusted <= rules.alpha:
        reason = f"Holm-adjusted permutation p = {p_adjusted:.3g} > alpha = {rules.alpha:g}"
        if r.p_min > rules.alpha:
            reason += (
                f"; the permutation test cannot reach alpha with these seeds (p_min = {r.p_min:.3g} with "
                f"{r.n_seeds_fav} + {r.n_seeds_other} seeds)"
            )
        return "inconclusive", reason + "."
    if not spec_agreement >= rules.min_spec_agreement:
        if np.isnan(spec_agreement):
            return "inconclusive", "the specification curve was not checked."
        return "inconclusive", (
            f"only {spec_agreement:.0%} of specifications agree with the claim (needs "
            f"{rules.min_spec_agreement:.0%})."
        )
    if not r.delta_clusters > 0:
        return "inconclusive", (
            f"Δ over clusters = {r.delta_clusters:.4g} ≤ 0: the difference rests on near-duplicate features."
        )
    return "supported", (
        f"{ci}, Holm-adjusted p = {p_adjusted:.3g}, {spec_agreement:.0%} of specifications agree, "
        f"Δ over clusters = {r.delta_clusters:.4g}."
    )
