"""Concept tables: what each SAE feature's top images have in common, in WordNet and in the iNat taxonomy.

Both tables take a feature's top images from :mod:`vitsae.analysis.stats` (``top_image_FK``: split positions
ranked by max activation, -1 = none) and use only the *firing* ones among the first ``n_top``; a
feature with fewer than ``min_top_images`` of them is labelled ``unclear`` and its other columns are NaN.

ImageNet table (:func:`imagenet_table`, one row per feature)
-----------------------------------------------------------
* ``n_top``, ``n_classes``, ``top_class``, ``top_class_share``, ``classes`` (``wnid:count`` by count,
  ``;``-separated);
* ``lca``, ``lca_name``, ``lca_depth``: the lowest common ancestor (:mod:`vitsae.analysis.wordnet`) of the *core*
  classes: the most frequent classes (ties by wnid) that together hold at least ``lca_coverage`` of the
  top images, so that one stray image does not pull the LCA to the root; ``n_branches``: how many
  top-level WordNet branches (``branch_depth``) the core classes span;
* ``coherence``: mean Wu-Palmer similarity over all pairs of top images (pairs of one class count 1),
  against a null model of ``null_samples`` random sets of the same number of images drawn without
  replacement from the split (seeded by ``(seed, set size)``): ``coherence_null_mean``, ``coherence_z``
  (z-score against the null's mean and standard deviation), ``coherence_p`` (one-sided,
  ``(1 + #{null >= observed}) / (1 + null_samples)``);
* ``concentration``: the share of pairs of top images of one class (a handful of classes, wherever they
  sit in WordNet, gives a high value; random images a value near 0), against the same random sets:
  ``concentration_null_mean``, ``concentration_p`` (one-sided, as above; conservative, the statistic
  is discrete);
* ``diversity``: mean Euclidean distance over all pairs of top images between per-image descriptors that
  come from neither model (default :func:`vitsae.analysis.thumbnails.thumbnail_descriptors`: a 4×4 RGB thumbnail), against the same
  random sets: ``diversity_null_mean``, ``diversity_ratio`` (observed / null mean), ``diversity_z``;
* ``branch_pair``: the coarse kinds of the major classes (``animal``: below animal.n.01, ``artifact``:
  below artifact.n.01, ``other``), ``-``-joined and sorted, doubled for one kind (``artifact-artifact``),
  so abstract shares can be reported per pair type; ``cooccurring_pairs``, ``major_cooccurrence``:
  :mod:`vitsae.analysis.cooccurrence`;
* ``region_diversity``, ``region_diversity_null_mean``, ``region_diversity_ratio``: the same on the
  regions where the feature fires (:mod:`vitsae.analysis.regions`: model-free cell descriptors of the
  cells above half each top image's max activation, against the same masks on random images);
  ``region_pairs``: the same ratio between the regions of two classes' images, for every pair of classes
  with at least two top images each (``a|b:ratio;...``), and ``major_region_ratio``: the smallest of these
  over the pairs of major classes from different branches (NaN for none); ``core_region_ratio``: the
  tightest half of the regions (the motif core, :func:`vitsae.analysis.regions.core_distance`) against
  the same choice on the random images;
* ``localization``: mean over top images of the share of the image above half its max activation, on
  one pixel grid for every model (:func:`vitsae.analysis.maps.localization`: each patch map resampled
  bilinearly to ``localization_pixels`` x ``localization_pixels``; with ``localization_pixels`` 0, or
  without a patch grid, the share of tokens); ``localization_tokens``: the share of tokens, for
  comparison (it depends on the model's patch grid); ``spread``: mean over the top images of how scattered
  the region above half the max is (:func:`vitsae.analysis.maps.footprint`: RMS distance of its cells from
  their centroid relative to the whole image's; about 1 for a patchy texture all over the image, 0.31 for
  one disc on a tenth of it; NaN without a patch grid); ``support``: mean over the top images of the share
  of the image's tokens where the feature is active at all (above 0): a part's feature is silent off the
  part, a texture's active wherever the texture is; ``part_contrast``: mean over the top images of how
  unlike the rest of its image the firing region looks (:func:`vitsae.analysis.regions.part_contrast`:
  model-free cell descriptors, the region's against the other cells', over the mean distance between two
  cells of the image; a part on a background above 1, a spot of a texture below; NaN without cell
  descriptors or a patch grid); ``part_uniqueness``: mean over the top images of how far the firing
  region's look is from its nearest look-alikes elsewhere in the image
  (:func:`vitsae.analysis.regions.part_uniqueness`: the region's descriptor against its 3 nearest cells
  outside the region and its neighbours, over the mean distance between two cells of the image; a part
  above 1, a spot of a texture that recurs where the feature is silent below; NaN as for
  ``part_contrast``); ``peak_norm_ratio``: median over the top images of
  the activation norm of the feature's peak token over its image's median token norm (from the
  statistics; NaN without them): a ViT's high-norm artifact tokens (Darcet et al. 2024) fire on one
  patch while carrying global information, which would read as a localized trait; ``animal``: every
  core class is below animal.n.01.

Label rule (first that applies; every threshold a field of :class:`ImageNetRules`):

1. ``unclear``      fewer than ``min_top_images`` firing top images;
2. ``single-class`` ``top_class_share >= single_class_share``;
3. ``taxonomic``    structured and ``lca_depth >= taxonomic_min_depth``, where *structured* means
   ``coherence_p <= alpha`` or ``concentration_p <= alpha`` (the top images are not a random sample:
   semantically close in WordNet, or drawn from few classes);
4. ``abstract``     structured, ``lca_depth < taxonomic_min_depth`` (no specific taxonomic group), the
   top images come mostly from a few *major* classes (each holds at least ``abstract_min_class_share``
   of the top images; together at least ``abstract_min_coverage``: ``n_major``, ``major_share``) that
   span at least ``abstract_min_branches`` top-level branches (``major_branches``), and the images are
   visually diverse (``diversity_ratio >= min_diversity_ratio``): one relation shared by classes of
   different branches while the images do not look alike;
5. ``co-occurrence`` every condition of rule 4 holds but two major classes of different branches appear
   in the same photos (``major_cooccurrence >= cooccurrence_min_rate``, :mod:`vitsae.analysis.
   cooccurrence`: the dataset's multi-labels, ImageNet's ReaL labels): one scene, not an abstract
   relation. Without multi-labels the column is NaN and this rule does not apply;
6. ``visual-motif`` every condition of rule 4 holds but the regions where the feature fires look alike,
   over all its top images, between the images of two major classes of different branches, or in the
   tightest half of its top images (``region_diversity_ratio``, ``major_region_ratio`` or
   ``core_region_ratio`` below ``min_region_diversity_ratio``,
   :mod:`vitsae.analysis.regions`): a shared local pattern (a shape, a colour pair, a texture) across
   branches, not a semantic relation. The pair test catches mixtures: a feature firing on one motif in
   the images of two branches and on unrelated things in the rest has diverse regions over all its
   images, but one of its cross-branch links is a look, not a relation. Without
   cell descriptors or a patch grid (CLS-token SAEs: the region is the whole image, which rule 4's
   whole-image diversity already tests) the ratio is NaN and this rule does not apply;
7. ``unclear``      otherwise.

The major-class condition turns away the commonest false "abstract" feature of a weak SAE: one class's
images plus a scatter of strays from everywhere (on the demo's random-weight DINOv2 it removed about half
of the abstract labels and nearly all of the null model's). Caveat: a polysemantic feature that fires on
two unrelated classes still passes rule 4; the statistics cannot tell it from an abstract concept, so
the findings show examples (feature cards) beside the counts.

``trait`` (ImageNet's animal classes via WordNet): ``animal``, at least ``trait_min_classes`` classes,
``lca_depth >= taxonomic_min_depth``, ``localization <= trait_max_localization``, ``spread <=
trait_max_spread`` (one compact region, not scattered patches: NaN fails), ``support <= trait_max_support``
(silent on most of the image), ``part_contrast >= trait_min_contrast`` (the region stands out from its
image: NaN, without cell descriptors, does not apply), ``part_uniqueness >= trait_min_uniqueness`` (the
region's look does not recur elsewhere in its image: a part, not a spot of a texture; NaN does not apply)
and, with
``high_norm_multiple`` > 0, ``peak_norm_ratio <= high_norm_multiple`` (a feature that peaks on high-norm
tokens is no trait; 0, the default, flags none: the specification curve varies it).

iNat table (:func:`inat_table`, one row per feature)
-----------------------------------------------------
``purity_<rank>`` for species … kingdom (:mod:`vitsae.analysis.taxonomy`), ``deepest_rank`` (finest rank with
purity ``>= clade_purity``), ``n_species``, ``localization``, ``localization_tokens``, ``spread``, ``support``, ``part_contrast`` and ``part_uniqueness`` (as above), ``concentration`` (share of pairs
of top images of one species) against random image sets as for ImageNet (``concentration_null_mean``,
``concentration_p``), ``n_major`` and ``major_share`` (species holding at least
``abstract_min_class_share`` of the top images, and their total share), ``major_clades`` (how many
clades of ``abstract_rank`` those species come from), and a label:

1. ``unclear``         fewer than ``min_top_images`` firing top images;
2. ``single-species``  ``purity_species >= single_species_share`` (one species dominates: the same rule
   and default as ImageNet's ``single-class``, checked before the clade labels);
3. ``trait``           ``deepest_rank`` at most as coarse as ``trait_max_rank``, ``n_species >=
   trait_min_species``, ``localization <= trait_max_localization``, ``spread <= trait_max_spread``,
   ``support <= trait_max_support``, the ``trait_min_contrast`` and ``trait_min_uniqueness`` tests and the
   ``high_norm_multiple`` test
   (as for ImageNet): several species, one clade, one small compact part that stands out from its image;
4. ``clade``           one clade (as for trait) but not localized on one part (a region too large or
   scattered, a feature active on most of the image, or a region that looks like the rest of its image
   or like other places of it: a background texture of the clade, not a part);
5. ``cross-clade``     concentrated on a few species (``concentration_p <= alpha``) whose major species
   (covering at least ``abstract_min_coverage``) come from at least ``abstract_min_clades`` clades of
   ``abstract_rank``: something shared by unrelated species (a convergent pattern), the iNat analogue of
   ImageNet's ``abstract``;
6. ``unclear``         otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vitsae.analysis import cooccurrence, regions, taxonomy
from vitsae.analysis.maps import footprint, localization
from vitsae.analysis.settings import ImageNetRules, INatRules
from vitsae.analysis.wordnet import ARTIFACT_WNID, Hierarchy, imagenet_wnids

IMAGENET_LABELS = ("single-class", "taxonomic", "abstract", "co-occurrence", "visual-motif", "unclear")
INAT_LABELS = ("single-species", "trait", "clade", "cross-clade", "unclear")
IMAGENET_COLUMNS = (
    "feature", "n_top", "n_classes", "top_class", "top_class_share", "classes", "lca", "lca_name", "lca_depth",
    "n_branches", "n_major", "major_share", "major_branches", "branch_pair", "cooccurring_pairs", "major_cooccurrence", "coherence", "coherence_null_mean", "coherence_z", "coherence_p", "concentration",
    "concentration_null_mean", "concentration_p", "diversity", "diversity_null_mean", "diversity_ratio",
    "diversity_z", "region_diversity", "region_diversity_null_mean", "region_diversity_ratio", "region_pairs", "core_region_ratio", "major_region_ratio", "localization", "localization_tokens", "spread", "support", "part_contrast", "part_uniqueness", "peak_norm_ratio", "animal", "label", "trait",
)  # fmt: skip
INAT_COLUMNS = (
    "feature", "n_top", *(f"purity_{r}" for r in taxonomy.RANKS), "deepest_rank", "n_species", "localization",
    "localization_tokens", "spread", "support", "part_contrast", "part_uniqueness", "peak_norm_ratio",    "concentration", "concentration_null_mean", "concentration_p", "n_major", "major_share", "major_clades",
    "label", "trait",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Pieces


def _mean_pairwise_sim(class_MN: np.ndarray, sim_CC: np.ndarray) -> np.ndarray:
    n = class_MN.shape[1]
    sims_MNN = sim_CC[class_MN[:, :, None], class_MN[:, None, :]]
    return (sims_MNN.sum(axis=(1, 2)) - n) / (n * (n - 1))


def _same_class_share(class_MN: np.ndarray) -> np.ndarray:
    n = class_MN.shape[1]
    return ((class_MN[:, :, None] == class_MN[:, None, :]).sum(axis=(1, 2)) - n) / (n * (n - 1))


def _p_value(value: float, null: np.ndarray) -> float:
    """One-sided: (1 + #{null >= value}) / (1 + len(null)), with a 1e-12 tolerance for float noise."""
    return float((1 + (null >= value - 1e-12).sum()) / (1 + len(null)))


def _mean_pairwise_dist(desc_MND: np.ndarray) -> np.ndarray:
    n = desc_MND.shape[1]
    sq_MN = (desc_MND.astype(np.float64) ** 2).sum(axis=2)
    d2_MNN = sq_MN[:, :, None] + sq_MN[:, None, :] - 2 * np.einsum("mid,mjd->mij", desc_MND, desc_MND)
    return np.sqrt(np.maximum(d2_MNN, 0)).sum(axis=(1, 2)) / (n * (n - 1))


class NullModel:
    """Random sets of images from the split, one seeded batch per set size (see the module docstring)."""

    def __init__(self, class_N: np.ndarray, sim_CC: np.ndarray | None, desc_ND: np.ndarray | None, samples: int,
                 seed: int) -> None:  # fmt: skip
        self.class_N, self.sim_CC, self.desc_ND = class_N, sim_CC, desc_ND
        self.samples, self.seed = samples, seed

    @functools.cache  # noqa: B019 - one null per set size, for the life of the model
    def sets(self, n: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, n])
        return np.stack([rng.choice(len(self.class_N), size=n, replace=False) for _ in range(self.samples)])

    @functools.cache  # noqa: B019
    def coherence(self, n: int) -> np.ndarray:
        return _mean_pairwise_sim(self.class_N[self.sets(n)], self.sim_CC)

    @functools.cache  # noqa: B019
    def concentration(self, n: int) -> np.ndarray:
        return _same_class_share(self.class_N[self.sets(n)])

    @functools.cache  # noqa: B019
    def diversity(self, n: int) -> np.ndarray:
        assert self.desc_ND is not None
        return _mean_pairwise_dist(self.desc_ND[self.sets(n)])


