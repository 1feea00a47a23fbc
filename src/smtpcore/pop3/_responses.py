"""Reading status lines, and the content helpers both sides use.

A client reads ``+OK``, ``-ERR`` and ``+`` status lines (RFC 1939 §3,
RFC 5034 §4) into events. The other functions here turn the text of common
answers into values (STAT, scan and unique-id listings, CAPA) or values into
response lines, so that applications do not each write their own.

Their words are separated by SPACE alone, as a command's are
(``split_words``): RFC 1939 §5 gives a scan
listing as the number, a single space and the size, §7 a unique-id listing as
the number, a single space and the unique-id. Read with ``str.split()``,
``1\u00a0abc`` was message 1's unique-id ``abc``, where mpop, splitting at the
space, finds none (fetchmail and mutt split at any white space): a client that
deletes what it has fetched must not decide which message that is by a reading
clients disagree on, so such a line is a ``RemoteProtocolError``. What follows
a size is free (RFC 1939 §5): the size ends at any white space.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, TypeVar

from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._numbers import parse_number
from smtpcore._textsafe import replace_unsafe
from smtpcore._words import ascii_upper
from smtpcore.pop3._arguments import check_iterable, checked_text
from smtpcore.pop3._commands import CommandSyntaxError, decode_base64, split_words
from smtpcore.pop3._events import MAX_MESSAGE_NUMBER, Continue, Err, Ok, Response

__all__ = [
    "format_lines",
    "parse_capabilities",
    "parse_listing",
    "parse_stat",
    "parse_status_line",
    "parse_uid_listing",
]

_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_RE: Final = re.compile(r"(\+OK|-ERR)(?: (.*)|)", re.IGNORECASE | re.DOTALL | re.ASCII)
_UNIQUE_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,70}")


def parse_status_line(line: bytes, *, continuation: bool = False) -> Response:
    """Read one status line, line ending removed, into ``Ok``, ``Err`` or ``Continue``.

    ``continuation`` allows ``+ base64`` (an AUTH exchange is under way).
    Text that is not UTF-8 or holds characters unsafe in text (controls, C1 among
    them, format and separator characters: :mod:`smtpcore._textsafe`) is kept
    readable (replacement characters) rather than refused: it is only text.
    """
    text = line.decode("utf-8", "replace")
    match = _STATUS_RE.fullmatch(text)
    if match is not None:
        rest = replace_unsafe(match[2] or "", _masked)
        return Ok(rest) if match[1][0] == "+" else Err(rest)
    if continuation and (text == "+" or text.startswith("+ ")):
        try:
            return Continue(decode_base64(text[2:].strip(" ")))
        except CommandSyntaxError:
            raise RemoteProtocolError("invalid base64 in an AUTH challenge") from None
    raise RemoteProtocolError(f"not a POP3 status line: {text[:80]!r}")


def _masked(char: str) -> str:
    """What a status line's character unsafe in text is read as: a C1 control (the 8-bit
    CSI, U+009B), a line separator or a bidi override is no text (RFC 5198 §2), as in
    an SMTP reply."""
    return "\ufffd"


def _lines(data: object, helper: str) -> list[str]:
    """The lines of multi-line content, ended by LF (CRLF on the wire, RFC 1939 §3) and
    nothing else: ``str.splitlines`` would also end one at a form feed, a NEL or a
    U+2028, which may stand in the text after a listing's numbers."""
    return [
        line.removesuffix("\r") for line in checked_text(data, helper, octets=True).split("\n")
    ]


def _count(word: str, what: str) -> int:
    number = parse_number(word, max_digits=20)
    if number is None:
        raise RemoteProtocolError(f"{what} is not a number: {word[:20]!r}")
    return number


def _message_number(word: str) -> int:
    """A listing's message number: RFC 1939 §5 numbers messages from 1, and no command
    can name one past :data:`MAX_MESSAGE_NUMBER`. A listing that gives such a number
    is the server's fault, found here, not when a RETR or DELE of it is refused as
    the caller's."""
    number = _count(word, "message number")
    if not 1 <= number <= MAX_MESSAGE_NUMBER:
        raise RemoteProtocolError(
            f"the server's listing names message {number}, where messages are numbered "
            f"from 1 to {MAX_MESSAGE_NUMBER} (RFC 1939 §5)"
        )
    return number


_T = TypeVar("_T", int, str)


def _once(value: _T, seen: set[_T], what: str) -> _T:
    """``value``, the first time a listing gives it (kept in ``seen``)."""
    if value in seen:
        raise RemoteProtocolError(f"{what} {value!r} twice in a listing")
    seen.add(value)
    return value


