"""One delivery round of one message, from its start to its settlement: its entry read,
each pending recipient routed, the local ones copied, then every remote destination at
once, then what the outcomes leave in the queue (:class:`_MessageRounds`, a base class
of :class:`~smtpcore.server.delivery.DeliveryWorker`). Apart from the scheduler, which
only begins and ends rounds (:mod:`~smtpcore.server._delivery_schedule`), and from the
local copies and destination jobs it hands recipients to
(:mod:`~smtpcore.server._delivery_local`, :mod:`~smtpcore.server._delivery_destinations`);
the record a round's parts share is :mod:`~smtpcore.server._delivery_round`'s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from smtpcore.address import AddressError, parse_mailbox
from smtpcore.routing import LocalDelivery, Rejected, RejectReason, RemoteDelivery, Router
from smtpcore.server._delivery_envelope import _EnvelopeKeeping
from smtpcore.server._delivery_refusals import _recipient_refusal, _sender_refusal
from smtpcore.server._delivery_round import _counts, _Round
from smtpcore.server._exchanger_outcomes import Outcome
from smtpcore.server.cutshort import cut_short_outcomes
from smtpcore.server.log import loggable, logger, printable
from smtpcore.server.places import DestinationPlaces, destination
from smtpcore.server.queue import QueuedContent, QueueEntry
from smtpcore.server.reports import SenderReports
from smtpcore.server.settlement import RoundSettlement, rejected_outcome
from smtpcore.server.waits import stray_cancellation

__all__ = ["_MessageRounds"]


class _MessageRounds(_EnvelopeKeeping):
    """The worker's rounds, one message each: :meth:`_process` is what the scheduler
    runs in a round's task (the class docstring of
    :class:`~smtpcore.server.delivery.DeliveryWorker` tells the whole scheduler)."""

    router: Router
    places: DestinationPlaces
    settlement: RoundSettlement
    reports: SenderReports
    monotonic: Callable[[], float]
    _catch_up_until: dict[str, float]
    _full_due: dict[str, float]
    _withdrawals: dict[str, asyncio.Future[None]]

    if TYPE_CHECKING:  # the scheduler's, the local copies' and the destination jobs'

        def _withdraw(self, queue_id: str, places: Collection[str]) -> None: ...

        def _forget_places(self, queue_id: str) -> None: ...

        async def _deliver_local(
            self, entry: QueueEntry, decision: LocalDelivery, content: QueuedContent
        ) -> Outcome: ...

        async def _deliver_destinations(
            self,
            round_: _Round,
            remote: Mapping[str, Mapping[str, Mapping[str, RemoteDelivery]]],
            content: QueuedContent,
        ) -> None: ...

    async def _process(self, queue_id: str) -> None:
        entry: QueueEntry | None = None
        round_: _Round | None = None
        try:
            entry = await self._load(queue_id)
            round_ = await self._open_round(entry)
            if round_ is not None:
                await self._deliver_round(round_)
        except asyncio.CancelledError as exc:
            if not stray_cancellation():
                # A stop, wherever in the round it landed: a success report owed is on
                # disk (the next start makes it), and each recipient it left pending
                # with no line gets one.
                if round_ is not None:
                    self._log_cut_short(round_)
                raise
            # Some future other code cancelled (a library's, a hook's): a broken round
            # like any other, or the message would wait unscheduled until a restart.
            logger.exception(
                "%s: delivery failed (a stray cancellation); retrying later", queue_id
            )
            self._forget_places(queue_id)
            await self.reports.report_owed(queue_id)
            await self.settlement.record_local_error(queue_id, exc)
        except Exception as exc:
            if await self._gone(queue_id, exc):
                logger.warning("%s: gone from the queue directory; forgotten", queue_id)
                self._unsaved.pop(queue_id, None)
                return
            if entry is None:  # its queue file unread: no report or outcome to record
                self._forget_places(queue_id)
                self.settlement.retry_unopened(queue_id, exc)
                return
            logger.exception("%s: delivery failed; retrying later", queue_id)
            self._forget_places(queue_id)
            await self.reports.report_owed(queue_id)
            await self.settlement.record_local_error(queue_id, exc)

    async def _open_round(self, entry: QueueEntry) -> _Round | None:
        """The round of ``entry`` (just loaded) about to begin, before anything is
        delivered (a stop anywhere in it finds what it had done: :meth:`_log_cut_short`);
        None if the message is held. A catch-up round, begun for a place handed to the
        message before its next attempt is due, delivers only at the destinations it
        waited for, and counts no attempt."""
        queue_id = entry.id
        if entry.held:
            logger.info("%s: on hold; not delivered until released", entry.id)
            return None
        content = self.queue.content(queue_id)
        if not await self.disk.run(content.path.exists):
            raise FileNotFoundError(content.path)
        now = self.monotonic()
        catch_up = now < self._catch_up_until.pop(queue_id, float("-inf"))
        early = now < self._full_due.pop(queue_id, float("-inf"))  # never by the wall clock
        withdrawn = self._withdrawals.get(queue_id) or asyncio.get_running_loop().create_future()
        return _Round(entry, {}, {}, withdrawn, content, catch_up, early=early)

    async def _deliver_round(self, round_: _Round) -> None:
        """One round: its local recipients, then each remote destination at once (the
        class docstring's scheduler)."""
        queue_id = round_.entry.id
        content = round_.content
        remote: dict[str, dict[str, dict[str, RemoteDelivery]]] = {}
        refused_sender = _sender_refusal(round_.entry.sender)
        round_.progress.plan(self._planned(round_, refused_sender))
        for recipient in round_.entry.pending:
            refused = _recipient_refusal(recipient.address)
            decision = self._route(recipient.address)
            if refused is None and refused_sender is None and isinstance(decision, RemoteDelivery):
                domains = remote.setdefault(destination(decision), {})
                domains.setdefault(decision.domain, {})[recipient.address] = decision
                continue
            if round_.catch_up:
                continue  # delivered in its full round
            if refused is not None:
                logger.warning(
                    "%s: queued recipient <%s> no longer parses: failed, %s; the postmaster "
                    "is told whatever NOTIFY asked",
                    queue_id,
                    loggable(recipient.address),
                    refused.detail,
                )
                outcome = refused
            elif isinstance(decision, RemoteDelivery):
                assert refused_sender is not None  # else it went to ``remote`` above
                outcome = refused_sender
            elif isinstance(decision, LocalDelivery):
                round_.progress.trying([recipient.address], "local")
                outcome = await self._deliver_local(round_.entry, decision, content)
            else:
                outcome = rejected_outcome(decision)
            await self._record(round_, {recipient.address: outcome})
        awaited = self.places.awaited_by(queue_id)
        if round_.catch_up:
            remote = {place: domains for place, domains in remote.items() if place in awaited}
        self._withdraw(queue_id, awaited - remote.keys())  # its recipients there are gone
        await self._deliver_destinations(round_, remote, content)
        await self.settlement.finish_round(
            round_.entry,
            content,
            round_.failed,
            round_.deferred,
            counts=_counts(round_),
            progress=round_.progress,
        )

    def _planned(self, round_: _Round, refused_sender: Outcome | None) -> list[str]:
        """The recipients ``round_`` is to deliver, before it comes to any: every pending
        one, or in a catch-up round those at the destinations the message waited for
        (its others wait for its full round)."""
        if not round_.catch_up:
            return [r.address for r in round_.entry.pending]
        awaited = self.places.awaited_by(round_.entry.id)
        planned = []
        for recipient in round_.entry.pending:
            decision = self._route(recipient.address)
            if (
                isinstance(decision, RemoteDelivery)
                and refused_sender is None
                and _recipient_refusal(recipient.address) is None
                and destination(decision) in awaited
            ):
                planned.append(recipient.address)
        return planned

    async def _record(self, round_: _Round, outcomes: Mapping[str, Outcome]) -> None:
        """Put ``outcomes`` in the round's entry before any await (a stop in the write
        finds them there), then write what was sent (:meth:`_save`)."""
        entry, sent = self.settlement.apply_outcomes(
            round_.entry, outcomes, round_.failed, round_.deferred
        )
        round_.entry = entry
        if sent:
            await self._save(round_.entry)

    def _log_cut_short(self, round_: _Round) -> None:
        """The round was cut short by a stop, wherever it was (a local copy, a session,
        the bounce step): each recipient it leaves pending on disk with no line of its
        own gets a deferred line (:func:`~smtpcore.server.cutshort.cut_short_outcomes`).
        The next start sends them; nothing is written. Its destination jobs, if any,
        are all done by then (:func:`_all_finished` waits for them)."""
        cut = cut_short_outcomes(round_.progress, round_.entry, round_.failed, round_.deferred)
        self.settlement.log_cut_short(round_.entry, cut)

    def _route(self, address: str) -> LocalDelivery | RemoteDelivery | Rejected:
        """Where the queued address ``address`` goes. The queue keeps it as text, parsed
        again each round: one that no longer parses (queued under an older rule, or by
        hand) is refused for good, 553 5.1.3 (RFC 3463 §3.2), quoted escaped, since the
        refusal's text is one printable line and the address may hold anything. A
        recipient's refusal is the server's own policy (:func:`_recipient_refusal`)."""
        try:
            mailbox = parse_mailbox(address)
        except AddressError:
            text = f"bad recipient address {printable(address)}"
            return Rejected(553, "5.1.3", text, RejectReason.NO_ROUTE)
        return self.router.route(mailbox, authenticated=True)
