"""Extraction: manifest × model × layer → one Zarr activation store (see :mod:`vitsae.data.store` for the layout).

The model runs only up to the requested block. One extraction batch is one Zarr chunk, so every
write is chunk-aligned (FACTS.md: misaligned writes are >10x slower). The store is written under
a temporary name, validated, and only then renamed into place.

The input pipeline keeps the accelerator busy (shared/FACTS.md: a GPU runs ViT-B/14 at ~6,000
img/s, CPU JPEG decoding on 16 cores gives ~2,000):

* DataLoader workers read each image's raw bytes and check their sha256 against the manifest's: an
  image changed since the manifest was built stops the extraction (:class:`ImageChangedError`, naming
  it). Hashing the bytes already read costs little beside decoding them (bench/extract.py,
  ``sha256_vs_decode``). A worker hands over one buffer per batch, never one tensor per image (each
  costs a file descriptor and a shared-memory segment).
* ``decode="pil"`` (the default on CPU) decodes the bytes in the workers with PIL and applies the
  model's own transform (``VisionModel.transform``); the batch is one stacked tensor.
* ``decode="tensor"`` (the default on CUDA): the workers pack the batch's JPEG bytes into one uint8
  buffer (:func:`pack_bytes`); an input thread (:class:`_Producer`, on a CUDA stream of its own) decodes
  it with ``torchvision.io.decode_jpeg`` on the compute device (nvJPEG on a GPU) and applies
  :func:`batch_transform` (:func:`tensor_transform`'s resize, crop and normalisation, run on the whole
  batch); it hands ready batches to the model through a queue of depth 2, so batch i + 1 is decoded
  while the model runs batch i. An image nvJPEG cannot decode (CMYK, a PNG named .JPEG) falls back to
  PIL. An error in that thread is raised in the calling thread as it was raised.
  tests/test_activations.py bounds the difference between the two paths.
* On CUDA: bf16 autocast (``precision``); the kept activations go by non-blocking copies into a ring
  of pinned host buffers made once (:class:`_HostRing`); a buffer is reused only after the writer wrote it.
* A writer thread with a bounded queue writes batch i while the model computes batch i+1; an error
  there (including NaN/Inf in the activations) is raised in the calling thread, and nothing is published.
  A full disk (``ENOSPC``) removes the unfinished store and raises :class:`StoreSpaceError`, naming the
  store and the space it needs. The store's arrays skip zarr's scan of every chunk for "all fill value"
  (:data:`vitsae.data.store.WRITE_CONFIG`).
* ``extract(..., profile={})`` fills the dict with where the time went: the calling thread's
  :data:`STAGES`, which add up to the wall time, and the input and writer threads' busy time
  (:data:`BUSY`), which overlaps them. bench/gpu/extract_gpu.py prints it.

Parts: ``part=(i, n)`` writes only the chunk range :func:`vitsae.data.store.part_ranges` gives part i of
every split, as a published *part* store; :func:`vitsae.data.store.assemble` joins the parts into the one
store readers open. Chunk boundaries are the same either way, so n parts give a store bitwise equal
to one.

Token choice (:class:`TokenChoice`): all tokens, patches only, CLS only, or a seeded subset of k
patches per image (chosen per image from ``(seed, manifest row)``, so independent of batching and parts).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import itertools
import logging
import math
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from vitsae.data import store
from vitsae.data.manifest import manifest_digest, read_manifest, split_rows
from vitsae.data.models import VisionModel, load_model
from vitsae.data.settings import ModelSpec, TokenChoice

log = logging.getLogger("vitsae.data.activations")


class ImageDecodeError(ValueError):
    """An image listed as ok in the manifest cannot be decoded any more."""


class ImageChangedError(ValueError):
    """An image's bytes differ from the sha256 the manifest recorded for it."""


class StoreSpaceError(OSError):
    """The disk filled up while a store was written (``errno`` is ``ENOSPC``)."""


def _decode_error(path: Path, e: BaseException) -> ImageDecodeError:
    return ImageDecodeError(
        f"cannot decode {path} ({type(e).__name__}: {e}); it was readable when the manifest was built: "
        "restore the file, or delete the manifest so it is rebuilt"
    )


