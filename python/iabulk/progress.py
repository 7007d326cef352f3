"""Live transfer counters, written by transfer threads and read by the UI.

A transfer takes a slot for the file it moves and adds to it per chunk: one
integer addition by the one thread that owns the slot, no lock, no UI call.
The UI samples the board a few times a second, so drawing never costs
throughput however fast the bytes arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["TransferBoard", "Slot"]


@dataclass
class Slot:
    """One transfer in flight: whose file, how far along."""

    index: int
    identifier: str = ""
    name: str = ""
    size: int = 0
    done: int = 0
    resumed: int = 0
    """Bytes already on disk when the transfer began (shown, not counted as received)."""

    def add(self, nbytes: int) -> None:
        self.done += nbytes

    def resume_from(self, offset: int) -> None:
        self.done = self.resumed = offset


class TransferBoard:
    """A fixed number of slots plus the run's totals."""

    def __init__(self, slots: int) -> None:
        self.slots = [Slot(i) for i in range(slots)]
        self.files_done = 0
        self._bytes_finished = 0
        self._free = list(range(slots - 1, -1, -1))
        self._lock = threading.Lock()

    @property
    def bytes_transferred(self) -> int:
        """Bytes received this run, including transfers still going."""
        return self._bytes_finished + sum(s.done - s.resumed for s in self.slots if s.identifier)

    @contextmanager
    def slot(self, identifier: str, name: str, size: int) -> Iterator[Slot]:
        """Hold a slot while one file moves."""
        with self._lock:
            slot = self.slots[self._free.pop()] if self._free else Slot(-1)
            slot.size, slot.name, slot.identifier = size, name, identifier
            slot.done = slot.resumed = 0
        try:
            yield slot
        finally:
            with self._lock:
                self._bytes_finished += slot.done - slot.resumed
                self.files_done += 1
                slot.identifier, slot.name, slot.done = "", "", 0
                if slot.index >= 0:
                    self._free.append(slot.index)
