"""The example exchanges the specifications themselves give, byte for byte."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from smtpcore.sasl import (
    Challenge,
    CramMD5Client,
    CramMD5Server,
    Failure,
    OAuthBearerClient,
    OAuthBearerServer,
    PlainClient,
    PlainServer,
    ScramCredentials,
    ScramSHA256Client,
    ScramSHA256Server,
    Success,
    XOAuth2Client,
    XOAuth2Server,
    derive_scram_credentials,
    saslprep,
)

# RFC 7677 §3
SCRAM_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SCRAM_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SCRAM_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
SCRAM_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SCRAM_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
SCRAM_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SCRAM_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _plain_check(authzid: str, authcid: str, password: str) -> bool:
    return {"tim": "tanstaaftanstaaf", "Kurt": "xipj3plmq"}.get(authcid) == password


def test_rfc4616_plain_tim() -> None:
    assert PlainClient("tim", "tanstaaftanstaaf").initial_response() == (
        b"\x00tim\x00tanstaaftanstaaf"
    )
    server = PlainServer(_plain_check)
    assert server.start(None) == Challenge(b"")
    assert server.step(b"\x00tim\x00tanstaaftanstaaf") == Success("tim", "tim")


def test_rfc4616_plain_kurt_may_not_act_as_ursel() -> None:
    assert PlainClient("Kurt", "xipj3plmq", "Ursel").initial_response() == (
        b"Ursel\x00Kurt\x00xipj3plmq"
    )
    refused = PlainServer(_plain_check).start(b"Ursel\x00Kurt\x00xipj3plmq")
    assert isinstance(refused, Failure)
    allowed = PlainServer(_plain_check, authorize=lambda authzid, authcid: authcid == "Kurt")
    assert allowed.start(b"Ursel\x00Kurt\x00xipj3plmq") == Success("Ursel", "Kurt")


def test_rfc2195_cram_md5() -> None:
    server = CramMD5Server(
        {"tim": "tanstaaftanstaaf"}.get,
        "postoffice.reston.mci.net",
        nonce="1896.697170952",
    )
    challenge = server.start(None)
    assert challenge == Challenge(b"<1896.697170952@postoffice.reston.mci.net>")
    response = CramMD5Client("tim", "tanstaaftanstaaf").respond(challenge.data)
    assert response == b"tim b913a602c7eda7a495b4e6e7334d3890"
    assert server.step(response) == Success("tim", "tim")


def test_rfc7677_scram_sha256_client() -> None:
    client = ScramSHA256Client("user", "pencil", nonce=SCRAM_CLIENT_NONCE)
    assert client.initial_response() == SCRAM_CLIENT_FIRST
    assert client.respond(SCRAM_SERVER_FIRST) == SCRAM_CLIENT_FINAL
    assert not client.complete
    client.verify_success(SCRAM_SERVER_FINAL)
    assert client.complete


def test_rfc7677_scram_sha256_server() -> None:
    credentials = derive_scram_credentials("pencil", salt=SCRAM_SALT, iterations=4096)
    server = ScramSHA256Server(
        {"user": credentials}.get, nonce=SCRAM_SERVER_NONCE, mock_secret=b"x"
    )
    assert server.start(SCRAM_CLIENT_FIRST) == Challenge(SCRAM_SERVER_FIRST)
    assert server.step(SCRAM_CLIENT_FINAL) == Success("user", "user", SCRAM_SERVER_FINAL)


def test_rfc7677_credentials_text_round_trip() -> None:
    credentials = derive_scram_credentials("pencil", salt=SCRAM_SALT, iterations=4096)
    text = credentials.to_text()
    assert text.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert ScramCredentials.from_text(text) == credentials


def test_rfc5802_s9_stolen_keys_and_one_observed_exchange_log_in() -> None:
    """RFC 5802 §9, which ScramCredentials' docstring once denied ("a thief of both
    still cannot log in"): StoredKey and one exchange observed (RFC 7677's) give the
    ClientKey, which logs in, in a new exchange, without the password."""
    stolen = derive_scram_credentials("pencil", salt=SCRAM_SALT, iterations=4096)

    def signature(first: bytes, challenge: bytes, final: bytes) -> bytes:
        auth_message = b",".join((first.removeprefix(b"n,,"), challenge, final))
        return hmac.new(stolen.stored_key, auth_message, "sha256").digest()

    def xor(left: bytes, right: bytes) -> bytes:
        return bytes(a ^ b for a, b in zip(left, right, strict=True))

    observed, _, proof = SCRAM_CLIENT_FINAL.rpartition(b",p=")
    client_key = xor(
        base64.b64decode(proof), signature(SCRAM_CLIENT_FIRST, SCRAM_SERVER_FIRST, observed)
    )
    assert hashlib.sha256(client_key).digest() == stolen.stored_key
    server = ScramSHA256Server({"user": stolen}.get)
    first = b"n,,n=user,r=thief"
    challenge = server.start(first)
    assert isinstance(challenge, Challenge)
    final = b"c=biws," + challenge.data.split(b",")[0]  # r=, the server's fresh nonce
    forged = xor(client_key, signature(first, challenge.data, final))
    outcome = server.step(final + b",p=" + base64.b64encode(forged))
    assert isinstance(outcome, Success) and outcome.authcid == "user"


def test_scram_keys_stay_out_of_their_repr() -> None:
    """The keys are secrets (above): the repr hides them, the fields keep them."""
    keys = derive_scram_credentials("pencil", salt=SCRAM_SALT, iterations=4096)
    assert repr(keys) == (
        f"ScramCredentials(salt={SCRAM_SALT!r}, iterations=4096, stored_key=<hidden>, "
        "server_key=<hidden>, hash_name='SHA-256')"
    )
    assert ScramCredentials.from_text(keys.to_text()) == keys


def test_rfc7628_oauthbearer_success() -> None:
    token = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
    message = (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
        b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
    )
    client = OAuthBearerClient("user@example.com", token, host="server.example.com", port=143)
    assert client.initial_response() == message
    server = OAuthBearerServer(lambda user, tok: user == "user@example.com" and tok == token)
    assert server.start(message) == Success("user@example.com", "user@example.com")
    assert server.fields["host"] == "server.example.com"


def test_rfc7628_oauthbearer_failure() -> None:
    configuration = "https://example.com/.well-known/openid-configuration"
    server = OAuthBearerServer(
        lambda user, token: False, scope="example_scope", openid_configuration=configuration
    )
    client = OAuthBearerClient("user@example.com", "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==")
    challenge = server.start(client.initial_response())
    assert challenge == Challenge(
        b'{"status":"invalid_token","scope":"example_scope",'
        b'"openid-configuration":"https://example.com/.well-known/openid-configuration"}'
    )
    assert client.respond(challenge.data) == b"\x01"
    assert client.error_details["status"] == "invalid_token"
    assert isinstance(server.step(b"\x01"), Failure)


def test_google_xoauth2_example() -> None:
    encoded = (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52"
        "YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )
    token = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    client = XOAuth2Client("someuser@example.com", token)
    assert client.initial_response() == base64.b64decode(encoded)
    server = XOAuth2Server(lambda user, tok: tok == token)
    assert server.start(base64.b64decode(encoded)) == Success(
        "someuser@example.com", "someuser@example.com"
    )


def test_google_xoauth2_error() -> None:
    server = XOAuth2Server(lambda user, token: False, scope="https://mail.google.com/")
    client = XOAuth2Client("someuser@example.com", "expired")
    challenge = server.start(client.initial_response())
    assert challenge == Challenge(
        b'{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}'
    )
    assert client.respond(challenge.data) == b""
    assert client.error_details["status"] == "401"
    assert isinstance(server.step(b""), Failure)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I\u00adX", "IX"),  # SOFT HYPHEN mapped to nothing
        ("user", "user"),
        ("USER", "USER"),  # case preserved
        ("\u00aa", "a"),  # NFKC
        ("\u2168", "IX"),  # NFKC, will match the first
    ],
)
def test_rfc4013_saslprep_examples(text: str, expected: str) -> None:
    assert saslprep(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "\u0007",  # prohibited character
        "\u0627\u0031",  # bidirectional check
    ],
)
def test_rfc4013_saslprep_errors(text: str) -> None:
    with pytest.raises(ValueError):
        saslprep(text)
