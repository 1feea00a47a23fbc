"""Letters Unicode added after 3.2, the version of IDNA 2003's tables (RFC 3454 table A.1):
the everyday letters of living scripts convert as IDNA 2008 converts them; a character
the standard library's IDNA 2003 cannot be trusted with is refused (smtpcore._idna's
``newer_char_problem``)."""

from __future__ import annotations

import encodings.idna
import importlib
import stringprep
import sys
import unicodedata
from collections.abc import Callable
from importlib.util import find_spec
from types import ModuleType

import pytest

from peers import missing_peer
from smtpcore._dial_name import dial_name
from smtpcore._hostname import a_label_hostname
from smtpcore._idna import _nameprep, newer_char_problem
from smtpcore.address import Mailbox, normalize_domain, normalize_host_name, parse_mailbox
from smtpcore.routing import LocalDelivery, Router
from smtpcore.server.config import ServerConfig


def _checks() -> list[Callable[[str], object]]:
    """Every caller a domain or host name reaches the one label check from."""
    return [
        normalize_domain,
        normalize_host_name,
        a_label_hostname,
        lambda name: parse_mailbox(f"u@{name}"),
        lambda name: Mailbox("u", name),
        dial_name,
    ]


ALEF = "\u05d0"  # HEBREW LETTER ALEF, right-to-left in Unicode 3.2

# Each A-label is the one the idna package (IDNA 2008, UTS #46 nontransitional) makes,
# and the one the previous release made, before it refused these words.
LIVING_WORDS = [
    ("\u1019\u103c\u1014\u103a\u1019\u102c", "xn--7idjb0f4ck"),  # Burmese "Myanmar" (5.1)
    ("\u101b\u1014\u103a\u1000\u102f\u1014\u103a", "xn--nid3bbz6hucd"),  # Burmese "Yangon"
    ("\u0989\u09ce\u09b8\u09ac", "xn--d5b4e9a9e"),  # Bengali "utsab", khanda ta (4.1)
    ("\u0d05\u0d35\u0d7b", "xn--uvc0h0i"),  # Malayalam "avan", atomic chillu n (5.1)
    ("\u0bb6\u0bcd\u0bb0\u0bc0", "xn--3lcl5a0c"),  # Tamil "shri", sha (4.1)
    ("\u2d30\u2d4e\u2d30\u2d63\u2d49\u2d56", "xn--4lja9esa6b8d"),  # Tifinagh "amazigh" (4.1)
    ("\u0515\u0430", "xn--80a17b"),  # Cyrillic U+0515 (5.1)
    ("\u9fc3\u4e2d", "xn--fiqx20r"),  # CJK U+9FC3 (5.1)
    # Right-to-left scripts, held to nameprep's bidi rule with their direction known.
    ("\u0628\u0750\u0627", "xn--mgbb20g"),  # Arabic Supplement U+0750 (4.1)
    ("\u0750\u0627", "xn--mgb70d"),  # the same letter first, IDNA 2003 alone refuses it
    ("\u08a0\u0627", "xn--mgb97j"),  # Arabic Extended-A U+08A0 (6.1)
    ("\u07d2\u07de\u07cf", "xn--qsbf0b"),  # NKo "N'Ko" (5.0)
    ("\U0001e922\U0001e923\U0001e924\U0001e922\U0001e925", "xn--9d6haceg"),  # Adlam (9.0)
    ("\u0800\u0801", "xn--4tbc"),  # Samaritan (5.2)
    ("\u0840\u0841", "xn--yvbc"),  # Mandaic (6.0)
    ("\u0860\u0861", "xn--vwbc"),  # Syriac Supplement (10.0)
    ("\u07501\u0627", "xn--1-zmc30g"),  # a European digit inside, as RFC 3454 §6 lets it
]


@pytest.mark.parametrize(("label", "a_label"), LIVING_WORDS)
def test_living_words_newer_than_unicode_3_2_convert_as_idna_2008_does(
    label: str, a_label: str
) -> None:
    assert any(stringprep.in_table_a1(char) for char in label)
    assert normalize_domain(f"{label}.test") == f"{a_label}.test"
    assert normalize_domain(f"{a_label}.test") == f"{a_label}.test"
    assert Mailbox("u", f"{label}.test").ascii_domain == f"{a_label}.test"
    assert dial_name(f"mx.{label}.test") == f"mx.{a_label}.test"
    router = Router(local_domains=[f"{label}.test"])
    assert isinstance(router.route(parse_mailbox(f"u@{a_label}.test")), LocalDelivery)
    config = ServerConfig(domains=(f"{label}.test",), hostname=f"mx.{label}.test")
    assert config.domains == (f"{a_label}.test",)


def _idna_package() -> ModuleType:
    """The idna package (IDNA 2008 and UTS #46), a test dependency: a developer without
    it skips the comparisons, CI fails them."""
    if find_spec("idna") is None:
        missing_peer("the idna package is not installed (the 'test' extra)")
    return importlib.import_module("idna")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the idna package's Unicode")
@pytest.mark.parametrize(("label", "a_label"), LIVING_WORDS)
def test_the_a_labels_are_the_ones_idna_2008_makes(label: str, a_label: str) -> None:
    idna = _idna_package()
    assert idna.encode(label, uts46=True).decode("ascii") == a_label


