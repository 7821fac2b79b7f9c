"""The feature browser at paper scale, without GPUs: one SAE of 12,288 features x 16 top images on a 16x16 patch
grid (ViT-B/14 at 224 px), synthetic statistics in the real on-disk formats, built by
vitsae.analysis.browser.build_site; its size on disk, and headless Chromium's time from opening
index.html#/sae/0 to the rendered, filterable table of every feature (goal: under 1 s on 2 cores), to a
feature's view, and to a search keystroke's re-render. Ends with one JSON line.

    python bench/browser.py [--features 12288] [--top-k 16] [--images 20000] [--grid 16] [--repeats 5]

Images: ``--images`` distinct 224 px JPEGs (smooth random colour fields, 8x8 noise upsampled, so their
thumbnails compress like photographs rather than like noise), drawn with replacement into the top-k lists
(feature frequencies follow a power law; 3% of features dead). The build runs with one SAE and so computes no
best matches (those need a second SAE of the setting: ``bench/feature_match.py`` times ``best_cosines``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from vitsae.analysis import browser
from vitsae.analysis.settings import BrowserSettings
from vitsae.analysis.wordnet import imagenet_wnids
from vitsae.data.manifest import BASE_COLUMNS, write_manifest

SAE_ID = "relu_l1-x16-l1_3-lr_0.0004-s0"
PLACE = {"dataset": "imagenet", "model": "model-a", "layer": 10, "sweep": "paper"}


def make_inputs(
    work: Path, n_feat: int, k: int, n_img: int, grid: int
) -> tuple[browser.ShownSAE, browser.Dataset, Path]:
    rng = np.random.default_rng(0)
    wnids = imagenet_wnids()
    root = work / "images"
    labels = rng.integers(0, len(wnids), n_img)
    paths = []
    for i in range(n_img):
        rel = f"train/{wnids[labels[i]]}/{i}.JPEG"
        paths.append(rel)
        f = root / rel
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True)
            small = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
            small.resize((224, 224), Image.Resampling.BICUBIC).save(f, quality=90)
    manifest = pd.DataFrame({c: [""] * n_img for c in BASE_COLUMNS})
    manifest["path"], manifest["label"], manifest["split"] = paths, [wnids[j] for j in labels], "train"
    manifest[["width", "height"]] = (224, 224)
    write_manifest(manifest, work / "manifest.parquet")

    stats = work / "stats"
    stats.mkdir(exist_ok=True)
    freq = 0.05 / (1 + np.arange(n_feat)) ** 0.8
    rng.shuffle(freq)
    dead = rng.random(n_feat) < 0.03
    freq[dead] = 0
    rows_FK = rng.integers(0, n_img, (n_feat, k))
    image_FK = rows_FK.copy()
    image_FK[dead] = -1
    value_FK = np.sort(rng.gamma(2.0, 1.0, (n_feat, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    value_FK[dead] = 0
    T = grid * grid
    map_FKT = np.maximum(rng.normal(0, 1, (n_feat, k, T)), 0).astype(np.float32) * value_FK[:, :, None]
    np.savez(stats / "topk.npz", image_FK=image_FK, row_FK=rows_FK, value_FK=value_FK, map_FKT=map_FKT)
    np.savez(stats / "image_feature.npz", indptr=np.zeros(2, np.int64), indices=np.zeros(0, np.int32),
             max=np.zeros(0, np.float32), n_active=np.zeros(0, np.int32), sum=np.zeros(0, np.float32),
             shape=np.array([1, n_feat]), row=np.zeros(1, np.int64))  # fmt: skip
    feats = pd.DataFrame({"feature": np.arange(n_feat), "n_active_tokens": (freq * 1e6).astype(int), "frequency": freq,
                          "mean_active": rng.gamma(2, 0.5, n_feat), "n_active_images": (freq * 1e5).astype(int),
                          "image_frequency": freq * 4, "max_activation": value_FK[:, 0]})  # fmt: skip
    feats.loc[dead, "n_active_tokens"] = 0
    feats.to_parquet(stats / "features.parquet")
    pd.DataFrame({"image": np.arange(n_img), "row": np.arange(n_img), "label": manifest["label"]}).to_parquet(
        stats / "images.parquet"
    )
    meta = {"d_sae": n_feat, "format_version": 1, "grid": [grid, grid], "k": k, "n_images": n_img,
            "sae": {"sae_id": SAE_ID, "architecture": "relu_l1", "expansion": 16, "l1_coeff": 3.0, "lr": 4e-4,
                    "meta": PLACE}, "split": "train", "store": None}  # fmt: skip
    (stats / "meta.json").write_text(json.dumps(meta))
    labels_F = rng.choice(
        ["unclear", "single-class", "taxonomic", "abstract"], n_feat, p=[0.6, 0.15, 0.15, 0.1]
    )
    top = np.array([wnids[labels[r]] for r in rows_FK[:, 0]])
    table = pd.DataFrame({"sae_id": SAE_ID, **PLACE, "feature": np.arange(n_feat), "n_top": np.where(dead, 0, k),
                          "label": labels_F, "trait": rng.random(n_feat) < 0.05, "frequency": freq,
                          "mean_active": feats["mean_active"], "max_activation": value_FK[:, 0], "top_class": top,
                          "classes": [f"{c}:{k}" for c in top], "lca_name": "entity.n.01",
                          "n_branches": rng.integers(1, 4, n_feat)})  # fmt: skip
    table.to_csv(work / "concepts.csv", index=False)
    (work / "eval.json").write_text(json.dumps({"fvu": 0.21, "l0": 48.0, "eval_dataset": "imagenet"}))
    live = np.nonzero(~dead)[0]
    trials = rng.choice(live, 100, replace=False)
    sample = pd.DataFrame({"trial": [f"t{i + 1:04d}" for i in range(100)], "sample_id": "bench0000000",
                           "seed": 0, **PLACE, "sae_id": SAE_ID, "feature": trials, "label": "abstract",
                           "catch": False, "n_available": len(live)})  # fmt: skip
    sample.to_csv(work / "sample.csv", index=False)
    shown = browser.ShownSAE(str(stats), str(work / "concepts.csv"), str(work / "eval.json"), "", None, None)
    return (
        shown,
        browser.Dataset("imagenet", str(work / "manifest.parquet"), str(root), "imagenet"),
        work / "sample.csv",
    )


def chromium():
    import shutil as sh

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = sh.which("chromium") or sh.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--window-size=1400,1000"):  # fmt: skip
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(sh.which("chromedriver")), options=opts)


def wait(driver, script: str, timeout: float = 60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = driver.execute_script(script)
        if v:
            return v
        time.sleep(0.005)
    raise TimeoutError(script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=int, default=12288)
    ap.add_argument("--top-k", type=int, default=16)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work", default="/tmp/vitsae-bench-browser")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shown, dataset, sample = make_inputs(work, args.features, args.top_k, args.images, args.grid)
    t_inputs = time.perf_counter() - t0
    site = work / "site"
    if site.exists():
        shutil.rmtree(site)
    t0 = time.perf_counter()
    browser.build_site([shown], [dataset], sample, [], ["a", "b"], BrowserSettings(), site)
    t_build = time.perf_counter() - t0
    size = browser.site_size(site)
    n_files = sum(1 for p in site.rglob("*") if p.is_file())
    n_thumbs = sum(1 for _ in (site / "img").rglob("*.jpg"))

    driver = chromium()
    table_ms, feature_ms, search_ms = [], [], []
    live = pd.read_csv(work / "concepts.csv").query("n_top > 0")["feature"].to_numpy()
    try:
        for r in range(args.repeats):
            driver.get("about:blank")
            driver.get((site / "index.html").as_uri() + "#/sae/0")
            table_ms.append(wait(driver, "return window.VITSAE && VITSAE.marks && VITSAE.marks.table"))
            n_rows = len(driver.find_elements("css selector", "tr.feature-row"))
            count_all = driver.find_element("id", "count").text
            f = int(live[(r * 997 + 300) % len(live)])  # a feature whose detail shard is not loaded yet
            driver.execute_script(
                "VITSAE.marks.feature = null; window.__t = performance.now(); "
                "location.hash = '#/sae/0/f/' + arguments[0];",
                f,
            )
            done = wait(driver, "return VITSAE.marks.feature")
            feature_ms.append(done - driver.execute_script("return window.__t"))
            driver.execute_script("location.hash = '#/sae/0'")
            wait(driver, "return document.getElementById('search')")
            t = driver.execute_script(
                """const q = document.getElementById('search'); const t = performance.now();
                   q.value = 'dog.n.01'; q.dispatchEvent(new Event('input')); return performance.now() - t;"""
            )
            search_ms.append(t)
            count_dog = driver.find_element("id", "count").text
    finally:
        driver.quit()
    mb = 1e6
    result = {
        "features": args.features, "top_k": args.top_k, "images": args.images, "grid": args.grid,
        "inputs_s": round(t_inputs, 1), "build_s": round(t_build, 1), "files": n_files, "thumbnails": n_thumbs,
        "data_mb": round(size["data"] / mb, 1), "img_mb": round(size["img"] / mb, 1),
        "rate_mb": round(size["rate"] / mb, 2), "pages_kb": round(size["pages"] / 1e3, 1),
        "site_mb_per_sae": round(sum(size.values()) / mb, 1),
        "open_to_table_ms_median": round(statistics.median(table_ms)), "open_to_table_ms_max": round(max(table_ms)),
        "goal_ms": 1000, "goal_over_measured": round(1000 / statistics.median(table_ms), 2),
        "open_feature_ms_median": round(statistics.median(feature_ms)),
        "search_render_ms_median": round(statistics.median(search_ms), 1),
        "rows_rendered": n_rows, "count_all": count_all, "count_dog": count_dog,
    }  # fmt: skip
    print("| features | images | build s | data MB | thumbnails MB (n) | site MB/SAE | open→table ms (median, max) "
          "| goal/measured | open feature ms | search re-render ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.features} x {args.top_k} | {args.images} | {result['build_s']} | {result['data_mb']} | "
          f"{result['img_mb']} ({n_thumbs}) | {result['site_mb_per_sae']} | {result['open_to_table_ms_median']}, "
          f"{result['open_to_table_ms_max']} | {result['goal_over_measured']} | {result['open_feature_ms_median']} | "
          f"{result['search_render_ms_median']} |")  # fmt: skip
    print(f"table: {count_all}; after searching dog.n.01: {count_dog}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
