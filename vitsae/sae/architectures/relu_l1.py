"""``relu_l1``: the paper's SAE. ReLU features, ``l1_coeff · Σ_f f`` with unit-norm decoder rows, so the
penalty equals Anthropic's ``Σ_f f·‖W_dec,f‖`` and ``l1_coeff`` compares with SAELens' ``l1_coefficient``
(squared error summed over d, scalar input normalisation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vitsae.sae.architectures.base import Architecture, StepInput

if TYPE_CHECKING:
    from vitsae.sae.train import Stack


class ReluL1(Architecture):
    name = "relu_l1"
    log_fields = ("l1", "l1_coeff")

    def penalty(self, stack: Stack, step: StepInput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        l1_S = step.f_SBF.sum(dim=-1).mean(dim=-1)  # f >= 0, so |f| = f
        return step.coeff_S * l1_S, {"l1": l1_S, "l1_coeff": step.coeff_S}
