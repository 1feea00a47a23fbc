"""From a domain to the addresses to try: the RFC 5321 section 5.1 and RFC 7505 cases.

Every case runs under asyncio and under trio, against ``StaticResolver``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import TypeVar

import pytest
import trio

from smtpcore.address import parse_mailbox
from smtpcore.routing import (
    Attempt,
    FailedExchangers,
    LocalDelivery,
    MXRecord,
    NXDomain,
    Rejected,
    RejectReason,
    RemoteDelivery,
    Resolver,
    Router,
    StaticResolver,
    TemporaryDNSError,
    resolve_exchangers,
    resolve_host,
)
from smtpcore.server.delivery import RESOLVE_TIMEOUT

T = TypeVar("T")

LIBRARIES = ["asyncio", "trio"]


def run(library: str, make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    if library == "asyncio":
        return asyncio.run(main())
    return trio.run(main)


ZONE = StaticResolver.from_zone_text(
    """
    # plain: two preference levels
    plain.example        MX 10 mx1.plain.example
    plain.example        MX 20 mx2.plain.example
    mx1.plain.example    AAAA 2001:db8::11
    mx1.plain.example    A    192.0.2.11
    mx2.plain.example    A    192.0.2.12

    # equal preferences
    equal.example        MX 10 a.equal.example
    equal.example        MX 10 b.equal.example
    a.equal.example      A 192.0.2.21
    b.equal.example      A 192.0.2.22

    # no MX at all: implicit MX, AAAA and A both looked up
    implicit.example     AAAA 2001:db8::31
    implicit.example     A    192.0.2.31

    # neither MX nor address
    bare.example         EXISTS

    # RFC 7505 null MX, with an address that must not be used
    nullmx.example       MX 0 .
    nullmx.example       A  192.0.2.41

    # a null record beside a real one: the real one is used
    halfnull.example     MX 0 .
    halfnull.example     MX 10 mx.halfnull.example
    mx.halfnull.example  A  192.0.2.42

    # the first exchanger has no address, the second has
    skip.example         MX 10 ghost.skip.example
    skip.example         MX 20 mx.skip.example
    mx.skip.example      A 192.0.2.51

    # MX records present, none usable: no fallback to the domain's own A
    unusable.example     MX 10 ghost.unusable.example
    unusable.example     MX 20 empty.unusable.example
    empty.unusable.example EXISTS
    unusable.example     A 192.0.2.61

    # the exchanger's address lookup fails temporarily
    tempmx.example       MX 10 mx.broken.example
    halftemp.example     MX 10 mx.broken.example
    halftemp.example     MX 20 mx2.plain.example
    mx.broken.example    SERVFAIL
    servfail.example     SERVFAIL

    # CNAMEs: for the domain, and for the exchanger
    alias.example        CNAME plain.example
    mxalias.example      MX 10 cname.mxalias.example
    cname.mxalias.example CNAME mx2.plain.example

    # CNAME loops: for the domain, and for an exchanger
    loop.example         CNAME loop2.example
    loop2.example        CNAME loop.example
    mxloop.example       MX 10 loop.example
    halfloop.example     MX 10 loop.example
    halfloop.example     MX 20 mx2.plain.example

    # this host (mx.abc.example, 192.0.2.99) in other domains' lists
    backup.example       MX 10 mx.backup.example
    backup.example       MX 20 mx.abc.example
    backup.example       MX 30 mx3.backup.example
    mx.backup.example    A 192.0.2.71
    mx3.backup.example   A 192.0.2.73
    best.example         MX 10 mx.abc.example
    best.example         MX 20 mx.backup.example
    peer.example         MX 10 mx.abc.example
    peer.example         MX 10 mx.backup.example
    byaddr.example       MX 10 mx.backup.example
    byaddr.example       MX 20 other-name.abc.example
    byaddr.example       MX 30 mx3.backup.example
    selfaddr.example     MX 10 other-name.abc.example
    selfaddr.example     MX 20 mx.backup.example
    selfimplicit.example A 192.0.2.99
    nat64self.example    MX 10 nat64.abc.example
    nat64self.example    MX 20 mx.backup.example
    nat64.abc.example    AAAA 64:ff9b::c000:263
    mx.abc.example       A 192.0.2.99
    other-name.abc.example A 192.0.2.99

    # this host a backup, the better exchangers without an address just now
    waitname.example     MX 10 ghost.waitname.example
    waitname.example     MX 15 empty.unusable.example
    waitname.example     MX 20 mx.abc.example
    waitname.example     MX 30 mx3.backup.example
    waitaddr.example     MX 10 ghost.waitaddr.example
    waitaddr.example     MX 20 other-name.abc.example
    waitaddr.example     MX 30 mx3.backup.example

    # one address under two names
    twice.example        MX 10 one.twice.example
    twice.example        MX 20 two.twice.example
    one.twice.example    A 192.0.2.81
    two.twice.example    A 192.0.2.81
    two.twice.example    A 192.0.2.82

    # a repeated address does not use up an attempt
    repeat.example       MX 10 one.twice.example
    repeat.example       MX 20 alias.repeat.example
    repeat.example       MX 30 two.twice.example
    alias.repeat.example CNAME one.twice.example

    # many addresses
    wide.example         MX 10 mx.wide.example
    wide.example         MX 20 mx2.plain.example
    mx.wide.example      A 192.0.2.1
    mx.wide.example      A 192.0.2.2
    mx.wide.example      A 192.0.2.3
    mx.wide.example      A 192.0.2.4
    """
)

LOCAL_NAMES = ["mx.abc.example"]
LOCAL_ADDRESSES = ["192.0.2.99"]

Outcome = list[tuple[str, str]] | RejectReason

# (domain, expected attempts as (host, address) in order, or the reason)
RFC_CASES: list[tuple[str, Outcome]] = [
    (
        "plain.example",
        [
            ("mx1.plain.example", "2001:db8::11"),
            ("mx1.plain.example", "192.0.2.11"),
            ("mx2.plain.example", "192.0.2.12"),
        ],
    ),
    (
        "implicit.example",
        [("implicit.example", "2001:db8::31"), ("implicit.example", "192.0.2.31")],
    ),
    (
        "IMPLICIT.Example",
        [("implicit.example", "2001:db8::31"), ("implicit.example", "192.0.2.31")],
    ),
    ("bare.example", RejectReason.NO_ROUTE),
    ("nullmx.example", RejectReason.NULL_MX),
    ("halfnull.example", [("mx.halfnull.example", "192.0.2.42")]),
    ("nxdomain.example", RejectReason.NO_SUCH_DOMAIN),
    ("servfail.example", RejectReason.DNS_TEMPORARY),
    ("skip.example", [("mx.skip.example", "192.0.2.51")]),
    ("unusable.example", RejectReason.NO_ROUTE),
    ("tempmx.example", RejectReason.DNS_TEMPORARY),
    ("halftemp.example", [("mx2.plain.example", "192.0.2.12")]),
    (
        "alias.example",
        [
            ("mx1.plain.example", "2001:db8::11"),
            ("mx1.plain.example", "192.0.2.11"),
            ("mx2.plain.example", "192.0.2.12"),
        ],
    ),
    ("mxalias.example", [("cname.mxalias.example", "192.0.2.12")]),
    # A loop is permanent: asking again walks the same chain (Postfix: "Name server
    # loop", not found). The domain's cannot route (5.4.4); an exchanger's is skipped.
    ("loop.example", RejectReason.CNAME_LOOP),
    ("mxloop.example", RejectReason.NO_ROUTE),
    ("halfloop.example", [("mx2.plain.example", "192.0.2.12")]),
    ("backup.example", [("mx.backup.example", "192.0.2.71")]),
    ("best.example", RejectReason.ROUTING_LOOP),
    ("peer.example", RejectReason.ROUTING_LOOP),
    ("byaddr.example", [("mx.backup.example", "192.0.2.71")]),
    ("selfaddr.example", RejectReason.ROUTING_LOOP),
    ("selfimplicit.example", RejectReason.ROUTING_LOOP),
    # A backup holds the mail while the better exchangers have no address (RFC 5321
    # §5.1 leaves them in the list; Postfix's "unable to find primary relay").
    ("waitname.example", RejectReason.NO_PRIMARY),
    ("waitaddr.example", RejectReason.NO_PRIMARY),
    ("twice.example", [("one.twice.example", "192.0.2.81"), ("two.twice.example", "192.0.2.82")]),
    ("[192.0.2.5]", [("[192.0.2.5]", "192.0.2.5")]),
    ("[IPv6:2001:db8::5]", [("[IPv6:2001:db8::5]", "2001:db8::5")]),
    ("[192.0.2.99]", RejectReason.ROUTING_LOOP),
    # This host through a NAT64 gateway (RFC 6052): itself, as ::ffff:192.0.2.99 is.
    ("nat64self.example", RejectReason.ROUTING_LOOP),
    ("[IPv6:64:ff9b::192.0.2.99]", RejectReason.ROUTING_LOOP),
]

REPLIES = {
    RejectReason.NULL_MX: (556, "5.1.10"),
    RejectReason.NO_SUCH_DOMAIN: (550, "5.1.2"),
    RejectReason.CNAME_LOOP: (550, "5.4.4"),
    RejectReason.DNS_TEMPORARY: (451, "4.4.3"),
    RejectReason.NO_ROUTE: (550, "5.4.4"),
    RejectReason.NO_PRIMARY: (451, "4.4.4"),
    RejectReason.ROUTING_LOOP: (550, "5.4.6"),
}


def simplify(result: tuple[Attempt, ...] | Rejected) -> Outcome:
    if isinstance(result, Rejected):
        assert (result.code, result.status) == REPLIES[result.reason]
        assert result.temporary == (result.code < 500)
        return result.reason
    assert result, "an empty tuple of attempts is never returned"
    return [(a.host, str(a.address)) for a in result]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize(("domain", "expected"), RFC_CASES)
def test_rfc_cases(library: str, domain: str, expected: Outcome) -> None:
    result = run(
        library,
        lambda: resolve_exchangers(
            domain,
            ZONE,
            rng=random.Random(0),
            local_names=LOCAL_NAMES,
            local_addresses=LOCAL_ADDRESSES,
        ),
    )
    assert simplify(result) == expected


@pytest.mark.parametrize("library", LIBRARIES)
def test_equal_preferences_are_both_tried_in_random_order(library: str) -> None:
    seen = set()
    for seed in range(16):
        result = run(
            library, partial(resolve_exchangers, "equal.example", ZONE, rng=random.Random(seed))
        )
        assert isinstance(result, tuple)
        assert {a.host for a in result} == {"a.equal.example", "b.equal.example"}
        seen.add(result[0].host)
    assert seen == {"a.equal.example", "b.equal.example"}


@pytest.mark.parametrize(("limit", "count"), [(1, 1), (2, 2), (4, 4), (5, 5), (10, 5)])
def test_attempts_are_capped(limit: int, count: int) -> None:
    result = run(
        "asyncio",
        lambda: resolve_exchangers("wide.example", ZONE, rng=random.Random(0), max_attempts=limit),
    )
    assert isinstance(result, tuple)
    assert len(result) == count
    assert [a.preference for a in result] == sorted(a.preference for a in result)


def test_repeated_addresses_do_not_count_against_the_cap() -> None:
    result = run(
        "asyncio",
        lambda: resolve_exchangers("repeat.example", ZONE, rng=random.Random(0), max_attempts=2),
    )
    assert isinstance(result, tuple)
    assert [(a.host, str(a.address)) for a in result] == [
        ("one.twice.example", "192.0.2.81"),
        ("two.twice.example", "192.0.2.82"),
    ]


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        run(
            "asyncio",
            lambda: resolve_exchangers(
                "plain.example", ZONE, rng=random.Random(0), max_attempts=0
            ),
        )


def test_port_and_preference_are_carried() -> None:
    result = run(
        "trio", lambda: resolve_exchangers("plain.example", ZONE, rng=random.Random(0), port=2525)
    )
    assert isinstance(result, tuple)
    assert {a.port for a in result} == {2525}
    assert [a.preference for a in result] == [10, 10, 20]


def test_ipv4_preference() -> None:
    result = run(
        "asyncio",
        lambda: resolve_exchangers(
            "implicit.example", ZONE, rng=random.Random(0), address_preference="ipv4"
        ),
    )
    assert isinstance(result, tuple)
    assert [a.address.version for a in result] == [4, 6]


def test_failed_exchanger_is_tried_last_in_its_level() -> None:
    failures = FailedExchangers(lambda: 0.0)
    failures.mark_bad("a.equal.example")
    for seed in range(8):
        result = run(
            "asyncio",
            partial(
                resolve_exchangers,
                "equal.example",
                ZONE,
                rng=random.Random(seed),
                failures=failures,
            ),
        )
        assert isinstance(result, tuple)
        assert [a.host for a in result] == ["b.equal.example", "a.equal.example"]


class Recording:
    """Counts the address lookups a resolution makes."""

    def __init__(self, inner: StaticResolver) -> None:
        self.inner = inner
        self.asked: list[str] = []

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        return await self.inner.mx(domain)

    async def addresses(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        self.asked.append(host)
        return await self.inner.addresses(host)


def test_lookups_stop_once_enough_addresses_are_found() -> None:
    recording = Recording(ZONE)
    assert isinstance(recording, Resolver)
    result = run(
        "asyncio",
        lambda: resolve_exchangers(
            "wide.example", recording, rng=random.Random(0), max_attempts=2
        ),
    )
    assert isinstance(result, tuple)
    assert recording.asked == ["mx.wide.example"]


def test_excluded_addresses_are_left_out_before_the_cut() -> None:
    """``exclude`` (a caller's internal-address rule) drops addresses before the list
    is cut to ``max_attempts``: the best level's excluded addresses take no place of
    the next level's; with every address excluded, no route (550 5.4.4)."""
    zone = StaticResolver.from_zone_text(
        "pqr.example MX 10 lan.pqr.example\n"
        + "".join(f"lan.pqr.example A 10.0.0.{n}\n" for n in range(1, 4))
        + "pqr.example MX 20 mx.pqr.example\nmx.pqr.example A 192.0.2.70\n"
    )
    seen: list[str] = []

    def private(attempt: Attempt) -> bool:
        seen.append(str(attempt.address))
        return attempt.address in ip_network("10.0.0.0/8")

    for library in LIBRARIES:
        result = run(
            library,
            lambda: resolve_exchangers(
                "pqr.example", zone, rng=random.Random(0), max_attempts=2, exclude=private
            ),
        )
        assert isinstance(result, tuple)
        assert [(a.host, str(a.address)) for a in result] == [("mx.pqr.example", "192.0.2.70")]
    assert sorted(set(seen)) == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "192.0.2.70"]
    literal = run(
        "asyncio",
        lambda: resolve_exchangers("[10.0.0.1]", zone, rng=random.Random(0), exclude=private),
    )
    assert isinstance(literal, Rejected) and literal.reason is RejectReason.NO_ROUTE
    router = Router(["abc.example"], smart_host=("lan.pqr.example", 25))
    smart = run(
        "asyncio",
        lambda: router.resolve(
            remote("pqr.example", router.smart_host), zone, rng=random.Random(0), exclude=private
        ),
    )
    assert isinstance(smart, Rejected) and smart.temporary


