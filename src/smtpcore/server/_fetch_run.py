"""One ``fetch`` run over the server's listing (:class:`_FetchRun`): each message
taken in turn, stored, recorded, and deleted only once the record holding it is on
disk, then the record written before QUIT; and the run's last line.

Apart from the command (:mod:`smtpcore.server.fetch`), which connects, logs in and
lists, because this is the part that decides, message by message, what is stored,
what is skipped and what is deleted, and in which order the record and the server
hear of it, so that nothing is lost whatever stops the run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from smtpcore._plural import messages
from smtpcore.asyncio import MessageListing, POP3Client, POP3ResponseError
from smtpcore.server._fetch_output import _fetch_failed, _warn
from smtpcore.server._fetch_retrieve import _retrieve, _Retrieved, _to_its_end_in_thread
from smtpcore.server._fetch_summary import _summary
from smtpcore.server.fetchrecord import FetchRecord, why_it_failed
from smtpcore.server.maildir import Maildir
from smtpcore.server.tools import printable


@dataclass(frozen=True)
class _LeftThere:
    """How a run reports a message the server refused a command for, and left there:
    ``report`` on its stderr line, ``tally`` in the last line's count."""

    report: str
    tally: str


_LEFT_ON_REFUSAL: Final = {
    "RETR": _LeftThere(
        "not retrieved, left on the server", "the server could not give, left there"
    ),
    "DELE": _LeftThere(
        "stored but not deleted from the server", "stored but not deleted, left there"
    ),
}
"""The commands whose ``-ERR`` leaves their message on the server while the run goes on
(see :meth:`_FetchRun._unless_refused`): RFC 1939 §5 lets RETR fail (Dovecot and our own
server answer it for a message whose file is gone since the listing), and §7 lets DELE
fail (a message another session deleted, a read-only maildrop)."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Taken:
    """A message stored, or found stored, as listed, and its content's digest: what the
    record knows it by."""

    item: MessageListing
    digest: str


@dataclass
class _FetchRun:
    """One ``fetch`` over the listing: each message stored and its unique-id recorded
    before it is deleted, so that nothing is lost whatever stops the run.

    Deletions wait for the record: a message is marked deleted (DELE) only once its
    id is on disk, which :meth:`FetchRecord.save` does for several at once (see
    :attr:`FetchRecord.due`); they take effect at QUIT alone (RFC 1939 §6).

    A record that cannot be written is no longer written in the rest of the run (see
    :meth:`_save_record`), but still tells which messages were stored before; the run
    goes on past a message whose RETR or DELE the server refuses too (see
    :meth:`_unless_refused`)."""

    client: POP3Client
    target: Maildir | None
    record: FetchRecord | None
    delete: bool
    again: bool
    """``--all``: fetch the messages stored before too."""
    say: Callable[[str], None]
    fetched: int = 0
    octets: int = 0
    skipped: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """The messages left on the server by a refusal, by the command refused."""
    record_lost: bool = False
    """The record could not be written: it is not written again in this run, which
    still reads it for what was stored before, and the next run fetches again what
    this one stored."""
    ids_trusted: bool = True
    """Every message listed has a unique-id of its own: a record match is then taken as
    the message stored. A listing that leaves one out, or repeats one, may give a new
    message an id stored before (a server that leaves A out may list new B under A's
    id), so a match is read again and stored unless its content is the one recorded."""
    _deletions_held: list[_Taken] = field(default_factory=list)
    _deleted: list[_Taken] = field(default_factory=list)
    """The messages the server took DELE for: forgotten before QUIT commits them."""

    async def take_all(self, listing: list[MessageListing]) -> None:
        """Take each message in turn, then write what the record still lacks and send
        the deletions it held. When the run stops on an error, the record is written
        still (the messages stored are not stored again), but nothing more is deleted.

        A record pruned by :func:`~smtpcore.server._fetch_record_for._record_for` is
        written first, so that no run, however it stops (killed, the power cut, where no
        handler runs), leaves on disk the entry of an id it found gone or repeated: a new
        message given that id, of the old one's size, would match it and be skipped at
        every later run. One write per run that finds ids gone, before any message; none
        when none is."""
        if self._record_unsaved():
            await self._save_record()
        try:
            for item in listing:
                await self._take(item)
        except BaseException:
            if self._record_unsaved():
                await self._write_record(
                    "the messages this run stored will be fetched again next time"
                )
            raise
        if self.record is not None and not self.refused["RETR"]:
            self.record.forget_unclaimed()  # every message without an id was read
        if self._record_unsaved():
            await self._save_record()

    def _record_unsaved(self) -> bool:
        """Whether there is a record still written in this run that holds something not on
        disk yet."""
        return self.record is not None and not self.record_lost and self.record.unsaved

    async def _take(self, item: MessageListing) -> None:
        if item.uid is None:
            await self._take_unidentified(item)
        elif self._stored_before(item):
            await self._take_stored_before(item)
        else:
            await self._fetch(item)

    async def _take_unidentified(self, item: MessageListing) -> None:
        """A message listed without a unique-id of its own: read and told by its content
        when the record holds an unclaimed message of its size stored so
        (:meth:`FetchRecord.claim_unidentified`), as a recorded message of a listing
        not trusted is; else fetched as new. It crosses the wire at every run: nothing
        else tells it from one stored before (fetchmail falls back on RFC 1460's
        ``LAST``, gone since RFC 1725; a header does not tell mail made from one
        template apart)."""
        record = self.record
        if self.again or record is None or not record.may_hold_unidentified(item.size):
            await self._fetch(item)
        else:
            await self._read_again(item)

    def _stored_before(self, item: MessageListing) -> bool:
        return (
            not self.again
            and self.record is not None
            and item.uid is not None
            and self.record.holds(item.uid, item.size)
        )

    async def _take_stored_before(self, item: MessageListing) -> None:
        """A message listed with an id and size recorded: left alone without
        ``--delete``, no command sent. Under ``--delete`` it is read again and deleted
        only when its whole content is the one stored: RFC 1939 §7 keeps an id from reuse
        only while its message exists, and neither the size nor the header (``TOP n 0``)
        tells a new message made from the same template from the old one. Else what
        that one RETR gave is stored as new: a duplicate at worst, never a loss, and
        never a second download. Its copy in ``tmp/`` is dropped when the content is the
        one stored, and a failure to write it (a full disk) stops the run only when the
        content is new (see :class:`~smtpcore.server._fetch_retrieve._Copy`). A listing
        whose ids are not trusted (:attr:`ids_trusted`) has the match read again without
        ``--delete`` too."""
        if not self.delete and self.ids_trusted:
            self.skipped += 1
            return
        await self._read_again(item)

    async def _read_again(self, item: MessageListing) -> None:
        """Retrieve ``item``, which the record may hold, and store it unless its content
        is the one recorded; deleted then under ``--delete`` (see
        :meth:`_take_stored_before`)."""
        retrieved = await self._unless_refused(
            item.number, _retrieve(self.client, item.number, self.target, checking=True)
        )
        if retrieved is None:
            return
        if not self._holds_content(item, retrieved.digest):
            await self._took(item, retrieved)
            return
        retrieved.copy.drop()
        if not self._deleting or await self._delete(_Taken(item, retrieved.digest)):
            self.skipped += 1

    def _holds_content(self, item: MessageListing, digest: str) -> bool:
        """Whether the record holds ``item``, whose content has ``digest``: by its id
        and size, or, listed without an id, by an unclaimed entry of its size and
        digest (claimed then)."""
        record = self.record
        assert record is not None
        if item.uid is None:
            return record.claim_unidentified(item.size, digest)
        return record.holds_content(item.uid, item.size, digest)

    async def _fetch(self, item: MessageListing) -> None:
        retrieved = await self._unless_refused(
            item.number, _retrieve(self.client, item.number, self.target)
        )
        if retrieved is not None:
            await self._took(item, retrieved)

    async def _took(self, item: MessageListing, retrieved: _Retrieved) -> None:
        """Message ``item`` is new: keep its copy, then count it, name it, record it."""
        await retrieved.copy.keep()
        self.fetched += 1
        self.octets += retrieved.size
        self.say(_summary(item.number, retrieved.size, bytes(retrieved.head.data)))
        await self._stored(item, retrieved)

    async def _unless_refused(self, number: int, command: Awaitable[_T]) -> _T | None:
        """What ``command``, sent for message ``number``, gives; None when the server
        answers it ``-ERR`` and :data:`_LEFT_ON_REFUSAL` says that leaves the message
        on the server. The message is named on stderr and the others are still taken,
        as fetchmail does, so that QUIT commits the deletions of those stored (RFC 1939
        §6); the exit status, 1, tells cron. Any other failure stops the run."""
        try:
            return await command
        except POP3ResponseError as exc:
            left = _LEFT_ON_REFUSAL.get(exc.command)
            if left is None:
                raise
            self.refused[exc.command] += 1
            _fetch_failed(f"message {number} {left.report}: {exc}")
            return None

    async def _delete(self, taken: _Taken) -> bool:
        """DELE the message ``taken``, stored and recorded; whether the server took it.
        Refused, it stays on the server, and a next run with the record reads it again
        and retries the DELE, never storing it twice."""
        number = taken.item.number

        async def dele() -> bool:
            await self.client.delete(number)
            return True

        if await self._unless_refused(number, dele()) is None:
            return False
        self._deleted.append(taken)
        return True

    @property
    def _deleting(self) -> bool:
        """Whether messages are deleted: under ``--delete``, while the record can be
        written (see :meth:`record_without_deleted`)."""
        return self.delete and not self.record_lost

    async def record_without_deleted(self) -> bool:
        """Before QUIT: forget the messages this run deleted and write the record; whether
        QUIT may commit the deletions (else the caller sends RSET, RFC 1939 §5).

        Kept, an entry took a copy of the same content delivered later (an alert sent
        again; under an id, a server that gives a deleted message's id to a new one) for
        the message stored, and ``--delete`` deleted it unstored. Forgotten only after
        QUIT's ``+OK``, it stayed whenever the server committed the deletions without
        that ``+OK`` reaching the run (a connection cut, a stop signal, a ``-ERR`` after
        removing some, which §6 allows) or the write after it failed. Forgotten first,
        a QUIT that deletes nothing costs a duplicate next time, never a loss; a record
        that cannot be written has the deletions undone, so that no entry of a message
        deleted stays on disk."""
        record = self.record
        if record is None or not self._deleted:
            return True
        if self.record_lost:
            return False
        for taken in self._deleted:
            if taken.item.uid is not None:
                record.forget(taken.item.uid)
        record.forget_unidentified(
            (taken.item.size, taken.digest) for taken in self._deleted if taken.item.uid is None
        )
        return await self._write_record(
            "nothing is deleted from the server in this run (RSET), and what it stored "
            "is fetched again next time"
        )

    async def _stored(self, item: MessageListing, retrieved: _Retrieved) -> None:
        """Message ``item`` is synced into the Maildir: record its id, its size and the
        digest of what was ``retrieved``, and delete it once the record holding it is on
        disk (at once when there is no record, or it could not be written)."""
        taken = _Taken(item, retrieved.digest)
        if self.record_lost:
            return  # stored, left on the server: see _save_record
        if self.record is None:
            if self.delete:
                await self._delete(taken)
            return
        if item.uid is None:
            self.record.add_unidentified(item.size, retrieved.digest, octets=retrieved.size)
        else:
            self.record.add(item.uid, item.size, retrieved.digest, octets=retrieved.size)
        if self.delete:
            self._deletions_held.append(taken)
        if self.record.due:
            await self._save_record()

    async def _save_record(self) -> None:
        """Write the record, then send the deletions it held. A record that cannot be
        written (a read-only DIR, a full disk) is not written again in this run, with
        one warning, and nothing more is deleted, the deletions sent before undone at
        the end (see :meth:`record_without_deleted`): the record on disk may name a
        message deleted, and take a copy of the same content sent later for it.
        Stopping instead stored message 1 again at every run, and never the others.
        What it holds in memory still tells the messages stored before: dropped, a
        failure to write it before any message had the run fetch every one again."""
        written = await self._write_record(
            "going on without writing it or deleting anything; what this run stores is "
            "fetched again next time"
        )
        held, self._deletions_held = self._deletions_held, []
        if written:
            for taken in held:
                await self._delete(taken)

    async def _write_record(self, consequence: str) -> bool:
        """Write the record in a thread, waited for to its end even when the run is
        cancelled; whether it was written. A failure is named in a warning saying its
        ``consequence``, and the record is not written again in this run."""
        record = self.record
        assert record is not None
        try:
            await _to_its_end_in_thread(record.save)
        except OSError as exc:
            self.record_lost = True
            _warn(
                f"the record of what was stored, {record.path}, cannot be written "
                f"({why_it_failed(exc)}): {consequence}"
            )
            return False
        return True

    def summary(self, maildir: Path | None) -> str:
        """The last line: what was fetched, where it went, and what was not."""
        kept = f"stored in {maildir}, " if maildir is not None else ""
        deleted = "deleted from the server" if self._deleting else "left on the server"
        parts = [f"{messages(self.fetched)}, {self.octets} octets; {kept}{deleted}"]
        if self.skipped:
            parts.append(f"{self.skipped} stored before, {self._what_became_of_skipped()}")
        for command, left in _LEFT_ON_REFUSAL.items():
            if self.refused[command]:
                parts.append(f"{self.refused[command]} {left.tally}")
        return printable("; ".join(parts) + ".")

    def _what_became_of_skipped(self) -> str:
        """The messages stored before were read again, found unchanged and deleted at
        QUIT under ``--delete``: ``--all`` cannot fetch them again."""
        if self._deleting:
            return "read again, found unchanged and deleted"
        if self.delete:
            return "read again, found unchanged and left there (the record cannot be written)"
        if not self.ids_trusted:
            return "read again and found unchanged (--all stores them again)"
        return "not fetched again (--all fetches them)"
