"""Feature clusters: SAE features that split one concept between them, grouped so it is counted once.

A wide SAE often spreads one concept over several features (feature splitting, or near-duplicate
features): counted feature by feature, that concept would weigh several times in a label share. Two
features ``i != j`` are *linked* when

* their decoder rows point the same way: ``cos(W_dec[i], W_dec[j]) > cosine`` (a zero row has cosine 0
  with every row; cosines are clipped to [-1, 1], so ``cosine = 1`` links no two rows, not even equal
  ones), or
* their firing top images overlap: the Jaccard index ``|A_i ∩ A_j| / |A_i ∪ A_j| > jaccard`` of their
  sets of top images (``top_image_FK >= 0``; -1 is padding); a feature without firing top images links
  by image overlap to none.

A *cluster* is a connected component of the links (so a chain a~b~c is one cluster even when a and c are
not linked), from :func:`scipy.sparse.csgraph.connected_components`. Cluster ids run 0..C-1 in the order of
each cluster's smallest feature index, so feature 0 is in cluster 0 and the ids do not depend on how
the components were found.

Memory: the cosines are computed in row blocks (``block`` rows against the features from the block's first
row on, float64), never the whole F×F matrix; the image overlaps come from a sparse product of the
feature × image incidence matrix, in the same row blocks.

:func:`sweep_clusters` writes the clusters of a sweep's SAEs as one CSV (rule ``clusters_<sweep>``): columns
``sae_id``, ``dataset``, ``model``, ``layer``, ``sweep``, ``feature``, ``cluster``, one row per feature,
with every stored top image of the feature's statistics (not only a concept table's ``n_top``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from vitsae.analysis.feature_files import load_feature_stats, sae_place
from vitsae.atomic import atomic_write
from vitsae.sae import files

log = logging.getLogger("vitsae.analysis.clusters")


def feature_clusters(
    W_dec_FD: np.ndarray, top_image_FK: np.ndarray, cosine: float, jaccard: float, block: int = 2048
) -> np.ndarray:
    """Cluster id (int64, 0..C-1, numbered by each cluster's smallest feature index) of every feature:
    the connected components of the links ``cos(W_dec_FD[i], W_dec_FD[j]) > cosine`` or Jaccard overlap
    of the firing top images (``top_image_FK >= 0``) ``> jaccard`` (module docstring). ``block``: rows
    of the cosine and overlap matrices computed at once (at most ``block × F`` values in memory)."""
    W_dec_FD = np.asarray(W_dec_FD)
    top_image_FK = np.asarray(top_image_FK)
    if W_dec_FD.ndim != 2 or top_image_FK.ndim != 2 or W_dec_FD.shape[0] != top_image_FK.shape[0]:
        raise ValueError(
            f"W_dec_FD {W_dec_FD.shape} and top_image_FK {top_image_FK.shape} must be 2-D with one row per "
            "feature each"
        )
    if not np.issubdtype(top_image_FK.dtype, np.integer):
        raise ValueError(
            f"top_image_FK holds image positions (integers, -1 = none), not {top_image_FK.dtype}"
        )
    if block < 1:
        raise ValueError(f"block must be at least 1, not {block}")
    n_feat = W_dec_FD.shape[0]
    if n_feat == 0:
        return np.zeros(0, dtype=np.int64)
    unit_FD = W_dec_FD.astype(np.float64)
    norm_F = np.linalg.norm(unit_FD, axis=1)
    unit_FD /= np.where(norm_F > 0, norm_F, 1.0)[:, None]  # a zero row stays zero: cosine 0 with all
    incidence_FN = _incidence(top_image_FK)
    incidence_NF = incidence_FN.T.tocsr()
    size_F = np.asarray(incidence_FN.sum(axis=1)).ravel()
    rows, cols = [], []
    for start in range(0, n_feat, block):
        stop = min(start + block, n_feat)
        # cosines of the block's rows with the features from `start` on: the upper triangle and the diagonal
        cos_BG = unit_FD[start:stop] @ unit_FD[start:].T
        np.clip(cos_BG, -1.0, 1.0, out=cos_BG)
        b, g = np.nonzero(cos_BG > cosine)
        keep = b < g
        rows.append(start + b[keep])
        cols.append(start + g[keep])
        # image overlaps of the block's rows with every feature (sparse; only overlapping pairs stored)
        inter_BF = (incidence_FN[start:stop] @ incidence_NF).tocoo()
        i, j, inter = start + inter_BF.row, inter_BF.col, inter_BF.data.astype(np.float64)
        union = size_F[i] + size_F[j] - inter
        keep = (i < j) & (inter / union > jaccard)
        rows.append(i[keep])
        cols.append(j[keep])
    i, j = np.concatenate(rows), np.concatenate(cols)
    graph = sp.coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n_feat, n_feat)).tocsr()
    n_clusters, component_F = connected_components(graph, directed=False)
    first_C = np.full(n_clusters, n_feat, dtype=np.int64)
    np.minimum.at(first_C, component_F, np.arange(n_feat))
    rank_C = np.empty(n_clusters, dtype=np.int64)
    rank_C[np.argsort(first_C, kind="stable")] = np.arange(n_clusters)
    return rank_C[component_F]


def _incidence(top_image_FK: np.ndarray) -> sp.csr_matrix:
    """Feature × image 0/1 matrix (int64) of the firing top images; repeats of an image count once."""
    n_feat = top_image_FK.shape[0]
    f_M, k_M = np.nonzero(top_image_FK >= 0)
    image_M = top_image_FK[f_M, k_M].astype(np.int64)
    n_images = int(image_M.max()) + 1 if len(image_M) else 0
    incidence_FN = sp.csr_matrix(
        (np.ones(len(f_M), dtype=np.int64), (f_M, image_M)), shape=(n_feat, n_images)
    )
    incidence_FN.sum_duplicates()
    incidence_FN.data[:] = 1
    return incidence_FN


def cluster_summary(cluster_F: np.ndarray) -> dict:
    """``n_features``, ``n_clusters``, ``largest`` (features in the largest cluster) and
    ``share_clustered`` (share of the features in clusters of more than one feature; NaN for none) of
    cluster ids such as :func:`feature_clusters` gives."""
    cluster_F = np.asarray(cluster_F)
    if cluster_F.size == 0:
        return {"n_features": 0, "n_clusters": 0, "largest": 0, "share_clustered": float("nan")}
    _, size_C = np.unique(cluster_F, return_counts=True)
    return {
        "n_features": int(cluster_F.size),
        "n_clusters": len(size_C),
        "largest": int(size_C.max()),
        "share_clustered": float(size_C[size_C > 1].sum() / cluster_F.size),
    }


def sweep_clusters(
    sae_dirs: list[str | os.PathLike],
    stats_dirs: list[str | os.PathLike],
    out_csv: str | os.PathLike,
    cosine: float,
    jaccard: float,
) -> Path:
    """The feature clusters (:func:`feature_clusters`) of each SAE (``sae_dirs[i]``, its checkpoint
    directory) from its decoder and the top images of its statistics (``stats_dirs[i]``, the same SAE:
    checked against the SAE's ``cfg.json``), written as one CSV (module docstring). Logs each SAE's
    :func:`cluster_summary`."""
    if len(sae_dirs) != len(stats_dirs):
        raise ValueError(f"{len(sae_dirs)} SAE directories for {len(stats_dirs)} statistics directories")
    frames = []
    for sae_dir, stats_dir in zip(sae_dirs, stats_dirs):
        stats = load_feature_stats(stats_dir)
        sae_id, where = sae_place(stats.meta)
        cfg = files.read_cfg(sae_dir)
        if str(cfg.get("sae_id")) != sae_id:
            raise ValueError(f"{stats_dir} holds the statistics of SAE {sae_id!r}, {sae_dir} is SAE "
                             f"{cfg.get('sae_id')!r}; list them in the same order")  # fmt: skip
        W_dec_FD = files.read_decoder(sae_dir)
        if W_dec_FD.shape[0] != stats.top_image_FK.shape[0]:
            raise ValueError(f"{sae_dir} has {W_dec_FD.shape[0]} features, its statistics {stats_dir} "
                             f"{stats.top_image_FK.shape[0]}; rerun the statistics rule")  # fmt: skip
        cluster_F = feature_clusters(W_dec_FD, stats.top_image_FK, cosine, jaccard)
        log.info("SAE %s: %s", sae_id, cluster_summary(cluster_F))
        frame = pd.DataFrame(
            {"sae_id": sae_id, **where, "feature": np.arange(len(cluster_F)), "cluster": cluster_F}
        )
        frames.append(frame)
    columns = ["sae_id", "dataset", "model", "layer", "sweep", "feature", "cluster"]
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return atomic_write(Path(out_csv), lambda tmp: result[columns].to_csv(tmp, index=False))
