"""The asyncio server's connections over the raw socket (``smtpcore._asyncio_raw``), and
the fallback to asyncio's own transports.

The adapter suites run every server scenario on the raw socket (the default on
Linux's selector loop); here are the raw transport's own edges (a kernel buffer
that fills, a reset under a pending write, an end of stream with a reply still
due, more connections at once than one wake accepts) and the fallback path,
which the same scenarios run over with the raw path switched off.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import inspect
import logging
import selectors
import socket
import struct
import threading
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import pytest

from peers import (
    TLSFiles,
    make_tls_files,
    raw_smtp_session,
    read_until,
    received_now,
    running_pop3_server,
    running_smtp_server,
    starttls_client,
)
from smtpcore import (
    _asyncio_raw,
    _asyncio_raw_accept,
    _asyncio_raw_close,
    _asyncio_raw_held,
    _asyncio_raw_watch,
    _asyncio_raw_writes,
)
from smtpcore._asyncio_raw import Acceptor, HeldWrites, RawSocketTransport, serves_raw
from smtpcore._asyncio_runner import WOKEN, SessionRunner
from smtpcore._driver import _transport as shared_transport
from smtpcore._driver._kernel_queues import UNACKNOWLEDGED
from smtpcore.asyncio import AsyncioTransport, SMTPServer
from smtpcore.handler import Handler
from smtpcore.maildrop import MaildirStore

LOOPBACK = "127.0.0.1"
PAYLOAD = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than the socket buffers hold


@pytest.fixture(params=[True, False], ids=["raw", "fallback"])
def raw(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether servers started in the test take the raw path (else asyncio's transports)."""
    monkeypatch.setattr(_asyncio_raw, "enabled", request.param)
    value: bool = request.param
    return value


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def transport_kinds(server: Any) -> list[type]:
    """The transport type of each live session of ``server`` (a ``RunningSMTPServer``)."""
    kinds: list[type] = []

    async def look() -> None:
        kinds.extend(type(session.transport.transport) for session in server.server.state.sessions)

    server.call(look)
    return kinds


# -- which path a server takes -------------------------------------------------------------


def _watch_instead(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, call: Callable[[], None]
) -> None:
    """Have the loop's selector run ``call`` instead of the transport watching ``sock``
    (the transport is its own reader handle: see RawSocketTransport)."""
    selector = loop._selector  # type: ignore[attr-defined]  # the selector loop's own
    selector.modify(sock.fileno(), selectors.EVENT_READ, (asyncio.Handle(call, (), loop), None))


