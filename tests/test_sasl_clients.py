"""Client mechanisms: a bad or unverifiable server is a SASLError, never a login."""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore import LocalProtocolError, ProtocolError, pop3, smtp
from smtpcore.sasl import (
    ClientMechanism,
    CramMD5Client,
    LoginClient,
    OAuthBearerClient,
    PlainClient,
    SASLError,
    ScramSHA1Client,
    ScramSHA1PlusClient,
    ScramSHA256Client,
    ScramSHA256PlusClient,
    XOAuth2Client,
)

NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def scram_client(
    *, min_iterations: int = 4096, max_iterations: int = 1_000_000
) -> ScramSHA256Client:
    return ScramSHA256Client(
        "user",
        "pencil",
        nonce=NONCE,
        min_iterations=min_iterations,
        max_iterations=max_iterations,
    )


def test_sasl_error_is_a_protocol_error() -> None:
    assert issubclass(SASLError, ProtocolError)


@pytest.mark.parametrize(
    "server_first",
    [
        b"m=ext,r=rOprNGfwEbeRWgbNEkqOxyz,s=QQ==,i=4096",  # mandatory extension
        b"r=rOprNGfwEbeRWgbNEkqO,s=QQ==,i=4096",  # the server added no nonce
        b"r=somebodyelse,s=QQ==,i=4096",  # nonce does not extend ours
        b"r=rOprNGfwEbeRWgbNEkqOx y,s=QQ==,i=4096",  # space in nonce
        b"s=QQ==,r=rOprNGfwEbeRWgbNEkqOxyz,i=4096",  # wrong order
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=!!,i=4096",  # salt not base64
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=,i=4096",  # empty salt
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QQ==,i=0",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QQ==,i=04096",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QQ==,i=-1",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QQ==,i=4095",  # under RFC 7677's 4096
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QQ==,i=99999999999",  # absurdly many
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QQ==",  # no count
        b"\xff",
    ],
)
def test_scram_bad_server_first(server_first: bytes) -> None:
    client = scram_client()
    client.initial_response()
    with pytest.raises(SASLError):
        client.respond(server_first)
    with pytest.raises(LocalProtocolError):  # a failed exchange stays failed
        client.respond(SERVER_FIRST)


@pytest.mark.parametrize(
    "server_final",
    [
        b"v=AAAAZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",  # wrong signature
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",  # not padded base64
        b"v=",
        b"e=invalid-proof",
        b"x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        b"\xff",
    ],
)
def test_scram_bad_server_final(server_final: bytes) -> None:
    client = scram_client()
    client.respond(SERVER_FIRST)
    with pytest.raises(SASLError):
        client.respond(server_final)
    assert not client.complete
    client = scram_client()
    client.respond(SERVER_FIRST)
    with pytest.raises(SASLError):
        client.verify_success(server_final)
    assert not client.complete


def test_scram_server_error_is_reported() -> None:
    client = scram_client()
    client.respond(SERVER_FIRST)
    with pytest.raises(SASLError, match="invalid-proof"):
        client.respond(b"e=invalid-proof")


def test_scram_success_without_server_signature_is_refused() -> None:
    client = scram_client()
    client.respond(SERVER_FIRST)
    with pytest.raises(SASLError, match="without proving"):
        client.verify_success(None)
    assert not client.complete


def test_scram_success_before_the_proof_is_refused() -> None:
    client = scram_client()
    client.initial_response()
    with pytest.raises(SASLError):
        client.verify_success(SERVER_FINAL)
    client = scram_client()
    with pytest.raises(SASLError):
        client.verify_success(None)


def test_scram_server_final_as_challenge_then_success() -> None:
    client = scram_client()
    client.respond(SERVER_FIRST)
    assert client.respond(SERVER_FINAL) == b""
    client.verify_success(None)
    assert client.complete
    with pytest.raises(LocalProtocolError):
        client.verify_success(None)


def test_scram_nothing_may_follow_the_server_final_message() -> None:
    client = scram_client()
    client.respond(SERVER_FIRST)
    client.respond(SERVER_FINAL)
    with pytest.raises(SASLError):
        client.respond(b"more")


def test_scram_without_initial_response() -> None:
    client = scram_client()
    assert client.respond(b"") == b"n,,n=user,r=" + NONCE.encode()
    assert client.respond(SERVER_FIRST).startswith(b"c=biws,")


