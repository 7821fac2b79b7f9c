"""The demo run's RO-Crate: valid for roc-validator (offline, the RO-Crate 1.3 context served from the
copy ``rocrate`` ships) at REQUIRED severity for RO-Crate 1.3, Workflow Run Crate 0.5 and Provenance
Run Crate 0.5; rooted at results/, one action per job, every output named."""

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from workflow_helpers import DEMO_CONFIG, REPO

from vitsae.provenance.crate import validator_cache
from vitsae.provenance.records import RECORD_SUFFIX, read_record

pytestmark = pytest.mark.e2e

VALIDATOR = Path(sys.executable).parent / "rocrate-validator"
PROFILES = ["ro-crate-1.3", "workflow-run-crate-0.5", "provenance-run-crate-0.5"]
# The Process Run Crate's pattern for startTime and endTime.
TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})(T\d{2}:\d{2}:\d{2}(\.\d{3})?\+\d{2}:\d{2})?$")


@pytest.fixture(scope="module")
def crate(demo) -> dict[str, dict]:
    meta = json.loads((demo / "results/ro-crate-metadata.json").read_text())
    return {e["@id"]: e for e in meta["@graph"]}


def ids(value) -> list[str]:
    return [v["@id"] for v in (value if isinstance(value, list) else [value])]


def recorded_artifacts(demo: Path) -> set[str]:
    """Every artifact with a record under results/ but the crate's own, as its workdir-relative path."""
    own = {"results/provenance/ro-crate", "results/ro-crate-metadata.json"}
    return {
        str(p.relative_to(demo))[: -len(RECORD_SUFFIX)] for p in (demo / "results").rglob(f"*{RECORD_SUFFIX}")
    } - own


@pytest.mark.parametrize("profile", PROFILES)
def test_roc_validator_offline_finds_no_required_issue(demo, tmp_path, profile):
    cache = tmp_path / "http_cache"
    validator_cache(cache)
    report = tmp_path / "report.json"
    cmd = [str(VALIDATOR), "validate", "--offline", "--cache-path", str(cache), "-p", profile,
           "--no-paging", "-f", "json", "-o", str(report), str(demo / "results")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    assert report.exists(), done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["validation_settings"]["profile_identifier"] == profile
    required = [(i["check"]["identifier"], i["violatingEntity"], i["message"]) for i in result["issues"]
                if i["severity"] == "REQUIRED"]  # fmt: skip
    assert required == [] and result["passed"], required[:10]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_crate_is_rooted_at_results_and_copies_no_big_file(demo, crate):
    results = demo / "results"
    assert not [i for i in crate if i.startswith(("../", "/", "file:"))]
    root = crate["./"]
    for entity_id in ids(root["hasPart"]):  # every data entity lies under the root
        assert (results / entity_id).exists(), entity_id
    # stores and SAEs described in place, never copied; the copies hold only the workflow and config
    copies = results / "provenance/ro-crate"
    assert not [p for p in copies.rglob("*") if p.suffix in (".zarr", ".safetensors", ".pdf", ".csv")]
    assert sorted(p.name for p in copies.iterdir() if not p.name.startswith(".")) == [
        "config.yaml",
        "workflow",
    ]
    assert (copies / "workflow/Snakefile").read_bytes() == (REPO / "Snakefile").read_bytes()
    stores = [e for i, e in crate.items() if i.startswith("activations/") and i.endswith(".zarr/")]
    n_stores = len(yaml.safe_load(DEMO_CONFIG.read_text())["datasets"]) * 3  # 2 datasets x 3 models
    assert len(stores) == n_stores == 6 and all(e["@type"] == "Dataset" for e in stores)
    sae = next(e for i, e in crate.items() if i.endswith("/sae.safetensors"))
    assert int(sae["contentSize"]) == (results / sae["@id"]).stat().st_size
    assert sae["identifier"] == read_record(results / sae["@id"])["digest"]
    assert json.loads((results / sae["subjectOf"]["@id"]).read_text())["artifact"] == "results/" + sae["@id"]
    # every output by its path, each File with a size and a media type
    assert recorded_artifacts(demo) == {crate[i]["name"] for i in ids(crate["#run"]["result"])}
    for e in crate.values():
        if e["@type"] == "File":
            assert e["contentSize"].isdigit() and "/" in e["encodingFormat"], e["@id"]
    # license, author and publisher from the config; the profiles claimed
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())["crate"]
    assert root["license"] == {"@id": f"https://spdx.org/licenses/{cfg['license']}"}
    assert [crate[a]["name"] for a in ids(root["author"])] == [a["name"] for a in cfg["author"]]
    assert crate[root["publisher"]["@id"]]["@type"] == "Organization"
    assert {
        "https://w3id.org/ro/wfrun/process/0.5",
        "https://w3id.org/ro/wfrun/workflow/0.5",
        "https://w3id.org/ro/wfrun/provenance/0.5",
    } <= set(ids(root["conformsTo"]))


