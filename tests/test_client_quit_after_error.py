"""The QUIT an SMTP client says when its block is left by an exception.

RFC 5321 §4.1.1.10 asks for QUIT before the close even after an error reply, so
the block says it while the session stands between commands. That QUIT is a
courtesy: nothing that happens during it (an outer deadline or cancellation, an
error of the caller's trace callback) may replace the exception the block was
left by, and it holds the session as any other call does. Where the session does
not stand between commands (inside a message's content, DATA or a BDAT chunk
sequence) the connection is only closed, whatever the exception.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from peers import module, run
from smtpcore import LocalProtocolError
from smtpcore.testing import Call, ScriptedConnection, ScriptedServer, script

MESSAGE = b"Subject: x\r\n\r\nbody\r\n"

GREET = """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250-scripted.test
S: 250-PIPELINING
S: 250 ENHANCEDSTATUSCODES
"""
#: A transaction whose only recipient is refused (the pipelined DATA with it).
RCPT_REFUSED = (
    GREET
    + """
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<bob@pqr.example>
C: DATA
S: 250 2.1.0 ok
S: 550 5.1.1 no such user
S: 554 5.5.1 no valid recipients
"""
)
#: A server that answers nothing more: the QUIT after the refusal waits.
SILENT = Call(ScriptedConnection.read_to_close)
QUIT = "C: QUIT\nS: 221 2.0.0 bye\n"


def said_quit(server: ScriptedServer) -> bool:
    return any("QUIT" in line for line in server.transcript)


async def send_refused(mod: Any, port: int, **options: Any) -> None:
    """A block left by the server's refusal of the only recipient."""
    async with mod.SMTPClient("127.0.0.1", port, **options) as client:
        await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")


# -- what happens during the QUIT does not replace the refusal --------------------


def test_an_asyncio_deadline_during_the_quit_lets_the_refusal_out() -> None:
    """asyncio's deadline fires while the QUIT waits on a silent server: the
    connection is closed and the permanent refusal comes out (not a retryable
    TimeoutError), within the deadline."""
    mod = module("asyncio")

    async def go(port: int) -> None:
        with pytest.raises(mod.RecipientsRefused):
            await asyncio.wait_for(send_refused(mod, port, timeouts=mod.Timeouts(quit=30)), 0.5)

    with ScriptedServer([*script(RCPT_REFUSED), SILENT]) as server:
        began = time.monotonic()
        asyncio.run(go(server.port))
        assert time.monotonic() - began < 3
    assert said_quit(server)


if sys.version_info >= (3, 11):  # asyncio.timeout, TaskGroup, Task.cancelling

    def test_an_asyncio_timeout_scope_during_the_quit_lets_the_refusal_out() -> None:
        """``asyncio.timeout`` fires during the QUIT: the refusal comes out of the
        scope, which takes its cancellation back (the task's count is 0 again)."""
        mod = module("asyncio")

        async def go(port: int) -> int:
            with pytest.raises(mod.RecipientsRefused):
                async with asyncio.timeout(0.5):
                    await send_refused(mod, port, timeouts=mod.Timeouts(quit=30))
            task = asyncio.current_task()
            assert task is not None
            return task.cancelling()

        with ScriptedServer([*script(RCPT_REFUSED), SILENT]) as server:
            began = time.monotonic()
            assert asyncio.run(go(server.port)) == 0
            assert time.monotonic() - began < 3
        assert said_quit(server)

    def test_a_taskgroup_cancelling_the_quit_reports_the_refusal() -> None:
        """A sibling's failure cancels the task in its QUIT: the task ends by its own
        refusal, which the group reports beside the sibling's error."""
        mod = module("asyncio")

        async def sibling() -> None:
            await asyncio.sleep(0.5)
            raise KeyError("sibling")

        async def go(port: int) -> None:
            async with asyncio.TaskGroup() as group:
                group.create_task(send_refused(mod, port, timeouts=mod.Timeouts(quit=30)))
                group.create_task(sibling())

        with (
            ScriptedServer([*script(RCPT_REFUSED), SILENT]) as server,
            pytest.raises(Exception) as caught,  # an ExceptionGroup
        ):
            asyncio.run(go(server.port))
        kinds = {type(exc) for exc in getattr(caught.value, "exceptions", ())}
        assert kinds == {KeyError, mod.RecipientsRefused}


def test_a_trio_deadline_during_the_quit_lets_the_refusal_out() -> None:
    """trio.fail_after fires while the QUIT waits: the refusal comes out, not
    TooSlowError, within the deadline; the scope did not catch its Cancelled."""
    mod = module("trio")

    async def go(port: int) -> None:
        with pytest.raises(mod.RecipientsRefused), trio.CancelScope() as scope:
            scope.deadline = trio.current_time() + 0.5
            await send_refused(mod, port, timeouts=mod.Timeouts(quit=30))
        assert scope.cancel_called and not scope.cancelled_caught
        await trio.lowlevel.checkpoint()  # the scope's cancellation ended with it

    with ScriptedServer([*script(RCPT_REFUSED), SILENT]) as server:
        began = time.monotonic()
        trio.run(go, server.port)
        assert time.monotonic() - began < 3
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


# -- the QUIT holds the session -----------------------------------------------


def test_a_call_during_the_quit_after_an_error_is_refused_as_busy(adapter: str) -> None:
    """The block's QUIT is a call on the session like any other: another task's
    call while it waits for the 221 is refused at once, and the QUIT is answered."""
    mod = module(adapter)
    refused: list[BaseException] = []

    def slow_bye(conn: ScriptedConnection) -> None:
        time.sleep(0.5)
        conn.send(b"221 2.0.0 bye\r\n")
        conn.read_to_close()

    async def block(client: Any) -> None:
        with pytest.raises(ValueError):
            async with client:
                raise ValueError("the caller's own")

    async def other(client: Any) -> None:
        await (asyncio.sleep(0.2) if adapter == "asyncio" else trio.sleep(0.2))
        with pytest.raises(LocalProtocolError) as caught:
            await client.noop()
        refused.append(caught.value)

    async def go(port: int) -> None:
        client = mod.SMTPClient("127.0.0.1", port)
        if adapter == "asyncio":
            await asyncio.gather(block(client), other(client))
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(block, client)
                nursery.start_soon(other, client)

    with ScriptedServer([*script(GREET + "C: QUIT\n"), Call(slow_bye)]) as server:
        run(adapter, lambda: go(server.port))
    assert "another call is in progress" in str(refused[0])
    assert "S: '221 2.0.0 bye'" in server.transcript


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
