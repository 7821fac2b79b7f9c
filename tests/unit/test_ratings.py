"""Blinded ratings (vitsae.analysis.ratings): the sample, the raters' files, κ and precision by hand."""

import hashlib
import itertools
import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from vitsae.analysis import ratings
from vitsae.analysis.settings import RatingSettings

CATS = ("semantic abstraction", "related kinds", "morphological part", "text", "uninterpretable")
SETTINGS = RatingSettings(
    per_label=3,
    catch_per_model=2,
    labels=("abstract", "taxonomic", "trait"),
    categories=CATS,
    correct=(
        ("abstract", ("semantic abstraction",)),
        ("taxonomic", ("related kinds",)),
        ("trait", ("morphological part",)),
    ),
    n_boot=1000,
)
# Each SAE of a fixture table: features 0-3 abstract (3 never fired), 4-5 taxonomic (5 a trait), 6-8 unclear
# (6 a trait), 9 labelled dead though it has top images. Live: 0, 1, 2, 4, 5, 6, 7, 8.
LABELS = ["abstract"] * 4 + ["taxonomic"] * 2 + ["unclear"] * 3 + ["dead"]
TRAITS = [False] * 5 + [True, True] + [False] * 3
N_TOP = [5, 5, 5, 0, 5, 5, 5, 5, 5, 5]


def table(
    path, model, labels, traits=None, n_top=None, sweep="paper", sae_ids=("a-s0", "a-s1"), dataset="ds"
):
    n = len(labels)
    parts = [
        pd.DataFrame(
            {
                "sae_id": sae,
                "dataset": dataset,
                "model": model,
                "layer": 3,
                "sweep": sweep,
                "feature": range(n),
                "n_top": n_top if n_top is not None else [5] * n,
                "label": labels,
                "trait": traits if traits is not None else [False] * n,
                "frequency": 0.1,
            }
        )
        for sae in sae_ids
    ]
    pd.concat(parts).to_csv(path, index=False)
    return str(path)


@pytest.fixture
def tables(tmp_path):
    a = table(tmp_path / "a.csv", "m1", LABELS, TRAITS, N_TOP)
    b = table(tmp_path / "b.csv", "m2", LABELS, TRAITS, N_TOP)
    # the null sweep of m1: six unclear features, 1 and 4 never fired
    null = table(
        tmp_path / "n.csv", "m1", ["unclear"] * 6, n_top=[5, 0, 5, 5, 0, 5], sweep="null", sae_ids=("n-s0",)
    )
    return [a, b], [null]


def drawn(sample: pd.DataFrame) -> set:
    return set(sample[["model", "label", "sae_id", "feature"]].itertuples(index=False, name=None))


def test_rating_label_and_liveness():
    assert ratings.rating_label({"label": "taxonomic", "trait": True}) == "trait"
    assert ratings.rating_label({"label": "taxonomic", "trait": "False"}) == "taxonomic"
    t = pd.DataFrame(
        {
            "label": ["abstract", "unclear", "dead", "clade", "trait"],
            "trait": [False, "True", False, None, True],
            "n_top": [5, 0, 5, 3, 2],
        }
    )
    assert ratings.rating_labels(t).tolist() == ["abstract", "trait", "dead", "clade", "trait"]
    assert ratings.live_features(t).tolist() == [True, False, False, True, True]


