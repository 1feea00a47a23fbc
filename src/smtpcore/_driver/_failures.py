"""The reply a local failure earns: a full disk is told apart from any other fault.

One function, :func:`failure_reply`, decides it for the driver (a handler's hook
that raised while it took in a message) and for the reference server (a spool,
queue or Maildir write that failed): both answer alike.
"""

from __future__ import annotations

import errno
from typing import Final

from smtpcore.smtp import Reply

__all__ = ["INSUFFICIENT_STORAGE", "LOCAL_ERROR", "STORAGE_FULL", "failure_reply"]

LOCAL_ERROR: Final = Reply(451, "Local error in processing", "4.3.0")
"""RFC 5321 §4.2.2 451; RFC 3463 X.3.0, "other or undefined mail system status"."""

INSUFFICIENT_STORAGE: Final = Reply(452, "Insufficient system storage", "4.3.1")
"""RFC 5321 §4.2.2 452 and RFC 1870 §6.1; RFC 3463 X.3.1, "mail system full".
Temporary: the client keeps the message and tries again later."""

STORAGE_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""What a write says when there is no room: the filesystem is full, the owner's quota
is spent, or the file is over the size the process may write (``ulimit -f``)."""


def failure_reply(exc: BaseException) -> Reply:
    """``452 4.3.1`` for a write that found no room (:data:`STORAGE_FULL`), else
    ``451 4.3.0``. Both are temporary: nothing was accepted, and the client's
    retry duplicates nothing (RFC 5321 §6.1)."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_FULL:
        return INSUFFICIENT_STORAGE
    return LOCAL_ERROR
