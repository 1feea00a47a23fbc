"""SMTP AUTH (RFC 4954) in the server machine, the client machine and between them."""

from __future__ import annotations

import base64
import contextlib
import re
import smtplib
import socket
import threading
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given

from smtp_helpers import EHLO, codes, greeted, run
from smtpcore import LocalProtocolError
from smtpcore.address import Mailbox, parse_mailbox
from smtpcore.sasl import (
    ClientMechanism,
    CramMD5Client,
    CramMD5Server,
    LoginClient,
    LoginServer,
    OAuthBearerClient,
    OAuthBearerServer,
    PlainClient,
    PlainServer,
    SASLError,
    ScramSHA256Client,
    ScramSHA256Server,
    ServerMechanism,
    XOAuth2Client,
    XOAuth2Server,
    derive_scram_credentials,
)
from smtpcore.smtp import (
    Auth,
    AuthenticationFailed,
    AuthResponse,
    BadCommand,
    ClientAuth,
    ClientConnection,
    ConnectionClosed,
    Ehlo,
    Event,
    Mail,
    Reply,
    ServerAuth,
    ServerConnection,
    ServerExtensions,
    State,
    xtext,
)
from smtpcore.smtp._ext.auth import read_submitter
from smtpcore.testing import ConnectionPair, SMTPAnswer, permissive_smtp_answer, run_server
from smtpcore.testing.strategies import mailboxes, xtexts

USERS = {"john@abc.example": "correct horse"}
SCRAM = {name: derive_scram_credentials(pw) for name, pw in USERS.items()}


def check_password(authzid: str, authcid: str, password: str) -> bool:
    return USERS.get(authcid) == password


def check_token(user: str, token: str) -> bool:
    return user in USERS and token == "token-" + user


SERVER_FACTORIES: dict[str, Callable[[], ServerMechanism]] = {
    "PLAIN": lambda: PlainServer(check_password),
    "LOGIN": lambda: LoginServer(check_password),
    "CRAM-MD5": lambda: CramMD5Server(USERS.get, "mx.pqr.example"),
    "SCRAM-SHA-256": lambda: ScramSHA256Server(SCRAM.get),
    "XOAUTH2": lambda: XOAuth2Server(check_token),
    "OAUTHBEARER": lambda: OAuthBearerServer(check_token),
}


def client_mechanism(name: str, user: str, secret: str) -> ClientMechanism:
    token = "token-" + user if secret == USERS.get(user) else "bad"
    factories: dict[str, Callable[[], ClientMechanism]] = {
        "PLAIN": lambda: PlainClient(user, secret),
        "LOGIN": lambda: LoginClient(user, secret),
        "CRAM-MD5": lambda: CramMD5Client(user, secret),
        "SCRAM-SHA-256": lambda: ScramSHA256Client(user, secret),
        "XOAUTH2": lambda: XOAuth2Client(user, token),
        "OAUTHBEARER": lambda: OAuthBearerClient(user, token),
    }
    return factories[name]()


def auth_server(**options: object) -> ServerConnection:
    return greeted(auth_mechanisms=list(SERVER_FACTORIES), **options)


# -- the server machine --------------------------------------------------------------


def test_plaintext_mechanisms_are_offered_only_under_tls() -> None:
    _, out = run(auth_server(), EHLO)
    assert b"250-AUTH CRAM-MD5 SCRAM-SHA-256\r\n" in out or b"250 AUTH CRAM-MD5 SCRAM" in out
    _, out = run(auth_server(auth_require_tls=False), EHLO)
    assert b"AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 XOAUTH2 OAUTHBEARER" in out
    conn = auth_server(starttls=True)
    run(conn, EHLO + b"STARTTLS\r\n")
    conn.tls_started()
    _, out = run(conn, EHLO)
    assert b"AUTH PLAIN LOGIN CRAM-MD5" in out


