"""The transports' writes: ``send_nowait`` takes what goes out without waiting,
``send_all`` the rest, and the peer gets every byte once, in order."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
import types
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from smtpcore import _asyncio_raw_close, _asyncio_stream, _asyncio_transport, _trio_transport
from smtpcore._driver import _blocking
from smtpcore._driver import _transport as shared_transport
from smtpcore._driver._blocking import SocketClock, SocketTransport, open_link, run
from smtpcore.asyncio import AsyncioTransport
from smtpcore.trio import TrioTransport

LOOPBACK = "127.0.0.1"
PAYLOAD = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than a socket buffer holds


class SlowReader:
    """A peer that accepts one connection and reads it to the end in a thread."""

    def __init__(self) -> None:
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.started.wait(10)  # let the writer fill the buffers first
            while chunk := conn.recv(65536):
                self.received += chunk

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def test_asyncio_send_nowait_stops_taking_once_the_buffer_is_full() -> None:
    reader = SlowReader()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, transport = await loop.create_connection(AsyncioTransport, LOOPBACK, reader.port)
        assert transport.send_nowait(PAYLOAD) == len(PAYLOAD)  # asyncio buffers it all
        assert transport.send_nowait(b"more") == 0  # past the high-water mark: wait
        reader.started.set()
        await transport.send_all(b"more")
        await transport.aclose()
        with pytest.raises(ConnectionResetError):
            transport.send_nowait(b"late")

    asyncio.run(asyncio.wait_for(main(), 30))
    reader.close()
    assert bytes(reader.received) == PAYLOAD + b"more"


def test_trio_send_nowait_takes_what_the_kernel_takes() -> None:
    reader = SlowReader()

    async def main() -> None:
        with trio.fail_after(30):
            await exchange()

    async def exchange() -> None:
        transport = TrioTransport(await trio.open_tcp_stream(LOOPBACK, reader.port))
        sent = transport.send_nowait(PAYLOAD)
        assert 0 < sent < len(PAYLOAD)  # the kernel's buffer is full: the rest must wait
        reader.started.set()
        await transport.send_all(PAYLOAD[sent:])
        await transport.aclose()
        with pytest.raises(ConnectionResetError):
            transport.send_nowait(b"late")

    trio.run(main)
    reader.close()
    assert bytes(reader.received) == PAYLOAD


def test_blocking_send_nowait_takes_what_the_kernel_takes() -> None:
    reader = SlowReader()
    link = open_link(LOOPBACK, reader.port, 30)
    transport = link.transport
    assert isinstance(transport, SocketTransport)
    sent = transport.send_nowait(PAYLOAD)
    assert 0 < sent < len(PAYLOAD)  # the kernel's buffer is full: the rest must wait
    reader.started.set()
    run(transport.send_all(PAYLOAD[sent:]))
    run(link.aclose())
    reader.close()
    assert bytes(reader.received) == PAYLOAD


def test_trio_receive_waits_for_data_then_sees_the_end() -> None:
    with socket.create_server((LOOPBACK, 0)) as listener:
        port = listener.getsockname()[1]

        def peer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"+OK ")
                threading.Event().wait(0.05)  # the reader must wait for the rest
                conn.sendall(b"ready\r\n")

        thread = threading.Thread(target=peer, daemon=True)
        thread.start()

        async def main() -> bytes:
            with trio.fail_after(30):
                transport = TrioTransport(await trio.open_tcp_stream(LOOPBACK, port))
                received = b""
                while chunk := await transport.receive_some(65536):
                    received += chunk
                await transport.aclose()
                return received

        assert trio.run(main) == b"+OK ready\r\n"
        thread.join(10)


def test_a_trio_read_waits_at_once_for_a_few_reads_after_a_miss() -> None:
    """The countdown of ``WAITS_AFTER_A_MISS``: a read that finds nothing makes the
    next few skip the look (they wait at once), then reads look again."""

    async def main() -> list[int]:
        near, far = trio.socket.socketpair()
        transport = TrioTransport(trio.SocketStream(near))
        peer = trio.SocketStream(far)
        left = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.receive_some, 100)
            await trio.testing.wait_all_tasks_blocked()  # it looked, missed, waits
            left.append(transport._waits_left)
            await peer.send_all(b"x")
        for _ in range(_trio_transport.WAITS_AFTER_A_MISS + 1):
            await peer.send_all(b"y")
            assert await transport.receive_some(100) == b"y"
            left.append(transport._waits_left)
        await peer.aclose()
        await transport.aclose()
        return left

    left = trio.run(main)
    n = _trio_transport.WAITS_AFTER_A_MISS
    assert left == [n, *range(n - 1, -1, -1), 0]  # then it looks again, and hits


def echo_peer(listener: socket.socket, rounds: int) -> threading.Thread:
    """Answers each line with ``ok N``, sometimes at once, sometimes after a pause."""

    def peer() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            for number in range(rounds):
                if not lines.readline():
                    return
                if number % 5 == 0:
                    threading.Event().wait(0.01)
                conn.sendall(b"ok %d\r\n" % number)

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    return thread


ROUNDS = 40
EXPECTED = b"".join(b"ok %d\r\n" % number for number in range(ROUNDS))


async def exchange_lines(transport: Any) -> bytes:
    """Send each line and read to its answer; then the end. The same on both transports."""
    received = b""
    for number in range(ROUNDS):
        await transport.send_all(b"line %d\r\n" % number)
        while not received.endswith(b"ok %d\r\n" % number):
            received += await transport.receive_some(65536)
    assert await transport.receive_some(65536) == b""
    await transport.aclose()
    return received


async def exchange_asyncio(port: int) -> bytes:
    loop = asyncio.get_running_loop()
    _, transport = await loop.create_connection(AsyncioTransport, LOOPBACK, port)
    return await exchange_lines(transport)


async def exchange_trio(port: int) -> bytes:
    return await exchange_lines(TrioTransport(await trio.open_tcp_stream(LOOPBACK, port)))


@pytest.mark.parametrize("framework", ["asyncio", "trio"])
def test_reads_that_yield_first_lose_and_repeat_nothing(framework: str) -> None:
    """A read yields before it waits (WAITS_AFTER_A_MISS): the bytes that came meanwhile, and
    those that come only after it gave up and waited, arrive once and in order."""
    with socket.create_server((LOOPBACK, 0)) as listener:
        port = listener.getsockname()[1]
        thread = echo_peer(listener, ROUNDS)
        if framework == "asyncio":
            received = asyncio.run(asyncio.wait_for(exchange_asyncio(port), 30))
        else:

            async def main() -> bytes:
                with trio.fail_after(30):
                    return await exchange_trio(port)

            received = trio.run(main)
        thread.join(10)
    assert received == EXPECTED


def test_trio_send_all_to_a_vanished_peer_raises_an_os_error() -> None:
    with socket.create_server((LOOPBACK, 0)) as listener:
        port = listener.getsockname()[1]

        async def main() -> None:
            with trio.fail_after(30):
                transport = TrioTransport(await trio.open_tcp_stream(LOOPBACK, port))
                conn, _ = listener.accept()
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # a reset: the next writes fail
                with pytest.raises(OSError):
                    for _ in range(100):
                        await transport.send_all(PAYLOAD)
                await transport.aclose()

        trio.run(main)


@given(
    steps=st.lists(
        st.one_of(st.binary(min_size=1, max_size=9), st.integers(min_value=1, max_value=12)),
        max_size=30,
    )
)
def test_asyncio_reads_give_back_every_byte_received_once_in_order(
    steps: list[bytes | int],
) -> None:
    """Chunks the event loop delivers (bytes) and reads of at most n octets (int), in any
    order: the reads give the bytes back in order, none split across two chunks wrongly,
    and an idle transport holds no chunk once all is read."""

    async def main() -> None:
        transport = AsyncioTransport()
        received = bytearray()
        sent = bytearray()
        for step in steps:
            if isinstance(step, bytes):
                view = transport.get_buffer(-1)
                view[: len(step)] = step
                transport.buffer_updated(len(step))
                sent += step
            elif len(received) < len(sent):
                data = await transport.receive_some(step)
                assert 0 < len(data) <= step
                received += data
        transport.eof_received()
        while data := await transport.receive_some(5):
            received += data
        assert received == sent
        assert transport.receive_nowait(1) == b""  # read to the end, and closed

    asyncio.run(main())


def test_asyncio_a_second_read_while_one_waits_is_refused() -> None:
    """One read slot: a second read started while one waits (two tasks reading one
    connection) is a RuntimeError, as asyncio's StreamReader makes it, not a silent
    swap that leaves the first reader waiting for bytes the second took. A future of
    next_bytes cancelled leaves the slot free."""

    async def main() -> None:
        transport = AsyncioTransport()
        first = asyncio.ensure_future(transport.receive_some(1 << 16))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="another read"):
            await asyncio.wait_for(transport.receive_some(1 << 16), 1)
        with pytest.raises(RuntimeError, match="another read"):  # either way round
            transport.next_bytes()
        view = transport.get_buffer(-1)
        view[:4] = b"ok\r\n"
        transport.buffer_updated(4)
        assert await asyncio.wait_for(first, 5) == b"ok\r\n"
        waiting = transport.next_bytes()
        assert waiting is not None
        with pytest.raises(RuntimeError, match="another read"):
            transport.next_bytes()
        with pytest.raises(RuntimeError, match="another read"):
            await asyncio.wait_for(transport.receive_some(1 << 16), 1)
        waiting.cancel()
        later = transport.next_bytes()
        assert later is not None
        view = transport.get_buffer(-1)
        view[:4] = b"go\r\n"
        transport.buffer_updated(4)
        assert await later == b"go\r\n"

    asyncio.run(main())


def test_asyncio_transport_has_no_instance_dict() -> None:
    """One per connection, mostly idle: slots only (an idle session's memory)."""

    async def main() -> None:
        assert not hasattr(AsyncioTransport(), "__dict__")

    asyncio.run(main())


def test_asyncio_writes_after_a_close_with_nothing_left_fail() -> None:
    """A close with nothing left to send does not wait for ``connection_lost``: the
    writes after it fail all the same (the transport remembers its own close: they
    never reach asyncio's transport)."""
    reader = SlowReader()
    reader.started.set()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, transport = await loop.create_connection(AsyncioTransport, LOOPBACK, reader.port)
        await transport.aclose()
        with pytest.raises(ConnectionResetError):
            transport.send_nowait(b"late")
        with pytest.raises(ConnectionResetError):
            await transport.send_all(b"late")

    asyncio.run(main())
    reader.close()
    assert reader.received == b""


@pytest.mark.parametrize("write", ["send_nowait", "send_all"])
def test_asyncio_a_write_that_fails_raises_where_it_is_made(write: str) -> None:
    """asyncio's transport never raises from ``write``: it closes itself and tells the
    protocol at the loop's next pass. The write that failed (EPIPE: the peer shut its
    reading side) raises at once, and so does every later one, so that the driver
    tells the machine and reads what the server left behind (RFC 5321 §3.8), rather
    than writing the rest of a message into the void."""
    ours, theirs = socket.socketpair()
    theirs.shutdown(socket.SHUT_RD)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, transport = await loop.create_connection(AsyncioTransport, sock=ours)
        for _ in range(2):
            with pytest.raises(ConnectionResetError):
                if write == "send_nowait":
                    transport.send_nowait(b"DATA\r\n")
                else:
                    await transport.send_all(b"DATA\r\n")
        await transport.aclose()

    try:
        asyncio.run(main())
    finally:
        theirs.close()


def test_asyncio_a_read_waiting_on_next_bytes_ends_when_the_connection_is_lost() -> None:
    """A client waits for its reply on the future of ``next_bytes``. A connection lost
    without the peer's close (a reset: asyncio calls ``connection_lost`` and reads no
    more) ends that wait with ``b""``, as the peer's close does, at once: not when
    the reply's timeout runs out, 10 minutes after the content (RFC 5321
    §4.5.3.2.6)."""
    ours, theirs = socket.socketpair()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, transport = await loop.create_connection(AsyncioTransport, sock=ours)
        waiting = transport.next_bytes()
        assert waiting is not None
        await transport.send_all(b"QUIT\r\n")
        theirs.close()  # unread bytes in its buffer: a reset for our read (ECONNRESET)
        assert await asyncio.wait_for(waiting, 5) == b""
        assert await transport.receive_some(1 << 16) == b""
        await transport.aclose()

    asyncio.run(main())


def test_blocking_reply_read_keeps_each_deadline() -> None:
    """A reply's read on the plain socket waits as long as its own deadline says: one
    that runs out is a ``TimeoutError``, and the next read, with no deadline, waits
    on until the bytes come (``poll`` waits out each deadline)."""
    with socket.create_server((LOOPBACK, 0)) as listener:
        link = open_link(LOOPBACK, listener.getsockname()[1], 30)
        peer, _ = listener.accept()
        transport = link.transport
        assert isinstance(transport, SocketTransport)
        with peer:
            with pytest.raises(TimeoutError):
                run(transport.receive_within(0.05, 100))
            timer = threading.Timer(0.3, peer.sendall, (b"250 ok\r\n",))
            timer.start()
            try:
                assert run(transport.receive_within(None, 100)) == b"250 ok\r\n"
                assert transport.drained()
                peer.sendall(b"221 bye\r\n")
                assert run(transport.receive_within(0.05, 100)) == b"221 bye\r\n"
            finally:
                timer.join(10)
        run(link.aclose())


def test_a_blocking_wait_longer_than_one_poll_waits_in_turns_to_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deadline further off than one ``poll`` takes (2**31 - 1 ms) is waited out in
    turns of the longest poll, here made 20 ms so that the turns show: a reply's
    read under a deadline poll refuses (1e300 s) gets its bytes 0.2 s later, and a
    wait under the clock's 0.3 s deadline ends then, not after the first turn."""
    monkeypatch.setattr(_blocking, "_LONGEST_POLL", 0.02)
    with socket.create_server((LOOPBACK, 0)) as listener:
        link = open_link(LOOPBACK, listener.getsockname()[1], 1e300)
        peer, _ = listener.accept()
        transport = link.transport
        assert isinstance(transport, SocketTransport)
        clock = link.clock
        assert isinstance(clock, SocketClock)

        async def wait_under_the_clock() -> bytes:
            async with clock.deadline(0.3):
                return await transport.receive_some(100)

        with peer:
            timer = threading.Timer(0.2, peer.sendall, (b"250 ok\r\n",))
            timer.start()
            try:
                assert run(transport.receive_within(1e300, 100)) == b"250 ok\r\n"
            finally:
                timer.join(10)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                run(wait_under_the_clock())
            assert 0.3 <= time.monotonic() - started < 5
        run(link.aclose())


def test_a_blocking_read_times_out_though_signals_keep_interrupting_it() -> None:
    """A signal handled in Python (a profiler's, a watchdog's) interrupts the wait more
    often than its timeout: the wait still ends at the deadline (``poll`` waits out
    what is left; a ``recv`` under ``SO_RCVTIMEO`` started its timeout again)."""
    import signal

    from smtpcore import sync

    previous = signal.signal(signal.SIGALRM, lambda number, frame: None)
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
    try:
        with socket.create_server((LOOPBACK, 0)) as silent:  # accepts, never greets
            started = time.monotonic()
            with pytest.raises(sync.SMTPTimeout):
                sync.SMTPClient(LOOPBACK, silent.getsockname()[1], timeout=0.3).connect()
            took = time.monotonic() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert took < 3.0, took


@pytest.mark.parametrize(
    "module",
    [_asyncio_raw_close, _asyncio_stream, _asyncio_transport, _trio_transport],
    ids=lambda module: module.__name__,
)
def test_every_transport_reads_the_one_close_timeout(module: types.ModuleType) -> None:
    """The bound on a close is bound once, in the driver's transport module, and each
    transport reads it there at its close: four copies, one a module, had each to be
    patched apart, and a patch of one missed the three others."""
    assert "CLOSE_TIMEOUT" in vars(shared_transport)
    assert "CLOSE_TIMEOUT" not in vars(module)
    assert "_CLOSE_TIMEOUT" not in vars(module)
    assert vars(module)["shared_transport"] is shared_transport
