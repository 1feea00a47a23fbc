"""The SMTP client loads and the call counter that ``compare.py`` and ``client_calls.py`` share.

Each client function sends ``messages`` 1 KB messages over one connection to
``127.0.0.1:port`` (Postfix's smtp-sink in both benchmarks). Python calls are
counted with ``sys.setprofile``: exact, and deaf to the machine's load.
"""

from __future__ import annotations

import asyncio
import smtplib
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import adapters_smtp

SENDER = "a@abc.example"
RECIPIENT = "b@pqr.example"
BODY_1K = adapters_smtp.BODY_1K


def smtplib_client(port: int, messages: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("bench.test")
        for _ in range(messages):
            client.sendmail(SENDER, [RECIPIENT], BODY_1K)


def sync_client(port: int, messages: int) -> None:
    from smtpcore.sync import SMTPClient

    with SMTPClient("127.0.0.1", port, timeout=60) as client:
        for _ in range(messages):
            client.send_message(BODY_1K, SENDER, [RECIPIENT])


def asyncio_client(port: int, messages: int) -> None:
    from smtpcore.asyncio import SMTPClient

    async def main() -> None:
        async with SMTPClient("127.0.0.1", port) as client:
            for _ in range(messages):
                await client.send_message(BODY_1K, SENDER, [RECIPIENT])

    asyncio.run(main())


def trio_client(port: int, messages: int) -> None:
    import trio

    from smtpcore.trio import SMTPClient

    async def main() -> None:
        async with SMTPClient("127.0.0.1", port) as client:
            for _ in range(messages):
                await client.send_message(BODY_1K, SENDER, [RECIPIENT])

    trio.run(main)


class CallCounter:
    """Counts Python function calls (``sys.setprofile``), in all and by ``file:line function``
    when asked (the key costs time, not calls)."""

    def __init__(self, by_function: bool = False) -> None:
        self.calls = 0
        self.keyed = by_function
        self.by_function: Counter[str] = Counter()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            self.calls += 1
            if self.keyed:
                code = frame.f_code
                where = "/".join(Path(code.co_filename).parts[-2:])
                self.by_function[f"{where}:{code.co_firstlineno} {code.co_qualname}"] += 1


def counted(work: Callable[[], object], by_function: bool = False) -> CallCounter:
    """The Python calls made by ``work()`` in this thread."""
    counter = CallCounter(by_function)
    sys.setprofile(counter)
    try:
        work()
    finally:
        sys.setprofile(None)
    return counter


def message_calls(client: Callable[[int, int], None], port: int, messages: int) -> Counter[str]:
    """Python calls of ``messages`` messages, by function: the difference between sessions of
    ``messages`` and twice as many, so that connecting, EHLO and QUIT drop out."""
    short = counted(lambda: client(port, messages), by_function=True).by_function
    long = counted(lambda: client(port, 2 * messages), by_function=True).by_function
    long.subtract(short)
    return long
