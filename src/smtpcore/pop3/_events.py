"""The events of a POP3 session, shared by both roles.

The client sends commands and receives responses; the server receives
commands and sends responses. Every event checks its fields when it is built,
so an event that would put a stray CR or LF on the wire (a command or a
response injected into the stream) cannot exist.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import ClassVar, Final

from smtpcore._errors import LocalProtocolError
from smtpcore._secret import SECRET, secret_repr
from smtpcore._textsafe import escape_unsafe_beyond_ascii
from smtpcore._words import ascii_upper

__all__ = [
    "MAX_MESSAGE_NUMBER",
    "Apop",
    "Auth",
    "AuthMechanisms",
    "AuthResponse",
    "BadCommand",
    "Capa",
    "Command",
    "ConnectionClosed",
    "Continue",
    "Dele",
    "EndOfResponse",
    "Err",
    "Event",
    "List",
    "Noop",
    "Ok",
    "Pass",
    "Quit",
    "Response",
    "ResponseData",
    "Retr",
    "Rset",
    "Stat",
    "Stls",
    "Top",
    "Uidl",
    "User",
    "Utf8",
    "non_ascii_login",
]

MAX_MESSAGE_NUMBER: Final = 2**31 - 1
"""The largest message number (and TOP line count) a machine accepts; a server reads a
larger TOP count as this one (the whole message, RFC 1939 §7)."""

# Printable text or non-ASCII text, tab allowed, no other control character, no lone
# surrogate (a str may hold one; UTF-8 has no form for it).
_TEXT_RE: Final = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]*")
_LONE_SURROGATE_RE: Final = re.compile(r"[\ud800-\udfff]")
"""What a str may hold and UTF-8 cannot encode (``os.fsdecode``, ``surrogateescape``)."""
MECHANISM_NAME: Final = re.compile(r"[A-Z0-9_-]{1,20}")
"""A SASL mechanism name (RFC 4422 §3.1), upper-cased."""
_DIGEST_RE: Final = re.compile(r"[0-9a-f]{32}")
# RFC 2449 §9: resp-level = 1*rchar, printable ASCII without "/" and "]"
# (and without "[" and space, so that the code reads back unambiguously).
_RESP_CODE_RE: Final = re.compile(r"[!-.0-Z\\^-~]+(?:/[!-.0-Z\\^-~]+)*")
_LEADING_CODE_RE: Final = re.compile(r"\[([!-.0-Z\\^-~]+(?:/[!-.0-Z\\^-~]+)*)\](?: |$)")


def _check_text(
    name: str, value: str, *, empty: bool = True, padded: bool = True, secret: bool = False
) -> None:
    """Refuse ``value`` unless it is text a command or response line may carry. The
    message quotes it, unless it is ``secret`` (a password): an error is printed and
    logged, and must not show what a repr hides."""
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} must be a str, not {type(value).__name__}")
    if not value and not empty:
        raise LocalProtocolError(f"{name} may not be empty")
    shown = "" if secret else f": {value!r}"
    if not _TEXT_RE.fullmatch(value):
        if _LONE_SURROGATE_RE.search(value):
            raise LocalProtocolError(f"{name} is not UTF-8 (a lone surrogate){shown}")
        raise LocalProtocolError(f"{name} holds a control character{shown}")
    if not padded and value != value.strip():
        # Any Unicode space, not the ASCII ones alone: a reader that strips "bob\u00a0"
        # (str.strip, a proxy) would log in another name than the one we check.
        raise LocalProtocolError(f"{name} may not start or end with a space{shown}")


def _check_number(name: str, value: object, *, minimum: int = 1) -> None:
    if type(value) is not int or not minimum <= value <= MAX_MESSAGE_NUMBER:
        raise LocalProtocolError(
            f"{name} must be an int from {minimum} to {MAX_MESSAGE_NUMBER}: {value!r}"
        )


def _check_status_text(name: str, response: Ok | Err) -> None:
    """Refuse a status response's text unless a status line may carry it, and keep in
    it the backslash escape of each character unsafe in text beyond ASCII (RFC 5198
    §2), as an SMTP reply does. Called for text that is not a printable str only:
    printable text, the everyday case, holds nothing to refuse or escape, and the
    caller's inline test spares every status line a call."""
    _check_text(name, response.text)
    _escape_text(response)


def _escape_text(response: Ok | Err) -> None:
    escaped = escape_unsafe_beyond_ascii(response.text)
    if escaped is not response.text:
        object.__setattr__(response, "text", escaped)


class Event:
    """Base class of every POP3 event."""

    __slots__ = ()


class Command(Event):
    """Base class of the events a client sends and a server receives."""

    __slots__ = ()

    keyword: ClassVar[str] = ""

    @property
    def multiline(self) -> bool:
        """Whether a positive answer is followed by dot-stuffed lines (RFC 1939 §3)."""
        return False


@dataclass(frozen=True, slots=True)
class User(Command):
    """``USER name``: the mailbox to log in to (RFC 1939 §7)."""

    name: str
    keyword: ClassVar[str] = "USER"

    def __post_init__(self) -> None:
        _check_text("USER name", self.name, empty=False, padded=False)


