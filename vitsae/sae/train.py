"""The stacked SAE trainer: every SAE of a sweep trains in one pass over the activations.

Each batch of a :class:`~vitsae.data.loader.TokenStream` is read once and fed to every SAE. SAEs of equal
architecture and width are *stacked* (:class:`Stack`): their parameters carry a leading SAE dimension ``S``
and one batched matmul serves them all (no Python loop over SAEs in a step). The architectures
(:mod:`vitsae.sae.architectures`) supply activation, penalty and running state.

Conventions (so that coefficients compare with other tools):

* **Scalar input normalisation.** Inputs are multiplied by one ``scale`` chosen on the init sample
  (``stream.peek(INIT_SAMPLE_TOKENS)``, shared by the sweep). With ``input_norm: centred`` (the
  default) ``E‖(x − mean)·scale‖² = d_in``: the tokens' spread around their mean, not their offset, sets
  the units, so a sparsity coefficient means the same pressure on stores whose mean differs (ViT
  activations' offsets can be several times their spread). ``raw`` is SAELens' ``expected_average_only_in``
  (``E‖x·scale‖² = d_in``). ``b_dec``, ``b_enc`` and all features live in these normalised units.
* **Init.** Seeded unit-norm decoder rows, ``W_enc = s · W_dec.T`` (``s``: ``SAESpec.encoder_scale``,
  0.1 for the ReLU SAEs by default), ``b_enc = 0``, ``b_dec`` =
  the normalised sample mean (ReLU+L1 recovers no dictionary on data with per-dimension offsets without
  it; FACTS.md).
* **Loss.** ``mean_batch ‖x̂ − x‖²`` (summed over d, normalised units) plus the architecture's sparsity
  term; the Adam learning rate and the sparsity coefficient rise linearly over ``lr_warmup_steps`` and
  ``l1_warmup_steps``, and the learning rate falls linearly over the last ``lr_decay_steps``
  (:func:`lr_schedule`).
* **Unit decoder.** For architectures that keep unit-norm decoder rows, the gradient component along
  each row is removed after backward and rows are renormalised after each step.

Optimiser: Adam (betas 0.9/0.999, eps 1e-8) written on the stacked tensors with a per-SAE learning
rate, following ``torch.optim.Adam``'s single-tensor arithmetic. Determinism and resume: see
:func:`train_sweep`. Files: see :func:`train_sweep_from_store` and :mod:`vitsae.sae.checkpoint`.

**Two step paths** (``step_mode``). ``eager`` (the default on a CPU) is the bitwise-deterministic step the
determinism, resume and reference tests pin. ``fused`` (the default on CUDA) asks the host nothing during
a step: the learning rates, bias corrections and sparsity ramps of every step are tables on the device,
built once (:meth:`Stack.schedule`); the optimiser update, the parallel-gradient removal and the decoder
renormalisation are one call per stack (:func:`fused_update`, compiled with ``compile``); which
features fired and the L0 come out of the forward graph; ``last_fired`` is updated with a masked fill, not
a boolean-index assignment; the dead-feature mask is always passed (AuxK is 0 without dead features), so
nothing branches on device data. A non-finite loss is recorded on the device (the first bad step per
SAE) and checked at log and checkpoint steps and at the end, before anything is written, so no NaN state
is ever persisted. On CUDA the batches come from a :class:`~vitsae.sae.feeder.DeviceFeeder` and
training-state checkpoints are written by a background thread (:class:`_Saver`).

**Precision** (``TrainSettings.precision``, resolved per device by :meth:`TrainSettings.resolved`): with
``bf16`` the encoder and decoder matmuls (and their backward) run under bf16 autocast; weights, Adam
moments, activations after the encoder, the reconstruction error and every loss term stay float32.
``tf32`` sets float32 matmuls to TF32 for the run. ``fp32`` changes nothing (the CPU default).

**The structure-free null** (``TrainSettings.permute_dims``): a negative control for the concept
statistics. Each training batch has every activation dimension permuted independently across the
batch's tokens (:func:`permute_dims`); batches mix many images (the stream's shuffle buffers), so this
destroys every cross-dimension structure (directions, co-activations, which token a value belongs to)
and keeps each dimension's marginal distribution, hence its mean, variance and the input scale. Only
training changes: the init sample (``scale``, ``b_dec``) is left unpermuted, as its per-dimension
statistics are exactly those of its permuted self, and the null's features are read on the real
activations by the rest of the pipeline.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from vitsae.atomic import atomic_write
from vitsae.data.loader import TokenStream
from vitsae.data.store import data_key, open_store, split_array
from vitsae.sae.architectures import REGISTRY, StepInput
from vitsae.sae.checkpoint import SparseAutoencoder
from vitsae.sae.feeder import DeviceFeeder
from vitsae.sae.settings import SAESpec, TrainSettings
from vitsae.sae.stages import StepProfile

logger = logging.getLogger("vitsae.sae.train")

LOG_FILE = "train_log.csv"
STATE_FILE = "state.pt"
#: At most this many tokens of the stream's first buffer initialise ``scale`` and ``b_dec``.
INIT_SAMPLE_TOKENS = 65_536
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
STATE_VERSION = 3  # 2: the token stream's buffers no longer span epochs; 3: resolved compile/precision
#: On CPU a stack holds at most this many bytes of ``[S, B, F]`` float32 activations. Its elementwise passes
#: are memory-bound, so a stack whose temporaries leave the caches steps slower than its SAEs one after
#: another (bench/RESULTS.md section 6: 8 relu_l1 SAEs at d 128, x8, batch 1024, 2 cores: stacks of 8
#: (32 MiB) 63K SAE-tokens/s, of 4: 94K, of 1: 103-107K); a stack of exactly 32 MiB also meets glibc's
#: largest mmap threshold, so its temporaries are page-faulted afresh every step. Small SAEs still stack
#: (fewer, larger ops). On CUDA every SAE of an architecture and width is one stack.
CPU_STACK_BYTES = 4 << 20
#: ``step_mode`` values (module docstring); None picks ``fused`` on CUDA and ``eager`` elsewhere.
STEP_MODES = ("eager", "fused")
LOG_FIELDS = ("step", "tokens", "loss", "mse", "fvu", "l0", "dead_fraction", "lr")
#: Second key of the seed of step ``t``'s dimension permutations: ``[data_seed, PERMUTE_KEY, t]``.
PERMUTE_KEY = 0xD135


# --------------------------------------------------------------------------------------------
# A stack of SAEs of one architecture and width


class Stack:
    """S SAEs of one architecture and width: stacked parameters, Adam moments and running state."""

    def __init__(
        self, specs: list[SAESpec], d_in: int, device: torch.device, precision: str = "fp32",
        fused: bool = False,
    ) -> None:  # fmt: skip
        self.specs = specs
        self.bf16 = precision == "bf16"  # autocast the two matmuls (module docstring, "Precision")
        self.fused = fused  # the sync-free step (module docstring, "Two step paths")
        self._update_parts: tuple = (remove_parallel_, adam_update_)
        self.profile: StepProfile | None = None  # set by train_sweep when profiling
        self.arch = REGISTRY[specs[0].architecture]
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
    def initialise(self, b_dec_D: torch.Tensor, start_AD: torch.Tensor | None = None) -> None:
        """Seeded unit-norm decoder rows per SAE, ``W_enc = encoder_scale · W_dec.T``, ``b_enc = 0``,
        ``b_dec`` = the normalised init-sample mean. With ``start_AD`` (:func:`train_sweep`'s
        ``start_dictionary``), its rows, normalised, replace the first ``A`` decoder rows of every SAE."""
        W_dec, W_enc = [], []
        for spec in self.specs:
            gen = torch.Generator().manual_seed(int(spec.seed))
            W_dec_FD = torch.randn(self.F, self.D, generator=gen, dtype=torch.float32)
            if start_AD is not None:
                W_dec_FD[: start_AD.shape[0]] = start_AD
            W_dec.append(W_dec_FD / W_dec_FD.norm(dim=1, keepdim=True))
            W_enc.append(W_dec[-1].T * spec.encoder_scale)  # x 1.0 is exact: the old init, bitwise
        W_dec_SFD = torch.stack(W_dec).to(self.device)
        self.params = {
            "W_enc": torch.stack(W_enc).to(self.device).contiguous(),
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
        if self.fused:
            self._update_parts = tuple(
                torch.compile(fn, dynamic=False, fullgraph=True) for fn in (remove_parallel_, adam_update_)
            )

    def _mark(self, stage: str) -> None:
        if self.profile is not None:
            self.profile.mark(stage)

    def _matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``bmm(a, b)`` in float32 out; under bf16 autocast when the precision is bf16."""
        if self.bf16:
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return torch.bmm(a, b).float()
        return torch.bmm(a, b)

    def _forward(
        self, xn_BD: torch.Tensor, coeff_S: torch.Tensor, dead_SF: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Loss, MSE, codes and the architecture's extra log tensors of every SAE of the stack."""
        P = self.params
        xc_SBD = xn_BD.unsqueeze(0) - P["b_dec"].unsqueeze(1)
        pre_SBF = self._matmul(xc_SBD, P["W_enc"]) + P["b_enc"].unsqueeze(1)
        f_SBF = self.arch.activate(self, pre_SBF)
        xhat_SBD = self._matmul(f_SBF, P["W_dec"]) + P["b_dec"].unsqueeze(1)
        err_SBD = xhat_SBD - xn_BD
        mse_S = (err_SBD**2).sum(dim=-1).mean(dim=-1)
        penalty_S, extra = self.arch.penalty(self, StepInput(pre_SBF, f_SBF, err_SBD, coeff_S, dead_SF))
        if self.fused:  # the step's statistics from the graph: no pass over [S, B, F] outside it
            f_d = f_SBF.detach()
            extra = {**extra, "fired": f_d.amax(dim=1) > 0, "l0": (f_d > 0).sum(dim=-1).float().mean(dim=-1)}
        return mse_S + penalty_S, mse_S, f_SBF, extra

    def step(self, xn_BD: torch.Tensor, step: int, lr_scale: float, l1_ramp: float, dead_steps: int) -> dict:
        """One training step on normalised inputs; returns the per-SAE log tensors."""
        P = self.params
        coeff_S = (self.coeff_S64 * l1_ramp).to(torch.float32).to(self.device)
        dead_SF = (step - 1) - self.buffers["last_fired"] >= dead_steps if self.arch.uses_dead else None
        if dead_SF is not None and not bool(dead_SF.any()):
            dead_SF = None  # decided here, eagerly: the compiled forward has no data-dependent branch
        loss_S, mse_S, f_SBF, extra = self._forward(xn_BD, coeff_S, dead_SF)
        self._mark("forward")
        if not bool(torch.isfinite(loss_S).all()):
            bad = [s.id for s, ok in zip(self.specs, torch.isfinite(loss_S).tolist()) if not ok]
            raise ValueError(
                f"SAE loss became non-finite at step {step} for {bad}; lower lr or check the data"
            )
        for p in P.values():
            p.grad = None
        loss_S.sum().backward()
        self._mark("backward")
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
        self._mark("update")
        out = {"loss": loss_S.detach(), "mse": mse_S.detach(), "f": f_SBF.detach(), "lr": self.lr_S64 * lr_scale,
               **{k: v.detach() for k, v in extra.items()}}  # fmt: skip
        if "l1_coeff" in out:
            out["l1_coeff"] = self.coeff_S64 * l1_ramp  # log the float64 value, not its float32 rounding
        return out

    def schedule(self, n_steps: int, settings: TrainSettings) -> None:
        """The fused step's per-step tables on the device, row ``t`` for step ``t`` (1-based; row 0
        unused): ``-lr·lr_schedule(t) / (1 − β₁ᵗ)`` and the sparsity coefficient after its warm-up
        ``[T+1, S]``, and ``sqrt(1 − β₂ᵗ)`` ``[T+1]`` (float64 on the host, then float32)."""
        beta1, beta2 = ADAM_BETAS
        t = torch.arange(n_steps + 1, dtype=torch.float64).clamp(min=1)
        lr_T = torch.tensor([lr_schedule(int(i), n_steps, settings.lr_warmup_steps, settings.lr_decay_steps)
                             for i in t.tolist()], dtype=torch.float64)  # fmt: skip
        w = settings.l1_warmup_steps
        ramp_T = ((t - 1) / w).clamp(max=1.0) if w else torch.ones_like(t)
        self.neg_lr_TS = (-(self.lr_S64 * lr_T[:, None]) / (1 - beta1**t)[:, None]).float().to(self.device)
        self.coeff_TS = (self.coeff_S64 * ramp_T[:, None]).float().to(self.device)
        self.bc2_sqrt_T = ((1 - beta2**t) ** 0.5).float().to(self.device)
        self.first_bad_S = torch.zeros(self.S, dtype=torch.long, device=self.device)

    def step_fused(
        self, xn_BD: torch.Tensor, step: int, lr_scale: float, l1_ramp: float, dead_steps: int
    ) -> dict:
        """:meth:`step` without a host synchronisation (module docstring, "Two step paths")."""
        P = self.params
        last_fired_SF = self.buffers["last_fired"]
        dead_SF = (step - 1) - last_fired_SF >= dead_steps if self.arch.uses_dead else None
        loss_S, mse_S, f_SBF, extra = self._forward(xn_BD, self.coeff_TS[step], dead_SF)
        self._mark("forward")
        bad_S = ~torch.isfinite(loss_S.detach()) & (self.first_bad_S == 0)
        self.first_bad_S.masked_fill_(bad_S, step)
        for p in P.values():
            p.grad = None
        loss_S.sum().backward()
        self._mark("backward")
        names = list(P)
        unit = names.index("W_dec") if self.arch.unit_decoder else -1
        fused_update(
            [P[n].detach() for n in names], [P[n].grad for n in names], [self.moments[n][0] for n in names],
            [self.moments[n][1] for n in names], self.neg_lr_TS[step], self.bc2_sqrt_T[step], unit,
            self._update_parts,
        )  # fmt: skip
        with torch.no_grad():
            last_fired_SF.masked_fill_(extra.pop("fired"), step)
            self.arch.after_step(self, f_SBF.detach())
        self._mark("update")
        out = {"loss": loss_S.detach(), "mse": mse_S.detach(), "f": f_SBF.detach(), "lr": self.lr_S64 * lr_scale,
               **{k: v.detach() for k, v in extra.items()}}  # fmt: skip
        if "l1_coeff" in out:
            out["l1_coeff"] = self.coeff_S64 * l1_ramp
        return out

    def check_finite(self) -> None:
        """Raise if a fused step saw a non-finite loss (one host synchronisation; a no-op when eager,
        whose step raises at once)."""
        if not self.fused:
            return
        first_S = self.first_bad_S.tolist()
        if any(first_S):
            bad = [s.id for s, t in zip(self.specs, first_S) if t]
            step = min(t for t in first_S if t)
            raise ValueError(
                f"SAE loss became non-finite at step {step} for {bad}; lower lr or check the data"
            )

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
        """A snapshot of parameters, moments and running state, cloned on the stack's device (no host
        synchronisation on CUDA); :func:`_to_cpu` moves it to the host."""
        return {
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "moments": {k: (m.clone(), v.clone()) for k, (m, v) in self.moments.items()},
            "buffers": {k: v.clone() for k, v in self.buffers.items()},
        }

    def load_state(self, state: dict) -> None:
        self.params = {k: v.to(self.device).requires_grad_() for k, v in state["params"].items()}
        self.moments = {k: (m.to(self.device), v.to(self.device)) for k, (m, v) in state["moments"].items()}
        self.buffers = {k: v.to(self.device) for k, v in state["buffers"].items()}


def remove_parallel_(g_SFD: torch.Tensor, W_SFD: torch.Tensor) -> None:
    """Drop from each decoder row's gradient its component along the (unit) row, in place."""
    g_SFD.sub_((g_SFD * W_SFD).sum(dim=-1, keepdim=True) * W_SFD)


def adam_update_(
    params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor], neg_lr_S: torch.Tensor, bc2_sqrt: torch.Tensor, unit: int,
) -> None:  # fmt: skip
    """Adam in place with the per-SAE step ``neg_lr_S`` (``-lr/(1 − β₁ᵗ)``, a device tensor) and
    ``bc2_sqrt`` (``sqrt(1 − β₂ᵗ)``), then the rows of parameter ``unit`` (-1: none) renormalised."""
    beta1, beta2 = ADAM_BETAS
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = v.sqrt() / bc2_sqrt + ADAM_EPS
        p.add_(neg_lr_S.view(-1, *([1] * (p.dim() - 1))) * m / denom)
        if i == unit:
            p.div_(p.norm(dim=-1, keepdim=True))


