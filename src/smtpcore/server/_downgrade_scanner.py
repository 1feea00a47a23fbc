"""The scanner under the 7-bit conversion: a queued message read a block at a time, as
pieces (a line, or a piece of a long one) where a line can change what follows, and
as runs of whole body lines between multipart delimiters (RFC 2046 §5.1.1) where none
can. Apart from the parser because it knows octets and lines only, no MIME."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import BinaryIO, Final

from smtpcore.server._downgrade_limits import MAX_LINE, READ_LIMIT

__all__ = ["_DASH_LINE", "_SCAN_BLOCK", "_Scanner", "_delimiter", "_pieces"]

_SCAN_BLOCK: Final = 65536
"""The octets read from the message at a time: a run of body lines is at most this and a
line (:class:`_Scanner`). The tests read with smaller blocks, to cut lines anywhere."""


_BARE_CR_OR_LF: Final = re.compile(rb"\r(?!\n)|(?<!\r)\n")
"""A CR or LF that is not half of a CRLF: an octet of its line (binary content), which
only the line-by-line reading (:func:`_pieces`) takes as it does."""


def _pieces(file: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """The content as ``(octets, ends_line)``: each line without its CRLF, a line longer
    than :data:`READ_LIMIT` in pieces. A bare CR or LF (binary content) is an octet of
    the line, not its end; a CR at the end of a read waits for the next."""
    held = b""
    while read := file.readline(READ_LIMIT):
        piece, held = held + read, b""
        if piece.endswith(b"\r\n"):
            yield piece[:-2], True
            continue
        if piece.endswith(b"\r"):
            piece, held = piece[:-1], b"\r"
        if piece:
            yield piece, False
    if held:
        yield held, False


class _Scanner:
    """The message read ``block_size`` octets at a time, given either as :func:`_pieces`
    gives it, a piece of a line at a time (:meth:`piece`), or, where the parser needs no
    line on its own, as a run of whole lines (:meth:`run`). Holds a block and a line at
    most."""

    def __init__(self, file: BinaryIO, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"a block of {block_size} octets reads nothing")
        self._file = file
        self._block_size = block_size
        self._buffer = b""
        self._start = 0
        self._at_end = False
        self._held_cr = False
        self._last_crlf = -1
        """Where the buffer's last CRLF is: a run ends there at the latest."""
        self._bare_at = -1
        """Where the first bare CR or LF at or after ``_bare_searched`` is (the buffer's
        length if none): searched once per stretch, so that a buffer is scanned once
        however many runs it is cut into."""
        self._bare_searched = 0
        self._long_at = -1
        """Where the first line over :data:`MAX_LINE` octets at or after ``_long_searched``
        starts (:meth:`_first_long_line`)."""
        self._long_searched = 0

    @property
    def position(self) -> int:
        """The offset in the file of what comes next, at a line's start."""
        assert not self._held_cr  # a CR held back is mid-line
        return self._file.tell() - (len(self._buffer) - self._start)

    def piece(self) -> tuple[bytes, bool] | None:
        """The next piece exactly as :func:`_pieces` gives it, or None at the end. Each
        turn takes a read; only a read of a lone CR, held back, gives nothing yet. A
        read that ends at a buffered LF, the common case, is cut out at once."""
        start = self._start
        newline = self._buffer.find(b"\n", start, start + READ_LIMIT)
        if newline != -1 and not self._held_cr:
            self._start = newline + 1
            if newline > start and self._buffer[newline - 1] == 13:
                return self._buffer[start : newline - 1], True
            return self._buffer[start : newline + 1], False  # a bare LF: an octet
        while read := self._readline():
            piece = b"\r" + read if self._held_cr else read
            self._held_cr = False
            if piece.endswith(b"\r\n"):
                return piece[:-2], True
            if piece.endswith(b"\r"):
                piece, self._held_cr = piece[:-1], True
            if piece:
                return piece, False
        if self._held_cr:
            self._held_cr = False
            return b"\r", False
        return None

    def run(self, *, delimiters: Mapping[bytes, int]) -> bytes | None:
        """The whole lines from here to the last CRLF buffered, joined by CRLF (the last
        one's left out), up to the first that is not regular: a delimiter of one of the
        enclosing multiparts' ``delimiters`` (RFC 2046 §5.1.1), one with a bare CR or
        LF, or one over :data:`MAX_LINE` octets. None where the next line is such a one,
        or not buffered whole: that line is read in pieces (:meth:`piece`). Called at a
        line's start; each cut is one C-level search of the block, and a line that
        starts with ``--`` but delimits nothing a dict lookup (:func:`_before_delimiter`)."""
        if self._held_cr:
            return None
        if len(self._buffer) - self._start < READ_LIMIT:
            self._fill(READ_LIMIT)
        buffer, start = self._buffer, self._start
        end = self._last_crlf if self._last_crlf >= start else -1
        if end != -1 and (bare := self._first_bare_cr_or_lf()) < end:
            end = buffer.rfind(b"\r\n", start, bare)
        if end != -1 and (long_line := self._first_long_line()) <= end:
            end = long_line - 2 if long_line > start else -1
        if delimiters and end != -1:  # after the cuts above: searched to ``end`` only
            end = _before_delimiter(buffer, start, end, delimiters)
        if end == -1:
            return None
        self._start = end + 2
        return buffer[start:end]

    def _first_bare_cr_or_lf(self) -> int:
        """Where the first bare CR or LF from here is, the buffer's length if there is
        none: the regular expression runs only past a stretch the counts (C-level, and
        faster) do not clear."""
        if self._bare_searched <= self._start <= self._bare_at:
            return self._bare_at
        found = _BARE_CR_OR_LF.search(self._buffer, self._start)
        self._bare_searched = self._start
        self._bare_at = len(self._buffer) if found is None else found.start()
        return self._bare_at

    def _first_long_line(self) -> int:
        """Where the first line over :data:`MAX_LINE` octets from here starts, two past
        the buffer's last CRLF if there is none before it: searched once per stretch, as
        :meth:`_first_bare_cr_or_lf` is, so that runs cut short by delimiters do not
        search the rest of the block again each. Lines here are the octets between two
        CRLFs, as a run's are (one with a bare CR or LF is cut from the run anyway)."""
        if self._long_searched <= self._start <= self._long_at:
            return self._long_at
        self._long_searched = self._start
        self._long_at = _long_line_start(self._buffer, self._start, self._last_crlf)
        return self._long_at

    def _readline(self) -> bytes:
        """What ``file.readline(READ_LIMIT)`` reads: through the first LF, at most
        :data:`READ_LIMIT` octets."""
        self._fill(READ_LIMIT)
        start = self._start
        end = self._buffer.find(b"\n", start, start + READ_LIMIT)
        end = min(start + READ_LIMIT, len(self._buffer)) if end == -1 else end + 1
        self._start = end
        return self._buffer[start:end]

    def _fill(self, wanted: int) -> None:
        """Read blocks until ``wanted`` octets are buffered, or the file ends."""
        if self._at_end or len(self._buffer) - self._start >= wanted:
            return
        blocks = [self._buffer[self._start :]]
        buffered = len(blocks[0])
        while buffered < wanted:  # ends at the file's end at the latest
            block = self._file.read(self._block_size)
            if not block:
                self._at_end = True
                break
            blocks.append(block)
            buffered += len(block)
        self._buffer, self._start = b"".join(blocks), 0
        self._last_crlf = self._buffer.rfind(b"\r\n")
        self._bare_searched, self._bare_at = 0, -1
        self._long_searched, self._long_at = 0, -1
        if _pairs_up(self._buffer, self._last_crlf):
            self._bare_at = len(self._buffer)


