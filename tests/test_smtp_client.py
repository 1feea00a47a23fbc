"""The SMTP client machine on its own: replies in, commands out, every refusal.

The server side is played by hand-written reply bytes, so that each test
can send exactly the broken or surprising reply it is about.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from python_calls import python_calls
from smtpcore import NEED_DATA, PAUSED, LocalProtocolError, RemoteProtocolError
from smtpcore._textsafe import holds_unsafe
from smtpcore.address import Mailbox, parse_mailbox
from smtpcore.smtp import (
    Auth,
    AuthResponse,
    Bdat,
    ClientConnection,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    EnhancedStatus,
    Event,
    Helo,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    ServerExtensions,
    StartTls,
    State,
    Vrfy,
)
from smtpcore.smtp._replies import ReplyParser
from smtpcore.testing import strategies as sst

EHLO_FULL = (
    b"250-mx.test Hello client.test\r\n"
    b"250-SIZE 1000\r\n"
    b"250-8BITMIME\r\n"
    b"250-PIPELINING\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-CHUNKING\r\n"
    b"250-DSN\r\n"
    b"250-STARTTLS\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250 HELP\r\n"
)
EHLO_PIPELINING = b"250-mx.test\r\n250 PIPELINING\r\n"
EHLO_BARE = b"250 mx.test\r\n"

ALICE = parse_mailbox("alice@abc.example")
BOB = parse_mailbox("bob@pqr.example")
CAROL = parse_mailbox("carol@pqr.example")
PELE = parse_mailbox("pelé@exämple.test")


def feed(conn: ClientConnection, data: bytes) -> list[Reply]:
    """Give ``data`` to the machine and return every reply it yields."""
    conn.receive_data(data)
    return drain(conn)


def drain(conn: ClientConnection) -> list[Reply]:
    replies: list[Reply] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
            return replies
        replies.append(event)


def state(conn: ClientConnection) -> State:
    """The machine's state, read through a call so that mypy does not pin it."""
    return conn.state


def codes(replies: list[Reply]) -> list[int]:
    return [reply.code for reply in replies]


def session(
    ehlo: bytes = EHLO_FULL,
    *,
    lmtp: bool = False,
    max_reply_line: int = 4096,
    max_reply_lines: int = 100,
) -> ClientConnection:
    """A client that was greeted and whose EHLO (or LHLO) got ``ehlo``."""
    conn = ClientConnection(
        "client.test", lmtp=lmtp, max_reply_line=max_reply_line, max_reply_lines=max_reply_lines
    )
    assert codes(feed(conn, b"220 mx.test ESMTP\r\n")) == [220]
    conn.send(Lhlo("client.test") if lmtp else Ehlo("client.test"))
    assert codes(feed(conn, ehlo)) == [250]
    assert state(conn) is State.READY
    return conn


def in_data(ehlo: bytes = EHLO_FULL) -> ClientConnection:
    """A client whose DATA got its 354."""
    conn = session(ehlo)
    for event in (Mail(ALICE), Rcpt(BOB), Data()):
        conn.send(event)
        feed(conn, b"354 go ahead\r\n" if isinstance(event, Data) else b"250 ok\r\n")
    assert state(conn) is State.DATA
    return conn


# -- greeting -----------------------------------------------------------------


def test_greeting_is_the_first_event() -> None:
    conn = ClientConnection("client.test")
    assert state(conn) is State.GREETING
    assert conn.next_event() is NEED_DATA
    assert feed(conn, b"220-mx.test ESMTP\r\n") == []
    [greeting] = feed(conn, b"220 ready\r\n")
    assert greeting.lines == ("mx.test ESMTP", "ready")
    assert conn.greeting == greeting
    assert conn.answered is None
    assert state(conn) is State.HELLO
    assert conn.next_event() is PAUSED


def test_nothing_may_be_sent_before_the_greeting() -> None:
    conn = ClientConnection("client.test")
    with pytest.raises(LocalProtocolError, match="greeting"):
        conn.send(Ehlo("client.test"))
    assert state(conn) is State.GREETING


def test_554_greeting_allows_only_quit() -> None:
    conn = ClientConnection("client.test")
    feed(conn, b"554 no service\r\n")
    assert state(conn) is State.NO_SERVICE
    with pytest.raises(LocalProtocolError):
        conn.send(Ehlo("client.test"))
    assert conn.send(Quit()) == b"QUIT\r\n"
    feed(conn, b"221 bye\r\n")
    assert state(conn) is State.CLOSED
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_421_greeting_closes() -> None:
    conn = ClientConnection("client.test")
    assert codes(feed(conn, b"421 busy\r\n")) == [421]
    assert state(conn) is State.CLOSED
    assert isinstance(conn.next_event(), ConnectionClosed)
    with pytest.raises(LocalProtocolError):
        conn.send(Quit())


def test_greeting_with_another_code_is_a_protocol_error() -> None:
    conn = ClientConnection("client.test")
    conn.receive_data(b"250 hello\r\n")
    with pytest.raises(RemoteProtocolError, match="greeting"):
        conn.next_event()
    assert state(conn) is State.ERROR


# -- EHLO and its extensions ---------------------------------------------------


def test_ehlo_reply_becomes_extensions() -> None:
    conn = session()
    ext = conn.extensions
    assert conn.extended
    assert ext.domain == "mx.test"
    assert ext.size == 1000
    assert ext.auth == frozenset({"PLAIN", "LOGIN"})
    assert ext.pipelining and ext.eight_bit_mime and ext.smtputf8 and ext.chunking
    assert ext.dsn and ext.starttls and ext.enhanced_status_codes
    assert not ext.binary_mime
    assert "help" in ext and ext["size"] == ("1000",)
    assert conn.answered == Ehlo("client.test")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["mx"], {}),
        (["mx", "SIZE"], {"SIZE": ()}),
        (["mx", "size 0", "pipelining"], {"SIZE": ("0",), "PIPELINING": ()}),
        (
            ["mx", "AUTH=LOGIN PLAIN", "AUTH plain cram-md5"],
            {"AUTH": ("LOGIN", "PLAIN", "CRAM-MD5")},
        ),
        (["mx", "", "X-EXT a  b", "bad_keyword", "-dash"], {"X-EXT": ("a", "b")}),
    ],
)
def test_extension_lines(lines: list[str], expected: dict[str, tuple[str, ...]]) -> None:
    ext = ServerExtensions.from_reply(Reply(250, lines))
    assert dict(ext) == expected
    assert ext.domain == "mx"


@pytest.mark.parametrize(
    ("line", "size"),
    [("SIZE", None), ("SIZE 0", None), ("SIZE 35882577", 35882577), ("SIZE lots", None)],
)
def test_size_limit(line: str, size: int | None) -> None:
    assert ServerExtensions.from_reply(Reply(250, ["mx", line])).size == size


def test_extensions_are_immutable_values() -> None:
    one = ServerExtensions.from_reply(Reply(250, ["mx", "PIPELINING"]))
    two = ServerExtensions.from_reply(Reply(250, ["mx", "pipelining"]))
    assert one == two and hash(one) == hash(two)
    with pytest.raises(AttributeError):
        one.domain = "other"  # type: ignore[misc]  # the point: frozen


# Narrow on purpose: EHLO keywords in both cases, for reading the extension list.
_KEYWORDS = st.sampled_from(["PIPELINING", "SIZE", "8BITMIME", "AUTH", "X-Ext", "dsn"])


