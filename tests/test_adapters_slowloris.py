"""Slow clients cannot hold sessions forever, nor one address take every slot (issue 12).

A command line must be whole within the command timeout however it trickles
in; message content must keep a minimum rate (Postfix's
``smtpd_per_request_deadline`` and ``smtpd_min_data_rate``); and sessions are
limited per client address beside ``max_sessions``. Run on both adapters,
with short timeouts and generous bounds.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peers import RawSmtpSession, running_pop3_server, running_smtp_server
from smtpcore.asyncio import POP3Timeouts, Timeouts
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.maildrop import MaildirStore
from smtpcore.smtp import Rcpt, Reply

TRICKLE_FOR = 15.0
"""How long a trickling client keeps going before the test gives up on the server."""


class Accepting(Handler):
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope.content)
        return None


@contextlib.contextmanager
def connect(port: int, source: str = "127.0.0.1") -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with sock:
        yield sock


def trickle(sock: socket.socket, data: bytes, pause: float) -> bytes:
    """Send ``data`` a byte at a time, ``pause`` seconds apart, over and over, until the
    server answers or closes (its answer is returned) or :data:`TRICKLE_FOR` runs out."""
    sock.settimeout(pause)
    ends = time.monotonic() + TRICKLE_FOR
    while time.monotonic() < ends:
        for byte in data:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # closed by the server
                return b""
            try:
                return sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:  # closed with the byte just sent unread: RST
                return b""
    raise AssertionError(f"the server still reads a trickle after {TRICKLE_FOR} s")


def test_a_trickling_command_line_gets_421_within_the_command_timeout(adapter: str) -> None:
    timeouts = Timeouts(command=0.5)
    with (
        running_smtp_server(adapter, Accepting(), timeouts=timeouts) as server,
        connect(server.port) as sock,
    ):
        session = RawSmtpSession(sock)
        assert session.recv_reply().startswith(b"220")
        # A byte every 0.1 s: each read comes well within the timeout.
        started = time.monotonic()
        answer = trickle(sock, b"EHLO " + b"x" * 400, 0.1)
        assert answer.startswith(b"421 4.4.2"), answer
        assert time.monotonic() - started < 10
        server.wait_for_sessions(0)


@pytest.mark.parametrize("opening", ["DATA", "BDAT"])
def test_trickling_content_is_cut_off(adapter: str, opening: str) -> None:
    handler = Accepting()
    timeouts = Timeouts(data_block=0.5, min_data_rate=100)
    with (
        running_smtp_server(adapter, handler, timeouts=timeouts) as server,
        connect(server.port) as sock,
    ):
        session = RawSmtpSession(sock)
        assert session.recv_reply().startswith(b"220")
        session.command(b"EHLO client.test")
        if opening == "DATA":
            sock.sendall(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n")
            assert [session.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        else:
            sock.sendall(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\n")
            assert [session.recv_reply()[:3] for _ in range(2)] == [b"250", b"250"]
            sock.sendall(b"BDAT 100000 LAST\r\n")
        # 10 octets a second, each read well within data_block: under the rate.
        answer = trickle(sock, b"a trickled line\r\n", 0.1)
        assert answer.startswith(b"421 4.4.2"), answer
        server.wait_for_sessions(0)
    assert handler.messages == []


def test_content_at_the_minimum_rate_may_take_longer_than_data_block(adapter: str) -> None:
    handler = Accepting()
    timeouts = Timeouts(data_block=1.0, min_data_rate=100)
    with (
        running_smtp_server(adapter, handler, timeouts=timeouts) as server,
        connect(server.port) as sock,
    ):
        session = RawSmtpSession(sock)
        assert session.recv_reply().startswith(b"220")
        session.command(b"EHLO client.test")
        sock.sendall(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n")
        assert [session.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        # 200 octets every 0.1 s (2,000 a second) for 2.5 s in all.
        line = b"x" * 198 + b"\r\n"
        for _ in range(25):
            sock.sendall(line)
            time.sleep(0.1)
        assert session.command(b".").startswith(b"250")
        assert session.command(b"QUIT").startswith(b"221")
    assert handler.messages == [line * 25]


def test_one_address_cannot_take_every_session(adapter: str) -> None:
    with running_smtp_server(
        adapter, Accepting(), max_sessions=10, max_sessions_per_address=2
    ) as server:
        with connect(server.port) as a, connect(server.port) as b:
            for sock in (a, b):
                assert RawSmtpSession(sock).recv_reply().startswith(b"220")
            with connect(server.port) as c:
                refused = RawSmtpSession(c)
                assert refused.recv_reply().startswith(b"421 4.7.0")
                assert refused.recv_some() == b""
            # Another address is still served.
            with connect(server.port, source="127.0.0.2") as d:
                other = RawSmtpSession(d)
                assert other.recv_reply().startswith(b"220")
                assert other.command(b"QUIT").startswith(b"221")
        server.wait_for_sessions(0)
        with connect(server.port) as e:  # the address has its share back
            assert RawSmtpSession(e).recv_reply().startswith(b"220")


TURNED_AWAY = {
    "max_sessions": "max-sessions 1",
    "max_sessions_per_address": "max-sessions-per-address 1",
}


@pytest.mark.parametrize("limit", sorted(TURNED_AWAY))
@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_a_client_a_session_limit_turns_away_is_one_line_naming_the_limit(
    adapter: str,
    protocol: str,
    limit: str,
    store: MaildirStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client's 421 (POP3's ``-ERR [SYS/TEMP]``) was logged nowhere, at any level.
    Now the first refusal is a line in the words of a proxied client's, naming the
    limit; the client admitted, none. The refusals after it are counted, not a line
    each: a flood of connections cost a line each (2 MB of log in 5 s), and a slow
    log reader slowed the whole server to its pace; the count left when the server
    stops is written then."""
    caplog.set_level(logging.DEBUG, "smtpcore")
    limits = {"max_sessions": 10, "max_sessions_per_address": None, limit: 1}
    server_of: Any = running_smtp_server if protocol == "smtp" else running_pop3_server
    served = Accepting() if protocol == "smtp" else store
    with server_of(adapter, served, **limits) as server, connect(server.port) as held:
        assert held.recv(4096)[:1] in (b"2", b"+")
        ports = []
        for _ in range(3):
            with connect(server.port) as refused:
                ports.append(refused.getsockname()[1])
                assert refused.recv(4096)[:4] in (b"421 ", b"-ERR")
    lines = [r for r in caplog.records if "too many" in r.getMessage()]
    # The count still waiting is written when the server stops, not lost with it.
    assert [r.getMessage() for r in lines] == [
        f"too many sessions from [127.0.0.1]:{ports[0]}: refused ({TURNED_AWAY[limit]})",
        f"too many sessions from [127.0.0.1]: 2 more refused ({TURNED_AWAY[limit]})"
        " since the last line",
    ]
    assert {r.levelno for r in lines} == {logging.INFO}


