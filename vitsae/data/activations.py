"""Extraction: manifest × model × layer → one Zarr activation store (see :mod:`vitsae.data.store` for the layout).

The model runs only up to the requested block. One extraction batch is one Zarr chunk, so every
write is chunk-aligned (FACTS.md: misaligned writes are >10x slower). The store is written under
a temporary name, validated, and only then renamed into place.

The input pipeline keeps the accelerator busy (shared/FACTS.md: a GPU runs ViT-B/14 at ~6,000
img/s, CPU JPEG decoding on 16 cores gives ~2,000):

* DataLoader workers read each image's raw bytes and check their sha256 against the manifest's: an
  image changed since the manifest was built stops the extraction (:class:`ImageChangedError`, naming
  it). Hashing the bytes already read costs little beside decoding them (bench/extract.py,
  ``sha256_vs_decode``). ``decode="pil"`` (the default on CPU) decodes them in the workers with PIL
  and applies the model's own transform (``VisionModel.transform``).
  ``decode="tensor"`` (the default on CUDA) decodes the batch with ``torchvision.io.decode_jpeg`` on
  the compute device (nvJPEG on a GPU) and applies :func:`tensor_transform`, the same resize, crop
  and normalisation in torch ops; an image nvJPEG cannot decode (CMYK, a PNG named .JPEG) falls back
  to PIL. tests/test_activations.py bounds the difference between the two paths.
* On CUDA: pinned host memory, non-blocking copies both ways, bf16 autocast (``precision``).
* A writer thread with a bounded queue writes batch i while the model computes batch i+1; an error
  there (including NaN/Inf in the activations) is raised in the calling thread, and nothing is published.
  A full disk (``ENOSPC``) removes the unfinished store and raises :class:`StoreSpaceError`, naming the
  store and the space it needs.

Parts: ``part=(i, n)`` writes only the chunk range :func:`vitsae.data.store.part_ranges` gives part i of
every split, as a published *part* store; :func:`vitsae.data.store.assemble` joins the parts into the one
store readers open. Chunk boundaries are the same either way, so n parts give a store bitwise equal
to one.

Token choice (:class:`TokenChoice`): all tokens, patches only, CLS only, or a seeded subset of k
patches per image (chosen per image from ``(seed, manifest row)``, so independent of batching and parts).
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import math
import queue
import shutil
import threading
import time
from collections.abc import Callable
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

    def __getitem__(self, i: int) -> torch.Tensor:
        _, data = self._read(i)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _as_list(batch: list) -> list:
    return batch


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
    test of this function checks the same arithmetic a GPU runs.
    """
    _, s_h, s_w = preprocessing["input_size"]
    if s_h != s_w or preprocessing.get("crop_mode", "center") != "center":
        raise ValueError(f"tensor_transform supports square centre crops only, got {preprocessing}")
    scale = math.floor(s_h / float(preprocessing["crop_pct"]))
    h, w = image_CHW.shape[-2:]
    new_h, new_w = (int(scale * h / w), scale) if w <= h else (scale, int(scale * w / h))
    x_1CHW = image_CHW[None].float()
    if (new_h, new_w) != (h, w):
        mode = {"bicubic": "bicubic", "bilinear": "bilinear"}[preprocessing["interpolation"]]
        x_1CHW = torch.nn.functional.interpolate(
            x_1CHW, size=(new_h, new_w), mode=mode, antialias=True, align_corners=False
        )
        x_1CHW = x_1CHW.round_().clamp_(0, 255)
    top, left = round((new_h - s_h) / 2.0), round((new_w - s_w) / 2.0)
    x_CHW = x_1CHW[0, :, top : top + s_h, left : left + s_w] / 255.0
    mean_C11, std_C11 = _mean_std(tuple(preprocessing["mean"]), tuple(preprocessing["std"]), x_CHW.device)
    return (x_CHW - mean_C11) / std_C11


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
# Extraction