@given(
    st.lists(st.tuples(_KEYWORDS, st.lists(st.sampled_from(["1000", "PLAIN"]), max_size=2))),
    _KEYWORDS.flatmap(lambda word: st.sampled_from([word, word.lower(), word.title()])),
)
def test_extension_lookups_agree_with_a_scan_of_the_offer(
    offered: list[tuple[str, list[str]]], asked: str
) -> None:
    # The lookups go through an index built once; they must say what reading the
    # keywords in order, without regard to case, says (the first one listed wins).
    ext = ServerExtensions("mx", tuple((key, tuple(params)) for key, params in offered))
    scanned = [tuple(params) for key, params in offered if key.upper() == asked.upper()]
    assert (asked in ext) == bool(scanned)
    assert ext.get(asked) == (scanned[0] if scanned else None)
    assert ext.get(asked, ()) == (scanned[0] if scanned else ())
    if scanned:
        assert ext[asked] == scanned[0]
    else:
        with pytest.raises(KeyError):
            ext[asked]
    assert 250 not in ext  # type: ignore[comparison-overlap]  # the point: keywords only


def test_ehlo_refused_then_helo() -> None:
    conn = ClientConnection("client.test")
    feed(conn, b"220 old.test\r\n")
    conn.send(Ehlo("client.test"))
    assert codes(feed(conn, b"502 5.5.2 what?\r\n")) == [502]
    assert state(conn) is State.HELLO
    assert conn.send(Helo("client.test")) == b"HELO client.test\r\n"
    feed(conn, b"250 old.test\r\n")
    assert state(conn) is State.READY
    assert not conn.extended and len(conn.extensions) == 0
    with pytest.raises(LocalProtocolError, match="EHLO"):
        conn.send(Mail(ALICE, {"SIZE": "10"}))
    assert conn.send(Mail(ALICE)) == b"MAIL FROM:<alice@abc.example>\r\n"


def test_enhanced_status_split_only_once_offered() -> None:
    conn = session(EHLO_PIPELINING)
    conn.send(Noop())
    [reply] = feed(conn, b"250 2.0.0 ok\r\n")
    assert reply.status is None and reply.lines == ("2.0.0 ok",)
    conn = session()
    conn.send(Noop())
    [reply] = feed(conn, b"250 2.0.0 ok\r\n")
    assert reply.status == EnhancedStatus(2, 0, 0) and reply.lines == ("ok",)


# -- a transaction, one command at a time and pipelined ------------------------


def test_one_command_at_a_time_without_pipelining() -> None:
    conn = session(EHLO_BARE)
    conn.send(Mail(ALICE))
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        conn.send(Rcpt(BOB))
    assert conn.pending == (Mail(ALICE),)
    feed(conn, b"250 ok\r\n")
    assert state(conn) is State.MAIL
    assert conn.send(Rcpt(BOB)) == b"RCPT TO:<bob@pqr.example>\r\n"


def test_pipelined_transaction_with_partial_acceptance() -> None:
    conn = session()
    events: list[Event] = [Mail(ALICE, {"SMTPUTF8": None}), Rcpt(BOB), Rcpt(CAROL), Rcpt(PELE)]
    wire = b"".join(conn.send(event) for event in [*events, Data()])
    assert (
        wire
        == (
            "MAIL FROM:<alice@abc.example> SMTPUTF8\r\n"
            "RCPT TO:<bob@pqr.example>\r\n"
            "RCPT TO:<carol@pqr.example>\r\n"
            "RCPT TO:<pelé@exämple.test>\r\n"
            "DATA\r\n"
        ).encode()
    )
    assert state(conn) is State.READY  # nothing answered yet
    assert len(conn.pending) == 5
    answered: list[tuple[Event | None, Mailbox | None, int]] = []
    conn.receive_data(
        b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n251 2.1.5 forwarded\r\n"
        b"354 go ahead\r\n"
    )
    while isinstance(event := conn.next_event(), Reply):
        answered.append((conn.answered, conn.answered_recipient, event.code))
    assert event is PAUSED
    assert answered == [
        (events[0], None, 250),
        (events[1], BOB, 250),
        (events[2], CAROL, 550),
        (events[3], PELE, 251),
        (Data(), None, 354),
    ]
    result = conn.transaction
    assert result is not None and not result.complete
    assert [r.recipient for r in result.accepted] == [BOB, PELE]
    assert [r.recipient for r in result.refused] == [CAROL]
    assert result.refused[0].reply == Reply(550, "no such user", "5.1.1")
    assert conn.send(MessageData(b"Subject: hi\r\n\r\n.dot\r\n")) == (
        b"Subject: hi\r\n\r\n..dot\r\n"
    )
    assert conn.send(EndOfMessage()) == b".\r\n"
    feed(conn, b"250 2.0.0 queued as 1234\r\n")
    assert conn.answered == EndOfMessage()
    result = conn.transaction
    assert result is not None and result.complete
    assert [r.recipient for r in result.delivered] == [BOB, PELE]
    assert result.end_replies == (Reply(250, "queued as 1234", "2.0.0"),)
    assert state(conn) is State.READY


def test_refused_mail_in_a_pipelined_group() -> None:
    conn = session()
    for event in (Mail(ALICE), Rcpt(BOB), Data()):
        conn.send(event)
    replies = feed(conn, b"550 5.7.1 go away\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n")
    assert codes(replies) == [550, 503, 503]
    assert state(conn) is State.READY
    result = conn.transaction
    assert result is not None and result.complete and not result.accepted
    assert conn.send(Mail(ALICE)) == b"MAIL FROM:<alice@abc.example>\r\n"


def test_data_accepted_after_every_recipient_was_refused() -> None:
    # RFC 2920 §3.1: the client must then send a lone dot.
    conn = session()
    for event in (Mail(ALICE), Rcpt(BOB), Data()):
        conn.send(event)
    feed(conn, b"250 ok\r\n550 no\r\n354 go\r\n")
    assert state(conn) is State.DATA
    assert conn.send(EndOfMessage()) == b".\r\n"
    feed(conn, b"554 5.5.1 no valid recipients\r\n")
    result = conn.transaction
    assert result is not None and result.complete and not result.delivered
    assert state(conn) is State.READY


def test_next_transaction_may_follow_the_content_at_once() -> None:
    conn = in_data()
    wire = conn.send(EndOfMessage()) + conn.send(Mail(BOB)) + conn.send(Rcpt(ALICE))
    assert wire == b".\r\nMAIL FROM:<bob@pqr.example>\r\nRCPT TO:<alice@abc.example>\r\n"
    feed(conn, b"250 queued\r\n")
    first = conn.transaction
    assert first is not None and first.complete and first.sender == ALICE
    feed(conn, b"250 ok\r\n250 ok\r\n")
    second = conn.transaction
    assert second is not None and second.sender == BOB and not second.complete
    assert state(conn) is State.RCPT


@pytest.mark.parametrize("last", [Data(), Noop(), Vrfy("bob"), Quit(), Ehlo("client.test")])
def test_group_ending_commands(last: Event) -> None:
    conn = session()
    if not isinstance(last, (Ehlo, Vrfy, Quit, Noop)):
        conn.send(Mail(ALICE))
        conn.send(Rcpt(BOB))
    conn.send(last)
    with pytest.raises(LocalProtocolError, match="ends a pipelined group"):
        conn.send(Rset())


