"""Findings tables and figures (vitsae.analysis.findings) on synthetic concept tables with known shares."""

import json

import numpy as np
import pandas as pd
import pypdf
import pytest
from PIL import Image

from vitsae.analysis import concepts, findings, nulls
from vitsae.layout import FIGURES

MODELS = ("clip", "dinov2")
LAYERS = (6, 11)
SETTINGS = ("relu_l1-x8-l1_1-lr_0.004", "relu_l1-x8-l1_3-lr_0.004")
SEEDS = (0, 1)


def _imagenet_table(n_live: int, n_abstract: int, n_dead: int = 0, n_animal: int = 0, n_trait: int = 0):
    """A concept table with exactly these counts (animal features first, traits among them)."""
    n = n_live + n_dead
    labels = np.array(["unclear"] * n, dtype=object)
    labels[:n_abstract] = "abstract"
    labels[n_abstract : n_abstract + 3] = "taxonomic"
    animal = np.zeros(n, bool)
    animal[n - n_dead - n_animal : n - n_dead] = True
    trait = np.zeros(n, bool)
    trait[n - n_dead - n_animal : n - n_dead - n_animal + n_trait] = True
    n_top = np.where(np.arange(n) < n_live, 10, 0)
    return pd.DataFrame({"feature": np.arange(n), "n_top": n_top, "label": labels,
                         "animal": animal, "trait": trait})  # fmt: skip


def _records(with_null: bool = True) -> tuple[list[findings.SAEConcepts], dict]:
    """Every (model, layer, setting, seed) with its own planted counts; returns the truth per key."""
    records, truth = [], {}
    for mi, model in enumerate(MODELS):
        for li, layer in enumerate(LAYERS):
            for si, setting in enumerate(SETTINGS):
                for seed in SEEDS:
                    n_live, n_dead = 60 + 10 * li + seed, 5 + si
                    n_abs = 2 + 8 * (model == "clip") + 3 * li + si + seed
                    sae_id = f"{setting}-s{seed}"
                    table = _imagenet_table(n_live, n_abs, n_dead, n_animal=20, n_trait=4 + mi + seed)
                    null = _imagenet_table(n_live, 1 + seed, n_dead) if with_null else None
                    l0 = 10.0 * (si + 1) + li + 0.1 * seed + mi
                    records.append(findings.SAEConcepts(
                        table=table, null_table=null, dataset="imagenet", model=model, layer=layer,
                        sweep="main", sae_id=sae_id, l0=l0, fvu=0.3 - 0.1 * si + 0.01 * li,
                        settings={"architecture": "relu_l1", "expansion": 8, "l1_coeff": [1, 3][si], "seed": seed},
                    ))  # fmt: skip
                    truth[(model, layer, sae_id)] = (n_abs, n_live, n_dead, 1 + seed, 4 + mi + seed, l0)
    return records, truth


LABELS4 = ["single-class", "taxonomic", "abstract", "unclear"]  # labels every row of the test below draws


def test_bootstrap_equals_brute_force_reference():
    rng = np.random.default_rng(11)
    table = pd.DataFrame({
        "n_top": np.where(rng.random(57) < 0.9, 10, 0),
        "label": rng.choice(LABELS4, 57, p=[0.3, 0.2, 0.1, 0.4]),
    })  # fmt: skip
    got = findings.label_shares(table, LABELS4, n_boot=300, seed=3).set_index("label")
    lab = table["label"].to_numpy()[table["n_top"].to_numpy() > 0]
    n = len(lab)
    ref_rng = np.random.default_rng(3)
    boots = np.array([lab[ref_rng.integers(0, n, size=n)] for _ in range(300)])  # one resample per row
    for name in LABELS4:
        share_B = np.array([(b == name).mean() for b in boots])
        lo, hi = np.quantile(share_B, [0.025, 0.975])
        assert got.loc[name, "share"] == pytest.approx((lab == name).mean(), abs=1e-15)
        assert got.loc[name, "ci_low"] == pytest.approx(lo, abs=1e-12), name
        assert got.loc[name, "ci_high"] == pytest.approx(hi, abs=1e-12), name
        assert lo < (lab == name).mean() < hi
    # blocks of rows draw the same numbers
    code = rng.integers(0, 4, 57)
    np.testing.assert_array_equal(findings.bootstrap_counts(code, 4, 300, seed=5),
                                  findings.bootstrap_counts(code, 4, 300, seed=5, block_elems=100))  # fmt: skip

    # a ratio: the denominator varies between resamples
    num = rng.random(80) < 0.2
    den = num | (rng.random(80) < 0.5)
    got = findings.ratio_ci(num, den, n_boot=400, seed=[7, 1])
    ref_rng = np.random.default_rng([7, 1])
    ratios = []
    for _ in range(400):
        idx = ref_rng.integers(0, 80, size=80)
        ratios.append(num[idx].sum() / den[idx].sum() if den[idx].sum() else np.nan)
    lo, hi = np.nanquantile(ratios, [0.025, 0.975])
    assert got["statistic"] == num.sum() / den.sum() and got["denominator"] == den.sum()
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    with pytest.raises(ValueError, match="outside the denominator"):
        findings.ratio_ci(np.array([True]), np.array([False]))


