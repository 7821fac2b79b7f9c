"""A trained SAE, for inference, and its files: ``sae.safetensors`` + ``cfg.json`` in one directory.

A leaf module (torch and safetensors only): every later stage loads SAEs through :func:`load`, and
nothing here knows how they were trained (:mod:`vitsae.sae.files` reads the same files without torch).
Tensors carry SAELens' names and shapes (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``,
``b_dec``; ``threshold [d_sae]`` for ``batchtopk`` and ``jumprelu``); the config holds ``d_in``,
``d_sae``, ``architecture`` and the input normalisation ``{kind: scalar, scale}``: inputs are multiplied
by ``scale`` before encoding, ``b_dec`` and the features live in those units, and
:meth:`SparseAutoencoder.decode` divides by it again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vitsae.atomic import atomic_write
from vitsae.sae.files import CFG_FILE, WEIGHTS_FILE

#: How each architecture encodes at inference (after training, BatchTopK's batch top-k is a threshold).
INFERENCE = {"relu_l1": "relu", "relu_l1_free": "relu", "topk": "topk", "batchtopk": "threshold",
             "jumprelu": "threshold"}  # fmt: skip


class SparseAutoencoder(torch.nn.Module):
    """Any trained SAE, for inference: ``encode(x_BD) -> f_BF``, ``decode(f_BF) -> x̂_BD`` (original
    units), ``forward(x_BD) -> (x̂_BD, f_BF)``. ``threshold_F`` holds BatchTopK's (uniform) and JumpReLU's
    (per-feature) inference thresholds; ``cfg`` the contents of ``cfg.json``."""

    def __init__(
        self, d_in: int, d_sae: int, architecture: str, scale: float = 1.0, k: int | None = None,
        cfg: dict | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if architecture not in INFERENCE:
            raise ValueError(f"unknown SAE architecture {architecture!r}; known: {', '.join(INFERENCE)}")
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
        kind = INFERENCE[self.architecture]
        if kind == "topk":
            vals_BK, idx_BK = pre_BF.topk(int(self.k), dim=-1)
            return torch.zeros_like(pre_BF).scatter(-1, idx_BK, torch.relu(vals_BK))
        if kind == "threshold":
            return torch.where(pre_BF > self.threshold_F.clamp(min=0), pre_BF, torch.zeros_like(pre_BF))
        return torch.relu(pre_BF)

    def decode(self, f_BF: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``x̂_BD`` in the original units."""
        return (f_BF @ self.W_dec_FD + self.b_dec_D) / self.scale

    def forward(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_BF = self.encode(x_BD)
        return self.decode(f_BF), f_BF

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights under SAELens' names and shapes (module docstring), on the CPU."""
        out = {
            "W_enc": self.W_enc_DF, "b_enc": self.b_enc_F, "W_dec": self.W_dec_FD, "b_dec": self.b_dec_D,
        }  # fmt: skip
        if INFERENCE[self.architecture] == "threshold":
            out["threshold"] = self.threshold_F
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``cfg.json`` (``self.cfg``) and then ``sae.safetensors``, each atomically: the weights'
        presence means the directory is complete. Returns the weights' path."""
        directory = Path(directory)
        text = json.dumps(self.cfg, indent=2, sort_keys=True) + "\n"
        atomic_write(directory / CFG_FILE, lambda p: p.write_text(text))
        tensors, arch = self.tensors(), self.architecture
        return atomic_write(directory / WEIGHTS_FILE,
                            lambda p: save_file(tensors, str(p), metadata={"architecture": arch}))  # fmt: skip


def load(path: str | os.PathLike) -> SparseAutoencoder:
    """The SAE in a directory (or named by its ``sae.safetensors``) with the ``cfg.json`` beside it."""
    path = Path(path)
    directory = path.parent if path.is_file() else path
    weights = path if path.is_file() else directory / WEIGHTS_FILE
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
