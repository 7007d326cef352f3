"""The ``iabulk`` command: ``download`` and ``status``.

Exit codes: 0 everything done; 1 some jobs failed permanently (or a search
failed); 2 bad usage or input (one line on stderr); 130 interrupted with work
left. No traceback reaches the user: anything unexpected is reported as one
line naming the error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, TextIO

from iabulk import __version__
from iabulk._native import IdSet, Snapshot, lock_holder
from iabulk.disk import DiskPool, parse_size
from iabulk.engine import MAX_WORKERS, BulkEngine
from iabulk.errors import (
    DestinationError,
    IabulkError,
    JobLogError,
    SourceError,
    TransientSourceError,
    UsageError,
)
from iabulk.joblog import JobLog
from iabulk.progress import TransferBoard
from iabulk.report import merge_analytics, render_status
from iabulk.session import ia_session, session_factory
from iabulk.shard import Shard, ShardError, parse_shard, shard_from_env
from iabulk.sources import Source, check_itemlist, itemlist_path, resolve
from iabulk.throttle import AdaptiveLimit, RateGate, TokenBucket, parse_rate
from iabulk.ui import make_ui
from iabulk.workers.base import StopRun
from iabulk.workers.download import DownloadOptions, DownloadWorker

__all__ = ["main"]

OP = "download"
POLITE_WORKERS = 16
"""Above this, warn: archive.org blocks clients that open too many connections."""
MAX_TIMEOUT = 86400
"""--timeout in seconds; larger values (inf) overflowed deep inside the transfers."""

# Options recorded in the log, so that `iabulk download --joblog J` alone
# resumes with them; an option given again on the command line wins.
_DEFAULTS: dict[str, Any] = {
    "workers": 4,
    "retries": 3,
    "destdir": ["."],
    "disk_margin": "1G",
    "no_disk_check": False,
    "glob": [],
    "exclude": [],
    "format": [],
    "source": [],
    "exclude_source": [],
    "on_the_fly": False,
    "no_directories": False,
    "ignore_existing": False,
    "checksum": False,
    "timeout": 60.0,
    "limit_rate": None,
}


_FILTERS = ("glob", "exclude", "format", "source", "exclude_source", "on_the_fly")
"""The recorded options that choose an item's files."""


