"""Feature cards: for the strongest features of each label, a PNG of the top images with the feature's
patch map overlaid, and a caption with the feature's concept-table row.

Layout (:func:`write_cards`)::

    {out}/{sae}/{label}/feature{f:05d}.png    the card
    {out}/{sae}/{label}/feature{f:05d}.json   sidecar: the caption, the table row, the top images
                                              (rank, split image, manifest row, path, activation)
    {out}/{sae}/index.csv                     one row per card: label, rank, feature, file

``model`` (e.g. ``clip-b16/layer10/paper``) and ``sae`` (the SAE's id) start every caption.

A card shows up to ``n_images`` top images (from :mod:`vitsae.analysis.stats` ``topk.npz``: manifest rows
``row_FK``, values ``value_FK``, per-token maps ``map_FKT``) in a grid of ``columns`` tiles, each with
its max activation under it, then the caption. The PNG also carries the caption as a text chunk
(``caption``) and the row as JSON (``feature_row``).

* **The image as the model saw it**: with ``preprocessing`` (the store's attrs: ``input_size``,
  ``crop_pct``, ``interpolation``, as :func:`vitsae.data.activations.tensor_transform` uses them) the image is
  resized so its shorter side is ``floor(S / crop_pct)`` and centre-cropped to ``S``, so the patch grid
  lies on the pixels it came from; without it, the whole image is resized to a square (approximate).
* **The overlay**: the map over the patch grid (``meta.json`` ``grid``; for stores that keep a subset of
  patches, ``patch_index_FKT`` places the tokens, other cells are 0) is upsampled to the tile by
  nearest neighbour (each patch a block of pixels), scaled by the feature's largest shown activation (so
  tiles compare), and blended in red: pixel = (1 − a·h)·pixel + a·h·red with ``h`` in [0, 1] and
  ``a = alpha``. Token kinds without a grid (cls) get no overlay.
* **Strongest features** of a label: by the mean of the feature's firing top-image activations,
  descending (ties: smaller feature index), or by a table column (``order_by``, descending).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from vitsae.analysis.feature_files import FeatureStats, load_feature_stats, sae_place
from vitsae.analysis.maps import map_grid
from vitsae.atomic import atomic_dir, atomic_write
from vitsae.data.manifest import read_manifest
from vitsae.data.store import open_store

MARGIN, LINE = 8, 14
RED = np.array([255.0, 0.0, 0.0])
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}  # fmt: skip


def model_view(image: Image.Image, preprocessing: dict | None = None) -> Image.Image:
    """The RGB crop the model saw (module docstring); the whole image squared without ``preprocessing``."""
    image = image.convert("RGB")
    if preprocessing is None:
        side = min(image.size)
        return image.resize((side, side), Image.Resampling.BICUBIC)
    _, s_h, s_w = preprocessing["input_size"]
    if s_h != s_w or preprocessing.get("crop_mode", "center") != "center":
        raise ValueError(f"feature cards support square centre crops only, got preprocessing {preprocessing}")
    short = math.floor(s_h / float(preprocessing.get("crop_pct", 1.0)))
    w, h = image.size
    new = (short, round(h * short / w)) if w <= h else (round(w * short / h), short)
    image = image.resize(
        new, _RESAMPLE.get(str(preprocessing.get("interpolation")), Image.Resampling.BICUBIC)
    )
    left, top = (new[0] - s_w) // 2, (new[1] - s_h) // 2
    return image.crop((left, top, left + s_w, top + s_h))


def overlay(image: Image.Image, grid_HW: np.ndarray | None, vmax: float, alpha: float = 0.6) -> Image.Image:
    """``image`` with ``grid_HW / vmax`` blended in red (nearest-neighbour upsampling to the image)."""
    if grid_HW is None:
        return image
    heat = np.clip(np.asarray(grid_HW, dtype=np.float32) / vmax, 0, 1) if vmax > 0 else np.zeros_like(grid_HW)
    up = Image.fromarray(heat.astype(np.float32), mode="F").resize(image.size, Image.Resampling.NEAREST)
    h_HW1 = alpha * np.asarray(up, dtype=np.float64)[:, :, None]
    pix = np.asarray(image.convert("RGB"), dtype=np.float64)
    return Image.fromarray(np.clip((1 - h_HW1) * pix + h_HW1 * RED, 0, 255).round().astype(np.uint8))


def _wrap(text: str, width: int, sep: str = "  ·  ") -> list[str]:
    """Lines of at most ``width`` characters, broken between ``sep``-separated fields where possible."""
    lines = []
    for para in text.splitlines():
        line = ""
        for field in para.split(sep):
            candidate = f"{line}{sep}{field}" if line else field
            if len(candidate) <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = field
            while len(line) > width:
                lines.append(line[:width])
                line = line[width:]
        lines.append(line)
    return lines


def card_size(n_images: int, columns: int, tile: int, n_lines: int) -> tuple[int, int]:
    """(width, height) of a card: a grid of tiles (each with a value line under it), then the caption."""
    cols = max(1, min(columns, n_images))
    rows = math.ceil(n_images / cols) if n_images else 0
    return cols * (tile + MARGIN) + MARGIN, MARGIN + rows * (tile + LINE + MARGIN) + n_lines * LINE + MARGIN


def render_card(tiles: Sequence[Image.Image], values: Sequence[float], caption: str, columns: int = 4,
                tile: int = 128) -> Image.Image:  # fmt: skip
    """The card image: ``tiles`` (already overlaid) resized to ``tile`` px, each value under it, the caption."""
    font = ImageFont.load_default(size=11)
    cols = max(1, min(columns, len(tiles)))
    lines = _wrap(caption, max(40, (cols * (tile + MARGIN)) // 6))
    card = Image.new("RGB", card_size(len(tiles), columns, tile, len(lines)), "white")
    draw = ImageDraw.Draw(card)
    for i, (im, v) in enumerate(zip(tiles, values)):
        x, y = MARGIN + (i % cols) * (tile + MARGIN), MARGIN + (i // cols) * (tile + LINE + MARGIN)
        card.paste(im.resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        draw.text((x, y + tile + 1), f"#{i + 1}  max {v:.3g}", fill="black", font=font)
    y0 = MARGIN + math.ceil(len(tiles) / cols) * (tile + LINE + MARGIN) if tiles else MARGIN
    for j, line in enumerate(lines):
        draw.text((MARGIN, y0 + j * LINE), line, fill="black", font=font)
    return card


def caption_text(row: pd.Series, title: str) -> str:
    """The title line, then ``column: value`` for each column of the row (floats to 4 significant digits)."""
    parts = []
    for key, value in row.items():
        if isinstance(value, float | np.floating):
            value = f"{value:.4g}"
        parts.append(f"{key}: {value}")
    return f"{title}\n" + "  ·  ".join(parts)


def strongest(table: pd.DataFrame, stats: FeatureStats, label: str, n: int,
              order_by: str | None = None) -> list[int]:  # fmt: skip
    """The ``n`` strongest features labelled ``label`` (module docstring)."""
    rows = table[table["label"] == label]
    feats = rows["feature"].to_numpy(dtype=np.int64)
    if order_by is None:
        fire_FK = stats.top_image_FK[feats] >= 0
        score = np.where(fire_FK, stats.top_value_FK[feats], 0).sum(axis=1) / np.maximum(
            fire_FK.sum(axis=1), 1
        )
    else:
        if order_by not in table.columns:
            raise KeyError(
                f"order_by {order_by!r} is not a column of the concept table ({list(table.columns)})"
            )
        score = rows[order_by].to_numpy(dtype=np.float64)
    score = np.nan_to_num(score, nan=-np.inf)
    return [int(f) for f in feats[np.lexsort((feats, -score))][:n]]


def write_cards(
    stats: FeatureStats | str | os.PathLike,
    table: pd.DataFrame,
    manifest_path: str | os.PathLike,
    root: str | os.PathLike,
    out: str | os.PathLike,
    model: str,
    sae: str,
    labels: Sequence[str] | None = None,
    per_label: int = 8,
    n_images: int = 8,
    preprocessing: dict | None = None,
    order_by: str | None = None,
    columns: int = 4,
    tile: int = 128,
    alpha: float = 0.6,
) -> list[Path]:
    """Write the cards of the ``per_label`` strongest features of each label (default: every label in the
    table, in order of first appearance) under ``{out}/{sae}/``; returns the PNG paths."""
    stats = stats if isinstance(stats, FeatureStats) else load_feature_stats(stats)
    manifest = read_manifest(Path(manifest_path))
    if "label" not in table.columns or "feature" not in table.columns:
        raise KeyError(f"the concept table needs 'feature' and 'label' columns (has {list(table.columns)})")
    grid = stats.meta.get("grid")
    by_feature = table.set_index("feature", drop=False)
    labels = list(dict.fromkeys(table["label"])) if labels is None else list(labels)
    base = Path(out) / sae
    written, index = [], []
    for label in labels:
        for rank, f in enumerate(strongest(table, stats, label, per_label, order_by)):
            slots = np.nonzero(stats.top_image_FK[f] >= 0)[0][:n_images]
            if len(slots) == 0:
                continue
            rows = stats.top_row_FK[f, slots]
            if rows.max() >= len(manifest):
                raise ValueError(f"statistics {stats.directory} name manifest row {rows.max()}, but {manifest_path} "
                                 f"has {len(manifest)} rows; pass the manifest the store was extracted from")  # fmt: skip
            paths = manifest["path"].to_numpy()[rows]
            vmax = float(stats.top_map_FKT[f, slots].max())
            tiles = []
            for slot, rel in zip(slots, paths):
                file = Path(root) / rel
                if not file.is_file():
                    raise FileNotFoundError(f"image {file} (manifest {manifest_path}) does not exist; set the "
                                            "dataset's root to the directory the manifest was built from")  # fmt: skip
                with Image.open(file) as im:
                    view = model_view(im, preprocessing)
                pidx = None if stats.top_patch_index_FKT is None else stats.top_patch_index_FKT[f, slot]
                tiles.append(overlay(view, map_grid(stats.top_map_FKT[f, slot], grid, pidx), vmax, alpha))
            row = by_feature.loc[f]
            caption = caption_text(row, f"{model} · {sae} · feature {f} · {label} (rank {rank + 1})")
            values = [float(v) for v in stats.top_value_FK[f, slots]]
            card = render_card(tiles, values, caption, columns, tile)
            directory = base / label
            directory.mkdir(parents=True, exist_ok=True)
            png = directory / f"feature{f:05d}.png"
            row_json = json.loads(row.to_json())
            info = PngInfo()
            info.add_text("caption", caption)
            info.add_text("feature_row", json.dumps(row_json))
            atomic_write(png, lambda p, card=card, info=info: card.save(p, format="PNG", pnginfo=info))
            sidecar = {"model": model, "sae": sae, "label": label, "rank": rank + 1, "feature": f,
                       "caption": caption, "row": row_json,
                       "top_images": [{"rank": i + 1, "image": int(stats.top_image_FK[f, s]), "row": int(r),
                                       "path": str(p), "value": v}
                                      for i, (s, r, p, v) in enumerate(zip(slots, rows, paths, values))]}  # fmt: skip
            atomic_write(png.with_suffix(".json"),
                         lambda p, s=sidecar: p.write_text(json.dumps(s, indent=2) + "\n"))  # fmt: skip
            written.append(png)
            index.append({"label": label, "rank": rank + 1, "feature": f, "file": str(png.relative_to(base))})
    base.mkdir(parents=True, exist_ok=True)
    atomic_write(base / "index.csv", lambda p: pd.DataFrame(index, columns=["label", "rank", "feature", "file"])
                 .to_csv(p, index=False))  # fmt: skip
    return written


def write_sweep_cards(stats_dirs: Sequence[str | os.PathLike], table_csv: str | os.PathLike,
                      manifest_path: str | os.PathLike, root: str | os.PathLike, store_path: str | os.PathLike,
                      out_dir: str | os.PathLike, per_label: int, n_images: int) -> Path:  # fmt: skip
    """The rule's work: feature cards of the strongest features of each label, for each SAE of a sweep
    (its id and place from its statistics): ``{out_dir}/{sae_id}/{label}/feature{f:05d}.png`` (+ a JSON
    sidecar; ``index.csv`` per SAE). Captions start with ``{model}/layer{layer}/{sweep}``. The directory
    is published when complete."""
    preprocessing = dict(open_store(store_path).attrs.get("preprocessing") or {})
    table = pd.read_csv(table_csv)

    def build(tmp: Path) -> None:
        for stats_dir in stats_dirs:
            stats = load_feature_stats(stats_dir)
            sae_id, where = sae_place(stats.meta)
            name = f"{where['model']}/layer{where['layer']}/{where['sweep']}"
            rows = table[table["sae_id"] == sae_id].reset_index(drop=True)
            write_cards(stats, rows, manifest_path, root, tmp, name, sae_id, per_label=per_label, n_images=n_images,
                        preprocessing=preprocessing)  # fmt: skip

    return atomic_dir(out_dir, build)
