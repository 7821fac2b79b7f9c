"""Time of the feature-level transfer's one-to-one matching (vitsae.analysis.decoders.one_to_one, the
Hungarian method on the dense cosine matrix) at the paper's size; ends with one JSON line.

    python bench/feature_match.py [--sizes 3072 6144 12288] [--d 768]

Two cases per size F (F x F decoder directions in d dimensions):

* ``random``: two independent sets of random unit directions, the floor reference of the figure and the
  hardest case for the solver (every cosine is near 0, no clear matches);
* ``related``: B is A permuted, half of its rows perturbed by noise of norm ~0.5 and the rest replaced by
  random directions: as between two trained SAEs that share part of their dictionary.

Also prints the time of the best-cosine pass (vitsae.analysis.decoders.best_cosines) for comparison. The
paper's SAEs have 12,288 features (ViT-B, d = 768, 16x).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from vitsae.analysis.decoders import best_cosines, one_to_one


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[3072, 6144, 12288])
    ap.add_argument("--d", type=int, default=768)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out = {}
    for n in args.sizes:
        a = unit(rng.standard_normal((n, args.d)))
        half = n // 2
        related = a[rng.permutation(n)].copy()
        related[:half] += 0.5 / np.sqrt(args.d) * rng.standard_normal((half, args.d)).astype(np.float32)
        related[half:] = rng.standard_normal((n - half, args.d))
        cases = {"random": unit(rng.standard_normal((n, args.d))), "related": unit(related)}
        for name, b in cases.items():
            t0 = time.perf_counter()
            best_cosines(a, b)
            t_best = time.perf_counter() - t0
            t0 = time.perf_counter()
            _, _, cos = one_to_one(a, b)
            t_match = time.perf_counter() - t0
            out[f"{name}_{n}"] = {"match_s": round(t_match, 2), "best_cosine_s": round(t_best, 2),
                                  "mean_matched_cos": round(float(cos.mean()), 3)}  # fmt: skip
            print(
                f"{name:8s} F={n:6d}  matching {t_match:8.2f} s   best cosine {t_best:6.2f} s   "
                f"mean matched cos {cos.mean():.3f}"
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
