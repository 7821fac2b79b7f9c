"""A deterministic, resumable token stream over one split of an activation store.

Definition (so that any token offset can be resumed without replaying history)
------------------------------------------------------------------------------
* Epoch ``e`` visits the split's chunks in ``np.random.default_rng([seed, e]).permutation(n_chunks)``;
  concatenating the epochs gives the *global chunk sequence*.
* Each epoch is cut into ``ceil(n_chunks / C)`` buffers (``C = shuffle_chunks``): buffer ``j`` of epoch
  ``e`` holds that epoch's chunk positions ``[j·C, min((j+1)·C, n_chunks))``, so the last buffer of an epoch
  may hold fewer chunks and no buffer mixes two epochs. Numbered across epochs (``g = e·ceil(n_chunks/C)
  + j``), buffer ``g``'s tokens, token-sliced and flattened to ``[N, D]`` in chunk order, are permuted by
  ``np.random.default_rng([seed, 0x5AE, g]).permutation(N)``. A stream of exactly ``k`` epochs' tokens
  thus holds every token of the split exactly ``k`` times (a buffer spanning two epochs, as before, let a
  one-pass run see ~3% of the tokens twice and miss as many).
* The stream is buffer 0 ++ buffer 1 ++ ...; batch ``i`` is stream tokens ``[i·B, (i+1)·B)`` clipped at
  ``n_tokens`` (the last batch may be shorter).

Chunk sizes are known from the array's shape and chunking, so a stream started at ``start_tokens``
skips earlier buffers without reading them. Whole chunks are read (the fast read pattern,
shared/FACTS.md) straight into the buffer, up to ``READ_THREADS`` chunks at once, by a background thread that keeps up to ``prefetch``
buffers (fp16, with their permutation) ready. Each batch is gathered from its buffer and converted
to ``dtype`` when it is taken, by torch ops that release the GIL, so that this light work overlaps the
reading of the next buffer (tokens are checked for NaN/Inf there too: a batch holding one raises a
ValueError naming the chunk).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import torch
from zarr.buffer.cpu import NDBuffer

from vitsae.data.store import chunk_ranges, nonfinite_rows, open_store, split_array, token_slice

#: Second key of the generator that permutes buffer ``g``'s tokens: ``default_rng([seed, 0x5AE, g])``.
BUFFER_KEY = 0x5AE
#: Chunk reads in flight at once (per stream).
READ_THREADS = 4
_POLL_S = 0.1


@dataclass
class _Counters:
    """Read counters shared between the reader thread and the consumer."""

    bytes_read: int = 0
    chunks_read: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    """Everything the reader thread needs (no reference to the stream, so that it can be collected)."""

    array: object
    tokens: slice
    seed: int
    shuffle_chunks: int
    chunk_images: tuple[tuple[int, int], ...]  # [start, stop) images of each chunk
    chunk_tokens: tuple[int, ...]
    d_in: int
    start_tokens: int
    n_tokens: int


@dataclass(frozen=True)
class _Buffer:
    """What buffer ``g`` gives the stream: its tokens as read (``[N, D]``, chunk after chunk, store dtype),
    ``rows`` (int64 indices into them in stream order: the buffer's permutation cut to the stream tokens
    needed) and, to name a chunk in errors, the chunks read and the row where each starts."""

    tokens_ND: np.ndarray
    rows: np.ndarray
    chunks: tuple[int, ...]
    starts: tuple[int, ...]


def _chunk_order(seed: int, epoch: int, n_chunks: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_chunks)


def _buffer_chunks(plan: _Plan, g: int, orders: dict[int, np.ndarray]) -> list[tuple[int, int]]:
    """``(epoch, chunk)`` of buffer ``g``'s chunks: buffer ``g % per_epoch`` of epoch ``g // per_epoch``."""
    n_chunks = len(plan.chunk_tokens)
    epoch, j = divmod(g, math.ceil(n_chunks / plan.shuffle_chunks))
    if epoch not in orders:
        orders.clear()  # epochs are visited in order: keep one permutation
        orders[epoch] = _chunk_order(plan.seed, epoch, n_chunks)
    positions = range(j * plan.shuffle_chunks, min((j + 1) * plan.shuffle_chunks, n_chunks))
    return [(epoch, int(orders[epoch][i])) for i in positions]


