"""A server's success before the client mechanism has sent its part is no success.

RFC 4422 §3.6: an exchange whose mechanism has not completed cannot end in an
outcome of success, and a client told of one treats the authentication as failed.
A ``235`` (SMTP) or ``+OK`` (POP3) to ``AUTH LOGIN`` before the password, to ``AUTH
CRAM-MD5`` before the digest, to a bare ``AUTH PLAIN`` (its initial response withheld,
the line too long) before the credentials, or to a bare ``AUTH XOAUTH2`` or
``OAUTHBEARER`` before the token: the mechanism's ``verify_success`` raises
``SASLError``, ``ClientAuth.finish`` raises ``AuthenticationFailed`` chaining it, and
the clients end the session as they do for a SCRAM server that did not prove itself
(``test_client_unproved_scram``): its side is logged in where the client's is not.
"""

from __future__ import annotations

import base64
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest

from peers import ADAPTERS, run
from smtpcore import NEED_DATA, PAUSED, LocalProtocolError, pop3, smtp
from smtpcore.sasl import (
    Challenge,
    ClientMechanism,
    CramMD5Client,
    LoginClient,
    OAuthBearerClient,
    PlainClient,
    PlainServer,
    SASLError,
    Success,
    XOAuth2Client,
)
from smtpcore.testing import ExpectClose, ScriptedServer, script

LONG = "p" * 400  # a password or token whose initial response no AUTH line holds


@dataclass(frozen=True)
class Early:
    """A mechanism, the challenges it answers before the server's success, and what
    its refusal says the client had still to send."""

    make: Callable[[], ClientMechanism]
    challenges: tuple[bytes, ...]
    owed: str


EARLY = {
    "LOGIN before the username": Early(lambda: LoginClient("tim", "pw"), (), "its username"),
    "LOGIN before the password": Early(
        lambda: LoginClient("tim", "pw"), (b"Username:",), "its password"
    ),
    "CRAM-MD5 before the digest": Early(lambda: CramMD5Client("tim", "pw"), (), "its digest"),
    "PLAIN withheld": Early(lambda: PlainClient("tim", LONG), (), "its credentials"),
    "XOAUTH2 withheld": Early(lambda: XOAuth2Client("tim", LONG), (), "its token"),
    "OAUTHBEARER withheld": Early(lambda: OAuthBearerClient("tim", LONG), (), "its token"),
}


# -- the mechanisms -------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "owed"),
    [
        (lambda: PlainClient("tim", "pw"), "its credentials"),
        (lambda: LoginClient("tim", "pw"), "its username"),
        (lambda: CramMD5Client("tim", "pw"), "its digest"),
        (lambda: XOAuth2Client("tim", "t"), "its token"),
        (lambda: OAuthBearerClient("tim", "t"), "its token"),
    ],
    ids=["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"],
)
def test_a_success_before_anything_was_sent_is_refused(
    make: Callable[[], ClientMechanism], owed: str
) -> None:
    mechanism = make()
    with pytest.raises(SASLError, match=f"success before the client sent {owed}"):
        mechanism.verify_success(None)
    assert not mechanism.complete
    with pytest.raises(LocalProtocolError, match="already failed"):
        mechanism.verify_success(None)  # a refused success stays refused


def test_login_owes_its_password_after_its_username() -> None:
    mechanism = LoginClient("tim", "pw")
    assert mechanism.respond(b"Username:") == b"tim"
    with pytest.raises(SASLError, match="before the client sent its password"):
        mechanism.verify_success(None)
    mechanism = LoginClient("tim", "pw")
    mechanism.respond(b"Username:")
    mechanism.respond(b"Password:")
    mechanism.verify_success(None)
    assert mechanism.complete


def test_cram_md5_is_complete_once_its_digest_is_sent() -> None:
    mechanism = CramMD5Client("tim", "pw")
    mechanism.respond(b"<1.2@mx.test>")
    mechanism.verify_success(None)
    assert mechanism.complete


CLIENT_FIRST = pytest.mark.parametrize(
    "make",
    [
        lambda: PlainClient("tim", "pw"),
        lambda: XOAuth2Client("tim", "t"),
        lambda: OAuthBearerClient("tim", "t"),
    ],
    ids=["PLAIN", "XOAUTH2", "OAUTHBEARER"],
)


