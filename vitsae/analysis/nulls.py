"""Null models of the concept labels: what the same labelling gives on random images.

* :func:`null_top_images`: each feature's firing top images replaced by as many distinct images drawn
  uniformly from the split (or from a pool), keeping the feature's own patch maps; the concept table of
  that is the *null table* (the rate at which the label rules alone produce each label by chance).
* Finding 2's statistic is a share *among animal features*, and random split images are rarely all
  animals, so its null is drawn apart (:func:`with_animal_null`): the same features as the observed
  denominator, each with random images of animal classes.
* :func:`inat_animal`: the iNat table's ``animal`` column (a feature whose top images are Animalia).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def null_top_images(top_image_FK: np.ndarray, n_images: int, seed: int | Sequence[int] = 0,
                    pool: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The null model's top images: each feature's firing slots (``>= 0``) refilled, in place, with as
    many distinct images drawn uniformly from ``range(n_images)`` (``default_rng(seed)``, features in
    order), or from the split positions ``pool`` when given (a feature with more top images than the
    pool holds gets the whole pool, its last slots left empty); padding (-1) stays. Run the concept
    labelling on the result with the feature's own maps."""
    top_image_FK = np.asarray(top_image_FK)
    out_FK = np.full_like(top_image_FK, -1)
    rng = np.random.default_rng(seed)
    firing_FK = top_image_FK >= 0
    n_F = firing_FK.sum(axis=1)
    if pool is None and n_F.max(initial=0) > n_images:
        raise ValueError(f"a feature has {n_F.max()} top images but the split has only {n_images} images")
    source = np.arange(n_images) if pool is None else np.asarray(pool, dtype=np.int64)
    for f in np.nonzero(n_F)[0]:
        m = min(int(n_F[f]), len(source))
        out_FK[f, np.nonzero(firing_FK[f])[0][:m]] = source[rng.choice(len(source), size=m, replace=False)]
    return out_FK


def with_animal_null(null_table: pd.DataFrame, observed_animal_F: np.ndarray,
                     animal_null_table: pd.DataFrame) -> pd.DataFrame:  # fmt: skip
    """Finding 2's null columns: ``animal`` becomes the *observed* feature's (the statistic's denominator
    is the same features in both tables) and ``trait`` the labelling of random *animal* images
    (``animal_null_table``, one row per observed animal feature, in feature order). The rest of the null
    table (labels for finding 1) keeps its draw from the whole split."""
    observed_animal_F = np.asarray(observed_animal_F, dtype=bool)
    if len(animal_null_table) != observed_animal_F.sum():
        raise ValueError(
            f"{len(animal_null_table)} animal-null rows for {observed_animal_F.sum()} animal features"
        )
    out = null_table.copy()
    out["animal"] = observed_animal_F
    trait_F = np.zeros(len(out), dtype=bool)
    trait_F[observed_animal_F] = animal_null_table["trait"].fillna(False).astype(bool).to_numpy()
    out["trait"] = trait_F
    return out


def inat_animal(
    top_image_FK: np.ndarray, kingdom_N: np.ndarray, n_top: int | None = None, min_share: float = 0.9
) -> np.ndarray:
    """Per feature, whether at least ``min_share`` of its firing top images (the first ``n_top``) are
    Animalia (``kingdom_N``: the manifest's ``kingdom`` per split image): the iNat table's ``animal``."""
    top_FK = np.asarray(top_image_FK) if n_top is None else np.asarray(top_image_FK)[:, :n_top]
    firing_FK = top_FK >= 0
    animal_FK = (np.asarray(kingdom_N).astype(str) == "Animalia")[np.maximum(top_FK, 0)] & firing_FK
    n_F = firing_FK.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (n_F > 0) & (animal_FK.sum(axis=1) / np.maximum(n_F, 1) >= min_share - 1e-12)
