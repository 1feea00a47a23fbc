"""End to end: the reference server stores no message that breaks the framing policy.

Issue 12 item 2: ``BDAT 52 LAST`` carrying ``Subject: hello\\nX-Injected: x`` once
reached the Maildir with the injected line as a header of its own, and
``CRLF NUL . CRLF`` in DATA was stored.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from smtpcore.server import MailServer, ServerConfig
from smtpcore.server.maildir import Maildir

LOOPBACK = "127.0.0.1"


def _session(port: int, exchanges: list[bytes]) -> list[bytes]:
    """Send each exchange, read one reply after each (and the greeting first)."""
    replies = []
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        file = sock.makefile("rb")

        def reply() -> bytes:
            lines = [file.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(file.readline())
            return lines[-1]

        reply()
        for exchange in exchanges:
            sock.sendall(exchange)
            replies.append(reply())
    return replies


def _bdat(chunk: bytes, *, last: bool = True) -> bytes:
    return b"BDAT %d%s\r\n%s" % (len(chunk), b" LAST" if last else b"", chunk)


def test_bare_line_endings_and_nul_never_reach_the_maildir(tmp_path: Path) -> None:
    config = ServerConfig(
        domains=("pqr.example",),
        users={"b@pqr.example": "x"},
        data_dir=tmp_path / "pqr.example",
        hostname="mx.pqr.example",
        pop3_port=0,
        min_free_space=0,  # a small temporary filesystem still takes mail
    )
    injected = b"Subject: hello\nX-Injected: x\r\n\r\nbody\r\n"
    envelope = [b"MAIL FROM:<a@abc.example>\r\n", b"RCPT TO:<b@pqr.example>\r\n"]
    exchanges = [
        b"EHLO client.abc.example\r\n",
        *envelope,
        _bdat(injected),
        *envelope,
        _bdat(b"Subject: cr\rX: y\r\n", last=False),
        _bdat(b"\r\nb\r\n"),
        *envelope,
        b"DATA\r\n",
        b"Subject: nul\r\n\r\na\r\n\x00.\r\nRSET\r\n.\r\n",
        *envelope,
        _bdat(b"Subject: clean\r\n\r\nok"),
        b"QUIT\r\n",
    ]

    async def main() -> list[bytes]:
        sock = socket.create_server((LOOPBACK, 0))
        port = sock.getsockname()[1]
        async with MailServer(config, sockets={"smtp": sock}):
            return await asyncio.to_thread(_session, port, exchanges)

    replies = asyncio.run(asyncio.wait_for(main(), 30))
    codes = [reply[:9] for reply in replies]
    assert codes[3] == b"550 5.5.2"  # bare LF in BDAT
    assert codes[6:8] == [b"250 2.0.0", b"550 5.5.2"]  # bare CR, refused at LAST
    assert codes[10:12] == [b"354 End d", b"550 5.6.0"]  # NUL in DATA
    assert codes[14] == b"250 2.0.0"
    (stored,) = [
        path.read_bytes() for path in Maildir(config.mailbox_path("b@pqr.example")).messages()
    ]
    assert stored.endswith(b"\nSubject: clean\n\nok\n")  # ended with an LF as stored
    assert b"X-Injected" not in stored and b"\x00" not in stored