@CLIENT_FIRST
def test_an_initial_response_is_sent_unless_withheld(make: Callable[[], ClientMechanism]) -> None:
    """Taking the initial response counts it as sent with the command; withheld, it is
    owed until the server's empty challenge draws it out."""
    sent = make()
    sent.initial_response()
    sent.verify_success(None)
    assert sent.complete
    withheld = make()
    withheld.initial_response()
    withheld.withhold_initial_response()
    with pytest.raises(SASLError, match="success before the client sent"):
        withheld.verify_success(None)
    drawn = make()
    message = drawn.initial_response()
    drawn.withhold_initial_response()
    assert drawn.respond(b"") == message
    drawn.verify_success(None)
    assert drawn.complete


@CLIENT_FIRST
def test_withholding_after_the_response_went_is_refused(
    make: Callable[[], ClientMechanism],
) -> None:
    """Once ``respond(b"")`` has sent the withheld response, withholding it again (a
    loop that withholds at each look at the line) would mark as owed what went, and
    refuse the server's legitimate success: it is the caller's mistake instead."""
    mechanism = make()
    mechanism.initial_response()
    mechanism.withhold_initial_response()
    mechanism.withhold_initial_response()  # twice before the challenge: still withheld
    mechanism.respond(b"")
    with pytest.raises(LocalProtocolError, match="withheld after a challenge was answered"):
        mechanism.withhold_initial_response()
    mechanism.verify_success(None)
    assert mechanism.complete


@CLIENT_FIRST
def test_withholding_before_the_response_was_taken_keeps_it_owed(
    make: Callable[[], ClientMechanism],
) -> None:
    """Nothing was sent, so nothing is protected by refusing: what is owed stays owed,
    and a later take does not count it sent."""
    mechanism = make()
    mechanism.withhold_initial_response()
    mechanism.initial_response()
    with pytest.raises(SASLError, match="success before the client sent"):
        mechanism.verify_success(None)
    drawn = make()
    drawn.withhold_initial_response()
    drawn.respond(b"")  # a loop that never takes it: the empty challenge draws it
    drawn.verify_success(None)
    assert drawn.complete


@CLIENT_FIRST
def test_withholding_after_the_success_is_refused(make: Callable[[], ClientMechanism]) -> None:
    mechanism = make()
    mechanism.initial_response()
    mechanism.verify_success(None)
    with pytest.raises(LocalProtocolError, match="already complete"):
        mechanism.withhold_initial_response()
    assert mechanism.complete


@CLIENT_FIRST
def test_a_withheld_response_taken_again_stays_owed(make: Callable[[], ClientMechanism]) -> None:
    """Only the first take counts the response as sent: a loop that looks at it again
    once withheld must not let a success to the bare command pass."""
    mechanism = make()
    message = mechanism.initial_response()
    mechanism.withhold_initial_response()
    assert mechanism.initial_response() == message
    with pytest.raises(SASLError, match="success before the client sent"):
        mechanism.verify_success(None)


@pytest.mark.parametrize(
    ("make", "owed"),
    [
        (lambda: LoginClient("tim", "pw"), "its username"),
        (lambda: CramMD5Client("tim", "pw"), "its digest"),
    ],
    ids=["LOGIN", "CRAM-MD5"],
)
def test_withholding_no_initial_response_leaves_the_part_owed(
    make: Callable[[], ClientMechanism], owed: str
) -> None:
    """A withhold on a mechanism with no initial response once wiped what it owed: a
    235 to the bare ``AUTH LOGIN`` was taken for a success (RFC 4422 §3.6)."""
    for withhold_first in (False, True):
        mechanism = make()
        if withhold_first:
            mechanism.withhold_initial_response()
        assert mechanism.initial_response() is None
        mechanism.withhold_initial_response()
        with pytest.raises(SASLError, match=f"success before the client sent {owed}"):
            mechanism.verify_success(None)