class Flaky:
    async def mx(self, domain: str) -> Sequence[MXRecord]:
        raise TemporaryDNSError(domain, "timed out")

    async def addresses(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        raise AssertionError("not reached")


def test_a_custom_resolver_fits_the_protocol() -> None:
    result = run("trio", lambda: resolve_exchangers("x.example", Flaky(), rng=random.Random(0)))
    assert isinstance(result, Rejected)
    assert result.temporary


class Generating:
    """Answers as generators: every record is read, though ``Sequence`` was asked for."""

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        records = (MXRecord(10, f"mx{i}.gen.example") for i in range(3))
        return records  # type: ignore[return-value]  # the contract broken on purpose

    async def addresses(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        number = int(host[2])  # mxN.gen.example
        found = iter([ip_address(f"2001:db8::{number}"), ip_address(f"192.0.2.{number}")])
        return found  # type: ignore[return-value]  # the contract broken on purpose


@pytest.mark.parametrize("library", LIBRARIES)
def test_answers_that_are_generators_are_read_once(library: str) -> None:
    """``all()`` over the MX records took the first from a generator, and ``any()`` over
    a host's addresses took them all before they were listed: the mail bounced, as for
    a domain with no usable exchanger (550 5.4.4)."""
    result = run(
        library, lambda: resolve_exchangers("gen.example", Generating(), rng=random.Random(0))
    )
    assert isinstance(result, tuple)
    assert len(result) == 5  # max_attempts: every address of two hosts, one of the third
    assert {a.host for a in result} == {"mx0.gen.example", "mx1.gen.example", "mx2.gen.example"}
    assert sum(a.address.version == 4 for a in result) == 2


# --- Router.resolve: MX lookup or smart host --------------------------------


def remote(domain: str, smart_host: tuple[str, int] | None = None) -> RemoteDelivery:
    return RemoteDelivery(parse_mailbox(f"user@{domain}"), domain, smart_host)


def test_router_resolve_uses_its_own_names_and_port() -> None:
    router = Router(["abc.example"], hostnames=LOCAL_NAMES, port=2525, max_attempts=1)
    result = run(
        "asyncio", lambda: router.resolve(remote("backup.example"), ZONE, rng=random.Random(0))
    )
    assert isinstance(result, tuple)
    assert [(a.host, a.port) for a in result] == [("mx.backup.example", 2525)]
    result = run(
        "trio", lambda: router.resolve(remote("best.example"), ZONE, rng=random.Random(0))
    )
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.ROUTING_LOOP


BACKUP_ZONE = StaticResolver.from_zone_text(
    """
    held.example            MX 10 primary.held.example
    held.example            MX 20 mx.abc.example
    primary.held.example    EXISTS                  ; its A record is missing just now
    renumbered.example      MX 10 gone.renumbered.example   ; NXDOMAIN: a zone edit
    renumbered.example      MX 20 mx.abc.example
    mx.abc.example          A 192.0.2.99
    """
)


@pytest.mark.parametrize("domain", ["held.example", "renumbered.example"])
@pytest.mark.parametrize("by_name", [True, False], ids=["by-name", "by-address"])
def test_a_backup_holds_the_mail_while_the_primary_has_no_address(
    domain: str, by_name: bool
) -> None:
    """This host is MX 20 of a domain it relays for (``relay_domains``, "domains this
    host is a backup MX for"); the MX 10 has no address right now. That bounced at once
    (550 5.4.4), when holding the mail is a backup's whole job: it waits (451 4.4.4)."""
    router = Router(
        ["abc.example"],
        hostnames=LOCAL_NAMES if by_name else (),
        local_addresses=() if by_name else LOCAL_ADDRESSES,
        relay_domains=[domain],
        trusted_networks=(),
    )
    decision = router.route(parse_mailbox(f"u@{domain}"), client_address="198.51.100.7")
    assert isinstance(decision, RemoteDelivery)
    for library in LIBRARIES:
        result = run(library, lambda: router.resolve(decision, BACKUP_ZONE, rng=random.Random(0)))
        assert isinstance(result, Rejected)
        assert result.reason is RejectReason.NO_PRIMARY
        assert (result.code, result.status) == (451, "4.4.4")
        assert result.temporary
        assert result.text.startswith(f"unable to find primary relay for {domain}")


def test_a_backup_whose_primary_is_only_internal_still_bounces() -> None:
    """Only the unusable-now case waits: a primary whose addresses ``exclude`` leaves out
    (the reference server's internal networks) will not become usable by waiting, so
    the outcome stays no route (550 5.4.4), which the server words for that case."""
    zone = StaticResolver.from_zone_text(
        "pqr.example MX 10 lan.pqr.example\nlan.pqr.example A 10.0.0.1\n"
        "pqr.example MX 20 mx.abc.example\nmx.abc.example A 192.0.2.99\n"
    )
    result = run(
        "asyncio",
        lambda: resolve_exchangers(
            "pqr.example",
            zone,
            rng=random.Random(0),
            local_names=LOCAL_NAMES,
            exclude=lambda attempt: attempt.address in ip_network("10.0.0.0/8"),
        ),
    )
    assert isinstance(result, Rejected) and result.reason is RejectReason.NO_ROUTE


@pytest.mark.parametrize("by_name", [True, False], ids=["by-name", "by-address"])
def test_a_backup_waits_while_one_better_exchanger_has_no_address(by_name: bool) -> None:
    """MX 5 is NXDOMAIN just now, MX 10 resolves only to an internal address, this host
    is MX 20: that bounced, 550 5.4.4, which the server words "the exchangers resolve
    only to internal addresses", untrue of MX 5, whose zone may be mended tomorrow.
    Only when every more preferred exchanger resolved, and all to excluded addresses,
    is there nothing to wait for; here the mail waits (451 4.4.4)."""
    zone = StaticResolver.from_zone_text(
        "pqr.example MX 5 gone.pqr.example\n"
        "pqr.example MX 10 lan.pqr.example\nlan.pqr.example A 10.0.0.1\n"
        "pqr.example MX 20 mx.abc.example\nmx.abc.example A 192.0.2.99\n"
    )
    result = run(
        "asyncio",
        lambda: resolve_exchangers(
            "pqr.example",
            zone,
            rng=random.Random(0),
            local_names=LOCAL_NAMES if by_name else (),
            local_addresses=() if by_name else LOCAL_ADDRESSES,
            exclude=lambda attempt: attempt.address in ip_network("10.0.0.0/8"),
        ),
    )
    assert isinstance(result, Rejected) and result.reason is RejectReason.NO_PRIMARY
    assert (result.code, result.status) == (451, "4.4.4")


def test_the_wait_names_the_better_exchangers_without_an_address_and_why() -> None:
    """The 451 4.4.4 said only that no better exchanger had an address, and so did the
    bounce five days later: it names them now, and why (NXDOMAIN, no AAAA or A record,
    a CNAME loop), so that the operator or the sender can mend the zone."""
    zone = StaticResolver.from_zone_text(
        """
        pqr.example MX 5 gone.pqr.example
        pqr.example MX 6 empty.pqr.example
        pqr.example MX 7 loop.pqr.example
        pqr.example MX 20 mx.abc.example
        empty.pqr.example EXISTS
        loop.pqr.example CNAME loop.pqr.example
        """
    )
    result = run(
        "asyncio",
        lambda: resolve_exchangers(
            "pqr.example", zone, rng=random.Random(0), local_names=LOCAL_NAMES
        ),
    )
    assert isinstance(result, Rejected) and result.reason is RejectReason.NO_PRIMARY
    assert result.text == (
        "unable to find primary relay for pqr.example: no address for"
        " gone.pqr.example (NXDOMAIN), empty.pqr.example (no AAAA or A record),"
        " loop.pqr.example (CNAME loop)"
    )


@pytest.mark.parametrize(
    ("label", "domain_label", "expected_named"),
    [(1, 3, 3), (59, 3, 1), (59, 63, 0)],
    ids=["short-names", "long-names", "long-names-and-domain"],
)
def test_the_wait_names_a_few_exchangers_and_counts_the_rest(
    label: int, domain_label: int, expected_named: int
) -> None:
    """Many better exchangers, or long names: the text names at most three, counts the
    rest, and stays short enough for a reply line (RFC 5321 §4.5.3.1.5)."""
    names = [
        ".".join([f"mx{n:02}" + "x" * label, "y" * label, "z" * label, "example"])
        for n in range(40)
    ]
    domain = ".".join(["d" * domain_label, "e" * domain_label, "f" * domain_label, "example"])
    zone = StaticResolver.from_zone_text(
        "".join(f"{domain} MX {n} {name}\n" for n, name in enumerate(names))
        + f"{domain} MX 50 mx.abc.example\n"
    )
    result = run(
        "asyncio",
        lambda: resolve_exchangers(domain, zone, rng=random.Random(0), local_names=LOCAL_NAMES),
    )
    assert isinstance(result, Rejected) and result.reason is RejectReason.NO_PRIMARY
    assert len(result.text) <= 400
    named = [name for name in names if name in result.text]
    assert named == names[:expected_named]
    if named:
        assert result.text.endswith(f", and {40 - len(named)} more")
    else:
        assert result.text.endswith(": no address for 40 more preferred exchangers")
    assert len(f"{result.code} {result.status} {result.text}\r\n") <= 512


@pytest.mark.parametrize(
    ("smart_host", "expected"),
    [
        (("mx2.plain.example", 587), [("mx2.plain.example", "192.0.2.12", 587)]),
        (
            ("MX1.plain.example.", 25),
            [("mx1.plain.example", "2001:db8::11", 25), ("mx1.plain.example", "192.0.2.11", 25)],
        ),
        (("[mx2.plain.example]", 25), [("mx2.plain.example", "192.0.2.12", 25)]),
        (("192.0.2.200", 2525), [("192.0.2.200", "192.0.2.200", 2525)]),
        (("[192.0.2.200]", 2525), [("192.0.2.200", "192.0.2.200", 2525)]),
        (("[2001:db8::200]", 25), [("2001:db8::200", "2001:db8::200", 25)]),
        (("[IPv6:2001:DB8::200]", 25), [("2001:db8::200", "2001:db8::200", 25)]),
        (("2001:db8::200", 25), [("2001:db8::200", "2001:db8::200", 25)]),
    ],
)
def test_smart_host(smart_host: tuple[str, int], expected: list[tuple[str, str, int]]) -> None:
    router = Router(["abc.example"], smart_host=smart_host)
    delivery = router.route(parse_mailbox("user@nullmx.example"), authenticated=True)
    assert isinstance(delivery, RemoteDelivery)
    assert delivery.smart_host is not None
    result = run("asyncio", lambda: router.resolve(delivery, ZONE, rng=random.Random(0)))
    assert isinstance(result, tuple)
    assert [(a.host, str(a.address), a.port) for a in result] == expected


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("[mx2.plain.example]", [("mx2.plain.example", "192.0.2.12")]),
        ("[MX2.Plain.Example.]", [("mx2.plain.example", "192.0.2.12")]),
        ("mx2.plain.example", [("mx2.plain.example", "192.0.2.12")]),
        ("[192.0.2.200]", [("192.0.2.200", "192.0.2.200")]),
        ("[IPv6:2001:DB8::200]", [("2001:db8::200", "2001:db8::200")]),
        ("2001:db8::200", [("2001:db8::200", "2001:db8::200")]),
    ],
)
def test_resolve_host_takes_postfix_brackets(
    library: str, host: str, expected: list[tuple[str, str]]
) -> None:
    """``resolve_host`` is Postfix's ``relayhost = [host]:port``, so it takes the
    brackets as ``Router(smart_host=...)`` does (one shared reading): a bracketed name
    raised ``AddressError``, though ``[192.0.2.1]`` was taken."""
    result = run(library, lambda: resolve_host(host, 2525, ZONE, rng=random.Random(0)))
    assert simplify(result) == expected
    assert isinstance(result, tuple) and {a.port for a in result} == {2525}


