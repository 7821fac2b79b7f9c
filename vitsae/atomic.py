"""Write a file or a directory so that no reader ever sees it half-written: into a hidden temporary
beside it, then renamed into place (``os.replace`` is atomic on one filesystem). A killed job leaves
only the hidden temporary, which no rule takes for an output."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on ``.{name}.tmp-{pid}{suffix}`` beside ``path`` (the suffix kept, for writers
    that choose a format by it), then rename it to ``path``; makes the parent directory. Returns ``path``.
    A failed ``write`` leaves neither ``path`` changed nor the temporary behind.

    The file gets the mode a plain ``open`` gives (:func:`file_mode`: 0o644 under umask 022) whatever
    ``write`` did: safetensors' ``save_file`` writes its own ``tempfile`` (mode 0o600) and renames it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        if tmp.is_file():
            os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def file_mode() -> int:
    """The mode a new file gets from a plain ``open``: 0o666 less this process's umask (read from
    ``/proc/self/status``; elsewhere by setting and restoring it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def partial_dir(path: str | os.PathLike) -> Path:
    """Where :func:`atomic_dir` builds ``path``: ``.{name}.partial-{pid}`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def atomic_dir(path: str | os.PathLike, build: Callable[[Path], object]) -> Path:
    """Call ``build(tmp)`` on an empty directory beside ``path`` (:func:`partial_dir`), then replace
    ``path`` (removed first if it exists) by it. A failed ``build`` removes the temporary and leaves
    ``path`` as it was. Returns ``path``."""
    path = Path(path)
    tmp = partial_dir(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path
