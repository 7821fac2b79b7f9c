"""The concept tables of a sweep's SAEs: one row per (SAE, feature), and the same labelling of random
image sets (the null table).

The ImageNet table (WordNet, :func:`vitsae.analysis.concepts.imagenet_table`) for ``imagenet`` datasets,
the iNat table (taxonomy, :func:`~vitsae.analysis.concepts.inat_table`) for ``inat2021`` ones. Each SAE's
place (dataset, model, layer, sweep, sae_id) comes from its statistics' ``meta.json``, which holds the
SAE's ``cfg.json``. The null models are :mod:`vitsae.analysis.nulls`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from vitsae.analysis import concepts, cooccurrence, nulls, wordnet
from vitsae.analysis.feature_files import load_feature_stats, sae_place
from vitsae.analysis.settings import TABLE_KIND, ImageNetRules, INatRules
from vitsae.analysis.taxonomy import RANKS
from vitsae.atomic import atomic_write
from vitsae.data.manifest import read_manifest


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
    cells_NCD: np.ndarray | None
    rules: object
    context: object
    animal_pool: np.ndarray  # split positions of animal images (finding 2's null draws from these)
    source_rows_N: np.ndarray | None = None  # the statistics' manifest rows this split was built for

    @classmethod
    def build(
        cls,
        kind,
        rows_N,
        manifest,
        hierarchy,
        descriptors_ND,
        cells_NCD,
        rules,
        shuffle_seed=None,
        multilabels=None,
    ) -> _Split:
        if shuffle_seed is not None:  # the negative control: labels (every rank) permuted among the split
            perm_N = np.random.default_rng([shuffle_seed, len(rows_N)]).permutation(len(rows_N))
            manifest = manifest.iloc[rows_N].reset_index(drop=True)
            label_columns = ["label", *(r for r in RANKS if r in manifest.columns)]
            manifest[label_columns] = manifest[label_columns].iloc[perm_N].to_numpy()
            rows_N = np.arange(len(rows_N))
        labels_N = manifest["label"].to_numpy()[rows_N].astype(str)
        if kind == "imagenet":  # ImageNet classes below animal.n.01
            context = concepts.imagenet_context(
                labels_N, hierarchy, descriptors_ND, rules, cells_NCD, multilabels
            )
            pool = np.nonzero(np.isin(labels_N, list(context.animals)))[0]
            return cls(
                kind, rows_N, labels_N, None, hierarchy, descriptors_ND, cells_NCD, rules, context, pool
            )
        taxa_N = manifest.iloc[rows_N][list(RANKS)].reset_index(drop=True)
        pool = np.nonzero(taxa_N["kingdom"].to_numpy().astype(str) == "Animalia")[0]  # iNat kingdom Animalia
        return cls(
            kind,
            rows_N,
            labels_N,
            taxa_N,
            hierarchy,
            None,
            cells_NCD,
            rules,
            concepts.inat_context(taxa_N, rules),
            pool,
        )

    def table(
        self,
        top_image_FK: np.ndarray,
        map_FKT: np.ndarray,
        grid=None,
        patch_index_FKT=None,
        ratio_FK=None,
        view=1.0,
        regions=True,
    ) -> pd.DataFrame:
        """The concept table of one set of top images (observed or null); ``grid`` and ``patch_index_FKT``
        place the maps on the patch grid (the statistics' meta ``grid``, ``top_patch_index_FKT``);
        ``ratio_FK``: the peak-token norm ratios (``top_peak_norm_ratio_FK``); ``view``: the statistics'
        meta ``view``; ``regions`` False: no region diversity (the animal null, which only the trait
        columns use; the part contrast, a trait test, is measured there too)."""
        where = {"context": self.context, "grid": grid, "top_patch_index_FKT": patch_index_FKT,
                 "top_peak_norm_ratio_FK": ratio_FK}  # fmt: skip
        if self.kind == "imagenet":
            return concepts.imagenet_table(top_image_FK, map_FKT, self.labels_N, self.hierarchy, self.descriptors_ND,
                                           self.rules, **where, view=view, region_diversity=regions)  # fmt: skip
        table = concepts.inat_table(top_image_FK, map_FKT, self.taxa_N, self.rules, **where, cells_NCD=self.cells_NCD,
                                    view=view)  # fmt: skip
        # finding 2 counts traits among animal features: the iNat table's animal column
        table["animal"] = nulls.inat_animal(top_image_FK, self.taxa_N["kingdom"].to_numpy(), self.rules.n_top,
                                               self.rules.clade_purity)  # fmt: skip
        return table


def sweep_concept_tables(
    stats_dirs: list[str | os.PathLike],
    dataset_format: str,
    manifest_path: str | os.PathLike,
    thumbnails_path: str | os.PathLike | None,
    rules: ImageNetRules | INatRules,
    out_csv: str | os.PathLike,
    null_csv: str | os.PathLike,
    seed: int,
    shuffle_seed: int | None = None,
    multilabels: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """Two CSVs for the SAEs of one sweep: the concept table of every SAE (``sae_id`` column first, then
    its place: dataset, model, layer, sweep) from its statistics directory, and the null table: the same
    labelling, with the same rules, of random image sets of the same sizes
    (:func:`vitsae.analysis.nulls.null_top_images`, seeded by ``seed`` and the SAE's position), whose
    ``animal`` and ``trait`` columns come from random *animal* images for the observed animal features
    (:func:`vitsae.analysis.nulls.with_animal_null`).

    ``shuffle_seed`` (the shuffled-labels control): before any labelling, the manifest's labels of the
    split's images (``label`` and, for iNat, every taxonomic rank, one row moved as a whole) are permuted
    among those images (``default_rng([shuffle_seed, n_images]).permutation``). Each feature keeps its top
    images and maps; only what they are called changes, so no label share may exceed its null.

    ``multilabels`` (ImageNet): the path of the dataset's multi-label file for the co-occurrence control
    (``real``: timm's ReaL labels; the workflow resolves the config's setting against the dataset root),
    or None."""
    kind = TABLE_KIND.get(dataset_format)
    if kind is None:
        raise ValueError(
            f"no concept table for dataset format {dataset_format!r}; known: {sorted(TABLE_KIND)}"
        )
    manifest = read_manifest(Path(manifest_path))
    hierarchy = wordnet.load_hierarchy() if kind == "imagenet" else None
    if multilabels is not None and kind == "imagenet":
        multilabels = cooccurrence.real_labels_path() if str(multilabels) == "real" else Path(multilabels)
    thumbs = dict(np.load(thumbnails_path)) if thumbnails_path is not None else None  # once for every SAE
    observed, null = [], []
    split: _Split | None = None
    for i, stats_dir in enumerate(stats_dirs):
        stats = load_feature_stats(stats_dir)
        sae_id, where = sae_place(stats.meta)
        rows_N = stats.images["row"].to_numpy(np.int64)
        descriptors_ND = cells_NCD = None
        if thumbs is not None:
            if not np.array_equal(thumbs["rows"], rows_N):
                raise ValueError(
                    f"{thumbnails_path} describes other images than {stats_dir} (manifest rows differ); "
                    "rerun the thumbnails rule"
                )
            descriptors_ND = thumbs["descriptors"]
            cells_NCD = thumbs.get("cells")
        if split is None or not np.array_equal(split.source_rows_N, rows_N):
            split = _Split.build(
                kind, rows_N, manifest, hierarchy, descriptors_ND, cells_NCD, rules, shuffle_seed, multilabels
            )
            split.source_rows_N = rows_N
        null_FK = nulls.null_top_images(stats.top_image_FK, len(rows_N), seed=seed + i)
        grid, pidx_FKT, ratio_FK = (
            stats.meta.get("grid"),
            stats.top_patch_index_FKT,
            stats.top_peak_norm_ratio_FK,
        )
        view = float(stats.meta.get("view") or 1.0)
        tables = [split.table(top_FK, stats.top_map_FKT, grid, pidx_FKT, ratio_FK, view)
                  for top_FK in (stats.top_image_FK, null_FK)]  # fmt: skip
        animal_F = tables[0]["animal"].fillna(False).astype(bool).to_numpy()
        animal_FK = nulls.null_top_images(stats.top_image_FK[animal_F], len(rows_N), seed=(seed + i, 2),
                                          pool=split.animal_pool)  # fmt: skip
        tables[1] = nulls.with_animal_null(
            tables[1], animal_F,
            split.table(animal_FK, stats.top_map_FKT[animal_F], grid, None if pidx_FKT is None else pidx_FKT[animal_F],
                        ratio_FK[animal_F], view, regions=False),
        )  # fmt: skip
        for frames, table in zip((observed, null), tables):
            features = stats.features[["feature", "frequency", "mean_active", "max_activation"]]
            table = table.merge(features, on="feature", how="left")
            table.insert(0, "sae_id", sae_id)
            for j, (key, value) in enumerate(where.items()):
                table.insert(1 + j, key, value)
            frames.append(table)
    for path, frames in ((Path(out_csv), observed), (Path(null_csv), null)):
        result = pd.concat(frames, ignore_index=True)
        atomic_write(path, lambda tmp, result=result: result.to_csv(tmp, index=False))
    return Path(out_csv), Path(null_csv)
