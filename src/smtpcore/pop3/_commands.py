"""Reading command lines into events and writing events as command lines.

RFC 1939 §3: a command is a case-insensitive keyword, possibly followed by
arguments separated by single spaces. Parsing is a table from keyword to a
small function; every function returns the event or raises
:class:`CommandSyntaxError` carrying the ``-ERR`` to answer with. Every one
cuts its argument into words with :func:`split_words`, at the SPACE alone.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Final

from smtpcore._errors import LocalProtocolError
from smtpcore._numbers import parse_number
from smtpcore._words import ascii_upper
from smtpcore.pop3._events import (
    MAX_MESSAGE_NUMBER,
    Apop,
    Auth,
    AuthMechanisms,
    AuthResponse,
    Capa,
    Command,
    Dele,
    Err,
    Event,
    List,
    Noop,
    Pass,
    Quit,
    Retr,
    Rset,
    Stat,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
)

__all__ = [
    "KEYWORDS",
    "CommandSyntaxError",
    "decode_base64",
    "format_command",
    "parse_auth_response",
    "parse_command_line",
    "split_words",
]

Parser = Callable[[str], Command]


class CommandSyntaxError(Exception):
    """A command line that cannot become an event; ``response`` is the answer."""

    def __init__(self, response: Err) -> None:
        super().__init__(response.text)
        self.response = response


def _syntax(usage: str) -> CommandSyntaxError:
    return CommandSyntaxError(Err(f"Syntax: {usage}"))


def split_words(text: str) -> list[str]:
    """The words of ``text``, separated by the SPACE character and by no other.

    RFC 1939 §3 (and RFC 2449 §3, RFC 5034 §4) separates keywords and arguments
    with SPACE. ``str.split()`` also cuts at a tab, U+00A0, U+2028, U+3000 and every
    other Unicode space, so ``RETR 1\u00a0`` would read as ``RETR 1`` here and as a
    bad command to a peer or proxy that follows the RFC: a line two readers read
    differently. Any other space stays in its word, which then fails its own check
    (a message number is ASCII digits). A run of spaces counts as one, and spaces
    at either end are dropped: Dovecot 2.3 reads ``RETR  1`` and ``TOP 1  0`` so
    (it refuses one after a number; no reader takes that for another command).
    """
    return [word for word in text.split(" ") if word]


def _number(word: str, *, minimum: int = 1, what: str = "message number") -> int:
    number = parse_number(word, max_digits=10)
    if number is None or not minimum <= number <= MAX_MESSAGE_NUMBER:
        raise CommandSyntaxError(Err(f"Invalid {what}: {word[:20]}"))
    return number


def _no_argument(event: Command) -> Parser:
    def parse(argument: str) -> Command:
        if split_words(argument):
            raise _syntax(event.keyword)
        return event

    return parse


def _parse_user(argument: str) -> Command:
    name = argument.strip(" ")
    if not name:
        raise _syntax("USER name")
    return User(name)


def _parse_pass(argument: str) -> Command:
    # RFC 1939 §7: spaces may be part of the password; keep the whole rest.
    if not argument:
        raise _syntax("PASS string")
    return Pass(argument)


def _parse_apop(argument: str) -> Command:
    """RFC 1939 §7 ``APOP name digest``. The digest is 32 hex digits, always the last
    word, so the name is the rest: a name with a space in it, as mpop and fetchmail
    send it, is read whole (Dovecot refuses it; our client does not send it)."""
    name, _, digest = argument.strip(" ").rpartition(" ")
    name = name.strip(" ")
    if not name or not re.fullmatch(r"[0-9a-fA-F]{32}", digest):
        raise _syntax("APOP name digest")
    return Apop(name, digest.lower())


def decode_base64(text: str) -> bytes:
    """Decode a SASL payload; ``=`` is the empty one (RFC 5034 §4)."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CommandSyntaxError(Err("Invalid base64 data")) from None


def _parse_auth(argument: str) -> Command:
    """``AUTH mechanism [initial-response]`` (RFC 5034 §4), or bare ``AUTH``, which asks
    for the mechanisms (:class:`AuthMechanisms`)."""
    words = split_words(argument)
    if not words:
        return AuthMechanisms()
    if len(words) > 2:
        raise _syntax("AUTH mechanism [initial-response]")
    mechanism = ascii_upper(words[0])
    initial = decode_base64(words[1]) if len(words) == 2 else None
    try:
        return Auth(mechanism, initial)
    except LocalProtocolError:
        raise CommandSyntaxError(Err("Unsupported authentication mechanism")) from None


