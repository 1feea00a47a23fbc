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
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Final

from smtpcore.server.bouncerecords import BounceRecords
from smtpcore.server.log import logger
from smtpcore.server.maildir import fsync_directory, make_private_directory
from smtpcore.server.safefiles import (
    create_new,
    is_visible,
    open_regular,
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

_FORMAT: Final = 1
_READ_SIZE: Final = 64 * 1024
MAX_HEADER: Final = 256 * 1024
"""How much of a queued message's header the relay reads at most (for the SMTPUTF8 check,
``TLS-Required``, and the reports that return the header)."""


def new_queue_id() -> str:
    """Ten hexadecimal digits, as Postfix's short queue ids look."""
    return secrets.token_hex(5).upper()


_QUEUE_ID: Final = re.compile(r"[0-9A-F]{10}")


def is_queue_id(text: str) -> bool:
    """Whether ``text`` has the form :func:`new_queue_id` gives: a name in the queue's
    directories, never a path (``..``, ``/``) to somewhere else."""
    return _QUEUE_ID.fullmatch(text) is not None


def checked_queue_id(queue_id: str) -> str:
    """``queue_id``, or a ``ValueError`` when it is not of an id's form: ids come from
    command files and command lines too, and one such as ``../messages/ID`` would make a
    path to another file."""
    if not is_queue_id(queue_id):
        raise ValueError(f"not a queue id: {queue_id!r}")
    return queue_id


class RecipientStatus(enum.Enum):
    """Where one recipient of a queued message stands."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    """Refused for good, or expired; a bounce was made (unless the sender was null)."""


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    """One recipient of a queued message and what its last attempt said."""

    address: str
    """The mailbox in its wire form."""
    status: RecipientStatus = RecipientStatus.PENDING
    reply: str | None = None
    """The last reply or error, one line, for logs and bounces."""
    dsn: str | None = None
    """The enhanced status (RFC 3463) that goes with ``reply``."""
    remote_mta: str | None = None
    """The exchanger that gave ``reply``, if one did."""
    notify: str | None = None
    """The sender's ``NOTIFY`` for this recipient (RFC 3461 §4.1), upper case."""
    orcpt: str | None = None
    """The ``ORCPT`` it came with (RFC 3461 §4.2), passed on and reported."""
    from_remote: bool = False
    """True when ``reply`` is the remote server's own SMTP reply (not our words)."""
    report_owed: str | None = None
    """The ``Action`` (RFC 3464 §2.3.3: ``delivered`` or ``relayed``) of the success
    report ``NOTIFY=SUCCESS`` asks for and not yet queued (RFC 3461 §6.2). Written with
    the ``sent`` status in one step, so that a crash between the delivery and the
    report cannot lose the report; cleared once the report is queued."""
    reply_breaks: tuple[int, ...] = ()
    """Where ``reply``, an exchanger's reply of several lines, has the spaces between
    its lines (:func:`~smtpcore.server.exchanger.transcribe`): a report folds there."""

    @property
    def pending(self) -> bool:
        return self.status is RecipientStatus.PENDING


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A queued message's envelope and delivery state (not its content)."""

    id: str
    sender: str
    """The reverse path, ``""`` for the null path of a bounce."""
    recipients: tuple[QueuedRecipient, ...]
    created: float
    """When the message was accepted (seconds since the epoch)."""
    size: int = 0
    attempts: int = 0
    """Delivery rounds that left recipients pending."""
    next_attempt: float = 0.0
    client: str = ""
    """Where the message came from, for logs and bounces."""
    params: tuple[tuple[str, str | None], ...] = field(default=())
    """MAIL parameters that matter downstream: ``SMTPUTF8`` (RFC 6531), ``BODY``
    (RFC 6152, RFC 3030), DSN's ``RET`` and ``ENVID`` (RFC 3461 §4.3, §4.4), and
    ``REQUIRETLS`` (RFC 8689 §4.1)."""
    delay_warned: bool = False
    """The sender was told once that the message is delayed (``Action: delayed``)."""
    held: bool = False
    """Put on hold by the operator (``queue hold``): not delivered until released."""
    report_on: str | None = None
    """For a report this server made (a bounce, a delay warning, a success report): the
    id of the entry it reports on. For a success report, its recipients in ``reported``
    owed it: :meth:`Queue.open` clears what they owe when a crash came between queuing
    the report and recording it queued, so it is never made twice."""
    reported: tuple[str, ...] = ()
    bounce_records: tuple[str, ...] = ()
    """For a bounce copy this server queued: the names of the records
    (:mod:`~smtpcore.server.bouncerecords`) that say its recipients were reported in its
    roles. :meth:`Queue.open` makes those missing for recipients still pending: a crash
    between the copy's commit and its records' creation must not make it again."""

    @property
    def is_report(self) -> bool:
        """A report this server made, from ``<>``: the relay may send it in its 7-bit
        form (:func:`~smtpcore.server.bounce.seven_bit_form`) where the exchanger has
        no 8BITMIME, for nothing would tell its sender otherwise (RFC 5321 §4.5.5).
        One queued by an older version, with no ``report_on``, is not known as one."""
        return not self.sender and self.report_on is not None

    @property
    def requiretls(self) -> bool:
        """The message came with REQUIRETLS (RFC 8689 §4.1): it may travel only over TLS
        with a verified certificate, to servers that offer REQUIRETLS themselves."""
        return any(keyword == "REQUIRETLS" for keyword, _ in self.params)

    def param(self, keyword: str) -> str | None:
        """The MAIL parameter ``keyword``'s value, None when absent."""
        for key, value in self.params:
            if key == keyword:
                return value
        return None

    @property
    def pending(self) -> tuple[QueuedRecipient, ...]:
        return tuple(r for r in self.recipients if r.pending)

    @property
    def reports_owed(self) -> tuple[str, ...]:
        """The recipients whose success report (RFC 3461 §6.2) is owed and not yet
        queued: an entry with none pending is still in the queue for them."""
        return tuple(r.address for r in self.recipients if r.report_owed is not None)

    def with_recipients(self, updates: Mapping[str, QueuedRecipient]) -> QueueEntry:
        """This entry with the recipients named in ``updates`` replaced."""
        return replace(self, recipients=tuple(updates.get(r.address, r) for r in self.recipients))

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "format": _FORMAT,
            "id": self.id,
            "sender": self.sender,
            "created": self.created,
            "size": self.size,
            "attempts": self.attempts,
            "next_attempt": self.next_attempt,
            "client": self.client,
            "params": [list(p) for p in self.params],
            "delay_warned": self.delay_warned,
            "held": self.held,
            "report_on": self.report_on,
            "reported": list(self.reported),
            "bounce_records": list(self.bounce_records),
            "recipients": [
                {
                    "address": r.address,
                    "status": r.status.value,
                    "reply": r.reply,
                    "reply_breaks": list(r.reply_breaks),
                    "dsn": r.dsn,
                    "remote_mta": r.remote_mta,
                    "notify": r.notify,
                    "orcpt": r.orcpt,
                    "from_remote": r.from_remote,
                    "report_owed": r.report_owed,
                }
                for r in self.recipients
            ],
        }
        return json.dumps(data, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> QueueEntry:
        """The entry a queue file holds; ``ValueError`` for one that is not one, whatever
        is wrong with it (not JSON, nested too deep to parse, a field missing or of
        another type, a number that is not finite).

        Python's JSON reader takes ``NaN``, ``Infinity`` and ``1e400`` (infinity),
        which no int can hold and no time can be, and what the file holds is data to
        check, not to convert: ``bool("no")`` is True. So every field is checked for
        its own type here, numbers for being finite, before any of it is used."""
        try:
            return cls._from_data(json.loads(text))
        except (KeyError, RecursionError) as exc:
            raise ValueError(f"malformed queue file: {exc!r}") from None

    @classmethod
    def _from_data(cls, data: object) -> QueueEntry:
        fields = _object(data)
        if fields.get("format") != _FORMAT:
            raise ValueError(f"unknown queue file format {fields.get('format')!r}")
        return cls(
            id=_text(fields, "id"),
            sender=_text(fields, "sender"),
            created=_number(fields, "created"),
            size=_integer(fields, "size"),
            attempts=_integer(fields, "attempts"),
            next_attempt=_number(fields, "next_attempt"),
            client=_text(fields, "client"),
            params=tuple(_param(item) for item in _array(fields, "params")),
            delay_warned=_flag(fields, "delay_warned"),  # absent from older files
            held=_flag(fields, "held"),
            report_on=_optional_text(fields, "report_on", absent_ok=True),
            reported=tuple(_texts(fields, "reported")),
            bounce_records=tuple(_texts(fields, "bounce_records")),  # absent from older files
            recipients=tuple(_recipient(_object(r)) for r in _array(fields, "recipients")),
        )


def _recipient(fields: Mapping[str, object]) -> QueuedRecipient:
    return QueuedRecipient(
        address=_text(fields, "address"),
        status=RecipientStatus(_text(fields, "status")),
        reply=_optional_text(fields, "reply"),
        reply_breaks=tuple(_integers(fields, "reply_breaks")),  # absent from older files
        dsn=_optional_text(fields, "dsn"),
        remote_mta=_optional_text(fields, "remote_mta"),
        notify=_optional_text(fields, "notify", absent_ok=True),  # absent from older files
        orcpt=_optional_text(fields, "orcpt", absent_ok=True),
        from_remote=_flag(fields, "from_remote"),
        report_owed=_optional_text(fields, "report_owed", absent_ok=True),
    )


def _param(item: object) -> tuple[str, str | None]:
    if not (isinstance(item, list) and len(item) == 2):
        raise ValueError(f"params: {item!r} is not a [keyword, value] pair")
    keyword, value = item
    if not isinstance(keyword, str) or not (value is None or isinstance(value, str)):
        raise ValueError(f"params: {item!r} is not a [keyword, value] pair")
    return keyword, value


def _object(value: object) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{type(value).__name__} where an object belongs")
    return value


def _array(fields: Mapping[str, object], key: str) -> list[object]:
    value = fields[key]
    if not isinstance(value, list):
        raise ValueError(f"{key}: {type(value).__name__}, not an array")
    return value


def _texts(fields: Mapping[str, object], key: str) -> list[str]:
    """An array of strings, empty when absent (files written before it existed)."""
    if key not in fields:
        return []
    items = _array(fields, key)
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"{key}: not an array of strings")
    return [str(item) for item in items]


