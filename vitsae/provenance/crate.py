"""The run as a Workflow Run RO-Crate and a Provenance Run Crate, rooted at ``results/``.

``write_crate`` writes ``results/ro-crate-metadata.json``: the crate's root is ``results/`` itself, so
every artifact (activation stores, SAEs, evaluations, tables, figures, lineage pages) and every
provenance record beside it is a data entity *in place*, by its path under ``results/``; nothing big is
copied and no ``@id`` climbs above the root. What is copied, into ``results/provenance/ro-crate/``: the
workflow (Snakefile, rule files, scripts, schema and the ``vitsae`` modules the rules run) and the
resolved config, since they live outside ``results/``.

Profiles claimed (https://w3id.org/ro/wfrun/): Process Run, Workflow Run and Provenance Run Crate 0.5.

- Workflow level: one ``CreateAction`` (``#run``) whose ``instrument`` is the Snakefile, whose
  ``object`` is the resolved config, the datasets, the models and one ``PropertyValue`` per config
  setting, and whose ``result`` is every artifact.
- Job level: one ``CreateAction`` per job (``#job-NNN``, the records of one rule execution grouped by
  rule, wildcards and start time) with the job's inputs (with digests), params, start and end,
  ``instrument`` the rule's script; one ``HowToStep`` per rule (``#step-<rule>``) in the workflow's
  ``step``, whose ``workExample`` is that script; one ``ControlAction`` per job linking step and job; one
  ``OrganizeAction`` (``#organize``) whose ``instrument`` is Snakemake and ``result`` the run.

Timestamps are written as the profiles' pattern wants them (``2026-01-02T03:04:05.678+00:00``: at most
milliseconds); records keep their own. License, authors and publisher come from the config's
``crate:`` section. ``validator_cache`` serves the RO-Crate 1.3 JSON-LD context (bundled with
``rocrate``) to ``rocrate-validator --offline``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vitsae.atomic import atomic_dir, atomic_write
from vitsae.provenance.lineage import flatten, lineage
from vitsae.provenance.records import record_path

CONTEXT = "https://w3id.org/ro/crate/1.3/context"
#: The descriptor's conformsTo: RO-Crate 1.3 (the context used) and 1.1, which the run-crate profiles
#: 0.5 (and Workflow RO-Crate 1.0) are written against and which roc-validator requires for them.
SPEC_VERSIONS = ["https://w3id.org/ro/crate/1.3", "https://w3id.org/ro/crate/1.1"]
PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": "Process Run Crate",
    "https://w3id.org/ro/wfrun/workflow/0.5": "Workflow Run Crate",
    "https://w3id.org/ro/wfrun/provenance/0.5": "Provenance Run Crate",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0": "Workflow RO-Crate",
}
BIOSCHEMAS_PROFILE = "https://bioschemas.org/profiles/ComputationalWorkflow/1.0-RELEASE"
#: The RO-Crate 1.3 context maps ComputationalWorkflow to bioschemas.org/terms/; Workflow RO-Crate 1.0
#: (and roc-validator's shape for it) expects the older bioschemas.org/ComputationalWorkflow IRI.
BIOSCHEMAS_WORKFLOW_TYPE = "https://bioschemas.org/ComputationalWorkflow"
SNAKEMAKE_LANG = "https://w3id.org/workflowhub/workflow-ro-crate#snakemake"
SNAKEMAKE_URL = "https://snakemake.readthedocs.io"
PYTHON_LANG = "https://w3id.org/workflowhub/workflow-ro-crate#python"
COMPLETED = "http://schema.org/CompletedActionStatus"
#: Where a model family's architecture code comes from: (package as recorded, its source's URL).
MODEL_LIBRARIES = {
    "dinov2": ("timm", "https://github.com/huggingface/pytorch-image-models"),
    "timm": ("timm", "https://github.com/huggingface/pytorch-image-models"),
    "clip": ("open_clip", "https://github.com/mlfoundations/open_clip"),
}
LICENSE_NAMES = {
    "CC-BY-4.0": "Creative Commons Attribution 4.0 International",
    "CC0-1.0": "Creative Commons Zero v1.0 Universal",
    "MIT": "MIT License",
    "Apache-2.0": "Apache License 2.0",
}
#: Media types by suffix (``application/octet-stream`` for formats without a registered one).
FORMATS = {
    ".json": "application/json",
    ".csv": "text/csv",
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".html": "text/html",
    ".parquet": "application/vnd.apache.parquet",
    ".npz": "application/zip",
    ".yaml": "application/yaml",
    ".py": "text/x-python",
    ".toml": "application/toml",
    ".md": "text/markdown",
    ".rst": "text/x-rst",
    ".txt": "text/plain",
    ".smk": "text/plain",
    "": "text/plain",  # Snakefile
}
#: Workflow files copied into the crate (globs relative to the workflow's base directory).
WORKFLOW_FILES = [
    "Snakefile",
    "workflow/rules/*.smk",
    "workflow/scripts/*.py",
    "workflow/schemas/*.yaml",
    "workflow/report/*.rst",
    "vitsae/**/*.py",
    "pyproject.toml",
]


def crate_time(iso: str) -> str:
    """An ISO timestamp as the run-crate profiles' pattern wants it: UTC, ``+00:00``, milliseconds at most
    (``2026-12-05T07:52:47.883421+00:00`` → ``2026-12-05T07:52:47.883+00:00``; truncated, not rounded,
    so a start never passes its end)."""
    t = dt.datetime.fromisoformat(iso)
    if t.tzinfo is None:
        raise ValueError(f"timestamp {iso!r} has no time zone")
    t = t.astimezone(dt.timezone.utc)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}+00:00"


def encoding_format(path: str | os.PathLike) -> str:
    return FORMATS.get(Path(path).suffix.lower(), "application/octet-stream")


def _param_type(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    if isinstance(value, list):
        return "Collection"
    return "Text"


def _param_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def _ref(entity_id: str) -> dict[str, str]:
    return {"@id": entity_id}


def _compact(entity: dict) -> dict:
    """RO-Crate's compact form: a one-element list as its element (``[{"@id": x}]`` → ``{"@id": x}``)."""
    return {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in entity.items()}


