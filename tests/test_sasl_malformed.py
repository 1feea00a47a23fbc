"""Whatever a client sends, a server mechanism answers with a Step, never an exception."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore import LocalProtocolError
from smtpcore.sasl import (
    Challenge,
    CramMD5Server,
    CredentialsUnavailable,
    Failure,
    LoginServer,
    OAuthBearerServer,
    PlainServer,
    SASLError,
    ScramSHA1PlusServer,
    ScramSHA1Server,
    ScramSHA256Client,
    ScramSHA256PlusServer,
    ScramSHA256Server,
    ServerMechanism,
    Success,
    UnexpectedInitialResponse,
    XOAuth2Server,
    derive_scram_credentials,
)

CREDENTIALS = derive_scram_credentials("pencil", salt=b"salt", iterations=4096)
SCRAM_FIRST = b"n,,n=user,r=abc"


def plain() -> ServerMechanism:
    return PlainServer(lambda authzid, authcid, password: (authcid, password) == ("tim", "pw"))


def login() -> ServerMechanism:
    return LoginServer(lambda authzid, authcid, password: (authcid, password) == ("tim", "pw"))


def cram() -> ServerMechanism:
    return CramMD5Server({"tim": "pw"}.get, "mx.example", nonce="1.2")


def scram() -> ServerMechanism:
    return ScramSHA256Server({"user": CREDENTIALS}.get, nonce="XYZ")


def xoauth2() -> ServerMechanism:
    return XOAuth2Server(lambda user, token: token == "good")


def oauthbearer() -> ServerMechanism:
    return OAuthBearerServer(lambda user, token: token == "good")


FACTORIES: dict[str, Callable[[], ServerMechanism]] = {
    "PLAIN": plain,
    "LOGIN": login,
    "CRAM-MD5": cram,
    "SCRAM-SHA-256": scram,
    "XOAUTH2": xoauth2,
    "OAUTHBEARER": oauthbearer,
}


def scram_final(client_final: str) -> bytes:
    """Play a valid client-first, then send ``client_final`` (str.format'ed)."""
    return client_final.format(
        cbind=base64.b64encode(b"n,,").decode(), nonce="abcXYZ", proof="A" * 43 + "="
    ).encode()


MALFORMED_START: list[tuple[str, bytes]] = [
    ("PLAIN", b"\xff\x00tim\x00pw"),  # bad UTF-8
    ("PLAIN", b"\x00tim\x00\xc0\xaf"),  # overlong UTF-8
    ("PLAIN", b"\x00tim\x00\xed\xa0\x80"),  # UTF-8 surrogate
    ("PLAIN", b"timpw"),  # no NUL
    ("PLAIN", b"tim\x00pw"),  # one NUL
    ("PLAIN", b"\x00tim\x00pw\x00"),  # three NULs
    ("PLAIN", b"\x00\x00pw"),  # empty authcid
    ("PLAIN", b"\x00tim\x00"),  # empty password
    ("PLAIN", b"\x00tim\x00wrong"),  # wrong password
    ("PLAIN", b"\x00nobody\x00pw"),  # unknown user
    ("PLAIN", b"ursel\x00tim\x00pw"),  # unauthorized authzid
    ("LOGIN", b"\xfftim"),
    ("LOGIN", b"ti\x00m"),
    ("CRAM-MD5", b"tim 0123456789abcdef0123456789abcdef"),  # initial response
    ("CRAM-MD5", b""),  # even an empty one
    ("SCRAM-SHA-256", b""),  # nothing at all
    ("SCRAM-SHA-256", b"\xff,,n=user,r=abc"),
    ("SCRAM-SHA-256", b"x,,n=user,r=abc"),  # wrong gs2 flag
    ("SCRAM-SHA-256", b"p=tls-unique,,n=user,r=abc"),  # channel binding
    ("SCRAM-SHA-256", b"n,n=user,r=abc"),  # gs2 header too short
    ("SCRAM-SHA-256", b"n,b=x,n=user,r=abc"),  # not an authzid
    ("SCRAM-SHA-256", b"n,a=,n=user,r=abc"),  # empty authzid
    ("SCRAM-SHA-256", b"n,,m=ext,n=user,r=abc"),  # mandatory extension
    ("SCRAM-SHA-256", b"n,,r=abc,n=user"),  # wrong order
    ("SCRAM-SHA-256", b"n,,n=user"),  # no nonce
    ("SCRAM-SHA-256", b"n,,n=us=3Xer,r=abc"),  # bad saslname escape
    ("SCRAM-SHA-256", b"n,,n=us=er,r=abc"),  # bare "="
    ("SCRAM-SHA-256", b"n,,n=,r=abc"),  # empty name
    ("SCRAM-SHA-256", b"n,,n=user,r="),  # empty nonce
    ("SCRAM-SHA-256", b"n,,n=user,r=a b"),  # space in nonce
    ("SCRAM-SHA-256", b"n,,n=us\x00er,r=abc"),  # NUL
    # RFC 5802 §7: what follows the nonce is extensions, each ALPHA "=" value.
    ("SCRAM-SHA-256", b"n,,n=user,r=abc,garbage"),
    ("SCRAM-SHA-256", b"n,,n=user,r=a,bc"),  # a "," in the nonce: not "a"
    ("SCRAM-SHA-256", b"n,,n=user,r=abc,x="),  # a value has one character or more
    ("SCRAM-SHA-256", b"n,,n=user,r=abc,xy=z"),  # one letter names an attribute
    ("SCRAM-SHA-256", b"n,,n=user,r=abc,"),
    ("XOAUTH2", b"user=a\x01auth=Bearer good"),  # no final separators
    ("XOAUTH2", b"user=a\x01\x01"),  # no auth
    ("XOAUTH2", b"auth=Bearer good\x01\x01"),  # no user
    ("XOAUTH2", b"user=\x01auth=Bearer good\x01\x01"),  # empty user
    ("XOAUTH2", b"user=a\x01auth=Basic good\x01\x01"),  # not Bearer
    ("XOAUTH2", b"user=a\x01auth=Bearer \x01\x01"),  # empty token
    ("XOAUTH2", b"user=a\x01user=b\x01auth=Bearer good\x01\x01"),  # duplicate key
    ("XOAUTH2", b"user=\xff\x01auth=Bearer good\x01\x01"),  # bad UTF-8
    ("XOAUTH2", b"user=a\x01auth=Bearer g\x00od\x01\x01"),  # NUL in token
    ("XOAUTH2", b"user=a\x01auth\x01\x01"),  # no "="
    ("OAUTHBEARER", b"n,,auth=Bearer good\x01\x01"),  # no separator after gs2 header
    ("OAUTHBEARER", b"p=tls-unique,,\x01auth=Bearer good\x01\x01"),  # channel binding
    ("OAUTHBEARER", b"n,a=u\x01auth=Bearer good\x01\x01"),  # gs2 header unterminated
    ("OAUTHBEARER", b"n,a=u=2,\x01auth=Bearer good\x01\x01"),  # bad escape
    ("OAUTHBEARER", b"n,,\x01\x01"),  # no auth
    ("OAUTHBEARER", b"n,,\x01h0st=x\x01auth=Bearer good\x01\x01"),  # bad key
    ("OAUTHBEARER", b"n,,\x01host=\x00\x01auth=Bearer good\x01\x01"),  # bad value
    ("OAUTHBEARER", b"n,,\x01auth=Bearer good\x01"),  # one final separator
    ("OAUTHBEARER", b"n,,\xff\x01auth=Bearer good\x01\x01"),  # bad UTF-8
    ("OAUTHBEARER", b"n,,\x01auth=Bearer good\x01auth=Bearer good\x01\x01"),  # duplicate
    ("OAUTHBEARER", b"n,,\x01auth=Bearer good\x01\x01"),  # valid token, but nobody named
]


@pytest.mark.parametrize(("mechanism", "response"), MALFORMED_START)
def test_malformed_initial_response_fails(mechanism: str, response: bytes) -> None:
    server = FACTORIES[mechanism]()
    step = server.start(response)
    if mechanism == "LOGIN":  # the initial response is the user name; the password follows
        step = step if isinstance(step, Failure) else server.step(b"pw")
    assert isinstance(step, Failure), step
    assert not step.temporary
    assert server.done
    # Only a server-first mechanism's refusal says no credential was tried.
    assert isinstance(step, UnexpectedInitialResponse) is (mechanism == "CRAM-MD5")


MALFORMED_FINAL: list[bytes] = [
    scram_final("c={cbind},r={nonce}"),  # no proof
    scram_final("c=eSws,r={nonce},p={proof}"),  # binding says "y,,", header said "n,,"
    scram_final("c=!!!!,r={nonce},p={proof}"),  # binding not base64
    scram_final("r={nonce},c={cbind},p={proof}"),  # wrong order
    scram_final("c={cbind},r=abcXYZW,p={proof}"),  # nonce mismatch
    scram_final("c={cbind},r=abc,p={proof}"),  # client nonce only
    scram_final("c={cbind},r={nonce},p=AAAA"),  # proof too short
    scram_final("c={cbind},r={nonce},p=not base64"),
    scram_final("c={cbind},r={nonce},p={proof},x=1"),  # something after the proof
    scram_final("c={cbind},r={nonce},p={proof}"),  # well formed, wrong proof
    b"c=biws,r=abcXYZ,p=\xff",  # bad UTF-8
    b"",
]


@pytest.mark.parametrize("response", MALFORMED_FINAL)
def test_malformed_scram_final_fails(response: bytes) -> None:
    server = scram()
    assert isinstance(server.start(SCRAM_FIRST), Challenge)
    step = server.step(response)
    assert isinstance(step, Failure), step


@pytest.mark.parametrize(
    "response",
    [b"tim", b"tim xyz", b"tim " + b"0" * 31, b" " + b"0" * 32, b"\xff " + b"0" * 32, b""],
)
def test_malformed_cram_md5_fails(response: bytes) -> None:
    server = cram()
    assert isinstance(server.start(None), Challenge)
    assert isinstance(server.step(response), Failure)


def test_cram_md5_accepts_upper_case_digest() -> None:
    server = CramMD5Server(
        {"tim": "tanstaaftanstaaf"}.get, "postoffice.reston.mci.net", nonce="1896.697170952"
    )
    server.start(None)
    assert server.step(b"tim B913A602C7EDA7A495B4E6E7334D3890") == Success("tim", "tim")


@pytest.mark.parametrize("mechanism", sorted(FACTORIES))
def test_over_long_response_fails(mechanism: str) -> None:
    server = FACTORIES[mechanism]()
    limit = server.max_response_size
    assert limit == 12288
    if mechanism == "CRAM-MD5":
        server.start(None)
        step = server.step(b"x" * (limit + 1))
    else:
        step = server.start(b"x" * (limit + 1))
    assert isinstance(step, Failure)
    assert "longer" in step.reason


def test_response_size_is_configurable() -> None:
    server = PlainServer(lambda z, c, p: True, max_response_size=7)
    assert isinstance(server.start(b"\x00tim\x00pw"), Success)
    server = PlainServer(lambda z, c, p: True, max_response_size=6)
    assert isinstance(server.start(b"\x00tim\x00pw"), Failure)
    with pytest.raises(LocalProtocolError, match="max_response_size must be at least 1"):
        PlainServer(lambda z, c, p: True, max_response_size=0)


def test_login_over_long_password_fails() -> None:
    server = LoginServer(lambda z, c, p: True, max_response_size=16)
    assert server.start(None) == Challenge(b"Username:")
    assert server.step(b"tim") == Challenge(b"Password:")
    assert isinstance(server.step(b"p" * 17), Failure)


@settings(max_examples=200)
@given(
    st.sampled_from(sorted(FACTORIES)), st.lists(st.binary(max_size=64), max_size=4), st.booleans()
)
def test_fuzzed_responses_never_raise(
    mechanism: str, responses: list[bytes], initial: bool
) -> None:
    server = FACTORIES[mechanism]()
    first = responses[0] if responses and initial else None
    step = server.start(first)
    for response in responses[1 if first is not None else 0 :]:
        if not isinstance(step, Challenge):
            break
        step = server.step(response)
    assert isinstance(step, Challenge | Success | Failure)


scram_tails = st.lists(
    st.sampled_from(
        [
            "c=biws",
            "c=eSws",
            "r=abcXYZ",
            "r=abc",
            "p=",
            "p=" + "A" * 43 + "=",
            "x=y",
            "=",
            ",",
            "m=1",
            "\x00",
        ]
    ),
    max_size=6,
).map(",".join)


@settings(max_examples=200)
@given(scram_tails)
def test_fuzzed_scram_final_never_raises(tail: str) -> None:
    server = scram()
    server.start(SCRAM_FIRST)
    assert isinstance(server.step(tail.encode()), Failure)


def test_unknown_user_is_like_a_wrong_password_scram() -> None:
    def exchange(user: str, password: str) -> tuple[bytes, Failure | Success]:
        client = ScramSHA256Client(user, password, nonce="abc")
        server = ScramSHA256Server({"user": CREDENTIALS}.get, nonce="XYZ", mock_secret=b"k")
        first = server.start(client.initial_response())
        assert isinstance(first, Challenge)
        outcome = server.step(client.respond(first.data))
        assert not isinstance(outcome, Challenge)
        return first.data, outcome

    _, wrong_password = exchange("user", "wrong")
    server_first, unknown_user = exchange("nobody", "wrong")
    assert wrong_password == unknown_user
    assert server_first.endswith(b",i=4096")
    # The fabricated salt does not change between attempts: no telltale.
    assert exchange("nobody", "other")[0] == server_first
    assert exchange("nobody2", "wrong")[0] != server_first


def test_unknown_user_is_like_a_wrong_password_cram_md5() -> None:
    def outcome(response: bytes) -> Failure | Success:
        server = cram()
        server.start(None)
        step = server.step(response)
        assert not isinstance(step, Challenge)
        return step

    digest = b"0123456789abcdef0123456789abcdef"
    assert outcome(b"tim " + digest) == outcome(b"nobody " + digest)


def test_unknown_user_fails_even_with_a_valid_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fabricated keys are not H(ClientKey) of anything; even if they were, no login."""
    server = ScramSHA256Server(lambda user: None, nonce="XYZ")
    monkeypatch.setattr(server, "_mock_credentials", lambda user: CREDENTIALS)
    client = ScramSHA256Client("ghost", "pencil", nonce="abc")
    first = server.start(client.initial_response())
    assert isinstance(first, Challenge)
    assert server.step(client.respond(first.data)) == Failure("SCRAM invalid-proof")


@pytest.mark.parametrize("mechanism", sorted(FACTORIES))
def test_credential_store_down_is_a_temporary_failure(mechanism: str) -> None:
    def down(*args: object) -> bool:
        raise CredentialsUnavailable("store down")

    servers: dict[str, ServerMechanism] = {
        "PLAIN": PlainServer(down),
        "LOGIN": LoginServer(down),
        "CRAM-MD5": CramMD5Server(down, "mx.example"),  # type: ignore[arg-type]  # raises anyway
        "SCRAM-SHA-256": ScramSHA256Server(down),  # type: ignore[arg-type]  # raises anyway
        "XOAUTH2": XOAuth2Server(down),
        "OAUTHBEARER": OAuthBearerServer(down),
    }
    responses = {
        "PLAIN": [b"\x00tim\x00pw"],
        "LOGIN": [b"tim", b"pw"],
        "CRAM-MD5": [b"tim 0123456789abcdef0123456789abcdef"],
        "SCRAM-SHA-256": [SCRAM_FIRST],
        "XOAUTH2": [b"user=a\x01auth=Bearer t\x01\x01"],
        "OAUTHBEARER": [b"n,a=a,\x01auth=Bearer t\x01\x01"],
    }
    server = servers[mechanism]
    step = server.start(None)
    for response in responses[mechanism]:
        assert isinstance(step, Challenge)
        step = server.step(response)
    assert step == Failure("store down", temporary=True)


def callback_error(reason: str) -> Failure:
    """The failure of a callback that broke its contract: temporary, no client's fault."""
    return Failure(reason, temporary=True, callback_error=True)


@pytest.mark.parametrize("verdict", ["no", 1, None, [False]])
def test_only_true_from_a_callback_authenticates(verdict: object) -> None:
    """A ``check_password`` or ``authorize`` that answers with anything but a bool
    (a truthy ``"no"``, say) refuses, naming the callback's mistake: read by
    truthiness, a wrong answer let the client in. The failure says it is the
    callback's (``callback_error``): read as a wrong password, it was counted
    against the client and never reached the application's log."""

    def check(*args: object) -> bool:
        return verdict  # type: ignore[return-value]  # the callback's mistake

    def yes(*args: object) -> bool:
        return True

    reason = f"check_password gave {type(verdict).__name__}, not a bool"
    assert PlainServer(check).start(b"\x00tim\x00pw") == callback_error(reason)
    server = LoginServer(check)
    server.start(b"tim")
    assert server.step(b"pw") == callback_error(reason)
    acting = PlainServer(yes, authorize=check)
    reason = f"authorize gave {type(verdict).__name__}, not a bool"
    assert acting.start(b"boss\x00tim\x00pw") == callback_error(reason)
    assert PlainServer(yes, authorize=yes).start(b"boss\x00tim\x00pw") == Success("boss", "tim")
    assert PlainServer(lambda *args: False).start(b"\x00tim\x00pw") == Failure(
        "invalid credentials"
    )


@pytest.mark.parametrize("verdict", [1, None, [True], b"tim"])
def test_a_token_check_that_gives_no_bool_or_str_is_its_own_mistake(verdict: object) -> None:
    """``check_token`` answers True, False or the token's owner: anything else (an
    ``async def``'s coroutine) was read as a refused token, the client's failure."""

    def check(user: str, token: str) -> bool:
        return verdict  # type: ignore[return-value]  # the callback's mistake

    reason = f"check_token gave {type(verdict).__name__}, not a bool or str"
    xoauth2 = XOAuth2Server(check).start(b"user=tim\x01auth=Bearer t\x01\x01")
    assert xoauth2 == callback_error(reason)
    oauthbearer = OAuthBearerServer(check).start(b"n,a=tim,\x01auth=Bearer t\x01\x01")
    assert oauthbearer == callback_error(reason)


@pytest.mark.parametrize("mechanism", sorted(FACTORIES))
def test_misuse_raises_local_protocol_error(mechanism: str) -> None:
    server = FACTORIES[mechanism]()
    with pytest.raises(LocalProtocolError):
        server.step(b"")
    server.start(b"\x00" * 20000)  # over the limit: ends the exchange
    assert server.done
    with pytest.raises(LocalProtocolError):
        server.step(b"")
    with pytest.raises(LocalProtocolError):
        server.start(None)


BYTES = re.escape("must be bytes (base64 is the protocol machine's job), not str")


def test_payloads_must_be_bytes() -> None:
    """A str payload is the application's misuse, worded as the client mechanisms and
    every public constructor word it (``wrong_type``); it was a TypeError."""
    with pytest.raises(LocalProtocolError, match="PLAIN initial response " + BYTES):
        plain().start("\x00tim\x00pw")  # type: ignore[arg-type]
    started = plain()
    started.start(None)
    with pytest.raises(LocalProtocolError, match="PLAIN response " + BYTES):
        started.step("\x00tim\x00pw")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="Challenge.data " + BYTES):
        Challenge("text")  # type: ignore[arg-type]