def plain(user: str, password: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


def answer_with(auth: ServerAuth) -> SMTPAnswer:
    """The application: AUTH through ``auth``, everything else accepted."""

    def answer(conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
        if isinstance(event, Auth):
            return auth.start(event)
        if isinstance(event, AuthResponse):
            return auth.step(event)
        return permissive_smtp_answer(conn, event)

    return answer


def drive(conn: ServerConnection, data: bytes, auth: ServerAuth) -> bytes:
    """Feed ``data``; answer AUTH through ``auth`` and everything else by default."""
    return run_server(conn, data, answer=answer_with(auth))[1]


def test_plain_with_initial_response() -> None:
    conn = auth_server(auth_require_tls=False)
    auth = ServerAuth(SERVER_FACTORIES)
    out = drive(
        conn, EHLO + b"AUTH PLAIN " + plain("john@abc.example", "correct horse") + b"\r\n", auth
    )
    assert codes(out)[-1] == "235 2.7.0"
    assert conn.authenticated
    assert auth.success is not None and auth.success.authcid == "john@abc.example"
    out = drive(conn, b"AUTH PLAIN " + plain("john@abc.example", "correct horse") + b"\r\n", auth)
    assert codes(out) == ["503 5.5.1"]


def test_server_auth_matches_a_mechanism_name_in_ascii_case_alone() -> None:
    """A factory keyed ``"pla\u0131n"`` is no PLAIN (RFC 4422 §3.1: names are ASCII, so is
    their case): ``AUTH PLAIN`` is not served by it, where ``str.upper()`` made it so."""
    conn = auth_server(auth_require_tls=False)
    auth = ServerAuth({"pla\u0131n": SERVER_FACTORIES["PLAIN"]})
    out = drive(
        conn, EHLO + b"AUTH PLAIN " + plain("john@abc.example", "correct horse") + b"\r\n", auth
    )
    assert codes(out)[-1] == "504 5.5.4"
    assert not conn.authenticated and auth.success is None


def test_the_auth_a_server_offers_is_upper_cased_in_ascii_alone() -> None:
    """``ServerExtensions.auth`` took ``"pla\u0131n"`` for PLAIN through ``str.upper()``,
    and a client chose PLAIN with a server that never offered it (RFC 4422 §3.1)."""
    offered = ServerExtensions("mx.pqr.example", (("AUTH", ("pla\u0131n", "login")),))
    assert offered.auth == {"PLA\u0131N", "LOGIN"}


def test_login_challenges_and_wrong_password() -> None:
    conn = auth_server(auth_require_tls=False)
    auth = ServerAuth(SERVER_FACTORIES)
    out = drive(conn, EHLO + b"AUTH LOGIN\r\n", auth)
    assert out.endswith(b"334 VXNlcm5hbWU6\r\n")  # "Username:"
    assert conn.state is State.AUTH
    out = drive(conn, base64.b64encode(b"john@abc.example") + b"\r\n", auth)
    assert out == b"334 UGFzc3dvcmQ6\r\n"
    out = drive(conn, base64.b64encode(b"wrong") + b"\r\n", auth)
    assert codes(out) == ["535 5.7.8"]
    assert conn.state.name == "READY" and not conn.authenticated


def test_an_exchange_is_under_way_from_its_first_334_to_its_end() -> None:
    """``exchange_under_way`` says the machine reads the next line as an answer to a
    334 (RFC 4954 §4): what a server needs to tell a refused answer from a refused
    command that only starts as AUTH."""
    conn = auth_server(auth_require_tls=False)
    auth = ServerAuth(SERVER_FACTORIES)
    drive(conn, EHLO, auth)
    assert not auth.exchange_under_way
    for line in (b"AUTH LOGIN\r\n", base64.b64encode(b"john@abc.example") + b"\r\n"):
        assert drive(conn, line, auth).startswith(b"334 ")
        assert auth.exchange_under_way
    assert codes(drive(conn, base64.b64encode(b"wrong") + b"\r\n", auth)) == ["535 5.7.8"]
    assert not auth.exchange_under_way
    drive(conn, b"AUTH LOGIN\r\n", auth)
    assert codes(drive(conn, b"*\r\n", auth)) == ["501 5.0.0"]
    assert not auth.exchange_under_way
    assert codes(drive(conn, b"AUTH CRAM-MD5 =\r\n", auth)) == ["501 5.7.0"]
    assert not auth.exchange_under_way


@pytest.mark.parametrize(("answer", "expected"), [(b"", "235 2.7.0"), (b"xyz", "535 5.7.8")])
def test_the_answer_to_success_data_must_be_empty(answer: bytes, expected: str) -> None:
    """RFC 4954 §4: success data in a last 334 is answered by an empty line; anything
    else fails the exchange, as in POP3."""
    conn = auth_server(auth_require_tls=False)
    auth = ServerAuth(SERVER_FACTORIES)
    client = ScramSHA256Client("john@abc.example", "correct horse")
    first = client.initial_response()
    assert first is not None
    out = drive(conn, EHLO + b"AUTH SCRAM-SHA-256 " + base64.b64encode(first) + b"\r\n", auth)
    challenge = base64.b64decode(out.splitlines()[-1][4:])
    out = drive(conn, base64.b64encode(client.respond(challenge)) + b"\r\n", auth)
    final = base64.b64decode(out.splitlines()[-1][4:])
    assert final.startswith(b"v=")
    out = drive(conn, base64.b64encode(answer) + b"\r\n", auth)
    assert codes(out) == [expected]
    assert conn.authenticated is (expected == "235 2.7.0")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b"AUTH PLAIN !!!notbase64\r\n"], "501 5.5.2"),
        ([b"AUTH LOGIN\r\n", b"@@@\r\n"], "501 5.5.2"),
        # Not base64 either: no UTF-8, or a bare LF within (RFC 4954 §4).
        ([b"AUTH LOGIN\r\n", b"dXNlcg\xff==\r\n"], "501 5.5.2"),
        ([b"AUTH LOGIN\r\n", b"dXNl\ncg==\r\n"], "501 5.5.2"),
        ([b"AUTH LOGIN\r\n", b"*\r\n"], "501 5.0.0"),
        ([b"AUTH GSSAPI\r\n"], "504 5.5.4"),
        ([b"AUTH\r\n"], "501 5.5.4"),
        ([b"MAIL FROM:<a@b.example>\r\n", b"AUTH PLAIN =\r\n"], "503 5.5.1"),
        ([b"AUTH LOGIN\r\n", b"A" * 13000 + b"\r\n"], "500 5.5.6"),
    ],
)
def test_bad_input_gets_its_rfc_reply_and_the_session_goes_on(
    lines: list[bytes], expected: str
) -> None:
    conn = auth_server(auth_require_tls=False)
    auth = ServerAuth(SERVER_FACTORIES)
    out = drive(conn, EHLO, auth)
    for line in lines:
        out = drive(conn, line, auth)
    assert codes(out)[-1] == expected
    assert conn.state is not State.AUTH  # the exchange is over, for both sides
    assert codes(drive(conn, b"NOOP\r\n", auth)) == ["250 2.0.0"]


def test_plaintext_mechanism_without_tls_gets_538() -> None:
    out = drive(auth_server(), EHLO + b"AUTH PLAIN =\r\n", ServerAuth(SERVER_FACTORIES))
    assert codes(out)[-1] == "538 5.7.11"


