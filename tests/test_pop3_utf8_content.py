"""``HeaderScan``: whether a message needs UTF-8 mode (RFC 6856 §2.1, §4), read from
its chunks only until its header ends, wherever the chunks are cut; and what the
adapters' ``POP3Server`` answers with it."""

from __future__ import annotations

import logging
import poplib
import socket
from pathlib import Path
from typing import BinaryIO

import pytest

from peers import running_pop3_server, write_maildir
from smtpcore import pop3
from smtpcore.asyncio import POP3ServerOptions
from smtpcore.maildrop import MaildirStore

CASES = [
    (b"Subject: hi\r\n\r\nbody \xc3\xbc\r\n", False),  # an 8-bit body is 8BITMIME
    (b"Subject: gr\xc3\xbc\xc3\x9fe\r\n\r\nhi\r\n", True),
    (b"Received: by x\r\n\tfor <j\xc3\xb6rg@b.example>;\r\nSubject: a\r\n\r\n", True),
    (b"Subject: hi\n\nbody \xff\n", False),  # a store's LF line ends
    (b"\r\nno header, body \xc3\xbc\r\n", False),
    (b"Subject: no body \xc3\xbc", True),
    (b"Subject: hi\r\n", False),
    (b"Subject: Gr\xfc\xdfe\r\n\r\nhi\r\n", False),  # legacy Latin-1: not UTF-8 mode's
    (b"Subject: gr\xc3\xbc\r\nX-Old: \xfc\r\n\r\n", False),  # UTF-8 and not: legacy
    (b"Subject: cut \xc3", False),  # a sequence the message's end cuts short
]


@pytest.mark.parametrize(("message", "needs"), CASES)
def test_whole_and_octet_by_octet(message: bytes, needs: bool) -> None:
    for chunks in ([message], [message[i : i + 1] for i in range(len(message))]):
        scan = pop3.HeaderScan()
        for chunk in chunks:
            if scan.feed(chunk):
                break
        scan.end()  # the message's end, where it came first
        assert scan.done and scan.needs_utf8 is needs


def test_it_stops_at_the_header_end() -> None:
    """Once the empty line has begun, the body is never read: its 8-bit octets count
    for nothing. A CR begins it, as the wire reads a bare CR as a line end too."""
    scan = pop3.HeaderScan()
    assert not scan.feed(b"Subject: a\r")
    assert not scan.feed(b"\n")
    assert scan.feed(b"\r")
    assert scan.feed(b"\n")
    assert scan.feed(b"\xc3\xbc") and not scan.needs_utf8


@pytest.mark.parametrize("size", [1, 7, 4096, 65536, pop3.HEADER_LOOKAHEAD + 10])
def test_the_lookahead_is_exact_whatever_the_chunks(size: int) -> None:
    """The octet at HEADER_LOOKAHEAD - 1 is read, the one at HEADER_LOOKAHEAD never,
    however the message is cut; a header that goes on past it with no UTF-8 in
    what was read goes as stored."""
    for at, needs in ((pop3.HEADER_LOOKAHEAD - 2, True), (pop3.HEADER_LOOKAHEAD, False)):
        message = b"X:" + b"x" * (at - 2) + "ü\r\n\r\n".encode()
        scan = pop3.HeaderScan()
        for start in range(0, len(message), size):
            if scan.feed(message[start : start + size]):
                break
        assert scan.done and scan.overran and scan.needs_utf8 is needs


@pytest.mark.parametrize("size", [1, 7, 65536, pop3.HEADER_LOOKAHEAD + 10])
@pytest.mark.parametrize(
    ("last_read", "needs"),
    [
        (b"\xe9", False),  # a Latin-1 é that is a UTF-8 lead octet: no character
        (b"\xc3\xbc\xc3", True),  # a whole ü before the cut lead octet
    ],
)
def test_a_lead_octet_the_lookahead_cuts_off_is_no_utf8(
    size: int, last_read: bytes, needs: bool
) -> None:
    """The last octets read end with a lead octet whose sequence the lookahead cuts
    off: it made the header UTF-8 (``-ERR [UTF8]`` to a Latin-1 one); only a whole
    character does."""
    message = (
        b"X:" + b"x" * (pop3.HEADER_LOOKAHEAD - len(last_read) - 2) + last_read + b"\xbc\r\n\r\n"
    )
    scan = pop3.HeaderScan()
    for start in range(0, len(message), size):
        if scan.feed(message[start : start + size]):
            break
    assert scan.done and scan.overran and scan.needs_utf8 is needs


