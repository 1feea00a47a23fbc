"""A server's ``connection_factory`` never changes what the server sets (SMTP, POP3).

A factory starts from the server's own machine with ``options.build_connection``
and changes only what the server does not set. The factory is called as each
session starts, never before; a machine built by hand that disagrees with the
server on any option the server sets, weaker or stricter, is refused for that
session with a ``421`` greeting (POP3: ``-ERR [SYS/TEMP]``) and an error logged,
as a factory that raises is (RFC 5321 §3.1), and so is a machine that is not new.
What the server decides per session (SMTP's ``tls`` and ``trusted_forwarder``;
POP3's logins and ``require_tls``) it sets on whatever machine runs the session,
unless a factory chose them: then they are checked, never silently replaced.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pytest
import trio

import smtpcore.asyncio as smtp_asyncio
import smtpcore.trio as smtp_trio
from smtpcore import pop3
from smtpcore.handler import Authenticator, Handler
from smtpcore.maildrop import Maildrop, MaildropError, Mailstore, MechanismFactory, POP3Session
from smtpcore.smtp import Reply, ServerConnection
from test_adapters_session_end import CountingConnects, ScriptedTransport

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
Machine = TypeVar("Machine", ServerConnection, pop3.ServerConnection)


def _lines(adapter: str, make_server: Callable[[Any], Any], client: bytes) -> list[bytes]:
    """The lines one session of ``make_server(adapter module)`` writes to ``client``,
    whose address is not on loopback."""
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


def _raising(options: Any) -> Any:
    raise RuntimeError("the factory's own bug")


def _built_then(used: Callable[[Machine], None]) -> Callable[[Any], Machine]:
    """A factory that builds the server's own machine and then ``used`` it."""

    def factory(options: Any) -> Machine:
        built: Machine = options.build_connection()
        used(built)
        return built

    return factory


def _noting_the_task(adapter: str, calls: list[object]) -> Callable[[Any], Any]:
    """A factory that notes the task it runs in, then builds the server's own machine."""

    def factory(options: Any) -> Any:
        calls.append(
            asyncio.current_task() if adapter == "asyncio" else trio.lowlevel.current_task()
        )
        return options.build_connection()

    return factory


def _smtp_refused(
    adapter: str, caplog: pytest.LogCaptureFixture, client: bytes, **options: Any
) -> list[str]:
    """What the server logged for an SMTP session it refused with 421 before its greeting."""
    with caplog.at_level(logging.ERROR, logger="smtpcore.server"):
        lines = _smtp(adapter, client, **options)
    assert lines == [b"421 mx.test Service not available", b""]
    return [record.getMessage() for record in caplog.records]


def _assert_logged_the_factory_bug(caplog: pytest.LogCaptureFixture) -> None:
    """The server logged what ``_raising`` raised, with its traceback."""
    assert any(
        record.exc_info and "the factory's own bug" in str(record.exc_info[1])
        for record in caplog.records
    )


