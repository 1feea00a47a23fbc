"""Running an accepted connection's session on asyncio without a task while it waits
for its client.

An asyncio task costs a future for every wait and a trip through the event
loop's queue for every wake-up, and most of a session's waits are for its
client's next bytes. A :class:`SessionRunner` steps the session's coroutine
itself, from the transport's callbacks: when the bytes arrive, the session
runs at once, in the same pass of the loop.

The session's code is the shared driver's, unchanged: it awaits
:data:`WOKEN` (the transport's waits, while the runner steps it) and
:data:`INTO_A_TASK` (before a handler's hook runs). A task takes the
coroutine over, for the rest of the session, as soon as anything else is
awaited (a TLS handshake, a handler's hook): a handler's code always runs
in a task of its own session (``asyncio.current_task()``, ``asyncio.timeout``
work there as in any task).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from smtpcore._asyncio_clock import AsyncioClock, Deadline
from smtpcore._asyncio_timers import Timers
from smtpcore._driver._timeouts import deadline_when_waiting

__all__ = ["INTO_A_TASK", "WOKEN", "SessionRunner"]

logger = logging.getLogger("smtpcore.server")

_T = TypeVar("_T")

_WAKE: Final = object()
"""What a session yields to wait until its runner is woken."""
_TASK: Final = object()
"""What a session yields to be taken over by a task."""


class _Yield:
    """An awaitable that yields one value to whatever steps the coroutine, and costs
    no Python call: its ``__await__`` is an iterator over that one value."""

    __slots__ = ()

    if TYPE_CHECKING:

        def __await__(self) -> Generator[Any, None, None]: ...


class _Woken(_Yield):
    __slots__ = ()
    if not TYPE_CHECKING:
        __await__ = staticmethod(functools.partial(iter, (_WAKE,)))


class _IntoATask(_Yield):
    __slots__ = ()
    if not TYPE_CHECKING:
        __await__ = staticmethod(functools.partial(iter, (_TASK,)))


WOKEN: Final = _Woken()
"""``await WOKEN``: wait until the runner is woken (a transport's wait while no
task runs the session; the transport checks again what it waits for after)."""
INTO_A_TASK: Final = _IntoATask()
"""``await INTO_A_TASK``: go on in a task (before running a handler's code)."""


class SessionRunner(AsyncioClock):
    """Steps one session's coroutine from the event loop's callbacks, until a task
    takes it over (see the module's description); and is the session's clock.

    To the session's deadlines it stands for the session's task: it is
    cancelled, and counts its cancellations, as an ``asyncio.Task`` is; once a
    task runs the session, it passes each cancellation on to it. Being also
    the session's :class:`~smtpcore._asyncio_clock.AsyncioClock` (and so its
    watchdog), it is the one object an idle session holds for its stepping and
    its timing: its deadlines and its watchdog cancel the runner itself.
    """

    __slots__ = (
        "_cancels",
        "_coro",
        "_done",
        "_must_cancel",
        "_waiting_on",
        "task",
        "waiting",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        done: Callable[[SessionRunner], None],
        timers: Timers | None = None,
    ) -> None:
        # The clock's fields, set here rather than by its __init__: one call less a
        # session (see AsyncioClock.__init__ for what each holds).
        self._timers = Timers(loop) if timers is None else timers
        self.queued = None
        self._when = 0.0
        self.holder = None
        self._task = None
        self._fired = False
        self._cancelling = 0
        self._limit = 0.0
        self._rate = None
        self._until = None
        # The runner's own.
        self._done = done
        self._coro: Coroutine[Any, Any, None] | None = None
        self.waiting = False
        """True while the session waits for :meth:`wake` (it awaited :data:`WOKEN`);
        a transport's callback need not call :meth:`wake` otherwise."""
        self._waiting_on: asyncio.Future[Any] | None = None
        """A future the session awaited: a task takes over once it is done."""
        self._must_cancel = False
        self._cancels = 0
        self.task: asyncio.Task[None] | None = None
        """The task running the session, once one does."""

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` now, up to its first wait."""
        self._coro = coro
        self.waiting = True
        self.wake()

    def wake(self) -> None:
        """What the session waits for may have come: run it up to its next wait, if
        it waits for that."""
        if not self.waiting:
            return
        self.waiting = False
        coro = self._coro
        assert coro is not None
        while True:
            try:
                if self._must_cancel:
                    self._must_cancel = False
                    yielded = coro.throw(asyncio.CancelledError())
                else:
                    yielded = coro.send(None)
            except (StopIteration, asyncio.CancelledError):
                self._done(self)
                return
            except (KeyboardInterrupt, SystemExit):
                self._done(self)
                raise
            except BaseException:
                logger.exception("session runner: the session failed")
                self._done(self)
                return
            if yielded is _WAKE:
                if self._must_cancel:
                    continue
                self.waiting = True
                return
            if yielded is _TASK or yielded is None:  # None: a bare yield (sleep(0))
                self._into_a_task()
                return
            if getattr(yielded, "_asyncio_future_blocking", None) is not None:
                # As a task would: wait until the future is done, then a task takes
                # over and the session reads its result.
                yielded._asyncio_future_blocking = False
                self._waiting_on = yielded
                yielded.add_done_callback(self._future_done)
                return
            self._must_cancel = False  # pragma: no cover - a bug in the session's code
            coro.close()
            logger.error("session runner: the session yielded %r", yielded)
            self._done(self)
            return

    def _future_done(self, future: asyncio.Future[Any]) -> None:
        self._waiting_on = None
        self._into_a_task()

    def _into_a_task(self) -> None:
        assert self._coro is not None
        task = self.task = self._timers.loop.create_task(self._coro)
        task.add_done_callback(self._task_done)
        if self._must_cancel:
            self._must_cancel = False
            task.cancel()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("session runner: the session failed", exc_info=task.exception())
        self._done(self)

    # -- the clock's deadlines and watchdog, which cancel the runner -----------------

    def deadline(self, seconds: float | None) -> Deadline:
        return Deadline(seconds, self, self)

    def timed_reader(
        self, receive: Callable[[int], Awaitable[bytes]]
    ) -> Callable[[float | None, int], Awaitable[bytes]]:
        """A read under a deadline of the runner's (a server's session reads its client
        with the watchdog: this is for a link's rare ``receive_within``)."""
        return functools.partial(self._receive_under_deadline, receive)

    async def _receive_under_deadline(
        self, receive: Callable[[int], Awaitable[bytes]], seconds: float | None, max_bytes: int
    ) -> bytes:
        async with self.deadline(seconds):
            return await receive(max_bytes)

    async def __aenter__(self) -> SessionRunner:
        """The watchdog's block (see :class:`~smtpcore._asyncio_clock.AsyncioClock`),
        entered for the runner rather than for the running task."""
        self._task = self
        self._fired = False
        self._cancelling = self._cancels
        return self

    # -- what a deadline asks of a task ---------------------------------------------

    def cancel(self) -> bool:
        """Interrupt the session's wait with ``CancelledError`` (from the event loop,
        never from inside the caller)."""
        self._cancels += 1
        if self.task is not None:
            return self.task.cancel()
        waiting_on = self._waiting_on
        if waiting_on is not None and waiting_on.cancel():
            return True
        self._must_cancel = True
        if self.waiting:
            self._timers.loop.call_soon(self.wake)
        return True

    def within(self, seconds: float | None, call: Awaitable[_T]) -> Coroutine[Any, Any, _T]:
        if self.task is None:
            return self._within_a_task(seconds, call)
        # The coroutine itself, not one awaiting it: a hook call is the hot path.
        return deadline_when_waiting(self.deadline, seconds, call)

    async def _within_a_task(self, seconds: float | None, call: Awaitable[_T]) -> _T:
        """A handler's code runs in a task of its session: the first one makes it."""
        await INTO_A_TASK
        return await deadline_when_waiting(self.deadline, seconds, call)

    def stray_cancellation(self, exc: BaseException) -> bool:
        """As the clock's, but for the session, not whatever task the loop runs: the
        embedder's code may run before a task takes the session over (a credential
        check called in the loop), and then ``asyncio.current_task()`` is none of
        the session's. Until then the runner is the session's task, and its own
        count of cancellations tells."""
        if self.task is not None:
            return super().stray_cancellation(exc)
        return isinstance(exc, asyncio.CancelledError) and self._cancels == 0

    def cancelling(self) -> int:
        return self._cancels

    def uncancel(self) -> int:
        if self._cancels > 0:
            self._cancels -= 1
        if self.task is not None and hasattr(self.task, "uncancel"):
            self.task.uncancel()
        return self._cancels
