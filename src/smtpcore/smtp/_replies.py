"""SMTP replies and enhanced status codes (RFC 5321 §4.2, RFC 3463, RFC 2034).

A :class:`Reply` is the one event a server sends and a client receives. It
knows how to write itself as reply lines; :class:`ReplyParser` reads them
back, bounded in line length and line count.
"""

from __future__ import annotations

import base64
import functools
import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from smtpcore._errors import LocalProtocolError, RemoteProtocolError, wrong_type
from smtpcore._lines import LINE_TOO_LONG, ReceiveBuffer
from smtpcore._textsafe import (
    backslash_escaped,
    escape_unsafe_beyond_ascii,
    replace_unsafe,
    unsafe_in_text,
)
from smtpcore.smtp._base import Event

__all__ = [
    "MAX_REPLY_LINE",
    "EnhancedStatus",
    "Reply",
    "ReplyParser",
    "everyday_reply",
    "known_replies",
    "parse_everyday_reply",
    "printable_ascii",
    "quoted",
    "shortened",
]

# [0-9], not \d: a str pattern's \d matches any Unicode digit (RFC 3463 §2: ASCII).
_STATUS_RE: Final = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})")
_FORBIDDEN_IN_TEXT: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""C0 controls but HTAB, and DEL: CR and LF would end a reply line early."""
_LONE_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")
"""What a str may hold and UTF-8 cannot encode (``os.fsdecode``, ``surrogateescape``)."""
MAX_REPLY_LINE: Final = 512
"""RFC 5321 §4.5.3.1.5: the octets of a reply line at most, its code and CRLF included."""
TEXT_ROOM: Final = MAX_REPLY_LINE - len("250-\r\n") - len("5.999.999 ")
"""The octets of text a reply line has room for, whatever enhanced status it is given."""


def shortened(text: str, octets: int = TEXT_ROOM) -> str:
    """``text`` in at most ``octets`` UTF-8 octets, cut short with ``...`` if longer: for
    a reply that quotes what a client (or an application) gave, which must still fit
    a reply line (RFC 5321 §4.5.3.1.5)."""
    if len(text) * 4 <= octets or len(text.encode("utf-8", "surrogatepass")) <= octets:
        return text  # UTF-8 takes at most 4 octets a character
    cut = text.encode("utf-8", "surrogatepass")[: octets - 3]
    return cut.decode("utf-8", "ignore") + "..."


def quoted(text: str, octets: int = TEXT_ROOM) -> str:
    """``text`` that quotes a client (an address, a VRFY argument, a login name) made
    fit to be a :class:`Reply`'s text: what a reply escapes (RFC 5198 §2: C1 controls,
    format characters, U+2028, U+2029), and what it refuses (C0 controls, DEL, lone
    surrogates), backslash-escaped (``\\x0d``, ``\\u200e``); then cut short with
    ``...`` between two characters, never inside an escape, so that the reply line
    fits (RFC 5321 §4.5.3.1.5) though an escape is longer than its character. What a
    client gave must not cost its session: quote the whole text,
    ``Reply(252, quoted(f"cannot VRFY {argument}"))``."""
    if octets < len("..."):
        raise ValueError(f"quoted() needs room for at least '...', not {octets} octets")
    if text.isprintable():  # the everyday case, in C
        return shortened(text, octets)
    pieces = [_quoted_char(char) for char in text]
    escaped = "".join(pieces)
    if len(escaped.encode()) <= octets:
        return escaped
    return _whole_pieces(pieces, octets - len("...")) + "..."


def _quoted_char(char: str) -> str:
    """``char`` as :func:`quoted` writes it: escaped if a reply would escape or refuse
    it, as it is otherwise."""
    if unsafe_in_text(char) or _LONE_SURROGATE.match(char):
        return backslash_escaped(char)
    return char


def _whole_pieces(pieces: list[str], octets: int) -> str:
    """As many of ``pieces`` (characters or their escapes), from the first, as fit in
    ``octets`` UTF-8 octets: a cut between two pieces never leaves half an escape
    (``\\u200``) that reads as another character's."""
    kept = 0
    for count, piece in enumerate(pieces):  # bounded by len(pieces)
        kept += len(piece) if piece.isascii() else len(piece.encode())
        if kept > octets:
            return "".join(pieces[:count])
    return "".join(pieces)


