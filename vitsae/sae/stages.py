"""Where a training step's time goes, without stopping the device to ask.

A :class:`StepProfile` is handed to :func:`vitsae.sae.train.train_sweep` (``profile=``). The trainer marks
the boundaries of each step's stages in order: ``wait`` when the step's batch is in hand (the interval
before it is the wait for the batch: the feeder, the loader, the host), then ``forward``, ``backward`` and
``update`` after those stages of each stack (summed over stacks), and ``log`` after logging and
checkpointing. On CUDA a mark is a CUDA event recorded on the current stream (no host synchronisation);
elsewhere it is ``time.perf_counter()``. Each interval between consecutive marks is charged to the later
mark's stage, so the stages of the steps summed add up exactly to the time from the first counted mark to
the last: on CUDA, the device's timeline, with the idle gaps charged to ``wait``.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch

STAGES = ("wait", "forward", "backward", "update", "log")


class StepProfile:
    """Stage marks of every step; :meth:`summary` reads them (one synchronisation, at the end)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._marks: list[tuple[int, str, object]] = []  # (step, stage, event or time)
        self.step = 0

    def begin(self, step: int) -> None:
        self.step = step

    def mark(self, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append((self.step, stage, event))
        else:
            self._marks.append((self.step, stage, time.perf_counter()))

    def summary(self, first_step: int = 1) -> dict:
        """Seconds per stage over steps ``>= first_step`` (the interval into a step's ``wait`` mark, from
        the previous step's last mark, counts for that step), their ``total``, and ``steps``."""
        if self._cuda:
            torch.cuda.synchronize(self.device)
        out: dict[str, float] = defaultdict(float)
        steps = set()
        for (_, _, a), (step, stage, b) in zip(self._marks, self._marks[1:]):
            if step < first_step:
                continue
            seconds = a.elapsed_time(b) / 1e3 if self._cuda else b - a
            out[stage] += seconds
            steps.add(step)
        result = {stage: out.get(stage, 0.0) for stage in STAGES}
        result["total"] = sum(result.values())
        result["steps"] = len(steps)
        return result