def test_withholding_after_a_challenge_is_refused_without_an_initial_response() -> None:
    mechanism = LoginClient("tim", "pw")
    assert mechanism.initial_response() is None
    mechanism.withhold_initial_response()  # nothing to withhold: harmless before a challenge
    mechanism.respond(b"Username:")
    with pytest.raises(LocalProtocolError, match="after a challenge was answered"):
        mechanism.withhold_initial_response()


# -- the machines, by hand ------------------------------------------------------


def _smtp_early(early: Early) -> smtp.AuthenticationFailed:
    """Run ``early`` through the SMTP client machine and ``ClientAuth``; the server's
    replies are bytes written here: its challenges, then 235."""
    conn = smtp.ClientConnection("client.test")

    def read(data: bytes) -> smtp.Reply:
        conn.receive_data(data)
        event = conn.next_event()
        assert isinstance(event, smtp.Reply), event
        return event

    read(b"220 mx.test ESMTP\r\n")
    conn.send(smtp.Ehlo("client.test"))
    read(b"250-mx.test\r\n250 AUTH LOGIN CRAM-MD5 PLAIN XOAUTH2 OAUTHBEARER\r\n")
    flow = smtp.ClientAuth(early.make())
    command = flow.start()
    assert command.initial_response is None  # none, or withheld: the line is too long
    conn.send(command)
    for challenge in early.challenges:
        reply = read(b"334 " + base64.b64encode(challenge) + b"\r\n")
        conn.send(flow.respond(reply))
    success = read(b"235 2.7.0 Authentication successful\r\n")
    with pytest.raises(smtp.AuthenticationFailed) as raised:
        flow.finish(success)
    assert not flow.mechanism.complete
    return raised.value


def _pop3_early(early: Early) -> pop3.AuthenticationFailed:
    """As :func:`_smtp_early`, over the POP3 client machine: ``+`` lines, then ``+OK``."""
    conn = pop3.ClientConnection("client.test")

    def read(data: bytes) -> pop3.Event:
        conn.receive_data(data)
        event = conn.next_event()
        assert event is not NEED_DATA and event is not PAUSED
        return event

    assert isinstance(read(b"+OK ready\r\n"), pop3.Ok)
    flow = pop3.ClientAuth(early.make())
    command = flow.start()
    assert command.initial_response is None
    conn.send(command)
    for challenge in early.challenges:
        response = read(b"+ " + base64.b64encode(challenge) + b"\r\n")
        assert isinstance(response, pop3.Continue)
        conn.send(flow.respond(response))
    success = read(b"+OK logged in\r\n")
    assert isinstance(success, pop3.Ok)
    with pytest.raises(pop3.AuthenticationFailed) as raised:
        flow.finish(success)
    assert not flow.mechanism.complete
    return raised.value


@pytest.mark.parametrize("case", list(EARLY))
def test_an_early_235_fails_the_smtp_exchange(case: str) -> None:
    error = _smtp_early(EARLY[case])
    assert isinstance(error.__cause__, SASLError)
    assert f"before the client sent {EARLY[case].owed}" in str(error)
    assert error.reply is not None and error.reply.code == 235


@pytest.mark.parametrize("case", list(EARLY))
def test_an_early_ok_fails_the_pop3_exchange(case: str) -> None:
    error = _pop3_early(EARLY[case])
    assert isinstance(error.__cause__, SASLError)
    assert f"before the client sent {EARLY[case].owed}" in str(error)
    assert isinstance(error.response, pop3.Ok)


# -- mechanisms of your own that override initial_response() --------------------


class _Recomputed(PlainClient):
    """Overrides ``initial_response()`` without calling the base's: it gives the
    credentials it built itself."""

    def __init__(self, authcid: str, password: str) -> None:
        super().__init__(authcid, password)
        self._wire = b"\x00" + authcid.encode() + b"\x00" + password.encode()

    def initial_response(self) -> bytes:
        return self._wire


class _Counted(PlainClient):
    """Overrides ``initial_response()`` and calls the base's."""

    def __init__(self, authcid: str, password: str) -> None:
        super().__init__(authcid, password)
        self.taken = 0

    def initial_response(self) -> bytes:
        self.taken += 1
        return super().initial_response()


