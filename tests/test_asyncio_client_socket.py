"""The asyncio client's own TCP transport: reads and writes on the socket itself.

It must do for a client what :class:`~smtpcore.asyncio.AsyncioTransport`
does: reads of any size that lose no byte, a flood held back and then read
on, writes the kernel cannot take at once, the end of the stream, a close
that wakes a waiting read, and TLS handed over to asyncio with what came
before the handshake dropped (RFC 3207 §4.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from peers import free_port, make_tls_files
from smtpcore import _asyncio_raw
from smtpcore._asyncio_client import _client_link, _connect
from smtpcore._asyncio_client_socket import SocketClientTransport, connect_socket
from smtpcore.asyncio import SMTPClient, SMTPConnectionError

Scenario = Callable[[SocketClientTransport, socket.socket], Awaitable[None]]


@pytest.fixture(autouse=True, params=["own handle", "add_reader"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every scenario twice: with the transport as its own reader handle in the
    selector loop's selector, and through ``loop.add_reader``, as on any other
    event loop (``serves_raw`` false)."""
    monkeypatch.setattr(_asyncio_raw, "enabled", request.param == "own handle")
    mode: str = request.param
    return mode


def run(scenario: Scenario) -> None:
    """``scenario`` with a transport over TCP and a blocking socket at the other end."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)

    async def main() -> None:
        with listener:
            port = listener.getsockname()[1]
            connecting = asyncio.ensure_future(_connect(5, "127.0.0.1", port, None))
            peer, _ = await asyncio.get_running_loop().sock_accept(listener)
            transport = await connecting
            assert isinstance(transport, SocketClientTransport)
            with peer:
                peer.setblocking(True)
                try:
                    await scenario(transport, peer)
                finally:
                    await transport.aclose()

    asyncio.run(main())


def test_reads_of_any_size_lose_no_byte() -> None:
    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        peer.sendall(b"250 first\r\n")
        assert await transport.receive_some(4) == b"250 "
        assert transport.receive_nowait(100) == b"first\r\n"
        assert transport.receive_nowait(100) is None
        assert transport.drained()
        waiting = transport.next_bytes()
        assert isinstance(waiting, asyncio.Future)
        peer.sendall(b"250 second\r\n")
        assert await waiting == b"250 second\r\n"
        peer.sendall(b"250 third\r\n")
        assert await transport.receive_some(65536) == b"250 third\r\n"
        assert transport.peer_address == peer.getsockname()
        assert transport.local_address == peer.getpeername()
        assert transport.tls is None

    run(scenario)


def test_a_second_read_while_one_waits_is_refused() -> None:
    """One read slot: a second read started while one waits (two tasks reading one
    client) is a RuntimeError, as asyncio's StreamReader makes it, not a silent swap
    that leaves the first reader waiting for bytes the second took. A read cancelled
    or timed out leaves the slot free."""

    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        first = asyncio.ensure_future(transport.receive_some(100))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="another read"):
            await asyncio.wait_for(transport.receive_some(100), 1)
        with pytest.raises(RuntimeError, match="another read"):
            transport.next_bytes()
        peer.sendall(b"250 ok\r\n")
        assert await asyncio.wait_for(first, 5) == b"250 ok\r\n"
        waiting = transport.next_bytes()
        assert waiting is not None
        with pytest.raises(RuntimeError, match="another read"):
            transport.next_bytes()
        waiting.cancel()
        later = transport.next_bytes()
        assert later is not None
        peer.sendall(b"250 again\r\n")
        assert await asyncio.wait_for(later, 5) == b"250 again\r\n"

    run(scenario)


def test_a_flood_is_held_back_then_read_on() -> None:
    block = b"x" * 65536
    total = 4 << 20

    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        def flood() -> None:
            with contextlib.suppress(OSError):
                for _ in range(total // len(block)):
                    peer.sendall(block)

        writer = threading.Thread(target=flood)
        writer.start()
        await asyncio.sleep(0.3)
        assert not transport.drained()
        assert transport._buffered <= (1 << 20) + len(block)  # held back at the high water
        received = 0
        while received < total:
            received += len(await transport.receive_some(65536))
        await asyncio.to_thread(writer.join, 10)
        assert received == total

    run(scenario)


def test_a_write_the_kernel_cannot_take_at_once_waits_for_the_rest() -> None:
    data = bytes(range(256)) * 40000  # 10 MB: more than the socket buffers hold

    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        got: list[bytes] = []

        def drain() -> None:
            size = 0
            while size < len(data):
                chunk = peer.recv(1 << 20)
                got.append(chunk)
                size += len(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        await transport.send_all(data)
        await asyncio.to_thread(reader.join, 10)
        assert b"".join(got) == data

    run(scenario)


async def _watched_for_room(fd: int) -> None:
    """Until the loop's selector watches ``fd`` for room (a write waits)."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    while True:
        key = selector.get_map().get(fd)
        if key is not None and key.events & selectors.EVENT_WRITE:
            return
        await asyncio.sleep(0.01)


