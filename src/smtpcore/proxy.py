"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), sans I/O.

A proxy in front of a server (HAProxy with ``send-proxy`` or
``send-proxy-v2``) opens each connection with one header that tells the
server who the client really is. :func:`parse_proxy_header` reads it from
the first bytes of a connection: it returns the :class:`ProxyHeader`, or how
many more bytes it needs at least, so a caller can read exactly the header
and not a byte of what follows; a malformed header raises
:class:`ProxyProtocolError`. Version 1 is one text line of at most 107
octets (``PROXY TCP4 src dst sport dport``, TCP6 or UNKNOWN); version 2 a
binary block with a 12-octet signature, addresses of the INET, INET6 or
UNIX family, and type-length-value fields (TLVs) after them. Of the TLVs,
PP2_TYPE_SSL is read too (:class:`ProxyTLS`): whether the client spoke TLS to
the proxy, which terminated it (HAProxy's ``send-proxy-v2-ssl``).

Only headers from a proxy the server trusts may be believed: anyone can
write one.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Final

from smtpcore._ip import ip_text

__all__ = ["ProxyHeader", "ProxyProtocolError", "ProxyTLS", "parse_proxy_header"]

V1_PREFIX: Final = b"PROXY "
V1_MAX: Final = 107
"""The longest version 1 line, CRLF included (proxy-protocol.txt §2.1)."""
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED: Final = 16
_PORT: Final = re.compile(r"0|[1-9][0-9]{0,4}")
_ADDRESS_LENGTHS: Final = {1: 12, 2: 36, 3: 216}
"""Version 2 family -> the octets of its address block (INET, INET6, UNIX)."""
_STREAM: Final = 1
"""The version 2 transport SMTP and POP3 run over (SOCK_STREAM: TCP, a UNIX stream)."""
PP2_TYPE_SSL: Final = 0x20
PP2_CLIENT_SSL: Final = 0x01
PP2_CLIENT_CERT_CONN: Final = 0x02
PP2_CLIENT_CERT_SESS: Final = 0x04
_SSL_FIXED: Final = 5
"""The octets of a PP2_TYPE_SSL value before its sub-TLVs: ``client`` and ``verify``."""
PP2_SUBTYPE_SSL_CN: Final = 0x22
_SSL_STRINGS: Final = {
    0x21: "version",
    PP2_SUBTYPE_SSL_CN: "common_name",
    0x23: "cipher",
    0x24: "signature_algorithm",
    0x25: "key_algorithm",
}
"""PP2_SUBTYPE_SSL_* -> the :class:`ProxyTLS` field it fills (proxy-protocol.txt §2.2.6)."""
_ASCII_NAME: Final = re.compile(r"[!-'*-\[\]-~]{1,64}")
"""A version, cipher or algorithm name: 1 to 64 octets of US-ASCII, printable, with no
space, parenthesis or backslash. It goes into the ``Received`` line's comment (RFC 5322
§3.2.2), which must stay within a line's 998 octets (RFC 5322 §2.1.1); the longest
OpenSSL names are under 40."""
_COMMON_NAME_MAX: Final = 64
"""The longest common name kept, in characters: RFC 5280's ``ub-common-name``."""


class ProxyProtocolError(ValueError):
    """A header that breaks the PROXY protocol: close the connection."""


@dataclass(frozen=True, slots=True)
class ProxyTLS:
    """A version 2 header's PP2_TYPE_SSL field (proxy-protocol.txt §2.2.6): the TLS the
    client spoke to the proxy, which terminated it (HAProxy's ``send-proxy-v2-ssl``
    and ``send-proxy-v2-ssl-cn``). The strings are None where the proxy sent none."""

    ssl: bool
    """PP2_CLIENT_SSL: the client connected to the proxy over TLS."""
    certificate_on_connection: bool
    """PP2_CLIENT_CERT_CONN: the client presented a certificate on this connection."""
    certificate_in_session: bool
    """PP2_CLIENT_CERT_SESS: it did at least once in the TLS session this one resumes."""
    verify: int
    """Zero when the client presented a certificate the proxy verified; non-zero
    otherwise (HAProxy sends zero too when there was none: read it with the flags)."""
    version: str | None = None
    """PP2_SUBTYPE_SSL_VERSION, such as ``"TLSv1.3"``. This and the other names are
    None where the proxy sent one that is not 1 to 64 octets of printable US-ASCII
    without space, parenthesis or backslash."""
    cipher: str | None = None
    """PP2_SUBTYPE_SSL_CIPHER, such as ``"TLS_AES_256_GCM_SHA384"``."""
    common_name: str | None = None
    """PP2_SUBTYPE_SSL_CN: the Common Name of the client certificate's subject, where it
    is printable UTF-8 of at most 64 characters; None otherwise (the raw octets stay
    in ``ProxyHeader.tlvs``)."""
    signature_algorithm: str | None = None
    """PP2_SUBTYPE_SSL_SIG_ALG of the proxy's own certificate, such as ``"RSA-SHA256"``."""
    key_algorithm: str | None = None
    """PP2_SUBTYPE_SSL_KEY_ALG of the proxy's own certificate, such as ``"RSA2048"``."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a PROXY header says about the connection.

    ``source`` and ``destination`` are ``(address, port)`` for TCP over
    IPv4 or IPv6, and nothing else: both are None when the proxy named no IP
    client (version 1 ``UNKNOWN``, a version 2 ``LOCAL`` connection such as
    the proxy's own health check, an unspecified family or transport, a DGRAM
    transport, which SMTP and POP3 never use, or the UNIX family):
    the connection's own addresses then stand. A Unix socket's paths are
    ``source_path`` and ``destination_path`` instead, never in ``source``: a
    local user chooses his socket's path, and one named ``127.0.0.1`` must not
    pass for that address wherever an address is trusted or counted.
    ``tlvs`` are the version 2 type-length-value fields, in order; ``tls`` is what
    its PP2_TYPE_SSL field says, None without one (and for a LOCAL command, the
    proxy's own connection).
    """

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int
    """The octets of the header: what follows it is the client's."""
    local: bool = False
    """A version 2 LOCAL command: the proxy speaking for itself."""
    tlvs: tuple[tuple[int, bytes], ...] = ()
    source_path: str | None = None
    """The path of the client's Unix socket (version 2 UNIX family), else None."""
    destination_path: str | None = None
    """The path of the Unix socket the client reached (version 2 UNIX family), else None."""
    tls: ProxyTLS | None = None
    """The client's TLS to the proxy (version 2 PP2_TYPE_SSL), else None."""


def parse_proxy_header(data: bytes) -> ProxyHeader | int:
    """The header at the start of ``data``, or how many more octets it needs at least.

    Raises :class:`ProxyProtocolError` as soon as ``data`` cannot be the
    start of a header.
    """
    if len(data) < len(V1_PREFIX):
        if not (V1_PREFIX.startswith(data) or V2_SIGNATURE.startswith(data)):
            raise ProxyProtocolError("not a PROXY protocol header")
        return len(V1_PREFIX) - len(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]):
        return _parse_v2(data)
    raise ProxyProtocolError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader | int:
    end = data.find(b"\r\n", 0, V1_MAX)
    # A bare LF is refused wherever it stands, as soon as it comes: the line read
    # whole and the line read an octet at a time must come to the same answer.
    if b"\n" in data[: V1_MAX if end < 0 else end]:
        raise ProxyProtocolError("PROXY v1 line with a bare LF")
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 line without CRLF within 107 octets")
        return 1
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    words = line.split(" ")
    length = end + 2
    if words[1:2] == ["UNKNOWN"]:
        return ProxyHeader(1, None, None, length)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line {line!r}")
    _, family, source, destination, source_port, destination_port = words
    version = 4 if family == "TCP4" else 6
    return ProxyHeader(
        1,
        (_ip(source, version), _port(source_port)),
        (_ip(destination, version), _port(destination_port)),
        length,
    )


