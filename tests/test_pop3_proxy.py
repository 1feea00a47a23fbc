"""The PROXY protocol option of the POP3 server adapters (proxy_protocol_from), as
Dovecot's haproxy_trusted_networks: the client's address comes from a trusted proxy's
header, for the store's hooks, the log, the loopback rule of require_tls and the count
per address; anything else is closed. HAProxy in front with send-proxy and
send-proxy-v2."""

from __future__ import annotations

import contextlib
import importlib
import logging
import poplib
import re
import socket
import struct
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from haproxy_peer import haproxy, haproxy_tls_offload
from peers import TLSFiles, running_pop3_server, write_maildir
from smtpcore.asyncio import POP3Timeouts
from smtpcore.maildrop import MaildirStore, Maildrop, POP3Session
from test_adapters_proxy import NAMES_NO_CLIENT, OFFLOADED, TLSAfterHeader, v2_unix

PASSWORDS = {"alice": "wonderland"}
V1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 110\r\n"
V2 = (
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
    + socket.inet_aton("203.0.113.9")
    + socket.inet_aton("127.0.0.1")
    + struct.pack("!HH", 51000, 110)
)


class Recorder(MaildirStore):
    """A Maildir store that notes whom each login and each opened maildrop came from."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, PASSWORDS)
        self.peers: list[tuple[str, int] | None] = []
        self.locals: list[tuple[str, int] | None] = []
        self.addresses: list[str | None] = []

    async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
        self.peers.append(session.peer)
        self.locals.append(session.local)
        self.addresses.append(session.client_address)
        return await super().check_password(session, user, password)

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        assert session.peer == self.peers[-1]
        return await super().open_maildrop(session, user)


@pytest.fixture
def store(tmp_path: Path) -> Recorder:
    write_maildir(tmp_path / "mail" / "alice", [b"Subject: one\r\n\r\nhello\r\n"])
    return Recorder(tmp_path / "mail")


@contextlib.contextmanager
def connect(port: int, header: bytes = b"") -> Iterator[tuple[socket.socket, BinaryIO]]:
    """A connection to ``port`` that has sent ``header``, and its lines."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(header)
        yield sock, lines


def read_line(lines: BinaryIO) -> bytes:
    """One line from the server, or b"" if it closed (or reset the connection for the
    bytes it left unread)."""
    try:
        return lines.readline()
    except ConnectionResetError:
        return b""


def login_after(port: int, header: bytes) -> bytes:
    """Send ``header``, then log in as alice and quit: the greeting, or b"" if the
    server closed instead of greeting."""
    with connect(port, header) as (sock, lines):
        greeting = read_line(lines)
        if greeting.startswith(b"+OK"):
            sock.sendall(b"USER alice\r\nPASS wonderland\r\nQUIT\r\n")
            assert read_line(lines).startswith(b"+OK")
            assert read_line(lines).startswith(b"+OK Logged in")
            assert read_line(lines).startswith(b"+OK")
        return greeting


def test_the_store_sees_the_client_the_header_names(adapter: str, store: Recorder) -> None:
    with running_pop3_server(adapter, store, proxy_protocol_from=["127.0.0.0/8"]) as server:
        assert login_after(server.port, V1).startswith(b"+OK")
        assert login_after(server.port, V2).startswith(b"+OK")
        assert login_after(server.port, b"PROXY UNKNOWN\r\n").startswith(b"+OK")
    assert store.peers[:2] == [("192.0.2.7", 40000), ("203.0.113.9", 51000)]
    assert store.locals[:2] == [("127.0.0.1", 110), ("127.0.0.1", 110)]
    own = store.peers[2]  # UNKNOWN names nobody: the connection's own address stands
    # (its port is the kernel's pick, which may be any, 40000 included)
    assert own is not None and own[0] == "127.0.0.1"
    # ... but the client is unknown: judged by client_address, never the proxy's.
    assert store.addresses == ["192.0.2.7", "203.0.113.9", None]


@pytest.mark.parametrize(
    "header",
    [
        b"USER alice\r\n",  # no header at all
        b"PROXY TCP4 1.2.3.4\r\n",  # malformed
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 99999\r\n",  # not a port
        b"PROXY TCP4 " + b"1" * 120 + b"\r\n",  # longer than a v1 line may be
        V2[:13] + b"\x00" + V2[14:],  # a v2 block of another version
    ],
)
def test_a_bad_header_closes_the_connection(adapter: str, store: Recorder, header: bytes) -> None:
    with running_pop3_server(adapter, store, proxy_protocol_from=["127.0.0.1"]) as server:
        assert login_after(server.port, header) == b""
        server.wait_for_sessions(0)
    assert store.peers == []


