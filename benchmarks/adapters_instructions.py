"""Python function calls a message in the adapters' SMTP server: a figure that does
not drift with the load of a shared machine, as rates and CPU time do.

    .venv/bin/python benchmarks/adapters_instructions.py [--messages 2000]

The server runs in a thread of this process with a profile hook that counts
every call it makes (Python functions and C functions alike); this thread
sends ``--messages`` pipelined 1 KB messages over one session
(``adapters_smtp.pipelined``), once to warm up and once to count, and the
calls of the second run divided by its messages is the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters_smtp import (
    ON_UVLOOP,
    FloorProtocol,
    free_port,
    pipelined,
    run_asyncio,
    serve_raw_floor,
    serve_trio_floor,
)

from smtpcore.handler import Envelope, Handler, Session
from smtpcore.smtp import Rcpt, Reply


class Accept(Handler):
    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")


class Counter:
    def __init__(self) -> None:
        self.python = 0
        self.c = 0

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            self.python += 1
        elif event == "c_call":
            self.c += 1


def serve(kind: str, port: int, counter: Counter, ready: threading.Event, tls: Any = None) -> None:
    """Serve ``kind`` on ``port`` with ``counter`` profiling this thread; ``tls``, an
    ``ssl.SSLContext``, offers STARTTLS (smtpcore's servers only)."""
    options: dict[str, Any] = {"hostname": "mx.test", "max_message_size": None}
    if tls is not None:
        options["ssl_context"] = tls
    sys.setprofile(counter)
    if kind == "asyncio floor":  # no smtpcore: asyncio's own share (adapters_smtp.FloorProtocol)

        async def main_floor() -> None:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(FloorProtocol, "127.0.0.1", port)
            ready.set()
            await server.serve_forever()

        asyncio.run(main_floor())
    elif kind == "raw floor":  # no smtpcore: asyncio's selector alone (adapters_smtp)
        asyncio.run(serve_raw_floor(port, ready.set))
    elif kind == "trio floor":  # no smtpcore: trio's own share (adapters_smtp.serve_trio_floor)
        import trio

        trio.run(serve_trio_floor, port, ready.set)
    elif kind.removesuffix(ON_UVLOOP) == "asyncio":
        from smtpcore.asyncio import SMTPServer as AsyncioServer

        async def main_asyncio() -> None:
            async with AsyncioServer(Accept(), "127.0.0.1", port, **options) as server:
                ready.set()
                await server.serve_forever()

        run_asyncio(main_asyncio(), uvloop=kind.endswith(ON_UVLOOP))
    else:
        import trio

        from smtpcore.trio import SMTPServer as TrioServer

        async def main_trio() -> None:
            async with TrioServer(Accept(), "127.0.0.1", port, **options) as server:
                ready.set()
                await server.serve_forever()

        trio.run(main_trio)


def calls_per_message(kind: str, messages: int) -> tuple[float, float]:
    counter = Counter()
    ready = threading.Event()
    port = free_port()
    thread = threading.Thread(target=serve, args=(kind, port, counter, ready), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError(f"{kind} did not start")
    pipelined(port, messages)
    python, c = counter.python, counter.c
    pipelined(port, messages)
    return (counter.python - python) / messages, (counter.c - c) / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--servers", nargs="*", default=["asyncio", "trio"])
    args = parser.parse_args()
    for kind in args.servers:
        python, c = calls_per_message(kind, args.messages)
        print(f"smtpcore.{kind:8} {python:7.1f} Python calls, {c:7.1f} C calls a message")


if __name__ == "__main__":
    main()
