"""A received message committed: its recipients split into the local ones, which get
their Maildir copy now, and those that go through the queue (remote ones, and local ones
owed a success report, RFC 3461 §6.2); the store's landing awaited in its thread, and
what became of it logged, even when its session was closed before the reply.

Apart from the content's reception, which hands it a finished spool; the LMTP listener's
own commit, one copy and one reply per recipient, builds on it in
:mod:`smtpcore.server._app_lmtp`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from typing import Any, Final

from smtpcore._driver._failures import fault_text
from smtpcore.handler import Envelope, MessageReply, Session
from smtpcore.server._app_session import _MailSession
from smtpcore.server._app_store import Accepted
from smtpcore.server.log import delivery_line, loggable, logger
from smtpcore.server.mailboxes import delivered_note
from smtpcore.server.origin import MessageOrigin
from smtpcore.server.queue import QueuedRecipient, Spool
from smtpcore.smtp import Reply

__all__ = [
    "_KEPT_MAIL_PARAMS",
    "_UNANSWERED",
    "_MailCommit",
    "_lost_with_the_loop",
    "_unanswered",
    "_upper",
]

_KEPT_MAIL_PARAMS: Final = ("SMTPUTF8", "BODY", "RET", "ENVID", "REQUIRETLS")
"""The MAIL parameters the queue keeps for the next hop (RFC 6531, RFC 6152, RFC 3461,
RFC 8689); the RCPT ones kept are NOTIFY and ORCPT. SIZE is the relay's to declare anew."""


