"""Transfer at matched L0 (finding 3): every evaluation of an SAE on a dataset placed on that dataset's own
in-domain frontier, and the per-setting summary. Read by the transfer figure, the Pareto plot and the
claims table, so that editing any one of their charts reruns only that one.

**Transfer at matched L0.** A transferred SAE reaches some L0 on T (usually not its L0 on S), so its FVU is
compared with the FVU T's own SAEs reach at that L0: T's in-domain frontier. Per seed ``s`` the frontier
is the piecewise-linear curve through T's own SAEs of seed ``s`` (one point per sweep setting, FVU against
log₂ L0, sorted by L0); the transferred SAE of seed ``s`` is placed on it at its L0 on T. Outside the
frontier's L0 range the nearest segment is extended, at most ``max_extrapolation`` in log₂ L0; farther,
the frontier value is left empty (never guessed). ``gap`` = FVU transferred − frontier FVU: 0 for an SAE
on its own frontier, positive when the transferred SAE reconstructs T worse than T's own SAEs at equal
sparsity. A frontier with one point (one setting) is flat: the gap is then at that point's L0 only.

Per (model, layer, sweep, setting, S → T) :func:`matched_summary` gives the mean gap over seeds with a
95% t-interval (n − 1 degrees of freedom; empty for one seed), the seed-to-seed spread of T's own FVU
(max − min over seeds, mean over settings), the baselines and the downstream accuracy recovered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

GROUP = ["model", "layer", "sweep"]


def frontier_fvu(points_l0: np.ndarray, points_fvu: np.ndarray, l0: float, max_extrapolation: float,
                 ) -> tuple[float, float]:  # fmt: skip
    """FVU of the piecewise-linear frontier (FVU against log₂ L0 through the points) at ``l0``, and how far
    outside the points' L0 range ``l0`` lies (log₂ units, 0 inside). NaN beyond ``max_extrapolation``."""
    order = np.argsort(points_l0, kind="stable")
    x, y = np.log2(np.asarray(points_l0, float)[order]), np.asarray(points_fvu, float)[order]
    if len(x) == 0 or not np.isfinite(l0) or l0 <= 0:
        return float("nan"), float("nan")
    q = float(np.log2(l0))
    outside = max(x[0] - q, q - x[-1], 0.0)
    if outside > max_extrapolation:
        return float("nan"), outside
    if len(x) == 1 or x[0] == x[-1]:
        return float(y.mean()), outside
    if q <= x[0] or q >= x[-1]:
        i = 0 if q <= x[0] else len(x) - 2
        slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i]) if x[i + 1] > x[i] else 0.0
        return float(y[i] + slope * (q - x[i])), outside
    return float(np.interp(q, x, y)), 0.0


def matched_gaps(df: pd.DataFrame, max_extrapolation: float) -> pd.DataFrame:
    """:func:`transfer_table` rows with ``frontier_fvu``, ``gap`` and ``extrapolation`` (log₂ L0 outside
    the frontier) added: every row (in-domain rows too) placed on the frontier of its evaluation dataset's
    own SAEs of the same (model, layer, sweep) and seed (module docstring). No own SAE of that seed: the
    frontier of every seed."""
    out = df.copy()
    own = df[df["in_domain"]]
    fr, gap, ext = [], [], []
    for r in df.itertuples(index=False):
        pts = own[(own["model"] == r.model) & (own["layer"] == r.layer) & (own["sweep"] == r.sweep)
                  & (own["eval_dataset"] == r.eval_dataset)]  # fmt: skip
        same = pts[pts["seed"] == r.seed]
        pts = same if len(same) else pts
        f, e = frontier_fvu(pts["l0"].to_numpy(), pts["fvu"].to_numpy(), float(r.l0), max_extrapolation)
        fr.append(f)
        ext.append(e)
        gap.append(float(r.fvu) - f)
    return out.assign(frontier_fvu=fr, gap=gap, extrapolation=ext)


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the ``level`` t-interval of ``values`` (NaNs dropped); the interval is NaN for fewer than
    two values."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(sps.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - h, m + h


MATCHED_COLUMNS = [
    "model", "layer", "sweep", "setting", "train_dataset", "eval_dataset", "n_seeds", "l0_target", "fvu",
    "frontier_fvu", "gap", "gap_ci_low", "gap_ci_high", "extrapolation", "seed_spread", "pca_fvu",
    "pca_target_fvu", "recentred_fvu", "recentred_l0", "recentred_gap", "mean_shift", "accuracy_recovered",
    "accuracy_recovered_ci_low", "accuracy_recovered_ci_high", "in_domain_accuracy_recovered",
]  # fmt: skip