WRONG_SERVER_ARGUMENTS: dict[str, tuple[Callable[[], object], str]] = {
    "CRAM-MD5 hostname": (
        lambda: CramMD5Server(lambda user: "pw", 5),  # type: ignore[arg-type]
        "CRAM-MD5 hostname must be a str, not int",
    ),
    "CRAM-MD5 nonce": (
        lambda: CramMD5Server(lambda user: "pw", "mx.test", nonce=5),  # type: ignore[arg-type]
        "CRAM-MD5 nonce must be a str, not int",
    ),
    "max_response_size": (
        lambda: PlainServer(lambda *args: True, max_response_size="512"),  # type: ignore[arg-type]
        "max_response_size must be an int, not str",
    ),
    "max_response_size bool": (
        lambda: PlainServer(lambda *args: True, max_response_size=True),
        "max_response_size must be an int, not bool",
    ),
    # Found only for an unknown user, i=True would tell who exists: refused up front.
    "SCRAM mock_iterations bool": (
        lambda: ScramSHA256Server(lambda user: None, mock_iterations=True),
        "SCRAM mock_iterations must be an int, not bool",
    ),
    "SCRAM mock_iterations str": (
        lambda: ScramSHA256Server(lambda user: None, mock_iterations="4096"),  # type: ignore[arg-type]
        "SCRAM mock_iterations must be an int, not str",
    ),
    "SCRAM mock_secret": (
        lambda: ScramSHA256Server(lambda user: None, mock_secret="s"),  # type: ignore[arg-type]
        "SCRAM mock_secret must be None or bytes, not str",
    ),
    "XOAUTH2 scope": (
        lambda: XOAuth2Server(lambda user, token: False, scope=5),  # type: ignore[arg-type]
        "XOAUTH2 scope must be a str, not int",
    ),
    "OAUTHBEARER scope": (
        lambda: OAuthBearerServer(lambda user, token: False, scope=5),  # type: ignore[arg-type]
        "OAUTHBEARER scope must be a str, not int",
    ),
    "OAUTHBEARER openid_configuration": (
        lambda: OAuthBearerServer(
            lambda user, token: False,
            openid_configuration=b"x",  # type: ignore[arg-type]
        ),
        "OAUTHBEARER openid_configuration must be a str, not bytes",
    ),
}


