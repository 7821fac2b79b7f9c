"""The feature browser: a static site per run, opened as ``results/browser/index.html`` from the file system,
and its blinded rating page ``rate.html``. No server, no network: every script and style is inside the site.

Layout of the site (``out_dir``)::

    index.html, rate.html                 the two pages (copied from ``browser_assets/``)
    assets/app.js, rate.js, style.css     their scripts and style (shared drawing code in common.js)
    data/index.js                         the run: every SAE shown (place, settings, FVU, L0, live features)
    data/classes-{i}.js                   per dataset: each class's name and its WordNet or taxonomy path
    data/s{k}/t{j}.js                     SAE k's feature table, ``table_shard`` features per shard
    data/s{k}/d{j}.js                     SAE k's feature details, ``detail_shard`` features per shard: top
                                          images (manifest rows), patch maps (uint8, base64), values, classes,
                                          concept-table row (empty cells left out), card links,
                                          best matches in the other SAEs of its model, layer and setting
    img/{i}/v{n}/{row}.jpg                one JPEG thumbnail per (dataset, model view, image), written once
    rate/trials.js                        the rating sample as the rater sees it: opaque trial ids, images and
                                          patch maps on a common grid; no model, SAE, feature or label
    rate/img/{trial}/{i}.jpg              the trials' images, copied under the trial's name (the shared
                                          thumbnails' view folders would group trials by model)

Browsers refuse ``fetch`` of ``file://`` URLs, so every data file is a script that hands its object to
``VITSAE.put(name, object)``; the pages add a ``<script>`` tag per file they need, when they need it.

Thumbnails show the crop the model saw (:func:`vitsae.analysis.cards.model_view`); models whose
preprocessing crops alike share a view ``v{n}`` (numbered in sorted order of the crop settings, so a view's
name says nothing about a model). A feature's patch maps are stored on its model's own grid, scaled to 0-255
by the feature's largest value among its top images; the rating page gets them resampled (bilinear) to a
``RATING_GRID`` × ``RATING_GRID`` grid, so a model's patch size is not shown by the blocks of its maps.

Best matches: for each shown SAE, the other shown SAEs of the same model, layer, sweep and setting (other
seeds, other training dataset); for each live feature the live feature of each with the largest decoder
cosine (:func:`vitsae.analysis.decoders.best_cosines`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from vitsae.analysis import decoders
from vitsae.analysis.cards import model_view
from vitsae.analysis.feature_files import FeatureStats, load_feature_stats, sae_place
from vitsae.analysis.maps import map_grid, resample
from vitsae.analysis.ratings import read_sample
from vitsae.analysis.settings import BrowserSettings
from vitsae.analysis.wordnet import WordNetError, load_hierarchy
from vitsae.atomic import atomic_dir
from vitsae.data.manifest import read_manifest
from vitsae.data.store import open_store

log = logging.getLogger("vitsae.browser")

ASSETS = Path(__file__).with_name("browser_assets")
PAGES = ("index.html", "rate.html")
SCRIPTS = ("common.js", "app.js", "rate.js", "style.css")
RATING_GRID = 24
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
#: Concept-table columns every feature table shard carries (when the table has them), beside the feature.
#: Columns that place a concept-table row (the SAE's own): left out of each feature's row in the site.
PLACE_COLUMNS = ("sae_id", "dataset", "model", "layer", "sweep", "feature")
TABLE_COLUMNS = ("label", "trait", "frequency", "mean_active", "max_activation", "n_top")


@dataclass(frozen=True)
class Dataset:
    """A dataset the site shows images of: its manifest, image root and concept-table format."""

    name: str
    manifest: str
    root: str
    format: str


@dataclass(frozen=True)
class ShownSAE:
    """One SAE the browser shows: its statistics, concept table (of its sweep), in-domain evaluation, SAE
    directory, store (for the crop its model saw) and card directory (of its sweep; may be None)."""

    stats: str
    table: str
    eval_json: str
    sae_dir: str
    store: str | None  # None: images shown whole, squared (no model crop known)
    cards: str | None


def _script(name: str, obj) -> str:
    return f"VITSAE.put({json.dumps(name)},{json.dumps(obj, separators=(',', ':'), allow_nan=False)});\n"


def _write_script(path: Path, name: str, obj) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _script(name, obj)
    path.write_text(text)
    return len(text)


def _num(x, digits: int = 4):
    """A JSON number (rounded to ``digits`` significant digits), or None for NaN/None."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return x
    if not np.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def _plain(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _num(v, 6)
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return str(v)


def _u8(maps: np.ndarray, vmax: float) -> str:
    """Maps scaled to 0-255 by ``vmax``, as base64."""
    scaled = np.zeros(maps.shape, np.uint8) if vmax <= 0 else np.clip(np.rint(maps / vmax * 255), 0, 255)
    return base64.b64encode(scaled.astype(np.uint8).tobytes()).decode()


def _view_key(preprocessing: dict | None) -> str:
    if not preprocessing:
        return "square"
    p = preprocessing
    return json.dumps(
        [list(p.get("input_size", [])), p.get("crop_pct"), p.get("crop_mode"), p.get("interpolation")]
    )


def _class_contexts(dataset: Dataset, labels: Sequence[str]) -> dict[str, dict]:
    """label → {name, path}: the WordNet hypernym path (root first) of an ImageNet class, the taxonomy
    (kingdom to species) of an iNat species; the label itself for any other format."""
    out: dict[str, dict] = {}
    if dataset.format == "imagenet":
        hierarchy = load_hierarchy()
        for wnid in labels:
            try:
                paths = hierarchy.hypernym_paths(wnid)
                name = hierarchy.name(wnid)
            except (KeyError, WordNetError):  # a class outside the committed hierarchy: shown by its id
                out[wnid] = {"name": wnid, "path": []}
                continue
            path = max(paths, key=len) if paths else ()
            out[wnid] = {"name": name, "path": [f"{hierarchy.name(w)} ({w})" for w in path]}
    elif dataset.format == "inat2021":
        manifest = read_manifest(Path(dataset.manifest))
        cols = [r for r in RANKS if r in manifest.columns]
        firsts = manifest.drop_duplicates("label").set_index("label")
        for label in labels:
            row = firsts.loc[label] if label in firsts.index else None
            if row is None:
                out[label] = {"name": label, "path": []}
                continue
            common = str(row.get("common_name", "") or "")
            species = str(row["species"]) if "species" in cols else label
            out[label] = {"name": species + (f" ({common})" if common else ""),
                          "path": [f"{r}: {row[r]}" for r in cols]}  # fmt: skip
    else:
        out = {label: {"name": label, "path": []} for label in labels}
    return out


class _Thumbs:
    """Writes each (dataset, view, manifest row) thumbnail once; returns its path inside the site."""

    def __init__(self, site: Path, datasets: dict[str, Dataset], settings: BrowserSettings) -> None:
        self.site, self.settings = site, settings
        self.datasets = datasets
        self.index = {name: i for i, name in enumerate(sorted(datasets))}
        self.manifests: dict[str, pd.DataFrame] = {}
        self.views: dict[str, int] = {}
        self.preprocessing: dict[str, dict | None] = {}
        self.written = 0
        self.bytes = 0

    def register(self, key: str, preprocessing: dict | None) -> None:
        self.preprocessing.setdefault(key, preprocessing)

    def number_views(self) -> None:
        self.views = {k: n for n, k in enumerate(sorted(self.preprocessing))}

    def manifest(self, dataset: str) -> pd.DataFrame:
        if dataset not in self.manifests:
            self.manifests[dataset] = read_manifest(Path(self.datasets[dataset].manifest))
        return self.manifests[dataset]

    def prefix(self, dataset: str, view: str) -> str:
        return f"img/{self.index[dataset]}/v{self.views[view]}/"

    def path(self, dataset: str, view: str, row: int) -> str:
        rel = f"{self.prefix(dataset, view)}{int(row)}.jpg"
        out = self.site / rel
        if not out.exists():
            manifest = self.manifest(dataset)
            if row >= len(manifest):
                raise ValueError(f"statistics name row {row} of {self.datasets[dataset].manifest}, which has "
                                 f"{len(manifest)} rows; rerun the statistics from this manifest")  # fmt: skip
            file = Path(self.datasets[dataset].root) / manifest["path"].iat[int(row)]
            if not file.is_file():
                raise FileNotFoundError(f"image {file} (manifest {self.datasets[dataset].manifest}) does not "
                                        "exist; set the dataset's root to the directory it was built from")  # fmt: skip
            with Image.open(file) as im:
                view_im = model_view(im, self.preprocessing[view])
            px = self.settings.thumbnail_px
            view_im.thumbnail((px, px), Image.Resampling.LANCZOS)
            out.parent.mkdir(parents=True, exist_ok=True)
            view_im.save(out, format="JPEG", quality=self.settings.jpeg_quality, optimize=True)
            self.written += 1
            self.bytes += out.stat().st_size
        return rel


def _cards(cards_dir: str | None, sae_id: str, site: Path) -> dict[int, list[str]]:
    """feature → its card PNGs (paths relative to the site), from the card directory's ``index.csv``."""
    if not cards_dir:
        return {}
    index = Path(cards_dir) / sae_id / "index.csv"
    if not index.is_file():
        return {}
    table = pd.read_csv(index)
    out: dict[int, list[str]] = {}
    for f, file in zip(table["feature"], table["file"]):
        target = (Path(cards_dir) / sae_id / file).resolve()
        out.setdefault(int(f), []).append(os.path.relpath(target, site.resolve()))
    return out


def _sae_setting(sae_id: str) -> tuple[str, int | None]:
    head, sep, tail = sae_id.rpartition("-s")
    return (head, int(tail)) if sep and tail.isdigit() else (sae_id, None)


def _top_classes(stats: FeatureStats, labels_N: np.ndarray, f: int) -> list[tuple[str, int]]:
    slots = stats.top_row_FK[f][stats.top_image_FK[f] >= 0]
    return Counter(labels_N[slots].tolist()).most_common()


def build_site(
    saes: Sequence[ShownSAE],
    datasets: Sequence[Dataset],
    sample_csv: str | os.PathLike,
    catch_stats: Sequence[str],
    categories: Sequence[str],
    settings: BrowserSettings,
    out_dir: str | os.PathLike,
    title: str = "vitsae feature browser",
    note: str = "",
) -> Path:
    """Write the site (module docstring) to ``out_dir``, published when complete."""
    by_name = {d.name: d for d in datasets}
    sample = read_sample(sample_csv)  # trial and sample_id kept as text (an all-digit id stays an id)

    def build(site: Path) -> None:
        thumbs = _Thumbs(site, by_name, settings)
        loaded: list[tuple[ShownSAE, FeatureStats, str, dict, pd.DataFrame]] = []
        stores: dict[str | None, dict | None] = {None: None}
        for s in saes:
            stats = load_feature_stats(s.stats)
            sae_id, where = sae_place(stats.meta)
            if s.store not in stores:
                stores[s.store] = dict(open_store(s.store).attrs.get("preprocessing") or {}) or None
            view = _view_key(stores[s.store])
            thumbs.register(view, stores[s.store])
            table = pd.read_csv(s.table)
            rows = table[table["sae_id"] == sae_id].set_index("feature", drop=False).sort_index()
            if len(rows) != stats.top_image_FK.shape[0]:
                raise ValueError(f"concept table {s.table} has {len(rows)} rows for SAE {sae_id}, its statistics "
                                 f"{s.stats} {stats.top_image_FK.shape[0]} features; rerun the concept table")  # fmt: skip
            loaded.append((s, stats, sae_id, {**where, "view": view}, rows))
        # catch trials' SAEs (the null sweep): their statistics, for the rating page's images
        catch: dict[tuple, FeatureStats] = {}
        catch_views: dict[tuple, str] = {}
        for c in catch_stats:
            stats = load_feature_stats(c)
            sae_id, where = sae_place(stats.meta)
            key = (where["dataset"], where["model"], int(where["layer"]), where["sweep"], sae_id)
            catch[key] = stats
            store = stats.meta.get("store")
            if store not in stores:
                stores[store] = dict(open_store(store).attrs.get("preprocessing") or {}) or None
            catch_views[key] = _view_key(stores[store])
            thumbs.register(catch_views[key], stores[store])
        thumbs.number_views()

        # classes of every dataset, numbered; contexts for the feature view and the search
        class_ids: dict[str, dict[str, int]] = {}
        labels_of: dict[str, np.ndarray] = {}
        for name in sorted(by_name):
            manifest = thumbs.manifest(name)
            labels = sorted(manifest["label"].astype(str).unique())
            class_ids[name] = {lab: i for i, lab in enumerate(labels)}
            labels_of[name] = manifest["label"].astype(str).to_numpy()
            ctx = _class_contexts(by_name[name], labels)
            _write_script(site / f"data/classes-{thumbs.index[name]}.js", f"classes-{thumbs.index[name]}",
                          {"dataset": name, "format": by_name[name].format,
                           "classes": [[lab, ctx[lab]["name"], ctx[lab]["path"]] for lab in labels]})  # fmt: skip

        # best matches among SAEs of one model, layer, sweep and setting
        live = [st.features.sort_values("feature")["n_active_tokens"].to_numpy() > 0 for _, st, *_ in loaded]
        groups: dict[tuple, list[int]] = {}
        for k, (_s, _st, sae_id, where, _rows) in enumerate(loaded):
            groups.setdefault(
                (where["model"], where["layer"], where["sweep"], _sae_setting(sae_id)[0]), []
            ).append(k)
        units: dict[int, np.ndarray] = {}

        def unit(k: int) -> np.ndarray:
            if k not in units:
                from vitsae.sae import checkpoint

                W = checkpoint.load(loaded[k][0].sae_dir).W_dec_FD.detach().cpu().numpy()
                units[k] = decoders.unit_rows(W)
            return units[k]

        matches: dict[int, dict[int, list]] = {k: {} for k in range(len(loaded))}
        for members in groups.values():
            for a in members:
                fa = np.nonzero(live[a])[0]
                for b in members:
                    fb = np.nonzero(live[b])[0]
                    if a == b or len(fa) == 0 or len(fb) == 0:
                        continue
                    best = decoders.best_cosines(unit(a)[fa], unit(b)[fb])
                    for i, f in enumerate(fa):
                        matches[a].setdefault(int(f), []).append(
                            [b, int(fb[best.arg_ab_F[i]]), _num(best.best_ab_F[i], 3)]
                        )
            units.clear()

        index_saes = []
        total_bytes = 0
        for k, (s, stats, sae_id, where, rows) in enumerate(loaded):
            d = where["dataset"]
            setting, seed = _sae_setting(sae_id)
            ev = json.loads(Path(s.eval_json).read_text())
            cfg = stats.meta.get("sae", {})
            F = stats.top_image_FK.shape[0]
            grid = stats.meta.get("grid")
            labels_N = labels_of[d]
            cards = _cards(s.cards, sae_id, site)
            nt = -(-F // settings.table_shard)
            nd = -(-F // settings.detail_shard)
            n_live = int(live[k].sum())
            for j in range(nt):
                lo, hi = j * settings.table_shard, min(F, (j + 1) * settings.table_shard)
                part = rows.iloc[lo:hi]
                shard: dict[str, list] = {"feature": [int(f) for f in part["feature"]]}
                for col in TABLE_COLUMNS:
                    if col in part.columns:
                        shard[col] = [_plain(v) for v in part[col]]
                top = [_top_classes(stats, labels_N, f) if live[k][f] else [] for f in range(lo, hi)]
                shard["classes"] = [[class_ids[d][c] for c, _n in t[:8]] for t in top]
                total_bytes += _write_script(site / f"data/s{k}/t{j}.js", f"s{k}/t{j}", shard)
            for j in range(nd):
                lo, hi = j * settings.detail_shard, min(F, (j + 1) * settings.detail_shard)
                feats: dict[str, dict] = {}
                for f in range(lo, hi):
                    slots = np.nonzero(stats.top_image_FK[f] >= 0)[0]
                    if not live[k][f] or len(slots) == 0:
                        continue
                    top_rows = stats.top_row_FK[f, slots]
                    for r in top_rows:
                        thumbs.path(d, where["view"], int(r))
                    maps = np.stack([
                        map_grid(stats.top_map_FKT[f, sl], grid,
                                 None if stats.top_patch_index_FKT is None else stats.top_patch_index_FKT[f, sl])
                        if grid is not None else np.zeros((1, 1), np.float32)
                        for sl in slots
                    ])  # fmt: skip
                    vmax = float(maps.max()) if maps.size else 0.0
                    row = {c: _plain(v) for c, v in rows.loc[f].items() if c not in PLACE_COLUMNS}
                    row = {c: v for c, v in row.items() if v is not None}
                    feats[str(f)] = {
                        "img": [int(r) for r in top_rows],
                        "v": [_num(v) for v in stats.top_value_FK[f, slots]],
                        "cls": [class_ids[d][c] for c in labels_N[top_rows]],
                        "m": _u8(maps, vmax),
                        "vmax": _num(vmax),
                        "row": row,
                        "cards": cards.get(f, []),
                        "match": matches[k].get(f, []),
                    }
                total_bytes += _write_script(site / f"data/s{k}/d{j}.js", f"s{k}/d{j}",
                                             {"start": lo, "grid": list(grid) if grid else [1, 1], "img": thumbs.prefix(d, where["view"]),
                                              "features": feats})  # fmt: skip
            label_counts = Counter(str(v) for v, ok in zip(rows["label"], live[k]) if ok)
            index_saes.append({
                "k": k, "dataset": d, "dataset_index": thumbs.index[d], "format": by_name[d].format,
                "model": where["model"], "layer": int(where["layer"]), "sweep": where["sweep"], "sae_id": sae_id,
                "setting": setting, "seed": seed, "architecture": cfg.get("architecture"),
                "expansion": cfg.get("expansion"), "l1_coeff": _num(cfg.get("l1_coeff")), "lr": _num(cfg.get("lr")),
                "d_sae": F, "fvu": _num(ev.get("fvu")), "l0": _num(ev.get("l0")),
                "eval_dataset": ev.get("eval_dataset"), "n_live": n_live,
                "labels": dict(sorted(label_counts.items())), "table_shards": nt, "detail_shards": nd,
                "table_shard": settings.table_shard, "detail_shard": settings.detail_shard,
                "grid": list(grid) if grid else None,
            })  # fmt: skip
        _write_script(site / "data/index.js", "index", {
            "title": title, "note": note, "saes": index_saes,
            "datasets": [{"name": n, "index": thumbs.index[n], "format": by_name[n].format} for n in sorted(by_name)],
        })  # fmt: skip

        # the rating page's trials: images and maps only
        trials = []
        placed = {(w["dataset"], w["model"], int(w["layer"]), w["sweep"], sid): (st, w["view"])
                  for _s, st, sid, w, _r in loaded}  # fmt: skip
        for c_key, st in catch.items():
            placed.setdefault(c_key, (st, catch_views[c_key]))
        for t in sample.itertuples(index=False):
            key = (t.dataset, t.model, int(t.layer), t.sweep, t.sae_id)
            if key not in placed:
                raise KeyError(f"rating sample {sample_csv}: trial {t.trial} names SAE {key}, whose statistics "
                               "the browser was not given; rerun rule rating_sample and rule browser together")  # fmt: skip
            st, view = placed[key]
            f = int(t.feature)
            slots = np.nonzero(st.top_image_FK[f] >= 0)[0]
            grid = st.meta.get("grid")
            imgs, maps = [], []
            for i, sl in enumerate(slots):
                # a copy named by the trial: the shared thumbnails' folders say which crop (model) made them
                shared = site / thumbs.path(t.dataset, view, int(st.top_row_FK[f, sl]))
                own = f"rate/img/{t.trial}/{i}.jpg"
                (site / own).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shared, site / own)
                imgs.append(own)
                if grid is not None:
                    g = map_grid(st.top_map_FKT[f, sl], grid,
                                 None if st.top_patch_index_FKT is None else st.top_patch_index_FKT[f, sl])  # fmt: skip
                    maps.append(resample(g, RATING_GRID))
                else:
                    maps.append(np.zeros((RATING_GRID, RATING_GRID)))
            arr = np.stack(maps) if maps else np.zeros((0, RATING_GRID, RATING_GRID))
            trials.append({"id": t.trial, "img": imgs, "m": _u8(arr, float(arr.max()) if arr.size else 0.0)})
        _write_script(site / "rate/trials.js", "trials", {
            "sample_id": str(sample["sample_id"].iat[0]) if len(sample) else "", "grid": RATING_GRID,
            "categories": list(categories), "trials": trials,
        })  # fmt: skip

        for name in PAGES:
            shutil.copyfile(ASSETS / name, site / name)
        (site / "assets").mkdir(exist_ok=True)
        for name in SCRIPTS:
            shutil.copyfile(ASSETS / name, site / "assets" / name)
        log.info("browser: %d SAEs, %d thumbnails (%.1f MB), data %.1f MB, %d rating trials",
                 len(loaded), thumbs.written, thumbs.bytes / 1e6, total_bytes / 1e6, len(trials))  # fmt: skip

    return atomic_dir(out_dir, build)


def site_size(out_dir: str | os.PathLike) -> dict[str, int]:
    """Bytes on disk of the site's parts: pages and assets, data, thumbnails, rating data."""
    out = {"pages": 0, "data": 0, "img": 0, "rate": 0}
    root = Path(out_dir)
    for p in root.rglob("*"):
        if p.is_file():
            part = p.relative_to(root).parts[0]
            out[
                "data"
                if part == "data"
                else "img"
                if part == "img"
                else "rate"
                if part == "rate"
                else "pages"
            ] += p.stat().st_size
    return out
