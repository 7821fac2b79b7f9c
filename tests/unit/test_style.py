"""The code's form, checked as CI checks it: ruff's formatter and linter on the package, tests, benches and
scripts, and snakefmt on the workflow (the same commands as ``make lint``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_helpers import REPO

BIN = Path(sys.executable).parent


def run(tool: str, *args: str) -> subprocess.CompletedProcess:
    exe = BIN / tool if (BIN / tool).exists() else shutil.which(tool)
    if exe is None:
        pytest.fail(f"{tool} is not installed; pip install -e '.[test]' installs it")
    return subprocess.run([str(exe), *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_format_leaves_every_file_as_it_is():
    out = run("ruff", "format", "--check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_check_passes():
    out = run("ruff", "check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_snakefmt_leaves_the_workflow_as_it_is():
    out = run("snakefmt", "--check", "Snakefile", "workflow/rules")
    assert out.returncode == 0, out.stdout + out.stderr
