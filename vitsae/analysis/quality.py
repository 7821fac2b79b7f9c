"""Quality checks on every trained SAE of a sweep, from a sample of its own training data.

The sample: the first ``sample_tokens`` tokens of the SAE's training stream (:class:`vitsae.data.loader.
TokenStream` over the split, token kind, data order and buffer size in its ``cfg.json``), at most its
``train_tokens`` and the split's tokens: tokens it was trained on. The SAEs of one (dataset, model, layer)
share one sample (one sweep trains them in one pass over the same stream). A sweep trained with
``permute_dims`` (the structure-free null) is read on the real tokens, as its features are everywhere.

Per SAE (:data:`COLUMNS`):

* ``l0``, ``fvu`` on the sample (FVU = Σ‖x̂ − x‖² / Σ‖x − μ‖², μ the sample mean; sums in float64);
* ``dead_fraction``: features that fire (f > 0) on no token of the sample; ``dense_fraction``: features
  that fire on more than ``dense_threshold`` (``evaluation.dense_threshold``) of its tokens;
* ``stability``: for each other seed's SAE of the same setting (same dataset, model, layer, sweep), the
  share of this SAE's live features that have a one-to-one match there (:func:`matched_share`), averaged
  over those SAEs (``stability_seeds`` of them; none: NaN);
* ``final_drop``: how much the loss was still falling at the end of training (:func:`final_drop`);
* ``failures``: the checks it fails (:func:`failures`), ``;``-joined, ``""`` when none. A failing SAE
  stays in the table and is logged as a warning.

The figure (:func:`quality_chart`): per (dataset, layer) a row of panels, stability, dead and dense
fractions and final drop per SAE against its setting (colour: model; a cross: an SAE that fails a check;
dashed rules: the thresholds), and histograms of decoder-row norms and of the live features' firing
frequencies on the sample (one line per SAE).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import torch

from vitsae.analysis import charts
from vitsae.analysis.decoders import best_cosines, unit_rows
from vitsae.analysis.settings import QualitySettings
from vitsae.atomic import atomic_write
from vitsae.data.loader import TokenStream
from vitsae.sae import checkpoint, files
from vitsae.sae.evaluate import sample_metrics
from vitsae.sae.settings import split_seed

logger = logging.getLogger(__name__)

COLUMNS = ["dataset", "model", "layer", "sweep", "sae_id", "setting", "seed", "l0", "fvu", "dead_fraction",
           "dense_fraction", "stability", "stability_seeds", "final_drop", "failures"]  # fmt: skip
#: Histogram bins of the figure's decoder-norm and firing-frequency panels.
N_BINS = 31  # odd: a single value (unit-norm decoder rows) falls in the middle bin
TOO_FEW_ROWS = "too few log rows"
#: The figure's histograms of per-feature values.
KIND_TITLES = {
    "decoder_norm": "decoder-row norm",
    "log10_frequency": "log10 firing frequency (live features)",
}


# --------------------------------------------------------------------------------------------
# Arrays


def mutual_pairs(
    W_a_FD: np.ndarray, W_b_GD: np.ndarray, block: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-to-one pairs of decoder rows of A and B: ``(f_M, g_M, cos_M)`` where ``g`` is ``f``'s
    nearest row of B and ``f`` is ``g``'s nearest row of A (signed cosine; ties: the smaller index).
    Blocked matmuls in float32 (:func:`vitsae.analysis.decoders.best_cosines`): O(F·G·D) time and
    O(block·G) memory, so 12,288 × 12,288 features take seconds, with no assignment problem to solve.
    The relation is symmetric: B's pairs with A are the same pairs."""
    bm = best_cosines(unit_rows(W_a_FD), unit_rows(W_b_GD), block)
    f_F = np.arange(len(bm.arg_ab_F))
    mutual_F = bm.arg_ba_G[bm.arg_ab_F] == f_F
    return f_F[mutual_F], bm.arg_ab_F[mutual_F], bm.best_ab_F[mutual_F]


def matched_share(W_a_FD: np.ndarray, W_b_GD: np.ndarray, live_a_F: np.ndarray, threshold: float,
                  block: int = 2048) -> float:  # fmt: skip
    """The share of A's live features (``live_a_F``, bool) whose decoder row has a one-to-one match in B
    (:func:`mutual_pairs`) with cosine at least ``threshold``; NaN when A has no live feature. Every row
    of B, live or not, and every row of A is a candidate nearest neighbour."""
    live_a_F = np.asarray(live_a_F, dtype=bool)
    if not live_a_F.any():
        return math.nan
    f_M, _, cos_M = mutual_pairs(W_a_FD, W_b_GD, block)
    return _share(live_a_F, f_M, cos_M, threshold)