def test_failed_attempts_are_limited() -> None:
    conn = auth_server(auth_require_tls=False, max_auth_failures=2)
    auth = ServerAuth(SERVER_FACTORIES)
    bad = b"AUTH PLAIN " + plain("john@abc.example", "nope") + b"\r\n"
    out = drive(conn, EHLO + bad * 3, auth)
    assert codes(out)[1:] == ["535 5.7.8", "535 5.7.8", "421 4.7.0"]
    assert conn.state is State.CLOSED


REFUSED_TOKENS = {
    "XOAUTH2": b"user=john@abc.example\x01auth=Bearer wrong\x01\x01",
    "OAUTHBEARER": b"n,a=john@abc.example,\x01auth=Bearer wrong\x01\x01",
}


@pytest.mark.parametrize("name", sorted(REFUSED_TOKENS))
def test_a_cancel_after_a_refused_token_is_a_failed_authentication(name: str) -> None:
    """RFC 7628 §3.2.2: a refused token gets an error challenge, whose dummy answer
    fails the exchange with 535. A ``*`` in its place got the plain cancel's ``501
    5.0.0``, which counted nothing: a client tried tokens without limit. The token was
    judged: the ``*`` still gets a 501 (RFC 4954 §4), whose 5.7.8 says the credentials
    were invalid (RFC 4954 §6), :attr:`ServerAuth.failure` holds the mechanism's
    refusal, and the machine counts it toward ``max_auth_failures``."""
    conn = auth_server(auth_require_tls=False, max_auth_failures=2)
    auth = ServerAuth(SERVER_FACTORIES)
    refused = b"AUTH " + name.encode() + b" " + base64.b64encode(REFUSED_TOKENS[name]) + b"\r\n"
    out = drive(conn, EHLO, auth)
    for _ in range(2):
        assert codes(drive(conn, refused, auth)) == ["334"]
        assert codes(drive(conn, b"*\r\n", auth)) == ["501 5.7.8"]
        assert auth.failure is not None and auth.failure.named == "john@abc.example"
    out = drive(conn, refused, auth)
    assert codes(out) == ["421 4.7.0"]
    assert conn.state is State.CLOSED


@pytest.mark.parametrize("name", sorted(REFUSED_TOKENS))
@pytest.mark.parametrize(
    "unreadable", [b"!!!!\r\n", b"A" * 13000 + b"\r\n"], ids=["base64", "too-long"]
)
def test_an_unreadable_answer_after_a_refused_token_is_a_failed_authentication(
    name: str, unreadable: bytes
) -> None:
    """A line in place of the dummy answer to a refused token's error challenge (RFC
    7628 §3.2.2) that the machine cannot read (not base64, over ``max_auth_line``)
    ends the exchange with the machine's syntax error (RFC 4954 §4, §6), which
    ``ServerAuth`` never heard of: the exchange stayed under way, and no failure
    counted. :meth:`ServerAuth.abandon` ends it and gives the mechanism's refusal,
    which :meth:`ServerConnection.count_auth_failure` counts as a 535 is."""
    conn = auth_server(auth_require_tls=False, max_auth_failures=2)
    auth = ServerAuth(SERVER_FACTORIES)
    refused = b"AUTH " + name.encode() + b" " + base64.b64encode(REFUSED_TOKENS[name]) + b"\r\n"
    drive(conn, EHLO, auth)
    for _ in range(2):
        assert codes(drive(conn, refused, auth)) == ["334"]
        assert codes(drive(conn, unreadable, auth))[0] in ("501 5.5.2", "500 5.5.6")
        assert conn.state is State.READY
        failure = auth.abandon()
        assert failure is not None and failure.named == "john@abc.example"
        assert auth.failure is failure
        assert auth.abandon() is None  # the exchange is over
        conn.count_auth_failure()
    assert codes(drive(conn, refused, auth)) == ["421 4.7.0"]
    with pytest.raises(LocalProtocolError):
        conn.count_auth_failure()


