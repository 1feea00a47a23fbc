"""The handler contract (issue 15 item 7): a hook's return value decides.

``None`` from a hook stands for what :class:`Handler`'s own hook returns, so
a handler that overrides every hook and answers ``None`` (or calls
``super()``) runs exactly the sessions a handler that overrides none does;
and the adapters hold no default of their own: change one of Handler's
hooks and every handler that does not say otherwise answers with it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import pickle
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from peers import raw_smtp_session, running_smtp_server
from smtpcore.address import parse_mailbox
from smtpcore.handler import (
    _APPENDS_CHUNKS,
    _BY_HOSTNAME,
    _FIXED_ANSWERS,
    Authenticator,
    AuthIdentity,
    Envelope,
    Handler,
    MessageReply,
    Session,
)
from smtpcore.maildrop import POP3Session
from smtpcore.smtp import Ehlo, Helo, Lhlo, Mail, Rcpt, Reply

CONTENT = b"Subject: contract\r\n\r\n..a stuffed line\r\nlast\r\n"
PLAIN = base64.b64encode(b"\0john\0john-pw")

#: A session touching every hook: AUTH, VRFY, DATA, BDAT, a refused
#: recipient, RSET, NOOP. Each item is sent whole, and gets one reply.
SCRIPT: list[bytes] = [
    b"EHLO client.test\r\n",
    b"AUTH PLAIN " + PLAIN + b"\r\n",
    b"VRFY john\r\n",
    b"EXPN staff\r\n",
    b"MAIL FROM:<john@abc.example>\r\n",
    b"RCPT TO:<brendon@pqr.example>\r\n",
    b"RCPT TO:<x@elsewhere.example>\r\n",
    b"DATA\r\n",
    CONTENT + b".\r\n",
    b"MAIL FROM:<john@abc.example>\r\n",
    b"RCPT TO:<brendon@pqr.example>\r\n",
    b"BDAT 10\r\nSubject: c",
    b"BDAT 10 LAST\r\nhunked\r\n\r\n",
    b"MAIL FROM:<john@abc.example>\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
]


class Taking(Handler):
    """Takes mail for pqr.example and keeps each envelope it saw; nothing else."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        if envelope not in self.envelopes:
            self.envelopes.append(envelope)
        if command.recipient.domain == "pqr.example":
            return Reply(250, "OK")
        return None


class AnswersNone(Taking):
    """Overrides every other hook, answering None: the same sessions as Taking."""

    async def handle_connect(self, session: Session) -> Reply | None:
        return None

    async def handle_hello(self, session: Session, command: Ehlo | Helo | Lhlo) -> Reply | None:
        return None

    async def handle_auth(self, session: Session, identity: AuthIdentity) -> Reply | None:
        return None

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        return None

    async def handle_data(self, session: Session, envelope: Envelope) -> Reply | None:
        return None

    async def handle_data_chunk(self, session: Session, envelope: Envelope, data: bytes) -> None:
        await super().handle_data_chunk(session, envelope, data)

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        return None

    async def handle_reset(self, session: Session, envelope: Envelope) -> None:
        return None

    async def handle_vrfy(self, session: Session, argument: str) -> Reply | None:
        return None

    async def handle_expn(self, session: Session, argument: str) -> Reply | None:
        return None

    async def handle_close(self, session: Session) -> None:
        return None


