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


def patchy_texture(cells: int, rng: np.random.Generator, sigma: float = 0.7) -> np.ndarray:
    """The patch map of a feature answering a background texture that fills a 224 px image but one
    quadrant (an object), as a random-weight model's texture feature does: a log-normal gain per 8 px
    texture period. At sigma 0.7 only scattered places (about a tenth of the image) reach half the image's
    max; at sigma 1.3 one or two places do, and the region above half the max is as compact as a part's
    (spread 0.5-0.7): only the support (active wherever the texture lies) tells them apart."""
    gain = np.exp(rng.normal(0.0, sigma, (28, 28))).repeat(8, axis=0).repeat(8, axis=1)
    gain[:112, :112] = 0.0  # the object's quadrant
    return patch_average(gain, cells)


def test_spread_tells_one_part_from_a_patchy_texture_on_either_grid():
    """A disc's spread is sqrt(3a/pi) on the 16x16 and the 14x14 grid alike; a texture feature whose share
    above half the max is as small as a part's is spread over the image (near 1)."""
    for disc, area in blobs(30, seed=1):
        s16 = maps.footprint(patch_average(disc, 16).reshape(1, -1), [16, 16], size=224)[1]
        s14 = maps.footprint(patch_average(disc, 14).reshape(1, -1), [14, 14], size=224)[1]
        assert abs(s16 - s14) < 0.05 and abs(s16 - np.sqrt(3 * area / np.pi)) < 0.06, (area, s16, s14)
    rng = np.random.default_rng(0)
    for cells in (16, 14):
        tex = np.stack([patchy_texture(cells, rng).reshape(-1) for _ in range(6)])
        share, spread, support = maps.footprint(tex, [cells, cells])
        assert share < 0.25 and spread > 0.7, (cells, share, spread)  # small like a part, scattered
        assert support > 0.7  # and active wherever the texture lies
    # a row that never fires has no region: left out of the spread; no grid: no places
    share, spread, support = maps.footprint(np.stack([np.zeros(16), np.eye(16)[5]]), [4, 4], size=0)
    assert share == pytest.approx(1 / 32) and spread == 0.0 and support == pytest.approx(1 / 32)
    assert np.isnan(maps.footprint(np.zeros((2, 16)), [4, 4])[1])
    assert np.isnan(maps.footprint(np.ones((2, 16)))[1])


def test_an_order_texture_is_a_clade_and_a_genus_part_a_trait():
    """Six top images of three species of one order. Firing on the order's background texture, patchy
    (scattered region) or peaky (one or two hot places), with a share under trait_max_localization, is
    clade; firing on one compact part of the same size is trait, on a 16x16 and on a 14x14 grid. Without
    the spread and support tests both textures were traits."""
    taxa = pd.DataFrame({r: [f"{r}{i % 3}" if r in ("species", "genus") else f"{r}0" for i in range(6)]
                         for r in ("species", "genus", "family", "order", "class", "phylum", "kingdom")})  # fmt: skip
    rules = INatRules(min_top_images=2, null_samples=20)
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:224, 0:224] + 0.5
    for cells in (16, 14):
        patchy_KT = np.stack([patchy_texture(cells, rng).reshape(-1) for _ in range(6)])
        peaky_KT = np.stack([patchy_texture(cells, rng, sigma=1.3).reshape(-1) for _ in range(6)])
        part_KT = []
        for _ in range(6):  # a part of 28% of the image side in a random quadrant
            cy, cx = rng.uniform(40, 184, 2)
            part = (((yy - cy) ** 2 + (xx - cx) ** 2) < 30**2).astype(np.float64)
            # an SAE feature: a ReLU of the part's evidence plus noise, so mostly silent off the part
            noisy = patch_average(part, cells) + 0.05 * rng.random((cells, cells)) - 0.04
            part_KT.append(np.maximum(noisy, 0.0).reshape(-1))
        cases = (("patchy texture", patchy_KT, "clade"), ("peaky texture", peaky_KT, "clade"),
                 ("part", np.stack(part_KT), "trait"))  # fmt: skip
        for name, maps_KT, label in cases:
            row = concepts.inat_table(
                np.arange(6)[None], maps_KT[None], taxa, rules, grid=[cells, cells]
            ).iloc[0]
            assert row["localization"] < rules.trait_max_localization, (cells, name, row.to_dict())
            assert row["label"] == label, (cells, name, row["spread"], row["support"])
        # each test alone: the support turns both textures away, the spread the patchy one
        for change, maps_KT in (({"trait_max_spread": 2.0}, patchy_KT), ({"trait_max_spread": 2.0}, peaky_KT),
                                ({"trait_max_support": 1.0}, patchy_KT)):  # fmt: skip
            row = concepts.inat_table(np.arange(6)[None], maps_KT[None], taxa, replace(rules, **change),
                                      grid=[cells, cells]).iloc[0]  # fmt: skip
            assert row["label"] == "clade", (change, row["spread"], row["support"])
        loose = replace(rules, trait_max_spread=2.0, trait_max_support=1.0)  # the rule before both tests
        for maps_KT in (patchy_KT, peaky_KT):
            row = concepts.inat_table(
                np.arange(6)[None], maps_KT[None], taxa, loose, grid=[cells, cells]
            ).iloc[0]
            assert row["label"] == "trait"
