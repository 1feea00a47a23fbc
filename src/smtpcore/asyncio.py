"""SMTP over asyncio: a server for a :class:`~smtpcore.handler.Handler`, and a client.

Only the transport and the task plumbing live here; the sessions themselves
run in the driver shared with :mod:`smtpcore.trio`. The transport is a small
:class:`asyncio.BufferedProtocol` rather than asyncio streams: the event loop
reads into one buffer per thread, the driver gets the bytes read, and TLS
starts in place with :meth:`asyncio.loop.start_tls`. A client's TCP connection
is read and written on the socket itself until TLS starts: it waits for every
reply.
"""

from __future__ import annotations

import asyncio
import email.message
import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from smtpcore import _asyncio_raw
from smtpcore._asyncio_alarm import OffLoopTimers
from smtpcore._asyncio_client import _AsyncioClient
from smtpcore._asyncio_clock import AsyncioClock as AsyncioClock  # importable from here too
from smtpcore._asyncio_clock import Deadline
from smtpcore._asyncio_raw import Acceptor, HeldWrites, RawSocketTransport, listening_sockets
from smtpcore._asyncio_runner import SessionRunner
from smtpcore._asyncio_stream import StreamTransport as StreamTransport  # importable from here too
from smtpcore._asyncio_transport import AsyncioTransport
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
)
from smtpcore._driver._content import Content
from smtpcore._driver._listener import BaseListener, ListenedSession
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
from smtpcore._driver._timeouts import POP3Timeouts, new_pump
from smtpcore._driver._transport import Link
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
    "AsyncioTransport",
    "Envelope",
    "Handler",
    "Recipient",
    "SMTPServer",
    "Session",
    "TLSInfo",
    "Timeouts",
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
_T = TypeVar("_T")
_L = TypeVar("_L", bound="_Listener[Any]")

_REFUSE_TIMEOUT: Final = 1.0


def _link(transport: Transport) -> Link:
    return Link(transport, AsyncioClock())


