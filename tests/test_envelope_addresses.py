"""Envelope addresses real senders use, as the conformance audit found them refused
with a permanent 501 (mail bounced) where Postfix 3.7 and aiosmtpd answer 250: a
local part past 64 octets and a path past 256 (SRS and VERP senders)."""

from __future__ import annotations

import pytest

from smtpcore.address import Mailbox
from smtpcore.server.config import ConfigError, parse_user
from smtpcore.smtp import Mail, Rcpt, Reply, ServerConnection
from smtpcore.testing import run_server

SRS_LOCAL = "SRS0=q8Zt=7K=customer-department.example=firstname.lastname.sales"
"""The audit's forwarded sender (smtp_longlocal.py): a 65-octet local part."""
VERP_LOCAL = "SRS0=HHH=TT=customer-domain.example=john.smith.verylongname"


def _session(**options: object) -> ServerConnection:
    conn = ServerConnection("mx.pqr.example", **options)  # type: ignore[arg-type]
    conn.send(Reply(220, "mx.pqr.example ESMTP"))
    run_server(conn, b"EHLO client.example\r\n")
    return conn


def _replies(out: bytes) -> list[bytes]:
    return [line[:3] for line in out.split(b"\r\n") if line]


def test_a_local_part_past_64_octets_is_taken_in_mail_and_rcpt() -> None:
    """RFC 5321 §4.5.3.1.1: 64 octets is what a receiver must take, no limit."""
    conn = _session()
    long_domain = ".".join(["d" * 60] * 4)  # a path of 312 octets with SRS_LOCAL
    lines = (
        f"MAIL FROM:<{SRS_LOCAL}@fwd.example>\r\n"
        f"RCPT TO:<ann@pqr.example>\r\n"
        f"RCPT TO:<{SRS_LOCAL}@pqr.example>\r\n"
        f"RCPT TO:<{VERP_LOCAL}@{long_domain}>\r\n"
    ).encode()
    events, out = run_server(conn, lines)
    assert _replies(out) == [b"250"] * 4
    assert events[0] == Mail(Mailbox(SRS_LOCAL, "fwd.example"))
    assert events[2] == Rcpt(Mailbox(SRS_LOCAL, "pqr.example"))
    assert events[3] == Rcpt(Mailbox(VERP_LOCAL, long_domain))


def test_the_command_line_limit_still_bounds_a_long_address() -> None:
    """What bounds a peer's address is the command line (512 octets by default)."""
    conn = _session()
    _, out = run_server(conn, b"MAIL FROM:<" + b"l" * 600 + b"@fwd.example>\r\n")
    assert _replies(out) == [b"500"]


def test_a_user_too_long_for_a_directory_name_is_a_config_error() -> None:
    """A mailbox directory is named by the address, and a file name holds 255 octets
    (NAME_MAX); the 256-octet path limit kept every user within it. Without it, the
    users file refuses such a user rather than fail at the first delivery."""
    local = "u" * 200
    key, _ = parse_user(f"{local}@{'d' * 46}.example:pw")
    assert len(key.encode()) == 255
    with pytest.raises(ConfigError, match="over the 255"):
        parse_user(f"{local}@{'d' * 47}.example:pw")