def fused_update(
    params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor], neg_lr_S: torch.Tensor, bc2_sqrt: torch.Tensor, unit: int,
    parts: tuple = (remove_parallel_, adam_update_),
) -> None:  # fmt: skip
    """One stack's optimiser step in place, with no host value: the parallel-gradient removal of
    parameter ``unit`` (the decoder; -1: none; the gradient is changed in place), then
    :func:`adam_update_`. ``params`` are detached aliases of the parameters. Same arithmetic as
    :meth:`Stack._adam` up to float rounding (the scalars are float32 device tensors here). ``parts``
    are the two functions (compiled ones in :meth:`Stack.compile`: compiled as one graph, inductor
    2.14's CPU code generator fails on it when the stack holds one SAE, ``KeyError: 'buf1'``)."""
    remove, adam = parts
    if unit >= 0:
        remove(grads[unit], params[unit])
    adam(params, grads, exp_avgs, exp_avg_sqs, neg_lr_S, bc2_sqrt, unit)


def _to_cpu(obj: object) -> object:
    """``obj`` (dicts, lists, tuples of tensors) with every tensor on the host."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class _Saver:
    """Writes training-state checkpoints in a background thread, one at a time: :meth:`save` waits for
    the previous write (re-raising its error), then hands the snapshot (device clones, moved to the host
    in the thread) to a new one; :meth:`wait` joins the last. ``background=False`` writes in the caller."""

    def __init__(self, background: bool) -> None:
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _write(self, path: Path, state: dict) -> None:
        try:
            state = _to_cpu(state)
            atomic_write(path, lambda p: torch.save(state, p))
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait()
            self._error = exc

    def save(self, path: Path, state: dict) -> None:
        self.wait()
        if not self.background:
            self._write(path, state)
            self.wait()
            return
        self._thread = threading.Thread(target=self._write, args=(path, state), name="vitsae-checkpoint")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


# --------------------------------------------------------------------------------------------
# Training


def _digest(
    specs: Sequence[SAESpec], settings: TrainSettings, d_in: int, start_AD: torch.Tensor | None = None
) -> str:
    blob = {"version": STATE_VERSION, "specs": [s.to_dict() for s in specs], "settings": settings.to_dict(),
            "d_in": int(d_in)}  # fmt: skip
    if start_AD is not None:  # only then: the digests of every ordinary sweep stay as they were
        blob["start"] = hashlib.sha256(start_AD.numpy().tobytes()).hexdigest()
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def permute_dims(x_BD: torch.Tensor, data_seed: int, step: int) -> torch.Tensor:
    """``x_BD`` with each column independently permuted across its rows: ``out[:, d] = x[perm_d, d]``.

    The permutations are a function of ``(data_seed, step)`` and the device type only (no global RNG
    state is read or advanced), so a resumed run draws those of an uninterrupted one. On CPU they are
    NumPy's ``default_rng([data_seed, PERMUTE_KEY, step]).permuted(axis=0)`` (a Fisher–Yates shuffle per
    column, in place on a copy: ~8 ms at ``[1024, 768]`` on 2 cores, ~3% of one x8 SAE's step, where
    an argsort of random keys and a gather took 20–28 ms). On an accelerator they are the argsort of
    float64 uniform keys drawn by a device generator seeded from the same key, then one gather: no host
    work, no transfer. CPU and GPU thus draw different permutations, each deterministic. Returns a new
    tensor (same dtype and device); every column holds the same multiset of values as ``x_BD``'s. On
    CPU ``x_BD``'s dtype must be one NumPy holds (not bfloat16)."""
    key = [int(data_seed), PERMUTE_KEY, int(step)]
    if x_BD.device.type == "cpu":
        return torch.from_numpy(np.random.default_rng(key).permuted(x_BD.numpy(), axis=0))
    return _permute_by_sorting(x_BD, key)


