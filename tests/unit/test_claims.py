"""The claims table on synthetic SAEs: verdicts from the rule, Holm over secondary rows, "not comparable"
with the sweep to change; the controls table's exact McNemar test against a hand count."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from vitsae.analysis import claims
from vitsae.analysis.settings import Arm, ClaimSettings, ComparisonSpec


def sae_tables(
    model: str, sweep: str, seed: int, l0: float, share: float, rng, n: int = 600
) -> claims.SAETables:
    """An SAE whose live features are labelled abstract with probability ``share`` (ImageNet table)."""
    abstract = rng.random(n) < share
    table = pd.DataFrame({
        "feature": np.arange(n), "n_top": np.full(n, 16), "label": np.where(abstract, "abstract", "unclear"),
        "trait": np.zeros(n, bool), "animal": np.zeros(n, bool),
    })  # fmt: skip
    null = table.assign(label="unclear")
    return claims.SAETables(("imagenet-x", model, 10, sweep, f"{sweep}-l{l0:g}-s{seed}"), seed, l0, "relu_l1", table,
                            null, np.arange(n))  # fmt: skip


def groups_with(effect: float, seeds: int = 5, l0s=(8.0, 16.0, 32.0), seed: int = 0) -> dict:
    """Model a (favoured) and b at a share of 0.10 + effect and 0.10, each seed offset by N(0, 0.01)."""
    rng = np.random.default_rng(seed)
    out: dict = {}
    for model, base in (("a", 0.10 + effect), ("b", 0.10)):
        for s in range(seeds):
            offset = rng.normal(0, 0.01)
            for l0 in l0s:
                sae = sae_tables(model, "paper", s, l0, base + offset, rng)
                out.setdefault(sae.group, []).append(sae)
    return out


def settings(*rows: ComparisonSpec, primary_l0: float | str = 16.0) -> ClaimSettings:
    return ClaimSettings(comparisons=rows, primary_l0=primary_l0, n_boot=300, n_perm=1000)


def row(
    name: str, role: str = "primary", fav: str = "a", other: str = "b", sweep: str = "paper"
) -> ComparisonSpec:
    return ComparisonSpec(name, 1, role, "imagenet-x", 10, Arm(fav, sweep), Arm(other, sweep))


def agreeing(names, share: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame([{"comparison": n, "comparable": True, "agrees": i < share * 10} for n in names
                         for i in range(10)])  # fmt: skip


def test_a_large_effect_with_five_seeds_is_supported_and_the_same_model_twice_is_not():
    groups = groups_with(effect=0.10)
    for group in list(groups):  # model a again, as a "twin" sweep with other seeds' draws
        if group[1] == "a":
            twin = groups_with(effect=0.10, seed=1)[group]
            groups[(group[0], "a", group[2], "twin")] = twin
    rows = [
        row("effect"),
        ComparisonSpec("identity", 1, "control", "imagenet-x", 10, Arm("a", "twin"), Arm("a", "paper")),
    ]
    out = claims.claims_table(groups, settings(*rows), agreeing(["effect", "identity"]))
    assert list(out.columns) == claims.CLAIMS_COLUMNS
    effect, identity = out.iloc[0], out.iloc[1]
    assert effect["verdict"] == "supported", effect["reason"]
    assert effect["n_relabelings"] == math.comb(10, 5) and effect["p_perm"] == pytest.approx(1 / 252)
    assert effect["ci_low"] > 0 and abs(effect["delta"] - 0.10) < 0.03
    assert identity["verdict"] == "not supported" and identity["ci_low"] <= 0 <= identity["ci_high"]


def test_the_spec_curve_and_holm_can_each_turn_supported_into_inconclusive():
    groups = groups_with(effect=0.10)
    # low agreement over the thresholds: inconclusive, naming the agreement
    out = claims.claims_table(groups, settings(row("effect")), agreeing(["effect"], share=0.5))
    assert out.iloc[0]["verdict"] == "inconclusive" and "50% of specifications" in out.iloc[0]["reason"]
    # Holm runs over the secondary rows only: three copies of one p multiply it by three (capped at 1)
    rows = [row("p"), *(row(f"s{i}", role="secondary") for i in range(3))]
    out = claims.claims_table(groups, settings(*rows), agreeing([r.name for r in rows])).set_index(
        "comparison"
    )
    assert out.loc["p", "p_holm"] == out.loc["p", "p_perm"]
    assert np.allclose(out.loc[["s0", "s1", "s2"], "p_holm"], min(1.0, 3 * out.loc["s0", "p_perm"]))


def test_arms_whose_l0_ranges_do_not_overlap_are_not_comparable_and_the_sweep_is_named():
    groups = groups_with(effect=0.10)
    for key in [k for k in groups if k[1] == "b"]:
        groups[key] = [
            claims.SAETables(s.key, s.seed, s.l0 * 10, s.architecture, s.table, s.null, s.cluster_F)
            for s in groups[key]
        ]
    out = claims.claims_table(groups, settings(row("effect")), agreeing(["effect"]))
    assert out.iloc[0]["verdict"] == "not comparable"
    assert "sweeps.paper" in out.iloc[0]["reason"] and "80" in out.iloc[0]["reason"]


def test_mcnemar_against_scipy_and_the_controls_rows_against_a_hand_count():
    for up, down in ((8, 2), (0, 5), (3, 3), (40, 21)):
        ref = stats.binomtest(up, up + down, 0.5, alternative="greater").pvalue if up + down else 1.0
        assert claims.mcnemar_greater(up, down) == pytest.approx(ref, rel=1e-12)
    table = pd.DataFrame({
        "dataset": "d", "model": "m", "layer": 10, "sweep": "s", "feature": range(6),
        "n_top": [16, 16, 16, 16, 16, 0],
        "label": ["abstract", "abstract", "abstract", "unclear", "single-class", "unclear"],
        "trait": [False] * 6,
    })  # fmt: skip
    null = table.assign(label=["unclear", "abstract", "unclear", "abstract", "unclear", "abstract"])
    rows = {r["label"]: r for r in claims.controls_rows("observed", table, null)}
    abstract = rows["abstract"]
    # live features 0-4; abstract observed at 0, 1, 2 and in the null at 1, 3 (5 is dead)
    assert (abstract["n_live"], abstract["count"], abstract["null_count"]) == (5, 3, 2)
    assert (abstract["discordant_up"], abstract["discordant_down"]) == (2, 1)
    assert abstract["p"] == pytest.approx(stats.binomtest(2, 3, 0.5, alternative="greater").pvalue)
    assert rows["single-class"]["count"] == 1 and rows["taxonomic"]["count"] == 0


def test_quality_failures_are_named_in_the_row_and_its_reason_without_changing_the_verdict():
    groups = groups_with(effect=0.10)
    sae_ids = {m: sorted(s.key[4] for s in groups[("imagenet-x", m, 10, "paper")]) for m in ("a", "b")}
    quality = pd.DataFrame([
        {"dataset": "imagenet-x", "model": m, "layer": 10, "sweep": "paper", "sae_id": i,
         "stability": 0.8 if m == "a" else 0.4, "failures": "dead>0.5" if (m, i) == ("b", sae_ids["b"][0]) else np.nan}
        for m in ("a", "b") for i in sae_ids[m]
    ])  # fmt: skip
    base = claims.claims_table(groups, settings(row("effect")), agreeing(["effect"])).iloc[0]
    assert base["quality_failures"] == "not checked" and math.isnan(base["stability_favoured"])
    out = claims.claims_table(groups, settings(row("effect")), agreeing(["effect"]), quality=quality).iloc[0]
    assert out["stability_favoured"] == pytest.approx(0.8) and out["stability_other"] == pytest.approx(0.4)
    n = len(sae_ids["a"]) + len(sae_ids["b"])
    assert out["quality_failures"] == f"1 of {n} SAEs fail: b {sae_ids['b'][0]} (dead>0.5)"
    assert out["verdict"] == base["verdict"] == "supported"
    assert out["reason"] == f"{base['reason']} Quality warning: {out['quality_failures']}."
    clean = claims.claims_table(groups, settings(row("effect")), agreeing(["effect"]),
                                quality=quality.assign(failures=np.nan)).iloc[0]  # fmt: skip
    assert clean["quality_failures"] == "" and clean["reason"] == base["reason"]


def test_rated_precision_goes_beside_findings_1_and_2_only():
    rows = pd.DataFrame({"claim": [1, 2, 3], "dataset": ["in", "nat", "in"], "favoured": ["m1", "m2", "m1"],
                         "other": ["m2", "m1", "m1"]}).reindex(columns=claims.CLAIMS_COLUMNS)  # fmt: skip
    precision = pd.DataFrame({
        "dataset": ["in", "in", "nat", "nat"], "model": ["m1", "m2", "m1", "m2"],
        "label": ["abstract", "abstract", "trait", "trait"], "n_rated": [4, 3, 0, 5],
        "precision": [0.75, 0.5, np.nan, 0.8], "corrected_share": [0.3, 0.1, np.nan, 0.4],
    })  # fmt: skip
    out = claims.add_ratings(rows, precision)
    assert out["rated_label"].tolist()[:2] == ["abstract", "trait"] and pd.isna(out.at[2, "rated_label"])
    assert out.loc[0, ["precision_favoured", "precision_other", "corrected_favoured", "n_rated"]].tolist() == [
        0.75, 0.5, 0.3, 7]  # fmt: skip
    assert out.at[1, "precision_favoured"] == 0.8 and np.isnan(out.at[1, "precision_other"])  # m1 unrated
    assert out.loc[2, ["precision_favoured", "n_rated"]].isna().all()  # finding 3's row: nothing to rate


def with_model(
    groups: dict, model: str, share: float, l0s=(8.0, 16.0, 32.0), seeds: int = 3, seed: int = 7
) -> dict:
    """``groups`` plus a model's SAEs of sweep paper at ``share`` abstract (a baseline)."""
    rng = np.random.default_rng(seed)
    out = dict(groups)
    for s in range(seeds):
        for l0 in l0s:
            sae = sae_tables(model, "paper", s, l0, share, rng)
            out.setdefault(sae.group, []).append(sae)
    return out