def _major(classes: np.ndarray, counts: np.ndarray, min_share: float) -> tuple[np.ndarray, float]:
    """The classes holding at least ``min_share`` of the images, and their total share."""
    share = counts / counts.sum()
    keep = share >= min_share - 1e-12
    return classes[keep], float(share[keep].sum())


def _core_classes(classes: np.ndarray, counts: np.ndarray, coverage: float) -> list[str]:
    """Most frequent classes (ties by name) until they hold ``coverage`` of the images."""
    order = np.lexsort((classes, -counts))
    cum = np.cumsum(counts[order]) / counts.sum()
    stop = int(np.searchsorted(cum, coverage - 1e-12)) + 1
    return [str(c) for c in classes[order[:stop]]]


def _top_images(top_image_FK: np.ndarray, n_top: int | None) -> np.ndarray:
    return top_image_FK if n_top is None else top_image_FK[:, :n_top]


# --------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class ImageNetContext:
    """What every ImageNet table of one split shares: class codes, the WordNet similarity of its classes
    and the null model (whose random sets are cached per set size). Build it once per split
    (:func:`imagenet_context`) and pass it to every :func:`imagenet_table` call: same results, no rebuild."""

    labels_N: np.ndarray
    class_N: np.ndarray
    sim_CC: np.ndarray
    descriptors_ND: np.ndarray
    null: NullModel
    animals: frozenset
    rules: ImageNetRules
    cells_NCD: np.ndarray | None = None  # per split image, the cell descriptors (vitsae.analysis.regions)
    rate_CC: np.ndarray | None = None  # pair co-occurrence rates of the split's classes (code order)
    artifacts: frozenset = frozenset()


