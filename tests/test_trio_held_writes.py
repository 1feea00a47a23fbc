"""The trio server's replies held to the end of the scheduler's batch (``HeldWrites``).

Within one task, ``await trio.lowlevel.checkpoint()`` ends the batch: trio
calls the instruments' ``before_io_wait`` before the task runs again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import smtpcore._driver._transport
from peers import LOOPBACK, TLSFiles, read_until, received_now, starttls_client
from smtpcore._trio_held import HOLD_AT_MOST, HeldWrites
from smtpcore.handler import Handler
from smtpcore.trio import SMTPServer, TrioTransport

PAYLOAD = bytes(range(256)) * 64  # 16 KiB: as much as a connection may hold


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Two connected pairs: a server's end (non-blocking, small buffers) and its peer's."""
    made = []
    for _ in range(2):
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ours.setblocking(False)
        made.append((ours, theirs))
    try:
        yield made
    finally:
        for ours, theirs in made:
            ours.close()
            theirs.close()


@contextlib.asynccontextmanager
async def held(*socks: socket.socket) -> AsyncIterator[tuple[HeldWrites, list[TrioTransport]]]:
    """Transports over ``socks`` whose writes may be held, as a trio server's are."""
    async with trio.open_nursery() as nursery:
        writes = HeldWrites(nursery.start_soon)
        trio.lowlevel.add_instrument(writes)
        try:
            streams = [trio.SocketStream(trio.socket.from_stdlib_socket(sock)) for sock in socks]
            transports = [TrioTransport(stream) for stream in streams]
            for transport in transports:
                transport._writes = writes  # as the server does for a connection it accepted
            yield writes, transports
        finally:
            trio.lowlevel.remove_instrument(writes)


