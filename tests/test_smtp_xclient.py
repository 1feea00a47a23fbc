"""XCLIENT and XFORWARD (Postfix's XCLIENT_README and XFORWARD_README) in the machines:
the grammar both ways, offered to trusted clients only, the session restart, and
what hostile clients get."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtp_helpers import EHLO, ENVELOPE, codes, greeted, run
from smtpcore import LocalProtocolError
from smtpcore.address import parse_mailbox
from smtpcore.smtp import (
    TEMPUNAVAIL,
    UNAVAILABLE,
    ClientConnection,
    Ehlo,
    Mail,
    Reply,
    ServerConnection,
    State,
    Xclient,
    Xforward,
    xtext,
)
from smtpcore.testing import ConnectionPair
from smtpcore.testing import strategies as sst

TRUSTED = {"xclient": True, "xforward": True, "trusted_forwarder": True}
ATTRIBUTES = b"NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT"


def _pair() -> ConnectionPair:
    """A client and a trusting server, past EHLO."""
    pair = ConnectionPair(
        ClientConnection("filter.pqr.example"),
        ServerConnection("mx.pqr.example", xclient=True, xforward=True, trusted_forwarder=True),
        greeting=Reply(220, "mx.pqr.example ESMTP"),
    )
    pair.send(Ehlo("filter.pqr.example"))
    return pair


# -- the grammar, both ways --------------------------------------------------------------


@given(sst.xclients())
def test_xclient_round_trips(command: Xclient) -> None:
    pair = _pair()
    pair.send(command)
    assert pair.server_events[-1] == command


@given(sst.xforwards())
def test_xforward_round_trips(command: Xforward) -> None:
    pair = _pair()
    pair.send(command)
    assert pair.server_events[-1] == command


def _spellings(text: str) -> list[str]:
    """Ways a client may write ``text`` (a value before xtext) that a server may read
    as the same value: each octet escaped, in lower-case hex; an IPv4 address as the
    IPv6 address that maps it, in either form (RFC 4291 §2.5.5.2); an IPv6 one in full."""
    found = [xtext(text), "".join(f"+{octet:02x}" for octet in text.encode())]
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(text.removeprefix("IPV6:"))
        if address.version == 4:
            number = int(address)
            found += [f"IPV6:::ffff:{number >> 16:x}:{number & 0xFFFF:x}", f"ipv6:::ffff:{text}"]
        else:
            found.append(f"IPV6:{address.exploded.upper()}")
    return found


def _text_taken(verb: str, name: str, octets: bytes) -> bool | None:
    """Whether ``octets`` as the value of ``name`` must be taken, as Postfix takes it;
    None where its rules are not this test's. Postfix takes any octets in HELO, LOGIN
    and IDENT, and in XFORWARD's PROTO up to 64 (smtpd.c: ``printable()`` masks an
    octet that is not UTF-8, or a control, as "?"); smtpcore masks the first alike and
    refuses a character that is not printable, or a space, by design."""
    if name not in ("HELO", "LOGIN", "IDENT") and (verb, name) != ("XFORWARD", "PROTO"):
        return None
    if name == "PROTO" and len(octets) > 64:
        return False
    text = octets.decode("utf-8", "replace")  # U+FFFD is printable
    return text.isprintable() and not any(char.isspace() for char in text)


@st.composite
def _respelt(draw: st.DrawFn) -> tuple[bytes, bool | None]:
    """A command from xclients() or xforwards(), each value spelt one of the ways
    :func:`_spellings` gives, and maybe one more value for an attribute, which then
    holds that: up to 85 raw octets (255 as xtext; UTF-8 or not, and often non-ASCII
    octets enough to take U+FFFD for each over 255 as xtext), or an IPv4 address
    (0.0.0.0/8 often), mapped, for ADDR. With the line, whether the server must take
    it (None: this test does not say)."""
    command = draw(sst.xclients() | sst.xforwards())
    words = [command.verb]
    for attribute in command.ATTRIBUTES:
        value = getattr(command, attribute.field)
        if value is not None:
            spelt = draw(st.sampled_from(_spellings(attribute.to_text(value))))
            words.append(f"{attribute.name}={spelt}")
    names = st.sampled_from([attribute.name for attribute in command.ATTRIBUTES])
    texts = names.filter(lambda name: name in ("HELO", "LOGIN", "IDENT"))
    addresses = st.ip_addresses(v=4) | st.ip_addresses(network="0.0.0.0/8")
    extra = draw(
        st.none()
        | st.tuples(names, st.binary(min_size=1, max_size=85))
        | st.tuples(texts, st.lists(st.integers(0x80, 0xFF), min_size=29, max_size=85).map(bytes))
        | st.tuples(st.just("ADDR"), addresses)
    )
    taken: bool | None = True
    if extra is not None:
        name, value = extra
        if isinstance(value, bytes):
            words.append(f"{name}=" + "".join(f"+{octet:02X}" for octet in value))
            taken = _text_taken(command.verb, name, value)
        else:
            words.append(f"ADDR={_spellings(str(value))[2]}")
            # Postfix takes the rest of 0.0.0.0/8 mapped; smtpcore, by the address mapped, not.
            taken = value.packed[0] != 0 or int(value) == 0
    return " ".join(words).encode(), taken


@given(_respelt())
def test_what_the_server_reads_it_writes_back_as_a_line_it_reads_the_same(
    case: tuple[bytes, bool | None],
) -> None:
    """An event the machine read is one a client can send, to the same effect: its
    lines (:meth:`~smtpcore.smtp.Xclient.split`, a new EHLO before each) are taken,
    and read as the same values. 'XCLIENT ADDR=IPV6:::ffff:1:203' was read as
    0.1.2.3, written 'ADDR=0.1.2.3', and that refused. A line Postfix takes, each value
    within 255 octets, is taken: 'XCLIENT LOGIN=' and 85 '+E9' (a Latin-1 login) got
    501, each octet read as U+FFFD, whose xtext is 9 octets."""
    line, taken = case
    # Lines as long as Postfix's line_length_limit; split() writes lines of 512 octets.
    events, out = run(greeted(**TRUSTED, max_command_line=2048), EHLO + line + b"\r\n")
    read = events[-1]
    if taken is not None:
        assert isinstance(read, (Xclient, Xforward)) is taken, out
    if not isinstance(read, (Xclient, Xforward)):
        return  # refused, as it should be
    lines = b"".join(EHLO + part.to_line().encode() + b"\r\n" for part in read.split())
    again, out = run(greeted(**TRUSTED), lines)
    parts = [event for event in again if isinstance(event, type(read))]
    assert len(parts) == len(read.split()), out
    merged: dict[str, object] = {}
    for part in parts:
        merged |= part.attributes  # each overwrites what it names, as the server does
    assert merged == read.attributes, out


def test_octets_that_are_not_utf8_are_read_as_postfix_masks_them() -> None:
    """Each octet that is no part of a UTF-8 character is "?", as Postfix's printable()
    makes it: a Latin-1 login of 85 octets, 255 on the wire, got 501, read as 85 U+FFFD
    whose xtext is 765 octets."""
    line = b"XFORWARD IDENT=a+ff+C3+A9+e2+82b\r\nXCLIENT LOGIN=" + b"+E9" * 85 + b"\r\n"
    events, out = run(greeted(**TRUSTED), EHLO + line)
    assert events[-2] == Xforward(ident="a?\u00e9??b")
    assert events[-1] == Xclient(login="?" * 85)
    assert codes(out)[1:] == ["250 2.0.0", "220"]
    assert events[-1].to_line() == "XCLIENT LOGIN=" + "?" * 85


def test_values_are_read_typed_in_any_case() -> None:
    conn = greeted(**TRUSTED)
    events, out = run(
        conn,
        EHLO + b"xclient name=[tempunavail] addr=ipv6:2001:DB8:0::7 Port=025 proto=esmtp "
        b"helo=[Unavailable] LOGIN=j+C3+B6rg\r\n",
    )
    assert events[-1] == Xclient(
        name=TEMPUNAVAIL,
        addr="2001:db8::7",
        port=25,
        proto="ESMTP",
        helo=UNAVAILABLE,
        login="jörg",
    )
    assert codes(out)[-1] == "220"


def test_what_postfix_takes_at_the_limits_is_taken() -> None:
    """0.0.0.0 (Postfix's valid_ipv4_hostaddr() allows it alone of 0.0.0.0/8), a PROTO
    of 64 octets, a value whose xtext is 255 octets."""
    line = (
        b"XFORWARD ADDR=0.0.0.0 PROTO=" + b"p" * 64 + b" HELO=" + b"+2B" * 85 + b"\r\n"
        b"XCLIENT DESTADDR=IPV6:::ffff:1.2.3.4 ADDR=1.0.0.0\r\n"
    )
    events, out = run(greeted(**TRUSTED), EHLO + line)
    assert events[-2] == Xforward(addr="0.0.0.0", proto="p" * 64, helo="+" * 85)
    assert events[-1] == Xclient(addr="1.0.0.0", destaddr="1.2.3.4")
    assert codes(out)[1:] == ["250 2.0.0", "220"]
    with pytest.raises(LocalProtocolError):  # 66 octets in 33 characters
        Xforward(proto="é" * 33)


def test_the_wire_form() -> None:
    command = Xclient(name="mail.abc.example", addr="2001:db8::7", port=40312, login="a+b=c")
    assert command.to_line() == (
        "XCLIENT NAME=mail.abc.example ADDR=IPV6:2001:db8::7 PORT=40312 LOGIN=a+2Bb+3Dc"
    )
    forward = Xforward(addr="x25:1234", ident="4XyZ", source="remote")
    assert forward.to_line() == "XFORWARD ADDR=x25:1234 IDENT=4XyZ SOURCE=REMOTE"


def test_xforward_addr_is_written_as_the_readme_says() -> None:
    """XFORWARD_README: ADDR is an IPv4 address, or an IPv6 address after ``IPV6:``
    (any case), which current Postfix holds a client to (smtpd.c's xforward_cmd: a
    bare IPv6 one, or text that is no IP address, ``501 5.5.4``); an event an
    application builds takes a bare IPv6 address, and the client writes it with the
    prefix, and text, documented for a server that takes it."""
    events, out = run(
        greeted(**TRUSTED),
        EHLO + b"XFORWARD ADDR=ipv6:2001:DB8::7\r\nXFORWARD ADDR=x25+3A1234\r\n",
    )
    assert events[-2] == Xforward(addr="2001:db8::7")
    assert codes(out)[1:] == ["250 2.0.0", "501 5.5.4"]
    assert Xforward(addr="2001:db8::7").to_line() == "XFORWARD ADDR=IPV6:2001:db8::7"
    with pytest.raises(LocalProtocolError):
        Xforward(addr="IPV6:x25")
    with pytest.raises(LocalProtocolError):  # NAME is a host name, as XCLIENT's
        Xforward(name="up/stream")


def test_an_ipv4_client_named_in_its_mapped_form_is_its_ipv4_address() -> None:
    """RFC 4291 §2.5.5.2: one client, one form, whichever the forwarder wrote."""
    assert Xclient(addr="::ffff:192.0.2.7").addr == "192.0.2.7"
    assert Xclient(addr="IPV6:::FFFF:192.0.2.7").addr == "192.0.2.7"
    assert Xclient(addr="IPV6:2001:db8::7").addr == "2001:db8::7"


def test_an_ipv6_address_on_the_wire_comes_after_its_prefix() -> None:
    """XCLIENT_README: ADDR is "an IPv4 network address, an IPv6 address prefixed with
    IPV6:" (DESTADDR alike); a bare IPv6 address gets 501 5.5.4, as from Postfix (see
    the malformed commands below), while an application's event may omit it."""
    line = b"XCLIENT ADDR=IPV6:::ffff:192.0.2.7 DESTADDR=Ipv6:2001:db8::25\r\n"
    events, out = run(greeted(**TRUSTED), EHLO + line)
    assert events[-1] == Xclient(addr="192.0.2.7", destaddr="2001:db8::25")
    assert codes(out)[-1] == "220"
    _, out = run(greeted(**TRUSTED), EHLO + b"XCLIENT ADDR=2001:db8::7\r\n")
    assert out.endswith(b"501 5.5.4 Bad ADDR syntax\r\n")
    assert Xclient(addr="2001:db8::7").to_line() == "XCLIENT ADDR=IPV6:2001:db8::7"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"helo": "evil\r\nMAIL FROM:<a@b>"},
        {"login": "two words"},
        {"helo": "x" * 256},
        {"addr": "not-an-address"},
        {"port": 65536},
        {"port": True},
        {"proto": "LMTP"},
        {"name": "bad_host-.example"},
        {"helo": TEMPUNAVAIL},
        {"proto": UNAVAILABLE},  # XCLIENT_README: SMTP or ESMTP
    ],
)
def test_an_xclient_that_would_mislead_cannot_be_built(fields: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        Xclient(**fields)


@pytest.mark.parametrize(
    ("cls", "fields"),
    [
        # 0.0.0.0/8 but 0.0.0.0, mapped or not (Postfix's valid_ipv4_hostaddr()).
        (Xclient, {"addr": "0.1.2.3"}),
        (Xclient, {"addr": "::ffff:0.1.2.3"}),
        (Xclient, {"destaddr": "IPV6:::ffff:1:203"}),
        (Xforward, {"addr": "0.255.255.255"}),
        (Xforward, {"addr": "IPV6:::FFFF:0.0.0.1"}),
        # Over 255 octets as xtext, though not in characters.
        (Xforward, {"helo": "+" * 86}),
        (Xclient, {"login": "é" * 43}),
        (Xforward, {"ident": "=" * 100}),
    ],
)
def test_an_event_the_server_would_refuse_cannot_be_built(
    cls: type[Xclient | Xforward], fields: dict[str, Any]
) -> None:
    """Typed values are held to the rules the wire is (the machine answers 501 5.5.4):
    a value is what it would be sent as."""
    with pytest.raises(LocalProtocolError):
        cls(**fields)


def test_long_values_are_split_over_commands_that_fit_a_line() -> None:
    command = Xclient(name="a." * 100 + "example", helo="h" * 250, login="l" * 250)
    parts = command.split()
    assert len(parts) == 2
    assert all(len(part.to_line()) + 2 <= 512 for part in parts)
    assert parts[0].merged(parts[1]) == command


# -- offered to a trusted client only ----------------------------------------------------


def test_the_ehlo_reply_lists_the_attributes_to_a_trusted_client() -> None:
    _, out = run(greeted(**TRUSTED), EHLO)
    assert b"250-XCLIENT " + ATTRIBUTES + b"\r\n" in out
    assert b"XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n" in out


@pytest.mark.parametrize(
    "options",
    [{}, {"xclient": True, "xforward": True}, {"trusted_forwarder": True}],
)
def test_to_any_other_client_the_commands_do_not_exist(options: dict[str, bool]) -> None:
    conn = greeted(**options)
    _, out = run(
        conn,
        EHLO + b"XCLIENT ADDR=192.0.2.1\r\nXFORWARD ADDR=192.0.2.1\r\n"
        b"MAIL FROM:<a@abc.example>\r\nXCLIENT ADDR=192.0.2.1\r\n",
    )
    assert b"XCLIENT" not in out and b"XFORWARD" not in out
    # Unknown even inside a transaction, where a known command would get 503.
    assert codes(out)[1:] == ["500 5.5.2", "500 5.5.2", "250 2.1.0", "500 5.5.2"]
    assert "XCLIENT" not in conn.commands()


def test_trust_is_read_at_each_command() -> None:
    conn = greeted(xclient=True)
    run(conn, EHLO)
    conn.trusted_forwarder = True
    _, out = run(conn, EHLO + b"XCLIENT ADDR=192.0.2.1\r\n")
    assert b"XCLIENT " + ATTRIBUTES in out and codes(out)[-1] == "220"


def test_xforward_needs_ehlo_first() -> None:
    """To a trusted client, XFORWARD before EHLO is out of sequence; to any other it
    does not exist."""
    _, out = run(greeted(**TRUSTED), b"XFORWARD ADDR=192.0.2.1\r\nHELO a.example\r\n")
    _, after_helo = run(greeted(**TRUSTED), b"HELO a.example\r\nXFORWARD ADDR=192.0.2.1\r\n")
    assert codes(out)[0] == "503 5.5.1" and codes(after_helo)[-1] == "503 5.5.1"
    _, untrusted = run(greeted(xforward=True), b"XFORWARD ADDR=192.0.2.1\r\n")
    assert codes(untrusted) == ["500 5.5.2"]


def test_xclient_may_come_before_ehlo_and_after_helo() -> None:
    """XCLIENT_README: at any time outside a mail transaction."""
    conn = greeted(**TRUSTED)
    assert "XCLIENT" in conn.commands() and "XFORWARD" not in conn.commands()
    _, out = run(conn, b"XCLIENT ADDR=192.0.2.1\r\n")
    _, after_helo = run(greeted(**TRUSTED), b"HELO a.example\r\nXCLIENT ADDR=192.0.2.1\r\n")
    assert codes(out) == ["220"] and codes(after_helo)[-1] == "220"
    assert conn.forwarded_client == Xclient(addr="192.0.2.1")
    # Not to a client the server does not trust, before EHLO either.
    _, untrusted = run(greeted(xclient=True), b"XCLIENT ADDR=192.0.2.1\r\n")
    assert codes(untrusted) == ["500 5.5.2"]


def test_xclients_may_come_back_to_back() -> None:
    """XCLIENT_README, note 1: a client splits long attributes over several commands,
    sending NAME and ADDR last (as Dovecot does, with no EHLO between them)."""
    conn = greeted(**TRUSTED)
    _, out = run(
        conn,
        EHLO + b"XCLIENT HELO=client.abc.example PROTO=ESMTP\r\n"
        b"XCLIENT NAME=client.abc.example ADDR=192.0.2.7\r\n" + EHLO,
    )
    assert codes(out)[1:] == ["220", "220", "250"]
    assert conn.forwarded_client == Xclient(
        name="client.abc.example", addr="192.0.2.7", proto="ESMTP", helo="client.abc.example"
    )


# -- hostile and malformed commands -----------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"XCLIENT\r\n", "501 5.5.4"),
        (b"XCLIENT ADDR\r\n", "501 5.5.4"),
        (b"XCLIENT ADDR=\r\n", "501 5.5.4"),
        (b"XCLIENT FOO=bar\r\n", "501 5.5.4"),
        (b"XCLIENT IDENT=abc\r\n", "501 5.5.4"),  # XFORWARD's, not XCLIENT's
        (b"XCLIENT HELO=a+0D+0AMAIL+20FROM:<x@y>\r\n", "501 5.5.4"),  # CRLF injection
        (b"XCLIENT HELO=a+00b\r\n", "501 5.5.4"),
        (b"XCLIENT LOGIN=a+2\r\n", "501 5.5.4"),
        (b"XCLIENT LOGIN=j\xc3\xb6rg\r\n", "501 5.5.4"),  # not xtext
        (b"XCLIENT ADDR=[192.0.2.1]\r\n", "501 5.5.4"),
        (b"XCLIENT ADDR=999.0.0.1\r\n", "501 5.5.4"),
        (b"XCLIENT PORT=65536\r\n", "501 5.5.4"),
        (b"XCLIENT PORT=\xd9\xa1\r\n", "501 5.5.4"),  # an Arabic-Indic one is no digit here
        (b"XCLIENT PROTO=HTTP\r\n", "501 5.5.4"),
        (b"XCLIENT ADDR=[TEMPUNAVAIL]\r\n", "501 5.5.4"),
        (b"XCLIENT ADDR=fe80::1%eth0\r\n", "501 5.5.4"),  # a zone: any text after "%"
        (b"XCLIENT ADDR=IPV6:fe80::1%]:1\r\n", "501 5.5.4"),
        (b"XCLIENT DESTADDR=fe80::1%1\r\n", "501 5.5.4"),
        # XCLIENT_README: an IPv6 address "prefixed with IPV6:", and only an IPv6 one;
        # Postfix answers 501 5.5.4 to a bare one, whatever it would read it as.
        (b"XCLIENT ADDR=2001:db8::1\r\n", "501 5.5.4"),
        (b"XCLIENT ADDR=::ffff:192.0.2.1\r\n", "501 5.5.4"),
        (b"XCLIENT ADDR=IPV6:192.0.2.1\r\n", "501 5.5.4"),
        (b"XCLIENT DESTADDR=2001:db8::25\r\n", "501 5.5.4"),
        (b"XFORWARD ADDR=fe80::1%eth0\r\n", "501 5.5.4"),  # nor as an address in text
        (b"XFORWARD ADDR=2001:db8::1\r\n", "501 5.5.4"),  # IPv6 needs IPV6: (README)
        (b"XFORWARD ADDR=IPV6:192.0.2.1\r\n", "501 5.5.4"),  # and IPv4 goes bare
        (b"XFORWARD ADDR=IPV6:x25+3A1\r\n", "501 5.5.4"),  # nor text after IPV6:
        # Current Postfix (smtpd.c, xforward_cmd) reads ADDR with
        # normalize_mailhost_addr() and NAME with valid_hostname(): 501 5.5.4 to the rest.
        (b"XFORWARD ADDR=x25+3A1234\r\n", "501 5.5.4"),
        (b"XFORWARD ADDR=unknown\r\n", "501 5.5.4"),
        (b"XFORWARD NAME=up+2Fstream\r\n", "501 5.5.4"),
        (b"XFORWARD NAME=192.0.2.1\r\n", "501 5.5.4"),
        (b"XFORWARD NAME=up.abc.example.\r\n", "501 5.5.4"),
        (b"XFORWARD NAME=[TEMPUNAVAIL]\r\n", "501 5.5.4"),  # XCLIENT's alone
        # XCLIENT's NAME too (smtpd.c, xclient_cmd: valid_hostname()).
        (b"XCLIENT NAME=192.0.2.1\r\n", "501 5.5.4"),
        (b"XCLIENT NAME=mail.abc.example.\r\n", "501 5.5.4"),
        (b"XCLIENT HELO=" + b"h" * 256 + b"\r\n", "501 5.5.4"),
        (b"XCLIENT HELO=" + b"h" * 600 + b"\r\n", "500 5.5.2"),  # over the line limit
        (b"XFORWARD SOURCE=ELSEWHERE\r\n", "501 5.5.4"),
        (b"XFORWARD LOGIN=bob\r\n", "501 5.5.4"),
        (b"XFORWARD IDENT=a\rb\r\n", "501 5.5.2"),
        # Postfix's valid_ipv4_hostaddr(): no address in 0.0.0.0/8 but 0.0.0.0, nor
        # as the dotted end of an IPv6 one.
        (b"XCLIENT ADDR=0.0.0.1\r\n", "501 5.5.4"),
        (b"XCLIENT DESTADDR=0.1.2.3\r\n", "501 5.5.4"),
        (b"XCLIENT ADDR=IPV6:::ffff:0.1.2.3\r\n", "501 5.5.4"),
        (b"XFORWARD ADDR=0.255.255.255\r\n", "501 5.5.4"),
        (b"XFORWARD ADDR=IPV6:::0.0.0.1\r\n", "501 5.5.4"),
        (b"XCLIENT PROTO=[UNAVAILABLE]\r\n", "501 5.5.4"),  # SMTP or ESMTP only
        (b"XFORWARD PROTO=" + b"p" * 65 + b"\r\n", "501 5.5.4"),  # 64 octets at most
        (b"XFORWARD PROTO=" + b"+C3+A9" * 33 + b"\r\n", "501 5.5.4"),  # 33 characters
        # Postfix's 255 is the xtext's octets: 86 characters here, 258 on the wire.
        (b"XFORWARD HELO=" + b"+2B" * 86 + b"\r\n", "501 5.5.4"),
        (b"XCLIENT LOGIN=" + b"+2B" * 86 + b"\r\n", "501 5.5.4"),
        # A mapped address is judged by the IPv4 address it maps, which it is read as
        # (Postfix takes this spelling, and refuses the 0.1.2.3 it stands for).
        (b"XCLIENT ADDR=IPV6:::ffff:1:203\r\n", "501 5.5.4"),
    ],
)
def test_a_malformed_command_is_refused_and_changes_nothing(line: bytes, reply: str) -> None:
    conn = greeted(**TRUSTED)
    _, out = run(conn, EHLO + line + b"MAIL FROM:<a@abc.example>\r\n")
    assert codes(out)[1:] == [reply, "250 2.1.0"]
    assert conn.forwarded_client is None and conn.forwarded_message is None


