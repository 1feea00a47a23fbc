"""The outbound queue: messages accepted for relay, kept on disk until done.

RFC 5321 §6.1: once a server has answered 250 to the end of a message it
must deliver it or report its failure, even across a crash. So a message
for remote recipients is on disk, content and envelope, synced, before the
250 goes out, and the delivery worker finds it there after a restart.

Layout under the queue directory, all on one file system::

    tmp/            messages being received, envelopes being rewritten
    messages/ID     the content, in wire form (CRLF), our Received header first
    envelopes/ID    sender, recipients and each recipient's state, as JSON
    bounced/ID.*    the copies of a bounce made while their recipients are still
                    pending here (:mod:`smtpcore.server.bouncerecords`)

Creating ``envelopes/ID`` (by a rename, after ``messages/ID`` is in place)
is what commits an entry; removing it is what ends one. A content file with
no envelope is what a crash left half-done, and :meth:`Queue.open` removes
it; files in ``tmp/`` likewise. An envelope with no content is never what a
crash of ours leaves, except in the middle of moving a damaged entry to
``corrupt/``: :meth:`Queue.open` finishes that move, and sets aside any other
such envelope there too, logged, for it holds an accepted message's sender
and recipients.

This module keeps the queue directory (:class:`Queue`: its opening and recovery, the
entries' commit, reading, update and removal) and :class:`PreparedEntry`. The values an
entry holds are ``_queue_entry``'s (their JSON fields checked by ``_queue_fields``),
the content's files ``_queue_content``'s, the ids' form ``_queue_ids``'. Every public
name is still imported from here.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from smtpcore.server._queue_content import QueuedContent, Spool
from smtpcore.server._queue_entry import QueuedRecipient, QueueEntry, RecipientStatus
from smtpcore.server._queue_ids import checked_queue_id, is_queue_id, new_queue_id
from smtpcore.server.bouncerecords import BounceRecords
from smtpcore.server.log import logger
from smtpcore.server.maildir import fsync_directory, make_private_directory
from smtpcore.server.safefiles import (
    is_visible,
    read_regular_bytes,
    replace_synced,
    require_real_directory,
    write_synced,
)

__all__ = [
    "PreparedEntry",
    "Queue",
    "QueuedContent",
    "QueueEntry",
    "QueuedRecipient",
    "RecipientStatus",
    "Spool",
    "checked_queue_id",
    "is_queue_id",
    "new_queue_id",
]


# The classes moved into private modules keep the name callers import them by in
# ``__module__``, which tracebacks and pickling read (as ``_maildrop_errors`` does).
for _moved in (QueuedContent, QueuedRecipient, QueueEntry, RecipientStatus, Spool):
    _moved.__module__ = __name__
del _moved


def _is_regular(path: Path) -> bool:
    """Whether ``path`` is a regular file itself (a link is not followed)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove_leftover(path: Path) -> None:
    """Remove what a crash left half-done; what cannot be removed (a directory made
    there by hand) is logged and left, and the queue opens all the same."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("%s: cannot remove a leftover queue file: %s", path, exc)


@dataclass(frozen=True, slots=True)
class PreparedEntry:
    """Content and envelope on disk and synced, one rename away from being queued."""

    queue: Queue
    entry: QueueEntry
    content_tmp: Path
    envelope_tmp: Path

    def commit(self) -> QueueEntry:
        """Move the content, then the envelope (the commit point), into place.

        If a step fails, what was moved is removed, and what was not (:meth:`discard`):
        the entry is queued wholly or not at all, and no file is left in ``tmp/``."""
        queue = self.queue
        content = queue.content_path(self.entry.id)
        envelope = queue.envelope_path(self.entry.id)
        try:
            os.replace(self.content_tmp, content)
            fsync_directory(queue.directory / "messages")
            os.replace(self.envelope_tmp, envelope)
            fsync_directory(queue.directory / "envelopes")
        except BaseException:
            envelope.unlink(missing_ok=True)
            content.unlink(missing_ok=True)
            self.discard()
            raise
        return self.entry

    def discard(self) -> None:
        self.envelope_tmp.unlink(missing_ok=True)
        self.content_tmp.unlink(missing_ok=True)


class Queue:
    """The queue directory. Its methods block on the disk: call them from a thread
    when an event loop must keep running."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock
        self.bounced = BounceRecords(directory / "bounced")
        """The copies of bounces made and not yet recorded in their envelopes."""

    def content_path(self, queue_id: str) -> Path:
        return self.directory / "messages" / queue_id

    def envelope_path(self, queue_id: str) -> Path:
        return self.directory / "envelopes" / queue_id

    def open(self) -> list[QueueEntry]:
        """Create the directories, clear what a crash left half-done, return the entries.

        An envelope that cannot be read (damaged by hand, or by a disk: not the JSON
        of an entry, or a read that fails) is moved with its content to ``corrupt/``,
        as Postfix moves such files aside: the message is kept for the operator, and
        the rest of the queue goes on. One that cannot even be moved is left where it
        is, with its content, and skipped. An envelope whose content is gone goes to
        ``corrupt/`` too (see :meth:`_without_content`)."""
        for sub in ("tmp", "messages", "envelopes", "bounced"):
            make_private_directory(self.directory / sub)
            require_real_directory(self.directory / sub)
        for leftover in (self.directory / "tmp").iterdir():
            _remove_leftover(leftover)
        entries = []
        kept: set[str] = set()
        for queue_id in sorted(self.ids()):
            if not os.path.lexists(self.content_path(queue_id)):
                self._without_content(queue_id)
                continue
            try:
                entries.append(self._load_with_content(queue_id))
            except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
                if not self._set_aside(queue_id, exc):
                    kept.add(queue_id)
        kept.update(entry.id for entry in entries)
        for path in (self.directory / "messages").iterdir():
            if path.name not in kept and is_visible(path.name):
                _remove_leftover(path)
        try:
            self.bounced.keep_only(kept)
        except OSError as exc:  # records of messages gone: they stand for nothing
            logger.warning("cannot remove the bounce records of messages gone: %s", exc)
        return self._settle_reports(entries)

    def _load_with_content(self, queue_id: str) -> QueueEntry:
        """:meth:`load`, and a ``ValueError`` when the content is not a regular file (a
        FIFO would hang the relay that reads it)."""
        entry = self.load(queue_id)
        if not _is_regular(self.content_path(queue_id)):
            raise ValueError(f"{self.content_path(queue_id)}: not a regular file")
        return entry

    def _settle_reports(self, entries: list[QueueEntry]) -> list[QueueEntry]:
        """Settle what a crash left between queuing a report and recording it queued
        (RFC 3461 §6.2: one report, not two): clear the success reports owed that are
        queued already, and make the missing records of the bounce copies queued
        (:meth:`_restore_bounce_records`). The delivery worker queues a report only
        before it records it so, and delivers it only after: so a queued report whose
        entry still owes it is in the queue yet."""
        found = {entry.id: entry for entry in entries}
        for report in entries:
            owing = found.get(report.report_on or "")
            if owing is None:
                continue
            if report.bounce_records:
                self._restore_bounce_records(owing, report)
            done = {
                r.address: replace(r, report_owed=None)
                for r in owing.recipients
                if r.report_owed is not None and r.address in report.reported
            }
            if not done:
                continue
            try:
                self.update(owing.with_recipients(done))
            except OSError as exc:
                logger.error("%s: cannot record its success report queued: %s", owing.id, exc)
                continue
            found[owing.id] = owing.with_recipients(done)
            logger.info("%s: success report queued before a stop, as %s", owing.id, report.id)
        return list(found.values())

    def _restore_bounce_records(self, owing: QueueEntry, copy: QueueEntry) -> None:
        """Make the records of the bounce ``copy`` (queued, on ``owing``) that a crash
        kept from being made after its commit, for the recipients still pending: else
        the next round reports them again. A recipient recorded failed has none (the
        round removed them)."""
        pending = [r.address for r in owing.pending]
        try:
            made = self.bounced.restore_for(owing.id, pending, copy.bounce_records)
        except OSError as exc:
            logger.error(
                "%s: cannot record the bounce %s queued before a stop: %s; its recipients "
                "may be reported again",
                owing.id,
                copy.id,
                exc,
            )
            return
        if made:
            logger.info(
                "%s: bounce queued before a stop, as %s: %d records made again",
                owing.id,
                copy.id,
                len(made),
            )

    def _without_content(self, queue_id: str) -> None:
        """Set aside an envelope whose content is gone. If the content is in
        ``corrupt/``, a crash cut :meth:`_set_aside` short, and this finishes it.
        Otherwise the content was lost (a disk, an operator's ``rm``): the envelope
        is the only record left of a message accepted for delivery (RFC 5321 §6.1),
        and no bounce can be made without the message it would return, so the
        envelope is kept and its sender and recipients logged as an error."""
        corrupt = self.directory / "corrupt"
        if (corrupt / f"{queue_id}.message").exists() and not (
            corrupt / f"{queue_id}.envelope"
        ).exists():
            problem, level = "damaged entry half set aside (a crash)", logging.WARNING
        else:
            try:
                entry = self.load(queue_id)
                to = ", ".join(f"<{r.address}>" for r in entry.pending) or "none"
                whose = f"from=<{entry.sender}> to={to}"
            except (OSError, ValueError) as exc:
                whose = f"queue file unreadable too: {exc}"
            problem = f"message lost from the queue ({whose}); no bounce can be made without it"
            level = logging.ERROR
        failed = self._into_corrupt(queue_id, content=False)
        if failed is not None:
            logger.error(
                "%s: %s; its queue file cannot be moved to %s: %s; skipped",
                queue_id,
                problem,
                corrupt,
                failed,
            )
            return
        logger.log(level, "%s: %s; its queue file moved to %s", queue_id, problem, corrupt)

    def _into_corrupt(self, queue_id: str, *, content: bool) -> OSError | None:
        """Move an entry's envelope, and its content first when ``content``, to
        ``corrupt/``; the error that stopped it, or None. The content goes first: if
        only it moves, the message is safe there."""
        corrupt = self.directory / "corrupt"
        try:
            corrupt.mkdir(mode=0o700, exist_ok=True)
            require_real_directory(corrupt)  # a link there would take the files elsewhere
            if content:
                self.content_path(queue_id).replace(corrupt / f"{queue_id}.message")
            self.envelope_path(queue_id).replace(corrupt / f"{queue_id}.envelope")
        except OSError as exc:
            return exc
        return None

    def _set_aside(self, queue_id: str, problem: Exception) -> bool:
        """Move a damaged entry's content and envelope to ``corrupt/``; False when
        that fails (what was not moved stays, and the queue opens without it)."""
        corrupt = self.directory / "corrupt"
        failed = self._into_corrupt(queue_id, content=True)
        if failed is not None:
            logger.error(
                "%s: queue file damaged (%s) and cannot be moved to %s: %s; skipped",
                queue_id,
                problem,
                corrupt,
                failed,
            )
            return False
        logger.warning("%s: queue file damaged, moved to %s: %s", queue_id, corrupt, problem)
        return True

    def _unused_id(self) -> str:
        """An id that no queue file, no file set aside and no leftover bounce record
        holds."""
        while True:
            queue_id = new_queue_id()
            corrupt = self.directory / "corrupt"
            taken = (
                self.envelope_path(queue_id),
                self.content_path(queue_id),
                self.directory / "tmp" / queue_id,
                corrupt / f"{queue_id}.message",  # set aside: kept apart from a new one's
                corrupt / f"{queue_id}.envelope",
            )
            if any(os.path.lexists(path) for path in taken) or self._has_records(queue_id):
                continue
            return queue_id

    def _has_records(self, queue_id: str) -> bool:
        """Whether bounce records left by a message gone hold ``queue_id``. Records the
        disk will not list take no id: a bounce could not read them either, and makes
        its copies whole."""
        try:
            return self.bounced.exist_for(queue_id)
        except OSError:
            return False

    def spool(self) -> Spool:
        """Start receiving a message."""
        queue_id = self._unused_id()
        return Spool(queue_id, self.directory / "tmp" / queue_id)

    def prepare(
        self,
        spool: Spool,
        sender: str,
        recipients: Sequence[str | QueuedRecipient],
        *,
        client: str = "",
        params: Iterable[tuple[str, str | None]] = (),
        report_on: str | None = None,
        reported: Sequence[str] = (),
        bounce_records: Sequence[str] = (),
    ) -> PreparedEntry:
        """Sync the spooled content and write the envelope beside it, not yet committed.

        A recipient given as a :class:`QueuedRecipient` keeps its DSN parameters;
        ``report_on``, ``reported`` and ``bounce_records`` mark a report made here
        (:attr:`QueueEntry.report_on`, :attr:`QueueEntry.bounce_records`)."""
        spool.finish()
        unique: dict[str, QueuedRecipient] = {}
        for recipient in recipients:
            if isinstance(recipient, str):
                recipient = QueuedRecipient(recipient)
            unique.setdefault(recipient.address, recipient)
        entry = QueueEntry(
            id=spool.id,
            sender=sender,
            recipients=tuple(unique.values()),
            created=self.clock(),
            size=spool.size,
            client=client,
            params=tuple(params),
            report_on=report_on,
            reported=tuple(reported),
            bounce_records=tuple(bounce_records),
        )
        envelope_tmp = self.directory / "tmp" / f"{spool.id}.envelope"
        write_synced(envelope_tmp, entry.to_json().encode("utf-8"))
        return PreparedEntry(self, entry, spool.path, envelope_tmp)

    def add(
        self,
        content: bytes,
        sender: str,
        recipients: Sequence[str],
        *,
        params: Iterable[tuple[str, str | None]] = (),
        report_on: str | None = None,
        reported: Sequence[str] = (),
        bounce_records: Sequence[str] = (),
    ) -> QueueEntry:
        """Queue a message made here (a bounce, a report) in one go."""
        spool = self.spool()
        try:
            spool.write(content)
            prepared = self.prepare(
                spool,
                sender,
                recipients,
                client="local",
                params=params,
                report_on=report_on,
                reported=reported,
                bounce_records=bounce_records,
            )
        except BaseException:
            spool.discard()
            raise
        return prepared.commit()

    def ids(self) -> Iterator[str]:
        """The ids of the envelopes on disk, in directory order, as the directory is read
        (none held but the one given): what is not read is not kept. Dot-names are no
        entries (see :func:`~smtpcore.server.safefiles.is_visible`)."""
        try:
            scan = os.scandir(self.directory / "envelopes")
        except FileNotFoundError:
            return
        with scan:
            for item in scan:
                if is_visible(item.name):
                    yield item.name

    def scan(
        self, damaged: Callable[[str, OSError | ValueError], object] | None = None
    ) -> Iterator[QueueEntry]:
        """Every entry on disk, read one at a time without changing anything. A file
        that goes meanwhile (delivered, or being replaced) is skipped; one that is
        damaged or cannot be read is skipped too, and told to ``damaged`` with the
        error, for a tool to show (Postfix's ``showq`` warns of each): the server's
        start moves those to ``queue/corrupt/`` instead."""
        for queue_id in self.ids():
            try:
                yield self.load(queue_id)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                if damaged is not None:
                    damaged(queue_id, exc)

    def entries(self) -> list[QueueEntry]:
        """Every entry now on disk, by id (see :meth:`scan`, which holds one at a time)."""
        return sorted(self.scan(), key=lambda entry: entry.id)

    def has(self, queue_id: str) -> bool:
        """Whether ``queue_id`` is an id and its envelope is there, none of them read."""
        return is_queue_id(queue_id) and os.path.lexists(self.envelope_path(queue_id))

    def load(self, queue_id: str) -> QueueEntry:
        """The entry ``envelopes/queue_id`` holds; ``ValueError`` for a damaged one (see
        :meth:`QueueEntry.from_json`), a link or anything but a regular file included
        (a FIFO opened to be read would block for ever), and for one that names another
        id: its files are found, and removed, by the id it names."""
        data = read_regular_bytes(self.envelope_path(checked_queue_id(queue_id)))
        entry = QueueEntry.from_json(data.decode("utf-8"))
        if entry.id != queue_id:
            raise ValueError(f"malformed queue file: it names the entry {entry.id!r}")
        return entry

    def read_content(self, queue_id: str) -> bytes:
        """The whole content, for tools and tests; the relay reads :meth:`content`. A
        link or a FIFO in its place is a ``ValueError``, as for :meth:`load`."""
        return read_regular_bytes(self.content_path(checked_queue_id(queue_id)))

    def content(self, queue_id: str) -> QueuedContent:
        """The content of ``queue_id``, to be read in pieces."""
        return QueuedContent(self.content_path(queue_id))

    def update(self, entry: QueueEntry) -> None:
        """Replace an entry's envelope atomically (write, fsync, rename, fsync).

        Each rewrite has a temporary file of its own: two at once (an operator's
        command and a delivery round) must not write into one file, whose rename
        would then put a mix of both, or nothing, in place of the envelope; it is removed
        when the write or the rename fails (:func:`~smtpcore.server.safefiles.replace_synced`),
        or each deferred round on a directory that refuses the rename leaves one more."""
        tmp = self.directory / "tmp" / f"{entry.id}.{secrets.token_hex(6)}.update"
        replace_synced(self.envelope_path(entry.id), tmp, entry.to_json().encode("utf-8"))
        fsync_directory(self.directory / "envelopes")

    def remove(self, queue_id: str) -> None:
        """End an entry: the envelope goes first, so a crash leaves only orphans (its
        content, its bounce records), which :meth:`open` removes."""
        self.envelope_path(checked_queue_id(queue_id)).unlink(missing_ok=True)
        fsync_directory(self.directory / "envelopes")
        self.content_path(queue_id).unlink(missing_ok=True)
        try:
            self.bounced.forget_message(queue_id)
        except OSError as exc:  # the message is gone all the same
            logger.warning("%s: cannot remove its bounce records: %s", queue_id, exc)
