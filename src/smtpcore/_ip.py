"""One form for a client's IP address, wherever it was learnt.

An IPv4 client reaches a dual-stack socket, or is named by a PROXY header or
XCLIENT, as an IPv4-mapped IPv6 address (``::ffff:192.0.2.5``, RFC 4291
§2.5.5.2). Counted, logged and written in Received lines under that form, one
client would be two: the per-address limit would count it twice, and fail2ban
would ban an IPv6 address. Sessions know it by its IPv4 address.
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "CLIENT_IPV6_PREFIX_LENGTH",
    "NAT64_PREFIX",
    "checked_prefix_length",
    "client_block",
    "host_address",
    "host_port",
    "ip_text",
    "unmapped",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052 §2.1's well-known prefix: an IPv4 host seen through a NAT64 gateway (DNS64
answers with it on IPv6-only networks)."""

CLIENT_IPV6_PREFIX_LENGTH = 84
"""The bits of an IPv6 client's address that name the client (Postfix 3.8's
``smtpd_client_ipv6_prefix_length`` default): an ordinary IPv6 customer has a /64 or
more, every address of which is the one host or network."""


def ip_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """``address`` as sessions name it: a mapped address as the IPv4 one it maps."""
    mapped = getattr(address, "ipv4_mapped", None)
    return str(address if mapped is None else mapped)


def host_port(host: str, port: int) -> str:
    """``host:port`` for people (log lines, messages): an IPv6 address in brackets,
    ``[::1]:25``, as URIs write it (RFC 3986 §3.2.2) and Postfix reads it, so that
    its last group is not taken for the port."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def unmapped(host: str) -> str:
    """``host`` (an address as a socket gives it) with an IPv4-mapped address unmapped;
    anything else as it is. Cheap for the everyday host: one comparison."""
    if host[:7].lower() != "::ffff:":
        return host
    try:
        return ip_text(ipaddress.ip_address(host))
    except ValueError:
        return host


def host_address(address: IPAddress) -> IPAddress:
    """The address of the host ``address`` reaches, for "is this one of ours?" and "is
    this internal?": an IPv4-mapped address (RFC 4291 §2.5.5.2) and one in the NAT64
    well-known prefix (RFC 6052 §2.1) as the IPv4 address they stand for."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64_PREFIX:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def client_block(host: str, ipv6_prefix_length: int) -> str:
    """What a client at ``host`` (an address as sessions know it) is counted under: an
    IPv4 address (or anything that is no IP address) as it is, an IPv6 address as its
    network of ``ipv6_prefix_length`` bits (``2001:db8:0:1::/84``), as Postfix's
    anvil counts them since 3.8. Counted by its own address, an IPv6 client with a
    /64 would have 2**64 shares of a limit, and so no limit. An address that stands
    for an IPv4 host (:func:`host_address`: IPv4-mapped, or through NAT64, where each
    address of the prefix is another IPv4 client) counts as that IPv4 address. Cheap
    for an IPv4 address: one comparison."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    host_ip = host_address(address)
    if host_ip is not address:
        return str(host_ip)
    return str(ipaddress.IPv6Network((address, ipv6_prefix_length), strict=False))


def checked_prefix_length(bits: object) -> int:
    """``bits`` if it is an IPv6 prefix length (0 to 128), else ValueError now, not at
    the first IPv6 client."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 0 <= bits <= 128:
        raise ValueError(f"client_ipv6_prefix_length must be 0 to 128, not {bits!r}")
    return bits
