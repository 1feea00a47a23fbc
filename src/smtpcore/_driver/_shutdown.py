"""The graceful shutdown of a server: one sequence for every framework and protocol.

RFC 5321 §3.8 lets a server close a connection only after QUIT, a timeout, or a
421 that says the service shuts down (POP3 says ``-ERR [SYS/TEMP]``, RFC 3206
§4). So a shutdown stops taking work and wakes the idle sessions, which say
goodbye at once; waits the grace period for the busy ones to finish; then cuts
off those still there, each interrupted to write its shutting-down reply, and
cancels those that have not ended :data:`LAST_WORDS` seconds later.

The adapters differ only in how they wait and cancel (:class:`GracefulShutdown`'s
three hooks). A cancelled shutdown (a deadline around ``aclose``, a second
cancellation of a task leaving ``async with server``) ends the grace period at
once, not the shutdown: the cut-off, its last words and the cancellation of what
is left still run, shielded, and the cancellation reaches the caller after them.
So no server is left half closed, with a session mid-transaction that never hears
its 421; but a caller's deadline bounds the grace period only, not the call, which
can run :data:`LAST_WORDS` plus ``CUT_OFF_ROUNDS * CUT_OFF_WAIT`` seconds (about two)
past it. A session whose hook ignores cancellation (catches asyncio's, shields
itself from trio's) outlives even that: the shutdown gives up on it, and it runs
on until its hook ends.

On trio, a cancellation is a state: a shutdown asked for inside a cancelled scope
(a ``finally`` of a cancelled block) is a cancelled one from its start, with no
grace period, unless shielded, as leaving ``async with server`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

__all__ = ["CUT_OFF_ROUNDS", "CUT_OFF_WAIT", "LAST_WORDS", "GracefulShutdown"]

LAST_WORDS: Final = 1.0
"""Seconds the sessions cut off at the end of a shutdown's grace period have to write
their shutting-down reply and close, before they are cancelled outright."""

CUT_OFF_WAIT: Final = 0.05
CUT_OFF_ROUNDS: Final = 20
"""How often, and how far apart, sessions past their last words are cancelled: an
asyncio session waiting, as it closes, for a client that does not read takes a
cancellation as one exception, where trio's is a state, and would otherwise wait
out its own close timeout past the grace."""


class _Sessions(Protocol):
    """The registry of live sessions, as the shutdown sees it
    (:class:`~smtpcore._driver._session_registry.SessionRegistry`)."""

    def begin_shutdown(self) -> None: ...

    def cut_off(self) -> None: ...

    def end_shutdown(self) -> None: ...


class GracefulShutdown:
    """The shutdown sequence a server's listener shares; the adapter supplies the waits
    (:meth:`_until_idle`, :meth:`_shielded`) and the cancellation
    (:meth:`_cancel_sessions`) of its framework."""

    state: _Sessions

    async def _end_sessions(self, grace: float | None) -> None:
        """Have every session say goodbye, and cut off those still there after ``grace``
        seconds (None: no limit) or once this wait is cancelled, whichever comes first;
        a cancellation is raised again once the cut-off is over. The registry's
        pending log lines are written at the end, however it came."""
        self.state.begin_shutdown()
        try:
            try:
                idle = await self._until_idle(grace)
            except BaseException:  # a cancellation on its way out: the cut-off must not replace it
                await self._shielded(self._cut_off, quiet=True)
                raise
            if not idle:
                await self._shielded(self._cut_off, quiet=False)
                await self._until_idle(None)  # a session that will not end: its own close times it
        finally:
            self.state.end_shutdown()

    async def _cut_off(self) -> None:
        """The grace period is over: interrupt every session left, so that it writes its
        shutting-down reply (RFC 5321 §3.8), and cancel those still there after
        :data:`LAST_WORDS` seconds, again and again for a while."""
        self.state.cut_off()
        if await self._until_idle(LAST_WORDS):
            return
        for _ in range(CUT_OFF_ROUNDS):
            self._cancel_sessions()
            if await self._until_idle(CUT_OFF_WAIT):
                return

    async def _until_idle(self, timeout: float | None) -> bool:
        """Wait until no session is left, for at most ``timeout`` seconds (None: no
        limit); whether none is. A cancellation of the caller ends the wait."""
        raise NotImplementedError

    async def _shielded(
        self, work: Callable[[], Coroutine[Any, Any, None]], *, quiet: bool
    ) -> None:
        """Run ``work`` to its end though the caller is cancelled meanwhile; the
        cancellation reaches the caller afterwards. A failure of ``work`` is raised,
        unless a cancellation is on its way out, which it must not replace: ``quiet``
        (the caller's own wait was cancelled), or one that came during ``work``. Then
        it is logged. A ``BaseException`` that is no ``Exception`` (KeyboardInterrupt)
        is always raised."""
        raise NotImplementedError

    def _cancel_sessions(self) -> None:
        """Cancel every session still running (accepted, or given to ``serve_transport``)."""
        raise NotImplementedError
