"""The POP3 battery's reading of responses: a status line, a multi-line body up to
its terminating dot line, and the bounds on both, as a client that trusts nothing reads
them.

The checks talk to servers written in any language, so, as the SMTP battery,
they write raw lines on a :class:`~smtpcore.testing._wire.WireClient` and
frame the responses themselves (RFC 1939 §3): a status line, and after a
``+OK`` to a command that has a multi-line response, lines up to a lone dot.
Framing is apart from the probe (:mod:`~smtpcore.testing._pop3_probe`), which
logs in and ends sessions: a check that reads a response by itself (a pipelined
burst, a stalled body) needs the framing and nothing of the login or the mailbox.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Final

from smtpcore._numbers import parse_number
from smtpcore.testing._battery import Failed
from smtpcore.testing._wire import LineOverLimit, WireClient

__all__ = [
    "OverlongResponse",
    "POP3Response",
    "ResponseBound",
    "StalledResponse",
    "ask",
    "has_multi_line_response",
    "lines_of",
    "read_answer",
    "read_response",
    "status_and_code",
    "wire_number",
]

_TERMINATOR: Final = b".\r\n"


_LINE: Final = re.compile(rb"[^\n]*\n")
_STUFFING_DOT: Final = re.compile(rb"^\.", re.MULTILINE)


_STATUS_AND_CODE: Final = re.compile(
    rb"(?:\+OK|-ERR)(?: \[(?:IN-USE|LOGIN-DELAY|SYS/TEMP|SYS/PERM|AUTH|UTF8)\])?|\+(?![^ \r\n])",
    re.IGNORECASE,
)
"""A status indicator and a registered response code after it (RFC 2449 §8.1, RFC 3206
§4, RFC 6856 §3), or an AUTH continuation's ``+`` (RFC 5034 §4): a code is free text to
a server that quotes a password in it."""


_MAX_NUMBER_DIGITS: Final = 20
"""Digits a message number or an octet count may have: more than any mailbox holds."""


@dataclass(frozen=True)
class POP3Response:
    """One response: its status line and, for a multi-line one, its ``body``: the
    lines as sent (line ends and stuffing dots kept, the terminating dot left out),
    in one bytes object, for a message may have millions of lines."""

    status: bytes
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status.startswith(b"+OK")

    @property
    def err(self) -> bool:
        return self.status.startswith(b"-ERR")

    @property
    def lines(self) -> list[bytes]:
        """The body's lines (see :func:`lines_of`)."""
        return lines_of(self.body)

    def content(self) -> bytes:
        """The body with the stuffing dot taken off each line that starts with one."""
        return _STUFFING_DOT.sub(b"", self.body)

    def __str__(self) -> str:
        return repr(self.status.rstrip(b"\r\n"))[1:]

    def without_text(self) -> str:
        """The status indicator and the registered extended response code, if any
        (``-ERR [AUTH]``, RFC 2449 §8), without the text: what a refused login is told by,
        for a server may quote there the credentials it refused, in forms the
        battery cannot all foresee (in parentheses, a short password in a word)."""
        return repr(status_and_code(self.status))[1:]


def status_and_code(line: bytes) -> bytes:
    """``line``'s status indicator and registered response code (``-ERR [AUTH]``), or
    an AUTH continuation's ``+``; empty where it starts with neither."""
    found = _STATUS_AND_CODE.match(line)
    return found.group(0) if found else b""


def lines_of(text: bytes) -> list[bytes]:
    """``text``'s lines, each with its line end: a line ends at LF alone, where
    ``bytes.splitlines`` would cut at a bare CR too."""
    return _LINE.findall(text)


def wire_number(word: bytes) -> int | None:
    """A message number or octet count a server sent: 1 to 20 ASCII digits, else None
    (RFC 1939 §3; ``int()`` takes other digits, and raises past 4300 of them)."""
    return parse_number(word.decode("latin-1"), max_digits=_MAX_NUMBER_DIGITS)


def has_multi_line_response(command: bytes) -> bool:
    """Whether a ``+OK`` to ``command`` starts a multi-line response: RETR, TOP, CAPA,
    and LIST and UIDL without an argument (RFC 1939 §5, §7; RFC 2449 §5)."""
    words = command.split(b" ")
    verb = words[0].upper()
    return verb in (b"RETR", b"TOP", b"CAPA") or (verb in (b"LIST", b"UIDL") and len(words) == 1)


