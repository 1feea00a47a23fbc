"""What a server offers in its EHLO or LHLO reply (RFC 5321 §4.1.1.1).

The first line of a positive EHLO reply names the server; every later line
is ``ehlo-keyword *(SP ehlo-param)``. The client machine reads them once into
a :class:`ServerExtensions` and consults it before each command it sends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from smtpcore.smtp._replies import Reply

__all__ = ["ServerExtensions"]

_KEYWORD_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


@dataclass(frozen=True, slots=True)
class ServerExtensions(Mapping[str, tuple[str, ...]]):
    """The extensions a server offered: upper-cased keyword -> its parameters.

    Keywords are case-insensitive (``"pipelining" in extensions`` works).
    Lines that are not a valid ``ehlo-keyword`` are skipped rather than
    refused, because real servers send such lines (an empty last line, for
    one) and the client must still be able to talk to them. The legacy
    ``AUTH=PLAIN LOGIN`` form that some servers add counts as ``AUTH``, and
    SASL mechanism names are upper-cased, as they are case-insensitive.
    An empty instance stands for a session opened with HELO, or not yet
    opened: nothing beyond RFC 5321 may be used.
    """

    domain: str = ""
    """The server's name, the first word of the reply's first line."""
    offered: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """The keywords in the order the server listed them, with their parameters."""

    @classmethod
    def from_reply(cls, reply: Reply) -> ServerExtensions:
        """Read a positive EHLO or LHLO reply."""
        first, *rest = reply.lines
        domain = first.split(" ", 1)[0]
        found: dict[str, list[str]] = {}
        for line in rest:
            words = line.split()
            if not words:
                continue
            keyword = words[0].upper()
            params = words[1:]
            if keyword.startswith("AUTH="):
                params = [keyword[5:], *params]
                keyword = "AUTH"
            if keyword == "AUTH":
                params = [mechanism.upper() for mechanism in params]  # RFC 4422 §3.1
            if not _KEYWORD_RE.fullmatch(keyword):
                continue
            merged = found.setdefault(keyword, [])
            merged.extend(param for param in params if param not in merged)
        return cls(domain, tuple((key, tuple(params)) for key, params in found.items()))

    def __getitem__(self, keyword: str) -> tuple[str, ...]:
        upper = keyword.upper()
        for key, params in self.offered:
            if key == upper:
                return params
        raise KeyError(keyword)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self.offered)

    def __len__(self) -> int:
        return len(self.offered)

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and any(key == keyword.upper() for key, _ in self.offered)

    @property
    def size(self) -> int | None:
        """The fixed message size limit (RFC 1870 §4); None when there is none.

        ``SIZE`` alone, ``SIZE 0`` and an unreadable value all mean that the
        server announced no limit.
        """
        params = self.get("SIZE", ())
        if len(params) == 1 and params[0].isdigit() and params[0].isascii():
            limit = int(params[0])
            return limit or None
        return None

    @property
    def auth(self) -> frozenset[str]:
        """The SASL mechanisms offered with AUTH (RFC 4954 §3), upper-cased."""
        return frozenset(mechanism.upper() for mechanism in self.get("AUTH", ()))

    @property
    def pipelining(self) -> bool:
        """Commands may be sent in groups without waiting (RFC 2920)."""
        return "PIPELINING" in self

    @property
    def eight_bit_mime(self) -> bool:
        """Content may hold octets over 127, with ``BODY=8BITMIME`` (RFC 6152)."""
        return "8BITMIME" in self

    @property
    def binary_mime(self) -> bool:
        """Binary content may be sent with BDAT, ``BODY=BINARYMIME`` (RFC 3030 §3)."""
        return "BINARYMIME" in self

    @property
    def smtputf8(self) -> bool:
        """UTF-8 addresses, in a transaction whose MAIL says SMTPUTF8 (RFC 6531)."""
        return "SMTPUTF8" in self

    @property
    def chunking(self) -> bool:
        """Content may be sent with BDAT instead of DATA (RFC 3030)."""
        return "CHUNKING" in self

    @property
    def dsn(self) -> bool:
        """The RET, ENVID, NOTIFY and ORCPT parameters may be used (RFC 3461)."""
        return "DSN" in self

    @property
    def starttls(self) -> bool:
        """The session may be upgraded to TLS (RFC 3207)."""
        return "STARTTLS" in self

    @property
    def enhanced_status_codes(self) -> bool:
        """Replies carry class.subject.detail codes after the reply code (RFC 2034)."""
        return "ENHANCEDSTATUSCODES" in self
