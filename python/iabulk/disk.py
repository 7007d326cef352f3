"""Routing items to destination disks by free space.

Each item goes to the disk with the most free space once the bytes already
promised to other in-flight items and a safety margin are taken off, so that
ten workers starting ten large items at once do not all pick the same nearly
full disk. Disks that are one filesystem share one budget. An item whose
files are already on a disk (a resumed, partial item) goes back there.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["DiskPool", "Reservation", "DisksFull", "parse_size"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"1G"``, ``"500M"``, ``"1.5GiB"``, ``"4096"`` → bytes (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use a number with K, M, G or T, e.g. 500M)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


class DisksFull(Exception):
    """No destination has room for an item; try again when space returns."""


@dataclass(eq=False)
class Reservation:
    """Bytes promised to one item on one disk, shrinking as they are written.

    Compared by identity: two items of the same size on one disk hold equal
    fields, and releasing one must never remove the other's promise.
    """

    path: str
    device: int
    reserved: int
    written: int = 0
    _pool: DiskPool | None = field(default=None, repr=False)

    @property
    def outstanding(self) -> int:
        return max(0, self.reserved - self.written)

    def consume(self, nbytes: int) -> None:
        """Count bytes written, which the filesystem's free space now reflects."""
        self.written += nbytes

    def release(self) -> None:
        if self._pool is not None:
            self._pool._release(self)
            self._pool = None


UsageFn = Callable[[str], int]


def _free_bytes(path: str) -> int:
    return shutil.disk_usage(path).free


class DiskPool:
    """Destination directories with a free-space margin.

    ``check=False`` turns routing off: every item goes to the first
    directory (or back to the one holding its files) without looking at
    free space.
    """

    def __init__(
        self,
        destdirs: Sequence[str],
        margin: int = 1 << 30,
        check: bool = True,
        free_bytes: UsageFn = _free_bytes,
    ) -> None:
        if not destdirs:
            raise ValueError("at least one destination directory is needed")
        self.destdirs = [os.path.abspath(d) for d in destdirs]
        self.margin = margin
        self.check = check
        self._free_bytes = free_bytes
        self._lock = threading.Lock()
        self._reservations: list[Reservation] = []
        self._devices = {d: os.stat(d).st_dev for d in self.destdirs}

    def holding(self, subdir: str) -> str | None:
        """The destination that already has ``subdir`` (an item's directory)."""
        for dest in self.destdirs:
            if os.path.isdir(os.path.join(dest, subdir)):
                return dest
        return None

    def available(self, dest: str) -> int:
        """Free bytes on ``dest`` after the margin and other items' promises."""
        device = self._devices[dest]
        promised = sum(r.outstanding for r in self._reservations if r.device == device)
        return self._free_bytes(dest) - self.margin - promised

    def reserve(self, subdir: str, nbytes: int) -> Reservation:
        """Pick a destination for an item needing ``nbytes`` more bytes.

        Raises :class:`DisksFull` when no destination has room.
        """
        with self._lock:
            home = self.holding(subdir)
            if not self.check:
                dest = home or self.destdirs[0]
            elif home is not None:
                if self.available(home) < nbytes:
                    raise DisksFull(
                        f"{home} has no room for the rest of {subdir} "
                        f"({nbytes} bytes + {self.margin} margin); waiting for space"
                    )
                dest = home
            else:
                room = {d: self.available(d) for d in self.destdirs}
                # Destinations on one filesystem tie on room: then the one
                # with the fewest items under way, so they still share the work.
                busy = {d: sum(r.path == d for r in self._reservations) for d in self.destdirs}
                dest = max(self.destdirs, key=lambda d: (room[d], -busy[d]))
                if room[dest] < nbytes:
                    raise DisksFull(
                        f"no destination has room for {subdir} "
                        f"({nbytes} bytes + {self.margin} margin); waiting for space"
                    )
            reservation = Reservation(dest, self._devices[dest], nbytes, _pool=self)
            self._reservations.append(reservation)
            return reservation

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            self._reservations.remove(reservation)