def test_max_sessions_per_address_must_be_positive() -> None:
    from smtpcore.asyncio import SMTPServer

    with pytest.raises(ValueError, match="max_sessions_per_address"):
        SMTPServer(Handler(), max_sessions_per_address=0)


class _Addressed:
    """A stand-in transport: only the addresses a session reads when it is built."""

    def __init__(self, host: str) -> None:
        self.peer_address = (host, 40000)
        self.local_address = ("2001:db8::25", 25)


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_an_ipv6_client_is_counted_by_its_network(protocol: str, tmp_path: Path) -> None:
    """Postfix 3.8's ``smtpd_client_ipv6_prefix_length`` (84): a host with a /64 has
    2**64 addresses, each of which would have a share of its own; an IPv4-mapped
    address is the IPv4 client's. ``client_ipv6_prefix_length=128`` counts each
    address."""
    from smtpcore._driver._pop3_server import POP3ServerOptions, POP3ServerState
    from smtpcore._driver._smtp_server import ServerOptions, ServerState

    def registry(**options: Any) -> Any:
        if protocol == "smtp":
            return ServerState(Handler(), ServerOptions(hostname="mx.test", **options))
        store = MaildirStore(tmp_path, {})
        return POP3ServerState(store, POP3ServerOptions(hostname="pop.test", **options))

    def admitted(state: Any, host: str) -> bool:
        return not isinstance(state.admit(_Addressed(host)), bytes)

    state = registry(max_sessions_per_address=2)
    assert admitted(state, "2001:db8:0:1::1") and admitted(state, "2001:db8:0:1:0:fff:ffff:2")
    assert not admitted(state, "2001:db8:0:1:0:abc::3")  # the same /84
    assert admitted(state, "2001:db8:0:1:0:1000::3")  # the next /84
    assert admitted(state, "2001:db8:0:2::1")  # another /64
    assert admitted(state, "192.0.2.1") and admitted(state, "::ffff:192.0.2.1")
    assert not admitted(state, "192.0.2.1")
    state = registry(max_sessions_per_address=2, client_ipv6_prefix_length=128)
    assert all(admitted(state, f"2001:db8:0:1::{n}") for n in range(1, 6))
    with pytest.raises(ValueError, match="client_ipv6_prefix_length"):
        registry(client_ipv6_prefix_length=129)


