"""Which errors mean that the disk refused a write: an expected state of a server's
disk (full, over quota, a file size limit, read-only, no permission), told to the
operator in one line and waited out, never a bug's traceback repeated each round."""

from __future__ import annotations

import errno
from typing import Final

__all__ = ["DISK_REFUSALS", "is_disk_refusal"]

DISK_REFUSALS: Final = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES}
)
"""``ENOSPC`` (a full disk), ``EDQUOT`` (a quota), ``EFBIG`` (a file size limit,
``RLIMIT_FSIZE``), ``EROFS`` (a read-only file system), ``EACCES`` (a directory the
server may not write)."""


def is_disk_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk refusing a write (:data:`DISK_REFUSALS`)."""
    return isinstance(exc, OSError) and exc.errno in DISK_REFUSALS
