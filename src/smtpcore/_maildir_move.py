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
  WARNING at every QUIT. There the move is a rename that the kernel refuses where the
  new name is taken: ``renameat2`` with ``RENAME_NOREPLACE``
  (:func:`~smtpcore._no_replace.rename_no_replace`), after an ``lstat`` that finds
  the new name free (a taken one is answered without the rename). A file made under
  that name between the two is never replaced: the rename fails (``EEXIST``), and the
  name is taken, as if the look had found it.

  Only where the kernel, the C library or the filesystem has no ``RENAME_NOREPLACE``
  (not Linux; Linux before 3.15, glibc before 2.28; a filesystem without the flag:
  ``ENOSYS``, ``EINVAL``) is the move a plain ``rename()``, made on the look alone.
  Between the two, a file made under that very name would be replaced, and the only
  ones that make it are readers moving this message: the server's own POP3 sessions
  take the maildrop's ``flock`` (the UPDATE holds it), and its delivery writes
  ``tmp/`` to ``new/``, never into ``cur/``. Another reader that does not take the
  lock (an IMAP server, a mail user agent) moving this message meanwhile renames it
  away, and the ``rename()`` then fails (``ENOENT``) and replaces nothing; only a
  second copy of the message, moved under exactly this name within that instant,
  could be lost, and a Maildir unique name names one message (Dovecot moves every
  file with ``rename()`` on that ground alone).

Removing a name only while it names a given file (another name of a message, the old
name of a move, a deleted message's own name where its file has others) is
:func:`remove_if_file`: a look at the
name (``lstat``), then ``unlink()``. Between the two, a file renamed onto that very name
would be removed in its place. The window is accepted on the fallback's ground: the
only files renamed onto a message's name are that message's (another reader moving it;
a Maildir unique name names one message), and the server's own sessions hold the lock.
Looking through a descriptor instead (``open``, then ``fstat``) would not narrow it:
``unlink()`` takes a name, never a file, and no call removes a name only while it
names a given inode, so a look made by any means is as old by the ``unlink`` as an
``lstat``. Closing it would take moving the name aside first (a rename takes whatever
file is there), then looking, then removing or putting back: a name of the server's
own in the user's Maildir, which a crash would leave for every reader to list, and
the server makes none. The DELE of a file with one name
(:func:`~smtpcore._maildir_names.remove_message`) compares no file at all: its
``lstat`` counts the names, and the one ``unlink()`` removes the listed name, which
names the message, whatever file another reader moved under it meanwhile.

Only ``ENOENT`` means a name is gone (:func:`stat_name`): any other failure of a look
(``EIO``) is raised, so that a name that could not be looked at is never taken for
another file's, nor for none, and no decision to keep or remove a name is made on it.
"""

from __future__ import annotations

import enum
import errno
import os
from typing import Final

from smtpcore._no_replace import NoReplaceUnsupported, rename_no_replace

__all__ = [
    "NO_LINKS",
    "OldNameLeft",
    "Unlinked",
    "file_of",
    "move_unless_taken",
    "remove_if_file",
    "same_file",
    "stat_name",
    "unlink_name",
]

NO_LINKS: Final = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}
)
"""What ``link()`` gives where the file system or the kernel refuses a hard link,
and a ``rename()`` onto a free name may still move the file (see the module's
docstring); any other failure (``EACCES`` on the folder, ``ENOSPC``) a rename would
meet as well."""


def stat_name(folder: int, name: str) -> os.stat_result | None:
    """The ``lstat`` of ``name`` in the folder open as ``folder`` (the name itself, not a
    link's target), or None where there is no such name (``ENOENT``) only: any other
    failure (``EIO``) is raised (see the module's docstring). The one way a name is
    looked at; a caller that may go on without the answer (a listing) says so where it
    catches the error."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def file_of(folder: int, name: str) -> tuple[int, int] | None:
    """The device and inode of the file ``name`` in ``folder`` (see :func:`stat_name`):
    one device and inode is one message, whatever its names."""
    found = stat_name(folder, name)
    return None if found is None else (found.st_dev, found.st_ino)


def same_file(folder: int, name: str, other_folder: int, other: str) -> bool:
    """Whether two names are links to one file: a move cut short between its link and
    its unlink, not a copy. ``FileNotFoundError`` where ``name`` is gone."""
    first = file_of(folder, name)
    if first is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    return first == file_of(other_folder, other)


def move_unless_taken(folder: int, name: str, to_folder: int, target: str) -> bool:
    """Give the file ``name`` in ``folder`` the name ``target`` in ``to_folder``, unless
    another file has that name: then nothing changes and the result is False. A
    ``target`` that is already a link to the same file (a move cut short) is finished.
    ``FileNotFoundError`` when ``name`` is gone; another ``OSError`` when the move
    fails otherwise, the file left where it is, and :class:`OldNameLeft` when it has
    its new name but keeps its old one too. Where hard links are refused
    (:data:`NO_LINKS`), a ``rename()`` onto a free name (see the module's docstring).
    The old name is removed by :func:`remove_if_file`."""
    named = _new_name(folder, name, to_folder, target)
    if named is _Named.BOTH:
        try:
            file = file_of(to_folder, target)
            if file is not None:  # else another reader moved it on: the old name may be all
                remove_if_file(folder, name, file)
        except OSError as exc:
            raise OldNameLeft(exc.errno, exc.strerror, name) from exc
    return named is not _Named.TAKEN


class OldNameLeft(OSError):
    """A move that gave the file its new name, and could not remove its old one (``EIO``):
    two names of one file, which the next listing takes for one message (see
    :func:`same_file`), and whose UPDATE removes the old one again."""


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
    """Rename ``name`` to ``target`` where hard links are refused, never replacing a
    file under ``target`` (see the module's docstring): False, and nothing done, when
    it is taken (one that cannot be looked at is not taken for free).
    ``FileNotFoundError`` when ``name`` is gone. The kernel refuses a taken name in
    the rename itself (:func:`~smtpcore._no_replace.rename_no_replace`); only where it
    cannot is the ``rename()`` made on the look alone."""
    if stat_name(folder, name) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    if stat_name(to_folder, target) is not None:
        return False
    try:
        return rename_no_replace(name, target, src_dir_fd=folder, dst_dir_fd=to_folder)
    except NoReplaceUnsupported:
        pass
    os.rename(name, target, src_dir_fd=folder, dst_dir_fd=to_folder)
    return True


class Unlinked(enum.Enum):
    """What :func:`remove_if_file` found under the name."""

    REMOVED = enum.auto()
    """The file: the name is removed."""
    GONE = enum.auto()
    """Nothing: another reader renamed or removed it."""
    ANOTHER_FILE = enum.auto()
    """Another file, left under the name."""


def remove_if_file(folder: int, name: str, file: tuple[int, int]) -> Unlinked:
    """Remove ``name`` from ``folder`` if it names ``file`` (device and inode): look, then
    ``unlink()`` (see the module's docstring for the window between the two). An
    ``OSError`` where it cannot be looked at or removed (``EIO``, ``EACCES``)."""
    found = file_of(folder, name)
    if found is None:
        return Unlinked.GONE
    if found != file:
        return Unlinked.ANOTHER_FILE
    return Unlinked.REMOVED if unlink_name(folder, name) else Unlinked.GONE


def unlink_name(folder: int, name: str) -> bool:
    """``unlink()`` ``name`` from ``folder``: False where it is gone already."""
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        return False
    return True
