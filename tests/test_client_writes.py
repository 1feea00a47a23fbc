"""What the SMTP clients write for a message, write by write (issue 17).

Each write is a system call and, without PIPELINING, a round trip: with
PIPELINING a message is MAIL, RCPT and DATA in one write and the content
with its end in the next (RFC 2920 §3.1); without, one write per command and
the content with its end in one. No RSET goes before a message unless the
one before it failed (a finished transaction leaves nothing to reset).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
import trio

from smtpcore.asyncio import SMTPClient as AsyncioClient
from smtpcore.asyncio import StreamTransport
from smtpcore.handler import TLSInfo
from smtpcore.testing import Call, ScriptedConnection, ScriptedServer, Step, script
from smtpcore.transport import Transport
from smtpcore.trio import SMTPClient as TrioClient
from smtpcore.trio import TrioTransport
from test_client_errors import GREET, PIPELINED

MESSAGE = b"Subject: writes\r\n\r\n.a line that starts with a dot\r\nbody\r\n"
WIRE_CONTENT = b"Subject: writes\r\n\r\n..a line that starts with a dot\r\nbody\r\n.\r\n"


class Recording:
    """A transport that keeps each write it passes on, as it was given."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)

    async def start_tls(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        raise AssertionError("no TLS here")

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return self.inner.peer_address

    @property
    def local_address(self) -> tuple[str, int] | None:
        return self.inner.local_address

    @property
    def tls(self) -> TLSInfo | None:
        return None


#: MAIL, RCPT and DATA: all three at once and their replies (PIPELINING), or in turn.
TRANSACTION = {
    True: PIPELINED,
    False: """
C: MAIL FROM:<a@abc.example>
S: 250 2.1.0 ok
C: RCPT TO:<bob@pqr.example>
S: 250 2.1.5 ok
C: DATA
S: 354 go
""",
}


def two_messages(*, pipelining: bool) -> list[Step]:
    steps = script(GREET if pipelining else GREET.replace("S: 250-PIPELINING\n", ""))
    for _ in range(2):
        steps += script(TRANSACTION[pipelining])
        steps += [Call(ScriptedConnection.content), *script("S: 250 2.0.0 queued")]
    return steps + script("C: QUIT\nS: 221 bye")


async def send_two(client: Any) -> None:
    async with client:
        for _ in range(2):
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")


def writes_of(adapter: str, pipelining: bool) -> list[bytes]:
    """The client's writes after its EHLO and before its QUIT, for two messages."""
    with ScriptedServer(two_messages(pipelining=pipelining)) as server:
        if adapter == "asyncio":

            async def on_asyncio() -> Recording:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                recording = Recording(StreamTransport(reader, writer))
                await send_two(AsyncioClient.over_transport(recording, hostname="c.test"))
                return recording

            recording = asyncio.run(on_asyncio())
        else:

            async def on_trio() -> Recording:
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                recording = Recording(TrioTransport(stream))
                await send_two(TrioClient.over_transport(recording, hostname="c.test"))
                return recording

            recording = trio.run(on_trio)
    hello, *message_writes, goodbye = recording.writes
    assert hello == b"EHLO c.test\r\n" and goodbye == b"QUIT\r\n"
    return message_writes


COMMANDS = [b"MAIL FROM:<a@abc.example>\r\n", b"RCPT TO:<bob@pqr.example>\r\n", b"DATA\r\n"]


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_with_pipelining_a_message_is_two_writes(adapter: str) -> None:
    assert writes_of(adapter, pipelining=True) == [b"".join(COMMANDS), WIRE_CONTENT] * 2


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_without_pipelining_one_write_a_command_and_one_for_the_content(adapter: str) -> None:
    assert writes_of(adapter, pipelining=False) == [*COMMANDS, WIRE_CONTENT] * 2