def test_one_action_per_job_from_the_records(demo, crate):
    records = [json.loads(p.read_text()) for p in (demo / "results").rglob(f"*{RECORD_SUFFIX}")]
    records = [r for r in records if r["rule"] != "ro_crate"]
    jobs = Counter((r["rule"], json.dumps(r["wildcards"], sort_keys=True), r["started"]) for r in records)
    actions = {i: e for i, e in crate.items() if e["@type"] == "CreateAction" and i != "#run"}
    assert len(actions) == len(jobs) > 100
    assert Counter(e["name"].split()[1] for e in actions.values()) == Counter(rule for rule, _, _ in jobs)
    produced = [i for e in actions.values() for i in ids(e["result"])]
    assert len(produced) == len(set(produced)) == len(records)  # each artifact made by one job
    for e in [*actions.values(), crate["#run"]]:
        assert TIME.match(e["startTime"]) and TIME.match(e["endTime"]), e["@id"]
        assert (
            e["startTime"] <= e["endTime"] and e["actionStatus"] == "http://schema.org/CompletedActionStatus"
        )
    # an SAE training job: its store in, its SAEs out, its params, the training script as the tool
    train = next(e for e in actions.values() if e["name"].startswith("rule train_sae_paper"))
    assert [i for i in ids(train["object"]) if i.endswith(".zarr/")] and len(ids(train["result"])) >= 4
    params = {crate[i]["name"] for i in ids(train["object"]) if crate[i]["@type"] == "PropertyValue"}
    assert "settings" in params and "code" not in params
    assert train["instrument"]["@id"].endswith("workflow/scripts/train_sae.py")
    # extraction reads the model: a software entity with an honest url and version
    extract = next(e for e in actions.values() if e["name"].startswith("rule extract"))
    model = crate[next(i for i in ids(extract["object"]) if i.startswith("#model-"))]
    assert model["@type"] == "SoftwareApplication" and model["url"].startswith("https://")
    assert model["version"].split()[0] in ("timm", "open_clip")
    # steps, controls and the engine's organisation of them
    workflow = crate[crate["./"]["mainEntity"]["@id"]]
    steps = ids(workflow["step"])
    assert {crate[s]["name"].split()[1] for s in steps} == {rule for rule, _, _ in jobs}
    assert {crate[s]["workExample"]["@id"] for s in steps} == set(ids(workflow["hasPart"]))
    controls = [e for e in crate.values() if e["@type"] == "ControlAction"]
    assert sorted(c["object"]["@id"] for c in controls) == sorted(actions)
    assert all(c["instrument"]["@id"] in steps for c in controls)
    assert crate["#organize"]["result"] == {"@id": "#run"} and len(crate["#organize"]["object"]) == len(jobs)
    # the run's parameters, one PropertyValue per setting, as before
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    assert crate["#pv-sweeps.paper.lr"]["value"] == cfg["sweeps"]["paper"]["lr"]
    assert {"#model-dinov2-s14", "#model-clip-b16", "#dataset-imagenet-demo"} <= set(
        ids(crate["#run"]["object"])
    )


def test_rocrate_library_reads_it_back(demo):
    from rocrate.rocrate import ROCrate

    crate = ROCrate(demo / "results")
    assert crate.mainEntity.id == "provenance/ro-crate/workflow/Snakefile"


def test_crate_expands_as_json_ld(demo, crate):
    """Moved from test_provenance_e2e.py: expanded with the RO-Crate context rocrate ships (no network),
    every artifact's path is a schema:name."""
    import rdflib
    import rocrate

    meta = json.loads((demo / "results/ro-crate-metadata.json").read_text())
    context = json.loads((Path(rocrate.__file__).parent / "data/ro-crate.jsonld").read_text())["@context"]
    g = rdflib.Graph().parse(
        data=json.dumps({**meta, "@context": context}),
        format="json-ld",
        base=(demo / "results").as_uri() + "/",
    )
    names = {str(o) for o in g.objects(None, rdflib.URIRef("http://schema.org/name"))}
    assert len(g) > 5000 and recorded_artifacts(demo) <= names
