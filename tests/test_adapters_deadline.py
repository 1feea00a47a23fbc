"""The deadlines each framework's clock supplies to the shared driver (RFC 5321 §4.5.3.2).

The driver relies on three properties on both frameworks: a block that runs
too long raises ``TimeoutError``; ``expire()`` ends a wait at once (graceful
shutdown); and a deadline never swallows a cancellation that is not its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import trio

from peers import run
from smtpcore._driver._timeouts import deadline_when_waiting
from smtpcore._trio_clock import _CallHabits, _habits
from smtpcore.asyncio import AsyncioClock
from smtpcore.trio import TrioClock

Deadline = Callable[[float | None], Any]
T = TypeVar("T")


def deadline_factory(framework: str) -> Deadline:
    if framework == "asyncio":
        return lambda seconds: AsyncioClock().deadline(seconds)
    return TrioClock().deadline


def sleep(framework: str, seconds: float) -> Awaitable[None]:
    return asyncio.sleep(seconds) if framework == "asyncio" else trio.sleep(seconds)


FRAMEWORKS = ["asyncio", "trio"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_block_that_runs_too_long_raises_timeout_error(framework: str) -> None:
    async def body() -> None:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with deadline_factory(framework)(0.05):
                await sleep(framework, 5)
        assert time.monotonic() - started < 2
        async with deadline_factory(framework)(None):
            await sleep(framework, 0.01)
        async with deadline_factory(framework)(5):
            await sleep(framework, 0.01)
        await sleep(framework, 0.01)  # no cancellation left pending

    run(framework, body)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_expire_ends_the_wait_at_once(framework: str) -> None:
    async def body() -> None:
        async def waiter(armed: list[Any]) -> None:
            with pytest.raises(TimeoutError):
                async with deadline_factory(framework)(None) as deadline:
                    armed.append(deadline)
                    await sleep(framework, 10)

        armed: list[Any] = []
        started = time.monotonic()
        if framework == "asyncio":
            task = asyncio.get_running_loop().create_task(waiter(armed))
            await asyncio.sleep(0.01)
            armed[0].expire()
            await task
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter, armed)
                await trio.sleep(0.01)
                armed[0].expire()
        assert time.monotonic() - started < 2

    run(framework, body)


def test_asyncio_deadline_does_not_swallow_an_outer_cancellation() -> None:
    async def body() -> None:
        entered = asyncio.Event()

        async def inner() -> None:
            async with AsyncioClock().deadline(10):
                entered.set()
                await asyncio.sleep(10)

        task = asyncio.get_running_loop().create_task(inner())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(body())


def test_asyncio_deadline_due_as_the_operation_completes_leaks_no_cancellation() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        outcomes = set()
        for _ in range(20):
            future: asyncio.Future[None] = loop.create_future()
            try:
                async with AsyncioClock().deadline(0.001):
                    loop.call_soon(future.set_result, None)
                    time.sleep(0.002)  # the timer and the result are due together
                    await future
                outcomes.add("done")
            except TimeoutError:
                outcomes.add("timeout")
            await asyncio.sleep(0.001)  # a leaked cancellation would land here
        assert outcomes

    asyncio.run(body())


def within(framework: str) -> Callable[[float | None, Awaitable[T]], Awaitable[T]]:
    """The clock's ``within``."""
    if framework == "asyncio":
        return AsyncioClock().within
    return TrioClock().within  # deadlines need no stream


