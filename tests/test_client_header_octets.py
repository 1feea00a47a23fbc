"""8-bit header fields in content given as octets need SMTPUTF8, as an email message's do.

RFC 6532 §3 allows UTF-8 in header fields only in an SMTPUTF8 transaction: RFC 6531
§3.4 has the client say SMTPUTF8 on MAIL for it, and §3.2 keeps such a message from a
server without the extension. An :class:`~email.message.Message` got that; the same
message as bytes (or a file ``python -m smtpcore send`` read) went without SMTPUTF8,
raw, even to a server that does not offer it. The clients (sync, asyncio, trio) share
one envelope, checked here against scripted servers with and without SMTPUTF8.
"""

from __future__ import annotations

import email
import email.policy
import io
import smtplib
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import smtpcore.__main__ as cli
from peers import ADAPTERS, make_tls_files, module, run
from relay_remote import LOOPBACK, remote
from smtpcore._driver._header_octets import MAX_HEADER_SECTION, utf8_header_fields
from smtpcore._driver._smtp_envelope import Envelope, Offer, build_envelope
from smtpcore._driver._smtp_errors import ExtensionNotOffered
from smtpcore.server._queue_content import MAX_HEADER
from smtpcore.server.sendstatus import EX_UNAVAILABLE
from smtpcore.smtp import Reply
from smtpcore.smtp._extensions import ServerExtensions
from smtpcore.sync import SMTPClient as SyncSMTPClient
from smtpcore.testing import ScriptedServer, script
from test_cli_serve import _until, serve

SENDER, RECIPIENT = "a@abc.example", "b@pqr.example"
UTF8_SUBJECT = "From: a@abc.example\r\nTo: b@pqr.example\r\nSubject: grüße\r\n\r\nhi\r\n".encode()


def _offer(*keywords: str) -> Offer:
    return Offer.of(ServerExtensions.from_reply(Reply(250, ["mx.example", *keywords])))


WITH_SMTPUTF8 = _offer("8BITMIME", "SMTPUTF8")
WITHOUT_SMTPUTF8 = _offer("8BITMIME")


def _envelope(offer: Offer, content: Any, **given: Any) -> Envelope:
    return build_envelope(offer, content, SENDER, [RECIPIENT], given or None, None)


#: Content, and whether its header section holds 8-bit octets (the header section as a
#: receiver's parser reads it).
HEADER_SECTIONS: dict[str, tuple[bytes, bool]] = {
    "utf-8 subject": (UTF8_SUBJECT, True),
    "bare LF line ends": (b"Subject: gr\xc3\xbc\xc3\x9fe\n\nhi\n", True),
    "bare CR line ends": (b"To: b@pqr.example\rSubject: \xc3\xa9\r\rhi\r", True),
    "no empty line: all header": (b"To: b@pqr.example\r\nSubject: \xc3\xa9\r\n", True),
    "no line end at all": (b"Subject: \xc3\xa9", True),
    "a folded line": (b"Subject: one\r\n  caf\xc3\xa9\r\n\r\nhi\r\n", True),
    "obsolete space before the colon": (b"Subject : \xc3\xa9\r\n\r\nhi\r\n", True),
    "an mbox From line first": (b"From a@abc.example Mon\r\nSubject: \xc3\xa9\r\n\r\n", True),
    "an mbox From line is no field": (
        "From jörg@abc.example Mon Jan  1 00:00:00 2024\r\nSubject: hi\r\n\r\n".encode(),
        False,
    ),
    "a first line folded is no header": ("  Grüße,\r\n  Jorg\r\n".encode(), False),
    "a fold after an mbox From line": ("From a@abc.example Mon\r\n  Grüße\r\n".encode(), False),
    "utf-8 in the body only": (b"Subject: hi\r\n\r\ngr\xc3\xbc\xc3\x9fe\r\n", False),
    "an empty first line: no header": (b"\r\nSubject: \xc3\xa9\r\n", False),
    "a first line that is no field": (b"gr\xc3\xbc\xc3\x9fe\r\nSubject: x\r\n", False),
    "a line that is no field ends it": (b"Subject: x\r\nno field \xc3\xa9\r\n", False),
    "utf-8 beside a latin-1 field": (
        "Subject: grüße\r\n".encode() + b"X-Old: caf\xe9\r\n\r\nhi\r\n",
        True,
    ),
    "latin-1 before a utf-8 field": (
        b"Received: from J\xf6rg\r\n" + "Subject: grüße\r\n\r\nhi\r\n".encode(),
        True,
    ),
}


