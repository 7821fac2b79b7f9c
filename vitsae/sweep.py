"""Fused SAE sweeps: every SAE of a sweep trains in one pass over the activations.

Each batch of a :class:`~vitsae.loader.TokenStream` is read once and fed to every SAE. SAEs of equal
architecture and width are *stacked*: their parameters carry a leading SAE dimension ``S`` and one
batched matmul serves them all (no Python loop over SAEs in a step). Conventions follow
:mod:`vitsae.sae` (read its docstring): scalar input normalisation with ``E‖x·scale‖² = d_in`` on the
init sample (shared by the whole sweep), ``b_dec`` = normalised sample mean, seeded unit-norm decoder
rows with ``W_enc = W_dec.T``, loss ``mean_batch ‖x̂ − x‖²`` (summed over d, normalised units) plus
a sparsity term, linear lr and sparsity-coefficient warm-ups.

Architectures (``SAESpec.architecture``)
----------------------------------------
* ``relu_l1``: the paper's SAE (:mod:`vitsae.sae`): ReLU, ``l1_coeff·Σ_f f``, unit-norm decoder rows
  (parallel gradient removed after backward, rows renormalised after each step).
* ``relu_l1_free``: ReLU, free decoder, ``l1_coeff·Σ_f f·‖W_dec,f‖`` (Anthropic, April 2024).
* ``topk``: keep each token's ``k`` largest pre-activations, then ReLU (Gao et al. 2024).
* ``batchtopk``: keep the ``k·B`` largest pre-activations of the batch, then ReLU (Bussmann et al.
  2024). At inference a threshold replaces the batch top-k: an exponential moving average (decay
  ``THRESHOLD_DECAY``) of the smallest positive activation kept per training batch.
* ``jumprelu``: ``f = pre·H(pre − θ_f)`` with learned per-feature thresholds ``θ = exp(log_threshold)``
  and loss ``l1_coeff·Σ_f H(pre − θ_f)`` (an L0 penalty); the gradients w.r.t. ``θ`` use a
  straight-through estimator with a rectangle kernel of width ``jumprelu_bandwidth``
  (Rajamanoharan et al. 2024).

``topk``, ``batchtopk`` and ``jumprelu`` keep unit-norm decoder rows as ``relu_l1`` does (Gao et al.
do so for TopK; for JumpReLU it is our choice: the L0 penalty does not see decoder norms, and unit
rows keep ``θ`` comparable across features). ``topk``/``batchtopk`` add the AuxK loss (Gao et al.):
with ``e = x − x̂`` (detached) and the ``aux_k`` largest pre-activations among *dead* features
(not fired in the last ``dead_steps`` steps) decoded without ``b_dec`` to ``ê``,
``aux_coeff · mean‖ê − e‖² / mean‖e‖²`` (0 when no feature is dead).

Optimiser: Adam (betas 0.9/0.999, eps 1e-8) written on the stacked tensors with a per-SAE learning
rate, following ``torch.optim.Adam``'s single-tensor arithmetic. Determinism and resume: see
:func:`train_sweep`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.autograd.function import FunctionCtx

from vitsae import grid
from vitsae import sae as sae_mod
from vitsae.atomic import atomic_write
from vitsae.loader import TokenStream
from vitsae.store import TOKEN_KINDS, open_store, split_array

logger = logging.getLogger("vitsae.sweep")

ARCHITECTURES = grid.ARCHITECTURES
#: The architecture name written by :mod:`vitsae.sae` (loadable by :func:`load`).
LEGACY_ARCHITECTURE = sae_mod.ARCHITECTURE
WEIGHTS_FILE, CFG_FILE, LOG_FILE = sae_mod.WEIGHTS_FILE, sae_mod.CFG_FILE, sae_mod.LOG_FILE
STATE_FILE = "state.pt"
INIT_SAMPLE_TOKENS = sae_mod.INIT_SAMPLE_TOKENS
THRESHOLD_DECAY = 0.99
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
STATE_VERSION = 1
#: On CPU a stack holds at most this many bytes of ``[S, B, F]`` float32 activations: glibc serves larger
#: blocks by mmap, so every such temporary of every step is page-faulted and zeroed afresh (8 relu_l1 SAEs
#: of d_sae 3072 at batch 1024 in one stack stepped ~15% slower than one after another). 32 MiB is glibc's
#: largest dynamic mmap threshold; freed blocks up to it are reused.
CPU_STACK_BYTES = 32 << 20
LOG_FIELDS = ("step", "tokens", "loss", "mse", "fvu", "l0", "dead_fraction", "lr")


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class SAESpec:
    """One SAE of a sweep. ``l1_coeff`` is required for ``relu_l1``/``relu_l1_free`` (L1 coefficient)
    and ``jumprelu`` (L0 coefficient); ``k`` for ``topk``/``batchtopk``, whose AuxK uses ``aux_k``
    (default ``2·k``) dead features and weight ``aux_coeff``."""

    architecture: str = "relu_l1"
    expansion: int = 8
    l1_coeff: float | None = None
    k: int | None = None
    lr: float = 4e-3
    seed: int = 0
    aux_k: int | None = None
    aux_coeff: float = 1 / 32
    jumprelu_bandwidth: float = 0.001
    jumprelu_init_threshold: float = 0.001

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"SAESpec.architecture {self.architecture!r} is not one of {ARCHITECTURES}")
        if int(self.expansion) < 1 or not self.lr > 0:
            raise ValueError(f"SAESpec needs expansion >= 1 and lr > 0, got {self.expansion!r}, {self.lr!r}")
        if self.architecture in ("topk", "batchtopk"):
            if self.k is None or int(self.k) < 1:
                raise ValueError(f"SAESpec({self.architecture}) needs k >= 1, got {self.k!r}")
            if self.aux_k is not None and int(self.aux_k) < 0:
                raise ValueError(f"SAESpec.aux_k must be >= 0, got {self.aux_k!r}")
        elif self.l1_coeff is None or not self.l1_coeff >= 0:
            raise ValueError(f"SAESpec({self.architecture}) needs l1_coeff >= 0, got {self.l1_coeff!r}")
        if self.architecture == "jumprelu" and not (
            self.jumprelu_bandwidth > 0 and self.jumprelu_init_threshold > 0
        ):
            raise ValueError("SAESpec(jumprelu) needs jumprelu_bandwidth > 0 and jumprelu_init_threshold > 0")

    @property
    def effective_aux_k(self) -> int:
        return 0 if self.k is None else int(2 * self.k if self.aux_k is None else self.aux_k)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainSettings:
    """Training settings shared by every SAE of a sweep (one data pass). ``data_seed`` orders the data;
    a feature is dead (log, AuxK) when it has not fired in ``dead_steps`` steps."""

    batch_size: int = 1024
    train_tokens: int = 200_000
    token_kind: str = "patches"
    shuffle_chunks: int = 8
    lr_warmup_steps: int = 10
    l1_warmup_steps: int = 50
    log_every: int = 20
    checkpoint_every: int = 100
    data_seed: int = 0
    dead_steps: int = sae_mod.DEAD_WINDOW_BATCHES
    compile: bool = False

    def __post_init__(self) -> None:
        if self.token_kind not in TOKEN_KINDS:
            raise ValueError(f"TrainSettings.token_kind {self.token_kind!r} is not one of {TOKEN_KINDS}")
        for name in ("batch_size", "train_tokens", "shuffle_chunks", "log_every", "checkpoint_every",
                     "dead_steps"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainSettings.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr_warmup_steps", "l1_warmup_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainSettings.{name} must be >= 0, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sae_id(spec: SAESpec) -> str:
    """A readable id from the spec's settings, e.g. ``relu_l1-x8-l1_3-lr_0.004-s0`` (:func:`vitsae.grid.sae_id`,
    which the workflow uses to name SAE directories)."""
    return grid.sae_id(spec.to_dict())


# --------------------------------------------------------------------------------------------
# Inference module


class SparseAutoencoder(torch.nn.Module):
    """Any trained SAE, for inference: ``encode(x_BD) -> f_BF``, ``decode(f_BF) -> x̂_BD`` (original
    units), ``forward(x_BD) -> (x̂_BD, f_BF)``. ``threshold_F`` holds BatchTopK's (uniform) and JumpReLU's
    (per-feature) inference thresholds."""

    def __init__(
        self, d_in: int, d_sae: int, architecture: str, scale: float = 1.0, k: int | None = None,
        cfg: dict | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if architecture not in (*ARCHITECTURES, LEGACY_ARCHITECTURE):
            raise ValueError(f"unknown SAE architecture {architecture!r}")
        self.d_in, self.d_sae, self.architecture, self.k = d_in, d_sae, architecture, k
        self.W_enc_DF = torch.nn.Parameter(torch.zeros(d_in, d_sae))
        self.b_enc_F = torch.nn.Parameter(torch.zeros(d_sae))
        self.W_dec_FD = torch.nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec_D = torch.nn.Parameter(torch.zeros(d_in))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("threshold_F", torch.zeros(d_sae))
        self.cfg: dict = dict(cfg or {})

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Feature activations ``f_BF`` (normalised units) of inputs ``x_BD`` in original units."""
        pre_BF = (x_BD * self.scale - self.b_dec_D) @ self.W_enc_DF + self.b_enc_F
        if self.architecture == "topk":
            vals_BK, idx_BK = pre_BF.topk(int(self.k), dim=-1)
            return torch.zeros_like(pre_BF).scatter(-1, idx_BK, torch.relu(vals_BK))
        if self.architecture in ("batchtopk", "jumprelu"):
            return torch.where(pre_BF > self.threshold_F.clamp(min=0), pre_BF, torch.zeros_like(pre_BF))
        return torch.relu(pre_BF)

    def decode(self, f_BF: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``x̂_BD`` in the original units."""
        return (f_BF @ self.W_dec_FD + self.b_dec_D) / self.scale

    def forward(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_BF = self.encode(x_BD)
        return self.decode(f_BF), f_BF

    def state_dict_saelens(self) -> dict[str, torch.Tensor]:
        """SAELens names and shapes (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec; ``threshold``
        [d_sae] for batchtopk and jumprelu)."""
        out = {
            "W_enc": self.W_enc_DF, "b_enc": self.b_enc_F, "W_dec": self.W_dec_FD, "b_dec": self.b_dec_D,
        }  # fmt: skip
        if self.architecture in ("batchtopk", "jumprelu"):
            out["threshold"] = self.threshold_F
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def load(path: str | os.PathLike) -> SparseAutoencoder:
    """Load any SAE written by :func:`train_sweep_from_store` or :func:`vitsae.sae.train_from_store`
    from its directory (or its ``sae.safetensors``) and the ``cfg.json`` beside it."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    weights = directory / WEIGHTS_FILE if path.is_dir() else path
    cfg_path = directory / CFG_FILE
    if not weights.exists() or not cfg_path.exists():
        raise FileNotFoundError(f"SAE checkpoint {directory} needs {WEIGHTS_FILE} and {CFG_FILE}")
    cfg = json.loads(cfg_path.read_text())
    tensors = load_file(str(weights))
    k = cfg.get("k")
    sae = SparseAutoencoder(
        int(cfg["d_in"]), int(cfg["d_sae"]), cfg.get("architecture"), float(cfg["normalisation"]["scale"]),
        None if k is None else int(k), cfg,
    )  # fmt: skip
    with torch.no_grad():
        sae.W_enc_DF.copy_(tensors["W_enc"])
        sae.b_enc_F.copy_(tensors["b_enc"])
        sae.W_dec_FD.copy_(tensors["W_dec"])
        sae.b_dec_D.copy_(tensors["b_dec"])
        if "threshold" in tensors:
            sae.threshold_F.copy_(tensors["threshold"])
    return sae


# --------------------------------------------------------------------------------------------
# Architectures: one small class each, operating on a stack of S SAEs


class _JumpReLU(torch.autograd.Function):
    """``pre·H(pre − θ)``; gradient to θ by a rectangle-kernel straight-through estimator."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, pre_SBF: torch.Tensor, theta_S1F: torch.Tensor, bandwidth_S11: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(pre_SBF, theta_S1F)
        ctx.bandwidth_S11 = bandwidth_S11
        return pre_SBF * (pre_SBF > theta_S1F)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_SBF: torch.Tensor) -> tuple:
        pre_SBF, theta_S1F = ctx.saved_tensors
        eps = ctx.bandwidth_S11
        rect_SBF = ((pre_SBF - theta_S1F).abs() < eps / 2).to(pre_SBF.dtype)
        grad_theta_S1F = (grad_SBF * rect_SBF * (-theta_S1F / eps)).sum(dim=1, keepdim=True)
        return grad_SBF * (pre_SBF > theta_S1F), grad_theta_S1F, None


class _Step(torch.autograd.Function):
    """``H(pre − θ)``; no gradient to pre, rectangle-kernel straight-through estimator for θ."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, pre_SBF: torch.Tensor, theta_S1F: torch.Tensor, bandwidth_S11: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(pre_SBF, theta_S1F)
        ctx.bandwidth_S11 = bandwidth_S11
        return (pre_SBF > theta_S1F).to(pre_SBF.dtype)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_SBF: torch.Tensor) -> tuple:
        pre_SBF, theta_S1F = ctx.saved_tensors
        eps = ctx.bandwidth_S11
        rect_SBF = ((pre_SBF - theta_S1F).abs() < eps / 2).to(pre_SBF.dtype)
        return None, (grad_SBF * rect_SBF * (-1.0 / eps)).sum(dim=1, keepdim=True), None


