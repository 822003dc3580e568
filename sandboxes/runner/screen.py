"""What a newly attached client sees first: scrollback plus the current screen.

Two structures back it:

- a raw **ring buffer** of the most recent PTY output (``ring_bytes``, 256 KiB by default). It
  is the scrollback: replayed verbatim (minus terminal queries) so the client's own scrollback
  holds the earlier output with its colours.
- a **screen model** (``pyte``) that knows the current screen, so that a full-screen program
  (vim, top, an agent's TUI) is redrawn exactly as it is now, not as a pile of replayed bytes.

Why the model is fed lazily: pyte is pure Python and parses about 0.5 MB/s, two orders of
magnitude below the PTY's output rate. Feeding every byte on the hot path would cap terminal
throughput and add latency to every echoed keystroke. So ``append()`` only copies bytes into
the ring, and the model consumes them later: in idle time in small slices (``feed(limit)``,
driven by the runner's ticker) and, for what is left, when a client attaches. The backlog the
model may lag behind is bounded by ``max_lag`` (64 KiB, ~0.1 s of pyte at worst on attach);
older unparsed bytes are skipped. The trade-off: after a burst larger than ``max_lag`` the
model restarts mid-stream, which for line-oriented output is invisible (the last 64 KiB cover
the screen many times over) and for a full-screen program may leave stale cells until its
next redraw — the runner nudges one by sending SIGWINCH when a client resizes on attach.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict, deque

import pyte
from pyte import graphics, modes
from pyte.screens import Char, StaticDefaultDict

log = logging.getLogger(__name__)

_ALT_SCREEN_MODES = frozenset({47, 1047, 1049})
_ENTER_ALT_SCREEN = b"\x1b[?1049h"

# Sequences that make a terminal answer (into the PTY, as if typed) or resize its window.
# Replaying them to a new client would inject the answers into the harness, so they are cut
# from the scrollback replay.
_QUERIES = re.compile(
    rb"\x1b\[[?>=]?[0-9;]*[cn]"  # device attributes, status and cursor position reports
    rb"|\x1b\[[0-9;]*t"  # window operations (reports, resizes)
    rb"|\x1b\[\??[0-9;]*\$p"  # DECRQM mode reports
    rb"|\x1b\[>[0-9;]*q"  # XTVERSION
    rb"|\x1b\[\?[0-9;]*u"  # kitty keyboard protocol query
    rb"|\x1bP[^\x1b\x07]*(?:\x1b\\|\x07)"  # DCS strings: DECRQSS, XTGETTCAP
    rb"|\x1b\][0-9]+;[^\x07\x1b]*\?[^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC colour/clipboard queries
)

# Private modes restored on attach besides the alternate screen: application cursor keys,
# mouse reporting and bracketed paste change what the client must send.
_RESTORED_PRIVATE_MODES = (1, 1000, 1002, 1003, 1006, 2004)

_SGR_FLAGS = (("bold", "1"), ("italics", "3"), ("underscore", "4"), ("blink", "5"))
_SGR_FLAGS_2 = (("reverse", "7"), ("strikethrough", "9"))


def _invert(mapping: dict[int, str]) -> dict[str, str]:
    return {name: str(code) for code, name in mapping.items() if name != "default"}


_FG = {**_invert(graphics.FG_ANSI), **_invert(graphics.FG_AIXTERM)}
_BG = {**_invert(graphics.BG_ANSI), **_invert(graphics.BG_AIXTERM)}
_PALETTE: dict[str, int] = {}
for _index, _hex in enumerate(graphics.FG_BG_256):
    _PALETTE.setdefault(_hex, _index)


def _color(value: str, names: dict[str, str], extended: str) -> str | None:
    if value == "default":
        return None
    if value in names:
        return names[value]
    if value in _PALETTE:
        return f"{extended};5;{_PALETTE[value]}"
    try:
        r, g, b = int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
    except ValueError:
        return None
    return f"{extended};2;{r};{g};{b}"


def sgr(char: Char) -> str:
    """The SGR sequence that sets exactly ``char``'s attributes (starting from a reset)."""
    params = ["0"]
    params += [code for attr, code in _SGR_FLAGS if getattr(char, attr)]
    params += [code for attr, code in _SGR_FLAGS_2 if getattr(char, attr)]
    fg = _color(char.fg, _FG, "38")
    bg = _color(char.bg, _BG, "48")
    if fg:
        params.append(fg)
    if bg:
        params.append(bg)
    return "\x1b[" + ";".join(params) + "m"


