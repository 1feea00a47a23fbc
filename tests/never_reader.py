"""A raw client on loopback that pipelines commands and reads (almost) nothing, for
tests of what a server does when its writes wait for room (timeouts, shutdowns,
held replies)."""

from __future__ import annotations

import socket
import threading

import pytest

__all__ = [
    "never_reader",
    "pipeline_until_the_write_waits",
    "pop3_logged_in",
    "read_line_of",
    "smtp_helo_answered",
]


def never_reader() -> socket.socket:
    """A client socket whose receive buffer is tiny (set before it connects, so that its
    window stays small): a server that writes to it soon waits for room."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    return sock


def read_line_of(sock: socket.socket) -> bytes:
    """One line from ``sock``, its CRLF kept (4 KiB at most; short if the server closed)."""
    line = bytearray()
    while not line.endswith(b"\r\n") and len(line) < 4096 and (octet := sock.recv(1)):
        line += octet
    return bytes(line)


def pipeline_until_the_write_waits(
    sock: socket.socket, batch: bytes, waiting: threading.Event
) -> None:
    """Send ``batch`` after ``batch`` of pipelined commands, reading nothing, until the
    server's write of their replies waits for room (``waiting`` is set); then send no
    more, so that little of the client's is left unread when the server closes."""
    for _ in range(200):
        sock.sendall(batch)
        if waiting.wait(0.3):
            return
    pytest.fail("the server's write never waited for the client")


def smtp_helo_answered(sock: socket.socket) -> None:
    """On a connected ``sock``: the server's greeting read, then HELO sent and answered."""
    assert read_line_of(sock).startswith(b"220 ")
    sock.sendall(b"HELO client.test\r\n")
    assert read_line_of(sock).startswith(b"250 ")


def pop3_logged_in(sock: socket.socket) -> None:
    """On a connected ``sock``: the server's greeting read, then alice logged in with
    USER and PASS (password ``wonderland``)."""
    assert read_line_of(sock).startswith(b"+OK")
    sock.sendall(b"USER alice\r\nPASS wonderland\r\n")
    assert read_line_of(sock).startswith(b"+OK") and read_line_of(sock).startswith(b"+OK")
