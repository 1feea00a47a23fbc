# mypy narrows `conn.state` after an assert and does not see that send() changes it.
# mypy: disable-error-code="comparison-overlap"

"""Session limits of the SMTP server machine that count what Postfix counts (issue 12 items 4-6).

Excess recipients are not errors up to an overshoot limit; commands that move
no mail forward are junk and end the session past a limit; a cancelled AUTH
cannot be answered with 235.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from peers import ADAPTERS, running_smtp_server
from smtp_helpers import EHLO, ENVELOPE, codes, content_of, greeted, run
from smtpcore import NEED_DATA, PAUSED, LocalProtocolError
from smtpcore.smtp import (
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    ConnectionClosed,
    EndOfMessage,
    Event,
    Extension,
    Mail,
    MessageData,
    Parameter,
    Rcpt,
    RejectedMessage,
    Reply,
    ServerConnection,
    StartTls,
    State,
)
from smtpcore.testing import CollectingHandler, SMTPAnswer, permissive_smtp_answer
from smtpcore.testing import strategies as sst

# -- excess recipients (RFC 5321 §4.5.3.1.10) ---------------------------------------


def recipients(count: int) -> bytes:
    return b"".join(b"RCPT TO:<r%d@pqr.example>\r\n" % n for n in range(count))


@pytest.mark.parametrize("count", [121, 300])
def test_a_pipelining_client_over_the_recipient_limit_still_delivers(count: int) -> None:
    conn = greeted()
    envelope = EHLO + b"MAIL FROM:<john@abc.example>\r\n" + recipients(count) + b"DATA\r\n"
    _, out = run(conn, envelope)
    replies = codes(out)
    assert replies[2:102] == ["250 2.1.5"] * 100
    assert replies[102:-1] == ["452 4.5.3"] * (count - 100)
    assert replies[-1] == "354"
    events, out = run(conn, b"Subject: many\r\n\r\nhi\r\n.\r\n")
    assert isinstance(events[-1], EndOfMessage)
    assert content_of(events) == b"Subject: many\r\n\r\nhi\r\n"
    assert codes(out) == ["250 2.0.0"]


def test_excess_recipients_past_the_overshoot_limit_count_as_errors() -> None:
    conn = greeted(max_recipients=2, max_recipient_overshoot=3, max_errors=5)
    _, out = run(conn, EHLO + b"MAIL FROM:<john@abc.example>\r\n" + recipients(12))
    replies = codes(out)
    # 2 accepted, 3 forgiven, then 5 errors and the 421 for the next command.
    assert replies[2:4] == ["250 2.1.5"] * 2
    assert replies[4:10] == ["452 4.5.3"] * 6  # 3 forgiven, 3 counted
    assert replies[10:] == ["452 4.5.3", "452 4.5.3", "421 4.7.0"][: len(replies) - 10]
    assert conn.state is State.CLOSED


def test_the_overshoot_count_is_per_transaction() -> None:
    conn = greeted(max_recipients=1, max_recipient_overshoot=2, max_errors=3)
    message = b"MAIL FROM:<john@abc.example>\r\n" + recipients(3) + b"RSET\r\n"
    _, out = run(conn, EHLO + message * 5)
    assert "421 4.7.0" not in codes(out)
    assert conn.state is State.READY


# -- what a pipelining client sends behind a refused MAIL (RFC 2920 §3.1) -------------


def refusing_mail(conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
    """The application's answers, refusing a MAIL from ``full@...`` as a full disk
    does (``452 4.3.1``); every other event answered as ``permissive_smtp_answer``."""
    if isinstance(event, Mail) and event.sender and event.sender.local_part == "full":
        return Reply(452, "Insufficient system storage", "4.3.1")
    return permissive_smtp_answer(conn, event)


REFUSED_MAIL = b"MAIL FROM:<full@abc.example>\r\n"
BDAT_CHUNKS = b"BDAT 4\r\nabcdBDAT 0 LAST\r\n"


@pytest.mark.parametrize("count", [25, 100])
@pytest.mark.parametrize("content", [b"DATA\r\n", BDAT_CHUNKS], ids=["DATA", "BDAT"])
def test_a_pipelining_client_whose_mail_is_refused_is_not_cut_off_for_its_503s(
    count: int, content: bytes
) -> None:
    """Each RCPT, DATA or BDAT behind a refused MAIL gets ``503``, which refuses nothing
    of its own: it counts toward the overshoot limit, as an excess recipient does, not
    ``max_errors`` (20), whose ``421`` a fail2ban filter bans."""
    conn = greeted(chunking=True)
    batch = EHLO + REFUSED_MAIL + recipients(count) + content
    _, out = run(conn, batch, answer=refusing_mail)
    replies = codes(out)[1:]
    assert replies[0] == "452 4.3.1"
    assert replies[1:] == ["503 5.5.1"] * (len(replies) - 1)
    assert len(replies) == 1 + count + content.count(b"\r\n")
    assert conn.state is State.READY and conn.accepted_recipients == 0
    message = b"MAIL FROM:<john@abc.example>\r\n" + recipients(1) + b"DATA\r\n"
    _, out = run(conn, message, answer=refusing_mail)
    _, end = run(conn, b"hi\r\n.\r\n", answer=refusing_mail)
    assert codes(out + end) == ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]


def test_rcpts_behind_a_mail_the_machine_refused_are_not_errors_either() -> None:
    conn = greeted(require_auth=True)
    _, out = run(conn, EHLO + b"MAIL FROM:<john@abc.example>\r\n" + recipients(25))
    assert codes(out)[1:] == ["530 5.7.0"] + ["503 5.5.1"] * 25
    assert conn.state is State.READY


def test_rcpts_behind_a_mail_whose_extension_check_failed_are_not_errors_either() -> None:
    """A MAIL refused because an extension's own check raised (``451 4.3.0``, our
    fault, raised to the caller as ``LocalProtocolError``) is a refused MAIL too."""

    def broken(facts: object, value: object) -> Reply | None:
        raise ZeroDivisionError("the check's own bug")

    entry = Extension(
        "X-PRIO", "", "priorities", mail_parameters=(Parameter("X-PRIO", str, str, check=broken),)
    )
    conn = greeted(extra_extensions=[entry])
    conn.receive_data(EHLO + b"MAIL FROM:<a@b.example> X-PRIO=3\r\n" + recipients(25))
    out = b""
    for _ in range(100):
        try:
            event = conn.next_event()
        except LocalProtocolError as failed:
            out += conn.send(failed.reply_hint)
            continue
        if event is NEED_DATA or event is PAUSED:
            break
        answer = permissive_smtp_answer(conn, event)
        assert isinstance(answer, Reply)
        out += conn.send(answer)
    assert codes(out)[1:] == ["451 4.3.0"] + ["503 5.5.1"] * 25
    assert conn.state is State.READY


def test_rcpts_with_no_mail_sent_are_errors_as_ever() -> None:
    conn = greeted()
    _, out = run(conn, EHLO + recipients(25), answer=refusing_mail)
    assert codes(out)[1:] == ["503 5.5.1"] * 20 + ["421 4.7.0"]
    assert conn.state is State.CLOSED


def test_503s_behind_a_refused_mail_past_the_overshoot_limit_count_as_errors() -> None:
    conn = greeted(max_recipient_overshoot=3, max_errors=5)
    _, out = run(conn, EHLO + REFUSED_MAIL + recipients(12), answer=refusing_mail)
    # The MAIL's refusal (the server's fault, no error), 3 forgiven, 5 counted, and the
    # 421 for the next.
    assert codes(out)[1:] == ["452 4.3.1"] + ["503 5.5.1"] * 8 + ["421 4.7.0"]
    assert conn.state is State.CLOSED


# -- the server's own failures are not the client's errors (RFC 3463 §3.4) -----------

SERVER_FAILURES = [
    Reply(451, "Local error in processing", "4.3.0"),
    Reply(452, "Insufficient system storage", "4.3.1"),
    Reply(451, "System incorrectly configured", "4.3.5"),
    # A file size limit (EFBIG) on a message within the SIZE offered: permanent, but the
    # server's; only the machine's own refusal over max_message_size is the client's.
    Reply(552, "Message too big for system", "5.3.4"),
]
CLIENT_ERRORS = [
    Reply(450, "Try again later", "4.7.1"),  # a policy's: the client's to earn
    Reply(554, "System not accepting network messages", "5.3.2"),  # permanent: counted
    Reply(554, "unable to route", "5.4.4"),  # routing, but permanent: counted
    # Network and routing (RFC 3463 §3.5): the domain may be the client's own, its name
    # servers silent on purpose, and each such refusal costs the server DNS lookups.
    Reply(451, "temporary DNS failure looking up xyz.example", "4.4.3"),
    Reply(451, "Mail system congestion", "4.4.5"),
    Reply(451, "Try again later", None),  # says nothing of whose fault it is
]


def answering_mail_with(refusal: Reply) -> SMTPAnswer:
    def answer(conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
        if isinstance(event, Mail):
            return refusal
        return permissive_smtp_answer(conn, event)

    return answer


@pytest.mark.parametrize("refusal", SERVER_FAILURES, ids=str)
def test_a_relay_whose_mails_the_server_fails_is_not_cut_off(refusal: Reply) -> None:
    """A relay sending its batch down one connection while the disk is full, or a spool
    file cannot be created, got ``421 4.7.0 Too many errors`` at its 21st message,
    which the fail2ban filter bans: for the server's fault, not the client's."""
    conn = greeted()
    _, out = run(
        conn,
        EHLO + b"MAIL FROM:<a@b.example>\r\nRSET\r\n" * 30,
        answer=answering_mail_with(refusal),
    )
    assert codes(out)[1:] == [f"{refusal.code} {refusal.status}", "250 2.0.0"] * 30
    assert conn.state is State.READY


@pytest.mark.parametrize("refusal", CLIENT_ERRORS, ids=str)
def test_other_refusals_of_mail_count_as_errors_as_ever(refusal: Reply) -> None:
    conn = greeted()
    _, out = run(
        conn,
        EHLO + b"MAIL FROM:<a@b.example>\r\nRSET\r\n" * 30,
        answer=answering_mail_with(refusal),
    )
    assert codes(out)[-1] == "421 4.7.0"
    assert conn.state is State.CLOSED


ENVELOPE_TO_DATA = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<r@pqr.example>\r\nDATA\r\n"
OVER_THE_SIZE_LIMIT: dict[str, tuple[bytes, ...]] = {
    "MAIL SIZE=": (b"MAIL FROM:<a@b.example> SIZE=2000\r\nRSET\r\n",),
    "DATA": (ENVELOPE_TO_DATA, (b"x" * 78 + b"\r\n") * 25 + b".\r\n"),  # after the 354
    "BDAT": (
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<r@pqr.example>\r\nBDAT 2000 LAST\r\n"
        + (b"x" * 78 + b"\r\n") * 25,
    ),
}
"""A message over a ``max_message_size`` of 1000, as the client's writes go."""


