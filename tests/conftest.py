import os
import sys
from pathlib import Path

import pytest

# Never wait on the network for weights: with this set, asking for pretrained weights fails at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workflow_helpers import DEMO_CONFIG, snakemake


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The whole demo DAG, run once per test session with the local executor; tests must leave it as
    they found it (dry runs, or edits they undo)."""
    # VITSAE_DEMO_DIR: reuse a demo directory (brought up to date here) while developing tests.
    given = os.environ.get("VITSAE_DEMO_DIR")
    workdir = Path(given) if given else tmp_path_factory.mktemp("demo")
    snakemake(workdir, "--configfile", str(DEMO_CONFIG))
    return workdir
