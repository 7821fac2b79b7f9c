"""Features on the other dataset (vitsae.analysis.transfer_labels): alive on both or one only, the share of
labels that survive the move, its null and CI, on hand-built concept tables with known answers."""

import numpy as np
import pandas as pd
import pypdf
import pytest

from vitsae.analysis import transfer_labels as tl
from vitsae.analysis.settings import TransferSettings

LABEL_MAP = (
    TransferSettings().label_map
)  # single-class ↔ single-species, taxonomic ↔ clade, abstract ↔ cross-clade
FORMATS = {"imnet": "imagenet", "inat": "inat2021", "imnet2": "imagenet"}


def _table(
    dataset, labels, alive, sae_id="relu_l1-x4-l1_3-lr_0.004-s0", model="clip", layer=10, sweep="paper"
):
    n = len(labels)
    return pd.DataFrame({"sae_id": sae_id, "dataset": dataset, "model": model, "layer": layer, "sweep": sweep,
                         "feature": np.arange(n), "n_top": np.where(alive, 10, 0), "label": labels,
                         "frequency": np.where(alive, 0.01, 0.0)})  # fmt: skip


def test_survives_applies_the_label_map_in_both_directions():
    src = np.array(["single-class", "taxonomic", "abstract", "single-class", "unclear", "taxonomic"])
    tgt = np.array(["single-species", "clade", "cross-clade", "clade", "unclear", "trait"])
    want = [True, True, True, False, False, False]
    assert tl.survives(src, tgt, "imagenet", "inat2021", LABEL_MAP).tolist() == want
    # iNat → ImageNet: the same pairs read the other way
    assert tl.survives(tgt, src, "inat2021", "imagenet", LABEL_MAP).tolist() == want
    # the pairs are not symmetric within one side: an iNat label is never compared as an ImageNet one
    assert not tl.survives(src, tgt, "inat2021", "imagenet", LABEL_MAP).any()
    # one format: labels compared directly, unclear never survives
    same = np.array(["taxonomic", "abstract", "unclear", "single-class"])
    assert tl.survives(same, np.array(["taxonomic", "taxonomic", "unclear", "single-class"]), "imagenet", "imagenet",
                       LABEL_MAP).tolist() == [True, False, False, True]  # fmt: skip
    # a map of other pairs changes the answer
    assert tl.survives(src[:1], tgt[3:4], "imagenet", "inat2021", [("single-class", "clade")]).tolist() == [
        True
    ]


def test_an_unknown_label_in_the_map_is_named():
    with pytest.raises(ValueError, match="'taxonomc' is no imagenet label"):
        tl.survives(
            np.array(["taxonomic"]), np.array(["clade"]), "imagenet", "inat2021", [("taxonomc", "clade")]
        )


def test_share_null_and_alive_counts_on_a_hand_built_pair_of_tables(tmp_path):
    # 10 features. 0-3 survive, 4-5 lose their label, 6 is unclear on the source, 7 is dead on the target
    # (alive on the source only), 8 is alive on the target only, 9 is dead on both.
    src = ["single-class", "single-class", "taxonomic", "abstract", "taxonomic", "single-class", "unclear",
           "single-class", "unclear", "unclear"]  # fmt: skip
    tgt = ["single-species", "single-species", "clade", "cross-clade", "single-species", "unclear", "clade",
           "unclear", "trait", "unclear"]  # fmt: skip
    alive_s = [True] * 8 + [False, False]
    alive_t = [True] * 7 + [False, True, False]
    s = tl.survival(np.array(src), np.array(tgt), np.array(alive_s), np.array(alive_t), "imagenet", "inat2021",
                    LABEL_MAP, n_null=4000, n_boot=500, seed=[0, 0])  # fmt: skip
    row = s.row()
    assert (row["n_alive_source"], row["n_alive_target"], row["n_alive_both"]) == (8, 8, 7)
    assert (row["n_source_only"], row["n_target_only"], row["n_dead"]) == (1, 1, 1)
    assert row["alive_both_share"] == pytest.approx(7 / 8)
    # eligible: alive on both, source label not unclear: features 0-5 (7 is dead on the target)
    assert (row["n_eligible"], row["n_surviving"], row["share"]) == (6, 4, pytest.approx(4 / 6))
    # the null's exact mean: permuting target labels among the 6 eligible features, each feature's chance of
    # drawing a target label that keeps its own: single-class (3 features) ← single-species (3 of 6 labels),
    # taxonomic (2) ← clade (1 of 6), abstract (1) ← cross-clade (1 of 6)
    exact = (3 * 3 / 6 + 2 * 1 / 6 + 1 * 1 / 6) / 6
    assert row["null_mean"] == pytest.approx(exact, abs=0.01)
    assert row["null_low"] <= exact <= row["null_high"]
    assert row["ci_low"] <= 4 / 6 <= row["ci_high"]
    assert row["transitions"].startswith("single-class→single-species:2;")
    assert 0 < row["p"] < 1 and row["n_null"] == 4000 and row["n_boot"] == 500
    # the same through the tables: the dead-on-target feature is counted as source only, never surviving
    (tmp_path / "a.csv").write_text(_table("imnet", src, alive_s).to_csv(index=False))
    (tmp_path / "b.csv").write_text(_table("imnet", tgt, alive_t).to_csv(index=False))
    moved = tl.moved_saes([tmp_path / "a.csv"], [tmp_path / "b.csv"], ["inat"], FORMATS)
    table = tl.transfer_labels_table(moved, LABEL_MAP, n_null=200, n_boot=100, seed=0)
    assert table["level"].tolist() == ["sae", "setting"]
    assert table[["n_eligible", "n_surviving", "n_source_only"]].to_numpy().tolist() == [[6, 4, 1], [6, 4, 1]]
    assert (table["source_dataset"].tolist(), table["target_dataset"].tolist()) == (
        ["imnet"] * 2,
        ["inat"] * 2,
    )


