"""Where a feature fires, described without either model: the patch-level visual control of "abstract".

The whole-image thumbnails (:mod:`vitsae.analysis.thumbnails`) cannot see a small pattern that a feature
fires on: a two-colour bullseye on otherwise different images passes the whole-image diversity test. So
the ImageNet concept table also measures how alike the *regions where the feature fires* look.

Cells
    The thumbnails rule also cuts each image's centre square (the shorter side, centred) into
    ``cells`` x ``cells`` cells (default :data:`REGION_CELLS`) and describes each cell, from the pixels only
    (:func:`cell_descriptors`, :data:`DESCRIPTOR_NAMES`): mean R, G, B; the standard deviation of R, G, B
    within the cell (contrast, e.g. two colours side by side); and the mean absolute luminance difference
    between neighbouring pixels in four directions (horizontal, vertical, two diagonals: texture, its scale
    and orientation). Values lie in [0, 1]; the square is first box-resized to :data:`PX_PER_CELL` pixels
    per cell.

The model's view
    A model resizes the shorter side to ``floor(S / crop_pct)`` and crops ``S`` from the centre, so it sees
    the central ``view = S / floor(S / crop_pct)`` of the centre square (1 for CLIP, 0.875 for DINOv2's
    timm config; the statistics' ``meta.json`` ``view``). :func:`cell_weights` evaluates a patch map
    bilinearly at every cell centre (cells outside the view get nothing).

Region of one top image
    The cells whose interpolated activation is at least half the image's maximum, weighted by that
    activation; its descriptor is the weighted mean of their cell descriptors (:func:`region_masks`).

Region diversity of a feature (:func:`region_diversity`)
    The mean Euclidean distance over all pairs of its top images' region descriptors (``region_diversity``),
    against the *same masks* laid on random images of the split (the concept table's random image sets,
    the first :data:`REGION_NULL_SAMPLES` of them: image i of a set gets top image i's mask):
    ``region_diversity_null_mean`` and ``region_diversity_ratio`` (observed / null mean). A feature firing
    on the same local pattern in every image has a ratio far below 1, however different the rest of its
    images look; one firing on regions that look different has a ratio near 1. The ImageNet table calls a
    feature that passes every other test of "abstract" but has a ratio below ``min_region_diversity_ratio``
    a ``visual-motif`` (:mod:`vitsae.analysis.concepts`).

Between two classes (:func:`class_pair_ratios`)
    The same ratio restricted to the pairs of top images of which one is of class ``a`` and the other of
    class ``b`` (each class with at least :data:`PAIR_MIN_IMAGES` top images), against the same slots of
    the random sets. A *mixture* (on the default demo, the abstract features still on the bullseye: the
    bullseye in about half their top images, unrelated things in the rest, whole-set ratio 0.75-1.10)
    has diverse regions over all its images, but the two classes that share the bullseye have a pair
    ratio far below 1. The concept table keeps every pair (``region_pairs``) and the smallest over the
    major classes of different branches (``major_region_ratio``); it is held to the same threshold.

The motif core (:func:`core_distance`, ``core_region_ratio``)
    A mixture can spread its motif over its classes: on the default demo, after the pair test, 18
    features of CLIP and DINOv2 still called abstract fired on the bullseye in about half their top images,
    within each class in some images and elsewhere in others, so that a quarter of all pairs, and of the
    pairs between any two classes, are motif pairs (ratios 0.75-1.3). "Abstract" claims that the feature
    joins things that do not look alike; if at least half of its top images fire on regions that look
    alike, most of what it answers is one look. The core of a feature's n regions: for each region, it and
    its ``ceil(n / 2) - 1`` nearest others; the smallest mean pairwise distance of such a set. Choosing
    the tightest set flatters any feature, so the null is the same choice on each random image set under
    the same masks, averaged: ``core_region_ratio`` = observed core / null core. Held to the same threshold
    (``min_region_diversity_ratio``). The statistic, the half and the threshold were written down before
    they were measured on the demo (bench/RESULTS.md section 22).

Part or texture (:func:`part_uniqueness`)
    A trait fires on a part: a place whose look does not recur in its image. A feature that fires on one
    spot of a background texture (on the demo: a texture cell at an object's edge, the region a mixture
    of the order's texture and some object) has look-alikes all over its image where it is silent. The
    uniqueness of a region is the mean distance from its descriptor to its :data:`UNIQUE_NEIGHBOURS`
    nearest *far* cells (outside the region and not next to it: the cells around a part are mixtures of
    it) over the mean distance between two cells of the image; a feature's value is the median over its
    top images (the trait claim is that it fires on a part in most of them; the mean, used until the
    fourth session of 2026-12-06, let two or three part images at 2-3 carry a majority of texture spots
    at 0.3-0.5). A texture covers most of its image, so a spot of it has many far look-alikes within the
    texture's own small cell-to-cell distance (far below 1); a part's nearest far cells are the
    background or other objects, about as far as the background is from an object, and the mean
    distance of two cells is at most about half that (2p(1 - p) <= 1/2 for an object share p): about 2
    and above. The trait rules break even at 1: the region's nearest
    look-alikes elsewhere are as far as two random places of the image. :func:`part_contrast` (the
    distance to the *mean* of the image's other cells) is kept as a column and a test, though on the
    default demo every trait candidate with uniqueness at least 1 has contrast at least 1 too: the
    texture spots it let through (497 traits, CLIP and DINOv2) were mostly one or two cells at an
    object's edge, 30-40% object, which stand out from the mean of the rest (contrast 1.2 median) but have
    look-alikes in the image (uniqueness 0.5 and 0.3 median per image); uniqueness turned 428 of them into
    clades and kept 212 of 262 traits on a genus part (the others: features firing on the part in about
    half their top images, or on a part's edge whose other edge lies beyond the region's neighbours).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

#: Cells per side of the centre square (config ``concepts.region_cells``).
REGION_CELLS = 8
#: Pixels per cell side after the centre square is box-resized.
PX_PER_CELL = 16
#: Random image sets per feature for the region null (the first of the table's null sets).
REGION_NULL_SAMPLES = 50
DESCRIPTOR_NAMES = ("mean_r", "mean_g", "mean_b", "sd_r", "sd_g", "sd_b", "grad_h", "grad_v", "grad_d1",
                    "grad_d2")  # fmt: skip
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def cell_descriptors(image: Image.Image, cells: int = REGION_CELLS) -> np.ndarray:
    """``[cells * cells, len(DESCRIPTOR_NAMES)]`` float32 descriptors of the cells of ``image``'s centre
    square, row-major (module docstring)."""
    im = image.convert("RGB")
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    side = cells * PX_PER_CELL
    sq = im.resize((side, side), Image.Resampling.BOX, box=(left, top, left + s, top + s))
    x_HWC = np.asarray(sq, dtype=np.float32) / 255.0
    p = PX_PER_CELL
    blocks = x_HWC.reshape(cells, p, cells, p, 3).transpose(0, 2, 1, 3, 4).reshape(cells * cells, p * p, 3)
    lum = x_HWC @ _LUMA
    grads = np.zeros((4, side, side), dtype=np.float32)
    grads[0, :, :-1] = np.abs(np.diff(lum, axis=1))
    grads[1, :-1, :] = np.abs(np.diff(lum, axis=0))
    grads[2, :-1, :-1] = np.abs(lum[1:, 1:] - lum[:-1, :-1])
    grads[3, :-1, 1:] = np.abs(lum[1:, :-1] - lum[:-1, 1:])
    g = grads.reshape(4, cells, p, cells, p).mean(axis=(2, 4)).reshape(4, -1).T
    return np.concatenate([blocks.mean(axis=1), blocks.std(axis=1), g], axis=1).astype(np.float32)


def view_fraction(preprocessing: dict | None) -> float:
    """The share of the centre square's side that a model with this ``preprocessing`` (the store's
    ``preprocessing`` attribute: ``input_size``, ``crop_pct``) sees; 1.0 without one."""
    if not preprocessing:
        return 1.0
    s = int(preprocessing["input_size"][-1])
    return s / float(np.floor(s / float(preprocessing.get("crop_pct", 1.0))))


@functools.lru_cache(maxsize=64)
def _axis_weights(n: int, cells: int, view: float) -> np.ndarray:
    """``[cells, n]``: bilinear weights of ``n`` patch centres at each cell centre of the square (cells
    outside the model's view: zero rows)."""
    u = (np.arange(cells) + 0.5) / cells
    v = (u - 0.5) / view + 0.5  # the cell centre in the model's view, 0..1 inside
    pos = v * n - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, n - 1)
    hi = np.clip(lo + 1, 0, n - 1)
    frac = np.clip(pos - np.floor(pos), 0, 1)
    frac = np.where(pos < 0, 0.0, frac)
    out = np.zeros((cells, n))
    np.add.at(out, (np.arange(cells), lo), 1 - frac)
    np.add.at(out, (np.arange(cells), hi), frac)
    out[(v < 0) | (v > 1)] = 0.0
    out.setflags(write=False)
    return out