def _permute_by_sorting(x_BD: torch.Tensor, key: list[int]) -> torch.Tensor:
    """:func:`permute_dims` on ``x_BD``'s device (any, CPU included): per column, the argsort of float64
    uniform keys (ties are then ~B²/2⁵⁴ per column: negligible) from a generator seeded by ``key``."""
    seed = int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])
    gen = torch.Generator(device=x_BD.device).manual_seed(seed)
    keys_BD = torch.rand(x_BD.shape, generator=gen, dtype=torch.float64, device=x_BD.device)
    return x_BD.gather(0, keys_BD.argsort(dim=0))


def lr_schedule(step: int, n_steps: int, warmup: int, decay: int) -> float:
    """The learning rate's multiplier at ``step`` (1-based) of ``n_steps``: a linear rise over the first
    ``warmup`` steps and a linear fall over the last ``decay`` (to ``1/decay`` at the last step)."""
    scale = min(1.0, step / warmup) if warmup else 1.0
    return min(scale, (n_steps - step + 1) / decay) if decay else scale


def init_scale_and_mean(
    sample_ND: torch.Tensor, d_in: int, normalisation: str = "centred"
) -> tuple[float, torch.Tensor]:
    """``scale`` with ``E‖(x − mean)·scale‖² = d_in`` (``centred``) or ``E‖x·scale‖² = d_in`` (``raw``) on
    the sample, and the normalised sample mean (float32)."""
    sample_ND = sample_ND.to(torch.float64)
    if normalisation not in ("centred", "raw"):
        raise ValueError(f"normalisation must be 'centred' or 'raw', got {normalisation!r}")
    spread_ND = sample_ND - sample_ND.mean(dim=0) if normalisation == "centred" else sample_ND
    mean_sq = float((spread_ND**2).sum(dim=1).mean())
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        what = "squared distance from its mean" if normalisation == "centred" else "squared norm"
        raise ValueError(f"init sample has mean {what} {mean_sq}; cannot normalise")
    scale = math.sqrt(d_in / mean_sq)
    return scale, (sample_ND * scale).mean(dim=0).to(torch.float32)