def test_ci_covers_the_true_share_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    p_num, p_den, reps, covered, covered_ratio = 0.15, 0.5, 300, 0, 0
    for rep in range(reps):
        abstract = rng.random(200) < p_num
        table = pd.DataFrame({"n_top": np.full(200, 10), "label": np.where(abstract, "abstract", "unclear")})
        s = findings.label_shares(table, ["abstract"], n_boot=400, seed=rep).iloc[0]
        covered += s["ci_low"] <= p_num <= s["ci_high"]
        den = rng.random(200) < p_den
        num = den & (rng.random(200) < 0.3)
        r = findings.ratio_ci(num, den, n_boot=400, seed=rep)
        covered_ratio += r["ci_low"] <= 0.3 <= r["ci_high"]
    # nominal 0.95; the percentile bootstrap runs a little under it at n=200 (binomial sd ~0.013)
    assert 0.90 <= covered / reps <= 0.985, covered / reps
    assert 0.90 <= covered_ratio / reps <= 0.985, covered_ratio / reps


def test_robustness_table_has_one_row_per_sae_and_layer_with_the_planted_values():
    records, truth = _records()
    rob = findings.robustness_table(records, findings.ABSTRACT, n_boot=200)
    assert len(rob) == len(MODELS) * len(LAYERS) * len(SETTINGS) * len(SEEDS)
    assert (
        not rob.duplicated(["model", "layer", "sae_id"]).any()
        and list(rob.columns) == findings.ROBUSTNESS_COLUMNS
    )
    for _, row in rob.iterrows():
        n_abs, n_live, n_dead, null_abs, _, l0 = truth[(row["model"], row["layer"], row["sae_id"])]
        counts = row[["numerator", "denominator", "n_live", "n_dead"]].tolist()
        assert counts == [n_abs, n_live, n_live, n_dead]
        assert row["statistic"] == pytest.approx(n_abs / n_live) and row["l0"] == l0
        assert row["null_statistic"] == pytest.approx(null_abs / n_live)
        assert row["ci_low"] <= row["statistic"] <= row["ci_high"] and row["ci_high"] > row["ci_low"]
        assert row["seed"] == int(row["sae_id"][-1]) and row["setting"] == row["sae_id"][:-3]
        assert row["l1_coeff"] == (1 if row["setting"] == SETTINGS[0] else 3)
    # headline: per model the deepest layer, the SAE with the median L0 (lower middle of 4)
    heads = rob[rob["headline"]]
    assert sorted(heads["model"]) == list(MODELS) and set(heads["layer"]) == {11}
    assert set(heads["sae_id"]) == {f"{SETTINGS[0]}-s1"}

    trait = findings.robustness_table(records, findings.TRAIT, n_boot=200).set_index(
        ["model", "layer", "sae_id"]
    )
    for key, (*_, n_trait, _) in truth.items():
        assert trait.loc[key, "numerator"] == n_trait and trait.loc[key, "denominator"] == 20
    chosen = findings.robustness_table(records, findings.ABSTRACT, n_boot=10,
                                       headline={("imagenet", "clip"): (6, f"{SETTINGS[1]}-s0")})  # fmt: skip
    assert set(chosen[chosen["headline"] & (chosen["model"] == "clip")]["layer"]) == {6}
    with pytest.raises(KeyError, match="headline SAE imagenet/clip/layer3/x is not among"):
        findings.robustness_table(records, findings.ABSTRACT, headline={("imagenet", "clip"): (3, "x")})
    with pytest.raises(ValueError, match="given twice"):
        findings.robustness_table(records + records[:1], findings.ABSTRACT)


