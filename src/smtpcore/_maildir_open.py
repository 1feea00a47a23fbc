"""How a POP3 :class:`~smtpcore.maildrop.Maildir` opens its folders and lock file.

A user who can write into his Maildir can put a symbolic link, a FIFO or a
hard link where ``cur``, ``new`` or the lock file should be: a server that
followed it would list, read, remove or rename its own files, or create or lock
one elsewhere. So the Maildir's own directory (named by the operator, and
followed), ``cur``, ``new`` and the lock file (never followed) are each opened
once, as the maildrop is locked, and every message file is then named
relative to its folder's descriptor (``openat``, ``renameat``...): no path is
checked and then used. This module holds that mechanism, one descriptor per
folder; :mod:`smtpcore._maildir_folders` holds them for the session, and the
maildrop's listing, content and UPDATE work through them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from smtpcore._maildir_faults import refused
from smtpcore._maildrop_errors import MaildropError, MaildropInUse

_LOCK_NAME: Final = "smtpcore-pop3.lock"
_FOLDERS: Final = ("cur", "new")
"""The folders a listing reads, ``cur`` first (see ``_Listing._sized`` in
:mod:`smtpcore._maildir_listing`)."""
_MADE: Final = ("tmp", "new", "cur")
"""The folders :meth:`~smtpcore.maildrop.Maildir.lock` makes when asked to create the Maildir."""
_ROOT: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
"""Opens the Maildir's own directory, following a link: it is named in the operator's
directory, out of its user's reach (``root/alice -> /srv/real/alice``)."""
_FOLDER: Final = os.O_RDONLY | os.O_DIRECTORY
"""Opens ``cur`` or ``new`` (with ``O_NOFOLLOW``, see :func:`_open_real`)."""
_LOCK_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK
"""Opens the lock file (with ``O_NOFOLLOW``), without blocking on a FIFO put there."""
_NOT_REAL: Final = frozenset({errno.ENOTDIR, errno.ELOOP, errno.EISDIR, errno.ENXIO})
"""What opening with ``O_NOFOLLOW`` gives where a name is not what it should be: a
symbolic link (``ELOOP``, or ``ENOTDIR`` with ``O_DIRECTORY``), a file where a folder
should be (``ENOTDIR``), a directory (``EISDIR``, with ``O_CREAT``) or a socket
(``ENXIO``) where the lock file should be."""
_NOT_REAL_WHY: Final = "a symbolic link or another file, not followed"
_LINKED_WHY: Final = "a file with content (the lock file is always empty), not used as the lock"


@dataclass(slots=True, eq=False)
class _Opened:
    """The descriptors a :class:`Maildir` works through: its own directory, ``cur`` and
    ``new`` (a folder missing when opened is left out: it holds no message), and the
    lock file once locked.

    Each is opened once, and every file of the maildrop is then named relative to its
    folder's descriptor (``openat``, ``fstatat``, ``unlinkat``, ``renameat``), so that
    no path is checked and then used. ``cur``, ``new`` and the lock file are opened
    without following a symbolic link (:func:`_open_real`): a link put in their place,
    before the login or during the session, is never followed, for whoever can write
    into a Maildir could otherwise have the server list, read, remove or rename its
    own files. The Maildir's own directory is opened following links: it is named in
    the operator's directory, where its user cannot write, and a link there (to a
    Maildir elsewhere) is the operator's.

    ``root`` is -1 for a Maildir that does not exist (``_HoldsFolders._directories`` in
    :mod:`smtpcore._maildir_folders`).
    """

    root: int
    folders: dict[str, int]
    lock: int | None = None

    def close(self) -> None:
        """Close them all (closing the lock file's descriptor releases the flock)."""
        held = [self.root, *self.folders.values(), self.lock]
        self.root, self.folders, self.lock = -1, {}, None
        for fd in held:
            if fd is not None and fd >= 0:
                os.close(fd)

    def __del__(self) -> None:
        """A maildrop dropped without :meth:`Maildir.close` still gives them back."""
        self.close()


class _NotReal(OSError):
    """A symbolic link, or a file of another kind, where a folder or the lock file of a
    Maildir should be, or a lock file with content (a hard link to some other file):
    refused, never followed."""