def _pairs_up(buffer: bytes, end: int) -> bool:
    """Whether every CR and LF before ``end`` is half of a CRLF: the counts say so."""
    crlf = buffer.count(b"\r\n", 0, end)
    return buffer.count(b"\r", 0, end) == crlf == buffer.count(b"\n", 0, end)


def _long_line_start(buffer: bytes, start: int, end: int) -> int:
    """Where the first line after ``start`` (a line's start) over :data:`MAX_LINE` octets
    starts, ``end + 2`` where every line to the CRLF at ``end`` is shorter. The last CRLF
    within :data:`MAX_LINE` octets and a CRLF of a line's start proves every line before
    it short: one search per 1000 octets, as :func:`~smtpcore._lines.line_length_exceeded`
    does."""
    line_start = start
    while line_start <= end:  # each turn moves past a CRLF
        newline = buffer.rfind(b"\r\n", line_start, min(line_start + MAX_LINE + 2, end + 2))
        if newline == -1:
            return line_start
        line_start = newline + 2
    return end + 2


_DASH_LINE: Final = re.compile(rb"\r\n--([^\r\n]*)")
"""A line after a CRLF that starts with ``--``, the only kind a delimiter is (RFC 2046
§5.1.1), and what follows the dashes, to its CRLF: a run's lines are whole, with no bare
CR or LF. Greedy and with no padding of its own, so that it matches a line in one pass;
the padding (spaces and tabs) is stripped after, as :func:`_delimiter` strips it. A lazy
name before ``[ \t]*`` backtracked once per padding octet at each octet of it, quadratic
in the line: a megabyte of ``--``, 990 spaces and ``x`` took seconds."""


def _before_delimiter(buffer: bytes, start: int, end: int, delimiters: Mapping[bytes, int]) -> int:
    """``end``, or the CRLF before the first line from ``start`` to the CRLF at ``end``
    that delimits one of ``delimiters``; -1 where the line at ``start`` does. A line of
    ``--`` that delimits nothing costs one C-level match and a dict lookup or two, not
    a piece and an event of its own: such lines, however many, go in the run."""
    if buffer.startswith(b"--", start):
        first = buffer[start : buffer.index(b"\r\n", start)]
        if _delimiter(first, delimiters) is not None:
            return -1
    for line in _DASH_LINE.finditer(buffer, start, end + 2):
        name = line[1].rstrip(b" \t")
        if name in delimiters or (name[-2:] == b"--" and name[:-2] in delimiters):
            return line.start()
    return end


def _delimiter(line: bytes, delimiters: Mapping[bytes, int]) -> tuple[int, bool] | None:
    """Which enclosing boundary ``line`` delimits, innermost first, and whether it
    closes; None for a line of content. Transport padding (spaces and tabs) may follow
    (RFC 2046 §5.1.1); an outer boundary ends the parts inside it too.

    One lookup whatever the nesting: ``delimiters`` maps each boundary to the index of
    the innermost multipart that has it. The line less ``--`` and its padding is a
    boundary (a delimiter), or, less a closing ``--`` too, one that closes; where both
    readings name one, the inner wins (``a--`` and ``a`` both read ``--a--``)."""
    if not line.startswith(b"--"):
        return None
    name = line[2:].rstrip(b" \t")
    opens = delimiters.get(name)
    closes = delimiters.get(name[:-2]) if name.endswith(b"--") else None
    if closes is not None and (opens is None or closes > opens):
        return closes, True
    return None if opens is None else (opens, False)
