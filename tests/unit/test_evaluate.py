"""vitsae.sae.evaluate: streaming metrics equal a float64 NumPy reference computed on the whole array."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_sae import ReluSAE

from vitsae.data.store import write_arrays
from vitsae.sae.checkpoint import SparseAutoencoder
from vitsae.sae.evaluate import evaluate, evaluate_many, identity, write_json

D, F = 12, 40
N_DEAD, N_DENSE = 5, 3


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    offset_D = rng.normal(0, 4, D)
    acts_NTD = (offset_D + rng.normal(0, 1, (30, 5, D)) * rng.uniform(0.2, 3, D)).astype(np.float32)
    attrs = {"token_layout": {"n_tokens": 5, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [2, 2]},
             "dataset": "eval", "layer": 1, "model": {"name": "synthetic"}}  # fmt: skip
    path = tmp_path_factory.mktemp("eval") / "store.zarr"
    return write_arrays(path, attrs, {"val": acts_NTD}, chunk_images=7)


def relu_sae(d: int, f: int, gen: torch.Generator) -> SparseAutoencoder:
    """An SAE with the trainer's initialisation (via the reference) and the given token kind."""
    ref = ReluSAE(d, f)
    ref.initialise(torch.randn(512, d, generator=gen) * 2 + 3, seed=2)
    model = SparseAutoencoder(d, f, "relu_l1", float(ref.scale), cfg={"token_kind": "patches"})
    with torch.no_grad():
        for name in ("W_enc_DF", "b_enc_F", "W_dec_FD", "b_dec_D"):
            getattr(model, name).copy_(getattr(ref, name))
    return model


@pytest.fixture(scope="module")
def sae() -> SparseAutoencoder:
    gen = torch.Generator().manual_seed(1)
    model = relu_sae(D, F, gen)
    with torch.no_grad():
        model.b_enc_F.copy_(torch.randn(F, generator=gen) * 0.5 - 0.5)
        model.b_enc_F[:N_DEAD] = -1e4  # never fire
        model.b_enc_F[N_DEAD : N_DEAD + N_DENSE] = 1e4  # always fire
    return model


def reference(model: SparseAutoencoder, x_ND: np.ndarray, dense_threshold: float) -> dict:
    """Everything in float64 NumPy, on the whole array at once, two-pass variance."""
    x_ND = x_ND.astype(np.float64)
    scale = float(model.scale)
    W_enc_DF, b_enc_F, W_dec_FD, b_dec_D = (
        t.detach().double().numpy() for t in (model.W_enc_DF, model.b_enc_F, model.W_dec_FD, model.b_dec_D)
    )
    f_NF = np.maximum((x_ND * scale - b_dec_D) @ W_enc_DF + b_enc_F, 0)
    xhat_ND = (f_NF @ W_dec_FD + b_dec_D) / scale
    err = ((x_ND - xhat_ND) ** 2).sum()
    fires_F = (f_NF > 0).sum(0)
    n = x_ND.shape[0]
    return {
        "n_tokens": n,
        "mse": err / n,
        "fvu": err / ((x_ND - x_ND.mean(0)) ** 2).sum(),
        "l0": (f_NF > 0).sum() / n,
        "l1": f_NF.sum() / n,
        "dead_fraction": (fires_F == 0).mean(),
        "dense_fraction": (fires_F > dense_threshold * n).mean(),
        "fires_F": fires_F,
    }


@pytest.mark.parametrize("token_kind, sl", [(None, slice(1, 5)), ("all", slice(0, 5)), ("cls", slice(0, 1))])
def test_metrics_match_float64_reference(
    store: Path, sae: SparseAutoencoder, token_kind: str | None, sl: slice
) -> None:
    from vitsae.data.store import open_store

    x_ND = open_store(store)["val"][:, sl].reshape(-1, D)
    # batch_tokens smaller than a chunk (7 images) and not a divisor of it: batches split chunks
    got = evaluate(sae, store, "val", token_kind=token_kind, batch_tokens=10, dense_threshold=0.3)
    ref = reference(sae, x_ND, 0.3)
    assert got["token_kind"] == (token_kind or "patches") and got["split"] == "val"
    assert got["n_tokens"] == ref["n_tokens"] == x_ND.shape[0]
    for key in ("mse", "fvu", "l1"):
        assert got[key] == pytest.approx(ref[key], rel=1e-6), key
    assert got["l0"] == pytest.approx(ref["l0"], rel=1e-6)
    assert got["dead_fraction"] == pytest.approx(ref["dead_fraction"], abs=1e-12)
    assert got["dense_fraction"] == pytest.approx(ref["dense_fraction"], abs=1e-12)
    # the planted dead and dense features are there, plus whatever the random ones do
    assert got["dead_fraction"] >= N_DEAD / F and got["dense_fraction"] >= N_DENSE / F
    assert 0 < got["fvu"] and all(type(got[k]) in (int, float) for k in ref if k != "fires_F")


def test_fvu_uses_mean_of_evaluated_tokens(store: Path, sae: SparseAutoencoder) -> None:
    """Σ‖x−μ‖² (not Σ‖x‖²): on offset data the two differ by far more than the tolerance."""
    from vitsae.data.store import open_store

    x_ND = open_store(store)["val"][:, 1:].reshape(-1, D).astype(np.float64)
    got = evaluate(sae, store, "val")
    total_var = ((x_ND - x_ND.mean(0)) ** 2).sum()
    assert got["mse"] * got["n_tokens"] / got["fvu"] == pytest.approx(total_var, rel=1e-6)
    assert ((x_ND - x_ND.mean(0)) ** 2).sum() < 0.5 * (x_ND**2).sum()


