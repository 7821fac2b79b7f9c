"""The comparison of two arms of SAEs at matched sparsity (vitsae.analysis.compare): point values against
float64 arithmetic by hand, the bootstrap's variance against its closed form, the studentized interval's
coverage and the permutation test's null distribution on synthetic sweeps, and the verdict's order."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from vitsae.analysis import compare as cmp
from vitsae.analysis.compare import Comparator, SAEUnit, VerdictRules


def _unit(seed: int, l0: float, num: list[int], den: list[int], cluster: list[int]) -> SAEUnit:
    return SAEUnit(seed, l0, np.array(num, dtype=bool), np.array(den, dtype=bool), np.array(cluster))


# --- a tiny sweep, by hand ---------------------------------------------------------------------------------
# fav: seed 0 at L0 10 and 40, seed 1 at L0 10 and 80  → range [10, 40]
# other: seed 0 at L0 5, 20, 80, seed 1 at L0 4, 25, 50 → range [5, 50];  overlap [10, 40], midpoint 20
# Per SAE: (share over features, share over clusters), worked out in the comments.
FAV = [
    # num 2 / den 4 = 0.5;  clusters {0: 1/2, 2: 1/1, 3: 0/1} → (0.5 + 1 + 0) / 3 = 0.5
    _unit(0, 10, [1, 0, 0, 1, 0], [1, 1, 0, 1, 1], [0, 0, 1, 2, 3]),
    # num 3 / den 4 = 0.75; clusters {0: 3/3, 1: 0/1} → 0.5
    _unit(0, 40, [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 1, 1]),
    # num 1 / den 5 = 0.2;  clusters {0: 1/2, 1: 0/3} → 0.25
    _unit(1, 10, [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]),
    # num 2 / den 2 = 1.0;  clusters {0: 1/1, 1: 1/1} → 1.0
    _unit(1, 80, [1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 2, 2]),
]
OTHER = [
    _unit(0, 5, [0, 0, 0], [1, 1, 1], [0, 1, 2]),  # 0.0 ; 0.0
    # num 1 / den 3 = 1/3;  clusters {0: 1/2, 1: 0/1} → 0.25
    _unit(0, 20, [1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]),
    _unit(0, 80, [1, 1, 1], [1, 1, 1], [0, 1, 2]),  # 1.0 ; 1.0
    # num 1 / den 4 = 0.25; clusters {0: 1/1, 1: 0/3} → 0.5
    _unit(1, 4, [1, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1]),
    # num 2 / den 3 = 2/3;  clusters {0: 2/2, 1: 0/1} → 0.5
    _unit(1, 25, [1, 1, 0], [1, 1, 1], [7, 7, 9]),
    _unit(1, 50, [0, 0], [1, 1], [0, 1]),  # 0.0 ; 0.0
]


def test_interpolation_weights_by_hand():
    assert cmp.interpolation_weights([10, 40], 20) == pytest.approx([0.5, 0.5], abs=1e-15)
    w_hi = (math.log(20) - math.log(10)) / (math.log(80) - math.log(10))  # 1/3
    assert cmp.interpolation_weights([80, 10], 20) == pytest.approx([w_hi, 1 - w_hi], abs=1e-15)
    assert cmp.interpolation_weights([5, 20, 80], 20).tolist() == [0.0, 1.0, 0.0]  # exact hit
    w_hi = math.log(20 / 4) / math.log(25 / 4)
    assert cmp.interpolation_weights([4, 25, 50], 20) == pytest.approx([1 - w_hi, w_hi, 0], abs=1e-15)
    assert cmp.interpolation_weights([10, 20, 20, 40], 20).tolist() == [0, 0.5, 0.5, 0]  # a tie splits
    with pytest.raises(ValueError, match="outside"):
        cmp.interpolation_weights([10, 40], 50)


def test_ranges_overlap_and_primary_l0():
    assert cmp.seed_ranges(FAV) == {0: (10, 40), 1: (10, 80)}
    assert cmp.arm_range(FAV) == (10, 40) and cmp.arm_range(OTHER) == (5, 50)
    assert cmp.overlap(FAV, OTHER) == (10, 40)
    assert cmp.primary_l0("midpoint", (10, 40)) == pytest.approx(20, rel=1e-15)
    assert cmp.primary_l0(17, (10, 40)) == 17.0
    assert cmp.arm_range([_unit(0, 1, [0], [1], [0]), _unit(1, 2, [0], [1], [0])]) is None  # seeds disjoint


def test_point_values_against_float64_by_hand():
    res = cmp.compare(FAV, OTHER, n_boot=50, names=("A", "B"))
    assert res.comparable and res.l0 == pytest.approx(20, rel=1e-14)
    w1 = 1 / 3  # fav seed 1: weight of L0 80 at L0 20 between 10 and 80
    w4 = math.log(5) / math.log(6.25)  # other seed 1: weight of L0 25 between 4 and 25
    fav_S = [0.5 * 0.5 + 0.5 * 0.75, (1 - w1) * 0.2 + w1 * 1.0]
    other_S = [1 / 3, (1 - w4) * 0.25 + w4 * 2 / 3]
    fav_clusters_S = [0.5 * 0.5 + 0.5 * 0.5, (1 - w1) * 0.25 + w1 * 1.0]
    other_clusters_S = [0.25, (1 - w4) * 0.5 + w4 * 0.5]
    assert res.seed_values_fav == pytest.approx(fav_S, abs=1e-14)
    assert res.seed_values_other == pytest.approx(other_S, abs=1e-14)
    assert res.stat_fav == pytest.approx(np.mean(fav_S), abs=1e-14)
    assert res.delta == pytest.approx(np.mean(fav_S) - np.mean(other_S), abs=1e-14)
    assert res.stat_fav_clusters == pytest.approx(np.mean(fav_clusters_S), abs=1e-14)
    assert res.delta_clusters == pytest.approx(np.mean(fav_clusters_S) - np.mean(other_clusters_S), abs=1e-14)
    # the shares one SAE at a time
    assert cmp.feature_share(FAV[0].num_F, FAV[0].den_F) == 0.5
    assert cmp.cluster_share(OTHER[3].num_F, OTHER[3].den_F, OTHER[3].cluster_F) == 0.5
    # ν from the seed values (Welch–Satterthwaite), and the interval built on it
    v = [np.var(fav_S, ddof=1) / 2, np.var(other_S, ddof=1) / 2]
    assert res.df == pytest.approx(sum(v) ** 2 / (v[0] ** 2 + v[1] ** 2), rel=1e-12)
    half = stats.t.ppf(0.975, res.df) * res.se
    assert (res.ci_low, res.ci_high) == pytest.approx((res.delta - half, res.delta + half), abs=1e-14)
    # exact permutation test over C(4, 2) = 6 relabelings
    assert (res.n_relabelings, res.p_min) == (6, pytest.approx(1 / 6))
    row = res.row()
    assert row["delta"] == res.delta and "seed_values_fav" not in row


def test_num_must_imply_den_and_errors_name_the_unit():
    with pytest.raises(ValueError, match=r"seed 3, L0 12.*1 features are in num but not in den"):
        _unit(3, 12, [1, 1], [1, 0], [0, 1])
    with pytest.raises(ValueError, match=r"seed 3, L0 12\): den_F must be boolean"):
        SAEUnit(3, 12, np.array([1, 0]), np.array([1.0, np.nan]), np.array([0, 1]))
    assert SAEUnit(3, 12, np.array([1, 0]), np.array([1, 1]), np.array([0, 1])).num_F.dtype == bool
    comp = Comparator(FAV, OTHER, n_boot=10, names=("A", "B"))
    bad = [(u.num_F, u.den_F) for u in OTHER]
    bad[4] = (np.array([1, 1, 1], dtype=bool), np.array([1, 1, 0], dtype=bool))
    with pytest.raises(ValueError, match=r"arm 'B' SAE 4 \(SAE \(seed 1, L0 25\)\).*num but not in den"):
        comp.run(None, bad)
    with pytest.raises(ValueError, match="arm 'A': 3"):
        comp.run([(u.num_F, u.den_F) for u in FAV[:3]], None)


def test_no_overlap_is_not_comparable_and_names_both_ranges():
    low = [_unit(s, l0, [0, 1], [1, 1], [0, 1]) for s in (0, 1) for l0 in (1, 4)]
    high = [_unit(s, l0, [0, 1], [1, 1], [0, 1]) for s in (0, 1) for l0 in (10, 40)]
    res = cmp.compare(low, high, names=("vit", "dino"))
    assert not res.comparable and math.isnan(res.delta) and math.isnan(res.ci_low)
    assert "'vit' covers L0 [1, 4]" in res.message and "'dino' covers L0 [10, 40]" in res.message
    assert cmp.verdict(res, 0.001, 1.0) == ("not comparable", res.message)
    assert cmp.delta_curve((low, high), n_points=5)["delta"].size == 0
    assert cmp.delta_curve(low, high, n_points=5)["ci_low"].size == 0
    # an arm whose own seeds share no L0 is named with its seeds' ranges
    split = [_unit(0, 1, [0], [1], [0]), _unit(0, 2, [0], [1], [0]), _unit(1, 3, [0], [1], [0])]
    _, message, _ = cmp.comparable(split, high, names=("vit", "dino"))
    assert "'vit' has no L0 that all its seeds reach (seed 0 [1, 2], seed 1 [3, 3])" in message


def test_primary_l0_outside_the_overlap_is_not_comparable():
    res = cmp.compare(FAV, OTHER, l0=60, names=("A", "B"))
    assert not res.comparable
    assert "primary L0 60 lies outside the overlap [10, 40]" in res.message
    assert "'A' covers L0 [10, 40]" in res.message and "'B' covers L0 [5, 50]" in res.message
    comp = Comparator(FAV, OTHER, n_boot=10)
    assert comp.run(l0=60).comparable is False and comp.run(l0=30).comparable is True


def test_identical_arms_give_zero_exactly():
    res = cmp.compare(FAV, FAV, n_boot=400)
    assert res.delta == 0.0 and res.delta_clusters == 0.0
    assert res.ci_low < 0 < res.ci_high and res.clusters_ci_low < 0 < res.clusters_ci_high
    assert cmp.verdict(res, 0.5, 1.0)[0] == "not supported"


def test_bootstrap_variance_matches_its_closed_form():
    rng = np.random.default_rng(0)
    # stage 2 alone: one seed per arm, one SAE each, every cluster a single den feature → the share over
    # clusters is a mean of m Bernoulli values, whose bootstrap variance is p(1-p)/m
    m = 400
    fav = [SAEUnit(0, 10, rng.random(m) < 0.3, np.ones(m, bool), np.arange(m))]
    other = [SAEUnit(0, 10, rng.random(m) < 0.6, np.ones(m, bool), np.arange(m))]
    res = cmp.compare(fav, other, n_boot=4000)
    p = [fav[0].num_F.mean(), other[0].num_F.mean()]
    assert res.se_clusters == pytest.approx(math.sqrt(sum(q * (1 - q) / m for q in p)), rel=0.05)
    assert math.isinf(res.df) and "normal" in res.message
    assert (res.ci_high - res.ci_low) / 2 == pytest.approx(stats.norm.ppf(0.975) * res.se, rel=1e-12)
    # stage 1 alone: within an SAE every cluster has the same num/den, so only seeds vary; then
    # SE² = Σ Var_boot · n/(n-1) ≈ Σ s²/n (the Welch standard error of the seed values)
    shares = {"fav": [0.2, 0.4, 0.5, 0.9], "other": [0.1, 0.3, 0.35]}
    arms = {}
    for name, values in shares.items():
        arms[name] = []
        for s, share in enumerate(values):
            num_F = np.tile([True] * int(20 * share) + [False] * (20 - int(20 * share)), 10)
            arms[name].append(SAEUnit(s, 10, num_F, np.ones(200, bool), np.repeat(np.arange(10), 20)))
    res = cmp.compare(arms["fav"], arms["other"], n_boot=5000)
    v = [np.var(x, ddof=1) / len(x) for x in shares.values()]
    assert res.se == pytest.approx(math.sqrt(sum(v)), rel=0.05)
    assert res.df == pytest.approx(sum(v) ** 2 / (v[0] ** 2 / 3 + v[1] ** 2 / 2), rel=1e-9)
    assert res.boot_high - res.boot_low < res.ci_high - res.ci_low  # the percentile interval is narrower


def test_a_relabeling_reuses_the_draws():
    rng = np.random.default_rng(1)
    relabel = []
    for u in OTHER:
        den = u.den_F | (rng.random(len(u.den_F)) < 0.5)
        relabel.append((den & (rng.random(len(den)) < 0.5), den))
    comp = Comparator(FAV, OTHER, n_boot=300, seed=4)
    got = comp.run(None, relabel)
    fresh = cmp.compare(
        FAV,
        [dataclasses.replace(u, num_F=n, den_F=d) for u, (n, d) in zip(OTHER, relabel)],
        n_boot=300,
        seed=4,
    )
    assert got == fresh  # common random numbers: the same draws as a Comparator built on the relabeling
    assert got != comp.run()


def test_delta_curve_spans_the_overlap_with_the_same_draws():
    comp = Comparator(FAV, OTHER, n_boot=200, seed=2)
    curve = cmp.delta_curve(comp, n_points=7)
    assert (
        cmp.delta_curve(FAV, OTHER, n_points=7, n_boot=200, seed=2)["ci_low"].tolist()
        == curve["ci_low"].tolist()
    )
    assert curve["l0"] == pytest.approx(np.geomspace(10, 40, 7), rel=1e-12)
    at = cmp.compare(FAV, OTHER, l0=float(curve["l0"][2]), n_boot=200, seed=2)  # draws in another order
    for key in ("delta", "ci_low", "ci_high", "boot_low", "delta_clusters", "clusters_ci_high"):
        assert curve[key][2] == pytest.approx(getattr(at, key), rel=1e-12)
    assert np.all(curve["ci_low"] <= curve["delta"]) and np.all(curve["delta"] <= curve["ci_high"])


# --- synthetic sweeps ---------------------------------------------------------------------------------------


def _curve_fav(l0: float) -> float:
    return 0.50 + 0.06 * math.log(l0 / 30)


def _curve_other(l0: float) -> float:
    return 0.45 + 0.02 * math.log(l0 / 30)


def _sweep(rng, n_seeds, curve, grid, tau, n_features=2000) -> list[SAEUnit]:
    """An arm: per seed an offset N(0, tau²) shared by its SAEs; per SAE (L0 = grid value × jitter) the
    probability curve(L0) + offset; clusters of 1–3 features share one label: den with probability 0.5,
    num given den with that probability. The truth at any L0 is curve(L0) (linear in log L0)."""
    units = []
    for s in range(n_seeds):
        offset = rng.normal(0, tau)
        for g in grid:
            l0 = g * math.exp(rng.uniform(-0.15, 0.15))
            size_C = rng.integers(1, 4, size=n_features)
            size_C = size_C[: np.searchsorted(np.cumsum(size_C), n_features) + 1]
            size_C[-1] -= size_C.sum() - n_features
            den_C = rng.random(len(size_C)) < 0.5
            num_C = den_C & (rng.random(len(size_C)) < curve(l0) + offset)
            cluster_F = np.repeat(np.arange(len(size_C)), size_C)
            units.append(SAEUnit(s, l0, num_C[cluster_F], den_C[cluster_F], cluster_F))
    return units


def test_studentized_interval_covers_the_true_delta():
    """400 synthetic sweeps (4 + 5 seeds, 3 SAEs each; seed noise τ = 0.12 and 0.08, well above the
    within-SAE noise of a matched value, ≈ 0.022): the 95 % studentized CI covers the true Δ at the primary
    L0 in 93–97 % of them (measured: 95.2 %; 95.8 % over 2000 repeats); the percentile interval of the
    same replicates covers less (measured: 84.8 %; 85 % over 2000). With equal τ = 0.1 in both arms Welch's ν
    is conservative and the CI covers 96.4 % (2000 repeats); with τ = 0.02 ≈ within-SAE noise, 99.8 %
    (percentile: 95 %)."""
    covered, covered_percentile, n_rep = 0, 0, 400
    for r in range(n_rep):
        rng = np.random.default_rng(r)
        fav = _sweep(rng, 4, _curve_fav, (12, 30, 75), tau=0.12)
        other = _sweep(rng, 5, _curve_other, (10, 25, 60), tau=0.08)
        res = cmp.compare(fav, other, n_boot=200, seed=r)
        true = _curve_fav(res.l0) - _curve_other(res.l0)
        covered += res.ci_low <= true <= res.ci_high
        covered_percentile += res.boot_low <= true <= res.boot_high
    assert 0.93 <= covered / n_rep <= 0.97, covered / n_rep
    assert covered_percentile < covered - 0.03 * n_rep, (covered_percentile, covered)


def test_permutation_p_is_uniform_under_no_difference():
    """Both arms drawn alike (5 seeds each, C(10, 5) = 252 relabelings): over 400 repeats p is uniform
    (KS p > 0.01, and D < 0.085: the 1 % critical value 0.081 plus the grid's step 1/252)."""
    p = []
    for r in range(400):
        rng = np.random.default_rng(10_000 + r)
        arms = [_sweep(rng, 5, _curve_other, (10, 25, 60), tau=0.05, n_features=300) for _ in range(2)]
        res = cmp.compare(*arms, n_boot=2, seed=r)
        assert (res.n_relabelings, res.p_min) == (252, pytest.approx(1 / 252))
        p.append(res.p_perm)
    ks = stats.kstest(p, "uniform")
    assert ks.pvalue > 0.01 and ks.statistic < 0.085, ks


def test_permutation_test_exact_and_sampled():
    assert cmp.permutation_test([3, 4], [1, 2]) == (pytest.approx(1 / 6), pytest.approx(1 / 6), 6)
    assert cmp.permutation_test([1, 2], [3, 4])[0] == 1.0  # the claimed direction only
    # ties count as "at least as large": [1, 1] vs [1, 1] → every relabeling ties
    assert cmp.permutation_test([1, 1], [1, 1])[0] == 1.0
    p, p_min, n = cmp.permutation_test(np.arange(10.0) + 5, np.arange(10.0), n_perm=999, seed=3)
    assert (n, p_min) == (1000, 1 / 1000) and 0 < p < 0.05
    assert cmp.permutation_test([1, 2], [3, 4])[2] == 6


# --- a family of claims ----------------------------------------------------------------------------------


def test_holm_by_hand():
    # m = 4 non-NaN: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max so far 0.06
    got = cmp.holm([0.01, 0.04, 0.03, 0.005, np.nan])
    assert got[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15) and np.isnan(got[4])
    assert cmp.holm([0.3, 0.6]).tolist() == [0.6, 0.6]  # 0.3·2, max(0.6, 0.6·1)
    assert cmp.holm([0.5, 0.9, 0.7]).tolist() == [1.0, 1.0, 1.0]  # capped at 1
    assert np.isnan(cmp.holm([np.nan])).all()


def _supported(**changes) -> cmp.Comparison:
    base = cmp.compare(FAV, OTHER, n_boot=20)  # a real result, its numbers then set by hand
    values = {"ci_low": 0.02, "ci_high": 0.2, "delta": 0.1, "delta_clusters": 0.05, "p_min": 1 / 252}
    values.update(n_seeds_fav=5, n_seeds_other=5)
    return dataclasses.replace(base, **{**values, **changes})


@pytest.mark.parametrize(
    ("changes", "p_adj", "agreement", "expected", "reason"),
    [
        ({}, 0.01, 0.9, "supported", "Δ = 0.1"),
        ({"comparable": False, "message": "no L0 in common"}, 0.01, 0.9, "not comparable", "no L0 in common"),
        (
            {"n_seeds_other": 1, "ci_low": -1},
            0.01,
            0.9,
            "inconclusive",
            "'other' 1; a claim needs at least 2",
        ),
        ({"ci_low": 0.0}, 0.01, 0.9, "not supported", "does not exclude 0"),
        ({"ci_low": -0.3, "ci_high": -0.1}, 0.01, 0.9, "not supported", "lies below 0"),
        ({}, 0.06, 0.9, "inconclusive", "p = 0.06 > alpha = 0.05."),
        ({"p_min": 1 / 6}, 0.167, 0.9, "inconclusive", "cannot reach alpha with these seeds (p_min = 0.167"),
        ({}, 0.01, 0.5, "inconclusive", "only 50% of specifications agree"),
        ({}, 0.01, float("nan"), "inconclusive", "not checked"),
        ({"delta_clusters": 0.0}, 0.01, 0.9, "inconclusive", "Δ over clusters = 0"),
    ],
)
def test_verdict_order(changes, p_adj, agreement, expected, reason):
    got, why = cmp.verdict(_supported(**changes), p_adj, agreement, VerdictRules())
    assert got == expected and reason in why, why
