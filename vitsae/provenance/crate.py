"""A Workflow Run RO-Crate of one run: the workflow, its parameters, its inputs and every output.

``write_crate`` builds ``results/provenance/ro-crate/`` with the ``rocrate`` library, following the
Workflow Run Crate profile (https://w3id.org/ro/wfrun/workflow/0.5): one ``CreateAction`` whose
``instrument`` is the Snakefile, whose ``object`` is the resolved config, the datasets, the model
weights and one ``PropertyValue`` per config setting, and whose ``result`` is every artifact the
final outputs descend from.

What is copied into the crate: the workflow (Snakefile, rule files, scripts, schema and the
``vitsae`` modules the rules run), the resolved config, the final outputs (figures, tables, lineage
pages) and every artifact's provenance record (``records/<path>.prov.json``). What is not: the
activation stores and SAE checkpoints (hundreds of GB on the cluster). Those are described by
entities whose ``@id`` is their path relative to the crate directory (``../../sae/...``: it
resolves to the artifact beside the crate), with their digest and a link to their copied record.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vitsae.atomic import atomic_dir
from vitsae.provenance.lineage import lineage
from vitsae.provenance.records import record_path

PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": "Process Run Crate",
    "https://w3id.org/ro/wfrun/workflow/0.5": "Workflow Run Crate",
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


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists stay values."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


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


def run_artifacts(
    finals: list[Path], artifacts: list[Path] = ()
) -> tuple[dict[str, dict], dict[str, dict], Path]:
    """Every record node and every model node in the lineage of the final outputs and of the other
    artifacts of the run, and the workflow's working directory (from the first lineage)."""
    records: dict[str, dict] = {}
    models: dict[str, dict] = {}
    workdir = None
    for final in [*finals, *artifacts]:
        if workdir is not None and str(final) in records:
            continue  # already walked as part of an earlier lineage
        lin = lineage(final)
        workdir = workdir or Path(lin["workdir"])
        for path, node in lin["nodes"].items():
            if node.get("kind") == "model":
                models[path] = node
            elif not node.get("leaf") and not node.get("missing"):
                records[path] = node
            elif node.get("missing"):
                raise FileNotFoundError(
                    f"{path}: its provenance record is missing; rerun the rule that makes it"
                )
    return records, models, workdir or Path.cwd()


