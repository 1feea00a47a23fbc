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
(:data:`CLOSE`), and a session must end before half of it has passed since the
timeout; every wait the session's clock is asked for after the timeout (but the
linger's, its own bound) is :data:`LAST_WORDS` at most, and one of them is the
cancelled close's (0). A ``TrioTransport``'s cancelled close drops what it holds
and closes at once, as the asyncio transports abort.

A client that reads, but too slowly to take what waits within the timeout, is
no client that never reads: the transport's ``waiting_to_send`` is about
progress (bytes wait, and the client took none since the session began to
wait), and such a client gets every reply, the ``421`` whole, as before. The
asyncio server's transport over asyncio's own (``AsyncioTransport``, the raw
socket turned off) and ``serve_stream``'s, plain and TLS, are tested for both:
their writes return with up to asyncio's high-water mark still buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import smtpcore._asyncio_raw
import smtpcore._driver._kernel_queues
import smtpcore._trio_transport
from never_reader import never_reader, pop3_logged_in, read_line_of, smtp_helo_answered
from peers import TLSFiles, running_pop3_server, running_smtp_server, write_maildir
from session_end_watch import CLOSE, watch_the_end
from smtpcore._asyncio_raw_writes import WritingLayer
from smtpcore._driver._served_session import NOT_TAKEN_PROBE, ServedSession
from smtpcore._driver._shutdown import LAST_WORDS
from smtpcore._driver._transport import LinkBase
from smtpcore._trio_held import HeldWrites
from smtpcore.asyncio import POP3Server, POP3Timeouts, SMTPServer, Timeouts
from smtpcore.handler import Handler
from smtpcore.maildrop import MaildirStore
from smtpcore.trio import TrioTransport

TIMEOUT = 2.0
"""SMTP's ``command`` timeout, POP3's ``autologout``: longer than :data:`LAST_WORDS`,
so that a goodbye given a whole timeout again shows."""

BATCH = 10_000
"""Commands pipelined at once: 60,000 octets, one read of the session's, whose
replies are far more than a client that reads nothing leaves room for."""


@dataclass
class SessionWatch:
    """What the shared driver tells of a session: :attr:`wrote_and_waited` once a
    write of the session's own waited for room (not the case these tests make),
    :attr:`timed_out` once its timeout went off while it waited for its client,
    with :attr:`unsent_at_timeout` whether the driver then found bytes waiting to
    be sent that the client did not take (and :attr:`unfinished_at_timeout`,
    whether a write was under way, and :attr:`unacknowledged_at_timeout`, what the
    kernel counted of bytes the client had not acknowledged), and :attr:`ended` once
    the session is over (its transport closed).
    :attr:`waits_after_timeout` holds the seconds of every deadline the session's
    clock was asked for after the timeout, but the linger's."""

    wrote_and_waited: threading.Event = field(default_factory=threading.Event)
    timed_out: threading.Event = field(default_factory=threading.Event)
    unsent_at_timeout: list[bool] = field(default_factory=list)
    unfinished_at_timeout: list[bool] = field(default_factory=list)
    unacknowledged_at_timeout: list[int | None] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    waits_after_timeout: list[float | None] = field(default_factory=list)


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[SessionWatch]:
    watch = SessionWatch()
    send_all = ServedSession._send_all
    note = ServedSession._note_write_not_taken

    async def watched_note(session: ServedSession) -> bool:
        watch.unfinished_at_timeout.append(session._write_unfinished)
        watch.unacknowledged_at_timeout.append(session.transport.unacknowledged())
        watch.timed_out.set()
        not_taken = await note(session)
        watch.unsent_at_timeout.append(not_taken)
        return not_taken

    async def watched_send_all(session: ServedSession, data: bytes) -> None:
        if not watch.timed_out.is_set():
            watch.wrote_and_waited.set()
        await send_all(session, data)

    monkeypatch.setattr(ServedSession, "_send_all", watched_send_all)
    monkeypatch.setattr(ServedSession, "_note_write_not_taken", watched_note)
    watch_the_end(
        monkeypatch, after=watch.timed_out, waits=watch.waits_after_timeout, ended=watch.ended
    )
    yield watch


SMALL_SEND_BUFFER = 4096
"""The server's send buffer in most tests here (the kernel doubles it): the kernel takes
little of what a client does not read."""

