"""vitsae.loader.TokenStream: the stream's definition, resume, bytes read, errors, thread lifetime."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vitsae.data.loader import TokenStream
from vitsae.data.store import open_store, write_arrays

N_PREFIX = 1
D = 8


def make_store(path: Path, arrays: dict[str, np.ndarray], chunk_images: int) -> Path:
    n_tokens = next(iter(arrays.values())).shape[1]
    layout = {"n_tokens": n_tokens, "n_prefix": N_PREFIX, "n_registers": 0, "cls_index": 0,
              "grid": [1, n_tokens - N_PREFIX]}  # fmt: skip
    attrs = {"token_layout": layout, "dataset": "synthetic", "layer": 1, "model": {"name": "synthetic"}}
    return write_arrays(path, attrs, arrays, chunk_images=chunk_images)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 23 images x 4 tokens (1 CLS + 3 patches), chunks of 3 images: 8 chunks, the last one of 2 images
    x_NTD = np.random.default_rng(0).standard_normal((23, 4, D)).astype(np.float32)
    return make_store(tmp_path_factory.mktemp("loader") / "store.zarr", {"train": x_NTD, "val": x_NTD[:2]}, 3)


def reference(
    store: Path, seed: int, shuffle_chunks: int, n_tokens: int, kind: str = "patches"
) -> np.ndarray:
    """The stream's first ``n_tokens`` tokens, built by brute force from the definition."""
    arr = open_store(store)["train"]
    tokens = {"patches": slice(N_PREFIX, None), "all": slice(None), "cls": slice(0, 1)}[kind]
    acts_NTD = arr[:][:, tokens]
    c = arr.chunks[0]
    n_chunks = -(-arr.shape[0] // c)
    chunk_tokens = [acts_NTD[i * c : (i + 1) * c].reshape(-1, D) for i in range(n_chunks)]
    buffers: list[list[int]] = []  # each epoch's chunk order cut into buffers of C chunks (the last shorter)
    for epoch in range(100):
        order = list(np.random.default_rng([seed, epoch]).permutation(n_chunks))
        buffers += [order[j : j + shuffle_chunks] for j in range(0, n_chunks, shuffle_chunks)]
    out, have, g = [], 0, 0
    while have < n_tokens:
        buf_ND = np.concatenate([chunk_tokens[i] for i in buffers[g]])
        buf_ND = buf_ND[np.random.default_rng([seed, 0x5AE, g]).permutation(len(buf_ND))]
        out.append(buf_ND)
        have += len(buf_ND)
        g += 1
    return np.concatenate(out)[:n_tokens].astype(np.float32)


@pytest.mark.parametrize(("batch_size", "shuffle_chunks", "n_tokens", "kind"), [
    (16, 3, 69, "patches"),  # exactly one epoch, ragged last batch
    (10, 2, 200, "patches"),  # three epochs (8 chunks, 2 per buffer)
    (10, 3, 200, "patches"),  # three epochs, each ending in a buffer of 2 chunks
    (7, 3, 60, "all"),
    (4, 5, 50, "cls"),
])  # fmt: skip
def test_stream_matches_definition(store: Path, batch_size: int, shuffle_chunks: int, n_tokens: int,
                                   kind: str) -> None:  # fmt: skip
    ref_ND = reference(store, 3, shuffle_chunks, n_tokens, kind)
    with TokenStream(store, "train", kind, batch_size, 3, shuffle_chunks, n_tokens) as stream:
        batches = list(stream)
        assert stream.position == n_tokens
    sizes = [min(batch_size, n_tokens - i) for i in range(0, n_tokens, batch_size)]
    assert [b.shape[0] for b in batches] == sizes
    assert all(b.dtype == torch.float32 and b.shape[1] == D for b in batches)
    np.testing.assert_array_equal(torch.cat(batches).numpy(), ref_ND)


@pytest.mark.parametrize("start_batch", [0, 1, 3, 4, 7, 11])
def test_resume_yields_tail_of_stream(store: Path, start_batch: int) -> None:
    full = list(TokenStream(store, "train", "patches", 10, 5, 2, 130))
    with TokenStream(store, "train", "patches", 10, 5, 2, 130, start_tokens=start_batch * 10) as stream:
        tail = list(stream)
        assert stream.position == 130
    assert len(tail) == len(full) - start_batch
    assert all(torch.equal(a, b) for a, b in zip(tail, full[start_batch:]))
    with pytest.raises(ValueError, match="multiple of"):
        TokenStream(store, "train", "patches", 10, 5, 2, 130, start_tokens=15)


def test_resume_skips_earlier_buffers_unread(store: Path) -> None:
    # 69 patch tokens per epoch in chunks of 9 (last 6); shuffle_chunks=2 -> 4 buffers of 2 chunks an epoch
    with TokenStream(store, "train", "patches", 9, 1, 2, 69, start_tokens=45) as stream:
        list(stream)
        order = [int(i) for i in np.random.default_rng([1, 0]).permutation(8)]
        sizes = [6 if i == 7 else 9 for i in order]
        starts = np.cumsum([0] + [sizes[2 * g] + sizes[2 * g + 1] for g in range(4)])
        g0 = int(np.searchsorted(starts, 45, side="right") - 1)
        assert stream.chunks_read == [(0, i) for i in order[2 * g0 :]]
        assert stream.bytes_read == sum(sizes[2 * g0 :]) * D * 2


def test_bytes_read_is_one_pass(store: Path) -> None:
    # one epoch: every chunk read once; fewer tokens: only the chunks of the buffers needed
    with TokenStream(store, "train", "patches", 16, 2, 4, 69) as stream:
        list(stream)
        assert stream.bytes_read == 69 * D * 2
        assert sorted(stream.chunks_read) == [(0, i) for i in range(8)]
    # 3 chunks per buffer: buffers of 3, 3 and 2 chunks; no buffer reaches into epoch 1
    with TokenStream(store, "train", "patches", 16, 2, 3, 69) as stream:
        list(stream)
        assert sorted(stream.chunks_read) == [(0, i) for i in range(8)]
        assert stream.bytes_read == 69 * D * 2
    with TokenStream(store, "train", "patches", 8, 2, 2, 20) as stream:
        list(stream)
        order = [int(i) for i in np.random.default_rng([2, 0]).permutation(8)]
        sizes = [6 if i == 7 else 9 for i in order]
        n_buf = 1 if sizes[0] + sizes[1] >= 20 else 2
        assert stream.chunks_read == [(0, i) for i in order[: 2 * n_buf]]
        assert stream.bytes_read == sum(sizes[: 2 * n_buf]) * D * 2


@pytest.mark.parametrize(
    ("batch_size", "shuffle_chunks", "epochs"), [(16, 3, 1), (7, 3, 2), (10, 5, 3), (9, 8, 1)]
)
def test_k_epochs_see_every_token_exactly_k_times(
    store: Path, batch_size: int, shuffle_chunks: int, epochs: int
) -> None:
    # 8 chunks: with 3 or 5 chunks a buffer the epochs do not split into whole buffers
    x_ND = open_store(store)["train"][:][:, N_PREFIX:].reshape(-1, D)
    n = epochs * len(x_ND)
    with TokenStream(store, "train", "patches", batch_size, 4, shuffle_chunks, n) as stream:
        seen_ND = torch.cat(list(stream)).numpy()
    assert len(seen_ND) == n
    rows, counts = np.unique(seen_ND, axis=0, return_counts=True)  # the store's tokens are all distinct
    assert len(rows) == len(x_ND) and set(counts.tolist()) == {epochs}
    np.testing.assert_array_equal(rows, np.unique(x_ND, axis=0))
    first_ND = seen_ND[: len(x_ND)]  # and the first epoch's tokens are the first len(x) of the stream
    np.testing.assert_array_equal(np.unique(first_ND, axis=0), np.unique(x_ND, axis=0))


def test_peek_is_read_once_and_reused(store: Path) -> None:
    full = torch.cat(list(TokenStream(store, "train", "patches", 8, 4, 2, 60))).numpy()
    with TokenStream(store, "train", "patches", 8, 4, 2, 60) as stream:
        sample_ND = stream.peek(25)
        read_after_peek = stream.bytes_read
        assert sample_ND.dtype == np.float32 and sample_ND.shape == (25, D)
        np.testing.assert_array_equal(sample_ND, full[:25])
        batches = list(stream)
        assert 0 < read_after_peek < stream.bytes_read
    np.testing.assert_array_equal(torch.cat(batches).numpy(), full)
    with TokenStream(store, "train", "patches", 8, 4, 2, 60, start_tokens=16) as stream:
        np.testing.assert_array_equal(stream.peek(10), full[16:26])
        np.testing.assert_array_equal(torch.cat(list(stream)).numpy(), full[16:])


def test_peek_does_not_read_twice(store: Path) -> None:
    with TokenStream(store, "train", "patches", 16, 2, 4, 69) as stream:
        stream.peek(40)
        list(stream)
        assert stream.bytes_read == 69 * D * 2


def test_dtypes(store: Path) -> None:
    ref = torch.cat(list(TokenStream(store, "train", "patches", 16, 2, 3, 40)))
    for dtype in (torch.float16, torch.bfloat16):
        got = torch.cat(list(TokenStream(store, "train", "patches", 16, 2, 3, 40, dtype=dtype)))
        assert got.dtype == dtype
        assert torch.equal(got, ref.to(dtype))


def test_nan_chunk_raises_in_consumer(tmp_path: Path) -> None:
    x_NTD = np.random.default_rng(0).standard_normal((12, 4, D)).astype(np.float32)
    x_NTD[7, 2, 3] = np.nan  # image 7 is in chunk 2 (chunks of 3 images)
    store = make_store(tmp_path / "nan.zarr", {"train": x_NTD}, 3)
    baseline = threading.active_count()
    stream = TokenStream(store, "train", "patches", 4, 0, 1, 36)
    with pytest.raises(ValueError, match=r"NaN/Inf: store .*nan\.zarr split 'train' chunk 2"):
        list(stream)
    stream.close()
    assert threading.active_count() == baseline


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_nonfinite_chunk_named_in_a_shuffled_buffer(tmp_path: Path, value: float) -> None:
    # buffers of 4 chunks: the bad token is gathered from a buffer holding several chunks
    x_NTD = np.random.default_rng(1).standard_normal((12, 4, D)).astype(np.float32)
    x_NTD[10, 1, 0] = value  # image 10 is in chunk 3 (chunks of 3 images)
    store = make_store(tmp_path / "bad.zarr", {"train": x_NTD}, 3)
    with pytest.raises(ValueError, match=r"NaN/Inf: store .*bad\.zarr split 'train' chunk 3;"):
        list(TokenStream(store, "train", "patches", 5, 0, 4, 36))
    with (
        TokenStream(store, "train", "patches", 5, 0, 4, 36) as stream,
        pytest.raises(ValueError, match="chunk 3;"),
    ):
        stream.peek(36)


def test_too_few_tokens_for_a_batch(store: Path) -> None:
    with pytest.raises(ValueError, match=r"split 'val' has 6 'patches' tokens, fewer than batch_size=7"):
        TokenStream(store, "val", "patches", 7, 0, 1, 100)


def test_thread_stops_on_close_and_abandon(store: Path) -> None:
    baseline = threading.active_count()
    stream = TokenStream(store, "train", "patches", 4, 0, 1, 600, prefetch=1)
    next(stream)
    # the reader thread and its chunk-reading pool (one chunk per buffer here: one pool thread)
    assert threading.active_count() == baseline + 2
    stream.close()
    assert threading.active_count() == baseline
    with TokenStream(store, "train", "patches", 4, 0, 1, 600, prefetch=1) as stream:
        next(stream)
    assert threading.active_count() == baseline
    stream = TokenStream(store, "train", "patches", 4, 0, 1, 600, prefetch=1)
    next(stream)
    del stream  # abandoned mid-iteration: collected, thread stopped
    gc.collect()
    for _ in range(50):
        if threading.active_count() == baseline:
            break
        time.sleep(0.05)
    assert threading.active_count() == baseline
