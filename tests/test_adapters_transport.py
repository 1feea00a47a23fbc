"""The transports' writes: ``send_nowait`` takes what goes out without waiting,
``send_all`` the rest, and the peer gets every byte once, in order."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
import trio

from smtpcore.asyncio import AsyncioTransport
from smtpcore.trio import TrioTransport

LOOPBACK = "127.0.0.1"
PAYLOAD = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than a socket buffer holds


class SlowReader:
    """A peer that accepts one connection and reads it to the end in a thread."""

    def __init__(self) -> None:
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.started.wait(10)  # let the writer fill the buffers first
            while chunk := conn.recv(65536):
                self.received += chunk

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def test_asyncio_send_nowait_stops_taking_once_the_buffer_is_full() -> None:
    reader = SlowReader()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, transport = await loop.create_connection(AsyncioTransport, LOOPBACK, reader.port)
        assert transport.send_nowait(PAYLOAD) == len(PAYLOAD)  # asyncio buffers it all
        assert transport.send_nowait(b"more") == 0  # past the high-water mark: wait
        reader.started.set()
        await transport.send_all(b"more")
        await transport.aclose()
        with pytest.raises(ConnectionResetError):
            transport.send_nowait(b"late")

    asyncio.run(asyncio.wait_for(main(), 30))
    reader.close()
    assert bytes(reader.received) == PAYLOAD + b"more"


def test_trio_send_nowait_takes_what_the_kernel_takes() -> None:
    reader = SlowReader()

    async def main() -> None:
        with trio.fail_after(30):
            await exchange()

    async def exchange() -> None:
        transport = TrioTransport(await trio.open_tcp_stream(LOOPBACK, reader.port))
        sent = transport.send_nowait(PAYLOAD)
        assert 0 < sent < len(PAYLOAD)  # the kernel's buffer is full: the rest must wait
        reader.started.set()
        await transport.send_all(PAYLOAD[sent:])
        await transport.aclose()
        with pytest.raises(ConnectionResetError):
            transport.send_nowait(b"late")

    trio.run(main)
    reader.close()
    assert bytes(reader.received) == PAYLOAD


def test_trio_receive_waits_for_data_then_sees_the_end() -> None:
    with socket.create_server((LOOPBACK, 0)) as listener:
        port = listener.getsockname()[1]

        def peer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"+OK ")
                threading.Event().wait(0.05)  # the reader must wait for the rest
                conn.sendall(b"ready\r\n")

        thread = threading.Thread(target=peer, daemon=True)
        thread.start()

        async def main() -> bytes:
            with trio.fail_after(30):
                transport = TrioTransport(await trio.open_tcp_stream(LOOPBACK, port))
                received = b""
                while chunk := await transport.receive_some(65536):
                    received += chunk
                await transport.aclose()
                return received

        assert trio.run(main) == b"+OK ready\r\n"
        thread.join(10)
