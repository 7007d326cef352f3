"""End-to-end download benchmark: iabulk against the released ``ia`` command, in one run.

    python benches/download.py                          # every preset, full scale
    python benches/download.py --scale 0.1              # a quick run
    python benches/download.py --presets many-small,resume

For each preset it starts the archive stand-in (``python -m tests.standin``) in a
process of its own, writes the item list, and measures, one after another:

* ``capacity``: 10 parallel ``curl`` processes fetching the preset's file bodies
  straight from the data nodes (keep-alive within each curl, no metadata, no
  redirect, output to /dev/null): the stand-in's ceiling on this machine;
* ``capacity + md5`` (every preset but tiny-100k): the same curls, each
  piping its bodies into ``openssl md5``, the MD5 code that iabulk's hashlib
  runs too. Nothing is written to disk and nothing is compared; it shows the
  ceiling for any client that checks every byte's md5 on this machine;
* ``ia seq``: the sequential baseline, ONE ``ia download --itemlist FILE``
  process (``ia download ITEM`` for the one-item preset). This is the strongest
  honest "sequential ia": it pays interpreter start-up once, where a shell loop
  of one ``ia download ITEM`` per item pays it per item;
* ``ia xargs``: ``xargs -P 10 -n 1 ia download`` over the item list (for the
  one-item preset, ``ia list ITEM | xargs -P 10 -n K ia download ITEM``, the
  only way to fan ``ia`` out over one item);
* ``iabulk``: ``iabulk download --itemlist FILE -w 10`` (a fresh job log).

Repeated runs (``--repeat``; 3 per tool, 1 for many-small) are interleaved and
each tool's best counts. Before them, one untimed ``ia seq`` run writes the
preset once: on this kind of machine the first gigabyte written after a quiet
spell goes about twice as fast as the next (ia seq: 2.70 s first, then 5.00 s
and 5.30 s), and no timed run should get that seat alone. The cause is
memory, not order: outputs are kept until the preset ends, so every later run
writes into page cache the VM has not touched yet. That costs ``ia`` 2.9-4.7 s
of system time per GB, against 1.0-1.3 s when it reuses memory freed just
before (the previous run's output, deleted). iabulk releases each file's
pages once it is synced (``iabulk.durable``) and keeps reusing them, so it
does not pay this: with every output deleted before the next run, few-large
measured 1.21-1.24x on a quiet machine (0.98-1.12x on a busy one, before the
TLS record reader) where this bench printed 1.8-1.9x.

Every run writes to its own directory under ``bench-out/download/``; its output
is verified (each file the metadata lists with an md5: present, size and md5
equal; ``<id>_files.xml`` present; no leftover partial files) before its time
counts. A run that fails verification is reported as FAILED and not timed.

Columns: wall time, items/s, MB/s (10^6 bytes of verified files per second),
CPU seconds (user+sys of the whole process tree, from ``wait4``), peak RSS of the
client (its VmHWM, or for ``ia xargs`` the sum of VmRSS over the process tree,
sampled every 50 ms once the client has started), connections the stand-in
accepted, and the ratio of the run's wall time to ``ia seq``'s.

``tiny-100k`` measures engine overhead: iabulk over every item, plus ``ia seq``
and ``ia xargs`` over a sample (``--tiny-sample``, extrapolated; marked ``~``),
plus ``bare http``: a minimal client doing exactly iabulk's HTTP work with
iabulk's own HTTP code (its worker's metadata and file requests: a metadata
GET, then every listed file, the first through its ``/download`` redirect,
the others straight from the data-node directory it named, through the same
session factory), 10 threads, bodies discarded, over the same items.
Engine overhead per job = (iabulk CPU - bare http CPU) / jobs: what iabulk
spends beyond the HTTP work (file writes, md5, fsync, the job log, the engine,
the UI). The TLS/proxy/HTTP work itself is the same in both. Two more
baselines split that up: ``bare http+files`` also writes each body to its
file, plainly; ``bare http+durable`` writes it as iabulk keeps a file (md5,
fsync, cached pages released, mtime, rename into place, the item's directory
fsynced), so iabulk's difference from it is the engine, the job log and the
worker's bookkeeping.
The bare clients and iabulk run in interleaved rounds (``--repeat``; by
default 3 below 50,000 items, 1 above), and the median of the rounds'
differences is reported: identical 5,000-item runs on a shared 2-core
machine differ by up to ~0.7 ms/job.

``resume`` measures resuming a 10M-job log with 4M pending (``benches/genlog.py``,
cached in ``bench-out/``): the time from starting ``iabulk download --joblog J``
to the stand-in's first metadata request, and iabulk's peak RSS (VmHWM) at that
moment. The log is truncated back to its original length afterwards, so it can
be reused.

Ratios are measured in the same run; nothing here asserts an absolute time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from tests.standin.corpus import Corpus  # noqa: E402

BIN = Path(sys.executable).parent
PRESETS = ("many-small", "few-large", "wide-item", "tiny-100k", "resume")
PARALLEL = 10
BULK_OPTIONS = [
    "-w",
    str(PARALLEL),
    "--destdir",
    "{dest}",
    "--disk-margin",
    "0",
    "--joblog",
    "{dest}.jsonl",
]
"""How every preset runs iabulk, after its source."""
CA_MODE = "standin"
"""``standin``: clients trust the stand-in's one-certificate CA bundle (the
default; cheapest for every client). ``realistic``: that CA plus the system's
roots, a bundle the size of the certifi bundle real clients load."""
TARGETS = {
    "many-small": 4.0,
    "wide-item": 5.0,
    "few-large": 1.2,
}


# -- processes -------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


_OWN_CMDLINE = Path("/proc/self/cmdline").read_bytes()


def _has_exec(pid: int) -> bool:
    """Whether ``pid``, forked from this process, runs its own program yet."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() not in (_OWN_CMDLINE, b"")
    except OSError:
        return False


