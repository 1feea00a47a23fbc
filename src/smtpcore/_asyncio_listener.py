"""The accept loop and graceful shutdown of a server on asyncio, for SMTP and POP3 alike.

:class:`_Listener` is the base of :class:`smtpcore.asyncio.SMTPServer` and
:class:`smtpcore.asyncio.POP3Server`: it listens (the raw socket's
:class:`~smtpcore._asyncio_raw.Acceptor` on the selector event loop, the loop's
own server elsewhere), starts each accepted session at once under a
:class:`~smtpcore._asyncio_runner.SessionRunner`, serves given transports and
stream pairs, and ends it all in :meth:`~_Listener.aclose`. The sessions are the
driver's; the public module only names the servers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Final, TypeVar

from smtpcore import _asyncio_raw
from smtpcore._asyncio_alarm import OffLoopTimers
from smtpcore._asyncio_clock import AsyncioClock, Deadline
from smtpcore._asyncio_raw import Acceptor, HeldWrites, RawSocketTransport, listening_sockets
from smtpcore._asyncio_runner import SessionRunner
from smtpcore._asyncio_stream import StreamTransport
from smtpcore._asyncio_transport import AsyncioTransport
from smtpcore._driver._listener import BaseListener
from smtpcore._driver._session_registry import ListenedSession
from smtpcore._driver._timeouts import new_pump
from smtpcore._driver._transport import Link
from smtpcore.transport import Transport

__all__ = ["_Listener"]

logger = logging.getLogger("smtpcore.server")

_S = TypeVar("_S", bound=ListenedSession)
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
