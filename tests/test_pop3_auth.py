"""``pop3.ServerAuth`` and ``pop3.ClientAuth``: an embedder's own loop runs a POP3 AUTH
exchange (RFC 5034) between the machines exactly as the adapters do."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore import NEED_DATA, PAUSED, LocalProtocolError, pop3
from smtpcore.sasl import (
    Challenge,
    ClientMechanism,
    CramMD5Client,
    CramMD5Server,
    CredentialsUnavailable,
    OAuthBearerServer,
    PlainClient,
    PlainServer,
    ScramSHA256Client,
    ScramSHA256PlusServer,
    ScramSHA256Server,
    ServerMechanism,
    derive_scram_credentials,
)

_KEYS = derive_scram_credentials("pencil", salt=b"s" * 16)


def _server_mechanisms() -> dict[str, Callable[[], ServerMechanism]]:
    return {
        "SCRAM-SHA-256": lambda: ScramSHA256Server({"tim": _KEYS}.get),
        "PLAIN": lambda: PlainServer(lambda z, c, p: c == "tim" and p == "pencil"),
        "CRAM-MD5": lambda: CramMD5Server({"tim": "pencil"}.get, "pop.test"),
        "OAUTHBEARER": lambda: OAuthBearerServer(lambda user, token: token == "good"),
    }


class _Session:
    """A server machine answered by ``ServerAuth``, a client machine driven by
    ``ClientAuth``, bytes passed between them by hand."""

    def __init__(self, *, one_call: bool = False) -> None:
        self.one_call = one_call
        """Whether the server answers through ``ServerAuth.answer`` alone."""
        mechanisms = _server_mechanisms()
        self.server = pop3.ServerConnection("pop.test", sasl_mechanisms=list(mechanisms))
        self.client = pop3.ClientConnection("client.test")
        self.auth = pop3.ServerAuth(mechanisms)
        self.logged_in: list[str] = []
        self.failed_logins = 0
        self.client.receive_data(self.server.send(self.server.greeting()))
        assert isinstance(self.client.next_event(), pop3.Ok)

    def exchange(self, event: pop3.Auth | pop3.AuthResponse) -> pop3.Event:
        """Send ``event``, let the server answer as an embedder would, give the answer."""
        self.client.receive_data(self.answer(self.client.send(event)))
        answer = self.client.next_event()
        assert answer is not NEED_DATA and answer is not PAUSED
        return answer

    def answer(self, line: bytes) -> bytes:
        """Give the server ``line``, answer it as an embedder would, give the bytes."""
        self.server.receive_data(line)
        command = self.server.next_event()
        if self.one_call:
            assert isinstance(command, pop3.Auth | pop3.AuthResponse | pop3.BadCommand)
            response: pop3.Ok | pop3.Err | pop3.Continue = self.auth.answer(command)
        elif isinstance(command, pop3.BadCommand):
            self.auth.abandon()
            response = command.response
        elif isinstance(command, pop3.Auth):
            response = self.auth.start(command)
        else:
            assert isinstance(command, pop3.AuthResponse)
            response = self.auth.step(command)
        if self.auth.success is not None:
            self.logged_in.append(self.auth.success.authzid)
        self.failed_logins += self.auth.failed_login
        if self.auth.bad_command:
            self.server.count_bad_command()
        return self.server.send(response)

    def login(self, mechanism: ClientMechanism) -> pop3.ClientAuth:
        flow = pop3.ClientAuth(mechanism)
        answer = self.exchange(flow.start())
        for _ in range(10):
            if not isinstance(answer, pop3.Continue):
                break
            answer = self.exchange(flow.respond(answer))
        assert isinstance(answer, pop3.Ok | pop3.Err)
        flow.finish(answer)
        return flow


def test_scram_success_data_goes_in_a_last_continuation_and_the_client_verifies_it() -> None:
    """RFC 5034 §4: additional data with success is a last "+ " line, answered empty,
    then +OK; the client proves the server knew the keys (RFC 5802 §5)."""
    session = _Session()
    session.login(ScramSHA256Client("tim", "pencil"))
    assert session.logged_in == ["tim"]
    assert session.server.state is pop3.State.TRANSACTION
    assert session.client.state is pop3.State.TRANSACTION


def test_a_wrong_password_is_a_failed_login_the_client_sees_as_authentication_failed() -> None:
    session = _Session()
    with pytest.raises(pop3.AuthenticationFailed) as raised:
        session.login(PlainClient("tim", "wrong"))
    assert raised.value.response == pop3.Err("Authentication failed", code="AUTH")
    assert session.failed_logins == 1 and session.logged_in == []
    assert session.server.state is pop3.State.AUTHORIZATION


def test_an_initial_response_to_cram_md5_is_a_bad_command_not_a_failed_login() -> None:
    """RFC 5034 §4: -ERR; no credential was tried, so the embedder counts a bad command."""
    session = _Session()
    answer = session.exchange(pop3.Auth("CRAM-MD5", b"tim 0123"))
    assert answer == pop3.Err("CRAM-MD5 takes no initial response")
    assert session.failed_logins == 0 and session.server._bad_commands == 1
    session.login(CramMD5Client("tim", "pencil"))
    assert session.logged_in == ["tim"]


_REFUSED_TOKEN = b"n,a=tim,\x01auth=Bearer bad\x01\x01"


def test_a_cancel_after_a_refused_bearer_token_is_a_failed_login() -> None:
    """RFC 7628 §3.2.2: the error challenge refuses the token; a "*" that answers it
    (RFC 5034 §4) ends a failed login, not a mere cancel."""
    session = _Session()
    first = session.exchange(pop3.Auth("OAUTHBEARER", _REFUSED_TOKEN))
    assert isinstance(first, pop3.Continue)  # the error challenge
    final = session.exchange(pop3.AuthResponse(cancel=True))
    assert final == pop3.Err("Authentication failed", code="AUTH")
    assert session.auth.failed_login and not session.auth.bad_command
    assert session.failed_logins == 1


def test_the_dummy_response_to_a_bearer_error_challenge_is_a_failed_login() -> None:
    """RFC 7628 §3.2.3: the client answers the error challenge with %x01, and the
    server ends the exchange with a failure."""
    session = _Session()
    assert isinstance(session.exchange(pop3.Auth("OAUTHBEARER", _REFUSED_TOKEN)), pop3.Continue)
    final = session.exchange(pop3.AuthResponse(b"\x01"))
    assert final == pop3.Err("Authentication failed", code="AUTH")
    assert session.failed_logins == 1


def test_an_unreadable_answer_after_a_refused_token_is_a_failed_login() -> None:
    """RFC 5034 §4: a line that is not base64 ends the exchange (a BadCommand the
    machine answers); the token was already refused, so abandon() says failed_login."""
    session = _Session()
    first = session.exchange(pop3.Auth("OAUTHBEARER", _REFUSED_TOKEN))
    assert isinstance(first, pop3.Continue)
    session.server.receive_data(b"!!!!\r\n")
    bad = session.server.next_event()
    assert isinstance(bad, pop3.BadCommand)
    refusal = session.auth.abandon()
    assert refusal is not None and session.auth.failure is refusal
    assert session.auth.failed_login and not session.auth.bad_command
    assert session.auth.success is None


@pytest.mark.parametrize("unreadable", [b"!!!!\r\n", b"A" * 4000 + b"\r\n"])
def test_answer_ends_an_exchange_a_bad_command_ended(unreadable: bytes) -> None:
    """A loop that sent the BadCommand's response without abandon() left the refused
    token's exchange under way in ServerAuth and its failed login uncounted (RFC
    7628 §3.2.2): a client tried tokens without limit. ServerAuth.answer takes the
    BadCommand with the rest, so the flags say failed_login."""
    session = _Session(one_call=True)
    first = session.exchange(pop3.Auth("OAUTHBEARER", _REFUSED_TOKEN))
    assert isinstance(first, pop3.Continue)
    assert session.answer(unreadable).startswith(b"-ERR")
    assert session.failed_logins == 1
    assert session.server.state is pop3.State.AUTHORIZATION


@pytest.mark.parametrize("one_call", [False, True], ids=["parts", "answer"])
def test_answer_and_its_parts_count_alike(one_call: bool) -> None:
    """The one call counts what start(), step() and abandon() do: one bad command for
    an initial response to CRAM-MD5 (RFC 5034 §4), one failed login for a wrong
    password, whatever junk follows."""
    session = _Session(one_call=one_call)
    _junk_after(session, pop3.Auth("CRAM-MD5", b"tim 0123"), junk=2)
    _junk_after(session, pop3.Auth("PLAIN", b"\0tim\0wrong"), junk=2)
    assert session.failed_logins == 1
    assert session.server._bad_commands == 5


def _junk_after(session: _Session, first: pop3.Auth, junk: int) -> None:
    session.exchange(first)
    for _ in range(junk):
        assert session.answer(b"XYZZY\r\n").startswith(b"-ERR")


def test_junk_after_a_refused_cram_md5_initial_response_counts_one_bad_command() -> None:
    """abandon() resets the flags: the BadCommands after an exchange that ended are
    the machine's to count, not the earlier step's bad_command again."""
    session = _Session()
    _junk_after(session, pop3.Auth("CRAM-MD5", b"tim 0123"), junk=2)
    assert session.server._bad_commands == 3  # the AUTH, counted once, and the two lines
    assert session.failed_logins == 0


def test_junk_after_a_wrong_password_counts_one_failed_login() -> None:
    session = _Session()
    _junk_after(session, pop3.Auth("PLAIN", b"\0tim\0wrong"), junk=2)
    assert session.failed_logins == 1
    assert not session.auth.failed_login and session.auth.failure is None


def test_a_plain_cancel_is_neither_a_failed_login_nor_a_success() -> None:
    session = _Session()
    assert session.exchange(pop3.Auth("PLAIN")) == pop3.Continue(b"")
    assert session.exchange(pop3.AuthResponse(cancel=True)) == pop3.Err("Authentication cancelled")
    assert session.failed_logins == 0 and session.logged_in == []


def test_credentials_unavailable_is_a_temporary_failure() -> None:
    """A store that cannot answer now (CredentialsUnavailable) is -ERR [SYS/TEMP]
    (RFC 3206 §4), neither a failed login nor the application's own mistake."""

    def unavailable(authzid: str, authcid: str, password: str) -> bool:
        raise CredentialsUnavailable("the password store is down")

    auth = pop3.ServerAuth({"PLAIN": lambda: PlainServer(unavailable)})
    answer = auth.start(pop3.Auth("PLAIN", b"\0tim\0pencil"))
    assert answer == pop3.Err("Temporary authentication failure", code="SYS/TEMP")
    assert auth.failure is not None and auth.failure.temporary
    assert not auth.failure.callback_error
    assert not auth.failed_login and not auth.bad_command


