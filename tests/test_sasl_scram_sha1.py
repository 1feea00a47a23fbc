"""SCRAM-SHA-1 and SCRAM-SHA-1-PLUS (RFC 5802): the same exchange as SCRAM-SHA-256 with
SHA-1 for the hash, checked against RFC 5802 §5's example byte for byte, run against our
own server side with and without channel binding, and chosen where a server offers it."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore._driver._smtp_credentials import Credentials
from smtpcore.sasl import (
    TLS_EXPORTER,
    Challenge,
    Failure,
    ScramCredentials,
    ScramSHA1Client,
    ScramSHA1PlusClient,
    ScramSHA1PlusServer,
    ScramSHA1Server,
    ScramSHA256Server,
    Success,
    derive_scram_credentials,
    scram_client,
)
from smtpcore.smtp import Reply, ServerExtensions
from test_sasl_channel_binding import passwords, run, users

# RFC 5802 §5 (user "user", password "pencil")
CLIENT_NONCE = "fyko+d2lbbFgONRv9qkxdawL"
SERVER_NONCE = "3rfcNHYJY1ZVvWVs7j"
SALT = base64.b64decode("QSXCR+Q6sek8bf92")
CLIENT_FIRST = b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
SERVER_FIRST = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
CLIENT_FINAL = (
    b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
)
SERVER_FINAL = b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="


def sha1_keys(user: str, password: str) -> dict[str, ScramCredentials]:
    return {
        user: derive_scram_credentials(password, salt=b"salt", iterations=1, hash_name="SHA-1")
    }


def test_rfc5802_client() -> None:
    client = ScramSHA1Client("user", "pencil", nonce=CLIENT_NONCE)
    assert client.initial_response() == CLIENT_FIRST
    assert client.respond(SERVER_FIRST) == CLIENT_FINAL
    client.verify_success(SERVER_FINAL)
    assert client.complete


def test_rfc5802_server() -> None:
    keys = derive_scram_credentials("pencil", salt=SALT, iterations=4096, hash_name="SHA-1")
    server = ScramSHA1Server({"user": keys}.get, nonce=SERVER_NONCE)
    assert server.start(CLIENT_FIRST) == Challenge(SERVER_FIRST)
    assert server.step(CLIENT_FINAL) == Success("user", "user", SERVER_FINAL)


def test_sha1_keys_are_kept_with_their_hash() -> None:
    keys = derive_scram_credentials("pencil", salt=SALT, iterations=4096, hash_name="SHA-1")
    assert keys.hash_name == "SHA-1" and len(keys.stored_key) == len(keys.server_key) == 20
    text = keys.to_text()
    assert text.startswith("SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$")
    assert ScramCredentials.from_text(text) == keys
    with pytest.raises(ValueError, match="20 octets"):
        ScramCredentials(SALT, 4096, b"x" * 32, b"x" * 32, "SHA-1")
    with pytest.raises(ValueError, match="SCRAM hash"):
        derive_scram_credentials("pencil", hash_name="MD5")


@settings(max_examples=30, deadline=None)
@given(users, passwords, st.binary(min_size=1, max_size=64))
def test_both_variants_authenticate_against_our_server(
    user: str, password: str, data: bytes
) -> None:
    keys = sha1_keys(user, password)
    plain = ScramSHA1Client(user, password, min_iterations=1)
    step = run(plain, ScramSHA1Server(keys.get), initial_response=True)
    assert isinstance(step, Success) and step.authcid == user
    server = ScramSHA1PlusServer(keys.get)
    server.bind_channel({TLS_EXPORTER: data}, plus_offered=True)
    plus = ScramSHA1PlusClient(user, password, channel_binding=data, min_iterations=1)
    step = run(plus, server, initial_response=True)
    assert isinstance(step, Success) and step.authcid == user


@settings(max_examples=30, deadline=None)
@given(users, passwords, passwords)
def test_a_wrong_password_fails(user: str, password: str, other: str) -> None:
    client = ScramSHA1Client(user, other, min_iterations=1)
    step = run(client, ScramSHA1Server(sha1_keys(user, password).get), initial_response=False)
    assert isinstance(step, Failure) if other != password else isinstance(step, Success)


def test_another_binding_fails() -> None:
    server = ScramSHA1PlusServer(sha1_keys("user", "pencil").get)
    server.bind_channel({TLS_EXPORTER: b"theirs"}, plus_offered=True)
    client = ScramSHA1PlusClient("user", "pencil", channel_binding=b"ours", min_iterations=1)
    step = run(client, server, initial_response=True)
    assert step == Failure("SCRAM channel-bindings-dont-match")


def test_the_y_flag_is_a_downgrade_where_sha1_plus_is_offered() -> None:
    server = ScramSHA1Server(sha1_keys("user", "pencil").get)
    server.bind_channel({TLS_EXPORTER: b"x" * 32}, plus_offered=True)
    client = ScramSHA1Client("user", "pencil", channel_binding_supported=True, min_iterations=1)
    step = run(client, server, initial_response=True)
    assert step == Failure("SCRAM server-does-support-channel-binding")


@pytest.mark.parametrize(
    ("server", "hash_name"), [(ScramSHA1Server, "SHA-256"), (ScramSHA256Server, "SHA-1")]
)
def test_keys_of_another_hash_are_a_temporary_failure(
    server: type[ScramSHA1Server | ScramSHA256Server], hash_name: str
) -> None:
    """The application's mistake, not the client's: SMTP answers 454, not 535."""
    keys = {"user": derive_scram_credentials("pencil", iterations=1, hash_name=hash_name)}
    step = server(keys.get).start(b"n,,n=user,r=abc")
    assert isinstance(step, Failure) and step.temporary
    assert "keys" in step.reason


@pytest.mark.parametrize(
    ("offered", "data", "name", "flag"),
    [
        (["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"], b"x" * 32, "SCRAM-SHA-1-PLUS", b"p=tls-exporter"),
        (["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256"], b"x" * 32, "SCRAM-SHA-1-PLUS", b"p=tls-exporter"),
        (
            ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"],
            b"x" * 32,
            "SCRAM-SHA-256-PLUS",
            b"p=tls-exporter",
        ),
        (["SCRAM-SHA-1"], b"x" * 32, "SCRAM-SHA-1", b"y"),
        (["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"], None, "SCRAM-SHA-1", b"n"),
        (["SCRAM-SHA-1", "SCRAM-SHA-256"], None, "SCRAM-SHA-256", b"n"),
        (["scram-sha-1"], None, "SCRAM-SHA-1", b"n"),
    ],
)
def test_the_client_picks_sha1_only_where_nothing_better_is_offered(
    offered: list[str], data: bytes | None, name: str, flag: bytes
) -> None:
    bindings = {} if data is None else {TLS_EXPORTER: data}
    extensions = ServerExtensions.from_reply(Reply(250, ["mx.test", "AUTH " + " ".join(offered)]))
    for client in (
        scram_client("user", "pencil", offered=offered, channel_bindings=bindings),
        # What the SMTP clients choose with a password (smtpcore.asyncio, .trio, .sync).
        Credentials("user", "pencil").choose(
            extensions,
            tls=False,
            allow_plaintext=False,
            host="mx.test",
            port=25,
            channel_bindings=bindings,
        ),
    ):
        assert client is not None and client.name == name
        first = client.initial_response()
        assert first is not None and first.startswith(flag + b",,n=user,r=")


def test_a_client_told_not_to_bind_says_n_where_plus_is_offered() -> None:
    """Ruled out by its caller, the -PLUS offered is no downgrade to report (RFC 5802 §6)."""
    reply = Reply(250, ["mx.test", "AUTH SCRAM-SHA-1-PLUS SCRAM-SHA-1"])
    credentials = Credentials("user", "pencil", allowed=["SCRAM-SHA-1"])
    chosen = credentials.choose(
        ServerExtensions.from_reply(reply),
        tls=False,
        allow_plaintext=False,
        host="mx.test",
        port=25,
        channel_bindings={TLS_EXPORTER: b"x" * 32},
    )
    assert chosen.name == "SCRAM-SHA-1"
    assert (chosen.initial_response() or b"").startswith(b"n,,n=user,r=")
