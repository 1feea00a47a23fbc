"""The SMTP side of the reference server: what each listener accepts, and where it goes.

Three handlers share one way of receiving a message:

- ``smtp`` (:class:`InboundHandler`): mail for the local domains from
  anyone, no AUTH; it never relays (``550 5.7.1``), and a local recipient
  without a mailbox gets ``550 5.1.1``.
- ``submission`` and ``smtps`` (:class:`SubmissionHandler`, RFC 6409 and
  RFC 8314): AUTH first, then local and remote recipients.
- ``lmtp`` (:class:`LMTPHandler`, RFC 2033): local recipients only, one reply
  per recipient after the content.

The content is streamed to a spool file in the queue as it arrives, after
our ``Received:`` line, which names the client that XFORWARD forwards, if any
(:mod:`smtpcore.server.origin`), as the log line of the message does. At the
end of the message, local recipients get their Maildir copy (with
``Return-Path:``) and remote ones a queue entry, all written and synced first
and made visible by renames after; only then is the 250 sent (RFC 5321
§6.1). A mailbox that refuses its rename gets its copy through the queue
(:meth:`MailStore.accept`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from smtpcore._driver._failures import (
    INSUFFICIENT_STORAGE,
    failure_reply,
    fault_text,
    no_room,
)
from smtpcore._driver._refusals import only_recipient, path_text
from smtpcore._numbers import parse_number
from smtpcore.address import AddressError, Mailbox
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.routing import LocalDelivery, Rejected, RemoteDelivery, Router
from smtpcore.server.config import ServerConfig, mailbox_key, parse_user_address
from smtpcore.server.delivery import DeliveryWorker
from smtpcore.server.freespace import FreeSpace
from smtpcore.server.internal import InternalAddresses
from smtpcore.server.log import client_text, delivery_line, loggable, logger, refusal_line
from smtpcore.server.mailboxes import LocalMailboxes, delivered_note
from smtpcore.server.maildir import StagedMessage
from smtpcore.server.origin import MessageOrigin
from smtpcore.server.queue import (
    PreparedEntry,
    Queue,
    QueuedRecipient,
    QueueEntry,
    Spool,
)
from smtpcore.server.trace import (
    FIELD_NAME_LIMIT,
    count_received,
    header_field_follows,
    protocol_name,
    received_header,
    tls_comment,
)
from smtpcore.server.waits import Landing, Threads
from smtpcore.smtp import Mail, Rcpt, Reply, quoted

__all__ = [
    "Accepted",
    "InboundHandler",
    "LMTPHandler",
    "MAX_HOPS",
    "MailStore",
    "SubmissionHandler",
]

MAX_HOPS: Final = 50
"""Received lines past which a message is refused as looping (Postfix's
``hop_count_limit``; RFC 5321 §6.3)."""

_KEPT_MAIL_PARAMS: Final = ("SMTPUTF8", "BODY", "RET", "ENVID", "REQUIRETLS")
"""The MAIL parameters the queue keeps for the next hop (RFC 6531, RFC 6152, RFC 3461,
RFC 8689); the RCPT ones kept are NOTIFY and ORCPT. SIZE is the relay's to declare anew."""

