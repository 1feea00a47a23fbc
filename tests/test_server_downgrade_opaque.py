"""Parts the 7-bit conversion (server/downgrade.py) must not rewrite: a message/partial
fragment and a message/external-body (7bit only, RFC 2046 §5.2.2, §5.2.3), another
message type that encloses no message (RFC 2046 §5.2.4; RFC 2045 §6.4, RFC 6532 §3.5),
and whatever is under a multipart/signed (RFC 1847 §2.1). With 8-bit octets they have
no 7-bit form (a bounce, 554 5.6.3, RFC 6152 §3); all 7-bit, they go octet for octet."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from relay_remote import remote
from smtpcore.server.downgrade import NotConvertible, SevenBitReader, plan_seven_bit
from test_server_relay import _relay, _run, _wait_closed

EIGHT_BIT = "Grüße aus Köln\r\n".encode()

_WHOLE = (
    b"From: john@abc.example\r\nSubject: the whole message\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b"First half: " + EIGHT_BIT + b"Second half: " + EIGHT_BIT
)
"""The message the audit cut in two fragments: the second starts in its body."""
_CUT = _WHOLE.index(b"Second half")


def _fragment(number: int, body: bytes) -> bytes:
    """A message/partial message (RFC 2046 §5.2.2.1): the fragment is its whole body."""
    return (
        b"From: john@abc.example\r\nSubject: fragment\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: message/partial; id="p1@abc.example"; number=%d; total=2\r\n\r\n' % number
    ) + body


def _mixed(*parts: bytes) -> bytes:
    return (
        b"From: john@abc.example\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
        + b"".join(b"--outer\r\n" + part + b"\r\n" for part in parts)
        + b"--outer--\r\n"
    )


def _signed(*parts: bytes, label: bytes = b"") -> bytes:
    """A multipart/signed entity (RFC 1847 §2.1): its parts, then the signature."""
    signature = (
        b"Content-Type: application/pgp-signature\r\n\r\n"
        b"-----BEGIN PGP SIGNATURE-----\r\nAAAA\r\n-----END PGP SIGNATURE-----"
    )
    return (
        b'Content-Type: multipart/signed; boundary="sig"; '
        b'protocol="application/pgp-signature"; micalg=pgp-sha256\r\n'
        + label
        + b"\r\n"
        + b"".join(b"--sig\r\n" + part + b"\r\n" for part in (*parts, signature))
        + b"--sig--"
    )


TEXT_8BIT = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
TEXT_8BIT += EIGHT_BIT

_NOT_CONVERTIBLE = {
    "partial-first-fragment": (_fragment(1, _WHOLE[:_CUT]), "message/partial"),
    "partial-second-fragment": (_fragment(2, _WHOLE[_CUT:]), "message/partial"),
    "partial-part": (
        _mixed(b"Content-Type: message/partial; id=p; number=2\r\n\r\n" + EIGHT_BIT),
        "message/partial",
    ),
    "external-body": (
        _mixed(
            b"Content-Type: message/external-body; access-type=local-file; "
            b'name="/u/x"\r\n\r\nContent-Type: text/plain\r\n\r\n' + EIGHT_BIT
        ),
        "message/external-body",
    ),
    "other-message-type": (
        _mixed(b"Content-Type: message/http\r\n\r\nGET /gr\xc3\xbc\xc3\x9fe HTTP/1.1\r\n"),
        "message/http",
    ),
    "unknown-message-type": (
        _mixed(b"Content-Type: message/x-unknown\r\n\r\nSubject: x\r\n\r\n" + EIGHT_BIT),
        "message/x-unknown",
    ),
    "signed-part": (_mixed(_signed(TEXT_8BIT)), "multipart/signed"),
    "signed-at-the-top": (
        b"From: john@abc.example\r\nMIME-Version: 1.0\r\n" + _signed(TEXT_8BIT),
        "multipart/signed",
    ),
    "deep-under-signed": (
        _mixed(
            _signed(
                b"Content-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n"
                b"Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\n" + EIGHT_BIT + b"--in--"
            )
        ),
        "multipart/signed",
    ),
    "binary-label-under-signed": (
        _mixed(TEXT_8BIT, _signed(b"Content-Transfer-Encoding: binary\r\n\r\nascii")),
        "multipart/signed",
    ),
    "binary-label-partial": (
        _mixed(
            TEXT_8BIT,
            b"Content-Type: message/partial; id=p; number=1\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\nSubject: x\r\n\r\nascii",
        ),
        "message/partial",
    ),
}


@pytest.mark.parametrize(
    ("message", "reason"), _NOT_CONVERTIBLE.values(), ids=list(_NOT_CONVERTIBLE)
)
def test_8bit_content_in_a_part_never_rewritten_is_not_convertible(
    message: bytes, reason: str
) -> None:
    """Before, a message/partial or message/external-body was converted as an enclosed
    message (fragment 2 gained a MIME header of its own, which reassembly put in the
    middle of the message), and a signed part went quoted-printable (its signature no
    longer verified)."""
    with pytest.raises(NotConvertible, match=reason):
        plan_seven_bit(io.BytesIO(message))


def _downgraded(message: bytes) -> bytes:
    plan = plan_seven_bit(io.BytesIO(message))
    with SevenBitReader(lambda: io.BytesIO(message), plan) as reader:
        return reader.read()


_SIGNED_7BIT = _signed(
    b"Content-Type: multipart/mixed; boundary=in\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b"--in\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nsigned\r\n"
    b"--in--",
    label=b"Content-Transfer-Encoding: 8bit\r\n",
)
_PARTIAL_7BIT = (
    b"Content-Type: message/partial; id=p; number=2; total=2\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nSecond half, in ASCII\r\n"
)


@pytest.mark.parametrize("kept", [_SIGNED_7BIT, _PARTIAL_7BIT], ids=["signed", "partial"])
def test_a_7bit_part_never_rewritten_goes_octet_for_octet_beside_a_converted_one(
    kept: bytes,
) -> None:
    """The 8-bit text part beside it goes quoted-printable; the signed part's octets,
    labels that say 8bit included, and the fragment are what they were. Only the
    multipart/signed's own label, outside what is signed, says 7bit now (RFC 2045 §6.4)."""
    converted = _downgraded(_mixed(TEXT_8BIT, kept))
    assert converted.isascii()
    assert b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln" in converted
    header, _, inside = kept.partition(b"\r\n\r\n")
    if kept is _SIGNED_7BIT:
        header = header.replace(b"Encoding: 8bit", b"Encoding: 7bit")
    assert b"--outer\r\n" + header + b"\r\n\r\n" + inside + b"\r\n--outer--\r\n" in converted


