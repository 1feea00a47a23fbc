# mypy narrows `conn.state` after an assert and does not see that next_event() changes it.
# mypy: disable-error-code="comparison-overlap"

"""A reply nobody asked for ends the client session instead of shifting replies (issue 12 item 7).

A server that writes ``250 unsolicited`` while the client is idle once had
that line taken as the reply to the next MAIL, so that every later reply was
paired with the wrong command and a refused recipient counted as accepted.
The client machine now refuses to send while unread reply bytes wait, and both
client adapters read what has arrived before they write the next command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
from hypothesis import given

from peers import ADAPTERS, TLSFiles, run
from smtpcore import LocalProtocolError, RemoteProtocolError
from smtpcore.address import parse_mailbox
from smtpcore.smtp import (
    ClientConnection,
    Data,
    Ehlo,
    EndOfMessage,
    Mail,
    MessageData,
    Rcpt,
    Reply,
    State,
)
from smtpcore.testing import strategies as sst

ALICE = parse_mailbox("alice@abc.example")
BOB = parse_mailbox("bob@pqr.example")

# -- the machine -----------------------------------------------------------------------


def idle_client() -> ClientConnection:
    conn = ClientConnection("client.abc.example")
    conn.receive_data(b"220 mx.pqr.example\r\n")
    assert isinstance(conn.next_event(), Reply)
    conn.send(Ehlo("client.abc.example"))
    conn.receive_data(b"250-mx.pqr.example\r\n250 PIPELINING\r\n")
    assert isinstance(conn.next_event(), Reply)
    return conn


@pytest.mark.parametrize("stale", [b"250 unsolicited\r\n", b"250 unsol", b"5"])
def test_the_machine_refuses_to_send_behind_an_unread_reply(stale: bytes) -> None:
    conn = idle_client()
    conn.receive_data(stale)
    with pytest.raises(RemoteProtocolError):
        conn.send(Mail(ALICE))
    assert conn.state is State.ERROR


def test_an_unread_421_is_to_be_read_first() -> None:
    """RFC 5321 §3.8: a server may announce its shutdown with 421 at any time."""
    conn = idle_client()
    conn.receive_data(b"421 4.3.2 shutting down\r\n")
    with pytest.raises(LocalProtocolError):
        conn.send(Mail(ALICE))
    assert conn.state is State.READY  # unchanged
    reply = conn.next_event()
    assert isinstance(reply, Reply) and reply.code == 421
    assert conn.state is State.CLOSED


def test_replies_to_pipelined_commands_are_not_stale() -> None:
    conn = idle_client()
    conn.send(Mail(ALICE))
    conn.receive_data(b"250 ok\r\n")  # buffered, and awaited: more may be pipelined
    conn.send(Rcpt(BOB))
    assert conn.pending == (Mail(ALICE), Rcpt(BOB))
    reply = conn.next_event()
    assert isinstance(reply, Reply) and conn.answered == Mail(ALICE)


def in_content() -> ClientConnection:
    """A client machine after the 354, with a first piece of content sent."""
    conn = idle_client()
    for command, answer in ((Mail(ALICE), b"250 ok\r\n"), (Rcpt(BOB), b"250 ok\r\n")):
        conn.send(command)
        conn.receive_data(answer)
        assert isinstance(conn.next_event(), Reply)
    conn.send(Data())
    conn.receive_data(b"354 go ahead\r\n")
    assert isinstance(conn.next_event(), Reply)
    conn.send(MessageData(b"Subject: x\r\n\r\nx\r\n"))
    return conn


@given(early=sst.reply_lines(hostile=True))
def test_a_reply_before_the_end_of_the_message_never_answers_it(early: bytes) -> None:
    """RFC 5321 §4.1.1.4: only the reply after the end of data answers it. Whatever
    came after the 354, the machine refuses to send the end behind it: a possible
    421 is to be read first (and answers nothing, §3.8); anything else is the
    server's error and the ERROR state. The refusal itself is older than the
    drivers' look before the end (the tests over sockets below prove that); what
    this property guards is the machine's side of it for embedders: the refusal
    for any reply, and its text, "before the end of the message", which the
    drivers' errors repeat."""
    conn = in_content()
    conn.receive_data(early)
    try:
        conn.send(EndOfMessage())
    except LocalProtocolError:
        assert early.startswith(b"421")
        assert conn.state is State.DATA  # unchanged
        reply = conn.next_event()
        assert isinstance(reply, Reply) and reply.code == 421
        assert conn.answered is None and conn.state is State.CLOSED
    except RemoteProtocolError as exc:
        assert "before the end of the message" in str(exc)
        assert conn.state is State.ERROR
    else:
        raise AssertionError(f"the end of the message went out behind {early!r}")
    transaction = conn.transaction
    assert transaction is not None and not transaction.delivered


