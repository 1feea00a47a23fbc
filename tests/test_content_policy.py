"""One framing policy for DATA and BDAT content, and a line limit that counts what the RFC counts.

Issue 12 items 2 and 3: BDAT once skipped the policy (a bare LF reached the
Maildir as a header line of its own), NUL passed under the strict policy, and a
1000-octet line starting with a dot was refused because its stuffing dot was
counted.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtp_helpers import EHLO, ENVELOPE, codes, content_of, greeted, run
from smtpcore import NEED_DATA, PAUSED
from smtpcore._content import ContentFilter, LineEndings, crlf_only, passes_whole
from smtpcore._lines import FramingPolicy
from smtpcore.address import parse_mailbox
from smtpcore.smtp import (
    Bdat,
    ClientConnection,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Mail,
    MessageData,
    Noop,
    Rcpt,
    RejectedMessage,
    Reply,
    ServerConnection,
)
from smtpcore.testing import strategies as sst

INJECTED = b"Subject: hello\nX-Injected: x\r\n\r\nbody\r\n"
POLICIES = {
    "strict": FramingPolicy.strict(),
    "normalizing": FramingPolicy.normalizing(),
    "lenient": FramingPolicy.lenient(),
}


def bdat(*chunks: bytes) -> bytes:
    """``chunks`` as BDAT commands, the last one LAST."""
    out = b""
    for index, chunk in enumerate(chunks):
        last = b" LAST" if index == len(chunks) - 1 else b""
        out += b"BDAT %d%s\r\n%s" % (len(chunk), last, chunk)
    return out


def send(
    conn: ServerConnection, carrier: str, wire: bytes, *, envelope: bytes = ENVELOPE
) -> tuple[list[Event], bytes]:
    """The envelope, then ``wire`` as BDAT chunks, or as DATA content after the 354."""
    if carrier == "BDAT":
        return run(conn, envelope + wire)
    events, out = run(conn, envelope + b"DATA\r\n")
    more_events, more_out = run(conn, wire)
    return events + more_events, out + more_out


def data(content: bytes) -> bytes:
    """``content`` as it goes after the 354: dot-stuffed, then the terminator."""
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    return (b"." + stuffed if stuffed.startswith(b".") else stuffed) + b".\r\n"


# -- the strict policy refuses bare CR, bare LF and NUL, in DATA and in BDAT alike ------

BAD_CONTENT = [
    pytest.param(INJECTED, "550 5.5.2", id="bare-LF"),
    pytest.param(b"Subject: hello\rX-Injected: x\r\n\r\nbody\r\n", "550 5.5.2", id="bare-CR"),
    pytest.param(b"a\r\n\x00.\r\nMAIL FROM:<e@vil.example>\r\n", "550 5.6.0", id="NUL-dot"),
    pytest.param(b"a\r\n.\x00\r\nb\r\n", "550 5.6.0", id="dot-NUL"),
    pytest.param(b"nul \x00 inside\r\n", "550 5.6.0", id="NUL"),
]


@pytest.mark.parametrize(("content", "refusal"), BAD_CONTENT)
@pytest.mark.parametrize("carrier", ["DATA", "BDAT"])
def test_strict_policy_refuses_the_message(content: bytes, refusal: str, carrier: str) -> None:
    wire = data(content) if carrier == "DATA" else bdat(content)
    events, out = send(greeted(), carrier, wire + b"NOOP\r\n")
    assert isinstance(events[-2], RejectedMessage) and isinstance(events[-1], Noop)
    assert codes(out)[-2:] == [refusal, "250 2.0.0"]  # read to its end: NOOP is a command
    assert b"X-Injected" not in content_of(events)


def test_bdat_refusal_comes_once_the_message_ends() -> None:
    """RFC 3030 §2: each chunk's octets are read to its end; the policy answers at LAST."""
    events, out = run(greeted(), ENVELOPE + bdat(b"bare\nLF\r\n", b"more\r\n", b"end\r\n"))
    kinds = [type(e).__name__ for e in events if not isinstance(e, MessageData)]
    assert kinds[-4:] == ["Bdat", "Bdat", "Bdat", "RejectedMessage"]
    assert codes(out)[-3:] == ["250 2.0.0", "250 2.0.0", "550 5.5.2"]


@pytest.mark.parametrize(
    ("chunks", "bad"),
    [
        ((b"a\r", b"\nb\r\n"), False),  # CRLF split between two chunks
        ((b"a\r", b"b\r\n"), True),
        ((b"a\r\n", b"\nb\r\n"), True),
        ((b"ends in CR\r",), True),
        ((b"ends in CRLF\r\n",), False),
        ((b"", b"x\r", b"", b"\n"), False),
    ],
)
def test_bdat_line_endings_across_chunks(chunks: tuple[bytes, ...], bad: bool) -> None:
    events, _ = run(greeted(), ENVELOPE + bdat(*chunks))
    assert isinstance(events[-1], RejectedMessage) is bad
    if not bad:
        assert content_of(events) == b"".join(chunks)


