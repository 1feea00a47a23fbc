"""``send`` refuses, before it connects, a message with a line SMTP cannot carry: over
RFC 5321 §4.5.3.1.6's 1,000 octets with its CRLF, or holding NUL (RFC 5322 §2.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

import smtpcore.__main__ as cli
from smtpcore.server.messagelines import MAX_LINE_OCTETS, unsendable_line

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
