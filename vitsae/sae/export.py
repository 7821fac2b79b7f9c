"""A trained SAE in another tool's on-disk layout: ``vitsae export --format saelens SAE_DIR OUT_DIR``.

SAELens (``sae-lens`` ≥ 6) loads a directory holding ``sae_weights.safetensors`` and ``cfg.json`` with
``sae_lens.SAE.load_from_disk(OUT_DIR)``. Its inference SAEs encode ``f = act((x - b_dec) @ W_enc +
b_enc)`` and decode ``x̂ = f @ W_dec + b_dec`` with no input scale, so vitsae's scalar normalisation
(encode ``(x * scale - b_dec) @ W_enc + b_enc``, decode ``(f @ W_dec + b_dec) / scale``) is folded
into the weights: ``W_enc * scale``, ``W_dec / scale``, ``b_dec / scale``; ``b_enc`` and the thresholds
are unchanged, because the pre-activations are. SAELens then gives the same features (vitsae's
normalised units) and the same reconstructions (original units) from inputs in original units.

Each vitsae architecture maps to its SAELens inference form (:data:`SAELENS_ARCHITECTURE`):
``relu_l1`` and ``relu_l1_free`` → ``standard`` (ReLU); ``topk`` → ``topk`` (same ``k``, no decoder-norm
rescaling); ``batchtopk`` → ``jumprelu`` with its uniform threshold (as SAELens itself saves a
BatchTopK SAE for inference); ``jumprelu`` → ``jumprelu``. Thresholds are written clamped at 0, as
vitsae applies them.

``cfg.json`` keeps the SAE's identity in SAELens' ``metadata`` (which loads any extra key):
``sae_id``, ``dataset``, ``model``, ``layer``, ``token_kind``, ``sweep``, vitsae's architecture and
the folded normalisation, and ``hook_name`` (:func:`hook_name`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from vitsae.atomic import atomic_write
from vitsae.sae.checkpoint import SparseAutoencoder, load

FORMATS = ("saelens",)
SAELENS_WEIGHTS_FILE = "sae_weights.safetensors"
SAELENS_CFG_FILE = "cfg.json"
#: vitsae architecture → the SAELens inference architecture that computes the same features.
SAELENS_ARCHITECTURE = {"relu_l1": "standard", "relu_l1_free": "standard", "topk": "topk",
                        "batchtopk": "jumprelu", "jumprelu": "jumprelu"}  # fmt: skip
#: The SAELens cfg format written (its ``metadata.sae_lens_version``; below 6.0 SAELens reads a cfg as a
#: pre-6 one and renames its keys).
SAELENS_FORMAT_VERSION = "6.0.0"


def hook_name(cfg: dict) -> str:
    """SAELens' ``hook_name`` for an SAE with ``cfg``: ``{model}.blocks.{layer}.hook_resid_post.{tokens}``,
    e.g. ``clip-b16.blocks.10.hook_resid_post.patches``: the output of transformer block ``layer``
    (0-based; the residual stream after it) of the config's model ``model``, at its ``tokens`` tokens
    (``patches``, ``cls`` or ``all``). A label only: a timm/open_clip ViT has no TransformerLens hook
    points, so no SAELens tool can attach the SAE to a model by it (and it does not end in ``_z``, so
    SAELens never reshapes inputs as attention heads)."""
    hook = cfg.get("hook") or {}
    meta = cfg.get("meta") or {}
    model = hook.get("model", meta.get("model"))
    layer = hook.get("layer", meta.get("layer"))
    tokens = hook.get("tokens", cfg.get("token_kind"))
    missing = [k for k, v in (("model", model), ("layer", layer), ("tokens", tokens)) if v is None]
    if missing:
        raise ValueError(
            f"SAE {cfg.get('sae_id', '?')}: cfg.json has no hook {'/'.join(missing)} (hook.* or meta.*); "
            "export an SAE written by vitsae's training job"
        )
    return f"{model}.blocks.{int(layer)}.hook_resid_post.{tokens}"


def to_saelens(sae: SparseAutoencoder) -> tuple[dict, dict[str, torch.Tensor]]:
    """SAELens' ``cfg.json`` contents and state dict for ``sae``, the normalisation folded in (module
    docstring). Raises ValueError naming the architecture (or normalisation) SAELens has no form of."""
    cfg, sae_id = sae.cfg, sae.cfg.get("sae_id", "?")
    if sae.architecture not in SAELENS_ARCHITECTURE:
        raise ValueError(
            f"SAE {sae_id}: architecture {sae.architecture!r} has no SAELens equivalent; "
            f"export supports {', '.join(SAELENS_ARCHITECTURE)}"
        )
    norm = cfg.get("normalisation") or {"kind": "scalar", "scale": float(sae.scale)}
    if norm.get("kind", "scalar") != "scalar":
        raise ValueError(
            f"SAE {sae_id}: normalisation kind {norm.get('kind')!r} cannot be folded into SAELens weights; "
            "only 'scalar' can"
        )
    arch = SAELENS_ARCHITECTURE[sae.architecture]
    scale = float(sae.scale)
    w = {k: v.double() for k, v in sae.tensors().items()}
    dtype = sae.W_enc_DF.dtype
    tensors = {
        "W_enc": w["W_enc"] * scale, "b_enc": w["b_enc"], "W_dec": w["W_dec"] / scale, "b_dec": w["b_dec"] / scale,
    }  # fmt: skip
    if arch == "jumprelu":
        tensors["threshold"] = w["threshold"].clamp(min=0)
    tensors = {k: v.to(dtype).contiguous() for k, v in tensors.items()}
    meta = cfg.get("meta") or {}
    out = {
        "architecture": arch, "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": str(dtype).removeprefix("torch."),
        "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none",
    }  # fmt: skip
    if arch == "topk":
        out |= {"k": int(sae.k), "rescale_acts_by_decoder_norm": False}
    out["metadata"] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,  # trained by vitsae, not SAELens
        "model_name": meta.get("model"),
        "hook_name": hook_name(cfg),
        "hook_head_index": None,
        "prepend_bos": False,
        "sae_id": cfg.get("sae_id"),
        "dataset": meta.get("dataset"),
        "model": meta.get("model"),
        "layer": meta.get("layer"),
        "token_kind": cfg.get("token_kind"),
        "sweep": meta.get("sweep"),
        "store": meta.get("store"),
        "vitsae_architecture": sae.architecture,
        "vitsae_normalisation": {**norm, "folded": "into W_enc (*scale), W_dec and b_dec (/scale)"},
    }
    return out, tensors


def export_saelens(sae_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the SAE in ``sae_dir`` (vitsae's ``sae.safetensors`` + ``cfg.json``) as a SAELens directory
    ``out_dir`` (``cfg.json``, then ``sae_weights.safetensors``, each atomically). Returns the weights'
    path. ``out_dir`` must not be ``sae_dir`` (both hold a ``cfg.json``)."""
    sae_dir, out_dir = Path(sae_dir), Path(out_dir)
    src = sae_dir.parent if sae_dir.is_file() else sae_dir
    if out_dir.resolve() == src.resolve():
        raise ValueError(
            f"export to {out_dir} would overwrite the cfg.json of the SAE there; choose another OUT_DIR"
        )
    cfg, tensors = to_saelens(load(sae_dir))
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    atomic_write(out_dir / SAELENS_CFG_FILE, lambda p: p.write_text(text))
    return atomic_write(out_dir / SAELENS_WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
