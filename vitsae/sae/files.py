"""An SAE directory's files, read without torch: ``cfg.json`` and the weights as numpy arrays.

:mod:`vitsae.sae.checkpoint` writes both and loads an SAE as a torch module for inference. The jobs that
only need an SAE's identity or its decoder directions (clusters, training figures, feature-level transfer)
read them here, so they never import torch (~2 CPU-seconds per job).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

WEIGHTS_FILE = "sae.safetensors"
CFG_FILE = "cfg.json"


def _directory(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.parent if path.is_file() else path


def read_cfg(path: str | os.PathLike) -> dict:
    """The ``cfg.json`` of the SAE in a directory, or beside the file ``path`` (its identity: dataset,
    model, layer, sweep in ``meta``; ``sae_id``; settings)."""
    directory = _directory(path)
    cfg_path = directory / CFG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{cfg_path} does not exist; rerun the training job of the SAE in {directory}"
        )
    return json.loads(cfg_path.read_text())


def read_decoder(path: str | os.PathLike) -> np.ndarray:
    """The decoder ``W_dec [d_sae, d_in]`` (float32, SAELens' name and shape) of the SAE in a directory or
    named by its ``sae.safetensors``: the bytes :func:`vitsae.sae.checkpoint.load` would load."""
    directory = _directory(path)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"SAE checkpoint {directory} needs {WEIGHTS_FILE}; rerun its training job")
    return load_file(str(weights))["W_dec"]
