"""Blinded human ratings of sampled SAE features: the sample, the raters' files, agreement and precision.

**Rating label.** A feature's rating label is ``trait`` when its concept table's ``trait`` column is true
(finding 2's statistic), else its ``label``. A feature is live when ``n_top > 0`` and its label is not
``dead``.

**The sample** (:func:`draw_sample`). For each (dataset, model, rating label) with the label in
``settings.labels``: ``min(per_label, available)`` live features drawn uniformly without replacement from all
SAEs of that (dataset, model) in the given concept tables. For each (dataset, model):
``catch_per_model`` live features of the null sweep's tables (``catch_tables``) as catch trials, label
``catch``. Each group draws from ``default_rng([seed, crc32(group)])``, so adding a group leaves the other
groups' draws as they were. All trials are then shuffled with ``default_rng(seed)`` and numbered ``t0001``,
``t0002``, ... in that order, so a trial id says nothing about its feature. ``sample_id``: the first 12 hex
digits of the sha256 of the canonical JSON of the seed and the drawn (trial, place, feature) list.

**Rating files** (exported by ``rate.html``, one per rater)::

    {"format": "vitsae-ratings", "version": 1, "rater": "alice", "sample_id": "<12 hex>",
     "exported": "<ISO time>", "ratings": [{"trial": "t0003", "category": "text", "note": ""}, ...]}

**Agreement** (:func:`agreement`). Cohen's κ per pair of raters over the trials both rated,
κ = (p_o − p_e)/(1 − p_e) with p_e from each rater's own category shares; Fleiss' κ over the trials every
rater rated (with two raters or more). NaN where p_e = 1 (every rating the same category). Catch trials count.

**Precision** (:func:`precision_table`). Per rated trial, p_f = the share of its ratings whose category
confirms its label (``settings.correct[label]``; for a catch trial ``settings.catch_category``). A group's
precision = the mean of p_f over its rated trials (every trial weighs the same, however many raters rated
it), with a 95% percentile bootstrap interval over those trials (``n_boot`` draws, NaN below two trials).
``label_share``: the share of the (dataset, model)'s live features (pooled over its SAEs in the sample's
concept tables) with the label; ``corrected_share`` = label_share × precision (and its bounds likewise).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from vitsae.analysis.settings import RatingSettings
from vitsae.atomic import atomic_write

log = logging.getLogger("vitsae.ratings")

SAMPLE_COLUMNS = ["trial", "sample_id", "seed", "dataset", "model", "layer", "sweep", "sae_id", "feature", "label",
                  "catch", "n_available"]  # fmt: skip
PLACE = ["dataset", "model", "layer", "sweep", "sae_id", "feature"]
NEEDED = ["sae_id", "dataset", "model", "layer", "sweep", "feature", "n_top", "label", "trait"]
AGREEMENT_COLUMNS = ["kind", "raters", "n_raters", "n_items", "kappa"]
PRECISION_COLUMNS = ["dataset", "model", "label", "n_sampled", "n_available", "n_rated", "n_ratings", "precision",
                     "ci_low", "ci_high", "label_share", "corrected_share", "corrected_low", "corrected_high", "note"]  # fmt: skip
RATING_FORMAT, RATING_VERSION = "vitsae-ratings", 1


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV with only empty cells missing (a sweep or model named "null" or "NA" stays a name)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def read_tables(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The concept tables concatenated, each with its rating label; live features only flagged ``live``."""
    parts = []
    for p in paths:
        t = read_csv(p)
        missing = [c for c in NEEDED if c not in t.columns]
        if missing:
            raise ValueError(
                f"concept table {p} lacks columns {missing}; rerun the concepts rule that makes it"
            )
        parts.append(t[NEEDED])
    if not parts:
        return pd.DataFrame(columns=[*NEEDED, "rating_label", "live"])
    t = pd.concat(parts, ignore_index=True)
    trait = t["trait"].fillna(False).astype(str).str.lower().isin(["true", "1"])
    t["rating_label"] = np.where(trait, "trait", t["label"].astype(str))
    t["live"] = (t["n_top"].fillna(0) > 0) & (t["label"].astype(str) != "dead")
    return t


def _rng(seed: int, key: tuple) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(json.dumps([str(k) for k in key]).encode())])


