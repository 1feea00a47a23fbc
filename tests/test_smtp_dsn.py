"""DSN parameters as typed values (RFC 3461 §4, RFC 6533 §3), on both sides."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtp_helpers import EHLO, codes, greeted, run
from smtpcore import LocalProtocolError
from smtpcore.address import Mailbox
from smtpcore.smtp import (
    ClientConnection,
    DSNError,
    Ehlo,
    EnhancedStatus,
    EnvelopeId,
    Extension,
    Mail,
    Notify,
    OriginalRecipient,
    Parameter,
    Parameters,
    Rcpt,
    Reply,
    Ret,
    ServerConnection,
    xtext,
)
from smtpcore.smtp._dsn import _read_notify, utf8_addr_xtext
from smtpcore.testing import ConnectionPair

# Narrow on purpose: typed DSN values and any text the RFC 3461/6533 encoders must carry,
# not only mailboxes (sst.rcpt_parameters and sst.xtexts draw the wire forms).
notifies = st.sampled_from([Notify.NEVER]) | st.sets(
    st.sampled_from([Notify.SUCCESS, Notify.FAILURE, Notify.DELAY]), min_size=1
).map(lambda flags: Notify(sum(flag.value for flag in flags)))
# Code points an ORCPT may hold: RFC 6533 §3 carries no surrogates, RFC 3461 §4.2
# allows no control, format or separator characters.
_UNPRINTABLE = ("Cc", "Cf", "Zl", "Zp")
_carried = st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp"))
addresses = st.text(_carried, min_size=1, max_size=40)


def unprintable(text: str) -> bool:
    """Whether ``text`` holds what an ENVID or ORCPT may not (RFC 3461 §4.2, §4.4): a
    control character but HTAB, a format character but ZWNJ and ZWJ, a line or
    paragraph separator."""
    return any(
        unicodedata.category(char) in _UNPRINTABLE and char not in "\t\u200c\u200d"
        for char in text
    )


@given(notifies)
def test_notify_round_trips(notify: Notify) -> None:
    assert Notify.parse(notify.to_parameter()) == notify
    assert Notify.parse(notify.to_parameter().lower()) == notify


@pytest.mark.parametrize("value", ["NEVER,FAILURE", "", "SUCCESS,SUCCESS", "SOMETIMES", "NEVER,"])
def test_bad_notify_values(value: str) -> None:
    with pytest.raises(DSNError):
        Notify.parse(value)


@given(st.sampled_from(Ret))
def test_ret_round_trips(ret: Ret) -> None:
    assert Ret.parse(ret.to_parameter().lower()) is ret


@given(st.text(min_size=1, max_size=30))
def test_envid_round_trips(text: str) -> None:
    if len(xtext(text)) > 100 or unprintable(text):
        with pytest.raises(DSNError):
            EnvelopeId(text)
        return
    envid = EnvelopeId(text)
    wire = envid.to_parameter()
    Parameters({"ENVID": wire})
    assert EnvelopeId.parse(wire) == envid


@given(addresses)
def test_utf8_orcpt_round_trips_in_both_forms(address: str) -> None:
    orcpt = OriginalRecipient("utf-8", address)
    wire = orcpt.to_parameter()
    assert wire.isascii()  # utf-8-addr-xtext: safe without SMTPUTF8
    Parameters({"ORCPT": wire})
    assert OriginalRecipient.parse(wire) == orcpt
    assert OriginalRecipient.parse(_unitext(address), utf8=True) == orcpt


def _unitext(address: str) -> str:
    """``address`` as utf-8-addr-unitext (RFC 6533 §3): its ASCII escaped as in
    utf-8-addr-xtext, the rest raw."""
    return "utf-8;" + "".join(c if not c.isascii() else utf8_addr_xtext(c) for c in address)


@example("ö" * 100 + "@x.example")
@given(st.text(_carried, min_size=1, max_size=600))
def test_a_utf8_orcpt_is_written_within_500_characters_and_read_back(address: str) -> None:
    """RFC 3461 §4.2 counts the value as sent: utf-8-addr-xtext where it fits, else the
    shorter raw UTF-8 form, which an SMTPUTF8 transaction carries (RFC 6533 §3). What
    fits in neither cannot be built."""
    if len(_unitext(address)) > 500:
        with pytest.raises(DSNError, match="longer than 500"):
            OriginalRecipient("utf-8", address)
        return
    orcpt = OriginalRecipient("utf-8", address)
    wire = orcpt.to_parameter()
    assert len(wire) <= 500
    Parameters({"ORCPT": wire})
    assert OriginalRecipient.parse(wire, utf8=True) == orcpt
    escaped = "utf-8;" + utf8_addr_xtext(address)
    assert wire == (escaped if len(escaped) <= 500 else _unitext(address))
    if wire.isascii():
        assert OriginalRecipient.parse(wire) == orcpt


@given(st.text(min_size=1, max_size=60))
def test_rfc822_orcpt_round_trips(address: str) -> None:
    if unprintable(address):
        with pytest.raises(DSNError, match="control, format or separator character"):
            OriginalRecipient("rfc822", address)
        return
    orcpt = OriginalRecipient("rfc822", address)
    assert OriginalRecipient.parse(orcpt.to_parameter()) == orcpt


def test_utf8_orcpt_forms() -> None:
    assert OriginalRecipient.of("bob@abc.example").addr_type == "rfc822"
    orcpt = OriginalRecipient.of("jörg+x@abc.example")
    assert orcpt.to_parameter() == "utf-8;j\\x{F6}rg\\x{2B}x@abc.example"
    unitext = "utf-8;jörg\\x{2B}x@abc.example"
    with pytest.raises(DSNError):
        OriginalRecipient.parse(unitext)  # raw UTF-8 needs an SMTPUTF8 transaction
    assert OriginalRecipient.parse(unitext, utf8=True) == orcpt


@pytest.mark.parametrize(
    "value",
    [
        "utf-8;a+b@c",  # "+" is not QCHAR
        "utf-8;a\\x{2b}b@c",  # lower-case hex
        "utf-8;a\\x{41}b@c",  # "A" must not be escaped
        "utf-8;a\\x{0041}b@c",  # leading zeros
        "utf-8;a\\x{D800}b@c",  # a surrogate
        "utf-8;a\\b@c",  # a bare backslash
        "rfc822;a+zz@c",  # bad xtext
        "rfc822;+FF",  # not UTF-8
        "rfc822",
        ";a@b",
    ],
)
def test_bad_orcpt_values(value: str) -> None:
    with pytest.raises(DSNError):
        OriginalRecipient.parse(value)


# -- the server machine ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mail", "rcpt", "expected"),
    [
        (b"", b"ORCPT=utf-8;j\\x{F6}rg@d.example", "250 2.1.5"),
        (b"", b"ORCPT=utf-8;j\xc3\xb6rg@d.example", "501 5.5.4"),  # unitext without SMTPUTF8
        (b" SMTPUTF8", b"ORCPT=utf-8;j\xc3\xb6rg@d.example", "250 2.1.5"),
        (b"", b"ORCPT=utf-8;a+b@d.example", "501 5.5.4"),
        (b"", b"NOTIFY=failure,delay ORCPT=rfc822;c@d.example", "250 2.1.5"),
    ],
)
def test_server_reads_orcpt_forms(mail: bytes, rcpt: bytes, expected: str) -> None:
    conn = greeted(dsn=True)
    _, out = run(
        conn,
        EHLO + b"MAIL FROM:<a@b.example>" + mail + b"\r\nRCPT TO:<c@d.example> " + rcpt + b"\r\n",
    )
    assert codes(out)[-1] == expected


# -- the client: typed values in, the same values out at the server ------------------------


def _client(lines: list[str]) -> ClientConnection:
    conn = ClientConnection("client.abc.example")
    conn.receive_data(b"220 mx ESMTP\r\n")
    conn.next_event()
    conn.send(Ehlo("client.abc.example"))
    conn.receive_data(Reply(250, ["mx", *lines]).to_bytes())
    conn.next_event()
    return conn


@given(
    notifies,
    addresses,
    st.sampled_from(Ret),
    st.text(_carried, min_size=1, max_size=20).filter(lambda text: len(xtext(text)) <= 100),
)
def test_typed_values_cross_the_wire(notify: Notify, address: str, ret: Ret, envid: str) -> None:
    pair = ConnectionPair(server=ServerConnection("mx.pqr.example", dsn=True))
    pair.send(Ehlo("client.abc.example"))
    orcpt = OriginalRecipient("utf-8", address)
    pair.send(
        Mail(Mailbox("a", "b.example"), {"RET": ret, "ENVID": EnvelopeId(envid)}),
        Rcpt(Mailbox("c", "d.example"), {"NOTIFY": notify, "ORCPT": orcpt}),
    )
    replies = [(a.reply.code, a.reply.status) for a in pair.answers[-2:]]
    assert replies == [(250, EnhancedStatus(2, 1, 0)), (250, EnhancedStatus(2, 1, 5))]
    mail, rcpt = pair.server_events[-2:]
    assert isinstance(mail, Mail) and isinstance(rcpt, Rcpt)
    assert mail.ret is ret and mail.envid == EnvelopeId(envid)
    assert rcpt.notify == notify and rcpt.orcpt == orcpt


def test_client_refuses_dsn_when_not_offered() -> None:
    client = _client(["PIPELINING"])
    with pytest.raises(LocalProtocolError, match="DSN"):
        client.send(Mail(Mailbox("a", "b.example"), {"RET": Ret.HDRS}))


def test_a_longest_orcpt_fits_the_rcpt_line() -> None:
    """RFC 3461 §4.2 allows a 500-character ORCPT, which no 512-octet line holds: with
    DSN in force the server reads the longer lines its parameters make (RFC 5321
    §4.5.3.1.4 lets extensions raise the limit); without it, the line is too long."""
    address = "a" * (500 - len("rfc822;@d.example")) + "@d.example"
    orcpt = OriginalRecipient("rfc822", address)
    assert len(orcpt.to_parameter()) == 500
    client = _client(["DSN", "PIPELINING"])
    wire = client.send(Mail(Mailbox("a", "b.example"), {"RET": Ret.HDRS, "ENVID": "x" * 100}))
    rcpt = client.send(
        Rcpt(
            Mailbox("c", "d.example"),
            {"NOTIFY": Notify.SUCCESS | Notify.FAILURE | Notify.DELAY, "ORCPT": orcpt},
        )
    )
    assert len(rcpt) > 512
    events, out = run(greeted(dsn=True), EHLO + wire + rcpt)
    assert codes(out)[1:] == ["250 2.1.0", "250 2.1.5"]
    assert isinstance(events[-1], Rcpt) and events[-1].orcpt == orcpt
    plain = greeted(dsn=False, size=False, eight_bit_mime=False, smtputf8=False)
    _, out = run(plain, EHLO + b"MAIL FROM:<a@b.example>\r\n" + rcpt)
    assert codes(out)[-1] == "500 5.5.2"
    _, out = run(greeted(dsn=True), b"HELO a.example\r\nMAIL FROM:<a@b.example>\r\n" + rcpt)
    assert codes(out)[-1] == "500 5.5.2"  # a HELO session has no extension


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<a@b.example> ENVID=QQ+0D+0ABcc:+20x@y\r\n",
        b"MAIL FROM:<a@b.example> ENVID=+00\r\n",
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> ORCPT=rfc822;a+0D+0AX:+20y@d\r\n",
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> ORCPT=utf-8;a\\x{7F}@d\r\n",
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> ORCPT=rfc822;a+C2+85@d\r\n",
        # Format characters and separators (Cf, Zl, Zp) are no more printable: Postfix
        # refuses them too (501 5.5.4).
        b"MAIL FROM:<a@b.example> ENVID=x+E2+80+AEy\r\n",  # U+202E, a bidi override
        b"MAIL FROM:<a@b.example> ENVID=x+E2+80+A8y\r\n",  # U+2028 LINE SEPARATOR
        b"MAIL FROM:<a@b.example> ENVID=x+E2+80+A9y\r\n",  # U+2029 PARAGRAPH SEPARATOR
        b"MAIL FROM:<a@b.example> ENVID=x+EF+BB+BFy\r\n",  # U+FEFF, a format character
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> ORCPT=rfc822;a+E2+80+AE@d\r\n",
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> ORCPT=utf-8;a\\x{2066}@d\r\n",
    ],
)
def test_a_decoded_control_character_is_refused(line: bytes) -> None:
    """RFC 3461 §4.2, §4.4: an ORCPT address and an ENVID hold printable characters
    and white space alone once decoded; a report writes them into a header field."""
    _, out = run(greeted(dsn=True), EHLO + line)
    assert codes(out)[-1] == "501 5.5.4"
    with pytest.raises(DSNError, match="control, format or separator character"):
        EnvelopeId("a\r\nb")
    with pytest.raises(DSNError, match="control, format or separator character"):
        OriginalRecipient.of("a\nb@d.example")
    assert EnvelopeId.parse("a+09b") == EnvelopeId("a\tb")  # white space is printable


@pytest.mark.parametrize(
    "line",
    [
        # Postfix relays every UTF-8 recipient of an SMTPUTF8 message so.
        b"MAIL FROM:<a@b.example> SMTPUTF8\r\n"
        + "RCPT TO:<jöran@d.example> ORCPT=rfc822;j+C3+B6ran@d.example\r\n".encode(),
        b"MAIL FROM:<a@b.example> ENVID=caf+C3+A9\r\n",
        # ZWNJ, which Persian needs between letters (and IDNA2008 allows in a label).
        b"MAIL FROM:<a@b.example> ENVID=+D9+85+DB+8C+E2+80+8C+D8+B1+D9+88+D9+85\r\n",
    ],
)
def test_utf8_in_an_xtext_dsn_value_is_taken(line: bytes) -> None:
    """RFC 3461 §4.2, §4.4 ask for US-ASCII once decoded, but Postfix sends an
    ``rfc822`` ORCPT of UTF-8 for every UTF-8 recipient, and passes on the ENVID it was
    given: these values only feed reports (which write them escaped), and refusing
    the RCPT or the MAIL for them bounces deliverable mail. Taken, as Postfix takes
    them."""
    _, out = run(greeted(dsn=True), EHLO + line)
    assert codes(out)[-1].startswith("250")


def test_a_raw_utf8_orcpt_is_measured_as_it_came() -> None:
    """RFC 3461 §4.2's 500 characters count the value as sent (RFC 6533 §3): a raw
    UTF-8 ORCPT of 75 characters is no longer for being 400 in utf-8-addr-xtext."""
    address = "用" * 21 + "@" + ".".join(["例" * 14] * 3) + ".jp"
    value = "utf-8;" + address
    assert len(value) == 75 and len("utf-8;" + utf8_addr_xtext(address)) > 500
    assert OriginalRecipient.of(address).to_parameter() == value
    assert OriginalRecipient.parse(value, utf8=True) == OriginalRecipient("utf-8", address)
    conn = greeted(dsn=True)
    line = f"MAIL FROM:<a@b.example> SMTPUTF8\r\nRCPT TO:<{address}> ORCPT={value}\r\n"
    events, out = run(conn, EHLO + line.encode())
    assert codes(out)[1:] == ["250 2.1.0", "250 2.1.5"]
    assert isinstance(events[-1], Rcpt) and events[-1].orcpt == OriginalRecipient("utf-8", address)
    with pytest.raises(DSNError, match="longer than 500"):
        OriginalRecipient.parse("utf-8;" + "é" * 495, utf8=True)
    with pytest.raises(DSNError, match="longer than 500"):
        OriginalRecipient("utf-8", "é" * 495)


def test_a_utf8_orcpt_too_long_escaped_goes_raw_in_an_smtputf8_transaction() -> None:
    """A typed ORCPT whose utf-8-addr-xtext form passes 500 characters is sent raw in
    an SMTPUTF8 transaction (RFC 6533 §3), and the server reads the same value; without
    SMTPUTF8 the client refuses it before a byte is sent (RFC 6531 §3.3)."""
    orcpt = OriginalRecipient.of("ö" * 100 + "@x.example")
    pair = ConnectionPair(server=ServerConnection("mx.pqr.example", dsn=True))
    pair.send(Ehlo("client.abc.example"))
    pair.send(
        Mail(Mailbox("a", "b.example"), {"SMTPUTF8": True}),
        Rcpt(Mailbox("c", "d.example"), {"ORCPT": orcpt}),
    )
    assert [a.reply.code for a in pair.answers[-2:]] == [250, 250]
    rcpt = pair.server_events[-1]
    assert isinstance(rcpt, Rcpt) and rcpt.orcpt == orcpt
    client = _client(["DSN", "SMTPUTF8", "PIPELINING"])
    client.send(Mail(Mailbox("a", "b.example")))
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        client.send(Rcpt(Mailbox("c", "d.example"), {"ORCPT": orcpt}))


def test_a_raw_utf8_orcpt_near_500_characters_fits_the_rcpt_line() -> None:
    """A raw UTF-8 ORCPT of near 500 characters (RFC 6533 §3, RFC 3461 §4.2) makes a
    RCPT line of some 1,500 octets: with SMTPUTF8 in force as well as DSN the client
    sends it and the server reads it, each counting four octets a character for the
    ORCPT. Before, both counted 500 octets: the client refused to send what the
    typed value allowed, and the server answered ``500 5.5.2 Line too long``."""
    orcpt = OriginalRecipient.of("用" * 480 + "@pqr.example")
    value = orcpt.to_parameter()
    assert len(value) < 500 < 1000 < len(value.encode())
    pair = ConnectionPair(server=ServerConnection("mx.pqr.example", dsn=True, smtputf8=True))
    pair.send(Ehlo("client.abc.example"))
    notify = Notify.SUCCESS | Notify.FAILURE | Notify.DELAY
    pair.send(
        Mail(Mailbox("a", "b.example"), {"SMTPUTF8": True}),
        Rcpt(Mailbox("c", "d.example"), {"NOTIFY": notify, "ORCPT": orcpt}),
    )
    assert [a.reply.code for a in pair.answers[-2:]] == [250, 250]
    rcpt = pair.server_events[-1]
    assert isinstance(rcpt, Rcpt) and rcpt.orcpt == orcpt
    # Without SMTPUTF8 no raw UTF-8 goes, and the limit stays what ASCII needs.
    line = f"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> ORCPT={value}\r\n"
    _, out = run(greeted(dsn=True, smtputf8=False), EHLO + line.encode())
    assert codes(out)[-1] == "500 5.5.2"


NOTIFY_TEXT = st.lists(
    st.sampled_from(["NEVER", "SUCCESS", "FAILURE", "DELAY", "never", "Delay", "", "X", " DELAY"]),
    min_size=1,
    max_size=4,
).map(",".join) | st.text(max_size=12)


@given(NOTIFY_TEXT)
def test_notify_parse_agrees_with_reading_word_by_word(value: str) -> None:
    """``Notify.parse`` looks the value up among every well-formed one; reading it word
    by word (``_read_notify``, RFC 3461 §4.1) gives the same flags, or refuses it too."""
    expected = _read_notify(value)
    if expected is None:
        with pytest.raises(DSNError):
            Notify.parse(value)
    else:
        assert Notify.parse(value) is expected


@given(
    st.sampled_from(["FULL", "full", "Hdrs", "HDRS", "", "FULLY", "H DRS"]) | st.text(max_size=5)
)
def test_ret_parse_reads_full_and_hdrs_in_any_case(value: str) -> None:
    if value.upper() in ("FULL", "HDRS"):
        assert Ret.parse(value) is Ret(value.upper())
    else:
        with pytest.raises(DSNError):
            Ret.parse(value)


_ASCII_ONLY_VALUES = [
    ("MAIL", "ENVID=café"),
    ("MAIL", "RET=FÜLL"),
    ("RCPT", "NOTIFY=FAILURE,DELAŸ"),
    ("MAIL", "SIZE=\uff11\uff10"),  # fullwidth digits
    ("MAIL", "BODY=8BITMİME"),
    ("MAIL", "AUTH=jörg@b.example"),  # xtext (RFC 4954 §5)
    ("MAIL", "AUTH=<>\u00a0"),
]


@pytest.mark.parametrize(("verb", "parameter"), _ASCII_ONLY_VALUES)
def test_a_utf8_value_where_the_grammar_has_none_is_refused_alike_with_smtputf8(
    verb: str, parameter: str
) -> None:
    """RFC 3461 §4 (xtext, keywords), which RFC 6533 leaves as it is for all but
    ORCPT: a raw UTF-8 ENVID was told ``Non-ASCII ENVID value needs SMTPUTF8``, and
    with SMTPUTF8 refused as no xtext. It is malformed in either transaction, and
    refused in the parameter's own words in both."""
    answers = []
    for smtputf8 in ("", " SMTPUTF8"):
        mail = f"MAIL FROM:<a@b.example>{smtputf8}"
        if verb == "MAIL":
            lines = f"{mail} {parameter}\r\n"
        else:
            lines = f"{mail}\r\nRCPT TO:<c@d.example> {parameter}\r\n"
        conn = greeted(dsn=True, smtputf8=True, auth_mechanisms=["PLAIN"], auth_require_tls=False)
        _, out = run(conn, EHLO + lines.encode())
        answers.append(out.decode().split("\r\n")[-2])
    assert answers[0] == answers[1]
    assert answers[0].startswith("501 5.5.4 ") and "SMTPUTF8" not in answers[0]


