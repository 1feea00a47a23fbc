"""The mechanism a ``Content-Transfer-Encoding`` field names (server/_encoding_field.py):
the email package's reading, which is what readers of a converted message go by, in
one pass."""

from __future__ import annotations

import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from python_calls import python_calls
from smtpcore.server._encoding_field import transfer_encoding


def _as_the_email_package_reads_it(value: bytes) -> str:
    text = value.decode("ascii", "replace")
    header = email.policy.default.header_factory("Content-Transfer-Encoding", text)
    return str(getattr(header, "cte", "7bit"))


_PIECES = st.sampled_from(
    [
        *(b"8bit", b"7BIT", b"base64", b"quoted-printable", b"x-y", b"a", b"(c)"),
        *(b" ", b"\t", b"(", b")", b"\\", b"\\(", b"\\)", b'"', b";", b"=", b"/", b"@"),
        *(b"\x0b", b"\x1f", b"\x00", b"\xe9"),
    ]
)
"""Tokens, comment marks, quoted pairs, tspecials, controls and 8-bit octets, whose
every order a value may hold."""


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, max_size=12).map(b"".join))
def test_the_mechanism_is_the_one_the_email_package_reads(value: bytes) -> None:
    assert transfer_encoding.__wrapped__(value) == _as_the_email_package_reads_it(value)


@pytest.mark.parametrize(
    ("value", "mechanism"),
    [
        (b"", "7bit"),
        (b" 8BIT ", "8bit"),
        (b"8bit (sent by Foo)", "8bit"),
        (b"( (a) \\) ) base64 (x", "base64"),
        (b"(a\\ (b) 8bit", "7bit"),  # the nested comment leaves the outer one open
        (b'"8bit"', "7bit"),
        (b"8bit;", "8bit"),
    ],
)
def test_comments_and_what_follows_the_token_are_not_the_mechanism(
    value: bytes, mechanism: str
) -> None:
    assert transfer_encoding.__wrapped__(value) == mechanism
    assert _as_the_email_package_reads_it(value) == mechanism


def _calls_to_read(comments: int) -> int:
    value = b"(" + b"(a)" * comments + b") 8bit"
    with python_calls() as calls:
        assert transfer_encoding.__wrapped__(value) == "8bit"
    return len(calls)


def test_nested_comments_are_read_in_one_pass() -> None:
    """The email package slices the value at each step of a comment: 8 KB of nested
    comments in each of a message's parts cost it seconds. Here the calls do not grow
    with them at all (a regular expression a comment mark)."""
    assert _calls_to_read(2000) == _calls_to_read(1000)


def test_comments_nested_deeper_than_python_recurses_are_read() -> None:
    """The email package reads a comment recursively, a level a ``(``, and raised
    RecursionError for 8,100 of them. Here they are read as it reads shallow ones: left
    open, the whole value is a comment (``7bit``); closed, the token after them counts."""
    open_comments = b"\r\n ".join([b"(" * 900] * 9)
    assert transfer_encoding.__wrapped__(open_comments + b" 8bit") == "7bit"
    assert _as_the_email_package_reads_it(b"(" * 50 + b" 8bit") == "7bit"
    closed = open_comments + b")" * 8100 + b" 8bit"
    assert transfer_encoding.__wrapped__(closed) == "8bit"
    assert _as_the_email_package_reads_it(b"(" * 50 + b")" * 50 + b" 8bit") == "8bit"
