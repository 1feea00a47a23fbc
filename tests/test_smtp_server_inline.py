"""What the server machine does in place where every message passes, as the method
it stands in for does.

A session's every message goes through MAIL, RSET or the end of its content, and
each chunk of its content is judged: the machine sets the transaction's fields,
judges the content and moves to the next state in place, without calling
``_reset_transaction``, ``_content_refusal`` (but to word a refusal) or
``next_state``. Each is held here to what it stands in for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from python_calls import python_calls
from smtp_helpers import EHLO, ENVELOPE, greeted, run
from smtpcore import NEED_DATA, ProtocolError
from smtpcore._lines import LINE_TOO_LONG, FramingPolicy, ReceiveBuffer
from smtpcore.smtp import (
    BadCommand,
    EndOfMessage,
    MessageData,
    RejectedMessage,
    Reply,
    ServerConnection,
)
from smtpcore.smtp._extension import Extension, ServerFacts
from smtpcore.smtp._server_config import ServerConfig
from smtpcore.smtp._state import DISCARDING, END_OF_DATA_RULE, RULES, State, next_state
from smtpcore.testing import strategies as sst

TRANSACTION = (
    "_utf8_transaction",
    "_binary_transaction",
    "_accepted",
    "_overshoot",
    "_forwarded_message",
)
"""The fields ``ServerConnection._reset_transaction`` resets."""


@pytest.mark.parametrize(
    "ending",
    [
        b"RSET\r\n",
        b"BDAT 3 LAST\r\nabc",
        b"MAIL FROM:<a@b.example>\r\n",
        b"MAIL FROM:<a@b.example> SIZE=10\r\n",
        b"MAIL FROM:<a@b.example> ENVID=a+2Bb\r\n",
        b"EHLO c.example\r\n",
    ],
)
def test_every_end_of_a_transaction_resets_it_as_reset_transaction_does(ending: bytes) -> None:
    """MAIL, RSET and the end of a message set the transaction's fields in place:
    each leaves them as ``_reset_transaction`` would (a new MAIL, as it says)."""
    conn = greeted(
        binarymime=True, dsn=True, max_recipients=1, xforward=True, trusted_forwarder=True
    )
    start = (
        b"EHLO c.example\r\nXFORWARD NAME=n.example\r\n"
        b"MAIL FROM:<a@b.example> SMTPUTF8 BODY=BINARYMIME\r\n"
        b"RCPT TO:<c@d.example>\r\nRCPT TO:<e@f.example>\r\n"
    )
    _, out = run(conn, start)
    assert out.count(b"250 ") == 4 and b"452 4.5.3" in out
    assert [getattr(conn, field) for field in TRANSACTION[:4]] == [True, True, 1, 1]
    assert conn.forwarded_message is not None
    if ending.startswith(b"MAIL"):
        run(conn, b"RSET\r\n")
    _, out = run(conn, ending)
    assert out.startswith(b"250")
    expected = greeted()
    expected._reset_transaction()
    assert [getattr(conn, field) for field in TRANSACTION] == [
        getattr(expected, field) for field in TRANSACTION
    ]


def test_the_end_of_a_message_moves_as_its_rule_says() -> None:
    """The machine moves on the answer to a message without calling next_state: to
    CLOSED on 421, else READY, for every code that may answer it and either state."""
    for state in (State.DATA, State.BDAT):
        for code in (*range(200, 300), *range(400, 600)):
            expected = State.CLOSED if code == 421 else State.READY
            assert next_state(END_OF_DATA_RULE, code, state) is expected


@pytest.mark.parametrize(
    ("max_message_size", "content", "refusal"),
    [
        (None, b"plain text\r\n", None),
        (2000, b"plain text\r\n", None),
        (10, b"plain text\r\n", b"552 5.3.4"),
        (None, b"bare\nLF\r\n", b"550 5.5.2"),
        (10, b"bare\nLF and more\r\n", b"552 5.3.4"),  # the size first
        (None, b"nul\x00\r\n", b"550 5.6.0"),
        (None, b"x" * 1200 + b"\r\n", b"500 5.6.0"),
    ],
)
def test_content_is_judged_inline_as_content_refusal_judges_it(
    max_message_size: int | None, content: bytes, refusal: bytes | None
) -> None:
    """Each chunk of content is judged inline, and _content_refusal asked only when
    something is wrong, which words the refusal."""
    conn = greeted(max_message_size=max_message_size)
    run(conn, ENVELOPE + b"DATA\r\n")
    events, out = run(conn, content + b".\r\n")
    if refusal is None:
        assert isinstance(events[-1], EndOfMessage)
    else:
        assert isinstance(events[-1], RejectedMessage)
        assert out.split(b"\r\n")[-2].startswith(refusal)


def test_a_whole_message_and_its_end_are_taken_by_next_event_itself() -> None:
    """A message whole in one read that needs nothing done to it, and its end, are
    ``next_event``'s own: the search for the content's end and its check, and no
    other Python call (each call a message is about 0.3% of a pipelined session's
    instructions, issue 17). A message in pieces still reads as before."""
    conn = greeted()
    run(conn, ENVELOPE + b"DATA\r\n")
    conn.receive_data(b"Subject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n")
    with python_calls() as counted:
        content = conn.next_event()
        end = conn.next_event()
    assert counted == ["next_event", "decode_whole", "passes_whole", "next_event"]
    assert content == MessageData(b"Subject: x\r\n\r\nbody\r\n")
    assert end == EndOfMessage()
    conn.send(Reply(250, "OK"))
    _, out = run(conn, ENVELOPE.removeprefix(EHLO) + b"DATA\r\n")
    assert out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    first, _ = run(conn, b"Subject: y\r\n")
    rest, out = run(conn, b"\r\nmore\r\n.\r\n")
    assert first == [MessageData(b"Subject: y\r\n")]
    assert rest == [MessageData(b"\r\nmore\r\n"), EndOfMessage()]
    assert out.startswith(b"250 ")


@pytest.mark.parametrize(
    ("line", "calls"),
    [
        (b"MAIL FROM:<a@b.example>\r\n", ["everyday_command", "_take_command", "_check_mail"]),
        (b"RCPT TO:<c@d.example>\r\n", ["everyday_command", "_take_command", "_check_rcpt"]),
        (b"DATA\r\n", ["_take_command", "_check_data"]),
    ],
)
def test_an_everyday_command_line_is_read_by_next_event_itself(
    line: bytes, calls: list[str]
) -> None:
    """MAIL, RCPT and DATA as clients write them are read where they stand by
    ``next_event`` itself, which hands the command to ``_take_command``: no call to
    ``_next_command`` for them (three a message, about 1% of a pipelined session's
    instructions, issue 17)."""
    conn = greeted()
    run(conn, EHLO)
    for sent in (b"MAIL FROM:<x@y.example>\r\n", b"RCPT TO:<x@y.example>\r\n"):
        if line[:4] != sent[:4]:
            run(conn, sent)
        else:
            break
    conn.receive_data(line + b"NOOP\r\n")
    with python_calls() as counted:
        event = conn.next_event()
    assert counted == ["next_event", *calls]
    assert type(event).__name__ == line[:4].decode().capitalize()
    assert bytes(conn._buffer) == b"NOOP\r\n"


OPTIONS = st.fixed_dictionaries(
    {
        "size": st.booleans(),
        "dsn": st.booleans(),
        "chunking": st.booleans(),
        "binarymime": st.booleans(),
        "starttls": st.booleans(),
        "limits": st.booleans(),
        "requiretls": st.booleans(),
        "xclient": st.booleans(),
        "auth_mechanisms": st.sampled_from([(), ("PLAIN",), ("SCRAM-SHA-256", "PLAIN")]),
        "auth_require_tls": st.booleans(),
    }
)
FACTS = st.fixed_dictionaries(
    {
        "tls": st.booleans(),
        "authenticated": st.booleans(),
        "trusted_forwarder": st.booleans(),
        "max_message_size": st.sampled_from([None, 1000, 10_240_000]),
        "max_recipients": st.sampled_from([1, 100]),
        "max_command_line": st.sampled_from([512, 1000]),
    }
)


@given(OPTIONS, st.lists(FACTS, min_size=1, max_size=4))
def test_the_ehlo_lines_remembered_are_the_ones_each_extension_gives(
    options: dict[str, object], sessions: list[dict[str, object]]
) -> None:
    """Sessions of one configuration in changing states (TLS, authenticated, trusted,
    limits): each EHLO lists what the extensions give, and reads command lines up to
    what they allow, whether the lines were remembered or not."""
    for facts in sessions:
        conn = greeted(**options)
        for name, value in facts.items():
            setattr(conn, name, value)
        _, out = run(conn, b"EHLO c.example\r\n")
        expected_lines, expected_limit = conn._offered()
        assert conn._offered_now() == (expected_lines, expected_limit)
        assert out.decode().split("\r\n")[1:-1] == [f"250-{line}" for line in expected_lines][
            : len(expected_lines) - 1
        ] + [f"250 {line}" for line in expected_lines[-1:]]
        utf8 = conn.in_force("SMTPUTF8")
        allowance = sum(
            entry.allowance(utf8)
            for entry in conn._config.tables.offerable
            if conn.in_force(entry.keyword)
        )
        assert conn._command_line_limit == expected_limit == conn.max_command_line + allowance


HELLO_REPLIES = (Reply(250, "Hello"), Reply(250, "mx.pqr.example greets you"))
SESSION_FACTS = st.fixed_dictionaries(
    {
        "tls": st.booleans(),
        "authenticated": st.booleans(),
        "trusted_forwarder": st.booleans(),
        "auth_mechanisms": st.sampled_from([None, (), ("PLAIN",)]),  # None: the config's
        "reply": st.sampled_from(HELLO_REPLIES),
        "line": st.sampled_from([b"EHLO c.example\r\n", b"HELO c.example\r\n"]),
    }
)


@given(OPTIONS, st.lists(SESSION_FACTS, min_size=1, max_size=6))
def test_a_first_ehlo_answered_as_the_one_before_is_answered_as_the_general_path_does(
    options: dict[str, object], sessions: list[dict[str, Any]]
) -> None:
    """Sessions started from one shared configuration, as the driver starts them, in
    changing states before their hello: the answer remembered for a session whose
    facts are the configuration's (``ServerConfig.first_hello``) is the answer, the
    command line limit and the commands known that a session on a configuration
    remembering nothing gets."""
    config = ServerConnection("mx.pqr.example", **options)._config  # type: ignore[arg-type]

    def answer(shared: ServerConfig, facts: dict[str, Any]) -> tuple[object, ...]:
        conn = ServerConnection.__new__(ServerConnection)
        conn._begin(shared)
        conn.send(Reply(220, "mx.pqr.example ESMTP"))
        for name in ("tls", "authenticated", "trusted_forwarder", "auth_mechanisms"):
            if facts.get(name) is not None:
                setattr(conn, name, facts[name])
        conn.receive_data(facts["line"])
        conn.next_event()
        return conn.send(facts["reply"]), conn._command_line_limit, conn._verbs

    for facts in sessions:
        # A session as it starts remembers its answer; then one in the facts drawn.
        answer(config, {"line": b"EHLO c.example\r\n", "reply": facts["reply"]})
        expected = answer(config.replaced("hostname", config.hostname), facts)
        assert answer(config, facts) == expected


def test_the_ehlo_lines_are_remembered_by_every_fact_extensions_may_ask() -> None:
    """The facts an extension may ask of a session (ServerFacts) are the ones the EHLO
    lines are remembered by: a new one must join the key."""
    asked = {name for name in vars(ServerFacts) if not name.startswith("_")}
    assert asked == {
        "tls",
        "authenticated",
        "max_message_size",
        "max_recipients",
        "trusted_forwarder",
        "offered_auth_mechanisms",  # tls, auth_mechanisms and auth_require_tls
        "in_force",  # the other extensions' requirements: these same facts
    }


def test_extensions_of_the_applications_own_are_asked_every_time() -> None:
    calls = []

    def arguments(facts: object) -> str:
        calls.append(facts)
        return "1"

    extra = Extension("X-COUNTED", "", "counted", arguments=arguments)
    conn = greeted(extra_extensions=[extra])
    run(conn, b"EHLO c.example\r\nEHLO c.example\r\n")
    assert len(calls) == 2


def test_a_success_moves_to_the_state_its_rule_names_as_move_says() -> None:
    """The machine takes a success's next state from its rule where the rule names one
    (MAIL, RCPT, DATA, ...), without calling Rule.move: what move gives there."""
    for rule in {*RULES.values(), END_OF_DATA_RULE}:
        if isinstance(rule.on_success, State):
            for code in rule.success_codes:
                for state in State:
                    assert rule.move(code, state) is rule.on_success


def _through_the_buffer(conn: ServerConnection, data: bytes) -> None:
    """``receive_data`` as it was before its inline append: every piece through the
    line buffer's own ``receive``, dropped in the states that read nothing more."""
    conn._buffer.receive(data, discard=conn.state in DISCARDING)