LARGE_SEND_BUFFER = 65536
"""A send buffer whose socket has room again only once about 40 KiB of it are
acknowledged (a third of the 128 KiB the kernel makes of it), where a client that
reads slowly into a 4 KiB receive buffer reopens its window 2 KiB at a time."""


@pytest.fixture
def send_buffer() -> int:
    """The server's ``SO_SNDBUF`` under :func:`every_reply_held` (a test may
    parametrize it)."""
    return SMALL_SEND_BUFFER


@pytest.fixture
def every_reply_held(monkeypatch: pytest.MonkeyPatch, adapter: str, send_buffer: int) -> None:
    """The server holds every write of replies, however long, for the event loop's next
    pass, as it holds a reply while other sessions run in the same pass (a busy
    server): what the kernel does not take then waits for room in the transport
    (asyncio's raw socket) or in a task of the server's (trio), while the session
    waits for its client. The session's socket is given ``send_buffer`` (small unless
    the test says) as it first holds, so that the kernel leaves a rest however it
    would have grown it."""
    if adapter == "trio":
        hold = HeldWrites.hold

        def trio_hold(self: HeldWrites, transport: TrioTransport, data: bytes) -> int:
            small_send_buffer(transport._base.socket, send_buffer)  # type: ignore[attr-defined]
            return hold(self, transport, data)

        monkeypatch.setattr(HeldWrites, "holds", lambda self: True)
        monkeypatch.setattr(HeldWrites, "hold", trio_hold)
        monkeypatch.setattr(smtpcore._trio_transport, "HOLD_AT_MOST", 1 << 26)
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
            small_send_buffer(self._sock, send_buffer)
            return writes.hold(self, data)
        return send_nowait(self, data)

    monkeypatch.setattr(WritingLayer, "send_nowait", held_send_nowait)


def small_send_buffer(sock: Any, size: int = SMALL_SEND_BUFFER) -> None:
    """Give the server's socket ``sock`` a small send buffer, or one of ``size`` (which
    also stops the kernel from growing it)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


@contextlib.contextmanager
def helps_pipelined(adapter: str, client: socket.socket) -> Iterator[socket.socket]:
    """An SMTP server on ``adapter`` (:data:`SMTP_OPTIONS`), and ``client`` connected to
    it, greeted, its HELO answered and :data:`BATCH` HELPs pipelined at once; for the
    block."""
    with running_smtp_server(adapter, Handler(), **SMTP_OPTIONS) as server, client as sock:
        sock.connect(("127.0.0.1", server.port))
        smtp_helo_answered(sock)
        sock.sendall(b"HELP\r\n" * BATCH)
        yield sock


def assert_goodbye_cut_short(watch: SessionWatch, *, writes_went_at_once: bool = True) -> None:
    """The timeout went off in a wait for the client, not in a write, with replies left
    waiting (the premise), and the session never waited in a write of its own
    (``writes_went_at_once``: every write but those over a transport with no fast
    path); after the timeout no wait is longer than :data:`LAST_WORDS`, the close
    is cancelled (its deadline of 0), and the session ends before half the close
    timeout has passed since the timeout."""
    assert watch.timed_out.wait(30), "the timeout never went off"
    assert watch.ended.wait(CLOSE / 2), "the session's close waited for room"
    assert watch.unfinished_at_timeout == [False], "the timeout cut off a write"
    assert watch.unsent_at_timeout == [True], "no replies waited, untaken, at the timeout"
    if smtpcore._driver._kernel_queues.UNACKNOWLEDGED is not None:  # the socket's, TLS or not
        assert watch.unacknowledged_at_timeout[0] is not None, "the kernel's count not asked"
    if writes_went_at_once:
        assert not watch.wrote_and_waited.is_set(), "a write of the session's waited for room"
    waits = watch.waits_after_timeout
    assert all(s is not None and s <= LAST_WORDS for s in waits), waits
    assert 0 in waits, f"the close was not cancelled: {waits}"


@pytest.mark.parametrize("send_buffer", [SMALL_SEND_BUFFER, LARGE_SEND_BUFFER])
@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_an_smtp_client_whose_replies_wait_to_be_sent_is_disconnected_at_the_timeout(
    adapter: str, watch: SessionWatch, every_reply_held: None
) -> None:
    """A client that pipelined HELPs, then stopped and read nothing, its replies left
    to the transport: the ``421`` waited behind them for a second command timeout
    (deadline 2.0 with ``command=2``), then the close for room. Now the ``421`` has
    :data:`LAST_WORDS` and the close is cancelled. So too where the server's send
    buffer is large, and the probe watches the kernel's count of what the client
    has not acknowledged for its longest (``NOT_TAKEN_LOOKS``): it never falls."""
    with helps_pipelined(adapter, never_reader()):
        assert_goodbye_cut_short(watch)


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
        pop3_logged_in(sock)
        sock.sendall(b"CAPA\r\n" * BATCH)
        assert_goodbye_cut_short(watch)


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
        smtp_helo_answered(sock)
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


# -- asyncio's own transports: writes that return with bytes still buffered -------------

KINDS = ["transport", "transport-tls", "stream", "stream-tls"]
"""The asyncio server over asyncio's transports (its raw socket turned off), and
``serve_stream`` under ``asyncio.start_server``, each plain and TLS from the first
byte: their writes return while asyncio still buffers up to its high-water mark
(64 KiB), which then waits for room while the session waits for its client."""

HELPS = 400
"""Pipelined HELPs: about 40 KB of replies, far more than the kernel's buffers hold
for a client that reads nothing (:func:`small_send_buffers`), less than asyncio's
high-water mark, so that no write of the session's waits."""

