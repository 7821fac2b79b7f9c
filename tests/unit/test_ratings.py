"""Blinded ratings (vitsae.analysis.ratings): the sample, the raters' files, κ and precision by hand."""

import json

import numpy as np
import pandas as pd
import pytest

from vitsae.analysis import ratings
from vitsae.analysis.settings import RatingSettings

CATS = ("semantic abstraction", "related kinds", "morphological part", "text", "uninterpretable")
SETTINGS = RatingSettings(per_label=3, catch_per_model=2, labels=("abstract", "taxonomic", "trait"), categories=CATS,
                          correct=(("abstract", ("semantic abstraction",)), ("taxonomic", ("related kinds",)),
                                   ("trait", ("morphological part",))))  # fmt: skip


def table(path, model, labels, traits=None, n_top=None, sweep="paper", sae_ids=("a-s0", "a-s1")):
    n = len(labels)
    rows = []
    for sae in sae_ids:
        rows.append(pd.DataFrame({"sae_id": sae, "dataset": "ds", "model": model, "layer": 3, "sweep": sweep,
                                  "feature": range(n), "n_top": n_top if n_top is not None else [5] * n,
                                  "label": labels, "trait": traits if traits is not None else [False] * n}))  # fmt: skip
    pd.concat(rows).to_csv(path, index=False)
    return str(path)


@pytest.fixture
def tables(tmp_path):
    labels = ["abstract"] * 4 + ["taxonomic"] * 2 + ["unclear"] * 3 + ["dead"]
    traits = [False] * 5 + [True] + [True] + [False] * 3
    n_top = [5, 5, 5, 0, 5, 5, 5, 5, 5, 0]  # feature 3 (abstract) never fired; 9 is dead
    a = table(tmp_path / "a.csv", "m1", labels, traits, n_top)
    b = table(tmp_path / "b.csv", "m2", labels, traits, n_top)
    null = table(tmp_path / "n.csv", "m1", ["unclear"] * 6, sweep="null", sae_ids=("n-s0",))
    return [a, b], [null]


def test_sample_sizes_liveness_catch_and_determinism(tables):
    obs, null = tables
    s = ratings.draw_sample(obs, null, SETTINGS)
    sizes = s.groupby(["model", "label"]).size().to_dict()
    # live abstract: features 0-2 in each of two SAEs (6; feature 3 never fired), feature 5 is a trait
    assert sizes == {("m1", "abstract"): 3, ("m1", "taxonomic"): 1 * 2, ("m1", "trait"): 3, ("m1", "catch"): 2,
                     ("m2", "abstract"): 3, ("m2", "taxonomic"): 2, ("m2", "trait"): 3}  # fmt: skip
    ab = s[s["label"] == "abstract"]
    assert set(ab["feature"]) <= {0, 1, 2} and (ab["n_available"] == 6).all()
    assert (s.loc[s["label"] == "taxonomic", "feature"] == 4).all()  # feature 5 is a trait, counted there
    assert s["catch"].sum() == 2 and (s.loc[s["catch"], "sweep"] == "null").all()
    assert s["trial"].tolist() == [f"t{i:04d}" for i in range(1, len(s) + 1)]
    assert s.columns.tolist() == ratings.SAMPLE_COLUMNS and s["sample_id"].nunique() == 1
    again = ratings.draw_sample(obs, null, SETTINGS)
    pd.testing.assert_frame_equal(s, again)
    other = ratings.draw_sample(obs, null, RatingSettings(**{**SETTINGS.__dict__, "seed": 7}))
    assert other["sample_id"].iat[0] != s["sample_id"].iat[0]


def test_adding_a_group_leaves_the_other_groups_draws_alone(tables, tmp_path):
    obs, null = tables
    before = ratings.draw_sample(obs[:1], null, SETTINGS)
    after = ratings.draw_sample(obs, null, SETTINGS)
    key = ["model", "label", "sae_id", "feature"]
    m1 = after[after["model"] == "m1"][key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(before[key].sort_values(key).reset_index(drop=True), m1)


def test_cohen_kappa_by_hand():
    # 10 items: raters agree on 7. A: 5 x, 3 y, 2 z; B: 4 x, 4 y, 2 z.
    a = ["x"] * 5 + ["y"] * 3 + ["z"] * 2
    b = ["x", "x", "x", "x", "y", "y", "y", "y", "z", "z"]
    # they differ on item 4 only (x against y): p_o = 9/10
    p_o = 0.9
    p_e = 0.5 * 0.4 + 0.3 * 0.4 + 0.2 * 0.2  # 0.36
    assert ratings.cohen_kappa(a, b) == pytest.approx((p_o - p_e) / (1 - p_e))  # 0.84375
    assert ratings.cohen_kappa(a, b) == pytest.approx(0.84375)
    assert np.isnan(ratings.cohen_kappa(["x"] * 3, ["x"] * 3))


def test_fleiss_kappa_wikipedia_example():
    counts = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                       [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])  # fmt: skip
    assert ratings.fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)
    with pytest.raises(ValueError, match="same number"):
        ratings.fleiss_kappa(np.array([[1, 1], [2, 1]]))


