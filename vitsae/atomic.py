"""Write a file so that no reader ever sees it half-written: into a hidden temporary file beside it,
then renamed into place (``os.replace`` is atomic on one filesystem)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on ``.{name}.tmp-{pid}{suffix}`` beside ``path`` (the suffix kept, for writers
    that choose a format by it), then rename it to ``path``; makes the parent directory. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
    return path
