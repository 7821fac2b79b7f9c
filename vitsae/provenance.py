"""Provenance a reviewer can open: a record beside every artifact, a lineage page per figure, verification.

Every rule's job ends with :func:`write_record`, which puts ``<artifact>.prov.json`` beside each of its
outputs (for a Zarr store ``x.zarr`` the record is ``x.zarr.prov.json``, outside the store). A record
holds the rule, wildcards, inputs with their digests and their own records' ids, params, the config
subset, the code (git commit, dirty flag, diff digest, package version, digests of the modules the
rule ran), the environment, the seed and the times. Its ``id`` depends only on what the artifact *is*
and how it was made (not on times or host), so a bitwise-identical rerun gets the same id.

:func:`lineage` walks the records from a figure down to dataset manifests, raw inputs and model
weights; :func:`write_lineage` renders that as JSON and as one self-contained HTML page;
:func:`verify` (``python -m vitsae.provenance verify PATH``) recomputes the digests along the lineage
and names every artifact that changed, is missing, or was made by code that has since changed.

Paths are stored as the rule gave them (relative to the workflow's working directory under
Snakemake). :func:`lineage` resolves relative paths against that directory, which it infers from the
path it is given (``/x/results/figures/a.pdf`` whose record says ``results/figures/a.pdf`` → ``/x``),
else the current directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import html
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any

from vitsae.code import PACKAGE_DIR, source_digest

SCHEMA = "vitsae.provenance/1"
RECORD_SUFFIX = ".prov.json"
# Zarr metadata files whose bytes go into a store's tree digest (v3, and v2 for good measure).
ZARR_METADATA = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
#: Files a directory digest leaves out: Snakemake adds a timestamp file to every directory output
#: after the job (after the record was written), which is not part of the artifact.
NOT_CONTENT = frozenset({".snakemake_timestamp"})
PACKAGES = {  # environment key → distribution name
    "torch": "torch",
    "timm": "timm",
    "open_clip": "open_clip_torch",
    "zarr": "zarr",
    "numpy": "numpy",
    "snakemake": "snakemake",
    "vitsae": "vitsae",
}
_BLOCK = 1 << 20


# ---------------------------------------------------------------------------------------------
# Digests


def record_path(artifact: str | os.PathLike) -> Path:
    """``results/x.pt`` → ``results/x.pt.prov.json``; ``a/layer3.zarr`` → ``a/layer3.zarr.prov.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + RECORD_SUFFIX)


def digest_artifact(path: str | os.PathLike) -> str:
    """``"sha256:<hex>"`` of a file's bytes, or ``"tree:<hex>"`` of a directory (a Zarr store).

    The tree digest is *shallow*: sha256 over the sorted (relative posix path, size) of every file
    plus the bytes of every Zarr metadata file (``zarr.json``; its attrs name the model, weights and
    manifest), leaving out Snakemake's ``.snakemake_timestamp``. Chunk data is never read, so a store of any size digests in milliseconds; a change
    inside a chunk that keeps its size goes unseen (a deleted, added or resized chunk does not).
    """
    path = Path(path)
    if path.is_file():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_BLOCK):
                h.update(block)
        return f"sha256:{h.hexdigest()}"
    if path.is_dir():
        h = hashlib.sha256()
        files = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in filenames:
                if name in NOT_CONTENT:
                    continue
                full = Path(dirpath, name)
                files.append((full.relative_to(path).as_posix(), full))
        for rel, full in sorted(files):
            h.update(f"{rel}\0{full.stat().st_size}\n".encode())
            if full.name in ZARR_METADATA:
                h.update(full.read_bytes() + b"\0")
        return f"tree:{h.hexdigest()}"
    raise FileNotFoundError(f"{path}: no such file or directory, so it cannot be digested")