def matched_share(groups: dict, model: str, l0: float = 16.0) -> float:
    """Mean over seeds of the abstract share of each seed's SAE at ``l0`` (an exact hit: weight 1)."""
    saes = [s for s in groups[("imagenet-x", model, 10, "paper")] if s.l0 == l0]
    return float(np.mean([(s.table["label"] == "abstract").mean() for s in saes]))


def test_a_baseline_as_far_above_the_other_model_turns_supported_into_not_supported():
    groups = with_model(with_model(groups_with(effect=0.10), "rand", 0.11), "sup", 0.20, seed=8)
    plain = claims.claims_table(groups, settings(row("effect")), agreeing(["effect"])).iloc[0]
    assert plain["verdict"] == "supported" and plain["stat_baselines"] == ""
    assert np.isnan(plain["baseline_delta"]) and plain["baseline_max"] == ""

    def judged(*baselines):
        s = ClaimSettings(comparisons=(row("effect"),), primary_l0=16.0, n_boot=300, n_perm=1000,
                          baselines=baselines)  # fmt: skip
        return claims.claims_table(groups, s, agreeing(["effect"])).iloc[0]

    stat = {m: matched_share(groups, m) for m in ("a", "b", "rand", "sup")}
    assert plain["stat_favoured"] == pytest.approx(stat["a"])
    assert plain["stat_other"] == pytest.approx(stat["b"])
    # a random-weight baseline just above the other model: the claim stands
    low = judged("rand")
    assert low["verdict"] == "supported", low["reason"]
    assert low["stat_baselines"] == f"rand={stat['rand']:.6g}" and low["baseline_max"] == "rand"
    assert low["baseline_delta"] == pytest.approx(stat["rand"] - stat["b"], abs=1e-12)
    assert low["ci_low"] == plain["ci_low"] > low["baseline_delta"]
    assert low["reason"].startswith(plain["reason"]) and "Largest baseline Δ" in low["reason"]
    # a baseline as high as the favoured model: Δ does not exceed what a model without its objective shows
    high = judged("rand", "sup")
    assert high["stat_baselines"] == f"rand={stat['rand']:.6g}; sup={stat['sup']:.6g}"
    assert high["baseline_max"] == "sup"
    assert high["baseline_delta"] == pytest.approx(stat["sup"] - stat["b"], abs=1e-12)
    assert high["ci_low"] == plain["ci_low"] <= high["baseline_delta"]
    assert high["verdict"] == "not supported"
    assert high["reason"] == (
        f"Δ's 95% CI lower end {plain['ci_low']:.4g} does not exceed the largest baseline Δ "
        f"{high['baseline_delta']:.4g} (sup − b): a baseline model lies as far above b as the favoured one."
    )
    # everything else in the row is what it was without baselines
    same = [c for c in claims.CLAIMS_COLUMNS if c not in ("stat_baselines", "baseline_delta", "baseline_max",
                                                          "verdict", "reason")]  # fmt: skip
    pd.testing.assert_series_equal(high[same], plain[same], check_names=False)