def answer_in_one_call(auth: ServerAuth) -> SMTPAnswer:
    """The application the docs show: every event of an exchange, the BadCommand that
    ended one included, through :meth:`ServerAuth.answer`."""

    def answer(conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
        if isinstance(event, Auth | AuthResponse | BadCommand):
            return auth.answer(conn, event)
        return permissive_smtp_answer(conn, event)

    return answer


UNREADABLE_ANSWERS = {"base64": b"!!!!\r\n", "too-long": b"A" * 13000 + b"\r\n"}


@pytest.mark.parametrize("name", sorted(REFUSED_TOKENS))
@pytest.mark.parametrize("unreadable", UNREADABLE_ANSWERS.values(), ids=list(UNREADABLE_ANSWERS))
def test_answer_counts_an_unreadable_line_after_a_refused_token(
    name: str, unreadable: bytes
) -> None:
    """The docs' loop answered Auth with start() and AuthResponse with step(), and a
    BadCommand with its reply; an embedder who missed the extra abandon() and
    count_auth_failure() calls let a client try tokens without limit: each refused
    token's exchange ended with junk (RFC 4954 §4) counted nothing toward
    ``max_auth_failures``. :meth:`ServerAuth.answer` takes the BadCommand too, ends
    the exchange and counts it, so the third AUTH gets 421."""
    conn = auth_server(auth_require_tls=False, max_auth_failures=2)
    auth = ServerAuth(SERVER_FACTORIES)
    answer = answer_in_one_call(auth)
    refused = b"AUTH " + name.encode() + b" " + base64.b64encode(REFUSED_TOKENS[name]) + b"\r\n"
    run_server(conn, EHLO, answer=answer)
    for _ in range(2):
        assert codes(run_server(conn, refused, answer=answer)[1]) == ["334"]
        out = run_server(conn, unreadable, answer=answer)[1]
        assert codes(out)[0] in ("501 5.5.2", "500 5.5.6")
        assert auth.failure is not None and auth.failure.named == "john@abc.example"
    assert codes(run_server(conn, refused, answer=answer)[1]) == ["421 4.7.0"]


def test_answer_counts_nothing_for_a_bad_command_outside_an_exchange() -> None:
    """A BadCommand that ended no exchange (an unknown verb, junk after LOGIN's
    exchange that judged nothing) gets its own reply and counts no failure."""
    conn = auth_server(auth_require_tls=False, max_auth_failures=1)
    auth = ServerAuth(SERVER_FACTORIES)
    answer = answer_in_one_call(auth)
    run_server(conn, EHLO, answer=answer)
    assert codes(run_server(conn, b"AUTH LOGIN\r\n!!!!\r\nXYZZY\r\n", answer=answer)[1]) == [
        "334",
        "501 5.5.2",
        "500 5.5.2",
    ]
    assert auth.failure is None
    assert codes(run_server(conn, b"AUTH LOGIN\r\n", answer=answer)[1]) == ["334"]


def test_an_unreadable_answer_where_nothing_was_judged_gives_no_failure() -> None:
    """LOGIN's answer to its username challenge, not base64: the machine's 501 5.5.2
    ends an exchange that judged nothing, so :meth:`ServerAuth.abandon` gives None."""
    conn = auth_server(auth_require_tls=False)
    auth = ServerAuth(SERVER_FACTORIES)
    drive(conn, EHLO, auth)
    assert codes(drive(conn, b"AUTH LOGIN\r\n", auth)) == ["334"]
    assert codes(drive(conn, b"!!!!\r\n", auth)) == ["501 5.5.2"]
    assert auth.abandon() is None and auth.failure is None


def test_a_504_counts_no_failure_whatever_its_status() -> None:
    """An unknown mechanism judged no credential: a 504 the application words with
    5.7.8 still counts nothing toward ``max_auth_failures``."""
    conn = auth_server(auth_require_tls=False, max_auth_failures=1)
    drive(conn, EHLO, ServerAuth(SERVER_FACTORIES))
    conn.receive_data(b"AUTH PLAIN\r\n")
    assert conn.next_event() == Auth("PLAIN")
    assert conn.send(Reply(504, "no", "5.7.8")).startswith(b"504")
    conn.receive_data(b"AUTH PLAIN\r\n")
    assert conn.next_event() == Auth("PLAIN")


@pytest.mark.parametrize(
    "veto",
    [
        Reply(538, "Encryption required for this account", "5.7.11"),
        Reply(550, "Not here", "5.7.1"),
        Reply(535, "Not for you", "5.7.8"),
    ],
    ids=["538", "550", "535"],
)
def test_count_auth_failure_counts_an_exchange_once_whatever_its_reply(veto: Reply) -> None:
    """An application that refuses an identity the mechanism proved (a veto) says it
    was a failed login with :meth:`ServerConnection.count_auth_failure`: the machine,
    which counts by the reply's code, counted no ``538`` or ``550``. Each exchange
    counts once, however often it is said and whether the code counted it already
    (a ``535``), so an application may say so of every failed login it answers."""
    conn = auth_server(auth_require_tls=False, max_auth_failures=2)
    drive(conn, EHLO, ServerAuth(SERVER_FACTORIES))
    login = b"AUTH PLAIN " + plain("john@abc.example", "secret") + b"\r\n"
    for _ in range(2):
        conn.receive_data(login)
        assert isinstance(conn.next_event(), Auth)
        assert conn.send(veto).startswith(str(veto.code).encode())
        conn.count_auth_failure()
        conn.count_auth_failure()
    conn.receive_data(login)
    refused = conn.next_event()
    assert isinstance(refused, BadCommand) and refused.reply.code == 421


def test_a_late_count_charges_the_exchange_it_answered_not_the_next_pipelined_one() -> None:
    """A veto counted after the client's next, pipelined AUTH was read: the count
    charged that next exchange (reading an AUTH reset what had been counted), whose
    own ``535`` then went uncounted, and two failed logins counted one. The count
    goes to the exchange just refused; the next one's ``535`` counts too, so the
    third AUTH meets the limit."""
    conn = auth_server(auth_require_tls=False, max_auth_failures=2)
    drive(conn, EHLO, ServerAuth(SERVER_FACTORIES))
    login = b"AUTH PLAIN " + plain("john@abc.example", "secret") + b"\r\n"
    conn.receive_data(login * 3)
    assert isinstance(conn.next_event(), Auth)
    conn.send(Reply(538, "Encryption required for this account", "5.7.11"))  # a veto
    assert isinstance(conn.next_event(), Auth)  # the next AUTH, read before the count
    conn.count_auth_failure()
    conn.send(Reply(535, "Authentication credentials invalid", "5.7.8"))
    refused = conn.next_event()
    assert isinstance(refused, BadCommand) and refused.reply.code == 421


@pytest.mark.parametrize(
    "lines",
    [
        [b"AUTH LOGIN\r\n", base64.b64encode(b"john@abc.example") + b"\r\n"],
        [b"AUTH SCRAM-SHA-256 " + base64.b64encode(b"n,,n=john@abc.example,r=abcdefgh") + b"\r\n"],
        [b"AUTH XOAUTH2\r\n"],  # asked for its initial response: no token judged yet
    ],
    ids=["LOGIN-after-the-name", "SCRAM-at-server-first", "XOAUTH2-before-the-token"],
)
def test_a_cancel_before_any_refusal_stays_a_cancel(lines: list[bytes]) -> None:
    """A ``*`` where the mechanism has judged nothing (RFC 4954 §4) is ``501 5.0.0``,
    carries no failure, and never counts toward ``max_auth_failures``."""
    conn = auth_server(auth_require_tls=False, max_auth_failures=1)
    auth = ServerAuth(SERVER_FACTORIES)
    drive(conn, EHLO, auth)
    for _ in range(2):
        for line in lines:
            assert codes(drive(conn, line, auth)) == ["334"]
        assert codes(drive(conn, b"*\r\n", auth)) == ["501 5.0.0"]
        assert auth.failure is None
    assert conn.state is State.READY


def test_a_501_that_says_the_credentials_were_invalid_counts_as_a_failure() -> None:
    """The machine counts what the reply says (RFC 4954 §6): a 535, or an AUTH refusal
    whose enhanced status is X.7.8, "Authentication credentials invalid", such as the
    501 to a ``*`` that followed a refused token; a plain 501 counts nothing."""
    conn = auth_server(auth_require_tls=False, max_auth_failures=1)
    drive(conn, EHLO, ServerAuth(SERVER_FACTORIES))
    conn.receive_data(b"AUTH PLAIN\r\n")
    assert conn.next_event() == Auth("PLAIN")
    conn.send(Reply.challenge(b""))
    conn.receive_data(b"*\r\n")
    assert conn.next_event() == AuthResponse(cancel=True)
    assert conn.send(Reply(501, "cancelled", "5.7.8")) == b"501 5.7.8 cancelled\r\n"
    conn.receive_data(b"AUTH PLAIN\r\n")
    assert isinstance(conn.next_event(), BadCommand)
    assert conn.send(Reply(421, "bye")).startswith(b"421")


def test_an_initial_response_to_a_server_first_mechanism_gets_501() -> None:
    """RFC 4954 §4: CRAM-MD5 with an initial response is refused with 501 (5.7.0);
    no credential was tried, so it is no failed login and never closes the session."""
    conn = auth_server(max_auth_failures=2)
    auth = ServerAuth(SERVER_FACTORIES)
    out = drive(conn, EHLO + b"AUTH CRAM-MD5 dXNlciAwMTIz\r\n" * 3, auth)
    assert codes(out)[1:] == ["501 5.7.0"] * 3
    assert conn.state is State.READY and auth.success is None


def test_require_auth_before_mail_and_auth_parameter() -> None:
    conn = auth_server(auth_require_tls=False, require_auth=True)
    auth = ServerAuth(SERVER_FACTORIES)
    out = drive(conn, EHLO + b"MAIL FROM:<john@abc.example>\r\n", auth)
    assert codes(out)[-1] == "530 5.7.0"
    drive(conn, b"AUTH PLAIN " + plain("john@abc.example", "correct horse") + b"\r\n", auth)
    conn.receive_data(b"MAIL FROM:<john@abc.example> AUTH=<>\r\n")
    event = conn.next_event()
    assert isinstance(event, Mail) and event.params["AUTH"] == "<>"


def test_a_refused_line_that_may_carry_a_credential_is_secret_and_hidden() -> None:
    """A BadCommand's repr showed the line: a password sent without base64 as the answer
    to a 334, or an AUTH command refused with its initial response. Such a line is
    marked ``secret``, hidden in the repr (the field keeps it). A line read as a command
    cannot be told from a password, and is shown as it is."""
    conn = auth_server(auth_require_tls=False)
    answer = answer_with(ServerAuth(SERVER_FACTORIES))
    initial = plain("john@abc.example", "correct horse")
    events: list[Event] = []
    for data in (
        EHLO,
        b"AUTH LOGIN\r\n",
        b"correct horse!\r\n",  # the answer to the 334, not base64
        b"AUTH PLAIN " + initial + b"!\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
        b"auth plain " + initial + b"\r\n",  # the password itself, refused with 503
        b"HELLO there\r\n",
    ):
        events += run_server(conn, data, answer=answer)[0]
    bad = [event for event in events if isinstance(event, BadCommand)]
    assert [event.secret for event in bad] == [True, True, True, False]
    assert bad[0].line == b"correct horse!\r\n"  # the field is as it was
    for event in bad[:3]:
        assert repr(event).startswith("BadCommand(line=<hidden>, reply=Reply(code=5")
        assert "horse" not in repr(event) and initial.decode() not in repr(event)
    assert "b'HELLO there\\r\\n'" in repr(bad[3])


def test_auth_events_keep_their_secrets_out_of_repr() -> None:
    """The repr of AUTH's initial response and of an answer showed the password (PLAIN
    carries it as it is); equality still compares the secret."""
    response = b"\0john@abc.example\0correct horse"
    assert repr(Auth("PLAIN", response)) == "Auth(mechanism='PLAIN', initial_response=<hidden>)"
    assert repr(AuthResponse(response)) == "AuthResponse(data=<hidden>, cancel=False)"
    # Nothing to hide is shown as it is: no initial response, the empty one, a cancel.
    assert repr(Auth("LOGIN")) == "Auth(mechanism='LOGIN', initial_response=None)"
    assert repr(Auth("PLAIN", b"")) == "Auth(mechanism='PLAIN', initial_response=b'')"
    assert repr(AuthResponse(cancel=True)) == "AuthResponse(data=b'', cancel=True)"
    assert Auth("PLAIN", response) != Auth("PLAIN", response + b"!")
    assert AuthResponse(response) == AuthResponse(response)


def test_auth_parameter_unknown_without_auth() -> None:
    _, out = run(greeted(), EHLO + b"MAIL FROM:<a@b.example> AUTH=<>\r\n")
    assert codes(out)[-1] == "555 5.5.4"


def _auth_parameter_reply(value: str) -> str:
    """The reply to ``MAIL`` with ``AUTH=value``, from a server offering AUTH."""
    line = f"MAIL FROM:<a@b.example> AUTH={value}\r\n".encode()
    return codes(run(auth_server(auth_require_tls=False), EHLO + line)[1])[-1]


@pytest.mark.parametrize(
    "value",
    [
        "+ZZ+00nul@abc.example",  # "+" not followed by two hex digits
        "+ZZ",
        "a+2",  # a "+" cut short
        "x+",
        "a=b@abc.example",  # "=" is no xchar
    ],
)
def test_a_value_that_is_not_xtext_in_auth_parameter_gets_501_as_envid_does(value: str) -> None:
    """RFC 4954 §5: ``auth-param = "AUTH=" xtext`` (RFC 3461 §4). It was decoded
    leniently, a "+" without two hex digits kept; a value that is no xtext at all now
    gets the 501 5.5.4 a malformed ENVID gets, as Exim answers it."""
    assert _auth_parameter_reply(value) == "501 5.5.4"
    envid = f"MAIL FROM:<a@b.example> ENVID={value}\r\n".encode()
    assert codes(run(greeted(dsn=True), EHLO + envid)[1])[-1] == "501 5.5.4"


@pytest.mark.parametrize(
    ("value", "submitter"),
    [
        ("<>", None),
        ("+3C+3E", None),  # <> in xtext
        ("j+2Bx@abc.example", "j+x@abc.example"),
        ("j+C3+B6rg@abc.example", "jörg@abc.example"),  # UTF-8 in ASCII xtext: no SMTPUTF8
        ("j+c3+b6rg@abc.example", "jörg@abc.example"),  # lower-case hex, read as Exim reads it
        ("j+2bx@abc.example", "j+x@abc.example"),
        ("ann@[192.0.2.1]", "ann@[192.0.2.1]"),
        # xtext, but no mailbox once decoded: taken as <> (RFC 4954 §5), not refused
        ("john", None),  # a bare user name (Postfix's lmtp to Cyrus)
        ("<john@abc.example>", None),
        ("+3Cjohn@abc.example+3E", None),
        ("John+20Doe@abc.example", None),
        ("john@abc.example.", None),
        ("evil+0D+0AX-Injected:+20yes", None),  # a CR LF: header injection
        ("evil+0D+0A@abc.example", None),
        ("nul+00@abc.example", None),
        ("+FF@abc.example", None),  # no UTF-8
        ("j+E2+80+8Bx@abc.example", None),  # U+200B, a format character
    ],
)
def test_an_auth_parameter_that_is_xtext_is_accepted_and_names_a_mailbox_or_none(
    value: str, submitter: str | None
) -> None:
    """RFC 4954 §5: a server "does nothing more than parse and discard syntactically
    valid AUTH parameters" from a client it does not trust, and acts "as if the
    AUTH=<> parameter was supplied". The branch refused with 501 every value that was
    not strict xtext of a mailbox, and so refused the whole message; now any xtext is
    accepted, and what does not decode to a mailbox free of controls names no one."""
    assert _auth_parameter_reply(value) == "250 2.1.0"
    mailbox = read_submitter(value)
    assert (None if mailbox is None else str(mailbox)) == submitter


@given(xtexts(hostile=True))
def test_an_auth_parameter_is_refused_only_when_it_is_not_xtext(value: str) -> None:
    """Whatever a client sends, the server refuses it with 501 5.5.4 only when it is
    no xtext (hex of either case accepted), and otherwise takes it; the submitter it
    names is None or a mailbox that holds no control or format character."""
    reply = _auth_parameter_reply(value)
    not_xtext = re.fullmatch(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})+", value) is None
    assert reply == ("501 5.5.4" if not_xtext else "250 2.1.0")
    mailbox = read_submitter(value)
    if mailbox is not None:
        assert not any(unicodedata.category(char) in ("Cc", "Cf") for char in str(mailbox))


