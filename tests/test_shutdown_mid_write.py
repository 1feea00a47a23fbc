"""A session whose write is cut off part-way (the command timeout, or a shutdown's
cut-off, cancelling a ``send_all`` to a client that stopped reading) closes
without a last word: the client holds part of a reply, and a ``421`` written
after it would land inside it, mid-line (RFC 5321 §4.2: a reply is whole lines).
POP3's side (a ``RETR`` cut off) is in ``test_pop3_adapters.py``."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

import smtpcore.trio as smtp_trio
from smtpcore.handler import Handler

PART = 8
"""How much of the stalled write reaches the client: ``250 2.0.`` of ``250 2.0.0 OK``."""


class StallingStream(trio.abc.Stream):
    """One end of a memory stream pair whose next ``send_all``, once :attr:`stall` is
    set, delivers the first :data:`PART` octets and then waits for ever, as
    ``trio.SocketStream.send_all`` to a client that reads nothing does once the
    kernel's buffers are full; cancelled, it drops the rest."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.stall = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.stall:
            self.stall = False
            await self.inner.send_all(bytes(data)[:PART])
            await trio.sleep_forever()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def read_line(stream: trio.abc.Stream, buffer: bytearray) -> bytes:
    while b"\r\n" not in buffer:
        buffer += await stream.receive_some()
    line, _, rest = bytes(buffer).partition(b"\r\n")
    buffer[:] = rest
    return line


@pytest.mark.parametrize("cut_by", ["the command timeout", "a shutdown"])
def test_trio_an_smtp_write_cut_off_part_way_gets_no_421_after_its_part(cut_by: str) -> None:
    """The 421 (``4.4.2 Timeout exceeded``, ``4.3.2 Service shutting down``) went out
    right after the part of the reply the cancelled write had sent: the client read
    ``250 2.0.421 4.4.2 mx.test Timeout exceeded``. Now it reads the part, then the
    end."""
    command_timeout = 0.2 if cut_by == "the command timeout" else 60.0

    async def body() -> bytes:
        server = smtp_trio.SMTPServer(
            Handler(), hostname="mx.test", timeouts=smtp_trio.Timeouts(command=command_timeout)
        )
        server_end, client_end = trio.testing.memory_stream_pair()
        stalling = StallingStream(server_end)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, stalling)
            buffer = bytearray()
            with trio.fail_after(10):
                assert (await read_line(client_end, buffer)).startswith(b"220 ")
                await client_end.send_all(b"HELO client.test\r\n")
                assert (await read_line(client_end, buffer)).startswith(b"250 ")
                stalling.stall = True
                await client_end.send_all(b"NOOP\r\n")
                if cut_by == "a shutdown":
                    await trio.testing.wait_all_tasks_blocked()  # the write has stalled
                    nursery.start_soon(functools.partial(server.aclose, grace=0.1))
                received = bytes(buffer)
                while chunk := await client_end.receive_some():
                    received += chunk
        return received

    assert trio.run(body) == b"250 2.0."