@pytest.mark.parametrize(
    ("host", "reason", "status"),
    [
        ("nxdomain.example", RejectReason.SMART_HOST_FAILURE, "4.3.5"),
        ("[nxdomain.example]", RejectReason.SMART_HOST_FAILURE, "4.3.5"),
        ("bare.example", RejectReason.SMART_HOST_FAILURE, "4.3.5"),
        ("servfail.example", RejectReason.DNS_TEMPORARY, "4.4.3"),
        # A looping name is the configuration's fault, as a missing one is.
        ("loop.example", RejectReason.SMART_HOST_FAILURE, "4.3.5"),
    ],
)
def test_smart_host_failures_are_temporary(host: str, reason: RejectReason, status: str) -> None:
    """A broken smart host is this host's fault: the mail waits (Postfix's 4.3.5)."""
    result = run("trio", lambda: resolve_host(host, 25, ZONE, rng=random.Random(0)))
    assert isinstance(result, Rejected)
    assert (result.reason, result.code, result.status) == (reason, 451, status)


# --- Rejected and Attempt ------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "text"),
    [
        (250, "2.0.0", "ok"),
        (550, "4.1.1", "class mismatch"),
        (451, "4.4", "short status"),
        (550, "5.01.1", "leading zero"),
        (550, "5.1.1", "two\r\nlines"),
        (550, "5.1.1", "tab\tinside"),
    ],
)
def test_rejected_is_validated(code: int, status: str, text: str) -> None:
    with pytest.raises(ValueError):
        Rejected(code, status, text, RejectReason.NO_ROUTE)


