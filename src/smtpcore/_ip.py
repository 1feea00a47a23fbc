"""One form for a client's IP address, wherever it was learnt.

An IPv4 client reaches a dual-stack socket, or is named by a PROXY header or
XCLIENT, as an IPv4-mapped IPv6 address (``::ffff:192.0.2.5``, RFC 4291
§2.5.5.2). Counted, logged and written in Received lines under that form, one
client would be two: the per-address limit would count it twice, and fail2ban
would ban an IPv6 address. Sessions know it by its IPv4 address.
"""

from __future__ import annotations

import ipaddress

__all__ = ["NAT64_PREFIX", "host_address", "host_port", "ip_text", "unmapped"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052 §2.1's well-known prefix: an IPv4 host seen through a NAT64 gateway (DNS64
answers with it on IPv6-only networks)."""


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
