"""Per-feature statistics of an SAE on one split of an activation store, in one streaming pass.

:func:`compute_feature_stats` reads every chunk of the split exactly once (whole chunks, the fast read
pattern of shared/FACTS.md), encodes the tokens of one kind (default: the SAE's own, ``cfg.hook.tokens``)
in sub-batches of about ``batch_tokens`` tokens, and keeps, per feature ``f`` ("fires" means ``f > 0``):

* ``n_active_tokens``, ``frequency`` (= n_active_tokens / all tokens of the kind), ``mean_active``
  (mean activation over the tokens where it fires; NaN if never), ``n_active_images``,
  ``image_frequency`` (share of images where it fires on at least one token), ``max_activation``;
* the exact top-``k`` images ranked by their max-over-tokens activation, one entry per image, ties
  broken by the smaller image index, images where the feature never fires excluded (padding: image -1,
  value 0). It is merged chunk by chunk: the current top-k and the chunk's ``[F, images]`` maxima are
  ordered by (value descending, image ascending) with two stable sorts, and the first ``k`` kept, so the
  result equals a brute-force top-k of the whole split (an update writes only the maps of new winners).
  With each top image its activation map over the encoded tokens (``k × n_tokens`` per feature; for
  ``patches`` the grid in row-major order) and the norm ratio of its peak token (the activation norm of
  the token where the feature's code is largest over the median norm of the image's encoded tokens,
  :func:`norm_ratios`): a ViT's high-norm artifact tokens fire on one patch while carrying global
  information, which the concept tables flag (``peak_norm_ratio``);
* the image × feature matrix as CSR: per image, the features that fire, with max activation, number of
  active tokens and sum of activations (float32 per image; every total is accumulated in float64).

With per-image class labels (:func:`split_labels`: the manifest's ``label`` column aligned by the
store's ``{split}_rows``) it also writes the feature × class table (only pairs that fire).

Output directory (:func:`vitsae.analysis.feature_files.load_feature_stats` reads it back, without torch)::

    meta.json            store, split, token kind, n_images, tokens_per_image, n_tokens, k, d_sae,
                         grid (patch maps), store_kept, sae (its cfg), file list, format version
    features.parquet     feature, n_active_tokens, frequency, mean_active, n_active_images,
                         image_frequency, max_activation                       (one row per feature)
    topk.npz             image_FK (int64, split position, -1 = none), row_FK (manifest row, -1),
                         value_FK (float32), map_FKT (float32), patch_index_FKT (int64 grid cells of
                         the map's tokens, -1 = none; only for stores that keep a patch subset),
                         peak_norm_ratio_FK (float32, NaN = none)
    image_feature.npz    indptr (int64 [n_images+1]), indices (int32 features), max, sum (float32),
                         n_active (int32), shape ([n_images, d_sae]), row (int64 manifest rows)
    images.parquet       image, row, label                                    (one row per image)
    class_stats.parquet  feature, label, n_images, n_active_images, image_rate, mean_max,
                         n_active_tokens, token_rate, mean_active             (pairs that fire; with labels)

``image_rate`` = share of the class's images where the feature fires; ``mean_max`` = mean over the
class's images of the max activation (0 where it does not fire); ``token_rate`` and ``mean_active`` as
above, over the class's tokens. No pickles: ``np.load(..., allow_pickle=False)`` reads every array.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from vitsae.analysis.feature_files import CLASS_FILE, FILES, FORMAT_VERSION, class_table
from vitsae.analysis.regions import view_fraction
from vitsae.atomic import atomic_dir
from vitsae.data.manifest import read_manifest
from vitsae.data.store import iter_chunks, nonfinite_rows, open_store, split_array, token_slice
from vitsae.sae.checkpoint import load
from vitsae.sae.evaluate import fire_counts

log = logging.getLogger("vitsae.analysis.stats")

_NO_IMAGE = np.iinfo(np.int64).max  # sorts after every real image while merging


class Encoder(Protocol):
    """What this module needs of an SAE (:class:`vitsae.sae.checkpoint.SparseAutoencoder` has it)."""

    d_in: int
    d_sae: int
    cfg: dict

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor: ...


class TopK:
    """Streaming exact top-k per feature with per-token maps (see the module docstring for the order).

    Slots are unordered while streaming: a new winner takes the slot of the entry it evicts, so an
    update writes only the maps that change (never the whole ``[F, k, T]`` array); :meth:`result` sorts.
    """

    def __init__(self, d_sae: int, k: int, n_tokens: int) -> None:
        if k < 1:
            raise ValueError(f"k={k} must be >= 1")
        self.k, self.n_tokens = k, n_tokens
        self.value_FK = torch.full((d_sae, k), -torch.inf)
        self.image_FK = torch.full((d_sae, k), _NO_IMAGE, dtype=torch.int64)
        self.map_FKT = torch.zeros(d_sae, k, n_tokens)
        self.ratio_FK = torch.zeros(d_sae, k)

    @staticmethod
    def _order(value_FC: torch.Tensor, image_FC: torch.Tensor) -> torch.Tensor:
        """Column order per row: value descending, then image ascending (two stable sorts)."""
        by_image_FC = torch.argsort(image_FC, dim=1, stable=True)
        by_value_FC = torch.argsort(value_FC.gather(1, by_image_FC), dim=1, descending=True, stable=True)
        return by_image_FC.gather(1, by_value_FC)

    def update(
        self, start: int, codes_BTF: torch.Tensor, max_BF: torch.Tensor, ratio_BT: torch.Tensor | None = None
    ) -> None:
        """Merge images ``start .. start+B-1`` with codes ``codes_BTF`` and maxima ``max_BF``; with
        ``ratio_BT`` (each token's activation norm over its image's median, :func:`norm_ratios`), each new
        winner also keeps the ratio of its peak token (the first token of its largest code)."""
        n_feat, k = self.value_FK.shape
        b = max_BF.shape[0]
        new_FB = max_BF.T
        value_FC = torch.cat([self.value_FK, torch.where(new_FB > 0, new_FB, -torch.inf)], dim=1)
        image_C = torch.arange(start, start + b, dtype=torch.int64)
        image_FC = torch.cat([self.image_FK, image_C.expand(n_feat, b)], dim=1)
        chosen_FC = torch.zeros(n_feat, k + b, dtype=torch.bool)
        chosen_FC.scatter_(1, self._order(value_FC, image_FC)[:, :k], True)
        # evicted old slots and new winners come in equal numbers per feature; pair them in order
        feat_E, slot_E = torch.nonzero(~chosen_FC[:, :k], as_tuple=True)
        feat_W, col_W = torch.nonzero(chosen_FC[:, k:], as_tuple=True)
        if feat_W.numel() == 0:
            return
        self.value_FK[feat_E, slot_E] = value_FC[feat_W, k + col_W]
        self.image_FK[feat_E, slot_E] = start + col_W
        dev = codes_BTF.device
        maps_ET = codes_BTF[col_W.to(dev), :, feat_W.to(dev)].float().cpu()
        self.map_FKT[feat_E, slot_E] = maps_ET
        if ratio_BT is not None:
            self.ratio_FK[feat_E, slot_E] = ratio_BT[col_W, maps_ET.argmax(dim=1)]

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image_FK with -1 for none, value_FK with 0 for none, map_FKT), each feature's row ranked
        (:meth:`peak_ratios` in the same order)."""
        order_FK = self._order(self.value_FK, self.image_FK)
        value_FK = self.value_FK.gather(1, order_FK)
        image_FK = self.image_FK.gather(1, order_FK)
        map_FKT = self.map_FKT.gather(1, order_FK[:, :, None].expand(-1, -1, self.n_tokens))
        none_FK = ~torch.isfinite(value_FK)
        image_FK = torch.where(none_FK, -1, image_FK)
        value_FK = torch.where(none_FK, 0.0, value_FK)
        map_FKT = torch.where(none_FK[:, :, None], 0.0, map_FKT)
        return image_FK.numpy(), value_FK.numpy().astype(np.float32), map_FKT.numpy().astype(np.float32)

    def peak_ratios(self) -> np.ndarray:
        """``peak_norm_ratio_FK`` in :meth:`result`'s order (NaN for no image)."""
        order_FK = self._order(self.value_FK, self.image_FK)
        ratio_FK = self.ratio_FK.gather(1, order_FK)
        none_FK = ~torch.isfinite(self.value_FK.gather(1, order_FK))
        return torch.where(none_FK, torch.nan, ratio_FK).numpy().astype(np.float32)


