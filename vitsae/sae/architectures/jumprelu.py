"""``jumprelu``: ``f = pre·H(pre − θ_f)`` with learned per-feature thresholds ``θ = exp(log_threshold)``
and the loss ``l1_coeff·Σ_f H(pre − θ_f)`` (an L0 penalty); the gradients to ``θ`` use a straight-through
estimator with a rectangle kernel of width ``jumprelu_bandwidth`` (Rajamanoharan et al. 2024). Decoder
rows stay at unit norm (our choice: the L0 penalty does not see decoder norms, and unit rows keep ``θ``
comparable across features)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.autograd.function import FunctionCtx

from vitsae.sae.architectures.base import Architecture, StepInput

if TYPE_CHECKING:
    from vitsae.sae.train import Stack


class _Threshold(torch.autograd.Function):
    """``pre·H(pre − θ)`` (``jump``: the JumpReLU) or ``H(pre − θ)`` (the step of the L0 penalty). The
    gradient to ``θ`` goes through a straight-through estimator with the rectangle kernel
    ``K = 1[|pre − θ| < ε/2]`` of width ``ε`` (the bandwidth); the step passes no gradient to ``pre``."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        pre_SBF: torch.Tensor,
        theta_S1F: torch.Tensor,
        bandwidth_S11: torch.Tensor,
        jump: bool,
    ) -> torch.Tensor:
        ctx.save_for_backward(pre_SBF, theta_S1F)
        ctx.bandwidth_S11, ctx.jump = bandwidth_S11, jump
        return pre_SBF * (pre_SBF > theta_S1F) if jump else (pre_SBF > theta_S1F).to(pre_SBF.dtype)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_SBF: torch.Tensor) -> tuple:
        pre_SBF, theta_S1F = ctx.saved_tensors
        eps = ctx.bandwidth_S11
        rect_SBF = ((pre_SBF - theta_S1F).abs() < eps / 2).to(pre_SBF.dtype)
        if ctx.jump:
            grad_theta_S1F = (grad_SBF * rect_SBF * (-theta_S1F / eps)).sum(dim=1, keepdim=True)
            return grad_SBF * (pre_SBF > theta_S1F), grad_theta_S1F, None, None
        return None, (grad_SBF * rect_SBF * (-1.0 / eps)).sum(dim=1, keepdim=True), None, None


class JumpReLU(Architecture):
    name = "jumprelu"
    activation_fn = "jumprelu"
    log_fields = ("l1_coeff",)

    def init_state(self, stack: Stack) -> None:
        thr_S = torch.tensor([s.jumprelu_init_threshold for s in stack.specs], dtype=torch.float64)
        log_thr_SF = thr_S.log().to(torch.float32)[:, None].expand(stack.S, stack.F).clone()
        stack.params["log_threshold"] = log_thr_SF.to(stack.device).requires_grad_()

    def _theta(self, stack: Stack) -> torch.Tensor:
        return stack.params["log_threshold"].exp().unsqueeze(1)

    def activate(self, stack: Stack, pre_SBF: torch.Tensor) -> torch.Tensor:
        return _Threshold.apply(pre_SBF, self._theta(stack), stack.bandwidth_S11, True)

    def penalty(self, stack: Stack, step: StepInput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        l0_S = (
            _Threshold.apply(step.pre_SBF, self._theta(stack), stack.bandwidth_S11, False)
            .sum(dim=-1)
            .mean(dim=-1)
        )
        return step.coeff_S * l0_S, {"l1_coeff": step.coeff_S}

    def thresholds(self, stack: Stack) -> torch.Tensor:
        return stack.params["log_threshold"].detach().exp()