OVERRIDING = pytest.mark.parametrize(
    "shape", [_Recomputed, _Counted], ids=["without super()", "with super()"]
)
BOTH = pytest.mark.parametrize("protocol", ["smtp", "pop3"])


def _accepted(protocol: str, mechanism: ClientMechanism) -> bytes | None:
    """Run ``mechanism`` through the protocol's client machine and ``ClientAuth`` to
    the server's success, an empty challenge first when the command went bare; what
    went with the command. ``finish`` raises unless the success was taken."""
    conn: Any
    if protocol == "smtp":
        conn = smtp.ClientConnection("client.test")
        for data in (b"220 mx.test ESMTP\r\n", b"250-mx.test\r\n250 AUTH PLAIN\r\n"):
            conn.receive_data(data)
            assert isinstance(conn.next_event(), smtp.Reply)
            if data.startswith(b"220"):
                conn.send(smtp.Ehlo("client.test"))
        flow: Any = smtp.ClientAuth(mechanism)
        challenge, success = b"334 \r\n", b"235 2.7.0 Authentication successful\r\n"
    else:
        conn = pop3.ClientConnection("client.test")
        conn.receive_data(b"+OK ready\r\n")
        assert isinstance(conn.next_event(), pop3.Ok)
        flow = pop3.ClientAuth(mechanism)
        challenge, success = b"+ \r\n", b"+OK logged in\r\n"
    command = flow.start()
    conn.send(command)
    if command.initial_response is None:
        conn.receive_data(challenge)
        conn.send(flow.respond(conn.next_event()))
    conn.receive_data(success)
    flow.finish(conn.next_event())
    assert mechanism.complete
    sent: bytes | None = command.initial_response
    return sent


@OVERRIDING
@BOTH
def test_a_success_to_an_overriding_mechanisms_credentials_is_taken(
    protocol: str, shape: type[PlainClient]
) -> None:
    """The credentials went with the command; a subclass whose ``initial_response()``
    did not call the base's had them counted as never sent, and the server's success
    was refused as early ('success before the client sent its credentials'):
    ``ClientAuth`` counts them sent itself."""
    assert _accepted(protocol, shape("tim", "pw")) == b"\x00tim\x00pw"


@OVERRIDING
@BOTH
def test_an_overriding_mechanisms_withheld_response_is_drawn_out(
    protocol: str, shape: type[PlainClient]
) -> None:
    assert _accepted(protocol, shape("tim", LONG)) is None


@OVERRIDING
@BOTH
def test_an_early_success_to_an_overriding_mechanism_is_refused(
    protocol: str, shape: type[PlainClient]
) -> None:
    """RFC 4422 §3.6 holds whichever way the subclass is written: a success to the bare
    ``AUTH PLAIN``, before the withheld credentials, is none."""
    early = Early(lambda: shape("tim", LONG), (), "its credentials")
    error = _smtp_early(early) if protocol == "smtp" else _pop3_early(early)
    assert isinstance(error.__cause__, SASLError)
    assert "before the client sent its credentials" in str(error)


def test_the_overriding_method_is_asked_once() -> None:
    mechanism = _Counted("tim", "pw")
    smtp.ClientAuth(mechanism).start()
    assert mechanism.taken == 1


class _Declining(PlainClient):
    """Overrides ``initial_response()``, calls the base's (to look at it, say) and
    sends none: the command goes bare and the credentials answer the empty challenge."""

    def initial_response(self) -> None:  # type: ignore[override]  # typed bytes, not at run time
        super().initial_response()
        return None


class _DecliningAlone(PlainClient):
    """Overrides ``initial_response()`` to send none, without calling the base's."""

    def initial_response(self) -> None:  # type: ignore[override]  # as above
        return None


DECLINING = pytest.mark.parametrize(
    "shape", [_Declining, _DecliningAlone], ids=["with super()", "without super()"]
)