def imagenet_context(labels_N: np.ndarray, hierarchy: Hierarchy, descriptors_ND: np.ndarray,
                     rules: ImageNetRules = ImageNetRules(), cells_NCD: np.ndarray | None = None,
                     multilabels: str | os.PathLike | None = None) -> ImageNetContext:  # fmt: skip
    """``multilabels``: a multi-label file (:func:`vitsae.analysis.cooccurrence.load_multilabels`) for the
    co-occurrence rates, or None (no co-occurrence control)."""
    labels_N = np.asarray(labels_N).astype(str)
    if descriptors_ND.shape[0] != labels_N.shape[0]:
        raise ValueError(f"{descriptors_ND.shape[0]} descriptors for {labels_N.shape[0]} images of the split")
    if cells_NCD is not None and cells_NCD.shape[0] != labels_N.shape[0]:
        raise ValueError(
            f"cell descriptors of {cells_NCD.shape[0]} images for {labels_N.shape[0]} images of the split"
        )
    split_classes, class_N = np.unique(labels_N, return_inverse=True)
    sim_CC = hierarchy.similarity_matrix(list(split_classes))
    null = NullModel(class_N, sim_CC, descriptors_ND, rules.null_samples, rules.seed)
    rate_CC = None
    if multilabels is not None:
        rate_CC = cooccurrence.split_rates(list(split_classes), multilabels, imagenet_wnids())
    return ImageNetContext(labels_N, class_N, sim_CC, descriptors_ND, null, frozenset(hierarchy.animal_classes()),
                           rules, cells_NCD, rate_CC, frozenset(hierarchy.descendants(ARTIFACT_WNID)))  # fmt: skip