def norm_ratios(x_BTD: torch.Tensor) -> torch.Tensor:
    """Each token's activation norm over the median norm of its image's tokens ``[B, T]`` (float32; the
    median of an even count is the lower middle value, ``torch.median``'s). A ViT's high-norm artifact
    tokens (Darcet et al. 2024) stand several times above 1."""
    norm_BT = x_BTD.float().norm(dim=-1)
    return norm_BT / norm_BT.median(dim=1, keepdim=True).values.clamp(min=1e-12)


def _token_kind(sae: Encoder, token_kind: str | None) -> str:
    if token_kind is not None:
        return token_kind
    kind = sae.cfg.get("token_kind") or sae.cfg.get("hook", {}).get("tokens")
    if kind is None:
        raise ValueError("the SAE's cfg names no token kind (hook.tokens); pass token_kind explicitly")
    return kind


def split_labels(store_path: str | os.PathLike, split: str, manifest_path: str | os.PathLike,
                 column: str = "label") -> np.ndarray:  # fmt: skip
    """Per image of ``split`` (store order), the manifest's ``column``, aligned by ``{split}_rows``."""
    group = open_store(store_path)
    split_array(group, split)
    rows = np.asarray(group[f"{split}_rows"][:], dtype=np.int64)
    manifest = read_manifest(Path(manifest_path))
    if column not in manifest.columns:
        raise KeyError(
            f"manifest {manifest_path} has no column {column!r} (columns: {list(manifest.columns)})"
        )
    if len(rows) and (rows.min() < 0 or rows.max() >= len(manifest)):
        raise ValueError(
            f"store {store_path} split {split!r} names manifest rows up to {rows.max()}, but {manifest_path} "
            f"has {len(manifest)} rows: the store was extracted from another manifest; re-extract it"
        )
    return manifest[column].to_numpy()[rows]