MESSAGE = b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 500
"""A POP3 message of about 40 KB, for the same reason."""

READ_RATE = 6_000
"""Octets a second the slow client reads, steadily: the replies take it more than
five seconds, over twice the timeout, and at the timeout asyncio still buffers some."""


@pytest.fixture
def small_send_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every listening socket made in the test gets a small send buffer, which its
    accepted connections inherit: the kernel takes little of what the client does not
    read, and the rest waits in asyncio's buffer."""
    listen = socket.socket.listen

    def small_listen(sock: socket.socket, *args: Any) -> None:
        small_send_buffer(sock)
        listen(sock, *args)

    monkeypatch.setattr(socket.socket, "listen", small_listen)


@contextlib.contextmanager
def served_on_asyncio(
    kind: str,
    server: type[SMTPServer] | type[POP3Server],
    first: Any,
    tls: TLSFiles,
    **options: Any,
) -> Iterator[int]:
    """Serve with the asyncio ``server`` (made of ``first`` and ``options``) as ``kind``
    says, in a thread, for the block; its port."""
    context = tls.server_context if kind.endswith("-tls") else None
    if kind.startswith("transport"):
        if context is not None:
            options.update(ssl_context=context, tls_on_connect=True)
        runner = running_smtp_server if server is SMTPServer else running_pop3_server
        with runner("asyncio", first, **options) as running:
            yield running.port
        return
    ready: list[int] = []
    started = threading.Event()
    stop: list[asyncio.AbstractEventLoop] = []
    done = threading.Event()

    async def main() -> None:
        serving = server(first, hostname="mx.test", **options)
        listener = await asyncio.start_server(serving.serve_stream, "127.0.0.1", 0, ssl=context)
        ready.append(listener.sockets[0].getsockname()[1])
        stop.append(asyncio.get_running_loop())
        started.set()
        async with listener:
            while not done.is_set():
                await asyncio.sleep(0.05)
            await serving.aclose(grace=1)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield ready[0]
    finally:
        done.set()
        thread.join(30)


def connected(kind: str, port: int, tls: TLSFiles) -> socket.socket:
    """A client of :func:`never_reader`'s small receive buffer, connected, under TLS
    for a ``-tls`` kind."""
    sock = never_reader()
    sock.connect(("127.0.0.1", port))
    if kind.endswith("-tls"):
        return tls.client_context.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


PROBE_READ = 4096
"""Octets the slow client reads after the probe of a timed-out session has begun before
the probe's second starts (:func:`probe_after_reads`): the client's whole receive
buffer (:func:`never_reader`), so that its window opens and the server's kernel
takes more of what asyncio holds."""


@dataclass
class SlowReader:
    """What the slow client has read so far (:func:`read_slowly`), told to the server's
    probe (:func:`probe_after_reads`)."""

    taken: int = 0


def read_slowly(sock: socket.socket, reader: SlowReader) -> bytes:
    """Everything until the server closes, read at :data:`READ_RATE`: a client that
    takes its replies steadily, if not within the timeout; ``reader`` counts it."""
    got = bytearray()
    with contextlib.suppress(OSError):
        while data := sock.recv(1024):
            got += data
            reader.taken = len(got)
            time.sleep(len(data) / READ_RATE)
    return bytes(got)


