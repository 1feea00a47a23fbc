"""Whatever an application's callable gives or raises, a server mechanism answers with
a Step: a result of the wrong type is the application's mistake (``callback_error``)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtpcore.handler import Authenticator
from smtpcore.sasl import (
    SERVER_MECHANISMS,
    TLS_EXPORTER,
    Challenge,
    CramMD5Server,
    Failure,
    LoginServer,
    OAuthBearerServer,
    PlainServer,
    ScramSHA1PlusServer,
    ScramSHA1Server,
    ScramSHA256PlusServer,
    ScramSHA256Server,
    ServerMechanism,
    Step,
    Success,
    XOAuth2Server,
    derive_scram_credentials,
)

Callback = Callable[..., Any]

CHANNEL_BINDING = b"x" * 32
DIGEST = b"0123456789abcdef0123456789abcdef"
BEARER = b"\x01auth=Bearer t\x01\x01"

# Each server mechanism: how to build it around one application callable, the name
# the mechanism gives that callable, and the responses that lead the exchange to it.
SERVERS: dict[str, tuple[Callable[[Callback], ServerMechanism], str, tuple[bytes, ...]]] = {
    "PLAIN": (PlainServer, "check_password", (b"\x00tim\x00pw",)),
    "LOGIN": (LoginServer, "check_password", (b"tim", b"pw")),
    "CRAM-MD5": (
        lambda callback: CramMD5Server(callback, "mx.example", nonce="1.2"),
        "get_password",
        (b"tim " + DIGEST,),
    ),
    "SCRAM-SHA-256": (ScramSHA256Server, "get_credentials", (b"n,,n=tim,r=abc",)),
    "SCRAM-SHA-1": (ScramSHA1Server, "get_credentials", (b"n,,n=tim,r=abc",)),
    "SCRAM-SHA-256-PLUS": (
        ScramSHA256PlusServer,
        "get_credentials",
        (b"p=tls-exporter,,n=tim,r=abc",),
    ),
    "SCRAM-SHA-1-PLUS": (
        ScramSHA1PlusServer,
        "get_credentials",
        (b"p=tls-exporter,,n=tim,r=abc",),
    ),
    "XOAUTH2": (XOAuth2Server, "check_token", (b"user=tim" + BEARER,)),
    "OAUTHBEARER": (OAuthBearerServer, "check_token", (b"n,a=tim," + BEARER,)),
}

# A result of a type the callable's alias does not allow (GetPassword, GetCredentials,
# CheckPassword, CheckToken): what a confused store or a wrong column gives.
WRONG_TYPE: dict[str, object] = {
    "check_password": "no",
    "get_password": b"pw",
    "get_credentials": derive_scram_credentials("pw", salt=b"salt", iterations=1).to_text(),
    "check_token": b"tim",
}


def test_every_server_mechanism_is_covered() -> None:
    assert SERVERS.keys() == SERVER_MECHANISMS.keys()


def exchange(mechanism: str, callback: Callback) -> Step:
    """Run ``mechanism`` around ``callback`` up to the step that calls it."""
    return play(mechanism, SERVERS[mechanism][0](callback))


def play(mechanism: str, server: ServerMechanism) -> Step:
    """Feed ``server`` the responses of :data:`SERVERS` that reach its callable."""
    responses = SERVERS[mechanism][2]
    server.bind_channel({TLS_EXPORTER: CHANNEL_BINDING}, plus_offered=False)
    step = server.start(None)
    for response in responses:
        assert isinstance(step, Challenge), step
        step = server.step(response)
    assert server.done
    return step


async def _never_run() -> None:
    """The body of an ``async def`` callable; the mechanism never awaits it."""


@pytest.fixture
def coroutine() -> Iterator[Coroutine[Any, Any, None]]:
    """What an ``async def`` callable gives; closed after, so that it is not reported
    as never awaited."""
    made = _never_run()
    yield made
    made.close()


def assert_callback_error(step: Step, callback: str, kind: str) -> None:
    assert isinstance(step, Failure), step
    assert step.callback_error
    assert step.temporary
    assert step.reason.startswith(f"{callback} gave {kind}, not ")


@pytest.mark.parametrize("mechanism", sorted(SERVERS))
def test_an_async_callable_is_the_applications_mistake(
    mechanism: str, coroutine: Coroutine[Any, Any, None]
) -> None:
    """Every application callable, lookups included: an ``async def`` one gives a
    coroutine, which no mechanism may use as a password, keys or a verdict."""
    step = exchange(mechanism, lambda *args: coroutine)
    assert_callback_error(step, SERVERS[mechanism][1], "coroutine")


@pytest.mark.parametrize("mechanism", sorted(SERVERS))
def test_a_result_of_the_wrong_type_is_the_applications_mistake(mechanism: str) -> None:
    callback = SERVERS[mechanism][1]
    wrong = WRONG_TYPE[callback]
    step = exchange(mechanism, lambda *args: wrong)
    assert_callback_error(step, callback, type(wrong).__name__)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize("kind", ["coroutine", "bytes"])
def test_an_authenticators_get_password_is_checked_under_every_mechanism(
    mechanism: str, kind: str, coroutine: Coroutine[Any, Any, None]
) -> None:
    """The one ``get_password`` an :class:`Authenticator` serves PLAIN and LOGIN with, as
    well as CRAM-MD5: a result of the wrong type is its mistake under all three."""
    wrong: Any = coroutine if kind == "coroutine" else b"pw"  # the callable's mistake
    authenticator = Authenticator(get_password=lambda user: wrong)
    server = authenticator.server_mechanisms("mx.example")[mechanism]()
    assert_callback_error(play(mechanism, server), "get_password", kind)


class StoreBroken(Exception):
    """Not CredentialsUnavailable: a bug in the application's store."""


