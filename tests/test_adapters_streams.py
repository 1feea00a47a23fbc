"""Sessions over the frameworks' own streams and over Unix sockets (issue 15 items 1, 3).

The trio adapter serves and connects over any ``trio.abc.Stream`` (a memory
stream pair here, a socket pair, a Unix socket); the asyncio adapter over
any ``(StreamReader, StreamWriter)`` pair. Timeouts, STARTTLS and the
session limit behave as on TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
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


def test_asyncio_starttls_over_a_stream_pair_warns_of_nothing(
    tls: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """Each STARTTLS over asyncio streams logged "returning true from eof_received()
    has no effect when using ssl" twice (asyncio's warning for the stream's protocol,
    handed to ``loop.start_tls`` as it was made for plaintext), once each side's
    peer closed."""
    caplog.set_level(logging.INFO, logger="asyncio")
    test_asyncio_session_over_a_stream_pair(True, tls)
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]


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
            module.POP3Client.over_unix_socket(path, allow_plaintext_auth=True) as client,
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
                await client.login("alice", "wonderland", apop=True)  # no TLS here
                fetched.append(await client.retrieve(1))

    trio.run(body)
    assert fetched == [MESSAGE]


# -- streams that are TLS already ------------------------------------------------------


def test_trio_streams_under_tls_from_the_start(tls: TLSFiles) -> None:
    """A ``trio.SSLStream`` given to ``serve_stream`` and to ``over_stream`` is a session
    under TLS from its first byte, as ``tls_on_connect`` makes one: STARTTLS is not
    offered, ``require_tls`` is met, and a password may go."""
    from smtpcore.handler import Authenticator

    handler = Keeping()
    auth = Authenticator(check_password=lambda user, password: password == "pw")

    async def body() -> tuple[bool, tuple[str, ...]]:
        server = smtp_trio.SMTPServer(handler, auth=auth, require_tls=True, **server_options(tls))
        server_end, client_end = trio_socket_pair()
        server_tls = trio.SSLStream(server_end, tls.server_context, server_side=True)
        client_tls = trio.SSLStream(client_end, tls.client_context, server_hostname="mx.test")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, server_tls)
            client = smtp_trio.SMTPClient.over_stream(
                client_tls, hostname="client.test", host="mx.test", username="u", password="pw"
            )
            async with client:
                offered = tuple(client.connection.extensions)
                await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
                return client.connection.tls, offered

    under_tls, offered = trio.run(body)
    assert under_tls and "STARTTLS" not in offered
    assert handler.messages == [MESSAGE] and handler.tls == [True]


def test_asyncio_streams_under_tls_from_the_start(tls: TLSFiles) -> None:
    """The same for asyncio streams opened with ``ssl=``."""
    from smtpcore.handler import Authenticator

    handler = Keeping()
    auth = Authenticator(check_password=lambda user, password: password == "pw")

    async def body() -> tuple[bool, tuple[str, ...]]:
        server = smtp_asyncio.SMTPServer(
            handler, auth=auth, require_tls=True, **server_options(tls)
        )
        listener = await asyncio.start_server(
            server.serve_stream, "127.0.0.1", 0, ssl=tls.server_context
        )
        async with listener:
            port = listener.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=tls.client_context, server_hostname="mx.test"
            )
            client = smtp_asyncio.SMTPClient.over_stream(
                reader, writer, hostname="client.test", host="mx.test", username="u", password="pw"
            )
            async with client:
                offered = tuple(client.connection.extensions)
                await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
                return client.connection.tls, offered

    under_tls, offered = asyncio.run(body())
    assert under_tls and "STARTTLS" not in offered
    assert handler.messages == [MESSAGE] and handler.tls == [True]


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
@pytest.mark.parametrize("server_side", ["untrusted", "closed"])
def test_a_trio_stream_given_under_tls_fails_its_handshake_as_starttls_does(
    tls: TLSFiles, protocol: str, server_side: str
) -> None:
    """The handshake of a ``trio.SSLStream`` given to ``over_stream`` fails as the
    client's own handshake does: a certificate the client cannot verify is its own
    refusal (``local``; RFC 3207 §4.1, RFC 2595 §2.4), a server that closes mid-way
    is not, and neither names a host and port the client never connected to."""

    async def serve(server_end: trio.abc.Stream) -> None:
        if server_side == "closed":
            await server_end.aclose()
            return
        server_tls = trio.SSLStream(server_end, tls.server_context, server_side=True)
        with contextlib.suppress(trio.BrokenResourceError):
            await server_tls.do_handshake()
        await trio.aclose_forcefully(server_tls)

    async def body() -> smtp_trio.SMTPConnectionError | smtp_trio.POP3ConnectionError:
        server_end, client_end = trio_socket_pair()
        untrusting = ssl.create_default_context()  # trusts no test CA
        client_tls = trio.SSLStream(client_end, untrusting, server_hostname="mx.test")
        client: smtp_trio.SMTPClient | smtp_trio.POP3Client = (
            smtp_trio.SMTPClient.over_stream(client_tls, hostname="client.test", host="mx.test")
            if protocol == "smtp"
            else smtp_trio.POP3Client.over_stream(client_tls, host="mx.test")
        )
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, server_end)
                try:
                    await client.connect()
                except (smtp_trio.SMTPConnectionError, smtp_trio.POP3ConnectionError) as exc:
                    return exc
        raise AssertionError("the handshake did not fail")

    error = trio.run(body)
    assert str(error).startswith("TLS handshake failed: "), error
    assert error.local is (server_side == "untrusted")


# -- shutting down a server whose sessions came as streams --------------------------------


def test_a_server_never_entered_shuts_its_stream_sessions_down(adapter: str) -> None:
    """``aclose`` gives the sessions ``serve_stream`` runs the graceful shutdown, though
    the server never listened (and was never entered)."""
    seen: list[bytes] = []

    if adapter == "trio":

        async def trio_body() -> None:
            server = smtp_trio.SMTPServer(Keeping(), hostname="mx.test")
            server_end, client_end = trio_socket_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.serve_stream, server_end)
                seen.append(bytes(await client_end.receive_some(1000)))
                await server.aclose(grace=5)
                while data := await client_end.receive_some(1000):
                    seen.append(bytes(data))
            assert server.active_sessions == 0

        trio.run(trio_body)
    else:

        async def asyncio_body() -> None:
            server = smtp_asyncio.SMTPServer(Keeping(), hostname="mx.test")
            (server_reader, server_writer), (reader, _) = await asyncio_pair()
            serving = asyncio.ensure_future(server.serve_stream(server_reader, server_writer))
            seen.append(await reader.readline())
            await asyncio.wait_for(server.aclose(grace=5), 10)
            seen.append(await reader.read())
            await asyncio.wait_for(serving, 10)
            assert server.active_sessions == 0

        asyncio.run(asyncio_body())
    replies = b"".join(seen)
    assert replies.startswith(b"220 ") and b"421 4.3.2" in replies


@pytest.mark.parametrize(
    ("protocol", "told"),
    [
        ("SMTP", b"421 4.3.2 mx.test Service shutting down\r\n"),
        ("POP3", b"-ERR [SYS/TEMP] Server shutting down\r\n"),
    ],
)
def test_a_server_never_entered_is_closed_by_aclose_as_an_entered_one(
    adapter: str, protocol: str, told: bytes, tmp_path: Path
) -> None:
    """``serve_forever`` returns once ``aclose`` has run, and a stream served after
    is told the server is shutting down, on both adapters (asyncio raised
    AttributeError from ``serve_forever``, and served a stream given after
    ``aclose``; both then said "Too many connections")."""
    mod = smtp_asyncio if adapter == "asyncio" else smtp_trio

    async def body() -> bytes:
        if protocol == "SMTP":
            server = mod.SMTPServer(Keeping(), hostname="mx.test")
        else:
            server = mod.POP3Server(MaildirStore(tmp_path, {}), hostname="pop.test")
        await server.aclose(grace=1)
        await server.serve_forever()  # closed: returns at once
        if adapter == "trio":
            server_end, client_end = trio_socket_pair()
            await server.serve_stream(server_end)
            return bytes(await client_end.receive_some(1000))
        (server_reader, server_writer), (reader, _) = await asyncio_pair()
        await asyncio.wait_for(server.serve_stream(server_reader, server_writer), 10)
        return await reader.read()

    assert run(adapter, body) == told


def test_entering_a_server_twice_is_a_clear_error(adapter: str) -> None:
    """The second ``async with`` raises ``RuntimeError`` and the first goes on (trio's
    run broke with TrioInternalError)."""
    mod = smtp_asyncio if adapter == "asyncio" else smtp_trio

    async def body() -> int:
        async with mod.SMTPServer(Keeping(), "127.0.0.1", 0, hostname="mx.test") as server:
            with pytest.raises(RuntimeError, match="once"):
                async with server:
                    pass
            sessions: int = server.active_sessions
            return sessions

    assert run(adapter, body) == 0


def test_two_acloses_at_once_both_end_when_the_sessions_do(adapter: str) -> None:
    """Neither waits out the grace period the other's wait has already seen end."""
    import time

    async def asyncio_body() -> list[float]:
        async with smtp_asyncio.SMTPServer(Keeping(), "127.0.0.1", 0, hostname="mx.test") as s:
            reader, _ = await asyncio.open_connection("127.0.0.1", s.port)
            await reader.readline()
            started = time.monotonic()

            async def close() -> float:
                await s.aclose(grace=20)
                return time.monotonic() - started

            return list(await asyncio.wait_for(asyncio.gather(close(), close()), 30))

    async def trio_body() -> list[float]:
        took: list[float] = []
        async with smtp_trio.SMTPServer(Keeping(), "127.0.0.1", 0, hostname="mx.test") as s:
            stream = await trio.open_tcp_stream("127.0.0.1", s.port)
            await stream.receive_some(1000)
            started = time.monotonic()

            async def close() -> None:
                await s.aclose(grace=20)
                took.append(time.monotonic() - started)

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(close)
                    nursery.start_soon(close)
            await stream.aclose()
        return took

    took = asyncio.run(asyncio_body()) if adapter == "asyncio" else trio.run(trio_body)
    assert len(took) == 2 and max(took) < 10, took


