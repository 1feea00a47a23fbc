"""The SMTP clients' footprint in the caches a message, counted by cachegrind, without sockets.

    valgrind --tool=cachegrind --cache-sim=yes --LL=1048576,16,64 \\
        .venv/bin/python benchmarks/client_footprint.py smtpcore.sync 200

On a real socket each reply is waited for, and what ran meanwhile (the
kernel, the server) leaves the caches cold: a client pays for each line of
code and data it touches after a reply, again after every wait, which is
why a client can run fewer instructions than smtplib and still spend more
time. Here ``smtplib`` or ``smtpcore.sync`` sends ``messages`` 1 KB messages
without PIPELINING over one session to a stand-in socket that answers at
once as Postfix's ``smtp-sink -p`` does, and each read of a reply first
copies ``--evict`` MiB (more than the last-level cache simulated above), so
that nothing touched before it is still cached. ``null`` runs the stand-in
alone: the same copies, no client. Run each with two message counts; the
difference over the extra messages, less ``null``'s, is what a client costs
a message in instructions and cache misses (docs/performance.rst, round 6).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import client_loads

GREETING = b"220 sink.test ESMTP\r\n"
ANSWERS = {  # what smtp-sink -p answers, by verb
    b"EHLO": b"250-sink.test\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n",
    b"MAIL": b"250 2.1.0 Ok\r\n",
    b"RCPT": b"250 2.1.5 Ok\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"QUIT": b"221 2.0.0 Bye\r\n",
}
QUEUED = b"250 2.0.0 Ok: queued\r\n"


class StandInSocket:
    """A connected socket that answers each write at once, as smtp-sink -p would; its
    file descriptor, for ``poll``, is a pipe's end that is readable while a reply
    waits to be read."""

    evict: tuple[bytearray, bytes] | None = None

    def __init__(self) -> None:
        self._pending = bytearray()
        self._readable, self._writable = os.pipe()
        self._queue(GREETING)

    def fileno(self) -> int:
        return self._readable

    def _queue(self, reply: bytes) -> None:
        if not self._pending:
            os.write(self._writable, b"!")
        self._pending += reply

    def _answer(self, data: bytes) -> None:
        self._queue(QUEUED if data.endswith(b"\r\n.\r\n") else ANSWERS[data[:4].upper()])

    def send(self, data: bytes, flags: int = 0) -> int:
        self._answer(bytes(data))
        return len(data)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self._answer(bytes(data))

    def recv(self, size: int, flags: int = 0) -> bytes:
        if not self._pending:
            raise BlockingIOError
        if self.evict is not None:  # what a wait for the reply would have left cold
            target, source = self.evict
            target[:] = source
        data = bytes(self._pending[:size])
        del self._pending[:size]
        if not self._pending:
            os.read(self._readable, 1)
        return data

    def recv_into(self, buffer: Any, size: int = 0) -> int:
        data = self.recv(size or len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]  # a stand-in

    def close(self) -> None:
        os.close(self._readable)
        os.close(self._writable)

    def _decref_socketios(self) -> None:
        pass

    def setblocking(self, flag: bool) -> None:
        pass

    def settimeout(self, timeout: float | None) -> None:
        pass

    def setsockopt(self, *args: object) -> None:
        pass

    def getsockopt(self, level: int, option: int, size: int = 0) -> bytes:
        return bytes(16)  # a struct timeval, for SO_RCVTIMEO

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 25)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 50000)


def null_client(port: int, messages: int) -> None:
    """The stand-in's own share: the writes and reads of a session, and no client."""
    sock = StandInSocket()
    sock.recv(512)
    for _ in range(messages):
        for command in (b"MAIL", b"RCPT", b"DATA", b"x\r\n.\r\n"):
            sock.send(command)
            sock.recv(65536)
    sock.close()


CLIENTS: dict[str, Callable[[int, int], None]] = {
    "smtplib": client_loads.smtplib_client,
    "smtpcore.sync": client_loads.sync_client,
    "null": null_client,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("messages", type=int)
    parser.add_argument("--evict", type=float, default=1.5, help="MiB copied before each read")
    args = parser.parse_args()
    size = int(args.evict * 1024 * 1024)
    if size:
        StandInSocket.evict = (bytearray(size), bytes(size))
    socket.create_connection = lambda *args, **kwargs: StandInSocket()  # type: ignore[assignment]  # a stand-in
    CLIENTS[args.client](25, args.messages)


if __name__ == "__main__":
    main()
