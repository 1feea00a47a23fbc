"""The four characters IDNA 2008 keeps and IDNA 2003 maps (UTS #46 §6): ß, final sigma,
ZWJ and ZWNJ in a U-label (RFC 5892), and that nothing else gets through with them."""

from __future__ import annotations

import encodings.idna
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtpcore._hostname import a_label_hostname, ascii_hostname
from smtpcore.address import (
    AddressError,
    Mailbox,
    normalize_domain,
    normalize_host_name,
    parse_domain,
    parse_mailbox,
    parse_path,
)

ZWNJ = "\u200c"
ZWJ = "\u200d"
KA, VIRAMA, SSA = "\u0915", "\u094d", "\u0937"  # Devanagari: a conjunct needs the virama


def _checks() -> list[Callable[[str], object]]:
    """Every caller a domain or host name reaches the one label check from."""
    return [
        normalize_domain,
        normalize_host_name,
        a_label_hostname,
        lambda name: parse_mailbox(f"u@{name}"),
        lambda name: Mailbox("u", name),
    ]


# Vectors: UTS #46 nontransitional processing (IdnaTestV2), what Postfix and DENIC use.
VECTORS = [
    ("straße.test", "xn--strae-oqa.test"),
    ("faß.de", "xn--fa-hia.de"),
    ("βόλος.gr", "xn--nxasmm1c.gr"),
    ("STRAßE.Test", "xn--strae-oqa.test"),  # uppercase aside, as for any label
    ("ß.test", "xn--zca.test"),
    ("ς.test", "xn--3xa.test"),
    (f"{KA}{VIRAMA}{ZWJ}{SSA}.test", "xn--11b2ezcw70k.test"),
    (f"{KA}{VIRAMA}{ZWNJ}{SSA}.test", "xn--11b2ezcs70k.test"),
    # A capital sigma is lowercased alone: sigma (U+03C3), as IDNA 2003 makes it,
    # never the final sigma that str.lower() would make of it after ß.
    ("ß\u03a3.gr", "xn--zca49l.gr"),
]


@pytest.mark.parametrize(("u_label", "a_label"), VECTORS)
def test_a_deviation_character_is_kept_in_the_a_label(u_label: str, a_label: str) -> None:
    """``straße.test`` got 501 5.1.3 "not in normalized form: IDNA 2003 would turn it
    into strasse" while ``xn--strae-oqa.test`` was taken: one domain, refused in one
    spelling and taken in the other."""
    assert normalize_domain(u_label) == a_label
    assert normalize_domain(a_label) == a_label
    assert parse_domain(u_label) == u_label
    for check in _checks():
        check(u_label)
    mailbox = parse_path(f"<u@{u_label}>")
    assert mailbox is not None
    assert mailbox.ascii_domain == a_label


def test_a_server_without_smtputf8_gets_the_a_label() -> None:
    """The client's downgrade (RFC 6531 §3.4) names the same domain, not strasse."""
    assert Mailbox("u", "straße.test").a_label_form == Mailbox("u", "xn--strae-oqa.test")
    assert Mailbox("u", "βόλος.gr").a_label_form == Mailbox("u", "xn--nxasmm1c.gr")


def test_a_host_name_with_sharp_s_has_its_a_label() -> None:
    assert normalize_host_name("mx.straße.test.") == "mx.xn--strae-oqa.test"
    assert a_label_hostname("mx.straße.test.") == "mx.xn--strae-oqa.test."
    assert ascii_hostname("mx.straße.test") == "mx.xn--strae-oqa.test"


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        (f"{ZWJ}.test", "JOINER"),  # a label of a joiner alone
        (f"{ZWJ}{ZWJ}.test", "JOINER"),
        (f"{ZWNJ}ß.test", "NON-JOINER"),  # a joiner first: nothing before it
        (f"ß{ZWJ}.test", "JOINER"),  # after a letter, no virama
        (f"a{ZWNJ}ß.test", "NON-JOINER"),
        (f"{KA}{ZWJ}{SSA}.test", "JOINER"),
        # ZWNJ between joining letters (RFC 5892 A.1's second context) needs the
        # Joining_Type property, which the standard library lacks: refused, not guessed.
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.ir", "NON-JOINER"),
        # Beside ß, a character IDNA 2003 maps still refuses the label.
        ("ßa\u00ad.test", "normalized"),  # a soft hyphen, mapped to nothing
        # Capital sharp s (Unicode 5.1), which IDNA 2003 has no tables for.
        ("stra\u1e9ee.test", "unassigned in Unicode"),
        ("ß\u1e9e.test", "unassigned in Unicode"),
        ("ß\uff41.test", "normalized"),  # a fullwidth letter, mapped to a
        ("ßb\u0307.test", "normalized"),  # not NFKC: IDNA 2003 composes it
        ("ß\ue000.test", "IDNA"),  # private use: prohibited (RFC 3454 C.3)
        ("ß\u05d0.test", "IDNA"),  # a left-to-right ß in a right-to-left label
        ("ß\u0627\u05d0.test", "IDNA"),
        ("-ß.test", "hyphen"),
        ("ß-.test", "hyphen"),
        ("xn--ß.test", "third and fourth"),
        ("ab--ß.test", "third and fourth"),
        ("a_ß.test", "LDH"),
        ("ß\u3002a.test", "full stop"),
        ("ß" + "a" * 56 + ".test", "over 63"),
    ],
)
def test_hostile_labels_with_a_deviation_character_are_refused(domain: str, why: str) -> None:
    for check in _checks():
        with pytest.raises(ValueError, match=why):
            check(domain)


