"""Telling a deadline's ``TimeoutError`` from one an application's own code raised.

Both come out of ``transport.within(seconds, call)`` as ``TimeoutError``: the
deadline's when the server gave up waiting, the call's own when a hook's database
client or socket timed out (its failure, logged with its traceback and its text).
A call wrapped in :func:`own_timeouts_marked` marks its own; whatever is left
unmarked came from the deadline around it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Final, TypeVar

__all__ = ["DeadlinePassed", "own_timeouts_marked", "raised_inside", "seconds_text", "within"]

T = TypeVar("T")

_RAISED_INSIDE: Final = "_smtpcore_raised_inside_hook"
"""Set on a ``TimeoutError`` that an application's own code raised (see the module)."""


class DeadlinePassed(TimeoutError):
    """The server's own deadline of ``seconds`` for a call passed: an expected event
    (a slow disk, a big maildrop), not the call's failure."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"given up after {seconds_text(seconds)}")
        self.seconds = seconds


async def own_timeouts_marked(call: Awaitable[T]) -> T:
    """``call``, a ``TimeoutError`` out of it marked as its own. One coroutine frame,
    where a deadline entered up front costs a timer per call."""
    try:
        return await call
    except TimeoutError as exc:
        setattr(exc, _RAISED_INSIDE, True)
        raise


def raised_inside(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``TimeoutError`` a call marked by :func:`own_timeouts_marked`
    raised itself (not its deadline's)."""
    return getattr(exc, _RAISED_INSIDE, False) is True


async def within(
    run_within: Callable[[float | None, Awaitable[T]], Awaitable[T]],
    seconds: float | None,
    call: Awaitable[T],
) -> T:
    """``run_within(seconds, call)`` (a transport's ``within``), its deadline's own
    timeout raised as :class:`DeadlinePassed`; a ``TimeoutError`` of the call's own
    comes out as it was raised."""
    try:
        return await run_within(seconds, own_timeouts_marked(call))
    except TimeoutError as exc:
        if seconds is None or raised_inside(exc):
            raise
        raise DeadlinePassed(seconds) from exc


def seconds_text(seconds: float) -> str:
    """``120s``, ``0.3s``, ``0.00001s``: a configured deadline as written, never in
    exponent form (``1e-05s``)."""
    text = format(Decimal(repr(float(seconds))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}s"
