"""Finding 3: does an SAE trained on dataset A reconstruct dataset B? The transfer table and figure.

Input: one evaluation JSON per (SAE, eval dataset) (:mod:`vitsae.sae.evaluate`). Output: a tidy CSV with one
row per (model, layer, sweep, SAE, train dataset, eval dataset) and a heatmap per model of
train × eval FVU, annotated with L0 and dead %, in-domain cells (the diagonal) beside transferred.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd

from vitsae.analysis import charts
from vitsae.analysis.evals import evaluation_table
from vitsae.atomic import atomic_write


def transfer_table(eval_paths: list[str | Path]) -> pd.DataFrame:
    """Every evaluation (:func:`vitsae.analysis.evals.evaluation_table`), sorted by SAE and datasets."""
    df = evaluation_table(eval_paths)
    if df.empty:
        raise ValueError("no evaluation results to tabulate")
    return df.sort_values(
        ["model", "layer", "sweep", "sae_id", "train_dataset", "eval_dataset"], ignore_index=True
    )


def seed_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, layer, sweep, setting, train, eval): FVU mean, min and max over seeds,
    number of seeds, mean L0 and dead %."""
    keys = ["model", "layer", "sweep", "setting", "train_dataset", "eval_dataset", "in_domain"]
    g = df.groupby(keys, sort=True)
    out = g.agg(
        fvu=("fvu", "mean"),
        fvu_min=("fvu", "min"),
        fvu_max=("fvu", "max"),
        n_seeds=("fvu", "size"),
        l0=("l0", "mean"),
        dead_pct=("dead_pct", "mean"),
    ).reset_index()
    return out


def transfer_chart(df: pd.DataFrame, title: str, note: str = "") -> alt.Chart:
    """Per (model, layer, sweep, setting) a train × eval heatmap of FVU averaged over seeds; each cell
    also gives the range over seeds (when there are several), L0 and dead %."""
    d = seed_summary(df)
    d["panel"] = d["model"] + " · layer " + d["layer"].astype(str) + " · " + d["sweep"] + " · " + d["setting"]
    d["cell"] = d.apply(lambda r: f"FVU {r.fvu:.3f}", axis=1)
    d["spread"] = d.apply(
        lambda r: f"{r.fvu_min:.3f}–{r.fvu_max:.3f} over {r.n_seeds} seeds" if r.n_seeds > 1 else "1 seed",
        axis=1,
    )
    d["detail"] = d.apply(lambda r: f"L0 {r.l0:.1f} · dead {r.dead_pct:.1f}%", axis=1)
    lo, hi = float(d["fvu"].min()), float(d["fvu"].max())
    d["dark_text"] = d["fvu"] < (lo + hi) / 2  # light (yellow) cells get dark text
    base = alt.Chart(d).encode(
        x=alt.X("eval_dataset:N", title="evaluated on", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("train_dataset:N", title="SAE trained on"),
    )
    heat = base.mark_rect().encode(
        color=alt.Color(
            "fvu:Q", title="FVU (lower is better)", scale=alt.Scale(scheme="viridis", reverse=True)
        ),
        stroke=alt.condition("datum.in_domain", alt.value("black"), alt.value(None)),
        strokeWidth=alt.value(2),
    )
    ink = alt.condition("datum.dark_text", alt.value("black"), alt.value("white"))
    text1 = base.mark_text(dy=-12, fontSize=11, fontWeight="bold").encode(text="cell:N", color=ink)
    text2 = base.mark_text(dy=2, fontSize=8).encode(text="spread:N", color=ink)
    text3 = base.mark_text(dy=14, fontSize=8).encode(text="detail:N", color=ink)
    layered = alt.layer(heat, text1, text2, text3).properties(width=240, height=170)
    return layered.facet(facet=alt.Facet("panel:N", title=None), columns=2).properties(
        title=charts.title(title, note)
    )


def write_transfer(eval_paths: list[str | Path], csv_path: str | Path, pdf_path: str | Path, title: str,
                   note: str = "") -> None:  # fmt: skip
    df = transfer_table(eval_paths)
    atomic_write(csv_path, lambda p: df.to_csv(p, index=False, float_format="%.6g"))
    charts.save(transfer_chart(df, title, note), pdf_path)
