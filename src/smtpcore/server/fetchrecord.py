"""The unique-ids ``fetch --to-maildir`` has stored, so that mail left on the server is
fetched once, as fetchmail (``keep`` with ``uidl``), mpop and getmail remember it.

A POP3 unique-id names a message of a maildrop across sessions (RFC 1939 §7), where
message numbers hold for one session only. The record is one file per server and user,
inside the Maildir it serves, under a dot-name (no Maildir reader takes it for mail)
made of a digest: no user name can steer it outside the directory. It is replaced
whole (a new file, fsynced, renamed over the old one, the directory fsynced), never
written in place or through a link, and it keeps only the messages the server still
lists, so it stays as small as the mailbox (fetch writes it so before taking any
message: an entry of an id gone would match a new message given it).

Each id is kept with the size LIST gave its message and a digest of the whole
message as stored (:class:`ContentDigest`). Without ``--delete`` a message listed with
an id and size recorded is left alone. Under ``--delete`` it is read again and deleted
only when its digest is the one recorded: RFC 1939 §7 keeps an id from reuse only "as
long as the entity exists", so a server may give it to a new message once the old one
is gone, and neither the size nor the header (``TOP n 0``) tells apart mail made from
one template, with no ``Received:`` of the server's own, or with no header at all.

The record is read only when the user running fetch owns it: whoever else may write
in the directory could put a record of their own there (a rename needs no right on the
file it replaces) and have new mail taken for mail stored.

A message listed without a unique-id of its own (a server without UIDL, one that
leaves a message out of its listing or gives one id to two messages) is recorded by
its size and digest alone, among the record's unidentified entries: it is read at
every run and told from one stored before by its whole content, as the messages of a
listing not trusted are (see :meth:`FetchRecord.claim_unidentified`). There are never
more such entries of a size than messages listed without an id of that size, and a
run that reads every such message forgets the entries no message claimed: the record
stays as small as the mailbox. The messages a run deleted, with an id or without, are
forgotten once the server's ``+OK`` to QUIT has the deletions done (RFC 1939 §6): kept,
an entry would take a copy of the same content sent later for the message deleted.

A message's id is recorded only once the message is synced into ``new/``, and deleted
from the server only once its id is recorded and synced: a crash in between gives a
duplicate next time, never a lost message. A damaged or unreadable record is read as
empty, for the same reason (see :meth:`FetchRecord.read_or_empty`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from smtpcore._driver._pop3_client_content import MAX_LISTING
from smtpcore.server.maildir import fsync_directory
from smtpcore.server.safefiles import NotRegularFile, open_regular, replace_synced

__all__ = [
    "MAX_RECORD",
    "FetchRecord",
    "ContentDigest",
    "RecordDamaged",
    "record_limit",
    "record_path",
    "why_it_failed",
]

RECORD_PREFIX: Final = ".smtpcore-fetched-"

STALE_TEMPORARY: Final = 3600.0
"""Seconds after which a temporary file of the record's, untouched, is a killed run's
(a run writes one in well under that) and removed (see
:meth:`FetchRecord.remove_stale_temporaries`)."""

_UNIQUE_ID: Final = re.compile(r"[\x21-\x7e]{1,70}")
"""A unique-id: 1 to 70 characters from 0x21 to 0x7E (RFC 1939 §7)."""

_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
"""What :meth:`ContentDigest.hexdigest` gives."""

_Entry = tuple[int, str]
"""What the record keeps of a message stored: its size as LIST gave it, and the
:class:`ContentDigest` of its content."""


def _encoded(stored: dict[str, _Entry] | list[_Entry]) -> bytes:
    """The JSON of the messages ``stored`` as the record writes it (ASCII: json escapes)."""
    return json.dumps(stored, separators=(",", ":"), sort_keys=True).encode("ascii")


_SHORTEST_LISTING_LINE: Final = len(b"1 x\r\n")
"""The fewest octets a message takes in a UIDL or a LIST listing (RFC 1939 §5, §7)."""
_ENTRY_BEYOND_ID_AND_SIZE: Final = len(_encoded({"": (0, "0" * 64)})) - len(b"{}0") + len(b",")
"""Octets an entry has besides its id's characters and its size's digits: quotes,
colon, brackets, commas, the digest."""
_UNIDENTIFIED_BEYOND_SIZE: Final = len(_encoded([(0, "0" * 64)])) - len(b"[]0") + len(b",")
"""Octets an unidentified entry has besides its size's digits."""


