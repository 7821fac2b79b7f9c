"""Run the demo DAG from scratch in a temporary directory and report its wall time and each stage's share.

    python bench/demo.py [--cores 2] [--keep DIR]

Per stage, the job-seconds Snakemake's benchmark files recorded (jobs run in parallel, so their sum can
exceed the wall time) and that stage's share of all job-seconds. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ["demo_dataset", "manifest", "extract", "train_sae", "evaluate", "transfer"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", default="2")
    ap.add_argument("--keep", type=Path, help="run in this directory instead of a temporary one")
    args = ap.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="vitsae-demo-"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / "config/config.yaml"), "--cores", args.cores, "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    seconds: dict[str, float] = defaultdict(float)
    jobs: dict[str, int] = defaultdict(int)
    for stage in STAGES:
        for tsv in (workdir / "results/benchmarks" / stage).rglob("*.tsv") if stage != "transfer" else \
                [workdir / "results/benchmarks/transfer.tsv"]:
            with open(tsv) as f:
                row = next(csv.DictReader(f, delimiter="\t"))
            seconds[stage] += float(row["s"])
            jobs[stage] += 1
    total = sum(seconds.values())
    print(f"demo DAG on {args.cores} cores: wall {wall:.1f} s; job-seconds {total:.1f}")
    print(f"{'stage':<14}{'jobs':>5}{'job-s':>9}{'share':>8}")
    for stage in STAGES:
        print(f"{stage:<14}{jobs[stage]:>5}{seconds[stage]:>9.1f}{seconds[stage] / total:>8.1%}")
    print(json.dumps({"wall_s": round(wall, 1), "job_s": round(total, 1),
                      "share": {s: round(seconds[s] / total, 3) for s in STAGES}}))


if __name__ == "__main__":
    main()
