"""Recall and precision of the concept labels on demo datasets drawn from seeds nothing was tuned on.

    python bench/demo_seeds.py [--seeds 100 200] [--cores 2] [--keep DIR] [--default DIR]

The default demo (imagenet-demo seed 0, inat-demo seed 1) is what the labelling rules were developed
against. Here each seed ``s`` draws imagenet-demo from ``s`` and inat-demo from ``s + 1``, with every other
setting of ``config/config.yaml`` unchanged, and runs the DAG up to the concept tables of the paper sweep
(statistics, thumbnails, concept tables: nothing after). Per seed it prints

* recall (:func:`vitsae.analysis.planted.planted_recovery`): per planted concept, how many SAEs of each
  model have a feature with the expected label on the concept's classes;
* the negative controls, read off the drawn masks: features called ``abstract`` whose firing regions lie
  on the bullseye, and ``trait`` features on an order's background texture (both should be 0), beside
  the features with the right labels there (``visual-motif``, ``clade``);
* precision (:func:`vitsae.analysis.planted.planted_precision`): per dataset, model and label, the share of
  the labelled features whose firing regions lie on a planted object of the label's level.

``--default DIR``: also report a finished default demo run (e.g. the e2e tests' directory) in the same
tables. Ends with one JSON line per seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vitsae import layout
from vitsae.analysis.planted import planted_precision, planted_recovery
from vitsae.config import build, validate
from vitsae.data.demo import PLANTED


def _config(seed: int | None) -> dict:
    """The demo config; with ``seed``, imagenet-demo drawn from it and inat-demo from ``seed + 1``."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    if seed is not None:
        for ds in config["datasets"].values():
            ds["generate"]["seed"] = seed + (1 if ds["generate"]["kind"] == "inat-demo" else 0)
    return config


def report(workdir: Path, config: dict, label: str) -> dict:
    """Recall, negative controls and precision of one finished run (printed), and its summary."""
    run = build(validate(config))
    tables = [t for t in layout.concept_tables(run) if "/paper.csv" in t]
    pd.set_option("display.width", 200)
    found = planted_recovery(workdir, PLANTED, tables, layout.MANIFEST, layout.FEATURES)
    generators = {d: dict(config["datasets"][d]["generate"]) for d in config["datasets"]}
    for g in generators.values():
        (
            g.setdefault("train_per_class", 40),
            g.setdefault("val_per_class", 10),
            g.setdefault("image_size", 112),
        )
    precision = planted_precision(workdir, tables, layout.MANIFEST, layout.FEATURES, generators)
    print(f"\n## {label}: recall (SAEs of each model with a feature of the expected label)")
    print(found.drop(columns=["label"]).to_string(index=False))
    on = precision.set_index(["dataset", "label"]).groupby(level=[0, 1]).sum()

    def landed(dataset: str, label: str, level: str) -> int:
        key = (dataset, label)
        return int(on.loc[key, f"on_{level}"]) if key in on.index and f"on_{level}" in on else 0

    controls = {
        "bullseye called abstract": landed("imagenet-demo", "abstract", "motif"),
        "bullseye called visual-motif": landed("imagenet-demo", "visual-motif", "motif"),
        "order texture called trait": landed("inat-demo", "trait", "order"),
        "order texture called clade": landed("inat-demo", "clade", "order"),
    }
    print(f"\n## {label}: negative controls read off the masks (features whose firing regions lie there)")
    for k, v in controls.items():
        print(f"  {k}: {v}")
    print(f"\n## {label}: precision per label")
    print(precision.to_string(index=False))
    saes = [c for c in found.columns if c.startswith("saes_")]
    recall = {
        c.removeprefix("saes_"): [int(v.split("/")[0]) / int(v.split("/")[1]) for v in found[c]] for c in saes
    }
    return {
        "run": label,
        "concepts_found": int((found["n_features"] > 0).sum()),
        "concepts": len(found),
        "mean_recall": {m: round(sum(v) / len(v), 3) for m, v in recall.items()},
        "controls": controls,
        "precision": {
            f"{r.dataset}/{r.model}/{r.label}": [int(r.n_right), int(r.n_features)]
            for r in precision.itertuples()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[100, 200])
    ap.add_argument("--cores", default="2")
    ap.add_argument(
        "--keep", type=Path, help="run each seed in DIR/seed-<s> instead of a temporary directory"
    )
    ap.add_argument("--default", type=Path, help="a finished run of the default demo to report as well")
    args = ap.parse_args()
    summaries = []
    if args.default:
        summaries.append(report(args.default, _config(None), "default demo (seeds 0 / 1)"))
    for seed in args.seeds:
        workdir = (
            (args.keep / f"seed-{seed}")
            if args.keep
            else Path(tempfile.mkdtemp(prefix=f"vitsae-seed{seed}-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        config = _config(seed)
        (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        targets = [t for t in layout.concept_tables(build(validate(config))) if "/paper.csv" in t]
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", args.cores,
               *targets]  # fmt: skip
        subprocess.run(cmd, check=True)
        summaries.append(report(workdir, config, f"unseen seeds {seed} / {seed + 1}"))
    for s in summaries:
        print(json.dumps(s))


if __name__ == "__main__":
    main()
