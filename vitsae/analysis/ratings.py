"""Blinded human ratings of sampled SAE features: the sample, the raters' files, agreement and precision.

A browser page (``results/browser/rate.html``) shows each sampled feature's top images, without the model,
SAE or label; a rater picks one of ``rating.categories`` per feature and exports a JSON file. This module
draws the sample and writes its key (rule ``rating_sample``), then reads the raters' files and scores them
(rule ``ratings``).

**Rating label** (:func:`rating_label`, vectorised :func:`rating_labels`). A feature's rating label is
``"trait"`` when its concept table's ``trait`` column is true (finding 2's statistic), else its ``label``.
A feature is *live* (:func:`live_features`) when ``n_top > 0`` and its label is not ``"dead"``.

**The sample** (:func:`draw_sample`). Each (dataset, model, rating label) with the label in
``settings.labels`` is a group; it draws ``min(per_label, n_available)`` of its ``n_available`` live
features, uniformly without replacement, pooled over every SAE (and layer, sweep) of that (dataset, model)
in the given concept tables. Each (dataset, model) of the null sweep's tables (``catch_tables``) is a catch
group: ``min(catch_per_model, n_available)`` of its live features, any label, rating label ``"catch"``,
``catch=True``. A group draws with ``default_rng([seed, crc32(json.dumps(key))])`` from its candidates sorted
by (layer, sweep, sae_id, feature), ``key`` being ``[dataset, model, label]`` as strings: the draw depends on
nothing but the seed, the group and its candidates, so adding a group (a model, a label, a table of another
model) leaves the other groups' draws as they were. All trials are then put in the order
``default_rng(seed).permutation`` gives and numbered ``t0001``, ``t0002``, ... in that order, so a trial id
says nothing about its feature. ``sample_id`` (:func:`sample_digest`): the first 12 hex digits of the
sha256 of the compact JSON (``separators=(",", ":")``, ASCII) of ``[seed, [[trial, dataset, model, layer,
sweep, sae_id, feature], ...]]`` in trial order, strings but ``seed``, ``layer`` and ``feature``; it changes
whenever the drawn set, its order or the seed does, and every rater's file carries it.

**Rating files** (exported by ``rate.html``, one per rater; :func:`read_ratings`)::

    {"format": "vitsae-ratings", "version": 1, "rater": "alice", "sample_id": "<12 hex>",
     "exported": "<ISO time>", "ratings": [{"trial": "t0003", "category": "text", "note": ""}, ...]}

A file is refused, with a message naming it and what to do, when it is not JSON, not this format and
version, rated on another sample (another ``sample_id``), names no rater or the rater of another file, or has
a rating of an unknown trial, of a category outside ``rating.categories``, or of a trial it already rated. A
file with no ratings is fine: its rater contributes nothing.

**Agreement** (:func:`agreement`; :data:`AGREEMENT_COLUMNS`). Cohen's κ (:func:`cohen_kappa`) per pair of
raters over the trials both rated: κ = (p_o − p_e)/(1 − p_e), p_o the share of those trials both put in one
category, p_e = Σ_c a_c·b_c with a_c, b_c each rater's own share of category c. Fleiss' κ
(:func:`fleiss_kappa`) over the trials every rater rated, from the ``N × C`` counts of ratings per trial and
category, each trial rated by the same n ≥ 2: P_i = (Σ_c n_ic² − n)/(n(n − 1)), P̄ its mean, p_c =
Σ_i n_ic/(N n), P_e = Σ_c p_c², κ = (P̄ − P_e)/(1 − P_e). κ is NaN where p_e (P_e) = 1 (every rating in
one category) or no trial qualifies; ``note`` says why. Catch trials count like the others. With fewer than
two raters the table has one ``fleiss`` row with NaN κ and a note (so it is never an empty file).

**Precision** (:func:`precision_table`; :data:`PRECISION_COLUMNS`). Per rated trial, p_f = the share of its
ratings whose category confirms its label (``settings.correct[label]``; for a catch trial
``settings.catch_category``). A group's ``precision`` = the mean of p_f over its rated trials (every trial
weighs the same, however many raters rated it); its 95% interval is the 2.5th and 97.5th percentiles of
``n_boot`` means of those trials resampled with replacement, drawn by ``default_rng([seed, crc32(key)])``
(``key`` as in the sample, so one group's interval does not depend on the others); NaN below two rated
trials. A label with no entry in ``settings.correct`` gets NaN precision and a ``note``. ``label_share``
(:func:`label_shares`): of the (dataset, model)'s live features, pooled over its SAEs in the sampled concept
tables, the share whose ``trait`` column is true (label ``trait``) or whose ``label`` is the label (every
other label; a trait feature counts under its ``label`` too, as in the findings' shares).
``corrected_share`` = label_share × precision, its bounds label_share × ci_low, label_share × ci_high. A
catch group has no label share (NaN). With no ratings every group is still there, ``n_rated`` 0, NaN
precision.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from vitsae.analysis.settings import RatingSettings
from vitsae.atomic import atomic_write

log = logging.getLogger("vitsae.ratings")

PathLike = str | os.PathLike

#: The sample's key (rating_sample.csv), in this order.
SAMPLE_COLUMNS = ["trial", "sample_id", "seed", "dataset", "model", "layer", "sweep", "sae_id", "feature",
                  "label", "catch", "n_available"]  # fmt: skip
#: Where a feature lives: what the sample_id hashes, after the trial.
PLACE = ["dataset", "model", "layer", "sweep", "sae_id", "feature"]
#: The concept-table columns this module reads.
NEEDED = ["sae_id", "dataset", "model", "layer", "sweep", "feature", "n_top", "label", "trait"]
#: Columns read as text whatever they look like (a sample_id of 12 digits, a model named "NA").
TEXT = {c: str for c in ("trial", "sample_id", "dataset", "model", "sweep", "sae_id", "label")}
RATING_COLUMNS = ["rater", "trial", "category", "note"]
AGREEMENT_COLUMNS = ["kind", "raters", "n_raters", "n_items", "kappa", "note"]
SHARE_COLUMNS = ["dataset", "model", "label", "n_live", "count", "share"]
PRECISION_COLUMNS = ["dataset", "model", "label", "n_sampled", "n_available", "n_rated", "n_ratings",
                     "precision", "ci_low", "ci_high", "label_share", "corrected_share", "corrected_low",
                     "corrected_high", "note"]  # fmt: skip
CLAIM_KEYS = ("precision_favoured", "precision_other", "corrected_favoured", "corrected_other", "n_rated")
RATING_FORMAT, RATING_VERSION = "vitsae-ratings", 1
CATCH = "catch"
PAGE = "this run's results/browser/rate.html"
_TRUE = ("true", "1", "1.0", "yes")


# ---------------------------------------------------------------------------------------------
# Concept tables


def read_csv(path: PathLike) -> pd.DataFrame:
    """A CSV with only empty cells missing and the :data:`TEXT` columns as text."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=TEXT)


