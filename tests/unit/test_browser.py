"""The feature browser's site (vitsae.analysis.browser) from real statistics of a tiny store: what each data
file holds, best matches against a brute-force reference, the rating page's blindness, thumbnails written once."""

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from vitsae.analysis import browser, maps
from vitsae.analysis import stats as featstats
from vitsae.analysis.feature_files import load_feature_stats
from vitsae.analysis.settings import BrowserSettings
from vitsae.data.manifest import BASE_COLUMNS, write_manifest
from vitsae.data.store import write_arrays
from vitsae.sae.checkpoint import SparseAutoencoder

GRID, N_IMG, D, F, K = 3, 8, 6, 5, 4
N_TOK = 1 + GRID * GRID
PRE = {"input_size": [3, 24, 24], "crop_pct": 1.0, "interpolation": "bicubic", "crop_mode": "center"}
WNIDS = ["n02085620", "n02123045", "n04487394", "n02676566"]  # chihuahua, tabby, trombone, acoustic guitar


def data(site, rel):
    text = (site / rel).read_text()
    assert text.startswith("VITSAE.put(")
    return json.loads(text[text.index(",") + 1 : text.rindex(")")])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Two SAEs (seeds 0 and 1 of one setting) on one store; feature 2 of each dead; the rating sample names
    features of both."""
    tmp = tmp_path_factory.mktemp("browser")
    root = tmp / "data"
    rng = np.random.default_rng(0)
    labels = [WNIDS[i % 4] for i in range(N_IMG)]
    for i, lab in enumerate(labels):
        (root / "val" / lab).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            root / "val" / lab / f"{i}.png"
        )
    manifest = pd.DataFrame({c: [""] * N_IMG for c in BASE_COLUMNS})
    manifest["path"] = [f"val/{lab}/{i}.png" for i, lab in enumerate(labels)]
    manifest["label"] = labels
    manifest[["width", "height"]] = (24, 24)
    write_manifest(manifest, tmp / "m.parquet")
    acts = rng.normal(size=(N_IMG, N_TOK, D))
    layout = {"n_tokens": N_TOK, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [GRID, GRID]}
    store = write_arrays(tmp / "s.zarr", {"token_layout": layout, "preprocessing": PRE}, {"val": acts}, 4)
    shown = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        sae_id = f"relu_l1-x1-s{seed}"
        meta = {"dataset": "toy", "model": "secretmodel", "layer": 3, "sweep": "paper"}
        sae = SparseAutoencoder(D, F, "relu_l1", cfg={
            "hook": {"tokens": "patches"}, "sae_id": sae_id, "meta": meta, "d_in": D, "d_sae": F,
            "architecture": "relu_l1", "normalisation": {"scale": 1.0}})  # fmt: skip
        with torch.no_grad():
            sae.W_enc_DF.copy_(torch.randn(D, F))
            sae.W_enc_DF[:, 2] = 0
            sae.b_enc_F[2] = -10.0  # feature 2 never fires
            sae.W_dec_FD.copy_(torch.randn(F, D))
        sae.save(tmp / "sae" / sae_id)
        sae_dir = tmp / "sae" / sae_id
        stats_dir = featstats.compute_feature_stats(sae, store, "val", tmp / "st" / sae_id, k=K)
        st = load_feature_stats(stats_dir)
        n_top = (st.top_image_FK >= 0).sum(1)
        table = pd.DataFrame({"sae_id": sae_id, **meta, "feature": range(F), "n_top": n_top,
                              "label": ["abstract", "taxonomic", "unclear", "abstract", "single-class"],
                              "trait": [False, True, False, False, False],
                              "frequency": st.features.sort_values("feature")["frequency"].to_numpy(),
                              "mean_active": 0.5, "max_activation": 1.0, "lca_name": "entity.n.01"})  # fmt: skip
        table.to_csv(tmp / f"c{seed}.csv", index=False)
        ev = tmp / f"e{seed}.json"
        ev.write_text(json.dumps({"fvu": 0.25 + seed, "l0": 3.5, "eval_dataset": "toy"}))
        shown.append(
            browser.ShownSAE(
                str(stats_dir), str(tmp / f"c{seed}.csv"), str(ev), str(sae_dir), str(store), None
            )
        )
    sample = pd.DataFrame({"trial": ["t0001", "t0002"], "sample_id": "abc123abc123", "seed": 0, "dataset": "toy",
                           "model": "secretmodel", "layer": 3, "sweep": "paper",
                           "sae_id": ["relu_l1-x1-s1", "relu_l1-x1-s0"], "feature": [0, 3],
                           "label": ["abstract", "abstract"], "catch": False, "n_available": 2})  # fmt: skip
    sample.to_csv(tmp / "sample.csv", index=False)
    settings = BrowserSettings(table_shard=64, detail_shard=16, thumbnail_px=16)
    out = browser.build_site(shown, [browser.Dataset("toy", str(tmp / "m.parquet"), str(root), "imagenet")],
                             tmp / "sample.csv", [], ["semantic abstraction", "text"], settings, tmp / "site")  # fmt: skip
    return out, shown, tmp


def test_index_and_feature_table_hold_each_saes_numbers(site):
    out, shown, _ = site
    index = data(out, "data/index.js")
    assert [(s["sae_id"], s["seed"], s["setting"], s["fvu"]) for s in index["saes"]] == [
        ("relu_l1-x1-s0", 0, "relu_l1-x1", 0.25), ("relu_l1-x1-s1", 1, "relu_l1-x1", 1.25)]  # fmt: skip
    for k, s in enumerate(shown):
        st = load_feature_stats(s.stats)
        table = data(out, f"data/s{k}/t0.js")
        assert table["feature"] == list(range(F))
        assert table["n_top"] == (st.top_image_FK >= 0).sum(1).tolist()
        assert table["n_top"][2] == 0  # the dead feature
        # classes: the top images' classes, commonest first (ids into the dataset's class list)
        classes = [c[0] for c in data(out, f"data/classes-{index['saes'][k]['dataset_index']}.js")["classes"]]
        manifest = pd.read_parquet(site[2] / "m.parquet")
        rows = st.top_row_FK[0][st.top_image_FK[0] >= 0]
        assert {classes[c] for c in table["classes"][0]} == set(manifest["label"].to_numpy()[rows])


def test_feature_detail_has_its_images_maps_and_wordnet_context(site):
    out, shown, _ = site
    st = load_feature_stats(shown[0].stats)
    detail = data(out, "data/s0/d0.js")
    assert "2" not in detail["features"]  # dead: no view
    d = detail["features"]["0"]
    slots = np.nonzero(st.top_image_FK[0] >= 0)[0]
    assert d["img"] == st.top_row_FK[0, slots].tolist()
    maps = np.frombuffer(base64.b64decode(d["m"]), np.uint8).reshape(len(slots), GRID * GRID)
    ref = st.top_map_FKT[0, slots] / st.top_map_FKT[0, slots].max() * 255
    np.testing.assert_allclose(maps, np.rint(ref), atol=1)
    assert d["row"]["label"] == "abstract" and "model" not in d["row"] and "sae_id" not in d["row"]
    for r in d["img"]:  # every thumbnail exists, once per image, at most thumbnail_px
        with Image.open(out / f"{detail['img']}{r}.jpg") as im:
            assert max(im.size) == 16
    classes = data(out, "data/classes-0.js")["classes"]
    chihuahua = next(c for c in classes if c[0] == "n02085620")
    assert chihuahua[1] == "chihuahua.n.03" and chihuahua[2][0].startswith("entity.n.01")
    assert any(p.startswith("dog.n.01") for p in chihuahua[2])
    assert len(list((out / "img").rglob("*.jpg"))) <= N_IMG


def test_best_match_is_the_live_feature_with_the_largest_decoder_cosine(site):
    out, shown, _ = site
    from vitsae.sae import checkpoint

    U = [browser.decoders.unit_rows(checkpoint.load(s.sae_dir).W_dec_FD.detach().numpy().astype(np.float64))
         for s in shown]  # fmt: skip
    live1 = np.array([f for f in range(F) if f != 2])
    for f, d in data(out, "data/s0/d0.js")["features"].items():
        [(b, g, cos)] = d["match"]
        assert b == 1
        want = live1[np.argmax(U[1][live1] @ U[0][int(f)])]
        assert g == want and cos == pytest.approx(float(U[1][want] @ U[0][int(f)]), abs=2e-3)


def test_rating_data_hides_model_sae_and_label(site):
    out = site[0]
    trials = data(out, "rate/trials.js")
    assert [t["id"] for t in trials["trials"]] == ["t0001", "t0002"]
    assert trials["sample_id"] == "abc123abc123" and trials["grid"] == browser.RATING_GRID
    for rel in ("rate.html", "rate/trials.js", "assets/rate.js", "assets/common.js"):
        text = re.sub(r'"m":"[A-Za-z0-9+/=]*"', "", (out / rel).read_text())  # maps are bytes, not words
        for word in ("secretmodel", "relu_l1", "paper", "toy"):
            assert word not in text, (rel, word)
    # a trial is its opaque id, its images and its maps: no label, feature or value
    assert all(set(t) == {"id", "img", "m"} for t in trials["trials"])
    # its images are copies named by the trial (no dataset, view or manifest row in the path)
    for t in trials["trials"]:
        assert t["img"] == [f"rate/img/{t['id']}/{i}.jpg" for i in range(len(t["img"]))] and t["img"]
        assert all((out / p).is_file() for p in t["img"])


def test_resample_is_bilinear_and_keeps_a_linear_ramp():
    g = np.add.outer(np.arange(4.0), 2 * np.arange(4.0))  # linear in both axes
    r = maps.resample(g, 8)
    # cell centres of the 8-grid at (i + 0.5) * 4/8 - 0.5 in the 4-grid's coordinates (clamped at the border)
    c = np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    np.testing.assert_allclose(r, np.add.outer(c, 2 * c), atol=1e-12)
    assert maps.resample(np.ones((7, 7)), 24).shape == (24, 24)


def test_a_missing_image_names_the_file(site, tmp_path):
    _, shown, tmp = site
    settings = BrowserSettings(thumbnail_px=16)
    pd.DataFrame(columns=["trial", "sample_id", "seed", "dataset", "model", "layer", "sweep", "sae_id",
                          "feature", "label", "catch", "n_available"]).to_csv(tmp_path / "s.csv", index=False)  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"image .*nowhere.* does not exist; set the dataset's root"):
        browser.build_site(shown[:1], [browser.Dataset("toy", str(tmp / "m.parquet"), str(tmp / "nowhere"), "imagenet")],
                           tmp_path / "s.csv", [], ["a", "b"], settings, tmp_path / "site")  # fmt: skip
    assert not (tmp_path / "site").exists()  # nothing half-written published