def _share(live_F: np.ndarray, f_M: np.ndarray, cos_M: np.ndarray, threshold: float) -> float:
    if not live_F.any():
        return math.nan
    return float(live_F[f_M[cos_M >= threshold]].sum() / live_F.sum())


def precision_check(
    reference: Sequence[checkpoint.SparseAutoencoder], other: checkpoint.SparseAutoencoder, x_ND: torch.Tensor,
    cosine: float = 0.7,
) -> pd.DataFrame:  # fmt: skip
    """Does ``other`` (trained like ``reference[0]``, same seed, at another precision) differ from it by
    no more than SAEs of other seeds do? ``reference``: SAEs of the same settings and data, seeds
    differing (at least two). One row per check: ``fvu``, ``l0`` and ``dead`` (share of features firing
    on no token of ``x_ND``) with ``delta`` = |other − reference[0]| against ``spread`` = the largest
    |reference[i] − reference[0]| (for ``dead`` at least one feature's share); and ``matched`` (share of live features of ``reference[0]`` with a
    one-to-one decoder match of cosine ≥ ``cosine``, :func:`matched_share`), other's against the
    lowest of the other seeds'. ``within`` says whether ``other`` is inside the seed spread (``delta ≤
    spread``; for ``matched``, other's share ≥ the seeds')."""
    if len(reference) < 2:
        raise ValueError("precision_check needs SAEs of at least two seeds as the reference")
    metrics = [sample_metrics(sae, x_ND) for sae in (*reference, other)]
    for m in metrics:
        m["dead"] = float((m["fired_F"] == 0).mean())
    *ref, oth = metrics
    rows = []
    for key in ("fvu", "l0", "dead"):
        spread = max(abs(r[key] - ref[0][key]) for r in ref[1:])
        if key == "dead":  # one feature's difference is always within (dead counts are small integers)
            spread = max(spread, 1 / len(ref[0]["fired_F"]))
        delta = abs(oth[key] - ref[0][key])
        rows.append({"check": key, "reference": ref[0][key], "other": oth[key], "delta": delta,
                     "spread": spread, "within": bool(delta <= spread)})  # fmt: skip
    live_F = ref[0]["fired_F"] > 0
    W0 = reference[0].W_dec_FD.detach().cpu().numpy()
    seeds = min(matched_share(W0, r.W_dec_FD.detach().cpu().numpy(), live_F, cosine) for r in reference[1:])
    share = matched_share(W0, other.W_dec_FD.detach().cpu().numpy(), live_F, cosine)
    rows.append({"check": "matched", "reference": seeds, "other": share, "delta": seeds - share,
                 "spread": math.nan, "within": bool(share >= seeds)})  # fmt: skip
    return pd.DataFrame(rows)


def final_drop(step_R: np.ndarray, loss_R: np.ndarray, tail: float) -> float:
    """The relative drop of the loss still under way at the end of training: a least-squares line of loss
    against step over the last ``tail`` share of the log's rows (``ceil(tail · rows)``, rows with a finite
    loss), then (fitted loss at the tail's first step − at its last) / the tail's mean loss. NaN when
    the tail has fewer than 3 rows (or its steps do not vary)."""
    step_R, loss_R = np.asarray(step_R, np.float64), np.asarray(loss_R, np.float64)
    keep_R = np.isfinite(loss_R) & np.isfinite(step_R)
    step_R, loss_R = step_R[keep_R], loss_R[keep_R]
    n = math.ceil(tail * len(step_R))
    if n < 3:
        return math.nan
    s_T, y_T = step_R[-n:], loss_R[-n:]
    if s_T.max() == s_T.min() or y_T.mean() == 0:
        return math.nan
    slope, _ = np.polyfit(s_T, y_T, 1)
    return float(slope * (s_T[0] - s_T[-1]) / y_T.mean())


