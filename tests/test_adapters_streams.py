"""Sessions over the frameworks' own streams and over Unix sockets (issue 15 items 1, 3).

The trio adapter serves and connects over any ``trio.abc.Stream`` (a memory
stream pair here, a socket pair, a Unix socket); the asyncio adapter over
any ``(StreamReader, StreamWriter)`` pair. Timeouts, STARTTLS and the
session limit behave as on TCP.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import smtpcore.asyncio as smtp_asyncio
import smtpcore.trio as smtp_trio
from peers import TLSFiles, run, write_maildir
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.maildrop import MaildirStore
from smtpcore.smtp import Rcpt, Reply

MESSAGE = b"Subject: over a stream\r\n\r\n.a dotted line\r\nbye\r\n"


class Keeping(Handler):
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.tls: list[bool] = []

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope.content)
        self.tls.append(session.tls is not None)
        return None


def client_options(tls: TLSFiles | None) -> dict[str, Any]:
    options: dict[str, Any] = {"hostname": "client.test", "host": "mx.test"}
    if tls is not None:
        options.update(starttls=True, ssl_context=tls.client_context)
    return options


def server_options(tls: TLSFiles | None, **more: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"hostname": "mx.test", **more}
    if tls is not None:
        options["ssl_context"] = tls.server_context
    return options


# -- trio ----------------------------------------------------------------------------


async def trio_exchange(
    handler: Keeping,
    pair: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]],
    tls: TLSFiles | None,
) -> None:
    server = smtp_trio.SMTPServer(handler, **server_options(tls))
    server_end, client_end = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, server_end)
        client = smtp_trio.SMTPClient.over_stream(client_end, **client_options(tls))
        async with client:
            await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
    assert server.active_sessions == 0


def trio_socket_pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    a, b = socket.socketpair()
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )


@pytest.mark.parametrize("with_tls", [False, True], ids=["plain", "starttls"])
@pytest.mark.parametrize(
    "pair",
    [trio.testing.memory_stream_pair, trio.testing.lockstep_stream_pair, trio_socket_pair],
    ids=["memory", "lockstep", "socketpair"],
)
def test_trio_session_over_a_stream(
    pair: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]], with_tls: bool, tls: TLSFiles
) -> None:
    handler = Keeping()
    trio.run(trio_exchange, handler, pair, tls if with_tls else None)
    assert handler.messages == [MESSAGE] and handler.tls == [with_tls]


def test_trio_timeout_over_a_memory_stream() -> None:
    async def body() -> bytes:
        server = smtp_trio.SMTPServer(
            Keeping(), hostname="mx.test", timeouts=smtp_trio.Timeouts(command=0.2)
        )
        server_end, client_end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, server_end)
            received = b""
            with trio.fail_after(10):
                while chunk := await client_end.receive_some():
                    received += chunk
        return received

    received = trio.run(body)
    assert received.startswith(b"220 ") and b"\r\n421 4.4.2 " in received


def test_trio_stream_sessions_count_toward_the_limit() -> None:
    async def body() -> bytes:
        server = smtp_trio.SMTPServer(Keeping(), hostname="mx.test", max_sessions=1)
        first, _first_client = trio.testing.memory_stream_pair()
        second, second_client = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, first)
            await trio.testing.wait_all_tasks_blocked()
            await server.serve_stream(second)
            refused = await second_client.receive_some()
            nursery.cancel_scope.cancel()
        return bytes(refused)

    assert trio.run(body).startswith(b"421 4.7.0")


# -- asyncio ---------------------------------------------------------------------------


async def asyncio_pair() -> tuple[
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
]:
    a, b = socket.socketpair()
    return await asyncio.open_connection(sock=a), await asyncio.open_connection(sock=b)


@pytest.mark.parametrize("with_tls", [False, True], ids=["plain", "starttls"])
def test_asyncio_session_over_a_stream_pair(with_tls: bool, tls: TLSFiles) -> None:
    handler = Keeping()

    async def body() -> None:
        server = smtp_asyncio.SMTPServer(handler, **server_options(tls if with_tls else None))
        (server_reader, server_writer), (reader, writer) = await asyncio_pair()
        serving = asyncio.ensure_future(server.serve_stream(server_reader, server_writer))
        options = client_options(tls if with_tls else None)
        async with smtp_asyncio.SMTPClient.over_stream(reader, writer, **options) as client:
            await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
        await asyncio.wait_for(serving, 10)
        assert server.active_sessions == 0

    asyncio.run(body())
    assert handler.messages == [MESSAGE] and handler.tls == [with_tls]


def test_asyncio_timeout_over_a_stream_pair() -> None:
    async def body() -> bytes:
        server = smtp_asyncio.SMTPServer(
            Keeping(), hostname="mx.test", timeouts=smtp_asyncio.Timeouts(command=0.2)
        )
        (server_reader, server_writer), (reader, writer) = await asyncio_pair()
        serving = asyncio.ensure_future(server.serve_stream(server_reader, server_writer))
        received = await asyncio.wait_for(reader.read(), 10)
        await serving
        writer.close()
        return received

    received = asyncio.run(body())
    assert received.startswith(b"220 ") and b"\r\n421 4.4.2 " in received


# -- Unix sockets, both adapters ----------------------------------------------------------


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_lmtp_on_a_unix_socket(adapter: str, tmp_path: Path) -> None:
    module: Any = smtp_asyncio if adapter == "asyncio" else smtp_trio
    handler = Keeping()
    path = tmp_path / "lmtp.sock"

    async def body() -> None:
        async with module.SMTPServer(handler, hostname="mx.test", unix_path=path, lmtp=True):
            assert path.is_socket()
            client = module.SMTPClient.over_unix_socket(path, hostname="client.test", lmtp=True)
            async with client:
                result = await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
            assert not result.refused
        assert not path.exists()  # removed when the server closed

    run(adapter, body)
    assert handler.messages == [MESSAGE]


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_pop3_over_a_unix_socket(adapter: str, tmp_path: Path) -> None:
    module: Any = smtp_asyncio if adapter == "asyncio" else smtp_trio
    write_maildir(tmp_path / "mail" / "alice", [MESSAGE])
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})
    path = tmp_path / "pop3.sock"
    fetched: list[bytes] = []

    async def body() -> None:
        async with (
            module.POP3Server(store, hostname="pop.test", unix_path=path),
            module.POP3Client.over_unix_socket(path) as client,
        ):
            await client.login("alice", "wonderland")
            fetched.append(await client.retrieve(1))

    run(adapter, body)
    assert fetched == [MESSAGE]


def test_asyncio_start_unix_server_with_serve_stream(tmp_path: Path) -> None:
    handler = Keeping()
    path = str(tmp_path / "smtp.sock")

    async def body() -> None:
        server = smtp_asyncio.SMTPServer(handler, hostname="mx.test")
        listener = await asyncio.start_unix_server(server.serve_stream, path)
        async with listener:
            reader, writer = await asyncio.open_unix_connection(path)
            async with smtp_asyncio.SMTPClient.over_stream(reader, writer) as client:
                await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])

    asyncio.run(body())
    assert handler.messages == [MESSAGE]


def test_trio_pop3_over_a_memory_stream(tmp_path: Path) -> None:
    write_maildir(tmp_path / "mail" / "alice", [MESSAGE])
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})
    fetched: list[bytes] = []

    async def body() -> None:
        server = smtp_trio.POP3Server(store, hostname="pop.test")
        server_end, client_end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, server_end)
            async with smtp_trio.POP3Client.over_stream(client_end) as client:
                await client.login("alice", "wonderland")
                fetched.append(await client.retrieve(1))

    trio.run(body)
    assert fetched == [MESSAGE]
