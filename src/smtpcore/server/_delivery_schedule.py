"""The delivery worker's scheduler: when each queued message's next round begins, and
how places at full destinations are handed on (:class:`_Scheduling`, a base class of
:class:`~smtpcore.server.delivery.DeliveryWorker`). Apart because it only begins and
ends rounds, and holds every due time: what a round does is
:mod:`~smtpcore.server._delivery_message`'s.

Every due time here is on the :attr:`monotonic` clock, so that a step of the wall
clock neither holds the queue nor makes it all due at once; a queue file's
wall-clock ``next_attempt`` becomes a wait once, as it is scheduled
(:mod:`~smtpcore.server.clocksteps`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from smtpcore.routing import RandomSource
from smtpcore.server.backoff import backoff
from smtpcore.server.clocksteps import MessageAges, wait_until
from smtpcore.server.places import DestinationPlaces
from smtpcore.server.queue import QueueEntry
from smtpcore.server.queueactions import QueueActions
from smtpcore.server.waits import within

__all__ = ["_Scheduling"]


class _Scheduling:
    """The worker's due times and rounds under way: :meth:`run` begins each round when
    its message is due, up to ``active_limit`` at once (the class docstring of
    :class:`~smtpcore.server.delivery.DeliveryWorker` tells the whole scheduler)."""

    places: DestinationPlaces
    actions: QueueActions
    clock: Callable[[], float]
    monotonic: Callable[[], float]
    ages: MessageAges
    rng: RandomSource
    retry_after: float
    max_retry_after: float
    active_limit: int
    place_retry: float
    _due: dict[str, float]
    _running: dict[str, asyncio.Task[None]]
    _withdrawals: dict[str, asyncio.Future[None]]
    _catch_up_until: dict[str, float]
    _full_due: dict[str, float]
    _in_round: dict[str, Callable[[str], bool]]
    _wakeup: asyncio.Event | None
    _copies_begun: dict[str, set[str]]

    if TYPE_CHECKING:  # the round itself: _MessageRounds's

        async def _process(self, queue_id: str) -> None: ...

    def schedule(self, entry: QueueEntry, *, new: bool = False) -> None:
        """Deliver ``entry`` at its ``next_attempt`` (now, for a new message). ``new``:
        this process has just queued it, so none of its local copies exists yet."""
        if new:
            self._copies_begun.setdefault(entry.id, set())
        self._catch_up_until.pop(entry.id, None)
        self.ages.see(entry.id, entry.created)
        self._due[entry.id] = self._full_due[entry.id] = self._due_time(entry.next_attempt)
        self._wake()

    def bring_forward(self, entry: QueueEntry) -> None:
        """Deliver ``entry`` now (``queue flush``), its full round still due at its
        ``next_attempt``: the round is early, and one that could try none of those it
        deferred counts no attempt (:func:`~smtpcore.server._delivery_round._counts`).
        A full round already scheduled keeps its time: the file's, read again, is off by
        any step of the wall clock since."""
        full = self._full_due.get(entry.id)
        self.schedule(entry)
        if full is not None:
            self._full_due[entry.id] = full
        self._due[entry.id] = self.monotonic()

    def _due_time(self, next_attempt: float) -> float:
        """The monotonic time of the wall-clock ``next_attempt`` (:meth:`waits_for`)."""
        return self.monotonic() + self.waits_for(next_attempt)

    def waits_for(self, next_attempt: float) -> float:
        """Seconds until the wall-clock ``next_attempt`` a queue file holds, never more
        than the longest backoff (:func:`~smtpcore.server.clocksteps.wait_until`): one
        further ahead was written before the clock stepped back."""
        longest = max(self.retry_after, self.max_retry_after)
        return wait_until(next_attempt, self.clock(), longest)

    def age(self, entry: QueueEntry) -> float:
        """Seconds ``entry`` has been queued, whatever the wall clock did meanwhile
        (:class:`~smtpcore.server.clocksteps.MessageAges`): what its expiry and its
        delay warning go by."""
        return self.ages.age(entry.id, entry.created)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _schedule_for_places(self, entry: QueueEntry) -> None:
        """``entry`` waits for a place at some destination: it runs again when one is
        handed to it (:meth:`_hand_over`), or after :attr:`place_retry` at the latest,
        never before its next full round is due if that is sooner. Until then, a round
        delivers only where it waited (:attr:`_catch_up_until`)."""
        now = self.monotonic()
        retry = now + self.place_retry
        full = now + self.waits_for(entry.next_attempt)  # one reading: due now is not > now
        due = min(full, retry) if full > now else retry
        self._catch_up_until[entry.id] = self._full_due[entry.id] = full
        self._due[entry.id] = now if self.places.handed(entry.id) else due
        self._wake()

    def _give_back(self, place: str) -> None:
        """A session at ``place`` ended: its place goes on (:meth:`_hand_over`)."""
        self._hand_over(place, self.places.give_back(place))

    def _hand_over(self, place: str, heir: str | None) -> None:
        """A place at ``place`` was handed to ``heir``: its round starts the job there if
        it still runs, else the message is due now, for a round that takes the place up
        (delivering only where it waited if its full round is not due yet)."""
        if heir is None:
            return
        start = self._in_round.get(heir)
        if start is not None and start(place):
            return
        due = self._due.get(heir)
        if due is not None:
            now = self.monotonic()
            if due > now:
                self._catch_up_until.setdefault(heir, due)
            self._due[heir] = min(due, now)
            self._wake()

    def _withdraw(self, queue_id: str, places: Collection[str]) -> None:
        """``queue_id`` waits no longer at ``places``; what was handed to it goes on."""
        for place in places:
            self._hand_over(place, self.places.withdraw(queue_id, place))

    def _forget_places(self, queue_id: str) -> None:
        """``queue_id`` left the schedule (delivered, held, deleted, gone)."""
        self._withdraw(queue_id, self.places.awaited_by(queue_id))
        self._catch_up_until.pop(queue_id, None)

    def _forget_if_unscheduled(self, queue_id: str) -> None:
        """Forget ``queue_id`` once nothing will run it (neither scheduled nor in a
        round: delivered, bounced, held, deleted, gone, or the disk refused), the one
        point where a message leaves the schedule. It leaves every destination's line:
        no round of it would take up a place handed to it, nor give it back, and the
        destination would be a place short for the life of the process. Its age goes
        too: what is kept for it stays bounded by the schedule, and a release measures
        it afresh (:class:`~smtpcore.server.clocksteps.MessageAges`)."""
        if queue_id not in self._due and queue_id not in self._running:
            self._forget_places(queue_id)
            self.ages.forget(queue_id)
            self._full_due.pop(queue_id, None)

    @property
    def queued(self) -> int:
        """Messages in the queue, in delivery or waiting."""
        return len(self._due) + len(self._running)

    async def run(self) -> None:
        """Deliver what is due, sleeping until the next due time or a new message."""
        self._wakeup = asyncio.Event()
        try:
            while True:
                self._wakeup.clear()
                now = self.monotonic()
                for queue_id, due in sorted(self._due.items(), key=lambda item: item[1]):
                    if len(self._running) >= self.active_limit:
                        break
                    if due <= now and queue_id not in self._running:
                        del self._due[queue_id]
                        self._begin_round(queue_id)
                waiting = [d for q, d in self._due.items() if q not in self._running]
                timeout = None
                if waiting and len(self._running) < self.active_limit:
                    timeout = max(min(waiting) - self.monotonic(), 0.0) + 0.01
                # within, not wait_for: on Python 3.11 wait_for loses a cancellation
                # that comes as the event is set (a round ending as the server stops),
                # and this loop then ran on, holding the stop for ever.
                with contextlib.suppress(asyncio.TimeoutError):
                    await within(self._wakeup.wait(), timeout)
        finally:
            self._wakeup = None

    def _begin_round(self, queue_id: str) -> None:
        loop = asyncio.get_running_loop()
        self._withdrawals[queue_id] = loop.create_future()
        task = loop.create_task(self._process(queue_id))
        self._running[queue_id] = task
        task.add_done_callback(functools.partial(self._done, queue_id))

    def _cut_round_short(self, queue_id: str) -> None:
        """An operator's ``hold`` or ``delete`` of ``queue_id`` while a round delivers it:
        the round's destination jobs not yet in a session are withdrawn. They leave the
        token line and give their places back, their recipients stay pending, not
        attempted (no attempt counted, no delay notice, no bounce), and no job starts
        in the round from now on: the round ends without waiting for a session, and
        the action is carried out at once. A job already in a session goes on, and the
        action waits for it (its recipients may be sent meanwhile). The message also
        leaves every destination's line at once, and a place handed to it goes on to
        the next in line: its withdrawn round would never take a place up, and the
        next message would wait as long as the session still under way. Released, it
        joins each line again at the back."""
        withdrawn = self._withdrawals.get(queue_id)
        if withdrawn is not None and not withdrawn.done():
            withdrawn.set_result(None)
            self._withdraw(queue_id, self.places.awaited_by(queue_id))

    def _done(self, queue_id: str, task: asyncio.Task[None]) -> None:
        self._running.pop(queue_id, None)
        self._withdrawals.pop(queue_id, None)
        if queue_id not in self._due:  # delivered, held or gone
            self._copies_begun.pop(queue_id, None)
        self._forget_if_unscheduled(queue_id)
        self.actions.round_ended(queue_id)
        if self._wakeup is not None:
            self._wakeup.set()

    def next_wait(self, attempts: int) -> float:
        """Seconds until the next round after ``attempts`` rounds left mail pending."""
        return backoff(self.retry_after, attempts, cap=self.max_retry_after, rng=self.rng)