def test_shares_table_and_missing_animal_column():
    records, truth = _records(with_null=False)
    shares = findings.shares_table(records[:1], n_boot=100)
    n_abs, n_live, *_ = truth[("clip", 6, f"{SETTINGS[0]}-s0")]
    row = shares.set_index("label")
    assert list(row.index) == list(concepts.IMAGENET_LABELS)
    assert row.loc["abstract", "count"] == n_abs and row.loc["taxonomic", "count"] == 3
    assert row.loc["unclear", "count"] == n_live - n_abs - 3 and row["null_share"].isna().all()
    no_animal = findings.SAEConcepts(table=records[0].table.drop(columns="animal"), dataset="inat21",
                                     model="m", layer=1, sweep="s", sae_id="a-s0", l0=1.0, fvu=0.1)  # fmt: skip
    with pytest.raises(KeyError, match="no 'animal' column.*inat_animal"):
        findings.robustness_table([no_animal], findings.TRAIT)


def test_from_files_reads_eval_cfg_and_tables(tmp_path):
    table = _imagenet_table(30, 5)
    table.to_parquet(tmp_path / "t.parquet")
    table.to_csv(tmp_path / "null.csv", index=False)
    ev = {"model": "clip", "layer": 11, "sweep": "main", "sae_id": "relu_l1-x8-l1_3-lr_0.004-s2",
          "train_dataset": "imagenet", "eval_dataset": "imagenet", "l0": 12.5, "fvu": 0.25}  # fmt: skip
    (tmp_path / "e.json").write_text(json.dumps(ev))
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "relu_l1", "l1_coeff": 3.0, "seed": 2}))
    r = findings.from_files(
        tmp_path / "t.parquet", tmp_path / "e.json", tmp_path / "null.csv", tmp_path / "cfg.json"
    )
    assert (r.model, r.layer, r.dataset, r.l0, r.fvu, r.seed) == ("clip", 11, "imagenet", 12.5, 0.25, 2)
    assert r.settings["l1_coeff"] == 3.0 and r.setting == "relu_l1-x8-l1_3-lr_0.004"
    pd.testing.assert_frame_equal(r.null_table[["n_top", "label"]], table[["n_top", "label"]])
    del ev["fvu"]
    (tmp_path / "bad.json").write_text(json.dumps(ev))
    with pytest.raises(KeyError, match=r"bad\.json lacks \['fvu'\].*rerun the evaluate_<sweep> rule"):
        findings.from_files(table, tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="nope.parquet does not exist"):
        findings.from_files(tmp_path / "nope.parquet", tmp_path / "e.json")


def test_null_top_images_keep_padding_and_are_seeded_uniform_draws():
    top_FK = np.full((400, 6), -1)
    top_FK[:, :4] = 7  # every feature: 4 firing slots (same images), 2 padding
    top_FK[0] = -1  # a feature that never fires
    null_FK = nulls.null_top_images(top_FK, n_images=50, seed=1)
    assert (null_FK[:, 4:] == -1).all() and (null_FK[0] == -1).all()
    firing = null_FK[1:, :4]
    assert firing.min() >= 0 and firing.max() < 50
    assert all(len(set(r)) == 4 for r in firing)  # distinct images per feature
    counts = np.bincount(firing.ravel(), minlength=50)  # 1596 draws over 50 images: ~32 each
    assert counts.min() > 10 and counts.max() < 60
    np.testing.assert_array_equal(null_FK, nulls.null_top_images(top_FK, 50, seed=1))
    assert (null_FK != nulls.null_top_images(top_FK, 50, seed=2)).any()
    with pytest.raises(ValueError, match="only 3 images"):
        nulls.null_top_images(top_FK, 3)
    # from a pool: only its images; a pool smaller than a feature's top images fills the first slots
    pooled = nulls.null_top_images(top_FK, 50, seed=1, pool=np.array([3, 9, 11, 40, 41]))
    assert set(np.unique(pooled[1:, :4])) <= {3, 9, 11, 40, 41} and (pooled[:, 4:] == -1).all()
    small = nulls.null_top_images(top_FK, 50, seed=1, pool=np.array([5, 6]))
    assert (np.sort(small[1:, :2], axis=1) == [5, 6]).all() and (small[:, 2:] == -1).all()


