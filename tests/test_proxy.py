"""The PROXY protocol header parser (smtpcore.proxy): v1 text, v2 binary, read exactly."""

from __future__ import annotations

import ipaddress
import re
import struct
from typing import Literal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtpcore.proxy import ProxyHeader, ProxyProtocolError, ProxyTLS, parse_proxy_header
from smtpcore.testing import strategies as sst

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(
    command: int,
    family: int,
    block: bytes,
    tlvs: list[tuple[int, bytes]] = (),  # type: ignore[assignment]  # a read-only default
    transport: int = 1,
) -> bytes:
    tail = block + b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    return (
        SIGNATURE + struct.pack("!BBH", 0x20 | command, family << 4 | transport, len(tail)) + tail
    )


def read_exactly(header: bytes, after: bytes = b"") -> ProxyHeader:
    """Feed as a careful reader does: only as many more octets as the parser asks."""
    stream = header + after
    data = b""
    while not isinstance(result := parse_proxy_header(data), ProxyHeader):
        assert result >= 1
        data += stream[len(data) : len(data) + result]
        assert len(data) <= len(header)  # never a byte past the header
    assert result.length == len(header) == len(data)
    return result


def test_v1_tcp4_tcp6_and_unknown() -> None:
    header = read_exactly(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n", b"EHLO x\r\n")
    assert header.source == ("192.0.2.7", 40000)
    assert header.destination == ("198.51.100.1", 25)
    header = read_exactly(b"PROXY TCP6 2001:DB8::7 2001:db8::1 1 65535\r\n")
    assert header.source == ("2001:db8::7", 1) and header.version == 1
    header = read_exactly(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n")
    assert header.source is None and header.destination is None


def test_an_ipv4_mapped_address_is_given_as_the_ipv4_one() -> None:
    """One client, one form (RFC 4291 §2.5.5.2), in v1 and v2 headers alike."""
    header = read_exactly(b"PROXY TCP6 ::ffff:192.0.2.7 ::FFFF:198.51.100.1 40000 25\r\n")
    assert (header.source, header.destination) == (("192.0.2.7", 40000), ("198.51.100.1", 25))
    mapped = ipaddress.IPv6Address("::ffff:192.0.2.7").packed
    block = mapped + ipaddress.IPv6Address("2001:db8::1").packed + struct.pack("!HH", 1, 2)
    v2_header = parse_proxy_header(v2(1, 2, block))
    assert isinstance(v2_header, ProxyHeader)
    assert (v2_header.source, v2_header.destination) == (("192.0.2.7", 1), ("2001:db8::1", 2))


@pytest.mark.parametrize(
    "data",
    [
        b"EHLO a.example\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 040000 25\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",
        b"PROXY TCP4 192.0.2.07 198.51.100.1 1 25\r\n",
        b"PROXY TCP5 192.0.2.7 198.51.100.1 1 25\r\n",
        # An IPv6 zone is no address the spec allows, and would carry any text after it.
        b"PROXY TCP6 fe80::1%eth0 ::1 4000 25\r\n",
        b"PROXY TCP6 fe80::1%]:1\tfrom=[203.0.113.66 ::1 4000 25\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n",
        b"PROXY UNKNOWN x\ny\r\n",  # a bare LF, refused read whole as read in pieces
        b"PROXY " + b"x" * 120,
        v2(2, 1, bytes(12)),
        SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
        v2(1, 1, bytes(8)),  # INET block cut short
        SIGNATURE + b"\x21\x11\x00\x11" + bytes(12) + b"\x01\x00\x05ab",  # TLV past the end
    ],
)
def test_malformed_headers_raise(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)


def test_v2_local_and_unspecified() -> None:
    header = read_exactly(v2(0, 1, bytes(12)))
    assert header.local and header.source is None
    header = read_exactly(v2(1, 0, b"", transport=0))
    assert not header.local and header.source is None


@pytest.mark.parametrize("family", [1, 2, 3])
def test_v2_local_naming_a_family_with_no_addresses_is_accepted(family: int) -> None:
    """HAProxy's spec §2.2: for LOCAL the receiver accepts the connection and discards the
    block, family included; a sender may name one and send no address."""
    header = read_exactly(v2(0, family, b""))
    assert header.local and header.source is None and header.tlvs == ()


def test_v2_unix() -> None:
    block = b"/run/client.sock".ljust(108, b"\x00") + b"/run/smtp.sock".ljust(108, b"\x00")
    header = read_exactly(v2(1, 3, block))
    assert header.source_path == "/run/client.sock"
    assert header.destination_path == "/run/smtp.sock"
    assert header.source is None and header.destination is None


def test_v2_unix_path_spelling_an_address_is_no_address() -> None:
    """A local user may bind his socket to the path ``127.0.0.1``: the header's
    ``source`` (what trust, loopback rules and session counts read) stays None."""
    block = b"127.0.0.1".ljust(108, b"\x00") + b"192.0.2.10".ljust(108, b"\x00")
    header = read_exactly(v2(1, 3, block))
    assert (header.source, header.destination) == (None, None)
    assert (header.source_path, header.destination_path) == ("127.0.0.1", "192.0.2.10")


@pytest.mark.parametrize("path", [b"/x\r\nX-Injected: yes", b"/x\x1b[2J", "/x\u202e".encode()])
def test_v2_unix_path_with_an_unprintable_character_is_refused(path: bytes) -> None:
    """The path is the client's name in logs and trace headers, and a local user chooses
    it (a client socket may be bound to any path it can write)."""
    block = path.ljust(108, b"\x00") + b"/run/smtp.sock".ljust(108, b"\x00")
    with pytest.raises(ProxyProtocolError, match="unprintable"):
        parse_proxy_header(v2(1, 3, block))


ports = st.integers(0, 65535)
# Any type but PP2_TYPE_SSL, whose value has a structure of its own (ssl_tlvs below).
tlvs = st.lists(
    st.tuples(st.integers(0, 255).filter(lambda kind: kind != 0x20), st.binary(max_size=40)),
    max_size=4,
)


def sub_tlvs(*fields: tuple[int, bytes]) -> bytes:
    return b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in fields)


def ssl_value(client: int, verify: int, *fields: tuple[int, bytes]) -> bytes:
    """A PP2_TYPE_SSL value (proxy-protocol.txt §2.2.6): client, verify, sub-TLVs."""
    return struct.pack("!BI", client, verify) + sub_tlvs(*fields)


INET_BLOCK = bytes([203, 0, 113, 9, 127, 0, 0, 1]) + struct.pack("!HH", 51000, 25)
HAPROXY_SSL = ssl_value(
    0x01 | 0x02,
    0,
    (0x21, b"TLSv1.3"),
    (0x22, "José".encode()),
    (0x23, b"TLS_AES_256_GCM_SHA384"),
    (0x24, b"RSA-SHA256"),
    (0x25, b"RSA2048"),
)


def test_v2_ssl_tlv_says_how_the_client_spoke_tls_to_the_proxy() -> None:
    """HAProxy's ``send-proxy-v2-ssl-cn``: the client's TLS, terminated at the proxy."""
    header = read_exactly(v2(1, 1, INET_BLOCK, [(0x04, b""), (0x20, HAPROXY_SSL)]))
    assert header.tls == ProxyTLS(
        ssl=True,
        certificate_on_connection=True,
        certificate_in_session=False,
        verify=0,
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        common_name="José",
        signature_algorithm="RSA-SHA256",
        key_algorithm="RSA2048",
    )
    assert header.tlvs == ((0x04, b""), (0x20, HAPROXY_SSL))  # the raw TLVs, as before


def test_a_header_without_the_ssl_tlv_names_no_tls() -> None:
    assert read_exactly(v2(1, 1, INET_BLOCK, [(0x01, b"smtp")])).tls is None
    assert read_exactly(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n").tls is None


def test_an_ssl_tlv_of_a_plaintext_client_says_so() -> None:
    """The TLV with PP2_CLIENT_SSL clear: the client did not speak TLS to the proxy."""
    tls = read_exactly(v2(1, 1, INET_BLOCK, [(0x20, ssl_value(0, 1))])).tls
    assert tls is not None and not tls.ssl and tls.version is None and tls.verify == 1


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(b"", "shorter than", id="empty"),
        pytest.param(b"\x01\x00\x00\x00", "shorter than", id="no-room-for-verify"),
        pytest.param(ssl_value(1, 0) + b"\x21\x00", "cut short", id="sub-tlv-header-cut"),
        pytest.param(
            ssl_value(1, 0) + b"\x21\x00\x09TLSv1.3",
            "SSL sub-TLV longer than the SSL TLV",
            id="sub-tlv-too-long",
        ),
        pytest.param(ssl_value(1, 0, (0x21, b"TLSv1.3"), (0x21, b"TLSv1.2")), "twice", id="twice"),
    ],
)
def test_a_malformed_ssl_tlv_is_refused(value: bytes, error: str) -> None:
    """proxy-protocol.txt §2.2.6 bounds the value: five octets, then whole sub-TLVs
    within it, a known subtype at most once. A header that breaks that is not believed,
    and the error (the log's reason) says which part overran."""
    with pytest.raises(ProxyProtocolError, match=error):
        parse_proxy_header(v2(1, 1, INET_BLOCK, [(0x20, value)]))


