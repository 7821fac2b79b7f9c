"""vitsae.sae.export: every architecture, exported with its normalisation folded in, loads with SAELens'
own loader and gives vitsae's features and reconstructions in original units; what SAELens has no form
of is refused by name; files written atomically get the umask's mode (vitsae.atomic)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vitsae.atomic import atomic_write, file_mode
from vitsae.cli import main
from vitsae.sae.checkpoint import INFERENCE, SparseAutoencoder
from vitsae.sae.export import (
    SAELENS_ARCHITECTURE,
    SAELENS_WEIGHTS_FILE,
    export_saelens,
    hook_name,
    to_saelens,
)

sae_lens = pytest.importorskip("sae_lens")

D_IN, D_SAE, K, SCALE = 24, 96, 6, 0.37


def random_sae(architecture: str, seed: int = 0) -> SparseAutoencoder:
    """An SAE with random weights, a scale far from 1, a non-zero ``b_dec`` and, for the threshold
    architectures, thresholds that switch some features off (some negative: vitsae clamps them at 0)."""
    g = torch.Generator().manual_seed(seed)
    cfg = {
        "sae_id": f"{architecture}-x4-s{seed}", "architecture": architecture, "d_in": D_IN, "d_sae": D_SAE,
        "k": K if architecture == "topk" else None, "token_kind": "patches",
        "hook": {"model": "dinov2-s14", "layer": 7, "tokens": "patches"},
        "meta": {"dataset": "imagenet-demo", "model": "dinov2-s14", "layer": 7, "sweep": "paper"},
        "normalisation": {"kind": "scalar", "scale": SCALE},
    }  # fmt: skip
    sae = SparseAutoencoder(D_IN, D_SAE, architecture, SCALE, cfg["k"], cfg)
    with torch.no_grad():
        sae.W_enc_DF.copy_(torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5)
        sae.b_enc_F.copy_(torch.randn(D_SAE, generator=g) * 0.2)
        sae.W_dec_FD.copy_(torch.randn(D_SAE, D_IN, generator=g) / D_SAE**0.5)
        sae.b_dec_D.copy_(torch.randn(D_IN, generator=g) * 0.5)
        if architecture == "batchtopk":
            sae.threshold_F.fill_(0.4)
        elif architecture == "jumprelu":
            sae.threshold_F.copy_(torch.rand(D_SAE, generator=g) * 0.8 - 0.1)
    return sae


def inputs(n: int = 512, seed: int = 1) -> torch.Tensor:
    """Inputs in original units: offset and spread so that the scale and ``b_dec`` both matter."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=g) * 2.5 + torch.randn(D_IN, generator=g)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("architecture", sorted(INFERENCE))
def test_saelens_loads_the_export_and_matches(architecture, tmp_path):
    sae = random_sae(architecture)
    sae.save(tmp_path / "sae")
    export_saelens(tmp_path / "sae", tmp_path / "saelens")
    loaded = sae_lens.SAE.load_from_disk(tmp_path / "saelens")
    assert loaded.cfg.architecture() == SAELENS_ARCHITECTURE[architecture]
    x = inputs()
    with torch.no_grad():
        f_ref, f = sae.encode(x), loaded.encode(x)
        xhat_ref, xhat = sae.decode(f_ref), loaded.decode(f)
        forward = loaded(x)
    l0 = (f_ref > 0).sum(-1).float()
    assert 0 < l0.mean() < D_SAE / 2  # sparse but not empty: the comparison is not between zeros
    assert (f_ref - f).abs().max() <= 1e-5
    assert (xhat_ref - xhat).abs().max() <= 1e-5
    assert (sae(x)[0] - forward).abs().max() <= 1e-5
    # the scale matters: the weights renamed but not folded would decode f_ref far from xhat_ref
    assert (xhat_ref - (f_ref @ sae.W_dec_FD + sae.b_dec_D)).abs().max() > 0.1
    if architecture == "topk":
        assert torch.all(l0 <= K) and loaded.cfg.k == K


def test_the_export_keeps_the_identity_and_names_the_hook(tmp_path):
    sae = random_sae("jumprelu")
    sae.save(tmp_path / "sae")
    export_saelens(tmp_path / "sae", tmp_path / "out")
    meta = sae_lens.SAE.load_from_disk(tmp_path / "out").cfg.metadata
    assert meta.hook_name == "dinov2-s14.blocks.7.hook_resid_post.patches"
    assert (meta.sae_id, meta.dataset, meta.model, meta.layer) == (
        "jumprelu-x4-s0",
        "imagenet-demo",
        "dinov2-s14",
        7,
    )
    assert meta.vitsae_architecture == "jumprelu" and meta.vitsae_normalisation["scale"] == SCALE
    cfg = json.loads((tmp_path / "out/cfg.json").read_text())
    assert cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"] is True


def test_hook_name_needs_model_layer_and_tokens():
    assert hook_name({"meta": {"model": "clip-b16", "layer": 10}, "token_kind": "cls"}) == (
        "clip-b16.blocks.10.hook_resid_post.cls"
    )
    with pytest.raises(ValueError, match=r"SAE s0: cfg.json has no hook layer/tokens"):
        hook_name({"sae_id": "s0", "meta": {"model": "clip-b16"}})


def test_what_saelens_has_no_form_of_is_refused_by_name(tmp_path):
    sae = random_sae("relu_l1")
    sae.architecture = "gated"
    with pytest.raises(
        ValueError, match=r"SAE relu_l1-x4-s0: architecture 'gated' has no SAELens equivalent"
    ):
        to_saelens(sae)
    sae = random_sae("relu_l1")
    sae.cfg["normalisation"] = {"kind": "per_dim", "scale": [1.0] * D_IN}
    with pytest.raises(ValueError, match=r"normalisation kind 'per_dim' cannot be folded"):
        to_saelens(sae)
    random_sae("topk").save(tmp_path / "sae")
    with pytest.raises(ValueError, match="would overwrite the cfg.json"):
        export_saelens(tmp_path / "sae", tmp_path / "sae")


def test_cli_export(tmp_path, capsys):
    random_sae("batchtopk").save(tmp_path / "sae")
    assert main(["export", "--format", "saelens", str(tmp_path / "sae"), str(tmp_path / "out")]) == 0
    assert str(tmp_path / "out" / SAELENS_WEIGHTS_FILE) in capsys.readouterr().out
    assert type(sae_lens.SAE.load_from_disk(tmp_path / "out")).__name__ == "JumpReLUSAE"
    assert main(["export", "--format", "saelens", str(tmp_path / "none"), str(tmp_path / "o2")]) == 2
    assert "needs sae.safetensors and cfg.json" in capsys.readouterr().err


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_sae_files_get_the_umask_mode(tmp_path, umask_022):
    weights = random_sae("relu_l1").save(tmp_path / "sae")  # safetensors alone would write 0o600
    assert (mode(weights), mode(tmp_path / "sae/cfg.json")) == (0o644, 0o644)
    export_saelens(tmp_path / "sae", tmp_path / "out")
    assert {p.name: mode(p) for p in (tmp_path / "out").iterdir()} == {
        "cfg.json": 0o644, SAELENS_WEIGHTS_FILE: 0o644,
    }  # fmt: skip
    os.umask(0o027)
    assert file_mode() == 0o640
    assert mode(atomic_write(tmp_path / "f.txt", lambda p: p.write_text("x"))) == 0o640
    assert mode(random_sae("topk").save(tmp_path / "sae2")) == 0o640
