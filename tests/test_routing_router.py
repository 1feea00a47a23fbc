"""The local-or-remote decision and the relay policy of ``Router``."""

from __future__ import annotations

import ast
import sys
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smtpcore.routing
from smtpcore.address import AddressError, Mailbox, normalize_domain, parse_mailbox, parse_path
from smtpcore.routing import (
    DEFAULT_TRUSTED_NETWORKS,
    LocalDelivery,
    Rejected,
    RejectReason,
    RemoteDelivery,
    Router,
)
from smtpcore.testing import strategies as sst

ROUTER = Router(
    ["abc.example", "BÜCHER.example.", "[192.0.2.7]"],
    local_addresses=["192.0.2.1", "2001:db8::1"],
    trusted_networks=["10.0.0.0/8", "2001:db8:ff::/48"],
    relay_domains=["backup.example"],
)


def recipient(path: str) -> Mailbox:
    mailbox = parse_path(path, allow_null=False, allow_postmaster=True)
    assert mailbox is not None
    return mailbox


# --- local domains -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "domain"),
    [
        ("<user@abc.example>", "abc.example"),
        ("<user@ABC.Example>", "abc.example"),
        ("<user@bücher.example>", "xn--bcher-kva.example"),
        ("<user@BÜCHER.EXAMPLE>", "xn--bcher-kva.example"),
        ("<user@xn--bcher-kva.example>", "xn--bcher-kva.example"),
        ("<user@[192.0.2.1]>", "[192.0.2.1]"),
        ("<user@[192.0.2.7]>", "[192.0.2.7]"),
        ("<user@[IPv6:2001:db8::1]>", "[IPv6:2001:db8::1]"),
        ("<user@[IPv6:2001:DB8:0:0:0:0:0:1]>", "[IPv6:2001:db8::1]"),
        ("<Postmaster>", ""),
        ("<postmaster@abc.example>", "abc.example"),
    ],
)
def test_local_recipients(path: str, domain: str) -> None:
    decision = ROUTER.route(recipient(path))
    assert isinstance(decision, LocalDelivery)
    assert decision.domain == domain
    assert decision.local_part == decision.mailbox.local_part


def test_trailing_dot_in_a_domain_is_ignored() -> None:
    assert ROUTER.is_local_domain("abc.example.")
    assert ROUTER.is_local_domain("Bücher.Example.")
    assert ROUTER.is_local_domain("[IPv6:2001:db8:0::1]")
    assert not ROUTER.is_local_domain("sub.abc.example")
    assert not ROUTER.is_local_domain("[192.0.2.2]")


def test_local_part_case_is_kept() -> None:
    decision = ROUTER.route(parse_mailbox("John.Smith@ABC.example"))
    assert isinstance(decision, LocalDelivery)
    assert decision.local_part == "John.Smith"


# --- this host's own names --------------------------------------------------------

OWN = Router(["abc.example"], hostnames=["MX.Bücher.example."], trusted_networks=())


@pytest.mark.parametrize(
    "path",
    [
        "<postmaster@mx.xn--bcher-kva.example>",
        "<POSTMASTER@MX.XN--BCHER-KVA.EXAMPLE>",
        "<PostMaster@mx.bücher.example>",
        "<postmaster@MX.BÜCHER.EXAMPLE>",
    ],
)
@pytest.mark.parametrize("authenticated", [False, True])
def test_postmaster_at_the_hosts_own_name_is_the_local_postmaster(
    path: str, authenticated: bool
) -> None:
    """RFC 5321 §4.5.1: postmaster is accepted at every name this server gives mail
    service for, and it names itself by its host name (greeting, Received, bounces).
    The router cut its own name out of MX lists but routed mail there as remote: 550
    5.7.1 to strangers, a routing loop for a submitter. Any spelling of the name counts."""
    mailbox = recipient(path)
    decision = OWN.route(mailbox, authenticated=authenticated)
    assert decision == LocalDelivery(mailbox, "")