def test_a_tlv_overrunning_the_header_says_so() -> None:
    """The header's own TLVs keep their wording: what overran is the header."""
    with pytest.raises(ProxyProtocolError, match=r"^PROXY v2 TLV longer than the header$"):
        parse_proxy_header(v2(1, 1, INET_BLOCK + b"\x04\x00\x09TLSv1.3"))


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        pytest.param(0x22, "Alice".encode("utf-16-be"), id="cn-bmpstring"),
        pytest.param(0x22, "Jos\u00e9".encode("latin-1"), id="cn-t61string"),
        pytest.param(0x22, b"a\x00b", id="cn-nul"),
        pytest.param(0x22, "\u00e9".encode() * 65, id="cn-over-rfc-5280s-64"),
        pytest.param(0x21, "TLSv1.3\u00e9".encode(), id="version-not-ascii"),
        pytest.param(0x21, b"", id="version-empty"),
        pytest.param(0x23, b"AES\r\nX-Evil: 1", id="crlf-in-cipher"),
        pytest.param(0x23, b"A) (B", id="cipher-parentheses"),
        pytest.param(0x23, b"A" * 1500, id="cipher-1500-octets"),
        pytest.param(0x24, b"R" * 65, id="algorithm-65-octets"),
    ],
)
def test_a_name_unfit_to_be_written_is_unknown_not_a_refusal(kind: int, raw: bytes) -> None:
    """The strings decide nothing: a common name HAProxy copied in the certificate's
    own encoding, or a version or cipher that could not go whole into a ``Received``
    comment (RFC 5322 §2.1.1, §3.2.2), is None, and the client keeps its connection
    and its TLS. The raw value stays in ``tlvs``."""
    value = ssl_value(1, 0, (0x25, b"RSA2048"), (kind, raw))
    header = read_exactly(v2(1, 1, INET_BLOCK, [(0x20, value)]))
    assert header.tls is not None and header.tls.ssl and header.tls.key_algorithm == "RSA2048"
    field = {0x21: "version", 0x22: "common_name", 0x23: "cipher", 0x24: "signature_algorithm"}
    assert getattr(header.tls, field[kind]) is None
    assert header.tlvs == ((0x20, value),)


