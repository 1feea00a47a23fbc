"""The events of an SMTP session, shared by both roles.

The client sends commands and receives replies; the server receives
commands and sends replies. Every event validates its fields when it is
built, so an event that would serialize wrongly (a CR or LF inside an
argument, the start of a command injection) cannot exist.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import ClassVar, Final, TypeVar

from smtpcore._errors import LocalProtocolError
from smtpcore._secret import SECRET, secret_repr
from smtpcore._words import ascii_upper
from smtpcore.address import Mailbox
from smtpcore.smtp._base import Event
from smtpcore.smtp._dsn import EnvelopeId, Notify, OriginalRecipient, Ret, xtext
from smtpcore.smtp._forwarding import (
    XCLIENT_ATTRIBUTES,
    XFORWARD_ATTRIBUTES,
    Attribute,
    Unavailable,
    Value,
)
from smtpcore.smtp._params import Parameters, ParametersLike
from smtpcore.smtp._replies import Reply

__all__ = [
    "Auth",
    "AuthResponse",
    "BadCommand",
    "Bdat",
    "Command",
    "ConnectionClosed",
    "Data",
    "Ehlo",
    "EndOfMessage",
    "Event",
    "Expn",
    "Helo",
    "Help",
    "Lhlo",
    "Mail",
    "MessageData",
    "Noop",
    "Quit",
    "Rcpt",
    "RejectedMessage",
    "Rset",
    "StartTls",
    "Vrfy",
    "Xclient",
    "Xforward",
]

# Any printable character or non-ASCII text, no controls; spaces only inside. No lone
# surrogate either (os.fsdecode, surrogateescape): UTF-8 has no form to send it in.
_ARGUMENT_RE: Final = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff]*")
_WORD_RE: Final = re.compile(r"[^\x00-\x20\x7f\ud800-\udfff]+")
_MECHANISM_RE: Final = re.compile(r"[A-Z0-9_-]{1,20}")


def _check_argument(name: str, value: str, *, word: bool = False, empty: bool = True) -> None:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} must be a str, not {type(value).__name__}")
    if not value and not empty:
        raise LocalProtocolError(f"{name} may not be empty")
    pattern = _WORD_RE if word and value else _ARGUMENT_RE
    if not pattern.fullmatch(value):
        raise LocalProtocolError(f"{name} holds a forbidden character: {value!r}")


class Command(Event):
    """Base class of the events a client sends and a server receives."""

    __slots__ = ()

    verb: str = ""


@dataclass(frozen=True, slots=True)
class Ehlo(Command):
    """``EHLO domain``: start an extended session (RFC 5321 §4.1.1.1)."""

    domain: str
    verb = "EHLO"

    def __post_init__(self) -> None:
        _check_argument("EHLO domain", self.domain, word=True, empty=False)


@dataclass(frozen=True, slots=True)
class Helo(Command):
    """``HELO domain``: start a plain session, without extensions."""

    domain: str
    verb = "HELO"

    def __post_init__(self) -> None:
        _check_argument("HELO domain", self.domain, word=True, empty=False)


@dataclass(frozen=True, slots=True)
class Lhlo(Command):
    """``LHLO domain``: the LMTP greeting (RFC 2033 §4.1)."""

    domain: str
    verb = "LHLO"

    def __post_init__(self) -> None:
        _check_argument("LHLO domain", self.domain, word=True, empty=False)


@dataclass(frozen=True, slots=True)
class Mail(Command):
    """``MAIL FROM:<sender> params``; ``sender`` None is the null path ``<>``."""

    sender: Mailbox | None
    params: Parameters = field(default_factory=Parameters)
    verb = "MAIL"

    def __init__(self, sender: Mailbox | None, params: ParametersLike = None) -> None:
        if sender is not None and not isinstance(sender, Mailbox):
            raise LocalProtocolError("MAIL sender must be a Mailbox or None")
        object.__setattr__(self, "sender", sender)
        object.__setattr__(
            self, "params", params if type(params) is Parameters else Parameters.coerce(params)
        )

    # Typed views of the DSN parameters (RFC 3461 §4.3, §4.4); a malformed value
    # raises DSNError. A server machine with DSN on has already refused those.

    @property
    def ret(self) -> Ret | None:
        """``RET=``: what a failure report returns of the message."""
        value = self.params.get("RET")
        return None if value is None else Ret.parse(value)

    @property
    def envid(self) -> EnvelopeId | None:
        """``ENVID=``: the sender's identifier for this transaction."""
        value = self.params.get("ENVID")
        return None if value is None else EnvelopeId.parse(value)