def sent_in_turn(
    conn: ServerConnection, writes: tuple[bytes, ...], times: int, answer: SMTPAnswer | None = None
) -> list[str]:
    """The codes of the replies to ``writes``, sent ``times`` over, one write at a time."""
    out = b""
    for _ in range(times):
        for data in writes:
            out += run(conn, data, **({} if answer is None else {"answer": answer}))[1]
    return codes(out)


@pytest.mark.parametrize("message", OVER_THE_SIZE_LIMIT.values(), ids=list(OVER_THE_SIZE_LIMIT))
def test_messages_over_the_size_offered_count_as_errors(message: tuple[bytes, ...]) -> None:
    """The machine's own ``552 5.3.4`` (``max_message_size``, offered in SIZE) is the
    client's doing, though it shares its status with the server's file size limit."""
    conn = greeted(max_message_size=1000)
    run(conn, EHLO)
    replies = sent_in_turn(conn, message, 21)
    assert replies.count("552 5.3.4") == 20
    assert replies[-1] == "421 4.7.0"
    assert conn.state is State.CLOSED


def test_messages_the_server_cannot_hold_within_the_size_offered_are_not_errors() -> None:
    """The review's case: a relay sends 21 messages within SIZE, and a file size limit
    (``EFBIG``) refuses each ``552 5.3.4 Message too big for system``; the 21st got
    ``421 4.7.0 Too many errors``, and a fail2ban ban, for the server's own limit."""

    def answer(conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
        if isinstance(event, EndOfMessage):
            return Reply(552, "Message too big for system", "5.3.4")
        return permissive_smtp_answer(conn, event)

    conn = greeted(max_message_size=10_000)
    run(conn, EHLO)
    replies = sent_in_turn(conn, OVER_THE_SIZE_LIMIT["DATA"], 25, answer)
    assert replies == ["250 2.1.0", "250 2.1.5", "354", "552 5.3.4"] * 25
    assert conn.state is State.READY


def test_recipients_refused_while_dns_fails_for_now_are_cut_off_at_max_errors() -> None:
    """``451 4.4.3`` for every RCPT, as a server answers that resolves the recipient's
    domain at RCPT (docs/routing.rst) when the client names a domain of its own behind
    silent name servers: each RCPT cost up to ten lookups, and exempting ``4.4.X`` from
    ``max_errors`` let one session send 300 of them, never cut off."""

    def answer(conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
        if isinstance(event, Rcpt):
            return Reply(451, "temporary DNS failure looking up lame.example", "4.4.3")
        return permissive_smtp_answer(conn, event)

    conn = greeted()
    _, out = run(conn, EHLO + b"MAIL FROM:<a@lame.example>\r\n" + recipients(30), answer=answer)
    assert codes(out)[1:] == ["250 2.1.0"] + ["451 4.4.3"] * 20 + ["421 4.7.0"]
    assert conn.state is State.CLOSED


@pytest.mark.parametrize(
    ("options", "line", "event_type"),
    [
        ({"starttls": True}, b"STARTTLS\r\n", StartTls),
        (
            {"auth_mechanisms": ["PLAIN"], "auth_require_tls": False},
            b"AUTH PLAIN AGpvaG4AcHc=\r\n",
            Auth,
        ),
    ],
    ids=["STARTTLS", "AUTH"],
)
def test_a_454_the_server_could_not_help_is_not_the_clients_error(
    options: dict[str, Any], line: bytes, event_type: type[Event]
) -> None:
    """``454`` says the server failed, to STARTTLS (RFC 3207 §4, "TLS not available due
    to temporary reason") and to AUTH (RFC 4954 §6, "a temporary server failure")."""

    def answer(conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
        if isinstance(event, event_type):
            return Reply(454, "Temporary failure", "4.7.0")
        return permissive_smtp_answer(conn, event)

    conn = greeted(**options)
    _, out = run(conn, EHLO + line * 30, answer=answer)
    assert codes(out)[1:] == ["454 4.7.0"] * 30
    assert conn.state is State.READY


@pytest.mark.parametrize(
    "reset",
    [
        [b"RSET\r\n"],
        [EHLO],
        [b"MAIL FROM:<john@abc.example>\r\n" + recipients(1) + b"DATA\r\n", b"hi\r\n.\r\n"],
        [b"MAIL FROM:<john@abc.example>\r\nRSET\r\n"],
    ],
    ids=["RSET", "EHLO", "a message", "an accepted MAIL"],
)
def test_503s_count_as_errors_again_once_the_transaction_state_is_reset(
    reset: list[bytes],
) -> None:
    """A refused MAIL excuses the commands behind it until the session's transaction
    state is next reset, where the overshoot count starts again."""
    conn = greeted()
    for batch in [EHLO + REFUSED_MAIL, *reset]:
        run(conn, batch, answer=refusing_mail)
    _, out = run(conn, recipients(25), answer=refusing_mail)
    assert codes(out)[-1] == "421 4.7.0"
    assert conn.state is State.CLOSED


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"RCPT TO:<r9@pqr.example> NOTIFY=SOMETIMES\r\n", "501 5.5.4"),
        (b"RCPT TO:<r9@pqr.example> X-FOO=1\r\n", "555 5.5.4"),
        (b"RCPT TO:<r9@pqr.example> =1\r\n", "501 5.5.4"),
    ],
)
def test_a_broken_rcpt_at_the_recipient_limit_is_refused_for_its_syntax(
    line: bytes, expected: str
) -> None:
    # A 452 would tell the client to send the line again in the next transaction;
    # Postfix's rcpt_cmd reads the parameters before its limit.
    conn = greeted(max_recipients=1, dsn=True)
    _, out = run(conn, EHLO + b"MAIL FROM:<john@abc.example>\r\n" + recipients(1) + line)
    assert codes(out)[3].startswith(expected)


