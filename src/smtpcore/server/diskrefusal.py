"""Which errors mean that the disk refused a write: an expected state of a server's
disk (full, over quota, a file size limit, read-only, no permission), told to the
operator in one line and waited out, never a bug's traceback repeated each round.

The errors of a write that found no room are the driver's table,
:data:`~smtpcore._driver._failures.BY_ERRNO` (what each earns as a reply), kept in
one place; a disk that refuses any write at all is added here."""

from __future__ import annotations

import errno
from typing import Final

from smtpcore._driver._failures import BY_ERRNO

__all__ = ["DISK_REFUSALS", "is_disk_refusal"]

DISK_REFUSALS: Final = frozenset(BY_ERRNO) | {errno.EROFS, errno.EACCES}
"""A write that found no room (:data:`~smtpcore._driver._failures.BY_ERRNO`:
``ENOSPC``, ``EDQUOT``, ``EFBIG``), and a disk that takes no write: ``EROFS`` (a
read-only file system), ``EACCES`` (a directory the server may not write)."""


def is_disk_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk refusing a write (:data:`DISK_REFUSALS`)."""
    return isinstance(exc, OSError) and exc.errno in DISK_REFUSALS