def test_a_broken_callback_is_a_temporary_failure_logged_as_the_applications() -> None:
    def broken(authzid: str, authcid: str, password: str) -> bool:
        return "yes"  # type: ignore[return-value]  # the callback's broken contract under test

    auth = pop3.ServerAuth({"PLAIN": lambda: PlainServer(broken)})
    answer = auth.start(pop3.Auth("PLAIN", b"\0tim\0pencil"))
    assert answer == pop3.Err("Temporary authentication failure", code="SYS/TEMP")
    assert auth.failure is not None and auth.failure.callback_error
    assert not auth.failed_login and not auth.bad_command


def test_mechanism_names_are_case_insensitive() -> None:
    """RFC 4422 §3.1: a mapping with lower-case names is advertised upper case in
    CAPA and so must be found under that name."""
    auth = pop3.ServerAuth({"plain": lambda: PlainServer(lambda z, c, p: p == "pencil")})
    assert list(auth.mechanisms) == ["PLAIN"]
    assert auth.start(pop3.Auth("plain", b"\0tim\0pencil")) == pop3.Ok("Logged in")


def test_a_plus_mechanism_without_channel_bindings_is_unsupported() -> None:
    """A -PLUS mechanism needs the TLS layer's channel binding data (RFC 5802 §6): with
    none it is not offered, so AUTH gets -ERR Unsupported, not a failed login."""
    keys = {"tim": _KEYS}
    auth = pop3.ServerAuth({"SCRAM-SHA-256-PLUS": lambda: ScramSHA256PlusServer(keys.get)})
    answer = auth.start(pop3.Auth("SCRAM-SHA-256-PLUS", b"p=tls-exporter,,n=tim,r=abcdefghijkl"))
    assert answer == pop3.Err("Unsupported authentication mechanism")
    assert auth.failure is None and not auth.failed_login and not auth.bad_command