def test_rset_may_be_pipelined_and_ends_the_transaction() -> None:
    conn = session()
    wire = b"".join(conn.send(e) for e in (Mail(ALICE), Rcpt(BOB), Rset(), Mail(CAROL)))
    assert wire.endswith(b"RSET\r\nMAIL FROM:<carol@pqr.example>\r\n")
    feed(conn, b"250 ok\r\n450 try later\r\n")
    first = conn.transaction
    assert first is not None and first.sender == ALICE and not first.complete
    feed(conn, b"250 reset\r\n")
    first = conn.transaction
    assert first is not None and first.sender == ALICE and first.complete
    feed(conn, b"250 ok\r\n")
    assert state(conn) is State.MAIL
    second = conn.transaction
    assert second is not None and second.sender == CAROL


def test_the_transaction_number_advances_as_a_refused_mail_is_answered() -> None:
    conn = session()
    assert conn.transaction_number == 0 and conn.transaction is None
    conn.send(Mail(ALICE))
    assert conn.transaction_number == 0  # sent, not answered
    feed(conn, b"550 5.7.1 go away\r\n")
    assert conn.transaction_number == 1
    assert conn.transaction is not None and conn.transaction.mail_reply is not None
    assert conn.transaction.mail_reply.code == 550


def test_rset_leaves_the_transaction_number_as_it_is() -> None:
    conn = session()
    conn.send(Mail(ALICE))
    feed(conn, b"550 5.7.1 go away\r\n")
    conn.send(Rset())
    feed(conn, b"250 2.0.0 reset\r\n")
    assert conn.transaction_number == 1


def test_the_transaction_number_advances_once_when_a_pipelined_mail_is_answered() -> None:
    conn = session()
    for event in (Mail(ALICE), Rcpt(BOB), Data()):
        conn.send(event)
    assert conn.transaction_number == 0
    feed(conn, b"250 ok\r\n")
    assert conn.transaction_number == 1
    feed(conn, b"250 ok\r\n354 go\r\n")
    conn.send(MessageData(b"body\r\n"))
    conn.send(EndOfMessage())
    feed(conn, b"250 queued\r\n")
    assert conn.transaction is not None and conn.transaction.complete
    assert conn.transaction_number == 1


# -- what the machine refuses to send ------------------------------------------


def _ready() -> ClientConnection:
    return session()


def _plain() -> ClientConnection:
    return session(EHLO_PIPELINING)


def _helo() -> ClientConnection:
    conn = ClientConnection("client.test")
    feed(conn, b"220 mx.test\r\n")
    conn.send(Helo("client.test"))
    feed(conn, b"250 mx.test\r\n")
    return conn


def _lmtp() -> ClientConnection:
    return session(EHLO_FULL, lmtp=True)


def _after_ascii_mail() -> ClientConnection:
    conn = session()
    conn.send(Mail(ALICE))
    feed(conn, b"250 ok\r\n")
    return conn


def _before_354() -> ClientConnection:
    conn = session()
    for event in (Mail(ALICE), Rcpt(BOB), Data()):
        conn.send(event)
    return conn


def _in_bdat() -> ClientConnection:
    conn = session()
    for event in (Mail(ALICE), Rcpt(BOB), Bdat(5)):
        conn.send(event)
    return conn


def _greeted(*, lmtp: bool = False) -> ClientConnection:
    conn = ClientConnection("client.test", lmtp=lmtp)
    feed(conn, b"220 mx.test\r\n")
    return conn


def _binary_mail() -> ClientConnection:
    conn = session(EHLO_FULL.replace(b"250 HELP", b"250 BINARYMIME"))
    for event in (Mail(ALICE, {"BODY": "BINARYMIME"}), Rcpt(BOB)):
        conn.send(event)
    feed(conn, b"250 ok\r\n250 ok\r\n")
    return conn


EHLO_BINARY_ONLY = b"250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 BINARYMIME\r\n"
"""A server that takes 8-bit octets only as ``BODY=BINARYMIME`` (no 8BITMIME)."""


def _text_bdat_to_binary_only() -> ClientConnection:
    """BDAT in a transaction with no ``BODY`` (7BIT, RFC 6152 §3) to ``EHLO_BINARY_ONLY``."""
    conn = session(EHLO_BINARY_ONLY)
    for event in (Mail(ALICE), Rcpt(BOB), Bdat(5, last=True)):
        conn.send(event)
    return conn


REFUSALS: list[tuple[str, Callable[[], ClientConnection], Event, str]] = [
    ("utf8 sender, no SMTPUTF8 offered", _plain, Mail(PELE, {"SMTPUTF8": None}), "SMTPUTF8"),
    ("utf8 sender, no SMTPUTF8 parameter", _ready, Mail(PELE), "SMTPUTF8"),
    ("utf8 recipient, ascii MAIL", _after_ascii_mail, Rcpt(PELE), "SMTPUTF8"),
    ("size over the limit", _ready, Mail(ALICE, {"SIZE": "1001"}), "limit of 1000"),
    ("size not a number", _ready, Mail(ALICE, {"SIZE": "lots"}), "SIZE"),
    ("size not offered", _plain, Mail(ALICE, {"SIZE": "10"}), "SIZE"),
    ("8bitmime not offered", _plain, Mail(ALICE, {"BODY": "8BITMIME"}), "8BITMIME"),
    ("unknown body", _ready, Mail(ALICE, {"BODY": "9BIT"}), "BODY"),
    ("dsn not offered", _plain, Mail(ALICE, {"RET": "HDRS"}), "DSN"),
    ("parameters after HELO", _helo, Mail(ALICE, {"X-FOO": "1"}), "EHLO"),
    ("8-bit content", lambda: in_data(EHLO_PIPELINING), MessageData(b"caf\xc3\xa9"), "8BITMIME"),
    (
        "8-bit DATA content, BINARYMIME but no 8BITMIME",
        lambda: in_data(EHLO_BINARY_ONLY),
        MessageData(b"caf\xc3\xa9"),
        "8BITMIME",
    ),
    (
        "8-bit BDAT content, BINARYMIME but no BODY=BINARYMIME",
        _text_bdat_to_binary_only,
        MessageData(b"caf\xc3\xa9"),
        "8BITMIME",
    ),
    ("content before DATA", _ready, MessageData(b"x"), "354"),
    ("content before 354", _before_354, MessageData(b"x"), "354"),
    ("end before 354", _before_354, EndOfMessage(), "354"),
    ("BDAT without CHUNKING", lambda: _no_chunking(), Bdat(3, last=True), "CHUNKING"),
    ("STARTTLS not offered", _plain, StartTls(), "STARTTLS"),
    ("AUTH not offered", _plain, Auth("PLAIN"), "AUTH"),
    ("AUTH mechanism not offered", _ready, Auth("CRAM-MD5"), "CRAM-MD5"),
    ("AUTH response without 334", _ready, AuthResponse(b"x"), "334"),
    ("LHLO in SMTP", _greeted, Lhlo("client.test"), "EHLO"),
    ("EHLO in LMTP", lambda: _greeted(lmtp=True), Ehlo("client.test"), "LHLO"),
    ("non-ASCII EHLO", _greeted, Ehlo("exämple.test"), "ASCII"),
    ("RCPT before MAIL", _ready, Rcpt(BOB), "READY"),
    ("DATA before RCPT", _after_ascii_mail, Data(), "MAIL"),
    ("MAIL before EHLO", _greeted, Mail(ALICE), "HELLO"),
    ("nested MAIL, pipelined", lambda: _pipelined(Mail(ALICE)), Mail(BOB), "MAIL state"),
    ("second EHLO before the first reply", lambda: _pipelined(Noop()), Ehlo("c.test"), "NOOP"),
    ("after DATA", _before_354, Rset(), "DATA ends"),
    ("command while BDAT content is due", _in_bdat, Rset(), "BDAT content"),
    ("more BDAT content than announced", _in_bdat, MessageData(b"123456"), "only 5"),
    ("DATA with BINARYMIME", _binary_mail, Data(), "BDAT"),
    ("UTF-8 VRFY without SMTPUTF8", _plain, Vrfy("pelé"), "SMTPUTF8"),
    ("a reply", _ready, Reply(250, "ok"), "not Reply"),
]