# -- both adapters ---------------------------------------------------------------------


async def until_arrived(adapter: str, client: Any, sent: threading.Event) -> None:
    """Wait until the server has written the unasked reply and it has reached the
    client's side (the event loop's buffer, or the kernel's under trio), so that
    the client is idle with it there when it starts the next command."""
    if adapter == "asyncio":
        await asyncio.to_thread(sent.wait, 10)
    else:
        await trio.to_thread.run_sync(sent.wait, 10)
    transport = client._transport.transport
    for _ in range(1000):
        if adapter == "asyncio":
            if transport._chunks:
                return
            await asyncio.sleep(0.01)
        else:
            if select.select([transport._fd], [], [], 0)[0]:
                return
            await trio.sleep(0.01)
    raise AssertionError("the unasked reply never reached the client")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    with sock:
        yield sock


def _serve(
    listener: socket.socket, unasked: bytes, sent: threading.Event, seen: list[bytes]
) -> None:
    """Greet, answer EHLO, write ``unasked`` while the client is idle, then answer
    whatever comes as a server would (MAIL accepted, RCPT refused, DATA refused)."""
    conn, _ = listener.accept()
    with conn:
        stream = conn.makefile("rb")
        conn.sendall(b"220 mx.pqr.example ESMTP\r\n")
        seen.append(stream.readline())
        conn.sendall(b"250-mx.pqr.example\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n")
        conn.sendall(unasked)
        sent.set()
        answers = {b"MAIL": b"250 2.1.0 ok\r\n", b"RCPT": b"550 5.1.1 no such user\r\n"}
        while line := stream.readline():
            seen.append(line)
            conn.sendall(answers.get(line[:4], b"554 5.5.1 no valid recipients\r\n"))


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("unasked", "error"),
    [
        (b"250 unsolicited\r\n", "SMTPProtocolError"),
        (b"421 4.3.2 going down\r\n", "SMTPConnectionError"),
    ],
)
def test_a_reply_written_while_the_client_is_idle_ends_the_session(
    adapter: str, listener: socket.socket, unasked: bytes, error: str
) -> None:
    sent = threading.Event()
    seen: list[bytes] = []
    thread = threading.Thread(target=_serve, args=(listener, unasked, sent, seen))
    thread.start()
    module: Any = importlib.import_module(f"smtpcore.{adapter}")

    async def session() -> None:
        client = module.SMTPClient("127.0.0.1", listener.getsockname()[1])
        async with client:
            await until_arrived(adapter, client, sent)
            await client.send_message(b"Subject: x\r\n\r\nx\r\n", "a@abc.example", "b@pqr.example")

    with pytest.raises(getattr(module, error)):
        run(adapter, session)
    thread.join(10)
    assert [line[:4] for line in seen] == [b"EHLO"]  # no MAIL was paired with the stale reply


# -- behind the reply to MAIL, or to DATA ----------------------------------------------


def _serve_one_by_one(
    listener: socket.socket,
    unasked: bytes,
    seen: list[bytes],
    behind: bytes = b"MAIL",
    pipelining: bool = False,
) -> None:
    """A server that writes ``unasked`` in the same write as its reply to ``behind``
    (MAIL, or DATA: its 354, where nothing may follow until the client's content
    has ended, RFC 5321 §4.1.1.4), then answers whatever comes; without
    PIPELINING unless ``pipelining``."""
    answers = {b"MAIL": b"250 2.1.0 ok\r\n", b"DATA": b"354 go ahead\r\n"}
    conn, _ = listener.accept()
    with conn:
        stream = conn.makefile("rb")
        conn.sendall(b"220 mx.pqr.example ESMTP\r\n")
        seen.append(stream.readline())
        offer = b"250-PIPELINING\r\n" if pipelining else b""
        conn.sendall(b"250-mx.pqr.example\r\n" + offer + b"250 ENHANCEDSTATUSCODES\r\n")
        while line := stream.readline():
            seen.append(line)
            if line.startswith(behind):
                conn.sendall(answers[behind] + unasked)
            else:
                conn.sendall(b"250 2.0.0 ok\r\n")


