"""vitsae.layout: every artifact's path from one place, and the run's keys enumerated from its config."""

from __future__ import annotations

import yaml
from workflow_helpers import DEMO_CONFIG, REPO

from vitsae import layout
from vitsae.config import build, validate

RUN = build(validate(yaml.safe_load(DEMO_CONFIG.read_text())))


def test_fill_leaves_the_other_fields_as_wildcards():
    assert (
        layout.fill(layout.SAE_DIR, sweep="paper")
        == "results/sae/{dataset}/{model}/layer{layer}/paper/{sae_id}"
    )
    assert (
        layout.fill(layout.STORE, dataset="{eval_dataset}")
        == "results/activations/{eval_dataset}/{model}/layer{layer}.zarr"
    )
    assert layout.log("extract", "{dataset}") == "results/logs/extract/{dataset}.log"


def test_the_demo_runs_keys():
    saes = layout.sae_dirs(RUN)
    assert len(saes) == 2 * 2 * 4 == len(set(saes))  # datasets x models x SAEs of the sweep
    assert saes[0] == "results/sae/imagenet-demo/clip-b16/layer10/paper/relu_l1-x4-l1_3-lr_0.004-s0"
    evals = layout.evals(RUN)
    assert len(evals) == 16 * 2 and len(layout.evals(RUN, in_domain=True)) == 16
    assert all(
        e.split("/")[2] == e.rsplit("/", 1)[1].removesuffix(".json")
        for e in layout.evals(RUN, in_domain=True)
    )
    assert layout.concept_tables(RUN) == [
        f"results/tables/concepts/{d}/{m}/layer10/paper.csv"
        for d in ("imagenet-demo", "inat-demo") for m in ("clip-b16", "dinov2-s14")
    ]  # fmt: skip
    assert layout.thumbnails(RUN) == ["results/thumbnails/imagenet-demo/train.npz"]  # iNat has no thumbnails
    assert set(layout.figures(RUN)) == {"transfer", "semantic_abstraction", "traits", "transfer_features",
                                        "training-paper", "pareto-paper"}  # fmt: skip
    artifacts = layout.run_artifacts(RUN)
    assert len(artifacts) == len(set(artifacts)) == 2 + 4 + 48 + 32 + 1 + 16 + 4 + 4 + 4


def test_no_results_path_is_written_outside_the_layout():
    # the rule files, scripts and package name result paths only through vitsae.layout
    offenders = []
    for path in [*(REPO / "workflow").rglob("*.smk"), *(REPO / "workflow/scripts").glob("*.py"),
                 *(REPO / "vitsae").rglob("*.py"), REPO / "Snakefile"]:  # fmt: skip
        if path.name == "layout.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if '"results/' in code or "'results/" in code or 'f"results/' in code:
                offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert offenders == []
