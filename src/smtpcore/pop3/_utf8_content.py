"""Whether a message may go to a session as it is stored (RFC 6856 §2.1, §4, §5).

A server that offers UTF8 sends "character strings outside the ASCII repertoire"
only to a session in UTF-8 mode; a request for a message that "requires that mode"
(§4) is answered, outside it, with a surrogate or with ``-ERR``, the ``[UTF8]``
response code saying why (§5). A message requires it when its header holds UTF-8
(RFC 6532 §3, SMTPUTF8 mail); an 8-bit body is 8BITMIME content, which needs no
UTF-8 mode (§2.1), and a legacy 8-bit header that is not UTF-8 (Latin-1, KOI8-R,
Shift_JIS, from mailers older than RFC 6532) was never UTF-8 mode's: both go as
stored, as they did before UTF8.

:class:`HeaderScan` tells which, reading a message's chunks only until its header
ends, and no further than :data:`HEADER_LOOKAHEAD`, so that a server answers before
its ``+OK``; a session that cannot or need not enter UTF-8 mode has none
(:meth:`ServerConnection.header_scan`).
"""

from __future__ import annotations

import codecs
from typing import Final

from smtpcore._header_end import HeaderEndScan
from smtpcore.pop3._events import Err

__all__ = ["HEADER_LOOKAHEAD", "NEEDS_UTF8", "HeaderScan"]

NEEDS_UTF8: Final = Err(
    "Message has UTF-8 header fields, sent only in UTF-8 mode (RFC 6856)", code="UTF8"
)
"""The answer to RETR or TOP of a message that needs UTF-8 mode, outside it
(RFC 6856 §5: the client may ask again after UTF8)."""

HEADER_LOOKAHEAD: Final = 256 * 1024
"""Octets of a message a :class:`HeaderScan` reads at most: enough for the longest
header of real mail, and a bound on what a server holds before its ``+OK``. A
header that has not ended by then, with no UTF-8 in what was read, goes as stored
(a sender cannot make a message unfetchable by padding its header)."""


class HeaderScan:
    """Reads a message's chunks, in order, until its header has ended or
    :data:`HEADER_LOOKAHEAD` octets are read: whether the header holds UTF-8
    (:attr:`needs_utf8`). Holds none of what it has read but an unfinished UTF-8
    sequence. The header ends before its first line that is neither a field nor a
    fold (the empty line, or a line with no colon), as for :mod:`email`'s parser."""

    __slots__ = ("_decoder", "_ends", "_left", "done", "header_size", "needs_utf8", "overran")

    def __init__(self) -> None:
        self.done = False
        """Whether it has read all it will: the header's end, octets that are not
        UTF-8, or :data:`HEADER_LOOKAHEAD` octets."""
        self.overran = False
        """Whether the header went on past :data:`HEADER_LOOKAHEAD` octets."""
        self.needs_utf8 = False
        """Whether the header holds a UTF-8 character, and no octet that is not
        UTF-8 (RFC 6532)."""
        self.header_size: int | None = None
        """Octets of the header, its last line end included, once its end is read
        (by the rule above): where a surrogate's
        rewriting stops, found once."""
        self._left = HEADER_LOOKAHEAD
        self._ends = HeaderEndScan()
        self._decoder: codecs.IncrementalDecoder | None = None  # from the first non-ASCII

    def feed(self, chunk: bytes) -> bool:
        """Read the next ``chunk`` of the message; True once :attr:`done`."""
        if self.done:
            return True
        if len(chunk) > self._left:
            chunk = chunk[: self._left]
        before = HEADER_LOOKAHEAD - self._left
        self._left -= len(chunk)
        found = self._ends.feed(chunk)
        end = None if found is None else max(found - before, 0)
        header = chunk if end is None else chunk[:end]
        if self._decoder is not None or not header.isascii():
            self._read_utf8(header, final=end is not None)
        if end is not None:
            self.header_size = found
            self.done = True
        elif not self._left:
            self.done = self.overran = True
        return self.done

    def end(self) -> None:
        """The message has ended, and so has its header if it had not."""
        if not self.done:
            if self._decoder is not None:
                self._read_utf8(b"", final=True)
            if not self.done:  # the octets were UTF-8 or ASCII to the end
                self.header_size = self._ends.end()
            self.done = True

    def _read_utf8(self, header: bytes, final: bool) -> None:
        """Read ``header``'s octets, which hold or follow a non-ASCII one, as UTF-8:
        any that are not make the header a legacy 8-bit one, which goes as stored.
        Only a whole character makes it UTF-8: a lead octet the lookahead cuts off
        (a Latin-1 ``é`` as the last octet read) is none."""
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            text = self._decoder.decode(header, final)
        except UnicodeDecodeError:
            self.needs_utf8 = False
            self.done = True
            return
        if not text.isascii():
            self.needs_utf8 = True
