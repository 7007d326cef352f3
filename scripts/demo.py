"""`make demo`: a real iabulk run against the local archive stand-in.

Starts the stand-in (tests/standin) in its own process with the `demo`
corpus, then runs the real `iabulk download` command through it — search,
metadata, redirects to data nodes, verified transfers — with its progress
display, and finally `iabulk status` on the job log. No internet needed:
the stand-in answers for archive.org through the standard proxy variables.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"


def start_standin() -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        # Each response is throttled to 1 MB/s, so the run lasts long enough to watch.
        [
            sys.executable,
            "-m",
            "tests.standin",
            "--preset",
            "demo",
            "--port",
            "0",
            "--faults",
            "bandwidth=1M",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    env = dict(os.environ)
    env.update(info.get("env") or {})
    env.setdefault("HTTPS_PROXY", info["proxy"])
    env.setdefault("HTTP_PROXY", info["proxy"])
    env.setdefault("REQUESTS_CA_BUNDLE", info["ca_bundle"])
    env["NO_PROXY"] = ""
    return proc, env


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "files").mkdir(parents=True)
    proc, env = start_standin()
    iabulk = [str(Path(sys.executable).with_name("iabulk"))]
    joblog = str(OUT / "demo.jsonl")
    try:
        print(
            "$ iabulk download --search 'collection:demo' -w 8 --joblog demo-out/demo.jsonl "
            "--destdir demo-out/files",
            flush=True,
        )
        code = subprocess.call(
            [
                *iabulk,
                "download",
                "--search",
                "collection:demo",
                "-w",
                "8",
                "--joblog",
                joblog,
                "--destdir",
                str(OUT / "files"),
                "--disk-margin",
                "0",
            ],
            env=env,
        )
        print(f"(exit code {code}: 1 is expected — the demo collection holds one dark item)\n")
        print("$ iabulk status demo-out/demo.jsonl", flush=True)
        subprocess.call([*iabulk, "status", joblog], env=env)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