def test_a_baseline_missing_the_l0_or_the_sweep_is_said_and_controls_are_left_alone():
    groups = with_model(groups_with(effect=0.10), "far", 0.11, l0s=(80.0, 160.0))
    rows = (row("effect"), row("topk-row", role="secondary", sweep="topk"), row("ctl", role="control"))
    s = ClaimSettings(comparisons=rows, primary_l0=16.0, n_boot=300, n_perm=1000, baselines=("far",))
    compared = [k for k in groups if k[3] == "paper" and k[1] in ("a", "b")]
    for key in compared:  # the two compared models in a topk sweep too, without the baseline
        groups[(*key[:3], "topk")] = groups[key]
    out = claims.claims_table(groups, s, agreeing(["effect", "topk-row", "ctl"])).set_index("comparison")
    assert out.loc["effect", "verdict"] == "inconclusive"
    assert out.loc["effect", "stat_baselines"] == "far=not comparable"
    assert "Baseline(s) far of sweep paper have no SAEs around L0 16" in out.loc["effect", "reason"]
    # the topk sweep trains no baseline: judged without them, and the reason says so
    assert out.loc["topk-row", "verdict"] == "supported" and out.loc["topk-row", "stat_baselines"] == ""
    assert out.loc["topk-row", "reason"].endswith(
        "No baseline model has SAEs in sweep topk: the baseline rule was not applied."
    )
    # a control row is judged by the other checks alone (this one compares a with b: "supported")
    assert out.loc["ctl", "verdict"] == "supported" and out.loc["ctl", "stat_baselines"] == ""
    assert "baseline" not in out.loc["ctl", "reason"]
    # a baseline that does reach the L0 and rules the row out decides it: "not supported"
    groups = with_model(groups, "sup", 0.20, seed=8)
    s = ClaimSettings(
        comparisons=rows[:1], primary_l0=16.0, n_boot=300, n_perm=1000, baselines=("far", "sup")
    )
    both = claims.claims_table(groups, s, agreeing(["effect"])).iloc[0]
    assert both["verdict"] == "not supported" and both["baseline_max"] == "sup"
    assert both["stat_baselines"] == f"far=not comparable; sup={matched_share(groups, 'sup'):.6g}"
