"""Type stub for the Rust extension ``iabulk._native``.

The extension is private: ``iabulk.joblog`` wraps it and the package
``__init__`` re-exports what users need. Every function that reads or writes
files releases the GIL while it does so.

Job-log semantics (format v1, see DESIGN.md), which the scan implements and
``tests/model.py`` restates in plain Python:

* A line is the bytes up to and including ``\\n``. A final segment without
  ``\\n`` (a torn tail) is malformed. A line that is empty or only JSON
  whitespace is ignored and not counted.
* A line must be strict UTF-8 holding one JSON object (RFC 8259; ``NaN`` and
  ``Infinity`` are rejected; a string holding a lone surrogate escape such as
  ``"\\ud800"`` is rejected; arrays and objects nested more than 512 deep,
  counting the line's object as 1, are rejected; an integer of more than
  4300 digits, which Python's ``json`` cannot read, is rejected; duplicate
  keys: the last wins). Otherwise it is malformed.
* ``event`` must be a string, else malformed. Kinds other than ``job``,
  ``started``, ``completed``, ``failed``, ``requeued``, ``source`` and
  ``resolved`` are ignored (not malformed).
* ``job``, ``started``, ``completed``, ``failed`` and ``requeued`` need
  ``seq``: a JSON integer (not ``1.0``, not ``true``) with
  ``1 <= seq <= 100_000_000``; otherwise the line is malformed.
* ``job`` also needs ``id`` to be a string; a second ``job`` line for a seq
  that already has one is malformed (the first defines the job).
* Per seq, in file order: ``completed`` makes it done; ``failed`` with
  ``"retry": false`` (exactly ``false``) makes it done (permanent failure);
  any other ``failed`` and ``requeued`` make it not done. ``started`` marks it
  in flight until the next ``completed``/``failed``/``requeued``; a
  ``started`` after a done event does not undo done.
* Counts cover seqs that have a job line: ``total``, ``completed``,
  ``failed`` (permanent), ``pending = total - completed - failed``,
  ``in_flight`` (pending and started with no terminal event since).
  The bitmap holds every done seq, with or without a job line.
* ``bytes_completed`` sums, over the seqs counted in ``completed``, the
  ``extra.item_size`` (a non-negative integer of any size, else 0) of the
  ``completed`` event that made each one done (its last); ``first_ts`` /
  ``last_ts`` are the smallest / largest string ``ts`` over all well-formed
  lines of the known kinds; ``errors`` counts the ``error`` strings of all
  ``failed`` events.
* ``max_seq``: the largest seq of a job line (0 if there is none).
* ``source``: the text of the last ``source`` line (without its ``\\n`` and
  any trailing ``\\r``); ``resolved``: whether a ``resolved`` line follows
  it (with no ``source`` line: whether any ``resolved`` line appears).
"""

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, final, overload

__all__ = [
    "MAX_BUCKETS",
    "MAX_SEQ",
    "Appender",
    "Bitmap",
    "IdSet",
    "JobList",
    "LogChangedError",
    "PendingJobs",
    "Snapshot",
    "analyze",
    "lock_holder",
    "scan",
]

MAX_SEQ: int
"""The seq cap, 100,000,000."""

@final
class Bitmap:
    """Set of non-negative integers up to ``MAX_SEQ``, one bit each."""

    def __new__(cls, size: int = 0) -> Bitmap:
        """``size`` is a capacity hint in bits; the bitmap grows as needed.

        ValueError if ``size`` is negative; hints above the cap are clamped.
        """

    def set(self, n: int) -> None:
        """Add ``n``; ValueError if ``n < 0`` or ``n > MAX_SEQ``, TypeError if not an int."""

    def clear(self, n: int) -> None:
        """Remove ``n``; ValueError if out of range."""

    def __contains__(self, n: object, /) -> bool:
        """False for negatives, values above the cap, and non-integers."""

    def __len__(self) -> int:
        """Number of members."""

    def issuperset(self, other: Bitmap) -> bool:
        """Whether every member of ``other`` is a member of this one."""

    @property
    def size_bytes(self) -> int:
        """Bytes of storage currently allocated (12.5 MB at the cap)."""

    def __getstate__(self) -> bytes:
        """The members as bytes: bit ``j`` of byte ``i`` is member ``8 * i + j``."""

    def __setstate__(self, state: bytes, /) -> None:
        """Become the bitmap ``state`` holds; ValueError if it holds a member above the cap."""

    def __reduce__(self) -> tuple[type[Bitmap], tuple[()], bytes]:
        """Pickled as ``Bitmap()`` then :meth:`__setstate__`, under every protocol."""