def failures(dead_fraction: float, dense_fraction: float, stability: float, drop: float,
             settings: QualitySettings) -> list[str]:  # fmt: skip
    """The checks an SAE fails, by name: ``dead>{max_dead}``, ``dense>{max_dense}``,
    ``stability<{min_stability}`` (not when there is no other seed: NaN), and ``not_flat (drop {x} >
    {max_final_drop})`` or, when the log had too few rows for a final drop, ``too few log rows``."""
    s = settings
    out = []
    if dead_fraction > s.max_dead:
        out.append(f"dead>{s.max_dead:g}")
    if dense_fraction > s.max_dense:
        out.append(f"dense>{s.max_dense:g}")
    if not math.isnan(stability) and stability < s.min_stability:
        out.append(f"stability<{s.min_stability:g}")
    if math.isnan(drop):
        out.append(TOO_FEW_ROWS)
    elif drop > s.max_final_drop:
        out.append(f"not_flat (drop {drop:.3f} > {s.max_final_drop:g})")
    return out


# --------------------------------------------------------------------------------------------
# From files


@dataclass(frozen=True)
class SAEQuality:
    """What :func:`sae_quality` measures of one SAE on a sample, beside its decoder."""

    l0: float
    fvu: float
    fired_F: np.ndarray  # tokens of the sample each feature fired on
    n_tokens: int
    W_dec_FD: np.ndarray

    def dense_fraction(self, threshold: float) -> float:
        return float((self.fired_F > threshold * self.n_tokens).mean())

    @property
    def live_F(self) -> np.ndarray:
        return self.fired_F > 0


def read_sample(store_path: str | os.PathLike, cfg: dict, sample_tokens: int) -> torch.Tensor:
    """The first ``sample_tokens`` tokens (at most ``train_tokens`` and the split's tokens) of the stream
    the SAE of ``cfg`` (its ``cfg.json``) was trained on, float32 ``[N, D]``."""
    split = cfg["meta"]["split"]
    n = min(int(sample_tokens), int(cfg["train_tokens"]))
    with TokenStream(store_path, split, cfg["token_kind"], int(cfg["batch_size"]), int(cfg["data_seed"]),
                     int(cfg["shuffle_chunks"]), n_tokens=n) as stream:  # fmt: skip
        n = min(n, stream.split_tokens)  # one epoch at most: no token twice
        batches, got = [], 0
        for batch_BD in stream:
            batches.append(batch_BD[: n - got])
            got += len(batches[-1])
            if got >= n:
                break
    return torch.cat(batches).to(torch.float32)


@torch.no_grad()
def sae_quality(
    sae: checkpoint.SparseAutoencoder, x_ND: torch.Tensor, batch_tokens: int = 2048
) -> SAEQuality:
    """L0, FVU and each feature's firing count of ``sae`` on the sample ``x_ND`` (float64 sums)."""
    m = sample_metrics(sae, x_ND, batch_tokens)
    return SAEQuality(l0=m["l0"], fvu=m["fvu"], fired_F=m["fired_F"], n_tokens=m["n_tokens"],
                      W_dec_FD=sae.W_dec_FD.detach().cpu().numpy().astype(np.float32))  # fmt: skip


@dataclass(frozen=True)
class Quality:
    """A sweep's quality table (:data:`COLUMNS`) and, per SAE (``sae_id`` with its dataset, model, layer),
    the histograms the figure draws (``kind``: ``decoder_norm`` or ``log10_frequency``; ``x``: bin
    centre; ``share``: of the SAE's features, live ones for the frequency)."""

    table: pd.DataFrame
    histograms: pd.DataFrame


