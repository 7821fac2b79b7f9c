"""The plain-PyTorch reference SAE (tests/reference_sae.py) that the stacked trainer is checked against:
its decoder constraint, initialisation and log."""

from __future__ import annotations

import pytest
import torch
from reference_sae import LOG_FIELDS, ReluSAE, SAEConfig, train


def test_gradient_projection_removes_parallel_component() -> None:
    torch.manual_seed(0)
    sae = ReluSAE(8, 32)
    sample_ND = torch.randn(256, 8) + 3.0
    sae.initialise(sample_ND, seed=0)
    x_BD = sample_ND[:64]
    xhat_BD, f_BF = sae(x_BD)
    (((xhat_BD - x_BD) ** 2).sum(1).mean() + 0.1 * f_BF.sum(1).mean()).backward()
    W_FD = sae.W_dec_FD.detach().clone()
    g_FD = sae.W_dec_FD.grad.clone()
    parallel_F = (g_FD * W_FD).sum(1)
    assert parallel_F.abs().max() > 1e-3  # there was something to remove
    sae.remove_parallel_grad()
    g2_FD = sae.W_dec_FD.grad
    residual_F = (g2_FD * W_FD).sum(1)
    assert residual_F.abs().max() < 1e-5 * parallel_F.abs().max()
    torch.testing.assert_close(g2_FD, g_FD - parallel_F[:, None] * W_FD)


def test_initialisation_scale_and_b_dec() -> None:
    sample_ND = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0)) * 3 + 5
    sae = ReluSAE(16, 64)
    sae.initialise(sample_ND, seed=3)
    scaled_ND = sample_ND.double() * float(sae.scale)
    centred_ND = scaled_ND - scaled_ND.mean(0)  # the default centred units: the spread, not the offset
    assert float((centred_ND**2).sum(1).mean()) == pytest.approx(16.0, rel=1e-6)
    raw = ReluSAE(16, 64)
    raw.initialise(sample_ND, seed=3, input_norm="raw")
    assert float(((sample_ND.double() * float(raw.scale)) ** 2).sum(1).mean()) == pytest.approx(
        16.0, rel=1e-6
    )
    torch.testing.assert_close(sae.b_dec_D.double(), scaled_ND.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sae.W_enc_DF, sae.W_dec_FD.T)
    # decode returns original units: a zero code reconstructs the sample mean
    torch.testing.assert_close(sae.decode(torch.zeros(1, 64))[0], sample_ND.mean(0), rtol=1e-5, atol=1e-5)


def test_train_logs_last_step_and_stops_at_train_tokens() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(64, 8, generator=gen) + 2 for _ in range(5)]
    cfg = SAEConfig(expansion=2, batch_size=64, train_tokens=10_000, log_every=100)
    _, log = train(iter(batches[:3]), 8, cfg, batches[0])  # runs out early
    assert [r["step"] for r in log] == [3] and log[0]["tokens"] == 192
    cfg = SAEConfig(expansion=2, batch_size=64, train_tokens=128, log_every=100, lr_warmup_steps=0)
    _, log = train(iter(batches), 8, cfg, batches[0])  # stops at train_tokens
    assert [(r["step"], r["tokens"], r["lr"]) for r in log] == [(2, 128, cfg.lr)]
    assert set(log[0]) == set(LOG_FIELDS)