@dataclass(frozen=True)
class Lineages:
    """Every record and model node in the lineage of a run's artifacts, the edges between them
    (``[upstream, downstream]`` paths or ``model:<name>`` keys) and the workflow's working directory."""

    records: dict[str, dict]
    models: dict[str, dict]
    edges: set[tuple[str, str]]
    workdir: Path


def run_artifacts(finals: list[Path], artifacts: list[Path] = ()) -> Lineages:
    """Walk the lineage of the final outputs and of the run's other artifacts (those no final output
    reads, such as training logs, are found only there)."""
    records: dict[str, dict] = {}
    models: dict[str, dict] = {}
    edges: set[tuple[str, str]] = set()
    workdir = None
    for final in [*finals, *artifacts]:
        if workdir is not None and os.path.relpath(Path(final).resolve(), workdir) in records:
            continue  # already walked as part of an earlier lineage
        lin = lineage(final)
        workdir = workdir or Path(lin["workdir"]).resolve()
        edges.update((a, b) for a, b in lin["edges"])
        for path, node in lin["nodes"].items():
            if node.get("kind") == "model":
                models[path] = node
            elif node.get("missing"):
                raise FileNotFoundError(
                    f"{path}: its provenance record is missing; rerun the rule that makes it"
                )
            elif not node.get("leaf"):
                records[path] = node
    return Lineages(records, models, edges, workdir or Path.cwd().resolve())


def group_jobs(records: Mapping[str, dict]) -> list[list[dict]]:
    """The records of each job (one rule execution writes one record per output), in start order."""
    jobs: dict[tuple, list[dict]] = {}
    for rec in records.values():
        key = (rec["started"], rec["rule"], json.dumps(rec.get("wildcards") or {}, sort_keys=True))
        jobs.setdefault(key, []).append(rec)
    return [sorted(jobs[k], key=lambda r: r["artifact"]) for k in sorted(jobs)]


