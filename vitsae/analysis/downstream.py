"""Downstream fidelity of SAEs: does the model still classify images when an SAE's reconstruction
replaces its activations at one layer? ("accuracy recovered", finding 3's second criterion.)

For one activation store (dataset T, model, layer l; it must keep all tokens) and SAEs of that model and
layer trained on any dataset S (T itself: in-domain; another: transferred):

* **Final representation**: :meth:`vitsae.data.models.VisionModel.finish` runs blocks l+1.. on the
  stored block-l output and applies the model's own head: DINOv2, the final norm's CLS token; CLIP, the
  projected image embedding (``ln_post``, CLS, ``proj``). The model is rebuilt from the store's ``model``
  attrs and must match the weight digest the store recorded (``weights.state_sha256``).
* **Labels**: the manifest's ``label`` column (ImageNet: the class wnid; iNat2021: the species directory,
  one species each; imagefolder: the class folder) of each stored image (``{split}_rows``).
* **Probe**, fitted once on the clean representation of the train split (a seeded sample of
  ``probe_max_images`` images when it has more), in float64: ``ridge``, features standardised with the
  sample's mean and std, ridge regression on the centred one-hot labels in closed form,
  W = (C + λ·tr(C)/d·I)⁻¹ Xᵀ(Y − ȳ)/n with X the standardised features, C = XᵀX/n and λ = ``ridge``, predicted class argmax(XW + ȳ);
  or ``centroid``, features centred with the sample's mean, nearest class mean by cosine. Evaluation
  images of a class the sample lacks count as wrong.
* **Splice**: the positions of the SAE's token kind (patches for a patch SAE: CLS and registers stay
  clean; the CLS for a CLS SAE; every token for an ``all`` SAE) are replaced by the SAE's reconstruction.
  **Ablation** replaces the same positions by the layer's mean token of that kind, over the probe's
  train sample (float64 sum, used in float32).
* On the evaluation split: acc_clean, acc_ablated (once per token kind) and acc_spliced (per SAE), and
  accuracy recovered = (acc_spliced − acc_ablated) / (acc_clean − acc_ablated): 1 when the reconstruction
  is exact, 0 when it does no better than the mean (not clipped: a splice may beat the clean model on a
  small split, or do worse than the mean). Left NaN (with a ``reason``) when acc_clean − acc_ablated
  < ``min_accuracy_span``: the layer then does not matter to the probe, and nothing can be recovered.

Cost: one pass over the chunks holding the train sample (the remaining blocks run on the sampled images
only) and one over the evaluation split, each chunk read once and used for every SAE; SAEs are applied
``batch_tokens`` tokens at a time. Memory: one chunk, the train sample's representations, all SAEs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitsae.analysis.settings import TransferSettings
from vitsae.atomic import atomic_write
from vitsae.data.manifest import manifest_digest, read_manifest
from vitsae.data.models import VisionModel, load_model
from vitsae.data.settings import ModelSpec
from vitsae.data.store import StoreError, chunk_ranges, open_store, split_array, token_slice
from vitsae.sae.checkpoint import SparseAutoencoder, load
from vitsae.sae.evaluate import identity
from vitsae.sae.settings import split_seed

log = logging.getLogger("vitsae.analysis.downstream")

#: The manifest column the probe classifies.
LABELS = "label"
COLUMNS = ["model", "layer", "sweep", "sae_id", "setting", "seed", "train_dataset", "eval_dataset", "in_domain",
           "eval_split", "token_kind", "probe", "labels", "n_train", "n_eval", "n_classes", "acc_clean",
           "acc_ablated", "acc_spliced", "accuracy_recovered", "reason"]  # fmt: skip


@dataclass(frozen=True)
class Probe:
    """A fitted linear probe: ``scores = ((x − mu) / sd) @ W + b``, class = argmax (module docstring)."""

    kind: str
    mu_D: np.ndarray
    sd_D: np.ndarray
    W_DC: np.ndarray
    b_C: np.ndarray

    def predict(self, rep_ND: np.ndarray) -> np.ndarray:
        """Class index (0..n_classes − 1) of each row."""
        z_ND = (np.asarray(rep_ND, dtype=np.float64) - self.mu_D) / self.sd_D
        if self.kind == "centroid":
            z_ND = z_ND / np.maximum(np.linalg.norm(z_ND, axis=1, keepdims=True), 1e-300)
        return np.argmax(z_ND @ self.W_DC + self.b_C, axis=1)


def fit_probe(
    rep_ND: np.ndarray, y_N: np.ndarray, n_classes: int, kind: str = "ridge", ridge: float = 1.0
) -> Probe:
    """Fit a ``ridge`` or ``centroid`` probe (module docstring) on representations ``rep_ND`` with class
    indices ``y_N`` in 0..n_classes − 1, in float64."""
    x_ND = np.asarray(rep_ND, dtype=np.float64)
    n, d = x_ND.shape
    mu_D = x_ND.mean(axis=0)
    if kind == "centroid":
        z_ND = x_ND - mu_D
        z_ND /= np.maximum(np.linalg.norm(z_ND, axis=1, keepdims=True), 1e-300)
        m_CD = np.zeros((n_classes, d))
        np.add.at(m_CD, y_N, z_ND)
        m_CD /= np.maximum(np.linalg.norm(m_CD, axis=1, keepdims=True), 1e-300)
        return Probe(kind, mu_D, np.ones(d), m_CD.T.copy(), np.zeros(n_classes))
    if kind != "ridge":
        raise ValueError(f"unknown probe {kind!r}; transfer.probe is ridge or centroid")
    sd_D = x_ND.std(axis=0)
    sd_D[sd_D == 0] = 1.0  # a constant feature stays 0 after centring
    z_ND = (x_ND - mu_D) / sd_D
    y_NC = np.eye(n_classes)[y_N]
    ybar_C = y_NC.mean(axis=0)
    c_DD = z_ND.T @ z_ND / n
    penalty = ridge * np.trace(c_DD) / d
    W_DC = np.linalg.solve(c_DD + penalty * np.eye(d), z_ND.T @ (y_NC - ybar_C) / n)
    return Probe(kind, mu_D, sd_D, W_DC, ybar_C)


def spliced(
    acts_BTD: torch.Tensor, tokens: slice, sae: SparseAutoencoder, batch_tokens: int = 8192
) -> torch.Tensor:
    """A copy of ``acts_BTD`` with the ``tokens`` positions replaced by ``sae``'s reconstruction of them."""
    out_BTD = acts_BTD.clone()
    part_BPD = out_BTD[:, tokens]
    x_ND = part_BPD.reshape(-1, part_BPD.shape[2])
    xhat_ND = torch.cat([sae(x_ND[i : i + batch_tokens])[0] for i in range(0, len(x_ND), batch_tokens)])
    out_BTD[:, tokens] = xhat_ND.reshape(part_BPD.shape).to(out_BTD.dtype)
    return out_BTD


