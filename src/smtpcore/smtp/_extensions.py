"""What a server offers in its EHLO or LHLO reply (RFC 5321 §4.1.1.1).

The first line of a positive EHLO reply names the server; every later line
is ``ehlo-keyword *(SP ehlo-param)``. The client machine reads them once into
a :class:`ServerExtensions`, and :func:`check_command` and
:func:`check_content` tell it, before each command or chunk it sends,
whether the server offered what that needs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar, overload

from smtpcore._errors import LocalProtocolError, wrong_type
from smtpcore._numbers import parse_number
from smtpcore._words import ascii_upper
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
    Xclient,
    Xforward,
)
from smtpcore.smtp._ext import KNOWN, Limits, owner_of_parameter, owner_of_verb
from smtpcore.smtp._extension import ParameterError
from smtpcore.smtp._replies import Reply

__all__ = [
    "ServerExtensions",
    "check_command",
    "check_content",
    "check_parameters",
    "parameter_problem",
    "unoffered_parameter",
]

_KEYWORD_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")

_D = TypeVar("_D")


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
    _index: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    """``offered`` by upper-cased keyword: a client asks several times a message."""
    _size: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.domain, str):
            raise wrong_type("the server's domain", self.domain, "a str")
        if self.offered != ():  # the machine's own empty one, at every connection's start
            object.__setattr__(self, "offered", _pairs(self.offered))
        self._index_offered()

    @classmethod
    def _parsed(
        cls, domain: str, offered: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> ServerExtensions:
        """One built from what :meth:`from_reply` read off the wire, which is str and
        tuples by construction: not checked again, as a client reads an EHLO reply
        on every connection. For this class alone: it runs no subclass's
        ``__init__`` or ``__post_init__``."""
        extensions = object.__new__(cls)
        object.__setattr__(extensions, "domain", domain)
        object.__setattr__(extensions, "offered", offered)
        extensions._index_offered()
        return extensions

    def _index_offered(self) -> None:
        index: dict[str, tuple[str, ...]] = {}
        for key, params in self.offered:
            index.setdefault(ascii_upper(key), params)
        object.__setattr__(self, "_index", index)
        params = index.get("SIZE", ())
        limit = parse_number(params[0], max_digits=20) if len(params) == 1 else None
        object.__setattr__(self, "_size", limit or None)

    @classmethod
    def from_reply(cls, reply: Reply) -> ServerExtensions:
        """Read a positive EHLO or LHLO reply."""
        if not isinstance(reply, Reply):
            raise wrong_type("an EHLO reply", reply, "a Reply")
        first, *rest = reply.lines
        domain = first.split(" ", 1)[0]
        found: dict[str, dict[str, None]] = {}
        """Each keyword's parameters, in order, once each: a dict, whose look-up does not
        grow with the line as a list's would (a hostile server lists thousands)."""
        for line in rest:
            words = line.split()
            if not words:
                continue
            keyword = ascii_upper(words[0])
            params = words[1:]
            if keyword.startswith("AUTH="):
                params = [keyword[5:], *params]
                keyword = "AUTH"
            if keyword == "AUTH":
                params = [ascii_upper(mechanism) for mechanism in params]  # RFC 4422 §3.1
            if not _KEYWORD_RE.fullmatch(keyword):
                continue
            found.setdefault(keyword, {}).update(dict.fromkeys(params))
        offered = tuple((key, tuple(params)) for key, params in found.items())
        if cls is ServerExtensions:
            return cls._parsed(domain, offered)
        return cls(domain, offered)  # a subclass's own __init__ and __post_init__ run

    def __getitem__(self, keyword: str) -> tuple[str, ...]:
        if isinstance(keyword, str):  # any other is offered by nobody, as for ``in``
            found = self._index.get(ascii_upper(keyword))
            if found is not None:
                return found
        raise KeyError(keyword)

    @overload
    def get(self, keyword: str, /) -> tuple[str, ...] | None: ...

    @overload
    def get(self, keyword: str, /, default: tuple[str, ...] | _D) -> tuple[str, ...] | _D: ...

    def get(self, keyword: str, /, default: object = None) -> object:
        if not isinstance(keyword, str):  # as ``in`` and ``[]``: not offered
            return default
        return self._index.get(ascii_upper(keyword), default)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self.offered)

    def __len__(self) -> int:
        return len(self.offered)

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and ascii_upper(keyword) in self._index

    @property
    def size(self) -> int | None:
        """The fixed message size limit (RFC 1870 §4); None when there is none.

        ``SIZE`` alone, ``SIZE 0`` and an unreadable value all mean that the
        server announced no limit.
        """
        return self._size

    @property
    def auth(self) -> frozenset[str]:
        """The SASL mechanisms offered with AUTH (RFC 4954 §3), upper-cased."""
        return frozenset(ascii_upper(name) for name in self.get("AUTH", ()))

    @property
    def pipelining(self) -> bool:
        """Commands may be sent in groups without waiting (RFC 2920)."""
        return "PIPELINING" in self._index

    @property
    def eight_bit_mime(self) -> bool:
        """Content may hold octets over 127, with ``BODY=8BITMIME`` (RFC 6152)."""
        return "8BITMIME" in self._index

    @property
    def binary_mime(self) -> bool:
        """Binary content may be sent with BDAT, ``BODY=BINARYMIME`` (RFC 3030 §3)."""
        return "BINARYMIME" in self._index

    @property
    def smtputf8(self) -> bool:
        """UTF-8 addresses, in a transaction whose MAIL says SMTPUTF8 (RFC 6531)."""
        return "SMTPUTF8" in self._index

    @property
    def chunking(self) -> bool:
        """Content may be sent with BDAT instead of DATA (RFC 3030)."""
        return "CHUNKING" in self._index

    @property
    def dsn(self) -> bool:
        """The RET, ENVID, NOTIFY and ORCPT parameters may be used (RFC 3461)."""
        return "DSN" in self._index

    @property
    def starttls(self) -> bool:
        """The session may be upgraded to TLS (RFC 3207)."""
        return "STARTTLS" in self._index

    @property
    def limits(self) -> Limits:
        """The limits the server will apply in this session (RFC 9422), as far as
        they are registered and readable; all None without LIMITS."""
        return Limits.parse(self.get("LIMITS", ()))

    @property
    def xclient(self) -> frozenset[str]:
        """The XCLIENT attributes the server announced (Postfix), upper-cased in ASCII
        alone (``LOG\u0131N`` is no ``LOGIN``); empty when it does not offer XCLIENT
        to this client."""
        return frozenset(ascii_upper(name) for name in self.get("XCLIENT", ()))

    @property
    def xforward(self) -> frozenset[str]:
        """The XFORWARD attributes the server announced (Postfix), upper-cased in ASCII
        alone, as :attr:`xclient`."""
        return frozenset(ascii_upper(name) for name in self.get("XFORWARD", ()))

    @property
    def enhanced_status_codes(self) -> bool:
        """Replies carry class.subject.detail codes after the reply code (RFC 2034)."""
        return "ENHANCEDSTATUSCODES" in self._index

    def missing_for(self, keyword: str, value: str | None = None) -> str | None:
        """The EHLO keyword that the MAIL or RCPT parameter ``keyword=value`` needs and
        this server did not list, or None when it may be sent.

        A client must not use an extension it was not offered (RFC 5321 §2.2.2);
        a relay passing a message's parameters on asks this of each. The
        answer comes from the parameter's extension entry, so it knows that
        ``BODY=8BITMIME`` needs 8BITMIME and ``BODY=BINARYMIME`` BINARYMIME. A
        parameter of an extension smtpcore does not know is the server's to
        judge: None.
        """
        return unoffered_parameter(self, keyword, value)