def test_asyncio_within_enters_no_deadline_for_a_call_that_does_not_wait() -> None:
    entered: list[float | None] = []

    def counting(seconds: float | None) -> Any:
        entered.append(seconds)
        return AsyncioClock().deadline(seconds)

    async def answer() -> str:
        return "250 OK"

    async def fails() -> str:
        raise ValueError("the handler broke")

    async def waits() -> str:
        await asyncio.sleep(0.001)
        return "later"

    async def body() -> None:
        assert await deadline_when_waiting(counting, 5, answer()) == "250 OK"
        with pytest.raises(ValueError, match="the handler broke"):
            await deadline_when_waiting(counting, 5, fails())
        assert entered == []
        assert await deadline_when_waiting(counting, 5, waits()) == "later"
        assert entered == [5]

    asyncio.run(body())


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_within_bounds_a_call_that_waits(framework: str) -> None:
    finished: list[str] = []

    async def waits(seconds: float) -> str:
        try:
            await sleep(framework, seconds)  # trio.sleep opens a cancel scope of its own
            await sleep(framework, 0)
            return "done"
        finally:
            finished.append("cleanup")

    async def body() -> None:
        assert await within(framework)(5, waits(0.01)) == "done"
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await within(framework)(0.05, waits(10))
        assert time.monotonic() - started < 2
        assert finished == ["cleanup", "cleanup"]  # the timed-out call saw its cancellation
        await sleep(framework, 0.01)  # no cancellation left pending

    run(framework, body)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_within_passes_on_the_call_s_own_errors(framework: str) -> None:
    async def breaks_at_once() -> str:
        raise KeyError("at once")

    async def breaks_later() -> str:
        await sleep(framework, 0.001)
        raise LookupError("no such mailbox")

    async def body() -> None:
        with pytest.raises(KeyError, match="at once"):
            await within(framework)(5, breaks_at_once())
        with pytest.raises(LookupError, match="no such mailbox"):
            await within(framework)(5, breaks_later())

    run(framework, body)


