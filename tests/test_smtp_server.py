"""The SMTP server machine, command by command and state by state."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtp_helpers import EHLO, ENVELOPE, codes, content_of, greeted, run
from smtpcore import NEED_DATA, PAUSED, LocalProtocolError, RemoteProtocolError
from smtpcore._driver import ServerOptions
from smtpcore._hostname import a_label_hostname
from smtpcore._lines import FramingPolicy, ReceiveBuffer
from smtpcore._textsafe import holds_unsafe, unsafe_in_text
from smtpcore.address import Mailbox
from smtpcore.smtp import (
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    RejectedMessage,
    Reply,
    Rset,
    ServerConnection,
    StartTls,
    State,
    Vrfy,
    quoted,
)
from smtpcore.smtp._replies import ReplyParser
from smtpcore.testing import permissive_smtp_answer
from smtpcore.testing import strategies as sst

# -- greeting -------------------------------------------------------------


def test_server_waits_for_its_greeting_before_reading() -> None:
    conn = ServerConnection("mx.pqr.example")
    conn.receive_data(EHLO)
    assert conn.state is State.GREETING
    assert conn.next_event() is PAUSED
    assert conn.send(Reply(220, "mx.pqr.example ESMTP")) == b"220 mx.pqr.example ESMTP\r\n"
    assert conn.next_event() == Ehlo("client.abc.example")


def test_refusing_greeting_serves_only_quit() -> None:
    conn = ServerConnection("mx.pqr.example")
    assert conn.send(Reply(554, "No SMTP service here")) == b"554 No SMTP service here\r\n"
    _events, out = run(conn, EHLO + b"MAIL FROM:<a@b.example>\r\nQUIT\r\n")
    assert codes(out) == ["503 5.5.1", "503 5.5.1", "221 2.0.0"]
    assert conn.state is State.CLOSED


@pytest.mark.parametrize(
    "line", [b"XYZZY", b"GET / HTTP/1.1", b"MAIL", b"RCPT TO:<>", b"NOOP \x01", b"STARTTLS"]
)
def test_refusing_greeting_answers_every_command_but_quit_503(line: bytes) -> None:
    """RFC 5321 §3.1: after a 554 greeting the server SHOULD answer any intervening
    command with 503 until QUIT, unknown and malformed ones as well: the sequence
    error comes first, and an unknown verb counts toward no ``max_bad_commands``."""
    conn = ServerConnection("mx.pqr.example", max_bad_commands=2)
    conn.send(Reply(554, "No SMTP service here"))
    _events, out = run(conn, (line + b"\r\n") * 3 + b"QUIT\r\n")
    assert codes(out) == ["503 5.5.1"] * 3 + ["221 2.0.0"]


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        (b"QUIT now", "501 5.5.4"),  # QUIT's own syntax error
        (b"QUIT\t", "503 5.5.1"),  # no QUIT: a verb ends at a space
        (b"NOOP \xff", "500 5.5.2"),  # no command line: not UTF-8
        (b"NOOP\nX", "500 5.5.2"),  # no command line: a bare LF
        (b"N" * 600, "500 5.5.2"),  # no command line: over the limit
    ],
)
def test_refusing_greeting_answers_lines_that_are_no_command_as_any_session(
    line: bytes, answer: str
) -> None:
    """After a 554 greeting, the 503 goes to a command line whose verb is not QUIT; a
    QUIT's syntax error is its own, and a line that cannot be read as a command line
    gets its 500 as in any state (the documented table)."""
    conn = ServerConnection("mx.pqr.example")
    conn.send(Reply(554, "No SMTP service here"))
    _events, out = run(conn, line + b"\r\nQUIT\r\n")
    assert codes(out) == [answer, "221 2.0.0"]


def test_greeting_of_421_closes() -> None:
    conn = ServerConnection("mx.pqr.example")
    conn.send(Reply(421, "busy"))
    assert conn.state is State.CLOSED
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_greeting_must_be_220_554_or_421() -> None:
    conn = ServerConnection("mx.pqr.example")
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "hello"))
    assert conn.state is State.GREETING


# -- EHLO, HELO and the extension list -------------------------------------------


def test_ehlo_reply_lists_configured_extensions() -> None:
    conn = greeted(max_message_size=1000, starttls=True)
    _, out = run(conn, EHLO)
    assert out == (
        b"250-mx.pqr.example OK\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-PIPELINING\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250 STARTTLS\r\n"
    )
    assert conn.state is State.READY and conn.extended


def test_extensions_can_be_switched_off() -> None:
    conn = greeted(
        max_message_size=None,
        eight_bit_mime=False,
        pipelining=False,
        enhanced_status_codes=False,
        smtputf8=False,
        chunking=False,
        extra_extensions=["HELP"],
    )
    _, out = run(conn, EHLO + b"MAIL FROM:<a@b.example>\r\n")
    assert out == b"250-mx.pqr.example OK\r\n250-SIZE\r\n250 HELP\r\n250 OK\r\n"


def test_smtputf8_is_offered_only_with_8bitmime() -> None:
    """RFC 6531 §3.1 item 8: a server offering SMTPUTF8 MUST offer 8BITMIME. With
    8BITMIME off, SMTPUTF8 was still listed, and a UTF-8 sender taken; it now goes
    with 8BITMIME, as BINARYMIME does (its entry depends on it): not listed, and its
    parameter unsupported (RFC 5321 §4.1.2: 555)."""
    conn = greeted(eight_bit_mime=False)
    _, out = run(conn, EHLO)
    assert b"SMTPUTF8" not in out and b"8BITMIME" not in out
    _, out = run(conn, "MAIL FROM:<jörg@abc.example> SMTPUTF8\r\n".encode())
    assert codes(out) == ["555 5.5.4"]
    _, out = run(greeted(), EHLO)
    assert b"250-8BITMIME\r\n" in out and b"250-SMTPUTF8\r\n" in out


def test_helo_gets_a_plain_reply_and_no_extensions() -> None:
    conn = greeted()
    events, out = run(conn, b"HELO client.abc.example\r\n")
    assert events == [Helo("client.abc.example")]
    assert out == b"250 mx.pqr.example OK\r\n"
    assert not conn.extended


def test_ehlo_text_given_by_the_application_comes_first() -> None:
    conn = greeted(extra_extensions=())
    conn.receive_data(EHLO)
    assert isinstance(conn.next_event(), Ehlo)
    out = conn.send(Reply(250, ["mx.pqr.example greets client.abc.example"]))
    assert out.startswith(b"250-mx.pqr.example greets client.abc.example\r\n250-SIZE")


@pytest.mark.parametrize("line", [EHLO, b"HELO client.abc.example\r\n", b"LHLO c.example\r\n"])
def test_a_positive_hello_reply_of_several_lines_is_refused_and_changes_nothing(
    line: bytes,
) -> None:
    """After its first line, an EHLO reply's lines are ehlo-lines (RFC 5321 §4.1.1.1),
    which a client reads as extensions offered: the application's own would list
    what the machine does not take (``PIPELINING`` twice, ``X-FAKE``). A HELO's
    reply is one line."""
    conn = greeted(lmtp=line.startswith(b"LHLO"))
    conn.receive_data(line)
    conn.next_event()
    before = _fields(conn)
    with pytest.raises(LocalProtocolError, match="one line"):
        conn.send(Reply(250, ["mx.pqr.example hi", "PIPELINING", "X-FAKE"]))
    assert _fields(conn) == before
    assert conn.send(Reply(451, "Local error in processing")).startswith(b"451 ")


@pytest.mark.parametrize("line", [b"EHLO\r\n", b"EHLO a b\r\n", b"HELO\r\n"])
def test_hello_without_a_name_is_a_syntax_error(line: bytes) -> None:
    _, out = run(greeted(), line)
    assert codes(out) == ["501 5.5.4"]


def test_verbs_are_case_insensitive() -> None:
    events, out = run(
        greeted(), b"ehlo a.example\r\nmail from:<a@b.example>\r\nRcPt To:<c@d.example>\r\n"
    )
    assert [type(event) for event in events] == [Ehlo, Mail, Rcpt]
    assert codes(out)[1:] == ["250 2.1.0", "250 2.1.5"]


# -- ordering rules (RFC 5321 §4.1.4) -------------------------------------------------

SEQUENCE_CASES = [
    (b"MAIL FROM:<a@b.example>\r\n", "503 5.5.1"),
    (EHLO + b"RCPT TO:<a@b.example>\r\n", "503 5.5.1"),
    (EHLO + b"DATA\r\n", "503 5.5.1"),
    (EHLO + b"MAIL FROM:<a@b.example>\r\nDATA\r\n", "554 5.5.1"),
    (EHLO + b"MAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\n", "503 5.5.1"),
    (EHLO + b"BOGUS\r\n", "500 5.5.2"),
    (EHLO + b"STARTTLS\r\n", "500 5.5.2"),  # not offered: unknown
    (EHLO + b"AUTH PLAIN\r\n", "500 5.5.2"),  # not offered: unknown
    (b"RSET\r\n", "250 2.0.0"),
    (b"NOOP\r\n", "250 2.0.0"),
    (b"VRFY john\r\n", "250 2.0.0"),
    (b"HELP\r\n", "214 2.0.0"),
]


@pytest.mark.parametrize(("data", "last_reply"), SEQUENCE_CASES)
def test_sequence_rules(data: bytes, last_reply: str) -> None:
    _, out = run(greeted(), data)
    assert codes(out)[-1] == last_reply


def test_rset_abandons_the_transaction() -> None:
    conn = greeted()
    run(conn, ENVELOPE + b"RSET\r\n")
    assert conn.state is State.READY and conn.accepted_recipients == 0
    _, out = run(conn, b"DATA\r\n")
    assert codes(out) == ["503 5.5.1"]


def test_ehlo_resets_the_transaction() -> None:
    conn = greeted()
    run(conn, ENVELOPE + EHLO)
    assert conn.state is State.READY and conn.accepted_recipients == 0


def test_failed_mail_leaves_no_transaction() -> None:
    conn = greeted()
    run(conn, EHLO)
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    assert isinstance(conn.next_event(), Mail)
    conn.send(Reply(550, "go away"))
    assert conn.state is State.READY


def test_other_commands_parse_into_their_events() -> None:
    events, out = run(
        greeted(), EHLO + b"VRFY john\r\nEXPN staff\r\nHELP MAIL\r\nNOOP hi\r\nRSET\r\nQUIT\r\n"
    )
    assert events[1:-1] == [Vrfy("john"), Expn("staff"), Help("MAIL"), Noop("hi"), Rset(), Quit()]
    assert isinstance(events[-1], ConnectionClosed)
    assert codes(out)[-1] == "221 2.0.0"


@pytest.mark.parametrize("line", [b"VRFY\r\n", b"EXPN\r\n", b"DATA x\r\n", b"QUIT now\r\n"])
def test_argument_errors(line: bytes) -> None:
    _, out = run(greeted(), EHLO + line)
    assert codes(out)[-1] == "501 5.5.4"


# -- MAIL and RCPT ----------------------------------------------------------------

MAIL_CASES = [
    (b"MAIL FROM:<>\r\n", "250 2.1.0"),
    (b"MAIL FROM: <john@abc.example>\r\n", "250 2.1.0"),
    (b"MAIL FROM:<@relay.example:john@abc.example>\r\n", "250 2.1.0"),
    (b"MAIL FROM:<john@[192.0.2.1]>\r\n", "250 2.1.0"),
    (b"MAIL FROM:<john@[IPv6:2001:db8::1]>\r\n", "250 2.1.0"),
    (b'MAIL FROM:<"john doe"@abc.example>\r\n', "250 2.1.0"),
    (b'MAIL FROM:<""@abc.example>\r\n', "250 2.1.0"),
    (b"MAIL FROM:<john@abc.example> SIZE=1000 BODY=8BITMIME\r\n", "250 2.1.0"),
    (b"MAIL FROM:<john@abc.example> BODY=7BIT\r\n", "250 2.1.0"),
    (b"MAIL FROM:john@abc.example\r\n", "501 5.1.7"),
    (b"MAIL FROM:<john@@abc.example>\r\n", "501 5.1.7"),
    (b"MAIL FROM:<john@abc.example\r\n", "501 5.1.7"),
    (b"MAIL TO:<john@abc.example>\r\n", "501 5.5.4"),
    (b"MAIL\r\n", "501 5.5.4"),
    (b"MAIL FROM:<john@abc.example> SIZE=99999999999\r\n", "552 5.3.4"),
    (b"MAIL FROM:<john@abc.example> SIZE=abc\r\n", "501 5.5.4"),
    (b"MAIL FROM:<john@abc.example> BODY=BINARYMIME\r\n", "501 5.5.4"),
    (b"MAIL FROM:<john@abc.example> FOO=BAR\r\n", "555 5.5.4"),
    (b"MAIL FROM:<john@abc.example> =BAR\r\n", "501 5.5.4"),
    (b"MAIL FROM:<john@abc.example> SIZE=1 SIZE=2\r\n", "501 5.5.4"),
    ("MAIL FROM:<jöhn@abc.example>\r\n".encode(), "553 5.6.7"),
    ("MAIL FROM:<jöhn@abc.example> SMTPUTF8\r\n".encode(), "250 2.1.0"),
    ("MAIL FROM:<@bücher.example:john@abc.example>\r\n".encode(), "553 5.6.7"),
    ("MAIL FROM:<@bücher.example:john@abc.example> SMTPUTF8\r\n".encode(), "250 2.1.0"),
    (b"MAIL FROM:<john@abc.example> SMTPUTF8=yes\r\n", "555 5.5.4"),
    (b"MAIL FROM:<j\xffhn@abc.example>\r\n", "500 5.5.2"),
    (b"MAIL FROM:<john@abc.example>\x00\r\n", "501 5.5.2"),
]


@pytest.mark.parametrize(("line", "expected"), MAIL_CASES)
def test_mail_command(line: bytes, expected: str) -> None:
    _, out = run(greeted(), EHLO + line)
    assert codes(out)[-1] == expected


def test_mail_parameters_reach_the_application() -> None:
    events, _ = run(greeted(), EHLO + b"MAIL FROM:<john@abc.example> size=10 Body=8BITMIME\r\n")
    mail = events[-1]
    assert isinstance(mail, Mail)
    assert mail.sender == Mailbox("john", "abc.example")
    assert dict(mail.params) == {"SIZE": "10", "BODY": "8BITMIME"}
    assert mail.params["size"] == "10"


def test_an_empty_quoted_local_part_reaches_the_application() -> None:
    """``<""@domain>`` is a valid path (RFC 5321 §4.1.2: a Quoted-string may be empty);
    MAIL and RCPT with it got 501. The application decides whether such a user exists."""
    events, out = run(
        greeted(), EHLO + b'MAIL FROM:<""@abc.example>\r\nRCPT TO:<""@pqr.example>\r\n'
    )
    assert codes(out)[-2:] == ["250 2.1.0", "250 2.1.5"]
    assert events[-2] == Mail(Mailbox("", "abc.example"))
    assert events[-1] == Rcpt(Mailbox("", "pqr.example"))


def test_mail_parameters_need_ehlo() -> None:
    _, out = run(greeted(), b"HELO a.example\r\nMAIL FROM:<a@b.example> SIZE=10\r\n")
    assert codes(out)[-1] == "555 5.5.4"


RCPT_CASES = [
    (b"RCPT TO:<brendon@pqr.example>\r\n", "250 2.1.5"),
    (b"RCPT TO:<Postmaster>\r\n", "250 2.1.5"),
    (b'RCPT TO:<""@pqr.example>\r\n', "250 2.1.5"),
    (b"RCPT TO:<>\r\n", "501 5.1.3"),
    (b"RCPT TO:brendon@pqr.example\r\n", "501 5.1.3"),
    (b"RCPT FROM:<brendon@pqr.example>\r\n", "501 5.5.4"),
    (b"RCPT TO:<brendon@pqr.example> NOTIFY=NEVER\r\n", "555 5.5.4"),
    ("RCPT TO:<brëndon@pqr.example>\r\n".encode(), "553 5.6.7"),
    ("RCPT TO:<@bücher.example:brendon@pqr.example>\r\n".encode(), "553 5.6.7"),
]


@pytest.mark.parametrize(("line", "expected"), RCPT_CASES)
def test_rcpt_command(line: bytes, expected: str) -> None:
    _, out = run(greeted(), EHLO + b"MAIL FROM:<john@abc.example>\r\n" + line)
    assert codes(out)[-1] == expected


def test_utf8_in_a_source_route_needs_smtputf8_as_in_the_mailbox() -> None:
    """An At-domain is an ASCII Domain (RFC 5321 §4.1.2); U-labels need SMTPUTF8 (RFC
    6531 §3.3). The route is dropped, and the check looked only at the mailbox left:
    ``<@bücher.example:s@x.example>`` got 250 without SMTPUTF8 where the same octets
    in the mailbox got 553 5.6.7. With SMTPUTF8 the route is still ignored."""
    mail = "MAIL FROM:<@bücher.example:john@abc.example>\r\n".encode()
    rcpt = "RCPT TO:<@é.example,@relay.example:brendon@pqr.example>\r\n".encode()
    plain = b"MAIL FROM:<john@abc.example>\r\n"
    _, out = run(greeted(), EHLO + mail + plain + rcpt)
    assert codes(out)[1:] == ["553 5.6.7", "250 2.1.0", "553 5.6.7"]
    utf8 = "MAIL FROM:<@bücher.example:john@abc.example> SMTPUTF8\r\n".encode()
    events, out = run(greeted(), EHLO + utf8 + rcpt)
    assert codes(out)[1:] == ["250 2.1.0", "250 2.1.5"]
    assert events[-2] == Mail(Mailbox("john", "abc.example"), {"SMTPUTF8": None})
    assert events[-1] == Rcpt(Mailbox("brendon", "pqr.example"))


def test_utf8_recipient_allowed_in_a_smtputf8_transaction() -> None:
    data = "MAIL FROM:<john@abc.example> SMTPUTF8\r\nRCPT TO:<brëndon@pqr.example>\r\n"
    _, out = run(greeted(), EHLO + data.encode())
    assert codes(out)[-1] == "250 2.1.5"


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u202e", "\x85"])
def test_a_utf8_address_holding_a_format_or_separator_character_is_refused(char: str) -> None:
    """RFC 6531 §3.3, RFC 5198 §2: such an address would go raw into the Return-Path and
    Received fields the server writes, and a reader splitting lines at U+2028 would see
    a field of the sender's making (``Bcc:``). It is a bad mailbox, as a control is."""
    sender = f'MAIL FROM:<"s{char}Bcc: z@evil.example"@evil.example> SMTPUTF8\r\n'
    recipient = f"RCPT TO:<a{char}b@pqr.example>\r\n"
    good = "MAIL FROM:<john@abc.example> SMTPUTF8\r\n"
    _, out = run(greeted(), EHLO + (sender + good + recipient).encode())
    assert codes(out)[1:] == ["501 5.1.7", "250 2.1.0", "501 5.1.3"]


