"""Throughput of the SMTP server machine alone, with no I/O.

Prints DATA throughput on a 100 MB message of 20-76-byte lines fed in
64 KiB chunks (strict bare CR/LF policy, then everything allowed), beside
a plain per-line Python decoder fed the same chunks, and commands per
second for a MAIL/RCPT/RSET loop.

    python benchmarks/server_machine.py [--megabytes 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from smtpcore import NEED_DATA
from smtpcore._lines import FramingPolicy
from smtpcore.smtp import (
    BadCommand,
    Data,
    EndOfMessage,
    MessageData,
    Reply,
    ServerConnection,
)

CHUNK = 64 * 1024


def make_message(megabytes: int) -> bytes:
    rng = random.Random(1)
    alphabet = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,"
    lines = []
    size = 0
    target = megabytes * 1_000_000
    while size < target:
        length = rng.randint(20, 76)
        line = bytes(rng.choice(alphabet) for _ in range(length))
        if rng.random() < 0.01:
            line = b"." + line  # a stuffed line now and then
        lines.append(line)
        size += length + 2
        if len(lines) >= 5000:  # repeat a block: building 100 MB line by line is slow
            block = b"\r\n".join(lines) + b"\r\n"
            return block * (target // len(block) + 1)
    return b"\r\n".join(lines) + b"\r\n"


def chunks_of(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def machine_in_data(framing: FramingPolicy) -> ServerConnection:
    conn = ServerConnection("mx.bench.example", framing=framing, max_message_size=None)
    conn.send(Reply(220, "ready"))
    conn.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    for _ in range(3):
        conn.next_event()
        conn.send(Reply(250, "ok"))
    conn.receive_data(b"DATA\r\n")
    assert isinstance(conn.next_event(), Data)
    conn.send(Reply(354, "go"))
    return conn


def run_machine(chunks: list[bytes], framing: FramingPolicy) -> int:
    conn = machine_in_data(framing)
    total = 0
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, MessageData):
                total += len(event.data)
            elif isinstance(event, EndOfMessage):
                conn.send(Reply(250, "queued"))
                return total
            else:
                raise AssertionError(f"unexpected {event!r}")
    raise AssertionError("message did not end")


def run_per_line(chunks: list[bytes]) -> int:
    """The baseline: split on CRLF, strip one leading dot; checks nothing."""
    pending = b""
    total = 0
    for chunk in chunks:
        lines = (pending + chunk).split(b"\r\n")
        pending = lines.pop()
        for line in lines:
            if line == b".":
                return total
            if line.startswith(b"."):
                line = line[1:]
            total += len(line) + 2
    raise AssertionError("message did not end")


def best_time(function: Callable[[], int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def command_loop(rounds: int) -> float:
    conn = ServerConnection("mx.bench.example")
    conn.send(Reply(220, "ready"))
    conn.receive_data(b"EHLO c.example\r\n")
    conn.next_event()
    conn.send(Reply(250, "ok"))
    batch = b"MAIL FROM:<john@abc.example>\r\nRCPT TO:<brendon@pqr.example>\r\nRSET\r\n"
    ok = Reply(250, "ok")
    start = time.perf_counter()
    for _ in range(rounds):
        conn.receive_data(batch)
        for _ in range(3):
            event = conn.next_event()
            if isinstance(event, BadCommand):
                raise AssertionError(event)
            conn.send(ok)
    return rounds * 3 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    message = make_message(args.megabytes)
    chunks = chunks_of(message + b".\r\n")
    megabytes = len(message) / 1e6

    baseline = megabytes / best_time(lambda: run_per_line(chunks), args.repeat)
    strict = megabytes / best_time(
        lambda: run_machine(chunks, FramingPolicy.strict()), args.repeat
    )
    lenient = megabytes / best_time(
        lambda: run_machine(chunks, FramingPolicy.lenient()), args.repeat
    )
    print(f"message: {megabytes:.0f} MB in {len(chunks)} chunks of {CHUNK} bytes")
    print(f"per-line Python decoder (baseline): {baseline:8.0f} MB/s")
    print(f"server machine, strict policy:      {strict:8.0f} MB/s  ({strict / baseline:.1f}x)")
    print(f"server machine, bare CR/LF allowed: {lenient:8.0f} MB/s  ({lenient / baseline:.1f}x)")
    print(f"MAIL/RCPT/RSET loop: {command_loop(20_000):,.0f} commands/s")


if __name__ == "__main__":
    main()
