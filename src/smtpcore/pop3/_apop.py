"""APOP (RFC 1939 §7): the greeting's timestamp and the digest made from it.

The machines hold no clock and no randomness, so the application passes in
the values that make the timestamp unique (a process id, a clock reading, a
counter or random digits of its own).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

from smtpcore._errors import LocalProtocolError
from smtpcore._hostname import MAX_HOSTNAME, ascii_hostname
from smtpcore.pop3._arguments import checked_text

__all__ = [
    "apop_digest",
    "apop_matches",
    "apop_timestamp",
    "find_apop_timestamp",
    "timestamp_host",
]

_PART: Final = r"[\x21-\x3b\x3d\x3f-\x7e]"
"""What a timestamp's parts may hold: printable ASCII but ``<`` and ``>``."""
_PART_RE: Final = re.compile(f"{_PART}+")
_NOT_IN_PART_RE: Final = re.compile(f"[^{_PART[1:-1]}]|@")
_BRACKETED_RE: Final = re.compile(f"<({_PART}+)>")
"""Text in angle brackets. ``_PART`` holds neither bracket, so the matches cannot overlap
and one scan finds them all: ``<part@part>`` as one pattern would try every ``@`` of a
run against every other, quadratic in a hostile greeting's ``<@@@...``."""


def apop_timestamp(process: int | str, clock: int | str, host: str) -> str:
    """The ``<process.clock@host>`` timestamp to put in the greeting (RFC 1939 §7).

    It must differ on every greeting, or a captured digest could be replayed.
    ``host`` stands in it as :func:`timestamp_host` gives it (a non-ASCII name in
    its A-label form); ``process`` and ``clock`` must be printable ASCII as they are.
    """
    parts = (str(process), str(clock), timestamp_host(host))
    for part in parts:
        if not _PART_RE.fullmatch(part) or "@" in part:
            raise LocalProtocolError(f"not usable in an APOP timestamp: {part!r}")
    return f"<{parts[0]}.{parts[1]}@{parts[2]}>"


def timestamp_host(hostname: str) -> str:
    """``hostname`` as a server may send it before UTF8 mode, in its greeting and
    after the ``@`` of the timestamp, which is a msg-id (RFC 1939 §7, RFC 822 §6).

    Both are ASCII (RFC 6856 §2: UTF-8 in responses only after UTF8), so a
    non-ASCII name becomes its A-label form (``ascii_hostname``, which the SMTP
    machine's name goes through too), and a character no msg-id may hold
    (``<``, ``>``, ``@``, control characters) a hyphen.
    At most 255 octets, a domain's limit (RFC 5321 §4.5.3.1.2). The name only tells
    the client who greeted: the process and clock make a timestamp unique.
    """
    return _NOT_IN_PART_RE.sub("-", ascii_hostname(hostname))[:MAX_HOSTNAME]


def find_apop_timestamp(text: str) -> str | None:
    """The timestamp in a greeting's text, angle brackets included, or ``None``: the
    first bracketed run with an ``@`` that has a character on either side (RFC 1939 §7,
    a msg-id ``<local@domain>``)."""
    for match in _BRACKETED_RE.finditer(checked_text(text, "find_apop_timestamp() text")):
        if "@" in match[1][1:-1]:
            return match[0]
    return None


def apop_digest(timestamp: str, secret: str) -> str:
    """MD5 of the timestamp followed by the shared secret, as 32 lower-case hex digits."""
    timestamp = checked_text(timestamp, "the APOP timestamp")
    data = (timestamp + checked_text(secret, "the APOP secret")).encode("utf-8")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def apop_matches(timestamp: str, secret: str, digest: str) -> bool:
    """Whether an APOP digest is right, compared in constant time. A secret that is not
    UTF-8 (a lone surrogate) is one no client can have hashed: it matches nothing, as
    it matches nothing under PASS or SASL."""
    try:
        expected = apop_digest(timestamp, secret)
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected, digest.lower())
