"""The BODY parameter a relayed message goes with (RFC 6152 §2): a queued ``BODY=7BIT``
is the sender's word, which the server does not check, and a message that said 7BIT
but holds 8-bit octets went on to an 8BITMIME exchanger still labelled ``BODY=7BIT``
(the same relay converted it for an exchanger without 8BITMIME, seeing the 8 bits)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Final

import pytest

from relay_remote import remote
from smtpcore.asyncio import SMTPClient
from smtpcore.server.crlfreader import CRLFReader
from test_server_relay import _relay, _run, _wait_closed

SAID_7BIT = "From: john@abc.example\r\nSubject: said 7bit\r\n\r\nsaid 7bit but é\r\n".encode()


def _lmtp_client(host: str, port: int, **options: Any) -> SMTPClient:
    """The relay's client as an embedding application may build it for an LMTP next hop."""
    return SMTPClient(host, port, lmtp=True, **options)


@pytest.mark.parametrize("value", ["7BIT", "7bit"])
@pytest.mark.parametrize("next_hop", ["DATA", "BDAT", "LMTP"])
def test_8bit_content_queued_as_7bit_goes_as_8bitmime_to_an_8bitmime_exchanger(
    tmp_path: Path, next_hop: str, value: str
) -> None:
    with remote(eight_bit=True, chunking=next_hop == "BDAT") as server:
        if next_hop == "LMTP":
            relay = _relay(tmp_path, server.port, client_factory=_lmtp_client)
        else:
            relay = _relay(tmp_path, server.port)
        relay.enqueue(["n1@pqr.example"], content=SAID_7BIT, params=(("BODY", value),))
        _run(relay, relay.empty)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert b" BODY=8BITMIME" in transaction.mail_line
    assert b"7BIT" not in transaction.mail_line.upper().replace(b"8BITMIME", b"")
    assert transaction.content == SAID_7BIT
    assert relay.reports() == []
    if next_hop == "LMTP":
        assert b"LHLO" in server.verbs
    if next_hop == "BDAT":
        assert b"BDAT" in server.verbs


def test_8bit_content_queued_as_7bit_goes_converted_to_an_exchanger_without_8bitmime(
    tmp_path: Path,
) -> None:
    """As before: 7BIT is the default there, and the 8 bits go quoted-printable."""
    with remote(eight_bit=False) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["n1@pqr.example"], content=SAID_7BIT, params=(("BODY", "7BIT"),))
        _run(relay, relay.empty)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert b"BODY" not in transaction.mail_line
    assert transaction.content.isascii() and b"said 7bit but =C3=A9" in transaction.content


@pytest.mark.parametrize("queued", [None, "7BIT", "8BITMIME"])
def test_8bit_content_goes_as_binarymime_by_bdat_to_an_exchanger_without_8bitmime(
    tmp_path: Path, queued: str | None
) -> None:
    """RFC 3030 §3, RFC 6152 §3: to an exchanger that offers BINARYMIME and CHUNKING but
    not 8BITMIME, 8-bit content goes as ``BODY=BINARYMIME`` by BDAT, as it is; it went
    with no ``BODY`` (7BIT), its 8-bit octets unconverted."""
    with remote(eight_bit=False, chunking=True, extra_ehlo=(b"BINARYMIME",)) as server:
        relay = _relay(tmp_path, server.port)
        params = () if queued is None else (("BODY", queued),)
        relay.enqueue(["n1@pqr.example"], content=SAID_7BIT, params=params)
        _run(relay, relay.empty)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert transaction.mail_line == b"MAIL FROM:<john@abc.example> BODY=BINARYMIME\r\n"
    assert b"BDAT" in server.verbs and b"DATA" not in server.verbs
    assert transaction.content == SAID_7BIT
    assert relay.reports() == []


def test_8bit_content_goes_converted_to_an_exchanger_with_binarymime_but_no_chunking(
    tmp_path: Path,
) -> None:
    """BINARYMIME goes by BDAT alone (RFC 3030 §3): without CHUNKING the exchanger takes
    no 8-bit octet, and the content goes converted by DATA with no ``BODY``; it went
    as it was, 8-bit octets under an implied 7BIT."""
    with remote(eight_bit=False, chunking=False, extra_ehlo=(b"BINARYMIME",)) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["n1@pqr.example"], content=SAID_7BIT, params=(("BODY", "7BIT"),))
        _run(relay, relay.empty)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert b"BODY" not in transaction.mail_line and b"DATA" in server.verbs
    assert transaction.content.isascii() and b"said 7bit but =C3=A9" in transaction.content


