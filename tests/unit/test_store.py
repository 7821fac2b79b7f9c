import numpy as np
import pytest
import zarr

from vitsae.data import store

LAYOUT = {"n_tokens": 5, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [2, 2]}


def test_round_trip_is_exact_and_chunked_per_batch(tmp_path):
    rng = np.random.default_rng(0)
    acts = {
        "train": rng.normal(size=(10, 5, 6)).astype(np.float16),
        "val": rng.normal(size=(3, 5, 6)).astype(np.float16),
    }
    path = store.write_arrays(tmp_path / "layer1.zarr", {"token_layout": LAYOUT}, acts, chunk_images=4)
    g = store.open_store(path)
    assert g.attrs["splits"] == {"train": 10, "val": 3}
    arr = store.split_array(g, "train")
    assert arr.dtype == np.float16 and arr.chunks == (4, 5, 6)
    np.testing.assert_array_equal(arr[:], acts["train"])
    chunks = list(
        store.iter_chunks(arr, order=np.array([2, 0, 1]), tokens=store.token_slice(LAYOUT, "patches"))
    )
    assert [s for s, _ in chunks] == [8, 0, 4]
    np.testing.assert_array_equal(chunks[0][1], acts["train"][8:, 1:])
    assert not list(tmp_path.glob(".*partial*"))


def test_token_slices():
    assert store.token_slice(LAYOUT, "cls") == slice(0, 1)
    assert store.token_slice(LAYOUT, "patches") == slice(1, 5)
    assert store.token_slice({**LAYOUT, "n_prefix": 5, "n_tokens": 9}, "patches") == slice(5, 9)
    with pytest.raises(ValueError, match="token kind 'patch'"):
        store.token_slice(LAYOUT, "patch")


def test_unfinished_store_is_refused_and_not_published(tmp_path):
    final = tmp_path / "layer1.zarr"
    tmp = store.temporary_path(final)
    g = store.create_group(tmp, {"token_layout": LAYOUT, "splits": {"train": 8}})
    arr = store.create_split(g, "train", (8, 5, 6), 4)
    arr[0:4] = np.ones((4, 5, 6), np.float16)
    g.attrs["written"] = {"train": 4}
    with pytest.raises(store.StoreError, match="has 4 of 8 images written"):
        store.publish(tmp, final, {"train": 8})
    assert not final.exists()
    with pytest.raises(store.StoreError, match="is incomplete"):
        store.open_store(tmp)
    with pytest.raises(store.StoreError, match="does not exist; run the extraction rule"):
        store.open_store(final)
    # an unwritten chunk reads as NaN, so nothing can silently pass as zeros
    assert np.isnan(zarr.open_group(str(tmp), mode="r")["train"][4:]).all()


def test_token_slices_of_stores_that_keep_fewer_tokens():
    patches = {
        "n_tokens": 4,
        "n_prefix": 0,
        "n_registers": 0,
        "cls_index": None,
        "grid": [2, 2],
        "kept": "patches",
    }
    assert store.token_slice(patches, "patches") == slice(0, 4)
    with pytest.raises(
        store.StoreError, match="keeps only patch tokens .* no 'cls' tokens.*token kind 'patches'"
    ):
        store.token_slice(patches, "cls")
    with pytest.raises(store.StoreError, match="no 'all' tokens"):
        store.token_slice(patches, "all")
    cls = {"n_tokens": 1, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [2, 2], "kept": "cls"}
    assert store.token_slice(cls, "cls") == slice(0, 1)
    with pytest.raises(store.StoreError, match="only the CLS token"):
        store.token_slice(cls, "patches")
    subset = {**patches, "n_tokens": 3, "kept": "subset", "subset": {"k": 3, "seed": 0}}
    assert store.token_slice(subset, "patches") == slice(0, 3)
    # a store written before 'kept' existed holds all tokens
    assert store.token_slice({**LAYOUT, "kept": "all"}, "patches") == store.token_slice(LAYOUT, "patches")


def test_patch_index_of_a_store_with_every_patch(tmp_path):
    acts = {"train": np.zeros((3, 5, 2), np.float16)}
    g = store.open_store(
        store.write_arrays(tmp_path / "s.zarr", {"token_layout": LAYOUT}, acts, chunk_images=2)
    )
    idx = store.patch_index(g, "train", 1, 3)
    assert idx.shape == (2, 4) and (idx == np.arange(4)).all()