def test_the_client_cancels_a_challenge_its_mechanism_refuses() -> None:
    """A server-final message that does not verify: the client sends "*" (RFC 5034 §4)
    and finish() raises, chaining the mechanism's reason."""
    flow = pop3.ClientAuth(ScramSHA256Client("tim", "pencil"))
    flow.start()
    assert flow.respond(pop3.Continue(b"not a server-first message")) == pop3.AuthResponse(
        cancel=True
    )
    assert flow.cancelled is not None
    with pytest.raises(pop3.AuthenticationFailed) as raised:
        flow.finish(pop3.Err("Authentication cancelled"))
    assert raised.value.__cause__ is flow.cancel_error
    with pytest.raises(pop3.AuthenticationFailed):
        flow.respond(pop3.Continue(b"more"))


def test_an_ok_without_the_server_proof_fails_scram() -> None:
    """The mapping an embedder might write by hand (+OK with no last "+ " line) leaves
    the client unable to verify the server: finish() says so."""
    flow = pop3.ClientAuth(ScramSHA256Client("tim", "pencil"))
    server = ScramSHA256Server({"tim": _KEYS}.get)
    command = flow.start()
    step = server.start(command.initial_response)
    assert isinstance(step, Challenge)
    response = flow.respond(pop3.Continue(step.data))
    assert response.data  # the client-final message
    with pytest.raises(pop3.AuthenticationFailed, match="prove"):
        flow.finish(pop3.Ok("logged in"))


