"""The asyncio adapter's clock of one connection: its deadlines and its session's watchdog.

A session enters a deadline around its writes and its handler's hooks, and
a watchdog around all its waits for its client; each is a cancellation of
the session's task (or of its :class:`~smtpcore._asyncio_runner.SessionRunner`)
turned into ``TimeoutError`` (a deadline's into its subclass ``DeadlinePassed``, told
apart from a hook's own). The connection's :class:`AsyncioClock` times
them all with one entry among the loop's shared
:class:`~smtpcore._asyncio_timers.Timers`, and is the watchdog itself: an
idle session holds no timing object besides its clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from smtpcore._asyncio_timers import Timers
from smtpcore._driver._own_timeouts import DeadlinePassed
from smtpcore._driver._timeouts import deadline_when_waiting
from smtpcore._threads import AUTH

if TYPE_CHECKING:
    from smtpcore._asyncio_runner import SessionRunner

__all__ = ["AsyncioClock", "Deadline"]

_T = TypeVar("_T")

_TICKS: Final = 64
"""Ticks a second to which the watchdog rounds the end of a wait up (see
:meth:`AsyncioClock.arm`)."""
_TICK: Final = 1 / _TICKS


class AsyncioClock:
    """asyncio's timing for one session (the driver's ``Clock``): deadlines cancel the
    session's task (or its runner), and share the connection's one timer.

    The timer is lazy. A session enters a deadline around every read, and a
    loop timer made and cancelled each time costs more than the read. Arming
    the clock for a deadline only records when that deadline ends
    (:meth:`hold_at`); its entry in the loop's shared
    :class:`~smtpcore._asyncio_timers.Timers`, once queued, stays, and when it
    comes due before that time the clock is queued again for it
    (:meth:`ring`). A busy session thus sees one ring per timeout period, and
    a connection no loop timer of its own: those of a server share one.

    The clock is also its session's :class:`~smtpcore._driver._timeouts.Watchdog`
    (:meth:`watchdog` returns it): entered once a session, it holds the timer
    only while armed, and keeps the end of the wait under way itself, as a
    deadline (a hook's) may hold the timer between two reads of the same wait.
    """

    __slots__ = (
        "_cancelling",
        "_fired",
        "_limit",
        "_rate",
        "_task",
        "_timers",
        "_until",
        "_when",
        "holder",
        "queued",
    )

    def __init__(self, timers: Timers | None = None) -> None:
        self._timers = Timers(asyncio.get_running_loop()) if timers is None else timers
        """The loop timer this clock is queued behind (its own, unless given)."""
        self.queued: float | None = None
        """When the clock's entry in ``_timers`` comes due (see :class:`Timers`)."""
        self._when = 0.0
        self.holder: Deadline | AsyncioClock | ReadTimer | None = None
        """What the timer rings for, if anything: a deadline, or the clock itself as
        the watchdog."""
        # The watchdog's fields (see watchdog()).
        self._task: asyncio.Task[Any] | SessionRunner | None = None
        """What the watchdog cancels, while entered."""
        self._fired = False
        self._cancelling = 0
        self._limit = 0.0
        self._rate: float | None = None
        self._until: float | None = None
        """When the wait under way ends, in the loop's time; None: never."""

    # -- the timer ------------------------------------------------------------------

    def hold(self, deadline: Deadline, seconds: float) -> None:
        """Ring for ``deadline`` ``seconds`` from now."""
        self.hold_at(deadline, self._timers.now() + seconds)

    def hold_at(self, deadline: Deadline | AsyncioClock | ReadTimer, when: float) -> None:
        """Ring for ``deadline`` at ``when``, in the loop's time."""
        self.holder = deadline
        self._when = when
        queued = self.queued
        if queued is None or queued > when:
            self._timers.add(self, when)

    def close(self) -> None:
        """The connection is gone: drop its entry now rather than when it comes due."""
        self.holder = None
        if self.queued is not None:
            self._timers.drop(self)

    def __lt__(self, other: object) -> bool:
        """Any fixed order, for two entries of the same time and order (see
        :class:`~smtpcore._asyncio_timers.Due`): rare, and so a call only then."""
        return id(self) < id(other)

    def ring(self, now: float) -> None:
        """The entry came due (:class:`~smtpcore._asyncio_timers.Due`)."""
        deadline = self.holder
        if deadline is None:
            return
        if now < self._when:
            self._timers.add(self, self._when)
            return
        deadline.expire()

    # -- the driver's Clock -----------------------------------------------------------

    def timed_reader(
        self, receive: Callable[[int], Awaitable[bytes]]
    ) -> Callable[[float | None, int], Awaitable[bytes]]:
        """``receive_within(seconds, max_bytes)`` for the link (a client's read of each
        reply): ``receive`` under the connection's timer, with one read timer made
        for the connection, rather than a deadline made, entered and left for each
        read. Made at the link's first timed read, so a server's session has none."""
        return functools.partial(self._receive_within, ReadTimer(), receive)

    async def _receive_within(
        self,
        timer: ReadTimer,
        receive: Callable[[int], Awaitable[bytes]],
        seconds: float | None,
        max_bytes: int,
    ) -> bytes:
        """``await receive(max_bytes)``, cancelled after ``seconds`` into
        ``TimeoutError``, as a deadline entered around the read would be."""
        if sys.version_info < (3, 11):  # no Task.cancelling(): a deadline around the read
            async with Deadline(seconds, self):
                return await receive(max_bytes)
        else:
            task = asyncio.current_task()
            if (
                seconds is None
                or self.holder is not None  # another deadline holds the timer
                or timer.task is not None
                or task is None
            ):
                async with Deadline(seconds, self):
                    return await receive(max_bytes)
            cancelling = task.cancelling()
            timer.task = task
            timer.fired = False
            self.hold_at(timer, self._timers.now() + seconds)
            try:
                data = await receive(max_bytes)
            except asyncio.CancelledError as exc:
                if timer.fired and task.uncancel() <= cancelling:
                    raise TimeoutError from exc
                raise
            finally:
                timer.task = None
                if self.holder is timer:
                    self.holder = None
            if timer.fired and task.uncancel() <= cancelling:
                # The timer fired after the read, before the task resumed: the
                # cancellation is still pending; absorb it here, as Deadline does.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)
            return data

    def deadline(self, seconds: float | None) -> Deadline:
        return Deadline(seconds, self)

    def stray_cancellation(self, exc: BaseException) -> bool:
        """A ``CancelledError`` while the running task is not being cancelled (its
        ``cancelling()`` is 0): it came from a future that other code cancelled.
        Before Python 3.11 a task cannot tell: every one cancels the session."""
        if sys.version_info < (3, 11) or not isinstance(exc, asyncio.CancelledError):
            return False
        task = asyncio.current_task()
        return task is not None and task.cancelling() == 0

    def watchdog(self) -> AsyncioClock:
        """The clock itself (see the class's description)."""
        return self

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def run_in_thread(self, call: Callable[[], _T]) -> _T:
        """``call()`` in a thread of the credential checks' own executor
        (:data:`smtpcore._threads.AUTH`), not the loop's default one, which the
        reference server's spool writes use. A cancelled wait ends at once; the
        call runs on to its end in its thread, its result dropped."""
        return await AUTH.run_asyncio(call)

    def within(self, seconds: float | None, call: Awaitable[_T]) -> Coroutine[Any, Any, _T]:
        # The coroutine itself, not one awaiting it: a hook call is the hot path.
        return deadline_when_waiting(self.deadline, seconds, call)

    def start_within(
        self, seconds: float | None, call: Awaitable[_T]
    ) -> tuple[_T] | Awaitable[_T]:
        """:meth:`within`, to await (the asyncio server's transport starts its hooks
        itself: ``RawSocketTransport.start_within``)."""
        return self.within(seconds, call)

    # -- the session's Watchdog -------------------------------------------------------

    async def __aenter__(self) -> AsyncioClock:
        task = asyncio.current_task()  # a runner's own enters for itself
        if task is None:  # pragma: no cover - always inside a task
            raise RuntimeError("a watchdog needs a running task")
        self._task = task
        self._fired = False
        if sys.version_info >= (3, 11):
            self._cancelling = task.cancelling()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.holder is self:
            self.holder = None
        task, self._task = self._task, None
        if self._fired and task is not None:
            await _timed_out(task, self._cancelling, exc_type, exc)

    def arm(self, seconds: float | None, min_rate: float | None = None) -> None:
        # Armed only around a wait for the client, when no deadline is open.
        if seconds is None:
            self._until = None
            return
        self._limit = seconds
        self._rate = min_rate
        timers = self._timers
        # The end rounded up to a tick (late by less than one, never early), and that
        # tick's float shared with every session armed within it: an idle session
        # keeps no float of its own for its wait, nor for its timer's entry. Most
        # waits end within the last tick rounded to, which is then taken as it is.
        until = timers.now() + seconds
        last_tick = timers.last_tick
        if last_tick - _TICK < until <= last_tick:
            until = last_tick
        else:
            until = timers.last_tick = -(-until * _TICKS // 1) / _TICKS
        self._until = until
        # What hold_at(self, until) does, without the call: every wait for a command.
        self.holder = self
        self._when = until
        queued = self.queued
        if queued is None or queued > until:
            timers.add(self, until)

    def resume(self, received: int = 0) -> None:
        until = self._until
        if until is None:
            return
        if received and self._rate:
            now = self._timers.now()
            # Time spent answering (not waiting) is not held against the client:
            # min(now + limit, max(until, now) + received / rate), without the calls of
            # min and max, which parse their arguments (every read of content).
            later = (until if until > now else now) + received / self._rate
            cap = now + self._limit
            until = self._until = later if later < cap else cap
        # What hold_at(self, until) does, without the call: every read of content.
        self.holder = self
        self._when = until
        queued = self.queued
        if queued is None or queued > until:
            self._timers.add(self, until)

    def disarm(self) -> None:
        if self.holder is self:
            self.holder = None

    def expire(self) -> None:
        task = self._task
        if task is not None and not self._fired:
            self._fired = True
            task.cancel()

    @property
    def expired(self) -> bool:
        return self._fired


async def _timed_out(
    task: asyncio.Task[Any] | SessionRunner,
    cancelling: int,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    seconds: float | None = None,
) -> None:
    """The end of a block whose deadline (or watchdog) cancelled ``task``, which had
    ``cancelling`` cancellations under way when the block began: the cancellation
    becomes ``TimeoutError``, unless another one came meanwhile (not ours to turn);
    a deadline's of ``seconds`` :class:`DeadlinePassed`, told apart from a
    ``TimeoutError`` the code under it raised itself."""
    ours = True
    if sys.version_info >= (3, 11):
        ours = task.uncancel() <= cancelling
    if exc_type is asyncio.CancelledError:
        if ours:
            raise (TimeoutError() if seconds is None else DeadlinePassed(seconds)) from exc
        return
    if exc_type is None and ours:
        # The timer fired after the operation finished but before the task
        # resumed: the cancellation is still pending; absorb it here.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)


class Deadline:
    """A cancel scope for asyncio: a timer cancels the task, the exit turns that into
    ``TimeoutError`` (what ``asyncio.timeout`` does from 3.11 on, plus :meth:`expire`).

    Given the connection's :class:`AsyncioClock`, it uses the clock's timer instead
    of a timer of its own, unless something else holds that timer already.
    """

    __slots__ = ("_cancelling", "_clock", "_fired", "_handle", "_seconds", "_task")

    def __init__(
        self,
        seconds: float | None,
        clock: AsyncioClock | None = None,
        runner: SessionRunner | None = None,
    ) -> None:
        self._seconds = seconds
        self._clock = clock
        self._task: asyncio.Task[object] | SessionRunner | None = runner
        """What the deadline cancels: the session's ``runner`` where one is given
        (its clock's :meth:`~AsyncioClock.deadline`), else the task entering it."""
        self._handle: asyncio.Handle | None = None
        self._fired = False
        self._cancelling = 0

    async def __aenter__(self) -> Deadline:
        clock = self._clock
        task: asyncio.Task[Any] | SessionRunner | None = self._task
        if task is None:
            task = asyncio.current_task()
            if task is None:  # pragma: no cover - always inside a task
                raise RuntimeError("a deadline needs a running task")
            self._task = task
        if sys.version_info >= (3, 11):
            self._cancelling = task.cancelling()
        if self._seconds is not None:
            if clock is not None and clock.holder is None:
                clock.hold(self, self._seconds)
            else:
                self._clock = None
                self._handle = asyncio.get_running_loop().call_later(self._seconds, self.expire)
        return self

    def expire(self) -> None:
        if self._task is not None and not self._fired:
            self._fired = True
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        elif self._clock is not None and self._clock.holder is self:
            self._clock.holder = None
        task, self._task = self._task, None
        if self._fired and task is not None:
            await _timed_out(task, self._cancelling, exc_type, exc, self._seconds)


class ReadTimer:
    """The deadline of a client's read of a reply: one per connection, made once, and
    held on the connection's clock for each read (see
    :meth:`AsyncioClock.timed_reader`)."""

    __slots__ = ("fired", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[object] | None = None
        self.fired = False

    def expire(self) -> None:
        task = self.task
        if task is not None and not self.fired:
            self.fired = True
            task.cancel()
