"""The bounds of the 7-bit conversion (:mod:`smtpcore.server.downgrade`), and
:class:`NotConvertible`, what a message past them, or with no 7-bit form, is. Apart
because the scanner, the parser and the plan each check them."""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_BOUNDARY",
    "MAX_FIELD",
    "MAX_LINE",
    "MAX_NESTING",
    "MAX_PARTS",
    "MAX_PIECES",
    "NotConvertible",
    "READ_LIMIT",
    "_OCTETS_A_PIECE",
]

READ_LIMIT: Final = 1000
"""Octets read at a time: a whole line of 8BITMIME content, 998 octets and CRLF."""


MAX_LINE: Final = 998
"""The longest line, CRLF aside, that a 7-bit hop takes (RFC 5321 §4.5.3.1.6); a leaf
with no transfer encoding that holds a longer one goes quoted-printable, and a longer
one anywhere else is :class:`NotConvertible`."""


MAX_NESTING: Final = 100
"""How deep multiparts and enclosed messages may nest (Postfix's
``mime_nesting_limit``); deeper is :class:`NotConvertible`."""


MAX_PARTS: Final = 5000
"""How many MIME entities a message may hold, itself, its body parts and the messages
they enclose counted; more is :class:`NotConvertible`. Each costs tens of microseconds
to convert however few its octets, so that a message of tiny parts cost the relay
seconds a megabyte on every attempt; this bounds that cost to a fraction of a second a
message. Real mail comes nowhere near: a digest of a thousand messages, each a
multipart of two, is four thousand."""


MAX_PIECES: Final = 100_000
"""How many pieces a message may hold that the conversion reads one at a time: header
lines (fields and continuation lines), and body lines with a bare CR or LF (a lenient
queue's; each LF cuts one) or over :data:`MAX_LINE` octets, a piece each of
:data:`READ_LIMIT` octets or to the bare LF. More is :class:`NotConvertible`. Each costs
a few microseconds however few its octets (a header of ``X:`` fields cost 1.5 s a
megabyte); other body lines go a run at a time, delimiters are bounded by
:data:`MAX_PARTS`. A body's pieces count less one for each 32 octets they hold, so
that only tiny ones add up: a lenient queue's file of bare-LF lines, each a piece, longer
than that on average (a CSV's), converts however many its lines. A hundred thousand is
5,000 parts of twenty header lines each; a real message has a few hundred."""


_OCTETS_A_PIECE: Final = 32
"""The octets a body piece read alone pays for itself with: :data:`MAX_PIECES` counts a
body's pieces less one for each 32 of their octets, so that a lenient queue's file of
bare-LF lines (a CSV's of 48 octets, 110,000 of them in a 5 MB message) converts as it
did, while tiny pieces (``a`` and a bare LF) are still bounded. Pieces of 32 octets on
average cost a few microseconds each, 0.25 s a megabyte at most: what a real file of
bare-LF lines costs anyway."""


MAX_FIELD: Final = 8192
"""The longest ``Content-Type`` or ``Content-Transfer-Encoding`` field read for its
value; a longer one is :class:`NotConvertible`."""


MAX_BOUNDARY: Final = READ_LIMIT - 4
"""The longest boundary whose close delimiter (``--``, the boundary, ``--``) fits in
one read; RFC 2046 §5.1.1 allows 70 characters. A longer one is :class:`NotConvertible`."""


class NotConvertible(ValueError):
    """The message has no 7-bit form; the reason says why, for the bounce and the log."""