@pytest.mark.parametrize(
    "path",
    [
        "<user@mx.bücher.example>",
        "<MAILER-DAEMON@mx.bücher.example>",
        "<postmaster%other.example@mx.bücher.example>",
        "<postmaster@sub.mx.bücher.example>",
        "<postmaster@bücher.example>",
    ],
)
def test_only_postmaster_is_local_at_the_hosts_own_name(path: str) -> None:
    """The host name is no local domain: mailboxes are keyed by their full address, and
    no other local part there has one, so those stay remote (refused without relay)."""
    decision = OWN.route(recipient(path))
    assert isinstance(decision, Rejected)
    assert decision.reason is RejectReason.RELAY_DENIED
    assert isinstance(OWN.route(recipient(path), authenticated=True), RemoteDelivery)


@settings(max_examples=100)
@given(sst.domains(utf8=True), sst.domains(utf8=True))
def test_postmaster_is_local_at_the_own_name_and_nowhere_else(hostname: str, domain: str) -> None:
    """The own-name rule opens no relay: postmaster at any other name is still refused
    to a client that may not relay, and at the own name in any case it is local."""
    router = Router(["abc.example"], hostnames=[hostname], trusted_networks=())
    own = normalize_domain(hostname)
    for name in (hostname.upper(), hostname.lower(), domain):
        try:
            mailbox = Mailbox("postmaster", name)
        except AddressError:  # too long a path, or a name no mailbox takes
            continue
        local = normalize_domain(name) == own
        decision = router.route(mailbox)
        if local:
            assert decision == LocalDelivery(mailbox, "")
        else:
            assert isinstance(decision, Rejected)
            assert decision.reason is RejectReason.RELAY_DENIED


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(AddressError):
        Router(["not a domain"])
    with pytest.raises(ValueError):
        Router(["abc.example"], trusted_networks=["10.0.0.1/8"])
    with pytest.raises(ValueError):
        Router(["abc.example"], local_addresses=["mx.abc.example"])
    with pytest.raises(ValueError):
        Router(["abc.example"], smart_host=("relay.example", 0))
    with pytest.raises(ValueError):
        Router(["abc.example"], smart_host=("[not an address]", 25))
    with pytest.raises(ValueError):
        Router(["abc.example"], max_attempts=0)


# --- relay policy -------------------------------------------------------------


@pytest.mark.parametrize(
    ("authenticated", "client", "relay"),
    [
        (False, None, False),
        (False, "203.0.113.5", False),
        (True, "203.0.113.5", True),
        (True, None, True),
        (False, "10.1.2.3", True),
        (False, ip_address("10.1.2.3"), True),
        (False, "::ffff:10.1.2.3", True),
        (False, "2001:db8:ff::25", True),
        (False, "2001:db8:fe::25", False),
        (False, "127.0.0.1", False),
        (False, "[10.1.2.3]", True),
    ],
)
def test_relay_policy(authenticated: bool, client: str | None, relay: bool) -> None:
    decision = ROUTER.route(
        parse_mailbox("user@pqr.example"), authenticated=authenticated, client_address=client
    )
    if relay:
        assert decision == RemoteDelivery(parse_mailbox("user@pqr.example"), "pqr.example")
    else:
        assert isinstance(decision, Rejected)
        assert (decision.code, decision.status, decision.reason) == (
            550,
            "5.7.1",
            RejectReason.RELAY_DENIED,
        )
        assert not decision.temporary