BINARY_ONLY: Final = {"eight_bit": False, "chunking": True, "extra_ehlo": (b"BINARYMIME",)}
"""An exchanger that takes 8-bit octets only as ``BODY=BINARYMIME`` by BDAT."""


def _relayed_to_binary_only(
    tmp_path: Path, content: bytes, params: tuple[tuple[str, str], ...] = ()
) -> tuple[Any, list[bytes]]:
    """The one transaction ``content`` made at a binary-only exchanger offering SIZE,
    and the verbs it saw."""
    with remote(size=100000, **BINARY_ONLY) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["n1@pqr.example"], content=content, params=params)
        _run(relay, relay.empty)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert relay.reports() == []
    return transaction, list(server.verbs)


@pytest.mark.parametrize("queued", [None, "7BIT", "8BITMIME"])
def test_7bit_content_goes_with_no_body_to_a_binary_only_exchanger(
    tmp_path: Path, queued: str | None
) -> None:
    """Declared binary, 7-bit content would be taken for binary by the next hop, which
    would then pass it on only to a hop with BINARYMIME (as this relay does): it goes
    with no ``BODY``, by BDAT; it went as ``BODY=BINARYMIME``."""
    content = b"From: john@abc.example\r\nSubject: ascii\r\n\r\nplain text\r\n"
    params = () if queued is None else (("BODY", queued),)
    transaction, verbs = _relayed_to_binary_only(tmp_path, content, params)
    assert transaction.mail_line == b"MAIL FROM:<john@abc.example> SIZE=%d\r\n" % len(content)
    assert b"BDAT" in verbs and transaction.content == content


def test_8bit_content_goes_with_crlf_line_ends_to_a_binary_only_exchanger(
    tmp_path: Path,
) -> None:
    """A lenient queue may hold bare LF and lone CR, which every other hop gets as CRLF:
    so does a binary-only exchanger, though the content goes as ``BODY=BINARYMIME``
    (declared ``SIZE`` the queue file's, an estimate as on the 8BITMIME path); it got
    them as they were queued."""
    content = "From: john@abc.example\nSubject: bare\r\n\r\ncafé\nline two\rthree\r".encode()
    transaction, verbs = _relayed_to_binary_only(tmp_path, content)
    assert transaction.mail_line == (
        b"MAIL FROM:<john@abc.example> BODY=BINARYMIME SIZE=%d\r\n" % len(content)
    )
    assert b"BDAT" in verbs and b"DATA" not in verbs
    crlf = "From: john@abc.example\r\nSubject: bare\r\n\r\ncafé\r\nline two\r\nthree\r\n"
    assert transaction.content == crlf.encode()


def test_content_queued_as_binarymime_still_goes_as_it_is(tmp_path: Path) -> None:
    """A queued ``BODY=BINARYMIME`` is binary: its bare LF and lone CR are its octets."""
    content = b"From: john@abc.example\r\n\r\n\x00\xff\nbare\rcr\r\n"
    transaction, _ = _relayed_to_binary_only(tmp_path, content, (("BODY", "BINARYMIME"),))
    assert transaction.mail_line == (
        b"MAIL FROM:<john@abc.example> SIZE=%d BODY=BINARYMIME\r\n" % len(content)
    )
    assert transaction.content == content


@pytest.mark.parametrize("read_size", [1, 2, 3, 64])
def test_the_crlf_reader_reads_again_from_the_start(read_size: int) -> None:
    """The client sends a message again in a new transaction (LIMITS, RFC 5321
    §4.5.3.1.8) after a seek back to the start: the same CRLF octets, a CR that
    ended one read joined to the LF that began the next."""
    queued = b"a\rb\nc\r\nd\r"
    with CRLFReader(io.BytesIO(queued)) as reader:
        for _ in range(2):
            assert reader.tell() == 0
            read = b"".join(iter(lambda: reader.read(read_size) or b"", b""))
            assert read == b"a\r\nb\r\nc\r\nd\r\n" and reader.tell() == len(read)
            assert reader.seek(0) == 0