def test_an_ipv4_client_through_nat64_is_counted_by_its_ipv4_address() -> None:
    """Each address of the NAT64 prefix (RFC 6052 §2.1) is another IPv4 client: all of
    ``64:ff9b::/96`` lies in one /84, where every IPv4 client of a server behind a
    translator would share one client's slots."""
    from smtpcore._driver._smtp_server import ServerOptions, ServerState

    state = ServerState(Handler(), ServerOptions(hostname="mx.test", max_sessions_per_address=1))

    def admitted(host: str) -> bool:
        stand_in: Any = _Addressed(host)  # a transport's addresses alone
        return not isinstance(state.admit(stand_in), bytes)

    assert admitted("64:ff9b::c000:201")  # 192.0.2.1
    assert admitted("64:ff9b::cb00:7101")  # 203.0.113.1: another client
    assert not admitted("192.0.2.1")  # the first one's share, taken
    assert state.per_address == {"192.0.2.1": 1, "203.0.113.1": 1}


def test_a_proxied_ipv6_client_is_counted_by_its_network() -> None:
    """The client a PROXY header names is counted by the same rule (``readdress``)."""
    from smtpcore._driver._proxied import networks
    from smtpcore._driver._smtp_server import ServerOptions, ServerState

    options = ServerOptions(
        hostname="mx.test", max_sessions_per_address=1, proxy_protocol_from=["127.0.0.1"]
    )
    state = ServerState(Handler(), options)
    stand_in: Any = _Addressed("127.0.0.1")  # a transport's addresses alone
    first, second = state.admit(stand_in), state.admit(stand_in)
    assert not isinstance(first, bytes) and not isinstance(second, bytes)
    assert options.proxy_networks == networks(["127.0.0.1"])
    assert state.readdress(first, ("2001:db8::1", 1))
    assert not state.readdress(second, ("2001:db8::2", 1))
    assert state.readdress(second, ("2001:db8:1::2", 1))


# -- POP3 -------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    (tmp_path / "mail" / "alice").mkdir(parents=True)
    return MaildirStore(tmp_path / "mail", {"alice": "wonderland"})


def test_pop3_a_trickling_command_line_is_logged_out(adapter: str, store: MaildirStore) -> None:
    timeouts = POP3Timeouts(autologout=0.5)
    with (
        running_pop3_server(adapter, store, timeouts=timeouts) as server,
        connect(server.port) as sock,
    ):
        assert sock.recv(4096).startswith(b"+OK")
        started = time.monotonic()
        # RFC 1939 §3: the autologout timer closes without a response.
        assert trickle(sock, b"USER " + b"x" * 200, 0.1) == b""
        assert time.monotonic() - started < 10
        server.wait_for_sessions(0)


def test_pop3_one_address_cannot_take_every_session(adapter: str, store: MaildirStore) -> None:
    with (
        running_pop3_server(adapter, store, max_sessions=10, max_sessions_per_address=1) as server,
        connect(server.port) as a,
    ):
        assert a.recv(4096).startswith(b"+OK")
        with connect(server.port) as b:
            assert b.recv(4096).startswith(b"-ERR [SYS/TEMP]")
            assert b.recv(4096) == b""
        with connect(server.port, source="127.0.0.2") as c:
            assert c.recv(4096).startswith(b"+OK")