def _send_one_expecting(adapter: str, port: int, error: str) -> None:
    """One message over a session of ``adapter``'s client, which raises ``error``."""
    message = b"Subject: x\r\n\r\nx\r\n"
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    if adapter == "sync":
        with (
            module.SMTPClient("127.0.0.1", port, timeout=10) as client,
            pytest.raises(getattr(module, error)),
        ):
            client.send_message(message, "a@abc.example", "b@pqr.example")
        return

    async def session() -> None:
        async with module.SMTPClient("127.0.0.1", port) as client:
            await client.send_message(message, "a@abc.example", "b@pqr.example")

    with pytest.raises(getattr(module, error)):
        run(adapter, session)


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
@pytest.mark.parametrize(
    ("unasked", "error"),
    [
        (b"250 unsolicited\r\n", "SMTPProtocolError"),
        (b"421 4.3.2 going down\r\n", "SMTPConnectionError"),
        (b"250 unsol", "SMTPProtocolError"),
    ],
)
def test_a_reply_behind_the_reply_to_mail_ends_the_session(
    adapter: str, listener: socket.socket, unasked: bytes, error: str
) -> None:
    """Commands sent one at a time: what came with a reply is looked at before the
    next command, even where the read took all there was (and the transport so
    needs no look at the socket itself)."""
    seen: list[bytes] = []
    thread = threading.Thread(target=_serve_one_by_one, args=(listener, unasked, seen))
    thread.start()
    try:
        _send_one_expecting(adapter, listener.getsockname()[1], error)
    finally:
        thread.join(10)
    assert [line[:4] for line in seen] == [b"EHLO", b"MAIL"]  # no RCPT behind it


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
@pytest.mark.parametrize("pipelining", [False, True])
@pytest.mark.parametrize(
    ("unasked", "error"),
    [
        (b"250 unsolicited\r\n", "SMTPProtocolError"),
        (b"421 4.3.2 going down\r\n", "SMTPConnectionError"),
    ],
)
def test_a_reply_behind_the_354_ends_the_session_before_the_content(
    adapter: str, listener: socket.socket, pipelining: bool, unasked: bytes, error: str
) -> None:
    """The client's own error, not the machine's refusal to send behind an unread
    reply (which once escaped ``send_message`` as RemoteProtocolError, or as
    LocalProtocolError for a 421)."""
    seen: list[bytes] = []
    thread = threading.Thread(
        target=_serve_one_by_one, args=(listener, unasked, seen, b"DATA", pipelining)
    )
    thread.start()
    try:
        _send_one_expecting(adapter, listener.getsockname()[1], error)
    finally:
        thread.join(10)
    assert b"Subject: x\r\n" not in seen  # no content went out behind the unread reply


# -- while the content streams ----------------------------------------------------------


def _serve_early_reply(
    listener: socket.socket,
    early: bytes,
    spoken: threading.Event,
    seen: list[bytes],
    pipelining: bool,
    tls: ssl.SSLContext | None = None,
) -> None:
    """A server that answers up to its 354, then, once the first line of content has
    come, writes ``early`` while the client still streams the rest (the audit's server:
    a reply before the end of data, RFC 5321 §4.1.1.4), and answers the final dot only
    when ``early`` is empty (an honest server). ``spoken`` is set once ``early`` is out.
    With ``tls``, the session is TLS from the first byte (RFC 8314)."""
    conn, _ = listener.accept()
    if tls is not None:
        conn = tls.wrap_socket(conn, server_side=True)
    with conn, conn.makefile("rb") as stream:
        conn.sendall(b"220 mx.pqr.example ESMTP\r\n")
        seen.append(stream.readline())
        offer = b"250-PIPELINING\r\n" if pipelining else b""
        conn.sendall(b"250-mx.pqr.example\r\n" + offer + b"250 ENHANCEDSTATUSCODES\r\n")
        for _ in range(3):  # MAIL, RCPT, DATA
            line = stream.readline()
            seen.append(line)
            conn.sendall(b"354 go ahead\r\n" if line.startswith(b"DATA") else b"250 2.1.0 ok\r\n")
        seen.append(stream.readline())  # the first line of content
        conn.sendall(early)
        spoken.set()
        while line := stream.readline():
            seen.append(line)
            if line == b".\r\n" and not early:
                conn.sendall(b"250 2.0.0 queued\r\n")
            elif line.startswith(b"QUIT"):
                conn.sendall(b"221 2.0.0 bye\r\n")


