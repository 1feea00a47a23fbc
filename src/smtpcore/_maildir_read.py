"""Reading a Maildir message file: opened safely, and never more of it than may be read.

A user who can write into his Maildir can put a symbolic link, a FIFO or a growing
(or sparse) file where a message was listed: a message file is opened without
following a link or blocking, and read a chunk at a time within a bound.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from typing import Final

__all__ = ["READ_SIZE", "_TooLarge", "_chunks", "_open_message", "_read_chunks"]

READ_SIZE: Final = 131072
"""See :data:`smtpcore.maildrop.READ_SIZE`."""


def _open_message(folder: int, name: str) -> tuple[int, int]:
    """The descriptor of the message file ``name`` in the folder open as ``folder``, and
    its size, if it is a regular file; ``FileNotFoundError`` otherwise. A symbolic link
    is not followed (a user who can write into a Maildir would read any file the server
    can), and the file is opened without blocking, so that a FIFO put in a message's
    place after the listing cannot stall the server.

    A descriptor rather than a file object: making one costs three more system calls
    (``fstat``, an ``ioctl`` asking whether it is a terminal, ``lseek``), and a
    buffered read one more at the end, which returns nothing."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symbolic link
            raise FileNotFoundError(errno.ENOENT, "not a message file", name) from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a message file", name)
        os.set_blocking(fd, True)
        return fd, status.st_size
    except BaseException:
        os.close(fd)
        raise


class _TooLarge(OSError):
    """A message file holds more than may be read of it (see :func:`_chunks`)."""

    def __init__(self, size: int, most: int) -> None:
        super().__init__(errno.EFBIG, f"{size} octets or more, over the {most} to be read")
        self.size = size
        self.most = most


def _chunks(fd: int, size: int, most: int) -> Iterator[bytes]:
    """The content of the open message file ``fd``, whose size ``fstat`` gave as
    ``size``, in chunks of :data:`READ_SIZE`; :class:`_TooLarge`, before the chunk
    that would pass them, rather than more than ``most`` octets.

    The bound holds for the reading, not only for ``size``: a Maildir file is never
    changed once it is in ``new`` or ``cur``, but one its owner keeps growing (or
    makes sparse, terabytes in a moment) would otherwise hold the reader as long as
    he likes. A read of a regular file is short at its end: once ``size`` is read,
    that spares the read that returns nothing."""
    if size > most:
        raise _TooLarge(size, most)
    done = 0
    while chunk := os.read(fd, READ_SIZE):
        done += len(chunk)
        if done > most:
            raise _TooLarge(done, most)
        yield chunk
        if done >= size and len(chunk) < READ_SIZE:
            break


def _read_chunks(folder: int, name: str, most: int) -> Iterator[bytes]:
    """The content of the message file ``name`` in ``folder`` (see
    :func:`_open_message`), at most ``most`` octets of it (see :func:`_chunks`)."""
    fd, size = _open_message(folder, name)
    try:
        yield from _chunks(fd, size, most)
    finally:
        os.close(fd)
