"""A planted dictionary shaped like ViT activations: the ground truth of the SAE-quality benchmark.

An SAE's features are only worth reading if its trainer recovers directions that really are in the
data. :func:`generate` draws tokens ``x = Σᵢ cᵢ·dᵢ + μ + ε`` from a known dictionary ``dᵢ``
(:func:`true_directions`) with the properties below, each fixed in :class:`PlantedSpec` before any SAE
was trained on it, and each there because real ViT activations have it (``bench/sae_quality.py``
trains SAEs on it through the real sweep path; ``tests/unit/test_sae_quality.py`` checks every
property against float64 NumPy).

* **Dictionary**: ``d = 64``, ``n_true = 256`` unit-norm directions, Gaussian and normalised, except
  ``n_outlier = 3`` that are axis-aligned on the 3 *outlier dimensions* (drawn per seed). An SAE of
  x8 (512 features) has room for all of them.
* **Power-law firing frequencies**: the 253 ordinary directions fire with marginal frequency
  ``qᵢ ∝ i^(−0.8)`` (rank ``i`` = index + 1), scaled so that ``Σ qᵢ = 8`` (the true L0 is 8 plus the
  outliers' 0.6). SAE features on language and vision models fire with heavy-tailed, roughly power-law
  frequencies (Bricken et al. 2023 "Towards monosemanticity"; Templeton et al. 2024 "Scaling
  monosemanticity"): a few are common, most are rare. The exponent leaves ``c·1^(−0.8) ≈ 0.75`` for
  the commonest direction, above the 0.6 ceiling this benchmark allows, so frequencies are
  ``min(0.6, c·i^(−0.8))`` with ``c`` solved for ``Σ qᵢ = 8`` (only rank 1 is clipped).
* **Correlated pairs**: 32 disjoint pairs of ordinary directions (random per seed); when the pair's
  first fires, its second also fires with probability 0.5, on top of its own independent firing.
  Features co-occur far above chance in real models (object parts, a texture with its object), and
  co-occurring features are what ReLU+L1 SAEs tend to merge ("feature absorption", Chanin et al. 2024;
  Bricken et al. 2023). The first of a pair is its rarer member, and the second's independent rate is
  set so that its *marginal* frequency is still its power-law ``qᵢ`` (``pᵢ = 1 − (1 − qᵢ)/(1 − q_first/2)``):
  the frequencies stay a power law and ``E[L0]`` stays 8.
* **Non-negative magnitudes**: a firing direction's code is ``sᵢ · LogNormal(0, 0.4)``, ``sᵢ`` uniform in
  [0.5, 2] per direction: features have a direction-specific typical size and vary per token, and are
  non-negative, as ReLU SAE features are by construction.
* **Outlier dimensions ("massive activations")**: each of the 3 outlier dimensions has its own
  axis-aligned direction firing on 20% of tokens at ``12 · LogNormal(0, 0.2)``, so these 3 dimensions
  carry most of the centred variance (~80%; :func:`moments` gives the share). ViTs have a few
  dimensions with activations orders of magnitude above the rest, on a subset of tokens (Sun et al.
  2024 "Massive activations in large language models", which covers ViTs too; Darcet et al. 2024
  "Vision transformers need registers": high-norm outlier tokens). An SAE fitted by squared error is
  pulled hard towards them.
* **Per-dimension offsets**: a mean ``μ = 5.8·R·g`` (``g`` a Gaussian unit vector, ``R`` the centred RMS
  token norm ``sqrt(E‖x − E x‖²)``), 5.8 being the ratio ‖mean‖ / centred norm a tester measured on
  activation-like data (23.9 against 4.1), *plus* extra offsets on the outlier dimensions of +30, −25
  and +20 in those units (``R · (30, −25, 20)/4.1``). Residual-stream activations sit far from the
  origin, mostly along a few dimensions (the massive activations act as biases, Sun et al. 2024). With
  both, and the non-negative codes' own mean, ``‖E x‖/R ≈ 12–13`` (:func:`moments`). An SAE whose
  decoder bias does not start at the mean, or whose inputs are scaled by their uncentred norm, spends
  its capacity on the offset (shared/FACTS.md).
* **Noise**: isotropic Gaussian, variance 2% of the ordinary (non-outlier) signal's centred variance.

Tokens come in blocks of :data:`BLOCK_TOKENS`, each from its own generator ``default_rng([seed,
split key, block])``, so a store of millions of tokens is written in constant memory and any split is
drawn again, with its codes, by :func:`generate`. :func:`write_store` writes a store in the project's
format (:mod:`vitsae.data.store`): splits ``train`` and ``val`` (held out: other generator keys), each
image 1 CLS + 16 patch tokens, all drawn alike. :func:`store_shape_stats` measures the shape that
matters here (offset ratio, top-3 variance share, kurtosis of per-dimension variances) on any store,
planted or real.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitsae.data import store

#: Tokens per generator block (each block has its own seeded generator).
BLOCK_TOKENS = 65_536
#: Second key of each split's block generators; the dictionary uses :data:`DICT_KEY`.
SPLIT_KEYS = {"train": 1, "val": 2}
DICT_KEY = 0
#: 1 CLS + 16 patch tokens per image (a 4 x 4 grid), all drawn from the generator.
N_PREFIX, GRID = 1, (4, 4)
TOKENS_PER_IMAGE = N_PREFIX + GRID[0] * GRID[1]


@dataclass(frozen=True)
class PlantedSpec:
    """The generator's properties (module docstring). ``outlier_offsets`` are in units of the centred RMS
    token norm ``R``; ``offset_ratio`` is ‖Gaussian part of μ‖ / ``R``; ``noise_share`` is the noise's
    share of the ordinary signal's centred variance."""

    d: int = 64
    n_true: int = 256
    n_outlier: int = 3
    expected_l0: float = 8.0  # Σ marginal frequencies of the ordinary directions
    freq_exponent: float = 0.8
    max_freq: float = 0.6
    n_pairs: int = 32
    pair_prob: float = 0.5
    scale_low: float = 0.5
    scale_high: float = 2.0
    mag_sigma: float = 0.4
    outlier_freq: float = 0.2
    outlier_mag: float = 12.0
    outlier_sigma: float = 0.2
    offset_ratio: float = 5.8
    outlier_offsets: tuple[float, ...] = (30 / 4.1, -25 / 4.1, 20 / 4.1)
    noise_share: float = 0.02

    def __post_init__(self) -> None:
        if len(self.outlier_offsets) != self.n_outlier:
            raise ValueError(
                f"outlier_offsets has {len(self.outlier_offsets)} values for {self.n_outlier} outliers"
            )
        if 2 * self.n_pairs > self.n_true - self.n_outlier:
            raise ValueError(f"{self.n_pairs} disjoint pairs need {2 * self.n_pairs} ordinary directions")

    @property
    def n_ordinary(self) -> int:
        return self.n_true - self.n_outlier

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Dictionary:
    """Everything drawn once per generator seed. Directions ``0 .. n_ordinary-1`` are ordinary (rank
    ``i + 1`` in the power law), the last ``n_outlier`` the axis-aligned outliers on ``outlier_dims``.
    ``freq_A``: marginal firing frequency of each direction; ``own_rate_A``: its independent firing rate
    (differs from ``freq_A`` only for the second of a pair); ``pairs_P2``: (first, second) per pair;
    ``scale_A``: the per-direction magnitude scale; ``mean_D``: μ; ``noise_std``: per dimension."""

    directions_AD: np.ndarray
    outlier_dims: np.ndarray
    freq_A: np.ndarray
    own_rate_A: np.ndarray
    pairs_P2: np.ndarray
    scale_A: np.ndarray
    mean_D: np.ndarray
    noise_std: float
    centred_rms: float


