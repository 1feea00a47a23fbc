"""The characters and limits every envelope address and domain is held to, and the
error that refuses one: the layer the domain, mailbox and path rules all stand on.

The limits are public in :mod:`smtpcore.address`, which documents them; they are
bound here, below the rules that read them, so that no rule imports the public
module that re-exports it. The atext grammar (RFC 5321 §4.1.2 with RFC 6531 §3.3's
UTF8-non-ascii) is here too, shared by the mailbox (quoting) and the path parser.
"""

from __future__ import annotations

import re
from typing import Final

from smtpcore._errors import LocalProtocolError
from smtpcore._textsafe import FORBIDDEN_IN_ADDRESSES

__all__ = [
    "MAX_DOMAIN_OCTETS",
    "MAX_LABEL_OCTETS",
    "MAX_RECEIVED_PATH_OCTETS",
    "AddressError",
]

# Documented in smtpcore.address, which re-binds them there for autodoc: the rules
# read these bindings, so they are Final (RFC-fixed sizes, not settings).
MAX_DOMAIN_OCTETS: Final = 255
MAX_RECEIVED_PATH_OCTETS: Final = 900
MAX_LABEL_OCTETS: Final = 63

# Grammar, named after the RFC 5321 §4.1.2 / §4.1.3 rules. UTF8-non-ascii (RFC 6531 §3.3)
# is "any non-ASCII character"; control and surrogate code points are refused up front
# by _FORBIDDEN, with the separators and bidi overrides of FORBIDDEN_IN_ADDRESSES, so the
# classes below may simply include the whole non-ASCII range.
_UTF8_NON_ASCII = "\u0080-\U0010ffff"
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~" + _UTF8_NON_ASCII
_ATOM = f"[{_ATEXT}]+"
_DOT_STRING = re.compile(f"{_ATOM}(?:\\.{_ATOM})*")
# atext and dots, any number anywhere, with one atext at least: a Dot-string but for
# its dots (a dot first, last or doubled), as old Japanese carriers' addresses are.
_LOOSE_DOT_STRING = re.compile(f"\\.*[{_ATEXT}][{_ATEXT}.]*")
# FORBIDDEN_IN_ADDRESSES (controls, separators, bidi overrides and isolates) and lone
# surrogates, which UTF-8 cannot encode: never valid in any SMTP address or domain.
_FORBIDDEN = re.compile(f"{FORBIDDEN_IN_ADDRESSES.pattern}|[\ud800-\udfff]")
# What _check_chars looks at any further: printable ASCII alone is checked in one search.
_NOT_PRINTABLE_ASCII = re.compile("[^\x20-\x7e]")
_CHAR_NAMES = {"\r": "CR", "\n": "LF", "\x00": "NUL", "\t": "TAB"}


class AddressError(LocalProtocolError, ValueError):
    """An address, path or domain breaks RFC 5321 / RFC 6531 syntax or limits.

    It is a ``LocalProtocolError`` so that an application building a bad ``Mailbox``
    gets the error DESIGN.md promises; a server machine catches it while parsing peer
    input and answers 501 instead.
    """


def _show(text: str) -> str:
    """Repr of ``text`` cut short, so error messages stay one readable line."""
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


def _check_chars(text: str, what: str) -> None:
    """Refuse what no address nor domain may hold: CR, LF, NUL and every other control
    (RFC 5321 §4.1.2 grammar, RFC 5198 §2), the line and paragraph separators and the
    bidi overrides and isolates (:data:`~smtpcore._textsafe.FORBIDDEN_IN_ADDRESSES`:
    raw in Return-Path or Received, U+2028 ends a field for a reader that splits lines
    as :meth:`str.splitlines` does), and lone surrogates.

    Run first on every input so that later steps (UTF-8 length, IDNA) never see a code
    point they cannot encode.
    """
    if _NOT_PRINTABLE_ASCII.search(text) is None:  # the everyday case: one C call
        return
    m = _FORBIDDEN.search(text)
    if m is not None:
        raise AddressError(f"{what} contains {_char_name(m.group())} at index {m.start()}")


def _char_name(char: str) -> str:
    """What a refused character is, for the error that names it."""
    if "\ud800" <= char <= "\udfff":
        return f"lone surrogate U+{ord(char):04X}"
    if char <= "\x9f":
        return _CHAR_NAMES.get(char, f"control character U+{ord(char):04X}")
    return f"separator or bidi control U+{ord(char):04X} (RFC 5198 §2)"


def _octets(text: str) -> int:
    """Length in octets on the wire (UTF-8, RFC 6531 §3.3); text already passed _check_chars."""
    return len(text.encode("utf-8"))
