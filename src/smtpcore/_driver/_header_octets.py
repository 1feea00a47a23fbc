"""Whether content given as octets has 8-bit header fields, which only an SMTPUTF8
transaction may carry: RFC 6532 §3 allows UTF-8 in header fields only there, RFC 6531
§3.4 has the client say so on ``MAIL``, and §3.2 keeps such a message from a server
without the extension.

An :class:`~email.message.Message` has its fields parsed already; octets have not. The
envelope asks here only of content its one scan found 8-bit, so ASCII content, the
usual, pays nothing.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["header_fields_wording", "header_section", "is_utf8", "wide_header_fields"]

_LINE_END: Final = rb"(?:\r\n|\r|\n|\Z)"
"""A line's end as it goes on the wire: the client sends a bare CR or LF as CRLF (DATA's
encoder, BDAT's normalizer); the last line may have none."""

_FIELD_NAME: Final = rb"(?=(?P<name>[!-9;-~]+))(?P=name)"
"""A field name taken whole, never given back a character at a time (a lookahead and
its backreference: the possessive ``[!-9;-~]++`` of Python 3.11): a long line of name
characters with no colon is found no field at once, not after a step back for each."""

_HEADER_SECTION: Final = re.compile(
    rb"(?:From [^\r\n]*" + _LINE_END + rb")?"
    rb"(?:(?:" + _FIELD_NAME + rb"[ \t]*:|[ \t])[^\r\n]*" + _LINE_END + rb")*"
)
"""The header section as a receiver's parser reads it from the start of a message: a
first line ``From ...`` (an mbox envelope line, which :mod:`email`'s parser steps over),
then lines that start a field (a name and its colon, with the obsolete white space
before it, RFC 5322 §4.5.3) or fold one (white space first, §2.2.3). The first line
that is neither ends it: the empty line before the body (§2.1), or a line that is no
field, which :mod:`email`'s parser and Postfix's cleanup take as the body's first.
Content with neither is header section to its end (the body is optional). A line that
fails ends the match: nothing after the repetition can send it back into the lines
before, so the time is linear in the header section."""


def header_section(content: bytes) -> bytes:
    """``content``'s header section (:data:`_HEADER_SECTION`), the empty line after it
    left out; empty for content whose first line is no header field (its octets are
    the body's, which 8BITMIME carries, as for an email message with no field)."""
    found = _HEADER_SECTION.match(content)
    return b"" if found is None else found.group()


def wide_header_fields(content: bytes) -> str | None:
    """What in ``content`` needs SMTPUTF8, as a refusal names it (``its UTF-8 header
    fields``, or ``8-bit`` for octets that are not UTF-8, a Latin-1 name from old
    mail); None when its header section is ASCII."""
    return header_fields_wording(header_section(content))


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
