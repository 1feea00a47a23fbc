"""A shutdown that cuts off a session in the middle of its STARTTLS (or STLS)
handshake closes it without a word (RFC 3207 §4: after the ``220`` no plaintext
SMTP until the handshake succeeds; an aborted negotiation ends in a close)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from peers import TLSFiles, running_pop3_server, running_smtp_server, write_maildir
from smtpcore.asyncio import AsyncioTransport, StreamTransport
from smtpcore.handler import Handler
from smtpcore.maildrop import MaildirStore
from smtpcore.trio import TrioTransport


def client_hello(tls: TLSFiles) -> tuple[ssl.SSLObject, ssl.MemoryBIO, bytes]:
    """A client's TLS object, the buffer its records from the server go into, and
    its ClientHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = tls.client_context.wrap_bio(incoming, outgoing, server_hostname="mx.test")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return client, incoming, outgoing.read()


def read_to_the_end(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize("hello", ["its first 3 bytes", "all of it"])
def test_trio_a_cancelled_handshake_leaves_no_plaintext_way_to_the_peer(
    tls: TLSFiles, hello: str
) -> None:
    """A ``TrioTransport`` whose server-side handshake is cancelled (the client sent
    part of its ClientHello, or all of it and no Finished) kept the plain socket: the
    session's goodbye went out in clear, into what the client took for TLS records
    (its TLS stack: WRONG_VERSION_NUMBER). Now every read and write fails as over a
    reset connection, the close still closes, and the client reads the server's
    handshake flight, if any, then the end."""
    client, incoming, client_hello_bytes = client_hello(tls)
    server_sock, client_sock = socket.socketpair()
    sent = client_hello_bytes[:3] if hello == "its first 3 bytes" else client_hello_bytes

    async def main() -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(server_sock))
        transport = TrioTransport(stream)
        client_sock.sendall(sent)
        async with trio.open_nursery() as nursery:
            handshake = functools.partial(
                transport.start_tls, tls.server_context, server_side=True
            )
            nursery.start_soon(handshake)
            await trio.testing.wait_all_tasks_blocked()  # waiting for the client
            nursery.cancel_scope.cancel()
        with pytest.raises(ConnectionResetError):
            await transport.send_all(b"421 4.3.2 mx.test Service shutting down\r\n")
        with pytest.raises(ConnectionResetError):
            await transport.receive_some(100)
        assert transport.tls is None
        await transport.aclose()

    with client_sock:
        trio.run(main)
        received = read_to_the_end(client_sock)
    if hello == "its first 3 bytes":
        assert received == b""
        return
    incoming.write(received)
    client.do_handshake()  # TLS 1.3: the server's flight completes the client's side
    with pytest.raises(ssl.SSLWantReadError):  # nothing more: no plaintext after it
        client.read(100)


async def asyncio_transport(
    kind: str, sock: socket.socket
) -> tuple[AsyncioTransport | StreamTransport, Callable[[bytes], object]]:
    """The transport, and how to queue bytes on it without waiting for the peer."""
    if kind == "AsyncioTransport":
        loop = asyncio.get_running_loop()
        _, transport = await loop.connect_accepted_socket(AsyncioTransport, sock)
        return transport, transport.send_nowait
    reader, writer = await asyncio.open_connection(sock=sock)
    return StreamTransport(reader, writer), writer.write


def read_until_closed(sock: socket.socket) -> bytes:
    """What the peer got, to the close (a reset too: what came before it)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("queued", [0, 200_000], ids=["nothing queued", "the peer not reading"])
@pytest.mark.parametrize("kind", ["AsyncioTransport", "StreamTransport"])
def test_asyncio_a_cancelled_handshake_leaves_no_plaintext_way_to_the_peer(
    tls: TLSFiles, kind: str, queued: int
) -> None:
    """The asyncio transports after a server-side handshake cancelled part-way (the
    client sent 3 bytes of its ClientHello): a read waited for ever (asyncio's TLS
    protocol, in between by then, never told the transport of the end), and a close
    waited for the bytes still queued for a peer that did not read (5 s, or for
    ever, then failed inside asyncio). Now, as the contract says
    (``Transport.start_tls``), reads and writes fail as over a reset connection,
    the close closes at once, and no plaintext written after the handshake
    reaches the peer."""
    _, _, hello = client_hello(tls)
    server_sock, client_sock = socket.socketpair()
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def main() -> None:
        transport, queue = await asyncio_transport(kind, server_sock)
        await transport.send_all(b"250 2.0.0 OK\r\n")
        if queued:  # what a client that stopped reading leaves in the write buffer
            queue(b"x" * queued)
        client_sock.sendall(hello[:3])
        handshake = asyncio.ensure_future(
            transport.start_tls(tls.server_context, server_side=True)
        )
        for _ in range(5):  # the handshake starts, and waits for the rest of the hello
            await asyncio.sleep(0)
        assert not handshake.done()
        handshake.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handshake
        with pytest.raises(ConnectionResetError):
            await transport.send_all(b"421 4.3.2 mx.test Service shutting down\r\n")
        with pytest.raises(ConnectionResetError):
            await transport.receive_some(100)
        await transport.aclose()

    with client_sock:
        asyncio.run(asyncio.wait_for(main(), 30))  # a bound on a hang, not a figure
        client_sock.settimeout(10)
        received = read_until_closed(client_sock)
    assert received.startswith(b"250 2.0.0 OK\r\n") or received == b""
    assert b"421" not in received


@pytest.mark.parametrize("protocol", ["SMTP", "POP3"])
def test_a_shutdown_cuts_off_a_handshake_without_a_plaintext_goodbye(
    adapter: str, protocol: str, tls: TLSFiles, tmp_path: Path
) -> None:
    """On trio the cut-off session wrote ``421 4.3.2 ... Service shutting down``
    (POP3: ``-ERR [SYS/TEMP]``) in clear after the ``220`` (``+OK``) that began the
    handshake; on asyncio it closed. Both now close."""
    if protocol == "SMTP":
        serving = running_smtp_server(adapter, Handler(), ssl_context=tls.server_context)
        command, go_ahead = b"STARTTLS\r\n", b"220 "
    else:
        write_maildir(tmp_path / "alice", [b"Subject: hi\r\n\r\nhello\r\n"])
        store = MaildirStore(tmp_path, {"alice": "wonderland"})
        serving = running_pop3_server(adapter, store, ssl_context=tls.server_context)
        command, go_ahead = b"STLS\r\n", b"+OK"
    _, _, hello = client_hello(tls)
    with (
        serving as server,
        socket.create_connection((server.host, server.port), timeout=10) as sock,
    ):
        replies = sock.makefile("rb")
        replies.readline()
        if protocol == "SMTP":
            sock.sendall(b"EHLO client.test\r\n")
            while replies.readline()[3:4] == b"-":
                pass
        sock.sendall(command)
        assert replies.readline().startswith(go_ahead)
        sock.sendall(hello[:3])  # the handshake has begun; the rest never comes
        server.call(lambda: server.server.aclose(grace=0.3))
        assert replies.read() == b""