def quality_table(
    sae_dirs: Sequence[str | os.PathLike],
    stores: Mapping[tuple[str, str, int], str | os.PathLike],
    settings: QualitySettings,
    dense_threshold: float,
    device: str = "cpu",
) -> Quality:
    """Every SAE of ``sae_dirs`` checked on a sample of its training split (module docstring). ``stores``:
    (dataset, model, layer) of an SAE's ``cfg.json`` ``meta`` → its activation store."""
    cfgs = [files.read_cfg(d) for d in sae_dirs]
    places: dict[tuple[str, str, int], list[int]] = {}
    for i, cfg in enumerate(cfgs):
        places.setdefault(_place(cfg), []).append(i)
    frames, values = [], {}
    for place, members in places.items():
        if place not in stores:
            raise ValueError(f"no activation store given for {place} (SAE {sae_dirs[members[0]]})")
        stream_keys = {_stream_key(cfgs[i]) for i in members}
        if len(stream_keys) > 1:
            raise ValueError(f"SAEs of {place} were trained on different streams {sorted(stream_keys)}; "
                             "they must come from one sweep")  # fmt: skip
        x_ND = read_sample(stores[place], cfgs[members[0]], settings.sample_tokens)
        logger.info("%s/%s/layer%d: a sample of %d tokens, %d SAEs", *place, x_ND.shape[0], len(members))
        rows, measured = [], {}
        for i in members:
            sae = checkpoint.load(sae_dirs[i]).to(device)
            q = sae_quality(sae, x_ND)
            measured[i] = q
            log = pd.read_csv(Path(sae_dirs[i]) / "train_log.csv")
            setting, seed = split_seed(cfgs[i]["sae_id"])
            rows.append({
                "dataset": place[0], "model": place[1], "layer": place[2], "sweep": cfgs[i]["meta"]["sweep"],
                "sae_id": cfgs[i]["sae_id"], "setting": setting, "seed": seed, "l0": q.l0, "fvu": q.fvu,
                "dead_fraction": float((~q.live_F).mean()), "dense_fraction": q.dense_fraction(dense_threshold),
                "final_drop": final_drop(log["step"].to_numpy(), log["loss"].to_numpy(), settings.tail),
                "i": i,
            })  # fmt: skip
            logger.info("%s: L0 %.1f, FVU %.3f, %.1f%% dead", cfgs[i]["sae_id"], q.l0, q.fvu,
                        100 * rows[-1]["dead_fraction"])  # fmt: skip
        # seeds are compared within a place only: its decoders are let go before the next place's
        df = pd.DataFrame(rows)
        df["stability"], df["stability_seeds"] = _stability(df, measured, settings.stability_cosine)
        frames.append(df)
        for i, q in measured.items():
            values[i] = {"decoder_norm": np.linalg.norm(q.W_dec_FD, axis=1),
                         "log10_frequency": np.log10(q.fired_F[q.live_F] / q.n_tokens)}  # fmt: skip
    if not frames:
        raise ValueError("no SAEs to check")
    df = pd.concat(frames, ignore_index=True)
    df["failures"] = [
        ";".join(failures(r.dead_fraction, r.dense_fraction, r.stability, r.final_drop, settings))
        for r in df.itertuples()
    ]
    for r in df[df["failures"] != ""].itertuples():
        logger.warning("SAE %s (%s/%s/layer%d, sweep %s) fails: %s", r.sae_id, r.dataset, r.model, r.layer,
                       r.sweep, r.failures)  # fmt: skip
    histograms = _histograms(df, values)
    df["seed"] = df["seed"].astype("Int64")
    table = df[COLUMNS].sort_values(["dataset", "model", "layer", "sae_id"], ignore_index=True)
    return Quality(table, histograms)


def _place(cfg: dict) -> tuple[str, str, int]:
    meta = cfg["meta"]
    return meta["dataset"], meta["model"], int(meta["layer"])


def _stream_key(cfg: dict) -> tuple:
    return (cfg["meta"]["split"], cfg["token_kind"], int(cfg["data_seed"]), int(cfg["shuffle_chunks"]),
            int(cfg["batch_size"]), int(cfg["train_tokens"]))  # fmt: skip


def _stability(df: pd.DataFrame, measured: Mapping[int, SAEQuality], cosine: float) -> tuple[list, list]:
    """Per row: the mean matched share against every other seed's SAE of its setting, and how many."""
    shares: dict[int, list[float]] = {i: [] for i in df["i"]}
    keys = ["dataset", "model", "layer", "sweep", "setting"]
    for _, g in df.groupby(keys, sort=False):
        members = list(g[["i", "seed"]].itertuples(index=False))
        for x, (a, seed_a) in enumerate(members):
            for b, seed_b in members[x + 1 :]:
                if pd.isna(seed_a) or pd.isna(seed_b) or seed_a == seed_b:
                    continue
                qa, qb = measured[a], measured[b]
                f_M, g_M, cos_M = mutual_pairs(qa.W_dec_FD, qb.W_dec_FD)  # one pass serves both ways
                shares[a].append(_share(qa.live_F, f_M, cos_M, cosine))
                shares[b].append(_share(qb.live_F, g_M, cos_M, cosine))
    mean = [float(np.mean(shares[i])) if shares[i] else math.nan for i in df["i"]]
    return mean, [len(shares[i]) for i in df["i"]]


