"""The one rule for where a header ends (``smtpcore._header_end``), shared by the
UTF-8 scan, the RFC 6858 surrogate and the SMTP envelope: the wire's line ends (CR
LF, CR alone, LF alone, in any mix), so that no body line is ever taken for header."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smtpcore import pop3
from smtpcore._driver._smtp_envelope import header_lines
from smtpcore._header_end import header_end

LINE_ENDS = st.sampled_from([b"\r\n", b"\r", b"\n"])


def _reference(message: bytes) -> int:
    """The header's octets, line by line as the wire reads them."""
    at = 0
    while at < len(message):
        line_end = min(
            (i for i in (message.find(b"\r", at), message.find(b"\n", at)) if i >= 0), default=-1
        )
        if line_end < 0:
            return len(message)
        if line_end == at:  # an empty line
            return at
        at = line_end + (2 if message[line_end : line_end + 2] == b"\r\n" else 1)
    return len(message)


@given(
    st.lists(
        st.tuples(
            st.binary(max_size=6).filter(lambda b: b"\r" not in b and b"\n" not in b), LINE_ENDS
        ),
        max_size=8,
    ),
    st.binary(max_size=6),
)
def test_the_header_ends_at_the_first_empty_line_the_wire_reads(
    lines: list[tuple[bytes, bytes]], rest: bytes
) -> None:
    message = b"".join(text + end for text, end in lines) + rest
    assert header_end(message) == _reference(message)


CASES = [
    (b"Subject: a\r\rbody\r", 11),
    (b"Subject: a\n\rbody", 11),
    (b"Subject: a\r\n\rbody", 12),
    (b"Subject: a\r\n\nbody", 12),
    (b"Subject: a\r\nX: b\r\n\r\nbody", 18),
    (b"Subject: a\r\nbody", 16),
    (b"\rbody", 0),
    (b"\nbody", 0),
]


def test_cases() -> None:
    for message, size in CASES:
        assert header_end(message) == size, message


@given(
    message=st.lists(
        st.sampled_from([b"a", b"\xc3\xbc", b": ", b"\r", b"\n", b"\r\n"]), max_size=30
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=1, max_value=5), max_size=30),
)
def test_the_scan_finds_the_same_end_whatever_the_chunks(message: bytes, cuts: list[int]) -> None:
    chunks, at = [], 0
    for cut in cuts:
        chunks.append(message[at : at + cut])
        at += cut
    chunks.append(message[at:])
    scan = pop3.HeaderScan()
    for chunk in chunks:
        if scan.feed(chunk):
            break
    scan.end()
    if scan.header_size is not None:
        assert scan.header_size == header_end(message)
    elif not scan.needs_utf8 and scan.done and not message.isascii():
        pass  # stopped at octets that are not UTF-8: the end does not matter
    else:
        assert header_end(message) == len(message)


def test_the_envelope_reads_the_same_header() -> None:
    assert header_lines(b"To: a@b.example\rBcc: c@d.example\r\rBcc: body@x.example\r") == [
        b"To: a@b.example\r",
        b"Bcc: c@d.example\r",
    ]


def test_a_cr_only_message_keeps_its_body_when_downgraded() -> None:
    """A store whose line ends are CR alone: the surrogate rewrites the header and
    leaves every body line, colons and all, as stored."""
    stored = "Subject: é\rFrom: a@b.example\r\rbody line one\rbody: two ü\r".encode()
    assert pop3.ascii_surrogate(stored) == (
        b"Subject: =?utf-8?b?w6k=?=\r\nFrom: a@b.example\r\r"
        + "body line one\rbody: two ü\r".encode()
    )