def ablated(acts_BTD: torch.Tensor, tokens: slice, mean_D: torch.Tensor) -> torch.Tensor:
    """A copy of ``acts_BTD`` with the ``tokens`` positions replaced by ``mean_D``."""
    out_BTD = acts_BTD.clone()
    out_BTD[:, tokens] = mean_D.to(out_BTD.dtype)
    return out_BTD


def accuracy_recovered(
    acc_clean: float, acc_ablated: float, acc_spliced: float, min_span: float
) -> tuple[float, str]:
    """``(acc_spliced − acc_ablated) / (acc_clean − acc_ablated)`` and ``""``, or NaN and why not."""
    span = acc_clean - acc_ablated
    if not span >= max(min_span, np.finfo(float).tiny):
        return float("nan"), (
            f"acc_clean - acc_ablated = {span:.4f} < transfer.min_accuracy_span = {min_span}: mean-ablating "
            "the layer hardly changes the probe's accuracy, so there is nothing to recover"
        )
    return (acc_spliced - acc_ablated) / span, ""


def _token_kind(sae: SparseAutoencoder, where: str) -> str:
    kind = sae.cfg.get("token_kind") or sae.cfg.get("hook", {}).get("tokens")
    if kind is None:
        raise ValueError(
            f"SAE {where}: cfg.json names no token kind (token_kind); retrain it with this version"
        )
    return kind