def record_limit(listing_limit: int) -> int:
    """The most octets of messages a record written from listings of at most
    ``listing_limit`` octets each (UIDL's and LIST's) can have: an id's characters are
    at most twice its octets in the UIDL listing (JSON escapes ``"`` and ``\\``), a
    size's digits its octets in the LIST listing, and there are at most as many entries
    as the shortest UIDL line fits in the listing. The unidentified entries are at most
    as many as the messages of one LIST listing, their sizes' digits its octets: they
    are counted apart, as a listing with no id at all leaves the ids of an earlier one
    as they are."""
    most_ids = listing_limit // _SHORTEST_LISTING_LINE
    ids = 3 * listing_limit + most_ids * _ENTRY_BEYOND_ID_AND_SIZE
    return ids + listing_limit + most_ids * _UNIDENTIFIED_BEYOND_SIZE


MAX_RECORD: Final = record_limit(MAX_LISTING)
"""Octets of messages a record may have (besides its server and user), from the most
the client takes of a UIDL or LIST listing (:func:`record_limit`): a record this module
writes is never larger, and a larger file is damage, not read whole."""


class RecordDamaged(ValueError):
    """The record's file is not one this module wrote (truncated, edited, another
    server's or user's, owned by another user, a link or a FIFO in its place)."""


def record_path(maildir: Path, server: str, user: str) -> Path:
    """The record of ``user`` at ``server`` (``host:port``) inside ``maildir``: a dot-name
    and a digest of both, so that neither can put it anywhere else, and two accounts
    fetched into one Maildir keep a record each. The host is compared without case
    (RFC 4343)."""
    key = json.dumps([server.lower(), user]).encode("ascii")  # escaped by json
    return maildir / f"{RECORD_PREFIX}{hashlib.sha256(key).hexdigest()[:32]}"


class ContentDigest:
    """SHA-256 over a message's content as RETR gives it (RFC 1939 §7: dot-stuffing
    removed, line ends CRLF, which the Maildir stores as LF), fed a chunk at a time as
    it streams, so that no message is held whole. Only the whole content tells the
    message stored from a new one given its id and size (RFC 1939 §7)."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()

    def feed(self, chunk: bytes) -> None:
        self._sha256.update(chunk)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


def why_it_failed(exc: Exception) -> str:
    """The reason an operation on a file failed, in words (``Is a directory``), not the
    ``[Errno 21] ...`` tuple, for a warning that names the file itself."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