_PIECES = (b"Subject: x\r\n\r\nfirst\r\n", b"second\r\n", b"third\r\n")


def _streamed(spoken: threading.Event, *, wait_at: int = 2) -> Iterator[bytes]:
    """Content in three pieces, with a wait for the server to have spoken before the
    piece at ``wait_at`` (3: before the source ends). The client writes each piece
    as it reads the next, so the pieces before the one read after the wait are out
    when the server speaks (with 0, none is)."""
    for index, piece in enumerate(_PIECES):
        if index == wait_at:
            spoken.wait(10)
        yield piece
    if wait_at == len(_PIECES):
        spoken.wait(10)


async def _streamed_async(
    adapter: str, spoken: threading.Event, *, wait_at: int = 2, blocking: bool = False
) -> AsyncIterator[bytes]:
    """:func:`_streamed` for an async client, waiting without blocking its loop (with
    ``blocking``, a source that blocks it, as one reading a slow disk does)."""
    for index, piece in enumerate(_PIECES):
        if index == wait_at:
            await _wait_for(adapter, spoken, blocking=blocking)
        yield piece
    if wait_at == len(_PIECES):
        await _wait_for(adapter, spoken, blocking=blocking)


async def _wait_for(adapter: str, spoken: threading.Event, *, blocking: bool = False) -> None:
    if blocking:
        spoken.wait(10)
    elif adapter == "asyncio":
        await asyncio.to_thread(spoken.wait, 10)
    else:
        await trio.to_thread.run_sync(spoken.wait, 10)


def _stream_one(
    adapter: str,
    port: int,
    spoken: threading.Event,
    *,
    wait_at: int = 2,
    blocking: bool = False,
    tls: ssl.SSLContext | None = None,
) -> Any:
    """Send one message of streamed content over ``adapter``'s client: its result.
    With ``tls`` (the client's context), TLS from the first byte."""
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    options: dict[str, Any] = {} if tls is None else {"tls_on_connect": True, "ssl_context": tls}
    if adapter == "sync":
        with module.SMTPClient("127.0.0.1", port, timeout=10, **options) as client:
            content = _streamed(spoken, wait_at=wait_at)
            return client.send_message(content, "a@abc.example", "b@pqr.example")

    async def session() -> Any:
        async with module.SMTPClient("127.0.0.1", port, **options) as client:
            content = _streamed_async(adapter, spoken, wait_at=wait_at, blocking=blocking)
            return await client.send_message(content, "a@abc.example", "b@pqr.example")

    return run(adapter, session)


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
@pytest.mark.parametrize("pipelining", [False, True])
@pytest.mark.parametrize(
    ("early", "error", "code"),
    [
        (b"250 2.0.0 queued before the dot\r\n", "SMTPProtocolError", None),
        (b"421 4.3.2 going down\r\n", "SMTPConnectionError", 421),
    ],
)
def test_a_reply_while_the_content_streams_is_never_the_answer_to_its_end(
    adapter: str,
    listener: socket.socket,
    pipelining: bool,
    early: bytes,
    error: str,
    code: int | None,
) -> None:
    """RFC 5321 §3.3, §4.1.1.4: only the reply after the end of data answers it. A
    reply that came while the content went out, before the end, ends the session
    (a 421 as the server's close, §3.8): the message is not reported delivered, and
    no final dot goes out behind it."""
    spoken = threading.Event()
    seen: list[bytes] = []
    thread = threading.Thread(
        target=_serve_early_reply, args=(listener, early, spoken, seen, pipelining)
    )
    thread.start()
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    try:
        with pytest.raises(getattr(module, error)) as raised:
            _stream_one(adapter, listener.getsockname()[1], spoken)
    finally:
        thread.join(10)
    assert raised.value.code == code
    assert raised.value.result is None  # nothing delivered: the failure stays temporary
    if code is None:
        assert "before the end of the message" in str(raised.value)
    assert b".\r\n" not in seen


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
@pytest.mark.parametrize("pipelining", [False, True])
def test_streamed_content_to_an_honest_server_is_delivered(
    adapter: str, listener: socket.socket, pipelining: bool
) -> None:
    """The look at what came before the end finds nothing from a server that waits
    for the dot: no false alarm."""
    spoken = threading.Event()
    seen: list[bytes] = []
    thread = threading.Thread(
        target=_serve_early_reply, args=(listener, b"", spoken, seen, pipelining)
    )
    thread.start()
    try:
        result = _stream_one(adapter, listener.getsockname()[1], spoken)
    finally:
        thread.join(10)
    assert [str(recipient.recipient) for recipient in result.delivered] == ["b@pqr.example"]
    assert b"third\r\n" in seen and b".\r\n" in seen