@pytest.mark.parametrize("carrier", ["DATA", "BDAT"])
def test_normalizing_policy_stores_no_bare_cr_or_lf(carrier: str) -> None:
    content = b"Subject: hello\nX: y\rZ: \r\r\n\r\nbody\n\n"
    wire = data(content + b"\r\n") if carrier == "DATA" else bdat(content[:15], content[15:])
    events, _ = send(greeted(framing=FramingPolicy.normalizing()), carrier, wire)
    assert isinstance(events[-1], EndOfMessage)
    stored = content_of(events)
    expected = b"Subject: hello\r\nX: y\r\nZ: \r\n\r\n\r\nbody\r\n\r\n"
    assert stored == (expected + b"\r\n" if carrier == "DATA" else expected)


def test_normalizing_policy_holds_a_final_cr_until_the_end() -> None:
    events, _ = run(greeted(framing=FramingPolicy.normalizing()), ENVELOPE + bdat(b"x\r"))
    assert isinstance(events[-1], EndOfMessage)
    assert content_of(events) == b"x\r\n"


@pytest.mark.parametrize("carrier", ["DATA", "BDAT"])
def test_lenient_policy_passes_content_unchanged(carrier: str) -> None:
    content = b"a\nb\rc\x00d\r\n"
    wire = data(content) if carrier == "DATA" else bdat(content)
    events, _ = send(greeted(framing=FramingPolicy.lenient()), carrier, wire)
    assert isinstance(events[-1], EndOfMessage)
    assert content_of(events) == content


def test_binarymime_content_is_arbitrary_octets() -> None:
    """RFC 3030 §3: BODY=BINARYMIME content has no lines to police."""
    conn = greeted(binarymime=True)
    envelope = EHLO + b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\n"
    content = b"\x00\r\n.\r\n\n\r" + b"x" * 5000
    events, _ = run(conn, envelope + bdat(content[:3], content[3:]))
    assert isinstance(events[-1], EndOfMessage)
    assert content_of(events) == content


# -- the text line limit (RFC 5321 §4.5.3.1.6) ----------------------------------------

LINE = b"x" * 997 + b"\r\n"  # 999 octets
LONGEST = b"." + LINE  # 1000 octets of content, 1001 on the wire once stuffed


@pytest.mark.parametrize("where", ["first", "later"])
def test_the_stuffing_dot_does_not_count_toward_the_line_limit(where: str) -> None:
    content = LONGEST if where == "first" else b"Subject: x\r\n\r\n" + LONGEST
    wire = data(content)
    assert len(wire.split(b"\r\n")[-3]) + 2 == 1001  # the longest line, stuffed, with CRLF
    events, out = send(greeted(), "DATA", wire)
    assert isinstance(events[-1], EndOfMessage), codes(out)
    assert content_of(events) == content


@pytest.mark.parametrize("carrier", ["DATA", "BDAT"])
def test_a_line_over_the_limit_is_refused(carrier: str) -> None:
    content = b"Subject: x\r\n\r\nx" + LONGEST  # 1001 octets of content
    wire = data(content) if carrier == "DATA" else bdat(content)
    events, out = send(greeted(), carrier, wire)
    assert isinstance(events[-1], RejectedMessage)
    assert codes(out)[-1] == "500 5.6.0"


def test_the_client_writes_the_longest_line_and_the_server_takes_it() -> None:
    """The client's encoder and the server's decoder count the same octets."""
    client = ClientConnection("client.abc.example")
    server = greeted()
    client.receive_data(b"220 mx\r\n")
    client.next_event()
    wire = client.send(Ehlo("client.abc.example"))
    _, out = run(server, wire)
    client.receive_data(out)
    assert isinstance(client.next_event(), Reply)
    wire = client.send(Mail(parse_mailbox("a@abc.example")))
    wire += client.send(Rcpt(parse_mailbox("b@pqr.example")))
    wire += client.send(Data())
    _, out = run(server, wire)
    client.receive_data(out)
    while isinstance(client.next_event(), Reply):
        pass
    content = b"Subject: x\r\n\r\n" + LONGEST
    wire = client.send(MessageData(content)) + client.send(EndOfMessage())
    assert b"\r\n.." + LINE in wire
    events, out = run(server, wire)
    assert isinstance(events[-1], EndOfMessage)
    assert content_of(events) == content
    assert codes(out) == ["250 2.0.0"]


# -- the filter on its own -------------------------------------------------------------

# smtpcore.testing's content with bare CRs and LFs, NULs and lines over the limit.
text = sst.message_contents(smuggling=True, over_limit=True)


@given(text, st.data())
def test_chunk_boundaries_never_change_the_verdict(content: bytes, data: st.DataObject) -> None:
    whole = ContentFilter(max_line_length=1000)
    whole.feed(content)
    whole.end()
    pieces = ContentFilter(max_line_length=1000)
    for piece in data.draw(sst.chunkings(content)):
        pieces.feed(piece)
    pieces.end()
    flags = ("bad_line_ending", "nul", "line_too_long")
    assert [getattr(whole, f) for f in flags] == [getattr(pieces, f) for f in flags]


