"""The client machine's one-call shortcuts give what the general calls give.

A driver that has read the bytes of a reply that is due hands them over with
``_receive_event`` (``receive_data`` then ``next_event``, with a lookup of a
known line as it came), and content of one piece goes out with its end
through ``_send_whole`` (``send(MessageData(...))`` then
``send(EndOfMessage())``, dot-stuffed by ``encode_whole``). Here two machines
are driven side by side, one through the shortcut and one through the
general calls, and must agree on every event, error, state and result. The
success of MAIL, RCPT, DATA or the content, which both ``_receive_event`` and
``next_event`` record without ``_dispatch`` (``_record_fused``), goes through
``_dispatch`` on the general side.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtpcore._dotstuff import DotEncoder, encode_whole
from smtpcore.address import parse_mailbox
from smtpcore.smtp import (
    ClientConnection,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Rcpt,
    Reply,
    Rset,
)
from smtpcore.smtp._replies import everyday_reply
from smtpcore.testing import strategies as sst

EVERYDAY = [
    b"250 2.1.0 Ok\r\n",
    b"250 2.1.5 Ok\r\n",
    b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"250 2.0.0 Ok: queued\r\n",
    b"250 Ok\r\n",
    b"550 5.1.1 no such user\r\n",
    b"421 4.3.2 going down\r\n",
    b"221 2.0.0 Bye\r\n",
    b"354 go\r\n",
    b"250 ok\r\n",
    b"250 2.1.5 recipient ok, and a longer text\r\n",
]
for _line in EVERYDAY:  # known lines, as after a first message
    for _enhanced in (False, True):
        everyday_reply(_line, enhanced=_enhanced)


@st.composite
def pieces(draw: st.DrawFn) -> tuple[bytes, ...]:
    """One or two replies (or the server's close, or what a broken server writes), in
    the pieces a server's writes may bring them in."""
    line = draw(
        st.one_of(
            st.sampled_from(EVERYDAY),
            st.lists(st.sampled_from(EVERYDAY), min_size=2, max_size=2).map(b"".join),
            st.just(b"250-first line\r\n"),
            st.just(b""),
            sst.reply_lines(hostile=True),
        )
    )
    cuts = sorted(draw(st.lists(st.integers(1, max(len(line) - 1, 1)), max_size=2)))
    ends = zip([0, *cuts], [*cuts, len(line)], strict=True)
    return tuple(line[start:end] for start, end in ends) or (b"",)


COMMANDS = st.sampled_from(
    [
        Mail(parse_mailbox("a@abc.example")),
        Rcpt(parse_mailbox("b@pqr.example")),
        Rcpt(parse_mailbox("c@pqr.example")),
        Data(),
        MessageData(b"Subject: hi\r\n\r\nhello\r\n"),
        EndOfMessage(),
        Rset(),
        Noop(),
    ]
)
STEPS = st.lists(
    st.one_of(
        st.tuples(COMMANDS, pieces()).map(lambda step: (step[0], *step[1])),
        COMMANDS.map(lambda command: (command,)),
        pieces(),
    ),
    max_size=8,
)


def outcome(call: Callable[[], Any]) -> tuple[object, ...]:
    """What ``call()`` gave, or the error it raised, compared by type and words."""
    try:
        return ("gave", call())
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def seen(conn: ClientConnection) -> tuple[object, ...]:
    """Everything the application can read of a machine."""
    return (
        conn.state,
        conn.pending,
        conn.answered,
        conn.answered_recipient,
        conn.transaction,
        conn.buffered,
        conn.extensions,
    )


def greeted(offered: list[str], max_reply_line: int, lmtp: bool) -> ClientConnection:
    conn = ClientConnection("client.abc.example", lmtp=lmtp, max_reply_line=max_reply_line)
    conn.receive_data(b"220 mx.pqr.example\r\n")
    assert isinstance(conn.next_event(), Reply)
    conn.send(Lhlo("client.abc.example") if lmtp else Ehlo("client.abc.example"))
    conn.receive_data(Reply(250, ["mx.pqr.example", *offered]).to_bytes())
    assert isinstance(conn.next_event(), Reply)
    return conn


OFFERS = st.lists(st.sampled_from(["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"]), unique=True)


MAIL = Mail(parse_mailbox("a@abc.example"))
RCPT = Rcpt(parse_mailbox("b@pqr.example"))


EVERYDAY_MESSAGE = [
    (MAIL, b"250 2.1.0 Ok\r\n"),
    (RCPT, b"250 2.1.5 Ok\r\n"),
    (Rcpt(parse_mailbox("c@pqr.example")), b"550 5.1.1 no such user\r\n"),
    (Data(), b"354 go\r\n"),
    (MessageData(b"hello\r\n"), EndOfMessage(), b"250 2.0.0 Ok: queued\r\n"),
]


@settings(max_examples=500)
@given(OFFERS, st.sampled_from([4096, 16, 30]), st.booleans(), STEPS)
@example([], 4096, False, [(MAIL, b"250 2"), (b"250 2.1.0 Ok\r\n",)])  # behind a piece
@example([], 30, False, [(MAIL, b"250 2.1.5 recipient ok, and a longer text\r\n")])  # too long
@example([], 4096, False, [(MAIL, b"250-first line\r\n", b"250 2.1.0 Ok\r\n")])  # a last line
@example(  # after the close
    ["PIPELINING"],
    4096,
    False,
    [(MAIL,), (RCPT, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", b""), (Data(), b"354 go\r\n")],
)
@example([], 4096, False, EVERYDAY_MESSAGE)  # each reply fused
@example([], 4096, True, EVERYDAY_MESSAGE)  # LMTP: the 354 and the end go to _dispatch
@example(  # a success after a refusal the commands behind it were not checked for
    ["PIPELINING"],
    4096,
    False,
    [(MAIL,), (RCPT,), (b"550 5.1.1 no such user\r\n",), (b"250 2.1.5 Ok\r\n",)],
)
def test_receive_event_is_receive_data_then_next_event(
    offered: list[str], max_reply_line: int, lmtp: bool, steps: list[tuple[object, ...]]
) -> None:
    short = greeted(offered, 4096, lmtp=lmtp)
    short.max_reply_line = max_reply_line
    general = greeted(offered, 4096, lmtp=lmtp)
    general.max_reply_line = max_reply_line
    for step in (single for group in steps for single in group):
        if isinstance(step, bytes):
            taken = outcome(functools.partial(short._receive_event, step))
            assert taken == outcome(functools.partial(received, general, step))
        else:
            assert isinstance(step, Event)
            assert outcome(functools.partial(short.send, step)) == outcome(
                functools.partial(general.send, step)
            )
        assert seen(short) == seen(general)


def received(conn: ClientConnection, data: bytes) -> object:
    """``receive_data`` then ``next_event``, every reply through ``_dispatch``: no
    success recorded as ``_record_fused`` records it."""
    for entry in conn._queue:
        entry.fused = frozenset()
    conn.receive_data(data)
    return conn.next_event()


def in_data(offered: list[str], normalize: bool, lmtp: bool) -> ClientConnection:
    """A machine whose ``DATA`` has just had its 354."""
    conn = greeted(offered, 4096, lmtp=lmtp)
    conn.normalize_line_endings = normalize
    for command, line in [
        (Mail(parse_mailbox("a@abc.example")), b"250 2.1.0 Ok\r\n"),
        (Rcpt(parse_mailbox("b@pqr.example")), b"250 2.1.5 Ok\r\n"),
        (Data(), b"354 go\r\n"),
    ]:
        conn.send(command)
        conn.receive_data(line)
        assert isinstance(conn.next_event(), Reply)
    return conn


BEFORE = st.sampled_from(["nothing", "a piece", "the end", "a stale reply", "a stale 421"])


@settings(max_examples=300)
@given(
    OFFERS,
    st.booleans(),
    st.booleans(),
    BEFORE,
    st.one_of(sst.message_contents(), st.binary(max_size=40)),
)
def test_send_whole_is_content_then_its_end(
    offered: list[str], normalize: bool, lmtp: bool, before: str, content: bytes
) -> None:
    short = in_data(offered, normalize, lmtp)
    general = in_data(offered, normalize, lmtp)
    for conn in (short, general):
        if before == "a piece":
            conn.send(MessageData(b"first\r\n."))
        elif before == "the end":
            conn.send(EndOfMessage())
        elif before.startswith("a stale"):
            conn.receive_data(b"421 4.3.2 bye\r\n" if before.endswith("421") else b"250 no\r\n")
    sent = outcome(lambda: short._send_whole(content))
    expected = outcome(lambda: general.send(MessageData(content)) + general.send(EndOfMessage()))
    assert sent == expected
    assert seen(short) == seen(general)
    if sent[0] == "gave":
        for conn in (short, general):
            conn.receive_data(b"250 2.0.0 Ok: queued\r\n")
        assert outcome(short.next_event) == outcome(general.next_event)
        assert seen(short) == seen(general)


@given(
    st.one_of(
        st.binary(max_size=60),
        st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n."]), max_size=12).map(
            b"".join
        ),
        sst.message_contents(),
    ),
    st.booleans(),
)
def test_encode_whole_is_what_an_encoder_gives(content: bytes, normalize: bool) -> None:
    encoder = DotEncoder(normalize=normalize)
    assert encode_whole(content, normalize=normalize) == encoder.encode(content) + encoder.end()
