"""A scripted SMTP server on loopback, for client tests where the exact bytes matter.

Each connection it accepts plays one script: a function given a
:class:`Peer` that reads the client's lines and writes raw replies. The
server thread closes every socket it opened before :meth:`ScriptedServer.join`
returns, so a test can count the file descriptors its client left open.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

__all__ = ["EHLO_PLAIN", "Peer", "ScriptedServer", "scripted_server"]

EHLO_PLAIN = b"250-scripted.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"
"""An EHLO reply without SIZE, 8BITMIME or SMTPUTF8."""


class Peer:
    """The server's end of one connection: read the client's lines, write replies."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(20)
        self.sock = sock
        self._stream = sock.makefile("rb")
        self.received: list[bytes] = []

    def line(self) -> bytes:
        """The client's next line, CRLF included (``b""`` once it closed)."""
        data = self._stream.readline(65536)
        self.received.append(data)
        return data

    def expect(self, prefix: bytes) -> bytes:
        data = self.line()
        if not data.upper().startswith(prefix.upper()):
            raise AssertionError(f"expected {prefix!r}, got {data!r}")
        return data

    def content(self) -> bytes:
        """The message content up to the lone dot, stuffing left in."""
        lines = []
        while (data := self.line()) not in (b".\r\n", b""):
            lines.append(data)
        return b"".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def greet(self, ehlo: bytes = EHLO_PLAIN) -> None:
        """The greeting, then ``ehlo`` as the answer to the client's EHLO."""
        self.send(b"220 scripted.test ESMTP\r\n")
        self.expect(b"EHLO ")
        self.send(ehlo)

    def close(self) -> None:
        self._stream.close()
        self.sock.close()


Script = Callable[[Peer], None]


@dataclass
class ScriptedServer:
    listener: socket.socket
    scripts: Sequence[Script]
    errors: list[BaseException] = field(default_factory=list)
    peers: list[Peer] = field(default_factory=list)
    thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port

    def _run(self) -> None:
        try:
            for script in self.scripts:
                sock, _ = self.listener.accept()
                peer = Peer(sock)
                self.peers.append(peer)
                try:
                    script(peer)
                finally:
                    peer.close()
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.listener.close()

    def join(self) -> None:
        """Wait until every script has run and every socket is closed; re-raise errors."""
        assert self.thread is not None
        self.thread.join(30)
        assert not self.thread.is_alive(), "the scripted server did not finish"
        if self.errors:
            raise self.errors[0]


@contextlib.contextmanager
def scripted_server(*scripts: Script) -> Iterator[ScriptedServer]:
    """Serve one connection per script, in order, from a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    server = ScriptedServer(listener, scripts)
    server.thread = threading.Thread(target=server._run, daemon=True)
    server.thread.start()
    try:
        yield server
    finally:
        with contextlib.suppress(OSError):
            listener.close()
        server.thread.join(30)
