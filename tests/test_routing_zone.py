"""StaticResolver and its zone-like text format."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from smtpcore.routing import (
    CNAME,
    CNAMELoop,
    MXRecord,
    NXDomain,
    Resolver,
    StaticResolver,
    TemporaryDNSError,
    parse_zone,
)

T = TypeVar("T")


def now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends: StaticResolver needs no event loop."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    raise AssertionError("StaticResolver suspended")


ZONE_TEXT = """
; a comment in zone-file style
# and one in shell style
pqr.example.        MX    10 mx.pqr.example   # trailing comment
pqr.example         300 IN MX 20 MX2.PQR.EXAMPLE.
mx.pqr.example      A     192.0.2.1
mx.pqr.example      AAAA  2001:db8::1
mx.pqr.example      IN A  192.0.2.2
mx2.pqr.example     A     192.0.2.3
nullmx.example      MX    0 .
alias.example       CNAME pqr.example
loop1.example       CNAME loop2.example
loop2.example       CNAME loop1.example
dangling.example    CNAME nowhere.example
empty.example       EXISTS
broken.example      SERVFAIL
bücher.example      A     192.0.2.9
"""

ZONE = StaticResolver.from_zone_text(ZONE_TEXT)


def test_is_a_resolver() -> None:
    assert isinstance(ZONE, Resolver)


def test_mx_records() -> None:
    assert now(ZONE.mx("pqr.example")) == [
        MXRecord(10, "mx.pqr.example"),
        MXRecord(20, "mx2.pqr.example"),
    ]
    assert now(ZONE.mx("PQR.Example.")) == now(ZONE.mx("pqr.example"))


def test_addresses_ipv6_then_ipv4() -> None:
    assert now(ZONE.addresses("mx.pqr.example")) == [
        ip_address("2001:db8::1"),
        ip_address("192.0.2.1"),
        ip_address("192.0.2.2"),
    ]


def test_null_mx() -> None:
    (record,) = now(ZONE.mx("nullmx.example"))
    assert record.is_null


def test_names_that_exist_without_the_type_answer_empty() -> None:
    assert now(ZONE.mx("mx.pqr.example")) == []
    assert now(ZONE.addresses("pqr.example")) == []
    assert now(ZONE.mx("empty.example")) == []
    assert now(ZONE.addresses("empty.example")) == []


def test_parent_of_a_name_exists() -> None:
    # "example" holds no records, but names below it do (RFC 8020).
    assert now(ZONE.mx("example")) == []


@pytest.mark.parametrize("name", ["nowhere.example", "x.mx.pqr.example", "dangling.example"])
def test_absent_names_are_nxdomain(name: str) -> None:
    with pytest.raises(NXDomain) as info:
        now(ZONE.mx(name))
    assert info.value.name
    with pytest.raises(NXDomain):
        now(ZONE.addresses(name))


def test_cname_is_followed() -> None:
    assert now(ZONE.mx("alias.example")) == now(ZONE.mx("pqr.example"))


def test_temporary_failures() -> None:
    with pytest.raises(TemporaryDNSError):
        now(ZONE.mx("broken.example"))
    with pytest.raises(TemporaryDNSError):
        now(ZONE.addresses("broken.example"))


def test_a_cname_loop_or_an_endless_chain_is_permanent() -> None:
    """A loop was a ``TemporaryDNSError``: retried for the queue's whole lifetime when
    every retry walks the same chain. It is a ``CNAMELoop``, as dnspython's resolver
    says, and so is a chain longer than the resolver follows."""
    long_chain = StaticResolver(
        {f"c{n}.example": [CNAME(f"c{n + 1}.example")] for n in range(20)}
        | {"c20.example": [IPv4Address("192.0.2.20")]}
    )
    for resolver, name in [(ZONE, "loop1.example"), (long_chain, "c0.example")]:
        with pytest.raises(CNAMELoop) as info:
            now(resolver.mx(name))
        assert not isinstance(info.value, TemporaryDNSError)
        with pytest.raises(CNAMELoop):
            now(resolver.addresses(name))
    assert now(long_chain.addresses("c15.example")) == [ip_address("192.0.2.20")]


def cname_chain(cnames: int) -> StaticResolver:
    """``c0.example`` is a chain of ``cnames`` CNAMEs, the last name holding an A."""
    records: dict[str, list[CNAME | IPv4Address]] = {
        f"c{n}.example": [CNAME(f"c{n + 1}.example")] for n in range(cnames)
    }
    records[f"c{cnames}.example"] = [IPv4Address("192.0.2.20")]
    return StaticResolver(records)


def test_a_chain_is_followed_as_far_as_dnspython_follows_one() -> None:
    """The resolver stopped after seven CNAMEs, so a legal chain of eight was refused
    (then 550 5.4.4) where the dnspython resolver follows fifteen and refuses the
    sixteenth (``dns.message.MAX_CHAIN``): both now draw the line there."""
    assert now(cname_chain(15).addresses("c0.example")) == [ip_address("192.0.2.20")]
    with pytest.raises(CNAMELoop):
        now(cname_chain(16).addresses("c0.example"))
    with pytest.raises(CNAMELoop):
        now(cname_chain(16).mx("c0.example"))


def test_a_loop_is_a_not_found_to_code_written_for_two_errors() -> None:
    """The resolver contract named two errors, ``NXDomain`` and ``TemporaryDNSError``,
    and code catching just those (a sender-domain check, say) crashed on a loop once a
    third error came. ``CNAMELoop`` is an ``NXDomain``, as Postfix's "Name server loop"
    is a not-found: such code now refuses the domain for good."""

    async def sender_domain_check(domain: str) -> str:
        try:
            await ZONE.mx(domain)
        except NXDomain:
            return "550 5.1.8 sender domain does not exist"
        except TemporaryDNSError:
            return "451 4.1.8 try again"
        return "250 ok"

    assert now(sender_domain_check("loop1.example")) == "550 5.1.8 sender domain does not exist"
    assert issubclass(CNAMELoop, NXDomain)


def test_idna_names() -> None:
    assert now(ZONE.addresses("xn--bcher-kva.example")) == [ip_address("192.0.2.9")]
    assert now(ZONE.addresses("BÜCHER.example")) == [ip_address("192.0.2.9")]


def test_invalid_name_is_nxdomain() -> None:
    with pytest.raises(NXDomain):
        now(ZONE.addresses("a..b"))


def test_from_mapping() -> None:
    resolver = StaticResolver(
        {
            "abc.example": [MXRecord(10, "mx.abc.example")],
            "mx.abc.example": [IPv4Address("127.0.0.1"), IPv6Address("::1")],
            "www.abc.example": [CNAME("mx.abc.example")],
            "quiet.example": [],
        },
        failing=["down.example"],
    )
    assert now(resolver.addresses("www.abc.example")) == [
        IPv6Address("::1"),
        IPv4Address("127.0.0.1"),
    ]
    assert now(resolver.mx("quiet.example")) == []
    with pytest.raises(TemporaryDNSError):
        now(resolver.mx("down.example"))


def test_mapping_is_checked() -> None:
    with pytest.raises(ValueError):
        StaticResolver({"a.example": [CNAME("b.example"), IPv4Address("192.0.2.1")]})
    with pytest.raises(TypeError):
        StaticResolver({"a.example": ["192.0.2.1"]})  # type: ignore[list-item]  # the mistake under test


def test_from_zone_file(tmp_path: Path) -> None:
    path = tmp_path / "zone.txt"
    path.write_text(ZONE_TEXT, encoding="utf-8")
    resolver = StaticResolver.from_zone_file(path)
    assert now(resolver.mx("pqr.example")) == now(ZONE.mx("pqr.example"))
    path.write_text("\ufeff" + ZONE_TEXT, encoding="utf-8")  # a BOM: the UTF-8 signature
    resolver = StaticResolver.from_zone_file(path)
    assert now(resolver.mx("pqr.example")) == now(ZONE.mx("pqr.example"))


def test_works_under_asyncio_and_trio() -> None:
    async def lookup() -> list[MXRecord]:
        return list(await ZONE.mx("pqr.example"))

    assert asyncio.run(lookup()) == trio.run(lookup) == now(ZONE.mx("pqr.example"))


def test_parse_zone_result() -> None:
    records, failing = parse_zone("a.example EXISTS\nb.example SERVFAIL\nc.example A 192.0.2.1\n")
    assert records == {"a.example": [], "c.example": [IPv4Address("192.0.2.1")]}
    assert failing == ["b.example"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pqr.example", "missing record type"),
        ("pqr.example MX 10", "MX needs"),
        ("pqr.example MX ten mx.example", "MX needs"),
        ("pqr.example MX 70000 mx.example", "16-bit"),
        ("pqr.example A 2001:db8::1", "IPv4"),
        ("pqr.example AAAA 192.0.2.1", "IPv6"),
        ("pqr.example TXT hello", "unsupported record type TXT"),
        ("pqr.example A 192.0.2.1 192.0.2.2", "exactly one value"),
        ("pqr.example EXISTS now", "takes no data"),
        ("bad..name A 192.0.2.1", "not a domain name"),
        ("@ MX 10 mx.pqr.example", "no .ORIGIN, .TTL or @ here"),
        ("$ORIGIN pqr.example.", "no .ORIGIN, .TTL or @ here"),
        ("a.example A 192.0.2.1\na.example CNAME b.example", "CNAME cannot stand beside"),
    ],
)
def test_zone_syntax_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_zone("# first line\n" + text)
    assert str(info.value).startswith(f"line {1 + text.count(chr(10)) + 1}:")


def test_cname_beside_other_records_in_a_zone() -> None:
    with pytest.raises(ValueError, match="CNAME"):
        StaticResolver.from_zone_text("a.example CNAME b.example\na.example A 192.0.2.1\n")
