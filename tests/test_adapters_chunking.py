"""CHUNKING and BINARYMIME (RFC 3030) through both adapters: the client sends BDAT
when the server offers CHUNKING (or must, for BINARYMIME), streaming content from
bytes, a file, or a sync or async iterator in chunks of a configurable size."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from peers import module, run, running_smtp_server
from smtp_helpers import ENVELOPE
from smtpcore import NEED_DATA, PAUSED, sync
from smtpcore._driver._content import CRLFNormalizer, known_size
from smtpcore.handler import Envelope, Session
from smtpcore.smtp import Bdat, Body, Data, Event, Reply, ServerConnection
from smtpcore.testing import CollectingHandler

TEXT = b"Subject: chunks\r\n\r\n" + b"".join(b".line %d\n" % n for n in range(200))
BINARY = bytes(range(256)) * 40 + b"\r\n.\r\n\n\r"


class Recording(ServerConnection):
    """A server machine that remembers which commands it read."""

    seen: list[type[Event]]

    def next_event(self) -> Any:
        event = super().next_event()
        if event is not NEED_DATA and event is not PAUSED:
            self.seen.append(type(event))
        return event


def recording_factory(seen: list[type[Event]], **options: Any) -> Any:
    def factory(server_options: Any) -> ServerConnection:
        conn: Recording = server_options.build_connection(Recording, **options)
        conn.seen = seen
        return conn

    return factory


def send(adapter: str, server: Any, content: Any, **options: Any) -> None:
    mail_params = options.pop("mail_params", None)

    async def go() -> None:
        client = module(adapter).SMTPClient(server.host, server.port, **options)
        async with client:
            await client.send_message(
                content, "a@abc.example", ["b@pqr.example"], mail_params=mail_params
            )

    run(adapter, go)


def normalized(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def test_bdat_when_chunking_is_offered(adapter: str) -> None:
    handler = CollectingHandler()
    seen: list[type[Event]] = []
    with running_smtp_server(adapter, handler, connection_factory=recording_factory(seen)) as s:
        send(adapter, s, TEXT, chunk_size=100)
    assert Bdat in seen and Data not in seen
    assert seen.count(Bdat) == len(TEXT) // 100 + 1  # one chunk per 100 octets read
    assert handler.messages[0].content == normalized(TEXT)  # CRLF, never dot-stuffed


def test_data_when_chunking_is_off_or_not_offered(adapter: str) -> None:
    handler = CollectingHandler()
    seen: list[type[Event]] = []
    factory = recording_factory(seen)
    with running_smtp_server(adapter, handler, connection_factory=factory) as s:
        send(adapter, s, TEXT, chunking=False)
    assert Data in seen and Bdat not in seen
    seen.clear()
    factory = recording_factory(seen, chunking=False)
    with running_smtp_server(adapter, handler, connection_factory=factory) as s:
        send(adapter, s, TEXT)
        errors = module(adapter)
        with pytest.raises(errors.ExtensionNotOffered, match="CHUNKING"):
            send(adapter, s, TEXT, chunking=True)
    assert Bdat not in seen
    assert [m.content for m in handler.messages] == [normalized(TEXT)] * 2


def test_binarymime_goes_with_bdat_octet_for_octet(adapter: str) -> None:
    handler = CollectingHandler()
    with running_smtp_server(adapter, handler, binarymime=True) as s:
        send(
            adapter,
            s,
            BINARY,
            chunking=False,
            chunk_size=1000,
            mail_params={"BODY": Body.BINARYMIME},
        )
    [message] = handler.messages
    assert message.content == BINARY
    assert message.mail_params["BODY"] == "BINARYMIME"


def test_content_streams_from_files_and_iterators(adapter: str, tmp_path: Path) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(TEXT)

    def pieces() -> Iterator[bytes]:
        for n in range(0, len(TEXT), 7):
            yield TEXT[n : n + 7]

    async def async_pieces() -> AsyncIterator[bytes]:
        for piece in pieces():
            yield piece

    handler = CollectingHandler()
    with running_smtp_server(adapter, handler) as s:
        with path.open("rb") as file:
            send(adapter, s, file, chunk_size=64)
        send(adapter, s, pieces(), chunk_size=50)
        send(adapter, s, async_pieces(), chunk_size=50, chunking=False)
    assert [m.content for m in handler.messages] == [normalized(TEXT)] * 3
    assert handler.messages[0].mail_params["SIZE"] == str(len(TEXT))  # a file's size is known
    assert "SIZE" not in handler.messages[1].mail_params  # an iterator's is not


def test_crlf_normalizer_across_any_chunk_boundary() -> None:
    data = b"a\rb\nc\r\nd\r\r\n\n\re\r"
    for size in range(1, len(data) + 1):
        normalizer = CRLFNormalizer()
        out = b"".join(normalizer.feed(data[n : n + size]) for n in range(0, len(data), size))
        assert out + normalizer.end() == normalized(data), size


def test_known_size() -> None:
    assert known_size(b"abc") == 3
    assert known_size(io.BytesIO(b"abc")) is None  # no file descriptor
    assert known_size(iter([b"abc"])) is None


def test_the_trace_shows_bdat_and_its_content(adapter: str) -> None:
    lines: list[tuple[str, str]] = []
    with running_smtp_server(adapter, CollectingHandler()) as s:
        send(
            adapter,
            s,
            b"Subject: t\r\n\r\nbody\r\n",
            trace=lambda d, line: lines.append((d, line)),
        )
    sent = [line for direction, line in lines if direction == "C"]
    assert "BDAT 20 LAST" in sent and "Subject: t" in sent and "." not in sent


def test_the_trace_ends_a_line_a_chunk_left_open(adapter: str) -> None:
    """RFC 3030 §2 sizes chunks in octets, so a chunk ends mid-line as often as not: the
    trace shows that line marked when the chunk ends, and the next BDAT on a line of its
    own (it was glued to the content line, and so was a RSET after a refused chunk)."""
    lines: list[tuple[str, str]] = []
    content = b"Subject: t\r\n\r\n" + b"0123456789" * 6 + b"\r\n"
    with running_smtp_server(adapter, CollectingHandler()) as s:
        send(adapter, s, content, chunk_size=25, trace=lambda d, line: lines.append((d, line)))
    sent = [line for direction, line in lines if direction == "C"]
    sizes = [int(line.split()[1]) for line in sent if line.startswith("BDAT ")]
    assert len(sizes) > 2 and sum(sizes) == len(content)
    ended = [line for line in sent if line.endswith(" [chunk ends]")]
    assert ended and all(line.strip("0123456789 ").startswith("[chunk") for line in ended)
    assert not any("BDAT" in line and not line.startswith("BDAT") for line in sent)


# -- a message past max_message_size (RFC 3030 §2) ---------------------------------


class Hooks(CollectingHandler):
    """A handler that records each chunk of content and each transaction reset."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []
        self.resets = 0

    async def handle_data_chunk(self, session: Session, envelope: Envelope, data: bytes) -> None:
        self.chunks.append(data)

    async def handle_reset(self, session: Session, envelope: Envelope) -> None:
        self.resets += 1


