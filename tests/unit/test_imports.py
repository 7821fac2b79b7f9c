"""The house plan, checked: the package's imports flow one way through its stages, with no cycle, and each
rule's code digest covers exactly the modules its script imports."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
from workflow_helpers import REPO

from vitsae.provenance import source

#: The stages in data-flow order. A module may import modules of its own stage and of earlier ones only.
#: Provenance stands beside the stages: it may import only the foundation, and no stage imports it. The
#: workflow glue (config, layout, runtime, plan, cli) sits on top and may import anything.
STAGES = {
    "foundation": ("vitsae.atomic",),
    "data": ("vitsae.data",),
    "sae": ("vitsae.sae",),
    "analysis": ("vitsae.analysis",),
    "workflow": ("vitsae.config", "vitsae.layout", "vitsae.runtime", "vitsae.plan", "vitsae.cli"),
}
ORDER = ["foundation", "data", "sae", "analysis", "workflow"]
BESIDE = {"provenance": ("vitsae.provenance",)}


def modules() -> list[str]:
    out = []
    for path in sorted((REPO / "vitsae").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def stage(module: str) -> str | None:
    for name, prefixes in {**STAGES, **BESIDE}.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    return None  # the package's own __init__


def graph() -> dict[str, set[str]]:
    """module → the package modules it names in its imports (anywhere in it; not under ``if TYPE_CHECKING:``;
    the packages above them are already imported, so they are no edge of a cycle)."""
    return {m: {i for i in source.imports(source.module_path(m).read_bytes(), m, packages=False) if i != m}
            for m in modules()}  # fmt: skip


def _package(module: str) -> bool:
    return source.module_path(module).name == "__init__.py" and not source.runs_code(module)


def test_every_module_has_a_stage():
    assert [m for m in modules() if stage(m) is None] == ["vitsae"]


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(g[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n) :] + [n] if n in path else [m, n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_imports_flow_from_earlier_stages_to_later_ones():
    bad = []
    for m, imported in graph().items():
        s = stage(m)
        for i in sorted(imported):
            t = stage(i)
            if s in BESIDE:
                ok = t in (s, "foundation")
            elif t in BESIDE:
                ok = s == "workflow"
            else:
                ok = ORDER.index(t) <= ORDER.index(s)
            if not ok:
                bad.append(f"{m} ({s}) imports {i} ({t})")
    assert bad == []


def test_the_walker_sees_what_a_cycle_or_a_backward_import_would_look_like():
    # the checks above can fail: a later stage imported by an earlier one is caught as such
    code = "from vitsae.analysis import charts\nimport vitsae.sae.checkpoint\nif TYPE_CHECKING:\n    import vitsae.cli\n"
    assert source.imports(code, "vitsae.data.store") >= {"vitsae.analysis.charts", "vitsae.sae.checkpoint"}
    assert "vitsae.cli" not in source.imports(code, "vitsae.data.store")  # not run, so not followed
    assert ORDER.index(stage("vitsae.analysis.charts")) > ORDER.index(stage("vitsae.data.store"))


@pytest.mark.parametrize("script", sorted(p.stem for p in (REPO / "workflow/scripts").glob("*.py")))
def test_a_rules_digest_covers_its_scripts_import_closure(script):
    path = REPO / "workflow/scripts" / f"{script}.py"
    direct = {i for i in source.imports(path.read_bytes()) if not _package(i)}
    closure = set(source.script_modules(path))
    assert direct <= closure
    g = graph()
    for m in closure:  # closed: everything a module of the closure imports (and runs) is in it
        assert {i for i in g[m] if not _package(i)} <= closure, (m, g[m] - closure)
    assert set(source.script_code(path)) == closure


def test_what_the_digests_tell_apart():
    concepts = set(source.script_modules(REPO / "workflow/scripts/concepts.py"))
    train = set(source.script_modules(REPO / "workflow/scripts/train_sae.py"))
    extract = set(source.script_modules(REPO / "workflow/scripts/extract.py"))
    assert "vitsae.analysis.charts" not in concepts and "vitsae.analysis.findings" not in concepts
    assert not {m for m in train if m.startswith("vitsae.analysis.")}
    assert "vitsae.sae.train" not in extract and "vitsae.sae.train" in train
    for a, b in itertools.combinations(["concepts", "train_sae", "extract"], 2):
        assert source.script_code(REPO / f"workflow/scripts/{a}.py") != source.script_code(
            REPO / f"workflow/scripts/{b}.py"
        )


def test_no_module_shadows_the_standard_library():
    import sys

    names = {Path(m.replace(".", "/")).name for m in modules()}
    assert names & set(sys.stdlib_module_names) == set()


def test_typechecking_imports_are_not_followed():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vitsae.sae.train import Stack\n"
    )
    assert source.imports(ast.unparse(tree), "vitsae.sae.architectures.base") == set()


def test_a_module_edited_in_the_same_process_is_parsed_again(tmp_path, monkeypatch):
    # the parse cache is keyed by content: an edit (even one that keeps the size) changes the closure
    pkg = tmp_path / "vitsae"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""doc only"""\n')
    (pkg / "a.py").write_text("import vitsae.b\n")
    (pkg / "b.py").write_text("X = 1\n")
    (pkg / "c.py").write_text("Y = 2\n")
    monkeypatch.setattr(source, "PACKAGE_DIR", pkg)
    assert source.closure(["vitsae.a"]) == ["vitsae.a", "vitsae.b"]
    (pkg / "a.py").write_text("import vitsae.c\n")  # same size, same second
    assert source.closure(["vitsae.a"]) == ["vitsae.a", "vitsae.c"]
    (pkg / "c.py").write_text('"""now doc only"""\n')  # runs_code follows the edit too
    assert source.closure(["vitsae.a"]) == ["vitsae.a"]