def _rss_kib(pid: int, field_name: bytes = b"VmRSS:") -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(field_name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Measured:
    wall: float
    cpu: float
    peak_rss_kib: int
    returncode: int


def measure(
    argv: Sequence[str] | str,
    env: dict[str, str],
    log: Path,
    cwd: Path | None = None,
    shell: bool = False,
    tree: bool = False,
) -> Measured:
    """Run a command; wall time, CPU of its tree, and peak RSS (tree sum if ``tree``)."""
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            shell=shell,
            start_new_session=True,
        )
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.05):
                if not _has_exec(proc.pid):
                    continue  # still a copy of this process, with its memory
                if tree:
                    peak = max(peak, sum(_rss_kib(p) for p in _tree(proc.pid)))
                else:
                    peak = max(peak, _rss_kib(proc.pid, b"VmHWM:"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    # Not usage.ru_maxrss: Linux counts in it the memory the child had before
    # exec, a copy of this process's (180 MB while tiny-100k's items are loaded).
    return Measured(wall, cpu, peak, proc.returncode)


# -- the stand-in ----------------------------------------------------------------


class Standin:
    """``python -m tests.standin`` in its own process."""

    def __init__(self, preset: str, scale: float, faults: str = "") -> None:
        cmd = [
            sys.executable,
            "-m",
            "tests.standin",
            "--preset",
            preset,
            "--scale",
            str(scale),
            "--warm",
        ]
        if faults:
            cmd += ["--faults", faults]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the stand-in did not start")
        ready = json.loads(line)
        self.env_vars: dict[str, str] = ready["env"]
        self.control: str = ready["control"]
        self.proxy: str = ready["proxy"]

    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.env_vars, "PYTHONUNBUFFERED": "1"}
        env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
        if CA_MODE == "realistic":
            # The stand-in's CA plus the system's ~140 roots: a bundle the size
            # of certifi's, which every client parses per connection it opens
            # unless it caches the SSL context.
            bundle = ROOT / "bench-out" / "download" / "ca-realistic.pem"
            system = Path("/etc/ssl/certs/ca-certificates.crt")
            bundle.write_bytes(
                Path(self.env_vars["REQUESTS_CA_BUNDLE"]).read_bytes() + system.read_bytes()
            )
            for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
                env[name] = str(bundle)
        return env

    def _control(self, method: str, path: str) -> dict[str, Any]:
        import http.client
        from urllib.parse import urlsplit

        url = urlsplit(self.control)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        try:
            conn.request(method, f"{url.path}{path}")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def counters(self) -> dict[str, Any]:
        return self._control("GET", "/counters")

    def reset(self) -> None:
        self._control("POST", "/counters/reset")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- verification ----------------------------------------------------------------


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify(corpus: Corpus, ids: Sequence[str], dest: Path) -> tuple[bool, str, int]:
    """(ok, first problem, verified bytes) for ``dest/<id>/<name>`` of every item."""
    total = 0
    for identifier in ids:
        root = dest / identifier
        for name, (size, md5) in corpus.expected(identifier).items():
            path = root / name
            try:
                st = path.stat()
            except OSError:
                return False, f"missing {identifier}/{name}", total
            if st.st_size != size:
                return False, f"size of {identifier}/{name}: {st.st_size} != {size}", total
            if _md5_file(path) != md5:
                return False, f"md5 of {identifier}/{name}", total
            total += size
        if not (root / f"{identifier}_files.xml").exists():
            return False, f"missing {identifier}/{identifier}_files.xml", total
    for dirpath, _, files in os.walk(dest):
        for name in files:
            if name.endswith(".iabulk-part"):
                return False, f"leftover partial file {name} in {dirpath}", total
    return True, "", total


# -- one row ---------------------------------------------------------------------


@dataclass
class Row:
    tool: str
    items: int
    wall: float | None = None
    cpu: float | None = None
    rss_kib: int | None = None
    nbytes: int = 0
    connections: int | None = None
    requests: int | None = None
    note: str = ""
    failed: str = ""
    extrapolated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def run_tool(
    srv: Standin,
    corpus: Corpus,
    ids: Sequence[str],
    tool: str,
    argv: Sequence[str] | str,
    dest: Path,
    logdir: Path,
    shell: bool = False,
    tree: bool = False,
) -> Row:
    """One timed run writing into ``dest`` (``{dest}`` in ``argv`` names it), then verified.

    Outputs are kept until the preset ends: deleting a hundred thousand files
    makes ext4 slower to create new ones for the next ~30 s (it skips recently
    freed inodes), which would tax whichever tool runs next. Dirty pages are
    written back (``sync``) before each run, so no run pays for the last
    one's writeback (``ia`` never fsyncs; iabulk fsyncs every file).
    """
    if isinstance(argv, str):
        argv = argv.replace("{dest}", str(dest))
    else:
        argv = [a.replace("{dest}", str(dest)) for a in argv]
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    os.sync()
    srv.reset()
    m = measure(
        argv, srv.env(), logdir / f"{dest.name}.log", cwd=dest.parent, shell=shell, tree=tree
    )
    counters = srv.counters()
    row = Row(
        tool, len(ids), connections=counters["connections_opened"], requests=counters["requests"]
    )
    if m.returncode != 0:
        row.failed = f"exit {m.returncode} (see {logdir / dest.name}.log)"
    else:
        ok, problem, nbytes = verify(corpus, ids, dest)
        if not ok:
            row.failed = problem
        else:
            row.wall, row.cpu, row.rss_kib, row.nbytes = m.wall, m.cpu, m.peak_rss_kib, nbytes
    return row


def extrapolate(row: Row, sample: Sequence[str], ids: Sequence[str]) -> Row:
    """Scale a run over ``sample`` up to all of ``ids`` (marked ``~``)."""
    factor = len(ids) / len(sample)
    if not row.failed and factor != 1:
        assert row.wall is not None and row.cpu is not None
        row.wall, row.cpu = row.wall * factor, row.cpu * factor
        row.nbytes = int(row.nbytes * factor)
        row.connections = int((row.connections or 0) * factor)
        row.requests = int((row.requests or 0) * factor)
        row.items = len(ids)
        row.extrapolated = True
        row.note = f"from {len(sample)} items"
    return row


def best_of(rows: list[Row]) -> Row:
    """The fastest verified run (a shared machine only ever slows a run down)."""
    return _stand_in(rows, min(rows, key=lambda r: r.wall or 0.0), "best of", "wall")


def median_of(rows: list[Row]) -> Row:
    """The run with the median CPU time (the figure tiny-100k compares)."""
    median = sorted(rows, key=lambda r: r.cpu or 0.0)[(len(rows) - 1) // 2]
    return _stand_in(rows, median, "median CPU of", "cpu")


def _stand_in(rows: list[Row], chosen: Row, label: str, figure: str) -> Row:
    """``chosen`` noted with every run's ``figure``; FAILED if any run failed."""
    failed = [r for r in rows if r.failed]
    if failed:
        return failed[0]
    if len(rows) > 1:
        figures = ", ".join(f"{getattr(r, figure):.2f}" for r in rows)
        chosen.note = (chosen.note + "; " if chosen.note else "") + f"{label} {figures}"
    return chosen


CAPACITY, CAPACITY_MD5 = "capacity (10 curl)", "capacity + md5"  # row names


def capacity(
    srv: Standin, corpus: Corpus, ids: Sequence[str], logdir: Path, hashed: bool = False
) -> Row:
    """10 parallel curls fetching every file body from its data node, keep-alive per curl.

    ``hashed``: each curl's bodies go through ``openssl md5`` instead of to /dev/null.
    """
    urls = []
    nbytes = 0
    for identifier in ids:
        item = corpus[identifier]
        node, n = item.servers[0], item.dir_number
        for name, (size, _) in corpus.expected(identifier).items():
            path = "/".join(quote(p, safe="") for p in f"{identifier}/{name}".split("/"))
            urls.append(f"https://{node}/{n}/items/{path}")
            nbytes += size
    configs = []
    for k in range(PARALLEL):
        part = urls[k::PARALLEL]
        if not part:
            continue
        cfg = logdir / f"curl-{k}.cfg"
        output = "-" if hashed else "/dev/null"
        cfg.write_text("".join(f'url = "{u}"\noutput = "{output}"\n' for u in part))
        configs.append(cfg)
    # Every curl's exit status counts; with pipefail, also behind openssl's.
    sink = " | openssl md5 >/dev/null" if hashed else ""
    jobs = (f"(set -o pipefail; curl -sS --fail -K {c}{sink})" for c in configs)
    script = "".join(f'{job} & p="$p $!"; ' for job in jobs)
    script += "for q in $p; do wait $q || exit 1; done"
    srv.reset()
    log = logdir / ("capacity-md5.log" if hashed else "capacity.log")
    m = measure(["bash", "-c", script], srv.env(), log, tree=True)
    counters = srv.counters()
    row = Row(
        CAPACITY_MD5 if hashed else CAPACITY,
        len(ids),
        connections=counters["connections_opened"],
        requests=counters["requests"],
        note="data through openssl md5" if hashed else "data only",
    )
    if (
        m.returncode
        or counters["requests_by_kind"]["data"] != len(urls)
        or counters["status"].get("200") != len(urls)
    ):
        row.failed = f"exit {m.returncode}; curl fetched {counters['status']} of {len(urls)}"
    else:
        row.wall, row.cpu, row.rss_kib, row.nbytes = m.wall, m.cpu, m.peak_rss_kib, nbytes
    return row


# -- tables ----------------------------------------------------------------------


def _fmt_row(row: Row, base: Row | None) -> str:
    if row.failed:
        return f"  {row.tool:<20} {'FAILED':>9}  {row.failed}" + (
            f"  (conns {row.connections})" if row.connections is not None else ""
        )
    assert row.wall is not None and row.cpu is not None and row.rss_kib is not None
    tilde = "~" if row.extrapolated else " "
    ratio = ""
    if base is not None and base.wall and not base.failed and row is not base:
        ratio = f"{base.wall / row.wall:6.2f}x"
    elif row is base:
        ratio = "  1.00x"
    conns = "" if row.connections is None else f"{row.connections:>7d}"
    reqs = "" if row.requests is None else f"{row.requests:>8d}"
    return (
        f"  {row.tool:<20} {tilde}{row.wall:8.2f}s {row.items / row.wall:9.1f} "
        f"{row.nbytes / row.wall / 1e6:8.1f} {row.cpu:8.2f} {row.rss_kib / 1024:8.1f} "
        f"{conns} {reqs} {ratio:>8} {row.note}"
    )


HEADER = (
    f"  {'tool':<20} {'wall':>9}  {'items/s':>8} {'MB/s':>8} {'CPU s':>8} {'RSS MB':>8} "
    f"{'conns':>7} {'requests':>8} {'vs seq':>8}"
)


def print_table(title: str, rows: list[Row], base: Row | None, out: Callable[[str], None]) -> None:
    out(f"\n== {title}")
    out(HEADER)
    for row in rows:
        out(_fmt_row(row, base))


# -- presets ---------------------------------------------------------------------


def ids_and_list(corpus: Corpus, path: Path) -> list[str]:
    ids = sorted(corpus.identifiers())
    path.write_text("".join(f"{i}\n" for i in ids))
    return ids


def bench_preset(
    preset: str, scale: float, args: argparse.Namespace, out: Callable[[str], None]
) -> list[Row]:
    outdir = ROOT / "bench-out" / "download" / preset
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    corpus = Corpus.preset(preset, scale=scale)
    corpus.warm()
    itemlist = outdir / "items.txt"
    ids = ids_and_list(corpus, itemlist)
    repeat = args.repeat if args.repeat is not None else (1 if preset == "many-small" else 3)
    srv = Standin(preset, scale)
    rows: list[Row] = []
    try:
        rows.append(capacity(srv, corpus, ids, outdir))
        rows.append(capacity(srv, corpus, ids, outdir, hashed=True))
        ia = str(BIN / "ia")
        iabulk = str(BIN / "iabulk")
        if preset == "wide-item":
            (ident,) = ids
            seq_cmd: Sequence[str] | str = [ia, "download", "--destdir", "{dest}", ident]
            per = max(1, -(-(len(corpus[ident].files) + 2) // PARALLEL))
            fan = (
                f"{ia} list {ident} | xargs -d '\\n' -P {PARALLEL} -n {per} "
                f"{ia} download --destdir {{dest}} {ident}"
            )
            bulk = [iabulk, "download", ident]
        else:
            seq_cmd = [ia, "download", "--itemlist", str(itemlist), "--destdir", "{dest}"]
            fan = f"xargs -P {PARALLEL} -n 1 {ia} download --destdir {{dest}} < {itemlist}"
            bulk = [iabulk, "download", "--itemlist", str(itemlist)]
        bulk += BULK_OPTIONS
        runs: dict[str, list[Row]] = {tool: [] for tool in args.tools}
        if repeat > 1:  # the untimed warm-up (see the module docstring)
            run_tool(srv, corpus, ids, "warm-up", seq_cmd, outdir / "warm-up", outdir)
        for k in range(repeat):  # interleaved, so a burst of load hits every tool alike
            for tool in args.tools:
                dest = outdir / f"{tool}-{k}"
                if tool == "ia-seq":
                    runs[tool].append(run_tool(srv, corpus, ids, "ia seq", seq_cmd, dest, outdir))
                elif tool == "ia-xargs":
                    runs[tool].append(
                        run_tool(
                            srv,
                            corpus,
                            ids,
                            f"ia xargs -P {PARALLEL}",
                            fan,
                            dest,
                            outdir,
                            shell=True,
                            tree=True,
                        )
                    )
                elif tool == "iabulk":
                    Path(f"{dest}.jsonl").unlink(missing_ok=True)
                    runs[tool].append(
                        run_tool(srv, corpus, ids, f"iabulk -w {PARALLEL}", bulk, dest, outdir)
                    )
                elif tool in DIAGNOSTICS:
                    Path(f"{dest}.jsonl").unlink(missing_ok=True)
                    argv = variant_command(tool, bulk, outdir)
                    runs[tool].append(
                        run_tool(
                            srv, corpus, ids, DIAGNOSTICS[tool], argv, dest, outdir, shell=True
                        )
                    )
        rows.extend(best_of(r) for r in runs.values() if r)
        if preset != "wide-item" and args.loop_sample > 0:
            # The other "sequential ia": a shell loop, one `ia download ITEM` per item.
            sample = ids[: args.loop_sample]
            (outdir / "sample-loop.txt").write_text("".join(f"{i}\n" for i in sample))
            loop = (
                f'while read -r id; do {ia} download --destdir {{dest}} "$id" || exit 1; '
                f"done < {outdir / 'sample-loop.txt'}"
            )
            row = run_tool(
                srv,
                corpus,
                sample,
                "ia loop (per item)",
                loop,
                outdir / "ia-loop",
                outdir,
                shell=True,
                tree=True,
            )
            rows.insert(2, extrapolate(row, sample, ids))
    finally:
        srv.stop()
        cleanup(outdir)
    base = next((r for r in rows if r.tool == "ia seq"), None)
    print_table(
        f"{preset} (scale {scale:g}: {len(ids)} items, "
        f"{sum(len(corpus.expected(i)) + 1 for i in ids)} files; "
        f"{'best of ' + str(repeat) if repeat > 1 else 'one run'} per tool)",
        rows,
        base,
        out,
    )
    return rows


def cleanup(outdir: Path) -> None:
    """Remove a preset's downloads (keep its logs)."""
    for path in outdir.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


DIAGNOSTICS = {
    "nostart": "  diag: no slow start",
    "grouped-sync": "  diag: grouped syncfs",
}
"""Diagnostic iabulk runs (not what iabulk does; never counted against a target):

* ``nostart``: the adaptive transfer limit starts at ``-w`` instead of 2, i.e.
  what the polite slow start (2 -> 4 -> 8 -> 10 over ~3 s) costs a run.
* ``grouped-sync``: an item's files are written without fsync; one ``syncfs``
  shared by every worker waiting at that moment makes their data durable, then
  the renames, then a second shared ``syncfs`` makes the names durable. The
  order is iabulk's, with two barriers per item in place of one fsync per file
  and directory. What it leaves out, and why iabulk does not do it: a writeback
  error reported to one barrier is not carried to items still writing; it is
  Linux-only (and reports errors only from 5.8 on); a barrier waits for every
  dirty page of the file system, other programs' too; and dirty pages are not
  released after each file. On tiny items it was 0.3-0.9 ms/job cheaper than
  iabulk when every run's output had just been deleted (ext4 creating files
  right after a mass delete); with outputs kept, as here, between 0.2 dearer
  and 0.4 cheaper per round (0.15 cheaper over a 10,000-item run).
"""


def variant_command(tool: str, bulk: Sequence[str], outdir: Path) -> str:
    """The shell command running diagnostic ``tool`` with iabulk's arguments ``bulk``."""
    script = outdir / "iabulk_variant.py"
    script.write_text(VARIANT)
    args = " ".join(shlex.quote(a) for a in bulk[1:])
    # exec: the measured process is the variant itself, not a shell waiting for it
    return f"exec env VARIANT={tool} {sys.executable} {script} {args}"


VARIANT = r"""
import os, sys
variant = os.environ.get("VARIANT", "")
if variant == "nostart":
    from iabulk import throttle
    original = throttle.AdaptiveLimit.__init__
    def init(self, maximum, start=2, *args, **kwargs):
        original(self, maximum, maximum, *args, **kwargs)
    throttle.AdaptiveLimit.__init__ = init
elif variant == "grouped-sync":
    import ctypes, threading
    from iabulk.workers import download
    libc = ctypes.CDLL(None, use_errno=True)
    os.fsync = lambda fd: None  # every file and directory fsync: the barriers cover them
    cond = threading.Condition()
    state = {"started": 0, "done": 0, "running": False, "error": None}
    def barrier(path):
        # Returns once a syncfs that began after this call has ended.
        with cond:
            wanted = state["started"] + 1
            while state["done"] < wanted and state["error"] is None:
                if state["running"]:
                    cond.wait()
                    continue
                state["running"] = True
                state["started"] += 1
                ticket = state["started"]
                cond.release()
                try:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        if libc.syncfs(fd):
                            state["error"] = OSError(ctypes.get_errno(), "syncfs failed")
                    finally:
                        os.close(fd)
                finally:
                    cond.acquire()
                    state["running"] = False
                    state["done"] = ticket
                    cond.notify_all()
            if state["error"] is not None:
                raise state["error"]
    finish_file = download._finish_file  # mtime, rename: deferred to the item's end
    deferred = []
    deferred_lock = threading.Lock()
    def defer(part, target, f):
        with deferred_lock:
            deferred.append((part, target, f))
    def sync_dirs(root, files):
        with deferred_lock:
            mine = [d for d in deferred if d[1].startswith(root + os.sep)]
            deferred[:] = [d for d in deferred if not d[1].startswith(root + os.sep)]
        barrier(root)
        for part, target, f in mine:
            finish_file(part, target, f)
        barrier(root)
    download._finish_file = defer
    download._sync_dirs = sync_dirs
from iabulk.cli import main
sys.exit(main(sys.argv[1:]))
"""

BARE_HTTP = r"""
import hashlib, os, sys, threading
from internetarchive.auth import S3Auth
from iabulk.disk import DiskPool
from iabulk.session import ia_session, session_factory
from iabulk.durable import sync_and_release
from iabulk.workers.download import DownloadWorker, _Item, _finish_file, _sync_dirs
ids = open(sys.argv[1]).read().split()
workers = int(sys.argv[2])
dest = sys.argv[3] if len(sys.argv) > 3 else None
durable = len(sys.argv) > 4 and sys.argv[4] == "durable"
ia = ia_session(None)  # the same configuration, cookies and session class as iabulk
keys = (ia.access_key, ia.secret_key)
# iabulk's own HTTP code (metadata, /download, data-node requests), nothing else of it.
http = DownloadWorker(session_factory(ia, workers), f"{ia.protocol}//{ia.host}",
                      DiskPool([dest or "."], check=False), transfers=workers,
                      metadata_auth=S3Auth(*keys) if all(keys) else None)
cancel = threading.Event()
it = iter(ids)
lock = threading.Lock()
def work():
    while True:
        with lock:
            ident = next(it, None)
        if ident is None:
            return
        files, _ = http._select(ident, http._metadata(ident, cancel))
        item = _Item(ident, "", None)
        for f in files:
            r = http._request_file(item, f, {}, cancel)
            assert r.status_code == 200, r.status_code
            if dest is None:
                for chunk in r.iter_content(1 << 20):
                    pass
            else:
                path = os.path.join(dest, ident, f.name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if not durable:
                    with open(path, "wb") as out:
                        for chunk in r.iter_content(1 << 20):
                            out.write(chunk)
                else:  # as iabulk keeps a file: md5, fsync, release, mtime, rename, dir fsync
                    digest = hashlib.md5()
                    with open(path + ".part", "wb") as out:
                        for chunk in r.iter_content(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
                        out.flush()
                        sync_and_release(out.fileno())
                    assert f.md5 is None or digest.hexdigest() == f.md5
                    _finish_file(path + ".part", path, f)
            r.close()
        if durable:
            _sync_dirs(os.path.join(dest, ident), files)
threads = [threading.Thread(target=work) for _ in range(int(sys.argv[2]))]
for t in threads: t.start()
for t in threads: t.join()
"""

ENGINE_ONLY = r"""
import json, os, resource, sys, time
from iabulk.engine import BulkEngine
from iabulk.joblog import JobLog
from iabulk.workers.base import BaseWorker, WorkerResult
n, workers, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
log = JobLog(path)
for seq in range(1, n + 1):
    log.write_job(seq, f"tiny-{seq:06d}", "download")
log.write_record({"event": "resolved"})
log.sync()
class Done(BaseWorker):
    def execute(self, job, cancel):
        return WorkerResult(True, job["id"], extra={"item_size": 1024, "files": 3})
snap = log.snapshot()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
BulkEngine(log, Done(), workers=workers).run(snap.pending_jobs)
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
log.close()
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"cpu": cpu, "wall": t1 - t0}))
"""


def bench_tiny(scale: float, args: argparse.Namespace, out: Callable[[str], None]) -> list[Row]:
    preset = "tiny-100k"
    outdir = ROOT / "bench-out" / "download" / preset
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    corpus = Corpus.preset(preset, scale=scale)
    corpus.warm()
    items = outdir / "items.txt"
    ids = ids_and_list(corpus, items)
    samples = {}
    for name, size in (("seq", args.tiny_sample), ("xargs", args.tiny_xargs_sample)):
        sample = ids[: max(1, min(len(ids), size))]
        (outdir / f"sample-{name}.txt").write_text("".join(f"{i}\n" for i in sample))
        samples[name] = sample
    srv = Standin(preset, scale)
    rows: list[Row] = []
    ia, iabulk = str(BIN / "ia"), str(BIN / "iabulk")

    def bare(name: str, files: str, round_: int) -> Row:
        """``files``: "" (bodies discarded), "plain" or "durable" (as iabulk keeps them)."""
        script = outdir / "bare_http.py"
        script.write_text(BARE_HTTP)
        dest = outdir / f"bare-{files or 'http'}-{round_}"
        dest.mkdir()
        argv = [sys.executable, str(script), str(items), str(PARALLEL)]
        if files:
            argv += [str(dest), files]
        os.sync()
        srv.reset()
        m = measure(argv, srv.env(), outdir / f"{dest.name}.log")
        c = srv.counters()
        row = Row(
            name,
            len(ids),
            connections=c["connections_opened"],
            requests=c["requests"],
            note={
                "": "HTTP work only, no files",
                "plain": "+ plain file writes",
                "durable": "+ md5, fsync, rename",
            }[files],
        )
        if m.returncode:
            row.failed = f"exit {m.returncode}"
        elif files and not (ok := verify(corpus, ids, dest))[0]:
            row.failed = ok[1]
        else:
            row.wall, row.cpu, row.rss_kib = m.wall, m.cpu, m.peak_rss_kib
            row.nbytes = sum(size for i in ids for size, _ in corpus.expected(i).values())
        return row

    # A long run averages the machine's bursts out by itself; a short one needs rounds.
    tiny_rounds = args.repeat if args.repeat is not None else (1 if len(ids) >= 50_000 else 3)
    rounds: dict[str, list[Row]] = {"plain": [], "files": [], "durable": [], "bulk": []}
    medians: dict[str, Row] = {}
    try:
        rows.append(extrapolate(capacity(srv, corpus, samples["seq"], outdir), samples["seq"], ids))
        if "ia-seq" in args.tools:
            rows.append(
                extrapolate(
                    run_tool(
                        srv,
                        corpus,
                        samples["seq"],
                        "ia seq",
                        [
                            ia,
                            "download",
                            "--itemlist",
                            str(outdir / "sample-seq.txt"),
                            "--destdir",
                            "{dest}",
                        ],
                        outdir / "ia-seq",
                        outdir,
                    ),
                    samples["seq"],
                    ids,
                )
            )
        if "ia-xargs" in args.tools:
            rows.append(
                extrapolate(
                    run_tool(
                        srv,
                        corpus,
                        samples["xargs"],
                        f"ia xargs -P {PARALLEL}",
                        f"xargs -P {PARALLEL} -n 1 {ia} download --destdir {{dest}} "
                        f"< {outdir / 'sample-xargs.txt'}",
                        outdir / "ia-xargs",
                        outdir,
                        shell=True,
                        tree=True,
                    ),
                    samples["xargs"],
                    ids,
                )
            )
        # Interleaved rounds: identical runs here differ by up to ~0.7 ms/job
        # of CPU, so one round's difference says little.
        bulk_argv = [iabulk, "download", "--itemlist", str(items), *BULK_OPTIONS]
        for k in range(tiny_rounds):
            rounds["plain"].append(bare("bare http (10 thr)", "", k))
            rounds["files"].append(bare("bare http+files", "plain", k))
            rounds["durable"].append(bare("bare http+durable", "durable", k))
            if "iabulk" in args.tools:
                rounds["bulk"].append(
                    run_tool(
                        srv,
                        corpus,
                        ids,
                        f"iabulk -w {PARALLEL}",
                        bulk_argv,
                        outdir / f"iabulk-{k}",
                        outdir,
                    )
                )
            for tool in (t for t in DIAGNOSTICS if t in args.tools):
                rounds.setdefault(tool, []).append(
                    run_tool(
                        srv,
                        corpus,
                        ids,
                        DIAGNOSTICS[tool],
                        variant_command(tool, bulk_argv, outdir),
                        outdir / f"{tool}-{k}",
                        outdir,
                        shell=True,
                    )
                )
        medians = {kind: median_of(runs) for kind, runs in rounds.items() if runs}
        rows.extend(medians.values())
    finally:
        srv.stop()
        cleanup(outdir)
    script = outdir / "engine_only.py"
    script.write_text(ENGINE_ONLY)
    engine_log = outdir / "engine-only.jsonl"
    engine_log.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, str(script), str(len(ids)), str(PARALLEL), str(engine_log)],
        capture_output=True,
        text=True,
        check=True,
    )
    engine = json.loads(done.stdout)
    engine_log.unlink(missing_ok=True)
    base = next((r for r in rows if r.tool == "ia seq"), None)
    print_table(
        f"{preset} (scale {scale:g}: {len(ids)} items; ~ = extrapolated from a sample)",
        rows,
        base,
        out,
    )
    n = len(ids)
    out(
        f"  engine alone (no-op worker, {PARALLEL} workers, durable job log, in-process): "
        f"{engine['cpu'] / n * 1e3:.3f} ms CPU/job, {n / engine['wall']:.0f} jobs/s"
    )
    for subject in ("bulk", *DIAGNOSTICS):
        row = medians.get(subject)
        if row is None or row.cpu is None:
            continue
        label = "iabulk" if subject == "bulk" else f"diag {subject}"
        runs = rounds[subject]
        out(f"  {label} CPU per job: {row.cpu / n * 1e3:.2f} ms (median of {len(runs)})")
        for kind in ("plain", "files", "durable"):
            ref = medians.get(kind)
            if ref is None or ref.cpu is None:
                continue
            # Each round's difference, against the baseline run just before it.
            extras = sorted(
                (b.cpu - r.cpu) / n * 1e3
                for b, r in zip(runs, rounds[kind])
                if b.cpu is not None and r.cpu is not None
            )
            extra = statistics.median(extras)
            out(
                f"    beyond {ref.tool} ({ref.cpu / n * 1e3:.2f} ms/job): {extra:.2f} ms/job"
                f" (median; rounds: {', '.join(f'{e:.2f}' for e in extras)})"
            )
            if kind == "files" and subject == "bulk":
                row.extra["overhead_ms"] = extra
    return rows


# -- resume at scale -------------------------------------------------------------


def resume_log(jobs: int, out: Callable[[str], None]) -> Path:
    """A genlog log of ``jobs`` jobs whose source line iabulk can read (cached)."""
    import genlog

    path = ROOT / "bench-out" / f"resume-{jobs}.v{genlog.VERSION}.jsonl"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path
    out(f"  generating a {jobs:,}-job log with benches/genlog.py (cached in {path.parent}) …")
    stats = genlog.generate(str(path), jobs)
    fix_source_line(path)
    meta.write_text(
        json.dumps({"jobs": stats.jobs, "pending": stats.pending, "bytes": stats.bytes})
    )
    return path


def fix_source_line(path: Path) -> None:
    """Rewrite genlog's source line in place as a record iabulk resumes from.

    genlog writes ``{"event":"source","search":...}``, a shape iabulk reports as
    an unreadable source record (and then refuses to resume). The replacement
    is padded with JSON whitespace to the same length, so nothing else moves.
    """
    record = json.dumps(
        {"event": "source", "source": {"kind": "search", "query": "collection:nasa"}},
        separators=(",", ":"),
    ).encode()
    with open(path, "r+b") as f:
        first = f.readline()
        if json.loads(first).get("source"):
            return
        if len(record) + 1 > len(first):
            raise RuntimeError("iabulk's source record does not fit genlog's first line")
        f.seek(0)
        f.write(record + b" " * (len(first) - len(record) - 1) + b"\n")


def bench_resume(jobs: int, out: Callable[[str], None], runs: int = 3) -> dict[str, Any]:
    path = resume_log(jobs, out)
    info = json.loads(path.with_suffix(".json").read_text())
    outdir = ROOT / "bench-out" / "download" / "resume"
    shutil.rmtree(outdir, ignore_errors=True)
    (outdir / "dest").mkdir(parents=True)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # page cache
    srv = Standin("tiny-100k", 0.0001)
    results = []
    original = path.stat().st_size
    try:
        for k in range(runs):
            srv.reset()
            log = open(outdir / f"iabulk-{k}.log", "wb")
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [
                    str(BIN / "iabulk"),
                    "download",
                    "--joblog",
                    str(path),
                    "-w",
                    str(PARALLEL),
                    "--destdir",
                    str(outdir / "dest"),
                    "--disk-margin",
                    "0",
                ],
                env=srv.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            first = None
            hwm = 0
            while proc.poll() is None and time.perf_counter() - t0 < 120:
                if _has_exec(proc.pid):
                    hwm = max(hwm, _rss_kib(proc.pid, b"VmHWM:"))
                if srv.counters()["requests_by_kind"]["metadata"] > 0:
                    first = time.perf_counter() - t0
                    hwm = max(hwm, _rss_kib(proc.pid, b"VmHWM:"))
                    break
                time.sleep(0.005)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            with open(path, "r+b") as f:
                f.truncate(original)
            results.append((first, hwm))
    finally:
        srv.stop()
    times = [t for t, _ in results if t is not None]
    best = min(times) if times else None
    peak = max(h for _, h in results)
    out(
        f"\n== resume: {info['jobs']:,}-job log ({info['bytes'] / 1e9:.2f} GB), "
        f"{info['pending']:,} pending"
    )
    out(
        "  time from `iabulk download --joblog J` to the first metadata request: "
        + ", ".join("FAILED" if t is None else f"{t:.2f} s" for t, _ in results)
        + (f" (best {best:.2f} s)" if best is not None else "")
    )
    out(f"  iabulk peak RSS (VmHWM) up to that moment: {peak / 1024:.0f} MB")
    return {"first_job_s": best, "peak_rss_mb": peak / 1024}


# -- main ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every preset's counts")
    parser.add_argument(
        "--presets", default=",".join(PRESETS), help=f"comma-separated, from {', '.join(PRESETS)}"
    )
    parser.add_argument(
        "--tools",
        default="ia-seq,ia-xargs,iabulk",
        help="comma-separated, from ia-seq, ia-xargs, iabulk, and the diagnostic iabulk "
        "variants nostart and grouped-sync (see DIAGNOSTICS)",
    )
    parser.add_argument(
        "--tiny-sample",
        type=int,
        default=1000,
        help="items of tiny-100k that ia seq runs over (then extrapolated)",
    )
    parser.add_argument(
        "--loop-sample",
        type=int,
        default=100,
        help="items a shell loop of `ia download ITEM` runs over (then extrapolated; 0: none)",
    )
    parser.add_argument(
        "--tiny-xargs-sample",
        type=int,
        default=200,
        help="items of tiny-100k that ia xargs runs over (then extrapolated)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per tool, the best wall time counts (default: 1 for many-small, else 3);"
        " for tiny-100k, rounds of the bare clients and iabulk, the median CPU counts"
        " (default: 3 below 50,000 items, else 1)",
    )
    parser.add_argument(
        "--tiny-scale", type=float, default=None, help="scale of tiny-100k (default: --scale)"
    )
    parser.add_argument("--resume-jobs", type=int, default=10_000_000)
    parser.add_argument(
        "--ca-bundle",
        choices=("standin", "realistic"),
        default="standin",
        help="CA bundle the clients load: the stand-in's one certificate (default), or "
        "that plus the system's ~140 roots, the size of the certifi bundle real clients use",
    )
    args = parser.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    global CA_MODE
    CA_MODE = args.ca_bundle
    presets = [p for p in args.presets.split(",") if p]
    unknown = set(presets) - set(PRESETS)
    if unknown:
        parser.error(f"unknown preset(s): {', '.join(sorted(unknown))}")
    for tool in ("ia", "iabulk"):
        if not (BIN / tool).exists():
            parser.error(f"{BIN / tool} not found; run `make build` first")
    if not shutil.which("curl"):
        parser.error("curl is needed for the stand-in's capacity row")

    report = ROOT / "bench-out" / "download" / "report.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def out(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    load = os.getloadavg()
    out(
        f"iabulk download benchmark: {os.cpu_count()} CPUs, load average {load[0]:.1f} at start; "
        f"scale {args.scale:g}; {PARALLEL} parallel; CA bundle: {args.ca_bundle}"
    )
    summary: dict[str, Any] = {}
    for preset in presets:
        if preset == "resume":
            summary["resume"] = bench_resume(args.resume_jobs, out)
        elif preset == "tiny-100k":
            rows = bench_tiny(args.tiny_scale or args.scale, args, out)
            summary[preset] = rows
        else:
            summary[preset] = bench_preset(preset, args.scale, args, out)
    out("\n== targets")
    for preset, rows in summary.items():
        if preset == "resume":
            r = rows
            ok = r["first_job_s"] is not None and r["first_job_s"] <= 2 and r["peak_rss_mb"] <= 300
            shown = "FAILED" if r["first_job_s"] is None else f"{r['first_job_s']:.2f} s"
            out(
                f"  resume: first job {shown} (<= 2 s), peak RSS {r['peak_rss_mb']:.0f} MB "
                f"(<= 300 MB): {'met' if ok else 'NOT met'}"
            )
            continue
        base = next((r for r in rows if r.tool == "ia seq" and not r.failed), None)
        bulk = next((r for r in rows if r.tool.startswith("iabulk")), None)
        cap = next((r for r in rows if r.tool == CAPACITY and not r.failed), None)
        hashed = next((r for r in rows if r.tool == CAPACITY_MD5 and not r.failed), None)
        if bulk is None:
            continue
        if bulk.failed:
            out(f"  {preset}: iabulk FAILED ({bulk.failed})")
            continue
        assert bulk.wall is not None and bulk.rss_kib is not None
        parts = []
        if preset in TARGETS and base is not None and base.wall:
            ratio = base.wall / bulk.wall
            parts.append(
                f"{ratio:.2f}x ia seq (>= {TARGETS[preset]}x: "
                f"{'met' if ratio >= TARGETS[preset] else 'NOT met'})"
            )
        if preset == "few-large" and cap is not None and cap.wall:
            rate = bulk.nbytes / bulk.wall
            share = rate / (cap.nbytes / cap.wall)
            parts.append(
                f"{share:.0%} of capacity (>= 60%: {'met' if share >= 0.6 else 'NOT met'})"
            )
            if hashed is not None and hashed.wall:
                parts.append(f"{rate / (hashed.nbytes / hashed.wall):.0%} of capacity + md5")
        if "overhead_ms" in bulk.extra:
            ms = bulk.extra["overhead_ms"]
            parts.append(
                f"engine overhead {ms:.2f} ms/job (<= 1 ms: {'met' if ms <= 1 else 'NOT met'})"
            )
        rss = bulk.rss_kib / 1024
        parts.append(f"peak RSS {rss:.0f} MB (<= 100 MB: {'met' if rss <= 100 else 'NOT met'})")
        out(f"  {preset}: " + "; ".join(parts))
    out(
        f"\nload average at end {os.getloadavg()[0]:.1f}; report written to "
        f"{report.relative_to(ROOT)}"
    )
    report.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