# -- junk commands (Postfix smtpd_junk_command_limit) ----------------------------------


@pytest.mark.parametrize(
    "junk", [b"NOOP\r\n", b"RSET\r\n", b"VRFY x\r\n", b"EXPN x\r\n", b"HELP\r\n", EHLO]
)
def test_junk_commands_past_the_limit_close_the_session(junk: bytes) -> None:
    conn = greeted(max_junk_commands=100)
    events, out = run(conn, EHLO + junk * 5000)
    replies = codes(out)
    assert len(replies) == 100 + 1  # EHLO counts as junk too, from the first one
    assert replies[-1] == "421 4.7.0"
    assert isinstance(events[-2], BadCommand) and events[-2].reply.code == 421
    assert conn.state is State.CLOSED
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_the_default_junk_limit_is_100() -> None:
    conn = greeted()
    _, out = run(conn, b"NOOP\r\n" * 101)
    assert codes(out)[-2:] == ["250 2.0.0", "421 4.7.0"]
    assert len(codes(out)) == 101


def test_a_message_delivered_starts_the_junk_count_again() -> None:
    conn = greeted(max_junk_commands=10)
    message = b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n"
    run(conn, EHLO)
    for _ in range(5):
        _, out = run(conn, b"NOOP\r\n" * 8 + message)
        assert codes(out)[-1] == "354"
        events, _ = run(conn, b"x\r\n.\r\n")
        assert isinstance(events[-1], EndOfMessage)
    assert conn.state is State.READY