def _model(attrs: dict, path: Path, device: str) -> VisionModel:
    """The model that wrote the store, rebuilt from its spec; refused unless its weights' digest matches."""
    if "model" not in attrs or "family" not in attrs["model"]:
        raise StoreError(f"store {path} names no model spec (attrs 'model'); re-extract it with this version")
    vm = load_model(ModelSpec(**attrs["model"]), device)
    recorded = attrs.get("weights", {}).get("state_sha256")
    if recorded is not None and recorded != vm.weights["state_sha256"]:
        raise StoreError(
            f"store {path} was written by model weights with digest {recorded}, but the model rebuilt from its "
            f"spec {attrs['model']} has {vm.weights['state_sha256']}: the weights differ (another timm/open_clip "
            "version, or changed pretrained weights); re-extract the store with this environment"
        )
    vm.check_layer(int(attrs["layer"]))
    return vm


def _labels(manifest_path: Path, attrs: dict, path: Path) -> np.ndarray:
    """The label of every manifest row, after checking that the store was extracted from this manifest."""
    recorded = attrs.get("manifest_sha256")
    if recorded is not None and recorded != manifest_digest(manifest_path):
        raise StoreError(
            f"store {path} was extracted from a manifest with sha256 {recorded}, not {manifest_path}: the "
            "labels would not match the images; give the store's own manifest, or re-extract the store"
        )
    return read_manifest(manifest_path)[LABELS].to_numpy()


def _chunks(array, images: np.ndarray):
    """``(positions in images, acts_BTD)`` of the sorted image indices ``images``, chunk by chunk."""
    for start, stop in chunk_ranges(array.shape[0], array.chunks[0]):
        lo, hi = np.searchsorted(images, [start, stop])
        if lo < hi:
            yield np.arange(lo, hi), array[start:stop][images[lo:hi] - start]


def _tensor(acts: np.ndarray, device: str, where: str) -> torch.Tensor:
    acts_BTD = torch.from_numpy(np.ascontiguousarray(acts)).to(device=device, dtype=torch.float32)
    if not torch.isfinite(acts_BTD).all():
        raise ValueError(f"{where}: the activations hold NaN/Inf; re-extract the store")
    return acts_BTD


