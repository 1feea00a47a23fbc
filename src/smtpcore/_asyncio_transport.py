"""The asyncio adapter's transport on asyncio's own connections:
:class:`~smtpcore.asyncio.AsyncioTransport`.

A small :class:`asyncio.BufferedProtocol` rather than asyncio streams: the event
loop reads into one buffer per thread, the driver gets the bytes read, and TLS
starts in place with :meth:`asyncio.loop.start_tls`. It serves the connections
of a server on an event loop other than the standard library's selector loop
(uvloop's, say), and a client's Unix socket; on the selector loop a server's
connections are :class:`~smtpcore._asyncio_raw.RawSocketTransport` and a client's
TCP connection :class:`~smtpcore._asyncio_client_socket.SocketClientTransport`.
Kept apart from the server and client that make it, which only construct it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable
from typing import ClassVar, Final, cast

from smtpcore._asyncio_beneath_tls import (
    _client_tls_close,
    _closing,
    _tcp_beneath,
    _unsent,
)
from smtpcore._asyncio_runner import WOKEN, SessionRunner
from smtpcore._driver import _transport as shared_transport
from smtpcore._driver import address, tls_info
from smtpcore._driver._kernel_queues import unacknowledged as kernel_unacknowledged
from smtpcore.handler import TLSInfo

__all__ = ["AsyncioTransport", "_READ_SIZE"]


_HIGH_WATER: Final = 1 << 20
"""Unread bytes past which the transport stops reading from the socket."""


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY: a reply written in two pieces must not wait ~40 ms for a delayed ACK.

    asyncio's own socket transports set it already (those of any
    ``asyncio.BaseEventLoop``): this is for event loops that may not. A socket
    that is not TCP (a Unix socket) refuses it, which is fine.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:  # noqa: SIM105 - contextlib.suppress costs three calls a connection
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


_READ_SIZE: Final = 65536


class _ReadBuffer(threading.local):
    """The buffer the event loop of this thread reads every connection into.

    asyncio asks a protocol for a buffer, reads into it and reports the count
    in one go, so one buffer serves all connections of a loop. A plain
    ``Protocol`` gets a new 256 KiB object per read instead, which on a busy
    server keeps the allocator growing and trimming its heap.
    """

    def __init__(self) -> None:
        self.view = memoryview(bytearray(_READ_SIZE))


_read_buffer = _ReadBuffer()


class AsyncioTransport(asyncio.BufferedProtocol, shared_transport.FastPaths):
    """A :class:`~smtpcore.transport.Transport` on an asyncio connection.

    Idle connections are the many ones on a server, so it keeps little: received
    chunks wait in a plain list read in order (emptied, and so freed, once read
    to its end), and the future a close waits on is made by the close. While the
    server steps a session itself (an accepted connection, before any task runs
    it), its waits are no futures: the protocol's callbacks wake the session,
    which goes on in the same pass.
    """

    __slots__ = (
        "_beneath",
        "_buffered",
        "_chunks",
        "_close_waiters",
        "_closing",
        "_eof",
        "_exact",
        "_loop",
        "_lost",
        "_next",
        "_offset",
        "_on_connect",
        "_readable",
        "_reader",
        "_reading_paused",
        "_runner",
        "_tls",
        "_transport",
        "_waiter",
        "_writer",
        "_writing_paused",
    )

    def __init__(self, on_connect: Callable[[AsyncioTransport], None] | None = None) -> None:
        self._on_connect = on_connect
        self._transport: asyncio.Transport | None = None
        self._beneath: asyncio.BaseTransport | None = None
        """Under TLS, the TCP transport beneath (see
        :func:`~smtpcore._asyncio_beneath_tls._closing`): closing at the
        write that failed, a pass or two before the TLS transport."""
        self._chunks: list[bytes] = []
        """Received chunks not yet read; those before ``_next`` are read already."""
        self._next = 0
        self._offset = 0
        """Octets of ``_chunks[_next]`` read already."""
        self._buffered = 0
        self._exact = 0
        """While a read of fewer octets than the read buffer waits, how many (the event
        loop reads no more than that); -1 once one is served (it reads nothing more
        until the next read, so that what follows, a TLS handshake after a PROXY
        header, stays for whoever reads next); 0 otherwise."""
        self._eof = False
        self._lost = False
        self._readable: Callable[[], object] | None = None
        """Asks the kernel whether the socket is readable (:meth:`settled`): made at a
        client's first message, then one system call and no Python call a look; a
        server's sessions, which never ask, have none."""
        self._reading_paused = False
        self._writing_paused = False
        self._reader: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[bytes] | None = None
        """The future :meth:`next_bytes` made, which the next read resolves."""
        self._writer: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._close_waiters: list[asyncio.Future[None]] | None = None
        self._runner: SessionRunner | None = None
        self._tls = False
        self._closing = False
        """Whether :meth:`aclose` (or :meth:`refuse`) closed the transport: writes then
        fail, as they do once the connection is lost. (A close asyncio makes itself,
        on an error, is followed by ``connection_lost`` at the loop's next pass;
        a write before it fails as :meth:`send_nowait` says.)"""
        """Whether TLS was started (a close then waits for the TLS close to be answered)."""

    # -- asyncio.BufferedProtocol -------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, not necessarily of asyncio's classes: uvloop's have
        # the same methods and subclass none of them.
        self._transport = cast(asyncio.Transport, transport)
        self._beneath = _tcp_beneath(transport)  # TLS from the first byte (ssl=)
        if not isinstance(self._loop, asyncio.BaseEventLoop):
            _set_nodelay(transport)
        if self._on_connect is not None:
            self._on_connect(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the event loop reads: this thread's one read buffer, or as much of it
        as an exact read asked for."""
        exact = self._exact
        return _read_buffer.view if exact <= 0 else _read_buffer.view[:exact]

    def buffer_updated(self, nbytes: int) -> None:
        """The event loop read ``nbytes`` into the buffer: keep a copy for the driver,
        or hand it to the future :meth:`next_bytes` made."""
        data = bytes(_read_buffer.view[:nbytes])
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # else cancelled, or timed out: the bytes wait here
                waiter.set_result(data)
                return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._reading_paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._reading_paused = True
        if self._exact > 0:  # an exact read is served: nothing more until the next one
            self._exact = -1
            if not self._reading_paused and self._transport is not None:
                self._transport.pause_reading()
                self._reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        # Stay open: the replies still have to go out. Under TLS asyncio closes
        # anyway, and logs a warning if asked not to.
        transport = self._transport
        return transport is None or transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        for waiter in self._close_waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        self._end_next_bytes()
        # What _wake_writer and _wake_reader do, in one go: a runner waits for one of them
        # at a time, and one that has ended waits for neither.
        reader, writer, runner = self._reader, self._writer, self._runner
        if writer is not None and not writer.done():
            writer.set_result(None)
        if reader is not None and not reader.done():
            reader.set_result(None)
        if runner is not None and runner.waiting:
            runner.wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    def _end_next_bytes(self) -> None:
        """Resolve the future of :meth:`next_bytes` with ``b""``, the end of the stream
        (``buffer_updated`` hands over bytes): at the peer's close, and at the loss of
        the connection, where asyncio reads no more and no other call would come
        (a client would wait for its reply until the reply's timeout, 10 minutes
        after the content, RFC 5321 §4.5.3.2.6)."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(b"")

    def _wake_reader(self) -> None:
        self._end_next_bytes()
        if self._reader is not None:
            if not self._reader.done():
                self._reader.set_result(None)
        elif self._runner is not None and self._runner.waiting:
            self._runner.wake()

    def _wake_writer(self) -> None:
        if self._writer is not None:
            if not self._writer.done():
                self._writer.set_result(None)
        elif self._runner is not None and self._runner.waiting:
            self._runner.wake()

    def _stepped(self) -> bool:
        """Whether a runner steps the session now, rather than a task."""
        runner = self._runner
        return runner is not None and runner.task is None

    # -- Transport ------------------------------------------------------------

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` octets. A read of fewer than the read buffer holds is
        exact: the event loop is let read no more than that, and reads nothing more
        until the next read asks."""
        chunks = self._chunks
        if not chunks and (max_bytes < _READ_SIZE or self._exact):
            self._read_exactly(max_bytes)
        # No yield before waiting (see the trio transport's WAITS_AFTER_A_MISS):
        # asyncio runs a task that yielded before the reads of the same pass, so it
        # would find nothing.
        while not chunks:
            if self._eof:
                if self._closing and self._transport is None:  # see _handshake_failed
                    raise ConnectionResetError("the TLS handshake failed")
                return b""
            runner = self._runner
            if runner is not None and runner.task is None:
                await WOKEN
                continue
            if self._reader is not None or self._waiter is not None:
                self._one_reader()
            self._reader = self._loop.create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        index = self._next
        first = chunks[index]
        offset = self._offset
        if offset == 0 and len(first) <= max_bytes:
            data = first
            offset = len(first)
        else:
            data = first[offset : offset + max_bytes]
            offset += len(data)
        if offset < len(first):  # the rest of the chunk stays first
            self._offset = offset
        else:
            self._offset = 0
            index += 1
            if index == len(chunks):
                chunks.clear()
                index = 0
            else:
                chunks[index - 1] = b""  # read: let it go now
            self._next = index
        self._buffered -= len(data)
        if self._reading_paused and self._buffered <= _HIGH_WATER // 4 and not self._exact:
            self._reading_paused = False
            if self._transport is not None and not self._lost:
                self._transport.resume_reading()
        return data

    def next_bytes(self) -> asyncio.Future[bytes] | None:
        """A future that the event loop's next read resolves with what it read (``b""``
        at the end of the stream), without a coroutine around the wait: how a client
        waits for a reply. ``None`` where :meth:`receive_some` must read instead:
        bytes are buffered already, the stream has ended, reading is held back, or a
        runner steps the session."""
        if (
            self._chunks
            or self._eof
            or self._exact
            or self._reading_paused
            or self._runner is not None
        ):
            return None
        if self._reader is not None or self._waiter is not None:
            self._one_reader()
        waiter = self._waiter = self._loop.create_future()
        return waiter

    def _one_reader(self) -> None:
        """Refuse a read while another waits (``RuntimeError``, as asyncio's
        ``StreamReader`` does): there is one read slot, and a second reader would take
        it, leaving the first waiting for bytes that go to the second. A future of
        :meth:`next_bytes` cancelled or timed out, which its reader left behind, is no
        reader."""
        waiter = self._waiter
        if self._reader is not None or (waiter is not None and not waiter.done()):
            raise RuntimeError("a read was started while another read is waiting for data")

    def _read_exactly(self, max_bytes: int) -> None:
        """Let the event loop read at most ``max_bytes`` (any amount if that is the
        whole buffer), reading again if it held off after an exact read."""
        self._exact = max_bytes if max_bytes < _READ_SIZE else 0
        if self._reading_paused:
            self._reading_paused = False
            if self._transport is not None and not self._lost:
                self._transport.resume_reading()

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What the event loop has already read, without waiting (``max_bytes`` aside:
        a client calls this rarely, to see whether anything came unasked); ``None``
        when nothing has, ``b""`` once the peer has closed."""
        chunks = self._chunks
        if not chunks:
            return b"" if self._eof else None
        data = b"".join(chunks[self._next :])[self._offset :]
        chunks.clear()
        self._next = self._offset = self._buffered = 0
        if self._reading_paused:
            self._reading_paused = False
            if self._transport is not None and not self._lost:
                self._transport.resume_reading()
        return data

    def arrived(self) -> bool:
        """Whether the socket holds bytes the event loop has yet to read (kept from
        running by a caller that blocked it, a content source reading a slow disk),
        when :meth:`receive_nowait` has nothing to give: a read then starts at once
        (over TLS a record that came in part waits for its rest, which the caller
        bounds with a deadline)."""
        if self._chunks or self._eof or self._transport is None or self._lost:
            return False
        sock = self._transport.get_extra_info("socket")
        return sock is not None and shared_transport.readable_now(sock.fileno())

    def drained(self) -> bool:
        """Whether every byte the event loop has read was read from here already, and
        it reads on (then :meth:`receive_nowait` would find nothing)."""
        return not self._chunks and not self._eof and not self._exact

    def settled(self) -> bool:
        """:meth:`drained`, and nothing in the socket that the event loop has yet to
        read either (:meth:`arrived`), in one call."""
        transport = self._transport
        if self._chunks or self._eof or self._exact or transport is None or self._lost:
            return False
        readable = self._readable
        if readable is None:
            sock = transport.get_extra_info("socket")
            if sock is None:
                return False
            readable = self._readable = shared_transport.readable_probe(sock.fileno())
        return not readable()

    def send_nowait(self, data: bytes) -> int:
        """Write ``data`` (asyncio buffers what the socket does not take); 0 while the
        transport has paused writing.

        asyncio's transport never raises from ``write``: a failed write (``EPIPE``,
        ``ECONNRESET``) closes it at once (``is_closing()``), drops every later
        write, and tells the protocol only at the loop's next pass. Under TLS the
        TCP transport beneath is asked too: on Python 3.10, 3.11 and older 3.12 and
        3.13 releases it is the one that closes at once, the TLS one a pass or two
        later (CPython gh-118950). So the write is followed by that question, and a
        closing transport raises ``ConnectionResetError`` here, as :meth:`send_all`
        does: the driver then tells the machine (``send_failed``) and reads the
        reply the server left behind, a ``421`` saying why (RFC 5321 §3.8), within
        its bound, instead of writing the rest of a message into the void and
        waiting for the reply to it. :class:`StreamTransport` asks the same at each
        write."""
        transport = self._transport
        if transport is None or self._lost or self._closing:
            raise ConnectionResetError("the connection is closed")
        if self._writing_paused:
            return 0
        transport.write(data)
        if _closing(transport, self._beneath):
            raise ConnectionResetError("the connection was lost while writing")
        return len(data)

    keeps_cancelled_sends: ClassVar[bool] = True
    """A cancelled :meth:`send_all` loses nothing: asyncio's transport took every byte
    before the wait for room, and still writes them (see :mod:`smtpcore.transport`)."""

    def waiting_to_send(self) -> int:
        """The bytes written that wait in asyncio's transport for room (see
        :mod:`smtpcore.transport`): :meth:`send_nowait` leaves up to asyncio's
        high-water mark there, which a client that reads slowly takes, if not within
        the session's timeout, and one that never reads does not."""
        transport = self._transport
        if transport is None or self._lost:
            return 0
        return _unsent(transport, self._beneath)

    def unacknowledged(self) -> int | None:
        """The bytes the kernel sent or holds that the client has not acknowledged (see
        :mod:`smtpcore.transport`), on the socket beneath, TLS or not; None where the
        kernel cannot say."""
        transport = self._transport
        if transport is None or self._lost:
            return None
        return kernel_unacknowledged(transport.get_extra_info("socket"))

    async def send_all(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._lost or self._closing:
            raise ConnectionResetError("the connection is closed")
        transport.write(data)
        if _closing(transport, self._beneath):  # the write failed: see send_nowait
            raise ConnectionResetError("the connection was lost while writing")
        while self._writing_paused and not self._lost:
            if self._stepped():
                await WOKEN
                continue
            self._writer = self._loop.create_future()
            try:
                await self._writer
            finally:
                self._writer = None
        if self._lost:
            raise ConnectionResetError("the connection was lost while writing")

    async def send_eof(self) -> None:
        """Shut down the sending side once what is buffered has gone, where asyncio's
        transport can (``can_write_eof()``: a plain socket, not TLS)."""
        transport = self._transport
        if transport is None or self._lost or self._closing:
            raise ConnectionResetError("the connection is closed")
        if transport.can_write_eof():
            transport.write_eof()

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        transport = self._transport
        if transport is None or self._lost:
            raise ConnectionResetError("the connection is closed")
        # What is buffered came in plaintext before the handshake (RFC 3207 §4.2).
        self._chunks.clear()
        self._next = self._offset = self._buffered = self._exact = 0
        self._reading_paused = False
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(
                transport,
                self,
                context,
                server_side=server_side,
                server_hostname=server_hostname,
            )
        except BaseException:
            self._handshake_failed(transport)
            raise
        if new is None:  # pragma: no cover - only for a closing transport
            raise ConnectionResetError("the connection closed during the TLS handshake")
        self._transport = new
        self._beneath = transport
        self._tls = True

    def _handshake_failed(self, transport: asyncio.Transport) -> None:
        """Leave no way back to plaintext after a handshake that raised, a cancelled
        one included (see :meth:`smtpcore.transport.Transport.start_tls`).

        asyncio closes the plain transport then, but gently: what is queued (a
        ``220`` the peer has not read) still goes out, a close waits for it, and the
        protocol is asyncio's TLS one by then, so this one is never told of the end
        (a read would wait for ever). So the transport is aborted, dropping what is
        queued, and forgotten: reads and writes raise ``ConnectionResetError``,
        whoever waits is woken, and :meth:`aclose` has nothing left to close
        (closing, and no transport: what only this leaves)."""
        transport.abort()
        self._transport = None
        self._closing = True
        self.connection_lost(None)

    closes_when_cancelled: ClassVar[bool] = True
    """A cancelled :meth:`aclose` still closes: it aborts asyncio's transport (see
    :mod:`smtpcore.transport`)."""

    async def aclose(self) -> None:
        transport = self._transport
        if transport is None:
            return
        self._closing = True
        close_at_once = _client_tls_close(transport, self._beneath)  # asked while open
        if not transport.is_closing():
            transport.close()
        if self._lost or (not self._tls and not transport.get_write_buffer_size()):
            # Nothing left to send, and no TLS close to answer: asyncio closes the
            # socket on its next pass, with nothing to wait for.
            return
        # Wait for connection_lost; a peer that never takes the last bytes (or never
        # answers a TLS close) is cut off after CLOSE_TIMEOUT.
        timer = self._loop.call_later(shared_transport.CLOSE_TIMEOUT, transport.abort)
        try:
            if close_at_once is not None:
                await close_at_once()
            while self._stepped() and not self._lost:
                await WOKEN
            if not self._lost:
                waiter = self._loop.create_future()
                if self._close_waiters is None:
                    self._close_waiters = []
                self._close_waiters.append(waiter)
                await waiter
        except asyncio.CancelledError:
            transport.abort()
            raise
        finally:
            timer.cancel()

    def refuse(self, reply: bytes) -> None:
        """Write ``reply`` and close, without a session (the server is full)."""
        self._closing = True
        if self._transport is not None and not self._lost:
            if reply:
                self._transport.write(reply)
            self._transport.close()

    @property
    def peer_address(self) -> tuple[str, int] | None:
        if self._transport is None:
            return None
        value = self._transport.get_extra_info("peername")
        # An IPv4 address as address() would keep it, without the call: every connection.
        if type(value) is tuple and len(value) == 2:
            return value
        return address(value)

    @property
    def local_address(self) -> tuple[str, int] | None:
        if self._transport is None:
            return None
        value = self._transport.get_extra_info("sockname")
        if type(value) is tuple and len(value) == 2:  # as peer_address
            return value
        return address(value)

    @property
    def tls(self) -> TLSInfo | None:
        if self._transport is None:
            return None
        return tls_info(self._transport.get_extra_info("ssl_object"))
