"""One piece of a maildrop's worker-thread work in flight at a time.

The listing, the search for a message found again and UPDATE run in a worker thread
(:func:`~smtpcore._threads.in_thread`); a wait for one given up (the ``store``
timeout) leaves its thread running. :class:`_OneAtATime` is the rule a maildrop keeps
so that such a thread never has company: the next piece waits for it to land (a
:class:`~smtpcore._threads.Landing`), and a closed maildrop releases its lock only
once it has.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from smtpcore._maildrop_errors import MaildropError
from smtpcore._threads import Landing, in_thread, on_event_loop

__all__ = ["_OneAtATime"]

_T = TypeVar("_T")


@dataclass(slots=True)
class _Flight:
    """A worker-thread call of a :class:`Maildir` (see ``Maildir._in_thread``), as its
    thread and its caller see it, under the maildir's guard."""

    started: bool = False
    """Its thread began the work: it lets the next one start when done."""
    given_up: bool = False
    """Its caller stopped waiting before it began: it must never begin."""


class _OneAtATime(abc.ABC):
    """The worker-thread discipline of a maildrop (see :meth:`_in_thread`), which
    releases what its work goes through in :meth:`_unlock`."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        """Guards the lock, the landing and the flag below between the event loop and the
        worker thread."""
        self._landing: Landing | None = None
        """Set when this maildrop's one piece of worker-thread work is in flight
        (queued or running, and, once its caller stopped waiting, still running), and
        set off when it lands: what the next piece waits on (see :meth:`_in_thread`)."""
        self._closed = False
        """Closed since it was locked: work that has not started yet never starts."""
        self._blocked: list[threading.Event] = []
        """The wakers of plain reads blocked on the work in flight (one per reading
        thread): :meth:`_close` sets them, so that none waits on past the session."""

    @abc.abstractmethod
    def _unlock(self) -> None:
        """Release the lock and what the work goes through: the session is over and no
        work is in flight. Under the guard."""

    async def _in_thread(self, work: Callable[[], _T]) -> _T:
        """``work()`` in a worker thread, and only once no other work of this maildrop
        is in flight.

        One rule for every piece of it (the listing, the search for a message found
        again, UPDATE): a wait given up (the ``store`` timeout) leaves its thread
        running, and a second piece beside it would hold a second of the store's few
        threads for one session, and end while the first still works through the
        folders' descriptors, which a :meth:`close` would then close under it. So the
        work in flight is one, until its thread is done (or, still queued when its
        wait was given up, it is dropped unrun), and :meth:`close` releases the lock
        when it is.

        Work asked for meanwhile waits for it to land, within its caller's own
        deadline (the server's ``store`` timeout), then starts. Only a caller whose
        deadline passes first goes without (its wait is cancelled, as any is). The
        server waits for it in :meth:`before_update` before UPDATE, so that UPDATE
        has a deadline of its own."""
        await self._no_flight(take=True)
        flight = _Flight()

        def held() -> _T:
            with self._guard:
                if flight.given_up:
                    raise MaildropError("The wait for this work was given up")
                flight.started = True
                closed = self._closed
            try:
                if closed:
                    raise MaildropError("The session is over")
                return work()
            finally:
                self._landed()

        try:
            return await in_thread(held)
        except BaseException:
            with self._guard:
                unstarted = not flight.started
                flight.given_up = unstarted
            if unstarted:
                self._landed()
            raise

    def _in_this_thread(self, work: Callable[[], _T]) -> _T:
        """``work()`` on the calling thread (a plain, blocking read), under the rule
        :meth:`_in_thread` keeps: the work in flight while it runs, so that other work
        waits for it and a close releases the lock only once it is done.

        Work in flight meanwhile (another reader's, on another thread) is waited for,
        blocking, so that every reader is served. Only on an event loop's thread is
        the read refused (:class:`MaildropError`) instead: a blocking wait there would
        hold up every session, and perhaps the very work it waits for. The wait is
        bounded by that work (a search the ``store`` timeout gave up on may hang on
        a stuck disk), and by :meth:`_close`, which refuses a blocked read at once."""
        while True:
            woken = threading.Event()
            with self._guard:
                if self._closed:
                    raise MaildropError("The session is over")
                landing = self._landing
                if landing is None:
                    self._landing = Landing()
                    break
                if on_event_loop():
                    raise MaildropError(
                        "The maildrop is busy with other work: a read on an event loop's "
                        "thread does not wait for it"
                    )
                self._blocked.append(woken)
            try:
                landing.wait_blocking(woken)
            finally:
                with self._guard:
                    if woken in self._blocked:
                        self._blocked.remove(woken)
        try:
            return work()
        finally:
            self._landed()

    def _close(self) -> None:
        """The session is over: work not started never starts, a plain read blocked on
        the work in flight is refused now, and the lock is released now, or once
        that work lands (:meth:`_landed`)."""
        with self._guard:
            self._closed = True
            blocked, self._blocked = self._blocked, []
            if self._landing is None:
                self._unlock()
        for woken in blocked:
            woken.set()

    async def _no_flight(self, *, take: bool) -> None:
        """Return once no work of this maildrop is in flight; with ``take``, the
        caller's work is then in flight, taken in the same look (see
        :meth:`_in_thread`), unless the maildrop is closed."""
        while True:
            with self._guard:
                if take and self._closed:
                    raise MaildropError("The session is over")
                landing = self._landing
                if landing is None:
                    if take:
                        self._landing = Landing()
                    return
            await landing.wait()

    def _landed(self) -> None:
        """The work in flight is over (or will never run): another may start, and the
        lock of a closed maildrop is released now."""
        with self._guard:
            landing, self._landing = self._landing, None
            if self._closed:
                self._unlock()
        if landing is not None:
            landing.set()