def imagenet_table(
    top_image_FK: np.ndarray,
    top_map_FKT: np.ndarray,
    labels_N: np.ndarray,
    hierarchy: Hierarchy,
    descriptors_ND: np.ndarray,
    rules: ImageNetRules = ImageNetRules(),
    context: ImageNetContext | None = None,
    grid: Sequence[int] | None = None,
    top_patch_index_FKT: np.ndarray | None = None,
    top_peak_norm_ratio_FK: np.ndarray | None = None,
    cells_NCD: np.ndarray | None = None,
    view: float = 1.0,
    region_diversity: bool = True,
) -> pd.DataFrame:
    """One row per feature (module docstring). ``labels_N``: wnid per split image; ``descriptors_ND``:
    per split image, the visual descriptor used for diversity (e.g. :func:`vitsae.analysis.thumbnails.thumbnail_descriptors`).
    ``context``: :func:`imagenet_context` of the same split and rules, built here when not given.
    ``grid`` (the statistics' ``meta.json`` ``grid``) and ``top_patch_index_FKT`` (stores that keep a
    patch subset) place the maps on the patch grid for ``localization``; without a grid it is the token
    share. ``top_peak_norm_ratio_FK``: the statistics' peak-token norm ratios (``peak_norm_ratio``).
    ``cells_NCD`` (``[images, cells * cells, descriptors]``, :func:`vitsae.analysis.regions.cell_descriptors`;
    the context's when it has them) and ``view`` (the statistics' meta ``view``): the region diversity
    and the part contrast; ``region_diversity`` False skips the former (NaN: the animal null, which only
    the trait columns use)."""
    if context is None:
        context = imagenet_context(labels_N, hierarchy, descriptors_ND, rules, cells_NCD)
    elif context.rules != rules or len(context.labels_N) != len(labels_N):
        raise ValueError("the context was built for other rules or another split")
    labels_N, class_N, sim_CC = context.labels_N, context.class_N, context.sim_CC
    descriptors_ND, null, animals = context.descriptors_ND, context.null, context.animals
    top_FK = _top_images(top_image_FK, rules.n_top)
    branches = functools.lru_cache(maxsize=None)(
        lambda w: frozenset(hierarchy.branches(w, rules.branch_depth))
    )
    cells_NCD = context.cells_NCD if context.cells_NCD is not None else cells_NCD
    pidx = None if top_patch_index_FKT is None else top_patch_index_FKT[:, : top_FK.shape[1]]
    region_F, region_null_F, region_pairs_F, core_F = regions.region_diversity(
        top_FK,
        top_map_FKT[:, : top_FK.shape[1]],
        grid,
        cells_NCD if region_diversity else None,
        null.sets,
        view,
        pidx,
        rules.min_top_images,
        class_N=class_N,
    )
    contrast_F, unique_F = regions.part_measures(top_FK, top_map_FKT[:, : top_FK.shape[1]], grid, cells_NCD, view,
                                                 pidx)  # fmt: skip
    split_classes = np.unique(context.labels_N)  # the order of the class codes (imagenet_context)
    rows = []
    for f in range(top_FK.shape[0]):
        slots = np.nonzero(top_FK[f] >= 0)[0]
        images = top_FK[f, slots]
        n = len(images)
        row: dict = {"feature": f, "n_top": n}
        if n < max(2, rules.min_top_images):
            rows.append({**row, "label": "unclear", "trait": False})
            continue
        classes, counts = np.unique(labels_N[images], return_counts=True)
        order = np.lexsort((classes, -counts))
        core = _core_classes(classes, counts, rules.lca_coverage)
        lca, lca_depth = hierarchy.lca(core)
        coherence = float(_mean_pairwise_sim(class_N[images][None], sim_CC)[0])
        null_coh = null.coherence(n)
        concentration = float(_same_class_share(class_N[images][None])[0])
        null_conc = null.concentration(n)
        diversity = float(_mean_pairwise_dist(descriptors_ND[images][None])[0])
        null_div = null.diversity(n)
        loc, loc_tokens, spread, support = _localizations(
            top_map_FKT, f, slots, grid, top_patch_index_FKT, rules
        )
        major, major_share = _major(classes, counts, rules.abstract_min_class_share)
        major_list = [str(c) for c in major]
        pairs, major_cooc = "", float("nan")
        if context.rate_CC is not None:
            pairs = cooccurrence.pairs_text(list(classes), context.rate_CC, np.unique(class_N[images]))
            major_cooc = cooccurrence.major_cooccurrence(
                major_list, cooccurrence.parse_pairs(pairs), branches
            )
        region_pairs = regions.pairs_text(region_pairs_F[f], split_classes)
        row.update(
            n_classes=len(classes),
            top_class=str(classes[order[0]]),
            top_class_share=float(counts[order[0]] / n),
            classes=";".join(f"{classes[i]}:{counts[i]}" for i in order),
            lca=lca,
            lca_name=hierarchy.name(lca),
            lca_depth=lca_depth,
            n_branches=hierarchy.n_branches(core, rules.branch_depth),
            n_major=len(major),
            major_share=major_share,
            major_branches=hierarchy.n_branches([str(c) for c in major], rules.branch_depth)
            if len(major)
            else 0,
            branch_pair=branch_pair(major_list, animals, context.artifacts),
            cooccurring_pairs=pairs,
            major_cooccurrence=major_cooc,
            coherence=coherence,
            coherence_null_mean=float(null_coh.mean()),
            coherence_z=_z(coherence, null_coh),
            coherence_p=_p_value(coherence, null_coh),
            concentration=concentration,
            concentration_null_mean=float(null_conc.mean()),
            concentration_p=_p_value(concentration, null_conc),
            diversity=diversity,
            diversity_null_mean=float(null_div.mean()),
            diversity_ratio=diversity / float(null_div.mean()) if null_div.mean() > 0 else float("nan"),
            diversity_z=_z(diversity, null_div),
            region_diversity=region_F[f],
            region_diversity_null_mean=region_null_F[f],
            region_diversity_ratio=region_F[f] / region_null_F[f] if region_null_F[f] > 0 else float("nan"),
            region_pairs=region_pairs,
            core_region_ratio=core_F[f],
            major_region_ratio=regions.major_pair_min(
                major_list, cooccurrence.parse_pairs(region_pairs), branches
            )
            if np.isfinite(region_F[f])
            else float("nan"),
            localization=loc,
            localization_tokens=loc_tokens,
            spread=spread,
            support=support,
            part_contrast=contrast_F[f],
            part_uniqueness=unique_F[f],
            peak_norm_ratio=_peak_norm(top_peak_norm_ratio_FK, f, slots),
            animal=all(c in animals for c in core),
        )
        row["label"] = _imagenet_label(row, rules)
        row["trait"] = bool(
            row["animal"]
            and len(core) >= rules.trait_min_classes
            and lca_depth >= rules.taxonomic_min_depth
            and loc <= rules.trait_max_localization
            and spread <= rules.trait_max_spread
            and support <= rules.trait_max_support
            and not contrast_F[f] < rules.trait_min_contrast
            and not unique_F[f] < rules.trait_min_uniqueness
            and not high_norm(row["peak_norm_ratio"], rules)
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(IMAGENET_COLUMNS))