def test_dense_threshold_and_errors(store: Path, sae: SparseAutoencoder) -> None:
    lo = evaluate(sae, store, "val", dense_threshold=0.0)
    hi = evaluate(sae, store, "val", dense_threshold=1.0)
    assert hi["dense_fraction"] == 0.0  # "more than all tokens" never holds
    assert lo["dense_fraction"] == pytest.approx(1.0 - lo["dead_fraction"])
    with pytest.raises(ValueError, match="d_in=7"):
        evaluate(relu_sae(7, 14, torch.Generator().manual_seed(0)), store, "val")
    with pytest.raises(Exception, match="no split 'train'"):
        evaluate(sae, store, "train")


def test_a_sweeps_saes_in_one_pass_each_match_their_own_float64_reference(
    store: Path, sae: SparseAutoencoder
) -> None:
    from vitsae.data.store import open_store

    x_ND = open_store(store)["val"][:, 1:5].reshape(-1, D)
    others = [relu_sae(D, 24, torch.Generator().manual_seed(s)) for s in (5, 6)]
    saes = [sae, *others]
    got = evaluate_many(saes, store, "val", batch_tokens=10, dense_threshold=0.3)
    assert len(got) == 3 and got[0] == evaluate(sae, store, "val", batch_tokens=10, dense_threshold=0.3)
    for result, model in zip(got, saes, strict=True):
        ref = reference(model, x_ND, 0.3)
        assert result["n_tokens"] == ref["n_tokens"]
        for key in ("mse", "fvu", "l1", "l0"):
            assert result[key] == pytest.approx(ref[key], rel=1e-6), key
        assert result["dead_fraction"] == pytest.approx(ref["dead_fraction"], abs=1e-12)
    # the sums are kept apart: the planted dead features belong to the first SAE only
    assert got[0]["dead_fraction"] >= N_DEAD / F and got[1]["fvu"] != got[2]["fvu"] != got[0]["fvu"]
    cls_sae = relu_sae(D, 24, torch.Generator().manual_seed(7))
    cls_sae.cfg["token_kind"] = "cls"
    with pytest.raises(ValueError, match=r"different token kinds \['cls', 'patches'\]"):
        evaluate_many([sae, cls_sae], store, "val")
    with pytest.raises(ValueError, match="d_in=7"):
        evaluate_many([sae, relu_sae(7, 14, torch.Generator().manual_seed(0))], store, "val")
    with pytest.raises(ValueError, match="at least one SAE"):
        evaluate_many([], store, "val")


def test_write_json_is_atomic_and_plain(tmp_path: Path, store: Path, sae: SparseAutoencoder) -> None:
    result = evaluate(sae, store, "val")
    out = tmp_path / "deep" / "eval.json"
    write_json(result, out)
    assert json.loads(out.read_text()) == result
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]  # no partial file left behind


def test_identity_comes_from_the_cfg_json(sae: SparseAutoencoder) -> None:
    sae = SparseAutoencoder(D, F, "relu_l1", cfg={"sae_id": "relu_l1-x4-l1_3-lr_0.004-s0", "meta": {
        "dataset": "inet", "model": "clip", "layer": 10, "sweep": "paper"}})  # fmt: skip
    assert identity(sae) == {"model": "clip", "layer": 10, "sweep": "paper", "sae_id": "relu_l1-x4-l1_3-lr_0.004-s0",
                             "train_dataset": "inet"}  # fmt: skip
    with pytest.raises(KeyError, match=r"lacks \['sweep'\]"):
        identity(SparseAutoencoder(D, F, "relu_l1", cfg={"sae_id": "x", "meta": {"dataset": "a", "model": "b",
                                                                                   "layer": 1}}))  # fmt: skip


@pytest.mark.parametrize("architecture", ["relu_l1", "topk", "jumprelu"])
def test_fire_counts_equal_the_boolean_counts_of_every_inference_kind(architecture: str) -> None:
    from vitsae.sae.evaluate import fire_counts

    gen = torch.Generator().manual_seed(3)
    model = SparseAutoencoder(D, F, architecture, 1.0, k=4 if architecture == "topk" else None)
    with torch.no_grad():
        model.W_enc_DF.copy_(torch.randn(D, F, generator=gen))
        model.b_enc_F.copy_(torch.randn(F, generator=gen))
        model.threshold_F.copy_(torch.rand(F, generator=gen) * 2)
    f_BTF = model.encode(torch.randn(6 * 7, D, generator=gen)).reshape(6, 7, F)
    assert (f_BTF == 0).any() and (f_BTF > 0).any()
    for dim in (0, 1):
        got = fire_counts(f_BTF, dim=dim)
        assert got.dtype == torch.int64
        assert torch.equal(got, (f_BTF > 0).sum(dim=dim))
    # -0.0 (a ReLU of a negative zero) does not fire
    assert fire_counts(torch.tensor([[-0.0, 0.0, 2.0]])).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="fewer than 2\\*\\*24 entries at once, got 16777216"):
        fire_counts(torch.zeros(1, 3).expand(2**24, 3))