@final
class IdSet:
    """Exact set of identifiers, stored as 128-bit hashes (no Python strings).

    Used to skip duplicates while resolving a source of millions of items.
    """

    def __new__(cls) -> IdSet: ...
    def add(self, identifier: str) -> bool:
        """Add; True if it was not there yet."""

    def __contains__(self, identifier: object, /) -> bool: ...
    def __len__(self) -> int: ...

class LogChangedError(ValueError):
    """The job log was rewritten in place after a JobList was read from it."""

@final
class JobList(Sequence[dict[str, Any]]):
    """Lazy sequence of job lines (dicts), in seq order, read when reached.

    Holds only the byte offsets of the job lines (8 bytes a job); each job
    dict is read from the file and parsed when it is reached, so four million
    pending jobs do not become four million dicts. The pending jobs of a
    :func:`scan`, the completed and failed jobs of an :func:`analyze`.

    A read-only :class:`~collections.abc.Sequence` (registered as one), equal
    to any sequence of the same jobs in the same order (not to str or bytes),
    unhashable as a list is. Reading a job whose line is no longer where the
    scan found it (the log was rewritten in place) raises
    :class:`LogChangedError`; a log replaced by a new file is not seen, the
    list keeps reading the file it was made from.
    """

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[dict[str, Any]]: ...
    def __reversed__(self) -> Iterator[dict[str, Any]]:
        """From the last job to the first, one read a job."""
    def __eq__(self, other: object, /) -> bool:
        """Lengths first, so a sequence of another length costs no read."""
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def index(self, value: Any, start: int = 0, stop: int | None = None, /) -> int:
        """The position of the first job equal to ``value`` in ``start:stop``;
        ValueError if none is."""
    def count(self, value: Any, /) -> int: ...
    @overload
    def __getitem__(self, index: int, /) -> dict[str, Any]:
        """The ``index``-th job (negative indexes count from the end)."""
    @overload
    def __getitem__(self, index: slice, /) -> list[dict[str, Any]]:
        """The jobs of a slice, read and parsed now."""
    def seqs(self) -> list[int]:
        """The seqs, in order."""

PendingJobs = JobList
"""The upstream engine's name for the pending list."""

@final
class Snapshot:
    """What one pass over a job log knows."""

    max_seq: int
    total: int
    completed: int
    failed: int
    pending: int
    in_flight: int
    malformed: int
    bytes_completed: int
    first_ts: str | None
    last_ts: str | None
    errors: list[tuple[str, int]]
    """(message, count), most frequent first, ties by message."""
    source: str | None
    resolved: bool
    size: int
    """Bytes of the file that were scanned."""
    bitmap: Bitmap
    pending_jobs: JobList
    ids: IdSet | None
    """Every job id, when the scan was asked to collect them."""

def scan(path: str, collect_ids: bool = False) -> Snapshot:
    """One pass over the job log at ``path`` (using every core if it pays).

    OSError if the file cannot be opened or read; never raises for content.
    """

@final
class Appender:
    """Durable, thread-safe appends to one job log.

    Opening takes an exclusive ``flock`` (a second appender, in this or any
    process, gets an OSError naming the holder's pid) and cuts a torn tail
    back to the last complete line.
    """

    def __new__(cls, path: str) -> Appender:
        """Open ``path`` for appending (``O_APPEND``, created with mode 0644).

        ``BlockingIOError`` (an ``OSError``) naming the holder's pid if another
        appender holds the log; other ``OSError`` if it cannot be opened.
        Operations on a closed appender raise ``ValueError``.
        """

    @property
    def repaired_bytes(self) -> int:
        """Bytes of torn tail cut off when the log was opened."""

    def append(self, data: bytes) -> None:
        """Queue whole lines; written in order, synced by the next ``sync``."""

    def append_durable(self, data: bytes) -> None:
        """Write whole lines and return once they are on disk (fdatasync).

        Concurrent callers share one sync (group commit).
        """

    def flush(self) -> None:
        """Write everything queued without syncing: readers see it at once;
        durable at the next ``sync``."""

    def sync(self) -> None:
        """Write everything queued and fdatasync."""

    def close(self) -> None:
        """Sync, release the lock, close. Idempotent."""

MAX_BUCKETS: int
"""The most throughput buckets :func:`analyze` reports, 100,000."""

