"""Next hops that do not answer: after a run of failed connections, a destination's
mail waits without connecting, until one probe finds the hop back.

Without this, every queued message opened its own connection to a dead next hop at
every retry: 2,000 messages made up to 2,000 connections a round, all failing the same
way. Postfix's queue manager marks such a destination dead after a failed cohort of
connections (``default_destination_concurrency_failed_cohort_limit``) and defers
everything queued for it without connecting ("delivery temporarily suspended"), until
a probe after ``minimal_backoff_time`` succeeds. So does this relay.

What counts is a failure of the hop itself, every exchanger of a domain tried: a
connection refused or timed out, or a 4xx (or 5xx, which waits) to the greeting, or a
4xx to EHLO and HELO. A refusal of a sender or a recipient is the hop answering, and
ends the run of failures, as any session that reached the mail transaction does. A 5xx
to EHLO and HELO everywhere bounces the mail at once (RFC 5321 §5.1) and is not a hop
that is down.

Pure bookkeeping, no I/O; the clock and the suspension's length are passed in. In
memory only: a restart forgets every suspension, as Postfix's does. Memory is bounded:
an entry is forgotten once it has been quiet for the longest wait between two attempts
of a message (``max_retry_after``, Postfix's ``maximal_backoff_time``) past its last
failure or its suspension's end (no mail has come for it since), and at most
``max_tracked`` destinations are kept, the longest quiet forgotten first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from smtpcore.server.exchanger import Outcome, kept_text
from smtpcore.server.log import loggable, logger
from smtpcore.server.queue import RecipientStatus

__all__ = ["DEAD_AFTER", "MAX_TRACKED", "Admission", "DeadHops", "suspended_outcome"]

DEAD_AFTER: Final = 5
"""Connection-level failures in a row after which a destination is suspended by
default: Postfix's first cohort (its initial destination concurrency, 5, failed
together, ``default_destination_concurrency_failed_cohort_limit = 1``)."""

MAX_TRACKED: Final = 10_000
"""Destinations whose failures are remembered at once by default: past that, the one
quiet longest is forgotten (its mail is tried again, at worst ``DEAD_AFTER`` times)."""


def suspended_outcome(error: Outcome) -> Outcome:
    """A recipient's outcome while its destination is suspended: it waits, its last
    error the hop's own, as Postfix words it (``delivery temporarily suspended: connect
    to ...``), so a delay warning or an expiry bounce still says what is wrong. The text
    is the relay's, no longer the exchanger's own words (RFC 3464 §2.3.6)."""
    return Outcome(
        RecipientStatus.PENDING,
        error.dsn,
        kept_text(f"delivery temporarily suspended: {error.detail}"),
        remote_mta=error.remote_mta,
    )


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a job may connect to its destination: ``deferral`` is its recipients'
    outcome when it may not; ``probe`` says it is the one job let through to see whether
    a suspended destination is back (:meth:`DeadHops.job_over` once it ends)."""

    deferral: Outcome | None = None
    probe: bool = False


@dataclass(slots=True)
class _Hop:
    failures: int
    error: Outcome
    quiet_since: float
    suspended_until: float | None = None
    probing: bool = False


