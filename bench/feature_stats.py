"""Feature statistics against evaluation alone, measured in one run on one synthetic store; ends with one
JSON line.

    python bench/feature_stats.py [--images 2048] [--d 384] [--expansion 8] [--k 16] [--repeats 3]

Both passes stream the same split of the same store once, with the same SAE, from the page cache:

* evaluation (:func:`vitsae.sae.evaluate.evaluate`): encode, decode, error sums, firing counts;
* feature statistics (:func:`vitsae.analysis.stats.compute_feature_stats`): encode, firing frequency, mean
  activation, exact top-k images per feature with their patch maps, the image x feature max matrix
  (sparse, on disk) and the feature x class table.

``stats_vs_eval`` = evaluation time / statistics time: the statistics' throughput relative to evaluation
alone (1.0: as fast as an evaluation pass). Median of ``--repeats`` interleaved runs of each. The SAE is a
ReLU SAE with random unit-norm directions whose encoder biases make each feature fire on ~``--density``
of the tokens (L0 ~ density x features), as a trained SAE does; a random SAE with zero bias would fire
on half of them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vitsae.analysis.stats import compute_feature_stats
from vitsae.data.store import write_arrays
from vitsae.sae.checkpoint import SparseAutoencoder
from vitsae.sae.evaluate import evaluate


def make_store(path: Path, n_images: int, grid: int, d: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n_tok = 1 + grid * grid
    acts = rng.standard_normal((n_images, n_tok, d), dtype=np.float32)
    layout = {"n_tokens": n_tok, "n_prefix": 1, "n_registers": 0, "cls_index": 0, "grid": [grid, grid]}
    return write_arrays(path, {"token_layout": layout}, {"val": acts}, chunk_images=64)


def make_sae(d: int, d_sae: int, density: float, sample_ND: np.ndarray, seed: int = 0) -> SparseAutoencoder:
    torch.manual_seed(seed)
    sae = SparseAutoencoder(d, d_sae, "relu_l1", cfg={"hook": {"tokens": "patches"}})
    with torch.no_grad():
        dirs_FD = torch.randn(d_sae, d)
        sae.W_dec_FD.copy_(dirs_FD / dirs_FD.norm(dim=1, keepdim=True))
        sae.W_enc_DF.copy_(sae.W_dec_FD.T)
        x = torch.from_numpy(sample_ND).float()
        pre = (x - sae.b_dec_D) @ sae.W_enc_DF
        sae.b_enc_F.copy_(-torch.quantile(pre, 1.0 - density, dim=0))  # each feature fires on ~density
    return sae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--grid", type=int, default=16, help="patch grid side (16: a 224 px B/14 image)")
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    tmp = Path(tempfile.mkdtemp(prefix="vitsae-bench-featstats-"))
    try:
        store = make_store(tmp / "s.zarr", args.images, args.grid, args.d)
        n_tokens = args.images * args.grid * args.grid
        sample = np.random.default_rng(1).standard_normal((4096, args.d), dtype=np.float32)
        sae = make_sae(args.d, args.d * args.expansion, args.density, sample)
        labels = np.array([f"c{i % 100:03d}" for i in range(args.images)])
        evaluate(sae, store, "val")  # warm the page cache and the kernels
        t_eval, t_stats = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            metrics = evaluate(sae, store, "val")
            t_eval.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            compute_feature_stats(sae, store, "val", tmp / f"stats{r}", k=args.k, labels=labels)
            t_stats.append(time.perf_counter() - t0)
        e, s = statistics.median(t_eval), statistics.median(t_stats)
        print(f"evaluation  {e:7.2f} s  {n_tokens / e:10.0f} tokens/s   runs {[round(t, 2) for t in t_eval]}")
        print(
            f"statistics  {s:7.2f} s  {n_tokens / s:10.0f} tokens/s   runs {[round(t, 2) for t in t_stats]}"
        )
        print(json.dumps({
            "stats_vs_eval": round(e / s, 3), "eval_tokens_s": round(n_tokens / e), "stats_tokens_s": round(n_tokens / s),
            "l0": round(metrics["l0"], 1), "images": args.images, "tokens": n_tokens, "d": args.d,
            "d_sae": args.d * args.expansion, "k": args.k, "repeats": args.repeats, "threads": torch.get_num_threads(),
        }))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