@dataclass(frozen=True, slots=True)
class Pass(Command):
    """``PASS string``: the password after an accepted USER (RFC 1939 §7).

    Spaces belong to the password: the whole rest of the line is the argument.
    """

    password: str = field(metadata=SECRET)
    keyword: ClassVar[str] = "PASS"

    def __post_init__(self) -> None:
        _check_text("PASS password", self.password, empty=False, secret=True)

    __repr__ = secret_repr


@dataclass(frozen=True, slots=True)
class Apop(Command):
    """``APOP name digest``: MD5 of the greeting's timestamp and a secret (RFC 1939 §7).

    A name may hold a space: a server reads the digest as the last word (mpop and
    fetchmail send such names). A client machine will not send one
    (:class:`~smtpcore.pop3.ClientConnection`): Dovecot and others split arguments.
    """

    name: str
    digest: str
    keyword: ClassVar[str] = "APOP"

    def __post_init__(self) -> None:
        _check_text("APOP name", self.name, empty=False, padded=False)
        if not isinstance(self.digest, str) or not _DIGEST_RE.fullmatch(self.digest):
            raise LocalProtocolError("APOP digest must be 32 lower-case hex digits")


def non_ascii_login(event: Event) -> bool:
    """Whether ``event`` is a USER, PASS or APOP with a non-ASCII name or password.

    RFC 6856 §2.1: a client sends UTF-8 in these only where CAPA lists ``UTF8
    USER``, and the server that lists it takes them. AUTH is free of this: SASL
    mechanisms carry UTF-8 of their own (SASLprep, RFC 4013).
    """
    if isinstance(event, (User, Apop)):
        return not event.name.isascii()
    if isinstance(event, Pass):
        return not event.password.isascii()
    return False


@dataclass(frozen=True, slots=True)
class Auth(Command):
    """``AUTH mechanism [initial-response]`` (RFC 5034 §4).

    SASL mechanism names are case-insensitive (RFC 4422 §3.1); ``mechanism``
    is kept upper-cased. ``initial_response`` holds the decoded octets: ``None`` when none was
    sent, ``b""`` for the empty response ``=``.
    """

    mechanism: str
    initial_response: bytes | None = field(default=None, metadata=SECRET)
    keyword: ClassVar[str] = "AUTH"

    def __post_init__(self) -> None:
        if isinstance(self.mechanism, str):
            object.__setattr__(self, "mechanism", ascii_upper(self.mechanism))
        if not isinstance(self.mechanism, str) or not MECHANISM_NAME.fullmatch(self.mechanism):
            raise LocalProtocolError(
                f"a SASL mechanism name is 1 to 20 of A-Z 0-9 - _: {self.mechanism!r}"
            )
        if self.initial_response is not None and not isinstance(self.initial_response, bytes):
            raise LocalProtocolError("AUTH initial response must be bytes or None")

    __repr__ = secret_repr