@given(st.sampled_from([0x21, 0x22, 0x23, 0x24, 0x25]), st.binary(max_size=300))
def test_any_known_sub_tlv_value_is_read_or_unknown(kind: int, raw: bytes) -> None:
    """Whatever octets a known subtype holds, the header is believed, and a name kept
    is short enough for a ``Received`` line: 64 US-ASCII octets, or 64 characters of
    common name (RFC 5280's ``ub-common-name``)."""
    tls = read_exactly(v2(1, 1, INET_BLOCK, [(0x20, ssl_value(1, 0, (kind, raw)))])).tls
    assert tls is not None and tls.ssl
    for name in (tls.version, tls.cipher, tls.signature_algorithm, tls.key_algorithm):
        assert name is None or (name.isascii() and 1 <= len(name) <= 64 and " " not in name)
    assert tls.common_name is None or len(tls.common_name) <= 64


def test_two_ssl_tlvs_are_refused() -> None:
    """Which of two would be the client's? Neither."""
    twice = [(0x20, ssl_value(1, 0)), (0x20, ssl_value(0, 0))]
    with pytest.raises(ProxyProtocolError, match="twice"):
        parse_proxy_header(v2(1, 1, INET_BLOCK, twice))


def test_unknown_ssl_subtypes_are_skipped() -> None:
    """A receiver may ignore the TLVs it does not understand (proxy-protocol.txt §2.2)."""
    value = ssl_value(1, 0, (0x2F, b"\xff\x00"), (0x21, b"TLSv1.2"))
    tls = read_exactly(v2(1, 1, INET_BLOCK, [(0x20, value)])).tls
    assert tls is not None and tls.ssl and tls.version == "TLSv1.2"


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), ports, ports, tlvs)
def test_v2_inet_round_trip(
    source: ipaddress.IPv4Address,
    destination: ipaddress.IPv4Address,
    source_port: int,
    destination_port: int,
    fields: list[tuple[int, bytes]],
) -> None:
    block = source.packed + destination.packed + struct.pack("!HH", source_port, destination_port)
    header = read_exactly(v2(1, 1, block, fields), b"220 after")
    assert header.source == (str(source), source_port)
    assert header.destination == (str(destination), destination_port)
    assert list(header.tlvs) == fields


