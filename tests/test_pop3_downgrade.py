"""``pop3.ascii_surrogate`` and ``pop3.presented``: the RFC 6858 surrogate of a message
whose header holds UTF-8, for a POP3 session outside UTF-8 mode (RFC 6856 §2.1, §5).

The header comes out 7-bit, in lines of at most 998 octets (RFC 5322 §2.1.1),
folded only before white space; Python's ``email`` reads back each unstructured
field's text, each ASCII address, display names and MIME parameters; the body and
every ASCII field go as stored.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from smtpcore import pop3
from smtpcore._header_end import header_end
from smtpcore.testing import strategies as sst

BODY = "Grüße, body as stored ü\r\n.\r\n".encode()

#: Text an unstructured field may hold: words, UTF-8 among them, and white space
#: that is no line break; "=?" too, which must not come back as a decoded word.
_WORDS = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp", "Zs")) | st.sampled_from("=?_"),
    min_size=1,
    max_size=120,
)
field_texts = st.lists(
    st.tuples(st.sampled_from([" ", "  ", "\t", " \t"]), _WORDS), min_size=1, max_size=30
).map(lambda pairs: "".join(space + word for space, word in pairs).strip(" \t"))


def _parsed(message: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _header_of(message: bytes) -> bytes:
    """The header's lines, each with its CR LF: none where every field was left out."""
    if message.startswith(b"\r\n"):
        return b""
    return message.partition(b"\r\n\r\n")[0] + b"\r\n"


def _check_lines(header: bytes) -> None:
    """7-bit, CR LF line ends, lines within 998 octets, continuation lines folded
    (starting with white space, never white space alone)."""
    assert header.isascii()
    if not header:
        return
    lines = header.split(b"\r\n")
    assert lines[-1] == b""
    for line in lines[:-1]:
        assert b"\r" not in line and b"\n" not in line
        assert len(line) <= 998
        assert line.strip(b" \t"), "a line of white space alone"


@given(text=field_texts.filter(lambda t: not t.isascii()))
def test_an_unstructured_field_decodes_back_to_its_text(text: str) -> None:
    stored = f"Subject: {text}\r\nX-Note: {text}\r\n\r\n".encode() + BODY
    surrogate = pop3.ascii_surrogate(stored)
    _check_lines(_header_of(surrogate))
    assert surrogate.endswith(b"\r\n\r\n" + BODY)
    parsed = _parsed(surrogate)
    assert str(parsed["Subject"]) == text
    assert str(parsed["X-Note"]) == text


@given(
    name=field_texts,
    mailbox=sst.mailboxes(utf8=True, quoted=False, literals=False),
    other=sst.mailboxes(quoted=False, literals=False),
)
def test_an_address_field_keeps_ascii_addresses_and_names_the_others(
    name: str, mailbox: object, other: object
) -> None:
    """RFC 6858 §3: an ASCII address stays, with its display name encoded; a UTF-8
    one has no ASCII form and becomes an empty group named after it (RFC 6854 lets
    From be one), which a client shows and cannot answer."""
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    stored = f'From: "{quoted}" <{mailbox}>\r\nTo: "{quoted}" <{other}>\r\n\r\n'.encode()
    surrogate = pop3.ascii_surrogate(stored + BODY)
    _check_lines(_header_of(surrogate))
    parsed = _parsed(surrogate)
    [to] = parsed["To"].addresses
    assert (_words(to.display_name), to.addr_spec) == (_words(name), str(other))
    if str(mailbox).isascii():
        [sender] = parsed["From"].addresses
        assert sender.addr_spec == str(mailbox)
    else:
        [group] = parsed["From"].groups
        assert group.addresses == ()
        assert _words(group.display_name) == _words(name)


def _words(name: str) -> str:
    """A display name's text but its white space: ``email`` reads the encoded-words
    of a phrase with a space between each two and runs of white space in them as one
    (RFC 2047 §6.2 ignores the space between them), where a mail reader keeps it."""
    return "".join(name.split())


def test_an_address_without_a_display_name_names_its_group() -> None:
    stored = "From: jörg@bücher.example\r\nCc: a@b.example, <ü@x.example>\r\n\r\n".encode()
    parsed = _parsed(pop3.ascii_surrogate(stored))
    assert parsed["From"].groups[0].display_name == "jörg@bücher.example"
    cc = parsed["Cc"].groups
    assert [g.addresses[0].addr_spec for g in cc if g.display_name is None] == ["a@b.example"]
    assert [g.display_name for g in cc if g.display_name] == ["ü@x.example"]


