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

from smtpcore.address import AddressError, Mailbox, is_address_literal, parse_mailbox
from smtpcore.server.log import printable

__all__ = [
    "FIELD_NAME_LIMIT",
    "count_received",
    "header_field_follows",
    "protocol_name",
    "received_header",
    "return_path_header",
    "tls_comment",
]

#: The characters a host name keeps in a Received line: those of a domain and of
#: an address literal's content (RFC 5321 §4.1.3). Anything else, which could open
#: a comment, end the clause or make the header 8-bit, is written as ``?``, as
#: Postfix does. The brackets are not among them: only a whole, valid address
#: literal keeps its two (:func:`_host_text`).
_HOST_KEEPS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:")

#: Longer than any field name a message header holds in one line (RFC 5322 §2.1.1).
FIELD_NAME_LIMIT = 998


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


def tls_comment(version: str | None, cipher: str | None) -> str | None:
    """What the ``Received`` line's ``(using ...)`` comment says of the session's TLS,
    as Postfix words it (``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384``), of what is
    known alone: a proxy that ended the client's TLS may name no cipher, or nothing
    (then None: no comment, the ``S`` of ESMTPS still says TLS)."""
    if cipher is None:
        return version
    return f"{version or 'TLS'} with cipher {cipher}"


#: The From-domain of a client that gave no HELO and has no IP address (RFC 5321
#: §4.4 wants a Domain or an address literal there); Postfix's word too.
_UNKNOWN_CLIENT = "unknown"


def _ip_literal(host: str) -> str | None:
    """``host``'s address literal (RFC 5321 §4.1.3), or None if it is no IP address."""
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return f"[{address.ipv4_mapped}]"
        return f"[IPv6:{address}]"
    return f"[{address}]"


def _host_text(name: str) -> str:
    """A host name as the line may hold it, one token: a HELO name is the client's
    claim (or a filter's, XFORWARD HELO), and this server's own name is in A-labels
    already, but one taken from the machine unchecked (``server_hostname``) may not be.

    RFC 5321 §4.4 wants a Domain or an address literal there. Brackets are kept only
    as the two ends of a valid address literal (§4.1.3); any other bracket, like any
    character no domain has, is ``?``, so that ``[6.6.6.6 (evil)`` can neither leave
    a literal open nor open a comment (RFC 5322 §3.2.2)."""
    if is_address_literal(name):
        return f"[{_kept_characters(name[1:-1])}]"
    return _kept_characters(name)


def _kept_characters(text: str) -> str:
    """``text`` with each character outside :data:`_HOST_KEEPS` written as ``?``."""
    return "".join(c if c in _HOST_KEEPS else "?" for c in text)


def _tcp_info(peer: tuple[str, int | None] | None) -> str | None:
    """What goes in parentheses after the From-domain: the peer's address literal, the
    TCP-info of RFC 5321 §4.4; None for a peer with no IP address (unknown, or a Unix
    socket's path, which a local user chooses and which is no address literal, or
    empty for an unnamed one), of which there is nothing true to say there."""
    return None if peer is None else _ip_literal(peer[0])


def _from_domain(helo: str | None, peer: tuple[str, int | None] | None) -> str:
    """The client's HELO name (kept to a domain's characters), else its address
    literal, else ``unknown`` (RFC 5321 §4.4 From-domain)."""
    if helo:
        return _host_text(helo)
    literal = _ip_literal(peer[0]) if peer else None
    return _UNKNOWN_CLIENT if literal is None else literal


def received_header(
    *,
    helo: str | None,
    peer: tuple[str, int | None] | None,
    by: str,
    protocol: str,
    queue_id: str,
    recipient: Mailbox | None,
    when: float,
    tls: str | None = None,
) -> bytes:
    """A ``Received:`` header, folded, with its CRLF.

    ``recipient`` goes in the ``for`` clause only when the message has one
    recipient: naming one of several would disclose Bcc recipients. It is written
    with its domain in A-labels where its local part is ASCII (the same address,
    RFC 5890 §2.3.2.1), so that the line is ASCII exactly when the envelope can go
    as ASCII: a U-label there made the header 8-bit and the message bounce at a next
    hop without SMTPUTF8 (RFC 6531 §3.4), though the clause is optional (RFC 5321
    §4.4). Every other field is ASCII: the client's HELO name is its own claim,
    kept only in the characters of a domain name, as is this server's.
    ``helo`` and ``peer`` are None when unknown (XCLIENT or XFORWARD
    ``[UNAVAILABLE]``): the line says ``from unknown``, with no address, rather
    than a literal that is none (RFC 5321 §4.4).
    """
    tcp_info = _tcp_info(peer)
    lines = [f"Received: from {_from_domain(helo, peer)}" + (f" ({tcp_info})" if tcp_info else "")]
    if tls:
        lines.append(f"\t(using {tls})")
    lines.append(f"\tby {_host_text(by)} (smtpcore) with {protocol} id {queue_id}")
    date = email.utils.formatdate(when, localtime=True)
    if recipient is not None:
        lines.append(f"\tfor <{recipient.a_label_form}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def return_path_header(sender: str) -> bytes:
    """``Return-Path: <sender>``; ``<>`` for the null sender (RFC 5321 §4.4). A queued
    sender that no longer parses is still delivered here (it need go in no MAIL FROM),
    with the null path too: any escaped form of it would name another address (in a
    quoted local part ``\\x`` is a quoted-pair), to which an auto-responder would
    write. It is shown in a trailing comment (:func:`_comment`)."""
    if not sender:
        return b"Return-Path: <>\r\n"
    try:
        parse_mailbox(sender)
    except AddressError:
        return f"Return-Path: <> ({_comment(sender)})\r\n".encode()
    return f"Return-Path: <{sender}>\r\n".encode()


def _comment(text: str) -> str:
    """``text`` fit for an RFC 5322 §3.2.2 comment on one line: as the log writes it
    (:func:`~smtpcore.server.log.printable`), then each backslash and parenthesis a
    quoted-pair, so that the comment neither ends early nor nests."""
    return "".join(f"\\{char}" if char in "\\()" else char for char in printable(text))


def count_received(header: bytes) -> int:
    """How many ``Received:`` lines a message header holds: the hop count that
    RFC 5321 §6.3 asks a server to check, so that a mail loop ends."""
    count = 0
    for line in header.split(b"\n"):
        name, colon, _ = line.partition(b":")
        # RFC 5322 §4.5: the obsolete syntax lets white space precede the colon.
        if colon and name.rstrip(b" \t").lower() == b"received":
            count += 1
    return count


def header_field_follows(content: bytes) -> bool | None:
    """Whether a message beginning with ``content`` begins with a header field, or
    with the empty line that ends an empty header section; ``None`` while too
    little has come to tell.

    Our trace lines go above the client's header. Content that begins otherwise
    (white space, which would fold onto our last line and add to it; text that is
    no field) needs an empty line between, so that it stays the body it is.
    """
    if content[:1] == b"\r":
        return None if len(content) == 1 else content[1:2] == b"\n"
    name_end = 0
    while name_end < len(content) and 33 <= content[name_end] <= 126:
        if content[name_end] == 0x3A:  # ":" (RFC 5322 §3.6.8)
            return name_end > 0
        name_end += 1
    if content and name_end == 0:
        return False
    rest = content[name_end:].lstrip(b" \t")  # white space, then ":" (RFC 5322 §4.5)
    if rest:
        return name_end > 0 and rest[:1] == b":"
    return False if len(content) >= FIELD_NAME_LIMIT else None
