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


def search_download(
    srv: ArchiveStandin, log: Path, dest: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """The command most tests run: the whole collection `c` into ``dest``."""
    return iabulk(
        srv,
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
    )