@pytest.mark.parametrize("verb", [b"XCLIENT", b"XFORWARD"])
def test_inside_a_transaction_the_commands_get_503(verb: bytes) -> None:
    conn = greeted(**TRUSTED)
    _, out = run(conn, ENVELOPE + verb + b" ADDR=192.0.2.1\r\n")
    assert codes(out)[-1] == "503 5.5.1"
    assert conn.state is State.RCPT


def test_an_attribute_named_twice_keeps_its_last_value() -> None:
    events, _ = run(greeted(**TRUSTED), EHLO + b"XCLIENT ADDR=192.0.2.1 ADDR=192.0.2.2\r\n")
    assert events[-1] == Xclient(addr="192.0.2.2")


# -- what XCLIENT changes -----------------------------------------------------------------


def test_xclient_restarts_the_session_before_ehlo() -> None:
    conn = greeted(**TRUSTED, tls=True)
    _, out = run(
        conn,
        EHLO + b"XCLIENT NAME=mail.abc.example ADDR=192.0.2.7 LOGIN=john\r\n"
        b"MAIL FROM:<a@abc.example>\r\n" + EHLO,
    )
    assert codes(out)[1:] == ["220", "503 5.5.1", "250"]
    assert conn.tls and conn.authenticated
    assert conn.forwarded_client == Xclient(
        name="mail.abc.example", addr="192.0.2.7", login="john"
    )
    assert b"XCLIENT " + ATTRIBUTES in out.split(b"220 ")[-1]  # listed again after EHLO


