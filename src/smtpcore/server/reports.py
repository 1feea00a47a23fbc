"""Telling the sender what became of the mail: bounces, delay warnings and success
reports (RFC 3461, RFC 3464), who gets each (the sender, or the postmaster when it
cannot go there, RFC 5321 §4.5.1), and how it goes (into a local mailbox, or queued
from ``<>``). The reports themselves are built by :mod:`smtpcore.server.bounce`;
when one is owed, the end of a round decides
(:class:`~smtpcore.server.settlement.RoundSettlement`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from smtpcore.address import AddressError, parse_mailbox
from smtpcore.routing import LocalDelivery, Rejected, RemoteDelivery, Router
from smtpcore.server.bounce import (
    MAX_RETURNED_MESSAGE,
    Report,
    ReportedRecipient,
    build_bounce,
    build_delay_notice,
    build_success_report,
)
from smtpcore.server.bouncerecords import POSTMASTER, BounceCopy
from smtpcore.server.diskrefusal import is_disk_refusal
from smtpcore.server.exchanger import Outcome
from smtpcore.server.log import loggable, logger
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.queue import Queue, QueuedContent, QueuedRecipient, QueueEntry
from smtpcore.server.waits import ThreadShare, in_one_call

__all__ = ["BounceNotStored", "ReportingWorker", "SenderReports", "asks_for"]


class BounceNotStored(Exception):
    """The disk refused to store a bounce as it was written (``error``, an
    :func:`~smtpcore.server.diskrefusal.is_disk_refusal` one: full, a file size limit,
    read-only, not writable): its recipients wait for a disk that takes it. Raised for
    the bounce's write only: the same ``errno`` while reading the queued message it
    returns (an unreadable content file) is no refusal to store, and stays an
    ``OSError``, a fault logged with its traceback."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class ReportingWorker(Protocol):
    """What the reports read of the delivery worker, at the time of each report: its
    router and its delay warning may change while it runs. Bounces and delay warnings
    go out through its :meth:`send_report`, which a subclass of the worker may wrap."""

    queue: Queue
    router: Router
    mailboxes: LocalMailboxes
    hostname: str
    max_queue_age: float
    delay_warning: float | None
    disk: ThreadShare
    clock: Callable[[], float]

    def age(self, entry: QueueEntry) -> float: ...

    def schedule(self, entry: QueueEntry, *, new: bool = False) -> None: ...

    async def send_report(
        self,
        queue_id: str,
        sender: str,
        report: Report,
        kind: str,
        *,
        requiretls: bool = False,
        landed: Callable[[], object] | None = None,
        copy: BounceCopy | None = None,
    ) -> None: ...

    def _route(self, address: str) -> LocalDelivery | RemoteDelivery | Rejected: ...

    async def _load(self, queue_id: str) -> QueueEntry: ...

    async def _save(self, entry: QueueEntry) -> QueueEntry: ...