class FetchRecord:
    """The messages stored from one account, each a unique-id and the size LIST gave
    it, and when the record is due to be written.

    Each write replaces the whole file, so writing it after every message would cost
    the square of a large mailbox's size. It is due instead once the messages stored
    since the last write outweigh the file (:attr:`due`): the record then never costs
    more writing than the mail itself, and a small record is written after every
    message."""

    def __init__(self, path: Path, server: str, user: str) -> None:
        self.path = path
        self.server = server
        self.user = user
        self._stored: dict[str, _Entry] = {}
        """What is kept of each message stored, by its unique-id."""
        self._unclaimed: Counter[_Entry] = Counter()
        """The entries of messages stored without a unique-id of their own that no
        message of this run has claimed yet (all of them, as read)."""
        self._unclaimed_sizes: Counter[int] = Counter()
        """How many entries of each size are unclaimed: one look-up a message."""
        self._claimed: list[_Entry] = []
        """The entries claimed in this run, and those of the messages it stored."""
        self._listed_unidentified: Counter[int] = Counter()
        """How many messages of each size the server lists without a unique-id."""
        self._size_on_disk = 0
        self._unsaved_octets = 0
        self._unsaved = False

    @classmethod
    def read_or_empty(
        cls, maildir: Path, server: str, user: str, warn: Callable[[str], None]
    ) -> FetchRecord:
        """The record of ``user`` at ``server`` in ``maildir``; empty when there is none
        yet, and, with a ``warn`` naming why, when it cannot be read or is damaged:
        every message is then fetched again (duplicates, never a loss), and the next
        write replaces the bad file. Refusing to run would instead leave the mail on
        the server, where a cron job's user would not see it, until someone came."""
        server = server.lower()
        path = record_path(maildir, server, user)
        record = cls(path, server, user)
        try:
            record._read()
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            warn(
                f"the record of what was fetched before, {path}, cannot be read "
                f"({why_it_failed(exc)}): every message is fetched again"
            )
            record._stored.clear()
            record._unclaimed.clear()
        return record

    def _temporary_name(self) -> str:
        """A new name for the file :meth:`save` writes before renaming it over the
        record; :meth:`remove_stale_temporaries` knows them by it."""
        return f"{self.path.name}.{secrets.token_hex(6)}.tmp"

    def remove_stale_temporaries(self, now: float | None = None) -> int:
        """Remove the temporary files of this record that runs killed while writing it
        left in the Maildir, each untouched for :data:`STALE_TEMPORARY` seconds (so that
        a run writing it now keeps its own); how many went. Only names :meth:`save`
        gives, and only regular files: nothing else of the directory's is touched."""
        pattern = re.compile(re.escape(self.path.name) + r"\.[0-9a-f]{12}\.tmp")
        limit = (time.time() if now is None else now) - STALE_TEMPORARY
        removed = 0
        if not self.path.parent.is_dir():
            return 0  # a Maildir not made yet
        with os.scandir(self.path.parent) as listing:
            for entry in listing:
                if not pattern.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime < limit:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def _read(self) -> None:
        """Fill the messages from the file; :class:`RecordDamaged` for anything but a record
        of this account that this user wrote (a link or a FIFO is never followed or read,
        a file of another user's never read)."""
        try:
            fd = open_regular(self.path)
        except NotRegularFile:  # its text names the path, which the warning names
            raise RecordDamaged("not a regular file, not read") from None
        most = MAX_RECORD + len(self._encoded_with({}, []))
        with os.fdopen(fd, "rb") as file:
            if os.fstat(file.fileno()).st_uid != os.geteuid():
                raise RecordDamaged("owned by another user, not read")
            data = file.read(most + 1)
        if len(data) > most:
            raise RecordDamaged(f"larger than {most} octets")
        try:
            fields = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordDamaged(f"not a record: {exc}") from None
        self._stored, unidentified = _checked_fields(fields, self.server, self.user)
        self._unclaimed = Counter(unidentified)
        self._size_on_disk = len(data)

    def _encoded_with(self, stored: dict[str, _Entry], unidentified: list[_Entry]) -> bytes:
        """The file that holds ``stored`` and ``unidentified`` for this account."""
        fields = {"server": self.server, "user": self.user}
        head = json.dumps(fields, sort_keys=True).encode("ascii")  # escaped by json
        messages = b', "stored": ' + _encoded(stored)
        messages += b', "unidentified": ' + _encoded(unidentified)
        return head[:-1] + messages + b"}\n"

    def holds(self, unique_id: str, size: int) -> bool:
        """Whether the message LIST gives as ``unique_id`` and ``size`` is one stored: the
        id alone may be a new message's, given it once the old one was gone (RFC 1939 §7)."""
        entry = self._stored.get(unique_id)
        return entry is not None and entry[0] == size

    def holds_content(self, unique_id: str, size: int, digest: str) -> bool:
        """Whether the message LIST gives as ``unique_id`` and ``size``, whose content
        has the :class:`ContentDigest` ``digest``, is the one stored: only then may it
        be deleted unseen, as the id and size alone may be a new message's (RFC 1939
        §7)."""
        return self.holds(unique_id, size) and self._stored[unique_id][1] == digest

    def __len__(self) -> int:
        return len(self._stored)

    def keep_only(self, listed: Iterable[tuple[str, int]]) -> None:
        """Forget every message the server no longer lists with its id and size (it was
        deleted there, by this tool or another, and its id perhaps given to a new one),
        so that the record stays as small as the mailbox."""
        still = {uid: self._stored[uid] for uid, size in listed if self.holds(uid, size)}
        if len(still) != len(self._stored):
            self._stored = still
            self._unsaved = True

    def add(self, unique_id: str, listed_size: int, digest: str, *, octets: int) -> None:
        """Note the message LIST gave as ``unique_id`` and ``listed_size`` as stored (and
        synced), with its content's ``digest`` (:class:`ContentDigest`), ``octets``
        written for it; it is on disk only after :meth:`save`."""
        self._stored[unique_id] = (listed_size, digest)
        self._unsaved_octets += octets
        self._unsaved = True

    def forget(self, unique_id: str) -> None:
        """Forget the message stored as ``unique_id``: deleted from the server."""
        if self._stored.pop(unique_id, None) is not None:
            self._unsaved = True

    def forget_unidentified(self, deleted: Iterable[_Entry]) -> None:
        """Forget the messages listed without a unique-id, each given as its listed
        size and digest, claimed or stored in this run and since deleted from the
        server, which lists one message of that size fewer for each. One pass: a
        mailbox without UIDL may be large."""
        gone = Counter(deleted) & Counter(self._claimed)
        if not gone:
            return
        self._claimed = list((Counter(self._claimed) - gone).elements())
        self._listed_unidentified -= Counter(size for size, _ in gone.elements())
        self._unsaved = True

    def keep_unidentified(self, listed_sizes: Iterable[int]) -> None:
        """Note how many messages of each size the server lists without a unique-id
        (``listed_sizes``): no more entries of a size are written than messages listed
        so (see :meth:`save`), and those of a size none has are forgotten now, as
        :meth:`keep_only` forgets ids. Called before any message is claimed."""
        self._listed_unidentified = Counter(listed_sizes)
        listed = Counter(
            {
                entry: n
                for entry, n in self._unclaimed.items()
                if entry[0] in self._listed_unidentified
            }
        )
        if listed != self._unclaimed:
            self._unclaimed = listed
            self._unsaved = True
        self._unclaimed_sizes = Counter()
        for (size, _), count in listed.items():
            self._unclaimed_sizes[size] += count

    def may_hold_unidentified(self, size: int) -> bool:
        """Whether a message listed without a unique-id, of ``size`` octets, may be one
        stored before: an entry of that size is still unclaimed."""
        return self._unclaimed_sizes[size] > 0

    def claim_unidentified(self, size: int, digest: str) -> bool:
        """Whether a message listed without a unique-id, of ``size`` octets, whose
        content has the :class:`ContentDigest` ``digest``, is one stored before. Each
        entry is claimed by one message of a run at most, so that a second message of
        the same content (an alert sent twice) is stored too."""
        entry = (size, digest)
        if self._unclaimed[entry] <= 0:
            return False
        self._unclaimed[entry] -= 1
        self._unclaimed_sizes[size] -= 1
        if not self._unclaimed[entry]:
            del self._unclaimed[entry]
        self._claimed.append(entry)
        return True

    def add_unidentified(self, listed_size: int, digest: str, *, octets: int) -> None:
        """Note a message LIST gave as ``listed_size`` and no unique-id as stored (and
        synced), with its content's ``digest``, ``octets`` written for it; it is on
        disk only after :meth:`save`."""
        self._claimed.append((listed_size, digest))
        self._unsaved_octets += octets
        self._unsaved = True

    def forget_unclaimed(self) -> None:
        """Forget the entries no message claimed, once a run has read every message
        listed without a unique-id: their messages are gone from the server."""
        if self._unclaimed:
            self._unclaimed.clear()
            self._unclaimed_sizes.clear()
            self._unsaved = True

    def _unidentified_written(self) -> list[_Entry]:
        """The entries :meth:`save` writes: those claimed or stored in this run (one a
        message at most), then, while a size has fewer than messages listed so without a
        unique-id, unclaimed ones of that size; a run cut short keeps the entries of
        the messages it did not reach, but never more than the server lists (a
        duplicate at worst, for a message deleted by another client)."""
        room = self._listed_unidentified - Counter(size for size, _ in self._claimed)
        kept: list[_Entry] = []
        for entry, count in sorted(self._unclaimed.items()):
            taken = min(count, room[entry[0]])
            room[entry[0]] -= taken
            kept += [entry] * taken
        return kept + self._claimed

    @property
    def unidentified(self) -> int:
        """How many entries of messages stored without a unique-id :meth:`save` writes."""
        return len(self._unidentified_written())

    @property
    def due(self) -> bool:
        """Whether the messages noted since the last write outweigh the file."""
        return self._unsaved and self._unsaved_octets >= self._size_on_disk

    @property
    def unsaved(self) -> bool:
        """Whether anything noted or forgotten is not on disk yet."""
        return self._unsaved

    def save(self) -> None:
        """Replace the file with the messages noted: a new file under a name of its own,
        fsynced, renamed over the record (never written through a link that may be
        there: the rename replaces the link itself), then the directory fsynced, so
        that the record on disk is the old or the new one whole, even after a crash."""
        data = self._encoded_with(self._stored, self._unidentified_written())
        tmp = self.path.with_name(self._temporary_name())
        replace_synced(self.path, tmp, data)
        fsync_directory(self.path.parent)
        self._size_on_disk = len(data)
        self._unsaved_octets = 0
        self._unsaved = False


