"""Throughput of the SMTP client machine's DATA encoding, with no I/O.

Feeds a message of 20-76-byte CRLF lines (a leading dot now and then) in
64 KiB chunks through ``ClientConnection.send(MessageData(...))`` and
``EndOfMessage()``, with bare CR/LF normalisation on (the default) and off,
beside a plain per-line Python dot-stuffing encoder fed the same chunks,
which neither normalises nor checks anything. Prints MB/s for each and the
ratio of the machine to the per-line loop; the goal is at least 2x.

    python benchmarks/client_encode.py [--megabytes 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from smtpcore import PAUSED
from smtpcore.address import parse_mailbox
from smtpcore.smtp import (
    ClientConnection,
    Data,
    Ehlo,
    EndOfMessage,
    Mail,
    MessageData,
    Rcpt,
    State,
)

CHUNK = 64 * 1024


def make_message(megabytes: float) -> bytes:
    """About ``megabytes`` MB of 20-76-byte lines; one line in 100 starts with a dot."""
    rng = random.Random(1)
    alphabet = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,"
    lines = []
    for _ in range(5000):
        line = bytes(rng.choice(alphabet) for _ in range(rng.randint(20, 76)))
        if rng.random() < 0.01:
            line = b"." + line
        lines.append(line)
    block = b"\r\n".join(lines) + b"\r\n"
    target = int(megabytes * 1_000_000)
    return (block * (target // len(block) + 1))[:target]


def chunks_of(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def client_in_data(*, normalize: bool) -> ClientConnection:
    """A client machine that has been given the 354 to its DATA."""
    conn = ClientConnection("client.bench.example", normalize_line_endings=normalize)
    answers = [b"220 mx ready\r\n", b"250-mx\r\n250 8BITMIME\r\n", b"250 ok\r\n", b"250 ok\r\n"]
    commands = [
        Ehlo("client.bench.example"),
        Mail(parse_mailbox("a@b.example")),
        Rcpt(parse_mailbox("c@d.example")),
        Data(),
    ]
    conn.receive_data(answers[0])
    conn.next_event()
    for command, answer in zip(commands, [*answers[1:], b"354 go ahead\r\n"], strict=True):
        conn.send(command)
        conn.receive_data(answer)
        conn.next_event()
    assert conn.state is State.DATA and conn.next_event() is PAUSED
    return conn


def machine_encoder(normalize: bool) -> Callable[[list[bytes]], int]:
    def run(chunks: list[bytes]) -> int:
        conn = client_in_data(normalize=normalize)
        send = conn.send
        total = 0
        for chunk in chunks:
            total += len(send(MessageData(chunk)))
        return total + len(send(EndOfMessage()))

    return run


def per_line_encoder(chunks: list[bytes]) -> int:
    """The straightforward loop: split on CRLF, double a leading dot, join again."""
    total = 0
    pending = b""
    for chunk in chunks:
        lines = (pending + chunk).split(b"\r\n")
        pending = lines.pop()
        out = []
        for line in lines:
            if line.startswith(b"."):
                line = b"." + line
            out.append(line)
        out.append(b"")
        total += len(b"\r\n".join(out))
    if pending:
        total += len(pending) + (1 if pending.startswith(b".") else 0) + 2
    return total + 3  # ".\r\n"


def best_times(
    encoders: dict[str, Callable[[list[bytes]], int]], chunks: list[bytes], repeat: int
) -> dict[str, float]:
    """Best time of each encoder, the runs interleaved so that load drifts hit all alike."""
    best = dict.fromkeys(encoders, float("inf"))
    for _ in range(repeat):
        for name, encode in encoders.items():
            start = time.perf_counter()
            encode(chunks)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=100, help="message size (MB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per encoder; best is kept")
    args = parser.parse_args()

    message = make_message(args.megabytes)
    chunks = chunks_of(message)
    size_mb = len(message) / 1_000_000
    # Same wire size from every encoder: the content is already canonical CRLF.
    expected = per_line_encoder(chunks)
    assert machine_encoder(True)(chunks) == expected == machine_encoder(False)(chunks)

    print(f"message: {size_mb:.1f} MB in {len(chunks)} chunks of {CHUNK // 1024} KiB")
    times = best_times(
        {
            "per-line Python encoder": per_line_encoder,
            "client machine, normalising bare CR/LF (default)": machine_encoder(True),
            "client machine, no normalising": machine_encoder(False),
        },
        chunks,
        args.repeat,
    )
    baseline = times["per-line Python encoder"]
    for name, elapsed in times.items():
        ratio = "" if elapsed == baseline else f"  ({baseline / elapsed:.1f}x the per-line loop)"
        print(f"{name + ':':50s}{size_mb / elapsed:6.0f} MB/s{ratio}")


if __name__ == "__main__":
    main()