class CallsSuper(Taking):
    """Overrides every other hook with a call to Handler's: the same sessions again."""

    async def handle_connect(self, session: Session) -> Reply | None:
        return await super().handle_connect(session)

    async def handle_hello(self, session: Session, command: Ehlo | Helo | Lhlo) -> Reply | None:
        return await super().handle_hello(session, command)

    async def handle_auth(self, session: Session, identity: AuthIdentity) -> Reply | None:
        return await super().handle_auth(session, identity)

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        return await super().handle_mail(session, command)

    async def handle_data(self, session: Session, envelope: Envelope) -> Reply | None:
        return await super().handle_data(session, envelope)

    async def handle_data_chunk(self, session: Session, envelope: Envelope, data: bytes) -> None:
        await super().handle_data_chunk(session, envelope, data)

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        return await super().handle_message(session, envelope)

    async def handle_reset(self, session: Session, envelope: Envelope) -> None:
        await super().handle_reset(session, envelope)

    async def handle_vrfy(self, session: Session, argument: str) -> Reply | None:
        return await super().handle_vrfy(session, argument)

    async def handle_expn(self, session: Session, argument: str) -> Reply | None:
        return await super().handle_expn(session, argument)

    async def handle_close(self, session: Session) -> None:
        await super().handle_close(session)


AUTH = Authenticator(check_password=lambda user, password: (user, password) == ("john", "john-pw"))


def transcript(adapter: str, handler: Handler, script: list[bytes] = SCRIPT) -> list[bytes]:
    """The greeting and the reply to each item of ``script``."""
    with (
        running_smtp_server(adapter, handler, auth=AUTH, auth_require_tls=False) as server,
        raw_smtp_session(server.host, server.port) as client,
    ):
        replies = [client.recv_reply()]
        for item in script:
            client.send(item)
            replies.append(client.recv_reply())
    return replies


@pytest.fixture(scope="module")
def expected() -> list[bytes]:
    """What a handler that overrides only RCPT gets (checked below)."""
    return transcript("asyncio", Taking())


def test_a_handler_overriding_nothing_but_rcpt(expected: list[bytes]) -> None:
    codes = [reply[:3] for reply in expected]
    assert codes == [
        b"220", b"250", b"235", b"252", b"502", b"250", b"250", b"550", b"354", b"250",
        b"250", b"250", b"250", b"250", b"250", b"250", b"250", b"221",
    ]  # fmt: skip
    assert expected[0] == b"220 mx.test ESMTP smtpcore\r\n"
    assert expected[-1].startswith(b"221")


@pytest.mark.parametrize("kind", [Taking, AnswersNone, CallsSuper])
def test_none_and_super_answer_as_handler_does(
    adapter: str, kind: type[Taking], expected: list[bytes]
) -> None:
    handler = kind()
    assert transcript(adapter, handler) == expected
    first, second = handler.envelopes
    assert first.content == CONTENT.replace(b"\r\n..", b"\r\n.")
    assert second.content == b"Subject: chunked\r\n\r\n"


def test_rcpt_answering_none_refuses_as_handler_does(adapter: str) -> None:
    class Silent(Handler):
        async def handle_rcpt(
            self, session: Session, envelope: Envelope, command: Rcpt
        ) -> Reply | None:
            return None

    script = [b"EHLO client.test\r\n", b"MAIL FROM:<>\r\n", b"RCPT TO:<a@pqr.example>\r\n"]
    assert transcript(adapter, Silent(), script) == transcript(adapter, Handler(), script)
    assert transcript(adapter, Handler(), script)[-1].startswith(b"550 5.1.1")