def test_scram_iteration_bounds_are_options() -> None:
    client = scram_client(min_iterations=1)
    client.respond(b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QQ==,i=1")
    client = scram_client(min_iterations=1, max_iterations=4095)
    with pytest.raises(SASLError, match="outside"):
        client.respond(SERVER_FIRST)


def test_scram_escapes_names_and_sends_authzid() -> None:
    client = ScramSHA256Client("a=b,c", "pw", authzid="x,y=z", nonce="n")
    assert client.initial_response() == b"n,a=x=2Cy=3Dz,n=a=3Db=2Cc,r=n"


def test_scram_prepares_names() -> None:
    client = ScramSHA256Client("I\u00adX", "pencil", nonce="n")
    assert client.initial_response() == b"n,,n=IX,r=n"


def test_scram_default_nonce_is_random_and_valid() -> None:
    first = ScramSHA256Client("user", "pencil").initial_response()
    second = ScramSHA256Client("user", "pencil").initial_response()
    assert first != second
    assert len(first.split(b",r=")[1]) >= 24


@pytest.mark.parametrize(
    ("username", "password", "nonce", "authzid"),
    [
        ("", "pencil", None, ""),
        ("\u00ad", "pencil", None, ""),  # nothing left after SASLprep
        ("user", "\u0007", None, ""),  # prohibited
        ("user", "\u0627\u0031", None, ""),  # bidi
        ("user", "\U000e0001x", None, ""),  # tagging character
        ("user", "\u0221", None, ""),  # unassigned in Unicode 3.2
        ("user", "", None, ""),
        ("user", "pencil", "a,b", ""),
        ("user", "pencil", "", ""),
        ("user", "pencil", None, "a\x00"),
    ],
)
def test_scram_refuses_bad_local_credentials(
    username: str, password: str, nonce: str | None, authzid: str
) -> None:
    with pytest.raises(LocalProtocolError):
        ScramSHA256Client(username, password, nonce=nonce, authzid=authzid)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PlainClient("", "pw"),
        lambda: PlainClient("tim", ""),
        lambda: PlainClient("t\x00m", "pw"),
        lambda: PlainClient("tim", "pw", "a\x00"),
        lambda: PlainClient("tim", "\ud800"),
        lambda: ScramSHA256Client("tim", "pw", authzid="\ud800"),
        lambda: LoginClient("", "pw"),
        lambda: LoginClient("tim", "p\x00w"),
        lambda: CramMD5Client("", "pw"),
        lambda: XOAuth2Client("", "token"),
        lambda: XOAuth2Client("a\x01b", "token"),
        lambda: XOAuth2Client("a", "to ken"),
        lambda: XOAuth2Client("a", ""),
        lambda: OAuthBearerClient("a", "tok\x01en"),
        lambda: OAuthBearerClient("a", "token", port=0),
        lambda: OAuthBearerClient("a", "token", host="a b"),
        lambda: OAuthBearerClient("a\x00", "token"),
    ],
)
def test_clients_refuse_bad_local_credentials(make: object) -> None:
    with pytest.raises(LocalProtocolError):
        make()  # type: ignore[operator]


def test_plain_client_sequence() -> None:
    client = PlainClient("tim", "pw")
    assert client.respond(b"") == b"\x00tim\x00pw"  # the empty challenge asks for it
    with pytest.raises(SASLError):
        client.respond(b"")
    client = PlainClient("tim", "pw")
    with pytest.raises(SASLError):
        client.respond(b"unexpected")
    client = PlainClient("tim", "pw")
    client.initial_response()
    with pytest.raises(SASLError):  # PLAIN has no additional data with success
        client.verify_success(b"data")
    client = PlainClient("tim", "pw")
    client.initial_response()
    client.verify_success(b"")
    assert client.complete


def test_login_client_sequence() -> None:
    client = LoginClient("tim", "pw")
    assert client.initial_response() is None
    assert client.respond(b"VXNlcm5hbWU6") == b"tim"  # prompt text is ignored
    assert client.respond(b"Password:") == b"pw"
    with pytest.raises(SASLError):
        client.respond(b"What else?")


def test_cram_md5_client_sequence() -> None:
    client = CramMD5Client("tim", "pw")
    assert client.initial_response() is None
    with pytest.raises(SASLError):
        client.respond(b"")
    client = CramMD5Client("tim", "pw")
    client.respond(b"<1.2@mx>")
    with pytest.raises(SASLError):
        client.respond(b"<1.2@mx>")


