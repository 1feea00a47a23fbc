"""The LMTP listener's commit (RFC 2033 §4.2): one copy per mailbox, each written in its
thread, and one reply per recipient; copies that land after their session was closed
with no reply are logged and announced all the same (:class:`_Copies`, :class:`_Writing`).

Apart from the queue's commit it replaces: no queue, no relaying. A base of
:class:`~smtpcore.server.app.LMTPHandler`, which stays in :mod:`smtpcore.server.app`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from dataclasses import dataclass, field
from pathlib import Path

from smtpcore._driver._failures import fault_text
from smtpcore.handler import Envelope, MessageReply, Session
from smtpcore.server._app_commit import (
    _UNANSWERED,
    _lost_with_the_loop,
    _MailCommit,
    _unanswered,
)
from smtpcore.server._app_store import Accepted
from smtpcore.server.log import loggable, logger
from smtpcore.server.origin import MessageOrigin
from smtpcore.server.queue import Spool
from smtpcore.server.waits import Landing
from smtpcore.smtp import Reply, quoted

__all__ = ["_Copies", "_LMTPDelivery", "_Writing", "_copy_lost_with_the_loop"]


class _LMTPDelivery(_MailCommit):
    """The LMTP commit: a copy in each recipient's mailbox, a reply for each."""

    async def _commit(
        self, session: Session, envelope: Envelope, spool: Spool, due: int
    ) -> MessageReply:
        sender = "" if envelope.sender is None else str(envelope.sender)
        client = MessageOrigin.of(session, envelope).log_text()
        size = spool.size
        try:
            await self.store.threads.run(spool.finish)
        except OSError as exc:
            spool.discard()
            failed = self._storage_failed(
                session, envelope, exc, "cannot store the message", queue_id=spool.id
            )
            return [failed] * due
        copies = _Copies()
        session.begin_commit()  # each copy written is delivered: no 421 from here
        try:
            replies = await self._deliver_each(session, envelope, spool, sender, copies)
        except asyncio.CancelledError:
            writing = copies.writing
            assert writing is not None, "cancelled only as a copy is written"
            self.store.threads.after(
                writing.landing,
                functools.partial(
                    self._copy_landed_unanswered, session, spool, sender, size, client, copies
                ),
                functools.partial(_copy_lost_with_the_loop, spool, copies),
            )
            raise
        spool.discard()
        if copies.delivered:
            accepted = Accepted(spool.id, copies.paths, None)
            self._accepted(session, accepted, sender, size, copies.delivered, client)
        return replies

    async def _deliver_each(
        self,
        session: Session,
        envelope: Envelope,
        spool: Spool,
        sender: str,
        copies: _Copies,
    ) -> list[Reply]:
        """A copy in each recipient's mailbox, one per mailbox, and each recipient's reply
        (RFC 2033 §4.2); ``copies`` says which landed, as they land, and which is being
        written."""
        routes: dict[str, str | None] = session.extra.get("routes", {})
        targets = [(str(r.mailbox), routes.get(str(r.mailbox))) for r in envelope.recipients]
        replies: list[Reply] = []
        for at, (address, key) in enumerate(targets):
            if key is None:  # pragma: no cover - refused at RCPT (LMTPHandler._not_local)
                replies.append(Reply(550, "Not a local recipient", "5.1.1"))
                continue
            try:
                if key not in copies.paths:
                    landing = self.store.threads.land(
                        self.store.mailboxes.deliver_file, key, sender, spool.path
                    )
                    copies.writing = _Writing(address, key, landing, targets[at + 1 :])
                    copies.paths[key] = await asyncio.shield(landing.future)
                    copies.writing = None
            except Exception as exc:
                copies.writing = None
                what = f"delivery to {key} failed"
                replies.append(
                    self._storage_failed(
                        session, envelope, exc, what, queue_id=spool.id, recipient=address
                    )
                )
                continue
            copies.delivered[address] = key
            replies.append(Reply(250, quoted(f"<{address}> delivered as {spool.id}"), "2.0.0"))
        return replies

    def _copy_landed_unanswered(
        self,
        session: Session,
        spool: Spool,
        sender: str,
        size: int,
        client: str,
        copies: _Copies,
        landed: concurrent.futures.Future[Path],
    ) -> None:
        """The copy being written when the session was closed with no reply (a stop
        past its cut-off's last words, the ``data_termination`` timeout) has landed, or
        failed: the copies that landed are logged and announced (``on_delivery``) as
        every delivered copy is, and the client, which was not told, may send the
        message again. Of the recipients after it, one whose mailbox has its copy
        (the same mailbox as one before, ``b`` and ``B``) is delivered, as its reply
        would have said; the others got none, and are named."""
        writing = copies.writing
        assert writing is not None
        key = writing.key
        failure = landed.exception()
        if failure is None:
            copies.paths[key] = landed.result()
            copies.delivered[writing.address] = key
        else:
            logger.warning(
                "%s: from=<%s>: delivery to %s failed, %s: %s",
                spool.id,
                loggable(sender),
                key,
                _UNANSWERED,
                fault_text(failure),
            )
        not_delivered: list[str] = []
        for address, later in writing.after:
            if later in copies.paths:
                copies.delivered[address] = later
            elif later is not None:  # a remote one was refused 550, as ever
                not_delivered.append(address)
        spool.discard()
        if copies.delivered:
            accepted = Accepted(spool.id, copies.paths, None)
            self._accepted(session, accepted, sender, size, copies.delivered, client)
        delivered = ", ".join(copies.delivered) or "none"
        _unanswered(spool.id, f"delivered to {delivered}")
        if not_delivered:
            logger.warning(
                "%s: not delivered to %s: the client may send it again",
                spool.id,
                ", ".join(not_delivered),
            )


@dataclass
class _Copies:
    """An LMTP message's copies, one per mailbox, as they land (RFC 2033 §4.2): who has
    one (``delivered``, address to mailbox key), where (``paths``, by mailbox key), and
    the copy being written, which a session cut off leaves to land
    (:meth:`_LMTPDelivery._copy_landed_unanswered`)."""

    delivered: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    writing: _Writing | None = None


@dataclass
class _Writing:
    """The copy of an LMTP message being written: for ``address``, into mailbox
    ``key``, by ``landing``; ``after``: the recipients still to come (address and
    mailbox key, None for one not local), who get no copy of their own should the
    session be cut off now."""

    address: str
    key: str
    landing: Landing[Path]
    after: list[tuple[str, str | None]]


def _copy_lost_with_the_loop(
    spool: Spool, copies: _Copies, outcome: concurrent.futures.Future[Path]
) -> None:
    """:func:`_lost_with_the_loop` for an LMTP message's copy being written, naming
    the copies delivered before it (unlogged too); the spool file is then removed, as
    the loop would have."""
    assert copies.writing is not None
    before = ", ".join(copies.delivered) or "none"
    what = f"the copy into {copies.writing.key} (delivered before it: {before})"
    try:
        _lost_with_the_loop(spool.id, what, outcome)
    finally:
        spool.discard()