def branch_pair(major: Sequence[str], animals: frozenset, artifacts: frozenset) -> str:
    """The ``branch_pair`` of major classes (module docstring); "" for none."""
    kinds = sorted({"animal" if w in animals else "artifact" if w in artifacts else "other" for w in major})
    if not major:
        return ""
    return f"{kinds[0]}-{kinds[0]}" if len(kinds) == 1 else "-".join(kinds)


def _localizations(
    map_FKT: np.ndarray, f: int, slots: np.ndarray, grid: Sequence[int] | None,
    patch_index_FKT: np.ndarray | None, rules: ImageNetRules | INatRules,
) -> tuple[float, ...]:  # fmt: skip
    """``(localization, localization_tokens, spread, support)`` of feature ``f``'s top images ``slots``."""
    maps_KT = np.ascontiguousarray(map_FKT[f, slots])
    pidx_KT = None if patch_index_FKT is None else np.ascontiguousarray(patch_index_FKT[f, slots])
    digest = hashlib.blake2b(maps_KT.tobytes(), digest_size=16)
    if pidx_KT is not None:
        digest.update(pidx_KT.tobytes())
    key = (maps_KT.dtype.str, maps_KT.shape, digest.digest(), pidx_KT is None,
           None if grid is None else tuple(int(g) for g in grid), rules.localization_pixels)  # fmt: skip
    return _footprint_cached(key, maps_KT, pidx_KT)


