"""Finding 3: does an SAE trained on dataset A reconstruct dataset B? The transfer table and figure.

Input: one evaluation JSON per (SAE, eval dataset) (vitsae.evaluate). Output: a tidy CSV with one
row per (model, layer, sweep, SAE, train dataset, eval dataset) and a heatmap per model of
train × eval FVU, annotated with L0 and dead %, in-domain cells (the diagonal) beside transferred.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import altair as alt
import pandas as pd

from vitsae.figures import FIGURES

COLUMNS = [
    "model", "layer", "sweep", "sae_id", "setting", "seed", "train_dataset", "eval_dataset", "eval_split",
    "in_domain", "fvu", "mse", "l0", "dead_pct", "dense_pct", "n_tokens",
]
_SEED = re.compile(r"^(?P<setting>.+)-s(?P<seed>-?\d+)$")


def split_seed(sae_id: str) -> tuple[str, int | None]:
    """``relu_l1-x8-l1_3-lr_0.004-s1`` → (``relu_l1-x8-l1_3-lr_0.004``, 1): SAEs that differ only in
    their seed share a setting, and the figure shows the spread over those seeds."""
    m = _SEED.match(sae_id)
    return (m["setting"], int(m["seed"])) if m else (sae_id, None)


def transfer_table(eval_paths: list[str | Path]) -> pd.DataFrame:
    rows = []
    for path in eval_paths:
        with open(path) as f:
            rec = json.load(f)
        rows.append({
            "model": rec["model"], "layer": int(rec["layer"]), "sweep": rec["sweep"], "sae_id": rec["sae_id"],
            "setting": split_seed(rec["sae_id"])[0], "seed": split_seed(rec["sae_id"])[1],
            "train_dataset": rec["train_dataset"], "eval_dataset": rec["eval_dataset"],
            "eval_split": rec["eval_split"], "in_domain": rec["train_dataset"] == rec["eval_dataset"],
            "fvu": float(rec["fvu"]), "mse": float(rec["mse"]), "l0": float(rec["l0"]),
            "dead_pct": 100.0 * float(rec["dead_fraction"]), "dense_pct": 100.0 * float(rec["dense_fraction"]),
            "n_tokens": int(rec["n_tokens"]),
        })
    if not rows:
        raise ValueError("no evaluation results to tabulate")
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["model", "layer", "sweep", "sae_id", "train_dataset", "eval_dataset"],
                          ignore_index=True)


def seed_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, layer, sweep, setting, train, eval): FVU mean, min and max over seeds,
    number of seeds, mean L0 and dead %."""
    keys = ["model", "layer", "sweep", "setting", "train_dataset", "eval_dataset", "in_domain"]
    g = df.groupby(keys, sort=True)
    out = g.agg(fvu=("fvu", "mean"), fvu_min=("fvu", "min"), fvu_max=("fvu", "max"), n_seeds=("fvu", "size"),
                l0=("l0", "mean"), dead_pct=("dead_pct", "mean")).reset_index()
    return out


def transfer_chart(df: pd.DataFrame, note: str = "") -> alt.Chart:
    """Per (model, layer, sweep, setting) a train × eval heatmap of FVU averaged over seeds; each cell
    also gives the range over seeds (when there are several), L0 and dead %."""
    d = seed_summary(df)
    d["panel"] = d["model"] + " · layer " + d["layer"].astype(str) + " · " + d["sweep"] + " · " + d["setting"]
    d["cell"] = d.apply(lambda r: f"FVU {r.fvu:.3f}", axis=1)
    d["spread"] = d.apply(lambda r: f"{r.fvu_min:.3f}–{r.fvu_max:.3f} over {r.n_seeds} seeds" if r.n_seeds > 1
                          else "1 seed", axis=1)
    d["detail"] = d.apply(lambda r: f"L0 {r.l0:.1f} · dead {r.dead_pct:.1f}%", axis=1)
    lo, hi = float(d["fvu"].min()), float(d["fvu"].max())
    d["dark_text"] = d["fvu"] < (lo + hi) / 2  # light (yellow) cells get dark text
    base = alt.Chart(d).encode(
        x=alt.X("eval_dataset:N", title="evaluated on", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("train_dataset:N", title="SAE trained on"),
    )
    heat = base.mark_rect().encode(
        color=alt.Color("fvu:Q", title="FVU (lower is better)", scale=alt.Scale(scheme="viridis", reverse=True)),
        stroke=alt.condition("datum.in_domain", alt.value("black"), alt.value(None)),
        strokeWidth=alt.value(2),
    )
    ink = alt.condition("datum.dark_text", alt.value("black"), alt.value("white"))
    text1 = base.mark_text(dy=-12, fontSize=11, fontWeight="bold").encode(text="cell:N", color=ink)
    text2 = base.mark_text(dy=2, fontSize=8).encode(text="spread:N", color=ink)
    text3 = base.mark_text(dy=14, fontSize=8).encode(text="detail:N", color=ink)
    layered = alt.layer(heat, text1, text2, text3).properties(width=240, height=170)
    title = alt.TitleParams(
        FIGURES["transfer"],
        subtitle=[note] if note else [], anchor="start", fontSize=14,
        subtitleColor="#b00" if note else None,
    )
    return layered.facet(facet=alt.Facet("panel:N", title=None), columns=2).properties(title=title)


def write_transfer(eval_paths: list[str | Path], csv_path: str | Path, pdf_path: str | Path, note: str = "") -> None:
    df = transfer_table(eval_paths)
    for path, write in ((csv_path, lambda p: df.to_csv(p, index=False, float_format="%.6g")),
                        (pdf_path, lambda p: transfer_chart(df, note).save(p, format="pdf"))):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
        write(tmp)
        os.replace(tmp, path)
