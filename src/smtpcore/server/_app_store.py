"""Where accepted mail goes (:class:`MailStore`): the commit point of a message, which
stages every copy, synced, then makes them visible by renames (RFC 5321 §6.1), and what
became of it (:class:`Accepted`).

Apart from the handlers, which only hand it a finished spool: it blocks on the disk and
runs in a thread, and knows nothing of sessions or replies. Both names are still
imported from :mod:`smtpcore.server.app`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from smtpcore.server.config import ServerConfig
from smtpcore.server.delivery import DeliveryWorker
from smtpcore.server.freespace import FreeSpace
from smtpcore.server.log import logger
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.maildir import StagedMessage
from smtpcore.server.queue import (
    PreparedEntry,
    Queue,
    QueuedRecipient,
    QueueEntry,
    Spool,
)
from smtpcore.server.waits import Threads

__all__ = ["Accepted", "MailStore"]


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
