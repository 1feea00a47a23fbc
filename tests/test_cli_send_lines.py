"""``send`` refuses, before it connects, a message with a line SMTP cannot carry: over
RFC 5321 §4.5.3.1.6's 1,000 octets with its CRLF, or holding NUL (RFC 5322 §2.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

import smtpcore.__main__ as cli
from smtpcore.server.messagelines import MAX_LINE_OCTETS, unsendable_line
from smtpcore.server.sendstatus import EX_TEMPFAIL

SEND = ("send", "--server", "127.0.0.1:9", "--no-starttls", "--helo", "client.test")
ENVELOPE = ("--from", "a@abc.example", "--to", "b@pqr.example")
HEADER = b"From: a@abc.example\nTo: b@pqr.example\nSubject: lines\n\n"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"y" * 2000 + b"\n", "line 5 is 2000 octets long; SMTP carries 998 and the CRLF"),
        (b"ok\r\n" + b"y" * 999 + b"\r\n", "line 6 is 999 octets long"),
        (b"a\0b\rc\n", "line 5 holds a NUL octet"),
    ],
)
def test_send_refuses_a_line_smtp_cannot_carry_before_it_connects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: bytes, why: str
) -> None:
    """It went whole, and the server refused it only after the upload: now status 2,
    as for any other message ``send`` cannot send, naming the line (nothing listens on
    port 9: a connection tried would be status 1)."""
    path = tmp_path / "message.eml"
    path.write_bytes(HEADER + body)
    assert cli.main([*SEND, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"smtpcore send: {path}: {why}")
    assert err.count("\n") == 1


def test_send_refuses_a_test_message_whose_body_has_too_long_a_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main([*SEND, *ENVELOPE, "--body", "y" * 1200]) == 2
    err = capsys.readouterr().err
    assert "the message made of --subject and --body: line 10 is 1200 octets long" in err


@pytest.mark.parametrize("end", [b"\r\n", b"\n", b"\r"])
def test_a_line_of_998_octets_goes_and_one_more_does_not(end: bytes) -> None:
    line = b"y" * MAX_LINE_OCTETS
    assert unsendable_line(b"a" + end + line + end + b"b") is None
    assert unsendable_line(b"a\r\n" + line + b"y" + end) == (
        "line 2 is 999 octets long; SMTP carries 998 and the CRLF (1,000, RFC 5321 §4.5.3.1.6)"
    )


def test_lines_are_numbered_at_every_end_the_client_sends_as_crlf() -> None:
    """CRLF, CR and LF alone each end a line (the client sends each as CRLF)."""
    assert unsendable_line(b"1\r\n2\r3\n4\r\n\r\n6\0") == (
        "line 6 holds a NUL octet, which no message may hold (RFC 5322 §2.1)"
    )
    assert unsendable_line(b"\0" + b"y" * 2000) is not None
    assert "line 1 is 2000" in str(unsendable_line(b"y" * 2000 + b"\n\0"))  # the first


def test_a_long_bcc_field_is_not_checked_for_it_is_never_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``Bcc`` field naming many recipients on one line refused the message, though
    ``send`` removes it (status 2); the message now goes (to port 9, where nothing
    listens: status 75, EX_TEMPFAIL). A long line after it keeps its number in the file."""
    bcc = b"Bcc: " + b", ".join(b"x%d@pqr.example" % i for i in range(80)) + b"\n"
    path = tmp_path / "message.eml"
    path.write_bytes(HEADER.replace(b"To:", bcc + b"To:") + b"hi\n")
    assert cli.main([*SEND, str(path)]) == EX_TEMPFAIL
    path.write_bytes(HEADER.replace(b"To:", bcc + b"To:") + b"y" * 1200 + b"\n")
    assert cli.main([*SEND, str(path)]) == 2
    assert f"smtpcore send: {path}: line 6 is 1200 octets long" in capsys.readouterr().err


def _first_unsendable_by_splitting(content: bytes) -> str | None:
    """What :func:`unsendable_line` finds, the plain way: line by line."""
    for number, line in enumerate(content.splitlines(), start=1):
        if len(line) > MAX_LINE_OCTETS:
            return f"line {number} is {len(line)} octets long"
        if b"\0" in line:
            return f"line {number} holds a NUL"
    return None


@pytest.mark.parametrize(
    "content",
    [
        b"y" * 999,
        b"y" * 998,
        b"\r\n" * 3 + b"y" * 999 + b"\r\n",
        b"1\r2\r" + b"y" * 999,
        b"1\r\r\n" + b"y" * 1000 + b"\n",
        b"a\n\r" + b"y" * 999 + b"\r",
        b"y" * 998 + b"\r" + b"y" * 998 + b"\n" + b"y" * 999,
        b"y" * 500 + b"\0" + b"y" * 600,
        b"y" * 1200 + b"\n\0",
        b"ok\n" + b"y" * 998 + b"\0\n" + b"y" * 1000,
    ],
)
def test_the_scan_finds_what_splitting_the_lines_finds(content: bytes) -> None:
    """The scan of the whole message (one regular expression, in C) numbers and
    measures lines as splitting it at CRLF, CR and LF does."""
    expected = _first_unsendable_by_splitting(content)
    found = unsendable_line(content)
    assert (found is None) == (expected is None)
    if expected is not None:
        assert str(found).startswith(expected), (found, expected)