@given(st.ip_addresses(v=6), st.ip_addresses(v=6), ports, ports)
def test_v1_and_v2_inet6_agree(
    source: ipaddress.IPv6Address,
    destination: ipaddress.IPv6Address,
    source_port: int,
    destination_port: int,
) -> None:
    line = f"PROXY TCP6 {source} {destination} {source_port} {destination_port}\r\n"
    block = source.packed + destination.packed + struct.pack("!HH", source_port, destination_port)
    one, two = read_exactly(line.encode()), read_exactly(v2(1, 2, block))
    assert (one.source, one.destination) == (two.source, two.destination)
    named = source.ipv4_mapped or source  # an IPv4 client by its IPv4 address
    assert one.source == (str(named), source_port)


@given(
    st.binary(max_size=40).map(lambda tail: b"PROXY " + tail)
    | st.lists(st.sampled_from([b" ", b"\n", b"\r", b"\r\n", b"x"]), max_size=10).map(
        lambda parts: b"PROXY UNKNOWN" + b"".join(parts)
    )
)
@example(b"PROXY UNKNOWN x\ny\r\n")
def test_a_v1_line_read_an_octet_at_a_time_is_read_as_the_whole_line(data: bytes) -> None:
    """The server reads a header by what the parser asks for: every prefix of a line
    the whole-line parser accepts must be the start of a header (a bare LF in an
    UNKNOWN line was accepted whole and refused as it came)."""
    try:
        whole = parse_proxy_header(data)
    except ProxyProtocolError:
        whole = None
    if not isinstance(whole, ProxyHeader):
        return
    for end in range(1, whole.length):
        assert isinstance(parse_proxy_header(data[:end]), int)


@given(
    st.binary(max_size=40) | st.binary(max_size=400).map(lambda raw: v2(1, 1, INET_BLOCK + raw))
)
def test_any_bytes_give_a_header_a_count_or_an_error(data: bytes) -> None:
    """And an error short enough for its log line, whatever the peer sent."""
    try:
        result = parse_proxy_header(data)
    except ProxyProtocolError as exc:
        assert len(str(exc)) <= 200
        return
    assert isinstance(result, ProxyHeader) or result >= 1


_ASCII_NAMES = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="()\\"),
    min_size=1,
    max_size=30,
)
_COMMON_NAMES = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF), min_size=1, max_size=30
).filter(str.isprintable)


