"""The resolver interface, its errors, and a resolver that answers from memory.

Routing decisions never touch the network: they are made from what a
``Resolver`` answers. The protocol is two plain ``async def`` methods, so
any event loop can drive it (asyncio, trio, or a test calling ``send(None)``
on the coroutine).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Protocol, runtime_checkable

from smtpcore.routing._mx import MXRecord, canonical_host

__all__ = [
    "CNAME",
    "CNAMELoop",
    "DNSError",
    "NXDomain",
    "Resolver",
    "StaticResolver",
    "TemporaryDNSError",
    "parse_zone",
]

IPAddress = IPv4Address | IPv6Address

_MAX_CNAMES = 15
"""The CNAMEs one chain may hold; a sixteenth is a ``CNAMELoop``. dnspython's resolver
stops there too (``dns.message.MAX_CHAIN``, 16), so both route the same chain alike."""


class DNSError(Exception):
    """A lookup of ``name`` failed; see the subclasses for which way."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name


class NXDomain(DNSError):
    """The name does not exist (RCODE 3): a permanent answer (RFC 5321 section 5.1)."""


class TemporaryDNSError(DNSError):
    """No answer could be had now (SERVFAIL, timeout, no server): retry later."""


class CNAMELoop(NXDomain):
    """The name's CNAME chain loops, or is longer than the resolver follows: a
    permanent answer, since asking again walks the same chain.

    An ``NXDomain``, as Postfix's "Name server loop" is a not-found: the name leads
    to no records, and code written when a resolver raised only ``NXDomain`` or
    ``TemporaryDNSError`` takes it as permanent rather than crash on a third error.
    Catch it before ``NXDomain`` where the answers differ (routing says 5.4.4 for the
    domain's loop, 5.1.2 for its absence). Both resolvers here raise it.
    """


@runtime_checkable
class Resolver(Protocol):
    """What routing asks of DNS.

    Names are passed in canonical form: lowercase A-labels, no trailing dot.
    Both methods follow CNAME chains as a recursive resolver does.

    ``mx`` returns the MX records of a domain, an empty sequence when the
    name exists but has none (NODATA, which means implicit MX), and raises
    ``NXDomain`` when the name does not exist. A null MX comes back as an
    ``MXRecord`` whose ``exchange`` is ``""``.

    ``addresses`` returns the IPv6 and IPv4 addresses of a host (AAAA and A),
    empty when it has neither, and raises ``NXDomain`` when the name does not
    exist.

    Either raises ``TemporaryDNSError`` when it cannot get an answer now, and
    ``CNAMELoop`` (an ``NXDomain``) when the name's CNAME chain loops or never ends.
    """

    async def mx(self, domain: str) -> Sequence[MXRecord]: ...

    async def addresses(self, host: str) -> Sequence[IPAddress]: ...


@dataclass(frozen=True, slots=True)
class CNAME:
    """An alias: the name that holds it stands for ``target`` (RFC 1034 section 3.6.2)."""

    target: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", canonical_host(self.target))


StaticRecord = MXRecord | IPv4Address | IPv6Address | CNAME


