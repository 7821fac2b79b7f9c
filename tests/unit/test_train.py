"""vitsae.sae.train: one data pass, stacked == alone, parity with the plain-PyTorch reference
(tests/reference_sae.py), planted recovery per architecture, determinism, exact resume after SIGKILL,
nothing half-written after a failure, checkpoints (vitsae.sae.checkpoint) of every architecture."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import reference_sae
import torch
from safetensors.torch import load_file
from synthetic import N_PREFIX, PLANTED_TRAINING, make_store, planted

from vitsae.data.loader import TokenStream
from vitsae.data.store import open_store
from vitsae.sae import train as sweep
from vitsae.sae.checkpoint import load
from vitsae.sae.settings import SAESpec, TrainSettings
from vitsae.sae.train import log_fields, train_sweep, train_sweep_from_store


def sae_id(spec: SAESpec) -> str:
    return spec.id


REPO = Path(__file__).resolve().parents[2]
TINY = TrainSettings(
    batch_size=64, train_tokens=160, token_kind="patches", shuffle_chunks=2, lr_warmup_steps=2,
    l1_warmup_steps=4, log_every=5, checkpoint_every=3, dead_steps=4,
)  # fmt: skip
ALL_ARCHS = [
    SAESpec("relu_l1", 2, l1_coeff=0.3, seed=0),
    SAESpec("relu_l1_free", 2, l1_coeff=0.3, seed=1),
    SAESpec("topk", 2, k=4, seed=2),
    SAESpec("batchtopk", 2, k=4, seed=3),
    SAESpec("jumprelu", 2, l1_coeff=0.1, seed=4),
]
# 2 L1 coefficients x 2 learning rates x 2 seeds
GRID = [
    SAESpec("relu_l1", 2, l1_coeff=c, lr=lr, seed=s)
    for c in (0.3, 1.0)
    for lr in (4e-3, 1e-3)
    for s in (0, 1)
]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 40 images x 4 patch tokens = 160 patch tokens, chunks of 4 images (10 chunks)
    _, x_NTD = planted(n_images=40, n_tokens=5, d=16, n_atoms=32, k=2, seed=1)
    return make_store(tmp_path_factory.mktemp("tiny") / "store.zarr", {"train": x_NTD, "val": x_NTD[:8]}, 4)


def factory(
    store: Path, settings: TrainSettings, opened: list[TokenStream] | None = None
) -> Callable[[int], TokenStream]:
    def make(start_tokens: int) -> TokenStream:
        stream = TokenStream(store, "train", settings.token_kind, settings.batch_size, settings.data_seed,
                             settings.shuffle_chunks, settings.train_tokens, start_tokens=start_tokens)  # fmt: skip
        if opened is not None:
            opened.append(stream)
        return stream

    return make


def same_module(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sweep_reads_each_activation_once(tiny_store: Path, tmp_path: Path) -> None:
    settings = TrainSettings(**{**TINY.to_dict(), "train_tokens": 320})  # two epochs, 5 steps
    dirs = [tmp_path / sae_id(s) for s in GRID]
    assert len(set(dirs)) == 8
    paths = train_sweep_from_store(tiny_store, "train", GRID, settings, dirs, {"model": "synthetic"})
    one_pass = open_store(tiny_store)["train"][:, N_PREFIX:].nbytes  # 160 tokens x 16 x fp16
    for path in paths:
        cfg = json.loads((path.parent / "cfg.json").read_text())
        assert cfg["meta"]["bytes_read"] == 2 * one_pass  # 320 tokens = 2 epochs, not 8 x 2
    opened: list[TokenStream] = []
    train_sweep(factory(tiny_store, settings, opened), GRID, settings, 16)
    assert len(opened) == 1 and opened[0].bytes_read == 2 * one_pass
    assert len(opened[0].chunks_read) == 20 and len(set(opened[0].chunks_read)) == 20


def test_stacked_equals_alone_bitwise(tiny_store: Path) -> None:
    specs = GRID[:4] + ALL_ARCHS + [SAESpec("topk", 2, k=6, seed=5), SAESpec("batchtopk", 2, k=2, seed=6)]
    make = factory(tiny_store, TINY)
    stacked = train_sweep(make, specs, TINY, 16)
    for spec, (module, rows) in zip(specs, stacked):
        (alone, alone_rows), = train_sweep(make, [spec], TINY, 16)  # fmt: skip
        assert same_module(module, alone), sae_id(spec)
        assert rows == alone_rows


def test_cpu_stack_cap_splits_stacks_without_changing_results(
    tiny_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make = factory(tiny_store, TINY)
    whole = train_sweep(make, GRID, TINY, 16)
    sizes: list[int] = []
    stack_init = sweep.Stack.__init__

    def spy(self: sweep.Stack, specs: list[SAESpec], *args: object) -> None:
        sizes.append(len(specs))
        stack_init(self, specs, *args)

    monkeypatch.setattr(sweep.Stack, "__init__", spy)
    monkeypatch.setattr(sweep, "CPU_STACK_BYTES", 3 * TINY.batch_size * 16 * 2 * 4)  # 3 SAEs of d_sae 32
    split = train_sweep(make, GRID, TINY, 16)
    assert sizes == [3, 3, 2]
    for (a, rows_a), (b, rows_b) in zip(whole, split):
        assert same_module(a, b) and rows_a == rows_b


@pytest.mark.parametrize(("enc_init_scale", "input_norm", "decay"), [(1.0, "centred", 0), (0.1, "raw", 8)])
def test_single_relu_l1_equals_the_reference_bitwise(
    enc_init_scale: float, input_norm: str, decay: int
) -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(128, 16, generator=gen) * 2 + 1 for _ in range(25)]
    cfg = reference_sae.SAEConfig(expansion=4, l1_coeff=0.3, lr=4e-3, lr_warmup_steps=3, l1_warmup_steps=5,
                                  batch_size=128, train_tokens=128 * 25, log_every=10,
                                  enc_init_scale=enc_init_scale, input_norm=input_norm,
                                  lr_decay_steps=decay)  # fmt: skip
    ref, ref_log = reference_sae.train(iter(batches), 16, cfg, batches[0])

    class ListStream:
        def __init__(self, start: int) -> None:
            self.batches = iter(batches[start // 128 :])

        def peek(self, n: int) -> np.ndarray:
            return batches[0].numpy()[:n]

        def __iter__(self) -> Iterator[torch.Tensor]:
            return self.batches

        def close(self) -> None:
            pass

    settings = TrainSettings(batch_size=128, train_tokens=128 * 25, lr_warmup_steps=3, l1_warmup_steps=5,
                             log_every=10, input_norm=input_norm, lr_decay_steps=decay)  # fmt: skip
    spec = SAESpec("relu_l1", 4, l1_coeff=0.3, lr=4e-3, seed=0, enc_init_scale=enc_init_scale)
    (module, rows), = train_sweep(ListStream, [spec], settings, 16)  # fmt: skip
    for name in ("W_enc_DF", "b_enc_F", "W_dec_FD", "b_dec_D", "scale"):
        assert torch.equal(getattr(module, name), getattr(ref, name)), name
    assert [{k: r[k] for k in ref_log[0]} for r in rows] == ref_log


def test_init_scales_the_encoder_and_centred_units_ignore_the_offset() -> None:
    from vitsae.sae.train import Stack, init_scale_and_mean

    specs = [SAESpec("relu_l1", 2, l1_coeff=1.0, seed=3, enc_init_scale=1.0),
             SAESpec("relu_l1", 2, l1_coeff=1.0, seed=3)]  # fmt: skip
    stack = Stack(specs, 8, torch.device("cpu"))
    stack.initialise(torch.zeros(8))
    W_enc, W_dec = stack.params["W_enc"].detach(), stack.params["W_dec"].detach()
    assert torch.equal(W_enc[0], W_dec[0].T) and torch.equal(W_enc[1], W_dec[1].T * 0.1)
    assert [s.id for s in specs] == [
        "relu_l1-x2-l1_1-enc_1-lr_0.004-s3",
        "relu_l1-x2-l1_1-lr_0.004-s3",
    ]  # 0.1: default
    # centred: the scale of x and of x + an offset are the same; raw: the offset shrinks it
    x_ND = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shifted_ND = x_ND + 30.0
    c0, c1 = init_scale_and_mean(x_ND, 8)[0], init_scale_and_mean(shifted_ND, 8)[0]
    assert c0 == pytest.approx(c1, rel=1e-12)
    assert c0 == pytest.approx(math.sqrt(8 / float(((x_ND - x_ND.mean(0)) ** 2).sum(1).mean())), rel=1e-12)
    r1 = init_scale_and_mean(shifted_ND, 8, "raw")[0]
    assert r1 == pytest.approx(math.sqrt(8 / float((shifted_ND**2).sum(1).mean())), rel=1e-12)
    with pytest.raises(ValueError, match="squared distance from its mean"):
        init_scale_and_mean(torch.ones(10, 8), 8)


def test_a_start_dictionary_replaces_the_first_decoder_rows_and_changes_the_digest() -> None:
    from vitsae.sae.train import Stack, _digest, train_sweep

    spec = SAESpec("relu_l1", 2, l1_coeff=1.0, seed=3)
    start_AD = torch.randn(5, 8, generator=torch.Generator().manual_seed(1)) * 3.0  # not unit rows
    plain, started = Stack([spec], 8, torch.device("cpu")), Stack([spec], 8, torch.device("cpu"))
    plain.initialise(torch.zeros(8))
    started.initialise(torch.zeros(8), start_AD)
    W_dec, W_plain = started.params["W_dec"].detach()[0], plain.params["W_dec"].detach()[0]
    torch.testing.assert_close(W_dec[:5], start_AD / start_AD.norm(dim=1, keepdim=True), rtol=0, atol=1e-7)
    assert torch.equal(W_dec[5:], W_plain[5:])  # the other rows: the seed's, unchanged
    assert torch.equal(started.params["W_enc"].detach()[0], W_dec.T * 0.1)  # the encoder follows, x 0.1
    settings = TrainSettings()
    assert _digest([spec], settings, 8, start_AD) != _digest([spec], settings, 8)
    assert _digest([spec], settings, 8, None) == _digest([spec], settings, 8)

    def never(start: int) -> None:
        raise AssertionError("the stream must not be opened for a bad start dictionary")

    for bad, match in ((torch.randn(17, 8), r"A <= 16"), (torch.randn(4, 7), r"\[A, 8\]"),
                       (torch.zeros(2, 8), "all-zero row")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            train_sweep(never, [spec], settings, 8, start_dictionary=bad.numpy())


PLANTED = PLANTED_TRAINING


def test_planted_dictionary_per_architecture(tmp_path: Path) -> None:
    atoms_AD, x_NTD = planted()
    store = make_store(tmp_path / "store.zarr", {"train": x_NTD}, chunk_images=50)
    # Coefficients, bandwidth and threshold are those first found for raw units (E‖x·scale‖² = d), carried
    # to the default centred units: this data's centred scale is 7.0x its raw one, so an L1 coefficient
    # grows 7x (0.3 -> 2.1), JumpReLU's L0 coefficient 49x and its threshold and bandwidth 7x.
    specs = [
        SAESpec("relu_l1", 8, l1_coeff=2.1, lr=8e-3),
        SAESpec("topk", 8, k=4, lr=8e-3),  # 4 atoms are active per token
        SAESpec("batchtopk", 8, k=4, lr=8e-3),
        # the default STE bandwidth/threshold (0.001) rarely see an activation in these units: the
        # thresholds would barely move (L0 ~100); a wider window trains them (L0 ~2.5, FVU ~0.19)
        SAESpec("jumprelu", 8, l1_coeff=4.9, lr=8e-3, jumprelu_bandwidth=0.35, jumprelu_init_threshold=0.7),
        SAESpec("relu_l1_free", 8, l1_coeff=2.1, lr=8e-3),
    ]
    dirs = [tmp_path / sae_id(s) for s in specs]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: one thread is as fast, and robust to a busy machine
    try:
        train_sweep_from_store(store, "train", specs, PLANTED, dirs, {})
    finally:
        torch.set_num_threads(threads)
    for spec, d in zip(specs, dirs):
        module = load(d)
        W_dec_FD = module.W_dec_FD.detach().numpy()
        cos_AF = atoms_AD @ (W_dec_FD / np.linalg.norm(W_dec_FD, axis=1, keepdims=True)).T
        mean_max_cos = float(cos_AF.max(axis=1).mean())
        lines = (d / "train_log.csv").read_text().splitlines()
        last = dict(zip(lines[0].split(","), lines[-1].split(",")))
        print(f"{sae_id(spec)}: mean max cos {mean_max_cos:.3f}, last row {last}")
        assert int(last["tokens"]) == PLANTED.train_tokens
        assert all(np.isfinite(float(last[k])) for k in ("loss", "mse", "fvu", "l0"))
        assert 0.0 <= float(last["dead_fraction"]) <= 1.0
        assert float(last["fvu"]) < 0.5
        if spec.architecture in ("relu_l1", "topk"):
            assert mean_max_cos >= 0.9
        if spec.architecture != "relu_l1_free":  # unit-norm decoder rows after the last step
            norms_F = module.W_dec_FD.detach().norm(dim=1)
            torch.testing.assert_close(norms_F, torch.ones_like(norms_F), atol=1e-5, rtol=0)
        if spec.architecture == "topk":
            assert float(last["l0"]) == 4.0
        if spec.architecture == "jumprelu":
            assert float(last["l0"]) < 10.0


def test_training_is_deterministic(tiny_store: Path, tmp_path: Path) -> None:
    specs = ALL_ARCHS
    a = train_sweep_from_store(
        tiny_store, "train", specs, TINY, [tmp_path / "a" / str(i) for i in range(5)], {}
    )
    b = train_sweep_from_store(
        tiny_store, "train", specs, TINY, [tmp_path / "b" / str(i) for i in range(5)], {}
    )
    reseeded = [SAESpec(**{**s.to_dict(), "seed": s.seed + 10}) for s in specs]
    c = train_sweep_from_store(tiny_store, "train", reseeded, TINY, [tmp_path / "c" / str(i) for i in range(5)],
                               {})  # fmt: skip
    for pa, pb, pc in zip(a, b, c):
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()
        assert (pa.parent / "train_log.csv").read_text() == (pb.parent / "train_log.csv").read_text()


RESUME_SCRIPT = """
import sys, time
sys.path.insert(0, {repo!r})
from vitsae.data.loader import TokenStream
from vitsae.sae import train as sweep
from vitsae.sae.settings import SAESpec, TrainSettings