def _pipelined(*events: Event) -> ClientConnection:
    conn = session()
    for event in events:
        conn.send(event)
    return conn


def _no_chunking() -> ClientConnection:
    conn = session(EHLO_PIPELINING)
    conn.send(Mail(ALICE))
    conn.send(Rcpt(BOB))
    return conn


@pytest.mark.parametrize(
    ("make", "event", "match"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_leave_the_machine_unchanged(
    make: Callable[[], ClientConnection], event: Event, match: str
) -> None:
    conn = make()
    before = (conn.state, conn.pending, conn.transaction, conn.extensions)
    with pytest.raises(LocalProtocolError, match=match):
        conn.send(event)
    assert (conn.state, conn.pending, conn.transaction, conn.extensions) == before


@pytest.mark.parametrize(
    "build",
    [
        lambda: Vrfy("bob\r\nRCPT TO:<eve@evil.example>"),
        lambda: Noop("x\nQUIT"),
        lambda: Ehlo("client.test\r\nMAIL FROM:<a@b>"),
        lambda: Mail(ALICE, {"X-FOO": "1\r\nRSET"}),
        lambda: Rcpt(Mailbox("bob\r\nDATA", "pqr.example")),
        lambda: Rcpt(Mailbox("bob", "pqr.example\x00")),
        lambda: AuthResponse("text"),  # type: ignore[arg-type]  # the point: not bytes
        # A lone surrogate: UTF-8 cannot encode it, so send() would fail half-way.
        lambda: Vrfy("bob\udcff"),
        lambda: Noop("x\udcff"),
        lambda: Ehlo("client\udcff.test"),
    ],
)
def test_command_injection_cannot_be_built(build: Callable[[], Event]) -> None:
    # The smtplib CRLF-injection class: the event itself refuses to exist.
    with pytest.raises(LocalProtocolError):
        build()


def test_8bit_bdat_content_goes_in_a_binarymime_transaction_without_8bitmime() -> None:
    """RFC 3030 §3: ``BODY=BINARYMIME`` carries any octets, 8BITMIME offered or not."""
    conn = session(EHLO_BINARY_ONLY)
    for event in (Mail(ALICE, {"BODY": "BINARYMIME"}), Rcpt(BOB), Bdat(5, last=True)):
        conn.send(event)
    assert conn.send(MessageData(b"caf\xc3\xa9")) == b"caf\xc3\xa9"


def test_refused_content_does_not_disturb_the_encoder() -> None:
    conn = in_data(EHLO_PIPELINING)
    assert conn.send(MessageData(b"a\r")) == b"a"
    with pytest.raises(LocalProtocolError):
        conn.send(MessageData(b"\xff"))
    assert conn.send(MessageData(b"\n.b")) == b"\r\n..b"


# -- content ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "wire"),
    [
        ([b""], b".\r\n"),
        ([b"a\r\n"], b"a\r\n.\r\n"),
        ([b"a"], b"a\r\n.\r\n"),
        ([b".a\r\n.\r\n"], b"..a\r\n..\r\n.\r\n"),
        ([b"a\r", b"\n", b".", b"b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\n.b\rc"], b"a\r\n..b\r\nc\r\n.\r\n"),
        ([b"a\r"], b"a\r\n.\r\n"),
        ([b"a\r", b"\r\n.\n"], b"a\r\n\r\n..\r\n.\r\n"),
        ([b"line\r\n", b".", b"\r\n"], b"line\r\n..\r\n.\r\n"),
    ],
)
def test_content_is_dot_stuffed_and_normalised(chunks: list[bytes], wire: bytes) -> None:
    conn = in_data()
    out = b"".join(conn.send(MessageData(chunk)) for chunk in chunks)
    assert out + conn.send(EndOfMessage()) == wire


def test_content_without_normalisation() -> None:
    conn = ClientConnection("client.test", normalize_line_endings=False)
    feed(conn, b"220 mx\r\n")
    for event, answer in (
        (Ehlo("c.test"), b"250 mx\r\n"),
        (Mail(ALICE), b"250 ok\r\n"),
        (Rcpt(BOB), b"250 ok\r\n"),
        (Data(), b"354 go\r\n"),
    ):
        conn.send(event)
        feed(conn, answer)
    out = conn.send(MessageData(b"a\n.b\r\n.c")) + conn.send(EndOfMessage())
    assert out == b"a\n.b\r\n..c\r\n.\r\n"


# -- replies that break the protocol ------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"hello\r\n", "malformed"),
        (b"199 odd\r\n", "malformed"),
        (b"2500 ok\r\n", "malformed"),
        (b"250-one\r\n251 two\r\n", "changed"),
        (b"250-one\n251 two\n", "changed"),
        (b"250 " + b"x" * 5000, "longer than 4096"),
        (b"250 " + b"x" * 5000 + b"\r\n", "longer than 4096"),
        (b"250 " + b"x" * 5000 + b"\n", "longer than 4096"),
        (b"250-x\r\n" * 101, "too many lines"),
        (b"250-x\n" * 101, "too many lines"),
        (b"25 ok\n", "malformed"),
        (b"354 go on\r\n", "not a reply to NOOP"),
        (b"221 bye\r\n", "not a reply to NOOP"),
    ],
)
def test_broken_replies_are_fatal_and_sticky(data: bytes, match: str) -> None:
    conn = session()
    conn.send(Noop())
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=match):
        conn.next_event()
    assert state(conn) is State.ERROR
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send(Quit())


def test_reply_lines_ended_by_a_bare_lf_are_read_as_smtplib_reads_them() -> None:
    """A server whose reply lines end in LF alone (or mix the two) is read, the CR
    before an LF dropped where there is one: smtplib and Postfix's client take such
    replies, and refusing them left a relay's mail waiting until it expired."""
    conn = ClientConnection("client.test")
    [greeting] = feed(conn, b"220-mx.test ESMTP\n220 ready\n")
    assert greeting.lines == ("mx.test ESMTP", "ready")
    conn.send(Ehlo("client.test"))
    ehlo = b"250-mx.test\n250-SIZE 1000\r\n250-PIPELINING\n250 ENHANCEDSTATUSCODES\n"
    [hello] = feed(conn, ehlo)
    assert hello.lines == ("mx.test", "SIZE 1000", "PIPELINING", "ENHANCEDSTATUSCODES")
    assert conn.extensions.pipelining and conn.extensions.enhanced_status_codes
    conn.send(Mail(ALICE))
    conn.send(Rcpt(BOB))
    replies = feed(conn, b"250 2.1.0 ok\n550\n")
    assert replies == [Reply(250, "ok", "2.1.0"), Reply(550, "")]
    assert state(conn) is State.MAIL


@given(sst.replies())
def test_a_reply_written_with_bare_lf_reads_as_with_crlf(reply: Reply) -> None:
    """The same reply, its lines ended by LF or by CRLF, is read the same."""

    def read(wire: bytes) -> tuple[object, ...]:
        conn = session(EHLO_PIPELINING if reply.status is None else EHLO_FULL)
        conn.send(Noop())
        conn.receive_data(wire)
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:  # a code NOOP cannot get: refused alike
            return ("error", str(exc))
        assert isinstance(event, Reply)
        return (event.code, event.status, event.lines, event.text)

    crlf = reply.to_bytes(reply.status)
    assert read(crlf.replace(b"\r\n", b"\n")) == read(crlf)


