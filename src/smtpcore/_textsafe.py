"""The characters unsafe in text a peer gives, in two classes, each defined once.

UNSAFE_IN_TEXT (:func:`unsafe_in_text`), what is escaped or masked wherever a
peer's text is shown, and what a DSN parameter may not hold: the controls that
RFC 5198 §2 keeps out of Net-Unicode (C0 but HTAB, DEL, and the C1 controls,
among which the 8-bit CSI, U+009B, that xterm obeys as it does ESC [), the
format characters and the line and paragraph separators. RFC 3461 §4.2 and
§4.4 ask an ORCPT and an ENVID for "printable (graphic and white space)"
characters, which a format character is not; U+2028 and U+2029 are line ends
to :meth:`str.splitlines`. ZWNJ and ZWJ are taken: some scripts cannot be
written without them. The SMTP and POP3 reply parsers, the reports and the log
escape this class; escaping more than needed is harmless there. A server's SMTP
reply and POP3 status line refuse its ASCII part (it would break their framing)
and write the rest backslash-escaped (:func:`escape_unsafe_beyond_ascii`).

FORBIDDEN_IN_ADDRESSES (:data:`FORBIDDEN_IN_ADDRESSES`), narrower, what an
address and a domain may not hold. RFC 6531 §3.3's UTF8-non-ascii is any
non-ASCII character, so this is RFC 5198 §2 for the controls (C0, DEL, C1,
NEL among them) and, a deliberate policy of this project, the line and
paragraph separators and the bidi embeddings, overrides and isolates: the
server writes an address raw into Return-Path and Received, which cannot
carry them safely (a separator ends a field for a reader that splits as
:meth:`str.splitlines` does; an override shows another address than it is).
The bidi marks (U+061C, U+200E, U+200F) and every other format character
(U+00AD, U+180E, U+2060, U+0600..U+0605, the emoji tags) stay accepted: they
are in real addresses, pasted from right-to-left text or written in scripts
that need them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Final

__all__ = [
    "FORBIDDEN_IN_ADDRESSES",
    "backslash_escaped",
    "escape_unsafe",
    "escape_unsafe_beyond_ascii",
    "first_unsafe",
    "holds_unsafe",
    "replace_unsafe",
    "unsafe_in_text",
]

FORBIDDEN_IN_ADDRESSES: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
"""What no address nor domain may hold: C0 controls (HTAB too), DEL and C1 controls
(RFC 5198 §2); the line and paragraph separators U+2028, U+2029; the bidi embeddings
and overrides U+202A..U+202E and isolates U+2066..U+2069 (UAX #9 §2.1, §2.2), which
the project refuses because trace fields cannot carry them safely. Not the bidi marks
U+061C, U+200E, U+200F (UAX #9 §2.6), which only mark a direction."""


_ASCII_UNSAFE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""The ASCII part of the class: C0 controls but HTAB, and DEL."""
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Controls (C0, DEL, C1), format characters, line and paragraph separators."""
_JOINERS: Final = frozenset("\u200c\u200d")
"""ZWNJ and ZWJ: format characters that some scripts need to be written at all, and that
IDNA2008 allows in a domain label (RFC 5892 appendix A.1, A.2)."""


def unsafe_in_text(char: str) -> bool:
    """Whether the one character ``char`` is UNSAFE_IN_TEXT (RFC 5198 §2, RFC 3461 §4.2):
    a control but HTAB, a format character but ZWNJ and ZWJ, a line or paragraph
    separator."""
    if char.isascii():
        return char != "\t" and (char < " " or char == "\x7f")
    return unicodedata.category(char) in _UNSAFE_CATEGORIES and char not in _JOINERS


def first_unsafe(text: str) -> int | None:
    """The index of the first character of ``text`` unsafe in text, or None.

    Printable text (letters of any script, spaces) is passed in one C call:
    :meth:`str.isprintable` is false for every character of the class."""
    if text.isprintable():
        return None
    if text.isascii():
        match = _ASCII_UNSAFE.search(text)
        return None if match is None else match.start()
    for index, char in enumerate(text):  # bounded by len(text)
        if unsafe_in_text(char):
            return index
    return None


def holds_unsafe(text: str) -> bool:
    """Whether ``text`` holds a character unsafe in text."""
    return first_unsafe(text) is not None


def replace_unsafe(text: str, replacement: Callable[[str], str]) -> str:
    """``text`` with each character unsafe in text replaced by ``replacement(char)``;
    printable text is returned as it is, at the cost of one C call."""
    if text.isprintable():
        return text
    if text.isascii():
        return _ASCII_UNSAFE.sub(lambda match: replacement(match.group()), text)
    return "".join(replacement(char) if unsafe_in_text(char) else char for char in text)


def backslash_escaped(char: str) -> str:
    """The one character ``char`` as a Python string literal writes it (``\\x85``,
    ``\\u200e``, ``\\U000e0001``): plain ASCII, readable, and telling which character
    stood there."""
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_unsafe(text: str) -> str:
    """``text`` with every character unsafe in text :func:`backslash_escaped`: what a
    log line or a terminal shows of a peer's text, for raw, a control drives the
    terminal (ESC, BEL, the 8-bit CSI U+009B), a format character reorders the line
    (a bidi override), and a separator splits it (RFC 5198 §2). Text with no such
    character is returned as it is, at the cost of one C call."""
    return replace_unsafe(text, backslash_escaped)


def escape_unsafe_beyond_ascii(text: str) -> str:
    """``text`` with each character unsafe in text beyond ASCII (a C1 control, a format
    character but ZWNJ and ZWJ, U+2028, U+2029) :func:`backslash_escaped`: what a
    server's reply or status line writes in place of the raw character (RFC 5198 §2),
    so that text quoting a client (an SMTPUTF8 address may hold an LRM, RFC 6531
    §3.3) is written, not refused. ASCII is left as it is, its C0 controls and DEL
    among it: those would break a line's framing, and are the caller's to refuse.
    Printable or ASCII text is returned as it is, at the cost of two C calls."""
    if text.isprintable() or text.isascii():
        return text
    return "".join(
        backslash_escaped(char) if not char.isascii() and unsafe_in_text(char) else char
        for char in text
    )
