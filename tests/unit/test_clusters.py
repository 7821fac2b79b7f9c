"""Feature clusters (vitsae.analysis.clusters) against a brute-force float64 reference, with planted
near-duplicate decoder rows and shared top-image sets."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.sparse.csgraph import connected_components

from vitsae.analysis import stats as featstats
from vitsae.analysis.clusters import cluster_summary, feature_clusters, sweep_clusters
from vitsae.data.store import write_arrays
from vitsae.sae.checkpoint import SparseAutoencoder


def _reference(W_dec_FD: np.ndarray, top_image_FK: np.ndarray, cosine: float, jaccard: float) -> np.ndarray:
    """Every pair checked one by one (float64 cosines, Python sets), components by union-find, numbered by
    each component's smallest feature."""
    n = len(W_dec_FD)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    W = W_dec_FD.astype(np.float64)
    norms = [float(np.sqrt(W[i] @ W[i])) for i in range(n)]
    images = [{int(x) for x in row if x >= 0} for row in top_image_FK]
    for i, j in itertools.combinations(range(n), 2):
        cos = float(W[i] @ W[j]) / (norms[i] * norms[j]) if norms[i] > 0 and norms[j] > 0 else 0.0
        union = images[i] | images[j]
        jac = len(images[i] & images[j]) / len(union) if union else 0.0
        if min(cos, 1.0) > cosine or jac > jaccard:
            parent[find(i)] = find(j)
    roots = [find(i) for i in range(n)]
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(r, len(ids)) for r in roots])


@pytest.fixture(scope="module")
def planted():
    """150 features in 32 dimensions over 2,000 images: random rows and top images (few overlaps), plus
    planted groups: near-duplicate decoder rows (3 groups of 3), features sharing most of their top
    images (2 groups of 2 and one chain), a feature that never fires, a zero decoder row, and padding."""
    rng = np.random.default_rng(3)
    n_feat, dim, k, n_images = 150, 32, 12, 2000
    W_FD = rng.normal(size=(n_feat, dim))
    top_FK = np.stack([rng.choice(n_images, k, replace=False) for _ in range(n_feat)])
    top_FK[rng.random((n_feat, k)) < 0.1] = -1  # padding among the slots
    for group in ([5, 77, 140], [12, 13, 90], [30, 31, 100]):  # near-duplicate decoders
        for f in group[1:]:
            W_FD[f] = W_FD[group[0]] * rng.uniform(0.5, 2.0) + 0.05 * rng.normal(size=dim)
    for a, b in ([40, 120], [41, 60]):  # 10 of 12 top images shared: Jaccard 10/14
        top_FK[b] = top_FK[a]
        top_FK[b, :2] = rng.choice(n_images, 2, replace=False) + n_images  # new images, not in a
    top_FK[70] = -1  # never fires
    W_FD[71] = 0.0  # a dead decoder row
    return W_FD, top_FK


def _partition(cluster_F: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.nonzero(cluster_F == c)[0].tolist()) for c in np.unique(cluster_F)}


@pytest.mark.parametrize(("cosine", "jaccard"), [(0.9, 0.5), (0.3, 0.1), (0.5, 0.05), (0.99, 0.9)])
def test_clusters_equal_the_brute_force_reference(planted, cosine, jaccard):
    W_FD, top_FK = planted
    got = feature_clusters(W_FD, top_FK, cosine, jaccard, block=32)
    want = _reference(W_FD, top_FK, cosine, jaccard)
    np.testing.assert_array_equal(got, want)  # the same partition, numbered the same way
    assert got.dtype == np.int64 and got[0] == 0 and np.all(np.diff(np.unique(got, return_index=True)[1]) > 0)
    assert len(np.unique(got)) < len(got)  # something was linked at every setting


def test_the_planted_groups_are_found(planted):
    W_FD, top_FK = planted
    cluster_F = feature_clusters(W_FD, top_FK, cosine=0.9, jaccard=0.5)
    groups = {frozenset(g) for g in ([5, 77, 140], [12, 13, 90], [30, 31, 100], [40, 120], [41, 60])}
    assert {p for p in _partition(cluster_F) if len(p) > 1} == groups
    # the dead row and the silent feature are alone
    assert (cluster_F == cluster_F[70]).sum() == 1 and (cluster_F == cluster_F[71]).sum() == 1