@pytest.mark.parametrize(
    ("adapter", "blocking"),
    [("sync", False), ("asyncio", False), ("asyncio", True), ("trio", False), ("trio", True)],
)
@pytest.mark.parametrize(
    ("early", "error", "code"),
    [
        (b"250 2.0.0 queued before the dot\r\n", "SMTPProtocolError", None),
        (b"421 4.3.2 going down\r\n", "SMTPConnectionError", 421),
    ],
)
def test_a_reply_while_the_content_streams_over_tls_is_never_the_answer_to_its_end(
    adapter: str,
    blocking: bool,
    listener: socket.socket,
    tls: TLSFiles,
    early: bytes,
    error: str,
    code: int | None,
) -> None:
    """As :func:`test_a_reply_while_the_content_streams_is_never_the_answer_to_its_end`,
    over TLS, where a reply waits as a record that no read without waiting can give
    (trio), or in the socket while a source that blocks the event loop is read
    (asyncio): the client sees the socket readable and reads the record before the
    end goes out."""
    spoken = threading.Event()
    seen: list[bytes] = []
    thread = threading.Thread(
        target=_serve_early_reply,
        args=(listener, early, spoken, seen, True, tls.server_context),
    )
    thread.start()
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    port = listener.getsockname()[1]
    try:
        with pytest.raises(getattr(module, error)) as raised:
            _stream_one(
                adapter, port, spoken, wait_at=3, blocking=blocking, tls=tls.client_context
            )
    finally:
        thread.join(10)
    assert raised.value.code == code
    assert raised.value.result is None
    assert b".\r\n" not in seen


def _readable_for_nothing() -> bool:
    """A link's ``arrived`` for a socket that is readable for bytes with no reply in
    them: a TLS record that carries no application data (a KeyUpdate, a session
    ticket sent late, RFC 8446 §4.6), which the read under it decrypts to nothing
    and then waits on."""
    return True


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_readable_socket_that_holds_no_reply_delays_the_end_only_briefly(
    adapter: str, listener: socket.socket
) -> None:
    """The look before the end of data reads what the socket holds for a moment, not
    for the ``data_block`` timeout (60 s here): finding no reply, it writes the end,
    and the honest server's message is delivered (the review's KeyUpdate sent after
    the 354 by ``openssl s_server``, which failed as ``SMTPTimeout`` after 180 s)."""
    spoken = threading.Event()
    seen: list[bytes] = []
    thread = threading.Thread(target=_serve_early_reply, args=(listener, b"", spoken, seen, True))
    thread.start()
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    timeouts = dataclasses.replace(module.Timeouts(), data_block=60.0)
    port = listener.getsockname()[1]

    async def session() -> Any:
        async with module.SMTPClient("127.0.0.1", port, timeouts=timeouts) as client:
            client._transport.arrived = _readable_for_nothing
            content = _streamed_async(adapter, spoken, wait_at=3)
            return await client.send_message(content, "a@abc.example", "b@pqr.example")

    started = time.monotonic()
    try:
        result = run(adapter, session)
    finally:
        thread.join(70)
    assert time.monotonic() - started < 10
    assert [str(recipient.recipient) for recipient in result.delivered] == ["b@pqr.example"]
    assert b".\r\n" in seen


