"""SMTP over trio: a server for a :class:`~smtpcore.handler.Handler`, and a client.

Needs the ``trio`` extra. Only the transport and the task plumbing live
here; the sessions run in the driver shared with :mod:`smtpcore.asyncio`,
and the public API has the same shape.
"""

from __future__ import annotations

import contextlib
import email.message
import errno
import logging
import math
import os
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, Final, TypeVar

import trio

from smtpcore._driver import (
    BaseSMTPClient,
    BaseSMTPServer,
    ExtensionNotOffered,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    ServerOptions,
    ServerSession,
    SMTPConnectionError,
    SMTPError,
    SMTPProtocolError,
    SMTPReplyError,
    SMTPTimeout,
    Timeouts,
    TLSNotAvailable,
    address,
    tls_info,
)
from smtpcore._driver._client_constructors import ClientConstructors, Options
from smtpcore._driver._content import Content
from smtpcore._driver._listener import BaseListener, ListenedSession
from smtpcore._driver._logtext import describe_error
from smtpcore._driver._pop3_client import (
    BasePOP3Client,
    MessageListing,
    POP3AuthenticationError,
    POP3AuthenticationNotAvailable,
    POP3ClientOptions,
    POP3ConnectionError,
    POP3Error,
    POP3ProtocolError,
    POP3ResponseError,
    POP3Timeout,
    POP3TLSNotAvailable,
)
from smtpcore._driver._pop3_server import BasePOP3Server, POP3ServerOptions, POP3ServerSession
from smtpcore._driver._smtp_client import (
    AuthenticationError,
    AuthenticationNotAvailable,
    HelloRefused,
    MessageTooLarge,
    RecipientParameters,
    Recipients,
    SMTPClientOptions,
)
from smtpcore._driver._timeouts import POP3Timeouts
from smtpcore._driver._transport import FastPaths, Link, YieldFirst, readable_now
from smtpcore._trio_clock import TrioClock as TrioClock  # importable from here too
from smtpcore._trio_clock import _link
from smtpcore._trio_deadlines import _Deadline
from smtpcore._trio_held import HOLD_AT_MOST, HeldWrites
from smtpcore.address import Mailbox
from smtpcore.handler import (
    Authenticator,
    AuthIdentity,
    Envelope,
    Handler,
    Recipient,
    Session,
    TLSInfo,
)
from smtpcore.maildrop import (
    Maildir,
    MaildirStore,
    Maildrop,
    MaildropError,
    MaildropInUse,
    Mailstore,
    MessageInfo,
    MessageUnavailable,
    POP3Session,
)
from smtpcore.smtp import TransactionResult, Xforward
from smtpcore.smtp._params import ParametersLike
from smtpcore.transport import Transport

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "AuthIdentity",
    "AuthenticationError",
    "AuthenticationNotAvailable",
    "Authenticator",
    "ExtensionNotOffered",
    "HelloRefused",
    "MessageRefused",
    "MessageTooLarge",
    "RecipientsRefused",
    "SMTPClient",
    "SMTPConnectionError",
    "SMTPError",
    "SMTPProtocolError",
    "SMTPReplyError",
    "SMTPTimeout",
    "SenderRefused",
    "TLSNotAvailable",
    "send_message",
    "Envelope",
    "Handler",
    "Recipient",
    "SMTPServer",
    "Session",
    "TLSInfo",
    "Timeouts",
    "TrioTransport",
    "serve",
    "Maildir",
    "MaildirStore",
    "Maildrop",
    "MaildropError",
    "MaildropInUse",
    "Mailstore",
    "MessageInfo",
    "MessageListing",
    "MessageUnavailable",
    "POP3AuthenticationError",
    "POP3AuthenticationNotAvailable",
    "POP3Client",
    "POP3ConnectionError",
    "POP3Error",
    "POP3ProtocolError",
    "POP3ResponseError",
    "POP3Server",
    "POP3Session",
    "POP3TLSNotAvailable",
    "POP3Timeout",
    "POP3Timeouts",
    "serve_pop3",
    "ServerOptions",
    "POP3ServerOptions",
    "SMTPClientOptions",
    "POP3ClientOptions",
]

