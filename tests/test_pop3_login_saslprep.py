"""USER, PASS and APOP under RFC 6856 §2.2, against the server on both adapters with
poplib, which sends what it is given (UTF-8) and hashes APOP's secret as given.

Where CAPA lists ``UTF8 USER`` the server SASLprep's the name (a query string)
before the mailstore judges it and refuses a SASLprep-prohibited one, the answer a
wrong password gets; passwords follow AUTH PLAIN's rule (smtpcore.sasl's
passwords_match and prepared_stored_secret), PASS's given to the store as typed,
APOP hashed over the secret SASLprep'd as a stored string. Where it does not,
names and secrets reach the store exactly as typed, non-ASCII too: §2.2 binds the
client there, not the server.
"""

from __future__ import annotations

import base64
import poplib
import socket
from pathlib import Path

import pytest

from peers import running_pop3_server
from smtpcore.maildrop import MaildirStore, POP3Session

WRONG_LOGIN = b"-ERR [AUTH] Authentication failed"


class RecordingStore(MaildirStore):
    """A MaildirStore that keeps each (name, password) USER/PASS asks it about."""

    def __init__(self, root: Path, passwords: dict[str, str]) -> None:
        super().__init__(root, passwords)
        self.asked: list[tuple[str, str]] = []

    async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
        self.asked.append((user, password))
        return await super().check_password(session, user, password)


def user_pass(port: int, user: str, password: str) -> bytes:
    """The answer to USER and PASS (the first ``-ERR`` line, or PASS's ``+OK``)."""
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        client.user(user)
        try:
            return client.pass_(password)
        except poplib.error_proto as exc:
            return bytes(exc.args[0])
    finally:
        client.quit()


def apop(port: int, user: str, secret: str) -> bytes:
    """The answer to APOP, its digest computed by poplib over ``secret`` as given."""
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        try:
            return client.apop(user, secret)
        except poplib.error_proto as exc:
            return bytes(exc.args[0])
    finally:
        client.quit()


