"""Properties of the SMTP server machine that must hold for any input."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from smtp_helpers import greeted, run
from smtpcore import ProtocolError
from smtpcore._lines import ReceiveBuffer
from smtpcore.smtp import Data, EnhancedStatus, Event, MessageData, Reply
from smtpcore.smtp._commands import VERBS, parse_command_line, parse_everyday_line
from smtpcore.smtp._replies import ReplyParser

COMMANDS = [
    b"EHLO client.abc.example\r\n",
    b"HELO client.abc.example\r\n",
    b"MAIL FROM:<john@abc.example> SIZE=100\r\n",
    b"MAIL FROM:<>\r\n",
    b"RCPT TO:<brendon@pqr.example>\r\n",
    b"RCPT TO:<Postmaster>\r\n",
    b"RCPT TO:<bad@@x>\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"HELP\r\n",
    b"BOGUS stuff\r\n",
    b"MAIL FROM:<a@b.example> FOO=1\r\n",
    b"x" * 600 + b"\r\n",
    b"NOOP\n",
]
CONTENT = st.lists(
    st.sampled_from([b"Subject: x\r\n", b"\r\n", b".dot\r\n", b"..\r\n", b"body text\r\n"]),
    max_size=20,
).map(b"".join)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def merged(events: list[Event]) -> list[Event]:
    """Join adjacent MessageData, whose boundaries depend on the chunking."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, MessageData) and out and isinstance(out[-1], MessageData):
            out[-1] = MessageData(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def play(commands: bytes, content: bytes | None, cuts: list[int]) -> tuple[list[Event], bytes]:
    conn = greeted()
    events: list[Event] = []
    out = b""
    for piece in split_at(commands, cuts):
        new, written = run(conn, piece)
        events += new
        out += written
    if content is not None and events and isinstance(events[-1], Data):
        for piece in split_at(content + b".\r\nQUIT\r\n", cuts):
            new, written = run(conn, piece)
            events += new
            out += written
    return merged(events), out


@given(
    st.lists(st.sampled_from(COMMANDS), max_size=12).map(b"".join),
    st.one_of(st.none(), CONTENT),
    st.lists(st.integers(0, 2000), max_size=20),
)
def test_any_chunking_gives_the_same_events_and_replies(
    commands: bytes, content: bytes | None, cuts: list[int]
) -> None:
    envelope = b"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
    if content is not None:
        commands = envelope + commands.replace(b"RSET\r\n", b"").replace(b"EHLO", b"NOOP")
        commands += b"DATA\r\n"
    whole = play(commands, content, [])
    assert play(commands, content, cuts) == whole
    assert play(commands, content, list(range(len(commands) + len(content or b"") + 20))) == whole


@given(st.lists(st.binary(max_size=3000), max_size=20))
def test_arbitrary_bytes_raise_only_protocol_errors_and_stay_bounded(
    chunks: list[bytes],
) -> None:
    conn = greeted(max_message_size=10_000)
    try:
        for chunk in chunks:
            run(conn, chunk)
            # A chunk may sit unread while content waits: nothing beyond it is kept.
            assert len(conn._buffer) <= 3000 + 1000
        run(conn, b"\r\n.\r\nQUIT\r\n")
    except ProtocolError:
        pass


@given(st.lists(st.binary(max_size=50), max_size=40))
def test_arbitrary_bytes_inside_data(chunks: list[bytes]) -> None:
    conn = greeted()
    run(conn, b"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    for chunk in chunks:
        run(conn, chunk)
    run(conn, b"\r\n.\r\nNOOP\r\n")


reply_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f"),
    max_size=30,
)


@given(
    st.sampled_from([211, 214, 220, 221, 250, 251, 354, 421, 450, 451, 500, 501, 550, 554]),
    st.lists(reply_text, min_size=1, max_size=5),
    st.booleans(),
    st.integers(0, 999),
    st.integers(0, 999),
)
def test_replies_survive_a_serialize_parse_round_trip(
    code: int, lines: list[str], with_status: bool, subject: int, detail: int
) -> None:
    status = None
    if with_status and code // 100 != 3:
        status = EnhancedStatus(code // 100, subject, detail)
    # A line's own text that starts like a status code would be read as one.
    lines = [line.lstrip("0123456789.") for line in lines]
    reply = Reply(code, tuple(lines), status)
    buffer = ReceiveBuffer()
    buffer.receive(reply.to_bytes(status))
    parsed = ReplyParser().next_reply(buffer, enhanced=status is not None)
    assert parsed == reply
    assert len(buffer) == 0


LOCAL_CHARS = st.sampled_from([*"aZ09.-_+!#'~", "\u00e9", " ", '"', "@"])
DOMAIN_CHARS = st.sampled_from([*"aZ09.-", "\u00e9", "[", "]", ":", "@"])
DOT_ATOM = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,70}(\.[A-Za-z0-9-]{1,5}){0,3}", fullmatch=True
)
HOST_NAME = st.one_of(
    st.from_regex(r"([A-Za-z0-9-]{1,64}\.){0,4}[A-Za-z0-9-]{1,64}", fullmatch=True),
    st.from_regex(r"[a-z]{1,10}\.[0-9]{1,3}", fullmatch=True),  # a numeric top label
)
LOCAL_PART = st.one_of(DOT_ATOM, st.text(LOCAL_CHARS, max_size=70))
DOMAIN = st.one_of(HOST_NAME, st.text(DOMAIN_CHARS, max_size=70))
PLAIN_LINES = st.builds(
    lambda verb, local, domain: f"{verb}:<{local}@{domain}>\r\n".encode(),
    st.sampled_from(["MAIL FROM", "RCPT TO", "mail from", "rcpt To"]),
    DOT_ATOM,
    HOST_NAME,
)
EVERYDAY_LIKE = st.builds(
    lambda verb, colon, local, domain, tail: f"{verb}{colon}<{local}@{domain}>{tail}".encode(
        "utf-8", "surrogateescape"
    ),
    st.sampled_from(["MAIL FROM", "mail from", "RCPT TO", "Rcpt To", "DATA", "MAIL TO"]),
    st.sampled_from([":", ":", ":", ": ", ""]),
    LOCAL_PART,
    DOMAIN,
    st.sampled_from(["\r\n", "\r\n", "\r\n", "\n", " SIZE=1\r\n", " \r\n", ""]),
)


