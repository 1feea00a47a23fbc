"""The PROXY protocol option of the server adapters (proxy_protocol_from): the
client's address comes from a trusted proxy's header; anything else is closed.
HAProxy in front of our server with send-proxy and send-proxy-v2."""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import re
import smtplib
import socket
import ssl
import struct

import pytest

from haproxy_peer import haproxy
from peers import TLSFiles, make_tls_files, running_smtp_server
from smtpcore._driver._proxied import checked_proxy_timeout
from smtpcore.asyncio import ServerOptions, Timeouts
from smtpcore.handler import Handler, Session, TLSInfo
from smtpcore.maildrop import MaildirStore
from smtpcore.routing import Rejected, Router
from smtpcore.sasl import PlainServer
from smtpcore.smtp import Rcpt, Reply


class Recorder(Handler):
    def __init__(self) -> None:
        self.peers: list[tuple[str, int] | None] = []

    async def handle_connect(self, session: Session) -> Reply | None:
        self.peers.append(session.peer)
        return None


def greeting_after(port: int, header: bytes) -> bytes:
    """Send ``header``, then read what the server says (b"" if it closed, or reset the
    connection for the bytes it left unread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(header)
        data = b""
        try:
            while not data.endswith(b"\r\n"):
                chunk = sock.recv(1024)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            return b""
        if data.startswith(b"220 "):
            sock.sendall(b"QUIT\r\n")
            sock.recv(1024)
        return data


V2 = (
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
    + socket.inet_aton("203.0.113.9")
    + socket.inet_aton("127.0.0.1")
    + struct.pack("!HH", 51000, 25)
)


def test_the_peer_comes_from_the_header(adapter: str) -> None:
    handler = Recorder()
    with running_smtp_server(adapter, handler, proxy_protocol_from=["127.0.0.0/8"]) as server:
        v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n"
        assert greeting_after(server.port, v1).startswith(b"220 ")
        assert greeting_after(server.port, V2).startswith(b"220 ")
        assert greeting_after(server.port, b"PROXY UNKNOWN\r\n").startswith(b"220 ")
    assert handler.peers[:2] == [("192.0.2.7", 40000), ("203.0.113.9", 51000)]
    assert handler.peers[2] is not None and handler.peers[2][0] == "127.0.0.1"  # its own


@pytest.mark.parametrize("header", [b"EHLO a.example\r\n", b"PROXY TCP4 1.2.3.4\r\n", b"PROXY "])
def test_a_bad_header_closes_the_connection(adapter: str, header: bytes) -> None:
    handler = Recorder()
    with running_smtp_server(adapter, handler, proxy_protocol_from=["127.0.0.1"]) as server:
        if header == b"PROXY ":
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(header)
                sock.shutdown(socket.SHUT_WR)  # and nothing more
                assert sock.recv(1024) == b""
        else:
            assert greeting_after(server.port, header) == b""
    assert handler.peers == []


def test_a_connection_not_from_a_trusted_proxy_is_closed(adapter: str) -> None:
    handler = Recorder()
    with running_smtp_server(adapter, handler, proxy_protocol_from=["10.0.0.0/8"]) as server:
        assert greeting_after(server.port, b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n") == b""
    assert handler.peers == []


def v2_unix(source_path: bytes, destination_path: bytes = b"/run/haproxy/smtp.sock") -> bytes:
    """A v2 PROXY header of the UNIX family (proxy-protocol.txt §2.2), as HAProxy sends
    for a client of its ``unix@`` listener: the client's socket path, which its user
    chose, then the one it reached."""
    block = source_path.ljust(108, b"\x00") + destination_path.ljust(108, b"\x00")
    return b"\r\n\r\n\x00\r\nQUIT\n\x21\x31" + struct.pack("!H", len(block)) + block


def v2_udp4(source: str, destination: str = "127.0.0.1") -> bytes:
    """A v2 PROXY header of the INET family over DGRAM (UDP4, ``\\x12``), which no SMTP
    session runs over: proxy-protocol.txt §2.2 has it read as UNSPEC, its addresses
    ignored."""
    block = socket.inet_aton(source) + socket.inet_aton(destination) + struct.pack("!HH", 4000, 25)
    return b"\r\n\r\n\x00\r\nQUIT\n\x21\x12" + struct.pack("!H", len(block)) + block


NAMES_NO_CLIENT = {
    "v1 UNKNOWN": b"PROXY UNKNOWN\r\n",
    "v2 LOCAL": b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00",
    "v2 UNSPEC": b"\r\n\r\n\x00\r\nQUIT\n\x21\x00\x00\x00",
    # A Unix socket a local user named after an address xclient_from trusts.
    "v2 UNIX": v2_unix(b"127.0.0.9"),
    # A datagram source xclient_from would trust, were it read as TCP's.
    "v2 UDP4": v2_udp4("127.0.0.9"),
}


def ehlo_reply(port: int, header: bytes) -> bytes:
    """The server's reply to EHLO after ``header``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lines = sock.makefile("rb")
        sock.sendall(header)
        assert lines.readline().startswith(b"220 ")
        sock.sendall(b"EHLO a.example\r\n")
        reply = b""
        while not (line := lines.readline()).startswith(b"250 "):
            reply += line
        sock.sendall(b"QUIT\r\n")
        lines.readline()
        return reply + line