def test_a_refused_message_does_not_start_the_count_again() -> None:
    conn = greeted(max_junk_commands=10)
    run(conn, b"NOOP\r\n" * 8 + ENVELOPE + b"DATA\r\n")  # EHLO is the 9th
    run(conn, b"bare\nLF\r\n.\r\n")  # refused by the framing policy
    _, out = run(conn, b"NOOP\r\n" * 3)
    assert codes(out) == ["250 2.0.0", "421 4.7.0"]


def test_mail_commands_are_not_junk() -> None:
    conn = greeted(max_junk_commands=2)
    message = b"MAIL FROM:<a@abc.example>\r\n" + recipients(50) + b"DATA\r\n"
    _, out = run(conn, b"EHLO a.example\r\n" + message)
    assert "421 4.7.0" not in codes(out)


def test_empty_chunks_that_are_not_the_last_are_junk() -> None:
    """RFC 3030 §2 lets only the last BDAT be empty: a ``BDAT 0`` without LAST moves
    no mail forward, and pipelined without end it held a session for ever."""
    conn = greeted(max_junk_commands=10)
    events, out = run(conn, ENVELOPE + b"BDAT 0\r\n" * 5000)
    replies = codes(out)
    assert replies[3:] == ["250 2.0.0"] * 9 + ["421 4.7.0"]  # EHLO was the 1st
    assert isinstance(events[-2], BadCommand) and events[-2].reply.code == 421
    assert conn.state is State.CLOSED


