"""Shared pytest fixtures.

Archive stand-in (see ``tests/standin``): ``standin`` starts servers,
``small_corpus`` is the demo corpus, ``iabulk_env`` builds the environment of
a client subprocess (``iabulk``, ``ia`` or ``python``) that must talk to one.
``small_disks`` mounts small tmpfs file systems (as root; skips otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Test modules here are imported without a package (pytest's default
# "prepend" mode), so make ``tests.standin`` importable however pytest is run.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.standin import ArchiveStandin, Corpus, FaultPlan  # noqa: E402  (needs the path above)


def iabulk_env(srv: ArchiveStandin, **extra: str) -> dict[str, str]:
    """The whole environment for an ``iabulk``/``ia``/``python`` subprocess that
    must reach only ``srv``: os.environ + ``srv.env()`` (proxies, CA bundle,
    ``IA_CONFIG_FILE``), the venv's ``bin`` first on PATH, then ``extra``."""
    return srv.client_env(**extra)


@pytest.fixture
def standin() -> Iterator[Callable[..., ArchiveStandin]]:
    """Factory: ``standin(corpus, faults=None)`` returns a started stand-in,
    stopped when the test ends."""
    started: list[ArchiveStandin] = []

    def start(corpus: Corpus, faults: FaultPlan | None = None) -> ArchiveStandin:
        srv = ArchiveStandin(corpus, faults).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def small_corpus() -> Corpus:
    """The ``demo`` preset: ~40 items, odd file names, one dark item."""
    return Corpus.preset("demo")


@pytest.fixture(name="iabulk_env")
def iabulk_env_fixture() -> Callable[..., dict[str, str]]:
    """The :func:`iabulk_env` helper, for tests that take fixtures only."""
    return iabulk_env


@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``mount(name, size)`` mounts a tmpfs of ``size`` at ``tmp_path/name``."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)
