"""Zarr v3 activation stores: the on-disk contract between extraction and every later stage.

One store per (dataset, model, layer): a Zarr v3 *group* at
``results/activations/{dataset}/{model}/layer{layer}.zarr`` holding one array per split
(``train``, ``val``, ...), each ``float16 [images, tokens, d]`` with one chunk per extraction
batch of images and all kept tokens of an image in that chunk, plus per-image arrays chunked the
same way: ``{split}_rows`` (int64 [images]), the manifest row of each image, and, for a store that
keeps a seeded subset of patches, ``{split}_patch_index`` (int16 [images, k]), the grid index
(row * grid_w + col) of each kept patch. The group's attrs hold::

    complete: true                      # set last, just before publishing
    token_layout: {n_tokens, n_prefix, n_registers, cls_index, grid: [h, w],
                   kept: all | patches | cls | subset, model_tokens, subset: {k, seed} (subset only)}
    model: {...}, preprocessing: {...}, layer: int, dataset: str, manifest_sha256: str,
    splits: {split: n_images}

Every array has dimension names (``{split}_image``, ``token``, ``dim``: :func:`dimensions`) and a crc32c
checksum after each chunk's bytes (:func:`checksum_codecs`; :func:`check_chunks` reads them all), and
the published group's ``zarr.json`` holds every array's metadata (consolidated), so that third-party
readers (``xarray.open_zarr``) open a store without listing its directory.

Every array is written with zarr's ``write_empty_chunks`` on (:data:`WRITE_CONFIG`): with a fill value
(NaN, -1) and the default (off), zarr scans each chunk before writing it to see whether it equals the
fill value, single-threaded, 0.4-0.8 s per 101 MB fp16 chunk against 0.02-0.04 s without the scan
(shared/FACTS.md; ``bench/store_write.py``). The setting is not stored in the metadata: open an array for
writing with :func:`writable`. Every chunk written is therefore a file, which :func:`assemble` relies on.

``kept`` says which of the model's ``model_tokens`` tokens (CLS, registers, patches) the store holds;
:func:`token_slice` turns a token kind into positions of *this* store, and refuses a kind the store
does not hold. A store without ``kept`` (written before it existed) holds all tokens.

A store is written under a temporary name beside its final path and renamed into place only
after validation (:func:`publish`), so a killed job never leaves a store that a reader accepts:
:func:`open_store` refuses anything without ``complete: true``.

Parallel parts: a large extraction is split into parts (:func:`part_ranges`), each written by its
own job as a full-shape store holding only its chunk range of every split (attrs ``part: {index,
of, ranges}``). :func:`assemble` hard-links the parts' chunk files into one ordinary store, so
readers never see parts and the assembled store costs no extra disk.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from vitsae.atomic import partial_dir

TOKEN_KINDS = ("all", "patches", "cls")
#: What a store may keep of each image's tokens (the config's ``tokens``; ``subset`` is k patches).
KEPT_KINDS = ("all", "patches", "cls", "subset")
#: Attrs that may differ between the parts of one store (everything else must agree).
PART_ATTRS = ("part", "written", "complete")


#: zarr's runtime config of every array written here: no scan of each chunk for "all fill value".
WRITE_CONFIG = {"write_empty_chunks": True}


class StoreError(RuntimeError):
    """A store is missing, incomplete or inconsistent, or lacks the tokens a reader asks for."""


def token_slice(layout: dict, kind: str) -> slice:
    """Token positions of ``kind`` ('all', 'patches' or 'cls') in a store with ``layout``.

    A store that keeps only patches (or a subset of them) serves 'patches' as all its tokens and
    has no CLS token; a CLS-only store serves only 'cls'. Asking for a kind the store does not
    hold raises :class:`StoreError` (never a silent substitute).
    """
    if kind not in TOKEN_KINDS:
        raise ValueError(f"token kind {kind!r} is not one of {TOKEN_KINDS}")
    kept = layout.get("kept", "all")
    if kept == "all":
        if kind == "all":
            return slice(0, layout["n_tokens"])
        if kind == "patches":
            return slice(layout["n_prefix"], layout["n_tokens"])
        i = layout["cls_index"]
        return slice(i, i + 1)
    serves = {"patches": ("patches",), "subset": ("patches",), "cls": ("cls",)}
    if kept not in serves:
        raise StoreError(f"token_layout.kept is {kept!r}, not one of {KEPT_KINDS}: the store is damaged")
    if kind not in serves[kept]:
        what = {
            "patches": "only patch tokens",
            "subset": f"only a subset of {layout.get('subset', {}).get('k')} patch tokens per image",
            "cls": "only the CLS token",
        }[kept]
        raise StoreError(
            f"this store keeps {what} (extraction tokens: {kept}), so it has no {kind!r} tokens; "
            f"read token kind {serves[kept][0]!r} (e.g. set the sweep's token_kind), or re-extract with tokens: all"
        )
    return slice(0, layout["n_tokens"])


def open_store(path: str | os.PathLike) -> zarr.Group:
    """Open a published store read-only; refuse a missing or unfinished one with a clear message."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"activation store {path} does not exist; run the extraction rule that makes it")
    group = zarr.open_group(str(path), mode="r")
    if group.attrs.get("complete") is not True:
        raise StoreError(
            f"activation store {path} is incomplete (no 'complete: true' in its attrs); "
            "delete it and rerun extraction"
        )
    if "part" in group.attrs:
        part = group.attrs["part"]
        raise StoreError(
            f"{path} is part {part['index']} of {part['of']} of an extraction, not a whole store; "
            "read the assembled store (results/activations/{dataset}/{model}/layer{layer}.zarr)"
        )
    return group


