"""Line framing and dot-stuffing, the primitives SMTP and POP3 share."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from python_calls import python_calls
from smtpcore._dotstuff import _MANY_DOTS, DotDecoder, DotEncoder, decode_whole
from smtpcore._lines import LINE_TOO_LONG, FramingPolicy, ReceiveBuffer, line_length_exceeded
from smtpcore.testing import strategies as sst


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def decode_all(
    wire: bytes, cuts: list[int], decoder: DotDecoder | None = None
) -> tuple[bytes, bool, bytes]:
    """Feed ``wire`` cut at ``cuts``; return (content, ended, bytes left after the end)."""
    return decode_pieces(split_at(wire, cuts), decoder)


def decode_pieces(
    pieces: list[bytes], decoder: DotDecoder | None = None, *, as_bytes: bool = False
) -> tuple[bytes, bool, bytes]:
    """Feed ``pieces``; return (content, ended, bytes left after the end). The bytes
    wait in a ``bytearray`` cut in place, as a machine's receive buffer does, or
    with ``as_bytes`` in ``bytes``, each offered whole with what is left."""
    decoder = decoder or DotDecoder()
    buf: bytes | bytearray = b"" if as_bytes else bytearray()
    out: list[bytes] = []
    for index, piece in enumerate(pieces):
        buf += piece
        while True:
            data, consumed, ended = decoder.decode(buf)
            if isinstance(buf, bytearray):
                del buf[:consumed]
            else:
                buf = buf[consumed:]
            out.append(data)
            if ended:
                return b"".join(out), True, bytes(buf) + b"".join(pieces[index + 1 :])
            if not consumed:
                break
    return b"".join(out), False, bytes(buf)


def reference_unstuff(wire: bytes) -> tuple[bytes, bool]:
    """A per-line reference reading of RFC 5321 §4.5.2."""
    lines = wire.split(b"\r\n")
    out: list[bytes] = []
    for line in lines[:-1]:
        if line == b".":
            return b"".join(out), True
        out.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
    return b"".join(out), False


def encode_all(content: bytes, cuts: list[int], *, normalize: bool = True) -> bytes:
    return encode_pieces(split_at(content, cuts), normalize=normalize)


def encode_pieces(pieces: list[bytes], *, normalize: bool = True) -> bytes:
    encoder = DotEncoder(normalize=normalize)
    return b"".join(encoder.encode(piece) for piece in pieces) + encoder.end()


# smtpcore.testing's content: CRLF lines (dots, a lone ".", long and 8-bit lines),
# and with smuggling=True bare CRs and LFs, NULs and the end-of-data look-alikes.
crlf_text = sst.message_contents()
any_text = sst.message_contents(smuggling=True)


@given(any_text, st.data())
def test_encode_then_decode_is_identity_up_to_line_endings(
    content: bytes, data: st.DataObject
) -> None:
    wire = encode_pieces(data.draw(sst.chunkings(content)))
    decoded, ended, rest = decode_pieces(data.draw(sst.chunkings(wire)))
    assert ended and rest == b""
    normalized = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if normalized and not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    assert decoded == normalized


@given(crlf_text, st.data())
def test_encoding_without_normalizing_keeps_crlf_content(
    content: bytes, data: st.DataObject
) -> None:
    wire = encode_pieces(data.draw(sst.chunkings(content)), normalize=False)
    decoded, ended, _ = decode_pieces(data.draw(sst.chunkings(wire)))
    expected = content if not content or content.endswith(b"\r\n") else content + b"\r\n"
    assert ended and decoded == expected


@pytest.mark.parametrize(
    ("content", "calls"),
    [(b"Subject: x\n\n.dot\nbody\n", 3), (b"Subject: x\r\n\r\n.dot\r\nbody\r\n", 4)],
)
def test_an_encoder_costs_a_message_few_python_calls(content: bytes, calls: int) -> None:
    """A message of one chunk costs its encoder's making, ``encode`` and ``end``, and
    for content with a CR the check that it is CRLF only: the newline decoder is made
    for the chunk, not kept in the encoder (a Python call more a message, issue 17)."""
    with python_calls() as counted:
        encoder = DotEncoder()
        wire = encoder.encode(content) + encoder.end()
    assert wire == b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\n"
    assert len(counted) == calls, counted


@given(any_text, st.data())
def test_decoder_matches_the_per_line_reference(wire: bytes, data: st.DataObject) -> None:
    wire += b"\r\n.\r\nMORE"
    pieces = data.draw(sst.chunkings(wire))
    decoded, ended, rest = decode_pieces(pieces, DotDecoder(FramingPolicy.lenient()))
    expected, expected_end = reference_unstuff(wire)
    assert (decoded, ended) == (expected, expected_end)
    assert ended and rest.endswith(b"MORE")


@given(any_text, st.data())
def test_decoder_reads_bytes_as_it_reads_a_bytearray(wire: bytes, data: st.DataObject) -> None:
    """The decoder keeps what it returns apart from the buffer it was given: the same
    pieces fed as ``bytes`` and through a ``bytearray`` give the same content, end,
    rest and flags."""
    wire += b"\r\n.\r\nMORE"
    pieces = data.draw(sst.chunkings(wire))
    policy = data.draw(st.sampled_from([FramingPolicy.strict(), FramingPolicy.lenient()]))
    through_bytearray = DotDecoder(policy, max_line_length=80)
    expected = decode_pieces(pieces, through_bytearray)
    through_bytes = DotDecoder(policy, max_line_length=80)
    assert decode_pieces(pieces, through_bytes, as_bytes=True) == expected
    assert (through_bytes.bad_line_ending, through_bytes.line_too_long) == (
        through_bytearray.bad_line_ending,
        through_bytearray.line_too_long,
    )


@given(
    st.lists(st.text(alphabet="ab.\r\n\x00", min_size=1, max_size=5), min_size=40, max_size=140),
    st.sampled_from([FramingPolicy.strict(), FramingPolicy.lenient()]),
    st.booleans(),
)
def test_many_lines_to_unstuff_in_one_chunk(
    texts: list[str], policy: FramingPolicy, as_bytes: bool
) -> None:
    """Past ``_MANY_DOTS`` lines that start with a dot in one chunk, the rest of the
    chunk is unstuffed in C: the same content, end, rest and flags as a decoder fed
    a few octets at a time, which notes every dot (and the per-line reference)."""
    wire = b"\r\n".join(b"." + text.encode() for text in texts) + b"\r\n.\r\nMORE"
    assert wire.count(b"\r\n.") > _MANY_DOTS
    whole = DotDecoder(policy, max_line_length=8)
    few_at_a_time = DotDecoder(policy, max_line_length=8)
    decoded = decode_pieces([wire], whole, as_bytes=as_bytes)
    assert decoded == decode_all(wire, list(range(0, len(wire), 7)), few_at_a_time)
    assert decoded[:2] == reference_unstuff(wire)
    assert (whole.bad_line_ending, whole.line_too_long) == (
        few_at_a_time.bad_line_ending,
        few_at_a_time.line_too_long,
    )


@pytest.mark.parametrize(
    "smuggled",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"],
)
@pytest.mark.parametrize("policy", [FramingPolicy.strict(), FramingPolicy.lenient()])
def test_smuggling_sequences_never_end_content(smuggled: bytes, policy: FramingPolicy) -> None:
    wire = b"Subject: x\r\n\r\nhello" + smuggled + b"MAIL FROM:<evil@example.com>\r\n"
    for step in (1, 2, 3, len(wire)):
        decoded, ended, _ = decode_all(wire, list(range(0, len(wire), step)), DotDecoder(policy))
        assert not ended
        assert b"MAIL FROM" in decoded or len(decoded) < len(wire) - 4


@pytest.mark.parametrize(
    ("content", "bad"),
    [
        (b"ok\r\nfine\r\n", False),
        (b"bare\nlf\r\n", True),
        (b"bare\rcr\r\n", True),
        (b"a\rb\nc\r\n", True),
        (b"trailing\r", False),  # held back: may be half of a CRLF
    ],
)
def test_strict_policy_flags_bare_line_endings(content: bytes, bad: bool) -> None:
    decoder = DotDecoder(FramingPolicy.strict())
    decoder.decode(content)
    assert decoder.bad_line_ending is bad


def test_bare_line_ending_split_across_chunks_is_seen() -> None:
    decoded, ended, _ = decode_all(b"abc\r", [])
    decoder = DotDecoder()
    decode_all(b"abc\rdef\r\n.\r\n", [4], decoder)
    assert decoder.bad_line_ending
    assert not ended and decoded == b"abc"


@given(st.integers(1, 40), st.lists(st.integers(1, 60), min_size=1, max_size=30), st.data())
def test_line_length_check_matches_a_per_line_count(
    limit: int, lengths: list[int], data: st.DataObject
) -> None:
    content = b"".join(b"x" * (n - 1) + b"\n" for n in lengths)
    exceeded = False
    carried = 0
    for piece in data.draw(sst.chunkings(content)):
        hit, carried = line_length_exceeded(piece, limit, carried)
        exceeded = exceeded or hit
    assert exceeded == (max(lengths) > limit)


def test_line_length_counts_the_unfinished_line() -> None:
    assert line_length_exceeded(b"abc", 10, 0) == (False, 3)
    assert line_length_exceeded(b"a\nbcd", 10, 0) == (False, 3)
    assert line_length_exceeded(b"defg", 5, 3) == (True, 0)


def test_receive_buffer_returns_lines_and_bounds_long_ones() -> None:
    buf = ReceiveBuffer()
    buf.receive(b"HELO a\r\nNO")
    assert buf.next_line(512) == b"HELO a\r\n"
    assert buf.next_line(512) is None
    buf.receive(b"OP\r\n")
    assert buf.next_line(512) == b"NOOP\r\n"
    for _ in range(100):
        buf.receive(b"x" * 1000)
        assert buf.next_line(512) is None
        assert len(buf) <= 1000
    buf.receive(b"\r\nQUIT\r\n")
    assert buf.next_line(512) is LINE_TOO_LONG
    assert buf.next_line(512) == b"QUIT\r\n"


def test_line_exactly_at_the_limit_is_accepted() -> None:
    buf = ReceiveBuffer()
    buf.receive(b"x" * 510 + b"\r\n" + b"y" * 511 + b"\r\n")
    assert buf.next_line(512) == b"x" * 510 + b"\r\n"
    assert buf.next_line(512) is LINE_TOO_LONG


def test_encoder_stuffs_leading_dots_across_chunk_boundaries() -> None:
    assert encode_all(b".a\r\n.b\r\n", [1, 2, 5, 6]) == b"..a\r\n..b\r\n.\r\n"
    assert encode_all(b"a\r", [2]) == b"a\r\n.\r\n"
    assert encode_all(b"", []) == b".\r\n"
    assert encode_all(b"x\n.\n", [2]) == b"x\r\n..\r\n.\r\n"
    assert encode_all(b"a\r\n.b", [2, 3], normalize=False) == b"a\r\n..b\r\n.\r\n"


@pytest.mark.parametrize(
    ("wire", "content", "rest"),
    [
        (b"hi\r\n.\r\n.MAIL FROM:<a@b.example>\r\n", b"hi\r\n", b".MAIL FROM:<a@b.example>\r\n"),
        (b"\r\n.\r\n.", b"\r\n", b"."),
        (b".\r\n.\r\n", b"", b".\r\n"),
        (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n", b""),
    ],
)
def test_terminator_followed_by_a_dot_still_ends_the_content(
    wire: bytes, content: bytes, rest: bytes
) -> None:
    for step in (1, 2, len(wire)):
        decoded, ended, left = decode_all(wire, list(range(0, len(wire), step)))
        assert (decoded, ended, left) == (content, True, rest)


@given(any_text, st.data())
def test_strict_check_matches_a_regex_reference(content: bytes, data: st.DataObject) -> None:
    wire = content + b"\r\n.\r\n"
    # The content starts as if after a CRLF: ".\r\n" first is the terminator too.
    end = (b"\r\n" + wire).find(b"\r\n.\r\n")
    decoder = DotDecoder(FramingPolicy.strict())
    _, ended, _ = decode_pieces(data.draw(sst.chunkings(wire)), decoder)
    assert ended
    bare = re.search(rb"\r(?!\n)|(?<!\r)\n", wire[:end]) is not None
    assert decoder.bad_line_ending is bare


POLICIES = [
    FramingPolicy.strict(),
    FramingPolicy.lenient(),
    FramingPolicy.normalizing(),
    FramingPolicy(bare_lf_in_content=True),
    FramingPolicy(nul_in_content=True),
]


@given(
    any_text,
    st.sampled_from([b"", b"\r\n.\r\n", b"\r\n.\r\nMAIL FROM:<a@b.example>\r\n", b"\r\n"]),
    st.sampled_from(POLICIES),
    st.sampled_from([None, 1000, 20, 3]),
)
def test_whole_message_path_matches_the_decoder(
    content: bytes, end: bytes, policy: FramingPolicy, limit: int | None
) -> None:
    """decode_whole gives what a fresh decoder gives for the same bytes, or leaves them
    to it: the same content and end, and no breach of the policy."""
    wire = content + end
    whole = decode_whole(wire, policy, limit)
    if whole is None:
        return
    decoder = DotDecoder(policy, max_line_length=limit)
    data, consumed, ended = decoder.decode(wire)
    assert (whole, len(whole) + 3, True) == (data, consumed, ended)
    assert not decoder.content.refused


@given(sst.message_contents(), st.sampled_from([None, 1000, 78, 20]))
def test_whole_message_path_takes_every_plain_message(content: bytes, limit: int | None) -> None:
    """CRLF content that no line starts with a dot, within the limit, takes the whole
    message path under the strict policy (the everyday message)."""
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    assume(b"\r\n." not in b"\r\n" + content)  # no line to unstuff
    decoder = DotDecoder(max_line_length=limit)
    decoder.decode(content + b".\r\n")
    expected = content if content and not decoder.content.refused else None
    assert decode_whole(content + b".\r\nQUIT\r\n", FramingPolicy.strict(), limit) == expected
