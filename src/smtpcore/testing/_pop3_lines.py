"""Strategies for POP3 lines as bytes, valid and hostile: what a client writes
(every command of RFC 1939 and its extensions, and lines built from their
grammar with hostile numbers) and pieces of what a server writes. A broken
line is no event, so these are bytes, kept apart from the events of
``_pop3_strategies`` and ``_pop3_answers``.
"""

from __future__ import annotations

import functools
from typing import Final

from hypothesis import strategies as st

from smtpcore import pop3
from smtpcore.pop3._commands import format_command
from smtpcore.testing._numbers import hostile_numbers
from smtpcore.testing._pop3_strategies import POP3_CAPABILITIES, pop3_commands

__all__ = ["pop3_command_lines", "pop3_response_lines"]

_VALID_LINES: Final = (
    b"USER mrose\r\n",
    b"PASS secret\r\n",
    b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
    b"AUTH\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN AHUAcA==\r\n",
    b"AHUAcA==\r\n",
    b"*\r\n",
    b"CAPA\r\n",
    b"STLS\r\n",
    b"UTF8\r\n",
    b"STAT\r\n",
    b"LIST\r\n",
    b"LIST 1\r\n",
    b"RETR 1\r\n",
    b"DELE 1\r\n",
    b"TOP 1 0\r\n",
    b"UIDL\r\n",
    b"UIDL 1\r\n",
    b"NOOP\r\n",
    b"RSET\r\n",
    b"QUIT\r\n",
)
_HOSTILE_LINES: Final = (
    b"DELE 0\r\n",
    b"RETR -1\r\n",
    b"RETR \xd9\xa3\r\n",
    b"TOP 1\r\n",
    b"LIST 1 2\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"RETR " + b"9" * 300 + b"\r\n",
    b"USER " + b"x" * 300 + b"\r\n",
    b"STAT\x00\r\n",
    b"\xff\xfe\r\n",
)


_ARGUMENT_SLOTS: Final[dict[str, tuple[str, ...]]] = {
    "USER": ("name",),
    "PASS": ("name",),
    "APOP": ("name", "digest"),
    "AUTH": ("mechanism", "base64"),
    "CAPA": (),
    "STLS": (),
    "UTF8": (),
    "STAT": (),
    "LIST": ("number",),
    "RETR": ("number",),
    "DELE": ("number",),
    "NOOP": (),
    "RSET": (),
    "TOP": ("number", "number"),
    "UIDL": ("number",),
    "QUIT": (),
}
"""Each command's arguments, by kind: RFC 1939 §4-7, CAPA (RFC 2449 §5), STLS
(RFC 2595 §4), AUTH (RFC 5034 §4), UTF8 (RFC 6856 §3). LIST's and UIDL's
number is optional; ``number`` is the kind the hostile lines attack."""

_COMMAND_LINE_OCTETS: Final = 255
"""The longest command line a POP3 server must take, CRLF included (RFC 2449 §4):
the room every number slot's digits share with the rest of the line."""


_SLOT_VALUES: Final[dict[str, st.SearchStrategy[str]]] = {
    "number": st.just("1"),
    "name": st.sampled_from(["mrose", "1", "-1"]),
    "digest": st.just("c4c9334bac560ecc979e58001b3e22fb"),
    "mechanism": st.sampled_from(["PLAIN", "LOGIN", "X"]),
    "base64": st.sampled_from(["AHUAcA==", "=", "*"]),
}
"""What goes in each kind of argument slot when it is not the one attacked: a valid
message number in a number's, plain tokens in the others (their own attacks are in
:data:`_HOSTILE_LINES`)."""


def _command_line(verb: str, words: list[str]) -> bytes:
    return (" ".join([verb, *words]) + "\r\n").encode("utf-8")


@functools.cache
def _hostile_numbers_in(room: int) -> st.SearchStrategy[str]:
    """Hostile numbers for a slot with ``room`` octets left on the line: its digit
    runs reach the line's end and just past it, so numbers too long for a parser
    yet inside the line limit are drawn, not only lines the limit refuses first.
    Cached: ``room`` is at most :data:`_COMMAND_LINE_OCTETS`."""
    return hostile_numbers(max_digits=max(room, 1))


@st.composite
def _grammar_lines(draw: st.DrawFn, verbs: tuple[str, ...]) -> bytes:
    """One of ``verbs`` with its argument slots filled; sometimes one argument short
    or one too many (the extra one a number), so every argument count is tried.

    One number slot a line gets a hostile number and the others a valid one
    (``TOP 1 -1``): with every slot hostile, a parser that refused the first
    never read the next, so TOP's count went unread behind a bad message number."""
    verb = draw(st.sampled_from(verbs))
    slots = _ARGUMENT_SLOTS[verb]
    count = draw(st.one_of(st.just(len(slots)), st.integers(0, len(slots) + 1)))
    kinds = [*slots, "number"][:count]
    words = [draw(_SLOT_VALUES[kind]) for kind in kinds]
    numbers = [index for index, kind in enumerate(kinds) if kind == "number"]
    if numbers:
        attacked = draw(st.sampled_from(numbers))
        room = _COMMAND_LINE_OCTETS - len(_command_line(verb, words)) + len(words[attacked])
        words[attacked] = draw(_hostile_numbers_in(room))
    return _command_line(verb, words)


