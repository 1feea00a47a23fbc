"""A client that pipelined commands, stopped, and never reads is disconnected at the
timeout even when the session's last replies were left to the transport to send.

A busy server holds a session's replies for the event loop's next pass (the
asyncio server's held writes, trio's at the end of the scheduler's batch), and
what the kernel does not take then waits for room while the session goes back to
waiting for its client. So when the timeout goes off the session waits to read,
not to write, and was not marked as after a write the client did not take: SMTP's
``421`` went behind those bytes under a whole command timeout again, and the close
waited the transport's close timeout for room (POP3's autologout, which writes
nothing, waited the close timeout). Now the driver asks the transport
(``waiting_to_send``) as the timeout goes off, and the goodbye is as after a cut
write: :data:`~smtpcore._driver._shutdown.LAST_WORDS` at most, and the close
cancelled.

Nothing here is timed with a stopwatch: the close timeout is made long
(:data:`CLOSE`), and an asyncio session must end before half of it has passed since
the timeout; every wait the session's clock is asked for after the timeout (but the
linger's, its own bound) is :data:`LAST_WORDS` at most, and one of them is the
cancelled close's (0). Trio's close shields itself within its close timeout, and
only a ``TrioTransport`` whose cancelled close drops what it holds ends at once:
on trio these tests check the driver's part, the waits.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import smtpcore._driver._session_closing
import smtpcore._driver._transport
import smtpcore._trio_transport
from peers import running_pop3_server, running_smtp_server, write_maildir
from smtpcore._asyncio_clock import AsyncioClock
from smtpcore._asyncio_raw_writes import WritingLayer
from smtpcore._asyncio_runner import SessionRunner
from smtpcore._driver._pop3_server_session import POP3ServerSession
from smtpcore._driver._served_session import ServedSession
from smtpcore._driver._shutdown import LAST_WORDS
from smtpcore._driver._smtp_server_session import ServerSession
from smtpcore._trio_held import HeldWrites
from smtpcore.asyncio import POP3Timeouts, Timeouts
from smtpcore.handler import Handler
from smtpcore.maildrop import MaildirStore
from smtpcore.trio import TrioClock, TrioTransport

TIMEOUT = 2.0
"""SMTP's ``command`` timeout, POP3's ``autologout``: longer than :data:`LAST_WORDS`,
so that a goodbye given a whole timeout again shows."""

LINGER = 2 * LAST_WORDS
"""The linger for these tests, longer than :data:`LAST_WORDS`: its own deadline is
left out of the waits checked."""

CLOSE = 30.0
"""The transports' close timeout for the asyncio tests: a session whose close waits
for it ends long after half of it has passed."""

TRIO_CLOSE = 3.0
"""The close timeout on trio, whose shielded close a cancellation does not shorten:
short, so that the test does not wait long for its end."""

BATCH = 10_000
"""Commands pipelined at once: 60,000 octets, one read of the session's, whose
replies are far more than a client that reads nothing leaves room for."""


@dataclass
class SessionWatch:
    """What the shared driver tells of a session: :attr:`wrote_and_waited` once a
    write of the session's own waited for room (not the case these tests make),
    :attr:`timed_out` once its timeout went off while it waited for its client,
    with :attr:`unsent_at_timeout` what the transport then said of bytes waiting
    to be sent, and :attr:`ended` once the session is over (its transport closed).
    :attr:`waits_after_timeout` holds the seconds of every deadline the session's
    clock was asked for after the timeout, but the linger's."""

    wrote_and_waited: threading.Event = field(default_factory=threading.Event)
    timed_out: threading.Event = field(default_factory=threading.Event)
    unsent_at_timeout: list[bool] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    lingering: bool = False
    waits_after_timeout: list[float | None] = field(default_factory=list)


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[SessionWatch]:
    watch = SessionWatch()
    send_all = ServedSession._send_all
    end = ServedSession._end
    linger = ServedSession._linger

    async def watched_send_all(session: ServedSession, data: bytes) -> None:
        if not watch.timed_out.is_set():
            watch.wrote_and_waited.set()
        await send_all(session, data)

    async def watched_end(session: ServedSession, *args: Any) -> None:
        try:
            await end(session, *args)
        finally:
            watch.ended.set()

    for protocol in (ServerSession, POP3ServerSession):
        close = protocol._close

        async def watched_close(session: Any, timed_out: bool, close: Any = close) -> bool:
            if timed_out:
                watch.unsent_at_timeout.append(session.transport.waiting_to_send())
                watch.timed_out.set()
            return bool(await close(session, timed_out))

        monkeypatch.setattr(protocol, "_close", watched_close)

    async def watched_linger(session: ServedSession) -> None:
        watch.lingering = True
        try:
            await linger(session)
        finally:
            watch.lingering = False

    monkeypatch.setattr(ServedSession, "_send_all", watched_send_all)
    monkeypatch.setattr(ServedSession, "_end", watched_end)
    monkeypatch.setattr(ServedSession, "_linger", watched_linger)
    for clock in (AsyncioClock, SessionRunner, TrioClock):
        deadline = clock.deadline

        def recorded(self: Any, seconds: float | None, deadline: Any = deadline) -> Any:
            if watch.timed_out.is_set() and not watch.lingering:
                watch.waits_after_timeout.append(seconds)
            return deadline(self, seconds)

        monkeypatch.setattr(clock, "deadline", recorded)
    monkeypatch.setattr(smtpcore._driver._session_closing, "LINGER", LINGER)
    monkeypatch.setattr(smtpcore._driver._transport, "CLOSE_TIMEOUT", CLOSE)
    yield watch


