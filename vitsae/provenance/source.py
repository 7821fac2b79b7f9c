"""Digests of the package's own source, and which modules a rule's script runs (its import closure).

Each rule's params carry :func:`script_code` of its script: ``{module: digest}`` for every package module
the script imports, directly or through other modules. Snakemake reruns a job whose params changed, so
editing a module reruns exactly the rules whose scripts import it (editing the SAE trainer reruns SAE
training and what follows, never extraction), and the provenance record of each output lists the same
modules. Files are read as bytes and parsed, never imported (the Snakefile must parse fast); what a module imports
is parsed once per process and content (:func:`_facts`), not once per rule that reaches it. Imports
under ``if TYPE_CHECKING:`` are not run, so they are not followed; a package ``__init__`` that holds
only its docstring computes nothing and is left out.
"""

from __future__ import annotations

import ast
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "vitsae"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def module_path(module: str) -> Path:
    """``'vitsae.sae.train'`` → the file that holds it (a module file or a subpackage's __init__.py)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"{module!r} is not a {PACKAGE} module")
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no source file for module {module!r} under {PACKAGE_DIR}")


def is_module(module: str) -> bool:
    try:
        module_path(module)
    except (FileNotFoundError, ValueError):
        return False
    return True


def source_digest(*modules: str) -> str:
    """sha256 (first 16 hex digits) over the named modules' source files, order-independent."""
    h = hashlib.sha256()
    for module in sorted(set(modules)):
        h.update(module.encode() + b"\0" + module_path(module).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk(node: ast.AST) -> Iterable[ast.AST]:
    """Every node below ``node``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if _type_checking_only(child):
            yield from (n for stmt in child.orelse for n in (stmt, *_walk(stmt)))
            continue
        yield child
        yield from _walk(child)


def imports(source: str | bytes, module: str | None = None, packages: bool = True) -> set[str]:
    """The package modules that ``source`` (of ``module``, for relative imports; None for a script)
    imports, anywhere in it (functions too): ``import vitsae.a.b`` and ``from vitsae.a import b`` name
    ``vitsae.a.b`` when that is a module, else ``vitsae.a``; with ``packages``, each with the packages
    above it (whose ``__init__`` runs first)."""
    return _imports_in(ast.parse(source), module, packages)


def _imports_in(tree: ast.AST, module: str | None, packages: bool = True) -> set[str]:
    """:func:`imports` of a parsed source."""
    found: set[str] = set()
    package = None if module is None else (module if module_path(module).name == "__init__.py"
                                            else module.rpartition(".")[0])  # fmt: skip
    for node in _walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if package is None:
                    continue
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [
                f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base for alias in node.names
            ]
        for name in names:
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            parts = name.split(".")
            if not packages:
                found.add(name)
                continue
            found.update(
                ".".join(parts[:i]) for i in range(1, len(parts) + 1) if is_module(".".join(parts[:i]))
            )
    return found


#: :func:`_facts` per (module, sha256 of its source): a module edited since is parsed again.
_FACTS: dict[tuple[str, str], tuple[frozenset[str], bool]] = {}


def _facts(module: str) -> tuple[frozenset[str], bool]:
    """``(imports(source, module), runs_code(module))`` of the module's current source, parsed once per
    content. The Snakefile asks this of the same modules for every rule (each rule's closure); parsing
    each module once took the parse of a config from 4.0 s to 1.0 s (bench/RESULTS.md section 1)."""
    source = module_path(module).read_bytes()
    key = (module, hashlib.sha256(source).hexdigest())
    hit = _FACTS.get(key)
    if hit is None:
        tree = ast.parse(source)
        runs = not all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in tree.body)
        hit = _FACTS[key] = (frozenset(_imports_in(tree, module)), runs)
    return hit


def runs_code(module: str) -> bool:
    """Whether the module holds more than a docstring (a package's ``__init__`` often holds only that;
    such a module changes nothing a rule computes, so it is left out of digests)."""
    return _facts(module)[1]


def closure(modules: Iterable[str]) -> list[str]:
    """``modules`` and every package module they import, transitively, sorted; modules that hold only a
    docstring (:func:`runs_code`) are left out."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(_facts(module)[0] - seen)
    return sorted(m for m in seen if runs_code(m))


def script_modules(script: str | os.PathLike) -> list[str]:
    """Every package module a script (not itself a module) runs: its imports' closure."""
    return closure(imports(Path(script).read_bytes()))


def script_code(script: str | os.PathLike) -> dict[str, str]:
    """``{module: source_digest(module)}`` over :func:`script_modules` (a rule's ``code`` param)."""
    return {m: source_digest(m) for m in script_modules(script)}
