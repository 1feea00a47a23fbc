"""Properties of the SMTP server machine that must hold for any input."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import assume, example, given
from hypothesis import strategies as st

from smtp_helpers import codes, greeted, run
from smtpcore import ProtocolError, RemoteProtocolError
from smtpcore._lines import ReceiveBuffer
from smtpcore.smtp import (
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Mail,
    MessageData,
    RejectedMessage,
    Reply,
    ServerConnection,
    State,
)
from smtpcore.smtp._commands import VERBS, parse_command_line, parse_everyday_line, starts_bdat
from smtpcore.smtp._replies import ReplyParser
from smtpcore.testing import permissive_smtp_answer, run_server
from smtpcore.testing import strategies as sst


@dataclass(frozen=True)
class Refused:
    """A message the server refused: its reply, and the content streamed before it.

    How much content reached the application before the machine noticed
    what was wrong depends on the chunking; that the message was refused,
    and with which reply, must not.
    """

    reply: Reply
    streamed: bytes


def merged(events: list[Event]) -> list[object]:
    """Join adjacent MessageData, whose boundaries depend on the chunking, and
    turn a refused message's content and RejectedMessage into one :class:`Refused`."""
    out: list[object] = []
    for event in events:
        if isinstance(event, MessageData) and out and isinstance(out[-1], MessageData):
            out[-1] = MessageData(out[-1].data + event.data)
        elif isinstance(event, RejectedMessage):
            last = out[-1] if out else None
            streamed = b""
            if isinstance(last, MessageData):
                streamed = last.data
                out.pop()
            out.append(Refused(event.reply, streamed))
        else:
            out.append(event)
    return out


def same_story(chunked: list[object], whole: list[object]) -> bool:
    """The same events, but that a refused message may have streamed more or less
    of its content: one run's streamed part must be a prefix of the other's."""
    if len(chunked) != len(whole):
        return False
    for one, other in zip(chunked, whole, strict=True):
        if isinstance(one, Refused) and isinstance(other, Refused):
            short, long = sorted((one.streamed, other.streamed), key=len)
            if one.reply != other.reply or not long.startswith(short):
                return False
        elif one != other:
            return False
    return True


def play(commands: list[bytes], content: list[bytes] | None) -> tuple[list[object], bytes]:
    """Feed the command pieces, then, if DATA was accepted, the content pieces."""
    conn = greeted()
    events: list[Event] = []
    out = b""
    pieces = list(commands)
    for index, piece in enumerate(pieces):
        new, written = run(conn, piece)
        events += new
        out += written
        if events and isinstance(events[-1], ConnectionClosed):
            break  # a driver stops there
        last = events[-1] if events else None
        if index == len(commands) - 1 and content is not None and isinstance(last, Data):
            pieces += content
    return merged(events), out


# Extensions the greeted() machine offers; STARTTLS and AUTH lines get 502.
LINES = st.lists(
    sst.command_lines(extensions={"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8"}, hostile=True),
    max_size=12,
).map(b"".join)
ENVELOPE = b"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"