def test_attempt_port_is_validated() -> None:
    with pytest.raises(ValueError):
        Attempt("mx.example", ip_address("192.0.2.1"), 0)


def test_local_literals_are_local_but_cut_no_mx_list() -> None:
    """A host whose own address serves another server on the relay's port (several
    servers on one address, each on its own port) takes mail to its address literal
    (RFC 1123 §5.2.17) without taking an exchanger at that address for itself (RFC 5321
    §5.1): ``local_literals`` are the first, ``local_addresses`` both."""
    literal = parse_mailbox("user@[192.0.2.99]")
    sharing = Router(["abc.example"], local_literals=LOCAL_ADDRESSES, max_attempts=1)
    assert sharing.is_local_domain("[192.0.2.99]")
    assert isinstance(sharing.route(literal), LocalDelivery)
    result = run(
        "asyncio", lambda: sharing.resolve(remote("selfaddr.example"), ZONE, rng=random.Random(0))
    )
    assert isinstance(result, tuple)
    assert [(a.host, str(a.address)) for a in result] == [("other-name.abc.example", "192.0.2.99")]

    owning = Router(["abc.example"], local_addresses=LOCAL_ADDRESSES, max_attempts=1)
    assert isinstance(owning.route(literal), LocalDelivery)
    result = run(
        "asyncio", lambda: owning.resolve(remote("selfaddr.example"), ZONE, rng=random.Random(0))
    )
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.ROUTING_LOOP


