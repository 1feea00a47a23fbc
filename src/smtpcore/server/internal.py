"""Relay to internal networks: refused unless the operator allows it (``--allow-internal-relay``).

An authenticated user must not be able to make the server connect to
services behind it: ``user@[127.0.0.1]``, ``user@[10.0.0.1]``, or a domain
whose MX records point at such addresses (a form of server-side request
forgery). So an address literal recipient that names an internal address is
refused at RCPT (``550 5.7.1``), and the delivery worker never connects to
an internal address: if every address a domain's exchangers have is
internal, its recipients bounce (``554 5.4.4``, unable to route). Internal
means every address that is not globally reachable (loopback, private
(RFC 1918, RFC 4193), shared (RFC 6598: carrier-grade NAT, Tailscale, some
cloud metadata services), link-local, unspecified, documentation,
benchmarking and the others of RFC 6890), multicast, reserved, or one of the
server's own addresses (its ``--host`` and what its ``--hostname`` resolves
to).

The ``--relay-host`` smart host is exempt: the operator chose it, and a
smart host on the local network or on loopback is the usual set-up.

Tests and the demo, which relay between servers on loopback, allow it
explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address

from smtpcore._ip import host_address
from smtpcore.address import Mailbox, parse_address_literal

__all__ = ["InternalAddresses", "is_internal_address"]

IPAddress = IPv4Address | IPv6Address


def is_internal_address(address: IPAddress) -> bool:
    """Whether ``address`` is one no relay from the Internet should reach: every address
    that is not globally reachable (IANA's special-purpose registries, RFC 6890, as
    :mod:`ipaddress` knows them: loopback, private, shared (RFC 6598), link-local,
    documentation, benchmarking...), and the multicast, reserved and site-local ones
    :mod:`ipaddress` calls global. A 6to4 address (RFC 3056) is judged by the IPv4
    address it embeds too, to which its packets go, and a NAT64 address (RFC 6052) by
    the IPv4 address it embeds alone (RFC 6052 §3.1: it embeds global ones only)."""
    address = host_address(address)
    if isinstance(address, IPv6Address):
        if address.sixtofour is not None and is_internal_address(address.sixtofour):
            return True
        if address.is_site_local:
            return True
    return not address.is_global or address.is_multicast or address.is_reserved


class InternalAddresses:
    """The relay's rule: internal addresses, and the server's own, unless ``allowed``."""

    def __init__(self, own: Iterable[IPAddress | str] = (), *, allowed: bool = False) -> None:
        self.allowed = allowed
        self.own: set[IPAddress] = set()
        """This server's own addresses, IPv4-mapped and NAT64 ones as the IPv4 address
        they stand for (see :func:`smtpcore._ip.host_address`)."""
        self.learn(own)

    def learn(self, addresses: Iterable[IPAddress | str]) -> None:
        """Count ``addresses`` among this server's own; text that is no address (a
        ``--host`` name) is left out."""
        for value in addresses:
            try:
                self.own.add(host_address(ip_address(value)))
            except ValueError:
                continue

    def refused(self, address: IPAddress) -> bool:
        """Whether the relay must not connect to ``address``."""
        return not self.allowed and (
            host_address(address) in self.own or is_internal_address(address)
        )

    def refused_literal(self, mailbox: Mailbox) -> IPAddress | None:
        """The internal address a recipient's address literal names, if it is refused."""
        if not mailbox.is_address_literal:
            return None
        address = parse_address_literal(mailbox.domain)
        return address if address is not None and self.refused(address) else None