@given(mailboxes(utf8=True))
def test_any_mailbox_as_xtext_is_an_accepted_auth_parameter(mailbox: Mailbox) -> None:
    assert _auth_parameter_reply(xtext(str(mailbox))) == "250 2.1.0"
    assert read_submitter(xtext(str(mailbox))) == parse_mailbox(str(mailbox))


# -- the two machines back to back -------------------------------------------------


def exchange(
    name: str, user: str, secret: str, mechanism: ClientMechanism | None = None
) -> tuple[ServerConnection, ServerAuth, ClientConnection, Reply]:
    server_auth = ServerAuth(SERVER_FACTORIES)
    pair = ConnectionPair(
        ClientConnection("mail.abc.example"),
        ServerConnection(
            "mx.pqr.example", auth_mechanisms=list(SERVER_FACTORIES), auth_require_tls=False
        ),
        answer=answer_with(server_auth),
        greeting=Reply(220, "mx.pqr.example ESMTP"),
    )
    pair.send(Ehlo("mail.abc.example"))
    assert name in pair.client.extensions.auth
    flow = ClientAuth(mechanism or client_mechanism(name, user, secret))
    pair.send(flow.start())
    while (reply := pair.answers[-1].reply).code == 334:
        pair.send(flow.respond(reply))
    assert not any(isinstance(e, ConnectionClosed | BadCommand) for e in pair.server_events)
    with contextlib.suppress(AuthenticationFailed):
        flow.finish(reply)
    return pair.server, server_auth, pair.client, reply