@pytest.mark.parametrize(
    ("client", "dummy"),
    [(XOAuth2Client("u", "t"), b""), (OAuthBearerClient("u", "t"), b"\x01")],
)
def test_token_client_error_sequence(client: ClientMechanism, dummy: bytes) -> None:
    assert client.respond(b'{"status":"401"}') == dummy
    with pytest.raises(SASLError):  # only one error challenge
        client.respond(b"{}")


@pytest.mark.parametrize(
    "make", [lambda: XOAuth2Client("u", "t"), lambda: OAuthBearerClient("u", "t")]
)
def test_token_client_refuses_success_after_error(make: object) -> None:
    client: XOAuth2Client | OAuthBearerClient = make()  # type: ignore[operator]
    client.respond(b"not json")
    assert client.error == "not json"
    assert client.error_details == {}
    with pytest.raises(SASLError):
        client.verify_success(None)


def test_oauthbearer_without_user() -> None:
    client = OAuthBearerClient("", "t")
    assert client.initial_response() == b"n,,\x01auth=Bearer t\x01\x01"
    assert client.respond(b"") == client.initial_response()


clients = st.sampled_from(
    [
        lambda: PlainClient("tim", "pw"),
        lambda: LoginClient("tim", "pw"),
        lambda: CramMD5Client("tim", "pw"),
        lambda: ScramSHA256Client("user", "pencil", nonce=NONCE, min_iterations=1),
        lambda: XOAuth2Client("u", "t"),
        lambda: OAuthBearerClient("u", "t"),
    ]
)
scram_like = st.lists(
    st.sampled_from(
        [
            "r=" + NONCE + "x",
            "r=" + NONCE,
            "s=QQ==",
            "s=",
            "i=1",
            "i=x",
            "v=AAAA",
            "e=x",
            "m=1",
            "",
            "\x00",
        ]
    ),
    max_size=5,
).map(lambda fields: ",".join(fields).encode())


@settings(max_examples=200)
@given(clients, st.lists(st.one_of(st.binary(max_size=48), scram_like), max_size=4))
def test_fuzzed_challenges_give_bytes_or_sasl_error(make: object, challenges: list[bytes]) -> None:
    client: ClientMechanism = make()  # type: ignore[operator]
    for challenge in challenges:
        try:
            assert isinstance(client.respond(challenge), bytes)
        except SASLError:
            return
        except LocalProtocolError:
            raise AssertionError("a live exchange never raises LocalProtocolError") from None


def test_base64_is_not_this_layers_job() -> None:
    """A str challenge is the application's misuse: LocalProtocolError, as every public
    constructor and the machines' receive_data say it (it was a TypeError)."""
    client = PlainClient("tim", "pw")
    assert base64.b64encode(client.initial_response()) == b"AHRpbQBwdw=="
    with pytest.raises(LocalProtocolError, match=r"challenge must be bytes .*, not str"):
        client.respond("")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match=r"must be None or bytes .*, not str"):
        client.verify_success("")  # type: ignore[arg-type]


Given = tuple[Callable[..., object], tuple[object, ...], dict[str, object]]
"""A client mechanism's class and the arguments it is given: typed loosely, for the
wrong types are the point."""

PLUS_WITH_BYTES_TYPE: dict[str, object] = {"channel_binding": b"x", "channel_binding_type": b"t"}