def _draw(rows: pd.DataFrame, n: int, seed: int, key: tuple) -> pd.DataFrame:
    rows = rows.sort_values(["sae_id", "feature"]).reset_index(drop=True)
    take = min(n, len(rows))
    pick = np.sort(_rng(seed, key).choice(len(rows), size=take, replace=False)) if take else np.array([], int)
    return rows.iloc[pick]


def draw_sample(tables: Sequence[str | os.PathLike], catch_tables: Sequence[str | os.PathLike],
                settings: RatingSettings) -> pd.DataFrame:  # fmt: skip
    """The sample's key (module docstring), columns :data:`SAMPLE_COLUMNS`."""
    observed = read_tables(tables)
    observed = observed[observed["live"]]
    drawn = []
    for (d, m), group in sorted(observed.groupby(["dataset", "model"]), key=lambda kv: kv[0]):
        for label in settings.labels:
            rows = group[group["rating_label"] == label]
            if not len(rows):
                continue
            part = _draw(rows, settings.per_label, settings.seed, (d, m, label))
            drawn.append(part.assign(label=label, catch=False, n_available=len(rows)))
    null = read_tables(catch_tables)
    null = null[null["live"]]
    for (d, m), group in sorted(null.groupby(["dataset", "model"]), key=lambda kv: kv[0]):
        if settings.catch_per_model == 0:
            break
        part = _draw(group, settings.catch_per_model, settings.seed, (d, m, "catch"))
        drawn.append(part.assign(label="catch", catch=True, n_available=len(group)))
    if not drawn:
        return pd.DataFrame(columns=SAMPLE_COLUMNS)
    sample = pd.concat(drawn, ignore_index=True)
    order = np.random.default_rng(int(settings.seed)).permutation(len(sample))
    sample = sample.iloc[order].reset_index(drop=True)
    sample["trial"] = [f"t{i + 1:04d}" for i in range(len(sample))]
    sample["seed"] = int(settings.seed)
    sample["layer"] = sample["layer"].astype(int)
    sample["feature"] = sample["feature"].astype(int)
    canon = [int(settings.seed), [[t, d, m, int(la), s, i, int(f)] for t, d, m, la, s, i, f in
                                  sample[["trial", *PLACE]].itertuples(index=False)]]  # fmt: skip
    sample["sample_id"] = hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()[:12]
    return sample[SAMPLE_COLUMNS]


def write_sample(tables, catch_tables, settings: RatingSettings, out_csv) -> pd.DataFrame:
    sample = draw_sample(tables, catch_tables, settings)
    atomic_write(out_csv, lambda p: sample.to_csv(p, index=False))
    log.info("rating sample: %d trials (%d catch), seed %d", len(sample), int(sample["catch"].sum()) if len(sample)
             else 0, settings.seed)  # fmt: skip
    return sample


# ---------------------------------------------------------------------------------------------
# Raters' files


def read_ratings(
    paths: Sequence[str | os.PathLike], sample: pd.DataFrame, categories: Sequence[str]
) -> pd.DataFrame:
    """Every rating of every file (columns rater, trial, category, note), checked against the sample."""
    trials = set(sample["trial"])
    sample_id = str(sample["sample_id"].iat[0]) if len(sample) else ""
    rows, raters = [], {}
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text())
        except ValueError as e:
            raise ValueError(
                f"ratings file {path} is not valid JSON ({e}); export it again from rate.html"
            ) from e
        if (
            not isinstance(doc, dict)
            or doc.get("format") != RATING_FORMAT
            or doc.get("version") != RATING_VERSION
        ):
            raise ValueError(f"ratings file {path} is not a {RATING_FORMAT} version {RATING_VERSION} file; "
                             "export it again from rate.html")  # fmt: skip
        if str(doc.get("sample_id")) != sample_id:
            raise ValueError(f"ratings file {path} was rated on sample {doc.get('sample_id')}, but this run's sample "
                             f"is {sample_id}: it belongs to another sample; rate this run's rate.html and export "
                             "again")  # fmt: skip
        rater = str(doc.get("rater") or "")
        if not rater:
            raise ValueError(f"ratings file {path} names no rater")
        if rater in raters:
            raise ValueError(
                f"ratings files {raters[rater]} and {path} are both by rater {rater!r}; keep one"
            )
        raters[rater] = path
        seen = set()
        for r in doc.get("ratings", []):
            trial, category = r.get("trial"), r.get("category")
            if trial not in trials:
                raise ValueError(
                    f"ratings file {path}: trial {trial!r} is not in this run's sample {sample_id}"
                )
            if trial in seen:
                raise ValueError(
                    f"ratings file {path}: trial {trial} is rated twice; export it again from rate.html"
                )
            if category not in categories:
                raise ValueError(f"ratings file {path}: trial {trial} has category {category!r}, not one of "
                                 f"rating.categories {list(categories)}")  # fmt: skip
            seen.add(trial)
            rows.append(
                {"rater": rater, "trial": trial, "category": category, "note": str(r.get("note") or "")}
            )
    return pd.DataFrame(rows, columns=["rater", "trial", "category", "note"])