def test_animal_null_keeps_the_observed_denominator():
    null = pd.DataFrame({"feature": range(5), "n_top": [4, 4, 4, 0, 4], "label": ["unclear"] * 5,
                         "animal": [False] * 5, "trait": [False] * 5})  # fmt: skip
    observed_animal = np.array([True, False, True, False, True])
    animal_null = pd.DataFrame({"feature": range(3), "trait": [True, False, True]})
    out = nulls.with_animal_null(null, observed_animal, animal_null)
    assert list(out["animal"]) == list(observed_animal) and list(out["trait"]) == [
        True,
        False,
        False,
        False,
        True,
    ]
    assert list(out["label"]) == ["unclear"] * 5  # finding 1's null is untouched
    with pytest.raises(ValueError, match="2 animal-null rows for 3 animal features"):
        nulls.with_animal_null(null, observed_animal, animal_null.iloc[:2])


def test_inat_animal_share_of_top_images():
    kingdom = np.array(["Animalia"] * 8 + ["Plantae"] * 2)
    top_FK = np.array([[0, 1, 2, -1], [0, 1, 8, -1], [-1, -1, -1, -1], [0, 1, 2, 9]])
    np.testing.assert_array_equal(nulls.inat_animal(top_FK, kingdom), [True, False, False, False])
    np.testing.assert_array_equal(
        nulls.inat_animal(top_FK, kingdom, min_share=0.6), [True, True, False, True]
    )
    np.testing.assert_array_equal(nulls.inat_animal(top_FK, kingdom, n_top=2), [True, True, False, True])


def _pdf_text(path) -> str:
    return "".join(page.extract_text() for page in pypdf.PdfReader(str(path)).pages)


def test_figures_render_with_title_and_note(tmp_path):
    records, _ = _records()
    rob, _ = findings.write_semantic_abstraction(
        records, tmp_path / "fig" / "sa.pdf", tmp_path / "tab" / "sa.csv", tmp_path / "tab" / "sa_shares.csv",
        title=FIGURES["semantic_abstraction"], note="DEMO: synthetic data", n_boot=100,
    )  # fmt: skip
    text = _pdf_text(tmp_path / "fig" / "sa.pdf")
    assert "Finding 1" in text and "DEMO: synthetic data" in text and "L0" in text and "abstract" in text
    csv = pd.read_csv(tmp_path / "tab" / "sa.csv")
    assert len(csv) == len(rob) == 16 and list(csv.columns) == findings.ROBUSTNESS_COLUMNS
    assert len(pd.read_csv(tmp_path / "tab" / "sa_shares.csv")) == 16 * len(concepts.IMAGENET_LABELS)
    findings.write_semantic_abstraction(records, tmp_path / "sa.png", tmp_path / "sa2.csv", n_boot=100)
    with Image.open(tmp_path / "sa.png") as im:
        assert im.size[0] > 400 and im.size[1] > 400
        assert np.asarray(im.convert("L")).std() > 10  # not blank

    # finding 2: iNat tables (with the animal column) beside ImageNet ones
    inat = []
    for r in records[:8]:
        t = r.table.copy()
        t["label"] = np.where(t["trait"], "trait", np.where(t["n_top"] > 0, "clade", "unclear"))
        t["purity_species"] = 0.5
        inat.append(findings.SAEConcepts(table=t, null_table=None, dataset="inat21", model=r.model,
                                         layer=r.layer, sweep=r.sweep, sae_id=r.sae_id, l0=r.l0, fvu=r.fvu))  # fmt: skip
    rob2, shares2 = findings.write_traits(inat + records, tmp_path / "tr.pdf", tmp_path / "tr.csv",
                                          title=FIGURES["traits"], note="demo", n_boot=100)  # fmt: skip
    assert "Finding 2" in _pdf_text(tmp_path / "tr.pdf") and set(rob2["dataset"]) == {"inat21", "imagenet"}
    assert set(shares2[shares2["dataset"] == "inat21"]["label"]) == set(concepts.INAT_LABELS)
    findings.write_traits(inat + records, tmp_path / "tr.png", tmp_path / "tr2.csv", note="demo", n_boot=100)


