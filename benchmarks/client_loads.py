"""The SMTP client loads, and the call counter that ``compare.py``, ``client_calls.py`` and
``calls_by_function.py`` share.

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
from types import CodeType, FrameType
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


def file_and_qualname(code: CodeType) -> str:
    """``smtp/_client.py:284 ClientConnection.next_event``: the key ``client_calls.py`` prints."""
    where = "/".join(Path(code.co_filename).parts[-2:])
    return f"{where}:{code.co_firstlineno} {code.co_qualname}"


class CallCounter:
    """Counts Python function calls (``sys.setprofile``), in all and, given a ``label`` for a
    function's code, by label (the label costs time, not calls)."""

    def __init__(self, label: Callable[[CodeType], str] | None = None) -> None:
        self.calls = 0
        self.label = label
        self.by_function: Counter[str] = Counter()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            self.calls += 1
            if self.label is not None:
                self.by_function[self.label(frame.f_code)] += 1


def counted(
    work: Callable[[], object], label: Callable[[CodeType], str] | None = None
) -> CallCounter:
    """The Python calls made by ``work()`` in this thread (by ``label`` too, if given)."""
    counter = CallCounter(label)
    sys.setprofile(counter)
    try:
        work()
    finally:
        sys.setprofile(None)
    return counter


def message_calls(client: Callable[[int, int], None], port: int, messages: int) -> Counter[str]:
    """Python calls of ``messages`` messages, by function: the difference between sessions of
    ``messages`` and twice as many, so that connecting, EHLO and QUIT drop out."""
    short = counted(lambda: client(port, messages), file_and_qualname).by_function
    long = counted(lambda: client(port, 2 * messages), file_and_qualname).by_function
    long.subtract(short)
    return long