@pytest.mark.parametrize(
    ("events", "answers", "match"),
    [
        ([Mail(ALICE), Rcpt(BOB), Data()], b"250 ok\r\n250 ok\r\n250 ok\r\n", "DATA"),
        ([Mail(ALICE)], b"354 go\r\n", "MAIL"),
        ([Ehlo("c.test")], b"220 hi\r\n", "EHLO"),
        ([Rset()], b"251 hmm\r\n", "RSET"),
    ],
)
def test_reply_code_must_fit_the_command(events: list[Event], answers: bytes, match: str) -> None:
    conn = session()
    for event in events:
        conn.send(event)
    conn.receive_data(answers)
    with pytest.raises(RemoteProtocolError, match=f"not a reply to {match}"):
        drain(conn)
    assert state(conn) is State.ERROR


def test_line_limits_are_options() -> None:
    conn = session(EHLO_PIPELINING, max_reply_line=64, max_reply_lines=3)
    conn.send(Noop())
    conn.receive_data(b"250-a\r\n250-b\r\n250-c\r\n250-d\r\n")
    with pytest.raises(RemoteProtocolError, match="too many lines"):
        drain(conn)
    conn = session(max_reply_line=64)
    conn.send(Noop())
    conn.receive_data(b"250 " + b"x" * 60)
    with pytest.raises(RemoteProtocolError, match="longer than 64"):
        drain(conn)


@given(cuts=st.lists(st.integers(min_value=1, max_value=120), max_size=6), ended=st.booleans())
def test_a_reply_line_over_the_limit_is_an_error_however_the_bytes_split(
    cuts: list[int], ended: bool
) -> None:
    """Every line of a multi-line reply, not only its first, is held to the limit as
    soon as it passes it: a read of the whole reply at once and a read a few octets
    at a time end the same."""
    wire = b"250-a\r\n250 " + b"x" * 100 + (b"\r\n" if ended else b"")
    conn = session(max_reply_line=64)
    conn.send(Noop())
    with pytest.raises(RemoteProtocolError, match="longer than 64"):
        start = 0
        for cut in [*sorted(set(cuts)), len(wire)]:
            if cut > start:  # no empty read: that would be the server's close
                conn.receive_data(wire[start:cut])
                start = cut
                drain(conn)
    assert state(conn) is State.ERROR


def test_unsolicited_reply_is_an_error() -> None:
    conn = session()
    conn.receive_data(b"250 surprise\r\n")
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        conn.next_event()
    # Caught from the first bytes, before the line ends.
    conn = session()
    conn.receive_data(b"25")
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        conn.next_event()


def test_unsolicited_reply_during_content_is_an_error() -> None:
    conn = in_data()
    conn.send(MessageData(b"hello\r\n"))
    conn.receive_data(b"550 stop\r\n")
    with pytest.raises(RemoteProtocolError, match="before the end of the message"):
        conn.next_event()


@pytest.mark.parametrize("make", [_ready, in_data])
def test_unsolicited_421_closes(make: Callable[[], ClientConnection]) -> None:
    conn = make()
    conn.receive_data(b"42")
    assert conn.next_event() is NEED_DATA
    [reply] = feed(conn, b"1 4.4.2 idle too long\r\n")
    assert reply.code == 421 and conn.answered is None
    assert state(conn) is State.CLOSED
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_421_answering_a_command_leaves_the_rest_unanswered() -> None:
    conn = session()
    for event in (Mail(ALICE), Rcpt(BOB), Data()):
        conn.send(event)
    replies = feed(conn, b"250 ok\r\n421 4.3.2 shutting down\r\n")
    assert codes(replies) == [250, 421]
    assert conn.answered == Rcpt(BOB)
    assert state(conn) is State.CLOSED
    assert conn.pending == (Data(),)
    result = conn.transaction
    assert result is not None and result.complete and not result.accepted
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_server_closing_ends_the_session() -> None:
    conn = session()
    conn.send(Noop())
    conn.receive_data(b"250 o")
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert state(conn) is State.CLOSED
    assert conn.pending == (Noop(),)
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"more")


def test_quit() -> None:
    conn = session()
    assert conn.send(Quit()) == b"QUIT\r\n"
    feed(conn, b"221 2.0.0 bye\r\n")
    assert state(conn) is State.CLOSED
    assert isinstance(conn.next_event(), ConnectionClosed)
    conn.receive_data(b"ignored")
    assert isinstance(conn.next_event(), ConnectionClosed)


def _greeting_awaited() -> ClientConnection:
    return ClientConnection("client.test", max_reply_line=64, max_reply_lines=4)


def _quit_sent() -> ClientConnection:
    conn = session(EHLO_BARE, max_reply_line=64, max_reply_lines=4)
    conn.send(Quit())
    return conn


def _noop_sent() -> ClientConnection:
    conn = session(EHLO_BARE, max_reply_line=64, max_reply_lines=4)
    conn.send(Noop())
    return conn


@pytest.mark.parametrize(
    ("make", "end"),
    [
        (_quit_sent, b"221 2.0.0 bye\r\n"),
        (_noop_sent, b"421 4.3.2 shutting down\r\n"),
        (_greeting_awaited, b"421 mx.test busy\r\n"),
        (lambda: session(EHLO_BARE, max_reply_line=64, max_reply_lines=4), b"421 4.4.2 idle\r\n"),
    ],
    ids=["221-to-quit", "421-to-a-command", "421-greeting", "unsolicited-421"],
)
@pytest.mark.parametrize(
    "behind", [b"X" * 10_000, b"250-a\r\n250-b\r\n250-c\r\n"], ids=["endless-line", "lines"]
)
def test_what_comes_behind_the_end_of_the_session_is_dropped(
    make: Callable[[], ClientConnection], end: bytes, behind: bytes
) -> None:
    """Whatever ends the session (221 to QUIT, RFC 5321 §4.1.1.10; a 421, §3.8), what
    came in the same read behind it will never be read as a reply: a CLOSED machine
    holds nothing."""
    conn = make()
    conn.receive_data(end + behind)
    reply = conn.next_event()
    assert isinstance(reply, Reply) and reply.code == int(end[:3])
    assert state(conn) is State.CLOSED
    assert conn.buffered == 0
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_a_transaction_is_complete_once_the_machine_is_in_error() -> None:
    """No reply comes in ERROR (a write that failed, a reply that cannot be read), so
    the transaction is complete, as after a close."""
    conn = in_data()
    conn.send(MessageData(b"Subject: x\r\n\r\nhi\r\n"))
    conn.send(EndOfMessage())
    conn.send_failed()
    transaction = conn.transaction
    assert transaction is not None and transaction.complete and not transaction.delivered
    garbled = in_data()
    garbled.send(MessageData(b"hi\r\n"))
    garbled.send(EndOfMessage())
    with pytest.raises(RemoteProtocolError):
        feed(garbled, b"2x0 what\r\n")
    transaction = garbled.transaction
    assert transaction is not None and transaction.complete


@pytest.mark.parametrize(
    "command", [Vrfy("a" * 600), Noop("a" * 600), Ehlo("x" * 256), Helo("x" * 256)]
)
def test_a_command_a_server_need_not_take_is_not_sent(command: Event) -> None:
    """A command line over 512 octets (RFC 5321 §4.5.3.1.4) or a hello domain over 255
    (§4.5.3.1.2) is refused with the machine unchanged; they went out."""
    conn = session()
    with pytest.raises(LocalProtocolError, match="RFC 5321"):
        conn.send(command)
    assert state(conn) is State.READY and conn.send(Noop()) == b"NOOP\r\n"


