"""The accept loop and graceful shutdown of a server on trio, for SMTP and POP3 alike.

:class:`_Listener` is the base of :class:`smtpcore.trio.SMTPServer` and
:class:`smtpcore.trio.POP3Server`: it listens, runs each accepted session in the
server's nursery (contained, so that one session's failure ends it alone), holds
the replies of a batch to its end (:mod:`smtpcore._trio_held`), serves given
transports and streams, and ends it all in :meth:`~_Listener.aclose`. The
sessions are the driver's; the public module only names the servers.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

import trio

from smtpcore._driver._accept_rest import ACCEPT_REST, OUT_OF_RESOURCES, log_accept_rest
from smtpcore._driver._listener import BaseListener
from smtpcore._driver._session_registry import ListenedSession
from smtpcore._trio_clock import _link
from smtpcore._trio_held import HeldWrites
from smtpcore._trio_transport import TrioTransport
from smtpcore.transport import Transport

__all__ = ["_Listener"]

logger = logging.getLogger("smtpcore.server")

_S = TypeVar("_S", bound=ListenedSession)
_L = TypeVar("_L", bound="_Listener[Any]")

_REFUSE_TIMEOUT: Final = 1.0


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


_SESSION_TASK: Final = f"{_run_contained.__module__}.{_run_contained.__qualname__}"
"""The name of every accepted session's task, the one trio would give it: given as one
string, or trio makes one for each task (87 bytes an idle session)."""


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
                if exc.errno not in OUT_OF_RESOURCES:
                    raise
                log_accept_rest(logger, exc)
                await trio.sleep(ACCEPT_REST)
                continue
            transport = TrioTransport(stream)
            transport._writes = self._held_writes
            session = self.state.admit(_link(transport))
            if isinstance(session, bytes):
                self._nursery.start_soon(self._refuse, stream, session)
            else:
                self._nursery.start_soon(_run_contained, session, name=_SESSION_TASK)

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
        (the transport's ``finish_handshake``).

        The stream is the session's until this call returns: end the session early
        by cancelling this call, not by closing the stream from another task (see
        :class:`~smtpcore.trio.TrioTransport`)."""
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
