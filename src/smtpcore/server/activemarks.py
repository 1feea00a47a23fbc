"""Which messages are in delivery right now, for ``queue list`` in another process (the
``*`` after the id, as Postfix's ``mailq`` marks its active queue).

The running server keeps one small file per message that has a relay session open or
a local copy being written: ``queue/active/ID``, holding the server's process id. It
is made when the message's first such delivery begins and removed when its last one
ends, so there are never more files than deliveries under way (``active_limit`` at
most), and those whose removal the disk refused (tried again at each later sync). The
event loop only says what it wants (:meth:`DeliveryMarks.begin`, :meth:`~DeliveryMarks.end`);
the disk is made to say so by :meth:`~DeliveryMarks.sync`, which the delivery worker
runs in its share of the threads as its other disk work (a local copy's own thread
call, or one of its own), never in the event loop. A mark is only ever a hint: a
failed write is dropped, and a delivery is never held for one.

A mark cannot lie for ever after a crash: the reader believes only marks holding the
process id of the server that holds the data directory's lock now (a server that died
let go of the lock, so its marks name nobody), and a server clears every mark when it
starts, before it delivers anything.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from smtpcore.server.queue import is_queue_id
from smtpcore.server.safefiles import create_new, open_regular, require_real_directory

__all__ = ["ACTIVE_DIR", "DeliveryMarks", "read_active"]

ACTIVE_DIR: Final = "active"
"""The marks' directory, under the queue's."""

_MARK_SIZE: Final = 32
"""The most a mark holds that the reader reads (a process id and a newline)."""


class DeliveryMarks:
    """The marks of one server (``owner``, its process id) in ``queue_dir``.
    :meth:`begin` and :meth:`end` are called in pairs, in the event loop, for each
    session or local copy of a message; :meth:`sync`, in a thread, writes what they
    asked for, while :attr:`unsynced` says there is something to write."""

    def __init__(self, queue_dir: Path, *, owner: int | None = None) -> None:
        self.directory = queue_dir / ACTIVE_DIR
        self.owner = os.getpid() if owner is None else owner
        self._count: collections.Counter[str] = collections.Counter()
        """Per message, its deliveries under way (in the event loop only)."""
        self._guard = threading.Lock()
        self._wanted: set[str] = set()
        """The messages that should have a mark (read in the threads, under the guard)."""
        self._changed: set[str] = set()
        """The messages whose mark may differ from what is wanted (under the guard)."""
        self._on_disk: set[str] = set()
        """The marks written and not yet removed (under the guard)."""

    def clear(self) -> None:
        """Remove every mark (a server that crashed left its own): at start, in the
        caller's thread, before any delivery. The directory is made if missing."""
        self.directory.mkdir(mode=0o700, exist_ok=True)
        require_real_directory(self.directory)
        for path in self.directory.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()

    def begin(self, queue_id: str) -> None:
        """A delivery of ``queue_id`` begins: marked if it is the first (at the next
        :meth:`sync`)."""
        self._count[queue_id] += 1
        if self._count[queue_id] == 1:
            self._want(queue_id, True)

    def end(self, queue_id: str) -> None:
        """A delivery of ``queue_id`` ended: its mark goes with the last one (at the
        next :meth:`sync`)."""
        self._count[queue_id] -= 1
        if self._count[queue_id] <= 0:
            del self._count[queue_id]
            self._want(queue_id, False)

    @property
    def unsynced(self) -> bool:
        """Whether a :meth:`begin` or :meth:`end` has not reached the disk yet."""
        with self._guard:
            return bool(self._changed)

    def _want(self, queue_id: str, marked: bool) -> None:
        with self._guard:
            (self._wanted.add if marked else self._wanted.discard)(queue_id)
            self._changed.add(queue_id)

    def sync(self) -> None:
        """Make the disk say what is wanted now, in a thread: calls in any order, and
        at once, end with the last state asked for, never an older one. A mark whose
        removal the disk refused stays known as on disk, and each later sync that has
        a change to write tries again: forgotten, it said "in delivery" until the
        message's next delivery or the next start."""
        with self._guard:
            if not self._changed:
                return
            names = self._changed | (self._on_disk - self._wanted)
            self._changed = set()
            for name in names:
                self._sync_one(name)

    def _sync_one(self, queue_id: str) -> None:
        """:meth:`sync` for one message, under the guard."""
        wanted = queue_id in self._wanted
        if wanted == (queue_id in self._on_disk):
            return
        path = self.directory / queue_id
        try:
            if wanted:
                path.unlink(missing_ok=True)  # one a crash left, if any
                with os.fdopen(create_new(path), "w", encoding="ascii") as file:
                    file.write(f"{self.owner}\n")
                self._on_disk.add(queue_id)
            else:
                path.unlink(missing_ok=True)
                self._on_disk.discard(queue_id)
        except OSError:  # a hint only: a full disk must not hold a delivery
            pass  # a mark not written is left out; one not removed, tried again


def read_active(queue_dir: Path, server: int | None) -> frozenset[str]:
    """The ids the running server ``server`` (its process id, from the data
    directory's lock; None or -1: no server runs) marks as in delivery now. Marks of
    any other process are stale and read as none."""
    if server is None or server <= 0:
        return frozenset()
    return frozenset(_marked_by(queue_dir / ACTIVE_DIR, str(server)))


def _marked_by(directory: Path, owner: str) -> Iterator[str]:
    try:
        require_real_directory(directory)
        names = [entry.name for entry in os.scandir(directory)]
    except (OSError, ValueError):
        return
    for name in names:
        if not is_queue_id(name):
            continue
        try:
            fd = open_regular(directory / name)
        except (OSError, ValueError):  # gone meanwhile, or not a mark
            continue
        try:
            text = os.read(fd, _MARK_SIZE)
        except OSError:
            continue
        finally:
            os.close(fd)
        if text.decode("ascii", errors="replace").strip() == owner:
            yield name