def _is_true(value: object) -> bool:
    return str(value).strip().lower() in _TRUE


def rating_label(row: Mapping) -> str:
    """One feature's rating label: ``"trait"`` if its ``trait`` is true, else its ``label``."""
    return "trait" if _is_true(row["trait"]) else str(row["label"])


def trait_mask(table: pd.DataFrame) -> pd.Series:
    """The ``trait`` column as booleans (``True``/``true``/``1``; missing is false)."""
    return table["trait"].astype(str).str.strip().str.lower().isin(_TRUE)


def rating_labels(table: pd.DataFrame) -> pd.Series:
    """:func:`rating_label` of every row."""
    label = table["label"].astype(object).where(table["label"].notna(), "").astype(str)
    return label.where(~trait_mask(table), "trait")


def live_features(table: pd.DataFrame) -> pd.Series:
    """Live rows: ``n_top > 0`` and a label other than ``"dead"``."""
    n_top = pd.to_numeric(table["n_top"], errors="coerce").fillna(0)
    return (n_top > 0) & (table["label"].astype(str) != "dead")


def read_tables(paths: Sequence[PathLike], what: str = "concept table") -> pd.DataFrame:
    """The concept tables' :data:`NEEDED` columns concatenated, plus ``rating_label`` and ``live``."""
    parts = []
    for p in paths:
        try:
            t = read_csv(p)
        except pd.errors.EmptyDataError as e:
            raise ValueError(f"{what} {p} is empty; rerun the concepts rule that makes it") from e
        missing = [c for c in NEEDED if c not in t.columns]
        if missing:
            raise ValueError(f"{what} {p} lacks columns {missing} (it has {list(t.columns)}); rerun the "
                             "concepts rule that makes it")  # fmt: skip
        parts.append(t[NEEDED])
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in [*NEEDED, "rating_label", "live"]})
    t = pd.concat(parts, ignore_index=True)
    t["layer"] = t["layer"].astype(int)
    t["feature"] = t["feature"].astype(int)
    t["rating_label"] = rating_labels(t)
    t["live"] = live_features(t)
    return t


