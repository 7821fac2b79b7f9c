"""``relu_l1_free``: ReLU features with a free decoder and the penalty ``l1_coeff · Σ_f f·‖W_dec,f‖``
(Anthropic, April 2024)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vitsae.sae.architectures.base import Architecture, StepInput

if TYPE_CHECKING:
    from vitsae.sae.train import Stack


class ReluL1Free(Architecture):
    name = "relu_l1_free"
    unit_decoder = False
    log_fields = ("l1", "l1_coeff")

    def penalty(self, stack: Stack, step: StepInput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        norms_S1F = stack.params["W_dec"].norm(dim=-1).unsqueeze(1)
        l1_S = (step.f_SBF * norms_S1F).sum(dim=-1).mean(dim=-1)
        return step.coeff_S * l1_S, {"l1": l1_S, "l1_coeff": step.coeff_S}
