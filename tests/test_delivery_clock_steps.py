"""A step of the wall clock (NTP, ``date -s``) neither holds nor floods the queue, nor
expires mail early or late: the delivery worker waits on its monotonic clock, and a
message's age counts on it (:mod:`smtpcore.server.clocksteps`).

The worker here has two fake clocks: ``wall`` (queue files, reports) and ``mono`` (its
waits). Its local deliveries are a stand-in that answers from a script and notes the
clocks at each attempt."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore.routing import Router, StaticResolver
from smtpcore.server.clocksteps import MessageAges, wait_until
from smtpcore.server.delivery import DeliveryWorker
from smtpcore.server.exchanger import Outcome
from smtpcore.server.queue import RecipientStatus
from smtpcore.server.queuectl import format_listing
from test_server_delivery import MESSAGE, ZONE, Setup, _queue_empty, _setup

DAY = 86400.0
RETRY = 300.0
LONGEST = 4000.0
BUSY = Outcome(RecipientStatus.PENDING, "4.2.1", "mailbox busy")
TAKEN = Outcome(RecipientStatus.SENT, "2.0.0", "delivered")
RECIPIENT = "john@abc.example"

steps = st.floats(min_value=-30 * DAY, max_value=30 * DAY, allow_nan=False)
"""A step of the wall clock, back or forward, up to a month."""


# -- the bookkeeping alone ------------------------------------------------------------


def test_a_stored_time_is_a_wait_between_none_and_the_longest_backoff() -> None:
    assert wait_until(1000.0 + 120, 1000.0, LONGEST) == 120  # as written
    assert wait_until(1000.0 - DAY, 1000.0, LONGEST) == 0  # overdue: at once
    assert wait_until(1000.0 + DAY, 1000.0, LONGEST) == LONGEST  # written before a step back


@given(stored=steps, now=steps, longest=st.floats(min_value=0, max_value=DAY))
def test_a_wait_is_never_negative_nor_past_the_longest(
    stored: float, now: float, longest: float
) -> None:
    wait = wait_until(stored, now, longest)
    assert 0 <= wait <= longest
    if 0 <= stored - now <= longest:
        assert wait == stored - now


@given(
    first_age=steps,
    moves=st.lists(st.tuples(steps, st.floats(min_value=0, max_value=DAY)), max_size=20),
)
def test_an_age_is_what_the_monotonic_clock_counted_whatever_the_wall_clock_did(
    first_age: float, moves: list[tuple[float, float]]
) -> None:
    """Its wall-clock age when first asked (never below 0: a message stamped in the
    future), then the monotonic clock's count alone, every step of the wall clock
    ignored."""
    wall, mono = [1e9], [500.0]
    ages = MessageAges(lambda: wall[0], lambda: mono[0])
    created = wall[0] - first_age
    ages.see("A", created)
    assert ages.age("A", created) == pytest.approx(max(first_age, 0.0), abs=1e-3)
    counted = 0.0
    for step, elapsed in moves:
        wall[0] += step + elapsed
        mono[0] += elapsed
        counted += elapsed
        assert ages.age("A", created) == pytest.approx(max(first_age, 0.0) + counted, abs=1e-3)
    ages.forget("A")
    assert len(ages) == 0


def test_asking_an_age_keeps_nothing_and_seeing_again_changes_nothing() -> None:
    wall, mono = [1e9], [500.0]
    ages = MessageAges(lambda: wall[0], lambda: mono[0])
    assert ages.age("A", wall[0] - 60) == 60 and len(ages) == 0  # by the wall clock
    ages.see("A", wall[0] - 60)
    wall[0] -= DAY
    mono[0] += 10
    ages.see("A", wall[0] - 60)  # seen already: counted on
    assert ages.age("A", 0.0) == 70 and len(ages) == 1


# -- the worker, round by round -------------------------------------------------------


@dataclass
class Clocks:
    wall: float = 1_000_000_000.0
    mono: float = 5000.0


@dataclass
class Attempts:
    """The stand-in for local delivery: the outcomes in order, and the clocks at each
    attempt."""

    script: list[Outcome]
    clocks: Clocks
    mono: list[float] = field(default_factory=list)
    sent: int = 0

    async def __call__(self, entry: object, decision: object, content: object) -> Outcome:
        self.mono.append(self.clocks.mono)
        outcome = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.sent += outcome.status is RecipientStatus.SENT
        return outcome


def _worker(tmp_path: Path, clocks: Clocks, script: list[Outcome], **settings: Any) -> Setup:
    setup = _setup(
        tmp_path,
        ZONE,
        25,
        retry_after=RETRY,
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )
    worker = setup.worker
    worker.max_retry_after = LONGEST
    worker.max_queue_age = 5 * DAY
    for name, value in settings.items():
        setattr(worker, name, value)
    worker._deliver_local = Attempts(script, clocks)  # type: ignore[method-assign]  # a stand-in
    return setup


def _attempts(setup: Setup) -> Attempts:
    attempts = setup.worker._deliver_local
    assert isinstance(attempts, Attempts)
    return attempts


async def _next_round(setup: Setup, clocks: Clocks, queue_id: str) -> float:
    """Run the round of ``queue_id`` when the scheduler has it due, the monotonic clock
    moved on to that time (as :meth:`DeliveryWorker.run` waits for it); the wait."""
    due = setup.worker._due.pop(queue_id)
    waited = max(due - clocks.mono, 0.0)
    clocks.mono += waited
    clocks.wall += waited
    await setup.worker._process(queue_id)
    return waited


def _reports(setup: Setup, action: bytes) -> int:
    return sum(action in raw for raw in setup.raw_bounces())


def _rounds_with_steps(
    directory: Path, wall_steps: list[float], **settings: Any
) -> tuple[Setup, list[float]]:
    """A message deferred once per step, the wall clock stepped by it after each
    deferral, then delivered; the waits between its rounds."""
    clocks = Clocks()
    setup = _worker(directory, clocks, [BUSY] * len(wall_steps) + [TAKEN], **settings)
    waits: list[float] = []

    async def main() -> None:
        entry = setup.queue.add(MESSAGE, "john@abc.example", [RECIPIENT])
        setup.worker.schedule(entry, new=True)
        await _next_round(setup, clocks, entry.id)
        for step in wall_steps:
            clocks.wall += step
            waits.append(await _next_round(setup, clocks, entry.id))
        await setup.worker.aclose(1.0)

    asyncio.run(main())
    return setup, waits


@pytest.mark.parametrize("step", [-DAY, -3600.0, 3600.0, DAY], ids=["-1d", "-1h", "+1h", "+1d"])
def test_retries_come_at_their_monotonic_times_after_a_step(tmp_path: Path, step: float) -> None:
    """A step back made every retry wait as long as the step (a day: no attempt for a
    day); a step forward made it due at once. Now each waits its backoff, and the
    message is delivered once."""
    setup, waits = _rounds_with_steps(tmp_path, [step, step, step])
    assert waits[0] == RETRY  # the first retry: retry_after exactly
    assert all(RETRY <= wait <= LONGEST for wait in waits)
    assert _attempts(setup).sent == 1 and len(_attempts(setup).mono) == 4
    assert _queue_empty(setup) and setup.bounces() == []


@settings(max_examples=15, deadline=None)
@given(wall_steps=st.lists(steps, min_size=1, max_size=4))
def test_any_steps_neither_stall_nor_flood_nor_lose_nor_repeat(wall_steps: list[float]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        setup, waits = _rounds_with_steps(Path(directory), wall_steps)
        assert all(RETRY <= wait <= LONGEST for wait in waits)
        assert _attempts(setup).sent == 1
        assert _queue_empty(setup) and setup.bounces() == []


@pytest.mark.parametrize("step", [-DAY, DAY], ids=["back", "forward"])
def test_expiry_comes_at_the_lifetime_by_the_monotonic_clock(tmp_path: Path, step: float) -> None:
    """A step forward expired the message at its next round; a step back kept it for a
    day past its lifetime. Now it bounces at the first round failed once its monotonic
    age reached ``max_queue_age``, neither before nor later; so does the delay warning
    come at its own age."""
    clocks = Clocks()
    setup = _worker(tmp_path, clocks, [BUSY], max_queue_age=3600.0, delay_warning=1000.0)

    async def main() -> list[tuple[float, bool]]:
        entry = setup.queue.add(MESSAGE, "john@abc.example", [RECIPIENT])
        setup.worker.schedule(entry, new=True)
        start = clocks.mono
        await _next_round(setup, clocks, entry.id)
        clocks.wall += step
        seen: list[tuple[float, bool]] = []
        while not _queue_empty(setup) and len(seen) < 20:
            await _next_round(setup, clocks, entry.id)
            seen.append((clocks.mono - start, _reports(setup, b"Action: delayed") > 0))
        await setup.worker.aclose(1.0)
        return seen

    seen = asyncio.run(main())
    assert _queue_empty(setup)
    *kept, (bounced_at, _) = seen
    assert all(age < 3600 for age, _ in kept) and bounced_at >= 3600
    assert all(not warned for age, warned in seen if age < 1000)
    assert any(warned for age, warned in seen if age >= 1000)
    assert _reports(setup, b"Action: failed") == 1
    assert _attempts(setup).sent == 0


def test_a_next_attempt_far_ahead_on_disk_waits_the_longest_backoff_at_most(
    tmp_path: Path,
) -> None:
    """A queue file written before the clock stepped back (found at a restart) holds a
    next attempt as far ahead as the step: it is due after the longest backoff at most;
    one written as the backoff said keeps its time, one overdue is due at once."""
    clocks = Clocks()
    setup = _worker(tmp_path, clocks, [TAKEN])
    worker = setup.worker
    ahead = {"far": 2 * DAY, "near": 120.0, "overdue": -DAY}
    for name, seconds in ahead.items():
        entry = setup.queue.add(MESSAGE, "john@abc.example", [RECIPIENT])
        worker.schedule(replace(entry, next_attempt=clocks.wall + seconds))
        ahead[name] = worker._due.pop(entry.id) - clocks.mono
    assert ahead == {"far": LONGEST, "near": 120.0, "overdue": 0.0}


@pytest.mark.parametrize("ahead", [-DAY, 0.0, 60.0, 2 * DAY])
def test_a_message_turned_away_by_a_full_destination_waits_for_a_place(
    tmp_path: Path, ahead: float
) -> None:
    """Not due before its next attempt nor :attr:`place_retry`, whichever comes first:
    with a next attempt already come, it was due at once (the clock read twice, a few
    nanoseconds apart), and its rounds came one after another while it waited."""
    clocks = Clocks()
    setup = _worker(tmp_path, clocks, [TAKEN])
    worker = setup.worker
    entry = setup.queue.add(MESSAGE, "john@abc.example", [RECIPIENT])
    real = time.monotonic
    worker.monotonic = real  # each reading a little later than the one before
    worker._schedule_for_places(replace(entry, next_attempt=clocks.wall + ahead))
    wait = worker._due[entry.id] - real()
    expected = worker.place_retry if ahead <= 0 else min(ahead, worker.place_retry)
    assert expected - 1 <= wait <= expected


def test_a_message_stamped_in_the_future_expires_a_lifetime_after_it_is_found(
    tmp_path: Path,
) -> None:
    """Its arrival is ahead of the wall clock (stepped back before a restart): its age
    counts from 0 when the worker first sees it, so it is neither expired nor kept for
    ever."""
    clocks = Clocks()
    setup = _worker(tmp_path, clocks, [BUSY])
    entry = setup.queue.add(MESSAGE, "john@abc.example", [RECIPIENT])
    clocks.wall -= DAY
    setup.worker.schedule(entry)
    assert setup.worker.age(entry) == 0
    clocks.mono += 600
    clocks.wall -= DAY  # stepped again: no matter
    assert setup.worker.age(entry) == 600


def test_the_queue_listing_shows_no_negative_age_after_a_step_back(tmp_path: Path) -> None:
    clocks = Clocks()
    setup = _worker(tmp_path, clocks, [BUSY])
    entry = setup.queue.add(MESSAGE, "john@abc.example", [RECIPIENT])
    first, *_ = format_listing(setup.queue, clocks.wall - DAY)
    assert first.startswith(entry.id) and "age 0s" in first


# -- the worker running ---------------------------------------------------------------


@pytest.mark.parametrize("step", [-DAY, DAY], ids=["back", "forward"])
def test_the_running_worker_retries_on_time_whatever_the_wall_clock_does(
    tmp_path: Path, step: float
) -> None:
    """:meth:`DeliveryWorker.run` on the real monotonic clock, the wall clock stepped a
    day at every attempt: a step back held the first retry for a day (the test's bound
    ran out), a step forward made it due at once and expired the message. Each retry
    now comes after its backoff, and the message is delivered once."""
    clocks = Clocks()
    wait = 0.2
    setup = _setup(
        tmp_path, ZONE, 25, retry_after=wait, clock=lambda: clocks.wall, monotonic=time.monotonic
    )
    worker = setup.worker
    worker.max_retry_after = wait
    worker.max_queue_age = 3600.0
    when: list[float] = []
    script = [BUSY, BUSY, TAKEN]

    async def attempt(entry: object, decision: object, content: object) -> Outcome:
        when.append(time.monotonic())
        clocks.wall += step
        return script.pop(0)

    worker._deliver_local = attempt  # type: ignore[method-assign]  # a stand-in

    async def main() -> None:
        entry = setup.queue.add(MESSAGE, "john@abc.example", [RECIPIENT])
        worker.schedule(entry, new=True)
        task = asyncio.get_running_loop().create_task(worker.run())
        try:
            for _ in range(500):  # 10 s at most
                if _queue_empty(setup):
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await worker.aclose(1.0)

    asyncio.run(main())
    assert _queue_empty(setup) and not script and setup.bounces() == []
    assert len(when) == 3
    assert all(later - earlier >= wait * 0.9 for earlier, later in itertools.pairwise(when))


# -- the clocks a worker is given -----------------------------------------------------


def test_a_worker_given_only_a_wall_clock_still_waits_on_the_monotonic_clock(
    tmp_path: Path,
) -> None:
    """A ``clock=`` given alone once drove the waits too, and so turned the protection
    against steps off without a word: the monotonic clock is always
    :func:`time.monotonic` unless ``monotonic=`` says otherwise."""
    setup = _setup(tmp_path, ZONE, 25)
    worker = DeliveryWorker(
        setup.queue,
        router=Router(["abc.example"], hostnames=["mx.abc.example"]),
        resolver=StaticResolver.from_zone_text(ZONE),
        mailboxes=setup.mailboxes,
        hostname="mx.abc.example",
        clock=lambda: 1e9,
    )
    assert worker.monotonic is time.monotonic


# -- what the worker keeps per message --------------------------------------------------


async def _round(setup: Setup, queue_id: str) -> None:
    """The round of ``queue_id`` begun as :meth:`DeliveryWorker.run` begins it, to its
    end (its ``_done`` included)."""
    setup.worker._due.pop(queue_id)
    setup.worker._begin_round(queue_id)
    await setup.worker._running[queue_id]
    await asyncio.sleep(0)


@pytest.mark.parametrize("leaves", ["delivered", "bounced", "deleted", "held", "gone", "vanished"])
def test_a_message_leaving_the_schedule_leaves_no_age_behind(tmp_path: Path, leaves: str) -> None:
    """Ages were dropped only for a message delivered or deleted: one held (or whose
    file went while it was held) kept its age for the life of the process, and a
    release went on counting it. Each way out of the schedule now drops it, and a
    release measures it afresh by the wall clock."""
    clocks = Clocks()
    outcome = {"delivered": TAKEN, "bounced": BUSY}.get(leaves, BUSY)
    setup = _worker(tmp_path, clocks, [outcome], max_queue_age=0.0)
    worker = setup.worker

    async def main() -> None:
        entry = setup.queue.add(MESSAGE, "john@abc.example", [RECIPIENT])
        worker.schedule(entry, new=True)
        assert len(worker.ages) == 1
        if leaves == "vanished":  # its file removed by hand while it waited
            setup.queue.remove(entry.id)
        if leaves in ("delivered", "bounced", "vanished"):
            await _round(setup, entry.id)
            assert _queue_empty(setup)
        elif leaves == "deleted":
            await worker.actions.act(entry.id, "delete")
        else:
            await worker.actions.act(entry.id, "hold")
            if leaves == "gone":
                setup.queue.remove(entry.id)
        assert len(worker.ages) == 0
        if leaves == "held":
            clocks.mono += 3600
            clocks.wall -= DAY  # a step back while it was held
            await worker.actions.act(entry.id, "release")
            assert len(worker.ages) == 1 and worker.age(entry) == 0  # measured afresh
        await worker.aclose(1.0)

    asyncio.run(main())


async def _opened(setup: Setup, queue_id: str) -> bool:
    """Whether the round of ``queue_id`` opened now would be early."""
    round_ = await setup.worker._open_round(await setup.worker._load(queue_id))
    assert round_ is not None
    return round_.early


@pytest.mark.parametrize("step", [-DAY, -60.0, 0.0, DAY])
def test_a_round_on_time_is_not_early_whatever_the_wall_clock_did(
    tmp_path: Path, step: float
) -> None:
    """After a step back, a round begun at its due time compared the stored next attempt
    with the wall clock and passed for a ``queue flush``: a round that could try no one
    counted no attempt, and the backoff stood still. The monotonic clock decides now;
    a flush is still early."""
    clocks = Clocks()
    setup = _worker(tmp_path, clocks, [BUSY])
    worker = setup.worker

    async def main() -> tuple[bool, bool]:
        on_time, flushed = (
            setup.queue.add(MESSAGE, "john@abc.example", [RECIPIENT]) for _ in "ab"
        )
        for entry in (on_time, flushed):
            worker.schedule(entry, new=True)
            await _next_round(setup, clocks, entry.id)  # deferred: due RETRY later
        clocks.wall += step
        worker.bring_forward(await worker._load(flushed.id))  # queue flush, before it is due
        early_flush = await _opened(setup, flushed.id)
        waited = worker._due.pop(on_time.id) - clocks.mono
        clocks.mono += waited
        clocks.wall += waited
        early_on_time = await _opened(setup, on_time.id)
        await worker.aclose(1.0)
        return early_on_time, early_flush

    assert asyncio.run(main()) == (False, True)


def test_failed_exchangers_are_remembered_on_the_workers_monotonic_clock(
    tmp_path: Path,
) -> None:
    """The memory of failed exchangers read :func:`time.monotonic` itself, whatever clock
    the worker was given: a test could not move its hour on."""
    clocks = Clocks()
    worker = _worker(tmp_path, clocks, [TAKEN]).worker
    worker.failures.mark_bad("mx.pqr.example")
    assert worker.failures.is_bad("mx.pqr.example")
    clocks.mono += 2 * 3600
    assert not worker.failures.is_bad("mx.pqr.example")