def test_recipient_limit() -> None:
    conn = greeted(max_recipients=2)
    rcpts = b"".join(b"RCPT TO:<r%d@pqr.example>\r\n" % n for n in range(3))
    _, out = run(conn, EHLO + b"MAIL FROM:<a@b.example>\r\n" + rcpts)
    assert codes(out)[-3:] == ["250 2.1.5", "250 2.1.5", "452 4.5.3"]
    assert conn.accepted_recipients == 2


def test_rejected_recipients_do_not_count() -> None:
    conn = greeted()
    run(conn, EHLO + b"MAIL FROM:<a@b.example>\r\n")
    conn.receive_data(b"RCPT TO:<nobody@pqr.example>\r\n")
    assert isinstance(conn.next_event(), Rcpt)
    assert conn.send(Reply(550, "No such user")) == b"550 5.0.0 No such user\r\n"
    assert conn.state is State.MAIL and conn.accepted_recipients == 0


# -- DATA ---------------------------------------------------------------------------


def test_pipelined_envelope_and_content() -> None:
    conn = greeted()
    events, out = run(conn, ENVELOPE + b"DATA\r\n")
    assert isinstance(events[-1], Data)
    assert conn.state is State.DATA
    events, out2 = run(conn, b"Subject: hi\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n")
    assert content_of(events) == b"Subject: hi\r\n\r\n.leading dot\r\n"
    assert isinstance(events[-3], EndOfMessage) and isinstance(events[-2], Quit)
    assert codes(out + out2) == ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"]


