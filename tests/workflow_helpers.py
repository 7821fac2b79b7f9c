"""Running the real Snakemake workflow from tests: one place for the command line and its parsing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "config" / "config.yaml"
#: What a copy of the source tree holds: enough to parse the workflow and run its scripts.
TREE = ("Snakefile", "workflow", "vitsae", "config", "envs", "data", "pyproject.toml")


def copy_tree(dest: Path) -> Path:
    """A copy of the source tree at ``dest``, for tests that edit source: the checkout is never edited.
    Snakemake run with ``--snakefile dest/Snakefile`` imports the package from the copy (the Snakefile
    puts its own directory first on ``sys.path``), so the copy's code digests are the ones compared."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in TREE:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def snakemake_cmd(
    workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile", cores: str | None = None
) -> list[str]:
    """``python -m snakemake`` on the workflow (or the Snakefile of a copy of it) in ``workdir``."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir)]
    return cmd + (["--cores", cores] if cores else []) + list(args)


def snakemake(
    workdir: Path,
    *args: str,
    check: bool = True,
    snakefile: Path = REPO / "Snakefile",
    cores: str | None = "2",
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    cmd = snakemake_cmd(workdir, *args, snakefile=snakefile, cores=cores)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: rule → number of jobs."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    for line in lines[start + 3 :]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m or m.group(1) == "total":
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def browser(tmp_path: Path, downloads: Path | None = None):
    """Headless Chromium driven by chromedriver (Debian's chromium and chromium-driver), keeping the
    console's messages (``driver.get_log("browser")``) and saving downloads to ``downloads``."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if (found is None or driver is None) and os.environ.get("VITSAE_REQUIRE_BROWSER"):
        pytest.fail(
            "VITSAE_REQUIRE_BROWSER is set but chromium/chromedriver are missing (.ci/run installs them)"
        )
    if found is None or driver is None:
        pytest.skip("no headless Chromium here (apt install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chrome'}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if downloads is not None:
        downloads.mkdir(parents=True, exist_ok=True)
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False})  # fmt: skip
    return webdriver.Chrome(service=Service(driver), options=opts)
