"""What every rule's script does first and last: send logging to the rule's log file, size the thread
pool, pick a device; after the work, write a provenance record beside every output."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: The thread counts that torch (OpenMP, MKL) and NumPy's OpenBLAS read when they load.
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def setup(log_path: str | None, threads: int = 1) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        force=True,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    n = max(1, int(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        # A job whose work never imports torch (lineage pages, the RO-Crate, manifests) does not pay its
        # ~1 s import here; one that imports it later sizes its pool from these (read when torch loads).
        for var in _THREAD_VARS:
            os.environ[var] = str(n)


def device(setting: str = "auto") -> str:
    """The config's ``device``: 'auto' is 'cuda' when this job was given a GPU, else 'cpu'.

    ``torch.cuda.is_available()`` is the only CUDA call made where there is no GPU (Slurm's fake
    GPUs in CI set CUDA_VISIBLE_DEVICES without any device behind it).
    """
    import torch

    if setting == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise RuntimeError(
            "config says device: cuda, but this job sees no CUDA device; "
            "ask the scheduler for a GPU (resources gpu: 1) or set device: auto"
        )
    return "cuda" if available else "cpu"


def log_exceptions(fn):
    """Run ``fn``; log any exception with its traceback to the rule's log before re-raising it."""
    try:
        return fn()
    except Exception:
        logging.getLogger("vitsae").exception("job failed")
        raise


def run(snakemake, work, record: bool = True, inputs_of=None) -> None:
    """A rule's script body: logging to the rule's log, ``work()``, then a provenance record beside
    every output (:func:`vitsae.provenance.records.write_record`), naming the modules the rule's script
    runs (its ``code`` param, :func:`vitsae.provenance.source.script_code`). Each record names every
    input of the job, or, with ``inputs_of``, the inputs ``inputs_of(i)`` that output ``i`` was made from
    (a job that makes one output per SAE of a sweep from that SAE alone)."""
    import time

    from vitsae.provenance.records import write_record

    setup(snakemake.log[0], snakemake.threads)
    started = time.time()
    log_exceptions(work)
    if record:
        t0 = time.perf_counter()
        params = dict(snakemake.params.items())
        outputs = list(snakemake.output)
        sources = None if inputs_of is None else {out: inputs_of(i) for i, out in enumerate(outputs)}
        written = log_exceptions(lambda: write_record(
            rule=snakemake.rule, wildcards=dict(snakemake.wildcards.items()), inputs=list(snakemake.input),
            outputs=outputs, params=params, config=dict(snakemake.config), modules=list(params["code"]),
            seed=snakemake.config.get("seed"), started=started, ended=time.time(), sources=sources,
        ))  # fmt: skip
        # bench/demo.py sums these lines to give the records' share of the demo's wall time.
        logging.getLogger("vitsae.provenance").info(
            "provenance: wrote %d records in %.4f s", len(written), time.perf_counter() - t0
        )
