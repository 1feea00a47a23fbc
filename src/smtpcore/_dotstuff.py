"""Streaming dot-stuffing and unstuffing (RFC 5321 §4.5.2, RFC 1939 §3).

SMTP DATA content and POP3 multi-line responses share one framing: lines end
in CRLF, a line that starts with "." gets a second "." in front of it, and the
content ends with CRLF "." CRLF. Both classes here work on whole chunks with
C-level searches and hold back only the few bytes at a chunk's end that could
be the start of a line ending or of the terminator, so the chunk boundaries
may fall anywhere.

Every line that starts with a dot (a stuffed line, or the terminator) is found
by one search for CRLF "." over the chunk (``_LINE_WITH_DOT``). It is a
compiled regular expression rather than ``bytes.find`` or ``split``: the
``re`` module scans for a literal prefix about twice as fast as ``bytes``
searches a three-octet needle on CPython 3.10 to 3.12 (about 0.4 µs a KB
against 0.8), and as fast on 3.13.

The decoder searches the receive buffer in place and copies the content out
of it once, the stuffing dots left out (views of the buffer, joined; past a
few dozen dots in a chunk, ``bytes.replace`` on a copy of it). Each 64 KiB
temporary more (a copy of the buffer, the pieces a split cuts) made the
decoding's speed depend on what the allocator did before: in one process,
after other work, a third slower, its memory coming from fresh pages a fault
each.
"""

from __future__ import annotations

import re
from typing import Final

from smtpcore._content import ContentFilter, crlf_only, passes_whole
from smtpcore._lines import FramingPolicy

__all__ = [
    "HELD_BACK",
    "DotDecoder",
    "DotEncoder",
    "TERMINATOR",
    "decode_whole",
    "encode_whole",
]

TERMINATOR = b"\r\n.\r\n"
HELD_BACK: Final = 2
"""The most octets :meth:`DotDecoder.decode` leaves unconsumed: ``".\\r"`` at a line's
start, the start of the terminator's last line (a CRLF before it is content already):
the bound on what a machine reading content holds."""

_LINE_WITH_DOT: Final = re.compile(rb"\r\n\.")
"""A CRLF and the dot that starts the next line (see the module's docstring)."""
_TERMINATOR_LINE: Final = re.compile(re.escape(TERMINATOR))
_MANY_DOTS: Final = 32
"""Stuffing dots a chunk's decoding notes one by one, in Python: a chunk of a
message holds one or two. Past them (content where most lines start with a dot,
or an attack made of them), the rest of the chunk is read in C: one search for
the terminator, and ``bytes.replace`` drops the dots, at the cost of a copy of
the chunk and without an object a dot."""


class DotDecoder:
    """Reads dot-stuffed content up to CRLF.CRLF and unstuffs it.

    The content ends only at CRLF "." CRLF (or "." CRLF as the very first
    line), whatever the policy: LF.LF, CR.CR, LF.CRLF and the other smuggling
    sequences are content. The unstuffed content then goes through a
    :class:`~smtpcore._content.ContentFilter` (the same one BDAT content goes
    through), so policy breaches (bare CR or LF, NUL, a line over
    ``max_line_length`` not counting its stuffing dot) do not stop the
    reading; they show in ``content`` so the caller can refuse the message
    once it has been read to its real end.
    """

    __slots__ = ("_at_line_start", "content")

    def __init__(
        self, policy: FramingPolicy | None = None, *, max_line_length: int | None = None
    ) -> None:
        self.content = ContentFilter(policy, max_line_length=max_line_length)
        self._at_line_start = True

    @property
    def bad_line_ending(self) -> bool:
        return self.content.bad_line_ending

    @property
    def line_too_long(self) -> bool:
        return self.content.line_too_long

    def decode(self, buf: bytes | bytearray) -> tuple[bytes, int, bool]:
        """Decode what ``buf`` holds: (unstuffed content, bytes consumed, ended).

        Bytes not consumed must be offered again, with more behind them.
        """
        start = 0
        if self._at_line_start and buf[:1] == b".":
            if buf[:3] == b".\r\n":
                return self.content.end(), 3, True
            if len(buf) < 3 and b".\r\n".startswith(buf):
                return b"", 0, False
            start = 1  # the stuffed dot of the first line
        # Whatever ends the buffer and may be the start of a CRLF or of the
        # terminator waits for the bytes behind it.
        limit = len(buf) - _unsafe_tail(buf)
        # One pass finds every line that starts with a dot: the stuffed lines and
        # the terminator. Most chunks have none or a few.
        dots: list[int] = []  # where each stuffing dot is
        many = False  # more than _MANY_DOTS: the rest of the chunk is left to C
        ended = False
        for found in _LINE_WITH_DOT.finditer(buf, start, limit):
            dot = found.start() + 2
            if buf.startswith(b"\r\n", dot + 1):  # the terminator
                limit = dot
                ended = True
                break
            if len(dots) == _MANY_DOTS:
                many = True
                terminator = _TERMINATOR_LINE.search(buf, dot, limit)
                if terminator is not None:
                    limit = terminator.start() + 2
                    ended = True
                break
            dots.append(dot)
        content = b""
        if limit > start:
            content = self.content.feed(_unstuffed(buf, start, limit, None if many else dots))
            self._at_line_start = buf.endswith(b"\r\n", start, limit)
        if ended:
            held = self.content.end()
            if held:
                content += held
            return content, limit + 3, True
        return content, limit, False


