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

__all__ = [
    "apop_digest",
    "apop_matches",
    "apop_timestamp",
    "find_apop_timestamp",
    "timestamp_host",
]

_PART_RE: Final = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")
_NOT_IN_PART_RE: Final = re.compile(r"[^\x21-\x3b\x3d\x3f-\x7e]|@")
_MAX_HOST: Final = 255
_TIMESTAMP_RE: Final = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")


def apop_timestamp(process: int | str, clock: int | str, host: str) -> str:
    """The ``<process.clock@host>`` timestamp to put in the greeting (RFC 1939 §7).

    It must differ on every greeting, or a captured digest could be replayed.
    """
    parts = (str(process), str(clock), host)
    for part in parts:
        if not _PART_RE.fullmatch(part) or "@" in part:
            raise LocalProtocolError(f"not usable in an APOP timestamp: {part!r}")
    return f"<{parts[0]}.{parts[1]}@{parts[2]}>"


def timestamp_host(hostname: str) -> str:
    """``hostname`` as it may stand after the ``@`` of a timestamp, which is a msg-id
    (RFC 1939 §7, RFC 822 §6): ASCII, so a non-ASCII label becomes its A-label
    (``xn--``, RFC 5890 §2.3.2.1), and a character no msg-id may hold (``<``, ``>``,
    ``@``) a hyphen; at most 255 octets, a domain's limit (RFC 5321 §4.5.3.1.2). The
    name only tells the client who made the timestamp: the process and clock make
    it unique."""
    labels = [_a_label(label) for label in hostname.split(".")]
    return _NOT_IN_PART_RE.sub("-", ".".join(labels))[:_MAX_HOST]


def _a_label(label: str) -> str:
    if label.isascii():
        return label
    return "xn--" + label.encode("punycode").decode("ascii")


def find_apop_timestamp(text: str) -> str | None:
    """The timestamp in a greeting's text, angle brackets included, or ``None``."""
    match = _TIMESTAMP_RE.search(text)
    return match[0] if match else None


def apop_digest(timestamp: str, secret: str) -> str:
    """MD5 of the timestamp followed by the shared secret, as 32 lower-case hex digits."""
    data = (timestamp + secret).encode("utf-8")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def apop_matches(timestamp: str, secret: str, digest: str) -> bool:
    """Whether an APOP digest is right, compared in constant time."""
    return hmac.compare_digest(apop_digest(timestamp, secret), digest.lower())