def lock_holder(path: str) -> int | None:
    """The pid of the process holding the job log's lock (a run under way),
    None if none does or it cannot be told (``/proc/locks`` is Linux's)."""

def analyze(path: str, bucket_seconds: int = 60) -> dict[str, Any]:
    """Everything the job log says about a run, in one pass (every core if it pays).

    Same line rules as :func:`scan` (it is the scan, with more read from the
    lines it accepts). OSError if the file cannot be read, ValueError if
    ``bucket_seconds < 1``; never raises for content. Returns plain Python
    values (ints of any size, no floats):

    * ``counts``: ``{"total", "completed", "failed", "pending", "in_flight",
      "malformed"}``, exactly as :class:`Snapshot` counts them.
    * ``bytes_completed`` (as :class:`Snapshot`), ``files_completed``: the sum
      of ``extra.files`` (a non-negative integer of any size, else 0) over the
      same completions: the *counted* completions, i.e. the last ``completed``
      event of each job that is completed.
    * ``first_ts``, ``last_ts``: as :class:`Snapshot`.
    * A ``ts`` is *parsable* when it is a string of exactly 16 characters
      ``YYYYMMDDTHHMMSSZ`` (ASCII digits), a real date in years 0001-9999,
      hour below 24, minute and second below 60; it is read as UTC.
    * ``throughput``: ``[{"start": ts, "items": n, "bytes": b}, …]``, one
      bucket per ``bucket_seconds`` of the parsable ``ts`` of counted
      completions (others are left out of the buckets), oldest first, with the
      empty buckets between the first and the last included. Buckets start at
      multiples of ``bucket_seconds`` counted from 0001-01-01T00:00:00Z (for
      sizes that divide a day: on the minute, the hour, midnight), so the
      buckets of logs analysed separately line up; ``start`` is formatted like
      ``ts``. At most :data:`MAX_BUCKETS`, the most recent: completions older
      than that are left out of the buckets (choose a larger
      ``bucket_seconds`` to see them).
    * An *attempt* of a job runs from a ``started`` line to the job's next
      ``completed``/``failed``/``requeued`` line; the attempt of a counted
      completion is the last ``started`` of the job with none of those three
      between it and the completion (a completion may have none, e.g. after a
      ``failed`` with no new ``started``).
    * ``durations``: seconds from the attempt's ``started`` to the counted
      completion, when both have a parsable ``ts`` and the difference is
      ``>= 0``: ``{"count", "p50", "p90", "p99", "max"}``, ints, nearest-rank
      percentiles (the ``ceil(p * count / 100)``-th smallest), ``None`` when
      count is 0.
    * ``retries``: ``{n: jobs}`` over jobs that are done (completed or failed
      permanently): ``n`` = their ``failed`` events that were not permanent,
      anywhere in the log. Keys are ints, in increasing order.
    * ``workers``: ``{worker: {"completed": n, "bytes": b}}``: the ``worker``
      of the attempt's ``started`` of each counted completion, when it is an
      integer in ``0..2**64-1``; completions without one count under
      ``None``. Increasing worker order, ``None`` last.
    * ``disks``: ``{disk: {"completed": n, "bytes": b}}`` from the string
      ``extra.disk`` of counted completions (completions without one are left
      out), in disk order.
    * ``errors``: ``[{"cause", "count", "examples"}, …]`` over all ``failed``
      events with a string ``error`` (the messages of :attr:`Snapshot.errors`).
      ``cause`` is the message with, in this order: the failing job's own id
      (from its job line, if it has one and the id is not empty) replaced by
      ``<id>`` wherever it stands as a whole word (not next to an ASCII letter,
      digit, ``-`` or ``_``); then host names replaced by ``<host>``: in each
      maximal run of ASCII letters, digits, ``.``, ``-`` and ``_``, the run
      without its leading and trailing dots, when that holds a dot and ends in
      a label of ASCII letters only (``ia801234.us.archive.org``; a file name
      such as ``x.pdf`` looks the same and is replaced too); then every run of
      ASCII digits by ``N``, except a run right after an ASCII letter
      (``md5``, ``sha256``) and a 3-digit run right after ``HTTP `` (``HTTP
      503``), which stay. ``examples``: up to 3 distinct ids of failing jobs
      that have a job line, in order of first appearance. Most frequent first,
      ties by cause.
    * ``failed_jobs``, ``completed_jobs``: :class:`JobList` of the jobs whose
      final state is a permanent failure / completed (``len`` = the counts).
    """
