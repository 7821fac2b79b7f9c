"""Which ImageNet classes appear in the same photos: the co-occurrence control of "abstract".

A feature whose top images come from a canoe class and a paddle class spans two WordNet branches, but it
may see one scene (a paddle in a canoe), not an abstract relation. ImageNet's single labels cannot tell;
multi-labels can. ImageNet-1K's validation images have them: the ReaL labels (Beyer et al. 2020, "Are we
done with ImageNet?"), which timm ships offline (``timm/data/_info/imagenet_real_labels.json``: for each
of the 50,000 val images, in file-name order, the list of the ImageNet-1K classes visible in it).

Format (:func:`load_multilabels`)
    A JSON list with one entry per image: the list of its ImageNet-1K class indices (the class-index
    order of :func:`vitsae.analysis.wordnet.imagenet_wnids`, sorted wnids). ``real`` names timm's copy of
    ReaL. The demo's generator writes its own (``val_multilabels.json``: each image's classes, which for
    the demo is its own class only).

Pair rate (:func:`pair_rates`)
    For classes a and b: ``n_ab / min(n_a, n_b)``, where ``n_a`` is the number of images that show a and
    ``n_ab`` the number that show both: the share of the rarer class's images that also show the other.
    On ReaL: 5,883 of 499,500 pairs co-occur at all (median rate of those 0.021); 428 reach 0.1; canoe /
    paddle 0.48, desktop computer / monitor 0.94, snorkel / scuba diver 0.27.

In a concept table (:mod:`vitsae.analysis.concepts`)
    ``cooccurring_pairs``: every pair of the feature's top-image classes with a positive rate
    (``a|b:rate``, ``;``-separated; kept so that :mod:`vitsae.analysis.relabel` can recompute the next
    column for other major-class thresholds); ``major_cooccurrence``: the largest rate over the pairs of
    its *major* classes that share no top-level WordNet branch (0 for none; NaN without multi-labels).
    A feature that passes every other test of "abstract" with ``major_cooccurrence >=
    cooccurrence_min_rate`` is labelled ``co-occurrence``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

REAL = "real"


def real_labels_path() -> Path:
    """timm's copy of the ImageNet-1K ReaL labels."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("timm is not installed; it ships the ReaL labels (imagenet_real_labels.json)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / "imagenet_real_labels.json"


def resolve(spec: str, root: str | os.PathLike) -> Path:
    """The file a dataset's ``multilabels`` setting names: ``real`` (timm's ReaL labels), or a path
    (absolute, or relative to the dataset root)."""
    if spec == REAL:
        return real_labels_path()
    path = Path(spec)
    return path if path.is_absolute() else Path(root) / path


def load_multilabels(path: str | os.PathLike, n_classes: int = 1000) -> list[list[int]]:
    """The per-image class lists of a multi-label file (module docstring), checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"multi-label file {path} does not exist (datasets.<name>.multilabels)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of per-image class lists")
    for i, entry in enumerate(data):
        if not isinstance(entry, list) or not all(isinstance(c, int) and 0 <= c < n_classes for c in entry):
            raise ValueError(
                f"{path}: entry {i} is {entry!r}, not a list of class indices in 0..{n_classes - 1}"
            )
    return data


def pair_rates(multilabels: Sequence[Sequence[int]], n_classes: int = 1000) -> np.ndarray:
    """``[n_classes, n_classes]`` float64: ``n_ab / min(n_a, n_b)`` (0 where either class never appears;
    the diagonal 1 where a class appears)."""
    count_CC = np.zeros((n_classes, n_classes))
    for entry in multilabels:
        c = np.unique(np.asarray(entry, dtype=np.int64))
        count_CC[c[:, None], c[None, :]] += 1
    n_C = np.diag(count_CC).copy()
    denom = np.minimum.outer(n_C, n_C)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, count_CC / np.where(denom > 0, denom, 1), 0.0)


def split_rates(classes: Sequence[str], multilabels_path: str | os.PathLike,
                all_wnids: Sequence[str]) -> np.ndarray:  # fmt: skip
    """The pair rates among ``classes`` (wnids; a class outside ``all_wnids`` gets rate 0 with every
    other)."""
    rate = pair_rates(load_multilabels(multilabels_path, len(all_wnids)), len(all_wnids))
    index = {w: i for i, w in enumerate(all_wnids)}
    idx = np.array([index.get(str(c), -1) for c in classes])
    out = rate[np.maximum(idx, 0)][:, np.maximum(idx, 0)]
    out[idx < 0] = 0.0
    out[:, idx < 0] = 0.0
    return out


def pairs_text(classes: Sequence[str], rate_CC: np.ndarray, codes: Sequence[int]) -> str:
    """``a|b:rate`` for every pair of ``classes`` (with their codes into ``rate_CC``) of positive rate,
    ``;``-separated, pairs in sorted order."""
    order = np.argsort(np.asarray(classes, dtype=str), kind="stable")
    out = []
    for x in range(len(order)):
        for y in range(x + 1, len(order)):
            i, j = order[x], order[y]
            r = float(rate_CC[codes[i], codes[j]])
            if r > 0:
                out.append(f"{classes[i]}|{classes[j]}:{r:.6g}")
    return ";".join(out)


def parse_pairs(text: object) -> dict[frozenset, float]:
    """The pairs of a ``cooccurring_pairs`` cell (NaN or empty: none)."""
    if not isinstance(text, str) or not text:
        return {}
    out = {}
    for item in text.split(";"):
        pair, rate = item.rsplit(":", 1)
        a, b = pair.split("|")
        out[frozenset((a, b))] = float(rate)
    return out


def cross_branch_pairs(major: Iterable[str], branches) -> list[frozenset]:
    """The pairs of ``major`` classes whose top-level branches (``branches(wnid)``: a set) do not meet."""
    major = sorted(set(major))
    return [
        frozenset((a, b))
        for x, a in enumerate(major)
        for b in major[x + 1 :]
        if not branches(a) & branches(b)
    ]


def major_cooccurrence(major: Iterable[str], pairs: dict[frozenset, float], branches) -> float:
    """The largest rate over the :func:`cross_branch_pairs` of ``major``; 0 for none."""
    return max((pairs.get(pair, 0.0) for pair in cross_branch_pairs(major, branches)), default=0.0)
