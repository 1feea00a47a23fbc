"""Trace headers: the Received line each server adds, the Return-Path of final delivery.

RFC 5321 §4.4: every SMTP server that accepts a message puts a
``Received:`` line at its top, saying from whom (the EHLO name and the
address the connection came from), by whom, with which protocol
(RFC 3848, RFC 6531 §3.7.3) and when; the server that delivers the message
finally adds ``Return-Path:`` with the envelope sender.
"""

from __future__ import annotations

import email.utils
from ipaddress import IPv6Address, ip_address

__all__ = ["count_received", "protocol_name", "received_header", "return_path_header"]


def protocol_name(*, lmtp: bool, extended: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """The ``with`` keyword: SMTP, ESMTP, ESMTPSA, LMTPS, UTF8SMTPA... (RFC 3848, 6531)."""
    if lmtp:
        base = "UTF8LMTP" if utf8 else "LMTP"
    elif utf8:
        base = "UTF8SMTP"
    else:
        base = "ESMTP" if extended else "SMTP"
    suffix = ("S" if tls else "") + ("A" if auth else "")
    if base == "SMTP" and suffix:
        base = "ESMTP"  # RFC 3848 registers the S and A forms for ESMTP only
    return base + suffix


def _address_literal(host: str) -> str:
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return f"[{host}]"
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return f"[{address.ipv4_mapped}]"
        return f"[IPv6:{address}]"
    return f"[{address}]"


def received_header(
    *,
    helo: str | None,
    peer: tuple[str, int] | None,
    by: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    when: float,
    tls: str | None = None,
) -> bytes:
    """A ``Received:`` header, folded, with its CRLF.

    ``recipient`` goes in the ``for`` clause only when the message has one
    recipient: naming one of several would disclose Bcc recipients.
    """
    literal = _address_literal(peer[0]) if peer else "[unknown]"
    lines = [f"Received: from {helo or literal} ({literal})"]
    if tls:
        lines.append(f"\t(using {tls})")
    lines.append(f"\tby {by} (smtpcore) with {protocol} id {queue_id}")
    date = email.utils.formatdate(when, localtime=True)
    if recipient is not None:
        lines.append(f"\tfor <{recipient}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def return_path_header(sender: str) -> bytes:
    """``Return-Path: <sender>``; ``<>`` for the null sender (RFC 5321 §4.4)."""
    return f"Return-Path: <{sender}>\r\n".encode()


def count_received(header: bytes) -> int:
    """How many ``Received:`` lines a message header holds: the hop count that
    RFC 5321 §6.3 asks a server to check, so that a mail loop ends."""
    count = 0
    for line in header.split(b"\n"):
        if line[:9].lower() == b"received:":
            count += 1
    return count
