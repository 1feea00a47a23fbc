"""Numbers on the wire: ASCII digits, and nothing else.

Every number SMTP and POP3 carry (SIZE, BDAT chunk sizes, reply codes,
enhanced status codes, POP3 message numbers and octet counts) is
``1*DIGIT`` with ``DIGIT = %x30-39`` (RFC 5234 appendix B.1). Python is
more generous: ``str.isdigit()`` is true for ``"\u00b2"`` (superscript two)
and for Arabic-Indic digits, ``int()`` reads ``"\u0661\u0662"``, ``" 12"``
and ``"1_2"`` as 12, and refuses a string of more than 4300 digits with
``ValueError``. Peer input goes through this module
instead, so that a number means the same here as it does to every peer.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["is_digits", "parse_number"]

# A str pattern's \d is any Unicode digit; [0-9] is the ten ASCII ones.
_DIGITS: Final = re.compile(r"[0-9]+")


def is_digits(text: str) -> bool:
    """True when ``text`` is one or more ASCII digits (and nothing else)."""
    return _DIGITS.fullmatch(text) is not None


def parse_number(text: str, *, max_digits: int) -> int | None:
    """The value of ``text`` if it is 1 to ``max_digits`` ASCII digits, else ``None``.

    ``max_digits`` bounds the work and the value; leading zeros count, as they
    count on the wire.
    """
    # isdigit() alone takes other scripts' digits; in ASCII text it takes 0-9 alone, so
    # the two together are is_digits, asked in C (a test holds them to it).
    if not 0 < len(text) <= max_digits or not (text.isascii() and text.isdigit()):
        return None
    return int(text)