def test_the_machine_gives_a_scan_only_where_utf8_is_offered() -> None:
    """A ``[UTF8]`` code names a mode the client could enter: without UTF8 offered
    every message goes as stored, as before the server knew of UTF8."""
    assert pop3.ServerConnection("mx.example").header_scan() is None
    conn = pop3.ServerConnection("mx.example", utf8=True)
    assert isinstance(conn.header_scan(), pop3.HeaderScan)
    conn.send(pop3.Ok("ready"))
    conn.receive_data(b"UTF8\r\n")
    assert isinstance(conn.next_event(), pop3.Utf8)
    conn.send(pop3.Ok())
    assert conn.header_scan() is None
    assert pop3.NEEDS_UTF8.code == "UTF8"
    assert pop3.NEEDS_UTF8.to_bytes().startswith(b"-ERR [UTF8] ")


UTF8_HEADER = "From: jörg@bücher.example\r\nSubject: grüße\r\n\r\nhi\r\n".encode()
LATIN1_HEADER = b"From: a@b.example\r\nSubject: Gr\xfc\xdfe\r\n\r\nhi\r\n"
PADDED_UTF8_HEADER = (
    b"".join(b"X-Pad-%06d: %s\r\n" % (i, b"a" * 60) for i in range(4500))
    + UTF8_HEADER  # its first non-ASCII octet past the lookahead
)
PLAIN = b"From: a@b.example\r\nSubject: plain\r\n\r\nok\r\n"


def _store(tmp_path: Path) -> MaildirStore:
    write_maildir(tmp_path / "alice", [UTF8_HEADER, LATIN1_HEADER, PADDED_UTF8_HEADER, PLAIN])
    return MaildirStore(tmp_path, {"alice": "wonderland"})


def _retrieved(port: int, numbers: list[int], *, utf8: bool = False) -> list[bytes]:
    """What RETR of each of ``numbers`` gives a poplib session: the message, or the
    ``-ERR`` line; then the session QUITs, its DELEs of all it got committed."""
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    if utf8:
        client.utf8()
    client.user("alice")
    client.pass_("wonderland")
    got = []
    for number in numbers:
        try:
            got.append(b"\r\n".join(client.retr(number)[1]) + b"\r\n")
        except poplib.error_proto as exc:
            got.append(exc.args[0])
            continue
        client.dele(number)
    client.quit()
    return got


def test_a_server_without_utf8_sends_every_message_as_stored(adapter: str, tmp_path: Path) -> None:
    """The default server offers no UTF8: its sessions cannot enter UTF-8 mode, and
    get every message as stored, as before (they got -ERR [UTF8], with no way out)."""
    store = _store(tmp_path)
    with running_pop3_server(adapter, store) as server:
        got = _retrieved(server.port, [1, 2, 3, 4])
    assert got == [UTF8_HEADER, LATIN1_HEADER, PADDED_UTF8_HEADER, PLAIN]
    assert _left(tmp_path) == 0


def _left(root: Path) -> int:
    """Messages left in alice's Maildir."""
    return sum(1 for sub in ("new", "cur") for _ in (root / "alice" / sub).iterdir())


