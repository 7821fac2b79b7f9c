"""The feature browser and the blinded rating page in headless Chromium, opened from the file system, and two
raters' exported files fed through the DAG's ratings rule (κ and precision against values worked out here)."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from workflow_helpers import DEMO_CONFIG, browser, snakemake

from vitsae import layout
from vitsae.analysis import decoders
from vitsae.analysis.feature_files import load_feature_stats
from vitsae.config import build, validate
from vitsae.sae import checkpoint

pytestmark = pytest.mark.e2e

RUN = build(validate(yaml.safe_load(DEMO_CONFIG.read_text())))
SITE = "results/browser"


def data(site: Path, rel: str):
    """The object a site data script hands to VITSAE.put."""
    text = (site / rel).read_text()
    return json.loads(text[text.index(",") + 1 : text.rindex(")")])


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(driver, css: str, timeout: float = 20):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def wait_until(driver, check, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: check(d))


def visible_features(driver) -> list[int]:
    from selenium.webdriver.common.by import By

    return [
        int(r.get_attribute("data-feature")) for r in driver.find_elements(By.CSS_SELECTOR, "tr.feature-row")
    ]


def clear(field) -> None:
    """Empty an input as a user does (``clear()`` fires no input event)."""
    from selenium.webdriver.common.keys import Keys

    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)


def count(driver) -> int:
    from selenium.webdriver.common.by import By

    return int(driver.find_element(By.ID, "count").text.split()[0])


def test_leaving_a_table_while_its_shards_load_and_coming_back_loads_each_row_once(demo, tmp_path):
    """Every data script is delayed by 1.5 s; the table is opened, left for the index and opened again
    before its shards arrive: one load of each shard, so the count is the live features, not twice."""
    from selenium.webdriver.common.by import By

    site = demo / SITE
    keys = layout.browser_keys(RUN)
    sae = data(site, "data/index.js")["saes"][0]
    table = pd.read_csv(demo / layout.CONCEPTS.format(**keys[0]))
    n_live = int(((table["sae_id"] == sae["sae_id"]) & (table["n_top"] > 0)).sum())
    driver = browser(tmp_path)
    try:
        driver.get((site / "index.html").as_uri())
        driver.execute_script("""
            var load = VITSAE.load; window.loads = [];
            VITSAE.load = function (name, src) {
              window.loads.push(name);
              return new Promise(function (r) { setTimeout(r, 1500); }).then(function () { return load(name, src); });
            };""")
        driver.execute_script("location.hash = '#/sae/0'")
        driver.execute_script("location.hash = '#/'")
        driver.execute_script("location.hash = '#/sae/0'")
        wait_until(driver, lambda d: "loading" not in d.find_element(By.ID, "count").text)
        assert count(driver) == n_live
        assert driver.find_element(By.ID, "count").text.startswith(f"{n_live} of {n_live} live features")
        shard_loads = [n for n in driver.execute_script("return window.loads") if "/t" in n]
        assert shard_loads == [f"s0/t{j}" for j in range(sae["table_shards"])]
    finally:
        driver.quit()


def test_browse_sort_filter_search_open_a_feature_and_follow_its_match(demo, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = demo / SITE
    index = data(site, "data/index.js")
    keys = layout.browser_keys(RUN)
    assert [(s["dataset"], s["model"], s["sweep"], s["sae_id"]) for s in index["saes"]] == [
        (k["dataset"], k["model"], k["sweep"], k["sae_id"]) for k in keys
    ]
    k = 0  # the first SAE (ImageNet demo): its concept table and statistics are the reference here
    sae = index["saes"][k]
    table = pd.read_csv(demo / layout.CONCEPTS.format(**keys[k]))
    table = table[table["sae_id"] == sae["sae_id"]].set_index("feature").sort_index()
    live = table[table["n_top"] > 0]
    stats = load_feature_stats(demo / layout.FEATURES.format(**keys[k]))

    driver = browser(tmp_path)
    try:
        driver.get((site / "index.html").as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.sae-row")
        assert len(rows) == len(keys)
        assert rows[k].text.split()[:2] == [sae["dataset"], sae["model"]]
        rows[k].find_element(By.TAG_NAME, "a").click()
        wait_until(driver, lambda d: "loading" not in d.find_element(By.ID, "count").text)
        assert count(driver) == len(live)
        # default order: frequency, highest first (ties by feature)
        expected = live.sort_values("frequency", ascending=False, kind="stable").index[:200].tolist()
        assert visible_features(driver) == expected
        # sort by mean activation (descending, then ascending)
        driver.find_element(By.CSS_SELECTOR, "th[data-col=mean_active]").click()
        by_mean = live.sort_values("mean_active", ascending=False, kind="stable")
        assert visible_features(driver)[:50] == by_mean.index[:50].tolist()
        driver.find_element(By.CSS_SELECTOR, "th[data-col=mean_active]").click()
        assert (
            visible_features(driver)[:50]
            == live.sort_values("mean_active", kind="stable").index[:50].tolist()
        )
        # filter by label and by frequency
        label = "abstract"
        Select(driver.find_element(By.ID, "label-filter")).select_by_value(label)
        assert count(driver) == int((live["label"] == label).sum()) > 0
        # the page holds each table value to 6 significant digits: compare with what it holds (a median
        # equal to a feature's full-precision frequency would otherwise sit above that feature's value)
        shown = live["frequency"].map(lambda v: float(f"{v:.6g}"))
        threshold = float(shown[live["label"] == label].median())
        driver.find_element(By.ID, "min-frequency").send_keys(repr(threshold))
        assert count(driver) == int(((live["label"] == label) & (shown >= threshold)).sum())
        clear(driver.find_element(By.ID, "min-frequency"))
        assert count(driver) == int((live["label"] == label).sum())
        Select(driver.find_element(By.ID, "label-filter")).select_by_value("")
        # search by a WordNet synset above some classes: the features whose top classes fall under it
        classes = data(site, f"data/classes-{sae['dataset_index']}.js")["classes"]
        manifest = pd.read_parquet(demo / layout.MANIFEST.format(dataset=sae["dataset"]))
        labels_N = manifest["label"].astype(str).to_numpy()
        synset = "dog.n.01"
        under = {lab for lab, _name, path in classes if any(p.startswith(synset) for p in path)}
        assert 0 < len(under) < len(classes)
        want = 0
        for f in live.index:
            rows_f = stats.top_row_FK[f][stats.top_image_FK[f] >= 0]
            top8 = [c for c, _ in Counter(labels_N[rows_f].tolist()).most_common()[:8]]
            want += bool(set(top8) & under)
        driver.find_element(By.ID, "search").send_keys(synset)
        assert count(driver) == want, (count(driver), want, sorted(under)[:5])
        assert 0 < want < len(live)
        # open a feature: its top images are drawn with the patch map where the statistics put it
        f = visible_features(driver)[0]
        driver.find_element(By.CSS_SELECTOR, f"tr.feature-row[data-feature='{f}'] a").click()
        wait_for(driver, "#feature-view h2")
        slots = np.nonzero(stats.top_image_FK[f] >= 0)[0]
        wait_until(
            driver,
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#top-images canvas[data-drawn]")) == len(slots),
        )
        grid = stats.meta["grid"]
        map0 = stats.top_map_FKT[f, slots[0]].reshape(grid)
        hot, cold = np.unravel_index(map0.argmax(), grid), np.unravel_index(map0.argmin(), grid)
        assert map0[hot] > 0 and map0[cold] < 0.2 * map0[hot]

        # the first tile as drawn (a screenshot: a canvas holding a file:// image cannot be read back)
        canvas = driver.find_element(By.CSS_SELECTOR, "#top-images canvas")
        shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"), dtype=np.int64)

        def redness(cell) -> float:  # red minus green at the centre of a grid cell
            y = int((cell[0] + 0.5) * shot.shape[0] / grid[0])
            x = int((cell[1] + 0.5) * shot.shape[1] / grid[1])
            return float(shot[y, x, 0] - shot[y, x, 1])

        assert redness(hot) > redness(cold) + 40
        body = driver.find_element(By.ID, "feature-view").text
        assert f"Feature {f}" in body and table.loc[f, "label"] in body
        top_class = Counter(labels_N[stats.top_row_FK[f, slots]].tolist()).most_common(1)[0][0]
        context = driver.find_element(By.ID, "class-context").text
        assert top_class in context and "entity.n.01" in context  # the class and its WordNet path
        # its best match in each other SAE of the setting: the largest decoder cosine among live features
        links = driver.find_elements(By.CSS_SELECTOR, "#matches a.match")
        assert len(links) == 3  # the other seed, and both seeds on the other dataset
        target = links[0].get_attribute("href").split("#/sae/")[1]
        b, g = int(target.split("/f/")[0]), int(target.split("/f/")[1])
        U_a = decoders.unit_rows(
            checkpoint.load(demo / layout.SAE_DIR.format(**keys[k])).W_dec_FD.detach().numpy()
        )
        stats_b = load_feature_stats(demo / layout.FEATURES.format(**keys[b]))
        live_b = np.nonzero(stats_b.features.sort_values("feature")["n_active_tokens"].to_numpy() > 0)[0]
        U_b = decoders.unit_rows(
            checkpoint.load(demo / layout.SAE_DIR.format(**keys[b])).W_dec_FD.detach().numpy()
        )
        assert g == int(live_b[np.argmax(U_b[live_b] @ U_a[f])])
        links[0].click()
        wait_until(
            driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#feature-view[data-feature='{g}'] h2")
        )
        assert driver.current_url.endswith(f"#/sae/{b}/f/{g}")
        errors = console_errors(driver)  # (reading the log empties it)
        assert not errors, errors
    finally:
        driver.quit()


MODEL_WORDS = ("clip", "dinov2", "dino", "vit_", "ViT-", *RUN.models)


def rate(driver, site: Path, rater: str, pick) -> None:
    """Rate the first ten trials as ``rater``, ``pick(i, trial_id)`` giving each category; export."""
    from selenium.webdriver.common.by import By

    driver.get((site / "rate.html").as_uri())
    wait_for(driver, "#rater").clear()
    driver.find_element(By.ID, "rater").send_keys(rater)
    driver.find_element(By.ID, "begin").click()
    for i in range(10):
        trial = wait_for(driver, "#trial-images").get_attribute("data-trial")
        assert trial == f"t{i + 1:04d}"
        cat = pick(i, trial)
        driver.find_element(By.CSS_SELECTOR, f"input[name=category][value='{cat}']").click()
        driver.find_element(By.ID, "save-next").click()
        wait_until(
            driver, lambda d, t=trial: d.find_element(By.ID, "trial-images").get_attribute("data-trial") != t
        )
    # blindness: the page as rendered names no model, SAE or label
    page = driver.page_source
    for word in (*MODEL_WORDS, "relu_l1", "sweep", "paper"):
        assert word.lower() not in page.lower(), word
    driver.find_element(By.ID, "export").click()


def test_rating_page_is_blind_and_two_raters_exports_reach_the_ratings_table(demo, tmp_path):
    site = demo / SITE
    sample = pd.read_csv(demo / layout.RATING_SAMPLE)
    # the rating page's files name no model, SAE, feature or label
    for rel in ("rate.html", "rate/trials.js", "assets/rate.js", "assets/common.js", "assets/style.css"):
        # the maps are base64 bytes, not words (any four letters occur in megabytes of them by chance)
        text = re.sub(r'"m":"[A-Za-z0-9+/=]*"', "", (site / rel).read_text()).lower()
        for word in (*MODEL_WORDS, *sample["sae_id"].unique()):
            assert word.lower() not in text, (rel, word)
    trials = data(site, "rate/trials.js")
    assert [t["id"] for t in trials["trials"]] == sample["trial"].tolist()
    assert trials["sample_id"] == sample["sample_id"].iat[0]
    categories = list(RUN.rating.categories)
    correct = dict(RUN.rating.correct)
    key = sample.set_index("trial")

    def truthful(i, trial):  # rater A confirms every label, calls catch trials uninterpretable
        label = key.loc[trial, "label"]
        return RUN.rating.catch_category if label == "catch" else correct[label][0]

    def contrary(i, trial):  # rater B agrees on even trials, says "text" on odd ones
        return truthful(i, trial) if i % 2 == 0 else "text"

    downloads = tmp_path / "downloads"
    driver = browser(tmp_path, downloads)
    try:
        rate(driver, site, "alice", truthful)
        rate(driver, site, "bob", contrary)
        wait_until(
            driver, lambda d: (downloads / "alice.json").is_file() and (downloads / "bob.json").is_file()
        )
        errors = console_errors(driver)  # (reading the log empties it)
        assert not errors, errors
    finally:
        driver.quit()
    exported = {r: json.loads((downloads / f"{r}.json").read_text()) for r in ("alice", "bob")}
    for name, doc in exported.items():
        assert doc["rater"] == name and doc["sample_id"] == sample["sample_id"].iat[0]
        assert [r["trial"] for r in doc["ratings"]] == [f"t{i:04d}" for i in range(1, 11)]
        text = json.dumps(doc).lower()
        for word in (*MODEL_WORDS, *sample["sae_id"].unique()):
            assert word.lower() not in text, word
    assert categories  # (the categories the page offered are the config's)

    # Through the DAG: a working directory holding the demo's sample and concept tables and the two files.
    work = tmp_path / "work"
    for rel in [layout.RATING_SAMPLE, *layout.concept_tables(RUN)]:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(demo / rel, work / rel)
    (work / RUN.rating.dir).mkdir()
    for name in exported:
        shutil.copy2(downloads / f"{name}.json", work / RUN.rating.dir / f"{name}.json")
    snakemake(work, layout.RATINGS, "--configfile", str(DEMO_CONFIG), "--allowed-rules", "ratings")
    got = pd.read_csv(work / layout.RATINGS)
    agreement = pd.read_csv(work / layout.RATING_AGREEMENT)

    # By hand: ten trials, A always "right", B right on trials 1, 3, 5, 7, 9 (i even) and "text" on the others.
    rated = key.iloc[:10]
    a = [truthful(i, t) for i, t in enumerate(rated.index)]
    b = [contrary(i, t) for i, t in enumerate(rated.index)]
    p_o = np.mean([x == y for x, y in zip(a, b)])
    p_e = sum((a.count(c) / 10) * (b.count(c) / 10) for c in set(a) | set(b))
    cohen = agreement[agreement["kind"] == "cohen"]
    assert len(cohen) == 1 and cohen["n_items"].iat[0] == 10
    assert cohen["kappa"].iat[0] == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-5)  # (written to 6 digits)
    for (dataset, model, label), group in rated.groupby(["dataset", "model", "label"]):
        positions = [rated.index.get_loc(t) for t in group.index]
        # per trial: A right (1), B right on even positions: p_f = (1 + [i even]) / 2
        want = np.mean([(1 + (i % 2 == 0)) / 2 for i in positions])
        row = got[(got["dataset"] == dataset) & (got["model"] == model) & (got["label"] == label)]
        assert len(row) == 1
        assert row["n_rated"].iat[0] == len(positions)
        assert row["precision"].iat[0] == pytest.approx(want, abs=1e-5)
        if label == "catch":  # scored against rating.catch_category; no share of a null feature to correct
            assert np.isnan(row["label_share"].iat[0]) and np.isnan(row["corrected_share"].iat[0])
            continue
        # the label's share of the model's live features, pooled over its SAEs in the sampled sweep
        concepts = pd.concat(pd.read_csv(demo / layout.CONCEPTS.format(dataset=dataset, model=model, layer=lay,
                                                                       sweep=sw))
                             for d_, m_, lay, sw in layout.rating_keys(RUN) if (d_, m_) == (dataset, model))  # fmt: skip
        alive = concepts[concepts["n_top"] > 0]
        has = alive["trait"].astype(bool) if label == "trait" else alive["label"] == label
        assert row["label_share"].iat[0] == pytest.approx(has.mean(), abs=1e-5)
        assert row["corrected_share"].iat[0] == pytest.approx(want * has.mean(), abs=1e-5)
    unrated = got[~got.set_index(["dataset", "model", "label"]).index.isin(
        list(rated.groupby(["dataset", "model", "label"]).groups))]  # fmt: skip
    assert (unrated["n_rated"] == 0).all() and unrated["precision"].isna().all()
    assert re.fullmatch(r"[0-9a-f]{12}", sample["sample_id"].iat[0])