def resolve_decode(decode: str, device: str) -> str:
    """``auto`` is ``tensor`` on CUDA and ``pil`` on the CPU."""
    if decode == "auto":
        return "tensor" if str(device).startswith("cuda") else "pil"
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
    if mode == "pil":
        data = _Images(dataset_root, paths, sha256s, source, vm.transform)
        collate = None
    else:
        data, collate = _JpegBytes(dataset_root, paths, sha256s, source), _as_list
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
) -> Path:
    """Write ``out_path`` (a Zarr v3 group, one fp16 array per split) and publish it when complete.

    ``part=(i, n)``: write only part i of n (chunk-aligned image ranges of every split) as a part
    store, to be joined by :func:`vitsae.data.store.assemble`. ``tokens``: see :class:`TokenChoice`.
    ``decode``: ``auto`` (tensor on CUDA, PIL on CPU), ``pil`` or ``tensor``. ``precision``: the
    autocast dtype on CUDA (``bf16``) or none (``fp32``); the CPU always computes in fp32. ``model``: the
    loaded model of ``spec`` on ``device``, to reuse one (benchmarks); by default it is loaded here.

    Raises :class:`ImageChangedError` for an image whose bytes differ from the manifest's sha256, and
    :class:`StoreSpaceError` (after removing the unfinished store) when the disk fills up.
    """
    out_path, dataset_root = Path(out_path), Path(dataset_root)
    mode = resolve_decode(decode, device)
    cuda = str(device).startswith("cuda")
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
    t_start = time.perf_counter()
    try:
        group = store.create_group(tmp, attrs)
        for split, rows in selected.items():
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
            )
        writer.close()
        elapsed = time.perf_counter() - t_start
        n_done = sum(written.values())
        log.info(
            "%s %s layer %d: %d images in %.1f s (%.1f img/s; store writes busy %.1f s)",
            dataset,
            spec.name,
            layer,
            n_done,
            elapsed,
            n_done / max(elapsed, 1e-9),
            writer.busy_s,
        )
        group.attrs["written"] = dict(written)
        store.publish(tmp, out_path, n_images, written={s: b - a for s, (a, b) in ranges.items()})
    except BaseException as e:
        writer.abandon()
        if _no_space(e):
            n = sum(b - a for a, b in ranges.values())
            raise _space_error(out_path, tmp, dataset, n, layout["n_tokens"], int(vm.d_model)) from e
        raise
    log.info("published %s", out_path)
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
    device: str,
    autocast: bool,
    writer: _Writer,
    written: dict[str, int],
    source: str,
) -> None:
    """Images ``start .. start + len(rows)`` of ``split``: model → kept tokens → fp16 → writer thread.
    Each image's bytes are checked against ``rows["sha256"]``; ``source`` names the dataset and manifest."""
    cuda = str(device).startswith("cuda")
    paths = rows["path"].tolist()
    rows_N = rows.index.to_numpy(dtype=np.int64)
    n_total, n_tokens = arr.shape[0], arr.shape[1]
    sha256s = rows["sha256"].tolist()
    loader = _loader(dataset_root, paths, sha256s, source, vm, mode, batch_size, num_workers, pin=cuda)
    rows_arr = group[f"{split}_rows"]
    index_arr = group[f"{split}_patch_index"] if choice.kept == "subset" else None
    t0, done = time.perf_counter(), 0
    for b, batch in enumerate(loader):
        lo = b * batch_size
        hi = lo + (len(batch) if isinstance(batch, list) else batch.shape[0])
        if mode == "pil":
            x_BCHW = batch.to(device, non_blocking=cuda)
        else:
            images = decode_images(batch, [dataset_root / p for p in paths[lo:hi]], device)
            x_BCHW = torch.stack([tensor_transform(im, vm.preprocessing) for im in images])
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=autocast):
            acts_BTD = vm.block_output(x_BCHW, layer)
        if acts_BTD.shape[1:] != (model_layout["n_tokens"], vm.d_model):
            raise RuntimeError(
                f"{vm.spec.name} layer {layer}: got {tuple(acts_BTD.shape)}, layout says {model_layout}"
            )
        kept_BKD, index_BK = select_tokens(acts_BTD, rows_N[lo:hi], choice, model_layout)
        kept_BKD = kept_BKD.to(torch.float16)
        if kept_BKD.shape[1] != n_tokens:
            raise RuntimeError(f"kept {kept_BKD.shape[1]} tokens per image, the store has {n_tokens}")
        finite_B = torch.isfinite(kept_BKD).flatten(1).all(dim=1)
        event = None
        if cuda:  # copy into pinned host memory without waiting; the writer waits on the event
            host_BKD = torch.empty(kept_BKD.shape, dtype=torch.float16, pin_memory=True)
            host_BKD.copy_(kept_BKD, non_blocking=True)
            finite_B = torch.empty(finite_B.shape, dtype=torch.bool, pin_memory=True).copy_(
                finite_B, non_blocking=True
            )
            event = torch.cuda.Event()
            event.record()
        else:
            host_BKD = kept_BKD

        def write(host_BKD=host_BKD, finite_B=finite_B, event=event, lo=lo, hi=hi, index_BK=index_BK) -> None:
            if event is not None:
                event.synchronize()
            if not bool(finite_B.all()):
                bad = [paths[lo + i] for i in torch.nonzero(~finite_B).flatten().tolist()]
                raise FloatingPointError(
                    f"{vm.spec.name} layer {layer} gave NaN/Inf (or fp16 overflow) for {len(bad)} image(s) of "
                    f"{dataset}/{split}, e.g. {bad[:5]}; no store was published"
                )
            arr[start + lo : start + hi] = host_BKD.numpy()
            rows_arr[start + lo : start + hi] = rows_N[lo:hi]
            if index_arr is not None:
                index_arr[start + lo : start + hi] = index_BK.astype(np.int16)
            written[split] += hi - lo

        writer.submit(write)
        done = hi
        if b % 10 == 0 or hi == len(paths):
            rate = done / max(time.perf_counter() - t0, 1e-9)
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
