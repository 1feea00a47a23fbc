"""The four characters on which IDNA 2003 and IDNA 2008 part ways (UTS #46 §6, "deviations").

IDNA 2003's nameprep (RFC 3491), with which :mod:`smtpcore.address` checks a U-label,
maps them to other strings: ``ß`` to ``ss``, final sigma ``ς`` to sigma (U+03C3), and ZERO WIDTH
JOINER and NON-JOINER to nothing. IDNA 2008 (RFC 5890-5892), which SMTPUTF8 (RFC 6531)
relies on, keeps them: ``ß`` and ``ς`` are PVALID, the joiners CONTEXTJ (valid only where
RFC 5892 appendix A says). A label holding them has one A-label under IDNA 2008
(``straße``: ``xn--strae-oqa``) and names another domain under IDNA 2003 (``strasse``),
so the address parser takes such a label the IDNA 2008 way; this module holds what that
needs and nothing else. Stdlib only: :mod:`unicodedata` and the ``punycode`` codec.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["DEVIATIONS", "a_label", "joiner_problem", "without_deviations"]

DEVIATIONS: Final = frozenset("\u00df\u03c2\u200c\u200d")
"""ß, final sigma, ZWNJ and ZWJ: all IDNA 2008 keeps that IDNA 2003 maps (UTS #46 §6)."""

_ZWNJ: Final = "\u200c"
_ZWJ: Final = "\u200d"
_VIRAMA: Final = 9
"""Canonical_Combining_Class Virama (RFC 5892 appendix A.1, A.2)."""


def without_deviations(label: str) -> str:
    """``label`` with the four characters set aside: what IDNA 2003's checks must
    still take as it is."""
    return "".join(char for char in label if char not in DEVIATIONS)


def joiner_problem(label: str) -> str | None:
    """Why a ZWJ or ZWNJ in ``label`` stands where RFC 5892 appendix A does not allow
    it, or None.

    ZWJ is valid only right after a virama (A.2). ZWNJ is valid after a virama, or
    between letters that join (A.1), a rule on Unicode's Joining_Type property, which
    the standard library lacks: that second context is refused here, never guessed."""
    for index, char in enumerate(label):
        if char != _ZWJ and char != _ZWNJ:
            continue
        if index > 0 and unicodedata.combining(label[index - 1]) == _VIRAMA:
            continue
        if char == _ZWJ:
            return (
                f"has ZERO WIDTH JOINER (U+200D) at index {index} not right after a "
                "virama (RFC 5892 appendix A.2)"
            )
        return (
            f"has ZERO WIDTH NON-JOINER (U+200C) at index {index} not right after a "
            "virama (RFC 5892 appendix A.1; its other context, between joining "
            "letters, is not taken)"
        )
    return None


def a_label(u_label: str) -> str:
    """The A-label of a lowercase, NFC ``u_label`` as IDNA 2008 makes it (RFC 5891
    §4.4): the ACE prefix and the label's Punycode (RFC 3492), ß and ς kept, as UTS #46
    nontransitional processing does (``straße``: ``xn--strae-oqa``)."""
    return "xn--" + u_label.encode("punycode").decode("ascii")
