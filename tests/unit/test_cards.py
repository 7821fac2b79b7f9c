"""Feature cards (vitsae.analysis.cards) from the real statistics of a tiny store with a planted patch."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from PIL import Image

from vitsae.analysis import cards, maps
from vitsae.analysis import stats as featstats
from vitsae.analysis.feature_files import load_feature_stats
from vitsae.data.manifest import BASE_COLUMNS, write_manifest
from vitsae.data.store import write_arrays
from vitsae.sae.checkpoint import SparseAutoencoder

GRID, N_IMG, K, TILE = 3, 6, 4, 48
N_TOK = 1 + GRID * GRID
PLANTED = (1, 2)  # grid cell (row, col) where feature 0 fires hardest
PRE = {"input_size": [3, 24, 24], "crop_pct": 1.0, "interpolation": "bicubic", "crop_mode": "center"}


@pytest.fixture
def setup(tmp_path):
    """Images 32x24: grey centre, black left and white right 4-pixel bands (outside the model's crop);
    feature 0 fires on the planted cell (and weakly on cell 0), feature 1 on every patch, 2-3 never."""
    root = tmp_path / "data"
    (root / "val" / "c").mkdir(parents=True)
    for i in range(N_IMG):
        pix = np.full((24, 32, 3), 128, np.uint8)
        pix[:, :4], pix[:, -4:] = 0, 255
        Image.fromarray(pix).save(root / "val" / "c" / f"{i}.png")
    manifest = pd.DataFrame({c: [""] * N_IMG for c in BASE_COLUMNS})
    manifest["path"] = [f"val/c/{i}.png" for i in range(N_IMG)]
    manifest[["width", "height"]] = (32, 24)
    write_manifest(manifest, tmp_path / "m.parquet")

    acts = np.full((N_IMG, N_TOK, 4), -1.0)
    planted = 1 + PLANTED[0] * GRID + PLANTED[1]
    acts[:4, planted, 0] = [4.0, 3.0, 2.0, 1.0]
    acts[:4, 1, 0] = 0.5
    acts[:, 1:, 1] = 1.0 + 0.1 * np.arange(N_IMG)[:, None]
    layout = {"n_tokens": N_TOK, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [GRID, GRID]}
    store = write_arrays(
        tmp_path / "s.zarr", {"token_layout": layout, "preprocessing": PRE}, {"val": acts}, 3
    )
    zarr.open_group(str(store), mode="r+")["val_rows"][:] = np.arange(N_IMG)[::-1]  # manifest rows reversed
    sae = SparseAutoencoder(4, 4, "relu_l1", cfg={"hook": {"tokens": "patches"}})
    with torch.no_grad():
        sae.W_enc_DF.copy_(torch.eye(4))
    stats = load_feature_stats(featstats.compute_feature_stats(sae, store, "val", tmp_path / "st", k=K))
    table = pd.DataFrame({"feature": [0, 1, 2, 3], "n_top": [4, 4, 0, 0], "label": ["trait", "clade", "unclear", "unclear"],
                          "localization": [1 / 9, 1.0, np.nan, np.nan], "deepest_rank": ["genus", "order", None, None]})  # fmt: skip
    return stats, table, tmp_path, root


def _redness_per_cell(tile: np.ndarray) -> np.ndarray:
    """Mean (R - G) over each cell of the 3x3 grid of a tile."""
    c = TILE // GRID
    red = tile[:, :, 0].astype(float) - tile[:, :, 1].astype(float)
    return red.reshape(GRID, c, GRID, c).mean(axis=(1, 3))


def test_card_overlays_the_planted_patch_and_carries_its_caption(setup):
    stats, table, tmp_path, root = setup
    out = tmp_path / "cards"
    written = cards.write_cards(stats, table, tmp_path / "m.parquet", root, out, "clip", "relu_l1-x8-s0",
                                labels=["trait", "clade"], n_images=4, preprocessing=PRE, tile=TILE)  # fmt: skip
    png = out / "relu_l1-x8-s0" / "trait" / "feature00000.png"
    assert written == [png, out / "relu_l1-x8-s0" / "clade" / "feature00001.png"]
    with Image.open(png) as im:
        assert im.size[0] == cards.card_size(4, 4, TILE, 0)[0] == 4 * (TILE + 8) + 8
        assert im.size[1] > cards.card_size(4, 4, TILE, 2)[1]  # tiles, values and a caption of > 2 lines
        caption = im.text["caption"]
        pix = np.asarray(im.convert("RGB"))
    assert "feature 0" in caption and "trait" in caption and "localization: 0.1111" in caption
    assert "deepest_rank: genus" in caption
    # the top images in order, each overlaid most strongly at the planted cell
    for i, value in enumerate([4.0, 3.0, 2.0, 1.0]):
        x = 8 + i * (TILE + 8)
        tile = pix[8 : 8 + TILE, x : x + TILE]
        red = _redness_per_cell(tile)
        assert np.unravel_index(red.argmax(), red.shape) == PLANTED, (i, red.round(1))
        # R - G = alpha * 255 * value / (the feature's largest shown value), on a grey pixel
        assert red[PLANTED] == pytest.approx(0.6 * 255 * value / 4.0, abs=1.0)
        # a weak cell is tinted, a silent one is not
        assert red[0, 0] == pytest.approx(0.6 * 255 * 0.5 / 4.0, abs=1.0) and red[2, 0] == 0
        # the model's crop: the black and white bands outside the centre crop are gone
        assert tile.min() > 20 and tile.max() < 250
    side = json.loads(png.with_suffix(".json").read_text())
    assert side["caption"] == caption and side["row"]["label"] == "trait" and side["rank"] == 1
    assert [t["row"] for t in side["top_images"]] == [5, 4, 3, 2]  # manifest rows through val_rows
    assert side["top_images"][0]["path"] == "val/c/5.png"
    index = pd.read_csv(out / "relu_l1-x8-s0" / "index.csv")
    assert list(index["feature"]) == [0, 1] and list(index["label"]) == ["trait", "clade"]


def test_strongest_features_order_and_errors(setup):
    stats, table, tmp_path, _ = setup
    table2 = table.assign(label=["trait", "trait", "trait", "unclear"], score=[0.1, 0.9, 0.5, 0.0])
    # by mean top value: 2.5, then 1.35, then a feature that never fires
    assert cards.strongest(table2, stats, "trait", 3) == [0, 1, 2]
    assert cards.strongest(table2, stats, "trait", 2, order_by="score") == [1, 2]
    with pytest.raises(KeyError, match="order_by 'nope'"):
        cards.strongest(table2, stats, "trait", 2, order_by="nope")
    with pytest.raises(FileNotFoundError, match="set the dataset's root"):
        cards.write_cards(
            stats, table, tmp_path / "m.parquet", tmp_path / "elsewhere", tmp_path / "o", "m", "s"
        )


def test_pieces():
    assert maps.map_grid(np.arange(4.0), [2, 2]).tolist() == [[0, 1], [2, 3]]
    assert maps.map_grid(np.array([5.0, 7.0]), [2, 2], np.array([3, 0])).tolist() == [[7, 0], [0, 5]]
    assert maps.map_grid(np.ones(1), None) is None
    with pytest.raises(ValueError, match="does not fill the 2x2 grid"):
        maps.map_grid(np.ones(3), [2, 2])
    im = Image.new("RGB", (40, 30), (10, 20, 30))
    view = cards.model_view(im, {"input_size": [3, 16, 16], "crop_pct": 0.875})  # shorter side 18, crop 16
    assert view.size == (16, 16) and cards.model_view(im).size == (30, 30)
    heat = np.asarray(
        cards.overlay(Image.new("RGB", (4, 4), (0, 0, 0)), np.array([[1.0, 0], [0, 0]]), 1.0, 0.5)
    )
    assert (
        heat[0, 0].tolist() == [128, 0, 0]
        and heat[1, 1].tolist() == [128, 0, 0]
        and heat[3, 3].tolist() == [0, 0, 0]
    )