def test_sample_sizes_liveness_and_catch(tables):
    obs, null = tables
    s = ratings.draw_sample(obs, null, SETTINGS)
    assert s.columns.tolist() == ratings.SAMPLE_COLUMNS
    sizes = s.groupby(["model", "label"]).size().to_dict()
    # per model: abstract live 0-2 in two SAEs (6) -> 3; taxonomic (not trait) only 4 (2) -> 2;
    # trait 5 and 6 (4) -> 3; catch (m1's null table only): 4 live -> 2
    assert sizes == {
        ("m1", "abstract"): 3,
        ("m1", "taxonomic"): 2,
        ("m1", "trait"): 3,
        ("m1", "catch"): 2,
        ("m2", "abstract"): 3,
        ("m2", "taxonomic"): 2,
        ("m2", "trait"): 3,
    }
    available = s.groupby(["model", "label"])["n_available"].unique().map(list).to_dict()
    assert available == {
        ("m1", "abstract"): [6],
        ("m1", "taxonomic"): [2],
        ("m1", "trait"): [4],
        ("m1", "catch"): [4],
        ("m2", "abstract"): [6],
        ("m2", "taxonomic"): [2],
        ("m2", "trait"): [4],
    }
    want = {"abstract": {0, 1, 2}, "taxonomic": {4}, "trait": {5, 6}, "catch": {0, 2, 3, 5}}
    for label, g in s.groupby("label"):
        assert set(g["feature"]) <= want[label], label
    assert not s.duplicated(["model", "sae_id", "feature"]).any()
    catch = s[s["catch"]]
    assert (catch["label"] == "catch").all() and (catch["sweep"] == "null").all()
    assert (catch["sae_id"] == "n-s0").all() and not s.loc[~s["catch"], "sweep"].eq("null").any()
    # min(catch_per_model, available): asking for 10 gets the four live null features
    more = ratings.draw_sample(obs, null, replace(SETTINGS, catch_per_model=10))
    assert sorted(more.loc[more["catch"], "feature"]) == [0, 2, 3, 5]
    none = ratings.draw_sample(obs, null, replace(SETTINGS, catch_per_model=0))
    assert not none["catch"].any() and len(none) == len(s) - 2


def test_sample_is_seeded_and_independent_of_table_order(tables):
    obs, null = tables
    s = ratings.draw_sample(obs, null, SETTINGS)
    pd.testing.assert_frame_equal(s, ratings.draw_sample(obs, null, SETTINGS))
    pd.testing.assert_frame_equal(s, ratings.draw_sample(obs[::-1], null, SETTINGS))
    other = ratings.draw_sample(obs, null, replace(SETTINGS, seed=7))
    assert drawn(other) != drawn(s)
    assert other["sample_id"].iat[0] != s["sample_id"].iat[0]


def test_adding_a_group_leaves_the_other_groups_draws_alone(tables):
    obs, null = tables
    before = ratings.draw_sample(obs[:1], null, SETTINGS)
    after = ratings.draw_sample(obs, null, SETTINGS)  # adds model m2's three groups
    assert set(after["model"]) == {"m1", "m2"} and drawn(before) == drawn(after[after["model"] == "m1"])
    more = ratings.draw_sample(obs, null, replace(SETTINGS, labels=("unclear", *SETTINGS.labels)))
    assert drawn(more[more["label"] != "unclear"]) == drawn(after)
    assert more.groupby("model")["label"].apply(lambda x: (x == "unclear").sum()).tolist() == [3, 3]


def test_trial_ids_and_sample_id(tables):
    obs, null = tables
    s = ratings.draw_sample(obs, null, replace(SETTINGS, seed=7))
    assert s["trial"].tolist() == [f"t{i:04d}" for i in range(1, len(s) + 1)]
    # shuffled: the 7 groups do not come as 7 runs of consecutive trials
    group = (s["model"] + "/" + s["label"]).tolist()
    runs = 1 + sum(x != y for x, y in itertools.pairwise(group))
    assert s.groupby(["model", "label"]).ngroups == 7 and runs > 7
    assert s["sample_id"].nunique() == 1 and re.fullmatch(r"[0-9a-f]{12}", s["sample_id"].iat[0])
    place = ["trial", "dataset", "model", "layer", "sweep", "sae_id", "feature"]
    rows = [[t, d, m, int(la), sw, i, int(f)] for t, d, m, la, sw, i, f in s[place].itertuples(index=False)]
    recipe = hashlib.sha256(json.dumps([7, rows], separators=(",", ":")).encode()).hexdigest()[:12]
    assert s["sample_id"].iat[0] == recipe
    # another drawn set, same seed: another id
    fewer = ratings.draw_sample(obs, null, replace(SETTINGS, seed=7, per_label=2))
    assert drawn(fewer) != drawn(s) and fewer["sample_id"].iat[0] != recipe
    moved = s.assign(feature=s["feature"].where(s["trial"] != "t0003", 99))
    assert ratings.sample_digest(7, moved) != recipe


def test_missing_column_names_the_table(tmp_path, tables):
    obs, null = tables
    bad = tmp_path / "bad.csv"
    pd.read_csv(obs[0]).drop(columns="trait").to_csv(bad, index=False)
    with pytest.raises(ValueError, match=rf"concept table {re.escape(str(bad))} lacks columns \['trait'\]"):
        ratings.draw_sample([obs[1], bad], null, SETTINGS)
    with pytest.raises(ValueError, match=rf"catch table {re.escape(str(bad))} lacks"):
        ratings.draw_sample(obs, [bad], SETTINGS)


