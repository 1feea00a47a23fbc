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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection
from typing import Any, Final, TypeVar

from smtpcore.server.log import logger

__all__ = ["CUT_OFF", "finish", "within"]

T = TypeVar("T")

CUT_OFF: Final = 1.0
"""Seconds a task cancelled at the end of a stop's grace has to end, cancelled again
every :data:`CANCEL_AGAIN_EVERY` seconds meanwhile, as the listeners cancel a session
that outlives its last words (:meth:`smtpcore.asyncio.SMTPServer.aclose`)."""

CANCEL_AGAIN_EVERY: Final = 0.05


def _abandon(future: asyncio.Future[Any]) -> None:
    """Cancel ``future`` and let it end unawaited; whatever it ends with is dropped."""
    future.cancel()
    future.add_done_callback(lambda done: done.cancelled() or done.exception())


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