def _size_word(word: str) -> str:
    """``word`` up to its first white space of any kind: RFC 1939 §5 makes no
    requirement on what follows the size in a drop or scan listing, and every
    client (poplib, fetchmail, mpop) reads the size to there, so ``320\toctets`` is
    320. What comes before the size is held to the single SPACE."""
    for index, character in enumerate(word):
        if character.isspace():
            return word[:index]
    return word


def parse_stat(text: str) -> tuple[int, int]:
    """``(count, size)`` from the text of a ``+OK`` answering STAT (RFC 1939 §5).

    ``text`` is the response's ``text`` (``parse_stat(ok.text)``); anything but a
    ``str`` is a :class:`~smtpcore.LocalProtocolError` saying so.
    """
    words = split_words(checked_text(text, "parse_stat() text"))
    if len(words) < 2:
        raise RemoteProtocolError(f"not a drop listing: {text[:80]!r}")
    return _count(words[0], "message count"), _count(_size_word(words[1]), "maildrop size")


def parse_listing(data: bytes | bytearray | memoryview | str) -> list[tuple[int, int]]:
    """``(number, size)`` pairs from LIST content, or from the text of ``+OK`` to ``LIST n``.

    RFC 1939 §5 lets anything follow the size; it is ignored. A message listed
    twice is a ``RemoteProtocolError``: the listing has a line for each message, and
    which of two sizes is the message's, nobody can say. So is a message number of
    0 or past :data:`MAX_MESSAGE_NUMBER`, which no command could name.
    """
    pairs = []
    numbers: set[int] = set()
    for line in _lines(data, "parse_listing() data"):
        words = split_words(line)
        if not words:
            continue
        if len(words) < 2:
            raise RemoteProtocolError(f"not a scan listing: {line[:80]!r}")
        number = _once(_message_number(words[0]), numbers, "message number")
        pairs.append((number, _count(_size_word(words[1]), "message size")))
    return pairs


def parse_uid_listing(
    data: bytes | bytearray | memoryview | str, *, allow_repeated_uids: bool = False
) -> list[tuple[int, str]]:
    """``(number, unique-id)`` pairs from UIDL content, or from ``+OK`` to ``UIDL n``.

    A unique-id is 1 to 70 printable ASCII characters (RFC 1939 §7), and names one
    message of the maildrop: a message listed twice, or a unique-id given to two,
    is a ``RemoteProtocolError``. A client that keeps the unique-ids it has fetched
    (to leave mail on the server) would otherwise never fetch one of the two. A
    message number of 0 or past :data:`MAX_MESSAGE_NUMBER` is one too.
    ``allow_repeated_uids`` keeps a unique-id given to several messages for each, for
    a client that fetches such a server's mail all the same, those messages taken as
    having no unique-id; a message listed twice is refused still.
    """
    pairs = []
    numbers: set[int] = set()
    uids: set[str] = set()
    for line in _lines(data, "parse_uid_listing() data"):
        words = split_words(line)
        if not words:
            continue
        if len(words) < 2 or not _UNIQUE_ID_RE.fullmatch(words[1]):
            raise RemoteProtocolError(f"not a unique-id listing: {line[:80]!r}")
        number = _once(_message_number(words[0]), numbers, "message number")
        unique_id = words[1] if allow_repeated_uids else _once(words[1], uids, "unique-id")
        pairs.append((number, unique_id))
    return pairs


def parse_capabilities(data: bytes | bytearray | memoryview | str) -> dict[str, tuple[str, ...]]:
    """Capability tag (upper-cased) -> its arguments, from CAPA content (RFC 2449 §6)."""
    capabilities: dict[str, tuple[str, ...]] = {}
    for line in _lines(data, "parse_capabilities() data"):
        words = split_words(line)
        if words:
            capabilities[ascii_upper(words[0])] = tuple(words[1:])
    return capabilities


def format_lines(lines: Iterable[str]) -> bytes:
    """Multi-line content from text lines, each ended with CRLF, for :class:`ResponseData`.

    A line holding CR, LF or another control character is refused: it would
    make lines of its own (RFC 1939 §3).
    """
    check_iterable(lines, "format_lines() lines", "an iterable of str lines")
    out = []
    for line in lines:
        if _CONTROL_RE.search(checked_text(line, "a format_lines() line")):
            raise LocalProtocolError(f"a response line holds a control character: {line!r}")
        out.append(line.encode("utf-8") + b"\r\n")
    return b"".join(out)
