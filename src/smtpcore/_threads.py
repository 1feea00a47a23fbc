"""Blocking work in a worker thread of the framework that runs: asyncio or trio.

A mailstore's hooks serve the servers of both frameworks, so a store that must
not hold the event loop (a Maildir of 100,000 messages takes seconds to list)
cannot choose the framework: it asks which one runs. trio is looked for in
:data:`sys.modules` alone: a program that never imported it is not running it,
and it is no dependency of this package.

Each kind of blocking work has threads of its own (a :class:`ThreadPool`), a
few at once, never the framework's shared ones: a hundred logins to big
maildrops, or a hundred password checks against a credential backend that
stopped answering, queued on those held up every other use of them (the
reference server's spool writes) for seconds. :data:`STORE` runs mailstore
work, :data:`AUTH` credential checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

__all__ = [
    "AUTH",
    "AUTH_THREADS",
    "Landing",
    "STORE",
    "STORE_THREADS",
    "ThreadPool",
    "in_auth_thread",
    "in_thread",
    "in_trio_thread",
]

_T = TypeVar("_T")


def _trio_token() -> Any:
    """The running trio run's token, or None where trio does not run this code (then
    asyncio does): the one place that tells which framework runs."""
    if "trio" not in sys.modules:
        return None
    import trio  # imported already: this only names it

    try:
        return trio.lowlevel.current_trio_token()
    except RuntimeError:  # imported, but this is no trio run
        return None


def on_event_loop() -> bool:
    """Whether the calling thread runs an event loop (asyncio's, or a trio run): there a
    blocking wait would hold up every session, and perhaps the very work it waits for."""
    if _trio_token() is not None:
        return True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class ThreadPool:
    """At most ``size`` worker threads for one kind of work, per process on asyncio (an
    executor of its own, made at its first use) and per run on trio (a
    ``CapacityLimiter`` of its own in a ``RunVar``: a limiter belongs to one run)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._limiter: Any = None
        """trio's ``RunVar`` of this pool's limiter, made lazily."""

    async def run(self, call: Callable[[], _T]) -> _T:
        """``call()`` in one of this pool's threads, under the framework that runs, its
        result or exception given back.

        A cancellation (a deadline, a shutdown) ends the wait at once and leaves
        the thread to run ``call`` to its end, whose result is then lost: ``call``
        must leave things right by itself, whenever its caller stopped waiting. A
        call still queued for a thread when its wait is cancelled never runs.
        """
        if _trio_token() is not None:
            return await self.run_trio(call)
        return await self.run_asyncio(call)

    async def run_asyncio(self, call: Callable[[], _T]) -> _T:
        """:meth:`run` where asyncio is known to run."""
        return await asyncio.get_running_loop().run_in_executor(self.executor(), call)

    async def run_trio(self, call: Callable[[], _T]) -> _T:
        """:meth:`run` where trio is known to run."""
        return await in_trio_thread(call, limiter=self.limiter())

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
            return self._executor

    def limiter(self) -> Any:
        """This trio run's ``CapacityLimiter`` of this pool."""
        import trio

        if self._limiter is None:
            self._limiter = trio.lowlevel.RunVar(f"{self.name}_limiter")
        try:
            return self._limiter.get()
        except LookupError:
            limiter = trio.CapacityLimiter(self.size)
            self._limiter.set(limiter)
            return limiter


STORE_THREADS: Final = 4
"""Mailstore calls running at once, per process (asyncio) or per run (trio)."""
AUTH_THREADS: Final = 8
"""Credential checks running at once, per process (asyncio) or per run (trio): the
steps of an ``Authenticator(in_thread=True)``'s exchanges, and the reference server's
POP3 password checks. More than the store's, as a check may wait on a remote backend
(a database, LDAP); a check queued past these waits for a thread under the same
deadline as the check itself."""

STORE: Final = ThreadPool("smtpcore-store", STORE_THREADS)
AUTH: Final = ThreadPool("smtpcore-auth", AUTH_THREADS)


async def in_thread(call: Callable[[], _T]) -> _T:
    """``call()`` in one of the mailstore's worker threads (see :meth:`ThreadPool.run`)."""
    return await STORE.run(call)


async def in_auth_thread(call: Callable[[], _T]) -> _T:
    """``call()`` in one of the credential checks' worker threads (see
    :meth:`ThreadPool.run`)."""
    return await AUTH.run(call)


async def in_trio_thread(call: Callable[[], _T], *, limiter: Any = None) -> _T:
    """``call()`` in one of trio's worker threads (``limiter``'s, else the default's),
    as :meth:`ThreadPool.run` runs it under trio (``abandon_on_cancel``: ``trio.run``
    does not wait for an abandoned call)."""
    import trio

    return await trio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=limiter)


class Landing:
    """A signal set once, from any thread, and awaited on the framework that runs
    (asyncio or trio): how code below the adapters waits for work in a worker thread
    it no longer awaits itself (its wait was given up), without choosing a framework.
    A wait is cancelled as any await is, by its caller's deadline; the work is not."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._wakers: list[Callable[[], None]] = []

    def set(self) -> None:
        """Wake every wait, now and later; callable from any thread."""
        with self._lock:
            self._set = True
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    def wait_blocking(self, woken: threading.Event | None = None) -> None:
        """Block the calling thread until :meth:`set` is called, or until ``woken`` is
        set by other code (a maildrop's close): for plain code on a thread that runs
        no event loop (see :func:`on_event_loop`). ``woken`` is this wait's alone,
        as :meth:`set` sets it."""
        landed = threading.Event() if woken is None else woken
        if self._waiting(landed.set):
            try:
                landed.wait()
            finally:
                self._forget(landed.set)

    async def wait(self) -> None:
        """Return once :meth:`set` was called."""
        token = _trio_token()
        if token is not None:
            import trio  # imported already, since it runs: this only names it

            await self._wait_trio(trio, token)
            return
        await self._wait_asyncio()

    async def _wait_asyncio(self) -> None:
        loop = asyncio.get_running_loop()
        landed: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            if not landed.done():  # cancelled meanwhile: its wait was given up
                landed.set_result(None)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(done)

        if self._waiting(wake):
            try:
                await landed
            finally:
                self._forget(wake)

    async def _wait_trio(self, trio: Any, token: Any) -> None:
        landed = trio.Event()

        def wake() -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(landed.set)

        if self._waiting(wake):
            try:
                await landed.wait()
            finally:
                self._forget(wake)

    def _waiting(self, wake: Callable[[], None]) -> bool:
        """Whether a wait must wait: not yet set, ``wake`` then called when it is."""
        with self._lock:
            if self._set:
                return False
            self._wakers.append(wake)
            return True

    def _forget(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake in self._wakers:
                self._wakers.remove(wake)