# ---------------------------------------------------------------------------------------------
# The sample


def group_rng(seed: int, key: Sequence) -> np.random.Generator:
    """The generator of one group (``key``: dataset, model, label): ``default_rng([seed, crc32(key)])``."""
    return np.random.default_rng([int(seed), zlib.crc32(json.dumps([str(k) for k in key]).encode())])


def _draw(candidates: pd.DataFrame, n: int, seed: int, key: tuple) -> pd.DataFrame:
    """``min(n, len(candidates))`` rows without replacement, independent of the candidates' order."""
    order = ["layer", "sweep", "sae_id", "feature"]
    rows = candidates.sort_values(order, kind="stable").reset_index(drop=True)
    take = min(n, len(rows))
    pick_K = np.sort(group_rng(seed, key).choice(len(rows), size=take, replace=False)) if take else []
    return rows.iloc[pick_K]


def sample_digest(seed: int, trials: pd.DataFrame) -> str:
    """The ``sample_id`` of trials (columns ``trial`` and :data:`PLACE`, any order; module docstring)."""
    t = trials.sort_values("trial")
    places = t[["trial", *PLACE]].itertuples(index=False)
    canon = [int(seed), [[str(tr), str(d), str(m), int(la), str(s), str(i), int(f)]
                         for tr, d, m, la, s, i, f in places]]  # fmt: skip
    return hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()[:12]


def draw_sample(tables: Sequence[PathLike], catch_tables: Sequence[PathLike],
                settings: RatingSettings) -> pd.DataFrame:  # fmt: skip
    """The sample's key (module docstring): one row per trial, columns :data:`SAMPLE_COLUMNS`, in trial
    order. ``tables``: the observed concept tables; ``catch_tables``: the null sweep's."""
    seed = int(settings.seed)
    drawn = []
    observed = read_tables(tables)
    observed = observed[observed["live"].astype(bool)]  # (bool: an empty object column would select columns)
    for (d, m), group in observed.groupby(["dataset", "model"], sort=True):
        for label in dict.fromkeys(settings.labels):
            candidates = group[group["rating_label"] == label]
            if len(candidates):
                part = _draw(candidates, settings.per_label, seed, (d, m, label))
                drawn.append(part.assign(label=label, catch=False, n_available=len(candidates)))
    null = read_tables(catch_tables, "catch table")
    null = null[null["live"].astype(bool)]
    if settings.catch_per_model > 0:
        for (d, m), group in null.groupby(["dataset", "model"], sort=True):
            part = _draw(group, settings.catch_per_model, seed, (d, m, CATCH))
            drawn.append(part.assign(label=CATCH, catch=True, n_available=len(group)))
    if not drawn:
        log.warning(
            "rating sample: no live feature of labels %s in %d tables", list(settings.labels), len(tables)
        )
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SAMPLE_COLUMNS})
    sample = pd.concat(drawn, ignore_index=True)
    sample = sample.iloc[np.random.default_rng(seed).permutation(len(sample))].reset_index(drop=True)
    sample["trial"] = [f"t{i + 1:04d}" for i in range(len(sample))]
    sample["seed"] = seed
    sample["catch"] = sample["catch"].astype(bool)
    sample["sample_id"] = sample_digest(seed, sample)
    return sample[SAMPLE_COLUMNS]


def write_sample(tables: Sequence[PathLike], catch_tables: Sequence[PathLike], settings: RatingSettings,
                 out_csv: PathLike) -> pd.DataFrame:  # fmt: skip
    """Rule rating_sample: :func:`draw_sample` written atomically to ``out_csv``."""
    sample = draw_sample(tables, catch_tables, settings)
    atomic_write(out_csv, lambda p: sample.to_csv(p, index=False))
    n_catch = int(sample["catch"].sum()) if len(sample) else 0
    sid = sample["sample_id"].iat[0] if len(sample) else "-"
    log.info("rating sample %s: %d trials (%d catch), seed %d", sid, len(sample), n_catch, settings.seed)
    return sample


