"""XCLIENT and XFORWARD through both adapters: a trusted client names the client it
speaks for, and the handler sees that client as the session's; XFORWARD reaches the
next envelope; untrusted clients find no such commands."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from peers import TLSFiles, module, raw_smtp_session, run, running_smtp_server
from smtpcore.handler import AuthIdentity, Envelope, Handler, MessageReply, Session
from smtpcore.smtp import UNAVAILABLE, Rcpt, Reply, State, Xclient, Xforward

MESSAGE = b"Subject: forwarded\r\n\r\nthrough a filter\r\n"


@dataclass
class Seen:
    peer: tuple[str, int] | None
    peer_name: str | None
    helo_name: str | None
    authenticated: AuthIdentity | None
    local: tuple[str, int] | None


def _seen(session: Session) -> Seen:
    return Seen(
        session.peer,
        session.peer_name,
        session.helo_name,
        session.authenticated,
        session.local,
    )


class Recorder(Handler):
    def __init__(self, *, refuse: str | None = None) -> None:
        self.connects: list[Seen] = []
        self.mails: list[Seen] = []
        self.envelopes: list[Envelope] = []
        self.refuse = refuse

    async def handle_connect(self, session: Session) -> Reply | None:
        self.connects.append(_seen(session))
        if self.refuse is not None and session.peer and session.peer[0] == self.refuse:
            return Reply(554, "not from there", "5.7.1")
        return None

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        self.mails.append(_seen(session))
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.envelopes.append(envelope)
        return None


def test_the_handler_sees_the_forwarded_client(adapter: str) -> None:
    handler = Recorder()

    async def go() -> Any:
        async with module(adapter).SMTPClient(
            "127.0.0.1", server.port, hostname="filter.test"
        ) as client:
            greeting = await client.xclient(
                Xclient(
                    name="mail.abc.example",
                    addr="IPV6:2001:db8::7",
                    port=40312,
                    helo="mail.abc.example",
                    login="john",
                    destaddr="198.51.100.25",
                    destport=25,
                )
            )
            assert greeting.code == 220
            assert client.connection.extensions.xforward  # EHLO again, extensions back
            first = await client.send_message(
                MESSAGE,
                "a@abc.example",
                ["b@pqr.example"],
                xforward=Xforward(ident="Q1", source="remote", addr=UNAVAILABLE),
            )
            second = await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
            return first, second

    # The named client is trusted in turn: XFORWARD is offered to it still.
    trusting = ["127.0.0.0/8", "2001:db8::/32"]
    with running_smtp_server(adapter, handler, xclient_from=trusting) as server:
        first, second = run(adapter, go)
    assert first.delivered and second.delivered
    [before, after] = handler.connects
    assert before.peer is not None and before.peer[0] == "127.0.0.1"
    forwarded = Seen(
        ("2001:db8::7", 40312),
        "mail.abc.example",
        "mail.abc.example",  # XCLIENT's HELO, which the client's EHLO then repeats
        AuthIdentity("john", "john", "XCLIENT"),
        ("198.51.100.25", 25),
    )
    assert after == forwarded
    assert handler.mails == [forwarded, forwarded]
    assert [envelope.xforward for envelope in handler.envelopes] == [
        Xforward(ident="Q1", source="REMOTE", addr=UNAVAILABLE),
        None,  # XFORWARD holds for one transaction
    ]


def test_an_untrusted_client_finds_no_such_command(adapter: str) -> None:
    handler = Recorder()
    errors = module(adapter)

    async def go() -> None:
        async with errors.SMTPClient("127.0.0.1", server.port) as client:
            assert "XCLIENT" not in client.connection.extensions
            with pytest.raises(errors.ExtensionNotOffered) as refused:
                await client.xclient(Xclient(addr="192.0.2.7"))
            assert refused.value.command == "XCLIENT"
            with pytest.raises(errors.ExtensionNotOffered):
                await client.send_message(
                    MESSAGE, "a@abc.example", ["b@pqr.example"], xforward=Xforward(ident="Q")
                )
            await client.noop()  # the session goes on

    with running_smtp_server(adapter, handler, xclient_from=["10.0.0.0/8"]) as server:
        run(adapter, go)
        with raw_smtp_session(server.host, server.port) as raw:
            raw.recv_reply()
            raw.command(b"EHLO raw.test")
            assert raw.command(b"XCLIENT ADDR=192.0.2.7").startswith(b"500 5.5.2")
    assert len(handler.connects) == 2


def test_a_greeting_refused_for_the_named_client_serves_it_nothing(adapter: str) -> None:
    """XCLIENT_README: the answer is the named client's greeting; a 554 keeps that
    client and serves it nothing but QUIT (RFC 5321 §3.1), as a 554 greeting does."""
    handler = Recorder(refuse="192.0.2.66")
    errors = module(adapter)

    async def go() -> None:
        async with errors.SMTPClient("127.0.0.1", server.port) as client:
            with pytest.raises(errors.SMTPReplyError) as refused:
                await client.xclient(Xclient(addr="192.0.2.66"))
            assert refused.value.code == 554
            assert client.connection.state is State.NO_SERVICE

    with running_smtp_server(adapter, handler, xclient_from=["127.0.0.1"]) as server:
        run(adapter, go)
        with raw_smtp_session(server.host, server.port) as raw:
            raw.recv_reply()
            raw.command(b"EHLO filter.test")
            assert raw.command(b"XCLIENT ADDR=192.0.2.66 PORT=5555").startswith(b"554 5.7.1")
            for line in (b"EHLO client.test", b"MAIL FROM:<a@abc.example>", b"RCPT TO:<b@x.test>"):
                assert raw.command(line).startswith(b"503 "), line
            assert raw.command(b"QUIT").startswith(b"221 ")
    assert handler.mails == []
    assert [seen.peer for seen in handler.connects][-1] == ("192.0.2.66", 5555)


def test_the_named_client_may_not_name_another(adapter: str) -> None:
    """XCLIENT_README, note 1: once XCLIENT names a client outside ``xclient_from``, the
    session may not send XCLIENT (or XFORWARD) again: behind a transparent proxy the
    real client would otherwise claim any address and login."""
    handler = Recorder()
    with (
        running_smtp_server(
            adapter, handler, xclient_from=["127.0.0.1", "192.0.2.0/24"]
        ) as server,
        raw_smtp_session(server.host, server.port) as raw,
    ):
        raw.recv_reply()
        raw.command(b"EHLO proxy.test")
        # Named inside xclient_from: still trusted.
        assert raw.command(b"XCLIENT ADDR=192.0.2.5").startswith(b"220 ")
        assert b"XCLIENT" in raw.command(b"EHLO proxy.test")
        assert raw.command(b"XCLIENT ADDR=203.0.113.5 PORT=40000").startswith(b"220 ")
        assert b"XCLIENT" not in raw.command(b"EHLO evil.test")
        for line in (b"XCLIENT ADDR=10.0.0.1 LOGIN=admin", b"XFORWARD ADDR=10.0.0.1"):
            assert raw.command(line).startswith(b"500 5.5.2"), line
        raw.command(b"MAIL FROM:<x@evil.test>")
        raw.command(b"RCPT TO:<y@pqr.example>")
    assert [(seen.peer, seen.authenticated) for seen in handler.mails] == [
        (("203.0.113.5", 40000), None)
    ]


def test_xclient_may_come_before_ehlo_and_back_to_back(adapter: str) -> None:
    """XCLIENT_README: at any time outside a transaction; note 1 has a proxy split
    long attributes over several commands (Dovecot sends them back to back)."""
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler, xclient_from=["127.0.0.1"]) as server,
        raw_smtp_session(server.host, server.port) as raw,
    ):
        raw.recv_reply()
        assert raw.command(b"XCLIENT HELO=client.test PROTO=ESMTP").startswith(b"220 ")
        assert raw.command(b"XCLIENT NAME=client.test ADDR=192.0.2.7").startswith(b"220 ")
        raw.command(b"EHLO client.test")
        raw.command(b"MAIL FROM:<a@abc.example>")
        assert raw.command(b"RCPT TO:<b@pqr.example>").startswith(b"250 ")
    assert handler.mails[0].peer == ("192.0.2.7", 0)
    assert handler.mails[0].peer_name == "client.test"


def test_the_log_names_the_client_the_proxy_header_named(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="smtpcore")
    with (
        running_smtp_server(
            adapter,
            Recorder(),
            proxy_protocol_from=["127.0.0.1"],
            xclient_from=["192.0.2.0/24"],
        ) as server,
        raw_smtp_session(server.host, server.port) as raw,
    ):
        raw.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n")
        raw.recv_reply()
        assert raw.command(b"XCLIENT ADDR=192.0.2.8").startswith(b"220 ")
        raw.command(b"QUIT")
    [line] = [
        record.getMessage() for record in caplog.records if "XCLIENT from" in record.getMessage()
    ]
    assert line.startswith("XCLIENT from [192.0.2.7]:40000: now "), line


def test_the_session_is_counted_under_the_forwarded_address(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore")
    handler = Recorder()
    with (
        running_smtp_server(
            adapter, handler, xclient_from=["127.0.0.1"], max_sessions_per_address=1
        ) as server,
        raw_smtp_session(server.host, server.port) as first,
    ):
        first.recv_reply()
        first.command(b"EHLO filter.test")
        assert first.command(b"XCLIENT ADDR=192.0.2.7").startswith(b"220 ")
        server.wait_for_sessions(1)
        # 127.0.0.1 has its slot free again: a second session gets in, but may not
        # become a second 192.0.2.7.
        with raw_smtp_session(server.host, server.port) as second:
            assert second.recv_reply().startswith(b"220 ")
            second.command(b"EHLO filter.test")
            reply = second.command(b"XCLIENT ADDR=192.0.2.7")
            assert reply.startswith(b"421 4.7.0"), reply
        assert [r.getMessage() for r in caplog.records if "too many" in r.getMessage()] == [
            "too many sessions from [192.0.2.7]: refused (max-sessions-per-address 1)"
        ]
        assert first.command(b"EHLO filter.test").startswith(b"250")


def test_a_forwarder_is_not_capped_at_one_client_share(adapter: str) -> None:
    """An XFORWARD content filter or XCLIENT proxy in xclient_from speaks for many
    clients: its own address is never counted for max_sessions_per_address (as
    Postfix exempts its XCLIENT hosts); a client XCLIENT names is. An XCLIENT that
    names no ADDR leaves the session counted under none: its client is still the
    forwarder's own."""
    with (
        running_smtp_server(
            adapter, Recorder(), xclient_from=["127.0.0.1"], max_sessions_per_address=1
        ) as server,
        raw_smtp_session(server.host, server.port) as first,
        raw_smtp_session(server.host, server.port) as second,
        raw_smtp_session(server.host, server.port) as third,
        ExitStack() as stack,
    ):
        no_addr = [b"NAME=c.example", b"HELO=h.example", b"LOGIN=bob", b"PORT=4000"]
        others = [stack.enter_context(raw_smtp_session(server.host, server.port)) for _ in no_addr]
        for session in (first, second, third, *others):
            assert session.recv_reply().startswith(b"220 ")
            assert session.command(b"EHLO filter.test").startswith(b"250")
        assert first.command(b"XCLIENT ADDR=192.0.2.7").startswith(b"220 ")
        reply = second.command(b"XCLIENT ADDR=192.0.2.7")
        assert reply.startswith(b"421 4.7.0"), reply
        assert third.command(b"XCLIENT ADDR=192.0.2.8").startswith(b"220 ")
        for session, attribute in zip(others, no_addr, strict=True):
            reply = session.command(b"XCLIENT " + attribute)
            assert reply.startswith(b"220 "), (attribute, reply)
        assert server.server.state.per_address == {"192.0.2.7": 1, "192.0.2.8": 1}


