"""Provenance on the real demo DAG: the lineage page, verification failing where it must, the RO-Crate,
and Snakemake's report and the lineage page rendered in headless Chromium."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from workflow_helpers import DEMO_CONFIG, browser, copy_tree, snakemake

from vitsae.config import build, validate
from vitsae.layout import FIGURES, model_layers, transfer_saes
from vitsae.provenance.records import RECORD_SUFFIX, read_record, record_path

pytestmark = pytest.mark.e2e

FIGURE = "results/figures/transfer.pdf"
VITSAE = Path(sys.executable).parent / "vitsae"  # the console script pip installs beside this python


def verify(demo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VITSAE), "verify", FIGURE], cwd=demo, capture_output=True, text=True, check=False
    )


def recorded_artifacts(demo: Path) -> set[str]:
    """Every artifact with a record under results/, as its workdir-relative path."""
    crate = demo / "results/provenance/ro-crate"  # holds copies of the records, not artifacts
    return {
        str(p.relative_to(demo))[: -len(RECORD_SUFFIX)]
        for p in (demo / "results").rglob(f"*{RECORD_SUFFIX}")
        if crate not in p.parents
    }


def test_lineage_page_of_the_figure(demo):
    lin = json.loads((demo / "results/provenance/transfer.json").read_text())
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    assert lin["root"] == FIGURE and lin["title"] == FIGURES["transfer"]
    records = {p for p, n in lin["nodes"].items() if not n.get("leaf") and not n.get("missing")}
    # down to every manifest, store, SAE (weights and cfg), evaluation, baseline and downstream table, and
    # every model's weights
    results = demo / "results"
    # the SAEs of transfer.saes (the paper sweep; the control sweeps are not in the transfer figure)
    upstream = {
        str(p.relative_to(demo))
        for p in [
            *results.glob("manifests/*.parquet"),
            *results.glob("activations/*/*/layer*.zarr"),
            *results.glob("sae/*/*/*/paper/*/sae.safetensors"),
            *results.glob("sae/*/*/*/paper/*/cfg.json"),
            *results.glob("eval/*/*/*/paper/**/*.json"),
            *results.glob("transfer/baselines/*/layer*.csv"),  # finding 3's baselines
            *results.glob("transfer/downstream/*/*/layer*.csv"),  # and downstream accuracies
            results / "figures/transfer.pdf",
        ]
        if not p.name.endswith(RECORD_SUFFIX)
        and not any(f"/{b}/" in str(p) for b in cfg["claims"]["baselines"])  # the baseline model: no transfer
    }
    assert records == upstream
    compared = [m for m in cfg["models"] if m not in cfg["claims"]["baselines"]]
    assert {f"model:{m}" for m in compared} <= set(lin["nodes"])
    assert not {f"model:{b}" for b in cfg["claims"]["baselines"]} & set(lin["nodes"])
    for m in compared:
        weights = lin["nodes"][f"model:{m}"]["weights"]
        assert weights["source"] == "random" and weights["state_sha256"].startswith("sha256:")
    page = (demo / "results/provenance/transfer.html").read_text()
    for p in records:
        assert f'data-path="{p}"' in page, p
    n_images = sum(1 for n in lin["nodes"].values() if n.get("leaf") and n.get("kind") != "model")
    n_files = sum(
        1
        for p in (demo / "results/datasets").rglob("*")  # images, iNat's JSON, the multi-labels; no markers
        if p.is_file() and not p.name.startswith(".")
    )
    assert (
        n_images == n_files == 1402 + 1 and page.count('class="raw"') == 2
    )  # one collapsed table per manifest
    assert len(page) < 1_000_000, len(
        page
    )  # 1.4 MB before raw inputs were collapsed, with a third of the SAEs


def test_verify_passes_then_names_a_flipped_byte_a_deleted_store_and_edited_code(demo, tmp_path):
    ok = verify(demo)
    assert ok.returncode == 0 and ok.stdout.startswith("ok:"), ok.stdout + ok.stderr

    # (a) one byte of an SAE checkpoint changed
    sae = next((demo / "results/sae").rglob("sae.safetensors"))
    sae_rel = str(sae.relative_to(demo))
    original, stat = sae.read_bytes(), sae.stat()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    try:
        sae.write_bytes(bytes(flipped))
        out = verify(demo)
        assert out.returncode == 1, out.stdout + out.stderr
        assert f"changed: {sae_rel} (recorded {read_record(sae)['digest']}" in out.stdout
        assert sum(sae_rel in line for line in out.stdout.splitlines()) == 1
    finally:  # bytes and mtime as they were: the demo is shared with the rerun tests
        sae.write_bytes(original)
        os.utime(sae, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    # (b) a store deleted (moved aside, and back)
    store = demo / "results/activations/inat-demo/clip-b16/layer10.zarr"
    aside = tmp_path / "aside.zarr"
    shutil.move(store, aside)
    try:
        out = verify(demo)
        assert out.returncode == 1
        assert "missing: results/activations/inat-demo/clip-b16/layer10.zarr" in out.stdout.splitlines()
    finally:
        shutil.move(aside, store)

    # (c) the trainer's source edited without rerunning, in a copy of the tree (the checkout is never
    #     edited): verify from that copy names every artifact the trainer made, and only those
    tree = copy_tree(tmp_path / "tree")
    trainer = tree / "vitsae/sae/train.py"
    trainer.write_bytes(trainer.read_bytes() + b"\n# an edit nobody reran\n")
    out = subprocess.run([sys.executable, "-m", "vitsae.cli", "verify", FIGURE], cwd=demo, capture_output=True,
                         text=True, check=False, env={**os.environ, "PYTHONPATH": str(tree)})  # fmt: skip
    assert out.returncode == 1
    changed = [line for line in out.stdout.splitlines() if line.startswith("code changed:")]
    # every SAE checkpoint and cfg.json in the lineage was made by vitsae.sae.train; nothing else was
    assert any(f"code changed: {sae_rel} was made by vitsae.sae.train" in line for line in changed), (
        out.stdout
    )
    # two files (sae.safetensors, cfg.json) of each SAE the transfer figure shows
    run = build(validate(yaml.safe_load(DEMO_CONFIG.read_text())))
    n_saes = sum(len(transfer_saes(run, m, layer)) for m, layer in model_layers(run))
    assert n_saes == 16  # 2 datasets x 2 compared models x 4 SAEs (the baseline model has no transfer)
    assert all("vitsae.sae.train" in line for line in changed) and len(changed) == 2 * n_saes, out.stdout
    assert verify(demo).returncode == 0  # the checkout's own code: still verified


def test_verify_names_a_changed_config_key_an_edited_record_and_a_rewritten_chunk(demo, tmp_path):
    # (a) the config changed without a rerun: named key by key, against the run's own config by default
    ok = verify(demo)
    assert ok.returncode == 0 and f"comparing each record's config with {DEMO_CONFIG}" in ok.stderr, ok.stderr
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    was = cfg["sweeps"]["paper"]["lr"]
    cfg["sweeps"]["paper"]["lr"] = 0.5
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([str(VITSAE), "verify", FIGURE, "--configfile", str(changed)], cwd=demo,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"config changed: sweeps.paper.lr: recorded {json.dumps(was)}, now 0.5 (in "
    ), out.stdout

    # (b) a value inside an SAE's record edited (the l1 coefficient it was trained with)
    sae = next((demo / "results/sae").rglob("paper/*/sae.safetensors"))
    path = record_path(sae)
    original, stat = path.read_bytes(), path.stat()
    rec = json.loads(original)

    def bump(node):  # the first float l1_coeff in the params, times ten
        if isinstance(node, dict):
            if isinstance(node.get("l1_coeff"), float):
                node["l1_coeff"] *= 10
                return True
            return any(bump(v) for v in node.values())
        return isinstance(node, list) and any(bump(v) for v in node)

    edited = json.loads(original)
    assert bump(edited["params"]), edited["params"]
    try:
        path.write_text(json.dumps(edited, indent=1, sort_keys=True))
        out = verify(demo)
        assert out.returncode == 1
        assert f"edited record: {record_path(sae.relative_to(demo))} says id {rec['id']}" in out.stdout, (
            out.stdout
        )
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    # (c) a chunk of a store changed in place, same size, under its old checksum: --deep reads it
    store = demo / "results/activations/inat-demo/clip-b16/layer10.zarr"
    chunk = store / "train" / "c" / "0" / "0" / "0"
    original, stat = chunk.read_bytes(), chunk.stat()
    flipped = bytearray(original)
    flipped[100] ^= 0x01
    try:
        chunk.write_bytes(bytes(flipped))
        assert verify(demo).returncode == 0  # the shallow check reads 4 bytes per chunk: unseen
        out = subprocess.run([str(VITSAE), "verify", FIGURE, "--deep"], cwd=demo, capture_output=True,
                             text=True, check=False)  # fmt: skip
        assert out.returncode == 1
        assert out.stdout.splitlines() == [
            f"corrupt chunk: {chunk.relative_to(demo)} (its crc32c does not match its bytes)"
        ], out.stdout
    finally:
        chunk.write_bytes(original)
        os.utime(chunk, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    deep = subprocess.run([str(VITSAE), "verify", FIGURE, "--deep"], cwd=demo, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert deep.returncode == 0 and "(every store chunk read)" in deep.stdout, deep.stdout + deep.stderr


def ocr(png: Path) -> str:
    """The text tesseract reads off a screenshot."""
    if shutil.which("tesseract") is None:
        if os.environ.get("VITSAE_REQUIRE_BROWSER"):
            pytest.fail("VITSAE_REQUIRE_BROWSER is set but tesseract is missing (.ci/run installs it)")
        pytest.skip("no tesseract here (apt install tesseract-ocr)")
    out = subprocess.run(
        ["tesseract", str(png), "-", "--psm", "3"], capture_output=True, text=True, check=True
    )
    return " ".join(out.stdout.split())


def shows(driver, png: Path, title: str) -> None:
    """The title is in the page's visible text, and in the pixels of a screenshot of it."""
    from selenium.webdriver.common.by import By

    visible = driver.find_element(By.TAG_NAME, "body").text  # rendered text only, not scripts or data
    assert title in " ".join(visible.split()), visible[:2000]
    driver.save_screenshot(str(png))
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # something drawn, not a blank page
    read = ocr(png)
    assert title.split(":")[0] in read, read[:2000]  # "SAE transfer"


def test_report_and_lineage_page_render_in_headless_chromium(demo, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    report = tmp_path / "report.html"
    snakemake(demo, "--configfile", str(DEMO_CONFIG), "--report", str(report))
    title = FIGURES["transfer"]
    driver = browser(tmp_path)
    try:
        wait = WebDriverWait(driver, 30)
        # Snakemake's report: open the figure's category, then the figure's own page (its caption)
        driver.get(report.as_uri())
        wait.until(
            ec.element_to_be_clickable((By.XPATH, "//*[normalize-space(text())='Finding 3: transfer']"))
        ).click()
        row = wait.until(
            ec.presence_of_element_located((By.XPATH, f"//tr[td[normalize-space(text())='{FIGURE}']]"))
        )
        row.find_element(By.CSS_SELECTOR, "a[iconname='information-circle']").click()
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), title))
        shows(driver, tmp_path / "report.png", title)
        # the lineage page, as a file, no server
        driver.get((demo / "results/provenance/transfer.html").as_uri())
        shows(driver, tmp_path / "lineage.png", title)
        assert driver.title == f"{title}: provenance"
    finally:
        driver.quit()
