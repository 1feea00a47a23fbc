"""The delivery worker's destination jobs: a round's remote recipients, one job per
destination at once, each taking a place there and a session token before its
sessions run (:class:`_DestinationJobs`, a base class of
:class:`~smtpcore.server.delivery.DeliveryWorker`). Apart because it is where the
bounds on outbound sessions (per destination, for the worker, suspended destinations)
meet a round; the sessions themselves are :mod:`~smtpcore.server.outbound`'s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING

from smtpcore.routing import RemoteDelivery
from smtpcore.server._delivery_envelope import _EnvelopeKeeping
from smtpcore.server._delivery_round import _all_finished, _Round
from smtpcore.server._exchanger_outcomes import Outcome
from smtpcore.server._exchanger_recording import Recorder
from smtpcore.server.activemarks import MarksWriter
from smtpcore.server.cutshort import RoundProgress
from smtpcore.server.deadhops import DeadHops
from smtpcore.server.log import loggable, logger
from smtpcore.server.outbound import OutboundDelivery
from smtpcore.server.places import DestinationPlaces
from smtpcore.server.queue import QueuedContent, QueueEntry
from smtpcore.server.settlement import RoundSettlement, local_error
from smtpcore.server.tokens import SessionTokens

__all__ = ["_DestinationJobs"]


class _DestinationJobs(_EnvelopeKeeping):
    """The remote part of the worker's rounds, bounded by :attr:`places`,
    :attr:`_sessions` and :attr:`dead_hops` (the class docstring of
    :class:`~smtpcore.server.delivery.DeliveryWorker` tells the whole scheduler)."""

    places: DestinationPlaces
    dead_hops: DeadHops
    settlement: RoundSettlement
    outbound: OutboundDelivery
    marks_writer: MarksWriter
    destination_concurrency: int
    _sessions: SessionTokens
    _in_round: dict[str, Callable[[str], bool]]

    if TYPE_CHECKING:  # the scheduler's (_Scheduling) and the round's (_MessageRounds)

        def _withdraw(self, queue_id: str, places: Collection[str]) -> None: ...

        def _give_back(self, place: str) -> None: ...

        async def _record(self, round_: _Round, outcomes: Mapping[str, Outcome]) -> None: ...

    async def _deliver_destinations(
        self,
        round_: _Round,
        remote: Mapping[str, Mapping[str, Mapping[str, RemoteDelivery]]],
        content: QueuedContent,
    ) -> None:
        """Run one job per destination of ``remote`` that has a place, at once, and wait
        for them all, a failed one never cutting its siblings short; a job at a
        destination whose place is handed over meanwhile starts then. Each outcome an
        exchanger gives is put in the entry (and :attr:`_unsaved`) before any await, and
        its write handed to a thread at once
        (:meth:`~smtpcore.server._delivery_envelope._EnvelopeKeeping._write`). Then what a
        job raised is raised, as the domains delivered one after another raised it."""
        queue_id = round_.entry.id
        jobs: set[asyncio.Task[None]] = set()
        started: set[str] = set()
        loop = asyncio.get_running_loop()

        async def record(outcomes: Mapping[str, Outcome]) -> None:
            await self._record(round_, outcomes)

        def start(place: str) -> bool:
            if round_.withdrawn.done() or place not in remote or place in started:
                return False
            expired = self.settlement.expired(round_.entry)
            admission = self.dead_hops.admit(place, exempt=expired)
            if admission.deferral is not None:  # suspended: no place taken, no session
                started.add(place)
                addresses = [a for d in remote[place].values() for a in d]
                waits = self._wait_suspended(round_, place, addresses, admission.deferral, record)
                jobs.add(loop.create_task(waits))
                return True
            joins = not self.places.in_line(place, queue_id)
            if not self.places.take(place, queue_id):
                self.dead_hops.job_over(place, admission)  # a probe turned away probes not
                if joins:
                    self._log_waiting(queue_id, place)
                return False
            started.add(place)
            round_.progress.begin(a for d in remote[place].values() for a in d)
            job = loop.create_task(
                self._destination_job(round_, place, remote[place], content, record)
            )

            def ended(_: object) -> None:
                self.dead_hops.job_over(place, admission)
                self._give_back(place)

            # A callback, not the job's finally: a job cancelled before its first step
            # runs no code of its own, and its place (or its probe) would never end.
            job.add_done_callback(ended)
            jobs.add(job)
            return True

        for place in remote:
            start(place)
        self._in_round[queue_id] = start
        try:
            await _all_finished(jobs)
        finally:
            del self._in_round[queue_id]

    async def _wait_suspended(
        self,
        round_: _Round,
        place: str,
        addresses: list[str],
        deferral: Outcome,
        record: Recorder,
    ) -> None:
        """``round_``'s recipients ``addresses`` at the suspended destination ``place``
        wait, with ``deferral``, without a session (:attr:`dead_hops`). The message
        leaves that destination's line: it has nothing to wait for there until its next
        round, and a place handed to it goes on to the next in line (from this task,
        not from the round's ``start``, which a handover calls: no recursion down the
        line). Withdrawn (:meth:`_cut_round_short`) before this task's first step, its
        recipients stay untouched, as a session job's would."""
        self._withdraw(round_.entry.id, [place])
        if round_.withdrawn.done():
            self._log_withdrawn(round_, [place])
            return
        round_.untried.update(addresses)
        await record(dict.fromkeys(addresses, deferral))

    async def _destination_job(
        self,
        round_: _Round,
        place: str,
        domains: Mapping[str, Mapping[str, RemoteDelivery]],
        content: QueuedContent,
        record: Recorder,
    ) -> None:
        """One destination's part of a round, holding one session token: its domains
        one after another (several go through one smart host), so a job has one session
        open at a time. Its place there is given back when the job's task is done,
        whatever ended it (:meth:`_deliver_destinations`). Withdrawn
        (:meth:`_cut_round_short`) while it waits for its token, or as the token comes
        (the withdrawal is seen only once this job runs again), it ends, its recipients
        untouched; withdrawn during a domain's session, it opens no session for the
        domains after it, whose recipients stay pending, not attempted. Let through
        (:attr:`dead_hops`), it stops once the destination is suspended
        (by its own failures or others'): the domains not yet begun wait without a
        session, unless the message is past its lifetime by then (a session may outlast
        it): each is tried for real."""
        if not await self._sessions.take(round_.withdrawn):
            self._log_withdrawn(round_, domains)
            return
        try:
            with self.marks_writer.session(round_.entry.id) as begin:
                begin()  # the token is held
                names = list(domains)
                for number, (domain, deliveries) in enumerate(domains.items()):
                    if round_.withdrawn.done():
                        self._log_withdrawn(round_, names[number:])
                        return
                    expired = self.settlement.expired(round_.entry)
                    deferral = self.dead_hops.halted(place, exempt=expired)
                    if deferral is not None:
                        rest = [a for d in names[number:] for a in domains[d]]
                        round_.untried.update(rest)
                        await record(dict.fromkeys(rest, deferral))
                        return
                    await self._deliver_domain(round_, domain, deliveries, content, record)
        finally:
            self._sessions.give_back()

    def _log_waiting(self, queue_id: str, place: str) -> None:
        """``queue_id`` has just joined ``place``'s line: said once, as it joins, not at
        each round that finds it still there (every :attr:`place_retry` seconds), nor at
        the end of a round whose message a ``hold`` or ``delete`` took out of the line.
        It is said again only if the message joins again (released, or turned away
        after a place it was handed)."""
        logger.info(
            "%s: waiting for a place at %s (destination concurrency %d)",
            queue_id,
            loggable(place),
            self.destination_concurrency,
        )

    @staticmethod
    def _log_withdrawn(round_: _Round, domains: Iterable[str]) -> None:
        logger.info(
            "%s: delivery to %s withdrawn before its session (queue hold or delete)",
            round_.entry.id,
            loggable(", ".join(domains)),
        )

    async def _deliver_domain(
        self,
        round_: _Round,
        domain: str,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        record: Recorder,
    ) -> None:
        """One domain's recipients (:meth:`_deliver_remote`). Its trouble (a hostile DNS
        answer, a bug) is its recipients' alone: they wait with the error, the other
        domains' are sent, bounced or deferred on their own; a message gone is raised."""
        try:
            await self._deliver_remote(round_.entry, deliveries, content, record, round_.progress)
        except Exception as exc:
            if await self._gone(round_.entry.id, exc):
                raise
            logger.exception("%s: delivery to %s failed; retrying later", round_.entry.id, domain)
            done = {r.address for r in round_.entry.recipients if not r.pending}
            done |= round_.failed.keys() | round_.deferred.keys()
            await record({a: local_error(exc) for a in deliveries if a not in done})

    async def _deliver_remote(
        self,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        record: Recorder,
        progress: RoundProgress | None = None,
    ) -> None:
        """Deliver one domain's recipients, each exchanger's sent and bounced ones given
        to ``record`` as soon as it answers (before its QUIT, before the next exchanger
        is tried: the module docstring's "recorded so at once"), the deferred ones once
        no exchanger is left. Where they are goes in ``progress``."""
        await record(await self.outbound.outcomes(entry, deliveries, content, record, progress))