def test_loopback_is_trusted_by_default_as_postfix_trusts_the_host() -> None:
    router = Router(["abc.example"])
    assert router.trusted_networks == (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"))
    assert DEFAULT_TRUSTED_NETWORKS == ("127.0.0.0/8", "::1/128")
    for client in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert router.is_trusted(client)
    for other in ("192.0.2.5", "::2", None):
        assert not router.is_trusted(other)


def test_nobody_is_trusted_when_asked() -> None:
    router = Router(["abc.example"], trusted_networks=())
    decision = router.route(parse_mailbox("user@pqr.example"), client_address="127.0.0.1")
    assert isinstance(decision, Rejected)


def test_authentication_need_not_allow_relaying() -> None:
    router = Router(["abc.example"], relay_for_authenticated=False, trusted_networks=())
    decision = router.route(parse_mailbox("user@pqr.example"), authenticated=True)
    assert isinstance(decision, Rejected)
    assert decision.reason is RejectReason.RELAY_DENIED


def test_relay_domains_are_accepted_from_anyone() -> None:
    decision = ROUTER.route(parse_mailbox("user@Backup.Example"), client_address="203.0.113.5")
    assert decision == RemoteDelivery(parse_mailbox("user@Backup.Example"), "backup.example")


@pytest.mark.parametrize(
    ("configured", "addressed"),
    [
        ("straße.test", "straße.test"),
        ("straße.test", "xn--strae-oqa.test"),
        ("xn--strae-oqa.test", "STRAßE.test"),
        ("βόλος.gr", "xn--nxasmm1c.gr"),
        ("xn--nxasmm1c.gr", "βόλος.gr"),
    ],
)
def test_a_domain_with_a_deviation_character_matches_in_either_spelling(
    configured: str, addressed: str
) -> None:
    """IDNA 2008 keeps ß and final sigma (RFC 5892): ``straße.test`` and
    ``xn--strae-oqa.test`` are one domain, local or relayed in either spelling; the
    U-label was refused as a syntax error before, and could not be configured."""
    local = Router([configured]).route(parse_mailbox(f"user@{addressed}"))
    assert isinstance(local, LocalDelivery)
    assert local.domain == normalize_domain(configured)
    relay = Router(["abc.example"], relay_domains=[configured])
    decision = relay.route(parse_mailbox(f"user@{addressed}"), client_address="203.0.113.5")
    assert isinstance(decision, RemoteDelivery)
    assert decision.domain == normalize_domain(configured)


def test_a_deviation_character_names_its_own_domain_not_the_mapped_one() -> None:
    """``straße`` is not ``strasse`` under IDNA 2008: a router for one does not take
    mail for the other."""
    router = Router(["strasse.test"])
    decision = router.route(parse_mailbox("user@straße.test"), client_address="203.0.113.5")
    assert isinstance(decision, Rejected)
    assert decision.reason is RejectReason.RELAY_DENIED


def test_remote_address_literal() -> None:
    decision = ROUTER.route(parse_mailbox("user@[192.0.2.2]"), authenticated=True)
    assert isinstance(decision, RemoteDelivery)
    assert decision.domain == "[192.0.2.2]"
    assert isinstance(ROUTER.route(parse_mailbox("user@[192.0.2.2]")), Rejected)


def test_remote_idna_domain_is_given_as_a_label() -> None:
    decision = ROUTER.route(parse_mailbox("user@Räksmörgås.example"), authenticated=True)
    assert isinstance(decision, RemoteDelivery)
    assert decision.domain == "xn--rksmrgs-5wao1o.example"


def test_smart_host_is_named_in_remote_deliveries() -> None:
    router = Router(["abc.example"], smart_host=("Relay.Example.", 587))
    decision = router.route(parse_mailbox("user@pqr.example"), client_address="127.0.0.1")
    assert isinstance(decision, RemoteDelivery)
    assert decision.smart_host == ("relay.example", 587)
    assert isinstance(router.route(parse_mailbox("user@abc.example")), LocalDelivery)


# smtpcore.testing's LDH host names, and the router's own domains in any case.
domains = st.one_of(
    sst.domains(), st.sampled_from(["abc.example", "ABC.Example", "backup.EXAMPLE"])
)
clients = st.one_of(
    st.none(),
    st.ip_addresses().filter(
        lambda a: (
            not any(a in n for n in ROUTER.trusted_networks)
            and not (a.version == 6 and a.ipv4_mapped is not None)
        )
    ),
)


@settings(max_examples=100)
@given(domains, clients, st.sampled_from(["user", "a.b", "postmaster"]))
def test_never_an_open_relay(
    domain: str, client: IPv4Address | IPv6Address | None, local_part: str
) -> None:
    mailbox = Mailbox(local_part, domain)
    decision = ROUTER.route(mailbox, client_address=client)
    if domain.lower() in ("abc.example", "backup.example"):  # domains ignore case
        assert not isinstance(decision, Rejected)
    else:
        assert isinstance(decision, Rejected)
        assert decision.reason is RejectReason.RELAY_DENIED


# --- relay tricks ----------------------------------------------------------------

TRICKS = [
    "<user%other.example@abc.example>",
    "<user%other.example%third.example@abc.example>",
    '<"user@other.example"@abc.example>',
    '<"@other.example:user"@abc.example>',
    "<other.example!user@abc.example>",
    "<other.example!user%x.example@abc.example>",
    "<user%other.example@[192.0.2.1]>",
    "<user%other.example@backup.example>",
]


@pytest.mark.parametrize("path", TRICKS)
@pytest.mark.parametrize(("authenticated", "client"), [(False, None), (True, "10.0.0.1")])
def test_relay_tricks_are_refused(path: str, authenticated: bool, client: str | None) -> None:
    decision = ROUTER.route(recipient(path), authenticated=authenticated, client_address=client)
    assert isinstance(decision, Rejected)
    assert decision.reason is RejectReason.ROUTING_TRICK
    assert (decision.code, decision.status) == (550, "5.7.1")


def test_double_at_never_reaches_the_router() -> None:
    with pytest.raises(AddressError):
        parse_path("<user@other.example@abc.example>")


def test_source_route_through_this_host_is_not_followed() -> None:
    # RFC 5321 appendix C: the route may be ignored, and mail goes to the
    # final mailbox; naming this host in the route grants nothing.
    decision = ROUTER.route(recipient("<@abc.example,@mx.abc.example:user@pqr.example>"))
    assert isinstance(decision, Rejected)
    assert decision.reason is RejectReason.RELAY_DENIED


def test_source_route_to_a_local_mailbox_delivers_locally() -> None:
    decision = ROUTER.route(recipient("<@pqr.example:user@abc.example>"))
    assert decision == LocalDelivery(parse_mailbox("user@abc.example"), "abc.example")


def test_tricks_at_remote_domains_are_the_remote_hosts_business() -> None:
    decision = ROUTER.route(parse_mailbox("user%x@pqr.example"), authenticated=True)
    assert isinstance(decision, RemoteDelivery)


# --- the package ---------------------------------------------------------------


def test_all_matches_exports() -> None:
    exported = {
        name
        for name, value in vars(smtpcore.routing).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("smtpcore")
    }
    assert set(smtpcore.routing.__all__) >= exported - {"dnspython"}
    for name in smtpcore.routing.__all__:
        assert hasattr(smtpcore.routing, name)
    for name in ("Router", "LocalDelivery", "RemoteDelivery", "Rejected", "MXRecord"):
        assert name in smtpcore.routing.__all__
    for name in ("Resolver", "StaticResolver", "order_exchangers"):
        assert name in smtpcore.routing.__all__


FORBIDDEN = {"asyncio", "trio", "socket", "ssl", "time", "random", "sniffio", "dns"}


@pytest.mark.parametrize(
    "path",
    sorted(Path(smtpcore.routing.__file__).parent.glob("*.py")),
    ids=lambda p: p.name,
)
def test_layering(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    tops = {name.split(".")[0] for name in imported}
    if path.name == "dnspython.py":
        assert tops - set(sys.stdlib_module_names) <= {"smtpcore", "dns"}
        return
    assert not tops & FORBIDDEN
    assert tops - set(sys.stdlib_module_names) <= {"smtpcore"}
    ours = {name for name in imported if name.startswith("smtpcore")}
    assert all(
        name in ("smtpcore._errors", "smtpcore._ip", "smtpcore.address")
        or name.startswith("smtpcore.routing")
        for name in ours
    )


def test_dnspython_is_not_imported_by_the_package() -> None:
    source = Path(smtpcore.routing.__file__).read_text(encoding="utf-8")
    assert "dnspython" not in {
        alias.name.rsplit(".", 1)[-1]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
