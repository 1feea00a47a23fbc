"""SMTP AUTH (RFC 4954) in both adapters, one suite run on asyncio and on trio.

Our client against our server with every mechanism; the server's policy
(TLS for PLAIN and LOGIN, AUTH before MAIL, failed attempts, bad input, a
handler's veto, STARTTLS forgetting the identity); real clients against our
server (smtplib, aiosmtplib, swaks); our client against aiosmtpd.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hmac
import logging
import smtplib
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from peers import (
    RawSmtpSession,
    RunningSMTPServer,
    TLSFiles,
    cancelled_elsewhere,
    free_port,
    missing_peer,
    module,
    raw_smtp_session,
    received_now,
    recorded_sleeps,
    require_program,
    run,
    running_smtp_server,
)
from smtpcore._driver._smtp_credentials import Credentials
from smtpcore.asyncio import Timeouts
from smtpcore.handler import Authenticator, AuthIdentity, Handler, Session
from smtpcore.sasl import (
    CramMD5Server,
    PlainClient,
    PlainServer,
    SASLError,
    ScramSHA1Server,
    ScramSHA256Server,
    derive_scram_credentials,
)
from smtpcore.smtp import Mail, Reply
from smtpcore.testing import CollectingHandler

USER = "john@abc.example"
PASSWORD = "correct horse"
TOKEN = "ya29.token-for-john"
MESSAGE = b"Subject: auth\r\n\r\nbody\r\n"
MECHANISMS = ["SCRAM-SHA-256", "OAUTHBEARER", "XOAUTH2", "CRAM-MD5", "PLAIN", "LOGIN"]
TOKEN_MECHANISMS = {"OAUTHBEARER", "XOAUTH2"}
SCRAM = {USER: derive_scram_credentials(PASSWORD)}


def check_password(username: str, password: str) -> bool:
    return hmac.compare_digest(password.encode(), PASSWORD.encode()) and username == USER


def get_password(username: str) -> str | None:
    return PASSWORD if username == USER else None


def check_token(username: str, token: str) -> bool | str:
    return username == USER and hmac.compare_digest(token.encode(), TOKEN.encode())


def authenticator(*mechanisms: str) -> Authenticator:
    return Authenticator(
        check_password=check_password,
        get_scram_credentials=SCRAM.get,
        get_password=get_password,
        check_token=check_token,
        authorize=lambda authzid, authcid: authzid == "postmaster@abc.example",
        mechanisms=mechanisms or None,
    )


class Submission(CollectingHandler):
    """Records who authenticated and what MAIL saw; refuses one account in handle_auth."""

    def __init__(self) -> None:
        super().__init__()
        self.identities: list[AuthIdentity] = []
        self.mail_identities: list[AuthIdentity | None] = []

    async def handle_auth(self, session: Session, identity: AuthIdentity) -> Reply | None:
        self.identities.append(identity)
        if identity.authzid == "postmaster@abc.example" and session.tls is None:
            return Reply(535, "Not for postmaster without TLS", "5.7.8")
        return None

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        self.mail_identities.append(session.authenticated)
        return None


def credentials(mechanism: str, secret: str = PASSWORD) -> dict[str, Any]:
    """The client keywords that log in as USER with ``mechanism`` only."""
    options: dict[str, Any] = {"username": USER, "auth_mechanisms": [mechanism]}
    if mechanism in TOKEN_MECHANISMS:
        options["oauth_token"] = TOKEN if secret == PASSWORD else "wrong-token"
    else:
        options["password"] = secret
    return options


async def login_and_send(adapter: str, port: int, **options: Any) -> str | None:
    """Connect our client, authenticate, send MESSAGE; return the mechanism used."""
    async with module(adapter).SMTPClient(
        "127.0.0.1", port, hostname="client.test", **options
    ) as c:
        await c.send_message(MESSAGE, USER, ["bob@pqr.example"])
        used: str | None = c.authenticated_with
        return used


# -- our client against our server ---------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_our_client_authenticates_with_each_mechanism(
    adapter: str, tls: TLSFiles, mechanism: str
) -> None:
    handler = Submission()
    with running_smtp_server(
        adapter,
        handler,
        ssl_context=tls.server_context,
        auth=authenticator(),
        require_auth=True,
    ) as server:
        used = run(
            adapter,
            lambda: login_and_send(
                adapter, server.port, ssl_context=tls.client_context, **credentials(mechanism)
            ),
        )
    assert used == mechanism
    assert handler.identities == [AuthIdentity(USER, USER, mechanism)]
    assert handler.mail_identities == handler.identities
    [envelope] = handler.messages
    assert envelope.content == MESSAGE and envelope.submitter is None


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_wrong_secret_raises_authentication_error(
    adapter: str, tls: TLSFiles, mechanism: str
) -> None:
    handler = Submission()
    errors = module(adapter)
    with (
        running_smtp_server(
            adapter, handler, ssl_context=tls.server_context, auth=authenticator()
        ) as server,
        pytest.raises(errors.AuthenticationError) as info,
    ):
        run(
            adapter,
            lambda: login_and_send(
                adapter,
                server.port,
                ssl_context=tls.client_context,
                **credentials(mechanism, "wrong password"),
            ),
        )
    assert info.value.reply.code == 535
    assert str(info.value.reply.status) == "5.7.8"
    assert handler.identities == [] and handler.messages == []


def test_the_strongest_shared_mechanism_is_chosen(adapter: str, tls: TLSFiles) -> None:
    with running_smtp_server(
        adapter,
        Submission(),
        ssl_context=tls.server_context,
        auth=authenticator("PLAIN", "CRAM-MD5", "LOGIN"),
    ) as server:
        used = run(
            adapter,
            lambda: login_and_send(
                adapter,
                server.port,
                ssl_context=tls.client_context,
                username=USER,
                password=PASSWORD,
            ),
        )
    assert used == "CRAM-MD5"


def test_scram_sha1_is_chosen_over_cram_md5_where_it_is_the_only_scram(adapter: str) -> None:
    """A server that offers SCRAM-SHA-1 (by mechanism name, with SHA-1 keys) and no
    newer SCRAM: a client with a password runs SCRAM-SHA-1 (RFC 5802), not CRAM-MD5."""
    sha1_keys = {USER: derive_scram_credentials(PASSWORD, hash_name="SHA-1")}
    mechanisms = {
        "SCRAM-SHA-1": lambda: ScramSHA1Server(sha1_keys.get),
        "CRAM-MD5": lambda: CramMD5Server(get_password, "mx.test"),
    }
    handler = Submission()
    with running_smtp_server(adapter, handler, auth=mechanisms, require_auth=True) as server:
        used = run(
            adapter,
            lambda: login_and_send(adapter, server.port, username=USER, password=PASSWORD),
        )
    assert used == "SCRAM-SHA-1"
    assert handler.identities == [AuthIdentity(USER, USER, "SCRAM-SHA-1")]


def test_auth_is_required_before_mail(adapter: str, tls: TLSFiles) -> None:
    errors = module(adapter)
    with running_smtp_server(
        adapter,
        Submission(),
        ssl_context=tls.server_context,
        auth=authenticator(),
        require_auth=True,
    ) as server:
        with pytest.raises(errors.SenderRefused) as info:
            run(
                adapter,
                lambda: login_and_send(adapter, server.port, ssl_context=tls.client_context),
            )
        assert info.value.reply.code == 530 and str(info.value.reply.status) == "5.7.0"
        with raw_smtp_session(server.host, server.port) as s:
            s.recv_reply()
            s.command(b"EHLO client.test")
            assert s.command(b"MAIL FROM:<a@abc.example>").startswith(b"530 5.7.0")
            assert s.command(b"NOOP").startswith(b"250")


def test_plain_is_offered_only_after_starttls(adapter: str, tls: TLSFiles) -> None:
    with (
        running_smtp_server(
            adapter,
            Submission(),
            ssl_context=tls.server_context,
            auth=Authenticator(check_password=check_password),
        ) as server,
        smtplib.SMTP(server.host, server.port, local_hostname="client.test") as client,
    ):
        client.ehlo()
        assert not client.has_extn("auth")
        initial = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        code, text = client.docmd("AUTH", f"PLAIN {initial}")
        assert (code, text[:6]) == (538, b"5.7.11")
        client.starttls(context=tls.client_context)
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert client.login(USER, PASSWORD)[0] == 235


def test_our_client_keeps_passwords_off_plaintext(adapter: str) -> None:
    """A server that offers PLAIN without TLS gets it only with allow_plaintext_auth."""
    errors = module(adapter)
    handler = Submission()
    auth = Authenticator(check_password=check_password)
    with running_smtp_server(adapter, handler, auth=auth, auth_require_tls=False) as server:
        with pytest.raises(errors.AuthenticationNotAvailable, match="need TLS") as refused:
            run(
                adapter,
                lambda: login_and_send(adapter, server.port, username=USER, password=PASSWORD),
            )
        assert handler.identities == []
        assert refused.value.needs_tls and refused.value.local and refused.value.code == 538
        used = run(
            adapter,
            lambda: login_and_send(
                adapter,
                server.port,
                username=USER,
                password=PASSWORD,
                allow_plaintext_auth=True,
            ),
        )
    assert used == "PLAIN"
    assert [i.mechanism for i in handler.identities] == ["PLAIN"]


def test_our_clients_auth_mechanisms_match_in_ascii_case_alone(adapter: str) -> None:
    """``auth_mechanisms=["pla\u0131n"]`` was ``str.upper()``-ed into PLAIN, and the
    client logged in with it; a mechanism name is ASCII and so is its case (RFC 4422
    §3.1): it is no mechanism the server offers. ``["plain"]`` is PLAIN."""
    errors = module(adapter)
    handler = Submission()
    auth = Authenticator(check_password=check_password)
    options = {"username": USER, "password": PASSWORD, "allow_plaintext_auth": True}
    with running_smtp_server(adapter, handler, auth=auth, auth_require_tls=False) as server:
        with pytest.raises(errors.AuthenticationNotAvailable, match="no mechanism in common"):
            run(
                adapter,
                lambda: login_and_send(
                    adapter, server.port, auth_mechanisms=["pla\u0131n"], **options
                ),
            )
        assert handler.identities == []
        used = run(
            adapter,
            lambda: login_and_send(adapter, server.port, auth_mechanisms=["plain"], **options),
        )
    assert used == "PLAIN"


def test_the_clients_credentials_keep_the_secrets_out_of_their_repr() -> None:
    """What a client keeps to log in with showed the password and the token in its
    repr; they are hidden as the events hide theirs, and kept in the fields."""
    given = Credentials(USER, PASSWORD, TOKEN)
    assert repr(given) == (
        f"Credentials(username={USER!r}, password=<hidden>, oauth_token=<hidden>, "
        "mechanism=None, allowed=None)"
    )
    assert (given.password, given.oauth_token) == (PASSWORD, TOKEN)
    assert given == Credentials(USER, PASSWORD, TOKEN) != Credentials(USER, "other", TOKEN)


def test_a_mechanism_given_by_hand_keeps_the_password_off_plaintext(adapter: str) -> None:
    """``authenticate(PlainClient(...))`` follows the same rule as the mechanism the
    client chooses: 538 5.7.11 before anything is sent, unless allowed."""
    mod = module(adapter)
    handler = Submission()
    auth = Authenticator(check_password=check_password)

    async def by_hand(port: int, **options: Any) -> str | None:
        async with mod.SMTPClient("127.0.0.1", port, hostname="client.test", **options) as c:
            await c.authenticate(PlainClient(USER, PASSWORD))
            used: str | None = c.authenticated_with
            return used

    with running_smtp_server(adapter, handler, auth=auth, auth_require_tls=False) as server:
        with pytest.raises(mod.AuthenticationNotAvailable, match="needs TLS") as refused:
            run(adapter, lambda: by_hand(server.port))
        assert refused.value.code == 538 and handler.identities == []
        assert refused.value.needs_tls and refused.value.local
        assert str(refused.value).endswith("(allow_plaintext_auth=True to send anyway)")
        assert run(adapter, lambda: by_hand(server.port, allow_plaintext_auth=True)) == "PLAIN"
    assert [i.mechanism for i in handler.identities] == ["PLAIN"]


def test_the_auth_refusal_says_whether_tls_is_what_it_lacks(adapter: str) -> None:
    """``AuthenticationNotAvailable.needs_tls``, as POP3's: true with ``538 5.7.11``
    for a mechanism given in the constructor that needs TLS (its message saying how
    to send it anyway), false with ``504 5.5.4`` when the server offers no AUTH."""
    mod = module(adapter)
    handler = Submission()
    auth = Authenticator(check_password=check_password)
    with running_smtp_server(adapter, handler, auth=auth, auth_require_tls=False) as server:
        given = PlainClient(USER, PASSWORD)
        with pytest.raises(mod.AuthenticationNotAvailable) as refused:
            run(adapter, lambda: login_and_send(adapter, server.port, sasl_mechanism=given))
        assert (refused.value.needs_tls, refused.value.code) == (True, 538)
        assert str(refused.value).endswith(
            "PLAIN needs TLS (allow_plaintext_auth=True to send anyway)"
        )
    with running_smtp_server(adapter, Submission()) as server:
        with pytest.raises(mod.AuthenticationNotAvailable, match="does not offer AUTH") as none:
            run(
                adapter,
                lambda: login_and_send(adapter, server.port, username=USER, password=PASSWORD),
            )
        assert (none.value.needs_tls, none.value.code, none.value.local) == (False, 504, True)


def test_starttls_after_a_login_forgets_it(adapter: str, tls: TLSFiles) -> None:
    """RFC 3207 §4.2: the server discards what the session knew, a login included."""
    mod = module(adapter)
    auth = Authenticator(check_password=check_password)

    async def session(port: int) -> tuple[str | None, str | None]:
        client = mod.SMTPClient(
            "127.0.0.1",
            port,
            ssl_context=tls.client_context,
            starttls=False,
            username=USER,
            password=PASSWORD,
            allow_plaintext_auth=True,
        )
        async with client:
            before = client.authenticated_with
            await client.starttls()
            return before, client.authenticated_with

    with running_smtp_server(
        adapter, Submission(), ssl_context=tls.server_context, auth=auth, auth_require_tls=False
    ) as server:
        assert run(adapter, lambda: session(server.port)) == ("PLAIN", None)


def test_send_message_takes_credentials(adapter: str, tls: TLSFiles) -> None:
    handler = Submission()
    with running_smtp_server(
        adapter, handler, ssl_context=tls.server_context, auth=authenticator()
    ) as server:
        result = run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                USER,
                ["bob@pqr.example"],
                host="127.0.0.1",
                port=server.port,
                ssl_context=tls.client_context,
                username=USER,
                password=PASSWORD,
            ),
        )
    assert len(result.delivered) == 1
    assert [i.mechanism for i in handler.identities] == ["SCRAM-SHA-256"]


def test_a_password_goes_over_tls_from_the_connect(adapter: str, tls: TLSFiles) -> None:
    """Port 465 (RFC 8314 §3): the session is under TLS from its first byte, so a
    mechanism that sends the password as it is (PLAIN) may be used."""
    handler = Submission()
    auth = Authenticator(check_password=check_password)
    with running_smtp_server(
        adapter, handler, ssl_context=tls.server_context, tls_on_connect=True, auth=auth
    ) as server:
        used = run(
            adapter,
            lambda: login_and_send(
                adapter,
                server.port,
                ssl_context=tls.client_context,
                tls_on_connect=True,
                username=USER,
                password=PASSWORD,
            ),
        )
    assert used == "PLAIN"
    assert [i.mechanism for i in handler.identities] == ["PLAIN"]


def test_a_scram_server_that_cannot_prove_itself_is_refused(adapter: str, tls: TLSFiles) -> None:
    """The mapping form of ``auth=``; a server with the wrong ServerKey sends a bad ``v=``."""
    forged = dataclasses.replace(SCRAM[USER], server_key=bytes(32))
    auth = {"SCRAM-SHA-256": lambda: ScramSHA256Server({USER: forged}.get)}
    with (
        running_smtp_server(adapter, Submission(), ssl_context=tls.server_context, auth=auth) as s,
        pytest.raises(module(adapter).AuthenticationError) as info,
    ):
        run(
            adapter,
            lambda: login_and_send(
                adapter, s.port, ssl_context=tls.client_context, username=USER, password=PASSWORD
            ),
        )
    assert info.value.reply.code == 501  # the client's "*" (RFC 4954 §4)
    # The SASL reason, as the POP3 client gives it, not a guess between two causes.
    assert "SCRAM server signature does not match" in str(info.value)
    assert isinstance(info.value.__cause__, SASLError)


def test_server_options_are_checked() -> None:
    from smtpcore.asyncio import POP3Server, SMTPServer
    from smtpcore.maildrop import MaildirStore

    with pytest.raises(ValueError, match="need TLS"):
        SMTPServer(Handler(), auth=Authenticator(check_password=check_password))
    with pytest.raises(ValueError, match="require_auth needs auth"):
        SMTPServer(Handler(), require_auth=True)
    no_delays: tuple[Any, ...] = (-1.0, float("nan"), float("inf"), None, "2", True, 10**400)
    for delay in no_delays:
        with pytest.raises(ValueError, match="auth_failure_delay"):
            SMTPServer(Handler(), auth_failure_delay=delay)
        with pytest.raises(ValueError, match="auth_failure_delay"):
            POP3Server(MaildirStore(".", {}), auth_failure_delay=delay)
    assert SMTPServer(Handler()).options.auth_failure_delay == 2.0
    assert POP3Server(MaildirStore(".", {})).options.auth_failure_delay == 2.0
    with pytest.raises(ValueError, match="credential check"):
        Authenticator(check_password=check_password, mechanisms=["CRAM-MD5"])
    # True passed as 1 (and "4096" raised TypeError from a comparison); every SCRAM
    # login then failed building its server mechanism. A wrong type is TypeError, as
    # mechanisms="PLAIN" below, and a count out of range ValueError.
    wrong_types: tuple[Any, ...] = ((True, "bool"), ("4096", "str"), (4096.0, "float"))
    for count, kind in wrong_types:
        with pytest.raises(TypeError, match=f"scram_mock_iterations must be an int, not {kind}"):
            Authenticator(check_password=check_password, scram_mock_iterations=count)
    for count in (0, -1, 2**32):
        with pytest.raises(ValueError, match=f"must be from 1 to 4294967295, not {count}"):
            Authenticator(check_password=check_password, scram_mock_iterations=count)
    # One str where names are listed would be its letters: P, L, A, I, N.
    with pytest.raises(TypeError, match=r"mechanisms=\['PLAIN'\]"):
        Authenticator(check_password=check_password, mechanisms="PLAIN")
    server = SMTPServer(Handler(), auth=authenticator(), auth_require_tls=False)
    # -PLUS is configured, and offered only where the transport gives channel binding data
    assert list(server.options.auth_mechanisms) == ["SCRAM-SHA-256-PLUS", *MECHANISMS]


def test_authenticator_settings_of_a_wrong_type_are_refused_when_built() -> None:
    # mechanisms=[1] was an AttributeError from .upper(); check_password=5 and
    # in_thread="yes" were taken, and failed (or ran in a thread) at each AUTH.
    callables = [
        f.name
        for f in dataclasses.fields(Authenticator)
        if f.name not in ("mechanisms", "in_thread", "scram_mock_iterations")
    ]
    assert "check_password" in callables and "is_user" in callables
    for name in callables:
        settings: dict[str, Any] = {"check_password": check_password, name: 5}
        with pytest.raises(TypeError, match=f"^{name} must be callable or None, not int$"):
            Authenticator(**settings)
    in_thread: tuple[Any, ...] = ("yes", 1, 0, None)
    for flag in in_thread:
        with pytest.raises(TypeError, match=r"^in_thread must be True or False"):
            Authenticator(check_password=check_password, in_thread=flag)
    not_names: tuple[Any, ...] = ([1], [b"PLAIN"], 5, ["PLAIN", None])
    for names in not_names:
        with pytest.raises(TypeError, match=r"^mechanisms takes"):
            Authenticator(check_password=check_password, mechanisms=names)
    with pytest.raises(ValueError, match="offers no mechanism X-UNKNOWN"):
        Authenticator(check_password=check_password, mechanisms=["PLAIN", "x-unknown"])
    with pytest.raises(ValueError, match="offers no mechanism"):  # str.upper() made it PLAIN
        Authenticator(check_password=check_password, mechanisms=["pla\u0131n"])


def test_authenticator_takes_any_callable_and_any_iterable_of_names() -> None:
    class Checker:
        def __call__(self, username: str, password: str) -> bool:
            return False

    async def is_user(username: str) -> bool:  # taken; its verdict fails at run time
        return True

    auth = Authenticator(
        check_password=Checker(),
        get_password=get_password,
        is_user=is_user,  # type: ignore[arg-type]  # an async one is still callable
        mechanisms=(n for n in ["login", "CRAM-MD5"]),  # read once
        in_thread=True,
    )
    assert auth.mechanisms == ("LOGIN", "CRAM-MD5")
    assert list(auth.server_mechanisms("mx.pqr.example")) == ["LOGIN", "CRAM-MD5"]


def test_each_mechanism_an_authenticator_offers_builds_that_mechanism() -> None:
    """Which credential check makes which mechanism available, strongest first, and each
    factory builds the mechanism of its name (the names it refuses are derived from the
    same table)."""
    offered = authenticator().server_mechanisms("mx.pqr.example")
    assert list(offered) == ["SCRAM-SHA-256-PLUS", *MECHANISMS]
    assert {name: factory().name for name, factory in offered.items()} == {
        name: name for name in offered
    }
    with pytest.raises(ValueError, match=f"it builds {', '.join(offered)} "):
        Authenticator(check_password=check_password, mechanisms=["SCRAM-SHA-1"])
    by_check: dict[str, list[str]] = {
        "check_password": ["PLAIN", "LOGIN"],
        "get_password": ["CRAM-MD5", "PLAIN", "LOGIN"],
        "get_scram_credentials": ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
        "check_token": ["OAUTHBEARER", "XOAUTH2"],
    }
    checks: dict[str, Any] = {
        "check_password": check_password,
        "get_password": get_password,
        "get_scram_credentials": SCRAM.get,
        "check_token": check_token,
    }
    for check, names in by_check.items():
        auth = Authenticator(**{check: checks[check]})
        assert list(auth.server_mechanisms("mx.pqr.example")) == names


def test_smtp_server_auth_of_a_wrong_type_is_refused_when_built() -> None:
    from smtpcore.asyncio import SMTPServer

    def plain() -> PlainServer:
        return PlainServer(lambda authzid, authcid, password: False)

    wrong: tuple[tuple[Any, str], ...] = (
        (5, "^auth takes an Authenticator or a mapping"),
        (["PLAIN"], "^auth takes an Authenticator or a mapping"),
        ({1: plain}, r"^auth takes mechanism names \(str\) as keys, not int"),
        ({"PLAIN": 5}, r"^auth\['PLAIN'\] must be a factory of a mechanism"),
    )
    for auth, message in wrong:
        with pytest.raises(TypeError, match=message):
            SMTPServer(Handler(), auth=auth, auth_require_tls=False)
    server = SMTPServer(Handler(), auth={"plain": plain}, auth_require_tls=False)
    assert list(server.options.auth_mechanisms) == ["PLAIN"]
    for name in ("pla\u0131n", "\u017fcram-sha-256"):  # str.upper() made PLAIN and SCRAM-...
        with pytest.raises(ValueError, match="not a SASL mechanism name"):
            SMTPServer(Handler(), auth={name: plain}, auth_require_tls=False)


# -- the server's policy, on the wire ---------------------------------------------------


def plaintext_auth_server(
    adapter: str, **options: Any
) -> contextlib.AbstractContextManager[RunningSMTPServer]:
    """A submission server offering the test authenticator's mechanisms without TLS,
    as the raw-session AUTH tests talk to it; ``options`` are the server's."""
    return running_smtp_server(
        adapter, Submission(), auth=authenticator(), auth_require_tls=False, **options
    )


