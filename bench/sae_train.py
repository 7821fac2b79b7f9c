"""SAE training speed, measured in one run on one synthetic store; ends with one JSON line of ratios.

    python bench/sae_train.py [--d 768] [--expansion 4] [--steps 20] [--keep DIR]

* ``step_vs_reference``: tokens/s of the sweep trainer (vitsae.sae.train.train_sweep, one relu_l1 SAE, batches
  from memory) against a minimal plain-PyTorch step of the same SAE written here (encode, decode, loss,
  backward, parallel-gradient removal, torch.optim.Adam, decoder renormalisation): the limit on this
  machine. Goal ≥ 0.9. Median of ``--repeats`` interleaved runs of each.
* ``loader_vs_raw``: tokens/s of vitsae.data.loader.TokenStream (shuffled float32 batches of the whole split)
  against a plain sequential read of the same store's chunks (zarr, token-sliced fp16), both from disk:
  the store's pages are evicted from the page cache (posix_fadvise DONTNEED) before each read, as the
  paper's stores (~500 GB) never fit in RAM. Goal ≥ 0.8. ``loader_vs_raw_cached`` is the same with the
  store in the page cache, where reading is a memory copy and the loader's gather and conversion to fp32
  (two more passes over the data) cannot hide behind it on 2 cores: quoted, not a goal.
* ``stacked_vs_sequential``: 8 SAEs (2 L1 x 2 lr x 2 seeds) trained in one pass from the store against the
  same 8 trained one after another, each reading the store (time ratio sequential / stacked; on 2 CPU
  cores compute dominates, so this is modest here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vitsae.data.loader import TokenStream
from vitsae.data.store import open_store, split_array, write_arrays
from vitsae.sae.settings import SAESpec, TrainSettings
from vitsae.sae.train import train_sweep, train_sweep_from_store


def make_store(path: Path, n_images: int, n_tokens: int, d: int, chunk_images: int) -> Path:
    rng = np.random.default_rng(0)
    acts = rng.standard_normal((n_images, n_tokens, d), dtype=np.float32) + rng.standard_normal(d) * 0.5
    layout = {
        "n_tokens": n_tokens,
        "n_prefix": 1,
        "n_registers": 0,
        "cls_index": 0,
        "grid": [1, n_tokens - 1],
    }
    attrs = {"token_layout": layout, "dataset": "bench", "layer": 0, "model": {"name": "synthetic"}}
    return write_arrays(path, attrs, {"train": acts.astype(np.float16)}, chunk_images=chunk_images)


class MemoryStream:
    """The stream interface train_sweep uses (peek, iteration, close), over batches already in memory."""

    def __init__(self, batches: list[torch.Tensor]):
        self.batches = batches

    def peek(self, n: int) -> np.ndarray:
        return torch.cat(self.batches)[:n].numpy()

    def __iter__(self):
        return iter(self.batches)

    def close(self) -> None:
        pass


def reference_steps(batches: list[torch.Tensor], d: int, f: int, l1: float, lr: float) -> float:
    """The plain-PyTorch step of a relu_l1 SAE over ``batches``; returns seconds (after one warm-up step)."""
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(f, d, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_enc = torch.nn.Parameter(W_dec.T.clone())
    W_dec = torch.nn.Parameter(W_dec)
    b_enc = torch.nn.Parameter(torch.zeros(f))
    b_dec = torch.nn.Parameter(batches[0].mean(0))
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=lr)

    scale = math.sqrt(d / float((batches[0] ** 2).sum(1).mean()))

    def step(x: torch.Tensor) -> None:
        x = x * scale
        f_BF = torch.relu((x - b_dec) @ W_enc + b_enc)
        xhat = f_BF @ W_dec + b_dec
        loss = ((xhat - x) ** 2).sum(1).mean() + l1 * f_BF.sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))

    step(batches[0])
    t0 = time.perf_counter()
    for x in batches[1:]:
        step(x)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--expansion", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    ap.add_argument("--loader-mb", type=float, default=400, help="size of the store the loader reads")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each measurement (median)")
    ap.add_argument("--keep", type=Path, help="put the store here instead of a temporary directory")
    args = ap.parse_args()
    d, f, B = args.d, args.d * args.expansion, args.batch
    work = args.keep or Path(tempfile.mkdtemp(prefix="vitsae-bench-sae-"))
    work.mkdir(parents=True, exist_ok=True)
    n_tokens = 65  # 1 CLS + 64 patches per image, as a 112 px ViT-B/14 at 8x8
    n_images = math.ceil((args.steps + 1) * B * 1.05 / (n_tokens - 1))
    store = make_store(work / "bench.zarr", n_images, n_tokens, d, chunk_images=32)
    split_tokens = n_images * (n_tokens - 1)
    print(
        f"store: {n_images} images x {n_tokens - 1} patches x d={d} fp16 "
        f"({split_tokens * d * 2 / 1e6:.0f} MB); SAE d_sae={f}; batch {B}; {args.steps} steps; "
        f"torch threads {torch.get_num_threads()}"
    )

    # 1. The trainer's step against the plain step, same batches from memory.
    n_train = (args.steps + 1) * B
    with TokenStream(store, "train", "patches", B, 0, 8, n_train) as s:
        batches = [b.clone() for b in s]
    spec = SAESpec(architecture="relu_l1", expansion=args.expansion, l1_coeff=3.0, lr=4e-3, seed=0)
    settings = TrainSettings(batch_size=B, train_tokens=n_train, log_every=10**6, checkpoint_every=10**6)
    # one warm-up step, as for the reference: time the rest
    times: list[float] = []

    def timed_stream(start: int) -> MemoryStream:
        class Timed(MemoryStream):
            def __iter__(self):
                for i, x in enumerate(self.batches):
                    if i == 1:  # the warm-up step on batch 0 is done
                        times.append(time.perf_counter())
                    yield x

        return Timed(batches)

    def trainer_seconds() -> float:
        times.clear()
        train_sweep(timed_stream, [spec], settings, d)  # stops after the step on the last batch
        return time.perf_counter() - times[0]

    # interleaved repeats, medians: on 2 shared cores one slow moment must not decide the ratio
    t_refs, t_trainers = [], []
    for _ in range(args.repeats):
        t_refs.append(reference_steps(batches, d, f, l1=3.0, lr=4e-3))
        t_trainers.append(trainer_seconds())
    t_ref, t_trainer = statistics.median(t_refs), statistics.median(t_trainers)
    ref_tps, trainer_tps = args.steps * B / t_ref, args.steps * B / t_trainer
    print(f"step: trainer {trainer_tps:,.0f} tokens/s, plain PyTorch {ref_tps:,.0f} tokens/s")

    # 2. The loader against a plain sequential read of the chunks, on a store of --loader-mb, with the
    # store's pages evicted from the page cache before each read (cold: the paper's stores, ~500 GB,
    # never fit in RAM, so reads come from disk) and, for comparison, with them cached (warm).
    n_big = max(1, round(args.loader_mb * 1e6 / ((n_tokens - 1) * d * 2)))
    big = make_store(work / "loader.zarr", n_big, n_tokens, d, chunk_images=32)
    big_tokens = n_big * (n_tokens - 1)
    arr = split_array(open_store(big), "train")
    chunk_files = [p for p in (big / "train").rglob("*") if p.is_file() and p.name != "zarr.json"]

    def evict() -> None:  # written pages are flushed first: dirty pages stay in the cache
        os.sync()
        for path in chunk_files:
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)

    def raw_read() -> float:
        t0, n = time.perf_counter(), 0
        for start in range(0, arr.shape[0], arr.chunks[0]):
            n += arr[start : start + arr.chunks[0], 1:].shape[0] * (n_tokens - 1)
        assert n == big_tokens
        return time.perf_counter() - t0

    def loader_read() -> float:
        t0 = time.perf_counter()
        with TokenStream(big, "train", "patches", B, 0, 8, big_tokens) as s:
            m = sum(b.shape[0] for b in s)
        assert m == big_tokens
        return time.perf_counter() - t0

    reads: dict[str, list[float]] = {"raw_cold": [], "loader_cold": [], "raw_warm": [], "loader_warm": []}
    for _ in range(args.repeats):  # interleaved, so that a slow moment of the machine hits both
        for name, fn in (("raw", raw_read), ("loader", loader_read)):
            evict()
            reads[f"{name}_cold"].append(fn())
            reads[f"{name}_warm"].append(fn())
    med = {k: statistics.median(v) for k, v in reads.items()}
    tps = {k: big_tokens / v for k, v in med.items()}
    print(
        f"read ({n_big} images, {big_tokens * d * 2 / 1e6:.0f} MB, median of {args.repeats}): "
        f"cold: loader {tps['loader_cold']:,.0f} tokens/s, sequential chunk read {tps['raw_cold']:,.0f}; "
        f"warm: loader {tps['loader_warm']:,.0f}, sequential chunk read {tps['raw_warm']:,.0f}"
    )

    # 3. Eight SAEs in one pass against the same eight one after another.
    specs = [
        SAESpec(architecture="relu_l1", expansion=args.expansion, l1_coeff=l1, lr=lr, seed=seed)
        for l1 in (3.0, 6.0)
        for lr in (4e-3, 2e-3)
        for seed in (0, 1)
    ]
    few = TrainSettings(
        batch_size=B, train_tokens=args.steps * B // 2, log_every=10**6, checkpoint_every=10**6
    )
    t0 = time.perf_counter()
    train_sweep_from_store(store, "train", specs, few, [work / "stacked" / str(i) for i in range(8)], {})
    t_stacked = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, spec in enumerate(specs):
        train_sweep_from_store(store, "train", [spec], few, [work / "seq" / str(i)], {})
    t_seq = time.perf_counter() - t0
    sae_tokens = 8 * few.train_tokens
    print(
        f"8 SAEs: stacked {t_stacked:.1f} s ({sae_tokens / t_stacked:,.0f} SAE-tokens/s), "
        f"one after another {t_seq:.1f} s ({sae_tokens / t_seq:,.0f} SAE-tokens/s)"
    )
    if args.keep is None:
        shutil.rmtree(work)
    print(
        json.dumps(
            {
                "step_vs_reference": round(trainer_tps / ref_tps, 3),
                "loader_vs_raw": round(tps["loader_cold"] / tps["raw_cold"], 3),
                "loader_vs_raw_cached": round(tps["loader_warm"] / tps["raw_warm"], 3),
                "stacked_vs_sequential": round(t_seq / t_stacked, 3),
                "trainer_tokens_per_s": round(trainer_tps),
                "reference_tokens_per_s": round(ref_tps),
                "loader_tokens_per_s": round(tps["loader_cold"]),
                "raw_read_tokens_per_s": round(tps["raw_cold"]),
                "loader_tokens_per_s_cached": round(tps["loader_warm"]),
                "raw_read_tokens_per_s_cached": round(tps["raw_warm"]),
                "stacked_sae_tokens_per_s": round(sae_tokens / t_stacked),
                "sequential_sae_tokens_per_s": round(sae_tokens / t_seq),
            }
        )
    )


if __name__ == "__main__":
    main()
