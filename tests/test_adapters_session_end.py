"""How a server session ends: its last replies reach the client whole, however much
the transport takes at once, and the connection closes (issue 17, round 3).

The driver writes the last replies (after QUIT, or a 421) with the transport's
``send_nowait`` where there is one, and enters a deadline only for what it did
not take; a transport that takes a few bytes at a time, or has no such method,
still gets every byte, in order, before its close.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

import smtpcore.asyncio as smtp_asyncio
import smtpcore.trio as smtp_trio
from smtpcore._driver._transport import FastPaths
from smtpcore.handler import Handler, Session, TLSInfo
from smtpcore.smtp import Event, Noop, Reply, ServerConnection


class ScriptedTransport:
    """A transport that gives the client's bytes in one piece and records what the
    server writes; it has no ``send_nowait``."""

    def __init__(self, client: bytes) -> None:
        self.client = client
        self.written: list[bytes] = []
        self.closed = False

    async def receive_some(self, max_bytes: int) -> bytes:
        data, self.client = self.client[:max_bytes], self.client[max_bytes:]
        return data

    async def send_all(self, data: bytes) -> None:
        self.written.append(data)

    async def start_tls(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        raise ConnectionResetError("no TLS here")

    async def aclose(self) -> None:
        self.closed = True

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return ("192.0.2.1", 40000)

    @property
    def local_address(self) -> tuple[str, int] | None:
        return ("192.0.2.25", 25)

    @property
    def tls(self) -> TLSInfo | None:
        return None


class TakingSome(ScriptedTransport, FastPaths):
    """One whose ``send_nowait`` takes at most ``takes`` bytes at a time: marked as one
    of the library's own transports, whose fast paths the driver takes."""

    def __init__(self, client: bytes, takes: int) -> None:
        super().__init__(client)
        self.takes = takes

    def send_nowait(self, data: bytes) -> int:
        self.written.append(data[: self.takes])
        return min(len(data), self.takes)


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
@pytest.mark.parametrize("takes", [3, 1000, None])
def test_the_last_reply_reaches_the_client_whole_before_the_close(
    adapter: str, takes: int | None
) -> None:
    client = b"EHLO client.test\r\nQUIT\r\n"
    transport = ScriptedTransport(client) if takes is None else TakingSome(client, takes)

    _serve(adapter, transport)
    lines = b"".join(transport.written).split(b"\r\n")
    assert lines[0].startswith(b"220 mx.test")
    assert lines[-2] == b"221 2.0.0 mx.test Bye" and lines[-1] == b""
    assert transport.closed


def _serve(adapter: str, transport: ScriptedTransport, **options: object) -> None:
    """Serve one SMTP session over ``transport`` on ``adapter`` (asyncio or trio)."""

    async def asyncio_body() -> None:
        server = smtp_asyncio.SMTPServer(Handler(), hostname="mx.test", **options)  # type: ignore[arg-type]
        await server.serve_transport(transport)

    async def trio_body() -> None:
        server = smtp_trio.SMTPServer(Handler(), hostname="mx.test", **options)  # type: ignore[arg-type]
        await server.serve_transport(transport)

    if adapter == "asyncio":
        asyncio.run(asyncio_body())
    else:
        trio.run(trio_body)