def _fed(
    pieces: list[bytes], feed: Callable[[ServerConnection, bytes], None]
) -> list[tuple[list[object], bytes, int] | str]:
    """What a machine makes of ``pieces``, each given to it by ``feed``, then the
    client's close and one piece more: the events and replies after each, or the
    error it raised."""
    conn = greeted(max_junk_commands=1000, starttls=True)
    seen: list[tuple[list[object], bytes, int] | str] = []
    for piece in [*pieces, b"", b"late"]:
        try:
            feed(conn, piece)
            events, out = run(conn)
        except ProtocolError as exc:
            seen.append(f"{type(exc).__name__}: {exc}")
            continue
        seen.append(([repr(event) for event in events], out, conn.buffered))
    return seen


@given(
    st.lists(
        st.one_of(sst.command_lines(hostile=True), st.just(b"STARTTLS\r\n"), st.just(ENVELOPE)),
        max_size=20,
    )
    .map(b"".join)
    .flatmap(sst.chunkings)
)
def test_receive_data_appends_as_the_line_buffer_receives(pieces: list[bytes]) -> None:
    """The bytes of every read are appended to the machine's unread bytes in place:
    the events, replies and what stays buffered are those of the buffer's
    ``receive``, before and in TLS_PENDING and after the client closed."""
    assert _fed(pieces, ServerConnection.receive_data) == _fed(pieces, _through_the_buffer)