class ModelScreen(pyte.Screen):
    """``pyte.Screen`` plus the alternate screen buffer (modes 47/1047/1049).

    pyte 0.8 ignores these modes, so after vim exits its screen would stay in the model
    instead of the shell's. Here the main buffer is kept aside while the alternate one is on.
    """

    def __init__(self, columns: int, lines: int) -> None:
        self.saved_main: dict[int, StaticDefaultDict[int, Char]] | None = None
        super().__init__(columns, lines)

    @property
    def in_alt_screen(self) -> bool:
        return self.saved_main is not None

    def reset(self) -> None:
        self.saved_main = None
        super().reset()

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        # CSI > ... m (xterm's modifyOtherKeys, sent by vim) is not SGR; pyte 0.8 would crash.
        if not private:
            super().select_graphic_rendition(*attrs)

    def set_mode(self, *modes: int, **kwargs: bool) -> None:
        if kwargs.get("private") and self.saved_main is None and _ALT_SCREEN_MODES & set(modes):
            if 1049 in modes:
                self.save_cursor()
            self.saved_main = self.buffer
            default = self.default_char
            self.buffer = defaultdict(lambda: StaticDefaultDict(default))
            self.dirty.update(range(self.lines))
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: bool) -> None:
        super().reset_mode(*modes, **kwargs)
        if kwargs.get("private") and self.saved_main is not None and _ALT_SCREEN_MODES & set(modes):
            self.buffer, self.saved_main = self.saved_main, None
            self.dirty.update(range(self.lines))
            if 1049 in modes:
                self.restore_cursor()


def _clean_start(buf: bytes | bytearray, start: int) -> int:
    """An offset at or after ``start`` that does not split a line or escape sequence."""
    window = buf[start : start + 4096]
    candidates = [i for i in (window.find(b"\n") + 1, window.find(b"\x1b")) if i > 0]
    return start + min(candidates) if candidates else start