def cell_weights(grid: Sequence[int], cells: int, view: float = 1.0) -> np.ndarray:
    """``[cells * cells, grid_h * grid_w]``: a row-major patch map times this matrix's transpose is the
    map at every cell centre of the square (module docstring)."""
    wy = _axis_weights(int(grid[0]), cells, round(float(view), 9))
    wx = _axis_weights(int(grid[1]), cells, round(float(view), 9))
    return np.kron(wy, wx)


def gridded(map_KT: np.ndarray, grid: Sequence[int], patch_index_KT: np.ndarray | None = None) -> np.ndarray:
    """``[..., grid_h * grid_w]`` activations on the patch grid (``patch_index`` places a kept subset)."""
    n = int(grid[0]) * int(grid[1])
    if patch_index_KT is None:
        if map_KT.shape[-1] != n:
            raise ValueError(f"a patch map of {map_KT.shape[-1]} tokens does not fill the {grid} grid")
        return np.asarray(map_KT, dtype=np.float64)
    out = np.zeros((*map_KT.shape[:-1], n + 1))
    np.put_along_axis(out, np.where(patch_index_KT >= 0, patch_index_KT, n), map_KT, axis=-1)
    return out[..., :n]


def region_masks(map_KT: np.ndarray, grid: Sequence[int], cells: int, view: float = 1.0,
                 patch_index_KT: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``[..., cells * cells]`` normalised weights of each image's firing region (cells at least half the
    image's max interpolated activation, weighted by it); a row whose max is not above 0: NaN."""
    act = gridded(map_KT, grid, patch_index_KT) @ cell_weights(grid, cells, view).T
    peak = act.max(axis=-1, keepdims=True)
    w = np.where((act >= 0.5 * peak) & (peak > 0), act, 0.0)
    total = w.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, w / total, np.nan)


