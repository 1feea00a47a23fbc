"""Throughput of the SMTP server machine alone, with no I/O.

Prints DATA throughput on a 100 MB message of 20-76-byte lines (about one
line in a thousand starting with a dot) fed dot-stuffed in 64 KiB chunks
(strict bare CR/LF policy, then everything allowed), beside a plain
per-line Python decoder fed the same chunks, and commands per second for a
MAIL/RCPT/RSET loop. Every decoder's output is collected and checked
against the original content.

    python benchmarks/server_machine.py [--megabytes 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import sys
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
    """About ``megabytes`` MB of 20-76-byte CRLF lines, one in about a thousand
    starting with a dot (before stuffing)."""
    rng = random.Random(1)
    alphabet = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,"
    first = alphabet.replace(b".", b"")
    lines = []
    size = 0
    target = megabytes * 1_000_000
    while size < target:
        length = rng.randint(20, 76)
        line = bytes([rng.choice(first)]) + bytes(rng.choice(alphabet) for _ in range(length - 1))
        if rng.random() < 0.001:
            line = b"." + line[1:]
        lines.append(line)
        size += length + 2
        if len(lines) >= 5000:  # repeat a block: building 100 MB line by line is slow
            block = b"\r\n".join(lines) + b"\r\n"
            return block * (target // len(block) + 1)
    return b"\r\n".join(lines) + b"\r\n"


def stuffed(message: bytes) -> bytes:
    """The DATA wire form of ``message``: a dot doubled at the start of a line, and the
    final dot line (RFC 5321 §4.5.2)."""
    wire = message.replace(b"\r\n.", b"\r\n..")
    if wire.startswith(b"."):
        wire = b"." + wire
    return wire + b".\r\n"


def check_output(output: bytes, message: bytes) -> None:
    """A decoder's output must be the original content, byte for byte."""
    if output != message:
        raise AssertionError("the decoded content differs from the original")


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


def run_machine(chunks: list[bytes], framing: FramingPolicy) -> bytes:
    """The server machine's decoded content, collected."""
    conn = machine_in_data(framing)
    pieces: list[bytes] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, MessageData):
                pieces.append(event.data)
            elif isinstance(event, EndOfMessage):
                conn.send(Reply(250, "queued"))
                return b"".join(pieces)
            else:
                raise AssertionError(f"unexpected {event!r}")
    raise AssertionError("message did not end")


def run_per_line(chunks: list[bytes]) -> bytes:
    """The baseline: a plain per-line loop that splits on CRLF, strips one leading dot
    and collects the lines; it checks nothing (no bare CR/LF, no line length)."""
    pending = b""
    lines_out: list[bytes] = []
    append = lines_out.append
    for chunk in chunks:
        lines = (pending + chunk).split(b"\r\n")
        pending = lines.pop()
        for line in lines:
            if line[:1] == b".":
                if line == b".":
                    lines_out.append(b"")
                    return b"\r\n".join(lines_out)
                line = line[1:]
            append(line)
    raise AssertionError("message did not end")


def best_time(function: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def command_loop(rounds: int) -> float:
    # RSET counts toward the junk command limit: lift it, the loop is the point here.
    conn = ServerConnection("mx.bench.example", max_junk_commands=sys.maxsize)
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
    chunks = chunks_of(stuffed(message))
    megabytes = len(message) / 1e6
    for output in (
        run_per_line(chunks),
        run_machine(chunks, FramingPolicy.strict()),
        run_machine(chunks, FramingPolicy.lenient()),
    ):
        check_output(output, message)

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
