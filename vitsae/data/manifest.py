"""Per-dataset image manifests: one Parquet table listing every image a later stage may read.

``build_manifest`` walks a dataset root in one of three layouts and fully decodes every image:

- ``imagenet``:    ``root/<split dir>/<wnid>/*.JPEG``; label = wnid
- ``inat2021``:    ``root/<split dir>/<species dir>/*.jpg`` where the species directory is
                   ``<id:05d>_<Kingdom>_<Phylum>_<Class>_<Order>_<Family>_<Genus>_<epithet>``;
                   label = the species directory name; taxonomy parsed from it, common_name and
                   supercategory from ``root/<split dir>.json`` when that file exists ("" otherwise)
- ``imagefolder``: ``root/<split dir>/<class>/*``; label = class folder name

Images are files ending in .jpg, .jpeg or .png (any case); hidden files and folders are skipped. A
broken symbolic link (or any image file that cannot be read) is an image that cannot be read: a
corrupt row, as an image that does not decode is (``on_corrupt``). Every class folder and image name must
be valid UTF-8 (the manifest stores them as Parquet strings); the listing checks this before any image
is read.
Columns: ``path`` (posix, relative to root), ``split``, ``label``, ``width``, ``height``, ``sha256``
(of the file bytes), ``status`` ("ok" | "corrupt"), ``error`` ("" when ok); inat2021 adds ``kingdom,
phylum, class, order, family, genus, species`` ("Genus epithet"), ``category_id``, ``common_name``,
``supercategory``. Rows are sorted by split (in the order given), label, path; the row number is the
image's id in every later artifact (see :mod:`vitsae.data.store`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vitsae.atomic import atomic_write

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BASE_COLUMNS = ["path", "split", "label", "width", "height", "sha256", "status", "error"]
INAT_COLUMNS = [
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "species",
    "category_id",
    "common_name",
    "supercategory",
]
METADATA_KEY = b"vitsae.manifest"
MANIFEST_VERSION = 1

_WNID = re.compile(r"^n\d{8}$")
_INAT_ID = re.compile(r"^\d{5}$")
_BATCH = 512  # images decoded per thread-pool round; bounds memory and the work lost on an error


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1K wnids in class-index order, from timm's ``imagenet_synsets.txt``."""
    spec = importlib.util.find_spec("timm")  # locates the file without importing timm (and torch)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "timm is not installed; it ships the ImageNet-1K class list (imagenet_synsets.txt)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / "imagenet_synsets.txt"
    text = path.read_text()
    wnids = [w.strip() for w in text.splitlines() if w.strip()]
    if len(wnids) != 1000:
        raise ValueError(f"timm's imagenet_synsets.txt lists {len(wnids)} classes, expected 1000")
    return wnids


class CorruptImageError(ValueError):
    """An image file cannot be decoded."""


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _visible(entries: Iterator[Path]) -> list[Path]:
    return sorted((p for p in entries if not p.name.startswith(".")), key=lambda p: p.name)


def _check_name(dataset: str, entry: Path) -> None:
    """Raise when ``entry``'s name is not valid UTF-8 (undecodable bytes arrive as surrogate escapes)."""
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"dataset '{dataset}': directory {entry.parent} holds a name that is not valid UTF-8: "
            f"{entry.name!a}; rename it to UTF-8 (e.g. convmv -f latin1 -t utf8 --notest), the manifest "
            "stores names as UTF-8 text"
        ) from None


def _is_image(entry: Path) -> bool:
    """An image file by its suffix: a file, or a symbolic link whose target is missing (a corrupt row)."""
    return entry.suffix.lower() in IMAGE_SUFFIXES and (
        entry.is_file() or (entry.is_symlink() and not entry.exists())
    )


def parse_inat_dir(name: str, dataset: str = "?") -> dict:
    """Taxonomy of an iNat2021 species directory name ``<id:05d>_<Kingdom>_..._<Genus>_<epithet>``."""
    parts = name.split("_")
    if len(parts) != 8 or not _INAT_ID.match(parts[0]):
        raise ValueError(
            f"dataset '{dataset}': directory '{name}' is not an iNat2021 species directory "
            "(expected 8 '_'-separated parts: <id:05d>_<Kingdom>_<Phylum>_<Class>_<Order>_<Family>_<Genus>"
            "_<epithet>, e.g. 00000_Animalia_Arthropoda_Insecta_Lepidoptera_Nymphalidae_Vanessa_atalanta); "
            "check datasets.{dataset}.format and the split directories"
        )
    category_id, kingdom, phylum, klass, order, family, genus, epithet = parts
    return {
        "kingdom": kingdom,
        "phylum": phylum,
        "class": klass,
        "order": order,
        "family": family,
        "genus": genus,
        "species": f"{genus} {epithet}",
        "category_id": int(category_id),
    }


