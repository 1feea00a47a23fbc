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

__all__ = ["MAX_HOSTNAME", "checked_hostname"]

MAX_HOSTNAME: Final = 255
_ONE_WORD: Final = re.compile(r"[^\x00-\x20\x7f-\x9f\s\ud800-\udfff]+")


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
