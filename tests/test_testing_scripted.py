"""Scripted peers play transcripts to the asyncio and trio clients, and to servers.

A client under test meets a misbehaving server: replies split mid-line, an
unsolicited reply, a 421 in the middle of a transaction, a reply injected
before the TLS handshake. A departure from the script fails with a diff.
"""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest

from peers import TLSFiles, module, open_fd_count, run
from smtpcore.testing import (
    Call,
    Expect,
    ExpectClose,
    ScriptedClient,
    ScriptedConnection,
    ScriptedServer,
    ScriptMismatch,
    Send,
    StartTLS,
    Step,
    script,
)

MESSAGE = b"Subject: scripted\r\n\r\n.leading dot\r\n"


SESSION = """
S: 220 mx.test ESMTP
C~ EHLO .+
S: 250-mx.test
S: 250 8BITMIME
C: MAIL FROM:<a@abc.example>
S: 250 OK
C: RCPT TO:<b@pqr.example>
S: 250 OK
C: DATA
S: 354 go ahead
C: Subject: scripted
C:
C: ..leading dot
C: .
S: 250 queued
C: QUIT
S: 221 bye
-- expect close
"""


def send(adapter: str, port: int, **options: Any) -> Any:
    return run(
        adapter,
        lambda: module(adapter).send_message(
            MESSAGE, "a@abc.example", "b@pqr.example", host="127.0.0.1", port=port, **options
        ),
    )


def test_a_session_that_follows_the_script(adapter: str) -> None:
    with ScriptedServer(script(SESSION)) as server:
        send(adapter, server.port)


def test_replies_split_mid_line(adapter: str) -> None:
    text = SESSION.replace("S: 250-mx.test\n", "S+ 25\nS+ 0-mx.t\nS: est\n")
    with ScriptedServer(script(text)) as server:
        send(adapter, server.port)


def test_a_421_in_the_middle(adapter: str) -> None:
    head = SESSION.split("C: RCPT")[0]
    text = head + "C: RCPT TO:<b@pqr.example>\nS: 421 4.3.2 shutting down\n-- close\n"
    errors = module(adapter)
    with (
        ScriptedServer(script(text)) as server,
        pytest.raises(errors.SMTPError, match="421"),
    ):
        send(adapter, server.port)


def test_an_unsolicited_reply(adapter: str) -> None:
    # Both lines in one write: the client finds the stray 250 before it sends EHLO,
    # and ends the session rather than take it as the EHLO reply.
    steps: list[Step] = [Send(b"220 mx.test ESMTP\r\n250 unsolicited\r\n"), ExpectClose()]
    errors = module(adapter)
    with ScriptedServer(steps) as server, pytest.raises(errors.SMTPError):
        send(adapter, server.port)


def test_a_reply_injected_before_tls_is_ignored(adapter: str, tls: TLSFiles) -> None:
    steps = [
        *script("S: 220 mx.test ESMTP\nC~ EHLO .+\nS: 250-mx.test\nS: 250 STARTTLS"),
        Expect(b"STARTTLS"),
        # The 220 and a forged EHLO reply in one write, before the handshake.
        Send(b"220 2.0.0 go ahead\r\n250-mx.test\r\n250 AUTH PLAIN\r\n"),
        StartTLS(),
        *script("C~ EHLO .+\nS: 250-mx.test\nS: 250 SIZE 1000\nC: QUIT\nS: 221 bye"),
    ]

    async def session() -> dict[str, tuple[str, ...]]:
        client = module(adapter).SMTPClient(
            "127.0.0.1", server.port, ssl_context=tls.client_context
        )
        async with client:
            return dict(client.connection.extensions)

    with ScriptedServer(steps, ssl_context=tls.server_context) as server:
        extensions = run(adapter, session)
    assert "SIZE" in extensions and "AUTH" not in extensions


def test_a_departure_fails_with_a_diff(adapter: str) -> None:
    text = SESSION.replace("C: RCPT TO:<b@pqr.example>", "C: RCPT TO:<someone@else.example>")
    server = ScriptedServer(script(text), timeout=5)
    with pytest.raises(ScriptMismatch) as info, server:
        send(adapter, server.port)  # the client's error gives way to the mismatch
    message = str(info.value)
    assert "departs from the script" in message
    assert "-C: 'RCPT TO:<someone@else.example>'" in message
    assert "+C: 'RCPT TO:<b@pqr.example>'" in message


def test_the_script_parser() -> None:
    steps = script("S: 220 hi\nC~ EHLO .+\nS+ 25\n-- starttls\n-- close\n-- expect close")
    assert steps[0] == Send(b"220 hi\r\n")
    assert steps[1] == Expect(re.compile(b"EHLO .+"))
    assert steps[2] == Send(b"25")
    assert [type(step).__name__ for step in steps[3:]] == ["StartTLS", "Close", "ExpectClose"]
    assert script("C: QUIT\nS: 221 bye", role="client") == [
        Send(b"QUIT\r\n"),
        Expect(b"221 bye"),
    ]
    with pytest.raises(ValueError):
        script("X: nonsense")


