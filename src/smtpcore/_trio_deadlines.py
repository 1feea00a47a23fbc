"""trio's deadlines for the driver: a cancel scope that raises ``TimeoutError``, and a
session's watchdog, timed by one task of the run for all its sessions.

:class:`_Deadline` bounds one wait; :class:`_Watchdog` is one long-lived scope
around a whole session, which arming only records, so that the thousands of
waits a busy session makes move no trio deadline; :class:`_WatchdogTimer` is
the system task that notices a wait gone on too long. Kept apart from
:class:`~smtpcore._trio_clock.TrioClock`, which hands them out, as the part that
knows how trio cancels.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any, Final

import trio

from smtpcore._driver._own_timeouts import DeadlinePassed

__all__ = ["_Deadline", "_Watchdog"]


class _Deadline:
    """A trio cancel scope that raises ``TimeoutError`` rather than ``trio.TooSlowError``:
    :class:`~smtpcore._driver._own_timeouts.DeadlinePassed` once its ``seconds`` passed,
    told apart from a ``TimeoutError`` the code under it raised."""

    __slots__ = ("_scope", "_seconds")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._scope = trio.CancelScope()

    async def __aenter__(self) -> _Deadline:
        if self._seconds is not None:
            # A new scope rather than a deadline set on the old one: setting a
            # deadline is a context manager of its own in trio.
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
            if self._seconds is None:  # the watchdog's: the session's timeout
                raise TimeoutError
            raise DeadlinePassed(self._seconds)
        return suppressed

    def expire(self) -> None:
        self._scope.cancel()


class _Watchdog(_Deadline):
    """The session's :class:`~smtpcore._driver._timeouts.Watchdog`: one cancel scope
    around the whole session, without a deadline of its own, that the run's
    :class:`_WatchdogTimer` cancels once a wait has lasted its timeout.

    A busy session waits for its client a few thousand times a second, and
    moving a trio deadline that often costs more than the reads. Arming
    only records the timeout and counts the wait; the timer, waking a
    hundredth of the shortest timeout apart, notices the count change and
    times the wait from there. So a wait times out at most two timer ticks
    late (2%, or 2 seconds, whichever is less): RFC 5321 §4.5.3.2 timeouts
    are minimums.
    """

    __slots__ = (
        "_armed",
        "_credited",
        "_due",
        "_limit",
        "_rate",
        "_received",
        "_timed_waits",
        "_timer",
        "_waits",
    )

    def __init__(self) -> None:
        super().__init__(None)
        self._timer: _WatchdogTimer | None = None
        self._armed = False
        """True while the session waits for its client."""
        self._limit: float | None = None
        """The timeout of the wait under way."""
        self._rate: float | None = None
        self._waits = 0
        """Waits armed so far: the timer sees a new wait when this moves."""
        self._timed_waits = 0
        self._received = 0
        """Octets the wait under way has received (counted only with a rate)."""
        self._credited = 0
        self._due = math.inf

    async def __aenter__(self) -> _Watchdog:
        await super().__aenter__()
        self._timer = _WatchdogTimer.of_this_run()
        self._timer.watchdogs.add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._timer is not None:
            self._timer.watchdogs.discard(self)
        return await super().__aexit__(exc_type, exc, tb)

    def arm(self, seconds: float | None, min_rate: float | None = None) -> None:
        self._limit = seconds
        self._rate = min_rate
        self._armed = True
        self._waits += 1
        timer = self._timer
        if seconds is not None and timer is not None and seconds < timer.shortest:
            timer.shorten(seconds)

    def resume(self, received: int = 0) -> None:
        self._armed = True
        self._received += received

    def disarm(self) -> None:
        self._armed = False

    def check(self, now: float) -> None:
        """The timer's tick: start timing a new wait, credit what a wait received
        (with a rate), or end one that is overdue."""
        limit = self._limit
        if not self._armed or limit is None:
            return
        if self._timed_waits != self._waits:
            self._timed_waits = self._waits
            self._due = now + limit
            self._credited = self._received
            return
        rate = self._rate
        if rate and self._received != self._credited:
            gained = (self._received - self._credited) / rate
            self._credited = self._received
            # Time spent answering (not waiting) is not held against the client.
            self._due = min(now + limit, max(self._due, now) + gained)
        if now >= self._due:
            self._scope.cancel()

    def borrow(self, seconds: float) -> tuple[Any, ...]:
        """Time something else than the session's wait (see ``_within_lazily``);
        give what this returns back to :meth:`give_back` after."""
        saved = (self._limit, self._rate, self._due, self._received, self._credited)
        self.arm(seconds)
        return saved

    def give_back(self, saved: tuple[Any, ...]) -> None:
        self._armed = False
        self._limit, self._rate, self._due, self._received, self._credited = saved
        self._timed_waits = self._waits  # the wait goes on with its own end

    @property
    def expired(self) -> bool:
        return self._scope.cancelled_caught


class _WatchdogTimer:
    """The one task of a trio run that times the watchdogs of all its sessions.

    A system task, started with the first watchdog and ended with the last,
    so it never keeps a run alive. It ticks every hundredth of the shortest
    timeout armed (at most a second, at least 5 ms apart).
    """

    def __init__(self) -> None:
        self.watchdogs: set[_Watchdog] = set()
        self.shortest = math.inf
        """The shortest timeout armed so far: a longer one needs no faster tick."""
        self._tick = 1.0
        self._nap = trio.CancelScope()

    @classmethod
    def of_this_run(cls) -> _WatchdogTimer:
        timer = _WATCHDOG_TIMER.get()
        if timer is None:
            timer = cls()
            _WATCHDOG_TIMER.set(timer)
            trio.lowlevel.spawn_system_task(timer._run, name="smtpcore watchdog timer")
        return timer

    def shorten(self, seconds: float) -> None:
        """A wait with a shorter timeout than any before: tick faster, from now."""
        self.shortest = seconds
        tick = min(1.0, max(0.005, seconds / 100))
        if tick < self._tick:
            self._tick = tick
            self._nap.cancel()

    async def _run(self) -> None:
        while self.watchdogs:
            with trio.CancelScope() as self._nap:
                await trio.sleep(self._tick)
            now = trio.current_time()
            for watchdog in list(self.watchdogs):
                watchdog.check(now)
        _WATCHDOG_TIMER.set(None)


_WATCHDOG_TIMER: Final[trio.lowlevel.RunVar[_WatchdogTimer | None]] = trio.lowlevel.RunVar(
    "smtpcore_watchdog_timer", None
)