@dataclass(frozen=True, slots=True)
class Rcpt(Command):
    """``RCPT TO:<recipient> params``."""

    recipient: Mailbox
    params: Parameters = field(default_factory=Parameters)
    verb = "RCPT"

    def __init__(self, recipient: Mailbox, params: ParametersLike = None) -> None:
        if not isinstance(recipient, Mailbox):
            raise LocalProtocolError("RCPT recipient must be a Mailbox")
        object.__setattr__(self, "recipient", recipient)
        object.__setattr__(
            self, "params", params if type(params) is Parameters else Parameters.coerce(params)
        )

    @property
    def notify(self) -> Notify | None:
        """``NOTIFY=`` (RFC 3461 §4.1); a malformed value raises DSNError."""
        value = self.params.get("NOTIFY")
        return None if value is None else Notify.parse(value)

    @property
    def orcpt(self) -> OriginalRecipient | None:
        """``ORCPT=`` (RFC 3461 §4.2, RFC 6533 §3); a malformed value raises DSNError."""
        value = self.params.get("ORCPT")
        return None if value is None else OriginalRecipient.parse(value, utf8=True)


@dataclass(frozen=True, slots=True)
class Data(Command):
    """``DATA``: content follows the 354 reply, dot-stuffed."""

    verb = "DATA"


@dataclass(frozen=True, slots=True)
class Bdat(Command):
    """``BDAT size [LAST]``: a chunk of exactly ``size`` octets (RFC 3030)."""

    size: int
    last: bool = False
    verb = "BDAT"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 0:
            raise LocalProtocolError(f"BDAT size must be a non-negative int: {self.size!r}")


@dataclass(frozen=True, slots=True)
class Rset(Command):
    """``RSET``: abandon the current transaction."""

    verb = "RSET"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    """``NOOP``: do nothing, answer 250."""

    argument: str = ""
    verb = "NOOP"

    def __post_init__(self) -> None:
        _check_argument("NOOP argument", self.argument)


@dataclass(frozen=True, slots=True)
class Quit(Command):
    """``QUIT``: the server answers 221 and closes."""

    verb = "QUIT"


@dataclass(frozen=True, slots=True)
class Vrfy(Command):
    """``VRFY string``: ask whether a user or mailbox exists."""

    argument: str
    verb = "VRFY"

    def __post_init__(self) -> None:
        _check_argument("VRFY argument", self.argument, empty=False)


@dataclass(frozen=True, slots=True)
class Expn(Command):
    """``EXPN string``: ask for the members of a mailing list."""

    argument: str
    verb = "EXPN"

    def __post_init__(self) -> None:
        _check_argument("EXPN argument", self.argument, empty=False)


@dataclass(frozen=True, slots=True)
class Help(Command):
    """``HELP [string]``."""

    argument: str = ""
    verb = "HELP"

    def __post_init__(self) -> None:
        _check_argument("HELP argument", self.argument)


@dataclass(frozen=True, slots=True)
class StartTls(Command):
    """``STARTTLS`` (RFC 3207): upgrade the connection after a 220."""

    verb = "STARTTLS"


@dataclass(frozen=True, slots=True)
class Auth(Command):
    """``AUTH mechanism [initial-response]`` (RFC 4954).

    ``initial_response`` holds the decoded bytes: ``None`` when none was
    sent, ``b""`` for the empty response ``=``.
    """

    mechanism: str
    initial_response: bytes | None = field(default=None, metadata=SECRET)
    verb = "AUTH"

    def __post_init__(self) -> None:
        if not isinstance(self.mechanism, str) or not _MECHANISM_RE.fullmatch(
            ascii_upper(self.mechanism)
        ):
            raise LocalProtocolError(f"invalid SASL mechanism name {self.mechanism!r}")
        if self.initial_response is not None and not isinstance(self.initial_response, bytes):
            raise LocalProtocolError("AUTH initial response must be bytes or None")

    __repr__ = secret_repr


_F = TypeVar("_F", bound="ForwardingCommand")


