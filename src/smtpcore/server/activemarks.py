"""Which messages are in delivery right now, for ``queue list`` in another process (the
``*`` after the id, as Postfix's ``mailq`` marks its active queue).

The running server keeps one small file per message that has a relay session open or
a local copy being written: ``queue/active/ID``, holding the server's process id. It
is made when the message's first such delivery begins and removed when its last one
ends, so there are never more files than deliveries under way (``active_limit`` at
most), and those whose removal the disk refused (tried again at each later sync). The
event loop only says what it wants (:meth:`DeliveryMarks.begin`, :meth:`~DeliveryMarks.end`);
the disk is made to say so by :meth:`~DeliveryMarks.sync`, which :class:`MarksWriter`
runs in the delivery worker's share of the threads as its other disk work (a local
copy's own thread call, or one of its own), never in the event loop. A mark is only ever a hint: a
failed write is dropped, and a delivery is never held for one.

A mark cannot lie for ever after a crash: the reader believes only marks holding the
process id of the server that holds the data directory's lock now (a server that died
let go of the lock, so its marks name nobody), and a server clears every mark when it
starts, before it delivers anything.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, ParamSpec, TypeVar

from smtpcore.server.queue import is_queue_id
from smtpcore.server.safefiles import create_new, open_regular, require_real_directory
from smtpcore.server.waits import ThreadShare, finish, in_one_call

__all__ = ["ACTIVE_DIR", "DeliveryMarks", "MarksWriter", "read_active"]

P = ParamSpec("P")
T = TypeVar("T")

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


class MarksWriter:
    """The deliveries' marks (``marks``; None: none kept) as the delivery worker makes
    them, written through its share of the threads (``share``) as its other disk work
    that a later round makes good: never in the event loop, and never beside the share,
    where they queued ahead of an inbound session's commit with no bound but
    ``active_limit``. A delivery that only waits (for a session token, for a slot) is
    not marked: not in delivery, as ``mailq`` counts only its active queue's."""

    def __init__(self, marks: DeliveryMarks | None, share: ThreadShare) -> None:
        self.marks = marks
        self.share = share
        self._task: asyncio.Task[None] | None = None
        """The task writing the marks' changes, while it runs (:meth:`_write`)."""

    @contextlib.contextmanager
    def session(self, queue_id: str) -> Iterator[Callable[[], None]]:
        """A session job of ``queue_id`` may run in the block: marked from the call of
        the function given (once it holds its session token) to the block's end, the
        writes made by a call of their own."""
        with self._delivery(queue_id, self._write) as begin:
            yield begin

    @contextlib.contextmanager
    def local_copy(
        self, queue_id: str, copy: Callable[P, T]
    ) -> Iterator[tuple[Callable[[], None], Callable[P, T]]]:
        """A local copy of ``queue_id`` may be written in the block: the function to call
        as it takes its slot of the share (:meth:`ThreadShare.run_announced
        <smtpcore.server.waits.ThreadShare.run_announced>`), and ``copy``, which writes
        the mark first in its own thread call, in the slot it holds, however many other
        calls wait for one. Its removal, at the block's end, has a call of its own."""
        marks = self.marks
        marked = copy if marks is None else in_one_call(copy, before=marks.sync)
        with self._delivery(queue_id, None) as begin:
            yield begin, marked

    async def finish(self, timeout: float) -> None:
        """Let the last changes (a stop's removals) be written within ``timeout``
        seconds: a hint, if the stop has time left."""
        if self._task is not None:
            await finish({self._task}, timeout)

    @contextlib.contextmanager
    def _delivery(
        self, queue_id: str, written: Callable[[], None] | None
    ) -> Iterator[Callable[[], None]]:
        """:meth:`session` and :meth:`local_copy`: ``written``, called as the delivery
        begins, has its mark written (None: its own call writes it)."""
        marks = self.marks
        begun = False

        def begin() -> None:
            nonlocal begun
            if marks is not None and not begun:
                begun = True
                marks.begin(queue_id)
                if written is not None:
                    written()

        try:
            yield begin
        finally:
            if begun and marks is not None:
                marks.end(queue_id)
                self._write()

    def _write(self) -> None:
        """Have the marks' changes written: one call at a time, by one task, which runs
        again while changes came meanwhile."""
        task = self._task
        if self.marks is None or (task is not None and not task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._sync(self.marks))

    async def _sync(self, marks: DeliveryMarks) -> None:
        while marks.unsynced:
            await self.share.run(marks.sync)


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