def write(path, rater, sample_id, items, **extra):
    doc = {"format": "vitsae-ratings", "version": 1, "rater": rater, "sample_id": sample_id, "exported": "now",
           "ratings": [{"trial": t, "category": c, "note": ""} for t, c in items], **extra}  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def small_sample():
    return pd.DataFrame({"trial": ["t0001", "t0002", "t0003", "t0004"], "sample_id": "s1", "seed": 0, "dataset": "ds",
                         "model": ["m1", "m1", "m2", "m1"], "layer": 3, "sweep": "paper", "sae_id": "a",
                         "feature": [1, 2, 3, 4], "label": ["abstract", "abstract", "abstract", "catch"],
                         "catch": [False, False, False, True], "n_available": 5})  # fmt: skip


def test_precision_and_agreement_by_hand(tmp_path):
    sample = small_sample()
    a = write(tmp_path / "a.json", "alice", "s1", [("t0001", "semantic abstraction"), ("t0002", "semantic abstraction"),
                                                   ("t0003", "text"), ("t0004", "uninterpretable")])  # fmt: skip
    b = write(tmp_path / "b.json", "bob", "s1", [("t0001", "semantic abstraction"), ("t0002", "text"),
                                                 ("t0004", "text")])  # fmt: skip
    r = ratings.read_ratings([a, b], sample, CATS)
    shares = pd.DataFrame({"dataset": "ds", "model": ["m1", "m2"], "label": "abstract", "n_live": 10, "count": [4, 2],
                           "share": [0.4, 0.2]})  # fmt: skip
    p = ratings.precision_table(sample, r, shares, SETTINGS).set_index(["model", "label"])
    # m1 abstract: t0001 both right (1), t0002 one of two (0.5) -> 0.75; m2: t0003 wrong (0)
    assert p.loc[("m1", "abstract"), "precision"] == pytest.approx(0.75)
    assert p.loc[("m1", "abstract"), ["n_rated", "n_ratings"]].tolist() == [2, 4]
    assert p.loc[("m1", "abstract"), "corrected_share"] == pytest.approx(0.3)
    lo, hi = p.loc[("m1", "abstract"), ["ci_low", "ci_high"]]
    assert 0.5 <= lo <= 0.75 <= hi <= 1.0
    assert p.loc[("m2", "abstract"), "precision"] == 0.0 and np.isnan(p.loc[("m2", "abstract"), "ci_low"])
    assert p.loc[("m1", "catch"), "precision"] == pytest.approx(0.5)  # alice uninterpretable, bob text
    agree = ratings.agreement(r, CATS)
    cohen = agree[agree["kind"] == "cohen"].iloc[0]
    # common trials t0001, t0002, t0004: alice (sa, sa, un), bob (sa, text, text): p_o 1/3,
    # p_e = (2/3)(1/3) [sa] + 0 [text: alice 0] + 0 [un: bob 0] = 2/9
    assert cohen["n_items"] == 3 and cohen["kappa"] == pytest.approx((1 / 3 - 2 / 9) / (1 - 2 / 9))
    cols = ratings.claim_columns(p.reset_index(), "ds", "abstract", "m1", "m2")
    assert cols == {"precision_favoured": 0.75, "precision_other": 0.0, "corrected_favoured": pytest.approx(0.3),
                    "corrected_other": 0.0, "n_rated": 3}  # fmt: skip
    empty = ratings.precision_table(sample, ratings.read_ratings([], sample, CATS), shares, SETTINGS)
    assert (empty["n_rated"] == 0).all() and empty["precision"].isna().all()
    assert ratings.agreement(ratings.read_ratings([a], sample, CATS)).empty


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", r"a\.json is not valid JSON"),
        ({"format": "other"}, r"a\.json is not a vitsae-ratings version 1 file"),
        ({"sample_id": "zz"}, r"a\.json was rated on sample zz, but this run's sample is s1"),
        (
            {"ratings": [{"trial": "t0099", "category": "text"}]},
            r"a\.json: trial 't0099' is not in this run's sample",
        ),
        ({"ratings": [{"trial": "t0001", "category": "nonsense"}]}, r"category 'nonsense', not one of"),
        ({"ratings": [{"trial": "t0001", "category": "text"}] * 2}, r"trial t0001 is rated twice"),
    ],
)
def test_bad_rating_files_are_named(tmp_path, doc, message):
    path = tmp_path / "a.json"
    if isinstance(doc, str):
        path.write_text(doc)
    else:
        base = {"format": "vitsae-ratings", "version": 1, "rater": "alice", "sample_id": "s1", "ratings": []}
        path.write_text(json.dumps({**base, **doc}))
    with pytest.raises(ValueError, match=message):
        ratings.read_ratings([path], small_sample(), CATS)


def test_one_rater_in_two_files_is_refused(tmp_path):
    a = write(tmp_path / "a.json", "alice", "s1", [])
    b = write(tmp_path / "b.json", "alice", "s1", [])
    with pytest.raises(ValueError, match=r"a\.json and .*b\.json are both by rater 'alice'"):
        ratings.read_ratings([a, b], small_sample(), CATS)
