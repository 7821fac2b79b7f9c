"""vitsae.analysis.quality: one-to-one decoder matches against a float64 reference, the final loss drop of a
training log, the failed checks' names, and the sweep's quality table on SAEs trained on a planted store."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import make_store, planted

from vitsae.analysis import quality
from vitsae.analysis.quality import COLUMNS, failures, final_drop, matched_share, quality_table, read_sample
from vitsae.analysis.settings import QualitySettings
from vitsae.data.loader import TokenStream
from vitsae.sae.checkpoint import load
from vitsae.sae.files import read_cfg
from vitsae.sae.settings import SAESpec, TrainSettings
from vitsae.sae.train import train_sweep_from_store


def reference_share(W_a: np.ndarray, W_b: np.ndarray, live_a: np.ndarray, threshold: float) -> float:
    """The definition, directly: the whole cosine matrix in float64, mutual nearest neighbours."""
    A = W_a / np.linalg.norm(W_a, axis=1, keepdims=True)
    B = W_b / np.linalg.norm(W_b, axis=1, keepdims=True)
    cos = A.astype(np.float64) @ B.astype(np.float64).T
    nn_ab, nn_ba = cos.argmax(axis=1), cos.argmax(axis=0)
    ok = [f for f in range(len(A)) if live_a[f] and nn_ba[nn_ab[f]] == f and cos[f, nn_ab[f]] >= threshold]
    return len(ok) / live_a.sum()


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    W = rng.standard_normal((n, d))
    return W / np.linalg.norm(W, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# matched_share


def test_matched_share_agrees_with_a_float64_reference():
    rng = np.random.default_rng(0)
    for trial in range(5):
        d, F, G = 24, 90, 110
        W_a = unit(rng, F, d)
        # B: a noisy, permuted copy of some of A's rows (noise from none to large) and new rows
        shared = rng.choice(F, 60, replace=False)
        noise = rng.uniform(0.0, 1.2, (60, 1))
        W_b = np.concatenate([W_a[shared] + noise * unit(rng, 60, d), unit(rng, G - 60, d)])[
            rng.permutation(G)
        ]
        live = rng.random(F) < 0.8
        for threshold in (0.5, 0.7, 0.9):
            got = matched_share(W_a.astype(np.float32), W_b.astype(np.float32), live, threshold, block=7)
            want = reference_share(W_a, W_b, live, threshold)
            assert got == pytest.approx(want, abs=1e-12), (trial, threshold)
            assert 0 < want < 1  # the cases are not trivial


def test_a_permuted_noised_copy_matches_fully_and_an_independent_dictionary_not_at_all():
    rng = np.random.default_rng(1)
    W_a = unit(rng, 512, 64).astype(np.float32)
    live = np.ones(512, bool)
    copy = W_a[rng.permutation(512)] * rng.uniform(0.5, 2.0, (512, 1)) + 0.01 * rng.standard_normal((512, 64))
    assert matched_share(W_a, copy.astype(np.float32), live, 0.7, block=100) == 1.0
    other = unit(rng, 512, 64).astype(np.float32)
    share = matched_share(W_a, other, live, 0.7)
    assert share == reference_share(W_a, other, live, 0.7) and share < 0.01
    # dead features of A do not count
    live[:256] = False
    assert matched_share(W_a, copy.astype(np.float32), live, 0.7) == 1.0
    assert matched_share(W_a, W_a[:256] + 0.05 * unit(rng, 256, 64).astype(np.float32), live, 0.7) == 0.0
    assert math.isnan(matched_share(W_a, other, np.zeros(512, bool), 0.7))


def test_two_features_nearest_to_the_same_one_count_once():
    rng = np.random.default_rng(2)
    W_b = np.linalg.qr(rng.standard_normal((32, 8)))[0].T.astype(np.float32)  # 8 orthonormal rows
    near = 0.95 * W_b[0] + 0.31 * W_b[5]  # cosine 0.95 with b0, nearest to it too
    W_a = np.stack([W_b[0], near, W_b[1]]).astype(np.float32)
    live = np.ones(3, bool)
    # a0 and a1 are both nearest to b0 (cosine 1 and 0.95 >= 0.7), but b0's nearest is a0 only
    assert matched_share(W_a, W_b, live, 0.7) == pytest.approx(2 / 3)
    assert reference_share(W_a, W_b, live, 0.7) == pytest.approx(2 / 3)
    # matched from B's side: b0 and b1 have a one-to-one match, b5 none (a1's nearest is b0)
    assert matched_share(W_b, W_a, np.ones(8, bool), 0.7) == pytest.approx(2 / 8)


# --------------------------------------------------------------------------------------------
# final_drop and failures


def test_a_flattened_exponential_has_no_final_drop_and_a_linear_decline_its_exact_drop():
    step = np.arange(0, 5000, 20)
    flat = 1.0 + 5.0 * np.exp(-step / 100.0)
    assert 0 <= final_drop(step, flat, 0.25) < 1e-4
    # still falling fast at the end of a short log: a large drop
    assert final_drop(step[:20], 1.0 + 5.0 * np.exp(-step[:20] / 100.0), 0.25) > 0.1
    step = np.arange(0, 1000, 10)  # 100 rows: the tail is the last 25, steps 750..990
    loss = 10.0 - 0.001 * step
    tail = loss[-25:]
    assert final_drop(step, loss, 0.25) == pytest.approx(0.001 * (990 - 750) / tail.mean(), rel=1e-9)
    assert final_drop(step, 10.0 + 0.001 * step, 0.25) < 0  # a rising loss drops by a negative amount
    assert math.isnan(final_drop(step[:8], loss[:8], 0.25))  # 2 rows in the tail


def test_failures_name_each_failed_check():
    s = QualitySettings(max_dead=0.5, max_dense=0.1, min_stability=0.5, max_final_drop=0.05)
    assert failures(0.2, 0.0, 0.9, 0.01, s) == []
    assert failures(0.6, 0.0, 0.9, 0.01, s) == ["dead>0.5"]
    assert failures(0.2, 0.15, 0.9, 0.01, s) == ["dense>0.1"]
    assert failures(0.2, 0.0, 0.3, 0.01, s) == ["stability<0.5"]
    assert failures(0.2, 0.0, math.nan, 0.01, s) == []  # no other seed: stability is not checked
    assert failures(0.2, 0.0, 0.9, 0.1234, s) == ["not_flat (drop 0.123 > 0.05)"]
    assert failures(0.2, 0.0, 0.9, math.nan, s) == ["too few log rows"]
    assert ";".join(failures(0.6, 0.15, 0.3, 0.1234, s)) == (
        "dead>0.5;dense>0.1;stability<0.5;not_flat (drop 0.123 > 0.05)"
    )


def test_the_config_section_defaults_to_the_settings_and_is_typed_once():
    import dataclasses

    import yaml
    from workflow_helpers import DEMO_CONFIG

    from vitsae.config import ConfigError, build, load_schema, validate

    props = load_schema()["properties"]["quality"]["properties"]
    assert {k: v["default"] for k, v in props.items()} == dataclasses.asdict(QualitySettings())
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    assert build(validate(cfg)).quality == QualitySettings()
    cfg["quality"] = {"sample_tokens": 1000, "max_final_drop": 0}
    run = build(validate(cfg))
    assert run.quality == QualitySettings(sample_tokens=1000, max_final_drop=0.0)
    assert isinstance(run.quality.max_final_drop, float)
    cfg["quality"] = {"max_dead_fraction": 0.2}
    with pytest.raises(
        ConfigError, match="unknown config key 'quality.max_dead_fraction'; did you mean 'max_dead'"
    ):
        validate(cfg)


# --------------------------------------------------------------------------------------------
# The table on trained SAEs

PLACE = ("planted", "toy", 3)
TRAINING = TrainSettings(
    batch_size=256, train_tokens=102400, shuffle_chunks=4, lr_warmup_steps=5, l1_warmup_steps=20,
    log_every=5, checkpoint_every=1000, dead_steps=50,
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Two seeds of one setting on a planted dictionary (d 32, 64 features, 100k tokens: about 0.3 s; with
    20k tokens ReLU SAEs are far from converged and their seeds do not agree yet)."""
    root = tmp_path_factory.mktemp("quality")
    _, x_NTD = planted(n_images=600, n_tokens=17, d=32, n_atoms=64, k=3, seed=3)
    store = make_store(root / "store.zarr", {"train": x_NTD}, chunk_images=50)
    specs = [SAESpec("relu_l1", 2, l1_coeff=2.1, lr=8e-3, seed=s) for s in (0, 1)]
    dirs = [root / "tiny" / s.id for s in specs]
    meta = {"dataset": PLACE[0], "model": PLACE[1], "layer": PLACE[2], "sweep": "tiny"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_sweep_from_store(store, "train", specs, TRAINING, dirs, meta)
    finally:
        torch.set_num_threads(threads)
    return store, dirs


def with_random_decoders(dirs: list[Path], out: Path) -> list[Path]:
    """Copies of the SAEs whose decoder rows are replaced by random unit directions."""
    copies = []
    for i, d in enumerate(dirs):
        sae = load(d)
        with torch.no_grad():
            W = torch.from_numpy(np.random.default_rng(i).standard_normal(tuple(sae.W_dec_FD.shape)))
            sae.W_dec_FD.copy_(W / W.norm(dim=1, keepdim=True))
        copy = out / d.name
        sae.save(copy)
        shutil.copy(d / "train_log.csv", copy / "train_log.csv")
        copies.append(copy)
    return copies


def test_the_sample_is_the_start_of_the_sae_training_stream(trained):
    store, dirs = trained
    cfg = read_cfg(dirs[0])
    x_ND = read_sample(store, cfg, 1000)
    with TokenStream(store, "train", "patches", 128, TRAINING.data_seed, TRAINING.shuffle_chunks, 1000) as s:
        want = torch.cat(list(s))
    assert x_ND.shape == (1000, 32) and torch.equal(x_ND, want)
    assert read_sample(store, cfg, 10**9).shape[0] == 600 * 16  # one epoch of the split at most


def test_seeds_of_a_setting_are_stable_and_random_decoders_are_not(trained, tmp_path, caplog):
    store, dirs = trained
    settings = QualitySettings(sample_tokens=4096)
    with caplog.at_level(logging.WARNING, logger="vitsae.analysis.quality"):
        q = quality_table(dirs, {PLACE: store}, settings, dense_threshold=0.1)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    t = q.table
    print(t.to_string())
    assert list(t.columns) == COLUMNS and len(t) == 2
    assert list(t["sae_id"]) == sorted(d.name for d in dirs) and list(t["seed"]) == [0, 1]
    assert (t["setting"] == "relu_l1-x2-l1_2.1-lr_0.008").all() and (t["stability_seeds"] == 1).all()
    assert (t["fvu"].between(0, 0.5)).all() and (t["l0"] > 0).all()
    assert (t["dead_fraction"] < 0.5).all() and t["dense_fraction"].between(0, 1).all()
    assert t["final_drop"].notna().all()
    randomised = quality_table(with_random_decoders(dirs, tmp_path), {PLACE: store}, settings, 0.1).table
    print(randomised.to_string())
    assert (t["stability"] > 0.5).all()
    assert (randomised["stability"] < 0.05).all()
    assert t["stability"].min() > randomised["stability"].max() + 0.45
    # the checks: a failing SAE is logged and stays in the table
    assert warned == [
        f"SAE {r.sae_id} (planted/toy/layer3, sweep tiny) fails: {r.failures}"
        for r in t[t["failures"] != ""].itertuples()
    ]
    strict = quality_table(dirs, {PLACE: store}, QualitySettings(sample_tokens=4096, min_stability=1.0), 0.1)
    assert len(strict.table) == 2 and strict.table["failures"].str.contains("stability<1").all()
    # the histograms of the figure: every SAE, both kinds, shares summing to 1
    sums = q.histograms.groupby(["sae_id", "kind"])["share"].sum()
    assert len(sums) == 4 and np.allclose(sums, 1.0)


def test_the_table_and_figure_are_written(trained, tmp_path):
    store, dirs = trained
    csv, pdf = tmp_path / "quality-tiny.csv", tmp_path / "quality-tiny.pdf"
    q = quality.write_quality(dirs, {PLACE: store}, csv, pdf, QualitySettings(sample_tokens=2048), 0.1,
                              "SAE quality: sweep tiny", note="test")  # fmt: skip
    back = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert list(back.columns) == COLUMNS and len(back) == 2
    assert np.allclose(back["fvu"], q.table["fvu"], rtol=1e-5)
    assert pdf.read_bytes().startswith(b"%PDF")
    with pytest.raises(ValueError, match="no activation store given"):
        quality_table(dirs, {}, QualitySettings(), 0.1)