def test_empty_message() -> None:
    conn = greeted()
    run(conn, ENVELOPE + b"DATA\r\n")
    events, _ = run(conn, b".\r\n")
    assert events == [EndOfMessage()]


def test_content_sent_before_354_is_a_pipelining_violation() -> None:
    conn = greeted()
    conn.receive_data(ENVELOPE + b"DATA\r\nSubject: smuggled\r\n\r\nbody\r\n.\r\n")
    for _ in range(3):
        conn.send(Reply(250, "OK") if not isinstance(conn.next_event(), Data) else Reply(250))
    assert isinstance(conn.next_event(), Data)
    conn.send(Reply(354, "go ahead"))
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reply_hint == Reply(554, "Pipelining error: data sent before 354", "5.5.0")
    assert conn.state is State.ERROR
    assert conn.send(info.value.reply_hint).startswith(b"554 5.5.0")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_early_content_can_be_allowed() -> None:
    conn = greeted(reject_early_content=False)
    events, _ = run(conn, ENVELOPE + b"DATA\r\nbody\r\n.\r\n")
    assert content_of(events) == b"body\r\n" and isinstance(events[-1], EndOfMessage)


@pytest.mark.parametrize("content", [b"bare\nLF\r\n", b"bare\rCR\r\n", b"x\r\n\n.\n"])
def test_bare_line_endings_reject_the_message_after_its_end(content: bytes) -> None:
    conn = greeted()
    run(conn, ENVELOPE + b"DATA\r\n")
    events, out = run(conn, content + b"more\r\n.\r\nRSET\r\n")
    assert isinstance(events[-2], RejectedMessage)
    assert codes(out) == ["550 5.5.2", "250 2.0.0"]
    assert conn.state is State.READY


def test_lenient_policy_accepts_bare_line_endings() -> None:
    conn = greeted(framing=FramingPolicy.lenient())
    run(conn, ENVELOPE + b"DATA\r\n")
    events, _ = run(conn, b"bare\nLF and bare\rCR\r\n.\r\n")
    assert content_of(events) == b"bare\nLF and bare\rCR\r\n"


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r"])
@pytest.mark.parametrize("framing", [FramingPolicy.strict(), FramingPolicy.lenient()])
def test_smuggling_never_starts_a_second_transaction(
    smuggle: bytes, framing: FramingPolicy
) -> None:
    conn = greeted(framing=framing)
    run(conn, ENVELOPE + b"DATA\r\n")
    injected = b"MAIL FROM:<admin@pqr.example>\r\nRCPT TO:<victim@pqr.example>\r\nDATA\r\n"
    events, _ = run(conn, b"Subject: a\r\n\r\nhi" + smuggle + injected + b"evil\r\n.\r\n")
    assert [type(e) for e in events if not isinstance(e, MessageData)] == [
        RejectedMessage if framing == FramingPolicy.strict() else EndOfMessage
    ]
    assert not any(isinstance(e, Mail | Rcpt) for e in events)


def test_message_size_limit_is_enforced_after_the_end() -> None:
    conn = greeted(max_message_size=100)
    run(conn, ENVELOPE + b"DATA\r\n")
    events, out = run(conn, b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\n")
    assert isinstance(events[-1], RejectedMessage)
    assert codes(out) == ["552 5.3.4"]
    assert sum(len(e.data) for e in events if isinstance(e, MessageData)) <= 100


@pytest.mark.parametrize("limit", [0, None])
def test_no_message_size_limit_is_none_or_zero(limit: int | None) -> None:
    """RFC 1870 §4: ``SIZE 0`` means no fixed maximum, and the machine keeps to what it
    announced: any declared SIZE, DATA and BDAT content of any size are taken."""
    conn = greeted(max_message_size=limit)
    _, out = run(conn, EHLO)
    assert (b"250-SIZE 0\r\n" if limit == 0 else b"250-SIZE\r\n") in out
    envelope = b"MAIL FROM:<a@b.example> SIZE=99999999\r\nRCPT TO:<c@d.example>\r\n"
    _, out = run(conn, envelope + b"DATA\r\n")
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354"]
    _, out = run(conn, b"x" * 900 + b"\r\n" + b"x" * 900 + b"\r\n.\r\n")
    assert codes(out) == ["250 2.0.0"]
    chunk = (b"y" * 98 + b"\r\n") * 30
    _, out = run(conn, envelope + b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]


def test_long_text_line_rejects_the_message() -> None:
    conn = greeted(max_text_line=1000)
    run(conn, ENVELOPE + b"DATA\r\n")
    _events, out = run(conn, b"a" * 998 + b"\r\n" + b"b" * 999 + b"\r\n.\r\n")
    assert codes(out) == ["500 5.6.0"]


def test_rejected_message_cannot_be_accepted() -> None:
    conn = greeted(max_message_size=5)
    run(conn, ENVELOPE + b"DATA\r\n")
    conn.receive_data(b"too long\r\n.\r\n")
    assert isinstance(conn.next_event(), RejectedMessage)
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "ok"))
    assert conn.send(Reply(554, "no")).startswith(b"554")


def test_data_reply_must_be_354_or_failure() -> None:
    conn = greeted()
    run(conn, ENVELOPE)
    conn.receive_data(b"DATA\r\n")
    assert isinstance(conn.next_event(), Data)
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "ok"))
    assert conn.send(Reply(451, "try later")) == b"451 4.0.0 try later\r\n"
    assert conn.state is State.RCPT


def test_peer_closing_mid_data_is_reported() -> None:
    conn = greeted()
    run(conn, ENVELOPE + b"DATA\r\n")
    conn.receive_data(b"partial")
    conn.receive_data(b"")
    events, _ = run(conn)
    assert isinstance(events[-1], ConnectionClosed)
    assert not any(isinstance(e, EndOfMessage) for e in events)
    assert conn.state is State.CLOSED


# -- framing of command lines ------------------------------------------------------------


def test_overlong_command_line_gets_500_and_memory_stays_bounded() -> None:
    conn = greeted()
    run(conn, EHLO)
    for _ in range(200):
        conn.receive_data(b"A" * 4096)
        assert conn.next_event() is NEED_DATA
        assert len(conn._buffer) <= 4096 + 512
    _events, out = run(conn, b"\r\nNOOP\r\n")
    assert codes(out) == ["500 5.5.2", "250 2.0.0"]


def test_bare_lf_command_is_refused_under_the_strict_policy() -> None:
    # Only CRLF ends a line (RFC 5321 §2.3.8): the RSET after the bare LF is part
    # of the refused line, not a command a CRLF-only reader of the session never saw.
    conn = greeted()
    run(conn, ENVELOPE)
    events, out = run(conn, b"NOOP\nRSET\r\nDATA\r\n")
    assert codes(out) == ["500 5.5.2", "354"]
    assert isinstance(events[0], BadCommand) and events[0].line == b"NOOP\nRSET\r\n"
    # A line cut by the network after its bare LF waits for its CRLF.
    conn = greeted()
    assert run(conn, b"EHLO a.example\n") == ([], b"")
    assert codes(run(conn, b"\r\nNOOP\r\n")[1]) == ["500 5.5.2", "250 2.0.0"]


def test_bare_lf_command_accepted_when_allowed() -> None:
    events, _ = run(greeted(framing=FramingPolicy(lf_ends_command=True)), b"NOOP\n")
    assert events == [Noop()]


def test_too_many_errors_closes_with_421() -> None:
    conn = greeted(max_errors=3)
    _, out = run(conn, b"MAIL FROM:<x@y.example>\r\n" * 4)
    assert codes(out) == ["503 5.5.1"] * 3 + ["421 4.7.0"]
    assert conn.state is State.CLOSED