@contextlib.contextmanager
def _logged_session(
    server: contextlib.AbstractContextManager[RunningSMTPServer],
    caplog: pytest.LogCaptureFixture,
) -> Iterator[RawSmtpSession]:
    """A raw session with ``server``, past its greeting and EHLO, with what the server
    logs at INFO in ``caplog``."""
    with (
        server as s,
        raw_smtp_session(s.host, s.port) as c,
        caplog.at_level(logging.INFO, logger="smtpcore.server"),
    ):
        c.recv_reply()
        c.command(b"EHLO client.test")
        yield c


def plain(authcid: str, password: str, authzid: str = "") -> bytes:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode())


def test_identity_authzid_veto_and_auth_parameter(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Submission()
    with _logged_session(
        running_smtp_server(adapter, handler, auth=authenticator(), auth_require_tls=False), caplog
    ) as c:
        # Acting as postmaster is authorized, but the handler wants TLS for it.
        reply = c.command(b"AUTH PLAIN " + plain(USER, PASSWORD, "postmaster@abc.example"))
        assert reply.startswith(b"535 5.7.8 Not for postmaster")
        # A veto is a failed attempt: logged as one, in the line fail2ban reads.
        [refused] = [r.getMessage() for r in caplog.records if "reject: AUTH" in r.getMessage()]
        assert refused.startswith("NOQUEUE: reject: AUTH from [127.0.0.1]:")
        assert "535 5.7.8 Not for postmaster" in refused
        assert refused.endswith(f"; mechanism=PLAIN user=<{USER}>"), refused
        assert c.command(b"MAIL FROM:<a@abc.example> AUTH=<>").startswith(b"250")
        assert c.command(b"RSET").startswith(b"250")
        assert c.command(b"AUTH PLAIN " + plain(USER, PASSWORD)).startswith(b"235 2.7.0")
        assert c.command(b"AUTH PLAIN " + plain(USER, PASSWORD)).startswith(b"503 5.5.1")
        c.send(b"MAIL FROM:<a@abc.example> AUTH=j+2Bx@abc.example\r\nRCPT TO:<b@pqr.example>\r\n")
        assert [c.recv_reply()[:3] for _ in range(2)] == [b"250", b"250"]
        assert c.command(b"DATA").startswith(b"354")
        assert c.command(b"hi\r\n.").startswith(b"250")
    assert [(i.authzid, i.authcid) for i in handler.identities] == [
        ("postmaster@abc.example", USER),
        (USER, USER),
    ]
    assert handler.mail_identities == [None, AuthIdentity(USER, USER, "PLAIN")]
    [envelope] = handler.messages
    assert envelope.submitter == "j+x@abc.example"
    assert envelope.mail_params["AUTH"] == "j+2Bx@abc.example"


def test_the_submitter_is_the_auth_parameters_mailbox_and_never_holds_a_control(
    adapter: str,
) -> None:
    """``Envelope.submitter`` was ``AUTH=``'s xtext decoded a second time, leniently: an
    encoded CR LF reached it (``evil\r\nX-Injected: yes``), and ``+3C+3E`` (``<>``,
    RFC 4954 §5) was taken for a mailbox. A value that is no xtext gets 501 5.5.4; any
    xtext is accepted (§5: parse and discard), and the submitter is its mailbox, or
    None for ``<>`` and for whatever decodes to no mailbox (a bare name, a CR LF)."""
    handler = Submission()
    with (
        running_smtp_server(adapter, handler, auth=authenticator(), auth_require_tls=False) as s,
        raw_smtp_session(s.host, s.port) as c,
    ):
        c.recv_reply()
        c.command(b"EHLO client.test")
        assert c.command(b"AUTH PLAIN " + plain(USER, PASSWORD)).startswith(b"235")
        for value in (b"+ZZ+00nul", b"a+2", b"a=b@abc.example"):
            assert c.command(b"MAIL FROM:<a@abc.example> AUTH=" + value).startswith(b"501 5.5.4")
        accepted = (
            b"evil+0D+0AX-Injected:+20yes",
            b"john",
            b"+3C+3E",
            b"j+C3+B6rg@abc.example",
            b"j+c3+b6rg@abc.example",
        )
        for value in accepted:
            assert c.command(b"MAIL FROM:<a@abc.example> AUTH=" + value).startswith(b"250")
            assert c.command(b"RCPT TO:<b@pqr.example>").startswith(b"250")
            assert c.command(b"DATA").startswith(b"354")
            assert c.command(b"hi\r\n.").startswith(b"250")
    submitters = [envelope.submitter for envelope in handler.messages]
    assert submitters == [None, None, None, "jörg@abc.example", "jörg@abc.example"]


def test_bad_input_and_the_failure_limit(adapter: str) -> None:
    with (
        plaintext_auth_server(adapter, max_auth_failures=2) as server,
        raw_smtp_session(server.host, server.port) as c,
    ):
        c.recv_reply()
        c.command(b"EHLO client.test")
        assert c.command(b"AUTH PLAIN !!!").startswith(b"501 5.5.2")
        assert c.command(b"AUTH LOGIN").startswith(b"334 VXNlcm5hbWU6")
        assert c.command(b"*").startswith(b"501 5.0.0")
        assert c.command(b"AUTH LOGIN").startswith(b"334")
        assert c.command(b"A" * 13000).startswith(b"500 5.5.6")
        assert c.command(b"AUTH GSSAPI").startswith(b"504 5.5.4")
        assert c.command(b"NOOP").startswith(b"250")
        for _ in range(2):
            assert c.command(b"AUTH PLAIN " + plain(USER, "nope")).startswith(b"535 5.7.8")
        assert c.command(b"AUTH PLAIN " + plain(USER, PASSWORD)).startswith(b"421 4.7.0")
        assert c.recv_some() == b""


def test_a_failed_auth_is_answered_after_the_delay_and_holds_no_other_session(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong password was answered at once: a client guessed a thousand times a
    second. Its 535 (and a veto's) now waits ``auth_failure_delay``, in that session
    alone: another client is served meanwhile. A 504 (an unknown mechanism) is no
    guess, and is answered at once, as a cancelled exchange is (see
    test_a_cancelled_auth_is_answered_without_the_failure_delay), and so is a success.

    "Meanwhile" is checked as an order, not on a stopwatch: the bystander is done
    while the guesser's answer has still not come. "At once" is checked as no delay
    asked of the clock. The delay is long enough that a second test worker sharing the
    CPU cannot stretch the bystander's session past it."""
    delay = 1.0
    sleeps = recorded_sleeps(adapter, monkeypatch)
    with (
        plaintext_auth_server(adapter, auth_failure_delay=delay) as server,
        raw_smtp_session(server.host, server.port) as guesser,
        raw_smtp_session(server.host, server.port) as bystander,
    ):
        guesser.recv_reply()
        guesser.command(b"EHLO guesser.test")
        assert guesser.command(b"AUTH GSSAPI").startswith(b"504 5.5.4")
        assert delay not in sleeps
        started = time.monotonic()
        guesser.send(b"AUTH PLAIN " + plain(USER, "nope") + b"\r\n")
        bystander.recv_reply()
        assert bystander.command(b"EHLO bystander.test").startswith(b"250")
        assert bystander.command(b"NOOP").startswith(b"250")
        assert received_now(guesser.sock) == b""
        assert guesser.recv_reply().startswith(b"535 5.7.8")
        assert time.monotonic() - started >= delay
        started = time.monotonic()
        # A veto (the handler's 535) counts as a failure too.
        vetoed = plain(USER, PASSWORD, "postmaster@abc.example")
        assert guesser.command(b"AUTH PLAIN " + vetoed).startswith(b"535 5.7.8 Not for")
        assert time.monotonic() - started >= delay
        assert guesser.command(b"AUTH PLAIN " + plain(USER, PASSWORD)).startswith(b"235")
    assert sleeps.count(delay) == 2


def test_a_cancelled_auth_is_answered_without_the_failure_delay(
    adapter: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that answers a challenge with ``*`` gave up (RFC 4954 §4): it guessed
    no password, and is answered ``501`` at once, logged as cancelled, not in the line
    fail2ban's filter bans. It waited ``auth_failure_delay`` and was logged
    ``reject: AUTH``, as a wrong password is."""
    sleeps = recorded_sleeps(adapter, monkeypatch)
    with _logged_session(plaintext_auth_server(adapter, auth_failure_delay=30.0), caplog) as c:
        for mechanism in (b"LOGIN", b"PLAIN", b"CRAM-MD5"):
            assert c.command(b"AUTH " + mechanism).startswith(b"334")
            assert c.command(b"*").startswith(b"501 5.0.0")
        assert c.command(b"AUTH PLAIN " + plain(USER, PASSWORD)).startswith(b"235")
    assert 30.0 not in sleeps
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "reject:" in m]
    cancelled = [m for m in messages if "cancelled by the client" in m]
    assert [m.split(" from ")[0] for m in cancelled] == [
        "AUTH LOGIN",
        "AUTH PLAIN",
        "AUTH CRAM-MD5",
    ]


def cram_md5_answer(challenge_line: bytes, password: str) -> bytes:
    """The client's answer to CRAM-MD5's ``334`` challenge line (RFC 2195 §2)."""
    challenge = base64.b64decode(challenge_line[4:].strip())
    digest = hmac.new(password.encode(), challenge, "md5").hexdigest()
    return base64.b64encode(f"{USER} {digest}".encode())


NO_CREDENTIAL_CHECKED = [
    # (lines of one attempt, the reply to its last): AUTH refusals no mechanism judged.
    ([b"AUTH CRAM-MD5 ="], b"501 5.7.0"),  # initial response to CRAM-MD5, RFC 4954 §4
    ([b"AUTH PLAIN " + plain(USER, "nope")], b"538 5.7.11"),  # PLAIN before STARTTLS
    ([b"AUTH GSSAPI"], b"504 5.5.4"),  # unknown mechanism
    ([b"AUTH"], b"501 5.5.4"),  # no mechanism
    ([b"AUTH CRAM-MD5", b"!!!!"], b"501 5.5.2"),  # answer not base64
    ([b"AUTH CRAM-MD5", b"A" * 13000], b"500 5.5.6"),  # answer over max_auth_line
]


def test_an_auth_refusal_that_checked_no_credential_is_answered_at_once_and_not_banned(
    adapter: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AUTH CRAM-MD5 =`` (an initial response to a server-first mechanism) got its
    ``501 5.7.0`` after ``auth_failure_delay``, and it and PLAIN before STARTTLS
    (538), an unknown mechanism (504), a syntax error, an answer not base64 or too
    long were logged ``reject: AUTH``, the line fail2ban bans: a client that never
    tried a password was banned. No credential was checked (RFC 4954 §6): each is
    answered at once, counts nothing toward ``max_auth_failures`` and is logged
    ``no credential checked:``. A wrong password is still delayed, logged
    ``reject: AUTH`` and counted, up to the 421."""
    sleeps = recorded_sleeps(adapter, monkeypatch)
    server = running_smtp_server(
        adapter,
        Submission(),
        auth=authenticator(),
        auth_failure_delay=0.01,
        max_auth_failures=2,
    )
    with _logged_session(server, caplog) as c:
        for lines, refusal in NO_CREDENTIAL_CHECKED:
            for line in lines[:-1]:
                assert c.command(line).startswith(b"334")
            assert c.command(lines[-1]).startswith(refusal)
        assert sleeps == []
        for _ in range(2):
            challenge = c.command(b"AUTH CRAM-MD5")
            assert c.command(cram_md5_answer(challenge, "nope")).startswith(b"535 5.7.8")
        assert sleeps == [0.01, 0.01]
        assert c.command(b"AUTH CRAM-MD5").startswith(b"421 4.7.0")
    messages = [r.getMessage() for r in caplog.records]
    unchecked = [m for m in messages if m.startswith("NOQUEUE: no credential checked: AUTH")]
    assert [m.split(": ")[3][:9].encode() for m in unchecked] == [
        refusal[:9] for _, refusal in NO_CREDENTIAL_CHECKED
    ], messages
    # One shape, whichever refused it (the machine or the mechanism), naming the
    # mechanism where the server knows it: never GSSAPI, a word it does not know.
    named = [m.partition("; mechanism=")[2] for m in unchecked]
    assert named == ["CRAM-MD5", "PLAIN", "", "", "CRAM-MD5", "CRAM-MD5"], unchecked
    rejects = [m for m in messages if "reject: AUTH" in m]
    assert [m.split(": ")[3][:9] for m in rejects] == ["535 5.7.8", "535 5.7.8", "421 4.7.0"]


REFUSED_TOKENS = {
    "XOAUTH2": f"user={USER}\x01auth=Bearer wrong\x01\x01".encode(),
    "OAUTHBEARER": f"n,a={USER},\x01auth=Bearer wrong\x01\x01".encode(),
}


@pytest.mark.parametrize("mechanism", sorted(REFUSED_TOKENS))
def test_a_cancel_after_a_refused_token_is_a_failed_login(
    adapter: str,
    mechanism: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refused token gets an error challenge (RFC 7628 §3.2.2), whose dummy answer
    gets a delayed 535. A client that answered it with ``*`` got ``501`` at once,
    logged as a cancel: it tried tokens with no delay, no line for fail2ban and no
    count toward ``max_auth_failures``. The token was judged: the ``501`` (RFC 4954
    §4) now waits ``auth_failure_delay``, is logged ``reject: AUTH``, and counts.
    A plain cancel (LOGIN after the name, SCRAM at its server-first) stays one."""
    sleeps = recorded_sleeps(adapter, monkeypatch)
    server = plaintext_auth_server(adapter, auth_failure_delay=0.01, max_auth_failures=2)
    refused = f"AUTH {mechanism} ".encode() + base64.b64encode(REFUSED_TOKENS[mechanism])
    scram_first = base64.b64encode(f"n,,n={USER},r=abcdefgh".encode())
    with _logged_session(server, caplog) as c:
        assert c.command(b"AUTH LOGIN").startswith(b"334")
        assert c.command(base64.b64encode(USER.encode())).startswith(b"334")
        assert c.command(b"*").startswith(b"501 5.0.0")
        assert c.command(b"AUTH SCRAM-SHA-256 " + scram_first).startswith(b"334")
        assert c.command(b"*").startswith(b"501 5.0.0")
        assert sleeps == []
        for _ in range(2):
            assert c.command(refused).startswith(b"334")
            assert c.command(b"*").startswith(b"501 5.7.8")
        assert sleeps == [0.01, 0.01]
        assert c.command(refused).startswith(b"421 4.7.0")
    messages = [r.getMessage() for r in caplog.records]
    cancelled = [m.split(" from ")[0] for m in messages if "cancelled by the client" in m]
    assert cancelled == ["AUTH LOGIN", "AUTH SCRAM-SHA-256"]
    rejects = [m for m in messages if "reject: AUTH" in m and ": 501 " in m]
    assert len(rejects) == 2
    assert all(
        f"501 5.7.8 Authentication cancelled, credentials invalid; mechanism={mechanism}" in m
        for m in rejects
    )


@pytest.mark.parametrize("mechanism", sorted(REFUSED_TOKENS))
def test_an_unreadable_answer_after_a_refused_token_is_a_failed_login(
    adapter: str,
    mechanism: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that answered a refused token's error challenge (RFC 7628 §3.2.2) with
    a line that is not base64, or one over ``max_auth_line``, in place of ``*`` got
    the syntax error at once: no delay, no count toward ``max_auth_failures``, and it
    tried tokens without limit. The token was judged: the reply stays the syntax
    error's (RFC 4954 §4, §6), but waits ``auth_failure_delay``, is logged as a failed
    AUTH with its mechanism, and counts. The same line in LOGIN's exchange, where
    nothing was judged, stays a plain syntax error."""
    sleeps = recorded_sleeps(adapter, monkeypatch)
    server = plaintext_auth_server(adapter, auth_failure_delay=0.01, max_auth_failures=2)
    refused = f"AUTH {mechanism} ".encode() + base64.b64encode(REFUSED_TOKENS[mechanism])
    with _logged_session(server, caplog) as c:
        assert c.command(b"AUTH LOGIN").startswith(b"334")
        assert c.command(b"!!!!").startswith(b"501 5.5.2")
        assert sleeps == []
        assert c.command(refused).startswith(b"334")
        assert c.command(b"!!!!").startswith(b"501 5.5.2")
        assert c.command(refused).startswith(b"334")
        assert c.command(b"A" * 13000).startswith(b"500 5.5.6")
        assert sleeps == [0.01, 0.01]
        assert c.command(refused).startswith(b"421 4.7.0")
    messages = [r.getMessage() for r in caplog.records]
    rejects = [m for m in messages if "reject: AUTH" in m and f"mechanism={mechanism}" in m]
    assert len(rejects) == 2, messages
    assert ": 501 5.5.2 Invalid base64 data; " in rejects[0], rejects
    assert ": 500 5.5.6 " in rejects[1], rejects


def test_a_shutdown_waits_for_a_delayed_failure_no_longer_than_its_grace(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session holding back a failed AUTH's reply is busy, not idle: a graceful
    shutdown lets it answer (then 421), and cuts it off once ``grace`` runs out, as it
    does a session busy in a handler's hook; it never waits longer than either.

    The shutdown starts once the delay has begun (asked of the clock), not after a
    guessed pause; "no longer" allows 3 s for a loaded machine, still far short of the
    other wait (30 s) and of a close's own 5 s wait."""
    sleeps = recorded_sleeps(adapter, monkeypatch)
    for delay, grace in ((0.3, 30.0), (30.0, 0.3)):
        with (
            plaintext_auth_server(adapter, auth_failure_delay=delay) as server,
            raw_smtp_session(server.host, server.port) as guesser,
        ):
            guesser.recv_reply()
            guesser.command(b"EHLO guesser.test")
            guesser.send(b"AUTH PLAIN " + plain(USER, "nope") + b"\r\n")
            due = time.monotonic() + 5
            while delay not in sleeps:  # the guess is read, its answer held back
                assert time.monotonic() < due, "the failed login's delay never began"
                time.sleep(0.01)
            started = time.monotonic()
            server.call(lambda: server.server.aclose(grace))  # noqa: B023
            assert time.monotonic() - started < min(delay, grace) + 3.0
            # Answered, then told the server is going: at once when cut off at the
            # grace's end (the delay is cut short, the reply held back goes out).
            assert guesser.recv_reply().startswith(b"535 5.7.8")
            assert guesser.recv_reply().startswith(b"421 4.3.2")
            assert guesser.recv_some() == b""


def test_an_authenticator_in_thread_checks_in_a_worker_thread_and_holds_no_other_session(
    adapter: str,
) -> None:
    """A password check is a key derivation (milliseconds; more for keys of a high
    iteration count) and ran in the event loop: fifty guessing clients held every other
    session's greeting. With ``in_thread=True`` each step of an exchange runs in a
    worker thread, and another client is served meanwhile.

    "Meanwhile" is an order, not a stopwatch: each wrong password's check is held
    until the bystander's NOOP has been answered, so that answer came while the check
    was under way (a check that held the loop would time out held, and fail)."""
    import threading

    checked_in: list[str] = []
    checking = threading.Event()  # a check has started
    release = threading.Event()  # the test lets it finish
    released: list[bool] = []

    def slow_check(username: str, password: str) -> bool:
        checked_in.append(threading.current_thread().name)
        checking.set()
        released.append(release.wait(10))
        return check_password(username, password)

    auth = Authenticator(check_password=slow_check, mechanisms=["PLAIN", "LOGIN"], in_thread=True)
    with (
        running_smtp_server(adapter, Submission(), auth=auth, auth_require_tls=False) as server,
        raw_smtp_session(server.host, server.port) as guesser,
        raw_smtp_session(server.host, server.port) as bystander,
    ):
        try:
            guesser.recv_reply()
            guesser.command(b"EHLO guesser.test")
            bystander.recv_reply()
            for login in (
                [b"AUTH PLAIN " + plain(USER, "nope")],
                [b"AUTH LOGIN", base64.b64encode(USER.encode()), base64.b64encode(b"nope")],
            ):
                for line in login[:-1]:
                    assert guesser.command(line).startswith(b"334")
                guesser.send(login[-1] + b"\r\n")
                assert checking.wait(10)  # the check is under way, and held
                assert bystander.command(b"NOOP").startswith(b"250")
                assert received_now(guesser.sock) == b""
                release.set()
                assert guesser.recv_reply().startswith(b"535 5.7.8")
                checking.clear()
                release.clear()
            release.set()
            assert guesser.command(b"AUTH PLAIN " + plain(USER, PASSWORD)).startswith(b"235 2.7.0")
        finally:
            release.set()  # a failed assertion leaves no thread held
    assert released == [True, True, True]  # no check waited out its 10 s
    assert len(checked_in) == 3
    assert threading.current_thread().name not in checked_in
    assert not any(name.startswith(("SMTPServer", "MainThread")) for name in checked_in)


@contextlib.contextmanager
def unforgiving_session(
    adapter: str, auth: Authenticator, **options: Any
) -> Iterator[RawSmtpSession]:
    """A client after EHLO, on a server whose first failed login would cost 30 s and
    end the session: where a test's AUTH must be answered as no failed login."""
    with (
        running_smtp_server(
            adapter,
            Submission(),
            auth=auth,
            auth_require_tls=False,
            auth_failure_delay=30.0,
            max_auth_failures=1,
            **options,
        ) as server,
        raw_smtp_session(server.host, server.port) as client,
    ):
        client.recv_reply()
        client.command(b"EHLO client.test")
        yield client


def test_an_authenticator_in_thread_check_past_the_command_timeout_fails_temporarily(
    adapter: str,
) -> None:
    """A step run in a worker thread was awaited with no deadline: a credential backend
    that hung held the session until it answered, while the handler's hooks get
    ``timeouts.command``. Past that the client gets ``454 4.7.0`` (RFC 4954 §6), not
    delayed nor counted as a failed attempt, and the abandoned exchange, which its
    thread still changes when its check returns, is never used again."""
    import threading

    release = threading.Event()
    returned = threading.Event()
    calls: list[str] = []

    def hung_then_quick(username: str, password: str) -> bool:
        calls.append(password)
        if len(calls) == 1:  # the backend hangs on the first check
            release.wait(10)
            returned.set()
        return check_password(username, password)

    auth = Authenticator(check_password=hung_then_quick, mechanisms=["LOGIN"], in_thread=True)
    login = [b"AUTH LOGIN", base64.b64encode(USER.encode()), base64.b64encode(PASSWORD.encode())]
    try:
        with unforgiving_session(
            adapter, auth, timeouts=dataclasses.replace(Timeouts(), command=0.5)
        ) as client:
            for line in login[:-1]:
                assert client.command(line).startswith(b"334")
            started = time.monotonic()
            reply = client.command(login[-1])
            waited = time.monotonic() - started
            assert reply.startswith(b"454 4.7.0"), reply
            assert 0.4 < waited < 2.0
            # A fresh exchange, which the hung check's late success leaves alone.
            assert client.command(login[0]).startswith(b"334")
            release.set()
            assert returned.wait(5)
            time.sleep(0.1)  # its step has returned, changing the exchange it was given
            assert client.command(login[1]).startswith(b"334")
            assert client.command(login[2]).startswith(b"235 2.7.0")
    finally:
        release.set()
    assert calls == [PASSWORD, PASSWORD]


def test_authenticator_in_thread_checks_keep_off_the_frameworks_shared_threads(
    adapter: str,
) -> None:
    """The steps of an ``Authenticator(in_thread=True)`` ran on the framework's shared
    threads (asyncio's default executor, ``min(32, CPUs + 4)`` threads; trio's default
    limiter), which the reference server's spool writes use too: a credential backend
    that hung held them all. They run on threads of their own, ``AUTH_THREADS`` at
    once, and the shared threads stay free: a call on them is done while every check
    is still held (an order, not a stopwatch)."""
    import threading

    from smtpcore import _threads

    release = threading.Event()
    lock = threading.Lock()
    running: list[int] = []  # one entry per check under way
    most = 0

    def hung(username: str, password: str) -> bool:
        nonlocal most
        with lock:
            running.append(1)
            most = max(most, len(running))
        try:
            release.wait(10)
        finally:
            with lock:
                running.pop()
        return False

    async def shared_thread_work() -> bool:
        """Whether a call on the framework's shared threads is done within 5 s."""
        if adapter == "asyncio":
            try:
                await asyncio.wait_for(asyncio.to_thread(lambda: None), 5)
            except TimeoutError:
                return False
            return True
        import trio

        with trio.move_on_after(5):
            await trio.to_thread.run_sync(lambda: None)
            return True
        return False

    auth = Authenticator(check_password=hung, mechanisms=["PLAIN"], in_thread=True)
    clients = _threads.AUTH_THREADS + 4
    try:
        with (
            running_smtp_server(
                adapter, Submission(), auth=auth, auth_require_tls=False
            ) as server,
            contextlib.ExitStack() as stack,
        ):
            sessions = [
                stack.enter_context(raw_smtp_session(server.host, server.port))
                for _ in range(clients)
            ]
            for session in sessions:
                session.recv_reply()
                session.command(b"EHLO client.test")
                session.send(b"AUTH PLAIN " + plain(USER, "nope") + b"\r\n")
            due = time.monotonic() + 5
            while len(running) < _threads.AUTH_THREADS:
                assert time.monotonic() < due, f"{len(running)} checks under way"
                time.sleep(0.01)
            time.sleep(0.1)  # no other check starts: the rest wait for a thread
            assert len(running) == _threads.AUTH_THREADS
            # Done while every check is still held: none of them took a shared thread.
            assert server.call(shared_thread_work)
            assert len(running) == _threads.AUTH_THREADS and not release.is_set()
            release.set()
            for session in sessions:
                assert session.recv_reply().startswith(b"535 5.7.8")
    finally:
        release.set()
    assert most == _threads.AUTH_THREADS


@pytest.mark.parametrize("in_thread", [False, True], ids=["in_loop", "in_thread"])
def test_a_check_that_lets_out_a_cancellation_not_the_sessions_fails_temporarily(
    adapter: str, in_thread: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A credential check that lets out a cancellation its session is not under (it
    read a future other code cancelled) ended the session on asyncio with no reply
    and nothing logged (the check runs before any task of the session's, and the
    running task was asked). It fails as a check that raises: logged, ``454 4.7.0``
    (RFC 4954 §6), no failed attempt, and the session goes on."""
    if adapter == "asyncio" and not hasattr(asyncio.Task, "cancelling"):
        pytest.skip("before Python 3.11 a task cannot tell whose cancellation it is")
    stray = cancelled_elsewhere(adapter)
    calls: list[str] = []

    def check(username: str, password: str) -> bool:
        calls.append(password)
        if len(calls) == 1:
            raise stray
        return check_password(username, password)

    auth = Authenticator(check_password=check, mechanisms=["PLAIN"], in_thread=in_thread)
    with (
        unforgiving_session(adapter, auth) as client,
        caplog.at_level(logging.INFO, logger="smtpcore.server"),
    ):
        started = time.monotonic()
        assert client.command(b"AUTH PLAIN " + plain(USER, PASSWORD)).startswith(b"454 4.7.0")
        assert time.monotonic() - started < 5.0
        assert client.command(b"NOOP").startswith(b"250")
        assert client.command(b"AUTH PLAIN " + plain(USER, PASSWORD)).startswith(b"235 2.7.0")
    failed = [r for r in caplog.records if r.getMessage() == "AUTH PLAIN failed"]
    assert [r.levelno for r in failed] == [logging.ERROR]
    assert "reject: AUTH" not in caplog.text
    assert "session with" not in caplog.text


class ChallengingVeto(Submission):
    """``handle_auth`` answers with what is no answer to a finished exchange."""

    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self.reply = reply

    async def handle_auth(self, session: Session, identity: AuthIdentity) -> Reply | None:
        return self.reply


@pytest.mark.parametrize("code", [334, 250])
def test_handle_auth_answers_235_or_a_refusal_and_anything_else_is_its_failure(
    adapter: str, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """``handle_auth`` answering 334 was sent: the exchange is over, so the client's
    next command was read as a SASL response (RFC 4954 §4). A reply that is neither
    235 nor a refusal is the hook's failure, as a reply not legal for any hook is:
    logged, ``451 4.3.0``, no login, and the session goes on."""
    handler = ChallengingVeto(Reply(code, ""))
    with (
        running_smtp_server(
            adapter, handler, auth=authenticator(), auth_require_tls=False
        ) as server,
        raw_smtp_session(server.host, server.port) as client,
    ):
        client.recv_reply()
        client.command(b"EHLO client.test")
        assert client.command(b"AUTH PLAIN " + plain(USER, PASSWORD)).startswith(b"451 4.3.0")
        assert client.command(b"NOOP").startswith(b"250")
        assert client.command(b"MAIL FROM:<a@abc.example>").startswith(b"250")
    assert handler.mail_identities == [None]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(f"handle_auth's reply {code} "), errors


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
@pytest.mark.parametrize("in_thread", [False, True], ids=["in_loop", "in_thread"])
def test_a_check_that_gives_no_bool_is_the_applications_error_not_a_failed_login(
    adapter: str, in_thread: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``async def check_password`` gives a coroutine, not a bool: it was answered
    as the client's wrong password (535, the fail2ban line, counted toward
    ``max_auth_failures``), and nothing told the application. It is the
    application's error, logged as one, answered ``454 4.7.0`` at once (no failure
    delay) and never counted."""

    async def check(username: str, password: str) -> bool:  # the mistake: async def
        return True

    auth = Authenticator(
        check_password=check,  # type: ignore[arg-type]  # the mistake under test
        mechanisms=["PLAIN"],
        in_thread=in_thread,
    )
    with (
        unforgiving_session(adapter, auth) as client,
        caplog.at_level(logging.INFO, logger="smtpcore.server"),
    ):
        started = time.monotonic()
        for _ in range(2):
            reply = client.command(b"AUTH PLAIN " + plain(USER, PASSWORD))
            assert reply.startswith(b"454 4.7.0"), reply
        assert time.monotonic() - started < 5.0
        assert client.command(b"NOOP").startswith(b"250")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["AUTH PLAIN failed: check_password gave coroutine, not a bool"] * 2
    assert "reject: AUTH" not in caplog.text


def test_the_reject_log_never_quotes_what_may_be_a_password(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The reject log named a refused line by its first letters: a password sent
    without base64 as the answer to a 334, or read as a command once the exchange was
    cancelled, was logged (``reject: OPENSESAME``). An answer to a 334 is ``AUTH``, a
    known verb its name, anything else ``command``."""
    with _logged_session(plaintext_auth_server(adapter), caplog) as c:
        assert c.command(b"AUTH LOGIN").startswith(b"334")
        assert c.command(base64.b64encode(USER.encode())).startswith(b"334")
        assert c.command(b"OpenSesame!42").startswith(b"501 5.5.2")  # not base64
        assert c.command(b"AUTH LOGIN").startswith(b"334")
        assert c.command(b"*").startswith(b"501 5.0.0")
        assert c.command(b"OpenSesame!42").startswith(b"500 5.5.2")  # read as a command
        assert c.command(b"Data4Sesame").startswith(b"500 5.5.2")  # no verb of ours
        assert c.command(b"MAIL FROM:<nobody").startswith(b"501")
    refused = ("reject:", "no credential checked:")
    messages = [r.getMessage() for r in caplog.records]
    rejects = [m for m in messages if any(kind in m for kind in refused)]
    assert "SESAME" not in "\n".join(rejects).upper()
    assert [line.split(" from ")[0] for line in rejects] == [
        # the answer to the 334, which no mechanism judged (the cancel is no refusal)
        "NOQUEUE: no credential checked: AUTH",
        "NOQUEUE: reject: command",
        "NOQUEUE: reject: command",
        "NOQUEUE: reject: MAIL",
    ]


def test_starttls_forgets_the_identity(adapter: str, tls: TLSFiles) -> None:
    handler = Submission()
    with (
        running_smtp_server(
            adapter,
            handler,
            ssl_context=tls.server_context,
            auth=authenticator(),
            require_auth=True,
        ) as server,
        smtplib.SMTP(server.host, server.port, local_hostname="client.test") as client,
    ):
        client.ehlo()
        client.user, client.password = USER, PASSWORD
        assert client.auth("CRAM-MD5", client.auth_cram_md5)[0] == 235
        client.starttls(context=tls.client_context)
        client.ehlo()
        assert client.mail(USER)[0] == 530
        assert client.login(USER, PASSWORD)[0] == 235
        assert client.sendmail(USER, ["bob@pqr.example"], MESSAGE) == {}
    assert [i.mechanism for i in handler.identities] == ["CRAM-MD5", "CRAM-MD5"]
    assert handler.mail_identities == [AuthIdentity(USER, USER, "CRAM-MD5")]


# -- real clients against our server -------------------------------------------------------


SMTPLIB_METHODS = ["CRAM-MD5", "PLAIN", "LOGIN"]


@pytest.mark.interop
@pytest.mark.parametrize("call", ["login", "auth"])
@pytest.mark.parametrize("method", SMTPLIB_METHODS)
def test_smtplib_over_starttls(adapter: str, tls: TLSFiles, method: str, call: str) -> None:
    handler = Submission()
    with (
        running_smtp_server(
            adapter,
            handler,
            ssl_context=tls.server_context,
            auth=authenticator(method),
            require_auth=True,
        ) as server,
        smtplib.SMTP(server.host, server.port, local_hostname="client.test") as client,
    ):
        client.starttls(context=tls.client_context)
        if call == "login":
            assert client.login(USER, PASSWORD)[0] == 235
        else:
            # auth() without an initial response: PLAIN answers an empty 334.
            client.ehlo()
            client.user, client.password = USER, PASSWORD
            auth_object = getattr(client, "auth_" + method.lower().replace("-", "_"))
            assert client.auth(method, auth_object, initial_response_ok=False)[0] == 235
        assert client.sendmail(USER, ["bob@pqr.example"], MESSAGE) == {}
    assert handler.identities == [AuthIdentity(USER, USER, method)]
    assert len(handler.messages) == 1


@pytest.mark.interop
def test_smtplib_login_with_a_wrong_password(adapter: str, tls: TLSFiles) -> None:
    with (
        running_smtp_server(
            adapter, Submission(), ssl_context=tls.server_context, auth=authenticator()
        ) as server,
        smtplib.SMTP(server.host, server.port, local_hostname="client.test") as client,
    ):
        client.starttls(context=tls.client_context)
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login(USER, "wrong")  # tries CRAM-MD5, PLAIN and LOGIN in turn
        assert info.value.smtp_code == 535
        assert client.noop()[0] == 250


@pytest.mark.interop
@pytest.mark.parametrize("method", SMTPLIB_METHODS)
def test_aiosmtplib_login(adapter: str, tls: TLSFiles, method: str) -> None:
    handler = Submission()
    with running_smtp_server(
        adapter,
        handler,
        ssl_context=tls.server_context,
        auth=authenticator(method),
        require_auth=True,
    ) as server:

        async def send(password: str) -> Any:
            return await aiosmtplib.send(
                MESSAGE,
                sender=USER,
                recipients=["bob@pqr.example"],
                hostname="127.0.0.1",
                port=server.port,
                start_tls=True,
                tls_context=tls.client_context,
                username=USER,
                password=password,
            )

        errors, _ = asyncio.run(send(PASSWORD))
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            asyncio.run(send("wrong"))
    assert errors == {}
    assert handler.identities == [AuthIdentity(USER, USER, method)]
    assert len(handler.messages) == 1


@pytest.mark.interop
@pytest.mark.parametrize(
    ("method", "password"),
    [("PLAIN", PASSWORD), ("LOGIN", PASSWORD), ("CRAM-MD5", PASSWORD), ("PLAIN", "wrong")],
)
def test_swaks_auth(adapter: str, tls: TLSFiles, method: str, password: str) -> None:
    swaks = require_program("swaks")
    handler = Submission()
    with running_smtp_server(
        adapter,
        handler,
        ssl_context=tls.server_context,
        auth=authenticator(method),
        require_auth=True,
    ) as server:
        argv = [
            swaks,
            "--server",
            f"127.0.0.1:{server.port}",
            "--from",
            USER,
            "--to",
            "bob@pqr.example",
            "--helo",
            "client.test",
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            str(tls.ca_file),
            "--tls-sni",
            "localhost",
            "--auth",
            method,
            "--auth-user",
            USER,
            "--auth-password",
            password,
        ]
        result = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    if "requires Net::SSLeay" in output:
        missing_peer("swaks --tls needs Perl's Net::SSLeay (Debian: libnet-ssleay-perl)")
    if password != PASSWORD:
        assert result.returncode != 0 and "535 5.7.8" in output, output
        assert handler.identities == [] and handler.messages == []
        return
    assert result.returncode == 0, output
    assert "235 2.7.0" in output
    assert handler.identities == [AuthIdentity(USER, USER, method)]
    assert len(handler.messages) == 1


# -- our client against aiosmtpd ---------------------------------------------------------


class AiosmtpdAccounts:
    """aiosmtpd's authenticator callback over the one test account; a sink for messages."""

    def __init__(self) -> None:
        self.logins: list[str] = []
        self.envelopes: list[Any] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        ok = auth_data.login == USER.encode() and hmac.compare_digest(
            auth_data.password, PASSWORD.encode()
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)  # handled=True would send no reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@contextlib.contextmanager
def running_aiosmtpd(*, auth_required: bool) -> Iterator[tuple[AiosmtpdAccounts, int]]:
    """aiosmtpd on a loopback port for the block, AUTH offered without TLS: its
    accounts and port."""
    accounts = AiosmtpdAccounts()
    controller = Controller(
        accounts,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=accounts,
        auth_require_tls=False,
        auth_required=auth_required,
    )
    controller.start()
    try:
        yield accounts, controller.port
    finally:
        controller.stop()


@pytest.fixture
def aiosmtpd_with_auth() -> Iterator[tuple[AiosmtpdAccounts, int]]:
    with running_aiosmtpd(auth_required=True) as running:
        yield running


@pytest.mark.interop
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_our_client_against_aiosmtpd(
    adapter: str, aiosmtpd_with_auth: tuple[AiosmtpdAccounts, int], mechanism: str
) -> None:
    accounts, port = aiosmtpd_with_auth
    options = {"allow_plaintext_auth": True, "auth_mechanisms": [mechanism], "username": USER}
    used = run(adapter, lambda: login_and_send(adapter, port, password=PASSWORD, **options))
    assert used == mechanism
    with pytest.raises(module(adapter).AuthenticationError) as info:
        run(adapter, lambda: login_and_send(adapter, port, password="wrong", **options))
    assert info.value.reply.code == 535
    assert accounts.logins == [mechanism]
    [envelope] = accounts.envelopes
    assert envelope.mail_from == USER and envelope.original_content == MESSAGE


def test_the_adapters_own_tls_gives_no_channel_binding_so_no_plus(
    adapter: str, tls: TLSFiles
) -> None:
    """The standard library's ssl cannot export keying material (RFC 9266's
    tls-exporter): over the adapters' transports SCRAM-SHA-256-PLUS is configured but
    not offered, and the client logs in with SCRAM-SHA-256."""

    async def session(port: int) -> tuple[frozenset[str], dict[str, bytes], str | None]:
        async with module(adapter).SMTPClient(
            "127.0.0.1",
            port,
            hostname="client.test",
            ssl_context=tls.client_context,
            username=USER,
            password=PASSWORD,
        ) as client:
            return (
                client.connection.extensions.auth,
                client.channel_bindings(),
                (client.authenticated_with),
            )

    with running_smtp_server(
        adapter, Submission(), ssl_context=tls.server_context, auth=authenticator()
    ) as server:
        offered, bindings, used = run(adapter, lambda: session(server.port))
    assert "SCRAM-SHA-256" in offered and "SCRAM-SHA-256-PLUS" not in offered
    assert bindings == {}
    assert used == "SCRAM-SHA-256"


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "AUTH from" in r.getMessage()]


def test_a_failed_auth_names_only_a_user_is_user_knows(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The reject line named whatever the client sent as its name: a password typed at
    LOGIN's name prompt, or PLAIN's fields swapped, put the password into the log.
    A name is logged now only when ``is_user`` knows it (escaped, cut to 255
    characters), ``user=<>`` otherwise, as Dovecot logs failures."""
    odd = "eve\u2028x@abc.example"
    long_name = "a" * 300 + "@abc.example"
    known = [USER, odd, long_name]
    auth = dataclasses.replace(authenticator(), is_user=known.__contains__)
    attempts = [[b"AUTH PLAIN " + plain(name, "no")] for name in known]
    attempts.append([b"AUTH PLAIN " + plain("S3cret-Passw0rd!", "no")])
    attempts.append([b"AUTH LOGIN", *map(base64.b64encode, (b"S3cret-Passw0rd!", b"x"))])
    with (
        running_smtp_server(adapter, Submission(), auth=auth, auth_require_tls=False) as s,
        caplog.at_level(logging.INFO, logger="smtpcore.server"),
    ):
        for commands in attempts:  # one session each: three failures end a session
            with raw_smtp_session(s.host, s.port) as c:
                c.recv_reply()
                c.command(b"EHLO client.test")
                replies = [c.command(command) for command in commands]
                assert replies[-1].startswith(b"535"), replies
    lines = _refusals(caplog)
    assert len(lines) == 5 and all(": reject: AUTH" in line for line in lines), lines
    ends = [line.rpartition("; ")[2] for line in lines]
    assert sorted(ends[:3]) == [
        "mechanism=PLAIN user=<" + "a" * 252 + "...>",
        "mechanism=PLAIN user=<eve\\u2028x@abc.example>",
        f"mechanism=PLAIN user=<{USER}>",
    ]
    assert ends[3:] == ["mechanism=PLAIN user=<>", "mechanism=LOGIN user=<>"]
    assert "S3cret" not in "\n".join(lines)


def test_without_is_user_a_failed_auth_names_nobody(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An Authenticator that cannot tell a user from a password logs ``user=<>``."""
    with _logged_session(plaintext_auth_server(adapter), caplog) as c:
        assert c.command(b"AUTH PLAIN " + plain(USER, "no")).startswith(b"535")
    [line] = _refusals(caplog)
    assert line.endswith("; mechanism=PLAIN user=<>"), line


def test_cram_md5_for_a_user_without_a_clear_password_is_not_logged_as_a_guess(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """fetchmail's ``auth any`` tries CRAM-MD5 first; for a user whose secret is SCRAM
    keys it cannot succeed, and its reject line got the poller banned. The client is
    answered as for a wrong password; the line, at INFO, says why, without
    ``reject:``. An unknown user's attempt is a refusal as before."""
    import hashlib

    keys_only = "mary@abc.example"
    known = {USER, keys_only}
    auth = dataclasses.replace(authenticator(), is_user=known.__contains__)
    with _logged_session(
        running_smtp_server(adapter, Submission(), auth=auth, auth_require_tls=False), caplog
    ) as c:
        replies = []
        for name in (keys_only, USER, "nobody@abc.example"):
            challenge = base64.b64decode(c.command(b"AUTH CRAM-MD5")[4:].strip())
            digest = hmac.new(b"wrong", challenge, hashlib.md5).hexdigest()
            replies.append(c.command(base64.b64encode(f"{name} {digest}".encode())))
    assert replies[0] == replies[1] == replies[2], replies
    lines = _refusals(caplog)
    assert len(lines) == 3, lines
    impossible, wrong, unknown = lines
    assert ": reject:" not in impossible and impossible.startswith("NOQUEUE: AUTH from [")
    assert impossible.endswith(
        "; not possible for this user: no password in the clear; "
        f"mechanism=CRAM-MD5 user=<{keys_only}>"
    ), impossible
    assert ": reject: AUTH from" in wrong
    assert wrong.endswith(f"; mechanism=CRAM-MD5 user=<{USER}>"), wrong
    assert unknown.endswith("; mechanism=CRAM-MD5 user=<>") and ": reject: AUTH" in unknown


def test_a_positional_authenticator_means_what_it_meant() -> None:
    """Fields added later go last, keyword-only: the seventh positional argument is
    still ``in_thread``, not ``has_passwords`` (whose call then raised TypeError at
    every session start)."""
    auth = Authenticator(check_password, None, None, None, None, None, True)
    assert auth.in_thread is True and auth.has_passwords is None and auth.is_user is None
    assert auth.withheld() == frozenset()
    with pytest.raises(TypeError):
        Authenticator(check_password, None, None, None, None, None, True, 4096, None)  # type: ignore[call-arg]
