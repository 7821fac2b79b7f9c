"""What an SAE architecture is to the stacked trainer: how pre-activations become features, the sparsity
(or auxiliary) loss, and any running state. One instance serves a :class:`~vitsae.sae.train.Stack` of
``S`` SAEs of that architecture and width: every tensor carries the SAE dimension first.

The default methods are ReLU with a unit-norm decoder; each architecture module overrides what differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from vitsae.sae.train import Stack


class StepInput(NamedTuple):
    """One training step of a stack, as the loss sees it (normalised units)."""

    pre_SBF: torch.Tensor  # pre-activations
    f_SBF: torch.Tensor  # features (after :meth:`Architecture.activate`)
    err_SBD: torch.Tensor  # x̂ − x
    coeff_S: torch.Tensor  # each SAE's sparsity coefficient at this step (after its warm-up)
    dead_SF: torch.Tensor | None  # features dead for ``dead_steps`` steps (None: no dead feature, or unused)


class Architecture:
    """Interface of an architecture; the defaults are ReLU with a unit-norm decoder."""

    name = ""
    activation_fn = "relu"
    unit_decoder = True  # decoder rows kept at unit norm (parallel gradient removed, rows renormalised)
    uses_dead = False  # the penalty reads the dead-feature mask (else it gets None)
    log_fields: tuple[str, ...] = ()  # extra columns of train_log.csv

    def init_state(self, stack: Stack) -> None:
        """Add architecture parameters (``stack.params``) and running state (``stack.buffers``)."""

    def activate(self, stack: Stack, pre_SBF: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre_SBF)

    def penalty(self, stack: Stack, step: StepInput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sparsity/auxiliary loss per SAE ``[S]`` and per-SAE log values."""
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, stack: Stack, f_SBF: torch.Tensor) -> None:
        """Update running state after the optimiser step."""

    def thresholds(self, stack: Stack) -> torch.Tensor | None:
        """Inference thresholds ``[S, F]`` (None: not thresholded)."""
        return None