@given(st.integers(1, 8), st.integers(513, 2000))
def test_over_long_lines_count_toward_max_errors_and_end_at_the_limit(
    max_errors: int, length: int
) -> None:
    """An over-long line is unreadable as a bare LF or invalid UTF-8 is (RFC 5321
    §4.5.3.1.4): refused ``500 5.5.2`` and counted toward ``max_errors``, and the line
    at the limit gets ``421 4.7.0`` and the session ends (§3.8). The limit was never
    checked for such a line: thirty over-long lines got thirty 500s, and only the
    next ordinary line the 421."""
    conn = greeted(max_errors=max_errors)
    _, out = run(conn, (b"A" * length + b"\r\n") * (max_errors + 5))
    assert codes(out) == ["500 5.5.2"] * max_errors + ["421 4.7.0"]
    assert conn.state is State.CLOSED


def test_too_many_unknown_commands_closes_with_421() -> None:
    conn = greeted(max_bad_commands=2, max_errors=100)
    _, out = run(conn, b"FOO\r\nBAR\r\n")
    assert codes(out) == ["500 5.5.2", "421 4.7.0"]
    assert conn.state is State.CLOSED


# -- STARTTLS (RFC 3207) ---------------------------------------------------------------------


def test_starttls_discards_pipelined_plaintext() -> None:
    conn = greeted(starttls=True)
    _, out = run(conn, EHLO + b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n")
    assert conn.state is State.TLS_PENDING
    assert codes(out)[-1] == "220 2.0.0"
    conn.receive_data(b"RCPT TO:<more@x.example>\r\n")  # still plaintext: dropped
    assert conn.next_event() is PAUSED
    conn.tls_started()
    assert conn.state.name == "HELLO" and conn.tls  # .name: mypy kept the earlier narrowing
    _events, out = run(conn, b"MAIL FROM:<a@b.example>\r\n")
    assert codes(out) == ["503 5.5.1"]  # session restarted: EHLO needed
    _, out = run(conn, EHLO)
    assert b"STARTTLS" not in out
    _, out = run(conn, b"STARTTLS\r\n")
    assert codes(out) == ["503 5.5.1"]


def test_starttls_under_tls_is_out_of_sequence_and_counts_as_an_error() -> None:
    """RFC 3207 names no reply to a STARTTLS under TLS: the machine answers it as a
    command out of sequence, ``503 5.5.1 TLS already active`` (docs/extensions.rst),
    not as an unknown command: it counts toward ``max_errors``, never toward
    ``max_bad_commands``."""
    conn = greeted(starttls=True, max_bad_commands=2, max_errors=3)
    run(conn, EHLO + b"STARTTLS\r\n")
    conn.tls_started()
    _, out = run(conn, EHLO + b"STARTTLS\r\n" * 3)
    assert out.endswith(b"503 5.5.1 TLS already active\r\n")
    assert codes(out)[1:] == ["503 5.5.1"] * 3 and conn.state is State.READY
    _, out = run(conn, b"NOOP\r\n")
    assert codes(out) == ["421 4.7.0"] and conn.state.name == "CLOSED"  # .name: mypy narrowed it


def test_a_client_that_leaves_before_the_handshake_closes_the_session() -> None:
    """End of file while the TLS handshake is awaited: ConnectionClosed, as anywhere
    else, not PAUSED for ever."""
    conn = greeted(starttls=True)
    run(conn, EHLO + b"STARTTLS\r\n")
    assert conn.state is State.TLS_PENDING
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert conn.state.name == "CLOSED"  # .name: mypy kept the earlier narrowing


def test_bytes_after_the_session_ended_are_not_kept() -> None:
    """A closed session or one in ERROR reads no more: what comes is dropped, not
    buffered without bound."""
    conn = greeted()
    run(conn, EHLO + b"QUIT\r\n")
    assert conn.state is State.CLOSED
    conn.receive_data(b"x" * 100_000)
    assert conn.buffered == 0 and isinstance(conn.next_event(), ConnectionClosed)
    failed = greeted()
    run(failed, EHLO)
    failed.send_failed()
    failed.receive_data(b"NOOP\r\n" * 20_000)
    assert failed.buffered == 0


def test_require_tls_before_mail() -> None:
    conn = greeted(starttls=True, require_tls=True)
    _, out = run(conn, EHLO + b"MAIL FROM:<a@b.example>\r\n")
    assert codes(out)[-1] == "530 5.7.0"


def test_starttls_refused_keeps_plaintext_session() -> None:
    conn = greeted(starttls=True)
    run(conn, EHLO)
    conn.receive_data(b"STARTTLS\r\n")
    conn.next_event()
    conn.send(Reply(454, "TLS not available"))
    assert conn.state is State.READY


def test_tls_started_only_when_pending() -> None:
    with pytest.raises(LocalProtocolError):
        greeted().tls_started()


# -- LMTP (RFC 2033) -------------------------------------------------------------------


def test_lmtp_gives_one_reply_per_accepted_recipient() -> None:
    conn = greeted(lmtp=True)
    data = (
        b"LHLO a.example\r\nMAIL FROM:<a@b.example>\r\n"
        b"RCPT TO:<one@pqr.example>\r\nRCPT TO:<two@pqr.example>\r\nDATA\r\n"
    )
    events, _out = run(conn, data)
    assert isinstance(events[0], Lhlo)
    events, out2 = run(conn, b"hi\r\n.\r\n")
    assert codes(out2) == ["250 2.0.0", "250 2.0.0"]
    assert conn.state is State.READY


def test_lmtp_data_with_no_recipient_accepted_is_503() -> None:
    """RFC 2033 §4.2: "the DATA command MUST fail with a 503 reply code"; SMTP's 554."""
    lhlo = b"LHLO a.example\r\nMAIL FROM:<a@b.example>\r\n"
    for command in (b"DATA\r\n", b"BDAT 0 LAST\r\n"):
        _, out = run(greeted(lmtp=True, chunking=True), lhlo + command)
        assert codes(out)[-1] == "503 5.5.1"
    _, out = run(greeted(), EHLO + b"MAIL FROM:<a@b.example>\r\nDATA\r\n")
    assert codes(out)[-1] == "554 5.5.1"


def test_lmtp_refuses_ehlo() -> None:
    _, out = run(greeted(lmtp=True), EHLO)
    assert codes(out) == ["500 5.5.2"]


@pytest.mark.parametrize(
    ("lmtp", "expected"),
    [(False, b"503 5.5.1 Send EHLO or HELO first\r\n"), (True, b"503 5.5.1 Send LHLO first\r\n")],
)
def test_a_command_before_the_hello_asks_for_the_hello_of_its_mode(
    lmtp: bool, expected: bytes
) -> None:
    """RFC 2033 §4.1: LMTP refuses EHLO and HELO, so a command that needs the session
    opened first asks for LHLO there, as the extension verbs' answer does."""
    _, out = run(greeted(lmtp=lmtp), b"MAIL FROM:<a@b.example>\r\n")
    assert out == expected


def test_smtp_refuses_lhlo() -> None:
    _, out = run(greeted(), b"LHLO a.example\r\n")
    assert codes(out) == ["500 5.5.2"]


# -- replies and application misuse ------------------------------------------------------


def test_application_status_and_multiline_replies() -> None:
    conn = greeted()
    run(conn, EHLO)
    conn.receive_data(b"HELP\r\n")
    conn.next_event()
    out = conn.send(Reply(214, ["Commands:", "EHLO MAIL RCPT DATA"], "2.0.0"))
    assert out == b"214-2.0.0 Commands:\r\n214 2.0.0 EHLO MAIL RCPT DATA\r\n"


def test_enhanced_status_codes_off_strips_them() -> None:
    conn = greeted(enhanced_status_codes=False)
    run(conn, EHLO)
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    conn.next_event()
    assert conn.send(Reply(550, "no", "5.7.1")) == b"550 no\r\n"


def test_commands_out_of_place_in_a_transaction_are_told_so() -> None:
    """A 503 whose text fits: inside a transaction nothing is missing a MAIL."""
    _, out = run(greeted(starttls=True), ENVELOPE + b"STARTTLS\r\n")
    assert out.splitlines()[-1] == b"503 5.5.1 Mail transaction in progress"
    chunk = b"BDAT 4\r\nabcd"
    _, out = run(greeted(), ENVELOPE + chunk + b"DATA\r\nMAIL FROM:<a@b.example>\r\n")
    assert out.splitlines()[-2:] == [
        b"503 5.5.1 DATA after BDAT: end the message with BDAT LAST",
        b"503 5.5.1 Nested MAIL command",
    ]


def test_the_greeting_and_hello_replies_carry_no_enhanced_status() -> None:
    """RFC 2034 §3 leaves out the greeting and the replies to EHLO and HELO, whatever
    their code; a 421 later in the session gets its status as any reply does."""
    conn = ServerConnection("mx.test")
    assert conn.send(Reply(421, "busy")) == b"421 busy\r\n"
    for hello in (EHLO, b"HELO a.example\r\n"):
        conn = greeted()
        conn.receive_data(hello)
        conn.next_event()
        assert conn.send(Reply(550, "go away", "5.7.1")) == b"550 go away\r\n"
    conn = greeted()
    conn.receive_data(EHLO)
    conn.next_event()
    assert conn.send(Reply(421, "closing")) == b"421 closing\r\n"
    conn = greeted()
    run(conn, EHLO)
    conn.receive_data(b"NOOP\r\n")
    conn.next_event()
    assert conn.send(Reply(421, "closing")) == b"421 4.0.0 closing\r\n"


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Reply(250, "a\r\nb"),
        lambda: Reply(250, ["a", "b\n"]),
        lambda: Reply(199, "x"),
        lambda: Reply(550, "x", "2.0.0"),
        lambda: Reply(250, "x", "9.9.9"),
        lambda: Reply(550, "no such sender \udcff"),  # os.fsdecode, surrogateescape
        lambda: Reply(250, ["ok", "\ud800"]),
        lambda: Reply(550, "bell\x07"),  # C0 but CR and LF
        lambda: Reply(550, "x\x1b[31m"),  # ESC
        lambda: Reply(550, "rub\x7fout"),  # DEL
    ],
)
def test_replies_that_would_serialize_wrongly_cannot_be_built(bad: object) -> None:
    with pytest.raises(LocalProtocolError):
        bad()  # type: ignore[operator]  # a lambda from the table


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("x\x9b31m", ("x\\x9b31m",)),  # C1: the 8-bit CSI
        ("x\x85y", ("x\\x85y",)),  # C1: NEL, a line end to some readers
        ("a\u2028Injected: yes", ("a\\u2028Injected: yes",)),  # the line separator
        (["ok", "a\u2029b"], ("ok", "a\\u2029b")),  # the paragraph separator
        ("user \u202eelgoog", ("user \\u202eelgoog",)),  # a bidi override
        ("<n\u200eobody@pqr.example> OK", ("<n\\u200eobody@pqr.example> OK",)),  # LRM
        ("soft\u00adhyphen \U000e0001", ("soft\\xadhyphen \\U000e0001",)),
    ],
)
def test_reply_text_unsafe_for_display_is_written_escaped(
    text: str | list[str], lines: tuple[str, ...]
) -> None:
    """RFC 5198 §2: a C1 control, a format character or a line or paragraph separator
    may stand in what a handler quotes from a client (an SMTPUTF8 address may hold an
    LRM, RFC 6531 §3.3), so it is escaped as a Python literal writes it, not refused:
    refusing would cost the message (the handler fails, the client is answered 451)."""
    reply = Reply(550, text)
    assert reply.lines == lines
    assert reply.text == (lines[0] if isinstance(text, str) else lines)
    assert reply == Reply(550, lines)


