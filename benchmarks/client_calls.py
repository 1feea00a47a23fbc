"""Where the SMTP clients' Python calls per message go, function by function.

    .venv/bin/python benchmarks/client_calls.py [--messages 50] [--top 40]

Runs ``smtpcore.sync``'s and the asyncio client's ``send_message`` over one
connection to Postfix's smtp-sink, with and without PIPELINING, under a
``sys.setprofile`` counter keyed by function, and prints the calls per
message (the difference between sessions of ``messages`` and twice as many
messages, so that connecting, EHLO and QUIT drop out). The count is the same
on any machine at any load: it is what ``benchmarks/compare.py`` prints in
its ``Py calls`` column, broken down.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import adapters_smtp  # noqa: E402

import peers  # noqa: E402

SENDER = "a@abc.example"
RECIPIENT = "b@pqr.example"
BODY_1K = adapters_smtp.BODY_1K


class CallsByFunction:
    """Counts Python calls by ``file:line function`` (``sys.setprofile``)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            where = "/".join(Path(code.co_filename).parts[-2:])
            self.calls[f"{where}:{code.co_firstlineno} {code.co_qualname}"] += 1


def counted(work: Callable[[], object]) -> Counter[str]:
    counter = CallsByFunction()
    sys.setprofile(counter)
    try:
        work()
    finally:
        sys.setprofile(None)
    return counter.calls


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


CLIENTS: dict[str, Callable[[int, int], None]] = {
    "smtpcore.sync": sync_client,
    "smtpcore.asyncio": asyncio_client,
    "smtpcore.trio": trio_client,
}


def per_message(client: Callable[[int, int], None], port: int, messages: int) -> Counter[str]:
    client(port, 2)  # imports and first-use caches out of the way
    short = counted(lambda: client(port, messages))
    long = counted(lambda: client(port, 2 * messages))
    long.subtract(short)
    return long


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--top", type=int, default=40, help="functions shown per client")
    parser.add_argument("--only", default="", help="comma-separated client names")
    args = parser.parse_args()
    chosen = [name for name in CLIENTS if not args.only or name in args.only.split(",")]
    with peers.smtp_sink() as piped, peers.smtp_sink(extra_args=("-p",)) as plain:
        for label, port in (("PIPELINING", piped.port), ("no PIPELINING", plain.port)):
            for name in chosen:
                calls = per_message(CLIENTS[name], port, args.messages)
                total = sum(calls.values()) / args.messages
                print(f"\n{name}, {label}: {total:.1f} calls/message")
                for where, count in calls.most_common(args.top):
                    if count:
                        print(f"  {count / args.messages:6.1f}  {where}")


if __name__ == "__main__":
    main()
