"""xtext (RFC 3461 §4): how ENVID, ORCPT and AUTH= carry any text in a parameter."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, find, given
from hypothesis import strategies as st

from smtpcore.smtp import Parameters, decode_xtext, xtext
from smtpcore.smtp._dsn import DSNError, dsn_mail_problem, dsn_rcpt_problem, read_xtext
from smtpcore.testing.strategies import xtexts


def test_plus_equals_space_and_controls_are_hex_escaped() -> None:
    assert xtext("bob+tag@pqr.example") == "bob+2Btag@pqr.example"
    assert xtext("a=b c\r\n") == "a+3Db+20c+0D+0A"
    assert xtext("jörg@abc.example") == "j+C3+B6rg@abc.example"  # UTF-8 octets
    assert decode_xtext("j+C3+B6rg@abc.example") == "jörg@abc.example"


def test_decoding_tolerates_lower_case_hex_and_bad_utf8() -> None:
    assert decode_xtext("a+2bb") == "a+b"
    assert decode_xtext("+FF") == "\ufffd"


@given(xtexts(hostile=True))
@example("+41")  # an escape of a character that needs none: still xtext
@example("a+40b")
@example("+3C+3E")
def test_the_strict_reader_takes_what_the_grammar_takes_and_nothing_else(value: str) -> None:
    """RFC 3461 §4: ``xchar`` and ``"+" 2(%x30-39 / %x41-46)``. :func:`read_xtext`, the
    reader of ENVID, ORCPT and AUTH=, refuses the rest (lower-case or short hex, a lone
    "+", "=", octets that are not UTF-8). Where it reads, the lenient decoder agrees, and
    the text written again (:func:`xtext`, which escapes only what must be) reads back
    to the same text, though it need not be the value sent: ``+41`` is xtext for "A"."""
    grammatical = re.fullmatch(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+", value) is not None
    try:
        text = read_xtext(value, "X")
    except DSNError:
        assert not grammatical or "\ufffd" in decode_xtext(value)
    else:
        assert grammatical
        assert text == decode_xtext(value)
        assert read_xtext(xtext(text), "X") == text


def test_some_drawn_xtexts_escape_characters_that_need_none() -> None:
    """xtext may escape any octet (RFC 3461 §4), ``+41`` for "A": the strategy draws
    such values, so that a property cannot take the canonical form for the only one."""
    drawn = find(xtexts(), lambda value: xtext(decode_xtext(value)) != value)
    assert decode_xtext(xtext(decode_xtext(drawn))) == decode_xtext(drawn)


@pytest.mark.parametrize(
    ("problem", "text"),
    [
        (dsn_mail_problem("ENVID", "a=b"), "ENVID must be xtext of at most 100 characters"),
        (dsn_mail_problem("ENVID", "a+2b"), "ENVID must be xtext of at most 100 characters"),
        (dsn_rcpt_problem("ORCPT", "rfc822;a=b"), "ORCPT must be addr-type;xtext"),
        (dsn_rcpt_problem("ORCPT", "rfc822;+ZZ"), "ORCPT must be addr-type;xtext"),
    ],
)
def test_malformed_envid_and_orcpt_are_refused_in_the_words_they_were(
    problem: str | None, text: str
) -> None:
    """One xtext reader for ENVID, ORCPT and AUTH=, each refusal in its own words:
    ENVID's says its 100-character limit (RFC 3461 §4.4)."""
    assert problem == text


@given(st.text(max_size=80))
def test_any_text_survives_a_round_trip_and_makes_a_valid_parameter(text: str) -> None:
    encoded = xtext(text)
    assert decode_xtext(encoded) == text
    if encoded:
        Parameters({"ENVID": encoded})  # no character a parameter may not hold
        # RFC 3461 §4.2, §4.4: printable once decoded: no control character but HTAB,
        # no format character but ZWNJ and ZWJ, no line or paragraph separator.
        control = any(
            unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") and char not in "\t\u200c\u200d"
            for char in text
        )
        if len(encoded) <= 100:
            problem = dsn_mail_problem("ENVID", encoded)
            assert (problem is not None and "format or separator character" in problem) is control
            assert problem is None or control
        if len(encoded) <= 490:
            problem = dsn_rcpt_problem("ORCPT", "rfc822;" + encoded)
            assert (problem is not None and "format or separator character" in problem) is control
            assert problem is None or control
