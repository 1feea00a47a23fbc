"""The dnspython resolver against a real DNS server (dnsmasq) on loopback.

The server holds a small zone with every case routing must tell apart:
plain MX, equal-preference MX, no MX, null MX (RFC 7505), CNAME'd names,
a domain that does not exist (dnsmasq answers NXDOMAIN with authority for
names under ``--local=/example/``), and one whose server never answers.
Answers dnsmasq cannot hold (an exchange whose label is NUL octets) come from
a small server of the test's own, also on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib.util import find_spec
from ipaddress import ip_address
from typing import TypeVar

import pytest
import trio

from peers import RunningProcess, free_port, missing_peer, run_process
from smtpcore.routing import (
    CNAMELoop,
    MXRecord,
    NXDomain,
    Rejected,
    RejectReason,
    Resolver,
    TemporaryDNSError,
    resolve_exchangers,
)

pytestmark = pytest.mark.interop

T = TypeVar("T")

LIBRARIES = ["asyncio", "trio"]


missing = missing_peer  # skip on a developer's machine, fail under CI


def find_program(name: str, package: str) -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=search)
    if path is None:
        missing(f"{name} is not installed (Debian package {package})")
        raise AssertionError("not reached")
    return path


ZONE = [
    "--mx-host=plain.example,mx1.plain.example,10",
    "--mx-host=plain.example,mx2.plain.example,20",
    "--host-record=mx1.plain.example,192.0.2.11,2001:db8::11",
    "--host-record=mx2.plain.example,192.0.2.12",
    "--mx-host=equal.example,a.equal.example,10",
    "--mx-host=equal.example,b.equal.example,10",
    "--host-record=a.equal.example,192.0.2.21",
    "--host-record=b.equal.example,192.0.2.22",
    "--host-record=aonly.example,192.0.2.31,2001:db8::31",
    "--mx-host=nullmx.example,.,0",
    "--host-record=nullmx.example,192.0.2.41",
    "--cname=alias.example,plain.example",
    "--mx-host=mxalias.example,cname.mxalias.example,10",
    "--cname=cname.mxalias.example,mx2.plain.example",
    "--mx-host=ghost.example,nohost.example,10",
]


@pytest.fixture(scope="module")
def dns_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if find_spec("dns") is None:
        missing("dnspython is not installed (the 'dns' extra)")
    dnsmasq = find_program("dnsmasq", "dnsmasq-base")
    workdir = tmp_path_factory.mktemp("dnsmasq")
    port = free_port()
    dead_port = free_port()
    command = [
        dnsmasq,
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        f"--port={port}",
        f"--pid-file={workdir / 'dnsmasq.pid'}",
        "--log-facility=-",
        "--log-queries",
        "--local=/example/",
        # Nothing listens on dead_port: lookups under broken.example time out.
        f"--server=/broken.example/127.0.0.1#{dead_port}",
        *ZONE,
    ]
    with run_process(command) as process:
        wait_until_answering(process, port)
        yield port


def wait_until_answering(process: RunningProcess, port: int) -> None:
    from smtpcore.routing.dnspython import DNSPythonResolver

    resolver = DNSPythonResolver("127.0.0.1", port, timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            status = process.popen.returncode
            raise RuntimeError(f"dnsmasq exited with {status}:\n{process.output()}")
        try:
            asyncio.run(resolver.addresses("mx2.plain.example"))
        except TemporaryDNSError:
            continue
        return
    raise RuntimeError(f"dnsmasq did not answer within 10 s:\n{process.output()}")


def run(library: str, make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    if library == "asyncio":
        return asyncio.run(main())
    return trio.run(main)


def resolver_for(port: int, timeout: float = 2.0) -> Resolver:
    from smtpcore.routing.dnspython import DNSPythonResolver

    resolver = DNSPythonResolver("127.0.0.1", port, timeout=timeout)
    assert isinstance(resolver, Resolver)
    return resolver


@pytest.mark.parametrize("library", LIBRARIES)
def test_plain_mx(dns_port: int, library: str) -> None:
    records = run(library, lambda: resolver_for(dns_port).mx("plain.example"))
    assert sorted(records, key=lambda r: r.preference) == [
        MXRecord(10, "mx1.plain.example"),
        MXRecord(20, "mx2.plain.example"),
    ]


@pytest.mark.parametrize("library", LIBRARIES)
def test_equal_preference_mx(dns_port: int, library: str) -> None:
    records = run(library, lambda: resolver_for(dns_port).mx("Equal.Example."))
    assert sorted(records, key=lambda r: r.exchange) == [
        MXRecord(10, "a.equal.example"),
        MXRecord(10, "b.equal.example"),
    ]


@pytest.mark.parametrize("library", LIBRARIES)
def test_no_mx_is_an_empty_list_and_both_families_are_looked_up(
    dns_port: int, library: str
) -> None:
    resolver = resolver_for(dns_port)
    assert run(library, lambda: resolver.mx("aonly.example")) == []
    assert sorted(map(str, run(library, lambda: resolver.addresses("aonly.example")))) == [
        "192.0.2.31",
        "2001:db8::31",
    ]


@pytest.mark.parametrize("library", LIBRARIES)
def test_null_mx(dns_port: int, library: str) -> None:
    assert run(library, lambda: resolver_for(dns_port).mx("nullmx.example")) == [MXRecord(0, ".")]


@pytest.mark.parametrize("library", LIBRARIES)
def test_cname_domain_and_cname_exchanger(dns_port: int, library: str) -> None:
    resolver = resolver_for(dns_port)
    assert sorted(run(library, lambda: resolver.mx("alias.example")), key=str) == sorted(
        run(library, lambda: resolver.mx("plain.example")), key=str
    )
    assert run(library, lambda: resolver.addresses("cname.mxalias.example")) == [
        ip_address("192.0.2.12")
    ]


@pytest.mark.parametrize("library", LIBRARIES)
def test_nonexistent_domain(dns_port: int, library: str) -> None:
    resolver = resolver_for(dns_port)
    with pytest.raises(NXDomain):
        run(library, lambda: resolver.mx("nope.example"))
    with pytest.raises(NXDomain):
        run(library, lambda: resolver.addresses("nope.example"))


@pytest.mark.parametrize("library", LIBRARIES)
def test_unanswered_lookup_is_temporary(dns_port: int, library: str) -> None:
    resolver = resolver_for(dns_port, timeout=0.3)
    with pytest.raises(TemporaryDNSError):
        run(library, lambda: resolver.mx("broken.example"))


# (domain, expected (host, address) attempts in order, or the reason)
END_TO_END: list[tuple[str, list[tuple[str, str]] | RejectReason]] = [
    (
        "plain.example",
        [
            ("mx1.plain.example", "2001:db8::11"),
            ("mx1.plain.example", "192.0.2.11"),
            ("mx2.plain.example", "192.0.2.12"),
        ],
    ),
    ("aonly.example", [("aonly.example", "2001:db8::31"), ("aonly.example", "192.0.2.31")]),
    ("mxalias.example", [("cname.mxalias.example", "192.0.2.12")]),
    ("nullmx.example", RejectReason.NULL_MX),
    ("nope.example", RejectReason.NO_SUCH_DOMAIN),
    ("ghost.example", RejectReason.NO_ROUTE),
]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize(("domain", "expected"), END_TO_END)
def test_resolve_exchangers_over_real_dns(
    dns_port: int,
    library: str,
    domain: str,
    expected: list[tuple[str, str]] | RejectReason,
) -> None:
    result = run(
        library,
        lambda: resolve_exchangers(domain, resolver_for(dns_port), rng=random.Random(0)),
    )
    if isinstance(expected, RejectReason):
        assert isinstance(result, Rejected)
        assert result.reason is expected
    else:
        assert isinstance(result, tuple)
        assert [(a.host, str(a.address)) for a in result] == expected


def test_several_nameservers(dns_port: int) -> None:
    from smtpcore.routing.dnspython import DNSPythonResolver

    resolver = DNSPythonResolver(["127.0.0.1", "127.0.0.1"], dns_port, timeout=2)
    assert asyncio.run(resolver.mx("aonly.example")) == []


@contextlib.contextmanager
def answering(
    answers: dict[tuple[str, str], list[str]],
    aliases: dict[str, str] | None = None,
    *,
    once: bool = False,
) -> Iterator[int]:
    """A DNS server on loopback (UDP) for what dnsmasq cannot hold: it answers each
    ``(name, type)`` with the given records in wire form, and NODATA otherwise. A name
    in ``aliases`` is a CNAME for its value, and the answer carries the chain (a loop,
    which dnsmasq refuses, once round: each alias once). With ``once``, a question is
    answered the first time only and never again: listed twice as a resolver's
    nameservers, it is one server that answers and one that stays silent. Yields its
    port; the thread stops when the block ends."""
    import dns.flags
    import dns.message
    import dns.name
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.rrset

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    stop = threading.Event()
    asked: set[tuple[str, int]] = set()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            seen = (query.question[0].name.to_text().lower(), int(query.question[0].rdtype))
            if once and seen in asked:
                continue
            asked.add(seen)
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text().lower()
            chained: set[str] = set()
            while aliases and name in aliases and name not in chained:
                chained.add(name)
                response.answer.append(
                    dns.rrset.from_text(name, 300, "IN", "CNAME", aliases[name])
                )
                name = aliases[name]
            key = (name, dns.rdatatype.to_text(question.rdtype))
            rrset = dns.rrset.RRset(dns.name.from_text(name), dns.rdataclass.IN, question.rdtype)
            for record in answers.get(key, []):
                rrset.add(dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, record), 300)
            if rrset:
                response.answer.append(rrset)
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, name="answering", daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        sock.close()


# 20 NUL octets: one 20-octet label in the DNS, but 80 characters as text (\000 each).
NUL_EXCHANGE = "\\000" * 20 + ".evil.example."


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_malformed_exchange_is_skipped(library: str) -> None:
    if find_spec("dns") is None:
        missing("dnspython is not installed (the 'dns' extra)")
    records = {("mixed.example.", "MX"): [f"10 {NUL_EXCHANGE}", "20 mx.mixed.example."]}
    with answering(records) as port:
        found = run(library, lambda: resolver_for(port).mx("mixed.example"))
    assert found == [MXRecord(20, "mx.mixed.example")]


@pytest.mark.parametrize("library", LIBRARIES)
def test_only_malformed_exchanges_are_a_temporary_error(library: str) -> None:
    """MX records, none usable: an error (RFC 5321 §5.1), not the implicit MX."""
    if find_spec("dns") is None:
        missing("dnspython is not installed (the 'dns' extra)")
    with answering({("evil.example.", "MX"): [f"10 {NUL_EXCHANGE}"]}) as port:
        with pytest.raises(TemporaryDNSError, match="malformed"):
            run(library, lambda: resolver_for(port).mx("evil.example"))
        # Routing defers the domain rather than raise past its callers.
        result = run(
            library,
            lambda: resolve_exchangers("evil.example", resolver_for(port), rng=random.Random(0)),
        )
    assert isinstance(result, Rejected) and result.reason is RejectReason.DNS_TEMPORARY


LOOP = {"loop.example.": "loop2.example.", "loop2.example.": "loop.example."}


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_cname_loop_is_permanent(library: str) -> None:
    """A server answers with a CNAME chain that loops: dnspython gives up on it
    (``ChainTooLong`` inside ``NoNameservers``), and so did we, as a temporary failure
    (451 4.4.3) on every retry, until the queue's lifetime ran out five days later. It
    is a ``CNAMELoop``: for the domain, 550 5.4.4 at once; for an exchanger, that
    exchanger is skipped, as one that does not exist is."""
    if find_spec("dns") is None:
        missing("dnspython is not installed (the 'dns' extra)")
    mx_loop = {("mxloop.example.", "MX"): ["10 loop.example."]}
    with answering(mx_loop, aliases=LOOP) as port:
        resolver = resolver_for(port)
        with pytest.raises(CNAMELoop):
            run(library, lambda: resolver.mx("loop.example"))
        with pytest.raises(CNAMELoop):
            run(library, lambda: resolver.addresses("loop.example"))
        domain = run(
            library, lambda: resolve_exchangers("loop.example", resolver, rng=random.Random(0))
        )
        exchanger = run(
            library, lambda: resolve_exchangers("mxloop.example", resolver, rng=random.Random(0))
        )
    assert isinstance(domain, Rejected) and domain.reason is RejectReason.CNAME_LOOP
    assert (domain.code, domain.status) == (550, "5.4.4")
    assert isinstance(exchanger, Rejected) and exchanger.reason is RejectReason.NO_ROUTE
    assert not exchanger.temporary


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_cname_loop_beside_a_silent_server_is_permanent(library: str) -> None:
    """One server answers with a loop, the other never answers. dnspython then ends
    the lookup with ``LifetimeTimeout``, not ``NoNameservers``, though its errors hold
    the same ``ChainTooLong``; we read only ``NoNameservers``'s, and called the loop a
    temporary failure here and a permanent one beside a server that said SERVFAIL.
    Neither failing server knows better than the one that answered: ``CNAMELoop``."""
    if find_spec("dns") is None:
        missing("dnspython is not installed (the 'dns' extra)")
    from smtpcore.routing.dnspython import DNSPythonResolver

    with answering({}, aliases=LOOP, once=True) as port:
        resolver = DNSPythonResolver(["127.0.0.1", "127.0.0.1"], port, timeout=0.5)
        with pytest.raises(CNAMELoop):
            run(library, lambda: resolver.mx("loop.example"))
        with pytest.raises(CNAMELoop):
            run(library, lambda: resolver.addresses("loop.example"))


@pytest.mark.parametrize("library", LIBRARIES)
def test_fifteen_cnames_are_followed_and_sixteen_are_a_loop(library: str) -> None:
    """dnspython follows fifteen CNAMEs and gives up on the sixteenth
    (``dns.message.MAX_CHAIN``); ``StaticResolver`` draws the line at the same place
    (tests/test_routing_zone.py), so a chain routes alike whichever resolver runs."""
    if find_spec("dns") is None:
        missing("dnspython is not installed (the 'dns' extra)")
    aliases = {f"c{n}.example.": f"c{n + 1}.example." for n in range(16)}
    answers = {(f"c{n}.example.", "A"): ["192.0.2.20"] for n in (15, 16)}
    with answering(answers, aliases=aliases) as port:
        resolver = resolver_for(port)
        found = run(library, lambda: resolver.addresses("c1.example"))
        with pytest.raises(CNAMELoop):
            run(library, lambda: resolver.addresses("c0.example"))
    assert found == [ip_address("192.0.2.20")]


def test_a_name_the_dns_cannot_hold_does_not_exist() -> None:
    """An empty label, a bad escape, a label over 63 octets: no such name (no query)."""
    if find_spec("dns") is None:
        missing("dnspython is not installed (the 'dns' extra)")
    resolver = resolver_for(9, timeout=0.5)  # the discard port: nothing is asked
    for name in ("a..example", "mx\\", "x" * 64 + ".example"):
        with pytest.raises(NXDomain):
            asyncio.run(resolver.mx(name))
        with pytest.raises(NXDomain):
            asyncio.run(resolver.addresses(name))
