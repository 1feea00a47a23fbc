"""What ``send`` checks in a message before it connects: lines SMTP can carry.

RFC 5321 §4.5.3.1.6 limits a text line to 1,000 octets with its CRLF, and no
message may hold NUL (RFC 5322 §2.1, RFC 6152 §3); only ``BODY=BINARYMIME``
content sent by BDAT carries arbitrary octets (RFC 3030 §3), and ``send`` never
declares it. A server that keeps those rules (this one's, Postfix's) refuses such a
message only after the whole of it went: refused here, the user learns which line
at once, before anything is sent.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_LINE_OCTETS", "unsendable_line"]

MAX_LINE_OCTETS: Final = 998
"""The octets of a text line before its CRLF (RFC 5321 §4.5.3.1.6: 1,000 with it)."""

_LONG_LINE: Final = re.compile(rb"(?<![^\r\n])[^\r\n]{%d,}" % (MAX_LINE_OCTETS + 1))
"""A whole line over the limit, without its line end: the lookbehind lets a match
start only where a line does, so that one scan in C is linear in the message."""


def unsendable_line(content: bytes) -> str | None:
    """Why ``content`` cannot go as it is, naming its first line SMTP cannot carry
    (numbered from 1, at the line ends the client sends as CRLF: CRLF, CR or LF
    alone); None when every line can go."""
    too_long = _LONG_LINE.search(content)
    nul = content.find(b"\0")
    if too_long is not None and (nul < 0 or too_long.start() < nul):
        start, length = too_long.start(), too_long.end() - too_long.start()
        return (
            f"line {_line_number(content, start)} is {length} octets long; SMTP carries "
            f"{MAX_LINE_OCTETS} and the CRLF (1,000, RFC 5321 §4.5.3.1.6)"
        )
    if nul >= 0:
        return (
            f"line {_line_number(content, nul)} holds a NUL octet, which no message may "
            "hold (RFC 5322 §2.1)"
        )
    return None


def _line_number(content: bytes, position: int) -> int:
    """The number of the line ``position`` is in: one more than the line ends before
    it, a CRLF counted once (as ``bytes.splitlines`` and the client's encoder count)."""
    ends = (
        content.count(b"\n", 0, position)
        + content.count(b"\r", 0, position)
        - content.count(b"\r\n", 0, position)
    )
    return ends + 1
