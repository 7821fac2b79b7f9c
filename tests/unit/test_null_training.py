"""The structure-free null (``TrainSettings.permute_dims``): the permutation keeps every dimension's values
and destroys cross-dimension correlation; an SAE trained through it recovers no planted direction while
the same SAE without it recovers them all; permuted training is deterministic and resumes bitwise; the
setting enters the state digest and cfg.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import PLANTED_TRAINING, make_store, planted

from vitsae.data.loader import TokenStream
from vitsae.sae import train as sweep
from vitsae.sae.checkpoint import load
from vitsae.sae.settings import SAESpec, TrainSettings
from vitsae.sae.train import permute_dims, train_sweep, train_sweep_from_store

TINY = TrainSettings(
    batch_size=64, train_tokens=64 * 20, token_kind="patches", shuffle_chunks=2, lr_warmup_steps=2,
    l1_warmup_steps=4, log_every=5, checkpoint_every=4, dead_steps=4, permute_dims=True,
)  # fmt: skip
SPECS = [
    SAESpec("relu_l1", 2, l1_coeff=0.3, seed=0),
    SAESpec("topk", 2, k=4, seed=1),
    SAESpec("jumprelu", 2, l1_coeff=0.1, seed=2),
]


def with_(settings: TrainSettings, **changes: object) -> TrainSettings:
    return TrainSettings(**{**settings.to_dict(), **changes})


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 40 images x 4 patch tokens = 160 patch tokens, chunks of 4 images (10 chunks)
    _, x_NTD = planted(n_images=40, n_tokens=5, d=16, n_atoms=32, k=2, seed=1)
    return make_store(tmp_path_factory.mktemp("tiny") / "store.zarr", {"train": x_NTD}, 4)


class Interrupted(Exception):
    pass


class StoppingStream(TokenStream):
    """A token stream that raises :class:`Interrupted` when asked for batch ``stop_after + 1`` (a run
    killed mid-training)."""

    stop_after: int

    def __next__(self) -> torch.Tensor:
        if self.position - self.start_tokens == self.stop_after * self.batch_size:
            raise Interrupted
        return super().__next__()


def factory(
    store: Path, settings: TrainSettings, stop_after: int | None = None
) -> Callable[[int], TokenStream]:
    def make(start_tokens: int) -> TokenStream:
        cls = TokenStream if stop_after is None else StoppingStream
        stream = cls(store, "train", settings.token_kind, settings.batch_size, settings.data_seed,
                     settings.shuffle_chunks, settings.train_tokens, start_tokens=start_tokens)  # fmt: skip
        if stop_after is not None:
            stream.stop_after = stop_after
        return stream

    return make


def same_weights(
    a: list[tuple[torch.nn.Module, list[dict]]], b: list[tuple[torch.nn.Module, list[dict]]]
) -> bool:
    for (ma, rows_a), (mb, rows_b) in zip(a, b, strict=True):
        sa, sb = ma.state_dict(), mb.state_dict()
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa) or rows_a != rows_b:
            return False
    return True


# --------------------------------------------------------------------------------------------
# (a) the permutation


def correlated_batch(n: int = 4096) -> torch.Tensor:
    """``[n, 8]``: dims (0, 1) and (2, 3) strongly correlated, (4, 5) anti-correlated, 6 and 7 free;
    offsets and scales differ per dimension."""
    gen = torch.Generator().manual_seed(0)
    z_N3 = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    noise_N8 = 0.1 * torch.randn(n, 8, generator=gen, dtype=torch.float64)
    x_N8 = torch.stack([z_N3[:, 0], z_N3[:, 0], z_N3[:, 1], z_N3[:, 1], z_N3[:, 2], -z_N3[:, 2],
                        torch.zeros(n), torch.zeros(n)], dim=1) + noise_N8  # fmt: skip
    x_N8[:, 7] = torch.rand(n, generator=gen, dtype=torch.float64).exp()  # a skewed marginal
    return (x_N8 * torch.arange(1, 9) + torch.arange(8) * 3.0).to(torch.float32)


def corr(x_ND: torch.Tensor) -> torch.Tensor:
    return torch.corrcoef(x_ND.to(torch.float64).T)


PLANTED_PAIRS = [(0, 1), (2, 3), (4, 5)]


def permute(how: str, x_BD: torch.Tensor, data_seed: int, step: int) -> torch.Tensor:
    if how == "permute_dims":
        return permute_dims(x_BD, data_seed, step)
    # the accelerator's way (argsort of generated keys, then a gather), run on the CPU
    return sweep._permute_by_sorting(x_BD, [data_seed, sweep.PERMUTE_KEY, step])


@pytest.mark.parametrize("how", ["permute_dims", "by_sorting"])
def test_permutation_keeps_each_column_and_destroys_correlation(how: str) -> None:
    x_BD = correlated_batch()
    torch_rng, numpy_rng = torch.get_rng_state(), np.random.get_state()[1].copy()
    out_BD = permute(how, x_BD, data_seed=3, step=7)
    assert torch.equal(torch.get_rng_state(), torch_rng)  # the global RNGs are neither read nor advanced
    assert np.array_equal(np.random.get_state()[1], numpy_rng)
    assert out_BD.shape == x_BD.shape and out_BD.dtype == x_BD.dtype
    assert torch.equal(out_BD.sort(dim=0).values, x_BD.sort(dim=0).values)  # each column: same multiset
    assert not torch.equal(out_BD, x_BD)
    c_before, c_after = corr(x_BD), corr(out_BD)
    for i, j in PLANTED_PAIRS:
        assert abs(float(c_before[i, j])) > 0.9
        assert abs(float(c_after[i, j])) < 0.2, (i, j, float(c_after[i, j]))
    off_diagonal = ~torch.eye(8, dtype=torch.bool)
    assert float(c_after[off_diagonal].abs().max()) < 0.2
    # deterministic in (data_seed, step); another step or data seed draws other permutations
    assert torch.equal(permute(how, x_BD, 3, 7), out_BD)
    assert not torch.equal(permute(how, x_BD, 3, 8), out_BD)
    assert not torch.equal(permute(how, x_BD, 4, 7), out_BD)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_permutation_on_the_gpu() -> None:
    x_BD = correlated_batch().cuda()
    out_BD = permute_dims(x_BD, 3, 7)
    assert out_BD.device == x_BD.device and torch.equal(permute_dims(x_BD, 3, 7), out_BD)
    assert torch.equal(out_BD.sort(dim=0).values, x_BD.sort(dim=0).values)
    c_after = corr(out_BD.cpu())
    assert float(c_after[~torch.eye(8, dtype=torch.bool)].abs().max()) < 0.2


# --------------------------------------------------------------------------------------------
# (b) planted directions: recovered without the permutation, not with it

PLANTED = PLANTED_TRAINING


def test_the_null_recovers_no_planted_direction(tmp_path: Path) -> None:
    # 256 unit atoms in 64 dims, 4 active per token. Measured (mean over atoms of the best decoder
    # row's cosine): unpermuted relu_l1 0.988, topk 0.995; permuted 0.375 for both, the level of the
    # random init's decoder rows (0.371) and above that of the coordinate axes (0.326).
    atoms_AD, x_NTD = planted()
    store = make_store(tmp_path / "store.zarr", {"train": x_NTD}, chunk_images=50)
    specs = [
        SAESpec("relu_l1", 8, l1_coeff=2.1, lr=8e-3),
        SAESpec("topk", 8, k=4, lr=8e-3),
    ]  # 2.1: test_train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: one thread is as fast, and robust to a busy machine
    try:
        recovered = {}
        for permuted in (False, True):
            dirs = [tmp_path / f"{s.id}-{permuted}" for s in specs]
            train_sweep_from_store(store, "train", specs, with_(PLANTED, permute_dims=permuted), dirs, {})
            for spec, d in zip(specs, dirs):
                module = load(d)
                assert module.cfg["permute_dims"] is permuted  # cfg.json records it
                W_dec_FD = module.W_dec_FD.detach().numpy()
                cos_AF = atoms_AD @ (W_dec_FD / np.linalg.norm(W_dec_FD, axis=1, keepdims=True)).T
                recovered[spec.architecture, permuted] = float(cos_AF.max(axis=1).mean())
    finally:
        torch.set_num_threads(threads)
    print(recovered)
    for arch in ("relu_l1", "topk"):
        assert recovered[arch, False] >= 0.9, recovered
        assert recovered[arch, True] <= 0.5, recovered


# --------------------------------------------------------------------------------------------
# (c) determinism and resume; (d) the digest


def test_permuted_training_is_deterministic_and_differs_from_unpermuted(tiny_store: Path) -> None:
    a = train_sweep(factory(tiny_store, TINY), SPECS, TINY, 16)
    b = train_sweep(factory(tiny_store, TINY), SPECS, TINY, 16)
    assert same_weights(a, b)
    # unpermuted, or another data seed (it seeds the permutations too): every SAE differs
    for other in (with_(TINY, permute_dims=False), with_(TINY, data_seed=1)):
        c = train_sweep(factory(tiny_store, other), SPECS, other, 16)
        assert not any(same_weights([x], [y]) for x, y in zip(a, c))


def test_interrupted_permuted_training_resumes_bitwise(tiny_store: Path, tmp_path: Path) -> None:
    whole = train_sweep(factory(tiny_store, TINY), SPECS, TINY, 16)
    state = tmp_path / "state"
    with pytest.raises(Interrupted):
        train_sweep(factory(tiny_store, TINY, stop_after=10), SPECS, TINY, 16, state_dir=state)
    assert torch.load(state / "state.pt", weights_only=False)["step"] == 8  # checkpoint_every=4
    resumed = train_sweep(factory(tiny_store, TINY), SPECS, TINY, 16, state_dir=state)
    assert same_weights(whole, resumed)
    assert [r["step"] for r in resumed[0][1]] == [5, 10, 15, 20]


def test_permute_dims_enters_the_digest_and_a_resume_never_mixes(tiny_store: Path, tmp_path: Path) -> None:
    plain = with_(TINY, permute_dims=False)
    assert sweep._digest(SPECS, TINY, 16) != sweep._digest(SPECS, plain, 16)
    settings = with_(TINY, train_tokens=64 * 5)  # checkpoint at step 4 of 5, left in state_dir
    train_sweep(factory(tiny_store, settings), SPECS, settings, 16, state_dir=tmp_path / "state")
    other = with_(settings, permute_dims=False)
    with pytest.raises(ValueError, match="digest mismatch"):
        train_sweep(factory(tiny_store, other), SPECS, other, 16, state_dir=tmp_path / "state")


def test_cfg_json_records_permute_dims(tiny_store: Path, tmp_path: Path) -> None:
    (path,) = train_sweep_from_store(tiny_store, "train", SPECS[:1], TINY, [tmp_path / "sae"], {})
    assert json.loads((path.parent / "cfg.json").read_text())["permute_dims"] is True
