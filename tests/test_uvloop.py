"""The asyncio adapter on uvloop's event loop, as on asyncio's own.

uvloop's transports have the methods of asyncio's and subclass none of its
classes, and its loop has no selector: every connection then takes the path
of asyncio's transports (``AsyncioTransport``, ``StreamTransport``) rather than
the raw socket. Each scenario runs on both loops, server and client in one
loop: the SMTP server and client over TCP with STARTTLS and with TLS from the
connect, over a stream pair and over a Unix socket, a client's read that times
out, and POP3 with STLS.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from peers import TLSFiles, free_port, missing_peer, write_maildir
from smtpcore.asyncio import (
    AsyncioTransport,
    POP3Client,
    POP3Server,
    SMTPClient,
    SMTPServer,
    SMTPTimeout,
    Timeouts,
)
from smtpcore.maildrop import MaildirStore
from smtpcore.testing import CollectingHandler

MESSAGE = b"Subject: on uvloop\r\n\r\n.a line that starts with a dot\r\nand one more\r\n"


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest) -> LoopFactory:
    """What makes a new event loop of each kind in turn."""
    if request.param == "asyncio":
        return asyncio.new_event_loop
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        missing_peer("uvloop is not installed (the test extra installs it)")
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(factory: LoopFactory, main: Callable[[], Awaitable[Any]]) -> Any:
    """``main()`` to its end on a new loop from ``factory``, within 30 seconds."""
    loop = factory()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 30))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def send_one(client: SMTPClient) -> bool:
    """Send ``MESSAGE`` to one recipient; whether the session was under TLS."""
    async with client:
        result = await client.send_message(MESSAGE, "alice@abc.example", ["bob@pqr.example"])
        assert [r.recipient.local_part for r in result.delivered] == ["bob"]
        return client.connection.tls


def test_smtp_over_tcp_with_starttls_and_with_tls_from_the_connect(
    loop_factory: LoopFactory, tls: TLSFiles
) -> None:
    keep = CollectingHandler()

    async def main() -> None:
        async with SMTPServer(
            keep, "127.0.0.1", 0, hostname="mx.test", ssl_context=tls.server_context
        ) as server:
            client = SMTPClient("127.0.0.1", server.port, ssl_context=tls.client_context)
            assert await send_one(client)  # STARTTLS was offered, so it was used
            assert not await send_one(SMTPClient("127.0.0.1", server.port, starttls=False))
        async with SMTPServer(
            keep,
            "127.0.0.1",
            0,
            hostname="mx.test",
            ssl_context=tls.server_context,
            tls_on_connect=True,
        ) as server:
            client = SMTPClient(
                "127.0.0.1", server.port, ssl_context=tls.client_context, tls_on_connect=True
            )
            assert await send_one(client)

    run(loop_factory, main)
    assert [envelope.content for envelope in keep.messages] == [MESSAGE] * 3


def test_smtp_over_a_stream_pair_with_starttls(loop_factory: LoopFactory, tls: TLSFiles) -> None:
    keep = CollectingHandler()

    async def main() -> None:
        server = SMTPServer(keep, hostname="mx.test", ssl_context=tls.server_context)
        listener = await asyncio.start_server(server.serve_stream, "127.0.0.1", 0)
        async with listener:
            port = listener.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            client = SMTPClient.over_stream(
                reader, writer, host="localhost", ssl_context=tls.client_context
            )
            assert await send_one(client)

    run(loop_factory, main)
    assert [envelope.content for envelope in keep.messages] == [MESSAGE]


def test_smtp_client_over_a_unix_socket(loop_factory: LoopFactory, tmp_path: Path) -> None:
    keep = CollectingHandler()
    path = tmp_path / "smtp.sock"

    async def main() -> None:
        server = SMTPServer(keep, hostname="mx.test")
        listener = await asyncio.start_unix_server(server.serve_stream, path)
        async with listener:
            assert not await send_one(SMTPClient.over_unix_socket(path))

    run(loop_factory, main)
    assert [envelope.content for envelope in keep.messages] == [MESSAGE]


def test_a_client_whose_server_never_greets_times_out(
    loop_factory: LoopFactory,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    async def main() -> None:
        listener = await asyncio.start_server(silent, "127.0.0.1", 0)
        async with listener:
            port = listener.sockets[0].getsockname()[1]
            client = SMTPClient("127.0.0.1", port, timeouts=Timeouts(greeting=0.2))
            with pytest.raises(SMTPTimeout):
                async with client:
                    pass

    run(loop_factory, main)


def test_pop3_with_stls(loop_factory: LoopFactory, tls: TLSFiles, tmp_path: Path) -> None:
    write_maildir(tmp_path / "mail" / "alice", [MESSAGE, b"Subject: two\r\n\r\nsecond\r\n"])
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})

    async def main() -> None:
        async with (
            POP3Server(
                store, "127.0.0.1", 0, hostname="pop.test", ssl_context=tls.server_context
            ) as server,
            POP3Client("127.0.0.1", server.port, ssl_context=tls.client_context) as client,
        ):
            assert client.tls
            await client.login("alice", "wonderland")
            assert (await client.stat())[0] == 2
            assert await client.retrieve(1) == MESSAGE

    run(loop_factory, main)


def test_a_tls_client_close_sends_what_is_queued_and_its_close_notify(
    loop_factory: LoopFactory, tls: TLSFiles
) -> None:
    """A client's TLS close does not wait for the server's close_notify, and loses
    nothing on its way: on uvloop, whose TCP transport is no
    ``asyncio.WriteTransport``, bytes it still queued were not seen, and the close
    aborted the connection, dropping them and the close_notify. Order of events: the
    server reads nothing until the client's close has begun, then gets every byte
    and the close_notify."""
    size = 48 << 10  # under the high-water marks: all of it queued, none paused
    listener = socket.create_server(("127.0.0.1", free_port()))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    closing = threading.Event()
    received: list[object] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(20)
        with tls.server_context.wrap_socket(conn, server_side=True) as session:
            closing.wait(20)
            got = 0
            try:
                while chunk := session.recv(65536):
                    got += len(chunk)
                received.extend([got, "close_notify"])
            except (OSError, ssl.SSLError) as exc:
                received.extend([got, type(exc).__name__])

    async def client() -> None:
        loop = asyncio.get_running_loop()
        port = listener.getsockname()[1]
        tcp, transport = await loop.create_connection(AsyncioTransport, "127.0.0.1", port)
        tcp.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await transport.start_tls(
            tls.client_context, server_side=False, server_hostname="localhost"
        )
        transport.send_nowait(b"x" * size)
        close = asyncio.ensure_future(transport.aclose())
        await asyncio.sleep(0)  # the close has begun: whatever it drops is dropped
        closing.set()
        await close

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        run(loop_factory, client)
    finally:
        closing.set()
        server.join(20)
        listener.close()
    assert received == [size, "close_notify"]