@pytest.mark.parametrize("case", list(WRONG_SERVER_ARGUMENTS))
def test_a_server_argument_of_the_wrong_type_is_a_local_protocol_error(case: str) -> None:
    """As the client mechanisms: ``wrong_type``'s LocalProtocolError, never the
    TypeError a regex or a comparison meets further in."""
    build, message = WRONG_SERVER_ARGUMENTS[case]
    with pytest.raises(LocalProtocolError, match=re.escape(message)) as raised:
        build()
    assert not isinstance(raised.value, TypeError)


OUT_OF_RANGE_SERVER_ARGUMENTS: dict[str, tuple[Callable[[], object], str]] = {
    "max_response_size 0": (
        lambda: PlainServer(lambda *args: True, max_response_size=0),
        "max_response_size must be at least 1, not 0",
    ),
    "SCRAM max_response_size -1": (
        lambda: ScramSHA256Server(lambda user: None, max_response_size=-1),
        "max_response_size must be at least 1, not -1",
    ),
    "SCRAM mock_iterations 0": (
        lambda: ScramSHA256Server(lambda user: None, mock_iterations=0),
        "SCRAM mock_iterations must be from 1 to 4294967295, not 0",
    ),
    "SCRAM mock_iterations -1": (
        lambda: ScramSHA256Server(lambda user: None, mock_iterations=-1),
        "SCRAM mock_iterations must be from 1 to 4294967295, not -1",
    ),
    "SCRAM mock_iterations 2**32": (
        lambda: ScramSHA256Server(lambda user: None, mock_iterations=2**32),
        "SCRAM mock_iterations must be from 1 to 4294967295, not 4294967296",
    ),
    "SCRAM-SHA-1 mock_iterations 0": (
        lambda: ScramSHA1Server(lambda user: None, mock_iterations=0),
        "SCRAM mock_iterations must be from 1 to 4294967295, not 0",
    ),
    "SCRAM-SHA-1-PLUS mock_iterations -5": (
        lambda: ScramSHA1PlusServer(lambda user: None, mock_iterations=-5),
        "SCRAM mock_iterations must be from 1 to 4294967295, not -5",
    ),
    "SCRAM-SHA-256-PLUS mock_iterations 0": (
        lambda: ScramSHA256PlusServer(lambda user: None, mock_iterations=0),
        "SCRAM mock_iterations must be from 1 to 4294967295, not 0",
    ),
}