def test_a_group_loses_only_its_utf8_members() -> None:
    """Groups do not nest (RFC 5322 §3.4): a UTF-8 member of one is left out."""
    stored = "To: Fréunde: a@b.example, ü@x.example, c@d.example;, e@f.example\r\n\r\n"
    parsed = _parsed(pop3.ascii_surrogate(stored.encode()))
    first, second = parsed["To"].groups
    assert first.display_name == "Fréunde"
    assert [a.addr_spec for a in first.addresses] == ["a@b.example", "c@d.example"]
    assert [a.addr_spec for a in second.addresses] == ["e@f.example"]


@given(filename=field_texts.filter(lambda t: not t.isascii()))
def test_a_mime_parameter_goes_in_rfc_2231_form(filename: str) -> None:
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    stored = (
        f'Content-Type: text/plain; charset=utf-8; name="{quoted}"\r\n'
        f'Content-Disposition: attachment; filename="{quoted}"\r\n\r\n'
    )
    surrogate = pop3.ascii_surrogate(stored.encode() + BODY)
    _check_lines(_header_of(surrogate))
    parsed = _parsed(surrogate)
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_param("charset") == "utf-8"
    assert parsed.get_filename() == filename
    assert parsed.get_param("name") == filename


def test_ascii_fields_and_the_body_go_as_stored() -> None:
    ascii_fields = (
        b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\nX-Long: " + (b"a" * 1200) + b"\n"
    )
    stored = ascii_fields + "Subject: grüße\n\nbody\nü\n".encode()
    surrogate = pop3.ascii_surrogate(stored)
    assert surrogate.startswith(ascii_fields)  # LF line ends, an over-long line: as stored
    assert surrogate.endswith("\nbody\nü\n".encode())
    assert b"Subject: =?utf-8?b?Z3LDvMOfZQ==?=\r\n" in surrogate


@pytest.mark.parametrize("line", ["Grüße ohne Doppelpunkt", "Ünknown: field", "X y: z ü"])
def test_a_line_that_is_no_field_starts_the_body_as_stored(line: str) -> None:
    """As for :mod:`email`'s parser and Postfix: the header ends before it, and it
    and every line after it go as stored, never left out (RFC 5322 §2.1)."""
    rest = f"{line}\r\nX-After: ü\r\n\r\nbody\r\n".encode()
    stored = "Subject: ü\r\n".encode() + rest
    assert pop3.ascii_surrogate(stored) == b"Subject: =?utf-8?b?w7w=?=\r\n" + rest
    assert pop3.ascii_surrogate(rest) == rest  # no field first: no header at all


def test_an_orphan_continuation_first_is_no_header() -> None:
    stored = " an orphan continuation ü\r\nSubject: ü\r\n\r\nbody\r\n".encode()
    assert pop3.ascii_surrogate(stored) == stored


def test_hostile_fields_still_fold_within_the_line_limit() -> None:
    """A word no folding can break, a run of white space, a field name of 990 octets
    with a UTF-8 value, invalid UTF-8: every line stays within 998 octets."""
    hostile = [
        "Subject: " + "ü" * 3000,
        "Subject: x" + " " * 2000 + "ü",
        "To: " + "a" * 1500 + "@b.example, Ü <" + "c" * 1200 + "@d.example>",
        "X-" + "n" * 988 + ": ü",
        'Content-Type: text/plain; name*0=ü; filename="' + "ä" * 800 + '"',
    ]
    for field in hostile:
        surrogate = pop3.ascii_surrogate(field.encode() + b"\r\nX-Bad: \xff\xfe\r\n\r\nbody\r\n")
        _check_lines(_header_of(surrogate))
        assert surrogate.endswith(b"\r\nbody\r\n")


def test_a_message_that_is_all_header_is_downgraded_whole() -> None:
    assert pop3.ascii_surrogate("Subject: ü".encode()) == b"Subject: =?utf-8?b?w7w=?=\r\n"
    assert pop3.ascii_surrogate(b"\r\nSubject: \xc3\xbc\r\n") == b"\r\nSubject: \xc3\xbc\r\n"


def _scanned(message: bytes) -> pop3.HeaderScan:
    scan = pop3.HeaderScan()
    if not scan.feed(message):
        scan.end()
    return scan


