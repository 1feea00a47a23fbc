"""A session interrupted in a write (the command timeout, or a shutdown, cancelling a
``send_all`` to a client that does not read) ends with a last word only where the
transport kept every byte of the write: the client holds whole replies, and the
``421`` (POP3's ``-ERR``) follows them (RFC 5321 §3.8). Where the transport drops the
rest of a cancelled write (trio's streams), the client may hold part of a reply, and
a last word after it would land inside it, mid-line (RFC 5321 §4.2: a reply is whole
lines): the session just closes. POP3's multi-line side (a ``RETR`` cut off) is in
``test_pop3_adapters.py``."""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import smtpcore.asyncio as smtp_asyncio
import smtpcore.trio as smtp_trio
from never_reader import (
    never_reader,
    pipeline_until_the_write_waits,
    pop3_logged_in,
    read_line_of,
    smtp_helo_answered,
)
from peers import TLSFiles, running_pop3_server, running_smtp_server, write_maildir
from smtpcore._asyncio_raw import RawSocketTransport
from smtpcore._asyncio_tls import TLSLayer
from smtpcore._driver._served_session import ServedSession
from smtpcore._driver._session_registry import SessionRegistry
from smtpcore.handler import Handler
from smtpcore.maildrop import MaildirStore

PART = 8
"""How much of the stalled write reaches the client: ``250 2.0.`` of ``250 2.0.0 OK``."""


class StallingStream(trio.abc.Stream):
    """One end of a memory stream pair whose next ``send_all``, once :attr:`stall` is
    set, delivers the first :data:`PART` octets and then waits for ever, as
    ``trio.SocketStream.send_all`` to a client that reads nothing does once the
    kernel's buffers are full; cancelled, it drops the rest."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.stall = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.stall:
            self.stall = False
            await self.inner.send_all(bytes(data)[:PART])
            await trio.sleep_forever()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def read_line(stream: trio.abc.Stream, buffer: bytearray) -> bytes:
    while b"\r\n" not in buffer:
        buffer += await stream.receive_some()
    line, _, rest = bytes(buffer).partition(b"\r\n")
    buffer[:] = rest
    return line


@pytest.mark.parametrize("cut_by", ["the command timeout", "a shutdown"])
def test_trio_an_smtp_write_cut_off_part_way_gets_no_421_after_its_part(cut_by: str) -> None:
    """The 421 (``4.4.2 Timeout exceeded``, ``4.3.2 Service shutting down``) went out
    right after the part of the reply the cancelled write had sent: the client read
    ``250 2.0.421 4.4.2 mx.test Timeout exceeded``. Now it reads the part, then the
    end."""
    command_timeout = 0.2 if cut_by == "the command timeout" else 60.0

    async def body() -> bytes:
        server = smtp_trio.SMTPServer(
            Handler(), hostname="mx.test", timeouts=smtp_trio.Timeouts(command=command_timeout)
        )
        server_end, client_end = trio.testing.memory_stream_pair()
        stalling = StallingStream(server_end)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, stalling)
            buffer = bytearray()
            with trio.fail_after(10):
                assert (await read_line(client_end, buffer)).startswith(b"220 ")
                await client_end.send_all(b"HELO client.test\r\n")
                assert (await read_line(client_end, buffer)).startswith(b"250 ")
                stalling.stall = True
                await client_end.send_all(b"NOOP\r\n")
                if cut_by == "a shutdown":
                    await trio.testing.wait_all_tasks_blocked()  # the write has stalled
                    nursery.start_soon(functools.partial(server.aclose, grace=0.1))
                received = bytes(buffer)
                while chunk := await client_end.receive_some():
                    received += chunk
        return received

    assert trio.run(body) == b"250 2.0."


# -- asyncio: a cancelled write keeps its bytes, and the last word follows them ---------


@dataclass
class WriteWatch:
    """What the asyncio server's socket transport tells of its writes to a client that
    does not read: :attr:`waiting` once a write waits for room (the kernel took only
    part of it), :attr:`cut` once such a wait is interrupted (the session's timeout or
    its shutdown: the bytes still queued go out all the same)."""

    waiting: threading.Event = field(default_factory=threading.Event)
    cut: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def write_watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteWatch]:
    watch = WriteWatch()
    wait_for_room = RawSocketTransport._sent

    async def watched(transport: RawSocketTransport) -> None:
        watch.waiting.set()
        try:
            await wait_for_room(transport)
        except BaseException:
            watch.cut.set()
            raise

    monkeypatch.setattr(RawSocketTransport, "_sent", watched)
    yield watch


def watch_the_cut_off(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once a shutdown's grace is over and its cut-off has reached the sessions
    (``SessionRegistry.cut_off``), as ``test_stop_mid_commit``'s fixture of that name."""
    done = threading.Event()
    original = SessionRegistry.cut_off

    def seen(registry: SessionRegistry[Any]) -> None:
        original(registry)
        done.set()

    monkeypatch.setattr(SessionRegistry, "cut_off", seen)
    return done


