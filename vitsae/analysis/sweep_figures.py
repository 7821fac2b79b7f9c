"""Per-sweep figures: training curves (from each SAE's ``train_log.csv``) and the sparsity–reconstruction
Pareto plot (FVU against L0, from each SAE's in-domain evaluation).

An SAE's dataset, model, layer, sweep and id are read from its ``cfg.json`` (beside its
``train_log.csv``); its setting and seed from its id (:func:`vitsae.sae.settings.split_seed`), so that
seeds of one setting share a colour.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd

from vitsae.analysis import charts
from vitsae.analysis.evals import evaluation_table
from vitsae.atomic import atomic_write
from vitsae.sae.files import read_cfg
from vitsae.sae.settings import split_seed


def training_table(log_paths: list[str | Path]) -> pd.DataFrame:
    """Every training-log row of every SAE, with the SAE's dataset, model, layer, sweep, id, setting, seed
    (from the ``cfg.json`` beside each log)."""
    frames = []
    for path in log_paths:
        cfg = read_cfg(path)
        meta, sae_id = cfg["meta"], cfg["sae_id"]
        df = pd.read_csv(path)
        setting, seed = split_seed(sae_id)
        df = df.assign(
            dataset=meta["dataset"],
            model=meta["model"],
            layer=int(meta["layer"]),
            sweep=meta["sweep"],
            sae_id=sae_id,
            setting=setting,
            seed=seed,
        )
        frames.append(df)
    if not frames:
        raise ValueError("no training logs to draw")
    return pd.concat(frames, ignore_index=True)


def training_chart(df: pd.DataFrame, title: str, note: str = "") -> alt.Chart:
    d = df.copy()
    d["panel"] = d["dataset"] + " · " + d["model"] + " · layer " + d["layer"].astype(str)
    d["seed"] = d["seed"].astype(str)

    def metric(field: str, label: str, log: bool = False) -> alt.Chart:
        return (
            alt.Chart(d)
            .mark_line()
            .encode(
                x=alt.X("tokens:Q", title="training tokens"),
                y=alt.Y(f"{field}:Q", title=label, scale=alt.Scale(type="log") if log else alt.Scale()),
                color=alt.Color("setting:N", title="SAE setting"),
                strokeDash=alt.StrokeDash("seed:N", title="seed"),
                detail="sae_id:N",
            )
            .properties(width=200, height=130)
        )

    panels = [
        alt.hconcat(*(c.transform_filter(alt.datum.panel == p) for c in (
            metric("fvu", "FVU (batch)"), metric("l0", "L0 (batch)", log=True),
            metric("dead_fraction", "dead fraction"),
        ))).properties(title=p)
        for p in sorted(d["panel"].unique())
    ]  # fmt: skip
    return alt.vconcat(*panels).properties(title=charts.title(title, note))


def write_training(log_paths: list[str | Path], pdf_path: str | Path, title: str, note: str = "") -> None:
    df = training_table(log_paths)
    charts.save(training_chart(df, title, note), pdf_path)


PARETO_COLUMNS = ["model", "layer", "sweep", "sae_id", "setting", "seed", "dataset", "eval_split", "l0", "fvu",
                  "dead_pct", "dense_pct"]  # fmt: skip


def pareto_table(eval_paths: list[str | Path]) -> pd.DataFrame:
    """One row per SAE, its in-domain evaluation (trained and evaluated on the same dataset)."""
    df = evaluation_table(eval_paths)
    df = df[df["in_domain"]].rename(columns={"train_dataset": "dataset"})
    if df.empty:
        raise ValueError("no in-domain evaluations to draw")
    return df[PARETO_COLUMNS].sort_values(["dataset", "model", "layer", "setting", "seed"], ignore_index=True)


def pareto_chart(
    df: pd.DataFrame, title: str, note: str = "", moved: pd.DataFrame | None = None
) -> alt.Chart:
    """FVU against L0 per (dataset, layer), filled points; ``moved``: SAEs evaluated on a panel's dataset
    but trained on another (:func:`vitsae.analysis.transfer.matched_gaps` rows), hollow, with a dashed rule
    from the frontier at their L0 to their FVU (the transfer gap)."""
    d = df.assign(trained_on="own dataset", frontier_fvu=float("nan"))
    if moved is not None and len(moved):
        m = moved.rename(columns={"eval_dataset": "dataset"}).assign(
            trained_on="transferred from " + moved["train_dataset"]
        )
        d = pd.concat([d, m.reindex(columns=d.columns)], ignore_index=True)  # fmt: skip
    d["panel"] = d["dataset"] + " · layer " + d["layer"].astype(str)
    x = alt.X("l0:Q", title="L0 (active features per token, held-out split)", scale=alt.Scale(type="log"))
    y = alt.Y("fvu:Q", title="FVU (lower is better)")
    color = alt.Color("model:N", title="model")
    base = alt.Chart(d)
    points = base.mark_point(size=60).encode(
        x=x, y=y, color=color, shape=alt.Shape("setting:N", title="SAE setting", legend=alt.Legend(symbolStrokeColor="black")),
        fill=alt.condition(alt.datum.trained_on == "own dataset", alt.Fill("model:N", legend=None), alt.value("white")),
        tooltip=["sae_id", "trained_on", "l0", "fvu", "frontier_fvu", "dead_pct"],
    )  # fmt: skip
    gaps = base.transform_filter(alt.datum.trained_on != "own dataset").mark_rule(strokeDash=[3, 2]).encode(
        x=x, y="frontier_fvu:Q", y2="fvu:Q", color=color)  # fmt: skip
    layered = alt.layer(gaps, points, data=d).properties(width=260, height=200)
    caption = "filled: SAEs on their own dataset; hollow: SAEs trained on the other dataset, dashed down to the frontier"
    return layered.facet(facet=alt.Facet("panel:N", title=None), columns=2).properties(
        title=charts.title(title, note + " · " + caption if note else caption)
    )


def write_pareto(eval_paths: list[str | Path], csv_path: str | Path, pdf_path: str | Path, title: str,
                 note: str = "", max_extrapolation: float = 1.0) -> None:  # fmt: skip
    from vitsae.analysis.matched import matched_gaps

    df = pareto_table(eval_paths)
    every = evaluation_table(eval_paths)
    moved = matched_gaps(every, max_extrapolation) if (~every["in_domain"]).any() else None
    moved = None if moved is None else moved[~moved["in_domain"]]
    atomic_write(csv_path, lambda p: df.to_csv(p, index=False, float_format="%.6g"))
    charts.save(pareto_chart(df, title, note, moved), pdf_path)
