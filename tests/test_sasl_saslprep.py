"""SASLprep (RFC 4013) beyond the RFC's own examples."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stringprep
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore.handler import Authenticator
from smtpcore.sasl import (
    Challenge,
    ClientMechanism,
    CramMD5Server,
    Failure,
    LoginServer,
    PlainClient,
    PlainServer,
    ScramCredentials,
    ScramSHA256Client,
    ScramSHA256Server,
    ServerMechanism,
    Step,
    Success,
    derive_scram_credentials,
    passwords_match,
    prepared_stored_secret,
    saslprep,
)
from smtpcore.server.credentials import Credentials


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("pass word", "pass word"),  # ASCII space is kept
        ("a\u00a0b", "a b"),  # NO-BREAK SPACE mapped to SPACE
        ("a\u3000b", "a b"),  # IDEOGRAPHIC SPACE too
        ("a\u200bb", "ab"),  # ZERO WIDTH SPACE mapped to nothing (B.1)
        ("e\u0301", "\u00e9"),  # composed by NFKC
        ("\ufb01", "fi"),  # compatibility ligature
        ("\u0627\u0628", "\u0627\u0628"),  # all right-to-left is fine
    ],
)
def test_mapping_and_normalization(text: str, expected: str) -> None:
    assert saslprep(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a\x7fb",  # ASCII control (C.2.1)
        "a\u0085b",  # non-ASCII control (C.2.2)
        "\ue000",  # private use (C.3)
        "\ufdd0",  # non-character (C.4)
        "\ufff9",  # inappropriate for plain text (C.6)
        "\u2ff0",  # inappropriate for canonical representation (C.7)
        "a\u200eb",  # LEFT-TO-RIGHT MARK (C.8)
        "\U000e0001",  # tagging (C.9)
        "\u0627a\u0628",  # right-to-left mixed with left-to-right
        "1\u0627",  # right-to-left text must start right-to-left
        "\u0221",  # unassigned in Unicode 3.2
    ],
)
def test_prohibited(text: str) -> None:
    with pytest.raises(ValueError):
        saslprep(text)


def test_unassigned_allowed_in_queries() -> None:
    assert saslprep("\u0221", allow_unassigned=True) == "\u0221"


@settings(max_examples=300)
@given(st.text(max_size=20), st.booleans())
def test_output_is_prepared(text: str, allow_unassigned: bool) -> None:
    try:
        prepared = saslprep(text, allow_unassigned=allow_unassigned)
    except ValueError:
        return
    assert saslprep(prepared, allow_unassigned=allow_unassigned) == prepared
    assert not any(stringprep.in_table_c21_c22(char) for char in prepared)
    assert not any(stringprep.in_table_b1(char) for char in prepared)


# -- user names and passwords as the server mechanisms compare them ---------------------

COMPOSED = "j\u00fcrgen"  # as SASLprep gives it, and as a user store keeps it
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)  # as a client that does not prep sends it
KEYS = derive_scram_credentials("pencil")


class Store:
    """One user, COMPOSED, whose password is "pencil"; remembers the names it is asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def check_password(self, authzid: str, authcid: str, password: str) -> bool:
        self.asked.append(authcid)
        return authcid == COMPOSED and passwords_match("pencil", password)

    def get_password(self, name: str) -> str | None:
        self.asked.append(name)
        return "pencil" if name == COMPOSED else None

    def get_credentials(self, name: str) -> ScramCredentials | None:
        self.asked.append(name)
        return KEYS if name == COMPOSED else None


SERVERS: dict[str, Callable[[Store], ServerMechanism]] = {
    "PLAIN": lambda store: PlainServer(store.check_password),
    "LOGIN": lambda store: LoginServer(store.check_password),
    "CRAM-MD5": lambda store: CramMD5Server(store.get_password, "mx.example"),
    "SCRAM-SHA-256": lambda store: ScramSHA256Server(store.get_credentials),
}