def read_to_the_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (64 MiB at most), read at once, on
    a receive buffer grown again: left unread, the server's close would reset the
    connection and lose it, and read through the tiny one it would crawl."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    received = bytearray()
    while len(received) < 1 << 26 and (chunk := sock.recv(1 << 16)):
        received += chunk
    return bytes(received)


@pytest.mark.parametrize("cut_by", ["the command timeout", "a shutdown"])
def test_asyncio_an_smtp_write_interrupted_keeps_its_replies_and_then_gets_its_421(
    cut_by: str, write_watch: WriteWatch
) -> None:
    """An idle client that pipelined HELPs and reads slowly: its session's write of
    the replies waits, and a shutdown (or the command timeout) interrupts it. asyncio
    loses none of the bytes of a cancelled write, so the client reads every reply
    and then ``421 4.3.2`` (``4.4.2``), as RFC 5321 §3.8 wants: not the close alone,
    which treating the interruption as a cut write gave."""
    options: dict[str, Any] = {"max_junk_commands": 10**9}
    if cut_by == "the command timeout":
        options["timeouts"] = smtp_asyncio.Timeouts(command=1.0)
    closing: threading.Thread | None = None
    with (
        running_smtp_server("asyncio", Handler(), **options) as server,
        never_reader() as sock,
    ):
        sock.connect(("127.0.0.1", server.port))
        smtp_helo_answered(sock)
        sock.sendall(b"HELP\r\n")  # 81 octets for 6: the replies soon fill the buffers
        help_reply = read_line_of(sock)
        assert help_reply.startswith(b"214 ")
        pipeline_until_the_write_waits(sock, b"HELP\r\n" * 10_000, write_watch.waiting)
        if cut_by == "a shutdown":
            closing = threading.Thread(target=server.call, args=(server.server.aclose,))
            closing.start()
        assert write_watch.cut.wait(10)
        received = read_to_the_end(sock)
        if closing is not None:
            closing.join(30)
            assert not closing.is_alive()
    lines = received.split(b"\r\n")
    assert lines[-1] == b"", received[-80:]
    reason = "Service shutting down" if cut_by == "a shutdown" else "Timeout exceeded"
    status = "4.3.2" if cut_by == "a shutdown" else "4.4.2"
    assert lines[-2] == f"421 {status} mx.test {reason}".encode(), lines[-3:]
    assert len(lines) > 3 and set(lines[:-2]) == {help_reply[:-2]}, set(lines[:-2])


