"""Throughput of the POP3 machines alone, without sockets.

Server side: RETR of a 20 MB message handed to ``ServerConnection.send`` as
64 KiB ``ResponseData`` chunks (dot-stuffing, CRLF normalisation). Client
side: the wire bytes fed to ``ClientConnection`` in 64 KiB reads and pulled
back out as ``ResponseData`` events (unstuffing, terminator search). Also the
per-message overhead of 1,000 10 KB messages through both machines.

    .venv/bin/python benchmarks/pop3_machine.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

from smtpcore import NEED_DATA, PAUSED
from smtpcore.pop3 import (
    ClientConnection,
    EndOfResponse,
    Ok,
    Pass,
    ResponseData,
    Retr,
    ServerConnection,
    User,
)

CHUNK = 64 * 1024


def message(size: int, *, line_ending: bytes = b"\r\n") -> bytes:
    """Header and body lines of 78 octets, one in twenty starting with a dot."""
    lines = [b"Subject: benchmark", b"From: a@abc.example", b""]
    body = b"x" * 76
    dotted = b"." + b"x" * 75
    total = 0
    index = 0
    while total < size:
        line = dotted if index % 20 == 0 else body
        lines.append(line)
        total += len(line) + len(line_ending)
        index += 1
    return line_ending.join(lines) + line_ending


def logged_in_pair() -> tuple[ServerConnection, ClientConnection]:
    server = ServerConnection("pop.pqr.example")
    client = ClientConnection("client.abc.example")
    client.receive_data(server.send(Ok("ready")))
    client.next_event()
    for command in (User("bench"), Pass("secret")):
        server.receive_data(client.send(command))
        server.next_event()
        client.receive_data(server.send(Ok()))
        client.next_event()
    return server, client


def serve(server: ServerConnection, client: ClientConnection, number: int, body: bytes) -> bytes:
    server.receive_data(client.send(Retr(number)))
    server.next_event()
    out = [server.send(Ok())]
    for start in range(0, len(body), CHUNK):
        out.append(server.send(ResponseData(body[start : start + CHUNK])))
    out.append(server.send(EndOfResponse()))
    return b"".join(out)


def fetch(client: ClientConnection, wire: bytes) -> int:
    received = 0
    for start in range(0, len(wire), CHUNK):
        client.receive_data(wire[start : start + CHUNK])
        while True:
            event = client.next_event()
            if event is NEED_DATA or event is PAUSED:
                break
            if isinstance(event, ResponseData):
                received += len(event.data)
    return received


def best_of(runs: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    for name, ending in (("CRLF", b"\r\n"), ("LF (Maildir)", b"\n")):
        body = message(20 * 1024 * 1024, line_ending=ending)
        mb = len(body) / 1e6
        server, client = logged_in_pair()
        wire = serve(server, client, 1, body)
        assert fetch(client, wire) == len(body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

        def encode(body: bytes = body) -> None:
            server, client = logged_in_pair()
            serve(server, client, 1, body)

        def decode(wire: bytes = wire) -> None:
            _, client = logged_in_pair()
            client.send(Retr(1))
            fetch(client, wire)

        print(f"20 MB message, {name} lines, 64 KiB chunks")
        print(f"  server encode: {mb / best_of(5, encode):8.0f} MB/s")
        print(f"  client decode: {mb / best_of(5, decode):8.0f} MB/s")

    small = message(10 * 1000)

    def thousand() -> None:
        server, client = logged_in_pair()
        for number in range(1, 1001):
            fetch(client, serve(server, client, number, small))

    print(f"1,000 10 KB messages, both machines: {1000 / best_of(3, thousand):8.0f} messages/s")


if __name__ == "__main__":
    main()
