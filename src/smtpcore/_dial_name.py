"""The name a client connects to and checks the server's certificate against.

Given a ``str``, the socket layer (``getaddrinfo``) and :mod:`ssl` (SNI and the
certificate's name check) encode a non-ASCII name with the standard library's ``idna``
codec, which is IDNA 2003: ``mx.straße.test`` becomes ``mx.strasse.test``, another
domain, whose holder would receive the mail over verified TLS. A client converts such a
name itself, once, as the address parser converts domains
(:func:`smtpcore.address.normalize_domain`: ``mx.xn--strae-oqa.test``, IDNA 2008), and
hands the socket layer and :mod:`ssl` ASCII only.

The same codec refuses an ASCII name with an empty label (``mx.a..b``) or a label over
63 octets with a bare :class:`UnicodeError`, and only at the first connection: such a
name is checked here too, so that every bad name is one ``ValueError`` when the client
is built.
"""

from __future__ import annotations

import ipaddress

from smtpcore.address import MAX_DOMAIN_OCTETS, MAX_LABEL_OCTETS, AddressError, normalize_domain

__all__ = ["dial_name", "dial_names"]


def dial_name(host: str, what: str = "host") -> str:
    """``host`` as the socket layer and :mod:`ssl` should be given it: an IP address or
    an ASCII name as it is, any other name in lowercase A-label form, a trailing dot
    kept. ``ValueError`` naming ``what`` for a name with an empty label, a label over
    63 octets or over 255 in all (RFC 1035 §2.3.4), or a non-ASCII one IDNA cannot
    convert (RFC 5891: a leading hyphen, a character IDNA refuses), rather than a guess
    at another host or an error at the first connection."""
    if _is_ip_address(host):
        return host
    name, dot = (host[:-1], ".") if host.endswith(".") else (host, "")
    problem = _label_problem(name)
    if problem is not None:
        raise ValueError(f"{what} {host!r} is no host name or address: {problem}")
    if host.isascii():
        return host
    try:
        return normalize_domain(name) + dot
    except AddressError as exc:
        raise ValueError(
            f"{what} {host!r} is no host name or address IDNA can convert: {exc}"
        ) from None


def dial_names(host: str, server_hostname: str | None) -> tuple[str, str]:
    """The host to connect to and the name to send as SNI and verify the certificate
    against (``server_hostname``, else ``host``), each as :func:`dial_name` makes it:
    what every client, :class:`~smtpcore.testing.ScriptedClient` too, is given."""
    dialled = dial_name(host)
    if not server_hostname:
        return dialled, dialled
    return dialled, dial_name(server_hostname, "server_hostname")


def _is_ip_address(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (with a zone, which may be non-ASCII)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _label_problem(name: str) -> str | None:
    """Why ``name`` (its trailing dot taken off) cannot be looked up: an empty label, or
    a label or the whole over the limits DNS sets, counted here in characters (a
    U-label's A-label form is counted again when it is converted); None if it can."""
    if not name:
        return "empty name"
    labels = name.split(".")
    if "" in labels:
        return "empty label"
    longest = max(labels, key=len)
    if len(longest) > MAX_LABEL_OCTETS:
        return f"label {longest[:20]!r}... is over {MAX_LABEL_OCTETS} octets"
    if len(name) + 2 > MAX_DOMAIN_OCTETS:  # a length octet before the first label, a root after
        return f"over {MAX_DOMAIN_OCTETS} octets"
    return None