def _serve_extra_bdat_reply(
    listener: socket.socket, spoken: threading.Event, seen: list[bytes]
) -> None:
    """A CHUNKING server that answers the first BDAT chunk twice, the second time a
    moment later (while the client reads its next piece), and never answers the LAST
    chunk: any reply the client takes for the LAST is one meant for another chunk."""
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as stream:
        conn.sendall(b"220 mx.pqr.example ESMTP\r\n")
        seen.append(stream.readline())
        conn.sendall(b"250-mx.pqr.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        chunks = 0
        while line := stream.readline():
            seen.append(line)
            if line.startswith(b"BDAT"):
                stream.read(int(line.split()[1]))
                chunks += 1
                if line.rstrip().endswith(b"LAST"):
                    continue
                conn.sendall(b"250 2.0.0 chunk\r\n")
                if chunks == 1:
                    time.sleep(0.2)  # the client has read the first reply by then
                    conn.sendall(b"250 2.0.0 queued, once more\r\n")
                    spoken.set()
            elif line.startswith(b"QUIT"):
                conn.sendall(b"221 2.0.0 bye\r\n")
            else:
                conn.sendall(b"250 2.1.0 ok\r\n")


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_reply_beyond_the_bdat_chunks_sent_answers_no_later_chunk(
    adapter: str, listener: socket.socket
) -> None:
    """RFC 3030 §2: one reply a chunk. A second reply to a chunk, come while the client
    read its next piece, is looked at before the next BDAT goes out: paired with it,
    the reply to that chunk would pass for the LAST's, and the message for delivered."""
    spoken = threading.Event()
    seen: list[bytes] = []
    thread = threading.Thread(target=_serve_extra_bdat_reply, args=(listener, spoken, seen))
    thread.start()
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    try:
        with pytest.raises(module.SMTPProtocolError, match="unsolicited reply"):
            _stream_one(adapter, listener.getsockname()[1], spoken)
    finally:
        thread.join(10)
    assert [line.split()[0] for line in seen].count(b"BDAT") == 1


def _serve_second_rcpt_reply(
    listener: socket.socket, spoken: threading.Event, seen: list[bytes]
) -> None:
    """A CHUNKING server that answers RCPT twice, the second time a moment later (while
    the client reads its content), and never answers the LAST chunk: a client that
    takes the second for its first chunk's reply takes each chunk's for the next one's,
    and the last for the LAST's."""
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as stream:
        conn.sendall(b"220 mx.pqr.example ESMTP\r\n")
        seen.append(stream.readline())
        conn.sendall(b"250-mx.pqr.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        while line := stream.readline():
            seen.append(line)
            if line.startswith(b"BDAT"):
                stream.read(int(line.split()[1]))
                if not line.rstrip().endswith(b"LAST"):
                    conn.sendall(b"250 2.0.0 chunk\r\n")
            elif line.startswith(b"RCPT"):
                conn.sendall(b"250 2.1.5 ok\r\n")
                time.sleep(0.2)  # the client reads its content by then
                conn.sendall(b"250 2.0.0 queued early\r\n")
                spoken.set()
            elif line.startswith(b"QUIT"):
                conn.sendall(b"221 2.0.0 bye\r\n")
            else:
                conn.sendall(b"250 2.1.0 ok\r\n")


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_reply_while_the_first_chunk_is_read_is_not_its_answer(
    adapter: str, listener: socket.socket
) -> None:
    """RFC 3030 §2: one reply a chunk, and none before it. Content read from a source
    takes time (here the second piece, which the first chunk waits for: the first is
    read ahead before MAIL), and a reply come meanwhile, before the first BDAT went
    out, is looked at first: taken for that chunk's reply it would shift every later
    one, and the message would pass for delivered though the server never answered
    its LAST."""
    spoken = threading.Event()
    seen: list[bytes] = []
    thread = threading.Thread(target=_serve_second_rcpt_reply, args=(listener, spoken, seen))
    thread.start()
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    try:
        with pytest.raises(module.SMTPProtocolError) as raised:
            _stream_one(adapter, listener.getsockname()[1], spoken, wait_at=1)
    finally:
        thread.join(10)
    assert raised.value.result is None
    assert not any(line.startswith(b"BDAT") for line in seen)


def _serve_421_then_reset(
    listener: socket.socket, chunking: bool, spoken: threading.Event, seen: list[bytes]
) -> None:
    """A server that, once the content has begun to come (the first line after its 354,
    or the two chunks before the LAST, which it answers), writes ``421`` and resets the connection
    (SO_LINGER 0): RFC 5321 §3.8's shutdown, then a close the client reads as an error.
    ``spoken`` is set once the reset is out, while the client's source still produces."""
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as stream:
        conn.sendall(b"220 mx.pqr.example ESMTP\r\n")
        seen.append(stream.readline())
        offer = b"250 CHUNKING\r\n" if chunking else b"250 PIPELINING\r\n"
        conn.sendall(b"250-mx.pqr.example\r\n" + offer)
        for _ in range(3 if not chunking else 2):  # MAIL, RCPT (and DATA)
            line = stream.readline()
            seen.append(line)
            conn.sendall(b"354 go ahead\r\n" if line.startswith(b"DATA") else b"250 2.1.0 ok\r\n")
        if chunking:
            for _ in range(2):  # the chunks sent before the source ends: all but the LAST
                line = stream.readline()
                seen.append(line)
                stream.read(int(line.split()[1]))
                conn.sendall(b"250 2.0.0 chunk\r\n")
        else:
            seen.append(stream.readline())
        conn.sendall(b"421 4.3.2 going down\r\n")
        time.sleep(0.05)  # the 421 is in the client's kernel before the reset
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    spoken.set()


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_a_421_then_a_reset_while_the_content_streams_ends_with_the_421(
    adapter: str, listener: socket.socket, chunking: bool
) -> None:
    """A 421 (RFC 5321 §3.8) followed by a reset, come while the source still produces:
    the look before the end (or the next chunk) meets the reset after reading the 421.
    A failed read that does not wait is the end of the stream, so the session ends as
    the server's close carrying its 421, never with a bare ``OSError``."""
    spoken = threading.Event()
    seen: list[bytes] = []
    thread = threading.Thread(
        target=_serve_421_then_reset, args=(listener, chunking, spoken, seen)
    )
    thread.start()
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    try:
        with pytest.raises(module.SMTPConnectionError) as raised:
            _stream_one(adapter, listener.getsockname()[1], spoken, wait_at=3)
    finally:
        thread.join(10)
    assert raised.value.code == 421
    assert raised.value.result is None


# -- POP3 --------------------------------------------------------------------------------


def _serve_pop3(
    listener: socket.socket,
    behind: bytes,
    unasked: bytes,
    sent: threading.Event,
    seen: list[bytes],
) -> None:
    """A POP3 server that writes ``unasked`` behind its answer to ``behind``: in the
    same write, or (``behind`` NOOP) a moment after it, while the client is idle;
    ``b""`` closes the connection there."""
    conn, _ = listener.accept()
    answers = {
        b"CAPA": b"+OK\r\nUSER\r\n.\r\n",
        b"LIST": b"+OK\r\n1 10\r\n.\r\n",
        b"DELE": b"-ERR no such message\r\n",
    }
    with conn, conn.makefile("rb") as stream:
        conn.sendall(b"+OK ready\r\n")
        while line := stream.readline():
            seen.append(line)
            verb = line[:4].upper()
            answer = answers.get(verb, b"+OK\r\n")
            if verb != behind:
                conn.sendall(answer)
            elif verb == b"NOOP":
                conn.sendall(answer)
                if unasked:
                    conn.sendall(unasked)
                else:
                    conn.shutdown(socket.SHUT_WR)
                sent.set()
            else:
                conn.sendall(answer + unasked)


async def _pop3_idle_until_arrived(adapter: str, sent: threading.Event) -> None:
    """Wait until the server has written what it writes while the client is idle, and
    a moment more for it to reach the client's side."""
    if adapter == "asyncio":
        await asyncio.to_thread(sent.wait, 10)
        await asyncio.sleep(0.2)
    else:
        await trio.to_thread.run_sync(sent.wait, 10)
        await trio.sleep(0.2)


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
@pytest.mark.parametrize(
    ("behind", "unasked", "error"),
    [
        (b"CAPA", b"+OK surprise\r\n", "POP3ProtocolError"),  # at connect, multi-line
        (b"PASS", b"-ERR surprise\r\n", "POP3ProtocolError"),
        (b"LIST", b"+OK\r\n1 10\r\n.\r\n", "POP3ProtocolError"),
        (b"NOOP", b"+OK surprise\r\n", "POP3ProtocolError"),  # a moment later, idle
        (b"NOOP", b"", "POP3ConnectionError"),  # the server closed, idle
    ],
)
def test_a_pop3_response_no_command_asked_for_ends_the_session(
    adapter: str, listener: socket.socket, behind: bytes, unasked: bytes, error: str
) -> None:
    """Never paired with the next command: that would read the refused ``DELE``
    below as done, and every later answer as the one before's."""
    sent = threading.Event()
    seen: list[bytes] = []
    thread = threading.Thread(target=_serve_pop3, args=(listener, behind, unasked, sent, seen))
    thread.start()
    port = listener.getsockname()[1]
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    try:
        if adapter == "sync":
            with (
                pytest.raises(getattr(module, error)),
                module.POP3Client(
                    "127.0.0.1", port, timeout=10, stls=False, allow_plaintext_auth=True
                ) as client,
            ):
                client.login("u", "p")
                client.list()
                client.noop()
                sent.wait(10)
                time.sleep(0.2)
                client.delete(1)
        else:

            async def session() -> None:
                async with module.POP3Client(
                    "127.0.0.1", port, stls=False, allow_plaintext_auth=True
                ) as client:
                    await client.login("u", "p")
                    await client.list()
                    await client.noop()
                    await _pop3_idle_until_arrived(adapter, sent)
                    await client.delete(1)

            with pytest.raises(getattr(module, error)):
                run(adapter, session)
    finally:
        thread.join(10)
    verbs = [line[:4].upper() for line in seen]
    assert b"DELE" not in verbs  # nothing went out behind the unasked bytes
    assert verbs[-1] == behind.upper()


# -- a server that keeps the socket full -------------------------------------------------


class _Flood:
    """A link's ``receive_nowait`` over a server that writes unasked bytes faster than
    they are read: every call finds another chunk, as a blocking client's look at its
    socket does (the audit's server grew it to gigabytes). ``taken`` counts what the
    client read; after ``most`` octets the flood ends, lest an unbounded reader run on."""

    def __init__(self, chunk: bytes, most: int = 16 * 1024 * 1024) -> None:
        self.chunk = chunk
        self.most = most
        self.taken = 0

    def __call__(self, max_bytes: int) -> bytes | None:
        if self.taken >= self.most:
            return None
        data = self.chunk[:max_bytes]
        self.taken += len(data)
        return data


def _flooded(session: Any, flood: _Flood) -> None:
    """Make the open ``session`` (an async client, or a blocking one's session) look
    at ``flood`` for what came unasked; its link no longer ``settled``, as a socket a
    server floods never is (the SMTP clients ask that before a message)."""
    session._transport.receive_nowait = flood
    session._transport.settled = lambda: False


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_bytes_flooding_in_unasked_are_read_no_further_than_the_machine_holds(
    adapter: str, protocol: str, listener: socket.socket
) -> None:
    """Before a command the client takes what came unasked; it stops once its machine
    holds more than ``max_buffered`` (no reply is that long) instead of reading as long
    as the server keeps writing, and the session ends with the protocol error."""
    sent = threading.Event()
    seen: list[bytes] = []
    if protocol == "smtp":
        target: Any = _serve
        args: tuple[Any, ...] = (listener, b"", sent, seen)
        flood = _Flood(b"4" + b"2" * 65535)
    else:
        target, args = _serve_pop3, (listener, b"none", b"", sent, seen)
        flood = _Flood(b"+" + b"O" * 65535)
    thread = threading.Thread(target=target, args=args)
    thread.start()
    port = listener.getsockname()[1]
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    error = getattr(module, "SMTPProtocolError" if protocol == "smtp" else "POP3ProtocolError")
    message = b"Subject: x\r\n\r\nx\r\n"
    machine: Any = None
    try:
        if adapter == "sync":
            with pytest.raises(error):
                if protocol == "smtp":
                    with module.SMTPClient("127.0.0.1", port, timeout=10) as client:
                        machine = client.connection
                        _flooded(client._session, flood)
                        client.send_message(message, "a@abc.example", "b@pqr.example")
                else:
                    with module.POP3Client(
                        "127.0.0.1", port, timeout=10, stls=False, allow_plaintext_auth=True
                    ) as client:
                        client.login("u", "p")
                        machine = client.connection
                        _flooded(client._session, flood)
                        client.noop()
        else:

            async def session() -> None:
                nonlocal machine
                if protocol == "smtp":
                    async with module.SMTPClient("127.0.0.1", port) as client:
                        machine = client.connection
                        _flooded(client, flood)
                        await client.send_message(message, "a@abc.example", "b@pqr.example")
                else:
                    async with module.POP3Client(
                        "127.0.0.1", port, stls=False, allow_plaintext_auth=True
                    ) as client:
                        await client.login("u", "p")
                        machine = client.connection
                        _flooded(client, flood)
                        await client.noop()

            with pytest.raises(error):
                run(adapter, session)
    finally:
        thread.join(10)
    assert 0 < flood.taken <= machine.max_buffered + len(flood.chunk)
    assert b"MAIL" not in b"".join(seen) and b"NOOP" not in b"".join(seen)
