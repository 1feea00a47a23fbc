"""The relay streams a queued message from its queue file (issue 16): the content goes
to the exchanger in the client's chunks, with DATA or with BDAT, and relaying a message
many times the chunk size takes memory of the order of a chunk, not of the message."""

from __future__ import annotations

import asyncio
import email
import hashlib
import io
import logging
import threading
import tracemalloc
import typing
from pathlib import Path

import pytest

from relay_remote import remote
from smtpcore._driver._content import Content
from smtpcore.asyncio import SMTPClient
from smtpcore.server._exchanger_content import _ConvertedOffLoop
from smtpcore.server.bounce import MAX_RETURNED_MESSAGE
from smtpcore.server.downgrade import MAX_NESTING, MAX_PARTS, SevenBitReader, plan_seven_bit
from smtpcore.server.queue import QueuedContent
from test_server_relay import _relay, _run, _wait_closed

SIZE = 8 * 1024 * 1024
"""The message: 128 times the client's default chunk of 64 KiB."""


def _lines() -> list[bytes]:
    """A line pattern with what the wire must carry: leading dots (stuffed on DATA, as
    they are on BDAT), a lone dot, long and short lines."""
    return [
        b"Ordinary text of a large message, line after line, " + b"x" * 20 + b"\r\n",
        b".a line that starts with a dot\r\n",
        b".\r\n",
        b"..two dots\r\n",
        b"\r\n",
        b"y" * 990 + b"\r\n",
    ]


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
def test_a_large_message_is_relayed_byte_equal_with_bounded_memory(
    tmp_path: Path, chunking: bool
) -> None:
    with remote(chunking=chunking, keep_content=False) as server:
        relay = _relay(tmp_path, server.port)
        spool = relay.queue.spool()
        digest = hashlib.sha256()
        header = b"From: john@abc.example\r\nTo: brendon@pqr.example\r\nSubject: big\r\n\r\n"
        spool.write(header)
        digest.update(header)
        pattern = b"".join(_lines())
        while spool.size < SIZE:
            spool.write(pattern)
            digest.update(pattern)
        size = spool.size
        entry = relay.queue.prepare(spool, "john@abc.example", ["brendon@pqr.example"]).commit()
        relay.worker.schedule(entry)
        tracemalloc.start()
        try:
            _run(relay, relay.empty, timeout=120)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        _wait_closed(server)
    (transaction,) = server.transactions
    assert transaction.size == size
    assert transaction.digest == digest.hexdigest()
    # Of the order of a chunk (64 KiB) and the session's own needs; reading the message
    # whole, as the relay did before, would take all of it at once.
    assert peak < size // 8, f"peak {peak} octets relaying {size}"


def test_8bit_content_to_a_server_without_8bitmime_bounces_before_mail(tmp_path: Path) -> None:
    """Streamed content cannot be looked at by the client before it is sent: the relay
    reads the queue file through first and refuses as RFC 6152 asks (554 5.6.3)."""
    content = "Subject: grüße\r\n\r\nbody\r\n".encode()
    with remote(eight_bit=False) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"], content=content)
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
        assert server.mail_lines == []
    (raw,) = relay.reports()
    assert b"Status: 5.6.3" in raw and b"does not offer 8BITMIME" in b" ".join(raw.split())
    assert b"8-bit octets in a header field" in b" ".join(raw.split())