def _filters_text(options: dict[str, Any], keys: Iterable[str] = _FILTERS) -> str:
    """The file filters among ``keys`` as they would be typed: ``--glob '*.pdf'``."""
    typed: list[str] = []
    for key in keys:
        flag, value = "--" + key.replace("_", "-"), options[key]
        if isinstance(value, bool):
            typed += [flag] if value else []
        else:
            typed += [f"{flag} {shlex.quote(v)}" for v in value]
    return " ".join(typed)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="iabulk", description="Bulk, resumable downloads from archive.org.")
    parser.add_argument("--version", action="version", version=f"iabulk {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    dl = commands.add_parser(
        "download",
        help="download items, recording every job in a job log",
        description="Download items from a search, an item list or identifiers. "
        "Re-running with the same --joblog resumes where the last run stopped.",
    )
    dl.add_argument("identifiers", nargs="*", metavar="IDENTIFIER")
    src = dl.add_argument_group("source (one of; omitted on resume)")
    src.add_argument("--search", metavar="QUERY", help="an archive.org search query")
    src.add_argument(
        "--search-param",
        action="append",
        default=[],
        metavar="KEY:VALUE",
        help="extra search parameter (repeatable)",
    )
    src.add_argument("--itemlist", metavar="FILE", help="a file of identifiers, - for stdin")
    src.add_argument(
        "--shard",
        metavar="K/N",
        help="keep only shard K of N of the source (default: from a Slurm array "
        "or Kubernetes Indexed Job)",
    )
    src.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="number of shards when the index comes from the scheduler",
    )
    dl.add_argument(
        "--joblog",
        required=True,
        metavar="FILE",
        help="the job log: manifest, progress and resume point",
    )
    dl.add_argument(
        "-w",
        "--workers",
        type=int,
        metavar="N",
        help=f"concurrent items and transfers (default 4, at most {MAX_WORKERS})",
    )
    dl.add_argument("--retries", type=int, metavar="N", help="retries per job (default 3)")
    dl.add_argument(
        "--destdir",
        action="append",
        metavar="DIR",
        help="destination directory, repeatable: items go where there is most room",
    )
    dl.add_argument(
        "--disk-margin",
        metavar="SIZE",
        help="free space to leave on every destination (default 1G)",
    )
    dl.add_argument(
        "--no-disk-check", action="store_true", default=None, help="do not route by free space"
    )
    flt = dl.add_argument_group("file selection (as in ia download)")
    flt.add_argument(
        "-g",
        "--glob",
        action="append",
        metavar="PATTERN",
        help="only files matching PATTERN ('|' separates alternatives)",
    )
    flt.add_argument(
        "--exclude", action="append", metavar="PATTERN", help="skip files matching PATTERN"
    )
    flt.add_argument(
        "-f", "--format", action="append", metavar="FORMAT", help="only files of this format"
    )
    flt.add_argument(
        "--source",
        action="append",
        metavar="SOURCE",
        help="only files of this source (original, derivative, metadata)",
    )
    flt.add_argument(
        "--exclude-source", action="append", metavar="SOURCE", help="skip files of this source"
    )
    flt.add_argument(
        "--on-the-fly",
        action="store_true",
        default=None,
        help="also fetch derivatives made on the fly (EPUB, MOBI, DAISY)",
    )
    flt.add_argument(
        "--no-directories",
        action="store_true",
        default=None,
        help="put files in DESTDIR directly, not DESTDIR/IDENTIFIER",
    )
    flt.add_argument(
        "--ignore-existing",
        action="store_true",
        default=None,
        help="keep any existing file as it is, unchecked",
    )
    flt.add_argument(
        "--checksum",
        action="store_true",
        default=None,
        help="check existing files by md5 (default: size and mtime)",
    )
    dl.add_argument(
        "--limit-rate",
        metavar="RATE",
        help="total bandwidth cap across all transfers, e.g. 10M or 500K (per second)",
    )
    dl.add_argument(
        "--retry-failed",
        action="store_true",
        help="put the permanently failed jobs back to pending, then resume",
    )
    dl.add_argument("--timeout", type=float, metavar="SECONDS", help="network timeout (default 60)")
    dl.add_argument(
        "--config-file", metavar="FILE", help="ia configuration file (default: as ia finds it)"
    )
    dl.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    st = commands.add_parser(
        "status",
        help="summarize one or more job logs",
        description="Progress, failures and throughput of job logs (shards are merged).",
    )
    st.add_argument("joblogs", nargs="+", metavar="JOBLOG")
    shown = st.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="the full analytics, as JSON")
    shown.add_argument(
        "--failed",
        action="store_true",
        help="the permanently failed identifiers, one per line (for --itemlist)",
    )
    st.add_argument(
        "--watch",
        action="store_true",
        help="refresh until Ctrl-C (every 5 s, or --every); never locks the log",
    )
    st.add_argument(
        "--every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between refreshes with --watch (default 5)",
    )

    vf = commands.add_parser(
        "verify",
        help="re-check completed items on disk against their metadata",
        description="Check every file of every completed item (size and md5) against the "
        "item's metadata; with --requeue, put the damaged items back to pending so that the "
        "next `iabulk download --joblog` fetches them again.",
    )
    vf.add_argument("joblog", metavar="JOBLOG")
    vf.add_argument(
        "--requeue",
        action="store_true",
        help="remove damaged files and mark their items pending again",
    )
    vf.add_argument(
        "-w",
        "--workers",
        type=int,
        default=4,
        metavar="N",
        help="items checked at once (default 4)",
    )
    vf.add_argument(
        "--destdir",
        action="append",
        metavar="DIR",
        help="where the items are (default: the destinations the run recorded)",
    )
    vf.add_argument("--config-file", metavar="FILE", help="ia configuration file")
    vf.add_argument("-q", "--quiet", action="store_true", help="print nothing but problems")
    return parser


# -- status --------------------------------------------------------------------