def test_a_forwarder_xclient_names_is_not_capped_at_one_client_share(adapter: str) -> None:
    """A client XCLIENT names that is itself in xclient_from speaks for others in
    turn: it is counted under no address, as when a PROXY header names it."""
    with (
        running_smtp_server(
            adapter,
            Recorder(),
            xclient_from=["127.0.0.1", "192.0.2.50"],
            max_sessions_per_address=1,
        ) as server,
        raw_smtp_session(server.host, server.port) as first,
        raw_smtp_session(server.host, server.port) as second,
    ):
        for session in (first, second):
            assert session.recv_reply().startswith(b"220 ")
            assert session.command(b"EHLO filter.test").startswith(b"250")
            reply = session.command(b"XCLIENT ADDR=192.0.2.50")
            assert reply.startswith(b"220 "), reply
        assert server.server.state.per_address == {}


def test_a_login_starttls_forgot_does_not_come_back_with_a_later_xclient(
    adapter: str, tls: TLSFiles
) -> None:
    """RFC 3207 §4.2: STARTTLS discards the login and HELO XCLIENT gave (as Postfix's
    does); an XCLIENT after it that names neither must not bring them back."""
    seen: list[tuple[AuthIdentity | None, str | None, Xclient | None]] = []

    class Watcher(Recorder):
        async def handle_rcpt(
            self, session: Session, envelope: Envelope, command: Rcpt
        ) -> Reply | None:
            seen.append((session.authenticated, session.helo_name, session.xclient))
            return Reply(250, "OK")

    async def go() -> None:
        async with module(adapter).SMTPClient(
            "127.0.0.1",
            server.port,
            hostname="filter.test",
            ssl_context=tls.client_context,
            starttls=False,
        ) as client:
            await client.xclient(Xclient(addr="192.0.2.7", helo="h.example", login="bob"))
            await client.starttls()
            await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
            assert (await client.xclient(Xclient(name="c.example"))).code == 220
            await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])

    with running_smtp_server(
        adapter, Watcher(), xclient_from=["127.0.0.1", "192.0.2.7"], ssl_context=tls.server_context
    ) as server:
        run(adapter, go)
    [after_tls, after_xclient] = seen
    assert after_tls == (None, "filter.test", Xclient(addr="192.0.2.7"))
    assert after_xclient == (None, "filter.test", Xclient(name="c.example", addr="192.0.2.7"))


def test_the_blocking_client_speaks_for_another_too() -> None:
    from smtpcore.sync import SMTPClient

    handler = Recorder()
    with (
        running_smtp_server("asyncio", handler, xclient_from=["127.0.0.1", "192.0.2.7"]) as server,
        SMTPClient("127.0.0.1", server.port, timeout=10) as client,
    ):
        assert client.xclient(Xclient(addr="192.0.2.7", name="mail.abc.example")).code == 220
        # 192.0.2.7 is trusted in turn (xclient_from): XFORWARD is offered to it still.
        client.send_message(
            MESSAGE, "a@abc.example", ["b@pqr.example"], xforward=Xforward(ident="Q")
        )
    assert handler.mails[0].peer == ("192.0.2.7", 0)
    assert handler.mails[0].peer_name == "mail.abc.example"
    assert [envelope.xforward for envelope in handler.envelopes] == [Xforward(ident="Q")]