# ---------------------------------------------------------------------------------------------
# Environment and code


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def _static_environment() -> dict:
    """What cannot change while this process runs (computed once: importing torch costs a second)."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "packages": {key: _version(dist) for key, dist in PACKAGES.items()},
        "cuda": None,
        "gpu": None,
    }
    try:
        import torch
    except ImportError:
        return env
    # is_available() is the only CUDA call made where there is no GPU: it never creates a context.
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(torch.cuda.current_device())
    return env


def environment() -> dict:
    """python, platform, host, CPU, package versions, CUDA version and GPU name (if any), Slurm job id."""
    env = dict(_static_environment())
    env["packages"] = dict(env["packages"])
    env["host"] = socket.gethostname()
    env["slurm_job_id"] = os.environ.get("SLURM_JOB_ID") or None
    return env


def _git(repo: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(modules: list[str], repo: Path | None = None) -> dict:
    """The git commit of the package's checkout, whether it is dirty, a digest of the diff, the
    package version and ``source_digest`` of each module. Without a git checkout (an installed
    package, or no git) ``commit``/``dirty``/``diff_sha256`` are None; the module digests still hold."""
    info: dict[str, Any] = {
        "commit": None,
        "dirty": None,
        "diff_sha256": None,
        "version": _version("vitsae"),
        "modules": {m: source_digest(m) for m in sorted(set(modules))},
    }
    if repo is None:
        # Only trust git if the package itself is tracked there (an installed copy inside some
        # unrelated checkout, such as a venv, must not borrow that checkout's commit).
        repo = PACKAGE_DIR
        tracked = _git(repo, "ls-files", "--", ".")
        if not tracked:
            return info
    head = _git(repo, "rev-parse", "HEAD")
    if head is None:
        return info
    info["commit"] = head.decode().strip()
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if status is not None:
        info["dirty"] = bool(status.strip())
        if info["dirty"]:
            diff = _git(repo, "diff", "HEAD")
            info["diff_sha256"] = hashlib.sha256(diff).hexdigest() if diff is not None else None
    return info


# ---------------------------------------------------------------------------------------------
# Records


def _jsonable(obj: Any, where: str = "value") -> Any:
    """Paths → str, numpy scalars/arrays → Python, tuples/sets → lists, Snakemake namedlists → lists
    or dicts; anything else that JSON cannot hold fails naming where it was."""
    module = type(obj).__module__
    if (module == "numpy" or module.startswith("numpy.")) and hasattr(obj, "tolist"):
        return obj.tolist()  # numpy scalars (np.float32, np.bool_, ...) and arrays
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return str(obj)  # Snakemake's path strings are str subclasses
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v, where) for v in obj)
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if callable(getattr(obj, "items", None)):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    raise TypeError(
        f"provenance: {where} is a {type(obj).__name__} ({obj!r:.80}), which cannot be written as JSON; "
        "pass str, numbers, lists or dicts"
    )


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_id(record: Mapping) -> str:
    """sha256 (first 16 hex) of what the artifact is and how it was made; not times, host or env."""
    core = {key: record[key] for key in ("rule", "wildcards", "artifact", "digest", "inputs", "params")}
    core["modules"] = record["code"]["modules"]
    return hashlib.sha256(_canonical(core)).hexdigest()[:16]


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).isoformat()


def _store_attrs(path: Path) -> dict | None:
    """The root attrs of a Zarr store at ``path`` (read as JSON; no zarr import), or None."""
    if not path.is_dir():
        return None
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        meta = path / name
        if meta.is_file():
            try:
                data = json.loads(meta.read_text())
            except (OSError, ValueError):
                return None
            attrs = data.get(key, {}) if key else data
            return attrs if isinstance(attrs, dict) else None
    return None


def _read_id(artifact: Path) -> str | None:
    try:
        return json.loads(record_path(artifact).read_text()).get("id")
    except (OSError, ValueError, AttributeError):
        return None


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_record(
    *,
    rule: str,
    wildcards: Mapping,
    inputs: list[str],
    outputs: list[str],
    params: Mapping,
    config: Mapping,
    modules: list[str],
    seed: int | None,
    started: float,
    ended: float,
) -> list[Path]:
    """Write ``<output>.prov.json`` beside every output (atomically); return the record paths.

    ``started``/``ended`` are ``time.time()`` values. Inputs are digested here; an input that has a
    record of its own is linked by that record's id.
    """
    wildcards = _jsonable(wildcards, f"rule {rule}: wildcards")
    params = _jsonable(params, f"rule {rule}: params")
    config = _jsonable(config, f"rule {rule}: config")
    input_entries = []
    for p in inputs:
        p = str(p)
        try:
            digest = digest_artifact(p)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"rule {rule}: input {p} does not exist, so its provenance cannot be recorded"
            ) from e
        input_entries.append({"path": p, "digest": digest, "record": _read_id(Path(p))})
    code = code_version(list(modules))
    env = environment()
    written = []
    for out in outputs:
        out_path = Path(out)
        try:
            digest = digest_artifact(out_path)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"rule {rule}: output {out} does not exist; write the record after the outputs"
            ) from e
        record: dict[str, Any] = {
            "schema": SCHEMA,
            "artifact": str(out),
            "digest": digest,
            "rule": rule,
            "wildcards": wildcards,
            "inputs": input_entries,
            "params": params,
            "config": config,
            "code": code,
            "environment": env,
            "seed": None if seed is None else int(seed),
            "started": _iso(started),
            "ended": _iso(ended),
            "duration_s": round(float(ended) - float(started), 3),
        }
        attrs = _store_attrs(out_path)
        if attrs and ("model" in attrs or "weights" in attrs):
            # Kept in the record so the lineage still names the weights after the store is deleted.
            record["store"] = {k: attrs.get(k) for k in ("model", "weights", "manifest_sha256")}
        record["id"] = record_id(record)
        path = record_path(out_path)
        _write_json_atomic(path, record)
        written.append(path)
    return written


def read_record(artifact: str | os.PathLike) -> dict:
    path = record_path(artifact)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{artifact}: no provenance record; rerun the rule that makes it (expected {path})"
        ) from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(
            f"{path}: provenance record is not valid JSON ({e}); rerun the rule that makes {artifact}"
        ) from e


# ---------------------------------------------------------------------------------------------
# Lineage


def _base_dir(given: Path, recorded: str) -> Path:
    """The working directory the record's relative paths are relative to."""
    rec = PurePath(recorded)
    if given.is_absolute() and not rec.is_absolute():
        n = len(rec.parts)
        if n < len(given.parts) and given.parts[-n:] == rec.parts:
            return Path(*given.parts[:-n])
    return Path.cwd()