_SECTION: Final = re.compile(r"\u00a7 ?")


def printable_ascii(text: str) -> str:
    """``text`` in printable US-ASCII, as RFC 5321 §4.2's ``textstring`` is: "§" written
    as "section ", any other non-ASCII character backslash-escaped (``\\xe9``), then
    cut short to fit a reply line again."""
    if text.isascii():
        return text
    escaped = _SECTION.sub("section ", text).encode("ascii", "backslashreplace")
    return shortened(escaped.decode("ascii"))


@dataclass(frozen=True, slots=True)
class EnhancedStatus:
    """A class.subject.detail code (RFC 3463), such as ``5.1.1``."""

    class_code: int
    subject: int
    detail: int

    def __post_init__(self) -> None:
        for name in ("class_code", "subject", "detail"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):  # an IntEnum is an int
                raise wrong_type("an enhanced status's class, subject and detail", value, "ints")
            object.__setattr__(self, name, int(value))  # a plain int: str() gives digits
        if self.class_code not in (2, 4, 5):
            raise LocalProtocolError(f"enhanced status class must be 2, 4 or 5: {self}")
        if not (0 <= self.subject <= 999 and 0 <= self.detail <= 999):
            raise LocalProtocolError(f"enhanced status out of range: {self}")

    def __str__(self) -> str:
        return f"{self.class_code}.{self.subject}.{self.detail}"

    @classmethod
    def parse(cls, text: str) -> EnhancedStatus:
        """Parse ``"5.1.1"``; raises ``ValueError`` on anything else."""
        match = _STATUS_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"not an enhanced status code: {text!r}")
        return cls(int(match[1]), int(match[2]), int(match[3]))


def _as_status(value: EnhancedStatus | str | None) -> EnhancedStatus | None:
    if isinstance(value, str):
        try:
            return EnhancedStatus.parse(value)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
    return value


class _ReplyType(type):
    """Reply's type: ``Reply(code, text)`` equal to a one-line reply without a status
    built before is that reply (:data:`_BUILT`), without a new object, its fields
    set again and its checks: a handler's ``Reply(250, "OK")`` for every RCPT costs
    a lookup. Replies are immutable and compare by value: only ``is`` tells two
    equal ones apart. A subclass's replies are built as they are."""

    if not TYPE_CHECKING:  # for type checkers, Reply's own __init__ is the constructor

        def __call__(cls, *args: Any, **kwargs: Any) -> Any:
            if cls is Reply and len(args) == 2 and not kwargs:  # Reply(code, text)
                code, text = args
                if type(text) is str and type(code) is int:
                    known = _BUILT.get((cls, code, text))
                    if known is not None:
                        return known
            return type.__call__(cls, *args, **kwargs)

    @property
    def __signature__(cls) -> inspect.Signature:
        """What ``inspect`` and the documentation show a reply class to take: its
        ``__init__``'s arguments, not the ``*args`` of :meth:`__call__`."""
        init = next(vars(kind)["__init__"] for kind in cls.__mro__ if "__init__" in vars(kind))
        signature = inspect.signature(init)
        return signature.replace(parameters=list(signature.parameters.values())[1:])