@pytest.mark.parametrize("name", list(SERVER_FACTORIES))
def test_every_mechanism_authenticates_between_the_machines(name: str) -> None:
    server, auth, client, reply = exchange(name, "john@abc.example", "correct horse")
    assert reply.code == 235 and server.authenticated
    assert auth.success is not None and auth.success.authcid == "john@abc.example"
    assert client.state is State.READY


def test_the_client_machine_sends_auth_parameters_the_server_reads_and_no_other() -> None:
    """The client is held to what RFC 4954 §5 asks of a sender, more than the server
    refuses: strict xtext (upper-case hex) of a mailbox or ``<>``. Anything else is the
    application's LocalProtocolError, never on the wire; a mailbox written with
    :func:`xtext` goes and is read back."""
    _, _, client, _ = exchange("PLAIN", "john@abc.example", "correct horse")
    sender = parse_mailbox("john@abc.example")
    for bad in ("evil+0D+0AX-Injected:+20yes@abc.example", "j+2bx@abc.example", "a+2", "nobody"):
        with pytest.raises(LocalProtocolError, match="AUTH="):
            client.send(Mail(sender, {"AUTH": bad}))
    assert client.state is State.READY
    wire = client.send(Mail(sender, {"AUTH": xtext("j+ö@abc.example")}))
    assert wire == b"MAIL FROM:<john@abc.example> AUTH=j+2B+C3+B6@abc.example\r\n"


