"""Blocking work in a worker thread of the framework that runs: asyncio or trio.

A mailstore's hooks serve the servers of both frameworks, so a store that must
not hold the event loop (a Maildir of 100,000 messages takes seconds to list)
cannot choose the framework: it asks which one runs. trio is looked for in
:data:`sys.modules` alone: a program that never imported it is not running it,
and it is no dependency of this package.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["in_thread", "in_trio_thread"]

_T = TypeVar("_T")


async def in_thread(call: Callable[[], _T]) -> _T:
    """``call()`` in a worker thread, its result or exception given back.

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
            return await in_trio_thread(call)
    return await asyncio.to_thread(call)


async def in_trio_thread(call: Callable[[], _T]) -> _T:
    """``call()`` in one of trio's worker threads, as :func:`in_thread` runs it under
    trio (``abandon_on_cancel``: ``trio.run`` does not wait for an abandoned call)."""
    import trio

    return await trio.to_thread.run_sync(call, abandon_on_cancel=True)