def test_label_shares_by_hand(tables):
    obs, _null = tables
    sh = ratings.label_shares(obs).set_index(["model", "label"])
    # per model: 16 live (8 per SAE); abstract 0-2 (6), taxonomic 4-5 (4, the trait 5 too), trait 5-6 (4),
    # unclear 6-8 (6); dead and never-fired features are not live
    m1 = sh.loc["m1"]
    assert m1["n_live"].eq(16).all()
    assert m1["count"].to_dict() == {"abstract": 6, "taxonomic": 4, "trait": 4, "unclear": 6}
    assert m1.loc["abstract", "share"] == pytest.approx(6 / 16)
    assert sh.loc[("m2", "trait"), "share"] == pytest.approx(4 / 16)


def test_cohen_kappa_by_hand():
    a = ["x"] * 5 + ["y"] * 3 + ["z"] * 2
    b = ["x", "x", "x", "x", "y", "y", "y", "y", "z", "z"]
    # they differ on item 4 only (x against y): p_o = 9/10
    # marginals: A x .5, y .3, z .2; B x .4, y .4, z .2 -> p_e = .20 + .12 + .04 = .36
    # kappa = (.9 - .36) / (1 - .36) = .54 / .64 = 0.84375
    assert ratings.cohen_kappa(a, b) == pytest.approx(0.84375)
    assert ratings.cohen_kappa(a, a) == pytest.approx(1.0)
    assert np.isnan(ratings.cohen_kappa(["x"] * 3, ["x"] * 3))  # p_e = 1
    with pytest.raises(ValueError, match="same items: 2 and 1"):
        ratings.cohen_kappa(["x", "y"], ["x"])


def test_cohen_kappa_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    a = rng.choice(["p", "q", "r"], 40).tolist()
    b = [x if rng.random() < 0.6 else rng.choice(["p", "q", "r"]) for x in a]
    assert ratings.cohen_kappa(a, b) == pytest.approx(metrics.cohen_kappa_score(a, b))


def test_fleiss_kappa_wikipedia_example():
    # https://en.wikipedia.org/wiki/Fleiss%27_kappa#Worked_example: 10 items, 14 raters, 5 categories
    counts = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    # P-bar = 0.378, P_e = 0.213 -> kappa = (0.378 - 0.213) / (1 - 0.213) = 0.210
    assert ratings.fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)
    assert np.isnan(ratings.fleiss_kappa(np.array([[3, 0], [3, 0]])))  # P_e = 1
    with pytest.raises(ValueError, match="same number"):
        ratings.fleiss_kappa(np.array([[1, 1], [2, 1]]))


def write(path, rater, sample_id, items, **extra):
    doc = {
        "format": "vitsae-ratings",
        "version": 1,
        "rater": rater,
        "sample_id": sample_id,
        "exported": "now",
        "ratings": [{"trial": t, "category": c, "note": f"{rater} on {t}"} for t, c in items],
        **extra,
    }
    path.write_text(json.dumps(doc))
    return path


def small_sample(sample_id="s1"):
    return pd.DataFrame(
        {
            "trial": ["t0001", "t0002", "t0003", "t0004", "t0005", "t0006"],
            "sample_id": sample_id,
            "seed": 0,
            "dataset": "ds",
            "model": ["m1", "m1", "m2", "m1", "m1", "m2"],
            "layer": 3,
            "sweep": "paper",
            "sae_id": "a",
            "feature": [1, 2, 3, 4, 5, 6],
            "label": ["abstract", "abstract", "abstract", "catch", "clade", "abstract"],
            "catch": [False, False, False, True, False, False],
            "n_available": [5, 5, 7, 9, 2, 7],
        }
    )


SHARES = pd.DataFrame(
    {
        "dataset": "ds",
        "model": ["m1", "m2", "m1"],
        "label": ["abstract", "abstract", "clade"],
        "n_live": 10,
        "count": [4, 2, 1],
        "share": [0.4, 0.2, 0.1],
    }
)