def test_a_handler_echoing_an_smtputf8_address_with_an_lrm_is_not_punished() -> None:
    """An aiosmtpd-style handler answers ``Reply(250, f"<{rcpt}> OK")``: a recipient
    holding U+200E, legitimate in an SMTPUTF8 address (RFC 6531 §3.3), is accepted
    with the mark escaped on the wire, and the session goes on."""
    conn = greeted()
    run(conn, EHLO)
    conn.receive_data(b"MAIL FROM:<a@b.example> SMTPUTF8\r\n")
    assert isinstance(conn.next_event(), Mail)
    conn.send(Reply(250, "OK"))
    conn.receive_data("RCPT TO:<n\u200eobody@pqr.example>\r\n".encode())
    rcpt = conn.next_event()
    assert isinstance(rcpt, Rcpt)
    wire = conn.send(Reply(250, f"<{rcpt.recipient}> OK"))
    assert wire == b"250 2.1.5 <n\\u200eobody@pqr.example> OK\r\n"
    assert conn.state is State.RCPT


def _escaped_where_unsafe(text: str) -> str:
    return "".join(
        char.encode("unicode_escape").decode("ascii") if unsafe_in_text(char) else char
        for char in text
    )


@given(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20))
def test_reply_text_is_escaped_exactly_where_it_is_unsafe_in_text(text: str) -> None:
    """RFC 5198 §2: what the parsers mask never reaches the wire. CR, LF, the other C0
    controls and DEL would break the reply's framing and are refused, as they always
    were (a programming error); the rest of the class (C1 controls, format and
    separator characters) is written backslash-escaped, and nothing else is touched:
    the UTF-8 an SMTPUTF8 (RFC 6531) reply may quote is written as it is. A reply read
    back from the wire equals the one built."""
    if any(char.isascii() and unsafe_in_text(char) for char in text):
        with pytest.raises(LocalProtocolError, match="control"):
            Reply(550, text)
        return
    reply = Reply(550, text)
    assert reply.lines == (_escaped_where_unsafe(text),)
    wire = reply.to_bytes()
    assert not holds_unsafe(wire.decode().removesuffix("\r\n"))
    buffer = ReceiveBuffer()
    buffer.receive(wire)
    assert ReplyParser().next_reply(buffer, enhanced=False) == reply


def test_utf8_reply_text_is_written_as_it_is() -> None:
    """Letters of any script, HTAB, ZWNJ and ZWJ (which some scripts need) are text."""
    for text in ("caf\u00e9 \u65e5\u672c", "tab\there", "\u0dc1\u0dca\u200d\u0dbb", "a\u200cb"):
        assert Reply(250, text).to_bytes() == f"250 {text}\r\n".encode()


_PARTIAL_ESCAPE_AT_END = re.compile(r"\\(?:x[0-9a-f]?|u[0-9a-f]{0,3}|U[0-9a-f]{0,7})?$")


@given(st.text(st.characters(exclude_characters="\\"), max_size=700))
@example("x" * 488 + "\u200e" * 5)
@example("\U000e0041" * 60)
@example("\udcff" * 130)
def test_quoted_text_always_makes_a_reply_that_fits_and_cuts_no_escape(text: str) -> None:
    """What a handler quotes from a client, passed through :func:`quoted`, always
    builds a reply whose line fits (RFC 5321 §4.5.3.1.5), whatever it holds (controls,
    format characters, lone surrogates), and a cut never leaves half an escape."""
    reply = Reply(550, quoted(text), "5.1.1")
    assert len(reply.to_bytes()) <= 512
    body = reply.text.removesuffix("...") if isinstance(reply.text, str) else ""
    assert not _PARTIAL_ESCAPE_AT_END.search(body)


def test_quoted_needs_room_for_its_ellipsis() -> None:
    with pytest.raises(ValueError, match="room"):
        quoted("abcdefgh", 2)
    assert quoted("abcdefgh", 3) == "..."


class _SaysPrintable(str):
    """A str that claims to be printable whatever it holds."""

    def isprintable(self) -> bool:
        return True


def test_a_str_subclass_cannot_talk_its_way_past_the_reply_text_check() -> None:
    with pytest.raises(LocalProtocolError):
        Reply(250, _SaysPrintable("fine\r\n250 injected"))


def test_quoted_cuts_before_an_escape_it_cannot_hold_whole() -> None:
    assert quoted("x" * 488 + "\u200e" * 5) == "x" * 488 + "..."
    assert quoted("x" * 486 + "\u200e" * 5) == "x" * 486 + "\\u200e..."


def test_a_handler_quoting_a_long_vrfy_argument_with_quoted_gets_its_reply_out() -> None:
    """160 LRMs are 480 octets raw and 960 escaped: ``Reply(252, f"cannot VRFY
    {argument}")`` is over a reply line and refused at ``send``; through
    :func:`quoted` it is cut to fit, and the session goes on."""
    argument = "\u200e" * 160
    conn = greeted()
    run(conn, EHLO)
    conn.receive_data(f"VRFY {argument}\r\n".encode())
    vrfy = conn.next_event()
    assert isinstance(vrfy, Vrfy)
    with pytest.raises(LocalProtocolError, match="512"):
        conn.send(Reply(252, f"cannot VRFY {vrfy.argument}"))
    wire = conn.send(Reply(252, quoted(f"cannot VRFY {vrfy.argument}")))
    assert wire.startswith(b"252 2.0.0 cannot VRFY \\u200e") and wire.endswith(b"...\r\n")
    assert len(wire) <= 512


def test_a_lone_surrogate_in_reply_text_is_refused_before_the_machine_moves() -> None:
    """UTF-8 has no form for a lone surrogate: the reply is refused when built, not
    by ``send``'s encoding after the command was consumed (then no reply could be
    sent for it), and the machine still answers the command."""
    conn = greeted()
    run(conn, EHLO)
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    assert isinstance(conn.next_event(), Mail)
    with pytest.raises(LocalProtocolError, match="surrogate"):
        conn.send(Reply(550, "no such sender " + b"\xff".decode("utf-8", "surrogateescape")))
    assert conn.state is State.READY
    assert conn.send(Reply(550, "no such sender")) == b"550 5.0.0 no such sender\r\n"


def _fields(conn: ServerConnection) -> list[object]:
    names = [name for name in ServerConnection.__slots__ if name != "__dict__"]
    return [getattr(conn, name) for name in names] + [dict(vars(conn))]


def test_a_reply_line_over_512_octets_is_refused_and_changes_nothing() -> None:
    """RFC 5321 §4.5.3.1.5: 512 octets a line, code, enhanced status and CRLF included.
    The machine moves before it writes: every path leaves it as it was."""
    conn = greeted()
    conn.receive_data(EHLO)
    assert isinstance(conn.next_event(), Ehlo)
    before = _fields(conn)
    for too_long in (  # the host name comes first in an EHLO reply
        Reply(250, "x" * (512 - len("250-mx.pqr.example \r\n")) + "x"),
        Reply(550, ["fine", "\u00e9" * 254]),  # 508 octets: 514 on the wire
    ):
        with pytest.raises(LocalProtocolError, match="512 octets"):
            conn.send(too_long)
        assert _fields(conn) == before
    assert conn.send(Reply(250, "x" * 489)).startswith(b"250-mx.pqr.example xx")
    run(conn, b"MAIL FROM:<john@abc.example>\r\n")
    for answer in (Reply(250, "y" * 501), Reply(550, "y" * 501)):  # 2.1.5 or 5.0.0
        conn.receive_data(b"RCPT TO:<brendon@pqr.example>\r\n")
        assert isinstance(conn.next_event(), Rcpt)
        before = _fields(conn)
        with pytest.raises(LocalProtocolError, match="512 octets"):
            conn.send(answer)
        assert _fields(conn) == before
        assert len(conn.send(Reply(250, "y" * 500))) == 512
    run(conn, b"DATA\r\n")
    conn.receive_data(b"hi\r\n.\r\n")
    assert conn.next_event() == MessageData(b"hi\r\n")
    assert isinstance(conn.next_event(), EndOfMessage)
    before = _fields(conn)
    with pytest.raises(LocalProtocolError, match="512 octets"):
        conn.send(Reply(250, "z" * 501))
    assert _fields(conn) == before
    assert conn.send(Reply(250, "queued")) == b"250 2.0.0 queued\r\n"


