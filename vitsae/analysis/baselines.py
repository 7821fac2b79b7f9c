"""Finding 3's baselines: what a transferred SAE's reconstruction of the target dataset is compared with,
beside the target's own SAEs (:mod:`vitsae.analysis.transfer`).

For an SAE trained on the source dataset S and evaluated on the target T (tokens of the SAE's kind, the
evaluation split of T), with ``k`` = round(the SAE's L0 on T):

* ``pca_fvu``: PCA fitted on S (mean μ_S and the top-``k`` eigenvectors of S's covariance), evaluated on T:
  x̂ = μ_S + P_k P_kᵀ (x − μ_S). A linear code as dense as the SAE's: an SAE that does no better than this
  has not learned anything the source's second moments do not already give.
* ``pca_target_fvu``: the same with PCA fitted on T's own training split, a reference for how much a
  k-dimensional linear code can do on T at all.
* ``recentred_fvu`` / ``recentred_l0``: the source SAE with ``b_dec`` moved by the mean shift
  (``b_dec + scale·(μ_T − μ_S)``, both means from the training splits), no training. How much of the
  transfer gap is only a shifted mean.
* ``mean_shift``: ‖μ_T − μ_S‖ / √(T's total variance per token), the shift in units of T's spread.

Every FVU is Σ‖x − x̂‖² / Σ‖x − μ‖² with μ the evaluated tokens' own mean, exactly as
:func:`vitsae.sae.evaluate.evaluate` defines it, so the numbers sit beside the SAEs' on one axis.
Moments are accumulated in float64 over a seeded random sample of whole chunks of the training split
(at most ``max_tokens`` tokens); the evaluation split is read whole.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitsae.analysis.moments import data_covariance
from vitsae.atomic import atomic_write
from vitsae.data.store import iter_chunks, open_store, split_array, token_slice
from vitsae.sae import evaluate
from vitsae.sae.checkpoint import SparseAutoencoder, load
from vitsae.sae.settings import split_seed

COLUMNS = ["model", "layer", "sweep", "sae_id", "setting", "seed", "train_dataset", "eval_dataset", "eval_split",
           "token_kind", "l0_target", "pca_k", "pca_fvu", "pca_target_fvu", "recentred_fvu", "recentred_l0",
           "mean_shift"]  # fmt: skip


@dataclass(frozen=True)
class Moments:
    """Mean ``mu_D``, covariance ``cov_DD`` (float64) and eigenvectors ``V_DD`` (columns, by descending
    eigenvalue ``eig_D``) of a sample of ``n`` tokens."""

    n: int
    mu_D: np.ndarray
    cov_DD: np.ndarray
    eig_D: np.ndarray
    V_DD: np.ndarray


def _tokens(store: str | os.PathLike, token_kind: str) -> slice:
    return token_slice(dict(open_store(store).attrs["token_layout"]), token_kind)


def _rows(acts_BTD: np.ndarray, d: int, where: str) -> np.ndarray:
    x = np.ascontiguousarray(acts_BTD).reshape(-1, d).astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"activations contain NaN/Inf: {where}; re-extract the store")
    return x


def moments(store: str | os.PathLike, split: str, token_kind: str, max_tokens: int, seed: int = 0) -> Moments:
    """:class:`Moments` of ``token_kind`` tokens of ``split`` (:func:`vitsae.analysis.moments.data_covariance`:
    whole chunks in a seeded random order, at most ``max_tokens`` tokens), with the covariance's eigenvectors."""
    c = data_covariance(store, split, token_kind, max_tokens, seed)
    eig, V = np.linalg.eigh(c.cov_DD)
    return Moments(c.n, c.mu_D, c.cov_DD, eig[::-1].copy(), V[:, ::-1].copy())


def pca_fvu_curve(fit: Moments, store: str | os.PathLike, split: str, token_kind: str) -> np.ndarray:
    """FVU on ``split`` of a PCA fitted elsewhere (``fit``), for every k = 0..d: entry k keeps the top k
    components. One pass: the residual of the top k is ‖x − μ‖² − Σ_{i<k} ((x − μ)·v_i)²."""
    array = split_array(open_store(store), split)
    d = array.shape[2]
    n, s_D, ss_D, c2_D, r2 = 0, np.zeros(d), np.zeros(d), np.zeros(d), 0.0
    for _, acts in iter_chunks(array, tokens=_tokens(store, token_kind)):
        x = _rows(acts, d, f"store {store} split {split!r}")
        n += len(x)
        s_D += x.sum(axis=0)
        ss_D += (x**2).sum(axis=0)
        xc = x - fit.mu_D
        r2 += float((xc**2).sum())
        c2_D += ((xc @ fit.V_DD) ** 2).sum(axis=0)
    total = float((ss_D - s_D**2 / n).sum())
    err_K = r2 - np.concatenate([[0.0], np.cumsum(c2_D)])
    return np.maximum(err_K, 0.0) / total