def _histograms(df: pd.DataFrame, values: Mapping[int, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """Each kind of per-feature value (:data:`KIND_TITLES`) of every SAE binned alike."""
    frames = []
    for kind in KIND_TITLES:
        every = np.concatenate([v[kind] for v in values.values()] + [np.zeros(0)])
        lo, hi = (float(every.min()), float(every.max())) if every.size else (0.0, 1.0)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.05, hi + 0.05
        edges = np.linspace(lo, hi, N_BINS + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        for r in df.itertuples():
            v = values[r.i][kind]
            counts = np.histogram(v, bins=edges)[0]
            frames.append(pd.DataFrame({
                "dataset": r.dataset, "model": r.model, "layer": r.layer, "sae_id": r.sae_id, "kind": kind,
                "x": centres, "share": counts / max(len(v), 1),
            }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# The figure


def quality_chart(q: Quality, settings: QualitySettings, title: str, note: str = "") -> alt.VConcatChart:
    d = q.table.copy()
    d["panel"] = d["dataset"] + " · layer " + d["layer"].astype(str)
    d["status"] = np.where(d["failures"] == "", "passes", "fails a check")
    d["failures"] = d["failures"].replace("", "none")
    h = q.histograms.merge(d[["dataset", "model", "layer", "sae_id", "status"]])
    h["panel"] = h["dataset"] + " · layer " + h["layer"].astype(str)
    color = alt.Color("model:N", title="model")
    status = alt.Shape("status:N", title="SAE", scale=alt.Scale(domain=["passes", "fails a check"],
                                                                  range=["circle", "cross"]))  # fmt: skip
    tooltip = ["sae_id", "model", "seed", "l0", "fvu", "dead_fraction", "dense_fraction", "stability",
               "final_drop", "failures"]  # fmt: skip

    def per_sae(panel: str, field: str, label: str, threshold: float) -> alt.LayerChart:
        points = (
            alt.Chart(d[d["panel"] == panel])
            .mark_point(size=70, filled=True, opacity=0.8)
            .encode(
                x=alt.X("setting:N", title="SAE setting", axis=alt.Axis(labelAngle=-35, labelLimit=180)),
                xOffset=alt.XOffset("model:N"),
                y=alt.Y(f"{field}:Q", title=label),
                color=color,
                shape=status,
                tooltip=tooltip,
            )
        )
        rule = (
            alt.Chart(pd.DataFrame({"y": [threshold]}))
            .mark_rule(strokeDash=[4, 3], color="#b00")
            .encode(y="y:Q")
        )
        return alt.layer(points, rule).properties(width=170, height=150)

    def histogram(panel: str, kind: str) -> alt.Chart:
        return (
            alt.Chart(h[(h["kind"] == kind) & (h["panel"] == panel)])
            .mark_line(interpolate="step", opacity=0.7)
            .encode(
                x=alt.X("x:Q", title=KIND_TITLES[kind]),
                y=alt.Y("share:Q", title="share of features"),
                color=color,
                strokeDash=alt.StrokeDash("status:N", title="SAE", scale=alt.Scale(
                    domain=["passes", "fails a check"], range=[[1, 0], [4, 2]])),
                detail="sae_id:N",
            )
            .properties(width=170, height=150)
        )  # fmt: skip

    s = settings
    metrics = [
        ("stability", f"stability (share matched, cos ≥ {s.stability_cosine:g})", s.min_stability),
        ("dead_fraction", "dead fraction (on the sample)", s.max_dead),
        ("dense_fraction", "dense fraction", s.max_dense),
        ("final_drop", "final loss drop (tail of the log)", s.max_final_drop),
    ]
    rows = [
        alt.hconcat(*(per_sae(p, *m) for m in metrics), *(histogram(p, k) for k in KIND_TITLES)).properties(
            title=p
        )
        for p in sorted(d["panel"].unique())
    ]
    return alt.vconcat(*rows).properties(title=charts.title(title, note)).resolve_scale(shape="shared")


def write_quality(
    sae_dirs: Sequence[str | os.PathLike],
    stores: Mapping[tuple[str, str, int], str | os.PathLike],
    csv_path: str | os.PathLike,
    pdf_path: str | os.PathLike,
    settings: QualitySettings,
    dense_threshold: float,
    title: str,
    note: str = "",
    device: str = "cpu",
) -> Quality:
    q = quality_table(sae_dirs, stores, settings, dense_threshold, device)
    atomic_write(csv_path, lambda p: q.table.to_csv(p, index=False, float_format="%.6g"))
    charts.save(quality_chart(q, settings, title, note), pdf_path)
    return q
