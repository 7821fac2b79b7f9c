"""Which of the demo's planted concepts (:data:`vitsae.data.demo.PLANTED`) the SAEs found, with the label
the concept's level should get: the check that the pipeline can recover known structure.

It reads a run's results (manifests, concept tables, statistics), each once; the SAE of a table row is
named by the row (``sae_id``, dataset, model, layer, sweep), and its statistics directory by the layout
(:data:`vitsae.layout.FEATURES`), which the caller passes in as a pattern.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from vitsae.analysis.stats import load_feature_stats
from vitsae.data.manifest import read_manifest

#: The label a planted demo concept should get, by its level (:data:`vitsae.data.demo.PLANTED`).
EXPECTED_LABEL = {
    "class": ("single-class",),
    "subtree": ("taxonomic",),
    "abstract": ("abstract", "cross-clade"),
    "species": ("single-species",),
    "genus": ("trait",),
    "order": ("trait", "clade"),
}


def planted_recovery(workdir: str | os.PathLike, planted: list[dict], tables: list[str], manifest: str,
                     features: str, min_share: float = 0.9, abstract_share: float = 0.75) -> pd.DataFrame:  # fmt: skip
    """Which planted concepts some feature found with the right label: a feature labelled as the concept's
    level expects (:data:`EXPECTED_LABEL`) whose top images come from the concept's member classes: for a
    concept of one class, that class is the most frequent among them (the label already says it holds at
    least ``single_class_share`` / ``single_species_share``); for a concept of several classes, at least
    ``min_share`` of them (``abstract_share`` for an abstract one, the share its label asks of its major
    classes, ``abstract_min_coverage``) and from at least two of the classes. One row per concept: the
    number of such features and the models.

    ``tables``: the run's concept tables (paths under ``workdir``); ``manifest`` and ``features``: the
    layout's patterns of a dataset's manifest (``{dataset}``) and of an SAE's statistics (``{dataset}``,
    ``{model}``, ``{layer}``, ``{sweep}``, ``{sae_id}``)."""
    workdir = Path(workdir)
    # every file is read once for all concepts: labels per dataset, concept tables, each SAE's top images
    labels_by_dataset: dict[str, np.ndarray] = {}
    frames = [pd.read_csv(workdir / t) for t in sorted(tables)]
    top_rows: dict[Path, np.ndarray] = {}
    rows = []
    for concept in planted:
        dataset, members = concept["dataset"], set(concept["members"])
        if dataset not in labels_by_dataset:
            labels_by_dataset[dataset] = read_manifest(workdir / manifest.format(dataset=dataset))[
                "label"
            ].to_numpy()
        labels_N = labels_by_dataset[dataset]
        hits: list[tuple[str, str, int]] = []
        for table in frames:
            table = table[
                (table["dataset"] == dataset) & table["label"].isin(EXPECTED_LABEL[concept["level"]])
            ]
            for (model, layer, sweep, sae_id), sae_rows in table.groupby(
                ["model", "layer", "sweep", "sae_id"]
            ):
                stats_dir = workdir / features.format(dataset=dataset, model=model, layer=layer, sweep=sweep,
                                                      sae_id=sae_id)  # fmt: skip
                if stats_dir not in top_rows:
                    top_rows[stats_dir] = load_feature_stats(stats_dir).top_row_FK
                for f in sae_rows["feature"].to_numpy():
                    top = top_rows[stats_dir][f]
                    top_labels = labels_N[top[top >= 0]]
                    if not len(top_labels):
                        continue
                    if len(members) == 1:
                        values, counts = np.unique(top_labels, return_counts=True)
                        found = counts.max() > counts.sum() / 2 and values[counts.argmax()] in members
                    else:
                        inside = np.isin(top_labels, list(members))
                        share = abstract_share if concept["level"] == "abstract" else min_share
                        found = inside.mean() >= share and len(set(top_labels[inside])) >= 2
                    if found:
                        hits.append((str(model), str(sae_id), int(f)))
        rows.append({"dataset": dataset, "concept": concept["concept"], "level": concept["level"],
                     "label": "/".join(EXPECTED_LABEL[concept["level"]]), "n_features": len(hits),
                     "models": ";".join(sorted({h[0] for h in hits}))})  # fmt: skip
    return pd.DataFrame(rows)