class SlowStream(TokenStream):
    def __next__(self):
        time.sleep(0.02)
        return super().__next__()

sweep.TokenStream = SlowStream
specs = [SAESpec(**s) for s in {specs!r}]
settings = TrainSettings(**{settings!r})
sweep.train_sweep_from_store({store!r}, "train", specs, settings, {dirs!r}, {{}}, state_dir={state!r})
"""


def train_and_kill(specs: list[SAESpec], settings: TrainSettings, store: Path, dirs: list[str], state: Path,
                   script: Path) -> int:  # fmt: skip
    """Train in a subprocess, SIGKILL it a few steps after its first checkpoint; the step it saved."""
    script.write_text(RESUME_SCRIPT.format(repo=str(REPO), specs=[s.to_dict() for s in specs],
                                           settings=settings.to_dict(), store=str(store), dirs=dirs,
                                           state=str(state)))  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (state / "state.pt").exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.1)  # mid-training, a few steps after the first checkpoint
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not any((Path(d) / "sae.safetensors").exists() for d in dirs)
    return int(torch.load(state / "state.pt", weights_only=False)["step"])


def test_resume_after_sigkill_is_bitwise_exact(tiny_store: Path, tmp_path: Path) -> None:
    settings = TrainSettings(**{**TINY.to_dict(), "train_tokens": 64 * 60, "checkpoint_every": 4,
                                "log_every": 7})  # 60 steps, 15 epochs of the tiny split  # fmt: skip
    specs = [ALL_ARCHS[0], SAESpec("relu_l1", 2, l1_coeff=1.0, seed=1), ALL_ARCHS[2], ALL_ARCHS[3]]
    ref = train_sweep_from_store(tiny_store, "train", specs, settings, [tmp_path / "ref" / str(i) for i in range(4)],
                                 {})  # fmt: skip
    dirs = [str(tmp_path / "run" / str(i)) for i in range(4)]
    state = tmp_path / "state"
    killed_at = train_and_kill(specs, settings, tiny_store, dirs, state, tmp_path / "run.py")
    assert 0 < killed_at < 60

    paths = train_sweep_from_store(tiny_store, "train", specs, settings, dirs, {}, state_dir=state)
    assert not state.exists()
    for p, r in zip(paths, ref):
        assert p.read_bytes() == r.read_bytes()
        assert (p.parent / "train_log.csv").read_text() == (r.parent / "train_log.csv").read_text()
        assert json.loads((p.parent / "cfg.json").read_text())["meta"]["start_tokens"] == killed_at * 64


def test_state_of_a_rebuilt_store_is_discarded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Killed mid-training; the store is then rebuilt from other images (three removed, as after a manifest
    change) at the same path; the rerun must train afresh on the new store, not resume from the old one."""
    _, x_NTD = planted(n_images=40, n_tokens=5, d=16, n_atoms=32, k=2, seed=1)
    store = tmp_path / "store.zarr"
    make_store(store, {"train": x_NTD, "val": x_NTD[:8]}, 4)
    settings = TrainSettings(**{**TINY.to_dict(), "train_tokens": 64 * 60, "checkpoint_every": 4})
    specs = [ALL_ARCHS[0], ALL_ARCHS[2]]
    dirs = [str(tmp_path / "run" / str(i)) for i in range(2)]
    state = tmp_path / "state"
    killed_at = train_and_kill(specs, settings, store, dirs, state, tmp_path / "run.py")
    assert 0 < killed_at < 60

    kept = np.delete(x_NTD, [3, 17, 30], axis=0)  # three images gone; the store rebuilt in place
    make_store(store, {"train": kept, "val": kept[:8]}, 4)
    fresh = train_sweep_from_store(store, "train", specs, settings, [tmp_path / "fresh" / str(i) for i in range(2)],
                                   {})  # fmt: skip
    with caplog.at_level("WARNING", logger="vitsae.sae.train"):
        paths = train_sweep_from_store(store, "train", specs, settings, dirs, {}, state_dir=state)
    assert (
        f"discarding {state / 'state.pt'}: it was written at step {killed_at} for other data" in caplog.text
    )
    for p, f in zip(paths, fresh):
        assert p.read_bytes() == f.read_bytes()
        cfg = json.loads((p.parent / "cfg.json").read_text())
        assert cfg["meta"]["start_tokens"] == 0
        assert cfg["normalisation"] == json.loads((f.parent / "cfg.json").read_text())["normalisation"]


