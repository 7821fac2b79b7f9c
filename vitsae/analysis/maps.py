"""Patch maps: one image's activations of one feature over its tokens, placed on the model's patch grid,
resampled to pixels, and how much of the image they cover.

Models cut an image into different grids (DINOv2 ViT-B/14 at 224 px: 16 x 16 patches; CLIP ViT-B/16: 14 x
14), so a share of *tokens* is measured in different units for each model: one hot token is 1/256 of a
DINOv2 image and 1/196 of a CLIP image, and a region's token share moves in steps of those sizes. The
localization statistic of the concept tables is therefore measured on one common pixel grid
(:func:`localization` with ``size``): each patch map is resampled bilinearly to ``size`` x ``size``
pixels (:func:`resample`, cell centres aligned as the patches sit on the image) and the share of pixels
above half the image's maximum activation is taken. A blob drawn at pixel level and averaged into 16 x 16
and 14 x 14 patch maps gets nearly the same share on both (tests/unit/test_maps.py); its token shares do
not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The common grid of the localization statistic, in pixels per side (the paper's models see 224 px).
LOCALIZATION_PIXELS = 224


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


def resample(grid_HW: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resampling of one patch map to ``size`` × ``size`` (cell centres aligned, as the image is)."""
    h, w = grid_HW.shape
    ys = (np.arange(size) + 0.5) * h / size - 0.5
    xs = (np.arange(size) + 0.5) * w / size - 0.5
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 1)
    y1, x1 = np.clip(y0 + 1, 0, h - 1), np.clip(x0 + 1, 0, w - 1)
    wy = np.clip(ys - y0, 0, 1)[:, None]
    wx = np.clip(xs - x0, 0, 1)[None, :]
    g = grid_HW.astype(np.float64)
    top = g[y0][:, x0] * (1 - wx) + g[y0][:, x1] * wx
    bottom = g[y1][:, x0] * (1 - wx) + g[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def localization(
    map_KT: np.ndarray,
    grid: Sequence[int] | None = None,
    patch_index_KT: np.ndarray | None = None,
    size: int = LOCALIZATION_PIXELS,
) -> float:
    """Mean over the rows (images) of the share of the image above half the row's max activation; NaN for
    no rows. With a ``grid`` (patch maps) and ``size`` > 0, the share of the ``size`` x ``size`` pixels of
    the bilinearly resampled map (module docstring); else (``size`` 0, or token kinds without a grid) the
    share of tokens. A row whose max is not above 0 covers nothing (share 0)."""
    if map_KT.shape[0] == 0:
        return float("nan")
    if grid is None or not size:
        max_K = map_KT.max(axis=1, keepdims=True)
        return float((map_KT > 0.5 * max_K).mean(axis=1).mean())
    shares = []
    for k in range(map_KT.shape[0]):
        g = map_grid(map_KT[k], grid, None if patch_index_KT is None else patch_index_KT[k])
        peak = float(g.max())
        shares.append(float((resample(g, size) > 0.5 * peak).mean()) if peak > 0 else 0.0)
    return float(np.mean(shares))
