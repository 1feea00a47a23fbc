"""Every client against its server, over many credentials (Hypothesis).

The driver below plays the protocol machine: initial response or not,
challenges to the client, responses to the server, and on success the
server's additional data to ``verify_success()``, as SMTP's 235 would, or
through one more ``respond()``, as SMTP's last 334 would.
"""

from __future__ import annotations

import hmac
import itertools
from collections.abc import Callable

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from smtpcore import LocalProtocolError
from smtpcore.sasl import (
    Challenge,
    ClientMechanism,
    CramMD5Client,
    CramMD5Server,
    Failure,
    LoginClient,
    LoginServer,
    OAuthBearerClient,
    OAuthBearerServer,
    PlainClient,
    PlainServer,
    SASLError,
    ScramCredentials,
    ScramSHA256Client,
    ScramSHA256PlusClient,
    ScramSHA256PlusServer,
    ScramSHA256Server,
    ServerMechanism,
    Step,
    Success,
    XOAuth2Client,
    XOAuth2Server,
    derive_scram_credentials,
    saslprep,
    saslprep_login,
)

names = st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), min_size=1, max_size=24)
# Printable ASCII and a few characters SASLprep maps, normalizes or keeps:
# NO-BREAK SPACE, SOFT HYPHEN, FEMININE ORDINAL, ROMAN NUMERAL NINE, e + acute,
# e-acute, sharp s, Cyrillic and CJK letters.
prep_chars = st.sampled_from(
    [chr(c) for c in range(0x20, 0x7F)]
    + ["\u00a0", "\u00ad", "\u00aa", "\u2168", "\u0301", "\u00e9", "\u00df", "\u0436", "\u4e2d"]
)
prep_names = st.text(prep_chars, min_size=1, max_size=16)
tokens = st.from_regex(r"[\x21-\x7e]{1,40}", fullmatch=True)


def run(
    client: ClientMechanism,
    server: ServerMechanism,
    *,
    initial_response: bool,
    success_data_as_challenge: bool = False,
) -> Step:
    """Drive one exchange to its end, as a protocol machine would."""
    step = server.start(client.initial_response() if initial_response else None)
    for _ in range(8):
        if not isinstance(step, Challenge):
            break
        step = server.step(client.respond(step.data))
    if isinstance(step, Success):
        if success_data_as_challenge and step.data is not None:
            assert client.respond(step.data) == b""
            client.verify_success(None)
        else:
            client.verify_success(step.data)
        assert client.complete
    return step


def check_password(users: dict[str, str]) -> Callable[[str, str, str], bool]:
    def check(authzid: str, authcid: str, password: str) -> bool:
        expected = users.get(authcid)
        return expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), password.encode("utf-8")
        )

    return check


def as_query(name: str) -> str | None:
    """The name a server mechanism looks up: :func:`saslprep_login`, as the mechanisms
    prepare names (SASLprep as a query, without the bidirectional rule, the domain of
    an address left as it is); None when it refuses or empties the name, which fails
    the exchange (RFC 4616 §2)."""
    try:
        return saslprep_login(name) or None
    except ValueError:
        return None


@settings(max_examples=60)
@given(names, names, st.one_of(st.just(""), names), st.booleans())
def test_plain(user: str, password: str, authzid: str, initial: bool) -> None:
    login, acting = as_query(user), as_query(authzid) if authzid else ""
    users = {login or user: password}
    server = PlainServer(check_password(users), authorize=lambda z, c: True)
    step = run(PlainClient(user, password, authzid), server, initial_response=initial)
    if login is None or acting is None:
        assert isinstance(step, Failure)
    else:
        assert step == Success(acting or login, login)
    wrong = run(
        PlainClient(user, password + "x"),
        PlainServer(check_password(users)),
        initial_response=initial,
    )
    assert isinstance(wrong, Failure)