def _existing_logs(paths: Sequence[str]) -> list[JobLog]:
    """The logs at ``paths``, each once (a shard named twice must not count twice)."""
    logs: dict[tuple[int, int], JobLog] = {}
    for path in paths:
        if not os.path.exists(path):
            raise JobLogError(f"no such job log: {path}")
        if not os.path.isfile(path):
            raise JobLogError(f"not a job log (not a regular file): {path}")
        if not os.access(path, os.R_OK):
            raise JobLogError(f"cannot read job log {path}: permission denied")
        if not _looks_like_a_log(path):
            raise JobLogError(f"not a job log: {path}")
        stat = os.stat(path)
        logs.setdefault((stat.st_dev, stat.st_ino), JobLog(path))
    return list(logs.values())


def _analytics(logs: Sequence[JobLog]) -> list[dict[str, Any]]:
    try:
        return [{**log.analytics(), "running": int(_holder(log.path) is not None)} for log in logs]
    except OSError as exc:
        raise JobLogError(f"cannot read job log: {exc.strerror or exc}") from None


def _holder(path: str) -> int | None:
    """The pid of the run holding the log at ``path``, if one does (none if it is missing)."""
    try:
        return lock_holder(path)
    except OSError:
        return None


def cmd_status(args: argparse.Namespace) -> int:
    if not 0 < args.every <= MAX_TIMEOUT:
        raise UsageError(f"--every takes 0 < SECONDS <= {MAX_TIMEOUT}, not {args.every:g}")
    logs = _existing_logs(args.joblogs)
    if not args.watch:
        sys.stdout.write(_status_text(logs, args))
        return 0
    try:  # Ctrl-C is how a watch ends: at any moment, not only between refreshes
        while True:
            text = _status_text(logs, args)
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            sys.stdout.write(f"{stamp}  (every {args.every:g} s; Ctrl-C to stop)\n{text}")
            sys.stdout.flush()
            time.sleep(max(0.5, args.every))
    except KeyboardInterrupt:
        return 0


def _status_text(logs: Sequence[JobLog], args: argparse.Namespace) -> str:
    """What ``status`` prints, each line ending in a newline: ``--watch``
    prints the very same, again and again."""
    reports = _analytics(logs)
    if args.failed:
        return "".join(f"{job['id']}\n" for report in reports for job in report["failed_jobs"])
    for report in reports:
        del report["failed_jobs"], report["completed_jobs"]
    merged = merge_analytics(reports, [log.path for log in logs])
    return (json.dumps(merged, indent=2) if args.json else render_status(merged)) + "\n"


# -- download ------------------------------------------------------------------


@dataclass(frozen=True)
class _ShardChoice:
    """The shard a run is asked to be: given with ``--shard``, or set by a
    scheduler (which yields to the shard an existing log records: a resubmitted
    array task may be numbered afresh)."""

    shard: Shard | None
    given: bool
    problem: str | None = None

    def for_log(self, recorded: Source | None) -> Shard | None:
        """The shard to run as, given the log's source record (None: a new log)."""
        if not self.given and recorded is not None:
            return recorded.shard
        if self.problem is not None:
            raise UsageError(self.problem)
        return self.shard


def _shard_choice(args: argparse.Namespace) -> _ShardChoice:
    try:
        if args.shard:
            return _ShardChoice(parse_shard(args.shard), given=True)
        return _ShardChoice(shard_from_env(os.environ, args.shards), given=False)
    except ShardError as exc:
        return _ShardChoice(None, given=bool(args.shard), problem=str(exc))


def _source_from_args(args: argparse.Namespace) -> Source | None:
    """The source given on the command line (None on a plain resume), not yet
    bound to a shard (see :class:`_ShardChoice`)."""
    given = [bool(args.search), bool(args.itemlist), bool(args.identifiers)]
    if sum(given) > 1:
        raise UsageError("give one source: --search, --itemlist or identifiers")
    if args.search_param and not args.search:
        raise UsageError("--search-param needs --search")
    if not any(given):
        return None
    if args.search:
        params: dict[str, str] = {}
        for pair in args.search_param:
            key, sep, value = pair.partition(":")
            if not sep or not key:
                raise UsageError(f"--search-param takes KEY:VALUE, not {pair!r}")
            params[key] = value  # a key given twice: the last one counts
        pairs = tuple(sorted(params.items()))
        return Source("search", query=args.search, params=pairs)
    if args.itemlist:
        path = itemlist_path(args.itemlist)
        if path != "-" and not os.path.isfile(path):
            if not os.path.exists(path):
                raise UsageError(f"item list not found: {args.itemlist}")
            # A resume may have to read it again: a pipe cannot be read twice.
            raise UsageError(
                f"item list is not a regular file: {args.itemlist} "
                "(pipe it in with --itemlist - instead)"
            )
        if path != "-":
            check_itemlist(path)
        return Source("itemlist", path=path)
    return Source("ids", ids=tuple(args.identifiers))


