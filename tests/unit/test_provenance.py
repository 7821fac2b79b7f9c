"""Provenance records, lineage, the lineage page and verification, on a tiny fake lineage (no Snakemake):
manifest → activation store (with model weights) → SAE checkpoint → figure."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import zarr

from vitsae import layout
from vitsae.cli import main
from vitsae.data.store import check_chunks, write_arrays
from vitsae.layout import remember_configfiles
from vitsae.provenance import lineage as lineage_module
from vitsae.provenance.lineage import lineage, verify
from vitsae.provenance.page import write_lineage
from vitsae.provenance.records import (
    code_version,
    content_sha256,
    digest_artifact,
    environment,
    read_record,
    record_path,
    write_record,
)
from vitsae.provenance.source import source_digest

REPO = Path(__file__).resolve().parents[2]
MODEL = {"name": "dino_s", "family": "dinov2", "arch": "vit_small_patch14_dinov2"}
WEIGHTS = {"source": "huggingface", "repo_id": "timm/vit_small_patch14_dinov2.lvd142m", "cached_file": None}


def make(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def record(rule: str, inputs: list[Path], output: Path, modules: list[str], **params) -> dict:
    t0 = time.time()
    paths = write_record(
        rule=rule,
        wildcards={"dataset": "toy"},
        inputs=[str(p) for p in inputs],
        outputs=[str(output)],
        params=params,
        config={"seed": 0},
        modules=modules,
        seed=0,
        started=t0,
        ended=t0 + 1.5,
    )
    assert paths == [record_path(output)]
    return json.loads(paths[0].read_text())


@pytest.fixture
def chain(tmp_path):
    """Four artifacts with records; returns their paths. The records hold absolute paths, so `vitsae
    verify` takes the directory above their ``results/`` (tmp_path) for their run's working directory,
    whatever the current one (the checkout, where `make demo` leaves its config files)."""
    images = make(tmp_path, "data/images/0.png", b"\x89PNG fake image")
    manifest = make(tmp_path, "results/manifests/toy.parquet", b"manifest rows")
    record("manifest", [images], manifest, ["vitsae.data.manifest"])
    store = tmp_path / "results/activations/toy/dino_s/layer3.zarr"
    acts = np.arange(4 * 3 * 8, dtype=np.float32).reshape(4, 3, 8) / 10
    write_arrays(store, {"model": MODEL, "weights": WEIGHTS, "manifest_sha256": "abc"}, {"train": acts}, 2)
    record("extract", [manifest], store, ["vitsae.data.activations", "vitsae.data.models"])
    sae = make(tmp_path, "results/sae/toy/dino_s/layer3.safetensors", bytes(range(256)) * 4)
    record(
        "train_sae",
        [store],
        sae,
        ["vitsae.sae.train"],
        lr=np.float32(1e-3),
        steps=np.int64(10),
        out=Path("x"),
    )
    figure = make(tmp_path, "results/figures/transfer.pdf", b"%PDF-1.4 figure")
    record("transfer", [sae], figure, ["vitsae.analysis.transfer"])
    return {"images": images, "manifest": manifest, "store": store, "sae": sae, "figure": figure}


def test_record_path_sits_beside_the_artifact(tmp_path):
    assert record_path(tmp_path / "a/x.zarr") == tmp_path / "a/x.zarr.prov.json"
    assert record_path(Path("f.pdf")) == Path("f.pdf.prov.json")


def test_digest_of_a_file_is_its_sha256_and_missing_names_the_path(tmp_path):
    f = make(tmp_path, "f.bin", b"x" * (3 << 20) + b"tail")  # several read blocks
    assert digest_artifact(f) == "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        digest_artifact(tmp_path / "nope.bin")


def test_tree_digest_sees_metadata_sizes_and_chunk_checksums(tmp_path):
    store = write_arrays(tmp_path / "s.zarr", {"model": MODEL}, {"train": np.ones((4, 2, 3))}, 2)
    d0 = digest_artifact(store)
    assert d0.startswith("tree:") and digest_artifact(store) == d0
    chunk = store / "train/c/0/0/0"
    # A chunk rewritten in place with other values of the same size: its crc32c trailer changes.
    zarr.open_group(str(store), mode="r+")["train"][0] = 2.0
    assert chunk.stat().st_size == len(chunk.read_bytes()) and digest_artifact(store) != d0
    d1 = digest_artifact(store)
    # Bit rot under an intact trailer is left to --deep (check_chunks), which reads every chunk.
    data = bytearray(chunk.read_bytes())
    data[0] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert digest_artifact(store) == d1
    assert check_chunks(store) == (4, [f"corrupt chunk: {chunk} (its crc32c does not match its bytes)"])
    with pytest.raises(ValueError, match="checksum do not match"):
        zarr.open_group(str(store), mode="r")["train"][:]
    meta = store / "zarr.json"
    meta.write_text(meta.read_text().replace("dino_s", "dino_b"))
    d2 = digest_artifact(store)
    assert d2 != d1
    chunk.unlink()
    assert digest_artifact(store) != d2


def test_environment_names_versions_host_and_slurm_without_cuda_here(monkeypatch):
    import importlib.metadata

    import torch

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    env = environment()
    assert env["slurm_job_id"] == "4242"
    assert env["python"] == sys.version.split()[0]
    assert env["packages"]["torch"] == importlib.metadata.version("torch")
    assert env["packages"]["open_clip"] == importlib.metadata.version("open_clip_torch")
    assert env["packages"]["vitsae"] == importlib.metadata.version("vitsae")
    assert env["host"] and "cpu" in env
    assert (env["gpu"] is not None) == torch.cuda.is_available()
    monkeypatch.delenv("SLURM_JOB_ID")
    assert environment()["slurm_job_id"] is None


def test_environment_of_a_job_that_never_loaded_torch_does_not_load_it():
    code = (
        "import sys\nfrom vitsae.provenance.records import environment\nenv = environment()\n"
        "print('torch' in sys.modules, env['cuda'], env['gpu'], env['packages']['torch'] is not None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    # the torch version still comes from the package metadata; CUDA and the GPU: none used
    assert out == ["False", "None", "None", "True"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        check=True,
        text=True,
    ).stdout


def test_code_version_reads_commit_dirty_flag_and_diff(tmp_path):
    outside = code_version(["vitsae.sae.train"], repo=tmp_path)
    assert outside["commit"] is None and outside["dirty"] is None
    assert outside["modules"] == {"vitsae.sae.train": source_digest("vitsae.sae.train")}

    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    clean = code_version([], repo=tmp_path)
    assert clean["commit"] == _git(tmp_path, "rev-parse", "HEAD").strip()
    assert clean["dirty"] is False and clean["diff_sha256"] is None
    (tmp_path / "untracked.py").write_text("ignored\n")
    assert code_version([], repo=tmp_path)["dirty"] is False
    (tmp_path / "a.py").write_text("x = 2\n")
    dirty = code_version([], repo=tmp_path)
    diff = subprocess.run(
        ["git", "-C", str(tmp_path), "diff", "HEAD"], capture_output=True, check=True
    ).stdout
    assert dirty["dirty"] is True and dirty["diff_sha256"] == hashlib.sha256(diff).hexdigest()


def test_records_hold_every_field(chain):
    rec = read_record(chain["sae"])
    assert rec["schema"] == "vitsae.provenance/1"
    assert rec["artifact"] == str(chain["sae"]) and rec["rule"] == "train_sae"
    assert rec["digest"] == digest_artifact(chain["sae"])
    assert rec["inputs"] == [
        {
            "path": str(chain["store"]),
            "digest": digest_artifact(chain["store"]),
            "record": read_record(chain["store"])["id"],
            "record_sha256": "sha256:" + hashlib.sha256(record_path(chain["store"]).read_bytes()).hexdigest(),
        }
    ]
    assert rec["content_sha256"] == content_sha256(rec)
    assert rec["params"] == {"lr": pytest.approx(1e-3), "steps": 10, "out": "x"}
    assert type(rec["params"]["steps"]) is int
    assert rec["config"] == {"seed": 0} and rec["seed"] == 0 and rec["wildcards"] == {"dataset": "toy"}
    assert rec["code"]["modules"] == {"vitsae.sae.train": source_digest("vitsae.sae.train")}
    assert set(rec["code"]) >= {"commit", "dirty", "diff_sha256", "version"}
    assert set(rec["environment"]) >= {"python", "host", "cpu", "packages", "cuda", "gpu", "slurm_job_id"}
    assert rec["started"].endswith("+00:00") and rec["duration_s"] == 1.5
    assert len(rec["id"]) == 16
    manifest = read_record(chain["manifest"])
    assert manifest["inputs"][0]["record"] is None  # a raw image has no record
    assert read_record(chain["store"])["store"]["weights"] == WEIGHTS
    assert "training" not in rec  # an SAE file without its cfg.json


def test_an_sae_record_holds_the_precision_its_trainer_resolved(tmp_path):
    """cfg.json says what ran (the config may say auto): the record carries it into the lineage."""
    store = write_arrays(tmp_path / "s.zarr", {"model": MODEL}, {"train": np.ones((4, 2, 3))}, 2)
    sae = make(tmp_path, "results/sae/toy/sae.safetensors", b"weights")
    (sae.parent / "cfg.json").write_text(json.dumps({"precision": "bf16", "compile": True, "lr": 0.01}))
    rec = record("train_sae", [store], sae, ["vitsae.sae.train"], training={"precision": "auto"})
    assert rec["training"] == {"precision": "bf16", "compile": True}
    assert rec["params"]["training"] == {"precision": "auto"}


def test_same_inputs_give_the_same_id_and_a_param_change_does_not(chain, tmp_path):
    first = read_record(chain["sae"])
    time.sleep(0.01)

    def again(steps: int) -> dict:
        return record("train_sae", [chain["store"]], chain["sae"], ["vitsae.sae.train"], lr=np.float32(1e-3),
                      steps=np.int64(steps), out=Path("x"))  # fmt: skip

    same = again(10)
    assert same["id"] == first["id"] and same["started"] != first["started"]
    assert again(11)["id"] != first["id"]
    assert not list(chain["sae"].parent.glob(".*tmp*"))  # the atomic write left no temp file


def test_missing_record_and_unserialisable_params_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"x\.pt: no provenance record; rerun the rule that makes it"):
        read_record(tmp_path / "x.pt")
    out = make(tmp_path, "o.bin", b"o")
    with pytest.raises(TypeError, match=r"rule r: params\.bad"):
        write_record(
            rule="r",
            wildcards={},
            inputs=[],
            outputs=[str(out)],
            params={"bad": object()},
            config={},
            modules=[],
            seed=None,
            started=0.0,
            ended=1.0,
        )


def test_lineage_reaches_the_manifest_raw_inputs_and_the_model(chain):
    lin = lineage(chain["figure"])
    nodes = lin["nodes"]
    s = {k: str(v) for k, v in chain.items()}
    assert lin["root"] == s["figure"]
    assert set(nodes) == {s["figure"], s["sae"], s["store"], s["manifest"], s["images"], "model:dino_s"}
    assert nodes[s["manifest"]]["rule"] == "manifest"
    assert nodes[s["images"]] == {"leaf": True, "digest": digest_artifact(chain["images"])}
    assert nodes["model:dino_s"]["weights"] == WEIGHTS and nodes["model:dino_s"]["model"] == MODEL
    assert sorted(lin["edges"]) == sorted(
        [
            [s["sae"], s["figure"]],
            [s["store"], s["sae"]],
            [s["manifest"], s["store"]],
            ["model:dino_s", s["store"]],
            [s["images"], s["manifest"]],
        ]
    )


def test_verify_is_clean_then_names_a_changed_checkpoint(chain, capsys):
    assert verify(chain["figure"]) == []
    assert main(["verify", str(chain["figure"])]) == 0
    assert capsys.readouterr().out.strip() == "ok: 5 artifacts verified"
    before = digest_artifact(chain["sae"])
    data = bytearray(chain["sae"].read_bytes())
    data[100] ^= 0x01
    chain["sae"].write_bytes(bytes(data))
    problems = verify(chain["figure"])
    now = digest_artifact(chain["sae"])
    assert problems == [f"changed: {chain['sae']} (recorded {before}, now {now})"]
    assert main(["verify", str(chain["figure"])]) == 1
    assert capsys.readouterr().out.strip() == problems[0]


def test_verify_names_a_deleted_store(chain):
    import shutil

    shutil.rmtree(chain["store"])
    assert verify(chain["figure"]) == [f"missing: {chain['store']}"]
    assert "model:dino_s" in lineage(chain["figure"])["nodes"]  # weights still named from the record


def test_verify_names_an_upstream_remade_without_rebuilding_its_consumer(chain):
    old = digest_artifact(chain["sae"])
    chain["sae"].write_bytes(b"retrained")
    record("train_sae", [chain["store"]], chain["sae"], ["vitsae.sae.train"], lr=1e-3, steps=10, out="x")
    now = digest_artifact(chain["sae"])
    assert verify(chain["figure"]) == [f"changed: {chain['sae']} (recorded {old}, now {now})"]


def test_verify_names_code_changed_since_the_record(chain, monkeypatch):
    from vitsae.provenance import lineage as lineage_module

    real = lineage_module.source_digest
    monkeypatch.setattr(lineage_module, "source_digest",
                        lambda m: "0123456789abcdef" if m == "vitsae.sae.train" else real(m))  # fmt: skip
    recorded = read_record(chain["sae"])["code"]["modules"]["vitsae.sae.train"]
    expected = f"code changed: {chain['sae']} was made by vitsae.sae.train {recorded}, source is now 0123456789abcdef"
    assert verify(chain["figure"]) == [expected]


def test_verify_names_an_edited_record(chain):
    path = record_path(chain["sae"])
    clean = path.read_text()
    rec = json.loads(clean)
    rec["params"]["lr"] = 0.5  # an edit to what made it: its id no longer matches
    path.write_text(json.dumps(rec))
    problems = verify(chain["figure"])
    assert any(
        p.startswith(f"edited record: {path} says id {rec['id']}, its content gives ") for p in problems
    )
    rec = json.loads(clean)
    rec["config"]["seed"] = 7  # outside the id: the record's own content digest sees it
    path.write_text(json.dumps(rec))
    problems = verify(chain["figure"])
    assert any(p.startswith(f"edited record: {path} says content {rec['content_sha256']}") for p in problems)
    rec["content_sha256"] = content_sha256(rec)  # a careful edit: the consumer's copy of the digest sees it
    path.write_text(json.dumps(rec))
    read_as = json.loads(record_path(chain["figure"]).read_text())["inputs"][0]["record_sha256"]
    now = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert verify(chain["figure"]) == [
        f"edited record: {path} (read by {chain['figure']} as {read_as}, now {now})"
    ]
    path.write_text(clean)
    assert verify(chain["figure"]) == []


def test_verify_names_each_config_key_changed_since_the_records(chain):
    assert verify(chain["figure"], config={"seed": 0}) == []
    assert verify(chain["figure"], config={"seed": 1, "sweeps": {"paper": {"lr": 0.01}}}) == [
        "config changed: seed: recorded 0, now 1 (in 4 of 4 records)",
        'config changed: sweeps.paper.lr: recorded "<absent>", now 0.01 (in 4 of 4 records)',
    ]


def test_verify_names_a_lost_record(chain):
    record_path(chain["store"]).unlink()
    lin = lineage(chain["figure"])
    assert lin["nodes"][str(chain["store"])]["missing"] is True
    problems = verify(chain["figure"])
    assert len(problems) == 1 and problems[0].startswith(f"missing: {record_path(chain['store'])}")


def test_cli_as_a_module_exit_codes(chain, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vitsae.cli", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,  # no Snakemake run there: the config is not compared
            timeout=60,
            check=False,
        )

    ok = run("verify", str(chain["figure"]))
    assert ok.returncode == 0 and ok.stdout.strip() == "ok: 5 artifacts verified"
    chain["manifest"].write_bytes(b"edited")
    bad = run("verify", str(chain["figure"]))
    assert bad.returncode == 1 and bad.stdout.startswith(f"changed: {chain['manifest']} (recorded sha256:")
    none = run("verify", str(tmp_path / "nothing.pdf"))
    assert none.returncode == 2 and "no provenance record" in none.stderr


def test_relative_paths_resolve_from_the_workdir_the_artifact_implies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make(tmp_path, "results/a.txt", b"a")
    make(tmp_path, "results/b.txt", b"b")
    record("a", [], Path("results/a.txt"), [])
    record("b", [Path("results/a.txt")], Path("results/b.txt"), [])
    monkeypatch.chdir(REPO)
    assert verify(tmp_path / "results/b.txt") == []
    (tmp_path / "results/a.txt").unlink()
    assert verify(tmp_path / "results/b.txt") == ["missing: results/a.txt"]


def test_the_workdir_comes_from_the_artifact_not_from_the_current_directory(
    chain, tmp_path, monkeypatch, capsys
):
    # another run's directory, with the config files its Snakemake run remembered: not the chain's run
    other = tmp_path / "other"
    remember_configfiles([REPO / "config" / "config.yaml"], other)
    monkeypatch.chdir(other)
    assert lineage_module.RESULTS == layout.RESULTS
    assert lineage(chain["figure"])["workdir"] == str(tmp_path)  # absolute records: above results/
    assert main(["verify", str(chain["figure"])]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "ok: 5 artifacts verified"
    assert f"no Snakemake run in {tmp_path})" in captured.err
    # relative records, given as a relative path from another directory
    make(tmp_path, "run/results/a.txt", b"a")
    monkeypatch.chdir(tmp_path / "run")
    record("a", [], Path("results/a.txt"), [])
    monkeypatch.chdir(other)
    assert lineage(Path("../run/results/a.txt"))["workdir"] == str(tmp_path / "run")
    assert verify(Path("../run/results/a.txt")) == []


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}  # anchor id → data-path
        self.hrefs: set[str] = set()
        self.tag: list[str] = []
        self.text: dict[str, str] = {"title": "", "h1": ""}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = a.get("data-path", "")
        if tag == "a" and "href" in a:
            self.hrefs.add(a["href"])
        if tag in ("script", "link"):
            raise AssertionError(f"page loads <{tag}>: it must be self-contained")
        self.tag.append(tag)

    def handle_endtag(self, tag):
        self.tag.pop()

    def handle_data(self, data):
        if self.tag and self.tag[-1] in self.text:
            self.text[self.tag[-1]] += data


def test_lineage_page_and_json(chain, tmp_path):
    html_path = tmp_path / "results/provenance/transfer.html"
    json_path = tmp_path / "results/provenance/transfer.json"
    write_lineage(chain["figure"], html_path, json_path, title="SAE transfer: toy")
    lin = json.loads(json_path.read_text())
    assert (
        lin["root"] == str(chain["figure"]) and len(lin["nodes"]) == 6 and lin["title"] == "SAE transfer: toy"
    )
    page = _Page()
    page.feed(html_path.read_text())
    assert page.text["title"] == "SAE transfer: toy: provenance" and page.text["h1"] == "SAE transfer: toy"
    sections = {path: anchor for anchor, path in page.ids.items() if path}
    raw = {str(chain["images"])}  # raw inputs get no section of their own: their consumer lists them
    assert set(sections) == set(lin["nodes"]) - raw  # one section per other node
    for anchor in sections.values():
        assert f"#{anchor}" in page.hrefs  # and every node is linked to
    assert "../figures/transfer.pdf" in page.hrefs  # the figure itself, relative to the page
    text = html_path.read_text()
    assert read_record(chain["sae"])["code"]["modules"]["vitsae.sae.train"] in text
    assert "timm/vit_small_patch14_dinov2.lvd142m" in text
    image_digest = lin["nodes"][str(chain["images"])]["digest"]
    assert text.count(image_digest) == 1 and "1 raw input file under" in text


def test_tree_digest_ignores_snakemakes_timestamp_file(tmp_path):
    d = tmp_path / "store.zarr"
    d.mkdir()
    (d / "zarr.json").write_text("{}")
    before = digest_artifact(d)
    (d / ".snakemake_timestamp").write_bytes(b"")  # Snakemake adds it after the job
    assert digest_artifact(d) == before
    (d / "c0").write_bytes(b"x")
    assert digest_artifact(d) != before