def _ip(text: str, version: int) -> str:
    """A v1 header's address: dotted quad or RFC 4291 text, never with an IPv6 zone
    (``%eth0``), which the spec's addresses do not have (proxy-protocol.txt §2.1) and
    ``ipaddress`` would take with any text after the ``%``."""
    if "%" in text:
        raise ProxyProtocolError(f"not an IP address: {text!r}")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"not an IP address: {text!r}") from None
    if address.version != version:
        raise ProxyProtocolError(f"not an IPv{version} address: {text!r}")
    return ip_text(address)


def _port(text: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyProtocolError(f"not a port: {text!r}")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | int:
    """A version 2 header (proxy-protocol.txt §2.2). Its addresses are read for a
    STREAM transport alone: an unspecified family or transport, and DGRAM (UDP, a
    UNIX datagram socket), which no SMTP or POP3 session runs over, fall back to
    UNSPEC, as §2.2 has a receiver do for a valid combination it does not support:
    the address block is skipped and the connection's own addresses stand."""
    if len(data) < _V2_FIXED:
        return _V2_FIXED - len(data)
    version_command, family_transport, size = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyProtocolError("PROXY v2 header of another version")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyProtocolError(f"unknown PROXY v2 command {command}")
    length = _V2_FIXED + int(size)
    if len(data) < length:
        return length - len(data)
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family > 3 or transport > 2:
        raise ProxyProtocolError("unknown PROXY v2 address family or transport")
    body = data[_V2_FIXED:length]
    address_length = _ADDRESS_LENGTHS.get(family, 0)
    if command == 0:
        # LOCAL: the proxy's own connection (a health check). The spec has the receiver
        # accept it and discard the block, family included: a sender may name a family
        # and send no addresses. Its TLVs are read where the block holds them.
        return ProxyHeader(
            2, None, None, length, local=True, tlvs=_local_tlvs(body, address_length)
        )
    if len(body) < address_length:
        raise ProxyProtocolError("PROXY v2 address block too short for its family")
    tlvs = _tlvs(body[address_length:])
    tls = _tls(tlvs)
    if family == 0 or transport != _STREAM:
        return ProxyHeader(2, None, None, length, tlvs=tlvs, tls=tls)
    block = body[:address_length]
    if family == 3:
        return ProxyHeader(
            2,
            None,
            None,
            length,
            tlvs=tlvs,
            source_path=_unix_path(block[:108]),
            destination_path=_unix_path(block[108:216]),
            tls=tls,
        )
    source, destination = _ip_addresses(family, block)
    return ProxyHeader(2, source, destination, length, tlvs=tlvs, tls=tls)


def _ip_addresses(family: int, block: bytes) -> tuple[tuple[str, int], tuple[str, int]]:
    """The INET (1) or INET6 (2) block's source and destination (proxy-protocol.txt §2.2)."""
    size = 4 if family == 1 else 16
    source = ip_text(ipaddress.ip_address(block[:size]))
    destination = ip_text(ipaddress.ip_address(block[size : 2 * size]))
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * size)
    return (source, source_port), (destination, destination_port)