def test_asyncio_a_pop3_write_interrupted_keeps_its_responses_and_then_gets_its_err(
    tmp_path: Path, write_watch: WriteWatch
) -> None:
    """A client that pipelined CAPAs and stopped reading, its write cut off when the
    shutdown's grace ran out: the session closed without ``-ERR [SYS/TEMP]``, as if
    the write had been cut part-way, although asyncio had kept all of it and the
    client read every response whole. It now reads them, then the ``-ERR``."""
    write_maildir(tmp_path / "alice", [b"Subject: hi\r\n\r\nhello\r\n"])
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    with (
        running_pop3_server("asyncio", store) as server,
        never_reader() as sock,
    ):
        sock.connect(("127.0.0.1", server.port))
        pop3_logged_in(sock)
        sock.sendall(b"CAPA\r\n")  # 125 octets for 6: the responses soon fill the buffers
        capa = b""
        while not capa.endswith(b"\r\n.\r\n") and len(capa) < 4096:
            capa += read_line_of(sock)
        pipeline_until_the_write_waits(sock, b"CAPA\r\n" * 10_000, write_watch.waiting)
        closing = threading.Thread(
            target=server.call, args=(lambda: server.server.aclose(grace=0.3),)
        )
        closing.start()
        assert write_watch.cut.wait(10)
        received = read_to_the_end(sock)
        closing.join(30)
        assert not closing.is_alive()
    goodbye = b"-ERR [SYS/TEMP] Server shutting down\r\n"
    assert received.endswith(goodbye), received[-80:]
    responses = received[: -len(goodbye)]
    assert len(responses) > len(capa) and responses == capa * (len(responses) // len(capa))


# -- TLS: the replies sent before the cut reach the client ------------------------------


def watch_tls_writes(adapter: str, monkeypatch: pytest.MonkeyPatch) -> WriteWatch:
    """What :class:`WriteWatch` tells, of the server's writes under TLS: on trio, the
    writes of the ``SocketStream`` under the ``SSLStream`` (``waiting`` once the
    kernel did not take all of one); on asyncio, its TLS layer's over the raw socket
    (``waiting`` once the socket is watched for room), or asyncio's TLS transport's
    (``waiting`` once it pauses the protocol's writing)."""
    watch = WriteWatch()
    if adapter == "trio":
        send_all = trio.SocketStream.send_all

        async def watched_trio(stream: trio.SocketStream, data: Any) -> None:
            view = memoryview(data)
            try:
                sent = os.write(stream.socket.fileno(), view)
            except BlockingIOError:
                sent = 0
            if sent == len(view):
                await trio.lowlevel.checkpoint()
                return
            watch.waiting.set()
            try:
                await send_all(stream, view[sent:])
            except BaseException:
                watch.cut.set()
                raise

        monkeypatch.setattr(trio.SocketStream, "send_all", watched_trio)
    else:
        pause_writing = smtp_asyncio.AsyncioTransport.pause_writing
        transport_send_all = smtp_asyncio.AsyncioTransport.send_all

        def paused(transport: smtp_asyncio.AsyncioTransport) -> None:
            watch.waiting.set()
            pause_writing(transport)

        async def watched_asyncio(transport: smtp_asyncio.AsyncioTransport, data: bytes) -> None:
            try:
                await transport_send_all(transport, data)
            except BaseException:
                watch.cut.set()
                raise

        monkeypatch.setattr(smtp_asyncio.AsyncioTransport, "pause_writing", paused)
        monkeypatch.setattr(smtp_asyncio.AsyncioTransport, "send_all", watched_asyncio)
        watch_for_room = RawSocketTransport._watch_for_room
        layer_send_all = TLSLayer.send_all

        def watched_for_room(transport: RawSocketTransport) -> None:
            if transport._inner is None:  # the socket beneath a TLS layer
                watch.waiting.set()
            watch_for_room(transport)

        async def watched_layer(layer: TLSLayer, data: bytes) -> None:
            try:
                await layer_send_all(layer, data)
            except BaseException:
                watch.cut.set()
                raise

        monkeypatch.setattr(RawSocketTransport, "_watch_for_room", watched_for_room)
        monkeypatch.setattr(TLSLayer, "send_all", watched_layer)
    return watch


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_tls_write_cut_off_by_a_shutdown_leaves_the_client_the_replies_sent(
    adapter: str,
    protocol: str,
    tls: TLSFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client over TLS that pipelined commands and stopped reading, its session's
    write cut off by a shutdown. On trio the client read nothing at all, not even
    the replies the server's kernel had sent before the cut: trio's ``SSLStream`` is
    broken by a cancelled write, so the linger could not read the client's pending
    commands, and the close with them unread reset the connection, which makes the
    client's kernel drop what it had not read (RFC 1122 §4.2.2.13). The linger now
    reads them under the broken TLS layer: the client reads every whole reply the
    server had sent, then the end (a reply the cut left in part, but no last word).

    On asyncio, nothing of the write is lost: a client that reads within the last
    words after the cut-off gets every reply, then the last word. It reads once the
    cut-off has come, not once a write is cancelled: asyncio's TLS layer takes a
    whole write and keeps what the kernel does not take, so a POP3 session waits in
    its read, is woken as idle when the shutdown begins and queues its ``-ERR``
    behind the kept records, and the first write cancelled is that one, when the
    session is dropped :data:`~smtpcore._driver._shutdown.LAST_WORDS` after the
    cut-off (a client reading only then races the close, which, with its commands
    unread, resets the connection: RFC 1122 §4.2.2.13). The last words are made
    longer than any read here takes: the order of events alone decides."""
    watch = watch_tls_writes(adapter, monkeypatch)
    cut_off = threading.Event()
    if adapter == "asyncio":
        cut_off = watch_the_cut_off(monkeypatch)
        monkeypatch.setattr("smtpcore._driver._shutdown.LAST_WORDS", 30.0)
    server_options: dict[str, Any] = {"ssl_context": tls.server_context, "tls_on_connect": True}
    if protocol == "smtp":
        running = running_smtp_server(
            adapter, Handler(), max_junk_commands=10**9, **server_options
        )
        login, command = b"EHLO client.test\r\n", b"HELP\r\n"
        goodbye = b"421 4.3.2 mx.test Service shutting down\r\n"
    else:
        write_maildir(tmp_path / "alice", [b"Subject: hi\r\n\r\nhello\r\n"])
        store = MaildirStore(tmp_path, {"alice": "wonderland"})
        running = running_pop3_server(adapter, store, **server_options)
        login, command = b"USER alice\r\nPASS wonderland\r\n", b"CAPA\r\n"
        goodbye = b"-ERR [SYS/TEMP] Server shutting down\r\n"
    with running as server, never_reader() as plain:
        plain.connect(("127.0.0.1", server.port))
        with tls.client_context.wrap_socket(plain, server_hostname="127.0.0.1") as sock:
            greeting = read_line_of(sock)
            assert greeting.startswith((b"220 ", b"+OK"))
            sock.sendall(login)
            if protocol == "smtp":
                while not (line := read_line_of(sock)).startswith(b"250 "):
                    assert line.startswith(b"250-"), line
            else:
                assert read_line_of(sock).startswith(b"+OK") and read_line_of(sock).startswith(
                    b"+OK"
                )
            sock.sendall(command)
            unit = read_line_of(sock)  # a reply, or a response whole: what repeats
            while protocol == "pop3" and not unit.endswith(b"\r\n.\r\n") and len(unit) < 4096:
                unit += read_line_of(sock)
            pipeline_until_the_write_waits(sock, command * 10_000, watch.waiting)
            closing = threading.Thread(
                target=server.call, args=(lambda: server.server.aclose(grace=0.3),)
            )
            closing.start()
            if adapter == "trio":
                # Read once the server has closed: a reset would have come by then.
                assert watch.cut.wait(10)
                closing.join(30)
            else:
                # Read once the grace is over, within the last words: an asyncio server
                # still writes what it kept, as the client reads it, then the goodbye.
                assert cut_off.wait(10)
            received = read_to_the_end(sock)
            closing.join(30)
            assert not closing.is_alive()
    if adapter == "asyncio":
        assert received.endswith(goodbye), received[-80:]
        replies = received[: -len(goodbye)]
        assert len(replies) > len(unit) and replies == unit * (len(replies) // len(unit))
    else:
        whole, part = divmod(len(received), len(unit))
        assert whole > 0, received
        assert received == unit * whole + unit[:part], received[-80:]


def test_trio_a_tls_write_cancelled_before_it_sent_anything_ends_with_tls_close(
    tls: TLSFiles,
) -> None:
    """A write over a user's ``trio.SSLStream`` cancelled before it sent a byte (the
    cancellation pending as it starts: trio raises before it encrypts anything, and the
    stream stays whole) was taken to have broken the TLS layer: the linger half-closed
    the socket under it and read the client's commands as raw records, and the client
    met the socket's end with no TLS close (``SSLEOFError``). The linger now reads
    through TLS, and the client reads TLS's close (close_notify): a clean end."""

    async def body() -> tuple[bytes, bytes]:
        server_socket, client_socket = trio.socket.socketpair()
        server_tls = trio.SSLStream(
            trio.SocketStream(server_socket), tls.server_context, server_side=True
        )
        client = trio.SSLStream(
            trio.SocketStream(client_socket), tls.client_context, server_hostname="mx.test"
        )
        transport = smtp_trio.TrioTransport(server_tls)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.do_handshake)
                await server_tls.do_handshake()
            with trio.CancelScope() as scope:
                scope.cancel()
                await transport.send_all(b"250 2.0.0 OK\r\n")
            assert scope.cancelled_caught
            await client.send_all(b"NOOP\r\n")
            await transport.send_eof()  # the linger's steps, then the close
            dropped = await transport.receive_to_drop(100)
            await transport.aclose()
            try:
                return dropped, bytes(await client.receive_some())
            except trio.BrokenResourceError as exc:
                return dropped, repr(exc.__cause__).encode()

    assert trio.run(body) == (b"NOOP\r\n", b"")