def power_law_freqs(spec: PlantedSpec) -> np.ndarray:
    """Marginal frequencies ``min(max_freq, c · i^(−exponent))`` of the ordinary directions (rank ``i``
    from 1), ``c`` solved (bisection) so that they sum to ``expected_l0``."""
    w = np.arange(1, spec.n_ordinary + 1, dtype=np.float64) ** -spec.freq_exponent
    if spec.expected_l0 > spec.max_freq * spec.n_ordinary:
        raise ValueError(f"expected_l0 {spec.expected_l0} is unreachable with max_freq {spec.max_freq}")
    lo, hi = 0.0, spec.max_freq / w[-1]
    for _ in range(200):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.minimum(spec.max_freq, c * w).sum() < spec.expected_l0 else (lo, c)
    return np.minimum(spec.max_freq, (lo + hi) / 2 * w)


def _dictionary_without_moments(seed: int, spec: PlantedSpec) -> Dictionary:
    rng = np.random.default_rng([int(seed), DICT_KEY])
    A, O, D = spec.n_true, spec.n_outlier, spec.d
    dirs_AD = rng.standard_normal((A, D))
    outlier_dims = np.sort(rng.choice(D, O, replace=False))
    dirs_AD[spec.n_ordinary :] = 0.0
    dirs_AD[np.arange(spec.n_ordinary, A), outlier_dims] = 1.0
    dirs_AD /= np.linalg.norm(dirs_AD, axis=1, keepdims=True)
    freq_A = np.concatenate([power_law_freqs(spec), np.full(O, spec.outlier_freq)])
    chosen = rng.permutation(spec.n_ordinary)[: 2 * spec.n_pairs].reshape(spec.n_pairs, 2)
    # the first of a pair is its rarer member (larger rank), so the second's own rate is >= 0
    pairs_P2 = np.stack([chosen.max(axis=1), chosen.min(axis=1)], axis=1)
    own_A = freq_A.copy()
    first, second = pairs_P2[:, 0], pairs_P2[:, 1]
    own_A[second] = 1 - (1 - freq_A[second]) / (1 - spec.pair_prob * freq_A[first])
    scale_A = np.concatenate(
        [rng.uniform(spec.scale_low, spec.scale_high, spec.n_ordinary), np.full(O, spec.outlier_mag)]
    )
    g_D = rng.standard_normal(D)
    g_D /= np.linalg.norm(g_D)
    return Dictionary(dirs_AD, outlier_dims, freq_A, own_A, pairs_P2, scale_A, g_D, math.nan, math.nan)


