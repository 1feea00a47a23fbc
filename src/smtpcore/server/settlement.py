"""What a delivery round's outcomes leave in the queue: each recipient sent, failed
or deferred, logged as Postfix logs it and recorded at once when sent; then the
round's end: the bounce for what failed, the success report owed, the backoff
(RFC 5321 §4.5.4.1) and the delay warning for what waits, or the message removed
once nothing does. A temporary failure once the message has reached its lifetime
bounces (Postfix's ``maximal_queue_lifetime``). The outcomes this server gives a
recipient itself (a local error, a routing refusal, an expiry) are made here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Final, Protocol

from smtpcore._driver._accept_rest import OUT_OF_RESOURCES
from smtpcore._plural import counted
from smtpcore.routing import Rejected
from smtpcore.server.cutshort import RoundProgress
from smtpcore.server.diskrefusal import is_disk_refusal
from smtpcore.server.exchanger import Outcome
from smtpcore.server.log import delivery_line, loggable, logger
from smtpcore.server.places import DestinationPlaces
from smtpcore.server.queue import (
    Queue,
    QueuedContent,
    QueuedRecipient,
    QueueEntry,
    RecipientStatus,
)
from smtpcore.server.reports import BounceNotStored, SenderReports, asks_for
from smtpcore.server.safefiles import NotRegularFile
from smtpcore.server.waits import ThreadShare

__all__ = [
    "LOCAL_ERROR_DSN",
    "RoundSettlement",
    "SettlingWorker",
    "local_error",
    "rejected_outcome",
]

LOCAL_ERROR_DSN: Final = "4.3.0"
"""The status of a recipient kept waiting by a fault on this side (RFC 3463 X.3.0,
"other or undefined mail system status"): temporary, whatever the exchanger said."""


class SettlingWorker(Protocol):
    """What the outcomes read and change of the delivery worker: its settings, its
    schedule (a round's end schedules the next), its record of the queue, and its
    reports, through which the sender is told (read at each use, as the rest)."""

    queue: Queue
    disk: ThreadShare
    clock: Callable[[], float]
    monotonic: Callable[[], float]
    max_queue_age: float
    places: DestinationPlaces
    reports: SenderReports
    _due: dict[str, float]
    _unsaved: dict[str, QueueEntry]

    def schedule(self, entry: QueueEntry, *, new: bool = False) -> None: ...

    def _schedule_for_places(self, entry: QueueEntry) -> None: ...

    def next_wait(self, attempts: int) -> float: ...

    def age(self, entry: QueueEntry) -> float: ...

    async def _load(self, queue_id: str) -> QueueEntry: ...

    async def _save(self, entry: QueueEntry) -> QueueEntry: ...

    async def _saved(self, entry: QueueEntry) -> bool: ...


class RoundSettlement:
    """The outcomes of the rounds of one :class:`~smtpcore.server.delivery.DeliveryWorker`
    (``worker``), which tells the sender through its ``reports``."""

    def __init__(self, worker: SettlingWorker) -> None:
        self.worker = worker

    async def record_local_error(self, queue_id: str, exc: BaseException) -> None:
        """A round that broke on our side: its error is every pending recipient's
        temporary failure, settled as any other (so the backoff goes on, and a message
        past its lifetime bounces saying what it was, rather than break for ever). If
        that breaks too, :meth:`_defer_round`."""
        outcome = local_error(exc)
        try:
            entry = await self.worker._load(queue_id)
            failed: dict[str, Outcome] = {}
            deferred: dict[str, Outcome] = {}
            outcomes = dict.fromkeys((r.address for r in entry.pending), outcome)
            entry = await self.settle(entry, outcomes, failed, deferred)
            await self.finish_round(entry, self.worker.queue.content(queue_id), failed, deferred)
        except Exception:
            logger.exception("%s: cannot finish the failed round; deferred", queue_id)
            await self._defer_round(queue_id, outcome)

    def retry_unopened(self, queue_id: str, exc: BaseException) -> None:
        """A round that broke before it began, its queue file unread (the process out of
        descriptors, a disk error): the success report owed and the round's outcome each
        need that file, and trying them only failed three times more, each logged with
        its traceback. The message stays queued as it is, tried again after the first
        wait; a process short of descriptors or memory, or a disk that refuses, is one
        warning, as a full disk is; anything else is logged with its traceback, once."""
        wait = self.worker.next_wait(1)
        self.worker._due[queue_id] = self.worker.monotonic() + wait
        if is_disk_refusal(exc) or getattr(exc, "errno", None) in OUT_OF_RESOURCES:
            logger.warning(
                "%s: cannot read the queue file (%s); retrying in %.1fs",
                queue_id,
                loggable(str(exc)),
                wait,
            )
        else:
            logger.error("%s: delivery failed; retrying later", queue_id, exc_info=exc)

    async def _defer_round(self, queue_id: str, outcome: Outcome) -> None:
        """The last resort of a broken round whose end breaks as well (a bounce or a delay
        warning that cannot be made: a full disk, a damaged content file): every pending
        recipient waits, ``outcome`` its last error, and the attempt counts, so the
        backoff grows (RFC 5321 §4.5.4.1) rather than retry at the first wait for ever.
        Nothing is bounced here: a recipient bounces only with the bounce made."""
        try:
            entry = await self.worker._load(queue_id)
            waiting = {r.address: _updated(r, outcome) for r in entry.pending}
            attempts = entry.attempts + 1
            entry = replace(
                entry.with_recipients(waiting),
                attempts=attempts,
                next_attempt=self.worker.clock() + self.worker.next_wait(attempts),
            )
            await self.worker._save(entry)
            self.worker.schedule(entry)
        except Exception:
            logger.exception("%s: cannot record the failed round", queue_id)
            self.worker._due[queue_id] = self.worker.monotonic() + self.worker.next_wait(1)

    async def settle(
        self,
        entry: QueueEntry,
        outcomes: Mapping[str, Outcome],
        failed: dict[str, Outcome],
        deferred: dict[str, Outcome],
    ) -> QueueEntry:
        """:meth:`apply_outcomes` ``outcomes``, then write what it sent."""
        entry, sent = self.apply_outcomes(entry, outcomes, failed, deferred)
        if sent:
            entry = await self.worker._save(entry)
        return entry

    def apply_outcomes(
        self,
        entry: QueueEntry,
        outcomes: Mapping[str, Outcome],
        failed: dict[str, Outcome],
        deferred: dict[str, Outcome],
    ) -> tuple[QueueEntry, bool]:
        """Log each outcome sent or deferred, and record what was sent at once (never
        twice, even after a crash unless the disk refused the record), with the success
        report it is owed, if any, in the same write; failures wait for the bounce at the
        end of the round, and are logged after its bounce step (:meth:`finish_round`). A
        temporary failure once the message has reached its lifetime is its last
        (:meth:`expired`). Returns ``entry`` with the sent ones, and whether there were
        any: the caller writes it (the worker's :meth:`DeliveryWorker._save
        <smtpcore.server.delivery.DeliveryWorker._save>`), with no await before, so
        that a stop cannot come between an exchanger's 250 and its record's write."""
        sent: dict[str, QueuedRecipient] = {}
        recipients = {r.address: r for r in entry.recipients}
        expired = self.expired(entry)
        for address, outcome in outcomes.items():
            if expired and outcome.status is RecipientStatus.PENDING:
                outcome = _expiry_outcome(outcome)
            if outcome.status is not RecipientStatus.FAILED:
                self._log_outcome(entry, address, outcome)
            if outcome.status is RecipientStatus.SENT:
                sent[address] = _updated(recipients[address], outcome)
                wanted = asks_for(recipients[address], "SUCCESS") and not outcome.dsn_passed
                if wanted and entry.sender:  # RFC 3461 §6.2; none to <> (RFC 5321 §4.5.5)
                    action = "delivered" if outcome.relay == "local" else "relayed"
                    sent[address] = replace(sent[address], report_owed=action)
            elif outcome.status is RecipientStatus.FAILED:
                failed[address] = outcome
            else:
                deferred[address] = outcome
        if sent:
            return entry.with_recipients(sent), True
        return entry, False

    def log_cut_short(self, entry: QueueEntry, outcomes: Mapping[str, Outcome]) -> None:
        """Each of ``outcomes`` deferred in the log, its round cut short by a stop
        (:mod:`smtpcore.server.cutshort`). Only logged: they are pending on disk
        already, and the next start sends them."""
        for address, outcome in outcomes.items():
            self._log_outcome(entry, address, outcome)

    def _log_outcome(self, entry: QueueEntry, address: str, outcome: Outcome) -> None:
        """One recipient's line in the mail log, as Postfix writes it."""
        label = {
            RecipientStatus.SENT: "sent",
            RecipientStatus.FAILED: "bounced",
            RecipientStatus.PENDING: "deferred",
        }[outcome.status]
        logger.info(
            delivery_line(
                entry.id,
                address,
                relay=outcome.relay,
                delay=self.worker.age(entry),
                dsn=outcome.dsn,
                status=label,
                detail=outcome.detail if outcome.logged is None else outcome.logged,
                tls=outcome.tls,
                tls_policy=outcome.tls_policy,
            )
        )

    async def finish_round(
        self,
        entry: QueueEntry,
        content: QueuedContent,
        failed: Mapping[str, Outcome],
        deferred: Mapping[str, Outcome],
        *,
        counts: bool = True,
        progress: RoundProgress | None = None,
    ) -> None:
        """End a round: bounce what failed, report what was sent, record what waits.
        Only a round that ``counts`` (not a catch-up round) and deferred a recipient is
        an attempt: it moves the backoff on and may warn the sender. Recipients turned
        away by a full destination were not attempted: they neither count nor warn, and
        the message runs again as soon as a place is handed to it. Each failure's line,
        written with its bounce, is told to ``progress``: a stop later in the round
        writes it no other. A bounce the disk refuses (:meth:`_bounce_refused`) leaves
        its recipients waiting, as deferred ones do."""
        recipients = {r.address: r for r in entry.recipients}
        if failed:
            try:
                entry = await self._bounce(entry, content, failed, progress)
            except BounceNotStored as exc:
                refused = self._bounce_refused(entry, failed, exc.error, progress)
                deferred = {**deferred, **refused}
        entry = await self.worker.reports.report_successes(entry, content)
        entry = entry.with_recipients(
            {address: _updated(recipients[address], o) for address, o in deferred.items()}
        )
        if not entry.pending:
            try:
                await self.worker.disk.now(self.worker.queue.remove, entry.id)
            except OSError as exc:
                logger.error("%s: cannot remove the delivered message: %s", entry.id, exc)
            else:
                self.worker._unsaved.pop(entry.id, None)
                logger.info("%s: removed", entry.id)
                return
        if not entry.pending:  # done, but still queued: removed again after the wait
            attempts = entry.attempts + 1
            wait = self.worker.next_wait(attempts)
            entry = replace(entry, attempts=attempts, next_attempt=self.worker.clock() + wait)
            self.worker._unsaved[entry.id] = entry
            self.worker.schedule(entry)
            return
        if counts and deferred:
            attempts = entry.attempts + 1
            wait = self.worker.next_wait(attempts)
            entry = replace(entry, attempts=attempts, next_attempt=self.worker.clock() + wait)
            if self.worker.reports.delay_warning_due(entry):
                await self.worker.reports.warn_delay(entry, content)
                entry = replace(entry, delay_warned=True)
            await self.worker._save(entry)
            logger.info(
                "%s: %s deferred; next attempt in %.1fs",
                entry.id,
                counted(len(entry.pending), "recipient"),
                wait,
            )
        elif failed or deferred:
            await self.worker._save(entry)
        if not self.worker.places.awaited_by(entry.id):
            self.worker.schedule(entry)
            return
        # Its wait was logged as it joined each line (DeliveryWorker._log_waiting).
        self.worker._schedule_for_places(entry)

    async def _bounce(
        self,
        entry: QueueEntry,
        content: QueuedContent,
        failed: Mapping[str, Outcome],
        progress: RoundProgress | None = None,
    ) -> QueueEntry:
        """Make the bounce for ``failed``, then record them failed at once, through the
        worker's :meth:`_save <smtpcore.server.delivery.DeliveryWorker._save>`, handed
        to its thread before any await: the round's later disk work (a success report,
        a delay warning) may wait long for the worker's share, and a stop there lost a
        record kept in memory only, so the next start bounced them again (Postfix
        records a recipient's fate as its report is made). Never before the bounce has
        landed: one that fails leaves them pending, bounced by a later round. A disk
        that refuses the record leaves it in memory (``_unsaved``), written again by
        each round. Once it is written, the bounce records of every recipient recorded
        failed go (:mod:`~smtpcore.server.bouncerecords`): they kept a recipient its
        copies reported from being reported again while it was pending on disk.
        ``entry`` as recorded."""
        made = None if progress is None else progress.bounce_copy_made
        await self.worker.reports.bounce(entry, content, failed, made)
        recipients = {r.address: r for r in entry.recipients}
        for address, outcome in failed.items():  # after the bounce step, never before
            self._log_outcome(entry, address, outcome)
            if progress is not None:
                progress.bounce_logged(address)
        entry = entry.with_recipients(
            {address: _updated(recipients[address], o) for address, o in failed.items()}
        )
        if await self.worker._saved(entry):
            await self._forget_reported(entry)
        return entry

    def _bounce_refused(
        self,
        entry: QueueEntry,
        failed: Mapping[str, Outcome],
        exc: OSError,
        progress: RoundProgress | None,
    ) -> dict[str, Outcome]:
        """The recipients of ``failed`` waiting, when the disk refused to store their
        bounce (:class:`~smtpcore.server.reports.BounceNotStored`: a full disk, a file
        size limit), even with the header only: a recipient fails only with its bounce made,
        so it stays pending, its last error the exchanger's reply (not the disk's, which
        is the operator's business), to bounce once the disk takes it. Its status is a
        temporary one, :data:`LOCAL_ERROR_DSN` (the exchanger's 5.x.x says the recipient
        failed, and a pending recipient that says so is miscounted by whoever reads the
        log or the queue). One line at WARNING says so, no traceback: the disk's state
        is no bug, and each round until it changes would write one. Each recipient's
        line says ``deferred``."""
        logger.warning(
            "%s: cannot store the bounce for %d recipients (%s): they wait, and bounce "
            "once the disk takes it",
            entry.id,
            len(failed),
            exc,
        )
        waiting = {
            address: replace(outcome, status=RecipientStatus.PENDING, dsn=LOCAL_ERROR_DSN)
            for address, outcome in failed.items()
        }
        for address, outcome in waiting.items():
            self._log_outcome(entry, address, outcome)
            if progress is not None:
                progress.bounce_logged(address)
        return waiting

    async def _forget_reported(self, entry: QueueEntry) -> None:
        """Remove the bounce records of every recipient ``entry`` records failed (this
        round's, and an earlier round's whose removal the disk refused). One the disk
        keeps goes with the message: it names recipients no longer pending."""
        failed = [r.address for r in entry.recipients if r.status is RecipientStatus.FAILED]
        try:
            await self.worker.disk.run(self.worker.queue.bounced.forget, entry.id, failed)
        except OSError as exc:
            logger.warning("%s: cannot remove its bounce records: %s", entry.id, exc)

    def expired(self, entry: QueueEntry) -> bool:
        """Whether ``entry`` has been queued ``max_queue_age``: a round is still made,
        and only a temporary failure in it bounces (Postfix's ``maximal_queue_lifetime``:
        returned "when delivery fails with a temporary error, and the time in the queue
        has reached" the limit). Bouncing before the round lost mail the exchanger
        would take now. The age is the worker's step-free one: a step of the wall clock
        neither expires a message early nor keeps it past its lifetime
        (:mod:`~smtpcore.server.clocksteps`)."""
        return self.worker.age(entry) >= self.worker.max_queue_age


def local_error(exc: BaseException) -> Outcome:
    """A recipient's outcome when delivery broke on our side: it waits, and its last
    error says what broke (so an expiry bounce does). An OSError is said without the
    files it names: the bounce goes to the sender, and where the server keeps its
    files is the operator's, whose log has the whole error; so is a queue file found
    to be no regular file (:class:`~smtpcore.server.safefiles.NotRegularFile`)."""
    if isinstance(exc, OSError) and exc.strerror:
        what = exc.strerror
    elif isinstance(exc, NotRegularFile):
        what = exc.reason
    else:
        what = str(exc)
    detail = f"local error in delivery: {type(exc).__name__}: {what}"
    return Outcome(RecipientStatus.PENDING, LOCAL_ERROR_DSN, detail)


def rejected_outcome(rejected: Rejected) -> Outcome:
    """A recipient's outcome when routing refused it, or its domain's exchangers could
    not be found (:class:`~smtpcore.routing.Rejected`): it waits if the refusal is
    temporary, else fails, with the refusal's reply."""
    status = RecipientStatus.PENDING if rejected.temporary else RecipientStatus.FAILED
    return Outcome(status, rejected.status, f"{rejected.code} {rejected.status} {rejected.text}")


def _expiry_outcome(last: Outcome) -> Outcome:
    """A temporary failure past the message's lifetime: the recipient fails with that
    error, its code and text and the exchanger that gave it, as Postfix's expiry bounce
    does (its status class stays 4, RFC 3464 §2.3.4: the failure itself was
    temporary; 4.4.7, "delivery time expired", RFC 3463, when it had none)."""
    dsn = last.dsn if last.dsn[:1] == "4" else "4.4.7"
    return replace(last, status=RecipientStatus.FAILED, dsn=dsn, expired=True)


def _updated(recipient: QueuedRecipient, outcome: Outcome) -> QueuedRecipient:
    """``recipient`` as ``outcome`` leaves it; its DSN parameters stay."""
    return replace(
        recipient,
        status=outcome.status,
        reply=outcome.detail,
        reply_breaks=outcome.detail_breaks,
        dsn=outcome.dsn,
        remote_mta=outcome.remote_mta,
        from_remote=outcome.from_remote,
    )