def two_raters(tmp_path, sample_id="s1"):
    a = write(
        tmp_path / "a.json",
        "alice",
        sample_id,
        [
            ("t0001", "semantic abstraction"),
            ("t0002", "semantic abstraction"),
            ("t0003", "text"),
            ("t0004", "uninterpretable"),
            ("t0005", "related kinds"),
            ("t0006", "semantic abstraction"),
        ],
    )
    b = write(
        tmp_path / "b.json",
        "bob",
        sample_id,
        [
            ("t0001", "semantic abstraction"),
            ("t0002", "text"),
            ("t0004", "text"),
            ("t0006", "semantic abstraction"),
        ],
    )
    return a, b


def test_precision_by_hand(tmp_path):
    sample = small_sample()
    r = ratings.read_ratings(two_raters(tmp_path), sample, CATS)
    assert r.columns.tolist() == ["rater", "trial", "category", "note"] and len(r) == 10
    assert r.loc[(r["rater"] == "bob") & (r["trial"] == "t0002"), "note"].tolist() == ["bob on t0002"]
    p = ratings.precision_table(sample, r, SHARES, SETTINGS)
    assert p.columns.tolist()[:14] == [
        "dataset",
        "model",
        "label",
        "n_sampled",
        "n_available",
        "n_rated",
        "n_ratings",
        "precision",
        "ci_low",
        "ci_high",
        "label_share",
        "corrected_share",
        "corrected_low",
        "corrected_high",
    ]
    p = p.set_index(["model", "label"])
    assert p.index.tolist() == [("m1", "abstract"), ("m1", "catch"), ("m1", "clade"), ("m2", "abstract")]
    m1 = p.loc[("m1", "abstract")]
    # t0001: both "semantic abstraction" -> p_f 1; t0002: one of two -> 0.5; precision (1 + 0.5) / 2 = 0.75
    assert m1["precision"] == pytest.approx(0.75)
    assert [m1["n_sampled"], m1["n_available"], m1["n_rated"], m1["n_ratings"]] == [2, 5, 2, 4]
    # bootstrap over {1, 0.5}: means 0.5, 0.75, 1 with chances 1/4, 1/2, 1/4 -> 2.5% and 97.5% at 0.5 and 1
    assert (m1["ci_low"], m1["ci_high"]) == (0.5, 1.0)
    assert m1["label_share"] == 0.4 and m1["corrected_share"] == pytest.approx(0.4 * 0.75)
    assert (m1["corrected_low"], m1["corrected_high"]) == pytest.approx((0.2, 0.4))
    # m2: t0003 alice "text" -> 0, t0006 both right -> 1: precision 1/2 (every trial weighs the same; pooling
    # the three ratings would give 2/3); bootstrap over {0, 1}: 2.5% and 97.5% at 0 and 1
    m2 = p.loc[("m2", "abstract")]
    assert m2["precision"] == pytest.approx(0.5) and [m2["n_rated"], m2["n_ratings"]] == [2, 3]
    assert (m2["ci_low"], m2["ci_high"]) == (0.0, 1.0) and m2["corrected_share"] == pytest.approx(0.1)
    # one rated trial: no interval
    one = ratings.precision_table(sample, r[r["trial"] != "t0006"], SHARES, SETTINGS).set_index(
        ["model", "label"]
    )
    m2 = one.loc[("m2", "abstract")]
    assert (
        m2["precision"] == 0.0 and m2["n_rated"] == 1 and np.isnan(m2["ci_low"]) and np.isnan(m2["ci_high"])
    )
    catch = p.loc[("m1", "catch")]  # alice "uninterpretable", bob "text"
    assert catch["precision"] == pytest.approx(0.5) and np.isnan(catch["label_share"])
    clade = p.loc[("m1", "clade")]  # not in SETTINGS.correct
    assert clade["n_rated"] == 1 and np.isnan(clade["precision"]) and "rating.correct" in clade["note"]
    empty = ratings.precision_table(sample, ratings.read_ratings([], sample, CATS), SHARES, SETTINGS)
    assert len(empty) == 4 and (empty["n_rated"] == 0).all() and (empty["n_ratings"] == 0).all()
    assert empty["precision"].isna().all() and empty["label_share"].notna().sum() == 3


