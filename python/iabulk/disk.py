"""Routing items to destination disks by free space.

Each item goes to the disk with the most free space once the bytes already
promised to other in-flight items and a safety margin are taken off, so that
ten workers starting ten large items at once do not all pick the same nearly
full disk. Disks that are one filesystem share one budget. An item whose
files are already on a disk (a resumed, partial item) goes back there if the
rest fits; if not, and another disk has room for all of it, its directory
moves there (nothing is fetched twice); else it waits for space.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from iabulk.durable import sync_path, temporary_path
from iabulk.workers.base import StopRun

__all__ = ["DiskPool", "Reservation", "DisksFull", "TooLarge", "parse_size"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"1G"``, ``"500M"``, ``"1.5GiB"``, ``"4096"`` → bytes (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use a number with K, M, G or T, e.g. 500M)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


class DisksFull(Exception):
    """No destination has room for an item; try again when space returns."""


class TooLarge(Exception):
    """An item needs more than any destination holds, even empty: waiting cannot help."""


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


def _total_bytes(path: str) -> int:
    return shutil.disk_usage(path).total


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
        total_bytes: UsageFn = _total_bytes,
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
        self.largest = max(total_bytes(d) for d in self.destdirs)
        """Bytes the largest destination holds, empty: an item needing more never fits."""

    def holding(self, subdir: str) -> str | None:
        """The destination that already has files of ``subdir`` (an item's directory).

        An item directory without a single file in it (left behind when a
        full disk made the item drop its only partial file) holds nothing:
        the item may go to any destination.
        """
        for dest in self.destdirs:
            path = os.path.join(dest, subdir)
            if os.path.isdir(path) and (not subdir or _holds_files(path)):
                return dest
        return None

    def _settle(self, subdir: str, present: Callable[[str], int] | None) -> str | None:
        """Where the item's files are, after tidying what a cut-short move left.

        A move killed (or refused for space) part-way leaves every file whole
        in one place or both, and temporary copies beside them. The copy
        holding the most bytes is the item's home; elsewhere, temporary
        copies and files the home holds at least as much of are removed, so
        nothing is left behind and nothing is fetched twice.
        """
        held = {
            dest: root
            for dest in self.destdirs
            if os.path.isdir(root := os.path.join(dest, subdir)) and _tidy(root)
        }
        if len(held) < 2:
            return next(iter(held), None)
        home = max(held, key=lambda dest: (present or _tree_bytes)(held[dest]))
        for dest, root in held.items():  # max() keeps the first of equals: --destdir order
            if dest != home:
                _remove_files(root, functools.partial(_covered, root, held[home]))
                _remove_empty_tree(root)
        return home

    def available(self, dest: str) -> int:
        """Free bytes on ``dest`` after the margin and other items' promises."""
        device = self._devices[dest]
        promised = sum(r.outstanding for r in self._reservations if r.device == device)
        try:
            free = self._free_bytes(dest)
        except FileNotFoundError:
            raise StopRun(f"destination {dest} is gone") from None
        return free - self.margin - promised

    def _check_fits(self, subdir: str, nbytes: int) -> None:
        largest = self.largest - self.margin
        if nbytes > largest:
            raise TooLarge(
                f"{subdir or 'the item'} needs {nbytes:,} bytes, more than any destination "
                f"holds ({max(largest, 0):,} bytes, less the margin)"
            )

    def reserve(
        self, subdir: str, nbytes: int, present: Callable[[str], int] | None = None
    ) -> Reservation:
        """Pick a destination for an item needing ``nbytes`` bytes in all.

        ``present(root)`` tells how many of those bytes are already under the
        item's directory ``root`` (whole and partial files). A partly
        downloaded item goes back to the destination holding its files if
        that has room for the rest; if not, and another filesystem has room
        for the whole item, the item's directory is moved there first (what
        was downloaded is moved, not fetched again). Raises
        :class:`DisksFull` when no destination has room.
        """
        if self.check:
            self._check_fits(subdir, nbytes)
        with self._lock:
            home = self._settle(subdir, present) if subdir else self.holding(subdir)
            move_from = None
            need = nbytes
            if home is not None and subdir and present is not None:
                need = max(0, nbytes - present(os.path.join(home, subdir)))
            if not self.check:
                dest = home or self.destdirs[0]
            elif home is not None and self.available(home) >= need:
                dest = home
            else:
                # Elsewhere, the whole item is needed: on another filesystem.
                candidates = [
                    d
                    for d in self.destdirs
                    if home is None or self._devices[d] != self._devices[home]
                ]
                room = {d: self.available(d) for d in candidates}
                # Destinations on one filesystem tie on room: then the one
                # with the fewest items under way, so they still share the work.
                busy = {d: sum(r.path == d for r in self._reservations) for d in candidates}
                best = max(candidates, key=lambda d: (room[d], -busy[d]), default=None)
                if best is None or room[best] < nbytes:
                    what = (
                        f"{home} has no room for the rest of {subdir} ({need} bytes"
                        if home is not None
                        else f"no destination has room for {subdir} ({nbytes} bytes"
                    )
                    raise DisksFull(f"{what} + {self.margin} margin); waiting for space")
                dest, need = best, nbytes
                if home is not None:
                    move_from = os.path.join(home, subdir)
            if subdir and move_from is None:
                for other in self.destdirs:
                    if other != dest:
                        _remove_empty_tree(os.path.join(other, subdir))
            reservation = Reservation(dest, self._devices[dest], need, _pool=self)
            self._reservations.append(reservation)
        if move_from is not None:
            try:
                _move_tree(move_from, os.path.join(dest, subdir))
            except OSError as exc:
                reservation.release()
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DisksFull(f"disk full moving {subdir} to {dest}") from None
                raise
        return reservation

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            self._reservations.remove(reservation)


def _tidy(root: str) -> bool:
    """Remove the temporary copies of a cut-short move under ``root``; whether
    any other file is left there."""
    holds = False
    for here, _, files in os.walk(root):
        for name in files:
            if name.endswith(_MOVING):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(here, name))
            else:
                holds = True
    return holds