def test_an_empty_last_chunk_ends_the_message_and_is_not_junk() -> None:
    conn = greeted(max_junk_commands=2)
    message = b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nBDAT 0 LAST\r\n"
    events, out = run(conn, EHLO + message * 20)
    assert [e for e in events if isinstance(e, EndOfMessage)] == [EndOfMessage()] * 20
    assert "421 4.7.0" not in codes(out)
    assert conn.state is State.READY


@given(st.lists(st.integers(0, 2), min_size=1, max_size=40), st.data())
def test_only_empty_chunks_before_the_last_count_toward_the_junk_limit(
    sizes: list[int], data: st.DataObject
) -> None:
    """Empty chunks mixed with chunks that carry octets (``BDAT 1`` alternation):
    the octets do not start the count again, so the session ends at the same empty
    chunk however the input is cut."""
    limit = 4
    conn = greeted(max_junk_commands=limit, max_message_size=None)
    wire = ENVELOPE + b"".join(b"BDAT %d\r\n" % size + b"x" * size for size in sizes)
    events: list[object] = []
    for piece in data.draw(sst.chunkings(wire)):
        more, _ = run(conn, piece)
        events += more
    chunks = [event.size for event in events if isinstance(event, Bdat)]
    empty_at = [index for index, size in enumerate(sizes) if size == 0]
    allowed = limit - 1  # EHLO was the first junk command
    if len(empty_at) > allowed:
        refused = empty_at[allowed]
        assert chunks == sizes[:refused]
        [refusal] = [event for event in events if isinstance(event, BadCommand)]
        assert refusal.line == b"BDAT 0\r\n" and refusal.reply.code == 421
        assert conn.state is State.CLOSED
    else:
        assert chunks == sizes
        assert conn.state is State.BDAT


def test_errors_are_forgiven_once_a_message_is_delivered() -> None:
    """Postfix resets its error count when a message is queued."""
    conn = greeted(max_errors=3)
    for _ in range(4):
        bad = b"MAIL FROM:<john@@abc.example>\r\n" * 2
        _, out = run(conn, EHLO + bad + ENVELOPE[len(EHLO) :] + b"DATA\r\n")
        assert codes(out)[-1] == "354"
        run(conn, b"x\r\n.\r\n")
    assert conn.state is State.READY


# -- a BDAT message past max_message_size (RFC 3030 §2) --------------------------------


