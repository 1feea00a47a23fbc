"""A ``Resolver`` backed by dnspython (the ``dns`` extra: ``pip install smtpcore[dns]``).

Importing this module imports dnspython; nothing else in smtpcore does.
Lookups go through ``dns.asyncresolver``, whose backends cover both asyncio
and trio: the running library is detected on every call (with ``sniffio``
when it is installed, which trio always brings, or else by asking asyncio
for its running loop), so one resolver object serves either.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address

import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import dns.rrset
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from smtpcore.routing._mx import MXRecord
from smtpcore.routing._resolver import CNAMELoop, NXDomain, TemporaryDNSError

__all__ = ["DNSPythonResolver"]

IPAddress = IPv4Address | IPv6Address


class DNSPythonResolver:
    """Looks MX, AAAA and A records up in the DNS.

    With ``nameserver`` unset, the system's configuration (``/etc/resolv.conf``)
    is used; otherwise queries go to the given server address (or addresses)
    on ``port``. ``timeout`` bounds one whole lookup, retries included; a
    lookup that runs out of time is a ``TemporaryDNSError``. CNAME chains are
    followed as the recursive server returns them; one that loops or holds more
    than dnspython's fifteen CNAMEs is a ``CNAMELoop``. No search list is applied: mail domains
    are fully qualified (RFC 5321 section 5.1).
    """

    def __init__(
        self,
        nameserver: str | Sequence[str] | None = None,
        port: int = 53,
        *,
        timeout: float = 5.0,
    ) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            servers = [nameserver] if isinstance(nameserver, str) else list(nameserver)
            self._resolver.nameservers = servers
            self._resolver.port = port
        self._resolver.lifetime = timeout

    async def mx(self, domain: str) -> list[MXRecord]:
        """The MX records of ``domain``, less those whose exchange cannot be a host
        name (a label of 20 NUL octets is one in the DNS, but 80 characters
        escaped). When every record is such, the domain has MX records and none
        usable, which RFC 5321 §5.1 makes an error, not a reason to fall back to
        the implicit MX: a broken zone, a ``TemporaryDNSError`` until it is mended."""
        records: list[MXRecord] = []
        malformed = 0
        for rdata in await self._query(domain, dns.rdatatype.MX):
            if not isinstance(rdata, MX):
                continue
            exchange = rdata.exchange
            text = "" if exchange == dns.name.root else exchange.to_text(omit_final_dot=True)
            try:
                records.append(MXRecord(int(rdata.preference), text))
            except ValueError:
                malformed += 1
        if malformed and not records:
            raise TemporaryDNSError(domain, f"no usable MX record: {malformed} malformed")
        return records

    async def addresses(self, host: str) -> list[IPAddress]:
        found: list[IPAddress] = []
        missing = 0
        failure: TemporaryDNSError | None = None
        loop: CNAMELoop | None = None
        for rdtype in (dns.rdatatype.AAAA, dns.rdatatype.A):
            try:
                answer = await self._query(host, rdtype)
            except CNAMELoop as exc:  # an NXDomain too: caught first
                loop = exc
            except NXDomain:
                missing += 1
            except TemporaryDNSError as exc:
                failure = exc
            else:
                found.extend(
                    ip_address(rdata.address) for rdata in answer if isinstance(rdata, A | AAAA)
                )
        if found:
            # An answer for one family is worth more than a failure of the other.
            return found
        if loop is not None:
            # The chain is the name's, not a type's: the other family walks it too.
            raise loop
        if failure is not None:
            raise failure
        if missing == 2:
            raise NXDomain(host)
        return found

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[object]:
        """The records of the final name of the CNAME chain, or raise a typed error:
        a name that cannot be written in the DNS (an empty label, one over 63
        octets, a bad escape) cannot exist there, ``NXDomain``; a chain that loops is
        ``CNAMELoop`` (see ``_looped``)."""
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise NXDomain(name, str(exc) or type(exc).__name__) from None
        backend = dns.asyncbackend.get_backend(dns.asyncbackend.sniff())
        try:
            answer = await self._resolver.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False, backend=backend
            )
        except dns.resolver.NXDOMAIN:
            raise NXDomain(name) from None
        except dns.exception.DNSException as exc:
            if _looped(exc):
                raise CNAMELoop(name, str(exc) or type(exc).__name__) from None
            raise TemporaryDNSError(name, str(exc) or type(exc).__name__) from None
        return list(answer.rrset) if answer.rrset is not None else []


def _looped(exc: dns.exception.DNSException) -> bool:
    """Whether a server answered with a CNAME chain too long to follow (dnspython's
    ``ChainTooLong``). ``resolve`` files it in the ``errors`` of the error that ends
    the lookup: ``NoNameservers`` when the other servers failed at once (SERVFAIL,
    refused), ``LifetimeTimeout`` when one stayed silent until time ran out. One rule
    for all: the answering server gave the chain, and a server that failed beside it,
    loudly or silently, knows no better, so the loop is final (one that answers
    properly ends the lookup with its answer, and nothing is raised)."""
    if isinstance(exc, dns.message.ChainTooLong):
        return True
    # Each error is (server, tcp, port, exception or text, response).
    errors = exc.kwargs.get("errors") or ()
    return any(
        isinstance(error, tuple)
        and any(isinstance(part, dns.message.ChainTooLong) for part in error)
        for error in errors
    )