def test_a_plain_listener_serves_over_the_raw_socket_and_falls_back_when_switched_off(
    raw: bool,
) -> None:
    with (
        running_smtp_server("asyncio", Handler()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        assert s.recv_reply().startswith(b"220 mx.test")
        assert s.command(b"EHLO client.test").startswith(b"250-mx.test")
        assert transport_kinds(server) == [RawSocketTransport if raw else AsyncioTransport]
        assert s.command(b"QUIT").startswith(b"221")
        assert s.recv_some() == b""


def test_the_names_moved_out_of_asyncio_raw_still_show_their_source() -> None:
    """The private names ``_asyncio_raw`` imports from its layers' modules keep those
    modules in ``__module__``: renamed to ``_asyncio_raw``, ``inspect.getsource``
    looked for them there, and failed (as a debugger or a traceback's tooling would)."""
    for obj, start in (
        (Acceptor, "class Acceptor"),
        (HeldWrites, "class HeldWrites"),
        (_asyncio_raw.listening_sockets, "async def listening_sockets("),
        (_asyncio_raw.resolve_now, "def resolve_now("),
    ):
        assert inspect.getsource(obj).startswith(start)


def test_each_tunable_of_the_raw_transport_has_one_home() -> None:
    """A private bound of the raw transport is bound in one module, the one that reads
    it: a copy imported into a second module kept the old value when a test (or a
    debugging session) patched the first, and the patch missed. (The aliases of
    ``os.read``, ``os.write`` and ``asyncio.Future`` are imported by their readers, as
    a look-up saved at each read.)"""
    modules = (
        _asyncio_raw,
        _asyncio_raw_watch,
        _asyncio_raw_writes,
        _asyncio_raw_close,
        _asyncio_raw_held,
        _asyncio_raw_accept,
    )
    homes = [module.__name__ for module in modules if "_HOLD_AT_MOST" in vars(module)]
    assert homes == ["smtpcore._asyncio_raw_writes"]


def test_the_transports_slots_are_the_fields_its_layers_declare() -> None:
    """The slots the transport holds are the names the type checker checks the layers'
    assignments against (one tuple, ``SelectorWatch.FIELDS``), and every field the
    layers declare: a layer's typo is a type error, not an AttributeError at run time."""
    slots: object = RawSocketTransport.__slots__  # () to the type checker (see FIELDS)
    assert slots is _asyncio_raw_watch.SelectorWatch.FIELDS
    declared = set(_asyncio_raw_watch.SelectorWatch.__annotations__) - {
        "FIELDS",
        "_cancelled",
        "events",
    }
    assert declared == set(RawSocketTransport.__slots__)


def test_only_the_standard_selector_loop_is_served_raw() -> None:
    selector = asyncio.SelectorEventLoop()
    try:
        assert serves_raw(selector)
    finally:
        selector.close()
    # Any other loop (the proactor, uvloop) keeps asyncio's transports.
    assert not serves_raw(cast(asyncio.AbstractEventLoop, object()))


def test_tls_on_connect_is_served_raw_too(raw: bool, tls: TLSFiles) -> None:
    """A listener's TLS from the first byte runs over the raw socket (the session
    starts it), not asyncio's TLS transport and its 256 KiB buffer."""
    with (
        running_smtp_server(
            "asyncio", Handler(), ssl_context=tls.server_context, tls_on_connect=True
        ) as server,
        socket.create_connection((server.host, server.port), timeout=10) as plain,
        tls.client_context.wrap_socket(plain, server_hostname="localhost") as sock,
    ):
        assert sock.recv(100).startswith(b"220 mx.test")
        assert transport_kinds(server) == [RawSocketTransport if raw else AsyncioTransport]


def test_after_starttls_the_session_goes_on_over_the_same_kind_of_transport(
    raw: bool, tls: TLSFiles
) -> None:
    with (
        running_smtp_server("asyncio", Handler(), ssl_context=tls.server_context) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        assert s.command(b"STARTTLS").startswith(b"220")
        s.sock = tls.client_context.wrap_socket(s.sock, server_hostname="localhost")
        assert b"STARTTLS" not in s.command(b"EHLO client.test")
        assert s.command(b"NOOP").startswith(b"250")
        [kind] = transport_kinds(server)
        assert kind is (RawSocketTransport if raw else AsyncioTransport)
        assert s.command(b"QUIT").startswith(b"221")


def test_a_proxy_header_is_read_exactly_and_the_session_goes_on(raw: bool) -> None:
    header = b"PROXY TCP4 192.0.2.7 192.0.2.1 40312 25\r\n"
    with (
        running_smtp_server("asyncio", Handler(), proxy_protocol_from=["127.0.0.1"]) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.send(header + b"EHLO client.test\r\n")  # the command in the same segment
        assert s.recv_reply().startswith(b"220")
        assert s.recv_reply().startswith(b"250-mx.test")
        seen: list[object] = []

        async def look() -> None:
            seen.extend(session.session.peer for session in server.server.state.sessions)

        server.call(look)
        assert seen == [("192.0.2.7", 40312)]


def test_a_pop3_server_takes_the_same_path(raw: bool, tmp_path: Any) -> None:
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    with (
        running_pop3_server("asyncio", store) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        assert s.recv_some().startswith(b"+OK")
        s.send(b"CAPA\r\n")
        assert s.recv_some().startswith(b"+OK")
        assert transport_kinds(server) == [RawSocketTransport if raw else AsyncioTransport]


def waiting_coroutines(server: Any) -> list[list[str]]:
    """For each live session of ``server`` (a ``RunningSMTPServer``), the coroutines it is
    suspended in, outermost first (its runner's coroutine, then what that awaits)."""
    stacks: list[list[str]] = []

    async def look() -> None:
        for runner in server.server._runners:
            stack: list[str] = []
            awaited: object = runner._coro
            while isinstance(awaited, types.CoroutineType):
                stack.append(awaited.__qualname__)
                awaited = awaited.cr_await
            stacks.append(stack)

    server.call(look)
    return stacks


def test_a_session_waiting_for_its_client_is_suspended_in_one_coroutine(
    tmp_path: Any,
) -> None:
    """The protocol's loop is written out in its ``run``, and the read hands out a wait
    with no coroutine of its own: an idle session holds one frame (SMTP and POP3)."""
    with (
        running_smtp_server("asyncio", Handler()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        assert s.recv_some().startswith(b"220")
        s.send(b"EHLO client.test\r\n")
        assert s.recv_some().startswith(b"250")
        assert waiting_coroutines(server) == [["ServerSession.run"]]
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    with (
        running_pop3_server("asyncio", store) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        assert s.recv_some().startswith(b"+OK")
        assert waiting_coroutines(server) == [["POP3ServerSession.run"]]


# -- the server's edges ------------------------------------------------------------------


def test_an_end_of_stream_with_replies_due_still_gets_them(raw: bool) -> None:
    with running_smtp_server("asyncio", Handler()) as server:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"EHLO client.test\r\nNOOP\r\nQUIT\r\n")
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        lines = received.split(b"\r\n")
        assert lines[0].startswith(b"220")
        assert [line[:4] for line in lines if line[3:4] == b" "] == [
            b"220 ",
            b"250 ",
            b"250 ",
            b"221 ",
        ]
        server.wait_for_sessions(0)


def test_a_client_that_reads_late_gets_every_reply_in_order(raw: bool) -> None:
    """More replies than the kernel's buffers hold, to a client that reads only once it
    has sent every command: the server waits for room, and loses nothing."""
    count = 30_000
    with running_smtp_server("asyncio", Handler(), max_junk_commands=100_000) as server:
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sender = threading.Thread(
                target=sock.sendall, args=(b"EHLO client.test\r\n" + b"NOOP\r\n" * count,)
            )
            sender.start()
            sender.join(0.5)  # the replies pile up meanwhile
            received = bytearray()
            while received.count(b"\r\n250 ") < count + 1:
                chunk = sock.recv(65536)
                assert chunk
                received += chunk
            sender.join(30)
            sock.sendall(b"QUIT\r\n")
            while b"221" not in received:
                received += sock.recv(65536)
        assert received.count(b"250 2.0.0 OK") == count


def test_more_connections_at_once_than_one_wake_accepts_are_all_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accepts: list[int] = []
    accept = Acceptor._accept

    def counting(self: Acceptor, *args: Any) -> None:
        accepts.append(1)
        accept(self, *args)

    monkeypatch.setattr(Acceptor, "_accept", counting)
    with running_smtp_server("asyncio", Handler(), backlog=3) as server:
        socks = [
            socket.create_connection((server.host, server.port), timeout=10) for _ in range(12)
        ]
        try:
            for sock in socks:
                assert sock.recv(100).startswith(b"220")
        finally:
            for sock in socks:
                sock.close()
    assert len(accepts) >= 12 // 3


class _OutOfDescriptors(socket.socket):
    """A listening socket whose first accept fails as a process out of descriptors does."""

    failed = False

    def _accept(self) -> tuple[int, Any]:
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, "Too many open files")
        result: tuple[int, Any] = super()._accept()  # type: ignore[misc]  # _socket's own
        return result


@pytest.mark.parametrize("implicit_tls", [False, True])
def test_a_listener_out_of_descriptors_rests_and_accepts_again(
    implicit_tls: bool, tls: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """One failed accept is one rest, also for a listener whose sessions run over
    asyncio's transports (TLS from the first byte): the loop's own server (3.11)
    logged and re-armed once for every connection of its backlog, at full CPU."""
    listener = _OutOfDescriptors(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen(16)
    address = listener.getsockname()

    def greeting() -> bytes:
        with socket.create_connection(address, timeout=10) as sock:
            if not implicit_tls:
                return sock.recv(100)
            with tls.client_context.wrap_socket(sock, server_hostname="mx.test") as wrapped:
                return wrapped.recv(100)

    async def main() -> None:
        options: dict[str, Any] = {}
        if implicit_tls:
            options = {"ssl_context": tls.server_context, "tls_on_connect": True}
        async with SMTPServer(Handler(), sock=listener, hostname="mx.test", **options):
            assert (await asyncio.to_thread(greeting)).startswith(b"220")  # after a rest

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert listener.failed
    rests = [r for r in caplog.records if "cannot accept connections" in r.getMessage()]
    assert len(rests) == 1 and len(caplog.records) == 1


# -- the transport itself -----------------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair: the server's end (non-blocking, small buffers) and the peer's."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setblocking(False)
    with ours, theirs:
        yield ours, theirs


def _stepped(transport: RawSocketTransport, step: Callable[[], Awaitable[object]]) -> list[object]:
    """Run ``step`` as an accepted connection's session runs: stepped by a runner, with
    no task (its outcome in the list, once it is done)."""
    outcome: list[object] = []

    async def session() -> None:
        try:
            outcome.append(await step())
        except Exception as exc:  # what the test looks at
            outcome.append(exc)

    runner = transport._runner = SessionRunner(transport._loop, lambda runner: None)
    runner.start(session())
    return outcome


async def _outcome(
    transport: RawSocketTransport, stepped: bool, step: Callable[[], Awaitable[object]]
) -> Callable[[], Awaitable[object]]:
    """Start ``step`` stepped by a runner or in a task; what waits for its outcome."""
    if stepped:
        outcome = _stepped(transport, step)

        async def stepped_outcome() -> object:
            while not outcome:
                await asyncio.sleep(0.01)
            return outcome[0]

        return stepped_outcome

    async def run() -> object:
        return await step()

    task = asyncio.ensure_future(run())

    async def task_outcome() -> object:
        [result] = await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
        return result

    return task_outcome


@pytest.mark.parametrize("stepped", [True, False], ids=["runner", "task"])
def test_a_write_the_kernel_cannot_take_waits_for_room_and_all_of_it_arrives(
    pair: tuple[socket.socket, socket.socket], stepped: bool
) -> None:
    ours, theirs = pair

    async def main() -> None:
        transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
        sent = transport.send_nowait(PAYLOAD)
        assert 0 < sent < len(PAYLOAD)  # the kernel took what it could
        rest = PAYLOAD[sent:]
        outcome = await _outcome(transport, stepped, lambda: transport.send_all(rest))
        await asyncio.sleep(0.05)
        pending = transport._out
        assert pending is not None and 0 < len(pending) <= len(rest)  # one write, at most
        assert transport.send_nowait(b"more") == 0  # behind what waits
        received = bytearray()
        reader = threading.Thread(target=read_until, args=(theirs, received, len(PAYLOAD)))
        reader.start()
        assert await outcome() is None
        await asyncio.to_thread(reader.join, 30)
        assert received == PAYLOAD
        assert transport._out is None and not transport._writing
        await transport.aclose()
        assert ours.fileno() == -1

    asyncio.run(main())


@pytest.mark.parametrize("stepped", [True, False], ids=["runner", "task"])
def test_a_reset_under_a_pending_write_fails_it(stepped: bool) -> None:
    server = socket.create_server((LOOPBACK, 0))
    with server, socket.create_connection(server.getsockname(), timeout=10) as theirs:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ours, _ = server.accept()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.setblocking(False)

        async def main() -> None:
            transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
            outcome = await _outcome(transport, stepped, lambda: transport.send_all(PAYLOAD))
            await asyncio.sleep(0.05)
            assert transport._out is not None
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            theirs.close()  # RST
            assert isinstance(await outcome(), ConnectionError)
            with pytest.raises(ConnectionError):
                await transport.send_all(b"after")
            assert await transport.receive_some(100) == b""
            await transport.aclose()  # nothing left to wait for
            assert ours.fileno() == -1

        asyncio.run(main())


def test_reads_are_exact_and_an_end_of_stream_reads_as_empty(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = RawSocketTransport(ours, None, loop)
        assert transport.receive_nowait(10) is None
        theirs.sendall(b"PROXY header\r\n\x16\x03\x01")
        assert await transport.receive_some(14) == b"PROXY header\r\n"
        assert ours.recv(10, socket.MSG_PEEK) == b"\x16\x03\x01"  # still the kernel's
        assert await transport.receive_some(100) == b"\x16\x03\x01"
        waiting = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        theirs.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(waiting, 10) == b""
        assert await transport.receive_some(100) == b""
        await transport.send_all(b"still open for the replies")
        await transport.aclose()
        assert theirs.recv(100) == b"still open for the replies"

    asyncio.run(main())


def test_bytes_nothing_waits_for_stay_in_the_kernel(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A read watched the socket; once nothing reads, the selector no longer wakes the
    transport for every pass while the client's bytes wait."""
    ours, theirs = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = RawSocketTransport(ours, None, loop)
        waiting = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0.01)
        theirs.sendall(b"one")
        assert await asyncio.wait_for(waiting, 10) == b"one"
        theirs.sendall(b"two")
        for _ in range(3):
            await asyncio.sleep(0.01)
        assert not transport._reading  # unwatched after one pass with nobody reading
        assert await transport.receive_some(100) == b"two"
        await transport.aclose()

    asyncio.run(main())


def test_refuse_writes_what_fits_and_closes(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair

    async def main() -> None:
        transport = RawSocketTransport(ours, ("192.0.2.1", 25), asyncio.get_running_loop())
        assert transport.peer_address == ("192.0.2.1", 25)
        transport.refuse(b"421 busy\r\n")
        assert ours.fileno() == -1
        with pytest.raises(ConnectionResetError):
            transport.send_nowait(b"x")

    asyncio.run(main())
    assert theirs.recv(100) == b"421 busy\r\n"


def test_start_tls_as_a_client_over_an_accepted_socket(tls: TLSFiles) -> None:
    """The raw transport's handoff for the client's side of TLS (the server's is the
    adapter suites' STARTTLS)."""
    listener = socket.create_server((LOOPBACK, 0))
    done = threading.Event()

    def tls_server() -> None:
        conn, _ = listener.accept()
        with tls.server_context.wrap_socket(conn, server_side=True) as sock:
            sock.sendall(sock.recv(100).upper())
            done.wait(10)

    thread = threading.Thread(target=tls_server)
    thread.start()
    with listener:
        ours = socket.create_connection(listener.getsockname(), timeout=10)
        ours.setblocking(False)

        async def main() -> None:
            transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
            await transport.start_tls(
                tls.client_context, server_side=False, server_hostname="localhost"
            )
            assert transport.tls is not None
            await transport.send_all(b"hello")
            assert await transport.receive_some(100) == b"HELLO"
            if UNACKNOWLEDGED is not None:  # the kernel's count, of the socket's ciphertext
                assert transport.unacknowledged() is not None
            done.set()
            await transport.aclose()
            assert transport.unacknowledged() is None

        asyncio.run(main())
        thread.join(10)


@pytest.mark.parametrize("reads", [True, False], ids=["peer-reads", "peer-never-reads"])
def test_a_close_with_bytes_still_to_send_waits_for_them_within_a_bound(
    pair: tuple[socket.socket, socket.socket], reads: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write cut short (its deadline ran out) leaves bytes for the kernel: the close
    sends them if the peer reads, and gives up after the close timeout if it does not."""
    ours, theirs = pair
    monkeypatch.setattr(shared_transport, "CLOSE_TIMEOUT", 0.2)

    async def main() -> None:
        transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
        writing = asyncio.ensure_future(transport.send_all(PAYLOAD))
        await asyncio.sleep(0.05)
        writing.cancel()  # as the session's deadline would
        await asyncio.gather(writing, return_exceptions=True)
        assert transport._out is not None
        received = bytearray()
        if reads:
            reader = threading.Thread(target=read_until, args=(theirs, received, len(PAYLOAD)))
            reader.start()
        await transport.aclose()
        assert ours.fileno() == -1
        if reads:
            await asyncio.to_thread(reader.join, 30)
            assert received == PAYLOAD

    asyncio.run(main())


def test_a_closed_transport_never_reads_or_writes_a_descriptor_given_to_another(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The transport reads and writes its socket's descriptor (``os.read``,
    ``os.write``): once closed, its number may be the kernel's to give another
    connection, which the transport must not touch."""
    ours, _ = pair

    async def main() -> None:
        transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
        await transport.aclose()
        other, peer = socket.socketpair()  # most likely the number just freed
        try:
            peer.sendall(b"not yours")
            assert transport.receive_nowait(100) in (b"", None)
            assert transport.receive_or_wait(100) == b""
            with pytest.raises(ConnectionResetError):
                transport.send_nowait(b"nor this")
            other.setblocking(False)
            peer.setblocking(False)
            assert other.recv(100) == b"not yours"  # still there for its own reader
            with pytest.raises(BlockingIOError):
                peer.recv(100)  # and nothing was written to it
        finally:
            other.close()
            peer.close()

    asyncio.run(main())


def test_a_close_begun_while_a_cancelled_read_unwinds_still_ends(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A read cancelled (a shutdown, a deadline) unwinds at the loop's next pass: a
    close begun before then, with bytes still to send, waited for room while the
    read's unwinding cleared its wait, and neither the room nor the close timeout
    woke it again (it hung). Order of events: the close ends once the peer has read
    every byte."""
    ours, theirs = pair

    async def main() -> None:
        transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
        transport.send_nowait(PAYLOAD[:65536])  # what the kernel takes of it
        transport.write_soon(PAYLOAD)  # the rest waits for room
        reading = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0)  # the read waits
        assert transport._waiter is not None
        reading.cancel()  # its unwinding runs at the next pass, after the close began
        received = bytearray()
        reader = threading.Thread(target=read_until, args=(theirs, received, 1 << 30))
        reader.start()
        await transport.aclose()  # in this task: begun before the read unwinds
        assert reading.cancelled()
        await asyncio.to_thread(reader.join, 30)
        assert len(received) >= len(PAYLOAD)

    asyncio.run(asyncio.wait_for(main(), 30))  # a guard: the close hung


def test_a_read_begun_while_a_close_waits_for_room_ends_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A read begun in another task while a close waits for room took the close's wait
    for its own, and the close never ended, not even at its timeout (which woke
    the read's wait alone). Order of events: the read ends (the end of the
    stream) while the close still waits, and the close ends once the peer has
    read every byte."""
    ours, theirs = pair

    async def main() -> None:
        transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
        transport.write_soon(PAYLOAD)  # most of it waits for room
        closing = asyncio.ensure_future(transport.aclose())
        await asyncio.sleep(0)  # the close waits for room
        assert transport.unsent()
        assert await transport.receive_some(100) == b""
        assert not closing.done()
        received = bytearray()
        reader = threading.Thread(target=read_until, args=(theirs, received, 1 << 30))
        reader.start()
        await closing
        await asyncio.to_thread(reader.join, 30)
        assert len(received) == len(PAYLOAD)

    asyncio.run(asyncio.wait_for(main(), 30))  # a guard: the close hung


@pytest.mark.parametrize("queued", [b"", PAYLOAD], ids=["nothing-queued", "queued"])
def test_a_read_waiting_in_another_task_ends_with_the_close(
    pair: tuple[socket.socket, socket.socket], queued: bytes
) -> None:
    """A read waiting in another task when the connection was closed was never woken
    (the close took the transport's one wait for its own, or closed the socket
    under it). Order of events: the read ends with the end of the stream once
    the close is over."""
    ours, theirs = pair

    async def main() -> None:
        transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
        if queued:
            transport.write_soon(queued)
        reading = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0)  # the read waits
        received = bytearray()
        reader = threading.Thread(target=read_until, args=(theirs, received, 1 << 30))
        reader.start()
        await transport.aclose()
        assert await reading == b""
        await asyncio.to_thread(reader.join, 30)
        assert len(received) == len(queued)

    asyncio.run(asyncio.wait_for(main(), 30))  # a guard: the read hung


_READ_STEP: contextvars.ContextVar[str] = contextvars.ContextVar("_READ_STEP", default="")


def test_a_task_waiting_for_bytes_steps_in_the_selector_callback_in_its_context(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A task's read is resumed by the selector's callback itself, not a pass later:
    as the task's own step (its current task, its context variables)."""
    ours, theirs = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = RawSocketTransport(ours, None, loop)
        seen: list[object] = []

        async def reader() -> bytes:
            _READ_STEP.set("the task's")
            data = await transport.receive_some(100)
            seen.append((asyncio.current_task() is task, _READ_STEP.get()))
            return data

        task = asyncio.ensure_future(reader())
        await asyncio.sleep(0.01)
        stepped: list[bool] = []

        def watched() -> None:  # the task's step runs inside the callback
            transport._run()
            stepped.append(bool(seen))

        _watch_instead(loop, ours, watched)
        theirs.sendall(b"one")
        assert await asyncio.wait_for(task, 10) == b"one"
        assert seen == [(True, "the task's")] and stepped[0] is True
        assert _READ_STEP.get() == ""  # the task's context, not the loop's
        await transport.aclose()

    asyncio.run(main())


def test_a_task_waiting_for_bytes_is_cancelled_as_with_any_future(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair

    async def main() -> None:
        transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
        waiting = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0.01)
        assert isinstance(transport._waiter, asyncio.Future)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 10)
        assert transport._waiter is None
        theirs.sendall(b"after")  # the next read gets it
        assert await asyncio.wait_for(transport.receive_some(100), 10) == b"after"
        await transport.aclose()

    asyncio.run(main())


def test_a_task_waiting_for_bytes_wakes_when_the_connection_is_lost(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Resolved other than by the read's callback (a reset), the waiter wakes its task at
    the loop's next pass, as any future does."""
    ours, _ = pair

    async def main() -> None:
        transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
        waiting = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0.01)
        transport._lose()
        assert not waiting.done()
        assert await asyncio.wait_for(waiting, 10) == b""
        await transport.aclose()

    asyncio.run(main())


def test_a_waiter_resolved_now_runs_its_task_in_that_call() -> None:
    """``resolve_now``, from a callback of the loop (a read's), runs the waiting task's
    step before it returns, where ``set_result`` would leave it to the next pass."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        got: list[bytes] = []
        seen_in_the_callback: list[list[bytes]] = []

        async def wait() -> None:
            got.append(await waiter)

        def read() -> None:
            _asyncio_raw.resolve_now(waiter, b"bytes")
            seen_in_the_callback.append(list(got))

        task = asyncio.ensure_future(wait())
        await asyncio.sleep(0)  # the task awaits the waiter
        loop.call_soon(read)
        await asyncio.wait_for(task, 10)
        assert seen_in_the_callback == [[b"bytes"]]

    asyncio.run(main())


# -- the session's read: the bytes, or a wait with no coroutine of its own ---------------


def _session(
    transport: RawSocketTransport, stepped: bool, body: Callable[[], Awaitable[None]]
) -> Callable[[], bool]:
    """Run ``body`` as an accepted connection's session (stepped by a runner) or in a
    task; what cancels it, as a deadline would."""
    if stepped:
        runner = transport._runner = SessionRunner(transport._loop, lambda runner: None)

        async def session() -> None:
            await body()

        runner.start(session())
        return runner.cancel
    task = asyncio.ensure_future(body())
    return task.cancel


@pytest.mark.parametrize("stepped", [True, False], ids=["runner", "task"])
def test_receive_or_wait_gives_the_bytes_or_a_wait_and_then_the_end_of_the_stream(
    pair: tuple[socket.socket, socket.socket], stepped: bool
) -> None:
    """What has come at once; else what to await (the runner's bare wait, after which
    the bytes are asked for again, or a future in a task, whose result they are);
    ``b""`` at the end."""
    ours, theirs = pair

    async def main() -> None:
        transport = RawSocketTransport(ours, None, asyncio.get_running_loop())
        seen: list[object] = []

        async def body() -> None:
            for _ in range(3):
                got = transport.receive_or_wait(100)
                while not isinstance(got, bytes):
                    seen.append(got)
                    data = await got
                    if data is not None:  # read for the task
                        assert not stepped
                        got = data
                        break
                    assert stepped  # the wait is over: ask again
                    got = transport.receive_or_wait(100)
                seen.append(got)

        _session(transport, stepped, body)
        await asyncio.sleep(0.01)
        wait = seen[0]
        assert wait is WOKEN if stepped else isinstance(wait, asyncio.Future)
        assert transport._reading  # watched while the session waits
        theirs.sendall(b"one")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if b"one" in seen:
                break
        theirs.sendall(b"two")
        theirs.shutdown(socket.SHUT_WR)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if b"" in seen:
                break
        assert [got for got in seen if isinstance(got, bytes)] == [b"one", b"two", b""]
        assert transport.receive_or_wait(100) == b""  # and so on
        assert not transport._reading
        await transport.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("stepped", [True, False], ids=["runner", "task"])
def test_a_wait_given_up_leaves_the_socket_unwatched_and_the_bytes_for_the_next_read(
    pair: tuple[socket.socket, socket.socket], stepped: bool
) -> None:
    """A wait cancelled (a deadline, a shutdown) has no ``finally`` of the transport's
    to run: the selector's next call finds nobody waiting and stops watching the
    socket (a level-triggered selector would call it at every pass), and the bytes
    stay in the kernel for whoever reads next."""
    ours, theirs = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = RawSocketTransport(ours, None, loop)
        given_up: list[bool] = []

        async def body() -> None:
            got = transport.receive_or_wait(100)
            assert not isinstance(got, bytes)
            try:
                await got
            except asyncio.CancelledError:
                given_up.append(True)
                raise

        cancel = _session(transport, stepped, body)
        await asyncio.sleep(0.01)
        assert transport._reading
        cancel()
        await asyncio.sleep(0.01)
        assert given_up == [True]
        theirs.sendall(b"after")
        calls: list[None] = []

        def counted() -> None:
            calls.append(None)
            transport._run()

        _watch_instead(loop, ours, counted)
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert len(calls) == 1  # once, then no longer watched
        assert not transport._reading
        assert ours.fileno() not in loop._selector.get_map()
        transport._runner = None
        assert await asyncio.wait_for(transport.receive_some(100), 10) == b"after"
        await transport.aclose()

    asyncio.run(main())


def test_the_transport_is_the_selectors_reader_handle_beside_a_writers(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The loop's selector keeps the transport itself as the reader's handle (no
    asyncio.Handle a connection), and add_writer keeps it there beside the
    writer's; when the writer goes, the reader stays."""
    ours, theirs = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        selector = loop._selector  # type: ignore[attr-defined]  # the selector loop's own
        transport = RawSocketTransport(ours, None, loop)
        reading = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0.01)
        assert selector.get_key(ours.fileno()).data == (transport, None)
        transport._writing = True  # as _sent does before add_writer
        loop.add_writer(ours.fileno(), lambda: None)
        reader, writer = selector.get_key(ours.fileno()).data
        assert reader is transport and isinstance(writer, asyncio.Handle)
        transport._writing = False
        loop.remove_writer(ours.fileno())
        assert selector.get_key(ours.fileno()).data == (transport, None)
        theirs.sendall(b"hello")
        assert await asyncio.wait_for(reading, 10) == b"hello"
        await transport.aclose()
        assert ours.fileno() == -1 or ours.fileno() not in selector.get_map()

    asyncio.run(main())


@pytest.mark.parametrize(
    "kind",
    [
        kind
        for kind in ("EpollSelector", "PollSelector", "SelectSelector")
        if hasattr(selectors, kind)
    ],
)
def test_the_transport_is_its_own_selector_key_on_a_selector_over_a_poll_object(
    pair: tuple[socket.socket, socket.socket], kind: str
) -> None:
    """Watched for reads alone, the transport is its own key in a selector over a poll
    object (no SelectorKey a connection), and a SelectorKey holds it in any other;
    either way the selector and the loop read the same fields, a writer's handle
    goes beside it, and the key goes when the reads stop or another's
    remove_reader drops it."""
    ours, theirs = pair
    selector_type = getattr(selectors, kind)
    fd = ours.fileno()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        selector = loop._selector  # type: ignore[attr-defined]  # the selector loop's own
        transport = RawSocketTransport(ours, None, loop)

        async def watched() -> Any:
            reading = asyncio.ensure_future(transport.receive_some(100))
            await asyncio.sleep(0.01)
            key = selector.get_key(fd)
            if selector_type in _asyncio_raw_watch._POLL_LIKE:
                assert key is transport
            else:
                assert isinstance(key, selectors.SelectorKey)
            assert (key.fileobj, key.fd, key.events) == (fd, fd, selectors.EVENT_READ)
            assert key.data == (transport, None)
            return reading

        reading = await watched()
        theirs.sendall(b"hello")
        assert await asyncio.wait_for(reading, 10) == b"hello"
        theirs.sendall(b"unasked")  # nobody reads: no longer watched
        await asyncio.sleep(0.01)
        assert fd not in selector.get_map() and transport.data is None

        reading = await watched()
        assert await asyncio.wait_for(reading, 10) == b"unasked"
        reading = await watched()
        transport._writing = True  # as _sent does before add_writer
        loop.add_writer(fd, lambda: None)
        key = selector.get_key(fd)
        assert isinstance(key, selectors.SelectorKey)
        assert key.events == selectors.EVENT_READ | selectors.EVENT_WRITE
        assert key.data[0] is transport and isinstance(key.data[1], asyncio.Handle)
        transport._writing = False
        loop.remove_writer(fd)
        assert selector.get_key(fd).data == (transport, None)
        assert loop.remove_reader(fd)  # another's: the transport is no longer watched
        assert not transport._reading and transport.data is None
        assert fd not in selector.get_map()
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading

        reading = await watched()
        theirs.sendall(b"again")
        assert await asyncio.wait_for(reading, 10) == b"again"
        await transport.aclose()
        assert fd not in selector.get_map() and transport.data is None

    loop = asyncio.SelectorEventLoop(selector_type())
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_another_remove_reader_of_the_socket_leaves_the_transport_unwatched(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """asyncio cancels the reader's handle it drops: the transport then knows it is
    no longer watched, and watches again at its next wait."""
    ours, theirs = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = RawSocketTransport(ours, None, loop)
        first = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0.01)
        assert transport._reading
        assert loop.remove_reader(ours.fileno())
        assert not transport._reading
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        theirs.sendall(b"again")
        assert await asyncio.wait_for(transport.receive_some(100), 10) == b"again"
        await transport.aclose()

    asyncio.run(main())


def test_a_failure_in_the_read_callback_goes_to_the_loops_exception_handler(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """As a handle's run does: the loop goes on, and its exception handler is told."""
    ours, theirs = pair

    class Broken(SessionRunner):
        def wake(self) -> None:
            raise RuntimeError("broken on purpose")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        told: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: told.append(context))
        runner = Broken(loop, lambda _runner: None)
        runner.waiting = True
        transport = RawSocketTransport(ours, None, loop, runner)
        transport._want = 1  # a read of one byte waits
        transport._watch_reads()
        theirs.sendall(b"x")
        for _ in range(50):
            await asyncio.sleep(0.01)
            if told:
                break
        assert isinstance(told[0]["exception"], RuntimeError)
        transport._want = _asyncio_raw_watch._NOTHING
        await transport.aclose()

    asyncio.run(main())


def test_a_read_callback_queued_before_the_session_closed_does_nothing(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The selector said the socket was readable, and a callback earlier in the same
    pass closed the session: the transport's run, already queued, does nothing (as
    the loop skips a cancelled handle), and the loop's exception handler hears
    nothing."""
    ours, _theirs = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        told: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: told.append(context))
        transport = RawSocketTransport(ours, None, loop)
        reading = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0.01)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        await transport.aclose()  # no longer watched
        transport._run()  # as the loop runs it when it was queued before the close
        await asyncio.sleep(0.01)
        assert told == []

    asyncio.run(main())


# -- writes held to the loop's next pass (HeldWrites) ---------------------------------------


def _held_transport(sock: socket.socket) -> RawSocketTransport:
    """A transport over ``sock`` whose writes may be held, as a server's are."""
    loop = asyncio.get_running_loop()
    return RawSocketTransport(sock, None, loop, writes=HeldWrites(loop))


def _nothing() -> None:
    pass


def test_a_write_with_nothing_else_to_run_in_the_pass_goes_out_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair

    async def main() -> None:
        transport = _held_transport(ours)
        assert not asyncio.get_running_loop()._ready  # type: ignore[attr-defined]
        assert transport.send_nowait(b"250 OK\r\n") == 8
        assert transport._held is None
        assert received_now(theirs) == b"250 OK\r\n"
        await transport.aclose()

    asyncio.run(main())


def test_writes_while_others_wait_to_run_go_out_together_at_the_next_pass(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = _held_transport(ours)
        loop.call_soon(_nothing)  # another callback waits to run in this pass
        assert transport.send_nowait(b"250 first\r\n") == 11  # taken, as a write is
        assert transport.send_nowait(b"250 second\r\n") == 12
        assert received_now(theirs) == b""  # held
        await asyncio.sleep(0)  # the next pass
        assert received_now(theirs) == b"250 first\r\n250 second\r\n"
        assert transport._held is None
        await transport.aclose()

    asyncio.run(main())


def test_held_bytes_go_before_a_later_write_and_before_the_close(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = _held_transport(ours)
        loop.call_soon(_nothing)
        transport.send_nowait(b"250 held\r\n")
        await transport.send_all(b"354 go ahead\r\n")
        assert received_now(theirs) == b"250 held\r\n354 go ahead\r\n"
        loop.call_soon(_nothing)
        transport.send_nowait(b"221 bye\r\n")
        await transport.aclose()  # in the same pass: the held reply first
        assert ours.fileno() == -1
        assert theirs.recv(100) == b"221 bye\r\n"
        assert theirs.recv(100) == b""
        await asyncio.sleep(0)  # the held writes' pass finds nothing left to write

    asyncio.run(main())


def test_held_bytes_the_kernel_cannot_take_whole_wait_for_room_and_all_arrive(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = _held_transport(ours)
        loop.call_soon(_nothing)
        payload = PAYLOAD[: _asyncio_raw_writes._HOLD_AT_MOST]  # as much as may be held
        assert transport.send_nowait(payload) == len(payload)
        await asyncio.sleep(0)
        pending = transport._out
        assert pending is not None and 0 < len(pending) < len(payload)
        assert transport._writing  # watched for room, with nobody awaiting it
        assert transport.send_nowait(b"more") == 0  # behind what waits
        received = bytearray()
        reader = threading.Thread(
            target=read_until, args=(theirs, received, len(payload) + len(b"after"))
        )
        reader.start()
        await transport.send_all(b"after")
        await asyncio.to_thread(reader.join, 30)
        assert received == payload + b"after"
        assert transport._out is None and not transport._writing
        await transport.aclose()

    asyncio.run(main())


def test_a_held_write_to_a_reset_connection_loses_it() -> None:
    server = socket.create_server((LOOPBACK, 0))
    with server, socket.create_connection(server.getsockname(), timeout=10) as theirs:
        ours, _ = server.accept()
        ours.setblocking(False)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            transport = _held_transport(ours)
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            theirs.close()  # RST, which nothing reads before the held write
            time.sleep(0.05)
            loop.call_soon(_nothing)
            assert transport.send_nowait(b"250 OK\r\n") == 8  # held
            await asyncio.sleep(0)  # written: the kernel refuses it
            assert transport._lost and transport._held is None
            assert await transport.receive_some(100) == b""
            with pytest.raises(ConnectionError):
                transport.send_nowait(b"after")
            await transport.aclose()
            assert ours.fileno() == -1

        asyncio.run(main())


def test_a_connection_holds_a_bounded_amount_and_a_larger_write_goes_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """What a connection holds stays within ``_HOLD_AT_MOST``: a write that would hold
    more goes at once, after what waits (a POP3 message's content among others'
    replies must not gather in memory)."""
    ours, theirs = pair
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    bound = _asyncio_raw_writes._HOLD_AT_MOST

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = _held_transport(ours)
        loop.call_soon(_nothing)
        first = b"a" * (bound - 10)
        assert transport.send_nowait(first) == len(first)
        assert transport._held == first
        second = b"b" * 20
        assert transport.send_nowait(second) == len(second)  # written at once, in order
        assert transport._held is None
        received = bytearray()
        read_until(theirs, received, len(first) + len(second))
        assert received == first + second
        big = b"c" * (bound + 1)
        assert transport.send_nowait(big) == len(big)  # too big to hold at all
        assert transport._held is None
        received.clear()
        read_until(theirs, received, len(big))
        assert received == big
        await asyncio.sleep(0)
        await transport.aclose()

    asyncio.run(main())


def test_writes_are_held_only_on_a_loop_whose_ready_queue_is_known() -> None:
    """A loop without the selector loop's ``_ready`` (a Python that changed it) writes
    every reply at once, and still serves over the raw socket."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(HeldWrites.for_loop(loop), HeldWrites)
        assert serves_raw(loop)

    asyncio.run(main())
    assert HeldWrites.for_loop(cast(asyncio.AbstractEventLoop, object())) is None


def test_a_held_reply_goes_out_in_clear_before_the_tls_handshake(tls: TLSFiles) -> None:
    """STARTTLS's 220, held while others run in the pass, is written before the socket
    is handed over for the handshake (the client reads it in clear, then starts TLS)."""
    listener = socket.create_server((LOOPBACK, 0))
    result: list[bytes] = []

    thread = threading.Thread(
        target=starttls_client, args=(listener.getsockname(), tls.client_context, result)
    )
    thread.start()
    with listener:
        ours, _ = listener.accept()
        ours.setblocking(False)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            transport = _held_transport(ours)
            loop.call_soon(_nothing)
            transport.send_nowait(b"220 2.0.0 Ready to start TLS\r\n")
            assert transport._held is not None
            await transport.start_tls(tls.server_context, server_side=True)
            assert transport.tls is not None
            assert await transport.receive_some(100) == b"EHLO client.test\r\n"
            await transport.send_all(b"250 mx.test\r\n")
            await transport.aclose()

        asyncio.run(main())
        thread.join(10)
    assert result == [b"220 2.0.0 Ready to start TLS\r\n", b"250 mx.test\r\n"]


def test_a_held_write_waiting_for_room_while_the_session_waits_for_bytes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The rest of a held write waits for room while the session waits for its client:
    the socket is watched both ways at once, and each wait ends as it should."""
    ours, theirs = pair

    def peer(received: bytearray, size: int) -> None:
        read_until(theirs, received, size)
        theirs.sendall(b"NOOP\r\n")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = _held_transport(ours)
        reading = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0)  # the session waits for its client
        assert transport._reading
        loop.call_soon(_nothing)
        payload = PAYLOAD[: _asyncio_raw_writes._HOLD_AT_MOST]
        transport.send_nowait(payload)
        await asyncio.sleep(0)  # written: the kernel takes part of it
        assert transport._out is not None and transport._writing and transport._reading
        received = bytearray()
        thread = threading.Thread(target=peer, args=(received, len(payload)))
        thread.start()
        assert await asyncio.wait_for(reading, 30) == b"NOOP\r\n"
        await asyncio.to_thread(thread.join, 30)
        assert received == payload
        assert transport._out is None and not transport._writing
        await transport.aclose()

    asyncio.run(main())
