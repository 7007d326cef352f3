"""When a downloaded file's bytes and name become durable, watched system call by system call.

The worker runs in process against a small HTTP server that speaks the three
archive.org paths it uses (``/metadata``, ``/download`` with its redirect, the
data node), while ``os.fsync`` and ``os.replace`` are recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from iabulk.disk import DiskPool
from iabulk.session import session_factory
from iabulk.workers import download
from iabulk.workers.download import PART_SUFFIX, DownloadWorker

from tests.local_http import QuietHandler, serving

MTIME = 1_600_000_000


class _Archive(QuietHandler):
    files: ClassVar[dict[str, bytes]] = {}
    missing: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        parts = self.path.split("/", 3)  # "", api, identifier, name
        if parts[1] == "metadata":
            listing = [
                {
                    "name": n,
                    "size": str(len(b)),
                    "md5": hashlib.md5(b).hexdigest(),
                    "mtime": str(MTIME),
                }
                for n, b in self.files.items()
            ]
            self.reply(200, json.dumps({"files": listing}).encode())
        elif parts[1] == "download":
            self.reply(302, b"", (("Location", f"/node/{parts[2]}/{parts[3]}"),))
        elif parts[1] == "node" and parts[3] in self.files and parts[3] not in self.missing:
            self.reply(200, self.files[parts[3]])
        else:
            self.reply(404, b"")


@pytest.fixture
def archive(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    _Archive.files, _Archive.missing = {}, set()
    with serving(_Archive, monkeypatch) as url:
        yield url


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """("fsync", path) and ("replace", source) in the order the worker made them."""
    recorded: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        recorded.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_replace(src: Any, dst: Any) -> None:
        recorded.append(("replace", os.fspath(src)))
        replace(src, dst)

    monkeypatch.setattr(download.os, "fsync", recording_fsync)
    monkeypatch.setattr(download.os, "replace", recording_replace)
    return recorded


def fetch(archive: str, dest: Path) -> Any:
    ia = SimpleNamespace(headers={"User-Agent": "test"}, cookies={})
    worker = DownloadWorker(session_factory(ia, 2), archive, DiskPool([str(dest)], check=False))
    try:
        return worker.execute({"id": "item", "seq": 1}, threading.Event())
    finally:
        worker.close()


def assert_in_place(dest: Path, names: list[str]) -> None:
    for name in names:
        path = dest / "item" / name
        assert path.read_bytes() == _Archive.files[name], name
        assert int(path.stat().st_mtime) == MTIME, name
        assert not Path(str(path) + PART_SUFFIX).exists(), name


def test_each_file_is_fsynced_before_its_rename_and_the_directory_after_them(
    archive: str, tmp_path: Path, calls: list[tuple[str, str]]
) -> None:
    _Archive.files = {f"f{i}.txt": os.urandom(1000 + i) for i in range(3)}
    assert fetch(archive, tmp_path).success
    assert_in_place(tmp_path, list(_Archive.files))
    parts = [str(tmp_path / "item" / n) + PART_SUFFIX for n in _Archive.files]
    per_file = sorted(zip(calls[0:6:2], calls[1:6:2]))
    assert per_file == [(("fsync", p), ("replace", p)) for p in sorted(parts)], calls
    # The renames are durable (the directory synced) before success is reported.
    assert calls[6:] == [("fsync", str(tmp_path / "item"))], calls


def test_a_wide_items_files_are_each_durable_before_they_get_their_names(
    archive: str, tmp_path: Path, calls: list[tuple[str, str]]
) -> None:
    _Archive.files = {f"f{i:03d}.txt": os.urandom(100 + i) for i in range(40)}
    assert fetch(archive, tmp_path).success
    assert_in_place(tmp_path, list(_Archive.files))
    synced: set[str] = set()
    for kind, path in calls:
        if kind == "replace":
            assert path in synced, f"{path} renamed before it was fsynced"
        else:
            synced.add(path)
    assert sum(kind == "replace" for kind, _ in calls) == 40
    assert calls[-1] == ("fsync", str(tmp_path / "item"))


def test_a_failed_file_does_not_cost_the_verified_small_files_of_its_item(
    archive: str, tmp_path: Path, calls: list[tuple[str, str]]
) -> None:
    _Archive.files = {f"f{i}.txt": os.urandom(500) for i in range(3)}
    _Archive.missing = {"f1.txt"}
    result = fetch(archive, tmp_path)
    assert not result.success and "404" in (result.error or "")
    assert_in_place(tmp_path, ["f0.txt", "f2.txt"])
    assert not (tmp_path / "item" / "f1.txt").exists()
