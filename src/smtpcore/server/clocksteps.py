"""Waits and ages that a step of the wall clock neither stretches nor shrinks.

The queue files keep wall-clock times (``created``, ``next_attempt``): only they
mean anything after a restart. But the wall clock can step (NTP, ``date -s``, an
operator setting it right). Waiting for a wall-clock time then goes wrong both
ways: a step back of a day held every retry a day longer, a step forward made
the whole queue due at once and expired messages early. RFC 5321 §4.5.4.1 asks a
sender to wait after a failed attempt and to keep trying for days (the give-up time
"generally needs to be at least 4-5 days"), both as the operator configured: a step
is no reason to wait or retry less, or more.

So the delivery worker waits on the monotonic clock (the one the event loop's
``time()`` reads), and reads the wall clock only to turn a stored time into a
wait, once, when it schedules the entry (:func:`wait_until`); and it measures a
message's age on the monotonic clock from when this process first saw it
(:class:`MessageAges`). What a step made while the server was down cannot be seen
(the wall clock is all there is across a restart); it is bounded all the same: a
stored next attempt counts as at most the longest backoff away.

Pure bookkeeping: both clocks are passed in.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["MessageAges", "wait_until"]


def wait_until(stored: float, now: float, longest: float) -> float:
    """Seconds from the wall-clock ``now`` to the stored wall-clock time ``stored``,
    between 0 and ``longest``. No wait the worker writes is longer than its longest
    backoff, so a time further ahead was written before the clock stepped back, and
    waiting for it would hold the message as long as the step: it waits ``longest``
    at most."""
    return min(max(stored - now, 0.0), max(longest, 0.0))


class MessageAges:
    """How long each message has been queued, step-free: its age by the wall clock
    when the worker schedules it (:meth:`see`: ``created`` against ``wall()``, never
    below 0), then what the ``monotonic`` clock counts from there. A step forward thus never
    expires a message early, nor a step back keeps one past ``max_queue_age``; a
    message stamped in the future (a clock stepped back before a restart) starts at
    age 0, and gets its whole lifetime from then.

    One number per scheduled message; :meth:`forget` drops it when the message leaves
    the schedule (delivered, bounced, deleted, held, gone), so memory follows the
    schedule, and a message released from hold is measured afresh, as after a
    restart. The count holds within one run of the process: a restart measures by the
    wall clock again."""

    def __init__(self, wall: Callable[[], float], monotonic: Callable[[], float]) -> None:
        self.wall = wall
        self.monotonic = monotonic
        self._born: dict[str, float] = {}
        """Per message, the monotonic time at which its age was 0."""

    def see(self, queue_id: str, created: float) -> None:
        """Start counting the age of ``queue_id``, stamped ``created`` on arrival, unless
        it is counted already."""
        if queue_id not in self._born:
            self._born[queue_id] = self.monotonic() - self._wall_age(created)

    def age(self, queue_id: str, created: float) -> float:
        """Seconds ``queue_id``, stamped ``created`` on arrival, has been queued; by the
        wall clock alone (never below 0) for a message not seen."""
        born = self._born.get(queue_id)
        if born is None:
            return self._wall_age(created)
        return self.monotonic() - born

    def _wall_age(self, created: float) -> float:
        return max(self.wall() - created, 0.0)

    def forget(self, queue_id: str) -> None:
        self._born.pop(queue_id, None)

    def __len__(self) -> int:
        return len(self._born)
