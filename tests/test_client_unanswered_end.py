"""``unanswered_end``, the public word on who a message may have reached when a
session stops awaiting the reply to its end of content (RFC 5321 §6.1), read from
each client as a program that cancels it (or gets a Ctrl-C) reads it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading

import pytest
import trio

import smtpcore.asyncio
import smtpcore.sync
import smtpcore.trio
from smtpcore.testing import Call, ScriptedConnection, ScriptedServer, Step, script

MESSAGE = b"Subject: x\r\n\r\nhi\r\n"
RCPTS = ["b@pqr.example", "c@pqr.example"]


def _steps(at_the_dot: threading.Event, *, interrupt: bool = False) -> list[Step]:
    """b accepted, c refused, then the content read and no reply to its end; the
    event set (and, with ``interrupt``, a Ctrl-C sent to this process) once the dot is
    in, so that nothing races the client."""

    def hold_the_reply(conn: ScriptedConnection) -> None:
        conn.content()
        at_the_dot.set()
        if interrupt:
            os.kill(os.getpid(), signal.SIGINT)
        while conn.line() is not None:
            pass

    return [
        *script("S: 220 s ESMTP\nC~ EHLO .+\nS: 250 s\nC: MAIL FROM:<a@abc.example>\nS: 250 ok"),
        *script("C: RCPT TO:<b@pqr.example>\nS: 250 ok\nC: RCPT TO:<c@pqr.example>"),
        *script("S: 550 5.1.1 no such user\nC: DATA\nS: 354 go"),
        Call(hold_the_reply),
    ]


_Client = smtpcore.asyncio.SMTPClient | smtpcore.trio.SMTPClient | smtpcore.sync.SMTPClient


def _addresses(client: _Client) -> list[str]:
    return [str(item.recipient) for item in client.unanswered_end]


def test_asyncio_client_names_who_may_have_the_message_when_cancelled() -> None:
    at_the_dot = threading.Event()
    seen: list[list[str]] = []
    with ScriptedServer(_steps(at_the_dot), timeout=30) as server:

        async def go() -> None:
            client = smtpcore.asyncio.SMTPClient("127.0.0.1", server.port, starttls=None)
            await client.connect()
            seen.append(_addresses(client))
            task = asyncio.ensure_future(client.send_message(MESSAGE, "a@abc.example", RCPTS))
            while not at_the_dot.is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            seen.append(_addresses(client))

        asyncio.run(go())
    assert seen == [[], ["b@pqr.example"]]


def test_trio_client_names_who_may_have_the_message_when_cancelled() -> None:
    at_the_dot = threading.Event()
    seen: list[list[str]] = []
    with ScriptedServer(_steps(at_the_dot), timeout=30) as server:

        async def go() -> None:
            client = smtpcore.trio.SMTPClient("127.0.0.1", server.port, starttls=None)
            await client.connect()
            seen.append(_addresses(client))
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def send() -> None:
                        await client.send_message(MESSAGE, "a@abc.example", RCPTS)

                    nursery.start_soon(send)
                    while not at_the_dot.is_set():
                        await trio.sleep(0.01)
                    scope.cancel()
            seen.append(_addresses(client))

        trio.run(go)
    assert seen == [[], ["b@pqr.example"]]


def test_sync_client_names_who_may_have_the_message_after_a_ctrl_c() -> None:
    """``smtpcore.sync.SMTPClient`` forwarded ``connection`` but not
    ``unanswered_end``, which the docs show after a blocking example: a program's
    Ctrl-C handler got an ``AttributeError``."""
    at_the_dot = threading.Event()
    with ScriptedServer(_steps(at_the_dot, interrupt=True), timeout=30) as server:
        client = smtpcore.sync.SMTPClient("127.0.0.1", server.port, starttls=None, timeout=30)
        client.connect()
        assert _addresses(client) == []
        with pytest.raises(KeyboardInterrupt):
            client.send_message(MESSAGE, "a@abc.example", RCPTS)
        addresses = _addresses(client)
        client.close()
    assert at_the_dot.is_set()
    assert addresses == ["b@pqr.example"]