class ForwardingCommand(Command):
    """What :class:`Xclient` and :class:`Xforward` share: ``VERB attribute=value ...``,
    each value xtext on the wire (Postfix's XCLIENT_README and XFORWARD_README).

    A field left ``None`` is not sent; a value is typed (a port is an ``int``, an
    address its short text form) or :data:`~smtpcore.smtp.UNAVAILABLE`. At least
    one attribute must be given, and every value must be printable text
    without spaces, so that no value can carry a command or header injection,
    and what the server machine (and Postfix) takes as it will be sent: at
    most 255 octets as xtext, an address not in 0.0.0.0/8 but for 0.0.0.0 (an
    IPv4-mapped one judged by the address it maps); anything else is
    :class:`LocalProtocolError`. The server machine reads an octet sent that is
    no part of a UTF-8 character as ``?``, as Postfix's ``printable()`` masks
    it: a value stays ``str``, and what the machine reads it writes back no
    longer as xtext, within the 255 octets it came in.
    """

    __slots__ = ()

    ATTRIBUTES: ClassVar[tuple[Attribute, ...]] = ()
    SENT_LAST: ClassVar[frozenset[str]] = frozenset()
    """Attributes :meth:`split` sends together, in the last command."""

    def _check_attributes(self) -> None:
        given = False
        for attribute in self.ATTRIBUTES:
            value = getattr(self, attribute.field)
            if value is None:
                continue
            try:
                typed = attribute.read(value)
            except ValueError as exc:
                raise LocalProtocolError(f"{self.verb} {attribute.name}: {exc}") from None
            object.__setattr__(self, attribute.field, typed)
            given = True
        if not given:
            raise LocalProtocolError(f"{self.verb} needs at least one attribute")

    @property
    def attributes(self) -> dict[str, Value]:
        """The attributes given, by wire name (``{"ADDR": "192.0.2.1"}``), in wire order."""
        found = {}
        for attribute in self.ATTRIBUTES:
            value = getattr(self, attribute.field)
            if value is not None:
                found[attribute.name] = value
        return found

    def to_line(self) -> str:
        """The command line, without CRLF: each value as xtext."""
        words = [self.verb]
        for attribute in self.ATTRIBUTES:
            value = getattr(self, attribute.field)
            if value is not None:
                words.append(f"{attribute.name}={xtext(attribute.to_text(value))}")
        return " ".join(words)

    def only(self: _F, names: Collection[str]) -> _F | None:
        """The same command with only the attributes in ``names`` (those a server
        announced, compared in ASCII case alone), or None when none is left."""
        wanted = {ascii_upper(name) for name in names}
        kept = {
            attribute.field: getattr(self, attribute.field)
            for attribute in self.ATTRIBUTES
            if attribute.name in wanted and getattr(self, attribute.field) is not None
        }
        return type(self)(**kept) if kept else None

    def merged(self: _F, later: _F) -> _F:
        """These attributes updated with those ``later`` gives: what a server holds
        after both commands (each command overwrites only what it names)."""
        given = {
            attribute.field: getattr(later, attribute.field)
            for attribute in self.ATTRIBUTES
            if getattr(later, attribute.field) is not None
        }
        return dataclasses.replace(self, **given)  # type: ignore[type-var]  # a dataclass

    def split(self: _F, max_line: int = 512) -> list[_F]:
        """The attributes in as few commands as fit ``max_line`` octets each, CRLF
        included (the command line limit of RFC 5321 §4.5.3.1.4); Postfix's README
        asks a client to send long values in several commands this way, those of
        ``SENT_LAST`` together in the last one."""
        given = [
            (attribute, value)
            for attribute in self.ATTRIBUTES
            if (value := getattr(self, attribute.field)) is not None
        ]
        last = [
            (attribute, value) for attribute, value in given if attribute.name in self.SENT_LAST
        ]
        groups = [[pair] for pair in given if pair[0].name not in self.SENT_LAST]
        if last:
            groups.append(last)
        parts: list[_F] = []
        fields: dict[str, Value] = {}
        length = len(self.verb) + 2
        for group in groups:
            size = sum(
                1 + len(attribute.name) + 1 + len(xtext(attribute.to_text(value)))
                for attribute, value in group
            )
            if fields and length + size > max_line:
                parts.append(type(self)(**fields))
                fields, length = {}, len(self.verb) + 2
            if length + size > max_line:
                names = " ".join(attribute.name for attribute, _ in group)
                raise LocalProtocolError(f"{self.verb} {names} is too long for one line")
            fields.update({attribute.field: value for attribute, value in group})
            length += size
        parts.append(type(self)(**fields))
        return parts