WRONG_TYPES: dict[str, tuple[Given, str]] = {
    "PLAIN authcid": ((PlainClient, (b"tim", "pw"), {}), "PLAIN authcid must be a str, not bytes"),
    "PLAIN password": ((PlainClient, ("tim", None), {}), "PLAIN password must be a str, not None"),
    "PLAIN authzid": ((PlainClient, ("tim", "pw", 5), {}), "PLAIN authzid must be a str, not int"),
    "LOGIN username": ((LoginClient, (b"tim", "pw"), {}), "LOGIN username must be a str"),
    "LOGIN password": ((LoginClient, ("tim", 5), {}), "LOGIN password must be a str, not int"),
    "CRAM-MD5 username": ((CramMD5Client, (b"tim", "pw"), {}), "CRAM-MD5 username must be"),
    "CRAM-MD5 password": ((CramMD5Client, ("tim", None), {}), "CRAM-MD5 password must be"),
    "XOAUTH2 user": ((XOAuth2Client, (b"tim", "t"), {}), "XOAUTH2 user must be a str"),
    "XOAUTH2 token": ((XOAuth2Client, ("tim", b"t"), {}), "XOAUTH2 token must be a str"),
    "OAUTHBEARER user": ((OAuthBearerClient, (None, "t"), {}), "OAUTHBEARER user must be"),
    "OAUTHBEARER token": ((OAuthBearerClient, ("u", 5), {}), "OAUTHBEARER token must be"),
    "OAUTHBEARER host": (
        (OAuthBearerClient, ("u", "t"), {"host": b"mx"}),
        "OAUTHBEARER host must be a str, not bytes",
    ),
    "OAUTHBEARER port str": (
        (OAuthBearerClient, ("u", "t"), {"port": "993"}),
        "OAUTHBEARER port must be an int or None, not str",
    ),
    "OAUTHBEARER port bool": (  # it went out as port=True
        (OAuthBearerClient, ("u", "t"), {"port": True}),
        "OAUTHBEARER port must be an int or None, not bool",
    ),
    "SCRAM username": ((ScramSHA256Client, (b"u", "p"), {}), "SCRAM username must be a str"),
    "SCRAM password": ((ScramSHA256Client, ("u", None), {}), "SCRAM password must be a str"),
    "SCRAM authzid": ((ScramSHA256Client, ("u", "p"), {"authzid": 5}), "SCRAM authzid must be"),
    "SCRAM nonce": ((ScramSHA256Client, ("u", "p"), {"nonce": 5}), "SCRAM nonce must be a str"),
    "SCRAM min_iterations": (  # a TypeError out of respond(), mid-exchange, before
        (ScramSHA256Client, ("u", "p"), {"min_iterations": "1"}),
        "SCRAM min_iterations must be an int, not str",
    ),
    "SCRAM max_iterations": (
        (ScramSHA256Client, ("u", "p"), {"max_iterations": 1e6}),
        "SCRAM max_iterations must be an int, not float",
    ),
    "SCRAM channel_binding_supported": (  # "no" sent the y flag: could bind
        (ScramSHA256Client, ("u", "p"), {"channel_binding_supported": "no"}),
        "SCRAM channel_binding_supported must be a bool, not str",
    ),
    "SCRAM-PLUS channel_binding_type": (
        (ScramSHA256PlusClient, ("u", "p"), PLUS_WITH_BYTES_TYPE),
        "SCRAM channel_binding_type must be a str, not bytes",
    ),
}


OUT_OF_RANGE: dict[str, tuple[Callable[[], object], str]] = {
    "min_iterations 0": (
        lambda: ScramSHA256Client("u", "p", min_iterations=0),
        "SCRAM min_iterations must be from 1 to 4294967295, not 0",
    ),
    "min_iterations -1": (
        lambda: ScramSHA1Client("u", "p", min_iterations=-1),
        "SCRAM min_iterations must be from 1 to 4294967295, not -1",
    ),
    "max_iterations 0": (
        lambda: ScramSHA256Client("u", "p", min_iterations=1, max_iterations=0),
        "SCRAM max_iterations must be at least 1, not 0",
    ),
    "min_iterations 2**32": (  # no server stores such a count: every exchange failed
        lambda: ScramSHA256Client("u", "p", min_iterations=2**32, max_iterations=2**33),
        "SCRAM min_iterations must be from 1 to 4294967295, not 4294967296",
    ),
    "max below min": (  # every exchange failed as if the server's count were wrong
        lambda: ScramSHA256Client("u", "p", max_iterations=100),
        "SCRAM max_iterations (100) is below min_iterations (4096)",
    ),
    "PLUS max below min": (
        lambda: ScramSHA1PlusClient("u", "p", channel_binding=b"cb", min_iterations=10**7),
        "SCRAM max_iterations (1000000) is below min_iterations (10000000)",
    ),
}


def test_the_largest_count_a_server_stores_is_a_bound() -> None:
    scram_client(min_iterations=0xFFFFFFFF, max_iterations=0xFFFFFFFF)


@pytest.mark.parametrize("most", [2**32, sys.maxsize], ids=["2**32", "maxsize"])
def test_a_max_iterations_above_any_stored_count_is_no_upper_bound(most: int) -> None:
    """``max_iterations=sys.maxsize`` says "no cap", as it did on main: every count
    meets it, so it is no bound that fails every exchange, and it was refused."""
    client = scram_client(max_iterations=most)
    client.initial_response()
    client.respond(SERVER_FIRST)
    client.verify_success(SERVER_FINAL)
    assert client.complete