@given(text, st.lists(st.integers(0, 200), max_size=5))
def test_normalized_content_holds_crlf_only(content: bytes, cuts: list[int]) -> None:
    content_filter = ContentFilter(FramingPolicy.normalizing())
    points = sorted({min(cut, len(content)) for cut in cuts} | {0, len(content)})
    out = b"".join(
        content_filter.feed(content[start:stop]) for start, stop in itertools.pairwise(points)
    )
    out += content_filter.end()
    rest = out.replace(b"\r\n", b"")
    assert b"\r" not in rest and b"\n" not in rest
    assert out.replace(b"\r\n", b"\n") == content.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def only_crlf_reference(content: bytes) -> bool:
    """The plain definition, octet by octet: each CR has an LF after it, each LF a CR
    before it (a CR at the very end has none)."""
    for index, octet in enumerate(content):
        if octet == 13 and content[index + 1 : index + 2] != b"\n":
            return False
        if octet == 10 and (index == 0 or content[index - 1] != 13):
            return False
    return True


# Narrow on purpose: CR, LF and their neighbours packed densely, for the line-ending scan.
endings_text = st.one_of(
    text,
    st.lists(
        st.sampled_from(
            [b"\r", b"\n", b"\r\n", b"\n\r", b"a", b"\x00", b"\x0b", b"\x0c", b"\xff"]
        ),
        max_size=30,
    ).map(b"".join),
    st.binary(max_size=60),
)


@given(st.lists(endings_text, min_size=1, max_size=4))
def test_the_line_ending_scan_agrees_with_the_plain_definition(chunks: list[bytes]) -> None:
    """The C-level scan (the strict policy's fast path, the client's content of one
    piece) says what the octet-by-octet definition says, chunk after chunk with the
    same scanner and with a scanner made for each chunk."""
    scan = LineEndings()
    for chunk in chunks:
        assert scan.only_crlf(chunk) == only_crlf_reference(chunk)
        assert crlf_only(chunk) == only_crlf_reference(chunk)  # a decoder of its own


@given(endings_text, st.lists(st.integers(0, 200), max_size=5))
def test_the_strict_filter_finds_a_bare_cr_or_lf_wherever_the_cuts_fall(
    content: bytes, cuts: list[int]
) -> None:
    content_filter = ContentFilter(FramingPolicy.strict())
    points = sorted({min(cut, len(content)) for cut in cuts} | {0, len(content)})
    for start, stop in itertools.pairwise(points):
        assert content_filter.feed(content[start:stop]) == content[start:stop]
    assert content_filter.end() == b""
    assert content_filter.bad_line_ending is not only_crlf_reference(content)


@given(
    endings_text,
    st.sampled_from(
        [
            FramingPolicy.strict(),
            FramingPolicy.lenient(),
            FramingPolicy.normalizing(),
            FramingPolicy(bare_cr_in_content=True),
            FramingPolicy(nul_in_content=True),
        ]
    ),
    st.sampled_from([None, 1000, 20, 2]),
)
def test_the_whole_content_check_agrees_with_the_filter(
    content: bytes, policy: FramingPolicy, limit: int | None
) -> None:
    """passes_whole says yes only where a filter passes the content on unchanged and
    flags nothing, and under the strict policy exactly there."""
    content += b"\r\n"
    content_filter = ContentFilter(policy, max_line_length=limit)
    unchanged = content_filter.feed(content) + content_filter.end() == content
    passes = unchanged and not content_filter.refused
    if policy == FramingPolicy.strict():
        assert passes_whole(content, policy, limit) is passes
    elif passes_whole(content, policy, limit):
        assert passes


def test_machine_pauses_for_a_bdat_answer() -> None:
    conn = greeted()
    run(conn, ENVELOPE)
    conn.receive_data(b"BDAT 3\r\na\nb")
    assert isinstance(conn.next_event(), Bdat)
    assert conn.next_event() is PAUSED  # the refusal waits for LAST
    conn.send(Reply(250, "ok"))
    assert conn.next_event() is NEED_DATA


MIXED_FAULTS = [
    b"\x00\n.\n\r\nrest\r\n",  # NUL first, then bare LFs
    b"bare\nthen \x00\r\n",  # bare LF first, then NUL
    b"x" * 1001 + b"\r\n\x00\r\n",  # a long line, then NUL
]


@pytest.mark.parametrize("content", MIXED_FAULTS)
@pytest.mark.parametrize("carrier", ["DATA", "BDAT"])
def test_the_refusal_names_the_same_reason_however_the_message_is_cut(
    content: bytes, carrier: str
) -> None:
    """The reason is judged on the whole message, not on the first chunk that broke a rule."""
    wire = (data(content) if carrier == "DATA" else bdat(content)) + b"NOOP\r\n"
    expected = codes(send(greeted(), carrier, wire)[1])[-2:]
    for cut in range(1, len(wire)):
        conn = greeted()
        events, out = send(conn, carrier, wire[:cut])
        more_events, more_out = run(conn, wire[cut:])
        assert codes(out + more_out)[-2:] == expected, cut
        assert isinstance((events + more_events)[-2], RejectedMessage)