@pytest.fixture
def probe_after_reads(monkeypatch: pytest.MonkeyPatch, watch: SessionWatch) -> SlowReader:
    """The probe of a timed-out session (:data:`NOT_TAKEN_PROBE`) begins its second only
    once the slow client has read :data:`PROBE_READ` octets since the probe began:
    that the client reads within the probe is then an order of events, not a race of
    the client's thread against the server's clock (on a loaded machine the client,
    in this process, was not run for the whole second, read nothing, and was taken
    for a client that never reads). The probe's own second, and its judgment, are
    left as they are."""
    reader = SlowReader()
    sleep = LinkBase.sleep

    async def sleep_after_reads(link: LinkBase, seconds: float) -> None:
        if seconds == NOT_TAKEN_PROBE and watch.timed_out.is_set():
            start = reader.taken
            while reader.taken < start + PROBE_READ:
                await sleep(link, 0.01)
        await sleep(link, seconds)

    monkeypatch.setattr(LinkBase, "sleep", sleep_after_reads)
    return reader


def smtp_pipelined(sock: socket.socket) -> None:
    """Greeted, HELO answered, then :data:`HELPS` HELPs at once."""
    smtp_helo_answered(sock)
    sock.sendall(b"HELP\r\n" * HELPS)


def pop3_retrieving(sock: socket.socket) -> None:
    """Logged in, then RETR of :data:`MESSAGE`."""
    pop3_logged_in(sock)
    sock.sendall(b"RETR 1\r\n")


def pop3_store(tmp_path: Path) -> MaildirStore:
    write_maildir(tmp_path / "alice", [MESSAGE])
    return MaildirStore(tmp_path, {"alice": "wonderland"})


SMTP_OPTIONS: dict[str, Any] = {"max_junk_commands": 10**9, "timeouts": Timeouts(command=TIMEOUT)}
POP3_OPTIONS: dict[str, Any] = {"timeouts": POP3Timeouts(autologout=TIMEOUT)}