@pytest.mark.parametrize("case", list(OUT_OF_RANGE_SERVER_ARGUMENTS))
def test_a_server_argument_out_of_range_is_a_local_protocol_error(case: str) -> None:
    """A ``ValueError`` escaped the ProtocolError family where every argument of the
    wrong type is the application's ``LocalProtocolError``: so is a number no exchange
    can use, with the range it must lie in."""
    build, message = OUT_OF_RANGE_SERVER_ARGUMENTS[case]
    with pytest.raises(LocalProtocolError, match=re.escape(message)) as raised:
        build()
    assert not isinstance(raised.value, ValueError)


def test_the_ends_of_the_ranges_are_taken() -> None:
    assert PlainServer(lambda *args: True, max_response_size=1).max_response_size == 1
    for count in (1, 2**32 - 1):
        ScramSHA256Server(lambda user: None, mock_iterations=count)


SCRAM_NONCE = "abcXYZ"
SCRAM_BARE = SCRAM_FIRST.removeprefix(b"n,,")
SCRAM_SERVER_FIRST = f"r={SCRAM_NONCE},s={base64.b64encode(b'salt').decode()},i=4096".encode()


def proven_final(without_proof: bytes) -> bytes:
    """``without_proof`` and the proof of the right password over it (RFC 5802 §3):
    a client-final-message only its grammar can make the server refuse."""
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", b"salt", 4096)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    auth_message = SCRAM_BARE + b"," + SCRAM_SERVER_FIRST + b"," + without_proof
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return without_proof + b",p=" + base64.b64encode(proof)


