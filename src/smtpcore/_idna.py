"""A non-ASCII domain label (a U-label) to its A-label (``xn--``), or the reason it has none.

The standard library implements IDNA 2003 (``encodings.idna``: RFC 3490, nameprep RFC
3491, on :mod:`stringprep`'s Unicode 3.2 tables), not IDNA 2008 (RFC 5890-5892), which
SMTPUTF8 (RFC 6531) relies on. Where the two would name different domains, a label is
refused rather than converted, so that a look-alike spelling never silently becomes
another domain:

- a label IDNA 2003 would map to another string than its lowercase (a soft hyphen, a
  fullwidth or other compatibility form) is refused;
- a code point unassigned in Unicode 3.2, nameprep's version (RFC 3454 table A.1), is
  refused where nameprep's ignorance of it could change the result (see
  :func:`newer_char_problem`: a decomposition, a case mapping, a neutral or
  arabic-number direction, no letter, mark or digit, a default-ignorable character);
  the rest, the everyday letters of scripts Unicode added or completed since (Burmese,
  Tifinagh, Malayalam chillus, CJK, and right-to-left ones such as Arabic Supplement,
  NKo, Adlam), are converted as IDNA 2008 converts them, once the label passes
  nameprep's bidi rule with their directions known (:func:`bidi_problem`);
- the four characters IDNA 2008 keeps where IDNA 2003 maps them (UTS #46 §6,
  "deviations": ß, final sigma ς, ZWJ and ZWNJ) are taken the IDNA 2008 way
  (``straße``: ``xn--strae-oqa``, never ``strasse``), the rest of such a label held to
  the IDNA 2003 checks.

Stdlib only: nameprep and ToASCII are done here on :mod:`stringprep`'s tables, as
:mod:`encodings.idna` does them but for the bidi rule (:func:`bidi_problem`), with
:mod:`unicodedata` and the ``punycode`` codec. :mod:`smtpcore.address` checks ASCII
labels and the limits.
"""

from __future__ import annotations

import re
import stringprep
import unicodedata
from typing import Final

__all__ = ["DEVIATIONS", "LabelError", "bidi_problem", "newer_char_problem", "to_a_label"]

DEVIATIONS: Final = frozenset("\u00df\u03c2\u200c\u200d")
"""ß, final sigma, ZWNJ and ZWJ: all IDNA 2008 keeps that IDNA 2003 maps (UTS #46 §6)."""

_ACE_PREFIX: Final = "xn--"
"""What begins every A-label (RFC 3490 §5, RFC 5890 §2.3.2.1)."""
_ZWNJ: Final = "\u200c"
_ZWJ: Final = "\u200d"
_VIRAMA: Final = 9
"""Canonical_Combining_Class Virama (RFC 5892 appendix A.1, A.2)."""
_IDEOGRAPHIC_DOTS: Final = frozenset("\u3002\uff0e\uff61")
"""Label separators IDNA 2003 treats as dots (RFC 3490 §3.1); "." is the only one taken."""
_LDH_LABEL: Final = re.compile(r"xn--[a-z0-9-]*[a-z0-9]")
"""An A-label in letters, digits and hyphens. Punycode writes a label's ASCII first, so
a U-label whose first ASCII character is a hyphen ("москва-сити") has one right after
the prefix: xn----7sbf0aahnq1aem."""


class LabelError(ValueError):
    """A U-label with no A-label; the message names the label and says why."""


def _show(text: str) -> str:
    """Repr of ``text`` cut short, so error messages stay one readable line."""
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


def to_a_label(label: str) -> str:
    """The lowercase A-label of the non-ASCII ``label``, or :class:`LabelError`.

    ``label`` has passed the address parser's character checks (no control, no
    surrogate). Its length in A-label form is the caller's to check."""
    if _IDEOGRAPHIC_DOTS.intersection(label):
        raise LabelError(f"label {_show(label)} contains a non-ASCII full stop")
    if label.startswith("-") or label.endswith("-"):
        raise LabelError(f"label {_show(label)} starts or ends with a hyphen")
    if unicodedata.category(label[0]).startswith("M"):
        # IDNA 2003's nameprep lets such a label through.
        raise LabelError(f"label {_show(label)} begins with a combining mark (RFC 5891 §4.2.3.2)")
    _refuse_untrusted(label, label)
    convert = _idna2003_a_label if DEVIATIONS.isdisjoint(label) else _idna2008_a_label
    alabel = convert(label).lower()
    if not _LDH_LABEL.fullmatch(alabel):
        raise LabelError(f"label {_show(label)} does not convert to an LDH A-label")
    return alabel