@pytest.mark.parametrize("name", list(HEADER_SECTIONS))
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_octets_whose_header_section_is_8_bit_need_smtputf8(name: str, kind: type) -> None:
    """Offered, SMTPUTF8 goes on MAIL; not offered, 553 5.6.7 before MAIL. 8-bit octets
    past the header section are the body's, which 8BITMIME carries either way."""
    octets, needs = HEADER_SECTIONS[name]
    content = kind(octets)
    mail = _envelope(WITH_SMTPUTF8, content).mail
    assert ("SMTPUTF8" in mail.params) is needs
    assert mail.params["BODY"] == "8BITMIME"
    if not needs:
        assert _envelope(WITHOUT_SMTPUTF8, content).mail.params["BODY"] == "8BITMIME"
        return
    with pytest.raises(ExtensionNotOffered) as refused:
        _envelope(WITHOUT_SMTPUTF8, content)
    assert refused.value.reply is not None
    assert (refused.value.reply.code, str(refused.value.reply.status)) == (553, "5.6.7")
    assert "needed for its UTF-8 header fields" in str(refused.value)


@pytest.mark.parametrize(
    "name", [name for name in HEADER_SECTIONS if name != "obsolete space before the colon"]
)
def test_octets_need_smtputf8_as_the_same_message_parsed_does(name: str) -> None:
    """The bytes and :func:`email.message_from_bytes` of them agree (the audit found
    them apart). Not for ``Subject :``, whose obsolete space ends the header section
    in :mod:`email`'s parser (the docs say so) but not in RFC 5322 §4.5.3's."""
    octets, needs = HEADER_SECTIONS[name]
    for policy in (email.policy.compat32, email.policy.default):
        parsed = email.message_from_bytes(octets, policy=policy)
        mail = build_envelope(WITH_SMTPUTF8, parsed, SENDER, [RECIPIENT], None, None).mail
        assert ("SMTPUTF8" in mail.params) is needs


LATIN1_FROM = b"From: J\xf6rg <a@abc.example>\r\n\r\nhi\r\n"


@pytest.mark.parametrize("offer", [WITH_SMTPUTF8, WITHOUT_SMTPUTF8], ids=["smtputf8", "8bitmime"])
def test_8_bit_header_octets_that_are_no_utf8_go_as_8bitmime(offer: Offer) -> None:
    """A Latin-1 name from old mail is no UTF-8 header field (RFC 6532 allows UTF-8
    only): it goes as 8-bit content did, BODY=8BITMIME and no SMTPUTF8 (it was
    refused 553 by a server without SMTPUTF8, and made SMTPUTF8 by one with it)."""
    assert dict(_envelope(offer, LATIN1_FROM).mail.params) == {"BODY": "8BITMIME"}
    assert dict(_envelope(offer, b"Subject: x\r\n" + LATIN1_FROM).mail.params) == {
        "BODY": "8BITMIME"
    }


def test_8_bit_header_octets_that_are_no_utf8_need_8bitmime() -> None:
    """To a server without 8BITMIME they are 8-bit content, refused 554 5.6.3 as before."""
    with pytest.raises(ExtensionNotOffered, match="needed for 8-bit content"):
        _envelope(_offer("SIZE"), LATIN1_FROM)


def test_an_email_message_with_latin1_header_octets_is_still_refused() -> None:
    """The :class:`~email.message.Message` path is as it was: its 8-bit fields, UTF-8
    or not, need SMTPUTF8."""
    parsed = email.message_from_bytes(LATIN1_FROM, policy=email.policy.compat32)
    with pytest.raises(ExtensionNotOffered, match="needed for its 8-bit header fields"):
        build_envelope(WITHOUT_SMTPUTF8, parsed, SENDER, [RECIPIENT], None, None)


# -- the look's bound ------------------------------------------------------------------------