def split_array(group: zarr.Group, split: str) -> zarr.Array:
    splits = group.attrs.get("splits", {})
    if split not in splits:
        raise StoreError(f"store {group.store} has no split {split!r}; it has {sorted(splits)}")
    return group[split]


def patch_index(group: zarr.Group, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Grid index (row * grid_w + col) of every stored patch token of images ``start:stop``, ``[B, P]``.

    For readers that need where a patch token sits in the image (patch maps): the stored patch
    token ``j`` of image ``i`` is grid cell ``patch_index(...)[i - start, j]``. A store that keeps
    all tokens or all patches gives ``arange(h * w)`` per image; a subset store its own array.
    """
    layout = dict(group.attrs["token_layout"])
    arr = split_array(group, split)
    stop = arr.shape[0] if stop is None else stop
    kept = layout.get("kept", "all")
    if kept == "subset":
        return np.asarray(group[f"{split}_patch_index"][start:stop], dtype=np.int64)
    if kept == "cls":
        raise StoreError(f"store {group.store} keeps only the CLS token; it has no patch tokens")
    h, w = layout["grid"]
    return np.broadcast_to(np.arange(h * w, dtype=np.int64), (stop - start, h * w))


def chunk_ranges(n_images: int, chunk_images: int) -> list[tuple[int, int]]:
    """[start, stop) image ranges of the chunks of an array with ``n_images`` rows."""
    return [(s, min(s + chunk_images, n_images)) for s in range(0, n_images, chunk_images)]


def part_ranges(n_images: int, chunk_images: int, nparts: int) -> list[tuple[int, int]]:
    """[start, stop) image range of each of ``nparts`` parts: whole chunks, as even as chunks allow.

    Part ``i`` gets chunks ``floor(i * C / N) .. floor((i + 1) * C / N)`` of the split's ``C`` chunks,
    so ranges are disjoint, cover the split, and every part writes whole chunks only. A part may get
    no chunk of a small split (an empty range).
    """
    if nparts < 1:
        raise ValueError(f"nparts must be >= 1, got {nparts}")
    n_chunks = len(chunk_ranges(n_images, chunk_images))
    bounds = [min(i * n_chunks // nparts * chunk_images, n_images) for i in range(nparts + 1)]
    bounds[-1] = n_images
    return [(bounds[i], bounds[i + 1]) for i in range(nparts)]


def iter_chunks(
    array: zarr.Array, order: np.ndarray | None = None, tokens: slice = slice(None)
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_image, acts_BTD)`` for each whole chunk, in ``order`` (chunk indices) if given.

    Reading whole chunks is what keeps a Zarr store fast (shared/FACTS.md: random single-image
    reads are 20-100x slower than chunk reads).
    """
    ranges = chunk_ranges(array.shape[0], array.chunks[0])
    indices = range(len(ranges)) if order is None else order
    for i in indices:
        start, stop = ranges[int(i)]
        yield start, array[start:stop, tokens]


def nonfinite_rows(tokens_ND: np.ndarray) -> np.ndarray:
    """Whether each row holds a NaN/Inf. For fp16 an integer test of the exponent bits (all ones =
    Inf/NaN): NumPy does fp16 arithmetic in software, so ``np.isfinite`` on it is slow."""
    if tokens_ND.dtype == np.float16:
        return ((tokens_ND.view(np.uint16) & 0x7FFF) >= 0x7C00).any(axis=1)
    return ~np.isfinite(tokens_ND).all(axis=1)


def temporary_path(final: Path) -> Path:
    """Where a store is written before it is published (:func:`publish` validates it, then renames it):
    beside ``final``, as :func:`vitsae.atomic.partial_dir` names it, so the rename is atomic."""
    return partial_dir(final)


def remove_stale(final: Path) -> list[Path]:
    """Delete unfinished stores that killed jobs left beside ``final``; returns what was removed."""
    stale = sorted(final.parent.glob(f".{final.name}.partial-*")) if final.parent.exists() else []
    for path in stale:
        shutil.rmtree(path)
    return stale


def create_group(tmp: Path, attrs: dict) -> zarr.Group:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    group.attrs.update({**attrs, "complete": False})
    return group


def create_split(
    group: zarr.Group, split: str, shape: tuple[int, int, int], chunk_images: int, subset_k: int | None = None
) -> zarr.Array:
    """An fp16 ``[images, tokens, d]`` array, one chunk per ``chunk_images`` images, with its per-image
    arrays (``{split}_rows``; ``{split}_patch_index`` when ``subset_k`` is given) chunked the same way,
    so that a part of the images writes whole chunks of every array.

    Dimension names (:data:`dimensions`): ``{split}_image``, ``token``, ``dim``, so that xarray opens the
    store as a Dataset (each split's image axis has its own name, as splits differ in length).

    fp16 activations compress by ~8% at best (shared/FACTS.md), so no compression, only a crc32c
    checksum appended to every chunk (:func:`checksum_codecs`): a chunk changed on disk fails when it is read,
    and :func:`check_chunks` names it.
    """
    n, t, d = shape
    b = max(1, min(chunk_images, n))
    image, token, patch = dimensions(split, t, subset_k)
    arr = group.create_array(split, shape=shape, chunks=(b, t, d), dtype="float16", compressors=checksum_codecs(),
                             fill_value=np.nan, dimension_names=(image, token, "dim"), config=WRITE_CONFIG)  # fmt: skip
    group.create_array(f"{split}_rows", shape=(n,), chunks=(b,), dtype="int64", compressors=checksum_codecs(),
                       fill_value=-1, dimension_names=(image,), config=WRITE_CONFIG)  # fmt: skip
    if subset_k is not None:
        group.create_array(f"{split}_patch_index", shape=(n, subset_k), chunks=(b, subset_k), dtype="int16",
                           compressors=checksum_codecs(), fill_value=-1, dimension_names=(image, patch),
                           config=WRITE_CONFIG)  # fmt: skip
    return arr


def writable(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group``, opened to be written with :data:`WRITE_CONFIG` (zarr keeps a runtime
    config per opened array, not in the metadata, so ``group[name]`` would scan every chunk again)."""
    return group[name].with_config(WRITE_CONFIG)


def checksum_codecs() -> list:
    """The codecs after the bytes codec of every array: a crc32c of the chunk's bytes, appended to it."""
    return [Crc32cCodec()]


def dimensions(split: str, n_tokens: int, subset_k: int | None = None) -> tuple[str, str, str]:
    """The dimension names of a split's arrays: its images (``{split}_image``: splits differ in length),
    the tokens of an image (``token``) and, for ``{split}_patch_index``, its columns: ``token`` as well when
    the store keeps exactly those patches (one grid index per kept token), else ``patch``."""
    return f"{split}_image", "token", "token" if subset_k in (None, n_tokens) else "patch"


def check_chunks(path: str | os.PathLike) -> tuple[int, list[str]]:
    """Read every chunk file of the store at ``path`` and check it against its crc32c (the last 4 bytes,
    little-endian, over the bytes before them; arrays whose codecs have ``crc32c``). Returns the number of
    chunks checked and one line per chunk that fails, naming its file."""
    path = Path(path)
    checked, bad = 0, []
    for meta in sorted(path.rglob("zarr.json")):
        info = json.loads(meta.read_text())
        if info.get("node_type") != "array" or not any(
            c.get("name") == "crc32c" for c in info.get("codecs", [])
        ):
            continue
        for chunk in sorted(p for p in (meta.parent / "c").rglob("*") if p.is_file()):
            data = chunk.read_bytes()
            checked += 1
            stored = int.from_bytes(data[-4:], "little") if len(data) >= 4 else None
            if stored != google_crc32c.value(data[:-4]):
                bad.append(f"corrupt chunk: {chunk} (its crc32c does not match its bytes)")
    return checked, bad


def publish(tmp: Path, final: Path, expected: dict[str, int], written: dict[str, int] | None = None) -> None:
    """Validate the store written at ``tmp`` and rename it to ``final``.

    ``expected`` maps split → number of images the manifest says it must hold; ``written`` (default:
    the same) how many of them this store must have written (a part writes only its range). The
    arrays are created with NaN as fill value, so a chunk that was never written reads as NaN.
    """
    group = zarr.open_group(str(tmp), mode="r+")
    written = expected if written is None else written
    for split, n in expected.items():
        if split not in group:
            raise StoreError(f"{final}: split {split!r} was never written")
        arr = group[split]
        if arr.shape[0] != n:
            raise StoreError(f"{final}: split {split!r} holds {arr.shape[0]} images, the manifest has {n}")
        done = group.attrs.get("written", {}).get(split, 0)
        if done != written[split]:
            raise StoreError(f"{final}: split {split!r} has {done} of {written[split]} images written")
    group.attrs["complete"] = True
    # Every array's metadata in the group's zarr.json: readers (zarr, xarray) then never list the
    # directory, where Snakemake puts its .snakemake_timestamp after the job.
    with warnings.catch_warnings():  # "consolidated metadata is not part of the v3 spec" (zarr 3.1)
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(tmp))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` as ``dst``; copy where a link cannot be made (another filesystem)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(src, dst)


def _chunk_files(array_dir: Path, chunk: int) -> list[Path]:
    """The files holding image-chunk ``chunk`` of the array at ``array_dir`` (default v3 chunk keys)."""
    root = array_dir / "c" / str(chunk)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def assemble(parts: Sequence[str | os.PathLike], final: str | os.PathLike) -> Path:
    """Join the published parts of one extraction into the ordinary store ``final``.

    Checks that the parts agree on everything but their own range (same model, weights, manifest,
    layout, splits), that their ranges tile every split in order, and that every chunk of a range
    is on disk; then hard-links each part's chunk files into a new store (copy across filesystems)
    with the parts' shared metadata, and publishes it like any store (validated, atomic rename).
    """
    final = Path(final)
    groups = []
    for path in parts:
        path = Path(path)
        if not path.exists():
            raise StoreError(f"part {path} does not exist; run its extract_part job")
        g = zarr.open_group(str(path), mode="r")
        if g.attrs.get("complete") is not True or "part" not in g.attrs:
            raise StoreError(
                f"{path} is not a finished extraction part (attrs complete/part); delete it and rerun it"
            )
        groups.append((path, g))
    groups.sort(key=lambda pg: pg[1].attrs["part"]["index"])
    first_path, first = groups[0]
    shared = {k: v for k, v in first.attrs.asdict().items() if k not in PART_ATTRS}
    nparts = first.attrs["part"]["of"]
    if [g.attrs["part"]["index"] for _, g in groups] != list(range(nparts)):
        raise StoreError(
            f"{final}: got parts {[str(p) for p, _ in groups]}, need parts 0..{nparts - 1} of {nparts}"
        )
    for path, g in groups[1:]:
        attrs = {k: v for k, v in g.attrs.asdict().items() if k not in PART_ATTRS}
        if attrs != shared or g.attrs["part"]["of"] != nparts:
            diff = sorted(k for k in set(attrs) | set(shared) if attrs.get(k) != shared.get(k))
            raise StoreError(
                f"{path} and {first_path} disagree on {diff or ['part.of']}: they are not parts of one "
                "extraction; delete the parts and rerun extraction"
            )
    splits: dict[str, int] = dict(shared["splits"])
    remove_stale(final)
    tmp = temporary_path(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    # the metadata (zarr.json of the group and of every array) comes from part 0; chunks from each part
    for meta in sorted(first_path.rglob("zarr.json")):
        dst = tmp / meta.relative_to(first_path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(meta, dst)
    arrays = sorted(name for name, _ in first.arrays())
    for split, n in splits.items():
        cursor = 0
        for path, g in groups:
            start, stop = g.attrs["part"]["ranges"][split]
            if start != cursor or g.attrs["written"][split] != stop - start:
                raise StoreError(
                    f"{path}: split {split!r} covers images {start}..{stop} "
                    f"(written {g.attrs['written'][split]}), expected to start at {cursor}"
                )
            cursor = stop
            for name in (a for a in arrays if a == split or a.startswith(f"{split}_")):
                chunk = g[name].chunks[0]
                for c in range(start // chunk, -(-stop // chunk)):
                    files = _chunk_files(path / name, c)
                    if not files:
                        raise StoreError(
                            f"{path}: chunk {c} of {name!r} is missing; delete the part and rerun it"
                        )
                    for f in files:
                        _link(f, tmp / f.relative_to(path))
        if cursor != n:
            raise StoreError(f"{final}: the parts cover {cursor} of {n} images of split {split!r}")
    group = zarr.open_group(str(tmp), mode="r+")
    group.attrs.put({**shared, "written": dict(splits), "complete": False})
    publish(tmp, final, splits)
    return final


def write_arrays(
    path: str | os.PathLike, attrs: dict, arrays: dict[str, np.ndarray], chunk_images: int
) -> Path:
    """Write a complete store from in-memory arrays (tests, synthetic data), through :func:`publish`."""
    final = Path(path)
    tmp = temporary_path(final)
    group = create_group(tmp, {**attrs, "splits": {k: int(v.shape[0]) for k, v in arrays.items()}})
    for split, acts in arrays.items():
        arr = create_split(group, split, acts.shape, chunk_images)
        arr[:] = acts.astype(np.float16)
        writable(group, f"{split}_rows")[:] = np.arange(acts.shape[0])
    group.attrs["written"] = {k: int(v.shape[0]) for k, v in arrays.items()}
    publish(tmp, final, {k: int(v.shape[0]) for k, v in arrays.items()})
    return final


def store_bytes(n_images: int, n_tokens: int, d: int) -> int:
    """The bytes of a store's activations: ``n_images`` × ``n_tokens`` × ``d`` fp16 values (what
    ``vitsae plan`` reports and a full disk's error asks for)."""
    return n_images * n_tokens * d * 2


def data_key(path: str | os.PathLike, split: str, token_kind: str) -> str:
    """What a reader of ``split``'s ``token_kind`` tokens gets from the store at ``path``, as a sha256: the
    store's metadata (the group's ``zarr.json``, whose attrs name the manifest's digest, the model and
    its weights, the token layout and the image counts, and the split's ``zarr.json``: shape, chunks,
    codecs), the split and the token kind. A store rebuilt from other images or another model gets
    another key; it reads no chunk, so it costs milliseconds at any size."""
    path = Path(path)
    h = hashlib.sha256(f"{split}\0{token_kind}\0".encode())
    for meta in (path / "zarr.json", path / split / "zarr.json"):
        try:
            h.update(meta.read_bytes() + b"\0")
        except FileNotFoundError:
            raise StoreError(f"{meta} does not exist: {path} is not a store with split {split!r}") from None
    return h.hexdigest()


def attrs_json(path: str | os.PathLike) -> dict:
    """The root attrs of the store at ``path`` as plain JSON (no zarr needed)."""
    return json.loads((Path(path) / "zarr.json").read_text())["attributes"]