def _optional_number(cls: type[List | Uidl]) -> Parser:
    def parse(argument: str) -> Command:
        words = split_words(argument)
        if len(words) > 1:
            raise _syntax(f"{cls.keyword} [msg]")
        return cls(_number(words[0]) if words else None)

    return parse


def _one_number(cls: type[Retr | Dele]) -> Parser:
    def parse(argument: str) -> Command:
        words = split_words(argument)
        if len(words) != 1:
            raise _syntax(f"{cls.keyword} msg")
        return cls(_number(words[0]))

    return parse


def _parse_top(argument: str) -> Command:
    """TOP's line count is any non-negative number (RFC 1939 §7), and one past the
    body's lines means the whole message: a count beyond the largest the event holds
    asks for no less, so it is that largest."""
    words = split_words(argument)
    if len(words) != 2:
        raise _syntax("TOP msg n")
    lines = parse_number(words[1], max_digits=255)  # a command line's worth (RFC 2449 §4)
    if lines is None:
        raise CommandSyntaxError(Err(f"Invalid line count: {words[1][:20]}"))
    return Top(_number(words[0]), min(lines, MAX_MESSAGE_NUMBER))


KEYWORDS: Final[dict[str, Parser]] = {
    "USER": _parse_user,
    "PASS": _parse_pass,
    "APOP": _parse_apop,
    "AUTH": _parse_auth,
    "CAPA": _no_argument(Capa()),
    "STLS": _no_argument(Stls()),
    "UTF8": _no_argument(Utf8()),
    "STAT": _no_argument(Stat()),
    "LIST": _optional_number(List),
    "RETR": _one_number(Retr),
    "DELE": _one_number(Dele),
    "NOOP": _no_argument(Noop()),
    "RSET": _no_argument(Rset()),
    "TOP": _parse_top,
    "UIDL": _optional_number(Uidl),
    "QUIT": _no_argument(Quit()),
}
"""Keyword -> parser of the text after it. A server narrows this to what it serves."""

_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
UNKNOWN_COMMAND: Final = Err("Unknown command")


def parse_command_line(text: str, keywords: dict[str, Parser]) -> Command:
    """Parse one command line (CRLF removed, decoded as UTF-8)."""
    keyword, _, argument = text.partition(" ")
    parser = keywords.get(ascii_upper(keyword))
    if parser is None:
        raise CommandSyntaxError(UNKNOWN_COMMAND)
    if _CONTROL_RE.search(argument):
        raise CommandSyntaxError(Err("Control character in command"))
    try:
        return parser(argument)
    except LocalProtocolError:
        raise _syntax(ascii_upper(keyword)) from None


def parse_auth_response(text: str) -> AuthResponse:
    """Parse a line answering a ``+`` challenge: base64, or ``*`` to cancel."""
    if text == "*":
        return AuthResponse(cancel=True)
    return AuthResponse(decode_base64(text))


def format_command(event: Event) -> bytes:
    """The wire form of a command event (or a SASL response), CRLF included."""
    if isinstance(event, AuthResponse):
        return b"*\r\n" if event.cancel else base64.b64encode(event.data) + b"\r\n"
    if isinstance(event, User):
        text = f"USER {event.name}"
    elif isinstance(event, Pass):
        text = f"PASS {event.password}"
    elif isinstance(event, Apop):
        text = f"APOP {event.name} {event.digest}"
    elif isinstance(event, Auth):
        text = f"AUTH {event.mechanism}"
        if event.initial_response is not None:
            encoded = base64.b64encode(event.initial_response).decode("ascii")
            text += f" {encoded or '='}"
    elif isinstance(event, (List, Uidl)):
        text = event.keyword if event.message is None else f"{event.keyword} {event.message}"
    elif isinstance(event, (Retr, Dele)):
        text = f"{event.keyword} {event.message}"
    elif isinstance(event, Top):
        text = f"TOP {event.message} {event.lines}"
    elif isinstance(event, Command):
        text = event.keyword
    else:
        raise LocalProtocolError(f"{type(event).__name__} is not a command")
    return text.encode("utf-8") + b"\r\n"
