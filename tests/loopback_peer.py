"""A server played by hand, byte by byte, for tests of what a client does with what
a real server would never send (a reply no command asked for, an end at an odd
moment)."""

from __future__ import annotations

import socket
import ssl
import threading
from typing import BinaryIO

from peers import LOOPBACK, free_port

__all__ = ["LoopbackPeer"]


class LoopbackPeer:
    """Takes one connection on loopback, at :attr:`port`, in a thread of its own, under
    TLS from the first byte if ``context`` (RFC 8314 §3.3), and hands it, with a
    reader of its lines, to :meth:`converse`. What it writes is at the client's
    socket once ``sendall`` returns (``TCP_NODELAY``: not held back by Nagle's
    algorithm until the client's delayed ACK). A subclass sets up what
    :meth:`converse` needs, then calls :meth:`start`."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.listener = socket.create_server((LOOPBACK, self.port))
        self.context = context
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        """Play the server on ``conn`` (its timeout 10 seconds) until the session ends."""
        raise NotImplementedError

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        if self.context is not None:
            conn = self.context.wrap_socket(conn, server_side=True)
        with conn:
            conn.settimeout(10)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.converse(conn, conn.makefile("rb"))

    def close(self) -> None:
        """Wait for the conversation's end (15 seconds at most), then stop listening."""
        self.thread.join(15)
        self.listener.close()