_HEADER_SCAN_LIMIT: Final = 256 * 1024
_UNDECIDING: Final = bytes(sorted(set(range(33, 127)) - {ord(":")})) + b" \t"
"""What a first line may hold before its colon: field-name characters, blanks after."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """What became of a message: its queue id, the Maildir files, the queue entry."""

    queue_id: str
    delivered: dict[str, Path]
    """Mailbox key to the file delivered into its ``new/``."""
    queued: QueueEntry | None
    """The queue entry: the remote recipients, and the local ones whose mailbox
    refused the copy."""


class MailStore:
    """Where accepted mail goes: the local Maildirs and the outbound queue.

    :meth:`accept` is the commit point of a message; it blocks on the disk
    and runs in a thread, one of ``threads``: the server's, which a stop waits for
    before it lets the data directory go. A session cut off by the stop while its
    message is landing is not told 421 (:meth:`Session.begin_commit
    <smtpcore.handler.Session.begin_commit>`): it hears the real reply, or, past the
    cut-off's last words, none; were the lock free by then, a ``queue`` tool could act
    on the queue as that message lands.
    """

    def __init__(
        self,
        config: ServerConfig,
        queue: Queue,
        mailboxes: LocalMailboxes,
        worker: DeliveryWorker | None,
        *,
        threads: Threads | None = None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.mailboxes = mailboxes
        self.worker = worker
        self.threads = threads if threads is not None else Threads()
        self.room = FreeSpace(config.data_dir, config.free_space_floor, config.max_message_size)
        """The data directory's free space, asked at MAIL (RFC 1870 §6.1)."""

    def accept(
        self,
        spool: Spool,
        sender: str,
        local: dict[str, str],
        remote: Sequence[str | QueuedRecipient],
        *,
        client: str,
        params: Sequence[tuple[str, str | None]] = (),
        local_dsn: Mapping[str, QueuedRecipient] | None = None,
    ) -> Accepted:
        """Stage every copy, synced, then rename them into place: the queue entry first,
        then each Maildir copy.

        ``local`` maps each local recipient to its mailbox key. If anything fails before
        the renames, nothing is delivered and the caller answers 451 (452 for a full
        disk, 552 for a file size limit:
        :func:`~smtpcore._driver._failures.failure_reply`). A mailbox whose rename fails
        then gets its copy through the queue, whose worker delivers to local recipients
        too and retries (with the DSN parameters ``local_dsn`` gives):
        the message is accepted once any part of it is in place, as a message in
        Postfix's queue is. Only if the queue cannot take that recipient either are the
        renames undone and the error raised, so that a 451 still means nothing was
        delivered (RFC 5321 §6.1: no message both accepted and lost, or duplicated).
        """
        staged: list[StagedMessage] = []
        prepared: PreparedEntry | None = None
        try:
            spool.finish()
            keys = list(dict.fromkeys(local.values()))
            staged = self.mailboxes.stage(keys, sender, b"", spool.path)
            if remote:
                prepared = self.queue.prepare(spool, sender, remote, client=client, params=params)
            queued = prepared.commit() if prepared is not None else None
        except BaseException:
            for message in staged:
                message.discard()
            if prepared is not None:
                prepared.discard()
            spool.discard()
            raise
        delivered: dict[str, Path] = {}
        refused: list[QueuedRecipient] = []
        for key, message in zip(keys, staged, strict=True):
            try:
                delivered[key] = message.commit()
            except OSError as exc:
                message.discard()
                # One recipient per mailbox: the worker delivers each queued one.
                address = next(a for a, k in local.items() if k == key)
                refused.append((local_dsn or {}).get(address) or QueuedRecipient(address))
                logger.warning(
                    "%s: cannot deliver into the mailbox of %s (%s); queued for it instead",
                    spool.id,
                    key,
                    exc,
                )
        if refused:
            queued = self._queue_refused(
                spool, sender, queued, refused, delivered, client=client, params=params
            )
        elif queued is None:
            spool.discard()
        return Accepted(spool.id, delivered, queued)

    def _queue_refused(
        self,
        spool: Spool,
        sender: str,
        queued: QueueEntry | None,
        refused: list[QueuedRecipient],
        delivered: dict[str, Path],
        *,
        client: str,
        params: Sequence[tuple[str, str | None]],
    ) -> QueueEntry:
        """Add the recipients whose mailbox refused the rename to the queue entry, or
        queue the spool for them. If even that fails, the copies already in place are
        taken back and the error raised: the client's retry then duplicates nothing."""
        prepared: PreparedEntry | None = None
        try:
            if queued is None:
                prepared = self.queue.prepare(spool, sender, refused, client=client, params=params)
                return prepared.commit()
            entry = replace(queued, recipients=queued.recipients + tuple(refused))
            self.queue.update(entry)
            return entry
        except BaseException:
            logger.error("%s: the queue cannot take the message either; taken back", spool.id)
            for path in delivered.values():
                path.unlink(missing_ok=True)
            if prepared is not None:
                prepared.discard()
            spool.discard()
            if queued is not None:
                self.queue.remove(queued.id)
            raise