def _unix_path(raw: bytes) -> str:
    """A UNIX address: a path, which a local user may choose (any client socket may be
    bound to a path of its own, ``127.0.0.1`` say) and which ends up in logs as the
    client's name. One with a control, separator or format character is refused."""
    path = raw.split(b"\x00", 1)[0].decode("utf-8", "replace")
    if not path.isprintable():
        raise ProxyProtocolError(f"PROXY v2 UNIX address {path!r} holds an unprintable character")
    return path


def _local_tlvs(body: bytes, address_length: int) -> tuple[tuple[int, bytes], ...]:
    """A LOCAL header's TLVs, or none where its block is not what its family says."""
    if len(body) < address_length:
        return ()
    try:
        return _tlvs(body[address_length:])
    except ProxyProtocolError:
        return ()


def _tlvs(
    data: bytes, what: str = "PROXY v2 TLV", within: str = "the header"
) -> tuple[tuple[int, bytes], ...]:
    """The type-length-value fields filling ``data`` (proxy-protocol.txt §2.2), in order;
    ``what`` and ``within`` name them and what holds them in the error, so that the log
    says which overran: the header's TLVs, or an SSL TLV's sub-TLVs (§2.2.6)."""
    found = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyProtocolError(f"{what} cut short")
        kind, size = struct.unpack_from("!BH", data, offset)
        offset += 3
        if len(data) - offset < size:
            raise ProxyProtocolError(f"{what} longer than {within}")
        found.append((kind, data[offset : offset + size]))
        offset += size
    return tuple(found)


