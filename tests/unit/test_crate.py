"""The run's RO-Crate from a tiny fake run: three jobs of three rules, records written by the real
``write_record``, the crate rooted at ``results/`` (vitsae.provenance.crate)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vitsae.provenance import records
from vitsae.provenance.crate import crate_time, group_jobs, run_artifacts, write_crate
from vitsae.provenance.records import record_path, write_record

# The Process Run Crate's pattern for startTime/endTime.
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?\+\d{2}:\d{2}$")
RULES = {
    "extract": {"snakefile": "workflow/rules/activations.smk", "script": "workflow/scripts/extract.py"},
    "train": {"snakefile": "workflow/rules/sae.smk", "script": "workflow/scripts/train_sae.py"},
    "figure": {"snakefile": "workflow/rules/figures.smk", "script": None},
}
CONFIG = {
    "run_name": "tiny",
    "demo": True,
    "seed": 0,
    "datasets": {"toy": {"root": "results/datasets/toy", "format": "imagefolder"}},
    "sweeps": {"paper": {"lr": 0.004, "l1_coeff": [3.0, 6.0]}},
    "crate": {
        "license": "MIT",
        "author": [{"name": "Ada Lovelace", "orcid": "0000-0002-1825-0097", "type": "Person"}],
        "publisher": {"name": "Analytical Engines Ltd", "type": "Organization", "url": "https://example.org"},
    },
}


def record(rule: str, inputs: list[str], outputs: list[str], t0: float, params: dict | None = None) -> None:
    write_record(
        rule=rule,
        wildcards={"dataset": "toy"},
        inputs=inputs,
        outputs=outputs,
        params={"code": {}, **(params or {})},
        config=CONFIG,
        modules=[],
        seed=0,
        started=t0 + 0.1234567,
        ended=t0 + 2.9876543,
    )


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    """A workdir with a dataset, a store (directory), two SAE files from one job and a figure."""
    monkeypatch.chdir(tmp_path)
    return make_run(tmp_path)


def make_run(tmp_path: Path) -> Path:
    """The fake run of :func:`run`, written in ``tmp_path`` (the current directory)."""
    images = tmp_path / "results/datasets/toy"
    images.mkdir(parents=True)
    for i in range(3):
        (images / f"img{i}.png").write_bytes(bytes([i]) * 10)
    store = Path("results/activations/toy/layer1.zarr")
    store.mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    record("extract", [f"results/datasets/toy/img{i}.png" for i in range(3)], [str(store)], 1_700_000_000)
    sae_dir = Path("results/sae/toy/paper")
    sae_dir.mkdir(parents=True)
    weights, cfg = sae_dir / "sae.safetensors", sae_dir / "cfg.json"
    weights.write_bytes(b"\0" * 64)
    cfg.write_text('{"d_in": 4}')
    record("train", [str(store)], [str(weights), str(cfg)], 1_700_000_100, {"lr": 0.004})
    fig = Path("results/figures/transfer.pdf")
    fig.parent.mkdir(parents=True)
    fig.write_bytes(b"%PDF-1.4 tiny")
    record("figure", [str(weights)], [str(fig)], 1_700_000_200)
    wf = tmp_path / "wf"
    for rel in ["Snakefile", "workflow/rules/activations.smk", "workflow/rules/sae.smk",
                "workflow/rules/figures.smk", "workflow/scripts/extract.py",
                "workflow/scripts/train_sae.py", "vitsae/__init__.py"]:  # fmt: skip
        (wf / rel).parent.mkdir(parents=True, exist_ok=True)
        (wf / rel).write_text(f"# {rel}\n")
    return tmp_path


def build(run: Path) -> dict[str, dict]:
    meta = write_crate(
        "results/provenance/ro-crate",
        metadata="results/ro-crate-metadata.json",
        finals=["results/figures/transfer.pdf"],
        artifacts=["results/sae/toy/paper/cfg.json"],
        config=CONFIG,
        workflow_dir=run / "wf",
        rule_sources=RULES,
        snakemake_version="9.0.0",
    )
    doc = json.loads(meta.read_text())
    assert doc["@context"] == "https://w3id.org/ro/crate/1.3/context"
    return {e["@id"]: e for e in doc["@graph"]}


def ids(value) -> list[str]:
    return [v["@id"] for v in (value if isinstance(value, list) else [value])]


def test_crate_time_keeps_milliseconds_utc_and_never_rounds_up():
    assert crate_time("2026-12-05T07:52:47.883999+00:00") == "2026-12-05T07:52:47.883+00:00"
    assert crate_time("2026-12-05T08:52:47+01:00") == "2026-12-05T07:52:47.000+00:00"
    with pytest.raises(ValueError, match="no time zone"):
        crate_time("2026-12-05T07:52:47")


def test_jobs_group_the_records_of_one_rule_execution(run):
    # cfg.json: no final output reads it, so it is found as one of the run's other artifacts
    lin = run_artifacts([Path("results/figures/transfer.pdf")], [Path("results/sae/toy/paper/cfg.json")])
    jobs = group_jobs(lin.records)
    assert [[r["artifact"] for r in job] for job in jobs] == [
        ["results/activations/toy/layer1.zarr"],
        ["results/sae/toy/paper/cfg.json", "results/sae/toy/paper/sae.safetensors"],
        ["results/figures/transfer.pdf"],
    ]


def test_crate_rooted_at_results_describes_artifacts_in_place(run):
    g = build(run)
    assert not [i for i in g if i.startswith(("../", "/", "file:"))]
    root = g["./"]
    assert g["ro-crate-metadata.json"]["conformsTo"] == [
        {"@id": "https://w3id.org/ro/crate/1.3"},
        {"@id": "https://w3id.org/ro/crate/1.1"},
    ]
    assert "https://w3id.org/ro/wfrun/provenance/0.5" in ids(root["conformsTo"])
    # big files described where they lie, never copied; the workflow and config are copied
    store = g["activations/toy/layer1.zarr/"]
    assert store["@type"] == "Dataset" and store["identifier"].startswith("tree:")
    weights = g["sae/toy/paper/sae.safetensors"]
    assert weights["contentSize"] == "64" and weights["encodingFormat"] == "application/octet-stream"
    assert weights["subjectOf"] == {"@id": "sae/toy/paper/sae.safetensors.prov.json"}
    assert g["figures/transfer.pdf"]["encodingFormat"] == "application/pdf"
    copies = run / "results/provenance/ro-crate"
    assert sorted(p.name for p in copies.rglob("*") if p.is_file()) == sorted(
        [
            "Snakefile",
            "activations.smk",
            "sae.smk",
            "figures.smk",
            "extract.py",
            "train_sae.py",
            "__init__.py",
            "config.yaml",
        ]
    )
    for entity_id in ids(root["hasPart"]):  # every data entity exists under the root
        assert (run / "results" / entity_id).exists(), entity_id
    # the dataset's images are the dataset, not one entity per image
    assert not [i for i in g if "img" in i]
    # license, author and publisher from the config
    assert root["license"] == {"@id": "https://spdx.org/licenses/MIT"}
    assert g["https://orcid.org/0000-0002-1825-0097"]["name"] == "Ada Lovelace"
    assert g[root["publisher"]["@id"]]["@type"] == "Organization"


def test_one_action_per_job_linked_to_its_step_and_tool(run):
    g = build(run)
    jobs = {i: e for i, e in g.items() if e["@type"] == "CreateAction" and i != "#run"}
    assert len(jobs) == 3
    train = next(e for e in jobs.values() if e["name"].startswith("rule train"))
    assert ids(train["result"]) == ["sae/toy/paper/cfg.json", "sae/toy/paper/sae.safetensors"]
    assert "activations/toy/layer1.zarr/" in ids(train["object"])
    lr = next(g[i] for i in ids(train["object"]) if g[i]["@type"] == "PropertyValue")
    assert (lr["name"], lr["value"]) == ("lr", 0.004)
    assert train["instrument"] == {"@id": "provenance/ro-crate/workflow/workflow/scripts/train_sae.py"}
    assert (train["startTime"], train["endTime"]) == (
        "2023-11-14T22:15:00.123+00:00",
        "2023-11-14T22:15:02.987+00:00",
    )
    for e in jobs.values():
        assert TIME.match(e["startTime"]) and TIME.match(e["endTime"]), e
        assert e["agent"] == {"@id": "https://orcid.org/0000-0002-1825-0097"}
    extract = next(e for e in jobs.values() if e["name"].startswith("rule extract"))
    assert ids(extract["object"]) == ["#dataset-toy"]
    # steps, tools and the workflow (a rule without a script runs its rule file)
    workflow = g[g["./"]["mainEntity"]["@id"]]
    assert {"ComputationalWorkflow", "HowTo", "https://bioschemas.org/ComputationalWorkflow"} <= set(
        workflow["@type"]
    )
    steps = [g[s] for s in ids(workflow["step"])]
    assert [s["name"] for s in steps] == ["rule extract", "rule train", "rule figure"]
    assert ids(steps[2]["workExample"]) == ["provenance/ro-crate/workflow/workflow/rules/figures.smk"]
    assert sorted(ids(workflow["hasPart"])) == sorted(ids(s["workExample"])[0] for s in steps)
    controls = [e for e in g.values() if e["@type"] == "ControlAction"]
    assert sorted(c["object"]["@id"] for c in controls) == sorted(jobs)
    organize = g["#organize"]
    assert organize["result"] == {"@id": "#run"} and len(organize["object"]) == 3
    assert g[organize["instrument"]["@id"]]["version"] == "9.0.0"
    assert set(ids(g["./"]["mentions"])) >= set(jobs) | {"#run", "#organize"}


def test_code_from_a_source_tree_without_git_is_versioned_without_a_commit(tmp_path, monkeypatch):
    # a release tarball or `git archive` copy: code_version records commit None (no git to ask)
    real = records.code_version
    monkeypatch.setattr(
        records,
        "code_version",
        lambda modules, repo=None: {
            **real(modules, repo),
            "commit": None,
            "dirty": None,
            "diff_sha256": None,
        },
    )
    monkeypatch.chdir(tmp_path)
    g = build(make_run(tmp_path))
    workflow = g[g["./"]["mainEntity"]["@id"]]
    assert re.fullmatch(r"vitsae \S+ \(no commit\)", workflow["version"]), workflow["version"]


def test_artifact_outside_the_root_is_refused(run):
    with pytest.raises(ValueError, match="outside the crate's root"):
        write_crate(
            "results/provenance/ro-crate",
            metadata="results/figures/ro-crate-metadata.json",  # root below the SAEs
            finals=["results/figures/transfer.pdf"],
            config=CONFIG,
            workflow_dir=run / "wf",
            rule_sources=RULES,
        )


def test_rule_without_sources_is_named(run):
    with pytest.raises(KeyError, match="rule 'train'"):
        write_crate(
            "results/provenance/ro-crate",
            metadata="results/ro-crate-metadata.json",
            finals=["results/figures/transfer.pdf"],
            config=CONFIG,
            workflow_dir=run / "wf",
            rule_sources={k: v for k, v in RULES.items() if k != "train"},
        )
    assert not record_path(Path("results/ro-crate-metadata.json")).exists()