def _model_entity(name: str, node: dict, packages: Mapping[str, str]) -> dict:
    """A model as a SoftwareApplication with an honest url and version: the hub repository and revision
    of pretrained weights; for random weights, the library whose architecture code built them and its
    version as recorded in the extraction job's environment."""
    model, weights = node.get("model") or {}, node.get("weights") or {}
    entity = {
        "@id": f"#model-{name}",
        "@type": "SoftwareApplication",
        "name": name,
        "description": json.dumps({"model": model, "weights": weights}, sort_keys=True),
    }
    if weights.get("source") == "huggingface" and weights.get("repo_id"):
        entity["url"] = f"https://huggingface.co/{weights['repo_id']}"
        entity["version"] = weights.get("revision") or "unknown"
    else:
        package, url = MODEL_LIBRARIES.get(model.get("family"), ("vitsae", "https://pypi.org/"))
        entity["url"] = url
        entity["version"] = f"{package} {packages.get(package, 'unknown')}"
        entity["description"] = (
            f"{model.get('arch')} built by {package} {packages.get(package, '(version not recorded)')} "
            f"with random weights (seed {weights.get('init_seed')}, state "
            f"{weights.get('state_sha256')}); " + entity["description"]
        )
    if weights.get("state_sha256") or weights.get("file_sha256"):
        entity["identifier"] = weights.get("file_sha256") or weights.get("state_sha256")
    return entity


def _people(crate_cfg: Mapping) -> tuple[list[dict], dict | None]:
    """Author and publisher entities from the config's ``crate:`` section."""
    authors = []
    for i, a in enumerate(crate_cfg.get("author") or []):
        orcid = a.get("orcid")
        if orcid and not orcid.startswith("http"):
            orcid = f"https://orcid.org/{orcid}"
        entity = {
            "@id": orcid or a.get("url") or f"#author-{i}",
            "@type": a.get("type", "Person"),
            "name": a["name"],
        }
        if a.get("url"):
            entity["url"] = a["url"]
        authors.append(entity)
    pub = crate_cfg.get("publisher")
    publisher = None
    if pub:
        publisher = {
            "@id": pub.get("url") or "#publisher",
            "@type": pub.get("type", "Organization"),
            "name": pub["name"],
        }
        if pub.get("url"):
            publisher["url"] = pub["url"]
    return authors, publisher