def test_trio_a_client_whose_tls_write_was_cut_off_reads_the_end_while_the_server_lingers(
    tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write under TLS cut off part-way (the command timeout) breaks trio's
    ``SSLStream``, which sends no more records, not even TLS's close: the linger
    half-closes the socket under it, so that a client that reads only now reads the
    replies sent and then the end, while the server still lingers for the client's
    own close, not once the linger has run out."""
    watch = watch_tls_writes("trio", monkeypatch)
    events: list[str] = []
    linger = ServedSession._linger

    async def watched_linger(session: ServedSession) -> None:
        try:
            await linger(session)
        finally:
            events.append("the linger is over")

    monkeypatch.setattr(ServedSession, "_linger", watched_linger)
    # Far longer than the client takes to read the end: the order tells which came first.
    monkeypatch.setattr("smtpcore._driver._session_closing.LINGER", 5.0)
    with (
        running_smtp_server(
            "trio",
            Handler(),
            max_junk_commands=10**9,
            ssl_context=tls.server_context,
            tls_on_connect=True,
            timeouts=smtp_trio.Timeouts(command=1.0),
        ) as server,
        never_reader() as plain,
    ):
        plain.connect(("127.0.0.1", server.port))
        with tls.client_context.wrap_socket(plain, server_hostname="127.0.0.1") as sock:
            assert read_line_of(sock).startswith(b"220 ")
            sock.sendall(b"HELP\r\n")
            unit = read_line_of(sock)
            assert unit.startswith(b"214 ")
            pipeline_until_the_write_waits(sock, b"HELP\r\n" * 10_000, watch.waiting)
            assert watch.cut.wait(10)
            received = read_to_the_end(sock)
            events.append("the client has read the end")
    assert events == ["the client has read the end", "the linger is over"]
    whole, part = divmod(len(received), len(unit))
    assert whole > 0 and received == unit * whole + unit[:part], received[-80:]
