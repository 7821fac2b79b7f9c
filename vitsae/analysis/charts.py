"""One look for every figure: the title block (title, and the run's note in red beneath: "demo:
synthetic data, random weights" or the run's name) and how a chart is written (atomically, in the
format its suffix names)."""

from __future__ import annotations

import os
from pathlib import Path

import altair as alt

from vitsae.atomic import atomic_write


def title(text: str, note: str = "") -> alt.TitleParams:
    """A figure's title block: ``text`` and, beneath it in red, ``note``."""
    return alt.TitleParams(text, subtitle=[note] if note else [], anchor="start", fontSize=14,
                           subtitleColor="#b00" if note else None)  # fmt: skip


def save(chart: alt.TopLevelMixin, path: str | os.PathLike) -> Path:
    """Write ``chart`` to ``path`` atomically, as the suffix says (.pdf, .png, .svg; PDF by default)."""
    fmt = Path(path).suffix.lstrip(".") or "pdf"
    return atomic_write(path, lambda p: chart.save(str(p), format=fmt))