def first_messages(mechanism: str, name: str, password: str = "pencil") -> list[bytes]:
    """What a client that does not prep sends (up to the name, for CRAM-MD5 and SCRAM)."""
    if mechanism == "PLAIN":
        return [b"\x00" + name.encode() + b"\x00" + password.encode()]
    if mechanism == "LOGIN":
        return [name.encode(), password.encode()]
    if mechanism == "CRAM-MD5":
        return [name.encode() + b" " + b"0" * 32]
    return [f"n,,n={name},r=clientnonce".encode()]


def feed(server: ServerMechanism, messages: list[bytes]) -> Step:
    step = server.start(None)
    for message in messages:
        if not isinstance(step, Challenge):
            break
        step = server.step(message)
    return step


def test_the_scram_server_prepares_the_user_name() -> None:
    """RFC 5802 §5.1: the server "MUST either prepare it using the SASLprep profile ...
    treating it as a query string" or compare SASLprep-aware; it looked the name up as
    sent, so a client that does not prep failed with the right password."""
    store = Store()
    server = ScramSHA256Server(store.get_credentials)
    first_bare = f"n={DECOMPOSED},r=clientnonce".encode()  # no SASLprep on the client
    challenge = server.start(b"n,," + first_bare)
    assert isinstance(challenge, Challenge)
    nonce, salt, iterations = (part[2:] for part in challenge.data.decode().split(","))
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", base64.b64decode(salt), int(iterations))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    without_proof = f"c=biws,r={nonce}".encode()
    auth_message = first_bare + b"," + challenge.data + b"," + without_proof
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    step = server.step(without_proof + b",p=" + base64.b64encode(proof))
    assert store.asked == [COMPOSED]
    assert isinstance(step, Success) and step.authcid == COMPOSED


@pytest.mark.parametrize("mechanism", list(SERVERS))
def test_every_server_mechanism_looks_up_the_prepared_name(mechanism: str) -> None:
    """RFC 4616 §2, RFC 5802 §5.1: the name is prepared before the store sees it, so the
    same user typed another way (decomposed) is the same user."""
    store = Store()
    step = feed(SERVERS[mechanism](store), first_messages(mechanism, DECOMPOSED))
    assert store.asked == [COMPOSED]
    if mechanism in ("PLAIN", "LOGIN"):
        assert step == Success(COMPOSED, COMPOSED)


@pytest.mark.parametrize("mechanism", list(SERVERS))
@pytest.mark.parametrize("name", ["john\x07", "\u00ad", "\ue000x"])  # control, empty, private
def test_a_name_saslprep_refuses_fails_before_any_lookup(mechanism: str, name: str) -> None:
    """RFC 4616 §2: "if preparation fails or results in an empty string, verification
    SHALL fail"."""
    store = Store()
    step = feed(SERVERS[mechanism](store), first_messages(mechanism, name))
    assert isinstance(step, Failure) and not step.temporary and "SASLprep" in step.reason
    assert store.asked == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_the_authzid_is_prepared_as_the_name_is(mechanism: str) -> None:
    """An authzid that is the user's own name typed another way acts as himself (no
    authorize needed); one SASLprep refuses fails."""
    client: ClientMechanism = (
        PlainClient(COMPOSED, "pencil", authzid=DECOMPOSED)
        if mechanism == "PLAIN"
        else ScramSHA256Client(COMPOSED, "pencil", authzid=DECOMPOSED)
    )
    server = SERVERS[mechanism](Store())
    step = server.start(client.initial_response())
    while isinstance(step, Challenge):
        step = server.step(client.respond(step.data))
    assert isinstance(step, Success) and step.authzid == step.authcid == COMPOSED
    refused = PlainServer(Store().check_password).start(b"a\x07\x00jo\x00pencil")
    assert isinstance(refused, Failure) and "authzid" in refused.reason


