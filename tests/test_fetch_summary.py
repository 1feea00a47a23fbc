"""``fetch``'s summary line of a message: RFC 6532 UTF-8 header fields read as UTF-8,
RFC 2047 words decoded, and what a peer wrote never printed raw."""

from __future__ import annotations

import pytest

from smtpcore.server._fetch_summary import _summary


def test_raw_utf8_fields_print_as_their_characters() -> None:
    """RFC 6532 §3: SMTPUTF8 mail holds UTF-8 in its fields; before, each of its
    octets printed as U+FFFD (``j��rg``)."""
    head = "From: Jörg <jörg@bücher.example>\r\nSubject: grüße\r\n\r\n".encode()
    assert _summary(1, 10, head) == '1: 10 octets, from Jörg <jörg@bücher.example>: "grüße"'


def test_rfc2047_words_beside_raw_utf8_are_decoded() -> None:
    head = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?= aus Köln\r\n\r\n".encode()
    assert _summary(2, 10, head).endswith(': "grüße aus Köln"')


def test_octets_that_are_not_utf8_print_as_replacement_characters() -> None:
    head = b"From: \xff<a@b.example>\r\nSubject: \xe2\x80\r\n\r\n"
    assert _summary(3, 10, head) == '3: 10 octets, from \ufffd<a@b.example>: "\ufffd"'


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31m", "\\x1b[31m"),
        ("\u202e", "\\u202e"),
        ("\u0085", "\\x85"),
        ("\u2028", "\\u2028"),
    ],
)
def test_controls_in_utf8_fields_stay_escaped(raw: str, shown: str) -> None:
    """Read as UTF-8, a field can now carry a terminal escape, a bidi control, NEL
    or U+2028 as a character: each is printed escaped, as in a 2047 word."""
    head = f"Subject: a{raw}b\r\n\r\n".encode()
    assert _summary(4, 10, head).endswith(f': "a{shown}b"')


def test_a_line_separator_in_a_field_does_not_start_a_field() -> None:
    """The header is split at CR and LF only: a U+2028 in the Subject brings no From."""
    head = "Subject: x\u2028From: evil\r\nFrom: real@b.example\r\n\r\n".encode()
    assert _summary(5, 10, head) == '5: 10 octets, from real@b.example: "x\\u2028From: evil"'


def test_a_folded_field_is_unfolded() -> None:
    head = "Subject: grüße\r\n aus Köln\r\n\r\n".encode()
    assert _summary(6, 10, head).endswith(': "grüße aus Köln"')


@pytest.mark.parametrize("text", ["C:\\u00e9 path", "C:\\users\\u12 dir"])
def test_text_beside_rfc2047_words_is_left_as_it_came(text: str) -> None:
    """The text around the words went through ``raw-unicode-escape``: ``C:\\u00e9``
    printed as ``C:é``, and ``C:\\users\\u12`` left the whole field undecoded."""
    head = f"Subject: =?utf-8?q?x?= {text} =?utf-8?q?y?= =?utf-8?q?z?=\r\n\r\n".encode()
    assert _summary(1, 10, head).endswith(f'"x {text} yz"')
