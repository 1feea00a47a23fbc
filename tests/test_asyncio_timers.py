"""The asyncio server's connections share one loop timer for their deadlines (issue 17,
round 4): each connection's timer is an entry in a heap; an entry comes due no
earlier than its time, a timer moved later comes due at its new time, a dropped
one never does, and the heap stays within twice the live timers.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore._asyncio_clock import AsyncioClock
from smtpcore._asyncio_timers import Timers
from smtpcore.asyncio import SMTPServer, Timeouts
from smtpcore.handler import Handler


class Recorder:
    """A timer that notes when it rang, and may ask to be queued again once."""

    def __init__(self, timers: Timers, name: str, log: list[tuple[str, float]]) -> None:
        self.timers = timers
        self.name = name
        self.log = log
        self.queued: float | None = None
        self.again_at: float | None = None

    def ring(self, now: float) -> None:
        if self.again_at is not None and now < self.again_at:
            self.timers.add(self, self.again_at)
            return
        self.log.append((self.name, now))


def test_entries_come_due_in_order_and_never_early() -> None:
    async def body() -> list[tuple[str, float]]:
        timers = Timers(asyncio.get_running_loop())
        log: list[tuple[str, float]] = []
        start = timers.now()
        due = {"c": 0.06, "a": 0.02, "b": 0.04}
        whens = {}
        for name, delay in due.items():
            whens[name] = start + delay
            timers.add(Recorder(timers, name, log), whens[name])
        await asyncio.sleep(0.2)
        for name, rang in log:
            assert rang >= whens[name]
        return log

    assert [name for name, _ in asyncio.run(body())] == ["a", "b", "c"]


def test_a_timer_moved_later_comes_due_at_its_new_time() -> None:
    async def body() -> None:
        timers = Timers(asyncio.get_running_loop())
        log: list[tuple[str, float]] = []
        moved = Recorder(timers, "moved", log)
        start = timers.now()
        timers.add(moved, start + 0.01)
        moved.again_at = start + 0.08
        timers.add(Recorder(timers, "between", log), start + 0.04)
        await asyncio.sleep(0.2)
        assert [name for name, _ in log] == ["between", "moved"]
        assert log[1][1] >= start + 0.08

    asyncio.run(body())


def test_an_earlier_time_replaces_the_entry_and_a_dropped_timer_never_rings() -> None:
    async def body() -> None:
        timers = Timers(asyncio.get_running_loop())
        log: list[tuple[str, float]] = []
        earlier = Recorder(timers, "earlier", log)
        dropped = Recorder(timers, "dropped", log)
        start = timers.now()
        timers.add(earlier, start + 10)
        timers.add(earlier, start + 0.01)  # the entry for +10 s goes stale
        timers.add(dropped, start + 0.01)
        timers.drop(dropped)
        await asyncio.sleep(0.1)
        assert [name for name, _ in log] == ["earlier"]
        assert earlier.queued is None and dropped.queued is None

    asyncio.run(body())


def test_dropped_entries_are_swept_out() -> None:
    async def body() -> None:
        timers = Timers(asyncio.get_running_loop())
        live = [Recorder(timers, f"live{n}", []) for n in range(10)]
        start = timers.now()
        for timer in live:
            timers.add(timer, start + 60)
        for n in range(1000):
            gone = Recorder(timers, f"gone{n}", [])
            timers.add(gone, start + 60)
            timers.drop(gone)
            assert len(timers._heap) <= 2 * (len(live) + 1) + 64 + 1
        assert all(timer.queued == start + 60 for timer in live)
        assert {entry[2] for entry in timers._heap} >= set(live)

    asyncio.run(body())


def test_a_failing_timer_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    class Failing(Recorder):
        def ring(self, now: float) -> None:
            raise RuntimeError("boom")

    async def body() -> list[tuple[str, float]]:
        timers = Timers(asyncio.get_running_loop())
        log: list[tuple[str, float]] = []
        start = timers.now()
        timers.add(Failing(timers, "failing", log), start + 0.01)
        timers.add(Recorder(timers, "after", log), start + 0.01)
        await asyncio.sleep(0.1)
        return log

    with caplog.at_level(logging.ERROR, logger="smtpcore.server"):
        assert [name for name, _ in asyncio.run(body())] == ["after"]
    assert "timer failed" in caplog.text


def test_idle_sessions_of_one_server_each_time_out() -> None:
    """Several sessions, connected at different times, share the server's one loop timer;
    each still gets its own 421 once its own command timeout has run out."""

    async def body() -> None:
        async with SMTPServer(
            Handler(), hostname="mx.test", timeouts=Timeouts(command=0.3)
        ) as server:
            loop = asyncio.get_running_loop()
            streams = []
            started = []
            for _ in range(3):
                started.append(loop.time())  # the session's wait starts after this
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220")
                streams.append((reader, writer))
                await asyncio.sleep(0.1)
            for (reader, writer), at in zip(streams, started, strict=True):
                line = await asyncio.wait_for(reader.readline(), 10)
                assert line.startswith(b"421 4.4.2"), line
                assert loop.time() >= at + 0.3
                assert await asyncio.wait_for(reader.read(), 10) == b""
                writer.close()
            for _ in range(500):  # a session the server ended lingers until the close
                if not server.active_sessions:
                    break
                await asyncio.sleep(0.01)
            assert all(entry[2].queued != entry[0] for entry in server._timers._heap)

    asyncio.run(body())


def test_waits_armed_within_one_tick_share_its_due_time_and_none_ends_early() -> None:
    """The watchdog rounds the end of a wait up to a tick (1/64 s), and sessions armed
    within one tick share that due time's float rather than keep one each."""

    async def body() -> None:
        timers = Timers(asyncio.get_running_loop())
        clocks = [AsyncioClock(timers) for _ in range(3)]
        before = timers.now()
        for clock in clocks:
            clock.arm(300)
        after = timers.now()
        ends = [clock._until for clock in clocks]
        for end in ends:
            assert end is not None
            assert before + 300 <= end <= after + 300 + 1 / 64
        assert len({id(end) for end in ends}) <= 2  # at most one tick boundary between
        assert {clock.queued for clock in clocks} == set(ends)
        for clock in clocks:
            clock.disarm()
            clock.close()

    asyncio.run(body())