@torch.no_grad()
def _log_rows(
    stack: Stack, out: dict, xn_BD: torch.Tensor, step: int, tokens: int, dead_steps: int
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
        "l0": out["l0"] if "l0" in out else (out["f"] > 0).sum(dim=-1).float().mean(dim=-1),  # fused: the graph's
        "dead_fraction": dead_S, "lr": out["lr"],
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
    return LOG_FIELDS + REGISTRY[architecture].log_fields


def train_sweep(
    stream_factory: Callable[[int], TokenStream],
    specs: Sequence[SAESpec],
    settings: TrainSettings,
    d_in: int,
    device: str | torch.device = "cpu",
    state_dir: str | os.PathLike | None = None,
    log: Callable[[str, dict], None] | None = None,
    data_key: str | None = None,
    step_mode: str | None = None,
    profile: StepProfile | None = None,
    start_dictionary: np.ndarray | None = None,
) -> list[tuple[SparseAutoencoder, list[dict]]]:
    """Train every SAE of ``specs`` in one pass over ``stream_factory(start_tokens)``'s batches.

    SAEs of equal architecture and expansion are stacked (on CPU, stacks of at most ``CPU_STACK_BYTES``
    of activations); each batch steps every stack. The init sample (``scale``, ``b_dec``, shared by all)
    is ``stream.peek(INIT_SAMPLE_TOKENS)``. Log rows (every ``log_every`` steps and at the last step) are
    passed to ``log(sae_id, row)`` and returned.

    With ``state_dir``, ``state.pt`` is written atomically every ``checkpoint_every`` steps (stacked
    parameters, Adam moments, running state, token position, log rows, RNG states, and a digest of
    specs, settings and ``d_in``); a matching one is resumed from, so a killed run finishes with the
    same weights, bitwise on CPU, as an uninterrupted one. A state for other specs, settings or
    stacking raises ValueError (the same sweep must not silently restart); one written for other data
    (``data_key``, e.g. :func:`vitsae.data.store.data_key`: the store was rebuilt since) is discarded
    with a log line, and training starts afresh.
    Returns ``(module, log_rows)`` per spec, in order.

    With ``settings.permute_dims``, batch ``t`` (1-based) is :func:`permute_dims` ``(x_BD,
    settings.data_seed, t)`` of the stream's batch, on the device, before it is scaled (permuting and
    scaling commute exactly); everything downstream (steps, log rows) sees only permuted batches. The
    init sample is not permuted: a column permutation leaves its per-dimension mean and ``E‖x‖²``
    unchanged, so ``scale`` and ``b_dec`` are those of the unpermuted sweep.

    ``settings`` are :meth:`~TrainSettings.resolved` for ``device`` first (``compile`` and ``precision``;
    the digest and the returned modules' ``cfg`` hold the resolved values). ``step_mode`` (``eager`` or
    ``fused``; None: fused on CUDA, eager elsewhere) picks the step path (module docstring). A
    :class:`~vitsae.sae.stages.StepProfile` as ``profile`` gets the stage marks of every step.

    ``start_dictionary`` (``[A, d_in]``, ``A`` at most every SAE's width): every SAE starts with these
    directions (normalised) as its first ``A`` decoder rows, the encoder as always the decoder's scaled
    transpose. For benchmarks with a known dictionary (``bench/sae_quality.py --oracle``): an SAE started
    at the truth shows where its own objective takes the truth, a bound on recovery from a random start.
    It is part of the state digest (a resume never mixes starts); the config pipeline never sets it.
    """
    specs = list(specs)
    if not specs:
        raise ValueError("train_sweep needs at least one SAESpec")
    device = torch.device(device)
    settings = settings.resolved(device)
    step_mode = step_mode or ("fused" if device.type == "cuda" else "eager")
    if step_mode not in STEP_MODES:
        raise ValueError(f"step_mode must be one of {STEP_MODES}, got {step_mode!r}")
    fused = step_mode == "fused"
    start_AD = None
    if start_dictionary is not None:
        start_AD = torch.as_tensor(np.asarray(start_dictionary, dtype=np.float32))
        narrowest = min(d_in * s.expansion for s in specs)
        if start_AD.ndim != 2 or start_AD.shape[1] != d_in or start_AD.shape[0] > narrowest:
            raise ValueError(
                f"start_dictionary must be [A, {d_in}] with A <= {narrowest} (the narrowest SAE's width); "
                f"got {list(start_AD.shape)}"
            )
        if not bool(torch.isfinite(start_AD).all()) or not bool((start_AD.norm(dim=1) > 0).all()):
            raise ValueError("start_dictionary has a non-finite or all-zero row")
    digest = _digest(specs, settings, d_in, start_AD)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((spec.architecture, spec.expansion), []).append(i)
    members = []
    for (_, expansion), idx in groups.items():
        per_sae = settings.batch_size * d_in * expansion * 4
        cap = max(1, CPU_STACK_BYTES // per_sae) if device.type == "cpu" else len(idx)
        members += [idx[j : j + cap] for j in range(0, len(idx), cap)]
    stacks = [Stack([specs[i] for i in idx], d_in, device, settings.precision, fused) for idx in members]
    if settings.compile:
        for stack in stacks:
            stack.compile()
    for stack in stacks:
        stack.profile = profile
    ids = [s.id for s in specs]

    state_path = None if state_dir is None else Path(state_dir) / STATE_FILE
    state = None
    if state_path is not None and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if state.get("data_key") != data_key:
            logger.warning(
                "discarding %s: it was written at step %d for other data (data key %s, now %s); "
                "training afresh", state_path, int(state["step"]), state.get("data_key"), data_key,
            )  # fmt: skip
            state_path.unlink()
            state = None
        elif state.get("digest") != digest or state.get("members", members) != members:
            raise ValueError(
                f"{state_path} was written for other specs/settings or stacking (digest mismatch); "
                f"delete {state_path.parent} to start this sweep afresh"
            )
    step = 0 if state is None else int(state["step"])
    position = 0 if state is None else int(state["position"])
    rows: list[list[dict]] = [[] for _ in specs] if state is None else state["log_rows"]
    n_steps = math.ceil(settings.train_tokens / settings.batch_size)
    if fused:
        for stack in stacks:
            stack.schedule(n_steps, settings)

    def check_finite() -> None:
        for stack in stacks:
            stack.check_finite()

    stream = stream_factory(position)
    feeder = None
    saver = _Saver(background=fused)
    matmul_precision = torch.get_float32_matmul_precision()
    if settings.precision == "tf32":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls, restored below
    try:
        if state is None:
            sample_ND = torch.from_numpy(stream.peek(INIT_SAMPLE_TOKENS))
            if sample_ND.shape[0] == 0:
                raise ValueError("no batches to train on")
            scale, b_dec_D = init_scale_and_mean(sample_ND, d_in, settings.input_norm)
            for stack in stacks:
                stack.initialise(b_dec_D, start_AD)
        else:
            scale = float(state["scale"])
            for stack, st in zip(stacks, state["stacks"]):
                stack.load_state(st)
            torch.set_rng_state(state["torch_rng"])
            np.random.set_state(state["numpy_rng"])
            logger.info("resuming sweep from step %d (%d tokens) of %s", step, position, state_path)
        last_logged = rows[0][-1]["step"] if rows[0] else 0
        tokens = position
        batches = stream
        if device.type == "cuda":  # gather, NaN test and copy two batches ahead, off the training thread
            feeder = batches = DeviceFeeder(stream, device)
        for x_BD in batches:
            step += 1
            if profile is not None:
                profile.begin(step)
                profile.mark("wait")
            x_BD = x_BD.to(device, torch.float32, non_blocking=True)  # pinned by the stream on a GPU
            if settings.permute_dims:  # the structure-free null
                x_BD = permute_dims(x_BD, settings.data_seed, step)
            xn_BD = x_BD * scale
            lr_scale = lr_schedule(step, n_steps, settings.lr_warmup_steps, settings.lr_decay_steps)
            w = settings.l1_warmup_steps
            l1_ramp = min(1.0, (step - 1) / w) if w else 1.0
            tokens += x_BD.shape[0]
            last = step == n_steps or tokens >= settings.train_tokens
            take_step = Stack.step_fused if fused else Stack.step
            outs = [take_step(stack, xn_BD, step, lr_scale, l1_ramp, settings.dead_steps) for stack in stacks]
            if step % settings.log_every == 0 or last:
                check_finite()
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
                check_finite()  # no NaN state is ever written
                state_path.parent.mkdir(parents=True, exist_ok=True)
                state = {
                    "digest": digest, "data_key": data_key, "members": members, "step": step, "position": tokens,
                    "scale": scale,
                    "stacks": [s.state() for s in stacks], "log_rows": [list(r) for r in rows],
                    "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                }  # fmt: skip
                saver.save(state_path, state)
            if profile is not None:
                profile.mark("log")
            if tokens >= settings.train_tokens:
                break
        check_finite()
    finally:
        torch.set_float32_matmul_precision(matmul_precision)
        if feeder is not None:
            feeder.close()
        stream.close()
        saver.wait()  # a checkpoint being written is finished (an error there is raised)
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
        "activation_fn": REGISTRY[spec.architecture].activation_fn,
        "normalisation": {
            "kind": "scalar",
            "scale": float(module.scale),
            "fit": settings.input_norm,  # how scale was chosen (TrainSettings.input_norm)
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
        "enc_init_scale": spec.encoder_scale,  # the value used (None in the spec: the architecture's)
        **settings.to_dict(),
        "sae_id": spec.id,
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
    profile: StepProfile | None = None,
    start_dictionary: np.ndarray | None = None,
) -> list[Path]:
    """Train the sweep on ``split`` of the store (one data pass) and write ``train_log.csv``, then
    ``cfg.json`` and, last, ``sae.safetensors`` (:meth:`~vitsae.sae.checkpoint.SparseAutoencoder.save`;
    each atomically) into each of ``out_dirs``; removes ``state_dir``
    after success. Returns the safetensors paths. ``meta["bytes_read"]`` counts this process's reads
    (a resumed run reads from its checkpoint on). ``start_dictionary``: see :func:`train_sweep` (cfg.json's
    meta then says ``"start": "dictionary"``)."""
    specs, out_dirs = list(specs), [Path(p) for p in out_dirs]
    if len(out_dirs) != len(specs):
        raise ValueError(f"{len(specs)} specs but {len(out_dirs)} out_dirs")
    streams: list[TokenStream] = []
    on_gpu = torch.device(device).type == "cuda"

    def factory(start_tokens: int) -> TokenStream:
        stream = TokenStream(
            store_path, split, settings.token_kind, settings.batch_size, settings.data_seed,
            settings.shuffle_chunks, settings.train_tokens, start_tokens=start_tokens,
            # on a GPU: fp16 batches (half the bytes to copy), copied into pinned memory and converted on the
            # device by the trainer's DeviceFeeder
            dtype=torch.float16 if on_gpu else torch.float32,
        )  # fmt: skip
        streams.append(stream)
        return stream

    settings = settings.resolved(device)  # cfg.json records the compile and precision used
    d_in = int(split_array(open_store(store_path), split).shape[2])
    key = data_key(store_path, split, settings.token_kind)
    results = train_sweep(factory, specs, settings, d_in, device=device, state_dir=state_dir, data_key=key,
                          profile=profile, start_dictionary=start_dictionary)  # fmt: skip
    store_attrs = dict(open_store(store_path).attrs)
    base_meta = {"store": str(store_path), "split": split, **meta}
    if start_dictionary is not None:
        base_meta["start"] = "dictionary"
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
        final = module.save(out_dir)  # cfg.json, then sae.safetensors: its presence means complete
        paths.append(final)
    if state_dir is not None and Path(state_dir).exists():
        shutil.rmtree(state_dir)
    logger.info("wrote %d SAEs (%d bytes read)", len(paths), base_meta["bytes_read"])
    return paths