def test_an_ehlo_reply_whose_keyword_lines_overrun_is_refused_and_changes_nothing() -> None:
    """The EHLO keyword lines were not measured: an AUTH line over 512 octets raised
    once the session had moved (HELLO to READY, helo_name set), and the 451 that
    should follow was refused ("there is no command to answer"). The constructor
    refuses such a list; one set on the session later fails the reply, the machine
    left as it was."""
    names = [f"X-MECHANISM-{i:04d}ABCD" for i in range(30)]  # 20 octets each
    with pytest.raises(ValueError, match="AUTH line of 24 mechanisms is over 512"):
        ServerConnection("mx.pqr.example", auth_mechanisms=names[:24])  # 514 octets
    fits = greeted(auth_mechanisms=names[:23], auth_require_tls=False)  # 493 octets
    run(fits, EHLO)
    conn = greeted(auth_mechanisms=["PLAIN"], auth_require_tls=False)
    conn.auth_mechanisms = tuple(names)  # as a driver offers a session its own
    conn.receive_data(EHLO)
    assert isinstance(conn.next_event(), Ehlo)
    before = _fields(conn)
    with pytest.raises(LocalProtocolError, match="512 octets"):
        conn.send(Reply(250, "hello"))
    assert _fields(conn) == before
    assert conn.state is State.HELLO and conn.helo_name is None
    assert conn.send(Reply(451, "try again later", "4.3.0")) == b"451 try again later\r\n"
    conn.auth_mechanisms = ("PLAIN",)
    assert run(conn, EHLO)[1].endswith(b"250 AUTH PLAIN\r\n")
    assert conn.extended


@pytest.mark.parametrize(
    "hostname", ["x" * 250 + ".example", "mx pqr.example", "mx.pqr.example\r\n250 ok", ""]
)
def test_a_hostname_that_is_no_domain_is_refused(hostname: str) -> None:
    """The host name heads the greeting and the EHLO reply (RFC 5321 §4.1.1.1): a domain
    of at most 255 octets (§4.5.3.1.2) or an address literal. A longer one overran the
    EHLO reply's first line after the session had moved."""
    with pytest.raises(ValueError, match="cannot name this server"):
        ServerConnection(hostname)
    conn = greeted()
    with pytest.raises(ValueError, match="cannot name this server"):
        conn.hostname = hostname
    assert conn.hostname == "mx.pqr.example"


@pytest.mark.parametrize(
    "hostname",
    [
        "localhost",
        "mx.pqr.example.",
        "[192.0.2.1]",
        "[IPv6:::1]",
        "build_host.example",  # socket.getfqdn() may give one: the server must start
        "192.0.2.1",
    ],
)
def test_a_domain_or_address_literal_names_the_host(hostname: str) -> None:
    conn = ServerConnection(hostname)
    conn.send(Reply(220, "ready"))
    assert run(conn, EHLO)[1].startswith(f"250-{hostname} ".encode())


@given(sst.hostnames())
def test_the_host_is_named_in_ascii_before_smtputf8(hostname: str) -> None:
    """The greeting and EHLO reply come before SMTPUTF8 is agreed (RFC 6531), and a
    Domain there is ASCII (RFC 5321 §4.1.2): a non-ASCII name is taken in its A-label
    form (RFC 5890), the one ``serve`` gives its --hostname. It went out as UTF-8.
    A name that has no A-label form is refused (see the next test)."""
    try:
        a_label = a_label_hostname(hostname)
    except ValueError:
        with pytest.raises(ValueError):
            ServerConnection(hostname)
        return
    conn = ServerConnection(hostname, smtputf8=True)
    assert conn.hostname == a_label and conn.hostname.isascii()
    conn.send(Reply(220, "ready"))
    hello = run(conn, EHLO)[1]
    assert hello.isascii()
    assert hello.startswith(f"250-{conn.hostname} ".encode())
    conn.hostname = hostname  # set later: the same form
    assert conn.hostname == a_label


@pytest.mark.parametrize(
    "hostname",
    ["-\u00e4-", "[\u00e4]", "\u00e4..b", ".\u00e4", "\u00e4" * 300, "m\u00e4il_1.example"],
)
def test_a_non_ascii_name_idna_refuses_is_refused(hostname: str) -> None:
    """A non-ASCII name with no A-label form (RFC 5891 §4: a leading hyphen, an
    empty label, a literal, over 255 octets) cannot head a greeting before SMTPUTF8:
    ``ValueError``, as for any name the machine cannot take, from the machine and the
    adapters' options alike. It was degraded in silence: ``-ä-`` greeted as ``---``,
    ``[ä]`` as ``[-]``."""
    with pytest.raises(ValueError, match="cannot name this server"):
        ServerConnection(hostname)
    with pytest.raises(ValueError, match="cannot name this server"):
        ServerOptions(hostname=hostname)


def test_a_non_ascii_name_keeps_its_trailing_dot() -> None:
    """An ASCII name is taken as given, a trailing dot and all: a non-ASCII one only
    changes its labels' form. ``ä.example.`` lost its dot."""
    assert ServerConnection("\u00e4.example.").hostname == "xn--4ca.example."
    assert ServerOptions(hostname="\u00e4.example.").hostname == "xn--4ca.example."


def test_a_u_label_host_is_named_by_its_a_label() -> None:
    conn = ServerConnection("B\u00fccher.example")
    conn.send(Reply(220, "ready"))
    assert run(conn, EHLO)[1].startswith(b"250-xn--bcher-kva.example ")


def test_the_limit_counts_the_enhanced_status_only_where_it_is_written() -> None:
    conn = greeted(enhanced_status_codes=False, starttls=True)
    run(conn, EHLO)
    conn.receive_data(b"STARTTLS\r\nEHLO pipelined.example\r\n")
    assert isinstance(conn.next_event(), StartTls)
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(220, "t" * 507))
    assert conn.state is State.READY  # and the pipelined plaintext not yet dropped
    assert len(conn.send(Reply(220, "t" * 506))) == 512
    assert conn.state.name == "TLS_PENDING"


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<john@abc.example> " + b"K" * 470 + b"=1\r\n",
        b"MAIL FROM:<john@abc.example> X" + "\u00e9".encode() * 230 + b"=1\r\n",
        b"MAIL FROM:<" + b"j" * 60 + b"@" + b"a" * 400 + b".example>\r\n",
    ],
)
def test_replies_that_quote_the_client_are_cut_to_fit_a_line(line: bytes) -> None:
    """The machine's own replies quote a parameter or an address: they are cut short
    rather than refused by the 512-octet limit."""
    conn = greeted()
    run(conn, EHLO)
    conn.receive_data(line)
    event = conn.next_event()
    assert isinstance(event, BadCommand)
    out = conn.send(event.reply)
    assert out.startswith((b"501 5.", b"555 5.5.4 ")) and len(out) <= 512


def test_misuse_leaves_the_machine_unchanged() -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "nothing to answer"))
    with pytest.raises(LocalProtocolError):
        conn.send(Noop())
    conn.receive_data(EHLO)
    assert isinstance(conn.next_event(), Ehlo)
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(354, "wrong"))
    assert conn.state is State.HELLO
    conn.send(Reply(250, "ok"))
    assert conn.state.name == "READY"


def test_421_can_be_sent_at_any_time() -> None:
    conn = greeted()
    run(conn, ENVELOPE + b"DATA\r\n")
    assert conn.send(Reply(421, "shutting down")) == b"421 4.0.0 shutting down\r\n"
    assert conn.state is State.CLOSED


def test_quit_closes() -> None:
    conn = greeted()
    _events, out = run(conn, b"QUIT\r\nNOOP\r\n")
    assert conn.state is State.CLOSED
    assert codes(out) == ["221 2.0.0"]
    assert isinstance(conn.next_event(), ConnectionClosed)
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "ok"))


def test_peer_close_gives_connection_closed() -> None:
    conn = greeted()
    conn.receive_data(b"NOO")
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"more")


def test_send_failed_moves_to_error() -> None:
    conn = greeted()
    conn.send_failed()
    assert conn.state is State.ERROR
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_bad_command_reply_may_be_replaced_but_not_by_success() -> None:
    conn = greeted()
    conn.receive_data(b"BOGUS\r\n")
    event = conn.next_event()
    assert isinstance(event, BadCommand) and event.line == b"BOGUS\r\n"
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "fine"))
    assert conn.send(Reply(502, "Not implemented", "5.5.1")) == b"502 5.5.1 Not implemented\r\n"


# -- BDAT (RFC 3030) ---------------------------------------------------------------------