def test_timers_queued_for_one_time_apart_from_each_other_all_ring() -> None:
    """Entries for one time queued one after the other are told apart by their order;
    those queued apart may have the same order, and then the timers compare (as the
    connections' clocks do)."""

    class Ordered(Recorder):
        def __lt__(self, other: object) -> bool:
            return id(self) < id(other)

    async def body() -> list[tuple[str, float]]:
        timers = Timers(asyncio.get_running_loop())
        log: list[tuple[str, float]] = []
        start = timers.now()
        for n in range(300):
            timers.add(Ordered(timers, f"a{n}", log), start + 0.01)
            timers.add(Ordered(timers, f"b{n}", log), start + 0.02)
        await asyncio.sleep(0.1)
        return log

    log = asyncio.run(body())
    assert len(log) == 600
    assert {name[0] for name, _ in log[:300]} == {"a"}


@settings(max_examples=300, deadline=None)
@given(
    now=st.floats(0, 1e7),
    seconds=st.floats(0.001, 3600) | st.sampled_from([0.5, 1.0, 300.0, 600.0]),
    last_tick=st.integers(0, 64 * 10**7),
    near=st.booleans(),
)
def test_the_end_of_a_wait_is_its_time_rounded_up_to_a_tick(
    now: float, seconds: float, last_tick: int, near: bool
) -> None:
    """The watchdog takes the last tick rounded to as it is when the wait ends within
    it: the same float as the plain rounding up gives, the tick's own."""
    loop = asyncio.new_event_loop()
    try:
        timers = Timers(loop)
        timers.now = lambda: now
        rounded = -(-(now + seconds) * 64 // 1) / 64
        timers.last_tick = rounded if near else last_tick / 64
        shared = timers.last_tick
        clock = AsyncioClock(timers)
        clock.arm(seconds)
        assert clock._until == rounded
        assert timers.last_tick == rounded
        if rounded == shared:
            assert clock._until is shared
        clock.disarm()
        clock.close()
    finally:
        loop.close()


@settings(max_examples=300, deadline=None)
@given(
    now=st.floats(0, 1e7),
    waited=st.floats(-600, 600),
    limit=st.floats(0.001, 3600),
    rate=st.floats(1, 1e6),
    received=st.integers(1, 1 << 20),
)
def test_a_wait_for_content_is_moved_on_by_what_each_read_earns(
    now: float, waited: float, limit: float, rate: float, received: int
) -> None:
    """Each read of content moves the wait's end on by what it earns at the minimum
    rate, from now if the end had passed, and never beyond ``limit`` from now."""
    loop = asyncio.new_event_loop()
    try:
        timers = Timers(loop)
        timers.now = lambda: now
        clock = AsyncioClock(timers)
        clock.arm(limit, rate)
        clock._until = until = now + waited
        clock.resume(received)
        assert clock._until == min(now + limit, max(until, now) + received / rate)
        assert clock.holder is clock
        clock.disarm()
        clock.close()
    finally:
        loop.close()