class SenderReports:
    """The reports of one :class:`~smtpcore.server.delivery.DeliveryWorker` (``worker``)."""

    def __init__(self, worker: ReportingWorker) -> None:
        self.worker = worker

    async def report_owed(self, queue_id: str) -> None:
        """The success reports owed for recipients this broken round sent and recorded
        so (RFC 3461 §5.2.2): made now rather than after the backoff. One not made stays
        owed on disk, for the next round."""
        try:
            entry = await self.worker._load(queue_id)
            await self.report_successes(entry, self.worker.queue.content(queue_id))
        except Exception:
            logger.exception("%s: cannot make the success report owed", queue_id)

    async def report_successes(self, entry: QueueEntry, content: QueuedContent) -> QueueEntry:
        """Queue the success report the recipients of ``entry`` are owed (their
        :attr:`~QueuedRecipient.report_owed`), then record it queued; ``entry`` as
        recorded. The report is delivered only after that record: a crash between the
        two leaves a report that :meth:`Queue.open` finds, and it is not made again."""
        owed = [r for r in entry.recipients if r.report_owed is not None]
        if not owed:
            return entry
        to, on_behalf_of = self._addressee(entry.id, entry.sender)
        report = await self._success_report(entry, content, owed, to, on_behalf_of)
        queued = await self.worker.disk.run(
            self.worker.queue.add,
            report.content,
            "",
            [to],
            params=_report_params(to, report, requiretls=entry.requiretls),
            report_on=entry.id,
            reported=[r.address for r in owed],
        )
        logger.info("%s: sender success notification: %s", entry.id, queued.id)
        entry = await self.worker._save(
            entry.with_recipients({r.address: replace(r, report_owed=None) for r in owed})
        )
        self.worker.schedule(queued, new=True)
        return entry

    # -- delay notices ------------------------------------------------------------

    def delay_warning_due(self, entry: QueueEntry) -> bool:
        return (
            self.worker.delay_warning is not None
            and not entry.delay_warned
            and bool(entry.sender)
            and self.worker.age(entry) >= self.worker.delay_warning
        )

    def _retry_until(self, entry: QueueEntry) -> float:
        """When the message expires, as a date (``Will-Retry-Until``): what is left of
        its lifetime by its step-free age, from the wall clock's now."""
        left = max(self.worker.max_queue_age - self.worker.age(entry), 0.0)
        return self.worker.clock() + left

    async def warn_delay(self, entry: QueueEntry, content: QueuedContent) -> None:
        """Tell the sender, once, which recipients are still waiting and why (RFC 3464
        ``Action: delayed``); recipients whose NOTIFY leaves out DELAY are not listed
        (RFC 3461 §4.1; without NOTIFY, Postfix warns, and so does this)."""
        delayed = [r for r in entry.pending if r.notify is None or asks_for(r, "DELAY")]
        if not delayed:
            return
        to, on_behalf_of = self._addressee(entry.id, entry.sender)
        notice = build_delay_notice(
            reporting_mta=self.worker.hostname,
            recipient=to,
            queue_id=entry.id,
            arrival=entry.created,
            now=self.worker.clock(),
            delayed=[
                ReportedRecipient(
                    r.address,
                    r.dsn if r.dsn and r.dsn[0] == "4" else "4.0.0",
                    r.reply or "not yet attempted",
                    r.remote_mta,
                    r.from_remote,
                    diagnostic_breaks=r.reply_breaks,
                    original_recipient=r.orcpt,
                )
                for r in delayed
            ],
            original=await self.worker.disk.run(content.returned_header),
            retry_until=self._retry_until(entry),
            envid=entry.param("ENVID"),
            utf8=_is_utf8(entry),
            for_sender=on_behalf_of,
        )
        await self.worker.send_report(entry.id, to, notice, "delay", requiretls=entry.requiretls)

    # -- bounces ----------------------------------------------------------------

    async def bounce(
        self,
        entry: QueueEntry,
        content: QueuedContent,
        failed: Mapping[str, Outcome],
        made: Callable[[frozenset[str], str], object] | None = None,
    ) -> None:
        """Tell the sender, unless it is the null sender (RFC 5321 §4.5.5) or asked not
        to hear of these failures (``NOTIFY``, RFC 3461 §4.1). A failure by this
        server's own policy (:attr:`Outcome.server_policy`) was no choice of the
        sender's: the postmaster (RFC 5321 §4.5.1) hears of it, with the whole message,
        whatever NOTIFY and RET asked; the sender's own copy keeps to them. When the
        sender's copy goes to the postmaster too (:meth:`_postmaster_instead`), the two
        are one report. The bounce says how long the message was retried when that is
        why each recipient it lists failed (:attr:`Outcome.expired`).

        Each recipient is reported once in each role (:mod:`smtpcore.server.bouncerecords`):
        a copy leaves out those a record says an earlier attempt reported, and is not
        made when none are left. ``made(recipients, label)`` hears which recipients each
        copy has reported, now (once their record landed) or then (the line a stop
        writes names it). Their records go once the round has recorded ``failed``
        (:meth:`RoundSettlement._bounce
        <smtpcore.server.settlement.RoundSettlement._bounce>`).

        Mail from the null sender is a report (this server's or another's), which is
        never bounced (RFC 3461 §6.2): one that fails is lost, and only the log can say
        so, at WARNING, naming the message it reported on when this server made it."""
        if not entry.sender:
            logger.warning(
                "%s: null sender: no bounce for %d recipients: a lost report%s (a report is "
                "never bounced, RFC 5321 §4.5.5)",
                entry.id,
                len(failed),
                "" if entry.report_on is None else f" on {entry.report_on}",
            )
            return
        recipients = {r.address: r for r in entry.recipients}
        asked = [a for a in failed if asks_for(recipients[a], "FAILURE")]
        policy = [a for a, o in failed.items() if o.server_policy]
        unreported = len(failed.keys() - {*asked, *policy})
        if unreported:
            logger.info(
                "%s: no bounce for %d recipients: NOTIFY did not ask for one",
                entry.id,
                unreported,
            )
        to, on_behalf_of = self._addressee(entry.id, entry.sender)
        if on_behalf_of is not None:
            copies = [(to, BounceCopy.of(entry.id, sender=asked, postmaster=policy))]
        else:
            copies = [
                (entry.sender, BounceCopy.of(entry.id, sender=asked)),
                (self._postmaster(), BounceCopy.of(entry.id, postmaster=policy)),
            ]
        for copy_to, copy in copies:
            if copy.parts:
                await self._send_copy(entry, content, failed, copy_to, copy, made)

    async def _send_copy(
        self,
        entry: QueueEntry,
        content: QueuedContent,
        failed: Mapping[str, Outcome],
        to: str,
        copy: BounceCopy,
        made: Callable[[frozenset[str], str], object] | None,
    ) -> None:
        """:meth:`_send_bounce` for the recipients of ``copy`` not recorded reported in
        its roles; recorded as it lands, in the same thread call, so that no stop comes
        between the two. Records the disk refuses are logged, never raised: a bounce is
        never lost to avoid a second copy, and a round broken after its copy landed
        would make it again. It returns the whole message when it tells the
        postmaster."""
        try:
            unmade = await self.worker.disk.run(self.worker.queue.bounced.unmade, copy)
        except OSError as exc:
            logger.error(
                "%s: cannot read its bounce records: %s; the %s copy is made whole, for "
                "every recipient it reports",
                entry.id,
                exc,
                copy.label,
            )
            unmade = copy
        reported = copy.recipients - unmade.recipients
        if reported and made is not None:
            made(reported, copy.label)
        if not unmade.parts:
            logger.info(
                "%s: the %s copy of its bounce was made in an earlier attempt: not made again",
                entry.id,
                copy.label,
            )
            return
        if unmade != copy:
            logger.info(
                "%s: the %s copy of its bounce leaves out what an earlier attempt reported",
                entry.id,
                copy.label,
            )
        recorded: list[bool] = []
        landed = functools.partial(self._record, unmade, recorded)
        await self._send_bounce(
            entry,
            content,
            {a: o for a, o in failed.items() if a in unmade.recipients},
            to,
            whole=unmade.has(POSTMASTER),
            landed=landed,
            copy=unmade,
        )
        if made is not None and recorded == [True]:
            made(unmade.recipients, copy.label)

    def _record(self, copy: BounceCopy, recorded: list[bool]) -> None:
        """Record ``copy`` landed (in the thread that made it); ``recorded`` says
        whether its records did."""
        try:
            self.worker.queue.bounced.record(copy)
        except OSError as exc:
            recorded.append(False)
            logger.error(
                "%s: cannot record the %s copy of its bounce made: %s; that copy may be "
                "made again at the next attempt",
                copy.queue_id,
                copy.label,
                exc,
            )
        else:
            recorded.append(True)

    async def _send_bounce(
        self,
        entry: QueueEntry,
        content: QueuedContent,
        failed: Mapping[str, Outcome],
        to: str,
        *,
        whole: bool,
        landed: Callable[[], object],
        copy: BounceCopy,
    ) -> None:
        """Build the bounce for ``failed`` and send it to ``to``: the sender, or the
        postmaster, in which case the report names the sender in its text. ``whole``
        returns the message whole whatever RET asked; RFC 8689 §5 returns the header
        of a REQUIRETLS message only, whatever RET asked (and it goes under REQUIRETLS:
        :meth:`send_report`). A bounce that returns the message whole and that the disk
        refuses to store (:class:`BounceNotStored`: full, a file size limit) returns the
        header only, as ``RET=HDRS`` would (RFC 3461 §4.3 lets the reporting MTA return
        less): a bounce that fits comes before one that does not. When that is refused
        too, :class:`BounceNotStored` is raised; an error reading the message is raised
        as it is.
        ``landed()`` is called as it lands; ``copy`` is which copy it is (queued, it
        carries its records' names)."""
        ret_hdrs = (entry.param("RET") or "").upper() == "HDRS" and not whole
        headers_only = ret_hdrs or entry.requiretls
        original = None
        if not headers_only:
            original = await self.worker.disk.run(content.returned, MAX_RETURNED_MESSAGE)
        refused: OSError | None = None
        if original is not None:
            bounce = self._bounce_report(entry, failed, to, original, headers_only=False)
            try:
                await self._send_bounce_report(entry, to, bounce, landed, copy)
            except BounceNotStored as exc:
                refused = exc.error
            else:
                return
        # asked for, the message too large to return whole, or the disk refused it whole
        original = await self.worker.disk.run(content.returned_header)
        bounce = self._bounce_report(
            entry, failed, to, original, headers_only=True, too_large=not headers_only
        )
        await self._send_bounce_report(entry, to, bounce, landed, copy)
        if refused is not None:
            logger.warning(
                "%s: the bounce returning the message whole could not be stored (%s): it "
                "returns the header only",
                entry.id,
                refused,
            )

    async def _send_bounce_report(
        self,
        entry: QueueEntry,
        to: str,
        bounce: Report,
        landed: Callable[[], object],
        copy: BounceCopy,
    ) -> None:
        """Hand the built ``bounce`` to the worker's :meth:`send_report`; a disk that
        refuses to store it raises :class:`BounceNotStored`."""
        try:
            await self.worker.send_report(
                entry.id,
                to,
                bounce,
                "non-delivery",
                requiretls=entry.requiretls,
                landed=landed,
                copy=copy,
            )
        except OSError as exc:
            if not is_disk_refusal(exc):
                raise
            raise BounceNotStored(exc) from exc

    def _bounce_report(
        self,
        entry: QueueEntry,
        failed: Mapping[str, Outcome],
        to: str,
        original: bytes,
        *,
        headers_only: bool,
        too_large: bool = False,
    ) -> Report:
        """The bounce for ``failed`` to ``to``, returning ``original``: the message, or
        its header when ``headers_only``; ``too_large`` says that it is the header
        because the message was too large to return whole."""
        recipients = {r.address: r for r in entry.recipients}
        expired = all(outcome.expired for outcome in failed.values())
        retried_for = _duration_text(self.worker.max_queue_age) if expired else None
        return build_bounce(
            reporting_mta=self.worker.hostname,
            recipient=to,
            queue_id=entry.id,
            arrival=entry.created,
            now=self.worker.clock(),
            failed=[
                ReportedRecipient(
                    address,
                    outcome.dsn if outcome.dsn[0] in "45" else "5.0.0",
                    outcome.detail,
                    outcome.remote_mta,
                    outcome.from_remote,
                    diagnostic_breaks=outcome.detail_breaks,
                    original_recipient=recipients[address].orcpt,
                )
                for address, outcome in failed.items()
            ],
            original=original,
            envid=entry.param("ENVID"),
            headers_only=headers_only,
            too_large=too_large,
            expired_after=retried_for,
            utf8=_is_utf8(entry),
            for_sender=None if to == entry.sender else entry.sender,
        )

    async def _success_report(
        self,
        entry: QueueEntry,
        content: QueuedContent,
        owed: Sequence[QueuedRecipient],
        to: str,
        on_behalf_of: str | None,
    ) -> Report:
        """The report ``NOTIFY=SUCCESS`` asked for: delivered here, or relayed to a
        server that does not speak DSN (RFC 3461 §6.2); addressed to ``to``, on behalf
        of ``on_behalf_of`` when that is the postmaster (:meth:`_addressee`)."""
        return build_success_report(
            reporting_mta=self.worker.hostname,
            recipient=to,
            queue_id=entry.id,
            arrival=entry.created,
            now=self.worker.clock(),
            reported=[
                ReportedRecipient(
                    r.address,
                    r.dsn if r.dsn is not None and r.dsn[:1] == "2" else "2.0.0",
                    r.reply or "",
                    r.remote_mta,
                    r.from_remote,
                    diagnostic_breaks=r.reply_breaks,
                    action=r.report_owed or "relayed",
                    original_recipient=r.orcpt,
                )
                for r in owed
            ],
            original=await self.worker.disk.run(content.returned_header),
            envid=entry.param("ENVID"),
            utf8=_is_utf8(entry),
            for_sender=on_behalf_of,
        )

    def _addressee(self, queue_id: str, sender: str) -> tuple[str, str | None]:
        """Where a report to ``sender`` goes, and on whose behalf: the sender itself and
        None, or the postmaster and the sender when it cannot go there
        (:meth:`_postmaster_instead`). A report to the postmaster names it in its To:
        and the sender only in its text: an address that no longer parses has no form
        that a header could carry without naming another one."""
        postmaster = self._postmaster_instead(queue_id, sender)
        return (sender, None) if postmaster is None else (postmaster, sender)

    def _postmaster(self) -> str:
        """The postmaster's mailbox of the first local domain (RFC 5321 §4.5.1)."""
        return self.worker.mailboxes.config.postmaster_key(self.worker.mailboxes.config.domains[0])

    def _postmaster_instead(self, queue_id: str, sender: str) -> str | None:
        """The postmaster's mailbox (RFC 5321 §4.5.1) when a report to ``sender`` cannot
        go to it: a local sender with no mailbox, or a queued sender that no longer
        parses, to which nothing can be sent; None when it can. Logged."""
        try:
            mailbox = parse_mailbox(sender)
        except AddressError:
            why = "is no longer a valid address"
        else:
            decision = self.worker.router.route(mailbox, authenticated=True)
            if not isinstance(decision, LocalDelivery):
                return None
            if self.worker.mailboxes.lookup(decision.mailbox) is not None:
                return None
            why = "has no mailbox"
        key = self._postmaster()
        logger.info("%s: sender <%s> %s; report to %s", queue_id, loggable(sender), why, key)
        return key

    async def send_report(
        self,
        queue_id: str,
        sender: str,
        report: Report,
        kind: str,
        *,
        requiretls: bool = False,
        landed: Callable[[], object] | None = None,
        copy: BounceCopy | None = None,
    ) -> None:
        """The worker's :meth:`DeliveryWorker.send_report
        <smtpcore.server.delivery.DeliveryWorker.send_report>`, which forwards here.

        Hand a delivery status notification to ``sender``: into its mailbox when it
        is local, a postmaster's when it cannot go there (:meth:`_postmaster_instead`),
        else into the queue, from ``<>``,
        marked a report on ``queue_id`` (:attr:`QueueEntry.is_report`).

        ``requiretls``: the report is on a message that came with REQUIRETLS, and holds
        its header, so it is queued with REQUIRETLS as well (a "REQUIRETLS bounce
        message", RFC 8689 §5): the relay sends it only as it would send that message.
        When no exchanger qualifies it is dropped, and logged, rather than sent in the
        clear; being from ``<>``, it is never bounced (RFC 5321 §4.5.5).

        ``landed()`` is called as the report lands, in the thread call that made it
        (:func:`~smtpcore.server.waits.in_one_call`): a bounce copy's record. A bounce
        ``copy`` queued carries its records' names
        (:attr:`~smtpcore.server.queue.QueueEntry.bounce_records`): a crash between its
        commit and ``landed()`` leaves them for :meth:`Queue.open
        <smtpcore.server.queue.Queue.open>` to make. Into a mailbox it carries none:
        there, that instant's crash makes the copy again."""
        key = self._postmaster_instead(queue_id, sender)
        if key is None:
            decision = self.worker._route(sender)
            if isinstance(decision, LocalDelivery):
                key = self.worker.mailboxes.lookup(decision.mailbox)
        if key is not None:
            deliver = in_one_call(self.worker.mailboxes.deliver, after=landed)
            path = await self.worker.disk.run(deliver, key, "", report.content)
            logger.info("%s: sender %s notification: delivered to %s", queue_id, kind, path)
            self.worker.mailboxes.delivered(key, path, queue_id)
            return
        params = _report_params(sender, report, requiretls=requiretls)
        add = in_one_call(self.worker.queue.add, after=landed)
        queued = await self.worker.disk.run(
            add,
            report.content,
            "",
            [sender],
            params=params,
            report_on=queue_id,
            bounce_records=() if copy is None else sorted(copy.record_names()),
        )
        logger.info("%s: sender %s notification: %s", queue_id, kind, queued.id)
        self.worker.schedule(queued, new=True)


