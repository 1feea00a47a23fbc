"""Which copies of a bounce have landed while their recipients are still pending on
disk: one empty file per copy in ``queue/bounced/``, so that a stop or a crash between
a bounce's two copies (or between a copy and the write that records its recipients
failed) does not make the copy that landed again at the next start.

A bounce has up to two copies (:meth:`SenderReports.bounce
<smtpcore.server.reports.SenderReports.bounce>`): the sender's, for the failures
NOTIFY asked to hear of, and the postmaster's, whole, for the failures by this
server's policy; or, when the sender cannot take one, a combined copy to the
postmaster that stands for both. Each copy carries *parts*: a role (``sender``,
``postmaster``) and a digest of the recipients reported in that role. A record's name
is the message's id and the copy's parts, ``ID.postmaster-D1+sender-D2``, so a copy is
known made when each of its parts is in some record of the message: a combined copy
stands in for the two others, and they for it. A later round that fails other
recipients reports another set, with another digest: its copies are made.

The record is written in the thread call that made the copy, right after it landed
(:func:`~smtpcore.server.waits.in_one_call`): no stop comes between them. Only a crash
in that instant, or a disk that refuses the record, makes the copy again. Records are
never in the envelope: no envelope write (a round's, an operator's ``hold``) can undo
one. They go once the round's write records the recipients failed, with the message
(:meth:`Queue.remove <smtpcore.server.queue.Queue.remove>`), and at the start for a
message no longer queued (:meth:`BounceRecords.keep_only`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from smtpcore.server.maildir import fsync_directory, make_private_directory
from smtpcore.server.safefiles import is_visible, require_real_directory, write_synced

__all__ = ["POSTMASTER", "SENDER", "BounceCopy", "BounceRecords"]

SENDER: Final = "sender"
"""The role of the part a copy tells the sender (as NOTIFY and RET asked)."""
POSTMASTER: Final = "postmaster"
"""The role of the part a copy tells the postmaster (this server's policy, whole)."""


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

    def part_names(self) -> frozenset[str]:
        """Each part as a name: its role and a digest of its recipients."""
        return frozenset(f"{role}-{_digest(recipients)}" for role, recipients in self.parts)

    @property
    def name(self) -> str:
        """The record's file name."""
        return f"{self.queue_id}.{'+'.join(sorted(self.part_names()))}"


class BounceRecords:
    """The records of ``directory`` (``queue/bounced``). Its methods block on the disk:
    call them from a thread when an event loop must keep running."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def made(self, copy: BounceCopy) -> bool:
        """Whether each part of ``copy`` is in a record of its message."""
        recorded: set[str] = set()
        for name in self._names_of(copy.queue_id):
            recorded.update(name[len(copy.queue_id) + 1 :].split("+"))
        return copy.part_names() <= recorded

    def record(self, copy: BounceCopy) -> None:
        """Record ``copy`` landed: a new empty file, synced, as the queue's others. One
        there already is the same record."""
        if not self._exists():  # no record yet in this queue directory
            make_private_directory(self.directory)
        try:
            write_synced(self.directory / copy.name, b"")
        except FileExistsError:
            return
        fsync_directory(self.directory)

    def forget(self, copies: Iterable[BounceCopy]) -> None:
        """Remove the records of ``copies``, whose recipients are now recorded failed."""
        self._remove(copy.name for copy in copies)

    def forget_message(self, queue_id: str) -> None:
        """Remove every record of ``queue_id``, which is gone from the queue."""
        self._remove(list(self._names_of(queue_id)))

    def keep_only(self, queue_ids: Collection[str]) -> None:
        """Remove the records of every message not in ``queue_ids`` (the queue's start):
        the message went while a copy's thread was writing its record, or a crash came
        between its removal and its records'."""
        self._remove([n for n in self._names() if n.partition(".")[0] not in queue_ids])

    def _remove(self, names: Iterable[str]) -> None:
        removed = False
        for name in names:
            try:
                os.unlink(self.directory / name)
            except FileNotFoundError:
                continue
            removed = True
        if removed:
            fsync_directory(self.directory)

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
        if not self._exists():
            return
        with os.scandir(self.directory) as scan:
            for item in scan:
                if is_visible(item.name):
                    yield item.name


def _digest(recipients: Iterable[str]) -> str:
    """A short digest of a set of addresses, whatever their order (and whatever they
    hold: an address that no longer parses may have any character)."""
    text = "\n".join(sorted(recipients)).encode("utf-8", "surrogateescape")
    return hashlib.sha256(text).hexdigest()[:16]
