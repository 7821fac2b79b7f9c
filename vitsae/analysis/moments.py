"""Mean and covariance of a bounded sample of a store's tokens, shared by the decoder-matching floor
(:mod:`vitsae.analysis.decoders`) and finding 3's baselines (:mod:`vitsae.analysis.baselines`). No charts
here, so that neither reruns when the other's figure changes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from vitsae.data.store import iter_chunks, open_store, split_array, token_slice


@dataclass(frozen=True)
class DataCovariance:
    """The centred covariance ``cov_DD`` and mean ``mu_D`` (float64) of ``n`` tokens of one store, split and token kind."""

    n: int
    cov_DD: np.ndarray
    mu_D: np.ndarray | None = None

    @property
    def effective_dim(self) -> float:
        """(tr Σ)² / tr Σ²: ``D`` for isotropic data, 1 when one direction holds all the variance."""
        eig_D = np.clip(np.linalg.eigvalsh(self.cov_DD), 0, None)
        return float(eig_D.sum() ** 2 / max((eig_D**2).sum(), np.finfo(float).tiny))


def data_covariance(store: str | os.PathLike, split: str, token_kind: str, max_tokens: int = 200_000,
                    seed: int = 0) -> DataCovariance:  # fmt: skip
    """:class:`DataCovariance` of the ``token_kind`` tokens of ``split``: whole chunks in a seeded random
    order, the last one cut, until ``max_tokens`` tokens (every token of a smaller split). Float64 sums of
    tokens shifted by the first chunk's mean (so that the sums of squares do not cancel)."""
    group = open_store(store)
    array = split_array(group, split)
    tokens = token_slice(dict(group.attrs["token_layout"]), token_kind)
    d = array.shape[2]
    order = np.random.default_rng(seed).permutation(-(-array.shape[0] // array.chunks[0]))
    n, shift_D, s_D, ss_DD = 0, None, np.zeros(d), np.zeros((d, d))
    for _, acts_BTD in iter_chunks(array, order=order, tokens=tokens):
        x_ND = np.ascontiguousarray(acts_BTD).reshape(-1, d)[: max_tokens - n].astype(np.float64)
        if not np.isfinite(x_ND).all():
            raise ValueError(f"store {store} split {split!r} holds NaN/Inf activations; re-extract it")
        shift_D = x_ND.mean(axis=0) if shift_D is None else shift_D
        x_ND -= shift_D
        n += len(x_ND)
        s_D += x_ND.sum(axis=0)
        ss_DD += x_ND.T @ x_ND
        if n >= max_tokens:
            break
    if n < 2:
        raise ValueError(f"store {store} split {split!r} has {n} {token_kind!r} tokens; a covariance needs 2")
    mu_D = s_D / n
    return DataCovariance(n, (ss_DD - n * np.outer(mu_D, mu_D)) / (n - 1), mu_D + shift_D)
