"""POP3 servers that end lines with a bare LF, on every adapter.

RFC 1939 §3 ends every line with CRLF, and only CRLF.CRLF ends a multi-line
answer: LF "." LF is content. A status line ended by LF is read, as poplib and
mpop read it, so a message whose content holds LF "." LF comes whole from a
server whose greeting or status lines end with LF.
"""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from peers import ADAPTERS, run
from smtpcore import NEED_DATA, PAUSED
from smtpcore.pop3 import (
    Capa,
    ClientConnection,
    EndOfResponse,
    Ok,
    Pass,
    ResponseData,
    Retr,
    User,
)
from smtpcore.testing import Expect, ExpectClose, ScriptedServer, Send, Step

MESSAGE = b"Subject: x\r\n\r\nbody\n.\nmore text\r\nlast\r\n"
"""Bare-LF lines, one of them a single dot: content, since no CRLF comes before it."""


def _fetch(adapter: str, steps: list[Step]) -> bytes:
    """Log in, list, and fetch message 1 from a server playing ``steps``."""
    got: list[bytes] = []
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    options: dict[str, Any] = {"stls": False, "allow_plaintext_auth": True}
    with ScriptedServer(steps) as server:
        if adapter == "sync":
            with module.POP3Client("127.0.0.1", server.port, timeout=60, **options) as client:
                client.login("u", "p")
                client.list()
                got.append(client.retrieve(1))
        else:

            async def session() -> None:
                async with module.POP3Client("127.0.0.1", server.port, **options) as client:
                    await client.login("u", "p")
                    await client.list()
                    got.append(await client.retrieve(1))

            run(adapter, session)
    [message] = got
    return message


@pytest.mark.parametrize("every_status_line", [True, False], ids=["status-lf", "greeting-lf"])
@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_lf_dot_lf_in_content_after_lf_status_lines_is_delivered(
    adapter: str, every_status_line: bool
) -> None:
    """Every status line ended by LF, or only the greeting: the mail comes whole."""
    end = b"\n" if every_status_line else b"\r\n"
    steps: list[Step] = [
        Send(b"+OK POP3 ready\n"),
        Expect(b"CAPA"),
        Send(b"+OK" + end + b"USER\r\n.\r\n"),
        Expect(b"USER u"),
        Send(b"+OK" + end),
        Expect(b"PASS p"),
        Send(b"+OK" + end),
        Expect(b"CAPA"),
        Send(b"+OK" + end + b"USER\r\n.\r\n"),
        Expect(b"LIST"),
        Send(b"+OK" + end + b"1 %d\r\n.\r\n" % len(MESSAGE)),
        Expect(b"RETR 1"),
        Send(b"+OK" + end + MESSAGE + b".\r\n"),
        Expect(b"QUIT"),
        Send(b"+OK bye" + end),
        ExpectClose(),
    ]
    assert _fetch(adapter, steps) == MESSAGE


def test_the_machine_hands_on_pipelined_answers_after_an_lf_greeting() -> None:
    """Two RETR answers in one read after an LF greeting, the second holding LF.LF:
    both come whole, each ended by its own CRLF.CRLF."""
    conn = ClientConnection("c.test", pipelining=True)
    conn.receive_data(b"+OK ready\n")
    assert conn.next_event() == Ok("ready")
    for command in (User("u"), Pass("p")):
        conn.send(command)
        conn.receive_data(b"+OK\r\n")
        assert conn.next_event() == Ok("")
    conn.send(Retr(1))
    conn.send(Retr(2))
    conn.receive_data(b"+OK\r\nmessage 1\r\n.\r\n+OK\r\nmessage 2\n.\nrest\r\n.\r\n")
    events = [conn.next_event() for _ in range(6)]
    assert events == [
        Ok(""),
        ResponseData(b"message 1\r\n"),
        EndOfResponse(),
        Ok(""),
        ResponseData(b"message 2\n.\nrest\r\n"),
        EndOfResponse(),
    ]
    assert conn.next_event() is PAUSED


def _connect_timeout(adapter: str, steps: list[Step]) -> BaseException:
    """The ``POP3Timeout`` that connecting to a server playing ``steps`` raises."""
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    errors: list[BaseException] = []
    with ScriptedServer(steps) as server:
        if adapter == "sync":
            client = module.POP3Client("127.0.0.1", server.port, timeout=0.5, stls=False)
            with pytest.raises(module.POP3Timeout) as info:
                client.connect()
            errors.append(info.value)
        else:

            async def session() -> None:
                timeouts = module.POP3Timeouts.uniform(0.5)
                client = module.POP3Client("127.0.0.1", server.port, stls=False, timeouts=timeouts)
                with pytest.raises(module.POP3Timeout) as info:
                    await client.connect()
                errors.append(info.value)

            run(adapter, session)
    [error] = errors
    return error


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_server_that_ends_every_line_with_a_bare_lf_times_out_naming_it(adapter: str) -> None:
    """Its CAPA listing, at connect, never ends (LF.LF is content): the timeout says
    why, where it said only that nothing more came."""
    steps: list[Step] = [
        Send(b"+OK POP3 ready\n"),
        Expect(b"CAPA"),
        Send(b"+OK\nUSER\n.\n"),
        ExpectClose(),
    ]
    error = _connect_timeout(adapter, steps)
    assert 'a line "." ended by a bare LF; RFC 1939 requires CRLF' in str(error)
    assert "LF.LF is content here" in str(error)


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_listing_ended_by_lf_dot_lf_behind_a_crlf_status_line_times_out_naming_it(
    adapter: str,
) -> None:
    """Greeting ended by LF, CAPA's ``+OK`` by CRLF, its listing by LF "." LF: the hang
    is the LF.LF's, and the timeout says so, where it was the plain one once the flag
    told of the last status line alone."""
    steps: list[Step] = [
        Send(b"+OK POP3 ready\n"),
        Expect(b"CAPA"),
        Send(b"+OK\r\nUSER\n.\n"),
        ExpectClose(),
    ]
    error = _connect_timeout(adapter, steps)
    assert 'a line "." ended by a bare LF' in str(error)


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_listing_opened_by_a_crlf_line_times_out_without_blaming_an_lf_greeting(
    adapter: str,
) -> None:
    """Only the greeting ended with a bare LF; the ``+OK`` of CAPA ended with CRLF, so
    its listing is not ended by the LF.LF of a server that writes LF: the timeout is
    the plain one, where it blamed the greeting's LF for the rest of the session."""
    steps: list[Step] = [
        Send(b"+OK POP3 ready\n"),
        Expect(b"CAPA"),
        Send(b"+OK\r\nUSER\r\n"),
        ExpectClose(),
    ]
    error = _connect_timeout(adapter, steps)
    assert "multi-line answer did not end" in str(error)
    assert "bare LF" not in str(error)