def write_crate(
    out_dir: str | os.PathLike,
    *,
    metadata: str | os.PathLike,
    finals: list[str | os.PathLike],
    artifacts: list[str | os.PathLike] = (),
    config: Mapping,
    workflow_dir: str | os.PathLike,
    rule_sources: Mapping[str, Mapping[str, str | None]],
    snakemake_version: str | None = None,
) -> Path:
    """Write the crate: ``metadata`` (``results/ro-crate-metadata.json``; its directory is the crate's
    root) and ``out_dir`` (``results/provenance/ro-crate/``: the copied workflow and resolved config,
    built aside, then moved into place). Returns the metadata file.

    ``finals``: the run's final outputs; ``artifacts``: its other outputs (lineage pages, logs...);
    ``config``: the resolved config; ``workflow_dir``: the workflow's base directory (holding the
    Snakefile); ``rule_sources``: each rule's ``{"snakefile": ..., "script": ...}`` relative to
    ``workflow_dir`` (the script, else the rule file, is the tool its jobs ran).
    """
    out_dir, metadata, workflow_dir = Path(out_dir), Path(metadata), Path(workflow_dir)
    root = metadata.parent.resolve()
    lin = run_artifacts([Path(p) for p in finals], [Path(p) for p in artifacts])
    crate_cfg = config.get("crate") or {}
    run_name = str(config.get("run_name", "run"))
    demo = bool(config.get("demo"))
    graph: dict[str, dict] = {}

    def add(entity: dict) -> dict:
        graph.setdefault(entity["@id"], {}).update(entity)
        return graph[entity["@id"]]

    def in_crate(path: str | os.PathLike) -> str:
        """A path (absolute, or relative to the workflow's working directory) as an id under the root."""
        rel = os.path.relpath((lin.workdir / path).resolve(), root)
        if rel == ".." or rel.startswith(("../", "/")):
            raise ValueError(
                f"{path} lies outside the crate's root {root} (the directory of {metadata.name}); "
                "write the crate's metadata in a directory above every artifact"
            )
        return Path(rel).as_posix()

    def file_props(full: Path) -> dict:
        return {"contentSize": str(full.stat().st_size), "encodingFormat": encoding_format(full)}

    copies_prefix = in_crate(out_dir.resolve())
    authors, publisher = _people(crate_cfg)
    agent = [_ref(a["@id"]) for a in authors]

    # The workflow, its language and the files copied beside the metadata.
    copies: dict[Path, Path] = {}  # source → path inside out_dir
    workflow_parts: list[dict] = []
    sources = sorted(
        {src for pattern in WORKFLOW_FILES for src in workflow_dir.glob(pattern) if src.is_file()}
    )
    for src in sources:
        rel = src.relative_to(workflow_dir).as_posix()
        copies[src] = Path("workflow") / rel
        if rel == "Snakefile":
            continue
        workflow_parts.append(
            add(
                {
                    "@id": f"{copies_prefix}/workflow/{rel}",
                    "@type": "File",
                    "name": rel,
                    "description": f"The workflow's {rel}, as it was when the crate was written.",
                    **file_props(src),
                }
            )
        )
    version = None
    for rec in lin.records.values():
        code = rec.get("code") or {}
        version = version or (
            f"vitsae {code.get('version')} ({(code.get('commit') or 'no commit')[:12]}"
            + (", with uncommitted changes)" if code.get("dirty") else ")")
        )
    version = version or "unknown"
    snakemake_version = snakemake_version or "unknown"
    add(
        {
            "@id": SNAKEMAKE_LANG,
            "@type": "ComputerLanguage",
            "name": "Snakemake",
            "alternateName": "SMK",
            "identifier": "https://doi.org/10.1093/bioinformatics/bts480",
            "url": SNAKEMAKE_URL,
            "version": snakemake_version,
        }
    )
    engine = add(
        {
            "@id": f"https://pypi.org/project/snakemake/{snakemake_version}/",
            "@type": "SoftwareApplication",
            "name": f"Snakemake {snakemake_version}",
            "url": SNAKEMAKE_URL,
            "version": snakemake_version,
        }
    )
    python = next(
        (
            r["environment"]["python"]
            for r in lin.records.values()
            if (r.get("environment") or {}).get("python")
        ),
        "unknown",
    )
    add(
        {
            "@id": PYTHON_LANG,
            "@type": "ComputerLanguage",
            "name": "Python",
            "url": "https://www.python.org",
            "version": python,
        }
    )
    workflow_id = f"{copies_prefix}/workflow/Snakefile"

    # Tools (a rule's script, else its rule file) and steps (one per rule that ran).
    jobs = group_jobs(lin.records)
    steps: dict[str, dict] = {}
    tools: dict[str, dict] = {}
    for job in jobs:
        rule = job[0]["rule"]
        if rule in steps:
            continue
        if rule not in rule_sources:
            raise KeyError(f"rule '{rule}' ran but has no entry in rule_sources; pass every rule's sources")
        src = rule_sources[rule].get("script") or rule_sources[rule]["snakefile"]
        tool_id = f"{copies_prefix}/workflow/{src}"
        tools[tool_id] = add(
            {
                "@id": tool_id,
                "@type": ["File", "SoftwareSourceCode"],
                "name": src,
                "description": f"Code run by the workflow's rules ({src}).",
                "version": version,
                "programmingLanguage": _ref(PYTHON_LANG if src.endswith(".py") else SNAKEMAKE_LANG),
                **file_props(workflow_dir / src),
            }
        )
        steps[rule] = add(
            {
                "@id": f"#step-{rule}",
                "@type": "HowToStep",
                "name": f"rule {rule}",
                "description": f"Snakemake rule {rule}, defined in {rule_sources[rule]['snakefile']}.",
                "position": len(steps),
                "workExample": _ref(tool_id),
            }
        )

    # Parameters: the resolved config, as one file and one PropertyValue per setting.
    plain_config = json.loads(json.dumps(config, default=str))
    config_yaml = yaml.safe_dump(plain_config, sort_keys=True)
    config_file = add(
        {
            "@id": f"{copies_prefix}/config.yaml",
            "@type": "File",
            "name": "resolved config",
            "description": "The config this run used, after validation and defaults.",
            "encodingFormat": "application/yaml",
            "contentSize": str(len(config_yaml.encode())),
        }
    )
    values, formal = [], []
    for key, value in sorted(flatten(plain_config).items()):
        fp = add(
            {
                "@id": f"#param-{key}",
                "@type": ["FormalParameter", "PropertyValueSpecification"],
                "name": key,
                "additionalType": _param_type(value),
                "conformsTo": _ref("https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"),
            }
        )
        formal.append(_ref(fp["@id"]))
        values.append(
            _ref(
                add(
                    {
                        "@id": f"#pv-{key}",
                        "@type": "PropertyValue",
                        "name": key,
                        "value": _param_value(value),
                        "exampleOfWork": _ref(fp["@id"]),
                    }
                )["@id"]
            )
        )
    add(
        {
            "@id": "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE",
            "@type": "CreativeWork",
            "name": "Bioschemas FormalParameter profile 1.0-RELEASE",
        }
    )

    # Inputs of the run: datasets and models.
    run_inputs = [_ref(config_file["@id"])]
    for name, ds in sorted(config.get("datasets", {}).items()):
        where = ds["root"] + (f" (generated: {json.dumps(ds['generate'])})" if ds.get("generate") else "")
        run_inputs.append(
            _ref(
                add(
                    {
                        "@id": f"#dataset-{name}",
                        "@type": "Dataset",
                        "name": name,
                        "description": f"{ds.get('format', 'dataset')} at {where}",
                    }
                )["@id"]
            )
        )
    packages: dict[str, str] = {}
    for rec in lin.records.values():
        packages = {**(rec.get("environment") or {}).get("packages", {}), **packages}
    for key, node in sorted(lin.models.items()):
        run_inputs.append(_ref(add(_model_entity(key.split(":", 1)[1], node, packages))["@id"]))

    # Every artifact, in place, with its record beside it.
    entity_of: dict[str, str] = {}  # workdir-relative path or model key → entity id
    dataset_roots = {
        (lin.workdir / ds["root"]).resolve(): f"#dataset-{name}"
        for name, ds in config.get("datasets", {}).items()
        if ds.get("root")
    }
    leaf_parts: list[dict] = []  # inputs no rule made that lie under the root (listed in hasPart)
    for key in lin.models:
        entity_of[key] = f"#model-{key.split(':', 1)[1]}"
    results = []
    for path, rec in sorted(lin.records.items()):
        full = (lin.workdir / path).resolve()
        is_dir = rec["digest"].startswith("tree:") or full.is_dir()
        entity_id = in_crate(full) + ("/" if is_dir else "")
        record_id = in_crate(record_path(full))
        props = {
            "@id": entity_id,
            "@type": "Dataset" if is_dir else "File",
            "name": path,
            "identifier": rec["digest"],
            "description": f"made by rule {rec['rule']}",
            "subjectOf": _ref(record_id),
        }
        if not is_dir:
            props.update(file_props(full))
            if str(rec.get("content_sha256", "")).startswith("sha256:"):
                props["sha256"] = rec["content_sha256"].split(":", 1)[1]
        entity_of[path] = add(props)["@id"]
        add(
            {
                "@id": record_id,
                "@type": "File",
                "name": f"provenance record of {path}",
                "description": f"What made {path}: rule, inputs with digests, params, code, environment.",
                "about": _ref(entity_id),
                **file_props(record_path(full)),
            }
        )
        results.append(_ref(entity_id))

    def leaf_entity(src: str, rec: dict) -> str:
        """The entity of an input no rule made: its dataset (an image of a configured dataset), else a
        data entity in place, else (outside the root) a contextual entity naming its path and digest."""
        entry = next(e for e in rec.get("inputs", []) if e["path"] == src)
        full = (lin.workdir / src).resolve()
        for ds_root, ds_id in dataset_roots.items():
            if full == ds_root or ds_root in full.parents:
                return ds_id
        is_dir = entry["digest"].startswith("tree:") or full.is_dir()
        props = {
            "@type": "Dataset" if is_dir else "File",
            "name": src,
            "identifier": entry["digest"],
            "description": "An input of the run that no recorded rule made.",
        }
        try:
            props["@id"] = in_crate(full) + ("/" if is_dir else "")
        except ValueError:  # outside the root: described, not a data entity
            props["@id"] = "#input-" + entry["digest"].split(":", 1)[-1][:16]
            props["@type"] = "CreativeWork"
            return add(props)["@id"]
        if not is_dir and full.is_file():
            props.update(file_props(full))
        leaf_parts.append(_ref(props["@id"]))
        return add(props)["@id"]

    # One CreateAction per job, its step's ControlAction, and the engine's OrganizeAction.
    actions, controls = [], []
    for i, job in enumerate(jobs):
        first, rule = job[0], job[0]["rule"]
        wildcards = first.get("wildcards") or {}
        where = ", ".join(f"{k}={v}" for k, v in sorted(wildcards.items()))
        inputs = []
        for rec in job:
            for src, dst in sorted(lin.edges):
                if dst == rec["artifact"] and src not in [r["artifact"] for r in job]:
                    if src not in entity_of:
                        entity_of[src] = leaf_entity(src, rec)
                    if _ref(entity_of[src]) not in inputs:
                        inputs.append(_ref(entity_of[src]))
        params = []
        for key, value in sorted((first.get("params") or {}).items()):
            if key == "code":  # module digests: in the record, not a parameter
                continue
            params.append(
                _ref(
                    add(
                        {
                            "@id": f"#job-{i:03d}-{key}",
                            "@type": "PropertyValue",
                            "name": key,
                            "value": _param_value(value),
                        }
                    )["@id"]
                )
            )
        env = first.get("environment") or {}
        job_id = f"#job-{i:03d}"
        tool_id = steps[rule]["workExample"]["@id"]
        action = {
            "@id": job_id,
            "@type": "CreateAction",
            "name": f"rule {rule}" + (f" ({where})" if where else ""),
            "description": (
                f"One execution of rule {rule} on host {env.get('host', '?')}"
                + (f", GPU {env['gpu']}" if env.get("gpu") else "")
                + f", {first.get('duration_s', '?')} s; its records: "
                + ", ".join(in_crate(record_path(lin.workdir / r["artifact"])) for r in job)
            ),
            "instrument": _ref(tool_id),
            "object": inputs + params,
            "result": [_ref(entity_of[r["artifact"]]) for r in job],
            "startTime": crate_time(first["started"]),
            "endTime": crate_time(max(r["ended"] for r in job)),
            "actionStatus": COMPLETED,
        }
        if agent:
            action["agent"] = agent
        actions.append(_ref(add(action)["@id"]))
        controls.append(
            _ref(
                add(
                    {
                        "@id": f"#control-{i:03d}",
                        "@type": "ControlAction",
                        "name": f"orchestrate rule {rule}" + (f" ({where})" if where else ""),
                        "instrument": _ref(steps[rule]["@id"]),
                        "object": _ref(job_id),
                        "actionStatus": COMPLETED,
                    }
                )["@id"]
            )
        )

    starts = [crate_time(r["started"]) for r in lin.records.values()]
    ends = [crate_time(r["ended"]) for r in lin.records.values()]
    run = {
        "@id": "#run",
        "@type": "CreateAction",
        "name": f"Run of the vitsae workflow ({run_name})",
        "description": (
            f"The run '{run_name}' of the vitsae workflow: {len(jobs)} jobs of {len(steps)} rules."
            + (" A demo: synthetic data, random weights." if demo else "")
        ),
        "instrument": _ref(workflow_id),
        "object": run_inputs + values,
        "result": results,
        "actionStatus": COMPLETED,
    }
    if starts:
        run["startTime"], run["endTime"] = min(starts), max(ends)
    if agent:
        run["agent"] = agent
    add(run)
    organize = {
        "@id": "#organize",
        "@type": "OrganizeAction",
        "name": f"Snakemake's orchestration of the run ({run_name})",
        "instrument": _ref(engine["@id"]),
        "object": controls,
        "result": _ref("#run"),
        "actionStatus": COMPLETED,
    }
    if starts:
        organize["startTime"], organize["endTime"] = min(starts), max(ends)
    add(organize)

    add(
        {
            "@id": workflow_id,
            "@type": [
                "File",
                "SoftwareSourceCode",
                "ComputationalWorkflow",
                "HowTo",
                BIOSCHEMAS_WORKFLOW_TYPE,
            ],
            "name": "vitsae Snakemake workflow",
            "description": "The Snakefile of the vitsae workflow; its rules, scripts and modules are its parts.",
            "programmingLanguage": _ref(SNAKEMAKE_LANG),
            "conformsTo": _ref(BIOSCHEMAS_PROFILE),
            "version": version,
            "hasPart": [_ref(t) for t in tools],  # the profile: only the tools its steps ran
            "step": [_ref(s["@id"]) for s in steps.values()],
            "input": formal,
            **file_props(workflow_dir / "Snakefile"),
        }
    )
    add(
        {
            "@id": BIOSCHEMAS_PROFILE,
            "@type": "CreativeWork",
            "name": "Bioschemas ComputationalWorkflow profile 1.0-RELEASE",
        }
    )
    for uri, name in PROFILES.items():
        add(
            {
                "@id": uri,
                "@type": ["CreativeWork", "Profile"],
                "name": name,
                "version": uri.rsplit("/", 1)[1],
            }
        )
    license_id = str(crate_cfg.get("license") or "CC-BY-4.0")
    license_url = license_id if license_id.startswith("http") else f"https://spdx.org/licenses/{license_id}"
    license_name = LICENSE_NAMES.get(license_id, license_id)
    add(
        {
            "@id": license_url,
            "@type": "CreativeWork",
            "name": license_name,
            "description": f"The license of this crate's metadata and of the run's outputs: {license_name}.",
            "identifier": license_id,
        }
    )
    for entity in [*authors, *([publisher] if publisher else [])]:
        add(entity)

    root_entity = {
        "@id": "./",
        "@type": "Dataset",
        "name": f"vitsae {run_name}" + (" (demo: synthetic data, random weights)" if demo else ""),
        "description": (
            "A run of the vitsae workflow: activation stores of vision models, sparse autoencoders "
            "trained on them, their evaluation and the paper's figures, described in place (this "
            "directory is the crate's root), each with its provenance record beside it. The workflow "
            f"and the resolved config are copied under {copies_prefix}/."
        ),
        "datePublished": crate_time(dt.datetime.now(dt.timezone.utc).isoformat()),
        "license": _ref(license_url),
        "conformsTo": [_ref(uri) for uri in PROFILES],
        "mainEntity": _ref(workflow_id),
        "hasPart": [
            _ref(workflow_id),
            _ref(config_file["@id"]),
            *[_ref(p["@id"]) for p in workflow_parts],
            *results,
            *leaf_parts,
            *[_ref(e["@id"]) for e in graph.values() if e["@id"].endswith(".prov.json")],
        ],
        "mentions": [_ref("#run"), _ref("#organize"), *actions, *controls],
    }
    if authors:
        root_entity["author"] = [_ref(a["@id"]) for a in authors]
    if publisher:
        root_entity["publisher"] = _ref(publisher["@id"])
    descriptor = {
        "@id": metadata.name,
        "@type": "CreativeWork",
        "about": _ref("./"),
        "conformsTo": [_ref(v) for v in SPEC_VERSIONS],
    }
    entities = [descriptor, root_entity, *graph.values()]
    doc = {"@context": CONTEXT, "@graph": [_compact(e) for e in entities]}

    def build(tmp: Path) -> None:
        for src, dest in copies.items():
            (tmp / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / dest)
        (tmp / "config.yaml").write_text(config_yaml)

    atomic_dir(out_dir, build)
    atomic_write(metadata, lambda tmp: tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False)))
    return metadata


