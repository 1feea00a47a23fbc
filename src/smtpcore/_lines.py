"""CRLF line framing shared by SMTP and POP3.

Commands and replies are lines ending in CRLF (RFC 5321 §2.3.8, RFC 1939 §3).
This module owns the receive buffer both protocols read lines from, the hard
bound on how long an unfinished line may grow, and the policy that says what
to do with a bare CR or bare LF, the raw material of SMTP smuggling.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from smtpcore._errors import LocalProtocolError

__all__ = [
    "BYTES_LIKE",
    "LINE_TOO_LONG",
    "FramingPolicy",
    "LineTooLong",
    "ReceiveBuffer",
    "line_length_exceeded",
    "not_bytes",
]

BYTES_LIKE: Final = (bytes, bytearray, memoryview)
"""What ``receive_data`` takes: anything else is the application's mistake."""


def not_bytes(data: object) -> LocalProtocolError:
    """The error for ``receive_data(data)`` given something that is not bytes.

    Only ``b""`` means the peer closed (DESIGN.md); ``None``, which
    ``io.RawIOBase.read()`` returns on a non-blocking stream with nothing to
    read, taken for a close would end a session quietly."""
    return LocalProtocolError(
        "receive_data takes bytes, bytearray or memoryview (b'' when the peer closed),"
        f" not {type(data).__name__}"
    )


@dataclass(frozen=True, slots=True)
class FramingPolicy:
    """How strictly line endings (and NUL) are enforced; strict by default.

    RFC 5321 §2.3.8 allows only CRLF. Servers that treat a bare LF or bare CR
    as a line ending disagree with their peers about where a message ends,
    which is how SMTP smuggling works. Each leniency below is a named opt-in
    for a known class of broken client; none of them changes where a message
    ends: content ends only at CRLF.CRLF, under every policy. The content
    rules hold for DATA and for BDAT alike (not for BODY=BINARYMIME, whose
    octets are arbitrary by definition, RFC 3030 §3).
    """

    lf_ends_command: bool = False
    """Accept a command line that ends in a bare LF (old Unix scripts). Without
    it, a bare LF ends no command line (RFC 5321 §2.3.8): the line runs to its
    CRLF and is refused whole, so that nothing after the LF is run as a
    command a CRLF-only reader of the session would not see."""

    bare_lf_in_content: bool = False
    """Accept a message that contains a bare LF (passed on unchanged)."""

    bare_cr_in_content: bool = False
    """Accept a message that contains a bare CR (passed on unchanged)."""

    nul_in_content: bool = False
    """Accept a message that contains NUL octets (RFC 5322 §2.1 and RFC 6152 §3
    allow none; smuggling checkers try ``CRLF NUL . CRLF``)."""

    normalize_content: bool = False
    """Accept bare CR and bare LF in a message and store each as CRLF, so that
    what is stored and relayed holds none (as Postfix's
    ``smtpd_forbid_bare_newline = normalize`` does for LF). Overrides
    ``bare_lf_in_content`` and ``bare_cr_in_content``."""

    @classmethod
    def strict(cls) -> FramingPolicy:
        """CRLF only, everywhere: the default, as Postfix 3.9 recommends."""
        return cls()

    @classmethod
    def normalizing(cls) -> FramingPolicy:
        """Take bare LF as a line ending, in commands and content, and store CRLF only."""
        return cls(lf_ends_command=True, normalize_content=True)

    @classmethod
    def lenient(cls) -> FramingPolicy:
        """Every leniency on, for talking to clients that cannot be fixed."""
        return cls(
            lf_ends_command=True,
            bare_lf_in_content=True,
            bare_cr_in_content=True,
            nul_in_content=True,
        )


class LineTooLong(enum.Enum):
    """Returned by :meth:`ReceiveBuffer.next_line` for a line over the limit."""

    LINE_TOO_LONG = "LINE_TOO_LONG"


LINE_TOO_LONG: Final = LineTooLong.LINE_TOO_LONG