@pytest.mark.parametrize("name", list(SERVER_FACTORIES))
def test_every_mechanism_refuses_a_wrong_secret(name: str) -> None:
    server, auth, client, reply = exchange(name, "john@abc.example", "wrong")
    assert reply.code in (535, 501) and not server.authenticated
    assert auth.success is None
    assert server.state is State.READY and client.state is State.READY


def test_a_long_initial_response_follows_an_empty_challenge() -> None:
    """RFC 4954 §4: the AUTH command keeps to RFC 5321's 512-octet line; an initial
    response that would take it over (an OAuth token of a realistic size) is sent
    in answer to the server's empty 334 instead, and the login succeeds."""
    token = "t" * 1500
    server_auth = ServerAuth({"XOAUTH2": lambda: XOAuth2Server(lambda u, t: t == token)})
    pair = ConnectionPair(
        ClientConnection("mail.abc.example"),
        ServerConnection("mx.pqr.example", auth_mechanisms=["XOAUTH2"], tls=True),
        answer=answer_with(server_auth),
        greeting=Reply(220, "mx.pqr.example ESMTP"),
    )
    pair.send(Ehlo("mail.abc.example"))
    flow = ClientAuth(XOAuth2Client("john@abc.example", token))
    command = flow.start()
    assert command == Auth("XOAUTH2")
    pair.send(command)
    assert pair.answers[-1].reply == Reply(334, "")
    pair.send(flow.respond(pair.answers[-1].reply))
    assert pair.answers[-1].reply.code == 235 and pair.server.authenticated


@pytest.mark.parametrize(("extra", "sent"), [(0, True), (1, False)])
def test_the_initial_response_is_kept_while_the_auth_line_fits(extra: int, sent: bool) -> None:
    """The whole line is measured, CRLF included: up to 512 octets, the initial
    response rides on it."""
    room = (512 - len(b"AUTH PLAIN \r\n")) // 4 * 3  # octets whose base64 fits
    password = "p" * (room - len("\0u\0") + extra)
    command = ClientAuth(PlainClient("u", password)).start()
    assert (command.initial_response is not None) is sent


def test_client_finish_raises_on_refusal() -> None:
    flow = ClientAuth(PlainClient("john@abc.example", "x"))
    with pytest.raises(AuthenticationFailed) as info:
        flow.finish(Reply(535, "no", "5.7.8"))
    assert info.value.reply == Reply(535, "no", "5.7.8")


@pytest.mark.parametrize(
    ("make", "challenge"),
    [
        (lambda: ScramSHA256Client("john@abc.example", "x"), b"r=zzz,s=c2FsdA==,i=4096"),
        (lambda: PlainClient("john@abc.example", "x"), b"unexpected"),
    ],
)
def test_a_server_that_goes_on_after_the_cancel_fails_the_exchange(
    make: Callable[[], ClientMechanism], challenge: bytes
) -> None:
    """A hostile server that answers the client's "*" with 235 (or another 334) made
    finish (respond) raise LocalProtocolError, the error of the application's misuse,
    rather than the AuthenticationFailed ClientAuth documents."""
    mechanism = make()
    flow = ClientAuth(mechanism)
    flow.start()
    assert flow.respond(Reply.challenge(challenge)) == AuthResponse(cancel=True)
    with pytest.raises(AuthenticationFailed, match="cancelled") as info:
        flow.finish(Reply(235, "Authentication successful", "2.7.0"))
    assert info.value.reply is not None and info.value.reply.code == 235
    with pytest.raises(AuthenticationFailed, match="cancelled"):
        flow.respond(Reply.challenge(b"again"))
    assert not mechanism.complete


# -- a real client: smtplib --------------------------------------------------------