def _resolve(base: Path, p: str) -> Path:
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
            attrs = _store_attrs(_resolve(base, out))
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
                upstream = read_record(_resolve(base, path))
            except (FileNotFoundError, ValueError):
                nodes[path] = {"missing": True, "record": entry["record"], "digest": entry["digest"]}
                continue
            nodes[path] = upstream
            queue.append(upstream)
    return {"root": root["artifact"], "workdir": str(base), "nodes": nodes, "edges": edges}


# ---------------------------------------------------------------------------------------------
# Verification


def verify(artifact: str | os.PathLike) -> list[str]:
    """Recompute every digest along ``artifact``'s lineage; one line per problem (empty: all good).

    Checked: each recorded artifact against its own record, each input against the digest its
    consumer recorded (so a re-made upstream that its consumers were not rebuilt from is caught),
    and each record's module digests against the current source.
    """
    return verify_lineage(lineage(artifact))


def verify_lineage(lin: Mapping) -> list[str]:
    """:func:`verify` on a lineage already walked."""
    base = Path(lin["workdir"])
    problems: list[str] = []
    digests: dict[str, str | None] = {}
    sources: dict[str, str | None] = {}

    def current(path: str) -> str | None:
        if path not in digests:
            try:
                digests[path] = digest_artifact(_resolve(base, path))
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
    return problems


def n_artifacts(lin: Mapping) -> int:
    """Artifacts a verification looks at: every node but the model-weight leaves."""
    return sum(1 for node in lin["nodes"].values() if node.get("kind") != "model")


# ---------------------------------------------------------------------------------------------
# Lineage page


def _anchor(path: str) -> str:
    return "n-" + hashlib.sha256(path.encode()).hexdigest()[:12]


def _pre(obj: Any) -> str:
    return f"<pre>{html.escape(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False))}</pre>"


def _link(path: str) -> str:
    return f'<a href="#{_anchor(path)}">{html.escape(path)}</a>'


def _links(paths: list[str]) -> str:
    if not paths:
        return "<em>none</em>"
    items = "".join(f"<li>{_link(p)}</li>" for p in paths)
    if len(paths) > 20:
        return f"<details><summary>{len(paths)} artifacts</summary><ul>{items}</ul></details>"
    return f"<ul>{items}</ul>"


_CSS = """
body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}
section{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin:1em 0}
section:target{border-color:#06c;box-shadow:0 0 0 2px #9cf}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:85%}
dt{font-weight:bold;float:left;clear:left;width:9em}dd{margin-left:10em}
.dirty{color:#b00;font-weight:bold}.leaf{background:#fafafa}code{font-size:90%}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.2em .6em;text-align:left;vertical-align:top}
.index ul{margin:0;padding-left:1.2em}.sub{color:#555;margin-top:-.5em}
"""


