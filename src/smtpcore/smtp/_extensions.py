"""What a server offers in its EHLO or LHLO reply (RFC 5321 §4.1.1.1).

The first line of a positive EHLO reply names the server; every later line
is ``ehlo-keyword *(SP ehlo-param)``. The client machine reads them once into
a :class:`ServerExtensions`, and :func:`check_command` and
:func:`check_content` tell it, before each command or chunk it sends,
whether the server offered what that needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from smtpcore._errors import LocalProtocolError
from smtpcore.smtp._events import (
    Auth,
    Bdat,
    Command,
    Data,
    Expn,
    Help,
    Mail,
    Noop,
    Rcpt,
    StartTls,
    Vrfy,
)
from smtpcore.smtp._params import Parameters
from smtpcore.smtp._replies import Reply

__all__ = ["ServerExtensions", "check_command", "check_content"]

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


# The EHLO keyword an ESMTP parameter of MAIL or RCPT depends on.
_PARAMETER_EXTENSIONS: Final[dict[str, str]] = {
    "SIZE": "SIZE",  # RFC 1870
    "SMTPUTF8": "SMTPUTF8",  # RFC 6531
    "RET": "DSN",  # RFC 3461
    "ENVID": "DSN",
    "NOTIFY": "DSN",
    "ORCPT": "DSN",
    "AUTH": "AUTH",  # RFC 4954 §5
    "REQUIRETLS": "REQUIRETLS",  # RFC 8689
    "MT-PRIORITY": "MT-PRIORITY",  # RFC 6710
}
_BODY_EXTENSIONS: Final[dict[str, str]] = {
    "7BIT": "8BITMIME",  # RFC 6152 §2
    "8BITMIME": "8BITMIME",
    "BINARYMIME": "BINARYMIME",  # RFC 3030 §3
}


def check_command(
    offered: ServerExtensions, command: Command, *, extended: bool, utf8: bool, binary: bool
) -> None:
    """Refuse ``command`` if it needs something the server did not offer.

    ``extended`` says the session was opened with EHLO or LHLO; ``utf8`` and
    ``binary`` that the open transaction's MAIL carried SMTPUTF8 or
    ``BODY=BINARYMIME``. Raises :class:`LocalProtocolError`.
    """
    if isinstance(command, Mail):
        _check_mail(offered, command, extended=extended)
    elif isinstance(command, Rcpt):
        _check_parameters(offered, command.params, extended=extended)
        if not command.recipient.is_ascii and not utf8:
            raise LocalProtocolError(
                "a UTF-8 recipient needs a MAIL with the SMTPUTF8 parameter (RFC 6531 §3.4)"
            )
    elif isinstance(command, Data):
        if binary:
            raise LocalProtocolError("BODY=BINARYMIME content must be sent with BDAT")
    elif isinstance(command, Bdat):
        if not offered.chunking:
            raise LocalProtocolError("the server did not offer CHUNKING (BDAT)")
    elif isinstance(command, StartTls):
        if not offered.starttls:
            raise LocalProtocolError("the server did not offer STARTTLS")
    elif isinstance(command, Auth):
        if "AUTH" not in offered:
            raise LocalProtocolError("the server did not offer AUTH")
        if offered.auth and command.mechanism.upper() not in offered.auth:
            raise LocalProtocolError(f"the server did not offer AUTH {command.mechanism}")
    elif (
        isinstance(command, (Vrfy, Expn, Help, Noop))
        and not command.argument.isascii()
        and not offered.smtputf8
    ):
        raise LocalProtocolError(f"a UTF-8 {command.verb} argument needs SMTPUTF8")


def check_content(offered: ServerExtensions, data: bytes) -> None:
    """Refuse 8-bit content unless the server offered 8BITMIME (RFC 6152) or BINARYMIME."""
    if not data.isascii() and not (offered.eight_bit_mime or offered.binary_mime):
        raise LocalProtocolError(
            "8-bit content needs the server to offer 8BITMIME (RFC 6152); "
            "encode it as 7-bit MIME instead"
        )


def _check_mail(offered: ServerExtensions, command: Mail, *, extended: bool) -> None:
    params = command.params
    _check_parameters(offered, params, extended=extended)
    if "SIZE" in params:
        value = params["SIZE"] or ""
        if not (value.isascii() and value.isdigit()):
            raise LocalProtocolError(f"SIZE must be a number of octets: {value!r}")
        limit = offered.size
        if limit is not None and int(value) > limit:
            raise LocalProtocolError(
                f"the declared SIZE {value} is over the server's limit of {limit} (RFC 1870 §6)"
            )
    if "BODY" in params:
        body = (params["BODY"] or "").upper()
        needed = _BODY_EXTENSIONS.get(body)
        if needed is None:
            raise LocalProtocolError(f"unknown BODY type {params['BODY']!r}")
        if needed not in offered:
            raise LocalProtocolError(f"BODY={body} needs the server to offer {needed}")
    sender = command.sender
    if sender is not None and not sender.is_ascii and "SMTPUTF8" not in params:
        raise LocalProtocolError(
            "a UTF-8 sender needs the SMTPUTF8 parameter, and the server to offer it "
            "(RFC 6531 §3.4)"
        )


def _check_parameters(offered: ServerExtensions, params: Parameters, *, extended: bool) -> None:
    if not params:
        return
    if not extended:
        raise LocalProtocolError("ESMTP parameters need a session opened with EHLO")
    for keyword in params:
        needed = _PARAMETER_EXTENSIONS.get(keyword)
        if needed is not None and needed not in offered:
            raise LocalProtocolError(f"{keyword} needs the server to offer {needed}")
