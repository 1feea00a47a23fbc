"""``is_connected`` tells a caller whether the session is still there after an error.

After an AUTH error a caller must know whether to go on (send its mail without
logging in, try another mechanism) or to connect again, as smtplib users read
``sock is None`` and aiosmtplib users ``is_connected``. A refusal (``535``,
``454``, ``-ERR``) keeps the session; a ``421``, a lost connection, or a SCRAM
server that does not prove itself (RFC 5802 §5) closes it. Both protocols, the
three clients, each kind of failure, and the session's ordinary end.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from client_calls import done
from peers import ADAPTERS, free_port, run
from smtpcore.sasl import PlainClient, ScramSHA256Client
from smtpcore.smtp import Quit
from smtpcore.testing import Call, ExpectClose, ScriptedServer, Send, Step, script
from test_client_unproved_scram import WIRES, impostor

ALL = ["sync", *ADAPTERS]

SMTP_OPENING = "S: 220 mx.test ESMTP\nC~ EHLO .+\nS: 250-mx.test\nS: 250 AUTH PLAIN SCRAM-SHA-256"
POP3_OPENING = "S: +OK ready\nC: CAPA\nS: +OK\nS: SASL PLAIN SCRAM-SHA-256\nS: ."
POP3_LOGIN = "C: USER alice\nS: +OK\nC: PASS wonderland\nS: +OK\nC: CAPA\nS: +OK\nS: ."
QUIT = {"smtp": "C: QUIT\nS: 221 2.0.0 bye\n-- close", "pop3": "C: QUIT\nS: +OK bye\n-- close"}
OPENING = {"smtp": SMTP_OPENING, "pop3": POP3_OPENING}


def _client(protocol: str, adapter: str, port: int, **given: Any) -> Any:
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    options: dict[str, Any] = {"allow_plaintext_auth": True, **given}
    if adapter == "sync":
        options["timeout"] = 10
    if protocol == "pop3":
        return module.POP3Client("127.0.0.1", port, stls=False, **options)
    return module.SMTPClient("127.0.0.1", port, starttls=False, **options)


def _aim(client: Any, port: int, *, tls_on_connect: bool = False) -> None:
    """Point ``client``'s next ``connect()`` at ``port``, under TLS from the first byte
    if ``tls_on_connect`` (the blocking client's session holds both)."""
    session = getattr(client, "_session", client)
    session.port, session.tls_on_connect = port, tls_on_connect


async def _connect_again(client: Any, protocol: str, seen: list[object]) -> None:
    """``connect()`` to a second server, noting ``is_connected`` once it returns, then
    QUIT: what a caller does once ``is_connected`` turned false."""
    with ScriptedServer(script(f"{OPENING[protocol]}\n{QUIT[protocol]}")) as again:
        _aim(client, again.port)
        await done(client.connect())
        seen.append(client.is_connected)
        await done(client.quit())


Scenario = Callable[[Any], Coroutine[Any, Any, list[object]]]


def _observed(
    adapter: str, protocol: str, steps: list[Step], scenario: Scenario, **options: Any
) -> list[object]:
    """What ``scenario`` saw, run against a server playing ``steps``, the client made
    with ``options`` besides the usual ones."""
    with ScriptedServer(steps) as server:
        client = _client(protocol, adapter, server.port, **options)
        seen: list[object]
        if adapter == "sync":  # its calls block: any loop runs the scenario
            seen = asyncio.run(scenario(client))
        else:
            seen = run(adapter, lambda: scenario(client))
    server.check()
    return seen


def _auth_failure(mechanism: Callable[[], Any]) -> Scenario:
    """Connect, fail to log in, and say what the session was at each point: before
    the connection, once connected, the error and after it; then QUIT."""

    async def scenario(client: Any) -> list[object]:
        seen: list[object] = [client.is_connected]
        await done(client.connect())
        seen.append(client.is_connected)
        try:
            await done(client.authenticate(mechanism()))
        except Exception as exc:  # the kind is checked by the caller
            seen.append(type(exc).__name__)
        seen.append(client.is_connected)
        await done(client.quit())
        seen.append(client.is_connected)
        return seen

    return scenario


def plain() -> PlainClient:
    return PlainClient("alice", "wonderland")


def scram() -> ScramSHA256Client:
    return ScramSHA256Client("alice", "wonderland")


@pytest.mark.parametrize(
    ("refusal", "raised"),
    [
        ("535 5.7.8 Authentication credentials invalid", "AuthenticationError"),
        ("454 4.7.0 Temporary authentication failure", "AuthenticationError"),
    ],
)
@pytest.mark.parametrize("adapter", ALL)
def test_a_refused_smtp_login_keeps_the_session(adapter: str, refusal: str, raised: str) -> None:
    steps = script(f"{SMTP_OPENING}\nC~ AUTH PLAIN .+\nS: {refusal}\n{QUIT['smtp']}")
    seen = _observed(adapter, "smtp", steps, _auth_failure(plain))
    assert seen == [False, True, raised, True, False]


@pytest.mark.parametrize("adapter", ALL)
def test_a_refused_pop3_login_keeps_the_session(adapter: str) -> None:
    steps = script(f"{POP3_OPENING}\nC~ AUTH PLAIN.*\nS: -ERR [AUTH] invalid\n{QUIT['pop3']}")
    seen = _observed(adapter, "pop3", steps, _auth_failure(plain))
    assert seen == [False, True, "POP3AuthenticationError", True, False]


@pytest.mark.parametrize("adapter", ALL)
def test_a_421_to_auth_closes_the_session(adapter: str) -> None:
    steps = script(f"{SMTP_OPENING}\nC~ AUTH PLAIN .+\nS: 421 4.3.2 shutting down\n-- close")
    seen = _observed(adapter, "smtp", steps, _auth_failure(plain))
    assert seen == [False, True, "SMTPConnectionError", False, False]


@pytest.mark.parametrize(
    ("protocol", "pattern", "raised"),
    [
        ("smtp", "AUTH PLAIN .+", "SMTPConnectionError"),
        ("pop3", "AUTH PLAIN.*", "POP3ConnectionError"),
    ],
)
@pytest.mark.parametrize("adapter", ALL)
def test_a_connection_lost_in_auth_closes_the_session(
    adapter: str, protocol: str, pattern: str, raised: str
) -> None:
    steps = script(f"{OPENING[protocol]}\nC~ {pattern}\n-- close")
    seen = _observed(adapter, protocol, steps, _auth_failure(plain))
    assert seen == [False, True, raised, False, False]


@pytest.mark.parametrize(
    ("protocol", "raised"), [("smtp", "AuthenticationError"), ("pop3", "POP3ProtocolError")]
)
@pytest.mark.parametrize("adapter", ALL)
def test_a_scram_server_that_does_not_prove_itself_closes_the_session(
    adapter: str, protocol: str, raised: str
) -> None:
    """A wrong server signature, and the server logs the client in all the same."""
    wire = WIRES[protocol]
    steps = [
        *script(wire.opening.format(mechanism="SCRAM-SHA-256")),
        Call(impostor(wire, "wrong signature")),
        ExpectClose(),
    ]
    seen = _observed(adapter, protocol, steps, _auth_failure(scram))
    assert seen == [False, True, raised, False, False]


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
@pytest.mark.parametrize("adapter", ALL)
def test_close_ends_the_session(adapter: str, protocol: str) -> None:
    async def scenario(client: Any) -> list[object]:
        await done(client.connect())
        seen: list[object] = [client.is_connected]
        await done(client.close())
        seen.append(client.is_connected)
        return seen

    steps = [*script(OPENING[protocol]), ExpectClose()]
    assert _observed(adapter, protocol, steps, scenario) == [True, False]


@pytest.mark.parametrize("adapter", ALL)
def test_a_pop3_session_the_machine_gave_up_on_is_not_connected(adapter: str) -> None:
    """A response no command asked for (a second one behind NOOP's) ends the session in
    the machine, before anything is sent, where the connection is still open: the
    session cannot go on, and ``is_connected`` says so before the caller's ``close()``."""

    async def scenario(client: Any) -> list[object]:
        await done(client.connect())
        await done(client.login("alice", "wonderland"))
        await done(client.noop())
        seen: list[object] = [client.is_connected]
        try:
            await done(client.noop())
        except Exception as exc:
            seen.append(type(exc).__name__)
        seen.append(client.is_connected)
        await done(client.close())
        return seen

    steps = [
        *script(f"{POP3_OPENING}\n{POP3_LOGIN}\nC: NOOP"),
        Send(b"+OK\r\n+OK unasked\r\n"),  # one write: the client reads both at once
        ExpectClose(),
    ]
    assert _observed(adapter, "pop3", steps, scenario) == [True, "POP3ProtocolError", False]


@pytest.mark.parametrize("adapter", ALL)
def test_a_pop3_session_the_machine_gave_up_on_refuses_calls_until_connect(adapter: str) -> None:
    """After the machine gave up (a response no command asked for), the connection still
    open: a later call is :class:`POP3ConnectionError`, not the machine's word that no
    command may go in its state, and ``connect()`` opens a new session, closing the old
    socket, rather than refuse as if the old one could go on."""

    async def scenario(client: Any) -> list[object]:
        await done(client.connect())
        await done(client.login("alice", "wonderland"))
        await done(client.noop())
        seen: list[object] = []
        for call in (client.noop, client.stat):
            try:
                await done(call())
            except Exception as exc:
                seen.append(type(exc).__name__)
        seen.append(client.is_connected)
        await _connect_again(client, "pop3", seen)
        return seen

    steps = [
        *script(f"{POP3_OPENING}\n{POP3_LOGIN}\nC: NOOP"),
        Send(b"+OK\r\n+OK unasked\r\n"),  # one write: the client reads both at once
        ExpectClose(),  # by connect(), before the new session
    ]
    seen = _observed(adapter, "pop3", steps, scenario)
    assert seen == ["POP3ProtocolError", "POP3ConnectionError", False, True]


@pytest.mark.parametrize("adapter", ALL)
def test_connect_after_quit_through_command_opens_a_new_session(adapter: str) -> None:
    """QUIT sent through ``command()`` and answered ``221`` ends the session in the
    machine, the connection still open: ``is_connected`` is false, and ``connect()``
    closes that connection and opens a new one."""

    async def scenario(client: Any) -> list[object]:
        await done(client.connect())
        reply = await done(client.command(Quit()))
        seen: list[object] = [reply.code, client.is_connected]
        await _connect_again(client, "smtp", seen)
        return seen

    steps = [*script(f"{SMTP_OPENING}\nC: QUIT\nS: 221 2.0.0 bye"), ExpectClose()]
    assert _observed(adapter, "smtp", steps, scenario) == [221, False, True]


GREETING = {"smtp": b"220 mx.test ESMTP\r\n", "pop3": b"+OK ready\r\n"}


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
@pytest.mark.parametrize("adapter", ALL)
def test_a_second_connect_does_not_read_the_last_sessions_machine(
    adapter: str, protocol: str
) -> None:
    """A ``connect()`` whose TLS handshake fails (``tls_on_connect`` to a server that
    greets in the clear), after a session left by ``close()`` between commands: the
    new connection has no session yet, and nothing is said on it. The last session's
    machine, still there, had the failed connect say QUIT, as if that session went on."""
    said: list[str] = []

    def trace(direction: str, line: str) -> None:
        said.append(f"{direction} {line}")

    async def scenario(client: Any) -> list[object]:
        await done(client.connect())
        await done(client.close())
        said.clear()
        seen: list[object] = []
        with ScriptedServer([Send(GREETING[protocol])]) as plain:
            _aim(client, plain.port, tls_on_connect=True)
            try:
                await done(client.connect())
            except Exception as exc:
                seen.append(type(exc).__name__)
        seen += [client.is_connected, said]
        return seen

    steps = [*script(OPENING[protocol]), ExpectClose()]
    raised = {"smtp": "SMTPConnectionError", "pop3": "POP3ConnectionError"}[protocol]
    seen = _observed(adapter, protocol, steps, scenario, trace=trace)
    assert seen == [raised, False, []]


@pytest.mark.parametrize("adapter", ALL)
def test_a_reconnect_that_cannot_open_leaves_nothing_of_the_last_session(adapter: str) -> None:
    """A ``connect()`` after a session that ended (``221`` to a QUIT through
    ``command()``) fails to open its connection: what the last session left (its
    login) is gone with it, not kept beside a session that is not there."""

    async def scenario(client: Any) -> list[object]:
        await done(client.connect())
        seen: list[object] = [client.authenticated_with]
        await done(client.command(Quit()))
        _aim(client, free_port())
        try:
            await done(client.connect())
        except Exception as exc:
            seen.append(type(exc).__name__)
        seen += [client.is_connected, client.authenticated_with]
        return seen

    opening = "S: 220 mx.test ESMTP\nC~ EHLO .+\nS: 250-mx.test\nS: 250 AUTH PLAIN"
    login = "C~ AUTH PLAIN .+\nS: 235 2.7.0 ok\nC: QUIT\nS: 221 2.0.0 bye"
    steps = [*script(f"{opening}\n{login}"), ExpectClose()]
    seen = _observed(adapter, "smtp", steps, scenario, username="alice", password="wonderland")
    assert seen == ["PLAIN", "SMTPConnectionError", False, None]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_connect_again_over_a_used_stream_refuses_and_leaves_the_stream_open(
    adapter: str,
) -> None:
    """A client made over a caller's stream serves one session: a ``connect()`` once
    it ended is refused before anything is done, the caller's stream left as it is
    (it is the caller's to close)."""

    async def scenario() -> list[object]:
        with ScriptedServer([*script(f"{SMTP_OPENING}\nC: QUIT\nS: 221 2.0.0 bye")]) as server:
            module: Any = importlib.import_module(f"smtpcore.{adapter}")
            if adapter == "asyncio":
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                client = module.SMTPClient.over_stream(reader, writer, starttls=False)
                still_open: Callable[[], bool] = lambda: not writer.is_closing()  # noqa: E731
            else:
                import trio

                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                client = module.SMTPClient.over_stream(stream, starttls=False)
                closed: list[bool] = []
                original = stream.aclose

                async def noting_close() -> None:
                    closed.append(True)
                    await original()

                stream.aclose = noting_close  # type: ignore[method-assign]
                still_open = lambda: not closed  # noqa: E731
            await client.connect()
            await client.command(Quit())
            seen: list[object] = []
            try:
                await client.connect()
            except Exception as exc:
                seen.append(type(exc).__name__)
            seen.append(still_open())
            await client.close()
            return seen

    assert run(adapter, scenario) == ["SMTPConnectionError", True]
