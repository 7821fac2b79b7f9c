"""The feature stage of the workflow: statistics and concept tables for every SAE of a sweep.

Glue between the rules and the library modules: :mod:`vitsae.featstats` (one streaming pass over a
store per SAE), :mod:`vitsae.concepts` (ImageNet concept table in WordNet, iNat taxonomy table) and
:mod:`vitsae.wordnet` (the committed ImageNet hierarchy). Three functions, one per rule:

* :func:`thumbnails`: per dataset and split, a model-free visual descriptor of every image (a 4×4 RGB
  thumbnail), in store order, for the concept tables' visual-diversity statistic and its null model;
* :func:`sweep_feature_stats`: statistics of each SAE of a sweep on its own dataset's split, one
  directory per SAE (``features.parquet``, ``topk.npz``, ``image_feature.npz``, ...);
* :func:`sweep_concept_tables`: one concept table for the sweep's SAEs (a row per (SAE, feature)),
  the ImageNet table for ``imagenet`` datasets and the iNat table for ``inat2021`` ones.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from vitsae import cards, concepts, featstats, findings, transfer_features, wordnet
from vitsae.activations import split_rows
from vitsae.atomic import atomic_write
from vitsae.manifest import read_manifest
from vitsae.taxonomy import RANKS

log = logging.getLogger("vitsae.features")

#: Which concept table a dataset format gets.
TABLE_KIND = {"imagenet": "imagenet", "inat2021": "inat"}


def thumbnails(manifest_path: str | os.PathLike, root: str | os.PathLike, split: str, out_path: str | os.PathLike,
               size: int = 4) -> Path:  # fmt: skip
    """``[images, size*size*3]`` float32 descriptors of the images of ``split`` in store order (the
    manifest's usable rows, :func:`vitsae.activations.split_rows`), saved as ``.npy`` with their
    manifest rows beside (``rows``)."""
    rows = split_rows(read_manifest(Path(manifest_path)), split)
    if len(rows) == 0:
        raise ValueError(f"{manifest_path}: split {split!r} has no usable images")
    paths = [Path(root) / p for p in rows["path"]]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise FileNotFoundError(f"image {missing} (manifest {manifest_path}) does not exist; check the dataset root")
    desc_ND = concepts.thumbnail_descriptors(paths, size)
    out = Path(out_path)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez appends no suffix
            np.savez(fh, descriptors=desc_ND, rows=rows.index.to_numpy(np.int64))

    atomic_write(out, save)
    return out


def sweep_feature_stats(
    sae_dirs: list[str | os.PathLike],
    store_path: str | os.PathLike,
    split: str,
    manifest_path: str | os.PathLike,
    out_dirs: list[str | os.PathLike],
    k: int,
    batch_tokens: int = 4096,
) -> list[Path]:
    """:func:`vitsae.featstats.compute_feature_stats` of each SAE (its ``cfg.json`` names the token kind)
    on ``split`` of the store, with the manifest's labels (wnid or species directory) for the class
    table. One pass over the store per SAE; each directory is published atomically."""
    from vitsae.sae import load

    if len(sae_dirs) != len(out_dirs):
        raise ValueError(f"{len(sae_dirs)} SAEs but {len(out_dirs)} output directories")
    labels_N = featstats.split_labels(store_path, split, manifest_path)
    done = []
    for sae_dir, out_dir in zip(sae_dirs, out_dirs):
        sae = load(sae_dir)
        log.info("feature statistics of %s on %s/%s", sae_dir, store_path, split)
        done.append(featstats.compute_feature_stats(sae, store_path, split, out_dir, k=k, labels=labels_N,
                                                    batch_tokens=batch_tokens))  # fmt: skip
    return done


def rules_from_config(kind: str, settings: dict, seed: int) -> concepts.ImageNetRules | concepts.INatRules:
    """The label rules of table ``kind`` ('imagenet' or 'inat') from the config's ``concepts.<kind>``."""
    cls = concepts.ImageNetRules if kind == "imagenet" else concepts.INatRules
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ValueError(f"concepts.{kind}: unknown settings {unknown}; known: {sorted(fields)}")
    values = dict(settings)
    if "seed" in fields:
        values.setdefault("seed", seed)
    return cls(**values)


@dataclasses.dataclass
class _Split:
    """One split's labelling inputs, built once per job: the table's context (WordNet similarity, null
    model, clade codes) serves the observed, null and animal-null tables of every SAE."""

    kind: str
    rows_N: np.ndarray
    labels_N: np.ndarray
    taxa_N: pd.DataFrame | None
    hierarchy: object
    descriptors_ND: np.ndarray | None
    rules: object
    context: object
    animal_pool: np.ndarray  # split positions of animal images (finding 2's null draws from these)

    @classmethod
    def build(cls, kind, rows_N, manifest, hierarchy, descriptors_ND, rules) -> _Split:
        labels_N = manifest["label"].to_numpy()[rows_N].astype(str)
        if kind == "imagenet":  # ImageNet classes below animal.n.01
            context = concepts.imagenet_context(labels_N, hierarchy, descriptors_ND, rules)
            pool = np.nonzero(np.isin(labels_N, list(context.animals)))[0]
            return cls(kind, rows_N, labels_N, None, hierarchy, descriptors_ND, rules, context, pool)
        taxa_N = manifest.iloc[rows_N][list(RANKS)].reset_index(drop=True)
        pool = np.nonzero(taxa_N["kingdom"].to_numpy().astype(str) == "Animalia")[0]  # iNat kingdom Animalia
        return cls(kind, rows_N, labels_N, taxa_N, hierarchy, None, rules, concepts.inat_context(taxa_N, rules), pool)

    def table(self, top_image_FK: np.ndarray, map_FKT: np.ndarray) -> pd.DataFrame:
        """The concept table of one set of top images (observed or null)."""
        if self.kind == "imagenet":
            return concepts.imagenet_table(top_image_FK, map_FKT, self.labels_N, self.hierarchy, self.descriptors_ND,
                                           self.rules, context=self.context)  # fmt: skip
        table = concepts.inat_table(top_image_FK, map_FKT, self.taxa_N, self.rules, context=self.context)
        # finding 2 counts traits among animal features: the iNat table's animal column (findings.inat_animal)
        table["animal"] = findings.inat_animal(top_image_FK, self.taxa_N["kingdom"].to_numpy(), self.rules.n_top,
                                               self.rules.clade_purity)  # fmt: skip
        return table


def sweep_concept_tables(
    stats_dirs: list[str | os.PathLike],
    sae_ids: list[str],
    dataset_format: str,
    manifest_path: str | os.PathLike,
    thumbnails_path: str | os.PathLike | None,
    rules: concepts.ImageNetRules | concepts.INatRules,
    out_csv: str | os.PathLike,
    null_csv: str | os.PathLike,
    meta: dict,
    seed: int,
) -> tuple[Path, Path]:
    """Two CSVs for the SAEs of one sweep: the concept table of every SAE (``sae_id`` column first, then
    ``meta`` columns such as dataset, model, layer, sweep) from its statistics directory, and the null
    table: the same labelling, with the same rules, of random image sets of the same sizes
    (:func:`vitsae.findings.null_top_images`, seeded by ``seed`` and the SAE's position), whose
    ``animal`` and ``trait`` columns come from random *animal* images for the observed animal features
    (:func:`vitsae.findings.with_animal_null`)."""
    kind = TABLE_KIND.get(dataset_format)
    if kind is None:
        raise ValueError(f"no concept table for dataset format {dataset_format!r}; known: {sorted(TABLE_KIND)}")
    manifest = read_manifest(Path(manifest_path))
    hierarchy = wordnet.load_hierarchy() if kind == "imagenet" else None
    thumbs = dict(np.load(thumbnails_path)) if kind == "imagenet" else None  # once for every SAE
    observed, null = [], []
    split: _Split | None = None
    for i, (stats_dir, sae_id) in enumerate(zip(stats_dirs, sae_ids)):
        stats = featstats.load_feature_stats(stats_dir)
        rows_N = stats.images["row"].to_numpy(np.int64)
        descriptors_ND = None
        if thumbs is not None:
            if not np.array_equal(thumbs["rows"], rows_N):
                raise ValueError(
                    f"{thumbnails_path} describes other images than {stats_dir} (manifest rows differ); "
                    "rerun the thumbnails rule"
                )
            descriptors_ND = thumbs["descriptors"]
        if split is None or not np.array_equal(split.rows_N, rows_N):
            split = _Split.build(kind, rows_N, manifest, hierarchy, descriptors_ND, rules)
        null_FK = findings.null_top_images(stats.top_image_FK, len(rows_N), seed=seed + i)
        tables = [split.table(top_FK, stats.top_map_FKT) for top_FK in (stats.top_image_FK, null_FK)]
        animal_F = tables[0]["animal"].fillna(False).astype(bool).to_numpy()
        animal_FK = findings.null_top_images(stats.top_image_FK[animal_F], len(rows_N), seed=(seed + i, 2),
                                             pool=split.animal_pool)  # fmt: skip
        tables[1] = findings.with_animal_null(tables[1], animal_F, split.table(animal_FK, stats.top_map_FKT[animal_F]))
        for frames, table in zip((observed, null), tables):
            features = stats.features[["feature", "frequency", "mean_active", "max_activation"]]
            table = table.merge(features, on="feature", how="left")
            table.insert(0, "sae_id", sae_id)
            for j, (key, value) in enumerate(meta.items()):
                table.insert(1 + j, key, value)
            frames.append(table)
    for path, frames in ((Path(out_csv), observed), (Path(null_csv), null)):
        result = pd.concat(frames, ignore_index=True)
        atomic_write(path, lambda tmp, result=result: result.to_csv(tmp, index=False))
    return Path(out_csv), Path(null_csv)


def concept_records(tables: list[str | os.PathLike], nulls: list[str | os.PathLike]) -> list[findings.SAEConcepts]:
    """One :class:`vitsae.findings.SAEConcepts` per (SAE, dataset) of the concept tables (written by
    :func:`sweep_concept_tables`), with the SAE's in-domain evaluation and ``cfg.json`` found by path:
    ``results/eval/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/{dataset}.json`` and
    ``results/sae/.../cfg.json``."""
    records = []
    for table_path, null_path in zip(tables, nulls):
        table, null = pd.read_csv(table_path), pd.read_csv(null_path)
        for sae_id, rows in table.groupby("sae_id", sort=False):
            first = rows.iloc[0]
            place = f"{first['dataset']}/{first['model']}/layer{int(first['layer'])}/{first['sweep']}/{sae_id}"
            records.append(findings.from_files(
                rows.reset_index(drop=True), f"results/eval/{place}/{first['dataset']}.json",
                null[null["sae_id"] == sae_id].reset_index(drop=True), f"results/sae/{place}/cfg.json",
            ))  # fmt: skip
    return records


def write_findings(tables: list[str], nulls: list[str], formats: list[str], outputs: dict[str, str], note: str,
                   n_boot: int, seed: int) -> None:  # fmt: skip
    """Finding 1 (ImageNet tables: share abstract) and finding 2 (every table: share of traits among
    animal features), each a figure, its robustness table and its label-share table."""
    imagenet = [(t, n) for t, n, f in zip(tables, nulls, formats) if f == "imagenet"]
    records_1 = concept_records([t for t, _ in imagenet], [n for _, n in imagenet])
    records_2 = concept_records(tables, nulls)
    if not records_1:
        raise ValueError("finding 1 needs at least one dataset of format imagenet (WordNet concept tables)")
    findings.write_semantic_abstraction(records_1, outputs["abstraction_pdf"], outputs["abstraction_csv"],
                                        outputs["abstraction_shares"], note, n_boot, seed)  # fmt: skip
    findings.write_traits(records_2, outputs["traits_pdf"], outputs["traits_csv"], outputs["traits_shares"], note,
                          n_boot, seed)  # fmt: skip


def write_transfer_features(sae_files: list[str], stats_dirs: list[str], out_pdf: str, out_csv: str, note: str,
                            seed: int) -> None:  # fmt: skip
    """Decoder directions matched across datasets, against seeds (ceiling) and random directions (floor),
    over the live features of each SAE (its own statistics)."""
    refs = [transfer_features.decoder_ref(f, Path(d) / "features.parquet") for f, d in zip(sae_files, stats_dirs)]
    transfer_features.write_transfer_features(transfer_features.plan_pairs(refs), out_pdf, out_csv, note, seed)


def write_sweep_cards(stats_dirs: list[str], sae_ids: list[str], table_csv: str, manifest_path: str,
                      root: str, store_path: str, out_dir: str, name: str, per_label: int, n_images: int) -> None:  # fmt: skip
    """Feature cards of the strongest features of each label, for each SAE of the sweep:
    ``{out_dir}/{sae_id}/{label}/feature{f:05d}.png`` (+ a JSON sidecar; ``index.csv`` per SAE). ``name``
    (e.g. ``clip-b16/layer10/paper``) starts every caption. The directory is published when complete."""
    from vitsae.store import open_store

    preprocessing = dict(open_store(store_path).attrs.get("preprocessing") or {})
    table = pd.read_csv(table_csv)
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    for stats_dir, sae_id in zip(stats_dirs, sae_ids):
        rows = table[table["sae_id"] == sae_id].reset_index(drop=True)
        cards.write_cards(stats_dir, rows, manifest_path, root, tmp, name, sae_id,
                          per_label=per_label, n_images=n_images, preprocessing=preprocessing)  # fmt: skip
    (tmp / name).mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp / name, out)
    shutil.rmtree(tmp)


