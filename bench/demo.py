"""Run the demo DAG from scratch in a temporary directory and report its wall time and each stage's share.

    python bench/demo.py [--cores 2] [--keep DIR]

Per stage, the job-seconds Snakemake's benchmark files recorded (jobs run in parallel, so their sum can
exceed the wall time) and that stage's share of all job-seconds. Then what provenance costs: the seconds
every job spent writing its records (each job logs "provenance: wrote N records in S s"), summed over
all jobs, as a share of the wall time (an upper bound on what they added to it: jobs overlap), and the
same for the rules that only exist for provenance (lineage page, RO-Crate). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = [
    "demo_dataset",
    "manifest",
    "extract",
    "train_sae",
    "evaluate",
    "transfer",
    "training_curves",
    "pareto",
    "quality",
    "thumbnails",
    "feature_stats",
    "concepts",
    "clusters",
    "cards",
    "findings",
    "transfer_features",
    "spec_curve",
    "claims",
    "controls",
    "lineage",
    "ro_crate",
]
PROVENANCE_RULES = ["lineage", "ro_crate"]
RECORD_LINE = re.compile(r"provenance: wrote (\d+) records in ([0-9.]+) s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", default="2")
    ap.add_argument("--keep", type=Path, help="run in this directory instead of a temporary one")
    args = ap.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="vitsae-demo-"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / "config/config.yaml"), "--cores", args.cores, "--quiet"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    seconds: dict[str, float] = defaultdict(float)
    jobs: dict[str, int] = defaultdict(int)
    for stage in STAGES:
        bench_dir = workdir / "results/benchmarks"
        tsvs = list((bench_dir / stage).rglob("*.tsv")) + list(bench_dir.glob(f"{stage}.tsv"))
        for tsv in tsvs:
            with open(tsv) as f:
                row = next(csv.DictReader(f, delimiter="\t"))
            seconds[stage] += float(row["s"])
            jobs[stage] += 1
    total = sum(seconds.values())
    print(f"demo DAG on {args.cores} cores: wall {wall:.1f} s; job-seconds {total:.1f}")
    print(f"{'stage':<14}{'jobs':>5}{'job-s':>9}{'share':>8}")
    for stage in STAGES:
        print(f"{stage:<14}{jobs[stage]:>5}{seconds[stage]:>9.1f}{seconds[stage] / total:>8.1%}")
    n_records, record_s, n_logs = 0, 0.0, 0
    for log in (workdir / "results/logs").rglob("*.log"):
        for m in RECORD_LINE.finditer(log.read_text(errors="replace")):
            n_records += int(m.group(1))
            record_s += float(m.group(2))
            n_logs += 1
    rules_s = sum(seconds[s] for s in PROVENANCE_RULES)
    print(
        f"provenance records: {n_records} written by {n_logs} jobs in {record_s:.2f} s, "
        f"{record_s / wall:.2%} of the wall time"
    )
    print(
        f"provenance rules (lineage page, RO-Crate): {rules_s:.2f} job-s, {rules_s / wall:.2%} of the wall time"
    )
    print(
        json.dumps(
            {
                "wall_s": round(wall, 1),
                "job_s": round(total, 1),
                "share": {s: round(seconds[s] / total, 3) for s in STAGES},
                "records": n_records,
                "record_s": round(record_s, 3),
                "records_vs_wall": round(record_s / wall, 5),
                "provenance_rules_vs_wall": round(rules_s / wall, 5),
            }
        )
    )


if __name__ == "__main__":
    main()