def test_a_scripted_client_against_a_scripted_server() -> None:
    with ScriptedServer(script("S: 220 hi\nC: NOOP\nS: 250 ok\n-- close")) as server:
        ScriptedClient(
            server.host, server.port, script("S: 220 hi\nC: NOOP\nS: 250 ok", role="client")
        ).run()
    with ScriptedServer(script("S: 220 hi\nC: NOOP\nS: 250 ok\n-- close")) as server:
        client = ScriptedClient(
            server.host, server.port, script("S: 220 hi\nC: NOOP\nS: 251 ok", role="client")
        )
        with pytest.raises(ScriptMismatch, match="251"):
            client.run()


def test_a_call_step_takes_what_a_transcript_cannot_fix(adapter: str) -> None:
    head, tail = SESSION.split("C: Subject: scripted\nC:\nC: ..leading dot\nC: .\n")
    seen: list[bytes] = []

    def content(conn: ScriptedConnection) -> None:
        seen.append(conn.content())

    with ScriptedServer([*script(head), Call(content), *script(tail)]) as server:
        send(adapter, server.port)
    assert seen == [b"Subject: scripted\r\n\r\n..leading dot\r\n"]
    assert "-- Call test_a_call_step_takes_what_a_transcript_cannot_fix.<locals>.content" in (
        server.transcript
    )


def test_an_exception_in_a_call_step_is_a_departure() -> None:
    def refuse(conn: ScriptedConnection) -> None:
        assert conn.line() == b"HELO c.test", "not the HELO the test wanted"

    server = ScriptedServer([*script("S: 220 hi"), Call(refuse), *script("S: 250 never sent")])
    with (
        pytest.raises(ScriptMismatch, match="not the HELO the test wanted") as info,
        server,
        socket.create_connection((server.host, server.port)) as client,
    ):
        client.recv(100)
        client.sendall(b"EHLO c.test\r\n")
        assert client.recv(100) == b""  # the script stopped and closed
    assert "+C: 'EHLO c.test'" in str(info.value)


def test_a_call_step_reads_until_the_other_side_closes() -> None:
    server = ScriptedServer([*script("S: 220 hi"), Call(ScriptedConnection.read_to_close)])
    with server, socket.create_connection((server.host, server.port)) as client:
        client.recv(100)
        client.sendall(b"NOOP\r\nQUIT\r\npartial")
    assert server.transcript[-3:] == ["C: 'QUIT'", "C: 'partial  (no CRLF)'", "-- C closed"]


def test_every_socket_is_closed_when_the_block_ends() -> None:
    """What client tests count on: after the ``with`` block, only the file descriptors
    the client left open are open."""
    before = open_fd_count()
    steps = [*script("S: 220 hi\nC: QUIT\nS: 221 bye"), Call(ScriptedConnection.read_to_close)]
    server = ScriptedServer(steps)
    with server, socket.create_connection((server.host, server.port)) as client:
        client.sendall(b"QUIT\r\n")
        received = b""
        while not received.endswith(b"221 bye\r\n"):
            received += client.recv(100)
    assert open_fd_count() == before


def test_a_client_that_connected_and_closed_before_the_thread_took_it_is_played() -> None:
    """The connection waits in the listener's backlog: leaving the block takes it first,
    rather than close the listener under it and call it no client at all."""
    for _ in range(20):  # the race went the wrong way nearly every time
        server = ScriptedServer(script("C: HELLO\n-- expect close"))
        with server, socket.create_connection((server.host, server.port)) as client:
            client.sendall(b"HELLO\r\n")
        assert server.failure is None, server.failure


def test_a_starttls_step_without_a_context_is_a_departure_not_a_pass() -> None:
    server = ScriptedServer(script("S: 220 hi\n-- starttls\nS: 250 never"))
    with (
        pytest.raises(ScriptMismatch, match="needs ssl_context"),
        server,
        socket.create_connection((server.host, server.port)) as client,
    ):
        client.recv(100)


def test_silence_is_reported_as_silence_with_what_came_of_the_line() -> None:
    server = ScriptedServer(script("S: 220 hi\nC: QUIT\nS: 221 bye"), timeout=0.3)
    with (
        pytest.raises(ScriptMismatch, match=r"sent nothing for 0\.3 s") as info,
        server,
        socket.create_connection((server.host, server.port)) as client,
    ):
        client.recv(100)
        client.sendall(b"QUIT\n")  # a bare LF: not a line, and the client waits on
        server.done.wait(5)
    report = str(info.value)
    assert "+C: 'QUIT\\n  (no CRLF)'" in report and "closed" not in report


def test_the_script_parser_splits_lines_at_lf_only() -> None:
    """U+2028 and a bare CR are data in a line (SMTPUTF8 text, a hostile reply)."""
    assert script("S: 250 caf\u00e9\u2028ok\nS: 250 a\rb") == [
        Send("250 caf\u00e9\u2028ok\r\n".encode()),
        Send(b"250 a\rb\r\n"),
    ]
