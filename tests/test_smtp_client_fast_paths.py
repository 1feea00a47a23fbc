"""The client machine's fast path for replies gives what its general path gives.

Most replies are one line of printable ASCII (``250 2.1.0 Ok``), read in one
match by :func:`parse_everyday_reply`; every other line goes through
:class:`ReplyParser`'s general rules. Where the fast path takes a line, the
two must agree on everything a reply carries, its ``text`` included.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smtpcore import RemoteProtocolError
from smtpcore._lines import ReceiveBuffer
from smtpcore.smtp import Parameters, Reply
from smtpcore.smtp._replies import ReplyParser, parse_everyday_reply

# Narrow on purpose: reply lines around the everyday parser's branch points, for a
# differential test (sst.replies and sst.reply_lines draw whole replies).
CODE = st.one_of(
    st.sampled_from(["250", "251", "354", "421", "450", "550", "553", "221", "334"]),
    st.from_regex(r"[0-9]{3}", fullmatch=True),
)
STATUS = st.one_of(
    st.sampled_from(["2.0.0", "2.1.0", "2.1.5", "5.1.1", "4.7.1", "2.6.0", "5.5.4"]),
    st.from_regex(r"[0-9]{1,2}\.[0-9]{1,4}\.[0-9]{1,4}", fullmatch=True),
    st.sampled_from(["", "2.0", "2.0.0.0", "x.0.0", "2..0"]),
)
TEXT = st.one_of(
    st.sampled_from(["", "Ok", "Ok: queued as 4Q9Z", "go ahead", " two  spaces ", "end "]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.text(max_size=8),  # control characters, non-ASCII: the general path's
)
SEPARATOR = st.sampled_from([" ", " ", " ", "-", ""])
ENDING = st.sampled_from(["\r\n", "\r\n", "\r\n", "\n", "\r"])

LINE = st.builds(
    lambda code, sep, status, gap, text, end: (code + sep + status + gap + text + end).encode(
        "utf-8", "surrogatepass"
    ),
    CODE,
    SEPARATOR,
    STATUS,
    st.sampled_from([" ", " ", "", "  "]),
    TEXT,
    ENDING,
)

EVERYDAY = st.builds(
    lambda code, other_class, status, text: (
        f"{code} {other_class or code[0]}.{status} {text}\r\n".encode()
    ),
    st.sampled_from(["250", "251", "221", "354", "421", "450", "550", "553"]),
    st.sampled_from(["", "", "", "2", "5"]),  # mostly the reply's own class
    st.sampled_from(["0.0", "1.0", "1.5", "6.0", "7.1", "5.4", "999.999"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
)
"""Lines shaped as the fast path takes them, so that most examples exercise it."""


def general(line: bytes, *, enhanced: bool) -> Reply | str | None:
    """What the general path alone makes of ``line``: a reply, None (more lines to
    come), or the error it raises."""
    try:
        return ReplyParser().read_line(line, enhanced=enhanced)
    except RemoteProtocolError as exc:
        return f"error: {exc}"


@given(st.one_of(LINE, EVERYDAY), st.booleans())
def test_the_everyday_reply_parser_agrees_with_the_general_one(
    line: bytes, enhanced: bool
) -> None:
    fast = parse_everyday_reply(line, enhanced=enhanced)
    if fast is None:
        return
    slow = general(line, enhanced=enhanced)
    assert isinstance(slow, Reply)
    assert (fast.code, fast.status, fast.lines, fast.text) == (
        slow.code,
        slow.status,
        slow.lines,
        slow.text,
    )


@given(st.lists(st.one_of(LINE, EVERYDAY), min_size=1, max_size=4), st.booleans())
def test_a_parser_with_its_fast_path_reads_what_the_general_path_reads(
    lines: list[bytes], enhanced: bool
) -> None:
    """Whole buffers, multi-line replies included: the fast path never takes a line
    in the middle of a reply, nor changes what comes out or what is refused."""

    def read(take_fast_path: bool) -> list[object]:
        parser = ReplyParser(max_line_length=4096, max_lines=100)
        buffer = ReceiveBuffer()
        buffer.receive(b"".join(lines))
        out: list[object] = []
        try:
            if take_fast_path:
                while (reply := parser.next_reply(buffer, enhanced=enhanced)) is not None:
                    out.append((reply.code, reply.status, reply.lines, reply.text))
            else:
                while (line := buffer.next_line(4096)) is not None:
                    assert isinstance(line, bytes)
                    reply = parser.read_line(line, enhanced=enhanced)
                    if reply is not None:
                        out.append((reply.code, reply.status, reply.lines, reply.text))
        except RemoteProtocolError as exc:
            out.append(f"error: {exc}")
        return out

    assert read(take_fast_path=True) == read(take_fast_path=False)


def test_the_fast_path_takes_the_everyday_replies() -> None:
    reply = parse_everyday_reply(b"250 2.1.5 Ok\r\n", enhanced=True)
    assert reply == Reply(250, "Ok", "2.1.5") and reply.text == ("Ok",)
    assert parse_everyday_reply(b"250 2.1.5 Ok\r\n", enhanced=False) == Reply(250, "2.1.5 Ok")
    assert parse_everyday_reply(b"550 2.1.5 no\r\n", enhanced=True) == Reply(550, "2.1.5 no")
    for other in (b"250-first\r\n", b"250 tab\there\r\n", b"250 caf\xc3\xa9\r\n", b"250\r\n"):
        assert parse_everyday_reply(other, enhanced=True) is None


def test_a_receive_buffer_keeps_one_bytearray_for_its_life() -> None:
    """The client machine looks at ``view()`` once and keeps it, to see at no cost
    whether bytes wait: every operation must empty and refill that same object."""
    buffer = ReceiveBuffer()
    kept = buffer.view()
    buffer.receive(b"250 ok\r\n250-a\r\n250 b\r\n" + b"x" * 50)
    assert buffer.next_line(4096) == b"250 ok\r\n"
    buffer.take(3)
    buffer.consume(2)
    buffer.next_line(8)  # too long: dropped as it comes
    buffer.take()
    buffer.receive(b"more")
    buffer.clear()
    buffer.receive(b"again")
    assert buffer.view() is kept and kept == b"again"


@given(
    st.dictionaries(
        st.sampled_from(["SIZE", "BODY", "SMTPUTF8", "NOTIFY", "X-A"]),
        st.one_of(st.none(), st.sampled_from(["1000", "8BITMIME", "NEVER"])),
    ),
    st.sampled_from(["SIZE", "size", "Body", "SMTPUTF8", "ret", "X-a"]),
)
def test_parameters_get_is_the_mapping_lookup(given: dict[str, str | None], asked: str) -> None:
    """``Parameters.get`` answers without raising ``KeyError`` for a missing keyword:
    it must say what the case-insensitive mapping says."""
    params = Parameters(given)
    expected = given.get(asked.upper(), "absent")
    assert params.get(asked, "absent") == expected
    assert params.get(asked) == (None if expected == "absent" else expected)


def test_a_success_with_a_fixed_next_state_moves_there_from_anywhere() -> None:
    """The client machine moves on a success whose rule names its next state without
    asking ``Rule.move``: from every state, ``move`` gives that state too."""
    from smtpcore.smtp._state import END_OF_DATA_RULE, RULES, State

    fixed = 0
    for rule in [*RULES.values(), END_OF_DATA_RULE]:
        if type(rule.on_success) is not State:
            continue
        for code in rule.success_codes:
            for state in State:
                assert rule.move(code, state) is rule.on_success, (rule, code, state)
                fixed += 1
    assert fixed  # MAIL, RCPT, DATA and the end of data among them
