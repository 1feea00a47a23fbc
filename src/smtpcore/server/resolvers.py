"""The resolver behind ``--resolver``: ``system``, ``static:FILE`` or ``dns:HOST:PORT``
(``HOST`` an IP address)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from smtpcore.routing import MXRecord, NXDomain, Resolver, StaticResolver, TemporaryDNSError
from smtpcore.server.config import ConfigError, parse_server

__all__ = ["NO_MX_LOOKUPS", "SystemResolver", "check_remote_delivery", "make_resolver"]

NO_MX_LOOKUPS = (
    "remote delivery needs MX lookups, and they need dnspython, which is not installed. "
    "Either install it (pip install smtpcore[dns]), or send all remote mail through a "
    "smart host (--relay-host HOST:PORT) or resolve from a zone file (--resolver static:FILE)"
)

IPAddress = IPv4Address | IPv6Address


class SystemResolver:
    """The system's DNS: MX records through dnspython (the ``dns`` extra) reading
    ``/etc/resolv.conf``; without dnspython, addresses from ``getaddrinfo`` and MX
    lookups failing temporarily, so that mail waits in the queue rather than bouncing."""

    def __init__(self) -> None:
        self._dns: Resolver | None = None
        self._loaded = False

    @property
    def can_look_up_mx(self) -> bool:
        """Whether MX lookups work here (dnspython is installed)."""
        return self._dnspython() is not None

    def _dnspython(self) -> Resolver | None:
        if not self._loaded:
            self._loaded = True
            try:
                from smtpcore.routing.dnspython import DNSPythonResolver
            except ImportError:
                return None
            self._dns = DNSPythonResolver()
        return self._dns

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        dns = self._dnspython()
        if dns is None:
            raise TemporaryDNSError(domain, "MX lookups need dnspython: pip install smtpcore[dns]")
        return await dns.mx(domain)

    async def addresses(self, host: str) -> Sequence[IPAddress]:
        dns = self._dnspython()
        if dns is not None:
            return await dns.addresses(host)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise NXDomain(host) from None
            raise TemporaryDNSError(host, str(exc)) from None
        found: dict[IPAddress, None] = {}
        for _, _, _, _, sockaddr in infos:
            found[ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
        return list(found)


def make_resolver(spec: str) -> Resolver:
    """The resolver an ``--resolver`` value names; a bad value is a :class:`ConfigError`."""
    kind, _, rest = spec.partition(":")
    if kind == "system" and not rest:
        return SystemResolver()
    if kind == "static" and rest:
        try:
            return StaticResolver.from_zone_file(Path(rest))
        except OSError as exc:
            raise ConfigError(f"--resolver: cannot read {rest}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"--resolver: {rest}: {exc}") from None
    if kind == "dns" and rest:
        try:
            host, port = parse_server(rest)
        except ValueError as exc:
            raise ConfigError(f"--resolver: {exc}") from None
        try:
            # The DNS server is asked for names, so it cannot be found by one.
            ip_address(host)
        except ValueError:
            raise ConfigError(
                f"--resolver dns:HOST:PORT: {host!r} is not an IP address; the DNS server "
                "is given by its address (dns:127.0.0.1:53, dns:[::1]:53)"
            ) from None
        try:
            from smtpcore.routing.dnspython import DNSPythonResolver
        except ImportError:
            raise ConfigError(
                "--resolver dns:HOST:PORT needs dnspython: pip install smtpcore[dns]"
            ) from None
        return DNSPythonResolver(host, port)
    raise ConfigError(f"--resolver: {spec!r}; use system, static:FILE or dns:HOST:PORT")


def check_remote_delivery(resolver: Resolver, relay_host: tuple[str, int] | None) -> None:
    """Refuse to start a server whose remote mail could only wait and expire: MX lookups
    that cannot work and no smart host (issue: mail deferred for days as "temporary
    DNS failure"). A smart host needs addresses only, which ``getaddrinfo`` gives."""
    if relay_host is not None:
        return
    if isinstance(resolver, SystemResolver) and not resolver.can_look_up_mx:
        raise ConfigError(NO_MX_LOOKUPS)