# ---------------------------------------------------------------------------------------------
# Agreement


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's κ of two raters' categories for the same items."""
    if len(a) != len(b):
        raise ValueError(f"Cohen's kappa needs the same items: {len(a)} and {len(b)} ratings")
    if not len(a):
        return float("nan")
    a, b = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    p_o = float(np.mean(a == b))
    cats = set(a) | set(b)
    p_e = sum(float(np.mean(a == c)) * float(np.mean(b == c)) for c in cats)
    return float("nan") if np.isclose(p_e, 1.0) else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(counts_NC: np.ndarray) -> float:
    """Fleiss' κ of ``N`` items × ``C`` categories rating counts, every item rated by the same ``n`` ≥ 2."""
    counts_NC = np.asarray(counts_NC, dtype=np.float64)
    n_N = counts_NC.sum(1)
    if not len(counts_NC) or not np.all(n_N == n_N[0]) or n_N[0] < 2:
        raise ValueError("Fleiss' kappa needs every item rated by the same number (at least 2) of raters")
    n = n_N[0]
    p_C = counts_NC.sum(0) / counts_NC.sum()
    P_N = ((counts_NC**2).sum(1) - n) / (n * (n - 1))
    P_e = float((p_C**2).sum())
    return float("nan") if np.isclose(P_e, 1.0) else (float(P_N.mean()) - P_e) / (1 - P_e)


def agreement(ratings: pd.DataFrame, categories: Sequence[str] | None = None) -> pd.DataFrame:
    """One ``cohen`` row per pair of raters and one ``fleiss`` row over all (:data:`AGREEMENT_COLUMNS`);
    empty with fewer than two raters."""
    raters = sorted(ratings["rater"].unique())
    rows = []
    by = {r: ratings[ratings["rater"] == r].set_index("trial")["category"] for r in raters}
    for a, b in itertools.combinations(raters, 2):
        common = sorted(set(by[a].index) & set(by[b].index))
        rows.append({"kind": "cohen", "raters": f"{a}|{b}", "n_raters": 2, "n_items": len(common),
                     "kappa": cohen_kappa(by[a][common].tolist(), by[b][common].tolist())})  # fmt: skip
    if len(raters) >= 2:
        common = sorted(set.intersection(*(set(by[r].index) for r in raters)))
        cats = list(categories) if categories is not None else sorted(ratings["category"].unique())
        counts = np.array([[sum(by[r][t] == c for r in raters) for c in cats] for t in common])
        rows.append({"kind": "fleiss", "raters": "|".join(raters), "n_raters": len(raters), "n_items": len(common),
                     "kappa": fleiss_kappa(counts) if len(common) else float("nan")})  # fmt: skip
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Precision


