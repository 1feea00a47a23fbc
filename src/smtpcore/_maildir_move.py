"""Renaming a Maildir message file at UPDATE without ever replacing another file.

``rename()`` replaces a file already under the new name, silently: moving ``new/X``
to ``cur/X:2,`` destroyed a ``cur/X:2,`` the listing had left out (one the server
could not read, or a second copy of the message). A hard link fails instead where the
name is taken (``EEXIST``), as the Maildir spec's own delivery uses it; the old name
is removed once the new one holds the file.

What the link changes:

- Between the link and the unlink the file has two names (its link count is 2); a
  crash there leaves both. They are one message, one inode: :func:`same_file` tells
  them from a copy, so that the next listing lists it once and its UPDATE removes the
  name it was moved from (or both, for a DELE), and never a different file.
- A filesystem without hard links (FAT; some network and FUSE filesystems: ``EPERM``,
  ``EOPNOTSUPP``, ``ENOSYS``), a link the kernel refuses (``fs.protected_hardlinks`` on
  a file of another uid the server cannot write: ``EPERM``) or a file with all the
  links it may have (``EMLINK``) would leave the message in ``new/`` for ever, with a
  WARNING at every QUIT. There the move is a ``rename()``, made only once ``lstat``
  finds the new name free (Python has no ``RENAME_NOREPLACE``). Between the two, a
  file made under that very name would be replaced, and the only ones that make it
  are readers moving this message: the server's own POP3 sessions take the
  maildrop's ``flock`` (the UPDATE holds it), and its delivery writes ``tmp/`` to
  ``new/``, never into ``cur/``. Another reader that does not take the lock (an IMAP
  server, a mail user agent) moving this message meanwhile renames it away, and the
  ``rename()`` then fails (``ENOENT``) and replaces nothing; only a second copy of
  the message, moved under exactly this name within that instant, could be lost, and
  a Maildir unique name names one message (Dovecot moves every file with
  ``rename()`` on that ground alone).

Removing a name only while it names a given file (the extra names of a message, the
old name of a move, a deleted message's) is no check then ``unlink()`` either:
another reader may rename a different file onto the name between the two, and the
``unlink()`` would destroy it. :func:`remove_if_file` renames the name first to a
private name beside it, which takes whatever the name holds at that instant and
replaces nothing, and removes that only if it is the file; another file goes back
under its name without replacing one put there since, or, where it cannot, stays
under the private name (a dot name, which Maildir readers skip and no ``tmp/``
cleaning removes) with a WARNING that names both.
"""

from __future__ import annotations

import enum
import errno
import itertools
import logging
import os
import re
from pathlib import Path
from typing import Final

__all__ = [
    "NO_LINKS",
    "PARKED_PREFIX",
    "Unlinked",
    "file_of",
    "inode",
    "move_unless_taken",
    "remove_if_file",
    "same_file",
]

logger: Final = logging.getLogger("smtpcore.pop3.server")

NO_LINKS: Final = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}
)
"""What ``link()`` gives where the file system or the kernel refuses a hard link,
and a ``rename()`` onto a free name may still move the file (see the module's
docstring); any other failure (``EACCES`` on the folder, ``ENOSPC``) a rename would
meet as well."""


def inode(folder: int, name: str) -> tuple[int, int] | None:
    """The device and inode of the file ``name`` in the folder open as ``folder`` (the
    name itself, not a link's target), or None when it cannot be had."""
    try:
        found = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def same_file(folder: int, name: str, other_folder: int, other: str) -> bool:
    """Whether two names are links to one file: a move cut short between its link and
    its unlink, not a copy."""
    first = inode(folder, name)
    return first is not None and first == inode(other_folder, other)


def file_of(folder: int, name: str) -> tuple[int, int] | None:
    """The device and inode of the file ``name`` in ``folder``, or None where there is no
    such name (``ENOENT``) only: any other failure (``EIO``) is raised, so that a name
    that could not be looked at is never taken for another file's, nor for none."""
    try:
        found = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def move_unless_taken(folder: int, name: str, to_folder: int, target: str, *, shown: Path) -> bool:
    """Give the file ``name`` in ``folder`` the name ``target`` in ``to_folder``, unless
    another file has that name: then nothing changes and the result is False. A
    ``target`` that is already a link to the same file (a move cut short) is finished.
    ``FileNotFoundError`` when ``name`` is gone; another ``OSError`` when the move
    fails otherwise, the file left where it is. Where hard links are refused
    (:data:`NO_LINKS`), a ``rename()`` onto a free name (see the module's docstring).
    The old name is removed by :func:`remove_if_file`; ``shown`` is the path of
    ``folder``, for its WARNING."""
    named = _new_name(folder, name, to_folder, target)
    if named is _Named.BOTH:
        file = file_of(to_folder, target)
        if file is not None:  # else another reader moved it on: the old name may be all
            remove_if_file(folder, name, file, shown=shown)
    return named is not _Named.TAKEN


