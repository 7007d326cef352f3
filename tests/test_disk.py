"""Disk routing: most room after reservations and margin; resumed items go home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from iabulk.disk import DiskPool, DisksFull, TooLarge, parse_size
from iabulk.workers.base import StopRun


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0),
        ("4096", 4096),
        ("1K", 1024),
        ("500M", 500 << 20),
        ("1G", 1 << 30),
        ("1.5G", 3 << 29),
        ("2GiB", 2 << 30),
        ("10gb", 10 << 30),
        ("1T", 1 << 40),
    ],
)
def test_parse_size_accepts_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "1X", "one", "1 G B", "1e9", "\uff11\uff10M"])
def test_parse_size_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def pool_with(tmp_path: Path, free: dict[str, int], margin: int = 0) -> tuple[DiskPool, list[str]]:
    dirs = []
    for name in free:
        (tmp_path / name).mkdir()
        dirs.append(str(tmp_path / name))
    by_path = {str(tmp_path / k): v for k, v in free.items()}
    pool = DiskPool(dirs, margin=margin, free_bytes=lambda p: by_path[p])
    # The temporary directories share one filesystem; give each its own device
    # so that the test sees separate budgets, as separate disks have.
    pool._devices = {d: i for i, d in enumerate(dirs)}
    return pool, dirs


def test_item_goes_where_there_is_most_room(tmp_path: Path) -> None:
    pool, (_a, b) = pool_with(tmp_path, {"a": 100, "b": 300})
    assert pool.reserve("x", 50).path == b


def test_reservations_spread_concurrent_items(tmp_path: Path) -> None:
    pool, (a, b) = pool_with(tmp_path, {"a": 200, "b": 300})
    first = pool.reserve("x", 150)
    second = pool.reserve("y", 150)
    assert {first.path, second.path} == {a, b}
    first.release()
    second.release()
    assert pool.available(a) == 200 and pool.available(b) == 300


def test_written_bytes_stop_counting_against_the_reservation(tmp_path: Path) -> None:
    pool, (a,) = pool_with(tmp_path, {"a": 1000})
    r = pool.reserve("x", 600)
    r.consume(400)
    assert pool.available(a) == 1000 - 200


def test_margin_is_kept_free(tmp_path: Path) -> None:
    pool, _ = pool_with(tmp_path, {"a": 1000, "b": 900}, margin=800)
    with pytest.raises(DisksFull):
        pool.reserve("x", 300)
    assert pool.reserve("x", 150).path.endswith("a")


def test_partial_item_goes_back_to_its_disk(tmp_path: Path) -> None:
    pool, (a, _b) = pool_with(tmp_path, {"a": 100, "b": 10_000})
    Path(a, "x").mkdir()
    Path(a, "x", "f.iabulk-part").write_bytes(b"partial")
    assert pool.reserve("x", 50).path == a


def test_partial_item_waits_when_no_disk_has_room(tmp_path: Path) -> None:
    pool, (a, _b) = pool_with(tmp_path, {"a": 10, "b": 40})
    Path(a, "x", "sub").mkdir(parents=True)
    Path(a, "x", "sub", "done.bin").write_bytes(b"whole")
    with pytest.raises(DisksFull, match="waiting for space"):
        pool.reserve("x", 50)


def test_partial_item_needs_room_only_for_the_rest(tmp_path: Path) -> None:
    pool, (a, _b) = pool_with(tmp_path, {"a": 60, "b": 10_000})
    Path(a, "x").mkdir()
    Path(a, "x", "done.bin").write_bytes(b"w" * 450)
    r = pool.reserve("x", 500, present=lambda root: 450 if root == str(Path(a, "x")) else 0)
    assert r.path == a and r.reserved == 50


@pytest.mark.parametrize("name", ["done.bin", "d" * 255])
def test_partial_item_moves_to_a_disk_with_room_when_its_own_is_full(
    tmp_path: Path, name: str
) -> None:
    pool, (a, b) = pool_with(tmp_path, {"a": 10, "b": 10_000})
    Path(a, "x", "sub").mkdir(parents=True)
    done = Path(a, "x", "sub", name)
    done.write_bytes(b"whole")
    os.utime(done, (1_500_000_000, 1_500_000_000))  # the mark of a verified file
    r = pool.reserve("x", 50, present=lambda root: 5)
    assert r.path == b and r.reserved == 50
    moved = Path(b, "x", "sub", name)
    assert moved.read_bytes() == b"whole" and moved.stat().st_mtime == 1_500_000_000
    assert not Path(a, "x").exists()
    assert not list(Path(b).rglob("*.iabulk-moving"))


def test_an_empty_item_directory_does_not_bind_the_item_to_its_disk(tmp_path: Path) -> None:
    """What a full disk leaves when the item dropped its only partial file."""
    pool, (a, b) = pool_with(tmp_path, {"a": 10, "b": 10_000})
    Path(a, "x", "sub").mkdir(parents=True)
    assert pool.reserve("x", 50).path == b
    assert not Path(a, "x").exists()  # the empty directory is not left behind


def test_no_disk_check_uses_the_first_destination(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pool = DiskPool([str(tmp_path / "a"), str(tmp_path / "b")], check=False, free_bytes=lambda p: 0)
    assert pool.reserve("x", 10**15).path == str(tmp_path / "a")


def test_destinations_on_one_filesystem_share_the_work(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pool = DiskPool(
        [str(tmp_path / "a"), str(tmp_path / "b")], margin=0, free_bytes=lambda p: 10**12
    )
    first, second = pool.reserve("x", 10), pool.reserve("y", 10)
    assert {first.path, second.path} == {str(tmp_path / "a"), str(tmp_path / "b")}


def test_an_item_larger_than_every_destination_is_refused_not_awaited(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    pool = DiskPool(
        [str(tmp_path / "a")], margin=100, free_bytes=lambda p: 1000, total_bytes=lambda p: 1000
    )
    assert pool.reserve("fits", 900).path == str(tmp_path / "a")
    with pytest.raises(TooLarge, match="needs 901 bytes, more than any destination holds"):
        pool.reserve("big", 901)
    unchecked = DiskPool([str(tmp_path / "a")], check=False, total_bytes=lambda p: 1000)
    assert unchecked.reserve("big", 5000).path == str(tmp_path / "a")


def test_a_destination_that_is_gone_stops_the_run(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    pool = DiskPool([str(tmp_path / "a")], margin=0)
    (tmp_path / "a").rmdir()
    with pytest.raises(StopRun, match="is gone"):
        pool.reserve("x", 10)


def lay_out(root: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = Path(root, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def files_under(root: str) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size for p in Path(root).rglob("*") if p.is_file()
    }


def test_a_move_cut_short_while_copying_is_undone(tmp_path: Path) -> None:
    """Killed during the copy: the target has some whole copies and a temporary one."""
    pool, (a, b) = pool_with(tmp_path, {"a": 10_000, "b": 10_000})
    lay_out(a, {"x/f0.bin": b"0" * 300, "x/f1.bin.iabulk-part": b"1" * 200})
    lay_out(b, {"x/f0.bin": b"0" * 300, "x/f1.bin.iabulk-part.iabulk-moving": b"1" * 50})
    r = pool.reserve("x", 1000, present=_tree_size)
    assert r.path == a and r.reserved == 500
    assert files_under(a) == {"x/f0.bin": 300, "x/f1.bin.iabulk-part": 200}
    assert not Path(b, "x").exists()


def test_a_move_cut_short_while_removing_the_originals_is_finished(tmp_path: Path) -> None:
    pool, (a, b) = pool_with(tmp_path, {"a": 10_000, "b": 10_000})
    lay_out(a, {"x/f1.bin.iabulk-part": b"1" * 200})
    lay_out(b, {"x/f0.bin": b"0" * 300, "x/f1.bin.iabulk-part": b"1" * 200})
    r = pool.reserve("x", 1000, present=_tree_size)
    assert r.path == b and r.reserved == 500
    assert not Path(a, "x").exists()


def test_what_a_cut_short_move_left_on_the_target_does_not_keep_the_move_out(
    tmp_path: Path,
) -> None:
    """The home is full; the target has room for the item only once its leftovers go."""
    pool, (a, b) = pool_with(tmp_path, {"a": 0, "b": 1000})
    pool._free_bytes = lambda p: 0 if p == a else 1000 - _tree_size(b)  # type: ignore[method-assign]
    lay_out(a, {"x/f0.bin": b"0" * 300, "x/f1.bin.iabulk-part": b"1" * 200})
    lay_out(b, {"x/f0.bin": b"0" * 300, "x/f1.bin.iabulk-part.iabulk-moving": b"1" * 150})
    r = pool.reserve("x", 1000, present=_tree_size)
    assert r.path == b
    assert files_under(b) == {"x/f0.bin": 300, "x/f1.bin.iabulk-part": 200}
    assert not Path(a, "x").exists()


def test_copies_that_differ_are_kept(tmp_path: Path) -> None:
    """Not a move's leftovers (a resume given other --destdir): nothing is lost."""
    pool, (a, b) = pool_with(tmp_path, {"a": 10_000, "b": 10_000})
    lay_out(a, {"x/f0.bin": b"0" * 300})
    lay_out(b, {"x/f1.bin": b"1" * 200, "x/f0.bin": b"0" * 100})
    pool.reserve("x", 1000, present=_tree_size)
    assert files_under(a) == {"x/f0.bin": 300}
    assert files_under(b) == {"x/f1.bin": 200}  # the shorter f0.bin went: a has all of it


def _tree_size(root: str) -> int:
    return sum(files_under(root).values()) if os.path.isdir(root) else 0