def test_presented_decides_as_stored_surrogate_or_refusal() -> None:
    """The one decision: ASCII and legacy 8-bit headers go as stored (the very list
    given), a UTF-8 header as the surrogate where downgrading is on and as
    ``NEEDS_UTF8`` where it is off, and a header that outran the lookahead, whose end
    was never read, as ``NEEDS_UTF8`` either way."""
    plain = [b"Subject: plain\r\n", b"\r\nbody\r\n"]
    assert pop3.presented(_scanned(b"".join(plain)), plain, downgrade=True) is plain
    latin1 = [b"Subject: Gr\xfc\xdfe\r\n\r\n"]
    assert pop3.presented(_scanned(latin1[0]), latin1, downgrade=True) is latin1
    utf8 = ["Subject: grü".encode(), "ße\r\n\r\nbody ü\r\n".encode()]
    scan = _scanned(b"".join(utf8))
    assert pop3.presented(scan, utf8, downgrade=False) is pop3.NEEDS_UTF8
    assert pop3.presented(scan, utf8, downgrade=True) == [
        "Subject: =?utf-8?b?Z3LDvMOfZQ==?=\r\n\r\nbody ü\r\n".encode()
    ]
    padded = b"X-Pad: " + b"a" * pop3.HEADER_LOOKAHEAD + "\r\nSubject: ü\r\n\r\n".encode()
    early = "Subject: ü\r\n".encode() + padded
    scan = _scanned(early)
    assert scan.overran and scan.needs_utf8
    assert pop3.presented(scan, [early], downgrade=True) is pop3.NEEDS_UTF8


@given(
    header=st.lists(
        st.binary(max_size=80) | st.text(max_size=80).map(str.encode), min_size=1, max_size=12
    ).map(lambda lines: b"\r\n".join(line.replace(b"\n\n", b"\n") for line in lines))
)
def test_any_header_comes_out_7bit_and_the_body_as_stored(header: bytes) -> None:
    """Hostile octets (invalid UTF-8, bare CR and LF, colons and quotes anywhere):
    no exception, nothing that is not ASCII in the header, the body untouched."""
    message = header + b"\r\n\r\nbody \xff\r\n"
    surrogate = pop3.ascii_surrogate(message)
    rest = message[header_end(message) :]
    assert surrogate.endswith(rest)
    assert surrogate[: len(surrogate) - len(rest)].isascii()


def test_trace_fields_holding_utf8_take_no_encoded_word() -> None:
    """Return-Path is an addr-spec and Received's clauses hold addresses: RFC 2047 §5
    allows no encoded-word there. A UTF-8 Received goes (RFC 6858 §2: incomplete
    rather than modified), a UTF-8 Return-Path becomes the null path (fetchmail
    builds its MAIL FROM from it, or else from From); ASCII ones stay."""
    stored = (
        "Return-Path: <jörg@bücher.example>\r\n"
        "Received: from a.example by mx.example for <ann@ü.example>; Mon, 1 Jan 2024\r\n"
        "Received: from b.example by a.example; Mon, 1 Jan 2024\r\n"
        "Subject: ü\r\n\r\nbody\r\n"
    ).encode()
    assert pop3.ascii_surrogate(stored) == (
        b"Return-Path: <>\r\n"
        b"Received: from b.example by a.example; Mon, 1 Jan 2024\r\n"
        b"Subject: =?utf-8?b?w7w=?=\r\n\r\nbody\r\n"
    )


def test_msg_id_fields_keep_only_their_ascii_ids() -> None:
    """A msg-id allows no encoded-word (RFC 2047 §5): each UTF-8 one is left out, and
    the field with it where none is left."""
    stored = (
        "Message-ID: <zwölf@bücher.example>\r\n"
        "In-Reply-To: <ö@y.example>\r\n"
        "References: <a@b.example> <ö@y.example>\r\n <c@d.example> (ü)\r\n\r\n"
    ).encode()
    surrogate = pop3.ascii_surrogate(stored)
    assert surrogate == b"References: <a@b.example> <c@d.example>\r\n\r\n"
    assert _parsed(surrogate)["References"] == "<a@b.example> <c@d.example>"


