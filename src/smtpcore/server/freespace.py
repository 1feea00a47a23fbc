"""Room for a message, asked of the data directory's filesystem at MAIL.

A server that lacks the room to keep a message in stable storage may refuse it at
MAIL with ``452`` (RFC 1870 §6.1), before the client sends it, rather than read it
whole and then fail. As Postfix does with ``queue_minfree``: MAIL is refused when
the free space is under a floor (``--min-free-space``), or under 1.5 times the size
the client declares (RFC 1870 §3), which leaves room for the message's Maildir copy
beside its spool file. A MAIL without SIZE is held to the floor alone.

``os.statvfs`` is called on the event loop: on a local filesystem it reads counters
the kernel keeps in memory and does no disk I/O, and a thread's hand-off would cost
more than the call. (A data directory on a hung network filesystem blocks every
write the server makes anyway.)
"""

from __future__ import annotations

import os
from pathlib import Path

from smtpcore.server.log import logger

__all__ = ["FreeSpace", "free_space", "has_room"]


def free_space(path: Path) -> int:
    """Octets an unprivileged writer may still use on the filesystem holding ``path``
    (``f_bavail``: the blocks kept for root are not ours to count on)."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def has_room(free: int, floor: int, declared: int | None) -> bool:
    """Whether ``free`` octets take a message of the ``declared`` size (None: not
    declared) and leave the ``floor``: at least the floor, and at least 1.5 times the
    declared size (Postfix's rule), in integers."""
    return free >= floor and (declared is None or 2 * free >= 3 * declared)


class FreeSpace:
    """The data directory's room, asked at each MAIL. A ``statvfs`` that fails
    (``EACCES``, a filesystem that does not support it) refuses no mail: the check
    is a courtesy to the client, and the writes still find a full disk. The
    failure is logged once, and again only after the call has worked in between."""

    def __init__(self) -> None:
        self._failing = False

    def has_room(self, path: Path, floor: int, declared: int | None) -> bool:
        """Whether the filesystem of ``path`` has room for a message of ``declared``
        octets, leaving ``floor`` free (see :func:`has_room`)."""
        try:
            free = free_space(path)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                logger.warning("cannot read the free space of %s (%s); not checked", path, exc)
            return True
        self._failing = False
        return has_room(free, floor, declared)