def _options(args: argparse.Namespace, recorded: dict[str, Any]) -> dict[str, Any]:
    """Defaults, overridden by what the log recorded, overridden by the command line."""
    options = dict(_DEFAULTS)
    options.update({k: v for k, v in recorded.items() if k in _DEFAULTS})
    options.update({k: getattr(args, k) for k in _DEFAULTS if getattr(args, k) is not None})
    if args.destdir is not None:  # recorded for a resume, which may start elsewhere
        if "" in args.destdir:  # as an unset shell variable gives: not "here"
            raise UsageError("--destdir needs a directory, not an empty string")
        options["destdir"] = [os.path.abspath(d) for d in args.destdir]
    elif "destdir" not in recorded:  # the default, "here", is where this run starts
        options["destdir"] = [os.path.abspath(".")]
    return options


def _recorded_options(record: Any) -> dict[str, Any]:
    """The options a ``source`` record holds, each of the type its default has."""
    if record is None:
        return {}
    if not isinstance(record, dict):
        raise ValueError("the options are not an object")
    options = {k: v for k, v in record.items() if k in _DEFAULTS}
    for key, value in options.items():
        default = _DEFAULTS[key]
        if isinstance(default, bool):
            fits = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            kinds = (int, float) if isinstance(default, float) else int
            fits = isinstance(value, kinds) and not isinstance(value, bool)
        elif isinstance(default, list):
            fits = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            fits = isinstance(value, str) or (value is None and default is None)
        if not fits:
            raise ValueError(f"option {key} is {value!r}")
    return options


def _bucket(options: dict[str, Any]) -> TokenBucket | None:
    if options["limit_rate"] is None:
        return None
    try:
        return TokenBucket(parse_rate(str(options["limit_rate"])))
    except ValueError as exc:
        raise UsageError(f"--limit-rate: {exc}") from None


def _check_options(options: dict[str, Any]) -> tuple[int, DiskPool]:
    workers = options["workers"]
    if not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}")
    if not isinstance(options["retries"], int) or options["retries"] < 0:
        raise UsageError(f"--retries must be 0 or more, not {options['retries']}")
    if not options["timeout"] > 0:
        raise UsageError(f"--timeout must be positive, not {options['timeout']}")
    if not options["timeout"] <= MAX_TIMEOUT:
        raise UsageError(f"--timeout must be at most {MAX_TIMEOUT}, not {options['timeout']}")
    try:
        margin = parse_size(str(options["disk_margin"]))
    except ValueError as exc:
        raise UsageError(f"--disk-margin: {exc}") from None
    if options["no_directories"] and len(options["destdir"]) > 1:
        # An item's files would lie loose among other items' on whichever disk
        # had room: nothing could tell which disk holds which item.
        raise UsageError("--no-directories takes one --destdir")
    for dest in options["destdir"]:
        if os.path.exists(dest) and not os.path.isdir(dest):
            raise UsageError(f"destination is not a directory: {dest}")
        if not os.path.isdir(dest):
            raise UsageError(f"destination directory does not exist: {dest}")
        if not os.access(dest, os.W_OK | os.X_OK):
            raise UsageError(f"destination directory is not writable: {dest}")
    pool = DiskPool(options["destdir"], margin=margin, check=not options["no_disk_check"])
    if pool.check and margin >= pool.largest:
        raise UsageError(
            f"--disk-margin {options['disk_margin']} leaves no room on any destination "
            f"(the largest holds {pool.largest:,} bytes); lower it or give --no-disk-check"
        )
    _bucket(options)
    return workers, pool