def recentred(sae: SparseAutoencoder, source: Moments, target: Moments) -> SparseAutoencoder:
    """A copy of ``sae`` with ``b_dec`` moved by the mean shift, so that target tokens enter the encoder
    centred as source tokens did and the reconstruction lands around the target's mean."""
    out = copy.deepcopy(sae)
    shift = torch.as_tensor(target.mu_D - source.mu_D, dtype=out.b_dec_D.dtype, device=out.b_dec_D.device)
    with torch.no_grad():
        out.b_dec_D += out.scale * shift
    return out


def baselines_table(stores: Mapping[str, str | os.PathLike], sae_dirs: Sequence[str | os.PathLike],
                    eval_paths: Sequence[str | os.PathLike], train_split: str, eval_split: str,
                    max_tokens: int, seed: int = 0, device: str = "cpu") -> pd.DataFrame:  # fmt: skip
    """One row per (SAE, other dataset) of :data:`COLUMNS`. ``stores``: dataset → the store of the SAEs'
    (model, layer) on it; ``eval_paths``: the SAEs' evaluation JSONs on the other datasets (their L0 there
    sets k). SAEs whose training dataset has no store here are refused."""
    l0 = {}
    for path in eval_paths:
        rec = json.loads(Path(path).read_text())
        l0[(rec["train_dataset"], rec["sae_id"], rec["eval_dataset"])] = float(rec["l0"])
    cache: dict[tuple[str, str], Moments] = {}

    def fit(dataset: str, kind: str) -> Moments:
        if (dataset, kind) not in cache:
            cache[(dataset, kind)] = moments(stores[dataset], train_split, kind, max_tokens, seed)
        return cache[(dataset, kind)]

    curves: dict[tuple[str, str, str], np.ndarray] = {}
    rows = []
    for sae_dir in sae_dirs:
        sae = load(sae_dir).to(device)
        ident = evaluate.identity(sae)
        source = ident["train_dataset"]
        if source not in stores:
            raise ValueError(
                f"SAE {sae_dir} was trained on {source!r}, which has no store among {sorted(stores)}"
            )
        kind = sae.cfg.get("token_kind") or sae.cfg.get("hook", {}).get("tokens") or "patches"
        for target in sorted(stores):
            if target == source:
                continue
            key = (source, ident["sae_id"], target)
            if key not in l0:
                raise ValueError(f"no evaluation of SAE {sae_dir} on {target!r} among the inputs")
            s, t = fit(source, kind), fit(target, kind)
            for name, m in (("source", s), ("target", t)):
                ck = (name, source if name == "source" else target, target, kind)
                if ck not in curves:
                    curves[ck] = pca_fvu_curve(m, stores[target], eval_split, kind)
            k = int(min(max(round(l0[key]), 1), len(s.mu_D)))
            rec = evaluate.evaluate(recentred(sae, s, t), stores[target], eval_split, token_kind=kind)
            total_per_token = float(np.trace(t.cov_DD))
            setting, seed_ = split_seed(ident["sae_id"])
            rows.append({
                "model": ident["model"], "layer": ident["layer"], "sweep": ident["sweep"], "sae_id": ident["sae_id"],
                "setting": setting, "seed": seed_, "train_dataset": source, "eval_dataset": target,
                "eval_split": eval_split, "token_kind": kind, "l0_target": l0[key], "pca_k": k,
                "pca_fvu": float(curves[("source", source, target, kind)][k]),
                "pca_target_fvu": float(curves[("target", target, target, kind)][k]),
                "recentred_fvu": float(rec["fvu"]), "recentred_l0": float(rec["l0"]),
                "mean_shift": float(np.linalg.norm(t.mu_D - s.mu_D) / np.sqrt(total_per_token)),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def write_baselines(stores, sae_dirs, eval_paths, train_split, eval_split, max_tokens, out_csv, seed=0,
                    device="cpu") -> pd.DataFrame:  # fmt: skip
    df = baselines_table(stores, sae_dirs, eval_paths, train_split, eval_split, max_tokens, seed, device)
    atomic_write(out_csv, lambda p: df.to_csv(p, index=False, float_format="%.6g"))
    return df
