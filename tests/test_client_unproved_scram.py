"""A SCRAM server that logs the client in without proving itself ends the session.

RFC 5802 §5: a client that cannot verify the server's signature "MUST consider
the authentication exchange to be unsuccessful". A server that answers ``+OK``
(POP3) or ``235`` (SMTP) all the same, whether it sent a wrong ``v=``, no
server-final message at all, or accepted the client's ``*`` after a challenge
the client refused (a nonce that does not extend the client's, an iteration
count out of range), may be an impostor: a session left open would go on to
fetch mail from it, or send mail to it. Every client closes the connection
there, and the next call raises the closed connection's error without a byte
going out. Each mechanism with a server proof (SCRAM-SHA-1, SCRAM-SHA-256 and
their -PLUS forms), both protocols, the three clients.
"""

from __future__ import annotations

import base64
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from peers import ADAPTERS, run
from smtpcore.sasl import (
    ClientMechanism,
    ScramSHA1Client,
    ScramSHA1PlusClient,
    ScramSHA256Client,
    ScramSHA256PlusClient,
)
from smtpcore.testing import Call, ExpectClose, ScriptedConnection, ScriptedServer, Step, script

SALT = base64.b64encode(b"saltsaltsalt").decode()
BINDING = b"\x01" * 32

MECHANISMS: dict[str, Callable[[], ClientMechanism]] = {
    "SCRAM-SHA-1": lambda: ScramSHA1Client("alice", "wonderland"),
    "SCRAM-SHA-256": lambda: ScramSHA256Client("alice", "wonderland"),
    "SCRAM-SHA-1-PLUS": lambda: ScramSHA1PlusClient(
        "alice", "wonderland", channel_binding=BINDING
    ),
    "SCRAM-SHA-256-PLUS": lambda: ScramSHA256PlusClient(
        "alice", "wonderland", channel_binding=BINDING
    ),
}


@dataclass(frozen=True)
class Wire:
    """How one protocol carries a SASL exchange: the start of the session up to the
    client's AUTH, a challenge's prefix, the server's success and its refusal of the
    client's ``*``."""

    opening: str
    challenge: bytes
    success: bytes
    refusal: bytes


WIRES = {
    "pop3": Wire(
        "S: +OK ready\nC: CAPA\nS: +OK\nS: UIDL\nS: SASL {mechanism}\nS: .",
        b"+ ",
        b"+OK maildrop locked\r\n",
        b"-ERR Authentication cancelled\r\n",
    ),
    "smtp": Wire(
        "S: 220 mx.test ESMTP\nC~ EHLO .+\nS: 250-mx.test\nS: 250 AUTH {mechanism}",
        b"334 ",
        b"235 2.7.0 Authentication successful\r\n",
        b"501 5.7.0 Authentication cancelled\r\n",
    ),
}


def _server_first(nonce: str, case: str) -> bytes:
    """The server-first-message (RFC 5802 §7) for ``case``: a good one, or one the
    client must refuse (with ``*``)."""
    if case == "bad nonce":
        return f"r=EVIL{nonce},s={SALT},i=4096".encode()
    iterations = 10**9 if case == "iteration count" else 4096
    return f"r={nonce}SRV,s={SALT},i={iterations}".encode()


def impostor(
    wire: Wire, case: str, *, accept: bool = True, answer: bytes | None = None
) -> Callable[[ScriptedConnection], object]:
    """A server side of the exchange that never proves itself, and accepts anyway
    (or, not ``accept``, refuses the client's ``*``; or gives ``answer`` to it)."""

    def play(conn: ScriptedConnection) -> None:
        auth = conn.line()
        assert auth is not None and auth.upper().startswith(b"AUTH ")
        words = auth.split(b" ")
        if len(words) < 3:  # no initial response: it comes after an empty challenge
            conn.send(wire.challenge + b"\r\n")
            words.append(conn.line() or b"")
        client_first = base64.b64decode(words[2]).decode()
        nonce = client_first.split("r=", 1)[1]
        conn.send(wire.challenge + base64.b64encode(_server_first(nonce, case)) + b"\r\n")
        client_final = conn.line()
        if case == "wrong signature":
            assert client_final != b"*"
            wrong = b"v=" + base64.b64encode(b"x" * 20)
            conn.send(wire.challenge + base64.b64encode(wrong) + b"\r\n")
            assert conn.line() == b"*"
        elif case == "no server-final":
            assert client_final != b"*"
        else:
            assert client_final == b"*"
        conn.send(answer or (wire.success if accept else wire.refusal))

    return play


