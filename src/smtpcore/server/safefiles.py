"""The server's own files opened so that nothing planted in its directories is followed.

Whoever may write in the data directory could put there, in place of a queue file, the
lock or a directory, a symbolic link to a file of the server's user (which a truncate,
a write or an unlink would then reach through it) or a FIFO (whose read blocks for
ever). Postfix opens its queue files with ``safe_open`` for this reason, and ``postfix
check`` refuses queue directories others may write. So every queue file and the lock
are opened here: never through a link, never blocking, and only as a regular file; a
directory the server works in must be a real one; and :func:`check_private_directories`
refuses, at start, a data, queue or mailbox directory that others may write.
"""

from __future__ import annotations

import errno
import os
import pwd
import shlex
import stat
from pathlib import Path
from typing import Final

from smtpcore.server.config import ConfigError

__all__ = [
    "NotRegularFile",
    "check_private_directories",
    "create_empty",
    "create_new",
    "is_visible",
    "open_regular",
    "owner_name",
    "read_regular_bytes",
    "replace_synced",
    "require_real_directory",
    "write_synced",
]

_SAFE: Final = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""Added to every open: a link is refused, a FIFO opens at once (to be refused)."""


class NotRegularFile(ValueError):
    """A name that should hold one of our files holds a link, a FIFO, a directory or a
    device: a damaged file, never followed or read (a ``ValueError``, as the other
    damage a queue file can have is). Its text names the path; :attr:`reason` says
    what is wrong without it, as an ``OSError``'s ``strerror`` does, for a text that
    may reach a sender."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[NotRegularFile], tuple[Path, str]]:
        # ``args`` holds the one text ValueError was given: copy and pickle rebuild
        # the exception from what ``__init__`` takes instead.
        return type(self), (self.path, self.reason)


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor for the regular file ``path`` opened with ``flags``;
    :class:`NotRegularFile` for a symbolic link (not followed) or anything but a
    regular file. The descriptor is non-blocking, which a regular file ignores."""
    try:
        fd = os.open(path, flags | _SAFE, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            raise NotRegularFile(path, "a symbolic link, not followed") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(path, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_bytes(path: Path) -> bytes:
    """What the regular file ``path`` holds (see :func:`open_regular`)."""
    with os.fdopen(open_regular(path), "rb") as file:
        return file.read()


def create_new(path: Path, mode: int = 0o600) -> int:
    """A descriptor, for writing, on a file made now at ``path``: ``FileExistsError``
    when anything is there already, a link included (``O_EXCL`` follows none)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _SAFE, mode)


def create_empty(path: Path) -> None:
    """Make an empty file at ``path`` (:func:`create_new`), not synced: it holds no
    data to sync, and its name is made durable by syncing its directory, which the
    caller does once for all the files it made there."""
    os.close(create_new(path))


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it; on failure (a full disk) no part of the
    file is left behind to hold space. ``path`` is a new file: whatever is there already,
    a link planted to another file included, is a ``FileExistsError``, never written."""
    fd = create_new(path)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def replace_synced(path: Path, tmp: Path, data: bytes) -> None:
    """Put ``data`` in place of ``path``, whole or not at all: written to the new file
    ``tmp`` and synced (:func:`write_synced`), then renamed over ``path`` (a link there
    is replaced, never followed). On any failure, the rename's too (a directory that
    refuses it: ``EACCES``, ``EROFS``, ``ENOSPC``), ``tmp`` is removed: a writer that
    retries each round must not leave a synced copy behind each time. The caller syncs
    ``path``'s directory, once for what it changed there."""
    write_synced(tmp, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_visible(name: str) -> bool:
    """Whether a name in a queue directory is one to read: dot-names are skipped, as
    Maildir readers skip them (editors' and other tools' files, our own temporaries)."""
    return not name.startswith(".")


def require_real_directory(path: Path) -> None:
    """``NotADirectoryError`` naming ``path`` unless it is a directory itself, not a link
    to one: files would be created, renamed and removed wherever such a link points."""
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise NotADirectoryError(
            errno.ENOTDIR, "not a directory (a symbolic link or another file)", str(path)
        )


def owner_name(uid: int) -> str:
    """``name (uid N)``, or ``uid N`` for a uid with no name."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


_NAMED_AT_MOST: Final = 4
"""Shared directories :func:`check_private_directories` names; past that it counts the
others, and gives one command for all: a line per thousand mailboxes is no line."""


def check_private_directories(*paths: Path) -> None:
    """:class:`ConfigError` naming every one of ``paths`` that group or others may
    write, when any may: such a user could plant a link there for this process to
    follow, or a file it would take for its own. All are named at once, with the one
    ``chmod`` that fixes them: an upgrade from a version that made them under a umask of
    002 must not stop a start once per directory. A path not there yet is skipped (it
    is made private). The owner is not checked: root serving a directory a service
    user, or a container's host user, owns is no danger, and links are refused by how
    the files are opened."""
    shared = [(path, mode) for path in paths if (mode := _shared_mode(path)) is not None]
    if not shared:
        return
    named = [f"{path} (mode {mode:04o})" for path, mode in shared[:_NAMED_AT_MOST]]
    directories = [path for path, _ in shared]
    if len(shared) > _NAMED_AT_MOST:
        top = Path(os.path.commonpath(directories))
        named.append(f"{len(shared) - _NAMED_AT_MOST} more directories in {top}")
        command = f"find {shlex.quote(str(top))} -type d -perm /022 -exec chmod go-w {{}} +"
    else:
        command = "chmod go-w " + " ".join(shlex.quote(str(path)) for path in directories)
    raise ConfigError(
        f"--data-dir: {_listed(named)} may be written by other users, who could plant "
        f"links there: {command}"
    )


def _listed(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, (", ".join(items[:-1]), items[-1])))


def _shared_mode(path: Path) -> int | None:
    """``path``'s permission bits when its group or others may write it, else None (a
    missing path included)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    return stat.S_IMODE(mode) if mode & (stat.S_IWGRP | stat.S_IWOTH) else None