@st.composite
def ssl_tlvs(draw: st.DrawFn) -> tuple[bytes, ProxyTLS]:
    """A PP2_TYPE_SSL value as HAProxy's ``send-proxy-v2-ssl-cn`` writes one, and what
    it says."""
    client, verify = draw(st.integers(0, 7)), draw(st.integers(0, 2**32 - 1))
    strings = {
        0x21: draw(st.none() | _ASCII_NAMES),
        0x22: draw(st.none() | _COMMON_NAMES),
        0x23: draw(st.none() | _ASCII_NAMES),
        0x24: draw(st.none() | _ASCII_NAMES),
        0x25: draw(st.none() | _ASCII_NAMES),
    }
    encoded = {kind: text.encode() for kind, text in strings.items() if text is not None}
    if strings[0x22] is not None and draw(st.booleans()):
        # A BMPString's name as HAProxy copies it, UTF-16: in this range every character
        # has a NUL or control octet, so it is no printable UTF-8 and is read as unknown.
        encoded[0x22] = strings[0x22].encode("utf-16-be")
        strings[0x22] = None
    present = list(encoded.items())
    value = ssl_value(client, verify, *draw(st.permutations(present)))
    return value, ProxyTLS(
        ssl=bool(client & 1),
        certificate_on_connection=bool(client & 2),
        certificate_in_session=bool(client & 4),
        verify=verify,
        version=strings[0x21],
        common_name=strings[0x22],
        cipher=strings[0x23],
        signature_algorithm=strings[0x24],
        key_algorithm=strings[0x25],
    )


# Narrow on purpose: PROXY protocol headers (HAProxy's), outside what smtpcore.testing draws.
@st.composite
def valid_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    """A PROXY header as HAProxy writes one (v1 TCP4/TCP6/UNKNOWN, v2 INET/INET6/UNIX/
    LOCAL with TLVs), and what it says."""
    kind = draw(
        st.sampled_from(["v1-4", "v1-6", "v1-unknown", "v2-4", "v2-6", "v2-unix", "local"])
    )
    fields = draw(tlvs) if kind.startswith("v2") or kind == "local" else []
    tls = None
    if (kind.startswith("v2") or kind == "local") and draw(st.booleans()):
        ssl, tls = draw(ssl_tlvs())
        fields = [*fields, (0x20, ssl)]
        if kind == "local":
            tls = None  # the proxy's own connection: its TLS is no client's
    if kind == "v2-unix":
        paths = st.text(  # printable: a path with a control character is refused
            st.characters(
                min_codepoint=1, max_codepoint=0x2FF, exclude_categories=["Cs", "Cc", "Zs"]
            ),
            min_size=1,
            max_size=30,
        ).filter(str.isprintable)
        source_path, destination_path = draw(paths), draw(paths)
        block = source_path.encode().ljust(108, b"\0") + destination_path.encode().ljust(
            108, b"\0"
        )
        data = v2(1, 3, block, fields)
        return data, ProxyHeader(
            2,
            None,
            None,
            len(data),
            tlvs=tuple(fields),
            source_path=source_path,
            destination_path=destination_path,
            tls=tls,
        )
    if kind == "local":
        data = v2(0, 1, bytes(12), fields)
        return data, ProxyHeader(2, None, None, len(data), local=True, tlvs=tuple(fields))
    if kind == "v1-unknown":
        data = b"PROXY UNKNOWN\r\n"
        return data, ProxyHeader(1, None, None, len(data))
    version: Literal[4, 6] = 4 if kind.endswith("4") else 6
    source_ip, destination_ip = draw(st.ip_addresses(v=version)), draw(st.ip_addresses(v=version))
    source_port, destination_port = draw(ports), draw(ports)
    # An IPv4-mapped address is read back as the IPv4 address it is.
    source = (str(getattr(source_ip, "ipv4_mapped", None) or source_ip), source_port)
    destination = (
        str(getattr(destination_ip, "ipv4_mapped", None) or destination_ip),
        destination_port,
    )
    if kind.startswith("v1"):
        line = f"PROXY TCP{version} {source_ip} {destination_ip} {source_port} {destination_port}"
        data = f"{line}\r\n".encode()
        return data, ProxyHeader(1, source, destination, len(data))
    block = (
        source_ip.packed
        + destination_ip.packed
        + struct.pack("!HH", source_port, destination_port)
    )
    data = v2(1, 1 if version == 4 else 2, block, fields)
    return data, ProxyHeader(2, source, destination, len(data), tlvs=tuple(fields), tls=tls)