_PARTS_PAST_THE_LIMIT = (
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    + b"--b\r\n\r\n\xc3\xa9\r\n" * MAX_PARTS
    + b"--b--\r\n"
)
_NESTED_PAST_THE_LIMIT = (
    b"Content-Type: message/rfc822\r\n\r\n" * (MAX_NESTING + 1) + b"\xc3\xa9\r\n"
)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (_NESTED_PAST_THE_LIMIT, b"MIME parts nest deeper than"),
        (_PARTS_PAST_THE_LIMIT, b"more than %d MIME parts" % MAX_PARTS),
    ],
    ids=["nesting", "parts"],
)
def test_a_message_past_a_mime_limit_bounces_as_one_with_no_7bit_form(
    tmp_path: Path, content: bytes, reason: bytes
) -> None:
    """Too many MIME parts, as too deep a nesting, leave a message no 7-bit form the
    relay will make (RFC 6152 §3): returned as undeliverable, 554 5.6.3 (RFC 3463)."""
    with remote(eight_bit=False) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"], content=content)
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
        assert server.mail_lines == []
    (raw,) = relay.reports()
    words = b" ".join(raw.split())
    assert b"Status: 5.6.3" in raw and b"does not offer 8BITMIME" in words
    assert reason in words


def _leaf_payloads(content: bytes) -> list[bytes]:
    """Each leaf part's decoded body, as a reader of the message sees it."""
    message = email.message_from_bytes(content)
    found = []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append(payload)
    return found


NULL_SENDER_8BIT = (
    b"From: john@abc.example\r\nTo: n1@pqr.example\r\nSubject: null-8bit\r\n\r\n"
    + "\u00e9\r\n".encode()
)
"""The audit's message: a report from another MTA, 8-bit, from <>."""

MULTIPART_8BIT = (
    b"From: mary@xyz.example\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed;\r\n\tboundary="=_outer"\r\n\r\n'
    b"--=_outer\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    + "Grüße aus Köln = \r\n.dot line\r\n".encode()
    + b"--=_outer\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--=_outer--\r\n"
)


@pytest.mark.parametrize(
    ("sender", "content"),
    [("", NULL_SENDER_8BIT), ("john@abc.example", NULL_SENDER_8BIT), ("", MULTIPART_8BIT)],
    ids=["null-sender", "ordinary", "multipart"],
)
def test_8bit_content_to_a_server_without_8bitmime_goes_converted_to_7bit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sender: str, content: bytes
) -> None:
    """RFC 6152 §3: convert or return; a message from <> cannot be returned (RFC 5321
    §4.5.5), and was lost. It goes quoted-printable now, as any 8-bit message does."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(eight_bit=False, extra_ehlo=(b"PIPELINING",)) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(
            ["n1@pqr.example"], content=content, params=(("BODY", "8BITMIME"),), sender=sender
        )
        _run(relay, relay.empty)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert transaction.mail_line == f"MAIL FROM:<{sender}>\r\n".encode()
    assert transaction.content.isascii()
    assert all(len(line) <= 998 for line in transaction.content.split(b"\r\n"))
    assert _leaf_payloads(transaction.content) == _leaf_payloads(content)
    assert relay.reports() == []
    assert "goes converted to 7-bit, 1 part quoted-printable" in caplog.text


def test_a_converted_message_declares_its_exact_size(tmp_path: Path) -> None:
    """RFC 1870 §3: the 7-bit form's size is known from the planning pass, exactly, so
    the MAIL command declares it, never lower than what is sent."""
    with remote(eight_bit=False, size=1_000_000) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["n1@pqr.example"], content=MULTIPART_8BIT, params=(("BODY", "8BITMIME"),))
        _run(relay, relay.empty)
        _wait_closed(server)
    (transaction,) = server.transactions
    size = len(transaction.content)
    assert size > len(MULTIPART_8BIT)
    assert transaction.mail_line == b"MAIL FROM:<john@abc.example> SIZE=%d\r\n" % size


def test_a_converted_message_over_the_exchangers_size_bounces_with_552_5_3_4(
    tmp_path: Path,
) -> None:
    """The exchanger's SIZE limit holds for the 7-bit form as for any message (RFC
    1870 §6): refused before MAIL, not sent to be refused after it."""
    content = b"Subject: x\r\n\r\n" + ("é" * 10 + "text\r\n").encode() * 50
    with remote(eight_bit=False, size=1000) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["n1@pqr.example"], content=content, params=(("BODY", "8BITMIME"),))
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
        assert server.mail_lines == []
    (raw,) = relay.reports()
    assert b"Status: 5.3.4" in raw
    assert b"exceeds the server's limit of 1000 octets" in raw


def test_8bit_header_from_the_null_sender_is_lost_with_its_cause_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An 8-bit header has no 7-bit form (RFC 2047 needs a charset); from <> it cannot
    bounce either, and the warning names the cause."""
    content = "Subject: grüße\r\n\r\nbody\r\n".encode()
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(eight_bit=False) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"], content=content, sender="")
        _run(relay, relay.empty)
        _wait_closed(server)
        assert server.mail_lines == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("has no 7-bit form (8-bit octets in a header field" in w for w in warnings)


