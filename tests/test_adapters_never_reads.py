"""A client that pipelines commands and never reads is disconnected at the write's
timeout, on both adapters, for both protocols.

Its session's write of the replies waits for room that never comes, and the
timeout (SMTP's ``command``, POP3's ``send``) cancels it. On asyncio, whose
transports keep a cancelled write's bytes, the ``421`` then went out behind them
under a whole command timeout again, and the close waited the transport's close
timeout for room: the session, and its place under the session limits, lived about
twice the timeout plus five seconds, where trio's closed at the timeout. Now what
comes after the cut has :data:`~smtpcore._driver._shutdown.LAST_WORDS` at most, and
the close does not wait, over a transport whose cancelled close still closes (the
library's own). A transport of yours that does not say so closes as it always did.
On trio, replies still held for the end of the scheduler's batch (a busy server's)
made the close wait for room the whole close timeout; a cancelled close now drops
them.

Nothing here is timed with a stopwatch: the close timeout is made long (:data:`CLOSE`),
and the session must end before half of it has passed since the cut, which it cannot
do if its close waits for it; and every wait the session's clock is asked for after
the cut (but the linger's, its own bound) is :data:`LAST_WORDS` at most, not another
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import smtpcore._driver._transport
from never_reader import (
    never_reader,
    pipeline_until_the_write_waits,
    pop3_logged_in,
    read_line_of,
    smtp_helo_answered,
)
from peers import free_port, running_pop3_server, running_smtp_server, write_maildir
from session_end_watch import CLOSE, watch_the_end
from smtpcore._driver._served_session import ServedSession
from smtpcore._driver._shutdown import LAST_WORDS
from smtpcore._trio_held import HeldWrites
from smtpcore.asyncio import POP3Timeouts, SMTPServer, StreamTransport, Timeouts
from smtpcore.handler import Handler, TLSInfo
from smtpcore.maildrop import MaildirStore
from smtpcore.trio import TrioTransport

TIMEOUT = 2.0
"""The write's timeout (SMTP's ``command``, POP3's ``send``): longer than
:data:`LAST_WORDS`, so that a last word given a whole timeout again shows."""


@dataclass
class SessionWatch:
    """What the shared driver tells of a session's writes and its end (any adapter,
    either protocol): :attr:`waiting` once a write waits (the transport did not take
    all of it at once), :attr:`cut` once a cancellation ended one, :attr:`ended` once
    the session is over (its transport closed). :attr:`waits_after_cut` holds the
    seconds of every deadline the session's clock was asked for after the cut, but
    the linger's (its own bound, :data:`~session_end_watch.LINGER`)."""

    waiting: threading.Event = field(default_factory=threading.Event)
    cut: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    waits_after_cut: list[float | None] = field(default_factory=list)


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[SessionWatch]:
    watch = SessionWatch()
    send_all = ServedSession._send_all

    async def watched_send_all(session: ServedSession, data: bytes) -> None:
        watch.waiting.set()
        try:
            await send_all(session, data)
        except BaseException:
            watch.cut.set()
            raise

    monkeypatch.setattr(ServedSession, "_send_all", watched_send_all)
    watch_the_end(monkeypatch, after=watch.cut, waits=watch.waits_after_cut, ended=watch.ended)
    yield watch


def pipeline_until_the_write_is_cut(
    sock: socket.socket, batch: bytes, watch: SessionWatch
) -> None:
    """Send pipelined commands, reading nothing, until the timeout cuts the session's
    write of their replies: over a transport without a fast path every write waits
    (:attr:`SessionWatch.waiting` says nothing), and the kernel takes the first
    replies whole."""
    sock.settimeout(0.2)
    unsent = b""
    for _ in range(300):
        if watch.cut.is_set():
            return
        unsent = unsent or batch
        with contextlib.suppress(TimeoutError):  # the server reads no more: its write waits
            unsent = unsent[sock.send(unsent) :]
    pytest.fail("the timeout never cut the write")


