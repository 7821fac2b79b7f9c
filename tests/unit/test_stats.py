"""Feature statistics (vitsae.analysis.stats) against float64 brute force on a tiny store."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
import zarr.storage
from safetensors.torch import save_file

from vitsae.analysis import stats as featstats
from vitsae.analysis.feature_files import load_feature_stats
from vitsae.data.manifest import BASE_COLUMNS, write_manifest
from vitsae.data.store import write_arrays
from vitsae.sae import checkpoint
from vitsae.sae.checkpoint import SparseAutoencoder

N_IMAGES, CHUNK, D, F, K = 23, 5, 6, 12, 4
LAYOUT = {"n_tokens": 5, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [2, 2]}
CLASSES = np.array(["n01", "n02", "n03"])


def _sae(seed: int = 0) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(D, F, "relu_l1", scale=0.7, cfg={"hook": {"tokens": "patches"}})
    with torch.no_grad():
        sae.W_enc_DF.copy_(torch.randn(D, F, generator=g))
        sae.b_enc_F.copy_(torch.randn(F, generator=g) - 1.0)  # sparse: most features below zero
        sae.b_dec_D.copy_(0.1 * torch.randn(D, generator=g))
        sae.W_dec_FD.copy_(torch.randn(F, D, generator=g))
    return sae


def _codes64(sae: SparseAutoencoder, acts_NTD: np.ndarray) -> np.ndarray:
    """float64 reference encoding of fp16 activations ``[N, T, D]`` → ``[N, T, F]``."""
    x = acts_NTD.astype(np.float64)
    w = sae.W_enc_DF.detach().double().numpy()
    pre = (
        x * float(sae.scale) - sae.b_dec_D.detach().double().numpy()
    ) @ w + sae.b_enc_F.detach().double().numpy()
    return np.maximum(pre, 0.0)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(N_IMAGES, LAYOUT["n_tokens"], D)).astype(np.float16)
    path = write_arrays(tmp_path / "s.zarr", {"token_layout": LAYOUT}, {"val": acts}, CHUNK)
    return path, acts


def _brute_topk(max_NF: np.ndarray, k: int) -> np.ndarray:
    """image_FK by (value desc, image asc), firing images only, -1 padding."""
    out = np.full((max_NF.shape[1], k), -1)
    for f in range(max_NF.shape[1]):
        order = np.lexsort((np.arange(max_NF.shape[0]), -max_NF[:, f]))
        order = order[max_NF[order, f] > 0][:k]
        out[f, : len(order)] = order
    return out


def test_stats_equal_float64_brute_force(store, tmp_path):
    path, acts = store
    sae = _sae()
    labels = CLASSES[np.arange(N_IMAGES) % 3]
    out = featstats.compute_feature_stats(
        sae, path, "val", tmp_path / "stats", k=K, labels=labels, batch_tokens=8
    )
    st = load_feature_stats(out)
    codes_NTF = _codes64(sae, acts[:, 1:])  # patches only
    max_NF = codes_NTF.max(axis=1)
    active_NTF = codes_NTF > 0
    assert (
        st.meta["token_kind"] == "patches"
        and st.meta["grid"] == [2, 2]
        and st.meta["n_tokens"] == N_IMAGES * 4
    )

    # per-feature frequency and mean when active
    fires_F = active_NTF.sum(axis=(0, 1))
    assert (fires_F > 0).sum() >= 6 and (fires_F < N_IMAGES * 4).all()  # the data exercise both cases
    np.testing.assert_array_equal(st.features["n_active_tokens"], fires_F)
    np.testing.assert_allclose(st.features["frequency"], fires_F / (N_IMAGES * 4), rtol=0, atol=0)
    with np.errstate(invalid="ignore"):
        mean_F = codes_NTF.sum(axis=(0, 1)) / fires_F
    np.testing.assert_allclose(st.features["mean_active"], mean_F, rtol=1e-5)
    np.testing.assert_array_equal(st.features["n_active_images"], (max_NF > 0).sum(axis=0))
    np.testing.assert_allclose(st.features["max_activation"], max_NF.max(axis=0), rtol=1e-5)

    # exact top-k: the same images in the same order, values and patch maps
    ref_FK = _brute_topk(max_NF, K)
    np.testing.assert_array_equal(st.top_image_FK, ref_FK)
    assert (ref_FK == -1).any()  # some feature fires on fewer than K images: padding is exercised
    has_FK = ref_FK >= 0
    np.testing.assert_allclose(
        st.top_value_FK[has_FK], max_NF[ref_FK[has_FK], np.nonzero(has_FK)[0]], rtol=1e-5
    )
    assert (st.top_value_FK[~has_FK] == 0).all() and (st.top_map_FKT[~has_FK] == 0).all()
    feat, slot = np.nonzero(has_FK)
    np.testing.assert_allclose(
        st.top_map_FKT[feat, slot], codes_NTF[ref_FK[feat, slot], :, feat], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(st.top_row_FK, ref_FK)  # write_arrays: row = image index
    # the peak token's norm over its image's median patch-token norm (the lower middle of an even count)
    norm_NT = np.linalg.norm(acts[:, 1:].astype(np.float64), axis=-1)
    median_N = np.sort(norm_NT, axis=1)[:, (norm_NT.shape[1] - 1) // 2]
    peak_E = codes_NTF[ref_FK[feat, slot], :, feat].argmax(axis=1)
    want_E = norm_NT[ref_FK[feat, slot], peak_E] / median_N[ref_FK[feat, slot]]
    np.testing.assert_allclose(st.top_peak_norm_ratio_FK[feat, slot], want_E, rtol=1e-5)
    assert np.isnan(st.top_peak_norm_ratio_FK[~has_FK]).all()
    assert (want_E > 1).any() and (want_E < 1).any()  # peaks on tokens above and below the median

    # image × feature CSR
    np.testing.assert_allclose(st.image_feature.dense("max"), max_NF, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(st.image_feature.dense("n_active"), active_NTF.sum(axis=1))
    np.testing.assert_allclose(st.image_feature.column(3, "sum"), codes_NTF[:, :, 3].sum(axis=1), rtol=1e-5)

    # feature × class table against a pandas reference
    ref = []
    for f in range(F):
        for c in CLASSES:
            m = labels == c
            if (max_NF[m, f] > 0).any():
                ref.append((f, c, m.sum(), (max_NF[m, f] > 0).sum(), max_NF[m, f].mean(),
                            active_NTF[m, :, f].sum() / (m.sum() * 4),
                            codes_NTF[m, :, f].sum() / active_NTF[m, :, f].sum()))  # fmt: skip
    ref = pd.DataFrame(ref, columns=["feature", "label", "n_images", "n_active_images", "mean_max", "token_rate",
                                     "mean_active"])  # fmt: skip
    got = st.class_stats
    assert list(got["feature"]) == list(ref["feature"]) and list(got["label"]) == list(ref["label"])
    np.testing.assert_array_equal(got["n_active_images"], ref["n_active_images"])
    np.testing.assert_allclose(got["image_rate"], ref["n_active_images"] / ref["n_images"])
    for col in ("mean_max", "token_rate", "mean_active"):
        np.testing.assert_allclose(got[col], ref[col], rtol=1e-5, err_msg=col)


def test_topk_ties_are_broken_by_image_index_whatever_the_batching():
    rng = np.random.default_rng(1)
    n, t, f, k = 40, 3, 7, 5
    codes_NTF = rng.integers(0, 4, size=(n, t, f)).astype(np.float32)  # many exact ties, many zeros
    codes_NTF[:, :, 6] = 0  # a feature that never fires
    max_NF = codes_NTF.max(axis=1)
    ref_FK = _brute_topk(max_NF, k)
    for batch in (1, 3, 7, 40):
        top = featstats.TopK(f, k, t)
        for s in range(0, n, batch):
            c = torch.from_numpy(codes_NTF[s : s + batch])
            top.update(s, c, c.amax(dim=1))
        image_FK, _, map_FKT = top.result()
        np.testing.assert_array_equal(image_FK, ref_FK, err_msg=f"batch {batch}")
        assert (image_FK[6] == -1).all()
        feat, slot = np.nonzero(ref_FK >= 0)
        np.testing.assert_array_equal(map_FKT[feat, slot], codes_NTF[ref_FK[feat, slot], :, feat])


def test_reads_each_chunk_once_and_works_with_a_saved_sae(store, tmp_path, monkeypatch):
    path, _ = store
    sae = _sae(3)
    ckpt = tmp_path / "sae"
    ckpt.mkdir()
    save_file(sae.tensors(), str(ckpt / checkpoint.WEIGHTS_FILE))
    (ckpt / checkpoint.CFG_FILE).write_text(json.dumps({
        "d_in": D, "d_sae": F, "architecture": "relu_l1", "normalisation": {"scale": 0.7}, "hook": {"tokens": "patches"},
    }))  # fmt: skip
    loaded = checkpoint.load(ckpt)

    reads: list[str] = []
    original = zarr.storage.LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        reads.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
    featstats.compute_feature_stats(loaded, path, "val", tmp_path / "a", k=K, batch_tokens=1000)
    chunk_reads = [key for key in reads if key.startswith("val/c/")]
    n_chunks = -(-N_IMAGES // CHUNK)
    assert len(chunk_reads) == n_chunks and len(set(chunk_reads)) == n_chunks, chunk_reads
    monkeypatch.undo()

    # the saved-and-loaded SAE gives the same statistics as the in-memory one, whatever the sub-batch size
    featstats.compute_feature_stats(sae, path, "val", tmp_path / "b", k=K, batch_tokens=4)
    a, b = load_feature_stats(tmp_path / "a"), load_feature_stats(tmp_path / "b")
    np.testing.assert_array_equal(a.top_image_FK, b.top_image_FK)
    np.testing.assert_allclose(a.top_map_FKT, b.top_map_FKT, rtol=1e-5, atol=1e-6)
    pd.testing.assert_frame_equal(a.features, b.features, rtol=1e-5)
    assert a.class_stats is None and "label" not in a.images


def test_nan_in_the_store_names_store_and_image(store, tmp_path):
    path, _ = store
    group = zarr.open_group(str(path), mode="r+")
    group["val_rows"][:] = np.arange(N_IMAGES) + 100
    bad = group["val"][7]
    bad[2, 1] = np.nan
    group["val"][7] = bad
    with pytest.raises(
        ValueError, match=r"s\.zarr split 'val': image 7 \(manifest row 107\) has NaN.*re-extract"
    ):
        featstats.compute_feature_stats(_sae(), path, "val", tmp_path / "stats", k=K)
    assert not (tmp_path / "stats").exists()


def test_split_labels_follow_the_store_rows(store, tmp_path):
    path, _ = store
    perm = np.random.default_rng(2).permutation(30)[:N_IMAGES]
    zarr.open_group(str(path), mode="r+")["val_rows"][:] = perm
    manifest = pd.DataFrame({c: [""] * 30 for c in BASE_COLUMNS})
    manifest["label"] = [f"n{i:08d}" for i in range(30)]
    for c in ("width", "height"):
        manifest[c] = 1
    write_manifest(manifest, tmp_path / "m.parquet")
    labels = featstats.split_labels(path, "val", tmp_path / "m.parquet")
    assert list(labels) == [f"n{i:08d}" for i in perm]
    with pytest.raises(KeyError, match="no column 'genus'"):
        featstats.split_labels(path, "val", tmp_path / "m.parquet", column="genus")
    with pytest.raises(ValueError, match="22 labels given for 23 images"):
        featstats.compute_feature_stats(_sae(), path, "val", tmp_path / "x", k=K, labels=labels[:-1])


def test_patch_subset_store_records_grid_cells(tmp_path):
    rng = np.random.default_rng(4)
    n, kept = 9, 3  # 3 of the 2x2 grid's patches kept per image, no prefix tokens
    layout = {"n_tokens": kept, "n_prefix": 0, "n_registers": 0, "cls_index": -1, "grid": [2, 2],
              "kept": "subset", "subset": {"k": kept, "seed": 0}, "model_tokens": 5}  # fmt: skip
    path = write_arrays(
        tmp_path / "s.zarr", {"token_layout": layout}, {"val": rng.normal(size=(n, kept, D))}, 4
    )
    cells = np.stack([np.sort(rng.choice(4, kept, replace=False)) for _ in range(n)]).astype(np.int16)
    zarr.open_group(str(path), mode="r+").create_array("val_patch_index", data=cells)
    zarr.consolidate_metadata(str(path))  # a published store's zarr.json lists its arrays
    featstats.compute_feature_stats(_sae(), path, "val", tmp_path / "st", k=K)
    st = load_feature_stats(tmp_path / "st")
    has = st.top_image_FK >= 0
    assert st.top_map_FKT.shape == (F, K, kept) and has.any() and st.meta["store_kept"] == "subset"
    np.testing.assert_array_equal(st.top_patch_index_FKT[has], cells[st.top_image_FK[has]])
    assert (st.top_patch_index_FKT[~has] == -1).all()
