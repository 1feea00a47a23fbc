"""Blocking work in a worker thread of the framework that runs: asyncio or trio.

A mailstore's hooks serve the servers of both frameworks, so a store that must
not hold the event loop (a Maildir of 100,000 messages takes seconds to list)
cannot choose the framework: it asks which one runs. trio is looked for in
:data:`sys.modules` alone: a program that never imported it is not running it,
and it is no dependency of this package.

Mailstore work runs in threads of its own, at most :data:`STORE_THREADS` at once:
a hundred logins to big maildrops queued on the framework's shared threads held
up every other use of them (the reference server's spool writes, password
checks) for seconds.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

__all__ = ["STORE_THREADS", "in_thread", "in_trio_thread"]

_T = TypeVar("_T")

STORE_THREADS: Final = 4
"""Mailstore calls running at once, per process (asyncio) or per run (trio)."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_trio_limiter: Any = None
"""trio's CapacityLimiter for mailstore work, one per run (a RunVar), made lazily."""


async def in_thread(call: Callable[[], _T]) -> _T:
    """``call()`` in one of the mailstore's worker threads, its result or exception
    given back.

    A cancellation (a deadline, a shutdown) ends the wait at once and leaves
    the thread to run ``call`` to its end, whose result is then lost: ``call``
    must leave things right by itself, whenever its caller stopped waiting. On
    asyncio a call still queued for a thread when its wait is cancelled never
    runs.
    """
    if "trio" in sys.modules:
        import trio  # imported already: this only names it

        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:  # imported, but this is no trio run
            pass
        else:
            return await in_trio_thread(call, limiter=_store_limiter())
    return await asyncio.get_running_loop().run_in_executor(_store_pool(), call)


async def in_trio_thread(call: Callable[[], _T], *, limiter: Any = None) -> _T:
    """``call()`` in one of trio's worker threads (``limiter``'s, else the default's),
    as :func:`in_thread` runs it under trio (``abandon_on_cancel``: ``trio.run`` does
    not wait for an abandoned call)."""
    import trio

    return await trio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=limiter)


def _store_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="smtpcore-store")
        return _pool


def _store_limiter() -> Any:
    import trio

    global _trio_limiter
    if _trio_limiter is None:
        _trio_limiter = trio.lowlevel.RunVar("smtpcore_store_limiter")
    try:
        return _trio_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(STORE_THREADS)
        _trio_limiter.set(limiter)
        return limiter
