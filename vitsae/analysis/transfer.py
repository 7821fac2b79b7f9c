"""Finding 3: does an SAE trained on dataset S reconstruct dataset T as well as T's own SAEs do?

Inputs: one evaluation JSON per (SAE, eval dataset) (:mod:`vitsae.sae.evaluate`), the baselines per
(model, layer) (:mod:`vitsae.analysis.baselines`) and the downstream accuracies per (dataset, model, layer)
(:mod:`vitsae.analysis.downstream`).

**Transfer at matched L0**: :mod:`vitsae.analysis.matched` places every evaluation on its target's own
frontier (the gap) and summarises per setting; this module draws it and writes the tables.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from vitsae.analysis import charts
from vitsae.analysis.evals import evaluation_table
from vitsae.analysis.matched import matched_gaps, matched_summary
from vitsae.atomic import atomic_write


def transfer_table(eval_paths: list[str | Path]) -> pd.DataFrame:
    """Every evaluation (:func:`vitsae.analysis.evals.evaluation_table`), sorted by SAE and datasets."""
    df = evaluation_table(eval_paths)
    if df.empty:
        raise ValueError("no evaluation results to tabulate")
    return df.sort_values(
        ["model", "layer", "sweep", "sae_id", "train_dataset", "eval_dataset"], ignore_index=True
    )


KINDS = {
    "own": "target's own SAE (frontier: one line per seed; hollow: extended to the transferred L0)",
    "transferred": "transferred SAE (source → target)",
    "pca": "PCA fitted on source, k = SAE's L0",
    "recentred": "transferred SAE, b_dec re-centred",
}


def _points(gaps: pd.DataFrame, baselines: pd.DataFrame | None) -> pd.DataFrame:
    """Long form of everything the frontier panels draw (kind, panel, seed, l0, fvu, frontier)."""
    g = gaps.copy()
    g["panel"] = (
        g["model"] + " · layer " + g["layer"].astype(str) + " · " + g["sweep"] + " · on " + g["eval_dataset"]
    )
    own = g[g["in_domain"]].assign(kind=KINDS["own"], source=g["eval_dataset"])
    moved = g[~g["in_domain"]].assign(kind=KINDS["transferred"], source=g["train_dataset"])
    parts = [own, moved]
    if baselines is not None and len(baselines):
        b = baselines.merge(g[["panel", "sae_id", "train_dataset", "eval_dataset", "model", "layer", "sweep"]],
                            on=["model", "layer", "sweep", "sae_id", "train_dataset", "eval_dataset"])  # fmt: skip
        parts.append(b.assign(kind=KINDS["pca"], l0=b["pca_k"], fvu=b["pca_fvu"], source=b["train_dataset"]))
        parts.append(b.assign(kind=KINDS["recentred"], l0=b["recentred_l0"], fvu=b["recentred_fvu"],
                              source=b["train_dataset"]))  # fmt: skip
    cols = ["panel", "kind", "source", "sae_id", "setting", "seed", "l0", "fvu", "frontier_fvu"]
    out = pd.concat([p.reindex(columns=cols) for p in parts], ignore_index=True)
    out["seed"] = out["seed"].astype(str)
    return out


def transfer_chart(gaps: pd.DataFrame, summary: pd.DataFrame, baselines: pd.DataFrame | None, title: str,
                   note: str = "", margin: float = 0.0) -> alt.TopLevelMixin:  # fmt: skip
    """Top: per (model, layer, sweep, target) FVU against L0 on the target: the target's own SAEs (a
    line per seed: the frontier), the transferred SAEs with a vertical rule down to the frontier (the gap),
    and the two baselines. Bottom: the gap at matched L0 per setting with its 95% CI over seeds, beside the
    seed-to-seed spread of the target's own SAEs plus the criterion's margin."""
    pts = _points(gaps, baselines)
    kinds = list(KINDS.values())
    x = alt.X("l0:Q", title="L0 on the target (log)", scale=alt.Scale(type="log", zero=False, nice=False))
    y = alt.Y("fvu:Q", title="FVU on the target (lower is better)")
    color = alt.Color("kind:N", title=None, scale=alt.Scale(domain=kinds,
                      range=["#555555", "#d95f02", "#1b9e77", "#7570b3"]),
                      legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=400))  # fmt: skip
    base = alt.Chart(pts)
    lines = base.transform_filter(alt.datum.kind == KINDS["own"]).mark_line(color="#555555", strokeWidth=1).encode(
        x=x, y=y, detail="seed:N", order="l0:Q")  # fmt: skip
    dots = base.mark_point(filled=True, size=45).encode(
        x=x, y=y, color=color, shape=alt.Shape("kind:N", scale=alt.Scale(domain=kinds,
        range=["circle", "circle", "cross", "triangle-up"]), legend=None),
        tooltip=["kind", "source", "sae_id", alt.Tooltip("l0:Q", format=".1f"), alt.Tooltip("fvu:Q", format=".3f")],
    )  # fmt: skip
    rules = base.transform_filter(alt.datum.kind == KINDS["transferred"]).mark_rule(
        color="#d95f02", strokeDash=[3, 2]).encode(x=x, y="frontier_fvu:Q", y2="fvu:Q")  # fmt: skip
    matched = base.transform_filter(alt.datum.kind == KINDS["transferred"]).mark_point(
        shape="circle", color="#555555", filled=False, size=45).encode(x=x, y="frontier_fvu:Q")  # fmt: skip
    top = alt.layer(lines, rules, matched, dots, data=pts).properties(width=230, height=170).facet(
        facet=alt.Facet("panel:N", title=None, header=alt.Header(labelFontSize=10)), columns=2)  # fmt: skip
    s = summary.copy()
    s["row"] = s["model"] + " · " + s["train_dataset"] + " → " + s["eval_dataset"] + " · " + s["setting"]
    s["limit"] = s["seed_spread"] + margin
    s["label"] = s.apply(lambda r: f"gap {r.gap:+.3f}" + (f" [{r.gap_ci_low:+.3f}, {r.gap_ci_high:+.3f}]"
                         if np.isfinite(r.gap_ci_low) else " (1 seed)"), axis=1)  # fmt: skip
    yy = alt.Y("row:N", title=None, axis=alt.Axis(labelLimit=400))
    sb = alt.Chart(s)
    forest = alt.layer(
        alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 3], color="black").encode(x="x:Q"),
        sb.mark_rule(size=2, color="#d95f02").encode(
            y=yy, x=alt.X("gap_ci_low:Q", title="transfer gap at matched L0: FVU transferred − target's frontier "
                          "(95% CI over seeds); | = seed spread + margin"), x2="gap_ci_high:Q"),
        sb.mark_point(filled=True, size=60, color="#d95f02").encode(y=yy, x="gap:Q"),
        sb.mark_tick(color="black", thickness=2, size=14).encode(y=yy, x="limit:Q"),
        sb.mark_text(align="left", dx=6, dy=-8, fontSize=9).encode(y=yy, x="gap:Q", text="label:N"),
    ).properties(width=480, height=22 * max(1, len(s)))  # fmt: skip
    return alt.vconcat(top, forest).properties(title=charts.title(title, note))


def write_transfer(eval_paths: list[str | Path], baseline_paths: list[str | Path], downstream_paths: list[str | Path],
                   csv_path: str | Path, matched_path: str | Path, downstream_path: str | Path, pdf_path: str | Path,
                   title: str, note: str = "", max_extrapolation: float = 1.0, margin: float = 0.0) -> pd.DataFrame:  # fmt: skip
    """The transfer table (every evaluation with its place on the frontier), the matched-L0 summary
    (:func:`matched_summary`), the downstream table (every per-dataset downstream CSV) and the figure.
    Returns the summary."""
    gaps = matched_gaps(transfer_table(eval_paths), max_extrapolation)
    base = pd.concat([pd.read_csv(p) for p in baseline_paths], ignore_index=True) if baseline_paths else None
    down = (
        pd.concat([pd.read_csv(p) for p in downstream_paths], ignore_index=True) if downstream_paths else None
    )
    summary = matched_summary(gaps, base, down)
    atomic_write(csv_path, lambda p: gaps.to_csv(p, index=False, float_format="%.6g"))
    atomic_write(matched_path, lambda p: summary.to_csv(p, index=False, float_format="%.6g"))
    if down is None:
        down = pd.DataFrame()
    atomic_write(downstream_path, lambda p: down.to_csv(p, index=False, float_format="%.6g"))
    charts.save(transfer_chart(gaps, summary, base, title, note, margin), pdf_path)
    return summary
