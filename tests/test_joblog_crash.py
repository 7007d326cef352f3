"""``kill -9`` and power cuts: acknowledged lines survive, no append is glued to a fragment.

Each round, a child process appends ``completed`` lines in a tight loop through
``JobLog.write_event`` and prints each seq after the call returns (the
acknowledgement). The test SIGKILLs it at a random moment; in some rounds it
then tears the tail as a power cut can (half of the last line, if that line
was never acknowledged, else half of a line that was being written). A new
``JobLog`` then appends, and the whole log must read back clean.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from iabulk._native import scan
from iabulk.joblog import JobLog

CHILD = """
import sys
from iabulk.joblog import JobLog

log = JobLog(sys.argv[1])
seq = int(sys.argv[2])
while True:
    log.write_event("completed", seq, worker=7, note="n%d" % seq * (seq % 7 + 1))
    print(seq, flush=True)
    seq += 1
"""

ROUNDS = 8


def note_for(seq: int) -> str:
    return f"n{seq}" * (seq % 7 + 1)


def run_child_and_kill(path: Path, first_seq: int, rng: random.Random) -> set[int]:
    """Start a writer, SIGKILL it at a random moment; return the seqs it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(first_seq)], stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    first = child.stdout.readline()  # it is writing now
    time.sleep(rng.uniform(0.0, 0.3))
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    acked = (first + rest).split(b"\n")[:-1]  # a cut-off last ack does not count
    return {int(a) for a in acked}


def tear_tail(path: Path, acked: set[int], next_seq: int) -> None:
    """What a power cut can leave: half of a line whose write was never acknowledged."""
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        return  # the kill tore it already
    last = data[data[:-1].rfind(b"\n") + 1 :]
    if json.loads(last)["seq"] not in acked:
        path.write_bytes(data[: len(data) - len(last)] + last[: len(last) // 2])
    else:
        unacked = json.dumps({"event": "completed", "seq": next_seq, "note": note_for(next_seq)})
        path.write_bytes(data + unacked.encode()[: len(unacked) // 2])


def test_acknowledged_lines_survive_kill_and_torn_tails(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    rng = random.Random(20261128)
    all_acked: set[int] = set()
    repaired_rounds = 0
    for round_ in range(ROUNDS):
        first_seq = round_ * 1_000_000 + 1
        acked = run_child_and_kill(path, first_seq, rng)
        assert acked, "the child acknowledged at least its first line"
        all_acked |= acked
        if round_ % 2 == 1:
            tear_tail(path, acked, first_seq + 999_999)

        log = JobLog(path)
        log.write_event("requeued", first_seq + 999_998, worker=-1)
        repaired_rounds += log.repaired_bytes > 0
        log.close()

        records = [json.loads(raw) for raw in path.read_bytes().split(b"\n")[:-1]]
        assert path.read_bytes().endswith(b"\n")
        children = [r for r in records if r["event"] == "completed"]
        for record in children:  # intact: nothing glued on, nothing cut short
            assert set(record) == {"event", "seq", "ts", "worker", "note"}, record
            assert record["note"] == note_for(record["seq"]), record
        seen = [r["seq"] for r in children]
        assert len(seen) == len(set(seen)), "no line written twice"
        assert all_acked <= set(seen), (
            f"lost acknowledged seqs: {sorted(all_acked - set(seen))[:5]}"
        )
        assert records[-1]["event"] == "requeued" and records[-1]["seq"] == first_seq + 999_998

        snap = scan(str(path))
        assert snap.malformed == 0
        assert all(seq in snap.bitmap for seq in all_acked)
        assert len(snap.bitmap) == len(seen)
    assert repaired_rounds >= ROUNDS // 2, "every torn round was repaired"
