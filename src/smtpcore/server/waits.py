"""Waits that a stop always ends, and the one rule by which a stop ends what is left.

A stop (``serve --stop-timeout``, :meth:`MailServer.aclose
<smtpcore.server.mailserver.MailServer.aclose>`) cancels what has not ended when its
grace is over. Two things held it past that, without limit:

- :func:`asyncio.wait_for`, before Python 3.12, loses a cancellation that comes as the
  awaited thing completes (CPython gh-86296): the caller runs on as if never
  cancelled. :func:`within` waits with :func:`asyncio.wait`, which always raises it.
- a task cut off may still await something on its way out (a reply, a disk), or may
  have lost its cancellation in code not ours: :func:`finish` cancels it again while
  it runs, for at most :data:`CUT_OFF` seconds, then stops waiting for it.

A cancellation does not stop a thread: the disk work a task cut off had handed to one
goes on after the task has ended. :class:`Threads` counts that work, so that a server
lets go of its data directory only once none of it is left to land there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import sys
import threading
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Final, Generic, ParamSpec, TypeAlias, TypeVar

from smtpcore.server.log import logger
from smtpcore.server.tokens import SessionTokens

__all__ = [
    "CUT_OFF",
    "Landing",
    "ThreadShare",
    "Threads",
    "finish",
    "in_one_call",
    "stray_cancellation",
    "within",
]

T = TypeVar("T")
P = ParamSpec("P")

CUT_OFF: Final = 1.0
"""Seconds a task cancelled at the end of a stop's grace has to end, cancelled again
every :data:`CANCEL_AGAIN_EVERY` seconds meanwhile, as the listeners cancel a session
that outlives its last words (:meth:`smtpcore.asyncio.SMTPServer.aclose`)."""

CANCEL_AGAIN_EVERY: Final = 0.05


def _abandon(future: asyncio.Future[Any]) -> None:
    """Cancel ``future`` and let it end unawaited; whatever it ends with is dropped."""
    future.cancel()
    future.add_done_callback(lambda done: done.cancelled() or done.exception())


def stray_cancellation() -> bool:
    """Whether the ``CancelledError`` being handled is not the running task's own (its
    ``cancelling()`` is 0): some future that other code cancelled. Before Python 3.11 a
    task cannot tell, and every one is taken as the task's."""
    if sys.version_info < (3, 11):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``awaitable``'s result, or :class:`asyncio.TimeoutError` after ``timeout`` seconds (None:
    no limit), when it is cancelled and not waited for. :func:`asyncio.wait_for`
    without its flaw: a cancellation of the caller is always raised, and cancels
    ``awaitable`` too, even when it has just completed."""
    future = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((future,), timeout=timeout)
    except BaseException:
        _abandon(future)
        raise
    if not done:
        _abandon(future)
        raise asyncio.TimeoutError
    return future.result()


async def finish(tasks: Collection[asyncio.Task[Any]], timeout: float) -> None:
    """Let ``tasks`` end within ``timeout`` seconds, then cancel what is left, again and
    again while it runs, for at most :data:`CUT_OFF` seconds more. A task that runs on
    after that is logged and left: the stop's bound holds."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    loop = asyncio.get_running_loop()
    end = loop.time() + CUT_OFF
    while pending:
        for task in pending:
            task.cancel()
        left = end - loop.time()
        if left <= 0:
            logger.error("stopping: %d tasks cancelled did not end; left running", len(pending))
            return
        _, pending = await asyncio.wait(pending, timeout=min(left, CANCEL_AGAIN_EVERY))


def in_one_call(
    func: Callable[P, T],
    *,
    before: Callable[[], object] | None = None,
    after: Callable[[], object] | None = None,
) -> Callable[P, T]:
    """``func``, with ``before()`` just before it and ``after()`` just after it returns,
    in the same call: handed to a thread, the three run there in one turn of a
    :class:`ThreadShare`, and no stop comes between them (a local copy's ``queue list``
    mark written as it begins; a bounce's record that it was made, as it lands)."""

    def joined(*args: P.args, **kwargs: P.kwargs) -> T:
        if before is not None:
            before()
        result = func(*args, **kwargs)
        if after is not None:
            after()
        return result

    return joined


