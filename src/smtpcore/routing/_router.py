"""The local-or-remote decision and the relay policy.

``Router.route`` is a pure function of the recipient, the session's
credentials and the client's address; it never looks anything up. The MX
stage that may follow for a remote recipient is ``Router.resolve``.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

from smtpcore.address import Mailbox, is_address_literal, normalize_domain, parse_address_literal
from smtpcore.routing import _outcomes as out
from smtpcore.routing._mx import FailedExchangers, RandomSource, canonical_host
from smtpcore.routing._outcomes import Attempt, LocalDelivery, Rejected, RemoteDelivery
from smtpcore.routing._resolve import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_FAILED_LOOKUPS,
    AddressPreference,
    Exclude,
    resolve_exchangers,
    resolve_host,
    smart_host_name,
)
from smtpcore.routing._resolver import Resolver

__all__ = ["DEFAULT_TRUSTED_NETWORKS", "Router"]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

DEFAULT_TRUSTED_NETWORKS: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

# Characters that make a local part route somewhere else on hosts that still
# honour them: "user%other" (the %-hack), "other!user" (UUCP bang paths) and
# an "@" kept inside a quoted local part (RFC 5321 appendix C).
_ROUTING_CHARACTERS = frozenset("%!@")


def _as_address(value: IPAddress | str) -> IPAddress:
    if isinstance(value, IPv4Address | IPv6Address):
        address: IPAddress = value
    else:
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            literal = parse_address_literal(text)
            if literal is None:
                raise ValueError(f"{value!r} is not an IP address literal")
            address = literal
        else:
            address = ip_address(text.split("%", 1)[0])
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_postmaster(local_part: str) -> bool:
    """``postmaster`` in any ASCII case (RFC 5321 section 4.5.1 and 4.1.1.3)."""
    return local_part.isascii() and local_part.lower() == "postmaster"


class Router:
    """Decides, for each recipient, local delivery, relaying, or refusal.

    ``local_domains`` are delivered here. They are compared as DNS names
    are: without regard to case, as A-labels, with any trailing dot ignored;
    an address literal among them (``[192.0.2.1]``) counts as one of
    ``local_addresses``. A recipient at an address literal naming one of
    ``local_addresses`` or ``local_literals`` is local too (RFC 5321 section
    4.1.3; RFC 1123 section 5.2.17).

    Every other domain is relayed only for a client that may relay: one that
    authenticated (when ``relay_for_authenticated``) or whose address is in
    ``trusted_networks``; recipients in ``relay_domains`` (domains this host
    is a backup MX or gateway for) are accepted from anyone, as with
    Postfix's ``relay_domains``. Everything else gets 550 5.7.1, so the
    server is never an open relay.

    ``trusted_networks`` defaults to the loopback networks, as Postfix's
    ``mynetworks_style = host`` trusts the host itself. Pass ``()`` when a
    proxy on the same host forwards outside connections, or they would all
    look local.

    ``hostnames`` are this host's own names, and ``local_addresses`` its own
    addresses: an MX list naming either is cut below this host (RFC 5321
    section 5.1). ``local_literals`` are addresses of this host where another
    server answers on ``port`` (several servers sharing one address, each on
    its own port): mail to their literals is local, but an exchanger there is
    that other server, and cuts nothing. With ``smart_host`` set, every remote
    recipient is sent to that (host, port) instead of the domain's exchangers.
    ``port``, ``max_attempts``, ``max_failed_lookups`` and ``address_preference`` are
    passed to ``resolve_exchangers``; a smart host's lookup takes ``max_attempts``
    and ``address_preference``.
    """

    def __init__(
        self,
        local_domains: Iterable[str],
        *,
        hostnames: Iterable[str] = (),
        local_addresses: Iterable[IPAddress | str] = (),
        local_literals: Iterable[IPAddress | str] = (),
        trusted_networks: Iterable[str | IPNetwork] = DEFAULT_TRUSTED_NETWORKS,
        relay_for_authenticated: bool = True,
        relay_domains: Iterable[str] = (),
        smart_host: tuple[str, int] | None = None,
        port: int = 25,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_failed_lookups: int = DEFAULT_MAX_FAILED_LOOKUPS,
        address_preference: AddressPreference = "ipv6",
    ) -> None:
        addresses = {_as_address(a) for a in local_addresses}
        domains: set[str] = set()
        for domain in local_domains:
            if is_address_literal(domain):
                addresses.add(_as_address(domain))
            else:
                domains.add(normalize_domain(domain))
        self.local_domains: frozenset[str] = frozenset(domains)
        self.local_addresses: frozenset[IPAddress] = frozenset(addresses)
        self.local_literals: frozenset[IPAddress] = self.local_addresses | {
            _as_address(a) for a in local_literals
        }
        """Every address whose literal is local: ``local_addresses`` and ``local_literals``."""
        self.hostnames: frozenset[str] = frozenset(canonical_host(h) for h in hostnames)
        self.trusted_networks: tuple[IPNetwork, ...] = tuple(
            ip_network(n) for n in trusted_networks
        )
        self.relay_for_authenticated = relay_for_authenticated
        self.relay_domains: frozenset[str] = frozenset(normalize_domain(d) for d in relay_domains)
        if smart_host is not None:
            host, smart_port = smart_host
            if not 0 < smart_port < 65536:
                raise ValueError(f"smart host port {smart_port} out of range")
            smart_host = (smart_host_name(host), smart_port)
        self.smart_host = smart_host
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if max_failed_lookups < 1:
            raise ValueError("max_failed_lookups must be at least 1")
        self.port = port
        self.max_attempts = max_attempts
        self.max_failed_lookups = max_failed_lookups
        self.address_preference: AddressPreference = address_preference

    def is_local_domain(self, domain: str) -> bool:
        """True when mail for ``domain`` (a name or an address literal) is delivered here."""
        if is_address_literal(domain):
            address = parse_address_literal(domain)
            return address is not None and _as_address(address) in self.local_literals
        return normalize_domain(domain) in self.local_domains

    def is_trusted(self, client_address: IPAddress | str | None) -> bool:
        """True when ``client_address`` lies in a trusted network; ``None`` (unknown) is not.

        An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, as a dual-stack
        socket reports IPv4 peers) is judged as the IPv4 address it maps.
        """
        if client_address is None:
            return False
        address = _as_address(client_address)
        return any(address in network for network in self.trusted_networks)

    def is_own_postmaster(self, recipient: Mailbox) -> bool:
        """True for this host's own postmaster: the bare ``postmaster``, or ``postmaster``
        at one of ``hostnames`` in any spelling (RFC 5321 section 4.5.1).

        The host names itself in its greeting, its Received lines and the From of its
        bounces, so its postmaster must be reachable there (Postfix lists
        ``$myhostname`` in ``mydestination`` for this). Only the postmaster is: the
        host name is no local domain, so no other mailbox is at it.
        """
        if recipient.domain == "":
            return True  # only Postmaster may go without a domain (RFC 5321 §4.1.1.3)
        if recipient.is_address_literal or not _is_postmaster(recipient.local_part):
            return False  # an own address literal is a local domain, seen by route()
        return normalize_domain(recipient.domain) in self.hostnames

    def route(
        self,
        recipient: Mailbox,
        *,
        authenticated: bool = False,
        client_address: IPAddress | str | None = None,
    ) -> LocalDelivery | RemoteDelivery | Rejected:
        """Decide what to do with one recipient (RFC 5321 sections 3.6 and 4.5.1).

        The bare ``postmaster`` is always local, and so is ``postmaster`` at one
        of ``hostnames`` (:meth:`is_own_postmaster`); any other local part there
        is routed as at any other name. A local part that would route
        the mail onwards (``user%other``, ``other!user``, a quoted ``@``) at
        a domain this host accepts is refused, never interpreted: those are
        the classic ways to turn a server into a relay. Source routes are
        already gone from a parsed ``Mailbox`` (RFC 5321 appendix C lets a
        server ignore them), so the mail goes to the final mailbox only.
        """
        if self.is_own_postmaster(recipient):
            return LocalDelivery(recipient, "")
        literal = is_address_literal(recipient.domain)
        domain = recipient.domain if literal else normalize_domain(recipient.domain)
        if literal:
            address = parse_address_literal(domain)
            local = address is not None and _as_address(address) in self.local_literals
            domain = normalize_domain(domain)
        else:
            local = domain in self.local_domains
        routing_trick = not _ROUTING_CHARACTERS.isdisjoint(recipient.local_part)
        if local:
            if routing_trick:
                return out.routing_trick()
            return LocalDelivery(recipient, domain)
        if domain in self.relay_domains:
            if routing_trick:
                return out.routing_trick()
            return RemoteDelivery(recipient, domain, self.smart_host)
        may_relay = (authenticated and self.relay_for_authenticated) or self.is_trusted(
            client_address
        )
        if not may_relay:
            return out.relay_denied(domain)
        return RemoteDelivery(recipient, domain, self.smart_host)

    async def resolve(
        self,
        delivery: RemoteDelivery,
        resolver: Resolver,
        *,
        rng: RandomSource,
        failures: FailedExchangers | None = None,
        exclude: Exclude | None = None,
    ) -> tuple[Attempt, ...] | Rejected:
        """Find the addresses to try for a remote delivery, with this router's settings.

        See ``resolve_exchangers`` for the outcomes and for ``exclude``. With a
        smart host, only its addresses are looked up, and failures are temporary.
        """
        if delivery.smart_host is not None:
            host, port = delivery.smart_host
            return await resolve_host(
                host,
                port,
                resolver,
                rng=rng,
                max_attempts=self.max_attempts,
                address_preference=self.address_preference,
                exclude=exclude,
            )
        return await resolve_exchangers(
            delivery.domain,
            resolver,
            rng=rng,
            local_names=self.hostnames,
            local_addresses=self.local_addresses,
            failures=failures,
            max_attempts=self.max_attempts,
            max_failed_lookups=self.max_failed_lookups,
            port=self.port,
            address_preference=self.address_preference,
            exclude=exclude,
        )