def _raw_files(paths: list[str], nodes: Mapping) -> str:
    """Raw inputs (images, dataset files) of one node: one collapsed table, not a section each."""
    prefix = os.path.commonpath(paths) if len(paths) > 1 else str(PurePath(paths[0]).parent)
    rows = "".join(f"<tr><td><code>{html.escape(p)}</code></td>"
                   f"<td><code>{html.escape(str(nodes[p].get('digest')))}</code></td></tr>" for p in paths)
    return (f'<details class="raw"><summary>{len(paths)} raw input file{"s" if len(paths) != 1 else ""} '
            f"under <code>{html.escape(prefix)}/</code> (no records; digests as recorded)</summary>"
            f"<table><tr><th>path</th><th>digest</th></tr>{rows}</table></details>")


def _render_node(path: str, node: dict, inputs: list[str], consumers: list[str], raw: list[str] = (),
                 nodes: Mapping | None = None, root: str | None = None, run_config: Any = None) -> str:
    """One artifact's section. A config equal to the figure's (``run_config``) is linked, not repeated."""
    leaf = " class=leaf" if node.get("leaf") else ""
    parts = [
        f'<section id="{_anchor(path)}" data-path="{html.escape(path, quote=True)}"{leaf}>',
        f"<h2><code>{html.escape(path)}</code></h2><dl>",
    ]

    def row(name: str, value: str) -> None:
        parts.append(f"<dt>{name}</dt><dd>{value}</dd>")

    if node.get("kind") == "model":
        row("kind", "model weights")
        parts.append("</dl>" + _pre({"model": node.get("model"), "weights": node.get("weights")}))
    elif node.get("missing"):
        row("kind", "<strong>record missing</strong>")
        row("digest", f"<code>{html.escape(str(node.get('digest')))}</code>")
        row("record id", f"<code>{html.escape(str(node.get('record')))}</code>")
        parts.append("</dl>")
    elif node.get("leaf"):
        row("kind", "raw input (no record)")
        row("digest", f"<code>{html.escape(str(node.get('digest')))}</code>")
        parts.append("</dl>")
    else:
        code = node.get("code", {})
        env = node.get("environment", {})
        dirty = code.get("dirty")
        commit = html.escape(str(code.get("commit")))
        flag = ' <span class="dirty">dirty</span>' if dirty else (" clean" if dirty is False else "")
        row("rule", f"<code>{html.escape(str(node.get('rule')))}</code>")
        row("record id", f"<code>{html.escape(str(node.get('id')))}</code>")
        row("digest", f"<code>{html.escape(str(node.get('digest')))}</code>")
        row("code", f"<code>{commit}</code>{flag}, vitsae {html.escape(str(code.get('version')))}")
        row("modules", ", ".join(f"<code>{html.escape(m)} {html.escape(str(d))}</code>"
                                  for m, d in code.get("modules", {}).items()) or "<em>none</em>")
        row("time", f"{html.escape(str(node.get('started')))} → {html.escape(str(node.get('ended')))} "
                    f"({node.get('duration_s')} s)")
        row("host", html.escape(f"{env.get('host')}, Slurm job {env.get('slurm_job_id')}"))
        row("GPU", html.escape(f"{env.get('gpu')} (CUDA {env.get('cuda')})"))
        row("seed", html.escape(str(node.get("seed"))))
        parts.append("</dl>")
        parts.append("<h3>wildcards</h3>" + _pre(node.get("wildcards")))
        parts.append("<h3>params</h3>" + _pre(node.get("params")))
        if run_config is not None and node.get("config") == run_config and path != root:
            parts.append('<details><summary>config</summary>the run\'s config, as in '
                         f'<a href="#{_anchor(root)}">the figure\'s record</a></details>')
        else:
            parts.append("<details><summary>config</summary>" + _pre(node.get("config")) + "</details>")
        parts.append("<details><summary>environment</summary>" + _pre(env) + "</details>")
        if node.get("store"):
            parts.append("<details><summary>store attrs</summary>" + _pre(node["store"]) + "</details>")
    parts.append("<h3>inputs</h3>" + (_links(inputs) if inputs or not raw else ""))
    if raw:
        parts.append(_raw_files(list(raw), nodes))
    parts.append("<h3>used by</h3>" + _links(consumers))
    parts.append("</section>")
    return "\n".join(parts)