def check_command(
    offered: ServerExtensions, command: Command, *, extended: bool, utf8: bool, binary: bool
) -> None:
    """Refuse ``command`` if it needs something the server did not offer.

    ``extended`` says the session was opened with EHLO or LHLO; ``utf8`` and
    ``binary`` that the open transaction's MAIL carried SMTPUTF8 or
    ``BODY=BINARYMIME``. What each extension needs comes from its entry
    (``smtp/_ext/``). Raises :class:`LocalProtocolError`.
    """
    if isinstance(command, Mail):
        utf8 = "SMTPUTF8" in command.params and offered.smtputf8
        check_parameters(offered, command, extended=extended, utf8=utf8)
        sender = command.sender
        if sender is not None and not sender.is_ascii and "SMTPUTF8" not in command.params:
            raise LocalProtocolError(
                "a UTF-8 sender needs the SMTPUTF8 parameter, and the server to offer it "
                "(RFC 6531 §3.4)"
            )
    elif isinstance(command, Rcpt):
        check_parameters(offered, command, extended=extended, utf8=utf8)
        if not command.recipient.is_ascii and not utf8:
            raise LocalProtocolError(
                "a UTF-8 recipient needs a MAIL with the SMTPUTF8 parameter (RFC 6531 §3.4)"
            )
    elif isinstance(command, Data):
        if binary:
            raise LocalProtocolError("BODY=BINARYMIME content must be sent with BDAT")
    elif isinstance(command, (Bdat, StartTls, Auth, Xclient, Xforward)):
        owner = owner_of_verb(command.verb)
        assert owner is not None
        if owner.keyword not in offered:
            raise LocalProtocolError(
                f"the server did not offer {owner.keyword} ({command.verb})"
                if owner.keyword != command.verb
                else f"the server did not offer {owner.keyword}"
            )
        problem = owner.client_check(offered, command) if owner.client_check else None
        if problem is not None:
            raise LocalProtocolError(problem)
    elif (
        isinstance(command, (Vrfy, Expn, Help, Noop))
        and not command.argument.isascii()
        and not offered.smtputf8
    ):
        raise LocalProtocolError(f"a UTF-8 {command.verb} argument needs SMTPUTF8")