def test_a_write_alone_in_its_batch_goes_out_at_once(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    (ours, theirs), _ = pairs

    async def main() -> None:
        async with held(ours) as (_, [transport]):
            assert transport.send_nowait(b"250 OK\r\n") == 8
            assert transport._held is None
            assert received_now(theirs) == b"250 OK\r\n"
            await transport.aclose()

    trio.run(main)


def test_writes_of_several_connections_in_a_batch_go_out_together_at_its_end(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    """The first write of a batch goes at once, the others at its end; after a batch of
    several writes the next holds even its first, and a batch of one ends that."""
    (ours_a, theirs_a), (ours_b, theirs_b) = pairs

    async def main() -> None:
        async with held(ours_a, ours_b) as (_, [a, b]):
            assert a.send_nowait(b"250 a1\r\n") == 8
            assert b.send_nowait(b"250 b1\r\n") == 8  # taken, as a write is
            assert received_now(theirs_a) == b"250 a1\r\n"
            assert received_now(theirs_b) == b""  # held
            await trio.lowlevel.checkpoint()  # the batch's end
            assert received_now(theirs_b) == b"250 b1\r\n"
            assert a.send_nowait(b"250 a2\r\n") == 8  # held: the last batch was busy
            assert received_now(theirs_a) == b""
            await trio.lowlevel.checkpoint()
            assert received_now(theirs_a) == b"250 a2\r\n"
            assert a.send_nowait(b"250 a3\r\n") == 8  # the last batch had one write
            assert received_now(theirs_a) == b"250 a3\r\n"
            await a.aclose()
            await b.aclose()

    trio.run(main)


def test_held_bytes_go_before_a_later_write_and_before_the_close(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    (ours_a, theirs_a), (ours_b, theirs_b) = pairs

    async def main() -> None:
        async with held(ours_a, ours_b) as (_, [a, b]):
            a.send_nowait(b"250 a\r\n")
            b.send_nowait(b"250 held\r\n")
            await b.send_all(b"354 go ahead\r\n")
            assert received_now(theirs_b) == b"250 held\r\n354 go ahead\r\n"
            b.send_nowait(b"221 bye\r\n")
            assert b._held is not None
            await b.aclose()  # in the same batch: the held reply first
            assert theirs_b.recv(100) == b"221 bye\r\n"
            assert theirs_b.recv(100) == b""
            await trio.lowlevel.checkpoint()  # the batch's end finds nothing left to write
            await a.aclose()
            assert received_now(theirs_a) == b"250 a\r\n"

    trio.run(main)


@pytest.mark.parametrize("waits_for", ["a write", "a read"])
def test_held_bytes_the_kernel_cannot_take_whole_wait_for_room_and_all_arrive(
    pairs: list[tuple[socket.socket, socket.socket]], waits_for: str
) -> None:
    """The rest is written by a task of the server's as room comes, whether the session
    writes again (and waits behind it) or waits for its client's bytes meanwhile."""
    (ours_a, _), (ours_b, theirs_b) = pairs

    def peer(received: bytearray, size: int) -> None:
        read_until(theirs_b, received, size)
        theirs_b.sendall(b"NOOP\r\n")

    async def main() -> None:
        async with held(ours_a, ours_b) as (_, [a, b]):
            a.send_nowait(b"250 a\r\n")
            assert b.send_nowait(PAYLOAD) == len(PAYLOAD)  # held, whole
            await trio.lowlevel.checkpoint()  # written: the kernel takes part of it
            assert b._rest_written is not None
            assert b.send_nowait(b"more") == 0  # behind what waits
            received = bytearray()
            after = b"after" if waits_for == "a write" else b""
            thread = threading.Thread(target=peer, args=(received, len(PAYLOAD) + len(after)))
            thread.start()
            with trio.fail_after(30):
                if after:
                    await b.send_all(after)
                assert await b.receive_some(100) == b"NOOP\r\n"
            await trio.to_thread.run_sync(thread.join, 30)
            assert received == PAYLOAD + after
            assert b._rest_written is None
            await a.aclose()
            await b.aclose()

    trio.run(main)


def test_a_cancelled_close_drops_the_rest_that_waits_for_room_and_closes_at_once(
    pairs: list[tuple[socket.socket, socket.socket]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server cancels the close of a session whose client did not take its last
    write in time. The close, shielded whole, waited for room for the rest of a held
    write until its close timeout (five seconds); now it closes without waiting, and
    the client reads what its kernel took, then the end. trio's clock is a mock one
    that jumps to the next deadline whenever every task waits: a close that waits
    for its close timeout moves it on by that much."""
    monkeypatch.setattr(smtpcore._driver._transport, "CLOSE_TIMEOUT", 3600.0)
    (ours_a, _), (ours_b, theirs_b) = pairs

    async def main() -> None:
        async with held(ours_a, ours_b) as (_, [a, b]):
            a.send_nowait(b"250 a\r\n")
            assert b.send_nowait(PAYLOAD) == len(PAYLOAD)  # held, whole
            await trio.lowlevel.checkpoint()  # written: the kernel takes part of it
            assert b._rest_written is not None
            began = trio.current_time()
            with trio.CancelScope() as scope:
                scope.cancel()
                await b.aclose()
            assert trio.current_time() == began, "the close waited for room"
            await trio.lowlevel.checkpoint()  # the task writing the rest ends
            assert b._rest_written is None and b._held is None
            await a.aclose()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    received = bytearray()
    theirs_b.settimeout(10)
    while data := theirs_b.recv(65536):
        received += data
    assert 0 < len(received) < len(PAYLOAD)
    assert PAYLOAD.startswith(received)


def test_a_cancelled_close_still_sends_the_held_bytes_the_kernel_takes_at_once(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    """With room for them, the last held replies go out before a cancelled close too:
    only a wait for room is given up."""
    (ours_a, _), (ours_b, theirs_b) = pairs

    async def main() -> None:
        async with held(ours_a, ours_b) as (_, [a, b]):
            a.send_nowait(b"250 a\r\n")
            b.send_nowait(b"221 bye\r\n")
            assert b._held is not None
            with trio.CancelScope() as scope:
                scope.cancel()
                await b.aclose()
            await a.aclose()

    trio.run(main)
    theirs_b.settimeout(10)
    assert theirs_b.recv(100) == b"221 bye\r\n"
    assert theirs_b.recv(100) == b""


class WokenBeforeTheClose:
    """Stands in for ``trio.lowlevel``'s ``name`` (``wait_writable``, ``wait_readable``,
    ``checkpoint``) in the one call ``applies`` picks: once the real one is over (its
    task woken), the task goes on only after :attr:`go_on`, as when its wake-up and
    another task's close of the connection came in the same batch of trio's scheduler
    and the close ran first. trio fails a wait that the close finds
    (``ClosedResourceError``), not one that is over: the woken task is on its own."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, name: str, applies: Callable[..., bool]
    ) -> None:
        self.waiting = trio.Event()
        self.woken = trio.Event()
        self.go_on = trio.Event()
        real = getattr(trio.lowlevel, name)

        async def stand_in(*args: Any) -> None:
            if self.woken.is_set() or not applies(*args):
                await real(*args)
                return
            self.waiting.set()
            await real(*args)
            self.woken.set()
            await self.go_on.wait()

        monkeypatch.setattr(trio.lowlevel, name, stand_in)


@contextlib.contextmanager
def reused(fd: int, path: str, flags: int) -> Iterator[None]:
    """``path`` opened under the number ``fd``, which a closed socket had: as an
    accept of another task's, or a delivery's file, takes the lowest free number."""
    opened = os.open(path, flags)  # under that number already if it is the lowest free
    if opened != fd:
        try:
            os.dup2(opened, fd)
        finally:
            os.close(opened)
    try:
        yield
    finally:
        os.close(fd)


def test_the_rest_of_a_held_write_woken_as_the_close_comes_writes_nothing_after_it(
    pairs: list[tuple[socket.socket, socket.socket]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The task writing the rest of a held write waits for room; room comes, and in the
    same batch a cancelled close closes the socket and another task takes its number
    (a delivery's file here). The task, woken already, wrote up to 16 KiB of this
    session's replies to that file (or another client's connection)."""
    (ours_a, _), (ours_b, theirs_b) = pairs
    victim = tmp_path / "another's"
    victim.touch()

    async def main() -> None:
        async with held(ours_a, ours_b) as (_, [a, b]):
            fd = b._fd
            race = WokenBeforeTheClose(monkeypatch, "wait_writable", lambda on: on == fd)
            a.send_nowait(b"250 a\r\n")
            assert b.send_nowait(PAYLOAD) == len(PAYLOAD)  # held, whole
            await trio.lowlevel.checkpoint()  # written in part: a task writes the rest
            rest = b._rest_written
            assert rest is not None
            await race.waiting.wait()
            theirs_b.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while theirs_b.recv(65536):  # the client reads: room comes
                    pass
            await race.woken.wait()
            with trio.CancelScope() as scope:
                scope.cancel()
                await b.aclose()  # as the server cancels the close of a slow reader's
            with reused(fd, str(victim), os.O_WRONLY):
                race.go_on.set()
                await rest.wait()
            assert victim.read_bytes() == b"", "another's file got this session's replies"
            assert isinstance(b._write_failed, ConnectionResetError)
            await a.aclose()

    trio.run(main)


@pytest.mark.parametrize("wait", ["checkpoint", "wait_readable"])
def test_a_read_woken_as_the_close_comes_reads_nothing_after_it(
    pairs: list[tuple[socket.socket, socket.socket]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    wait: str,
) -> None:
    """As above, for a read: the checkpoint a read makes first, or its wait for bytes,
    is over when another task closes the connection and the number is taken. The
    read returned what was another's (another client's commands, a file's mail)."""
    (ours, theirs), _ = pairs
    victim = tmp_path / "another's"
    victim.write_bytes(b"Subject: not yours\r\n")

    async def main() -> None:
        transport = TrioTransport(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        fd = transport._fd
        read: list[bytes | OSError] = []
        reader: list[trio.lowlevel.Task] = []
        finished = trio.Event()

        def applies(*args: Any) -> bool:
            if wait == "checkpoint":
                return trio.lowlevel.current_task() in reader
            return args == (fd,)

        race = WokenBeforeTheClose(monkeypatch, wait, applies)

        async def read_one() -> None:
            reader.append(trio.lowlevel.current_task())
            try:
                read.append(await transport.receive_some(1024))
            except OSError as exc:
                read.append(exc)
            finished.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_one)
            await race.waiting.wait()
            theirs.sendall(b"NOOP\r\n")
            await race.woken.wait()
            await transport.aclose()
            with reused(fd, str(victim), os.O_RDONLY):
                race.go_on.set()
                await finished.wait()
        [result] = read
        assert isinstance(result, ConnectionResetError), result

    trio.run(main)


def test_a_held_write_to_a_reset_connection_fails_the_next_write(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    (ours_a, _), _ = pairs
    server = socket.create_server((LOOPBACK, 0))
    with server, socket.create_connection(server.getsockname(), timeout=10) as theirs:
        ours, _ = server.accept()
        ours.setblocking(False)

        async def main() -> None:
            async with held(ours_a, ours) as (_, [a, b]):
                theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                theirs.close()  # RST, which nothing reads before the held write
                time.sleep(0.05)
                a.send_nowait(b"250 a\r\n")
                assert b.send_nowait(b"250 OK\r\n") == 8  # held
                await trio.lowlevel.checkpoint()  # written: the kernel refuses it
                assert b._write_failed is not None and b._held is None
                assert b.send_nowait(b"after") == 0
                with pytest.raises(ConnectionResetError):
                    await b.send_all(b"after")
                await a.aclose()
                await b.aclose()

        trio.run(main)


def test_a_connection_holds_a_bounded_amount_and_a_larger_write_goes_after_it(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    """What a connection holds stays within ``HOLD_AT_MOST``: a write that would hold
    more is refused for ``send_all``, which writes what is held first; a larger write
    with nothing held goes at once."""
    (ours_a, _), (ours_b, theirs_b) = pairs
    theirs_b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    ours_b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)

    async def main() -> None:
        async with held(ours_a, ours_b) as (_, [a, b]):
            a.send_nowait(b"250 a\r\n")
            first = b"a" * (HOLD_AT_MOST - 10)
            assert b.send_nowait(first) == len(first)
            assert b._held == first
            second = b"b" * 20
            assert b.send_nowait(second) == 0  # too much to hold
            await b.send_all(second)
            assert b._held is None
            received = bytearray()
            read_until(theirs_b, received, len(first) + len(second))
            assert received == first + second
            big = b"c" * (HOLD_AT_MOST + 1)
            assert b.send_nowait(big) > 0  # too big to hold at all: written at once
            assert b._held is None
            await a.aclose()
            await b.aclose()

    trio.run(main)


def test_a_held_reply_goes_out_in_clear_before_the_tls_handshake(
    pairs: list[tuple[socket.socket, socket.socket]],
    tls: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STARTTLS's 220, held while another connection writes in the batch, is written
    before the handshake starts, not left to the batch's end (the client reads it in
    clear, then starts TLS)."""
    (ours_a, _), _ = pairs
    listener = socket.create_server((LOOPBACK, 0))
    result: list[bytes] = []
    held_at_handshake: list[bytes | None] = []
    served: list[TrioTransport] = []
    handshake = trio.SSLStream.do_handshake

    async def watched(stream: trio.SSLStream[Any]) -> None:
        held_at_handshake.append(served[0]._held)
        await handshake(stream)

    monkeypatch.setattr(trio.SSLStream, "do_handshake", watched)

    thread = threading.Thread(
        target=starttls_client, args=(listener.getsockname(), tls.client_context, result)
    )
    thread.start()
    with listener:
        ours, _ = listener.accept()
        ours.setblocking(False)

        async def main() -> None:
            async with held(ours_a, ours) as (_, [a, b]):
                served.append(b)
                a.send_nowait(b"250 a\r\n")
                b.send_nowait(b"220 2.0.0 Ready to start TLS\r\n")
                assert b._held is not None
                with trio.fail_after(10):
                    await b.start_tls(tls.server_context, server_side=True)
                    assert b.tls is not None
                    assert await b.receive_some(100) == b"EHLO client.test\r\n"
                    await b.send_all(b"250 mx.test\r\n")
                await a.aclose()
                await b.aclose()

        trio.run(main)
        thread.join(10)
    assert result == [b"220 2.0.0 Ready to start TLS\r\n", b"250 mx.test\r\n"]
    assert held_at_handshake == [None]


def test_the_server_holds_writes_while_it_serves_and_stops_at_its_close() -> None:
    """The instrument is the server's while it is entered: accepted connections hold
    with it, and it is gone from the run once the server has closed."""

    async def main() -> None:
        async with SMTPServer(Handler(), LOOPBACK, 0, hostname="mx.test") as server:
            writes = server._held_writes
            assert isinstance(writes, HeldWrites)
        assert server._held_writes is None
        with pytest.raises(KeyError):
            trio.lowlevel.remove_instrument(writes)  # removed already

    trio.run(main)