def validator_cache(cache: str | os.PathLike) -> Path:
    """An HTTP cache (``requests-cache`` SQLite, as ``rocrate-validator`` keeps it) holding the RO-Crate
    1.3 JSON-LD context from the copy the ``rocrate`` package ships, so that
    ``rocrate-validator validate --offline --cache-path <cache>`` needs no network. Returns the SQLite
    file (``<cache>.sqlite``)."""
    import io

    import requests
    import rocrate
    import urllib3
    from requests.adapters import BaseAdapter
    from requests_cache import CachedSession

    files = {CONTEXT: Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld"}

    class Local(BaseAdapter):
        def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
            body = files[request.url].read_bytes()
            response = requests.Response()
            response.status_code = 200
            response.headers["Content-Type"] = "application/ld+json"
            response.raw = urllib3.HTTPResponse(
                body=io.BytesIO(body),
                headers={"Content-Type": "application/ld+json"},
                status=200,
                preload_content=False,
                request_url=request.url,
            )
            response._content = body
            response.url, response.request, response.encoding = request.url, request, "utf-8"
            return response

        def close(self) -> None:
            pass

    cache = Path(cache)
    session = CachedSession(
        cache_name=str(cache),
        backend="sqlite",
        expire_after=-1,
        allowable_methods=("GET",),
        allowable_codes=(200, 302, 404),
    )
    session.mount("https://", Local())
    for url in files:
        if session.get(url).status_code != 200:
            raise RuntimeError(f"{cache}: could not store {url} in the validator's cache")
    session.close()
    return cache.with_name(cache.name + ".sqlite")
