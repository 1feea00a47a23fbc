"""TLS on the asyncio server's raw-socket connections (``smtpcore._asyncio_tls``).

The adapter suites run every TLS scenario over it (STARTTLS, STLS, TLS from the
first byte, channel binding, the interop peers); here are its own edges: what
an idle TLS session costs, how each side's close reads to the other, and
content larger than a TLS record in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import poplib
import smtplib
import socket
import ssl
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peers import (
    RunningSMTPServer,
    TLSFiles,
    make_tls_files,
    raw_smtp_session,
    running_pop3_server,
    running_smtp_server,
    write_maildir,
)
from smtpcore._asyncio_raw import RawSocketTransport
from smtpcore._asyncio_tls import TLSLayer
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.maildrop import MaildirStore
from smtpcore.smtp import Reply

_PER_SESSION_AT_MOST = 64 * 1024
"""What an idle TLS session may hold, generously: asyncio's TLS transport held a
256 KiB read buffer each (``sslproto``'s ``bytearray(max_size)``)."""


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(tls: TLSFiles) -> Iterator[RunningSMTPServer]:
    with running_smtp_server("asyncio", Handler(), ssl_context=tls.server_context) as running:
        yield running


def _starttls(server: RunningSMTPServer, tls: TLSFiles, **options: Any) -> ssl.SSLSocket:
    """A client past STARTTLS and EHLO again, its socket under TLS."""
    plain = socket.create_connection((server.host, server.port), timeout=10)
    buffered = b""
    plain.sendall(b"EHLO client.test\r\nSTARTTLS\r\n")
    while not buffered.endswith(b"220 2.0.0 Ready to start TLS\r\n"):
        chunk = plain.recv(4096)
        assert chunk, buffered
        buffered += chunk
    sock = tls.client_context.wrap_socket(plain, server_hostname="localhost", **options)
    sock.sendall(b"EHLO client.test\r\n")
    assert _reply(sock).startswith(b"250")
    return sock


def _reply(sock: ssl.SSLSocket) -> bytes:
    """The next reply, whole (its lines up to the last, ``NNN `` one)."""
    reply = b""
    while True:
        chunk = sock.recv(4096)
        assert chunk, reply
        reply += chunk
        last = reply.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        if reply.endswith(b"\r\n") and last[3:4] == b" ":
            return reply


def _sessions(server: RunningSMTPServer) -> int:
    async def count() -> int:
        return len(server.server.state.sessions)

    result: int = server.call(count)
    return result


def _until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` by order of events: each look is one round trip to the
    server's loop (at most a thousand, far more than any of these needs)."""
    for _ in range(1000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the condition never held")


def test_an_idle_tls_session_holds_no_large_buffer(
    server: RunningSMTPServer, tls: TLSFiles
) -> None:
    """asyncio's TLS transport gave each session a 256 KiB read buffer (about 290 KB
    a session, idle or not); over the raw socket a session holds what is in flight."""
    count = 12
    for sock in [_starttls(server, tls) for _ in range(2)]:  # first-use allocations
        sock.close()
    _until(lambda: _sessions(server) == 0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        opened = [_starttls(server, tls) for _ in range(count)]
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    kinds: list[type] = []

    async def look() -> None:
        for session in server.server.state.sessions:
            kinds.append(type(session.transport.transport))
            kinds.append(type(session.transport.transport._inner))

    server.call(look)
    for sock in opened:
        sock.close()
    assert kinds == [RawSocketTransport, TLSLayer] * count
    assert grown / count < _PER_SESSION_AT_MOST, grown / count


@pytest.mark.parametrize("tls_on_connect", [False, True], ids=["starttls", "implicit"])
def test_our_close_ends_tls_with_close_notify(tls: TLSFiles, tls_on_connect: bool) -> None:
    """After QUIT's 221 the client reads TLS's own end (close_notify), not a bare TCP
    close, which its TLS stack would take for a truncation attack."""
    options: dict[str, Any] = {"ssl_context": tls.server_context}
    if tls_on_connect:
        options["tls_on_connect"] = True
    with running_smtp_server("asyncio", Handler(), **options) as running:
        if tls_on_connect:
            plain = socket.create_connection((running.host, running.port), timeout=10)
            sock = tls.client_context.wrap_socket(
                plain, server_hostname="localhost", suppress_ragged_eofs=False
            )
            assert _reply(sock).startswith(b"220")
        else:
            sock = _starttls(running, tls, suppress_ragged_eofs=False)
        with sock:
            sock.sendall(b"QUIT\r\n")
            assert _reply(sock).startswith(b"221")
            assert sock.recv(100) == b""  # an SSLEOFError without close_notify


def test_the_clients_close_notify_ends_the_session_with_ours(
    server: RunningSMTPServer, tls: TLSFiles
) -> None:
    sock = _starttls(server, tls)
    plain = sock.unwrap()  # close_notify, then the server's, read
    plain.close()
    _until(lambda: _sessions(server) == 0)


def test_a_bare_tcp_close_under_tls_ends_the_session(
    server: RunningSMTPServer, tls: TLSFiles
) -> None:
    sock = _starttls(server, tls)
    sock.close()  # no close_notify: an SSLSocket's close sends none
    _until(lambda: _sessions(server) == 0)
    with raw_smtp_session(server.host, server.port) as s:  # and the server goes on
        assert s.recv_reply().startswith(b"220")


class _Keeper(Handler):
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_rcpt(self, session: Session, envelope: Envelope, recipient: Any) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.contents.append(envelope.content)
        return Reply(250, "OK")


_LINE = b"".join(bytes([33 + (n % 90)]) for n in range(998)) + b"\r\n"


def test_content_larger_than_many_records_arrives_whole(tls: TLSFiles) -> None:
    """Several MiB through TLS records of 16 KiB each, read a record at a time."""
    handler = _Keeper()
    content = _LINE * 4000  # about 4 MiB
    with (
        running_smtp_server(
            "asyncio", handler, ssl_context=tls.server_context, max_message_size=None
        ) as running,
        smtplib.SMTP(running.host, running.port, timeout=30) as client,
    ):
        client.starttls(context=tls.client_context)
        client.sendmail("a@abc.example", ["b@pqr.example"], content)
    assert handler.contents == [content]


def test_a_message_larger_than_many_records_is_retrieved_whole(
    tls: TLSFiles, tmp_path: Path
) -> None:
    """The other way: a POP3 RETR of several MiB after STLS, written a record's worth
    of plaintext at a time, the rest waiting for room while the client reads."""
    message = b"Subject: big\r\n\r\n" + _LINE * 4000
    write_maildir(tmp_path / "alice", [message])
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    with running_pop3_server("asyncio", store, ssl_context=tls.server_context) as running:
        client = poplib.POP3(running.host, running.port, timeout=30)
        try:
            client.stls(context=tls.client_context)
            client.user("alice")
            client.pass_("wonderland")
            _, lines, _ = client.retr(1)
        finally:
            client.quit()
    assert b"\r\n".join(lines) + b"\r\n" == message


# -- the layer over a socket pair -----------------------------------------------------


def _layer_over_pair(tls: TLSFiles, ours: socket.socket) -> tuple[RawSocketTransport, TLSLayer]:
    """A server's TLS layer over ``ours``, on the running loop, its handshake not made."""
    raw = RawSocketTransport(ours, None, asyncio.get_running_loop())
    return raw, TLSLayer(raw, tls.server_context, server_side=True)


def _client_over(tls: TLSFiles, sock: socket.socket) -> tuple[ssl.SSLObject, ssl.MemoryBIO]:
    """A client's handshake over the blocking ``sock``: its TLS object and outgoing BIO."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = tls.client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
    sock.sendall(outgoing.read())
    return client, outgoing


def test_a_message_in_one_byte_records_is_read_many_records_a_read(tls: TLSFiles) -> None:
    """OpenSSL gives one record a read: a read hands on every whole record that came,
    not one (perhaps one byte) each, which cost 4 to 5 times the CPU."""
    message = _LINE * 2  # 2,000 records of one byte each
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    sent = threading.Event()

    def client() -> None:
        tls_client, outgoing = _client_over(tls, theirs)
        for byte in range(len(message)):
            tls_client.write(message[byte : byte + 1])
        theirs.sendall(outgoing.read())
        sent.set()

    async def main() -> int:
        raw, layer = _layer_over_pair(tls, ours)
        await layer.handshake()
        await asyncio.to_thread(sent.wait, 10)
        got, reads = b"", 0
        while len(got) < len(message):
            got += await layer.receive_some(65536)
            reads += 1
        assert got == message
        await raw.aclose()
        return reads

    with ours, theirs:
        thread = threading.Thread(target=client)
        thread.start()
        reads = asyncio.run(main())
        thread.join(10)
    assert reads <= 4, reads  # about 45 KB of records: three socket reads of 16 KB


class _AnswersEveryByte:
    """Stands in for the layer's ``SSLObject`` after its handshake: every byte of
    ciphertext read makes it answer a byte unasked (as a TLS 1.3 KeyUpdate asking
    for one does, a record each), and no plaintext ever comes."""

    def __init__(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self._incoming = incoming
        self._outgoing = outgoing

    def read(self, max_bytes: int) -> bytes:
        self._outgoing.write(self._incoming.read())
        raise ssl.SSLWantReadError

    def pending(self) -> int:
        return 0


def test_a_peer_that_never_reads_cannot_grow_what_the_layer_answers(tls: TLSFiles) -> None:
    """A client sending key updates that each ask for one, and never reading, made
    the server read on while the answers piled up unsent (20 MB for a million):
    the layer stops reading while more than 256 KiB wait to be sent."""
    flood = 2 * 1024 * 1024
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    done = threading.Event()

    def peer() -> None:
        with contextlib.suppress(OSError):  # the server's close ends it
            theirs.sendall(bytes(flood))
        done.set()

    async def main() -> int:
        raw, layer = _layer_over_pair(tls, ours)
        layer._tls = _AnswersEveryByte(layer._incoming, layer._outgoing)  # type: ignore[assignment]
        layer._shaken = True
        reading = asyncio.ensure_future(layer.receive_some(100))
        # Until the layer waits: for room to send (bounded), or for more to read after
        # the whole flood (unbounded).
        while not (raw._waiter is not None and (raw._want < 0 or done.is_set())):
            await asyncio.sleep(0.01)
        unsent = raw.unsent()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await raw.aclose()  # within its close timeout: the peer never reads
        return unsent

    with ours, theirs:
        thread = threading.Thread(target=peer)
        thread.start()
        unsent = asyncio.run(main())
        thread.join(10)
    assert unsent <= 256 * 1024 + 16 * 1024 + 512, unsent


def test_nothing_read_with_a_bad_record_is_handed_on(tls: TLSFiles) -> None:
    """A good record and a corrupted one in one write: OpenSSL fails and writes nothing
    more, so the command in the good record is not handed on (a message it ended
    would be stored with its 250 never sent, and the client would send it again);
    the session ends, as asyncio's TLS transport ended it."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    sent = threading.Event()

    def client() -> None:
        tls_client, outgoing = _client_over(tls, theirs)
        tls_client.write(b".\r\n")
        tls_client.write(b"QUIT\r\n")
        records = bytearray(outgoing.read())
        records[-3] ^= 1  # the second record's authentication tag no longer matches
        theirs.sendall(bytes(records))
        sent.set()

    async def main() -> bytes:
        raw, layer = _layer_over_pair(tls, ours)
        await layer.handshake()
        await asyncio.to_thread(sent.wait, 10)
        try:
            return await layer.receive_some(65536)
        finally:
            await raw.aclose()

    with ours, theirs:
        thread = threading.Thread(target=client)
        thread.start()
        got = asyncio.run(main())
        thread.join(10)
    assert got == b""


def test_a_close_begun_while_a_cancelled_read_unwinds_still_ends(tls: TLSFiles) -> None:
    """Under TLS as in plaintext: a read cancelled (a shutdown, a deadline) unwinds at
    the loop's next pass, and a close begun before then, its records still waiting
    for room, hung (the read's unwinding cleared the close's wait). Order of events:
    the close ends once the peer has read every byte."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setblocking(False)
    shaken, closing = threading.Event(), threading.Event()
    received: list[int] = []

    def client() -> None:
        _client_over(tls, theirs)
        shaken.set()
        closing.wait(30)
        got = 0
        theirs.settimeout(30)
        while chunk := theirs.recv(65536):
            got += len(chunk)
        received.append(got)

    async def main() -> None:
        raw, layer = _layer_over_pair(tls, ours)
        await layer.handshake()
        await asyncio.to_thread(shaken.wait, 10)
        layer.send_nowait(_LINE * 256)  # about 256 KB: most of it waits for room
        assert raw.unsent()
        reading = asyncio.ensure_future(layer.receive_some(100))
        await asyncio.sleep(0)  # the read waits
        reading.cancel()  # its unwinding runs at the next pass, after the close began
        closing.set()
        await layer.aclose()  # in this task: begun before the read unwinds
        assert reading.cancelled()

    with ours, theirs:
        thread = threading.Thread(target=client)
        thread.start()
        asyncio.run(asyncio.wait_for(main(), 30))  # a guard: the close hung
        thread.join(30)
    assert received and received[0] > len(_LINE) * 256