def final_codes(received: bytes) -> list[bytes]:
    return [line[:3] for line in received.split(b"\r\n") if line[3:4] == b" "]


def _answers_to(adapter: str, handler: Hooks, wire: bytes) -> bytes:
    """All a server with ``max_message_size=10`` writes to a client that sends
    ``wire`` at once, read until it closes."""
    with (
        running_smtp_server(adapter, handler, max_message_size=10) as server,
        socket.create_connection((server.host, server.port), timeout=10) as sock,
    ):
        sock.sendall(wire)
        received = bytearray()
        for _ in range(1000):  # bounded: each pass reads something or ends
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
    return bytes(received)


def test_the_chunk_past_the_size_limit_gets_552_and_later_chunks_503(adapter: str) -> None:
    """The chunk that takes the message past the limit is answered 552, not 250; the
    transaction is over and nothing of it reaches ``handle_message``; a BDAT after
    it gets 503 and its octets (``RSET`` and ``QUIT`` here) are read, not run."""
    handler = Hooks()
    smuggled = b"RSET\r\nQUIT\r\n"
    wire = (
        ENVELOPE
        + b"BDAT 8\r\n12345678BDAT 8\r\nabcdefgh"
        + b"BDAT %d\r\n" % len(smuggled)
        + smuggled
        + b"NOOP\r\nQUIT\r\n"
    )
    received = _answers_to(adapter, handler, wire)
    replies = final_codes(received)
    assert replies == [b"220", b"250", b"250", b"250", b"250", b"552", b"503", b"250", b"221"]
    assert b"552 5.3.4 " in received and b"503 5.5.1 " in received
    assert handler.chunks == [b"12345678"] and handler.messages == []
    assert handler.resets == 1


