"""Client and server machines back to back, as h11's ConnectionPair tests do.

Every byte the client machine writes goes to the server machine and every
reply back, each direction cut into random pieces. Whatever the envelope,
the content and the cuts, both sides must agree: the server sees the very
events the client sent and the content the client meant, and the client
matches every reply to the command and recipient it belongs to.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore import NEED_DATA, PAUSED
from smtpcore._lines import FramingPolicy
from smtpcore.address import Mailbox, parse_mailbox
from smtpcore.smtp import (
    BadCommand,
    ClientConnection,
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Lhlo,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    RejectedMessage,
    Reply,
    Rset,
    ServerConnection,
    State,
    TransactionResult,
)

ASCII_MAILBOXES = [
    parse_mailbox(text)
    for text in (
        "alice@abc.example",
        "bob@pqr.example",
        '"john doe"@pqr.example',
        "x.y+tag@[192.0.2.1]",
        "carol@[IPv6:2001:db8::1]",
    )
]
UTF8_MAILBOXES = [parse_mailbox(text) for text in ("pelé@exämple.test", "用户@例子.test")]

# Pieces chosen to land dots, CRs and LFs on every side of a chunk boundary.
CONTENT_PIECES = [
    b".",
    b"..",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"text ",
    b"\xc3\xa9",
]


@dataclass
class Transaction:
    sender: Mailbox | None
    utf8: bool
    recipients: list[tuple[Mailbox, bool]]
    """Each recipient, and whether the server accepts it."""
    delivered: list[bool]
    """LMTP: the outcome for each accepted recipient, in order."""
    content: bytes
    cuts: list[int]
    declare_size: bool


@dataclass
class Server:
    """The application around the server machine: answers from the plan."""

    conn: ServerConnection
    decisions: Iterator[bool] = field(default_factory=lambda: iter(()))
    outcomes: Iterator[bool] = field(default_factory=lambda: iter(()))
    commands: list[Command] = field(default_factory=list)
    contents: list[bytes] = field(default_factory=list)
    refused: list[Event] = field(default_factory=list)

    def serve(self) -> bytes:
        out = b""
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
                return out
            if isinstance(event, MessageData):
                self.contents[-1] += event.data
                continue
            if isinstance(event, Command):
                self.commands.append(event)
            if isinstance(event, (BadCommand, RejectedMessage)):
                self.refused.append(event)
                out += conn.send(event.reply)
            elif isinstance(event, (Ehlo, Lhlo)):
                out += conn.send(Reply(250, ""))
            elif isinstance(event, Rcpt):
                accept = next(self.decisions)
                out += conn.send(Reply(250, "ok") if accept else Reply(550, "no such user"))
            elif isinstance(event, Data):
                self.contents.append(b"")
                out += conn.send(Reply(354, "go ahead"))
            elif isinstance(event, EndOfMessage):
                for _ in range(conn.accepted_recipients if conn.lmtp else 1):
                    good = next(self.outcomes) if conn.lmtp else True
                    out += conn.send(Reply(250, "delivered") if good else Reply(452, "full"))
            elif isinstance(event, Quit):
                out += conn.send(Reply(221, "bye"))
            else:
                out += conn.send(Reply(250, "ok"))


class Link:
    """Moves bytes between the machines, cut into pieces of the given sizes."""

    def __init__(
        self, client: ClientConnection, server: Server, up: list[int], down: list[int]
    ) -> None:
        self.client = client
        self.server = server
        self.up = itertools.cycle(up)
        self.down = itertools.cycle(down)
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.replies: list[tuple[Reply, Event | None, Mailbox | None]] = []

    def send(self, *events: Event) -> None:
        for event in events:
            self.to_server += self.client.send(event)

    def run(self) -> None:
        """Deliver everything in flight, both ways, until both sides are quiet."""
        self._receive()
        while self.to_server or self.to_client:
            if self.to_server:
                size = next(self.up)
                self.server.conn.receive_data(bytes(self.to_server[:size]))
                del self.to_server[:size]
                self.to_client += self.server.serve()
            if self.to_client:
                size = next(self.down)
                self.client.receive_data(bytes(self.to_client[:size]))
                del self.to_client[:size]
                self._receive()

    def _receive(self) -> None:
        client = self.client
        while isinstance(event := client.next_event(), Reply):
            self.replies.append((event, client.answered, client.answered_recipient))


def _state(conn: ClientConnection | ServerConnection) -> State:
    """Read through a call, so that mypy does not pin the state after an assert."""
    return conn.state


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def _canonical(content: bytes, *, normalize: bool) -> bytes:
    """The content a server should deliver for what the client was given."""
    if normalize:
        content = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    return content


def run_session(
    transactions: list[Transaction],
    *,
    lmtp: bool,
    pipelining: bool,
    up: list[int],
    down: list[int],
    normalize: bool = True,
) -> None:
    server = Server(
        ServerConnection(
            "mx.test",
            lmtp=lmtp,
            pipelining=pipelining,
            framing=None if normalize else FramingPolicy.lenient(),
        )
    )
    client = ClientConnection("client.test", lmtp=lmtp, normalize_line_endings=normalize)
    link = Link(client, server, up, down)
    link.to_client += server.conn.send(Reply(220, "mx.test ESMTP"))
    link.run()
    link.send(Lhlo("client.test") if lmtp else Ehlo("client.test"))
    link.run()
    assert _state(client) is State.READY
    assert client.extensions.pipelining == pipelining
    sent: list[Command] = [Lhlo("client.test") if lmtp else Ehlo("client.test")]
    parsed = list(sent)
    for plan in transactions:
        params: dict[str, str | None] = {}
        if plan.utf8:
            params["SMTPUTF8"] = None
        if plan.declare_size:
            params["SIZE"] = str(len(plan.content))
        server.decisions = iter([accept for _, accept in plan.recipients])
        server.outcomes = iter(plan.delivered)
        group: list[Command] = [Mail(plan.sender, params)]
        group += [Rcpt(recipient) for recipient, _ in plan.recipients]
        accepted = any(accept for _, accept in plan.recipients)
        if pipelining:
            group.append(Data())
            link.send(*group)
            link.run()
        else:
            for command in group:
                link.send(command)
                link.run()
            if accepted:
                group.append(Data())
                link.send(Data())
                link.run()
        sent += group
        # DATA after every recipient was refused reaches the application as a BadCommand.
        parsed += group if accepted else [c for c in group if not isinstance(c, Data)]
        if _state(client) is State.DATA:
            for piece in _split(plan.content, plan.cuts):
                link.send(MessageData(piece))
            link.send(EndOfMessage())
            link.run()
        else:
            assert not accepted
            link.send(Rset())
            sent.append(Rset())
            parsed.append(Rset())
            link.run()
        assert _state(client) is State.READY
        result = client.transaction
        assert result is not None
        _check_result(result, plan, lmtp=lmtp)
    link.send(Quit())
    sent.append(Quit())
    parsed.append(Quit())
    link.run()
    assert _state(client) is State.CLOSED
    assert _state(server.conn) is State.CLOSED
    # The server saw exactly the commands the client sent, envelopes included.
    assert server.commands == parsed
    delivered = [plan for plan in transactions if any(a for _, a in plan.recipients)]
    assert server.contents == [_canonical(p.content, normalize=normalize) for p in delivered]
    assert all(isinstance(r, BadCommand) and r.line == b"DATA\r\n" for r in server.refused)
    # Every reply was matched to a command, in the order they were sent.
    answered = [event for _, event, _ in link.replies if not isinstance(event, EndOfMessage)]
    assert answered == [None, *sent]


def _check_result(result: TransactionResult, plan: Transaction, *, lmtp: bool) -> None:
    assert result.complete
    assert result.sender == plan.sender
    assert [r.recipient for r in result.recipients] == [m for m, _ in plan.recipients]
    assert [r.accepted for r in result.recipients] == [a for _, a in plan.recipients]
    accepted = [r for r in result.recipients if r.accepted]
    if not accepted:
        assert not result.delivered and not result.end_replies
        return
    assert result.data_reply is not None and result.data_reply.code == 354
    if lmtp:
        assert [r.delivered for r in accepted] == plan.delivered
        assert len(result.end_replies) == len(accepted)
    else:
        assert result.delivered == tuple(accepted)
        assert len(result.end_replies) == 1


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    utf8 = draw(st.booleans())
    pool = ASCII_MAILBOXES + (UTF8_MAILBOXES if utf8 else [])
    sender = draw(st.none() | st.sampled_from(pool))
    recipients = draw(
        st.lists(st.tuples(st.sampled_from(pool), st.booleans()), min_size=1, max_size=5)
    )
    accepted = sum(1 for _, accept in recipients if accept)
    delivered = draw(st.lists(st.booleans(), min_size=accepted, max_size=accepted))
    content = b"".join(draw(st.lists(st.sampled_from(CONTENT_PIECES), max_size=40)))
    cuts = draw(st.lists(st.integers(0, 400), max_size=8))
    return Transaction(sender, utf8, recipients, delivered, content, cuts, draw(st.booleans()))


sizes = st.lists(st.integers(1, 40), min_size=1, max_size=6)


@settings(max_examples=80)
@given(
    st.lists(transactions(), min_size=1, max_size=3),
    st.booleans(),
    st.booleans(),
    sizes,
    sizes,
)
def test_client_and_server_agree(
    plans: list[Transaction], lmtp: bool, pipelining: bool, up: list[int], down: list[int]
) -> None:
    run_session(plans, lmtp=lmtp, pipelining=pipelining, up=up, down=down)


@settings(max_examples=40)
@given(st.lists(transactions(), min_size=1, max_size=2), sizes, sizes)
def test_unnormalised_content_reaches_a_lenient_server_unchanged(
    plans: list[Transaction], up: list[int], down: list[int]
) -> None:
    run_session(plans, lmtp=False, pipelining=True, up=up, down=down, normalize=False)


def test_one_fixed_session_byte_by_byte() -> None:
    plan = Transaction(
        sender=ASCII_MAILBOXES[0],
        utf8=False,
        recipients=[(ASCII_MAILBOXES[1], True), (ASCII_MAILBOXES[2], False)],
        delivered=[True],
        content=b"Subject: hi\r\n\r\n.leading dot\n..two\r\n.",
        cuts=[1, 2, 3, 20],
        declare_size=True,
    )
    for lmtp, pipelining in itertools.product((False, True), repeat=2):
        run_session([plan, plan], lmtp=lmtp, pipelining=pipelining, up=[1], down=[1])