@settings(max_examples=60)
@given(names, names, st.booleans())
def test_login(user: str, password: str, initial: bool) -> None:
    login = as_query(user)
    users = {login or user: password}
    step = run(
        LoginClient(user, password), LoginServer(check_password(users)), initial_response=initial
    )
    if login is None:
        assert isinstance(step, Failure)
    else:
        assert step == Success(login, login)
    wrong = run(
        LoginClient(user + "x", password),
        LoginServer(check_password(users)),
        initial_response=initial,
    )
    assert isinstance(wrong, Failure)


@settings(max_examples=60)
@given(
    names,
    st.text(st.characters(codec="utf-8"), max_size=24),
    st.from_regex(r"[0-9]{1,8}\.[a-z]{1,8}", fullmatch=True),
)
def test_cram_md5(user: str, password: str, nonce: str) -> None:
    login = as_query(user)
    users = {login or user: password}
    server = CramMD5Server(users.get, "mx.example", nonce=nonce)
    step = run(CramMD5Client(user, password), server, initial_response=False)
    if login is None:
        assert isinstance(step, Failure)
    else:
        assert step == Success(login, login)
    server = CramMD5Server(users.get, "mx.example", nonce=nonce)
    wrong = run(CramMD5Client(user, password + "x"), server, initial_response=False)
    assert isinstance(wrong, Failure)


def _prepared(text: str) -> str | None:
    try:
        return saslprep(text)
    except ValueError:
        return None


@settings(max_examples=40, deadline=None)
@given(
    prep_names,
    prep_names,
    st.one_of(st.just(""), names),
    st.binary(min_size=1, max_size=24),
    st.integers(1, 8),
    st.booleans(),
    st.booleans(),
)
def test_scram(
    user: str,
    password: str,
    authzid: str,
    salt: bytes,
    iterations: int,
    initial: bool,
    as_challenge: bool,
) -> None:
    assume(_prepared(user) and _prepared(password))
    prepared_user = as_query(user)  # the name the server looks up: a domain as it is
    assert prepared_user is not None
    credentials = derive_scram_credentials(password, salt=salt, iterations=iterations)
    store: dict[str, ScramCredentials] = {prepared_user: credentials}
    client = ScramSHA256Client(user, password, authzid=authzid, min_iterations=1)
    server = ScramSHA256Server(store.get, authorize=lambda z, c: True)
    step = run(client, server, initial_response=initial, success_data_as_challenge=as_challenge)
    acting = as_query(authzid) if authzid else ""
    if acting is None:
        assert isinstance(step, Failure)  # an authzid SASLprep refuses
    else:
        assert isinstance(step, Success)
        assert (step.authzid, step.authcid) == (acting or prepared_user, prepared_user)
        assert step.data is not None and step.data.startswith(b"v=")
    wrong = ScramSHA256Client(user, password + "x", min_iterations=1)
    step = run(wrong, ScramSHA256Server(store.get), initial_response=initial)
    assert isinstance(step, Failure)
    assert not wrong.complete


@settings(max_examples=60)
@given(names.filter(lambda name: "\x01" not in name), tokens, st.booleans())
def test_xoauth2(user: str, token: str, initial: bool) -> None:
    def check(who: str, presented: str) -> bool:
        return who == user and presented == token

    step = run(XOAuth2Client(user, token), XOAuth2Server(check), initial_response=initial)
    assert step == Success(user, user)
    client = XOAuth2Client(user, token + "x")
    assert isinstance(run(client, XOAuth2Server(check), initial_response=initial), Failure)
    assert client.error is not None