def _search_fn(config_file: str | None) -> Any:
    def search(query: str, params: dict[str, str]) -> Iterable[str]:
        session = ia_session(config_file, library_retries=True)
        try:
            for result in session.search_items(query, fields=["identifier"], params=params):
                if "error" in result:
                    raise SourceError(f"search failed: {result['error']}")
                yield str(result["identifier"])
        except (OSError, ValueError) as exc:
            raise TransientSourceError(f"search failed: {_cause(exc)}") from None

    return search


def _cause(exc: BaseException) -> str:
    """A failed request's cause in a few words: urllib3 buries it after
    "Caused by", behind the URL (which may be long)."""
    caused = re.search(r"Caused by \w+\(['\"]?(.*?)['\"]?\)+$", str(exc))
    return caused.group(1) if caused else type(exc).__name__


class _Interrupts:
    """First Ctrl-C (or SIGTERM, or the terminal hanging up): stop gracefully.
    Second: exit at once (the log is already durable)."""

    def __init__(self) -> None:
        self.engine: BulkEngine | None = None
        self.count = 0
        self.ui: Any = None
        self.announce: Any = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            if self.ui is not None:
                self.ui.abandon()
            os._exit(130)
        if self.engine is None:
            raise KeyboardInterrupt
        self.engine.request_stop()
        if self.announce is not None:
            self.announce("stopping: in-flight transfers cancelled; Ctrl-C again to quit at once")


