"""The display: plain lines in a pipe, with a speed from the first line on."""

from __future__ import annotations

import io
import time

from iabulk.progress import TransferBoard
from iabulk.ui import LinesUI, make_ui, visible


def test_the_first_progress_line_has_a_speed() -> None:
    board = TransferBoard(2)
    out = io.StringIO()
    ui = make_ui(board, 3, quiet=False, stream=out)
    assert isinstance(ui, LinesUI)
    with board.slot("item", "a.bin", 4_000_000) as slot:
        slot.add(2_000_000)
        time.sleep(0.05)  # some time for the bytes to have taken
        ui.refresh()
    line = out.getvalue()
    assert "progress: 0/3 items, 2.0 MB, " in line and " 0 B/s" not in line, line


def test_visible_escapes_control_characters_and_cuts() -> None:
    assert visible("plain name.bin") == "plain name.bin"
    assert visible("evil\n\x1b[2Jred") == "evil\\n\\x1b[2Jred"
    assert visible("x" * 300, 10) == "x" * 9 + "…"


def test_bytes_a_resume_finds_on_disk_are_not_counted_as_received() -> None:
    board = TransferBoard(1)
    with board.slot("item", "big.bin", 30_000_000) as slot:
        slot.resume_from(28_000_000)
        slot.add(100_000)
        assert slot.done == 28_100_000  # the file's bar shows how far the file is
        assert board.bytes_transferred == 100_000
    assert board.bytes_transferred == 100_000