def test_a_close_from_another_task_ends_a_waiting_write_and_frees_the_number() -> None:
    """``client.close()`` from another task while a write waits for room (a server that
    stopped reading): the loop stopped watching the socket before it closed, the
    write fails as over a reset connection, and the descriptor's number, which the
    kernel gives the next socket at once, is that socket's. The watch was left
    behind: the write waited until its own timeout, the next socket with that number
    could not be watched (a connect never completed), and the write's unwinding took
    away whatever watch was on the number then."""

    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        fd = transport._fd
        sending = asyncio.ensure_future(transport.send_all(b"x" * (16 << 20)))
        await asyncio.wait_for(_watched_for_room(fd), 30)  # the peer never reads
        await transport.aclose()
        assert fd not in loop._selector.get_map()  # type: ignore[attr-defined]
        ours, theirs = socket.socketpair()  # the kernel gives the number to the next socket
        with ours, theirs:
            assert ours.fileno() == fd
            readable = loop.create_future()
            loop.add_reader(fd, _wake_once, readable)
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(sending, 30)
            theirs.send(b"x")  # the write's unwinding left the new socket's watch alone
            await asyncio.wait_for(readable, 30)
            loop.remove_reader(fd)
        again = await asyncio.wait_for(_connect(30, "127.0.0.1", peer.getsockname()[1], None), 30)
        try:
            assert isinstance(again, SocketClientTransport)
            assert again._fd == fd
            await again.send_all(b"QUIT\r\n")
        finally:
            await again.aclose()

    run(scenario)


def test_a_client_closed_from_another_task_ends_its_waiting_send_message() -> None:
    """The same through the public client (which ``POP3Client`` shares): a
    ``send_message`` whose content a server stopped reading fails with
    :class:`SMTPConnectionError` once another task closes the client, and the next
    client, given the same descriptor number, connects and says QUIT."""

    async def main() -> None:
        done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 stalls.test ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-stalls.test\r\n250 PIPELINING\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    await done.wait()  # and reads no more
                    break
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 OK\r\n")
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            client = SMTPClient("127.0.0.1", port, starttls=False)
            await client.connect()
            assert client._transport is not None
            fd = client._transport.transport._fd  # type: ignore[attr-defined]
            content = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (16 << 10)
            sending = asyncio.ensure_future(
                client.send_message(content, "a@abc.example", ["b@pqr.example"])
            )
            await asyncio.wait_for(_watched_for_room(fd), 30)
            await client.close()  # from another task
            with pytest.raises(SMTPConnectionError):
                await asyncio.wait_for(sending, 30)
            other = SMTPClient("127.0.0.1", port, starttls=False)
            await asyncio.wait_for(other.connect(), 30)
            assert other._transport is not None
            assert other._transport.transport._fd == fd  # type: ignore[attr-defined]
            await other.quit()
            done.set()

    asyncio.run(main())


