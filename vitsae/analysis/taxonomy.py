"""Taxonomic agreement of a set of iNat2021 images (e.g. a feature's top images).

Works on manifest rows (``vitsae.data.manifest``: inat2021 manifests carry the columns ``kingdom, phylum,
class, order, family, genus, species``, species being ``"Genus epithet"``). A clade at a rank is named by
its whole lineage from the kingdom down (``Animalia/Chordata/Aves/...``), so two genera of the same name
in different families never count as one.

* ``purity(taxa, rank)``: the share of the images that belong to the most common clade at ``rank``
  (1.0 = all in one clade; ties do not matter, only the count).
* ``deepest_agreeing_rank(taxa, min_purity)``: the finest rank (species first, kingdom last) whose purity
  is at least ``min_purity``; ``None`` when not even the kingdom reaches it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

RANKS = ("species", "genus", "family", "order", "class", "phylum", "kingdom")  # fine → coarse
_TOP_DOWN = tuple(reversed(RANKS))


def _check(taxa: pd.DataFrame) -> None:
    missing = [r for r in RANKS if r not in taxa.columns]
    if missing:
        raise KeyError(
            f"taxonomy columns {missing} are missing (have {list(taxa.columns)}); pass rows of an inat2021 "
            "manifest (vitsae.data.manifest, format: inat2021)"
        )


def clade_keys(taxa: pd.DataFrame, rank: str) -> np.ndarray:
    """Per row, the lineage from kingdom down to ``rank`` joined by '/' (object array of str)."""
    _check(taxa)
    if rank not in RANKS:
        raise ValueError(f"rank {rank!r} is not one of {RANKS}")
    columns = _TOP_DOWN[: _TOP_DOWN.index(rank) + 1]
    return taxa[list(columns)].astype(str).agg("/".join, axis=1).to_numpy()


def purity(taxa: pd.DataFrame, rank: str) -> float:
    """Share of the rows in the most common clade at ``rank``; NaN for no rows."""
    if len(taxa) == 0:
        return float("nan")
    _, counts = np.unique(clade_keys(taxa, rank), return_counts=True)
    return float(counts.max() / len(taxa))


def purities(taxa: pd.DataFrame, ranks: Sequence[str] = RANKS) -> dict[str, float]:
    return {r: purity(taxa, r) for r in ranks}


def deepest_agreeing_rank(taxa: pd.DataFrame, min_purity: float = 1.0) -> str | None:
    """Finest rank whose purity is at least ``min_purity`` (purity only grows towards the kingdom)."""
    for rank in RANKS:
        if purity(taxa, rank) >= min_purity:
            return rank
    return None


def n_clades(taxa: pd.DataFrame, rank: str) -> int:
    """Number of distinct clades at ``rank`` among the rows."""
    return len(np.unique(clade_keys(taxa, rank))) if len(taxa) else 0
