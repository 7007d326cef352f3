"""Running the installed ``iabulk`` command against a stand-in, as the end-to-end tests do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.standin import ArchiveStandin

IABULK = str(Path(sys.executable).with_name("iabulk"))


def iabulk(
    srv: ArchiveStandin, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IABULK, *args], env=srv.client_env(), capture_output=True, text=True, timeout=timeout
    )


def search_args(log: Path, dest: Path, *extra: str) -> list[str]:
    """The command most tests run, after ``iabulk``: the whole collection `c` into ``dest``."""
    return [
        "download",
        "--search",
        "collection:c",
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        *extra,
    ]


def search_download(
    srv: ArchiveStandin, log: Path, dest: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run :func:`search_args` and wait for it."""
    return iabulk(srv, *search_args(log, dest, *extra))