def test_a_feature_dead_on_the_target_is_never_surviving():
    # every feature keeps its label in name, but the target sees only the first two fire
    labels = np.array(["taxonomic"] * 5)
    alive_t = np.array([True, True, False, False, False])
    s = tl.survival(labels, labels, np.ones(5, bool), alive_t, "imagenet", "imagenet", LABEL_MAP, n_null=10,
                    n_boot=10)  # fmt: skip
    assert (s.n_eligible, s.n_surviving) == (2, 2)
    assert (s.counts["n_source_only"], s.counts["alive_both_share"]) == (3, pytest.approx(2 / 5))


def test_the_null_p_value_is_large_for_independent_labels_and_small_for_copied_ones():
    rng = np.random.default_rng(0)
    n = 400
    src = rng.choice(["single-class", "taxonomic", "abstract"], size=n, p=[0.5, 0.3, 0.2])
    pairs = dict(LABEL_MAP)
    copied = np.array([pairs[x] for x in src])
    independent = rng.permutation(copied)
    alive = np.ones(n, bool)
    args = ("imagenet", "inat2021", LABEL_MAP)
    copied_s = tl.survival(src, copied, alive, alive, *args, n_null=500, n_boot=200, seed=1)
    independent_s = tl.survival(src, independent, alive, alive, *args, n_null=500, n_boot=200, seed=1)
    assert copied_s.row()["share"] == 1.0 and copied_s.row()["p"] == pytest.approx(1 / 501)
    ind = independent_s.row()
    assert ind["p"] > 0.05
    assert ind["null_low"] <= ind["share"] <= ind["null_high"]
    assert abs(ind["share"] - ind["null_mean"]) < 0.06
    # the same draws for the same seed
    again = tl.survival(src, independent, alive, alive, *args, n_null=500, n_boot=200, seed=1)
    assert np.array_equal(again.null_D, independent_s.null_D) and np.array_equal(
        again.boot_B, independent_s.boot_B
    )


def test_the_summary_pools_the_seeds_and_the_figure_is_written(tmp_path):
    src_tables, tgt_tables, targets = [], [], []
    rng = np.random.default_rng(3)
    for seed in (0, 1):
        sae = f"relu_l1-x4-l1_3-lr_0.004-s{seed}"
        n = 60
        src = rng.choice(["single-class", "taxonomic", "unclear"], size=n)
        tgt = np.where(
            np.arange(n) < 20 + 10 * seed, [dict(LABEL_MAP).get(x, "unclear") for x in src], "trait"
        )
        for name, d, labels, out in (("s", "imnet", src, src_tables), ("t", "imnet", tgt, tgt_tables)):
            path = tmp_path / f"{name}{seed}.csv"
            _table(d, labels, np.ones(n, bool), sae_id=sae).to_csv(path, index=False)
            out.append(path)
        targets.append("inat")
        # and the reverse direction of the same SAE, as an iNat SAE read on ImageNet
        path = tmp_path / f"r{seed}.csv"
        _table("inat", src, np.ones(n, bool), sae_id=sae).to_csv(path, index=False)
        rpath = tmp_path / f"rt{seed}.csv"
        _table("inat", tgt, np.ones(n, bool), sae_id=sae).to_csv(rpath, index=False)
        src_tables.append(rpath)  # the iNat SAE's own table: iNat labels
        tgt_tables.append(path)  # read on ImageNet: ImageNet labels
        targets.append("imnet")
    pdf, csv = tmp_path / "t.pdf", tmp_path / "t.csv"
    tl.write_all([str(p) for p in src_tables], [str(p) for p in tgt_tables], targets, FORMATS, LABEL_MAP,
                 str(pdf), str(csv), "title", "demo", n_null=300, n_boot=200, seed=0)  # fmt: skip
    table = pd.read_csv(csv)
    assert list(table.columns) == tl.COLUMNS
    sae, setting = table[table["level"] == "sae"], table[table["level"] == "setting"]
    assert len(sae) == 4 and len(setting) == 2 and set(setting["n_seeds"]) == {2}
    for (s, t), rows in sae.groupby(["source_dataset", "target_dataset"]):
        pooled = setting[(setting["source_dataset"] == s) & (setting["target_dataset"] == t)].iloc[0]
        assert pooled["n_eligible"] == rows["n_eligible"].sum()
        assert pooled["share"] == pytest.approx(
            rows["n_surviving"].sum() / rows["n_eligible"].sum(), rel=1e-5
        )
        assert pooled["share_seed_min"] == pytest.approx(rows["share"].min(), rel=1e-5)
        assert pooled["share_seed_max"] == pytest.approx(rows["share"].max(), rel=1e-5)
        assert pooled["p"] < 0.05  # labels copied for a third to a half of the features
    # both directions agree: the label map read both ways gives the same survivors
    by_dir = sae.groupby(["source_dataset", "seed"])["n_surviving"].first()
    assert by_dir["imnet"].tolist() == by_dir["inat"].tolist()
    assert len(pypdf.PdfReader(pdf).pages) == 1


def test_a_table_of_the_wrong_dataset_is_named(tmp_path):
    _table("inat", ["taxonomic"], [True]).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ValueError, match="trained on inat"):
        tl.moved_saes([tmp_path / "a.csv"], [tmp_path / "a.csv"], ["inat"], FORMATS)
    with pytest.raises(FileNotFoundError, match="no concept table of SAE inat/clip/10/paper"):
        tl.moved_saes([], [tmp_path / "a.csv"], ["imnet"], FORMATS)
