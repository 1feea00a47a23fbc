"""A client's read of a reply under a deadline, through each clock's ``timed_reader``.

The asyncio, trio and blocking clocks read a reply without entering a
deadline object (the client's hot path); each must still behave as a
deadline entered around the read: the data when it comes in time,
``TimeoutError`` when it does not, a cancellation that is not its own passed
on, and nothing left pending after either. A clock without the method gets
a deadline around the read from the link.
"""

from __future__ import annotations

import asyncio
import functools
import select
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from smtpcore._asyncio_client import _client_link, _ClientClock
from smtpcore._driver._blocking import SocketTransport, open_link, run
from smtpcore._driver._transport import Link
from smtpcore.asyncio import AsyncioClock, AsyncioTransport
from smtpcore.trio import TrioClock

Receive = Callable[[int], Awaitable[bytes]]


def after(framework: str, seconds: float, data: bytes) -> Receive:
    async def receive(max_bytes: int) -> bytes:
        await (asyncio.sleep(seconds) if framework == "asyncio" else trio.sleep(seconds))
        return data[:max_bytes]

    return receive


async def timed(clock: AsyncioClock | TrioClock, receive: Receive, seconds: float | None) -> bytes:
    """One read through a reader the clock makes for ``receive``."""
    return await clock.timed_reader(receive)(seconds, 100)


def test_asyncio_read_gives_the_data_or_times_out_and_leaves_the_task_clean() -> None:
    async def main() -> None:
        clock = AsyncioClock()
        assert await timed(clock, after("asyncio", 0.01, b"250 ok\r\n"), 5) == b"250 ok\r\n"
        assert await timed(clock, after("asyncio", 0, b"x"), None) == b"x"
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await timed(clock, after("asyncio", 60, b""), 0.05)
        assert time.monotonic() - started < 5
        task = asyncio.current_task()
        assert task is not None
        if sys.version_info >= (3, 11):
            assert task.cancelling() == 0
        await asyncio.sleep(0.01)  # no cancellation left pending
        # Again through one reader: its one read timer is ready for the next read.
        slow = after("asyncio", 60, b"")
        reader = clock.timed_reader(slow)
        with pytest.raises(TimeoutError):
            await reader(0.05, 100)
        with pytest.raises(TimeoutError):
            await reader(0.05, 100)
        assert await timed(clock, after("asyncio", 0, b"y"), 5) == b"y"
        # Inside another deadline, which holds the connection's alarm.
        async with clock.deadline(5):
            with pytest.raises(TimeoutError):
                await timed(clock, after("asyncio", 60, b""), 0.05)
        await asyncio.sleep(0.01)

    asyncio.run(main())


def test_asyncio_read_passes_on_a_cancellation_that_is_not_its_own() -> None:
    async def main() -> None:
        clock = AsyncioClock()
        task = asyncio.get_running_loop().create_task(timed(clock, after("asyncio", 60, b""), 30))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await timed(clock, after("asyncio", 0, b"z"), 5) == b"z"

    asyncio.run(main())


def test_asyncio_read_that_ends_as_the_timer_fires_keeps_its_data() -> None:
    """The timer fires after the read has its data but before the task resumes:
    the data comes back, and the cancellation meant for the read is absorbed."""

    async def main() -> None:
        clock = AsyncioClock()
        timers: list[Any] = []

        async def receive(max_bytes: int) -> bytes:
            await asyncio.sleep(0)
            timers[0].expire()  # the alarm rings now, the read being done
            return b"250 late\r\n"

        reader = clock.timed_reader(receive)
        assert isinstance(reader, functools.partial)
        timers.append(reader.args[0])  # the reader's one timer
        assert await reader(5, 100) == b"250 late\r\n"
        await asyncio.sleep(0.01)  # no cancellation left pending

    asyncio.run(main())


