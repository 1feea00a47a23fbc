"""The two classes of characters unsafe in text, stated by the code points and Unicode
categories of their sources: UNSAFE_IN_TEXT (RFC 5198 §2, RFC 3461 §4.2), which the
reply parsers, DSN parameters, reports and logs use, and the narrower
FORBIDDEN_IN_ADDRESSES, which the address parser uses."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore._driver._logtext import loggable
from smtpcore._textsafe import (
    FORBIDDEN_IN_ADDRESSES,
    first_unsafe,
    holds_unsafe,
    replace_unsafe,
    unsafe_in_text,
)

# UNSAFE_IN_TEXT, by the sources' own terms: RFC 5198 §2's controls (C0 but HTAB, DEL,
# C1), the Unicode categories RFC 3461 §4.2's "printable" leaves out (Cf format, Zl line
# and Zp paragraph separators), ZWNJ and ZWJ aside (RFC 5892 appendix A.1, A.2).
_CONTROLS = [chr(c) for c in [*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]]
_JOINERS = ["\u200c", "\u200d"]


@pytest.mark.parametrize("char", _CONTROLS)
def test_every_control_but_htab_is_unsafe_in_text(char: str) -> None:
    assert unsafe_in_text(char) and holds_unsafe(f"a{char}b")


@given(st.characters(categories=["Cf", "Zl", "Zp"]).filter(lambda c: c not in _JOINERS))
def test_every_format_and_separator_character_but_the_joiners_is_unsafe_in_text(
    char: str,
) -> None:
    assert unsafe_in_text(char) and holds_unsafe(f"a{char}b")


@given(st.characters(exclude_categories=["Cc", "Cf", "Zl", "Zp"]))
def test_letters_marks_spaces_and_symbols_are_safe_in_text(char: str) -> None:
    assert not unsafe_in_text(char)


@pytest.mark.parametrize("char", ["\t", " ", "a", "\xe9", "\u3000", "\ufe0f", *_JOINERS])
def test_tab_spaces_letters_variation_selectors_and_joiners_are_safe(char: str) -> None:
    assert not unsafe_in_text(char) and not holds_unsafe(f"a{char}b")


# FORBIDDEN_IN_ADDRESSES, by explicit code points: RFC 5198 §2's controls (HTAB too, and
# NEL), the separators U+2028 and U+2029, and UAX #9's embeddings, overrides (§2.2) and
# isolates (§2.1); the project's policy beyond RFC 6531 §3.3 (docs/address.rst).
_FORBIDDEN_IN_ADDRESSES = frozenset(
    [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]]
    + ["\u2028", "\u2029"]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
)
_BIDI_EMBEDDINGS_OVERRIDES_ISOLATES = {
    "LRE",
    "RLE",
    "PDF",
    "LRO",
    "RLO",
    "LRI",
    "RLI",
    "FSI",
    "PDI",
}


@given(st.characters())
def test_an_address_may_hold_anything_but_controls_separators_and_bidi_overrides(
    char: str,
) -> None:
    assert (FORBIDDEN_IN_ADDRESSES.search(char) is not None) is (char in _FORBIDDEN_IN_ADDRESSES)


@given(st.characters(min_codepoint=0xA0))
def test_the_non_control_part_of_the_address_class_is_uax9s_explicit_formatting(
    char: str,
) -> None:
    """Past the controls, exactly the separators and the characters whose bidi class is
    an embedding, override or isolate (UAX #9 §2.1, §2.2): not the marks (§2.6)."""
    explicit = unicodedata.bidirectional(char) in _BIDI_EMBEDDINGS_OVERRIDES_ISOLATES
    separator = unicodedata.category(char) in ("Zl", "Zp")
    assert (FORBIDDEN_IN_ADDRESSES.search(char) is not None) is (explicit or separator)


@pytest.mark.parametrize("mark", ["\u061c", "\u200e", "\u200f"])
def test_the_bidi_marks_are_unsafe_in_text_but_not_forbidden_in_addresses(mark: str) -> None:
    assert unsafe_in_text(mark) and FORBIDDEN_IN_ADDRESSES.search(mark) is None


@given(st.text())
def test_the_first_unsafe_character_is_found_and_every_one_replaced(text: str) -> None:
    unsafe = [index for index, char in enumerate(text) if unsafe_in_text(char)]
    assert first_unsafe(text) == (unsafe[0] if unsafe else None)
    replaced = replace_unsafe(text, lambda char: "?")
    assert not holds_unsafe(replaced) and len(replaced) == len(text)
    assert [i for i, char in enumerate(replaced) if char != text[i]] == unsafe


@given(st.text())
def test_a_log_line_holds_no_character_unsafe_in_text_nor_a_tab(text: str) -> None:
    logged = loggable(text)
    assert not holds_unsafe(logged) and "\t" not in logged
    assert logged.splitlines() in ([logged], [])
