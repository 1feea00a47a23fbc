"""What an ESMTP extension is, as data (RFC 5321 §2.2, §4.1.1.1).

An extension is one :class:`Extension` entry: its EHLO keyword and the
argument it is listed with, the MAIL and RCPT parameters it brings (each a
:class:`Parameter` with a typed parser), the commands that exist only with
it, what it needs of the session, and the server option that turns it on.
The server machine lists, accepts and refuses from these entries; the client
machine and the client adapter check what they send against them; HELP reads
them. The built-in entries live one per module in ``smtp/_ext/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

from smtpcore._errors import LocalProtocolError
from smtpcore.smtp._replies import EnhancedStatus, Reply

if TYPE_CHECKING:
    from smtpcore.smtp._extensions import ServerExtensions

__all__ = [
    "AUTHENTICATED",
    "NOT_TLS",
    "TLS",
    "TRUSTED_FORWARDER",
    "Extension",
    "Parameter",
    "ParameterError",
    "Readers",
    "Requirement",
    "ServerFacts",
    "entry_failed",
    "parameter_readers",
]

T = TypeVar("T")

# RFC 5321 §4.1.1.1: ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"), and
# ehlo-param = 1*(%d33-126), each after one SP.
_EHLO_KEYWORD: Final = re.compile(r"[A-Z0-9][A-Z0-9-]*")
_EHLO_PARAMS: Final = re.compile(r"(?: [!-~]+)*")


def _reply(code: int, status: str, text: str) -> Reply:
    return Reply(code, text, EnhancedStatus.parse(status))


class ParameterError(ValueError):
    """A parameter value its extension cannot read; ``reply`` is what a server answers."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply if reply is not None else _reply(501, "5.5.4", message)


ENTRY_FAILED: Final = _reply(451, "4.3.0", "Local error in processing")
"""The reply to a command an entry's own code failed on: the server's fault (RFC 5321
§4.2.1: 451, "local error in processing"), for the client to try again."""


def entry_failed(what: str, cause: Exception | None = None) -> LocalProtocolError:
    """The error for an entry's own code (``parse``, ``check``, ``arguments``, a
    requirement's ``holds``) that failed or gave what it must not: the application's
    mistake, not the client's, so no refusal of the client's value. Its
    ``reply_hint`` answers the command; raise it ``from`` the cause, which the
    adapters log with it."""
    message = what if cause is None else f"{what} failed: {type(cause).__name__}: {cause}"
    return LocalProtocolError(message, reply_hint=ENTRY_FAILED)