async def client_link() -> tuple[Link, socket.socket]:
    """A client's link over one end of a socket pair, and the other end."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    _, transport = await loop.create_connection(AsyncioTransport, sock=ours)
    return _client_link(transport), theirs


def test_asyncio_client_read_waits_on_the_transports_future() -> None:
    """A client's read is the transport's future for its next bytes, failed with
    TimeoutError when due; bytes that come after a timeout are read next."""

    async def main() -> None:
        link, peer = await client_link()
        with peer:
            waiting = link.receive_within(5, 65536)
            assert isinstance(waiting, asyncio.Future)  # no coroutine around the wait
            peer.sendall(b"250 ok\r\n")
            assert await waiting == b"250 ok\r\n"
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await link.receive_within(0.05, 65536)
            assert time.monotonic() - started < 5
            peer.sendall(b"250 late\r\n")
            await asyncio.sleep(0.05)  # read by the loop, held for the next read
            assert await link.receive_within(5, 65536) == b"250 late\r\n"
            # Inside a deadline that holds the connection's alarm, both still end.
            async with link.deadline(5):
                with pytest.raises(TimeoutError):
                    await link.receive_within(0.05, 65536)
            with pytest.raises(TimeoutError):
                async with link.deadline(0.05):
                    await link.receive_within(5, 65536)
            # A short read takes the general path.
            peer.sendall(b"250 two\r\n")
            assert await link.receive_within(5, 4) == b"250 "
            assert await link.receive_within(5, 65536) == b"two\r\n"
            at_end = link.receive_within(5, 65536)
            peer.close()
            assert await at_end == b""  # the end of the stream
            await link.aclose()

    asyncio.run(main())


def test_asyncio_client_read_cancelled_keeps_what_comes_after() -> None:
    async def main() -> None:
        link, peer = await client_link()
        with peer:

            async def read() -> bytes:
                return await link.receive_within(30, 65536)

            task = asyncio.get_running_loop().create_task(read())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            peer.sendall(b"250 after\r\n")
            await asyncio.sleep(0.05)
            assert await link.receive_within(5, 65536) == b"250 after\r\n"
            await link.aclose()

    asyncio.run(main())


def test_asyncio_client_read_due_as_its_bytes_came_keeps_them() -> None:
    """The alarm rings after the loop handed the read its bytes, before the task
    resumed: the bytes come back, and no TimeoutError."""

    async def main() -> None:
        link, peer = await client_link()
        clock = link.clock
        assert isinstance(clock, _ClientClock)
        with peer:
            waiting = link.receive_within(5, 65536)
            assert isinstance(waiting, asyncio.Future)
            peer.sendall(b"250 ok\r\n")
            for _ in range(100):
                await asyncio.sleep(0.01)
                if waiting.done():
                    break
            clock.ring(clock._timers.now() + 60)  # long past due
            assert await waiting == b"250 ok\r\n"
            await link.aclose()

    asyncio.run(main())


def test_trio_read_gives_the_data_or_times_out() -> None:
    async def main() -> None:
        clock = TrioClock()
        assert await timed(clock, after("trio", 0.01, b"250 ok\r\n"), 5) == b"250 ok\r\n"
        assert await timed(clock, after("trio", 0, b"x"), None) == b"x"
        with pytest.raises(TimeoutError):
            await timed(clock, after("trio", 60, b""), 0.05)
        await trio.sleep(0.01)
        with trio.CancelScope() as outer:
            outer.cancel()
            await timed(clock, after("trio", 60, b""), 30)
        assert outer.cancelled_caught  # the outer scope's own cancellation, passed on

    trio.run(main)


async def read(link: Link, seconds: float | None) -> bytes:
    return await link.receive_within(seconds, 100)


def test_blocking_read_times_out_and_then_reads() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        link = open_link("127.0.0.1", listener.getsockname()[1], 10)
        peer, _ = listener.accept()
        with peer:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                run(read(link, 0.05))
            assert time.monotonic() - started < 5
            peer.sendall(b"250 ok\r\n")
            assert run(read(link, 5)) == b"250 ok\r\n"
            peer.sendall(b"221 bye\r\n")
            assert run(read(link, None)) == b"221 bye\r\n"
            run(link.aclose())


def test_blocking_read_is_the_transports_own_and_says_whether_it_drained() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        link = open_link("127.0.0.1", listener.getsockname()[1], 10)
        transport = link.transport
        assert isinstance(transport, SocketTransport)
        assert link.receive_within == transport.receive_within  # one call a read
        peer, _ = listener.accept()
        with peer:
            peer.sendall(b"250 one\r\n")
            assert run(link.receive_within(5, 100)) == b"250 one\r\n"
            assert transport.drained()  # fewer octets than asked: nothing more was there
            peer.sendall(b"250 two\r\n")
            assert run(link.receive_within(5, 4)) == b"250 "
            assert not transport.drained()
            assert run(link.receive_within(5, 100)) == b"two\r\n"
            peer.sendall(b"250 three\r\n")
            assert select.select([transport._sock], [], [], 10)[0]
            assert transport.receive_nowait(100) == b"250 three\r\n"
            assert not transport.drained()  # a look before a command says nothing
            run(link.aclose())


def test_blocking_read_under_an_open_deadline_ends_with_the_nearer_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        link = open_link("127.0.0.1", listener.getsockname()[1], 10)
        peer, _ = listener.accept()

        async def under_deadline(deadline: float, read: float) -> bytes:
            async with link.deadline(deadline):
                return await link.receive_within(read, 100)

        with peer:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                run(under_deadline(0.05, 60))
            assert time.monotonic() - started < 5
            with pytest.raises(TimeoutError):
                run(under_deadline(60, 0.05))
            assert time.monotonic() - started < 10
            peer.sendall(b"250 ok\r\n")
            assert run(under_deadline(60, 60)) == b"250 ok\r\n"
            run(link.aclose())


def test_a_clock_without_timed_reader_gets_a_deadline_around_the_read() -> None:
    class PlainClock:
        """What the Clock protocol asks for, and no ``timed_reader``."""

        def __init__(self) -> None:
            self.inner = AsyncioClock()
            self.deadline = self.inner.deadline
            self.watchdog = self.inner.watchdog
            self.within = self.inner.within
            self.start_within = self.inner.start_within
            self.close = self.inner.close
            self.stray_cancellation = self.inner.stray_cancellation
            self.sleep = self.inner.sleep
            self.run_in_thread = self.inner.run_in_thread

    async def main() -> None:
        transport = AsyncioTransport()
        link = Link(transport, PlainClock())
        with pytest.raises(TimeoutError):
            await link.receive_within(0.05, 100)
        buffer = transport.get_buffer(-1)
        buffer[:8] = b"250 ok\r\n"
        transport.buffer_updated(8)
        assert await link.receive_within(5, 100) == b"250 ok\r\n"

    asyncio.run(main())