def test_real_concept_tables_and_their_null_feed_the_findings():
    """imagenet_table on planted top images, and on null_top_images of them, through robustness_table."""
    from vitsae.analysis.wordnet import load_hierarchy

    hierarchy = load_hierarchy()
    retrievers = ["n02099601", "n02099712", "n02099267", "n02099429"]
    abstract = ["n02099601", "n02930766", "n04487394"]  # golden retriever, cab, trombone
    classes = list(dict.fromkeys(retrievers + abstract + hierarchy.classes[::25]))
    labels_N = np.repeat(classes, 10)
    rng = np.random.default_rng(0)
    top_FK = np.stack([rng.choice(len(labels_N), 10, replace=False) for _ in range(30)])
    pool = np.nonzero(np.isin(labels_N, abstract))[0]
    top_FK[:6] = [rng.choice(pool, 10, replace=False) for _ in range(6)]  # 6 abstract features
    top_FK[29] = -1  # a dead feature
    maps_FKT = rng.random((30, 10, 4))
    desc_ND = rng.random((len(labels_N), 12))
    rules = concepts.ImageNetRules(null_samples=200)
    table = concepts.imagenet_table(top_FK, maps_FKT, labels_N, hierarchy, desc_ND, rules)
    null_FK = nulls.null_top_images(top_FK, len(labels_N), seed=0)
    null = concepts.imagenet_table(null_FK, maps_FKT, labels_N, hierarchy, desc_ND, rules)
    rec = findings.SAEConcepts(table=table, null_table=null, dataset="imagenet", model="clip", layer=11,
                               sweep="main", sae_id="a-s0", l0=5.0, fvu=0.2)  # fmt: skip
    row = findings.robustness_table([rec], findings.ABSTRACT, n_boot=200).iloc[0]
    assert (row["n_live"], row["n_dead"]) == (29, 1)
    assert row["numerator"] == (table["label"] == "abstract").sum() >= 6
    assert row["null_numerator"] <= 1 and row["null_denominator"] == 29
    trait = findings.robustness_table([rec], findings.TRAIT, n_boot=50).iloc[0]
    assert trait["denominator"] == table["animal"].fillna(False).astype(bool).sum()


def test_abstract_shares_split_by_branch_pair():
    """Abstract features counted per pair type against a direct count; the null's own pairs; no rows for
    a table without the column."""
    rng = np.random.default_rng(4)
    n = 80
    label = rng.choice(["abstract", "unclear", "taxonomic"], n, p=[0.4, 0.4, 0.2])
    pair = rng.choice(["animal-artifact", "artifact-artifact", "animal-animal"], n)
    n_top = np.where(rng.random(n) < 0.9, 10, 0)
    table = pd.DataFrame({"feature": np.arange(n), "n_top": n_top, "label": label, "branch_pair": pair})
    null = table.assign(label=np.where(np.arange(n) < 3, "abstract", "unclear"), branch_pair="other-other")
    rec = findings.SAEConcepts(table=table, null_table=null, dataset="imagenet", model="clip", layer=10, sweep="main",
                               sae_id="relu_l1-x8-l1_3-s0", l0=20.0, fvu=0.2)  # fmt: skip
    out = findings.branch_pair_table([rec], n_boot=200, seed=1).set_index("branch_pair")
    alive = n_top > 0
    assert set(out.index) == {"animal-artifact", "artifact-artifact", "animal-animal", "other-other"}
    for p in ("animal-artifact", "artifact-artifact", "animal-animal"):
        count = int((alive & (label == "abstract") & (pair == p)).sum())
        assert out.loc[p, "numerator"] == count and out.loc[p, "n_live"] == alive.sum()
        assert out.loc[p, "statistic"] == pytest.approx(count / alive.sum())
        assert out.loc[p, "ci_low"] < out.loc[p, "statistic"] < out.loc[p, "ci_high"]
        assert out.loc[p, "null_numerator"] == 0
    assert out.loc["other-other", "numerator"] == 0
    assert out.loc["other-other", "null_numerator"] == int(alive[:3].sum())
    # the pair shares add up to the abstract share
    assert out["numerator"].sum() == (alive & (label == "abstract")).sum()
    old = findings.SAEConcepts(table=table.drop(columns="branch_pair"), dataset="imagenet", model="clip",
                               layer=10, sweep="main", sae_id="relu_l1-x8-l1_3-s0", l0=20.0, fvu=0.2)  # fmt: skip
    assert findings.branch_pair_table([old]).empty