@dataclass(slots=True)
class _Stats:
    """One session's counts, for its log line."""

    start: float = field(default_factory=time.monotonic)
    mail: int = 0
    rcpt: int = 0
    accepted: int = 0
    queue_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Incoming:
    """The message being received: its spool file and what the header scan found."""

    spool: Spool
    header: bytearray = field(default_factory=bytearray)
    header_done: bool = False
    hops: int = 0
    first_line_read: bool = False
    held: bytes = b""

    def spooled(self, data: bytes) -> bytes:
        """What of ``data`` goes to the spool now. The first bytes wait until they
        tell whether the client's header follows our Received line, or an empty
        line must go between (see :func:`header_field_follows`)."""
        if self.first_line_read:
            return data
        held = self.held + data
        # More of a field name (or of the blanks after one) cannot decide, so the held
        # line is looked at again only when something that may decide comes: linear
        # however small the pieces.
        if (
            self.held[:1] not in (b"", b"\r")
            and len(held) < FIELD_NAME_LIMIT
            and not data.translate(None, _UNDECIDING)
        ):
            self.held = held
            return b""
        follows = header_field_follows(held)
        if follows is None:
            self.held = held
            return b""
        self.first_line_read = True
        self.held = b""
        return held if follows else b"\r\n" + held

    def rest(self) -> bytes:
        """What is still held when the content ends (a message shorter than a line)."""
        if self.first_line_read or not self.held:
            return b""
        self.first_line_read = True
        return b"\r\n" + self.held

    def scan(self, data: bytes) -> None:
        """Count Received lines in the header, which ends at the first empty line."""
        if self.header_done:
            return
        searched = max(len(self.header) - 3, 0)  # an empty line may begin in what came
        self.header += data
        end = self.header.find(b"\r\n\r\n", searched)
        if end >= 0 or len(self.header) > _HEADER_SCAN_LIMIT or self.header.startswith(b"\r\n"):
            self.header_done = True
            self.hops = count_received(bytes(self.header[: end if end >= 0 else None]))
            self.header = bytearray()