def label_shares(tables: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Per (dataset, model) and rating label: live features pooled over SAEs, count and share. ``trait``
    counts the trait column; the other labels count ``label`` (so a trait feature also counts under its
    label here, as it does in the findings)."""
    t = read_tables(tables)
    t = t[t["live"]]
    rows = []
    for (d, m), g in t.groupby(["dataset", "model"]):
        n_live = len(g)
        trait = g["rating_label"] == "trait"
        counts = g["label"].astype(str).value_counts().to_dict()
        counts["trait"] = int(trait.sum())
        for label, c in sorted(counts.items()):
            rows.append({"dataset": d, "model": m, "label": label, "n_live": n_live, "count": int(c),
                         "share": c / n_live if n_live else float("nan")})  # fmt: skip
    return pd.DataFrame(rows, columns=["dataset", "model", "label", "n_live", "count", "share"])


def precision_table(sample: pd.DataFrame, ratings: pd.DataFrame, shares: pd.DataFrame,
                    settings: RatingSettings) -> pd.DataFrame:  # fmt: skip
    """One row per (dataset, model, label) of the sample, catch groups included (:data:`PRECISION_COLUMNS`)."""
    correct = {k: set(v) for k, v in settings.correct}
    per_trial = ratings.merge(sample[["trial", "label"]], on="trial")
    hit = [
        (cat == settings.catch_category) if label == "catch" else (cat in correct.get(label, set()))
        for cat, label in zip(per_trial["category"], per_trial["label"])
    ]
    per_trial = per_trial.assign(hit=np.asarray(hit, dtype=float))
    p_f = per_trial.groupby("trial")["hit"].mean()
    n_r = per_trial.groupby("trial").size()
    share = (
        shares.set_index(["dataset", "model", "label"])["share"] if len(shares) else pd.Series(dtype=float)
    )
    rows = []
    for (d, m, label), g in sample.groupby(["dataset", "model", "label"], sort=True):
        rated = [t for t in g["trial"] if t in p_f.index]
        values = p_f[rated].to_numpy(dtype=float)
        note = ""
        if label != "catch" and label not in correct:
            prec = lo = hi = float("nan")
            note = f"no categories confirm label {label!r} (rating.correct)"
        elif not len(values):
            prec = lo = hi = float("nan")
        else:
            prec = float(values.mean())
            lo = hi = float("nan")
            if len(values) >= 2:
                rng = np.random.default_rng([int(settings.seed), zlib.crc32(f"{d}|{m}|{label}".encode())])
                boot = values[rng.integers(0, len(values), (settings.n_boot, len(values)))].mean(1)
                lo, hi = (float(x) for x in np.quantile(boot, [0.025, 0.975]))
        s = float(share.get((d, m, label), float("nan"))) if label != "catch" else float("nan")
        rows.append({"dataset": d, "model": m, "label": label, "n_sampled": len(g),
                     "n_available": int(g["n_available"].iat[0]), "n_rated": len(rated),
                     "n_ratings": int(n_r[rated].sum()) if rated else 0, "precision": prec, "ci_low": lo,
                     "ci_high": hi, "label_share": s, "corrected_share": s * prec, "corrected_low": s * lo,
                     "corrected_high": s * hi, "note": note})  # fmt: skip
    return pd.DataFrame(rows, columns=PRECISION_COLUMNS)


def claim_columns(precision: pd.DataFrame, dataset: str, label: str, favoured: str, other: str) -> dict:
    """The claims table's rating columns for one comparison: each arm's precision and corrected share of
    ``label`` on ``dataset``, and the trials rated for both (NaN / 0 where nothing was rated)."""
    out = {"n_rated": 0}
    for side, model in (("favoured", favoured), ("other", other)):
        row = precision[(precision["dataset"] == dataset) & (precision["model"] == model)
                        & (precision["label"] == label)]  # fmt: skip
        out[f"precision_{side}"] = float(row["precision"].iat[0]) if len(row) else float("nan")
        out[f"corrected_{side}"] = float(row["corrected_share"].iat[0]) if len(row) else float("nan")
    rows = precision[(precision["dataset"] == dataset) & (precision["label"] == label)
                     & precision["model"].isin({favoured, other})]  # fmt: skip
    out["n_rated"] = int(rows["n_rated"].sum())
    return {k: out[k] for k in ("precision_favoured", "precision_other", "corrected_favoured", "corrected_other",
                                "n_rated")}  # fmt: skip


def write_ratings(sample_csv, rating_files: Sequence[str | os.PathLike], tables: Sequence[str | os.PathLike],
                  settings: RatingSettings, out_csv, out_agreement_csv) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Rule ratings: the precision table and the agreement table, each written atomically."""
    sample = read_csv(sample_csv)
    ratings = read_ratings(rating_files, sample, settings.categories)
    prec = precision_table(sample, ratings, label_shares(tables), settings)
    agree = agreement(ratings, settings.categories)
    atomic_write(out_csv, lambda p: prec.to_csv(p, index=False, float_format="%.6g"))
    atomic_write(out_agreement_csv, lambda p: agree.to_csv(p, index=False, float_format="%.6g"))
    log.info("ratings: %d files, %d ratings of %d trials", len(rating_files), len(ratings), len(sample))
    return prec, agree
