"""The name a client connects to and checks the server's certificate against.

Given a ``str``, the socket layer (``getaddrinfo``) and :mod:`ssl` (SNI and the
certificate's name check) encode a non-ASCII name with the standard library's ``idna``
codec, which is IDNA 2003: ``mx.straße.test`` becomes ``mx.strasse.test``, another
domain, whose holder would receive the mail over verified TLS. A client converts such a
name itself, once, as the address parser converts domains
(:func:`smtpcore.address.normalize_domain`: ``mx.xn--strae-oqa.test``, IDNA 2008), and
hands the socket layer and :mod:`ssl` ASCII only.
"""

from __future__ import annotations

import ipaddress

from smtpcore.address import AddressError, normalize_domain

__all__ = ["dial_name"]


def dial_name(host: str, what: str = "host") -> str:
    """``host`` as the socket layer and :mod:`ssl` should be given it: an ASCII name or
    an IP address as it is, any other name in lowercase A-label form. ``ValueError``
    naming ``what`` for a non-ASCII name that has none (RFC 5891: a leading hyphen, a
    character IDNA refuses), rather than a guess at another host."""
    if host.isascii():
        return host
    try:
        ipaddress.ip_address(host)  # an IPv6 address with a non-ASCII zone
    except ValueError:
        pass
    else:
        return host
    try:
        return normalize_domain(host)
    except AddressError as exc:
        raise ValueError(f"{what} {host!r} is no host name IDNA can convert: {exc}") from None