def assert_ended_at_the_timeout(watch: SessionWatch) -> None:
    assert watch.cut.wait(10), "the timeout never cut the write"
    # Order of events: the end comes before half the close timeout has passed since
    # the cut; a close that waits for room waits all of it.
    assert watch.ended.wait(CLOSE / 2), "the session's close waited for room"
    assert all(s is not None and s <= LAST_WORDS for s in watch.waits_after_cut), (
        watch.waits_after_cut
    )


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_an_smtp_client_that_never_reads_is_disconnected_at_the_command_timeout(
    adapter: str, watch: SessionWatch
) -> None:
    """A client that pipelined HELPs and read nothing: on asyncio, its session wrote
    the ``421`` behind the unsent replies under a second command timeout, then its
    close waited the close timeout (with ``command=2``, ten seconds in all, where
    trio's closed at two). The ``421`` now has :data:`LAST_WORDS` at most, and the
    close is at once."""
    options: dict[str, Any] = {
        "max_junk_commands": 10**9,
        "timeouts": Timeouts(command=TIMEOUT),
    }
    with running_smtp_server(adapter, Handler(), **options) as server, never_reader() as sock:
        sock.connect(("127.0.0.1", server.port))
        smtp_helo_answered(sock)
        pipeline_until_the_write_waits(sock, b"HELP\r\n" * 10_000, watch.waiting)
        assert_ended_at_the_timeout(watch)


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_pop3_client_that_never_reads_is_disconnected_at_the_send_timeout(
    adapter: str, watch: SessionWatch, tmp_path: Path
) -> None:
    """A client that pipelined CAPAs and read nothing: on asyncio, its session's close
    waited the close timeout after the send timeout had cut the write (with
    ``send=2``, seven seconds, where trio's closed at two). Now it closes at once."""
    write_maildir(tmp_path / "alice", [b"Subject: hi\r\n\r\nhello\r\n"])
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    timeouts = POP3Timeouts(send=TIMEOUT)
    with running_pop3_server(adapter, store, timeouts=timeouts) as server, never_reader() as sock:
        sock.connect(("127.0.0.1", server.port))
        pop3_logged_in(sock)
        pipeline_until_the_write_waits(sock, b"CAPA\r\n" * 10_000, watch.waiting)
        assert_ended_at_the_timeout(watch)


