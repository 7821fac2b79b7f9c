"""Relabelling saved concept tables (vitsae.analysis.relabel) against tables built directly with the other
rules (vitsae.analysis.concepts), on random features with planted structure over real ImageNet wnids and a
made-up iNat taxonomy."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pytest

from vitsae.analysis import concepts, nulls, relabel, taxonomy
from vitsae.analysis.settings import ImageNetRules, INatRules
from vitsae.analysis.wordnet import load_hierarchy

K, T = 20, 9  # top images per feature, tokens per patch map
CATS = ["n02123045", "n02123159", "n02123394", "n02123597", "n02124075"]
RETRIEVERS = ["n02099601", "n02099712", "n02099267", "n02099429"]
# 3x3 token grid; a part-contrast threshold near the synthetic features' median (random cells: about 0.45);
# a part-uniqueness one below all of them (random cells: 0.65-0.97), so that the changes below move traits
BASE_IMAGENET = ImageNetRules(
    null_samples=200, seed=1, localization_pixels=0, trait_min_contrast=0.45, trait_min_uniqueness=0.6
)
BASE_INAT = INatRules(
    null_samples=200, seed=1, localization_pixels=0, trait_min_contrast=0.45, trait_min_uniqueness=0.6
)

#: Each SPEC key alone at values on either side of its default (every one of them changes some label or
#: trait of the synthetic features: checked below, so the reproduction test is not vacuous).
IMAGENET_CHANGES = {
    "single_class_share": [0.5, 0.9],
    "alpha": [0.005, 0.05],
    "taxonomic_min_depth": [5, 9],
    "abstract_min_class_share": [0.1, 0.3],
    "abstract_min_coverage": [0.5, 0.9],
    "abstract_min_branches": [1, 3],
    "min_diversity_ratio": [0.5, 1.0],
    "min_region_diversity_ratio": [0.3, 1.2],
    "cooccurrence_min_rate": [0.05, 0.6],
    "branch_depth": [4, 8],
    "trait_min_classes": [1, 3],
    "trait_max_localization": [0.1, 0.5],
    "trait_max_spread": [0.3, 0.8],
    "trait_max_support": [0.3, 0.9],
    "trait_min_contrast": [0.35, 0.6],
    "trait_min_uniqueness": [0.72, 0.8],
    "high_norm_multiple": [2.0, 4.0],
}
INAT_CHANGES = {
    "single_species_share": [0.5, 0.9],
    "clade_purity": [0.7, 1.0],
    "trait_max_rank": ["species", "family", "class"],
    "trait_min_species": [1, 3],
    "trait_max_localization": [0.1, 0.5],
    "trait_max_spread": [0.3, 0.8],
    "trait_max_support": [0.3, 0.9],
    "trait_min_contrast": [0.35, 0.6],
    "trait_min_uniqueness": [0.72, 0.8],
    "high_norm_multiple": [2.0, 4.0],
    "alpha": [0.001, 0.05],  # 0.001: below the smallest p-value (1 / 201),
    "abstract_min_coverage": [0.5, 0.9],
    "abstract_min_clades": [1, 3],  # not a SPEC key, but relabel applies it from the saved major_clades
}
IMAGENET_COMBOS = [
    {"alpha": 0.05, "taxonomic_min_depth": 9, "abstract_min_class_share": 0.1, "branch_depth": 8},
    {"single_class_share": 0.5, "abstract_min_coverage": 0.5, "abstract_min_branches": 1,
     "min_diversity_ratio": 0.5, "min_region_diversity_ratio": 1.2, "cooccurrence_min_rate": 0.6},
    {"taxonomic_min_depth": 5, "trait_min_classes": 3, "trait_max_localization": 0.5, "branch_depth": 4,
     "abstract_min_class_share": 0.3, "high_norm_multiple": 3.0, "trait_max_spread": 0.8,
     "trait_max_support": 0.9},
]  # fmt: skip
INAT_COMBOS = [
    {
        "clade_purity": 0.7,
        "trait_max_rank": "class",
        "trait_min_species": 3,
        "high_norm_multiple": 3.0,
        "trait_max_spread": 0.3,
    },
    {"single_species_share": 0.9, "alpha": 0.05, "abstract_min_coverage": 0.5, "trait_max_localization": 0.5},
    {"clade_purity": 1.0, "single_species_share": 0.5, "trait_max_rank": "species", "alpha": 0.005},
]


def _maps(rng: np.random.Generator, n_feat: int) -> np.ndarray:
    """Patch maps whose localization, spread and support vary by feature: about ``h`` of 9 tokens hot in
    each image, scattered (every other feature) or the ``h`` nearest a random token (compact), over a
    background active on a random share of the tokens."""
    maps_FKT = 0.4 * rng.random((n_feat, K, T))
    active_F = rng.random(n_feat)
    active_F[::2] *= 0.2  # the compact features (below) mostly silent off their hot tokens: support varies
    maps_FKT[rng.random((n_feat, K, T)) > active_F[:, None, None]] = 0.0
    hot_F = rng.integers(1, T + 1, n_feat)
    hot_F[::2] = rng.integers(1, 4, len(hot_F[::2]))  # compact ones mostly small: localization varies too
    yx_T = np.stack(np.divmod(np.arange(T), 3), axis=1)
    for f in range(n_feat):
        for k in range(K):
            h = int(np.clip(hot_F[f] + rng.integers(-1, 2), 1, T))
            if f % 2:
                hot = rng.choice(T, h, replace=False)
            else:
                dist_T = ((yx_T - yx_T[rng.integers(T)]) ** 2).sum(axis=1) + 0.1 * rng.random(T)
                hot = np.argsort(dist_T)[:h]
            maps_FKT[f, k, hot] = 1.0
    return maps_FKT


def _ratios(rng: np.random.Generator, n_feat: int) -> np.ndarray:
    """Peak-token norm ratios: most features near 1, a third peaking on high-norm tokens (2-6x), a few
    with NaN images (no top image in the slot)."""
    ratio_FK = np.exp(rng.normal(0.1, 0.2, (n_feat, K)))
    high_F = rng.random(n_feat) < 1 / 3
    ratio_FK[high_F] *= rng.uniform(2, 6, (int(high_F.sum()), 1))
    ratio_FK[rng.random((n_feat, K)) < 0.05] = np.nan
    return ratio_FK


def _draw(
    rng: np.random.Generator, groups: list[np.ndarray], n: int, n_strays: int, n_images: int
) -> np.ndarray:
    """``n`` distinct images from ``groups`` (index arrays, Dirichlet weights) plus ``n_strays`` from
    anywhere, padded with -1 to K."""
    weights = rng.dirichlet(np.full(len(groups), 0.7))
    counts = rng.multinomial(n - n_strays, weights)
    picked = [rng.choice(g, min(c, len(g)), replace=False) for g, c in zip(groups, counts)]
    chosen = np.concatenate([*picked, np.zeros(0, np.int64)]).astype(np.int64)
    strays = rng.choice(np.setdiff1d(np.arange(n_images), chosen), n_strays, replace=False)
    row = np.concatenate([chosen, strays])
    rng.shuffle(row)
    return np.concatenate([row, np.full(K - len(row), -1)])[:K]


@pytest.fixture(scope="module")
def hierarchy():
    return load_hierarchy()


@pytest.fixture(scope="module")
def imagenet(hierarchy, tmp_path_factory):
    """(top_image_FK, maps_FKT, labels_N, descriptors_ND, ratios, cells_NCD, multilabels): 240 features over
    40 classes (30 images each): one class, a WordNet subtree (cats, retrievers, some animals), classes
    across branches, random images, and features with too few top images. Every third class's images
    look alike cell by cell (visual motifs), and the classes of each even-odd pair share half their
    photos (co-occurrence)."""
    rng = np.random.default_rng(7)
    animals = hierarchy.animal_classes()
    others = [w for w in hierarchy.classes if w not in set(animals)]
    classes = CATS + RETRIEVERS + [w for w in animals[::30] if w not in CATS + RETRIEVERS] + others[::40]
    per_class = 30
    labels_N = np.repeat(classes, per_class)
    n_images = len(labels_N)
    of_class = {c: np.nonzero(labels_N == c)[0] for c in classes}
    centers_CD = rng.normal(size=(len(classes), 8))
    descriptors_ND = (np.repeat(centers_CD, per_class, axis=0) * rng.uniform(0, 1.5, (n_images, 1))
                      + rng.normal(size=(n_images, 8))).astype(np.float32)  # fmt: skip
    rows = []
    for f in range(240):
        kind = f % 6
        n = int(rng.integers(6, K + 1))
        if kind == 0:  # one class, a few strays
            groups, strays = [of_class[str(rng.choice(classes))]], int(rng.integers(0, 5))
        elif kind == 1:  # a subtree
            pool = [CATS, RETRIEVERS, CATS + RETRIEVERS, [w for w in classes if w in set(animals)]][f % 4]
            chosen = rng.choice(pool, int(rng.integers(2, 5)), replace=False)
            groups, strays = [of_class[str(c)] for c in chosen], int(rng.integers(0, 3))
        elif kind in (2, 3):  # classes from anywhere (often across branches)
            chosen = rng.choice(classes, int(rng.integers(2, 5)), replace=False)
            groups, strays = [of_class[str(c)] for c in chosen], int(rng.integers(0, 4))
        elif kind == 4:  # random images
            groups, strays = [np.arange(n_images)], 0
        else:  # too few top images (0-4) or a small set
            groups, strays, n = [of_class[str(rng.choice(classes))]], 0, int(rng.integers(0, 8))
        rows.append(_draw(rng, groups, n, min(strays, n), n_images))
    cells_NCD = rng.random((n_images, 16, 10)).astype(np.float32)
    alike = np.isin(labels_N, classes[::3])
    cells_NCD[alike] = 0.5 + 0.02 * cells_NCD[alike]
    wnids = hierarchy.classes
    together = [[wnids.index(classes[i]), wnids.index(classes[i + 1])] for i in range(0, len(classes) - 1, 2)]
    multilabels = tmp_path_factory.mktemp("relabel") / "multilabels.json"
    multilabels.write_text(json.dumps(together + [[wnids.index(c)] for c in classes]))
    return (
        np.stack(rows),
        _maps(rng, 240),
        labels_N,
        descriptors_ND,
        _ratios(rng, 240),
        cells_NCD,
        multilabels,
    )


def _taxa() -> pd.DataFrame:
    """A made-up taxonomy: 2 kingdoms (Animalia, Plantae) x 2 phyla x 2 classes x 2 orders x 2 families x
    2 genera x 3 species = 192 species, names made unique per lineage."""
    rows = []
    for i in range(192):
        k, p, c, o, fa, g = i // 96, i // 48, i // 24, i // 12, i // 6, i // 3
        rows.append((["Animalia", "Plantae"][k], f"P{p}", f"C{c}", f"O{o}", f"F{fa}", f"G{g}", f"G{g} s{i}"))
    return pd.DataFrame(rows, columns=list(reversed(taxonomy.RANKS)))


@pytest.fixture(scope="module")
def inat():
    """(top_image_FK, maps_FKT, taxa_N): 240 features over 192 species (8 images each): one species, a
    clade at a random rank, species of unrelated orders, random images, too few top images."""
    rng = np.random.default_rng(11)
    per_species = 8
    species = _taxa()
    taxa_N = species.iloc[np.repeat(np.arange(len(species)), per_species)].reset_index(drop=True)
    n_images = len(taxa_N)
    species_N = np.repeat(np.arange(len(species)), per_species)
    of_species = [np.nonzero(species_N == s)[0] for s in range(len(species))]
    rows = []
    for f in range(240):
        kind = f % 6
        n = int(rng.integers(6, K + 1))
        if kind == 0:
            groups, strays = [of_species[int(rng.integers(192))]], int(rng.integers(0, 5))
        elif kind in (1, 2):  # a clade: 2-6 species below one node of a random rank
            width = [3, 6, 12, 24, 48][int(rng.integers(5))]
            start = width * int(rng.integers(192 // width))
            chosen = rng.choice(
                np.arange(start, start + width), min(width, int(rng.integers(2, 7))), replace=False
            )
            groups, strays = [of_species[s] for s in chosen], int(rng.integers(0, 3))
        elif kind == 3:  # 2-3 species of different orders
            chosen = rng.choice(16, int(rng.integers(2, 4)), replace=False) * 12 + rng.integers(12)
            groups, strays = [of_species[s] for s in chosen], int(rng.integers(0, 4))
        elif kind == 4:
            groups, strays = [np.arange(n_images)], 0
        else:
            groups, strays, n = [of_species[int(rng.integers(192))]], 0, int(rng.integers(0, 8))
        rows.append(_draw(rng, groups, n, min(strays, n), n_images))
    return np.stack(rows), _maps(rng, 240), taxa_N, _ratios(rng, 240)


class _Tables:
    """Concept tables of one synthetic split under any rules, sharing the context (its null model depends
    only on null_samples and seed, which no test varies)."""

    def __init__(self, kind: str, data: tuple, hierarchy) -> None:
        self.kind, self.data, self.hierarchy = kind, data, hierarchy
        if kind == "imagenet":
            _, _, labels_N, desc_ND, _, cells_NCD, multilabels = data
            self.context = concepts.imagenet_context(labels_N, hierarchy, desc_ND, BASE_IMAGENET, cells_NCD,
                                                     multilabels)  # fmt: skip
        else:
            self.context = concepts.inat_context(data[2], BASE_INAT)
            self.cells_NCD = np.random.default_rng(7).random((len(data[2]), 16, 10)).astype(np.float32)

    def table(self, rules) -> pd.DataFrame:
        context = dataclasses.replace(self.context, rules=rules)
        if self.kind == "imagenet":
            top_FK, maps_FKT, labels_N, desc_ND, ratio_FK, _, _ = self.data
            return concepts.imagenet_table(
                top_FK, maps_FKT, labels_N, self.hierarchy, desc_ND, rules, context,
                top_peak_norm_ratio_FK=ratio_FK, grid=(3, 3),
            )  # fmt: skip
        top_FK, maps_FKT, taxa_N, ratio_FK = self.data
        table = concepts.inat_table(top_FK, maps_FKT, taxa_N, rules, context, top_peak_norm_ratio_FK=ratio_FK,
                                    grid=(3, 3), cells_NCD=self.cells_NCD)  # fmt: skip
        table["animal"] = nulls.inat_animal(
            top_FK, taxa_N["kingdom"].to_numpy(), rules.n_top, rules.clade_purity
        )
        return table


@pytest.fixture(scope="module")
def tables(imagenet, inat, hierarchy):
    return {"imagenet": _Tables("imagenet", imagenet, hierarchy), "inat": _Tables("inat", inat, hierarchy)}


@pytest.fixture(scope="module")
def base_tables(tables):
    return {"imagenet": tables["imagenet"].table(BASE_IMAGENET), "inat": tables["inat"].table(BASE_INAT)}


def _assert_same_labels(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    bad = np.nonzero((got["label"].to_numpy() != want["label"].to_numpy())
                     | (got["trait"].to_numpy() != want["trait"].astype(bool).to_numpy()))[0]  # fmt: skip
    assert len(bad) == 0, f"{what}: rows {bad[:10].tolist()} relabelled {got.iloc[bad[:3]].to_dict('records')}, " \
        f"built {want.iloc[bad[:3]][['label', 'trait']].to_dict('records')}"  # fmt: skip


@pytest.mark.parametrize("kind", ["imagenet", "inat"])
def test_the_same_rules_reproduce_every_label_also_through_the_csv(kind, base_tables, hierarchy):
    table = base_tables[kind]
    base = BASE_IMAGENET if kind == "imagenet" else BASE_INAT
    labels = set(table["label"])
    assert labels == set(concepts.IMAGENET_LABELS if kind == "imagenet" else concepts.INAT_LABELS), labels
    assert table["trait"].any() and table["label"].eq("unclear").sum() < len(table) / 2
    assert (table["n_top"] < base.min_top_images).sum() >= 10  # rows with NaN statistics
    out = relabel.relabel(table, kind, base, hierarchy)
    assert list(out.columns) == ["label", "trait", "animal"] and out.index.equals(table.index)
    _assert_same_labels(out, table, "same rules")
    np.testing.assert_array_equal(out["animal"], table["animal"].fillna(False).astype(bool))
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    saved = pd.read_csv(io.StringIO(buffer.getvalue()))
    pd.testing.assert_frame_equal(relabel.relabel(saved, kind, base, hierarchy), out)


@pytest.mark.parametrize("kind", ["imagenet", "inat"])
def test_each_changed_threshold_gives_the_labels_of_a_table_built_with_it(
    kind, tables, base_tables, hierarchy
):
    base = BASE_IMAGENET if kind == "imagenet" else BASE_INAT
    changes = IMAGENET_CHANGES if kind == "imagenet" else INAT_CHANGES
    assert set(relabel.SPEC_KEYS[kind]) <= set(changes)
    saved = base_tables[kind]
    # one table held through every change, as the specification curve holds it (relabel.Frozen keeps its
    # columns and per-threshold class statistics): a memo keyed on too few thresholds would show here
    held = relabel.Frozen(saved)
    for key, values in changes.items():
        moved = 0
        for value in values:
            rules = dataclasses.replace(base, **{key: value})
            out = relabel.relabel(saved, kind, rules, hierarchy)
            _assert_same_labels(out, tables[kind].table(rules), f"{key}={value!r}")
            _assert_same_labels(relabel.relabel(held, kind, rules, hierarchy), tables[kind].table(rules),
                                f"held, {key}={value!r}")  # fmt: skip
            moved += int(
                ((out["label"] != saved["label"]) | (out["trait"] != saved["trait"].astype(bool))).sum()
            )
        assert moved > 0, f"{key} changes no label of the synthetic features: the test would not see it"


@pytest.mark.parametrize("kind", ["imagenet", "inat"])
def test_combined_changes_and_a_relabelled_relabel_base(kind, tables, base_tables, hierarchy):
    base = BASE_IMAGENET if kind == "imagenet" else BASE_INAT
    for settings in IMAGENET_COMBOS if kind == "imagenet" else INAT_COMBOS:
        rules = dataclasses.replace(base, **settings)
        _assert_same_labels(relabel.relabel(base_tables[kind], kind, rules, hierarchy), tables[kind].table(rules),
                            str(settings))  # fmt: skip
    # the other way round: a table built with changed rules, relabelled back to the base ones
    other = dataclasses.replace(base, **(IMAGENET_COMBOS if kind == "imagenet" else INAT_COMBOS)[0])
    _assert_same_labels(relabel.relabel(tables[kind].table(other), kind, base, hierarchy), base_tables[kind],
                        "back to base")  # fmt: skip


def test_features_with_too_few_top_images_stay_unclear(base_tables, hierarchy):
    table = base_tables["imagenet"]
    few = table["classes"].isna().to_numpy()
    assert few.sum() >= 10
    lenient = ImageNetRules(single_class_share=0.0, alpha=1.0, taxonomic_min_depth=0, abstract_min_class_share=0.0,
                            abstract_min_coverage=0.0, abstract_min_branches=0, min_diversity_ratio=0.0,
                            trait_min_classes=0, trait_max_localization=1.0)  # fmt: skip
    out = relabel.relabel(table, "imagenet", lenient, hierarchy)
    assert (out["label"][few] == "unclear").all() and not out["trait"][few].any()
    assert (out["label"][~few] == "single-class").all()  # everything else passes rule 2 at share 0
    inat = base_tables["inat"]
    few = inat["purity_species"].isna().to_numpy()
    out = relabel.relabel(inat, "inat", INatRules(single_species_share=0.0), hierarchy)
    assert (out["label"][few] == "unclear").all() and (out["label"][~few] == "single-species").all()


def test_the_saved_animal_column_is_kept_and_needed(base_tables, hierarchy):
    inat = base_tables["inat"]
    out = relabel.relabel(inat, "inat", INatRules(clade_purity=0.5), hierarchy)
    np.testing.assert_array_equal(out["animal"], inat["animal"])  # the table's own clade_purity (0.9)
    with pytest.raises(KeyError, match=r"lacks the columns \['animal'\].*nulls.inat_animal"):
        relabel.relabel(inat.drop(columns="animal"), "inat", BASE_INAT)
    with pytest.raises(TypeError, match="inat tables are relabelled with INatRules, not ImageNetRules"):
        relabel.relabel(inat, "inat", BASE_IMAGENET)


def test_check_grid_names_the_key_and_why():
    relabel.check_grid("imagenet", {k: [1] for k in relabel.SPEC_KEYS["imagenet"]})
    with pytest.raises(ValueError, match=r"imagenet spec grid: 'lca_coverage' needs the top images again: it "
                       r"changes the core classes \(lca, lca_depth"):  # fmt: skip
        relabel.check_grid("imagenet", {"alpha": [0.05], "lca_coverage": [0.8]})
    with pytest.raises(
        ValueError, match="'n_top' needs the top images again: it changes which of the stored"
    ):
        relabel.check_grid("inat", {"n_top": [10]})
    with pytest.raises(
        ValueError, match="'abstract_rank' needs the top images again: it changes major_clades"
    ):
        relabel.check_grid("inat", {"abstract_rank": ["class"]})
    with pytest.raises(ValueError, match=r"'alpah' is not a field of ImageNetRules; the curve can vary "
                       r"single_class_share, alpha, "):  # fmt: skip
        relabel.check_grid("imagenet", {"alpah": [0.05]})
    with pytest.raises(ValueError, match="'single_class_share' is not a field of INatRules"):
        relabel.check_grid("inat", {"single_class_share": [0.5]})
    with pytest.raises(ValueError, match="no concept table kind 'inat2021'"):
        relabel.check_grid("inat2021", {})
    with pytest.raises(ValueError, match="'trait_max_rank': 'tribe' is not a rank"):
        relabel.check_grid("inat", {"trait_max_rank": ["order", "tribe"]})
    with pytest.raises(ValueError, match="'branch_depth': 6.5 is not a whole number"):
        relabel.check_grid("imagenet", {"branch_depth": [6.5]})
    with pytest.raises(ValueError, match="'alpha': give a non-empty list"):
        relabel.check_grid("inat", {"alpha": []})


def test_every_rules_field_is_varyable_or_has_a_reason():
    for kind, cls in relabel.RULES.items():
        for name in cls.__dataclass_fields__:
            if name in relabel.SPEC_KEYS[kind]:
                relabel.check_grid(kind, {name: [getattr(cls(), name)]})
                continue
            with pytest.raises(
                ValueError, match=f"'{name}' (needs the top images again|is not in SPEC_KEYS)"
            ):
                relabel.check_grid(kind, {name: [getattr(cls(), name)]})


def test_grid_cells_are_the_product_in_order():
    base = ImageNetRules(alpha=0.02)
    cells = relabel.grid_cells(base, {"taxonomic_min_depth": [6, 8.0], "alpha": [0.01, 0.05, 0.1]})
    assert len(cells) == 6
    assert [s for s, _ in cells] == [
        {"taxonomic_min_depth": d, "alpha": a} for d in (6, 8) for a in (0.01, 0.05, 0.1)
    ]
    assert all(type(s["taxonomic_min_depth"]) is int for s, _ in cells)
    for settings, rules in cells:
        assert (
            rules == dataclasses.replace(base, **settings)
            and rules.single_class_share == base.single_class_share
        )
    assert relabel.grid_cells(base, {}) == [({}, base)]
    inat = relabel.grid_cells(INatRules(), {"trait_max_rank": ["genus", "family"]})
    assert [r.trait_max_rank for _, r in inat] == ["genus", "family"]
    with pytest.raises(ValueError, match="'seed' needs the top images again"):
        relabel.grid_cells(INatRules(), {"seed": [1, 2]})


def test_label_and_trait_thresholds_do_not_cross(base_tables, hierarchy):
    """What lets the claims job relabel once per distinct statistic (relabel.only_what_decides): the
    trait-only thresholds never move a label, the label-only ones never move a trait; each moves its own."""
    table = base_tables["imagenet"]
    base = relabel.relabel(table, "imagenet", BASE_IMAGENET, hierarchy)
    assert set(relabel.IMAGENET_TRAIT_ONLY) | set(relabel.IMAGENET_LABEL_ONLY) < set(IMAGENET_CHANGES)
    for keys, same, moved in ((relabel.IMAGENET_TRAIT_ONLY, "label", "trait"),
                              (relabel.IMAGENET_LABEL_ONLY, "trait", "label")):  # fmt: skip
        n_moved = 0
        for key in keys:
            for value in IMAGENET_CHANGES[key]:
                rules = dataclasses.replace(BASE_IMAGENET, **{key: value})
                out = relabel.relabel(table, "imagenet", rules, hierarchy)
                assert out[same].tolist() == base[same].tolist(), (key, value)
                n_moved += int((out[moved] != base[moved]).sum())
                normal = relabel.only_what_decides(rules, "imagenet", 1 if same == "label" else 2)
                assert getattr(normal, key) == getattr(ImageNetRules(), key)
        assert n_moved > 0, keys
    inat = INatRules(alpha=0.05)
    assert relabel.only_what_decides(inat, "inat", 2) is inat
