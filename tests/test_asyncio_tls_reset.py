"""asyncio under TLS: a connection the peer reset is noticed at the first write that fails.

asyncio's TLS transport says it is closing only once the TCP transport beneath it
has told it of the loss, a pass or two of the loop after the write that failed;
until then every write goes into the dead socket, and asyncio logs a WARNING
("socket.send() raised exception.") for each after the fifth. A POP3 RETR of a
large message wrote the whole rest of it that way, a warning per write.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import pytest

from peers import TLSFiles, running_pop3_server, write_maildir
from smtpcore import _asyncio_raw
from smtpcore.maildrop import MaildirStore, Maildrop, MessageInfo, POP3Session
from smtpcore.testing import Call, Close, ScriptedConnection, ScriptedServer, script

PASSWORDS = {"alice": "wonderland"}
LINE = b"x" * 78 + b"\r\n"
BIG = b"Subject: big\r\n\r\n" + LINE * (16 * 1024 * 1024 // len(LINE))  # 16 MiB
SENT_WARNING = "socket.send() raised exception"
AFTER_RESET_AT_MOST = 16
"""Chunks of the message the server may still read once the client has reset: those it
was reading when the reset came, and the one whose write fails (0 to 6 seen, on
asyncio's loop and uvloop), a few against the 100 and more of a server that noticed
the reset only once asyncio's TLS transport did."""


@pytest.fixture(params=[True, False], ids=["raw", "fallback"])
def raw(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether the server takes the raw socket path (STLS then hands the socket to an
    asyncio TLS transport) or asyncio's transports throughout."""
    monkeypatch.setattr(_asyncio_raw, "enabled", request.param)
    value: bool = request.param
    return value


class CountedMaildrop(Maildrop):
    """A Maildir whose message chunks are counted once ``reset`` is set."""

    def __init__(self, inner: Maildrop, reset: threading.Event) -> None:
        self.inner = inner
        self.reset = reset
        self.after_reset = 0

    async def messages(self) -> Sequence[MessageInfo]:
        return await self.inner.messages()

    def open(self, number: int) -> Iterator[bytes]:
        chunks = self.inner.open(number)
        assert isinstance(chunks, Iterator)
        for chunk in chunks:
            if self.reset.is_set():
                self.after_reset += 1
            yield chunk

    async def update(self, deleted: Collection[int], retrieved: Collection[int]) -> None:
        await self.inner.update(deleted, retrieved)

    async def close(self) -> None:
        await self.inner.close()


class CountingStore(MaildirStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root, PASSWORDS)
        self.reset = threading.Event()
        self.maildrops: list[CountedMaildrop] = []

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        maildrop = CountedMaildrop(await super().open_maildrop(session, user), self.reset)
        self.maildrops.append(maildrop)
        return maildrop


def read_line(sock: socket.socket | ssl.SSLSocket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        more = sock.recv(1)
        assert more, data
        data += more
    return data


def reset(sock: socket.socket | ssl.SSLSocket) -> None:
    """Close with an RST (``SO_LINGER`` 0), as a client that is killed or cancelled."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def reset_mid_retr(
    port: int, implicit: bool, context: ssl.SSLContext, was_reset: threading.Event
) -> None:
    """Log in as alice over TLS (STLS, or ``implicit`` from the first byte), RETR her
    message, read some 200 kB of it, reset the connection and set ``was_reset``: what
    the server reads from then on it read after the reset (set before, the chunks it
    read while this thread waited to reset were counted too)."""
    plain = socket.create_connection(("127.0.0.1", port), timeout=10)
    if not implicit:
        assert read_line(plain).startswith(b"+OK")
        plain.sendall(b"STLS\r\n")
        assert read_line(plain).startswith(b"+OK")
    secure = context.wrap_socket(plain, server_hostname="localhost")
    if implicit:
        assert read_line(secure).startswith(b"+OK")
    secure.sendall(b"USER alice\r\nPASS wonderland\r\nRETR 1\r\n")
    for _ in range(3):
        assert read_line(secure).startswith(b"+OK")
    got = 0
    while got < 200_000:
        got += len(secure.recv(65536))
    reset(secure)
    was_reset.set()


@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "implicit"])
def test_a_pop3_client_reset_mid_retr_stops_the_writes_at_once(
    raw: bool,
    implicit: bool,
    tmp_path: Path,
    tls: TLSFiles,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that resets mid-RETR: the server stops reading the message within a
    few chunks, and asyncio logs no warning of writes into the dead socket."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    write_maildir(tmp_path / "alice", [BIG])
    store = CountingStore(tmp_path)
    with running_pop3_server(
        "asyncio", store, ssl_context=tls.server_context, tls_on_connect=implicit
    ) as server:
        reset_mid_retr(server.port, implicit, tls.client_context, store.reset)
        server.wait_for_sessions(0, timeout=30)
    (maildrop,) = store.maildrops
    assert maildrop.after_reset <= AFTER_RESET_AT_MOST
    assert not [r for r in caplog.records if SENT_WARNING in r.getMessage()]


@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "implicit"])
def test_a_pop3_client_reset_mid_retr_over_asyncio_streams_stops_the_writes_at_once(
    implicit: bool, tmp_path: Path, tls: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """The same for a session over asyncio streams (``serve_stream`` under
    ``asyncio.start_server``), with TLS from the first byte (``ssl=``) or after STLS."""
    import asyncio

    from smtpcore.asyncio import POP3Server

    caplog.set_level(logging.WARNING, logger="asyncio")
    write_maildir(tmp_path / "alice", [BIG])
    store = CountingStore(tmp_path)
    server = POP3Server(store, "127.0.0.1", 0, hostname="pop.test", ssl_context=tls.server_context)

    async def main() -> None:
        ended = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await server.serve_stream(reader, writer)
            finally:
                ended.set()

        context = tls.server_context if implicit else None
        listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
        async with listener:
            port = listener.sockets[0].getsockname()[1]
            await asyncio.to_thread(
                reset_mid_retr, port, implicit, tls.client_context, store.reset
            )
            await asyncio.wait_for(ended.wait(), 30)

    asyncio.run(main())
    (maildrop,) = store.maildrops
    assert maildrop.after_reset <= AFTER_RESET_AT_MOST
    assert not [r for r in caplog.records if SENT_WARNING in r.getMessage()]


#: An SMTP session through STARTTLS up to the content.
UP_TO_THE_CONTENT_UNDER_TLS = """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250-scripted.test
S: 250 STARTTLS
C: STARTTLS
S: 220 2.0.0 go ahead
-- starttls
C~ EHLO .+
S: 250 scripted.test
C: MAIL FROM:<a@abc.example>
S: 250 2.1.0 ok
C: RCPT TO:<bob@pqr.example>
S: 250 2.1.5 ok
C: DATA
S: 354 go ahead
"""
PIECE = LINE * 800  # 64,000 octets
PIECES = 256  # 16 MB


def test_the_asyncio_client_writing_content_into_a_reset_tls_server_stops_at_once(
    tls: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that resets the connection while the content is written under TLS: the
    client raises ``SMTPConnectionError`` ("connection lost") from the write that
    failed, taking a few more pieces of the content at most, and asyncio logs no
    warning of writes into the dead socket."""
    import asyncio

    from smtpcore.asyncio import SMTPClient, SMTPConnectionError

    caplog.set_level(logging.WARNING, logger="asyncio")
    was_reset = threading.Event()
    after_reset = 0

    def reset_at_the_first_line(conn: ScriptedConnection) -> None:
        conn.line()
        conn._conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def say_it_was_reset(conn: ScriptedConnection) -> None:
        was_reset.set()  # after the Close, which sent the RST

    def content() -> Iterator[bytes]:
        nonlocal after_reset
        yield b"Subject: big\r\n\r\n"
        for _ in range(PIECES):
            if was_reset.is_set():
                after_reset += 1
            yield PIECE

    async def send(port: int) -> None:
        client = SMTPClient(
            "127.0.0.1",
            port,
            starttls=True,
            ssl_context=tls.client_context,
            server_hostname="localhost",
        )
        async with client:
            await client.send_message(content(), "a@abc.example", "bob@pqr.example")

    steps = [
        *script(UP_TO_THE_CONTENT_UNDER_TLS),
        Call(reset_at_the_first_line),
        Close(),
        Call(say_it_was_reset),
    ]
    with (
        ScriptedServer(steps, ssl_context=tls.server_context) as server,
        pytest.raises(SMTPConnectionError) as raised,
    ):
        asyncio.run(send(server.port))
    assert isinstance(raised.value.__cause__, OSError), raised.value
    assert "connection lost" in str(raised.value)
    assert after_reset <= AFTER_RESET_AT_MOST
    assert not [r for r in caplog.records if SENT_WARNING in r.getMessage()]