def _checked_fields(
    fields: object, server: str, user: str
) -> tuple[dict[str, _Entry], list[_Entry]]:
    """What is kept by unique-id in a record's parsed ``fields``, and what is kept of
    the messages stored without one (none in a record written before they were);
    :class:`RecordDamaged` unless they are those :meth:`FetchRecord.save` writes for
    this ``server`` and ``user``."""
    if not isinstance(fields, dict):
        raise RecordDamaged("not a record")
    if fields.get("server") != server or fields.get("user") != user:
        raise RecordDamaged("the record of another server or user")
    stored = fields.get("stored")
    if not isinstance(stored, dict) or not all(
        _UNIQUE_ID.fullmatch(uid) and _is_entry(entry) for uid, entry in stored.items()
    ):
        raise RecordDamaged(
            "what it stores is not RFC 1939 §7 unique-ids with the sizes LIST gave "
            "and content digests"
        )
    unidentified = fields.get("unidentified", [])
    if not isinstance(unidentified, list) or not all(map(_is_entry, unidentified)):
        raise RecordDamaged(
            "what it stores of messages without unique-ids is not sizes LIST gave and "
            "content digests"
        )
    return (
        {uid: (size, digest) for uid, (size, digest) in stored.items()},
        [(size, digest) for size, digest in unidentified],
    )


def _is_entry(value: object) -> bool:
    """``[size, digest]`` as :meth:`FetchRecord.save` writes them."""
    if not isinstance(value, list) or len(value) != 2:
        return False
    size, digest = value
    return _is_size(size) and isinstance(digest, str) and bool(_DIGEST.fullmatch(digest))


def _is_size(value: object) -> bool:
    """A message size as LIST gives it (RFC 1939 §5): a whole number of octets (JSON's
    ``true`` is a Python ``bool``, an ``int`` too, and no size)."""
    return type(value) is int and value >= 0