def test_later_xclients_overwrite_what_they_name() -> None:
    conn = greeted(**TRUSTED)
    run(conn, EHLO + b"XCLIENT ADDR=192.0.2.7 LOGIN=john\r\n" + EHLO)
    run(conn, b"XCLIENT ADDR=192.0.2.8 LOGIN=[UNAVAILABLE]\r\n")
    assert conn.forwarded_client == Xclient(addr="192.0.2.8", login=UNAVAILABLE)
    assert not conn.authenticated


def test_starttls_forgets_the_login_and_helo_xclient_gave() -> None:
    # RFC 3207 §4.2, as Postfix's STARTTLS resets the SASL login and HELO XCLIENT set: a
    # later XCLIENT that names neither must not bring them back.
    conn = greeted(**TRUSTED, starttls=True)
    run(conn, EHLO + b"XCLIENT NAME=mail.abc.example ADDR=192.0.2.7 HELO=h.example LOGIN=john\r\n")
    run(conn, EHLO + b"STARTTLS\r\n")
    conn.tls_started()
    assert not conn.authenticated
    assert conn.forwarded_client == Xclient(name="mail.abc.example", addr="192.0.2.7")
    run(conn, EHLO + b"XCLIENT PORT=4000\r\n")
    assert not conn.authenticated
    assert conn.forwarded_client == Xclient(name="mail.abc.example", addr="192.0.2.7", port=4000)


