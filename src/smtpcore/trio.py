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
import socket
import ssl
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

import trio

from smtpcore._driver import (
    BaseSMTPClient,
    BaseSMTPServer,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
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
from smtpcore._driver._listener import BaseListener, ListenedSession
from smtpcore._driver._pop3_client import (
    BasePOP3Client,
    MessageListing,
    POP3AuthenticationError,
    POP3ConnectionError,
    POP3Error,
    POP3ProtocolError,
    POP3ResponseError,
    POP3Timeout,
    POP3TLSNotAvailable,
)
from smtpcore._driver._pop3_server import BasePOP3Server, POP3ServerSession
from smtpcore._driver._smtp_client import (
    AuthenticationError,
    AuthenticationNotAvailable,
    Recipients,
)
from smtpcore._driver._timeouts import POP3Timeouts
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
from smtpcore.smtp import TransactionResult

__all__ = [
    "AuthIdentity",
    "AuthenticationError",
    "AuthenticationNotAvailable",
    "Authenticator",
    "MessageRefused",
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
]

logger = logging.getLogger("smtpcore.server")

_S = TypeVar("_S", bound=ListenedSession)
_T = TypeVar("_T")
_L = TypeVar("_L", bound="_Listener[Any]")

_CLOSE_TIMEOUT: Final = 5.0
_REFUSE_TIMEOUT: Final = 1.0
# accept() errors that mean "out of resources for now", not "the listener is broken".
_ACCEPT_RETRY: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class _Deadline:
    """A trio cancel scope that raises ``TimeoutError`` rather than ``trio.TooSlowError``."""

    __slots__ = ("_scope", "_seconds")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._scope = trio.CancelScope()

    async def __aenter__(self) -> _Deadline:
        if self._seconds is not None:
            # A new scope rather than a deadline set on the old one: setting it
            # is a context manager of its own, and this runs for every read.
            self._scope = trio.CancelScope(deadline=trio.current_time() + self._seconds)
        self._scope.__enter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        suppressed = bool(self._scope.__exit__(exc_type, exc, tb))
        if self._scope.cancelled_caught:
            raise TimeoutError
        return suppressed

    def expire(self) -> None:
        self._scope.cancel()


class _Watchdog(_Deadline):
    """The session's :class:`~smtpcore._driver._timeouts.Watchdog`: one cancel scope
    for the whole session, whose deadline moves, rather than a scope per read.

    Moving a deadline is itself costly in trio, and a busy session waits a
    few thousand times a second, so the deadline moves lazily. Arming sets it
    a hundredth of the timeout late, and keeps a deadline already set that is
    not early and at most a fiftieth late: RFC 5321 §4.5.3.2 timeouts are
    minimums. Disarming leaves it set: a cancellation is delivered only where
    the task waits, and between two reads the session waits only in the
    transport's :meth:`~TrioTransport.within` and
    :meth:`~TrioTransport.deadline`, which quiet the watchdog first when it
    would end before them.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(None)

    async def __aenter__(self) -> _Watchdog:
        await super().__aenter__()
        return self

    def arm(self, seconds: float | None) -> None:
        if seconds is None:
            self.quiet(None)
            return
        due = trio.current_time() + seconds
        if not due <= self._scope.deadline <= due + seconds / 50:
            self._scope.deadline = due + seconds / 100

    def disarm(self) -> None:
        pass  # left set until something other than a read may wait: see quiet()

    def quiet(self, seconds: float | None) -> None:
        """Before a wait of up to ``seconds`` that is not a wait for the client: take
        the deadline off unless that wait's own deadline comes first."""
        deadline = self._scope.deadline
        if deadline != math.inf and (seconds is None or deadline < trio.current_time() + seconds):
            self._scope.deadline = math.inf

    @property
    def expired(self) -> bool:
        return self._scope.cancelled_caught


class TrioTransport:
    """The driver's :class:`~smtpcore._driver.Transport` on a ``trio.SocketStream``."""

    _watchdog: _Watchdog | None = None
    """The watchdog of the session on this stream, quieted before other waits."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._socket_stream = stream
        self._stream: trio.abc.Stream = stream
        self._ssl: trio.SSLStream[trio.SocketStream] | None = None
        self._closed = False
        self._wait_first = False
        self._fd = stream.socket.fileno()  # for the plain-TCP reads and writes
        with contextlib.suppress(OSError):  # TCP_NODELAY, as trio sets it already
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)

    async def receive_some(self, max_bytes: int) -> bytes:
        if self._ssl is None and not self._closed:
            return await self._receive_plain(max_bytes)
        try:
            return bytes(await self._stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    async def _receive_plain(self, max_bytes: int) -> bytes:
        """Read the socket itself, with the checkpoint trio's own read makes but
        without its layers, which cost more than the read on a busy session.

        A session that trades command for reply finds nothing to read right
        after it answered, so once a read had to wait, the next one waits
        first (a read that fills the buffer means a bulk transfer: try first
        again); a failed attempt is a system call and an exception.
        """
        fd = self._fd
        if not self._wait_first:
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                self._wait_first = True
            else:
                await trio.lowlevel.checkpoint()  # a read is a checkpoint, waiting or not
                return data
        while True:
            try:
                await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError as exc:  # closed by another task meanwhile
                raise ConnectionResetError("the connection is closed") from exc
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:  # pragma: no cover - a spurious wake-up
                continue
            self._wait_first = len(data) < max_bytes
            return data

    def send_nowait(self, data: bytes) -> int:
        if self._closed:
            raise ConnectionResetError("the connection is closed")
        if self._ssl is not None:
            return 0  # TLS records go through the SSLStream
        # Straight to the kernel: trio's send passes through the scheduler even
        # when it need not wait. The session's next read is its checkpoint.
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    async def send_all(self, data: bytes) -> None:
        sent = self.send_nowait(data)  # a reply usually fits in the socket buffer
        if sent == len(data):
            return
        data = data[sent:]
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        # A SocketStream keeps no read buffer of its own: any plaintext sent
        # after STARTTLS is still in the kernel, and the TLS layer refuses it.
        stream = trio.SSLStream(
            self._socket_stream,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            https_compatible=True,  # SMTP frames its own end, so a bare TCP close is EOF
        )
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError):
                raise cause from exc
            raise ConnectionResetError(str(exc) or "TLS handshake failed") from exc
        self._ssl = stream
        self._stream = stream

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
            scope.shield = True
            try:
                await self._stream.aclose()
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(self._socket_stream)

    def deadline(self, seconds: float | None) -> _Deadline:
        if self._watchdog is not None:
            self._watchdog.quiet(seconds)
        return _Deadline(seconds)

    def watchdog(self) -> _Watchdog:
        self._watchdog = _Watchdog()
        return self._watchdog

    async def within(self, seconds: float | None, call: Awaitable[_T]) -> _T:
        if self._watchdog is not None:
            self._watchdog.quiet(seconds)
        if seconds is None:
            return await call
        # The scope is entered before the call starts: trio's scopes must nest.
        with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
            return await call
        assert scope.cancelled_caught  # only its own cancellation ends the block early
        raise TimeoutError

    @property
    def peer_address(self) -> tuple[str, int] | None:
        try:
            return address(self._socket_stream.socket.getpeername())
        except OSError:
            return None

    @property
    def local_address(self) -> tuple[str, int] | None:
        try:
            return address(self._socket_stream.socket.getsockname())
        except OSError:
            return None

    @property
    def tls(self) -> TLSInfo | None:
        return None if self._ssl is None else tls_info(self._ssl)


class _Listener(BaseListener[_S]):
    """The accept loop and graceful shutdown of a server on trio, for any protocol."""

    _listeners: Sequence[trio.SocketListener] = ()
    _nursery: trio.Nursery
    _accepting: trio.CancelScope
    _sessions_scope: trio.CancelScope
    _all_done: trio.Event
    _stopped: trio.Event

    async def _open_listeners(self) -> list[trio.SocketListener]:
        if self.sock is not None:
            return [trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))]
        return await trio.open_tcp_listeners(
            self.requested_port, host=self.host, backlog=self.backlog
        )

    async def __aenter__(self: _L) -> _L:
        self._listeners = await self._open_listeners()
        self._accepting = trio.CancelScope()
        self._sessions_scope = trio.CancelScope(shield=True)
        self._all_done = trio.Event()
        self._stopped = trio.Event()
        self.state.on_empty = self._all_done.set
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
        try:
            await self.aclose()
        finally:
            await self._nursery_manager.__aexit__(None, None, None)

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Shielded: sessions outlive a cancellation of the surrounding code until
        # aclose() has given them their grace period.
        with self._sessions_scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._accept_all)
                task_status.started()

    async def _accept_all(self) -> None:
        try:
            with self._accepting:
                async with trio.open_nursery() as nursery:
                    for listener in self._listeners:
                        nursery.start_soon(self._accept_loop, listener)
        finally:
            for listener in self._listeners:
                await trio.aclose_forcefully(listener)

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                logger.warning("accept() failed, retrying soon: %s", exc)
                await trio.sleep(0.1)
                continue
            transport = TrioTransport(stream)
            session = self.state.admit(transport)
            if session is None:
                self._nursery.start_soon(self._refuse, stream)
            else:
                self._nursery.start_soon(session.run)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        with trio.move_on_after(_REFUSE_TIMEOUT):
            try:
                if self.state.busy_reply:
                    await stream.send_all(self.state.busy_reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.aclose_forcefully(stream)

    def _listening_addresses(self) -> list[object]:
        return [listener.socket.getsockname() for listener in self._listeners]

    async def serve_forever(self) -> None:
        """Wait until the server is closed (by :meth:`aclose` or leaving its block)."""
        await self._stopped.wait()

    async def aclose(self, grace: float | None = 30.0) -> None:
        """Shut down gracefully, cutting off sessions still running after ``grace`` seconds."""
        if self._stopped.is_set():
            return
        self._accepting.cancel()
        self.state.begin_shutdown()
        with trio.move_on_after(math.inf if grace is None else grace) as scope:
            scope.shield = True
            await self._all_done.wait()
        if not self._all_done.is_set():
            self._sessions_scope.cancel()
        self._stopped.set()


class SMTPServer(_Listener[ServerSession], BaseSMTPServer):
    """An SMTP server on trio; use as ``async with SMTPServer(handler, ...) as server:``.

    Leaving the block (or :meth:`aclose`) shuts down gracefully, even when
    the block is cancelled: the server stops listening, idle sessions get
    ``421 4.3.2`` at once, sessions in the middle of a message finish it
    first, and whatever is left after ``grace`` seconds is cut off.
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


class SMTPClient(BaseSMTPClient):
    """An SMTP client session on trio; ``async with SMTPClient(host) as client:``.

    Send several messages over one session with :meth:`send_message`; the
    keywords are those of :class:`~smtpcore._driver.BaseSMTPClient`.
    """

    async def _open(self, host: str, port: int) -> TrioTransport:
        async with _Deadline(self.timeouts.connect):
            stream = await trio.open_tcp_stream(host, port)
        return TrioTransport(stream)

    async def __aenter__(self) -> SMTPClient:
        await self.connect()
        return self


async def send_message(
    message: bytes | email.message.EmailMessage,
    sender: str | Mailbox | None = None,
    recipients: Recipients | None = None,
    *,
    host: str,
    port: int | None = None,
    **options: Any,
) -> TransactionResult:
    """Connect, send one message, say QUIT; returns each recipient's fate.

    The keywords are :class:`SMTPClient`'s; see
    :meth:`SMTPClient.send_message <smtpcore._driver.BaseSMTPClient.send_message>`
    for the errors raised.
    """
    async with SMTPClient(host, port, **options) as client:
        return await client.send_message(message, sender, recipients)


# -- POP3 -------------------------------------------------------------------------


class POP3Server(_Listener[POP3ServerSession], BasePOP3Server):
    """A POP3 server on trio; use as ``async with POP3Server(store, ...) as server:``.

    ``store`` is a :class:`~smtpcore.maildrop.Mailstore`, such as a
    :class:`~smtpcore.maildrop.MaildirStore`. Leaving the block (or
    :meth:`aclose`) shuts down gracefully, even when the block is cancelled:
    the server stops listening, idle sessions get ``-ERR [SYS/TEMP]`` at once
    and lose their marks (they did not say QUIT), a response being sent is
    finished first, and whatever is left after ``grace`` seconds is cut off.
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


class POP3Client(BasePOP3Client):
    """A POP3 client session on trio; ``async with POP3Client(host) as client:``.

    The keywords are those of :class:`~smtpcore._driver.BasePOP3Client`.
    """

    async def _open(self, host: str, port: int) -> TrioTransport:
        async with _Deadline(self.timeouts.connect):
            stream = await trio.open_tcp_stream(host, port)
        return TrioTransport(stream)