def test_a_raw_utf8_orcpt_still_needs_smtputf8() -> None:
    """ORCPT's grammar takes UTF-8 (RFC 6533 §3): outside SMTPUTF8 it is told so."""
    lines = "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> ORCPT=utf-8;jörg@d.example\r\n"
    _, out = run(greeted(dsn=True, smtputf8=True), EHLO + lines.encode())
    assert out.decode().split("\r\n")[-2] == "501 5.5.4 Non-ASCII ORCPT value needs SMTPUTF8"


@pytest.mark.parametrize("utf8", [False, True])
def test_a_client_refuses_a_utf8_envid_in_its_own_words_with_or_without_smtputf8(
    utf8: bool,
) -> None:
    client = _client(["DSN", "SMTPUTF8"])
    params: dict[str, object] = {"ENVID": "café"}
    if utf8:
        params["SMTPUTF8"] = True
    with pytest.raises(LocalProtocolError) as refused:
        client.send(Mail(Mailbox("a", "b.example"), params))  # type: ignore[arg-type]  # raw text
    assert "SMTPUTF8" not in str(refused.value) and "ENVID" in str(refused.value)


def test_every_known_parameter_but_orcpt_takes_no_utf8() -> None:
    """xtext, keywords, digits and no value at all: of the known grammars, only
    ORCPT's has room for UTF-8 (RFC 6533 §3); RFC 6531 §3.3 adds it to no other."""
    from smtpcore.smtp._ext import KNOWN

    takes = {
        (parameter.keyword, parameter.takes_utf8)
        for extension in KNOWN
        for parameter in (*extension.mail_parameters, *extension.rcpt_parameters)
    }
    assert {keyword for keyword, utf8 in takes if utf8} == {"ORCPT"}
    assert {"AUTH", "MT-PRIORITY", "BY", "HOLDFOR", "HOLDUNTIL"} <= {k for k, _ in takes}