def test_starttls_after_a_login_alone_leaves_nothing_forwarded() -> None:
    conn = greeted(**TRUSTED, starttls=True)
    run(conn, EHLO + b"XCLIENT LOGIN=john\r\n" + EHLO + b"STARTTLS\r\n")
    conn.tls_started()
    assert conn.forwarded_client is None and not conn.authenticated


def test_a_refused_xclient_changes_nothing() -> None:
    conn = greeted(**TRUSTED)

    def refuse(machine: ServerConnection, event: object) -> Reply | None:
        if isinstance(event, Xclient):
            return Reply(550, "insufficient authorization", "5.7.0")
        from smtpcore.testing import permissive_smtp_answer

        answer = permissive_smtp_answer(machine, event)  # type: ignore[arg-type]
        assert not isinstance(answer, list)
        return answer

    _, out = run(
        conn, EHLO + b"XCLIENT ADDR=192.0.2.7\r\nMAIL FROM:<a@b.example>\r\n", answer=refuse
    )
    assert codes(out)[1:] == ["550 5.7.0", "250 2.1.0"]
    assert conn.forwarded_client is None and conn.extended


def test_a_554_to_xclient_keeps_the_named_client_and_serves_it_nothing() -> None:
    """The answer to XCLIENT is the named client's greeting (XCLIENT_README): a 554
    refuses it service as a 554 greeting does, everything but QUIT getting 503 (RFC
    5321 §3.1), rather than leaving the session to go on as the forwarder."""
    conn = greeted(**TRUSTED)

    def refuse(machine: ServerConnection, event: object) -> Reply | None:
        if isinstance(event, Xclient):
            return Reply(554, "not from there", "5.7.1")
        from smtpcore.testing import permissive_smtp_answer

        answer = permissive_smtp_answer(machine, event)  # type: ignore[arg-type]
        assert not isinstance(answer, list)
        return answer

    _, out = run(
        conn,
        EHLO + b"XCLIENT ADDR=192.0.2.66\r\n" + EHLO + b"MAIL FROM:<a@b.example>\r\n"
        b"XCLIENT ADDR=192.0.2.1\r\nNOOP\r\nQUIT\r\n",
        answer=refuse,
    )
    assert codes(out)[1:] == ["554 5.7.1", *["503 5.5.1"] * 4, "221 2.0.0"]
    assert conn.forwarded_client == Xclient(addr="192.0.2.66")
    assert conn.state is State.CLOSED