@given(
    st.lists(
        st.sampled_from(
            [
                *(b"a", b" ", b"\r", b"\n", b"\r\n", b"NOOP", b"data", b"MAIL FROM:<a@b.example>"),
                *(b"RCPT TO:<b@c.example>", b" SIZE=10", b" NOTIFY=NEVER", b" BODY=8BITMIME"),
            ]
        ),
        max_size=12,
    ).map(b"".join),
    st.sampled_from([0, 0, 0, 1, 3, 40]),
    st.booleans(),
    st.integers(2, 40),
    st.booleans(),
)
@example(b"NOOP\r\nNOOP\r\n", 0, True, 20, False)  # the tail of a line dropped: not taken
@example(b"NOOP\r\n", 0, False, 6, False)  # at the limit
@example(b"Data\r\nrset\r\n", 0, False, 40, False)  # mixed case: matched; lower: by its letter
@example(b"NOOP\r\n", 0, False, 5, False)  # over it
@example(b"NOOP\nNOOP\r\n", 0, False, 20, False)  # a bare LF stays inside the line
@example(b"NOOP\r\nNOOP\r\n", 3, False, 20, False)
@example(b"MAIL FROM:<a@b.example>\r\nNOOP\r\n", 0, False, 25, False)  # read where it stands
@example(b"MAIL FROM:<a@b.example>\r\n", 0, False, 24, False)  # the match over the limit
@example(b"MAIL FROM:<a@b.example> SIZE=10 SIZE=10\r\n", 0, False, 60, False)  # the full parser's
@example(b"MAIL FROM:<a@b.example>\nNOOP\r\n", 0, False, 40, False)
def test_a_command_line_is_taken_from_the_buffer_as_next_line_takes_it(
    data: bytes, searched: int, discarding: bool, limit: int, lf_ends: bool
) -> None:
    """The machine takes a whole line ended by CRLF within the limit from the buffer
    itself, without ``ReceiveBuffer.next_line`` (``_next_command``), and an everyday
    line where it stands, matched in the buffer (``next_event``): the buffer is left
    as the method leaves it, and the line taken is the one it gives."""
    framing = FramingPolicy(lf_ends_command=True) if lf_ends else None
    conn = greeted(max_junk_commands=1000, framing=framing)
    run(conn, b"EHLO c.example\r\n")
    conn._command_line_limit = limit
    buffer = conn._buffer
    buffer += data
    buffer._searched = min(searched, len(data))
    buffer._discarding = discarding
    reference = ReceiveBuffer()
    reference += data
    reference._searched, reference._discarding = buffer._searched, discarding
    line = reference.next_line(limit, lf_ends=lf_ends)
    event = conn.next_event()
    state = (bytes(buffer), buffer._searched, buffer._discarding)
    assert state == (bytes(reference), reference._searched, reference._discarding)
    if line is None:
        assert event is NEED_DATA
    elif line is LINE_TOO_LONG:
        assert isinstance(event, BadCommand) and event.line == b""
        assert event.reply.code == 500
    elif isinstance(event, BadCommand):
        assert event.line == line
    else:  # a command: what the line alone makes
        fresh = greeted(max_junk_commands=1000, framing=framing)
        run(fresh, b"EHLO c.example\r\n")
        fresh.receive_data(line)
        assert event == fresh.next_event()