_TRUSTED_CATEGORIES: Final = frozenset({"Ll", "Lo", "Lm", "Mn", "Mc", "Nd"})
"""General categories IDNA 2008 derives PVALID from (RFC 5892 §2.1 LetterDigits)."""
_TRUSTED_BIDI: Final = frozenset({"L", "R", "AL", "NSM", "EN"})
"""Bidi classes a newer character may have: the ones RFC 3454 §6 names (RandALCat R and
AL, LCat L), which :func:`bidi_problem` checks it by, and NSM and EN, which that rule
keeps from a right-to-left label's ends and IDNA 2008's (RFC 5893) allows there too.
The other classes are refused, not guessed: RFC 3454's rule takes AN in a
left-to-right label and beside EN, ON and ET at a label's end, which RFC 5893 refuses
(rules 4 to 6); a letter or digit of those classes is rare (a Hanifi Rohingya digit,
AN; a modifier letter such as U+A717, ON)."""
_DEFAULT_IGNORABLE_MARKS: Final = ((0x180B, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF))
"""Variation selectors (Mongolian's among them): nonspacing marks that are
default-ignorable (Unicode's DerivedCoreProperties), which the standard library does not
list; every other default-ignorable character is a format control or unassigned."""
_CONJOINING_JAMO: Final = ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))
"""Conjoining Hangul jamo, which IDNA 2008 disallows (RFC 5892 §2.9, OldHangulJamo)."""
_IGNORABLE_BLOCKS: Final = ((0x20D0, 0x20FF), (0x1D100, 0x1D24F))
"""Combining marks for symbols and musical notation, blocks IDNA 2008 disallows (RFC 5892
§2.4, IgnorableBlocks)."""

_NKO_LAJANYALAN: Final = "\u07fa"
"""The one code point newer than 3.2 that RFC 5892 §2.6 (Exceptions) disallows: an NKo
extender letter of the right-to-left class, like Arabic's tatweel (U+0640, a code point
of 3.2, whose tables IDNA 2003 has and keeps)."""


