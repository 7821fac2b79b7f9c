"""Patch maps: one image's activations of one feature over its tokens, placed on the model's patch grid,
resampled to pixels, and how much of the image they cover.

Models cut an image into different grids (DINOv2 ViT-B/14 at 224 px: 16 x 16 patches; CLIP ViT-B/16: 14 x
14), so a share of *tokens* is measured in different units for each model: one hot token is 1/256 of a
DINOv2 image and 1/196 of a CLIP image, and a region's token share moves in steps of those sizes. The
localization statistic of the concept tables is therefore measured on one common pixel grid
(:func:`localization` with ``size``): each patch map is resampled bilinearly to ``size`` x ``size``
cells (:func:`resample`, cell centres aligned as the patches sit on the image) and the share of pixels
above half the image's maximum activation is taken. A blob drawn at pixel level and averaged into 16 x 16
and 14 x 14 patch maps gets nearly the same share on both (tests/unit/test_maps.py); its token shares do
not.
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
    if patch_index_KT is None:
        if map_KT.shape[1] != int(grid[0]) * int(grid[1]):
            raise ValueError(
                f"a patch map of {map_KT.shape[1]} tokens does not fill the {grid[0]}x{grid[1]} grid"
            )
        grids_KHW = map_KT.reshape(-1, int(grid[0]), int(grid[1]))
    else:
        grids_KHW = np.stack([map_grid(m, grid, p) for m, p in zip(map_KT, patch_index_KT)])
    peak_K = grids_KHW.max(axis=(1, 2)).astype(np.float64)
    share_K = (resample(grids_KHW, size) > 0.5 * peak_K[:, None, None]).mean(axis=(1, 2))
    return float(np.where(peak_K > 0, share_K, 0.0).mean())