def _inat_categories(json_path: Path, dataset: str) -> dict[str, dict]:
    """image_dir_name -> category from an iNat2021 COCO-style JSON (empty if the file is absent)."""
    if not json_path.is_file():
        return {}
    try:
        categories = json.loads(json_path.read_bytes())["categories"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"dataset '{dataset}': {json_path} is not an iNat2021 annotation file with 'categories' "
            f"({type(e).__name__}: {e}); replace it with the original file or remove it"
        ) from e
    return {c["image_dir_name"]: c for c in categories if "image_dir_name" in c}


def _list_split(name: str, fmt: str, root: Path, split: str, dir_name: str) -> list[tuple[str, Path]]:
    """(label, file) pairs of one split, sorted by label then path; checks the layout as it goes."""
    split_dir = root / dir_name
    if split_dir.is_file():
        raise NotADirectoryError(
            f"dataset '{name}': split '{split}' directory {split_dir} is a file, not a directory; "
            f"fix datasets.{name}.splits.{split}"
        )
    if not split_dir.is_dir():
        present = ", ".join(p.name for p in _visible(root.iterdir()) if p.is_dir()) or "none"
        raise FileNotFoundError(
            f"dataset '{name}': split '{split}' directory {split_dir} does not exist "
            f"(directories in {root}: {present}); fix datasets.{name}.splits.{split}"
        )
    entries = _visible(split_dir.iterdir())
    class_dirs = [p for p in entries if p.is_dir()]
    for class_dir in class_dirs:
        _check_name(name, class_dir)
    if not class_dirs:
        loose = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        hint = (
            f"; it holds {len(loose)} loose images: arrange them into one folder per class "
            "(for ImageNet val, e.g. with the valprep.sh script)"
            if loose
            else ""
        )
        raise ValueError(
            f"dataset '{name}': split '{split}' directory {split_dir} has no class folders{hint}"
        )
    pairs: list[tuple[str, Path]] = []
    for class_dir in class_dirs:
        label = class_dir.name
        if fmt == "imagenet" and not _WNID.match(label):
            raise ValueError(
                f"dataset '{name}': {class_dir} is not named by a wnid (n########); "
                f"an ImageNet split holds one folder per wnid, or set datasets.{name}.format: imagefolder"
            )
        if fmt == "inat2021":
            parse_inat_dir(label, name)
        files = [p for p in _visible(class_dir.iterdir()) if _is_image(p)]
        for f in files:
            _check_name(name, f)
        if not files:
            raise ValueError(
                f"dataset '{name}': class directory {class_dir} has no images "
                f"({', '.join(IMAGE_SUFFIXES)}); add its images or remove the directory"
            )
        pairs.extend((label, f) for f in files)
    return pairs


def _subset(pairs: list[tuple[str, Path]], split: str, k: int, seed: int) -> list[tuple[str, Path]]:
    """At most ``k`` files per label, chosen by a generator seeded from (seed, split, label)."""
    by_label: dict[str, list[Path]] = {}
    for label, path in pairs:
        by_label.setdefault(label, []).append(path)
    kept: list[tuple[str, Path]] = []
    for label, files in by_label.items():
        if len(files) > k:
            key = int.from_bytes(hashlib.sha256(f"{split}/{label}".encode()).digest()[:8], "little")
            rng = np.random.default_rng([seed, key])
            chosen_K = np.sort(rng.choice(len(files), size=k, replace=False))
            files = [files[i] for i in chosen_K]
        kept.extend((label, f) for f in files)
    return kept


def _inspect(path: Path) -> dict:
    """sha256 of the bytes, size, and whether PIL fully decodes the image (a file that cannot be read,
    such as a broken symbolic link, is corrupt with an empty sha256)."""
    row = {"sha256": "", "width": -1, "height": -1, "status": "corrupt", "error": ""}
    try:
        data = path.read_bytes()
    except OSError as e:
        reason = f"{type(e).__name__}: {e.strerror}"
        broken = path.is_symlink() and not path.exists()
        row["error"] = f"broken symbolic link to {os.readlink(path)} ({reason})" if broken else reason
        return row
    row.update(sha256=hashlib.sha256(data).hexdigest(), status="ok")
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            im.convert("RGB")  # decodes every pixel: catches truncated and damaged files
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
        row["status"] = "corrupt"
        row["error"] = f"{type(e).__name__}: {e}"
    else:
        row["width"], row["height"] = width, height
    return row


