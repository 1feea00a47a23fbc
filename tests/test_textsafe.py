"""One class of characters unsafe in text (RFC 5198 §2), shared by every path that
takes text from a peer: the reply parser, the address parser, the DSN parameters, the
reports and the log."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore._driver._logtext import loggable
from smtpcore._textsafe import first_unsafe, holds_unsafe, replace_unsafe, unsafe_in_text


def by_category(char: str) -> bool:
    """The class as RFC 5198 §2 and RFC 3461 §4.2 draw it, one character at a time."""
    if char in "\t\u200c\u200d":
        return False
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


@given(st.characters())
def test_the_class_is_controls_but_htab_format_and_separator_characters_but_joiners(
    char: str,
) -> None:
    assert unsafe_in_text(char) is by_category(char)


@pytest.mark.parametrize(
    "char", ["\x00", "\x1b", "\x7f", "\x85", "\x9b", "\u00ad", "\u2028", "\u2029", "\u202e"]
)
def test_controls_c1_separators_and_format_characters_are_unsafe(char: str) -> None:
    assert unsafe_in_text(char) and holds_unsafe(f"a{char}b")


@pytest.mark.parametrize("char", ["\t", " ", "a", "\xe9", "\u200c", "\u200d", "\u3000"])
def test_tab_spaces_letters_and_joiners_are_safe(char: str) -> None:
    assert not unsafe_in_text(char) and not holds_unsafe(f"a{char}b")


@given(st.text())
def test_the_first_unsafe_character_is_found_and_every_one_replaced(text: str) -> None:
    unsafe = [index for index, char in enumerate(text) if by_category(char)]
    assert first_unsafe(text) == (unsafe[0] if unsafe else None)
    replaced = replace_unsafe(text, lambda char: "?")
    assert not holds_unsafe(replaced) and len(replaced) == len(text)
    assert [i for i, char in enumerate(replaced) if char != text[i]] == unsafe


@given(st.text())
def test_a_log_line_holds_no_character_unsafe_in_text_nor_a_tab(text: str) -> None:
    logged = loggable(text)
    assert not holds_unsafe(logged) and "\t" not in logged
    assert logged.splitlines() in ([logged], [])
