"""Bytes at a client's socket that nothing has read yet, for tests of the clients' look
at them (``_driver._arrived``): waiting, with the loop blocked, until they are there,
and a session given a bound that a look which waited would overrun."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from peers import run

__all__ = ["GIVEN", "run_within", "ticketed", "wait_until_arrived"]

GIVEN: float = 10.0
"""How long a session may take: make the look's bound three times as long, so that a
session that waited for the look does not finish in time."""


def wait_until_arrived(transport: Any, failure: str) -> None:
    """Block (the event loop too, so that nothing reads meanwhile) until the client's
    ``transport`` says that bytes reached its socket (``arrived``); fail the test
    with ``failure`` if none came in five seconds."""
    for _ in range(500):
        if transport.arrived():
            return
        time.sleep(0.01)
    pytest.fail(failure)


def ticketed(client: Any) -> None:
    """Make ``client``'s STARTTLS (STLS) handshake return only once more has reached its
    socket (a TLS 1.3 server's session tickets, RFC 8446 §4.6.1), so that the next
    command finds them there."""
    handshake = client._handshake

    async def and_tickets() -> None:
        await handshake()
        wait_until_arrived(
            client._transport, "no session ticket reached the socket after the handshake"
        )

    client._handshake = and_tickets


def run_within(adapter: str, session: Callable[[], Awaitable[None]]) -> None:
    """Run ``session`` under the adapter, given :data:`GIVEN` seconds (a hang guard:
    the test asks what the session got done, not when)."""

    async def guarded() -> None:
        if adapter == "trio":
            import trio

            with trio.move_on_after(GIVEN):
                await session()
        else:
            import asyncio

            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(session(), GIVEN)

    run(adapter, guarded)