def decode_whole(
    buf: bytes | bytearray, policy: FramingPolicy, max_line_length: int | None
) -> bytes | None:
    """The content of a message that ``buf`` holds whole from its start, when it needs
    nothing done: no line of it starts with a dot, and it passes ``policy`` and the
    line limit as it stands (:func:`~smtpcore._content.passes_whole`). The
    terminator's ".\\r\\n" follows it in ``buf``. None otherwise: a fresh
    :class:`DotDecoder` reads it then (a property test holds the two equal).

    Most messages arrive whole in one read and have no line to unstuff: one search
    finds their end, and no decoder or filter is built for them.
    """
    found = _LINE_WITH_DOT.search(buf)  # the first line that starts with a dot
    if found is None:
        return None  # not whole
    end = found.start() + 2
    if not buf.startswith(b"\r\n", end + 1) or buf[0] == 46:  # 46: "."
        return None  # a line to unstuff, or the first line starts with "."
    content = bytes(buf[:end])
    return content if passes_whole(content, policy, max_line_length) else None


def _unstuffed(buf: bytes | bytearray, start: int, end: int, dots: list[int] | None) -> bytes:
    """``buf[start:end]`` without the stuffing dots at ``dots``, as bytes, copied once:
    the pieces between the dots are views of ``buf``, joined. ``None``: too many
    dots to note (``_MANY_DOTS``): every line there that starts with a dot loses it,
    in C (what the regular expression's ``sub`` would do, without its objects)."""
    if dots is None:  # replace makes no object a dot, as split, sub or views would
        with memoryview(buf) as view:
            return bytes(view[start:end]).replace(b"\r\n.", b"\r\n")
    if not dots and type(buf) is bytes and start == 0 and end == len(buf):
        return buf
    with memoryview(buf) as view:
        if not dots:
            return bytes(view[start:end])
        pieces = []
        try:
            for dot in dots:
                pieces.append(view[start:dot])
                start = dot + 1
            pieces.append(view[start:end])
            return b"".join(pieces)
        finally:
            pieces.clear()  # a view left alive would keep a bytearray from resizing


def _unsafe_tail(buf: bytes | bytearray) -> int:
    """How many trailing bytes may belong to a CRLF or terminator still arriving
    (at most :data:`HELD_BACK`)."""
    if buf.endswith(b"\r"):
        return 2 if buf.endswith(b"\r\n.\r") else 1
    if buf.endswith(b"\r\n."):
        return 1
    return 0


class DotEncoder:
    """Dot-stuffs content for the wire and writes the terminator.

    With ``normalize`` on (the default, as smtplib does), bare CR and bare LF
    become CRLF, so that nothing we send can be read as a line ending by one
    server and as content by another. A trailing CR is held back until the
    next chunk shows whether an LF follows it. Whether a chunk needs
    normalising at all is asked of the standard library's newline decoder,
    which notes the kinds of line ending it sees in one C-level pass; content
    that is CRLF already (the usual case) is then only dot-stuffed. The decoder is
    made for each chunk with a CR in it (:func:`~smtpcore._content.crlf_only`,
    about 0.1 µs) rather than kept in the encoder: most messages are one chunk,
    and a POP3 message from a Maildir has no CR at all, so a kept one cost every
    message a Python call and its memory for nothing.
    """

    __slots__ = ("_at_line_start", "_ends_in_cr", "_normalize", "_pending_cr")

    def __init__(self, *, normalize: bool = True) -> None:
        self._normalize = normalize
        self._at_line_start = True
        self._pending_cr = False
        self._ends_in_cr = False

    def encode(self, chunk: bytes) -> bytes:
        """Return the wire bytes for one chunk of content."""
        if not chunk:
            return b""
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if self._normalize:
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._pending_cr = True
                if not chunk:
                    return b""
            if b"\r" not in chunk:
                # LF line ends, as a Maildir file has them: one C-level pass.
                chunk = chunk.replace(b"\n", b"\r\n")
            elif not crlf_only(chunk):
                # bytes.splitlines breaks at CRLF, CR and LF alone, and nothing else.
                lines = chunk.splitlines()
                ends_a_line = chunk.endswith((b"\n", b"\r"))
                chunk = b"\r\n".join(lines) + b"\r\n" if ends_a_line else b"\r\n".join(lines)
        if self._ends_in_cr and chunk[:1] == b"\n":
            out = _LINE_WITH_DOT.sub(b"\r\n..", b"\r" + chunk)[1:]
        else:
            out = _LINE_WITH_DOT.sub(b"\r\n..", chunk)
        if self._at_line_start and out[:1] == b".":
            out = b"." + out
        last_two = (b"\r" if self._ends_in_cr else b"") + out[-2:]
        self._at_line_start = last_two.endswith(b"\r\n")
        self._ends_in_cr = out.endswith(b"\r")
        return out

    def end(self) -> bytes:
        """Return the bytes that close the content: CRLF.CRLF, or .CRLF after a CRLF."""
        if self._pending_cr:
            self._pending_cr = False
            return TERMINATOR
        return b".\r\n" if self._at_line_start else TERMINATOR


def encode_whole(content: bytes, *, normalize: bool = True) -> bytes:
    """Dot-stuffed ``content`` and its terminator: what a :class:`DotEncoder` gives
    for content of one piece (``encode(content) + end()``, a property test holds
    them equal), without an encoder to make for it.

    Content whose every CR and LF is part of a CRLF (:func:`~smtpcore._content.crlf_only`)
    needs no normalising; any other goes through the encoder.
    """
    if normalize and not crlf_only(content):
        encoder = DotEncoder(normalize=True)
        return encoder.encode(content) + encoder.end()
    out = _LINE_WITH_DOT.sub(b"\r\n..", content)
    if out[:1] == b".":
        out = b"." + out
    return out + (b".\r\n" if not out or out[-2:] == b"\r\n" else TERMINATOR)