@torch.no_grad()
def compute_feature_stats(
    sae: Encoder,
    store_path: str | os.PathLike,
    split: str,
    out_dir: str | os.PathLike,
    k: int = 16,
    token_kind: str | None = None,
    labels: Sequence[str] | np.ndarray | None = None,
    batch_tokens: int = 4096,
    log_every: int = 20,
) -> Path:
    """Stream ``split`` of the store once and write the statistics of every feature to ``out_dir``.

    ``labels``: one class label per image of the split (store order, e.g. :func:`split_labels`); without
    it no class table is written. The directory is written aside and renamed into place when complete.
    """
    token_kind = _token_kind(sae, token_kind)
    group = open_store(store_path)
    array = split_array(group, split)
    layout = dict(group.attrs["token_layout"])
    tokens = token_slice(layout, token_kind)
    n_images, _, d_in = array.shape
    n_tok = len(range(*tokens.indices(array.shape[1])))
    if d_in != sae.d_in:
        raise ValueError(f"store {store_path} split {split!r} has d={d_in}, the SAE expects d_in={sae.d_in}")
    if labels is not None and len(labels) != n_images:
        raise ValueError(
            f"{len(labels)} labels given for {n_images} images of store {store_path} split {split!r}"
        )
    rows = np.asarray(group[f"{split}_rows"][:], dtype=np.int64)
    n_feat = sae.d_sae
    params = list(sae.parameters()) if isinstance(sae, torch.nn.Module) else []
    device = params[0].device if params else torch.device("cpu")
    per_batch = max(1, batch_tokens // max(1, n_tok))

    top = TopK(n_feat, k, n_tok)
    fires_F = torch.zeros(n_feat, dtype=torch.int64)
    sum_F = torch.zeros(n_feat, dtype=torch.float64)
    max_F = torch.zeros(n_feat)
    csr_counts, csr_indices, csr_max, csr_n, csr_sum = [], [], [], [], []
    for n_chunk, (start, acts_BTD) in enumerate(iter_chunks(array, tokens=tokens)):
        acts_BTD = np.asarray(acts_BTD)
        bad_B = nonfinite_rows(acts_BTD.reshape(acts_BTD.shape[0], -1))
        if bad_B.any():
            bad = start + int(np.argmax(bad_B))
            raise ValueError(
                f"store {store_path} split {split!r}: image {bad} (manifest row {rows[bad]}) has NaN/Inf "
                "activations; the store is damaged or was written by an interrupted job: re-extract it"
            )
        for s in range(0, acts_BTD.shape[0], per_batch):
            x_BTD = torch.from_numpy(acts_BTD[s : s + per_batch]).float()  # torch's fp16 cast is vectorised
            b = x_BTD.shape[0]
            # codes stay on the SAE's device; only per-image reductions [B, F] and new top maps move
            codes_BTF = (
                sae.encode(x_BTD.reshape(b * n_tok, d_in).to(device)).float().reshape(b, n_tok, n_feat)
            )
            max_BF = codes_BTF.amax(dim=1).cpu()
            n_BF = fire_counts(codes_BTF, dim=1).cpu()
            sum_BF = codes_BTF.sum(dim=1).cpu()
            fires_F += n_BF.sum(dim=0)
            sum_F += sum_BF.sum(dim=0, dtype=torch.float64)
            max_F = torch.maximum(max_F, max_BF.amax(dim=0))
            fired_BF = max_BF > 0
            img_N, feat_N = torch.nonzero(fired_BF, as_tuple=True)
            csr_counts.append(fired_BF.sum(dim=1).numpy())
            csr_indices.append(feat_N.numpy().astype(np.int32))
            csr_max.append(max_BF[img_N, feat_N].numpy())
            csr_n.append(n_BF[img_N, feat_N].numpy().astype(np.int32))
            csr_sum.append(sum_BF[img_N, feat_N].numpy())
            top.update(start + s, codes_BTF, max_BF, norm_ratios(x_BTD))
        if log_every and (n_chunk + 1) % log_every == 0:
            log.info("%s %s: %d / %d images", store_path, split, start + acts_BTD.shape[0], n_images)

    image_FK, value_FK, map_FKT = top.result()
    counts = np.concatenate(csr_counts) if csr_counts else np.zeros(0, np.int64)
    if counts.shape[0] != n_images:
        raise RuntimeError(f"store {store_path} split {split!r}: read {counts.shape[0]} of {n_images} images")
    csr = {
        "indptr": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "indices": np.concatenate(csr_indices) if csr_indices else np.zeros(0, np.int32),
        "max": np.concatenate(csr_max).astype(np.float32) if csr_max else np.zeros(0, np.float32),
        "n_active": np.concatenate(csr_n) if csr_n else np.zeros(0, np.int32),
        "sum": np.concatenate(csr_sum).astype(np.float32) if csr_sum else np.zeros(0, np.float32),
        "shape": np.array([n_images, n_feat], dtype=np.int64),
        "row": rows,
    }
    total = n_images * n_tok
    fires = fires_F.numpy()
    n_active_images = np.bincount(csr["indices"], minlength=n_feat)
    with np.errstate(invalid="ignore", divide="ignore"):
        features = pd.DataFrame(
            {
                "feature": np.arange(n_feat, dtype=np.int64),
                "n_active_tokens": fires,
                "frequency": fires / total if total else np.full(n_feat, np.nan),
                "mean_active": np.where(fires > 0, sum_F.numpy() / fires, np.nan),
                "n_active_images": n_active_images.astype(np.int64),
                "image_frequency": n_active_images / n_images if n_images else np.full(n_feat, np.nan),
                "max_activation": max_F.numpy().astype(np.float64),
            }
        )
    topk = {
        "image_FK": image_FK,
        "row_FK": np.where(image_FK >= 0, rows[np.maximum(image_FK, 0)], -1),
        "value_FK": value_FK,
        "map_FKT": map_FKT,
        "peak_norm_ratio_FK": top.peak_ratios(),
    }
    kept = layout.get("kept", "all")
    if kept == "subset" and token_kind == "patches":
        grid_cells = np.asarray(group[f"{split}_patch_index"][:], dtype=np.int64)
        topk["patch_index_FKT"] = np.where(image_FK[:, :, None] >= 0, grid_cells[np.maximum(image_FK, 0)], -1)
    images = pd.DataFrame({"image": np.arange(n_images, dtype=np.int64), "row": rows})
    if labels is not None:
        images["label"] = np.asarray(labels).astype(str)
    meta = {
        "format_version": FORMAT_VERSION,
        "store": str(store_path),
        "split": split,
        "token_kind": token_kind,
        "store_kept": kept,
        "grid": list(layout["grid"]) if token_kind == "patches" and "grid" in layout else None,
        # the share of the image's centre square the model saw (its resize and centre crop)
        "view": view_fraction(dict(group.attrs.get("preprocessing") or {})),
        "n_images": int(n_images),
        "tokens_per_image": int(n_tok),
        "n_tokens": int(total),
        "k": int(k),
        "d_sae": int(n_feat),
        "sae": json.loads(json.dumps(getattr(sae, "cfg", {}) or {})),
        "files": [*FILES, *([CLASS_FILE] if labels is not None else [])],
    }

    def write(tmp: Path) -> None:
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        features.to_parquet(tmp / "features.parquet", index=False)
        np.savez(tmp / "topk.npz", **topk)
        np.savez(tmp / "image_feature.npz", **csr)
        images.to_parquet(tmp / "images.parquet", index=False)
        if labels is not None:
            class_table(csr, images["label"].to_numpy(), n_tok).to_parquet(tmp / CLASS_FILE, index=False)

    return atomic_dir(out_dir, write)


def sweep_feature_stats(
    sae_dirs: list[str | os.PathLike],
    store_path: str | os.PathLike,
    split: str,
    manifest_path: str | os.PathLike,
    out_dirs: list[str | os.PathLike],
    k: int,
    batch_tokens: int = 4096,
) -> list[Path]:
    """:func:`compute_feature_stats` of each SAE of a sweep (its ``cfg.json`` names the token kind) on
    ``split`` of the store, with the manifest's labels (wnid or species directory) for the class table.
    One pass over the store per SAE; each directory is published atomically."""
    if len(sae_dirs) != len(out_dirs):
        raise ValueError(f"{len(sae_dirs)} SAEs but {len(out_dirs)} output directories")
    labels_N = split_labels(store_path, split, manifest_path)
    done = []
    for sae_dir, out_dir in zip(sae_dirs, out_dirs):
        sae = load(sae_dir)
        log.info("feature statistics of %s on %s/%s", sae_dir, store_path, split)
        done.append(compute_feature_stats(sae, store_path, split, out_dir, k=k, labels=labels_N,
                                          batch_tokens=batch_tokens))  # fmt: skip
    return done