def _read_buffer(
    plan: _Plan, chunks: list[tuple[int, int]], counters: _Counters, pool: ThreadPoolExecutor
) -> tuple[np.ndarray, list[int]]:
    """Buffer tokens ``[N, D]`` (unshuffled; each chunk read straight into its rows, so no copy is
    concatenated) and the row where each chunk starts. The chunks are read concurrently by ``pool``
    (several reads in flight keep a disk busy while the consumer converts batches); each into its own
    rows, so the buffer is the same whatever the order the reads finish in."""
    tokens_ND = np.empty((sum(plan.chunk_tokens[i] for _, i in chunks), plan.d_in), plan.array.dtype)
    starts, row = [], 0
    for _, i in chunks:
        starts.append(row)
        row += plan.chunk_tokens[i]

    def read(k: int) -> None:
        i = chunks[k][1]
        start, stop = plan.chunk_images[i]
        n = plan.chunk_tokens[i]
        out_BTD = tokens_ND[starts[k] : starts[k] + n].reshape(stop - start, n // (stop - start), plan.d_in)
        plan.array.get_basic_selection(
            (slice(start, stop), plan.tokens), out=NDBuffer.from_numpy_array(out_BTD)
        )

    for future in [pool.submit(read, k) for k in range(len(chunks))]:
        future.result()  # re-raises a failed read
    counters.bytes_read += tokens_ND.nbytes
    counters.chunks_read.extend(chunks)
    return tokens_ND, starts


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first; returns whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _reader(plan: _Plan, q: queue.Queue, stop: threading.Event, counters: _Counters) -> None:
    """Thread body: per buffer holding stream tokens in ``[start_tokens, n_tokens)``, put ``("data",
    _Buffer)``; then ``("end",)``. An exception is put as ``("error", exc)``."""
    pool = ThreadPoolExecutor(
        max_workers=min(READ_THREADS, plan.shuffle_chunks), thread_name_prefix="TokenStream-read"
    )
    try:
        orders: dict[int, np.ndarray] = {}
        g = 0
        buf_start = 0  # stream offset of buffer g
        pos = plan.start_tokens
        while pos < plan.n_tokens and not stop.is_set():
            chunks = _buffer_chunks(plan, g, orders)
            size = sum(plan.chunk_tokens[i] for _, i in chunks)
            if buf_start + size > pos:  # else entirely before the start: skip without reading
                tokens_ND, starts = _read_buffer(plan, chunks, counters, pool)
                perm = np.random.default_rng([plan.seed, BUFFER_KEY, g]).permutation(size)
                rows = perm[pos - buf_start : min(size, plan.n_tokens - buf_start)]
                pos += len(rows)
                buf = _Buffer(tokens_ND, rows, tuple(c for _, c in chunks), tuple(starts))
                if not _put(q, ("data", buf), stop):
                    return
            buf_start += size
            g += 1
        _put(q, ("end",), stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
        _put(q, ("error", exc), stop)
    finally:
        pool.shutdown(wait=True)


def _shutdown(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join()


class TokenStream:
    """Batches ``[B, D]`` (``dtype``, original units) of the stream defined in the module docstring,
    from token offset ``start_tokens`` (a multiple of ``batch_size``) up to ``n_tokens``.

    Attributes: ``d_in``, ``split_tokens`` (tokens of ``token_kind`` in the split), ``position``
    (stream tokens yielded so far, including ``start_tokens``), ``bytes_read`` (bytes of token-sliced
    fp16 chunks read) and ``chunks_read`` (``(epoch, chunk)`` in read order). Use as a context manager
    or call :meth:`close` to stop the reader thread (also done when the stream is garbage-collected).
    """

    def __init__(
        self,
        store_path: str | os.PathLike,
        split: str,
        token_kind: str,
        batch_size: int,
        seed: int,
        shuffle_chunks: int,
        n_tokens: int,
        start_tokens: int = 0,
        prefetch: int = 2,
        dtype: torch.dtype = torch.float32,
        pin_memory: bool = False,
    ) -> None:
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        batch_size, shuffle_chunks, prefetch = int(batch_size), int(shuffle_chunks), int(prefetch)
        if batch_size < 1 or shuffle_chunks < 1 or prefetch < 1:
            raise ValueError("batch_size, shuffle_chunks and prefetch must be >= 1")
        start_tokens, n_tokens = int(start_tokens), int(n_tokens)
        if start_tokens < 0 or start_tokens % batch_size:
            raise ValueError(f"start_tokens={start_tokens} must be a non-negative multiple of {batch_size=}")
        store_path = Path(store_path)
        group = open_store(store_path)
        array = split_array(group, split)
        layout = dict(group.attrs["token_layout"])
        tokens = token_slice(layout, token_kind)
        n_images, _, self.d_in = array.shape
        per_image = len(range(*tokens.indices(layout["n_tokens"])))
        ranges = chunk_ranges(n_images, array.chunks[0])
        self.split_tokens = n_images * per_image
        if self.split_tokens < batch_size:
            raise ValueError(
                f"store {store_path} split {split!r} has {self.split_tokens} {token_kind!r} tokens, "
                f"fewer than batch_size={batch_size}; lower batch_size or extract more images"
            )
        self.store_path, self.split, self.token_kind = store_path, split, token_kind
        self.batch_size, self.seed, self.shuffle_chunks = batch_size, int(seed), shuffle_chunks
        self.n_tokens, self.start_tokens = n_tokens, start_tokens
        self.position = start_tokens
        self.dtype = dtype
        self._pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self._plan = _Plan(
            array=array, tokens=tokens, seed=self.seed, shuffle_chunks=shuffle_chunks,
            chunk_images=tuple(ranges), chunk_tokens=tuple((b - a) * per_image for a, b in ranges),
            d_in=self.d_in, start_tokens=start_tokens, n_tokens=n_tokens,
        )  # fmt: skip
        self._counters = _Counters()
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize | None = None
        self._buffers: deque[_Buffer] = deque()  # taken from the reader, not yet used up
        self._offset = 0  # rows of self._buffers[0] already yielded
        self._ended = False

    # -- counters -----------------------------------------------------------------------------
    @property
    def bytes_read(self) -> int:
        return self._counters.bytes_read

    @property
    def chunks_read(self) -> list[tuple[int, int]]:
        return list(self._counters.chunks_read)

    # -- reader thread ------------------------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=_reader, args=(self._plan, self._queue, self._stop, self._counters),
                name=f"TokenStream-{self.split}", daemon=True,
            )  # fmt: skip
            self._thread.start()
            self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._thread)

    def _take(self) -> _Buffer | None:
        """The reader's next buffer, or None at the end; re-raises the reader's exception."""
        if self._ended:
            return None
        if self._stop.is_set():
            raise RuntimeError("TokenStream is closed")
        self._start()
        item = self._queue.get()
        if item[0] == "end":
            self._ended = True
            return None
        if item[0] == "error":
            self._ended = True
            self.close()
            raise item[1]
        return item[1]

    def _gather(self, buf: _Buffer, a: int, b: int, dtype: torch.dtype) -> torch.Tensor:
        """Stream rows ``[a, b)`` of ``buf`` as ``dtype``; NaN/Inf raise ValueError naming the chunk.

        The gather and the conversion are torch ops (multi-threaded, and they release the GIL, so the
        reader thread keeps reading meanwhile); NumPy's fancy indexing and its fp16 conversion were
        several times slower. The NaN/Inf test is one fp32 sum of the batch (NaN and Inf propagate, and
        fp16 values cannot overflow an fp32 sum of a batch); rows are searched only when it fails."""
        rows = torch.from_numpy(buf.rows[a:b])
        tokens_ND = torch.from_numpy(buf.tokens_ND).index_select(0, rows)
        out_ND = tokens_ND.to(dtype)
        if not bool(torch.isfinite(out_ND.sum(dtype=torch.float32))):
            bad_N = nonfinite_rows(tokens_ND.numpy())
            row = int(buf.rows[a:b][bad_N.argmax()])
            chunk = buf.chunks[int(np.searchsorted(buf.starts, row, side="right")) - 1]
            self.close()
            raise ValueError(
                f"activations contain NaN/Inf: store {self.store_path} split {self.split!r} chunk {chunk}; "
                "re-extract this store"
            )
        return out_ND

    def _tokens(self, n: int, dtype: torch.dtype, consume: bool) -> torch.Tensor | None:
        """The next ``n`` stream tokens (fewer at the end; None if there are none), taking buffers
        from the reader as needed; ``consume=False`` leaves them to be yielded again."""
        pieces, i, offset = [], 0, self._offset
        while n > 0:
            if i == len(self._buffers):
                buf = self._take()
                if buf is None:
                    break
                self._buffers.append(buf)
            buf = self._buffers[i]
            m = min(n, len(buf.rows) - offset)
            pieces.append(self._gather(buf, offset, offset + m, dtype))
            n -= m
            offset += m
            if offset == len(buf.rows):
                i, offset = i + 1, 0
        if consume:
            for _ in range(i):
                self._buffers.popleft()
            self._offset = offset
        if not pieces:
            return None
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def peek(self, n: int) -> np.ndarray:
        """The first ``n`` stream tokens from ``start_tokens`` (fp32 ``[≤n, D]``; fewer if the stream is
        shorter). The buffers read for it are kept and used for the batches, so nothing is read twice.
        Must be called before iteration starts."""
        if self.position != self.start_tokens:
            raise RuntimeError("peek must be called before iteration starts")
        tokens_ND = self._tokens(min(n, self.n_tokens - self.position), torch.float32, consume=False)
        return np.zeros((0, self.d_in), np.float32) if tokens_ND is None else tokens_ND.numpy()

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        batch_BD = self._tokens(min(self.batch_size, self.n_tokens - self.position), self.dtype, consume=True)
        if batch_BD is None:
            self.close()
            raise StopIteration
        if self._pin_memory:
            batch_BD = batch_BD.pin_memory()
        self.position += batch_BD.shape[0]
        return batch_BD

    def close(self) -> None:
        """Stop the reader thread and wait for it; idempotent."""
        self._stop.set()
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n_batches(self) -> int:
        """Batches this stream yields in all (from ``start_tokens``)."""
        return max(0, math.ceil((self.n_tokens - self.start_tokens) / self.batch_size))