@pytest.mark.parametrize(
    ("keyword", "value", "offered"),
    [
        ("AUTH", "jörg@b.example", "AUTH PLAIN"),
        ("MT-PRIORITY", "\uff13", "MT-PRIORITY"),  # a fullwidth 3
        ("BY", "\uff11\uff10;R", "DELIVERBY"),
        ("HOLDFOR", "\uff16\uff10", "FUTURERELEASE"),
        ("HOLDUNTIL", "2030-01-01T00:00:00Z\u200b", "FUTURERELEASE"),
    ],
)
@pytest.mark.parametrize("utf8", [False, True])
def test_a_client_refuses_a_utf8_value_of_an_ascii_grammar_in_its_own_words(
    keyword: str, value: str, offered: str, utf8: bool
) -> None:
    """AUTH's xtext and the digits of the parameters the client only checks: a UTF-8
    value is malformed, never one that SMTPUTF8 would let through."""
    client = _client([offered, "8BITMIME", "SMTPUTF8"])
    params: dict[str, object] = {keyword: value}
    if utf8:
        params["SMTPUTF8"] = True
    with pytest.raises(LocalProtocolError) as refused:
        client.send(Mail(Mailbox("a", "b.example"), params))  # type: ignore[arg-type]  # raw text
    assert "SMTPUTF8" not in str(refused.value) and keyword in str(refused.value)


def test_an_entry_that_takes_no_utf8_is_held_to_it_whatever_its_parser_takes() -> None:
    """An application's parameter said to take no UTF-8 whose parser takes any text:
    a UTF-8 value is refused as malformed all the same, in either transaction."""
    x_tag = Extension(
        "X-TAG", "", "tags", mail_parameters=(Parameter("X-TAG", str, str, takes_utf8=False),)
    )
    for smtputf8 in ("", " SMTPUTF8"):
        conn = greeted(smtputf8=True, extra_extensions=[x_tag])
        line = f"MAIL FROM:<a@b.example>{smtputf8} X-TAG=tëg\r\n"
        _, out = run(conn, EHLO + line.encode())
        assert out.decode().split("\r\n")[-2] == "501 5.5.4 Malformed X-TAG value"
    _, out = run(greeted(extra_extensions=[x_tag]), EHLO + b"MAIL FROM:<a@b.example> X-TAG=t\r\n")
    assert codes(out)[-1] == "250 2.1.0"
