"""Relabelling saved concept tables under other label thresholds: the cells of a specification curve.

A specification curve asks whether a finding survives other reasonable thresholds. Rebuilding the concept
tables (:mod:`vitsae.analysis.concepts`) for every cell would mean another pass over every feature's top
images and null model; most thresholds, though, only compare a *saved column* with a number, so the labels
of a cell follow from the saved table alone. :func:`relabel` recomputes ``label``, ``trait`` and ``animal``
of a saved table under other rules, in the rule order of :mod:`vitsae.analysis.concepts` exactly (the unit
tests check every row against a table built directly with the other rules).

What each varyable threshold (:data:`SPEC_KEYS`) reads
------------------------------------------------------
ImageNet (:class:`~vitsae.analysis.settings.ImageNetRules`):

* ``single_class_share``: ``top_class_share``; ``alpha``: ``coherence_p``, ``concentration_p``;
  ``taxonomic_min_depth``: ``lca_depth``; ``min_diversity_ratio``: ``diversity_ratio``;
  ``cooccurrence_min_rate``: ``major_cooccurrence``, recomputed for the cell's major classes from
  ``classes`` and ``cooccurring_pairs``;
  ``min_region_diversity_ratio``: ``region_diversity_ratio``, ``core_region_ratio`` and
  ``major_region_ratio``, the latter recomputed for the cell's major classes from ``classes`` and
  ``region_pairs`` (NaN, as in a table of an older version or of CLS tokens: the visual-motif rule does
  not apply);
  ``trait_max_localization``: ``localization``; ``trait_max_spread``, ``trait_max_support``: ``spread``,
  ``support`` (NaN, as in a table of an older version: no trait); ``trait_min_contrast``:
  ``part_contrast`` (NaN: the test does not apply); ``trait_min_uniqueness``: ``part_uniqueness`` (NaN,
  as in a table of an older version: the test does not apply); ``high_norm_multiple``: ``peak_norm_ratio``;
  ``abstract_min_coverage``, ``abstract_min_branches``:
  ``major_share``, ``major_branches`` (recomputed, below).
* ``abstract_min_class_share`` and ``branch_depth``: the major classes are recomputed from the ``classes``
  column (``wnid:count;...``): the classes with ``count / n_top >= abstract_min_class_share - 1e-12``, their
  total share (``major_share``, summed in wnid order as the table does, so the floats are the same) and the
  top-level branches they span (``major_branches``: ``hierarchy.n_branches(major, branch_depth)``, 0 for
  no major class).
* ``trait_min_classes``: the number of *core* classes, recomputed from ``classes`` with the rules'
  ``lca_coverage`` (which must be the one the table was built with: it is not varyable).

iNat (:class:`~vitsae.analysis.settings.INatRules`):

* ``single_species_share``: ``purity_species``; ``clade_purity``: the deepest rank whose ``purity_<rank>``
  is at least ``clade_purity`` (``deepest_rank``, recomputed); ``trait_max_rank``, ``trait_min_species``
  (``n_species``), ``trait_max_localization`` (``localization``), ``trait_max_spread`` (``spread``),
  ``trait_max_support`` (``support``), ``trait_min_contrast`` (``part_contrast``), ``trait_min_uniqueness``
  (``part_uniqueness``),
  ``high_norm_multiple``
  (``peak_norm_ratio``): the trait / clade labels;
  ``alpha``: ``concentration_p``; ``abstract_min_coverage``: the saved ``major_share``.
* The saved ``major_share`` and ``major_clades`` hold for the table's own ``abstract_min_class_share`` and
  ``abstract_rank`` only, and the table keeps no per-species counts: neither is varyable.
  ``abstract_min_clades`` compares the saved ``major_clades`` and :func:`relabel` applies it, but it is
  not in :data:`SPEC_KEYS` (add it to :data:`vitsae.analysis.settings.SPEC_KEYS` to vary it).

Every other threshold (``n_top``, ``min_top_images``, ``lca_coverage``, ``null_samples``, ``seed``, iNat's
``abstract_min_class_share`` and ``abstract_rank``) changes the table's own columns and needs the top
images again; :func:`check_grid` refuses it with the reason. :func:`relabel` takes those fields of
``rules`` to be the ones the table was built with; it cannot check that.

``animal`` stays as saved (NaN read as False)
---------------------------------------------
Finding 2 is a share of traits *among animal features*: its denominator is the saved ``animal`` column in
every cell, so the curve varies the numerator only. ImageNet's ``animal`` (every core class below
animal.n.01) depends on ``lca_coverage`` alone, so it is exact in every cell. iNat's ``animal``
(:func:`vitsae.analysis.nulls.inat_animal`, added by :mod:`vitsae.analysis.concept_tables`) is the share of
Animalia among the top images against ``clade_purity``: recomputing it needs the top images, so it is kept
at the table's own ``clade_purity`` even in cells that vary ``clade_purity``.

Features with too few top images (NaN statistics, ``classes`` / ``purity_species`` empty) stay
``unclear`` with ``trait`` False in every cell.

Null tables: a null CSV's ``label`` relabels like an observed table's, but not its ``trait``. There, the
``trait`` of each observed animal feature came from a separate draw of random *animal* images
(:func:`vitsae.analysis.nulls.with_animal_null`) whose columns are not saved; relabelling a null table
recomputes ``trait`` from the row's own columns, i.e. from the whole-split draw.

Speed: the work per distinct ``classes`` string (parsing, the major classes, the hierarchy's set cover, the
core classes) is cached for the life of the process, keyed by the string and the thresholds it depends on,
and so is the resulting per-row array of a whole ``classes`` column (keyed by a digest of its contents), so
the cells of a grid pay one hash of the column and vectorised comparisons over the rows. Measured on
10,000 ImageNet features (8,484 distinct ``classes``), 324 cells with 9 (abstract_min_class_share,
branch_depth) pairs, on 2 CPU cores: 1.4-2.2 s from cold caches, 0.8-1.2 s warm; iNat, 324 cells: 0.4-0.7 s.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import itertools
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from vitsae.analysis import cooccurrence, regions, taxonomy
from vitsae.analysis.concepts import _core_classes, _major
from vitsae.analysis.settings import RULES, SPEC_KEYS, ImageNetRules, INatRules
from vitsae.analysis.wordnet import Hierarchy, load_hierarchy

__all__ = ["SPEC_KEYS", "check_grid", "grid_cells", "relabel"]
# SPEC_KEYS (kind → the thresholds a curve may vary) lives in the import-light settings module, where the
# config's validation reads it too; it is re-exported here, beside the code that honours it.

#: The other fields of each kind's rules, and what of the saved table they change (check_grid's reason).
_SHARED_WHY = {
    "n_top": "which of the stored top images count (every column)",
    "min_top_images": "which features get statistics at all (every column of those rows)",
    "null_samples": "the null model (every p-value and null mean, diversity_ratio)",
    "seed": "the null model's random image sets (every p-value and null mean, diversity_ratio)",
}
_WHY = {
    "imagenet": {
        **_SHARED_WHY,
        "lca_coverage": "the core classes (lca, lca_depth, n_branches, animal)",
    },
    "inat": {
        **_SHARED_WHY,
        "abstract_min_class_share": "the major species (n_major, major_share, major_clades), and the table "
        "keeps no per-species counts",
        "abstract_rank": "major_clades (the rank at which the major species' clades are counted)",
    },
}

_IMAGENET_NEEDS = ("classes", "top_class_share", "coherence_p", "concentration_p", "lca_depth",
                   "diversity_ratio", "localization", "animal")  # fmt: skip
_INAT_NEEDS = (*(f"purity_{r}" for r in taxonomy.RANKS), "n_species", "localization", "concentration_p",
               "major_share", "major_clades", "animal")  # fmt: skip


# --------------------------------------------------------------------------------------------
# The grid


def _kind(rules: ImageNetRules | INatRules) -> str:
    for kind, cls in RULES.items():
        if type(rules) is cls:
            return kind
    known = ", ".join(cls.__name__ for cls in RULES.values())
    raise TypeError(f"{type(rules).__name__} is not one of the concept tables' rules ({known})")


def _check_kind(kind: str) -> None:
    if kind not in RULES:
        raise ValueError(f"no concept table kind {kind!r}; known: {sorted(RULES)}")


def check_grid(kind: str, grid: Mapping[str, Sequence]) -> None:
    """Raise ValueError unless every key of ``grid`` (threshold → values to try) is a threshold the saved
    tables of ``kind`` can be relabelled with (:data:`SPEC_KEYS`) and its values fit the field: a non-empty
    list of numbers (whole numbers for integer fields) or, for ``trait_max_rank``, of taxonomic ranks.
    The message names the key and, for a threshold that needs the top images again, what it changes."""
    _check_kind(kind)
    cls = RULES[kind]
    defaults = cls()
    allowed = ", ".join(SPEC_KEYS[kind])
    for key, values in grid.items():
        where = f"{kind} spec grid: {key!r}"
        if key not in SPEC_KEYS[kind]:
            if key in _WHY[kind]:
                why = f"needs the top images again: it changes {_WHY[kind][key]}"
            elif key in cls.__dataclass_fields__:
                why = f"is not in SPEC_KEYS[{kind!r}] (vitsae.analysis.settings)"
            else:
                why = f"is not a field of {cls.__name__}"
            raise ValueError(f"{where} {why}; the curve can vary {allowed}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"{where}: give a non-empty list of values, not {values!r}")
        base = getattr(defaults, key)
        for v in values:
            number = isinstance(v, numbers.Real) and not isinstance(v, bool)
            if isinstance(base, str):
                if v not in taxonomy.RANKS:
                    raise ValueError(f"{where}: {v!r} is not a rank ({', '.join(taxonomy.RANKS)})")
            elif not number or (isinstance(base, int) and float(v) != int(v)):
                kind_of_number = "whole number" if isinstance(base, int) else "number"
                raise ValueError(f"{where}: {v!r} is not a {kind_of_number}")


def grid_cells(
    base_rules: ImageNetRules | INatRules, grid: Mapping[str, Sequence]
) -> list[tuple[dict, ImageNetRules | INatRules]]:
    """Every cell of ``grid`` (checked by :func:`check_grid`; threshold → values) as ``(settings,
    rules)``: ``settings`` maps each key of ``grid`` to the cell's value (integer fields as ``int``, the
    others as ``float``, ranks as given), ``rules`` is ``base_rules`` with those values
    (``dataclasses.replace``); a threshold absent from ``grid`` keeps its base value.

    Order: ``itertools.product`` over the keys in the grid's order, each key's values in their listed
    order, the *last* key varying fastest; the first cell takes every key's first value. An empty grid
    gives one cell, ``({}, base_rules)``."""
    kind = _kind(base_rules)
    check_grid(kind, grid)
    keys = list(grid)
    cells = []
    for values in itertools.product(*(grid[k] for k in keys)):
        settings = {k: _coerce(getattr(base_rules, k), v) for k, v in zip(keys, values)}
        cells.append((settings, dataclasses.replace(base_rules, **settings)))
    return cells


def _coerce(base: object, value: object) -> object:
    if isinstance(base, str):
        return value
    return int(value) if isinstance(base, int) else float(value)


# --------------------------------------------------------------------------------------------
# Relabelling


#: ImageNet thresholds that decide only the ``trait`` column, and only ``label``: a claim 1 statistic (the
#: abstract label) never reads the first, an ImageNet claim 2 statistic (trait among animal) never the
#: second (tests/unit/test_relabel.py checks both on every row). iNat's trait is a label: all count.
IMAGENET_TRAIT_ONLY = (
    "trait_min_classes",
    "trait_max_localization",
    "trait_max_spread",
    "trait_min_uniqueness",
    "high_norm_multiple",
)
IMAGENET_LABEL_ONLY = ("single_class_share", "alpha", "abstract_min_class_share", "abstract_min_coverage",
                       "abstract_min_branches", "min_diversity_ratio", "min_region_diversity_ratio",
                       "cooccurrence_min_rate", "branch_depth")  # fmt: skip


def only_what_decides(rules: ImageNetRules | INatRules, kind: str, claim: int) -> ImageNetRules | INatRules:
    """``rules`` with the thresholds that cannot change claim ``claim``'s statistic on a ``kind`` table set
    to their defaults, so that cells differing only in those share one relabelling."""
    if kind != "imagenet":
        return rules
    ignored = IMAGENET_TRAIT_ONLY if claim == 1 else IMAGENET_LABEL_ONLY
    return dataclasses.replace(rules, **{k: getattr(ImageNetRules, k) for k in ignored})


def relabel(
    table: pd.DataFrame | Frozen,
    kind: str,
    rules: ImageNetRules | INatRules,
    hierarchy: Hierarchy | None = None,
) -> pd.DataFrame:
    """``label``, ``trait`` and ``animal`` of every row of a saved concept table of ``kind``
    (``imagenet`` or ``inat``; as built by :func:`vitsae.analysis.concepts.imagenet_table` /
    ``inat_table``, e.g. read back from its CSV) under ``rules``, in the order of the table's rules (module
    docstring), with the table's index. ``animal`` is the saved column (bool, NaN as False). ``hierarchy``:
    the WordNet hierarchy for ImageNet's branches (default :func:`~vitsae.analysis.wordnet.load_hierarchy`).
    Raises KeyError for a missing column (an iNat table needs the ``animal`` column that
    :mod:`vitsae.analysis.concept_tables` adds)."""
    index = table.table.index if isinstance(table, Frozen) else table.index
    label_F, trait_F, animal_F = relabel_arrays(table, kind, rules, hierarchy)
    return pd.DataFrame({"label": label_F, "trait": trait_F, "animal": animal_F.copy()}, index=index)


def relabel_arrays(
    table: pd.DataFrame | Frozen,
    kind: str,
    rules: ImageNetRules | INatRules,
    hierarchy: Hierarchy | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`relabel` as arrays ``(label_F, trait_F, animal_F)`` (object, bool, bool), without building a
    DataFrame: what the specification curve reads, once per SAE and cell."""
    _check_kind(kind)
    ft = table if isinstance(table, Frozen) else Frozen(table)
    table = ft.table
    if not isinstance(rules, RULES[kind]):
        raise TypeError(
            f"{kind} tables are relabelled with {RULES[kind].__name__}, not {type(rules).__name__}"
        )
    needs = _IMAGENET_NEEDS if kind == "imagenet" else _INAT_NEEDS
    missing = [c for c in needs if c not in table.columns]
    if missing:
        hint = "; add animal with vitsae.analysis.nulls.inat_animal" if "animal" in missing else ""
        raise KeyError(f"{kind} concept table lacks the columns {missing} (has {list(table.columns)}){hint}")
    if kind == "imagenet":
        label_F, trait_F = _imagenet(ft, rules, hierarchy if hierarchy is not None else load_hierarchy())
    else:
        label_F, trait_F = _inat(ft, rules)
    return label_F, trait_F, ft.animal()