def serve_one(sock: socket.socket) -> None:
    conn = ServerConnection(
        "mx.pqr.example", auth_mechanisms=list(SERVER_FACTORIES), auth_require_tls=False
    )
    auth = ServerAuth(SERVER_FACTORIES)
    answer = answer_with(auth)
    with sock:
        sock.sendall(conn.send(Reply(220, "mx.pqr.example ESMTP")))
        while data := sock.recv(65536):
            events, out = run_server(conn, data, answer=answer)
            sock.sendall(out)
            if conn.state is State.CLOSED or any(
                isinstance(event, ConnectionClosed) for event in events
            ):
                return


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize("password", ["correct horse", "wrong"])
def test_smtplib_login(method: str, password: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        sock, _ = listener.accept()
        serve_one(sock)

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("mail.abc.example")
            if password == "wrong":
                with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                    smtp.login("john@abc.example", password, initial_response_ok=True)
                assert info.value.smtp_code == 535
                smtp.user, smtp.password = "", ""
            else:
                smtp.user, smtp.password = "john@abc.example", password
                code, _ = smtp.auth(
                    method,
                    getattr(smtp, "auth_" + method.lower().replace("-", "_")),
                    initial_response_ok=True,
                )
                assert code == 235
    finally:
        thread.join(timeout=10)
        listener.close()


NOT_SASL_NAMES = [
    "PLAIN X",
    "PLAIN\r\n250 OK",
    "",
    "A" * 21,
    "PLÄIN",
    "pla\u0131n",  # str.upper() alone makes it PLAIN (dotless i): its case is ASCII
    "\u017fcram-md5",  # the long s, which str.upper() makes an S
]


@pytest.mark.parametrize("name", NOT_SASL_NAMES)
def test_an_auth_mechanism_that_is_no_sasl_name_is_refused_when_configured(name: str) -> None:
    """Each name goes on the EHLO AUTH line: RFC 4422 §3.1's 1 to 20 of A-Z, 0-9, - and _
    (a space would list two, a line break end the reply)."""
    with pytest.raises(ValueError, match="not a SASL mechanism name"):
        ServerConnection("mx.test", auth_mechanisms=["PLAIN", name])


@pytest.mark.parametrize("name", NOT_SASL_NAMES)
def test_an_auth_mechanism_set_on_a_session_is_checked_as_when_configured(name: str) -> None:
    """``conn.auth_mechanisms = ...`` (what the driver does per connection) goes through
    the constructor's check of each name: one that is no SASL name is a ValueError, and
    the session keeps what it had (a list too long for one line fails the EHLO reply
    instead: test_smtp_server.py)."""
    conn = ServerConnection("mx.test", auth_mechanisms=["PLAIN"])
    with pytest.raises(ValueError, match="not a SASL mechanism name"):
        conn.auth_mechanisms = ["LOGIN", name]
    assert conn.auth_mechanisms == ("PLAIN",)
    conn.auth_mechanisms = ["login", "plain"]
    assert conn.auth_mechanisms == ("LOGIN", "PLAIN")


def test_one_str_for_the_auth_mechanisms_is_a_type_error() -> None:
    """``auth_mechanisms="PLAIN"`` would offer P, L, A, I and N, each a SASL name: a
    str is refused where the list is given, constructor and session alike."""
    with pytest.raises(TypeError, match=r"auth_mechanisms=\['PLAIN'\]"):
        ServerConnection("mx.test", auth_mechanisms="PLAIN")
    conn = ServerConnection("mx.test", auth_mechanisms=["LOGIN"])
    with pytest.raises(TypeError, match="not one str"):
        conn.auth_mechanisms = "PLAIN"
    assert conn.auth_mechanisms == ("LOGIN",)


def test_why_the_client_cancelled_is_public() -> None:
    """``ClientAuth`` kept the SASLError's reason in a private field, so a driver could
    only say "a malformed challenge, or a server that could not prove...": it is now
    ``cancelled`` (None until the cancel), read-only, and ``cancel_error`` is the
    SASLError itself, to chain."""
    flow = ClientAuth(ScramSHA256Client("john@abc.example", "x", nonce="abc"))
    flow.start()
    assert (flow.cancelled, flow.cancel_error) == (None, None)  # no narrowing to None
    salt = base64.b64encode(b"saltsalt").decode()
    answer = flow.respond(Reply.challenge(f"r=abcXYZ,s={salt},i=1".encode()))
    assert answer == AuthResponse(cancel=True)
    assert flow.cancelled is not None and "iteration count 1" in flow.cancelled
    assert isinstance(flow.cancel_error, SASLError)
    assert str(flow.cancel_error) == flow.cancelled
    with pytest.raises(AttributeError):
        flow.cancelled = None  # type: ignore[misc]  # read-only: the test checks it


@pytest.mark.parametrize(
    ("make", "challenge", "reason"),
    [
        (lambda: LoginClient("alice", "pencil"), Reply(334, "!!!not base64!!!"), "not base64"),
        (
            lambda: ScramSHA256Client("john@abc.example", "x", nonce="abc"),
            Reply.challenge(b"r=abcXYZ,s=c2FsdHNhbHQ=,i=1"),
            "iteration count 1",
        ),
    ],
    ids=["challenge not base64", "SCRAM challenge refused"],
)
def test_the_refusal_of_a_cancelled_exchange_says_why_the_client_cancelled(
    make: Callable[[], ClientMechanism], challenge: Reply, reason: str
) -> None:
    """After the client's ``*`` the server's 501 answers the cancel, not the
    credentials: ``finish`` said only "authentication refused: 501 ...", with no
    cause, where a challenge that is not base64 used to raise at once. It now names
    the client's reason and chains the error that made it cancel."""
    flow = ClientAuth(make())
    flow.start()
    assert flow.respond(challenge) == AuthResponse(cancel=True)
    refusal = Reply(501, "Authentication cancelled", "5.7.0")
    with pytest.raises(AuthenticationFailed, match="cancelled by the client") as info:
        flow.finish(refusal)
    assert reason in str(info.value)
    assert info.value.reply == refusal
    assert info.value.__cause__ is flow.cancel_error
    assert info.value.__cause__ is not None
