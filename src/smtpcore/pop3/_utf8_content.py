"""Whether a message may go to a session as it is stored (RFC 6856 §2.1, §5).

Outside UTF-8 mode "character strings outside the ASCII repertoire MUST NOT be sent
to the client as is", and a request for a message that needs UTF-8 mode is answered
with a surrogate or with ``-ERR``, the ``[UTF8]`` response code saying why (§5). A
message needs it when its header holds a non-ASCII octet (RFC 6532 §3, SMTPUTF8
mail); an 8-bit body is 8BITMIME content, which needs no UTF-8 mode (§2.1).

:class:`HeaderScan` tells which, reading a message's chunks only until its header
ends, so that a server answers before its ``+OK``; a session in UTF-8 mode, which
takes every message as stored, has none (:meth:`ServerConnection.header_scan`).
"""

from __future__ import annotations

import re
from typing import Final

from smtpcore.pop3._events import Err

__all__ = ["NEEDS_UTF8", "HeaderScan"]

NEEDS_UTF8: Final = Err(
    "Message has UTF-8 header fields, sent only in UTF-8 mode (RFC 6856)", code="UTF8"
)
"""The answer to RETR or TOP of a message that needs UTF-8 mode, outside it
(RFC 6856 §5: the client may ask again after UTF8)."""

_EMPTY_LINE: Final = re.compile(rb"\n\r?\n")
"""The empty line that ends a header (RFC 5322 §2.1), found after its line break:
a store's line ends may be CRLF or LF alone."""


class HeaderScan:
    """Reads a message's chunks, in order, until its header has ended: whether a
    header octet is not ASCII (:attr:`needs_utf8`). Holds no more than two octets of
    what it has read, the end of a line break that a chunk may split from the rest
    of an empty line."""

    __slots__ = ("_tail", "done", "needs_utf8")

    def __init__(self) -> None:
        self.done = False
        """Whether it knows: a non-ASCII header octet seen, or the header's end."""
        self.needs_utf8 = False
        """Whether the header holds an octet that is not ASCII (RFC 6532 §3)."""
        self._tail = b"\n"  # the message starts a line: an empty first line ends it

    def feed(self, chunk: bytes) -> bool:
        """Read the next ``chunk`` of the message; True once :attr:`done`."""
        if self.done:
            return True
        data = self._tail + chunk
        end = _EMPTY_LINE.search(data)
        header = data if end is None else data[: end.start()]
        if not header.isascii():
            self.needs_utf8 = self.done = True
        elif end is not None:
            self.done = True
        else:
            self._tail = data[-2:]
        return self.done