def write_crate(
    out_dir: str | os.PathLike,
    *,
    finals: list[str | os.PathLike],
    artifacts: list[str | os.PathLike] = (),
    copies: list[str | os.PathLike],
    config: Mapping,
    workflow_dir: str | os.PathLike,
    snakemake_version: str | None = None,
) -> Path:
    """Write the crate to ``out_dir`` (built aside, then moved into place); return its metadata file.

    ``finals``: the run's final outputs (figures, tables); ``artifacts``: its other outputs (those no
    final output reads, such as training logs, are found only here); ``copies``: files copied into the
    crate as they are (the finals and the lineage pages); ``config``: the resolved config.
    """
    from rocrate.model import ContextEntity
    from rocrate.rocrate import ROCrate

    out_dir = Path(out_dir)
    workflow_dir = Path(workflow_dir)
    finals = [Path(p) for p in finals]
    records, models, workdir = run_artifacts(finals, [Path(p) for p in artifacts])
    crate_from_workdir = os.path.relpath(out_dir.resolve(), workdir.resolve())

    def rel_to_crate(artifact: str) -> str:
        """An artifact's path as seen from the crate directory (``results/sae/x`` → ``../../sae/x``)."""
        return os.path.relpath(artifact, crate_from_workdir)

    crate = ROCrate()
    run_name = str(config.get("run_name", "run"))
    demo = bool(config.get("demo"))
    crate.name = f"vitsae {run_name}" + (" (demo: synthetic data, random weights)" if demo else "")
    crate.description = (
        "A run of the vitsae workflow: activation stores of vision models, sparse "
        "autoencoders trained on them, their evaluation and the paper's figures. Every artifact's "
        "provenance record is under records/."
    )
    crate.license = "https://spdx.org/licenses/CC-BY-4.0"
    for uri, name in PROFILES.items():
        crate.add(
            ContextEntity(
                crate,
                uri,
                properties={
                    "@type": ["CreativeWork", "Profile"],
                    "name": name,
                    "version": uri.rsplit("/", 1)[1],
                },
            )
        )
    crate.root_dataset["conformsTo"] = [
        {"@id": uri} for uri in PROFILES
    ]  # add_workflow adds Workflow RO-Crate

    # The workflow and the code it runs.
    workflow = crate.add_workflow(
        workflow_dir / "Snakefile",
        dest_path="workflow/Snakefile",
        main=True,
        lang="snakemake",
        lang_version=snakemake_version,
        properties={"name": "vitsae Snakemake workflow"},
    )
    parts = []
    for pattern in WORKFLOW_FILES[1:]:
        for src in sorted(workflow_dir.glob(pattern)):
            rel = src.relative_to(workflow_dir).as_posix()
            parts.append(crate.add_file(src, dest_path=f"workflow/{rel}", properties={"name": rel}))
    workflow["hasPart"] = parts

    # Parameters: the resolved config, as one file and one PropertyValue per setting.
    config_yaml = yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=True)
    config_file = crate.add_file(
        io.StringIO(config_yaml),
        dest_path="config.yaml",
        properties={
            "name": "resolved config",
            "encodingFormat": "application/yaml",
            "description": "The config this run used, after validation and defaults.",
        },
    )
    values = []
    formal = []
    for key, value in sorted(_flatten(json.loads(json.dumps(config, default=str))).items()):
        fp = crate.add_formal_parameter(
            name=key, additionalType=_param_type(value), identifier=f"#param-{key}"
        )
        formal.append(fp)
        values.append(
            crate.add(
                ContextEntity(
                    crate,
                    f"#pv-{key}",
                    properties={
                        "@type": "PropertyValue",
                        "name": key,
                        "value": _param_value(value),
                        "exampleOfWork": {"@id": fp.id},
                    },
                )
            )
        )
    workflow["input"] = formal

    # Inputs: datasets and model weights.
    inputs = [config_file]
    for name, ds in sorted(config.get("datasets", {}).items()):
        where = ds["root"] + (f" (generated: {json.dumps(ds['generate'])})" if ds.get("generate") else "")
        inputs.append(
            crate.add(
                ContextEntity(
                    crate,
                    f"#dataset-{name}",
                    properties={
                        "@type": "Dataset",
                        "name": name,
                        "description": f"{ds.get('format', 'dataset')} at {where}",
                    },
                )
            )
        )
    for key, node in sorted(models.items()):
        model, weights = node.get("model") or {}, node.get("weights") or {}
        props = {
            "@type": "SoftwareApplication",
            "name": key.split(":", 1)[1],
            "description": json.dumps({"model": model, "weights": weights}, sort_keys=True),
        }
        if weights.get("source") == "huggingface" and weights.get("repo_id"):
            props["url"] = f"https://huggingface.co/{weights['repo_id']}"
            if weights.get("revision"):
                props["version"] = weights["revision"]
        inputs.append(crate.add(ContextEntity(crate, f"#{key.replace(':', '-')}", properties=props)))

    # Results: every artifact; small final outputs copied, the rest described where they lie.
    copied = {Path(p).resolve(): Path(p) for p in copies}
    copied_ids = set(copied)
    results, external = [], []
    started, ended = [], []
    for path, rec in sorted(records.items()):
        started.append(rec["started"])
        ended.append(rec["ended"])
        full = (workdir / path).resolve()
        record_file = crate.add_file(
            record_path(full),
            dest_path=f"records/{path}.prov.json",
            properties={"name": f"provenance record of {path}", "encodingFormat": "application/json"},
        )
        props = {
            "name": path,
            "identifier": rec["digest"],
            "description": f"made by rule {rec['rule']}",
            "subjectOf": {"@id": record_file.id},
        }
        if full in copied:
            entity = crate.add_file(full, dest_path=path, properties=props)
            copied.pop(full)
        else:
            kind = "Dataset" if rec["digest"].startswith("tree:") else "File"
            entity = crate.add(
                ContextEntity(
                    crate,
                    rel_to_crate(path) + ("/" if kind == "Dataset" else ""),
                    properties={"@type": kind, **props},
                )
            )
        record_file["about"] = {"@id": entity.id}
        results.append(entity)
        if full not in copied_ids:
            external.append(entity)
    for full, given in sorted(copied.items()):  # lineage pages and other copies without records of their own
        rel = os.path.relpath(full, workdir.resolve())
        results.append(crate.add_file(full, dest_path=rel, properties={"name": rel}))

    # Data entities must hang off the root's hasPart (RO-Crate 1.1+), those outside the crate too.
    crate.root_dataset["hasPart"] = [*crate.root_dataset.get("hasPart", []), *external]
    crate.add_action(
        workflow,
        identifier="#run",
        object=inputs + values,
        result=results,
        properties={
            "name": f"Run of the vitsae workflow ({run_name})",
            "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"},
            "startTime": min(started) if started else None,
            "endTime": max(ended) if ended else None,
        },
    )

    atomic_dir(out_dir, crate.write)
    return out_dir / "ro-crate-metadata.json"
