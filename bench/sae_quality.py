"""SAE quality on a planted dictionary shaped like ViT activations; ends with one JSON line.

    python bench/sae_quality.py [--preset paper|old ...] [--tune] [--oracle] [--seeds 1 2 3] [--scale F]
                                [--compare-store PATH ...] [--keep DIR]

The data: :mod:`vitsae.sae.planted` (d = 64, 256 true directions with power-law frequencies, correlated
pairs, 3 massive outlier dimensions, large per-dimension offsets, 2% noise; its docstring says why each).
One store per generator seed (train + a held-out val split), fp16 as the project writes them, trained
through the real sweep path: :func:`vitsae.sae.train.train_sweep_from_store` (store on disk, TokenStream,
stacked trainer, files written), then every SAE loaded back from its files and evaluated on val.

**The paper's settings, scaled** (``--preset paper``, the default): ``config/paper.yaml`` sweep ``paper``
as the file says now (architecture, L1 coefficients, lr, warm-ups, lr decay, batch size, train tokens,
and ``enc_init_scale``/``input_norm`` where present, else the package defaults; the SAE seed: its first).
Kept from the paper: the number of steps, ``ceil(train_tokens / batch_size)``, and the tokens per SAE
feature, ``train_tokens / (768 · expansion)`` (the paper's models are ViT-B, d = 768). The benchmark's SAE
is x8 (512 features for 256 true directions), so its train tokens are that ratio x 512 and its batch
size those tokens / steps (rounded; train tokens are then batch x steps). Warm-ups and decay, counted
in steps, carry over unchanged. ``--preset old`` is the settings before the defaults changed, written out here.

**Per SAE**: ``mmcs`` (for each true direction, the max cosine over decoder rows; averaged),
``recovered`` (share of true directions with max cosine > 0.9), FVU on val (Σ‖x̂ − x‖² / Σ‖x − mean‖²),
L0 on val, the true L0 of the same tokens (from the generator's codes), ``l0_ratio`` = L0 / true L0,
dead (fires on no val token) and dense (fires on > 10% of val tokens) fractions. **Headline**: the L1
coefficient is the one free sparsity knob, so all of a preset's coefficients train in one pass and the
headline of each generator seed is the SAE whose val L0 is nearest the true L0 (in ratio, |log
l0_ratio|): quality *at matched L0*. Goal: on every held-out seed, recovered ≥ 0.99, mmcs ≥ 0.99,
|l0_ratio − 1| ≤ 0.25, FVU ≤ 0.2 (``goal_met``). Tokens/s of each pass = train tokens x SAEs in the
pass / wall seconds of the training call.

**Tuning** (``--tune``): on generator seed 0 only (never a held-out seed), lr ∈ {4e-4, 2e-3, 4e-3,
1e-2} x enc_init_scale ∈ {1, 0.1} x the 5 L1 values, stacked in one pass per (input_norm ∈ {raw,
centred}) x (l1_warmup_steps ∈ {paper's, 300}) (those two are per-sweep settings); lr warm-up and
decay as the paper's. The headline of each (lr, enc_init_scale, input_norm, l1 warm-up) cell is again
at matched L0.

**Oracle start** (``--oracle``): each preset also trains, on the same store and settings, SAEs whose
first 256 decoder rows start *at* the true directions (``train_sweep``'s ``start_dictionary``; the
other rows and the encoder as usual, the encoder the decoder's scaled transpose). Where such an SAE
ends says where the training objective itself takes the truth: if it drifts below the goal, no start
reaches the goal with these settings, and the gap between the two rows is what a better optimiser
could still win. Its rows are the pass name plus ``-oracle``; the JSON line's ``oracle`` gives their
means per preset (not counted in the preset's own numbers).

``--seeds`` sets the held-out generator seeds (default 1 2 3). ``--scale F`` divides train tokens and
batch size by F (steps unchanged) for quick runs: no longer the paper's tokens per feature. The table
has one row per SAE (``*`` marks headlines); then the planted store's shape statistics
(:func:`vitsae.sae.planted.store_shape_stats`) and those of each ``--compare-store``; then ONE JSON
line: means over the held-out seeds of the headline SAEs of the first preset (``other_presets``: the
same for the rest; with ``--tune``: the best cell, ``tune_best``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from vitsae.sae import planted
from vitsae.sae.checkpoint import load
from vitsae.sae.settings import SAESpec, TrainSettings, sweep_specs, training_settings
from vitsae.sae.train import train_sweep_from_store

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = ROOT / "config" / "paper.yaml"
VIT_D = 768  # the paper's models: ViT-B
EXPANSION = 8  # the benchmark's SAE: 512 features for 256 true directions
D_SAE = planted.PlantedSpec().d * EXPANSION
#: The settings before this benchmark changed the defaults, written out (batch and tokens as the paper's).
OLD = {"architecture": "relu_l1", "expansion": 16, "l1_coeff": [0.75, 1.5, 3.0, 6.0, 12.0], "lr": 4e-4,
       "enc_init_scale": 1.0, "input_norm": "raw", "lr_warmup_steps": 1000, "lr_decay_steps": 0,
       "l1_warmup_steps": 10000, "batch_size": 16384, "train_tokens": 100_000_000, "token_kind": "patches",
       "seed": 0}  # fmt: skip
TUNE_LR = (4e-4, 2e-3, 4e-3, 1e-2)
TUNE_ENC = (1.0, 0.1)
TUNE_NORM = ("raw", "centred")
TUNE_L1_WARMUP = 300  # the short L1 warm-up variant (the other: the paper's)
TUNE_SEED = 0
ORACLE_SUFFIX = "-oracle"
GOAL = {"recovered": 0.99, "mmcs": 0.99, "l0_ratio_tol": 0.25, "fvu": 0.2}


@dataclass(frozen=True)
class Pass:
    """One call of the sweep trainer: SAEs stacked in one pass over one store."""

    name: str
    specs: tuple[SAESpec, ...]
    settings: TrainSettings


def paper_sweep() -> dict:
    return dict(yaml.safe_load(PAPER_CONFIG.read_text())["sweeps"]["paper"])


def scaled_settings(sweep: dict, scale: float) -> tuple[TrainSettings, dict]:
    """The sweep's TrainSettings with batch size and train tokens scaled to the benchmark (module
    docstring) and a dict saying how."""
    ts = TrainSettings(**training_settings(sweep))
    expansion = int(sweep.get("expansion", SAESpec.expansion))
    steps = math.ceil(ts.train_tokens / ts.batch_size)
    per_feature = ts.train_tokens / (VIT_D * expansion)
    bench_tokens = per_feature * D_SAE / scale
    batch = max(1, round(bench_tokens / steps))
    settings = replace(ts, batch_size=batch, train_tokens=batch * steps, log_every=max(ts.log_every, 200),
                       checkpoint_every=10**9)  # fmt: skip
    how = {"paper_steps": steps, "paper_tokens_per_feature": per_feature, "batch_size": batch,
           "train_tokens": batch * steps, "tokens_per_feature": batch * steps / D_SAE, "scale": scale}  # fmt: skip
    return settings, how


def preset_specs(sweep: dict) -> list[SAESpec]:
    """The sweep's SAEs at the benchmark's width, first SAE seed only."""
    seed = sweep.get("seed", 0)
    grid = {**sweep, "expansion": EXPANSION, "seed": seed[0] if isinstance(seed, list) else seed}
    return [SAESpec(**s) for s in sweep_specs(grid)]


def preset_passes(preset: str, scale: float) -> tuple[list[Pass], dict]:
    sweep = paper_sweep() if preset == "paper" else dict(OLD)
    settings, how = scaled_settings(sweep, scale)
    return [Pass(preset, tuple(preset_specs(sweep)), settings)], how


def tune_passes(scale: float) -> tuple[list[Pass], dict]:
    sweep = paper_sweep()
    settings, how = scaled_settings(sweep, scale)
    passes = []
    for norm in TUNE_NORM:
        for l1w in (settings.l1_warmup_steps, TUNE_L1_WARMUP):
            grid = {**sweep, "lr": list(TUNE_LR), "enc_init_scale": list(TUNE_ENC)}
            passes.append(Pass(f"tune-{norm}-l1w{l1w}", tuple(preset_specs(grid)),
                               replace(settings, input_norm=norm, l1_warmup_steps=l1w)))  # fmt: skip
    return passes, how


def ensure_store(work: Path, seed: int, n_images: int, spec: planted.PlantedSpec) -> Path:
    """The planted store of ``seed`` with at least ``n_images`` train images (reused when one is there)."""
    path = work / f"planted-seed{seed}.zarr"
    if path.exists():
        try:
            attrs = planted.store.attrs_json(path)
            if (attrs.get("complete") and attrs["planted"]["seed"] == seed and attrs["splits"]["train"] >= n_images
                    and attrs["planted"]["spec"] == json.loads(json.dumps(spec.to_dict()))):  # fmt: skip
                return path
        except (KeyError, OSError, ValueError):
            pass
        shutil.rmtree(path)
    t0 = time.perf_counter()
    planted.write_store(path, seed, spec, n_images=n_images)
    print(f"# wrote {path.name}: {n_images} train images in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def run_pass(
    p: Pass, store: Path, seed: int, out: Path, spec: planted.PlantedSpec, oracle: bool = False
) -> list[dict]:
    """Train pass ``p`` on ``store`` and evaluate each SAE on val; with ``oracle``, every SAE starts with
    the true directions as its first decoder rows (module docstring, "Oracle start")."""
    name = f"{p.name}{ORACLE_SUFFIX if oracle else ''}"
    dirs = [out / name / s.id for s in p.specs]
    dic = planted.true_directions(seed, spec)
    t0 = time.perf_counter()
    train_sweep_from_store(store, "train", p.specs, p.settings, dirs, {"bench": "sae_quality", "seed": seed},
                           start_dictionary=dic.directions_AD if oracle else None)  # fmt: skip
    wall = time.perf_counter() - t0
    tps = p.settings.train_tokens * len(p.specs) / wall
    print(f"# pass {name} seed {seed}: {len(p.specs)} SAEs x {p.settings.train_tokens:,} tokens "
          f"(batch {p.settings.batch_size}) in {wall:.0f} s: {tps:,.0f} SAE-tokens/s", flush=True)  # fmt: skip
    x_ND, codes_NA = planted.val_tokens(store, seed, spec)
    rows = []
    for s, d in zip(p.specs, dirs):
        m = planted.evaluate(load(d), dic.directions_AD, x_ND, codes_NA)
        rows.append({"pass": name, "seed": seed, "sae": s.id, "l1": s.l1_coeff, "lr": s.lr,
                     "enc": encoder_scale(s), "norm": p.settings.input_norm, "l1w": p.settings.l1_warmup_steps,
                     "decay": getattr(p.settings, "lr_decay_steps", 0),
                     **m, "wall_s": wall, "tokens_per_s": tps, "headline": False})  # fmt: skip
    return rows


def encoder_scale(s: SAESpec) -> float:
    """The encoder's initial scale the trainer used (a spec may leave it to the architecture)."""
    return float(getattr(s, "encoder_scale", s.enc_init_scale))