def test_xarray_opens_a_store_with_named_dimensions_and_no_warning(tmp_path):
    """A third-party reader: xarray sees every array under its dimension names, each split with its own
    image axis, and reads the same values as the store's own reader; Snakemake's timestamp file inside the
    store (it adds one to every directory output) is never listed, as the metadata is consolidated."""
    import warnings

    import xarray as xr

    rng = np.random.default_rng(1)
    acts = {"train": rng.normal(size=(7, 5, 6)), "val": rng.normal(size=(3, 5, 6))}
    path = store.write_arrays(tmp_path / "layer1.zarr", {"token_layout": LAYOUT}, acts, chunk_images=4)
    (path / ".snakemake_timestamp").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path)
        zarr.open_group(str(path), mode="r").members()
    assert ds["train"].dims == ("train_image", "token", "dim") and ds["val"].dims == (
        "val_image",
        "token",
        "dim",
    )
    assert (
        ds["train_rows"].dims == ("train_image",)
        and ds.sizes["train_image"] == 7
        and ds.sizes["val_image"] == 3
    )
    ours = store.split_array(store.open_store(path), "train")
    np.testing.assert_array_equal(
        ds["train"].isel(train_image=slice(2, 6), token=slice(1, 5)).values, ours[2:6, 1:5]
    )
    np.testing.assert_array_equal(ds["train_rows"].values, np.arange(7))
    sub = store.create_split(store.create_group(tmp_path / "s.zarr", {}), "val", (3, 4, 6), 2, subset_k=4)
    assert sub.metadata.dimension_names == ("val_image", "token", "dim")
    assert store.dimensions("val", 4, 2) == ("val_image", "token", "patch")


def test_a_chunk_changed_on_disk_fails_when_read_and_is_named(tmp_path):
    acts = {"train": np.arange(8 * 5 * 6, dtype=np.float16).reshape(8, 5, 6)}
    path = store.write_arrays(tmp_path / "layer1.zarr", {"token_layout": LAYOUT}, acts, chunk_images=4)
    assert store.check_chunks(path) == (4, [])  # two chunks of train, two of train_rows
    chunk = path / "train" / "c" / "1" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[10] ^= 0x01  # one bit, under an intact checksum
    chunk.write_bytes(bytes(data))
    arr = store.split_array(store.open_store(path), "train")
    np.testing.assert_array_equal(arr[:4], acts["train"][:4])  # the other chunk still reads
    with pytest.raises(ValueError, match="checksum do not match"):
        arr[4:]
    assert store.check_chunks(path) == (4, [f"corrupt chunk: {chunk} (its crc32c does not match its bytes)"])


def test_every_array_writes_chunks_without_scanning_them_for_the_fill_value(tmp_path):
    """zarr's default (write_empty_chunks off) scans every chunk for "all fill value" before writing it,
    0.4-0.8 s per 101 MB chunk (bench/store_write.py). Every array of a split is created without the scan,
    and :func:`store.writable` reopens one for writing the same way; a chunk equal to the fill value (NaN,
    -1) is then written as a file like any other, and reads back as written."""
    g = store.create_group(tmp_path / "s.zarr", {})
    arrays = {"train": store.create_split(g, "train", (8, 5, 6), 4, subset_k=3)}
    names = ["train", "train_rows", "train_patch_index"]
    assert zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["train"].config.write_empty_chunks is False
    for name in names:
        arr = arrays.get(name) or store.writable(g, name)
        assert arr.config.write_empty_chunks is True, name
        fill = np.nan if name == "train" else -1
        arr[0:4] = np.full((4, *arr.shape[1:]), fill, dtype=arr.dtype)
        files = [p for p in (tmp_path / "s.zarr" / name / "c").rglob("*") if p.is_file()]
        assert [p.relative_to(tmp_path / "s.zarr" / name).parts[:2] for p in files] == [("c", "0")], name
    assert np.isnan(g["train"][:]).all() and (g["train_rows"][:] == -1).all()
    # the setting lives in the opened array only, never in the metadata readers hash (store.data_key)
    assert "write_empty_chunks" not in (tmp_path / "s.zarr" / "train" / "zarr.json").read_text()