def test_many_short_header_lines_take_memory_bounded_by_the_content() -> None:
    """A million folded lines (2 MB): the look took a regex mark per line, 283 MB; it
    now searches, within the first :data:`MAX_HEADER_SECTION` octets."""
    content = b"a:\n" + b" \n" * 1_000_000 + "é".encode()
    tracemalloc.start()
    try:
        build_envelope(WITH_SMTPUTF8, content, SENDER, [RECIPIENT], None, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_HEADER_SECTION


def test_utf8_past_the_bound_is_not_looked_at() -> None:
    """The header section is read to :data:`MAX_HEADER_SECTION` at most, the bound the
    reference server's relay reads a queued header to (``QueuedContent.header``)."""
    assert MAX_HEADER == MAX_HEADER_SECTION
    lines = b"X: " + b"x" * 90 + b"\r\n"
    filler = lines * (MAX_HEADER_SECTION // len(lines) + 1)
    late = filler + "Subject: grüße\r\n\r\nhi\r\n".encode()
    assert "SMTPUTF8" not in _envelope(WITH_SMTPUTF8, late).mail.params
    assert "SMTPUTF8" in _envelope(WITH_SMTPUTF8, late[len(lines) * 10 :]).mail.params


def test_only_whole_utf8_characters_within_the_bound_count() -> None:
    """A character cut by the bound is not one: only what lies wholly within it counts,
    as past it nothing does."""
    content = "Subject: grüße\r\n".encode()
    cut = content.index("ü".encode()) + 1
    assert not utf8_header_fields(content, limit=cut)
    assert utf8_header_fields(content, limit=cut + 1)
    assert not utf8_header_fields(b"Subject: gr\xfc\xc3", limit=13)


def _header_to_the_bound(last: bytes) -> bytes:
    """ASCII header lines, and a line whose last octet within the bound is ``last``."""
    lines = b"X: " + b"x" * 90 + b"\r\n"
    filler = lines * ((MAX_HEADER_SECTION - 100) // len(lines))
    long_line = b"X-Long: " + b"y" * (MAX_HEADER_SECTION - len(filler) - 8 - len(last))
    return filler + long_line + last


def test_a_latin1_octet_last_within_the_bound_is_8bitmime() -> None:
    """A header section longer than the bound whose Latin-1 octet is the bound's last
    was taken as a character the cut might have split, and refused 553."""
    content = _header_to_the_bound(b"\xe9") + b"\r\n\r\nhi\r\n"
    assert content.index(b"\xe9") == MAX_HEADER_SECTION - 1
    assert dict(_envelope(WITHOUT_SMTPUTF8, content).mail.params) == {"BODY": "8BITMIME"}


def test_content_the_bound_long_ending_in_a_lead_octet_is_8bitmime() -> None:
    """Content exactly the bound long, ending in a lone 0xC3, holds no character."""
    content = _header_to_the_bound(b"\xc3")
    assert len(content) == MAX_HEADER_SECTION
    assert dict(_envelope(WITHOUT_SMTPUTF8, content).mail.params) == {"BODY": "8BITMIME"}


def test_octets_that_only_look_like_utf8_are_no_character() -> None:
    """RFC 3629 §4: overlong forms, surrogates and leads past U+10FFFF are not UTF-8,
    whereas Latin-1 ``Ã©`` (0xC3 0xA9) spells ``é`` and counts: octets cannot tell."""
    for octets in (b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xbf"):
        assert not utf8_header_fields(b"Subject: " + octets + b"\r\n\r\n"), octets
    for octets in ("é€𐍈".encode(), b"\xc3\xa9"):
        assert utf8_header_fields(b"Subject: " + octets + b"\r\n\r\n"), octets


def test_ascii_octets_and_given_smtputf8_are_as_they_were() -> None:
    """ASCII content takes no SMTPUTF8 of its own; a caller's SMTPUTF8 stays the one."""
    assert "SMTPUTF8" not in _envelope(WITH_SMTPUTF8, b"Subject: hi\r\n\r\nhi\r\n").mail.params
    given = _envelope(WITH_SMTPUTF8, UTF8_SUBJECT, SMTPUTF8=None).mail
    assert list(given.params).count("SMTPUTF8") == 1


def test_a_file_is_not_read_before_it_is_sent(tmp_path: Path) -> None:
    """A file (or an iterable) is read only once the server takes the content: its
    header section is not looked at, as its 8-bit-ness is not (the docs say so and
    name ``mail_params={"SMTPUTF8": None}``)."""
    path = tmp_path / "message.eml"
    path.write_bytes(UTF8_SUBJECT)
    with path.open("rb") as file:
        mail = _envelope(WITHOUT_SMTPUTF8, file).mail
        assert file.tell() == 0
    assert "SMTPUTF8" not in mail.params


def test_a_forwarder_passes_received_mail_on_as_a_file() -> None:
    """What the docs and the CHANGELOG tell a forwarder: the same octets as a file go
    as they are, as before (BODY=8BITMIME); ``mail_params`` makes them SMTPUTF8."""
    as_file = _envelope(WITHOUT_SMTPUTF8, io.BytesIO(UTF8_SUBJECT)).mail
    assert dict(as_file.params) == {"BODY": "8BITMIME"}
    given = _envelope(WITH_SMTPUTF8, io.BytesIO(UTF8_SUBJECT), SMTPUTF8=None).mail
    assert "SMTPUTF8" in given.params


# -- the clients, against scripted servers ---------------------------------------------------

GREETING = "S: 220 scripted.test ESMTP\nC~ EHLO .+\n"
OFFERING = "S: 250-scripted.test\nS: 250-8BITMIME\nS: 250 SMTPUTF8\n"
NOT_OFFERING = "S: 250-scripted.test\nS: 250 8BITMIME\n"
TRANSACTION = """
C: MAIL FROM:<a@abc.example> BODY=8BITMIME SMTPUTF8
S: 250 2.1.0 ok
C: RCPT TO:<b@pqr.example>
S: 250 2.1.5 ok
C: DATA
S: 354 go
C: From: a@abc.example
C: To: b@pqr.example
C: Subject: grüße
C:
C: hi
C: .
S: 250 2.0.0 queued
"""
QUIT = "C: QUIT\nS: 221 2.0.0 bye\n"


def _send(flavour: str, port: int) -> None:
    """``UTF8_SUBJECT`` as bytes, with the ``flavour`` client (asyncio, trio or sync)."""
    if flavour == "sync":
        with SyncSMTPClient("127.0.0.1", port, timeout=5) as blocking:
            blocking.send_message(UTF8_SUBJECT, SENDER, [RECIPIENT])
        return

    async def session() -> None:
        async with module(flavour).SMTPClient("127.0.0.1", port) as client:
            await client.send_message(UTF8_SUBJECT, SENDER, [RECIPIENT])

    run(flavour, session)


@pytest.mark.parametrize("flavour", [*ADAPTERS, "sync"])
def test_each_client_says_smtputf8_for_utf8_header_octets(flavour: str) -> None:
    """MAIL carried BODY=8BITMIME alone (the script fails on any other line)."""
    with ScriptedServer(script(GREETING + OFFERING + TRANSACTION + QUIT)) as server:
        _send(flavour, server.port)


@pytest.mark.parametrize("flavour", [*ADAPTERS, "sync"])
def test_each_client_refuses_utf8_header_octets_to_a_server_without_smtputf8(
    flavour: str,
) -> None:
    """Refused before MAIL, 553 5.6.7, and the session QUITs; the header went raw."""
    with (
        ScriptedServer(script(GREETING + NOT_OFFERING + QUIT)) as server,
        pytest.raises(ExtensionNotOffered) as refused,
    ):
        _send(flavour, server.port)
    assert refused.value.reply is not None and refused.value.reply.code == 553
    assert "needed for its UTF-8 header fields" in str(refused.value)


# -- python -m smtpcore send FILE --------------------------------------------------------------


def _send_file(port: int, path: Path, *options: str) -> int:
    return cli.main(
        [
            *("send", "--server", f"127.0.0.1:{port}", "--helo", "client.abc.example"),
            *("--from", SENDER, "--to", RECIPIENT, *options, str(path)),
        ]
    )


def test_send_says_smtputf8_for_a_file_with_utf8_header_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(UTF8_SUBJECT)
    with ScriptedServer(script(GREETING + OFFERING + TRANSACTION + QUIT)) as server:
        assert _send_file(server.port, path) == 0, capsys.readouterr().out


def test_send_refuses_a_file_with_utf8_header_fields_to_a_server_without_smtputf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """69, as for a UTF-8 address: the file's header went raw and send exited 0."""
    path = tmp_path / "message.eml"
    path.write_bytes(UTF8_SUBJECT)
    with ScriptedServer(script(GREETING + NOT_OFFERING + QUIT)) as server:
        assert _send_file(server.port, path) == EX_UNAVAILABLE
    out = capsys.readouterr().out
    assert "not sent" in out and "needed for its UTF-8 header fields" in out


# -- the reference server, submission to relay ------------------------------------------------


def test_the_relay_bounces_a_sent_utf8_header_as_it_bounces_smtplibs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``send FILE`` to ``serve``, which relays to an exchanger without SMTPUTF8: the
    message is bounced 553 5.6.7 before MAIL, as the same message submitted by smtplib
    with SMTPUTF8 is (it was relayed raw: submitted without SMTPUTF8, nothing told the
    relay its header needed it, RFC 6531 §3.4)."""
    path = tmp_path / "message.eml"
    path.write_bytes(UTF8_SUBJECT)
    tls = make_tls_files(tmp_path)
    options = ("--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file))
    with remote(smtputf8=False) as exchanger:
        relay = ("--relay-host", f"{LOOPBACK}:{exchanger.port}")
        with serve(
            tmp_path / "abc",
            "abc.example",
            [f"{SENDER}:pw"],
            listeners=("submission",),
            extra=options + relay,
        ) as abc:
            port = abc.ports["submission"]
            login = ("--starttls", "--cafile", str(tls.ca_file), "--user", SENDER)
            sent = _send_file(port, path, *login, "--password", "pw")
            assert sent == 0, capsys.readouterr().out
            with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
                smtp.starttls(context=tls.client_context)
                smtp.login(SENDER, "pw")
                smtp.sendmail(SENDER, [RECIPIENT], UTF8_SUBJECT, ["SMTPUTF8", "BODY=8BITMIME"])
            bounced = "dsn=5.6.7, status=bounced (553 5.6.7 the message needs SMTPUTF8"
            _until(lambda: abc.log().count(bounced) == 2, "both bounces", abc)
            assert abc.stop() == 0
        assert exchanger.mail_lines == []
