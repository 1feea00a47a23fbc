"""One delivery round of one message, as the worker's local stage and destination jobs
share it: what it has done so far, whether it counts as an attempt, and how it waits
for all its jobs. Apart from the scheduler, which only begins and ends rounds."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from smtpcore.server._exchanger_outcomes import Outcome
from smtpcore.server.cutshort import RoundProgress
from smtpcore.server.queue import QueuedContent, QueueEntry

__all__ = ["_Round", "_all_finished", "_counts"]


@dataclass(slots=True)
class _Round:
    """One round of one message, as its local stage and destination jobs share it: the
    entry as the outcomes so far leave it, the recipients that failed or wait, and
    whether an operator's action cut it short."""

    entry: QueueEntry
    failed: dict[str, Outcome]
    deferred: dict[str, Outcome]
    withdrawn: asyncio.Future[None]
    """Done once the round is cut short (:meth:`DeliveryWorker._cut_round_short
    <smtpcore.server.delivery.DeliveryWorker._cut_round_short>`)."""
    content: QueuedContent
    catch_up: bool
    """Whether it delivers only at the destinations where places were handed to it."""
    progress: RoundProgress = field(default_factory=RoundProgress)
    """How far its recipients have come, for the lines a stop logs."""
    early: bool = False
    """Whether it began before the message's full round was due by the monotonic clock
    (the operator's ``queue flush``); a step of the wall clock makes none early."""
    untried: set[str] = field(default_factory=set)
    """The recipients that waited on a suspended destination, without a session
    (:mod:`smtpcore.server.deadhops`)."""


def _counts(round_: _Round) -> bool:
    """Whether ``round_`` is an attempt, moving the message's backoff on: not a catch-up
    round, nor an early one (begun before its full round was due on the monotonic
    clock: a ``queue flush``) that tried none of those it deferred, all of them
    waiting on a suspension still in force: that message keeps the attempts and the
    next attempt it had, as if the flush had not found it. A round begun on time
    counts whatever the wall clock did."""
    if round_.catch_up:
        return False
    return not (round_.early and round_.deferred.keys() <= round_.untried)


async def _all_finished(jobs: set[asyncio.Task[None]]) -> None:
    """Wait for every one of ``jobs``, those added meanwhile too, never cancelling one
    because another failed (it may be in the middle of a transaction); then raise the
    first error among them, or a cancellation that came to one of them (a stray one:
    :meth:`~smtpcore.server.delivery.DeliveryWorker._process` takes it for a broken
    round). Cancelled itself (a stop), it cancels them all, and waits for them: no job
    outlives its round."""
    try:
        while unfinished := [job for job in jobs if not job.done()]:
            await asyncio.wait(unfinished)
    except BaseException:
        while unfinished := [job for job in jobs if not job.done()]:
            for job in unfinished:
                job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait(unfinished)
        raise
    errors = [job.exception() for job in jobs if not job.cancelled()]
    for error in errors:
        if error is not None:
            raise error
    if any(job.cancelled() for job in jobs):
        raise asyncio.CancelledError()