class ServerFacts(Protocol):
    """What an entry may ask of the server session it is offered in."""

    @property
    def tls(self) -> bool: ...
    @property
    def authenticated(self) -> bool: ...
    @property
    def max_message_size(self) -> int | None: ...  # None or 0: no limit (RFC 1870 §4)
    @property
    def max_recipients(self) -> int: ...
    @property
    def trusted_forwarder(self) -> bool: ...
    def offered_auth_mechanisms(self) -> list[str]: ...
    def in_force(self, keyword: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Requirement:
    """Something the session must have for an extension to be offered and used.

    Every extension needs a session opened with EHLO or LHLO, unless its entry
    says otherwise (``needs_ehlo``); requirements add to that. A command of the
    extension sent while one does not hold gets ``refusal``.
    """

    name: str
    holds: Callable[[ServerFacts], bool]
    refusal: Reply


TLS = Requirement(
    "TLS", lambda facts: facts.tls, _reply(530, "5.7.0", "Must issue a STARTTLS command first")
)
"""Offered only over TLS (REQUIRETLS, RFC 8689 §4)."""
NOT_TLS = Requirement(
    "no TLS yet", lambda facts: not facts.tls, _reply(503, "5.5.1", "TLS already active")
)
"""Offered only before TLS starts (STARTTLS, RFC 3207 §4.2)."""
AUTHENTICATED = Requirement(
    "authentication",
    lambda facts: facts.authenticated,
    _reply(530, "5.7.0", "Authentication required"),
)
"""Offered only to an authenticated client."""
TRUSTED_FORWARDER = Requirement(
    "a client trusted to speak for another",
    lambda facts: facts.trusted_forwarder,
    _reply(500, "5.5.2", "Command unrecognized"),
)
"""Offered only to a client the server trusts to name the client it speaks for
(XCLIENT, XFORWARD); to any other the commands do not exist."""


def _no_check(facts: ServerFacts, value: Any) -> Reply | None:
    return None


def _no_client_check(offered: ServerExtensions, value: Any) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Parameter(Generic[T]):
    """A MAIL or RCPT parameter (``KEYWORD[=value]``) an extension brings.

    ``parse`` turns the wire value (None for a bare keyword) into a typed
    value, or refuses it: with :class:`ParameterError` for a reply of its own,
    or with any ``ValueError`` or ``TypeError`` (``int`` as a parser: ``int("abc")``,
    ``int(None)``) for ``501 5.5.4``, as the client's bad value. Any other exception
    from ``parse`` or ``check`` is the application's own mistake: the server
    answers the command ``451 4.3.0`` and logs it. ``format`` is its inverse, for a
    client. ``check`` is the server's policy on a well-formed value (SIZE over
    the limit), ``client_check`` what a client must verify against the EHLO
    reply before sending it (a problem as text, or None). ``needs`` names the
    EHLO keyword a value needs when that is not its own extension's
    (``BODY=BINARYMIME`` needs BINARYMIME).
    """

    keyword: str
    parse: Callable[[str | None], T]
    format: Callable[[T], str | None]
    check: Callable[[ServerFacts, T], Reply | None] = _no_check
    client_check: Callable[[ServerExtensions, T], str | None] = _no_client_check
    needs: Callable[[T], str | None] | None = None
    read: Callable[[ServerFacts, str | None], Reply | None] | None = None
    """What :meth:`refusal` gives, in one call: for the parameters of every message
    (``SIZE=``, ``BODY=``, ``NOTIFY=``), where ``parse`` and ``check`` would cost a
    call or two each. A test holds each to :meth:`refusal`."""
    takes_utf8: bool = True
    """Whether the value's grammar has room for UTF-8, which RFC 6531 §3.3 lets an
    SMTPUTF8 transaction carry where a parameter defines it (``ORCPT``'s
    ``utf-8-addr-unitext``, RFC 6533 §3), the only built-in one that does. False for
    a grammar that never does: xtext (``ENVID``, ``AUTH``), keywords (``RET``,
    ``NOTIFY``, ``BODY``), digits (``SIZE``, ``MT-PRIORITY``, ``BY``, ``HOLDFOR``,
    ``HOLDUNTIL``), no value at all (``SMTPUTF8``, ``REQUIRETLS``). A non-ASCII value
    is then malformed in any transaction, refused by the parameter's own words, never
    told that SMTPUTF8 would let it through."""

    def refusal(self, facts: ServerFacts, value: str | None) -> Reply | None:
        """The reply a server refuses ``value`` with (``parse`` failed, or ``check``
        refused what it gave), or None when the value is accepted.

        Raises :func:`entry_failed`'s ``LocalProtocolError`` when ``parse`` or
        ``check`` fails other than by refusing the value (see the class).
        """
        try:
            typed = self.parse(value)
        except ParameterError as exc:
            return exc.reply
        except (ValueError, TypeError):
            # The natural parsers (int, Decimal, an enum by value) refuse a bad value so;
            # their text names Python's types, not the client's mistake.
            return _reply(501, "5.5.4", f"Malformed {self.keyword} value")
        except Exception as exc:
            raise entry_failed(f"the {self.keyword} parameter's parse", exc) from exc
        if self.check is _no_check:
            return None
        try:
            return self.check(facts, typed)
        except Exception as exc:
            raise entry_failed(f"the {self.keyword} parameter's check", exc) from exc


def _bare(facts: ServerFacts) -> str | None:
    return ""


@dataclass(frozen=True, slots=True)
class Extension:
    """One ESMTP extension: everything the library knows about it, in one place.

    ``arguments`` gives the text after the keyword in the EHLO reply ("" for a
    bare keyword), or None when the session cannot be offered the extension
    now (AUTH with no mechanism usable in plaintext). ``option`` is the
    :class:`~smtpcore.smtp.ServerConnection` keyword that turns it on; None
    for an extension the server machine cannot offer, which the client still
    knows the parameters of. ``verbs`` are the commands that exist only while
    it is in force: without it they are unknown commands. ``depends`` names
    extensions that must be in force too (BINARYMIME needs CHUNKING).
    ``needs_ehlo`` false makes its commands known from the greeting on, before
    EHLO and after HELO too (its requirements still hold, and its line is
    still in the EHLO reply alone).
    """

    keyword: str
    rfc: str
    summary: str
    option: str | None = None
    arguments: Callable[[ServerFacts], str | None] = _bare
    mail_parameters: tuple[Parameter[Any], ...] = ()
    rcpt_parameters: tuple[Parameter[Any], ...] = ()
    verbs: tuple[str, ...] = ()
    requires: tuple[Requirement, ...] = ()
    depends: tuple[str, ...] = ()
    needs_ehlo: bool = True
    client_check: Callable[[ServerExtensions, Any], str | None] | None = field(
        default=None, compare=False
    )
    """For a command in ``verbs``: what the client must verify before sending it
    (AUTH: the mechanism was offered); a problem as text, or None."""
    line_allowance: int = 0
    """Octets its parameters may add to a command line past RFC 5321's 512
    (§4.5.3.1.4: "SMTP extensions may be used to increase this limit"): the
    server reads longer lines while the extension is in force (SIZE: 26, RFC
    1870 §3; DSN: a 500-character ORCPT, RFC 3461 §4.2)."""
    utf8_line_allowance: int = 0
    """Octets more while SMTPUTF8 is in force too, where a value its RFC counts in
    characters may be raw UTF-8, up to four octets a character (RFC 3629 §3; DSN:
    the 500-character ORCPT in RFC 6533's utf-8-addr-unitext)."""

    def allowance(self, utf8: bool) -> int:
        """The octets this extension adds to a command line: ``line_allowance``, and
        ``utf8_line_allowance`` when SMTPUTF8 is in force too (``utf8``). The server
        machine and the client add up the same."""
        return self.line_allowance + self.utf8_line_allowance if utf8 else self.line_allowance

    def __post_init__(self) -> None:
        if not _EHLO_KEYWORD.fullmatch(self.keyword):
            # A client reads what is not an ehlo-keyword as another keyword, or not
            # at all ("AUTH=PLAIN" is AUTH to many): listed, it would be refused.
            raise ValueError(
                f"an EHLO keyword is letters, digits and '-', upper-cased: {self.keyword!r}"
            )

    def unmet(self, facts: ServerFacts) -> Requirement | None:
        """The first requirement the session does not meet, or None; a requirement
        that fails to tell is :func:`entry_failed`'s ``LocalProtocolError``."""
        for requirement in self.requires:
            try:
                holds = requirement.holds(facts)
            except Exception as exc:
                what = f"{self.keyword}'s requirement {requirement.name}"
                raise entry_failed(what, exc) from exc
            if not holds:
                return requirement
        return None

    def ehlo_line(self, facts: ServerFacts) -> str | None:
        """The line this extension adds to the EHLO reply now, or None; ``arguments``
        failing is :func:`entry_failed`'s ``LocalProtocolError``."""
        # Requirements asked of an entry that has some, arguments of one that has
        # any: most are bare keywords with none, and a call each costs.
        if self.requires and self.unmet(facts) is not None:
            return None
        if self.depends and any(not facts.in_force(keyword) for keyword in self.depends):
            return None
        if self.arguments is _bare:
            return self.keyword
        try:
            arguments = self.arguments(facts)
        except Exception as exc:
            raise entry_failed(f"the {self.keyword} extension's arguments", exc) from exc
        if arguments is None:
            return None
        return f"{self.keyword} {arguments}" if arguments else self.keyword

    @classmethod
    def plain(cls, line: str) -> Extension:
        """An extension known only by its EHLO line (``"HELP"``, ``"X-FOO 1"``): it is
        listed as given and brings no parameters or commands."""
        keyword, _, arguments = line.strip().partition(" ")
        if not _EHLO_PARAMS.fullmatch(f" {arguments}" if arguments else ""):
            raise ValueError(
                f"EHLO parameters are printable ASCII words, one space apart: {line!r}"
            )
        return cls(keyword.upper(), "", "listed as configured", arguments=lambda facts: arguments)


Readers = dict[str, tuple[Extension, Parameter[object]]]
"""Parameter keyword -> the entry that brings it, and its reader: for one command."""


def parameter_readers(entries: Iterable[Extension], *, mail: bool) -> Readers:
    """The parameters ``entries`` bring to MAIL (``mail``) or to RCPT, by keyword.

    One table per command: each parameter belongs to one of them (RFC 3461 §4:
    NOTIFY and ORCPT on RCPT, RET and ENVID on MAIL; RFC 1870 §3: SIZE on
    MAIL), and a server refuses it on the other. The server machine and the
    client read the same tables, made from the same entries.
    """
    return {
        parameter.keyword: (entry, parameter)
        for entry in entries
        for parameter in (entry.mail_parameters if mail else entry.rcpt_parameters)
    }
