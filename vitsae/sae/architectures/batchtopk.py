"""``batchtopk``: the batch keeps its ``k·B`` largest pre-activations, then ReLU (Bussmann et al. 2024),
with TopK's unit-norm decoder and AuxK loss. At inference a threshold replaces the batch top-k: an
exponential moving average (decay :data:`THRESHOLD_DECAY`) of the smallest positive activation kept
per training batch."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from vitsae.sae.architectures.base import StepInput
from vitsae.sae.architectures.topk import TopK

if TYPE_CHECKING:
    from vitsae.sae.train import Stack

THRESHOLD_DECAY = 0.99


class BatchTopK(TopK):
    name = "batchtopk"
    activation_fn = "batchtopk"
    log_fields = ("k", "aux_loss", "threshold")

    def init_state(self, stack: Stack) -> None:
        stack.buffers["threshold"] = torch.zeros(stack.S, device=stack.device)
        stack.buffers["threshold_updates"] = torch.zeros(stack.S, dtype=torch.long, device=stack.device)

    def activate(self, stack: Stack, pre_SBF: torch.Tensor) -> torch.Tensor:
        S, B, F = pre_SBF.shape
        k_max = stack.k_max * B
        vals_SN, idx_SN = pre_SBF.reshape(S, B * F).topk(min(k_max, B * F), dim=-1)
        keep_SN = torch.arange(vals_SN.shape[1], device=pre_SBF.device) < stack.k_S[:, None] * B
        vals_SN = torch.relu(vals_SN) * keep_SN
        return torch.zeros(S, B * F, device=pre_SBF.device).scatter(-1, idx_SN, vals_SN).view(S, B, F)

    def penalty(self, stack: Stack, step: StepInput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss_S, logs = super().penalty(stack, step)
        return loss_S, {**logs, "threshold": stack.buffers["threshold"]}

    @torch.no_grad()
    def after_step(self, stack: Stack, f_SBF: torch.Tensor) -> None:
        S = f_SBF.shape[0]
        flat_SN = f_SBF.reshape(S, -1)
        min_pos_S = torch.where(flat_SN > 0, flat_SN, torch.full_like(flat_SN, math.inf)).min(dim=-1).values
        seen_S = torch.isfinite(min_pos_S)
        thr_S, n_S = stack.buffers["threshold"], stack.buffers["threshold_updates"]
        ema_S = THRESHOLD_DECAY * thr_S + (1 - THRESHOLD_DECAY) * min_pos_S
        new_S = torch.where(n_S > 0, ema_S, min_pos_S)
        thr_S.copy_(torch.where(seen_S, new_S, thr_S))
        n_S.add_(seen_S.long())

    def thresholds(self, stack: Stack) -> torch.Tensor:
        return stack.buffers["threshold"][:, None].expand(stack.S, stack.F)
