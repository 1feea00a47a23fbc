"""The unique-ids ``fetch --to-maildir`` has stored, so that mail left on the server is
fetched once, as fetchmail (``keep`` with ``uidl``), mpop and getmail remember it.

A POP3 unique-id names a message of a maildrop across sessions (RFC 1939 §7), where
message numbers hold for one session only. The record is one file per server and user,
inside the Maildir it serves, under a dot-name (no Maildir reader takes it for mail)
made of a digest: no user name can steer it outside the directory. It is replaced
whole (a new file, fsynced, renamed over the old one, the directory fsynced), never
written in place or through a link, and it keeps only the ids the server still lists,
so it stays as small as the mailbox.

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
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Final

from smtpcore.server.maildir import fsync_directory
from smtpcore.server.safefiles import open_regular, write_synced

__all__ = ["MAX_RECORD", "FetchRecord", "RecordDamaged", "record_path"]

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


class FetchRecord:
    """The unique-ids stored from one account, and when the record is due to be written.

    Each write replaces the whole file, so writing it after every message would cost
    the square of a large mailbox's size. It is due instead once the messages stored
    since the last write outweigh the file (:attr:`due`): the record then never costs
    more writing than the mail itself, and a small record is written after every
    message."""

    def __init__(self, path: Path, server: str, user: str, ids: Collection[str] = ()) -> None:
        self.path = path
        self.server = server
        self.user = user
        self._ids = set(ids)
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
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            warn(
                f"the record of what was fetched before, {path}, cannot be read ({reason}): "
                "every message is fetched again"
            )
            record._ids.clear()
        return record

    def _read(self) -> None:
        """Fill the ids from the file; :class:`RecordDamaged` for anything but a record
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
        self._ids = set(_checked_fields(fields, self.server, self.user))
        self._size_on_disk = len(data)

    def __contains__(self, unique_id: object) -> bool:
        return unique_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def keep_only(self, listed: Collection[str]) -> None:
        """Forget every id the server no longer lists (the message was deleted there, by
        this tool or another): ids are never reused (RFC 1939 §7), so the record stays
        as small as the mailbox."""
        gone = self._ids.difference(listed)
        if gone:
            self._ids -= gone
            self._unsaved = True

    def add(self, unique_id: str, octets: int) -> None:
        """Note ``unique_id`` as stored (and synced), its message ``octets`` long; it is
        on disk only after :meth:`save`."""
        self._ids.add(unique_id)
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
        """Replace the file with the ids noted: a new file under a name of its own,
        fsynced, renamed over the record (never written through a link that may be
        there: the rename replaces the link itself), then the directory fsynced, so
        that the record on disk is the old or the new one whole, even after a crash."""
        fields = {"server": self.server, "user": self.user, "ids": sorted(self._ids)}
        data = json.dumps(fields, indent=0).encode("ascii")  # escaped by json
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


def _checked_fields(fields: object, server: str, user: str) -> list[str]:
    """The ids of a record's parsed ``fields``; :class:`RecordDamaged` unless they are
    those :meth:`FetchRecord.save` writes for this ``server`` and ``user``."""
    if not isinstance(fields, dict):
        raise RecordDamaged("not a record")
    if fields.get("server") != server or fields.get("user") != user:
        raise RecordDamaged("the record of another server or user")
    ids = fields.get("ids")
    if not isinstance(ids, list) or not all(
        isinstance(item, str) and _UNIQUE_ID.fullmatch(item) for item in ids
    ):
        raise RecordDamaged("its unique-ids are not a list of RFC 1939 §7 unique-ids")
    return ids
