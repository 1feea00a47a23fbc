"""Reading command lines into events and writing events as command lines.

RFC 5321 §4.1.1 fixes each command's syntax. Parsing is a table from verb to
a small function; every function either returns the event or raises
:class:`CommandSyntaxError` carrying the reply the RFC names for the fault.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from sys import intern
from typing import Final

from smtpcore._address_mailbox import SIMPLE_PATH_PATTERN
from smtpcore._errors import LocalProtocolError
from smtpcore._numbers import parse_number
from smtpcore._words import ascii_upper
from smtpcore.address import (
    STRICT_ADDRESSES,
    AddressError,
    AddressPolicy,
    Mailbox,
    check_received_path,
    format_path,
    parse_path,
    split_path,
)
from smtpcore.smtp._events import (
    Auth,
    AuthResponse,
    Bdat,
    Command,
    Data,
    Ehlo,
    Event,
    Expn,
    ForwardingCommand,
    Helo,
    Help,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
    Xclient,
    Xforward,
)
from smtpcore.smtp._everyday_params import read_parameters
from smtpcore.smtp._forwarding import MAX_VALUE, XTEXT_VALUE, decode_value
from smtpcore.smtp._params import Parameters, parse_parameters
from smtpcore.smtp._replies import EnhancedStatus, Reply, quoted

__all__ = [
    "BARE_BY_FIRST_OCTET",
    "BARE_LINES",
    "CommandSyntaxError",
    "VERBS",
    "chunk_after",
    "envelope_verbs",
    "format_auth_response",
    "format_command",
    "parse_auth_response",
    "parse_command_line",
    "reply",
]


def reply(code: int, status: str, text: str) -> Reply:
    """Build a reply with its enhanced status, briefly; its text, which may quote the
    client (an address, a parameter), escaped where unsafe in text (C0 controls and
    lone surrogates too, which a reply refuses) and cut short to fit a reply line."""
    return Reply(code, quoted(text), EnhancedStatus.parse(status))


class CommandSyntaxError(Exception):
    """A command line that cannot become an event; ``reply`` is the answer."""

    def __init__(self, answer: Reply) -> None:
        super().__init__(str(answer))
        self.reply = answer


def _syntax(text: str) -> CommandSyntaxError:
    return CommandSyntaxError(reply(501, "5.5.4", f"Syntax: {text}"))


def _no_argument(event: Command) -> Callable[[str], Command]:
    def parse(argument: str) -> Command:
        if argument:
            raise _syntax(event.verb)
        return event

    return parse


def _hello(cls: type[Ehlo | Helo | Lhlo]) -> Callable[[str], Command]:
    def parse(argument: str) -> Command:
        if not argument or " " in argument:
            raise _syntax(f"{cls.verb} hostname")
        return cls(argument)

    return parse


_FROM_RE: Final = re.compile(r"FROM: *", re.IGNORECASE | re.ASCII)
_TO_RE: Final = re.compile(r"TO: *", re.IGNORECASE | re.ASCII)


def _envelope(
    argument: str, prefix: re.Pattern[str], usage: str, policy: AddressPolicy
) -> tuple[str, str]:
    match = prefix.match(argument)
    if match is None:
        raise _syntax(usage)
    return split_path(argument[match.end() :], policy=policy)


def _mail_parser(policy: AddressPolicy) -> Callable[[str], Command]:
    def parse_mail(argument: str) -> Command:
        try:
            path, rest = _envelope(argument, _FROM_RE, "MAIL FROM:<address>", policy)
            sender = parse_path(path, allow_null=True, policy=policy)
            if sender is not None:
                check_received_path(sender)
        except AddressError as exc:
            raise CommandSyntaxError(
                reply(501, "5.1.7", f"Bad sender address syntax: {exc}")
            ) from None
        return Mail(sender, _parameters(rest))

    return parse_mail


def _rcpt_parser(policy: AddressPolicy) -> Callable[[str], Command]:
    def parse_rcpt(argument: str) -> Command:
        try:
            path, rest = _envelope(argument, _TO_RE, "RCPT TO:<address>", policy)
            recipient = parse_path(path, allow_null=False, allow_postmaster=True, policy=policy)
            if recipient is not None:
                check_received_path(recipient)
        except AddressError as exc:
            raise CommandSyntaxError(
                reply(501, "5.1.3", f"Bad recipient address syntax: {exc}")
            ) from None
        assert recipient is not None  # allow_null=False
        return Rcpt(recipient, _parameters(rest))

    return parse_rcpt


def envelope_verbs(policy: AddressPolicy) -> dict[str, Callable[[str], Command]]:
    """The parsers of ``MAIL`` and ``RCPT`` that take the addresses ``policy`` takes:
    a server's verb table holds these in place of :data:`VERBS`' strict ones."""
    if policy == STRICT_ADDRESSES:
        return {"MAIL": _parse_mail, "RCPT": _parse_rcpt}
    return {"MAIL": _mail_parser(policy), "RCPT": _rcpt_parser(policy)}


_parse_mail: Final = _mail_parser(STRICT_ADDRESSES)
_parse_rcpt: Final = _rcpt_parser(STRICT_ADDRESSES)


_NO_PARAMETERS: Final = Parameters()
_DATA: Final = Data()
_RSET: Final = Rset()
_NOOP: Final = Noop()
_QUIT: Final = Quit()


def _parameters(text: str) -> Parameters:
    if not text:
        return _NO_PARAMETERS
    try:
        return parse_parameters(text)
    except LocalProtocolError as exc:
        raise CommandSyntaxError(reply(501, "5.5.4", f"Bad parameter syntax: {exc}")) from None


_BDAT_DIGITS: Final = 18
"""The longest chunk size read: under 10**18 octets, more than any server takes."""
_BDAT_VERB: Final = re.compile(rb"[ \t]*BDAT(?![!-~])", re.IGNORECASE)
_WSP: Final = re.compile(rb"[ \t]+")


def _parse_bdat(argument: str) -> Command:
    words = argument.split(" ")
    size = parse_number(words[0], max_digits=_BDAT_DIGITS)
    if size is None or len(words) > 2 or (len(words) == 2 and ascii_upper(words[1]) != "LAST"):
        raise _syntax("BDAT size [LAST]")
    return Bdat(size, len(words) == 2)


def starts_bdat(line: bytes | bytearray) -> bool:
    """Whether ``line`` (or the head of one) is a BDAT command line, whose chunk
    follows it whatever becomes of it (see :func:`chunk_after`)."""
    return _BDAT_VERB.match(line) is not None


def chunk_after(line: bytes) -> int | None:
    """The octets that follow ``line``, a command line refused as it stands (unknown,
    not UTF-8, or not the command's syntax): a BDAT line's chunk follows it whatever
    the answer (RFC 3030 §2), and read as commands it would run whatever the client
    put in it. 0 for a line that is not BDAT; None for a BDAT line whose first
    argument is no size (not ASCII digits, or too many): then no one knows where its
    chunk ends. BDAT counts so after HELO too, where it is unknown: a client sends its
    chunk all the same, and an intermediary that knows BDAT sees the chunk as one.

    None too for a line in which a bare LF puts a BDAT: a reader that ends lines at a
    bare LF (some intermediaries do) sees a BDAT there, and its chunk where this
    machine reads commands, so neither can say where the other's next command is."""
    verb = _BDAT_VERB.match(line)
    if verb is None:
        body = line.removesuffix(b"\r\n")
        if body.find(b"\n") >= 0 and any(map(starts_bdat, body.split(b"\n")[1:])):
            return None
        return 0
    rest = line[verb.end() :].rstrip(b"\n").removesuffix(b"\r").strip(b" \t")
    size = _WSP.split(rest, maxsplit=1)[0]
    return parse_number(size.decode("latin-1"), max_digits=_BDAT_DIGITS)


def _required(cls: type[Vrfy | Expn]) -> Callable[[str], Command]:
    def parse(argument: str) -> Command:
        if not argument:
            raise _syntax(f"{cls.verb} string")
        return cls(argument)

    return parse


def _decode_base64(text: str) -> bytes:
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CommandSyntaxError(reply(501, "5.5.2", "Invalid base64 data")) from None


def _parse_auth(argument: str) -> Command:
    words = argument.split(" ")
    if not argument or len(words) > 2:
        raise _syntax("AUTH mechanism [initial-response]")
    try:
        mechanism = ascii_upper(words[0])
        initial = _decode_base64(words[1]) if len(words) == 2 else None
        return Auth(mechanism, initial)
    except LocalProtocolError:
        raise CommandSyntaxError(reply(504, "5.5.4", "Unrecognized authentication type")) from None


def _forwarding(cls: type[ForwardingCommand]) -> Callable[[str], Command]:
    """``XCLIENT`` or ``XFORWARD``: ``1*( SP attribute-name "=" xtext )``, names in any
    case (Postfix's READMEs); an attribute named twice keeps its last value, as in
    Postfix. A name the command does not have, a value that is not xtext or whose
    xtext is over 255 octets (XFORWARD_README note 1; Postfix's limit), or one its
    attribute cannot hold is ``501 5.5.4``."""
    by_name = {attribute.name: attribute for attribute in cls.ATTRIBUTES}

    def parse(argument: str) -> Command:
        if not argument:
            raise _syntax(f"{cls.verb} attribute=value ...")
        values: dict[str, object] = {}
        for word in argument.split(" "):
            if not word:
                continue
            name, equals, value = word.partition("=")
            attribute = by_name.get(ascii_upper(name))
            if attribute is None or not equals:
                raise CommandSyntaxError(
                    reply(501, "5.5.4", f"Bad {cls.verb} attribute name: {name[:32]}")
                )
            if len(value) > MAX_VALUE:
                raise CommandSyntaxError(reply(501, "5.5.4", f"{attribute.name} value too long"))
            if not XTEXT_VALUE.fullmatch(value):
                raise CommandSyntaxError(reply(501, "5.5.4", f"Bad {attribute.name} syntax"))
            try:
                values[attribute.field] = attribute.from_wire(decode_value(value))
            except ValueError:
                raise CommandSyntaxError(
                    reply(501, "5.5.4", f"Bad {attribute.name} syntax")
                ) from None
        return cls(**values)

    return parse


VERBS: Final[dict[str, Callable[[str], Command]]] = {
    "EHLO": _hello(Ehlo),
    "HELO": _hello(Helo),
    "LHLO": _hello(Lhlo),
    "MAIL": _parse_mail,
    "RCPT": _parse_rcpt,
    "DATA": _no_argument(_DATA),
    "BDAT": _parse_bdat,
    "RSET": _no_argument(_RSET),
    "NOOP": Noop,
    "QUIT": _no_argument(_QUIT),
    "VRFY": _required(Vrfy),
    "EXPN": _required(Expn),
    "HELP": Help,
    "STARTTLS": _no_argument(StartTls()),
    "AUTH": _parse_auth,
    "XCLIENT": _forwarding(Xclient),
    "XFORWARD": _forwarding(Xforward),
}
"""Verb -> parser of the text after it. A server narrows this to what it serves."""

_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_EVERYDAY_PARAMETERS: Final = rb"(?: [Ss][Ii][Zz][Ee]=([0-9]{1,20})(?= |\r))?( [ -~]*)?"
"""What follows the path: a leading ``SIZE=`` (RFC 1870 §3: ``1*20DIGIT``), as most
clients write it, and any other printable ASCII after a space (``BODY=8BITMIME``,
``NOTIFY=NEVER``), taken in one sweep; :func:`read_parameters` holds that to RFC
5321 §4.1.2's ``esmtp-param`` (most often by finding it among the texts it read
before)."""

_EVERYDAY_LINE: Final = re.compile(
    # Case-insensitive for the verbs alone: the classes after them list both cases
    # already, and each is tested faster without the flag.
    rb"(?i:MAIL FROM:|(RCPT) TO:)"
    + SIMPLE_PATH_PATTERN.encode("ascii")
    # The line's end first: most paths have no parameters, and the optional groups
    # cost the engine more to try and pass over than this branch does.
    + rb"(?:\r\n|"
    + _EVERYDAY_PARAMETERS
    + rb"\r\n)|(?i:(DATA|RSET|NOOP|QUIT))\r\n"
)
_BARE: Final[dict[bytes, Command]] = {
    b"DATA": _DATA,
    b"RSET": _RSET,
    b"NOOP": _NOOP,
    b"QUIT": _QUIT,
}
"""The everyday commands without an argument, by their verb."""
_BARE_LINES: Final[dict[bytes, Command]] = {
    line: command
    for verb, command in _BARE.items()
    for line in (verb + b"\r\n", verb.lower() + b"\r\n")
}
"""Their lines as clients write them, upper or lower case: one lookup, no match."""
BARE_LINES: Final = tuple(_BARE_LINES)
"""The same lines, for ``bytes.startswith``: a server finds them at the start of its
unread bytes without copying them out (see :data:`BARE_BY_FIRST_OCTET`)."""
BARE_BY_FIRST_OCTET: Final[dict[int, tuple[bytes, Command]]] = {
    line[0]: (line, command) for line, command in _BARE_LINES.items()
}
"""Each of :data:`BARE_LINES` and its command, by its first octet: the four verbs start
with four letters, and a line is all upper or all lower case."""
_HELLO_LINE: Final = re.compile(rb"(?i:(EHLO|HELO|LHLO)) ([!-~]+)\r\n")
"""A hello naming its client in printable ASCII, once per connection: the full parser
takes the same domain (no space, no control, not empty) after decoding the line."""


def parse_everyday_line(line: bytes) -> Command | None:
    """``MAIL FROM:<a@b>``, ``RCPT TO:<a@b>`` (an everyday path, with or without ASCII
    parameters such as ``SIZE=1234 BODY=8BITMIME`` or ``NOTIFY=NEVER``), ``DATA``,
    ``RSET``, ``NOOP`` and ``QUIT``, recognised in one match of the raw line, CRLF
    included; failing those, ``EHLO``, ``HELO`` or ``LHLO`` and a domain in printable
    ASCII, in a second.

    A busy server's hot path. Anything else gives None and goes to
    :func:`parse_command_line`, which gives the same events for these lines
    (a property test holds the two to that).
    """
    if len(line) == 6:  # DATA, RSET, NOOP or QUIT and CRLF, most often
        known = _BARE_LINES.get(line)
        if known is not None:
            return known
    match = _EVERYDAY_LINE.fullmatch(line)
    if match is None:
        return parse_hello_line(line)
    return everyday_command(match, line)


match_everyday_line: Final[Callable[[bytes | bytearray], re.Match[bytes] | None]] = (
    _EVERYDAY_LINE.match
)
"""The everyday line :func:`parse_everyday_line` recognises, at the start of a buffer
of unread bytes: no class of the expression holds a CR, so a match ends at the
buffer's first CRLF, and is the buffer's first line. A server reads the everyday
commands where they stand, without a search for the line's end or a copy of it
before the match; build the command with :func:`everyday_command` before the line
leaves the buffer (a match reads its groups from the buffer as it is then)."""


def parse_hello_line(line: bytes) -> Ehlo | Helo | Lhlo | None:
    """``EHLO``, ``HELO`` or ``LHLO`` and a domain in printable ASCII, CRLF included: the
    second match of :func:`parse_everyday_line`, for a line known not to be the first's."""
    hello = _HELLO_LINE.fullmatch(line)
    if hello is None:
        return None
    verb, name = hello.groups()
    kind = _HELLOS[verb.upper()]
    event: Ehlo | Helo | Lhlo = _new(kind)
    # As for Mail below: no checks. One string for every session that gives the
    # same name (a client host's sessions do): a session keeps it while it lasts.
    _SET_DOMAIN[kind](event, intern(name.decode()))  # ASCII, as below
    return event


def everyday_command(match: re.Match[bytes], line: bytes) -> Command | None:
    """The command of ``line``, an everyday line, and ``match``, its match of the
    expression (see :func:`match_everyday_line`); None where its parameters are not
    read here (malformed, or a keyword given twice: the full parser words why)."""
    if len(line) == 6:  # DATA, RSET, NOOP or QUIT and CRLF: the only lines this short
        known = _BARE_LINES.get(line)
        return _BARE[line[:4].upper()] if known is None else known  # bytes: ASCII case alone
    rcpt, local, domain, size, text, _ = match.groups()
    # A mailbox as it stands (SIMPLE_PATH_PATTERN holds the limits too): built without
    # Mailbox's checks, as below. Its parts are ASCII, which decode's default (UTF-8)
    # reads alike, with no argument to parse.
    mailbox: Mailbox = _new(Mailbox)
    _SET_LOCAL_PART(mailbox, local.decode())
    _SET_MAILBOX_DOMAIN(mailbox, domain.decode())
    if text or size is not None:
        params = read_parameters(size, text)
        if params is None:
            return None
    else:
        params = _NO_PARAMETERS
    # Built without their constructors' checks, which these parts pass: a call less.
    if rcpt:
        recipient: Rcpt = _new(Rcpt)
        _SET_RECIPIENT(recipient, mailbox)
        _SET_RCPT_PARAMS(recipient, params)
        return recipient
    sender: Mail = _new(Mail)
    _SET_SENDER(sender, mailbox)
    _SET_MAIL_PARAMS(sender, params)
    return sender


_new: Final = object.__new__
_SET_LOCAL_PART: Final[Callable[[Mailbox, str], None]] = vars(Mailbox)["local_part"].__set__
_SET_MAILBOX_DOMAIN: Final[Callable[[Mailbox, str], None]] = vars(Mailbox)["domain"].__set__
_SET_SENDER: Final[Callable[[Mail, Mailbox], None]] = vars(Mail)["sender"].__set__
_SET_MAIL_PARAMS: Final[Callable[[Mail, Parameters], None]] = vars(Mail)["params"].__set__
_SET_RECIPIENT: Final[Callable[[Rcpt, Mailbox], None]] = vars(Rcpt)["recipient"].__set__
_SET_RCPT_PARAMS: Final[Callable[[Rcpt, Parameters], None]] = vars(Rcpt)["params"].__set__
_HELLOS: Final[dict[bytes, type[Ehlo | Helo | Lhlo]]] = {
    b"EHLO": Ehlo,
    b"HELO": Helo,
    b"LHLO": Lhlo,
}
_SET_DOMAIN: Final[dict[type[Ehlo | Helo | Lhlo], Callable[[Command, str], None]]] = {
    kind: vars(kind)["domain"].__set__ for kind in _HELLOS.values()
}


def parse_command_line(text: str, verbs: dict[str, Callable[[str], Command]]) -> Command:
    """Parse one command line (CRLF removed, decoded as UTF-8)."""
    verb, _, argument = text.partition(" ")
    parser = verbs.get(ascii_upper(verb))
    if parser is None:
        raise CommandSyntaxError(reply(500, "5.5.2", "Command unrecognized"))
    if not argument.isprintable() and _CONTROL_RE.search(argument):
        raise CommandSyntaxError(reply(501, "5.5.2", "Control character in command"))
    try:
        return parser(argument.strip(" "))
    except CommandSyntaxError:
        raise
    except LocalProtocolError:
        raise _syntax(ascii_upper(verb)) from None


def parse_auth_response(text: str) -> AuthResponse:
    """Parse a line answering a 334 challenge: base64, or ``*`` to cancel."""
    if text == "*":
        return AuthResponse(cancel=True)
    return AuthResponse(_decode_base64(text))


def format_auth_response(event: AuthResponse) -> bytes:
    if event.cancel:
        return b"*\r\n"
    return base64.b64encode(event.data) + b"\r\n"


def format_command(event: Event) -> bytes:
    """The wire form of a command event, CRLF included."""
    if isinstance(event, (Ehlo, Helo, Lhlo)):
        text = f"{event.verb} {event.domain}"
    elif isinstance(event, Mail):
        text = f"MAIL FROM:{format_path(event.sender)}"
        if event.params:
            text += f" {event.params}"
    elif isinstance(event, Rcpt):
        text = f"RCPT TO:{format_path(event.recipient)}"
        if event.params:
            text += f" {event.params}"
    elif isinstance(event, Bdat):
        text = f"BDAT {event.size}{' LAST' if event.last else ''}"
    elif isinstance(event, (Noop, Help, Vrfy, Expn)):
        text = f"{event.verb} {event.argument}" if event.argument else event.verb
    elif isinstance(event, Auth):
        text = f"AUTH {ascii_upper(event.mechanism)}"
        if event.initial_response is not None:
            encoded = base64.b64encode(event.initial_response).decode("ascii")
            text += f" {encoded or '='}"
    elif isinstance(event, AuthResponse):
        return format_auth_response(event)
    elif isinstance(event, ForwardingCommand):
        text = event.to_line()
    elif isinstance(event, Command):
        text = event.verb
    else:
        raise LocalProtocolError(f"{type(event).__name__} is not a command")
    return text.encode("utf-8") + b"\r\n"
