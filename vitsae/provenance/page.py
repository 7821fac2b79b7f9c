"""A lineage (:mod:`vitsae.provenance.lineage`) as one self-contained HTML page a reviewer can open."""

from __future__ import annotations

import hashlib
import html
import json
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from vitsae.atomic import atomic_write
from vitsae.provenance.lineage import lineage, resolve
from vitsae.provenance.records import write_json


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
    rows = "".join(
        f"<tr><td><code>{html.escape(p)}</code></td>"
        f"<td><code>{html.escape(str(nodes[p].get('digest')))}</code></td></tr>"
        for p in paths
    )
    return (
        f'<details class="raw"><summary>{len(paths)} raw input file{"s" if len(paths) != 1 else ""} '
        f"under <code>{html.escape(prefix)}/</code> (no records; digests as recorded)</summary>"
        f"<table><tr><th>path</th><th>digest</th></tr>{rows}</table></details>"
    )


def _render_node(
    path: str,
    node: dict,
    inputs: list[str],
    consumers: list[str],
    raw: list[str] = (),
    nodes: Mapping | None = None,
    root: str | None = None,
    run_config: Any = None,
) -> str:
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
        commit = html.escape(str(code.get("commit") or "no commit"))
        flag = ' <span class="dirty">dirty</span>' if dirty else (" clean" if dirty is False else "")
        row("rule", f"<code>{html.escape(str(node.get('rule')))}</code>")
        row("record id", f"<code>{html.escape(str(node.get('id')))}</code>")
        row("digest", f"<code>{html.escape(str(node.get('digest')))}</code>")
        row("code", f"<code>{commit}</code>{flag}, vitsae {html.escape(str(code.get('version')))}")
        row(
            "modules",
            ", ".join(
                f"<code>{html.escape(m)} {html.escape(str(d))}</code>"
                for m, d in code.get("modules", {}).items()
            )
            or "<em>none</em>",
        )
        row(
            "time",
            f"{html.escape(str(node.get('started')))} → {html.escape(str(node.get('ended')))} "
            f"({node.get('duration_s')} s)",
        )
        row("host", html.escape(f"{env.get('host')}, Slurm job {env.get('slurm_job_id')}"))
        row("GPU", html.escape(f"{env.get('gpu')} (CUDA {env.get('cuda')})"))
        row("seed", html.escape(str(node.get("seed"))))
        parts.append("</dl>")
        parts.append("<h3>wildcards</h3>" + _pre(node.get("wildcards")))
        parts.append("<h3>params</h3>" + _pre(node.get("params")))
        if run_config is not None and node.get("config") == run_config and path != root:
            parts.append(
                "<details><summary>config</summary>the run's config, as in "
                f'<a href="#{_anchor(root)}">the figure\'s record</a></details>'
            )
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
    href = str(resolve(Path(lin["workdir"]), root))
    if html_dir is not None:
        href = os.path.relpath(href, html_dir)
    by_rule: dict[str, list[str]] = {}
    for p, node in nodes.items():
        if p in raw:
            continue
        group = (
            "model weights"
            if node.get("kind") == "model"
            else "record missing"
            if node.get("missing")
            else str(node.get("rule"))
        )
        by_rule.setdefault(group, []).append(p)
    n_records = sum(1 for node in nodes.values() if not node.get("leaf") and not node.get("missing"))
    index = "".join(
        f"<tr><td><code>{html.escape(rule)}</code></td><td>{len(ps)}</td><td>{_links(ps)}</td></tr>"
        for rule, ps in by_rule.items()
    )
    body = "\n".join(
        _render_node(
            p,
            node,
            [i for i in inputs[p] if i not in raw],
            consumers[p],
            [i for i in inputs[p] if i in raw],
            nodes,
            root,
            nodes[root].get("config"),
        )
        for p, node in nodes.items()
        if p not in raw
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
Check it with <code>vitsae verify {html.escape(root)}</code>.</p>
<h2>Artifacts by the rule that made them</h2>
<table class=index><tr><th>rule</th><th>n</th><th>artifacts</th></tr>{index}</table>
{body}
</body></html>
"""


def write_lineage(
    artifact: str | os.PathLike,
    html_path: str | os.PathLike,
    json_path: str | os.PathLike,
    title: str | None = None,
) -> dict:
    """Write ``artifact``'s lineage as JSON and as one self-contained HTML page; return the lineage."""
    lin = lineage(artifact)
    if title:
        lin["title"] = title
    html_path = Path(html_path)
    write_json(json_path, lin)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(lin, html_path.parent.resolve(), title)
    atomic_write(html_path, lambda p: p.write_text(text, encoding="utf-8"))
    return lin
