"""``topk``: each token keeps its ``k`` largest pre-activations, then ReLU (Gao et al. 2024), with unit-norm
decoder rows and the AuxK loss: with ``e = x − x̂`` (detached) and the ``aux_k`` largest pre-activations
among *dead* features (not fired in the last ``dead_steps`` steps) decoded without ``b_dec`` to ``ê``,
``aux_coeff · mean‖ê − e‖² / mean‖e‖²`` (0 when no feature is dead)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from vitsae.sae.architectures.base import Architecture, StepInput

if TYPE_CHECKING:
    from vitsae.sae.train import Stack


def aux_k_loss(stack: Stack, step: StepInput) -> torch.Tensor:
    """AuxK (module docstring) per SAE ``[S]``; 0 for an SAE with no dead feature or ``aux_k = 0``
    (``dead_SF`` is None when no feature of the stack is dead)."""
    pre_SBF, dead_SF = step.pre_SBF, step.dead_SF
    aux_max = min(stack.aux_k_max, stack.F)
    if aux_max == 0 or dead_SF is None:
        return torch.zeros(stack.S, device=pre_SBF.device)
    masked_SBF = pre_SBF.masked_fill(~dead_SF[:, None, :], -math.inf)
    vals_SBK, idx_SBK = masked_SBF.topk(aux_max, dim=-1)
    keep_S1K = torch.arange(aux_max, device=pre_SBF.device) < stack.aux_k_S[:, None, None]
    vals_SBK = torch.relu(vals_SBK) * keep_S1K
    f_aux_SBF = torch.zeros_like(pre_SBF).scatter(-1, idx_SBK, vals_SBK)
    resid_SBD = -step.err_SBD.detach()  # e = x − x̂
    ehat_SBD = torch.bmm(f_aux_SBF, stack.params["W_dec"])
    num_S = ((ehat_SBD - resid_SBD) ** 2).sum(dim=-1).mean(dim=-1)
    den_S = (resid_SBD**2).sum(dim=-1).mean(dim=-1).clamp(min=1e-12)
    return (num_S / den_S) * dead_SF.any(dim=-1)


class TopK(Architecture):
    name = "topk"
    activation_fn = "topk"
    uses_dead = True
    log_fields = ("k", "aux_loss")

    def activate(self, stack: Stack, pre_SBF: torch.Tensor) -> torch.Tensor:
        k_max = stack.k_max
        vals_SBK, idx_SBK = pre_SBF.topk(k_max, dim=-1)
        keep_S1K = torch.arange(k_max, device=pre_SBF.device) < stack.k_S[:, None, None]
        return torch.zeros_like(pre_SBF).scatter(-1, idx_SBK, torch.relu(vals_SBK) * keep_S1K)

    def penalty(self, stack: Stack, step: StepInput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        aux_S = aux_k_loss(stack, step)
        return stack.aux_coeff_S * aux_S, {"k": stack.k_S, "aux_loss": aux_S}