class _MailHandler(Handler):
    """What the three listeners share: routing, spooling, committing, logging."""

    listener = "smtp"
    lmtp = False

    def __init__(self, store: MailStore, router: Router) -> None:
        self.store = store
        self.router = router
        self.config = store.config

    # -- session ---------------------------------------------------------------

    async def handle_connect(self, session: Session) -> Reply | None:
        """The session's counts start: at the connection, and again for the client a
        trusted XCLIENT names, whose part of the session starts then."""
        session.extra["stats"] = _Stats()
        return None

    async def handle_close(self, session: Session) -> None:
        """The ``disconnect from`` line: at the end of the connection, and of a
        proxy's part of it at a trusted XCLIENT (before its ``XCLIENT from`` line)."""
        stats: _Stats = session.extra.get("stats") or _Stats()
        # "yes" for TLS whose version a proxy that ended it did not name.
        tls = (session.tls.version or "yes") if session.tls is not None else "no"
        auth = session.authenticated
        logger.info(
            "%s: disconnect from %s helo=%s tls=%s auth=%s mail=%d rcpt=%d/%d messages=%d%s "
            "duration=%.2fs",
            self.listener,
            client_text(session),
            loggable(session.helo_name or "-"),
            tls,
            "-" if auth is None else loggable(str(auth)),
            stats.mail,
            stats.accepted,
            stats.rcpt,
            len(stats.queue_ids),
            f" ({','.join(stats.queue_ids)})" if stats.queue_ids else "",
            time.monotonic() - stats.start,
        )

    def _refuse(
        self,
        session: Session,
        command: str,
        reply: Reply,
        *,
        sender: str | None = None,
        recipient: object = None,
        queue_id: str | None = None,
        detail: str | None = None,
        level: int = logging.INFO,
    ) -> Reply:
        """Log a refusal, one line (at INFO unless ``level`` says otherwise) with the
        client and the reply (and the server's own reason, ``detail``), and return it."""
        logger.log(
            level,
            refusal_line(
                self.listener,
                session,
                command,
                reply,
                queue_id=queue_id,
                sender=sender,
                recipient=None if recipient is None else str(recipient),
                helo=session.helo_name,
                user=None if session.authenticated is None else str(session.authenticated),
                detail=detail,
            ),
        )
        return reply

    def _storage_failed(
        self,
        session: Session,
        envelope: Envelope,
        exc: BaseException,
        what: str,
        *,
        queue_id: str | None = None,
        recipient: str | None = None,
    ) -> Reply:
        """The reply a failed write of the message earns (:func:`failure_reply`),
        logged. A write that found no room (:func:`no_room`: a full disk, a spent quota,
        a file size limit) is the expected state it names, and refuses the message as a
        policy does: one ``reject: DATA`` line with the write's reason, no traceback
        (RFC 5321 §4.2.2 452, RFC 3463 X.3.1 and X.3.4), at WARNING, as the floor check
        warns of the same state at MAIL (``freespace``): mail is being refused until
        the operator makes room. Any other failure is a fault, refused all the same: its
        ``reject: DATA`` line, every refusal having one, with ``what`` and the error as
        its reason, then ``what`` with its traceback."""
        why = no_room(exc)
        reply = failure_reply(exc)
        self._refuse(
            session,
            "DATA",
            reply,
            sender=path_text(envelope.sender),
            recipient=recipient
            if recipient is not None
            else only_recipient([r.mailbox for r in envelope.recipients]),
            queue_id=queue_id,
            detail=why if why is not None else f"{what}: {fault_text(exc)}",
            level=logging.WARNING,
        )
        if why is None:
            logger.error("%s%s", f"{queue_id}: " if queue_id else "", what, exc_info=exc)
        return reply

    def _stats(self, session: Session) -> _Stats:
        stats = session.extra.get("stats")
        if not isinstance(stats, _Stats):
            stats = session.extra["stats"] = _Stats()
        return stats

    # -- envelope --------------------------------------------------------------

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        """A sender is taken only while the disk has room for its message: ``452
        4.3.1`` otherwise (RFC 1870 §6.1), before the client sends it (see
        :mod:`smtpcore.server.freespace`)."""
        self._stats(session).mail += 1
        session.extra["routes"] = {}
        size = command.params.get("SIZE")
        declared = None if size is None else parse_number(size, max_digits=20)
        if not self.store.room.allows(declared):
            return self._refuse(
                session, "MAIL", INSUFFICIENT_STORAGE, sender=path_text(command.sender)
            )
        return None

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        stats = self._stats(session)
        stats.rcpt += 1
        decision = self.router.route(
            command.recipient, authenticated=session.authenticated is not None
        )
        if isinstance(decision, Rejected):
            reply = Reply(decision.code, decision.text, decision.status)
            return self._refuse(
                session,
                "RCPT",
                reply,
                sender=path_text(envelope.sender),
                recipient=command.recipient,
            )
        routes: dict[str, str | None] = session.extra.setdefault("routes", {})
        if isinstance(decision, LocalDelivery):
            key = self.store.mailboxes.lookup(command.recipient)
            if key is None:
                reply = Reply(
                    550,
                    quoted(f"<{command.recipient}>: no such mailbox here (user unknown)"),
                    "5.1.1",
                )
                return self._refuse(
                    session,
                    "RCPT",
                    reply,
                    sender=path_text(envelope.sender),
                    recipient=command.recipient,
                )
            routes[str(command.recipient)] = key
        else:
            routes[str(command.recipient)] = None
        stats.accepted += 1
        return Reply(250, "OK", "2.1.5")

    # -- content ---------------------------------------------------------------

    async def handle_data(self, session: Session, envelope: Envelope) -> Reply | None:
        try:
            self._incoming(session, envelope)
        except OSError as exc:
            return self._storage_failed(session, envelope, exc, "cannot create a spool file")
        return None

    def _incoming(self, session: Session, envelope: Envelope) -> _Incoming:
        """The spool of the message being received, opened with our Received line at the
        first sign of content (DATA, or the first BDAT chunk of RFC 3030). The line
        names the transaction's client (:class:`MessageOrigin`): the one a trusted
        content filter forwards with XFORWARD, as Postfix writes it, else the
        session's."""
        incoming = session.extra.get("incoming")
        if isinstance(incoming, _Incoming):
            return incoming
        spool = self.store.queue.spool()
        incoming = _Incoming(spool)
        session.extra["incoming"] = incoming
        utf8 = "SMTPUTF8" in envelope.mail_params
        recipients = envelope.recipients
        tls = session.tls
        origin = MessageOrigin.of(session, envelope)
        header = received_header(
            helo=origin.helo,
            peer=origin.peer,
            by=self.config.hostname,
            protocol=protocol_name(
                lmtp=self.lmtp,
                extended=session.extended,
                tls=tls is not None,
                auth=session.authenticated is not None,
                utf8=utf8,
            ),
            queue_id=spool.id,
            recipient=recipients[0].mailbox if len(recipients) == 1 else None,
            when=time.time(),
            tls=None if tls is None else tls_comment(tls.version, tls.cipher),
        )
        spool.write(header)
        return incoming

    async def handle_data_chunk(self, session: Session, envelope: Envelope, data: bytes) -> None:
        incoming = self._incoming(session, envelope)
        incoming.scan(data)
        incoming.spool.write(incoming.spooled(data))

    async def handle_reset(self, session: Session, envelope: Envelope) -> None:
        incoming = session.extra.pop("incoming", None)
        if isinstance(incoming, _Incoming):
            incoming.spool.discard()

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        due = len(envelope.recipients) if self.lmtp else 1
        try:
            incoming = self._incoming(session, envelope)  # an empty BDAT LAST has no chunk
        except OSError as exc:
            return self._storage_failed(session, envelope, exc, "cannot create a spool file")
        del session.extra["incoming"]
        try:
            incoming.spool.write(incoming.rest())
        except OSError as exc:
            incoming.spool.discard()
            return self._storage_failed(
                session, envelope, exc, "cannot write the spool file", queue_id=incoming.spool.id
            )
        if not incoming.header_done:
            incoming.scan(b"\r\n\r\n")
        if incoming.hops >= MAX_HOPS:
            incoming.spool.discard()
            reply = Reply(554, "Too many hops: is there a mail loop?", "5.4.6")
            return self._refuse(
                session,
                "DATA",
                reply,
                sender=path_text(envelope.sender),
                queue_id=incoming.spool.id,
            )
        return await self._commit(session, envelope, incoming.spool, due)

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