class ReceiveBuffer(bytearray):
    """Bytes received from the peer and not yet consumed.

    ``next_line`` remembers how far it has already searched, so feeding a
    long line byte by byte stays linear. An over-long line is never held:
    its bytes are dropped as they arrive, and once its end is seen the caller
    gets ``LINE_TOO_LONG`` in the line's place, so that the reply to it stays
    in order with the replies to the lines around it.

    It also remembers whether the peer closed its side (:meth:`receive` with
    ``b""``), which every machine needs to tell ``NEED_DATA`` from the end.

    The buffer is the bytes themselves, a ``bytearray`` with what line reading
    remembers beside them: every connection holds one, and one object is
    smaller than an object and its bytearray (``len`` and truth are the
    bytearray's own, read in C).
    """

    __slots__ = ("_discarding", "_searched", "peer_closed")

    def __init__(self) -> None:
        self._searched = 0
        self._discarding = False
        self.peer_closed = False

    def receive(self, data: bytes, *, discard: bool = False) -> None:
        """Take bytes from the peer, ``b""`` meaning it closed its side.

        ``discard`` drops them: a machine waiting for the TLS handshake must
        never read plaintext that came before it (RFC 3207 §4.2, RFC 2595 §4).
        Anything but bytes, bytearray or memoryview raises
        :class:`~smtpcore.LocalProtocolError` and changes nothing.
        """
        if not isinstance(data, BYTES_LIKE):
            raise not_bytes(data)
        if not data:
            self.peer_closed = True
        elif self.peer_closed:
            raise LocalProtocolError("received data after the peer closed")
        elif not discard:
            self.extend(data)

    def next_line(self, limit: int, *, lf_ends: bool = True) -> bytes | LineTooLong | None:
        """Return the next line, LF included, or ``None`` if it is not complete.

        ``limit`` counts every octet of the line, its CRLF included. With
        ``lf_ends`` false only CRLF ends a line (RFC 5321 §2.3.8): a bare LF
        stays inside it.
        """
        if lf_ends:
            end = self.find(b"\n", self._searched)
        else:
            end = self.find(b"\r\n", self._searched)
            if end >= 0:
                end += 1
        if end < 0:
            if len(self) > limit or self._discarding:
                # Keep a trailing CR: it may be half of the CRLF to come.
                keep = 1 if self.endswith(b"\r") else 0
                del self[: len(self) - keep]
                self._discarding = True
            # A CR at the end may be half of the CRLF to come: search it again.
            self._searched = len(self) if lf_ends else max(len(self) - 1, 0)
            return None
        self._searched = 0
        if self._discarding or end >= limit:
            del self[: end + 1]
            self._discarding = False
            return LINE_TOO_LONG
        line = bytes(self[: end + 1])
        del self[: end + 1]
        return line

    @property
    def discarding(self) -> bool:
        """Whether the line being read has passed its limit: its octets are dropped
        until its end comes (:meth:`next_line` then gives ``LINE_TOO_LONG``)."""
        return self._discarding

    def take(self, size: int | None = None) -> bytes:
        """Remove and return up to ``size`` bytes (all of them by default)."""
        if size is None or size >= len(self):
            out = bytes(self)
            del self[:]
        else:
            out = bytes(self[:size])
            del self[:size]
        self._searched = 0
        return out

    def view(self) -> bytearray:
        """The buffered bytes, for framing code that consumes them in place: the
        buffer itself, emptied and refilled in place."""
        return self

    def consume(self, size: int) -> None:
        """Drop ``size`` bytes from the front (after working on ``view()``)."""
        del self[:size]
        self._searched = 0

    def clear(self) -> None:
        del self[:]
        self._searched = 0
        self._discarding = False


def line_length_exceeded(chunk: bytes, limit: int, carried: int) -> tuple[bool, int]:
    """Tell whether any line in ``chunk`` is longer than ``limit`` octets.

    ``carried`` is the length of the line left unfinished by the previous
    chunk. Returns (exceeded, length of the line this chunk leaves
    unfinished). Instead of visiting every line, it jumps a whole window of
    ``limit`` octets at a time with ``rfind``: the last LF in the window
    proves that every line before it was short enough, so a chunk of short
    lines costs one C-level search per ``limit`` octets.
    """
    size = len(chunk)
    line_start = -carried
    searched_from = 0  # where this chunk's part of the line starts: max(line_start, 0)
    while True:
        window_end = line_start + limit
        if window_end > size:
            last = chunk.rfind(b"\n", searched_from)
            return False, size - (last + 1 if last >= 0 else line_start)
        newline = chunk.rfind(b"\n", searched_from, window_end)
        if newline < 0:
            return True, 0
        line_start = searched_from = newline + 1