class _Named(enum.Enum):
    """What :func:`_new_name` did."""

    BOTH = enum.auto()
    """The new name holds the file, and so does the old one, still to remove."""
    MOVED = enum.auto()
    """The file was renamed: the old name is gone."""
    TAKEN = enum.auto()
    """Another file has the new name: nothing changed."""


def _new_name(folder: int, name: str, to_folder: int, target: str) -> _Named:
    """Make ``target`` a name of the file ``name``, never replacing a file under it: a
    hard link, or where links are refused a ``rename()`` onto a free name."""
    try:
        os.link(name, target, src_dir_fd=folder, dst_dir_fd=to_folder, follow_symlinks=False)
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in NO_LINKS:
            raise
        if _renamed_onto_free_name(folder, name, to_folder, target):
            return _Named.MOVED
    else:
        return _Named.BOTH
    return _Named.BOTH if same_file(folder, name, to_folder, target) else _Named.TAKEN


def _renamed_onto_free_name(folder: int, name: str, to_folder: int, target: str) -> bool:
    """``rename()`` ``name`` to ``target`` where hard links are refused, once ``target``
    is found free (see the module's docstring): False, and nothing done, when it is
    not (one that cannot be looked at is not taken for free). ``FileNotFoundError``
    when ``name`` is gone."""
    os.stat(name, dir_fd=folder, follow_symlinks=False)
    try:
        os.stat(target, dir_fd=to_folder, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(name, target, src_dir_fd=folder, dst_dir_fd=to_folder)
        return True
    return False


class Unlinked(enum.Enum):
    """What :func:`remove_if_file` found under the name."""

    REMOVED = enum.auto()
    """The file: the name is removed."""
    GONE = enum.auto()
    """Nothing: another reader renamed or removed it."""
    ANOTHER_FILE = enum.auto()
    """Another file, left under the name (see :func:`remove_if_file`)."""


PARKED_PREFIX: Final = ".smtpcore-removing."
"""How a name being removed by :func:`remove_if_file` begins meanwhile: a dot, which
Maildir readers skip (the listing too), in the name's own folder, which no ``tmp/``
cleaning ever looks at."""
_HOST: Final = re.sub(r"[^A-Za-z0-9.-]", "_", os.uname().nodename)[:64]
_PARKED_NUMBERS: Final = itertools.count(1)


def remove_if_file(folder: int, name: str, file: tuple[int, int], *, shown: Path) -> Unlinked:
    """Remove ``name`` from ``folder`` if it names ``file`` (device and inode). A check
    then an ``unlink()`` would destroy a file another reader renamed onto the name
    between the two; so the name is first renamed to a private name (see
    :data:`PARKED_PREFIX`), which takes whatever the name holds at once and replaces
    nothing, and that is looked at: removed if it is ``file``, else put back, never
    replacing a file put under the name since (then it stays under the private name,
    and a WARNING names both, ``shown`` being the path of ``folder``). An ``OSError``
    where it cannot be looked at (``EIO``), the name put back first."""
    parked = _parked(folder, name)
    if parked is None:
        return Unlinked.GONE
    try:
        found = file_of(folder, parked)
        if found == file:
            os.unlink(parked, dir_fd=folder)
            return Unlinked.REMOVED
    except OSError:
        _put_back(folder, parked, name, shown)
        raise
    if found is None:  # a private name: nothing else removes it
        return Unlinked.GONE
    _put_back(folder, parked, name, shown)
    return Unlinked.ANOTHER_FILE


def _parked(folder: int, name: str) -> str | None:
    """``name`` renamed to a private name of its folder, that name; None when it is gone.
    Only this process makes names of its host and pid: one found there (a process of
    that pid that crashed) is never replaced, the next number is taken."""
    while True:
        parked = f"{PARKED_PREFIX}{_HOST}.{os.getpid()}.{next(_PARKED_NUMBERS)}"
        if file_of(folder, parked) is None:
            break
    try:
        os.rename(name, parked, src_dir_fd=folder, dst_dir_fd=folder)
    except FileNotFoundError:
        return None
    return parked


def _put_back(folder: int, parked: str, name: str, shown: Path) -> None:
    """Give the file put aside as ``parked`` its ``name`` again, never replacing a file
    made under it meanwhile; where it cannot, it stays as ``parked``, and a WARNING
    names both."""
    try:
        named = _new_name(folder, parked, folder, name)
        if named is _Named.BOTH:
            os.unlink(parked, dir_fd=folder)  # a private name: nobody else's
            return
        if named is _Named.MOVED:
            return
        reason = "another file has that name now"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    logger.warning(
        "maildrop: %r was another file than the message UPDATE removed it for, and "
        "cannot have its name back (%s): it is kept as %r, which readers skip; "
        "rename it back",
        str(shown / name),
        reason,
        str(shown / parked),
    )