class _Listener(BaseListener[_S]):
    """The accept loop and graceful shutdown of a server on asyncio, for any protocol."""

    _server: asyncio.Server | Acceptor | None = None
    _tasks: dict[asyncio.Task[None], _S]
    """The tasks serving a transport (:meth:`serve_transport`), each with its session."""
    _runners: dict[SessionRunner, _S]
    """The accepted connections' sessions, each with what runs it."""
    _runner_done: Callable[[SessionRunner], None]
    """:meth:`_ended`, bound once: every runner shares it."""
    _timers: OffLoopTimers
    """The one timer behind every accepted connection's deadlines."""
    _writes: HeldWrites | None = None
    """Where the raw socket's connections hold their writes while others run in the
    same pass of the loop (see :class:`~smtpcore._asyncio_raw.HeldWrites`)."""
    _loop: asyncio.AbstractEventLoop
    _idle: asyncio.Future[None] | None = None
    """Set once no session is left, while :meth:`aclose` waits for that."""
    _stopped: asyncio.Event

    async def start(self) -> None:
        """Listen and serve in the background.

        On the standard library's selector event loop, connections are accepted
        here, by the server's own reader on the listening socket, and served over
        the raw socket, TLS included (from the first byte too: the session starts
        it). On any other loop, the loop's own server accepts them, for asyncio's
        transports."""
        if self._server is not None:
            raise RuntimeError("the server is started already: enter it, or start it, once")
        loop = self._loop = asyncio.get_running_loop()
        self._stream_tasks()  # sessions serve_transport runs may have begun already
        self._runners = {}
        self._runner_done = self._ended
        # Kept off the loop (see OffLoopTimers): each pass of the loop, a wait for
        # every session's next bytes, works out no timeout for it.
        self._timers = OffLoopTimers(loop)
        self._timers.pump = new_pump()  # the sessions' hooks share it (see new_pump)
        self._stopped = asyncio.Event()
        # Each connection's protocol, made without a Python call of ours.
        protocol = functools.partial(AsyncioTransport, self._connected)
        if _asyncio_raw.serves_raw(loop):
            if self.sock is not None:
                sockets = [self.sock]
            elif self.unix_path is not None:
                sockets = [self._unix_socket()]
            else:
                sockets = await listening_sockets(
                    loop, self.host, self.requested_port, self.backlog
                )
            self._writes = HeldWrites.for_loop(loop)
            self._server = Acceptor(loop, sockets, self._accepted, self.backlog)
            return
        if self.sock is not None or self.unix_path is not None:
            sock = self._unix_socket() if self.sock is None else self.sock
            self._server = await loop.create_server(protocol, sock=sock, backlog=self.backlog)
        else:
            self._server = await loop.create_server(
                protocol,
                self.host,
                self.requested_port,
                backlog=self.backlog,
                reuse_address=True,
            )

    def _accepted(
        self, sock: socket.SocketType, peer: object, local: tuple[str, int] | None
    ) -> None:
        """A new connection on the raw socket (see :class:`Acceptor`): its session
        starts at once, stepped by a runner (the greeting goes out in this pass)."""
        loop = self._loop
        runner = SessionRunner(loop, self._runner_done, self._timers)  # and its clock
        transport = RawSocketTransport(sock, peer, loop, runner, local, self._writes)
        session = self.state.admit(transport)
        if isinstance(session, bytes):
            transport.refuse(session)
            return
        self._runners[runner] = session
        runner.start(session.run())

    def _connected(self, transport: AsyncioTransport) -> None:
        """A new connection on an asyncio transport: its session starts at once,
        stepped by a runner (the greeting goes out in this pass of the loop)."""
        runner = SessionRunner(transport._loop, self._runner_done, self._timers)  # and its clock
        session = self.state.admit(Link(transport, runner))
        if isinstance(session, bytes):
            transport.refuse(session)
            return
        transport._runner = runner
        self._runners[runner] = session
        runner.start(session.run())

    def _ended(self, runner: SessionRunner) -> None:
        session = self._runners.pop(runner, None)
        if session is not None and session in self.state.sessions:
            self.state.remove(session)  # in case it was cancelled before it ran
        if self._idle is not None:
            self._check_idle()

    def _stream_tasks(self) -> dict[asyncio.Task[None], _S]:
        """The tasks :meth:`serve_transport` runs sessions in, made by the first of them
        or by :meth:`start`, whichever comes first: a server need not start for them."""
        try:
            return self._tasks
        except AttributeError:
            self._tasks = {}
            return self._tasks

    def _serving(self) -> bool:
        """Whether any session is still running, accepted or given."""
        return bool(getattr(self, "_runners", None)) or bool(self._stream_tasks())

    def _check_idle(self) -> None:
        idle = self._idle
        if idle is not None and not idle.done() and not self._serving():
            idle.set_result(None)

    async def _until_idle(self, timeout: float | None) -> bool:
        """Wait until no session is left, for at most ``timeout`` seconds; whether none is.
        Callers at once wait on one future (two ``aclose`` calls, say)."""
        if not self._serving():
            return True
        idle = self._idle
        if idle is None or idle.done():
            idle = self._idle = asyncio.get_running_loop().create_future()
        done, _ = await asyncio.wait([idle], timeout=timeout)
        return bool(done)

    async def _shielded(
        self, work: Callable[[], Coroutine[Any, Any, None]], *, quiet: bool
    ) -> None:
        """asyncio's cancellation is one exception, not a state: ``work`` runs in a task
        of its own, waited for again after each cancellation of the caller, the last
        of which is raised once it has ended. Its failure is always retrieved: raised,
        or logged where it would replace a cancellation (see the base class)."""
        task = asyncio.get_running_loop().create_task(work())
        cancelled: asyncio.CancelledError | None = None
        while not task.done():  # bounded by work's own waits; each pass, one cancellation
            try:
                await asyncio.wait([task])  # never cancels the task, nor raises its failure
            except asyncio.CancelledError as exc:
                cancelled = exc
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            if not isinstance(failure, Exception) or not (quiet or cancelled is not None):
                raise failure
            logger.error("shutdown: cutting off the sessions left failed", exc_info=failure)
        if cancelled is not None:
            raise cancelled
        if task.cancelled():  # by other code (the loop's own end): a cancellation still
            raise asyncio.CancelledError

    def _cancel_sessions(self) -> None:
        for runner in list(getattr(self, "_runners", ())):
            runner.cancel()
        for task in list(self._stream_tasks()):
            task.cancel()

    async def serve_transport(self, transport: Transport) -> None:
        """Serve one session over ``transport`` (a :class:`~smtpcore.transport.Transport`
        whose waits are asyncio's), in this task, until it ends.

        It counts toward the session limits like an accepted connection (a
        refused one gets the busy reply, or after aclose the shutting-down one, and is
        closed), gets the same
        timeouts, and the same graceful shutdown from :meth:`aclose`: the
        task is cancelled if the session outlives the grace period. The
        server need not listen anywhere for this (it need not even start).
        """
        session = self.state.admit(_link(transport))
        if isinstance(session, bytes):
            try:
                if session:
                    async with Deadline(_REFUSE_TIMEOUT):
                        await transport.send_all(session)
            except (OSError, TimeoutError):
                pass
            finally:
                await transport.aclose()
            return
        task = asyncio.current_task()
        tasks = self._stream_tasks()
        if task is not None:
            tasks[task] = session
        try:
            await session.run()
        finally:
            if task is not None:
                tasks.pop(task, None)
                self._check_idle()

    async def serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one session over an asyncio stream pair (from ``asyncio.start_unix_server``,
        ``open_connection``, a subprocess's pipes...), as :meth:`serve_transport` does:
        ``asyncio.start_server(server.serve_stream, ...)`` works as it is."""
        await self.serve_transport(StreamTransport(reader, writer))

    def _listening_addresses(self) -> list[object]:
        if self._server is None:
            return []
        return [sock.getsockname() for sock in self._server.sockets]

    def _stop_event(self) -> asyncio.Event:
        """Set once the server is closed: made by :meth:`start`, or at first need by a
        server never started (whose sessions came through :meth:`serve_transport`)."""
        try:
            return self._stopped
        except AttributeError:
            self._stopped = asyncio.Event()
            return self._stopped

    async def serve_forever(self) -> None:
        """Wait until the server is closed (by :meth:`aclose` or leaving its block)."""
        await self._stop_event().wait()

    async def aclose(self, grace: float | None = 30.0) -> None:
        """Shut down gracefully, cutting off sessions still running after ``grace`` seconds,
        or at once when this call is cancelled (the cancellation is raised after).

        A cancelled call still finishes the shutdown, so it raises the cancellation
        up to about two seconds after it came: the sessions cut off get a second for
        their last words, then what is left is cancelled, for up to another second.
        A session whose hook ignores cancellation (catches ``CancelledError``) runs
        on past even that. asyncio delivers a cancellation once: ``aclose`` in the
        ``finally`` of a cancelled block gets its whole grace period, unless the
        task is cancelled again."""
        server = self._server
        if server is not None:
            server.close()
        try:
            await self._end_sessions(grace)  # and no new one, started or not
            if server is not None:
                await server.wait_closed()
        finally:
            if server is not None:
                if not self._serving():  # a session left still needs its close timed
                    self._timers.close()
                if self.sock is None:
                    self._unix_socket_closed()
                self._server = None
            self._stop_event().set()

    async def __aenter__(self: _L) -> _L:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class SMTPServer(_Listener[ServerSession], BaseSMTPServer):
    """An SMTP server on asyncio; use as ``async with SMTPServer(handler, ...) as server:``.

    Leaving the block (or :meth:`aclose`) shuts down gracefully: the server
    stops listening, idle sessions get ``421 4.3.2`` at once, sessions in
    the middle of a message finish it first, and whatever is left after
    ``grace`` seconds is cut off.
    """


async def serve(
    handler: Handler,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    started: Callable[[SMTPServer], None] | None = None,
    **options: Any,
) -> None:
    """Serve until cancelled, then shut down gracefully.

    ``started`` is called with the server once it listens. The other
    keywords are :class:`SMTPServer`'s.
    """
    async with SMTPServer(handler, host, port, **options) as server:
        if started is not None:
            started(server)
        await server.serve_forever()


class SMTPClient(_AsyncioClient, BaseSMTPClient):
    """An SMTP client session on asyncio; ``async with SMTPClient(host) as client:``.

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
    <smtpcore.asyncio.SMTPClient.send_message>`, which says what is raised; the other
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
    """A POP3 server on asyncio; use as ``async with POP3Server(store, ...) as server:``.

    ``store`` is a :class:`~smtpcore.maildrop.Mailstore`, such as a
    :class:`~smtpcore.maildrop.MaildirStore`. Leaving the block (or
    :meth:`aclose`) shuts down gracefully: the server stops listening, idle
    sessions get ``-ERR [SYS/TEMP]`` at once and lose their marks (they did
    not say QUIT), a response being sent is finished first, and whatever is
    left after ``grace`` seconds is cut off.
    """


async def serve_pop3(
    store: Mailstore,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    started: Callable[[POP3Server], None] | None = None,
    **options: Any,
) -> None:
    """Serve POP3 until cancelled, then shut down gracefully.

    ``started`` is called with the server once it listens. The other
    keywords are :class:`POP3Server`'s.
    """
    async with POP3Server(store, host, port, **options) as server:
        if started is not None:
            started(server)
        await server.serve_forever()


class POP3Client(_AsyncioClient, BasePOP3Client):
    """A POP3 client session on asyncio; ``async with POP3Client(host) as client:``.

    The keywords are those of :class:`POP3ClientOptions`.
    """
