"""SASLprep (RFC 4013) beyond the RFC's own examples."""

from __future__ import annotations

import stringprep

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore.sasl import saslprep


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("pass word", "pass word"),  # ASCII space is kept
        ("a\u00a0b", "a b"),  # NO-BREAK SPACE mapped to SPACE
        ("a\u3000b", "a b"),  # IDEOGRAPHIC SPACE too
        ("a\u200bb", "ab"),  # ZERO WIDTH SPACE mapped to nothing (B.1)
        ("e\u0301", "\u00e9"),  # composed by NFKC
        ("\ufb01", "fi"),  # compatibility ligature
        ("\u0627\u0628", "\u0627\u0628"),  # all right-to-left is fine
    ],
)
def test_mapping_and_normalization(text: str, expected: str) -> None:
    assert saslprep(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a\x7fb",  # ASCII control (C.2.1)
        "a\u0085b",  # non-ASCII control (C.2.2)
        "\ue000",  # private use (C.3)
        "\ufdd0",  # non-character (C.4)
        "\ufff9",  # inappropriate for plain text (C.6)
        "\u2ff0",  # inappropriate for canonical representation (C.7)
        "a\u200eb",  # LEFT-TO-RIGHT MARK (C.8)
        "\U000e0001",  # tagging (C.9)
        "\u0627a\u0628",  # right-to-left mixed with left-to-right
        "1\u0627",  # right-to-left text must start right-to-left
        "\u0221",  # unassigned in Unicode 3.2
    ],
)
def test_prohibited(text: str) -> None:
    with pytest.raises(ValueError):
        saslprep(text)


def test_unassigned_allowed_in_queries() -> None:
    assert saslprep("\u0221", allow_unassigned=True) == "\u0221"


@settings(max_examples=300)
@given(st.text(max_size=20), st.booleans())
def test_output_is_prepared(text: str, allow_unassigned: bool) -> None:
    try:
        prepared = saslprep(text, allow_unassigned=allow_unassigned)
    except ValueError:
        return
    assert saslprep(prepared, allow_unassigned=allow_unassigned) == prepared
    assert not any(stringprep.in_table_c21_c22(char) for char in prepared)
    assert not any(stringprep.in_table_b1(char) for char in prepared)