class _Arch:
    """Interface of an architecture; the defaults are ReLU with a unit-norm decoder."""

    name = ""
    activation_fn = "relu"
    unit_decoder = True
    uses_dead = False  # penalty reads the dead-feature mask (else it gets None)
    log_fields: tuple[str, ...] = ()

    def init_state(self, stack: _Stack) -> None:
        """Add architecture parameters (``stack.params``) and running state (``stack.buffers``)."""

    def activate(self, stack: _Stack, pre_SBF: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre_SBF)

    def penalty(
        self, stack: _Stack, pre_SBF: torch.Tensor, f_SBF: torch.Tensor, err_SBD: torch.Tensor,
        coeff_S: torch.Tensor, dead_SF: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """Sparsity/auxiliary loss per SAE ``[S]`` and per-SAE log values."""
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, stack: _Stack, f_SBF: torch.Tensor) -> None:
        """Update running state after the optimiser step."""

    def thresholds(self, stack: _Stack) -> torch.Tensor | None:
        """Inference thresholds ``[S, F]`` (None: not thresholded)."""
        return None


class _ReluL1(_Arch):
    name = "relu_l1"
    log_fields = ("l1", "l1_coeff")

    def penalty(
        self,
        stack: _Stack,
        pre_SBF: torch.Tensor,
        f_SBF: torch.Tensor,
        err_SBD: torch.Tensor,
        coeff_S: torch.Tensor,
        dead_SF: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        l1_S = f_SBF.sum(dim=-1).mean(dim=-1)  # f >= 0, so |f| = f
        return coeff_S * l1_S, {"l1": l1_S, "l1_coeff": coeff_S}


class _ReluL1Free(_Arch):
    name = "relu_l1_free"
    unit_decoder = False
    log_fields = ("l1", "l1_coeff")

    def penalty(
        self,
        stack: _Stack,
        pre_SBF: torch.Tensor,
        f_SBF: torch.Tensor,
        err_SBD: torch.Tensor,
        coeff_S: torch.Tensor,
        dead_SF: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        norms_S1F = stack.params["W_dec"].norm(dim=-1).unsqueeze(1)
        l1_S = (f_SBF * norms_S1F).sum(dim=-1).mean(dim=-1)
        return coeff_S * l1_S, {"l1": l1_S, "l1_coeff": coeff_S}


class _TopK(_Arch):
    name = "topk"
    activation_fn = "topk"
    uses_dead = True
    log_fields = ("k", "aux_loss")

    def activate(self, stack: _Stack, pre_SBF: torch.Tensor) -> torch.Tensor:
        k_max = stack.k_max
        vals_SBK, idx_SBK = pre_SBF.topk(k_max, dim=-1)
        keep_S1K = torch.arange(k_max, device=pre_SBF.device) < stack.k_S[:, None, None]
        return torch.zeros_like(pre_SBF).scatter(-1, idx_SBK, torch.relu(vals_SBK) * keep_S1K)

    def penalty(
        self,
        stack: _Stack,
        pre_SBF: torch.Tensor,
        f_SBF: torch.Tensor,
        err_SBD: torch.Tensor,
        coeff_S: torch.Tensor,
        dead_SF: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        aux_S = _aux_k_loss(stack, pre_SBF, err_SBD, dead_SF)
        return stack.aux_coeff_S * aux_S, {"k": stack.k_S, "aux_loss": aux_S}


class _BatchTopK(_TopK):
    name = "batchtopk"
    activation_fn = "batchtopk"
    log_fields = ("k", "aux_loss", "threshold")

    def init_state(self, stack: _Stack) -> None:
        stack.buffers["threshold"] = torch.zeros(stack.S, device=stack.device)
        stack.buffers["threshold_updates"] = torch.zeros(stack.S, dtype=torch.long, device=stack.device)

    def activate(self, stack: _Stack, pre_SBF: torch.Tensor) -> torch.Tensor:
        S, B, F = pre_SBF.shape
        k_max = stack.k_max * B
        vals_SN, idx_SN = pre_SBF.reshape(S, B * F).topk(min(k_max, B * F), dim=-1)
        keep_SN = torch.arange(vals_SN.shape[1], device=pre_SBF.device) < stack.k_S[:, None] * B
        vals_SN = torch.relu(vals_SN) * keep_SN
        return torch.zeros(S, B * F, device=pre_SBF.device).scatter(-1, idx_SN, vals_SN).view(S, B, F)

    def penalty(
        self,
        stack: _Stack,
        pre_SBF: torch.Tensor,
        f_SBF: torch.Tensor,
        err_SBD: torch.Tensor,
        coeff_S: torch.Tensor,
        dead_SF: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss_S, logs = super().penalty(stack, pre_SBF, f_SBF, err_SBD, coeff_S, dead_SF)
        return loss_S, {**logs, "threshold": stack.buffers["threshold"]}

    @torch.no_grad()
    def after_step(self, stack: _Stack, f_SBF: torch.Tensor) -> None:
        S = f_SBF.shape[0]
        flat_SN = f_SBF.reshape(S, -1)
        min_pos_S = torch.where(flat_SN > 0, flat_SN, torch.full_like(flat_SN, math.inf)).min(dim=-1).values
        seen_S = torch.isfinite(min_pos_S)
        thr_S, n_S = stack.buffers["threshold"], stack.buffers["threshold_updates"]
        ema_S = THRESHOLD_DECAY * thr_S + (1 - THRESHOLD_DECAY) * min_pos_S
        new_S = torch.where(n_S > 0, ema_S, min_pos_S)
        thr_S.copy_(torch.where(seen_S, new_S, thr_S))
        n_S.add_(seen_S.long())

    def thresholds(self, stack: _Stack) -> torch.Tensor:
        return stack.buffers["threshold"][:, None].expand(stack.S, stack.F)


class _JumpReLUArch(_Arch):
    name = "jumprelu"
    activation_fn = "jumprelu"
    log_fields = ("l1_coeff",)

    def init_state(self, stack: _Stack) -> None:
        thr_S = torch.tensor([s.jumprelu_init_threshold for s in stack.specs], dtype=torch.float64)
        log_thr_SF = thr_S.log().to(torch.float32)[:, None].expand(stack.S, stack.F).clone()
        stack.params["log_threshold"] = log_thr_SF.to(stack.device).requires_grad_()

    def _theta(self, stack: _Stack) -> torch.Tensor:
        return stack.params["log_threshold"].exp().unsqueeze(1)

    def activate(self, stack: _Stack, pre_SBF: torch.Tensor) -> torch.Tensor:
        return _JumpReLU.apply(pre_SBF, self._theta(stack), stack.bandwidth_S11)

    def penalty(
        self,
        stack: _Stack,
        pre_SBF: torch.Tensor,
        f_SBF: torch.Tensor,
        err_SBD: torch.Tensor,
        coeff_S: torch.Tensor,
        dead_SF: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        l0_S = _Step.apply(pre_SBF, self._theta(stack), stack.bandwidth_S11).sum(dim=-1).mean(dim=-1)
        return coeff_S * l0_S, {"l1_coeff": coeff_S}

    def thresholds(self, stack: _Stack) -> torch.Tensor:
        return stack.params["log_threshold"].detach().exp()


_ARCHS: dict[str, _Arch] = {
    a.name: a for a in (_ReluL1(), _ReluL1Free(), _TopK(), _BatchTopK(), _JumpReLUArch())
}


def _aux_k_loss(
    stack: _Stack, pre_SBF: torch.Tensor, err_SBD: torch.Tensor, dead_SF: torch.Tensor | None
) -> torch.Tensor:
    """AuxK (Gao et al. 2024): normalised MSE of the residual's reconstruction by the top ``aux_k``
    dead features (decoded without ``b_dec``); 0 for an SAE with no dead feature or ``aux_k = 0``
    (``dead_SF`` is None when no feature of the stack is dead)."""
    aux_max = min(stack.aux_k_max, stack.F)
    if aux_max == 0 or dead_SF is None:
        return torch.zeros(stack.S, device=pre_SBF.device)
    masked_SBF = pre_SBF.masked_fill(~dead_SF[:, None, :], -math.inf)
    vals_SBK, idx_SBK = masked_SBF.topk(aux_max, dim=-1)
    keep_S1K = torch.arange(aux_max, device=pre_SBF.device) < stack.aux_k_S[:, None, None]
    vals_SBK = torch.relu(vals_SBK) * keep_S1K
    f_aux_SBF = torch.zeros_like(pre_SBF).scatter(-1, idx_SBK, vals_SBK)
    resid_SBD = -err_SBD.detach()  # e = x − x̂
    ehat_SBD = torch.bmm(f_aux_SBF, stack.params["W_dec"])
    num_S = ((ehat_SBD - resid_SBD) ** 2).sum(dim=-1).mean(dim=-1)
    den_S = (resid_SBD**2).sum(dim=-1).mean(dim=-1).clamp(min=1e-12)
    return (num_S / den_S) * dead_SF.any(dim=-1)


# --------------------------------------------------------------------------------------------
# A stack of SAEs of one architecture and width


class _Stack:
    """S SAEs of one architecture and width: stacked parameters, Adam moments and running state."""

    def __init__(self, specs: list[SAESpec], d_in: int, device: torch.device) -> None:
        self.specs = specs
        self.arch = _ARCHS[specs[0].architecture]
        self.S, self.D, self.F = len(specs), d_in, d_in * specs[0].expansion
        self.device = device
        self.lr_S64 = torch.tensor([s.lr for s in specs], dtype=torch.float64)
        self.coeff_S64 = torch.tensor([s.l1_coeff or 0.0 for s in specs], dtype=torch.float64)
        self.k_S = torch.tensor([s.k or 0 for s in specs], device=device)
        self.k_max = max(int(s.k or 0) for s in specs)  # a Python int: no device sync, no graph break
        self.aux_k_S = torch.tensor([s.effective_aux_k for s in specs], device=device)
        self.aux_k_max = max(s.effective_aux_k for s in specs)
        self.aux_coeff_S = torch.tensor([s.aux_coeff for s in specs], device=device)
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        bandwidth_S = torch.tensor([s.jumprelu_bandwidth for s in specs], dtype=torch.float32, device=device)
        self.bandwidth_S11 = bandwidth_S.view(self.S, 1, 1)

    @torch.no_grad()
    def initialise(self, b_dec_D: torch.Tensor) -> None:
        """Seeded unit-norm decoder rows per SAE (as :meth:`vitsae.sae.ReluSAE.initialise`), ``W_enc =
        W_dec.T``, ``b_enc = 0``, ``b_dec`` = the normalised init-sample mean."""
        W_dec = []
        for spec in self.specs:
            gen = torch.Generator().manual_seed(int(spec.seed))
            W_dec_FD = torch.randn(self.F, self.D, generator=gen, dtype=torch.float32)
            W_dec.append(W_dec_FD / W_dec_FD.norm(dim=1, keepdim=True))
        W_dec_SFD = torch.stack(W_dec).to(self.device)
        self.params = {
            "W_enc": W_dec_SFD.transpose(1, 2).contiguous(),
            "b_enc": torch.zeros(self.S, self.F, device=self.device),
            "W_dec": W_dec_SFD,
            "b_dec": b_dec_D.to(self.device, torch.float32).expand(self.S, self.D).clone(),  # own storage
        }
        for p in self.params.values():
            p.requires_grad_()
        self.buffers = {"last_fired": torch.zeros(self.S, self.F, dtype=torch.long, device=self.device)}
        self.arch.init_state(self)
        self.moments = {name: (torch.zeros_like(p), torch.zeros_like(p)) for name, p in self.params.items()}

    def compile(self) -> None:
        """Compile the forward pass and loss (``torch.compile``; the backward is compiled with it).
        Optimiser, decoder renormalisation and bookkeeping stay eager. Compiled kernels round
        differently, so the bitwise guarantees (determinism, resume) are for the eager step."""
        # One code object serves every stack: each stack (architecture, width, batch shape, dead or
        # not) is one more specialisation of it, so allow more than dynamo's default of 8.
        import torch._dynamo

        for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))
        self._forward = torch.compile(self._forward, dynamic=False, fullgraph=True)

    def _forward(
        self, xn_BD: torch.Tensor, coeff_S: torch.Tensor, dead_SF: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Loss, MSE, codes and the architecture's extra log tensors of every SAE of the stack."""
        P = self.params
        xc_SBD = xn_BD.unsqueeze(0) - P["b_dec"].unsqueeze(1)
        pre_SBF = torch.bmm(xc_SBD, P["W_enc"]) + P["b_enc"].unsqueeze(1)
        f_SBF = self.arch.activate(self, pre_SBF)
        xhat_SBD = torch.bmm(f_SBF, P["W_dec"]) + P["b_dec"].unsqueeze(1)
        err_SBD = xhat_SBD - xn_BD
        mse_S = (err_SBD**2).sum(dim=-1).mean(dim=-1)
        penalty_S, extra = self.arch.penalty(self, pre_SBF, f_SBF, err_SBD, coeff_S, dead_SF)
        return mse_S + penalty_S, mse_S, f_SBF, extra

    def step(self, xn_BD: torch.Tensor, step: int, lr_scale: float, l1_ramp: float, dead_steps: int) -> dict:
        """One training step on normalised inputs; returns the per-SAE log tensors."""
        P = self.params
        coeff_S = (self.coeff_S64 * l1_ramp).to(torch.float32).to(self.device)
        dead_SF = (step - 1) - self.buffers["last_fired"] >= dead_steps if self.arch.uses_dead else None
        if dead_SF is not None and not bool(dead_SF.any()):
            dead_SF = None  # decided here, eagerly: the compiled forward has no data-dependent branch
        loss_S, mse_S, f_SBF, extra = self._forward(xn_BD, coeff_S, dead_SF)
        if not bool(torch.isfinite(loss_S).all()):
            bad = [sae_id(s) for s, ok in zip(self.specs, torch.isfinite(loss_S).tolist()) if not ok]
            raise ValueError(
                f"SAE loss became non-finite at step {step} for {bad}; lower lr or check the data"
            )
        for p in P.values():
            p.grad = None
        loss_S.sum().backward()
        with torch.no_grad():
            if self.arch.unit_decoder:  # drop each decoder row's gradient component along the row
                W_SFD = P["W_dec"]
                parallel_SF1 = (W_SFD.grad * W_SFD).sum(dim=-1, keepdim=True)
                W_SFD.grad -= parallel_SF1 * W_SFD
            self._adam(step, lr_scale)
            if self.arch.unit_decoder:
                P["W_dec"] /= P["W_dec"].norm(dim=-1, keepdim=True)
            self.buffers["last_fired"][f_SBF.amax(dim=1) > 0] = step  # f >= 0: one pass, no [S, B, F] mask
            self.arch.after_step(self, f_SBF.detach())
        out = {"loss": loss_S.detach(), "mse": mse_S.detach(), "f": f_SBF.detach(), "lr": self.lr_S64 * lr_scale,
               **{k: v.detach() for k, v in extra.items()}}  # fmt: skip
        if "l1_coeff" in out:
            out["l1_coeff"] = self.coeff_S64 * l1_ramp  # log the float64 value, not its float32 rounding
        return out

    def _adam(self, step: int, lr_scale: float) -> None:
        """Adam with a per-SAE learning rate, in ``torch.optim.Adam``'s single-tensor arithmetic."""
        beta1, beta2 = ADAM_BETAS
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        neg_step_S = (-(self.lr_S64 * lr_scale) / bias_correction1).tolist()
        for name, p in self.params.items():
            m, v = self.moments[name]
            g = p.grad
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
            for i, neg_step in enumerate(neg_step_S):  # addcdiv_ fuses the update; its value is one scalar
                p[i].addcdiv_(m[i], denom[i], value=neg_step)

    def module(self, i: int, scale: float) -> SparseAutoencoder:
        """SAE ``i`` of the stack as an inference module (CPU)."""
        spec = self.specs[i]
        sae = SparseAutoencoder(self.D, self.F, spec.architecture, scale, spec.k)
        thresholds_SF = self.arch.thresholds(self)
        with torch.no_grad():
            sae.W_enc_DF.copy_(self.params["W_enc"][i])
            sae.b_enc_F.copy_(self.params["b_enc"][i])
            sae.W_dec_FD.copy_(self.params["W_dec"][i])
            sae.b_dec_D.copy_(self.params["b_dec"][i])
            if thresholds_SF is not None:
                sae.threshold_F.copy_(thresholds_SF[i])
        return sae

    def state(self) -> dict:
        return {
            "params": {k: v.detach().cpu().clone() for k, v in self.params.items()},
            "moments": {k: (m.cpu().clone(), v.cpu().clone()) for k, (m, v) in self.moments.items()},
            "buffers": {k: v.cpu().clone() for k, v in self.buffers.items()},
        }

    def load_state(self, state: dict) -> None:
        self.params = {k: v.to(self.device).requires_grad_() for k, v in state["params"].items()}
        self.moments = {k: (m.to(self.device), v.to(self.device)) for k, (m, v) in state["moments"].items()}
        self.buffers = {k: v.to(self.device) for k, v in state["buffers"].items()}


# --------------------------------------------------------------------------------------------
# Training


def _digest(specs: Sequence[SAESpec], settings: TrainSettings, d_in: int) -> str:
    blob = {"version": STATE_VERSION, "specs": [s.to_dict() for s in specs], "settings": settings.to_dict(),
            "d_in": int(d_in)}  # fmt: skip
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def init_scale_and_mean(sample_ND: torch.Tensor, d_in: int) -> tuple[float, torch.Tensor]:
    """``scale`` with ``E‖x·scale‖² = d_in`` on the sample and the normalised sample mean (float32)."""
    sample_ND = sample_ND.to(torch.float64)
    mean_sq = float((sample_ND**2).sum(dim=1).mean())
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise ValueError(f"init sample has mean squared norm {mean_sq}; cannot normalise")
    scale = math.sqrt(d_in / mean_sq)
    return scale, (sample_ND * scale).mean(dim=0).to(torch.float32)


@torch.no_grad()
def _log_rows(
    stack: _Stack, out: dict, xn_BD: torch.Tensor, step: int, tokens: int, dead_steps: int
) -> list[dict]:
    var = ((xn_BD - xn_BD.mean(dim=0)) ** 2).sum(dim=1).mean()
    last_fired_SF = stack.buffers["last_fired"]
    if step >= dead_steps:
        dead_S = (step - last_fired_SF >= dead_steps).float().mean(dim=-1)
    else:
        dead_S = (last_fired_SF == 0).float().mean(dim=-1)
    cols = {
        "loss": out["loss"], "mse": out["mse"],
        "fvu": out["mse"] / var if var > 0 else torch.full_like(out["mse"], math.nan),
        "l0": (out["f"] > 0).sum(dim=-1).float().mean(dim=-1), "dead_fraction": dead_S, "lr": out["lr"],
        **{k: out[k] for k in stack.arch.log_fields},
    }  # fmt: skip
    lists = {k: v.cpu().tolist() for k, v in cols.items()}
    rows = []
    for i in range(stack.S):
        row: dict = {"step": step, "tokens": tokens}
        for k, vals in lists.items():
            row[k] = int(vals[i]) if k == "k" else float(vals[i])
        rows.append(row)
    return rows


def log_fields(architecture: str) -> tuple[str, ...]:
    """Columns of ``train_log.csv`` for ``architecture``."""
    return LOG_FIELDS + _ARCHS[architecture].log_fields


def train_sweep(
    stream_factory: Callable[[int], TokenStream],
    specs: Sequence[SAESpec],
    settings: TrainSettings,
    d_in: int,
    device: str | torch.device = "cpu",
    state_dir: str | os.PathLike | None = None,
    log: Callable[[str, dict], None] | None = None,
) -> list[tuple[SparseAutoencoder, list[dict]]]:
    """Train every SAE of ``specs`` in one pass over ``stream_factory(start_tokens)``'s batches.

    SAEs of equal architecture and expansion are stacked (on CPU, stacks of at most ``CPU_STACK_BYTES``
    of activations); each batch steps every stack. The init sample (``scale``, ``b_dec``, shared by all)
    is ``stream.peek(INIT_SAMPLE_TOKENS)``. Log rows (every ``log_every`` steps and at the last step) are
    passed to ``log(sae_id, row)`` and returned.

    With ``state_dir``, ``state.pt`` is written atomically every ``checkpoint_every`` steps (stacked
    parameters, Adam moments, running state, token position, log rows, RNG states, and a digest of
    specs, settings and ``d_in``); a matching one is resumed from, so a killed run finishes with the
    same weights, bitwise on CPU, as an uninterrupted one. A mismatching one raises ValueError.
    Returns ``(module, log_rows)`` per spec, in order.
    """
    specs = list(specs)
    if not specs:
        raise ValueError("train_sweep needs at least one SAESpec")
    device = torch.device(device)
    digest = _digest(specs, settings, d_in)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((spec.architecture, spec.expansion), []).append(i)
    members = []
    for (_, expansion), idx in groups.items():
        per_sae = settings.batch_size * d_in * expansion * 4
        cap = max(1, CPU_STACK_BYTES // per_sae) if device.type == "cpu" else len(idx)
        members += [idx[j : j + cap] for j in range(0, len(idx), cap)]
    stacks = [_Stack([specs[i] for i in idx], d_in, device) for idx in members]
    if settings.compile:
        for stack in stacks:
            stack.compile()
    ids = [sae_id(s) for s in specs]

    state_path = None if state_dir is None else Path(state_dir) / STATE_FILE
    state = None
    if state_path is not None and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if state.get("digest") != digest or state.get("members", members) != members:
            raise ValueError(
                f"{state_path} was written for other specs/settings or stacking (digest mismatch); "
                f"delete {state_path.parent} to start this sweep afresh"
            )
    step = 0 if state is None else int(state["step"])
    position = 0 if state is None else int(state["position"])
    rows: list[list[dict]] = [[] for _ in specs] if state is None else state["log_rows"]
    n_steps = math.ceil(settings.train_tokens / settings.batch_size)

    stream = stream_factory(position)
    try:
        if state is None:
            sample_ND = torch.from_numpy(stream.peek(INIT_SAMPLE_TOKENS))
            if sample_ND.shape[0] == 0:
                raise ValueError("no batches to train on")
            scale, b_dec_D = init_scale_and_mean(sample_ND, d_in)
            for stack in stacks:
                stack.initialise(b_dec_D)
        else:
            scale = float(state["scale"])
            for stack, st in zip(stacks, state["stacks"]):
                stack.load_state(st)
            torch.set_rng_state(state["torch_rng"])
            np.random.set_state(state["numpy_rng"])
            logger.info("resuming sweep from step %d (%d tokens) of %s", step, position, state_path)
        last_logged = rows[0][-1]["step"] if rows[0] else 0
        tokens = position
        for x_BD in stream:
            step += 1
            x_BD = x_BD.to(device, torch.float32, non_blocking=True)  # pinned by the stream on a GPU
            xn_BD = x_BD * scale
            w = settings.lr_warmup_steps
            lr_scale = min(1.0, step / w) if w else 1.0
            w = settings.l1_warmup_steps
            l1_ramp = min(1.0, (step - 1) / w) if w else 1.0
            tokens += x_BD.shape[0]
            last = step == n_steps or tokens >= settings.train_tokens
            outs = [stack.step(xn_BD, step, lr_scale, l1_ramp, settings.dead_steps) for stack in stacks]
            if step % settings.log_every == 0 or last:
                for stack, idx, out in zip(stacks, members, outs):
                    for i, row in zip(idx, _log_rows(stack, out, xn_BD, step, tokens, settings.dead_steps)):
                        rows[i].append(row)
                        if log is not None:
                            log(ids[i], row)
                last_logged = step
                r = rows[0][-1]
                logger.info("step %d/%d tokens %d [%s] loss %.4g fvu %.4f l0 %.1f dead %.3f", step, n_steps,
                            tokens, ids[0], r["loss"], r["fvu"], r["l0"], r["dead_fraction"])  # fmt: skip
            if state_path is not None and step % settings.checkpoint_every == 0 and not last:
                state_path.parent.mkdir(parents=True, exist_ok=True)
                state = {
                    "digest": digest, "members": members, "step": step, "position": tokens, "scale": scale,
                    "stacks": [s.state() for s in stacks], "log_rows": rows,
                    "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                }  # fmt: skip
                atomic_write(state_path, lambda p, state=state: torch.save(state, p))
            if tokens >= settings.train_tokens:
                break
    finally:
        stream.close()
    if step == 0:
        raise ValueError("no batches to train on")
    if last_logged != step:
        logger.warning("batches ran out after %d steps, %d of %d tokens", step, tokens, settings.train_tokens)
    out: list[tuple[SparseAutoencoder, list[dict]] | None] = [None] * len(specs)
    for stack, idx in zip(stacks, members):
        for j, i in enumerate(idx):
            module = stack.module(j, scale)
            module.cfg = {"d_in": d_in, "d_sae": stack.F, "sae_id": ids[i], **specs[i].to_dict(),
                          **settings.to_dict()}  # fmt: skip
            out[i] = (module, rows[i])
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# From a store, to files


def sweep_cfg_json(
    module: SparseAutoencoder, spec: SAESpec, settings: TrainSettings, meta: dict, store_attrs: dict
) -> dict:
    """The cfg.json dict: SAELens-style fields, every spec and settings field, ``sae_id`` and ``meta``."""
    out = {
        "d_in": int(module.d_in),
        "d_sae": int(module.d_sae),
        "architecture": spec.architecture,
        "activation_fn": _ARCHS[spec.architecture].activation_fn,
        "normalisation": {
            "kind": "scalar",
            "scale": float(module.scale),
            "note": "encode multiplies inputs by scale; b_dec and features are in scaled units; "
            "decode divides by scale",
        },
        "dtype": "float32",
        "hook": {
            "model": meta.get("model", store_attrs.get("model")),
            "layer": meta.get("layer", store_attrs.get("layer")),
            "tokens": settings.token_kind,
        },
        **spec.to_dict(),
        **settings.to_dict(),
        "sae_id": sae_id(spec),
        "meta": meta,
    }
    return json.loads(json.dumps(out))  # plain JSON types only


def train_sweep_from_store(
    store_path: str | os.PathLike,
    split: str,
    specs: Sequence[SAESpec],
    settings: TrainSettings,
    out_dirs: Sequence[str | os.PathLike],
    meta: dict,
    device: str | torch.device = "cpu",
    state_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Train the sweep on ``split`` of the store (one data pass) and write ``train_log.csv``, ``cfg.json``
    and, last, ``sae.safetensors`` (each atomically) into each of ``out_dirs``; removes ``state_dir``
    after success. Returns the safetensors paths. ``meta["bytes_read"]`` counts this process's reads
    (a resumed run reads from its checkpoint on)."""
    specs, out_dirs = list(specs), [Path(p) for p in out_dirs]
    if len(out_dirs) != len(specs):
        raise ValueError(f"{len(specs)} specs but {len(out_dirs)} out_dirs")
    streams: list[TokenStream] = []
    on_gpu = torch.device(device).type == "cuda"

    def factory(start_tokens: int) -> TokenStream:
        stream = TokenStream(
            store_path, split, settings.token_kind, settings.batch_size, settings.data_seed,
            settings.shuffle_chunks, settings.train_tokens, start_tokens=start_tokens,
            # on a GPU: fp16 batches in pinned memory (half the bytes to copy), converted on the device
            pin_memory=on_gpu, dtype=torch.float16 if on_gpu else torch.float32,
        )  # fmt: skip
        streams.append(stream)
        return stream

    d_in = int(split_array(open_store(store_path), split).shape[2])
    results = train_sweep(factory, specs, settings, d_in, device=device, state_dir=state_dir)
    store_attrs = dict(open_store(store_path).attrs)
    base_meta = {"store": str(store_path), "split": split, **meta}
    base_meta.setdefault("dataset", store_attrs.get("dataset"))
    base_meta["bytes_read"] = int(sum(s.bytes_read for s in streams))
    base_meta["start_tokens"] = int(streams[0].start_tokens) if streams else 0
    paths = []
    for (module, rows), spec, out_dir in zip(results, specs, out_dirs):
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg = sweep_cfg_json(module, spec, settings, dict(base_meta), store_attrs)
        module.cfg = cfg
        fields = log_fields(spec.architecture)

        def write_log(p: Path, rows: list[dict] = rows, fields: tuple[str, ...] = fields) -> None:
            with open(p, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(out_dir / LOG_FILE, write_log)
        text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
        atomic_write(out_dir / CFG_FILE, lambda p, text=text: p.write_text(text))
        tensors, arch = module.state_dict_saelens(), spec.architecture
        # sae.safetensors last: its presence means the SAE's directory is complete
        final = atomic_write(out_dir / WEIGHTS_FILE, lambda p, t=tensors, a=arch: save_file(
            t, str(p), metadata={"architecture": a}))  # fmt: skip
        paths.append(final)
    if state_dir is not None and Path(state_dir).exists():
        shutil.rmtree(state_dir)
    logger.info("wrote %d SAEs (%d bytes read)", len(paths), base_meta["bytes_read"])
    return paths