def _duration_text(seconds: float) -> str:
    """``5d``, ``1h``, ``90s``: how Postfix writes queue lifetimes."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def asks_for(recipient: QueuedRecipient, event: str) -> bool:
    """Whether the sender asked to hear of ``event`` for ``recipient`` (RFC 3461 §4.1;
    without NOTIFY, failures only)."""
    if recipient.notify is None:
        return event == "FAILURE"
    return event in recipient.notify.split(",")


def _report_params(
    sender: str, report: Report, *, requiretls: bool
) -> list[tuple[str, str | None]]:
    """The MAIL parameters a queued report needs: an RFC 6533 report (as its builder
    says), or one to a UTF-8 address, SMTPUTF8 (passed on where it is offered; only a
    UTF-8 address or header needs it, RFC 6531 §3.4); one on a REQUIRETLS message,
    REQUIRETLS."""
    params: list[tuple[str, str | None]] = []
    if not report.content.isascii():
        params.append(("BODY", "8BITMIME"))
    if not sender.isascii() or report.international:
        params.append(("SMTPUTF8", None))
    if requiretls:
        params.append(("REQUIRETLS", None))
    return params


def _is_utf8(entry: QueueEntry) -> bool:
    """Whether reports on ``entry`` follow RFC 6533: it came with SMTPUTF8."""
    return "SMTPUTF8" in dict(entry.params)