class Threads:
    """The disk work one server hands to threads (:func:`asyncio.to_thread` in all else).

    A stop cancels the task that awaits such work, but the thread goes on: a queue
    envelope or a command file it writes after the server has released the data
    directory's lock lands over what a ``queue`` tool did meanwhile, with no server
    running (a message it deleted comes back, a ``hold`` it carried out and removed
    comes back after the operator's ``release``). Work handed over here always runs
    to its end, even when its task is cancelled first, and :meth:`then` waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._running = 0
        self._then: list[Callable[[], object]] = []

    async def run(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``func(*args, **kwargs)`` in a thread, in the caller's context, counted until
        it returns; cancelling the caller leaves it to end, counted."""
        # Shielded: a cancellation must not take back work the executor has not begun,
        # which would leave it counted for ever.
        return await asyncio.shield(self.submit(func, *args, **kwargs))

    def submit(
        self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[T]:
        """:meth:`run` without the wait: ``func`` is handed to a thread now, and the
        future says when it has returned. Never cancel the future."""
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)

        def counted() -> T:
            try:
                return call()
            finally:
                self._ended()

        with self._guard:
            self._running += 1
        try:
            return asyncio.get_running_loop().run_in_executor(None, counted)
        except BaseException:  # not handed over (the executor is shut down)
            self._ended()
            raise

    def _ended(self) -> None:
        with self._guard:
            self._running -= 1
            due, self._then = (self._then, []) if not self._running else ([], self._then)
        for callback in due:
            callback()

    def land(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Landing[T]:
        """:meth:`submit`, for work whose caller may be gone before it returns (a
        message's store, its session closed unanswered): what to do with its outcome
        then is :meth:`after`'s to say. The thread drops its own count, as
        :meth:`submit`'s does, once that is done: the data directory's lock goes when
        the files are on disk, whatever became of the loop."""
        landing: Landing[T] = Landing()
        call = functools.partial(func, *args, **kwargs)

        def landed() -> T:
            outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
            try:
                value = call()
            except BaseException as exc:
                outcome.set_exception(exc)
                raise
            else:
                outcome.set_result(value)
                return value
            finally:
                self._hand_back(landing, outcome)

        landing.future = self.submit(landed)
        return landing

    def after(
        self,
        landing: Landing[T],
        callback: Callable[[concurrent.futures.Future[T]], object],
        lost: Callable[[concurrent.futures.Future[T]], object],
    ) -> None:
        """``callback(outcome)`` on the running loop once ``landing``'s call has
        returned, before its thread drops its count: what it records of that work (the
        log lines of a message that landed after its session was cut off) comes before
        what waits for the end of all work (:meth:`then`: the data directory's lock).
        Should the loop not be running by then (an embedder's, stopped or closed
        before the last store ended), the thread runs ``lost(outcome)`` instead,
        rather than wait for a loop that may never run again; exactly one of the two
        runs."""
        loop = asyncio.get_running_loop()
        with self._guard:
            outcome = landing.outcome
            if outcome is None:
                landing.then = (loop, callback, lost)
                return
        _record(callback, outcome)  # landed already: its thread found nothing to hand back

    def _hand_back(self, landing: Landing[T], outcome: concurrent.futures.Future[T]) -> None:
        """In the call's thread, once it has returned: :meth:`after`'s callback, run on
        its loop and waited for while that loop runs, or else ``lost`` here."""
        with self._guard:
            landing.outcome = outcome
            then = landing.then
        if then is None:  # its caller awaits it, or after() will see the outcome
            return
        loop, callback, lost = then
        told = threading.Event()

        def on_the_loop() -> None:
            try:
                if landing.claim(self._guard):
                    callback(outcome)
            finally:
                told.set()

        try:
            loop.call_soon_threadsafe(on_the_loop)
        except RuntimeError:  # the loop is closed: nothing will run there again
            pass
        else:
            while loop.is_running() and not told.wait(_LOOP_CHECK_EVERY):
                pass
        if landing.claim(self._guard):  # the loop has stopped, and may never run again
            _record(lost, outcome)

    def then(self, callback: Callable[[], object]) -> None:
        """``callback()`` once no work is running: now, or in the thread of the last
        one to end."""
        with self._guard:
            if self._running:
                self._then.append(callback)
                return
        callback()


def _record(
    record: Callable[[concurrent.futures.Future[T]], object], outcome: concurrent.futures.Future[T]
) -> None:
    """``record(outcome)`` (:meth:`Threads.after`'s callback, or its ``lost``) where an
    exception of its would end something else (the cancelled caller's own, the call's
    thread): logged instead."""
    try:
        record(outcome)
    except Exception:
        logger.exception("recording work that landed after its caller had gone failed")


_LOOP_CHECK_EVERY: Final = 0.05
"""Seconds between a landed call's looks at whether the loop that is to run
:meth:`Threads.after`'s callback still runs."""

_Then: TypeAlias = tuple[
    asyncio.AbstractEventLoop,
    Callable[[concurrent.futures.Future[T]], object],
    Callable[[concurrent.futures.Future[T]], object],
]
"""Where and what :meth:`Threads.after` runs once a call has landed: its loop, its
callback there, and what runs in the call's thread if that loop no longer runs."""


class Landing(Generic[T]):
    """A call handed to a thread by :meth:`Threads.land`: its :attr:`future` to await,
    its outcome once it has returned, and what :meth:`Threads.after` says to do then.
    The call's thread and the loop share it under the :class:`Threads`' guard."""

    __slots__ = ("claimed", "future", "outcome", "then")

    future: asyncio.Future[T]
    """Done once the call has returned, while the loop runs; never cancel it."""

    def __init__(self) -> None:
        self.outcome: concurrent.futures.Future[T] | None = None
        """The call's result or exception, once it has returned."""
        self.then: _Then[T] | None = None
        self.claimed = False
        """Whether :meth:`Threads.after`'s callback or its ``lost`` has run, or runs."""

    def claim(self, guard: threading.Lock) -> bool:
        """True for the first of the loop and the call's thread to ask: the one that
        records the outcome."""
        with guard:
            first, self.claimed = not self.claimed, True
        return first


class ThreadShare:
    """One user's share of a server's :class:`Threads`: at most ``limit`` of its calls
    through :meth:`run` handed over at once, the others waiting their turn, first come,
    first served; and :meth:`now`, for the calls that must not wait.

    The threads are few (:func:`asyncio.to_thread`'s executor, ``min(32, CPUs + 4)``:
    5 on one CPU) and shared: an inbound session commits its message there at the end
    of DATA. The delivery worker may have many rounds at once (``active_limit``), each
    with disk work (Maildir copies, reads, reports); all handed over at once, they
    queued ahead of the inbound session, which waited seconds for a thread (12 s behind
    1,000 local copies of 1 MB), and a client that timed out sent its accepted message
    again. Through :meth:`run` the worker has no more of that work waiting there than
    it had when its rounds were few. A slot is held until the call returns, even when
    its caller is cancelled first: a stop does not let more in.

    The rule for which call goes where: a call whose loss, if a stop cancelled its
    caller while it waited for a slot, would repeat a delivery or lose a record (a
    queue envelope's write after an exchanger's 250, a delivered message's removal,
    the operator's ``queue delete``) goes through :meth:`now`, handed to its thread
    before any await, as all the worker's disk work was before the share. Only work
    whose loss a later round makes good goes through :meth:`run`: reads, local
    Maildir copies (a copy not written stays pending), reports (made again until
    recorded made). The writes through :meth:`now` are small, and come at most one
    per outcome recorded, so the bound on the worker's calls waiting for a thread is
    ``limit``, plus those writes, plus what the worker's exchangers read in threads of
    their own (:mod:`smtpcore.server.exchanger`, one call at a time per open session):
    not a bound on the threads it holds, which may be all of them."""

    def __init__(self, threads: Threads, limit: int) -> None:
        self.threads = threads
        self._slots = SessionTokens(limit)
        """First come, first served, as the relay's sessions (the same kind of tokens)."""

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot."""
        return self._slots.waiting

    async def run(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`Threads.run`, once one of the share's slots is free. A caller
        cancelled while it waits for the slot has handed nothing over: ``func`` never
        runs."""
        return await self.run_announced(None, func, *args, **kwargs)

    async def run_announced(
        self,
        began: Callable[[], object] | None,
        func: Callable[P, T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """:meth:`run`, calling ``began()`` once the slot is taken, just before ``func``
        is handed over: what only waits for a slot has not begun (``queue list``'s
        ``*``, :mod:`smtpcore.server.activemarks`). Never called for a caller
        cancelled while it waits."""
        await self._slots.take()
        try:  # a ``began`` that raises gives the slot back too
            if began is not None:
                began()
            future = self.threads.submit(func, *args, **kwargs)
        except BaseException:
            self._slots.give_back()
            raise
        future.add_done_callback(lambda _: self._slots.give_back())
        return await asyncio.shield(future)

    async def now(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`Threads.run` at once, outside the share: ``func`` is handed to its
        thread before any await, so a caller cancelled at any point cannot keep it from
        running to its end. For the writes that must land (the class docstring's
        rule)."""
        return await self.threads.run(func, *args, **kwargs)
