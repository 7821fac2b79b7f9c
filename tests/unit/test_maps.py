"""Patch maps on a common pixel grid: the localization of one pixel-level blob agrees between a 16x16 and
a 14x14 patch grid (DINOv2 ViT-B/14 and CLIP ViT-B/16 at 224 px), where the token shares do not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from vitsae.analysis import concepts, maps
from vitsae.analysis.settings import INatRules


def patch_average(image_HW: np.ndarray, cells: int) -> np.ndarray:
    """The patch map a model with ``cells`` x ``cells`` patches would see of a pixel-level activation."""
    p = image_HW.shape[0] // cells
    return image_HW[: cells * p, : cells * p].reshape(cells, p, cells, p).mean(axis=(1, 3))


def blobs(n: int, seed: int = 0) -> list[tuple[np.ndarray, float]]:
    """``n`` discs at random places and radii (16 to 60 px: at least two patches across on either grid; a
    smaller blob lights one or two patches wherever it falls, which neither grid resolves) in a 224 px
    image, with their true area share."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224] + 0.5
    out = []
    for _ in range(n):
        r = rng.uniform(16, 60)
        cy, cx = rng.uniform(r, 224 - r, 2)
        disc = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.float64)
        out.append((disc, float(disc.mean())))
    return out


def test_a_blob_gets_the_same_share_on_a_16x16_and_a_14x14_grid():
    pixel_gap, token_gap, truth_gap = [], [], []
    for disc, area in blobs(60):
        m16, m14 = patch_average(disc, 16), patch_average(disc, 14)
        px16 = maps.localization(m16.reshape(1, -1), [16, 16], size=224)
        px14 = maps.localization(m14.reshape(1, -1), [14, 14], size=224)
        tok16 = maps.localization(m16.reshape(1, -1))  # the token share, each model's own units
        tok14 = maps.localization(m14.reshape(1, -1))
        pixel_gap.append(abs(px16 - px14) / area)
        token_gap.append(abs(tok16 - tok14) / area)
        truth_gap.append(max(abs(px16 - area), abs(px14 - area)) / area)
    pixel_gap, token_gap = np.array(pixel_gap), np.array(token_gap)
    print(f"relative gap 16x16 vs 14x14: pixels mean {pixel_gap.mean():.3f} max {pixel_gap.max():.3f}; "
          f"tokens mean {token_gap.mean():.3f} max {token_gap.max():.3f}; pixel vs true area max {max(truth_gap):.3f}")  # fmt: skip
    # measured: pixels mean 0.020, max 0.131; tokens mean 0.099, max 0.435; pixel vs area max 0.257
    assert pixel_gap.mean() < 0.04 and pixel_gap.max() < 0.2
    assert token_gap.mean() > 3 * pixel_gap.mean()  # the units the common grid removes
    assert max(truth_gap) < 0.3  # and it measures the blob's area (the smallest discs blur most)


def test_localization_places_kept_patches_and_handles_empty_maps():
    # 2 kept patches of a 4x4 grid: the share is that of the placed map, not of the 2 tokens
    placed = maps.localization(np.array([[1.0, 1.0]]), [4, 4], np.array([[0, 1]]), size=64)
    full = np.zeros(16)
    full[[0, 1]] = 1.0
    assert placed == maps.localization(full.reshape(1, -1), [4, 4], size=64)
    assert 0.05 < placed < 0.2
    assert maps.localization(np.zeros((1, 16)), [4, 4], size=64) == 0.0  # nothing fires: covers nothing
    assert np.isnan(maps.localization(np.zeros((0, 16)), [4, 4]))
    with pytest.raises(ValueError, match="does not fill the 4x4 grid"):
        maps.localization(np.ones((1, 15)), [4, 4])


def test_the_trait_label_uses_the_common_grid():
    # one feature, 6 top images from 3 species of one order, each firing on a disc of ~13% of the image:
    # on the 14x14 grid its token share is above trait_max_localization 0.13, on pixels it is not
    taxa = {r: [] for r in ("species", "genus", "family", "order", "class", "phylum", "kingdom")}
    for i in range(6):
        for r, column in taxa.items():
            column.append(f"{r}{i % 3}" if r in ("species", "genus") else f"{r}0")

    yy, xx = np.mgrid[0:224, 0:224] + 0.5
    disc = (((yy - 100) ** 2 + (xx - 110) ** 2) < 45.5**2).astype(np.float64)
    m14 = patch_average(disc, 14).reshape(-1)
    top_FK = np.arange(6)[None]
    maps_FKT = np.repeat(m14[None, None], 6, axis=1)
    rules = INatRules(min_top_images=2, trait_max_localization=0.13, null_samples=20)
    on_pixels = concepts.inat_table(top_FK, maps_FKT, pd.DataFrame(taxa), rules, grid=[14, 14])
    on_tokens = concepts.inat_table(top_FK, maps_FKT, pd.DataFrame(taxa), rules)
    row, row_tok = on_pixels.iloc[0], on_tokens.iloc[0]
    assert row["localization_tokens"] == row_tok["localization"] > 0.13
    assert row["localization"] <= 0.13 and row["label"] == "trait", row.to_dict()
    assert row_tok["label"] == "clade"
    # the same feature peaking on a high-norm token (5x its image's median norm) is no trait once the
    # test is on (high_norm_multiple 3); at 1.2x it stays one; with the test off (0) the ratio is ignored
    for ratio, multiple, label in ((5.0, 3.0, "clade"), (1.2, 3.0, "trait"), (5.0, 0.0, "trait")):
        got = concepts.inat_table(top_FK, maps_FKT, pd.DataFrame(taxa), replace(rules, high_norm_multiple=multiple),
                                  grid=[14, 14], top_peak_norm_ratio_FK=np.full((1, 6), ratio)).iloc[0]  # fmt: skip
        assert got["label"] == label and got["peak_norm_ratio"] == ratio, (ratio, multiple, got.to_dict())
