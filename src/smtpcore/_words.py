"""Protocol words compared without regard to case: ASCII case, and no other.

Verbs, ESMTP keywords, POP3 keywords, SASL mechanism names and enumerated
parameter values are case-insensitive in ASCII alone (RFC 5321 §2.4, RFC 1939
§3, RFC 4422 §3.1). ``str.upper`` folds far more: the dotless i (U+0131)
becomes ``I`` and the long s (U+017F) ``S``, so ``MA\u0131L FROM:`` would read
as ``MAIL`` and ``NOTIFY=\u017fUCCESS`` as ``SUCCESS`` once a UTF-8 line is
decoded; a filter in front that folds only ASCII would see another command
than we do.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import Final, TypeVar

__all__ = ["ascii_upper", "listed"]

T = TypeVar("T")

_ASCII_UPPER: Final = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def ascii_upper(word: str) -> str:
    """``word`` with its ASCII letters upper-cased and every other character as it is."""
    if word.isascii():
        return word.upper()  # the same, in C
    return word.translate(_ASCII_UPPER)


def listed(option: str, items: Iterable[T]) -> Iterable[T]:
    """``items``, the value of ``option``, a collection of names or lines; a ``str``
    is a TypeError naming the fix, where iterating it would take each of its letters
    for a name (``auth_mechanisms="PLAIN"`` offering P, L, A, I and N)."""
    if isinstance(items, str):
        raise TypeError(f"{option} takes a list, not one str: write {option}=[{items!r}]")
    return items
