"""The SAE architectures the stacked trainer knows, one module each, behind one registry.

``REGISTRY[name]`` is the architecture's single instance (:class:`~vitsae.sae.architectures.base.
Architecture`); the config's ``architecture`` names one of them.
"""

from __future__ import annotations

from vitsae.sae.architectures.base import Architecture, StepInput
from vitsae.sae.architectures.batchtopk import BatchTopK
from vitsae.sae.architectures.jumprelu import JumpReLU
from vitsae.sae.architectures.relu_l1 import ReluL1
from vitsae.sae.architectures.relu_l1_free import ReluL1Free
from vitsae.sae.architectures.topk import TopK

REGISTRY: dict[str, Architecture] = {
    a.name: a for a in (ReluL1(), ReluL1Free(), TopK(), BatchTopK(), JumpReLU())
}

__all__ = ["REGISTRY", "Architecture", "StepInput", "get"]


def get(name: str) -> Architecture:
    """The architecture called ``name``; KeyError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise KeyError(f"unknown SAE architecture {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]
