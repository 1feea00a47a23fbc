"""Replies held while other connections are served, on both adapters' servers.

The asyncio server holds a reply while the loop has other callbacks to run in
the pass (``smtpcore._asyncio_raw.HeldWrites``), the trio server while other
connections write in the scheduler's batch (``smtpcore._trio_held.HeldWrites``);
each adapter's own tests hold the details. Here: many clients at once, each
getting its own replies, in order.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from peers import running_smtp_server
from smtpcore import _asyncio_raw, _trio_held
from smtpcore.handler import Handler
from smtpcore.smtp import Reply

HOLDERS = {"asyncio": _asyncio_raw.HeldWrites, "trio": _trio_held.HeldWrites}


class _Echoing(Handler):
    """Answers VRFY with its argument: each client's replies are its own."""

    async def handle_vrfy(self, session: Any, argument: str) -> Reply | None:
        return Reply(252, f"{argument} may be tried")


def test_sessions_served_together_each_get_their_own_replies_in_order(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty clients whose commands arrive together: some replies are held (counted),
    and each client gets its own, in order."""
    holder: Any = HOLDERS[adapter]
    counted: list[int] = []
    hold = holder.hold

    def counting(self: Any, transport: Any, data: bytes) -> int:
        counted.append(len(data))
        result: int = hold(self, transport, data)
        return result

    monkeypatch.setattr(holder, "hold", counting)
    with running_smtp_server(adapter, _Echoing()) as server:
        socks = [
            socket.create_connection((server.host, server.port), timeout=10) for _ in range(20)
        ]
        try:
            files = [sock.makefile("rb") for sock in socks]
            for file in files:
                assert file.readline().startswith(b"220 ")
            for turn in range(3):
                for number, sock in enumerate(socks):
                    sock.sendall(f"VRFY c{number}t{turn}\r\nNOOP\r\n".encode())
                for number, file in enumerate(files):
                    assert (
                        file.readline() == f"252 2.0.0 c{number}t{turn} may be tried\r\n".encode()
                    )
                    assert file.readline() == b"250 2.0.0 OK\r\n"
            for sock in socks:
                sock.sendall(b"QUIT\r\n")
            for file in files:
                assert file.readline().startswith(b"221 ")
                assert file.read() == b""
        finally:
            for sock in socks:
                sock.close()
    assert counted  # some replies waited
