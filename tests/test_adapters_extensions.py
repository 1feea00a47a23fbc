"""Issue 16's extensions end to end through both adapters, client and server.

What the machine-level round trips (tests/test_smtp_extension_pairs.py) prove
for the machines, here over loopback sockets with the asyncio and the trio
adapters: BDAT content streamed from every kind of source with no more than
a chunk or two read ahead of what the server has received; BINARYMIME octets
byte-identical; typed DSN values; REQUIRETLS refused before TLS and accepted
over it; HELP listing STARTTLS and AUTH while they are in force; the EXPN hook
answering the client adapter.
"""

from __future__ import annotations

import io
import smtplib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from peers import (
    TLSFiles,
    module,
    raw_smtp_session,
    run,
    running_smtp_server,
)
from smtpcore import NEED_DATA, PAUSED
from smtpcore.handler import Authenticator, Session
from smtpcore.smtp import (
    Body,
    EnvelopeId,
    Expn,
    Extension,
    Help,
    MessageData,
    Notify,
    OriginalRecipient,
    Parameter,
    Reply,
    Ret,
    ServerConnection,
)
from smtpcore.testing import CollectingHandler

CHUNK = 4096
PIECE = 1000
PIECES = 150
TEXT = b"".join(
    b"line %05d of a message streamed in BDAT chunks..........\r\n" % n for n in range(2600)
)
assert len(TEXT) > PIECES * PIECE


class Sink(CollectingHandler):
    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[Session] = []

    async def handle_connect(self, session: Session) -> Reply | None:
        self.sessions.append(session)
        return None

    async def handle_expn(self, session: Session, argument: str) -> Reply | None:
        if argument.lower() == "staff":
            return Reply(250, ["Alice <alice@pqr.example>", "Bob <bob@pqr.example>"])
        return None  # the default: 502 5.5.1


class Counting(ServerConnection):
    """A server machine that counts the content octets it has read."""

    received: list[int]

    def next_event(self) -> Any:
        event = super().next_event()
        if event is not NEED_DATA and event is not PAUSED and isinstance(event, MessageData):
            self.received[0] += len(event.data)
        return event


def counting_factory(received: list[int], **options: Any) -> Any:
    def factory(server_options: Any) -> ServerConnection:
        conn: Counting = server_options.build_connection(Counting, **options)
        conn.received = received
        return conn

    return factory


def send(adapter: str, port: int, content: Any, **options: Any) -> Any:
    mail_params = options.pop("mail_params", None)
    rcpt_params = options.pop("rcpt_params", None)

    async def go() -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port, **options) as client:
            return await client.send_message(
                content,
                "a@abc.example",
                ["b@pqr.example"],
                mail_params=mail_params,
                rcpt_params=rcpt_params,
            )

    return run(adapter, go)


# -- CHUNKING: streaming with bounded memory -----------------------------------------


class Lookahead:
    """Watches how far a source is read ahead of what the server has received: the
    client holds at most the chunk it sends and the one it has read next (each BDAT
    is answered before the next chunk is read), whatever the message's size."""

    def __init__(self, received: list[int]) -> None:
        self.received = received
        self.produced = 0
        self.worst = 0

    def take(self, size: int) -> bytes:
        piece = TEXT[self.produced : self.produced + size]
        self.produced += len(piece)
        self.worst = max(self.worst, self.produced - self.received[0])
        return piece

    def pieces(self) -> Iterator[bytes]:
        while piece := self.take(PIECE):
            yield piece

    async def async_pieces(self) -> AsyncIterator[bytes]:
        for piece in self.pieces():
            yield piece


class WatchedFile(io.FileIO):
    """A real file (its size is known: SIZE is declared) whose reads are watched."""

    lookahead: Lookahead

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.lookahead.produced += len(data)
        watched = self.lookahead
        watched.worst = max(watched.worst, watched.produced - watched.received[0])
        return data


@pytest.mark.parametrize("source", ["bytes", "file", "iterator", "async iterator"])
def test_bdat_streams_every_source_with_bounded_memory(
    adapter: str, source: str, tmp_path: Path
) -> None:
    received = [0]
    handler = Sink()
    factory = counting_factory(received)
    lookahead = Lookahead(received)
    with running_smtp_server(adapter, handler, connection_factory=factory) as server:
        if source == "bytes":
            content: Any = TEXT
        elif source == "file":
            path = tmp_path / "message.eml"
            path.write_bytes(TEXT)
            content = WatchedFile(path, "r")
            content.lookahead = lookahead
        elif source == "iterator":
            content = lookahead.pieces()
        else:
            content = lookahead.async_pieces()
        result = send(adapter, server.port, content, chunk_size=CHUNK)
        if isinstance(content, io.FileIO):
            content.close()
    assert len(result.delivered) == 1
    [envelope] = handler.messages
    assert envelope.content == TEXT
    assert received[0] == len(TEXT)
    if source != "bytes":
        assert lookahead.produced == len(TEXT)
        # The chunk being sent and the next one read, each at most CHUNK (a piece
        # of an iterator is cut to CHUNK): never the message.
        assert lookahead.worst <= 2 * CHUNK + PIECE, lookahead.worst
    assert ("SIZE" in envelope.mail_params) == (source in ("bytes", "file"))


