"""What routing answers: deliver here, send elsewhere, or refuse, and where to connect."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from smtpcore.address import Mailbox

__all__ = [
    "Attempt",
    "LocalDelivery",
    "RejectReason",
    "Rejected",
    "RemoteDelivery",
]

IPAddress = IPv4Address | IPv6Address

_STATUS = re.compile(r"([245])\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\Z")


class RejectReason(enum.Enum):
    """Why a recipient or a domain was refused; each reason has one reply."""

    RELAY_DENIED = "relay-denied"
    ROUTING_TRICK = "routing-trick"
    NULL_MX = "null-mx"
    NO_SUCH_DOMAIN = "no-such-domain"
    CNAME_LOOP = "cname-loop"
    DNS_TEMPORARY = "dns-temporary"
    LOOKUP_LIMIT = "lookup-limit"
    NO_ROUTE = "no-route"
    NO_PRIMARY = "no-primary"
    ROUTING_LOOP = "routing-loop"
    SMART_HOST_FAILURE = "smart-host-failure"


@dataclass(frozen=True, slots=True)
class LocalDelivery:
    """The recipient's domain is this host's: deliver into ``mailbox``'s local part.

    ``domain`` is the canonical local domain (lowercase A-label), or ``""``
    for this host's own postmaster, which RFC 5321 section 4.5.1 makes every
    server accept: the bare ``postmaster``, or ``postmaster`` at one of the
    router's ``hostnames``.
    """

    mailbox: Mailbox
    domain: str

    @property
    def local_part(self) -> str:
        return self.mailbox.local_part


@dataclass(frozen=True, slots=True)
class RemoteDelivery:
    """The message must be relayed: to ``domain``'s exchangers, or to the smart host.

    ``domain`` is the canonical name to look up (lowercase A-label) or an
    address literal such as ``[192.0.2.1]``. When ``smart_host`` is set
    (host, port), every remote message goes there instead and no MX lookup is
    made, as with Postfix's ``relayhost = [host]:port``.
    """

    mailbox: Mailbox
    domain: str
    smart_host: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A refusal, with the reply the SMTP server should send.

    Routing cannot import the SMTP layer, so the reply is spelt out: the
    basic ``code`` (RFC 5321 section 4.2), the enhanced ``status`` (RFC 3463),
    and one line of ``text``. ``temporary`` tells a queue whether to retry.
    """

    code: int
    status: str
    text: str
    reason: RejectReason

    def __post_init__(self) -> None:
        if not 400 <= self.code <= 599:
            raise ValueError(f"a rejection needs a 4xx or 5xx code, not {self.code}")
        match = _STATUS.match(self.status)
        if match is None or match.group(1) != str(self.code)[0]:
            raise ValueError(f"status {self.status!r} does not fit code {self.code}")
        if any(c in self.text for c in "\r\n") or not self.text.isprintable():
            raise ValueError("reply text must be one printable line")

    @property
    def temporary(self) -> bool:
        """True for a 4xx answer: the same request may succeed later."""
        return self.code < 500


@dataclass(frozen=True, slots=True)
class Attempt:
    """One address to connect to, in the order given by ``resolve_exchangers``.

    ``host`` is the exchanger's name (for TLS server-name checks and logs),
    or the address literal when the domain was one.
    """

    host: str
    address: IPAddress
    port: int = 25
    preference: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")


def relay_denied(domain: str) -> Rejected:
    return Rejected(550, "5.7.1", f"relay access denied for {domain}", RejectReason.RELAY_DENIED)


def routing_trick() -> Rejected:
    return Rejected(
        550,
        "5.7.1",
        "source routes, %-hacks and bang paths are not accepted",
        RejectReason.ROUTING_TRICK,
    )


def null_mx(domain: str) -> Rejected:
    # RFC 7504 made 556 for this case; RFC 7505 registered the 5.1.10 status.
    return Rejected(
        556, "5.1.10", f"{domain} does not accept mail (null MX)", RejectReason.NULL_MX
    )


def no_such_domain(domain: str) -> Rejected:
    return Rejected(550, "5.1.2", f"domain {domain} does not exist", RejectReason.NO_SUCH_DOMAIN)


def cname_loop(domain: str) -> Rejected:
    # The name exists, so not 5.1.2; its routing data leads nowhere, and asking again
    # walks the same chain: RFC 3463's X.4.4 "unable to route", permanent, as Postfix's
    # "Name server loop" (a not-found) ends.
    return Rejected(
        550,
        "5.4.4",
        f"the CNAME chain of {domain} loops or is too long to follow",
        RejectReason.CNAME_LOOP,
    )


def dns_temporary(name: str) -> Rejected:
    return Rejected(
        451, "4.4.3", f"temporary DNS failure looking up {name}", RejectReason.DNS_TEMPORARY
    )


def lookup_limit(domain: str, failed: int) -> Rejected:
    # Not the domain's DNS failing: its exchangers' lookups, as many as allowed.
    return Rejected(
        451,
        "4.4.3",
        f"lookups of {failed} mail exchangers for {domain} failed",
        RejectReason.LOOKUP_LIMIT,
    )


def no_route(domain: str) -> Rejected:
    return Rejected(550, "5.4.4", f"no usable mail exchanger for {domain}", RejectReason.NO_ROUTE)


NO_PRIMARY_NAMED = 3
"""The more preferred exchangers a ``NO_PRIMARY`` text names at most; the rest it counts."""
NO_PRIMARY_ROOM = 400
"""Characters of a ``NO_PRIMARY`` text at most (names are ASCII A-labels): with its code
and status it fits a 512-octet reply line (RFC 5321 section 4.5.3.1.5)."""


def no_primary(domain: str, lacking: Sequence[tuple[str, str]]) -> Rejected:
    """Postfix's words (this host is a backup exchanger, and the better ones are not
    usable now; holding the mail until they are is what a backup is for), then which
    of them have no address and why, ``lacking`` as (host, why) pairs: the operator,
    and the sender of the bounce when the queue gives up, can see what to mend."""
    text = f"unable to find primary relay for {domain}: no address for"
    named: list[str] = []
    reserve = len(f", and {len(lacking)} more")
    for host, why in lacking[:NO_PRIMARY_NAMED]:
        entry = f"{host} ({why})"
        if len(text) + len(", ".join([*named, entry])) + 1 + reserve > NO_PRIMARY_ROOM:
            break
        named.append(entry)
    rest = len(lacking) - len(named)
    if not named:
        named.append(f"{rest} more preferred exchanger" + ("s" if rest != 1 else ""))
    elif rest:
        named.append(f"and {rest} more")
    return Rejected(451, "4.4.4", f"{text} {', '.join(named)}", RejectReason.NO_PRIMARY)


def routing_loop(domain: str) -> Rejected:
    return Rejected(
        550, "5.4.6", f"mail for {domain} loops back to this host", RejectReason.ROUTING_LOOP
    )


def smart_host_failure(host: str) -> Rejected:
    return Rejected(
        451,
        "4.3.5",
        f"smart host {host} has no address: check the configuration",
        RejectReason.SMART_HOST_FAILURE,
    )
