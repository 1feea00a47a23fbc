"""A server's ``connection_factory`` never weakens the server (SMTP and POP3).

A factory starts from the server's own machine with ``options.build_connection``
and changes only what the server does not set; a machine built by hand that
disagrees with the server on a setting it enforces (TLS, AUTH, SIZE, LMTP,
XCLIENT) is refused: at the server's start with ``ValueError``, and per
connection with ``421 4.3.0`` (POP3: ``-ERR [SYS/TEMP]``), as a factory that
raises is (RFC 5321 §3.1).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import trio

import smtpcore.asyncio as smtp_asyncio
import smtpcore.trio as smtp_trio
from smtpcore import pop3
from smtpcore.handler import Authenticator, Handler, TLSInfo
from smtpcore.maildrop import Maildrop, MaildropError, Mailstore, MechanismFactory, POP3Session
from smtpcore.smtp import ServerConnection

ADAPTERS = pytest.mark.parametrize("adapter", ["asyncio", "trio"])
CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
"""A context with no certificate: enough to offer STARTTLS and STLS, which these
sessions never start."""
AUTH = Authenticator(check_password=lambda user, password: password == "secret")
GUARDED: dict[str, Any] = {
    "ssl_context": CONTEXT,
    "require_tls": True,
    "auth": AUTH,
    "require_auth": True,
    "max_message_size": 1000,
}
"""A submission server's guards: TLS and AUTH before mail, a small SIZE."""


class ScriptedTransport:
    """A transport that gives the client's bytes in one piece, from an address not on
    loopback, and records what the server writes."""

    def __init__(self, client: bytes) -> None:
        self.client = client
        self.written: list[bytes] = []

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
        pass

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return ("192.0.2.1", 40000)

    @property
    def local_address(self) -> tuple[str, int] | None:
        return ("192.0.2.25", 25)

    @property
    def tls(self) -> TLSInfo | None:
        return None


def _lines(adapter: str, make_server: Callable[[Any], Any], client: bytes) -> list[bytes]:
    """The lines one session of ``make_server(adapter module)`` writes to ``client``."""
    transport = ScriptedTransport(client)

    async def body() -> None:
        await make_server(smtp_asyncio if adapter == "asyncio" else smtp_trio).serve_transport(
            transport
        )

    if adapter == "asyncio":
        asyncio.run(body())
    else:
        trio.run(body)
    return b"".join(transport.written).split(b"\r\n")


def _smtp(adapter: str, client: bytes, **options: Any) -> list[bytes]:
    return _lines(
        adapter, lambda mod: mod.SMTPServer(Handler(), hostname="mx.test", **options), client
    )