def _float(table: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(table[column]).to_numpy(np.float64)


class Frozen:
    """A concept table held for relabelling under many rules (the specification curve relabels each SAE's
    table once per distinct cell): its float columns and the per-threshold class statistics (major classes,
    co-occurrence, class-pair region ratios) are computed once and kept. The table must not change while
    it is held; :func:`relabel` given a plain DataFrame wraps it afresh on every call."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table
        self._memo: dict = {}

    def memo(self, key: tuple, compute):
        if key not in self._memo:
            value = compute()
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
            self._memo[key] = value
        return self._memo[key]

    def float(self, column: str) -> np.ndarray:
        return self.memo(("float", column), lambda: _float(self.table, column))

    def animal(self) -> np.ndarray:
        """The saved ``animal`` column as bool (NaN as False)."""
        return self.memo(("animal",), lambda: self.table["animal"].fillna(False).astype(bool).to_numpy())

    def column(self, column: str) -> np.ndarray:
        """A float column that tables of older versions lack (NaN there: no row passes its test)."""
        if column not in self.table.columns:
            return np.full(len(self.table), np.nan)
        return self.float(column)


def _imagenet(ft: Frozen, rules: ImageNetRules, hierarchy: Hierarchy) -> tuple[np.ndarray, np.ndarray]:
    table = ft.table
    few_F = ft.memo(("few",), lambda: table["classes"].isna().to_numpy())  # too few top images: NaN stats
    key = (id(hierarchy), rules.abstract_min_class_share, rules.branch_depth, rules.lca_coverage)
    major_share_F, major_branches_F, n_core_F = ft.memo(
        ("class_stats", *key), lambda: _class_stats(table["classes"], rules, hierarchy)
    ).T
    lca_depth_F = ft.float("lca_depth")
    structured_F = (ft.float("coherence_p") <= rules.alpha) | (ft.float("concentration_p") <= rules.alpha)
    single_F = ft.float("top_class_share") >= rules.single_class_share
    taxonomic_F = structured_F & (lca_depth_F >= rules.taxonomic_min_depth)
    abstract_F = (
        structured_F
        & (major_share_F >= rules.abstract_min_coverage)
        & (major_branches_F >= rules.abstract_min_branches)
        & (ft.float("diversity_ratio") >= rules.min_diversity_ratio)
    )
    region_F = ft.column("region_diversity_ratio")
    pair_key = (id(hierarchy), rules.abstract_min_class_share, rules.branch_depth)
    cooc_F = ft.memo(("cooccurrence", *pair_key), lambda: _cooccurrence(ft, rules, hierarchy))
    cooc_label_F = abstract_F & (cooc_F >= rules.cooccurrence_min_rate)
    pair_F = ft.memo(("region_pairs", *pair_key), lambda: _region_pairs(ft, rules, hierarchy))
    core_F = ft.column("core_region_ratio")
    motif_F = abstract_F & (
        (region_F < rules.min_region_diversity_ratio)
        | (pair_F < rules.min_region_diversity_ratio)
        | (core_F < rules.min_region_diversity_ratio)
    )
    label_F = _select(
        [few_F, single_F, taxonomic_F, cooc_label_F, motif_F, abstract_F],
        ["unclear", "single-class", "taxonomic", "co-occurrence", "visual-motif", "abstract"],
    )
    trait_F = (
        ~few_F
        & ft.animal()
        & (n_core_F >= rules.trait_min_classes)
        & (lca_depth_F >= rules.taxonomic_min_depth)
        & _one_part(ft, rules)
    )
    return label_F, trait_F


def _select(conditions: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """``np.select(conditions, labels, "unclear")`` as an object array: the first true condition's label.
    Selects integer codes and looks them up: 0.24 ms against 0.68 ms for selecting strings and converting
    them to objects, on 12,288 rows (the specification curve relabels each table thousands of times)."""
    names = np.array([*labels, "unclear"], dtype=object)
    return names[np.select(conditions, np.arange(len(labels)), len(labels))]


def _one_part(ft: Frozen, rules: ImageNetRules | INatRules) -> np.ndarray:
    """The trait tests both table kinds share: the firing region is small, compact and silent elsewhere
    (localization, spread, support), stands out from its image and does not recur in it (part contrast and
    uniqueness: NaN, without cell descriptors, does not apply), and does not peak on high-norm tokens."""
    return (
        (ft.float("localization") <= rules.trait_max_localization)
        & (ft.column("spread") <= rules.trait_max_spread)
        & (ft.column("support") <= rules.trait_max_support)
        & ~(ft.column("part_contrast") < rules.trait_min_contrast)
        & ~(ft.column("part_uniqueness") < rules.trait_min_uniqueness)
        & ~_high_norm(ft, rules)
    )


def _high_norm(ft: Frozen, rules: ImageNetRules | INatRules) -> np.ndarray:
    """:func:`vitsae.analysis.concepts.high_norm` of every row (a table without ``peak_norm_ratio``, from
    before it was kept, reads as NaN: flagged whenever the test is on)."""
    if not rules.high_norm_multiple:
        return np.zeros(len(ft.table), dtype=bool)
    ratio_F = ft.column("peak_norm_ratio")
    return ~(ratio_F <= rules.high_norm_multiple)


def _inat(ft: Frozen, rules: INatRules) -> tuple[np.ndarray, np.ndarray]:
    purity_FR = ft.memo(
        ("purity",), lambda: np.stack([ft.float(f"purity_{r}") for r in taxonomy.RANKS], axis=1)
    )
    few_F = np.isnan(purity_FR[:, 0])
    agree_FR = purity_FR >= rules.clade_purity  # ranks fine → coarse; deepest = the first that agrees
    deepest_F = np.where(agree_FR.any(axis=1), agree_FR.argmax(axis=1), len(taxonomy.RANKS))
    one_clade_F = deepest_F <= taxonomy.RANKS.index(rules.trait_max_rank)
    single_F = purity_FR[:, 0] >= rules.single_species_share
    trait_F = one_clade_F & (ft.float("n_species") >= rules.trait_min_species) & _one_part(ft, rules)
    cross_F = (
        (ft.float("concentration_p") <= rules.alpha)
        & (ft.float("major_share") >= rules.abstract_min_coverage)
        & (ft.float("major_clades") >= rules.abstract_min_clades)
    )
    label_F = _select(
        [few_F, single_F, trait_F, one_clade_F, cross_F],
        ["unclear", "single-species", "trait", "clade", "cross-clade"],
    )
    return label_F, label_F == "trait"


# --------------------------------------------------------------------------------------------
# Per classes string, cached


@functools.lru_cache(maxsize=1 << 16)
def _parse(classes: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``classes`` column's ``wnid:count;...`` as (wnids, counts) in wnid order: np.unique's order,
    in which :func:`vitsae.analysis.concepts._major` sums the shares."""
    pairs = [item.rsplit(":", 1) for item in classes.split(";")]
    wnids = np.array([w for w, _ in pairs])
    counts = np.array([int(c) for _, c in pairs], dtype=np.int64)
    order = np.argsort(wnids, kind="stable")
    return wnids[order], counts[order]


@functools.lru_cache(maxsize=1 << 20)
def _major_of(classes: str, min_share: float) -> tuple[tuple[str, ...], float]:
    major, share = _major(*_parse(classes), min_share)
    return tuple(str(c) for c in major), share


@functools.lru_cache(maxsize=1 << 20)
def _n_core(classes: str, coverage: float) -> int:
    return len(_core_classes(*_parse(classes), coverage))


#: id(hierarchy) → the hierarchy, kept alive here so that its id, a cache key, is never reused
_HIERARCHIES: dict[int, Hierarchy] = {}
#: (digest of a classes column, id(hierarchy), abstract_min_class_share, branch_depth, lca_coverage) → F×3
_COLUMNS: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
_MAX_COLUMNS = 64


def _class_stats(classes_F: pd.Series, rules: ImageNetRules, hierarchy: Hierarchy) -> np.ndarray:
    """Per row, (major_share, major_branches, n_core) from the ``classes`` string (NaN rows: NaN), read-only.

    Cached twice: per string and thresholds (:func:`_one_class_stats`), and per whole column (keyed by a
    digest of its contents, so a table relabelled in cell after cell pays one hash per cell)."""
    row_hash_F = pd.util.hash_pandas_object(classes_F, index=False).to_numpy()
    digest = hashlib.blake2b(row_hash_F.tobytes(), digest_size=16).digest()
    key = (digest, len(classes_F), id(hierarchy), rules.abstract_min_class_share, rules.branch_depth,
           rules.lca_coverage)  # fmt: skip
    if key in _COLUMNS:
        _COLUMNS.move_to_end(key)
        return _COLUMNS[key]
    _HIERARCHIES.setdefault(id(hierarchy), hierarchy)
    code_F, classes_U = pd.factorize(classes_F)  # NaN → -1, which reads the NaN row appended last
    stats_U3 = np.array([*(_one_class_stats(id(hierarchy), str(c), rules.abstract_min_class_share,
                                            rules.branch_depth, rules.lca_coverage) for c in classes_U.tolist()),
                         (np.nan, np.nan, np.nan)], dtype=np.float64)  # fmt: skip
    stats_F3 = stats_U3[code_F]
    stats_F3.flags.writeable = False
    _COLUMNS[key] = stats_F3
    if len(_COLUMNS) > _MAX_COLUMNS:
        _COLUMNS.popitem(last=False)
    return stats_F3


def _cooccurrence(ft: Frozen, rules: ImageNetRules, hierarchy: Hierarchy) -> np.ndarray:
    """``major_cooccurrence`` of every row recomputed for the rules' major classes and branches from the
    saved ``classes`` and ``cooccurring_pairs`` (NaN where the table has no multi-labels: the saved
    ``major_cooccurrence`` is NaN, or the columns are missing, as in a table of an older version)."""
    table = ft.table
    if "cooccurring_pairs" not in table.columns or "major_cooccurrence" not in table.columns:
        return np.full(len(table), np.nan)
    saved_F = ft.float("major_cooccurrence")
    _HIERARCHIES.setdefault(id(hierarchy), hierarchy)
    out = np.full(len(table), np.nan)
    for i, (classes, pairs, saved) in enumerate(zip(table["classes"].tolist(), table["cooccurring_pairs"].tolist(),
                                                    saved_F)):  # fmt: skip
        if isinstance(classes, str) and np.isfinite(saved):
            out[i] = _one_cooccurrence(id(hierarchy), classes, pairs if isinstance(pairs, str) else "",
                                       rules.abstract_min_class_share, rules.branch_depth)  # fmt: skip
    return out


@functools.lru_cache(maxsize=1 << 20)
def _one_cooccurrence(hierarchy_id: int, classes: str, pairs: str, min_share: float, depth: int) -> float:
    if not pairs:
        return 0.0
    major, _ = _major_of(classes, min_share)
    h = _HIERARCHIES[hierarchy_id]
    return cooccurrence.major_cooccurrence(major, cooccurrence.parse_pairs(pairs),
                                           lambda w: frozenset(h.branches(w, depth)))  # fmt: skip


def _region_pairs(ft: Frozen, rules: ImageNetRules, hierarchy: Hierarchy) -> np.ndarray:
    """``major_region_ratio`` of every row recomputed for the rules' major classes and branches from the
    saved ``classes`` and ``region_pairs`` (NaN where the table has no region diversity, or lacks the
    columns, as a table of an older version does)."""
    table = ft.table
    if "region_pairs" not in table.columns or "region_diversity_ratio" not in table.columns:
        return np.full(len(table), np.nan)
    measured_F = np.isfinite(ft.float("region_diversity_ratio"))
    _HIERARCHIES.setdefault(id(hierarchy), hierarchy)
    out = np.full(len(table), np.nan)
    for i, (classes, pairs, measured) in enumerate(zip(table["classes"].tolist(), table["region_pairs"].tolist(),
                                                       measured_F)):  # fmt: skip
        if isinstance(classes, str) and measured and isinstance(pairs, str) and pairs:
            out[i] = _one_region_pair(id(hierarchy), classes, pairs, rules.abstract_min_class_share,
                                      rules.branch_depth)  # fmt: skip
    return out


@functools.lru_cache(maxsize=1 << 20)
def _one_region_pair(hierarchy_id: int, classes: str, pairs: str, min_share: float, depth: int) -> float:
    major, _ = _major_of(classes, min_share)
    h = _HIERARCHIES[hierarchy_id]
    return regions.major_pair_min(major, cooccurrence.parse_pairs(pairs),
                                  lambda w: frozenset(h.branches(w, depth)))  # fmt: skip


@functools.lru_cache(maxsize=1 << 20)
def _one_class_stats(hierarchy_id: int, classes: str, min_share: float, depth: int,
                     coverage: float) -> tuple[float, int, int]:  # fmt: skip
    """(major_share, major_branches, n_core) of one ``classes`` string."""
    major, share = _major_of(classes, min_share)
    return share, _n_branches(hierarchy_id, major, depth), _n_core(classes, coverage)


@functools.lru_cache(maxsize=1 << 20)
def _n_branches(hierarchy_id: int, major: tuple[str, ...], depth: int) -> int:
    return _HIERARCHIES[hierarchy_id].n_branches(major, depth) if major else 0
