"""The characters unsafe in text a peer gives: one class for replies, addresses, reports and logs.

RFC 5198 §2 keeps control characters out of Net-Unicode: C0 but the white
space a text may hold (HTAB), DEL, and the C1 controls, among which the 8-bit
CSI (U+009B) that xterm obeys as it does ESC [. Format characters (the bidi
overrides such as U+202E, which make a reader see another text than it holds)
and the line and paragraph separators (U+2028, U+2029, which
:meth:`str.splitlines` takes for line ends) are no printable text either:
RFC 3461 §4.2 asks an ORCPT for "printable (graphic and white space)"
characters, and RFC 6532 §3.2 builds UTF-8 header text on RFC 5198. ZWNJ and
ZWJ are the exception: some scripts cannot be written without them.

A reply's text (the reply parser), an address (RFC 6531 §3.3), a DSN
parameter, a delivery report's fields and a log line all test the same class
here, so that no path lets through what another refuses.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Final

__all__ = ["first_unsafe", "holds_unsafe", "replace_unsafe", "unsafe_in_text"]

_ASCII_UNSAFE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""The ASCII part of the class: C0 controls but HTAB, and DEL."""
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Controls (C0, DEL, C1), format characters, line and paragraph separators."""
_JOINERS: Final = frozenset("\u200c\u200d")
"""ZWNJ and ZWJ: format characters that some scripts need to be written at all, and that
IDNA2008 allows in a domain label (RFC 5892 appendix A.1, A.2)."""


def unsafe_in_text(char: str) -> bool:
    """Whether the one character ``char`` is unsafe in text (RFC 5198 §2): a control but
    HTAB, a format character but ZWNJ and ZWJ, a line or paragraph separator."""
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