def test_a_554_to_xclient_tells_the_client_machine_there_is_no_service() -> None:
    client = ClientConnection("filter.pqr.example")
    client.receive_data(b"220 mx ESMTP\r\n")
    client.next_event()
    client.send(Ehlo("filter.pqr.example"))
    client.receive_data(b"250-mx\r\n250 XCLIENT NAME ADDR\r\n")
    client.next_event()
    client.send(Xclient(addr="192.0.2.66"))
    client.receive_data(b"554 5.7.1 not from there\r\n")
    client.next_event()
    assert client.state is State.NO_SERVICE
    with pytest.raises(LocalProtocolError):  # only QUIT now
        client.send(Ehlo("filter.pqr.example"))


def test_a_split_sends_name_and_addr_together_last() -> None:
    """XCLIENT_README, note 1: once ADDR is sent, the client usually may not send
    XCLIENT again, so NAME and ADDR go last."""
    command = Xclient(
        name="mail.abc.example", addr="192.0.2.7", port=25, helo="h" * 250, login="l" * 250
    )
    parts = command.split()
    assert len(parts) == 2
    assert parts[0].addr is None and parts[0].name is None
    assert {"NAME", "ADDR", "PORT"} <= parts[1].attributes.keys()
    assert parts[0].merged(parts[1]) == command