def test_mismatched_state_dir_raises(tiny_store: Path, tmp_path: Path) -> None:
    settings = TrainSettings(**{**TINY.to_dict(), "checkpoint_every": 2})  # 3 steps: checkpoint at step 2
    make = factory(tiny_store, settings)
    first = train_sweep(make, GRID[:2], settings, 16, state_dir=tmp_path / "state")
    assert torch.load(tmp_path / "state" / "state.pt", weights_only=False)["step"] == 2
    again = train_sweep(make, GRID[:2], settings, 16, state_dir=tmp_path / "state")  # resumes at step 2
    assert all(same_module(a, b) and ra == rb for (a, ra), (b, rb) in zip(first, again))
    with pytest.raises(ValueError, match=r"digest mismatch.*delete .*state"):
        train_sweep(make, GRID[2:4], settings, 16, state_dir=tmp_path / "state")
    other = TrainSettings(**{**settings.to_dict(), "lr_warmup_steps": 3})
    with pytest.raises(ValueError, match="digest mismatch"):
        train_sweep(make, GRID[:2], other, 16, state_dir=tmp_path / "state")


def test_load_round_trips_every_architecture(tiny_store: Path, tmp_path: Path) -> None:
    dirs = [tmp_path / s.architecture for s in ALL_ARCHS]
    meta = {"model": {"name": "synthetic"}, "layer": 3}
    paths = train_sweep_from_store(tiny_store, "train", ALL_ARCHS, TINY, dirs, meta)
    trained = train_sweep(factory(tiny_store, TINY), ALL_ARCHS, TINY, 16)
    x_BD = torch.randn(32, 16, generator=torch.Generator().manual_seed(0)) * 2 + 1
    for spec, path, (module, _) in zip(ALL_ARCHS, paths, trained):
        cfg = json.loads((path.parent / "cfg.json").read_text())
        assert sorted(p.name for p in path.parent.iterdir()) == [
            "cfg.json",
            "sae.safetensors",
            "train_log.csv",
        ]
        assert cfg["architecture"] == spec.architecture and cfg["sae_id"] == sae_id(spec)
        assert cfg["d_in"] == 16 and cfg["d_sae"] == 32 and cfg["normalisation"]["kind"] == "scalar"
        assert cfg["hook"] == {"model": {"name": "synthetic"}, "layer": 3, "tokens": "patches"}
        assert cfg["k"] == spec.k and cfg["token_kind"] == "patches" and "bytes_read" in cfg["meta"]
        # every setting, with the encoder scale used (the architecture's when the spec leaves it None)
        # compile and precision as resolved for the device (auto: eager fp32 on a CPU)
        resolved = TINY.resolved("cpu").to_dict()
        assert resolved["precision"] == "fp32" and resolved["compile"] is False
        for key, value in {**spec.to_dict(), "enc_init_scale": spec.encoder_scale, **resolved}.items():
            assert cfg[key] == value
        tensors = load_file(str(path))
        extra = ["threshold"] if spec.architecture in ("batchtopk", "jumprelu") else []
        assert sorted(tensors) == sorted(["W_dec", "W_enc", "b_dec", "b_enc", *extra])
        assert tensors["W_enc"].shape == (16, 32) and tensors["W_dec"].shape == (32, 16)
        for loaded in (load(path.parent), load(path)):
            assert loaded.cfg == cfg and loaded.d_sae == 32
            f_loaded, f_trained = loaded.encode(x_BD), module.encode(x_BD)
            assert torch.equal(f_loaded, f_trained) and torch.equal(loaded(x_BD)[0], module(x_BD)[0])
            assert torch.equal(loaded.decode(f_loaded), module.decode(f_trained))
        if spec.architecture == "topk":
            assert ((f_loaded > 0).sum(dim=1) <= 4).all()
        if spec.architecture == "jumprelu":
            assert not torch.equal(tensors["threshold"], torch.full((32,), 0.001))  # thresholds were trained
    # batchtopk infers with its learned threshold
    bt = load(paths[3])
    thr = float(bt.threshold_F[0])
    assert thr > 0 and torch.equal(bt.threshold_F, torch.full((32,), thr))
    f_BF = bt.encode(x_BD)
    assert bool(((f_BF == 0) | (f_BF > thr)).all())