def test_8bit_content_under_a_multipart_signed_bounces_5_6_3_before_mail(
    tmp_path: Path,
) -> None:
    """Relayed to an exchanger without 8BITMIME: the same refusal as any message with no
    7-bit form, RFC 6152 §3's return, with the cause in the report."""
    message = _mixed(_signed(TEXT_8BIT))
    with remote(eight_bit=False) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["n1@pqr.example"], content=message, params=(("BODY", "8BITMIME"),))
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
        assert server.mail_lines == [] and server.transactions == []
    (raw,) = relay.reports()
    words = b" ".join(raw.split())
    assert b"Status: 5.6.3" in raw and b"does not offer 8BITMIME" in words
    assert b"under a multipart/signed" in words


def test_a_message_news_part_is_converted_inside_as_an_enclosed_message() -> None:
    """A message/news part encloses a news article, a message, as readers parse it:
    its 8-bit text goes quoted-printable under its own header, the article's header
    untouched (RFC 2046 §5.2.1). It was taken for an opaque message type, and its 8-bit
    octets for having no 7-bit form."""
    article = (
        b"Newsgroups: de.test\r\nSubject: Gruss\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + EIGHT_BIT
    )
    converted = _downgraded(_mixed(b"Content-Type: message/news\r\n\r\n" + article))
    assert converted.isascii()
    assert b"Content-Type: message/news\r\n\r\nNewsgroups: de.test\r\n" in converted
    assert b"Content-Transfer-Encoding: quoted-printable" in converted
    assert b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln" in converted