@pytest.mark.parametrize(
    ("field", "addresses"),
    [
        ("From: alice@example.com (Jöhn)", ["alice@example.com"]),
        ("To: a@b.example (x (ü)), Zoë <z@y.example> (ö)", ["a@b.example", "z@y.example"]),
        ("Cc: (ü) a@b.example", ["a@b.example"]),
        # Comments nest: the comma inside is no separator.
        ("To: a@b.example (x, (y) ü), c@d.example", ["a@b.example", "c@d.example"]),
    ],
)
def test_a_utf8_comment_leaves_an_ascii_address_as_it_is(field: str, addresses: list[str]) -> None:
    """Comments are set apart before the address is judged: UTF-8 in one goes into
    encoded-words inside the comment (RFC 2047 §5 (2)), the address stays."""
    surrogate = pop3.ascii_surrogate(f"{field}\r\n\r\nbody\r\n".encode())
    _check_lines(_header_of(surrogate))
    parsed = _parsed(surrogate)[field.partition(":")[0]]
    assert [a.addr_spec for a in parsed.addresses] == addresses
    assert not parsed.defects
    assert b"(=?utf-8?b?" in surrogate


@pytest.mark.parametrize(
    ("field", "kept"),
    [
        # A mailbox whose word no folding can break goes, not the address list.
        (
            "From: " + "a" * 1200 + "@example.com, Jö <j@x.example>",
            "From: =?utf-8?b?SsO2?= <j@x.example>",
        ),
        ("To: " + "a" * 1200 + "@example.com, ü@x.example", "To: =?utf-8?b?w7xAeC5leGFtcGxl?= :;"),
        # A parameter that cannot be written in RFC 2231 form goes, not the field.
        (
            'Content-Type: multipart/mixed; boundary="b1"; title*=ö',
            'Content-Type: multipart/mixed; boundary="b1"',
        ),
        (
            'Content-Type: multipart/mixed; boundary="b1"; näme=x',
            'Content-Type: multipart/mixed; boundary="b1"',
        ),
        # A UTF-8 comment is no part of the value it follows.
        ("Content-Type: text/plain; charset=utf-8 (ö)", "Content-Type: text/plain; charset=utf-8"),
        ("Content-Type: text/plain (ö); charset=utf-8", "Content-Type: text/plain; charset=utf-8"),
        # With no ASCII form, the field goes.
        ("Content-Type: tëxt/plain", None),
        ("To: " + "a" * 1200 + "@example.com, Jö <" + "b" * 1200 + "@x.example>", None),
    ],
)
def test_structured_fields_lose_an_item_never_their_structure(
    field: str, kept: str | None
) -> None:
    """A structured field holds encoded-words only where RFC 2047 §5 allows them (a
    phrase, a comment): what cannot be written in ASCII within the line limit is left
    out, one mailbox or parameter at a time, never encoded whole."""
    surrogate = pop3.ascii_surrogate(f"{field}\r\nSubject: ok\r\n\r\nbody\r\n".encode())
    _check_lines(_header_of(surrogate))
    expected = b"" if kept is None else kept.encode() + b"\r\n"
    assert surrogate == expected + b"Subject: ok\r\n\r\nbody\r\n"
    parsed = _parsed(surrogate)
    for name in ("From", "To"):
        if parsed[name] is not None:
            assert not parsed[name].defects
    if kept and kept.startswith("Content-Type"):
        assert parsed["Content-Type"].params.keys() <= {"boundary", "charset"}


def test_an_ascii_word_that_looks_encoded_is_encoded_itself() -> None:
    """``=?utf-8?b?w7w=?=`` kept as it is would read back as ``ü``: a word with ``=?``
    goes into encoded-words, so the text decodes back to itself."""
    text = "ü =?utf-8?b?w7w=?= x=?y"
    surrogate = pop3.ascii_surrogate(f"Subject: {text}\r\n\r\n".encode())
    assert b" =?utf-8?b?w7w=?= " not in surrogate
    assert str(_parsed(surrogate)["Subject"]) == text


def test_folding_aims_at_78_characters() -> None:
    """RFC 5322 §2.1.1: lines SHOULD be within 78 characters; words this short always
    allow it, but for the first, which keeps one word beside the name."""
    surrogate = pop3.ascii_surrogate(
        ("Subject: " + " ".join(["grüße"] * 60) + "\r\n\r\n").encode()
    )
    lines = _header_of(surrogate).split(b"\r\n")[:-1]
    assert len(lines) > 5
    assert all(len(line) <= 78 for line in lines[1:])
    assert lines[0].count(b" ") == 1


_LINE_END = st.sampled_from(["\r\n", "\r", "\n"])
_ADDRESS_VALUES = st.lists(
    st.tuples(field_texts, sst.mailboxes(utf8=True, quoted=False, literals=False)).map(
        lambda pair: '"{}" <{}>'.format(pair[0].replace("\\", "\\\\").replace('"', '\\"'), pair[1])
    ),
    min_size=1,
    max_size=3,
).map(", ".join)


