"""One form for a client's IP address, wherever it was learnt.

An IPv4 client reaches a dual-stack socket, or is named by a PROXY header or
XCLIENT, as an IPv4-mapped IPv6 address (``::ffff:192.0.2.5``, RFC 4291
§2.5.5.2). Counted, logged and written in Received lines under that form, one
client would be two: the per-address limit would count it twice, and fail2ban
would ban an IPv6 address. Sessions know it by its IPv4 address.
"""

from __future__ import annotations

import ipaddress

__all__ = ["ip_text", "unmapped"]


def ip_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """``address`` as sessions name it: a mapped address as the IPv4 one it maps."""
    mapped = getattr(address, "ipv4_mapped", None)
    return str(address if mapped is None else mapped)


def unmapped(host: str) -> str:
    """``host`` (an address as a socket gives it) with an IPv4-mapped address unmapped;
    anything else as it is. Cheap for the everyday host: one comparison."""
    if host[:7].lower() != "::ffff:":
        return host
    try:
        return ip_text(ipaddress.ip_address(host))
    except ValueError:
        return host