class StaticResolver:
    """A resolver that answers from a mapping of names to records.

    For tests, the demo and closed networks with no DNS. ``records`` maps a
    name to its records (``MXRecord``, ``IPv4Address``, ``IPv6Address``, or
    one ``CNAME``). A name that is absent, and is not the parent of a present
    name, does not exist (NXDOMAIN); a name present with an empty list exists
    and has no records; a name with only addresses has no MX, so it gets
    mail through implicit MX. Names in ``failing`` answer with a temporary
    failure, as a broken authoritative server would.
    """

    def __init__(
        self,
        records: Mapping[str, Iterable[StaticRecord]],
        *,
        failing: Iterable[str] = (),
    ) -> None:
        self._records: dict[str, tuple[StaticRecord, ...]] = {}
        for name, items in records.items():
            key = canonical_host(name)
            merged = self._records.get(key, ()) + tuple(items)
            aliases = [item for item in merged if isinstance(item, CNAME)]
            if aliases and len(merged) > 1:
                raise ValueError(f"{key}: a CNAME cannot stand beside other records")
            for item in merged:
                if not isinstance(item, MXRecord | IPv4Address | IPv6Address | CNAME):
                    raise TypeError(f"{key}: not a record: {item!r}")
            self._records[key] = merged
        self._failing = frozenset(canonical_host(name) for name in failing)

    @classmethod
    def from_zone_text(cls, text: str) -> StaticResolver:
        """Build a resolver from zone-like lines; see ``parse_zone`` for the format."""
        records, failing = parse_zone(text)
        return cls(records, failing=failing)

    @classmethod
    def from_zone_file(cls, path: str | os.PathLike[str]) -> StaticResolver:
        """Build a resolver from a UTF-8 file of zone-like lines (a byte order mark at
        its start, as Windows editors write, is the UTF-8 signature, not text)."""
        return cls.from_zone_text(Path(path).read_text(encoding="utf-8-sig"))

    async def mx(self, domain: str) -> list[MXRecord]:
        return [r for r in self._lookup(domain) if isinstance(r, MXRecord)]

    async def addresses(self, host: str) -> list[IPAddress]:
        found = self._lookup(host)
        v6 = [r for r in found if isinstance(r, IPv6Address)]
        v4 = [r for r in found if isinstance(r, IPv4Address)]
        return [*v6, *v4]

    def _lookup(self, name: str) -> tuple[StaticRecord, ...]:
        try:
            key = canonical_host(name)
        except ValueError:
            raise NXDomain(name, "not a valid domain name") from None
        for _ in range(_MAX_CNAMES + 1):  # the chain's names: its CNAMEs and the last
            if key in self._failing:
                raise TemporaryDNSError(key, "server failure")
            found = self._records.get(key)
            if found is None:
                if self._has_descendant(key):
                    return ()
                raise NXDomain(key)
            if found and isinstance(found[0], CNAME):
                key = found[0].target
                continue
            return found
        raise CNAMELoop(name, f"CNAME chain of more than {_MAX_CNAMES} CNAMEs, or looping")

    def _has_descendant(self, key: str) -> bool:
        # An empty non-terminal exists (RFC 8020): it answers NODATA, not NXDOMAIN.
        suffix = "." + key
        return any(name.endswith(suffix) for name in self._records)


def parse_zone(text: str) -> tuple[dict[str, list[StaticRecord]], list[str]]:
    """Parse zone-like text into ``StaticResolver`` records and failing names.

    One record a line: ``name [ttl] [IN] TYPE data``, where TYPE is ``MX``
    (``preference exchange``; ``MX 0 .`` is a null MX), ``A``, ``AAAA`` or
    ``CNAME``. Two directives that real zones lack: ``name EXISTS`` declares
    a name with no records, and ``name SERVFAIL`` makes lookups of that name
    fail temporarily. Every name is absolute (a trailing dot is optional;
    there is no ``$ORIGIN`` and no ``@``). ``#`` and ``;`` start comments.
    Raises ``ValueError`` naming the line of the first mistake.
    """
    records: dict[str, list[StaticRecord]] = {}
    failing: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        try:
            name, kind, record = _parse_line(line.split())
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}: {raw.strip()!r}") from None
        if kind == "SERVFAIL":
            failing.append(name)
        else:
            bucket = records.setdefault(name, [])
            if record is not None:
                bucket.append(record)
                if len(bucket) > 1 and any(isinstance(item, CNAME) for item in bucket):
                    raise ValueError(
                        f"line {number}: a CNAME cannot stand beside other records: "
                        f"{raw.strip()!r}"
                    )
    return records, failing


def _parse_line(tokens: list[str]) -> tuple[str, str, StaticRecord | None]:
    if tokens[0] == "@" or tokens[0].startswith("$"):
        # A BIND habit: read as a name, "@" would hold records nothing looks up.
        raise ValueError("no $ORIGIN, $TTL or @ here: write each name out in full")
    name = canonical_host(tokens[0])
    rest = tokens[1:]
    while rest and (rest[0].isdigit() or rest[0].upper() == "IN"):
        rest = rest[1:]
    if not rest:
        raise ValueError("missing record type")
    kind, data = rest[0].upper(), rest[1:]
    if kind in ("EXISTS", "SERVFAIL"):
        if data:
            raise ValueError(f"{kind} takes no data")
        return name, kind, None
    if kind == "MX":
        if len(data) != 2 or not data[0].isdigit():
            raise ValueError("MX needs a preference and an exchange")
        return name, kind, MXRecord(int(data[0]), data[1])
    if len(data) != 1:
        raise ValueError(f"{kind} needs exactly one value")
    if kind == "CNAME":
        return name, kind, CNAME(data[0])
    try:
        if kind == "A":
            return name, kind, IPv4Address(data[0])
        if kind == "AAAA":
            return name, kind, IPv6Address(data[0])
    except ValueError:
        family = "IPv4" if kind == "A" else "IPv6"
        raise ValueError(f"{kind} needs an {family} address") from None
    raise ValueError(f"unsupported record type {kind}")