@given(
    fields=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["Subject", "X-Note", "Content-Type"]), field_texts),
            st.tuples(st.sampled_from(["From", "To", "Cc"]), _ADDRESS_VALUES),
        ).flatmap(lambda pair: st.tuples(st.just(pair[0]), st.just(pair[1]), _LINE_END)),
        min_size=1,
        max_size=6,
    ),
    empty=_LINE_END,
    body=st.binary(max_size=60),
)
def test_any_line_ends_give_well_formed_fields_and_the_body_as_stored(
    fields: list[tuple[str, str, str]], empty: str, body: bytes
) -> None:
    """CR LF, CR alone and LF alone, mixed: the header comes out 7-bit and folded with
    CR LF, each address field parses without defects, and the body (every octet after
    the header's empty line) is byte for byte the stored one."""
    assume(not (fields[-1][2] == "\r" and empty == "\n"))  # that is one CR LF
    header = "".join(f"{name}: {text}{end}" for name, text, end in fields).encode()
    message = header + empty.encode() + body
    surrogate = pop3.ascii_surrogate(message)
    assert surrogate.endswith(empty.encode() + body)
    rewritten = surrogate[: len(surrogate) - len(empty) - len(body)]
    assert rewritten.isascii()
    parsed = _parsed(rewritten.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + b"\n")
    for name in ("From", "To", "Cc"):
        for value in parsed.get_all(name, []):
            assert not value.defects, (name, value)


def test_a_utf8_group_name_is_set_apart_from_its_colon() -> None:
    """RFC 2047 §5 (3): an encoded-word in a phrase is followed by white space or a
    special that ends it, never run into the group's colon."""
    surrogate = pop3.ascii_surrogate("To: Grüppe: a@b.example;\r\n\r\n".encode())
    assert re.search(rb"\?= :", surrogate)
    [group] = _parsed(surrogate)["To"].groups
    assert group.display_name == "Grüppe"
    assert [a.addr_spec for a in group.addresses] == ["a@b.example"]


@pytest.mark.parametrize(
    "name", ["Delivered-To", "X-Original-To", "Disposition-Notification-To", "Errors-To"]
)
def test_the_mailers_address_fields_take_no_encoded_word_in_an_address(name: str) -> None:
    stored = f"{name}: Jörg <j@b.example>, ü@x.example\r\n\r\n".encode()
    unfolded = pop3.ascii_surrogate(stored).replace(b"\r\n ", b" ")
    assert unfolded.isascii() and b" <j@b.example>, =?utf-8?b?" in unfolded
    assert unfolded.endswith(b"?= :;\r\n\r\n")  # the UTF-8 address: an empty group


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (
            "Date: Mon, 1 Jan 2024 00:00:00 +0000 (Mitteleuropäische Zeit)",
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n",
        ),
        ("MIME-Version: 1.0 (erzeugt von Bücher)", b"MIME-Version: 1.0\r\n"),
        ("Content-Transfer-Encoding: 8bit (ü)", b"Content-Transfer-Encoding: 8bit\r\n"),
        ("List-Id: Bücherliste <list.example>", b""),
        ("Date: Mon, 1 Jän 2024", b""),
    ],
)
def test_other_structured_fields_lose_utf8_comments_and_take_no_encoded_word(
    field: str, expected: bytes
) -> None:
    surrogate = pop3.ascii_surrogate(f"{field}\r\nSubject: ok\r\n\r\n".encode())
    assert surrogate == expected + b"Subject: ok\r\n\r\n"


def test_a_utf8_parameter_beside_its_rfc_2231_form_is_left_out() -> None:
    """``name="ö"; name*=utf-8''x``: the converted ``name`` would be a second
    ``name*`` (RFC 2231 §4 allows one); the one given goes as it was."""
    stored = "Content-Type: text/plain; name=\"ö\"; name*=utf-8''x\r\n\r\n".encode()
    surrogate = pop3.ascii_surrogate(stored)
    assert surrogate == b"Content-Type: text/plain; name*=utf-8''x\r\n\r\n"


@pytest.mark.parametrize("unclosed", ["(ö unclosed a@b.example", '"ö unclosed <a@b.example>'])
def test_an_unclosed_comment_or_quote_keeps_the_items_before_it(unclosed: str) -> None:
    stored = f"To: x@y.example, {unclosed}, c@d.example\r\n\r\n".encode()
    unfolded = pop3.ascii_surrogate(stored).replace(b"\r\n ", b" ")
    assert unfolded.startswith(b"To: x@y.example, =?utf-8?b?") and unfolded.isascii()