@pytest.fixture
def asyncio_transports(monkeypatch: pytest.MonkeyPatch) -> None:
    """The asyncio server on asyncio's own transports, not its raw socket."""
    monkeypatch.setattr(smtpcore._asyncio_raw, "enabled", False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_a_never_reader_over_asyncio_transports_is_cut_at_the_timeout(
    kind: str,
    protocol: str,
    watch: SessionWatch,
    small_send_buffers: None,
    asyncio_transports: None,
    tls: TLSFiles,
    tmp_path: Path,
) -> None:
    """A client that pipelined HELPs (or asked for a message) and reads nothing: its
    replies wait in asyncio's buffer, none taken in the whole timeout, and the
    session is cut at it, as where they wait in the raw socket's."""
    if protocol == "smtp":
        serving = served_on_asyncio(kind, SMTPServer, Handler(), tls, **SMTP_OPTIONS)
    else:
        serving = served_on_asyncio(kind, POP3Server, pop3_store(tmp_path), tls, **POP3_OPTIONS)
    with serving as port, connected(kind, port, tls) as sock:
        (smtp_pipelined if protocol == "smtp" else pop3_retrieving)(sock)
        assert_goodbye_cut_short(watch, writes_went_at_once=not kind.startswith("stream"))


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_smtp_reader_over_asyncio_transports_gets_every_reply(
    kind: str,
    watch: SessionWatch,
    small_send_buffers: None,
    asyncio_transports: None,
    tls: TLSFiles,
    probe_after_reads: SlowReader,
) -> None:
    """A client that pipelined HELPs and reads their replies steadily, but too slowly
    to take them all within the timeout: it took some while the session waited, so
    it gets them all, then the ``421`` whole and the end (it lost the tail and the
    ``421`` when bytes merely waiting were taken as not taken)."""
    serving = served_on_asyncio(kind, SMTPServer, Handler(), tls, **SMTP_OPTIONS)
    with serving as port, connected(kind, port, tls) as sock:
        smtp_pipelined(sock)
        got = read_slowly(sock, probe_after_reads)
    lines = got.split(b"\r\n")
    assert sum(line.startswith(b"214 ") for line in lines) == HELPS
    assert lines[-2:] == [b"421 4.4.2 mx.test Timeout exceeded", b""], lines[-3:]
    assert watch.unsent_at_timeout == [False], "the slow reader was taken for one that never reads"


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_pop3_reader_over_asyncio_transports_gets_the_whole_message(
    kind: str,
    watch: SessionWatch,
    small_send_buffers: None,
    asyncio_transports: None,
    tls: TLSFiles,
    tmp_path: Path,
    probe_after_reads: SlowReader,
) -> None:
    """A client that asked for a message and reads it steadily, but too slowly to take
    it within ``autologout``: it gets the whole message (it lost its end)."""
    store = pop3_store(tmp_path)
    serving = served_on_asyncio(kind, POP3Server, store, tls, **POP3_OPTIONS)
    with serving as port, connected(kind, port, tls) as sock:
        pop3_retrieving(sock)
        got = read_slowly(sock, probe_after_reads)
    assert got.startswith(b"+OK") and got.endswith(MESSAGE + b".\r\n"), got[-40:]
    assert watch.unsent_at_timeout == [False], "the slow reader was taken for one that never reads"


# -- a client that reads a few hundred octets a second, and a large send buffer ------

CRAWL_RATE = 500
"""Octets a second the crawling client reads (:func:`read_crawling`): its window reopens
about every four seconds (:func:`crawler`), and the server's socket would have room
again only after more than a minute (:data:`LARGE_SEND_BUFFER`)."""


def crawler() -> socket.socket:
    """A client socket with the smallest receive buffer the kernel allows (2 KiB asked,
    4 KiB given): its window reopens about every 2 KiB it reads, every four seconds
    at :data:`CRAWL_RATE` (a 4 KiB one, 8 KiB given, reopens every 6 KiB)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.settimeout(10)
    return sock


def read_crawling(sock: socket.socket, reader: SlowReader, judged: list[bool]) -> bytes:
    """Everything until the server closes: read at :data:`CRAWL_RATE` until the server's
    probe has judged (``judged`` is no longer empty), then as fast as it comes, so that
    the test's length is bounded; ``reader`` counts it."""
    got = bytearray()
    with contextlib.suppress(OSError):
        while data := sock.recv(100 if not judged else 65536):
            got += data
            reader.taken = len(got)
            if not judged:
                time.sleep(len(data) / CRAWL_RATE)
    return bytes(got)


@pytest.mark.skipif(
    smtpcore._driver._kernel_queues.UNACKNOWLEDGED is None,
    reason="the kernel's count of bytes not acknowledged (SIOCOUTQ) is Linux's",
)
@pytest.mark.parametrize("send_buffer", [LARGE_SEND_BUFFER])
@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_client_reading_500_octets_a_second_is_not_taken_for_one_that_never_reads(
    adapter: str,
    watch: SessionWatch,
    every_reply_held: None,
    probe_after_reads: SlowReader,
) -> None:
    """A client that pipelined HELPs and reads their replies at 500 octets a second: its
    acknowledgements lower the kernel's count of what it has not acknowledged, while
    the server's socket stays without room, and the transport's count of what waits
    does not move. It was taken for a client that never reads (that count alone
    was looked at) and lost the rest of its replies and the ``421``; now it gets them
    all. The probe's looks wait until the client has read its receive buffer over
    (:func:`probe_after_reads`), a few seconds at this rate, so that its reading is
    an order of events on a loaded machine, not a race; a client that never reads
    is still cut (above, with the same large buffer).

    What it shows: the kernel's count decides here. With the probe's kernel count
    made None (the transport's count alone, one look) it fails on both adapters
    ("taken for a never-reader"): 4 KiB read does not give the large send buffer
    room again. What it does not show: the real one-second cadence of the looks
    (each waits for 4 KiB more read, about eight seconds at this rate), so not that
    a client at this rate shows a fall within six real seconds; nor TLS, nor the
    goodbye's bound (the client reads at full speed once judged)."""
    with helps_pipelined(adapter, crawler()) as sock:
        got = read_crawling(sock, probe_after_reads, watch.unsent_at_timeout)
    lines = got.split(b"\r\n")
    assert watch.unsent_at_timeout == [False], "the crawling reader was taken for a never-reader"
    assert sum(line.startswith(b"214 ") for line in lines) == BATCH
    assert lines[-1] == b"" and lines[-2].startswith(b"421 4.4.2 "), lines[-3:]