def _assert_logged(messages: list[str], *parts: str) -> None:
    """One of the ``messages`` says every one of ``parts``."""
    assert any(all(part in message for part in parts) for message in messages), messages


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
        (GUARDED, {"max_recipients": 5}, "max_recipients"),  # the audit's repro
        ({}, {"starttls": True}, "starttls"),  # would hit STARTTLS with no context
        ({}, {"auth_mechanisms": ["PLAIN"], "auth_require_tls": False}, "auth_mechanisms"),
        ({"max_message_size": 1000}, {}, "max_message_size"),
        ({"lmtp": True}, {}, "lmtp"),
        ({}, {"xclient": True, "trusted_forwarder": True}, "xclient"),
        # Every option the server sets, not only its guards.
        ({"max_junk_commands": 5}, {}, "max_junk_commands"),
        ({"dsn": True}, {}, "dsn"),
        ({"limits": True}, {}, "limits"),
        ({}, {"hostname": "other.test"}, "hostname"),
        # Stricter is refused too: the server's setting is the one source of truth.
        ({}, {"require_tls": True}, "require_tls"),
        ({}, {"max_message_size": 1000}, "max_message_size"),
    ],
)
@ADAPTERS
def test_a_machine_that_disagrees_with_the_server_gets_421(
    adapter: str,
    options: dict[str, Any],
    machine: dict[str, Any],
    named: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def factory(server_options: Any) -> ServerConnection:
        chosen = {"hostname": server_options.hostname, **machine}
        return ServerConnection(chosen.pop("hostname"), **chosen)

    messages = _smtp_refused(
        adapter,
        caplog,
        b"EHLO client.test\r\nMAIL FROM:<a@b.example>\r\n",
        connection_factory=factory,
        **options,
    )
    _assert_logged(messages, f"{named}=", "options.build_connection()")


@ADAPTERS
def test_the_factory_is_called_per_session_only(adapter: str) -> None:
    """Never when the server is made: a factory may need the session's running loop
    (here ``current_task``, which raised out of ``SMTPServer(...)``)."""
    calls: list[object] = []
    lines = _smtp(adapter, b"QUIT\r\n", connection_factory=_noting_the_task(adapter, calls))
    assert lines[0].startswith(b"220") and lines[1].startswith(b"221")
    assert len(calls) == 1 and calls[0] is not None


@ADAPTERS
def test_a_hand_built_machine_agreeing_with_the_server_is_served(adapter: str) -> None:
    """Options the server does not set are the machine's own; ``tls`` and
    ``trusted_forwarder`` are not compared but set per session: here a machine that
    says TLS is up and its client may speak for another gets neither, so MAIL waits
    for STARTTLS and XCLIENT is no command for a client outside ``xclient_from``."""

    def factory(options: Any) -> ServerConnection:
        return ServerConnection(
            options.hostname,
            smtputf8=False,
            starttls=True,
            require_tls=True,
            xclient=True,
            xforward=True,
            trusted_forwarder=True,
            tls=True,
        )

    lines = _smtp(
        adapter,
        b"EHLO client.test\r\nXCLIENT ADDR=192.0.2.9\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n",
        connection_factory=factory,
        ssl_context=CONTEXT,
        require_tls=True,
        xclient_from=["10.0.0.0/8"],
    )
    assert lines[0].startswith(b"220") and b"250 STARTTLS" in lines
    assert not any(b"SMTPUTF8" in line or b"XCLIENT" in line for line in lines[:-4])
    assert lines[-4].startswith(b"500 5.5.2")  # XCLIENT: not for this client
    assert lines[-3].startswith(b"530 5.7.0")  # MAIL before STARTTLS
    assert lines[-2].startswith(b"221")


def test_check_connection_compares_options_as_the_machine_takes_them() -> None:
    """An implicit-TLS server's machine is one with ``tls=True`` (the driver sets it
    anyway); ``0`` and ``None`` are both no SIZE limit (RFC 1870 §4)."""
    options = smtp_asyncio.ServerOptions(
        hostname="mx.test", ssl_context=CONTEXT, tls_on_connect=True, max_message_size=0
    )
    conn = ServerConnection("mx.test", tls=True, max_message_size=None)
    assert options.check_connection(conn) is conn


@ADAPTERS
def test_a_factory_that_raises_gets_421(adapter: str, caplog: pytest.LogCaptureFixture) -> None:
    _smtp_refused(adapter, caplog, b"EHLO client.test\r\n", connection_factory=_raising)
    _assert_logged_the_factory_bug(caplog)


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


def _authenticated(conn: ServerConnection) -> None:
    conn.authenticated = True


def _greeted(conn: ServerConnection) -> None:
    conn.send(Reply(220, "mx.test ready"))


def _fed(conn: ServerConnection) -> None:
    conn.receive_data(b"EHLO client.test\r\n")


def _helloed(conn: ServerConnection) -> None:
    conn.helo_name, conn.extended = "client.test", True


@pytest.mark.parametrize(
    ("used", "named"),
    [
        (_authenticated, "authenticated"),  # the review's repro: MAIL with no AUTH
        (_greeted, "state"),
        (_fed, "buffered"),
        (_helloed, "extended"),
    ],
)
@ADAPTERS
def test_a_machine_that_is_not_new_gets_421(
    adapter: str,
    used: Callable[[ServerConnection], None],
    named: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Options that agree are not enough: a machine already authenticated took MAIL and
    RCPT on a ``require_auth`` server with no AUTH."""
    messages = _smtp_refused(
        adapter,
        caplog,
        b"EHLO client.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n",
        connection_factory=_built_then(used),
        auth=AUTH,
        auth_require_tls=False,
        require_auth=True,
    )
    _assert_logged(messages, "the machine is not new", f"its {named} is")


@ADAPTERS
def test_the_auth_mechanisms_in_another_order_agree(adapter: str) -> None:
    """The machine lists the mechanisms on EHLO in its own order; the set is what the
    server's ``auth`` must run."""

    def factory(options: Any) -> ServerConnection:
        return ServerConnection(
            options.hostname,
            starttls=True,
            auth_mechanisms=list(reversed(list(options.auth_mechanisms))),
        )

    lines = _smtp(
        adapter,
        b"EHLO client.test\r\nQUIT\r\n",
        connection_factory=factory,
        ssl_context=CONTEXT,
        auth=AUTH,
    )
    assert lines[0].startswith(b"220") and lines[-2].startswith(b"221")
    options = smtp_asyncio.ServerOptions(hostname="mx.test", auth=AUTH, auth_require_tls=False)
    conn = ServerConnection("mx.test", auth_mechanisms=["LOGIN", "PLAIN"], auth_require_tls=False)
    assert list(options.auth_mechanisms) == ["PLAIN", "LOGIN"]
    assert options.check_connection(conn) is conn
    with pytest.raises(ValueError, match="auth_mechanisms"):
        options.check_connection(
            ServerConnection("mx.test", auth_mechanisms=["LOGIN"], auth_require_tls=False)
        )


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


def _pop3_refused(
    adapter: str, caplog: pytest.LogCaptureFixture, client: bytes, **options: Any
) -> list[str]:
    """What the server logged for a POP3 session it refused with ``-ERR [SYS/TEMP]``."""
    with caplog.at_level(logging.ERROR, logger="smtpcore.pop3.server"):
        lines = _pop3(adapter, client, **options)
    assert lines[0].startswith(b"-ERR [SYS/TEMP]") and lines[1:] == [b""]
    return [record.getMessage() for record in caplog.records]


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
    the server sets them on a machine that left them at their defaults."""
    lines = _pop3(
        adapter,
        b"CAPA\r\nUSER a\r\nQUIT\r\n",
        ssl_context=CONTEXT,
        connection_factory=lambda options: pop3.ServerConnection(
            options.hostname, stls=True, apop=False
        ),
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


def test_pop3_options_take_capa_policies_as_the_machine_does() -> None:
    """``expire=30`` is ``EXPIRE 30`` as on the machine, ``never`` and ``user`` in any
    case are written upper-case (RFC 5234 §2.3), and the options hold the value the
    machine writes, so a machine built from them agrees with the server."""
    options = smtp_asyncio.POP3ServerOptions(hostname="pop.test", expire="never", login_delay=900)
    assert (options.expire, options.login_delay) == ("NEVER", "900")
    conn = options.build_connection()
    assert conn.capabilities()[-2:] == ["EXPIRE NEVER", "LOGIN-DELAY 900"]
    assert options.check_connection(conn) is conn
    hand_built = pop3.ServerConnection("pop.test", expire="NEVER", login_delay="900")
    assert options.check_connection(hand_built) is hand_built
    options = smtp_asyncio.POP3ServerOptions(hostname="pop.test", expire="30 user")
    assert options.expire == "30 USER"
    with pytest.raises(TypeError, match="expire"):
        smtp_asyncio.POP3ServerOptions(hostname="pop.test", expire=True)


def test_pop3_build_connection_leaves_the_logins_to_the_server() -> None:
    """Options of no server offer nothing a mailstore would decide: no USER, no APOP
    timestamp (they were the last server's, or USER and APOP whatever the store)."""
    options = smtp_asyncio.POP3ServerOptions(hostname="pop.test")
    conn = options.build_connection()
    assert "USER" not in conn.capabilities() and not conn.sasl_mechanisms
    assert "<" not in conn.greeting(1, 2).text


class ApopStore(Store):
    """A store that serves APOP too."""

    async def apop_secret(self, session: POP3Session, user: str) -> str | None:
        return None


@ADAPTERS
def test_a_pop3_factory_machine_offers_the_store_logins(adapter: str) -> None:
    """Set before the greeting: the APOP timestamp follows the store."""
    lines = _lines(
        adapter,
        lambda mod: mod.POP3Server(
            ApopStore(),
            hostname="pop.test",
            connection_factory=lambda options: options.build_connection(top=False),
        ),
        b"CAPA\r\nQUIT\r\n",
    )
    assert lines[0].startswith(b"+OK") and b"@pop.test>" in lines[0]
    assert b"USER" in lines and b"TOP" not in lines


@pytest.mark.parametrize(
    ("options", "machine", "named"),
    [
        ({"ssl_context": CONTEXT}, {"apop": False}, "stls"),
        ({}, {"stls": True, "apop": False}, "stls"),
        ({}, {"utf8": True, "apop": False}, "offers_utf8"),
        ({}, {"implementation": "other", "apop": False}, "implementation"),
        # The store's logins: this one serves USER, and no APOP.
        ({}, {}, "offers_apop"),
        ({}, {"user": False, "apop": False}, "offers_user"),
        # Never lowered: what the factory chose stricter stays, or the session goes.
        ({"require_tls": False}, {"require_tls": True, "apop": False}, "require_tls"),
        ({}, {"sasl_mechanisms": ["CRAM-MD5"], "apop": False}, "SASL"),
    ],
)
@ADAPTERS
def test_a_pop3_machine_that_disagrees_gets_sys_temp(
    adapter: str,
    options: dict[str, Any],
    machine: dict[str, Any],
    named: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = _pop3_refused(
        adapter,
        caplog,
        b"CAPA\r\nUSER a\r\n",
        connection_factory=lambda o: pop3.ServerConnection(o.hostname, **machine),
        **options,
    )
    _assert_logged(messages, named)


@ADAPTERS
def test_a_pop3_factory_that_raises_gets_sys_temp(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    _pop3_refused(adapter, caplog, b"CAPA\r\n", connection_factory=_raising)
    _assert_logged_the_factory_bug(caplog)


@ADAPTERS
def test_the_pop3_factory_is_called_per_session_only(adapter: str) -> None:
    calls: list[object] = []
    lines = _pop3(adapter, b"QUIT\r\n", connection_factory=_noting_the_task(adapter, calls))
    assert lines[0].startswith(b"+OK") and lines[1].startswith(b"+OK")
    assert len(calls) == 1 and calls[0] is not None


def _pop3_greeted(conn: pop3.ServerConnection) -> None:
    conn.send(conn.greeting())


def _pop3_fed(conn: pop3.ServerConnection) -> None:
    conn.receive_data(b"USER a\r\n")


def _pop3_with_user(conn: pop3.ServerConnection) -> None:
    conn.user = "a"


@pytest.mark.parametrize(
    ("used", "named"),
    [(_pop3_greeted, "state"), (_pop3_fed, "buffered"), (_pop3_with_user, "user")],
)
@ADAPTERS
def test_a_pop3_machine_that_is_not_new_gets_sys_temp(
    adapter: str,
    used: Callable[[pop3.ServerConnection], None],
    named: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = _pop3_refused(
        adapter, caplog, b"CAPA\r\nUSER a\r\n", connection_factory=_built_then(used)
    )
    _assert_logged(messages, "the machine is not new", f"its {named} is")


@ADAPTERS
def test_a_pop3_factory_that_changes_the_placeholders_is_checked(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's repro: a factory turned USER off, required TLS and offered SCRAM
    alone on its ``build_connection()`` machine, and a loopback client still saw USER
    and SASL PLAIN LOGIN and got ``+OK`` to USER. Its choices are now judged as a
    hand-built machine's: here they differ from what the server decides, so the
    session is refused rather than its choices undone."""

    def factory(options: Any) -> pop3.ServerConnection:
        built: pop3.ServerConnection = options.build_connection()
        built.offers_user = False
        built.require_tls = True
        built.sasl_mechanisms = ("SCRAM-SHA-256",)
        return built

    messages = _pop3_refused(
        adapter,
        caplog,
        b"CAPA\r\nUSER a\r\nQUIT\r\n",
        ssl_context=CONTEXT,
        require_tls=False,
        connection_factory=factory,
    )
    _assert_logged(messages, "offers_user", "changed sasl_mechanisms, require_tls on")


@ADAPTERS
def test_a_changed_build_connection_machine_that_agrees_is_served(adapter: str) -> None:
    """A factory's choice the server's decision matches is kept: ``require_tls`` on,
    for a client off loopback that the server asks TLS of anyway; the mechanisms the
    mailstore offers, in another order."""

    def factory(options: Any) -> pop3.ServerConnection:
        built: pop3.ServerConnection = options.build_connection()
        built.offers_user = True
        built.require_tls = True
        built.sasl_mechanisms = ("LOGIN", "PLAIN")
        return built

    lines = _pop3(
        adapter, b"CAPA\r\nUSER a\r\nQUIT\r\n", ssl_context=CONTEXT, connection_factory=factory
    )
    assert lines[0].startswith(b"+OK") and b"STLS" in lines
    assert b"USER" not in lines  # require_tls: logins wait for TLS
    assert lines[-2].startswith(b"+OK")


@ADAPTERS
def test_a_stricter_change_to_a_build_connection_machine_is_refused(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``require_tls`` turned on by the factory where the server does not require it:
    refused, as for a hand-built machine, not lowered to the server's."""

    def factory(options: Any) -> pop3.ServerConnection:
        built: pop3.ServerConnection = options.build_connection()
        built.offers_user = True
        built.require_tls = True
        return built

    messages = _pop3_refused(
        adapter,
        caplog,
        b"CAPA\r\n",
        ssl_context=CONTEXT,
        require_tls=False,
        connection_factory=factory,
    )
    _assert_logged(messages, "require_tls=True", "changed offers_user, require_tls")


# -- machines built per session ----------------------------------------------------


def _machines_built(
    adapter: str, protocol: str, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[int, bytes]:
    """How many machines one session builds (the server's own, made with the server,
    not counted), and the first line it writes. Every SMTP machine starts in
    ``_begin`` (the constructor's, or ``new_connection``'s), every POP3 one in its
    constructor."""
    built: list[object] = []
    counted: Any = ServerConnection if protocol == "SMTP" else pop3.ServerConnection
    method = "_begin" if protocol == "SMTP" else "__init__"
    original = getattr(counted, method)

    def counting(self: object, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    module: Any = smtp_asyncio if adapter == "asyncio" else smtp_trio
    transport = ScriptedTransport(b"QUIT\r\n")

    async def body() -> None:
        if protocol == "SMTP":
            server = module.SMTPServer(Handler(), hostname="mx.test", **options)
        else:
            server = module.POP3Server(Store(), hostname="pop.test", **options)
        monkeypatch.setattr(counted, method, counting)
        await server.serve_transport(transport)

    if adapter == "asyncio":
        asyncio.run(body())
    else:
        trio.run(body)
    return len(built), b"".join(transport.written).split(b"\r\n")[0]


def _own_machine(options: Any) -> Any:
    return options.build_connection()


@pytest.mark.parametrize("protocol", ["SMTP", "POP3"])
@pytest.mark.parametrize("factory", [None, _own_machine], ids=["no-factory", "factory"])
@ADAPTERS
def test_a_session_builds_only_the_machine_it_runs(
    adapter: str, protocol: str, factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One machine a session, with a factory or without: with one, the SMTP session
    built the server's machine before calling it, and both servers built yet another
    to compare the factory's with a new one (the performance issue's ServerConnection
    per connection, three times over)."""
    count, first = _machines_built(adapter, protocol, monkeypatch, connection_factory=factory)
    assert first.startswith(b"220" if protocol == "SMTP" else b"+OK")
    assert count == 1


@pytest.mark.parametrize("protocol", ["SMTP", "POP3"])
@ADAPTERS
def test_a_refused_factory_machine_is_answered_on_the_server_machine(
    adapter: str, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal is the one session that needs the server's own machine beside the
    factory's: it answers ``421`` (``-ERR [SYS/TEMP]``) on it."""

    def not_new(options: Any) -> Any:
        conn = options.build_connection()
        conn.receive_data(b"QUIT\r\n")
        return conn

    count, first = _machines_built(adapter, protocol, monkeypatch, connection_factory=not_new)
    assert first.startswith(b"421" if protocol == "SMTP" else b"-ERR [SYS/TEMP]")
    assert count == 2


# -- one machine, one session ----------------------------------------------------


class ServingAnother(ScriptedTransport):
    """A client whose first read waits while ``another`` (a second session of the same
    server) is served: two sessions alive at once."""

    def __init__(self, client: bytes, another: Callable[[], Any]) -> None:
        super().__init__(client)
        self.another: Callable[[], Any] | None = another

    async def receive_some(self, max_bytes: int) -> bytes:
        another, self.another = self.another, None
        if another is not None:
            await another()
        return await super().receive_some(max_bytes)


def _one_shared_machine() -> Callable[[Any], Any]:
    """A factory that builds one machine and gives it to every session."""
    shared: list[Any] = []

    def factory(options: Any) -> Any:
        if not shared:
            shared.append(options.build_connection())
        return shared[0]

    return factory


def _two_sessions(adapter: str, protocol: str, client: bytes) -> tuple[list[bytes], list[bytes]]:
    """The lines two sessions of one server on :func:`_one_shared_machine` write, the
    second served while the first is at its weakest: SMTP's waiting for
    ``handle_connect`` (its machine still looks new), POP3's for its client's first
    command (its machine greeted, at once after the factory)."""
    module: Any = smtp_asyncio if adapter == "asyncio" else smtp_trio
    factory = _one_shared_machine()
    later = ScriptedTransport(client)
    earlier = ServingAnother(client, lambda: server.serve_transport(later))
    handler = CountingConnects()
    server: Any = None

    async def body() -> None:
        nonlocal server
        if protocol == "SMTP":
            server = module.SMTPServer(handler, hostname="mx.test", connection_factory=factory)
            handler.inside, earlier.another = earlier.another, None
        else:
            server = module.POP3Server(Store(), hostname="pop.test", connection_factory=factory)
        await server.serve_transport(earlier)

    if adapter == "asyncio":
        asyncio.run(body())
    else:
        trio.run(body)
    return (
        b"".join(earlier.written).split(b"\r\n"),
        b"".join(later.written).split(b"\r\n"),
    )


@pytest.mark.parametrize("protocol", ["SMTP", "POP3"])
@ADAPTERS
def test_a_machine_running_another_session_is_refused(
    adapter: str, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A factory that hands one machine to two sessions: to the second, SMTP's looked
    new while the first waited for ``handle_connect`` on it, and the second session ran
    on it, the first then failing; POP3's was refused as "not new", which named a
    state and not the problem. The second is refused as any bad factory machine is,
    and the first is served to its end."""
    logger = "smtpcore.server" if protocol == "SMTP" else "smtpcore.pop3.server"
    client = b"EHLO one.test\r\nQUIT\r\n" if protocol == "SMTP" else b"CAPA\r\nQUIT\r\n"
    with caplog.at_level(logging.ERROR, logger=logger):
        first, second = _two_sessions(adapter, protocol, client)
    if protocol == "SMTP":
        assert first[0].startswith(b"220") and first[-2].startswith(b"221"), first
        assert second == [b"421 mx.test Service not available", b""]
    else:
        assert first[0].startswith(b"+OK") and first[-2].startswith(b"+OK"), first
        assert second[0].startswith(b"-ERR [SYS/TEMP]") and second[1:] == [b""]
    _assert_logged(
        [record.getMessage() for record in caplog.records],
        "the machine is running another session",
    )


@pytest.mark.parametrize("protocol", ["SMTP", "POP3"])
@ADAPTERS
def test_a_machine_is_given_back_when_its_session_ends(adapter: str, protocol: str) -> None:
    """Sessions one after another, each on a new machine: a machine a session ended on
    counts as running none, whatever (reused) identity the next one has."""
    for _ in range(20):
        if protocol == "SMTP":
            lines = _smtp(adapter, b"QUIT\r\n", connection_factory=_own_machine)
            assert lines[0].startswith(b"220"), lines
        else:
            lines = _pop3(adapter, b"QUIT\r\n", connection_factory=_own_machine)
            assert lines[0].startswith(b"+OK"), lines