#: The label a planted demo concept should get, by its level (vitsae.demo.PLANTED).
EXPECTED_LABEL = {"class": ("single-class",), "subtree": ("taxonomic",), "abstract": ("abstract", "cross-clade"),
                  "species": ("single-species",), "genus": ("trait",), "order": ("trait", "clade")}


def planted_recovery(workdir: str | os.PathLike, planted: list[dict], min_share: float = 0.9,
                     abstract_share: float = 0.75) -> pd.DataFrame:  # fmt: skip
    """Which planted concepts (``vitsae.demo.PLANTED``) some feature found with the right label: a feature
    labelled as the concept's level expects (:data:`EXPECTED_LABEL`) whose top images come from the
    concept's member classes: for a concept of one class, that class is the most frequent among them (the
    label already says it holds at least ``single_class_share`` / ``single_species_share``); for a
    concept of several classes, at least ``min_share`` of them (``abstract_share`` for an abstract one,
    the share its label asks of its major classes, ``abstract_min_coverage``) and from at least two of
    the classes. One row per concept: the number of such features and the models."""
    workdir = Path(workdir)
    # every file is read once for all concepts: labels per dataset, concept tables, each SAE's top images
    labels_by_dataset: dict[str, np.ndarray] = {}
    tables: dict[Path, pd.DataFrame] = {}
    top_rows: dict[Path, np.ndarray] = {}
    rows = []
    for concept in planted:
        dataset, members = concept["dataset"], set(concept["members"])
        if dataset not in labels_by_dataset:
            manifest = read_manifest(workdir / f"results/manifests/{dataset}.parquet")
            labels_by_dataset[dataset] = manifest["label"].to_numpy()
        labels_N = labels_by_dataset[dataset]
        hits: list[tuple[str, str, int]] = []
        for table_path in sorted((workdir / "results/tables/concepts" / dataset).glob("*/layer*/*.csv")):
            if table_path.name.endswith(".null.csv"):
                continue
            model, layer, sweep = table_path.parts[-3], table_path.parts[-2], table_path.stem
            if table_path not in tables:
                tables[table_path] = pd.read_csv(table_path)
            table = tables[table_path]
            table = table[table["label"].isin(EXPECTED_LABEL[concept["level"]])]
            for sae_id, sae_rows in table.groupby("sae_id"):
                stats_dir = workdir / f"results/features/{dataset}/{model}/{layer}/{sweep}/{sae_id}"
                if stats_dir not in top_rows:
                    top_rows[stats_dir] = featstats.load_feature_stats(stats_dir).top_row_FK
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
                        hits.append((model, str(sae_id), int(f)))
        rows.append({"dataset": dataset, "concept": concept["concept"], "level": concept["level"],
                     "label": "/".join(EXPECTED_LABEL[concept["level"]]), "n_features": len(hits),
                     "models": ";".join(sorted({h[0] for h in hits}))})  # fmt: skip
    return pd.DataFrame(rows)
