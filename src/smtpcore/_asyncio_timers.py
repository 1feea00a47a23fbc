"""One loop timer for the deadlines of many connections on an asyncio event loop.

A server's session waits for its client under a deadline of minutes, and nearly
every such deadline is moved on (the client spoke) or dropped (the client left)
long before it ends. A loop ``TimerHandle`` per connection costs half a dozen
Python calls to make and cancel, and about 240 bytes while it waits (the
handle, its bound callback, a copy of the context). :class:`Timers` keeps
every connection's next due time in one heap behind one loop timer: a
connection's timer is a heap entry, pushed and popped in C.

A connection's timer (its clock, ``smtpcore._asyncio_clock``) moves lazily,
as before: moving its due time later touches nothing here; when its entry
comes due, the timers ask it what to do (:meth:`Due.ring`), and it either
goes off or asks to be queued again for its new time.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from smtpcore._driver._timeouts import Pump

__all__ = ["Cancellable", "Due", "Timers"]

logger = logging.getLogger("smtpcore.server")

_CLEAN_AFTER: Final = 64
"""Entries of dropped timers the heap may hold before it is rebuilt without them
(and then only while they are at least half of it)."""


class Due(Protocol):
    """What :class:`Timers` keeps a due time for.

    Timers queued for the very same time are told apart by their entries'
    order (see :meth:`Timers.add`), and, where two entries have the same order
    too, by comparing the timers themselves: a timer that may be queued for a
    time others were, not right after them, defines ``__lt__`` (any fixed
    order will do).
    """

    queued: float | None
    """The due time of this timer's live entry in the heap (set by :class:`Timers`);
    None when it has none."""

    def ring(self, now: float) -> None:
        """The entry's due time came (``now``, by :attr:`Timers.now`)."""


class Cancellable(Protocol):
    """The one scheduled call of :class:`Timers`: an ``asyncio.TimerHandle``, or
    another that can be called off as one is."""

    def cancel(self) -> None: ...


class Timers:
    """Due times of many timers on one event loop, behind one loop timer.

    A timer is queued with :meth:`add`, which records the entry's time in the
    timer's ``queued``; an entry whose time is no longer its timer's
    ``queued`` (a later :meth:`add` for an earlier time, or :meth:`drop`)
    is stale and skipped when it comes up. Stale entries are swept out once
    they are half the heap, so the heap stays within twice the live timers.
    """

    __slots__ = (
        "_handle",
        "_handle_when",
        "_heap",
        "_last_when",
        "_stale",
        "_ties",
        "last_tick",
        "loop",
        "now",
        "pump",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now: Callable[[], float] = (
            time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        )
        """The loop's clock (``time.monotonic`` itself where the loop's ``time()``
        is asyncio's own, which returns it: one Python call less each time)."""
        self._heap: list[tuple[float, int, Due]] = []
        self._last_when: float | None = None
        self._ties = 0
        """Entries queued for ``_last_when`` one after the other before the last one."""
        self._stale = 0
        self._handle: Cancellable | None = None
        self._handle_when = 0.0
        self.last_tick = 0.0
        """The last due time a timer rounded to a tick of its own accord (see
        ``AsyncioClock.arm``), for the next one rounded to the same tick to share."""
        self.pump: Pump | None = None
        """Where a server keeps the pump its sessions' clocks lend their handlers'
        hooks (``RawSocketTransport.start_within``); None while it is lent, and where
        nothing put one (a hook then starts without)."""

    def add(self, timer: Due, when: float) -> None:
        """Queue ``timer`` for ``when`` (in :attr:`now`'s time); an entry it had
        already goes stale."""
        if timer.queued is not None:
            self._stale += 1
        timer.queued = when
        # The entry's order among those for the same time queued one after the other
        # (sessions armed within one tick, say): a count that starts again at each new
        # time, so a small int the interpreter keeps cached, where a count of every
        # entry would be an int of 32 bytes an entry.
        if when == self._last_when:
            self._ties += 1
        else:
            self._last_when = when
            self._ties = 0
        heapq.heappush(self._heap, (when, self._ties, timer))
        if self._handle is None or when < self._handle_when:
            self._schedule(when)

    def drop(self, timer: Due) -> None:
        """Forget ``timer``'s entry (its connection is gone)."""
        if timer.queued is None:
            return
        timer.queued = None
        self._stale += 1
        heap = self._heap
        if self._stale > _CLEAN_AFTER and 2 * self._stale > len(heap):
            heap[:] = [entry for entry in heap if entry[2].queued == entry[0]]
            heapq.heapify(heap)
            self._stale = 0

    def _schedule(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self.loop.call_at(when, self._ring)
        self._handle_when = when

    def close(self) -> None:
        """Call the loop timer off: whoever queued timers here is gone (a client's
        connection, or a server once no session is left)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _ring(self) -> None:
        self._handle = None
        heap = self._heap
        now = self.now()
        while heap and heap[0][0] <= now:
            when, _, timer = heapq.heappop(heap)
            if timer.queued != when:
                self._stale = max(0, self._stale - 1)
                continue
            timer.queued = None
            try:
                timer.ring(now)
            except Exception:  # one timer's failure must not stop the others
                logger.exception("a connection's timer failed")
        if heap:  # a timer queued again above may have scheduled a later time
            head = heap[0][0]
            if self._handle is None or head < self._handle_when:
                self._schedule(head)