def seed_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, layer, sweep, dataset): the mean over settings of max − min over seeds of the in-domain
    FVU (how much T's own SAEs differ by seed alone)."""
    own = df[df["in_domain"]]
    per = own.groupby([*GROUP, "setting", "eval_dataset"])["fvu"].agg(lambda v: v.max() - v.min())
    return per.groupby(level=[0, 1, 2, 4]).mean().rename("seed_spread").reset_index()


def matched_summary(gaps: pd.DataFrame, baselines: pd.DataFrame | None = None,
                    downstream: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per transferred (model, layer, sweep, setting, S → T) of :data:`MATCHED_COLUMNS`: means over
    seeds, the gap's 95% t-interval, the baselines (``recentred_gap``: the re-centred SAE's FVU minus the
    frontier at its own L0) and the downstream accuracy recovered on T (transferred; and T's own SAEs')."""
    keys = [*GROUP, "setting", "train_dataset", "eval_dataset"]
    g = gaps.copy()
    sae_keys = [*GROUP, "sae_id", "train_dataset", "eval_dataset"]
    if baselines is not None and len(baselines):
        b = baselines[[*sae_keys, "pca_fvu", "pca_target_fvu", "recentred_fvu", "recentred_l0", "mean_shift"]]
        g = g.merge(b, on=sae_keys, how="left")
    else:
        for c in ("pca_fvu", "pca_target_fvu", "recentred_fvu", "recentred_l0", "mean_shift"):
            g[c] = np.nan
    if downstream is not None and len(downstream):
        dd = downstream[[*sae_keys, "accuracy_recovered"]]
        g = g.merge(dd, on=sae_keys, how="left")
    else:
        g["accuracy_recovered"] = np.nan
    spread = seed_spread(gaps)
    own = g[g["in_domain"]]
    rows = []
    for key, d in g[~g["in_domain"]].groupby(keys, sort=True):
        rec = dict(zip(keys, key, strict=True))
        m, lo, hi = t_interval(d["gap"].to_numpy())
        a, alo, ahi = t_interval(d["accuracy_recovered"].to_numpy())
        own_t = own[(own["model"] == rec["model"]) & (own["layer"] == rec["layer"]) & (own["sweep"] == rec["sweep"])
                    & (own["eval_dataset"] == rec["eval_dataset"])]  # fmt: skip
        own_s = own_t[own_t["setting"] == rec["setting"]]
        sp = spread[(spread["model"] == rec["model"]) & (spread["layer"] == rec["layer"])
                    & (spread["sweep"] == rec["sweep"]) & (spread["eval_dataset"] == rec["eval_dataset"])]  # fmt: skip
        rec_gap = []
        for r in d.itertuples(index=False):
            pts = own_t[own_t["seed"] == r.seed]
            pts = pts if len(pts) else own_t
            f, _ = frontier_fvu(pts["l0"].to_numpy(), pts["fvu"].to_numpy(), float(r.recentred_l0), np.inf)
            rec_gap.append(float(r.recentred_fvu) - f)
        rows.append({
            **rec, "n_seeds": int(d["seed"].nunique()), "l0_target": float(d["l0"].mean()),
            "fvu": float(d["fvu"].mean()), "frontier_fvu": float(d["frontier_fvu"].mean()), "gap": m,
            "gap_ci_low": lo, "gap_ci_high": hi, "extrapolation": float(d["extrapolation"].max()),
            "seed_spread": float(sp["seed_spread"].iloc[0]) if len(sp) else float("nan"),
            "pca_fvu": float(d["pca_fvu"].mean()), "pca_target_fvu": float(d["pca_target_fvu"].mean()),
            "recentred_fvu": float(d["recentred_fvu"].mean()), "recentred_l0": float(d["recentred_l0"].mean()),
            "recentred_gap": float(np.nanmean(rec_gap)) if np.isfinite(rec_gap).any() else float("nan"),
            "mean_shift": float(d["mean_shift"].mean()), "accuracy_recovered": a, "accuracy_recovered_ci_low": alo,
            "accuracy_recovered_ci_high": ahi,
            "in_domain_accuracy_recovered": float(own_s["accuracy_recovered"].mean()) if len(own_s) else float("nan"),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS)
