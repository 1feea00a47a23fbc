"""Client and server machines back to back, as h11's ConnectionPair tests do.

Every byte the client machine writes goes to the server machine and every
reply back, each direction cut into reads of drawn sizes. Whatever the
envelope, the content and the cuts, both sides must agree: the server sees
the very events the client sent and the content the client meant, and the
client matches every reply to the command and recipient it belongs to.
The pair, the sessions and the data all come from :mod:`smtpcore.testing`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore._lines import FramingPolicy
from smtpcore.address import Mailbox
from smtpcore.smtp import (
    BadCommand,
    Bdat,
    ClientConnection,
    Command,
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
from smtpcore.testing import ConnectionPair, permissive_smtp_answer
from smtpcore.testing import strategies as sst


@dataclass
class Transaction:
    sender: Mailbox | None
    utf8: bool
    recipients: list[tuple[Mailbox, bool]]
    """Each recipient, and whether the server accepts it."""
    delivered: list[bool]
    """LMTP: the outcome for each accepted recipient, in order."""
    content: bytes
    cuts: list[bytes]
    """The content as the application hands it to the client, in pieces."""
    declare_size: bool


@dataclass
class Application:
    """The server's application: accepts recipients and delivers as planned."""

    decisions: Iterator[bool] = field(default_factory=lambda: iter(()))
    outcomes: Iterator[bool] = field(default_factory=lambda: iter(()))

    def __call__(self, conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
        if isinstance(event, Ehlo | Lhlo):
            return Reply(250, "")
        if isinstance(event, Rcpt):
            return Reply(250, "ok") if next(self.decisions) else Reply(550, "no such user")
        if isinstance(event, EndOfMessage):
            outcomes = [next(self.outcomes) if conn.lmtp else True]
            if conn.lmtp:
                outcomes += [next(self.outcomes) for _ in range(conn.accepted_recipients - 1)]
            return [Reply(250, "delivered") if good else Reply(452, "full") for good in outcomes]
        return permissive_smtp_answer(conn, event)


def _state(conn: ClientConnection | ServerConnection) -> State:
    """Read through a call, so that mypy does not pin the state after an assert."""
    return conn.state


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
    app = Application()
    server = ServerConnection(
        "mx.test",
        lmtp=lmtp,
        pipelining=pipelining,
        framing=None if normalize else FramingPolicy.lenient(),
    )
    client = ClientConnection("client.test", lmtp=lmtp, normalize_line_endings=normalize)
    pair = ConnectionPair(client, server, answer=app, client_chunks=up, server_chunks=down)
    hello: Command = Lhlo("client.test") if lmtp else Ehlo("client.test")
    pair.send(hello)
    assert _state(client) is State.READY
    assert client.extensions.pipelining == pipelining
    sent: list[Command] = [hello]
    parsed = list(sent)
    for plan in transactions:
        params: dict[str, str | None] = {}
        if plan.utf8:
            params["SMTPUTF8"] = None
        if plan.declare_size:
            params["SIZE"] = str(len(plan.content))
        app.decisions = iter([accept for _, accept in plan.recipients])
        app.outcomes = iter(plan.delivered)
        group: list[Command] = [Mail(plan.sender, params)]
        group += [Rcpt(recipient) for recipient, _ in plan.recipients]
        accepted = any(accept for _, accept in plan.recipients)
        if pipelining:
            group.append(Data())
            pair.send(*group)
        else:
            for command in group:
                pair.send(command)
            if accepted:
                group.append(Data())
                pair.send(Data())
        sent += group
        # DATA after every recipient was refused reaches the application as a BadCommand.
        parsed += group if accepted else [c for c in group if not isinstance(c, Data)]
        if _state(client) is State.DATA:
            pair.send(*[MessageData(piece) for piece in plan.cuts], EndOfMessage())
        else:
            assert not accepted
            pair.send(Rset())
            sent.append(Rset())
            parsed.append(Rset())
        assert _state(client) is State.READY
        result = client.transaction
        assert result is not None
        _check_result(result, plan, lmtp=lmtp)
    pair.send(Quit())
    sent.append(Quit())
    parsed.append(Quit())
    assert _state(client) is State.CLOSED
    assert _state(server) is State.CLOSED
    # The server saw exactly the commands the client sent, envelopes included.
    assert [event for event in pair.server_events if isinstance(event, Command)] == parsed
    delivered = [plan for plan in transactions if any(a for _, a in plan.recipients)]
    assert pair.messages == [_canonical(p.content, normalize=normalize) for p in delivered]
    refused = [e for e in pair.server_events if isinstance(e, BadCommand | RejectedMessage)]
    assert all(isinstance(r, BadCommand) and r.line == b"DATA\r\n" for r in refused)
    # Every reply was matched to a command, in the order they were sent.
    answered = [a.command for a in pair.answers if not isinstance(a.command, EndOfMessage)]
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
    pool = draw(st.lists(sst.mailboxes(utf8=utf8, at_limits=False), min_size=1, max_size=3))
    sender = draw(st.none() | st.sampled_from(pool))
    recipients = draw(
        st.lists(st.tuples(st.sampled_from(pool), st.booleans()), min_size=1, max_size=5)
    )
    accepted = sum(1 for _, accept in recipients if accept)
    delivered = draw(st.lists(st.booleans(), min_size=accepted, max_size=accepted))
    content = draw(sst.message_contents(long_lines=False, max_lines=12))
    cuts = [piece for piece in draw(sst.chunkings(content)) if piece]
    return Transaction(sender, utf8, recipients, delivered, content, cuts, draw(st.booleans()))


sizes = sst.chunk_sizes(max_size=40)


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
    content = b"Subject: hi\r\n\r\n.leading dot\n..two\r\n."
    plan = Transaction(
        sender=Mailbox("alice", "abc.example"),
        utf8=False,
        recipients=[
            (Mailbox("bob", "pqr.example"), True),
            (Mailbox("john doe", "pqr.example"), False),
        ],
        delivered=[True],
        content=content,
        cuts=[content[:1], content[1:2], content[2:3], content[3:20], content[20:]],
        declare_size=True,
    )
    for lmtp, pipelining in itertools.product((False, True), repeat=2):
        run_session([plan, plan], lmtp=lmtp, pipelining=pipelining, up=[1], down=[1])


def _chunked(content: bytes, pieces: list[bytes]) -> list[Event]:
    """``content`` in BDAT chunks, one per piece, the last one ``LAST``."""
    if not pieces:
        return [Bdat(0, last=True)]
    events: list[Event] = []
    for number, piece in enumerate(pieces, start=1):
        events += [Bdat(len(piece), last=number == len(pieces)), MessageData(piece)]
    assert b"".join(pieces) == content
    return events


def _lmtp_pair(max_message_size: int) -> ConnectionPair:
    server = ServerConnection("mx.test", lmtp=True, max_message_size=max_message_size)
    pair = ConnectionPair(ClientConnection("client.test", lmtp=True), server)
    pair.send(Lhlo("client.test"))
    return pair


_SENDER = Mailbox("a", "x.example")
_NEXT = Mailbox("d", "d.example")


def test_lmtp_chunk_refused_before_the_last_leaves_one_reply_for_the_last() -> None:
    """RFC 3030 §2: after a 552 to a chunk before the last, the pipelined ``BDAT
    LAST`` is out of sequence and answered once (503), not once per recipient
    (RFC 2033 §4.2 gives one each only to content that reached its end). The
    next transaction's replies are its own, and the refused message is not
    recorded as delivered."""
    pair = _lmtp_pair(max_message_size=8)
    client = pair.client
    b, c = Mailbox("b", "d.example"), Mailbox("c", "d.example")
    pair.send(
        Mail(_SENDER), Rcpt(b), Rcpt(c), *_chunked(b"0123456789abcde", [b"0123456789", b"abcde"])
    )
    first = client.transaction
    assert first is not None and first.complete
    assert _state(client) is State.READY
    assert [r.delivery and r.delivery.code for r in first.recipients] == [552, 552]
    assert not first.delivered
    pair.send(Mail(_SENDER), Rcpt(_NEXT), *_chunked(b"hi!", [b"hi!"]))
    second = client.transaction
    assert second is not None and second.complete
    assert [r.recipient for r in second.delivered] == [_NEXT]
    assert second.mail_reply is not None and second.mail_reply.code == 250
    pair.send(Quit())
    assert _state(client) is State.CLOSED


@settings(max_examples=60)
@given(
    st.lists(sst.mailboxes(at_limits=False), min_size=1, max_size=4),
    sst.message_contents(long_lines=False, max_lines=6),
    st.integers(min_value=4, max_value=64),
    st.data(),
)
def test_lmtp_client_counts_the_replies_its_server_sends_after_chunks(
    recipients: list[Mailbox], content: bytes, limit: int, data: st.DataObject
) -> None:
    """Whatever the chunks and the size limit, the client machine waits for as many
    replies after the content as the server machine sends (one per recipient for
    content that reached its end, one after a refused chunk), so the next
    transaction is answered in step."""
    pair = _lmtp_pair(max_message_size=limit)
    client = pair.client
    pieces = [piece for piece in data.draw(sst.chunkings(content)) if piece]
    # At most four chunks: past the server's error limit, the 503s to chunks behind
    # a refused one end the session (421), which is another test's story.
    pieces = [*pieces[:3], b"".join(pieces[3:])] if len(pieces) > 4 else pieces
    pair.send(Mail(_SENDER), *[Rcpt(r) for r in recipients], *_chunked(content, pieces))
    first = client.transaction
    assert first is not None and first.complete
    assert _state(client) is State.READY
    assert all(r.delivery is not None for r in first.recipients)
    assert len(first.delivered) == (len(recipients) if pair.messages else 0)
    if len(content) > limit:
        assert {r.delivery.code for r in first.recipients if r.delivery} == {552}
    pair.send(Mail(_SENDER), Rcpt(_NEXT), *_chunked(b"hi\r\n", [b"hi\r\n"]))
    second = client.transaction
    assert second is not None and second.complete
    assert [r.recipient for r in second.delivered] == [_NEXT]
    pair.send(Quit())
    assert _state(client) is State.CLOSED