@torch.inference_mode()
def downstream_table(store_path: str | os.PathLike, manifest_path: str | os.PathLike,
                     sae_dirs: Sequence[str | os.PathLike], train_split: str, eval_split: str,
                     settings: TransferSettings | None = None, device: str = "cpu", seed: int = 0,
                     batch_tokens: int = 8192) -> pd.DataFrame:  # fmt: skip
    """One row per SAE of :data:`COLUMNS`: the probe's accuracy on ``eval_split`` of the store at
    ``store_path`` (clean, mean-ablated, spliced) and the accuracy recovered (module docstring).
    ``manifest_path``: the store's manifest (labels); ``settings``: the config's ``transfer`` section (probe,
    ridge, probe_max_images, min_accuracy_span); ``seed``: the probe's train sample."""
    settings = TransferSettings() if settings is None else settings
    path, manifest_path = Path(store_path), Path(manifest_path)
    group = open_store(path)
    attrs = group.attrs.asdict()
    layout = dict(attrs["token_layout"])
    kept = layout.get("kept", "all")
    if kept != "all":
        raise StoreError(
            f"store {path} keeps {kept!r} tokens only (extraction tokens: {kept}); downstream fidelity runs the "
            "model's remaining blocks on every token of an image, so it needs a store extracted with "
            f"extraction.tokens: all (or models.{attrs.get('model', {}).get('name', '<model>')}.tokens: all)"
        )
    dataset, layer = attrs["dataset"], int(attrs["layer"])
    d = split_array(group, eval_split).shape[2]
    saes = []
    for sae_dir in sae_dirs:
        sae = load(sae_dir).to(device).eval()
        ident = identity(sae)
        if (ident["model"], ident["layer"], sae.d_in) != (attrs["model"]["name"], layer, d):
            raise ValueError(
                f"SAE {sae_dir} was trained on {ident['model']} layer {ident['layer']} (d_in {sae.d_in}); "
                f"store {path} holds {attrs['model']['name']} layer {layer} (d {d})"
            )
        saes.append((sae, ident, _token_kind(sae, str(sae_dir))))
    kinds = sorted({kind for _, _, kind in saes})
    vm = _model(attrs, path, device)

    train, evals = split_array(group, train_split), split_array(group, eval_split)
    n_all, cap = train.shape[0], settings.probe_max_images
    sample = np.arange(n_all)
    if n_all > cap:
        sample = np.sort(np.random.default_rng(seed).choice(n_all, cap, replace=False))
    labels = _labels(manifest_path, attrs, path)
    labels_train = labels[np.asarray(group[f"{train_split}_rows"][:], dtype=np.int64)[sample]]
    labels_eval = labels[np.asarray(group[f"{eval_split}_rows"][:], dtype=np.int64)]
    classes = np.unique(labels_train)
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([index[c] for c in labels_train])
    y_eval = np.array([index.get(c, -1) for c in labels_eval])

    sums = {kind: np.zeros(train.shape[2]) for kind in kinds}
    counts = dict.fromkeys(kinds, 0)
    reps = []
    for i, (pos, acts) in enumerate(_chunks(train, sample)):
        acts_BTD = _tensor(acts, device, f"store {path} split {train_split!r}, sampled images {pos[0]}..")
        for kind in kinds:
            part = acts_BTD[:, token_slice(layout, kind)].double()
            sums[kind] += part.sum(dim=(0, 1)).cpu().numpy()
            counts[kind] += part.shape[0] * part.shape[1]
        reps.append(vm.finish(acts_BTD, layer).double().cpu().numpy())
        if i % 50 == 0:
            log.info("%s: train sample, chunk %d (%d of %d images)", path, i, pos[-1] + 1, len(sample))
    probe = fit_probe(np.concatenate(reps), y_train, len(classes), settings.probe, settings.ridge)
    means = {
        kind: torch.as_tensor(sums[kind] / counts[kind], dtype=torch.float32, device=device) for kind in kinds
    }

    def hits(x_BTD: torch.Tensor, y_B: np.ndarray) -> int:
        return int((probe.predict(vm.finish(x_BTD, layer).double().cpu().numpy()) == y_B).sum())

    correct = {"clean": 0, **{("ablated", k): 0 for k in kinds}, **{j: 0 for j in range(len(saes))}}
    every = np.arange(evals.shape[0])
    for i, (pos, acts) in enumerate(_chunks(evals, every)):
        acts_BTD = _tensor(acts, device, f"store {path} split {eval_split!r}, images {pos[0]}..{pos[-1]}")
        y_B = y_eval[pos]
        correct["clean"] += hits(acts_BTD, y_B)
        for kind in kinds:
            correct[("ablated", kind)] += hits(ablated(acts_BTD, token_slice(layout, kind), means[kind]), y_B)
        for j, (sae, _, kind) in enumerate(saes):
            correct[j] += hits(spliced(acts_BTD, token_slice(layout, kind), sae, batch_tokens), y_B)
        if i % 20 == 0:
            log.info("%s: %s, chunk %d (%d of %d images)", path, eval_split, i, pos[-1] + 1, len(every))

    n_eval = len(every)
    acc_clean = correct["clean"] / n_eval
    rows = []
    for j, (_, ident, kind) in enumerate(saes):
        acc_ablated, acc_spliced = correct[("ablated", kind)] / n_eval, correct[j] / n_eval
        value, reason = accuracy_recovered(acc_clean, acc_ablated, acc_spliced, settings.min_accuracy_span)
        setting, sae_seed = split_seed(ident["sae_id"])
        rows.append({
            "model": ident["model"], "layer": layer, "sweep": ident["sweep"], "sae_id": ident["sae_id"],
            "setting": setting, "seed": sae_seed, "train_dataset": ident["train_dataset"], "eval_dataset": dataset,
            "in_domain": ident["train_dataset"] == dataset, "eval_split": eval_split, "token_kind": kind,
            "probe": settings.probe, "labels": LABELS, "n_train": len(sample), "n_eval": n_eval,
            "n_classes": len(classes), "acc_clean": acc_clean, "acc_ablated": acc_ablated, "acc_spliced": acc_spliced,
            "accuracy_recovered": value, "reason": reason,
        })  # fmt: skip
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["model", "layer", "sweep", "sae_id", "train_dataset"], ignore_index=True)


def write_downstream(store_path: str | os.PathLike, manifest_path: str | os.PathLike,
                     sae_dirs: Sequence[str | os.PathLike], train_split: str, eval_split: str,
                     out_csv: str | os.PathLike, settings: TransferSettings | None = None,
                     device: str = "cpu", seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """:func:`downstream_table`, written to ``out_csv`` atomically."""
    df = downstream_table(
        store_path, manifest_path, sae_dirs, train_split, eval_split, settings, device, seed
    )
    atomic_write(out_csv, lambda p: df.to_csv(p, index=False, float_format="%.6g"))
    return df