def code_moments(dic: Dictionary, spec: PlantedSpec) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean ``E[c]`` (``[A]``) and covariance ``Cov(c)`` (``[A, A]``) of the codes, float64."""
    sigma_A = np.concatenate(
        [np.full(spec.n_ordinary, spec.mag_sigma), np.full(spec.n_outlier, spec.outlier_sigma)]
    )
    m1_A = dic.scale_A * np.exp(sigma_A**2 / 2)  # E[magnitude]
    m2_A = dic.scale_A**2 * np.exp(2 * sigma_A**2)  # E[magnitude²]
    mean_A = dic.freq_A * m1_A
    cov_AA = np.diag(dic.freq_A * m2_A - mean_A**2)
    a, b = dic.pairs_P2[:, 0], dic.pairs_P2[:, 1]
    both = dic.freq_A[a] * (spec.pair_prob + (1 - spec.pair_prob) * dic.own_rate_A[b])  # P(a and b)
    cov = m1_A[a] * m1_A[b] * (both - dic.freq_A[a] * dic.freq_A[b])
    cov_AA[a, b] = cov_AA[b, a] = cov
    return mean_A, cov_AA


def true_directions(seed: int, spec: PlantedSpec = PlantedSpec()) -> Dictionary:
    """The planted dictionary of generator ``seed`` with μ and the noise level filled in (the centred
    variance is exact, from :func:`code_moments`, so no sample is needed)."""
    dic = _dictionary_without_moments(seed, spec)
    _, cov_AA = code_moments(dic, spec)
    ordinary = slice(0, spec.n_ordinary)
    dirs_ord = dic.directions_AD[ordinary]
    var_ordinary = float(np.trace(dirs_ord.T @ cov_AA[ordinary, ordinary] @ dirs_ord))
    var_signal = float(np.trace(dic.directions_AD.T @ cov_AA @ dic.directions_AD))
    noise_var = spec.noise_share * var_ordinary
    R = math.sqrt(var_signal + noise_var)
    mean_D = spec.offset_ratio * R * dic.mean_D  # dic.mean_D holds the unit direction g
    mean_D[dic.outlier_dims] += R * np.asarray(spec.outlier_offsets)
    return dataclasses.replace(dic, mean_D=mean_D, noise_std=math.sqrt(noise_var / spec.d), centred_rms=R)


def moments(dic: Dictionary, spec: PlantedSpec) -> dict:
    """The generator's exact shape: ``offset_ratio`` (‖E x‖ / R), ``outlier_share`` (share of centred
    variance on the outlier dimensions), ``top3_share`` (on the 3 dimensions of largest variance),
    ``true_l0`` (E active directions per token), ``max_freq``, ``noise_share``."""
    mean_A, cov_AA = code_moments(dic, spec)
    cov_DD = dic.directions_AD.T @ cov_AA @ dic.directions_AD + dic.noise_std**2 * np.eye(spec.d)
    var_D = np.diag(cov_DD)
    x_mean_D = mean_A @ dic.directions_AD + dic.mean_D
    return {
        "centred_rms": dic.centred_rms,
        "offset_ratio": float(np.linalg.norm(x_mean_D) / math.sqrt(var_D.sum())),
        "outlier_share": float(var_D[dic.outlier_dims].sum() / var_D.sum()),
        "top3_share": float(np.sort(var_D)[-3:].sum() / var_D.sum()),
        "var_kurtosis": _excess_kurtosis(var_D),
        "true_l0": float(dic.freq_A.sum()),
        "max_freq": float(dic.freq_A[: spec.n_ordinary].max()),
    }


def iter_blocks(
    seed: int, spec: PlantedSpec, split: str, n_tokens: int, dic: Dictionary | None = None, codes: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """``(x_ND float32, codes_NA float32 or None)`` blocks of the first ``n_tokens`` tokens of ``split``
    (block ``k`` from ``default_rng([seed, SPLIT_KEYS[split], k])``; the last block is cut short)."""
    if split not in SPLIT_KEYS:
        raise ValueError(f"split {split!r} is not one of {sorted(SPLIT_KEYS)}")
    dic = true_directions(seed, spec) if dic is None else dic
    dirs_AD = dic.directions_AD.astype(np.float32)
    first, second = dic.pairs_P2[:, 0], dic.pairs_P2[:, 1]
    sigma_A = np.concatenate(
        [np.full(spec.n_ordinary, spec.mag_sigma), np.full(spec.n_outlier, spec.outlier_sigma)]
    )
    for k in range(math.ceil(n_tokens / BLOCK_TOKENS)):
        n = min(BLOCK_TOKENS, n_tokens - k * BLOCK_TOKENS)
        rng = np.random.default_rng([int(seed), SPLIT_KEYS[split], k])
        fire_NA = rng.random((n, spec.n_true)) < dic.own_rate_A
        fire_NA[:, second] |= fire_NA[:, first] & (rng.random((n, spec.n_pairs)) < spec.pair_prob)
        rows, cols = np.nonzero(fire_NA)
        codes_NA = np.zeros((n, spec.n_true), np.float32)
        codes_NA[rows, cols] = dic.scale_A[cols] * rng.lognormal(0.0, sigma_A[cols])
        x_ND = codes_NA @ dirs_AD
        x_ND += (dic.mean_D + dic.noise_std * rng.standard_normal((n, spec.d))).astype(np.float32)
        yield x_ND, (codes_NA if codes else None)


def generate(
    seed: int, n_tokens: int, spec: PlantedSpec = PlantedSpec(), split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_tokens`` tokens of ``split`` (``x_ND`` float32) and their codes (``codes_NA``
    float32, ``x ≈ codes @ directions + μ``): exactly the tokens :func:`write_store` writes, in order
    (image ``i``'s tokens are rows ``17·i .. 17·i + 16``, CLS first). For small ``n``; stores stream."""
    blocks = list(iter_blocks(seed, spec, split, n_tokens))
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def write_store(
    path: str | os.PathLike,
    seed: int,
    spec: PlantedSpec = PlantedSpec(),
    n_images: int = 1024,
    n_val_images: int = 4096,
    chunk_images: int = 256,
) -> Path:
    """A store (:mod:`vitsae.data.store` format, fp16) of ``n_images`` train and ``n_val_images`` val
    images of :data:`TOKENS_PER_IMAGE` generator tokens each, written chunk by chunk (constant memory)
    and published atomically. Its attrs name the generator (``planted: {seed, spec}``)."""
    final = Path(path)
    tmp = store.temporary_path(final)
    layout = {"n_tokens": TOKENS_PER_IMAGE, "n_prefix": N_PREFIX, "n_registers": 0, "cls_index": 0,
              "grid": list(GRID), "kept": "all", "model_tokens": TOKENS_PER_IMAGE}  # fmt: skip
    splits = {"train": int(n_images), "val": int(n_val_images)}
    attrs = {"token_layout": layout, "dataset": "planted", "layer": 0, "model": {"name": "planted"},
             "planted": {"seed": int(seed), "spec": spec.to_dict()}}  # fmt: skip
    group = store.create_group(tmp, {**attrs, "splits": splits})
    dic = true_directions(seed, spec)
    T = TOKENS_PER_IMAGE
    for split, n in splits.items():
        arr = store.create_split(group, split, (n, T, spec.d), chunk_images)
        start, pending = 0, np.zeros((0, spec.d), np.float32)
        for x_ND, _ in iter_blocks(seed, spec, split, n * T, dic, codes=False):
            pending = np.concatenate([pending, x_ND])
            while len(pending) >= chunk_images * T or start + len(pending) // T == n > start:
                m = min(chunk_images, len(pending) // T)  # whole chunks (the last may be short)
                arr[start : start + m] = pending[: m * T].reshape(m, T, spec.d).astype(np.float16)
                start, pending = start + m, pending[m * T :]
        store.writable(group, f"{split}_rows")[:] = np.arange(n)
    group.attrs["written"] = splits
    store.publish(tmp, final, splits)
    return final


# --------------------------------------------------------------------------------------------
# Shape statistics of any store


def _excess_kurtosis(v: np.ndarray) -> float:
    v = np.asarray(v, np.float64)
    c = v - v.mean()
    return float((c**4).mean() / (c**2).mean() ** 2 - 3.0)


def store_shape_stats(
    store_path: str | os.PathLike, split: str, token_kind: str = "patches", n: int = 65_536
) -> dict:
    """Shape of ``split``'s ``token_kind`` tokens in any store, on ~``n`` tokens from whole chunks spread
    evenly over the split (float64): ``offset_ratio`` = ‖mean‖ / centred RMS norm (``sqrt(E‖x − mean‖²)``),
    ``top3_share`` = share of the centred variance (trace) in the 3 dimensions of largest variance,
    ``var_kurtosis`` = excess kurtosis of the ``d`` per-dimension variances (0 for a Gaussian spread;
    a few massive dimensions make it large), plus ``tokens`` read, ``d`` and the ``centred_rms``."""
    group = store.open_store(store_path)
    arr = store.split_array(group, split)
    tokens = store.token_slice(dict(group.attrs["token_layout"]), token_kind)
    ranges = store.chunk_ranges(arr.shape[0], arr.chunks[0])
    per_image = len(range(*tokens.indices(arr.shape[1])))
    want = max(1, math.ceil(n / (per_image * arr.chunks[0])))
    picks = np.unique(np.linspace(0, len(ranges) - 1, min(want, len(ranges))).round().astype(int))
    x_ND = np.concatenate([np.asarray(arr[ranges[i][0] : ranges[i][1], tokens], np.float64).reshape(-1, arr.shape[2])
                           for i in picks])  # fmt: skip
    mean_D = x_ND.mean(axis=0)
    var_D = ((x_ND - mean_D) ** 2).mean(axis=0)
    return {
        "tokens": int(x_ND.shape[0]),
        "d": int(x_ND.shape[1]),
        "centred_rms": float(math.sqrt(var_D.sum())),
        "offset_ratio": float(np.linalg.norm(mean_D) / math.sqrt(var_D.sum())),
        "top3_share": float(np.sort(var_D)[-3:].sum() / var_D.sum()),
        "var_kurtosis": _excess_kurtosis(var_D),
    }


# --------------------------------------------------------------------------------------------
# How well an SAE recovers the dictionary


def max_cosines(directions_AD: np.ndarray, W_dec_FD: np.ndarray) -> np.ndarray:
    """For each true direction, its largest (signed) cosine with any decoder row, ``[A]`` float64."""
    dirs = np.asarray(directions_AD, np.float64)
    rows = np.asarray(W_dec_FD, np.float64)
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return (dirs @ rows.T).max(axis=1)


#: A true direction counts as recovered when some decoder row has cosine above this with it.
RECOVERED_COS = 0.9
#: A feature is dense when it fires on more than this share of the evaluation tokens.
DENSE_SHARE = 0.1


def evaluate(
    sae, directions_AD: np.ndarray, x_ND: np.ndarray, codes_NA: np.ndarray, batch: int = 8192
) -> dict:
    """Recovery and reconstruction of ``sae`` (a :class:`~vitsae.sae.checkpoint.SparseAutoencoder`) on
    held-out tokens ``x_ND`` with true codes ``codes_NA``: ``mmcs`` (mean over true directions of the
    max cosine), ``recovered`` (share with max cosine > :data:`RECOVERED_COS`), ``fvu`` (Σ‖x̂ − x‖² /
    Σ‖x − mean‖², float64 sums), ``l0``, ``true_l0`` (active true directions per token),
    ``l0_ratio``, ``dead`` (share of features firing on no token) and ``dense`` (firing on more than
    :data:`DENSE_SHARE` of them)."""
    import torch

    from vitsae.sae.evaluate import sample_metrics

    m = sample_metrics(sae, torch.from_numpy(np.asarray(x_ND, np.float32)), batch)
    fired_F, n = m["fired_F"], m["n_tokens"]
    cos_A = max_cosines(directions_AD, sae.W_dec_FD.detach().numpy())
    true_l0 = float((np.asarray(codes_NA) > 0).sum() / n)
    l0 = m["l0"]
    return {
        "mmcs": float(cos_A.mean()),
        "recovered": float((cos_A > RECOVERED_COS).mean()),
        "fvu": m["fvu"],
        "l0": l0,
        "true_l0": true_l0,
        "l0_ratio": l0 / true_l0,
        "dead": float((fired_F == 0).mean()),
        "dense": float((fired_F > DENSE_SHARE * n).mean()),
    }


def val_tokens(
    store_path: str | os.PathLike, seed: int, spec: PlantedSpec = PlantedSpec()
) -> tuple[np.ndarray, np.ndarray]:
    """The val split's patch tokens as stored (fp16 → float32, ``[N, d]``) and their true codes (drawn
    again from the generator; CLS tokens left out)."""
    group = store.open_store(store_path)
    arr = store.split_array(group, "val")
    n = arr.shape[0]
    x_ND = np.asarray(arr[:, N_PREFIX:], np.float32).reshape(-1, spec.d)
    _, codes = generate(seed, n * TOKENS_PER_IMAGE, spec, "val")
    codes_NA = codes.reshape(n, TOKENS_PER_IMAGE, spec.n_true)[:, N_PREFIX:].reshape(-1, spec.n_true)
    return x_ND, codes_NA