# ---------------------------------------------------------------------------------------------
# Token choice


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def subset_patch_index(rows_B: np.ndarray, n_patches: int, k: int, seed: int) -> np.ndarray:
    """``[B, k]`` sorted grid indices of the patches kept for each image: the k smallest of a hash of
    ``(seed, manifest row, patch)``, so an image's subset depends on nothing else (not on batching)."""
    image_B = _splitmix64(
        np.asarray(rows_B, dtype=np.uint64) ^ _splitmix64(np.full(1, seed, dtype=np.uint64))
    )
    keys_BP = _splitmix64(image_B[:, None] + np.arange(n_patches, dtype=np.uint64)[None, :])
    index_BK = np.argsort(keys_BP, axis=1, kind="stable")[:, :k]
    return np.sort(index_BK, axis=1)


def select_tokens(
    acts_BTD: torch.Tensor, rows_B: np.ndarray, choice: TokenChoice, model_layout: dict
) -> tuple[torch.Tensor, np.ndarray | None]:
    """The kept tokens ``[B, K, D]`` (on the input's device) and, for a subset, their grid indices."""
    n_prefix = model_layout["n_prefix"]
    if choice.kept == "all":
        return acts_BTD, None
    if choice.kept == "patches":
        return acts_BTD[:, n_prefix:], None
    if choice.kept == "cls":
        i = model_layout["cls_index"]
        return acts_BTD[:, i : i + 1], None
    h, w = model_layout["grid"]
    index_BK = subset_patch_index(rows_B, h * w, int(choice.k), choice.seed)
    gather_BKD = (
        torch.from_numpy(index_BK + n_prefix)
        .to(acts_BTD.device)[:, :, None]
        .expand(-1, -1, acts_BTD.shape[2])
    )
    return torch.gather(acts_BTD, 1, gather_BKD), index_BK


# ---------------------------------------------------------------------------------------------
# Input pipeline


class _Checked(torch.utils.data.Dataset):
    """Reads image ``i``'s bytes and checks them against ``sha256s[i]``, the manifest's hash of the file;
    ``source`` names the dataset and manifest in the error."""

    def __init__(self, root: Path, paths: list[str], sha256s: list[str], source: str) -> None:
        if len(sha256s) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(sha256s)} sha256s")
        self.root, self.paths, self.sha256s, self.source = root, paths, sha256s, source

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> tuple[Path, bytes]:
        path = self.root / self.paths[i]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise _decode_error(path, e) from e
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256s[i]:
            raise ImageChangedError(
                f"{self.source}: image {path} has changed since the manifest was built (its sha256 is "
                f"{digest}, the manifest has {self.sha256s[i]}); restore the file, or delete the manifest "
                "so that it is rebuilt (and the stores made from it)"
            )
        return path, data


class _Images(_Checked):
    """PIL path: the worker reads and checks the file and applies the model's own transform."""

    def __init__(self, root: Path, paths: list[str], sha256s: list[str], source: str, transform) -> None:
        super().__init__(root, paths, sha256s, source)
        self.transform = transform

    def __getitem__(self, i: int) -> torch.Tensor:
        path, data = self._read(i)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return self.transform(im.convert("RGB"))
        except Exception as e:
            raise _decode_error(path, e) from e


class _JpegBytes(_Checked):
    """Tensor path: the worker only reads and checks the file's bytes; decoding happens on the compute device."""

    def __getitem__(self, i: int) -> bytes:
        return self._read(i)[1]


