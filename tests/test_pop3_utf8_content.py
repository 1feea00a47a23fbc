"""``HeaderScan``: whether a message needs UTF-8 mode (RFC 6856 §2.1), read from its
chunks only until its header ends, wherever the chunks are cut."""

from __future__ import annotations

import pytest

from smtpcore import pop3

CASES = [
    (b"Subject: hi\r\n\r\nbody \xc3\xbc\r\n", False),  # an 8-bit body is 8BITMIME
    (b"Subject: gr\xc3\xbc\xc3\x9fe\r\n\r\nhi\r\n", True),
    (b"Received: by x\r\n\tfor <j\xc3\xb6rg@b.example>;\r\nSubject: a\r\n\r\n", True),
    (b"Subject: hi\n\nbody \xff\n", False),  # a store's LF line ends
    (b"\r\nno header, body \xc3\xbc\r\n", False),
    (b"Subject: no body \xc3\xbc", True),
    (b"Subject: hi\r\n", False),
]


@pytest.mark.parametrize(("message", "needs"), CASES)
def test_whole_and_octet_by_octet(message: bytes, needs: bool) -> None:
    for chunks in ([message], [message[i : i + 1] for i in range(len(message))]):
        scan = pop3.HeaderScan()
        for chunk in chunks:
            if scan.feed(chunk):
                break
        assert scan.needs_utf8 is needs


def test_it_stops_at_the_header_end() -> None:
    """Once the empty line is whole, the body is never read: its 8-bit octets count
    for nothing."""
    scan = pop3.HeaderScan()
    assert not scan.feed(b"Subject: a\r\n\r")
    assert scan.feed(b"\n")
    assert scan.feed(b"\xc3\xbc") and not scan.needs_utf8


def test_the_machine_gives_none_in_utf8_mode() -> None:
    conn = pop3.ServerConnection("mx.example", utf8=True)
    assert isinstance(conn.header_scan(), pop3.HeaderScan)
    conn.send(pop3.Ok("ready"))
    conn.receive_data(b"UTF8\r\n")
    assert isinstance(conn.next_event(), pop3.Utf8)
    conn.send(pop3.Ok())
    assert conn.header_scan() is None
    assert pop3.NEEDS_UTF8.code == "UTF8"
    assert pop3.NEEDS_UTF8.to_bytes().startswith(b"-ERR [UTF8] ")