def test_mail_and_rcpt_lines_may_take_what_the_offered_parameters_add() -> None:
    """MAIL and RCPT may pass 512 octets by what the offered extensions' parameters add
    (ORCPT's 500 under DSN), and no more."""
    conn = session()
    conn.send(Mail(ALICE))
    long_orcpt = "rfc822;" + "+2B" * 64 + "@" + ".".join(["c" * 63] * 4)  # xtext
    line = conn.send(Rcpt(BOB, {"NOTIFY": "SUCCESS,FAILURE,DELAY", "ORCPT": long_orcpt}))
    assert 512 < len(line) < 512 + 500
    bare = session(EHLO_BARE)
    bare.send(Vrfy("a" * 505))  # 512 octets with its CRLF: the most a server must take
    feed(bare, b"252 cannot verify\r\n")
    with pytest.raises(LocalProtocolError, match="RFC 5321"):
        bare.send(Vrfy("a" * 506))


def test_send_failed_is_an_error() -> None:
    conn = session()
    conn.send(Noop())
    conn.send_failed()
    assert state(conn) is State.ERROR
    with pytest.raises(LocalProtocolError):
        conn.send(Noop())


def _cut_in_data(
    *, ehlo: bytes = EHLO_FULL, max_reply_line: int = 4096, max_reply_lines: int = 100
) -> ClientConnection:
    """A client whose write of the content and its end failed."""
    conn = session(ehlo, max_reply_line=max_reply_line, max_reply_lines=max_reply_lines)
    for event in (Mail(ALICE), Rcpt(BOB), Data()):
        conn.send(event)
        feed(conn, b"354 go ahead\r\n" if isinstance(event, Data) else b"250 ok\r\n")
    conn.send(MessageData(b"Subject: x\r\n\r\nhi\r\n"))
    conn.send(EndOfMessage())
    conn.send_failed()
    return conn


def _nothing_recorded(conn: ClientConnection) -> None:
    transaction = conn.transaction
    assert transaction is not None and not transaction.delivered
    assert [r.delivery for r in transaction.recipients] == [None]
    assert state(conn) is State.ERROR and not isinstance(conn.answered, EndOfMessage)


def test_a_421_left_behind_is_read_across_feeds() -> None:
    """What the server sent before it closed is read after ``send_failed()``, in
    pieces as it arrives, and answers nothing (RFC 5321 §3.8)."""
    conn = _cut_in_data()
    assert conn.more_left_behind
    assert conn.replies_left_behind() == []
    assert conn.replies_left_behind(b"421 4.3.2 shutting") == []
    [reply] = conn.replies_left_behind(b" down\r\n")
    assert reply == Reply(421, "shutting down", EnhancedStatus(4, 3, 2))
    assert conn.more_left_behind and conn.buffered == 0
    _nothing_recorded(conn)


def test_a_multi_line_reply_begun_before_the_failure_is_read_whole() -> None:
    """The lines of a reply the machine already held when the send failed are the
    reply's first lines, not lost with a parser of their own."""
    conn = session()
    conn.send(Noop())
    assert feed(conn, b"421-4.3.2 first\r\n421-4.3.2 sec") == []
    conn.send_failed()
    [reply] = conn.replies_left_behind(b"ond\r\n421 4.3.2 last\r\n")
    assert reply == Reply(421, ("first", "second", "last"), EnhancedStatus(4, 3, 2))


@pytest.mark.parametrize(
    ("data", "limits"),
    [
        (b"250 ok\r\nnot a reply\r\n421 bye\r\n", {}),
        (b"250 ok\r\n421-a\r\n250 b\r\n421 bye\r\n", {}),
        (b"250 ok\r\n421 " + b"x" * 60, {"max_reply_line": 64}),
        (b"250 ok\r\n421 " + b"x" * 60 + b"\r\n421 bye\r\n", {"max_reply_line": 64}),
        (b"250 ok\r\n421-a\r\n421-b\r\n421 bye\r\n", {"max_reply_lines": 2}),
    ],
    ids=["garbage", "code-changes", "long-unended", "long-line", "too-many-lines"],
)
def test_replies_left_behind_stop_quietly_at_what_is_not_a_reply(
    data: bytes, limits: dict[str, int]
) -> None:
    """A line that is not part of a well-formed reply ends the reading, quietly and
    for good: the replies before it are returned, nothing after it, nothing is held."""
    conn = _cut_in_data(ehlo=EHLO_PIPELINING, **limits)
    assert codes(conn.replies_left_behind(data)) == [250]
    assert not conn.more_left_behind and conn.buffered == 0
    assert conn.replies_left_behind(b"421 bye\r\n") == []
    _nothing_recorded(conn)


def test_replies_left_behind_end_at_the_close_the_machine_was_given() -> None:
    conn = session()
    conn.send(Noop())
    conn.receive_data(b"421 bye\r\n")
    conn.receive_data(b"")
    conn.send_failed()
    assert codes(conn.replies_left_behind()) == [421]
    assert not conn.more_left_behind and conn.replies_left_behind(b"250 ok\r\n") == []


def test_replies_left_behind_only_after_send_failed() -> None:
    """Before ``send_failed()`` the bytes are the session's: ``next_event()`` reads them."""
    conn = session()
    conn.send(Noop())
    assert not conn.more_left_behind
    with pytest.raises(LocalProtocolError, match="send_failed"):
        conn.replies_left_behind(b"250 ok\r\n")
    assert codes(feed(conn, b"250 ok\r\n")) == [250] and state(conn) is State.READY
    garbled = session()
    garbled.send(Noop())
    with pytest.raises(RemoteProtocolError):
        feed(garbled, b"2x0 what\r\n")
    garbled.send_failed()  # in ERROR already: what is held is no reply
    assert garbled.replies_left_behind(b"421 bye\r\n") == []


# -- STARTTLS -----------------------------------------------------------------


def test_starttls_discards_injected_replies() -> None:
    conn = session()
    assert conn.send(StartTls()) == b"STARTTLS\r\n"
    # A man in the middle appends a reply in clear behind the 220.
    replies = feed(conn, b"220 2.0.0 go ahead\r\n250 2.0.0 injected\r\n")
    assert codes(replies) == [220]
    assert state(conn) is State.TLS_PENDING
    assert conn.next_event() is PAUSED
    conn.receive_data(b"250 also injected\r\n")
    with pytest.raises(LocalProtocolError, match="tls_started"):
        conn.send(Ehlo("client.test"))
    conn.tls_started()
    assert conn.tls and state(conn) is State.HELLO
    assert len(conn.extensions) == 0 and not conn.extended
    assert conn.next_event() is PAUSED
    conn.send(Ehlo("client.test"))
    feed(conn, EHLO_FULL)
    assert state(conn) is State.READY
    with pytest.raises(LocalProtocolError, match="already"):
        conn.send(StartTls())


def test_a_server_that_leaves_before_the_handshake_closes_the_session() -> None:
    """End of file while the TLS handshake is awaited: ConnectionClosed, as anywhere
    else, not PAUSED for ever."""
    conn = session()
    conn.send(StartTls())
    feed(conn, b"220 2.0.0 go ahead\r\n")
    assert state(conn) is State.TLS_PENDING
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert state(conn) is State.CLOSED