def test_agreement_by_hand(tmp_path):
    sample = small_sample()
    a, b = two_raters(tmp_path)
    c = write(
        tmp_path / "c.json",
        "carol",
        "s1",
        [("t0001", "semantic abstraction"), ("t0002", "text"), ("t0003", "text"), ("t0004", "text")],
    )
    agree = ratings.agreement(ratings.read_ratings([a, b, c], sample, CATS), CATS)
    assert agree.columns.tolist() == ratings.AGREEMENT_COLUMNS
    assert agree["kind"].tolist() == ["cohen"] * 3 + ["fleiss"]
    assert agree["raters"].tolist() == ["alice|bob", "alice|carol", "bob|carol", "alice|bob|carol"]
    cohen = agree.set_index("raters")
    # alice and bob on t0001, t0002, t0004, t0006: (sa, sa, un, sa) and (sa, text, text, sa): p_o 2/4,
    # p_e = (3/4)(2/4) [sa] + 0 [text: alice none] + 0 [un: bob none] = 3/8 -> kappa (1/2 - 3/8) / (5/8) = 0.2
    assert cohen.loc["alice|bob", "n_items"] == 4
    assert cohen.loc["alice|bob", "kappa"] == pytest.approx(0.2)
    assert cohen.loc["bob|carol", "kappa"] == pytest.approx(1.0)
    assert cohen.loc["alice|carol", "n_items"] == 4
    # Fleiss over t0001, t0002, t0004 (all three rated them): counts per (sa, text, un)
    fl = cohen.loc["alice|bob|carol"]
    assert fl["n_raters"] == 3 and fl["n_items"] == 3
    assert fl["kappa"] == pytest.approx(ratings.fleiss_kappa([[3, 0, 0], [1, 2, 0], [0, 2, 1]]))
    # by hand: P_i = (9-3)/6, (1+4-3)/6, (4+1-3)/6 = 1, 1/3, 1/3 -> P-bar 5/9; p = 4/9, 4/9, 1/9 -> P_e 33/81
    assert fl["kappa"] == pytest.approx((5 / 9 - 33 / 81) / (1 - 33 / 81))
    one = ratings.agreement(ratings.read_ratings([a], sample, CATS), CATS)
    assert (
        one["kind"].tolist() == ["fleiss"] and one["n_raters"].tolist() == [1] and one["kappa"].isna().all()
    )
    assert "at least two" in one["note"].iat[0]
    none = ratings.agreement(ratings.read_ratings([], sample, CATS), CATS)
    assert none["n_raters"].tolist() == [0] and none["kappa"].isna().all()


def test_a_file_without_ratings_contributes_nothing(tmp_path):
    sample = small_sample()
    a, _b = two_raters(tmp_path)
    quiet = write(tmp_path / "q.json", "quinn", "s1", [])
    r = ratings.read_ratings([a, quiet], sample, CATS)
    assert set(r["rater"]) == {"alice"} and len(r) == 6


BASE = {"format": "vitsae-ratings", "version": 1, "rater": "alice", "sample_id": "s1", "ratings": []}


@pytest.mark.parametrize(
    ("doc", "problem", "todo"),
    [
        ("{not json", "not valid JSON", "export it again from this run's results/browser/rate.html"),
        (
            {**BASE, "format": "other"},
            "not a vitsae-ratings version 1 file (format 'other', version 1)",
            "export ratings",
        ),
        (
            {**BASE, "version": 2},
            "not a vitsae-ratings version 1 file (format 'vitsae-ratings', version 2)",
            "export ratings",
        ),
        ([1, 2], "not a vitsae-ratings version 1 file", "export ratings"),
        (
            {**BASE, "sample_id": "zz"},
            "rated on sample 'zz', but this run's sample is 's1': the file was rated on another sample",
            "re-export from this run's results/browser/rate.html",
        ),
        ({**BASE, "rater": ""}, "names no rater", "entering a name"),
        ({**BASE, "ratings": {"t0001": "text"}}, "'ratings' is a dict, not a list", "export it again"),
        (
            {**BASE, "ratings": [{"trial": "t0099", "category": "text"}]},
            "trial 't0099' is not in this run's sample s1",
            "export it again",
        ),
        (
            {**BASE, "ratings": [{"trial": "t0001", "category": "nonsense"}]},
            "trial t0001 has category 'nonsense', not one of rating.categories",
            "add the category",
        ),
        (
            {**BASE, "ratings": [{"trial": "t0001", "category": "text"}] * 2},
            "trial t0001 is rated twice",
            "export it again",
        ),
    ],
)
def test_bad_rating_files_are_named(tmp_path, doc, problem, todo):
    path = tmp_path / "a.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ValueError) as e:
        ratings.read_ratings([path], small_sample(), CATS)
    msg = str(e.value)
    assert msg.startswith(f"ratings file {path}: ") and problem in msg and todo in msg