def _distances(r_XKD: np.ndarray) -> np.ndarray:
    """``[..., K, K]`` Euclidean distances between the K rows of each ``[K, D]`` block."""
    sq = (r_XKD**2).sum(-1)
    d2 = sq[..., :, None] + sq[..., None, :] - 2 * np.einsum("...id,...jd->...ij", r_XKD, r_XKD)
    return np.sqrt(np.maximum(d2, 0))


def _mean_pairwise(r_XKD: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance over the pairs of the K rows of each ``[K, D]`` block."""
    k = r_XKD.shape[-2]
    return _distances(r_XKD).sum(axis=(-2, -1)) / (k * (k - 1))


#: A class enters the class-pair region ratios with at least this many top images with a region.
PAIR_MIN_IMAGES = 2


def class_pair_ratios(obs_NN: np.ndarray, null_NN: np.ndarray, class_N: np.ndarray) -> dict[tuple, float]:
    """For every pair of classes (each with at least :data:`PAIR_MIN_IMAGES` of the ``N`` images), the
    mean region distance between the images of one and of the other over the same on the random images
    (``null_NN``: the null's mean distance per pair of slots): ``{(a, b): ratio}``, ``a < b``."""
    values, counts = np.unique(class_N, return_counts=True)
    kept = values[counts >= PAIR_MIN_IMAGES]
    if len(kept) < 2:
        return {}
    onehot_NU = (class_N[:, None] == kept[None, :]).astype(np.float64)
    # sums over the same image pairs: the pair counts cancel in the ratio of the two means
    obs_UU = onehot_NU.T @ obs_NN @ onehot_NU
    null_UU = onehot_NU.T @ null_NN @ onehot_NU
    out = {}
    for x in range(len(kept)):
        for y in range(x + 1, len(kept)):
            out[(kept[x].item(), kept[y].item())] = (
                float(obs_UU[x, y] / null_UU[x, y]) if null_UU[x, y] > 0 else float("nan")
            )
    return out


def core_distance(d_XNN: np.ndarray, m: int) -> np.ndarray:
    """``[X]``: the tightest ``m`` of the ``N`` rows of each ``[N, N]`` distance block, as a medoid sees
    them: for each row i, the set of i and its ``m - 1`` nearest other rows; the smallest mean pairwise
    distance within such a set (:func:`region_diversity`'s motif core). Computed in float32 (sorting and
    summing float64 blocks took 7 times as long; the values agree to 1e-6 relative)."""
    n = d_XNN.shape[-1]
    if not 2 <= m <= n:
        raise ValueError(f"the core of {n} rows needs 2 <= m <= {n}, not m = {m}")
    d = np.asarray(d_XNN, dtype=np.float32)
    # each row's own index first (ties broken towards itself), then its m - 1 nearest
    order_XNM = np.argsort(d - np.eye(n, dtype=np.float32), axis=-1, kind="stable")[..., :m]
    member_XNN = np.zeros(d.shape, dtype=np.float32)  # row i: the set seen from i
    np.put_along_axis(member_XNN, order_XNM, 1.0, axis=-1)
    within_XN = (np.matmul(member_XNN, d) * member_XNN).sum(axis=-1).astype(np.float64)
    return within_XN.min(axis=-1) / (m * (m - 1))


def region_diversity(
    top_FK: np.ndarray,
    map_FKT: np.ndarray,
    grid: Sequence[int] | None,
    cells_NCD: np.ndarray | None,
    null_sets: Callable[[int], np.ndarray],
    view: float = 1.0,
    patch_index_FKT: np.ndarray | None = None,
    min_images: int = 2,
    samples: int = REGION_NULL_SAMPLES,
    chunk: int = 256,
    class_N: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict], np.ndarray]:
    """``(region_diversity_F, region_null_mean_F, pairs_F, core_ratio_F)`` of every feature (module
    docstring), NaN where it cannot be measured: no patch grid or cell descriptors, or fewer than
    ``min_images`` top images with a firing region. ``core_ratio_F``: the motif core's distance
    (:func:`core_distance`, half the images rounded up) over the mean of the same statistic on each
    random set. ``top_FK``: split positions (-1 = none); ``null_sets(n)``: the table's
    random sets ``[samples, n]`` of split positions for a feature of ``n`` top images. With ``class_N``
    (a class code per split image), ``pairs_F[f]`` holds :func:`class_pair_ratios` of feature ``f``'s
    top images (else, and where not measured, an empty dict)."""
    n_feat = top_FK.shape[0]
    div_F = np.full(n_feat, np.nan)
    null_F = np.full(n_feat, np.nan)
    core_F = np.full(n_feat, np.nan)
    pairs_F: list[dict] = [{} for _ in range(n_feat)]
    if grid is None or cells_NCD is None or n_feat == 0:
        return div_F, null_F, pairs_F, core_F
    cells = round(np.sqrt(cells_NCD.shape[1]))
    mask_FKC = region_masks(map_FKT, grid, cells, view, patch_index_FKT)
    valid_FK = (top_FK >= 0) & np.isfinite(mask_FKC).all(axis=-1)
    n_F = valid_FK.sum(axis=1)
    # features whose valid top images are the first n slots share the null sets of size n: one batch each
    prefix_F = (valid_FK == (np.arange(top_FK.shape[1]) < n_F[:, None])).all(axis=1)
    for n in np.unique(n_F[n_F >= max(2, min_images)]):
        feats = np.nonzero((n_F == n) & prefix_F)[0]
        others = np.nonzero((n_F == n) & ~prefix_F)[0]
        sets_SN = np.asarray(null_sets(int(n)))[:samples]
        null_SNCD = cells_NCD[sets_SN].astype(np.float32)
        s_, _, c_, d_ = null_SNCD.shape
        null_NCX = np.ascontiguousarray(null_SNCD.transpose(1, 2, 0, 3).reshape(n, c_, s_ * d_))
        for batch in [feats[i : i + chunk] for i in range(0, len(feats), chunk)] + [[f] for f in others]:
            batch = np.asarray(batch)
            if batch.size == 0:
                continue
            if prefix_F[batch[0]]:
                slots_BN = np.broadcast_to(np.arange(n), (len(batch), n))
            else:
                slots_BN = np.nonzero(valid_FK[batch[0]])[0][None]
            w_BNC = np.take_along_axis(mask_FKC[batch], slots_BN[:, :, None], axis=1).astype(np.float32)
            images_BN = np.take_along_axis(top_FK[batch], slots_BN, axis=1)
            observed_BND = np.einsum("bnc,bncd->bnd", w_BNC, cells_NCD[images_BN].astype(np.float32))
            obs_BNN = _distances(observed_BND.astype(np.float64))
            div_F[batch] = obs_BNN.sum(axis=(-2, -1)) / (n * (n - 1))
            # per slot n one BLAS product [B, C] @ [C, S * D]
            null_NBX = np.matmul(np.ascontiguousarray(w_BNC.transpose(1, 0, 2)), null_NCX)
            null_BSND = null_NBX.reshape(n, len(batch), s_, d_).transpose(1, 2, 0, 3)
            null_BSNN = _distances(null_BSND.astype(np.float64))
            null_BNN = null_BSNN.mean(axis=1)
            null_F[batch] = null_BNN.sum(axis=(-2, -1)) / (n * (n - 1))
            m = (int(n) + 1) // 2
            if m >= 2:
                null_core_B = core_distance(null_BSNN, m).mean(axis=1)
                core_F[batch] = np.where(
                    null_core_B > 0,
                    core_distance(obs_BNN, m) / np.where(null_core_B > 0, null_core_B, 1.0),
                    np.nan,
                )
            if class_N is not None:
                for b, f in enumerate(batch):
                    pairs_F[f] = class_pair_ratios(obs_BNN[b], null_BNN[b], class_N[images_BN[b]])
    return div_F, null_F, pairs_F, core_F


def pairs_text(pairs: dict[tuple, float], names: np.ndarray) -> str:
    """``a|b:ratio`` for every pair of :func:`class_pair_ratios` (codes into ``names``), ``;``-separated,
    names sorted within and between pairs (the format of the co-occurrence pairs)."""
    items = sorted((tuple(sorted((str(names[a]), str(names[b])))), r) for (a, b), r in pairs.items())
    return ";".join(f"{a}|{b}:{r:.6g}" for (a, b), r in items)


def major_pair_min(major: Sequence[str], pairs: dict[frozenset, float], branches: Callable) -> float:
    """The smallest class-pair region ratio over the cross-branch pairs of ``major`` classes
    (:func:`vitsae.analysis.cooccurrence.cross_branch_pairs`) that have a ratio (both classes with at
    least :data:`PAIR_MIN_IMAGES` images); NaN for none."""
    from vitsae.analysis.cooccurrence import cross_branch_pairs

    ratios = [r for pair in cross_branch_pairs(major, branches) if np.isfinite(r := pairs.get(pair, np.nan))]
    return float(min(ratios)) if ratios else float("nan")


def _typical_distances(cells_NCD: np.ndarray, images: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``[N]``: the mean distance between two cells of each of ``images`` (0 for the other images)."""
    typical = np.zeros(cells_NCD.shape[0])
    c = cells_NCD.shape[1]
    for i in range(0, len(images), chunk):
        block = cells_NCD[images[i : i + chunk]].astype(np.float64)
        typical[images[i : i + chunk]] = _distances(block).sum(axis=(-2, -1)) / (c * (c - 1))
    return typical


#: Far cells a region's uniqueness is measured against: a texture recurs many times in its image, a part at
#: most a few (two eyes), so one or two chance look-alikes do not make a part a texture.
UNIQUE_NEIGHBOURS = 3


@functools.lru_cache(maxsize=8)
def _neighbourhood(cells: int) -> np.ndarray:
    """``[C, C]`` boolean: cell j is cell i or one of its 8 neighbours on the ``cells`` x ``cells`` grid."""
    r, c = np.divmod(np.arange(cells * cells), cells)
    out = (np.abs(r[:, None] - r[None]) <= 1) & (np.abs(c[:, None] - c[None]) <= 1)
    out.setflags(write=False)
    return out


def part_contrast(
    top_FK: np.ndarray,
    map_FKT: np.ndarray,
    grid: Sequence[int] | None,
    cells_NCD: np.ndarray | None,
    view: float = 1.0,
    patch_index_FKT: np.ndarray | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """``part_contrast_F``: how unlike the rest of its image a feature's firing region looks, mean over its
    top images with a region: the distance between the region's descriptor (:func:`region_masks`) and the
    mean descriptor of the image's other cells, over the mean distance between two cells of that image. A
    part (an object on a background) differs from the rest of its image more than two places of the image
    differ on average (above 1); a spot of a background texture looks like the texture around it (below
    1). NaN where it cannot be measured (no patch grid or cell descriptors, no top image with a region)."""
    return part_measures(top_FK, map_FKT, grid, cells_NCD, view, patch_index_FKT, chunk=chunk)[0]


def part_uniqueness(
    top_FK: np.ndarray,
    map_FKT: np.ndarray,
    grid: Sequence[int] | None,
    cells_NCD: np.ndarray | None,
    view: float = 1.0,
    patch_index_FKT: np.ndarray | None = None,
    neighbours: int = UNIQUE_NEIGHBOURS,
    chunk: int = 256,
) -> np.ndarray:
    """``part_uniqueness_F``: whether a feature's firing region looks like nothing else in its image,
    median over its top images with a value (module docstring: a trait fires on a part in most of them).
    Per image: the mean distance between the region's descriptor (:func:`region_masks`) and its
    ``neighbours`` nearest far cells (cells outside the region and not among its 8 neighbours; fewer where
    fewer are far), over the mean distance between two cells of that image.
    A part: about 2 and above; a spot of a background texture, which recurs where the feature is silent:
    below 1. NaN where it cannot be measured (no patch grid or cell descriptors, no top image with a region
    and a far cell)."""
    return part_measures(top_FK, map_FKT, grid, cells_NCD, view, patch_index_FKT, neighbours, chunk)[1]


def part_measures(
    top_FK: np.ndarray,
    map_FKT: np.ndarray,
    grid: Sequence[int] | None,
    cells_NCD: np.ndarray | None,
    view: float = 1.0,
    patch_index_FKT: np.ndarray | None = None,
    neighbours: int = UNIQUE_NEIGHBOURS,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """``(part_contrast_F, part_uniqueness_F)`` (:func:`part_contrast`, :func:`part_uniqueness`) from one pass:
    the region masks, each image's mean cell distance and its cells are computed once for both."""
    n_feat = top_FK.shape[0]
    contrast_F, unique_F = np.full(n_feat, np.nan), np.full(n_feat, np.nan)
    if grid is None or cells_NCD is None or n_feat == 0:
        return contrast_F, unique_F
    cells = round(np.sqrt(cells_NCD.shape[1]))
    near_CC = _neighbourhood(cells).astype(np.float64)
    mask_FKC = region_masks(map_FKT, grid, cells, view, patch_index_FKT)
    valid_FK = (top_FK >= 0) & np.isfinite(mask_FKC).all(axis=-1)
    typical = _typical_distances(cells_NCD, np.unique(top_FK[valid_FK]), chunk)
    for i in range(0, n_feat, chunk):
        fs = slice(i, i + chunk)
        ok_BK = valid_FK[fs]
        w_BKC = np.where(ok_BK[..., None], mask_FKC[fs], 0.0)
        cells_BKCD = cells_NCD[np.maximum(top_FK[fs], 0)].astype(np.float64)
        typ_BK = typical[np.maximum(top_FK[fs], 0)]
        # contrast: the region against the mean of the image's other cells
        rest_BKC = np.where(ok_BK[..., None] & (w_BKC == 0), 1.0, 0.0)
        rest_BKC /= np.maximum(rest_BKC.sum(axis=-1, keepdims=True), 1.0)
        gap_BK = np.linalg.norm(np.einsum("bkc,bkcd->bkd", w_BKC - rest_BKC, cells_BKCD), axis=-1)
        ratio_BK = np.where(ok_BK & (typ_BK > 0), gap_BK / np.where(typ_BK > 0, typ_BK, 1.0), np.nan)
        n_B = ok_BK.sum(axis=1)
        contrast_F[fs] = np.where(
            n_B > 0, np.where(ok_BK, ratio_BK, 0.0).sum(axis=1) / np.maximum(n_B, 1), np.nan
        )
        # uniqueness: the region against its nearest cells outside it and its neighbours
        far_BKC = ok_BK[..., None] & ((w_BKC > 0).astype(np.float64) @ near_CC == 0)
        region_BKD = np.einsum("bkc,bkcd->bkd", w_BKC, cells_BKCD)
        dist_BKC = np.where(far_BKC, np.linalg.norm(cells_BKCD - region_BKD[:, :, None], axis=-1), np.inf)
        nearest_BKN = np.sort(dist_BKC, axis=-1)[..., :neighbours]
        n_BK = np.isfinite(nearest_BKN).sum(axis=-1)
        near_BK = np.where(n_BK > 0, np.where(np.isfinite(nearest_BKN), nearest_BKN, 0.0).sum(-1), 0.0)
        near_BK /= np.maximum(n_BK, 1)
        has_BK = ok_BK & (n_BK > 0) & (typ_BK > 0)
        unique_BK = np.where(has_BK, near_BK / np.where(typ_BK > 0, typ_BK, 1.0), np.nan)
        with warnings.catch_warnings():  # a feature without any value: NaN, as documented
            warnings.simplefilter("ignore", RuntimeWarning)
            unique_F[fs] = np.nanmedian(unique_BK, axis=1)
    return contrast_F, unique_F