def test_chunking_is_offered_and_bdat_streams_raw_octets() -> None:
    conn = greeted()
    _, out = run(conn, ENVELOPE)
    assert b"250-CHUNKING\r\n" in out or b"250 CHUNKING\r\n" in out
    chunk = b"Subject: x\r\n\r\n.no stuffing\r\n.\r\n"
    events, out = run(conn, b"BDAT %d\r\n" % len(chunk) + chunk + b"BDAT 5 LAST\r\nend\r\n")
    assert content_of(events) == chunk + b"end\r\n"
    assert [type(e) for e in events if not isinstance(e, MessageData)] == [
        Bdat,
        Bdat,
        EndOfMessage,
    ]
    assert codes(out) == ["250 2.0.0", "250 2.0.0"]
    assert conn.state is State.READY


def test_bdat_chunks_arriving_byte_by_byte() -> None:
    conn = greeted()
    run(conn, ENVELOPE)
    data = b"BDAT 5\r\nhelloBDAT 0 LAST\r\nNOOP\r\n"
    events: list[Event] = []
    out = b""
    for byte in data:
        new, written = run(conn, bytes([byte]))
        events += new
        out += written
    assert content_of(events) == b"hello"
    assert codes(out) == ["250 2.0.0", "250 2.0.0", "250 2.0.0"]


def test_bdat_out_of_sequence_skips_its_chunk() -> None:
    conn = greeted()
    _, out = run(conn, EHLO + b"BDAT 10\r\nRCPT TO:<>NOOP\r\n")
    assert codes(out)[1:] == ["503 5.5.1", "250 2.0.0"]


SMUGGLED = b"RSET\r\nMAIL FROM:<evil@e.example>\r\n"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"BDAT %d  LAST", "501 5.5.4"),
        (b"BDAT %d LAST x", "501 5.5.4"),
        (b"BDAT %d FIRST", "501 5.5.4"),
        (b"bdat\t%d", "500 5.5.2"),
        (b"BDAT %d \xff", "500 5.5.2"),
        (b"BDAT %d \x01", "501 5.5.2"),
        (b"BDAT 000000000000000%d LAST x", "501 5.5.4"),
    ],
)
def test_bdat_refused_for_its_syntax_skips_its_chunk(line: bytes, code: str) -> None:
    """RFC 3030 §2: the chunk follows a failed BDAT whatever the reason; read as
    commands, it would run a transaction of the client's choosing."""
    conn = greeted()
    wire = ENVELOPE + line % len(SMUGGLED) + b"\r\n" + SMUGGLED + b"NOOP\r\n"
    events, out = run(conn, wire)
    assert codes(out)[-2:] == [code, "250 2.0.0"]
    assert [type(event) for event in events[-2:]] == [BadCommand, Noop]
    assert sum(isinstance(event, Mail) for event in events) == 1


@pytest.mark.parametrize(
    ("hello", "code"),
    [(b"HELO client.abc.example\r\n", "503 5.5.1"), (b"EHLO client.abc.example\r\n", "500 5.5.2")],
)
def test_bdat_where_it_is_unknown_skips_its_chunk(hello: bytes, code: str) -> None:
    """After HELO BDAT is out of sequence (it needs EHLO), with CHUNKING off an unknown
    command, but a client that sends it sends its chunk too: skipped, never read as
    commands."""
    conn = greeted(chunking=not hello.startswith(b"EHLO"))
    wire = hello + b"BDAT %d LAST\r\n" % len(SMUGGLED) + SMUGGLED + b"NOOP\r\n"
    events, out = run(conn, wire)
    assert codes(out)[-2:] == [code, "250 2.0.0"]
    assert not any(isinstance(event, Mail | Rset) for event in events)


@pytest.mark.parametrize(
    "line",
    [
        b"BDAT +34 LAST",
        b"BDAT 34x",
        b"BDAT \xc2\xb2",
        b"BDAT",
        b"BDAT 9" + b"0" * 19,  # 20 digits
        b"BDAT\x0b34",
        b"BDAT 34" + b" " * 600 + b"LAST",  # over the line limit: dropped unread
        b"bdat 34 LAST " + b"x" * 3000,
    ],
    ids=["plus", "letter", "superscript", "none", "20 digits", "VT", "long", "long lower"],
)
@pytest.mark.parametrize("chunking", [True, False])
def test_bdat_whose_size_cannot_be_read_ends_the_session(line: bytes, chunking: bool) -> None:
    """No one knows where that chunk ends: 421 and close (RFC 5321 §3.8), as Postfix
    closes, rather than read it as commands. So for a BDAT line over the limit, which
    is dropped unread: its chunk, read as commands, could hold a whole transaction."""
    conn = greeted(chunking=chunking)
    run(conn, ENVELOPE)
    conn.receive_data(line + b"\r\n" + SMUGGLED)
    with pytest.raises(RemoteProtocolError) as raised:
        conn.next_event()
    hint = raised.value.reply_hint
    assert isinstance(hint, Reply)
    assert conn.state is State.ERROR
    assert conn.send(hint).startswith(b"421 4.5.2 mx.pqr.example ")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


@pytest.mark.parametrize(
    "line",
    [b"NOOP\nBDAT %d LAST", b"RSET\n bdat %d", b"NOOP\nNOOP\nBDAT %d"],
    ids=["after NOOP", "lower case", "third"],
)
def test_bdat_after_a_bare_lf_ends_the_session(line: bytes) -> None:
    """A reader that ends lines at a bare LF sees a BDAT there and takes what follows
    as its chunk; this machine sees one refused line and would read that chunk as
    commands. Neither can say where the other's next command is: 421 and close."""
    conn = greeted()
    run(conn, ENVELOPE)
    conn.receive_data(line % len(SMUGGLED) + b"\r\n" + SMUGGLED)
    with pytest.raises(RemoteProtocolError) as raised:
        conn.next_event()
    assert isinstance(raised.value.reply_hint, Reply)
    assert conn.state is State.ERROR
    assert conn.send(raised.value.reply_hint).startswith(b"421 4.5.2 ")


def test_bare_lf_line_without_bdat_is_refused_and_the_session_goes_on() -> None:
    conn = greeted()
    run(conn, ENVELOPE)
    _events, out = run(conn, b"NOOP\nBDATA 3\r\nRSET\r\n")
    assert codes(out) == ["500 5.5.2", "250 2.0.0"]


def test_bdat_size_limit_rejects_at_last() -> None:
    conn = greeted(max_message_size=10)
    run(conn, ENVELOPE)
    events, out = run(conn, b"BDAT 8\r\n12345678BDAT 8 LAST\r\n12345678")
    assert isinstance(events[-1], RejectedMessage)
    assert codes(out) == ["250 2.0.0", "552 5.3.4"]


def test_bdat_is_answered_only_after_its_octets() -> None:
    conn = greeted()
    run(conn, ENVELOPE)
    conn.receive_data(b"BDAT 10\r\nhalf")
    assert isinstance(conn.next_event(), Bdat)
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "too early"))
    assert conn.next_event() == MessageData(b"half")
    assert conn.next_event() is NEED_DATA


def test_failed_bdat_chunk_aborts_the_transaction() -> None:
    conn = greeted()
    run(conn, ENVELOPE)
    conn.receive_data(b"BDAT 2\r\nab")
    assert isinstance(conn.next_event(), Bdat)
    assert conn.next_event() == MessageData(b"ab")
    assert conn.next_event() is PAUSED
    conn.send(Reply(452, "No room"))
    assert conn.state is State.READY
    _, out = run(conn, b"BDAT 1 LAST\r\nx")
    assert codes(out) == ["503 5.5.1"]


