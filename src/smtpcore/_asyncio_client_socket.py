"""A client's plain TCP connection on asyncio, read and written on the socket itself.

A client waits for each reply, and asyncio's socket transport costs five
Python calls for every read that ends such a wait (its ready callback, the
protocol's ``get_buffer`` and ``buffer_updated``) and two for every write.
:class:`SocketClientTransport` reads in the one call the event loop makes
when the socket is readable (on the selector loop the transport is that
handle itself; elsewhere ``loop.add_reader``), hands the bytes to the future
the client waits on (:meth:`~SocketClientTransport.next_bytes`, as
:class:`~smtpcore.asyncio.AsyncioTransport` does), and runs the client's task
at once, in that call (as the server's sessions' own waiter does, see
``_asyncio_raw.resolve_now``: a pass of the loop and an ``epoll_wait`` less a
reply). It writes to the socket at once, the loop waiting
(``loop.add_writer``) only for what the kernel did not take. TLS, after
STARTTLS or on connect, is asyncio's: the socket passes to an
:class:`~smtpcore.asyncio.AsyncioTransport` for the handshake and everything
after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable
from selectors import EVENT_READ, EVENT_WRITE
from typing import TYPE_CHECKING, Final

from smtpcore._asyncio_raw import serves_raw
from smtpcore._driver._transport import FastPaths, address, readable_probe
from smtpcore.handler import TLSInfo

if TYPE_CHECKING:
    from smtpcore.asyncio import AsyncioTransport

__all__ = ["SocketClientTransport", "connect_socket"]

_READ_SIZE: Final = 65536
_read: Final = os.read
_write: Final = os.write
"""Reads and writes on the socket's descriptor, where the transport is its own
reader handle (POSIX only: see ``serves_raw``): ``recv`` and ``send`` without
flags, whose arguments cost less to parse than a socket's methods'. Once the
socket is closed, nothing reads or writes (``_reading``, ``_closed``)."""
_HIGH_WATER: Final = 1 << 20
"""Unread bytes past which the transport stops reading (a server that floods)."""


class SocketClientTransport(FastPaths):
    """A :class:`~smtpcore.transport.Transport` on a connected non-blocking TCP socket,
    for a client (see the module's docstring).

    On the standard library's selector event loop the transport is its own reader
    handle in the loop's selector, as the server's
    :class:`~smtpcore._asyncio_raw.RawSocketTransport` is (what
    ``_process_events`` and ``_run_once`` ask of a handle is ``_cancelled`` and
    ``_run()``): each reply is read without the ``asyncio.Handle`` that
    ``add_reader`` would make, its ``_run`` and its copy of the context, and with
    ``os.read`` on the descriptor (see :func:`~smtpcore._asyncio_raw.serves_raw`).
    Any other loop gets ``add_reader`` and ``socket.recv``.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_closed",
        "_eof",
        "_fd",
        "_loop",
        "_own",
        "_readable",
        "_reading",
        "_room",
        "_sock",
        "_tls",
        "_waiter",
    )

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # not every socket family has it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._fd = sock.fileno()
        self._readable = readable_probe(self._fd)
        """Asks the kernel whether the socket is readable (:meth:`settled`): one
        system call and no Python call a look."""
        self._loop = loop = asyncio.get_running_loop()
        self._own = serves_raw(loop)
        """Whether the transport is its own reader handle in the loop's selector."""
        self._chunks: list[bytes] = []
        """Received and not read yet (the name the stale-reply tests look at)."""
        self._buffered = 0
        self._waiter: asyncio.Future[bytes] | None = None
        """The future :meth:`next_bytes` made, which the next read resolves."""
        self._eof = False
        self._closed = False
        self._tls: AsyncioTransport | None = None
        """asyncio's transport, which carries the connection once TLS has started."""
        self._reading = False
        self._room: asyncio.Future[None] | None = None
        """What :meth:`send_all` waits on while the loop watches for room, which
        :meth:`aclose` wakes."""
        self._watch_reads()

    # -- the transport as the selector loop's reader handle -------------------------

    _cancelled: Final = False
    """Never cancelled as a handle is: the transport leaves the selector instead, and
    a call of :meth:`_run` already queued then does nothing."""

    def _watch_reads(self) -> None:
        """Have the loop run :meth:`_run` when the socket is readable (what
        ``loop._add_reader`` does, with the transport as the handle)."""
        self._reading = True
        if not self._own:
            self._loop.add_reader(self._fd, self._run)
            return
        selector = self._loop._selector  # type: ignore[attr-defined]  # see serves_raw
        try:
            key = selector.get_key(self._fd)
        except KeyError:
            selector.register(self._fd, EVENT_READ, (self, None))
        else:  # send_all waits for room: the writer's handle stays beside this one
            selector.modify(self._fd, key.events | EVENT_READ, (self, key.data[1]))

    def _stop_reading(self) -> None:
        """Stop watching for reads (what ``loop._remove_reader`` does)."""
        if not self._reading:
            return
        self._reading = False
        if not self._own:
            self._loop.remove_reader(self._fd)
            return
        selector = self._loop._selector  # type: ignore[attr-defined]  # see serves_raw
        if selector is None:  # the loop is closed, and its selector with it
            return
        try:
            key = selector.get_key(self._fd)
        except KeyError:  # pragma: no cover - dropped by other code (see cancel)
            return
        writer = key.data[1]
        if writer is None:
            selector.unregister(self._fd)
        else:
            selector.modify(self._fd, EVENT_WRITE, (None, writer))

    def cancel(self) -> None:
        """What asyncio does to a reader's handle when it drops it from the selector (a
        ``loop.remove_reader`` of this descriptor by other code): it is no longer
        watched."""
        self._reading = False

    @property
    def _callback(self) -> Callable[[], None]:
        """What the handle runs, for the loop's debug mode's report of a slow callback."""
        return self._run

    def _run(self) -> None:
        """The socket is readable: hand what it holds to the waiting read, running the
        waiting task at once, in this call (what ``_asyncio_raw.resolve_now`` does,
        written out: every reply); or keep it for the next read.

        Not when the socket is no longer watched (a callback earlier in the same
        pass of the loop closed the transport, or stopped the reads): that is
        what a cancelled handle is, which the loop would skip."""
        if not self._reading:
            return
        try:
            try:
                data = _read(self._fd, _READ_SIZE) if self._own else self._sock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # reset: the end of the stream, as the driver reads it
                data = b""
            if not data:
                self._eof = True
                self._stop_reading()
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                callbacks = waiter._callbacks
                if callbacks:  # pending, and the task's wake-up is its first callback
                    step, context = callbacks[0]
                    waiter.remove_done_callback(step)
                    waiter.set_result(data)
                    context.run(step, waiter)  # the waiting task runs now, in its context
                    return
                if not waiter.done():
                    waiter.set_result(data)
                    return
                # else cancelled, or timed out: the bytes wait here
            if data:
                self._chunks.append(data)
                self._buffered += len(data)
                if self._buffered > _HIGH_WATER:
                    self._stop_reading()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # as a handle's run reports a callback's failure
            self._loop.call_exception_handler(
                {"message": "client socket transport: reading failed", "exception": exc}
            )

    def next_bytes(self) -> asyncio.Future[bytes] | None:
        """A future that the next read resolves with its bytes (``b""`` at the end of
        the stream): how a client waits for a reply (see
        :meth:`~smtpcore.asyncio.AsyncioTransport.next_bytes`). ``None`` where
        :meth:`receive_some` must read instead: bytes wait already, the stream has
        ended, or reading is held back."""
        if self._tls is not None:
            return self._tls.next_bytes()
        if self._chunks or not self._reading:
            return None
        if self._waiter is not None:
            _one_reader(self._waiter)
        waiter: asyncio.Future[bytes] = asyncio.Future(loop=self._loop)
        self._waiter = waiter
        return waiter

    async def receive_some(self, max_bytes: int) -> bytes:
        if self._tls is not None:
            return await self._tls.receive_some(max_bytes)
        if not self._chunks:
            if self._eof or self._closed:
                return b""
            if not self._reading:  # pragma: no cover - held back only with bytes waiting
                raise ConnectionResetError("the connection is not read")
            if self._waiter is not None:
                _one_reader(self._waiter)
            waiter: asyncio.Future[bytes] = asyncio.Future(loop=self._loop)
            self._waiter = waiter
            try:
                data = await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
            if len(data) <= max_bytes:
                return data
            self._chunks.append(data[max_bytes:])
            self._buffered += len(data) - max_bytes
            return data[:max_bytes]
        return self._take(max_bytes)

    def _take(self, max_bytes: int) -> bytes:
        chunks = self._chunks
        first = chunks[0]
        if len(first) <= max_bytes:
            del chunks[0]
            data = first
        else:
            data, chunks[0] = first[:max_bytes], first[max_bytes:]
        self._buffered -= len(data)
        if not self._reading and not self._eof and not self._closed and self._buffered == 0:
            self._watch_reads()
        return data

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What the event loop has already read (``max_bytes`` aside, as
        :meth:`~smtpcore.asyncio.AsyncioTransport.receive_nowait`); ``None`` when
        nothing has, ``b""`` once the peer has closed."""
        if self._tls is not None:
            return self._tls.receive_nowait(max_bytes)
        if not self._chunks:
            return b"" if self._eof else None
        return self._take(self._buffered)

    def arrived(self) -> bool:
        """Whether the socket holds bytes the event loop has yet to read, when
        :meth:`receive_nowait` has nothing to give (as
        :meth:`~smtpcore.asyncio.AsyncioTransport.arrived`)."""
        if self._tls is not None:
            return self._tls.arrived()
        if self._chunks or self._eof or self._closed:
            return False
        return bool(self._readable())

    def drained(self) -> bool:
        """Whether every byte read from the socket was read from here already, and it
        is read on (then :meth:`receive_nowait` would find nothing)."""
        if self._tls is not None:
            return self._tls.drained()
        return not self._chunks and self._reading

    def settled(self) -> bool:
        """:meth:`drained`, and nothing in the socket either: what an event loop the
        application blocked has yet to read is there (see :meth:`arrived`)."""
        if self._tls is not None:
            return self._tls.settled()
        if self._chunks or not self._reading:
            return False
        return not self._readable()

    # -- writing --------------------------------------------------------------

    def send_nowait(self, data: bytes) -> int:
        """Write what the kernel takes at once; how many octets that was."""
        if self._tls is not None:
            return self._tls.send_nowait(data)
        if self._closed:
            raise ConnectionResetError("the connection is closed")
        try:
            return _write(self._fd, data) if self._own else self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    async def send_all(self, data: bytes) -> None:
        if self._tls is not None:
            await self._tls.send_all(data)
            return
        view = memoryview(data)
        while view:
            sent = self.send_nowait(view)  # type: ignore[arg-type]  # a view of bytes
            view = view[sent:]
            if view:
                await self._wait_for_room()

    async def _wait_for_room(self) -> None:
        """Wait until the kernel takes more, or the transport is closed (the next write
        then raises). A close from another task takes the watch off itself, before
        the socket is closed and its number perhaps given to another connection, so
        this wait leaves it alone then."""
        fd = self._fd
        room = self._room = self._loop.create_future()
        self._loop.add_writer(fd, _wake, room)
        try:
            await room
        finally:
            if self._room is room:
                self._room = None
                self._loop.remove_writer(fd)

    # -- TLS, the close, addresses ---------------------------------------------------

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        """Hand the socket to asyncio's transport and run the handshake there. What
        was read before came in plaintext before the handshake: it is dropped
        (RFC 3207 §4.2)."""
        from smtpcore.asyncio import AsyncioTransport

        if self._tls is not None or self._closed:
            raise ConnectionResetError("TLS cannot start on this connection now")
        self._stop_reading()
        self._chunks.clear()
        self._buffered = 0
        _, protocol = await self._loop.create_connection(AsyncioTransport, sock=self._sock)
        self._tls = protocol
        await protocol.start_tls(context, server_side=server_side, server_hostname=server_hostname)

    async def aclose(self) -> None:
        """Close the connection; a read or a write another task has waiting ends
        (the end of the stream; a reset). The loop stops watching the socket before
        it closes: the kernel may give its number to the next connection at once."""
        if self._tls is not None:
            await self._tls.aclose()
            return
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(b"")
        room, self._room = self._room, None
        if room is not None:  # a write waits for room: off the loop before the close
            self._loop.remove_writer(self._fd)
            _wake(room)
        self._sock.close()
        self._fd = -1

    @property
    def peer_address(self) -> tuple[str, int] | None:
        if self._tls is not None:
            return self._tls.peer_address
        try:
            return address(self._sock.getpeername())
        except OSError:
            return None

    @property
    def local_address(self) -> tuple[str, int] | None:
        if self._tls is not None:
            return self._tls.local_address
        try:
            return address(self._sock.getsockname())
        except OSError:
            return None

    @property
    def tls(self) -> TLSInfo | None:
        return None if self._tls is None else self._tls.tls


def _one_reader(waiter: asyncio.Future[bytes]) -> None:
    """Refuse a read while another waits (``RuntimeError``, as asyncio's
    ``StreamReader`` does): the transport has one read slot, and a second reader
    would take it, leaving the first waiting for bytes that go to the second. A
    waiter cancelled or timed out, which its read left behind, is no reader."""
    if not waiter.done():
        raise RuntimeError("a read was started while another read is waiting for data")


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def connect_socket(host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket connected to ``host:port``: each address the name
    resolves to in turn (a numeric one without asking a resolver), as
    ``loop.create_connection`` tries them."""
    loop = asyncio.get_running_loop()
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )
    except socket.gaierror:  # a name: the resolver, off the event loop
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, where in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, where)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error or OSError(f"{host} has no address")
