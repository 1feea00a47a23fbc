"""Replies held while other connections are served, on both adapters' servers.

The asyncio server holds a reply while the loop has other callbacks to run in
the pass (``smtpcore._asyncio_raw.HeldWrites``), the trio server while other
connections write in the scheduler's batch (``smtpcore._trio_held.HeldWrites``);
each adapter's own tests hold the details. Here: many clients at once, each
getting its own replies, in order.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from peers import running_pop3_server, running_smtp_server, write_maildir
from smtpcore import _asyncio_raw, _trio_held
from smtpcore.handler import Handler
from smtpcore.maildrop import MaildirStore
from smtpcore.smtp import Reply

HOLDERS = {"asyncio": _asyncio_raw.HeldWrites, "trio": _trio_held.HeldWrites}


def _count_holds(adapter: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the writes ``adapter``'s server holds from now on, as they are held."""
    holder: Any = HOLDERS[adapter]
    counted: list[int] = []
    hold = holder.hold

    def counting(self: Any, transport: Any, data: bytes) -> int:
        counted.append(len(data))
        result: int = hold(self, transport, data)
        return result

    monkeypatch.setattr(holder, "hold", counting)
    return counted


class _Echoing(Handler):
    """Answers VRFY with its argument: each client's replies are its own."""

    async def handle_vrfy(self, session: Any, argument: str) -> Reply | None:
        return Reply(252, f"{argument} may be tried")


def test_sessions_served_together_each_get_their_own_replies_in_order(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty clients whose commands arrive together: some replies are held (counted),
    and each client gets its own, in order."""
    counted = _count_holds(adapter, monkeypatch)
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


def _message(user: str, number: int, size: int) -> bytes:
    lines = b"".join(f"{user} {number} line {n}\r\n".encode() for n in range(size // 20))
    return f"Subject: {user}-{number}\r\n\r\n".encode() + lines


_POP3_TURNS = (
    (("USER {}\r\n", False), ("PASS secret\r\n", False), ("STAT\r\n", False)),
    (("RETR 1\r\n", True), ("RETR 2\r\n", True)),
    (("RETR 3\r\n", True), ("QUIT\r\n", False)),
)
"""Each turn's commands, and whether each is answered with a multi-line response."""


def _pop3_reply(file: Any, multiline: bool) -> bytes:
    """One POP3 response read from ``file``, as it came: its status line, and for a
    multi-line one every line to its dot."""
    reply = line = file.readline()
    while multiline and line != b".\r\n":
        line = file.readline()
        reply += line
    return bytes(reply)


def _retrieve_together(
    adapter: str, store: MaildirStore, users: dict[str, str]
) -> dict[str, bytes]:
    """What each client received, its pipelined commands of each turn sent together."""
    with running_pop3_server(adapter, store) as server:
        socks = {
            user: socket.create_connection((server.host, server.port), timeout=30)
            for user in users
        }
        try:
            files = {user: sock.makefile("rb") for user, sock in socks.items()}
            received = {user: file.readline() for user, file in files.items()}
            for turn in _POP3_TURNS:  # each client's commands of a turn in one write
                for user, sock in socks.items():
                    sock.sendall("".join(command for command, _ in turn).format(user).encode())
                for user, file in files.items():
                    for _, multiline in turn:
                        received[user] += _pop3_reply(file, multiline)
            for file in files.values():
                assert file.read() == b""  # closed after QUIT's reply
        finally:
            for sock in socks.values():
                sock.close()
    return received


def _check_whole(received: bytes, messages: list[bytes]) -> None:
    """Greeting, USER, PASS, STAT; each message after its +OK, ended by its dot; QUIT."""
    lines = received.split(b"\r\n")
    statuses = [line for line in lines if line.startswith((b"+OK", b"-ERR"))]
    assert len(statuses) == 8 and all(line.startswith(b"+OK") for line in statuses)
    assert statuses[3] == b"+OK 3 " + str(sum(map(len, messages))).encode()
    whole = b"".join(line + b"\r\n" for line in statuses[:4])
    for status, content in zip(statuses[4:7], messages, strict=True):
        whole += status + b"\r\n" + content + b".\r\n"
    assert received == whole + statuses[7] + b"\r\n"


def test_pop3_clients_served_together_each_get_their_messages_whole(
    adapter: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten POP3 clients whose pipelined commands (RFC 2449) arrive together: some replies
    are held (counted), and every reply and message comes whole, in order, its own."""
    counted = _count_holds(adapter, monkeypatch)
    users = {f"user{k}": "secret" for k in range(10)}
    expected = {}
    for user in users:
        expected[user] = [_message(user, n, size) for n, size in enumerate((300, 40_000, 300_000))]
        write_maildir(tmp_path / user, expected[user])
    # A hold needs several sessions' replies ready in one pass; a loaded machine may
    # serve one client a pass, so the clients come again, at most three times.
    for _ in range(3):
        received = _retrieve_together(adapter, MaildirStore(tmp_path, users), users)
        for user, messages in expected.items():
            _check_whole(received[user], messages)
        if counted:
            break
    assert counted  # some replies waited


def test_idle_sessions_at_shutdown_each_get_their_421_and_the_close(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty idle sessions when the server shuts down: the 421s written together are
    held (counted), and each goes out before its connection's close."""
    counted = _count_holds(adapter, monkeypatch)
    with running_smtp_server(adapter, Handler()) as server:
        socks = [
            socket.create_connection((server.host, server.port), timeout=10) for _ in range(40)
        ]
        files = [sock.makefile("rb") for sock in socks]
        for file in files:
            assert file.readline().startswith(b"220 ")
        for sock in socks:
            sock.sendall(b"NOOP\r\n")
        for file in files:
            assert file.readline() == b"250 2.0.0 OK\r\n"
        counted.clear()  # from here on, the shutdown's
    try:
        for file in files:
            assert file.read() == b"421 4.3.2 mx.test Service shutting down\r\n"
    finally:
        for sock in socks:
            sock.close()
    assert counted  # some 421s waited for the others
