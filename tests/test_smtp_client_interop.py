"""The client machine against real servers: aiosmtpd and Postfix's smtp-sink.

A blocking socket (``RawSmtpSession`` from tests/peers.py) carries the
machine's bytes; nothing of the adapters is involved. Each test checks what
the server really received (envelope and every byte of content) against
what the client machine was asked to send, and checks the client's view of
the replies (per recipient) against what the server was told to answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from peers import LOOPBACK, RawSmtpSession, free_port, smtp_sink
from smtpcore import NEED_DATA, PAUSED
from smtpcore.address import Mailbox, parse_mailbox
from smtpcore.smtp import (
    ClientConnection,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    State,
    TransactionResult,
    Vrfy,
)

pytestmark = pytest.mark.interop

ALICE = parse_mailbox("alice@abc.example")
BOB = parse_mailbox("bob@pqr.example")
CAROL = parse_mailbox("carol@pqr.example")
NOBODY = parse_mailbox("nobody@pqr.example")

# Dots at line starts, a bare LF and a bare CR, a lone dot line, 8-bit text.
CONTENT = (
    b"From: alice@abc.example\r\nSubject: interop\r\n\r\n"
    b".a line with a leading dot\r\n..two dots\nbare LF above\rbare CR\r\n"
    b".\r\nafter a lone dot\r\nend without CRLF"
)


def canonical(content: bytes) -> bytes:
    """The content a server must receive: CRLF everywhere, ending in CRLF."""
    content = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return content if content.endswith(b"\r\n") or not content else content + b"\r\n"


def _state(conn: ClientConnection) -> State:
    return conn.state


class Client:
    """A client machine on a blocking socket: write what it sends, feed what comes."""

    def __init__(self, session: RawSmtpSession, conn: ClientConnection) -> None:
        self.session = session
        self.conn = conn
        self.replies: list[Reply] = []

    def exchange(self, *events: Event) -> list[Reply]:
        """Send ``events`` in one write, then read until no reply is awaited."""
        data = b"".join(self.conn.send(event) for event in events)
        if data:
            self.session.send(data)
        replies: list[Reply] = []
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self.conn.receive_data(self.session.recv_some())
            elif event is PAUSED or isinstance(event, ConnectionClosed):
                self.replies += replies
                return replies
            else:
                assert isinstance(event, Reply)
                replies.append(event)

    def hello(self) -> None:
        [greeting] = self.exchange()
        assert greeting.code == 220
        [reply] = self.exchange(Lhlo("client.test") if self.conn.lmtp else Ehlo("client.test"))
        assert reply.code == 250, reply

    def send_message(
        self,
        sender: Mailbox | None,
        recipients: Sequence[Mailbox],
        content: bytes,
        *,
        params: dict[str, str | None] | None = None,
        chunk_size: int = 7,
    ) -> TransactionResult:
        """One mail transaction, pipelined when the server allows it."""
        conn = self.conn
        envelope: list[Event] = [Mail(sender, params), *(Rcpt(r) for r in recipients)]
        if conn.extensions.pipelining:
            self.exchange(*envelope, Data())
        else:
            for event in envelope:
                self.exchange(event)
            result = conn.transaction
            if result is not None and result.accepted:
                self.exchange(Data())
        if _state(conn) is State.DATA:
            pieces = [content[i : i + chunk_size] for i in range(0, len(content), chunk_size)]
            self.exchange(*(MessageData(piece) for piece in pieces), EndOfMessage())
        elif _state(conn) in (State.MAIL, State.RCPT):
            self.exchange(Rset())
        result = conn.transaction
        assert result is not None and result.complete
        return result

    def quit(self) -> None:
        [reply] = self.exchange(Quit())
        assert reply.code == 221
        assert _state(self.conn) is State.CLOSED
        assert self.session.recv_some() == b""


@pytest.fixture
def connect() -> Iterator[Any]:
    """Open client sessions for a test and close them all at the end."""
    sessions: list[RawSmtpSession] = []

    def open_client(address: tuple[str, int], *, lmtp: bool = False) -> Client:
        session = RawSmtpSession.connect(*address)
        sessions.append(session)
        return Client(session, ClientConnection("client.test", lmtp=lmtp))

    yield open_client
    for session in sessions:
        session.close()


# -- aiosmtpd -------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Collector:
    """An aiosmtpd handler that refuses ``nobody@`` and keeps every message."""

    messages: list[Received] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.mail_options),
                list(envelope.rcpt_tos),
                envelope.original_content,
            )
        )
        return "250 2.0.0 Message accepted"


@pytest.fixture
def aiosmtpd_server() -> Iterator[tuple[tuple[str, int], Collector]]:
    collector = Collector()
    port = free_port()
    controller = Controller(
        collector,
        hostname=LOOPBACK,
        port=port,
        server_hostname="aiosmtpd.test",
        enable_SMTPUTF8=True,
        data_size_limit=100_000,
    )
    controller.start()
    try:
        yield (LOOPBACK, port), collector
    finally:
        controller.stop()


def test_aiosmtpd_partial_acceptance_and_content(
    aiosmtpd_server: tuple[tuple[str, int], Collector], connect: Any
) -> None:
    address, collector = aiosmtpd_server
    client: Client = connect(address)
    client.hello()
    ext = client.conn.extensions
    # aiosmtpd does not offer PIPELINING: the machine goes one command at a time.
    assert not ext.pipelining and ext.eight_bit_mime and ext.smtputf8 and ext.size == 100_000
    content = CONTENT + b"\r\ncaf\xc3\xa9\r\n"
    result = client.send_message(
        ALICE,
        [BOB, NOBODY, CAROL],
        content,
        params={"BODY": "8BITMIME", "SIZE": str(len(content))},
    )
    assert [r.recipient for r in result.accepted] == [BOB, CAROL]
    [refused] = result.refused
    # No ENHANCEDSTATUSCODES offered: the code stays part of the text (RFC 2034 §3).
    assert refused.recipient == NOBODY
    assert refused.reply == Reply(550, "5.1.1 No such user here")
    assert [r.recipient for r in result.delivered] == [BOB, CAROL]
    client.quit()
    [message] = collector.messages
    assert message.mail_from == "alice@abc.example"
    assert message.rcpt_tos == ["bob@pqr.example", "carol@pqr.example"]
    assert sorted(message.mail_options) == ["BODY=8BITMIME", f"SIZE={len(content)}"]
    assert message.content == canonical(content)


def test_aiosmtpd_several_transactions_and_session_commands(
    aiosmtpd_server: tuple[tuple[str, int], Collector], connect: Any
) -> None:
    address, collector = aiosmtpd_server
    client: Client = connect(address)
    client.hello()
    [noop] = client.exchange(Noop())
    [vrfy] = client.exchange(Vrfy("bob"))
    assert noop.code == 250 and vrfy.code == 252
    # Every recipient refused: no DATA, the transaction is reset.
    nothing = client.send_message(ALICE, [NOBODY], b"never sent\r\n")
    assert nothing.refused and not nothing.delivered and nothing.data_reply is None
    big = b"".join(b"line %05d .\r\n.%05d\r\n" % (i, i) for i in range(3000))
    first = client.send_message(None, [BOB], big, chunk_size=65536)
    second = client.send_message(ALICE, [CAROL], b"", chunk_size=1)
    assert first.delivered and second.delivered
    client.quit()
    assert [(m.mail_from, m.rcpt_tos) for m in collector.messages] == [
        ("<>", ["bob@pqr.example"]),
        ("alice@abc.example", ["carol@pqr.example"]),
    ]
    assert [m.content for m in collector.messages] == [big, b""]


def test_aiosmtpd_smtputf8(
    aiosmtpd_server: tuple[tuple[str, int], Collector], connect: Any
) -> None:
    address, collector = aiosmtpd_server
    client: Client = connect(address)
    client.hello()
    sender = parse_mailbox("pelé@exämple.test")
    recipient = parse_mailbox("用户@例子.test")
    content = "Subject: ünïcödé\r\n\r\nbonjour\r\n".encode()
    result = client.send_message(sender, [recipient], content, params={"SMTPUTF8": None})
    assert result.delivered
    client.quit()
    [message] = collector.messages
    assert message.mail_from == "pelé@exämple.test"
    assert message.rcpt_tos == ["用户@例子.test"]
    assert message.content == content


# -- Postfix smtp-sink ---------------------------------------------------------


def test_smtp_sink_pipelined_delivery(tmp_path: Path, connect: Any) -> None:
    with smtp_sink(dump_dir=tmp_path / "sink") as sink:
        client: Client = connect(sink.address)
        client.hello()
        assert client.conn.extensions.pipelining
        assert client.conn.extensions.enhanced_status_codes
        results = [
            client.send_message(ALICE, [BOB, CAROL], CONTENT, chunk_size=size)
            for size in (1, 5, 4096)
        ]
        client.quit()
        messages = sink.messages()
    assert all(result.delivered == result.accepted for result in results)
    assert [r.recipient for r in results[0].delivered] == [BOB, CAROL]
    # MAIL, two RCPTs and DATA went out in one write; their replies came back matched.
    answered = [reply.code for reply in client.replies[2:6]]
    assert answered == [250, 250, 250, 354]
    assert len(messages) == 3
    for message in messages:
        assert message.client_proto == "ESMTP"
        assert message.helo == "client.test"
        assert message.mail_args == "<alice@abc.example>"
        assert message.rcpt_args == ("<bob@pqr.example>", "<carol@pqr.example>")
        assert message.content == canonical(CONTENT).replace(b"\r\n", b"\n")


def test_smtp_sink_lmtp_one_reply_per_recipient(tmp_path: Path, connect: Any) -> None:
    with smtp_sink(dump_dir=tmp_path / "sink", lmtp=True) as sink:
        client: Client = connect(sink.address, lmtp=True)
        client.hello()
        result = client.send_message(ALICE, [BOB, CAROL, ALICE], CONTENT)
        client.quit()
        [message] = sink.messages()
    assert len(result.end_replies) == 3
    assert [(r.recipient, r.delivered) for r in result.recipients] == [
        (BOB, True),
        (CAROL, True),
        (ALICE, True),
    ]
    assert all(r.delivery is not None and r.delivery.code == 250 for r in result.recipients)
    assert message.client_proto == "LMTP"
    assert message.rcpt_args == ("<bob@pqr.example>", "<carol@pqr.example>", "<alice@abc.example>")
    assert message.content == canonical(CONTENT).replace(b"\r\n", b"\n")


def test_smtp_sink_refusing_every_recipient(tmp_path: Path, connect: Any) -> None:
    # -f RCPT rejects every RCPT with a 5xx and turns PIPELINING off.
    with smtp_sink(dump_dir=tmp_path / "sink", extra_args=["-f", "RCPT"]) as sink:
        client: Client = connect(sink.address)
        client.hello()
        assert not client.conn.extensions.pipelining
        result = client.send_message(ALICE, [BOB, CAROL], CONTENT)
        assert _state(client.conn) is State.READY
        client.quit()
        assert sink.messages() == []
    assert [r.refused for r in result.recipients] == [True, True]
    assert all(r.reply is not None and r.reply.code // 100 == 5 for r in result.recipients)


def test_smtp_sink_421_closes_the_session(connect: Any) -> None:
    # -Q MAIL answers MAIL with 421 and hangs up (RFC 5321 §3.8).
    with smtp_sink(extra_args=["-Q", "MAIL"]) as sink:
        client: Client = connect(sink.address)
        client.hello()
        replies = client.exchange(Mail(ALICE), Rcpt(BOB), Data())
    assert [reply.code for reply in replies] == [421]
    assert _state(client.conn) is State.CLOSED
    assert client.conn.answered == Mail(ALICE)
    assert client.conn.pending == (Rcpt(BOB), Data())


def test_smtp_sink_without_enhanced_status_codes(tmp_path: Path, connect: Any) -> None:
    with smtp_sink(dump_dir=tmp_path / "sink", extra_args=["-E"]) as sink:
        client: Client = connect(sink.address)
        client.hello()
        assert not client.conn.extensions.enhanced_status_codes
        result = client.send_message(ALICE, [BOB], CONTENT)
        client.quit()
        [message] = sink.messages()
    assert all(reply.status is None for reply in client.replies)
    assert result.delivered and message.content == canonical(CONTENT).replace(b"\r\n", b"\n")
