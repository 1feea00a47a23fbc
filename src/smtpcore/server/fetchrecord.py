"""The unique-ids ``fetch --to-maildir`` has stored, so that mail left on the server is
fetched once, as fetchmail (``keep`` with ``uidl``), mpop and getmail remember it.

A POP3 unique-id names a message of a maildrop across sessions (RFC 1939 §7), where
message numbers hold for one session only. The record is one file per server and user,
inside the Maildir it serves, under a dot-name (no Maildir reader takes it for mail)
made of a digest: no user name can steer it outside the directory. It is replaced
whole (a new file, fsynced, renamed over the old one, the directory fsynced), never
written in place or through a link, and it keeps only the messages the server still
lists, so it stays as small as the mailbox.

Each id is kept with the size LIST gave its message, and a message listed is taken for
one stored only when both match: RFC 1939 §7 keeps an id from reuse only "as long as
the entity exists", so a server may give it to a new message once the old one is gone,
and that message, taken for the old, would be deleted unseen under ``--delete``.

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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from smtpcore.server.maildir import fsync_directory
from smtpcore.server.safefiles import open_regular, write_synced

__all__ = ["MAX_RECORD", "FetchRecord", "RecordDamaged", "record_path", "why_it_failed"]

RECORD_PREFIX: Final = ".smtpcore-fetched-"
MAX_RECORD: Final = 32 * 1024 * 1024
"""Octets a record may have: twice what the client takes of a UIDL listing (16 MiB),
for the JSON quoting; a larger file is damage, not read whole."""

_UNIQUE_ID: Final = re.compile(r"[\x21-\x7e]{1,70}")
"""A unique-id: 1 to 70 characters from 0x21 to 0x7E (RFC 1939 §7)."""


class RecordDamaged(ValueError):
    """The record's file is not one this module wrote (truncated, edited, another
    server's or user's, a link or a FIFO in its place)."""


def record_path(maildir: Path, server: str, user: str) -> Path:
    """The record of ``user`` at ``server`` (``host:port``) inside ``maildir``: a dot-name
    and a digest of both, so that neither can put it anywhere else, and two accounts
    fetched into one Maildir keep a record each. The host is compared without case
    (RFC 4343)."""
    key = json.dumps([server.lower(), user]).encode("ascii")  # escaped by json
    return maildir / f"{RECORD_PREFIX}{hashlib.sha256(key).hexdigest()[:32]}"


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
        self._sizes: dict[str, int] = {}
        """The size LIST gave each message stored, by its unique-id."""
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
            record._sizes.clear()
        return record

    def _read(self) -> None:
        """Fill the messages from the file; :class:`RecordDamaged` for anything but a record
        of this account (a link or a FIFO is never followed or read)."""
        fd = open_regular(self.path)
        with os.fdopen(fd, "rb") as file:
            data = file.read(MAX_RECORD + 1)
        if len(data) > MAX_RECORD:
            raise RecordDamaged(f"larger than {MAX_RECORD} octets")
        try:
            fields = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordDamaged(f"not a record: {exc}") from None
        self._sizes = _checked_fields(fields, self.server, self.user)
        self._size_on_disk = len(data)

    def holds(self, unique_id: str, size: int) -> bool:
        """Whether the message LIST gives as ``unique_id`` and ``size`` is one stored: the
        id alone may be a new message's, given it once the old one was gone (RFC 1939 §7)."""
        return self._sizes.get(unique_id) == size

    def __len__(self) -> int:
        return len(self._sizes)

    def keep_only(self, listed: Iterable[tuple[str, int]]) -> None:
        """Forget every message the server no longer lists with its id and size (it was
        deleted there, by this tool or another, and its id perhaps given to a new one),
        so that the record stays as small as the mailbox."""
        still = {uid: size for uid, size in listed if self.holds(uid, size)}
        if len(still) != len(self._sizes):
            self._sizes = still
            self._unsaved = True

    def add(self, unique_id: str, listed_size: int, *, octets: int) -> None:
        """Note the message LIST gave as ``unique_id`` and ``listed_size`` as stored (and
        synced), ``octets`` written for it; it is on disk only after :meth:`save`."""
        self._sizes[unique_id] = listed_size
        self._unsaved_octets += octets
        self._unsaved = True

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
        fields = {"server": self.server, "user": self.user, "stored": self._sizes}
        data = json.dumps(fields, indent=0, sort_keys=True).encode("ascii")  # escaped by json
        tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(6)}.tmp")
        write_synced(tmp, data)
        try:
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_directory(self.path.parent)
        self._size_on_disk = len(data)
        self._unsaved_octets = 0
        self._unsaved = False


def _checked_fields(fields: object, server: str, user: str) -> dict[str, int]:
    """The sizes by unique-id of a record's parsed ``fields``; :class:`RecordDamaged`
    unless they are those :meth:`FetchRecord.save` writes for this ``server`` and
    ``user``."""
    if not isinstance(fields, dict):
        raise RecordDamaged("not a record")
    if fields.get("server") != server or fields.get("user") != user:
        raise RecordDamaged("the record of another server or user")
    stored = fields.get("stored")
    if not isinstance(stored, dict) or not all(
        _UNIQUE_ID.fullmatch(uid) and _is_size(size) for uid, size in stored.items()
    ):
        raise RecordDamaged(
            "what it stores is not RFC 1939 §7 unique-ids with the sizes LIST gave"
        )
    return stored


def _is_size(value: object) -> bool:
    """A message size as LIST gives it (RFC 1939 §5): a whole number of octets (JSON's
    ``true`` is a Python ``bool``, an ``int`` too, and no size)."""
    return type(value) is int and value >= 0
