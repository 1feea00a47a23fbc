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

__all__ = ["COPIES_AT_PEAK", "FreeSpace", "fits", "free_octets", "room_needed", "spell_margin"]

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


def spell_margin(floor: int, largest_message: int) -> int:
    """Free octets over the floor that end a spell under it: a tenth of the floor, or
    one message of the largest size taken, whichever is more. Each message a busy
    server takes in or delivers moves the free space by up to its size, so a margin
    of one such message keeps a disk that hovers at the floor one spell, logged
    once, rather than a warning and an all-clear with each message."""
    return max(floor // 10, largest_message)


class FreeSpace:
    """The room on the filesystem of ``path``, asked at each MAIL, that keeps ``floor``
    octets free; ``largest_message`` is the largest size taken (0: no limit).

    A ``statvfs`` that fails (``EACCES``, a filesystem that does not support it)
    refuses no mail: the check is a courtesy to the client, and the writes still find
    a full disk. The failure is logged once, and again only after the call has worked
    in between. Free space under the floor refuses every MAIL, so the operator hears
    of it: a warning when the floor starts refusing, and a line at INFO when the spell
    is over. It is over only once the free space is back over the floor by
    :func:`spell_margin`: MAIL is taken again as soon as the floor is free, but a disk
    that hovers at the floor is one spell, told once.
    """

    def __init__(self, path: Path, floor: int, largest_message: int = 0) -> None:
        self.path = path
        self.floor = floor
        self.spell_ends_at = floor + spell_margin(floor, largest_message)
        """Free octets at or over which a spell under the floor is over."""
        self._failing = False
        self._in_spell = False

    def allows(self, declared: int | None) -> bool:
        """Whether the filesystem has room for a message of the ``declared`` size
        (None: not declared), leaving the floor free (see :func:`fits`), as it says
        now."""
        if room_needed(self.floor, declared) == 0:
            return True  # nothing to ask the filesystem
        try:
            free = free_octets(self.path)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                logger.warning(
                    "cannot read the free space of %s (%s); not checked", self.path, exc
                )
            return True
        self._failing = False
        self._note_spell(free)
        return fits(free, self.floor, declared)

    def _note_spell(self, free: int) -> None:
        """Log where a spell under the floor starts and ends (see :func:`spell_margin`);
        a declared size too big for the disk is the one message's refusal, not a spell."""
        if free < self.floor and not self._in_spell:
            self._in_spell = True
            logger.warning(
                "%s has %d octets free, under --min-free-space %d: MAIL gets 452 4.3.1",
                self.path,
                free,
                self.floor,
            )
        elif self._in_spell and free >= self.spell_ends_at:
            self._in_spell = False
            logger.info(
                "%s has %d octets free again, over --min-free-space %d by %d",
                self.path,
                free,
                self.floor,
                free - self.floor,
            )
