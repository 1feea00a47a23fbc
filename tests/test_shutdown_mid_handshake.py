"""A shutdown that cuts off a session in the middle of its STARTTLS (or STLS)
handshake closes it without a word (RFC 3207 §4: after the ``220`` no plaintext
SMTP until the handshake succeeds; an aborted negotiation ends in a close)."""

from __future__ import annotations

import functools
import socket
import ssl
from pathlib import Path

import pytest
import trio
import trio.testing

from peers import TLSFiles, running_pop3_server, running_smtp_server, write_maildir
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