def mark_headlines(rows: list[dict]) -> None:
    """Per (seed, pass, lr, enc) cell: the SAE whose val L0 is nearest (in ratio) the true L0."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["seed"], r["pass"], r["lr"], r["enc"]), []).append(r)
    for cell in cells.values():
        min(cell, key=lambda r: abs(math.log(max(r["l0_ratio"], 1e-9)))).update(headline=True)


def meets_goal(r: dict) -> bool:
    return (r["recovered"] >= GOAL["recovered"] and r["mmcs"] >= GOAL["mmcs"] and r["fvu"] <= GOAL["fvu"]
            and abs(r["l0_ratio"] - 1) <= GOAL["l0_ratio_tol"])  # fmt: skip


def print_table(rows: list[dict]) -> None:
    head = (f"{'':1} {'seed':>4} {'pass':<22} {'norm':<7} {'l1w':>5} {'decay':>5} {'lr':>7} {'enc':>4} {'l1':>5} {'mmcs':>6} "
            f"{'recov':>6} {'fvu':>6} {'l0':>6} {'trueL0':>6} {'ratio':>6} {'dead':>6} {'dense':>6} {'goal':>4}")  # fmt: skip
    print(head)
    for r in rows:
        print(f"{'*' if r['headline'] else ' '} {r['seed']:>4} {r['pass']:<22} {r['norm']:<7} {r['l1w']:>5} "
              f"{r['decay']:>5} {r['lr']:>7.0e} {r['enc']:>4g} {r['l1']:>5g} {r['mmcs']:>6.3f} {r['recovered']:>6.3f} "
              f"{r['fvu']:>6.3f} {r['l0']:>6.2f} {r['true_l0']:>6.2f} {r['l0_ratio']:>6.2f} {r['dead']:>6.3f} "
              f"{r['dense']:>6.3f} {'yes' if meets_goal(r) else '':>4}")  # fmt: skip


def summary(name: str, heads: list[dict]) -> dict:
    mean = {k: float(np.mean([r[k] for r in heads])) for k in ("mmcs", "recovered", "fvu", "l0_ratio")}
    tps = {(r["seed"], r["pass"]): r["tokens_per_s"] for r in heads}
    return {"preset": name, **{k: round(v, 4) for k, v in mean.items()},
            "tokens_per_s": round(float(np.mean(list(tps.values())))),
            "seeds": sorted({r["seed"] for r in heads}), "goal_met": all(meets_goal(r) for r in heads)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", choices=("paper", "old"), help="repeatable; default paper")
    ap.add_argument("--tune", action="store_true", help=f"the tuning grid on generator seed {TUNE_SEED}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="held-out generator seeds")
    ap.add_argument(
        "--oracle", action="store_true", help="also train each preset started at the true dictionary"
    )
    ap.add_argument("--scale", type=float, default=1.0, help="divide train tokens and batch size by this")
    ap.add_argument(
        "--compare-store", type=Path, action="append", default=[], help="a real store (repeatable)"
    )
    ap.add_argument(
        "--compare-split", default=None, help="split of the compared stores (default: train, else the first)"
    )
    ap.add_argument(
        "--keep", type=Path, help="put stores and SAEs here (and keep them) instead of a temp dir"
    )
    args = ap.parse_args()
    presets = args.preset or ([] if args.tune else ["paper"])
    if TUNE_SEED in args.seeds and presets:
        ap.error(f"generator seed {TUNE_SEED} is the tuning seed; held-out seeds must differ")
    spec = planted.PlantedSpec()
    work = args.keep or Path(tempfile.mkdtemp(prefix="vitsae-bench-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# torch threads {torch.get_num_threads()}; work dir {work}")

    jobs: list[tuple[str, list[Pass], list[int]]] = []
    for name in presets:
        passes, how = preset_passes(name, args.scale)
        jobs.append((name, passes, list(args.seeds)))
        print(
            f"# preset {name}: {how}"
            + ("" if args.scale == 1 else " (SCALED: not the paper's tokens per feature)")
        )
    if args.tune:
        passes, how = tune_passes(args.scale)
        jobs.append(("tune", passes, [TUNE_SEED]))
        print(f"# tune: {len(passes)} passes x {len(passes[0].specs)} SAEs, {how}")
    compared = {}  # measured first: a bad path fails before any training
    for path in args.compare_store:
        splits = planted.store.attrs_json(path)["splits"]
        split = args.compare_split or ("train" if "train" in splits else next(iter(splits)))
        compared[f"{path} ({split})"] = planted.store_shape_stats(path, split, "patches")
    t_all = time.perf_counter()
    results: dict[str, list[dict]] = {}
    stores: dict[int, Path] = {}
    for name, passes, seeds in jobs:
        rows: list[dict] = []
        for seed in seeds:
            n_images = math.ceil(
                max(p.settings.train_tokens for p in passes) / (planted.TOKENS_PER_IMAGE - planted.N_PREFIX)
            )
            stores[seed] = ensure_store(work / "stores", seed, n_images, spec)
            for p in passes:
                rows += run_pass(p, stores[seed], seed, work / "saes" / name / f"seed{seed}", spec)
                if args.oracle and name != "tune":
                    rows += run_pass(
                        p, stores[seed], seed, work / "saes" / name / f"seed{seed}", spec, oracle=True
                    )
        mark_headlines(rows)
        results[name] = rows
        print(f"\n## {name}")
        print_table(rows)
    wall_all = time.perf_counter() - t_all

    print("\n## store shape (offset_ratio = |mean| / centred RMS norm; top3_share of centred variance; "
          "var_kurtosis = excess kurtosis of per-dimension variances)")  # fmt: skip
    first = stores[min(stores)]
    exact = planted.moments(planted.true_directions(min(stores), spec), spec)
    print(f"planted seed {min(stores)} (exact): " + ", ".join(f"{k} {v:.3f}" for k, v in exact.items()))
    random_FD = np.random.default_rng(0).standard_normal((D_SAE, spec.d))
    random_cos = planted.max_cosines(planted.true_directions(min(stores), spec).directions_AD, random_FD)
    print(f"a random dictionary of {D_SAE} unit rows: mmcs {random_cos.mean():.3f}, recovered "
          f"{(random_cos > planted.RECOVERED_COS).mean():.3f}")  # fmt: skip
    shapes = {
        f"planted seed {min(stores)} (store)": planted.store_shape_stats(first, "train", "patches"),
        **compared,
    }
    for k, v in shapes.items():
        print(
            f"{k}: " + ", ".join(f"{n} {x:.3f}" if isinstance(x, float) else f"{n} {x}" for n, x in v.items())
        )
    print(f"# total wall {wall_all:.0f} s")
    if args.keep is None:
        shutil.rmtree(work)

    out: dict = {}
    for name, rows in results.items():
        if name == "tune":
            heads = [r for r in rows if r["headline"]]
            best = max(heads, key=lambda r: (meets_goal(r), r["recovered"], r["mmcs"], -r["fvu"]))
            tune = {
                **summary("tune", [best]),
                "best": {k: best[k] for k in ("lr", "enc", "norm", "l1w", "decay", "l1")},
            }
            if out:
                out["tune_best"] = tune
            else:
                out = tune
            continue
        s = summary(name, [r for r in rows if r["headline"] and not r["pass"].endswith(ORACLE_SUFFIX)])
        oracle = [r for r in rows if r["headline"] and r["pass"].endswith(ORACLE_SUFFIX)]
        if oracle:
            s["oracle"] = summary(f"{name}{ORACLE_SUFFIX}", oracle)
        if out:
            out.setdefault("other_presets", []).append(s)
        else:
            out = s
    out["wall_s"] = round(wall_all)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
