"""The asyncio adapter's transport over an asyncio stream pair (``StreamReader`` and
``StreamWriter``): :class:`~smtpcore.asyncio.StreamTransport`.

What a session runs over when it is given a stream pair (``serve_stream``, a
client's ``over_stream``), from ``asyncio.start_server``, ``open_connection``, a
subprocess's pipes. Apart from :class:`~smtpcore.asyncio.AsyncioTransport`, the
protocol the adapter's own connections are: a stream pair is read, written and
upgraded to TLS through the stream's objects, not as a protocol of ours.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import ClassVar, cast

from smtpcore._asyncio_beneath_tls import (
    _client_tls_close,
    _closing,
    _tcp_beneath,
    _unsent,
)
from smtpcore._driver import _transport as shared_transport
from smtpcore._driver import address, tls_info
from smtpcore._driver._kernel_queues import unacknowledged as kernel_unacknowledged
from smtpcore.handler import TLSInfo

__all__ = ["StreamTransport"]


def _drop_buffered(reader: asyncio.StreamReader) -> None:
    """Forget what ``reader`` holds unread: plaintext from before a TLS handshake
    (RFC 3207 §6). asyncio has no public way, so this is the one place that
    touches ``StreamReader._buffer``; if it is gone, the upgrade is refused."""
    buffer = getattr(reader, "_buffer", None)
    if not isinstance(buffer, bytearray):
        raise ConnectionResetError("cannot drop plaintext buffered before TLS on this Python")
    buffer.clear()


class _UnderTLS(asyncio.Protocol):
    """The stream's protocol as ``loop.start_tls`` is handed it: the same protocol, whose
    ``eof_received`` says the connection closes.

    A ``StreamReaderProtocol`` made for plaintext keeps the connection half open at
    the peer's end (``True``), which TLS cannot do (RFC 8446 §6.1: closure alerts
    close both ways), and asyncio warns of it at each close; the protocol learns it
    is under TLS only when asyncio's own ``StreamWriter.start_tls`` tells it, which
    chooses the side by how the stream was opened. Everything else goes to the
    stream's protocol, whose reader and flow control go on as they were."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool:
        self._inner.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class StreamTransport:
    """A :class:`~smtpcore.transport.Transport` over an asyncio stream pair.

    TLS starts in place with :meth:`asyncio.loop.start_tls`, on either side,
    where the pair runs over a transport that supports it (a socket); any
    plaintext the reader holds from before the handshake is dropped.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._transport: asyncio.BaseTransport = writer.transport
        self._beneath = _tcp_beneath(writer.transport)  # TLS from the first byte (ssl=)
        """Under TLS, the TCP transport beneath (see
        :func:`~smtpcore._asyncio_beneath_tls._closing`)."""
        self._closed = False

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self._reader.read(max_bytes)

    keeps_cancelled_sends: ClassVar[bool] = True
    """A cancelled :meth:`send_all` loses nothing: the stream's transport took every byte
    before the drain waits, and still writes them (see :mod:`smtpcore.transport`)."""

    async def send_all(self, data: bytes) -> None:
        """Write ``data`` and wait while the stream's protocol has paused writing.

        A transport that closes at the write (it failed: see
        :meth:`AsyncioTransport.send_nowait
        <smtpcore.asyncio.AsyncioTransport.send_nowait>`) raises
        ``ConnectionResetError`` there, under TLS too, rather than at a later write or
        read."""
        transport = self._transport
        if self._closed or _closing(transport, self._beneath):
            raise ConnectionResetError("the connection is closed")
        cast(asyncio.WriteTransport, transport).write(data)  # a stream's (see connection_made)
        if _closing(transport, self._beneath):
            raise ConnectionResetError("the connection was lost while writing")
        await self._writer.drain()  # the protocol's flow control, TLS or not

    def waiting_to_send(self) -> int:
        """The bytes written that wait in the stream's transport for room (see
        :mod:`smtpcore.transport`): :meth:`send_all` returns once they are below the
        stream's high-water mark, not gone, and a client that reads slowly takes
        them, if not within the session's timeout."""
        if self._closed:
            return 0
        return _unsent(self._transport, self._beneath)

    def unacknowledged(self) -> int | None:
        """The bytes the kernel sent or holds that the client has not acknowledged (see
        :mod:`smtpcore.transport`), on the socket beneath, TLS or not; None where the
        kernel cannot say (a pipe, a stream over no socket)."""
        if self._closed:
            return None
        return kernel_unacknowledged(self._transport.get_extra_info("socket"))

    async def send_eof(self) -> None:
        """Shut down the sending side once what is buffered has gone, where the stream
        can (``can_write_eof()``: a socket or a pipe, not TLS)."""
        transport = cast(asyncio.WriteTransport, self._transport)
        if self._closed or _closing(transport, self._beneath):
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
        if self._closed or transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        _drop_buffered(self._reader)
        loop = asyncio.get_running_loop()
        try:
            try:
                new = await loop.start_tls(
                    transport,
                    _UnderTLS(cast(asyncio.Protocol, transport.get_protocol())),
                    context,
                    server_side=server_side,
                    server_hostname=server_hostname,
                )
            except (TypeError, NotImplementedError, RuntimeError) as exc:  # a pipe, say
                raise ConnectionResetError(f"this stream cannot start TLS: {exc}") from exc
        except BaseException:
            self._handshake_failed()
            raise
        if new is None:  # pragma: no cover - only for a closing transport
            raise ConnectionResetError("the connection closed during the TLS handshake")
        self._transport = new
        self._beneath = transport

    def _handshake_failed(self) -> None:
        """Leave no way back to plaintext after a handshake that raised, a cancelled
        one included (see :meth:`smtpcore.transport.Transport.start_tls`): the
        transport is aborted, dropping what is queued, and closed for this stream,
        whose reads raise ``ConnectionResetError`` (the reader's protocol, behind
        asyncio's TLS one by then, would never hear of the end), its writes too,
        and whose :meth:`aclose` has nothing left to wait for."""
        self._closed = True
        self._reader.set_exception(ConnectionResetError("the TLS handshake failed"))
        cast(asyncio.WriteTransport, self._transport).abort()

    closes_when_cancelled: ClassVar[bool] = True
    """A cancelled :meth:`aclose` still closes: it aborts the stream's transport (see
    :mod:`smtpcore.transport`)."""

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        close_at_once = _client_tls_close(transport, self._beneath)  # asked while open
        transport.close()
        try:
            await asyncio.wait_for(
                self._closed_at_last(close_at_once), shared_transport.CLOSE_TIMEOUT
            )
        except (OSError, asyncio.TimeoutError):
            cast(asyncio.WriteTransport, transport).abort()
        except asyncio.CancelledError:
            cast(asyncio.WriteTransport, transport).abort()
            raise

    async def _closed_at_last(self, close_at_once: Callable[[], Awaitable[None]] | None) -> None:
        """Wait for the close of the stream's transport: a client's TLS closes the TCP
        transport once its close_notify has gone (see
        :func:`~smtpcore._asyncio_beneath_tls._client_tls_close`)."""
        if close_at_once is not None:
            await close_at_once()
        await self._writer.wait_closed()

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return address(self._transport.get_extra_info("peername"))

    @property
    def local_address(self) -> tuple[str, int] | None:
        return address(self._transport.get_extra_info("sockname"))

    @property
    def tls(self) -> TLSInfo | None:
        return tls_info(self._transport.get_extra_info("ssl_object"))