def test_starttls_refused_keeps_the_session() -> None:
    conn = session()
    conn.send(StartTls())
    feed(conn, b"454 4.7.0 TLS not available\r\n")
    assert state(conn) is State.READY
    with pytest.raises(LocalProtocolError):
        conn.tls_started()


def test_a_session_under_tls_from_the_connect_refuses_starttls() -> None:
    """Implicit TLS (RFC 8314 §3): TLS from the first byte, so a STARTTLS the server
    offers anyway (a second TLS inside the first) is not sent."""
    conn = ClientConnection("client.test", tls=True)
    assert conn.tls
    feed(conn, b"220 mx.test ESMTP\r\n")
    conn.send(Ehlo("client.test"))
    feed(conn, EHLO_FULL)  # which offers STARTTLS
    assert conn.extensions.starttls and state(conn) is State.READY
    with pytest.raises(LocalProtocolError, match="already"):
        conn.send(StartTls())
    assert conn.tls and state(conn) is State.READY


# -- AUTH ---------------------------------------------------------------------


def test_auth_exchange() -> None:
    conn = session()
    assert conn.send(Auth("LOGIN")) == b"AUTH LOGIN\r\n"
    feed(conn, b"334 VXNlcm5hbWU6\r\n")
    assert state(conn) is State.AUTH
    assert conn.send(AuthResponse(b"alice")) == b"YWxpY2U=\r\n"
    feed(conn, b"334 UGFzc3dvcmQ6\r\n")
    conn.send(AuthResponse(b"secret"))
    feed(conn, b"235 2.7.0 ok\r\n")
    assert state(conn) is State.READY
    assert conn.answered == AuthResponse(b"secret")


def test_auth_failure_returns_to_ready() -> None:
    conn = session()
    conn.send(Auth("PLAIN", b"\0alice\0wrong"))
    feed(conn, b"535 5.7.8 bad credentials\r\n")
    assert state(conn) is State.READY
    conn.send(Auth("PLAIN"))
    feed(conn, b"334 \r\n")
    conn.send(AuthResponse(cancel=True))
    feed(conn, b"501 5.7.0 cancelled\r\n")
    assert state(conn) is State.READY


# -- LMTP ---------------------------------------------------------------------


def test_lmtp_one_reply_per_accepted_recipient() -> None:
    conn = session(lmtp=True)
    assert not conn.pending
    for event in (Mail(ALICE), Rcpt(BOB), Rcpt(parse_mailbox("x@pqr.example")), Rcpt(CAROL)):
        conn.send(event)
    feed(conn, b"250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n")
    conn.send(Data())
    feed(conn, b"354 go\r\n")
    conn.send(MessageData(b"hi\r\n"))
    conn.send(EndOfMessage())
    [first] = feed(conn, b"250 2.0.0 bob ok\r\n")
    assert conn.answered == EndOfMessage() and conn.answered_recipient == BOB
    assert state(conn) is State.DATA and conn.pending == (EndOfMessage(),)
    [second] = feed(conn, b"452 4.2.2 carol over quota\r\n")
    assert conn.answered_recipient == CAROL
    assert state(conn) is State.READY and not conn.pending
    result = conn.transaction
    assert result is not None and result.complete
    assert [r.recipient for r in result.delivered] == [BOB]
    assert [(r.recipient, r.delivery) for r in result.accepted] == [(BOB, first), (CAROL, second)]
    assert result.end_replies == (first, second)


def test_lmtp_a_recipient_refused_after_the_content_is_refused() -> None:
    """RFC 2033 §4.2: a 4xx or 5xx after the content refuses the message for that
    recipient, accepted at RCPT or not: it is in ``refused``, so that a caller that
    retries the refused ones does not lose it."""
    conn = session(lmtp=True)
    dave = parse_mailbox("dave@pqr.example")
    for event in (Mail(ALICE), Rcpt(BOB), Rcpt(CAROL), Rcpt(dave), Data()):
        conn.send(event)
    feed(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
    conn.send(EndOfMessage())
    feed(conn, b"250 2.0.0 bob ok\r\n451 4.2.2 carol over quota\r\n")
    result = conn.transaction
    assert result is not None and result.complete
    bob, carol, refused = result.recipients
    assert result.delivered == (bob,) and result.refused == (carol, refused)
    assert carol.accepted and carol.refused and not carol.delivered


def test_lmtp_354_without_recipients_is_an_error() -> None:
    conn = session(lmtp=True)
    for event in (Mail(ALICE), Rcpt(BOB), Data()):
        conn.send(event)
    conn.receive_data(b"250 ok\r\n550 no\r\n354 go\r\n")
    with pytest.raises(RemoteProtocolError, match="RFC 2033"):
        drain(conn)


def test_lmtp_421_among_the_final_replies() -> None:
    conn = session(lmtp=True)
    for event in (Mail(ALICE), Rcpt(BOB), Rcpt(CAROL), Data()):
        conn.send(event)
    feed(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    conn.send(EndOfMessage())
    assert codes(feed(conn, b"250 ok\r\n421 4.3.0 bye\r\n")) == [250, 421]
    assert state(conn) is State.CLOSED


# -- BDAT ---------------------------------------------------------------------


def test_bdat_chunks() -> None:
    conn = session()
    wire = b"".join(conn.send(e) for e in (Mail(ALICE), Rcpt(BOB), Bdat(5)))
    assert wire.endswith(b"BDAT 5\r\n")
    # Content is sent as it is: no dot-stuffing, no line-ending changes.
    assert conn.send(MessageData(b".\n")) == b".\n"
    assert conn.send(MessageData(b"abc")) == b"abc"
    assert conn.send(Bdat(2, last=True)) == b"BDAT 2 LAST\r\n"
    conn.send(MessageData(b"\r\n"))
    feed(conn, b"250 ok\r\n250 ok\r\n250 2.0.0 chunk\r\n")
    assert state(conn) is State.BDAT
    [final] = feed(conn, b"250 2.0.0 message queued\r\n")
    assert state(conn) is State.READY
    result = conn.transaction
    assert result is not None and result.complete
    assert result.data_reply == Reply(250, "chunk", "2.0.0")
    assert result.end_replies == (final,) and result.delivered[0].delivery == final


@pytest.mark.parametrize(
    ("lmtp", "calls"),
    [
        (False, []),
        (True, ["_answer_lmtp_end", "accepted_indexes", "replies_after_content"]),
    ],
    ids=["smtp", "lmtp"],
)
def test_the_reply_to_a_bdat_last_costs_the_calls_it_needs(lmtp: bool, calls: list[str]) -> None:
    """BDAT is the everyday path against any server offering CHUNKING: the reply to
    ``BDAT ... LAST`` of content that reached its end is handled by ``_answer_end``
    itself in SMTP (one reply judges the message, RFC 5321 §4.1.1.4), and in LMTP with
    the accepted recipients read once and the replies counted once (RFC 2033 §4.2).
    The calls after the reply's parsing are counted, comprehensions' own frames aside."""
    conn = session(lmtp=lmtp)
    body = b"Subject: x\r\n\r\nhello\r\n"
    for event in (Mail(ALICE), Rcpt(BOB), Bdat(len(body), last=True), MessageData(body)):
        conn.send(event)
    assert codes(feed(conn, b"250 ok\r\n250 ok\r\n")) == [250, 250]
    conn.receive_data(b"250 2.0.0 queued\r\n")
    with python_calls() as counted:
        conn.next_event()
    answered = counted[counted.index("_answer_end") + 1 :]
    assert [name for name in answered if not name.startswith("<")] == calls
    result = conn.transaction
    assert result is not None and [r.delivery for r in result.delivered] == [
        Reply(250, "queued", "2.0.0")
    ]


def test_bdat_refused_ends_the_transaction() -> None:
    conn = session()
    for event in (Mail(ALICE), Rcpt(BOB), Bdat(0)):
        conn.send(event)
    feed(conn, b"250 ok\r\n250 ok\r\n552 5.3.4 too big\r\n")
    assert state(conn) is State.READY
    result = conn.transaction
    assert result is not None and result.complete and not result.delivered
    (bob,) = result.recipients
    assert bob.delivery == Reply(552, "too big", "5.3.4") and result.refused == (bob,)


@pytest.mark.parametrize("lmtp", [False, True])
def test_a_refused_data_is_the_delivery_reply_of_each_accepted_recipient(lmtp: bool) -> None:
    """RFC 5321 §4.2.1: no content follows a refused DATA, so that refusal decides for
    each accepted recipient; every recipient is then delivered or refused."""
    conn = session(lmtp=lmtp)
    for event in (Mail(ALICE), Rcpt(BOB), Rcpt(CAROL), Data()):
        conn.send(event)
    feed(conn, b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n451 4.3.0 not now\r\n")
    result = conn.transaction
    assert result is not None and result.complete and not result.delivered
    bob, carol = result.recipients
    assert bob.delivery == Reply(451, "not now", "4.3.0") and carol.delivery is None
    assert result.refused == (bob, carol)


# -- properties ---------------------------------------------------------------

SCRIPT: list[tuple[list[Event], bytes]] = [
    ([], b"220-mx.test ESMTP\r\n220 welcome\r\n"),
    ([Ehlo("client.test")], EHLO_FULL),
    (
        [Mail(ALICE), Rcpt(BOB), Rcpt(CAROL), Data()],
        b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no\r\n354 go\r\n",
    ),
    ([MessageData(b"hi\r\n"), EndOfMessage()], b"250 2.0.0 queued\r\n"),
    ([Quit()], b"221 2.0.0 bye\r\n"),
]


def _play(cuts: list[int]) -> list[tuple[Reply, Event | None, Mailbox | None]]:
    """Run a fixed session, each answer of the server cut at ``cuts``."""
    conn = ClientConnection("client.test")
    seen = []
    for commands, answer in SCRIPT:
        for command in commands:
            conn.send(command)
        for piece in _split(answer, cuts):
            conn.receive_data(piece)
            while isinstance(event := conn.next_event(), Reply):
                seen.append((event, conn.answered, conn.answered_recipient))
            assert event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed)
    assert state(conn) is State.CLOSED
    return seen


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % len(data) for cut in cuts} | {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


@given(st.lists(st.integers(min_value=0, max_value=1000), max_size=40))
def test_any_split_of_the_replies_gives_the_same_events(cuts: list[int]) -> None:
    whole = _play([])
    assert _play(cuts) == whole
    assert [reply.code for reply, _, _ in whole] == [220, 250, 250, 250, 550, 354, 250, 221]
    assert [recipient for _, _, recipient in whole if recipient] == [BOB, CAROL]


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20))
def test_arbitrary_replies_raise_only_protocol_errors(chunks: list[bytes]) -> None:
    conn = session(max_reply_line=128, max_reply_lines=12)
    conn.send(Mail(ALICE))
    conn.send(Rcpt(BOB))
    conn.send(Data())
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            drain(conn)
            # Only an unfinished line stays buffered, and it is bounded.
            assert len(conn._buffer) < 128
    except RemoteProtocolError:
        assert state(conn) is State.ERROR


