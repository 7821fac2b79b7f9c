"""What every rule's script does first: send logging to the rule's log file, size the thread pool, pick a device."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup(log_path: str | None, threads: int = 1) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import torch

    torch.set_num_threads(max(1, int(threads)))


def device() -> str:
    """'cuda' when this job was given a GPU, else 'cpu' (never touch CUDA where there is none)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def log_exceptions(fn):
    """Run ``fn``; log any exception with its traceback to the rule's log before re-raising it."""
    try:
        return fn()
    except Exception:
        logging.getLogger("vitsae").exception("job failed")
        raise
