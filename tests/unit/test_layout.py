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
    # datasets x (3 models x 4 SAEs of the paper sweep + DINOv2's 4 twin SAEs + 1 permuted SAE per compared
    # model: the baseline model vit-t16 is trained in the paper sweep only)
    assert len(saes) == 2 * (3 * 4 + 4 + 2) == len(set(saes))
    assert saes[0] == "results/sae/imagenet-demo/clip-b16/layer10/paper/relu_l1-x4-l1_3-lr_0.004-s0"
    assert not [s for s in saes if "/clip-b16/" in s and "/twin/" in s]  # the twin sweep trains DINOv2 only
    evals = layout.evals(RUN)
    assert len(evals) == 36 * 2 and len(layout.evals(RUN, in_domain=True)) == 36
    # transfer.saes: the paper sweep, but the baseline model's SAEs (claims.baselines serve findings 1, 2)
    assert len(layout.evals(RUN, RUN.transfer_saes)) == 24 * 2 and len(layout.transfer_evals(RUN)) == 16 * 2
    assert not [e for e in layout.transfer_evals(RUN) if "/vit-t16/" in e]
    assert len(layout.transfer_evals(RUN, "paper")) == 32 and layout.transfer_evals(RUN, "twin") == []
    assert all(
        e.split("/")[2] == e.rsplit("/", 1)[1].removesuffix(".json")
        for e in layout.evals(RUN, in_domain=True)
    )
    assert layout.concept_tables(RUN, findings=True) == [
        f"results/tables/concepts/{d}/{m}/layer10/paper.csv"
        for d in ("imagenet-demo", "inat-demo") for m in ("clip-b16", "dinov2-s14", "vit-t16")
    ]  # fmt: skip
    assert len(layout.concept_tables(RUN)) == 2 * (3 + 1 + 2)  # paper per model, twin for DINOv2, permuted
    assert layout.shuffled_tables(RUN) == [
        t.replace(".csv", ".shuffled.csv") for t in layout.concept_tables(RUN, findings=True)
    ]
    # every dataset with concept tables: the cell descriptors of the region tests (both table kinds)
    assert layout.thumbnails(RUN) == [
        f"results/thumbnails/{d}/train.npz" for d in ("imagenet-demo", "inat-demo")
    ]
    assert set(layout.figures(RUN)) == {"transfer", "semantic_abstraction", "traits", "transfer_features",
                                        "transfer_labels", "claims", "spec_curve", *(f"{kind}-{s}" for kind in ("training", "pareto", "quality")
                                                                  for s in ("paper", "twin", "permuted"))}  # fmt: skip
    assert [t for t in layout.final_tables(RUN) if "/quality-" in t] == [
        f"results/tables/quality-{s}.csv" for s in ("paper", "permuted", "twin")
    ]
    artifacts = layout.run_artifacts(RUN)
    # manifests, stores, SAE files, evaluations, finding 3's baselines (per model) and downstream tables
    # (per dataset and model), thumbnails, statistics, concept and null tables, shuffled tables and their
    # nulls, clusters, cards, and the paper SAEs' statistics, concept and null tables on the other dataset
    assert layout.baselines(RUN) == [
        f"results/transfer/baselines/{m}/layer10.csv" for m in ("clip-b16", "dinov2-s14")
    ]
    assert len(layout.downstream(RUN)) == 2 * 2
    assert (
        len(artifacts)
        == len(set(artifacts))
        == 2 + 6 + 36 * 3 + (36 + 16) + 2 + 4 + 2 + 36 + 12 + 12 + 6 + 6 + 12 + 6 + 16 + 4 + 4 + 4
    )  # ... and the rating sample, ratings, agreement and the browser
    # the browser shows the paper sweep's SAEs (not the controls); catch trials come from the null sweep
    assert [k["sweep"] for k in layout.browser_keys(RUN)] == ["paper"] * 24  # with the baseline's
    assert layout.catch_keys(RUN) == [(d, m, 10, "permuted") for d in ("imagenet-demo", "inat-demo")
                                      for m in ("clip-b16", "dinov2-s14")]  # fmt: skip


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


def test_the_paper_runs_baselines_are_browsed_and_claimed_but_not_rated():
    run = build(validate(yaml.safe_load((REPO / "config" / "paper.yaml").read_text())))
    baselines = set(run.claims.baselines)
    assert baselines == {"rand-dinov2-b14", "rand-clip-b16", "supervised-b16", "mae-b16", "dinov1-b16"}
    concept_models = {m for _d, m, _l, _s in layout.concept_keys(run)}
    assert baselines <= concept_models and baselines <= {k["model"] for k in layout.browser_keys(run)}
    rated = {m for _d, m, _l, _s in layout.rating_keys(run)}
    assert rated == {"dinov2-b14", "clip-b16", "dinov2-reg-b14"}
    assert {m for _d, m, _l, _s in layout.catch_keys(run)} == rated