@given(
    st.one_of(
        PLAIN_LINES, EVERYDAY_LIKE, st.sampled_from([b"DATA\r\n", b"data\r\n", b"DATA \r\n"])
    )
)
def test_the_everyday_line_parser_agrees_with_the_full_one(line: bytes) -> None:
    """Where the hot path recognises a line, the full parser gives the same event."""
    command = parse_everyday_line(line)
    if command is None:
        return
    assert line.endswith(b"\r\n")
    assert parse_command_line(line[:-2].decode("utf-8"), VERBS) == command


def test_the_everyday_line_parser_takes_the_everyday_lines() -> None:
    mail = parse_everyday_line(b"MAIL FROM:<john@abc.example>\r\n")
    assert mail == parse_command_line("MAIL FROM:<john@abc.example>", VERBS)
    assert parse_everyday_line(b"rcpt to:<Brendon@PQR.example>\r\n") == parse_command_line(
        "RCPT TO:<Brendon@PQR.example>", VERBS
    )
    assert parse_everyday_line(b"DATA\r\n") == parse_command_line("DATA", VERBS)
    assert parse_everyday_line(b"MAIL FROM:<john@abc.example> SIZE=10\r\n") == (
        parse_command_line("MAIL FROM:<john@abc.example> SIZE=10", VERBS)
    )
    for other in (
        b"MAIL FROM:<john@abc.example>  SIZE=10\r\n",
        b"MAIL FROM: <john@abc.example>\r\n",
        b"MAIL FROM:<>\r\n",
        b"RCPT TO:<a@192.0.2.1>\r\n",  # a numeric top label: the full rules refuse it
        b"RCPT TO:<" + b"x" * 65 + b"@abc.example>\r\n",  # a local part over 64 octets
        b"MAIL FROM:<john@abc.example>\n",
    ):
        assert parse_everyday_line(other) is None