def _varying(first: Callable[[Any], Any], then: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A factory that builds with ``first`` at the server's start, with ``then`` after."""
    calls: list[None] = []

    def factory(options: Any) -> Any:
        calls.append(None)
        return (first if len(calls) == 1 else then)(options)

    return factory


def _raising(options: Any) -> Any:
    raise RuntimeError("the factory's own bug")


# -- SMTP ------------------------------------------------------------------------


@ADAPTERS
def test_a_factory_built_on_the_server_machine_keeps_its_guards(adapter: str) -> None:
    """The audit's repro: a factory for an option the server does not list kept none of
    the server's TLS, AUTH and SIZE settings, and MAIL got 250 in plaintext."""

    def factory(options: Any) -> ServerConnection:
        built: ServerConnection = options.build_connection(smtputf8=False)
        return built

    lines = _smtp(
        adapter,
        b"EHLO client.test\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n",
        connection_factory=factory,
        **GUARDED,
    )
    assert b"250-SIZE 1000" in lines and any(b"STARTTLS" in line for line in lines)
    assert not any(b"SMTPUTF8" in line for line in lines)  # the factory's own option
    assert any(line.startswith(b"530 5.7.0") for line in lines)  # MAIL before STARTTLS


def test_build_connection_refuses_what_the_server_sets() -> None:
    options = smtp_asyncio.ServerOptions(hostname="mx.test", **GUARDED)
    with pytest.raises(ValueError, match="max_recipients"):
        options.build_connection(max_recipients=5)
    with pytest.raises(ValueError, match="ssl_context"):
        options.build_connection(starttls=False)
    with pytest.raises(ValueError, match="auth"):
        options.build_connection(auth_mechanisms=["PLAIN"])
    with pytest.raises(ValueError, match="tls"):
        options.build_connection(tls=True)


def test_build_connection_takes_a_subclass() -> None:
    class Mine(ServerConnection):
        pass

    options = smtp_asyncio.ServerOptions(hostname="mx.test", **GUARDED)
    conn = options.build_connection(Mine, chunking=False)
    assert type(conn) is Mine and not conn.chunking
    assert conn.starttls and conn.require_tls and conn.max_message_size == 1000


@pytest.mark.parametrize(
    ("options", "machine", "named"),
    [
        (GUARDED, {"max_recipients": 5}, "starttls"),  # the audit's repro
        ({}, {"starttls": True}, "starttls"),  # would hit STARTTLS with no context
        ({}, {"auth_mechanisms": ["PLAIN"], "auth_require_tls": False}, "auth_mechanisms"),
        ({"max_message_size": 1000}, {}, "max_message_size"),
        ({"lmtp": True}, {}, "lmtp"),
        ({}, {"xclient": True, "trusted_forwarder": True}, "xclient"),
        ({}, {"tls": True}, "tls"),
    ],
)
@ADAPTERS
def test_a_machine_that_disagrees_with_the_server_is_refused_at_its_start(
    adapter: str, options: dict[str, Any], machine: dict[str, Any], named: str
) -> None:
    def factory(server_options: Any) -> ServerConnection:
        return ServerConnection(server_options.hostname, **machine)

    mod = smtp_asyncio if adapter == "asyncio" else smtp_trio
    with pytest.raises(ValueError, match=named):
        mod.SMTPServer(Handler(), hostname="mx.test", connection_factory=factory, **options)


@ADAPTERS
def test_a_machine_that_disagrees_later_gets_421(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    factory = _varying(
        lambda options: ServerConnection(options.hostname),
        lambda options: ServerConnection(options.hostname, starttls=True),
    )
    with caplog.at_level(logging.ERROR, logger="smtpcore.server"):
        lines = _smtp(adapter, b"EHLO client.test\r\nSTARTTLS\r\n", connection_factory=factory)
    assert lines == [b"421 mx.test Service not available", b""]
    assert any("starttls" in record.getMessage() for record in caplog.records)


@ADAPTERS
def test_a_factory_that_raises_gets_421(adapter: str, caplog: pytest.LogCaptureFixture) -> None:
    factory = _varying(lambda options: options.build_connection(), _raising)
    with caplog.at_level(logging.ERROR, logger="smtpcore.server"):
        lines = _smtp(adapter, b"EHLO client.test\r\n", connection_factory=factory)
    assert lines == [b"421 mx.test Service not available", b""]
    assert any(
        record.exc_info and "the factory's own bug" in str(record.exc_info[1])
        for record in caplog.records
    )


@ADAPTERS
def test_starttls_without_a_context_is_454(adapter: str) -> None:
    """A machine that turns STARTTLS on behind the server's back (here on its first
    bytes) gets 454 4.7.0 (RFC 3207 §4), not a 220 the server cannot honour."""

    class Late(ServerConnection):
        def receive_data(self, data: bytes) -> None:
            self.starttls = True
            super().receive_data(data)

    lines = _smtp(
        adapter,
        b"EHLO client.test\r\nSTARTTLS\r\nQUIT\r\n",
        connection_factory=lambda options: options.build_connection(Late),
    )
    assert any(line.startswith(b"454 4.7.0") for line in lines)
    assert lines[-2].startswith(b"221")


# -- POP3 ------------------------------------------------------------------------


class Store(Mailstore):
    """A store that logs nobody in, and offers SASL PLAIN (under TLS)."""

    async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
        return False

    def sasl_mechanisms(self, session: POP3Session) -> Mapping[str, MechanismFactory]:
        return AUTH.server_mechanisms(session.hostname)

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        raise MaildropError("no maildrop here")


def _pop3(adapter: str, client: bytes, **options: Any) -> list[bytes]:
    return _lines(
        adapter, lambda mod: mod.POP3Server(Store(), hostname="pop.test", **options), client
    )


@ADAPTERS
def test_a_pop3_factory_built_on_the_server_machine_keeps_its_guards(adapter: str) -> None:
    def factory(options: Any) -> pop3.ServerConnection:
        built: pop3.ServerConnection = options.build_connection(top=False)
        return built

    lines = _pop3(
        adapter,
        b"CAPA\r\nUSER a\r\nQUIT\r\n",
        ssl_context=CONTEXT,
        connection_factory=factory,
    )
    assert b"STLS" in lines and b"TOP" not in lines
    assert b"USER" not in lines  # require_tls: a client off loopback logs in under TLS
    assert any(line.startswith(b"-ERR") for line in lines[1:])


@ADAPTERS
def test_a_hand_built_pop3_machine_gets_the_session_settings(adapter: str) -> None:
    """The mechanisms and require_tls are the session's (the store's and the client's):
    the server sets them on whatever machine the factory gives."""
    lines = _pop3(
        adapter,
        b"CAPA\r\nUSER a\r\nQUIT\r\n",
        ssl_context=CONTEXT,
        connection_factory=lambda options: pop3.ServerConnection(options.hostname, stls=True),
    )
    assert b"STLS" in lines and b"USER" not in lines
    assert any(line.startswith(b"-ERR") for line in lines[1:])


def test_pop3_build_connection_refuses_what_the_server_sets() -> None:
    options = smtp_asyncio.POP3ServerOptions(hostname="pop.test", ssl_context=CONTEXT)
    for machine, server in [("stls", "ssl_context"), ("require_tls", "require_tls")]:
        with pytest.raises(ValueError, match=server):
            options.build_connection(**{machine: True})
    with pytest.raises(ValueError, match="sasl_mechanisms"):
        options.build_connection(sasl_mechanisms=["PLAIN"])


@pytest.mark.parametrize(
    ("options", "machine"),
    [({"ssl_context": CONTEXT}, {}), ({}, {"stls": True})],
)
@ADAPTERS
def test_a_pop3_machine_that_disagrees_is_refused_at_the_start(
    adapter: str, options: dict[str, Any], machine: dict[str, Any]
) -> None:
    mod = smtp_asyncio if adapter == "asyncio" else smtp_trio
    with pytest.raises(ValueError, match="stls"):
        mod.POP3Server(
            Store(),
            hostname="pop.test",
            connection_factory=lambda o: pop3.ServerConnection(o.hostname, **machine),
            **options,
        )


@pytest.mark.parametrize("later", ["raises", "disagrees"])
@ADAPTERS
def test_a_pop3_factory_that_fails_later_gets_sys_temp(
    adapter: str, later: str, caplog: pytest.LogCaptureFixture
) -> None:
    def disagreeing(options: Any) -> pop3.ServerConnection:
        return pop3.ServerConnection(options.hostname, stls=True)

    factory = _varying(
        lambda options: options.build_connection(),
        _raising if later == "raises" else disagreeing,
    )
    with caplog.at_level(logging.ERROR, logger="smtpcore.pop3.server"):
        lines = _pop3(adapter, b"CAPA\r\n", connection_factory=factory)
    assert lines[0].startswith(b"-ERR [SYS/TEMP]") and lines[1:] == [b""]
    assert caplog.records