MAX_COMMAND_LINE: Final = 512
"""A command line's octets, CRLF included, that every server takes (RFC 5321
§4.5.3.1.4)."""


def command_line_limit(offered: ServerExtensions, command: Command) -> int:
    """The longest line ``command`` may go as: 512 octets (RFC 5321 §4.5.3.1.4, which
    holds AUTH and XCLIENT to it too), and for MAIL and RCPT what the parameters of
    each extension the server offered add (RFC 1870 §3 (5), RFC 3461 §4, ...), more
    where it offered SMTPUTF8 too (``Extension.allowance``), as the server machine
    works out its own limit."""
    if not isinstance(command, (Mail, Rcpt)):
        return MAX_COMMAND_LINE
    utf8 = offered.smtputf8
    return MAX_COMMAND_LINE + sum(
        [entry.allowance(utf8) for entry in KNOWN if entry.keyword in offered]
    )


def check_content(offered: ServerExtensions, data: bytes, *, binary: bool) -> None:
    """Refuse 8-bit content unless the server offered 8BITMIME (RFC 6152), or the
    transaction is ``BODY=BINARYMIME`` (``binary``, RFC 3030 §3). BINARYMIME offered
    is not enough: a MAIL without ``BODY`` says 7BIT (RFC 6152 §3)."""
    if not data.isascii() and not (offered.eight_bit_mime or binary):
        declare = " or declare BODY=BINARYMIME (RFC 3030)" if offered.binary_mime else ""
        raise LocalProtocolError(
            "8-bit content needs the server to offer 8BITMIME (RFC 6152); "
            f"encode it as 7-bit MIME instead{declare}"
        )


def unoffered_parameter(
    offered: ServerExtensions, keyword: str, value: str | None, verb: str | None = None
) -> str | None:
    """The EHLO keyword a known parameter (of ``verb``, MAIL or RCPT, when given)
    needs and the server did not offer, or None.

    A client must not use an extension it was not offered (RFC 5321 §2.2.2).
    Parameters of extensions smtpcore does not know are the server's to judge.
    """
    known = owner_of_parameter(keyword, verb)
    if known is None:
        return None
    extension, parameter = known
    needed = extension.keyword
    if parameter.needs is not None and value is not None:
        with contextlib.suppress(ParameterError):  # parameter_problem says what is wrong
            needed = parameter.needs(parameter.parse(value)) or needed
    return None if needed in offered else needed


