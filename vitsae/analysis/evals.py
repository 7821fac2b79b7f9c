"""The SAEs' evaluations (:mod:`vitsae.sae.evaluate`, one JSON per SAE and evaluated dataset) as one tidy
table: the transfer table and the Pareto plot both start from it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import pandas as pd

from vitsae.sae.settings import split_seed

COLUMNS = ["model", "layer", "sweep", "sae_id", "setting", "seed", "train_dataset", "eval_dataset", "eval_split",
           "in_domain", "fvu", "mse", "l0", "dead_pct", "dense_pct", "n_tokens"]  # fmt: skip


def evaluation_table(eval_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per evaluation JSON (:data:`COLUMNS`, in the files' order): the SAE (its setting and seed from
    its id), the datasets it was trained and evaluated on, and the metrics (dead and dense as percent)."""
    rows = []
    for path in eval_paths:
        with open(path) as f:
            rec = json.load(f)
        setting, seed = split_seed(rec["sae_id"])
        rows.append({
            "model": rec["model"], "layer": int(rec["layer"]), "sweep": rec["sweep"], "sae_id": rec["sae_id"],
            "setting": setting, "seed": seed, "train_dataset": rec["train_dataset"],
            "eval_dataset": rec["eval_dataset"], "eval_split": rec["eval_split"],
            "in_domain": rec["train_dataset"] == rec["eval_dataset"], "fvu": float(rec["fvu"]),
            "mse": float(rec["mse"]), "l0": float(rec["l0"]), "dead_pct": 100.0 * float(rec["dead_fraction"]),
            "dense_pct": 100.0 * float(rec["dense_fraction"]), "n_tokens": int(rec["n_tokens"]),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)
