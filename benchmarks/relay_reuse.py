"""Messages relayed per connection, and the wall time, with and without the relay's
connection cache (``smtpcore.server.relaycache``).

    .venv/bin/python benchmarks/relay_reuse.py [--messages 200] [--concurrency 20] [--tls]

``--messages`` messages (at most 5,000) are queued for one recipient domain, whose
one exchanger is a small SMTP sink in this process on loopback; the delivery worker
(``smtpcore.server.delivery.DeliveryWorker``, as ``serve`` builds it, with its
default concurrency: 10 sessions at once to one destination) relays them all, once
with ``connection_cache_time=0`` (a connection per message, as before the cache) and
once with the default 2 s. For each run: the connections the sink accepted, the
messages per connection, and the seconds from the worker's start to an empty queue.
``--tls``: the sink offers STARTTLS (a throwaway certificate made with ``trustme``),
which the relay's default policy (``may``) takes, so that each new connection costs
a TLS handshake and a second EHLO as well, as at most exchangers.
Everything started here (the sink, the worker, its temporary data directory) is
stopped or removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import ssl
import tempfile
import time
from pathlib import Path

from smtpcore.routing import Router, StaticResolver
from smtpcore.server.config import ServerConfig
from smtpcore.server.delivery import DeliveryWorker
from smtpcore.server.internal import InternalAddresses
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.queue import Queue
from smtpcore.server.relaycache import IDLE_TIME_LIMIT

LOOPBACK = "127.0.0.1"
MOST_MESSAGES = 5000
MESSAGE = b"From: john@abc.example\r\nSubject: hello\r\n\r\n" + b"body line\r\n" * 50
ZONE = "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"


class Sink:
    """An exchanger that takes every message (EHLO, MAIL, RCPT, DATA, RSET, QUIT), and
    counts its connections and the messages it took."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.connections = 0
        self.messages = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            writer.write(b"220 sink.example ESMTP\r\n")
            encrypted = False
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    offer = b"" if self.tls is None or encrypted else b"250-STARTTLS\r\n"
                    writer.write(b"250-sink.example\r\n" + offer + b"250 8BITMIME\r\n")
                elif verb == b"STAR" and self.tls is not None and not encrypted:
                    writer.write(b"220 2.0.0 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(self.tls)
                    encrypted = True
                    continue
                elif verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    while (await reader.readline()) not in (b".\r\n", b""):
                        pass
                    self.messages += 1
                    writer.write(b"250 2.0.0 taken\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    break
                else:
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def relay(
    messages: int, concurrency: int, cache_time: float, tls: ssl.SSLContext | None
) -> tuple[int, float]:
    """The sink's connections, and the seconds the worker took to empty its queue."""
    sink = Sink(tls)
    server = await asyncio.start_server(sink.serve, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="relay-reuse-") as directory:
        config = ServerConfig(domains=("abc.example",), data_dir=Path(directory))
        queue = Queue(config.queue_dir)
        queue.open()
        mailboxes = LocalMailboxes(config)
        mailboxes.create_all()
        worker = DeliveryWorker(
            queue,
            router=Router(["abc.example"], hostnames=["mx.abc.example"], port=port),
            resolver=StaticResolver.from_zone_text(ZONE),
            mailboxes=mailboxes,
            hostname="mx.abc.example",
            internal=InternalAddresses(allowed=True),  # the sink is on loopback
            rng=random.Random(7),
            concurrency=concurrency,
            connection_cache_time=cache_time,
        )
        for number in range(messages):
            spool = queue.spool()
            spool.write(MESSAGE)
            entry = queue.prepare(spool, "john@abc.example", [f"u{number}@pqr.example"])
            worker.schedule(entry.commit())
        started = time.perf_counter()
        task = asyncio.get_running_loop().create_task(worker.run())
        try:
            while worker.queued or sink.messages < messages:
                await asyncio.sleep(0.01)
            took = time.perf_counter() - started
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await worker.aclose(5.0)
            server.close()
            await server.wait_closed()
    return sink.connections, took


def sink_tls() -> ssl.SSLContext:
    """A server context with a certificate for the sink's name, from a throwaway CA."""
    import trustme

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("mx.pqr.example").configure_cert(context)
    return context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--tls", action="store_true", help="the sink offers STARTTLS")
    args = parser.parse_args()
    tls = sink_tls() if args.tls else None
    messages = max(1, min(args.messages, MOST_MESSAGES))
    over = "STARTTLS" if args.tls else "plaintext"
    print(f"{messages} messages to one exchanger ({over}), concurrency {args.concurrency}")
    print(f"{'cache':<12}{'connections':>12}{'per connection':>16}{'seconds':>10}")
    for name, cache_time in (("off", 0.0), (f"{IDLE_TIME_LIMIT:g}s idle", IDLE_TIME_LIMIT)):
        connections, took = asyncio.run(relay(messages, args.concurrency, cache_time, tls))
        per = messages / connections
        print(f"{name:<12}{connections:>12}{per:>16.1f}{took:>10.2f}")


if __name__ == "__main__":
    main()