# What each clause of newer_char_problem keeps out, on top of the cases of
# test_address_idna2008.UNASSIGNED_IN_3_2 (a decomposition, a case mapping).
UNTRUSTED = [
    ("\U0001f600", "no letter, mark or digit"),  # an emoji (6.1): IDNA 2008 disallows it
    ("a\U000e0100", "variation selector"),  # VS17 (4.0): UTS #46 maps it to nothing
    ("\u1820\u180f", "variation selector"),  # Mongolian FVS4 (14.0)
    ("\ua960a", "Hangul jamo"),  # old Hangul jamo (5.2): RFC 5892 §2.9
    ("a\u20eb", "symbols or music"),  # a combining mark for symbols (4.1): RFC 5892 §2.4
    # A Hanifi Rohingya digit (11.0), an Arabic number (AN): RFC 3454 §6 lets it stand
    # beside a European digit or in a left-to-right label, RFC 5893 does not.
    ("\U00010d00\U00010d30", "bidi class"),
    ("\u07ca\u07fa\u07ca", "extender"),  # NKO LAJANYALAN (5.0): RFC 5892 §2.6
]


@pytest.mark.parametrize(("label", "why"), UNTRUSTED)
def test_a_character_idna_2003_cannot_be_trusted_with_is_refused(label: str, why: str) -> None:
    for check in _checks():
        with pytest.raises(ValueError, match=rf"unassigned in Unicode 3\.2 .*{why}"):
            check(f"mx.{label}.test")


def test_a_newer_mark_out_of_canonical_order_is_refused() -> None:
    """IDNA 2003's 3.2 normalization leaves a mark it does not know where it stands; IDNA
    2008 requires NFC, which puts U+0F39 (ccc 216) after U+0334 (ccc 1). A newer mark
    stands in for it: U+1DC0 (4.1, ccc 230) before U+0316 (ccc 220)."""
    for check in _checks():
        with pytest.raises(ValueError, match="NFC"):
            check("mx.a\u1dc0\u0316.test")
    assert normalize_domain("a\u0316\u1dc0.test").startswith("xn--")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the idna package's Unicode")
def test_every_newer_character_taken_is_one_idna_2008_takes() -> None:
    """The rule accepts nothing IDNA 2008 disallows (RFC 5892 PVALID, as the idna
    package derives it): the characters it keeps out where the two agree are a
    narrower set, never a wider one."""
    pvalid = _idna_package().idnadata.codepoint_classes["PVALID"]

    def is_pvalid(code: int) -> bool:
        return any(low >> 32 <= code < low & 0xFFFFFFFF for low in pvalid)

    taken = [
        code
        for code in range(0x110000)
        if stringprep.in_table_a1(chr(code)) and newer_char_problem(chr(code)) is None
    ]
    assert len(taken) > 40_000  # the everyday letters of the scripts added since
    refused_by_idna = [f"U+{code:04X}" for code in taken if not is_pvalid(code)]
    assert refused_by_idna == []
    assert unicodedata.unidata_version >= "13"


def _outcome(prep: Callable[[str], str], text: str) -> str | None:
    """What ``prep`` makes of ``text``, None where it refuses it."""
    try:
        return prep(text)
    except ValueError:
        return None


def test_without_a_newer_code_point_nameprep_answers_as_the_standard_library() -> None:
    """The module's own nameprep, whose bidi rule knows newer code points, maps, refuses
    and applies the bidi rule to every code point of Unicode 3.2 as
    :func:`encodings.idna.nameprep` does: alone, after a right-to-left letter (RFC 3454
    §6 requirement 2 and 3) and between two. Left out: the 126 code points nameprep maps
    to a newer one (U+04C0 to U+04CF, Georgian and Cherokee capitals), where the two part
    on purpose: ``\u05d0\u04c0\u05d0`` mixes a left-to-right letter in."""
    for code in range(0x110000):
        char = chr(code)
        if stringprep.in_table_a1(char) or unicodedata.category(char) == "Cs":
            continue
        mapped = unicodedata.normalize("NFKC", stringprep.map_table_b2(char))
        if any(stringprep.in_table_a1(newer) for newer in mapped):
            continue
        for text in (char, ALEF + char, ALEF + char + ALEF):
            ours = _outcome(lambda text: _nameprep(text, text), text)
            assert ours == _outcome(encodings.idna.nameprep, text), f"U+{code:04X} in {text!r}"


# Punycode writes a label's ASCII characters first, so a hyphen in a U-label can come
# right after the ACE prefix; each A-label is the idna package's and the last release's.
HYPHENATED = [
    ("москва-сити.рф", "xn----7sbf0aahnq1aem.xn--p1ai"),
    ("東京-大阪.jp", "xn----tx6a884a8zo288c.jp"),
    ("пример-1.test", "xn---1-mlcluqhd.test"),
    ("ड-n.test", "xn---n-mof.test"),
    ("مثال-اختبار.test", "xn----ymcbaeld1a4a7pi.test"),
    ("ü-a.test", "xn---a-wka.test"),
    ("bücher-shop.test", "xn--bcher-shop-9db.test"),
]


@pytest.mark.parametrize(("domain", "ascii_domain"), HYPHENATED)
def test_a_hyphenated_u_label_converts_whatever_follows_the_prefix(
    domain: str, ascii_domain: str
) -> None:
    assert normalize_domain(domain) == ascii_domain
    assert normalize_domain(ascii_domain) == ascii_domain
    assert Mailbox("ivan", domain).ascii_domain == ascii_domain
    assert dial_name(f"mx.{domain}") == f"mx.{ascii_domain}"
