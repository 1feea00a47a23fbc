"""The asyncio server runs an accepted session without a task while it only waits for
its client, and in a task of its own from the first handler hook on (issue 17,
round 3): hooks see ``asyncio.current_task()`` and may use ``asyncio.timeout``;
timeouts, graceful shutdown and TLS go on as before.
"""

from __future__ import annotations

import asyncio
import smtplib
import sys

from peers import TLSFiles
from smtpcore._asyncio_runner import SessionRunner
from smtpcore.asyncio import SMTPServer, Timeouts
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Ehlo, Helo, Lhlo, Rcpt, Reply


async def _replies(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """The last lines of ``count`` replies."""
    found: list[bytes] = []
    while len(found) < count:
        line = await asyncio.wait_for(reader.readline(), 10)
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            found.append(line.rstrip(b"\r\n"))
    return found


async def _say(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> bytes:
    writer.write(line + b"\r\n")
    return (await _replies(reader, 1))[0]


class Recording(Handler):
    """Records whether each hook ran in a task, and uses ``asyncio.timeout`` before its
    first await (which needs a task) where Python has it."""

    def __init__(self) -> None:
        self.in_a_task: dict[str, bool] = {}

    async def _note(self, hook: str) -> None:
        self.in_a_task[hook] = asyncio.current_task() is not None
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(5):
                await asyncio.sleep(0)

    async def handle_hello(self, session: Session, command: Ehlo | Helo | Lhlo) -> Reply | None:
        await self._note("hello")
        return None

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        await self._note("rcpt")
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        await self._note("message")
        return Reply(250, "kept")


def test_hooks_run_in_a_task_of_the_session() -> None:
    handler = Recording()

    async def body() -> None:
        async with SMTPServer(handler, hostname="mx.test") as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert (await _replies(reader, 1))[0].startswith(b"220")
            assert (await _say(reader, writer, b"EHLO c.test")).startswith(b"250")
            assert (await _say(reader, writer, b"MAIL FROM:<a@abc.example>")).startswith(b"250")
            assert (await _say(reader, writer, b"RCPT TO:<b@pqr.example>")).startswith(b"250")
            assert (await _say(reader, writer, b"DATA")).startswith(b"354")
            assert await _say(reader, writer, b"Subject: x\r\n\r\nbody\r\n.") == b"250 2.0.0 kept"
            assert (await _say(reader, writer, b"QUIT")).startswith(b"221")
            writer.close()

    asyncio.run(body())
    assert handler.in_a_task == {"hello": True, "rcpt": True, "message": True}


def test_a_session_that_calls_no_hook_has_no_task_and_still_times_out() -> None:
    async def body() -> tuple[int, int, list[bytes]]:
        timeouts = Timeouts(command=0.3)
        async with SMTPServer(Handler(), hostname="mx.test", timeouts=timeouts) as server:
            before = len(asyncio.all_tasks())
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            greeting = await _replies(reader, 1)
            assert (await _say(reader, writer, b"EHLO c.test")).startswith(b"250")
            during = len(asyncio.all_tasks())
            # Idle past the command timeout: the session answers 421 and closes.
            last = await _replies(reader, 1)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            return before, during, greeting + last

    before, during, replies = asyncio.run(body())
    assert during == before  # no task for the session
    assert replies[0].startswith(b"220") and replies[1].startswith(b"421 4.4.2")


def test_graceful_shutdown_says_goodbye_to_an_idle_session_without_a_task() -> None:
    async def body() -> list[bytes]:
        server = SMTPServer(Handler(), hostname="mx.test")
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await _replies(reader, 1)
        assert (await _say(reader, writer, b"EHLO c.test")).startswith(b"250")
        await server.aclose(grace=5)
        last = await _replies(reader, 1)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert server.active_sessions == 0
        return last

    assert asyncio.run(body())[0].startswith(b"421 4.3.2")


class Stalling(Handler):
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        self.started.set()
        await asyncio.sleep(30)
        return Reply(250, "OK")


def test_shutdown_cuts_off_a_session_in_a_hook_after_the_grace_period() -> None:
    async def body() -> bytes:
        handler = Stalling()
        server = SMTPServer(handler, hostname="mx.test")
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await _replies(reader, 1)
        for line in (b"EHLO c.test", b"MAIL FROM:<a@abc.example>"):
            assert (await _say(reader, writer, line)).startswith(b"250")
        writer.write(b"RCPT TO:<b@pqr.example>\r\n")
        await asyncio.wait_for(handler.started.wait(), 10)
        await asyncio.wait_for(server.aclose(grace=0.2), 10)
        assert server.active_sessions == 0
        rest = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return rest

    # Cut off in the hook, it still says why it closes (RFC 5321 §3.8).
    assert asyncio.run(body()).startswith(b"421 4.3.2 ")


def test_starttls_hands_the_session_to_a_task_and_it_goes_on(tls: TLSFiles) -> None:
    handler = Recording()

    def client(port: int) -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.starttls(context=tls.client_context)
            code, _ = smtp.ehlo()
            return code

    async def body() -> int:
        context = tls.server_context
        async with SMTPServer(handler, hostname="mx.test", ssl_context=context) as server:
            return await asyncio.to_thread(client, server.port)

    assert asyncio.run(body()) == 250
    assert handler.in_a_task == {"hello": True}


def test_a_runners_timed_read_is_under_a_deadline_that_cancels_the_runner() -> None:
    """A link's ``receive_within`` over a runner (its clock's ``timed_reader``): the
    deadline cancels the runner, which passes the cancellation on, and the read ends
    in ``TimeoutError``."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ended: list[SessionRunner] = []
        runner = SessionRunner(loop, ended.append)
        never: asyncio.Future[bytes] = loop.create_future()

        async def receive(max_bytes: int) -> bytes:
            return await never

        read = runner.timed_reader(receive)
        outcome: list[str] = []

        async def session() -> None:
            try:
                await read(0.01, 10)
            except TimeoutError:
                outcome.append("timed out")

        runner.start(session())
        for _ in range(500):
            await asyncio.sleep(0.01)
            if ended:
                break
        assert outcome == ["timed out"] and ended == [runner]

    asyncio.run(main())
