"""Routing: is a recipient local, may it be relayed, and where does its mail go.

The decisions are pure functions (``Router.route``, ``order_exchangers``);
only resolvers do I/O. The dnspython-backed resolver lives in
:mod:`smtpcore.routing.dnspython` and is imported only when asked for.
"""

from smtpcore.routing._mx import FailedExchangers, MXRecord, RandomSource, order_exchangers
from smtpcore.routing._outcomes import (
    Attempt,
    LocalDelivery,
    Rejected,
    RejectReason,
    RemoteDelivery,
)
from smtpcore.routing._resolve import (
    AddressPreference,
    order_addresses,
    resolve_exchangers,
    resolve_host,
)
from smtpcore.routing._resolver import (
    CNAME,
    CNAMELoop,
    DNSError,
    NXDomain,
    Resolver,
    StaticResolver,
    TemporaryDNSError,
    parse_zone,
)
from smtpcore.routing._router import DEFAULT_TRUSTED_NETWORKS, Router

__all__ = [
    "CNAME",
    "CNAMELoop",
    "DEFAULT_TRUSTED_NETWORKS",
    "AddressPreference",
    "Attempt",
    "DNSError",
    "FailedExchangers",
    "LocalDelivery",
    "MXRecord",
    "NXDomain",
    "RandomSource",
    "RejectReason",
    "Rejected",
    "RemoteDelivery",
    "Resolver",
    "Router",
    "StaticResolver",
    "TemporaryDNSError",
    "order_addresses",
    "order_exchangers",
    "parse_zone",
    "resolve_exchangers",
    "resolve_host",
]