@pytest.fixture
def every_reply_held(monkeypatch: pytest.MonkeyPatch, adapter: str) -> None:
    """The server holds every write of replies, however long, for the event loop's next
    pass, as it holds a reply while other sessions run in the same pass (a busy
    server): what the kernel does not take then waits for room in the transport
    (asyncio's raw socket) or in a task of the server's (trio), while the session
    waits for its client. The session's socket is given a small send buffer as it
    first holds, so that the kernel leaves a rest however it would have grown it."""
    if adapter == "trio":
        hold = HeldWrites.hold

        def trio_hold(self: HeldWrites, transport: TrioTransport, data: bytes) -> int:
            small_send_buffer(transport._base.socket)  # type: ignore[attr-defined]
            return hold(self, transport, data)

        monkeypatch.setattr(HeldWrites, "holds", lambda self: True)
        monkeypatch.setattr(HeldWrites, "hold", trio_hold)
        monkeypatch.setattr(smtpcore._trio_transport, "HOLD_AT_MOST", 1 << 26)
        monkeypatch.setattr(smtpcore._driver._transport, "CLOSE_TIMEOUT", TRIO_CLOSE)
        return
    send_nowait = WritingLayer.send_nowait

    def held_send_nowait(self: WritingLayer, data: bytes) -> int:
        writes = self._writes
        if (
            writes is not None
            and self._inner is None
            and self._out is None
            and not self.is_closing()
        ):
            small_send_buffer(self._sock)
            return writes.hold(self, data)
        return send_nowait(self, data)

    monkeypatch.setattr(WritingLayer, "send_nowait", held_send_nowait)


def small_send_buffer(sock: Any) -> None:
    """Give the server's socket ``sock`` a small send buffer (which also stops the
    kernel from growing it)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


def never_reader() -> socket.socket:
    """A client socket whose receive buffer is tiny (set before it connects, so that its
    window stays small): the server's replies soon wait for room."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    return sock


def read_line_of(sock: socket.socket) -> bytes:
    line = bytearray()
    while not line.endswith(b"\r\n") and len(line) < 4096 and (octet := sock.recv(1)):
        line += octet
    return bytes(line)


