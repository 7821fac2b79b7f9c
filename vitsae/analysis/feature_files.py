"""Reading the feature statistics that :mod:`vitsae.analysis.stats` writes, without torch.

The directory's format (its files and their fields) is described in :mod:`vitsae.analysis.stats`. The
jobs that only read statistics (concept tables, clusters, cards, the browser) import this module, so they
never load torch: importing it costs ~2 CPU-seconds per job, and the demo runs ~40 such jobs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FORMAT_VERSION = 2  # 2: topk.npz holds peak_norm_ratio_FK
FILES = ("meta.json", "features.parquet", "topk.npz", "image_feature.npz", "images.parquet")
CLASS_FILE = "class_stats.parquet"


def class_table(csr: dict, labels_N: np.ndarray, tokens_per_image: int) -> pd.DataFrame:
    """The feature × class table (module docstring) from the image × feature CSR and per-image labels."""
    n_images, n_feat = (int(x) for x in csr["shape"])
    classes, label_id_N = np.unique(np.asarray(labels_N).astype(str), return_inverse=True)
    class_size_C = np.bincount(label_id_N, minlength=len(classes))
    image_E = np.repeat(np.arange(n_images), np.diff(csr["indptr"]))
    key_E = label_id_N[image_E].astype(np.int64) * n_feat + csr["indices"]
    keys_G, group_E = np.unique(key_E, return_inverse=True)
    n_groups = len(keys_G)
    n_active_images = np.bincount(group_E, minlength=n_groups)
    sum_max = np.bincount(group_E, weights=csr["max"].astype(np.float64), minlength=n_groups)
    n_active_tokens = np.bincount(group_E, weights=csr["n_active"].astype(np.float64), minlength=n_groups)
    sum_act = np.bincount(group_E, weights=csr["sum"].astype(np.float64), minlength=n_groups)
    class_G = keys_G // n_feat
    n_class_images = class_size_C[class_G]
    out = pd.DataFrame(
        {
            "feature": (keys_G % n_feat).astype(np.int64),
            "label": classes[class_G],
            "n_images": n_class_images.astype(np.int64),
            "n_active_images": n_active_images.astype(np.int64),
            "image_rate": n_active_images / n_class_images,
            "mean_max": sum_max / n_class_images,
            "n_active_tokens": n_active_tokens.astype(np.int64),
            "token_rate": n_active_tokens / (n_class_images * tokens_per_image),
            "mean_active": sum_act / n_active_tokens,
        }
    )
    return out.sort_values(["feature", "label"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class ImageFeatureMatrix:
    """The image × feature CSR matrix of one statistics directory (fields as in ``image_feature.npz``)."""

    indptr: np.ndarray
    indices: np.ndarray
    max: np.ndarray
    n_active: np.ndarray
    sum: np.ndarray
    shape: tuple[int, int]
    row: np.ndarray

    def dense(self, field: str = "max") -> np.ndarray:
        """``[n_images, d_sae]`` dense array of ``field`` ('max', 'n_active' or 'sum'); zeros elsewhere."""
        values = getattr(self, field)
        out = np.zeros(self.shape, dtype=values.dtype)
        image_E = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        out[image_E, self.indices] = values
        return out

    def column(self, feature: int, field: str = "max") -> np.ndarray:
        """Per image, ``field`` of one feature (dense ``[n_images]``)."""
        out = np.zeros(self.shape[0], dtype=getattr(self, field).dtype)
        hit_E = self.indices == feature
        out[np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))[hit_E]] = getattr(self, field)[hit_E]
        return out


@dataclass(frozen=True)
class FeatureStats:
    directory: Path
    meta: dict
    features: pd.DataFrame
    top_image_FK: np.ndarray
    top_row_FK: np.ndarray
    top_value_FK: np.ndarray
    top_map_FKT: np.ndarray
    top_patch_index_FKT: np.ndarray | None
    top_peak_norm_ratio_FK: np.ndarray
    image_feature: ImageFeatureMatrix
    images: pd.DataFrame
    class_stats: pd.DataFrame | None


#: What places an SAE: the dataset it was trained on, model, layer and sweep (``cfg.json`` ``meta``).
PLACE = ("dataset", "model", "layer", "sweep")


def sae_place(stats_meta: dict) -> tuple[str, dict]:
    """``(sae_id, {dataset, model, layer, sweep})`` of the SAE whose statistics' ``meta.json`` this is."""
    cfg = stats_meta.get("sae") or {}
    meta = cfg.get("meta", {})
    missing = [k for k in PLACE if k not in meta]
    if missing or "sae_id" not in cfg:
        raise KeyError(f"the statistics of {stats_meta.get('store')} name no SAE {missing or ['sae_id']} "
                       "(meta.json 'sae'); recompute them from a checkpoint of this version")  # fmt: skip
    return str(cfg["sae_id"]), {"dataset": meta["dataset"], "model": meta["model"], "layer": int(meta["layer"]),
                                "sweep": meta["sweep"]}  # fmt: skip


def load_feature_stats(directory: str | os.PathLike) -> FeatureStats:
    """Read a directory written by :func:`vitsae.analysis.stats.compute_feature_stats`."""
    directory = Path(directory)
    missing = [f for f in FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"feature statistics {directory} lack {missing}; rerun the statistics rule that makes them"
        )
    meta = json.loads((directory / "meta.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{directory / 'meta.json'} has format_version {meta.get('format_version')}, this vitsae reads "
            f"{FORMAT_VERSION}; rerun the statistics rule"
        )
    with np.load(directory / "topk.npz", allow_pickle=False) as z:
        topk = {name: z[name] for name in z.files}
    with np.load(directory / "image_feature.npz", allow_pickle=False) as z:
        csr = {name: z[name] for name in z.files}
    class_path = directory / CLASS_FILE
    return FeatureStats(
        directory=directory,
        meta=meta,
        features=pd.read_parquet(directory / "features.parquet"),
        top_image_FK=topk["image_FK"],
        top_row_FK=topk["row_FK"],
        top_value_FK=topk["value_FK"],
        top_map_FKT=topk["map_FKT"],
        top_patch_index_FKT=topk.get("patch_index_FKT"),
        top_peak_norm_ratio_FK=topk["peak_norm_ratio_FK"],
        image_feature=ImageFeatureMatrix(
            indptr=csr["indptr"],
            indices=csr["indices"],
            max=csr["max"],
            n_active=csr["n_active"],
            sum=csr["sum"],
            shape=(int(csr["shape"][0]), int(csr["shape"][1])),
            row=csr["row"],
        ),
        images=pd.read_parquet(directory / "images.parquet"),
        class_stats=pd.read_parquet(class_path) if class_path.is_file() else None,
    )
