"""Batches moved to the training device ahead of use, off the training thread.

A :class:`DeviceFeeder` wraps an iterator of host batches (a :class:`~vitsae.data.loader.TokenStream`,
whose ``__next__`` gathers a batch from its shuffle buffer, converts it and tests it for NaN/Inf). A
background thread takes batches ``ahead`` at a time from it; on CUDA it copies each into a slot of a
ring of pinned host buffers allocated once, then, on a side CUDA stream, to the device and to float32,
and records an event. The training thread's :meth:`DeviceFeeder.__next__` makes its current stream wait
for that event (no host synchronisation) and marks the tensor as used on it, so the caching allocator
does not hand its memory back to the side stream early. A slot is refilled only after the copy that
last read it has finished (its event, waited for by the feeder thread). Batch order is the wrapped
iterator's; an error raised by it (a NaN in the store, a read error) is raised by ``__next__`` in the
training thread. On a CPU there is no copy to make: the thread only takes batches ahead (and converts
them to float32), which is how tests check order and errors without a GPU. A batch already on the
device is passed on as it is (the training thread converts it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

import torch

_POLL_S = 0.1


class DeviceFeeder:
    """Float32 batches of ``batches`` on ``device``, prepared ``ahead`` batches in advance (module
    docstring). Iterate it; :meth:`close` stops the thread (also at the end, or on an error)."""

    def __init__(self, batches: Iterable[torch.Tensor], device: str | torch.device, ahead: int = 2) -> None:
        if ahead < 1:
            raise ValueError(f"ahead must be >= 1, got {ahead}")
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._source = iter(batches)
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._slots: list[torch.Tensor | None] = [None] * (
            ahead + 2
        )  # pinned host buffers, made on first use
        self._slot_events: list[torch.cuda.Event | None] = [None] * (ahead + 2)
        self._side = torch.cuda.Stream(self.device) if self._cuda else None
        self._thread = threading.Thread(target=self._run, name="vitsae-feeder", daemon=True)
        self._thread.start()

    def _put(self, item: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _to_device(self, x_BD: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        if not self._cuda:
            return x_BD.to(torch.float32), None
        if x_BD.is_cuda:  # already on a GPU (batches held on the device): nothing to copy
            return x_BD, None
        k = i % len(self._slots)
        slot, done = self._slots[k], self._slot_events[k]
        if done is not None:
            done.synchronize()  # the copy that last read this slot has finished
        if slot is None or slot.numel() < x_BD.numel() or slot.dtype != x_BD.dtype:
            slot = self._slots[k] = torch.empty(x_BD.numel(), dtype=x_BD.dtype, pin_memory=True)
        host_BD = slot[: x_BD.numel()].view(x_BD.shape)
        host_BD.copy_(x_BD)
        with torch.cuda.stream(self._side):
            out_BD = host_BD.to(self.device, non_blocking=True).to(torch.float32)
            event = torch.cuda.Event()
            event.record(self._side)
        self._slot_events[k] = event
        return out_BD, event

    def _run(self) -> None:
        try:
            for i, x_BD in enumerate(self._source):
                if self._stop.is_set():
                    return
                if not self._put(("data", *self._to_device(x_BD, i))):
                    return
            self._put(("end",))
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread, which re-raises
            self._put(("error", exc))

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item[0] == "end":
            self.close()
            raise StopIteration
        if item[0] == "error":
            self.close()
            raise item[1]
        _, x_BD, event = item
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            x_BD.record_stream(current)
        return x_BD

    def close(self) -> None:
        """Stop the thread and wait for it (it finishes the batch it is taking from the wrapped iterator,
        so close the feeder before what it wraps); idempotent."""
        self._stop.set()
        while True:  # unblock a put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