CBIND = b"c=" + base64.b64encode(b"n,,") + b",r=" + SCRAM_NONCE.encode()


@pytest.mark.parametrize(
    ("without_proof", "accepted"),
    [
        (CBIND, True),
        (CBIND + b",x=an extension", True),  # RFC 5802 §7: ignored
        (CBIND + b",garbage", False),
        (CBIND + b",x=", False),
        (CBIND + b",", False),
        (CBIND + b",=y", False),
    ],
)
def test_a_scram_final_with_a_field_that_is_no_attribute_fails(
    without_proof: bytes, accepted: bool
) -> None:
    """The server took a client-final-message whose extensions were not ``ALPHA "="
    value`` (RFC 5802 §7) as long as the proof covered them: now such a message fails
    the exchange as any malformed one does, and a real extension is ignored."""
    server = scram()
    assert server.start(SCRAM_FIRST) == Challenge(SCRAM_SERVER_FIRST)
    step = server.step(proven_final(without_proof))
    assert isinstance(step, Success) is accepted, step
    if not accepted:
        assert step == Failure("SCRAM client-final-message is malformed")


def scram_client() -> ScramSHA256Client:
    client = ScramSHA256Client("user", "pencil", nonce="abc")
    client.initial_response()
    return client


@pytest.mark.parametrize(
    "server_first",
    [
        SCRAM_SERVER_FIRST + b",garbage",
        SCRAM_SERVER_FIRST + b",x=",
        SCRAM_SERVER_FIRST + b",",
        b"r=abc,XYZ,s=c2FsdA==,i=4096",  # a "," in the nonce
        b"r=abcXYZ,s=,i=4096",  # an empty value
    ],
)
def test_a_server_first_with_a_field_that_is_no_attribute_is_refused(
    server_first: bytes,
) -> None:
    """The client took ``...,i=4096,garbage``: RFC 5802 §7 allows only extensions
    (``ALPHA "=" value``) after the iteration count."""
    with pytest.raises(SASLError, match="server-first-message is malformed"):
        scram_client().respond(server_first)