def test_a_header_cut_short_closes_the_connection(adapter: str, store: Recorder) -> None:
    with (
        running_pop3_server(adapter, store, proxy_protocol_from=["127.0.0.1"]) as server,
        connect(server.port, b"PROXY TCP4 192.0.2.7 ") as (sock, lines),
    ):
        sock.shutdown(socket.SHUT_WR)
        assert read_line(lines) == b""


def test_a_header_trickled_by_a_trusted_proxy_ends_at_the_proxy_timeout(
    adapter: str, store: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a header and then nothing: closed once ``proxy_protocol_timeout`` is over
    (Dovecot's ``haproxy_timeout``), not at the greeting timeout, set here far beyond
    the client's own wait."""
    caplog.set_level(logging.INFO, "smtpcore.pop3.server")
    with (
        running_pop3_server(
            adapter,
            store,
            proxy_protocol_from=["127.0.0.1"],
            proxy_protocol_timeout=0.2,
            timeouts=POP3Timeouts.uniform(600),
        ) as server,
        connect(server.port, V2[:20]) as (_, lines),
    ):
        assert read_line(lines) == b""
    assert re.search(r"bad PROXY header from \[127\.0\.0\.1\]:\d+: TimeoutError", caplog.text)


def test_a_connection_not_from_a_trusted_proxy_is_closed(
    adapter: str, store: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.pop3.server")
    with running_pop3_server(adapter, store, proxy_protocol_from=["10.0.0.0/8"]) as server:
        assert login_after(server.port, V1) == b""
        server.wait_for_sessions(0)
    assert store.peers == []
    assert "not a trusted proxy: closed" in caplog.text


def test_sessions_are_counted_by_the_client_the_header_names(
    adapter: str, store: Recorder
) -> None:
    """Behind a proxy, max_sessions_per_address is each client's share, not the proxy's:
    two clients through one proxy are both served, and a second session for a client
    that has its share is refused with -ERR [SYS/TEMP] once its header is read."""
    with (
        running_pop3_server(
            adapter, store, proxy_protocol_from=["127.0.0.0/8"], max_sessions_per_address=1
        ) as server,
        connect(server.port, V1) as (first, first_lines),
        connect(server.port, V2) as (second, second_lines),  # from 203.0.113.9
    ):
        assert read_line(first_lines).startswith(b"+OK")
        assert read_line(second_lines).startswith(b"+OK")
        again = b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 110\r\n"
        assert login_after(server.port, again).startswith(b"-ERR [SYS/TEMP] ")
        for sock, lines in ((first, first_lines), (second, second_lines)):
            sock.sendall(b"QUIT\r\n")
            assert read_line(lines).startswith(b"+OK")
        server.wait_for_sessions(0)
        # Its first session over, the client may come again.
        assert login_after(server.port, again).startswith(b"+OK")
    assert store.peers == [("192.0.2.7", 40001)]


def test_the_loopback_exemption_is_the_named_clients(
    adapter: str, store: Recorder, tls: TLSFiles
) -> None:
    """require_tls's default spares a client on loopback: behind a proxy on loopback it
    is the client the header names that must be on loopback, not the proxy."""
    with running_pop3_server(
        adapter, store, ssl_context=tls.server_context, proxy_protocol_from=["127.0.0.1"]
    ) as server:
        with connect(server.port, V1) as (sock, lines):
            assert read_line(lines).startswith(b"+OK")
            sock.sendall(b"USER alice\r\n")
            assert read_line(lines).startswith(b"-ERR")  # TLS first, from 192.0.2.7
        local = b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 110\r\n"
        assert login_after(server.port, local).startswith(b"+OK")
    assert store.peers == [("127.0.0.1", 40000)]


def test_a_client_its_proxy_says_spoke_tls_may_log_in(
    adapter: str, store: Recorder, tls: TLSFiles
) -> None:
    """HAProxy's send-proxy-v2-ssl: the client's TLS ended at the proxy, and the header
    says so (PP2_CLIENT_SSL). As Dovecot does, the session counts as under TLS:
    require_tls's default lets USER/PASS through, and STLS is not offered again."""
    with (
        running_pop3_server(
            adapter, store, ssl_context=tls.server_context, proxy_protocol_from=["127.0.0.1"]
        ) as server,
        connect(server.port, OFFLOADED) as (sock, lines),
    ):
        assert read_line(lines).startswith(b"+OK")
        sock.sendall(b"CAPA\r\n")
        capabilities = []
        while (line := read_line(lines)) not in (b".\r\n", b""):
            capabilities.append(line)
        assert b"STLS\r\n" not in capabilities and b"USER\r\n" in capabilities
        sock.sendall(b"STLS\r\nUSER alice\r\nPASS wonderland\r\nQUIT\r\n")
        assert read_line(lines).startswith(b"-ERR")  # STLS: TLS is on already
        assert read_line(lines).startswith(b"+OK")
        assert read_line(lines).startswith(b"+OK Logged in")
        assert read_line(lines).startswith(b"+OK")
    assert store.peers == [("203.0.113.9", 51000)]


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY UNKNOWN\r\n",  # what HAProxy sends for a client on a Unix socket
        b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00",  # v2 LOCAL
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x00\x00\x00",  # v2 PROXY, unspecified family
        v2_unix(b"127.0.0.1"),  # a Unix socket whose path spells loopback
    ],
    ids=["v1 UNKNOWN", "v2 LOCAL", "v2 UNSPEC", "v2 UNIX"],
)
def test_a_client_the_header_does_not_name_is_no_loopback_client(
    adapter: str, store: Recorder, tls: TLSFiles, header: bytes
) -> None:
    """A header that names no client leaves the proxy's loopback address as the peer,
    but not the loopback exemption of require_tls's default: the client is unknown."""
    with (
        running_pop3_server(
            adapter, store, ssl_context=tls.server_context, proxy_protocol_from=["127.0.0.1"]
        ) as server,
        connect(server.port, header) as (sock, lines),
    ):
        assert read_line(lines).startswith(b"+OK")
        sock.sendall(b"USER alice\r\nPASS wonderland\r\nQUIT\r\n")
        assert read_line(lines).startswith(b"-ERR [AUTH]")  # TLS first
        assert read_line(lines).startswith(b"-ERR")
        assert read_line(lines).startswith(b"+OK")
    assert store.peers == []


def test_the_log_names_the_client(
    adapter: str, store: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.pop3.server")
    with (
        running_pop3_server(adapter, store, proxy_protocol_from=["127.0.0.1"]) as server,
        connect(server.port, V1) as (sock, lines),
    ):
        read_line(lines)
        sock.sendall(b"USER alice\r\nPASS wrong\r\nQUIT\r\n")
        read_line(lines)
        assert read_line(lines).startswith(b"-ERR [AUTH]")
    assert "pop3: reject: PASS from [192.0.2.7]:40000" in caplog.text


def test_a_unix_client_is_neither_logged_nor_counted_as_the_address_its_path_spells(
    adapter: str, store: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A Unix socket named ``203.0.113.5`` is no client of that address: its failed
    login is not logged as from ``[203.0.113.5]`` (what fail2ban would ban), and its
    session takes nothing of that address's share."""
    caplog.set_level(logging.INFO, "smtpcore")
    unix = v2_unix(b"203.0.113.5", b"/run/haproxy/pop3.sock")
    named = b"PROXY TCP4 203.0.113.5 127.0.0.1 40000 110\r\n"
    with (
        running_pop3_server(
            adapter, store, proxy_protocol_from=["127.0.0.1"], max_sessions_per_address=1
        ) as server,
        connect(server.port, unix) as (sock, lines),
    ):
        assert read_line(lines).startswith(b"+OK")
        sock.sendall(b"USER alice\r\nPASS wrong\r\n")
        assert read_line(lines).startswith(b"+OK")
        assert read_line(lines).startswith(b"-ERR [AUTH]")
        assert login_after(server.port, named).startswith(b"+OK")  # its share is whole
        sock.sendall(b"QUIT\r\n")
        assert read_line(lines).startswith(b"+OK")
    assert not re.search(r"reject: PASS from \[203\.0\.113\.5\]", caplog.text)
    assert "unix:203.0.113.5 via proxy [127.0.0.1]:" in caplog.text


@pytest.mark.parametrize(
    "header",
    [v2_unix(b"/run/a.sock", b"/run/haproxy/pop3.sock"), *NAMES_NO_CLIENT.values()],
    ids=["v2 UNIX path", *NAMES_NO_CLIENT.keys()],
)
def test_clients_a_header_names_by_no_address_take_no_share_of_their_proxys(
    adapter: str, store: Recorder, header: bytes
) -> None:
    """A socket's path is no address, nor a header naming no client (``UNKNOWN``,
    ``LOCAL``): such clients through one proxy are counted under none, and never fill
    the proxy's share of ``max_sessions_per_address`` against the next of them or the
    proxy's own ``LOCAL`` health check."""
    local = NAMES_NO_CLIENT["v2 LOCAL"]
    with (
        running_pop3_server(
            adapter, store, proxy_protocol_from=["127.0.0.1"], max_sessions_per_address=1
        ) as server,
        connect(server.port, header) as first,
        connect(server.port, header) as second,
    ):
        for _, lines in (first, second):
            assert read_line(lines).startswith(b"+OK")
        assert login_after(server.port, local).startswith(b"+OK")
        for sock, lines in (first, second):
            sock.sendall(b"QUIT\r\n")
            assert read_line(lines).startswith(b"+OK")


def test_the_header_comes_before_implicit_tls(
    adapter: str, store: Recorder, tls: TLSFiles
) -> None:
    with running_pop3_server(
        adapter,
        store,
        ssl_context=tls.server_context,
        tls_on_connect=True,
        proxy_protocol_from=["127.0.0.1"],
    ) as server:
        for header in (V1, V2):
            client = TLSAfterHeader(server.port, header, tls.client_context)
            try:
                assert client.read_line().startswith(b"+OK")
                client.send(b"USER alice\r\nPASS wonderland\r\nQUIT\r\n")
                assert [client.read_line()[:3] for _ in range(3)] == [b"+OK"] * 3
            finally:
                client.close()
    assert store.peers == [("192.0.2.7", 40000), ("203.0.113.9", 51000)]


@pytest.mark.parametrize("networks", [["not-a-network"], "127.0.0.1"])
def test_a_bad_network_is_refused_at_once(adapter: str, store: Recorder, networks: object) -> None:
    server_class = importlib.import_module(f"smtpcore.{adapter}").POP3Server
    with pytest.raises(ValueError, match="proxy_protocol_from: "):
        server_class(store, proxy_protocol_from=networks)


def test_haproxy_in_front(adapter: str, store: Recorder) -> None:
    log_in_through_haproxy(adapter, store, poplib.POP3)


def test_haproxy_in_front_of_implicit_tls(adapter: str, store: Recorder, tls: TLSFiles) -> None:
    """Port 995 behind HAProxy: the header in plaintext, then the client's handshake,
    relayed as HAProxy relays them (often in one segment)."""
    log_in_through_haproxy(
        adapter,
        store,
        partial(poplib.POP3_SSL, context=tls.client_context),
        ssl_context=tls.server_context,
        tls_on_connect=True,
    )


def log_in_through_haproxy(
    adapter: str, store: Recorder, client_class: Callable[..., poplib.POP3], **options: Any
) -> None:
    """A POP3 session through HAProxy's v1 and v2 ports; the server sees each client."""
    with (
        running_pop3_server(
            adapter, store, proxy_protocol_from=["127.0.0.1"], **options
        ) as server,
        haproxy(server.port) as (v1_port, v2_port),
    ):
        clients = []
        for port in (v1_port, v2_port):
            client = client_class("127.0.0.1", port, timeout=10)
            clients.append(client.sock.getsockname())
            client.user("alice")
            client.pass_("wonderland")
            assert client.stat()[0] == 1
            client.quit()
    assert [tuple(address) for address in clients] == store.peers


def test_haproxy_ending_the_clients_tls(adapter: str, store: Recorder, tls: TLSFiles) -> None:
    """HAProxy with ``bind ... ssl crt`` and ``send-proxy-v2-ssl`` in front of a server
    that requires TLS of clients off loopback: poplib speaks TLS to HAProxy (POP3S),
    and the server, told so by the header, lets it log in with USER/PASS."""
    with (
        running_pop3_server(
            adapter,
            store,
            ssl_context=tls.server_context,
            require_tls=True,
            proxy_protocol_from=["127.0.0.1"],
        ) as server,
        haproxy_tls_offload(server.port, tls.cert_file, tls.key_file) as port,
    ):
        client = poplib.POP3_SSL("127.0.0.1", port, context=tls.client_context, timeout=10)
        try:
            assert "STLS" not in client.capa()
            client.user("alice")
            assert client.pass_("wonderland").startswith(b"+OK")
            assert client.stat()[0] == 1
        finally:
            client.quit()
    assert len(store.peers) == 1