logger = logging.getLogger("smtpcore.server")

_S = TypeVar("_S", bound=ListenedSession)
_L = TypeVar("_L", bound="_Listener[Any]")

_CLOSE_TIMEOUT: Final = 5.0
_REFUSE_TIMEOUT: Final = 1.0
# accept() errors that mean "out of resources for now", not "the listener is broken".
_ACCEPT_RETRY: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


async def _run_contained(session: ListenedSession) -> None:
    """Run ``session`` to its end, and no further: whatever escapes it (a
    ``trio.Cancelled`` the handler raised itself, a bug), but for the cancellation
    of a scope around it (a shutdown, its caller's timeout), is logged and ends
    this session alone. In a nursery, a task's exception cancels every other task:
    the server's other sessions and its accept loop."""
    try:
        await session.run()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        if isinstance(exc, trio.Cancelled) and trio.current_effective_deadline() == -math.inf:
            raise  # a scope around the session is cancelled: it catches this
        session.log_failure()


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The socket under ``stream``, through TLS layers, if there is one."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket if isinstance(stream, trio.SocketStream) else None


class TrioTransport(FastPaths):
    """A :class:`~smtpcore.transport.Transport` over any ``trio.abc.Stream``.

    A ``trio.SocketStream`` is read and written through its socket directly
    while in plaintext (trio's layers cost more than the read on a busy
    session); any other stream (a ``trio.SSLStream``, a memory stream, a
    user's own) through its own methods. ``start_tls`` wraps the stream in a
    ``trio.SSLStream``.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._base = stream
        self._stream: trio.abc.Stream = stream
        self._ssl: trio.SSLStream[trio.abc.Stream] | None = (
            stream if isinstance(stream, trio.SSLStream) else None
        )
        self._closed = False
        self._yield_first = YieldFirst()
        self._fd = -1
        """The socket's descriptor while plain-TCP reads and writes go to it."""
        self._drained = False
        if isinstance(stream, trio.SocketStream):
            # A SocketStream over TCP has TCP_NODELAY set already (trio does it).
            self._fd = stream.socket.fileno()
        if self._ssl is not None:
            self.finish_handshake = self._finish_handshake

    keeps_cancelled_sends: ClassVar[bool] = False
    """A cancelled :meth:`send_all` drops what it had not written yet (trio's streams do,
    and so does the write straight to a ``SocketStream``'s socket): the peer may hold
    a part of it (see :mod:`smtpcore.transport`)."""

    finish_handshake: Callable[[], Awaitable[None]] | None = None
    """Finish the handshake of a ``trio.SSLStream`` given as it came (see
    :mod:`smtpcore.transport`); None for any other stream, so that a client over plain
    TCP pays nothing for it at connect."""

    _writes: HeldWrites | None = None
    """The server's held writes (see :class:`~smtpcore._trio_held.HeldWrites`), set by
    the server on a connection it accepted; None writes every reply at once."""
    # What held writes keep, set on a connection only once it has some: an idle
    # session keeps none of them.
    _held: bytes | None = None
    """What ``_writes`` holds for this connection until the batch's end."""
    _rest_written: trio.Event | None = None
    """Set once the rest of a held write, which the kernel did not take at the batch's
    end, has gone (a task of the server's writes it)."""
    _write_failed: OSError | None = None
    """Why a held write failed, for the session's next write to raise."""
    _tls_broken: bool = False
    """Whether the ``trio.SSLStream`` was found broken, which trio makes it when a write
    through it did not finish (cut off part-way, or failed): trio then refuses every
    read and write on it, so what is left to do (the server's linger) goes to the
    stream under it. Found as the linger starts (:meth:`send_eof` asks, a read
    fails), not when a write is cancelled: one cancelled before it sent anything
    leaves the stream whole, and its close says so (TLS's close_notify)."""

    async def receive_some(self, max_bytes: int) -> bytes:
        if self._fd >= 0 and not self._closed:
            return await self._receive_plain(max_bytes)
        self._drained = False
        try:
            return bytes(await self._stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    async def _receive_plain(self, max_bytes: int) -> bytes:
        """Read the socket itself, with the checkpoint trio's own read makes but
        without its layers, which cost more than the read on a busy session.

        The checkpoint comes first, and the read then often finds the
        client's next command without registering with epoll to wait for it
        (see :class:`~smtpcore._driver._transport.YieldFirst`).
        """
        fd = self._fd
        if self._yield_first.now():
            await trio.lowlevel.checkpoint()  # a read is a checkpoint, waiting or not
            try:
                data = os.read(fd, max_bytes)
                self._drained = len(data) < max_bytes
                return data
            except BlockingIOError:
                self._yield_first.missed()
        while True:
            try:
                await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError as exc:  # closed by another task meanwhile
                raise ConnectionResetError("the connection is closed") from exc
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:  # pragma: no cover - a spurious wake-up
                continue
            self._drained = len(data) < max_bytes
            return data

    def drained(self) -> bool:
        """Whether the last read took everything that had arrived by then: a plain
        socket's read that gave fewer octets than asked for."""
        return self._drained

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What the kernel holds already, without waiting (plain TCP only: a TLS
        stream's records cannot be read without waiting, so ``None``, as when
        nothing has arrived; ``b""`` once the peer has closed). A failed read (a
        reset) is the end of the stream too: the caller looks here for a reply
        no command asked for, and what it read before, a ``421`` say, is the news
        to give, not the reset after it (RFC 5321 §3.8)."""
        if self._fd < 0 or self._closed:
            return None
        self._drained = False
        try:
            return os.read(self._fd, max_bytes)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def arrived(self) -> bool:
        """Whether bytes wait that :meth:`receive_nowait` cannot give: over TLS, a
        record decrypted and not yet read, or the socket under the ``SSLStream``
        readable. A read then starts at once; the caller bounds it with a deadline,
        for a record that came in part. Asked rather than tried: a receive that
        meets a cancelled scope is cancelled before it reads anything, and trio
        leaves an ``SSLStream`` unusable if one is cancelled mid-handshake.
        ``False`` in plaintext, where :meth:`receive_nowait` reads the kernel."""
        stream = self._ssl
        if stream is None or self._closed:
            return False
        if stream.pending():
            return True
        sock = _socket_of(stream)
        return sock is not None and readable_now(sock.fileno())

    def send_nowait(self, data: bytes) -> int:
        """Write what the kernel takes at once (plain TCP only; else ``0``)."""
        if self._closed:
            raise ConnectionResetError("the connection is closed")
        if self._fd < 0:
            return 0  # TLS records and other streams go through send_all
        writes = self._writes
        if writes is not None:
            if self._rest_written is not None or self._write_failed is not None:
                return 0  # behind what waits for room (send_all waits, or raises)
            if writes.holds():  # others write in this batch: written with theirs
                held = self._held
                if (0 if held is None else len(held)) + len(data) <= HOLD_AT_MOST:
                    return writes.hold(self, data)
                if held is not None:
                    return 0  # too much to hold: send_all writes what waits, then this
        # Straight to the kernel: trio's send passes through the scheduler even
        # when it need not wait. The session's next read is its checkpoint.
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    def _write_held(self) -> None:
        """The batch's end (:meth:`HeldWrites.before_io_wait`): write what is held. The
        rest, if the kernel does not take it all, is written by a task of the
        server's, which waits for room; a failure is raised by the session's next
        write (its next read finds the connection gone)."""
        data = self._held
        if data is None:  # written meanwhile (a later send_all, the close)
            return
        self._held = None
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._write_failed = exc
            return
        if sent < len(data):
            done = self._rest_written = trio.Event()
            assert self._writes is not None  # only held writes come here
            try:
                self._writes.spawn(self._write_rest, data[sent:], done)
            except RuntimeError as exc:  # the server's nursery takes no more tasks
                self._rest_written = None
                self._write_failed = ConnectionResetError(str(exc))

    async def _write_rest(self, data: bytes, done: trio.Event) -> None:
        """Write the rest of a held write as room comes (see :meth:`_write_held`)."""
        try:
            await self._send_plain(data)
        except OSError as exc:
            self._write_failed = exc
        finally:
            self._rest_written = None
            done.set()

    async def _held_first(self, data: bytes) -> bytes:
        """``data`` behind what waits to be written: the rest of a held write, once
        written, and what is held now."""
        done = self._rest_written
        if done is not None:
            await done.wait()
        failed = self._write_failed
        if failed is not None:
            raise ConnectionResetError(f"connection lost: {failed}")
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        return data

    async def send_all(self, data: bytes) -> None:
        if self._fd >= 0 and not self._closed:
            if self._writes is not None:
                data = await self._held_first(data)
            await self._send_plain(data)
            return
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    async def receive_to_drop(self, max_bytes: int) -> bytes:
        """Read bytes only to drop them, as a server's linger does before its close:
        through TLS while it works; once trio's ``SSLStream`` is broken (a write cut off
        part-way), the raw bytes of the stream under it. Left unread, the client's
        pipelined commands would turn the close into a reset, and the client's
        kernel would drop every reply it had not read yet (RFC 1122 §4.2.2.13)."""
        ssl_stream = self._ssl
        if not self._tls_broken:
            try:
                return await self.receive_some(max_bytes)
            except ConnectionResetError:
                if ssl_stream is None or self._closed:
                    raise
                self._tls_broken = True  # the stream under it is tried next
        assert ssl_stream is not None
        try:
            return bytes(await ssl_stream.transport_stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    async def _send_plain(self, data: bytes) -> None:
        """Write to the socket itself, as :meth:`_receive_plain` reads: write what the
        kernel takes, and wait for room only when it took nothing. (trio's stream
        tries again before each wait, and the driver has usually just tried.)"""
        fd = self._fd
        view = memoryview(data)
        sent = 0
        while sent < len(view):
            try:
                sent += os.write(fd, view[sent:])
                continue
            except BlockingIOError:
                pass
            try:
                await trio.lowlevel.wait_writable(fd)
            except trio.ClosedResourceError as exc:  # closed by another task meanwhile
                raise ConnectionResetError("the connection is closed") from exc

    async def send_eof(self) -> None:
        """Shut down the sending side once everything written has gone (the held reply
        first), where the stream can: a ``trio.abc.HalfCloseableStream`` (a
        ``SocketStream``) with no TLS over it, or under a broken TLS layer, which
        writes no more records; else nothing."""
        if self._closed:
            raise ConnectionResetError("the connection is closed")
        stream = self._stream
        if self._ssl is not None:
            if not (self._tls_broken or await self._tls_found_broken()):
                return
            stream = self._ssl.transport_stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            return
        if self._writes is not None and self._fd >= 0:
            held = await self._held_first(b"")
            if held:
                await self._send_plain(held)
        try:
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    async def _tls_found_broken(self) -> bool:
        """Whether the ``trio.SSLStream`` is broken (see :attr:`_tls_broken`), asked with a
        write of nothing, which trio refuses on a broken stream and otherwise turns
        into a checkpoint that sends no record."""
        assert self._ssl is not None
        try:
            await self._ssl.send_all(b"")
        except trio.BrokenResourceError:
            self._tls_broken = True
        except trio.ClosedResourceError as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc
        return self._tls_broken

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        # A SocketStream keeps no read buffer of its own: any plaintext sent
        # after STARTTLS is still in the kernel, and the TLS layer refuses it.
        # So does it what another stream had buffered.
        if self._ssl is not None:
            raise ConnectionResetError("TLS is already up on this stream")
        if self._writes is not None and self._fd >= 0:
            held = await self._held_first(b"")  # the reply that says go ahead, in clear
            if held:
                await self._send_plain(held)
        stream = trio.SSLStream(
            self._stream,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            https_compatible=True,  # SMTP frames its own end, so a bare TCP close is EOF
        )
        try:
            await _shake_hands(stream)
        except BaseException:
            # No way back to plaintext (RFC 3207 §4): the peer may be mid-handshake,
            # so a plain reply (a shutdown's 421) would land in its TLS records.
            # Reads and writes go to the stream whose handshake failed, which fails them
            # as a reset connection does; aclose still closes the socket.
            self._stream = _HandshakeFailed(stream)
            self._fd = -1
            raise
        self._ssl = stream
        self._stream = stream
        self._fd = -1

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
            scope.shield = True
            if self._held is not None or self._rest_written is not None:
                # The last reply, held: before the close, as a write would have been.
                with contextlib.suppress(OSError):
                    await self._send_plain(await self._held_first(b""))
            try:
                await self._stream.aclose()
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(self._base)

    @property
    def peer_address(self) -> tuple[str, int] | None:
        base = self._base
        # An accepted TCP stream's socket, and an IPv4 address as address() would keep
        # it, without the calls: every connection asks.
        sock = base.socket if type(base) is trio.SocketStream else _socket_of(base)
        try:
            value = None if sock is None else sock.getpeername()
        except OSError:
            return None
        if type(value) is tuple and len(value) == 2:
            return value
        return address(value)

    @property
    def local_address(self) -> tuple[str, int] | None:
        base = self._base
        sock = base.socket if type(base) is trio.SocketStream else _socket_of(base)
        try:
            value = None if sock is None else sock.getsockname()
        except OSError:
            return None
        if type(value) is tuple and len(value) == 2:  # as peer_address
            return value
        return address(value)

    @property
    def tls(self) -> TLSInfo | None:
        return None if self._ssl is None else tls_info(self._ssl)

    async def _finish_handshake(self) -> None:
        """The given ``trio.SSLStream``'s handshake (trio makes it on the stream's first
        use), so that :attr:`tls` describes the session from its first byte; nothing
        for one whose handshake is done."""
        assert self._ssl is not None
        await _shake_hands(self._ssl)


class _HandshakeFailed(trio.abc.Stream):
    """What is left of a stream whose TLS handshake did not finish (it failed, or was
    cancelled): every read and write fails, as over a reset connection, and closing
    closes the stream under it. trio leaves such an ``SSLStream`` broken, but says
    it *may*; this says it for certain, and for every stream."""

    def __init__(self, stream: trio.SSLStream[trio.abc.Stream]) -> None:
        self._stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("the TLS handshake did not finish")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("the TLS handshake did not finish")

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _shake_hands(stream: trio.SSLStream[trio.abc.Stream]) -> None:
    """``stream``'s handshake, its failures an ``OSError`` as the transports' are."""
    try:
        await stream.do_handshake()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError):
            raise cause from exc
        raise ConnectionResetError(str(exc) or "TLS handshake failed") from exc


class _Listener(BaseListener[_S]):
    """The accept loop and graceful shutdown of a server on trio, for any protocol."""

    _listeners: Sequence[trio.SocketListener] = ()
    _nursery: trio.Nursery
    _accepting: trio.CancelScope
    _sessions_scope: trio.CancelScope
    _all_done: trio.Event
    _stopped: trio.Event

    _stream_scopes: set[trio.CancelScope] | None = None
    """The scopes of sessions run by serve_transport in their callers' tasks."""

    _held_writes: HeldWrites | None = None
    """The replies of accepted connections held to the end of the scheduler's batch,
    while the server serves them."""

    async def _open_listeners(self) -> list[trio.SocketListener]:
        if self.sock is not None or self.unix_path is not None:
            sock = self._unix_socket() if self.sock is None else self.sock
            return [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
        return await trio.open_tcp_listeners(
            self.requested_port, host=self.host, backlog=self.backlog
        )

    _prepared = False
    """Whether the scopes and events of the shutdown are made (see :meth:`_prepare`)."""

    def _prepare(self) -> None:
        """The scopes and events the shutdown uses: made on entering, or by the first
        :meth:`aclose` or :meth:`serve_forever` of a server never entered, whose
        sessions came through :meth:`serve_transport`."""
        if self._prepared:
            return
        self._prepared = True
        self._accepting = trio.CancelScope()
        self._sessions_scope = trio.CancelScope(shield=True)
        self._all_done = trio.Event()
        self._stopped = trio.Event()
        self.state.on_empty = self._all_done.set

    async def __aenter__(self: _L) -> _L:
        if getattr(self, "_nursery_manager", None) is not None:
            raise RuntimeError("a trio server is entered once: make a new one to serve again")
        self._listeners = await self._open_listeners()
        self._prepare()
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        try:
            await nursery.start(self._run)
        except BaseException:
            await self._nursery_manager.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving the block asks for the shutdown, with its whole grace period: shielded,
        for a cancellation that ended the block (how :func:`serve` ends) is a state on
        trio, and would end the grace period as soon as it began (as it does for an
        unshielded :meth:`aclose` in a ``finally``). To bound the shutdown, call
        :meth:`aclose` under a deadline in the block."""
        try:
            with trio.CancelScope(shield=True):
                await self.aclose()
        finally:
            await self._nursery_manager.__aexit__(None, None, None)

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Shielded: sessions outlive a cancellation of the surrounding code until
        # aclose() has given them their grace period.
        with self._sessions_scope:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._held_writes = HeldWrites(nursery.start_soon)
                    trio.lowlevel.add_instrument(self._held_writes)
                    nursery.start_soon(self._accept_all)
                    task_status.started()
            finally:
                # Every session has ended, and written what it held as it closed.
                if self._held_writes is not None:
                    with contextlib.suppress(KeyError):  # trio dropped it: it failed
                        trio.lowlevel.remove_instrument(self._held_writes)
                    self._held_writes = None

    async def _accept_all(self) -> None:
        try:
            with self._accepting:
                async with trio.open_nursery() as nursery:
                    for listener in self._listeners:
                        nursery.start_soon(self._accept_loop, listener)
        finally:
            for listener in self._listeners:
                await trio.aclose_forcefully(listener)
            if self.sock is None:
                self._unix_socket_closed()

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                logger.warning("accept() failed, retrying soon: %s", describe_error(exc))
                await trio.sleep(0.1)
                continue
            transport = TrioTransport(stream)
            transport._writes = self._held_writes
            session = self.state.admit(_link(transport))
            if isinstance(session, bytes):
                self._nursery.start_soon(self._refuse, stream, session)
            else:
                self._nursery.start_soon(_run_contained, session)

    async def _refuse(self, stream: trio.SocketStream, reply: bytes) -> None:
        with trio.move_on_after(_REFUSE_TIMEOUT):
            try:
                if reply:
                    await stream.send_all(reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.aclose_forcefully(stream)

    def _listening_addresses(self) -> list[object]:
        if self._prepared and self._stopped.is_set():
            return []  # closed, as asyncio's say: its sockets are gone
        return [listener.socket.getsockname() for listener in self._listeners]

    async def serve_transport(self, transport: Transport) -> None:
        """Serve one session over ``transport`` (a :class:`~smtpcore.transport.Transport`
        whose waits are trio's), in this task, until it ends.

        It counts toward the session limits like an accepted connection (a
        refused one gets the busy reply, or after aclose the shutting-down one, and is
        closed), gets the same
        timeouts, and the same graceful shutdown: it is cancelled if it
        outlives the grace period. The server need not listen anywhere for
        this (it need not even be entered).
        """
        session = self.state.admit(_link(transport))
        if isinstance(session, bytes):
            with trio.move_on_after(_REFUSE_TIMEOUT):
                try:
                    if session:
                        await transport.send_all(session)
                except OSError:
                    pass
            await transport.aclose()
            return
        scopes = self._stream_scopes
        if scopes is None:
            scopes = self._stream_scopes = set()
        with trio.CancelScope() as scope:
            scopes.add(scope)
            try:
                await _run_contained(session)
            finally:
                scopes.discard(scope)

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one session over any ``trio.abc.Stream`` (a ``trio.SocketStream``, a
        ``trio.SSLStream``, one end of ``trio.testing.memory_stream_pair()``...), as
        :meth:`serve_transport` does: ``trio.serve_tcp(server.serve_stream, ...)``
        works as it is. A ``trio.SSLStream``'s handshake is the session's first step
        (the transport's ``finish_handshake``)."""
        await self.serve_transport(TrioTransport(stream))

    async def serve_forever(self) -> None:
        """Wait until the server is closed (by :meth:`aclose` or leaving its block)."""
        self._prepare()
        await self._stopped.wait()

    async def aclose(self, grace: float | None = 30.0) -> None:
        """Shut down gracefully, cutting off sessions still running after ``grace`` seconds,
        or at once when this call is cancelled (the cancellation is raised after), as
        trio's own ``aclose`` methods close at once, less gracefully, when cancelled.

        Trio's cancellation is a state, not an event: called inside a cancelled scope,
        as in the ``finally`` of a cancelled block, this call is cancelled from its
        start and gives no grace period at all. To get one there, shield it::

            try:
                await server.serve_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await server.aclose(grace=10)

        Leaving ``async with server`` does this for you. A cancelled call still
        finishes the shutdown, so it raises the cancellation up to about two seconds
        after it came: the sessions cut off get a second for their last words, then
        what is left is cancelled, for up to another second. A session whose hook
        ignores cancellation (shields itself) runs on past even that, and leaving
        the ``async with`` block waits for it."""
        self._prepare()
        if self._stopped.is_set():
            return
        self._accepting.cancel()
        try:
            await self._end_sessions(grace)
        finally:
            self._stopped.set()

    async def _until_idle(self, timeout: float | None) -> bool:
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await self._all_done.wait()
        return self._all_done.is_set()

    async def _shielded(
        self, work: Callable[[], Coroutine[Any, Any, None]], *, quiet: bool
    ) -> None:
        """Trio's cancellation is a state: shielded, ``work`` runs on, and the caller's
        next wait raises it. Its failure is raised, or logged where it would replace a
        cancellation on its way out (``quiet``: see the base class)."""
        with trio.CancelScope(shield=True):
            try:
                await work()
            except Exception:
                if not quiet:
                    raise
                logger.exception("shutdown: cutting off the sessions left failed")

    def _cancel_sessions(self) -> None:
        self._sessions_scope.cancel()
        for scope in list(self._stream_scopes or ()):
            scope.cancel()


class SMTPServer(_Listener[ServerSession], BaseSMTPServer):
    """An SMTP server on trio; use as ``async with SMTPServer(handler, ...) as server:``.

    Leaving the block (or :meth:`aclose`) shuts down gracefully, even when
    the block is cancelled: the server stops listening, idle sessions get
    ``421 4.3.2`` at once, sessions in the middle of a message finish it
    first, and whatever is left after ``grace`` seconds is cut off. An
    :meth:`aclose` called inside a cancelled scope cuts off at once unless
    shielded (see there).
    """


async def serve(
    handler: Handler,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[SMTPServer] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve until cancelled, then shut down gracefully.

    Use ``server = await nursery.start(serve, handler, host, port)`` to get
    the server once it listens. The other keywords are :class:`SMTPServer`'s.
    """
    async with SMTPServer(handler, host, port, **options) as server:
        task_status.started(server)
        await server.serve_forever()


_Client = TypeVar("_Client", bound=ClientConstructors)


class _TrioClient(ClientConstructors):
    """How the trio SMTP and POP3 clients get their connection."""

    @classmethod
    def over_stream(
        cls: Callable[Concatenate[str, int | None, Options], _Client],
        stream: trio.abc.Stream,
        host: str = "localhost",
        *args: Options.args,
        **options: Options.kwargs,
    ) -> _Client:
        """over_stream(stream: trio.abc.Stream, *, host: str = "localhost", **options)

        A client whose session runs over any ``trio.abc.Stream``; keywords as for
        :meth:`over_transport`."""
        client = cls(host, None, *args, **options)
        client._given = TrioTransport(stream)
        return client

    def _current_task(self) -> object:
        return trio.lowlevel.current_task()

    async def _open(self, host: str, port: int) -> Link:
        given = self._take_given()
        if given is not None:  # a trio.SSLStream's handshake is the session's to make
            return _link(given)
        async with _Deadline(self.timeouts.connect):
            if self._unix_path is not None:
                stream: trio.abc.Stream = await trio.open_unix_socket(self._unix_path)
            else:
                stream = await trio.open_tcp_stream(host, port)
        return _link(TrioTransport(stream))


class SMTPClient(_TrioClient, BaseSMTPClient):
    """An SMTP client session on trio; ``async with SMTPClient(host) as client:``.

    Send several messages over one session with :meth:`send_message`; the
    keywords are those of :class:`SMTPClientOptions`.
    """

    async def __aenter__(self) -> SMTPClient:
        await self.connect()
        return self


async def send_message(
    message: Content | email.message.Message,
    sender: str | Mailbox | None = None,
    recipients: Recipients | None = None,
    *,
    host: str,
    port: int | None = None,
    mail_params: ParametersLike = None,
    rcpt_params: RecipientParameters = None,
    xforward: Xforward | None = None,
    on_batch: Callable[[TransactionResult], Awaitable[None]] | None = None,
    resend_too_many: bool = False,
    **options: Unpack[SMTPClientOptions],
) -> TransactionResult:
    """Connect, send one message, say QUIT; returns each recipient's fate.

    ``mail_params``, ``rcpt_params``, ``xforward``, ``on_batch`` and ``resend_too_many``
    are those of :meth:`SMTPClient.send_message
    <smtpcore.trio.SMTPClient.send_message>`, which says what is raised; the other
    keywords are :class:`SMTPClient`'s.
    """
    async with SMTPClient(host, port, **options) as client:
        return await client.send_message(
            message,
            sender,
            recipients,
            mail_params=mail_params,
            rcpt_params=rcpt_params,
            xforward=xforward,
            on_batch=on_batch,
            resend_too_many=resend_too_many,
        )


# -- POP3 -------------------------------------------------------------------------


class POP3Server(_Listener[POP3ServerSession], BasePOP3Server):
    """A POP3 server on trio; use as ``async with POP3Server(store, ...) as server:``.

    ``store`` is a :class:`~smtpcore.maildrop.Mailstore`, such as a
    :class:`~smtpcore.maildrop.MaildirStore`. Leaving the block (or
    :meth:`aclose`) shuts down gracefully, even when the block is cancelled:
    the server stops listening, idle sessions get ``-ERR [SYS/TEMP]`` at once
    and lose their marks (they did not say QUIT), a response being sent is
    finished first, and whatever is left after ``grace`` seconds is cut off.
    An :meth:`aclose` called inside a cancelled scope cuts off at once unless
    shielded (see there).
    """


async def serve_pop3(
    store: Mailstore,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[POP3Server] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve POP3 until cancelled, then shut down gracefully.

    Use ``server = await nursery.start(serve_pop3, store, host, port)`` to
    get the server once it listens. The other keywords are :class:`POP3Server`'s.
    """
    async with POP3Server(store, host, port, **options) as server:
        task_status.started(server)
        await server.serve_forever()


class POP3Client(_TrioClient, BasePOP3Client):
    """A POP3 client session on trio; ``async with POP3Client(host) as client:``.

    The keywords are those of :class:`POP3ClientOptions`.
    """
