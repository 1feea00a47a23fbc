"""SASLprep (RFC 4013), the stringprep profile (RFC 3454) for user names and passwords.

The standard library's :mod:`stringprep` holds RFC 3454's tables, which are
bound to Unicode 3.2, so normalization uses the matching Unicode 3.2 database
(``unicodedata.ucd_3_2_0``) rather than the interpreter's newer one: that is
what makes two implementations agree on the same password.
"""

from __future__ import annotations

import hmac
import stringprep
import unicodedata
from collections.abc import Callable

__all__ = ["passwords_match", "prepared_stored_secret", "saslprep", "saslprep_login"]

_PROHIBITED: tuple[Callable[[str], bool], ...] = (
    stringprep.in_table_c12,  # non-ASCII space characters
    stringprep.in_table_c21,  # ASCII control characters
    stringprep.in_table_c22,  # non-ASCII control characters
    stringprep.in_table_c3,  # private use
    stringprep.in_table_c4,  # non-character code points
    stringprep.in_table_c5,  # surrogate code points
    stringprep.in_table_c6,  # inappropriate for plain text
    stringprep.in_table_c7,  # inappropriate for canonical representation
    stringprep.in_table_c8,  # change display properties or deprecated
    stringprep.in_table_c9,  # tagging characters
)


def saslprep(text: str, *, allow_unassigned: bool = False, bidi_rule: bool = True) -> str:
    """Prepare ``text`` as RFC 4013 says; raise :class:`ValueError` if it is prohibited.

    Steps (RFC 4013 §2): map non-ASCII spaces to SPACE and the "commonly
    mapped to nothing" characters (table B.1, such as SOFT HYPHEN) to nothing;
    normalize with NFKC; refuse the prohibited output of §2.3 (controls,
    private use, non-characters, surrogates, ...); apply the bidirectional
    rule of RFC 3454 §6; and refuse unassigned code points unless
    ``allow_unassigned`` (RFC 3454 §7: true for queries such as a SCRAM user
    name, false for stored strings such as a password). Case is preserved.

    ``bidi_rule=False`` leaves the bidirectional rule out: for a user name that is
    a whole mail address, where a right-to-left local part and its left-to-right
    domain would fail it, and so every such user. What a name is compared by
    needs no rule about how it displays.
    """
    if text.isascii() and text.isprintable():
        return text  # nothing in printable ASCII is mapped, normalized or prohibited
    if not allow_unassigned:
        for char in text:
            if stringprep.in_table_a1(char):
                raise ValueError(f"unassigned code point U+{ord(char):04X}")
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in text
        if not stringprep.in_table_b1(char)
    )
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for char in prepared:
        if any(table(char) for table in _PROHIBITED):
            raise ValueError(f"prohibited code point U+{ord(char):04X}")
    if bidi_rule and any(stringprep.in_table_d1(char) for char in prepared):
        if any(stringprep.in_table_d2(char) for char in prepared):
            raise ValueError("mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise ValueError("right-to-left text must start and end right-to-left")
    return prepared


def saslprep_login(name: str) -> str:
    """A user name SASLprep'd as a query (unassigned code points allowed, no bidi rule),
    all but the domain of a name that is a mail address: the part after the last "@".

    SASLprep maps ZWJ and ZWNJ to nothing (RFC 3454 table B.1), and NFKC folds what
    IDNA refuses, while IDNA 2008 keeps a joiner after a virama: ``u@क्\u200dष.test``
    (a ZWJ) and ``u@क्ष.test`` are two domains (``xn--11b2ezcw70k`` and
    ``xn--11b2ezc``), and a login naming one must never find the other's user. The
    domain is left as it is, for the application to compare as domains are compared
    (as A-labels); its characters SASLprep prohibits still refuse the name
    (``ValueError``)."""
    local, at, domain = name.rpartition("@")
    if not at:
        return saslprep(name, allow_unassigned=True, bidi_rule=False)
    saslprep(domain, allow_unassigned=True, bidi_rule=False)  # refuses a control, say
    return saslprep(local, allow_unassigned=True, bidi_rule=False) + at + domain


def prepared_stored_secret(stored: str) -> str:
    """The ``stored`` password as a server compares or hashes it: SASLprep'd as a
    stored string (RFC 4616 §2, RFC 6856 §2.2), or exactly as stored where SASLprep
    refuses it or leaves it empty (a control character, or an emoji, which Unicode
    3.2 does not assign): RFC 4616 §2 lets a server prepare with another algorithm,
    "including none", and its user can still log in by typing it exactly. The one
    rule for PLAIN, LOGIN, POP3 ``PASS`` (:func:`passwords_match`) and the secret a
    POP3 ``APOP`` digest is checked over."""
    return _saslprepped_stored(stored) or stored


def passwords_match(stored: str, presented: str) -> bool:
    """Whether ``presented``, a password the client sent in the clear (PLAIN, LOGIN,
    POP3 ``PASS``), is the ``stored`` one, in constant time.

    Both are prepared with SASLprep first, as RFC 4616 §2 asks: the stored one as a
    stored string, the presented one as a query; so a password typed decomposed
    (``u`` and a combining diaeresis) matches one stored composed, as it does under
    SCRAM. A presented password SASLprep refuses, or leaves empty, matches nothing
    but a stored one SASLprep refuses too: that is compared exactly as it is
    instead (:func:`prepared_stored_secret`; SCRAM cannot serve its user).
    """
    expected = _saslprepped_stored(stored)
    if not expected:
        return bool(stored) and hmac.compare_digest(_octets(stored), _octets(presented))
    try:
        given = saslprep(presented, allow_unassigned=True)
    except ValueError:
        given = ""
    return hmac.compare_digest(expected.encode(), given.encode())


def _saslprepped_stored(stored: str) -> str:
    """``stored`` SASLprep'd as a stored string, or "" where SASLprep refuses it: what
    decides, for :func:`prepared_stored_secret` and :func:`passwords_match` alike,
    whether a stored password is prepared or taken as it is."""
    try:
        return saslprep(stored)
    except ValueError:
        return ""


def _octets(text: str) -> bytes:
    """UTF-8, a lone surrogate and all: a password SASLprep refuses may hold one."""
    return text.encode("utf-8", "surrogatepass")
