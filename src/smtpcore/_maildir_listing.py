"""The listing of a Maildir, taken once a session: its messages, their sizes and unique-ids.

Messages come from ``new/`` and ``cur/`` in delivery order, one a unique name, each
sized by its name's ``,W=``, the ``size_cache``, or reading it within the listing's
budget (see :class:`~smtpcore.maildrop.Maildir`). Files it leaves out are told once a
listing (:mod:`smtpcore._maildir_unlisted`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from smtpcore._maildir_entry import _Entry, _file_if_seen
from smtpcore._maildir_faults import FILE_FAULTS, refused
from smtpcore._maildir_move import stat_name
from smtpcore._maildir_open import _FOLDERS
from smtpcore._maildir_read import _open_message, _read_chunks, _TooLarge
from smtpcore._maildir_unlisted import (
    HIDDEN,
    NOT_SIZED_THIS_TIME,
    TOO_LARGE_TO_SIZE,
    UNREADABLE,
    Unlisted,
)
from smtpcore._pop3_size import pop3_size

__all__ = ["MAX_SIZED_BY_READING", "UID_RE", "_Listing", "_order_key", "delivery_order"]

SizeKey = tuple[int, int, int, int]
"""A ``size_cache`` key: a file's device, inode, size and mtime."""

UID_RE: Final = re.compile(r"[\x21-\x7e]{1,70}")
"""A unique-id: 1 to 70 printable ASCII characters (RFC 1939 §7)."""
_VSIZE_RE: Final = re.compile(r",W=([0-9]{1,15})(?:,|$)")
_DIGITS_RE: Final = re.compile(r"([0-9]+)")
MAX_SIZED_BY_READING: Final = 1 << 30
"""See :data:`smtpcore.maildrop.MAX_SIZED_BY_READING`."""


@dataclass(slots=True)
class _Sizing:
    """A message file on its way into a listing: its size, once known."""

    sub: str
    name: str
    uid: str
    size: int | None
    """Its POP3 size; None while it is still to be read (a ``size_cache`` miss)."""
    key: tuple[int, int, int, int] | None = None
    """Its ``size_cache`` key, where it has no ``,W=``."""
    links: list[tuple[str, str]] = field(default_factory=list)
    """Other names of the same file (see :attr:`_Entry.links`)."""
    inode: tuple[int, int] | None = None

    @property
    def octets(self) -> int:
        """Its ``st_size``, which reading it to size it costs."""
        assert self.key is not None
        return self.key[2]


def _uid(base: str) -> str:
    """The unique-id of a Maildir file: its unique name (what precedes ``:2,``).

    A name that is not a valid unique-id (longer than 70 characters, say) is
    replaced by its MD5, which is just as stable.
    """
    if UID_RE.fullmatch(base):
        return base
    return hashlib.md5(base.encode("utf-8", "surrogateescape"), usedforsecurity=False).hexdigest()


def _by_unique_name(names: Iterable[tuple[str, str, str]]) -> dict[str, deque[tuple[str, str]]]:
    """The files of each unique-id (folder and name), from ``names`` as
    :meth:`_Listing._names` gives them: unique-ids in delivery order, and the files of
    one, ``cur`` first, in the order a listing tries them."""
    files: dict[str, deque[tuple[str, str]]] = {}
    for sub, name, base in names:
        files.setdefault(_uid(base), deque()).append((sub, name))
    return files


def delivery_order(name: str) -> list[tuple[int, int, str]]:
    """The sort key that puts Maildir messages in delivery order.

    A Maildir unique name starts with the delivery time in seconds, often
    followed by microseconds and a counter (``M<usec>``, ``Q<n>``) that are
    not zero-padded, so numbers compare as numbers: ``M5`` comes before
    ``M123456``, which a plain string sort gets wrong. The runs of ASCII digits
    are the odd parts of the split (``str.isdigit`` holds for ``²`` and ``①``
    as well, which ``int`` refuses).
    """
    return [
        (0, int(part), "") if index % 2 else (1, 0, part)
        for index, part in enumerate(_DIGITS_RE.split(name))
        if part
    ]


def _order_key(name: str) -> str:
    """:func:`delivery_order` as one string, which orders names the same way and takes
    a tenth of the memory (a listing of 100,000 names holds 100,000 keys).

    A run of digits becomes NUL, its length without leading zeros as one
    character, then those digits: a longer number is the larger, and a number
    sorts before text at the same place. Text stays as it is: no name holds a
    NUL, so text that is a prefix of other text sorts first, as a shorter part
    does in the list.
    """
    parts = _DIGITS_RE.split(name)
    for index in range(1, len(parts), 2):  # the runs of digits
        digits = parts[index].lstrip("0")
        parts[index] = f"\x00{chr(len(digits))}{digits}"
    return "".join(parts)


