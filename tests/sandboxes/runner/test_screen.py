"""The attach snapshot (scrollback ring + lazily fed pyte model), without a PTY."""

from __future__ import annotations

import pyte

from sandboxes.runner.screen import TerminalModel


def client_view(frame: bytes, cols: int = 80, rows: int = 24) -> pyte.Screen:
    screen = pyte.Screen(cols, rows)
    pyte.ByteStream(screen).feed(frame)
    return screen


def test_append_does_not_parse_until_needed():
    model = TerminalModel(80, 24)
    model.append(b"hello\r\n")
    assert model.pending == 7
    assert model.screen.display[0].strip() == ""
    model.feed()
    assert model.pending == 0
    assert model.screen.display[0].rstrip() == "hello"


def test_snapshot_reproduces_colours_and_cursor():
    model = TerminalModel(40, 5)
    model.append(b"\x1b[1;31mred\x1b[0m \x1b[38;5;202morange\x1b[0m \x1b[48;2;1;2;3mrgb\x1b[0m")
    model.append(b"\x1b[3;7Hmid\x1b[4;2H")
    view = client_view(model.snapshot(), 40, 5)
    assert view.display[0].rstrip() == "red orange rgb"
    assert view.display[2].rstrip() == "      mid"
    assert view.buffer[0][0].fg == "red" and view.buffer[0][0].bold
    assert view.buffer[0][4].fg == pyte.graphics.FG_BG_256[202]
    assert view.buffer[0][11].bg == "010203"
    assert (view.cursor.y, view.cursor.x) == (3, 1)


def test_snapshot_clears_without_pushing_the_replayed_tail_into_history():
    # VTE (GNOME Terminal) and Konsole move the screen into their history on "erase the whole
    # display" (ED 2): after the replayed scrollback, the lines already on screen would be in
    # the history twice. Erasing from the top down (ED 0) clears the screen everywhere.
    model = TerminalModel(20, 4)
    model.append(b"$ ls\r\nfile\r\n$ ")
    frame = model.snapshot()
    replay, _, repaint = frame.partition(b"\x1b[0m\x1b[?1049l")
    assert replay == b"$ ls\r\nfile\r\n$ "
    assert b"\x1b[2J" not in repaint and repaint.startswith(b"\x1b[r\x1b[H\x1b[J")
    view = client_view(b"old screen text\r\n" * 4 + frame, 20, 4)
    assert [line.rstrip() for line in view.display] == ["$ ls", "file", "$", ""]


def test_alternate_screen_is_restored_in_the_model():
    model = TerminalModel(20, 4)
    model.append(b"$ vim\r\n")
    model.append(b"\x1b[?1049h\x1b[H\x1b[2Jfull screen")
    model.feed()
    assert model.screen.in_alt_screen
    assert model.screen.display[0].rstrip() == "full screen"
    frame = model.snapshot()
    assert b"\x1b[?1049h" in frame
    assert b"$ vim" in frame  # the main screen's scrollback comes first
    model.append(b"\x1b[?1049l")
    model.feed()
    assert not model.screen.in_alt_screen
    assert model.screen.display[0].rstrip() == "$ vim"


def test_lag_is_bounded_and_recent_output_wins():
    model = TerminalModel(20, 4, ring_bytes=4096, max_lag=1024)
    for n in range(2000):
        model.append(b"line %d\r\n" % n)
    model.feed()
    assert model.pending == 0
    assert model.screen.display[2].rstrip() == "line 1999"


def test_resizes_apply_at_their_place_in_the_stream():
    model = TerminalModel(10, 3)
    model.append(b"0123456789ABC")  # wraps at 10 columns
    model.resize(20, 3)
    model.append(b"\r\n0123456789ABCDEF")  # fits in 20
    model.feed()
    assert model.screen.display[0] == "0123456789" + " " * 10
    assert model.screen.display[2].rstrip() == "0123456789ABCDEF"


def test_terminal_queries_are_not_replayed():
    model = TerminalModel(20, 4)
    model.append(b"a\x1b[6nb\x1b[cc\x1b]11;?\x07d\x1bP$qm\x1b\\e\r\n")
    frame = model.snapshot()
    assert b"\x1b[6n" not in frame
    assert b"\x1b[c" not in frame
    assert b"\x1b]11;?" not in frame
    assert b"\x1bP" not in frame
    assert b"abcde" in frame
    assert model.screen.display[0].rstrip() == "abcde"


def test_unparseable_input_does_not_break_the_model():
    model = TerminalModel(20, 4)
    model.append(b"\x1b[>4;2m ok")  # pyte 0.8's Screen crashes on this private SGR
    model.feed()
    assert model.screen.display[0].rstrip() == " ok"