def test_the_chunk_that_crosses_the_size_limit_is_refused_at_once() -> None:
    """RFC 3030 §2: a 5xx to a chunk fails the transaction. The chunk that takes the
    message past the limit gets 552 (Postfix: "Chunk exceeds message size limit"),
    not 250 with the refusal kept for LAST: a client sending ``BDAT 1`` for ever
    held the session for ever."""
    conn = greeted(max_message_size=10)
    run(conn, ENVELOPE)
    events, out = run(conn, b"BDAT 8\r\n12345678BDAT 8\r\nabcdefgh")
    assert codes(out) == ["250 2.0.0", "552 5.3.4"]
    assert out.endswith(b"552 5.3.4 Message size exceeds fixed limit\r\n")
    assert content_of(events) == b"12345678"  # nothing of the crossing chunk
    assert isinstance(events[-1], RejectedMessage)
    assert conn.state is State.READY and conn.pending is None


def test_a_chunk_after_the_refused_one_is_read_and_refused_out_of_sequence() -> None:
    """The transaction is over: a further BDAT gets 503 5.5.1 (RFC 5321 §4.1.4), and
    its octets are still read (RFC 3030 §2), never taken for commands."""
    conn = greeted(max_message_size=10)
    run(conn, ENVELOPE + b"BDAT 11\r\n" + b"x" * 11)
    smuggled = b"RSET\r\nQUIT\r\n"
    events, out = run(conn, b"BDAT %d\r\n" % len(smuggled) + smuggled + b"NOOP\r\n")
    assert codes(out) == ["503 5.5.1", "250 2.0.0"]
    assert [type(event) for event in events] == [BadCommand, type(events[-1])]
    assert conn.state is State.READY


def test_chunks_sent_on_past_the_size_limit_end_the_session() -> None:
    """Each BDAT after the refusal is an error: past ``max_errors`` the session ends
    with 421 (RFC 5321 §3.8), however long the client goes on."""
    conn = greeted(max_message_size=10, max_errors=5)
    events, out = run(conn, ENVELOPE + b"BDAT 11\r\n" + b"x" * 11 + b"BDAT 1\r\ny" * 5000)
    replies = codes(out)
    assert replies[3:] == ["552 5.3.4"] + ["503 5.5.1"] * 4 + ["421 4.7.0"]  # 5 errors
    assert conn.state is State.CLOSED
    assert not any(isinstance(event, MessageData) for event in events)


def test_a_refused_chunk_in_lmtp_gets_one_reply() -> None:
    """RFC 2033 §4.2: one reply per recipient ends the content (BDAT LAST); a chunk
    before it, refused, has the one reply every command has."""
    conn = greeted(lmtp=True, max_message_size=10)
    data = b"LHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<one@x.example>\r\n"
    run(conn, data + b"RCPT TO:<two@x.example>\r\n")
    conn.receive_data(b"BDAT 11\r\n" + b"x" * 11)
    event = conn.next_event()
    assert isinstance(event, Bdat)
    event = conn.next_event()
    assert isinstance(event, RejectedMessage) and conn.replies_due == 1
    assert conn.send(event.reply).startswith(b"552 5.3.4")
    assert conn.state is State.READY and conn.pending is None


@given(st.lists(st.integers(0, 6), min_size=1, max_size=12), st.booleans(), st.data())
def test_the_size_limit_refuses_the_crossing_chunk_however_cut(
    sizes: list[int], last: bool, data: st.DataObject
) -> None:
    """Every chunk up to the limit is 250 and passed on; the one that crosses it is
    552, none of its octets passed on, and the session is back in READY."""
    limit = 12
    conn = greeted(max_message_size=limit)
    run(conn, ENVELOPE)
    wire = b"".join(
        b"BDAT %d%s\r\n" % (size, b" LAST" if last and n == len(sizes) - 1 else b"")
        + bytes([65 + n]) * size
        for n, size in enumerate(sizes)
    )
    events: list[object] = []
    out = b""
    for piece in data.draw(sst.chunkings(wire)):
        more, written = run(conn, piece)
        events += more
        out += written
    totals = [sum(sizes[: n + 1]) for n in range(len(sizes))]
    crossing = next((n for n, total in enumerate(totals) if total > limit), None)
    content = b"".join(e.data for e in events if isinstance(e, MessageData))
    if crossing is None:
        assert b"".join(bytes([65 + n]) * size for n, size in enumerate(sizes)) == content
        return
    assert content == b"".join(bytes([65 + n]) * size for n, size in enumerate(sizes[:crossing]))
    replies = codes(out)
    assert replies[: crossing + 1] == ["250 2.0.0"] * crossing + ["552 5.3.4"]
    assert replies[crossing + 1 :] == ["503 5.5.1"] * (len(sizes) - crossing - 1)
    assert conn.state is State.READY


