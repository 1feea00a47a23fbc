"""The TCP ports SMTP and LMTP use, for the clients, the servers and the reference server.

RFC 2033 §1: LMTP MUST NOT be used on TCP port 25. An SMTP peer there would
read LHLO as an error, or take LMTP's reply per recipient for SMTP's one
reply, and mail would be lost or sent twice. The lmtp port IANA assigns is 24
(Postfix's ``lmtp:`` transport connects to it when none is named).
"""

from __future__ import annotations

from typing import Final

__all__ = ["LMTP_PORT", "SMTP_PORT", "SUBMISSIONS_PORT", "client_port", "lmtp_port_refusal"]

SMTP_PORT: Final = 25
"""Relay between mail servers (RFC 5321 §4.5.4.2)."""
SUBMISSIONS_PORT: Final = 465
"""Message submission over implicit TLS (RFC 8314 §7.3)."""
LMTP_PORT: Final = 24
"""The port IANA assigns to lmtp (RFC 2033 names none, and forbids 25)."""


def lmtp_port_refusal(port: int) -> str | None:
    """Why LMTP cannot be spoken on TCP ``port``, or None when it can (RFC 2033 §1)."""
    if port == SMTP_PORT:
        return (
            f"LMTP must not be used on TCP port {SMTP_PORT} (RFC 2033 §1); "
            f"the lmtp port is {LMTP_PORT}"
        )
    return None


def client_port(port: int | None, *, lmtp: bool, tls_on_connect: bool) -> int:
    """The port an SMTP or LMTP client connects to: ``port``, or by default the
    protocol's own (LMTP's 24 with or without implicit TLS, SMTP's 25, or 465 with
    implicit TLS); ``ValueError`` for LMTP on port 25 (RFC 2033 §1)."""
    if port is None:
        if lmtp:
            return LMTP_PORT
        return SUBMISSIONS_PORT if tls_on_connect else SMTP_PORT
    refusal = lmtp_port_refusal(port) if lmtp else None
    if refusal is not None:
        raise ValueError(refusal)
    return port