def test_the_63_octet_limit_is_on_the_a_label() -> None:
    """RFC 5890 §2.3.2.1: the A-label is what DNS holds, so the limit counts it."""
    assert len(normalize_domain("ß" + "a" * 55 + ".test").split(".")[0]) == 63
    with pytest.raises(AddressError, match="64 octets in A-label form"):
        normalize_domain("ß" + "a" * 56 + ".test")


def test_the_255_octet_limit_is_on_the_a_label_form() -> None:
    label = "ß" + "a" * 55  # 57 octets in UTF-8, 63 as an A-label
    assert len(normalize_domain(".".join([label] * 4))) == 255
    longer = ".".join([label] * 4) + ".b"
    assert len(longer.encode()) < 255
    with pytest.raises(AddressError, match="A-label form is over 255"):
        normalize_domain(longer)


_LETTERS = st.sampled_from(
    [
        "a",
        "Z",
        "-",
        "_",
        "ß",
        "\u03c2",
        "\u03a3",
        "\u1e9e",
        ZWJ,
        ZWNJ,
        KA,
        VIRAMA,
        "\u0301",
        "\u00ad",
        "\u05d0",
        "\u0627",
        "\uff41",
        "\u0130",
    ]
)


@given(st.text(_LETTERS, min_size=1, max_size=12))
@example("ß\u03a3")
@example(f"{KA}{VIRAMA}{ZWJ}")
@example("ß-\u0130")
def test_a_label_with_deviations_takes_nothing_the_rest_would_not_pass(label: str) -> None:
    """Whatever the mix, the label is refused with AddressError or converted; when it
    is converted, IDNA 2003 takes the rest of it as it is (nameprep leaves it
    unchanged but for case), and its A-label decodes to the label lowercased one
    character at a time."""
    try:
        converted = normalize_domain(f"{label}.test")
    except AddressError:
        return
    a_label = converted.split(".")[0]
    rest = "".join(char for char in label if char not in "ß\u03c2\u200c\u200d")
    assert encodings.idna.nameprep(rest) == rest.lower()
    if label.isascii():
        assert a_label == label.lower()
        return
    decoded = a_label.removeprefix("xn--").encode("ascii").decode("punycode")
    assert decoded == unicodedata.normalize("NFC", "".join(char.lower() for char in label))


# Code points unassigned in Unicode 3.2, nameprep's version (RFC 3454 table A.1): the
# standard library's nameprep does not map them (its NFKC is 3.2's), so a label holding
# one got an A-label IDNA 2008 does not make (UTS #46 maps U+1D40 to "t": "ᵀestß" is
# xn--test-yna, not xn--est-7ka5347a).
UNASSIGNED_IN_3_2 = [
    "\u1d40est",  # MODIFIER LETTER CAPITAL T (4.0): UTS #46 makes it t
    "\u1d40est\u00df",
    "\u1c80a",  # CYRILLIC SMALL LETTER ROUNDED VE (9.0): UTS #46 makes it в
    "\u1c80\u00df",
    "\u1d69a",  # GREEK SUBSCRIPT SMALL LETTER BETA (4.0): UTS #46 makes it β
    "\u1dba\u00df",
    "\uab81a",  # CHEROKEE SMALL LETTER (8.0): UTS #46 makes it the capital
    "\u13b1\u03c2",  # a Cherokee capital, which str.lower() makes U+AB81
]


@pytest.mark.parametrize("label", UNASSIGNED_IN_3_2)
def test_a_code_point_unassigned_in_unicode_3_2_is_refused(label: str) -> None:
    """RFC 3490 §7: stored strings must not hold unassigned code points. Refused in
    every caller, with or without a deviation character in the label."""
    for check in _checks():
        with pytest.raises(ValueError, match=r"unassigned in Unicode 3\.2"):
            check(f"mx.{label}.test")


# Right-to-left letters newer than 3.2, to which the standard library's nameprep gives no
# direction: its bidi rule (RFC 3454 §6) let them mix with left-to-right letters. The
# rule is applied with their direction known.
NEWER_RIGHT_TO_LEFT_BREAKING_THE_BIDI_RULE = [
    "\u00df\u0750",  # ARABIC LETTER BEH WITH THREE DOTS ... (4.1)
    "\u0750\u00df",
    "\u0750\u03c2\u0750",
    "\u08a0\u00df",  # ARABIC LETTER BEH WITH SMALL V BELOW (6.1)
    "\u08a0a",
    "a\u0750",
    "\u0628a\u0750",  # an Arabic letter of 3.2 first
    "\u07ca\u00df",  # NKO LETTER A (5.0)
    "\U0001e922b",  # ADLAM SMALL LETTER ALIF (9.0)
    "\U00010a10\U00010a3f\u200c",  # Kharoshthi (4.1): a ZWNJ last, no right-to-left letter
    "\u07ca\u07eb",  # an NKo tone mark last (requirement 3, as for an Arabic vowel sign)
]


@pytest.mark.parametrize("label", NEWER_RIGHT_TO_LEFT_BREAKING_THE_BIDI_RULE)
def test_a_newer_right_to_left_letter_is_held_to_the_bidi_rule(label: str) -> None:
    for check in _checks():
        with pytest.raises(ValueError, match=r"RFC 3454 §6 requirement [23]"):
            check(f"mx.{label}.test")


def test_labels_of_unicode_3_2_are_still_converted() -> None:
    """The check is on what IDNA 2003 has tables for, no wider."""
    assert normalize_domain("bücher.test") == "xn--bcher-kva.test"
    assert normalize_domain("\u0628\u0627.test") == "xn--mgbb.test"  # Arabic of 3.2
    assert normalize_domain("straße.test") == "xn--strae-oqa.test"
