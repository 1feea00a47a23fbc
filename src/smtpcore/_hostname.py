"""The name a server gives itself, checked once where it is configured.

It heads the SMTP greeting and EHLO reply (RFC 5321 §4.1.1.1) and the POP3
greeting, whose lines have a length limit (RFC 5321 §4.5.3.1.5, RFC 2449 §4):
one word of at most 255 octets (a domain's limit, RFC 5321 §4.5.3.1.2), no
white space or control character. It is not held to a domain's grammar: the
default, the machine's own name, may hold an underscore or be an address, and a
server that would not start for it helps no one.
"""

from __future__ import annotations

import re
from typing import Final

from smtpcore.address import AddressError, normalize_domain, normalize_host_name

__all__ = ["MAX_HOSTNAME", "a_label_hostname", "ascii_hostname", "checked_hostname"]

MAX_HOSTNAME: Final = 255
_ONE_WORD: Final = re.compile(r"[^\x00-\x20\x7f-\x9f\s\ud800-\udfff]+")
_NOT_ASCII: Final = re.compile(r"[^\x00-\x7f]")


def checked_hostname(hostname: str) -> str:
    """``hostname`` if a server can name itself so; ``ValueError`` otherwise."""
    if not isinstance(hostname, str) or not hostname:
        raise ValueError(f"hostname {hostname!r} cannot name this server: it is empty or no str")
    size = len(hostname.encode("utf-8", "surrogatepass"))
    if size > MAX_HOSTNAME or not _ONE_WORD.fullmatch(hostname):
        raise ValueError(
            f"hostname {hostname!r} cannot name this server: over {MAX_HOSTNAME} octets, or white "
            "space or a control character in it"
        )
    return hostname


def a_label_hostname(hostname: str) -> str:
    """``hostname`` as the SMTP server names itself in the greeting, the EHLO reply
    and its 221 and 421s, which come before SMTPUTF8 is agreed (a Domain is ASCII,
    RFC 5321 §4.1.2; RFC 6531): checked (:func:`checked_hostname`), an ASCII name
    kept as it is, a non-ASCII one in its lowercase A-label form (``xn--``, RFC 5890
    §2.3.2.1), a trailing dot kept. ``ValueError`` for a non-ASCII name IDNA
    refuses (RFC 5891 §4: a leading hyphen, an empty label, a literal, over 255
    octets): it has no ASCII form, and a server named by a guess at one would
    greet as a host it is not."""
    hostname = checked_hostname(hostname)
    if hostname.isascii():
        return hostname
    try:
        a_label = normalize_host_name(hostname)
    except AddressError as exc:
        raise ValueError(f"hostname {hostname!r} cannot name this server: {exc}") from None
    return a_label + "." if hostname.endswith(".") else a_label


def ascii_hostname(hostname: str) -> str:
    """``hostname`` as the POP3 server writes it before UTF-8 is agreed, in its
    greeting and timestamp (RFC 6856 §2), where the name only tells the client who
    greeted, so any name gets an ASCII form (the SMTP server refuses one that has
    none: :func:`a_label_hostname`).

    An ASCII name is kept as it is. A non-ASCII one becomes its lowercase A-label
    form (``xn--``, RFC 5890 §2.3.2.1) by the IDNA conversion of
    :func:`smtpcore.address.normalize_domain`; where IDNA refuses the whole name,
    each label it takes alone is converted and every other non-ASCII character
    becomes a hyphen. At most 255 octets, a domain's limit (RFC 5321 §4.5.3.1.2).
    """
    if hostname.isascii():
        return hostname
    try:
        hostname = normalize_domain(hostname)
    except AddressError:
        hostname = ".".join(_ascii_label(label) for label in hostname.split("."))
    return _NOT_ASCII.sub("-", hostname)[:MAX_HOSTNAME]


def _ascii_label(label: str) -> str:
    """One label of a name IDNA refused as a whole: its A-label if IDNA takes this
    label alone, else the label as it is, whose non-ASCII characters
    :func:`ascii_hostname` makes hyphens."""
    if label.isascii():
        return label
    try:
        return normalize_domain(label)
    except AddressError:
        return label
