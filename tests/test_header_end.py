"""The one rule for where a header ends (``smtpcore._header_end``), shared by the
UTF-8 scan, the RFC 6858 surrogate and the SMTP envelope: the wire's line ends (CR
LF, CR alone, LF alone, in any mix), so that no body line is ever taken for header."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from smtpcore import pop3
from smtpcore._driver._smtp_envelope_header import header_lines
from smtpcore._header_end import HeaderEndScan, header_end

LINE_ENDS = st.sampled_from([b"\r\n", b"\r", b"\n"])


def _reference(message: bytes) -> int:
    """The header's octets, line by line as the wire reads them: it ends before the
    first line that is neither a field nor a fold (the first line folds nothing)."""
    at = 0
    while at < len(message):
        line_end = min(
            (i for i in (message.find(b"\r", at), message.find(b"\n", at)) if i >= 0),
            default=len(message),
        )
        line = message[at:line_end]
        folds = at > 0 and line[:1] in (b" ", b"\t")
        if not folds and re.fullmatch(rb"[!-9;-~]+[ \t]*:.*", line, re.DOTALL) is None:
            return at
        at = line_end + (2 if message[line_end : line_end + 2] == b"\r\n" else 1)
    return len(message)


@given(
    st.lists(
        st.tuples(
            st.lists(
                st.sampled_from([b"a", b"X-y", b":", b" ", b"\t", b"\xc3\xbc", b"."]), max_size=5
            ).map(b"".join),
            LINE_ENDS,
        ),
        max_size=8,
    ),
    st.binary(max_size=6),
)
def test_the_header_ends_before_the_first_line_neither_field_nor_fold(
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
    (b"Subject: a\r\nbody", 12),
    (b"Subject: a\r\n folded\r\nbody: b\r\nnot a field\r\n", 30),
    (b"Subject: a\r\nX :b\r\nX y: c\r\n", 18),
    (b" folds nothing: a\r\n", 0),
    (b"no field\r\nSubject: a\r\n", 0),
    (b"\rbody", 0),
    (b"\nbody", 0),
]


def test_cases() -> None:
    for message, size in CASES:
        assert header_end(message) == size, message


@given(
    message=st.lists(
        st.sampled_from([b"a", b"\xc3\xbc", b": ", b" ", b"\r", b"\n", b"\r\n"]), max_size=30
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
    else:  # stopped at octets that are not UTF-8: the end does not matter
        assert not scan.needs_utf8 and not message.isascii()


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


def test_a_header_with_no_empty_line_after_it_keeps_every_body_line() -> None:
    """A script's mail: the first line that is no field is the body's (as for
    :mod:`email`'s parser and Postfix), and goes as stored, UTF-8 and all."""
    stored = "Subject: grüße\r\nFrom: a@b.example\r\nHallo Jörg,\r\nTschüß\r\n".encode()
    body = "Hallo Jörg,\r\nTschüß\r\n".encode()
    assert pop3.ascii_surrogate(stored).endswith(b"From: a@b.example\r\n" + body)
    scan = pop3.HeaderScan()
    for octet in range(len(stored)):
        scan.feed(stored[octet : octet + 1])
    assert scan.header_size == len(stored) - len(body)


def test_a_last_line_with_no_colon_is_body_at_the_message_end() -> None:
    stored = "Subject: é\r\nTschüß".encode()
    scan = pop3.HeaderScan()
    scan.feed(stored)
    scan.end()
    assert scan.header_size == header_end(stored) == len("Subject: é\r\n".encode())
    assert pop3.ascii_surrogate(stored).endswith("\r\nTschüß".encode())


@given(
    message=st.lists(
        st.sampled_from([b"a", b"-", b":", b" ", b"\t", b"\r", b"\n", b"\xc3\xa9"]), max_size=24
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=24), max_size=5),
)
def test_the_chunked_rule_is_the_whole_message_rule(message: bytes, cuts: list[int]) -> None:
    scan, at = HeaderEndScan(), 0
    found = None
    for cut in [*sorted(cuts), len(message)]:
        found = scan.feed(message[at:cut]) if cut >= at else None
        at = max(at, cut)
        if found is not None:
            break
    assert (scan.end() if found is None else found) == header_end(message)