@pytest.mark.parametrize(
    "refused",
    [b"BDAT 4 LAST junk", b"BDAT 4  LAST", b"BDAT 4 FIRST", b"bdat\t4", b"BDAT 4 \xff"],
)
@pytest.mark.parametrize("first", [False, True], ids=["second chunk", "first chunk"])
@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
def test_bdat_the_machine_refuses_fails_the_transaction(
    refused: bytes, first: bool, lmtp: bool
) -> None:
    """RFC 3030 §2: after a 4xx or 5xx to any BDAT the transaction has failed, and the
    chunks still in the pipeline are discarded. A refused line is no exception: were
    the last chunk taken, the message would be queued without the refused chunk's
    octets (AAAACCCC), and the client, told 501, would send it again."""
    conn = greeted(lmtp=lmtp)
    hello = b"LHLO a.example\r\n" if lmtp else EHLO
    wire = hello + b"MAIL FROM:<john@abc.example>\r\nRCPT TO:<brendon@pqr.example>\r\n"
    if not first:
        wire += b"BDAT 4\r\nAAAA"
    wire += refused + b"\r\nBBBB" + b"BDAT 4 LAST\r\nCCCC" + b"NOOP\r\n"
    events, out = run(conn, wire)
    assert not any(isinstance(event, EndOfMessage | RejectedMessage) for event in events)
    assert content_of(events) == (b"" if first else b"AAAA")
    assert codes(out)[-3][:1] == "5"  # the refused line's answer
    assert codes(out)[-2:] == ["503 5.5.1", "250 2.0.0"]
    assert conn.state is State.READY
    # The next transaction is whole, with a reply per recipient in LMTP (RFC 2033 §4.2).
    again = b"MAIL FROM:<john@abc.example>\r\nRCPT TO:<a@pqr.example>\r\n"
    again += b"RCPT TO:<b@pqr.example>\r\nBDAT 2 LAST\r\nok"
    due = []

    def answer(conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
        if isinstance(event, EndOfMessage):
            due.append(conn.replies_due)
        return permissive_smtp_answer(conn, event)

    events, out = run(conn, again, answer=answer)
    assert content_of(events) == b"ok"
    assert due == [2 if lmtp else 1] and codes(out)[-1] == "250 2.0.0"


def test_bdat_before_any_recipient_fails_the_transaction() -> None:
    """``554 no valid recipients`` to a BDAT (RFC 3030 §2) ends the transaction too: a
    recipient pipelined after it does not revive the chunks that were skipped."""
    conn = greeted()
    wire = EHLO + b"MAIL FROM:<john@abc.example>\r\nBDAT 4\r\nAAAA"
    wire += b"RCPT TO:<brendon@pqr.example>\r\nBDAT 4 LAST\r\nCCCC"
    events, out = run(conn, wire)
    assert not any(isinstance(event, EndOfMessage) for event in events)
    assert codes(out)[-3:] == ["554 5.5.1", "503 5.5.1", "503 5.5.1"]
    assert conn.state is State.READY


def test_a_refused_bdat_outside_a_transaction_leaves_the_session_as_it_was() -> None:
    """No transaction, none to fail: a 554 greeting's session still serves only QUIT,
    a session before its hello still waits for one."""
    conn = ServerConnection("mx.pqr.example")
    conn.send(Reply(554, "mx.pqr.example No service"))
    _, out = run(conn, b"BDAT 3 FIRST\r\nabcNOOP\r\n")
    assert codes(out) == ["503 5.5.1", "503 5.5.1"]
    assert conn.state is State.NO_SERVICE
    hello = greeted()
    run(hello, b"BDAT 3 FIRST\r\nabc")
    assert hello.state is State.HELLO


@pytest.mark.parametrize(
    ("options", "hello"),
    [({"chunking": False}, EHLO), ({}, b"HELO client.abc.example\r\n")],
    ids=["chunking not offered", "after HELO"],
)
def test_a_bdat_where_chunking_is_not_in_force_leaves_the_transaction(
    options: dict[str, object], hello: bytes
) -> None:
    """RFC 3030 binds only a session where CHUNKING is in force (offered, and the
    session opened with EHLO). Elsewhere BDAT is an unknown or unoffered command, and
    a 500 or 503 leaves the state as it was (RFC 5321 §4.1.4): the DATA a client falls
    back to still gets its 354. The chunk is skipped all the same."""
    conn = greeted(**options)
    wire = hello + b"MAIL FROM:<john@abc.example>\r\nRCPT TO:<brendon@pqr.example>\r\n"
    events, out = run(conn, wire + b"BDAT 3 LAST\r\nabc" + b"DATA\r\n")
    assert codes(out)[-2][:1] == "5" and codes(out)[-1] == "354"
    assert conn.state is State.DATA
    assert content_of(events) == b""


@pytest.mark.parametrize(
    "refusal",
    [b"BDAT 4 LAST junk\r\nAAAA", b"BDAT 4\r\nAAAA"],
    ids=["by the machine", "by the application"],
)
def test_a_failed_bdat_clears_the_transaction_as_rset_does(refusal: bytes) -> None:
    """RFC 3030 §2: a BDAT refused ends its transaction, and with it what belonged to
    the transaction, as RSET clears it (RFC 5321 §4.1.1.5): the XFORWARD attributes
    (Postfix's XFORWARD_README: they hold for one message), the SMTPUTF8 flag, the
    recipients counted. Never carried into the client's next message."""

    def answer(conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
        if isinstance(event, Bdat):
            return Reply(452, "Insufficient system storage")
        return permissive_smtp_answer(conn, event)

    conn = greeted(trusted_forwarder=True, xforward=True)
    wire = EHLO + b"XFORWARD NAME=spoofed.example ADDR=192.0.2.9\r\n"
    wire += "MAIL FROM:<jörg@abc.example> SMTPUTF8\r\nRCPT TO:<b@pqr.example>\r\n".encode()
    _, out = run(conn, wire + refusal, answer=answer)
    assert codes(out)[-1][:1] in ("4", "5")
    assert conn.state is State.READY
    assert conn.forwarded_message is None
    assert conn.accepted_recipients == 0
    assert not conn._utf8_transaction
    run(conn, b"MAIL FROM:<x@abc.example>\r\nRCPT TO:<c@pqr.example>\r\n")
    assert conn.forwarded_message is None and conn.accepted_recipients == 1


def test_data_after_bdat_is_out_of_sequence() -> None:
    conn = greeted()
    _, out = run(conn, ENVELOPE + b"BDAT 1\r\nxDATA\r\n")
    assert codes(out)[-1] == "503 5.5.1"


def test_bdat_in_lmtp_gives_one_reply_per_recipient() -> None:
    conn = greeted(lmtp=True)
    data = b"LHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<one@x.example>\r\n"
    data += b"RCPT TO:<two@x.example>\r\nBDAT 4 LAST\r\nhi\r\n"
    _, out = run(conn, data)
    assert codes(out)[-2:] == ["250 2.0.0", "250 2.0.0"]


def test_chunking_can_be_switched_off() -> None:
    _, out = run(greeted(chunking=False), EHLO + b"BDAT 1 LAST\r\n")
    assert b"CHUNKING" not in out
    assert codes(out)[-1] == "500 5.5.2"


@pytest.mark.parametrize("code", [211, 220, 221, 235, 251, 252])
@pytest.mark.parametrize("lmtp", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_only_250_accepts_a_message(code: int, lmtp: bool, chunked: bool) -> None:
    """RFC 5321 §4.3.2, RFC 2033 §4.2: any other 2xx to the final dot (or BDAT LAST)
    is refused and leaves the machine as it was; a BDAT chunk, too (RFC 3030 §2)."""
    conn = greeted(lmtp=lmtp)
    hello = b"LHLO a.example\r\n" if lmtp else EHLO
    run(conn, hello + b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    if chunked:
        conn.receive_data(b"BDAT 2\r\nhi")
        assert isinstance(conn.next_event(), Bdat)
        assert conn.next_event() == MessageData(b"hi")
        with pytest.raises(LocalProtocolError):
            conn.send(Reply(code, "chunk taken?"))
        assert conn.send(Reply(250, "OK")) == b"250 2.0.0 OK\r\n"
        conn.receive_data(b"BDAT 0 LAST\r\n")
        assert isinstance(conn.next_event(), Bdat)
    else:
        run(conn, b"DATA\r\n")
        conn.receive_data(b"hi\r\n.\r\n")
        assert conn.next_event() == MessageData(b"hi\r\n")
    assert isinstance(conn.next_event(), EndOfMessage)
    state = conn.state
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(code, "what?"))
    assert conn.state is state and conn.next_event() is PAUSED
    assert conn.send(Reply(250, "Queued")) == b"250 2.0.0 Queued\r\n"
    assert conn.state is State.READY


def test_end_of_data_followed_by_a_dot_is_still_the_end() -> None:
    conn = greeted()
    run(conn, ENVELOPE + b"DATA\r\n")
    events, out = run(conn, b"body\r\n.\r\n.RSET\r\nNOOP\r\n")
    assert content_of(events) == b"body\r\n"
    assert codes(out) == ["250 2.0.0", "500 5.5.2", "250 2.0.0"]


# -- DSN parameters (RFC 3461) -----------------------------------------------------------

DSN_CASES = [
    (b"MAIL FROM:<a@b.example> RET=HDRS ENVID=QQ314159\r\n", "250 2.1.0"),
    (b"MAIL FROM:<a@b.example> RET=full\r\n", "250 2.1.0"),
    (b"MAIL FROM:<a@b.example> RET=ALL\r\n", "501 5.5.4"),
    (b"MAIL FROM:<a@b.example> ENVID=a+2Bb\r\n", "250 2.1.0"),
    (b"MAIL FROM:<a@b.example> ENVID=a+zz\r\n", "501 5.5.4"),
    (b"MAIL FROM:<a@b.example> RET\r\n", "501 5.5.4"),
]


@pytest.mark.parametrize(("line", "expected"), DSN_CASES)
def test_dsn_mail_parameters(line: bytes, expected: str) -> None:
    conn = greeted(dsn=True)
    _, out = run(conn, EHLO + line)
    assert b"DSN" in out
    assert codes(out)[-1] == expected


RCPT_DSN_CASES = [
    (b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE\r\n", "250 2.1.5"),
    (b"RCPT TO:<c@d.example> NOTIFY=NEVER\r\n", "250 2.1.5"),
    (b"RCPT TO:<c@d.example> NOTIFY=NEVER,DELAY\r\n", "501 5.5.4"),
    (b"RCPT TO:<c@d.example> NOTIFY=SOMETIMES\r\n", "501 5.5.4"),
    (b"RCPT TO:<c@d.example> ORCPT=rfc822;c+40d.example\r\n", "250 2.1.5"),
    (b"RCPT TO:<c@d.example> ORCPT=c@d.example\r\n", "501 5.5.4"),
    (b"RCPT TO:<c@d.example> FOO=1\r\n", "555 5.5.4"),
]


@pytest.mark.parametrize(("line", "expected"), RCPT_DSN_CASES)
def test_dsn_rcpt_parameters(line: bytes, expected: str) -> None:
    conn = greeted(dsn=True)
    _, out = run(conn, EHLO + b"MAIL FROM:<a@b.example>\r\n" + line)
    assert codes(out)[-1] == expected


def test_dsn_parameters_refused_when_dsn_is_off() -> None:
    _, out = run(greeted(), EHLO + b"MAIL FROM:<a@b.example> RET=HDRS\r\n")
    assert b"DSN" not in out
    assert codes(out)[-1] == "555 5.5.4"