def assert_goodbye_cut_short(adapter: str, watch: SessionWatch) -> None:
    """The timeout went off with replies left waiting, the session never waited in a
    write of its own (the premise); after the timeout no wait is longer than
    :data:`LAST_WORDS`, the close is cancelled (its deadline of 0), and on asyncio
    the session ends before half the close timeout has passed since the timeout."""
    assert watch.timed_out.wait(30), "the timeout never went off"
    assert watch.ended.wait(CLOSE / 2 if adapter == "asyncio" else 30), (
        "the session's close waited for room"
    )
    assert watch.unsent_at_timeout == [True], "no replies waited to be sent at the timeout"
    assert not watch.wrote_and_waited.is_set(), "a write of the session's waited for room"
    waits = watch.waits_after_timeout
    assert all(s is not None and s <= LAST_WORDS for s in waits), waits
    assert 0 in waits, f"the close was not cancelled: {waits}"


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_an_smtp_client_whose_replies_wait_to_be_sent_is_disconnected_at_the_timeout(
    adapter: str, watch: SessionWatch, every_reply_held: None
) -> None:
    """A client that pipelined HELPs, then stopped and read nothing, its replies left
    to the transport: the ``421`` waited behind them for a second command timeout
    (deadline 2.0 with ``command=2``), then the close for room. Now the ``421`` has
    :data:`LAST_WORDS` and the close is cancelled."""
    options: dict[str, Any] = {
        "max_junk_commands": 10**9,
        "timeouts": Timeouts(command=TIMEOUT),
    }
    with running_smtp_server(adapter, Handler(), **options) as server, never_reader() as sock:
        sock.connect(("127.0.0.1", server.port))
        assert read_line_of(sock).startswith(b"220 ")
        sock.sendall(b"HELO client.test\r\n")
        assert read_line_of(sock).startswith(b"250 ")
        sock.sendall(b"HELP\r\n" * BATCH)
        assert_goodbye_cut_short(adapter, watch)


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_pop3_client_whose_answers_wait_to_be_sent_is_disconnected_at_autologout(
    adapter: str, watch: SessionWatch, every_reply_held: None, tmp_path: Path
) -> None:
    """As above over POP3 with CAPAs: the autologout timer writes nothing, but the
    close waited the close timeout for room. Now it is cancelled."""
    write_maildir(tmp_path / "alice", [b"Subject: hi\r\n\r\nhello\r\n"])
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    timeouts = POP3Timeouts(autologout=TIMEOUT)
    with running_pop3_server(adapter, store, timeouts=timeouts) as server, never_reader() as sock:
        sock.connect(("127.0.0.1", server.port))
        assert read_line_of(sock).startswith(b"+OK")
        sock.sendall(b"USER alice\r\nPASS wonderland\r\n")
        assert read_line_of(sock).startswith(b"+OK") and read_line_of(sock).startswith(b"+OK")
        sock.sendall(b"CAPA\r\n" * BATCH)
        assert_goodbye_cut_short(adapter, watch)


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_client_that_takes_its_replies_in_time_gets_the_whole_timeout_reply(
    adapter: str, watch: SessionWatch, every_reply_held: None
) -> None:
    """A client that pipelined HELPs and read every reply before the timeout, if not at
    once: nothing waits to be sent when the timeout goes off, and its session says
    goodbye as before, the ``421`` whole, and the end after it."""
    options: dict[str, Any] = {
        "max_junk_commands": 10**9,
        "timeouts": Timeouts(command=TIMEOUT),
    }
    with running_smtp_server(adapter, Handler(), **options) as server, never_reader() as sock:
        sock.connect(("127.0.0.1", server.port))
        assert read_line_of(sock).startswith(b"220 ")
        sock.sendall(b"HELO client.test\r\n")
        assert read_line_of(sock).startswith(b"250 ")
        sock.sendall(b"HELP\r\n" * 100)
        last = b""
        for _ in range(100):  # each HELP's reply, to its last line
            while (line := read_line_of(sock))[3:4] != b" ":
                assert line
            last = line
        assert last.startswith(b"214 ")
        assert read_line_of(sock).startswith(b"421 4.4.2 "), "the timeout's reply, whole"
        assert read_line_of(sock) == b"", "the end after it"
        assert watch.ended.wait(30)
        assert watch.unsent_at_timeout == [False]
        assert 0 not in watch.waits_after_timeout, "the close was cancelled"