@DECLINING
@BOTH
def test_an_early_success_to_a_declined_initial_response_is_refused(
    protocol: str, shape: type[PlainClient]
) -> None:
    """An override that called the base's and then gave None had the credentials counted
    as sent with a bare ``AUTH PLAIN``, and the server's ``235`` or ``+OK`` to that
    command, before any credentials, taken as a login: what goes with the command
    decides what is owed."""
    early = Early(lambda: shape("tim", "pw"), (), "its credentials")
    error = _smtp_early(early) if protocol == "smtp" else _pop3_early(early)
    assert isinstance(error.__cause__, SASLError)
    assert "before the client sent its credentials" in str(error)


@DECLINING
@BOTH
def test_a_declined_initial_response_is_drawn_out(protocol: str, shape: type[PlainClient]) -> None:
    assert _accepted(protocol, shape("tim", "pw")) is None


@BOTH
def test_an_instance_override_of_initial_response_is_asked(protocol: str) -> None:
    """``ClientAuth`` read the base's response past an override set on the instance
    (``mock.patch.object``), which main asked: the credentials went with the command
    where the override gave None, and a success to the bare command could be taken."""
    mechanism = PlainClient("tim", "pw")
    with mock.patch.object(mechanism, "initial_response", return_value=None) as asked:
        early = Early(lambda: mechanism, (), "its credentials")
        error = _smtp_early(early) if protocol == "smtp" else _pop3_early(early)
    assert asked.call_count == 1
    assert "before the client sent its credentials" in str(error)


class _Refreshed(XOAuth2Client):
    """Overrides ``initial_response()`` with a token fetched when ``AUTH`` is sent, too
    long for the line: the constructor's token is stale by then."""

    def initial_response(self) -> bytes:
        return b"user=tim\x01auth=Bearer FRESH" + b"x" * 600 + b"\x01\x01"


@BOTH
def test_a_withheld_response_is_answered_with_the_bytes_taken(protocol: str) -> None:
    """The empty challenge after a withhold was answered with the constructor's bytes
    (``Bearer STALE``), not the ones the override gave when ``AUTH`` was sent."""
    flow: Any = (smtp if protocol == "smtp" else pop3).ClientAuth(_Refreshed("tim", "STALE"))
    assert flow.start().initial_response is None
    empty = smtp.Reply(334, "") if protocol == "smtp" else pop3.Continue(b"")
    answer = flow.respond(empty).data
    assert answer.startswith(b"user=tim\x01auth=Bearer FRESH")
    assert b"STALE" not in answer


@BOTH
def test_a_class_patched_after_it_was_made_is_counted_by_client_auth(protocol: str) -> None:
    """A method set on the class later (``mock.patch.object(PlainClient, ...)``) is no
    counted override: ``ClientAuth`` counts what it gives itself."""
    with mock.patch.object(PlainClient, "initial_response", return_value=None):
        early = Early(lambda: PlainClient("tim", "pw"), (), "its credentials")
        error = _smtp_early(early) if protocol == "smtp" else _pop3_early(early)
    assert "before the client sent its credentials" in str(error)


# -- a loop of your own (docs/sasl.rst), with no ClientAuth ---------------------


def _own_loop(mechanism: ClientMechanism, *, early: bool) -> None:
    """The loop docs/sasl.rst shows, against a PLAIN server in memory: the initial
    response goes with ``AUTH`` when it is not None; ``early``, the server's success
    comes straight after the command."""
    first = mechanism.initial_response()
    if early:
        mechanism.verify_success(None)
        return
    server = PlainServer(lambda authzid, authcid, password: password == "pw")
    step = server.start(first)
    while isinstance(step, Challenge):
        step = server.step(mechanism.respond(step.data))
    assert isinstance(step, Success)
    mechanism.verify_success(step.data)


@DECLINING
def test_an_own_loops_early_success_to_a_declined_initial_response_is_refused(
    shape: type[PlainClient],
) -> None:
    """An override that called the base's and then gave None had the credentials
    counted as sent, so a success to the bare ``AUTH PLAIN`` the loop sent was taken
    as a login: the count is of what the override gives, whoever calls it."""
    mechanism = shape("tim", "pw")
    with pytest.raises(SASLError, match="before the client sent its credentials"):
        _own_loop(mechanism, early=True)
    assert not mechanism.complete