class _Listing:
    """One listing of the Maildir ``path``: :meth:`entries` lists its folders, sizing the
    files without ``,W=`` from ``size_cache``, or by reading at most
    ``max_sized_by_reading`` octets in all, each size read then given to ``remember``
    (the maildrop keeps the cache, which several sessions share)."""

    def __init__(
        self,
        path: Path,
        size_cache: Mapping[SizeKey, int],
        max_sized_by_reading: int,
        remember: Callable[[SizeKey, int], None],
    ) -> None:
        self.path = path
        self._size_cache = size_cache
        self.max_sized_by_reading = max_sized_by_reading
        self._remember = remember

    def entries(self, folders: Mapping[str, int]) -> list[_Entry]:
        """The messages of ``folders`` (``cur`` and ``new`` open), in delivery order."""
        unlisted = Unlisted()
        try:
            found = self._sized(folders, _by_unique_name(self._names(folders)), unlisted)
        finally:
            unlisted.warn()
        return [
            _Entry(
                item.sub,
                item.name,
                item.size,
                item.uid,
                item.key,
                tuple(item.links),
                item.inode,
            )
            for item in found
            if item.size is not None
        ]

    def _names(self, folders: Mapping[str, int]) -> list[tuple[str, str, str]]:
        """The message files of ``new`` and ``cur`` (folder, name, and the name without
        its flags), in delivery order."""
        found: list[tuple[str, str, str, str]] = []
        for sub in _FOLDERS:
            if sub not in folders:
                continue
            try:
                with os.scandir(folders[sub]) as listing:
                    # Messages are regular files: a directory, a FIFO (whose open would
                    # block the server) or a dangling link another program left is not.
                    names = [
                        e.name
                        for e in listing
                        if e.is_file(follow_symlinks=False) and e.name[:1] != "."
                    ]
            except OSError as exc:
                raise refused(self.path / sub, exc, "read the maildrop") from exc
            for name in names:
                base = name.split(":", 1)[0]
                found.append((_order_key(base), sub, name, base))
        found.sort(key=lambda item: item[0])
        return [(sub, name, base) for _, sub, name, base in found]

    def _sized(
        self,
        folders: Mapping[str, int],
        files: Mapping[str, deque[tuple[str, str]]],
        unlisted: Unlisted,
    ) -> list[_Sizing]:
        """One sized :class:`_Sizing` a unique-id, in delivery order: the first of its
        ``files`` (see :func:`_by_unique_name`) that can be sized. A file that cannot
        (gone, unreadable, too large, not sized this time) gives way to the next of the
        same unique name, so that a file planted under a message's name, which the
        server cannot read, hides no message; a file left behind one listed is
        :data:`~smtpcore._maildir_unlisted.HIDDEN`, unless it is another name of the
        same file (a move cut short, see :mod:`smtpcore._maildir_move`): one message,
        listed once, whose UPDATE removes that name. Each round sizes the next file of
        the unique-ids still unsized, within what is left of the reading budget."""
        listed: dict[str, _Sizing] = {}
        waiting = list(files)
        budget = self.max_sized_by_reading
        while waiting:
            to_read: list[_Sizing] = []
            for uid in waiting:
                item = self._first_statted(folders, uid, files[uid], unlisted)
                if item is not None and item.size is None:
                    to_read.append(item)
                elif item is not None:
                    listed[uid] = item
            budget = self._read_sizes(folders, to_read, budget, unlisted)
            listed.update((item.uid, item) for item in to_read if item.size is not None)
            waiting = [item.uid for item in to_read if item.size is None and files[item.uid]]
        for uid, left in files.items():
            if uid in listed:
                item = listed[uid]
                shown = str(self.path / item.sub / item.name)
                for sub, name in left:
                    found = _file_if_seen(folders[sub], name)
                    if found is not None and found == _file_if_seen(folders[item.sub], item.name):
                        item.links.append((sub, name))
                        item.inode = found
                    else:
                        unlisted.add(HIDDEN, shown, str(self.path / sub / name))
        return [listed[uid] for uid in files if uid in listed]

    def _first_statted(
        self,
        folders: Mapping[str, int],
        uid: str,
        left: deque[tuple[str, str]],
        unlisted: Unlisted,
    ) -> _Sizing | None:
        """The next of ``left``, the files of ``uid`` not yet tried, whose name or
        ``stat`` gives a :class:`_Sizing` (see :meth:`_size`); None when none is left.
        One sized unread (by its ``,W=``, or the ``size_cache``) with others behind it
        is listed only if it opens: else a file planted with a listed message's name,
        ``,W=`` and all, would hide it behind one the server cannot read."""
        while left:
            sub, name = left.popleft()
            item = self._size(folders[sub], sub, name, uid, unlisted)
            if item is None:
                continue
            if item.size is None or not left or self._opens(folders[sub], item, unlisted):
                return item
        return None

    def _opens(self, folder: int, item: _Sizing, unlisted: Unlisted) -> bool:
        """Whether ``item``'s file opens; one that is gone does not, and one that cannot
        be read is left out (see :meth:`_unreadable`)."""
        try:
            fd, _ = _open_message(folder, item.name)
        except FileNotFoundError:
            return False
        except OSError as exc:
            self._unreadable(item.sub, item.name, exc, unlisted)
            return False
        os.close(fd)
        return True

    def _size(
        self, folder: int, sub: str, name: str, uid: str, unlisted: Unlisted
    ) -> _Sizing | None:
        """The file's :class:`_Sizing`, by its name, ``stat`` and the ``size_cache``; None
        for a file gone since the directory was read, or one larger than the listing
        may read (see :data:`~smtpcore._maildir_unlisted.TOO_LARGE_TO_SIZE`)."""
        match = _VSIZE_RE.search(name.split(":", 1)[0])
        if match is not None:
            return _Sizing(sub, name, uid, int(match[1]))
        try:
            stat = stat_name(folder, name)
        except OSError as exc:  # the listing goes on without it, and names it
            self._unreadable(sub, name, exc, unlisted)
            return None
        if stat is None:
            return None  # removed by another program since listdir
        most = self.max_sized_by_reading
        if stat.st_size > most:
            unlisted.add(TOO_LARGE_TO_SIZE, str(self.path / sub / name), stat.st_size, most)
            return None
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        return _Sizing(sub, name, uid, self._size_cache.get(key), key)

    def _read_sizes(
        self,
        folders: Mapping[str, int],
        found: Iterable[_Sizing],
        budget: int,
        unlisted: Unlisted,
    ) -> int:
        """Size the files of ``found`` not yet sized by reading them, the smallest
        first, within ``budget``, what is left of the listing's ``max_sized_by_reading``
        octets, and return what is left of it then: a limit for each file would let a
        user who plants many (sparse, each at the limit) have one login read them all,
        and a ``touch`` makes their cached sizes stale. A file the budget has no room
        left for is left out this time; the ones read are cached, so that a later login
        spends its budget further on."""
        for item in sorted(
            (item for item in found if item.size is None), key=lambda item: item.octets
        ):
            if item.octets > budget:
                path = str(self.path / item.sub / item.name)
                unlisted.add(NOT_SIZED_THIS_TIME, path, item.octets, self.max_sized_by_reading)
                continue
            budget -= self._read_size(folders[item.sub], item, budget, unlisted)
        return budget

    def _read_size(self, folder: int, item: _Sizing, most: int, unlisted: Unlisted) -> int:
        """Size ``item`` by reading at most ``most`` octets of it, cache its size, and
        return the octets this cost. A file gone meanwhile stays unsized (left out);
        one grown past ``most`` since its ``stat`` is left out too, and spends the rest
        of the budget (it may have been read that far)."""
        try:
            size = pop3_size(_read_chunks(folder, item.name, most))
        except FileNotFoundError:
            return 0
        except _TooLarge as exc:
            path = str(self.path / item.sub / item.name)
            limit = self.max_sized_by_reading
            reason = TOO_LARGE_TO_SIZE if exc.size > limit else NOT_SIZED_THIS_TIME
            unlisted.add(reason, path, exc.size, limit)
            return most
        except OSError as exc:
            self._unreadable(item.sub, item.name, exc, unlisted)
            return 0
        assert item.key is not None
        self._remember(item.key, size)
        item.size = size
        return item.octets

    def _unreadable(self, sub: str, name: str, exc: OSError, unlisted: Unlisted) -> None:
        """Leave out a file that cannot be read (see
        :data:`~smtpcore._maildir_unlisted.UNREADABLE`), so that the rest of the maildrop
        is served: a client refused the whole of it would retry at every poll, for ever.
        A failure that is not the file's own (:data:`~smtpcore._maildir_faults.FILE_FAULTS`)
        refuses the listing, logged."""
        path = self.path / sub / name
        if exc.errno not in FILE_FAULTS:
            raise refused(path, exc, "read the maildrop") from exc
        unlisted.add(UNREADABLE, str(path), exc.strerror)


delivery_order.__module__ = "smtpcore.maildrop"