_DUE_ANSWERS: Final = {
    Data: (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"),
    Quit: (b"250 ok\r\n", b"250 ok\r\n", b"221 bye\r\n"),
}
"""The answers the pipelined MAIL, RCPT and last command expect, in order."""


@given(
    last=st.sampled_from([Data(), Quit()]),
    answered=st.integers(min_value=0, max_value=3),
    lines=st.lists(sst.reply_lines(hostile=True), min_size=1, max_size=8),
    data=st.data(),
    fail_at=st.none() | st.integers(min_value=0, max_value=8),
    close=st.booleans(),
)
def test_an_ended_machine_holds_no_more_than_max_buffered(
    last: Data | Quit,
    answered: int,
    lines: list[bytes],
    data: st.DataObject,
    fail_at: int | None,
    close: bool,
) -> None:
    """Once the session has ended (ERROR or CLOSED) no reply will be read from what is
    held, so the machine holds no more than its ``max_buffered``, whatever came in one
    piece behind the end: after ``send_failed()`` only the replies left behind are
    still read, under the same bound (see ``replies_left_behind``). The first
    ``answered`` replies are the due ones, so that QUIT's 221 (RFC 5321 §4.1.1.10)
    ends the session as often as a 421 or a broken reply does."""
    conn = session(EHLO_PIPELINING, max_reply_line=64, max_reply_lines=4)
    for event in (Mail(ALICE), Rcpt(BOB), last):
        conn.send(event)
    wire = b"".join([*_DUE_ANSWERS[type(last)][:answered], *lines])
    pieces = data.draw(sst.chunkings(wire))
    for index, piece in enumerate([*pieces, b""] if close else pieces):
        if index == fail_at:
            conn.send_failed()
            conn.replies_left_behind()
        if fail_at is not None and index >= fail_at:
            conn.replies_left_behind(piece)
        else:
            conn.receive_data(piece)
            with contextlib.suppress(RemoteProtocolError):
                drain(conn)
        if state(conn) in (State.ERROR, State.CLOSED):
            assert conn.buffered <= conn.max_buffered, state(conn)


def _read_reply(line: bytes) -> Reply:
    parser = ReplyParser()
    reply = parser.read_line(line, enhanced=True)
    assert reply is not None
    return reply


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"550 5.1.1 x\x1b[31m\r\n", "x?[31m"),  # C0: ESC
        (b"550 5.1.1 x\xc2\x9b31m\r\n", "x?31m"),  # C1 in UTF-8: the 8-bit CSI
        (b"550 5.1.1 x\x9b31m\xe9\r\n", "x?31m\xe9"),  # C1 read as Latin-1
        (b"550 5.1.1 a\xe2\x80\xa8Injected: yes\r\n", "a?Injected: yes"),  # U+2028
        (b"550 5.1.1 a\xe2\x80\xaeb\r\n", "a?b"),  # U+202E, a bidi override
        (b"550 5.1.1 tab\there, caf\xc3\xa9\r\n", "tab\there, caf\xe9"),  # kept
        ("550 5.1.1 \u0dc1\u0dca\u200d\u0dbb\r\n".encode(), "\u0dc1\u0dca\u200d\u0dbb"),  # ZWJ
    ],
)
def test_a_reply_text_is_masked_where_it_is_unsafe_in_text(line: bytes, text: str) -> None:
    """RFC 5198 §2: C1 controls have no place in Net-Unicode, no more than C0 ones; a
    format or separator character makes a reader see other lines or another order
    than the text holds. Each becomes ``?`` as a C0 control always did."""
    assert _read_reply(line).text == (text,)


@given(st.text(max_size=30).map(lambda text: text.replace("\r", "").replace("\n", "")))
def test_no_reply_read_holds_a_character_unsafe_in_text(text: str) -> None:
    line = b"550 5.1.1 " + text.encode("utf-8", "surrogatepass") + b"\r\n"
    assert not any(holds_unsafe(each) for each in _read_reply(line).lines)
