"""Reconstruction quality of an SAE on one split of an activation store (the transfer matrix's cells);
:func:`evaluate_many` measures a whole sweep's SAEs in one pass over the store (rule ``evaluate_<sweep>``).

Streams whole chunks of the store (the fast read pattern, shared/FACTS.md) and accumulates, in
float64: Σx and Σx² per dimension, Σ‖x−x̂‖², feature firing counts and Σ‖f‖₁. Then

* ``mse``  = Σ‖x−x̂‖² / N (original units, squared error summed over d, mean over tokens);
* ``fvu``  = Σ‖x−x̂‖² / Σ‖x−μ‖², μ the per-dimension mean of the evaluated tokens
  (Σ‖x−μ‖² = Σ_d (Σx² − N μ²));
* ``l0``   = mean number of active (f > 0) features per token;
* ``l1``   = mean Σ_f |f| per token (normalised units, as in training);
* ``dead_fraction``  = fraction of features that fire on none of the tokens;
* ``dense_fraction`` = fraction of features that fire on more than ``dense_threshold`` of the tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch

from vitsae.atomic import atomic_write
from vitsae.data.store import iter_chunks, open_store, split_array, token_slice
from vitsae.sae.checkpoint import SparseAutoencoder


def fire_counts(f: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """How many entries along ``dim`` of SAE codes ``f`` fire (``f > 0``), int64: ``[F]`` for ``f_BF``.
    Every inference kind ends in a ReLU or a non-negative threshold, so ``f >= 0`` and ``sign(f)`` is 1
    exactly where a feature fires: a float sum of signs is exact below 2**24 entries and 2.7x faster on one
    CPU thread than summing the booleans (8,192 x 3,072 codes, ``python bench/hot_loops.py``)."""
    if f.shape[dim] >= 2**24:
        raise ValueError(f"fire_counts sums fewer than 2**24 entries at once, got {f.shape[dim]}")
    return torch.sign(f).sum(dim=dim).to(torch.int64)


def evaluate(
    sae: SparseAutoencoder,
    store_path: str | os.PathLike,
    split: str,
    token_kind: str | None = None,
    batch_tokens: int = 8192,
    dense_threshold: float = 0.1,
) -> dict:
    """Metrics of ``sae`` on every ``token_kind`` token of ``split`` (default: the SAE's own token kind).

    Returns plain Python numbers: ``n_tokens, mse, fvu, l0, l1, dead_fraction, dense_fraction``
    plus ``store, split, token_kind, dense_threshold``.
    """
    return evaluate_many([sae], store_path, split, token_kind, batch_tokens, dense_threshold)[0]


def _token_kind(sae: SparseAutoencoder) -> str:
    kind = sae.cfg.get("token_kind") or sae.cfg.get("hook", {}).get("tokens")
    if kind is None:
        raise ValueError("SAE cfg names no token kind; pass token_kind explicitly")
    return kind


@torch.no_grad()
def evaluate_many(
    saes: Sequence[SparseAutoencoder],
    store_path: str | os.PathLike,
    split: str,
    token_kind: str | None = None,
    batch_tokens: int = 8192,
    dense_threshold: float = 0.1,
) -> list[dict]:
    """:func:`evaluate` for each of ``saes`` (e.g. one sweep's), in one pass over the store: each batch is
    read once and the SAEs' sums are kept apart, so each result is the one :func:`evaluate` gives alone.
    The SAEs must read the same tokens (``token_kind``, default their own, which must then agree) of
    the same width."""
    if not saes:
        raise ValueError("evaluate_many needs at least one SAE")
    if token_kind is None:
        kinds = sorted({_token_kind(sae) for sae in saes})
        if len(kinds) > 1:
            raise ValueError(f"the SAEs read different token kinds {kinds}; evaluate each kind on its own")
        token_kind = kinds[0]
    group = open_store(store_path)
    array = split_array(group, split)
    tokens = token_slice(dict(group.attrs["token_layout"]), token_kind)
    d_in = array.shape[2]
    for sae in saes:
        if d_in != sae.d_in:
            raise ValueError(
                f"store {store_path} split {split!r} has d={d_in}, the SAE expects d_in={sae.d_in}"
            )

    n = 0
    sum_x_D = torch.zeros(d_in, dtype=torch.float64)
    sum_x2_D = torch.zeros(d_in, dtype=torch.float64)
    # each SAE's sums stay on its device until the end (no copy of its codes or per-batch sync)
    devices = [sae.W_enc_DF.device for sae in saes]
    sum_err = [torch.zeros((), dtype=torch.float64, device=dev) for dev in devices]
    sum_l1 = [torch.zeros((), dtype=torch.float64, device=dev) for dev in devices]
    fires = [torch.zeros(sae.d_sae, dtype=torch.int64, device=dev) for sae, dev in zip(saes, devices)]
    for _, acts_BTD in iter_chunks(array, tokens=tokens):
        acts_ND = torch.from_numpy(np.ascontiguousarray(acts_BTD).reshape(-1, d_in).astype(np.float32))
        if not torch.isfinite(acts_ND).all():
            raise ValueError(
                f"activations contain NaN/Inf: store {store_path} split {split!r}; re-extract it"
            )
        for x_BD in acts_ND.split(batch_tokens):
            x64_BD = x_BD.to(torch.float64)
            sum_x_D += x64_BD.sum(dim=0)
            sum_x2_D += (x64_BD**2).sum(dim=0)
            moved = {}  # the batch on each device, copied once for all the SAEs there
            for i, sae in enumerate(saes):
                if devices[i] not in moved:
                    moved[devices[i]] = (x_BD.to(devices[i]), x64_BD.to(devices[i]))
                x_dev_BD, x64_dev_BD = moved[devices[i]]
                xhat_BD, f_BF = sae(x_dev_BD)
                sum_err[i] += ((xhat_BD.to(torch.float64) - x64_dev_BD) ** 2).sum()
                sum_l1[i] += f_BF.sum(dtype=torch.float64)
                fires[i] += fire_counts(f_BF)
            n += x_BD.shape[0]
    if n == 0:
        raise ValueError(f"store {store_path} split {split!r} has no {token_kind!r} tokens to evaluate")
    mu_D = sum_x_D / n
    total_var = float((sum_x2_D - n * mu_D**2).sum())
    return [
        {
            "store": str(store_path),
            "split": split,
            "token_kind": token_kind,
            "n_tokens": int(n),
            "mse": err / n,
            "fvu": err / total_var if total_var > 0 else float("nan"),
            "l0": float(fires_F.sum()) / n,
            "l1": float(l1) / n,
            "dead_fraction": float((fires_F == 0).double().mean()),
            "dense_fraction": float((fires_F > dense_threshold * n).double().mean()),
            "dense_threshold": float(dense_threshold),
        }
        for err, l1, fires_F in zip(
            (float(e) for e in sum_err), sum_l1, (f.cpu() for f in fires), strict=True
        )
    ]


@torch.no_grad()
def sample_metrics(sae: SparseAutoencoder, x_ND: torch.Tensor, batch_tokens: int = 8192) -> dict:
    """The metrics of :func:`evaluate` on tokens in memory (``x_ND``, original units), with each feature's
    firing count: ``n_tokens``, ``fvu`` (against the sample's own mean, float64), ``l0``, ``fired_F``
    (int64 NumPy ``[F]``)."""
    device = sae.W_enc_DF.device
    x64_ND = x_ND.to(torch.float64)
    total = float(((x64_ND - x64_ND.mean(dim=0)) ** 2).sum())
    err, active = 0.0, 0
    fired_F = torch.zeros(sae.d_sae, dtype=torch.int64)
    for x_BD in x_ND.split(batch_tokens):
        xhat_BD, f_BF = sae(x_BD.to(device))
        err += float(((xhat_BD.cpu().to(torch.float64) - x_BD.to(torch.float64)) ** 2).sum())
        fired_batch_F = fire_counts(f_BF).cpu()
        active += int(fired_batch_F.sum())
        fired_F += fired_batch_F
    n = x_ND.shape[0]
    return {"n_tokens": n, "fvu": err / total if total > 0 else float("nan"), "l0": active / n,
            "fired_F": fired_F.numpy()}  # fmt: skip


def identity(sae: SparseAutoencoder) -> dict:
    """Which SAE this is, from its ``cfg.json``: model, layer, sweep, sae_id and the dataset it was
    trained on (``train_dataset``)."""
    meta = sae.cfg.get("meta", {})
    missing = [k for k in ("model", "layer", "sweep", "dataset") if k not in meta]
    if missing or "sae_id" not in sae.cfg:
        raise KeyError(f"the SAE's cfg.json lacks {missing or ['sae_id']}; retrain it with this version")
    return {"model": meta["model"], "layer": int(meta["layer"]), "sweep": meta["sweep"], "sae_id": sae.cfg["sae_id"],
            "train_dataset": meta["dataset"]}  # fmt: skip


def write_json(result: dict, path: str | os.PathLike) -> None:
    """Write ``result`` as JSON atomically."""
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda p: p.write_text(text))