class DeadHops:
    """The failure state of each destination (:func:`~smtpcore.server.places.destination`).

    ``suspension()`` is how long a suspension lasts, read at each one (the worker's
    ``retry_after``, Postfix's ``minimal_backoff_time``); ``dead_after`` failures in a row
    start one; the probe's failure starts another. ``memory()`` is how long a quiet
    entry is kept (the worker's ``max_retry_after``; never less than a suspension)."""

    def __init__(
        self,
        clock: Callable[[], float],
        suspension: Callable[[], float],
        memory: Callable[[], float],
        *,
        dead_after: int = DEAD_AFTER,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        if dead_after < 1 or max_tracked < 1:
            raise ValueError("dead_after and max_tracked must be at least 1")
        self.clock = clock
        self.suspension = suspension
        self.memory = memory
        self.dead_after = dead_after
        self.max_tracked = max_tracked
        self._hops: dict[str, _Hop] = {}
        """Oldest news first: each change moves its entry to the end."""

    def __len__(self) -> int:
        return len(self._hops)

    def suspended(self, place: str) -> Outcome | None:
        """The outcome its recipients wait with if ``place`` takes no connection now
        (suspended, or its probe under way); None if it may be tried. Asks only: a job
        that will connect calls :meth:`admit`."""
        hop = self._current(place)
        if hop is None or hop.suspended_until is None:
            return None
        if hop.probing or self.clock() < hop.suspended_until:
            return suspended_outcome(hop.error)
        return None

    def in_force(self, place: str) -> Outcome | None:
        """The outcome recipients wait with if a suspension of ``place`` is in force
        now, a probe out or not; None if not."""
        hop = self._current(place)
        if hop is None or hop.suspended_until is None or self.clock() >= hop.suspended_until:
            return None
        return suspended_outcome(hop.error)

    def halted(self, place: str, *, exempt: bool) -> Outcome | None:
        """The outcome a job let through gives the domains it has not begun, if
        ``place`` was suspended since (by its own failures, or the probe's renewal);
        None if it goes on. Through a smart host every domain of a message goes in one
        job, one session after another: it asks before each, saying each time whether
        the message is ``exempt``, past its lifetime by then (a session may outlast
        it), and tried for real whatever the destination's state, so that its bounce
        gives the hop's own error."""
        return None if exempt else self.in_force(place)

    def admit(self, place: str, *, exempt: bool = False) -> Admission:
        """Whether a job may connect to ``place`` now: the one decision, made as the job
        starts, before it takes a place there. Once a suspension has run out, the first
        job asking is its probe, and the others wait as before until it ends. An
        ``exempt`` job, whose message is past its lifetime, always may, and is no
        probe."""
        if exempt:
            return Admission()
        deferral = self.suspended(place)
        if deferral is not None:
            return Admission(deferral)
        hop = self._hops.get(place)
        if hop is None or hop.suspended_until is None:
            return Admission()
        hop.probing = True
        logger.info("%s: probing whether the destination is back", loggable(place))
        return Admission(probe=True)

    def job_over(self, place: str, admission: Admission) -> None:
        """The job let through by ``admission`` ended, or never began (turned away by a
        full destination): if it was the probe, the next job may probe."""
        if admission.probe:
            self.probe_over(place)

    def probe_over(self, place: str) -> None:
        """The probe of ``place`` ended, whatever it found (it may have made no
        connection at all: a DNS failure); the next job after it may probe again."""
        hop = self._hops.get(place)
        if hop is not None:
            hop.probing = False

    def failed(self, place: str, error: Outcome) -> None:
        """Every exchanger of a domain at ``place`` failed at the connection level, with
        ``error`` for the waiting recipients. The ``dead_after``-th such failure in a
        row suspends the destination; one after its suspension ran out (the probe's, or
        a session's begun before) suspends it again."""
        now = self.clock()
        hop = self._current(place)
        if hop is None:
            hop = _Hop(0, error, now)
        self._hops.pop(place, None)
        self._make_room()
        self._hops[place] = hop
        hop.failures += 1
        hop.error = error
        hop.quiet_since = now
        if hop.failures < self.dead_after:
            return
        if hop.suspended_until is not None and now < hop.suspended_until:
            return
        wait = self.suspension()
        hop.suspended_until = now + wait
        hop.quiet_since = hop.suspended_until
        logger.warning(
            "%s: delivery temporarily suspended for %.1fs after %d failed connections: %s",
            loggable(place),
            wait,
            hop.failures,
            loggable(error.detail),
        )

    def reached(self, place: str) -> None:
        """An exchanger at ``place`` answered (the session reached its mail transaction):
        its run of failures ends, and its suspension if it had one."""
        hop = self._hops.pop(place, None)
        if hop is not None and hop.suspended_until is not None:
            logger.info("%s: the destination answers again; suspension lifted", loggable(place))

    def forget_all(self, why: str) -> None:
        """Forget every destination's failures and suspensions: the operator asked for
        mail to be tried now (``why``: ``queue flush``), as Postfix's ``postqueue -f``
        first clears its dead destinations. A probe still out ends as any job, finding
        no entry."""
        if self._hops:
            logger.info("every suspended destination forgotten (%s)", why)
        self._hops.clear()

    def _current(self, place: str) -> _Hop | None:
        """``place``'s entry, forgotten first if it has been quiet too long."""
        hop = self._hops.get(place)
        if hop is not None and self._stale(hop):
            del self._hops[place]
            return None
        return hop

    def _stale(self, hop: _Hop) -> bool:
        """Quiet for :attr:`memory` past its last news (its suspension's end, if it had
        one), and no probe out: no mail has come for it since, nothing waits on it."""
        kept = max(self.memory(), self.suspension())
        return not hop.probing and self.clock() >= hop.quiet_since + kept

    def _make_room(self) -> None:
        """Room for a new entry: the stale ones at the front go (the entries are in the
        order of their last news), then the quietest while there are too many."""
        while self._hops:
            place, hop = next(iter(self._hops.items()))
            if len(self._hops) < self.max_tracked and not self._stale(hop):
                return
            del self._hops[place]