class InboundHandler(_MailHandler):
    """The ``smtp`` listener: mail for our domains from anyone; never a relay."""

    listener = "smtp"


class SubmissionHandler(_MailHandler):
    """The ``submission`` and ``smtps`` listeners: AUTH before MAIL (RFC 6409 §4.3,
    RFC 4954 §6), then any recipient."""

    listener = "submission"

    def __init__(
        self,
        store: MailStore,
        router: Router,
        listener: str = "submission",
        *,
        internal: InternalAddresses | None = None,
    ) -> None:
        super().__init__(store, router)
        self.listener = listener
        self.internal = internal if internal is not None else InternalAddresses()

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        """An address literal naming an internal address is not relayed to
        (``smtpcore.server.internal``)."""
        address = self.internal.refused_literal(command.recipient)
        decision = self.router.route(command.recipient, authenticated=True)
        if address is not None and isinstance(decision, RemoteDelivery):
            self._stats(session).rcpt += 1
            reply = Reply(
                550,
                quoted(f"<{command.recipient}>: relay to internal address {address} refused"),
                "5.7.1",
            )
            return self._refuse(
                session,
                "RCPT",
                reply,
                sender=path_text(envelope.sender),
                recipient=command.recipient,
            )
        return await super().handle_rcpt(session, envelope, command)

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        if session.authenticated is None:
            self._stats(session).mail += 1
            reply = Reply(530, "Authentication required", "5.7.0")
            return self._refuse(session, "MAIL", reply, sender=path_text(command.sender))
        if not self._may_send_as(str(session.authenticated), command.sender):
            self._stats(session).mail += 1
            reply = Reply(
                553,
                quoted(  # a login name has no length limit of its own
                    f"<{command.sender}>: Sender address rejected: not owned by user "
                    f"{session.authenticated}"
                ),
                "5.7.1",
            )
            return self._refuse(session, "MAIL", reply, sender=path_text(command.sender))
        return await super().handle_mail(session, command)

    def _may_send_as(self, login: str, sender: Mailbox | None) -> bool:
        """Whether ``login`` may use ``sender`` as MAIL FROM: its own address, or an alias
        the users file grants it (Postfix's ``reject_sender_login_mismatch``). The null
        sender is allowed, as Postfix allows it. A user's login is the address
        SASLprep'd (``アイ@`` for ``ｱｲ@``): its mailbox is the user's."""
        config = self.config
        if sender is None or not config.sender_login_match:
            return True
        login_key = config.user_key(login)
        if login_key is None:  # not a user here (an XCLIENT LOGIN): the address itself
            try:
                login_key = mailbox_key(parse_user_address(login))
            except (AddressError, ValueError):
                return False
        sender_key = mailbox_key(sender) if sender.domain else sender.local_part.lower()
        return sender_key == login_key or login_key in config.sender_aliases.get(sender_key, ())


class LMTPHandler(_MailHandler):
    """The ``lmtp`` listener: final delivery into local mailboxes, one reply per
    recipient (RFC 2033 §4.2); no queue, no relaying."""

    listener = "lmtp"
    lmtp = True

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
            if key is None:  # pragma: no cover - the router refuses remote recipients
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
    (:meth:`LMTPHandler._copy_landed_unanswered`)."""

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
