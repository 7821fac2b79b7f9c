"""A figure's lineage: its record, the records of its inputs, theirs, down to dataset manifests, raw
inputs and model weights; and :func:`verify`, which recomputes every digest along it.

Paths are stored as the rule gave them (relative to the workflow's working directory under
Snakemake). :func:`lineage` resolves relative paths against that directory, which it infers from the
path it is given (``/x/results/figures/a.pdf`` whose record says ``results/figures/a.pdf`` → ``/x``;
for a record with absolute paths, the directory above its ``results/``), else the current directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from vitsae.provenance.records import (
    content_sha256,
    digest_artifact,
    read_record,
    record_digest,
    record_id,
    record_path,
    store_attrs,
)
from vitsae.provenance.source import source_digest

#: The directory under a run's working directory that holds its artifacts (:data:`vitsae.layout.RESULTS`;
#: provenance imports no stage, so the name is repeated here and a test keeps the two equal).
RESULTS = "results"


def _base_dir(given: Path, recorded: str) -> Path:
    """The working directory the record's relative paths are relative to, and whose remembered config
    files ``vitsae verify`` (:mod:`vitsae.cli`) compares the records with.

    A relative record (the rules' paths): the given path, made absolute, minus the record's path
    (``/x/results/figures/a.pdf`` recorded as ``results/figures/a.pdf`` → ``/x``), so the lineage is
    found from any current directory. An absolute record: the directory above its last ``results/``,
    where :mod:`vitsae.layout` puts every artifact of a run. Otherwise the current directory.
    """
    rec = PurePath(recorded)
    if not rec.is_absolute():
        here = Path(os.path.abspath(given)).parts
        n = len(rec.parts)
        if n < len(here) and here[-n:] == rec.parts:
            return Path(*here[:-n])
        return Path.cwd()
    parents = rec.parts[:-1]
    if RESULTS in parents:
        return Path(*parents[: len(parents) - 1 - parents[::-1].index(RESULTS)])
    return Path.cwd()


def resolve(base: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else base / path


def _model_name(model: Any) -> str:
    if isinstance(model, Mapping):
        return str(model.get("name") or model.get("arch") or "unknown")
    return str(model)


def lineage(artifact: str | os.PathLike) -> dict:
    """The upstream graph of ``artifact``.

    ``{"root", "workdir", "nodes": {path: node}, "edges": [[input, output], ...]}``.

    A node is an artifact's record; ``{"leaf": true, "digest"}`` for an input that never had a record
    (a raw image, a dataset directory); ``{"missing": true, ...}`` for an input whose record is gone;
    ``{"leaf": true, "kind": "model", ...}`` (key ``model:<name>``) for the weights behind a store.
    Leaves are never opened, so an input list of thousands of images costs nothing extra.
    """
    artifact = Path(artifact)
    root = read_record(artifact)
    base = _base_dir(artifact, root["artifact"])
    nodes: dict[str, dict] = {root["artifact"]: root}
    edges: list[list[str]] = []
    queue = [root]
    while queue:
        record = queue.pop(0)
        out = record["artifact"]
        store = record.get("store")
        if store is None:
            attrs = store_attrs(resolve(base, out))
            if attrs and ("model" in attrs or "weights" in attrs):
                store = attrs
        if store is not None:
            key = f"model:{_model_name(store.get('model'))}"
            model_node = {"leaf": True, "kind": "model", "model": store.get("model")}
            nodes.setdefault(key, {**model_node, "weights": store.get("weights")})
            edges.append([key, out])
        for entry in record.get("inputs", []):
            path = entry["path"]
            edges.append([path, out])
            if path in nodes:
                continue
            if entry.get("record") is None:
                nodes[path] = {"leaf": True, "digest": entry["digest"]}
                continue
            try:
                upstream = read_record(resolve(base, path))
            except (FileNotFoundError, ValueError):
                nodes[path] = {"missing": True, "record": entry["record"], "digest": entry["digest"]}
                continue
            nodes[path] = upstream
            queue.append(upstream)
    return {"root": root["artifact"], "workdir": str(base), "nodes": nodes, "edges": edges}


# ---------------------------------------------------------------------------------------------
# Verification


def verify(artifact: str | os.PathLike, config: Mapping | None = None) -> list[str]:
    """Recompute every digest along ``artifact``'s lineage; one line per problem (empty: all good).

    Checked: each recorded artifact against its own record, each input against the digest its
    consumer recorded (so a re-made upstream that its consumers were not rebuilt from is caught),
    each record's module digests against the current source, each record against its own id and
    against the sha256 its consumers recorded of it (an edited record), and, given ``config`` (today's
    resolved config), each record's config against it, one line per changed key.
    """
    return verify_lineage(lineage(artifact), config)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists stay values."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def config_changes(recorded: Mapping, now: Mapping) -> list[tuple[str, Any, Any]]:
    """``(key, recorded value, value now)`` for every dotted key whose value differs (``<absent>`` where
    one side lacks it), in key order; both sides compared as JSON values."""
    old, new = (
        flatten(json.loads(json.dumps(recorded, default=str))),
        flatten(json.loads(json.dumps(now, default=str))),
    )
    return [(k, old.get(k, "<absent>"), new.get(k, "<absent>")) for k in sorted(set(old) | set(new))
            if old.get(k, "<absent>") != new.get(k, "<absent>")]  # fmt: skip


def verify_lineage(lin: Mapping, config: Mapping | None = None) -> list[str]:
    """:func:`verify` on a lineage already walked."""
    base = Path(lin["workdir"])
    problems: list[str] = []
    changed_keys: dict[tuple[str, str, str], int] = {}
    record_sha: dict[str, str | None] = {}
    digests: dict[str, str | None] = {}
    sources: dict[str, str | None] = {}

    def current(path: str) -> str | None:
        if path not in digests:
            try:
                digests[path] = digest_artifact(resolve(base, path))
            except FileNotFoundError:
                digests[path] = None
        return digests[path]

    def check(path: str, recorded: str) -> None:
        now = current(path)
        line = f"missing: {path}" if now is None else f"changed: {path} (recorded {recorded}, now {now})"
        if now != recorded and line not in problems:
            problems.append(line)

    for path, node in lin["nodes"].items():
        if node.get("kind") == "model":
            continue
        if node.get("missing"):
            if current(path) is None:
                check(path, node["digest"])
            else:
                problems.append(
                    f"missing: {record_path(path)} (the provenance record of {path}); "
                    "rerun the rule that makes it"
                )
            continue
        if node.get("leaf"):
            continue  # checked below, against what each consumer recorded
        check(path, node["digest"])
        if "id" in node and record_id(node) != node["id"]:
            problems.append(
                f"edited record: {record_path(path)} says id {node['id']}, its content gives {record_id(node)}"
            )
        elif "content_sha256" in node and content_sha256(node) != node["content_sha256"]:
            problems.append(
                f"edited record: {record_path(path)} says content {node['content_sha256']}, "
                f"its content gives {content_sha256(node)}"
            )
        if config is not None and "config" in node:
            for key, was, now in config_changes(node["config"], config):
                line = (key, json.dumps(was), json.dumps(now))
                changed_keys[line] = changed_keys.get(line, 0) + 1
        for module, recorded in node.get("code", {}).get("modules", {}).items():
            if module not in sources:
                try:
                    sources[module] = source_digest(module)
                except (FileNotFoundError, ValueError):
                    sources[module] = None
            now = sources[module]
            if now != recorded:
                problems.append(
                    f"code changed: {path} was made by {module} {recorded}, source is now {now or 'missing'}"
                )
        for entry in node.get("inputs", []):
            check(entry["path"], entry["digest"])
            recorded = entry.get("record_sha256")
            upstream = lin["nodes"].get(entry["path"], {})
            # A re-made or lost upstream is named above; its record's bytes are checked only otherwise.
            if (
                recorded is not None
                and not upstream.get("missing")
                and current(entry["path"]) == entry["digest"]
            ):
                src = entry["path"]
                if src not in record_sha:
                    record_sha[src] = record_digest(resolve(base, src))
                if record_sha[src] != recorded:
                    line = (f"edited record: {record_path(src)} (read by {path} as {recorded}, "
                            f"now {record_sha[src] or 'missing'})")  # fmt: skip
                    if line not in problems:
                        problems.append(line)
    n_records = sum(1 for n in lin["nodes"].values() if "config" in n)
    for (key, was, now), n in changed_keys.items():
        problems.append(f"config changed: {key}: recorded {was}, now {now} (in {n} of {n_records} records)")
    return problems


def n_artifacts(lin: Mapping) -> int:
    """Artifacts a verification looks at: every node but the model-weight leaves."""
    return sum(1 for node in lin["nodes"].values() if node.get("kind") != "model")