class TerminalModel:
    """Scrollback ring plus a lazily fed screen model of one PTY (see the module docstring).

    Not thread-safe; all calls come from the runner's event loop.
    """

    def __init__(
        self, cols: int, rows: int, *, ring_bytes: int = 256 * 1024, max_lag: int = 64 * 1024
    ) -> None:
        self.cols, self.rows = cols, rows
        self._ring_bytes = ring_bytes
        self._max_lag = min(max_lag, ring_bytes)
        self._ring = bytearray()
        self._ring_start = 0  # stream offset of self._ring[0]
        self._total = 0  # stream offset of the end of the output so far
        self._fed = 0  # stream offset up to which the model has parsed
        self._resizes: deque[tuple[int, int, int]] = deque()  # (offset, cols, rows) not applied
        self.screen = ModelScreen(cols, rows)
        self._stream = pyte.ByteStream(self.screen)

    @property
    def pending(self) -> int:
        """Bytes of output the model has not parsed yet."""
        return self._total - self._fed

    def append(self, data: bytes) -> None:
        """Record PTY output. Cheap: a copy into the ring, no parsing."""
        self._ring += data
        self._total += len(data)
        excess = len(self._ring) - 2 * self._ring_bytes
        if excess > 0:
            cut = excess + self._ring_bytes
            del self._ring[:cut]
            self._ring_start += cut

    def resize(self, cols: int, rows: int) -> None:
        """Note a PTY resize; the model applies it when it reaches this point of the output."""
        self.cols, self.rows = cols, rows
        self._resizes.append((self._total, cols, rows))

    def feed(self, limit: int | None = None) -> None:
        """Parse pending output into the model: all of it, or at most ``limit`` bytes."""
        start = self._fed
        if self._total - start > self._max_lag:
            # Too far behind: skip to a clean point within the last max_lag bytes, with a
            # fresh parser (the skipped bytes may have ended inside a sequence).
            start = self._ring_start + _clean_start(
                self._ring, self._total - self._max_lag - self._ring_start
            )
            self._stream = pyte.ByteStream(self.screen)
        end = self._total if limit is None else min(self._total, start + limit)
        while self._resizes and self._resizes[0][0] <= end:
            offset, cols, rows = self._resizes.popleft()
            if offset > start:
                self._parse(start, offset)
                start = offset
            self.screen.resize(rows, cols)
        self._parse(start, end)
        self._fed = end

    def _parse(self, start: int, end: int) -> None:
        if end > start:
            base = self._ring_start
            try:
                # Queries do not change the screen, and pyte shows some (DCS) as text.
                self._stream.feed(_QUERIES.sub(b"", self._ring[start - base : end - base]))
            except Exception:
                # pyte chokes on some unusual sequences; a glitch in the model must never
                # take the terminal down. Start a fresh parser at the next byte.
                log.warning("screen model failed to parse output", exc_info=True)
                self._stream = pyte.ByteStream(self.screen)

    def snapshot(self) -> bytes:
        """One frame that gives a fresh terminal the scrollback and reproduces the screen."""
        self.feed()
        return self._scrollback() + self.render().encode("utf-8", "replace")

    def _scrollback(self) -> bytes:
        ring = self._ring
        start = max(0, len(ring) - self._ring_bytes)
        if start or self._ring_start:  # output was cut off: do not start mid-sequence
            start = _clean_start(ring, start)
        end = len(ring)
        if self.screen.in_alt_screen:
            # Replay only what the main screen showed before the program switched away;
            # without that switch in the ring, the ring holds nothing but the program's
            # redraws, which belong to no scrollback.
            end = ring.rfind(_ENTER_ALT_SCREEN, start)
            if end < 0:
                return b""
        return _QUERIES.sub(b"", ring[start:end])

    def render(self) -> str:
        """The current screen as escape sequences: clear, cells with attributes, modes, cursor."""
        screen = self.screen
        out = [
            "\x1b[0m",
            "\x1b[?1049h" if screen.in_alt_screen else "\x1b[?1049l",
            # Erase from the top down (ED 0), not the whole display (ED 2): some terminals
            # (VTE's, Konsole) scroll the screen into their history on ED 2, which would hold
            # the tail of the scrollback just replayed twice.
            "\x1b[r\x1b[H\x1b[J",
        ]
        default = screen.default_char
        sgr_cache: dict[tuple[object, ...], str] = {}
        pen: tuple[object, ...] = tuple(default[1:])
        for y in range(screen.lines):
            line = screen.buffer.get(y)
            if not line:
                continue
            last = max(
                (
                    x
                    for x, ch in line.items()
                    if x < screen.columns and (ch.data != " " or ch[1:] != default[1:])
                ),
                default=-1,
            )
            if last < 0:
                continue
            out.append(f"\x1b[{y + 1};1H")
            for x in range(last + 1):
                ch = line[x]
                if not ch.data:  # the right half of a wide character
                    continue
                attrs = tuple(ch[1:])
                if attrs != pen:
                    if attrs not in sgr_cache:
                        sgr_cache[attrs] = sgr(ch)
                    out.append(sgr_cache[attrs])
                    pen = attrs
                out.append(ch.data)
        if screen.margins:
            out.append(f"\x1b[{screen.margins.top + 1};{screen.margins.bottom + 1}r")
        for mode in _RESTORED_PRIVATE_MODES:
            out.append(f"\x1b[?{mode}{'h' if (mode << 5) in screen.mode else 'l'}")
        if modes.DECAWM not in screen.mode:
            out.append("\x1b[?7l")
        if modes.IRM in screen.mode:
            out.append("\x1b[4h")
        cursor = screen.cursor
        out.append(f"\x1b[{cursor.y + 1};{min(cursor.x, screen.columns - 1) + 1}H")
        out.append("\x1b[?25l" if cursor.hidden else "\x1b[?25h")
        out.append(sgr(cursor.attrs))
        return "".join(out)