def _refused_by_size(limit: int | None, size: int) -> bool:
    """``max_message_size``'s meaning: ``None`` or ``0`` no limit (RFC 1870 §4), any
    other value the largest size taken, a negative one so refusing every message."""
    return bool(limit) and size > (limit or 0)


@given(st.one_of(st.none(), st.integers(-3, 12)), st.integers(0, 10), st.data())
def test_data_and_bdat_keep_to_the_size_limit_as_configured(
    limit: int | None, length: int, data: st.DataObject
) -> None:
    """A DATA message and the same content in BDAT chunks get 552 5.3.4 exactly when
    ``max_message_size`` refuses their size, however the network cuts them: a
    negative limit refuses every message, as it refuses every ``MAIL SIZE=``."""
    content = b"x" * length + b"\r\n"
    cut = data.draw(st.integers(0, len(content)))
    chunks = [part for part in (content[:cut], content[cut:]) if part]
    wires = {  # DATA's content only after its 354 (RFC 2920 §3.1)
        "DATA": content + b".\r\n",
        "BDAT": b"".join(
            b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if n == len(chunks) - 1 else b"") + chunk
            for n, chunk in enumerate(chunks)
        ),
    }
    expected = "552 5.3.4" if _refused_by_size(limit, len(content)) else "250 2.0.0"
    for verb, wire in wires.items():
        conn = greeted(max_message_size=limit)
        run(conn, ENVELOPE + (b"DATA\r\n" if verb == "DATA" else b""))
        out = b""
        for piece in data.draw(sst.chunkings(wire), label=verb):
            out += run(conn, piece)[1]
        replies = codes(out)  # a chunk after a refused one is out of sequence (503)
        verdict = "552 5.3.4" if "552 5.3.4" in replies else replies[-1]
        assert verdict == expected, verb
        assert conn.state is State.READY


@pytest.mark.parametrize(
    ("wire", "replies"),
    [
        (b"BDAT 0 LAST\r\n", ["552 5.3.4"]),
        (b"BDAT 0\r\nBDAT 0 LAST\r\n", ["250 2.0.0", "552 5.3.4"]),
    ],
)
def test_a_negative_size_limit_refuses_even_an_empty_message(
    wire: bytes, replies: list[str]
) -> None:
    """With a negative ``max_message_size`` every message is past the limit, the empty
    one too: it is refused at LAST (an empty chunk before it adds nothing, and is
    answered as a chunk)."""
    conn = greeted(max_message_size=-1)
    run(conn, ENVELOPE)
    events, out = run(conn, wire)
    assert codes(out) == replies
    assert isinstance(events[-1], RejectedMessage)
    assert conn.state is State.READY


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
@pytest.mark.parametrize("body", ["", " BODY=BINARYMIME"], ids=["text", "binarymime"])
def test_a_negative_size_limit_refuses_an_empty_message_of_any_body(body: str, lmtp: bool) -> None:
    """``BDAT 0 LAST`` carries no octet to judge, and BODY=BINARYMIME content has no
    framing checks (RFC 3030 §3): the size limit still refuses it, once for each
    recipient in LMTP (RFC 2033 §4.2)."""
    conn = greeted(max_message_size=-1, lmtp=lmtp, binarymime=True)
    hello = b"LHLO client.abc.example\r\n" if lmtp else EHLO
    mail = b"MAIL FROM:<john@abc.example>%s\r\n" % body.encode("ascii")
    rcpts = b"RCPT TO:<brendon@pqr.example>\r\nRCPT TO:<amy@pqr.example>\r\n"
    run(conn, hello + mail + rcpts)
    events, out = run(conn, b"BDAT 0 LAST\r\n")
    assert codes(out) == ["552 5.3.4"] * (2 if lmtp else 1)
    assert isinstance(events[-1], RejectedMessage)
    assert conn.state is State.READY


def test_a_size_limit_lowered_in_a_chunk_counts_from_the_next_chunk() -> None:
    """A chunk is measured once, at the size its BDAT announces: a limit written
    while it is read judges the next chunk, as the docs say."""
    conn = greeted(max_message_size=None)
    run(conn, ENVELOPE + b"BDAT 10\r\n" + b"x" * 4)
    conn.max_message_size = 5
    events, out = run(conn, b"x" * 6)
    assert codes(out) == ["250 2.0.0"]
    assert content_of(events) == b"x" * 6
    events, out = run(conn, b"BDAT 2 LAST\r\n\r\n")
    assert codes(out) == ["552 5.3.4"]
    assert isinstance(events[-1], RejectedMessage)
    assert conn.state is State.READY


