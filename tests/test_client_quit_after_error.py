"""The QUIT an SMTP client says when its block is left by an exception.

RFC 5321 §4.1.1.10 asks for QUIT before the close even after an error reply, so
the block says it while the session stands between commands. That QUIT is a
courtesy, written without waiting for its reply: nothing that happens then (an
error of the caller's trace callback) may replace the exception the block was
left by, and no outer deadline or cancellation finds it waiting. Where the session does
not stand between commands (inside a message's content, DATA or a BDAT chunk
sequence) the connection is only closed, whatever the exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from peers import module, run
from smtpcore import LocalProtocolError
from smtpcore.testing import Call, ScriptedConnection, ScriptedServer, script
from test_client_errors import QUIT, RCPT_REFUSED

MESSAGE = b"Subject: x\r\n\r\nbody\r\n"

#: A server that answers nothing more: a QUIT that waited for its 221 would hang.
SILENT = Call(ScriptedConnection.read_to_close)


def said_quit(server: ScriptedServer) -> bool:
    return any("QUIT" in line for line in server.transcript)


async def send_refused(mod: Any, port: int, **options: Any) -> None:
    """A block left by the server's refusal of the only recipient."""
    async with mod.SMTPClient("127.0.0.1", port, **options) as client:
        await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")


# -- the QUIT waits for nothing, so nothing can replace the refusal ------------------


def test_the_quit_after_a_refusal_waits_for_no_reply(adapter: str) -> None:
    """QUIT is written and the connection closed, the 221 not awaited (a SHOULD of
    RFC 5321 §4.1.1.10): against a server that never answers it, the refusal comes
    out at once, not after the 30-s QUIT timeout."""
    mod = module(adapter)
    with (
        ScriptedServer([*script(RCPT_REFUSED), SILENT]) as server,
        pytest.raises(mod.RecipientsRefused),
    ):
        began = time.monotonic()
        try:
            run(adapter, lambda: send_refused(mod, server.port, timeouts=mod.Timeouts(quit=30)))
        finally:
            assert time.monotonic() - began < 3
    assert said_quit(server)


def test_an_asyncio_deadline_around_the_block_sees_the_refusal() -> None:
    """An outer deadline that has not fired yet is not reached: the permanent
    refusal comes out, never a retryable TimeoutError."""
    mod = module("asyncio")

    async def go(port: int) -> None:
        with pytest.raises(mod.RecipientsRefused):
            await asyncio.wait_for(send_refused(mod, port, timeouts=mod.Timeouts(quit=30)), 2)

    with ScriptedServer([*script(RCPT_REFUSED), SILENT]) as server:
        asyncio.run(go(server.port))
    assert said_quit(server)


def test_a_trio_deadline_around_the_block_sees_the_refusal() -> None:
    """The same with a trio cancel scope: the refusal comes out and the scope's
    deadline is not reached."""
    mod = module("trio")

    async def go(port: int) -> None:
        with pytest.raises(mod.RecipientsRefused), trio.fail_after(2):
            await send_refused(mod, port, timeouts=mod.Timeouts(quit=30))

    with ScriptedServer([*script(RCPT_REFUSED), SILENT]) as server:
        trio.run(go, server.port)
    assert said_quit(server)


def test_a_trace_callback_failing_on_the_quit_lets_the_refusal_out(adapter: str) -> None:
    """The caller's trace callback raising on the QUIT line: the connection is
    closed and the refusal, not the callback's error, comes out."""
    mod = module(adapter)

    def trace(direction: str, line: str) -> None:
        if line == "QUIT":
            raise OSError("log file closed")

    with (
        ScriptedServer([*script(RCPT_REFUSED), SILENT]) as server,
        pytest.raises(mod.RecipientsRefused),
    ):
        run(adapter, lambda: send_refused(mod, server.port, trace=trace))


def test_a_keyboard_interrupt_during_the_quit_propagates_as_itself(adapter: str) -> None:
    """KeyboardInterrupt asks the process to stop, not the session: it is not
    swallowed in favour of the refusal. The connection is closed all the same."""
    mod = module(adapter)
    clients: list[Any] = []

    def trace(direction: str, line: str) -> None:
        if line == "QUIT":
            raise KeyboardInterrupt

    async def go(port: int) -> None:
        clients.append(mod.SMTPClient("127.0.0.1", port, trace=trace))
        async with clients[0] as client:
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")

    with (
        ScriptedServer([*script(RCPT_REFUSED), SILENT]) as server,
        pytest.raises(KeyboardInterrupt),
    ):
        run(adapter, lambda: go(server.port))
    assert clients[0]._transport is None


# -- the machine's state decides, not the exception's type ------------------------

LIMITED = """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250-scripted.test
S: 250-PIPELINING
S: 250 LIMITS RCPTMAX=1
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<b1@pqr.example>
C: DATA
S: 250 ok
S: 250 ok
S: 354 go
C: Subject: x
C:
C: body
C: .
S: 250 queued
"""


def test_an_on_batch_failing_between_transactions_gets_quit(adapter: str) -> None:
    """``on_batch`` runs between two LIMITS transactions, where the session stands
    between commands: its error leaves the session usable, and the block says QUIT."""
    mod = module(adapter)

    async def on_batch(result: object) -> None:
        raise ValueError("the caller's on_batch")

    async def go(port: int) -> None:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            await client.send_message(
                MESSAGE, "a@abc.example", ["b1@pqr.example", "b2@pqr.example"], on_batch=on_batch
            )

    with ScriptedServer(script(LIMITED + QUIT)) as server, pytest.raises(ValueError):
        run(adapter, lambda: go(server.port))


CHUNKED = """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250-scripted.test
S: 250-CHUNKING
S: 250 PIPELINING
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<bob@pqr.example>
S: 250 ok
S: 250 ok
C: BDAT 25
C: Subject: x
C: yyyyyyyyyyy
S: 250 chunk ok
"""


@pytest.mark.parametrize("error", [ValueError, LocalProtocolError])
def test_content_failing_between_bdat_chunks_only_closes(
    adapter: str, error: type[Exception]
) -> None:
    """A content source failing between two BDAT chunks leaves the message half
    sent, whatever it raises: the connection is closed, without LAST and without
    QUIT, as in DATA, so that nothing of the message is delivered."""
    mod = module(adapter)

    async def content() -> AsyncIterator[bytes]:
        yield b"Subject: x\r\nyyyyyyyyyyy\r\n"  # 25 octets: one chunk
        yield b"z" * 23 + b"\r\n"
        raise error("the caller's content failed")

    async def go(port: int) -> None:
        async with mod.SMTPClient("127.0.0.1", port, chunk_size=25) as client:
            await client.send_message(content(), "a@abc.example", "bob@pqr.example")

    with ScriptedServer([*script(CHUNKED), SILENT]) as server, pytest.raises(error):
        run(adapter, lambda: go(server.port))
    assert not said_quit(server)
    assert not [line for line in server.transcript if "LAST" in line]