class _ForgivingStream:
    """stderr that a closed pipe (``2>&1 | head``) or a hung-up terminal cannot
    turn into a failed run: once a write fails, later ones are dropped. The job
    log, not the display, is the record of the run."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except OSError:
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except OSError:
                self.broken = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _recorded_run(snapshot: Snapshot, path: str) -> tuple[Source | None, dict[str, Any], str]:
    if snapshot.source is None:
        return None, {}, OP
    try:
        record = json.loads(snapshot.source)
        if not isinstance(record, dict):
            raise ValueError("not an object")
        source = Source.from_record(record.get("source"))
        return source, _recorded_options(record.get("options")), str(record.get("op", OP))
    except ValueError as exc:
        raise JobLogError(f"job log {path} has an unreadable source record: {exc}") from None


def cmd_download(args: argparse.Namespace) -> int:
    cli_source = _source_from_args(args)
    shard = _shard_choice(args)
    ia = ia_session(args.config_file)  # a bad config file is refused before the log is touched
    if not _check_log_path(args.joblog):
        # A new log: every option comes from this command line, so a bad one
        # is refused before the log is created.
        if cli_source is None:
            holder = _holder(args.joblog)
            if holder is not None:  # an empty log another run is resolving into
                raise JobLogError(
                    f"job log {args.joblog} is in use by another iabulk process (pid {holder})"
                )
            raise UsageError("nothing to download: give --search, --itemlist or identifiers")
        shard.for_log(None)
        _check_options(_options(args, {}))
    joblog = JobLog(args.joblog)
    try:
        joblog.open_for_append()
    except OSError as exc:
        raise JobLogError(f"cannot open job log {args.joblog}: {exc.strerror or exc}") from None
    interrupts = _Interrupts()
    interrupts.install()
    try:
        code = _download(args, joblog, ia, cli_source, shard, interrupts)
    except KeyboardInterrupt:
        code = 130
        print("iabulk: interrupted; run the same command again to resume", file=sys.stderr)
    except BaseException:
        with contextlib.suppress(OSError):  # the error under way is the one to report
            joblog.close()
        raise
    try:
        joblog.close()
    except OSError as exc:
        raise JobLogError(f"cannot write the job log: {exc.strerror or exc}") from None
    return code


def _difference(given: Source, recorded: Source) -> str:
    """How the source given now differs from the one a log was started for."""
    if given.kind == recorded.kind == "ids" and given.shard == recorded.shard:
        mine, theirs = given.id_set(), recorded.id_set()
        new = sorted(mine - theirs)
        if new:
            return f"these {len(mine)}: {new[0]!r} is not among them"
        return f"these {len(mine)}, which leave out {len(theirs - mine)}"
    return given.describe()


def _check_log_path(path: str) -> bool:
    """Refuse what is not (or cannot become) a job log, before the first write
    touches it; whether it holds anything yet."""
    if os.path.isdir(path):
        raise JobLogError(f"job log is a directory: {path}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise JobLogError(f"directory of the job log does not exist: {parent}")
    if not os.path.exists(path):
        if not os.access(parent, os.W_OK | os.X_OK):
            raise JobLogError(f"cannot create job log in {parent}: permission denied")
        return False
    if not os.path.isfile(path):  # a FIFO would block the read below; a device is no log
        raise JobLogError(f"job log is not a regular file: {path}")
    if not _looks_like_a_log(path):
        raise JobLogError(f"{path} is not a job log; refusing to append to it")
    return os.path.getsize(path) > 0


def _looks_like_a_log(path: str) -> bool:
    """Whether the file is empty or starts with an event line."""
    try:
        with open(path, "rb") as log:
            head = log.read(1 << 16)
    except OSError as exc:
        raise JobLogError(f"cannot read job log {path}: {exc.strerror or exc}") from None
    # A log created just before a power cut may start with zeros where its
    # first line never reached the disk.
    head = head.lstrip(b"\0")
    first = head.split(b"\n", 1)[0]
    return not head or first.lstrip().startswith(b'{"event"') or _is_event_line(first)


def _is_event_line(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("event"), str)


def _download(
    args: argparse.Namespace,
    joblog: JobLog,
    ia: Any,
    cli_source: Source | None,
    shard_choice: _ShardChoice,
    interrupts: _Interrupts,
) -> int:
    snapshot = joblog.snapshot()
    recorded_source, recorded_options, recorded_op = _recorded_run(snapshot, args.joblog)
    if recorded_op != OP:
        raise JobLogError(f"{args.joblog} is a job log for '{recorded_op}', not {OP}")
    if shard_choice.given and recorded_source and recorded_source.shard != shard_choice.shard:
        raise JobLogError(
            f"{args.joblog} is shard {recorded_source.shard or '(none)'} of its source, "
            f"not shard {shard_choice.shard}; use the log of that shard"
        )
    shard = shard_choice.for_log(recorded_source)
    if cli_source is not None:
        cli_source = replace(cli_source, shard=shard)
    if cli_source and recorded_source and not cli_source.same_as(recorded_source):
        raise JobLogError(
            f"{args.joblog} was started for {recorded_source.describe()}, "
            f"not {_difference(cli_source, recorded_source)}; use another --joblog"
        )
    source = cli_source or recorded_source
    if source is None and snapshot.total == 0:
        raise UsageError("nothing to download: give --search, --itemlist or identifiers")
    options = _options(args, recorded_options)
    workers, disks = _check_options(options)
    quiet = bool(args.quiet)

    def say(text: str) -> None:
        if not quiet:
            print(f"iabulk: {text}", file=sys.stderr)

    changed = [k for k in _FILTERS if k in recorded_options and options[k] != recorded_options[k]]
    if changed and snapshot.total:
        was = _filters_text(recorded_options, changed) or "none"
        raise UsageError(
            f"{args.joblog} was started with the file filters {was}: its items are fetched "
            "and verified by them; for other filters, start a new --joblog"
        )

    if workers > POLITE_WORKERS:
        say(f"warning: {workers} workers; archive.org may block clients with many connections")
    if not shard_choice.given and shard_choice.shard not in (None, shard):
        say(
            f"shard {shard or '(none)'}, as {args.joblog} records it "
            f"(the scheduler numbers this task {shard_choice.shard})"
        )
    # A source given again is resolved again: what is new in it (an edited
    # item list, new items in a collection) is added, the rest skipped. A log
    # without a source record was written by another tool (or the upstream
    # engine): its jobs stand, and a source given now is resolved into it.
    if source is not None and (cli_source is not None or not snapshot.resolved):
        if source.kind == "itemlist" and source.path == "-" and cli_source is None:
            raise UsageError(
                "resolve was interrupted and the item list came from stdin: "
                "pass it again with --itemlist -"
            )
        header = {
            "event": "source",
            "op": OP,
            "source": source.to_record(),
            "options": {k: options[k] for k in _DEFAULTS},
        }
        say(f"resolving {source.describe()} …")
        # Only a resolve needs every identifier at hand (16+ bytes a job).
        known = (joblog.snapshot(collect_ids=True).ids if snapshot.total else None) or IdSet()
        search = _search_fn(args.config_file)
        try:
            stats = resolve(joblog, source, OP, known, snapshot.max_seq, search, header, say)
        except TransientSourceError as exc:
            raise SourceError(
                f"{exc}, again and again; the jobs found so far are kept: "
                "run the same command again to go on"
            ) from None
        others = f", {stats.other_shards} in other shards" if source.shard else ""
        say(
            f"resolved: {stats.added} new job(s), {stats.known} already in the log{others}; "
            f"{stats.duplicates} duplicate(s) and {stats.empty} empty line(s) skipped"
        )
        snapshot = joblog.snapshot()
        if snapshot.total == 0 and not stats.other_shards:
            raise UsageError(f"{source.describe()} gave no identifiers; nothing to do")
        if snapshot.total == 0:
            say(f"none of the {stats.other_shards} identifier(s) fall in this shard; nothing to do")
            return 0
    if args.retry_failed and snapshot.failed:
        failed = joblog.analytics()["failed_jobs"]
        count = joblog.requeue(failed.seqs(), reason="retry-failed")
        say(f"{count} failed job(s) put back to pending")
        snapshot = joblog.snapshot()
    return _run(args, joblog, ia, snapshot, options, workers, disks, quiet, interrupts, say)


def _download_worker(
    ia: Any,
    options: dict[str, Any],
    disks: DiskPool,
    transfers: int,
    **tuning: Any,
) -> DownloadWorker:
    """A download worker with the ia session's configuration and the run's file selection."""
    from internetarchive.auth import S3Auth

    keys = (ia.access_key, ia.secret_key)
    return DownloadWorker(
        session_factory(ia, transfers),
        f"{ia.protocol}//{ia.host}",
        disks,
        DownloadOptions(
            glob=options["glob"],
            exclude=options["exclude"],
            formats=options["format"],
            sources=options["source"],
            exclude_sources=options["exclude_source"],
            on_the_fly=options["on_the_fly"],
            no_directories=options["no_directories"],
            ignore_existing=options["ignore_existing"],
            checksum=options["checksum"],
            timeout=float(options["timeout"]),
        ),
        transfers=transfers,
        gate=RateGate(),
        metadata_auth=S3Auth(*keys) if all(keys) else None,
        **tuning,
    )


def _run(
    args: argparse.Namespace,
    joblog: JobLog,
    ia: Any,
    snapshot: Snapshot,
    options: dict[str, Any],
    workers: int,
    disks: DiskPool,
    quiet: bool,
    interrupts: _Interrupts,
    say: Any,
) -> int:
    pending = snapshot.pending_jobs
    for job in pending:
        if job.get("op", OP) != OP:
            raise JobLogError(f"{args.joblog} holds '{job.get('op')}' jobs, not {OP}")
        break
    if len(pending) == 0:
        say(f"nothing left to do: {snapshot.completed} completed, {snapshot.failed} failed")
        return 1 if snapshot.failed else 0
    board = TransferBoard(workers)
    limit = AdaptiveLimit(workers)
    worker = _download_worker(
        ia, options, disks, workers, board=board, limit=limit, bucket=_bucket(options)
    )
    ui = make_ui(board, len(pending), quiet, level=lambda: f"{limit.current}/{limit.maximum}")
    limit.on_change = lambda level, most, why: ui.info(f"transfers {level}/{most}: {why}")
    filters = _filters_text(options) or "the metadata's checks"
    worker.on_unselected = lambda n: ui.info(
        f"warning: the first {n} items had no file passing {filters}; they are recorded "
        "completed: if the filters are wrong, stop (Ctrl-C) and start a new --joblog"
    )
    engine = BulkEngine(joblog, worker, workers=workers, retries=options["retries"], observer=ui)
    interrupts.engine = engine
    interrupts.ui = ui
    interrupts.announce = ui.error if quiet else ui.info
    if snapshot.in_flight:
        ui.info(
            f"resuming: {len(pending)} pending job(s), {snapshot.in_flight} cut short last time"
        )
    ui.start()
    try:
        summary = engine.run(pending)
    except StopRun as exc:
        raise DestinationError(
            f"{exc}; stopped: nothing is lost, run the same command again once it is fixed"
        ) from None
    except OSError as exc:
        raise JobLogError(f"cannot write the job log: {exc.strerror or exc}") from None
    finally:
        ui.close()
        worker.close()
    final = joblog.snapshot()
    left = final.pending
    if worker.unselected:
        say(
            f"{worker.unselected} item(s) completed with no file passing {filters}; "
            "nothing of theirs was written"
        )
    if worker.gate.closures:  # the log has no line for them: this is where a user learns of them
        say(
            f"the server asked to slow down {worker.gate.closures} time(s) (HTTP 429/503): "
            f"each request waited as told; transfers at the end: {limit.current}/{limit.maximum}"
        )
    line = (
        f"{final.completed} completed, {final.failed} failed, {left} pending "
        f"of {final.total} job(s)"
    )
    if summary.interrupted and left:
        say(f"interrupted: {line}; run the same command again to resume")
        return 130
    if final.failed:
        print(f"iabulk: {line}; list them with: iabulk status {args.joblog}", file=sys.stderr)
        return 1
    say(f"done: {line}")
    return 1 if left else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from iabulk.verify import VerifyReport, verify

    [joblog] = _existing_logs([args.joblog])
    snapshot = joblog.snapshot()
    _, recorded, op = _recorded_run(snapshot, args.joblog)
    if op != OP:
        raise JobLogError(f"{args.joblog} is a job log for '{op}', not {OP}")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS}, not {args.workers}")
    options = {**_DEFAULTS, **{k: v for k, v in recorded.items() if k in _DEFAULTS}}
    destdirs = args.destdir or options["destdir"]
    for dest in destdirs:
        if not os.path.isdir(dest):
            raise UsageError(f"destination directory does not exist: {dest}")
    if not args.destdir:  # also where items completed: a resume may have been given others
        used = joblog.analytics()["disks"]
        for dest, figures in used.items():
            if dest and figures["completed"] and not os.path.isdir(dest):
                raise UsageError(
                    f"destination {dest} (where {figures['completed']} completed item(s) went) "
                    "does not exist: mount it, or name every destination with --destdir"
                )
        destdirs = [*destdirs, *(d for d in used if d not in destdirs and os.path.isdir(d))]
    if args.requeue:  # hold the log before removing anything, so the requeue cannot be refused
        try:
            joblog.open_for_append()
        except OSError as exc:
            raise JobLogError(f"cannot open job log {args.joblog}: {exc.strerror or exc}") from None
    ia = ia_session(args.config_file)
    worker = _download_worker(ia, options, DiskPool(destdirs, check=False), 1)
    report = VerifyReport()
    try:
        verify(joblog, worker, args.workers, args.quiet, args.requeue, report)
    finally:
        worker.close()
        joblog.close()
        if report.requeued:  # interrupted or not: these are pending now
            print(
                f"iabulk: {len(report.requeued)} item(s) put back to pending; fetch them again "
                f"with: iabulk download --joblog {args.joblog}",
                file=sys.stderr,
            )
    return 0 if report.ok else 1


_RECORDED_ARGS = ("identifiers", "search", "search_param", "itemlist", *_DEFAULTS)
"""What ``download`` writes into the job log: the source and the options."""


def _refuse_undecodable(values: Iterable[Any]) -> None:
    """Arguments end up in the job log, which is UTF-8: bytes that are not
    (a Latin-1 file name, say) are refused here rather than half-way in."""
    for value in values:
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                    raise UsageError(f"not valid UTF-8: {shown!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if not isinstance(sys.stderr, _ForgivingStream) and sys.stderr is not None:
        sys.stderr = _ForgivingStream(sys.stderr)
    try:
        args = parser.parse_args(argv)
        if args.command == "download":
            _refuse_undecodable(getattr(args, name) for name in _RECORDED_ARGS)
            return cmd_download(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "verify":
            return cmd_verify(args)
        parser.print_help(sys.stderr)
        return 2
    except IabulkError as exc:
        print(f"iabulk: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("iabulk: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # the promise: one line, never a traceback
        print(f"iabulk: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("IABULK_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
