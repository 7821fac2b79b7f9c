"""Patch maps: one image's activations of one feature over its tokens, placed on the model's patch grid,
resampled to pixels, and how much of the image they cover.

Models cut an image into different grids (DINOv2 ViT-B/14 at 224 px: 16 x 16 patches; CLIP ViT-B/16: 14 x
14), so a share of *tokens* is measured in different units for each model: one hot token is 1/256 of a
DINOv2 image and 1/196 of a CLIP image, and a region's token share moves in steps of those sizes. The
localization statistic of the concept tables is therefore measured on one common pixel grid
(:func:`footprint` / :func:`localization` with ``size``): each patch map is resampled bilinearly to ``size`` x ``size``
cells (:func:`resample`, cell centres aligned as the patches sit on the image) and the share of pixels
above half the image's maximum activation is taken. A blob drawn at pixel level and averaged into 16 x 16
and 14 x 14 patch maps gets nearly the same share on both (tests/unit/test_maps.py); its token shares do
not.

A small share alone does not make a region *one part*: a feature that answers a background texture fires
on patches scattered over the whole image, and where its response is patchy (a random-weight model's
texture features: under a quarter of the image above half the max although the texture fills it) its
share is as small as a part's. :func:`footprint` therefore also measures the region's ``spread``: the RMS
distance of its cells from their centroid, relative to that of the whole image (1 for cells spread evenly
over the image, ``sqrt(3 a / pi)`` for one disc of area share ``a``). Where only one or two places reach
half the max, a texture's region is as compact as a part's; but its feature is still *active* (above 0)
wherever the texture is, while a part's is silent off the part: ``support``, the share of the image above
0 (on tokens). A trait's region must be small, compact and its support small (``trait_max_spread``,
``trait_max_support`` in :mod:`vitsae.analysis.concepts`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

#: The common grid of the localization statistic, in cells per side. 112 measures a pixel-level blob as
#: well as 224 does (relative gap between a 16x16 and a 14x14 patch grid: mean 0.022 against 0.020,
#: bench/RESULTS.md section 19) at a quarter of the cost.
LOCALIZATION_PIXELS = 112


def map_grid(map_T: np.ndarray, grid: Sequence[int] | None,
             patch_index_T: np.ndarray | None = None) -> np.ndarray | None:  # fmt: skip
    """``[grid_h, grid_w]`` activations of one image's tokens (row-major grid; ``patch_index_T`` places a
    kept subset, -1 = none), or None for token kinds without a grid."""
    if grid is None:
        return None
    gh, gw = int(grid[0]), int(grid[1])
    out = np.zeros(gh * gw, dtype=np.float32)
    if patch_index_T is None:
        if len(map_T) != gh * gw:
            raise ValueError(f"a patch map of {len(map_T)} tokens does not fill the {gh}x{gw} grid")
        out[:] = map_T
    else:
        keep = patch_index_T >= 0
        out[patch_index_T[keep]] = map_T[keep]
    return out.reshape(gh, gw)


@functools.lru_cache(maxsize=64)
def _weights(n: int, size: int) -> np.ndarray:
    """``[size, n]`` linear-interpolation weights from ``n`` cell centres to ``size`` (centres aligned,
    edges clamped): row ``i`` holds the two weights of output ``i``."""
    pos = (np.arange(size) + 0.5) * n / size - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, n - 1)
    hi = np.clip(lo + 1, 0, n - 1)
    frac = np.clip(pos - lo, 0, 1)
    out = np.zeros((size, n))
    np.add.at(out, (np.arange(size), lo), 1 - frac)
    np.add.at(out, (np.arange(size), hi), frac)
    out.setflags(write=False)
    return out


def resample(grid_HW: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resampling of one patch map (or a stack ``[..., H, W]``) to ``size`` × ``size`` (cell
    centres aligned, as the image is), float64."""
    h, w = grid_HW.shape[-2:]
    return _weights(h, size) @ np.asarray(grid_HW, dtype=np.float64) @ _weights(w, size).T


def _grids(map_KT: np.ndarray, grid: Sequence[int], patch_index_KT: np.ndarray | None) -> np.ndarray:
    """``[K, grid_h, grid_w]`` patch maps of the rows (placed by ``patch_index_KT`` when given)."""
    if patch_index_KT is None:
        if map_KT.shape[1] != int(grid[0]) * int(grid[1]):
            raise ValueError(
                f"a patch map of {map_KT.shape[1]} tokens does not fill the {grid[0]}x{grid[1]} grid"
            )
        return map_KT.reshape(-1, int(grid[0]), int(grid[1]))
    return np.stack([map_grid(m, grid, p) for m, p in zip(map_KT, patch_index_KT)])