def auth_plain(port: int, user: str, password: str) -> bytes:
    """The answer to AUTH PLAIN with an initial response (RFC 5034 §4), sent on a
    plain socket: poplib has no AUTH."""
    token = base64.b64encode(f"\0{user}\0{password}".encode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lines = sock.makefile("rb")
        lines.readline()  # the greeting
        sock.sendall(b"AUTH PLAIN " + token + b"\r\n")
        answer = lines.readline().rstrip(b"\r\n")
        sock.sendall(b"QUIT\r\n")
        lines.readline()
        return answer


def test_the_store_is_asked_with_the_name_saslprepd_and_the_password_as_typed(
    adapter: str, tmp_path: Path
) -> None:
    """RFC 6856 §2.2 (SHOULD, as query strings): a name typed decomposed (``u`` and
    U+0308) or with a soft hyphen reaches the store as SASLprep writes it, as AUTH's
    does; the password reaches it as typed, for passwords_match to prepare as it
    prepares AUTH PLAIN's, and a fullwidth letter in it still logs in."""
    store = RecordingStore(tmp_path / "mail", {"j\u00fcrgen": "p\u00e4ss"})
    with running_pop3_server(adapter, store, utf8=True) as server:
        answer = user_pass(server.port, "ju\u0308rg\u00aden", "\uff50a\u0308ss")
    assert answer.startswith(b"+OK")
    assert store.asked == [("j\u00fcrgen", "\uff50a\u0308ss")]


@pytest.mark.parametrize(
    "user",
    [
        "d\ue000ve",  # private use, §2.3
        "d\u202eve",  # RLO, C.8
        "d\tve",  # an ASCII control
    ],
)
def test_a_name_saslprep_prohibits_logs_no_one_in(adapter: str, tmp_path: Path, user: str) -> None:
    """RFC 6856 §2.2: the server MUST reject a UTF-8 name holding a character of
    SASLprep §2.3. The store held such a user as it was, and USER/PASS and APOP
    logged in with it typed exactly; now both are refused as a wrong password is, and
    the store is not asked. Without ``UTF8 USER`` the same name still logs in."""
    store = RecordingStore(tmp_path / "mail", {user: "secret"})
    with running_pop3_server(adapter, store, utf8=True) as server:
        assert user_pass(server.port, user, "secret") == WRONG_LOGIN
        assert apop(server.port, user, "secret") == WRONG_LOGIN
    assert store.asked == []
    with running_pop3_server(adapter, store) as server:
        assert apop(server.port, user, "secret").startswith(b"+OK")


@pytest.mark.parametrize(
    "password",
    [
        "pass\tword",  # ASCII with a TAB: SASLprep refuses controls
        "\u05e9\u05dc\u05d5\u05ddabc",  # Hebrew then Latin: SASLprep's bidi rule
        "pass\ue000word",  # private use, §2.3
        "pass\u200eword",  # LRM, C.8
    ],
)
def test_a_password_saslprep_refuses_logs_in_by_pass_apop_and_auth_alike(
    adapter: str, tmp_path: Path, password: str
) -> None:
    """A stored password SASLprep refuses is compared exactly as it is (RFC 4616 §2,
    "including none"), by PASS as by APOP and AUTH PLAIN: under ``UTF8 USER`` PASS
    refused it before the store saw it, so its user got in by APOP and AUTH PLAIN and
    not by USER/PASS on the same server, an ASCII password with a TAB too."""
    store = MaildirStore(tmp_path / "mail", {"carol": password}, plaintext_sasl=True)
    with running_pop3_server(adapter, store, utf8=True) as server:
        assert user_pass(server.port, "carol", password).startswith(b"+OK")
        assert apop(server.port, "carol", password).startswith(b"+OK")
        assert auth_plain(server.port, "carol", password).startswith(b"+OK")
        assert user_pass(server.port, "carol", "password") == WRONG_LOGIN


@pytest.mark.parametrize(
    ("passwords", "user", "password"),
    [
        ({"j\u00fcrgen": "wonderland"}, "j\u00fcrgen", "wonderland"),
        ({"alice": "w\u00f6nderland"}, "alice", "w\u00f6nderland"),
        ({"ju\u0308rgen": "pa\u0308ss"}, "ju\u0308rgen", "pa\u0308ss"),  # not composed
        ({"carol": "pass\ue000word"}, "carol", "pass\ue000word"),  # SASLprep refuses it
        ({"d\ue000ve": "secret"}, "d\ue000ve", "secret"),
    ],
)
def test_a_utf8_login_is_taken_as_typed_where_utf8_user_is_not_listed(
    adapter: str, tmp_path: Path, passwords: dict[str, str], user: str, password: str
) -> None:
    """RFC 6856 §2.2 binds the client where CAPA lists no ``UTF8 USER`` ("Clients
    MUST NOT use UTF-8 characters when authenticating"), not the server: a name or
    password a client sends anyway reaches the store exactly as typed (no ASCII check,
    no SASLprep), and logs in, as Dovecot, which lists no UTF8, takes it."""
    store = RecordingStore(tmp_path / "mail", passwords)
    with running_pop3_server(adapter, store) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        assert "UTF8" not in client.capa()
        client.quit()
        assert user_pass(server.port, user, password).startswith(b"+OK")
    assert store.asked == [(user, password)]


def test_apop_hashes_the_secret_as_saslprep_stores_it(adapter: str, tmp_path: Path) -> None:
    """RFC 6856 §2.2: APOP's digest is over the password SASLprep'd as a stored string,
    the name as a query. A secret stored decomposed (``o`` and U+0308) was hashed as
    stored, so a client hashing ``ö`` as SASLprep writes it failed; now it logs in, by
    a name typed decomposed too."""
    store = MaildirStore(tmp_path / "mail", {"j\u00fcrgen": "ko\u0308ln"})
    with running_pop3_server(adapter, store, utf8=True) as server:
        assert apop(server.port, "ju\u0308rgen", "k\u00f6ln").startswith(b"+OK")
        assert apop(server.port, "j\u00fcrgen", "koln") == WRONG_LOGIN


def test_apop_hashes_the_secret_as_stored_where_utf8_user_is_not_listed(
    adapter: str, tmp_path: Path
) -> None:
    """Without ``UTF8 USER`` a non-ASCII APOP name finds its user as typed and the
    digest is checked over the secret as stored, not SASLprep'd: a secret stored
    decomposed (``o`` and U+0308) matches a digest over it as stored, not one over
    ``ö``."""
    store = MaildirStore(
        tmp_path / "mail", {"j\u00fcrgen": "secret", "alice": "k\u00f6ln", "bob": "ko\u0308ln"}
    )
    with running_pop3_server(adapter, store) as server:
        assert apop(server.port, "j\u00fcrgen", "secret").startswith(b"+OK")
        assert apop(server.port, "alice", "k\u00f6ln").startswith(b"+OK")
        assert apop(server.port, "bob", "ko\u0308ln").startswith(b"+OK")
        assert apop(server.port, "bob", "k\u00f6ln") == WRONG_LOGIN
