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
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Final

__all__ = ["NO_LINKS", "inode", "move_unless_taken", "same_file"]

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


def move_unless_taken(folder: int, name: str, to_folder: int, target: str) -> bool:
    """Give the file ``name`` in ``folder`` the name ``target`` in ``to_folder``, unless
    another file has that name: then nothing changes and the result is False. A
    ``target`` that is already a link to the same file (a move cut short) is finished.
    ``FileNotFoundError`` when ``name`` is gone; another ``OSError`` when the move
    fails otherwise, the file left where it is. Where hard links are refused
    (:data:`NO_LINKS`), a ``rename()`` onto a free name (see the module's docstring)."""
    try:
        os.link(name, target, src_dir_fd=folder, dst_dir_fd=to_folder, follow_symlinks=False)
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in NO_LINKS:
            raise
        if _renamed_onto_free_name(folder, name, to_folder, target):
            return True
    else:
        return _old_name_removed(folder, name)
    if not same_file(folder, name, to_folder, target):
        return False
    return _old_name_removed(folder, name)


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


def _old_name_removed(folder: int, name: str) -> bool:
    """Finish a move whose new name holds the file: remove the old name (a ``rename()``
    between two names of one file would change nothing). True: the move is done."""
    with contextlib.suppress(FileNotFoundError):  # another reader moved it meanwhile
        os.unlink(name, dir_fd=folder)
    return True
