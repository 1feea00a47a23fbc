"""trio's timing for one session (the driver's ``Clock``): :class:`TrioClock`.

Deadlines are cancel scopes (:mod:`smtpcore._trio_deadlines`); a call under a
deadline that has always answered without waiting (a handler's hook, a store's
method) gets its scope only once it waits, as :class:`_CallHabits` remembers,
for entering a cancel scope costs more than such a call. Apart from the
transport and the listener, which only hand a clock to each session's link.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Generator
from types import CodeType
from typing import Any, Final, TypeVar

import trio

from smtpcore._driver._own_timeouts import DeadlinePassed
from smtpcore._driver._timeouts import rest_of
from smtpcore._driver._transport import Link
from smtpcore._threads import AUTH
from smtpcore._trio_deadlines import _Deadline, _Watchdog
from smtpcore.transport import Transport

__all__ = [
    "TrioClock",
    "_CallHabits",
    "_habits",
    "_link",
    "cancel_status",
    "cancel_status_readable",
]

logger = logging.getLogger("smtpcore.server")

_T = TypeVar("_T")


class _CallHabits:
    """Which coroutines (by code object: a handler's hook, a store's method) have
    answered without waiting every time they were awaited under a deadline.

    A cancel scope is entered before a call starts, as trio's scopes must
    nest, and entering one costs more than a hook that answers at once. So
    a coroutine seen answering at once :attr:`AT_ONCE_BEFORE_LAZY` times in
    a row gets its scope only if it waits (``TrioTransport._within_lazily``);
    one seen waiting once gets its scope first for good: a hook that waits
    sometimes (a tarpit, a lookup) may wait inside a scope of its own, which
    ours could not nest around. Whether a cancel scope is
    open is read from ``Task._cancel_status``, there since trio 0.11: trio
    has no public way to ask. Without it, every call gets its scope first.
    """

    AT_ONCE_BEFORE_LAZY: Final = 16
    _LIMIT: Final = 4096
    """Code objects remembered: hooks and store methods are few; past this, forget."""

    _WAITS: Final = -1
    """The count of a coroutine seen waiting: never lazy again."""

    def __init__(self) -> None:
        self._at_once: dict[CodeType, int] = {}
        self.possible = cancel_status_readable()

    def answers_at_once(self, code: CodeType) -> bool:
        return self._at_once.get(code, 0) >= self.AT_ONCE_BEFORE_LAZY

    def answered_at_once(self, code: CodeType) -> None:
        if not self.possible:
            return
        count = self._at_once.get(code, 0)
        if count == self._WAITS:
            return
        if len(self._at_once) >= self._LIMIT and code not in self._at_once:
            self._at_once.clear()
        self._at_once[code] = count + 1

    def waited(self, code: CodeType) -> None:
        if len(self._at_once) >= self._LIMIT and code not in self._at_once:
            self._at_once.clear()
        self._at_once[code] = self._WAITS


def cancel_status(task: trio.lowlevel.Task) -> object:
    """What identifies the innermost cancel scope ``task`` has open: the one place
    smtpcore reads trio's private ``Task._cancel_status`` (trio has no public way to
    ask). :func:`cancel_status_readable` says whether it can be trusted."""
    return getattr(task, "_cancel_status", None)


def cancel_status_readable() -> bool:
    """Whether :func:`cancel_status` can be read on this trio. Without it smtpcore
    enters every scope first (correct, only slower); a test in
    ``tests/test_adapters_deadline.py`` checks that it still tells scopes apart, and
    fails loudly when trio changes it."""
    return hasattr(trio.lowlevel.Task, "_cancel_status")


_habits = _CallHabits()


class TrioClock:
    """trio's timing for one session (the driver's ``Clock``): deadlines are cancel
    scopes, and the session's watchdog one long-lived scope that the run's
    :class:`~smtpcore._trio_deadlines._WatchdogTimer` cancels."""

    __slots__ = ("_watchdog",)

    def __init__(self) -> None:
        self._watchdog: _Watchdog | None = None
        """The watchdog of the session, once it has one (see _within_lazily)."""

    def deadline(self, seconds: float | None) -> _Deadline:
        return _Deadline(seconds)

    def watchdog(self) -> _Watchdog:
        self._watchdog = _Watchdog()
        return self._watchdog

    def close(self) -> None:
        """Nothing to drop: the run's one timer forgets a watchdog when its block ends."""

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def run_in_thread(self, call: Callable[[], _T]) -> _T:
        """``call()`` in one of trio's worker threads, under the credential checks' own
        limiter (:data:`smtpcore._threads.AUTH`), not the default one. A cancelled
        wait ends at once (``abandon_on_cancel``): the call runs on to its end in
        its thread, its result dropped, and ``trio.run`` does not wait for it."""
        return await AUTH.run_trio(call)

    def stray_cancellation(self, exc: BaseException) -> bool:
        """A ``trio.Cancelled`` while no scope around the session's code is cancelled
        (its effective deadline is not minus infinity): no scope of the session's
        will catch it."""
        return isinstance(exc, trio.Cancelled) and trio.current_effective_deadline() != -math.inf

    def timed_reader(
        self, receive: Callable[[int], Awaitable[bytes]]
    ) -> Callable[[float | None, int], Awaitable[bytes]]:
        """``receive_within(seconds, max_bytes)`` for the link (a client's read of
        each reply): ``receive`` under one cancel scope, without a deadline object."""
        return functools.partial(self.receive_within, receive)

    async def receive_within(
        self, receive: Callable[[int], Awaitable[bytes]], seconds: float | None, max_bytes: int
    ) -> bytes:
        """``await receive(max_bytes)`` under a cancel scope of ``seconds``, into
        ``TimeoutError``."""
        if seconds is None:
            return await receive(max_bytes)
        with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
            return await receive(max_bytes)
        assert scope.cancelled_caught  # only its own cancellation ends the block early
        raise TimeoutError

    async def within(self, seconds: float | None, call: Awaitable[_T]) -> _T:
        """Await ``call`` under a cancel scope of ``seconds``, entered before the call
        starts, or, for a coroutine that has always answered without waiting, only
        once it waits (see :class:`_CallHabits`)."""
        if seconds is None:
            return await call
        code = getattr(call, "cr_code", None)
        if code is not None and _habits.answers_at_once(code):
            return await self._within_lazily(seconds, call, code)
        steps = call.__await__()
        # Entered before the call starts: trio's cancel scopes must nest.
        with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
            try:
                waiting_on = steps.send(None)
            except StopIteration as done:
                if code is not None:
                    _habits.answered_at_once(code)
                result: _T = done.value
                return result
            if code is not None:
                _habits.waited(code)
            return await rest_of(steps, waiting_on)
        assert scope.cancelled_caught  # only its own cancellation ends the block early
        raise DeadlinePassed(seconds)  # the call's own TimeoutError is not this

    def start_within(
        self, seconds: float | None, call: Awaitable[_T]
    ) -> tuple[_T] | Awaitable[_T]:
        """:meth:`within`, started now for a coroutine that has always answered without
        waiting (see :class:`_CallHabits`): ``(result,)`` when it answers at once
        again, else what to await for the rest, as :meth:`_within_lazily` awaits it.
        Any other call: ``within``'s coroutine, to await."""
        if seconds is not None:
            code = getattr(call, "cr_code", None)
            if code is not None and _habits.answers_at_once(code):
                return self._start_lazily(seconds, call, code)
        return self.within(seconds, call)

    async def _within_lazily(self, seconds: float, call: Awaitable[_T], code: CodeType) -> _T:
        """Run ``call`` without a scope until it waits, then enter one around the rest:
        a cancel scope costs far more than a hook that answers at once (see
        :meth:`_rest_lazily`)."""
        started = self._start_lazily(seconds, call, code)
        if isinstance(started, tuple):
            result: _T = started[0]
            return result
        return await started

    def _start_lazily(
        self, seconds: float, call: Awaitable[_T], code: CodeType
    ) -> tuple[_T] | Awaitable[_T]:
        """``call`` run up to its first wait: ``(result,)`` if it answers at once, else
        its rest under a scope entered then (:meth:`_rest_lazily`), to await."""
        task = trio.lowlevel.current_task()
        status = cancel_status(task)
        steps = call.__await__()
        try:
            waiting_on = steps.send(None)
        except StopIteration as done:
            return (done.value,)
        return self._rest_lazily(seconds, steps, waiting_on, code, task, status)

    async def _rest_lazily(
        self,
        seconds: float,
        steps: Generator[Any, Any, _T],
        waiting_on: Any,
        code: CodeType,
        task: trio.lowlevel.Task,
        status: object,
    ) -> _T:
        """The rest of a call started without a scope, which waits on ``waiting_on``:
        under a scope entered now.

        That is right only if the call has no cancel scope of its own open at
        its first wait: ours would not nest otherwise. If it has one (it
        changed its habits), its wait is bounded by the session's watchdog
        instead: a timeout then ends the session rather than the call.
        """
        _habits.waited(code)  # from now on, its scope first
        if cancel_status(task) is status:
            with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
                return await rest_of(steps, waiting_on)
            assert scope.cancelled_caught
            raise DeadlinePassed(seconds)
        logger.warning(
            "%s waited inside a cancel scope of its own (trio.sleep, a nursery, "
            "trio.fail_after open one) after answering at once %d times: bounded by the "
            "session timeout this once; from now on it gets its deadline first",
            code.co_name,
            _CallHabits.AT_ONCE_BEFORE_LAZY,
        )
        watchdog = self._watchdog
        if watchdog is None:  # not a served session's clock: the warning is all
            return await rest_of(steps, waiting_on)
        saved = watchdog.borrow(seconds)
        try:
            return await rest_of(steps, waiting_on)
        finally:
            watchdog.give_back(saved)


def _link(transport: Transport) -> Link:
    return Link(transport, TrioClock())