# -- what XFORWARD keeps, and for how long --------------------------------------------------


def test_xforward_holds_for_the_next_transaction_only() -> None:
    conn = greeted(**TRUSTED)
    run(conn, EHLO + b"XFORWARD NAME=up.abc.example ADDR=192.0.2.7\r\nXFORWARD IDENT=Q1\r\n")
    expected = Xforward(name="up.abc.example", addr="192.0.2.7", ident="Q1")
    assert conn.forwarded_message == expected
    run(conn, ENVELOPE.removeprefix(EHLO) + b"DATA\r\n")
    assert conn.forwarded_message == expected  # the open transaction's
    run(conn, b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert conn.forwarded_message is None
    run(conn, b"XFORWARD IDENT=Q2\r\nRSET\r\n")
    assert conn.forwarded_message is None
    run(conn, b"XFORWARD IDENT=Q3\r\n" + EHLO)  # a new hello ends it too
    assert conn.forwarded_message is None


# -- the client machine ---------------------------------------------------------------------


def test_the_client_sends_only_what_the_server_announced() -> None:
    client = ClientConnection("filter.pqr.example")
    client.receive_data(b"220 mx ESMTP\r\n")
    client.next_event()
    client.send(Ehlo("filter.pqr.example"))
    client.receive_data(b"250-mx\r\n250-PIPELINING\r\n250 XCLIENT NAME ADDR\r\n")
    client.next_event()
    assert client.extensions.xclient == {"NAME", "ADDR"}
    with pytest.raises(LocalProtocolError, match="LOGIN"):
        client.send(Xclient(addr="192.0.2.1", login="john"))
    with pytest.raises(LocalProtocolError, match="XFORWARD"):
        client.send(Xforward(addr="192.0.2.1"))
    only = Xclient(addr="192.0.2.1", login="john").only(client.extensions.xclient)
    assert only == Xclient(addr="192.0.2.1")
    assert client.send(only) == b"XCLIENT ADDR=192.0.2.1\r\n"
    with pytest.raises(LocalProtocolError):  # XCLIENT ends a pipelined group
        client.send(Mail(parse_mailbox("a@abc.example")))
    client.receive_data(b"220 mx ESMTP\r\n")
    assert client.next_event() == Reply(220, "mx ESMTP")
    assert client.state is State.HELLO and not client.extensions
    with pytest.raises(LocalProtocolError):  # EHLO again first
        client.send(Mail(parse_mailbox("a@abc.example")))


def test_xforward_may_be_pipelined_before_mail() -> None:
    pair = _pair()
    pair.send(Xforward(ident="Q1"), Mail(parse_mailbox("a@abc.example")))
    assert pair.server_events[-2:] == [Xforward(ident="Q1"), Mail(parse_mailbox("a@abc.example"))]
    assert [answered.reply for answered in pair.answers[-2:]] == [
        Reply(250, "OK", "2.0.0"),
        Reply(250, "OK", "2.1.0"),
    ]