def steps(protocol: str, mechanism: str, case: str) -> list[Step]:
    wire = WIRES[protocol]
    return [
        *script(wire.opening.format(mechanism=mechanism)),
        Call(impostor(wire, case)),
        ExpectClose(),  # no LIST, no MAIL, no QUIT: nothing more to the impostor
    ]


def _client(protocol: str, adapter: str, port: int) -> Any:
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    timeout: dict[str, Any] = {"timeout": 10} if adapter == "sync" else {}
    if protocol == "pop3":
        return module.POP3Client("127.0.0.1", port, stls=False, **timeout)
    return module.SMTPClient("127.0.0.1", port, starttls=False, **timeout)


def _family(protocol: str, adapter: str) -> tuple[type[Exception], type[Exception]]:
    """The error ``authenticate`` raises, and the closed connection's."""
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    if protocol == "pop3":
        return module.POP3ProtocolError, module.POP3ConnectionError
    return module.AuthenticationError, module.SMTPConnectionError


CASES = ["wrong signature", "no server-final", "bad nonce", "iteration count"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mechanism", list(MECHANISMS))
@pytest.mark.parametrize("protocol", list(WIRES))
@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_server_that_accepts_without_its_proof_loses_the_session(
    adapter: str, protocol: str, mechanism: str, case: str
) -> None:
    failed, closed = _family(protocol, adapter)
    outcomes: list[str] = []

    def later_call(client: Any) -> Any:
        if protocol == "pop3":
            return client.list()
        return client.send_message(b"Subject: s\r\n\r\nsecret\r\n", "a@b.test", ["c@d.test"])

    with ScriptedServer(steps(protocol, mechanism, case)) as server:
        if adapter == "sync":
            with _client(protocol, adapter, server.port) as client:
                with pytest.raises(failed) as info:
                    client.authenticate(MECHANISMS[mechanism]())
                outcomes.append(str(info.value))
                with pytest.raises(closed):
                    later_call(client)
        else:

            async def session() -> None:
                async with _client(protocol, adapter, server.port) as client:
                    with pytest.raises(failed) as info:
                        await client.authenticate(MECHANISMS[mechanism]())
                    outcomes.append(str(info.value))
                    with pytest.raises(closed):
                        await later_call(client)

            run(adapter, session)
    server.check()
    assert outcomes[0].startswith(f"AUTH {mechanism}: ")
    assert "SCRAM " in outcomes[0]  # the mechanism's reason, not a guess


@pytest.mark.parametrize("protocol", list(WIRES))
@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_server_that_refuses_the_cancel_keeps_the_session(adapter: str, protocol: str) -> None:
    """The other side of the line: a server that answers the ``*`` with a refusal has
    logged nobody in, and the session goes on (to its QUIT), as after any refused
    login."""
    wire = WIRES[protocol]
    quit_ = "C: QUIT\nS: +OK bye" if protocol == "pop3" else "C: QUIT\nS: 221 2.0.0 bye"
    played = [
        *script(wire.opening.format(mechanism="SCRAM-SHA-256")),
        Call(impostor(wire, "wrong signature", accept=False)),
        *script(f"{quit_}\n-- close"),
    ]
    failed, _ = _family(protocol, adapter)
    with ScriptedServer(played) as server:
        if adapter == "sync":
            with (
                _client(protocol, adapter, server.port) as client,
                pytest.raises(failed, match="signature does not match"),
            ):
                client.authenticate(MECHANISMS["SCRAM-SHA-256"]())
        else:

            async def session() -> None:
                async with _client(protocol, adapter, server.port) as client:
                    with pytest.raises(failed, match="signature does not match"):
                        await client.authenticate(MECHANISMS["SCRAM-SHA-256"]())

            run(adapter, session)


@pytest.mark.parametrize("protocol", list(WIRES))
@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_challenge_after_the_cancel_loses_the_session(adapter: str, protocol: str) -> None:
    """A server that answers the client's ``*`` with another challenge: the session is
    closed, and the next call raises the closed connection's error, as documented, not
    the machine's "no command may be sent in the SASL state" (a plain error, on POP3)."""
    wire = WIRES[protocol]
    played = [
        *script(wire.opening.format(mechanism="SCRAM-SHA-256")),
        Call(impostor(wire, "bad nonce", answer=wire.challenge + b"\r\n")),
        ExpectClose(),
    ]
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    failed = module.POP3Error if protocol == "pop3" else module.SMTPError
    _, closed = _family(protocol, adapter)
    later: list[BaseException] = []

    def later_call(client: Any) -> Any:
        if protocol == "pop3":
            return client.list()
        return client.noop()

    with ScriptedServer(played) as server:
        if adapter == "sync":
            with _client(protocol, adapter, server.port) as client:
                with pytest.raises(failed):
                    client.authenticate(MECHANISMS["SCRAM-SHA-256"]())
                with pytest.raises(failed) as info:
                    later_call(client)
                later.append(info.value)
        else:

            async def session() -> None:
                async with _client(protocol, adapter, server.port) as client:
                    with pytest.raises(failed):
                        await client.authenticate(MECHANISMS["SCRAM-SHA-256"]())
                    with pytest.raises(failed) as info:
                        await later_call(client)
                    later.append(info.value)

            run(adapter, session)
    server.check()
    [error] = later
    assert isinstance(error, closed), repr(error)


LONGEST_NONCE = {"pop3": 9180, "smtp": 3000}
"""A server nonce whose challenge the client still reads (POP3's 12288-octet AUTH
line, SMTP's 4096-octet reply line) and whose answer, which repeats it with the
proof, no POP3 AUTH line holds: 12,336 octets."""


def long_nonce(wire: Wire, protocol: str) -> Callable[[ScriptedConnection], object]:
    """A server that makes the client's answer longer than the line allows, then
    refuses what comes (the ``*``, or on SMTP the answer itself)."""

    def play(conn: ScriptedConnection) -> None:
        auth = conn.line()
        assert auth is not None and auth.upper().startswith(b"AUTH SCRAM-SHA-256 ")
        nonce = base64.b64decode(auth.split(b" ")[2]).decode().split("r=", 1)[1]
        padded = nonce + "X" * (LONGEST_NONCE[protocol] - len(nonce))
        server_first = base64.b64encode(f"r={padded},s={SALT},i=4096".encode())
        conn.send(wire.challenge + server_first + b"\r\n")
        answer = conn.line()
        if protocol == "pop3":
            assert answer == b"*"  # RFC 5034 §4: an answer it cannot send, cancelled
            conn.send(wire.refusal)
        else:
            assert answer is not None and len(answer) > len(server_first)
            conn.send(b"535 5.7.8 Authentication credentials invalid\r\n")

    return play


@pytest.mark.parametrize("protocol", list(WIRES))
@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_challenge_whose_answer_no_line_holds_is_cancelled(adapter: str, protocol: str) -> None:
    """POP3's ``authenticate`` raised ``LocalProtocolError`` (the caller's fault) when a
    server's challenge made the answer longer than an AUTH line may be: the client
    now cancels with ``*`` (RFC 5034 §4), takes the server's ``-ERR``, and raises the
    error of a server that misbehaved; the session goes on to its QUIT. SMTP's client
    reads no reply line long enough to make an answer it cannot send: it answers."""
    wire = WIRES[protocol]
    quit_ = "C: QUIT\nS: +OK bye" if protocol == "pop3" else "C: QUIT\nS: 221 2.0.0 bye"
    played = [
        *script(wire.opening.format(mechanism="SCRAM-SHA-256")),
        Call(long_nonce(wire, protocol)),
        *script(f"{quit_}\n-- close"),
    ]
    failed, _ = _family(protocol, adapter)
    errors: list[BaseException] = []
    with ScriptedServer(played) as server:
        if adapter == "sync":
            with _client(protocol, adapter, server.port) as client:
                with pytest.raises(failed) as info:
                    client.authenticate(ScramSHA256Client("alice", "wonderland"))
                errors.append(info.value)
        else:

            async def session() -> None:
                async with _client(protocol, adapter, server.port) as client:
                    with pytest.raises(failed) as info:
                        await client.authenticate(ScramSHA256Client("alice", "wonderland"))
                    errors.append(info.value)

            run(adapter, session)
    server.check()
    [error] = errors
    if protocol == "pop3":
        assert "would be a line of 12318 octets, over the 12288" in str(error), error
