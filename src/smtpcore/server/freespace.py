"""Room for a message, asked of the data directory's filesystem at MAIL.

A server that lacks the room to keep a message in stable storage may refuse it at
MAIL with ``452`` (RFC 1870 §6.1), before the client sends it, rather than read it
whole and then fail. As Postfix does with ``queue_minfree``, MAIL is refused when
the free space is under a floor (``--min-free-space``). It is refused too when the
free space is under twice the size the client declares (RFC 1870 §3): the message
lies whole in its spool file while its first Maildir copy is written, so a message
for one local mailbox needs its size twice over at its peak. (Postfix asks 1.5
times, for its queue file alone.) Each further local mailbox needs its size once
more, which MAIL cannot know; a copy that finds the disk full is answered ``452``
after the content, and nothing of the message is kept. A MAIL without SIZE is held
to the floor alone.

``os.statvfs`` is called on the event loop: on a local filesystem it reads counters
the kernel keeps in memory and does no disk I/O, and a thread's hand-off would cost
more than the call. (A data directory on a hung network filesystem blocks every
write the server makes anyway.) When there is neither a floor nor a declared size
it is not called at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from smtpcore.server.log import logger

__all__ = ["COPIES_AT_PEAK", "FreeSpace", "fits", "free_octets", "room_needed"]

COPIES_AT_PEAK: Final = 2
"""How many times over a message lies on the disk while it is taken in for one local
mailbox: its spool file and its Maildir copy."""


def free_octets(path: Path) -> int:
    """Octets an unprivileged writer may still use on the filesystem holding ``path``
    (``f_bavail``: the blocks kept for root are not ours to count on)."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def room_needed(floor: int, declared: int | None) -> int:
    """Free octets MAIL asks for a message of the ``declared`` size (None: not
    declared): the floor, and the spool file and one Maildir copy of the message."""
    if declared is None:
        return floor
    return max(floor, COPIES_AT_PEAK * declared)


def fits(free: int, floor: int, declared: int | None) -> bool:
    """Whether ``free`` octets take a message of the ``declared`` size (None: not
    declared) and leave the ``floor`` (see :func:`room_needed`)."""
    return free >= room_needed(floor, declared)


class FreeSpace:
    """The data directory's room, asked at each MAIL, and what the operator is told.

    A ``statvfs`` that fails (``EACCES``, a filesystem that does not support it)
    refuses no mail: the check is a courtesy to the client, and the writes still find
    a full disk. The failure is logged once, and again only after the call has worked
    in between. Free space under the floor refuses every MAIL, so the operator hears
    of it: a warning when the floor starts refusing, once for the whole spell, and a
    line at INFO when there is room again.
    """

    def __init__(self) -> None:
        self._failing = False
        self._under_floor = False

    def allows(self, path: Path, floor: int, declared: int | None) -> bool:
        """Whether the filesystem of ``path`` has room for a message of ``declared``
        octets, leaving ``floor`` free (see :func:`fits`), as it says now."""
        if room_needed(floor, declared) == 0:
            return True  # nothing to ask the filesystem
        try:
            free = free_octets(path)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                logger.warning("cannot read the free space of %s (%s); not checked", path, exc)
            return True
        self._failing = False
        self._note_floor(path, free, floor)
        return fits(free, floor, declared)

    def _note_floor(self, path: Path, free: int, floor: int) -> None:
        """Log where a spell under the floor starts and ends; a declared size too big
        for the disk is the one message's refusal, not a spell."""
        under = free < floor
        if under and not self._under_floor:
            logger.warning(
                "%s has %d octets free, under --min-free-space %d: MAIL gets 452 4.3.1",
                path,
                free,
                floor,
            )
        elif self._under_floor and not under:
            logger.info("%s has %d octets free again: MAIL is taken", path, free)
        self._under_floor = under