class _MailCommit(_MailSession):
    """The commit of a received message, and its log lines."""

    async def _commit(
        self, session: Session, envelope: Envelope, spool: Spool, due: int
    ) -> MessageReply:
        """Local recipients whose sender asked ``NOTIFY=SUCCESS`` go through the queue,
        every address (RFC 3461 §6.2 owes each its report): the worker records the
        delivery and the report it owes in one write, where a report made here after the
        delivery would be lost to a crash between the two. Their mailbox gets its copy
        from the queue alone, once, whichever of its addresses asked, and every other
        address of that mailbox goes through the queue with them."""
        sender = "" if envelope.sender is None else str(envelope.sender)
        routes: dict[str, str | None] = session.extra.get("routes", {})
        local: dict[str, str] = {}
        remote: list[QueuedRecipient] = []
        local_dsn: dict[str, QueuedRecipient] = {}
        reported: set[str] = set()
        for recipient in envelope.recipients:
            address = str(recipient.mailbox)
            notify = _upper(recipient.params.get("NOTIFY"))
            orcpt = recipient.params.get("ORCPT")
            queued = QueuedRecipient(address, notify=notify, orcpt=orcpt)
            key = routes.get(address)
            if key is None:
                remote.append(queued)
            elif sender and notify is not None and "SUCCESS" in notify.split(","):
                reported.add(key)
                remote.append(queued)
            else:
                local[address] = key
                local_dsn[address] = queued
        for address in [address for address, key in local.items() if key in reported]:
            # Its mailbox gets its copy from the queue: so does this address, which is
            # then recorded delivered (the worker writes one copy a mailbox), or bounced
            # with the others should that copy fail for good.
            del local[address]
            remote.append(local_dsn.pop(address))
        params = [(k, v) for k, v in envelope.mail_params.items() if k in _KEPT_MAIL_PARAMS]
        client = MessageOrigin.of(session, envelope).log_text()
        size = spool.size
        # From here a 421 of a stop's cut-off would be false: the write runs on.
        session.begin_commit()
        landing = self.store.threads.land(
            self.store.accept,
            spool,
            sender,
            local,
            remote,
            client=client,
            params=params,
            local_dsn=local_dsn,
        )
        try:
            accepted = await asyncio.shield(landing.future)
        except asyncio.CancelledError:
            self.store.threads.after(
                landing,
                functools.partial(
                    self._landed_unanswered, session, spool.id, sender, size, local, client
                ),
                functools.partial(_lost_with_the_loop, spool.id, "the store"),
            )
            raise
        except Exception as exc:
            return self._storage_failed(
                session, envelope, exc, "cannot store the message", queue_id=spool.id
            )
        self._accepted(session, accepted, sender, size, local, client)
        return Reply(250, f"Ok: queued as {accepted.queue_id}", "2.0.0")

    def _landed_unanswered(
        self,
        session: Session,
        queue_id: str,
        sender: str,
        size: int,
        local: dict[str, str],
        client: str,
        landing: concurrent.futures.Future[Accepted],
    ) -> None:
        """The message's commit ended after its session was closed with no reply (a
        stop past its cut-off's last words, or the ``data_termination`` timeout): what
        became of it is logged all the same, its ``from=`` and delivery lines if it
        landed, and that the client was not told (:func:`_unanswered`)."""
        failure = landing.exception()
        if failure is not None:
            logger.warning(
                "%s: from=<%s>: not stored, %s: %s",
                queue_id,
                loggable(sender),
                _UNANSWERED,
                fault_text(failure),
            )
            return
        accepted = landing.result()
        self._accepted(session, accepted, sender, size, local, client)
        _unanswered(accepted.queue_id, "stored")

    def _accepted(
        self,
        session: Session,
        accepted: Accepted,
        sender: str,
        size: int,
        local: dict[str, str],
        client: str,
    ) -> None:
        self._stats(session).queue_ids.append(accepted.queue_id)
        queued = {r.address for r in accepted.queued.recipients} if accepted.queued else set()
        nrcpt = len(queued | set(local))
        auth = session.authenticated
        logger.info(
            "%s: from=<%s>, size=%d, nrcpt=%d, client=%s%s",
            accepted.queue_id,
            loggable(sender),
            size,
            nrcpt,
            loggable(client),
            "" if auth is None else f", sasl_username={loggable(str(auth))}",
        )
        for address, key in local.items():
            path = accepted.delivered.get(key)
            if path is None:
                continue  # refused by its mailbox: queued, and logged when delivered
            logger.info(
                delivery_line(
                    accepted.queue_id,
                    address,
                    relay="local",
                    delay=0.0,
                    dsn="2.0.0",
                    status="sent",
                    detail=delivered_note(path),
                )
            )
            # Delivered all the same whatever the hook does: no 451 for a retry to repeat.
            self.store.mailboxes.delivered(key, path, accepted.queue_id)
        if accepted.queued is not None and self.store.worker is not None:
            self.store.worker.schedule(accepted.queued, new=True)


_UNANSWERED: Final = (
    "after its session was closed before the reply (a stop's cut-off, or the end-of-data timeout)"
)


def _lost_with_the_loop(queue_id: str, what: str, outcome: concurrent.futures.Future[Any]) -> None:
    """A write that ended after its session was closed with no reply, and after the
    server's event loop had stopped (an embedder's, stopped or closed before the last
    store ended, which may never run again): nothing is left to log its delivery or
    announce it (``on_delivery``), so its thread says this much (:meth:`Threads.after
    <smtpcore.server.waits.Threads.after>`)."""
    failure = outcome.exception()
    logger.warning(
        "%s: %s %s after the event loop had stopped, %s: the client was not told, and "
        "may send it again",
        queue_id,
        what,
        "landed" if failure is None else f"failed ({fault_text(failure)})",
        _UNANSWERED,
    )


def _unanswered(queue_id: str, what: str) -> None:
    """The warning of a message that landed, wholly or in part (``what``), after its
    session was closed with no reply: the client was not told, and may send it again."""
    logger.warning(
        "%s: %s %s: the client was not told, and may send it again",
        queue_id,
        what,
        _UNANSWERED,
    )


def _upper(value: str | None) -> str | None:
    return None if value is None else value.upper()
