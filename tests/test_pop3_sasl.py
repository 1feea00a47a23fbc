"""POP3 AUTH (RFC 5034) driven by the smtpcore.sasl mechanisms, machine to machine.

The machines carry base64 lines and ``*``; the mechanisms, driven by the
application, decide. Additional data with success (SCRAM's server-final
message) travels as a last challenge answered by an empty response, since a
POP3 ``+OK`` cannot carry it (RFC 5034 §4).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from smtpcore import NEED_DATA, PAUSED
from smtpcore.pop3 import (
    Auth,
    AuthResponse,
    ClientConnection,
    Continue,
    Err,
    Event,
    Ok,
    Response,
    ServerConnection,
    State,
)
from smtpcore.sasl import (
    Challenge,
    ClientMechanism,
    Failure,
    LoginClient,
    LoginServer,
    PlainClient,
    PlainServer,
    ScramCredentials,
    ScramSHA256Client,
    ScramSHA256Server,
    ServerMechanism,
    Success,
    derive_scram_credentials,
)

PASSWORDS = {"mrose": "tanstaaf"}
SCRAM_KEYS = {user: derive_scram_credentials(pw, salt=b"s" * 16) for user, pw in PASSWORDS.items()}


def check_password(authzid: str, authcid: str, password: str) -> bool:
    return PASSWORDS.get(authcid) == password


def scram_keys(username: str) -> ScramCredentials | None:
    return SCRAM_KEYS.get(username)


def next_of(conn: ServerConnection | ClientConnection) -> Event:
    event = conn.next_event()
    assert event is not NEED_DATA and event is not PAUSED
    return event


def server_answer(step: Challenge | Success | Failure) -> Response:
    if isinstance(step, Challenge):
        return Continue(step.data)
    if isinstance(step, Success):
        return Continue(step.data) if step.data is not None else Ok("logged in")
    return Err(step.reason, code="SYS/TEMP" if step.temporary else "AUTH")


def authenticate(
    server_mechanism: ServerMechanism, client_mechanism: ClientMechanism, *, initial: bool
) -> tuple[Response, ServerConnection, ClientConnection]:
    server = ServerConnection("pop.pqr.example", sasl_mechanisms=[client_mechanism.name])
    client = ClientConnection("client.abc.example")
    client.receive_data(server.send(Ok("ready")))
    next_of(client)

    first = client_mechanism.initial_response() if initial else None
    server.receive_data(client.send(Auth(client_mechanism.name, first)))
    command = next_of(server)
    assert isinstance(command, Auth)
    answer = server_answer(server_mechanism.start(command.initial_response))
    succeeded = False
    while True:
        client.receive_data(server.send(answer))
        response = next_of(client)
        if not isinstance(response, Continue):
            assert isinstance(response, (Ok, Err))
            if isinstance(response, Ok):
                client_mechanism.verify_success(None)
            return response, server, client
        server.receive_data(client.send(AuthResponse(client_mechanism.respond(response.data))))
        event = next_of(server)
        assert isinstance(event, AuthResponse)
        if succeeded:  # the empty answer to the additional data
            answer = Ok("logged in")
            continue
        step = server_mechanism.step(event.data)
        succeeded = isinstance(step, Success)
        answer = server_answer(step)


@pytest.mark.parametrize("initial", [True, False])
@pytest.mark.parametrize(
    ("server_mechanism", "client_mechanism"),
    [
        (lambda: PlainServer(check_password), lambda: PlainClient("mrose", "tanstaaf")),
        (lambda: LoginServer(check_password), lambda: LoginClient("mrose", "tanstaaf")),
        (
            lambda: ScramSHA256Server(scram_keys),
            lambda: ScramSHA256Client("mrose", "tanstaaf"),
        ),
    ],
    ids=["PLAIN", "LOGIN", "SCRAM-SHA-256"],
)
def test_mechanisms_over_pop3(
    server_mechanism: Callable[[], ServerMechanism],
    client_mechanism: Callable[[], ClientMechanism],
    initial: bool,
) -> None:
    client_side = client_mechanism()
    response, server, client = authenticate(server_mechanism(), client_side, initial=initial)
    assert response == Ok("logged in")
    assert server.state is State.TRANSACTION
    assert client.state is State.TRANSACTION
    assert client_side.complete


def test_wrong_password_over_pop3() -> None:
    response, server, client = authenticate(
        PlainServer(check_password), PlainClient("mrose", "wrong"), initial=True
    )
    assert isinstance(response, Err)
    assert response.code == "AUTH"
    assert server.state is State.AUTHORIZATION
    assert client.state is State.AUTHORIZATION