@pytest.mark.parametrize("case", list(OUT_OF_RANGE))
def test_an_iteration_bound_out_of_range_is_the_applications_local_protocol_error(
    case: str,
) -> None:
    """A bound no server's count can meet was taken, and every exchange then failed
    with the SASLError that blames the server ('outside the accepted range')."""
    build, message = OUT_OF_RANGE[case]
    with pytest.raises(LocalProtocolError, match=re.escape(message)):
        build()


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_a_value_of_the_wrong_type_is_the_applications_local_protocol_error(case: str) -> None:
    """As every other public constructor (``wrong_type``): LocalProtocolError naming
    what was wanted and the type given, never the TypeError (or AttributeError) a regex,
    ``in`` or SASLprep met further in, nor a value taken (``port=True``)."""
    (mechanism, args, kwargs), message = WRONG_TYPES[case]
    with pytest.raises(LocalProtocolError, match=re.escape(message)) as raised:
        mechanism(*args, **kwargs)
    assert not isinstance(raised.value, TypeError)


@pytest.mark.parametrize("protocol", [smtp, pop3], ids=["smtp", "pop3"])
def test_client_auth_takes_a_mechanism_not_its_name(protocol: ModuleType) -> None:
    """``ClientAuth("PLAIN")`` raised AttributeError at ``start()``: the misuse is
    named when the flow is built, as every public constructor names it."""
    with pytest.raises(LocalProtocolError, match="mechanism must be a ClientMechanism, not str"):
        protocol.ClientAuth("PLAIN")
    with pytest.raises(LocalProtocolError, match="max_line must be an int, not str"):
        protocol.ClientAuth(PlainClient("tim", "pw"), max_line="512")


class _MainStyleToken(ClientMechanism):
    """A client-first mechanism written as before ``initial_response()`` kept
    bookkeeping: it overrides the method without calling the base's."""

    name = "X-TOKEN"

    def __init__(self, token: bytes) -> None:
        super().__init__()
        self._token = token

    def initial_response(self) -> bytes:
        return self._token

    def _respond(self, challenge: bytes) -> bytes:
        if challenge:
            raise SASLError("X-TOKEN expects an empty challenge")
        return self._token


def _run_client_auth(protocol: ModuleType, mechanism: ClientMechanism) -> bytes | None:
    """Run one exchange through ``ClientAuth``; what went with the command."""
    flow = protocol.ClientAuth(mechanism)
    command = flow.start()
    if command.initial_response is None:
        empty = smtp.Reply(334, "") if protocol is smtp else pop3.Continue(b"")
        flow.respond(empty)
    flow.finish(smtp.Reply(235, "2.7.0 ok") if protocol is smtp else pop3.Ok("in"))
    initial: bytes | None = command.initial_response
    return initial


@pytest.mark.parametrize("protocol", [smtp, pop3], ids=["smtp", "pop3"])
def test_a_mechanism_overriding_initial_response_is_withheld_when_long(
    protocol: ModuleType,
) -> None:
    """Such a mechanism's long token made ``start()``'s withhold raise 'withheld
    before it was taken': nothing was sent then, so the withhold is allowed."""
    assert _run_client_auth(protocol, _MainStyleToken(b"t" * 20)) is not None
    long = _MainStyleToken(b"t" * 2000)
    assert _run_client_auth(protocol, long) is None
    assert long.complete


class _Registered:
    """A duck-typed mechanism that ``ClientMechanism.register()`` vouches for."""

    name = "X-DUCK"
    plaintext = False
    requires_tls = False

    def __init__(self) -> None:
        self.complete = False

    def initial_response(self) -> bytes:
        return b"hello"

    def withhold_initial_response(self) -> None:
        pass

    def respond(self, challenge: bytes) -> bytes:
        return b"hello"

    def verify_success(self, data: bytes | None = None) -> None:
        self.complete = True


ClientMechanism.register(_Registered)


@pytest.mark.parametrize("protocol", [smtp, pop3], ids=["smtp", "pop3"])
def test_client_auth_takes_a_registered_mechanism(protocol: ModuleType) -> None:
    """``ClientAuth`` refused a ``register()``ed class, which ``isinstance`` (and the
    clients' ``sasl_mechanism=``) accept."""
    mechanism = _Registered()
    assert _run_client_auth(protocol, mechanism) == b"hello"  # type: ignore[arg-type]
    assert mechanism.complete