@st.composite
def conversations(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    commands = draw(LINES)
    # Lines over the limit, bare CRs and LFs, NUL: refused messages, whose
    # refusal must not depend on the chunking either.
    content = draw(st.none() | sst.message_contents(max_lines=15, over_limit=True, smuggling=True))
    if content is not None:
        # One transaction that reaches DATA: only commands that leave it open.
        commands = b"".join(
            line + b"\n"
            for line in commands.split(b"\n")[:-1]
            if line.startswith((b"NOOP", b"VRFY", b"HELP", b"x"))
        )
        commands = ENVELOPE + commands + b"DATA\r\n"
        content += b"\r\n.\r\nQUIT\r\n"
    return commands, content


@given(conversations(), st.data())
def test_any_chunking_gives_the_same_events_and_replies(
    conversation: tuple[bytes, bytes | None], data: st.DataObject
) -> None:
    commands, content = conversation
    try:
        events, replies = play([commands], None if content is None else [content])
    except RemoteProtocolError:
        # Commands behind an accepted DATA (a long path can make RCPT valid) came
        # before the 354: a synchronization error, which only a DATA that arrives
        # with them can see, whatever the chunking (test_smtp_server's own tests).
        assume(False)
    command_pieces = data.draw(sst.chunkings(commands))
    content_pieces = None if content is None else data.draw(sst.chunkings(content))
    chunked_events, chunked_replies = play(command_pieces, content_pieces)
    assert chunked_replies == replies
    assert same_story(chunked_events, events), (chunked_events, events)


# Lines that leave the command state (DATA, BDAT) or end the session (QUIT) are left out.
ONE_LINE_EACH = st.lists(
    sst.command_lines(
        extensions={"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8"}, hostile=True
    ).filter(lambda line: not line.upper().startswith((b"DATA", b"BDAT", b"QUIT"))),
    max_size=12,
).map(b"".join)


@given(ONE_LINE_EACH, st.data())
def test_only_crlf_ends_a_command_line(wire: bytes, data: st.DataObject) -> None:
    """One reply per CRLF, however the network cuts the bytes (RFC 5321 §2.3.8).

    A bare LF or CR ends no line: a line holding one is refused whole, and
    nothing after it runs as a command that a CRLF-only reader of the same
    session (a filter in front of the server, say) would not have seen.
    """
    for pieces in ([wire], data.draw(sst.chunkings(wire))):
        conn = greeted(max_errors=1000, max_bad_commands=1000, max_junk_commands=1000)
        run(conn, b"EHLO a.example\r\n")
        out = b"".join(run(conn, piece)[1] for piece in pieces)
        assert len(codes(out)) == wire.count(b"\r\n"), out


@given(st.lists(st.binary(max_size=3000), max_size=20))
def test_arbitrary_bytes_raise_only_protocol_errors_and_stay_bounded(
    chunks: list[bytes],
) -> None:
    conn = greeted(max_message_size=10_000)
    try:
        for chunk in chunks:
            run(conn, chunk)
            # A chunk may sit unread while content waits: nothing beyond it is kept.
            assert conn.buffered <= conn.max_buffered + len(chunk)
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


@given(sst.replies())
def test_replies_survive_a_serialize_parse_round_trip(reply: Reply) -> None:
    status = reply.status
    buffer = ReceiveBuffer()
    buffer.receive(reply.to_bytes(status))
    parsed = ReplyParser().next_reply(buffer, enhanced=status is not None)
    assert parsed == reply
    assert len(buffer) == 0


PLAIN_LINES = st.builds(
    lambda verb, mailbox: f"{verb}:<{mailbox}>\r\n".encode(),
    st.sampled_from(["MAIL FROM", "RCPT TO", "mail from", "rcpt To"]),
    sst.mailboxes(quoted=False, literals=False, at_limits=False),
)
# Narrow on purpose: the verbs, colons and tails around the hot path's branch points
# (the paths themselves are smtpcore.testing's, valid, UTF-8 and hostile).
EVERYDAY_LIKE = st.builds(
    lambda verb, colon, path, tail: f"{verb}{colon}{path}{tail}".encode(
        "utf-8", "surrogateescape"
    ),
    st.sampled_from(["MAIL FROM", "mail from", "RCPT TO", "Rcpt To", "DATA", "MAIL TO"]),
    st.sampled_from([":", ":", ":", ": ", ""]),
    sst.paths(utf8=True, hostile=True),
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
    # A local part past RFC 5321 §4.5.3.1.1's 64 octets, a size to take, not a limit.
    long_local = b"RCPT TO:<" + b"x" * 65 + b"@abc.example>\r\n"
    assert parse_everyday_line(long_local) == parse_command_line(long_local[:-2].decode(), VERBS)
    for other in (
        b"MAIL FROM:<john@abc.example>  SIZE=10\r\n",
        b"MAIL FROM: <john@abc.example>\r\n",
        b"MAIL FROM:<>\r\n",
        b"RCPT TO:<a@192.0.2.1>\r\n",  # a numeric top label: the full rules refuse it
        b"RCPT TO:<x@" + b"d" * 60 + (b".d" + b"d" * 60) * 4 + b">\r\n",  # domain over 255
        b"MAIL FROM:<john@abc.example>\n",
    ):
        assert parse_everyday_line(other) is None


UTF8_LINES = st.builds(
    lambda start, text: start + text.encode("utf-8") + b"\r\n",
    st.sampled_from(
        [
            b"MAIL FROM:<",
            b"MAIL FROM:<a@",
            b"RCPT TO:<",
            b"RCPT TO:<b@",
            b"MAIL FROM:<a@b.example> ENVID=",
            b"RCPT TO:<b@c.example> ORCPT=rfc822;",
            b"RCPT TO:<b@c.example> NOTIFY=",
            b"EHLO ",
            b"VRFY ",
            b"BDAT ",
            b"",
        ]
    ),
    st.text(
        st.sampled_from("a.@<> \u00a7")
        | st.characters(min_codepoint=0xA0, exclude_categories=["Cs"]),
        max_size=40,
    ),
)


@given(
    st.lists(
        st.one_of(sst.command_lines(hostile=True), UTF8_LINES, st.just(ENVELOPE)), max_size=12
    ),
    st.booleans(),
)
@example([b"HELO c.example\r\n", b"MAIL FROM:<a@test.example.>\r\n"], False)  # "§"
@example([b"HELO c.example\r\n", b"MAIL FROM:<\xc3\xa9\xc3\xa9\r\n"], True)
def test_replies_to_hostile_lines_are_printable_ascii(lines: list[bytes], smtputf8: bool) -> None:
    """RFC 5321 §4.2: reply text is printable US-ASCII; the machine's own refusals,
    which quote exceptions (with "§" in them) and the client's bytes, too. An
    SMTPUTF8 transaction (RFC 6531) may quote its UTF-8 back: none opens here."""
    if smtputf8:
        lines = [line for line in lines if b"SMTPUTF8" not in line.upper()]
    conn = greeted(smtputf8=smtputf8, dsn=True)
    out = b""
    for line in lines:
        try:
            out += run(conn, line)[1]
        except RemoteProtocolError as exc:  # a BDAT with no size: its reply, then the end
            assert isinstance(exc.reply_hint, Reply)
            out += conn.send(exc.reply_hint)
            break
    assert out.isascii(), out
    assert not any(byte < 32 and byte not in b"\t\r\n" for byte in out), out


# -- BDAT: a refused chunk fails its transaction (RFC 3030 §2) -------------------------

SMUGGLED_COMMANDS = b"RSET\r\nMAIL FROM:<evil@e.example>\r\nRCPT TO:<c@d.example>\r\n"
"""A chunk that, read as commands, would open a transaction of the client's choosing."""

BDAT_TAILS = st.one_of(
    st.sampled_from(["", " LAST", " last"]),
    st.sampled_from([" LAST junk", "  LAST", " FIRST", " LAST ", "\tLAST"]),
    sst.other_spaces().map(lambda space: space + "LAST"),
)
"""What follows a BDAT line's size: nothing or LAST, as RFC 3030 §2's grammar has it, and
near misses the machine refuses (a doubled or odd space, another word, trailing junk)."""


@st.composite
def bdat_lines(draw: st.DrawFn) -> bytes:
    """A BDAT line and its chunk, valid or not; its size always the chunk's, so that
    a server that skips a refused chunk reads the next line where the client wrote it."""
    chunk = draw(st.binary(max_size=8) | st.just(SMUGGLED_COMMANDS))
    zeros = "0" * draw(st.integers(0, 2))
    line = f"BDAT {zeros}{len(chunk)}{draw(BDAT_TAILS)}\r\n".encode()
    return line + chunk


@given(
    st.lists(bdat_lines(), min_size=1, max_size=6),
    st.lists(st.sampled_from([250, 250, 250, 451, 452, 552, 554]), max_size=6),
    st.sampled_from([None, 12]),
    st.booleans(),
    sst.chunk_sizes(),
)
@example(
    [b"BDAT 4\r\nAAAA", b"BDAT 4 LAST junk\r\nBBBB", b"BDAT 4 LAST\r\nCCCC"], [], None, False, [99]
)
def test_no_message_completes_after_a_bdat_is_refused(
    chunks: list[bytes],
    chunk_answers: list[int],
    max_message_size: int | None,
    lmtp: bool,
    read_sizes: list[int],
) -> None:
    """RFC 3030 §2: after a 4xx or 5xx to any BDAT, whoever refused it (the application,
    the size limit, the machine for the line's syntax), the transaction has failed; the
    chunks still in the pipeline are discarded, and no message is completed until a new
    MAIL, however the network cuts the bytes."""
    conn = greeted(lmtp=lmtp, max_message_size=max_message_size)
    hello = b"LHLO a.example\r\n" if lmtp else b"EHLO a.example\r\n"
    run(conn, hello + b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    answered: list[tuple[Event, int]] = []
    codes_left = iter(chunk_answers)

    def answer(conn: ServerConnection, event: Event) -> list[Reply]:
        given = (
            Reply(next(codes_left, 250), "chunk")
            if isinstance(event, Bdat)
            else permissive_smtp_answer(conn, event)
        )
        replies = [given] if isinstance(given, Reply) else list(given or ())
        if replies:
            answered.append((event, replies[0].code))
        return replies

    events: list[Event] = []
    try:
        wire = b"".join(chunks) + b"NOOP\r\n"
        start = 0
        for size in itertools.cycle(read_sizes):  # bounded: each read takes at least one octet
            if start >= len(wire):
                break
            events += run_server(conn, wire[start : start + size], answer=answer)[0]
            start += size
    except RemoteProtocolError:
        assert conn.state is State.ERROR  # an odd space: a size no one can read, 421
    assert not any(isinstance(event, Mail) for event in events)  # no chunk read as commands
    failed = False
    for event, code in answered:
        assert not (failed and isinstance(event, EndOfMessage)), answered
        answers_bdat = isinstance(event, Bdat | RejectedMessage) or (
            isinstance(event, BadCommand) and starts_bdat(event.line)
        )
        failed = failed or (answers_bdat and code >= 400)
