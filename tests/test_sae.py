"""vitsae.sae: planted-dictionary recovery, decoder constraint, loader order and bytes, determinism, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vitsae import sae as sae_mod
from vitsae.sae import ReluSAE, SAEConfig, load, token_batches, train, train_from_store
from vitsae.store import write_arrays

N_PREFIX = 1


def layout(n_tokens: int) -> dict:
    grid = [1, n_tokens - N_PREFIX]
    return {"n_tokens": n_tokens, "n_prefix": N_PREFIX, "n_registers": 0, "cls_index": 0, "grid": grid}


def make_store(path: Path, arrays: dict[str, np.ndarray], chunk_images: int) -> Path:
    n_tokens = next(iter(arrays.values())).shape[1]
    model = {"name": "synthetic"}
    attrs = {"token_layout": layout(n_tokens), "dataset": "planted", "layer": 3, "model": model}
    return write_arrays(path, attrs, arrays, chunk_images=chunk_images)


def planted(
    n_images: int = 600, n_tokens: int = 17, d: int = 64, n_atoms: int = 256, k: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """x = Σ aᵢdᵢ + offset + noise: unit-norm atoms, k active per token with magnitudes in [0.5, 2],
    a per-dimension offset with a few large dimensions (as ViT activations have)."""
    rng = np.random.default_rng(seed)
    atoms_AD = rng.standard_normal((n_atoms, d))
    atoms_AD /= np.linalg.norm(atoms_AD, axis=1, keepdims=True)
    n = n_images * n_tokens
    idx_NK = np.argsort(rng.random((n, n_atoms)), axis=1)[:, :k]
    codes_NA = np.zeros((n, n_atoms))
    np.put_along_axis(codes_NA, idx_NK, rng.uniform(0.5, 2.0, (n, k)), axis=1)
    offset_D = 2.0 * rng.standard_normal(d)
    offset_D[:3] = [8.0, -6.0, 5.0]
    x_ND = codes_NA @ atoms_AD + offset_D + 0.02 * rng.standard_normal((n, d))
    return atoms_AD, x_ND.reshape(n_images, n_tokens, d).astype(np.float32)


# The planted data's energy is dominated by its offset (‖offset‖² ≈ 20× the signal's), so after the
# E‖x·scale‖² = d normalisation the signal is small and the L1 coefficient is lower than the demo's.
PLANTED_CFG = SAEConfig(
    expansion=8, l1_coeff=0.3, lr=8e-3, lr_warmup_steps=5, l1_warmup_steps=20, batch_size=256,
    train_tokens=200_000, seed=0, shuffle_chunks=4, log_every=50,
)  # fmt: skip
TINY_CFG = SAEConfig(
    expansion=2, l1_coeff=0.3, lr=4e-3, lr_warmup_steps=2, l1_warmup_steps=4, batch_size=128,
    train_tokens=4_000, seed=0, shuffle_chunks=2, log_every=5,
)  # fmt: skip


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path, Path]:
    tmp = tmp_path_factory.mktemp("planted")
    atoms_AD, x_NTD = planted()
    store = make_store(tmp / "store.zarr", {"train": x_NTD}, chunk_images=50)
    meta = {"dataset": "planted", "model": "synthetic"}
    weights = train_from_store(store, "train", PLANTED_CFG, tmp / "sae", meta)
    return atoms_AD, store, weights


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, x_NTD = planted(n_images=40, n_tokens=5, d=16, n_atoms=32, k=2, seed=1)
    return make_store(tmp_path_factory.mktemp("tiny") / "store.zarr", {"train": x_NTD, "val": x_NTD[:8]}, 4)


def test_recovers_planted_dictionary(planted_run: tuple[np.ndarray, Path, Path]) -> None:
    atoms_AD, _, weights = planted_run
    sae = load(weights)
    cos_AF = atoms_AD @ sae.W_dec_FD.detach().numpy().T
    mean_max_cos = float(cos_AF.max(axis=1).mean())
    log = (weights.parent / "train_log.csv").read_text().splitlines()
    header, last = log[0].split(","), dict(zip(log[0].split(","), log[-1].split(",")))
    print(f"mean max cosine {mean_max_cos:.3f}; last log row {last}")
    assert mean_max_cos >= 0.9
    assert "dead_fraction" in header and 0.0 <= float(last["dead_fraction"]) <= 1.0
    assert int(last["step"]) == -(-PLANTED_CFG.train_tokens // PLANTED_CFG.batch_size)
    assert int(last["tokens"]) == PLANTED_CFG.train_tokens
    assert 1.0 < float(last["l0"]) < 40.0
    assert float(last["l1_coeff"]) == PLANTED_CFG.l1_coeff and float(last["lr"]) == PLANTED_CFG.lr


def test_decoder_rows_unit_norm_after_training(planted_run: tuple[np.ndarray, Path, Path]) -> None:
    sae = load(planted_run[2])
    norms_F = sae.W_dec_FD.detach().norm(dim=1)
    torch.testing.assert_close(norms_F, torch.ones_like(norms_F), atol=1e-5, rtol=0)


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
    assert float((scaled_ND**2).sum(1).mean()) == pytest.approx(16.0, rel=1e-6)
    torch.testing.assert_close(sae.b_dec_D.double(), scaled_ND.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sae.W_enc_DF, sae.W_dec_FD.T)
    # decode returns original units: a zero code reconstructs the sample mean
    torch.testing.assert_close(sae.decode(torch.zeros(1, 64))[0], sample_ND.mean(0), rtol=1e-5, atol=1e-5)


def test_loader_reads_whole_chunks_in_seeded_order(tiny_store: Path) -> None:
    from vitsae.store import open_store

    arr = open_store(tiny_store)["train"]  # 40 images x 5 tokens (1 CLS + 4 patches) x 16, chunks of 4
    patches_NTD = arr[:, N_PREFIX:]
    one_pass = patches_NTD.shape[0] * patches_NTD.shape[1]
    loader = token_batches(tiny_store, "train", "patches", 48, seed=7, shuffle_chunks=3, n_tokens=one_pass)
    batches = list(loader)
    sizes = [48] * (one_pass // 48) + ([one_pass % 48] if one_pass % 48 else [])
    assert [b.shape[0] for b in batches] == sizes
    assert all(b.dtype == torch.float32 and b.shape[1] == 16 for b in batches)
    assert loader.bytes_read == patches_NTD.nbytes  # one pass, nothing read twice or ahead
    expected = [(0, int(i)) for i in np.random.default_rng([7, 0]).permutation(10)]
    assert loader.chunks_read == expected
    # every token exactly once, and shuffled across chunks
    got_ND = torch.cat(batches).numpy()
    ref_ND = patches_NTD.reshape(-1, 16).astype(np.float32)
    np.testing.assert_array_equal(np.sort(got_ND, axis=0), np.sort(ref_ND, axis=0))
    assert not np.array_equal(got_ND[:48], ref_ND[:48])

    again = token_batches(tiny_store, "train", "patches", 48, seed=7, shuffle_chunks=3, n_tokens=one_pass)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    other = token_batches(tiny_store, "train", "patches", 48, seed=8, shuffle_chunks=3, n_tokens=one_pass)
    other_batches = list(other)
    assert other.chunks_read != loader.chunks_read and sorted(other.chunks_read) == sorted(loader.chunks_read)
    assert not torch.equal(other_batches[0], batches[0])


def test_loader_epochs_use_new_permutations(tiny_store: Path) -> None:
    # 40 CLS tokens per epoch
    loader = token_batches(tiny_store, "train", "cls", 16, seed=1, shuffle_chunks=2, n_tokens=100)
    assert sum(b.shape[0] for b in loader) == 100
    epochs = [[i for e, i in loader.chunks_read if e == ep] for ep in range(3)]
    assert [len(c) for c in epochs] == [10, 10, 5]  # the third epoch only as far as needed
    assert epochs[0] == list(np.random.default_rng([1, 0]).permutation(10))
    assert epochs[1] == list(np.random.default_rng([1, 1]).permutation(10))
    assert epochs[0] != epochs[1]
    assert loader.bytes_read == 25 * 4 * 1 * 16 * 2  # 25 chunks x 4 images x 1 token x 16 dims x fp16


def test_training_is_deterministic(tiny_store: Path, tmp_path: Path) -> None:
    a = train_from_store(tiny_store, "train", TINY_CFG, tmp_path / "a", {})
    b = train_from_store(tiny_store, "train", TINY_CFG, tmp_path / "b", {})
    seed1 = SAEConfig.from_dict({**TINY_CFG.to_dict(), "seed": 1})
    c = train_from_store(tiny_store, "train", seed1, tmp_path / "c", {})
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert (tmp_path / "a" / "train_log.csv").read_text() == (tmp_path / "b" / "train_log.csv").read_text()


def test_load_round_trip_and_cfg_json(tiny_store: Path, tmp_path: Path) -> None:
    meta = {"dataset": "tiny", "model": {"name": "synthetic", "pretrained": False}, "layer": 3}
    path = train_from_store(tiny_store, "train", TINY_CFG, tmp_path / "sae", meta)
    assert path == tmp_path / "sae" / "sae.safetensors"
    names = sorted(p.name for p in (tmp_path / "sae").iterdir())
    assert names == ["cfg.json", "sae.safetensors", "train_log.csv"]
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["d_in"] == 16 and cfg["d_sae"] == 32
    assert cfg["architecture"] == "relu_l1_unit_decoder" and cfg["dtype"] == "float32"
    assert cfg["normalisation"]["kind"] == "scalar" and isinstance(cfg["normalisation"]["scale"], float)
    assert cfg["hook"] == {"model": meta["model"], "layer": 3, "tokens": "patches"}
    for key, value in TINY_CFG.to_dict().items():
        assert cfg[key] == value and type(cfg[key]) is type(value)
    assert cfg["meta"]["dataset"] == "tiny" and cfg["meta"]["split"] == "train"
    assert cfg["meta"]["store"] == str(tiny_store)

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert sorted(fh.keys()) == ["W_dec", "W_enc", "b_dec", "b_enc"]
        assert fh.get_tensor("W_enc").shape == (16, 32) and fh.get_tensor("W_dec").shape == (32, 16)

    sae_dir, sae_file = load(tmp_path / "sae"), load(path)
    assert sae_dir.cfg == cfg and float(sae_dir.scale) == cfg["normalisation"]["scale"]
    x_BD = torch.randn(32, 16) * 2 + 1
    # the trained model (retrained, same seed) and the loaded one give identical outputs
    cfg_obj = SAEConfig.from_dict({k: cfg[k] for k in TINY_CFG.to_dict()})
    loader = token_batches(tiny_store, "train", "patches", 128, 0, 2, TINY_CFG.train_tokens)
    init_ND = torch.from_numpy(loader.peek_buffer()[: sae_mod.INIT_SAMPLE_TOKENS].astype(np.float32))
    trained, _ = train(loader, 16, cfg_obj, init_ND)
    for loaded in (sae_dir, sae_file):
        for got, want in zip(loaded(x_BD), trained(x_BD)):
            assert torch.equal(got, want)


def test_killed_job_leaves_no_weights(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        Path(args[1]).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(sae_mod, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        train_from_store(tiny_store, "train", TINY_CFG, tmp_path / "sae", {})
    assert not (tmp_path / "sae" / "sae.safetensors").exists()


def test_nan_activations_raise_naming_store_and_split(tmp_path: Path) -> None:
    _, x_NTD = planted(n_images=64, n_tokens=5, d=16, n_atoms=32, k=2)
    x_NTD[37, 2, 3] = np.nan
    store = make_store(tmp_path / "nan.zarr", {"train": x_NTD}, 4)
    with pytest.raises(ValueError, match=r"activations contain NaN/Inf.*nan\.zarr.*'train'"):
        train_from_store(store, "train", TINY_CFG, tmp_path / "sae", {})
    assert not (tmp_path / "sae" / "sae.safetensors").exists()


def test_too_few_tokens_for_a_batch(tiny_store: Path, tmp_path: Path) -> None:
    cfg = SAEConfig.from_dict({**TINY_CFG.to_dict(), "batch_size": 1024})  # val holds 8 x 4 = 32 patch tokens
    with pytest.raises(ValueError, match=r"split 'val' has 32 'patches' tokens, fewer than batch_size=1024"):
        train_from_store(tiny_store, "val", cfg, tmp_path / "sae", {})


def test_config_from_dict() -> None:
    cfg = SAEConfig.from_dict({"l1_coeff": 1, "lr": "1e-3", "expansion": 16})
    assert cfg.l1_coeff == 1.0 and type(cfg.l1_coeff) is float and cfg.lr == 1e-3 and cfg.expansion == 16
    assert SAEConfig.from_dict(SAEConfig().to_dict()) == SAEConfig()
    with pytest.raises(ValueError, match="l1_coef"):
        SAEConfig.from_dict({"l1_coef": 1.0})
    with pytest.raises(ValueError, match="token_kind"):
        SAEConfig(token_kind="registers")


def test_train_logs_last_step_and_stops_at_train_tokens() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(64, 8, generator=gen) + 2 for _ in range(5)]
    cfg = SAEConfig(expansion=2, batch_size=64, train_tokens=10_000, log_every=100)
    _, log = train(iter(batches[:3]), 8, cfg, batches[0])  # runs out early
    assert [r["step"] for r in log] == [3] and log[0]["tokens"] == 192
    cfg = SAEConfig(expansion=2, batch_size=64, train_tokens=128, log_every=100, lr_warmup_steps=0)
    _, log = train(iter(batches), 8, cfg, batches[0])  # stops at train_tokens
    assert [(r["step"], r["tokens"], r["lr"]) for r in log] == [(2, 128, cfg.lr)]
    assert set(log[0]) == set(sae_mod.LOG_FIELDS)