def test_ids_and_log_fields() -> None:
    assert SAESpec("relu_l1", 8, l1_coeff=3.0, lr=4e-3, seed=0).id == "relu_l1-x8-l1_3-lr_0.004-s0"
    assert SAESpec("topk", 8, k=32, lr=4e-3, seed=1).id == "topk-x8-k32-lr_0.004-s1"
    assert SAESpec("topk", 8, k=32).effective_aux_k == 64
    assert log_fields("batchtopk")[-1] == "threshold"


def test_a_failed_write_leaves_no_weights(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        Path(args[1]).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr("vitsae.sae.checkpoint.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        train_sweep_from_store(tiny_store, "train", ALL_ARCHS[:1], TINY, [tmp_path / "sae"], {})
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == [
        "cfg.json",
        "train_log.csv",
    ]  # no weights, no tmp


def test_nan_activations_raise_naming_store_and_split(tmp_path: Path) -> None:
    _, x_NTD = planted(n_images=64, n_tokens=5, d=16, n_atoms=32, k=2)
    x_NTD[37, 2, 3] = np.nan
    store = make_store(tmp_path / "nan.zarr", {"train": x_NTD}, 4)
    one_pass = TrainSettings(**{**TINY.to_dict(), "train_tokens": 64 * 4})  # every chunk is read
    with pytest.raises(ValueError, match=r"activations contain NaN/Inf.*nan\.zarr.*'train'"):
        train_sweep_from_store(store, "train", ALL_ARCHS[:1], one_pass, [tmp_path / "sae"], {})
    assert not (tmp_path / "sae" / "sae.safetensors").exists()


def test_too_few_tokens_for_a_batch(tiny_store: Path, tmp_path: Path) -> None:
    settings = TrainSettings(**{**TINY.to_dict(), "batch_size": 1024})  # val holds 8 x 4 = 32 patch tokens
    with pytest.raises(ValueError, match=r"split 'val' has 32 'patches' tokens, fewer than batch_size=1024"):
        train_sweep_from_store(tiny_store, "val", ALL_ARCHS[:1], settings, [tmp_path / "sae"], {})


def test_compiled_step_matches_eager_for_every_architecture(tiny_store: Path) -> None:
    # torch.compile (fullgraph: no graph break, or it raises) of every architecture's forward and loss.
    # The k-sparse SAEs are wide with k=1 and dead_steps=1, so they have dead features and the AuxK
    # branch is compiled and used too.
    specs = (
        ALL_ARCHS[:2]
        + [SAESpec("topk", 8, k=1, seed=2), SAESpec("batchtopk", 8, k=1, seed=3)]
        + ALL_ARCHS[4:]
    )
    settings = TrainSettings(**{**TINY.to_dict(), "dead_steps": 1, "log_every": 1, "train_tokens": 320})
    eager = train_sweep(factory(tiny_store, settings), specs, settings, 16)
    compiled_settings = TrainSettings(**{**settings.to_dict(), "compile": True})
    compiled = train_sweep(factory(tiny_store, compiled_settings), specs, compiled_settings, 16)
    for spec, (a, rows_a), (b, rows_b) in zip(specs, eager, compiled):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:  # compiled kernels round differently: close, not bitwise
            torch.testing.assert_close(sb[k], sa[k], rtol=1e-4, atol=1e-5, msg=f"{sae_id(spec)} {k}")
        assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [1, 2, 3, 4, 5]
        assert rows_b[-1]["fvu"] == pytest.approx(rows_a[-1]["fvu"], rel=1e-4)
        if spec.architecture in ("topk", "batchtopk"):
            assert any(r["aux_loss"] > 0 for r in rows_a), (
                "no dead feature: the AuxK branch was not exercised"
            )
            assert [r["aux_loss"] > 0 for r in rows_a] == [r["aux_loss"] > 0 for r in rows_b]