@pytest.mark.parametrize("mechanism", sorted(SERVERS))
def test_a_callable_that_raises_is_the_adapters_to_answer(mechanism: str) -> None:
    """A lookup that raises is treated as ``check_password`` raising: the exception
    reaches the caller, whose adapter logs it and answers 454 4.7.0; the mechanism
    does not hide it as a failed login."""

    def broken(*args: object) -> object:
        raise StoreBroken

    with pytest.raises(StoreBroken):
        exchange(mechanism, broken)


def cram_md5_digest(key: bytes) -> bytes:
    return hmac.new(key, b"<1.2@mx.example>", hashlib.md5).hexdigest().encode("ascii")


@given(st.text(st.characters(exclude_categories=()), min_size=1, max_size=8))
@example("pen\udcffcil")  # the surrogate a non-UTF-8 octet decodes to (surrogateescape)
def test_a_stored_password_utf8_cannot_encode_matches_nothing_under_cram_md5(stored: str) -> None:
    """A stored password with a lone surrogate (not UTF-8) matches nothing, as under
    PLAIN and LOGIN, which read the client's password as UTF-8 and never match it:
    never an exception from the mechanism, and no key a client could send proves it.
    Any other password keys the HMAC with its UTF-8 octets (RFC 2195 §2)."""
    try:
        key = stored.encode("utf-8")
    except UnicodeEncodeError:
        for octets in (stored.encode("utf-8", "surrogatepass"), stored.encode("utf-8", "replace")):
            step = exchange_cram_md5(stored, b"tim " + cram_md5_digest(octets))
            assert isinstance(step, Failure) and not step.no_secret and not step.temporary
        return
    assert exchange_cram_md5(stored, b"tim " + cram_md5_digest(key)) == Success("tim", "tim")
    assert isinstance(exchange_cram_md5(stored, b"tim " + DIGEST), Failure)


def exchange_cram_md5(stored: str, response: bytes) -> Step:
    server = CramMD5Server({"tim": stored}.get, "mx.example", nonce="1.2")
    assert isinstance(server.start(None), Challenge)
    return server.step(response)