def build_manifest(
    name: str,
    format: str,
    root: Path,
    splits: dict[str, str],
    max_per_class: int | None = None,
    seed: int = 0,
    on_corrupt: str = "error",
) -> pd.DataFrame:
    """List, hash and decode every image of dataset ``name``; see the module docstring for columns.

    ``splits`` maps the split name used downstream to its directory under ``root``
    (e.g. ``{"train": "train_mini", "val": "val"}``). ``max_per_class`` keeps a seeded random subset of
    each (split, label). ``on_corrupt="error"`` raises :class:`CorruptImageError` at the first image
    that cannot be read (a broken symbolic link) or decoded; ``"skip"`` keeps it as a row with status
    "corrupt" and goes on. Names that are not UTF-8 raise ``ValueError`` while listing, before any decoding.
    """
    root = Path(root)
    if root.is_file():
        raise NotADirectoryError(
            f"dataset '{name}': root {root} is a file, not a directory; set datasets.{name}.root in the config "
            "to the directory that holds the split folders"
        )
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset '{name}': root {root} does not exist; set datasets.{name}.root in the config"
        )

    listed: list[tuple[str, str, Path]] = []  # (split, label, file)
    categories: dict[str, dict[str, dict]] = {}
    for split, dir_name in splits.items():
        pairs = _list_split(name, format, root, split, dir_name)
        if max_per_class is not None:
            pairs = _subset(pairs, split, max_per_class, seed)
        listed.extend((split, label, f) for label, f in pairs)
        if format == "inat2021":
            categories[split] = _inat_categories(root / f"{dir_name}.json", name)
    log.info(
        "dataset '%s': %d images in %d splits; decoding with %d threads",
        name,
        len(listed),
        len(splits),
        _threads(),
    )

    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=_threads()) as pool:
        for start in range(0, len(listed), _BATCH):
            batch = listed[start : start + _BATCH]
            for (split, label, file), info in zip(
                batch, pool.map(_inspect, [f for _, _, f in batch]), strict=True
            ):
                if info["status"] != "ok" and on_corrupt == "error":
                    shown, what = (
                        (file.absolute(), "read") if not info["sha256"] else (file.resolve(), "decoded")
                    )
                    raise CorruptImageError(
                        f"dataset '{name}': image {shown} cannot be {what} ({info['error']}); "
                        f"replace or delete it, or set datasets.{name}.on_corrupt: skip to record it as "
                        "corrupt and go on"
                    )
                row = {"path": file.relative_to(root).as_posix(), "split": split, "label": label, **info}
                if format == "inat2021":
                    row.update(_inat_row(name, label, categories[split].get(label)))
                rows.append(row)
            log.info("dataset '%s': %d / %d images", name, len(rows), len(listed))

    columns = BASE_COLUMNS + (INAT_COLUMNS if format == "inat2021" else [])
    df = pd.DataFrame(rows, columns=columns)
    df["width"] = df["width"].astype("int64")
    df["height"] = df["height"].astype("int64")
    if format == "inat2021":
        df["category_id"] = df["category_id"].astype("int64")
    n_corrupt = int((df["status"] != "ok").sum())
    if n_corrupt:
        log.warning("dataset '%s': %d corrupt images recorded with status 'corrupt'", name, n_corrupt)
    return df


def _inat_row(name: str, label: str, category: dict | None) -> dict:
    taxonomy = parse_inat_dir(label, name)
    if category is not None and int(category.get("id", taxonomy["category_id"])) != taxonomy["category_id"]:
        raise ValueError(
            f"dataset '{name}': directory {label} has id {taxonomy['category_id']} but the annotation file "
            f"gives category id {category['id']} for it; the JSON and the image folders are from "
            "different releases: use the matching annotation file"
        )
    category = category or {}
    return {
        **taxonomy,
        "common_name": str(category.get("common_name", "")),
        "supercategory": str(category.get("supercategory", "")),
    }


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to Parquet at ``path`` atomically; the bytes depend on the rows, not on ``df.attrs``."""
    plain = df.reset_index(drop=True).copy()
    plain.attrs = {}
    table = pa.Table.from_pandas(plain, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = json.dumps({"version": MANIFEST_VERSION}).encode()
    table = table.replace_schema_metadata(metadata)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def split_rows(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """The images of ``split`` that a store holds: manifest order, corrupt ones left out."""
    return manifest[(manifest["split"] == split) & (manifest["status"] == "ok")]


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist; run the manifest rule that makes it")
    df = pq.read_table(path).to_pandas()
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is not a vitsae manifest (missing columns {missing}); rebuild it")
    return df


def manifest_digest(path: Path) -> str:
    """sha256 of the manifest file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