def _footprint_cached(key: tuple, maps_KT: np.ndarray, pidx_KT: np.ndarray | None) -> tuple[float, ...]:
    """The footprint of one feature's maps, once: a concept table's null tables label the same features
    with their own maps (only the images change), so each map set is measured once per process."""
    hit = _FOOTPRINTS.get(key)
    if hit is None:
        grid, size = key[4], key[5]
        share, spread, support = footprint(maps_KT, grid, pidx_KT, size)
        hit = (share, localization(maps_KT), spread, support)
        if len(_FOOTPRINTS) >= _FOOTPRINTS_MAX:
            _FOOTPRINTS.clear()
        _FOOTPRINTS[key] = hit
    return hit


_FOOTPRINTS: dict[tuple, tuple[float, ...]] = {}
_FOOTPRINTS_MAX = 100_000


def _peak_norm(ratio_FK: np.ndarray | None, f: int, slots: np.ndarray) -> float:
    """Median peak-token norm ratio over feature ``f``'s top images ``slots`` (NaN without ratios)."""
    if ratio_FK is None or len(slots) == 0:
        return float("nan")
    return float(np.nanmedian(ratio_FK[f, slots])) if np.isfinite(ratio_FK[f, slots]).any() else float("nan")


def high_norm(peak_norm_ratio: float, rules: ImageNetRules | INatRules) -> bool:
    """Whether a feature counts as peaking on high-norm tokens: ``high_norm_multiple`` > 0 and its
    ``peak_norm_ratio`` above it, or unknown (NaN: a flag that cannot be checked is not passed)."""
    if not rules.high_norm_multiple:
        return False
    return not peak_norm_ratio <= rules.high_norm_multiple


