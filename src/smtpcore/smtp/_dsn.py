"""Checking the DSN parameters of MAIL and RCPT (RFC 3461 §4).

``RET`` and ``ENVID`` go with MAIL, ``NOTIFY`` and ``ORCPT`` with RCPT. The
machine only checks their syntax; what to report, and when, is the
application's (the reference server's bounces follow RFC 3464).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["decode_xtext", "dsn_mail_problem", "dsn_rcpt_problem", "xtext"]

# xtext (RFC 3461 §4): printable ASCII but "+" and "=", and "+" 2HEXDIGIT.
_XTEXT: Final = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")
_ADDR_TYPE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_NOTIFY_EVENTS: Final = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_XTEXT_HEX: Final = re.compile(rb"\+([0-9A-Fa-f]{2})")
MAX_ENVID: Final = 100
MAX_ORCPT: Final = 500


def dsn_mail_problem(keyword: str, value: str | None) -> str | None:
    """What is wrong with a ``RET`` or ``ENVID`` value, or None."""
    if value is None:
        return f"{keyword} needs a value"
    if keyword == "RET":
        return None if value.upper() in ("FULL", "HDRS") else "RET must be FULL or HDRS"
    if len(value) > MAX_ENVID or not _XTEXT.fullmatch(value):
        return "ENVID must be xtext of at most 100 characters"
    return None


def dsn_rcpt_problem(keyword: str, value: str | None) -> str | None:
    """What is wrong with a ``NOTIFY`` or ``ORCPT`` value, or None."""
    if value is None:
        return f"{keyword} needs a value"
    if keyword == "NOTIFY":
        events = value.upper().split(",")
        if events == ["NEVER"]:
            return None
        if len(set(events)) == len(events) and set(events) <= _NOTIFY_EVENTS:
            return None
        return "NOTIFY must be NEVER, or a list of SUCCESS, FAILURE and DELAY"
    addr_type, semicolon, address = value.partition(";")
    if (
        not semicolon
        or not _ADDR_TYPE.fullmatch(addr_type)
        or len(value) > MAX_ORCPT
        or not _XTEXT.fullmatch(address)
    ):
        return "ORCPT must be addr-type;xtext"
    return None


def xtext(text: str) -> str:
    """``text`` as xtext (RFC 3461 §4), for ``ENVID``, ``ORCPT`` and ``AUTH=``: each
    UTF-8 octet outside "!" to "~", and "+" and "=", becomes "+" and two hex digits.

    >>> xtext("rfc822;bob+tag@pqr.example")
    'rfc822;bob+2Btag@pqr.example'
    """
    return "".join(
        chr(octet) if 33 <= octet <= 126 and octet not in (43, 61) else f"+{octet:02X}"
        for octet in text.encode("utf-8")
    )


def decode_xtext(value: str) -> str:
    """The text an xtext value stands for; octets that are not UTF-8 become U+FFFD."""
    raw = _XTEXT_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("utf-8"))
    return raw.decode("utf-8", "replace")
