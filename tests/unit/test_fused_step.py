"""The CUDA step path, run on a CPU: the sync-free fused step (vitsae.sae.train, ``step_mode="fused"``)
against the eager step for every architecture, eager and compiled; its deferred non-finite check (same
error, no NaN state written); exact resume with background checkpoints; the DeviceFeeder's order and
errors; precision resolved per device and recorded; bf16 training within the seed-to-seed spread of
fp32 on a store shaped like ViT activations (vitsae.sae.planted)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_store, planted
from test_train import ALL_ARCHS, TINY, factory

from vitsae.analysis.quality import precision_check
from vitsae.data.loader import TokenStream
from vitsae.sae import planted as planted_store
from vitsae.sae import train as sweep
from vitsae.sae.checkpoint import load
from vitsae.sae.feeder import DeviceFeeder
from vitsae.sae.settings import SAESpec, TrainSettings
from vitsae.sae.train import train_sweep, train_sweep_from_store


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, x_NTD = planted(n_images=40, n_tokens=5, d=16, n_atoms=32, k=2, seed=1)
    return make_store(tmp_path_factory.mktemp("tiny") / "store.zarr", {"train": x_NTD, "val": x_NTD[:8]}, 4)


# the k-sparse SAEs wide with k=1 and dead_steps=1, so that AuxK sees dead features
SPECS = (
    ALL_ARCHS[:2] + [SAESpec("topk", 8, k=1, seed=2), SAESpec("batchtopk", 8, k=1, seed=3)] + ALL_ARCHS[4:]
)
SETTINGS = TrainSettings(**{**TINY.to_dict(), "dead_steps": 1, "log_every": 1, "train_tokens": 640})


def assert_close_runs(a_runs: list, b_runs: list, rtol: float, atol: float) -> None:
    for spec, (a, rows_a), (b, rows_b) in zip(SPECS, a_runs, b_runs):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=rtol, atol=atol, msg=f"{spec.id} {k}")
        assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
        for ra, rb in zip(rows_a, rows_b):
            for key in ("loss", "fvu", "l0", "dead_fraction", "lr"):
                assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), (spec.id, ra["step"], key)
            if "aux_loss" in ra:
                assert (rb["aux_loss"] > 0) == (ra["aux_loss"] > 0)
    assert any(r["aux_loss"] > 0 for _, rows in a_runs[2:4] for r in rows), "AuxK never saw a dead feature"


def test_fused_step_matches_the_eager_step_for_every_architecture(tiny_store: Path) -> None:
    eager = train_sweep(factory(tiny_store, SETTINGS), SPECS, SETTINGS, 16)
    fused = train_sweep(factory(tiny_store, SETTINGS), SPECS, SETTINGS, 16, step_mode="fused")
    # the same arithmetic but for float32 rather than float64 scalars: a few ulps per step
    assert_close_runs(eager, fused, rtol=1e-5, atol=1e-6)


def test_compiled_fused_step_matches_the_eager_step(tiny_store: Path) -> None:
    settings = dataclasses.replace(SETTINGS, compile=True)
    eager = train_sweep(factory(tiny_store, SETTINGS), SPECS, SETTINGS, 16)
    fused = train_sweep(factory(tiny_store, settings), SPECS, settings, 16, step_mode="fused")
    assert_close_runs(eager, fused, rtol=1e-4, atol=1e-5)


def test_fused_update_is_adam_with_the_parallel_gradient_removed() -> None:
    """One fused_update against torch.optim.Adam on the same tensors (float64 reference)."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    W /= W.norm(dim=-1, keepdim=True)
    b = torch.randn(2, 4, generator=g, dtype=torch.float64)
    gW, gb = (
        torch.randn(W.shape, generator=g, dtype=torch.float64),
        torch.randn(b.shape, generator=g, dtype=torch.float64),
    )
    lr = torch.tensor([1e-2, 3e-3], dtype=torch.float64)
    ref = []
    for i in range(2):  # torch.optim.Adam per SAE, with the parallel component removed by hand
        Wi, bi = W[i].clone().requires_grad_(), b[i].clone().requires_grad_()
        opt = torch.optim.Adam([Wi, bi], lr=float(lr[i]), betas=sweep.ADAM_BETAS, eps=sweep.ADAM_EPS)
        Wi.grad = gW[i] - (gW[i] * W[i]).sum(-1, keepdim=True) * W[i]
        bi.grad = gb[i].clone()
        opt.step()
        with torch.no_grad():
            ref.append((Wi / Wi.norm(dim=-1, keepdim=True), bi.detach()))
    params, moments = [W.clone(), b.clone()], [torch.zeros_like(W), torch.zeros_like(b)]
    v = [torch.zeros_like(W), torch.zeros_like(b)]
    bc1, bc2 = 1 - sweep.ADAM_BETAS[0], (1 - sweep.ADAM_BETAS[1]) ** 0.5  # step 1
    sweep.fused_update(params, [gW, gb], moments, v, -lr / bc1, torch.tensor(bc2, dtype=torch.float64), 0)
    for i in range(2):
        torch.testing.assert_close(params[0][i], ref[i][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(params[1][i], ref[i][1], rtol=1e-12, atol=1e-12)


def test_fused_step_reports_a_non_finite_loss_as_the_eager_step_does_and_writes_no_nan_state(
    tiny_store: Path, tmp_path: Path
) -> None:
    specs = [
        SAESpec("relu_l1", 2, l1_coeff=0.3, lr=1e12, seed=0),
        SAESpec("relu_l1", 2, l1_coeff=0.3, seed=1),
    ]
    settings = dataclasses.replace(
        TINY, lr_warmup_steps=0, log_every=50, checkpoint_every=1, train_tokens=64 * 40
    )
    with pytest.raises(ValueError, match="non-finite") as eager:
        train_sweep(factory(tiny_store, settings), specs, settings, 16)
    state = tmp_path / "state"
    with pytest.raises(ValueError, match="non-finite") as fused:
        train_sweep(factory(tiny_store, settings), specs, settings, 16, state_dir=state, step_mode="fused")
    assert str(fused.value) == str(eager.value)  # same first bad step, same SAE named
    assert specs[0].id in str(eager.value) and specs[1].id not in str(eager.value)
    bad_step = int(str(eager.value).split("at step ")[1].split()[0])
    assert bad_step > 1  # the loss was finite first, so checkpoints were written before it
    saved = torch.load(state / "state.pt", weights_only=False)
    assert saved["step"] < bad_step
    for st in saved["stacks"]:
        for t in [*st["params"].values(), *(x for mv in st["moments"].values() for x in mv)]:
            assert bool(torch.isfinite(t).all())


def test_fused_resume_with_background_checkpoints_is_bitwise_exact(tiny_store: Path, tmp_path: Path) -> None:
    """Interrupted by an exception after a checkpoint (written by the background saver), then resumed:
    the same weights and log as an uninterrupted fused run, bitwise."""
    settings = dataclasses.replace(TINY, train_tokens=64 * 30, checkpoint_every=4, log_every=3)
    specs = [ALL_ARCHS[0], ALL_ARCHS[2], ALL_ARCHS[3]]
    whole = train_sweep(factory(tiny_store, settings), specs, settings, 16, step_mode="fused")

    class Interrupt(Exception):
        pass

    def stop_at_15(sae_id: str, row: dict) -> None:
        if row["step"] == 15:
            raise Interrupt

    state = tmp_path / "state"
    with pytest.raises(Interrupt):
        train_sweep(factory(tiny_store, settings), specs, settings, 16, state_dir=state, log=stop_at_15,
                    step_mode="fused")  # fmt: skip
    assert torch.load(state / "state.pt", weights_only=False)["step"] == 12  # the saver finished its write
    resumed = train_sweep(
        factory(tiny_store, settings), specs, settings, 16, state_dir=state, step_mode="fused"
    )
    for (a, rows_a), (b, rows_b) in zip(whole, resumed):
        for k, t in a.state_dict().items():
            assert torch.equal(t, b.state_dict()[k]), k
        assert rows_a == rows_b


def test_feeder_keeps_the_order_and_raises_the_stream_error(tiny_store: Path, tmp_path: Path) -> None:
    def stream(store: Path) -> TokenStream:
        return TokenStream(store, "train", "patches", 16, 0, 2, 160)

    with stream(tiny_store) as s:
        expected = [b.clone() for b in s]
    with stream(tiny_store) as s:
        feeder = DeviceFeeder(s, "cpu")
        got = list(feeder)
    assert len(got) == len(expected) == 10
    assert all(torch.equal(a, b) and b.dtype == torch.float32 for a, b in zip(expected, got))
    # closing mid-way returns (the thread finishes the batch it holds), and stops the iteration
    with stream(tiny_store) as s:
        feeder = DeviceFeeder(s, "cpu", ahead=1)
        next(feeder)
        feeder.close()
        with pytest.raises(StopIteration):
            next(feeder)
    # a NaN in the store: the stream's error, raised in the consuming thread
    _, x_NTD = planted(n_images=40, n_tokens=5, d=16, n_atoms=32, k=2, seed=1)
    x_NTD[17, 2, 3] = np.nan
    bad = make_store(tmp_path / "nan.zarr", {"train": x_NTD}, 4)
    with (
        stream(bad) as s,
        pytest.raises(ValueError, match=r"activations contain NaN/Inf.*nan\.zarr.*chunk 4"),
    ):
        list(DeviceFeeder(s, "cpu"))


def test_precision_is_resolved_per_device_and_recorded(tiny_store: Path, tmp_path: Path) -> None:
    auto = TrainSettings()
    assert (auto.compile, auto.precision) == ("auto", "auto")
    assert (auto.resolved("cpu").compile, auto.resolved("cpu").precision) == (False, "fp32")
    cuda = auto.resolved(torch.device("cuda", 0))
    assert (cuda.compile, cuda.precision) == (True, "bf16")
    assert dataclasses.replace(auto, compile=False).resolved("cuda").compile is False
    with pytest.raises(ValueError, match="precision tf32 is a CUDA matmul mode; on cpu use fp32 or bf16"):
        dataclasses.replace(auto, precision="tf32").resolved("cpu")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, tf32, bf16; got 'fp16'"):
        dataclasses.replace(auto, precision="fp16").resolved("cpu")
    settings = dataclasses.replace(TINY, precision="bf16")
    (path,) = train_sweep_from_store(tiny_store, "train", [ALL_ARCHS[0]], settings, [tmp_path / "b"], {})
    cfg = json.loads((path.parent / "cfg.json").read_text())
    assert cfg["precision"] == "bf16" and cfg["compile"] is False
    (path32,) = train_sweep_from_store(tiny_store, "train", [ALL_ARCHS[0]], TINY, [tmp_path / "f"], {})
    assert json.loads((path32.parent / "cfg.json").read_text())["precision"] == "fp32"
    # bf16 matmuls change the weights (the setting is not ignored), by little
    w16, w32 = load(path).W_dec_FD, load(path32).W_dec_FD
    assert not torch.equal(w16, w32)
    torch.testing.assert_close(w16, w32, rtol=0.05, atol=0.05)


def test_bf16_training_is_within_the_seed_spread_of_fp32(tmp_path: Path) -> None:
    """Quality kept: on a planted store shaped like ViT activations (offsets, outlier dimensions,
    power-law frequencies), an SAE trained with bf16 matmuls differs from its fp32 twin (same seed) in
    FVU, L0 and dead share by no more than fp32 SAEs of two other seeds do, and matches its features
    one-to-one at least as often as another seed's SAE does."""
    spec = dataclasses.replace(planted_store.PlantedSpec(), d=32, n_true=64, expected_l0=4.0, n_pairs=8)
    training = TrainSettings(batch_size=256, train_tokens=256 * 600, shuffle_chunks=4, lr_warmup_steps=20,
                             l1_warmup_steps=100, log_every=100, checkpoint_every=10**6)  # fmt: skip
    store = planted_store.write_store(tmp_path / "p.zarr", 7, spec, n_images=math.ceil(training.train_tokens / 16),
                                      n_val_images=256)  # fmt: skip
    specs = [SAESpec(expansion=4, l1_coeff=1.0, lr=1e-2, seed=s) for s in (0, 1, 2)]
    dirs = [tmp_path / "fp32" / s.id for s in specs]
    train_sweep_from_store(store, "train", specs, training, dirs, {})
    bf16 = dataclasses.replace(training, precision="bf16")
    train_sweep_from_store(store, "train", specs[:1], bf16, [tmp_path / "bf16"], {})
    x_ND, _ = planted_store.val_tokens(store, 7, spec)
    table = precision_check([load(d) for d in dirs], load(tmp_path / "bf16"), torch.from_numpy(x_ND))
    print(table.to_string())
    assert table["within"].all(), table.to_string()
    matched = table.set_index("check").loc["matched"]
    assert matched["other"] > 0.5  # a real match, not two collapsed SAEs agreeing on nothing


@pytest.mark.parametrize("step_mode", ["eager", "fused"])
def test_stage_times_add_up_to_the_steps_wall_time(tiny_store: Path, step_mode: str) -> None:
    """The profile's stages over steps 5-40 add up to their wall time, measured from outside: from the
    log row of step 4 to that of step 40 (each taken just before the step's last mark)."""
    import time

    from vitsae.sae.stages import STAGES, StepProfile

    settings = dataclasses.replace(TINY, train_tokens=64 * 40, log_every=1)
    marks: dict[int, float] = {}

    def log(sae_id: str, row: dict) -> None:
        marks.setdefault(row["step"], time.perf_counter())

    profile = StepProfile("cpu")
    train_sweep(factory(tiny_store, settings), ALL_ARCHS[:3], settings, 16, log=log, profile=profile,
                step_mode=step_mode)  # fmt: skip
    summary = profile.summary(first_step=5)
    wall = marks[40] - marks[4]
    assert summary["steps"] == 36
    assert summary["total"] == pytest.approx(sum(summary[s] for s in STAGES))
    assert summary["total"] == pytest.approx(wall, rel=0.05)
    for stage in ("forward", "backward", "update"):
        assert summary[stage] > 0.02 * summary["total"], (stage, summary)
    with pytest.raises(ValueError, match="unknown stage 'fwd'"):
        profile.mark("fwd")