@dataclass(frozen=True)
class ResponseBound:
    """The most ``octets`` a multi-line response's body may bring, and the ``reason`` no
    sound response brings more (said in the failure): a check that needs a header
    need not hold what a broken server sends in place of one. With ``kept``, the
    body keeps its first whole lines up to that many octets and the rest is counted
    and dropped as it streams: a look for a marker near the top holds no more of a
    message, however large a sound server's answer."""

    octets: int
    reason: str
    kept: int | None = None


class OverlongResponse(Failed):
    """A multi-line response to ``command`` that ran past its ``bound``: the battery
    stopped reading, and the connection, out of step, is closed without QUIT."""

    def __init__(self, command: bytes, bound: ResponseBound) -> None:
        super().__init__(
            f"the response to {command.decode('ascii', 'replace')} ran over {bound.octets} "
            f"octets without the terminating dot line ({bound.reason}): the battery stopped "
            "reading it, and closed the connection without QUIT"
        )
        self.command = command
        self.bound = bound


def read_response(
    client: WireClient,
    *,
    multi_line: bool,
    bound: ResponseBound | None = None,
    command: bytes = b"",
) -> POP3Response | None:
    """The next response, or None where the server closed before its status line.
    The whole response has one deadline, ``timeout`` from now, however its lines
    trickle in; its octets are bounded by the connection's
    (:data:`~smtpcore.testing._wire.MAX_RECEIVED`), and a body by ``bound``, where
    given (:class:`OverlongResponse`, naming ``command``). A multi-line response cut
    short by the close fails the check."""
    deadline = time.monotonic() + client.timeout
    status = client.read_line(deadline)
    if status is None:
        return None
    if not (multi_line and status.startswith(b"+OK")):
        return POP3Response(status)
    body = bytearray()
    taken = 0
    kept = None if bound is None else bound.kept
    try:
        while (line := _body_line(client, deadline, bound, taken, command)) != _TERMINATOR:
            if line is None:
                raise Failed(
                    f"the server closed the connection inside the multi-line response to "
                    f"{status!r} (no terminating dot line, RFC 1939 §3)"
                )
            taken += len(line)
            if kept is None or (len(body) == taken - len(line) and taken <= kept):
                body += line
            if bound is not None and taken > bound.octets:
                client.stop_reading(f"a response past {bound.octets} octets")
                raise OverlongResponse(command, bound)
    except TimeoutError:
        raise StalledResponse(POP3Response(status, bytes(body))) from None
    return POP3Response(status, bytes(body))


def _body_line(
    client: WireClient,
    deadline: float,
    bound: ResponseBound | None,
    taken: int,
    command: bytes,
) -> bytes | None:
    """The next line of a body that brought ``taken`` octets so far, read no further
    than ``bound`` and the terminating dot line allow."""
    if bound is None:
        return client.read_line(deadline)
    try:
        return client.read_line(deadline, limit=bound.octets - taken + len(_TERMINATOR))
    except LineOverLimit:
        raise OverlongResponse(command, bound) from None


class StalledResponse(TimeoutError):
    """A multi-line response whose terminating dot line did not come in time;
    ``partial`` holds what came. A timeout to every check; only one that knows what
    the response should hold can tell more (a line that merely ends in a period
    looks like a last line sent without CRLF before ``.CRLF``, RFC 1939 §3)."""

    def __init__(self, partial: POP3Response) -> None:
        super().__init__(f"the multi-line response to {partial.status!r} stalled")
        self.partial = partial


def ask(client: WireClient, command: bytes, *, bound: ResponseBound | None = None) -> POP3Response:
    """Send ``command`` (CRLF added) and read its response, its body within ``bound``
    where given; a close where the response was due fails the check: a session that
    dies on a command is a crash."""
    client.send(command + b"\r\n")
    return read_answer(client, command, bound)


def read_answer(
    client: WireClient, command: bytes, bound: ResponseBound | None = None
) -> POP3Response:
    """The response to ``command``, just sent, its body within ``bound`` where given; a
    close where it was due fails the check."""
    multi_line = has_multi_line_response(command)
    answer = read_response(client, multi_line=multi_line, bound=bound, command=command)
    if answer is None:
        shown = command.decode("utf-8", "replace")
        raise Failed(f"the server closed the connection instead of answering {shown!r}")
    return answer
