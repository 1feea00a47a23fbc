"""From a domain to the addresses to try: the one place where routing awaits DNS.

The order itself comes from the pure ``order_exchangers``; this module only
gathers the resolver's answers and turns every way a lookup can end into
either a list of ``Attempt`` or a ``Rejected`` that the SMTP server can send
as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal

from smtpcore._ip import host_address
from smtpcore.address import is_address_literal, normalize_domain, parse_address_literal
from smtpcore.routing import _outcomes as out
from smtpcore.routing._mx import (
    FailedExchangers,
    MXRecord,
    RandomSource,
    order_exchangers,
    own_level,
)
from smtpcore.routing._outcomes import Attempt, Rejected
from smtpcore.routing._resolver import CNAMELoop, NXDomain, Resolver, TemporaryDNSError

__all__ = [
    "AddressPreference",
    "order_addresses",
    "resolve_exchangers",
    "resolve_host",
    "smart_host_name",
]

IPAddress = IPv4Address | IPv6Address
AddressPreference = Literal["ipv6", "ipv4", "any"]
Exclude = Callable[[Attempt], bool]

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_MAX_FAILED_LOOKUPS = 10
"""Exchanger lookups that may fail temporarily in one resolution before it stops. A
failure is what costs time: a lame name takes the resolver's whole timeout, about ten
seconds for AAAA then A at a 5 s lifetime, so ten of them, about 110 s, fit the
reference server's two-minute ``RESOLVE_TIMEOUT``; an NXDOMAIN or an answer comes at
once and is not counted."""


def order_addresses(
    addresses: Iterable[IPAddress], preference: AddressPreference, rng: RandomSource
) -> list[IPAddress]:
    """Order one host's addresses by family, keeping the resolver's order inside a family.

    RFC 5321 section 5.1 leaves the order of a multihomed host's addresses to
    the resolver interface. ``"ipv6"`` (the default, as RFC 6724 prefers) or
    ``"ipv4"`` puts that family first; ``"any"`` shuffles both together, like
    Postfix's ``smtp_address_preference = any``. Duplicates are dropped.
    """
    unique = list(dict.fromkeys(addresses))
    if preference == "any":
        for i in range(len(unique) - 1, 0, -1):
            j = rng.randrange(i + 1) % (i + 1)
            unique[i], unique[j] = unique[j], unique[i]
        return unique
    first = 6 if preference == "ipv6" else 4
    return sorted(unique, key=lambda a: a.version != first)


def _literal_attempt(
    literal: str, local_addresses: Collection[IPAddress], port: int, exclude: Exclude | None
) -> tuple[Attempt, ...] | Rejected:
    address = parse_address_literal(literal)
    if address is None:
        # A general address literal (RFC 5321 section 4.1.3) names no IP host.
        return out.no_route(literal)
    if host_address(address) in local_addresses:
        return out.routing_loop(literal)
    attempt = Attempt(literal, address, port, 0)
    if exclude is not None and exclude(attempt):
        return out.no_route(literal)
    return (attempt,)


def _cap_is_full(
    attempts: Sequence[Attempt], exchanger: MXRecord, max_attempts: int, *, seeking_self: bool
) -> bool:
    """Whether ``exchanger`` can change nothing that is tried, so need not be looked up.

    Once ``max_attempts`` addresses are listed, a less preferred exchanger comes too
    late. One at the level that filled the cap still matters only while this host is
    sought by address (``seeking_self``): found there, it cuts that level (RFC 5321
    section 5.1); otherwise the shuffle already chose which of the level are tried.
    """
    if len(attempts) < max_attempts:
        return False
    return not seeking_self or exchanger.preference > attempts[-1].preference


async def resolve_exchangers(
    domain: str,
    resolver: Resolver,
    *,
    rng: RandomSource,
    local_names: Iterable[str] = (),
    local_addresses: Iterable[IPAddress | str] = (),
    failures: FailedExchangers | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_failed_lookups: int = DEFAULT_MAX_FAILED_LOOKUPS,
    port: int = 25,
    address_preference: AddressPreference = "ipv6",
    exclude: Exclude | None = None,
) -> tuple[Attempt, ...] | Rejected:
    """Find where mail for ``domain`` goes: addresses to try in order, or why not.

    Follows RFC 5321 section 5.1: MX records sorted by preference with
    equal ones shuffled; implicit MX (the domain's own AAAA and A) only when
    the domain has no MX record; an exchanger with no address is skipped.
    This host, recognised by one of ``local_names`` or by one of
    ``local_addresses``, drops itself and every exchanger not more preferred
    than itself. At most ``max_attempts`` addresses are returned (RFC 5321
    asks that at least two be tried when there are two). An address for
    which ``exclude`` is true (one the caller will not connect to, such as an
    internal one) is left out before that cut, so that it takes no usable
    address's place; if it leaves none, the outcome is 550 5.4.4.

    Lookups stop once the cap is full (the level that filled it is completed only
    where ``local_addresses`` are given, to find this host there), and once
    ``max_failed_lookups`` of them have failed temporarily, so that a level of lame
    exchangers, each costing the resolver's whole timeout, cannot outlast the
    caller's deadline; a lookup that gets an answer, addresses or NXDOMAIN, does not
    count.
    An exchanger left unlooked by that limit, like one whose lookup failed, has no
    address known, so it is taken to be another host, as Postfix's smtp_find_self
    takes an exchanger without an address, unless its name is one of
    ``local_names``: names are compared before any lookup, so such an exchanger
    still cuts its level. What was found is tried; an empty outcome is then
    temporary, never 550 5.4.4.

    The outcomes the server maps to replies:

    - a non-empty tuple of ``Attempt``;
    - ``Rejected`` 556 5.1.10, a null MX (RFC 7505);
    - ``Rejected`` 550 5.1.2, the domain does not exist;
    - ``Rejected`` 550 5.4.4 (``CNAME_LOOP``), the domain's CNAME chain loops
      (``CNAMELoop``); an exchanger's that does is skipped, as one that does not
      exist is;
    - ``Rejected`` 451 4.4.3, a temporary DNS failure left no address;
    - ``Rejected`` 451 4.4.3 (``LOOKUP_LIMIT``), ``max_failed_lookups`` failed
      lookups left no address;
    - ``Rejected`` 451 4.4.4 (``NO_PRIMARY``), this host is a backup exchanger,
      no more preferred one is usable, and one of them has no address now
      (Postfix's "unable to find primary relay"): the mail waits, as a backup is
      there to make it;
    - ``Rejected`` 550 5.4.4, no exchanger has an address (or, for a backup, every
      more preferred one has only addresses that ``exclude`` leaves out);
    - ``Rejected`` 550 5.4.6, this host is the best exchanger: a loop.

    Raises ``AddressError`` when ``domain`` is not a domain name at all.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if max_failed_lookups < 1:
        raise ValueError("max_failed_lookups must be at least 1")
    own_addresses = {host_address(ip_address(a)) for a in local_addresses}
    if is_address_literal(domain):
        return _literal_attempt(domain, own_addresses, port, exclude)
    domain = normalize_domain(domain)
    try:
        # Each answer is read once, into a tuple: a resolver that hands back a
        # generator must not see it emptied by the first look.
        records: Sequence[MXRecord] = tuple(await resolver.mx(domain))
    except CNAMELoop:  # an NXDomain too: before it, as the replies differ
        return out.cname_loop(domain)
    except NXDomain:
        return out.no_such_domain(domain)
    except TemporaryDNSError:
        return out.dns_temporary(domain)
    if records and all(record.is_null for record in records):
        return out.null_mx(domain)
    if not records:
        records = [MXRecord(0, domain)]
    local_names = tuple(local_names)
    exchangers = order_exchangers(records, rng, local_names=local_names, failures=failures)
    if not exchangers:
        # Only null records are dropped silently, and those were handled
        # above: an empty order means a local name was the best exchanger.
        return out.routing_loop(domain)

    attempts: list[Attempt] = []
    failed: list[int] = []  # the level of each lookup that failed temporarily
    lacking: list[tuple[MXRecord, str]] = []  # each exchanger with no address, and why
    # Where this host cuts the list: by name already, or below by address once found.
    cutoff = own_level(records, local_names)
    unlooked: int | None = None  # the level of the first exchanger left unlooked
    for exchanger in exchangers:
        if _cap_is_full(attempts, exchanger, max_attempts, seeking_self=bool(own_addresses)):
            break
        if len(failed) == max_failed_lookups:
            # Not one of local_names (order_exchangers cut those): another host.
            unlooked = exchanger.preference
            break
        try:
            found = tuple(await resolver.addresses(exchanger.exchange))
        except CNAMELoop:  # an NXDomain too: before it, as it is said apart
            lacking.append((exchanger, "CNAME loop"))
            continue
        except NXDomain:
            lacking.append((exchanger, "NXDOMAIN"))
            continue
        except TemporaryDNSError:
            failed.append(exchanger.preference)
            continue
        if not found:
            lacking.append((exchanger, "no AAAA or A record"))
            continue
        if any(host_address(a) in own_addresses for a in found):
            cutoff = exchanger.preference
            attempts = [a for a in attempts if a.preference < cutoff]
            break
        listed = {a.address for a in attempts}
        for address in order_addresses(found, address_preference, rng):
            attempt = Attempt(exchanger.exchange, address, port, exchanger.preference)
            if address not in listed and (exclude is None or not exclude(attempt)):
                attempts.append(attempt)

    attempts = attempts[:max_attempts]
    if attempts:
        return tuple(attempts)
    if cutoff is not None and exchangers[0].preference >= cutoff:
        return out.routing_loop(domain)
    if unlooked is not None:
        return out.lookup_limit(domain, len(failed))
    if any(cutoff is None or level < cutoff for level in failed):
        return out.dns_temporary(domain)
    if cutoff is not None:
        better = [(x.exchange, why) for x, why in lacking if x.preference < cutoff]
        if better:
            # A more preferred exchanger has no address now; it may have one on a retry.
            return out.no_primary(domain, better)
    # No exchanger has an address, or (for a backup) every more preferred one resolved,
    # only to addresses that ``exclude`` leaves out, which waiting will not change.
    return out.no_route(domain)


def smart_host_name(host: str) -> str:
    """A smart host as an IP address in text, or a canonical host name.

    Postfix's brackets (``[relay.example]``, ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``)
    are accepted and mean what they mean there, no MX lookup, which is how a smart
    host is always looked up here. ``Router`` and ``resolve_host`` both read a smart
    host so. Raises ``AddressError`` when ``host`` names no host.
    """
    address = parse_address_literal(host) if is_address_literal(host) else None
    if address is not None:
        return str(address)
    inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ip_address(inner))
    except ValueError:
        return normalize_domain(inner)


async def resolve_host(
    host: str,
    port: int,
    resolver: Resolver,
    *,
    rng: RandomSource,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    address_preference: AddressPreference = "ipv6",
    exclude: Exclude | None = None,
) -> tuple[Attempt, ...] | Rejected:
    """Find the addresses of a smart host, without any MX lookup.

    This is Postfix's ``relayhost = [host]:port``: ``host`` is a name or an IP
    address, with or without those brackets (``smart_host_name``), and the
    attempts name it in that canonical form. A smart host that cannot be
    resolved is a configuration problem of this host, not of the recipient,
    so every failure here is temporary (451 4.3.5 or 451 4.4.3): the queue
    keeps the mail until the administrator fixes it. ``exclude`` is
    ``resolve_exchangers``'s. Raises ``AddressError`` when ``host`` names no
    host.
    """
    host = smart_host_name(host)
    addresses: Sequence[IPAddress]
    try:
        addresses = (ip_address(host),)
    except ValueError:
        try:
            found = tuple(await resolver.addresses(host))
        except NXDomain:  # a CNAMELoop too: the configuration's fault either way
            return out.smart_host_failure(host)
        except TemporaryDNSError:
            return out.dns_temporary(host)
        addresses = order_addresses(found, address_preference, rng)
    candidates = (Attempt(host, address, port, 0) for address in addresses)
    usable = [a for a in candidates if exclude is None or not exclude(a)][:max_attempts]
    if not usable:
        return out.smart_host_failure(host)
    return tuple(usable)