@given(valid_headers().flatmap(lambda case: st.tuples(st.just(case), sst.chunkings(case[0]))))
def test_any_header_under_any_chunking_reads_back_what_the_proxy_wrote(
    case: tuple[tuple[bytes, ProxyHeader], list[bytes]],
) -> None:
    """Every version and family, however the network cuts it: until the header is
    whole the parser asks for more (never an error, never a header), then it reads
    back exactly what the proxy wrote, and no octet of the client's after it."""
    (data, expected), pieces = case
    received = b""
    for piece in pieces:
        received += piece
        result = parse_proxy_header(received)
        if len(received) < len(data):
            assert isinstance(result, int) and 1 <= result <= len(data) - len(received)
    assert parse_proxy_header(received + b"EHLO client.example\r\n") == expected


def test_the_log_shows_a_unix_path_peer_escaped() -> None:
    """A peer that is a UNIX socket's path reaches the log lines whole: a line end in it
    would split the line (one that fail2ban or a reader takes for the server's)."""
    from smtpcore._driver._proxied import peer_text

    assert peer_text(("192.0.2.1", 25)) == "[192.0.2.1]:25"
    assert peer_text(("/x\r\nX: y", 4000)) == "[/x\\x0d\\x0aX: y]:4000"
    assert peer_text(None) == "[unknown]"


@given(st.ip_addresses().map(str), st.none() | st.integers(0, 65535))
@example("203.0.113.8", 0)
def test_the_log_writes_a_port_only_when_the_client_has_one(host: str, port: int | None) -> None:
    """TCP port 0 is reserved (RFC 9293 §3.1), so no client sends from it: a port 0 is a
    peer whose port nobody knows (XCLIENT ``ADDR`` without ``PORT``), written as an
    unknown port (None, XFORWARD's) is, with none, so that one client's lines agree."""
    from smtpcore._driver._proxied import peer_text

    assert peer_text((host, port)) == f"[{host}]" + (f":{port}" if port else "")


def _read_back(shown: str) -> str:
    """What :func:`unix_peer_text`'s escapes stand for."""
    return re.sub(
        r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8}))",
        lambda match: chr(int(next(group for group in match.groups() if group), 16)),
        shown,
    )


@given(st.text())
@example("/tmp/x [192.0.2.10]:25")
@example("/x\\x5b\r\n\u202e\U000e0001")
def test_a_unix_path_is_logged_as_one_bracketless_word_that_reads_back(path: str) -> None:
    """A local user chooses his socket's path: in the log it may not end the line, show
    an ``[address]`` fail2ban would read, or split into words; what it was reads back."""
    from smtpcore._driver._proxied import unix_peer_text

    text = unix_peer_text(path)
    assert text.startswith("unix:")
    shown = text.removeprefix("unix:")
    assert all(c.isprintable() and not c.isspace() and c not in "[]" for c in shown), shown
    assert _read_back(shown) == path


@pytest.mark.parametrize(
    ("family", "block"),
    [
        pytest.param(
            1, bytes([192, 0, 2, 7, 198, 51, 100, 1]) + struct.pack("!HH", 53, 25), id="udp4"
        ),
        pytest.param(
            2,
            ipaddress.IPv6Address("2001:db8::7").packed
            + ipaddress.IPv6Address("2001:db8::1").packed
            + struct.pack("!HH", 53, 25),
            id="udp6",
        ),
        pytest.param(
            3,
            b"/run/client.sock".ljust(108, b"\x00") + b"/run/smtp.sock".ljust(108, b"\x00"),
            id="unix-dgram",
        ),
    ],
)
def test_a_v2_datagram_transport_falls_back_to_unspec(family: int, block: bytes) -> None:
    """proxy-protocol.txt §2.2: a receiver need implement only UNSPEC, "provided that it
    automatically falls back to the UNSPEC mode for the valid combinations above that it
    does not support". SMTP and POP3 run over streams only, so a DGRAM transport
    (``\\x12``, ``\\x22``, ``\\x32``) names no client of ours: its addresses are ignored
    (the connection's own stand), its TLVs still read, never taken for TCP's."""
    ssl = ssl_value(0x01, 0, (0x21, b"TLSv1.3"))  # PP2_CLIENT_SSL
    data = v2(1, family, block, [(0x20, ssl)], transport=2)
    header = read_exactly(data, b"EHLO client.example\r\n")
    assert (header.source, header.destination) == (None, None)
    assert (header.source_path, header.destination_path) == (None, None)
    assert not header.local and header.tlvs == ((0x20, ssl),)
    assert header.tls is not None and header.tls.version == "TLSv1.3"
