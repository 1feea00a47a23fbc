"""The reply a local failure earns: a write that found no room is told apart from any
other fault, and a full disk from a message too big for the system.

One function, :func:`failure_reply`, decides it for the driver (any handler hook that
raised where the client is owed a reply) and for the reference server (a spool, queue
or Maildir write that failed): both answer alike, from one table, :data:`BY_ERRNO`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from typing import Final

from smtpcore._driver._own_timeouts import DeadlinePassed
from smtpcore.smtp import Reply

__all__ = [
    "BY_ERRNO",
    "INSUFFICIENT_STORAGE",
    "LOCAL_ERROR",
    "TOO_BIG_FOR_SYSTEM",
    "failure_reply",
    "fault_text",
    "no_room",
]

LOCAL_ERROR: Final = Reply(451, "Local error in processing", "4.3.0")
"""RFC 5321 §4.2.2 451; RFC 3463 X.3.0, "other or undefined mail system status"."""

INSUFFICIENT_STORAGE: Final = Reply(452, "Insufficient system storage", "4.3.1")
"""RFC 5321 §4.2.2 452 and RFC 1870 §6.1; RFC 3463 X.3.1, "mail system full".
Temporary: the client keeps the message and tries again later, when there is room."""

TOO_BIG_FOR_SYSTEM: Final = Reply(552, "Message too big for system", "5.3.4")
"""RFC 5321 §4.5.3.1.10 and RFC 1870 §6.1 552; RFC 3463 X.3.4, "message too big for
system". Permanent: a file size limit is the same limit at every retry (Postfix's
cleanup answers ``EFBIG`` so)."""

BY_ERRNO: Final[Mapping[int, Reply]] = {
    errno.ENOSPC: INSUFFICIENT_STORAGE,  # the filesystem is full
    errno.EDQUOT: INSUFFICIENT_STORAGE,  # the owner's quota is spent
    errno.EFBIG: TOO_BIG_FOR_SYSTEM,  # over the largest file: ulimit -f, the filesystem's
}
"""What a write's ``errno`` earns when it says the message found no room; any other
error is :data:`LOCAL_ERROR`. Full space frees up (452); a file size limit does not,
and blaming storage for it would have the client retry the message for days."""


_MOST_IN_A_GROUP: Final = 1000
"""Exceptions at most looked at in a hook's exception group: one bigger is a fault."""


def failure_reply(exc: BaseException) -> Reply:
    """The reply a local failure ``exc`` earns: an ``OSError`` whose ``errno`` is in
    :data:`BY_ERRNO` its entry, and so an exception group whose failures all earn that
    one (:func:`_no_room`); anything else ``451 4.3.0``. Nothing was accepted
    either way, so the client's retry duplicates nothing (RFC 5321 §6.1)."""
    found = _no_room(exc)
    return LOCAL_ERROR if found is None else found[0]


def fault_text(exc: BaseException) -> str:
    """A fault in a few words, for the ``reject:`` line logged before its traceback:
    an ``OSError``'s ``Operation not permitted``, else the exception's class (a passed
    deadline's ``TimeoutError``, as the operator knows it)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, DeadlinePassed):
        return "TimeoutError"
    return type(exc).__name__


def no_room(exc: BaseException) -> str | None:
    """Why a write found no room, when ``exc`` is a failure :data:`BY_ERRNO` names
    (``No space left on device``), alone or as every failure of an exception group:
    the expected state of a full disk, answered and logged as a refusal, in one line
    with no traceback. None for any other failure, a fault whose traceback the log
    keeps."""
    found = _no_room(exc)
    return None if found is None else found[1]


def _no_room(exc: BaseException) -> tuple[Reply, str] | None:
    """The reply and the reason of a write that found no room, when ``exc`` is one, or
    an exception group (PEP 654: what a hook's task group or nursery raises) whose
    every failure is one that earns the same reply: a hook whose parallel writes found
    the disk full and the quota spent (``ENOSPC``, ``EDQUOT``: both ``452 4.3.1``)
    failed for that reason alone, and the first failure's reason is logged. None for
    anything else: a group with any other failure in it, or failures that earn
    different replies (``ENOSPC`` and ``EFBIG``: temporary and permanent)."""
    leaves = _leaves(exc)
    first = _earns(leaves[0]) if leaves else None
    if first is None:
        return None
    for leaf in leaves[1:]:
        found = _earns(leaf)
        if found is None or found[0] != first[0]:
            return None
    return first


def _earns(failure: BaseException) -> tuple[Reply, str] | None:
    """The reply ``failure`` earns by itself when it is a write that found no room
    (:data:`BY_ERRNO`), and its reason; None when it is any other failure."""
    if not isinstance(failure, OSError) or failure.errno is None:
        return None
    reply = BY_ERRNO.get(failure.errno)
    if reply is None:
        return None
    return reply, failure.strerror or os.strerror(failure.errno)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The failures at the ends of ``exc``'s exception groups, however nested (``exc``
    itself when it is none); none at all past :data:`_MOST_IN_A_GROUP` exceptions.
    A group is known by PEP 654's ``exceptions`` tuple, which Python 3.10's
    ``exceptiongroup`` backport (trio's there) has too."""
    leaves: list[BaseException] = []
    pending = [exc]
    for _ in range(_MOST_IN_A_GROUP):
        if not pending:
            break
        current = pending.pop()
        grouped = getattr(current, "exceptions", None)
        if isinstance(grouped, tuple) and grouped:
            pending.extend(reversed(grouped))
        else:
            leaves.append(current)
    return [] if pending else leaves