def test_a_closed_server_says_it_does_not_listen(adapter: str) -> None:
    module = smtp_asyncio if adapter == "asyncio" else smtp_trio

    async def body() -> list[object]:
        server = module.SMTPServer(Keeping(), "127.0.0.1", 0, hostname="mx.test")
        async with server:
            assert server.port > 0
        with pytest.raises(RuntimeError, match="not listening"):
            server.port  # noqa: B018 - the property's error is the point
        return list(server.addresses)

    assert run(adapter, body) == []


def test_a_unix_socket_that_refuses_names_its_path(adapter: str, tmp_path: Path) -> None:
    module = smtp_asyncio if adapter == "asyncio" else smtp_trio
    path = tmp_path / "nobody.sock"

    async def body() -> None:
        async with module.SMTPClient.over_unix_socket(path):
            pass

    with pytest.raises(module.SMTPConnectionError, match=r"nobody\.sock"):
        run(adapter, body)


# -- a given stream serves one session -------------------------------------------------


@pytest.mark.parametrize("protocol", ["SMTP", "POP3"])
def test_a_client_over_a_given_stream_never_opens_a_connection_of_its_own(
    adapter: str, protocol: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connecting again after the session over a given stream is refused, ``local``:
    it opened a TCP connection to ``host`` (``localhost`` port 25 or 110), taking
    mail meant for a private channel (an SSH tunnel) onto the network."""
    module: Any = smtp_asyncio if adapter == "asyncio" else smtp_trio
    client_class = getattr(module, f"{protocol}Client")
    looked_up: list[object] = []

    def no_lookup(host: object, *args: object, **kwargs: object) -> Any:
        looked_up.append(host)
        raise OSError("this test opens no connection")

    write_maildir(tmp_path / "mail" / "alice", [MESSAGE])
    if protocol == "SMTP":
        server = module.SMTPServer(Keeping(), hostname="mx.test")
    else:
        server = module.POP3Server(
            MaildirStore(tmp_path / "mail", {"alice": "wonderland"}), hostname="pop.test"
        )

    async def one_session(client: Any) -> None:
        async with client:
            if protocol == "SMTP":
                await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
            else:
                await client.login("alice", "wonderland", apop=True)  # no TLS here

    error = getattr(module, f"{protocol}ConnectionError")

    async def session_then_again(client: Any) -> None:
        await one_session(client)
        monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
        with pytest.raises(error, match="transport has been used") as raised:
            await one_session(client)
        assert raised.value.local

    async def asyncio_body() -> None:
        (server_reader, server_writer), (reader, writer) = await asyncio_pair()
        serving = asyncio.ensure_future(server.serve_stream(server_reader, server_writer))
        try:
            await session_then_again(client_class.over_stream(reader, writer))
        finally:
            await asyncio.wait_for(serving, 10)

    async def trio_body() -> None:
        server_end, client_end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, server_end)
            await session_then_again(client_class.over_stream(client_end))

    run(adapter, asyncio_body if adapter == "asyncio" else trio_body)
    assert looked_up == []
