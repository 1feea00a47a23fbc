"""Watching how the shared driver ends a session, for tests of a goodbye cut short.

A session cut off by its timeout (a write cancelled, or a wait for a client whose
replies were left unsent) should say its last word within
:data:`~smtpcore._driver._shutdown.LAST_WORDS` and not wait for its close. Without a
stopwatch, that shows in the order of events: the close timeout is made long
(:data:`CLOSE`), so a session whose close waits for it ends long after half of it;
and every deadline the session's clock is asked for after the cut is recorded, but
the linger's (its own bound, :data:`LINGER`), so that a second whole timeout shows.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import smtpcore._driver._session_closing
import smtpcore._driver._transport
from smtpcore._asyncio_clock import AsyncioClock
from smtpcore._asyncio_runner import SessionRunner
from smtpcore._driver._served_session import ServedSession
from smtpcore._driver._shutdown import LAST_WORDS
from smtpcore.trio import TrioClock

__all__ = ["CLOSE", "LINGER", "watch_the_end"]

LINGER = 2 * LAST_WORDS
"""The linger for these tests: longer than :data:`LAST_WORDS`, so that the check on the
waits after the cut is seen to leave the linger's out."""

CLOSE = 30.0
"""The transports' close timeout for these tests: a session whose close waits for it
ends long after half of it has passed."""


def watch_the_end(
    monkeypatch: pytest.MonkeyPatch,
    *,
    after: threading.Event,
    waits: list[float | None],
    ended: threading.Event,
) -> None:
    """Set ``ended`` once a session is over (its transport closed), and append to
    ``waits`` the seconds of every deadline a session's clock (either adapter's) is
    asked for once ``after`` is set, but while the session lingers; the linger made
    :data:`LINGER` and the transports' close timeout :data:`CLOSE`."""
    lingering = False
    end = ServedSession._end
    linger = ServedSession._linger

    async def watched_end(session: ServedSession, *args: Any) -> None:
        try:
            await end(session, *args)
        finally:
            ended.set()

    async def watched_linger(session: ServedSession) -> None:
        nonlocal lingering
        lingering = True
        try:
            await linger(session)
        finally:
            lingering = False

    monkeypatch.setattr(ServedSession, "_end", watched_end)
    monkeypatch.setattr(ServedSession, "_linger", watched_linger)
    for clock in (AsyncioClock, SessionRunner, TrioClock):
        deadline = clock.deadline

        def recorded(self: Any, seconds: float | None, deadline: Any = deadline) -> Any:
            if after.is_set() and not lingering:
                waits.append(seconds)
            return deadline(self, seconds)

        monkeypatch.setattr(clock, "deadline", recorded)
    monkeypatch.setattr(smtpcore._driver._session_closing, "LINGER", LINGER)
    monkeypatch.setattr(smtpcore._driver._transport, "CLOSE_TIMEOUT", CLOSE)
