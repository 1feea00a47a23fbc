"""The names of one Maildir message file at UPDATE: which are the message, which its DELE
removes, and which flags the name it keeps carries.

A message's file may have more than one name in ``new/`` and ``cur/``: a move cut short
between its link and its unlink (see :mod:`smtpcore._maildir_move`) leaves two, and
another reader (Dovecot, a mail user agent) may rename any of them in the session. The
rules:

- One device and inode is one message, whatever its names: they are listed once, and
  its UPDATE removes the extra ones, every one of them for a DELE, so that a deleted
  message never comes back under a name left behind. A link to the file outside
  ``new/`` and ``cur/`` (another user's Maildir, one delivery linked into each) is not
  the message's, and is left.
- Only ``ENOENT`` means a name is gone (:func:`~smtpcore._maildir_move.stat_name`): a
  name that cannot be looked at (``EIO``) fails the DELE, or leaves the kept message
  where it is, rather than be taken for another file's, or for none.
- A file is never replaced: a move is a link, or a ``rename()`` onto a name found free,
  and a name is removed only if it is the file, looked at just before (see
  :mod:`smtpcore._maildir_move` for the window each leaves).
- No flag another reader set is lost: the name kept carries the flags of the names
  removed, which go only once it does.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final, Protocol

from smtpcore._maildir_move import (
    Unlinked,
    file_of,
    move_unless_taken,
    remove_if_file,
    stat_name,
    unlink_name,
)
from smtpcore._maildir_open import _FOLDERS

__all__ = [
    "FLAG_LETTERS",
    "ListedMessage",
    "NamesByUniqueName",
    "OtherNameFailed",
    "flags_of",
    "keep",
    "links_held",
    "mark",
    "names_of",
    "remove_message",
    "unique_name",
]

logger: Final = logging.getLogger("smtpcore.pop3.server")

FLAG_LETTERS: Final = frozenset(string.ascii_letters)
"""The Maildir flags a message takes from its file's other names at UPDATE (see
:func:`keep`): letters only, so that a name stays short whatever the others hold."""


class ListedMessage(Protocol):
    """What this module reads of a message the session listed (the maildrop's own entry
    for it), so that it needs nothing of the maildrop that lists."""

    @property
    def folder(self) -> str:
        """``cur`` or ``new``: where its listed name is."""

    @property
    def name(self) -> str:
        """Its listed name in :attr:`folder`."""

    @property
    def links(self) -> tuple[tuple[str, str], ...]:
        """Other names (folder and name) of its file that the session knows of."""

    @property
    def inode(self) -> tuple[int, int] | None:
        """The device and inode of its file, where it has :attr:`links` or was found
        again."""

    @property
    def found_again(self) -> bool:
        """Whether the session found it again under another name: another reader has
        been at it."""


class OtherNameFailed(OSError):
    """An ``OSError`` at another name of a message's file than its listed one (``EIO``
    on ``new/X`` while ``cur/X:2,S`` is listed): :attr:`folder` and ``filename`` name
    the name that failed, for the WARNING to name it."""

    def __init__(self, folder: str, name: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror, name)
        self.folder = folder


def unique_name(name: str) -> str:
    """A Maildir file name without its info (what follows its ``:``)."""
    return name.split(":", 1)[0]


def flags_of(name: str) -> str:
    """The flags of a Maildir file name: what follows its ``:2,``."""
    info = name.partition(":")[2]
    return info[2:] if info.startswith("2,") else ""


def _listed(folders: Mapping[str, int]) -> Iterator[tuple[str, str]]:
    """Every name (folder and name) in ``new/`` and ``cur/``, as the directories hold
    them now."""
    for sub in _FOLDERS:
        for name in os.listdir(folders[sub]) if sub in folders else ():
            yield sub, name


def names_of(folders: Mapping[str, int], base: str) -> list[tuple[str, str]]:
    """The names (folder and name) of the unique name ``base`` in ``new/`` and ``cur/``
    now: one listing of each."""
    return [(sub, name) for sub, name in _listed(folders) if unique_name(name) == base]


class NamesByUniqueName:
    """The names of ``new/`` and ``cur/`` by unique name, for the DELEs of one UPDATE
    (see :func:`remove_message`). A file with names in other maildrops (one delivery
    linked into each) has more names than its own, none of which the session knows,
    and a listing for each would make the UPDATE quadratic: those share one listing,
    made at the first one."""

    def __init__(self, folders: Mapping[str, int]) -> None:
        self.folders = folders
        self._names: dict[str, list[tuple[str, str]]] | None = None

    def of(self, name: str, *, anew: bool) -> list[tuple[str, str]]:
        """The names (folder and name) of ``name``'s unique name: listed now if
        ``anew``, else from the listing shared by the UPDATE."""
        if anew:
            return names_of(self.folders, unique_name(name))
        if self._names is None:
            self._names = {}
            for sub, other in _listed(self.folders):
                self._names.setdefault(unique_name(other), []).append((sub, other))
        return self._names.get(unique_name(name), [])


def remove_message(
    entry: ListedMessage, folders: Mapping[str, int], names: NamesByUniqueName
) -> None:
    """Remove the message ``entry`` at UPDATE: every name of its file in ``new/`` and
    ``cur/``, so that none brings the deleted message back at the next login. A file
    with one name is removed by one ``unlink()`` after the ``lstat`` that counted them;
    one with more loses its other names first (see :func:`_remove_other_names`), then
    its own, looked at again. ``FileNotFoundError`` if its name is gone (to find it
    again); another ``OSError`` (a name that cannot be looked at or removed, or its own
    replaced meanwhile by another file) fails the DELE, rather than count it done while
    a name of it is left: RFC 1939 §6, ``-ERR some deleted messages not removed``."""
    folder = folders[entry.folder]
    found = stat_name(folder, entry.name)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "renamed since", entry.name)
    if found.st_nlink == 1:
        unlinked = Unlinked.REMOVED if unlink_name(folder, entry.name) else Unlinked.GONE
    else:
        file = (found.st_dev, found.st_ino)
        _remove_other_names(entry, folders, names, file)
        unlinked = remove_if_file(folder, entry.name, file)
    if unlinked is Unlinked.GONE:
        raise FileNotFoundError(errno.ENOENT, "renamed since", entry.name)
    if unlinked is Unlinked.ANOTHER_FILE:
        raise OSError(errno.EEXIST, "another file was put under its name", entry.name)


def _remove_other_names(
    entry: ListedMessage,
    folders: Mapping[str, int],
    names: NamesByUniqueName,
    file: tuple[int, int],
) -> None:
    """Remove the names of ``file`` in ``new/`` and ``cur/`` but ``entry``'s own. The
    ones the session knows (:attr:`ListedMessage.links`) are removed directly, and that
    is all unless another reader has been at the message: found again, or a known name
    gone or another file's. Then the names of its unique name are listed anew, so that
    one it made in the session goes too. A file with no other name known (linked into
    other maildrops) takes them from the listing the UPDATE shares. A listing only
    where another reader was at work: the UPDATE stays linear in the messages."""
    own = (entry.folder, entry.name)
    anew = entry.found_again
    if entry.links and not anew:
        met = {
            _remove_other_name(folders, sub, name, file)
            for sub, name in entry.links
            if (sub, name) != own and sub in folders
        }
        if met <= {Unlinked.REMOVED}:
            return
        anew = True
    for sub, name in names.of(entry.name, anew=anew):
        if (sub, name) != own:
            _remove_other_name(folders, sub, name, file)


def _remove_other_name(
    folders: Mapping[str, int], sub: str, name: str, file: tuple[int, int]
) -> Unlinked:
    """:func:`~smtpcore._maildir_move.remove_if_file` of another name of a message's
    file, whose failure names it (:class:`OtherNameFailed`)."""
    try:
        return remove_if_file(folders[sub], name, file)
    except OSError as exc:
        raise OtherNameFailed(sub, name, exc) from exc


def keep(entry: ListedMessage, folders: Mapping[str, int], root: Path, *, seen: bool) -> None:
    """Move a kept message from ``new/`` to ``cur/``, adding the S flag if ``seen``
    (Maildir info 2), and the flags of its file's other names (``entry.links``),
    which are removed once the message's name carries them (see :func:`mark`): move
    first, so that a move refused (the name taken, a link that fails, a crash) leaves
    every name, and every flag, where it was."""
    links = links_held(entry, folders)
    flags = flags_of(entry.name)
    added = {flag for _, name in links for flag in flags_of(name) if flag in FLAG_LETTERS}
    if seen:
        added.add("S")
    if not added <= set(flags):
        flags = "".join(sorted(set(flags) | added))  # Maildir flags are in ASCII order
    now = mark(entry, folders, root, flags)
    if now is None or entry.inode is None:
        return
    for sub, name in links:
        if (sub, name) != now:
            # One that cannot be removed stays a second name of the file: the next
            # listing takes the two for one message, and its UPDATE removes it.
            with contextlib.suppress(OSError):
                remove_if_file(folders[sub], name, entry.inode)


def links_held(entry: ListedMessage, folders: Mapping[str, int]) -> list[tuple[str, str]]:
    """The other names of ``entry``'s file (``entry.links``) that still name it, while
    its listed name still holds it (else a link may be all that is left of it); one put
    under a name since is another message. An ``OSError`` where a name cannot be looked
    at (:class:`OtherNameFailed` for another name): the message is left as it is."""
    if not entry.links or file_of(folders[entry.folder], entry.name) != entry.inode:
        return []
    return [
        (sub, name)
        for sub, name in entry.links
        if (sub, name) != (entry.folder, entry.name)
        and sub in folders
        and _other_file(folders, sub, name) == entry.inode
    ]


def _other_file(folders: Mapping[str, int], sub: str, name: str) -> tuple[int, int] | None:
    """:func:`~smtpcore._maildir_move.file_of` another name of a message's file, whose
    failure names it (:class:`OtherNameFailed`)."""
    try:
        return file_of(folders[sub], name)
    except OSError as exc:
        raise OtherNameFailed(sub, name, exc) from exc


def mark(
    entry: ListedMessage, folders: Mapping[str, int], root: Path, flags: str
) -> tuple[str, str] | None:
    """Give a message the name of its unique name with ``flags`` in ``cur/``; the
    folder and name it has now, or None where it keeps a name without them. A
    Maildir without ``cur`` keeps it where it is. A file under the new name already
    (one the listing left out: unreadable, or a copy) is never replaced: the message
    stays where it is, still delivered, and a WARNING names both
    (see :mod:`smtpcore._maildir_move`)."""
    target = f"{unique_name(entry.name)}:2,{flags}"
    if (entry.folder, entry.name) == ("cur", target):
        return "cur", target
    if "cur" not in folders:
        return (entry.folder, entry.name) if flags_of(entry.name) == flags else None
    try:
        moved = move_unless_taken(folders[entry.folder], entry.name, folders["cur"], target)
    except FileNotFoundError:  # another reader moved it meanwhile
        return None
    if moved:
        return "cur", target
    logger.warning(
        "maildrop: %r is not moved to %r at UPDATE: another file has that name; "
        "it stays where it is, its flags unchanged (remove or rename one of them)",
        str(root / entry.folder / entry.name),
        str(root / "cur" / target),
    )
    return None