def read_sample(path: PathLike) -> pd.DataFrame:
    """The sample's key as :func:`write_sample` wrote it (``sample_id`` and ``trial`` kept as text)."""
    sample = read_csv(path)
    missing = [c for c in SAMPLE_COLUMNS if c not in sample.columns]
    if missing:
        raise ValueError(f"rating sample {path} lacks columns {missing}; rerun rule rating_sample")
    sample["catch"] = sample["catch"].map(_is_true).astype(bool)
    return sample


# ---------------------------------------------------------------------------------------------
# Raters' files


def _fail(path: PathLike, problem: str, todo: str) -> ValueError:
    return ValueError(f"ratings file {path}: {problem}; {todo}")


def read_ratings(paths: Sequence[PathLike], sample: pd.DataFrame, categories: Sequence[str]) -> pd.DataFrame:
    """Every rating of every file (columns :data:`RATING_COLUMNS`), each file checked against the sample
    (module docstring); a :class:`ValueError` naming the file otherwise."""
    trials = set(sample["trial"].astype(str))
    sample_id = str(sample["sample_id"].iat[0]) if len(sample) else ""
    allowed = list(categories)
    rows, raters = [], {}
    again = f"export it again from {PAGE}"
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as e:
            raise _fail(path, f"not valid JSON ({e})", again) from e
        fmt, version = (doc.get("format"), doc.get("version")) if isinstance(doc, dict) else (None, None)
        if fmt != RATING_FORMAT or version != RATING_VERSION or isinstance(version, bool):
            problem = (
                f"not a {RATING_FORMAT} version {RATING_VERSION} file (format {fmt!r}, version {version!r})"
            )
            raise _fail(path, problem, f'use the file that {PAGE}\'s "export ratings" saves')
        if str(doc.get("sample_id")) != sample_id:
            problem = (
                f"rated on sample {doc.get('sample_id')!r}, but this run's sample is {sample_id!r}: the file "
                "was rated on another sample (another seed, config or concept tables)"
            )
            raise _fail(path, problem, f"rate and re-export from {PAGE}, or move the file out of rating.dir")
        rater = doc.get("rater")
        if not isinstance(rater, str) or not rater.strip():
            raise _fail(path, "names no rater", f"{again}, entering a name")
        if rater in raters:
            raise ValueError(
                f"ratings files {raters[rater]} and {path} are both by rater {rater!r}; keep one, or rename "
                "the rater of one if they are two people"
            )
        raters[rater] = path
        items = doc.get("ratings", [])
        if not isinstance(items, list):
            raise _fail(path, f"'ratings' is a {type(items).__name__}, not a list", again)
        seen = set()
        for k, r in enumerate(items):
            if not isinstance(r, dict):
                raise _fail(path, f"rating {k} is a {type(r).__name__}, not an object", again)
            trial, category = r.get("trial"), r.get("category")
            if not isinstance(trial, str) or trial not in trials:
                raise _fail(path, f"trial {trial!r} is not in this run's sample {sample_id}", again)
            if trial in seen:
                raise _fail(path, f"trial {trial} is rated twice", f"{again} (one rating per trial)")
            if not isinstance(category, str) or category not in allowed:
                problem = f"trial {trial} has category {category!r}, not one of rating.categories {allowed}"
                raise _fail(path, problem, "rate it again, or add the category to rating.categories")
            seen.add(trial)
            note = r.get("note")
            rows.append([rater, trial, category, "" if note is None else str(note)])
        log.info("ratings file %s: rater %s, %d ratings", path, rater, len(seen))
    return pd.DataFrame(rows, columns=RATING_COLUMNS, dtype=object)