def test_a_long_initial_response_waits_for_an_empty_challenge() -> None:
    """RFC 5034 §4: an initial response that would take AUTH over 255 octets (RFC 2449
    §4) is sent after an empty challenge instead."""
    flow = pop3.ClientAuth(PlainClient("tim", "p" * 300))
    assert flow.start() == pop3.Auth("PLAIN")
    assert flow.respond(pop3.Continue(b"")).data == b"\0tim\0" + b"p" * 300


class _Echo(ClientMechanism):
    """Answers each challenge with its own bytes: an answer of any length."""

    name = "X-ECHO"

    def _respond(self, challenge: bytes) -> bytes:
        return challenge


@given(answer=st.binary(max_size=40), slack=st.integers(-3, 3))
def test_the_client_cancels_exactly_the_answers_its_machine_refuses(
    answer: bytes, slack: int
) -> None:
    """``respond()`` reckons the answer's line from its length (base64 and CRLF), not
    by formatting it, which would cost two Python calls per answer: it cancels with
    ``*`` exactly the answers the machine, built with the same ``max_auth_line``,
    would refuse as the caller's mistake, and the ``*`` itself always fits."""
    conn = pop3.ClientConnection("client.test")
    conn.receive_data(b"+OK ready\r\n")
    assert isinstance(conn.next_event(), pop3.Ok)
    conn.send(pop3.Auth("X-ECHO"))
    conn.receive_data(b"+ \r\n")
    assert conn.next_event() == pop3.Continue(b"")
    bound = max(3, (len(answer) + 2) // 3 * 4 + 2 + slack)
    conn.max_auth_line = bound  # the challenge read, the machine's bound is the flow's
    flow = pop3.ClientAuth(_Echo(), max_auth_line=bound)
    sent = flow.respond(pop3.Continue(answer))
    if sent.cancel:
        with pytest.raises(LocalProtocolError, match="an AUTH response line is at most"):
            conn.send(pop3.AuthResponse(answer))
    else:
        assert sent == pop3.AuthResponse(answer)
    assert conn.send(sent)


@pytest.mark.parametrize("bound", [-1, 0, 2, True, "12288", None])
def test_a_max_auth_line_no_cancel_fits_is_the_callers_mistake(bound: object) -> None:
    """``max_auth_line=-1`` was taken, and every answer, an empty one too, was then
    cancelled as the server's fault; below 3 even the ``*`` that cancels (RFC 5034 §4)
    has no room."""
    with pytest.raises(LocalProtocolError, match="ClientAuth's max_auth_line"):
        pop3.ClientAuth(PlainClient("tim", "pencil"), max_auth_line=bound)  # type: ignore[arg-type]


def test_the_least_max_auth_line_is_taken() -> None:
    assert pop3.ClientAuth(PlainClient("tim", "pencil"), max_auth_line=3).max_auth_line == 3


NOT_SASL_NAMES = [
    "PLAIN X",  # two names on the CAPA SASL line
    "PLAIN\r\n+OK",  # a line break would end it
    "",
    "A" * 21,
    "pla\u0131n",  # str.upper() alone makes it PLAIN (dotless i): its case is ASCII
    "\u017fcram-sha-256",  # the long s, which str.upper() makes an S
]


@pytest.mark.parametrize("name", NOT_SASL_NAMES)
def test_a_sasl_mechanism_that_is_no_sasl_name_is_refused_when_configured(name: str) -> None:
    """Each name goes on CAPA's SASL line: RFC 4422 §3.1's 1 to 20 of A-Z, 0-9, - and _,
    upper-cased in ASCII alone, as the SMTP machine's ``auth_mechanisms``. The machine
    took any name, ``str.upper()``-ing ``"pla\u0131n"`` into PLAIN."""
    with pytest.raises(ValueError, match="not a SASL mechanism name"):
        pop3.ServerConnection("pop.test", sasl_mechanisms=["PLAIN", name])
    server = pop3.ServerConnection("pop.test", sasl_mechanisms=["PLAIN"])
    with pytest.raises(ValueError, match="not a SASL mechanism name"):
        server.sasl_mechanisms = ["LOGIN", name]
    assert server.sasl_mechanisms == ("PLAIN",)
    server.sasl_mechanisms = ["login", "scram-sha-256"]
    assert server.sasl_mechanisms == ("LOGIN", "SCRAM-SHA-256")