@dataclass(frozen=True, slots=True)
class Xclient(ForwardingCommand):
    """``XCLIENT attribute=value ...``: a trusted client (a proxy) names the client it
    speaks for, for the rest of the session (Postfix's XCLIENT_README).

    The server answers ``220`` with a new greeting and the session starts over:
    the client says EHLO again. ``name`` is the client's host name (or
    ``TEMPUNAVAIL`` when its lookup failed for now), ``addr`` and ``port`` its
    address, ``proto`` ``"SMTP"`` or ``"ESMTP"``, ``helo`` the name it greeted
    with, ``login`` the SASL login it authenticated as, ``destaddr`` and
    ``destport`` the server address it connected to.
    """

    name: str | Unavailable | None = None
    addr: str | Unavailable | None = None
    port: int | Unavailable | None = None
    proto: str | Unavailable | None = None
    helo: str | Unavailable | None = None
    login: str | Unavailable | None = None
    destaddr: str | Unavailable | None = None
    destport: int | Unavailable | None = None
    verb = "XCLIENT"
    ATTRIBUTES = XCLIENT_ATTRIBUTES
    # Once the client it names is known, the proxy usually may not send XCLIENT again
    # (XCLIENT_README, note 1: NAME and ADDR last).
    SENT_LAST = frozenset({"NAME", "ADDR", "PORT"})

    def __post_init__(self) -> None:
        self._check_attributes()


@dataclass(frozen=True, slots=True)
class Xforward(ForwardingCommand):
    """``XFORWARD attribute=value ...``: a trusted client (a content filter) passes on,
    for the next mail transaction only, who sent the message to the host before it
    (Postfix's XFORWARD_README). The server answers ``250``.

    ``name`` (a host name), ``addr``, ``port`` and ``helo`` describe the
    up-stream client, ``proto`` the protocol it used (up to 64 characters),
    ``ident`` the message's queue id up-stream and ``source`` ``"LOCAL"`` or
    ``"REMOTE"``. ``addr`` may be a non-IP address, for a server that takes one;
    current Postfix, and smtpcore's server machine, answer ``501 5.5.4`` to anything
    but an IP address there, and to a ``name`` that is all digits or ends in a dot
    (XFORWARD_README: an IPv4 address, or ``IPV6:`` and an IPv6 one).
    """

    name: str | Unavailable | None = None
    addr: str | Unavailable | None = None
    port: int | Unavailable | None = None
    proto: str | Unavailable | None = None
    helo: str | Unavailable | None = None
    ident: str | Unavailable | None = None
    source: str | Unavailable | None = None
    verb = "XFORWARD"
    ATTRIBUTES = XFORWARD_ATTRIBUTES

    def __post_init__(self) -> None:
        self._check_attributes()


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """A client's answer to a 334 challenge (decoded), or ``*`` when ``cancel``."""

    data: bytes = field(default=b"", metadata=SECRET)
    cancel: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise LocalProtocolError("AUTH response data must be bytes")
        if self.cancel and self.data:
            raise LocalProtocolError("a cancelled AUTH response carries no data")

    __repr__ = secret_repr


@dataclass(frozen=True, slots=True)
class MessageData(Event):
    """A chunk of message content, without dot-stuffing."""

    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise LocalProtocolError("MessageData holds bytes")


@dataclass(frozen=True, slots=True)
class EndOfMessage(Event):
    """The content is complete; the server's answer decides its fate."""


@dataclass(frozen=True, slots=True)
class RejectedMessage(Event):
    """The content was read to its end but breaks the server's policy.

    The machine stops passing content on as soon as it notices (a bare CR
    or LF under the strict policy, an over-long line, too many octets) and
    gives this event in place of :class:`EndOfMessage`: the application
    must drop what it collected and send ``reply`` (or another 4xx/5xx).
    """

    reply: Reply


@dataclass(frozen=True, slots=True)
class BadCommand(Event):
    """A command line the machine could not accept, with the reply it suggests.

    ``secret`` is true when the line may carry a credential: it was read as the
    answer to a 334 challenge (RFC 4954 §4), or it is an AUTH command, whose
    initial response may be the password. Such a line is hidden in the repr and
    named ``AUTH`` in the server's log.
    """

    line: bytes = field(metadata=SECRET)
    reply: Reply
    secret: bool = False

    def __repr__(self) -> str:
        return secret_repr(self, hide=self.secret)


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed its side of the connection."""