def test_one_rater_in_two_files_is_refused(tmp_path):
    a = write(tmp_path / "a.json", "alice", "s1", [])
    b = write(tmp_path / "b.json", "alice", "s1", [("t0001", "text")])
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(a))} and {re.escape(str(b))} are both by rater 'alice'"
    ):
        ratings.read_ratings([a, b], small_sample(), CATS)


def test_claim_columns_picks_the_rows():
    precision = pd.DataFrame(
        {
            "dataset": ["ds", "ds", "ds", "other", "ds"],
            "model": ["m1", "m2", "m1", "m2", "m2"],
            "label": ["abstract", "abstract", "trait", "abstract", "trait"],
            "n_rated": [4, 3, 9, 7, 5],
            "precision": [0.75, 0.5, 0.1, 0.9, 0.2],
            "corrected_share": [0.3, 0.1, 0.01, 0.8, 0.02],
        }
    )
    got = ratings.claim_columns(precision, "ds", "abstract", "m1", "m2")
    assert got == {
        "precision_favoured": 0.75,
        "precision_other": 0.5,
        "corrected_favoured": 0.3,
        "corrected_other": 0.1,
        "n_rated": 7,
    }
    got = ratings.claim_columns(precision, "ds", "trait", "m2", "m1")
    assert got == {
        "precision_favoured": 0.2,
        "precision_other": 0.1,
        "corrected_favoured": 0.02,
        "corrected_other": 0.01,
        "n_rated": 14,
    }
    same = ratings.claim_columns(precision, "ds", "abstract", "m1", "m1")  # a control: one model, two sweeps
    assert same["precision_other"] == 0.75 and same["n_rated"] == 4
    absent = ratings.claim_columns(precision, "other", "abstract", "m1", "m2")
    assert np.isnan(absent["precision_favoured"]) and np.isnan(absent["corrected_favoured"])
    assert absent["precision_other"] == 0.9 and absent["n_rated"] == 7
    nothing = ratings.claim_columns(precision.iloc[:0], "ds", "abstract", "m1", "m2")
    assert nothing["n_rated"] == 0 and all(np.isnan(v) for k, v in nothing.items() if k != "n_rated")


def test_write_sample_and_write_ratings(tmp_path, tables):
    obs, null = tables
    sample_csv = tmp_path / "out" / "rating_sample.csv"
    sample = ratings.write_sample(obs, null, SETTINGS, sample_csv)
    back = ratings.read_sample(sample_csv)
    pd.testing.assert_frame_equal(back, sample, check_dtype=False)
    # a sample_id that reads as a number (leading zero, exponent) stays the text it is
    for sid in ("012345678901", "1234e5678901"):
        back.assign(sample_id=sid).to_csv(sample_csv, index=False)
        got = ratings.read_sample(sample_csv)
        assert got["sample_id"].iat[0] == sid
        files = [
            write(tmp_path / "alice.json", "alice", sid, [(t, "text") for t in got["trial"][:4]]),
            write(tmp_path / "bob.json", "bob", sid, [(t, "text") for t in got["trial"][:3]]),
        ]
        out, out_agree = tmp_path / "out" / "ratings.csv", tmp_path / "out" / "agreement.csv"
        prec, agree = ratings.write_ratings(sample_csv, files, obs, SETTINGS, out, out_agree)
        assert pd.read_csv(out)["n_ratings"].sum() == 7 and prec["n_rated"].sum() == 4
        assert pd.read_csv(out_agree)["kind"].tolist() == ["cohen", "fleiss"]
        assert agree["n_items"].tolist() == [3, 3] and agree["kappa"].isna().all()  # all "text": p_e = 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "agreement.csv",
        "rating_sample.csv",
        "ratings.csv",
    ]


def test_no_catch_tables_gives_a_sample_without_catch_trials(tmp_path):
    # a run without a null sweep (no claims section): the sample is drawn from the observed tables alone
    path = table(tmp_path / "a.csv", "m1", ["abstract"] * 3)
    s = ratings.draw_sample([path], [], RatingSettings(per_label=2, catch_per_model=5))
    assert len(s) == 2 and not s["catch"].any()