_NUMBERED_VERBS: Final = tuple(
    verb for verb, slots in _ARGUMENT_SLOTS.items() if "number" in slots
)


def pop3_command_lines(*, hostile: bool = False) -> st.SearchStrategy[bytes]:
    """One client line, CRLF included: every command of RFC 1939 and its
    extensions (RFC 2449, 2595, 5034, 6856), the wire form of
    :func:`pop3_commands` with every capability listed, QUIT, and SASL
    responses; ``hostile=True`` adds lines built from the grammar: every
    command with each number slot (LIST, RETR, DELE, UIDL, both of TOP's)
    holding a hostile number in turn, the others a valid one (signed, zero,
    huge, over-long, digits that are not ASCII, empty, spaced, with trailing
    garbage: ``TOP 1 -1``), its digit runs as long as the room left on the
    255-octet line (RFC 2449 §4) and just longer, and every
    command with one argument too few or too many; and missing arguments,
    bare CR or LF, NUL, over-long lines and arbitrary bytes.

    >>> from hypothesis import given
    >>> from smtpcore import pop3
    >>> from smtpcore.testing import run_pop3_server
    >>> from smtpcore.testing import strategies as sst
    >>> sst.pop3_command_lines(hostile=True).example()  # doctest: +SKIP
    b'RETR \\xd9\\xa3\\r\\n'
    >>> @given(sst.pop3_command_lines(hostile=True))
    ... def test_memory_stays_bounded(line):
    ...     server = pop3.ServerConnection("pop.test")
    ...     server.send(pop3.Ok("ready"))
    ...     run_pop3_server(server, line)
    ...     assert server.buffered <= server.max_buffered + len(line)
    >>> test_memory_stays_bounded()
    """
    events = st.one_of(
        pop3_commands(login=True, capabilities=POP3_CAPABILITIES | {"UTF8"}),
        st.just(pop3.Quit()),
        st.builds(pop3.AuthResponse, st.binary(max_size=30)),
        st.just(pop3.AuthResponse(cancel=True)),
    )
    valid = st.one_of(st.sampled_from(_VALID_LINES), events.map(format_command))
    if not hostile:
        return valid
    return st.one_of(
        valid,
        st.sampled_from(_HOSTILE_LINES),
        _grammar_lines(_NUMBERED_VERBS),
        _grammar_lines(tuple(_ARGUMENT_SLOTS)),
        st.binary(max_size=30),
    )


_VALID_RESPONSES: Final = (
    b"+OK\r\n",
    b"+OK 2 320\r\n",
    b"-ERR [IN-USE] locked\r\n",
    b"-ERR\r\n",
    b"+ \r\n",
    b"+ AAAA\r\n",
    b".\r\n",
    b"..x\r\n",
    b"line\r\n",
    b"PIPELINING\r\n",
)
_HOSTILE_RESPONSES: Final = (
    b"\r\n",
    b"\r",
    b"\n",
    b"+OK " + b"x" * 3000 + b"\r\n",
    b"+ok\r\n",
    b"OK\r\n",
    b"-ERR [UNTERMINATED\r\n",
    b"+OK\n",
    b"+ not base64!\r\n",
    b".\n",
)


def pop3_response_lines(*, hostile: bool = False) -> st.SearchStrategy[bytes]:
    """Pieces of what a POP3 server writes: status lines, SASL challenges,
    content lines and the terminator; ``hostile=True`` adds lowercase or
    missing status indicators, bare CR or LF, over-long lines, unterminated
    response codes and arbitrary bytes.

    >>> from hypothesis import given
    >>> from smtpcore import ProtocolError, pop3
    >>> from smtpcore.testing import strategies as sst
    >>> sst.pop3_response_lines(hostile=True).example()  # doctest: +SKIP
    b'-ERR [UNTERMINATED\\r\\n'
    >>> @given(sst.pop3_response_lines(hostile=True))
    ... def test_a_greeting_is_read_or_refused(line):
    ...     client = pop3.ClientConnection("client.test")
    ...     client.receive_data(line)
    ...     try:
    ...         client.next_event()
    ...     except ProtocolError:
    ...         pass  # refused: anything else escaping is a bug
    >>> test_a_greeting_is_read_or_refused()
    """
    valid = st.sampled_from(_VALID_RESPONSES)
    if not hostile:
        return valid
    return st.one_of(valid, st.sampled_from(_HOSTILE_RESPONSES), st.binary(max_size=30))