# --- one wide preference level with lame exchangers --------------------------

LAME_LOOKUP_SECONDS = 10.8  # AAAA then A, each to a 5.4 s resolver lifetime


class InOrder:
    """A random source that shuffles nothing: the records keep the order given."""

    def randrange(self, stop: int, /) -> int:
        return stop - 1


def resolve_in_order(
    library: str, domain: str, zone: Resolver, *, local_names: Sequence[str] = ()
) -> tuple[Attempt, ...] | Rejected:
    """``resolve_exchangers`` for ``domain`` on ``library``, the records in the order
    given, this host known by ``LOCAL_ADDRESSES`` (and ``local_names``)."""
    return run(
        library,
        lambda: resolve_exchangers(
            domain,
            zone,
            rng=InOrder(),
            local_names=local_names,
            local_addresses=LOCAL_ADDRESSES,
        ),
    )


class LameLevel:
    """``slow.example``: one level (MX 10) of five good exchangers listed first, then
    ``lame`` exchangers whose lookups each cost ``LAME_LOOKUP_SECONDS`` of a fake clock
    and fail temporarily, as lame delegations do; ``own`` names one more, listed last,
    whose address is this host's."""

    def __init__(self, lame: int, *, own: bool = False) -> None:
        names = [f"g{n}.slow.example" for n in range(1, 6)]
        names += [f"lame{n}.slow.example" for n in range(1, lame + 1)]
        names += ["self.slow.example"] if own else []
        self.records = [MXRecord(10, name) for name in names]
        self.asked: list[str] = []
        self.clock = 0.0

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        return self.records

    async def addresses(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        self.asked.append(host)
        if host.startswith("lame"):
            self.clock += LAME_LOOKUP_SECONDS
            raise TemporaryDNSError(host, "timed out")
        if host.startswith("self"):
            return [ip_address(LOCAL_ADDRESSES[0])]
        return [ip_address(f"192.0.2.{host[1]}")]


GOOD_HOSTS = [f"g{n}.slow.example" for n in range(1, 6)]


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_full_cap_stops_the_lookups_within_a_level(library: str) -> None:
    """With five usable addresses found and no address of this host to look for,
    nothing more at the same level can change what is tried: 13 lame exchangers behind
    them were looked up one by one (140 s, past the server's 120 s resolve deadline,
    which turned the round into 451 4.4.3 every time)."""
    zone = LameLevel(13)
    result = run(library, lambda: resolve_exchangers("slow.example", zone, rng=InOrder()))
    assert isinstance(result, tuple)
    assert [a.host for a in result] == GOOD_HOSTS
    assert zone.asked == GOOD_HOSTS
    assert zone.clock == 0.0


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("lame", [13, 60])
@pytest.mark.parametrize("limit", [None, 8])
def test_the_failed_lookups_are_capped_and_the_usable_exchangers_tried(
    library: str, lame: int, limit: int | None
) -> None:
    """Where this host's addresses are known, the level is completed to find it there
    (RFC 5321 §5.1), but lookups that fail stop at ``max_failed_lookups``: a 60-host
    level cost 60 lookups, ten minutes of lame ones. The names left unlooked have no
    address known, and are not this host's names, so they are taken to be other hosts,
    as Postfix's smtp_find_self takes a name without an address: the five usable
    exchangers are tried. Cutting their level instead, since this host might be
    unlooked, deferred the audit's domain (13 lame) with 451 every round, for ever."""
    zone = LameLevel(lame)
    make = partial(
        resolve_exchangers,
        "slow.example",
        zone,
        rng=InOrder(),
        local_names=LOCAL_NAMES,
        local_addresses=LOCAL_ADDRESSES,
    )
    if limit is not None:
        make = partial(make, max_failed_lookups=limit)
    result = run(library, make)
    failed = 10 if limit is None else limit
    assert zone.asked == GOOD_HOSTS + [f"lame{n}.slow.example" for n in range(1, failed + 1)]
    assert zone.clock < RESOLVE_TIMEOUT  # the server's deadline for the whole lookup
    assert isinstance(result, tuple)
    assert [a.host for a in result] == GOOD_HOSTS


def test_the_audit_domain_is_delivered_by_the_relays_router() -> None:
    """The audit case through a ``Router`` set up as the reference relay's is (its host
    name and its addresses): the five usable exchangers, not 451 on every retry."""
    router = Router(["abc.example"], hostnames=LOCAL_NAMES, local_addresses=LOCAL_ADDRESSES)
    zone = LameLevel(13)
    result = run("trio", lambda: router.resolve(remote("slow.example"), zone, rng=InOrder()))
    assert isinstance(result, tuple)
    assert [a.host for a in result] == GOOD_HOSTS
    assert len(zone.asked) == 5 + router.max_failed_lookups


@pytest.mark.parametrize("library", LIBRARIES)
def test_this_host_is_still_found_at_the_level_that_filled_the_cap(library: str) -> None:
    """The reason a level is completed once the cap is full: this host, known by its
    address only, listed at that level after the usable ones, must cut the level (RFC
    5321 §5.1: only exchangers more preferred than this host are tried)."""
    zone = LameLevel(2, own=True)
    result = resolve_in_order(library, "slow.example", zone)
    assert isinstance(result, Rejected) and result.reason is RejectReason.ROUTING_LOOP
    assert zone.asked[-1] == "self.slow.example"


def test_exchangers_left_unlooked_make_an_empty_outcome_temporary() -> None:
    """Two exchangers whose lookups fail use up ``max_failed_lookups=2``; the third,
    which has an address, was never asked about: no route is not known, so the mail
    waits (451 4.4.3) rather than bounce (550 5.4.4)."""
    zone = StaticResolver.from_zone_text(
        "cut.example MX 10 ghost1.cut.example\n"
        "cut.example MX 20 ghost2.cut.example\n"
        "cut.example MX 30 mx.skip.example\n"
        "ghost1.cut.example SERVFAIL\nghost2.cut.example SERVFAIL\n"
        "mx.skip.example A 192.0.2.51\n"
    )
    result = run(
        "asyncio",
        lambda: resolve_exchangers(
            "cut.example", zone, rng=random.Random(0), max_failed_lookups=2
        ),
    )
    assert isinstance(result, Rejected) and result.reason is RejectReason.LOOKUP_LIMIT
    result = run(
        "trio",
        lambda: resolve_exchangers(
            "cut.example", zone, rng=random.Random(0), max_failed_lookups=3
        ),
    )
    assert simplify(result) == [("mx.skip.example", "192.0.2.51")]


def test_max_failed_lookups_must_be_positive() -> None:
    with pytest.raises(ValueError):
        run(
            "asyncio",
            lambda: resolve_exchangers(
                "plain.example", ZONE, rng=random.Random(0), max_failed_lookups=0
            ),
        )
    with pytest.raises(ValueError):
        Router(["abc.example"], max_failed_lookups=0)


class Scripted:
    """``d.example``'s ``records``, and each exchanger's answer: its addresses, or an
    exception to raise (``NXDomain`` or ``TemporaryDNSError``). Records every name
    asked about."""

    def __init__(self, records: Sequence[MXRecord], answers: dict[str, list[str] | str]) -> None:
        self.records = list(records)
        self.answers = answers
        self.asked: list[str] = []

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        return self.records

    async def addresses(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        self.asked.append(host)
        answer = self.answers[host]
        if answer == "nxdomain":
            raise NXDomain(host)
        if isinstance(answer, str):
            raise TemporaryDNSError(host, "timed out")
        return [ip_address(a) for a in answer]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("local", [[], LOCAL_ADDRESSES], ids=["", "local_addresses"])
@pytest.mark.parametrize("answer", ["nxdomain", []], ids=["NXDOMAIN", "no address"])
def test_exchangers_without_an_address_do_not_use_up_the_limit(
    library: str, local: list[str], answer: str | list[str]
) -> None:
    """Only a lookup that fails costs the resolver's timeout, and only those count. Ten
    exchangers without an address (an NXDOMAIN or an empty answer comes at once) used
    up a limit of ten names, and the two behind them with addresses were never asked:
    the mail waited with a "temporary DNS failure" that never happened, every round
    until it bounced."""
    records = [MXRecord(10 * n, f"mx{n}.d.example") for n in range(1, 13)]
    answers: dict[str, list[str] | str] = {f"mx{n}.d.example": answer for n in range(1, 11)}
    answers |= {"mx11.d.example": ["192.0.2.11"], "mx12.d.example": ["192.0.2.12"]}
    zone = Scripted(records, answers)
    result = run(
        library,
        lambda: resolve_exchangers("d.example", zone, rng=InOrder(), local_addresses=local),
    )
    assert simplify(result) == [("mx11.d.example", "192.0.2.11"), ("mx12.d.example", "192.0.2.12")]
    assert len(zone.asked) == 12


@pytest.mark.parametrize("library", LIBRARIES)
def test_failed_lookups_stop_at_the_limit_and_the_reply_says_so(library: str) -> None:
    """Ten exchangers whose lookups time out reach the default limit: the two behind
    them are not asked, and the reply says what happened, not that looking up the
    domain failed."""
    records = [MXRecord(10 * n, f"mx{n}.d.example") for n in range(1, 13)]
    answers: dict[str, list[str] | str] = {f"mx{n}.d.example": "timeout" for n in range(1, 11)}
    answers |= {"mx11.d.example": ["192.0.2.11"], "mx12.d.example": ["192.0.2.12"]}
    zone = Scripted(records, answers)
    result = run(library, lambda: resolve_exchangers("d.example", zone, rng=InOrder()))
    assert isinstance(result, Rejected) and result.reason is RejectReason.LOOKUP_LIMIT
    assert str(result.code) + " " + result.status + " " + result.text == (
        "451 4.4.3 lookups of 10 mail exchangers for d.example failed"
    )
    assert len(zone.asked) == 10
    zone = Scripted(records, answers)
    result = run(
        library,
        lambda: resolve_exchangers("d.example", zone, rng=InOrder(), max_failed_lookups=11),
    )
    assert simplify(result) == [("mx11.d.example", "192.0.2.11"), ("mx12.d.example", "192.0.2.12")]


SELF_LEVEL_PEERS = [f"p{n}.d.example" for n in range(1, 12)]


@pytest.mark.parametrize("library", LIBRARIES)
def test_this_host_is_found_however_many_peers_resolve_at_its_level(library: str) -> None:
    """This host, known by address only, 11th of 12 exchangers at the best level:
    every name is looked up, since none fails, and this host cuts the level (RFC 5321
    §5.1). A limit of ten names stopped before it and relayed to its peers."""
    names = [*SELF_LEVEL_PEERS[:10], "self.d.example", SELF_LEVEL_PEERS[10]]
    answers: dict[str, list[str] | str] = {p: [f"192.0.2.{n}"] for n, p in enumerate(names, 1)}
    answers["self.d.example"] = LOCAL_ADDRESSES
    zone = Scripted([MXRecord(10, name) for name in names], answers)
    result = resolve_in_order(library, "d.example", zone)
    assert isinstance(result, Rejected) and result.reason is RejectReason.ROUTING_LOOP
    assert zone.asked[-1] == "self.d.example"


def self_among_lame_peers() -> tuple[list[MXRecord], dict[str, list[str] | str]]:
    """``d.example``: at the best level (MX 10) five peers that resolve, twelve whose
    lookups time out and ``self.d.example``, whose address is this host's; then
    ``backup.d.example`` at MX 20."""
    good = [f"g{n}.d.example" for n in range(1, 6)]
    lame = [f"lame{n}.d.example" for n in range(1, 13)]
    answers: dict[str, list[str] | str] = {g: [f"192.0.2.{n}"] for n, g in enumerate(good, 1)}
    answers |= dict.fromkeys(lame, "timeout")
    answers |= {"self.d.example": LOCAL_ADDRESSES, "backup.d.example": ["192.0.2.200"]}
    records = [MXRecord(10, name) for name in [*good, *lame, "self.d.example"]]
    return [*records, MXRecord(20, "backup.d.example")], answers


@pytest.mark.parametrize("library", LIBRARIES)
def test_this_host_named_among_lame_peers_is_never_passed_over(library: str) -> None:
    """RFC 5321 §5.1: this host drops every exchanger of its own preference or worse.
    At the best level among five peers that resolve and twelve lame ones, listed under
    the relay's own host name, it is found by that name before any lookup, whatever
    the shuffle and wherever the limit of failed lookups would stop: 200 shuffles, no
    relay to a peer (a loop, 550 5.4.6)."""
    records, answers = self_among_lame_peers()
    router = Router(["abc.example"], hostnames=["self.d.example"], local_addresses=LOCAL_ADDRESSES)
    for seed in range(200):
        zone = Scripted(records, answers)
        make = partial(router.resolve, remote("d.example"), zone, rng=random.Random(seed))
        result = run(library, make)
        assert simplify(result) is RejectReason.ROUTING_LOOP, (seed, result)
        assert zone.asked == []


@pytest.mark.parametrize("library", LIBRARIES)
def test_this_host_known_by_address_only_and_left_unlooked_is_taken_for_another(
    library: str,
) -> None:
    """The price of delivering past lame exchangers, paid only where this host's name
    is not its MX target's: known by address alone, it is found when the shuffle puts
    it before the tenth failed lookup (a loop, 550 5.4.6); left unlooked, it has no
    address known and is taken for another host, as Postfix takes an exchanger without
    an address, so the peers that resolve and were looked up are tried (451 when the
    shuffle put ten lame ones before them all), and never the backup below."""
    records, answers = self_among_lame_peers()
    found = relayed = deferred = 0
    for seed in range(200):
        zone = Scripted(records, answers)
        make = partial(
            resolve_exchangers,
            "d.example",
            zone,
            rng=random.Random(seed),
            local_names=LOCAL_NAMES,
            local_addresses=LOCAL_ADDRESSES,
        )
        result = run(library, make)
        if "self.d.example" in zone.asked:
            found += 1
            assert simplify(result) is RejectReason.ROUTING_LOOP, (seed, result)
        elif isinstance(result, Rejected):
            deferred += 1
            assert result.reason is RejectReason.LOOKUP_LIMIT, (seed, result)
        else:
            relayed += 1
            assert {a.host for a in result} <= {f"g{n}.d.example" for n in range(1, 6)}
        assert "backup.d.example" not in zone.asked
    assert found and relayed and deferred


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("level", [10, 20])
def test_this_host_by_name_where_the_limit_would_stop_cuts_its_level(
    library: str, level: int
) -> None:
    """This host's name is compared without a lookup, so it cuts its level even where
    the limit of failed lookups would have left it unlooked: listed last among five
    usable peers and thirteen lame ones, it is still this host. At the best level that
    is a loop (550 5.4.6), with nothing looked up; below two usable exchangers, those
    two are tried and nothing of its level is asked about."""
    good = [f"g{n}.d.example" for n in range(1, 6)]
    lame = [f"lame{n}.d.example" for n in range(1, 14)]
    answers: dict[str, list[str] | str] = {g: [f"192.0.2.{n}"] for n, g in enumerate(good, 1)}
    answers |= dict.fromkeys(lame, "timeout")
    answers |= {"a.d.example": ["192.0.2.101"], "b.d.example": ["192.0.2.102"]}
    records = [MXRecord(5, "a.d.example"), MXRecord(5, "b.d.example")] if level == 20 else []
    records += [MXRecord(level, name) for name in [*good, *lame, "mx.abc.example"]]
    zone = Scripted(records, answers)
    result = resolve_in_order(library, "d.example", zone, local_names=LOCAL_NAMES)
    if level == 10:
        assert simplify(result) is RejectReason.ROUTING_LOOP
        assert zone.asked == []
    else:
        assert simplify(result) == [
            ("a.d.example", "192.0.2.101"),
            ("b.d.example", "192.0.2.102"),
        ]
        assert zone.asked == ["a.d.example", "b.d.example"]


@pytest.mark.parametrize("library", LIBRARIES)
def test_the_limit_keeps_the_levels_better_than_this_host_may_be(library: str) -> None:
    """This host, known by address only, is left unlooked at MX 20 behind ten lame
    names: the two usable exchangers more preferred than that level are tried."""
    lame = [f"lame{n}.d.example" for n in range(1, 13)]
    answers: dict[str, list[str] | str] = dict.fromkeys(lame, "timeout")
    answers |= {"a.d.example": ["192.0.2.1"], "b.d.example": ["192.0.2.2"]}
    answers["self.d.example"] = LOCAL_ADDRESSES
    records = [MXRecord(10, "a.d.example"), MXRecord(10, "b.d.example")]
    records += [MXRecord(20, name) for name in [*lame, "self.d.example"]]
    zone = Scripted(records, answers)
    result = resolve_in_order(library, "d.example", zone)
    assert simplify(result) == [("a.d.example", "192.0.2.1"), ("b.d.example", "192.0.2.2")]
    assert len(zone.asked) == 12
