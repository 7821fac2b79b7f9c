"""Concept tables (vitsae.analysis.concepts) on planted features, through the real statistics of a tiny store."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from vitsae.analysis import concepts, taxonomy
from vitsae.analysis import stats as featstats
from vitsae.analysis.feature_files import load_feature_stats
from vitsae.analysis.settings import ImageNetRules, INatRules
from vitsae.analysis.thumbnails import thumbnails
from vitsae.analysis.wordnet import load_hierarchy
from vitsae.data.manifest import BASE_COLUMNS, write_manifest
from vitsae.data.store import write_arrays
from vitsae.sae.checkpoint import SparseAutoencoder

CATS = ["n02123045", "n02123159", "n02123394", "n02123597", "n02124075"]
RETRIEVERS = ["n02099601", "n02099712", "n02099267", "n02099429"]  # golden, labrador, flat-, curly-coated
GOLDEN, CAB, TROMBONE = "n02099601", "n02930766", "n04487394"  # the demo's abstract motif classes
PER_CLASS, GRID, K = 12, 3, 10
N_TOK = 1 + GRID * GRID


@pytest.fixture(scope="module")
def hierarchy():
    return load_hierarchy()


@pytest.fixture(scope="module")
def classes(hierarchy):
    others = [w for w in hierarchy.classes[::40] if w not in CATS + RETRIEVERS + [CAB, TROMBONE]]
    return CATS + RETRIEVERS + [CAB, TROMBONE] + others  # 36 classes


def _taxa(classes: list[str]) -> pd.DataFrame:
    """A made-up iNat taxonomy for the classes: 3 species per genus, 2 genera per family, 2 families per
    order, 3 orders per class (2 classes)."""
    rows = []
    for i, _ in enumerate(classes):
        genus, family, order, klass = f"G{i // 3}", f"F{i // 6}", f"O{i // 12}", f"C{i // 18}"
        rows.append(("Animalia", "Arthropoda", klass, order, family, genus, f"{genus} s{i}"))
    return pd.DataFrame(rows, columns=list(reversed(taxonomy.RANKS)))


@pytest.fixture(scope="module")
def planted(tmp_path_factory, classes):
    """Activations where SAE feature f (an identity encoder) fires only on its planted images:

    0 single class (tabby), 1 the retriever subtree, 2 golden retriever + cab + trombone (across branches),
    3 random images (no structure), 4 one patch of genus G5's images (a localized part), 5 all patches of G5,
    6 half of its top images from one class (CATS[1]) and the other half strays from 5 other classes (one
    weak class detector, not an abstract concept), 7 two species of different orders (iNat: s0 in O0 and
    s12 in O1, a pattern shared across clades).
    """
    rng = np.random.default_rng(0)
    labels = np.repeat(classes, PER_CLASS)
    n = len(labels)
    genus = _taxa(classes)["genus"].to_numpy()[np.repeat(np.arange(len(classes)), PER_CLASS)]
    acts = -1.0 - rng.random((n, N_TOK, 8))  # below zero: nothing fires
    strength = 1.0 + rng.random((n, N_TOK, 8))
    strays = [PER_CLASS * c for c in range(len(classes) - 5, len(classes))]  # one image of each of 5 classes
    strength[strays, :, 6] += 2.0  # all 5 strays rank above the class's images: top 10 = 5 + 5
    members = {
        0: labels == CATS[0],
        1: np.isin(labels, RETRIEVERS),
        2: np.isin(labels, [GOLDEN, CAB, TROMBONE]),
        3: np.isin(np.arange(n), rng.choice(n, 40, replace=False)),
        4: genus == "G5",
        5: genus == "G5",
        6: (labels == CATS[1]) | np.isin(np.arange(n), strays),
        7: np.isin(labels, [classes[0], classes[12]]),
    }
    for f, m in members.items():
        patches = slice(1, 2) if f == 4 else slice(1, N_TOK)
        acts[m, patches, f] = strength[m, patches, f]
    layout = {"n_tokens": N_TOK, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [GRID, GRID]}
    tmp = tmp_path_factory.mktemp("planted")
    store = write_arrays(tmp / "s.zarr", {"token_layout": layout}, {"val": acts.astype(np.float16)}, 64)
    sae = SparseAutoencoder(8, 8, "relu_l1", cfg={"hook": {"tokens": "patches"}})
    with torch.no_grad():
        sae.W_enc_DF.copy_(torch.eye(8))
    stats = load_feature_stats(
        featstats.compute_feature_stats(sae, store, "val", tmp / "stats", k=K, labels=labels)
    )
    descriptors = rng.random((n, 48)).astype(np.float32)
    return stats, labels, descriptors, members


def test_imagenet_labels_of_planted_features(planted, hierarchy):
    stats, labels, descriptors, members = planted
    for f, m in members.items():  # the statistics found the planted images
        assert np.isin(stats.top_image_FK[f], np.nonzero(m)[0]).all()
    # on the 3x3 token grid (localization_pixels 0): shares of tokens, places for the spread
    table = concepts.imagenet_table(stats.top_image_FK, stats.top_map_FKT, labels, hierarchy, descriptors,
                                    ImageNetRules(localization_pixels=0), grid=[GRID, GRID])  # fmt: skip
    row = table.set_index("feature")
    assert row.loc[0, "label"] == "single-class" and row.loc[0, "top_class"] == CATS[0]
    assert row.loc[0, "lca"] == CATS[0] and row.loc[0, "n_classes"] == 1

    assert row.loc[1, "label"] == "taxonomic", row.loc[1].to_dict()
    assert hierarchy.name(row.loc[1, "lca"]) == "retriever.n.01" and row.loc[1, "lca_depth"] == 11
    assert (
        row.loc[1, "top_class_share"] < 0.7
        and row.loc[1, "n_branches"] == 1
        and row.loc[1, "coherence_p"] < 0.01
    )

    assert row.loc[2, "label"] == "abstract", row.loc[2].to_dict()
    assert row.loc[2, "n_branches"] == 3 and row.loc[2, "lca_depth"] < 7
    assert (
        row.loc[2, "n_major"] == 3 and row.loc[2, "major_share"] == 1.0 and row.loc[2, "major_branches"] == 3
    )
    assert row.loc[2, "concentration_p"] < 0.01 and row.loc[2, "diversity_ratio"] > 0.75

    assert (
        row.loc[3, "label"] == "unclear"
        and row.loc[3, "coherence_p"] > 0.01
        and row.loc[3, "concentration_p"] > 0.01
    )
    # localization: one of the 9 patches vs all of them
    assert row.loc[4, "localization"] == pytest.approx(1 / 9) and row.loc[5, "localization"] == 1.0
    # WordNet traits among animal classes (G5's classes are dogs here): localized 4 yes; 5, 1 and 2 no
    assert row.loc[4, "animal"] and row.loc[4, "trait"] and row.loc[5, "animal"] and not row.loc[5, "trait"]
    assert not row.loc[1, "trait"] and not row.loc[2, "animal"] and not row.loc[2, "trait"]
    assert set(table["label"]) <= set(concepts.IMAGENET_LABELS)


def test_one_class_plus_strays_is_not_abstract(planted, hierarchy):
    """Half the top images from one class, the rest one each from 5 classes: structured, shallow LCA, many
    branches, diverse; the old rule called it abstract. Only one class holds 15% of the images."""
    stats, labels, descriptors, _ = planted
    table = concepts.imagenet_table(stats.top_image_FK, stats.top_map_FKT, labels, hierarchy, descriptors)
    row = table.set_index("feature").loc[6]
    assert row["top_class"] == CATS[1] and row["top_class_share"] == 0.5 and row["n_classes"] == 6
    assert row["concentration_p"] < 0.01 and row["lca_depth"] < 7 and row["n_branches"] >= 2
    assert row["n_major"] == 1 and row["major_share"] == 0.5 and row["label"] == "unclear"
    # with the major-class condition off (every class counts), the same row is abstract: the rule decides
    loose = ImageNetRules(abstract_min_class_share=0.0)
    table = concepts.imagenet_table(
        stats.top_image_FK, stats.top_map_FKT, labels, hierarchy, descriptors, loose
    )
    assert table.set_index("feature").loc[6, "label"] == "abstract"


def test_cross_branch_images_that_look_alike_are_not_abstract(planted, hierarchy):
    stats, labels, descriptors, members = planted
    alike = descriptors.copy()
    alike[members[2]] = 0.5 + 0.01 * alike[members[2]]
    table = concepts.imagenet_table(stats.top_image_FK, stats.top_map_FKT, labels, hierarchy, alike)
    row = table.set_index("feature").loc[2]
    assert row["diversity_ratio"] < 0.1 and row["label"] == "unclear"


def test_one_stray_image_does_not_move_the_lca(hierarchy):
    top_FK = np.arange(10)[None]
    labels = np.array(RETRIEVERS * 2 + [RETRIEVERS[0], CAB] + [CAB] * 30)
    table = concepts.imagenet_table(
        top_FK, np.ones((1, 10, 4)), labels, hierarchy, np.zeros((len(labels), 3))
    )
    assert hierarchy.name(table.loc[0, "lca"]) == "retriever.n.01" and table.loc[0, "n_classes"] == 5


def test_inat_labels_of_planted_features(planted, classes):
    stats, _, _, _ = planted
    taxa_N = _taxa(classes).iloc[np.repeat(np.arange(len(classes)), PER_CLASS)]
    table = concepts.inat_table(stats.top_image_FK, stats.top_map_FKT, taxa_N, INatRules(localization_pixels=0),
                                grid=[GRID, GRID]).set_index("feature")  # fmt: skip
    assert table.loc[4, "spread"] == 0.0 and table.loc[5, "spread"] == pytest.approx(1.0)
    assert table.loc[4, "label"] == "trait" and table.loc[4, "deepest_rank"] == "genus"
    assert table.loc[4, "n_species"] >= 2 and table.loc[4, "purity_genus"] == 1.0
    assert table.loc[5, "label"] == "clade" and table.loc[5, "deepest_rank"] == "genus"
    assert table.loc[0, "label"] == "single-species"
    assert table.loc[3, "label"] == "unclear" and table.loc[3, "deepest_rank"] in ("class", "phylum")
    # two species of two orders: concentrated, no clade, cross-clade; the strays of 6 are not
    assert table.loc[7, "label"] == "cross-clade" and table.loc[7, "deepest_rank"] == "class"
    assert (
        table.loc[7, "n_major"] == 2
        and table.loc[7, "major_clades"] == 2
        and table.loc[7, "concentration_p"] < 0.01
    )
    assert table.loc[6, "label"] == "unclear" and table.loc[6, "major_share"] == 0.5
    assert not table["label"].isin(["cross-clade"]).drop(7).any()
    # counted at the class rank, O0 and O1 are one clade (C0): not cross-clade
    by_class = concepts.inat_table(stats.top_image_FK, stats.top_map_FKT, taxa_N,
                                   INatRules(abstract_rank="class")).set_index("feature")  # fmt: skip
    assert by_class.loc[7, "major_clades"] == 1 and by_class.loc[7, "label"] == "unclear"
    # the family-level threshold: a genus clade is a trait up to trait_max_rank="genus", not beyond "species"
    strict = concepts.inat_table(
        stats.top_image_FK,
        stats.top_map_FKT,
        taxa_N,
        INatRules(trait_max_rank="species", localization_pixels=0),
        grid=[GRID, GRID],
    )
    assert strict.set_index("feature").loc[4, "label"] == "unclear"


def test_null_p_values_are_uniform_on_unstructured_features(hierarchy, classes):
    rng = np.random.default_rng(5)
    labels = np.repeat(classes, PER_CLASS)
    n_feat = 300
    top_FK = np.stack([rng.choice(len(labels), K, replace=False) for _ in range(n_feat)])
    descriptors = rng.random((len(labels), 12))
    rules = ImageNetRules(null_samples=400, seed=1)
    table = concepts.imagenet_table(top_FK, np.ones((n_feat, K, 4)), labels, hierarchy, descriptors, rules)
    p = np.sort(table["coherence_p"].to_numpy())
    ks = np.max(np.maximum(np.arange(1, n_feat + 1) / n_feat - p, p - np.arange(n_feat) / n_feat))
    assert ks < 0.1, ks  # 1.63 / sqrt(300) = 0.094 at the 1% level
    assert 0.02 <= (p <= 0.1).mean() <= 0.18
    assert (table["concentration_p"] <= 0.05).mean() <= 0.08  # discrete, hence conservative
    assert (table["label"] == "abstract").mean() <= 0.05
    # seeded: the same rules give the same p-values; another seed other ones
    again = concepts.imagenet_table(top_FK[:20], np.ones((20, K, 4)), labels, hierarchy, descriptors, rules)
    np.testing.assert_array_equal(again["coherence_p"], table["coherence_p"][:20])


def test_thumbnails_follow_the_manifests_usable_rows(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for i, c in enumerate(colours):
        Image.new("RGB", (8, 6), c).save(tmp_path / f"{i}.png")
    manifest = pd.DataFrame({c: [""] * 3 for c in BASE_COLUMNS})
    manifest["path"] = [f"{i}.png" for i in range(3)]
    manifest[["width", "height"]] = 1
    manifest["split"] = ["val", "train", "val"]
    manifest["status"] = ["ok", "ok", "ok"]
    write_manifest(manifest, tmp_path / "m.parquet")
    out = thumbnails(tmp_path / "m.parquet", tmp_path, "val", tmp_path / "t.npz", size=2)
    saved = np.load(out)
    np.testing.assert_array_equal(saved["rows"], [0, 2])  # the store's order: manifest rows of the split
    desc = saved["descriptors"]
    assert desc.shape == (2, 12)
    np.testing.assert_allclose(desc[0].reshape(4, 3), [[1, 0, 0]] * 4)  # row 0: red
    np.testing.assert_allclose(desc[1].reshape(4, 3), [[0, 0, 1]] * 4)  # row 2: blue
    with pytest.raises(FileNotFoundError, match="check the dataset root"):
        thumbnails(tmp_path / "m.parquet", tmp_path / "elsewhere", "val", tmp_path / "u.npz")
    assert not (tmp_path / "u.npz").exists()


def test_a_feature_that_never_fires_is_unclear_with_every_column(hierarchy, classes):
    labels = np.repeat(classes, PER_CLASS)
    none_FK = np.full((2, K), -1)
    table = concepts.imagenet_table(
        none_FK, np.zeros((2, K, 4)), labels, hierarchy, np.zeros((len(labels), 3))
    )
    assert list(table.columns) == list(concepts.IMAGENET_COLUMNS) and list(table["label"]) == ["unclear"] * 2
    taxa_N = _taxa(classes).iloc[np.repeat(np.arange(len(classes)), PER_CLASS)]
    inat = concepts.inat_table(none_FK, np.zeros((2, K, 4)), taxa_N)
    assert list(inat.columns) == list(concepts.INAT_COLUMNS) and not inat["trait"].any()


def test_a_shared_context_gives_the_same_tables(planted, hierarchy, classes):
    stats, labels, descriptors, _ = planted
    rules = ImageNetRules(null_samples=100, seed=3)
    context = concepts.imagenet_context(labels, hierarchy, descriptors, rules)
    alone = concepts.imagenet_table(
        stats.top_image_FK, stats.top_map_FKT, labels, hierarchy, descriptors, rules
    )
    for _ in range(2):  # the second call reuses the null model's cached sets
        shared = concepts.imagenet_table(stats.top_image_FK, stats.top_map_FKT, labels, hierarchy, descriptors,
                                         rules, context=context)  # fmt: skip
        pd.testing.assert_frame_equal(shared, alone)
    with pytest.raises(ValueError, match="other rules or another split"):
        concepts.imagenet_table(stats.top_image_FK, stats.top_map_FKT, labels, hierarchy, descriptors,
                                ImageNetRules(), context=context)  # fmt: skip
    taxa_N = _taxa(classes).iloc[np.repeat(np.arange(len(classes)), PER_CLASS)]
    inat_rules = INatRules(null_samples=100)
    inat_context = concepts.inat_context(taxa_N, inat_rules)
    pd.testing.assert_frame_equal(
        concepts.inat_table(stats.top_image_FK, stats.top_map_FKT, taxa_N, inat_rules, context=inat_context),
        concepts.inat_table(stats.top_image_FK, stats.top_map_FKT, taxa_N, inat_rules),
    )


def test_one_dominant_species_is_single_species_as_on_imagenet(classes):
    """12 of 16 top images from species s0, 4 from s1 of the same genus: single-species at the default
    share (0.7, ImageNet's single_class_share), a genus-level trait when single-species needs 0.9."""
    taxa_N = _taxa(classes).iloc[np.repeat(np.arange(len(classes)), PER_CLASS)]
    top_FK = np.concatenate([np.arange(12), PER_CLASS + np.arange(4)])[None]
    maps_FKT = np.zeros((1, 16, 9))
    maps_FKT[:, :, 0] = 1.0  # one patch of nine: localized
    table = concepts.inat_table(top_FK, maps_FKT, taxa_N, grid=[3, 3])
    assert table.loc[0, "purity_species"] == 0.75 and table.loc[0, "label"] == "single-species"
    strict = concepts.inat_table(top_FK, maps_FKT, taxa_N, INatRules(single_species_share=0.9), grid=[3, 3])
    assert strict.loc[0, "label"] == "trait" and strict.loc[0, "deepest_rank"] == "genus"