@pytest.mark.parametrize(
    ("greeting", "flagged"), [(b"+OK ready\r\n", False), (b"+OK ready\n", True)]
)
def test_the_machine_remembers_a_status_line_ended_by_a_bare_lf(
    greeting: bytes, flagged: bool
) -> None:
    conn = ClientConnection("c.test")
    conn.receive_data(greeting)
    assert conn.next_event() == Ok("ready")
    assert conn.bare_lf_status_line is flagged


def test_the_flag_tells_of_the_last_status_line_only() -> None:
    """A CRLF status line after an LF one clears it; an LF one after sets it again."""
    conn = ClientConnection("c.test")
    conn.receive_data(b"+OK ready\n")
    assert conn.next_event() == Ok("ready")
    assert conn.bare_lf_status_line
    flags = []
    for end in (b"\r\n", b"\n", b"\r\n"):
        conn.send(User("u"))
        conn.receive_data(b"+OK" + end)
        assert conn.next_event() == Ok("")
        flags.append(conn.bare_lf_status_line)
    assert flags == [False, True, False]


@pytest.mark.parametrize(
    ("listing", "told"),
    [
        (b".\n", True),
        (b"USER\n.\n", True),
        (b"USER\r\n.\n", True),
        (b"USER\n", False),
        (b"USER\r\n", False),
        (b"USER\n.\nTOP\n", False),
        (b"USER\n..\n", False),
    ],
)
def test_the_machine_tells_an_answer_whose_last_line_is_a_dot_ended_by_lf(
    listing: bytes, told: bool
) -> None:
    """Fed a byte at a time, whatever the chunks: the answer under way tells whether
    what it received last is a line "." ended by a bare LF; once CRLF.CRLF ends it,
    no answer is under way and it tells nothing."""
    conn = ClientConnection("c.test")
    conn.receive_data(b"+OK ready\r\n")
    assert conn.next_event() == Ok("ready")
    conn.send(Capa())
    for octet in b"+OK\r\n" + listing:
        conn.receive_data(bytes([octet]))
        while conn.next_event() not in (NEED_DATA, PAUSED):
            pass
    assert conn.bare_lf_dot_line is told
    conn.receive_data(b"\r\n.\r\n")
    while conn.next_event() not in (NEED_DATA, PAUSED):
        pass
    assert not conn.bare_lf_dot_line


def _calls_made(work: Callable[[], object]) -> list[str]:
    """The Python and C functions ``work`` calls, in order (``sys.setprofile``: exact
    and deaf to the machine's load; the collector off, as in :mod:`python_calls`)."""
    names: list[str] = []
    own = getattr(work, "__code__", None)

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is not own:
            names.append(frame.f_code.co_name)
        elif event == "c_call":
            names.append(getattr(arg, "__qualname__", repr(arg)))

    collecting = gc.isenabled()
    gc.disable()
    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
        if collecting:
            gc.enable()
    return [name for name in names if name != "setprofile"]


def test_watching_for_an_lf_dot_line_costs_a_read_of_content_no_call() -> None:
    """A read of RETR content costs one decode, and keeping the last octets it
    consumed for :attr:`ClientConnection.bare_lf_dot_line` added a call to each
    (``max``): 0.7% more calls on 64 KiB reads, 2.2% on 1,460-octet segments. The
    slice is now bounded inline: the calls of a read are those of the decode itself."""
    conn = ClientConnection("c.test")
    conn.receive_data(b"+OK ready\r\n")
    conn.next_event()
    for command in (User("u"), Pass("p")):
        conn.send(command)
        conn.receive_data(b"+OK\r\n")
        conn.next_event()
    conn.send(Retr(1))
    segment = (b"x" * 70 + b"\r\n") * 20
    conn.receive_data(b"+OK\r\n" + segment)
    events: list[object] = [conn.next_event(), conn.next_event(), conn.next_event()]
    assert events[1:] == [ResponseData(segment), NEED_DATA]

    def read() -> None:
        conn.receive_data(segment)
        events[:] = [conn.next_event(), conn.next_event()]

    calls = _calls_made(read)
    assert events == [ResponseData(segment), NEED_DATA]
    assert len(calls) == 28, calls