def test_the_defaults_live_in_handler_alone(adapter: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Change Handler's own answers: handlers that do not say otherwise follow."""

    async def refuse_data(self: Handler, session: Session, envelope: Envelope) -> Reply | None:
        return Reply(554, "No content today", "5.3.0")

    async def deny_vrfy(self: Handler, session: Session, argument: str) -> Reply | None:
        return Reply(550, "No such user", "5.1.1")

    async def greet(self: Handler, session: Session) -> Reply | None:
        return Reply(220, "changed greeting")

    monkeypatch.setattr(Handler, "handle_data", refuse_data)
    monkeypatch.setattr(Handler, "handle_vrfy", deny_vrfy)
    monkeypatch.setattr(Handler, "handle_connect", greet)
    for handler in (Taking(), AnswersNone()):
        replies = transcript(adapter, handler, SCRIPT[:9])
        assert replies[0] == b"220 changed greeting\r\n"
        assert replies[3].startswith(b"550 5.1.1 No such user")
        assert replies[8].startswith(b"554 5.3.0 No content today")


def test_handler_answers_what_its_docstrings_say() -> None:
    session = Session(hostname="mx.pqr.example")
    envelope = Envelope(sender=None)
    mailbox = parse_mailbox("brendon@pqr.example")
    handler = Handler()

    async def answers() -> list[object]:
        return [
            await handler.handle_connect(session),
            await handler.handle_hello(session, Ehlo("client.test")),
            await handler.handle_auth(session, AuthIdentity("john", "john", "PLAIN")),
            await handler.handle_mail(session, Mail(None)),
            await handler.handle_rcpt(session, envelope, Rcpt(mailbox)),
            await handler.handle_data(session, envelope),
            await handler.handle_message(session, envelope),
            await handler.handle_vrfy(session, "john"),
            await handler.handle_expn(session, "staff"),
        ]

    replies = asyncio.run(answers())
    assert all(isinstance(reply, Reply) for reply in replies)
    assert [reply.code for reply in replies if isinstance(reply, Reply)] == [
        220, 250, 235, 250, 550, 354, 250, 252, 502,
    ]  # fmt: skip
    assert replies[0] == Reply(220, "mx.pqr.example ESMTP smtpcore")
    assert replies[1] == Reply(250, "mx.pqr.example")


def test_every_hook_is_in_the_contract_tests() -> None:
    """A new hook joins AnswersNone and CallsSuper, so the rule is checked for it too."""
    hooks = {name for name in vars(Handler) if name.startswith("handle_")}
    assert hooks - {"handle_rcpt"} == {n for n in vars(AnswersNone) if n.startswith("handle_")}
    assert hooks - {"handle_rcpt"} == {n for n in vars(CallsSuper) if n.startswith("handle_")}


def test_the_answers_the_server_gives_for_handler_are_its_hooks_own() -> None:
    """For a hook whose answer is one reply whatever it is asked, the server answers
    with that reply (``_FIXED_ANSWERS``) rather than call Handler's hook: each is what
    the hook itself answers, so Handler's hooks stay the one place defaults live."""
    handler = Handler()
    session = Session("mx.test")
    envelope = Envelope(parse_mailbox("a@b.example"))
    rcpt = Rcpt(parse_mailbox("c@d.example"))
    calls: dict[Callable[..., object], Callable[[], Coroutine[Any, Any, object]]] = {
        Handler.handle_auth: lambda: handler.handle_auth(session, AuthIdentity("a", "a", "X")),
        Handler.handle_mail: lambda: handler.handle_mail(session, Mail(envelope.sender)),
        Handler.handle_rcpt: lambda: handler.handle_rcpt(session, envelope, rcpt),
        Handler.handle_data: lambda: handler.handle_data(session, envelope),
        Handler.handle_message: lambda: handler.handle_message(session, envelope),
        Handler.handle_vrfy: lambda: handler.handle_vrfy(session, "john"),
        Handler.handle_expn: lambda: handler.handle_expn(session, "staff"),
    }
    assert set(calls) == set(_FIXED_ANSWERS)
    for hook, call in calls.items():
        assert asyncio.run(call()) is _FIXED_ANSWERS[hook], hook


def test_the_greeting_and_hello_the_server_gives_for_handler_are_its_hooks_own() -> None:
    """The greeting and the EHLO reply depend on the server's name alone: the server
    makes them once for its name (``_BY_HOSTNAME``) rather than call Handler's hooks
    on every connection, and each is what the hook itself answers."""
    handler = Handler()
    assert set(_BY_HOSTNAME) == {Handler.handle_connect, Handler.handle_hello}
    for hostname in ("mx.test", "mail.pqr.example"):
        session = Session(hostname)
        answers: dict[Callable[..., object], Reply | None] = {
            Handler.handle_connect: asyncio.run(handler.handle_connect(session)),
            Handler.handle_hello: asyncio.run(handler.handle_hello(session, Ehlo("client.test"))),
        }
        for hook, answer in answers.items():
            assert answer == _BY_HOSTNAME[hook](hostname), hook


def test_a_hostname_the_handler_changed_is_in_the_hello_reply(adapter: str) -> None:
    """Handler's answers name the session's ``hostname``, also when a handler changed
    it on connect: the replies made once for the server's name are not used."""

    class Renaming(Handler):
        async def handle_connect(self, session: Session) -> Reply | None:
            session.hostname = "other.test"
            return None

    script = [b"EHLO client.test\r\n"]
    greeting, hello = transcript(adapter, Renaming(), script)
    assert greeting == b"220 other.test ESMTP smtpcore\r\n"
    assert hello.startswith(b"250-mx.test other.test\r\n")  # the machine names its host


def test_the_chunks_the_server_keeps_for_handler_are_its_hooks_own(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For a handler that keeps Handler's chunk hook, the server appends each chunk to
    the envelope itself (``_APPENDS_CHUNKS``), as the hook does; change the hook and
    the server calls it instead."""
    envelope = Envelope(parse_mailbox("a@b.example"))
    asyncio.run(Handler().handle_data_chunk(Session("mx.test"), envelope, b"one"))
    assert envelope.chunks == [b"one"]
    assert _APPENDS_CHUNKS is vars(Handler)["handle_data_chunk"]
    handler = Taking()
    transcript(adapter, handler, SCRIPT[:9])
    assert handler.envelopes[0].content == CONTENT.replace(b"\r\n..", b"\r\n.")

    async def shout(self: Handler, session: Session, envelope: Envelope, data: bytes) -> None:
        envelope.chunks.append(data.upper())

    monkeypatch.setattr(Handler, "handle_data_chunk", shout)
    handler = Taking()
    transcript(adapter, handler, SCRIPT[:9])
    assert handler.envelopes[0].content == CONTENT.replace(b"\r\n..", b"\r\n.").upper()


@pytest.mark.parametrize("make", [lambda: Session("mx.test"), lambda: POP3Session("pop.test")])
def test_a_sessions_extra_is_one_dictionary_made_when_first_asked_for(
    make: Callable[[], Session | POP3Session],
) -> None:
    """A session that never asks keeps no empty dictionary; one that does gets the
    same one every time, and may be given its own."""
    session = make()
    assert not hasattr(session, "_extra")  # nothing made yet
    session.extra["seen"] = 1
    assert session.extra == {"seen": 1} and session.extra is session.extra
    given: dict[str, Any] = {"mine": True}
    session.extra = given
    assert session.extra is given


@pytest.mark.parametrize("make", [lambda: Session("mx.test"), lambda: POP3Session("pop.test")])
def test_a_session_sets_no_proxy_stand_in_unless_it_has_one(
    make: Callable[[], Session | POP3Session],
) -> None:
    """``peer_stands_in_for`` is set only for the rare session behind a proxy that named
    its client by no address: every other connection's ``__init__`` spends nothing on
    it, and reads None. Set, it is kept as ``extra`` is: pickled, not in the repr, and
    not carried over by ``dataclasses.replace``."""
    session = make()
    assert "peer_stands_in_for" not in {field.name for field in dataclasses.fields(session)}
    assert not hasattr(session, "_peer_stands_in_for")  # nothing set by __init__
    assert session.peer_stands_in_for is None
    session.peer_stands_in_for = "unix:/run/mua.sock"
    session.extra["seen"] = 1
    assert session.peer_stands_in_for == "unix:/run/mua.sock"
    copied = pickle.loads(pickle.dumps(session))
    assert copied.peer_stands_in_for == "unix:/run/mua.sock" and copied.extra == {"seen": 1}
    assert "unix:" not in repr(session) and "seen" not in repr(session)
    replaced = dataclasses.replace(session)
    assert replaced.peer_stands_in_for is None and replaced.extra == {}