def pack_bytes(items: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's encoded images as one uint8 buffer ``data_N`` and ``offsets_B1`` (int64, B + 1): image i
    is ``data_N[offsets_B1[i]:offsets_B1[i + 1]]`` (:func:`unpack_bytes`). The tensor path's collate_fn: a
    DataLoader worker hands over two tensors per batch instead of one per image; in a worker the buffer is
    made in shared memory, as the default collate makes its stacked batch, so it is not copied again."""
    offsets_B1 = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([len(item) for item in items], out=offsets_B1[1:])
    data_N = torch.empty(int(offsets_B1[-1]), dtype=torch.uint8)
    if data_N.numel() and torch.utils.data.get_worker_info() is not None:
        data_N.share_memory_()
    view_N = data_N.numpy()
    for item, a, b in zip(items, offsets_B1[:-1], offsets_B1[1:], strict=True):
        view_N[a:b] = np.frombuffer(item, dtype=np.uint8)
    return data_N, torch.from_numpy(offsets_B1)


def unpack_bytes(data_N: torch.Tensor, offsets_B1: torch.Tensor) -> list[torch.Tensor]:
    """The encoded images of a :func:`pack_bytes` buffer, as views into it (no copy)."""
    return [data_N[a:b] for a, b in itertools.pairwise(offsets_B1.tolist())]


def _pil_decode(data: torch.Tensor, path: Path) -> torch.Tensor:
    """uint8 ``[3, H, W]`` of an image PIL can read (the fallback for what nvJPEG cannot)."""
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    except Exception as e:
        raise _decode_error(path, e) from e


def decode_images(
    datas: list[torch.Tensor], paths: list[Path], device: str | torch.device
) -> list[torch.Tensor]:
    """Decode JPEG bytes to uint8 ``[3, H, W]`` on ``device`` (nvJPEG on CUDA), PIL for the rest."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out = []
        for data, path in zip(datas, paths, strict=True):
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(_pil_decode(data, path).to(device))
        return out


def tensor_transform(image_CHW: torch.Tensor, preprocessing: dict) -> torch.Tensor:
    """The model's PIL transform in torch ops, on the image's device: float ``[3, S, S]``.

    Mirrors timm's and open_clip's eval transforms as recorded in ``preprocessing``: resize the shorter
    side to ``floor(S / crop_pct)`` (antialiased, like PIL; the result rounded to 8 bits as PIL's is),
    centre crop to S, scale to [0, 1], normalise. The resize runs in float32 on every device, so a CPU
    test of this function checks the same arithmetic a GPU runs. Extraction runs it on whole batches
    (:func:`batch_transform`).
    """
    h, w = image_CHW.shape[-2:]
    new_h, new_w, top, left, s = _geometry(h, w, preprocessing)
    x_1CHW = image_CHW[None].float()
    if (new_h, new_w) != (h, w):
        x_1CHW = _resize(x_1CHW, new_h, new_w, preprocessing)
    x_CHW = x_1CHW[0, :, top : top + s, left : left + s] / 255.0
    mean_C11, std_C11 = _mean_std(tuple(preprocessing["mean"]), tuple(preprocessing["std"]), x_CHW.device)
    return (x_CHW - mean_C11) / std_C11


def batch_transform(images: list[torch.Tensor], preprocessing: dict) -> torch.Tensor:
    """:func:`tensor_transform` of every image of a batch (uint8 ``[3, H, W]`` of any sizes, on one device),
    as one float ``[B, 3, S, S]``: the images of each size are resized in one call, then cropped into one
    tensor, which is scaled and normalised at once (the same arithmetic, so the same values)."""
    device = images[0].device
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image_CHW in enumerate(images):
        groups.setdefault(tuple(image_CHW.shape[-2:]), []).append(i)
    single = len(groups) == 1
    x_BCSS = None
    for (h, w), index in groups.items():
        new_h, new_w, top, left, s = _geometry(h, w, preprocessing)
        x_GCHW = torch.stack([images[i] for i in index]).float()
        if (new_h, new_w) != (h, w):
            x_GCHW = _resize(x_GCHW, new_h, new_w, preprocessing)
        crop_GCSS = x_GCHW[:, :, top : top + s, left : left + s]
        if single:
            x_BCSS = crop_GCSS / 255.0
            continue
        if x_BCSS is None:
            x_BCSS = torch.empty((len(images), 3, s, s), dtype=torch.float32, device=device)
        index_G = torch.tensor(index, dtype=torch.int64)
        if device.type == "cuda":
            index_G = index_G.pin_memory().to(device, non_blocking=True)
        x_BCSS.index_copy_(0, index_G, crop_GCSS)
    if not single:
        x_BCSS.div_(255.0)
    mean_C11, std_C11 = _mean_std(tuple(preprocessing["mean"]), tuple(preprocessing["std"]), device)
    return x_BCSS.sub_(mean_C11).div_(std_C11)


def _geometry(h: int, w: int, preprocessing: dict) -> tuple[int, int, int, int, int]:
    """Of an ``h x w`` image: the resized height and width (shorter side ``floor(S / crop_pct)``), the top
    and left of the centre crop in the resized image, and the crop's side ``S``."""
    _, s_h, s_w = preprocessing["input_size"]
    if s_h != s_w or preprocessing.get("crop_mode", "center") != "center":
        raise ValueError(f"tensor_transform supports square centre crops only, got {preprocessing}")
    scale = math.floor(s_h / float(preprocessing["crop_pct"]))
    new_h, new_w = (int(scale * h / w), scale) if w <= h else (scale, int(scale * w / h))
    return new_h, new_w, round((new_h - s_h) / 2.0), round((new_w - s_w) / 2.0), s_h


def _resize(x_BCHW: torch.Tensor, new_h: int, new_w: int, preprocessing: dict) -> torch.Tensor:
    """Antialiased resize of float images holding 8-bit values, rounded back to 8-bit values (as PIL's)."""
    mode = {"bicubic": "bicubic", "bilinear": "bilinear"}[preprocessing["interpolation"]]
    x_BCHW = torch.nn.functional.interpolate(
        x_BCHW, size=(new_h, new_w), mode=mode, antialias=True, align_corners=False
    )
    return x_BCHW.round_().clamp_(0, 255)


_MEAN_STD: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_std(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalisation constants on ``device``, made once (a host-to-GPU copy per image would stall the GPU)."""
    key = (mean, std, str(device))
    if key not in _MEAN_STD:
        _MEAN_STD[key] = (
            torch.tensor(mean, device=device)[:, None, None],
            torch.tensor(std, device=device)[:, None, None],
        )
    return _MEAN_STD[key]


# ---------------------------------------------------------------------------------------------
# Writer thread


class _Writer:
    """Runs write jobs in one thread, at most ``depth`` waiting; the first error is re-raised in the caller."""

    def __init__(self, depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.error: BaseException | None = None
        self.busy_s = 0.0
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="vitsae-store-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self.error is None and not self._abandoned:  # else drain, so that the caller never blocks
                t0 = time.perf_counter()
                try:
                    job()
                except BaseException as e:  # noqa: BLE001 - handed to the calling thread
                    self.error = e
                self.busy_s += time.perf_counter() - t0

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def submit(self, job: Callable[[], None]) -> None:
        self._raise()
        self._queue.put(job)

    def close(self) -> None:
        """Wait for every write; raise the first error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def abandon(self) -> None:
        """The caller failed: drop the waiting writes and stop the thread (raises nothing)."""
        self._abandoned = True
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


# ---------------------------------------------------------------------------------------------
# Profile

#: Where the calling thread of :func:`extract` spends its time; in a profile they add up to ``wall``.
#: ``setup``: manifest, model, store creation, DataLoader worker start; ``input_wait``: waiting for the next
#: model-ready batch (on the PIL path with no workers, the decoding itself); ``forward``: the model up to
#: the layer; ``copy``: token choice, fp16, the NaN/Inf check and the copy to host memory; ``writer_wait``:
#: waiting for a free host buffer, a free place in the writer's queue, and the last writes; ``publish``:
#: validation and the rename; ``other``: the rest (logging, the loop itself).
STAGES = ("setup", "input_wait", "forward", "copy", "writer_wait", "publish", "other")
#: Busy seconds of the other threads, overlapping :data:`STAGES`: the tensor path's input thread
#: (``loader_wait``: waiting for the DataLoader's next packed batch; ``decode``; ``transform``) and the
#: writer thread (``write``: chunk writes). The PIL path decodes in the DataLoader workers (not measured).
BUSY = ("loader_wait", "decode", "transform", "write")


class _Stages:
    """Seconds per stage of :func:`extract`, for its ``profile``. ``sync`` (CUDA, only when a profile is
    asked for) waits for the calling thread's current stream, so that a stage's seconds are its device
    time and not its launch time; without a profile nothing synchronises."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.t0 = time.perf_counter()
        self.seconds = dict.fromkeys(STAGES[:-1], 0.0)
        self.busy = dict.fromkeys(BUSY, 0.0)
        self.written_at: list[tuple[float, int]] = []
        self._sync = sync

    def __call__(self, stage: str, sync: bool = False) -> contextlib.AbstractContextManager[None]:
        """Time a stage of the calling thread (``sync``: wait for the device before the clock stops)."""
        return self._timed(self.seconds, stage, sync)

    def busy_in(self, what: str, sync: bool = False) -> contextlib.AbstractContextManager[None]:
        """Time the work ``what`` of another thread (the input thread)."""
        return self._timed(self.busy, what, sync)

    @contextlib.contextmanager
    def _timed(self, into: dict[str, float], key: str, sync: bool) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
            if sync and self._sync is not None:
                self._sync()
        finally:
            into[key] += time.perf_counter() - t

    def wrote(self, n_images: int) -> None:
        """A batch of ``n_images`` is on disk (called by the writer thread)."""
        self.written_at.append((time.perf_counter() - self.t0, n_images))

    def report(self, write_busy: float) -> dict:
        wall = time.perf_counter() - self.t0
        stages = {**self.seconds, "other": wall - sum(self.seconds.values())}
        return {
            "wall": wall,
            "stages": stages,
            "busy": {**self.busy, "write": write_busy},
            "written_at": list(self.written_at),
        }

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())


# ---------------------------------------------------------------------------------------------
# Input thread (tensor path) and host buffers (CUDA)


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class _Producer:
    """The tensor path's input thread: takes the DataLoader's packed batches, prepares each (decode and
    transform, on the device), and hands them over in order, at most ``depth`` ready batches waiting, so
    that batch i + 1 is prepared while the model runs batch i. On CUDA it works on a stream of its own;
    the consumer's stream waits for a batch's event before using it. An error (an image that does not
    decode, one changed since the manifest, from a worker or here) is raised in the consumer, unchanged,
    where it reaches the batch that failed."""

    def __init__(
        self,
        batches: Iterator,
        prepare: Callable[[int, object], torch.Tensor],
        stages: _Stages,
        device: torch.device,
        depth: int = 2,
    ) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._stream = torch.cuda.Stream(device=device) if device.type == "cuda" else None
        self._thread = threading.Thread(
            target=self._produce, args=(batches, prepare, stages), name="vitsae-input", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(
        self, batches: Iterator, prepare: Callable[[int, object], torch.Tensor], stages: _Stages
    ) -> None:
        stream = contextlib.nullcontext() if self._stream is None else torch.cuda.stream(self._stream)
        try:
            with torch.inference_mode(), stream:
                for b in itertools.count():
                    with stages.busy_in("loader_wait"):
                        batch = next(batches, _DONE)
                    if batch is _DONE:
                        break
                    x_BCHW = prepare(b, batch)
                    event = None
                    if self._stream is not None:
                        event = torch.cuda.Event()
                        event.record(self._stream)
                    if not self._put((x_BCHW, event)):
                        return
        except BaseException as e:  # noqa: BLE001 - raised in the consumer
            self._put(_Failed(e))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[torch.Tensor]:
        while (item := self._queue.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            x_BCHW, event = item
            if event is not None:
                stream = torch.cuda.current_stream(x_BCHW.device)
                stream.wait_event(event)
                x_BCHW.record_stream(stream)  # its memory came from the input stream's pool
            yield x_BCHW

    def close(self) -> None:
        """Stop the thread (after an error or at the end), without waiting for batches nobody takes."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()


class _HostRing:
    """Pinned host buffers for the device-to-host copies of the kept activations (CUDA), made once and
    reused: ``n`` of them (the writer's queue, the one being written, the one being filled). A buffer is
    handed out again only after the writer has written it (:meth:`release`); the writer waits on the
    buffer's CUDA event, recorded after the copy into it, before it reads it."""

    def __init__(self, n: int, shape_BKD: tuple[int, int, int], device: torch.device) -> None:
        self.acts = [torch.empty(shape_BKD, dtype=torch.float16, pin_memory=True) for _ in range(n)]
        self.finite = [torch.empty(shape_BKD[0], dtype=torch.bool, pin_memory=True) for _ in range(n)]
        with torch.cuda.device(device):
            self.events = [torch.cuda.Event() for _ in range(n)]
        self._free: queue.Queue[int] = queue.Queue()
        for i in range(n):
            self._free.put(i)

    def acquire(self, writer: _Writer) -> int:
        """A free buffer's index; waits for the writer to free one, and raises the writer's error if it fails."""
        while True:
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                writer._raise()

    def release(self, i: int) -> None:
        self._free.put(i)


# ---------------------------------------------------------------------------------------------
# Extraction


def resolve_decode(decode: str, device: str | torch.device) -> str:
    """``auto`` is ``tensor`` on CUDA and ``pil`` on the CPU."""
    if decode == "auto":
        return "tensor" if torch.device(device).type == "cuda" else "pil"
    return decode


def _loader(
    dataset_root: Path,
    paths: list[str],
    sha256s: list[str],
    source: str,
    vm: VisionModel,
    mode: str,
    batch_size: int,
    num_workers: int,
    pin: bool,
) -> torch.utils.data.DataLoader:
    """Batches of the PIL path: one stacked float tensor (pinned when ``pin``); of the tensor path: one
    :func:`pack_bytes` buffer and its offsets (never pinned: the decoder reads them on the host)."""
    if mode == "pil":
        data = _Images(dataset_root, paths, sha256s, source, vm.transform)
        collate = None
    else:
        data, collate, pin = _JpegBytes(dataset_root, paths, sha256s, source), pack_bytes, False
    return torch.utils.data.DataLoader(
        data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin,
        prefetch_factor=2 if num_workers > 0 else None,
        persistent_workers=False,
    )


def extract(
    manifest_path: str | Path,
    dataset_root: str | Path,
    dataset: str,
    spec: ModelSpec,
    layer: int,
    out_path: str | Path,
    splits: list[str],
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    tokens: str | dict | TokenChoice = "all",
    decode: str = "auto",
    precision: str = "bf16",
    part: tuple[int, int] | None = None,
    writer_depth: int = 2,
    model: VisionModel | None = None,
    profile: dict | None = None,
) -> Path:
    """Write ``out_path`` (a Zarr v3 group, one fp16 array per split) and publish it when complete.

    ``part=(i, n)``: write only part i of n (chunk-aligned image ranges of every split) as a part
    store, to be joined by :func:`vitsae.data.store.assemble`. ``tokens``: see :class:`TokenChoice`.
    ``decode``: ``auto`` (tensor on CUDA, PIL on CPU), ``pil`` or ``tensor``. ``precision``: the
    autocast dtype on CUDA (``bf16``) or none (``fp32``); the CPU always computes in fp32. ``model``: the
    loaded model of ``spec`` on ``device``, to reuse one (benchmarks); by default it is loaded here.
    ``profile``: a dict to fill, on success, with ``wall`` (seconds of this call), ``stages`` (seconds per
    :data:`STAGES`, adding up to ``wall``), ``busy`` (seconds per :data:`BUSY`, overlapping them),
    ``written_at`` (``(seconds since the call began, images)`` as each batch is written: the steady-state
    rate), ``images`` and ``decode``. On CUDA a profile synchronises after each timed stage.

    Raises :class:`ImageChangedError` for an image whose bytes differ from the manifest's sha256, and
    :class:`StoreSpaceError` (after removing the unfinished store) when the disk fills up.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.current_stream(device).synchronize()) if cuda and profile is not None else None
    stages = _Stages(sync)
    out_path, dataset_root = Path(out_path), Path(dataset_root)
    mode = resolve_decode(decode, device)
    choice = TokenChoice.from_config(tokens)
    manifest = read_manifest(manifest_path)
    if model is not None and model.spec != spec:
        raise ValueError(f"the model given is {model.spec}, the extraction asks for {spec}")
    vm = load_model(spec, device=device) if model is None else model
    vm.check_layer(layer)
    model_layout = vm.token_layout
    layout = choice.layout(model_layout)
    for stale in store.remove_stale(out_path):
        log.info("removed the unfinished store %s left by an earlier, killed job", stale)
    tmp = store.temporary_path(out_path)
    selected = {split: split_rows(manifest, split) for split in splits}
    for split, rows in selected.items():
        if len(rows) == 0:
            raise ValueError(f"{manifest_path}: split {split!r} has no usable images for dataset '{dataset}'")
    n_images = {s: len(r) for s, r in selected.items()}
    nparts = 1 if part is None else int(part[1])
    index = 0 if part is None else int(part[0])
    if not 0 <= index < nparts:
        raise ValueError(f"part {index} of {nparts} does not exist (parts are 0..{nparts - 1})")
    ranges = {s: store.part_ranges(n, batch_size, nparts)[index] for s, n in n_images.items()}
    attrs = {
        "dataset": dataset,
        "layer": int(layer),
        "model": spec.to_dict(),
        "weights": vm.weights,
        "preprocessing": vm.preprocessing,
        "token_layout": layout,
        "d_model": int(vm.d_model),
        "dtype": "float16",
        "extraction": {
            "decode": mode,
            "autocast": "bfloat16" if cuda and precision == "bf16" else None,
            "tokens": choice.to_dict(),
        },
        "manifest": str(manifest_path),
        "manifest_sha256": manifest_digest(manifest_path),
        "splits": n_images,
        "written": {},
    }
    if part is not None:
        attrs["part"] = {"index": index, "of": nparts, "ranges": {s: list(r) for s, r in ranges.items()}}
    source = f"dataset '{dataset}' (manifest {manifest_path})"
    written = {s: 0 for s in selected}
    writer = _Writer(writer_depth)
    stages.seconds["setup"] += time.perf_counter() - stages.t0
    try:
        with stages("setup"):
            group = store.create_group(tmp, attrs)
            ring = None
            if cuda:  # pinned host buffers for the activations, made once for every split
                shape_BKD = (batch_size, layout["n_tokens"], int(vm.d_model))
                ring = _HostRing(max(1, writer_depth) + 2, shape_BKD, device)
        for split, rows in selected.items():
            with stages("setup"):
                arr = store.create_split(
                    group,
                    split,
                    (n_images[split], layout["n_tokens"], vm.d_model),
                    batch_size,
                    subset_k=choice.k if choice.kept == "subset" else None,
                )
            start, stop = ranges[split]
            if start == stop:
                continue
            _extract_range(
                vm,
                layer,
                group,
                arr,
                split,
                rows.iloc[start:stop],
                start,
                dataset_root,
                dataset,
                choice,
                model_layout,
                mode,
                batch_size,
                num_workers,
                device,
                cuda and precision == "bf16",
                writer,
                written,
                source=source,
                stages=stages,
                ring=ring,
            )
        with stages("writer_wait"):
            writer.close()
        elapsed = time.perf_counter() - stages.t0
        n_done = sum(written.values())
        log.info(
            "%s %s layer %d: %d images in %.1f s (%.1f img/s; store writes busy %.1f s; %s)",
            dataset,
            spec.name,
            layer,
            n_done,
            elapsed,
            n_done / max(elapsed, 1e-9),
            writer.busy_s,
            stages.summary(),
        )
        with stages("publish"):
            group.attrs["written"] = dict(written)
            store.publish(tmp, out_path, n_images, written={s: b - a for s, (a, b) in ranges.items()})
    except BaseException as e:
        writer.abandon()
        if _no_space(e):
            n = sum(b - a for a, b in ranges.values())
            raise _space_error(out_path, tmp, dataset, n, layout["n_tokens"], int(vm.d_model)) from e
        raise
    log.info("published %s", out_path)
    if profile is not None:
        profile.update(stages.report(writer.busy_s), images=sum(written.values()), decode=mode)
    return out_path


def _no_space(e: BaseException | None) -> bool:
    """Whether ``e``, or an exception it was raised from, is a full disk (``ENOSPC``)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _space_error(out_path: Path, tmp: Path, dataset: str, n: int, n_tokens: int, d: int) -> StoreSpaceError:
    """Remove the unfinished store ``tmp``; the error names the store and the bytes it needs: its
    activations, ``n`` images × ``n_tokens`` × ``d`` × 2 bytes (fp16), as ``vitsae plan`` sizes a store."""
    shutil.rmtree(tmp, ignore_errors=True)
    needed = store.store_bytes(n, n_tokens, d)
    free = shutil.disk_usage(out_path.parent).free if out_path.parent.exists() else 0
    return StoreSpaceError(
        errno.ENOSPC,
        f"No space left on device writing store {out_path} (dataset '{dataset}'): it needs about {needed:,} "
        f"bytes ({needed / 1e9:.2f} GB: {n} images x {n_tokens} tokens x {d} dims x 2 bytes, fp16, as "
        f"`vitsae plan` sizes a store) and {free:,} bytes are free there now; the unfinished store {tmp} "
        "was removed. Free that much space (or put the results on a larger disk) and rerun",
    )


def _extract_range(
    vm: VisionModel,
    layer: int,
    group,
    arr,
    split: str,
    rows: pd.DataFrame,
    start: int,
    dataset_root: Path,
    dataset: str,
    choice: TokenChoice,
    model_layout: dict,
    mode: str,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    autocast: bool,
    writer: _Writer,
    written: dict[str, int],
    source: str,
    stages: _Stages,
    ring: _HostRing | None,
) -> None:
    """Images ``start .. start + len(rows)`` of ``split``: model → kept tokens → fp16 → writer thread.
    Each image's bytes are checked against ``rows["sha256"]``; ``source`` names the dataset and manifest."""
    cuda = device.type == "cuda"
    paths = rows["path"].tolist()
    rows_N = rows.index.to_numpy(dtype=np.int64)
    n_total, n_tokens = arr.shape[0], arr.shape[1]
    sha256s = rows["sha256"].tolist()

    def prepare(b: int, packed: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The input thread's work on packed batch ``b``: decode, then resize, crop and normalise."""
        datas = unpack_bytes(*packed)
        lo = b * batch_size
        with stages.busy_in("decode", sync=True):
            images = decode_images(datas, [dataset_root / p for p in paths[lo : lo + len(datas)]], device)
        with stages.busy_in("transform", sync=True):
            return batch_transform(images, vm.preprocessing)

    with stages("setup"):
        loader = _loader(
            dataset_root,
            paths,
            sha256s,
            source,
            vm,
            mode,
            batch_size,
            num_workers,
            pin=cuda and mode == "pil",
        )
        rows_arr = store.writable(group, f"{split}_rows")
        index_arr = store.writable(group, f"{split}_patch_index") if choice.kept == "subset" else None
        batches: Iterable[torch.Tensor] = iter(loader)  # starts the workers
        producer = None
        if mode != "pil":
            batches = producer = _Producer(batches, prepare, stages, device)
    t0 = time.perf_counter()
    try:
        inputs = iter(batches)
        for b in itertools.count():
            with stages("input_wait"):
                x_BCHW = next(inputs, None)
                if x_BCHW is not None and mode == "pil":
                    x_BCHW = x_BCHW.to(device, non_blocking=cuda)
            if x_BCHW is None:
                break
            lo = b * batch_size
            hi = lo + x_BCHW.shape[0]
            with (
                stages("forward", sync=True),
                torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast),
            ):
                acts_BTD = vm.block_output(x_BCHW, layer)
            if acts_BTD.shape[1:] != (model_layout["n_tokens"], vm.d_model):
                raise RuntimeError(
                    f"{vm.spec.name} layer {layer}: got {tuple(acts_BTD.shape)}, layout says {model_layout}"
                )
            slot = None
            if ring is not None:
                with stages("writer_wait"):
                    slot = ring.acquire(writer)
            with stages("copy", sync=True):
                kept_BKD, index_BK = select_tokens(acts_BTD, rows_N[lo:hi], choice, model_layout)
                kept_BKD = kept_BKD.to(torch.float16)
                if kept_BKD.shape[1] != n_tokens:
                    raise RuntimeError(f"kept {kept_BKD.shape[1]} tokens per image, the store has {n_tokens}")
                finite_B = torch.isfinite(kept_BKD).flatten(1).all(dim=1)
                event = None
                if ring is not None:  # into a pinned buffer without waiting; the writer waits on the event
                    host_BKD = ring.acts[slot][: hi - lo].copy_(kept_BKD, non_blocking=True)
                    finite_B = ring.finite[slot][: hi - lo].copy_(finite_B, non_blocking=True)
                    event = ring.events[slot]
                    event.record(torch.cuda.current_stream(device))
                else:
                    host_BKD = kept_BKD

            def write(
                host_BKD=host_BKD, finite_B=finite_B, event=event, slot=slot, lo=lo, hi=hi, index_BK=index_BK
            ) -> None:
                try:
                    if event is not None:
                        event.synchronize()
                    if not bool(finite_B.all()):
                        bad = [paths[lo + i] for i in torch.nonzero(~finite_B).flatten().tolist()]
                        raise FloatingPointError(
                            f"{vm.spec.name} layer {layer} gave NaN/Inf (or fp16 overflow) for {len(bad)} image(s) "
                            f"of {dataset}/{split}, e.g. {bad[:5]}; no store was published"
                        )
                    arr[start + lo : start + hi] = host_BKD.numpy()
                    rows_arr[start + lo : start + hi] = rows_N[lo:hi]
                    if index_arr is not None:
                        index_arr[start + lo : start + hi] = index_BK.astype(np.int16)
                    written[split] += hi - lo
                    stages.wrote(hi - lo)
                finally:
                    if slot is not None:
                        ring.release(slot)

            with stages("writer_wait"):
                writer.submit(write)
            if b % 10 == 0 or hi == len(paths):
                rate = hi / max(time.perf_counter() - t0, 1e-9)
                log.info(
                    "%s/%s %s layer %d: images %d..%d of %d (%.1f img/s)",
                    dataset,
                    split,
                    vm.spec.name,
                    layer,
                    start,
                    start + hi,
                    n_total,
                    rate,
                )
    finally:
        if producer is not None:
            producer.close()
