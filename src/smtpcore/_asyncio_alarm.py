"""Loop timers kept by a thread, off the event loop: how a client's deadline, and a
server's sessions' watchdogs, cost nothing while the bytes come.

While any timer is scheduled on asyncio's event loop, each pass of the loop
(``BaseEventLoop._run_once``) reads the clock once more, works out how long
the selector may sleep, and hands ``epoll_wait`` a timeout the kernel arms a
timer for: about 5k instructions a pass. A client waits for each reply in a
pass of its own, under a deadline of minutes that almost never ends, so it
would pay that at every reply; a server's session waits for each read of its
client so, under its watchdog. :func:`call_at` keeps such a timer off the
loop: one daemon thread for the process sleeps until the earliest due time,
then has the loop run the callback (``loop.call_soon_threadsafe``). The loop
knows nothing of the timer until then. The thread ends when no timer is
left, and a forked child starts with none. :class:`OffLoopTimers` are
:class:`~smtpcore._asyncio_timers.Timers` whose one timer is such a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from smtpcore._asyncio_timers import Cancellable, Timers

__all__ = ["AlarmHandle", "OffLoopTimers", "call_at"]

_SWEEP_AFTER: Final = 64
"""Cancelled entries the heap may hold before it is rebuilt without them (and then
only while they are at least half of it), as ``Timers`` and asyncio's own loop do:
a process that opens and closes connections while one stays open would otherwise
keep every closed one's entry until its time, minutes on."""

_LONGEST_WAIT: Final = 86400.0
"""The longest the thread sleeps at once (a lock's wait refuses a timeout past
``threading.TIMEOUT_MAX``; a deadline may be further off)."""


class AlarmHandle:
    """A call :func:`call_at` scheduled: :meth:`cancel` as a ``TimerHandle``'s."""

    __slots__ = ("_alarm", "callback", "loop")

    def __init__(
        self, alarm: _Alarm, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]
    ) -> None:
        self._alarm = alarm
        self.loop: asyncio.AbstractEventLoop | None = loop
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        """Do not run the callback. Its entry stays in the heap, holding nothing, until
        it comes up, no live entry is left (then the thread ends), or the cancelled
        entries are swept out (see ``_SWEEP_AFTER``)."""
        alarm = self._alarm
        if alarm is not _alarm:  # made before a fork, in this child: no thread to tell
            self.loop = self.callback = None
            return
        with alarm.lock:
            if self.loop is None:
                return
            self.loop = self.callback = None
            alarm.live -= 1
            if not alarm.live:
                alarm.lock.notify()  # the thread ends now rather than at the entry's time
            else:
                alarm.cancelled += 1
                if alarm.cancelled > _SWEEP_AFTER and 2 * alarm.cancelled > len(alarm.heap):
                    alarm.sweep()


class _Alarm:
    """The process's timer thread and its heap of entries (``time.monotonic`` times)."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.heap: list[tuple[float, int, AlarmHandle]] = []
        self.order = itertools.count()
        """Tells apart entries of the same time; a handle is never compared."""
        self.live = 0
        """Entries not run nor cancelled yet."""
        self.cancelled = 0
        """Entries cancelled since the heap was last swept (some may be gone already)."""
        self.thread: threading.Thread | None = None

    def sweep(self) -> None:
        """Rebuild the heap without its cancelled entries (the lock held). The thread
        sleeps on for the same first time, or wakes early and sleeps again."""
        heap = self.heap
        heap[:] = [entry for entry in heap if entry[2].loop is not None]
        heapq.heapify(heap)
        self.cancelled = 0

    def watch(self) -> None:
        """The thread: wait for the first live entry's time, and run its call on its
        loop; end when none is left."""
        lock, heap = self.lock, self.heap
        with lock:
            try:
                self._run_due(lock, heap)
            finally:  # the next call_at starts another thread, should this one fail
                self.sweep()
                self.thread = None

    def _run_due(
        self, lock: threading.Condition, heap: list[tuple[float, int, AlarmHandle]]
    ) -> None:
        # An empty heap ends the thread whatever the count says: a handle cancelled
        # while another alarm stood in for the process's (a forked child's, or a
        # test's) leaves it one too many, and the thread must not die of that.
        while self.live and heap:
            when, _, handle = heap[0]
            loop, callback = handle.loop, handle.callback
            if loop is None or callback is None:  # cancelled
                heapq.heappop(heap)
                continue
            delay = when - time.monotonic()
            if delay > 0:
                # Woken early by an earlier entry, or by the last cancel.
                lock.wait(delay if delay < _LONGEST_WAIT else _LONGEST_WAIT)
                continue
            heapq.heappop(heap)
            handle.loop = handle.callback = None
            self.live -= 1
            with contextlib.suppress(RuntimeError):  # a closed loop: its connections are gone
                loop.call_soon_threadsafe(callback)


_alarm = _Alarm()


def _forget() -> None:
    """In a forked child: the parent's thread and its entries are not the child's."""
    global _alarm
    _alarm = _Alarm()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_forget)

_THREAD_NAME: Final = "smtpcore-alarm"


def call_at(
    loop: asyncio.AbstractEventLoop, when: float, callback: Callable[[], object]
) -> Cancellable:
    """Have ``loop`` run ``callback`` at ``when``, a ``time.monotonic()`` time: no
    earlier, and later by the time a thread takes to wake and the loop to take
    it up. Where no thread can be started, ``loop.call_at`` (whose time must then
    be ``time.monotonic``'s, as asyncio's own loops' is)."""
    alarm = _alarm
    handle = AlarmHandle(alarm, loop, callback)
    with alarm.lock:
        if alarm.thread is None:
            thread = threading.Thread(target=alarm.watch, name=_THREAD_NAME, daemon=True)
            try:
                thread.start()
            except RuntimeError:  # pragma: no cover - no thread to be had
                return loop.call_at(when, callback)
            alarm.thread = thread
        heap = alarm.heap
        heapq.heappush(heap, (when, next(alarm.order), handle))
        alarm.live += 1
        if heap[0][2] is handle:
            alarm.lock.notify()
    return handle


class OffLoopTimers(Timers):
    """:class:`~smtpcore._asyncio_timers.Timers` whose one loop timer is kept by the
    thread (:func:`call_at`): for a client's connection of its own, and for an
    asyncio server's, shared by its sessions. The loop's passes do not work out a
    timeout for it. Where the loop's clock is not
    ``time.monotonic`` (the thread's), the loop's own timer, as ``Timers``."""

    __slots__ = ()

    def _schedule(self, when: float) -> None:
        if self.now is not time.monotonic:
            super()._schedule(when)
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = call_at(self.loop, when, self._ring)
        self._handle_when = when
