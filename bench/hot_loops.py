"""Three loops the demo and its tests run thousands of times, each against the plain way of writing it;
ends with one JSON line of the ratios (plain / ours, above 1 is faster).

    python bench/hot_loops.py [--features 12288] [--rows 8192] [--repeat 50]

* ``labels``: a relabelling's last step, the first true condition's label for every feature
  (vitsae.analysis.relabel._select: integer codes looked up) against ``np.select`` over the label strings
  and a conversion to objects. The specification curve does this once per SAE and grid cell.
* ``relabel``: a whole iNat relabelling of a synthetic concept table of ``--features`` rows:
  ``relabel_arrays`` on a frozen table (what the specification curve calls) against ``relabel`` on the plain
  DataFrame (which wraps the table afresh and builds a DataFrame on every call).
* ``fire_counts``: per feature, how many of ``--rows`` tokens it fires on (vitsae.sae.evaluate.fire_counts,
  sums of signs) against summing the booleans ``f > 0``, on one CPU thread. Evaluation, the quality table
  and the feature statistics count this for every batch.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch

from vitsae.analysis import relabel, taxonomy
from vitsae.analysis.settings import INatRules
from vitsae.sae.evaluate import fire_counts


def timed(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def inat_table(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A concept table with the columns an iNat relabelling reads, values spread across every threshold."""
    # purity grows with the rank, as in a real table; a tenth of the features too rare to have any (NaN)
    purity_FR = np.maximum.accumulate(rng.uniform(0, 1, (n, len(taxonomy.RANKS))), axis=1)
    purity_FR[rng.uniform(size=n) < 0.1] = np.nan
    cols = {
        "n_top": rng.integers(0, 17, n),
        **{f"purity_{r}": purity_FR[:, i] for i, r in enumerate(taxonomy.RANKS)},
        "n_species": rng.integers(1, 10, n),
        "localization": rng.uniform(0, 0.6, n),
        "spread": rng.uniform(0, 1, n),
        "support": rng.uniform(0, 1, n),
        "part_contrast": rng.uniform(0, 3, n),
        "part_uniqueness": rng.uniform(0, 3, n),
        "peak_norm_ratio": rng.uniform(1, 4, n),
        "concentration_p": rng.uniform(0, 0.1, n),
        "major_share": rng.uniform(0, 1, n),
        "major_clades": rng.integers(1, 5, n),
        "animal": rng.uniform(0, 1, n) < 0.6,
    }
    return pd.DataFrame(cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--features", type=int, default=12288, help="rows of the concept table (the demo's: 12,288)"
    )
    ap.add_argument("--rows", type=int, default=8192, help="tokens per batch for fire_counts")
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}

    names = ["unclear", "single-species", "trait", "clade", "cross-clade"]
    conds = [rng.uniform(size=args.features) < 0.2 for _ in names]
    assert (relabel._select(conds, names) == np.select(conds, names, "unclear").astype(object)).all()
    plain = timed(lambda: np.select(conds, names, "unclear").astype(object), args.repeat)
    ours = timed(lambda: relabel._select(conds, names), args.repeat)
    print(f"labels       plain {plain * 1e3:7.3f} ms   ours {ours * 1e3:7.3f} ms   ratio {plain / ours:5.2f}")
    out["labels"] = plain / ours

    table = inat_table(args.features, rng)
    missing = [c for c in relabel._INAT_NEEDS if c not in table.columns]
    if missing:
        raise SystemExit(f"bench/hot_loops.py: the synthetic table lacks {missing}; add them to inat_table")
    frozen, rules = relabel.Frozen(table), INatRules()
    got = relabel.relabel_arrays(frozen, "inat", rules)
    want = relabel.relabel(table, "inat", rules)
    assert (got[0] == want["label"].to_numpy()).all() and (got[1] == want["trait"].to_numpy()).all()
    plain = timed(lambda: relabel.relabel(table, "inat", rules), args.repeat)
    ours = timed(lambda: relabel.relabel_arrays(frozen, "inat", rules), args.repeat)
    print(f"relabel      plain {plain * 1e3:7.3f} ms   ours {ours * 1e3:7.3f} ms   ratio {plain / ours:5.2f}")
    out["relabel"] = plain / ours

    f = torch.relu(torch.randn(args.rows, args.features // 4, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(fire_counts(f), (f > 0).sum(dim=0))
    plain = timed(lambda: (f > 0).sum(dim=0), args.repeat // 5 or 1)
    ours = timed(lambda: fire_counts(f), args.repeat // 5 or 1)
    print(f"fire_counts  plain {plain * 1e3:7.3f} ms   ours {ours * 1e3:7.3f} ms   ratio {plain / ours:5.2f}")
    out["fire_counts"] = plain / ours
    print(json.dumps({k: round(v, 2) for k, v in out.items()}))


if __name__ == "__main__":
    main()