def render_html(lin: Mapping, html_dir: Path | None = None, title: str | None = None) -> str:
    """One self-contained page: a summary, the artifacts grouped by the rule that made them, then a
    section per artifact (its record) and per model. Raw inputs without records (thousands of
    images) get no section: each consumer lists them in one collapsed table."""
    root = lin["root"]
    name = PurePath(root).name
    nodes = lin["nodes"]
    raw = {p for p, n in nodes.items() if n.get("leaf") and n.get("kind") != "model"}
    inputs: dict[str, list[str]] = {p: [] for p in nodes}
    consumers: dict[str, list[str]] = {p: [] for p in nodes}
    for src, dst in lin["edges"]:
        if src not in inputs[dst]:
            inputs[dst].append(src)
        if dst not in consumers[src]:
            consumers[src].append(dst)
    href = str(_resolve(Path(lin["workdir"]), root))
    if html_dir is not None:
        href = os.path.relpath(href, html_dir)
    by_rule: dict[str, list[str]] = {}
    for p, node in nodes.items():
        if p in raw:
            continue
        group = ("model weights" if node.get("kind") == "model"
                 else "record missing" if node.get("missing") else str(node.get("rule")))
        by_rule.setdefault(group, []).append(p)
    n_records = sum(1 for node in nodes.values() if not node.get("leaf") and not node.get("missing"))
    index = "".join(f"<tr><td><code>{html.escape(rule)}</code></td><td>{len(ps)}</td><td>{_links(ps)}</td></tr>"
                    for rule, ps in by_rule.items())
    body = "\n".join(
        _render_node(p, node, [i for i in inputs[p] if i not in raw], consumers[p],
                     [i for i in inputs[p] if i in raw], nodes, root, nodes[root].get("config"))
        for p, node in nodes.items() if p not in raw
    )
    heading = html.escape(title) if title else f"Provenance of {html.escape(name)}"
    subtitle = f"<p class=sub>Provenance of <code>{html.escape(name)}</code></p>" if title else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{heading}: provenance</title>
<style>{_CSS}</style></head><body>
<h1>{heading}</h1>{subtitle}
<p>Figure: <a href="{html.escape(href, quote=True)}"><code>{html.escape(root)}</code></a>
(made by <a href="#{_anchor(root)}">its record</a>). {n_records} artifacts with records,
{len(by_rule.get("model weights", []))} models,
{len(raw)} raw input files; {len(lin["edges"])} edges.
Check it with <code>python -m vitsae.provenance verify {html.escape(root)}</code>.</p>
<h2>Artifacts by the rule that made them</h2>
<table class=index><tr><th>rule</th><th>n</th><th>artifacts</th></tr>{index}</table>
{body}
</body></html>
"""


def write_lineage(
    artifact: str | os.PathLike, html_path: str | os.PathLike, json_path: str | os.PathLike,
    title: str | None = None,
) -> dict:
    """Write ``artifact``'s lineage as JSON and as one self-contained HTML page; return the lineage."""
    lin = lineage(artifact)
    if title:
        lin["title"] = title
    html_path, json_path = Path(html_path), Path(json_path)
    for p in (html_path, json_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(json_path, lin)
    tmp = html_path.with_name(f".{html_path.name}.tmp-{os.getpid()}")
    tmp.write_text(render_html(lin, html_path.parent.resolve(), title), encoding="utf-8")
    os.replace(tmp, html_path)
    return lin


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    prog = "vitsae" if PurePath(sys.argv[0]).name == "vitsae" else "python -m vitsae.provenance"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="recompute the digests along an artifact's lineage")
    v.add_argument("paths", nargs="+", type=Path)
    lin = sub.add_parser("lineage", help="write an artifact's lineage as HTML and JSON")
    lin.add_argument("path", type=Path)
    lin.add_argument("html", type=Path)
    lin.add_argument("json", type=Path)
    from vitsae import plan

    plan.add_arguments(sub.add_parser("plan", help="print a config's stores, disk and GPU hours before running it"))
    args = parser.parse_args(argv)
    if args.command == "plan":
        return plan.run(args)
    try:
        if args.command == "lineage":
            result = write_lineage(args.path, args.html, args.json)
            print(f"wrote {args.html} and {args.json}: {len(result['nodes'])} nodes")
            return 0
        failed = False
        for path in args.paths:
            walked = lineage(path)
            problems = verify_lineage(walked)
            for line in problems:
                print(line)
            if problems:
                failed = True
            else:
                print(f"ok: {n_artifacts(walked)} artifacts verified")
        return 1 if failed else 0
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
