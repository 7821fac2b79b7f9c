"""The demo DAG through a real Slurm (tests/slurm/start.sh) with profiles/slurm, against a local run.

Needs a running Slurm (SLURM_CONF set, `sinfo` answering). Skipped without one, unless
VITSAE_REQUIRE_SLURM=1 (CI sets it), where a missing Slurm is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
from workflow_helpers import REPO, snakemake_cmd

pytestmark = pytest.mark.e2e

TINY = REPO / "tests" / "configs" / "tiny.yaml"
GPU_RULES = {"extract", "train_sae", "evaluate", "feature_stats", "feature_stats_on", "quality", "downstream",
             "transfer_baselines"}  # fmt: skip
CPU_RULES = {
    "manifest",
    "thumbnails",
    "concepts",
    "concepts_on",
    "clusters",
    "cards",
    "transfer_features",
    "spec_curve",
    "claims",
    "browser",
}


def _slurm_up() -> bool:
    if not (os.environ.get("SLURM_CONF") and shutil.which("sbatch") and shutil.which("sacct")):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, check=False).returncode == 0


if not _slurm_up():
    if os.environ.get("VITSAE_REQUIRE_SLURM") == "1":
        raise RuntimeError(
            "VITSAE_REQUIRE_SLURM=1 but no Slurm answers: run tests/slurm/start.sh and "
            "source $VITSAE_SLURM_DIR/env.sh first"
        )
    pytest.skip("no Slurm here (start one with tests/slurm/start.sh)", allow_module_level=True)


def slurm_args() -> list[str]:
    """The profile, with the test's partition and account (the profile's SITE block is the cluster's)."""
    return [
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--configfile",
        str(TINY),
        "--default-resources",
        f"slurm_partition={os.environ.get('VITSAE_SLURM_PARTITION', 'debug')}",
        f"slurm_account={os.environ.get('VITSAE_SLURM_ACCOUNT', 'vitsae')}",
        "mem_mb=2000",
        "runtime=30",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--latency-wait",
        "5",
    ]


def sacct_jobs(since: str) -> list[dict]:
    """Every allocation since ``since``: id, rule (from the comment the plugin sets), state, AllocTRES."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", since, "-o", "JobID,Comment,State,AllocTRES"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = []
    for line in out.splitlines():
        job_id, comment, state, tres = line.split("|")
        rule = next(
            (
                r
                for r in sorted(GPU_RULES | CPU_RULES, key=len, reverse=True)
                if comment.startswith(f"rule_{r}")
            ),
            comment,
        )
        jobs.append({"id": job_id, "rule": rule, "state": state.split()[0], "tres": tres})
    return jobs


def running_job(rule: str, timeout: float) -> str | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True, check=False
        ).stdout
        for line in out.splitlines():
            job_id, comment = line.split("|", 1)
            if comment.startswith(f"rule_{rule}"):
                return job_id
        time.sleep(0.5)
    return None


@pytest.fixture(scope="module")
def local_table(tmp_path_factory):
    """The local executor's transfer table, the reference for the Slurm run: a callable that waits for
    it. The local run starts here and goes on beside the Slurm runs, which leave a quarter of the cores
    idle while they wait on the scheduler (CI: the test took 444 s with the two one after the other)."""
    workdir = tmp_path_factory.mktemp("tiny-local")
    log_path = workdir.parent / "tiny-local.log"  # a file, not a pipe: nobody reads a pipe while we wait
    # only what the transfer table needs (the comparison below): the rest of the DAG runs through Slurm
    cmd = snakemake_cmd(workdir, "results/tables/transfer.csv", "--configfile", str(TINY), cores="2")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            start_new_session=True,  # its own process group: a failed test stops it and its jobs
        )

    def table() -> str:
        assert proc.wait(timeout=900) == 0, f"{' '.join(cmd)} failed:\n{log_path.read_text()[-6000:]}"
        return (workdir / "results/tables/transfer.csv").read_text()

    yield table
    if proc.poll() is None:  # the test failed before it asked: stop the local run and its jobs
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_demo_through_slurm_matches_local_run_and_survives_scancel(tmp_path, local_table):
    workdir = tmp_path / "slurm"
    workdir.mkdir()
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    t0 = time.perf_counter()

    # 1. Run through Slurm and cancel one extraction job while it runs: the run fails, and the
    #    store it was writing is not there for any later rule to accept.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first_log = tmp_path / "first-run.log"  # a file, not a pipe: nobody reads a pipe while we wait
    with open(first_log, "w") as log:
        proc = subprocess.Popen(
            snakemake_cmd(workdir, *slurm_args(), "--retries", "0"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        victim = running_job("extract", timeout=300)
        assert victim is not None, "no extract job was seen running:\n" + first_log.read_text()[-3000:]
        subprocess.run(["scancel", victim], check=True)
        proc.wait(timeout=600)
    assert proc.returncode != 0, first_log.read_text()[-3000:]
    killed = [j for j in sacct_jobs(since) if j["id"] == victim]
    assert killed and killed[0]["state"] == "CANCELLED", killed
    stores = workdir / "results/activations"
    published = (
        {p.relative_to(stores).as_posix() for p in stores.glob("*/*/layer*.zarr")}
        if stores.exists()
        else set()
    )
    assert len(published) < 4, "the cancelled extraction's store was published"
    for store in published:  # whatever was published is complete
        assert '"complete": true' in (stores / store / "zarr.json").read_text()

    # 2. Run again: the DAG completes, redoing only what was missing.
    second = subprocess.run(
        snakemake_cmd(workdir, *slurm_args()),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    wall = time.perf_counter() - t0
    print(f"slurm end-to-end wall time (both runs): {wall:.0f} s")

    # 3. Every non-local job went through sbatch and completed; GPU rules got one GPU, CPU rules none.
    jobs = [j for j in sacct_jobs(since) if j["id"] != victim]
    by_rule: dict[str, list[dict]] = {}
    for j in jobs:
        by_rule.setdefault(j["rule"], []).append(j)
    assert set(by_rule) == GPU_RULES | CPU_RULES, {j["rule"] for j in jobs}
    completed = {r: sum(j["state"] == "COMPLETED" for j in js) for r, js in by_rule.items()}
    assert completed == {
        "manifest": 2,
        "extract": 4,
        "train_sae": 4,
        "evaluate": 8,
        "feature_stats": 4,
        "feature_stats_on": 4,  # each SAE's statistics on the other dataset (finding 3)
        "quality": 1,
        "downstream": 4,  # one per (dataset, model)
        "transfer_baselines": 2,  # one per model
        "thumbnails": 2,  # one per dataset: the region tests of both table kinds
        "concepts": 4,
        "concepts_on": 4,
        "clusters": 4,
        "cards": 4,
        "transfer_features": 1,
        "spec_curve": 1,
        "claims": 1,
        "browser": 1,  # the feature browser (its sample and ratings rules are local)
    }, completed
    for j in jobs:
        if j["rule"] in GPU_RULES:
            assert "gres/gpu=1" in j["tres"], j
        else:
            assert "gres/gpu" not in j["tres"], j

    # 4. The same numbers as the local executor.
    assert (workdir / "results/tables/transfer.csv").read_text() == local_table()