def test_thresholds_at_one_give_singletons_even_for_exact_duplicates(planted):
    W_FD, top_FK = planted
    W_FD, top_FK = np.concatenate([W_FD, W_FD]), np.concatenate([top_FK, top_FK])  # f and f + 150 equal
    n = len(W_FD)
    np.testing.assert_array_equal(feature_clusters(W_FD, top_FK, 1.0, 1.0), np.arange(n))
    # (a rounded cosine of two equal rows can exceed 1: some of these 150 pairs do, and must not link)
    twins = feature_clusters(W_FD, top_FK, 0.999, 1.0)
    linked = twins[n // 2 :] == twins[: n // 2]
    assert linked.sum() == n // 2 - 1 and not linked[71]  # all but the zero row (cosine 0 with its twin)


def test_a_chain_is_one_cluster():
    """a~b by decoder, b~c by top images, d alone: a and c share nothing, still one cluster."""
    W_FD = np.array([[1.0, 0.0, 0.0], [0.99, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    top_FK = np.array([[0, 1, 2, -1], [10, 11, 12, 13], [10, 11, 12, 14], [20, 21, -1, -1]])
    cluster_F = feature_clusters(W_FD, top_FK, cosine=0.9, jaccard=0.5)
    np.testing.assert_array_equal(cluster_F, [0, 0, 0, 1])
    assert _reference(W_FD, top_FK, 0.9, 0.5).tolist() == [0, 0, 0, 1]
    # numbering by smallest feature: the chain moved to the end is still cluster 1 after feature 0
    order = [3, 2, 1, 0]
    np.testing.assert_array_equal(feature_clusters(W_FD[order], top_FK[order], 0.9, 0.5), [0, 1, 1, 1])


def test_block_size_does_not_change_the_result(planted):
    W_FD, top_FK = planted
    whole = feature_clusters(W_FD, top_FK, 0.3, 0.1, block=len(W_FD))
    for block in (1, 7, 64, 149, 10_000):
        np.testing.assert_array_equal(feature_clusters(W_FD, top_FK, 0.3, 0.1, block=block), whole)
    # float32 decoders (as saved) give the same partition here: no cosine sits near the threshold
    np.testing.assert_array_equal(feature_clusters(W_FD.astype(np.float32), top_FK, 0.3, 0.1), whole)


def test_components_match_scipy_on_the_link_graph(planted):
    """The numbering is a relabelling of scipy's components of the same links (a second reference)."""
    W_FD, top_FK = planted
    unit = W_FD / np.linalg.norm(W_FD, axis=1, keepdims=True).clip(1e-300)
    link = unit @ unit.T > 0.5
    np.fill_diagonal(link, False)
    _, comp = connected_components(link, directed=False)
    got = feature_clusters(W_FD, np.full_like(top_FK, -1), 0.5, 0.0)
    assert _partition(got) == _partition(comp)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"W_dec_FD \(3, 2\) and top_image_FK \(4, 5\)"):
        feature_clusters(np.zeros((3, 2)), np.zeros((4, 5), dtype=int), 0.9, 0.5)
    with pytest.raises(ValueError, match="integers, -1 = none"):
        feature_clusters(np.zeros((3, 2)), np.zeros((3, 5)), 0.9, 0.5)
    assert feature_clusters(np.zeros((0, 4)), np.zeros((0, 5), dtype=int), 0.9, 0.5).shape == (0,)


def test_cluster_summary():
    summary = cluster_summary(np.array([0, 0, 1, 2, 2, 2, 3]))
    assert summary == {"n_features": 7, "n_clusters": 4, "largest": 3, "share_clustered": 5 / 7}
    assert cluster_summary(np.arange(4))["share_clustered"] == 0.0
    empty = cluster_summary(np.zeros(0, dtype=int))
    assert empty["n_clusters"] == 0 and np.isnan(empty["share_clustered"])


def test_sweep_clusters_writes_one_row_per_feature(tmp_path):
    """Two SAEs of 6 features (identity encoders) over tiny stores: SAE a's decoder rows 0 and 1 are equal
    and its features 2 and 3 fire on the same images; SAE b has neither."""
    rng = np.random.default_rng(0)
    n_img, n_tok, dim = 40, 5, 6
    layout = {"n_tokens": n_tok, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [2, 2]}
    place = {"dataset": "d", "model": "m", "layer": 3, "sweep": "w"}
    sae_dirs, stats_dirs = [], []
    for sae_id in ("a", "b"):
        acts = -1.0 - rng.random((n_img, n_tok, dim))  # nothing fires ...
        for f in range(dim):  # ... but feature f on images 5f..5f+4
            acts[5 * f : 5 * f + 5, 1:, f] = 1.0 + rng.random((5, n_tok - 1))
        W_dec = torch.eye(dim)
        if sae_id == "a":
            acts[:, 1:, 3] = acts[:, 1:, 2]
            W_dec[1] = W_dec[0]
        store = write_arrays(tmp_path / f"{sae_id}.zarr", {"token_layout": layout},
                             {"val": acts.astype(np.float16)}, 16)  # fmt: skip
        cfg = {"hook": {"tokens": "patches"}, "sae_id": sae_id, "meta": place, "d_in": dim, "d_sae": dim,
               "architecture": "relu_l1", "normalisation": {"kind": "scalar", "scale": 1.0}}  # fmt: skip
        sae = SparseAutoencoder(dim, dim, "relu_l1", cfg=cfg)
        with torch.no_grad():
            sae.W_enc_DF.copy_(torch.eye(dim))
            sae.W_dec_FD.copy_(W_dec)
        sae.save(tmp_path / sae_id)
        sae_dirs.append(tmp_path / sae_id)
        stats_dirs.append(
            featstats.compute_feature_stats(sae, store, "val", tmp_path / f"stats_{sae_id}", k=8)
        )
    out = sweep_clusters(sae_dirs, stats_dirs, tmp_path / "clusters.csv", cosine=0.9, jaccard=0.5)
    table = pd.read_csv(out)
    assert list(table.columns) == ["sae_id", "dataset", "model", "layer", "sweep", "feature", "cluster"]
    by_sae = table.groupby("sae_id")["cluster"].apply(list).to_dict()
    assert by_sae == {"a": [0, 0, 1, 1, 2, 3], "b": [0, 1, 2, 3, 4, 5]}
    assert (table["layer"] == 3).all() and (table["sweep"] == "w").all()
    with pytest.raises(ValueError, match="statistics of SAE 'a'.*list them in the same order"):
        sweep_clusters(sae_dirs[::-1], stats_dirs, tmp_path / "x.csv", cosine=0.9, jaccard=0.5)
    assert not (tmp_path / "x.csv").exists()
