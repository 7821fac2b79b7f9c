"""What starting Snakemake costs per Slurm job, against Snakemake's own floor.

A Slurm job of this workflow starts Snakemake twice: the batch step (executor slurm-jobstep) and, inside
it, the job step that `srun` runs. Each parses the whole workflow and builds a DAG of that one job. This
script times such a start (`--target-jobs` on one job, dry run) for the workflow, and the same for a
one-rule Snakefile (the floor: Snakemake's imports, plugins and DAG machinery), and prints CPU seconds
(user + system of the child) and their ratio.

    python bench/jobstep_start.py [--snakefile PATH] [--configfile PATH] [--repeats N]

--snakefile lets one time another checkout (e.g. a `git worktree` of an older commit) with the same
script. Ends with a JSON line of its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOOR = """rule one:
    output: "one.txt"
    shell: "touch {output}"
"""


def cpu_of(cmd: list[str], cwd: Path) -> float:
    """User + system CPU seconds of one child process run to completion (it must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        cmd, check=False, cwd=cwd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snakefile", type=Path, default=REPO / "Snakefile")
    ap.add_argument("--configfile", type=Path, default=REPO / "tests" / "configs" / "tiny.yaml")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "1", "--dry-run", "--quiet", "--forceall"]
    with tempfile.TemporaryDirectory() as tmp:
        work, floor = Path(tmp) / "work", Path(tmp) / "floor"
        work.mkdir()
        floor.mkdir()
        (floor / "Snakefile").write_text(FLOOR)
        ours = snakemake + ["--snakefile", str(args.snakefile.resolve()), "--directory", str(work)]
        ours += ["--configfile", str(args.configfile.resolve())]
        ours += [
            "--target-jobs",
            "demo_dataset_imagenet_demo:",
            "--allowed-rules",
            "demo_dataset_imagenet_demo",
        ]
        base = snakemake + [
            "--snakefile",
            str(floor / "Snakefile"),
            "--target-jobs",
            "one:",
            "--allowed-rules",
            "one",
        ]
        cpu_of(ours, work), cpu_of(base, floor)  # warm the page cache and the .pyc files
        t_ours = [cpu_of(ours, work) for _ in range(args.repeats)]
        t_floor = [cpu_of(base, floor) for _ in range(args.repeats)]
    m_ours, m_floor = statistics.median(t_ours), statistics.median(t_floor)
    print(f"workflow, one job:       {m_ours:.2f} CPU s (median of {args.repeats})")
    print(f"one-rule Snakefile:      {m_floor:.2f} CPU s")
    print(f"ratio workflow / floor:  {m_ours / m_floor:.2f}")
    print(f"added per Slurm job (2 starts): {2 * (m_ours - m_floor):.2f} CPU s")
    print(json.dumps({"workflow_cpu_s": round(m_ours, 3), "floor_cpu_s": round(m_floor, 3),
                      "ratio": round(m_ours / m_floor, 3), "snakefile": str(args.snakefile)}))  # fmt: skip


if __name__ == "__main__":
    main()