# ---------------------------------------------------------------------------------------------
# Agreement


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's κ of two raters' categories of the same items (NaN with no items or p_e = 1)."""
    if len(a) != len(b):
        raise ValueError(
            f"Cohen's kappa needs both raters' categories of the same items: {len(a)} and {len(b)}"
        )
    if not len(a):
        return float("nan")
    a_N, b_N = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    p_o = float(np.mean(a_N == b_N))
    p_e = sum(float(np.mean(a_N == c)) * float(np.mean(b_N == c)) for c in set(a_N) | set(b_N))
    return float("nan") if p_e >= 1 - 1e-12 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(counts_NC: np.ndarray) -> float:
    """Fleiss' κ of ``N`` items × ``C`` categories rating counts, every item rated by the same ``n`` ≥ 2
    raters (NaN where P_e = 1)."""
    counts_NC = np.asarray(counts_NC, dtype=np.float64)
    if counts_NC.ndim != 2 or not counts_NC.shape[0]:
        raise ValueError(
            f"Fleiss' kappa needs an items x categories count matrix, got shape {counts_NC.shape}"
        )
    n_N = counts_NC.sum(1)
    if not np.all(n_N == n_N[0]) or n_N[0] < 2:
        raise ValueError(f"Fleiss' kappa needs every item rated by the same number (at least 2) of raters; "
                         f"got {sorted(set(n_N.astype(int).tolist()))}")  # fmt: skip
    n = n_N[0]
    p_C = counts_NC.sum(0) / counts_NC.sum()
    P_N = ((counts_NC**2).sum(1) - n) / (n * (n - 1))
    P_e = float((p_C**2).sum())
    return float("nan") if P_e >= 1 - 1e-12 else (float(P_N.mean()) - P_e) / (1 - P_e)


def _why_nan(n_items: int) -> str:
    return "no trial rated by all of them" if not n_items else "every rating in one category: kappa undefined"


def agreement(ratings: pd.DataFrame, categories: Sequence[str] | None = None) -> pd.DataFrame:
    """One ``cohen`` row per pair of raters (sorted by name) and one ``fleiss`` row over all of them
    (:data:`AGREEMENT_COLUMNS`); with fewer than two raters only the ``fleiss`` row, NaN, with a note."""
    raters = sorted(ratings["rater"].unique())
    wide = ratings.pivot(index="trial", columns="rater", values="category") if raters else pd.DataFrame()
    rows = []
    for a, b in itertools.combinations(raters, 2):
        both = wide[[a, b]].dropna()
        kappa = cohen_kappa(both[a].tolist(), both[b].tolist())
        rows.append(
            ["cohen", f"{a}|{b}", 2, len(both), kappa, _why_nan(len(both)) if np.isnan(kappa) else ""]
        )
    every = wide.dropna() if raters else wide
    if len(raters) < 2:
        rows.append(["fleiss", "|".join(raters), len(raters), len(every), float("nan"),
                     f"{len(raters)} rater(s): agreement needs at least two"])  # fmt: skip
    else:
        cats = list(dict.fromkeys([*(categories or ()), *sorted(ratings["category"].unique())]))
        counts_NC = np.stack([(every == c).sum(axis=1).to_numpy() for c in cats], axis=1)
        kappa = fleiss_kappa(counts_NC) if len(every) else float("nan")
        rows.append(["fleiss", "|".join(raters), len(raters), len(every), kappa,
                     _why_nan(len(every)) if np.isnan(kappa) else ""])  # fmt: skip
    out = pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
    return out.astype({"n_raters": int, "n_items": int, "kappa": float})


# ---------------------------------------------------------------------------------------------
# Precision


def label_shares(tables: Sequence[PathLike]) -> pd.DataFrame:
    """Per (dataset, model) and label: its live features pooled over SAEs (``n_live``), how many carry the
    label (``count``; ``trait`` from the trait column, the others from ``label``) and their ``share``
    (:data:`SHARE_COLUMNS`)."""
    t = read_tables(tables)
    t = t[t["live"].astype(bool)]
    rows = []
    for (d, m), g in t.groupby(["dataset", "model"], sort=True):
        counts = g["label"].astype(str).value_counts().to_dict()
        counts["trait"] = int(trait_mask(g).sum())
        for label, c in sorted(counts.items()):
            rows.append([d, m, label, len(g), int(c), c / len(g)])
    return pd.DataFrame(rows, columns=SHARE_COLUMNS)


def _bootstrap(values_K: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """The 95% percentile interval of the mean of ``values_K`` over ``n_boot`` resamples."""
    if len(values_K) < 2:
        return float("nan"), float("nan")
    means_B = values_K[rng.integers(0, len(values_K), (n_boot, len(values_K)))].mean(1)
    lo, hi = np.quantile(means_B, [0.025, 0.975])
    return float(lo), float(hi)


def precision_table(sample: pd.DataFrame, ratings: pd.DataFrame, shares: pd.DataFrame,
                    settings: RatingSettings) -> pd.DataFrame:  # fmt: skip
    """One row per (dataset, model, label) of the sample, catch groups included (:data:`PRECISION_COLUMNS`;
    module docstring). ``shares``: :func:`label_shares` of the sample's concept tables."""
    correct = {label: set(cats) for label, cats in settings.correct}
    correct[CATCH] = {settings.catch_category}
    rated = ratings[["trial", "category"]].merge(sample[["trial", "label"]], on="trial")
    hit = [cat in correct.get(label, ()) for cat, label in zip(rated["category"], rated["label"])]
    by_trial = rated.assign(hit=np.asarray(hit, dtype=np.float64)).groupby("trial")["hit"]
    p_f, n_ratings = by_trial.mean(), by_trial.size()
    share = {
        (d, m, la): float(s)
        for d, m, la, s in shares[["dataset", "model", "label", "share"]].itertuples(index=False)
    }
    rows = []
    for (d, m, label), g in sample.groupby(["dataset", "model", "label"], sort=True):
        done = [t for t in g["trial"] if t in p_f.index]
        values_K = p_f[done].to_numpy(dtype=np.float64)
        prec = lo = hi = float("nan")
        note = f"null-sweep features: the share rated {settings.catch_category!r}" if label == CATCH else ""
        if label not in correct:
            note = f"no categories confirm label {label!r}: add it to rating.correct"
        elif len(values_K):
            prec = float(values_K.mean())
            lo, hi = _bootstrap(values_K, settings.n_boot, group_rng(settings.seed, (d, m, label)))
        s = float("nan") if label == CATCH else share.get((d, m, label), float("nan"))
        rows.append([d, m, label, len(g), int(g["n_available"].iat[0]), len(done), int(n_ratings[done].sum()),
                     prec, lo, hi, s, s * prec, s * lo, s * hi, note])  # fmt: skip
    return pd.DataFrame(rows, columns=PRECISION_COLUMNS)