def test_binarymime_from_an_async_iterator_arrives_byte_identical(adapter: str) -> None:
    octets = bytes(range(256)) * 30 + b"\r\n.\r\n\x00\r\r\n\n." + b"\xff" * 3000

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(octets), 777):
            yield octets[start : start + 777]

    handler = Sink()
    with running_smtp_server(adapter, handler, binarymime=True) as server:
        send(
            adapter,
            server.port,
            pieces(),
            chunk_size=500,
            mail_params={"BODY": Body.BINARYMIME},
        )
    [envelope] = handler.messages
    assert envelope.content == octets
    assert envelope.mail_params["BODY"] == "BINARYMIME"


# -- DSN: typed values end to end --------------------------------------------------------


def test_typed_dsn_values_reach_the_handler(adapter: str) -> None:
    orcpt = OriginalRecipient.of("jörg+tag@pqr.example")
    notify = Notify.FAILURE | Notify.DELAY
    handler = Sink()
    with running_smtp_server(adapter, handler, dsn=True) as server:
        send(
            adapter,
            server.port,
            b"Subject: dsn\r\n\r\nbody\r\n",
            mail_params={"RET": Ret.HDRS, "ENVID": EnvelopeId("QQ 314159 = ü")},
            rcpt_params={"NOTIFY": notify, "ORCPT": orcpt},
        )
    [envelope] = handler.messages
    assert Ret.parse(envelope.mail_params["RET"] or "") is Ret.HDRS
    assert EnvelopeId.parse(envelope.mail_params["ENVID"] or "") == EnvelopeId("QQ 314159 = ü")
    [recipient] = envelope.recipients
    assert Notify.parse(recipient.params["NOTIFY"] or "") == notify
    assert OriginalRecipient.parse(recipient.params["ORCPT"] or "") == orcpt


def test_a_raw_utf8_orcpt_goes_in_an_smtputf8_transaction(adapter: str) -> None:
    """RFC 6533 §3: the utf-8-addr-unitext form only with SMTPUTF8, which the client
    adds to MAIL where the server offers it, as for a UTF-8 address."""
    handler = Sink()
    with running_smtp_server(adapter, handler, dsn=True) as server:
        send(
            adapter,
            server.port,
            b"Subject: dsn\r\n\r\nbody\r\n",
            rcpt_params={"ORCPT": "utf-8;jörg@pqr.example"},
        )
    [envelope] = handler.messages
    assert "SMTPUTF8" in envelope.mail_params
    [recipient] = envelope.recipients
    assert recipient.params["ORCPT"] == "utf-8;jörg@pqr.example"


# -- REQUIRETLS: offered over TLS only -------------------------------------------------


def test_requiretls_is_refused_before_tls_and_accepted_over_it(
    adapter: str, tls: TLSFiles
) -> None:
    errors = module(adapter)
    handler = Sink()
    message = b"Subject: tls only\r\n\r\nbody\r\n"
    with running_smtp_server(
        adapter, handler, ssl_context=tls.server_context, requiretls=True
    ) as server:
        # The client will not send what the server did not offer (RFC 5321 §2.2.2).
        with pytest.raises(errors.ExtensionNotOffered, match="REQUIRETLS"):
            send(adapter, server.port, message, starttls=False, mail_params={"REQUIRETLS": True})
        # Nor does the server read it before TLS, whatever a client sends.
        with raw_smtp_session(server.host, server.port) as s:
            s.recv_reply()
            ehlo = s.command(b"EHLO client.test")
            assert b"REQUIRETLS" not in ehlo and b"STARTTLS" in ehlo
            assert s.command(b"MAIL FROM:<a@abc.example> REQUIRETLS").startswith(b"555 5.5.4")
        # After STARTTLS it is offered, and crosses.
        send(
            adapter,
            server.port,
            message,
            ssl_context=tls.client_context,
            starttls=True,
            mail_params={"REQUIRETLS": True},
        )
    [envelope] = handler.messages
    assert "REQUIRETLS" in envelope.mail_params
    assert handler.sessions[-1].tls is not None


def test_requiretls_over_implicit_tls(adapter: str, tls: TLSFiles) -> None:
    handler = Sink()
    with running_smtp_server(
        adapter, handler, ssl_context=tls.server_context, tls_on_connect=True, requiretls=True
    ) as server:

        async def go() -> Any:
            client = module(adapter).SMTPClient(
                "127.0.0.1", server.port, ssl_context=tls.client_context, tls_on_connect=True
            )
            async with client:
                assert "REQUIRETLS" in client.connection.extensions
                return await client.send_message(
                    b"Subject: t\r\n\r\nb\r\n",
                    "a@abc.example",
                    ["b@pqr.example"],
                    mail_params={"REQUIRETLS": True},
                )

        run(adapter, go)
    [envelope] = handler.messages
    assert "REQUIRETLS" in envelope.mail_params


