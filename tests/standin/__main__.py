"""Run the stand-in in its own process (demo, benchmarks).

    python -m tests.standin --preset few-large --faults seed=3,503=0.05

prints one JSON line - ``proxy``, ``ca_bundle``, ``control`` and the full
client ``env`` - then serves until SIGTERM or SIGINT. A separate process
keeps the server from sharing a GIL with the client being measured.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from .corpus import PRESETS, Corpus
from .faults import FaultPlan
from .server import ArchiveStandin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.standin", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the preset's sizes")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the preset's counts")
    parser.add_argument(
        "--faults", default="", help="fault spec, e.g. seed=3,503=0.05,retry_after=1"
    )
    parser.add_argument("--warm", action="store_true", help="compute all checksums before serving")
    args = parser.parse_args(argv)

    corpus = Corpus.preset(args.preset, seed=args.seed, scale=args.scale)
    if args.warm:
        corpus.warm()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with ArchiveStandin(corpus, FaultPlan.from_spec(args.faults), port=args.port) as srv:
        ready = {
            "proxy": srv.proxy_url,
            "ca_bundle": srv.ca_bundle,
            "control": srv.control_url,
            "env": srv.env(),
        }
        print(json.dumps(ready), flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
