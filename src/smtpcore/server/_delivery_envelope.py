"""The delivery worker's reading and writing of queue entries: an entry as this process
last left it, its write kept in memory where the disk refuses it (:class:`_EnvelopeKeeping`,
a base class of :class:`~smtpcore.server.delivery.DeliveryWorker`), and the writes of one
message's envelope, one at a time in a thread, the newest entry winning
(:class:`_Envelope`). Apart because rounds, destination jobs, settlement and the
operator's actions all write through it, and what it promises (nothing sent or reported
is done again) is its whole job."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

from smtpcore.server.log import logger
from smtpcore.server.queue import Queue, QueueEntry
from smtpcore.server.waits import ThreadShare

__all__ = ["_Envelope", "_EnvelopeKeeping"]


class _Envelope:
    """The writes of one message's envelope, in a thread, one at a time, each writing
    the newest entry given (:attr:`latest`): writes handed over at once by concurrent
    jobs land in order, and none undoes a newer one. A write that finds the newest entry
    on disk already has nothing to do."""

    __slots__ = ("__weakref__", "_lock", "_on_disk", "latest")

    def __init__(self, entry: QueueEntry) -> None:
        self.latest = entry
        self._lock = threading.Lock()
        self._on_disk: QueueEntry | None = None

    def write(self, update: Callable[[QueueEntry], None]) -> QueueEntry:
        """Write :attr:`latest` with ``update`` (in a thread); the entry now on disk."""
        with self._lock:
            latest = self.latest
            if latest is not self._on_disk:
                update(latest)
                self._on_disk = latest
            return latest


class _EnvelopeKeeping:
    """The worker's entries, read and written: what a round, a report or an operator's
    action finds and leaves in the queue, kept in memory while the disk refuses it."""

    queue: Queue
    disk: ThreadShare
    _envelopes: weakref.WeakValueDictionary[str, _Envelope]
    _unsaved: dict[str, QueueEntry]

    async def _gone(self, queue_id: str, exc: BaseException) -> bool:
        """Whether ``exc`` means that the message is gone (removed by hand, or by the
        operator meanwhile): a FileNotFoundError while its own files, envelope or
        content, are missing. Any other file missing (the relay's CA bundle, a
        mailbox's directory) is a local error like any other: the message is retried,
        and bounces at ``max_queue_age`` (RFC 5321 §6.1), not forgotten until a
        restart with its files left in the queue."""
        if not isinstance(exc, FileNotFoundError):
            return False

        def missing() -> bool:
            try:
                return not (
                    self.queue.envelope_path(queue_id).exists()
                    and self.queue.content_path(queue_id).exists()
                )
            except OSError:  # not known to be gone: a local error
                return False

        return await self.disk.run(missing)

    async def _load(self, queue_id: str) -> QueueEntry:
        """The entry, as this process last left it if its queue file is behind. The
        file is read all the same: one removed meanwhile ends the delivery."""
        entry = await self.disk.run(self.queue.load, queue_id)
        return self._unsaved.get(queue_id, entry)

    async def _save(self, entry: QueueEntry) -> QueueEntry:
        """Write ``entry`` to its queue file. Kept in memory first: if the disk refuses
        it, this process still knows what it sent and reported, and the next round
        writes it again (a restart meanwhile forgets it, as RFC 1047's gap does)."""
        await self._saved(entry)
        return entry

    async def _saved(self, entry: QueueEntry) -> bool:
        """:meth:`_save`, and whether ``entry`` is on disk now."""
        try:
            await self._write(entry)
        except OSError as exc:
            logger.error(
                "%s: cannot record the delivery state in the queue: %s; kept in memory, "
                "written again at the next attempt",
                entry.id,
                exc,
            )
            return False
        return True

    async def _write(self, entry: QueueEntry) -> None:
        """:meth:`_save`, raising what the disk refuses: an operator's action must know
        whether it is on disk (its command is kept until it is). Once it is, the entry
        is no longer kept in memory, unless another write put its own there meanwhile:
        that one is not on disk because this one is.

        The write is handed to its thread before any await (:class:`_Envelope`): a
        stop that cancels the caller cannot keep it from landing, and concurrent writes
        of one message land one at a time, each with the newest entry. So it never
        waits for a slot of the worker's share of the threads (:meth:`ThreadShare.now
        <smtpcore.server.waits.ThreadShare.now>`, not ``run``): cancelled in that wait,
        it would never be handed over, and a recipient an exchanger accepted would stay
        pending on disk, sent again after a restart."""
        self._unsaved[entry.id] = entry
        envelope = self._envelopes.get(entry.id)
        if envelope is None:
            envelope = self._envelopes[entry.id] = _Envelope(entry)
        envelope.latest = entry
        written = await self.disk.now(envelope.write, self.queue.update)
        if self._unsaved.get(entry.id) is written:
            del self._unsaved[entry.id]