@settings(max_examples=60)
@given(
    st.one_of(st.just(""), names),
    tokens,
    st.one_of(st.none(), st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True)),
    st.one_of(st.none(), st.integers(1, 65535)),
    st.booleans(),
)
@example("\x01", "0", None, None, False)  # an authzid holding the kvsep (RFC 5801 allows it)
def test_oauthbearer(
    user: str, token: str, host: str | None, port: int | None, initial: bool
) -> None:
    def check(who: str, presented: str) -> bool | str:
        return presented == token and "owner"

    step = run(
        OAuthBearerClient(user, token, host=host, port=port),
        OAuthBearerServer(check, authorize=lambda z, c: True),
        initial_response=initial,
    )
    assert step == Success(user or "owner", "owner")
    client = OAuthBearerClient(user, token + "x")
    assert isinstance(run(client, OAuthBearerServer(check), initial_response=initial), Failure)
    assert client.error_details.get("status") == "invalid_token"


CLIENTS: dict[str, Callable[[], ClientMechanism]] = {
    "PLAIN": lambda: PlainClient("tim", "pw"),
    "LOGIN": lambda: LoginClient("tim", "pw"),
    "CRAM-MD5": lambda: CramMD5Client("tim", "pw"),
    "SCRAM-SHA-256": lambda: ScramSHA256Client("tim", "pw", min_iterations=1),
    "SCRAM-SHA-256-PLUS": lambda: ScramSHA256PlusClient(
        "tim", "pw", channel_binding=b"tls" * 8, min_iterations=1
    ),
    "XOAUTH2": lambda: XOAuth2Client("tim", "pw"),
    "OAUTHBEARER": lambda: OAuthBearerClient("tim", "pw"),
}
SCRAM_TIM = derive_scram_credentials("pw", iterations=2)


def bound(server: ServerMechanism) -> ServerMechanism:
    """The server of a session whose TLS layer gave the same binding data as the client's."""
    server.bind_channel({"tls-exporter": b"tls" * 8}, plus_offered=True)
    return server


def permissive_password(authzid: str, authcid: str, password: str) -> bool:
    return True


SERVERS: dict[str, Callable[[], ServerMechanism]] = {
    "PLAIN": lambda: PlainServer(permissive_password),
    "LOGIN": lambda: LoginServer(permissive_password),
    "CRAM-MD5": lambda: CramMD5Server({"tim": "pw"}.get, "mx.example"),
    "SCRAM-SHA-256": lambda: ScramSHA256Server({"tim": SCRAM_TIM}.get),
    "SCRAM-SHA-256-PLUS": lambda: bound(ScramSHA256PlusServer({"tim": SCRAM_TIM}.get)),
    "XOAUTH2": lambda: XOAuth2Server(lambda user, token: True),
    "OAUTHBEARER": lambda: OAuthBearerServer(lambda user, token: True),
}


@pytest.mark.parametrize(
    ("client_name", "server_name"),
    [pair for pair in itertools.product(CLIENTS, SERVERS) if pair[0] != pair[1]],
)
@pytest.mark.parametrize("initial", [True, False])
def test_mismatched_mechanisms_never_succeed(
    client_name: str, server_name: str, initial: bool
) -> None:
    """A client speaking another mechanism fails cleanly, even to a lax server."""
    try:
        step = run(CLIENTS[client_name](), SERVERS[server_name](), initial_response=initial)
    except SASLError:
        return
    assert isinstance(step, Failure | Challenge)


@pytest.mark.parametrize("name", sorted(CLIENTS))
@pytest.mark.parametrize("initial", [True, False])
def test_matched_mechanisms_succeed(name: str, initial: bool) -> None:
    step = run(CLIENTS[name](), SERVERS[name](), initial_response=initial)
    assert isinstance(step, Success)
    assert step.authcid == "tim"


@pytest.mark.parametrize("iterations", [0, -1, 2**32])
def test_a_mock_iteration_count_out_of_range_is_refused_at_construction(
    iterations: int,
) -> None:
    """Found only when an unknown user logs in, it would answer that user otherwise than
    a known one, and tell who exists."""
    with pytest.raises(LocalProtocolError, match="SCRAM mock_iterations must be from 1 to"):
        ScramSHA256Server(lambda name: None, mock_iterations=iterations)