# -- AUTH cancelled (RFC 4954 §4) ------------------------------------------------------


def _cancelled_exchange(**options: Any) -> tuple[ServerConnection, AuthResponse]:
    """A session whose client has just answered a 334 with ``*``."""
    conn = greeted(auth_mechanisms=["PLAIN"], auth_require_tls=False, **options)
    run(conn, EHLO)
    conn.receive_data(b"AUTH PLAIN\r\n")
    conn.next_event()
    conn.send(Reply.challenge(b""))
    conn.receive_data(b"*\r\n")
    event = conn.next_event()
    assert event == AuthResponse(cancel=True)
    return conn, event


@pytest.mark.parametrize("answer", [Reply(235, "ok"), Reply.challenge(b"more")])
def test_a_cancelled_auth_cannot_be_accepted(answer: Reply) -> None:
    conn, event = _cancelled_exchange()
    with pytest.raises(LocalProtocolError):
        conn.send(answer)
    assert conn.state is State.AUTH and conn.pending == event  # unchanged
    assert not conn.authenticated
    assert conn.send(Reply(501, "cancelled")).startswith(b"501 5.")
    assert conn.state is State.READY and not conn.authenticated


@given(answer=sst.replies().filter(lambda answer: answer.code not in (421, 501)))
def test_a_cancelled_auth_takes_no_answer_but_501(answer: Reply) -> None:
    """RFC 4954 §4: the server MUST reject a cancelled exchange with 501. A 535 would
    tell the client its credentials failed, and count toward ``max_auth_failures``
    for a client that only cancelled; refused, the machine unchanged (a 421, which
    ends the session, is taken whatever is pending)."""
    conn, event = _cancelled_exchange()
    with pytest.raises(LocalProtocolError, match="501"):
        conn.send(answer)
    assert conn.state is State.AUTH and conn.pending == event


def test_a_cancelled_auth_is_no_failed_authentication() -> None:
    """Cancelling as often as ``max_auth_failures`` allows failures never ends the
    session with 421: only a 535 counts."""
    conn, _ = _cancelled_exchange(max_auth_failures=1)
    assert conn.send(Reply(501, "cancelled")).startswith(b"501 5.")
    conn.receive_data(b"AUTH PLAIN\r\n")
    assert conn.next_event() == Auth("PLAIN")


# -- end to end: a pipelining client with more recipients than the server takes --------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_first_100_of_121_pipelined_recipients_get_the_message(adapter: str) -> None:
    handler = CollectingHandler()
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    recipients = [f"r{n}@pqr.example" for n in range(121)]
    with running_smtp_server(adapter, handler) as server:

        async def send() -> Any:
            return await module.send_message(
                b"Subject: many\r\n\r\nhi\r\n",
                "john@abc.example",
                recipients,
                host=server.host,
                port=server.port,
            )

        result = asyncio.run(send()) if adapter == "asyncio" else trio.run(send)
    assert [str(r.recipient) for r in result.delivered] == recipients[:100]
    assert {r.reply.code for r in result.refused if r.reply is not None} == {452}
    assert len(result.refused) == 21
    [envelope] = handler.messages
    assert [str(r.mailbox) for r in envelope.recipients] == recipients[:100]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_server_closes_a_session_of_pipelined_empty_chunks(adapter: str) -> None:
    """Pipelined ``BDAT 0`` without LAST kept a session (and a task spinning on it)
    open for ever: now the 11th junk command gets 421 and the connection ends."""
    with (
        running_smtp_server(adapter, CollectingHandler(), max_junk_commands=10) as server,
        socket.create_connection((server.host, server.port), timeout=10) as sock,
    ):
        sock.sendall(ENVELOPE + b"BDAT 0\r\n" * 5000)
        received = bytearray()
        for _ in range(10_000):  # bounded: each pass reads something or ends
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    lines = bytes(received).split(b"\r\n")
    finals = [line[:3] for line in lines if line[3:4] == b" "]
    assert finals[-1] == b"421" and finals.count(b"421") == 1
    assert finals[1:-1] == [b"250"] * (3 + 9)  # EHLO, MAIL, RCPT, nine empty chunks
