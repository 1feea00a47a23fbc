"""The UPDATE state of a Maildir (RFC 1939 §6): the deleted messages removed, the rest moved.

The messages marked deleted are removed, every name of their files (see
:func:`~smtpcore._maildir_names.remove_message`), and the rest of ``new`` moves to
``cur``, with the ``S`` (seen) flag on those retrieved (see
:func:`~smtpcore._maildir_names.keep`). Each kind of failure is told in one WARNING
however many messages it hit; only a deleted message not removed fails the UPDATE.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from smtpcore._maildir_entry import _Entry
from smtpcore._maildir_faults import told
from smtpcore._maildir_move import OldNameLeft
from smtpcore._maildir_names import NamesByUniqueName, OtherNameFailed, keep, remove_message
from smtpcore._maildrop_errors import MaildropError

__all__ = ["_update_maildir"]

logger: Final = logging.getLogger("smtpcore.pop3.server")


def _update_maildir(
    path: Path,
    folders: Mapping[str, int],
    entries: Sequence[_Entry],
    deleted: Collection[int],
    retrieved: Collection[int],
    size_cache: MutableMapping[tuple[int, int, int, int], int],
    find_again: Callable[[int], None],
) -> None:
    """UPDATE the listed ``entries`` of the Maildir ``path``, whose folders are open as
    ``folders``: remove those numbered ``deleted`` (and their sizes from
    ``size_cache``), keep the others, marked seen if ``retrieved``. ``find_again(n)``
    puts in ``entries`` the file message ``n`` became since the listing, or raises
    ``FileNotFoundError``. :class:`MaildropError` if a deleted message was not removed."""
    not_removed, not_moved, old_name_left = _Faults(), _Faults(), _Faults()
    names = NamesByUniqueName(folders)
    for number, entry in enumerate(entries, 1):
        try:
            if number in deleted:
                _remove(number, entries, names, find_again)
                if entry.cached is not None:
                    size_cache.pop(entry.cached, None)
            else:
                keep(entry, folders, path, seen=number in retrieved)
        except OSError as exc:
            if number in deleted:
                faults = not_removed
            elif isinstance(exc, OldNameLeft):
                faults = old_name_left
            else:
                faults = not_moved
            faults.add(path / _failed_name(entry, exc), exc)
    not_moved.warn(_NOT_MOVED)
    old_name_left.warn(_OLD_NAME_LEFT)
    if not_removed.warn(_NOT_REMOVED):
        raise told(MaildropError(f"{not_removed.count} deleted messages could not be removed"))


def _remove(
    number: int,
    entries: Sequence[_Entry],
    names: NamesByUniqueName,
    find_again: Callable[[int], None],
) -> None:
    """Remove message ``number`` (see :func:`~smtpcore._maildir_names.remove_message`)
    where it is now: found again under another name, with the other names found
    there. Gone already, it is removed."""
    folders = names.folders
    with contextlib.suppress(FileNotFoundError):  # gone: removed already
        try:
            remove_message(entries[number - 1], folders, names)
        except FileNotFoundError:
            find_again(number)
            remove_message(entries[number - 1], folders, names)


def _failed_name(entry: _Entry, exc: OSError) -> str:
    """The name (``folder/name``) at which ``exc`` stopped the UPDATE of ``entry``: its
    listed name, or another name of its file (:class:`OtherNameFailed`)."""
    if isinstance(exc, OtherNameFailed):
        return f"{exc.folder}/{exc.filename}"
    return f"{entry.folder}/{entry.name}"


_NOT_REMOVED: Final = (
    "maildrop: %r: %s; not removed at UPDATE (%d deleted message(s) not removed in "
    "all): they are listed again at the next login"
)
_NOT_MOVED: Final = (
    "maildrop: %r: %s; not moved to cur/ at UPDATE (%d kept message(s) not moved in "
    "all): they stay where they are, listed again, their flags unchanged"
)
_OLD_NAME_LEFT: Final = (
    "maildrop: %r: %s; moved to cur/ at UPDATE, but this old name could not be removed "
    "(%d kept message(s) so in all): both names are one file, listed as one message at "
    "the next login, whose UPDATE removes the old name"
)


@dataclass(slots=True)
class _Faults:
    """The messages one kind of UPDATE failure hit: how many, and the first (the path
    that failed, and why), for one WARNING line however many (a folder made read-only
    fails them all, at every QUIT)."""

    count: int = 0
    first: tuple[Path, OSError] | None = None

    def add(self, path: Path, exc: OSError) -> None:
        self.count += 1
        self.first = self.first or (path, exc)

    def warn(self, message: str) -> bool:
        """Log ``message`` (its path, its error, the count) if any failed; whether any did."""
        if self.first is None:
            return False
        path, exc = self.first
        logger.warning(message, str(path), exc.strerror, self.count)
        return True