@pytest.fixture
def every_reply_held(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The trio server holds every reply for the end of the scheduler's batch, as it
    does while other sessions write in the same batch (a busy server): what the
    kernel does not take then is written by a task of the server's, which waits for
    room while the session goes on. The list says, for each close, whether held
    bytes were still waiting to be sent when it began (the tests' premise)."""
    monkeypatch.setattr(HeldWrites, "holds", lambda self: True)
    held_at_close: list[bool] = []
    aclose = TrioTransport.aclose

    async def watched_aclose(transport: TrioTransport) -> None:
        held_at_close.append(transport._held is not None or transport._rest_written is not None)
        await aclose(transport)

    monkeypatch.setattr(TrioTransport, "aclose", watched_aclose)
    return held_at_close


def test_an_smtp_client_that_never_reads_its_held_replies_is_disconnected_at_the_timeout(
    watch: SessionWatch, every_reply_held: list[bool]
) -> None:
    """A client that pipelined HELPs and read nothing, its replies held on trio: the
    timeout cut the session's write, but ``TrioTransport``'s close, shielded, first
    waited for room for the held replies, for its whole close timeout (five seconds,
    :data:`CLOSE` here). A cancelled close now drops them and closes at once."""
    options: dict[str, Any] = {
        "max_junk_commands": 10**9,
        "timeouts": Timeouts(command=TIMEOUT),
    }
    with running_smtp_server("trio", Handler(), **options) as server, never_reader() as sock:
        sock.connect(("127.0.0.1", server.port))
        smtp_helo_answered(sock)
        pipeline_until_the_write_waits(sock, b"HELP\r\n" * 100, watch.waiting)
        assert_ended_at_the_timeout(watch)
        assert every_reply_held == [True]


def test_a_pop3_client_that_never_reads_its_held_replies_is_disconnected_at_the_timeout(
    watch: SessionWatch, every_reply_held: list[bool], tmp_path: Path
) -> None:
    """As above, over POP3 with CAPAs: the close waited the close timeout after the
    ``send`` timeout had cut the write."""
    write_maildir(tmp_path / "alice", [b"Subject: hi\r\n\r\nhello\r\n"])
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    timeouts = POP3Timeouts(send=TIMEOUT)
    with running_pop3_server("trio", store, timeouts=timeouts) as server, never_reader() as sock:
        sock.connect(("127.0.0.1", server.port))
        pop3_logged_in(sock)
        pipeline_until_the_write_waits(sock, b"CAPA\r\n" * 50, watch.waiting)
        assert_ended_at_the_timeout(watch)
        assert every_reply_held == [True]


USER_CLOSE = 1.0
"""How long :class:`BoundedClose` waits for its stream to close before it aborts it."""


class BoundedClose:
    """A transport of a user's own over asyncio's streams, written to the contract
    that asked of ``aclose`` only to be bounded in time: it closes, waits
    :data:`USER_CLOSE` for the stream to close, then aborts it. It has no
    ``closes_when_cancelled``: cancelled at its wait, it would never abort.
    :attr:`closed` is set once its close has run to its end, the socket closed."""

    keeps_cancelled_sends = True

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = threading.Event()

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self.reader.read(max_bytes)

    async def send_all(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def start_tls(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        raise ConnectionResetError("no TLS here")

    async def aclose(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), USER_CLOSE)
        except (TimeoutError, OSError):
            self.writer.transport.abort()
        self.closed.set()

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return None

    @property
    def local_address(self) -> tuple[str, int] | None:
        return None

    @property
    def tls(self) -> TLSInfo | None:
        return None


@contextlib.contextmanager
def serving_over(
    make: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
) -> Iterator[tuple[int, list[Any]]]:
    """An asyncio SMTP server (``command`` of :data:`TIMEOUT`) that serves each
    connection over ``make(reader, writer)`` with ``serve_transport``: its port, and
    the transports made so far."""
    port = free_port()
    ready = threading.Event()
    transports: list[Any] = []
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        server = SMTPServer(
            Handler(),
            hostname="mx.test",
            max_junk_commands=10**9,
            timeouts=Timeouts(command=TIMEOUT),
        )

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            transports.append(make(reader, writer))
            await server.serve_transport(transports[-1])

        listener = await asyncio.start_server(session, "127.0.0.1", port)
        stopped = asyncio.Event()
        stop.append((asyncio.get_running_loop(), stopped))
        ready.set()
        async with listener:
            await stopped.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(10)
        yield port, transports
    finally:
        if stop:
            loop, stopped = stop[0]
            loop.call_soon_threadsafe(stopped.set)
        thread.join(30)


def test_a_transport_of_yours_that_never_said_its_close_may_be_cancelled_still_closes(
    watch: SessionWatch,
) -> None:
    """A client that never reads, served over :class:`BoundedClose` by
    ``serve_transport``: its session's close was cancelled at its first wait, so the
    abort never came, asyncio's close waited for room forever, and the connection
    stayed open while the session had left the registry (no longer counted under
    ``max_sessions``). Only a transport that says ``closes_when_cancelled`` has its
    close cancelled; this one closes as it always did."""
    with serving_over(BoundedClose) as (port, transports), never_reader() as sock:
        sock.connect(("127.0.0.1", port))
        assert read_line_of(sock).startswith(b"220 ")
        pipeline_until_the_write_is_cut(sock, b"HELP\r\n" * 10_000, watch)
        assert watch.ended.wait(CLOSE / 2), "the session never ended"
        # Order of events: the connection closes while the client still holds it
        # open and reads nothing (the close waited for room that never comes).
        assert transports[0].closed.wait(CLOSE / 2), "the session ended, its connection open"


class ForwardingWrapper:
    """A transport of a user's own that wraps the library's ``StreamTransport`` and
    hands every attribute it lacks to it (``__getattr__``), the library's
    ``closes_when_cancelled = True`` among them; its ``aclose`` awaits something of
    its own (a log line, a metrics call) before it closes the stream it wraps.
    Cancelled at that wait, its close would never close. :attr:`closed` is set once
    the wrapped stream's close has run."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.inner = StreamTransport(reader, writer)
        self.closed = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes) -> None:
        await self.inner.send_all(data)

    async def aclose(self) -> None:
        await asyncio.sleep(USER_CLOSE / 10)  # its own bookkeeping, before the close
        await self.inner.aclose()
        self.closed.set()


def test_a_wrapper_that_forwards_the_close_flag_of_what_it_wraps_still_closes(
    watch: SessionWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that never reads, served over :class:`ForwardingWrapper`: the server read
    ``closes_when_cancelled`` off the wrapper itself, where ``__getattr__`` found the
    ``True`` of the ``StreamTransport`` inside, cancelled the wrapper's close at its
    own first wait, and the stream inside was never closed: its connection stayed
    open after the session had left the registry. The flag is read off the
    transport's class now, which says nothing, so the close runs to its end."""
    monkeypatch.setattr(smtpcore._driver._transport, "CLOSE_TIMEOUT", USER_CLOSE)
    with serving_over(ForwardingWrapper) as (port, transports), never_reader() as sock:
        sock.connect(("127.0.0.1", port))
        assert read_line_of(sock).startswith(b"220 ")
        pipeline_until_the_write_is_cut(sock, b"HELP\r\n" * 10_000, watch)
        assert watch.ended.wait(CLOSE / 2), "the session never ended"
        # Order of events, as above: the client holds the connection open, reading nothing.
        assert transports[0].closed.wait(CLOSE / 2), "the session ended, its connection open"