def test_a_bounce_of_a_large_message_returns_its_header_only(tmp_path: Path) -> None:
    header = b"From: john@abc.example\r\nSubject: large\r\n\r\n"
    content = header + b"body line\r\n" * (MAX_RETURNED_MESSAGE // 10)
    replies = {"gone@pqr.example": b"550 5.1.1 user unknown"}
    with remote(rcpt_replies=replies) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["gone@pqr.example"], content=content)
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    (raw,) = relay.reports()
    assert b"Content-Type: text/rfc822-headers" in raw
    assert b"Subject: large" in raw and b"body line" not in raw


@pytest.mark.parametrize("shift", range(-4, 2))
def test_the_header_is_found_across_the_read_boundary(tmp_path: Path, shift: int) -> None:
    """The empty line that ends the header may straddle two reads of the queue file."""
    field = b"X-Long: " + b"h" * (65536 + shift - len(b"X-Long: ") - 2) + b"\r\n"
    content = field + b"\r\nbody\r\n"
    path = tmp_path / "message"
    path.write_bytes(content)
    assert QueuedContent(path).header() == field + b"\r\n"
    assert QueuedContent(path).header(limit=100) == content[:100]
    assert QueuedContent(path).returned_header(limit=100) == b""  # no whole line in it
    assert QueuedContent(path).returned(len(content)) == content
    assert QueuedContent(path).returned(len(content) - 1) is None


def test_a_message_that_starts_with_its_empty_line_has_an_empty_header(tmp_path: Path) -> None:
    """No field before the empty line: the header is that line alone, never the body
    (a report returning the header would return body lines, and the relay would look
    for 8-bit octets and ``TLS-Required`` in them)."""
    path = tmp_path / "message"
    path.write_bytes(b"\r\nTLS-Required: No\r\n\r\nbody \xc3\xa9\r\n")
    assert QueuedContent(path).header() == b"\r\n"
    assert QueuedContent(path).returned_header() == b"\r\n"


@pytest.mark.parametrize("cut", [b"\r", b"\r\n", "é".encode()[:1]], ids=["CR", "CRLF", "UTF-8"])
def test_a_returned_header_cut_at_its_limit_ends_at_its_last_whole_line(
    tmp_path: Path, cut: bytes
) -> None:
    """A header longer than the limit is cut back to its last whole line: never between
    a CR and its LF (RFC 5322 §2.3), never inside a UTF-8 character (RFC 6532 §3.2)."""
    line = "X-Pad: aé\r\n".encode()
    whole = line * 10
    path = tmp_path / "message"
    path.write_bytes(whole + b"X-Pad: a" + cut + b"rest\r\n\r\nbody\r\n")
    limit = len(whole) + len(b"X-Pad: a" + cut)
    header = QueuedContent(path).returned_header(limit=limit)
    assert header == (whole + b"X-Pad: a\r\n" if cut == b"\r\n" else whole)
    header.decode()
    examined = QueuedContent(path).header(limit=limit)  # what the relay looks at: all
    assert examined == whole + b"X-Pad: a" + cut


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
def test_the_queue_file_is_sent_again_for_each_transaction_limits_asks_for(
    tmp_path: Path, chunking: bool
) -> None:
    """RFC 9422 §4.2: a server taking one recipient a transaction gets the message once
    per recipient; the client reads the queue file again from its start each time."""
    content = b"Subject: twice\r\n\r\n" + b"".join(_lines()) * 200
    options = {"chunking": chunking, "extra_ehlo": (b"LIMITS RCPTMAX=1",)}
    with remote(**options) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["a@pqr.example", "b@pqr.example"], content=content)
        _run(relay, relay.empty)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [["a@pqr.example"], ["b@pqr.example"]]
    assert all(t.content == content for t in server.transactions)