@DECLINING
def test_an_own_loop_draws_out_a_declined_initial_response(shape: type[PlainClient]) -> None:
    mechanism = shape("tim", "pw")
    _own_loop(mechanism, early=False)
    assert mechanism.complete


@OVERRIDING
@pytest.mark.parametrize("early", [True, False], ids=["success at once", "whole exchange"])
def test_an_own_loop_takes_a_success_to_an_overriding_mechanisms_credentials(
    shape: type[PlainClient], early: bool
) -> None:
    """An override that did not call the base's had its credentials counted as never
    sent by a loop of your own, and the server's success to them refused."""
    mechanism = shape("tim", "pw")
    _own_loop(mechanism, early=early)
    assert mechanism.complete


def test_an_own_loops_withheld_override_is_answered_with_its_own_bytes() -> None:
    mechanism = _Refreshed("tim", "STALE")
    first = mechanism.initial_response()
    mechanism.withhold_initial_response()  # the loop found the line too long
    assert mechanism.respond(b"") == first
    with pytest.raises(SASLError, match="before the client sent its token"):
        _Refreshed("tim", "STALE").verify_success(None)


# -- the clients, against a scripted server ------------------------------------

DRIVEN = ["LOGIN before the password", "CRAM-MD5 before the digest", "PLAIN withheld"]
"""One case of each kind: a challenge answered, none, and an initial response withheld."""


def _transcript(protocol: str, early: Early) -> str:
    name = early.make().name
    if protocol == "pop3":
        opening = f"S: +OK ready\nC: CAPA\nS: +OK\nS: SASL {name}\nS: .\nC: AUTH {name}\n"
        challenge, success = "S: + {}\n", "S: +OK maildrop locked\n"
    else:
        opening = f"S: 220 mx.test ESMTP\nC~ EHLO .+\nS: 250-mx.test\nS: 250 AUTH {name}\n"
        opening += f"C: AUTH {name}\n"
        challenge, success = "S: 334 {}\n", "S: 235 2.7.0 Authentication successful\n"
    lines = [opening]
    for sent in early.challenges:
        lines.append(challenge.format(base64.b64encode(sent).decode()))
        lines.append("C~ .+\n")  # the client's answer: the user name
    lines.append(success)  # to a bare AUTH PLAIN too: its initial response withheld
    return "".join(lines)


def _client(protocol: str, adapter: str, port: int) -> Any:
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    options: dict[str, Any] = {"allow_plaintext_auth": True}
    if adapter == "sync":
        options["timeout"] = 10
    if protocol == "pop3":
        return module.POP3Client("127.0.0.1", port, stls=False, **options)
    return module.SMTPClient("127.0.0.1", port, starttls=False, **options)


@pytest.mark.parametrize("case", DRIVEN)
@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_client_told_of_an_early_success_ends_the_session(
    adapter: str, protocol: str, case: str
) -> None:
    """The server's side is logged in where the client's is not: the client raises
    the error a SCRAM server that did not prove itself gets, closes the connection
    (nothing more goes to the server: no QUIT), and a later call raises the closed
    connection's error."""
    early = EARLY[case]
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    if protocol == "pop3":
        failed, closed = module.POP3ProtocolError, module.POP3ConnectionError
    else:
        failed, closed = module.AuthenticationError, module.SMTPConnectionError
    steps = [*script(_transcript(protocol, early)), ExpectClose()]
    messages: list[str] = []

    def later_call(client: Any) -> Any:
        return client.stat() if protocol == "pop3" else client.noop()

    with ScriptedServer(steps) as server:
        if adapter == "sync":
            with _client(protocol, adapter, server.port) as client:
                with pytest.raises(failed) as info:
                    client.authenticate(early.make())
                messages.append(str(info.value))
                with pytest.raises(closed):
                    later_call(client)
        else:

            async def session() -> None:
                async with _client(protocol, adapter, server.port) as client:
                    with pytest.raises(failed) as info:
                        await client.authenticate(early.make())
                    messages.append(str(info.value))
                    with pytest.raises(closed):
                        await later_call(client)

            run(adapter, session)
    server.check()
    [message] = messages
    assert message.startswith(f"AUTH {early.make().name}: ")
    assert f"before the client sent {early.owed}" in message