class _NotLocked(OSError):
    """``flock`` refused the lock file for a cause other than another session's lock
    (``ENOLCK``, say): the maildrop opened, and cannot be locked."""


def _open_real(name: str, flags: int, *, root: int) -> int:
    """``name`` in the directory open as ``root``, opened with ``flags`` without following
    a symbolic link (``O_NOFOLLOW``); :class:`_NotReal` for a link, or for a file the
    flags refuse (see :data:`_NOT_REAL`)."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=root)
    except OSError as exc:
        if exc.errno in _NOT_REAL:
            raise _NotReal(exc.errno, _NOT_REAL_WHY, name) from exc
        raise


def _open_maildir(path: Path, *, create: bool) -> _Opened:
    """The Maildir ``path`` and its folders opened (see :class:`_Opened`), made first
    where missing if ``create``; an ``OSError`` naming what could not be opened, a
    :class:`_NotReal` for a link or a file where a folder should be."""
    if create:
        with contextlib.suppress(FileExistsError):  # a file there is refused below
            path.mkdir(mode=0o700, parents=True)
    opened = _Opened(os.open(path, _ROOT), {})
    try:
        for name in _MADE if create else ():
            with contextlib.suppress(FileExistsError):  # a link there is refused below
                os.mkdir(name, 0o700, dir_fd=opened.root)
        for name in _FOLDERS:
            with contextlib.suppress(FileNotFoundError):
                opened.folders[name] = _open_real(name, _FOLDER, root=opened.root)
    except BaseException:
        opened.close()
        raise
    return opened


def make_lock_file(maildir: Path) -> None:
    """Make the maildrop's lock file where it is missing, as whoever makes the Maildir
    makes its folders (a server at start, at each delivery): a login made it only when
    it came, and on a disk with no free inode the user could never log in, to delete
    mail and free space. Only ever made, never opened for writing, nor through a link:
    what is there already, whatever it is, is left for the login to take or refuse (and
    log), as is a disk that cannot make it now."""
    flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    with contextlib.suppress(OSError):
        os.close(os.open(maildir / _LOCK_NAME, flags, 0o600))


def _cannot_open(path: Path, exc: OSError) -> MaildropError:
    """The error for a maildrop that could not be opened (``Cannot open the
    maildrop``) or locked (``Cannot lock the maildrop``) for ``exc``, logged naming the
    path (see :func:`~smtpcore._maildir_faults.refused`): a link or another file where
    a folder or the lock file should be is ``SYS/PERM``, as is a cause no retry cures;
    RFC 3206 §4 has ``SYS/TEMP`` for a problem that is likely to be gone if the client
    tries again later."""
    where = path / exc.filename if isinstance(exc.filename, str) else path
    permanent = True if isinstance(exc, _NotReal) else None
    doing = "lock the maildrop" if isinstance(exc, _NotLocked) else "open the maildrop"
    return refused(where, exc, doing, permanent=permanent)


def _take_lock(root: int) -> int:
    """The maildrop's lock file in the directory open as ``root``, opened (made if need
    be, never through a symbolic link) and locked with ``flock``, so that a second
    session, of this process or another, is refused (RFC 1939 §8); the kernel drops
    the lock if the process dies. :class:`MaildropInUse` if another session holds it,
    :class:`_NotReal` if what is there is not a regular file (a FIFO opens, and
    takes a ``flock``, as well as a file does), or holds anything: the server never
    writes its lock file, and a user who can write into the Maildir could hard-link
    there a file of the server's he can read, which the server would then open for
    writing and lock. An empty one with other names is taken: a hard-link copy of
    the mailboxes (``cp -al``) gives every lock file two, and would shut every user
    out until it was removed."""
    fd = _open_real(_LOCK_NAME, _LOCK_FLAGS, root=root)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise _NotReal(None, _NOT_REAL_WHY, _LOCK_NAME)
        if status.st_size != 0:
            raise _NotReal(None, _LINKED_WHY, _LOCK_NAME)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise MaildropInUse() from None
            raise _NotLocked(exc.errno, exc.strerror, _LOCK_NAME) from exc
    except BaseException:
        os.close(fd)
        raise
    return fd