@pytest.mark.parametrize(
    ("stored", "presented", "match"),
    [
        ("p\u00e4ss", unicodedata.normalize("NFD", "p\u00e4ss"), True),  # composed or not
        ("pass word", "pass\u00a0word", True),  # NO-BREAK SPACE is a space
        ("IX", "I\u00adX", True),  # SOFT HYPHEN is nothing
        ("pencil", "Pencil", False),  # case is kept
        ("pencil", "pencil\x07", False),  # a presented password SASLprep refuses
        ("key\U0001f511", "key\U0001f511", True),  # unassigned in Unicode 3.2: exactly
        ("key\U0001f511", "key\U0001f512", False),
        ("a\x07b", "a\x07b", True),  # a stored control character: exactly
        ("\u00ad", "", False),  # empty after SASLprep: exactly, and nothing is empty
        ("", "", False),  # no password (an unknown user) matches nothing
    ],
)
def test_passwords_match_compares_prepared_passwords(
    stored: str, presented: str, match: bool
) -> None:
    """RFC 4616 §2: the presented and the stored password are both prepared (a query, a
    stored string); a stored one SASLprep refuses is compared as it is."""
    assert passwords_match(stored, presented) is match


@pytest.mark.parametrize(
    ("stored", "prepared"),
    [
        ("ko\u0308ln", "k\u00f6ln"),  # SASLprep'd as a stored string
        ("pass word", "pass word"),
        ("pass\tword", "pass\tword"),  # refused (a control): as stored
        ("\u05e9\u05dc\u05d5\u05ddabc", "\u05e9\u05dc\u05d5\u05ddabc"),  # the bidi rule
        ("pass\ue000word", "pass\ue000word"),  # private use
        ("key\U0001f511", "key\U0001f511"),  # unassigned in Unicode 3.2
        ("\u00ad", "\u00ad"),  # empty after SASLprep
    ],
)
def test_a_stored_secret_is_prepared_as_passwords_match_prepares_it(
    stored: str, prepared: str
) -> None:
    """RFC 4616 §2 ("including none"): one rule decides how a stored password is
    compared (PLAIN, LOGIN, POP3 PASS) and hashed (POP3 APOP); a password typed as
    that rule writes the stored one matches it."""
    assert prepared_stored_secret(stored) == prepared
    assert passwords_match(stored, prepared) is True


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_a_password_kept_in_the_clear_is_taken_decomposed(mechanism: str) -> None:
    """A user whose password is kept in the clear (an Authenticator's get_password, the
    reference server's users file) was refused over PLAIN and LOGIN when his client sent
    it decomposed, while SCRAM, which prepares it, let him in."""
    authenticator = Authenticator(get_password={"jo@abc.example": COMPOSED}.get)
    server = authenticator.server_mechanisms("mx.abc.example")[mechanism]()
    step = feed(server, first_messages(mechanism, "jo@abc.example", DECOMPOSED))
    assert step == Success("jo@abc.example", "jo@abc.example")
    credentials = Credentials({"jo@abc.example": COMPOSED})
    assert credentials.check_password("jo@abc.example", DECOMPOSED)  # also POP3 PASS
    assert not credentials.check_password("jo@abc.example", DECOMPOSED + "x")


@pytest.mark.parametrize("mechanism", list(SERVERS))
def test_the_domain_of_a_name_keeps_its_joiner_the_local_part_does_not(mechanism: str) -> None:
    """SASLprep maps ZWJ to nothing (RFC 3454 table B.1); IDNA 2008 keeps one after a
    virama, where it makes another domain (``xn--11b2ezcw70k``, not ``xn--11b2ezc``). The
    store is asked for the local part prepared and the domain as it came, for the
    application to compare as domains are compared."""
    store = Store()
    name = "a\u200db@\u0915\u094d\u200d\u0937.test"
    feed(SERVERS[mechanism](store), first_messages(mechanism, name))
    assert store.asked == ["ab@\u0915\u094d\u200d\u0937.test"]