@pytest.mark.parametrize("header", NAMES_NO_CLIENT.values(), ids=NAMES_NO_CLIENT.keys())
def test_a_header_naming_no_client_is_not_trusted_as_its_proxy(
    adapter: str, header: bytes
) -> None:
    """A header that names no client leaves the proxy's address as the peer, but the
    client behind it is unknown: not one of ``xclient_from`` because its proxy is."""
    named = b"PROXY TCP4 127.0.0.9 127.0.0.1 40000 25\r\n"
    with running_smtp_server(
        adapter, Recorder(), proxy_protocol_from=["127.0.0.1"], xclient_from=["127.0.0.0/8"]
    ) as server:
        assert b"XCLIENT" in ehlo_reply(server.port, named)
        assert b"XCLIENT" not in ehlo_reply(server.port, header)


class Relaying(Handler):
    """docs/routing.rst's pattern: relay for the networks ``Router`` trusts (loopback by
    default), judged by ``session.client_address``."""

    router = Router(["pqr.example"], hostnames=["mx.pqr.example"])

    def __init__(self) -> None:
        self.addresses: list[str | None] = []

    async def handle_rcpt(self, session: Session, envelope: object, command: Rcpt) -> Reply:
        self.addresses.append(session.client_address)
        decision = self.router.route(
            command.recipient,
            authenticated=session.authenticated is not None,
            client_address=session.client_address,
        )
        if isinstance(decision, Rejected):
            return Reply(decision.code, decision.text, decision.status)
        return Reply(250, "OK")