def test_asyncio_within_lets_an_outer_cancellation_through_to_the_call() -> None:
    seen: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def body() -> None:
        task = asyncio.get_running_loop().create_task(AsyncioClock().within(10, waits()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["cancelled"]

    asyncio.run(body())


def clock_for(framework: str) -> Any:
    if framework == "asyncio":
        return AsyncioClock()
    return TrioClock()


def watchdog_factory(framework: str) -> Any:
    return clock_for(framework).watchdog()


@contextlib.asynccontextmanager
async def running_beside(
    framework: str, task: Callable[[], Coroutine[Any, Any, None]]
) -> AsyncIterator[None]:
    """Run ``task()`` alongside the block; cancel it, if still running, when the block ends."""
    if framework == "asyncio":
        beside = asyncio.get_running_loop().create_task(task())
        try:
            yield
        finally:
            beside.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beside
    else:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(task)
            yield
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_watchdog_goes_off_only_while_armed(framework: str) -> None:
    """Disarmed, it lets the session wait in ``within`` and under ``deadline`` as long
    as those allow, and in plain waits too; armed, a wait shorter than its time is left
    alone and a longer one is cut short.

    Each wait past an armed time is disarmed before any await, so a loaded machine
    that is slow to run the loop cannot let the armed time pass first; the armed wait
    that must not go off has twenty times its length to spare (a 0.05-second arming
    around a 0.01-second sleep went off on a loaded machine). That the cut comes on
    time is shown by order, not by a stopwatch: a timer set for twenty times the armed
    time has not gone off yet when the wait is cut short."""

    async def body() -> None:
        clock = clock_for(framework)
        async with clock.watchdog() as watchdog:
            watchdog.arm(10)
            await sleep(framework, 0.01)
            watchdog.disarm()
            watchdog.arm(0.05)
            watchdog.disarm()
            await clock.within(5, sleep(framework, 0.1))  # past the armed time
            watchdog.arm(0.05)
            watchdog.disarm()
            async with clock.deadline(5):
                await sleep(framework, 0.1)
            watchdog.arm(0.05)
            watchdog.disarm()
            await clock.within(None, sleep(framework, 0.1))
            watchdog.arm(None)
            await sleep(framework, 0.1)
        assert not watchdog.expired
        events: list[str] = []

        async def much_later() -> None:
            await sleep(framework, 20 * 0.05)
            events.append("a timer set for twenty times the armed time went off")

        async with running_beside(framework, much_later):
            with pytest.raises(TimeoutError):
                async with watchdog_factory(framework) as watchdog:
                    watchdog.arm(0.05)
                    try:
                        await sleep(framework, 60)
                    except BaseException:
                        events.append("the wait was cut short")
                        raise
                    events.append("the wait ran to its end")
            assert watchdog.expired
            assert events == ["the wait was cut short"]  # and on time, before the timer
        await sleep(framework, 0.01)  # no cancellation left pending

    run(framework, body)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_arming_times_its_own_wait(framework: str) -> None:
    """A wait is timed from its own ``arm``, not from an earlier one: a session armed
    again and again within the timeout never goes off, however long it lives."""

    async def body() -> None:
        clock = clock_for(framework)
        async with clock.watchdog() as watchdog:
            for _ in range(6):
                watchdog.arm(0.2)
                await sleep(framework, 0.05)
                watchdog.disarm()
            watchdog.arm(0.2)
            watchdog.disarm()
            await sleep(framework, 0.3)
        assert not watchdog.expired

    run(framework, body)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_short_timeout_among_long_ones_goes_off_in_time(framework: str) -> None:
    """Sessions with long timeouts do not make a short one late (trio's timer ticks
    by the shortest timeout armed)."""

    async def body() -> None:
        outcome: list[float] = []

        async def patient(watchdog_seconds: float, wait: float) -> None:
            started = time.monotonic()
            try:
                async with clock_for(framework).watchdog() as watchdog:
                    watchdog.arm(watchdog_seconds)
                    await sleep(framework, wait)
            except TimeoutError:
                outcome.append(time.monotonic() - started)

        if framework == "asyncio":
            long_one = asyncio.get_running_loop().create_task(patient(600, 0.6))
            await asyncio.sleep(0.01)
            await patient(0.1, 5)
            await long_one
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(patient, 600, 0.6)
                await trio.sleep(0.01)
                await patient(0.1, 5)
        assert len(outcome) == 1
        assert 0.1 <= outcome[0] < 2  # not held back to the long timeouts (600 s)

    run(framework, body)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_expiring_the_watchdog_ends_the_wait_at_once(framework: str) -> None:
    async def body() -> None:
        armed: list[Any] = []

        async def waiter() -> None:
            with pytest.raises(TimeoutError):
                async with watchdog_factory(framework) as watchdog:
                    armed.append(watchdog)
                    watchdog.arm(None)
                    await sleep(framework, 10)

        started = time.monotonic()
        if framework == "asyncio":
            task = asyncio.get_running_loop().create_task(waiter())
            await asyncio.sleep(0.01)
            armed[0].expire()
            await task
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.sleep(0.01)
                armed[0].expire()
        assert armed[0].expired
        assert time.monotonic() - started < 2

    run(framework, body)


# -- trio: a deadline entered only once a practised call waits --------------------------


def practise(clock: Any, hook: Callable[[bool], Awaitable[int]]) -> Awaitable[None]:
    """Await ``hook(False)`` (answers at once) until ``within`` starts it without a scope."""

    async def body() -> None:
        for _ in range(_CallHabits.AT_ONCE_BEFORE_LAZY):
            assert await clock.within(5, hook(False)) == 1
        assert _habits.answers_at_once(hook.__code__)

    return body()


def test_trio_a_practised_call_gets_its_scope_when_it_first_waits() -> None:
    async def hook(wait: bool) -> int:
        if wait:
            await trio.Event().wait()  # waits for ever, with no cancel scope of its own
        return 1

    async def body() -> None:
        clock = clock_for("trio")
        await practise(clock, hook)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await clock.within(0.05, hook(True))
        assert time.monotonic() - started < 2
        assert not _habits.answers_at_once(hook.__code__)  # its scope first again
        with pytest.raises(TimeoutError):
            await clock.within(0.05, hook(True))

    trio.run(body)


def test_trio_a_call_seen_waiting_gets_its_scope_first_for_good() -> None:
    """A hook that waits sometimes (a tarpit's ``trio.sleep``, which opens a cancel
    scope of its own) is never started without its scope again, however often it
    answers at once after: its timeout stays a ``TimeoutError`` (a 451), rather than
    the session's end."""

    waits: list[Callable[[], Awaitable[object]]] = [
        trio.Event().wait,
        functools.partial(trio.sleep, 10),
    ]

    async def hook(wait: bool) -> int:
        if wait:
            await waits.pop(0)()
        return 1

    async def body() -> None:
        clock = clock_for("trio")
        await practise(clock, hook)
        with pytest.raises(TimeoutError):  # a wait with no scope of its own
            await clock.within(0.05, hook(True))
        for _ in range(3 * _CallHabits.AT_ONCE_BEFORE_LAZY):
            assert await clock.within(5, hook(False)) == 1
        assert not _habits.answers_at_once(hook.__code__)
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # trio.sleep: a scope of its own
            await clock.within(0.05, hook(True))
        assert time.monotonic() - started < 2

    trio.run(body)


def test_trio_start_within_answers_a_practised_call_at_once_and_times_the_rest() -> None:
    """``start_within``: ``(result,)`` for a practised call that answers at once; for
    one that waits, what to await for the rest, under a scope entered then."""

    async def hook(wait: bool) -> int:
        if wait:
            await trio.Event().wait()  # waits for ever, with no cancel scope of its own
        return 1

    async def body() -> None:
        clock = clock_for("trio")
        started = clock.start_within(5, hook(False))  # not practised: within's coroutine
        assert not isinstance(started, tuple)
        assert await started == 1
        await practise(clock, hook)
        assert clock.start_within(5, hook(False)) == (1,)
        untimed = clock.start_within(None, hook(False))  # no deadline: within's
        assert not isinstance(untimed, tuple)
        assert await untimed == 1
        started = time.monotonic()
        rest = clock.start_within(0.05, hook(True))
        assert not isinstance(rest, tuple)
        with pytest.raises(TimeoutError):
            await rest
        assert time.monotonic() - started < 2
        assert not _habits.answers_at_once(hook.__code__)  # its scope first again
        call = hook(True)
        rest = clock.start_within(0.05, call)
        assert not isinstance(rest, tuple)
        with pytest.raises(TimeoutError):
            await rest

    trio.run(body)


def test_trio_a_practised_call_that_waits_in_its_own_scope_is_bounded_by_the_watchdog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its scope opened before its first wait: ours cannot nest around it any more,
    so the session's watchdog bounds the wait (and ends the session)."""

    async def hook(wait: bool) -> int:
        if wait:
            with trio.CancelScope():
                await trio.sleep_forever()
        return 1

    async def body() -> None:
        clock = clock_for("trio")
        await practise(clock, hook)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with clock.watchdog() as watchdog:
                await clock.within(0.1, hook(True))
        assert watchdog.expired
        assert time.monotonic() - started < 2
        await trio.sleep(0.01)  # nothing left cancelled

    trio.run(body)
    assert "waited inside a cancel scope of its own" in caplog.text


def test_trio_a_practised_call_passes_errors_and_outer_cancellation_through() -> None:
    async def hook(wait: bool) -> int:
        if wait:
            await trio.sleep(0)
            raise ValueError("after a wait")
        return 1

    async def failing(wait: bool) -> int:
        if wait:
            raise KeyError("at once")
        return 1

    async def sleeper(wait: bool) -> int:
        if wait:
            await trio.Event().wait()
        return 1

    async def body() -> None:
        clock = clock_for("trio")
        for practised in (hook, failing, sleeper):
            await practise(clock, practised)
        with pytest.raises(ValueError, match="after a wait"):
            await clock.within(5, hook(True))
        with pytest.raises(KeyError):
            await clock.within(5, failing(True))
        with trio.move_on_after(0.05) as outer:  # not the call's deadline: no TimeoutError
            await clock.within(5, sleeper(True))
        assert outer.cancelled_caught

    trio.run(body)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_resumed_wait_keeps_its_end(framework: str) -> None:
    """A wait resumed read after read (a command line trickling in) ends when armed,
    not a timeout after its last read."""

    async def body() -> None:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with clock_for(framework).watchdog() as watchdog:
                watchdog.arm(0.3)
                while time.monotonic() - started < 10:
                    await sleep(framework, 0.05)
                    watchdog.disarm()
                    watchdog.resume()
        assert watchdog.expired
        assert time.monotonic() - started < 5

    run(framework, body)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_wait_with_a_minimum_rate_goes_on_while_the_rate_is_kept(framework: str) -> None:
    async def body() -> None:
        started = time.monotonic()
        async with clock_for(framework).watchdog() as watchdog:
            watchdog.arm(0.3, min_rate=100)
            while time.monotonic() - started < 1.2:  # four times the armed time
                await sleep(framework, 0.05)
                watchdog.disarm()
                watchdog.resume(100)  # a second earned each time, capped at 0.3
        assert not watchdog.expired
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with clock_for(framework).watchdog() as watchdog:
                watchdog.arm(0.3, min_rate=100)
                while time.monotonic() - started < 10:
                    await sleep(framework, 0.05)
                    watchdog.disarm()
                    watchdog.resume(1)  # 20 octets a second: under the rate
        assert time.monotonic() - started < 5

    run(framework, body)


def test_trio_cancel_status_still_tells_cancel_scopes_apart() -> None:
    """The trio clock reads trio's private ``Task._cancel_status`` (in one place,
    ``smtpcore._trio_clock.cancel_status``) to run practised hooks without a scope. If trio
    renames or changes it, smtpcore falls back to a scope for every call, and this
    test says so loudly."""
    from smtpcore._trio_clock import cancel_status, cancel_status_readable

    assert cancel_status_readable(), "trio.lowlevel.Task._cancel_status is gone"
    assert _habits.possible

    async def body() -> None:
        task = trio.lowlevel.current_task()
        outside = cancel_status(task)
        assert outside is not None
        with trio.CancelScope():
            inside = cancel_status(task)
            assert inside is not outside, "a cancel scope no longer changes _cancel_status"
        assert cancel_status(task) is outside

    trio.run(body)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_run_in_thread_keeps_the_loop_free_and_a_deadline_ends_its_wait(framework: str) -> None:
    """A slow credential check runs in a worker thread while the loop goes on; a wait
    for one cut off by a deadline (a shutdown's cancellation alike) ends at once, the
    call left to finish in its thread. ``sleep`` waits, interruptibly too."""
    import threading

    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return threading.current_thread().name

    async def body() -> None:
        clock = clock_for(framework)
        main = threading.current_thread().name
        ticks: list[None] = []

        async def ticking() -> str:
            for _ in range(3):
                await sleep(framework, 0.01)
                ticks.append(None)
            release.set()
            return main

        async def both() -> list[str]:
            if framework == "asyncio":
                return list(await asyncio.gather(clock.run_in_thread(slow), ticking()))
            names: list[str] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticking)
                names.append(await clock.run_in_thread(slow))
            return [*names, main]

        worker, _ = await both()
        assert worker != main and len(ticks) == 3
        release.clear()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with clock.deadline(0.05):
                await clock.run_in_thread(slow)
        with pytest.raises(TimeoutError):
            async with clock.deadline(0.05):
                await clock.sleep(30)
        # Neither waited for what it was cut off from: the held call (5 s), the sleep
        # (30 s). 4 s leaves a loaded machine room, and is short of either.
        assert time.monotonic() - started < 4
        release.set()  # the abandoned call ends in its thread
        started = time.monotonic()
        await clock.sleep(0.05)
        assert time.monotonic() - started >= 0.05

    run(framework, body)
