"""The client's per-message shortcuts give what the general paths give.

A message of bytes with text addresses and no parameters gets its ``MAIL``
and ``RCPT`` events from ones made once per address (``build_envelope``); a
transaction's result is made without the dataclass's constructor
(``_Transaction.snapshot``); and a client that sends one command at a time
writes each command and reads its reply in one step (``_exchange``), content
and its end included, most messages through a transaction written out for
them (``_everyday_transaction``). The first two are held to the general path
here; the third is run against servers without PIPELINING that answer, fail,
time out and split their replies, on the three clients, and held to the
general path (``_write`` and ``_reply``, which a trace takes) against servers
that answer every step of two messages as drawn, and may send more than was
asked between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from peers import ADAPTERS
from smtpcore.address import Mailbox
from smtpcore.smtp import (
    Data,
    EndOfMessage,
    EnhancedStatus,
    Event,
    Mail,
    Rcpt,
    Reply,
    ServerExtensions,
    TransactionResult,
)
from smtpcore.smtp._client_awaited import _Awaited, _awaited
from smtpcore.smtp._state import END_OF_DATA_RULE, RULES, Rule, State
from smtpcore.smtp._transaction import RecipientResult, _Transaction
from smtpcore.testing import Call, ScriptedConnection, ScriptedServer, Step, script
from smtpcore.testing import strategies as sst

T = TypeVar("T")

# -- the envelope ----------------------------------------------------------------------

OFFERED = st.sets(st.sampled_from(["SIZE", "SIZE 100", "8BITMIME", "SMTPUTF8", "PIPELINING"]))
ADDRESS = st.one_of(sst.mailboxes(at_limits=False), sst.mailboxes(utf8=True, at_limits=False)).map(
    str
)


def offer_of(keywords: set[str]) -> Any:
    from smtpcore._driver._smtp_envelope import Offer

    if {"SIZE", "SIZE 100"} <= keywords:
        keywords = keywords - {"SIZE"}
    return Offer.of(ServerExtensions.from_reply(Reply(250, ["mx.example", *sorted(keywords)])))


def envelope_or_error(offer: Any, content: bytes, sender: str, recipients: Any) -> object:
    from smtpcore._driver._smtp_envelope import build_envelope

    try:
        envelope = build_envelope(offer, content, sender, recipients, None, None)
    except Exception as exc:  # the refusal, compared by type and words
        return (type(exc), str(exc))
    return (envelope.mail, list(envelope.rcpts), envelope.content)


@given(
    OFFERED,
    st.one_of(st.just(""), ADDRESS),
    st.lists(ADDRESS, max_size=3),
    st.one_of(sst.message_contents(eight_bit=False), sst.message_contents()),
)
def test_the_everyday_envelope_is_what_the_general_path_makes(
    offered: set[str], sender: str, recipients: list[str], content: bytes
) -> None:
    """A list of recipients may take the shortcut; the same ones as a tuple never do."""
    offer = offer_of(offered)
    everyday = envelope_or_error(offer, content, sender, recipients)
    assert everyday == envelope_or_error(offer, content, sender, tuple(recipients))


def test_the_everyday_envelope_is_made_of_events_made_once() -> None:
    first = envelope_or_error(offer_of(set()), b"x\r\n", "a@abc.example", ["b@pqr.example"])
    again = envelope_or_error(offer_of(set()), b"y\r\n", "a@abc.example", ["b@pqr.example"])
    assert isinstance(first, tuple) and isinstance(again, tuple)
    assert first[0] is again[0] and first[1][0] is again[1][0]


# -- the result ------------------------------------------------------------------------

REPLY = st.one_of(
    st.none(),
    st.sampled_from(
        [Reply(250, "ok"), Reply(550, "no", EnhancedStatus(5, 1, 1)), Reply(451, "later")]
    ),
)


@given(
    st.one_of(st.none(), sst.mailboxes(at_limits=False)),
    REPLY,
    st.lists(st.tuples(sst.mailboxes(at_limits=False), REPLY, REPLY), max_size=4),
    REPLY,
    st.lists(REPLY.filter(lambda reply: reply is not None), max_size=3),
    st.booleans(),
)
def test_a_snapshot_is_what_the_constructors_make(
    sender: Mailbox | None,
    mail_reply: Reply | None,
    recipients: list[tuple[Mailbox, Reply | None, Reply | None]],
    data_reply: Reply | None,
    end_replies: list[Reply],
    complete: bool,
) -> None:
    transaction = _Transaction(sender, utf8=False, binary=False)
    transaction.mail_reply = mail_reply
    for index, (recipient, reply, delivery) in enumerate(recipients):
        transaction.add_recipient(recipient)
        transaction.replies[index] = reply
        transaction.deliveries[index] = delivery
    transaction.data_reply = data_reply
    transaction.end_replies = list(end_replies)
    transaction.complete = complete
    expected = TransactionResult(
        sender,
        mail_reply,
        tuple(RecipientResult(*recipient) for recipient in recipients),
        data_reply,
        tuple(end_replies),
        complete,
    )
    snapshot = transaction.snapshot()
    assert snapshot == expected
    assert hash(snapshot) == hash(expected)
    assert repr(snapshot) == repr(expected)
    assert [r.delivered for r in snapshot.recipients] == [r.delivered for r in expected.recipients]


@given(
    st.sampled_from([Mail(None), Rcpt(Mailbox("a", "example.org")), Data(), EndOfMessage()]),
    st.sampled_from([*RULES.values(), END_OF_DATA_RULE]),
    st.booleans(),
    st.sampled_from(list(State)),
)
def test_an_awaited_entry_is_what_the_constructor_makes(
    event: Event, rule: Rule, in_transaction: bool, after: State
) -> None:
    # _awaited sets every field through its slot, for the commands of each message.
    transaction = _Transaction(None, utf8=False, binary=False) if in_transaction else None
    entry = _awaited(event, rule, transaction, after)
    expected = _Awaited(event, rule, transaction, after=after)
    assert entry == expected
    for field in dataclasses.fields(_Awaited):
        assert getattr(entry, field.name) is getattr(expected, field.name)


# -- one command at a time, on the three clients -----------------------------------------

GREET = """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250-scripted.test
S: 250 ENHANCEDSTATUSCODES
"""
MESSAGE = b"Subject: one by one\r\n\r\n.dotted\r\nbody\r\n"
SENT = """
C: MAIL FROM:<a@abc.example>
S: 250 2.1.0 ok
C: RCPT TO:<b@pqr.example>
S: 250 2.1.5 ok
C: DATA
S: 354 go
C: Subject: one by one
C:
C: ..dotted
C: body
C: .
"""


def in_pieces(*pieces: bytes) -> Call:
    """The peer writes a reply in several writes, a moment apart."""

    def write(connection: ScriptedConnection) -> None:
        for piece in pieces:
            connection.send(piece)
            time.sleep(0.05)

    return Call(write)


def send_one(adapter: str, steps: list[Step], **options: Any) -> TransactionResult:
    """One message over a session to a server that offers no PIPELINING."""
    with ScriptedServer(steps) as server:
        if adapter == "sync":
            from smtpcore import sync

            with sync.SMTPClient("127.0.0.1", server.port, **options) as client:
                return client.send_message(MESSAGE, "a@abc.example", "b@pqr.example")
        module: Any = importlib.import_module(f"smtpcore.{adapter}")

        async def session() -> TransactionResult:
            async with module.SMTPClient("127.0.0.1", server.port, **options) as client:
                result: TransactionResult = await client.send_message(
                    MESSAGE, "a@abc.example", "b@pqr.example"
                )
                return result

        return run(adapter, session)


def run(adapter: str, fn: Callable[[], Awaitable[T]]) -> T:
    if adapter == "asyncio":

        async def main() -> T:
            return await fn()

        return asyncio.run(main())
    return trio.run(fn)


CLIENTS = ["sync", *ADAPTERS]


@pytest.mark.parametrize("adapter", CLIENTS)
def test_one_command_at_a_time_with_content_and_its_end_in_one_write(adapter: str) -> None:
    steps = script(GREET + SENT + "S: 250 2.0.0 queued\nC: QUIT\nS: 221 bye")
    result = send_one(adapter, steps)
    assert [r.delivery for r in result.recipients] == [
        Reply(250, "queued", EnhancedStatus(2, 0, 0))
    ]


@pytest.mark.parametrize("adapter", CLIENTS)
def test_a_reply_in_pieces_is_read_to_its_end(adapter: str) -> None:
    steps = [
        *script(GREET + "C: MAIL FROM:<a@abc.example>"),
        in_pieces(b"25", b"0 2.1.0 o", b"k\r\n"),
        *script(SENT.split("S: 250 2.1.0 ok\n")[1]),
        in_pieces(b"250-2.0.0 queued\r\n", b"250 2.0.0 as 12\r\n"),
        *script("C: QUIT\nS: 221 bye"),
    ]
    result = send_one(adapter, steps)
    assert result.mail_reply == Reply(250, "ok", EnhancedStatus(2, 1, 0))
    assert result.end_replies[0].lines == ("queued", "as 12")


FAILURES = {
    "421 to RCPT": ("C: RCPT TO:<b@pqr.example>\nS: 421 4.3.2 going down", "SMTPConnectionError"),
    "garbage": ("C: RCPT TO:<b@pqr.example>\nS: hello there", "SMTPProtocolError"),
    "closed after the content": (SENT.split("S: 250 2.1.0 ok\n")[1], "SMTPConnectionError"),
    "silence": ("C: RCPT TO:<b@pqr.example>", "SMTPTimeout"),
}


@pytest.mark.parametrize("adapter", CLIENTS)
@pytest.mark.parametrize("case", list(FAILURES))
def test_one_command_at_a_time_fails_as_the_general_path_does(adapter: str, case: str) -> None:
    after, error = FAILURES[case]
    steps = [
        *script(GREET + "C: MAIL FROM:<a@abc.example>\nS: 250 2.1.0 ok\n" + after),
        Call(ScriptedConnection.read_to_close) if case == "silence" else Call(lambda c: None),
    ]
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    with pytest.raises(getattr(module, error)):
        send_one(adapter, steps, timeouts=module.Timeouts(command=0.3))


# -- one command at a time, held to the general path ---------------------------------------

ANSWER = st.sampled_from(
    [
        b"250 2.0.0 ok\r\n",
        b"250-2.0.0 ok\r\n250 2.0.0 and more\r\n",
        b"452 4.5.3 too many\r\n",
        b"550 5.1.1 no such user\r\n",
        b"421 4.3.2 going down\r\n",
        b"",  # the server closes the connection
    ]
)
UNASKED = st.sampled_from(
    [b"", b"", b"421 4.3.2 going down\r\n", b"250 2.0.0 surprise\r\n", b"hello\r\n"]
)
"""What a server may send unasked behind its reply to one step of a message."""
DATA_ANSWER = st.sampled_from([b"354 go\r\n", b"354 go\r\n", b"554 5.5.1 no\r\n", b""])


class PlannedServer:
    """A server without PIPELINING that answers the steps of one message as drawn:
    ``MAIL``, each ``RCPT`` in turn, ``DATA``, and the end of the content (each
    answer written in two pieces, split at ``cut``); what it read, kept."""

    def __init__(self, answers: dict[str, list[bytes]], cut: int) -> None:
        self.answers = {step: list(replies) for step, replies in answers.items()}
        self.cut = cut
        self.read: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        with contextlib.suppress(ConnectionError):  # the client may leave after an error
            self.answer()

    def answer(self) -> None:
        conn, _ = self.listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece at once
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 planned.test ESMTP\r\n")
            for line in lines:
                self.read.append(line)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    answer = b"250-planned.test\r\n250 ENHANCEDSTATUSCODES\r\n"
                elif verb in (b"MAIL", b"RCPT", b"DATA"):
                    answer = self.answers[verb.decode()].pop(0)
                elif verb == b"QUIT":
                    answer = b"221 2.0.0 bye\r\n"
                else:
                    answer = b"250 2.0.0 ok\r\n"
                if verb == b"DATA" and answer.startswith(b"354"):
                    conn.sendall(answer)
                    for content in lines:
                        self.read.append(content)
                        if content == b".\r\n":
                            break
                    answer = self.answers["END"].pop(0)
                if not answer:
                    return
                conn.sendall(answer[: self.cut])
                conn.sendall(answer[self.cut :])
                if answer.startswith((b"421", b"221")):
                    return

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


ACCEPTED = {"MAIL": b"250 2.1.0 ok\r\n", "RCPT": b"250 2.1.5 ok\r\n", "DATA": b"354 go\r\n"}


def outcome(
    answers: dict[str, list[bytes]], cut: int, recipients: list[str], *, traced: bool
) -> object:
    """What ``smtpcore.sync`` makes of the drawn answers, then of a second message
    that the server accepts (sent after a delivery, or after a failure and its
    ``RSET``), and what the server read."""
    from smtpcore import sync

    answers = {
        step: [*replies, ACCEPTED.get(step, b"250 2.0.0 ok\r\n")]
        for step, replies in answers.items()
    }
    server = PlannedServer(answers, cut)
    trace = (lambda direction, line: None) if traced else None
    results: list[object] = []
    try:
        with sync.SMTPClient("127.0.0.1", server.port, timeout=5, trace=trace) as client:
            for rcpts in (recipients, recipients[:1]):
                try:
                    results.append(client.send_message(MESSAGE, "a@abc.example", rcpts))
                except sync.SMTPError as exc:
                    results.append((type(exc).__name__, str(exc), getattr(exc, "result", None)))
    except sync.SMTPError as exc:  # at QUIT, after a close
        results.append(("at the end", type(exc).__name__))
    finally:
        server.close()
    return results, server.read


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=1, max_value=3).flatmap(
        lambda count: st.tuples(st.just(count), st.lists(ANSWER, min_size=count, max_size=count))
    ),
    ANSWER,
    DATA_ANSWER,
    ANSWER,
    st.integers(min_value=0, max_value=6),
    UNASKED,
    st.sampled_from(["MAIL", "RCPT", "DATA", "END"]),
)
@example(  # every recipient refused, each differently: the last one's reply is raised
    (2, [b"452 4.5.3 too many\r\n", b"550 5.1.1 no such user\r\n"]),
    b"250 2.0.0 ok\r\n",
    b"354 go\r\n",
    b"250 2.0.0 ok\r\n",
    0,
    b"",
    "MAIL",
)
def test_one_command_at_a_time_is_what_the_general_path_does(
    rcpts: tuple[int, list[bytes]],
    mail: bytes,
    data: bytes,
    end: bytes,
    cut: int,
    unasked: bytes,
    after: str,
) -> None:
    count, rcpt_answers = rcpts
    answers = {"MAIL": [mail], "RCPT": rcpt_answers, "DATA": [data], "END": [end]}
    if answers[after][0]:  # read with that reply (none follows the server's close)
        answers[after][0] += unasked
    recipients = [f"r{index}@pqr.example" for index in range(count)]
    exchanged = outcome(answers, cut, recipients, traced=False)
    general = outcome(answers, cut, recipients, traced=True)
    assert exchanged == general
