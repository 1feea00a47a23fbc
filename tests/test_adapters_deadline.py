"""The deadlines each transport supplies to the shared driver (RFC 5321 §4.5.3.2 timeouts).

The driver relies on three properties on both frameworks: a block that runs
too long raises ``TimeoutError``; ``expire()`` ends a wait at once (graceful
shutdown); and a deadline never swallows a cancellation that is not its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from smtpcore.asyncio import AsyncioTransport
from smtpcore.trio import TrioTransport

Deadline = Callable[[float | None], Any]


def deadline_factory(framework: str) -> Deadline:
    if framework == "asyncio":
        return lambda seconds: AsyncioTransport().deadline(seconds)
    # The trio transport's deadline does not touch its stream.
    return lambda seconds: TrioTransport.deadline(None, seconds)  # type: ignore[arg-type]


def run(framework: str, fn: Callable[[], Awaitable[None]]) -> None:
    if framework == "asyncio":

        async def main() -> None:
            await fn()

        asyncio.run(main())
    else:
        trio.run(fn)


def sleep(framework: str, seconds: float) -> Awaitable[None]:
    return asyncio.sleep(seconds) if framework == "asyncio" else trio.sleep(seconds)


FRAMEWORKS = ["asyncio", "trio"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_block_that_runs_too_long_raises_timeout_error(framework: str) -> None:
    async def body() -> None:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with deadline_factory(framework)(0.05):
                await sleep(framework, 5)
        assert time.monotonic() - started < 2
        async with deadline_factory(framework)(None):
            await sleep(framework, 0.01)
        async with deadline_factory(framework)(5):
            await sleep(framework, 0.01)
        await sleep(framework, 0.01)  # no cancellation left pending

    run(framework, body)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_expire_ends_the_wait_at_once(framework: str) -> None:
    async def body() -> None:
        async def waiter(armed: list[Any]) -> None:
            with pytest.raises(TimeoutError):
                async with deadline_factory(framework)(None) as deadline:
                    armed.append(deadline)
                    await sleep(framework, 10)

        armed: list[Any] = []
        started = time.monotonic()
        if framework == "asyncio":
            task = asyncio.get_running_loop().create_task(waiter(armed))
            await asyncio.sleep(0.01)
            armed[0].expire()
            await task
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter, armed)
                await trio.sleep(0.01)
                armed[0].expire()
        assert time.monotonic() - started < 2

    run(framework, body)


def test_asyncio_deadline_does_not_swallow_an_outer_cancellation() -> None:
    async def body() -> None:
        entered = asyncio.Event()

        async def inner() -> None:
            async with AsyncioTransport().deadline(10):
                entered.set()
                await asyncio.sleep(10)

        task = asyncio.get_running_loop().create_task(inner())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(body())


def test_asyncio_deadline_due_as_the_operation_completes_leaks_no_cancellation() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        outcomes = set()
        for _ in range(20):
            future: asyncio.Future[None] = loop.create_future()
            try:
                async with AsyncioTransport().deadline(0.001):
                    loop.call_soon(future.set_result, None)
                    time.sleep(0.002)  # the timer and the result are due together
                    await future
                outcomes.add("done")
            except TimeoutError:
                outcomes.add("timeout")
            await asyncio.sleep(0.001)  # a leaked cancellation would land here
        assert outcomes

    asyncio.run(body())