@dataclass(frozen=True, slots=True, init=False)
class Reply(Event, metaclass=_ReplyType):
    """A reply: a three-digit code, text lines, and an optional enhanced status.

    ``text`` may be one string or a sequence of lines; :attr:`lines` always
    gives the lines. ``status`` also accepts a string such as ``"2.1.0"``.
    Text holding CR, LF or another C0 control but HTAB, or DEL, cannot be built,
    so a reply can never smuggle an extra line onto the wire; nor can text holding
    a lone surrogate, which has no UTF-8 form to be written in. The other
    characters unsafe in text (RFC 5198 §2: a C1 control, a format character such
    as a bidi mark or override, U+2028, U+2029), which may stand in what a handler
    quotes from a client (an SMTPUTF8 address, RFC 6531 §3.3), are kept as their
    backslash escapes (``\\u200e``): :attr:`text` and :attr:`lines` hold the
    escaped text, which is what goes on the wire. Replies compare by code, status
    and lines, so ``Reply(250, "ok")`` equals a parsed ``250 ok``.
    """

    code: int
    text: str | tuple[str, ...] = field(compare=False)
    status: EnhancedStatus | None
    lines: tuple[str, ...] = field(repr=False)
    _longest: int = field(init=False, repr=False, compare=False)
    """The UTF-8 octets of the longest line of text: whether the reply's wire lines can
    overrun :data:`MAX_REPLY_LINE`, known without writing them."""
    _wire: Sequence[tuple[EnhancedStatus | None, bytes]] = field(
        init=False, repr=False, compare=False
    )
    """The last few :meth:`to_bytes` results, with their statuses: the everyday
    replies are module constants, written again and again (``250 OK`` answers
    MAIL with 2.1.0 and RSET with 2.0.0), or built anew for each command, equal
    to the last (a handler's ``Reply(250, "OK")`` for every RCPT). A one-line
    reply without a status shares one list of them with every equal reply (see
    :data:`_BUILT`); any other keeps a tuple of its own."""

    def __init__(
        self,
        code: int,
        text: str | Sequence[str] = "",
        status: EnhancedStatus | str | None = None,
    ) -> None:
        if status is None and type(text) is str and type(code) is int:
            known = _BUILT.get((type(self), code, text))
            if known is not None:
                # An equal reply was checked before: its lines, and what it and its
                # equals have written.
                _SET_CODE(self, code)
                _SET_TEXT(self, text)
                _SET_STATUS(self, None)
                _SET_LINES(self, known.lines)
                _SET_LONGEST(self, known._longest)
                _SET_WIRE(self, known._wire)
                return
        if not isinstance(code, int) or not (200 <= code <= 599 and (code // 10) % 10 <= 5):
            raise LocalProtocolError(f"invalid reply code {code!r}")
        if isinstance(text, str):
            lines: tuple[str, ...] = (text,)
        elif isinstance(text, bytes | bytearray | memoryview):  # a sequence, of ints
            raise wrong_type("reply text", text, "a str or a sequence of str")
        else:
            try:
                text = lines = tuple(text)
            except TypeError:
                raise wrong_type("reply text", text, "a str or a sequence of str") from None
            if not lines:
                lines = ("",)
        longest = 0
        for line in lines:
            if not (type(line) is str and line.isprintable()):  # the everyday case, in C
                lines = tuple(map(_text_line, lines))  # refused, or escaped where unsafe
                text = lines[0] if isinstance(text, str) else lines
                longest = max(len(each.encode()) for each in lines)
                break
            size = len(line) if line.isascii() else len(line.encode())
            if size > longest:
                longest = size
        if status is not None and not isinstance(status, EnhancedStatus):
            status = _as_status(status)
            if not isinstance(status, EnhancedStatus):
                raise wrong_type("reply status", status, "an EnhancedStatus, a str or None")
        if status is not None and status.class_code != code // 100:
            raise LocalProtocolError(f"status {status} does not match reply code {code}")
        _SET_CODE(self, code)
        _SET_TEXT(self, text)
        _SET_STATUS(self, status)
        _SET_LINES(self, lines)
        _SET_LONGEST(self, longest)
        if status is None and type(text) is str and type(code) is int and len(text) <= _BUILT_TEXT:
            _SET_WIRE(self, [])
            if len(_BUILT) >= _BUILT_COUNT:
                _BUILT.clear()
            _BUILT[type(self), code, text] = self
        else:
            _SET_WIRE(self, ())

    @property
    def is_positive(self) -> bool:
        """2yz: the command was accepted."""
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        """3yz: the server waits for more (354 for DATA, 334 for AUTH)."""
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        """4yz: try again later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5yz: do not try again as it is."""
        return self.code >= 500

    @property
    def message(self) -> str:
        """The text lines joined by newlines, for logs and error messages."""
        return "\n".join(self.lines)

    @classmethod
    def challenge(cls, data: bytes) -> Reply:
        """A ``334`` carrying a SASL challenge, base64-encoded (RFC 4954 §4)."""
        return cls(334, base64.b64encode(data).decode("ascii"))

    def challenge_data(self) -> bytes:
        """The decoded SASL challenge of a ``334``; ``RemoteProtocolError`` if malformed."""
        if self.code != 334:
            raise LocalProtocolError(f"a {self.code} reply carries no SASL challenge")
        text = self.lines[0].strip()
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise RemoteProtocolError(f"334 challenge is not base64: {text[:40]!r}") from None

    def __str__(self) -> str:
        status = f"{self.status} " if self.status is not None else ""
        return f"{self.code} {status}{self.message}"

    def to_bytes(self, status: EnhancedStatus | None = None) -> bytes:
        """The reply as wire lines, each prefixed with ``status`` if given.

        A line over :data:`MAX_REPLY_LINE` octets is ``LocalProtocolError`` (RFC 5321
        §4.5.3.1.5). The reply itself may be built with longer text, as a client reads
        one: only the written line, its enhanced status and all, is measured."""
        wire = self._wire
        for known, data in wire:
            if known is status:
                return data
        data = self._format(status)
        if isinstance(wire, list):  # shared with the equal replies
            if len(wire) >= _WIRE_KEPT:
                del wire[0]
            wire.append((status, data))
        else:
            _SET_WIRE(self, (*wire[-2:], (status, data)))
        return data

    def _format(self, status: EnhancedStatus | None) -> bytes:
        # The status written out as its __str__ does, without calling it.
        prefix = (
            f"{status.class_code}.{status.subject}.{status.detail} " if status is not None else ""
        )
        lines = self.lines
        if len(lines) == 1:
            text = prefix + lines[0]
            # RFC 4954 §4: "334" SP [base64], the space even when empty.
            if text or self.code == 334:
                data = f"{self.code} {text}\r\n".encode()
            else:
                data = f"{self.code}\r\n".encode()
        else:
            last = len(lines) - 1
            out = []
            for index, line in enumerate(lines):
                sep = " " if index == last else "-"
                text = prefix + line
                out.append(f"{self.code}{sep}{text}\r\n" if text else f"{self.code}{sep}\r\n")
            data = "".join(out).encode()
        # Code, separator and CRLF are 6 octets, the status its own and a space.
        if self._longest + len(prefix) + 6 > MAX_REPLY_LINE:
            raise LocalProtocolError(
                f"a reply line is at most {MAX_REPLY_LINE} octets (RFC 5321 §4.5.3.1.5): "
                f"{self.code} {prefix}{self.lines[0][:40]!r}..."
            )
        return data


def _text_line(line: object) -> str:
    """``line`` as a reply line carries it, or ``LocalProtocolError``: a str with no C0
    control but HTAB and no DEL (CR and LF would end the line early: a programming
    error, never a client's doing) and no lone surrogate, which has no UTF-8 form; the
    rest of the class unsafe in text (RFC 5198 §2) backslash-escaped, which would show
    a reader other lines, another order or a terminal's escape sequence raw."""
    if not isinstance(line, str):
        raise wrong_type("each line of reply text", line, "a str")
    if _FORBIDDEN_IN_TEXT.search(line):
        raise LocalProtocolError(f"reply text may not hold control characters: {line!r}")
    if _LONE_SURROGATE.search(line):
        raise LocalProtocolError(f"reply text is not UTF-8 (a lone surrogate): {line!r}")
    return escape_unsafe_beyond_ascii(line)


_SET_CODE: Final = vars(Reply)["code"].__set__
_SET_TEXT: Final = vars(Reply)["text"].__set__
_SET_STATUS: Final = vars(Reply)["status"].__set__
_SET_LINES: Final = vars(Reply)["lines"].__set__
_SET_LONGEST: Final = vars(Reply)["_longest"].__set__
_SET_WIRE: Final = vars(Reply)["_wire"].__set__
"""Reply's slots, set through their descriptors: ``object.__setattr__`` looks each
name up first."""

_BUILT: Final[dict[tuple[type[Reply], int, str], Reply]] = {}
"""One-line replies without a status built so far, by class, code and text: a reply
equal to one of them is built from it, without the checks it passed, and shares the
bytes it has written. At most 256 replies of up to 128 characters are kept; a
full table starts over."""
_BUILT_COUNT: Final = 256
_BUILT_TEXT: Final = 128
_WIRE_KEPT: Final = 4
"""Results a shared list of :meth:`Reply.to_bytes` keeps: one for each status the
server writes a reply with (2.0.0, 2.1.0, 2.1.5, or none)."""

_REPLY_LINE_RE: Final = re.compile(rb"([2-5][0-5][0-9])([ -]|\r?\n)")
_EVERYDAY_REPLY_RE: Final = re.compile(rb"([2-5][0-5][0-9]) ([\x20-\x7e]*)\r\n")
"""A reply as most are: one line, its text printable ASCII (``250 2.1.0 Ok``)."""


def parse_everyday_reply(line: bytes, *, enhanced: bool) -> Reply | None:
    """The reply a one-line reply in printable ASCII makes, or None for any other line.

    The common case, read in one match: no decoding to guess, no control
    character to mask, no other line to compare. For every line it takes, it
    gives what :class:`ReplyParser`'s general path gives (a property test holds
    them equal).
    """
    match = _EVERYDAY_REPLY_RE.fullmatch(line)
    if match is None:
        return None
    code = int(match[1])
    text = match[2].decode("ascii")
    if enhanced:
        first, _, rest = text.partition(" ")
        status = _enhanced_status(first)
        if status is not None and status.class_code == code // 100:
            return Reply(code, (rest,), status)
    return Reply(code, (text,))


_KNOWN_REPLIES: Final[tuple[dict[bytes, Reply], dict[bytes, Reply]]] = ({}, {})
_KNOWN_LINE: Final = 128
"""Longest line kept in :data:`_KNOWN_REPLIES`."""
_KNOWN_COUNT: Final = 256
"""Lines kept at most; a full table starts over."""


def known_replies(enhanced: bool) -> dict[bytes, Reply]:
    """The everyday replies read so far, by line, for sessions with (or without)
    enhanced status codes: what :func:`everyday_reply` gives for each line.

    A server answers with the same few lines message after message, and a
    :class:`Reply` is immutable, so each is read once; a machine looks its
    lines up here first. At most 256 lines of up to 128 octets are kept.
    """
    return _KNOWN_REPLIES[enhanced]


def everyday_reply(line: bytes, *, enhanced: bool) -> Reply | None:
    """:func:`parse_everyday_reply`, remembered in :func:`known_replies`."""
    known = _KNOWN_REPLIES[enhanced]
    reply = known.get(line)
    if reply is None:
        reply = parse_everyday_reply(line, enhanced=enhanced)
        if reply is not None and len(line) <= _KNOWN_LINE:
            if len(known) >= _KNOWN_COUNT:
                known.clear()
            known[line] = reply
    return reply


@functools.lru_cache(maxsize=64)
def _enhanced_status(text: str) -> EnhancedStatus | None:
    """``text`` as an enhanced status code (RFC 2034 §3), or None: a server uses a few,
    over and over, so each is read once."""
    match = _STATUS_RE.fullmatch(text)
    if match is None:
        return None
    return EnhancedStatus(int(match[1]), int(match[2]), int(match[3]))


class ReplyParser:
    """Reads replies from bytes, for the client side.

    A reply line longer than ``max_line_length`` or a reply of more than
    ``max_lines`` lines raises :class:`RemoteProtocolError`: a server that
    never ends a line or a reply cannot grow the client's memory. Enhanced
    status codes are split off the text when ``enhanced`` is true and every
    line carries the same code (RFC 2034 §3). A character unsafe in text (a C0
    or C1 control, a format or separator character: RFC 5198 §2) comes out as
    ``?``, so that no consumer of the text (a report, a log, a screen) meets one.

    A reply line ends at LF, the CR before it dropped if there is one: a server
    whose lines end in a bare LF is read as smtplib and Postfix's client read it,
    rather than never being given the mail. The server side reads commands by the
    strict rule (RFC 5321 §2.3.8, the SMTP smuggling defence); on this side a line
    end only separates replies, whose codes, lengths and count are checked alike.
    """

    def __init__(self, *, max_line_length: int = 2048, max_lines: int = 200) -> None:
        self.max_line_length = max_line_length
        self.max_lines = max_lines
        self._lines: list[str] = []
        self._code: int | None = None

    @property
    def held(self) -> int:
        """Characters of a multi-line reply read so far and not yet returned."""
        return sum(len(line) for line in self._lines)

    def next_reply(self, buffer: ReceiveBuffer, *, enhanced: bool) -> Reply | None:
        """Return the next complete reply from ``buffer``, or None if not complete.

        A line past the limit is an error once the limit is reached, ended or not,
        for every line of a reply: where the bytes were split does not matter."""
        limit = self.max_line_length
        while True:
            line = buffer.next_line(limit)
            if line is None:
                if buffer.discarding or len(buffer) >= limit:
                    raise RemoteProtocolError(f"reply line longer than {limit} octets")
                return None
            if line is LINE_TOO_LONG:
                raise RemoteProtocolError(f"reply line longer than {limit} octets")
            reply = None if self._lines else everyday_reply(line, enhanced=enhanced)
            if reply is None:
                reply = self.read_line(line, enhanced=enhanced)
            if reply is not None:
                return reply

    def read_line(self, line: bytes, *, enhanced: bool) -> Reply | None:
        """Take one reply line, LF included, by the general rules: the reply once its
        last line is in, else None."""
        match = _REPLY_LINE_RE.match(line)
        if match is None:
            raise RemoteProtocolError(f"malformed reply line {line[:80]!r}")
        code = int(match[1])
        if self._code is not None and code != self._code:
            raise RemoteProtocolError("reply code changed inside a multi-line reply")
        self._code = code
        # A bare LF ends a reply line too, as smtplib and Postfix's client read it:
        # the CR before it is dropped if there is one (see the class docstring).
        end = -2 if line.endswith(b"\r\n") else -1
        body = line[4:end]
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = body.decode("latin-1")
        if not text.isprintable():  # the everyday case, in C; HTAB goes on to be kept
            text = replace_unsafe(text, _masked)
        self._lines.append(text)
        if len(self._lines) > self.max_lines:
            raise RemoteProtocolError("reply has too many lines")
        if match[2] == b"-":
            return None
        lines, self._lines, self._code = self._lines, [], None
        return _build_reply(code, lines, enhanced)


def _masked(char: str) -> str:
    """What a character unsafe in text (RFC 5198 §2: C0 and C1 controls, format and
    separator characters) becomes in a reply read: a client shows the rest as it is."""
    return "?"


def _build_reply(code: int, lines: Sequence[str], enhanced: bool) -> Reply:
    status = None
    if enhanced:
        statuses = {line.split(" ", 1)[0] for line in lines}
        if len(statuses) == 1:
            (candidate,) = statuses
            match = _STATUS_RE.fullmatch(candidate)
            if match is not None and int(match[1]) == code // 100:
                status = EnhancedStatus(int(match[1]), int(match[2]), int(match[3]))
                lines = [line[len(candidate) + 1 :] for line in lines]
    return Reply(code, tuple(lines), status)