def rcpt_reply(port: int, header: bytes) -> bytes:
    """The server's reply to a RCPT for a remote domain after ``header``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lines = sock.makefile("rb")
        sock.sendall(header + b"HELO a.example\r\nMAIL FROM:<a@b.example>\r\n")
        sock.sendall(b"RCPT TO:<victim@remote.example>\r\nQUIT\r\n")
        replies = [lines.readline() for _ in range(5)]
        return replies[3]


@pytest.mark.parametrize("header", NAMES_NO_CLIENT.values(), ids=NAMES_NO_CLIENT.keys())
def test_a_client_a_header_names_no_address_for_is_no_loopback_relay(
    adapter: str, header: bytes
) -> None:
    """The proxy on loopback is the session's peer, but ``client_address`` is None: a
    handler written as docs/routing.rst shows does not relay for such a client."""
    handler = Relaying()
    with running_smtp_server(adapter, handler, proxy_protocol_from=["127.0.0.1"]) as server:
        assert rcpt_reply(server.port, header).startswith(b"550 5.7.1 ")
        named = b"PROXY TCP4 127.0.0.9 127.0.0.1 40000 25\r\n"  # a loopback client, named
        assert rcpt_reply(server.port, named).startswith(b"250 ")
    assert handler.addresses == [None, "127.0.0.9"]


def test_a_unix_client_is_not_trusted_by_the_address_its_path_spells(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Unix socket's path is not an address, whatever it spells: the session's peer is
    the proxy's (as for a header naming no client), XCLIENT from it is refused as from
    any untrusted client, and the log names the client ``unix:<path>``."""
    caplog.set_level(logging.INFO, "smtpcore")
    handler = Recorder()
    with (
        running_smtp_server(
            adapter, handler, proxy_protocol_from=["127.0.0.1"], xclient_from=["192.0.2.10"]
        ) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(v2_unix(b"192.0.2.10") + b"XCLIENT ADDR=198.51.100.99\r\nQUIT\r\n")
        assert lines.readline().startswith(b"220 ")
        assert lines.readline().startswith(b"500 5.5.2 ")  # as from any client
        assert lines.readline().startswith(b"221 ")
    assert len(handler.peers) == 1
    assert handler.peers[0] is not None and handler.peers[0][0] == "127.0.0.1"
    assert "[192.0.2.10]" not in caplog.text
    assert "unix:192.0.2.10 via proxy [127.0.0.1]:" in caplog.text


@pytest.mark.parametrize("header", NAMES_NO_CLIENT.values(), ids=NAMES_NO_CLIENT.keys())
def test_clients_a_header_names_by_no_address_take_no_share_of_their_proxys(
    adapter: str, header: bytes
) -> None:
    """Every client of HAProxy's ``unix@`` listener comes through the proxy's one
    address, its header naming it by no address (``UNKNOWN`` in version 1, a path in
    version 2): such sessions are counted under none, so that they never fill the
    proxy's share of ``max_sessions_per_address`` and turn away the next of them, or
    the proxy's own ``LOCAL`` health check (proxy-protocol.txt §2.2)."""
    handler = Recorder()
    with (
        running_smtp_server(
            adapter, handler, proxy_protocol_from=["127.0.0.1"], max_sessions_per_address=1
        ) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as first,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as second,
    ):
        for sock in (first, second):
            sock.sendall(header)
            assert sock.recv(1024).startswith(b"220 ")
        assert greeting_after(server.port, NAMES_NO_CLIENT["v2 LOCAL"]).startswith(b"220 ")
        for sock in (first, second):
            sock.sendall(b"QUIT\r\n")
            assert sock.recv(1024).startswith(b"221 ")


def test_a_unix_path_is_logged_as_one_word_with_no_brackets(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A local user chooses his socket's path, spaces and brackets too: the log
    escapes them, so that the line shows no ``[address]:port`` but the proxy's (the
    one fail2ban's ``[<HOST>]`` would read)."""
    caplog.set_level(logging.INFO, "smtpcore")
    with running_smtp_server(adapter, Recorder(), proxy_protocol_from=["127.0.0.1"]) as server:
        path = b"/tmp/x [192.0.2.10]:25"
        assert greeting_after(server.port, v2_unix(path)).startswith(b"220 ")
    (line,) = [r.getMessage() for r in caplog.records if "connection from unix:" in r.getMessage()]
    shown = "unix:/tmp/x\\x20\\x5b192.0.2.10\\x5d:25"
    assert line.startswith(f"connection from {shown} via proxy [127.0.0.1]:"), line
    assert set(re.findall(r"\[([^]]*)\](?::\d+)?", line)) == {"127.0.0.1"}, line


def test_a_header_that_never_comes_is_logged_as_a_timeout(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore")
    with (
        running_smtp_server(
            adapter, Recorder(), proxy_protocol_from=["127.0.0.1"], proxy_protocol_timeout=0.2
        ) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.sendall(b"PROXY TCP4 192.0.2.7")
        with contextlib.suppress(ConnectionResetError):  # closed, the header's start unread
            assert sock.recv(1024) == b""
    assert re.search(r"bad PROXY header from \[127\.0\.0\.1\]:\d+: TimeoutError", caplog.text)


def test_a_header_trickled_by_a_trusted_proxy_ends_at_the_proxy_timeout(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a header and then nothing: the session is closed once
    ``proxy_protocol_timeout`` is over (Postfix's ``smtpd_upstream_proxy_timeout``),
    not at the greeting timeout, set here far beyond the client's own wait."""
    caplog.set_level(logging.INFO, "smtpcore")
    with (
        running_smtp_server(
            adapter,
            Recorder(),
            proxy_protocol_from=["127.0.0.1"],
            proxy_protocol_timeout=0.2,
            timeouts=Timeouts(greeting=600, command=600),
        ) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.sendall(V2[:20])
        with contextlib.suppress(ConnectionResetError):  # closed, the header's start unread
            assert sock.recv(1024) == b""
    assert re.search(r"bad PROXY header from \[127\.0\.0\.1\]:\d+: TimeoutError", caplog.text)


@pytest.mark.parametrize(
    "seconds", [0, -1, math.inf, math.nan, None, "5", True, pytest.param(10**400, id="10**400")]
)
def test_a_proxy_timeout_that_is_no_wait_is_refused_at_once(adapter: str, seconds: object) -> None:
    """A ``ValueError`` naming the option, for every value that is no number of seconds
    a deadline can take: 10**400 compares as finite, but is past a float's range and
    would fail every proxied session with ``OverflowError``."""
    module = importlib.import_module(f"smtpcore.{adapter}")
    with pytest.raises(ValueError, match="proxy_protocol_timeout"):
        module.SMTPServer(Recorder(), proxy_protocol_timeout=seconds)
    with pytest.raises(ValueError, match="proxy_protocol_timeout"):
        module.POP3Server(MaildirStore(".", {}), proxy_protocol_timeout=seconds)
    assert (
        module.SMTPServer(Recorder(), proxy_protocol_timeout=3).options.proxy_protocol_timeout
        == 3.0
    )


def test_the_proxy_timeout_is_five_seconds_by_default() -> None:
    """As Postfix's ``smtpd_upstream_proxy_timeout``."""
    assert ServerOptions(hostname="mx.test").proxy_protocol_timeout == 5.0


def ssl_tlv(client: int, *fields: tuple[int, bytes]) -> bytes:
    """A PP2_TYPE_SSL TLV (proxy-protocol.txt §2.2.6), as HAProxy's send-proxy-v2-ssl
    writes it: the client bit field, a zero ``verify``, then sub-TLVs."""
    value = struct.pack("!BI", client, 0) + b"".join(
        struct.pack("!BH", kind, len(data)) + data for kind, data in fields
    )
    return struct.pack("!BH", 0x20, len(value)) + value


def v2_with_tlvs(*tlvs: bytes) -> bytes:
    """:data:`V2` (client 203.0.113.9:51000) with ``tlvs`` after its addresses."""
    tail = V2[16:] + b"".join(tlvs)
    return V2[:14] + struct.pack("!H", len(tail)) + tail


OFFLOADED = v2_with_tlvs(ssl_tlv(0x01, (0x21, b"TLSv1.3"), (0x23, b"TLS_AES_256_GCM_SHA384")))
"""A client that spoke TLS 1.3 to the proxy, which terminated it (TLS offload)."""


class TLSRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.tls: list[TLSInfo | None] = []

    async def handle_connect(self, session: Session) -> Reply | None:
        self.tls.append(session.tls)
        return await super().handle_connect(session)


def test_a_client_its_proxy_says_spoke_tls_counts_as_under_tls(
    adapter: str, tls: TLSFiles
) -> None:
    """HAProxy's send-proxy-v2-ssl: PP2_CLIENT_SSL says the client's TLS ended at the
    proxy. As Dovecot does, the session is under TLS: AUTH PLAIN is offered where
    ``auth_require_tls`` keeps it from plaintext, and STARTTLS is not offered again.
    A header without the TLV, or with PP2_CLIENT_SSL clear, is plaintext as before."""
    handler = TLSRecorder()
    auth = {"PLAIN": lambda: PlainServer(lambda authzid, user, password: False)}
    plaintext = v2_with_tlvs(ssl_tlv(0x00))
    with running_smtp_server(
        adapter,
        handler,
        ssl_context=tls.server_context,
        auth=auth,
        proxy_protocol_from=["127.0.0.1"],
    ) as server:
        offloaded = ehlo_reply(server.port, OFFLOADED)
        assert b"AUTH PLAIN" in offloaded and b"STARTTLS" not in offloaded
        for header in (V2, plaintext):
            reply = ehlo_reply(server.port, header)
            assert b"STARTTLS" in reply and b"AUTH" not in reply
    assert handler.tls == [
        TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", terminated_by_proxy=True),
        None,
        None,
    ]


def _v2_local_or_unspec(command: int, *tlvs: bytes) -> bytes:
    """A v2 header naming no client: LOCAL (``command`` 0, the proxy's own health
    check, here with an INET block) or PROXY over the UNSPEC family (``command`` 1,
    no block), with ``tlvs``."""
    block = V2[16:28] if command == 0 else b""
    tail = block + b"".join(tlvs)
    family = b"\x11" if command == 0 else b"\x00"
    return V2[:12] + bytes([0x20 | command]) + family + struct.pack("!H", len(tail)) + tail


def test_only_a_proxied_clients_ssl_tlv_counts(adapter: str, tls: TLSFiles) -> None:
    """A LOCAL header is the proxy's own connection (proxy-protocol.txt §2.2): what its
    PP2_TYPE_SSL says is not a client's TLS, so the session stays plaintext. A PROXY
    header over the UNSPEC family names no address, but the client it stands for did
    speak TLS to the proxy: that session is under TLS."""
    handler = TLSRecorder()
    offloaded = ssl_tlv(0x01, (0x21, b"TLSv1.3"))
    with running_smtp_server(
        adapter, handler, ssl_context=tls.server_context, proxy_protocol_from=["127.0.0.1"]
    ) as server:
        assert b"STARTTLS" in ehlo_reply(server.port, _v2_local_or_unspec(0, offloaded))
        assert b"STARTTLS" not in ehlo_reply(server.port, _v2_local_or_unspec(1, offloaded))
    assert handler.tls == [None, TLSInfo("TLSv1.3", None, terminated_by_proxy=True)]


def test_starttls_after_tls_the_proxy_ended_is_refused(adapter: str, tls: TLSFiles) -> None:
    """The session is under TLS already: STARTTLS is a command out of sequence
    (RFC 3207 §4.2, ``503``), and the session goes on in the clear hop from the proxy."""
    with (
        running_smtp_server(
            adapter, Recorder(), ssl_context=tls.server_context, proxy_protocol_from=["127.0.0.1"]
        ) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        lines = sock.makefile("rb")
        sock.sendall(OFFLOADED)
        assert lines.readline().startswith(b"220 ")
        sock.sendall(b"EHLO a.example\r\nSTARTTLS\r\nNOOP\r\n")
        while lines.readline().startswith(b"250-"):
            pass
        assert lines.readline().startswith(b"503 ")
        assert lines.readline().startswith(b"250 ")


@pytest.mark.parametrize(
    "common_name",
    ["Alice".encode("utf-16-be"), "Jos\u00e9".encode("latin-1"), b"x" * 300],
    ids=["BMPString", "T61String", "over-long"],
)
def test_a_client_certificates_common_name_never_costs_the_connection(
    adapter: str, tls: TLSFiles, common_name: bytes
) -> None:
    """HAProxy's send-proxy-v2-ssl-cn copies the name as the certificate encodes it
    (UTF-16 for a BMPString, Latin-1 for a T61String). smtpcore never reads it: the
    certified client is served, under TLS, whatever the name's encoding or length."""
    handler = TLSRecorder()
    header = v2_with_tlvs(ssl_tlv(0x03, (0x21, b"TLSv1.3"), (0x22, common_name)))
    with running_smtp_server(
        adapter, handler, ssl_context=tls.server_context, proxy_protocol_from=["127.0.0.1"]
    ) as server:
        assert b"STARTTLS" not in ehlo_reply(server.port, header)
    assert handler.tls == [TLSInfo("TLSv1.3", None, terminated_by_proxy=True)]


def test_haproxy_in_front(adapter: str) -> None:
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler, proxy_protocol_from=["127.0.0.1"]) as server,
        haproxy(server.port) as (v1_port, v2_port),
    ):
        clients = []
        for port in (v1_port, v2_port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                clients.append(sock.getsockname())
                assert sock.recv(1024).startswith(b"220 ")
                sock.sendall(b"QUIT\r\n")
                assert sock.recv(1024).startswith(b"221 ")
    # The checks that HAProxy listens made connections too, in any order.
    assert {tuple(address) for address in clients} <= set(handler.peers)


def test_sessions_are_counted_by_the_client_the_header_names(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a proxy, max_sessions_per_address is each client's share, not the proxy's:
    two clients through one proxy address are both served, and a second session for a
    client that has its share is refused with 421 4.7.0 once its header is read, and
    logged as a client the limit turned away at once is."""
    caplog.set_level(logging.INFO, "smtpcore")
    handler = Recorder()
    with (
        running_smtp_server(
            adapter, handler, proxy_protocol_from=["127.0.0.0/8"], max_sessions_per_address=1
        ) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as first,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as second,
    ):
        first.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n")
        assert first.recv(1024).startswith(b"220 ")
        second.sendall(V2)  # from 203.0.113.9
        assert second.recv(1024).startswith(b"220 ")
        again = b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 25\r\n"
        assert greeting_after(server.port, again).startswith(b"421 4.7.0 ")
        assert [r.getMessage() for r in caplog.records if "too many" in r.getMessage()] == [
            "too many sessions from [192.0.2.7]:40001: refused (max-sessions-per-address 1)"
        ]
        for sock in (first, second):
            sock.sendall(b"QUIT\r\n")
            assert sock.recv(1024).startswith(b"221 ")
        # Its first session over, the client may come again.
        assert greeting_after(server.port, again).startswith(b"220 ")
    assert handler.peers == [("192.0.2.7", 40000), ("203.0.113.9", 51000), ("192.0.2.7", 40001)]


def test_a_forwarder_the_header_names_is_not_capped_at_one_client_share(adapter: str) -> None:
    """A host of ``xclient_from`` reached through a trusted proxy speaks for many
    clients, as one that connects directly does: counted under none, judged by the
    address the header names (as its XCLIENT trust is); a client the header names
    outside ``xclient_from``, or inside ``proxy_protocol_from``, is counted as ever."""
    with (
        running_smtp_server(
            adapter,
            Recorder(),
            proxy_protocol_from=["127.0.0.1"],
            xclient_from=["192.0.2.50"],
            max_sessions_per_address=1,
        ) as server,
        contextlib.ExitStack() as stack,
    ):

        def greeting(source: str, port: int) -> bytes:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port), 10))
            sock.sendall(b"PROXY TCP4 %s 127.0.0.1 %d 25\r\n" % (source.encode(), port))
            return sock.recv(1024)

        assert greeting("192.0.2.50", 40000).startswith(b"220 ")
        assert greeting("192.0.2.50", 40001).startswith(b"220 ")
        for client in ("192.0.2.51", "127.0.0.1"):
            assert greeting(client, 40000).startswith(b"220 ")
            assert greeting(client, 40001).startswith(b"421 4.7.0 ")
        assert server.server.state.per_address == {"192.0.2.51": 1, "127.0.0.1": 1}


def test_an_ipv6_client_varying_its_address_within_its_block_is_one_line_then_a_count(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """max_sessions_per_address counts an IPv6 client by its /84 block, and so does the
    log of clients it turned away: a client that names a new address of its block each
    time is one line naming the block and a count, not a line a connection."""
    caplog.set_level(logging.INFO, "smtpcore")
    with (
        running_smtp_server(
            adapter, Recorder(), proxy_protocol_from=["127.0.0.0/8"], max_sessions_per_address=1
        ) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as first,
    ):
        first.sendall(b"PROXY TCP6 2001:db8::1 ::1 40000 25\r\n")
        assert first.recv(1024).startswith(b"220 ")
        for n in range(2, 22):
            again = f"PROXY TCP6 2001:db8::{n:x} ::1 40000 25\r\n".encode()
            assert greeting_after(server.port, again).startswith(b"421 4.7.0 ")
        first.sendall(b"QUIT\r\n")
        assert first.recv(1024).startswith(b"221 ")
    assert [r.getMessage() for r in caplog.records if "too many" in r.getMessage()] == [
        "too many sessions from [2001:db8::2]:40000 in 2001:db8::/84: refused"
        " (max-sessions-per-address 1)",
        "too many sessions from 2001:db8::/84: 19 more refused"
        " (max-sessions-per-address 1) since the last line",  # written as the server stops
    ]


def test_an_ipv4_client_named_in_its_ipv6_mapped_form_is_the_same_client(adapter: str) -> None:
    """RFC 4291 §2.5.5.2: ``::ffff:192.0.2.7`` is 192.0.2.7. A header naming it so is
    counted, and shown to the handler (and the log, and fail2ban), as the IPv4 client:
    it was a second client, with a share of its own."""
    handler = Recorder()
    with (
        running_smtp_server(
            adapter, handler, proxy_protocol_from=["127.0.0.0/8"], max_sessions_per_address=1
        ) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as first,
    ):
        first.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n")
        assert first.recv(1024).startswith(b"220 ")
        mapped = b"PROXY TCP6 ::ffff:192.0.2.7 ::1 40001 25\r\n"
        assert greeting_after(server.port, mapped).startswith(b"421 4.7.0 ")
        first.sendall(b"QUIT\r\n")
        assert first.recv(1024).startswith(b"221 ")
        assert greeting_after(server.port, mapped).startswith(b"220 ")
    assert handler.peers == [("192.0.2.7", 40000), ("192.0.2.7", 40001)]


class TLSAfterHeader:
    """A TLS client that sends ``header`` and its ClientHello in one write, as HAProxy
    may relay them: the server must read the header and not an octet more."""

    def __init__(self, port: int, header: bytes, context: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        self.pending = b""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        self.sock.sendall(header + self.outgoing.read())
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._receive()
        self._flush()

    def _flush(self) -> None:
        if self.outgoing.pending:
            self.sock.sendall(self.outgoing.read())

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed")
        self.incoming.write(data)

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def read_line(self) -> bytes:
        while b"\r\n" not in self.pending:
            try:
                self.pending += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._receive()
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line + b"\r\n"

    def close(self) -> None:
        self.sock.close()


def test_the_header_comes_before_implicit_tls(
    adapter: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Port 465 behind a proxy: the header and the ClientHello in one write, the server
    reads the header to its last octet and hands the rest to the handshake."""
    tls: TLSFiles = make_tls_files(tmp_path_factory.mktemp("tls"))
    handler = Recorder()
    with running_smtp_server(
        adapter,
        handler,
        ssl_context=tls.server_context,
        tls_on_connect=True,
        proxy_protocol_from=["127.0.0.1"],
    ) as server:
        for header in (b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 465\r\n", V2):
            client = TLSAfterHeader(server.port, header, tls.client_context)
            try:
                assert client.read_line().startswith(b"220 ")
                client.send(b"QUIT\r\n")
                assert client.read_line().startswith(b"221 ")
            finally:
                client.close()
    assert handler.peers == [("192.0.2.7", 40000), ("203.0.113.9", 51000)]


def test_haproxy_in_front_of_implicit_tls(
    adapter: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tls = make_tls_files(tmp_path_factory.mktemp("tls"))
    handler = Recorder()
    with (
        running_smtp_server(
            adapter,
            handler,
            ssl_context=tls.server_context,
            tls_on_connect=True,
            proxy_protocol_from=["127.0.0.1"],
        ) as server,
        haproxy(server.port) as (v1_port, v2_port),
    ):
        clients = []
        for port in (v1_port, v2_port):
            with smtplib.SMTP_SSL(
                "127.0.0.1", port, context=tls.client_context, timeout=10
            ) as client:
                assert client.sock is not None
                clients.append(client.sock.getsockname())
                assert client.noop()[0] == 250
    assert {tuple(address) for address in clients} <= set(handler.peers)


def test_a_duration_refused_is_quoted_as_it_was_given_or_said_to_be_too_large() -> None:
    """The message never shows a value the check would take: a long value is cut with
    an ellipsis, and one past a float's range is called that, not 'no number'."""
    from smtpcore.server.config import ConfigError, ServerConfig

    with pytest.raises(ValueError, match="proxy_protocol_timeout is past the range"):
        checked_proxy_timeout(10**400)
    with pytest.raises(ValueError, match=r"not 'xxxxxxxxx.*\.\.\.$"):
        checked_proxy_timeout("x" * 100)  # type: ignore[arg-type]  # the check refuses it
    with pytest.raises(ConfigError, match=r"^--max-queue-age: is past the range"):
        ServerConfig(max_queue_age=10**400)
