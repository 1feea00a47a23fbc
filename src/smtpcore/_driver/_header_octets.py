"""Whether content given as octets has UTF-8 header fields, which only an SMTPUTF8
transaction may carry: RFC 6532 §3 allows UTF-8 in header fields only there, RFC 6531
§3.4 has the client say so on ``MAIL``, and §3.2 keeps such a message from a server
without the extension.

An :class:`~email.message.Message` has its fields parsed already; octets have not. The
envelope asks here only of content its one scan found 8-bit, so ASCII content, the
usual, pays nothing. The look is bounded: searches, never a repetition over lines (which
keeps a mark per line), within the first :data:`MAX_HEADER_SECTION` octets.
"""

from __future__ import annotations

import re
from typing import Final

from smtpcore._header_end import FIELD_NAME, header_end

__all__ = [
    "FIELD_NAME",
    "MAX_HEADER_SECTION",
    "header_fields_wording",
    "header_section",
    "is_utf8",
    "utf8_header_fields",
]

MAX_HEADER_SECTION: Final = 256 * 1024
"""How much of a message's start is read as its header section at most: the client's
look here, and the reference server's relay (``QueuedContent.header``) for its own
SMTPUTF8 check and reports. A header section past it is taken as ended there."""

_MBOX_FROM: Final = b"From "
"""An mbox envelope line (``From sender date``), which :mod:`email`'s parser takes as
the unixfrom when it comes first: no header field, whatever its octets."""

_UTF8_CHARACTER: Final = re.compile(
    rb"(?=[\xc2-\xf4][\x80-\xbf])"
    rb"(?:[\xc2-\xdf][\x80-\xbf]"
    rb"|\xe0[\xa0-\xbf][\x80-\xbf]"
    rb"|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}"
    rb"|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2})"
)
"""One multi-byte UTF-8 character, as RFC 3629 §4's ``UTF8-2``, ``UTF8-3`` and
``UTF8-4`` spell it: no overlong form, no surrogate, nothing past U+10FFFF. The
lookahead, a lead and a continuation octet, lets a search step over other octets
without trying each branch (256 KiB: 6 ms, not 23)."""

_LINE_END: Final = re.compile(rb"\r\n|\r|\n")


def header_section(content: bytes, limit: int = MAX_HEADER_SECTION) -> tuple[int, int]:
    """Where ``content``'s header section starts and ends (after its last line's end),
    its first ``limit`` octets looked at: the end is at most ``limit``. It starts after
    a first line ``From ...`` that is no field (an mbox envelope line); it is empty,
    ``(0, 0)``, when the line it would start with is no field (a fold with no field
    before it included): that line is the body's."""
    start = 0
    if FIELD_NAME.match(content, 0, limit) is None and content.startswith(_MBOX_FROM):
        first_end = _LINE_END.search(content, 0, limit)
        start = limit if first_end is None else first_end.end()
    if FIELD_NAME.match(content, start, limit) is None:
        return 0, 0
    return start, header_end(content, start, limit)


def utf8_header_fields(content: bytes, limit: int = MAX_HEADER_SECTION) -> bool:
    """Whether ``content``'s header section (:func:`header_section`) holds a UTF-8
    character, which needs SMTPUTF8 (RFC 6532 §3) whatever else the section holds: a
    raw UTF-8 ``Subject`` beside an old Latin-1 ``Received`` line is still UTF-8 to
    the server. A section none of whose 8-bit octets form one (a Latin-1 name in old
    mail) has no UTF-8 field and goes as it did, under 8BITMIME as any 8-bit content.
    Latin-1 text whose octets happen to spell a character (``Ã©``, 0xC3 0xA9) counts:
    octets cannot tell the two apart. Only whole characters count: one cut at the
    ``limit`` is not looked at, nor is anything past it."""
    start, end = header_section(content, limit)
    return _UTF8_CHARACTER.search(content, start, end) is not None


def header_fields_wording(header: bytes) -> str | None:
    """How a refusal names the 8-bit octets of ``header``, a header section; None for
    none."""
    if header.isascii():
        return None
    return f"its {'UTF-8' if is_utf8(header) else '8-bit'} header fields"


def is_utf8(octets: bytes) -> bool:
    """Whether ``octets`` are UTF-8: a Latin-1 name in old mail is 8-bit, not UTF-8,
    and a refusal says which it saw."""
    try:
        octets.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