def test_a_session_of_chunks_past_the_size_limit_ends_with_421(adapter: str) -> None:
    """Each BDAT after the refused one is an error: past ``max_errors`` (the machine's
    default, 20) the server answers 421 and closes, however long the client goes on."""
    handler = Hooks()
    wire = ENVELOPE + b"BDAT 11\r\n" + b"x" * 11 + b"BDAT 1\r\ny" * 5000
    received = _answers_to(adapter, handler, wire)
    replies = final_codes(received)
    assert replies == [b"220", b"250", b"250", b"250", b"552"] + [b"503"] * 19 + [b"421"]
    assert handler.chunks == [] and handler.messages == []


async def pieces(count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * 7 + b"\r\n"


def test_the_client_takes_a_552_to_a_chunk_as_the_message_refused(adapter: str) -> None:
    """Content of unknown size (no SIZE to check before MAIL) sent in chunks past the
    server's limit: ``MessageRefused`` for BDAT, and the session goes on."""
    handler = CollectingHandler()
    client_module = module(adapter)

    async def go(port: int) -> Any:
        async with client_module.SMTPClient("127.0.0.1", port, chunk_size=9) as client:
            with pytest.raises(client_module.MessageRefused) as refused:
                await client.send_message(pieces(10), "a@abc.example", ["b@pqr.example"])
            await client.send_message(b"small\r\n", "a@abc.example", ["b@pqr.example"])
            return refused.value

    with running_smtp_server(adapter, handler, max_message_size=40) as server:
        error = run(adapter, lambda: go(server.port))
    assert (error.command, error.code) == ("BDAT", 552)
    assert [envelope.content for envelope in handler.messages] == [b"small\r\n"]


def test_the_sync_client_takes_a_552_to_a_chunk_as_the_message_refused() -> None:
    handler = CollectingHandler()
    content = iter([b"x" * 7 + b"\r\n"] * 10)
    with (
        running_smtp_server("asyncio", handler, max_message_size=40) as server,
        sync.SMTPClient("127.0.0.1", server.port, chunk_size=9, timeout=10) as client,
    ):
        with pytest.raises(sync.MessageRefused) as refused:
            client.send_message(content, "a@abc.example", ["b@pqr.example"])
        client.send_message(b"small\r\n", "a@abc.example", ["b@pqr.example"])
    assert (refused.value.command, refused.value.code) == ("BDAT", 552)
    assert [envelope.content for envelope in handler.messages] == [b"small\r\n"]


# -- a BDAT line the machine refuses (RFC 3030 §2) ---------------------------------


class Resets(CollectingHandler):
    """A handler that records the octets of each transaction reset, and whether a
    transaction was open when a VRFY came."""

    def __init__(self) -> None:
        super().__init__()
        self.resets: list[int] = []
        self.open_at_vrfy: list[bool] = []

    async def handle_reset(self, session: Session, envelope: Envelope) -> None:
        self.resets.append(envelope.size)

    async def handle_vrfy(self, session: Session, argument: str) -> Reply | None:
        self.open_at_vrfy.append(session.envelope is not None)
        return Reply(252, "Cannot VRFY user")


def test_a_bdat_line_the_machine_refuses_ends_the_sessions_transaction(adapter: str) -> None:
    """A BDAT line refused for its syntax fails the transaction (RFC 3030 §2) in the
    machine, and so in the session: ``handle_reset`` is told, the transaction is no
    longer open, and the client's next message is delivered alone and whole."""
    handler = Resets()
    wire = ENVELOPE + b"BDAT 4\r\nAAAA" + b"BDAT 4 LAST junk\r\nBBBB" + b"VRFY x\r\n"
    wire += b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<c@pqr.example>\r\nBDAT 2 LAST\r\nok"
    with (
        running_smtp_server(adapter, handler) as server,
        socket.create_connection((server.host, server.port), timeout=10) as sock,
    ):
        sock.sendall(wire + b"QUIT\r\n")
        received = bytearray()
        for _ in range(1000):  # bounded: each pass reads something or ends
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
    replies = final_codes(bytes(received))
    first = [b"220", b"250", b"250", b"250", b"250", b"501", b"252"]
    assert replies == [*first, b"250", b"250", b"250", b"221"]
    assert handler.resets == [4] and handler.open_at_vrfy == [False]
    [message] = handler.messages
    assert message.content == b"ok"
    assert [str(recipient.mailbox) for recipient in message.recipients] == ["c@pqr.example"]
