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
  ``ENOTSUP``, ``ENOSYS``), or a link the kernel refuses (``protected_hardlinks`` on a
  file of another uid the server cannot write), leaves the message where it is: still
  delivered and listed under its unique-id, only its flags and folder unchanged. No
  fallback to ``rename()``: checking that the name is free and then renaming is racy,
  and would replace a file made in between; Python has no ``RENAME_NOREPLACE``.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["inode", "move_unless_taken", "same_file"]


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
    ``FileNotFoundError`` when ``name`` is gone; another ``OSError`` when the link
    fails otherwise (see the module's docstring), the file left where it is."""
    try:
        os.link(name, target, src_dir_fd=folder, dst_dir_fd=to_folder, follow_symlinks=False)
    except FileExistsError:
        if not same_file(folder, name, to_folder, target):
            return False
    with contextlib.suppress(FileNotFoundError):  # another reader moved it meanwhile
        os.unlink(name, dir_fd=folder)
    return True