def _integers(fields: Mapping[str, object], key: str) -> list[int]:
    """An array of integers, empty when absent (files written before it existed)."""
    if key not in fields:
        return []
    items = _array(fields, key)
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        raise ValueError(f"{key}: not an array of integers")
    return [item for item in items if isinstance(item, int)]


def _text(fields: Mapping[str, object], key: str) -> str:
    value = fields[key]
    if not isinstance(value, str):
        raise ValueError(f"{key}: {type(value).__name__}, not a string")
    return value


def _optional_text(
    fields: Mapping[str, object], key: str, *, absent_ok: bool = False
) -> str | None:
    if absent_ok and key not in fields:
        return None
    value = fields[key]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}: {type(value).__name__}, not a string or null")
    return value


def _integer(fields: Mapping[str, object], key: str) -> int:
    value = fields[key]
    if isinstance(value, bool) or not isinstance(value, int):  # a float, even 1e400, is not
        raise ValueError(f"{key}: {value!r} is not an integer")
    return value


def _number(fields: Mapping[str, object], key: str) -> float:
    """A finite number. A time that is NaN is never due (every comparison with it is
    false: the delivery worker woke for it without end, and never delivered it), and
    one that is infinite never comes."""
    value = fields[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: {value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer past float's range
        raise ValueError(f"{key}: {value!r} is out of range") from None
    if not math.isfinite(number):
        raise ValueError(f"{key}: {value!r} is not finite")
    return number


def _flag(fields: Mapping[str, object], key: str) -> bool:
    """A flag, false when absent (files written before it existed)."""
    value = fields.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key}: {value!r} is not true or false")
    return value


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


class Spool:
    """A message being received, written as it arrives into the queue's ``tmp/``.

    It gets its queue id at once, so that the Received header and the logs
    can name it; it becomes a queue entry only through :meth:`Queue.prepare`.
    """

    def __init__(self, queue_id: str, path: Path) -> None:
        self.id = queue_id
        self.path = path
        fd = create_new(path)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        """Flush and fsync; the file can then be read and renamed."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def open(self) -> BinaryIO:
        """The content, for reading (after :meth:`finish`); opened as every queue file is
        (see :func:`~smtpcore.server.safefiles.open_regular`), though it is this
        process's own, made with ``O_EXCL`` in ``tmp/``: one opener, no case to argue."""
        return os.fdopen(open_regular(self.path), "rb")

    def discard(self) -> None:
        """Close and remove the file. Closing flushes what is buffered, which fails on
        a full disk: the file goes all the same (the descriptor is closed either way)."""
        try:
            with contextlib.suppress(OSError):
                self._file.close()
        finally:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class QueuedContent:
    """A queued message's content, on disk: read in pieces when it is needed, never whole.

    The relay sends it from :meth:`open` in the client's chunks; what must be looked at
    before it is sent (the header) or returned in a report is read with a bound. Every
    method blocks on the disk.
    """

    path: Path

    def open(self) -> BinaryIO:
        """The content for reading; a FIFO or a link in its place is a ``ValueError``
        (:class:`~smtpcore.server.safefiles.NotRegularFile`), never a read that blocks."""
        return os.fdopen(open_regular(self.path), "rb")

    @property
    def size(self) -> int:
        """The content's size. ``lstat``: a link in its place is not followed (its own
        size is given, and :meth:`open` refuses it); no stat blocks on a FIFO."""
        return os.lstat(self.path).st_size

    def header(self, limit: int = MAX_HEADER) -> bytes:
        """The header section and the empty line after it (RFC 5322 §2.1; the empty line
        alone when the message starts with it: its body is no header), or the first
        ``limit`` octets of a header that long (the whole message, if it has no body)."""
        found = bytearray()
        with self.open() as file:
            while len(found) < limit:
                piece = file.read(min(_READ_SIZE, limit - len(found)))
                if not piece:
                    break
                start = max(len(found) - 3, 0)
                found += piece
                if found.startswith(b"\r\n"):  # no field: the empty line comes first
                    return b"\r\n"
                end = found.find(b"\r\n\r\n", start)
                if end >= 0:
                    return bytes(found[: end + 4])
        return bytes(found)

    def returned_header(self, limit: int = MAX_HEADER) -> bytes:
        """The header as a report returns it (RFC 3462 §2): :meth:`header`, but one cut
        at ``limit`` comes back to its last whole line (none if no line ends within
        it). A cut at the limit itself could fall between a CR and its LF, or inside a
        UTF-8 character, and the report would carry a bare CR (RFC 5322 §2.3) or text
        that is not UTF-8 (RFC 6532 §3.2). What the relay examines (8-bit octets, the
        ``TLS-Required`` field) stays :meth:`header`, every octet within the limit."""
        header = self.header(limit)
        if len(header) < limit or header.endswith(b"\r\n"):
            return header
        return header[: header.rfind(b"\r\n") + 2] if b"\r\n" in header else b""

    def returned(self, limit: int) -> bytes | None:
        """The whole message when it is at most ``limit`` octets, else None (a report
        then returns the header alone)."""
        with self.open() as file:
            data = file.read(limit + 1)
        return data if len(data) <= limit else None

    def is_ascii(self) -> bool:
        """Whether every octet is below 128 (else it needs 8BITMIME, RFC 6152), read in
        pieces."""
        with self.open() as file:
            while piece := file.read(_READ_SIZE):
                if not piece.isascii():
                    return False
        return True


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