def _spread(mask_KHW: np.ndarray) -> np.ndarray:
    """Per row, the RMS distance of the mask's cells from their centroid over that of every cell of the
    grid from the grid's centre (cell centres in image units); NaN for an empty mask."""
    h, w = mask_KHW.shape[-2:]
    y_H, x_W = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    n_K = mask_KHW.sum(axis=(1, 2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows_KH, cols_KW = mask_KHW.sum(axis=2), mask_KHW.sum(axis=1)
        var_K = (
            (rows_KH @ y_H**2 + cols_KW @ x_W**2) / n_K
            - ((rows_KH @ y_H) / n_K) ** 2
            - ((cols_KW @ x_W) / n_K) ** 2
        )
    full = y_H.var() + x_W.var()
    return np.sqrt(np.maximum(var_K, 0.0) / full)


def footprint(
    map_KT: np.ndarray,
    grid: Sequence[int] | None = None,
    patch_index_KT: np.ndarray | None = None,
    size: int = LOCALIZATION_PIXELS,
) -> tuple[float, float, float]:
    """``(localization, spread, support)`` of the rows (images) of one feature's maps: how much of each
    image its firing region covers, how scattered that region is, and on how much of the image the
    feature is active at all (module docstring).

    ``localization``: mean over the rows of the share of the image above half the row's max activation;
    NaN for no rows. With a ``grid`` (patch maps) and ``size`` > 0, the share of the ``size`` x ``size``
    pixels of the bilinearly resampled map; else (``size`` 0, or token kinds without a grid) the share of
    tokens. A row whose max is not above 0 covers nothing (share 0).

    ``spread``: mean over the rows whose max is above 0 of the RMS distance of the region's cells from
    their centroid, over the RMS distance of all of the image's cells from its centre: near 0 for one
    small blob, ``sqrt(3 a / pi)`` for a disc covering a share ``a`` of the image (0.49 at ``a`` = 0.25),
    about 1 for cells scattered over the whole image (a patchy texture). On the same grid as
    ``localization`` (the model's own patch grid with ``size`` 0); NaN without a grid (there are no
    places) or without a row that fires.

    ``support``: mean over the rows of the share of the image's tokens where the activation is above 0
    (of the stored tokens, a random subset where the store keeps one: an unbiased estimate): a part's
    feature is silent on most of the image, a texture's is active wherever the texture is, even where
    only one or two places reach half its max. Counted on tokens, not resampled: bilinear resampling
    would widen every weakly active patch by half a patch on each side; at the test's coarse threshold
    the grids' different units (1/49 vs 1/64 of the demo's images) do not matter."""
    if map_KT.shape[0] == 0:
        return float("nan"), float("nan"), float("nan")
    if grid is None:
        return _token_share(map_KT), float("nan"), float((map_KT > 0).mean())
    grids_KHW = _grids(map_KT, grid, patch_index_KT).astype(np.float64)
    peak_K = grids_KHW.max(axis=(1, 2))
    fires_K = peak_K > 0
    if size:
        grids_KHW = resample(grids_KHW, size)
    mask_KHW = grids_KHW > 0.5 * peak_K[:, None, None]
    share = float(np.where(fires_K, mask_KHW.mean(axis=(1, 2)), 0.0).mean()) if size else _token_share(map_KT)
    spread = float(_spread(mask_KHW[fires_K]).mean()) if fires_K.any() else float("nan")
    support = float((map_KT > 0).mean())
    return share, spread, support


def _token_share(map_KT: np.ndarray) -> float:
    """Mean over the rows of the share of tokens above half the row's max activation."""
    max_K = map_KT.max(axis=1, keepdims=True)
    return float((map_KT > 0.5 * max_K).mean(axis=1).mean())


def localization(
    map_KT: np.ndarray,
    grid: Sequence[int] | None = None,
    patch_index_KT: np.ndarray | None = None,
    size: int = LOCALIZATION_PIXELS,
) -> float:
    """The ``localization`` of :func:`footprint` (the token share without a grid or with ``size`` 0)."""
    if map_KT.shape[0] == 0:
        return float("nan")
    if grid is None or not size:
        return _token_share(map_KT)
    return footprint(map_KT, grid, patch_index_KT, size)[0]
