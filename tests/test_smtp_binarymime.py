"""BINARYMIME (RFC 3030 §3) on the server machine: BODY=BINARYMIME only with CHUNKING,
its content only in BDAT chunks, and no line rules for it."""

from __future__ import annotations

from smtp_helpers import EHLO, codes, content_of, greeted, run

BINARY_MAIL = b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\n"


def test_binarymime_is_off_by_default() -> None:
    _, out = run(greeted(), EHLO + BINARY_MAIL)
    assert b"BINARYMIME" not in out
    assert codes(out)[1] == "501 5.5.4"


def test_binarymime_needs_chunking() -> None:
    _, out = run(greeted(binarymime=True, chunking=False), EHLO + BINARY_MAIL)
    assert b"BINARYMIME" not in out
    assert codes(out)[1] == "501 5.5.4"


def test_binarymime_is_offered_and_accepted() -> None:
    conn = greeted(binarymime=True)
    _, out = run(conn, EHLO + BINARY_MAIL)
    assert b"250 BINARYMIME\r\n" in out
    assert codes(out)[1:] == ["250 2.1.0", "250 2.1.5"]
    assert conn.binary_transaction


def test_data_is_refused_for_binary_content() -> None:
    conn = greeted(binarymime=True)
    _, out = run(conn, EHLO + BINARY_MAIL + b"DATA\r\n")
    assert codes(out)[-1] == "503 5.5.1"
    chunk = b"\x00\xff\r.\r\n\n" * 300
    events, out = run(conn, b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    assert content_of(events) == chunk
    assert codes(out) == ["250 2.0.0"]
    assert not conn.binary_transaction


def test_rset_ends_the_binary_transaction() -> None:
    conn = greeted(binarymime=True)
    run(conn, EHLO + BINARY_MAIL + b"RSET\r\n")
    assert not conn.binary_transaction
    _, out = run(conn, b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    assert codes(out)[-1] == "354"