def _z(value: float, null: np.ndarray) -> float:
    sd = float(null.std(ddof=1)) if len(null) > 1 else 0.0
    return (value - float(null.mean())) / sd if sd > 0 else float("nan")


def _imagenet_label(row: dict, rules: ImageNetRules) -> str:
    if row["top_class_share"] >= rules.single_class_share:
        return "single-class"
    structured = row["coherence_p"] <= rules.alpha or row["concentration_p"] <= rules.alpha
    if structured and row["lca_depth"] >= rules.taxonomic_min_depth:
        return "taxonomic"
    if (
        structured
        and row["major_share"] >= rules.abstract_min_coverage
        and row["major_branches"] >= rules.abstract_min_branches
        and row["diversity_ratio"] >= rules.min_diversity_ratio
    ):
        if row["major_cooccurrence"] >= rules.cooccurrence_min_rate:
            return "co-occurrence"
        motif = any(row[c] < rules.min_region_diversity_ratio
                    for c in ("region_diversity_ratio", "major_region_ratio", "core_region_ratio"))  # fmt: skip
        return "visual-motif" if motif else "abstract"
    return "unclear"


@dataclass(frozen=True)
class INatContext:
    """What every iNat table of one split shares: each image's clade code at every rank, and the null
    model of species concentration (:func:`inat_context`; pass it to every :func:`inat_table` call)."""

    code_RN: np.ndarray
    null: NullModel
    rules: INatRules


def inat_context(taxa_N: pd.DataFrame, rules: INatRules = INatRules()) -> INatContext:
    taxa_N = taxa_N.reset_index(drop=True)
    # clade of every split image at every rank as an integer code, once: per feature the purities are
    # then bincounts (the same values as taxonomy.purities on the feature's rows, thousands of times faster)
    code_RN = np.stack([np.unique(taxonomy.clade_keys(taxa_N, r), return_inverse=True)[1].reshape(-1)
                        for r in taxonomy.RANKS]) if len(taxa_N) else np.zeros((len(taxonomy.RANKS), 0), np.int64)  # fmt: skip
    return INatContext(code_RN, NullModel(code_RN[0], None, None, rules.null_samples, rules.seed), rules)