def _remove_files(root: str, doomed: Callable[[str], bool]) -> None:
    """Remove the files under ``root`` whose path relative to it is ``doomed``."""
    for here, _, files in os.walk(root):
        for name in files:
            path = os.path.join(here, name)
            if doomed(os.path.relpath(path, root)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


def _covered(root: str, home: str, name: str) -> bool:
    """Whether ``home`` has at least as much of ``name`` as ``root`` has."""
    try:
        return os.path.getsize(os.path.join(home, name)) >= os.path.getsize(
            os.path.join(root, name)
        )
    except OSError:
        return False


def _tree_bytes(root: str) -> int:
    return sum(
        os.path.getsize(os.path.join(here, name))
        for here, _, files in os.walk(root)
        for name in files
    )


def _holds_files(path: str) -> bool:
    """Whether anything but directories lies below ``path``."""
    return any(files for _, _, files in os.walk(path))


_MOVING = ".iabulk-moving"


def _move_tree(src: str, dst: str) -> None:
    """Move an item's directory to another filesystem, crash-safely.

    Every file is copied beside its target under a temporary name, with its
    mtime (which marks a verified file), fsynced and renamed into place; the
    directories are synced, and only then are the originals removed. A crash
    leaves every file whole in one place or both, and the move is simply
    done again.
    """
    moved: list[str] = []
    dirs: set[str] = set()
    for root, _, files in os.walk(src):
        out = os.path.normpath(os.path.join(dst, os.path.relpath(root, src)))
        os.makedirs(out, exist_ok=True)
        dirs.add(out)
        for name in files:
            source, target = os.path.join(root, name), os.path.join(out, name)
            temp = temporary_path(target, _MOVING)
            try:
                shutil.copyfile(source, temp)
                shutil.copystat(source, temp)
                sync_path(temp)
            except OSError:
                with contextlib.suppress(OSError):
                    os.remove(temp)
                raise
            os.replace(temp, target)
            moved.append(source)
    for d in dirs:
        sync_path(d)
    for source in moved:
        os.remove(source)
    _remove_empty_tree(src)


def _remove_empty_tree(path: str) -> None:
    """Remove ``path`` if it holds nothing but empty directories (else leave it)."""
    if not os.path.isdir(path) or _holds_files(path):
        return
    for root, _, _ in os.walk(path, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            return
