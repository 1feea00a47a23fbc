"""The size of a message as a POP3 server sends it, which LIST must give exactly.

RFC 1939 §5 and §11: LIST gives exact octets, and a server sends every line end as
CRLF; :func:`pop3_size` counts a message so, and :class:`WireSize` a chunk at a time
(what a writer of Maildir files counts for a ``,W=``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["WireSize", "pop3_size"]


def pop3_size(content: bytes | bytearray | memoryview | Iterable[bytes]) -> int:
    """Octets of content as a POP3 server sends it: each line end CRLF (RFC 1939 §3).

    ``content`` is the message, or its chunks in order (an iterator will do).
    A bare CR or bare LF becomes CRLF on the wire, and content that does not
    end with a line end gets one; the count follows the same rule as the
    server machine, so that LIST's size is what RETR delivers.
    """
    chunks = [bytes(content)] if isinstance(content, bytes | bytearray | memoryview) else content
    counter = WireSize()
    for chunk in chunks:
        counter.feed(chunk)
    return counter.total


class WireSize:
    """:func:`pop3_size`, a chunk at a time: what a writer of Maildir files counts as it
    goes, for the ``,W=`` of a name (which the reader then trusts for LIST)."""

    __slots__ = ("_counted", "_last", "_pending_cr")

    def __init__(self) -> None:
        self._counted = 0
        self._last = b""
        self._pending_cr = False

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        crlf = chunk.count(b"\r\n")
        if self._pending_cr and chunk[:1] == b"\n":
            crlf += 1
        self._counted += len(chunk) + chunk.count(b"\r") + chunk.count(b"\n") - 2 * crlf
        self._pending_cr = chunk[-1:] == b"\r"
        self._last = chunk[-1:]

    @property
    def total(self) -> int:
        """The octets so far, and the line end the server adds to unended content."""
        last = self._last
        return self._counted + (2 if last and last not in (b"\n", b"\r") else 0)


for _public in (pop3_size, WireSize):
    _public.__module__ = "smtpcore.maildrop"