def claim_columns(precision: pd.DataFrame, dataset: str, label: str, favoured: str, other: str) -> dict:
    """The claims table's rating columns of one comparison (:data:`CLAIM_KEYS`): each arm's model's
    precision and corrected share of ``label`` on ``dataset``, and the rated trials of that label of the two
    models (counted once when both arms are one model); NaN / 0 where absent."""
    rows = precision[(precision["dataset"] == dataset) & (precision["label"] == label)]
    out: dict = {}
    for side, model in (("favoured", favoured), ("other", other)):
        row = rows[rows["model"] == model]
        out[f"precision_{side}"] = float(row["precision"].iat[0]) if len(row) else float("nan")
        out[f"corrected_{side}"] = float(row["corrected_share"].iat[0]) if len(row) else float("nan")
    out["n_rated"] = int(rows.loc[rows["model"].isin({favoured, other}), "n_rated"].sum())
    return {k: out[k] for k in CLAIM_KEYS}


def write_ratings(sample_csv: PathLike, rating_files: Sequence[PathLike], tables: Sequence[PathLike],
                  settings: RatingSettings, out_csv: PathLike,
                  out_agreement_csv: PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Rule ratings: the precision table (``out_csv``) and the agreement table (``out_agreement_csv``) of
    the raters' files, each written atomically."""
    sample = read_sample(sample_csv)
    ratings = read_ratings(rating_files, sample, settings.categories)
    prec = precision_table(sample, ratings, label_shares(tables), settings)
    agree = agreement(ratings, settings.categories)
    atomic_write(out_csv, lambda p: prec.to_csv(p, index=False, float_format="%.6g"))
    atomic_write(out_agreement_csv, lambda p: agree.to_csv(p, index=False, float_format="%.6g"))
    fleiss = agree.loc[agree["kind"] == "fleiss", "kappa"]
    log.info("ratings: %d files, %d ratings of %d trials; Fleiss' kappa %.3f", len(rating_files),
             len(ratings), len(sample), fleiss.iat[0] if len(fleiss) else float("nan"))  # fmt: skip
    return prec, agree
