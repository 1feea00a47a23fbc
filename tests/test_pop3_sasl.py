"""POP3 AUTH (RFC 5034) driven by the smtpcore.sasl mechanisms, machine to machine.

The machines carry base64 lines and ``*``; the mechanisms, driven by the
application, decide. Additional data with success (SCRAM's server-final
message) travels as a last challenge answered by an empty response, since a
POP3 ``+OK`` cannot carry it (RFC 5034 §4).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

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
from smtpcore.testing import POP3ConnectionPair

PASSWORDS = {"mrose": "tanstaaf"}
SCRAM_KEYS = {user: derive_scram_credentials(pw, salt=b"s" * 16) for user, pw in PASSWORDS.items()}


def check_password(authzid: str, authcid: str, password: str) -> bool:
    return PASSWORDS.get(authcid) == password


def scram_keys(username: str) -> ScramCredentials | None:
    return SCRAM_KEYS.get(username)


def server_answer(step: Challenge | Success | Failure) -> Response:
    if isinstance(step, Challenge):
        return Continue(step.data)
    if isinstance(step, Success):
        return Continue(step.data) if step.data is not None else Ok("logged in")
    return Err(step.reason, code="SYS/TEMP" if step.temporary else "AUTH")


class MechanismMaildrop:
    """The server's application: AUTH and each response go to ``mechanism``."""

    def __init__(self, mechanism: ServerMechanism) -> None:
        self.mechanism = mechanism
        self.succeeded = False

    def __call__(self, conn: ServerConnection, event: Event) -> list[Event]:
        if isinstance(event, Auth):
            step = self.mechanism.start(event.initial_response)
        else:
            assert isinstance(event, AuthResponse), event
            if self.succeeded:  # the empty answer to the additional data
                return [Ok("logged in")]
            step = self.mechanism.step(event.data)
        self.succeeded = isinstance(step, Success)
        return [server_answer(step)]


def authenticate(
    server_mechanism: ServerMechanism, client_mechanism: ClientMechanism, *, initial: bool
) -> tuple[Response, ServerConnection, ClientConnection]:
    pair = POP3ConnectionPair(
        ClientConnection("client.abc.example"),
        ServerConnection("pop.pqr.example", sasl_mechanisms=[client_mechanism.name]),
        answer=MechanismMaildrop(server_mechanism),
    )
    first = client_mechanism.initial_response() if initial else None
    pair.send(Auth(client_mechanism.name, first))
    while isinstance(response := pair.client_events[-1], Continue):
        pair.send(AuthResponse(client_mechanism.respond(response.data)))
    assert isinstance(response, Ok | Err)
    if isinstance(response, Ok):
        client_mechanism.verify_success(None)
    return response, pair.server, pair.client


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