def _wake_once(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def test_a_reply_read_resumes_the_waiting_task_in_the_read_callback() -> None:
    """The future a client awaits for its reply (``next_bytes``) runs the client's task
    as the event loop's read callback resolves it: no pass of the loop (and no
    ``epoll_wait``) between the bytes and the client. A callback queued before the
    bytes came runs after the task has its reply."""

    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        future = transport.next_bytes()
        assert future is not None

        def queued_after_the_read() -> None:
            order.append("next pass")

        class Marked:
            """The transport's reader handle, marked as it runs."""

            _cancelled = False

            def _run(self) -> None:
                loop.call_soon(queued_after_the_read)
                transport._run()

        if transport._own:
            selector = loop._selector  # type: ignore[attr-defined]
            assert selector.get_key(transport._fd).data == (transport, None)
            selector.modify(transport._fd, selectors.EVENT_READ, (Marked(), None))
        else:
            loop.remove_reader(transport._fd)
            loop.add_reader(transport._fd, Marked()._run)
            transport._reading = True  # remove_reader cancelled the transport's handle
        peer.sendall(b"250 OK\r\n")
        assert await future == b"250 OK\r\n"  # awaited as the client does, with no wrapper
        order.append("task")
        await asyncio.sleep(0)
        assert order == ["task", "next pass"]

    run(scenario)


def test_the_end_of_the_stream() -> None:
    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        waiting = transport.next_bytes()
        assert waiting is not None
        peer.shutdown(socket.SHUT_WR)
        assert await waiting == b""
        assert await transport.receive_some(100) == b""
        assert transport.receive_nowait(100) == b""
        assert transport.next_bytes() is None

    run(scenario)


def test_a_close_wakes_a_waiting_read_and_refuses_writes() -> None:
    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        waiting = transport.next_bytes()
        assert waiting is not None
        await transport.aclose()
        assert await waiting == b""
        with pytest.raises(ConnectionResetError):
            transport.send_nowait(b"x")
        await transport.aclose()  # twice is harmless

    run(scenario)


def test_a_reset_ends_the_stream_of_a_waiting_read() -> None:
    """The server resets the connection while the client waits for a reply: the read
    ends with ``b""`` (the driver's end of the stream), and reading stops."""

    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        waiting = transport.next_bytes()
        assert waiting is not None
        peer.sendall(b"250-first line of the reply\r\n")
        assert await waiting == b"250-first line of the reply\r\n"
        waiting = transport.next_bytes()
        assert waiting is not None
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # with no linger: a reset
        assert await asyncio.wait_for(waiting, 5) == b""
        assert not transport._reading
        assert await transport.receive_some(100) == b""

    run(scenario)


def test_a_read_given_up_leaves_its_bytes_for_the_next() -> None:
    """A read cancelled (or timed out) before its bytes came: they wait for the next."""

    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        waiting = transport.next_bytes()
        assert waiting is not None
        waiting.cancel()
        peer.sendall(b"250 late\r\n")
        while transport.drained():
            await asyncio.sleep(0.01)
        assert transport.next_bytes() is None  # bytes wait: read them
        assert await transport.receive_some(65536) == b"250 late\r\n"

    run(scenario)


def test_reads_stop_and_start_beside_a_waiting_write(reader: str) -> None:
    """A write that waits for room has the loop watch the socket for writes too: the
    reads stop and start again without disturbing it (each handle stays in place)."""

    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        fd = transport._fd
        selector = loop._selector  # type: ignore[attr-defined]
        room = loop.create_future()
        loop.add_writer(fd, room.set_result, None)
        transport._stop_reading()
        key = selector.get_key(fd)
        assert key.events == selectors.EVENT_WRITE and key.data[0] is None
        transport._watch_reads()
        key = selector.get_key(fd)
        assert key.events == selectors.EVENT_READ | selectors.EVENT_WRITE
        if reader == "own handle":
            assert key.data[0] is transport
        await room  # the writer's handle is still there
        loop.remove_writer(fd)
        key = selector.get_key(fd)
        assert key.events == selectors.EVENT_READ
        peer.sendall(b"250 OK\r\n")
        assert await _client_link(transport).receive_within(5, 65536) == b"250 OK\r\n"

    run(scenario)


def test_a_reader_dropped_by_other_code_reads_no_more(reader: str) -> None:
    """``loop.remove_reader`` of the transport's descriptor by other code cancels its
    handle (the transport itself, on the selector loop): a call already queued then
    reads nothing, as a cancelled handle would not run; so does one after the close,
    whose descriptor number the kernel may give another connection."""

    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        peer.sendall(b"250 OK\r\n")
        if reader == "own handle":  # else asyncio's handle is cancelled, which never runs
            assert loop.remove_reader(transport._fd)
            assert not transport._reading
            await asyncio.sleep(0.05)
            transport._run()  # a call already queued
            assert transport._buffered == 0
            transport._watch_reads()
        assert await transport.receive_some(65536) == b"250 OK\r\n"
        await transport.aclose()
        transport._run()  # nothing is read on a closed descriptor
        assert transport._buffered == 0

    run(scenario)


def test_tls_goes_over_asyncio_and_drops_what_came_before_it(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)

    async def scenario(transport: SocketClientTransport, peer: socket.socket) -> None:
        peer.sendall(b"220 go ahead\r\n250 injected\r\n")
        assert await transport.receive_some(14) == b"220 go ahead\r\n"
        await asyncio.sleep(0.05)  # the injected line is read, and must be dropped

        def handshake() -> ssl.SSLSocket:
            return files.server_context.wrap_socket(peer, server_side=True)

        accepting = asyncio.ensure_future(asyncio.to_thread(handshake))
        await transport.start_tls(
            files.client_context, server_side=False, server_hostname="localhost"
        )
        secure = await accepting
        assert transport.tls is not None
        secure.sendall(b"250 protected\r\n")
        assert await _client_link(transport).receive_within(5, 65536) == b"250 protected\r\n"
        secure.close()
        await transport.aclose()

    run(scenario)


def test_connecting_tries_each_address_and_says_why_none_answered() -> None:
    async def main() -> None:
        port = free_port("127.0.0.1")  # nothing listens there
        with pytest.raises(ConnectionRefusedError):
            await connect_socket("127.0.0.1", port)
        listener = socket.create_server(("127.0.0.1", 0))
        with listener:
            sock = await connect_socket("localhost", listener.getsockname()[1])
            sock.close()

    asyncio.run(main())