# -- HELP and EXPN -----------------------------------------------------------------------


def test_help_lists_starttls_and_auth_while_in_force(adapter: str, tls: TLSFiles) -> None:
    """Before TLS: STARTTLS, and not AUTH (PLAIN and LOGIN need TLS); after it: AUTH,
    and not STARTTLS; after HELO: neither, nor BDAT (RFC 5321 §4.1.1.8)."""
    auth = Authenticator(check_password=lambda user, password: user == "u" and password == "p")
    with (
        running_smtp_server(adapter, Sink(), ssl_context=tls.server_context, auth=auth) as server,
        smtplib.SMTP(server.host, server.port, local_hostname="client.test") as client,
    ):
        client.helo()
        helo_help = client.help().split()
        assert b"MAIL" in helo_help and not {b"BDAT", b"STARTTLS", b"AUTH"} & set(helo_help)
        client.ehlo()
        plain = set(client.help().split())
        assert {b"BDAT", b"STARTTLS"} <= plain and b"AUTH" not in plain
        client.starttls(context=tls.client_context)
        client.ehlo()
        secure = set(client.help().split())
        assert {b"BDAT", b"AUTH"} <= secure and b"STARTTLS" not in secure


def test_the_client_adapter_reads_the_expn_hook(adapter: str) -> None:
    async def go(port: int) -> list[Reply]:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            return [
                await client.command(Expn("staff")),
                await client.command(Expn("nobody")),
                await client.command(Help("")),
            ]

    with running_smtp_server(adapter, Sink()) as server:
        staff, nobody, help_reply = run(adapter, lambda: go(server.port))
    assert staff.code == 250
    assert staff.lines == ("Alice <alice@pqr.example>", "Bob <bob@pqr.example>")
    assert (nobody.code, str(nobody.status)) == (502, "5.5.1")
    assert help_reply.code == 214 and "EXPN" in " ".join(help_reply.lines)


def test_smtplib_reads_the_expn_hook_and_help(adapter: str) -> None:
    """The standard library's client as the peer of the server adapters."""
    with (
        running_smtp_server(adapter, Sink()) as server,
        smtplib.SMTP(server.host, server.port, local_hostname="client.test") as client,
    ):
        client.ehlo()
        assert client.expn("staff") == (
            250,
            b"2.0.0 Alice <alice@pqr.example>\n2.0.0 Bob <bob@pqr.example>",
        )
        assert client.expn("nobody")[0] == 502
        assert b"EXPN" in client.help().split()


def _crash(facts: Any, value: Any) -> Reply | None:
    raise ZeroDivisionError("a bug in the application's check")


def test_an_entry_of_the_applications_own_never_costs_the_client_its_reply(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``int`` as a parser refuses what it cannot read with 501; a check that raises
    is the application's bug, logged and answered 451, and the session goes on."""
    priority = Parameter("X-PRIO", int, str)  # type: ignore[arg-type]  # int as users write it
    entries = [
        Extension("X-PRIO", "", "priorities", mail_parameters=(priority,)),
        Extension("X-HOLD", "", "holds", mail_parameters=(Parameter("X-HOLD", str, str, _crash),)),
    ]

    def factory(options: Any) -> ServerConnection:
        return ServerConnection(options.hostname, extra_extensions=entries)

    with (
        running_smtp_server(adapter, Sink(), connection_factory=factory) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        assert b"250 X-HOLD" in s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@abc.example> X-PRIO=abc").startswith(b"501 5.5.4")
        assert s.command(b"MAIL FROM:<a@abc.example> X-PRIO").startswith(b"501 5.5.4")
        assert s.command(b"MAIL FROM:<a@abc.example> X-HOLD=1").startswith(b"451 4.3.0")
        assert s.command(b"MAIL FROM:<a@abc.example> X-PRIO=3").startswith(b"250")
        assert s.command(b"QUIT").startswith(b"221")
    assert "a bug in the application's check" in caplog.text


def test_an_entry_whose_arguments_fail_costs_the_ehlo_alone(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    def arguments(facts: Any) -> str:
        raise AttributeError("a bug in the application's arguments")

    def factory(options: Any) -> ServerConnection:
        entry = Extension("X-FOO", "", "listed", arguments=arguments)
        return ServerConnection(options.hostname, extra_extensions=[entry])

    with (
        running_smtp_server(adapter, Sink(), connection_factory=factory) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        assert s.command(b"EHLO client.test").startswith(b"451 ")
        assert s.command(b"HELO client.test").startswith(b"250 ")
        assert s.command(b"QUIT").startswith(b"221")
    assert "a bug in the application's arguments" in caplog.text