@dataclass(frozen=True, slots=True)
class AuthMechanisms(Command):
    """``AUTH`` with no argument: list the SASL mechanisms, one a line.

    The RFC 1734 era's probe, which older clients still send before choosing
    a mechanism. RFC 5034 §4 does not define it; Dovecot answers it with
    ``+OK`` and the names CAPA's SASL line gives, so the server does too. It
    opens no SASL exchange and is no login attempt.
    """

    keyword: ClassVar[str] = "AUTH"

    @property
    def multiline(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """A client's answer to a ``+`` challenge (decoded), or ``*`` when ``cancel``."""

    data: bytes = field(default=b"", metadata=SECRET)
    cancel: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise LocalProtocolError("AUTH response data must be bytes")
        if self.cancel and self.data:
            raise LocalProtocolError("a cancelled AUTH response carries no data")

    __repr__ = secret_repr


@dataclass(frozen=True, slots=True)
class Capa(Command):
    """``CAPA``: list the server's capabilities (RFC 2449 §5)."""

    keyword: ClassVar[str] = "CAPA"

    @property
    def multiline(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Stls(Command):
    """``STLS``: start TLS before authenticating (RFC 2595 §4)."""

    keyword: ClassVar[str] = "STLS"


@dataclass(frozen=True, slots=True)
class Utf8(Command):
    """``UTF8``: switch the session to UTF-8 (RFC 6856 §2)."""

    keyword: ClassVar[str] = "UTF8"


@dataclass(frozen=True, slots=True)
class Stat(Command):
    """``STAT``: the drop listing, ``+OK count size`` (RFC 1939 §5)."""

    keyword: ClassVar[str] = "STAT"


@dataclass(frozen=True, slots=True)
class List(Command):
    """``LIST [msg]``: one scan listing, or all of them as a multi-line answer."""

    message: int | None = None
    keyword: ClassVar[str] = "LIST"

    def __post_init__(self) -> None:
        if self.message is not None:
            _check_number("LIST message number", self.message)

    @property
    def multiline(self) -> bool:
        return self.message is None


@dataclass(frozen=True, slots=True)
class Retr(Command):
    """``RETR msg``: the whole message, dot-stuffed."""

    message: int
    keyword: ClassVar[str] = "RETR"

    def __post_init__(self) -> None:
        _check_number("RETR message number", self.message)

    @property
    def multiline(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Dele(Command):
    """``DELE msg``: mark a message deleted; it goes only in the UPDATE state."""

    message: int
    keyword: ClassVar[str] = "DELE"

    def __post_init__(self) -> None:
        _check_number("DELE message number", self.message)


@dataclass(frozen=True, slots=True)
class Noop(Command):
    """``NOOP``."""

    keyword: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True)
class Rset(Command):
    """``RSET``: unmark every message marked deleted."""

    keyword: ClassVar[str] = "RSET"


@dataclass(frozen=True, slots=True)
class Top(Command):
    """``TOP msg n``: the headers and the first ``lines`` body lines."""

    message: int
    lines: int
    keyword: ClassVar[str] = "TOP"

    def __post_init__(self) -> None:
        _check_number("TOP message number", self.message)
        _check_number("TOP line count", self.lines, minimum=0)

    @property
    def multiline(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Uidl(Command):
    """``UIDL [msg]``: one unique-id listing, or all of them as a multi-line answer."""

    message: int | None = None
    keyword: ClassVar[str] = "UIDL"

    def __post_init__(self) -> None:
        if self.message is not None:
            _check_number("UIDL message number", self.message)

    @property
    def multiline(self) -> bool:
        return self.message is None


@dataclass(frozen=True, slots=True)
class Quit(Command):
    """``QUIT``: from TRANSACTION it enters the UPDATE state (RFC 1939 §6)."""

    keyword: ClassVar[str] = "QUIT"


class Response(Event):
    """Base class of the status lines a server sends: ``+OK``, ``-ERR``, ``+``."""

    __slots__ = ()

    def to_bytes(self) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Ok(Response):
    """``+OK text``: success; for a multi-line command the content follows.

    As in an SMTP reply, CR, LF, the other C0 controls but HTAB, DEL and lone
    surrogates are refused, and the other characters unsafe in text (RFC 5198 §2: C1
    controls, format characters such as a bidi mark, U+2028, U+2029) are kept in
    :attr:`text` as their backslash escapes (``\\u200e``), which go on the wire.
    """

    text: str = ""

    def __post_init__(self) -> None:
        if not (type(self.text) is str and self.text.isprintable()):  # everyday, in C
            _check_status_text("+OK text", self)

    def to_bytes(self) -> bytes:
        return b"+OK " + self.text.encode("utf-8") + b"\r\n" if self.text else b"+OK\r\n"


@dataclass(frozen=True, slots=True)
class Err(Response):
    """``-ERR [code] text``: failure, with an RFC 2449 §8 response code or not.

    ``code`` is the bracketed code without its brackets: ``IN-USE``,
    ``LOGIN-DELAY``, ``SYS/TEMP``, ``SYS/PERM``, ``AUTH`` (RFC 3206) or
    ``UTF8`` (RFC 6856). A text that starts with a bracketed code is split
    into the two fields, so that the event equals what a client reads back. The text
    is checked and escaped as :class:`Ok`'s is.
    """

    text: str = ""
    code: str | None = None

    def __post_init__(self) -> None:
        if not (type(self.text) is str and self.text.isprintable()):  # everyday, in C
            _check_status_text("-ERR text", self)
        if self.code is None:
            match = _LEADING_CODE_RE.match(self.text)
            if match is not None:
                object.__setattr__(self, "code", match[1])
                object.__setattr__(self, "text", self.text[match.end() :])
        elif not isinstance(self.code, str) or not _RESP_CODE_RE.fullmatch(self.code):
            raise LocalProtocolError(f"invalid response code {self.code!r} (RFC 2449 §9)")

    def to_bytes(self) -> bytes:
        line = "-ERR"
        if self.code is not None:
            line += f" [{self.code}]"
        if self.text:
            line += f" {self.text}"
        return line.encode("utf-8") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Continue(Response):
    """``+ base64``: a SASL challenge in an AUTH exchange (RFC 5034 §4), decoded."""

    data: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise LocalProtocolError("a continuation holds bytes")

    def to_bytes(self) -> bytes:
        return b"+ " + base64.b64encode(self.data) + b"\r\n"


@dataclass(frozen=True, slots=True)
class ResponseData(Event):
    """A chunk of multi-line content (a message, a listing), without dot-stuffing."""

    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise LocalProtocolError("ResponseData holds bytes")


@dataclass(frozen=True, slots=True)
class EndOfResponse(Event):
    """The multi-line content is complete (the ``.`` line was sent or read)."""


@dataclass(frozen=True, slots=True)
class BadCommand(Event):
    """A command line the server machine could not accept, with the -ERR it suggests.

    Answer it with ``response`` (or another :class:`Err`); the session goes on.
    ``secret`` is true when the line may carry a credential (a PASS or AUTH
    command, or an answer to a ``+`` challenge): the repr then hides it.
    """

    line: bytes = field(metadata=SECRET)
    response: Err
    secret: bool = False

    def __repr__(self) -> str:
        return secret_repr(self, hide=self.secret)


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed its side of the connection."""
