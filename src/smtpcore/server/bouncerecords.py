"""Which recipients each copy of a bounce has reported while they are still pending on
disk: one empty file per role and recipient in ``queue/bounced/``, so that a stop or a
crash between a bounce's two copies (or between a copy and the write that records its
recipients failed) does not report them again at the next start, nor does a later
round whose failures overlap theirs.

A bounce has up to two copies (:meth:`SenderReports.bounce
<smtpcore.server.reports.SenderReports.bounce>`): the sender's, for the failures
NOTIFY asked to hear of, and the postmaster's, whole, for the failures by this
server's policy; or, when the sender cannot take one, a combined copy to the
postmaster that stands for both. Each copy carries *parts*: a role (``sender``,
``postmaster``) and the recipients it reports in that role. A record's name is the
message's id, a role and a digest of one recipient, ``ID.sender-D``: before a copy is
made, the recipients recorded in its role are taken out of it
(:meth:`BounceRecords.unmade`), and a copy with none left is not made. A combined
copy records both its roles, and is made only for what they have not reported.

The records of a copy are written in the thread call that made it, right after it
landed (:func:`~smtpcore.server.waits.in_one_call`): no stop comes between them. A
copy queued carries their names too (:attr:`QueueEntry.bounce_records
<smtpcore.server.queue.QueueEntry.bounce_records>`), and the queue's start makes
those a crash in that instant kept from being made (:meth:`BounceRecords.restore_for`).
Only such a crash after a copy into a local mailbox, or a disk that refuses the
record, reports its recipients again. Records are never in the envelope: no envelope
write (a round's, an operator's ``hold``) can undo one. A recipient's records go once
the round's write records it failed (:meth:`BounceRecords.forget`), with the message
(:meth:`Queue.remove <smtpcore.server.queue.Queue.remove>`), and at the start for a
message no longer queued (:meth:`BounceRecords.keep_only`). Only regular files are
records: anything else found there is left alone.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from smtpcore.server.maildir import fsync_directory, make_private_directory
from smtpcore.server.safefiles import create_empty, is_visible, require_real_directory

__all__ = ["POSTMASTER", "SENDER", "BounceCopy", "BounceRecords", "RecordsLeft"]

SENDER: Final = "sender"
"""The role of the part a copy tells the sender (as NOTIFY and RET asked)."""
POSTMASTER: Final = "postmaster"
"""The role of the part a copy tells the postmaster (this server's policy, whole)."""
ROLES: Final = (POSTMASTER, SENDER)

_NAMED_FAILURES: Final = 5
"""How many of the records it could not remove a :class:`RecordsLeft` names."""


@dataclass(frozen=True, slots=True)
class BounceCopy:
    """One copy of one message's bounce: ``parts`` maps each role it stands for to the
    recipients it reports in that role."""

    queue_id: str
    parts: tuple[tuple[str, frozenset[str]], ...]

    @classmethod
    def of(
        cls, queue_id: str, *, sender: Collection[str] = (), postmaster: Collection[str] = ()
    ) -> BounceCopy:
        """The copy that tells ``sender`` (recipients) to the sender and ``postmaster``
        to the postmaster; a role with none is no part of it."""
        given = ((SENDER, frozenset(sender)), (POSTMASTER, frozenset(postmaster)))
        return cls(queue_id, tuple(sorted((role, r) for role, r in given if r)))

    @property
    def recipients(self) -> frozenset[str]:
        """Every recipient the copy reports, in any role."""
        return frozenset().union(*(recipients for _, recipients in self.parts))

    @property
    def label(self) -> str:
        """Which copy it is, for the log: ``sender``, ``postmaster``, or both."""
        return " and ".join(role for role, _ in self.parts)

    def has(self, role: str) -> bool:
        """Whether the copy reports anything in ``role``."""
        return any(part == role for part, _ in self.parts)

    def record_names(self) -> dict[str, tuple[str, str]]:
        """The name of each of its records, and the role and recipient it stands for."""
        return {
            record_name(self.queue_id, role, recipient): (role, recipient)
            for role, recipients in self.parts
            for recipient in recipients
        }

    def without(self, recorded: Collection[str]) -> BounceCopy:
        """The copy less each role's recipients whose record name is in ``recorded``."""
        left: dict[str, set[str]] = {}
        for name, (role, recipient) in self.record_names().items():
            if name not in recorded:
                left.setdefault(role, set()).add(recipient)
        return BounceCopy.of(
            self.queue_id, sender=left.get(SENDER, ()), postmaster=left.get(POSTMASTER, ())
        )


def record_name(queue_id: str, role: str, recipient: str) -> str:
    """The name of the record that ``recipient`` of ``queue_id`` was reported in
    ``role``: a digest of the address, which may hold any character (one that no
    longer parses: a slash, dots, a surrogate)."""
    text = recipient.encode("utf-8", "surrogateescape")
    return f"{queue_id}.{role}-{hashlib.sha256(text).hexdigest()[:16]}"


class RecordsLeft(OSError):
    """Records the disk would not remove, each tried: the first few named, with why."""

    def __init__(self, failures: list[tuple[str, OSError]]) -> None:
        named = "; ".join(
            f"{name}: {exc.strerror or exc}" for name, exc in failures[:_NAMED_FAILURES]
        )
        more = len(failures) - _NAMED_FAILURES
        super().__init__(
            f"{len(failures)} records not removed: {named}"
            + (f"; and {more} more" if more > 0 else "")
        )
        self.names = [name for name, _ in failures]


class BounceRecords:
    """The records of ``directory`` (``queue/bounced``). Its methods block on the disk:
    call them from a thread when an event loop must keep running."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def unmade(self, copy: BounceCopy) -> BounceCopy:
        """``copy`` less the recipients a record says were reported in its role."""
        return copy.without(set(self._names_of(copy.queue_id)))

    def exist_for(self, queue_id: str) -> bool:
        """Whether any record of ``queue_id`` is there: its message may be gone (a copy
        that finished after ``queue delete``, a removal the disk refused), but until
        the next start removes them a new message given its id would have its own
        recipients' reports left out."""
        return next(self._names_of(queue_id), None) is not None

    def made(self, copy: BounceCopy) -> bool:
        """Whether every recipient of ``copy`` is recorded reported in its role."""
        return not self.unmade(copy).parts

    def record(self, copy: BounceCopy) -> None:
        """Record the recipients of ``copy`` reported: a new empty file for each role
        and recipient, and one sync of the directory for them all (an empty file has
        no data of its own to sync: one sync each cost a bounce to 1,000 recipients
        seconds in its copy's turn at the disk threads). One there already is the same
        record."""
        if not self._exists():  # no record yet in this queue directory
            make_private_directory(self.directory)
        for name in copy.record_names():
            try:
                create_empty(self.directory / name)
            except FileExistsError:
                continue
        fsync_directory(self.directory)

    def restore_for(
        self, queue_id: str, recipients: Collection[str], names: Collection[str]
    ) -> list[str]:
        """Make each record of ``names`` (a queued copy's
        :attr:`~smtpcore.server.queue.QueueEntry.bounce_records`) that stands for one of
        ``recipients`` of ``queue_id`` (those still pending) and is not there, one sync
        of the directory for them all; the names made. A name for any other recipient
        makes nothing: one recorded failed has no records (the round removed them), and
        a name a hand-edited file holds is no record of this message. The queue's start
        calls it for a copy queued whose records a crash kept from being made."""
        made: list[str] = []
        for name in sorted(self._covering(queue_id, recipients).intersection(names)):
            if not made and not self._exists():
                make_private_directory(self.directory)
            try:
                create_empty(self.directory / name)
            except FileExistsError:
                continue
            made.append(name)
        if made:
            fsync_directory(self.directory)
        return made

    def forget(self, queue_id: str, recipients: Collection[str]) -> None:
        """Remove every record of ``recipients`` of ``queue_id``, in any role: they are
        recorded failed in the envelope now, and are reported no more."""
        covered = self._covering(queue_id, recipients)
        self._remove([name for name in self._names_of(queue_id) if name in covered])

    @staticmethod
    def _covering(queue_id: str, recipients: Collection[str]) -> set[str]:
        """The names of every record of ``recipients`` of ``queue_id``, in any role."""
        return {record_name(queue_id, role, r) for role in ROLES for r in recipients}

    def forget_message(self, queue_id: str) -> None:
        """Remove every record of ``queue_id``, which is gone from the queue."""
        self._remove(list(self._names_of(queue_id)))

    def keep_only(self, queue_ids: Collection[str]) -> None:
        """Remove the records of every message not in ``queue_ids`` (the queue's start):
        the message went while a copy's thread was writing its record, or a crash came
        between its removal and its records'."""
        self._remove([n for n in self._names() if n.partition(".")[0] not in queue_ids])

    def _remove(self, names: Iterable[str]) -> None:
        """Remove each of ``names``; one the disk refuses stops none of the others, and
        all of those are told at the end, in one :class:`RecordsLeft`."""
        removed = False
        failures: list[tuple[str, OSError]] = []
        for name in names:
            try:
                os.unlink(self.directory / name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                failures.append((name, exc))
                continue
            removed = True
        if removed:
            fsync_directory(self.directory)
        if failures:
            raise RecordsLeft(failures)

    def _names_of(self, queue_id: str) -> Iterator[str]:
        prefix = f"{queue_id}."
        return (name for name in self._names() if name.startswith(prefix))

    def _exists(self) -> bool:
        """Whether the directory is there; ``NotADirectoryError`` for a link in its
        place (records would be made and removed where it points)."""
        try:
            require_real_directory(self.directory)
        except FileNotFoundError:
            return False
        return True

    def _names(self) -> Iterator[str]:
        """The records: regular files, not links, not directories (a stray one is no
        record, and no unlink of it can fail)."""
        if not self._exists():
            return
        with os.scandir(self.directory) as scan:
            for item in scan:
                if is_visible(item.name) and item.is_file(follow_symlinks=False):
                    yield item.name