def completed_exchange() -> tuple[ScramSHA256Client, bytes]:
    """A client past its proof, and the server-final-message that answers it."""
    client = ScramSHA256Client("user", "pencil", nonce="abc")
    server = scram()
    first = server.start(client.initial_response())
    assert isinstance(first, Challenge)
    success = server.step(client.respond(first.data))
    assert isinstance(success, Success) and success.data is not None
    return client, success.data


def test_a_server_final_with_a_field_that_is_no_attribute_is_refused() -> None:
    client, server_final = completed_exchange()
    with pytest.raises(SASLError, match="server-final-message is malformed"):
        client.verify_success(server_final + b",garbage")
    client, server_final = completed_exchange()
    client.verify_success(server_final + b",x=an extension")
    assert client.complete


ATTR_VAL = re.compile(r"[A-Za-z]=[^\x00,]+")
"""RFC 5802 §7 attr-val, as the test reads it: ALPHA "=" 1*value-char."""
value_chars = st.characters(codec="utf-8", blacklist_characters=",\x00")
attr_vals = st.builds(
    "{}={}".format, st.sampled_from(string.ascii_letters), st.text(value_chars, min_size=1)
)
not_attr_vals = st.text(
    st.characters(codec="utf-8", blacklist_characters=","), max_size=12
).filter(lambda field: ATTR_VAL.fullmatch(field) is None)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["client-first", "server-first", "server-final"]),
    st.lists(attr_vals, min_size=1, max_size=3),
    not_attr_vals,
)
def test_scram_messages_take_extensions_and_refuse_any_other_field(
    message: str, extensions: list[str], junk: str
) -> None:
    """Every message either side makes parses on the other with extensions after it
    (RFC 5802 §7: unrecognized attributes are ignored), and with a field that is no
    ``ALPHA "=" value`` after it, fails: the server's Failure, the client's SASLError."""
    tail = ("," + ",".join(extensions)).encode()
    bad = ("," + junk).encode()
    if message == "client-first":
        first = ScramSHA256Client("user", "pencil", nonce="abc").initial_response()
        assert isinstance(scram().start(first + tail), Challenge)
        assert scram().start(first + bad) == Failure("SCRAM client-first-message is malformed")
    elif message == "server-first":
        server = scram()
        server_first = server.start(scram_client().initial_response())
        assert isinstance(server_first, Challenge)
        assert scram_client().respond(server_first.data + tail).startswith(b"c=biws,r=abcXYZ,p=")
        with pytest.raises(SASLError, match="malformed"):
            scram_client().respond(server_first.data + bad)
    else:
        client, server_final = completed_exchange()
        client.verify_success(server_final + tail)
        assert client.complete
        client, server_final = completed_exchange()
        with pytest.raises(SASLError, match="malformed"):
            client.verify_success(server_final + bad)
