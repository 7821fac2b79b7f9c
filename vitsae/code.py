"""Digests of the package's own source, so that a rule reruns exactly when the code it runs changes.

Each rule puts ``source_digest(<the modules it runs>)`` in its params; Snakemake reruns a job whose
params changed. Editing the SAE trainer therefore reruns SAE training and what follows, never
extraction. Files are read as bytes, never imported (the Snakefile must parse fast).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def module_path(module: str) -> Path:
    """``'vitsae.sae'`` → the file that holds it (a module file or a subpackage's __init__.py)."""
    parts = module.split(".")
    if parts[0] != "vitsae":
        raise ValueError(f"{module!r} is not a vitsae module")
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no source file for module {module!r} under {PACKAGE_DIR}")


def source_digest(*modules: str) -> str:
    """sha256 (first 16 hex digits) over the named modules' source files, order-independent."""
    h = hashlib.sha256()
    for module in sorted(set(modules)):
        h.update(module.encode() + b"\0" + module_path(module).read_bytes() + b"\0")
    return h.hexdigest()[:16]


#: The package modules each rule runs: the rule's params carry their digest (reruns) and its
#: provenance records list them (verification). One place, so the two cannot drift apart.
RULE_MODULES: dict[str, tuple[str, ...]] = {
    "demo_dataset": ("vitsae.demo",),
    "manifest": ("vitsae.manifest",),
    "extract": ("vitsae.activations", "vitsae.models", "vitsae.store", "vitsae.manifest"),
    "train_sae": ("vitsae.sweep", "vitsae.loader", "vitsae.sae", "vitsae.store", "vitsae.atomic"),
    "evaluate": ("vitsae.evaluate", "vitsae.sweep", "vitsae.sae", "vitsae.store"),
    "transfer": ("vitsae.transfer", "vitsae.figures"),
    "sweep_figures": ("vitsae.sweepfigs", "vitsae.transfer", "vitsae.figures", "vitsae.atomic"),
    "thumbnails": ("vitsae.features", "vitsae.concepts", "vitsae.atomic"),
    "feature_stats": ("vitsae.features", "vitsae.featstats", "vitsae.sweep", "vitsae.store"),
    "concepts": ("vitsae.features", "vitsae.concepts", "vitsae.wordnet", "vitsae.taxonomy", "vitsae.featstats",
                 "vitsae.findings", "vitsae.atomic"),
    "cards": ("vitsae.features", "vitsae.cards", "vitsae.featstats", "vitsae.atomic"),
    "findings": ("vitsae.features", "vitsae.findings", "vitsae.concepts", "vitsae.figures", "vitsae.atomic"),
    "transfer_features": ("vitsae.features", "vitsae.transfer_features", "vitsae.sweep", "vitsae.figures",
                          "vitsae.atomic"),
    "lineage": ("vitsae.provenance",),
    "ro_crate": ("vitsae.crate", "vitsae.provenance"),
}


def rule_digest(rule: str) -> str:
    """The source digest of the modules ``rule`` runs (see :data:`RULE_MODULES`)."""
    return source_digest(*RULE_MODULES[rule])
