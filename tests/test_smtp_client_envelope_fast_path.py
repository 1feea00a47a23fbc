"""The client machine's fast paths give what its general paths give.

``MAIL`` and ``RCPT`` without parameters and with an ASCII address, and
``DATA`` outside a BINARYMIME transaction, are written and recorded without
the general checks and formatter: nothing in them can be refused. Such a
command built with a :class:`~smtpcore.smtp.Parameters` object of its own,
empty but not the shared ``NO_PARAMETERS``, takes the general path; the two
must agree on the bytes, the errors, and what the machine records.

Replies read once are looked up by their line afterwards (``known_replies``);
a machine must read the same replies from the same bytes either way.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smtpcore import LocalProtocolError, RemoteProtocolError
from smtpcore.address import Mailbox
from smtpcore.smtp import (
    AuthResponse,
    Bdat,
    ClientConnection,
    Data,
    Ehlo,
    Mail,
    Parameters,
    Rcpt,
    Reply,
    Rset,
)
from smtpcore.smtp._params import NO_PARAMETERS
from smtpcore.smtp._replies import everyday_reply, known_replies, parse_everyday_reply
from smtpcore.smtp._state import END_OF_DATA_RULE, State, next_state
from smtpcore.testing import strategies as sst

OFFERS = st.sets(
    st.sampled_from(["SMTPUTF8", "8BITMIME", "CHUNKING", "BINARYMIME", "SIZE 100"])
).flatmap(
    lambda offers: st.sampled_from([offers | {"PIPELINING"}, offers | {"PIPELINING"}, offers])
)
MAILBOX = st.one_of(sst.mailboxes(), sst.mailboxes(at_limits=False), sst.mailboxes(utf8=True))
OTHER = st.one_of(
    st.tuples(st.just("DATA"), st.none()),
    st.tuples(st.just("BINARYMIME"), st.none()),
    st.tuples(st.just("RSET"), st.none()),
    st.tuples(st.just("reply"), st.sampled_from([250, 250, 354, 550, 503])),
)
TRANSACTION = st.builds(
    lambda sender, rcpts, others: [("MAIL", sender), *(("RCPT", r) for r in rcpts), *others],
    st.one_of(st.none(), MAILBOX),
    st.lists(MAILBOX, min_size=1, max_size=3),
    st.lists(OTHER, max_size=4),
)
STEPS = st.lists(TRANSACTION, min_size=1, max_size=3).map(
    lambda transactions: [step for steps in transactions for step in steps]
)
"""Transactions as a client sends them, pipelined or not, with replies and other
commands in between: some answered, some refused, some out of place."""


def session(offers: set[str]) -> ClientConnection:
    conn = ClientConnection("client.example")
    conn.receive_data(b"220 hi\r\n")
    assert isinstance(conn.next_event(), Reply)
    conn.send(Ehlo("client.example"))
    lines = ["mx.example", *sorted(offers)]
    conn.receive_data(Reply(250, lines).to_bytes())
    assert isinstance(conn.next_event(), Reply)
    return conn


def check_projection(conn: ClientConnection) -> None:
    """Each awaited event's state after it is what folding the rules over the queue
    from the state now gives, as the machine worked it out before keeping it."""
    state = conn._state
    for entry in conn._queue:
        rule = entry.rule
        if entry.event is None:
            state = State.HELLO
        elif rule is END_OF_DATA_RULE or isinstance(entry.event, AuthResponse):
            state = State.READY
        elif state in rule.allowed:
            state = next_state(rule, min(rule.success_codes), state)
        assert entry.after is state


def run(offers: set[str], steps: list[tuple[str, object]], *, fast: bool) -> list[object]:
    """What a session makes of ``steps``: bytes, errors, states and records."""
    conn = session(offers)
    out: list[object] = []
    for kind, value in steps:
        params = NO_PARAMETERS if fast else Parameters()
        event: Mail | Rcpt | Data | Rset
        if kind == "MAIL":
            assert value is None or isinstance(value, Mailbox)
            event = Mail(value, params)
        elif kind == "RCPT":
            assert isinstance(value, Mailbox)
            event = Rcpt(value, params)
        elif kind == "BINARYMIME":
            event = Mail(None, {"BODY": "BINARYMIME"})
        elif kind == "DATA":
            event = Data()
        elif kind == "RSET":
            event = Rset()
        else:
            assert isinstance(value, int)
            conn.receive_data(Reply(value, "x").to_bytes())
            try:
                out.append(conn.next_event())
            except RemoteProtocolError as exc:
                out.append(f"remote: {exc}")
                break
            check_projection(conn)
            continue
        try:
            out.append(conn.send(event))
        except LocalProtocolError as exc:
            out.append(f"local: {exc}")
        except RemoteProtocolError as exc:
            out.append(f"remote: {exc}")
            break
        out.append((conn.state, conn.pending, conn.transaction))
        check_projection(conn)
    out.append((conn.state, conn.pending, conn.transaction, conn.answered))
    return out


@given(OFFERS, STEPS)
def test_envelope_commands_take_the_fast_path_with_the_general_paths_result(
    offers: set[str], steps: list[tuple[str, object]]
) -> None:
    assert run(offers, steps, fast=True) == run(offers, steps, fast=False)


def test_the_general_path_is_taken_for_parameters_and_utf8() -> None:
    conn = session({"PIPELINING", "SMTPUTF8"})
    utf8 = Mailbox("jörg", "example.org")
    assert (
        conn.send(Mail(utf8, {"SMTPUTF8": None}))
        == b"MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8\r\n"
    )
    assert conn.send(Rcpt(utf8)) == b"RCPT TO:<j\xc3\xb6rg@example.org>\r\n"
    other = session({"PIPELINING"})
    try:
        other.send(Mail(utf8))
    except LocalProtocolError as exc:
        assert "SMTPUTF8" in str(exc)
    else:
        raise AssertionError("a UTF-8 sender without SMTPUTF8 was sent")
    chunked = session({"PIPELINING", "CHUNKING", "BINARYMIME"})
    chunked.send(Mail(None, {"BODY": "BINARYMIME"}))
    chunked.send(Rcpt(Mailbox("a", "example.org")))
    try:
        chunked.send(Data())
    except LocalProtocolError as exc:
        assert "BDAT" in str(exc)
    else:
        raise AssertionError("DATA was sent in a BINARYMIME transaction")
    assert chunked.send(Bdat(0, last=True)) == b"BDAT 0 LAST\r\n"


@given(st.lists(sst.reply_lines(), min_size=1, max_size=6), st.booleans())
def test_a_machine_reads_known_replies_as_it_read_them_first(
    lines: list[bytes], enhanced: bool
) -> None:
    """The lines read twice: first with no known reply, then from the table."""

    def read(*, forget: bool) -> list[object]:
        conn = session({"PIPELINING", "ENHANCEDSTATUSCODES"} if enhanced else {"PIPELINING"})
        if forget:
            known_replies(enhanced).clear()
        out: list[object] = []
        for line in lines:
            try:
                conn.send(Rset())
            except LocalProtocolError as exc:
                out.append(f"local: {exc}")
                break
            conn.receive_data(line)
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                out.append(f"remote: {exc}")
                break
            if isinstance(event, Reply):
                out.append((event.code, event.status, event.lines, event.text))
            else:
                out.append(event)
                break
        return out

    assert read(forget=True) == read(forget=False)


@given(st.one_of(sst.reply_lines(), sst.reply_lines(hostile=True)), st.booleans())
def test_the_known_replies_are_what_the_everyday_parser_gives(line: bytes, enhanced: bool) -> None:
    first = everyday_reply(line, enhanced=enhanced)
    again = everyday_reply(line, enhanced=enhanced)
    parsed = parse_everyday_reply(line, enhanced=enhanced)
    assert first == again == parsed
    if first is not None and parsed is not None:
        assert (first.text, first.lines, first.status) == (
            parsed.text,
            parsed.lines,
            parsed.status,
        )
    known = known_replies(enhanced).get(line)
    assert known is None or known == parsed


def test_a_refused_reset_leaves_the_transaction_open() -> None:
    """RSET refused: the server keeps the transaction, so RCPT may follow (it
    raised an AssertionError from the machine before)."""
    conn = session(set())
    conn.send(Mail(Mailbox("a", "example.org")))
    conn.receive_data(b"250 ok\r\n")
    assert isinstance(conn.next_event(), Reply)
    conn.send(Rset())
    conn.receive_data(b"550 no\r\n")
    assert isinstance(conn.next_event(), Reply)
    assert conn.send(Rcpt(Mailbox("b", "example.org"))) == b"RCPT TO:<b@example.org>\r\n"
    conn.receive_data(b"250 ok\r\n")
    assert isinstance(conn.next_event(), Reply)
    result = conn.transaction
    assert result is not None and not result.complete
    assert [r.recipient for r in result.accepted] == [Mailbox("b", "example.org")]