def test_a_server_with_utf8_refuses_only_utf8_headers_outside_utf8_mode(
    adapter: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 6856 §4, §5: the message that requires UTF-8 mode gets ``-ERR [UTF8]``;
    a legacy Latin-1 header goes as stored; one whose header outruns the lookahead
    before any UTF-8 goes as stored too, logged, and the session goes on to QUIT (it
    was closed there: no session could get past that message, nor commit a DELE)."""
    caplog.set_level(logging.WARNING, logger="smtpcore.pop3.server")
    with running_pop3_server(adapter, _store(tmp_path), utf8=True) as server:
        got = _retrieved(server.port, [1, 2, 3, 4])
        assert got[0].startswith(b"-ERR [UTF8] ")
        assert got[1:] == [LATIN1_HEADER, PADDED_UTF8_HEADER, PLAIN]
        assert _left(tmp_path) == 1
        assert [message.startswith(b"-ERR") for message in _retrieved(server.port, [1])] == [True]
        assert _retrieved(server.port, [1], utf8=True) == [UTF8_HEADER]
    [line] = [r.getMessage() for r in caplog.records if "sent as stored" in r.getMessage()]
    assert line.startswith("message 3 of 'alice': header longer than ")


DOTS = b"Subject: dots\r\n\r\n" + b".\r\n" * 80_000  # 240 KB stored, 320 KB dot-stuffed


def _multiline(answers: BinaryIO) -> bytes:
    """A multi-line answer read from ``answers`` (its status line checked), its dots
    unstuffed: the message as stored."""
    assert answers.readline().startswith(b"+OK")
    lines = []
    while (line := answers.readline()) != b".\r\n":
        assert line, "the server closed the connection"
        lines.append(line[1:] if line.startswith(b".") else line)
    return b"".join(lines)


def test_a_pipelined_retr_after_a_dot_heavy_message_is_answered(
    adapter: str, tmp_path: Path
) -> None:
    """RETR 1's dot-stuffed last batch, due but not yet written, was more than a
    write's worth: RETR 2's header scan, which waits to write until the header is
    read, then read nothing for ever without a pause, and the whole server hung
    (this session and every other). Both messages come whole, and the server greets
    a new connection."""
    write_maildir(tmp_path / "alice", [DOTS, PLAIN])
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    with running_pop3_server(adapter, store, utf8=True) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            answers = sock.makefile("rb")
            assert answers.readline().startswith(b"+OK")
            for command in (b"USER alice\r\n", b"PASS wonderland\r\n"):
                sock.sendall(command)
                assert answers.readline().startswith(b"+OK")
            sock.sendall(b"RETR 1\r\nRETR 2\r\n")
            assert _multiline(answers) == DOTS
            assert _multiline(answers) == PLAIN
            sock.sendall(b"QUIT\r\n")
            assert answers.readline().startswith(b"+OK")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert sock.makefile("rb").readline().startswith(b"+OK")


OVERRUN_UTF8_HEADER = (
    "Subject: grüße\r\n".encode()  # UTF-8 within the lookahead, the header's end past it
    + b"".join(b"X-Pad-%06d: %s\r\n" % (i, b"a" * 60) for i in range(4500))
    + b"\r\nbody\r\n"
)


def test_a_server_that_downgrades_sends_the_rfc_6858_surrogate(
    adapter: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``downgrade=True``: RETR and TOP of the message that needs UTF-8 mode give a
    session outside it the surrogate (its header in ASCII, the body as stored), whose
    octets RETR's +OK counts, where they got ``-ERR [UTF8]``; the message is taken and
    deleted like any other. A header whose end is past the lookahead is refused still
    (it cannot be rewritten unread); a session in UTF-8 mode gets the message as
    stored."""
    write_maildir(
        tmp_path / "alice", [UTF8_HEADER, LATIN1_HEADER, OVERRUN_UTF8_HEADER, PLAIN, UTF8_HEADER]
    )
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    surrogate = pop3.ascii_surrogate(UTF8_HEADER)
    assert surrogate.isascii() and surrogate.endswith(b"\r\n\r\nhi\r\n")
    caplog.set_level(logging.INFO, logger="smtpcore.pop3.server")
    with running_pop3_server(adapter, store, utf8=True, downgrade=True) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("wonderland")
        status, lines, _ = client.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == surrogate
        assert status == b"+OK %d octets" % len(surrogate)
        listed = client.list(1)
        assert isinstance(listed, bytes)
        assert listed.split()[2] == str(len(UTF8_HEADER)).encode()  # the stored size
        for _ in range(2):
            top = client.top(5, 0)[1]
            assert b"\r\n".join(top) + b"\r\n" == surrogate.replace(b"hi\r\n", b"")
        with pytest.raises(poplib.error_proto, match=r"-ERR \[UTF8\]"):
            client.top(3, 0)
        got = _retrieved_by(client, [1, 2, 4])
        client.quit()
        assert got == [surrogate, LATIN1_HEADER, PLAIN]
        assert _left(tmp_path) == 2
        surrogates = [r for r in caplog.records if "RFC 6858 surrogate" in r.getMessage()]
        # RETR 1, TOP 5, TOP 5 again and RETR 1 again: once a message a session, at INFO.
        assert [r.levelno for r in surrogates] == [logging.INFO] * 2
        assert [r.args[0] for r in surrogates if isinstance(r.args, tuple)] == [1, 5]
        assert _retrieved(server.port, [1, 2], utf8=True) == [OVERRUN_UTF8_HEADER, UTF8_HEADER]


def _retrieved_by(client: poplib.POP3, numbers: list[int]) -> list[bytes]:
    got = []
    for number in numbers:
        got.append(b"\r\n".join(client.retr(number)[1]) + b"\r\n")
        client.dele(number)
    return got


def test_downgrade_needs_utf8() -> None:
    """Without UTF8 offered every message goes as stored: nothing to downgrade."""
    with pytest.raises(ValueError, match="downgrade needs utf8"):
        POP3ServerOptions(hostname="mx.example", downgrade=True)


def test_a_cr_only_message_is_served_with_its_body(adapter: str, tmp_path: Path) -> None:
    """The wire reads a bare CR as a line end, and so does the scan that finds the
    header's end: a store's CR-only message keeps every body line in its surrogate."""
    stored = "Subject: é\r\rsecond: ü\rthird\r".encode()
    write_maildir(tmp_path / "alice", [stored])
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    with running_pop3_server(adapter, store, utf8=True, downgrade=True) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("wonderland")
        status, lines, _ = client.retr(1)
        client.quit()
    assert lines == [b"Subject: =?utf-8?b?w6k=?=", b"", "second: ü".encode(), b"third"]
    assert status == b"+OK %d octets" % (sum(map(len, lines)) + 2 * len(lines))