def test_the_7bit_form_is_converted_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converting is CPU work: a read of a chunk of short lines took ~100 ms, held from
    every other session while it ran on the loop. The client awaits each read, made in
    a worker thread."""
    threads: list[int] = []
    read = SevenBitReader.read

    def recorded(reader: SevenBitReader, size: int = -1) -> bytes:
        threads.append(threading.get_ident())
        return read(reader, size)

    monkeypatch.setattr(SevenBitReader, "read", recorded)
    with remote(eight_bit=False) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["n1@pqr.example"], content=MULTIPART_8BIT, params=(("BODY", "8BITMIME"),))
        _run(relay, relay.empty)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert _leaf_payloads(transaction.content) == _leaf_payloads(MULTIPART_8BIT)
    assert threads and threading.get_ident() not in threads


def test_the_off_loop_reader_is_content_the_client_already_takes() -> None:
    """The relay's reads in a worker thread go through the public ``Content`` as it
    was (an async iterable, seekable for a new transaction, RFC 5321 §4.5.3.1.8): no
    file whose ``read`` is awaited is public, for real async files (awaitable ``tell``
    and ``seek``) would not hold to it. ``send_message`` takes it as it is: a server
    taking one recipient a transaction (RFC 9422 §4.2) gets it whole, from its start,
    in each."""
    assert not any("Readable" in str(kind) for kind in typing.get_args(Content))
    message = b"Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + "é\r\n".encode() * 9000
    plan = plan_seven_bit(io.BytesIO(message))
    with SevenBitReader(lambda: io.BytesIO(message), plan) as reader:
        expected = reader.read()

    async def send(port: int, off_loop: _ConvertedOffLoop) -> None:
        async with SMTPClient("127.0.0.1", port, hostname="abc.example") as client:
            await client.send_message(
                off_loop, "john@abc.example", ["a@pqr.example", "b@pqr.example"]
            )

    with remote(eight_bit=False, extra_ehlo=(b"LIMITS RCPTMAX=1",)) as server:
        with _ConvertedOffLoop(SevenBitReader(lambda: io.BytesIO(message), plan)) as off_loop:
            asyncio.run(send(server.port, off_loop))
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [["a@pqr.example"], ["b@pqr.example"]]
    assert [t.content for t in server.transactions] == [expected, expected]


CONVERTED_8BIT = (
    b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n" + "grüße\r\n".encode() * 10
)


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
def test_a_converted_message_is_sent_again_for_each_transaction_limits_asks_for(
    tmp_path: Path, chunking: bool
) -> None:
    """RFC 9422 §4.2 with RFC 6152 §3: an exchanger without 8BITMIME that takes one
    recipient a transaction gets the 7-bit form once per recipient, each whole and
    from its start. The client took the converting reader for content it could not
    send again, and the message never went."""
    plan = plan_seven_bit(io.BytesIO(CONVERTED_8BIT))
    with SevenBitReader(lambda: io.BytesIO(CONVERTED_8BIT), plan) as reader:
        expected = reader.read()
    options = {"eight_bit": False, "chunking": chunking, "extra_ehlo": (b"LIMITS RCPTMAX=1",)}
    with remote(**options) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(
            ["a@pqr.example", "b@pqr.example"],
            content=CONVERTED_8BIT,
            params=(("BODY", "8BITMIME"),),
        )
        _run(relay, relay.empty)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [["a@pqr.example"], ["b@pqr.example"]]
    assert [t.content for t in server.transactions] == [expected, expected]
    assert expected.startswith(b"Subject: x\r\n") and expected.isascii()