def _session(adapter: str, client: bytes, **options: object) -> list[bytes]:
    """The lines a server session over a scripted transport writes to ``client``."""
    transport = ScriptedTransport(client)
    _serve(adapter, transport, **options)
    return b"".join(transport.written).split(b"\r\n")


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_server_without_auth_refuses_auth_and_goes_on(adapter: str) -> None:
    lines = _session(adapter, b"EHLO client.test\r\nAUTH PLAIN AGEAYg==\r\nNOOP\r\nQUIT\r\n")
    assert not any(b"AUTH" in line for line in lines)
    assert lines[-4].startswith(b"500 5.5.2")  # AUTH is not a command here
    assert lines[-3].startswith(b"250") and lines[-2].startswith(b"221")


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_machine_offering_auth_the_server_has_no_mechanism_for_is_refused(
    adapter: str,
) -> None:
    """It answered every AUTH 504 once advertised; now its session is refused with
    421 (see test_adapters_connection_factory.py)."""

    def machine(options: smtp_asyncio.ServerOptions) -> ServerConnection:
        return ServerConnection(
            options.hostname, auth_mechanisms=["PLAIN"], auth_require_tls=False
        )

    lines = _session(adapter, b"EHLO client.test\r\nQUIT\r\n", connection_factory=machine)
    assert lines == [b"421 mx.test Service not available", b""]


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_failed_session_still_writes_the_replies_it_made(adapter: str) -> None:
    """A session that fails (a bug, here the machine's) wrote nothing of what was due:
    the replies to the commands pipelined before the failure were dropped."""

    class Failing(ServerConnection):
        def send(self, event: Event) -> bytes:
            if isinstance(self.pending, Noop):
                raise RuntimeError("a bug")
            return super().send(event)

    def machine(options: smtp_asyncio.ServerOptions) -> ServerConnection:
        return Failing(options.hostname)

    lines = _session(
        adapter,
        b"EHLO client.test\r\nMAIL FROM:<a@b.example>\r\nNOOP\r\nQUIT\r\n",
        connection_factory=machine,
    )
    assert lines[-2:] == [b"250 2.1.0 OK", b""]


def test_trio_tcp_sessions_have_nodelay_without_setting_it_again() -> None:
    """The trio transport leaves TCP_NODELAY to ``trio.SocketStream``, which sets it:
    a reply written in two pieces must not wait for a delayed ACK."""

    async def body() -> tuple[int, int]:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
        smtp_trio.TrioTransport(server)
        flags = (
            server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        )
        await client.aclose()
        await server.aclose()
        await listeners[0].aclose()
        return flags

    assert all(trio.run(body))


class GivingNone(ScriptedTransport):
    """One whose read breaks the contract: ``None`` rather than bytes."""

    async def receive_some(self, max_bytes: int) -> bytes:
        return None  # type: ignore[return-value]  # the broken contract under test