def _tls(tlvs: tuple[tuple[int, bytes], ...]) -> ProxyTLS | None:
    """The header's PP2_TYPE_SSL field, read, or None without one; two of them, which
    could say opposite things, are refused."""
    values = [value for kind, value in tlvs if kind == PP2_TYPE_SSL]
    if not values:
        return None
    if len(values) > 1:
        raise ProxyProtocolError("PROXY v2 PP2_TYPE_SSL TLV twice")
    return _ssl_tlv(values[0])


def _ssl_tlv(value: bytes) -> ProxyTLS:
    """A PP2_TYPE_SSL value (proxy-protocol.txt §2.2.6): the ``client`` bit field and
    ``verify``, then sub-TLVs within it, a known subtype at most once. Subtypes not in
    the spec are skipped, as a receiver may (§2.2). The structure is checked strictly;
    the strings are not grounds to refuse the client: none decides anything, so one
    unfit to be shown or written is unknown (None), not a closed connection."""
    if len(value) < _SSL_FIXED:
        raise ProxyProtocolError("PROXY v2 PP2_TYPE_SSL TLV shorter than its 5 fixed octets")
    client, verify = struct.unpack_from("!BI", value)
    strings: dict[str, str | None] = {}
    for kind, raw in _tlvs(value[_SSL_FIXED:], "PROXY v2 SSL sub-TLV", "the SSL TLV"):
        name = _SSL_STRINGS.get(kind)
        if name is None:
            continue
        if name in strings:
            raise ProxyProtocolError(f"PROXY v2 SSL {name} sub-TLV twice")
        strings[name] = _common_name(raw) if kind == PP2_SUBTYPE_SSL_CN else _ascii_name(raw)
    return ProxyTLS(
        ssl=bool(client & PP2_CLIENT_SSL),
        certificate_on_connection=bool(client & PP2_CLIENT_CERT_CONN),
        certificate_in_session=bool(client & PP2_CLIENT_CERT_SESS),
        verify=verify,
        **strings,
    )


def _ascii_name(raw: bytes) -> str | None:
    """A version, cipher or algorithm sub-TLV: a short US-ASCII name (§2.2.6) of the
    characters :data:`_ASCII_NAME` allows, for it is written into the log and the
    ``Received`` line; None for any other value, which is never written."""
    text = raw.decode("latin-1")
    return text if _ASCII_NAME.fullmatch(text) else None


def _common_name(raw: bytes) -> str | None:
    """The PP2_SUBTYPE_SSL_CN sub-TLV, if it is printable UTF-8 (§2.2.6) within
    RFC 5280's 64 characters; else None. HAProxy copies the certificate's string as it
    is encoded (a BMPString's UTF-16, a T61String's Latin-1), and smtpcore never reads
    the name, so such a name costs the client nothing."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.isprintable() or len(text) > _COMMON_NAME_MAX:
        return None
    return text
