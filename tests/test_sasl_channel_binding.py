"""SCRAM-SHA-256-PLUS (RFC 5802 §6, RFC 9266): channel binding at the SASL level.

Client and server mechanisms back to back, as a protocol machine would run
them, with binding data chosen by Hypothesis: the same data on both ends
authenticates; different data (a man in the middle, who holds two TLS
connections), another binding type, a missing binding, or a ``y`` flag
where the server offers ``-PLUS`` (a downgrade) fails.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from smtpcore import LocalProtocolError
from smtpcore.sasl import (
    TLS_EXPORTER,
    Challenge,
    ClientMechanism,
    Failure,
    SASLError,
    ScramCredentials,
    ScramSHA256Client,
    ScramSHA256PlusClient,
    ScramSHA256PlusServer,
    ScramSHA256Server,
    ServerMechanism,
    Step,
    Success,
    derive_scram_credentials,
    needs_channel_binding,
    offered_mechanisms,
    saslprep,
    scram_client,
)
from smtpcore.smtp import Auth, AuthResponse, ServerAuth

users = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=",="),
    min_size=1,
    max_size=16,
)
passwords = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=24)
bindings = st.binary(min_size=1, max_size=64)


def run(client: ClientMechanism, server: ServerMechanism, *, initial_response: bool) -> Step:
    """Drive one exchange to its end; a client that refuses gives a Failure."""
    step = server.start(client.initial_response() if initial_response else None)
    for _ in range(8):
        if not isinstance(step, Challenge):
            break
        step = server.step(client.respond(step.data))
    if isinstance(step, Success):
        client.verify_success(step.data)
        assert client.complete
    return step


def credentials(user: str, password: str) -> dict[str, ScramCredentials]:
    return {user: derive_scram_credentials(password, salt=b"salt", iterations=1)}


def plus_server(
    store: dict[str, ScramCredentials], data: bytes | None, *, kind: str = TLS_EXPORTER
) -> ScramSHA256PlusServer:
    server = ScramSHA256PlusServer(store.get)
    server.bind_channel({} if data is None else {kind: data}, plus_offered=data is not None)
    return server


def plus_client(
    user: str, password: str, data: bytes, *, kind: str = TLS_EXPORTER, authzid: str = ""
) -> ScramSHA256PlusClient:
    return ScramSHA256PlusClient(
        user,
        password,
        channel_binding=data,
        channel_binding_type=kind,
        authzid=authzid,
        min_iterations=1,
    )


@settings(max_examples=40, deadline=None)
@given(users, passwords, bindings, st.booleans())
def test_the_same_binding_on_both_ends_authenticates(
    user: str, password: str, data: bytes, initial: bool
) -> None:
    client = plus_client(user, password, data)
    step = run(client, plus_server(credentials(user, password), data), initial_response=initial)
    assert isinstance(step, Success)
    assert (step.authcid, step.authzid) == (user, user)
    assert client.complete


@settings(max_examples=40, deadline=None)
@given(users, passwords, bindings, bindings, st.booleans())
def test_another_binding_fails_whatever_the_password(
    user: str, password: str, client_data: bytes, server_data: bytes, initial: bool
) -> None:
    """A man in the middle runs two TLS connections: their binding data differ."""
    assume(client_data != server_data)
    client = plus_client(user, password, client_data)
    server = plus_server(credentials(user, password), server_data)
    assert run(client, server, initial_response=initial) == Failure(
        "SCRAM channel-bindings-dont-match"
    )
    assert not client.complete


@settings(max_examples=25, deadline=None)
@given(users, passwords, bindings)
def test_the_binding_is_under_the_proof(user: str, password: str, data: bytes) -> None:
    """The client-final-message carries ``c=base64(gs2 header + data)``; an attacker
    who rewrites it to match his own connection breaks the proof."""
    client = plus_client(user, password, data)
    first = client.initial_response()
    assert first.startswith(b"p=tls-exporter,,n=")
    server = plus_server(credentials(user, password), b"other" + data)
    challenge = server.start(first)
    assert isinstance(challenge, Challenge)
    final = client.respond(challenge.data)
    expected = b"c=" + base64.b64encode(b"p=tls-exporter,," + data) + b","
    assert final.startswith(expected)
    forged = b"c=" + base64.b64encode(b"p=tls-exporter,,other" + data) + final[len(expected) - 1 :]
    assert server.step(forged) == Failure("SCRAM invalid-proof")


@settings(max_examples=25, deadline=None)
@given(users, passwords, bindings)
def test_an_authzid_rides_in_the_bound_header(user: str, password: str, data: bytes) -> None:
    client = plus_client(user, password, data, authzid="boss")
    server = ScramSHA256PlusServer(credentials(user, password).get, authorize=lambda z, c: True)
    server.bind_channel({TLS_EXPORTER: data}, plus_offered=True)
    step = run(client, server, initial_response=True)
    assert isinstance(step, Success)
    assert (step.authcid, step.authzid) == (user, "boss")


def test_a_type_the_server_lacks_fails() -> None:
    client = plus_client("user", "pencil", b"x" * 32, kind="tls-unique")
    server = plus_server(credentials("user", "pencil"), b"x" * 32)
    assert run(client, server, initial_response=True) == Failure(
        "SCRAM unsupported-channel-binding-type tls-unique"
    )


def test_a_plus_server_without_binding_data_fails() -> None:
    client = plus_client("user", "pencil", b"x" * 32)
    server = plus_server(credentials("user", "pencil"), None)
    step = run(client, server, initial_response=True)
    assert isinstance(step, Failure)


@pytest.mark.parametrize("supported", [False, True])
def test_a_plus_server_refuses_a_client_that_does_not_bind(supported: bool) -> None:
    client = ScramSHA256Client("user", "pencil", channel_binding_supported=supported)
    server = plus_server(credentials("user", "pencil"), b"x" * 32)
    assert run(client, server, initial_response=True) == Failure(
        "SCRAM SCRAM-SHA-256-PLUS without channel binding"
    )


def test_the_plain_server_refuses_a_binding_client() -> None:
    server = ScramSHA256Server(credentials("user", "pencil").get)
    server.bind_channel({TLS_EXPORTER: b"x" * 32}, plus_offered=True)
    step = run(plus_client("user", "pencil", b"x" * 32), server, initial_response=True)
    assert isinstance(step, Failure)


@settings(max_examples=25, deadline=None)
@given(users, passwords, bindings, st.booleans())
def test_the_y_flag_is_a_downgrade_where_plus_is_offered(
    user: str, password: str, data: bytes, plus_offered: bool
) -> None:
    """RFC 5802 §6: a client that could bind but saw no -PLUS says ``y``; a server
    that did offer -PLUS knows the list was tampered with and fails."""
    client = ScramSHA256Client(user, password, channel_binding_supported=True, min_iterations=1)
    assert client.initial_response().startswith(b"y,,n=")
    server = ScramSHA256Server(credentials(user, password).get)
    server.bind_channel({TLS_EXPORTER: data}, plus_offered=plus_offered)
    step = run(client, server, initial_response=True)
    if plus_offered:
        assert step == Failure("SCRAM server-does-support-channel-binding")
    else:
        assert isinstance(step, Success)


@pytest.mark.parametrize("plus_offered", [False, True])
def test_a_client_that_cannot_bind_still_gets_in(plus_offered: bool) -> None:
    """``n``: the client has no binding data, which is no downgrade (RFC 5802 §6)."""
    client = ScramSHA256Client("user", "pencil", min_iterations=1)
    assert client.initial_response().startswith(b"n,,n=")
    server = ScramSHA256Server(credentials("user", "pencil").get)
    server.bind_channel({TLS_EXPORTER: b"x" * 32}, plus_offered=plus_offered)
    assert isinstance(run(client, server, initial_response=False), Success)


@pytest.mark.parametrize(
    "first",
    [
        b"p=,,n=user,r=abc",
        b"p=tls exporter,,n=user,r=abc",
        b"p=tls_exporter,,n=user,r=abc",
        b"p=tls-exporter\xff,,n=user,r=abc",
        b"P=tls-exporter,,n=user,r=abc",
    ],
)
def test_malformed_binding_flags_fail(first: bytes) -> None:
    server = plus_server(credentials("user", "pencil"), b"x" * 32)
    assert isinstance(server.start(first), Failure)


def test_a_forged_server_signature_is_refused_by_the_plus_client() -> None:
    client = plus_client("user", "pencil", b"x" * 32)
    server = plus_server(credentials("user", "pencil"), b"x" * 32)
    challenge = server.start(client.initial_response())
    assert isinstance(challenge, Challenge)
    success = server.step(client.respond(challenge.data))
    assert isinstance(success, Success)
    with pytest.raises(SASLError):
        client.verify_success(b"v=" + base64.b64encode(bytes(32)))


def test_binding_is_given_before_the_exchange() -> None:
    server = ScramSHA256PlusServer(credentials("user", "pencil").get)
    server.start(None)
    with pytest.raises(LocalProtocolError):
        server.bind_channel({TLS_EXPORTER: b"x"}, plus_offered=True)
    with pytest.raises(LocalProtocolError, match="channel binding 'tls-exporter' is empty"):
        ScramSHA256PlusServer(credentials("user", "pencil").get).bind_channel(
            {TLS_EXPORTER: b""}, plus_offered=True
        )


@pytest.mark.parametrize(
    ("bindings", "plus_offered", "message"),
    [
        ({TLS_EXPORTER: "data"}, True, "channel binding 'tls-exporter' must be bytes, not str"),
        ({1: b"data"}, True, "a channel binding type must be a str, not int"),
        (None, True, "channel bindings must be a mapping, not NoneType"),
        ({TLS_EXPORTER: b"data"}, "yes", "plus_offered must be a bool, not str"),
    ],
)
def test_bindings_of_the_wrong_type_are_a_local_protocol_error(
    bindings: object, plus_offered: object, message: str
) -> None:
    server = ScramSHA256PlusServer(credentials("user", "pencil").get)
    with pytest.raises(LocalProtocolError, match=re.escape(message)) as raised:
        server.bind_channel(bindings, plus_offered=plus_offered)  # type: ignore[arg-type]
    assert not isinstance(raised.value, TypeError)


def test_the_client_needs_binding_data() -> None:
    with pytest.raises(LocalProtocolError):
        ScramSHA256PlusClient("user", "pencil", channel_binding=b"")
    with pytest.raises(LocalProtocolError):
        ScramSHA256PlusClient("user", "pencil", channel_binding=b"x", channel_binding_type="a,b")


def test_plus_is_offered_only_with_binding_data() -> None:
    names = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN"]
    assert offered_mechanisms(names, {}) == ["SCRAM-SHA-256", "PLAIN"]
    assert offered_mechanisms(names, {TLS_EXPORTER: b"x"}) == names
    assert needs_channel_binding("scram-sha-256-plus")
    assert not needs_channel_binding("SCRAM-SHA-256")
    assert not needs_channel_binding("scram-sha-256-plu\u017f")  # the long s is no S


def test_the_user_name_is_prepared_as_for_the_plain_variant() -> None:
    user = saslprep("I\u00adX")
    client = plus_client("I\u00adX", "pencil", b"x" * 32)
    step = run(client, plus_server(credentials(user, "pencil"), b"x" * 32), initial_response=True)
    assert isinstance(step, Success) and step.authcid == "IX"


@pytest.mark.parametrize(
    ("offered", "data", "expected"),
    [
        (["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"], b"x" * 32, b"p=tls-exporter,,"),
        (["scram-sha-256-plus"], b"x" * 32, b"p=tls-exporter,,"),
        (["SCRAM-SHA-256"], b"x" * 32, b"y,,"),  # could bind, no -PLUS offered
        (["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"], None, b"n,,"),  # cannot bind
        (["SCRAM-SHA-256"], None, b"n,,"),
        (["SCRAM-SHA-256-PLUS"], None, None),
        (["PLAIN"], b"x" * 32, None),
    ],
)
def test_scram_client_picks_as_rfc5802_section_6_says(
    offered: list[str], data: bytes | None, expected: bytes | None
) -> None:
    bindings = {} if data is None else {TLS_EXPORTER: data}
    client = scram_client("user", "pencil", offered=offered, channel_bindings=bindings)
    if expected is None:
        assert client is None
    else:
        assert client is not None
        assert client.initial_response().startswith(expected + b"n=user,r=")


def test_server_auth_runs_plus_only_with_binding_data() -> None:
    keys = credentials("user", "pencil")
    mechanisms: dict[str, Callable[[], ServerMechanism]] = {
        "SCRAM-SHA-256-PLUS": lambda: ScramSHA256PlusServer(keys.get),
        "SCRAM-SHA-256": lambda: ScramSHA256Server(keys.get),
    }
    data = b"x" * 32
    client = plus_client("user", "pencil", data)
    unbound = ServerAuth(mechanisms)
    assert unbound.start(Auth("SCRAM-SHA-256-PLUS", client.initial_response())).code == 504
    bound = ServerAuth(mechanisms, channel_bindings={TLS_EXPORTER: data})
    reply = bound.start(Auth("SCRAM-SHA-256-PLUS", client.initial_response()))
    reply = bound.step(AuthResponse(client.respond(reply.challenge_data())))
    client.respond(reply.challenge_data())  # the server-final message, in a 334
    assert bound.step(AuthResponse(b"")).code == 235
    client.verify_success(None)
    assert client.complete
    downgraded = ScramSHA256Client("user", "pencil", channel_binding_supported=True)
    reply = bound.start(Auth("SCRAM-SHA-256", downgraded.initial_response()))
    assert reply.code == 535