@pytest.mark.timeout(30)
@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_read_that_gives_none_fails_the_session_rather_than_reading_for_ever(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``None`` after a wait means "read again" from the raw socket's wait; from a
    transport's read it is a broken contract, which fails the session (logged) and
    closes the transport, as bytes the machine refused did before, rather than
    asking again for ever without yielding to the event loop."""
    transport = GivingNone(b"")

    _serve(adapter, transport)
    assert transport.closed
    assert b"".join(transport.written).startswith(b"220 mx.test")
    messages = [record.getMessage() for record in caplog.records]
    assert any("session with" in text and "failed" in text for text in messages)


class FailingClose(ScriptedTransport):
    """One whose close fails (a transport of the application's own, with a bug)."""

    async def aclose(self) -> None:
        self.closed = True
        raise ValueError("a bug in the transport's close")


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_close_that_fails_is_logged_and_ends_that_session_alone(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``serve_transport`` returns on both adapters, the failure logged as the
    session's (on asyncio it reached the caller, unlogged), and ``handle_close`` is
    still called."""
    closed: list[bool] = []

    class Closing(Handler):
        async def handle_close(self, session: Session) -> None:
            closed.append(True)

    transport = FailingClose(b"EHLO client.test\r\nQUIT\r\n")

    async def asyncio_body() -> None:
        await smtp_asyncio.SMTPServer(Closing(), hostname="mx.test").serve_transport(transport)

    async def trio_body() -> None:
        await smtp_trio.SMTPServer(Closing(), hostname="mx.test").serve_transport(transport)

    if adapter == "asyncio":
        asyncio.run(asyncio_body())
    else:
        trio.run(trio_body)
    assert transport.closed and closed == [True]
    assert b"".join(transport.written).endswith(b"221 2.0.0 mx.test Bye\r\n")
    assert "a bug in the transport's close" in caplog.text
    assert any(
        "session with" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records
    )


class LostAsItCloses(ScriptedTransport):
    """One whose close finds the connection gone (a flush that fails)."""

    async def aclose(self) -> None:
        self.closed = True
        raise BrokenPipeError("the client is gone")


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_connection_lost_as_it_closes_is_logged_as_a_loss_not_a_failure(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``OSError`` from the close of a session that went well is the connection
    lost, as a client's reset is: one INFO line, no traceback (it was logged at
    ERROR, with one, as the session's failure)."""
    caplog.set_level(logging.INFO, logger="smtpcore")
    transport = LostAsItCloses(b"EHLO client.test\r\nQUIT\r\n")
    _serve(adapter, transport)
    assert transport.closed
    assert b"".join(transport.written).endswith(b"221 2.0.0 mx.test Bye\r\n")
    lost = [r for r in caplog.records if "the client is gone" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.INFO and lost[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
"""A context with no certificate: the scripted transport's handshake fails anyway."""


class CountingConnects(Handler):
    """Counts ``handle_connect`` and ``handle_close``, as a handler that pairs them does
    (a session counter, a resource opened for the session and closed after it); the
    first ``handle_connect`` may first serve another session (``inside``), so that the
    server is busy with this one while the other arrives."""

    def __init__(self) -> None:
        self.connects = 0
        self.closes = 0
        self.inside: Callable[[], Awaitable[None]] | None = None

    async def handle_connect(self, session: Session) -> Reply | None:
        self.connects += 1
        inside, self.inside = self.inside, None
        if inside is not None:
            await inside()
        return await super().handle_connect(session)

    async def handle_close(self, session: Session) -> None:
        self.closes += 1


PROXIED = b"PROXY TCP4 198.51.100.7 192.0.2.25 40000 25\r\n"
"""A PROXY v1 header naming the client 198.51.100.7."""


def _told(
    adapter: str, client: bytes, second_client: bytes | None, **options: object
) -> tuple[int, int]:
    """``handle_connect`` and ``handle_close`` calls over a session of ``client`` (and,
    from within its ``handle_connect``, one of ``second_client``)."""
    handler = CountingConnects()
    module: Any = smtp_asyncio if adapter == "asyncio" else smtp_trio

    async def body() -> None:
        server = module.SMTPServer(handler, hostname="mx.test", **options)
        if second_client is not None:
            handler.inside = lambda: server.serve_transport(ScriptedTransport(second_client))
        await server.serve_transport(ScriptedTransport(client))

    if adapter == "asyncio":
        asyncio.run(body())
    else:
        trio.run(body)
    return handler.connects, handler.closes


def _disagreeing(options: smtp_asyncio.ServerOptions) -> ServerConnection:
    return ServerConnection(options.hostname, max_recipients=5)


def _raising(options: smtp_asyncio.ServerOptions) -> ServerConnection:
    raise RuntimeError("the factory's own bug")


@pytest.mark.parametrize(
    ("client", "second_client", "options", "told"),
    [
        pytest.param(b"QUIT\r\n", None, {}, (1, 1), id="served"),
        pytest.param(b"", None, {}, (1, 1), id="peer-closes-before-the-greeting"),
        pytest.param(
            b"QUIT\r\n", None, {"connection_factory": _disagreeing}, (0, 0), id="factory-refused"
        ),
        pytest.param(
            b"QUIT\r\n", None, {"connection_factory": _raising}, (0, 0), id="factory-raises"
        ),
        pytest.param(
            b"QUIT\r\n", None, {"proxy_protocol_from": ["10.0.0.0/8"]}, (0, 0), id="no-proxy"
        ),
        pytest.param(
            b"QUIT\r\n", None, {"proxy_protocol_from": ["192.0.2.1"]}, (0, 0), id="bad-header"
        ),
        pytest.param(
            b"QUIT\r\n",
            None,
            {"ssl_context": CONTEXT, "tls_on_connect": True},
            (0, 0),
            id="tls-handshake-fails",
        ),
        pytest.param(b"QUIT\r\n", b"QUIT\r\n", {"max_sessions": 1}, (1, 1), id="server-full"),
        pytest.param(
            b"QUIT\r\n",
            b"QUIT\r\n",
            {"max_sessions_per_address": 1},
            (1, 1),
            id="address-over-its-share",
        ),
        pytest.param(
            PROXIED + b"QUIT\r\n",
            PROXIED + b"QUIT\r\n",
            {"proxy_protocol_from": ["192.0.2.1"], "max_sessions_per_address": 1},
            (1, 1),
            id="proxied-client-over-its-share",
        ),
    ],
)
@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_handle_close_follows_handle_connect_and_nothing_else(
    adapter: str,
    client: bytes,
    second_client: bytes | None,
    options: dict[str, object],
    told: tuple[int, int],
) -> None:
    """A session the handler was never told of (refused before ``handle_connect``: a
    factory's machine the server refuses, a connection from no trusted proxy or with
    a bad header, a failed TLS handshake, no room) is closed without ``handle_close``,
    which followed the factory's refusal, the PROXY and the TLS ones: a handler that
    pairs the two (aiosmtpd's counters, a resource opened in one and closed in the
    other) saw closes of sessions it never opened."""
    assert _told(adapter, client, second_client, **options) == told


class PairingHandler(CountingConnects):
    """Counts both hooks, and answers ``handle_connect`` for a client by its address as
    ``answers`` says: a reply, or an exception to raise."""

    def __init__(self, answers: dict[str, Reply | Exception]) -> None:
        super().__init__()
        self.answers = answers

    async def handle_connect(self, session: Session) -> Reply | None:
        answer = self.answers.get(session.peer[0] if session.peer else "")
        if isinstance(answer, Exception):
            self.connects += 1
            raise answer
        if answer is not None:
            self.connects += 1
            return answer
        return await super().handle_connect(session)


FORWARDERS = ["192.0.2.0/24", "198.51.100.0/24"]
"""``xclient_from``: the scripted client (192.0.2.1) and the clients it names."""


def _xclient(addr: bytes) -> bytes:
    return b"EHLO c.test\r\nXCLIENT ADDR=" + addr + b" NAME=x.test\r\n"


@pytest.mark.parametrize(
    ("client", "told"),
    [
        pytest.param(b"EHLO c.test\r\nQUIT\r\n", 1, id="no-xclient"),
        pytest.param(_xclient(b"198.51.100.9") + b"QUIT\r\n", 2, id="one-xclient"),
        pytest.param(
            _xclient(b"198.51.100.9") + _xclient(b"198.51.100.10") + b"QUIT\r\n",
            3,
            id="two-xclients",
        ),
        pytest.param(
            _xclient(b"198.51.100.9") + b"MAIL FROM:<a@b.example>\r\n"
            b"RCPT TO:<c@d.example>\r\n" + _xclient(b"198.51.100.10") + b"QUIT\r\n",
            3,
            id="xclient-in-a-transaction",
        ),
        pytest.param(_xclient(b"198.51.100.66") + b"QUIT\r\n", 2, id="named-client-gets-554"),
        pytest.param(_xclient(b"198.51.100.67") + b"QUIT\r\n", 2, id="named-client-gets-421"),
        pytest.param(_xclient(b"198.51.100.68") + b"QUIT\r\n", 2, id="handle-connect-raises"),
        pytest.param(b"XCLIENT FOO=bar\r\nQUIT\r\n", 1, id="xclient-refused-501"),
    ],
)
@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_handle_close_pairs_with_each_handle_connect_across_xclient(
    adapter: str, client: bytes, told: int
) -> None:
    """A trusted XCLIENT makes the server act as if the named client had connected
    anew (Postfix's XCLIENT_README): ``handle_connect`` is asked for it, so the
    session as it was (the proxy's part) is closed for the handler first. Only
    ``handle_connect`` was asked again, and a handler pairing the two counted a
    session alive per XCLIENT after all had ended. A named client the handler
    refuses (``554``, ``421``, a hook that fails) was asked for, and is closed too; an
    XCLIENT the machine refuses changes nothing."""
    handler = PairingHandler(
        {
            "198.51.100.66": Reply(554, "not from there", "5.7.1"),
            "198.51.100.67": Reply(421, "not now", "4.7.0"),
            "198.51.100.68": RuntimeError("the handler's own bug"),
        }
    )
    module: Any = smtp_asyncio if adapter == "asyncio" else smtp_trio

    async def body() -> None:
        server = module.SMTPServer(handler, hostname="mx.test", xclient_from=FORWARDERS)
        await server.serve_transport(ScriptedTransport(client))

    if adapter == "asyncio":
        asyncio.run(body())
    else:
        trio.run(body)
    assert (handler.connects, handler.closes) == (told, told)


class FromElsewhere(ScriptedTransport):
    """A scripted client from another address of the trusted network."""

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return ("192.0.2.2", 40001)


class FromOutside(ScriptedTransport):
    """A scripted client from outside the trusted network: counted under its address
    (a host of ``xclient_from`` is counted under none)."""

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return ("203.0.113.1", 40000)


class PeersTold(CountingConnects):
    """Which client each ``handle_connect`` and ``handle_close`` was told of."""

    def __init__(self) -> None:
        super().__init__()
        self.connected: list[tuple[str, int] | None] = []
        self.closed: list[tuple[str, int] | None] = []

    async def handle_connect(self, session: Session) -> Reply | None:
        self.connected.append(session.peer)
        return await super().handle_connect(session)

    async def handle_close(self, session: Session) -> None:
        self.closed.append(session.peer)
        await super().handle_close(session)


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_named_client_over_its_share_is_closed_without_handle_connect(adapter: str) -> None:
    """An XCLIENT naming a client whose address has its share already: the proxy's part
    is closed for the handler, and the named client is refused with ``421`` before
    ``handle_connect``, as a proxied client over its share is: it gets neither hook
    (it got ``handle_close`` alone, the proxy's part none). The named address
    (203.0.113.1) is the first session's, served while the proxy's waits in its
    ``handle_connect``."""
    handler = PeersTold()
    module: Any = smtp_asyncio if adapter == "asyncio" else smtp_trio
    proxy = FromElsewhere(b"EHLO c.test\r\nXCLIENT ADDR=203.0.113.1\r\nQUIT\r\n")

    async def body() -> None:
        server = module.SMTPServer(
            handler, hostname="mx.test", xclient_from=FORWARDERS, max_sessions_per_address=1
        )
        handler.inside = lambda: server.serve_transport(proxy)
        await server.serve_transport(FromOutside(b"QUIT\r\n"))

    if adapter == "asyncio":
        asyncio.run(body())
    else:
        trio.run(body)
    assert b"".join(proxy.written).split(b"\r\n")[-2].startswith(b"421 4.7.0")
    assert handler.connected == [("203.0.113.1", 40000), ("192.0.2.2", 40001)]
    assert handler.closed == [("192.0.2.2", 40001), ("203.0.113.1", 40000)]


class LazyTLS(ScriptedTransport):
    """A transport given under TLS whose handshake waits for ``finish_handshake`` (as a
    ``trio.SSLStream``'s waits for its first use); ``fails``: the handshake fails."""

    def __init__(self, client: bytes, *, fails: bool = False) -> None:
        super().__init__(client)
        self.fails = fails
        self.shaken = False

    async def finish_handshake(self) -> None:
        if self.fails:
            raise ssl.SSLError("the client's certificate is revoked")
        self.shaken = True

    @property
    def tls(self) -> TLSInfo | None:
        return TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256") if self.shaken else None


def _serve_seeing_tls(adapter: str, transport: ScriptedTransport) -> list[TLSInfo | None]:
    """Serve one SMTP session over ``transport``; what ``handle_connect`` saw of its TLS."""
    seen: list[TLSInfo | None] = []

    class Seeing(Handler):
        async def handle_connect(self, session: Session) -> Reply | None:
            seen.append(session.tls)
            return None

    module: Any = smtp_asyncio if adapter == "asyncio" else smtp_trio

    async def body() -> None:
        await module.SMTPServer(Seeing(), hostname="mx.test").serve_transport(transport)

    if adapter == "asyncio":
        asyncio.run(body())
    else:
        trio.run(body)
    return seen


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_transport_given_under_tls_finishes_its_handshake_before_the_greeting(
    adapter: str,
) -> None:
    """``serve_transport`` calls the transport's optional ``finish_handshake`` as a
    client does, so the session is under TLS from its first byte (asyncio read
    ``tls`` before any handshake, and served the session as plaintext)."""
    transport = LazyTLS(b"EHLO client.test\r\nQUIT\r\n")
    seen = _serve_seeing_tls(adapter, transport)
    assert transport.shaken and seen == [transport.tls]
    assert b"".join(transport.written).endswith(b"221 2.0.0 mx.test Bye\r\n")


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_transport_whose_given_handshake_fails_is_closed_unserved(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As a failed STARTTLS handshake does: one INFO line, the transport closed,
    nothing written and the handler never told of a connection."""
    caplog.set_level(logging.INFO, logger="smtpcore")
    transport = LazyTLS(b"EHLO client.test\r\nQUIT\r\n", fails=True)
    assert _serve_seeing_tls(adapter, transport) == []
    assert transport.closed and transport.written == []
    failed = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.INFO] and "revoked" in failed[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
