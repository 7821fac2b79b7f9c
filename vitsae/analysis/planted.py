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

from vitsae.analysis.feature_files import load_feature_stats
from vitsae.data.manifest import read_manifest

#: The label a planted demo concept should get, by its level (:data:`vitsae.data.demo.PLANTED`).
EXPECTED_LABEL = {
    "class": ("single-class",),
    "subtree": ("taxonomic",),
    # the bullseye is one visual pattern across branches: ImageNet must call it a visual motif, never
    # abstract (the negative control of the abstract label); in iNat it is a convergent pattern
    "motif": ("visual-motif", "cross-clade"),
    "species": ("single-species",),
    "genus": ("trait",),
    # a background texture fills the image: one clade, not localized (a trait would be a wrong label)
    "order": ("clade",),
}


def planted_recovery(workdir: str | os.PathLike, planted: list[dict], tables: list[str], manifest: str,
                     features: str, min_share: float = 0.9, abstract_share: float = 0.75,
                     expected: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:  # fmt: skip
    """Which planted concepts some feature found with the right label: a feature labelled as the concept's
    level expects (:data:`EXPECTED_LABEL`) whose top images come from the concept's member classes: for a
    concept of one class, that class is the most frequent among them (the label already says it holds at
    least ``single_class_share`` / ``single_species_share``); for a concept of several classes, at least
    ``min_share`` of them (``abstract_share`` for an abstract one, the share its label asks of its major
    classes, ``abstract_min_coverage``) and from at least two of the classes. One row per concept: the
    number of such features and the models, and the recall of every model: ``saes_<model>``, how many of
    its SAEs in ``tables`` (on the concept's dataset) have such a feature, as ``found/all``.

    ``tables``: the run's concept tables (paths under ``workdir``); ``manifest`` and ``features``: the
    layout's patterns of a dataset's manifest (``{dataset}``) and of an SAE's statistics (``{dataset}``,
    ``{model}``, ``{layer}``, ``{sweep}``, ``{sae_id}``). ``expected``: level → labels, in place of
    :data:`EXPECTED_LABEL` (e.g. ``{"motif": ("abstract",)}`` counts the features that got a *wrong*
    label: a negative control); levels it lacks are left out."""
    expected = EXPECTED_LABEL if expected is None else expected
    planted = [c for c in planted if c["level"] in expected]
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
        saes: dict[str, set] = {}
        for table in frames:
            here = table.loc[table["dataset"] == dataset, ["model", "sweep", "sae_id"]].drop_duplicates()
            for model, sweep, sae_id in here.itertuples(index=False):
                saes.setdefault(str(model), set()).add(f"{sweep}/{sae_id}")
            table = table[(table["dataset"] == dataset) & table["label"].isin(expected[concept["level"]])]
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
                        share = abstract_share if concept["level"] == "motif" else min_share
                        found = inside.mean() >= share and len(set(top_labels[inside])) >= 2
                    if found:
                        hits.append((str(model), f"{sweep}/{sae_id}", int(f)))
        found = {m: len({h[1] for h in hits if h[0] == m}) for m in saes}
        rows.append({"dataset": dataset, "concept": concept["concept"], "level": concept["level"],
                     "label": "/".join(expected[concept["level"]]), "n_features": len(hits),
                     "models": ";".join(sorted({h[0] for h in hits})),
                     **{f"saes_{m}": f"{found[m]}/{len(saes[m])}" for m in sorted(saes)}})  # fmt: skip
    return pd.DataFrame(rows)


#: The planted levels a feature's firing regions must fall on for its label to be right (the demo's
#: ground truth; :func:`planted_precision`). ``abstract`` and ``co-occurrence``: the demo plants neither,
#: so every feature with those labels is wrong by construction.
LABEL_LEVELS = {
    "single-class": ("class",),
    "taxonomic": ("subtree",),
    "visual-motif": ("motif",),
    "abstract": (),
    "co-occurrence": (),
    "single-species": ("species",),
    "trait": ("genus",),  # a part of a genus's species: localized
    "clade": (
        "genus",
        "order",
    ),  # a clade at any rank up to the order: a genus part seen whole, an order texture
    "cross-clade": ("motif",),
}
#: Every planted level, in the order the precision table's ``on_<level>`` columns list them.
LEVELS = ("class", "subtree", "motif", "species", "genus", "order")
#: An image is on target when this share of its firing region lies on pixels of a planted object of the
#: label's levels; a feature is right when this share of its firing top images is on target. Majorities,
#: fixed before the demo was looked at with them.
ON_TARGET = 0.5


def planted_precision(workdir: str | os.PathLike, tables: list[str], manifest: str, features: str,
                      generators: dict[str, dict]) -> pd.DataFrame:  # fmt: skip
    """For every (dataset, model, label) of the run's concept tables: how many features have the label
    (``n_features``), how many of them fire where a planted object of the label's level lies
    (``n_right``, :data:`LABEL_LEVELS`, :data:`ON_TARGET`) and ``precision`` = right / labelled; and where
    the labelled features fire instead: ``on_<level>``, how many of them have most of their top images'
    regions mostly on a planted object of that level (the level owning the most region pixels; columns of
    levels no feature lands on are left out). E.g. ``abstract`` features ``on_motif`` are the bullseye
    called abstract, ``trait`` features ``on_order`` an order's background texture called a trait.

    A feature's firing region in a top image: the pixels where its patch map, resampled bilinearly to the
    image's pixels through the model's view (:func:`vitsae.analysis.regions.cell_weights`, the
    statistics' ``grid`` and ``view``), is at least half its max. The pixels' owners come from replaying
    the demo's drawing (:func:`vitsae.data.demo.planted_owners`; ``generators``: dataset →
    ``{kind, seed, train_per_class, val_per_class, image_size}``, the config's ``generate``)."""
    from vitsae.analysis.regions import cell_weights
    from vitsae.data import demo

    workdir = Path(workdir)
    frames = [pd.read_csv(workdir / t) for t in sorted(tables)]
    owners: dict[tuple[str, str], tuple[list, np.ndarray]] = {}
    rows = []
    for table in frames:
        for (dataset, model, layer, sweep, sae_id), sae_rows in table.groupby(
            ["dataset", "model", "layer", "sweep", "sae_id"]
        ):
            gen = generators[dataset]
            stats = load_feature_stats(workdir / features.format(dataset=dataset, model=model, layer=layer,
                                                                 sweep=sweep, sae_id=sae_id))  # fmt: skip
            split = stats.meta["split"]
            if (dataset, split) not in owners:
                paths = (
                    read_manifest(workdir / manifest.format(dataset=dataset))["path"].astype(str).to_numpy()
                )
                # per image: its concepts' levels and, per pixel, which concept owns it
                pixels = {rel: (np.array([c.level for c in concepts]), owner.reshape(-1))
                          for rel, concepts, owner in demo.planted_owners(
                              gen["kind"], gen["seed"], gen["train_per_class"], gen["val_per_class"],
                              gen["image_size"], tuple(sorted({p.split("/")[0] for p in paths})))}  # fmt: skip
                owners[(dataset, split)] = (paths, pixels)
            paths, pixels = owners[(dataset, split)]
            size = gen["image_size"]
            weights = cell_weights(stats.meta["grid"], size, float(stats.meta.get("view") or 1.0))
            for label, levels in LABEL_LEVELS.items():
                feats = sae_rows.loc[sae_rows["label"] == label, "feature"].to_numpy()
                right = 0
                where: dict[str, int] = {}
                for f in feats:
                    hits, lands = [], []
                    slots = np.flatnonzero(stats.top_row_FK[f] >= 0)
                    # every top image's map at the pixels in one product (the weights are read once)
                    act_KP = stats.top_map_FKT[f, slots].astype(np.float64) @ weights.T
                    for act, r in zip(act_KP, stats.top_row_FK[f, slots]):
                        if act.max() <= 0:
                            continue
                        levels_C, owner_P = pixels[paths[r]]
                        owner = owner_P[act >= 0.5 * act.max()]  # the owners of the firing region's pixels
                        hits.append(np.isin(levels_C, levels)[owner].mean() >= ON_TARGET)
                        lands.append(levels_C[np.bincount(owner, minlength=len(levels_C)).argmax()])
                    right += bool(hits) and np.mean(hits) >= ON_TARGET
                    if lands:  # the level most of its top images' regions mostly lie on
                        top = max(sorted(set(lands)), key=lands.count)
                        where[top] = where.get(top, 0) + 1
                rows.append({"dataset": dataset, "model": model, "sweep": sweep, "sae_id": sae_id, "label": label,
                             "n_features": len(feats), "n_right": int(right),
                             **{f"on_{lv}": where.get(lv, 0) for lv in LEVELS}})  # fmt: skip
    per_sae = pd.DataFrame(rows)
    counts = ["n_features", "n_right", *(f"on_{lv}" for lv in LEVELS)]
    out = per_sae.groupby(["dataset", "model", "label"], as_index=False)[counts].sum()
    out = out[out["n_features"] > 0].reset_index(drop=True)
    out.insert(5, "precision", out["n_right"] / out["n_features"])
    return out.loc[:, (out != 0).any(axis=0) | ~out.columns.str.startswith("on_")]