def inat_table(
    top_image_FK: np.ndarray,
    top_map_FKT: np.ndarray,
    taxa_N: pd.DataFrame,
    rules: INatRules = INatRules(),
    context: INatContext | None = None,
    grid: Sequence[int] | None = None,
    top_patch_index_FKT: np.ndarray | None = None,
    top_peak_norm_ratio_FK: np.ndarray | None = None,
    cells_NCD: np.ndarray | None = None,
    view: float = 1.0,
) -> pd.DataFrame:
    """One row per feature (module docstring). ``taxa_N``: per split image, the manifest's rank columns.
    ``context``: :func:`inat_context` of the same split and rules, built here when not given. ``grid``
    and ``top_patch_index_FKT``, ``cells_NCD`` and ``view`` (the part contrast): as for
    :func:`imagenet_table`."""
    if context is None:
        context = inat_context(taxa_N, rules)
    elif context.rules != rules or context.code_RN.shape[1] != len(taxa_N):
        raise ValueError("the context was built for other rules or another split")
    code_RN, null = context.code_RN, context.null
    top_FK = _top_images(top_image_FK, rules.n_top)
    max_rank = taxonomy.RANKS.index(rules.trait_max_rank)
    abstract_rank = taxonomy.RANKS.index(rules.abstract_rank)
    pidx = None if top_patch_index_FKT is None else top_patch_index_FKT[:, : top_FK.shape[1]]
    contrast_F, unique_F = regions.part_measures(top_FK, top_map_FKT[:, : top_FK.shape[1]], grid, cells_NCD, view,
                                                 pidx)  # fmt: skip
    rows = []
    for f in range(top_FK.shape[0]):
        slots = np.nonzero(top_FK[f] >= 0)[0]
        images = top_FK[f, slots]
        row: dict = {"feature": f, "n_top": len(images)}
        if len(images) < max(2, rules.min_top_images):
            rows.append({**row, "label": "unclear", "trait": False})
            continue
        counts = [np.bincount(code_RN[i, images]) for i in range(len(taxonomy.RANKS))]
        purity = {r: float(c.max() / len(images)) for r, c in zip(taxonomy.RANKS, counts)}
        deepest = next((r for r in taxonomy.RANKS if purity[r] >= rules.clade_purity), None)
        loc, loc_tokens, spread, support = _localizations(
            top_map_FKT, f, slots, grid, top_patch_index_FKT, rules
        )
        n_species = int(np.count_nonzero(counts[0]))
        concentration = float(_same_class_share(code_RN[0, images][None])[0])
        null_conc = null.concentration(len(images))
        species, species_counts = np.unique(code_RN[0, images], return_counts=True)
        major, major_share = _major(species, species_counts, rules.abstract_min_class_share)
        major_images = images[np.isin(code_RN[0, images], major)]
        major_clades = len(np.unique(code_RN[abstract_rank, major_images]))
        row.update({f"purity_{r}": p for r, p in purity.items()})
        row.update(deepest_rank=deepest, n_species=n_species, localization=loc, localization_tokens=loc_tokens,
                   spread=spread, support=support, part_contrast=contrast_F[f], part_uniqueness=unique_F[f], peak_norm_ratio=_peak_norm(top_peak_norm_ratio_FK, f, slots),
                   concentration=concentration,
                   concentration_null_mean=float(null_conc.mean()), concentration_p=_p_value(concentration, null_conc),
                   n_major=len(major), major_share=major_share, major_clades=major_clades)  # fmt: skip
        one_clade = deepest is not None and taxonomy.RANKS.index(deepest) <= max_rank
        if purity["species"] >= rules.single_species_share:
            label = "single-species"
        elif (one_clade and n_species >= rules.trait_min_species and loc <= rules.trait_max_localization
              and spread <= rules.trait_max_spread and support <= rules.trait_max_support
              and not contrast_F[f] < rules.trait_min_contrast and not unique_F[f] < rules.trait_min_uniqueness
              and not high_norm(row["peak_norm_ratio"], rules)):  # fmt: skip
            label = "trait"
        elif one_clade:
            label = "clade"
        elif (
            row["concentration_p"] <= rules.alpha
            and major_share >= rules.abstract_min_coverage
            and major_clades >= rules.abstract_min_clades
        ):
            label = "cross-clade"
        else:
            label = "unclear"
        rows.append({**row, "label": label, "trait": label == "trait"})
    return pd.DataFrame(rows, columns=list(INAT_COLUMNS))
