"""The messages a server under test stored, read from the files it wrote them to.

``python -m smtpcore.testing check --stored-maildir DIR`` (or ``--stored-dir DIR``)
gives :func:`~smtpcore.testing.check.check_server` its ``stored`` this way, for a
server run by someone else: ``pipelined-end`` finds each message it sent by a body
line, so the ``Return-Path:``, ``Received:`` or ``Delivered-To:`` lines a server
(the reference server, Postfix's local, Dovecot's LMTP) writes above the header do
not stop the match. Only files that came in since the run began are read, and only
their first :data:`MAX_MESSAGE_OCTETS`; only those holding the check's marker are
kept: a sink's Maildir keeps every earlier run, and may hold a million files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

from smtpcore.testing._smtp_end_checks import MARK_PREFIX

__all__ = ["MAX_MESSAGE_OCTETS", "StoredFiles", "maildir_folders", "message_folders"]

MAX_MESSAGE_OCTETS: Final = 64 * 1024
"""How much of each file is read: a check's message is a few hundred octets, and
the trace and filter headers a server adds above it a few kilobytes at most."""

_RESCANS: Final = 3
"""Listings tried when a file goes between its listing and its reading (a reader
moved it from ``new/`` to ``cur/``, renaming it): the next listing has it."""

_SETTLED_NS: Final = 3_000_000_000
"""How far the clock must be past a Maildir folder's modification time before a
listing taken then is trusted while that time stays: a name added in the same
tick as the listing leaves the time unchanged where timestamps count whole
seconds (two on FAT), so a folder changed that recently is listed again. This is
also how far the clock of the filesystem holding the folder may lag ours (a network
filesystem's server), as Dovecot's maildir sync assumes; past it, the check's last
look (:meth:`StoredFiles.relisted`) still finds the message."""

_RELIST_AFTER_S: Final = 10.0
"""Seconds a listing of a Maildir folder whose time stayed is trusted at most: a
folder whose time was set back (a restore with ``cp -a`` or ``rsync -t``, a clock
stepped back) is listed again within this, so a long wait sees what came in."""

_MAILDIR_INFO: Final = ":2,"
"""What starts a Maildir file name's flags, which a reader adds and changes."""

Version = tuple[int, int, int] | None
"""A file's (inode, mtime_ns, size) in a directory of plain files, where a name may
be written again; None in a Maildir, whose files are written once under a new name."""


def maildir_folders(text: str) -> tuple[Path, ...]:
    """``new/`` and ``cur/`` of the Maildir ``text`` names; ``ValueError`` saying what
    is wrong when it is none, so that a typo is a usage error, not a message said lost."""
    path = Path(text)
    if not path.is_dir():
        raise ValueError(f"{text!r} is not a directory")
    folders = (path / "new", path / "cur")
    if not all(folder.is_dir() for folder in folders):
        raise ValueError(
            f"{text!r} is not a Maildir: it has no new/ and cur/ (give the mailbox's "
            "own directory; a server may make it only at its first delivery)"
        )
    return _readable(folders)


def message_folders(text: str) -> tuple[Path, ...]:
    """The directory ``text`` names, which holds one file per message; ``ValueError``
    when it is none."""
    path = Path(text)
    if not path.is_dir():
        raise ValueError(f"{text!r} is not a directory")
    return _readable((path,))


def _readable(folders: tuple[Path, ...]) -> tuple[Path, ...]:
    """``folders``, each listed once now: one this user cannot read is refused before
    the run, which would otherwise skip ``pipelined-end`` at its end."""
    for folder in folders:
        try:
            with os.scandir(folder):
                pass
        except OSError as exc:
            raise ValueError(f"cannot list {str(folder)!r}: {exc.strerror}") from None
    return folders


def maildir_key(name: str) -> str:
    """A Maildir file's name without its ``:2,`` flags, the same in ``new/`` and,
    flagged, in ``cur/``; any other ``:`` is part of the name."""
    head, info, _ = name.rpartition(_MAILDIR_INFO)
    return head if info else name


def _version(stat: os.stat_result) -> Version:
    """What tells a plain file written again under the same name from the one before."""
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class StoredFiles:
    """A ``stored`` for :func:`~smtpcore.testing.check.check_server`: the content of
    each file in ``folders`` that came in since this was made, the first
    ``max_octets`` of it, when it holds ``marker``.

    In a Maildir (``maildir``) a file came in when its name, flags aside, was not
    there; in a directory of plain files when its name was not there or it was
    written again (its inode, modification time or size changed: a sink that
    numbers its files from 1 again, or names them by the hour). Names starting
    with a dot, and what is no regular file, are no messages. Each file is read
    once (again when written again), and only those holding ``marker`` are kept,
    so memory stays bounded however big the folders are. A Maildir folder is listed
    at every call until the clock is :data:`_SETTLED_NS` past its modification
    time; a listing taken then is trusted while that time stays, for
    :data:`_RELIST_AFTER_S` at most (a file moved in, out or renamed, which a
    Maildir's delivery and readers always do, changes the time), so a call costs
    what came in, not the folder's size. That trust assumes the folder's times come
    from a clock within :data:`_SETTLED_NS` of ours and are never set back, which a
    network filesystem or a restore can break: :meth:`relisted` sets it aside, and
    the check calls it before it says a message was lost. A plain file can be
    written again in place, which its folder's time does not show, so a directory
    of plain files is listed, and each file's ``stat`` taken, at every call. A file
    that goes between the listing and its ``stat`` (a sink writing ``NAME.tmp`` and
    renaming it), or that this user cannot read, is passed over, not an error that
    would skip the check: the next call lists again.
    """

    def __init__(
        self,
        folders: Sequence[Path],
        *,
        maildir: bool,
        marker: bytes = MARK_PREFIX,
        max_octets: int = MAX_MESSAGE_OCTETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._folders = tuple(folders)
        self._maildir = maildir
        self._marker = marker
        self._max_octets = max_octets
        self._clock = clock
        """Seconds that only go forward, for how old a trusted listing is."""
        self._listed_at: dict[Path, tuple[int, float]] = {}
        """Each Maildir folder's modification time when it was last listed whole, once
        the wall clock was far enough past it (see :data:`_SETTLED_NS`), and
        :attr:`_clock` then."""
        self._before: dict[str, Version] = {}
        """Each file there when this was made, by key: none of them came in."""
        for folder in self._folders:
            settled = self._settled_time(folder)
            listed_all = True
            for listed in self._entries(folder):
                if listed is None:
                    listed_all = False
                    continue
                key, version, _ = listed
                self._before[key] = version
            if listed_all:
                self._record(folder, settled)
        self._read: dict[str, Version] = {}
        """What each file that came in was when last read, so it is not read again."""
        self._kept: dict[str, bytes] = {}
        """The content of each file read that holds the marker, by key."""

    def __call__(self) -> list[bytes]:
        return self._looked(trust_recorded=True)

    def relisted(self) -> list[bytes]:
        """What a call returns, with every folder listed whatever its recorded time:
        a recorded listing trusts the folder's clock and that its times never go
        back, and a message must never be said lost on the strength of that trust."""
        return self._looked(trust_recorded=False)

    def _looked(self, *, trust_recorded: bool) -> list[bytes]:
        for _ in range(_RESCANS - 1):
            if self._read_new(trust_recorded=trust_recorded):
                break
        else:
            self._read_new(trust_recorded=trust_recorded)
        return list(self._kept.values())

    def _read_new(self, *, trust_recorded: bool) -> bool:
        """Read each file that came in and is not read yet, in each folder not passed
        over (:meth:`_still_current`, when ``trust_recorded``); False when one went
        between its listing and its reading (renamed: the next listing has it)."""
        none_gone = True
        for folder in self._folders:
            settled = self._settled_time(folder)
            if trust_recorded and self._still_current(folder, settled):
                continue
            self._listed_at.pop(folder, None)
            read_all, folder_none_gone = self._read_folder(folder)
            none_gone = none_gone and folder_none_gone
            if read_all:
                self._record(folder, settled)
        return none_gone

    def _read_folder(self, folder: Path) -> tuple[bool, bool]:
        """Read each file in ``folder`` that came in and is not read yet. Whether every
        file listed could be looked at, and whether none went before its reading;
        one that went was renamed, which changed the folder's time."""
        read_all = none_gone = True
        for listed in self._entries(folder):
            if listed is None:
                read_all = False
                continue
            key, version, path = listed
            if key in self._before and (self._maildir or self._before[key] == version):
                continue
            if key in self._read and self._read[key] == version:
                continue
            try:
                with open(path, "rb") as file:
                    content = file.read(self._max_octets)
            except FileNotFoundError:
                none_gone = False
                continue
            except OSError:
                read_all = False  # this file alone cannot be read (its mode): tried
                continue  # again next call, its folder listed again
            self._read[key] = version
            if self._marker in content:
                self._kept[key] = content
            else:
                self._kept.pop(key, None)
        return read_all, none_gone

    def _entries(self, folder: Path) -> Iterator[tuple[str, Version, str] | None]:
        """Each message file's key (its name, flags aside in a Maildir), version and
        path, one at a time: a big folder is never held as a list. None for a file
        that could not be looked at (gone since listed, or unreadable)."""
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    version = None if self._maildir else _version(entry.stat())
                except OSError:
                    yield None
                    continue
                key = maildir_key(entry.name) if self._maildir else entry.name
                yield key, version, entry.path

    def _settled_time(self, folder: Path) -> int | None:
        """The Maildir ``folder``'s modification time, read before its listing, when
        the clock is far enough past it that a name added later changes it; None
        while it is not (or cannot be read), and in a directory of plain files: the
        folder is listed at every call."""
        if not self._maildir:
            return None
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return None
        return mtime if time.time_ns() - mtime >= _SETTLED_NS else None

    def _record(self, folder: Path, settled: int | None) -> None:
        """Remember that ``folder`` was listed whole at its ``settled`` time."""
        if settled is not None:
            self._listed_at[folder] = (settled, self._clock())

    def _still_current(self, folder: Path, settled: int | None) -> bool:
        """Whether ``folder``'s last whole listing can stand for one now: its time is
        still the one recorded, and the listing is younger than :data:`_RELIST_AFTER_S`."""
        recorded = self._listed_at.get(folder)
        if settled is None or recorded is None:
            return False
        recorded_time, listed_at = recorded
        return recorded_time == settled and self._clock() - listed_at < _RELIST_AFTER_S