def check_parameters(
    offered: ServerExtensions, command: Mail | Rcpt, *, extended: bool, utf8: bool
) -> None:
    """Refuse what the server would have to refuse in ``command``'s parameters: one
    of the other command's (NOTIFY on MAIL, RFC 3461 §4), of an extension the
    server did not offer, a value its extension cannot read or the EHLO reply
    rules out (SIZE over the limit), and UTF-8 in a value unless ``utf8``, the
    transaction's MAIL carrying SMTPUTF8 to a server that offered it (RFC 6531
    §3.3; RFC 6533 §3 for a raw UTF-8 ORCPT), and never where the parameter's
    grammar has no room for it (``Parameter.takes_utf8``: every known one but ORCPT)."""
    params = command.params
    if not params:
        return
    if not extended:
        raise LocalProtocolError("ESMTP parameters need a session opened with EHLO")
    verb = command.verb
    for keyword, value in params.items():
        needed = unoffered_parameter(offered, keyword, value, verb)
        if needed is not None:
            raise LocalProtocolError(f"{keyword} needs the server to offer {needed}")
        utf8_value = value is not None and not value.isascii()
        known = owner_of_parameter(keyword, verb)
        takes_utf8 = known is None or known[1].takes_utf8
        if utf8_value and not utf8 and takes_utf8:
            raise LocalProtocolError(
                f"a UTF-8 {keyword} value needs SMTPUTF8, offered by the server and "
                "given on MAIL (RFC 6531 §3.3)"
            )
        problem = parameter_problem(offered, keyword, value, verb)
        if problem is None and utf8_value and not takes_utf8:
            problem = f"{keyword} takes no UTF-8 value, SMTPUTF8 or not"
        if problem is not None:
            raise LocalProtocolError(problem)


def parameter_problem(
    offered: ServerExtensions, keyword: str, value: str | None, verb: str | None = None
) -> str | None:
    """What is wrong with a known parameter's value for this server, or with the
    parameter on ``verb`` (MAIL or RCPT) when it is the other command's; None if
    nothing."""
    known = owner_of_parameter(keyword, verb)
    if known is None:
        elsewhere = None if verb is None else owner_of_parameter(keyword)
        if elsewhere is None:
            return None
        extension = elsewhere[0]
        return f"{keyword} is not a {verb} parameter ({extension.keyword}, {extension.rfc})"
    parameter = known[1]
    try:
        typed = parameter.parse(value)
    except ParameterError as exc:
        return str(exc)
    return parameter.client_check(offered, typed)


def _pairs(offered: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``offered`` as tuples of str, whatever iterable of ``(keyword, parameters)``
    pairs it came as (a list, ``dict.items()``), so that two equal offers compare and
    hash alike; a ``LocalProtocolError`` for anything else. Parameters given as one
    str are refused: its letters would be read as parameters."""
    if isinstance(offered, str | bytes) or not isinstance(offered, Iterable):
        raise wrong_type("offered extensions", offered, "(keyword, parameters) pairs")
    pairs: list[tuple[str, tuple[str, ...]]] = []
    for entry in offered:
        if isinstance(entry, str | bytes) or not isinstance(entry, Iterable):
            raise wrong_type("each offered extension", entry, "a (keyword, parameters) pair")
        items = tuple(entry)
        if len(items) != 2:
            raise LocalProtocolError(f"an offered extension is a pair, not {len(items)} items")
        key, params = items
        if not isinstance(key, str):
            raise wrong_type("an offered keyword", key, "a str")
        if isinstance(params, str | bytes) or not isinstance(params, Iterable):
            raise wrong_type(f"the parameters of {key}", params, "a tuple of str")
        params = tuple(params)
        for param in params:
            if not isinstance(param, str):
                raise wrong_type(f"each parameter of {key}", param, "a str")
        pairs.append((key, params))
    return tuple(pairs)
