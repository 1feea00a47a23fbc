"""Loop timers kept by a thread (issue 17, round 10): a client's deadline is not in the
event loop's timers, so the loop's passes do not work out a timeout for it; the
thread still has the loop run the call at its time, never before, in order, not
at all once cancelled or once the loop is closed, and ends when none is left.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

import pytest

from smtpcore import _asyncio_alarm
from smtpcore._asyncio_alarm import OffLoopTimers, call_at
from smtpcore._asyncio_client import _client_link
from smtpcore._asyncio_client_socket import SocketClientTransport


@pytest.fixture(autouse=True)
def alarm(monkeypatch: pytest.MonkeyPatch) -> _asyncio_alarm._Alarm:
    """A thread and heap of the test's own (other tests' clients may hold the process's)."""
    fresh = _asyncio_alarm._Alarm()
    monkeypatch.setattr(_asyncio_alarm, "_alarm", fresh)
    return fresh


def wait_for_no_thread(alarm: _asyncio_alarm._Alarm) -> None:
    thread = alarm.thread
    if thread is not None:
        thread.join(2)
    assert alarm.thread is None and not alarm.heap, "the alarm thread did not end"


def test_the_thread_ends_on_an_empty_heap_whatever_its_count(
    alarm: _asyncio_alarm._Alarm,
) -> None:
    """A handle cancelled while another alarm stood for the process's does not count
    itself out of its own: the thread ends once its heap is empty, without failing."""
    alarm.live = 1
    alarm.watch()
    assert alarm.thread is None and not alarm.heap


def test_calls_run_on_the_loop_in_order_never_early_and_the_thread_ends(
    alarm: _asyncio_alarm._Alarm,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ran: list[tuple[str, float, threading.Thread]] = []
        start = time.monotonic()
        whens = {"late": start + 0.15, "early": start + 0.05, "middle": start + 0.1}

        def note(name: str) -> Callable[[], None]:
            return lambda: ran.append((name, time.monotonic(), threading.current_thread()))

        for name, when in whens.items():
            call_at(loop, when, note(name))
        assert not loop._scheduled  # type: ignore[attr-defined]  # the loop times nothing
        await asyncio.sleep(0.4)
        assert [name for name, _, _ in ran] == ["early", "middle", "late"]
        for name, at, thread in ran:
            assert at >= whens[name]
            assert thread is threading.current_thread()  # run by the loop, not the alarm

    asyncio.run(main())
    wait_for_no_thread(alarm)


def test_an_earlier_call_wakes_the_thread_sooner(alarm: _asyncio_alarm._Alarm) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        late = call_at(loop, time.monotonic() + 60, lambda: None)
        started = time.monotonic()
        call_at(loop, started + 0.05, lambda: done.set_result(time.monotonic()))
        assert await asyncio.wait_for(done, 5) - started < 5
        late.cancel()

    asyncio.run(main())
    wait_for_no_thread(alarm)


def test_a_cancelled_call_never_runs_and_the_last_cancel_ends_the_thread(
    alarm: _asyncio_alarm._Alarm,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ran: list[str] = []
        handle = call_at(loop, time.monotonic() + 0.05, lambda: ran.append("cancelled"))
        long = call_at(loop, time.monotonic() + 3600, lambda: ran.append("long"))
        handle.cancel()
        handle.cancel()  # twice is once
        await asyncio.sleep(0.15)
        assert ran == []
        long.cancel()
        await asyncio.to_thread(wait_for_no_thread, alarm)

    asyncio.run(main())


def test_cancelled_calls_are_swept_while_another_stays(alarm: _asyncio_alarm._Alarm) -> None:
    """Connections opened and closed while one stays open leave the heap bounded by the
    live calls, not by every call cancelled before its time (minutes on)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ran: list[str] = []
        stays = call_at(loop, time.monotonic() + 3600, lambda: ran.append("stays"))
        for n in range(1000):
            call_at(loop, time.monotonic() + 300 + n, lambda: ran.append("gone")).cancel()
            assert len(alarm.heap) <= 2 * _asyncio_alarm._SWEEP_AFTER + 2
        soon = call_at(loop, time.monotonic() + 0.05, lambda: ran.append("soon"))
        await asyncio.sleep(0.2)
        assert ran == ["soon"] and alarm.live == 1
        del soon
        stays.cancel()
        await asyncio.to_thread(wait_for_no_thread, alarm)
        assert ran == ["soon"]

    asyncio.run(main())


def test_a_call_for_a_closed_loop_is_dropped(alarm: _asyncio_alarm._Alarm) -> None:
    loop = asyncio.new_event_loop()
    ran: list[str] = []
    call_at(loop, time.monotonic() + 0.02, lambda: ran.append("ran"))
    loop.close()
    wait_for_no_thread(alarm)  # came due, found the loop closed, and ended
    assert ran == []


def test_a_forked_child_starts_with_no_alarm(
    alarm: _asyncio_alarm._Alarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        handle = call_at(asyncio.get_running_loop(), time.monotonic() + 3600, lambda: None)
        assert isinstance(handle, _asyncio_alarm.AlarmHandle)
        assert alarm.thread is not None
        _asyncio_alarm._forget()  # what the child runs after a fork
        fresh = _asyncio_alarm._alarm
        assert fresh is not alarm
        assert fresh.thread is None and fresh.live == 0 and not fresh.heap
        handle.cancel()  # the parent's handle, in the child: the parent's lock untouched
        assert handle.loop is None and alarm.live == 1
        monkeypatch.setattr(_asyncio_alarm, "_alarm", alarm)  # back in the parent
        with alarm.lock:  # end the parent's thread, which holds a cancelled entry
            alarm.live = 0
            alarm.lock.notify()

    asyncio.run(main())
    wait_for_no_thread(alarm)


def test_timers_off_the_loop_schedule_nothing_on_it_unless_its_clock_is_another() -> None:
    class OwnClock(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return super().time() + 1000.0

    async def main() -> None:
        loop = asyncio.get_running_loop()
        timers = OffLoopTimers(loop)
        rang = loop.create_future()

        class Timer:
            queued: float | None = None

            def ring(self, now: float) -> None:
                rang.set_result(now)

        due = timers.now() + 0.05
        timers.add(Timer(), due)
        if isinstance(loop, OwnClock):
            assert len(loop._scheduled) == 1  # type: ignore[attr-defined]  # the loop's own
        else:
            assert not loop._scheduled  # type: ignore[attr-defined]
        assert await asyncio.wait_for(rang, 5) >= due
        timers.close()

    asyncio.run(main())
    loop = OwnClock()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_clients_read_is_timed_off_the_loop_and_its_timer_goes_with_it(
    alarm: _asyncio_alarm._Alarm,
) -> None:
    """While a client waits for a reply the loop has no timer; a silent server still
    times out; closing the connection calls its timer off."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, peer = socket.socketpair()
        link = _client_link(SocketClientTransport(ours))
        with peer:
            waiting = link.receive_within(300, 65536)
            assert not loop._scheduled  # type: ignore[attr-defined]  # asyncio's timers
            peer.sendall(b"250 ok\r\n")
            assert await waiting == b"250 ok\r\n"
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await link.receive_within(0.05, 65536)
            assert time.monotonic() - started < 5
            link.receive_within(300, 65536)
            assert alarm.live == 1
            await link.aclose()
        assert alarm.live == 0

    asyncio.run(main())
    wait_for_no_thread(alarm)
