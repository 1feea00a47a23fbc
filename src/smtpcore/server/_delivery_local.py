"""The delivery worker's local copies: a queued recipient whose mailbox is on this
server, written into it once (:class:`_LocalCopies`, a base class of
:class:`~smtpcore.server.delivery.DeliveryWorker`). Apart because it is the only part
of a round that writes into a mailbox rather than to an exchanger: what it promises
(a copy written once, RFC 5321 §6.1, a mailbox's trouble its recipient's alone) is its
whole job."""

from __future__ import annotations

from smtpcore.routing import LocalDelivery
from smtpcore.server._delivery_envelope import _EnvelopeKeeping
from smtpcore.server._exchanger_outcomes import Outcome
from smtpcore.server.activemarks import MarksWriter
from smtpcore.server.log import logger
from smtpcore.server.mailboxes import DELIVERED, LocalMailboxes, delivered_note
from smtpcore.server.queue import QueuedContent, QueueEntry, RecipientStatus

__all__ = ["_LocalCopies"]


class _LocalCopies(_EnvelopeKeeping):
    """The local recipients of the worker's rounds, each copy written in :attr:`disk`."""

    mailboxes: LocalMailboxes
    marks_writer: MarksWriter
    _copies_begun: dict[str, set[str]]

    async def _deliver_local(
        self, entry: QueueEntry, decision: LocalDelivery, content: QueuedContent
    ) -> Outcome:
        """A local recipient in the queue: one that asked ``NOTIFY=SUCCESS``, a report to
        a local sender, a copy its mailbox first refused, one whose domain became local.
        The copy is delivered once a mailbox (:meth:`LocalMailboxes.deliver_queued`):
        found in place, it was delivered before a crash that kept it from being
        recorded, or for another address of this entry that names the same mailbox, and
        is not written again (RFC 5321 §6.1). It is looked for only where an earlier
        write may have left it (``_copies_begun``)."""
        key = self.mailboxes.lookup(decision.mailbox)
        if key is None:
            return Outcome(
                RecipientStatus.FAILED, "5.1.1", "550 5.1.1 no such mailbox here", "local"
            )
        begun = self._copies_begun.get(entry.id)
        search = begun is None or key in begun
        if begun is not None:
            begun.add(key)  # before the write: a round broken in it must search next time
        try:
            copy = self.mailboxes.deliver_queued
            with self.marks_writer.local_copy(entry.id, copy) as (begin, marked_copy):
                path, written = await self.disk.run_announced(
                    begin,
                    marked_copy,
                    key,
                    entry.sender,
                    content.path,
                    entry.id,
                    entry.created,
                    search=search,
                )
        except OSError as exc:  # the mailbox's trouble, not the other recipients'
            if await self._gone(entry.id, exc):
                raise
            # The error, with its paths, is the operator's; the sender's report (the
            # outcome's detail) says what happened, not where the server keeps mail.
            logger.warning("%s: cannot deliver into the mailbox of %s: %s", entry.id, key, exc)
            detail = f"cannot deliver into the mailbox ({type(exc).__name__})"
            return Outcome(RecipientStatus.PENDING, "4.2.0", detail, "local")
        if written:
            self.mailboxes.delivered(key, path, entry.id)
        else:
            logger.info("%s: the copy for %s is in its mailbox already", entry.id, key)
        # The sender hears that it was delivered; only the log says into which file.
        return Outcome(
            RecipientStatus.SENT, "2.0.0", DELIVERED, "local", logged=delivered_note(path)
        )
