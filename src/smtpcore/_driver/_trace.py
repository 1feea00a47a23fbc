"""The wire trace of a client session: every line both ways, secrets masked.

A client given ``trace=`` reports each line it writes and each line it
reads, as smtplib's ``set_debuglevel`` prints them, to a callback
``trace(direction, line)`` (direction ``"C"`` for the client's lines, ``"S"``
for the server's) or to a :class:`logging.Logger` at DEBUG (``"C: EHLO ..."``).
The session marks what must not be shown: the AUTH initial response and
every SASL continuation line (RFC 4954 §4) appear as ``****``, POP3's PASS
argument and APOP digest the same. Lines are shown as text with control
characters, line separators and bidi controls escaped, as every peer text in
a log line is, so a hostile server cannot drive the terminal a trace is
printed on, and a line is cut at :data:`MAX_LINE` characters, so that a
trace stays bounded whatever arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, TypeAlias

from smtpcore._driver._logtext import loggable

__all__ = ["MASK", "MAX_LINE", "Trace", "WireTrace"]

Trace: TypeAlias = Callable[[str, str], None] | logging.Logger
"""What ``trace=`` takes: ``trace(direction, line)``, or a logger."""

MASK: Final = "****"
MAX_LINE: Final = 2048
"""Characters of a line shown; the rest is left out, marked ``[...]``."""


class _Lines:
    """Bytes in, whole lines out, with a bounded remainder."""

    __slots__ = ("_partial", "_skipping")

    def __init__(self) -> None:
        self._partial = b""
        self._skipping = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """The lines ``data`` completes, each with whether it was cut short."""
        lines: list[tuple[bytes, bool]] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            line = self._partial + data[start:end]
            self._partial = b""
            if self._skipping:
                self._skipping = False
            else:
                line = line.removesuffix(b"\r")
                lines.append((line[:MAX_LINE], len(line) > MAX_LINE))
            start = end + 1
        if not self._skipping:
            self._partial += data[start:]
            if len(self._partial) > MAX_LINE:
                lines.append((self._partial[:MAX_LINE], True))
                self._partial = b""
                self._skipping = True
        return lines

    def rest(self) -> bytes | None:
        """The start of a line not ended yet, taken out (None when there is none)."""
        partial, self._partial = self._partial, b""
        skipping, self._skipping = self._skipping, False
        return partial if partial or skipping else None


class WireTrace:
    """The trace of one client session, sent to a callback or a logger."""

    __slots__ = ("_emit", "_received", "_sent")

    def __init__(self, trace: Trace) -> None:
        if isinstance(trace, logging.Logger):
            logger = trace

            def emit(direction: str, line: str) -> None:
                logger.debug("%s: %s", direction, line)

            self._emit: Callable[[str, str], None] = emit
        else:
            self._emit = trace
        self._sent = _Lines()
        self._received = _Lines()

    def sent(self, data: bytes, *, shown: str | None = None) -> None:
        """The client wrote ``data``; ``shown`` is the line to show instead, for a
        line that carries a secret."""
        if shown is not None:
            self._emit("C", shown)
            return
        self._lines("C", self._sent.feed(data))

    def chunk_ended(self) -> None:
        """A BDAT chunk was written: its octets end where its size says, mid-line as
        often as not (RFC 3030 §2), so the line it left open is shown now, marked, and
        the next command starts a line of its own."""
        rest = self._sent.rest()
        if rest is not None:
            text = loggable(rest.decode("utf-8", "replace"))
            self._emit("C", f"{text} [chunk ends]")

    def received(self, data: bytes) -> None:
        """The client read ``data`` from the server."""
        self._lines("S", self._received.feed(data))

    def _lines(self, direction: str, lines: list[tuple[bytes, bool]]) -> None:
        emit = self._emit
        for raw, cut in lines:
            text = loggable(raw.decode("utf-8", "replace"))
            emit(direction, text + " [...]" if cut else text)
