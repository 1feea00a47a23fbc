"""Hostile numbers: what a peer writes where SMTP or POP3 wants a number.

Every number on the wire is ``1*DIGIT`` with ``DIGIT = %x30-39`` (RFC 5234
appendix B.1): SIZE (RFC 1870 §4), BDAT's chunk size (RFC 3030 §2), POP3's
message numbers and TOP's line count (RFC 1939 §5, §7). One strategy feeds
every slot of every hostile strategy, so that a kind of number found to break
one parser is tried on all of them. Its kinds:

- malformed (:func:`malformed_numbers`), never a number: signed (``-1``,
  ``-0``, ``+1``), digits of other scripts (superscript two, Arabic-Indic,
  fullwidth, NKo) alone or among ASCII ones, trailing garbage (``1x``,
  ``1.5``, ``1_2``, which Python's ``int()`` reads as 12) and digit runs
  longer than the slot allows;
- edges (:func:`edge_numbers`), numbers a reader must bound: ``0``, ``00``,
  the 32- and 64-bit limits, a run of exactly the most digits allowed and
  runs up to it;
- spaced (:func:`spaced_numbers`): the empty argument, whitespace around a
  number or inside it (``1 2`` is two arguments).
"""

from __future__ import annotations

from typing import Final

from hypothesis import strategies as st

__all__ = [
    "NON_ASCII_DIGITS",
    "edge_numbers",
    "hostile_numbers",
    "malformed_numbers",
    "spaced_numbers",
]

NON_ASCII_DIGITS: Final = (
    "\u0663",
    "\u0966",
    "\uff11",
    "\U0001d7d9",
    "\u00b2",
    "\u00b3",
    "\u2460",
    "\u2474",
    "\u2070",
    "\u1369",
    "\u0661",
    "\u07c1",
)
"""Characters ``str.isdigit()`` accepts that are not ASCII digits: some of them
decimal digits that ``int()`` reads as numbers (Arabic-Indic, Devanagari,
fullwidth, a mathematical one, NKo), the others digits that ``int()`` refuses
with ``ValueError`` (superscript two and three, circled one, parenthesized one,
superscript zero, Ethiopic one): a parser that trusts ``isdigit()`` takes the
first kind for a number and crashes on the second."""

_SIGNED: Final = ("-1", "-0", "+1", "+0", "--1", "-", "+")
_GARBAGE: Final = ("1x", "1.5", "1.", "0x10", "1e3", "1_2", "1,2", "1/2", "inf", "NaN", "x")
_SPACED: Final = ("", " ", " 1", "1 ", "\t1", "1\t", "1 2", "1\t2", "1\u00a0", "\u20031")

_ASCII_DIGITS: Final = st.integers(0, 10**6).map(str)


def _digit_run(min_digits: int, max_digits: int) -> st.SearchStrategy[str]:
    """ASCII digits, ``min_digits`` to ``max_digits`` of them, the first not 0."""
    return st.integers(min_digits, max_digits).map(lambda length: "9" * length)


def _non_ascii_digits() -> st.SearchStrategy[str]:
    """Other scripts' digits, alone, as a run, or one among ASCII digits."""
    other = st.sampled_from(NON_ASCII_DIGITS)
    return st.one_of(
        other,
        st.text(
            st.characters(categories=["Nd"], exclude_characters="0123456789"),
            min_size=1,
            max_size=4,
        ),
        st.builds(
            lambda head, digit, tail: f"{head}{digit}{tail}", _ASCII_DIGITS, other, _ASCII_DIGITS
        ),
    )


def malformed_numbers(*, max_digits: int) -> st.SearchStrategy[str]:
    """Text that is no number in a slot of at most ``max_digits`` digits, and holds
    no space: signed, other scripts' digits, trailing garbage, too many digits.
    A reader must refuse each (RFC 5234 appendix B.1)."""
    return st.one_of(
        st.sampled_from(_SIGNED),
        st.builds(lambda sign, digits: sign + digits, st.sampled_from("-+"), _ASCII_DIGITS),
        _non_ascii_digits(),
        st.sampled_from(_GARBAGE),
        st.builds(lambda digits, tail: digits + tail, _ASCII_DIGITS, st.sampled_from(_GARBAGE)),
        _digit_run(max_digits + 1, max_digits + 300),
    )


def edge_numbers(*, max_digits: int) -> st.SearchStrategy[str]:
    """Numbers a reader must bound: zero and zeros, the 32- and 64-bit limits (some
    fit the slot, some do not), exactly ``max_digits`` digits, and runs of any
    length up to it: where the slot is as wide as the room left on a line, those
    are too long for the reader's number yet short enough for its line limit."""
    limits = [str(2**bits + step) for bits in (31, 32, 63, 64) for step in (-1, 0)]
    return st.one_of(
        st.sampled_from(["0", "00", "000", "01", *limits]),
        _digit_run(max_digits, max_digits),
        _digit_run(1, max_digits),
    )


def spaced_numbers() -> st.SearchStrategy[str]:
    """The empty argument and whitespace around or inside a number, ASCII or not."""
    return st.sampled_from(_SPACED)


def hostile_numbers(*, max_digits: int) -> st.SearchStrategy[str]:
    """Every kind of hostile number: malformed, edges and spaced, for a slot of at
    most ``max_digits`` digits."""
    return st.one_of(
        malformed_numbers(max_digits=max_digits),
        edge_numbers(max_digits=max_digits),
        spaced_numbers(),
    )