def _in_ranges(char: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    """Whether ``char`` falls in one of the inclusive code point ``ranges``."""
    return any(low <= ord(char) <= high for low, high in ranges)


def newer_char_problem(char: str) -> str | None:
    """Why ``char``, unassigned in Unicode 3.2 (RFC 3454 table A.1), cannot be trusted to
    the standard library's IDNA 2003 tables, or None when it can.

    Nameprep passes such a character through unchanged, unmapped, unnormalized and
    without a direction, which is exactly what IDNA 2008 does with a lowercase letter,
    mark or digit that has no other form: those (``မြန်မာ``'s U+103C, ``উৎসব``'s
    khanda ta, ``അവൻ``'s chillu, Tifinagh, CJK of Unicode 4.1 on) convert to the
    A-label IDNA 2008 makes. Each clause names where the two would part:

    - unassigned today: nothing at all is known of it;
    - a decomposition: IDNA 2008 (UTS #46) maps a compatibility form (``ᵀ``, U+1D40,
      to ``t``) and requires NFC, which nameprep's 3.2 NFKC does not apply to it;
    - a case mapping (lowercasing or case-folding changes it): UTS #46 maps it to
      another letter (``ẞ`` to ``ß``, Cherokee small to capital), nameprep leaves it;
    - no letter, mark or digit (a symbol, an emoji, punctuation): IDNA 2008 disallows
      it (RFC 5892 §2.1);
    - a bidi class other than L, R, AL, NSM or EN (an Arabic-number digit of Hanifi
      Rohingya): RFC 3454's bidi rule, which :func:`bidi_problem` applies to newer
      characters, lets such a class stand where RFC 5893's does not;
    - a variation selector or another default-ignorable mark: UTS #46 maps it to
      nothing, nameprep's table B.1 does not know it, so the two would name different
      domains;
    - a conjoining Hangul jamo, a mark for symbols or musical notation, or the NKo
      lajanyalan: IDNA 2008 disallows them (RFC 5892 §2.9, §2.4, §2.6)."""
    category = unicodedata.category(char)
    if category == "Cn":
        return "unassigned in this Python's Unicode too"
    if unicodedata.decomposition(char):
        return "has a decomposition IDNA 2008 applies and IDNA 2003 does not know"
    if char.lower() != char or unicodedata.normalize("NFKC", char.casefold()) != char:
        return "has a case mapping IDNA 2008 applies and IDNA 2003 does not know"
    if category not in _TRUSTED_CATEGORIES:
        return "is no letter, mark or digit"
    if unicodedata.bidirectional(char) not in _TRUSTED_BIDI:
        return "has a bidi class IDNA 2003's bidi rule would let stand where IDNA 2008's does not"
    if _in_ranges(char, _DEFAULT_IGNORABLE_MARKS):
        return "is a default-ignorable variation selector"
    if _in_ranges(char, _CONJOINING_JAMO):
        return "is a conjoining Hangul jamo, which IDNA 2008 disallows"
    if _in_ranges(char, _IGNORABLE_BLOCKS):
        return "is a mark for symbols or music, which IDNA 2008 disallows"
    if char == _NKO_LAJANYALAN:
        return "is an extender IDNA 2008 disallows (RFC 5892 §2.6)"
    return None


def _refuse_untrusted(text: str, label: str) -> None:
    """Refuse ``text`` (``label``, or what a step made of it) when it holds a code point
    unassigned in Unicode 3.2 that :func:`newer_char_problem` does not trust, or when,
    holding any, it is not in NFC: nameprep's 3.2 normalization does not reorder a mark
    it does not know, IDNA 2008 requires NFC (RFC 5891 §5.4)."""
    newer = False
    for char in text:
        if not stringprep.in_table_a1(char):
            continue
        newer = True
        problem = newer_char_problem(char)
        if problem is not None:
            raise LabelError(
                f"label {_show(label)} holds U+{ord(char):04X}, unassigned in Unicode 3.2 "
                f"(IDNA 2003's tables, RFC 3454 table A.1), which {problem}"
            )
    if newer and not unicodedata.is_normalized("NFC", text):
        raise LabelError(f"label {_show(label)} is not in normalized form (NFC, RFC 5891 §5.4)")


def _is_rand_al(char: str) -> bool:
    """RandALCat (RFC 3454 §6): table D.1 of Unicode 3.2, today's R or AL for a newer
    code point."""
    if stringprep.in_table_a1(char):
        return unicodedata.bidirectional(char) in ("R", "AL")
    return stringprep.in_table_d1(char)


def _is_l(char: str) -> bool:
    """LCat (RFC 3454 §6): table D.2 of Unicode 3.2, today's L for a newer code point."""
    if stringprep.in_table_a1(char):
        return unicodedata.bidirectional(char) == "L"
    return stringprep.in_table_d2(char)


def bidi_problem(text: str) -> str | None:
    """How ``text`` breaks the bidi rule of nameprep (RFC 3454 §6, RFC 3491 §6), or None.

    The rule nameprep applies, applied again with the direction of each code point
    Unicode added after 3.2 known: nameprep gives such a code point no direction, so
    it never saw ``ß`` beside U+0750 (an Arabic letter of Unicode 4.1) mix
    directions. A label holding a right-to-left character (RandALCat) must hold no
    left-to-right one (LCat), and must start and end with a right-to-left one.

    A code point of Unicode 3.2 keeps its class from tables D.1 and D.2, as nameprep
    gives it, so this answers as nameprep does for every label without a newer code
    point. Today's classes for all would not: 273 code points of 3.2 have changed
    class since (U+06DD AL to AN, U+070F BN to AL, Braille ON to L)."""
    if not any(_is_rand_al(char) for char in text):
        return None
    mixed = next((char for char in text if _is_l(char)), None)
    if mixed is not None:
        return (
            f"mixes right-to-left letters with the left-to-right {mixed!r} "
            f"(U+{ord(mixed):04X}; RFC 3454 §6 requirement 2)"
        )
    if not _is_rand_al(text[0]) or not _is_rand_al(text[-1]):
        return (
            "is right-to-left but does not start and end with a right-to-left letter "
            "(RFC 3454 §6 requirement 3)"
        )
    return None


_PROHIBITED: Final = (
    stringprep.in_table_c12,
    stringprep.in_table_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)
"""Nameprep's prohibited output (RFC 3491 §5), the tables the standard library checks."""


def _nameprep(text: str, label: str) -> str:
    """IDNA 2003's nameprep of ``text`` (RFC 3491), its output free of code points newer
    than Unicode 3.2 that it cannot be trusted with.

    The steps of :func:`encodings.idna.nameprep` (mapping, NFKC of Unicode 3.2,
    prohibitions), its bidi step replaced by :func:`bidi_problem`, which answers as that
    step does unless a code point newer than 3.2 is present, whose direction that step
    cannot see: it refuses U+0750 (a newer Arabic letter) then an alef for not starting
    right-to-left, and lets ``ß`` then U+0750 mix directions."""
    kept = (char for char in text if not stringprep.in_table_b1(char))
    mapped = unicodedata.ucd_3_2_0.normalize(
        "NFKC", "".join(stringprep.map_table_b2(char) for char in kept)
    )
    for char in mapped:
        if any(prohibited(char) for prohibited in _PROHIBITED):
            raise LabelError(
                f"label {_show(label)} is not a valid IDNA label: U+{ord(char):04X} is "
                "prohibited (RFC 3491 §5)"
            )
    _refuse_untrusted(mapped, label)
    problem = bidi_problem(mapped)
    if problem is not None:
        raise LabelError(f"label {_show(label)} is not a valid IDNA label: it {problem}")
    return mapped


def _check_unmapped(text: str, label: str) -> str:
    """Refuse ``text`` (``label``, or what is left of it, see :func:`_idna2008_a_label`)
    when nameprep refuses it, or maps it to any other string than its lowercase; return
    that lowercase."""
    mapped = _nameprep(text, label)
    if mapped != text.lower():
        it = "it" if text == label else _show(text)
        raise LabelError(
            f"label {_show(label)} is not in normalized form: IDNA 2003 would turn {it} "
            f"into {_show(mapped)}"
        )
    return mapped


def _idna2003_a_label(label: str) -> str:
    """The A-label of a label without deviations, as IDNA 2003's ToASCII makes it
    (RFC 3490 §4.1, steps 2 to 7; the length is the caller's), once nameprep is known to
    change nothing but case."""
    mapped = _check_unmapped(label, label)
    if mapped.isascii():
        return mapped  # Step 4: not an A-label, which to_a_label refuses.
    if mapped.startswith(_ACE_PREFIX):
        raise LabelError(
            f"label {_show(label)} is not a valid IDNA label: it starts with the ACE "
            "prefix (RFC 3490 §4.1)"
        )
    return _ACE_PREFIX + mapped.encode("punycode").decode("ascii")


def _idna2008_a_label(label: str) -> str:
    """The A-label of a label holding ß, ς, ZWJ or ZWNJ, which IDNA 2008 keeps.

    Nothing else is let through that a label without them would not be: set aside, the
    rest of the label passes :func:`_check_unmapped` as any label does; the whole label
    passes nameprep's prohibitions and bidi rule (ß and ς are left-to-right letters);
    a joiner stands where RFC 5892 appendix A allows it. Lowercased one character at a
    time: :meth:`str.lower` would make a final capital sigma ``ς``, which IDNA 2003
    makes sigma (U+03C3)."""
    problem = _joiner_problem(label)
    if problem is not None:
        raise LabelError(f"label {_show(label)} {problem}")
    rest = "".join(char for char in label if char not in DEVIATIONS)
    if rest:
        _check_unmapped(rest, label)
    _nameprep(label, label)
    lowered = "".join(char.lower() for char in label)
    _refuse_untrusted(lowered, label)
    if not unicodedata.is_normalized("NFC", lowered):
        raise LabelError(f"label {_show(label)} is not in normalized form (NFC, RFC 5891 §5.4)")
    if lowered[2:4] == "--":
        raise LabelError(
            f"label {_show(label)} has hyphens in its third and fourth places (RFC 5891 §4.2.3.1)"
        )
    # RFC 5891 §4.4: the ACE prefix and the Punycode (RFC 3492), ß and ς kept.
    return _ACE_PREFIX + lowered.encode("punycode").decode("ascii")


def _joiner_problem(label: str) -> str | None:
    """Why a ZWJ or ZWNJ in ``label`` stands where RFC 5892 appendix A does not allow
    it, or None.

    ZWJ is valid only right after a virama (A.2). ZWNJ is valid after a virama, or
    between letters that join (A.1), a rule on Unicode's Joining_Type property, which
    the standard library lacks: that second context is refused here, never guessed."""
    for index, char in enumerate(label):
        if char != _ZWJ and char != _ZWNJ:
            continue
        if index > 0 and unicodedata.combining(label[index - 1]) == _VIRAMA:
            continue
        if char == _ZWJ:
            return (
                f"has ZERO WIDTH JOINER (U+200D) at index {index} not right after a "
                "virama (RFC 5892 appendix A.2)"
            )
        return (
            f"has ZERO WIDTH NON-JOINER (U+200C) at index {index} not right after a "
            "virama (RFC 5892 appendix A.1; its other context, between joining "
            "letters, is not taken)"
        )
    return None
