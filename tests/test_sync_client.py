"""smtpcore.sync: the blocking clients, against our server, aiosmtpd, Postfix's
smtp-sink and the reference server, and their wire trace."""

from __future__ import annotations

import dataclasses
import math
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broken_servers import serve
from peers import (
    HeldAnswer,
    TLSFiles,
    free_port,
    make_tls_files,
    open_fd_count,
    running_pop3_server,
    running_smtp_server,
    smtp_sink,
    write_maildir,
)
from smtpcore import LocalProtocolError, sync
from smtpcore.maildrop import MaildirStore
from smtpcore.sasl import PlainClient
from smtpcore.smtp import Data, Expn, Help, Noop, Reply, Vrfy
from smtpcore.testing import Call, ExpectClose, ScriptedConnection, ScriptedServer, script
from test_adapters_auth import (
    PASSWORD,
    USER,
    AiosmtpdAccounts,
    Submission,
    authenticator,
    running_aiosmtpd,
)
from test_client_errors import (
    EHLO_FOR_NOW,
    EIGHT_BIT,
    GREET,
    GREET_BINARY_ONLY,
    LOGIN_REFUSED_THEN_QUIT,
    NO_STARTTLS_QUIT_UNANSWERED,
    PIPELINED,
    POP3_LOGGED_IN,
    POP3_STLS_REFUSED,
    QUIT,
    QUIT_UNANSWERED,
    RCPT_REFUSED,
    REFUSED_EHLO_THEN_CLOSE,
    REFUSED_THEN_PARTIAL,
    TLS_REFUSED_AT_CONNECT,
    Recorder,
    SeekableText,
    content_broken_off,
    refused_then_partial_steps,
    refusing_ehlo_in,
)
from test_client_errors import MESSAGE as ERRORS_MESSAGE
from test_pop3_adapters import REPEATED_UIDL, RETRIEVE_MANY_LEFT_EARLY, STRIPPED

MESSAGE = b"Subject: sync\r\n\r\n.leading dot\r\nbody\r\n"


def test_one_session_several_messages_and_the_low_level_commands() -> None:
    handler = Recorder()
    with (
        running_smtp_server("asyncio", handler) as server,
        sync.SMTPClient("127.0.0.1", server.port, hostname="client.test", timeout=10) as c,
    ):
        assert c.connection.extensions.pipelining
        first = c.send_message(MESSAGE, "a@abc.example", ["bob@pqr.example", "eve@pqr.example"])
        assert len(first.delivered) == 2
        assert c.noop().code == 250
        assert c.rset().code == 250
        assert c.ehlo().code == 250 and c.connection.extensions.size is not None
        help_reply = c.command(Help())
        assert help_reply.code in (211, 214)
        verify = c.command(Vrfy("bob"))
        assert verify.code in (250, 251, 252, 502)
        c.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
    assert [m.content for m in handler.messages] == [MESSAGE, MESSAGE]


def test_verify_raises_for_a_refusal_and_command_returns_it() -> None:
    vrfy = f"""{GREET}
C: VRFY nobody
S: 550 5.1.1 no such user
C: VRFY bob
S: 252 2.1.5 send some mail, I'll try
C: EXPN staff
S: 502 5.5.1 not here
C: NOOP
S: 250 2.0.0 ok
C: QUIT
S: 221 bye
"""
    with (
        ScriptedServer(script(vrfy)) as server,
        sync.SMTPClient("127.0.0.1", server.port, timeout=10) as client,
    ):
        with pytest.raises(sync.SMTPReplyError) as refused:
            client.verify("nobody")
        assert (refused.value.command, refused.value.code) == ("VRFY", 550)
        assert client.verify("bob").code == 252
        assert client.command(Expn("staff")) == Reply(502, "not here", "5.5.1")
        assert client.command(Noop()).code == 250


def test_starttls_and_login_against_our_server(tls: TLSFiles) -> None:
    handler = Submission()
    with running_smtp_server(
        "asyncio", handler, ssl_context=tls.server_context, auth=authenticator()
    ) as server:
        client = sync.SMTPClient(
            "127.0.0.1", server.port, starttls=False, ssl_context=tls.client_context, timeout=10
        )
        with client:
            assert not client.connection.tls
            client.starttls()
            assert client.connection.tls
            with pytest.raises(sync.AuthenticationError) as refused:
                client.login(USER, "wrong")
            assert refused.value.code == 535
            client.login(USER, PASSWORD)
            assert client.authenticated_with == "SCRAM-SHA-256"
            client.send_message(MESSAGE, USER, "bob@pqr.example")
    assert len(handler.messages) == 1


def test_a_misused_session_is_the_callers_mistake() -> None:
    with (
        running_smtp_server("asyncio", Recorder()) as server,
        sync.SMTPClient("127.0.0.1", server.port, timeout=10) as client,
    ):
        with pytest.raises(LocalProtocolError):
            client.command(Data())  # before MAIL: the machine refuses, nothing is sent
        with pytest.raises(LocalProtocolError):
            client.command(Vrfy("a\r\nRSET"))  # cannot even be built
        assert client.noop().code == 250  # the session goes on


@pytest.fixture
def aiosmtpd() -> Iterator[tuple[AiosmtpdAccounts, int]]:
    with running_aiosmtpd(auth_required=False) as running:
        yield running


@pytest.mark.interop
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_against_aiosmtpd_with_a_masked_trace(
    aiosmtpd: tuple[AiosmtpdAccounts, int], mechanism: str
) -> None:
    accounts, port = aiosmtpd
    lines: list[tuple[str, str]] = []
    with sync.SMTPClient(
        "127.0.0.1",
        port,
        timeout=10,
        username=USER,
        password=PASSWORD,
        auth_mechanisms=[mechanism],
        allow_plaintext_auth=True,
        trace=lambda direction, line: lines.append((direction, line)),
    ) as client:
        client.send_message(MESSAGE, USER, "bob@pqr.example")
    [envelope] = accounts.envelopes
    assert envelope.original_content == MESSAGE
    sent = [line for direction, line in lines if direction == "C"]
    assert sent[0].startswith("EHLO ") and sent[-1] == "QUIT"
    assert "..leading dot" in sent  # the content, as written: dot-stuffed
    if mechanism == "PLAIN":
        assert "AUTH PLAIN ****" in sent
    else:
        assert sent[sent.index("AUTH LOGIN") + 1 : sent.index("AUTH LOGIN") + 3] == ["****"] * 2
    assert ("S", "235 2.7.0 Authentication successful") in lines
    assert not any(PASSWORD in line or "Y29ycmVjdCBob3JzZQ" in line for _, line in lines)


@pytest.mark.interop
def test_against_postfix_smtp_sink(tmp_path: Path) -> None:
    with smtp_sink(dump_dir=tmp_path / "dump") as sink:
        with sync.SMTPClient(sink.host, sink.port, hostname="client.test", timeout=10) as client:
            for n in range(3):
                client.send_message(MESSAGE, f"a{n}@abc.example", "bob@pqr.example")
            assert client.noop().code == 250
        dumped = sink.messages()
    assert len(dumped) == 3
    assert all(m.content.endswith(b".leading dot\nbody\n") for m in dumped)
    assert dumped[0].helo == "client.test"


def test_the_reference_server_submission_and_pop3(tmp_path: Path) -> None:
    from test_cli_serve import _until, serve

    tls = make_tls_files(tmp_path)
    options = ("--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file))
    with serve(tmp_path / "pqr", "pqr.example", ["bob@pqr.example:pw"], extra=options) as pqr:
        with sync.SMTPClient(
            "127.0.0.1",
            pqr.ports["submission"],
            ssl_context=tls.client_context,
            username="bob@pqr.example",
            password="pw",
            timeout=60,
        ) as client:
            assert client.connection.tls and client.authenticated_with is not None
            assert client.channel_bindings() == {}  # as the async clients': ssl exports none
            client.send_message(MESSAGE, "bob@pqr.example", "bob@pqr.example")
        _until(lambda: len(pqr.mailbox("bob@pqr.example")) == 1, "delivery", pqr)
        with sync.POP3Client(
            "127.0.0.1", pqr.ports["pop3"], ssl_context=tls.client_context, timeout=60
        ) as pop:
            assert pop.tls and pop.channel_bindings() == {}
            pop.login("bob@pqr.example", "pw")
            [listing] = pop.list()
            [(number, message)] = list(pop.retrieve_many([listing.number]))
            assert message.endswith(b".leading dot\r\nbody\r\n")
            pop.delete(number)


def test_lmtp_and_pop3_over_unix_sockets(tmp_path: Path) -> None:
    """``over_unix_socket``, as the asyncio and trio clients have it: LMTP to a local
    delivery agent is the common case (RFC 2033 §5 names no TCP port for it)."""
    from peers import running_pop3_server, write_maildir
    from smtpcore.maildrop import MaildirStore
    from test_adapters_streams import Keeping

    handler = Keeping()
    lmtp_path = tmp_path / "lmtp.sock"
    with (
        running_smtp_server("asyncio", handler, unix_path=lmtp_path, lmtp=True),
        sync.SMTPClient.over_unix_socket(lmtp_path, lmtp=True, timeout=10) as client,
    ):
        result = client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
    assert not result.refused and handler.messages == [MESSAGE]

    write_maildir(tmp_path / "mail" / "alice", [MESSAGE])
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})
    pop3_path = tmp_path / "pop3.sock"
    with (
        running_pop3_server("trio", store, unix_path=str(pop3_path)),
        sync.POP3Client.over_unix_socket(pop3_path, timeout=10, allow_plaintext_auth=True) as pop,
    ):
        pop.login("alice", "wonderland")
        assert pop.retrieve(1) == MESSAGE
        assert pop.connection.apop_timestamp is not None and pop.host == "localhost"
    with pytest.raises(sync.SMTPConnectionError):
        sync.SMTPClient.over_unix_socket(tmp_path / "absent.sock", timeout=10).connect()


def test_pop3_utf8_is_sent_where_the_server_lists_it(tmp_path: Path) -> None:
    """``utf8()`` (RFC 6856 §2), as poplib's ``POP3.utf8()``; refused clearly where
    the server does not list UTF8."""
    from peers import running_pop3_server, write_maildir
    from smtpcore.maildrop import MaildirStore

    write_maildir(tmp_path / "mail" / "alice", [MESSAGE])
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})
    with (
        running_pop3_server("asyncio", store, utf8=True) as server,
        sync.POP3Client(server.host, server.port, timeout=10, allow_plaintext_auth=True) as pop,
    ):
        pop.utf8()
        pop.login("alice", "wonderland")
        assert pop.stat()[0] == 1
    with (
        running_pop3_server("asyncio", store) as server,
        sync.POP3Client(server.host, server.port, timeout=10) as pop,
        pytest.raises(sync.POP3Error, match="does not offer UTF8"),
    ):
        pop.utf8()


def test_pop3_retrieve_chunks_reads_a_large_message_in_pieces(tmp_path: Path) -> None:
    """As the async clients' ``retrieve_chunks``: a large message is never held whole,
    and a loop left early leaves the session ready for the next command."""
    from peers import running_pop3_server, write_maildir
    from smtpcore.maildrop import MaildirStore

    large = b"Subject: large\r\n\r\n" + b".dotted line of text\r\n" * 50_000
    write_maildir(tmp_path / "mail" / "alice", [large, MESSAGE])
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})
    with (
        running_pop3_server("asyncio", store) as server,
        sync.POP3Client(server.host, server.port, timeout=10, allow_plaintext_auth=True) as pop,
    ):
        pop.login("alice", "wonderland")
        chunks = list(pop.retrieve_chunks(1))
        assert b"".join(chunks) == large
        assert len(chunks) > 1 and max(map(len, chunks)) < len(large) // 4
        for _ in pop.retrieve_chunks(1):
            break  # the rest is read and dropped before the next command
        assert pop.retrieve(2) == MESSAGE


def test_an_exception_in_the_smtp_with_block_says_quit_while_the_session_can() -> None:
    """RFC 5321 §4.1.1.10: QUIT before closing, even after an error; the caller's own
    exception between commands leaves the session able to take it."""
    server = ScriptedServer(script(GREET + QUIT))
    with server, pytest.raises(KeyError), sync.SMTPClient("127.0.0.1", server.port, timeout=10):
        raise KeyError("the caller's own")


def test_send_message_says_quit_after_a_refusal() -> None:
    """The module-level ``send_message`` ends with QUIT after a 550 RCPT too."""
    with (
        ScriptedServer(script(RCPT_REFUSED + QUIT)) as server,
        pytest.raises(sync.RecipientsRefused),
    ):
        sync.send_message(
            ERRORS_MESSAGE, "a@abc.example", "bob@pqr.example", host="127.0.0.1", port=server.port
        )


def test_an_ehlo_refusal_then_a_close_is_hello_refused_for_ehlo() -> None:
    """The server's refusal of EHLO, its last word before it closed, is what connect()
    raises (the adapters' test_an_ehlo_refusal_then_a_close_is_hello_refused_for_ehlo)."""
    steps = script(REFUSED_EHLO_THEN_CLOSE.format("554 5.7.1 your IP is on a blocklist"))
    with ScriptedServer(steps) as server, pytest.raises(sync.HelloRefused) as refused:
        sync.SMTPClient("127.0.0.1", server.port).connect()
    assert (refused.value.command, refused.value.code) == ("EHLO", 554)


@pytest.mark.parametrize("refused", list(QUIT_UNANSWERED))
def test_a_refused_session_does_not_wait_for_the_reply_to_quit(refused: str) -> None:
    """connect() closes after its QUIT without waiting for a 221 that never comes: the
    client's close reaches the server before the server gives up on it (5 s), though
    the QUIT timeout is longer."""
    timeouts = sync.Timeouts(quit=120.0)
    steps = script(QUIT_UNANSWERED[refused])
    with ScriptedServer(steps, timeout=5.0) as server, pytest.raises(sync.HelloRefused):
        sync.SMTPClient("127.0.0.1", server.port, timeouts=timeouts).connect()


def test_tls_not_available_at_connect_says_quit_and_does_not_wait_for_its_reply() -> None:
    """As the adapters' test of the same name: ``starttls=True`` against a server that
    offers no STARTTLS says QUIT before the close, and does not wait for its 221."""
    timeouts = sync.Timeouts(quit=120.0)
    steps = script(NO_STARTTLS_QUIT_UNANSWERED)
    with ScriptedServer(steps, timeout=5.0) as server, pytest.raises(sync.TLSNotAvailable):
        sync.SMTPClient("127.0.0.1", server.port, starttls=True, timeouts=timeouts).connect()


@pytest.mark.parametrize("case", list(TLS_REFUSED_AT_CONNECT))
def test_a_tls_refusal_at_connect_says_quit_and_does_not_wait_for_its_reply(case: str) -> None:
    """As the adapters' test of the same name: every TLS refusal at connect says QUIT
    before the close, and does not wait for its 221."""
    text, options, error = TLS_REFUSED_AT_CONNECT[case]
    timeouts = sync.Timeouts(quit=120.0)
    steps = script(text + "C: QUIT\n-- expect close")
    with ScriptedServer(steps, timeout=5.0) as server, pytest.raises(getattr(sync, error)):
        sync.SMTPClient("127.0.0.1", server.port, timeouts=timeouts, **options).connect()


def test_a_refused_login_at_connect_says_quit_and_does_not_wait_for_its_reply() -> None:
    """As the adapters' test of the same name: a ``535`` at connect() is followed by
    QUIT, its ``221`` not waited for."""
    timeouts = sync.Timeouts(quit=120.0)
    with (
        ScriptedServer(script(LOGIN_REFUSED_THEN_QUIT), timeout=5.0) as server,
        pytest.raises(sync.AuthenticationError, match="535"),
    ):
        sync.SMTPClient(
            "127.0.0.1",
            server.port,
            username="u",
            password="p",
            allow_plaintext_auth=True,
            timeouts=timeouts,
        ).connect()


@pytest.mark.parametrize("case", list(REFUSED_THEN_PARTIAL))
def test_a_refusal_followed_by_a_partial_line_closes_without_quit_or_a_read(
    case: str,
) -> None:
    """As the adapters' test of the same name: no QUIT, and no read of the partial line
    under the command timeout, before the close."""
    text, options, error = REFUSED_THEN_PARTIAL[case]
    timeouts = sync.Timeouts(command=120.0, quit=120.0)
    steps = refused_then_partial_steps(text)
    with ScriptedServer(steps, timeout=5.0) as server, pytest.raises(getattr(sync, error)):
        sync.SMTPClient("127.0.0.1", server.port, timeouts=timeouts, **options).connect()


@pytest.mark.parametrize("case", list(POP3_STLS_REFUSED))
def test_pop3_stls_refused_at_connect_says_quit(case: str) -> None:
    """As the adapters' test of the same name, on the blocking POP3 client."""
    text, stls, error = POP3_STLS_REFUSED[case]
    steps = script(text + "C: QUIT\n-- expect close")
    with ScriptedServer(steps, timeout=5.0) as server, pytest.raises(getattr(sync, error)):
        sync.POP3Client("127.0.0.1", server.port, stls=stls).connect()


def test_ehlo_refused_is_kept_for_the_session_that_went_on_after_helo() -> None:
    """As the adapters' test of the same name: the refusal of EHLO is kept while the
    session goes on after HELO and after its QUIT, until an ``ehlo()`` is taken or a
    new ``connect()``, though it fails before EHLO."""
    seen: list[Reply | None] = []
    with serve(refusing_ehlo_in(2)) as server:
        client = sync.SMTPClient("127.0.0.1", server.port, timeout=10)
        client.connect()
        seen.append(client.ehlo_refused)
        client.ehlo()
        seen.append(client.ehlo_refused)
        client.quit()
        client.connect()
        seen.append(client.ehlo_refused)
        client.quit()
        seen.append(client.ehlo_refused)
        with pytest.raises(sync.HelloRefused):
            client.connect()
        seen.append(client.ehlo_refused)
    shown = [None if reply is None else str(reply) for reply in seen]
    assert shown == [EHLO_FOR_NOW, None, EHLO_FOR_NOW, EHLO_FOR_NOW, None]


def test_seekable_content_of_text_is_refused_before_mail_and_the_session_goes_on() -> None:
    """Content that can seek back but has no ``read`` has its first piece checked
    before ``MAIL``: a ``str`` piece, or content that is not iterable, is a
    ``TypeError`` there, and the session goes on (not one lost after the 354)."""
    steps = script(GREET + "C: NOOP\nS: 250 2.0.0 ok\n" + QUIT)
    with (
        ScriptedServer(steps) as server,
        sync.SMTPClient("127.0.0.1", server.port, timeout=10) as client,
    ):
        for content in (SeekableText(["Subject: text\r\n"]), SeekableText(None)):
            with pytest.raises(TypeError, match=r"give bytes|not iterable"):
                client.send_message(content, "a@abc.example", "bob@pqr.example")  # type: ignore[arg-type]
            assert content.seeks == [0]  # sought back to where it stood
        client.noop()


def test_content_failing_mid_data_closes_without_quit_or_the_dot() -> None:
    """QUIT after the 354 would be message text, and the final dot would deliver the
    part sent: the connection is closed without either."""
    steps = [*script(GREET + PIPELINED), Call(ScriptedConnection.read_to_close)]
    with (
        ScriptedServer(steps) as server,
        pytest.raises(ValueError, match="content failed"),
        sync.SMTPClient("127.0.0.1", server.port, timeout=10) as client,
    ):
        client.send_message(content_broken_off(), "a@abc.example", "bob@pqr.example")
    assert not [line for line in server.transcript if "QUIT" in line]
    assert "C: '.'" not in server.transcript


def test_an_exception_in_the_pop3_with_block_closes_without_quit() -> None:
    """POP3's QUIT would commit the deletions (RFC 1939 §6): after an exception the
    block only closes, and nothing marked deleted is removed."""
    steps = script(POP3_LOGGED_IN + "C: DELE 1\nS: +OK marked")
    server = ScriptedServer([*steps, ExpectClose()])
    with (
        server,
        pytest.raises(KeyError),
        sync.POP3Client("127.0.0.1", server.port, timeout=10, allow_plaintext_auth=True) as client,
    ):
        client.login("u", "p")
        client.delete(1)
        raise KeyError("the caller's own")


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "one at a time"])
def test_pop3_list_reads_a_repeated_unique_id_as_none_when_asked(pipelined: bool) -> None:
    """The blocking client's ``list()`` refuses a unique-id given to two messages (RFC
    1939 §7), and with ``allow_repeated_uids=True`` lists them without one, as the async
    clients do, LIST and UIDL pipelined or not."""
    sizes = "S: +OK\nS: 1 10\nS: 2 20\nS: 3 30\nS: 4 40\nS: .\n"
    if pipelined:  # both commands go out before either answer
        listings = "C: LIST\nC: UIDL\n" + sizes + REPEATED_UIDL + "\n"
    else:
        listings = "C: LIST\n" + sizes + "C: UIDL\n" + REPEATED_UIDL + "\n"
    capabilities = "S: UIDL\nS: PIPELINING\n" if pipelined else "S: UIDL\n"
    login = POP3_LOGGED_IN.replace("S: USER\n", "S: USER\n" + capabilities)
    steps = script(login + listings + listings + "C: QUIT\nS: +OK bye")
    with (
        ScriptedServer(steps) as server,
        sync.POP3Client("127.0.0.1", server.port, timeout=10, allow_plaintext_auth=True) as client,
    ):
        client.login("u", "p")
        with pytest.raises(sync.POP3ProtocolError, match="unique-id 'same' twice"):
            client.list()
        listing = client.list(allow_repeated_uids=True)
    assert [(m.uid, m.repeated_uid) for m in listing] == [
        ("a", None),
        (None, "same"),
        ("b", None),
        (None, "same"),
    ]


def test_pop3_login_without_tls_sends_no_password() -> None:
    """The audit's case, poplib's habit: the default client against a server whose CAPA
    lacks STLS (stripped by an attacker, RFC 2595 §2.2) refuses USER/PASS and AUTH
    PLAIN before sending them, the server having seen nothing but CAPA."""
    steps = script(STRIPPED)
    with (
        ScriptedServer([*steps, ExpectClose()]) as server,
        pytest.raises(sync.POP3AuthenticationNotAvailable, match="USER/PASS needs TLS"),
        sync.POP3Client("127.0.0.1", server.port, timeout=10) as client,
    ):
        with pytest.raises(sync.POP3AuthenticationNotAvailable, match="PLAIN needs TLS"):
            client.authenticate(PlainClient("alice", "s3cret-password"))
        client.login("alice", "s3cret-password")


def test_timeouts_and_closed_connections_leave_nothing_open() -> None:
    silent = [*script(GREET), Call(ScriptedConnection.read_to_close)]
    before = open_fd_count()
    with ScriptedServer(silent) as server:
        client = sync.SMTPClient("127.0.0.1", server.port, timeout=0.3)
        client.connect()
        with pytest.raises(sync.SMTPTimeout):
            client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
    assert open_fd_count() == before
    client.quit()  # harmless after the session ended


def test_connection_refused() -> None:
    port = free_port("127.0.0.1")  # nothing listens there
    with pytest.raises(sync.SMTPConnectionError):
        sync.send_message(MESSAGE, "a@abc.example", "b@pqr.example", host="127.0.0.1", port=port)


def test_one_client_per_thread() -> None:
    handler = Recorder()
    errors: list[BaseException] = []

    def send(port: int, n: int) -> None:
        try:
            sync.send_message(
                MESSAGE, f"a{n}@abc.example", "bob@pqr.example", host="127.0.0.1", port=port
            )
        except BaseException as exc:
            errors.append(exc)

    with running_smtp_server("trio", handler) as server:
        threads = [threading.Thread(target=send, args=(server.port, n)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert not errors and len(handler.messages) == 4


def test_an_infinite_timeout_is_no_limit() -> None:
    """``timeout=math.inf``, smtplib's and poplib's "no limit" as a number, is what
    ``timeout`` None in each field of the timeouts: no limit."""
    handler = Recorder()
    with (
        running_smtp_server("asyncio", handler) as server,
        sync.SMTPClient("127.0.0.1", server.port, timeout=math.inf) as client,
    ):
        assert (
            len(client.send_message(MESSAGE, "a@abc.example", ["bob@pqr.example"]).delivered) == 1
        )
    assert sync.POP3Client("127.0.0.1", 1, timeout=math.inf) is not None


@pytest.mark.parametrize("client", [sync.SMTPClient, sync.POP3Client])
@pytest.mark.parametrize("timeout", [-1, math.nan, True, "5", pytest.param(10**400, id="10**400")])
def test_a_timeout_that_is_no_wait_is_refused_by_its_name(client: Any, timeout: Any) -> None:
    """The error names ``timeout``, the keyword given, not a field of the timeouts
    built from it."""
    with pytest.raises(ValueError, match=r"^timeout "):
        client("127.0.0.1", 1, timeout=timeout)


def test_timeout_and_timeouts_are_exclusive() -> None:
    options: Any = {"timeouts": sync.Timeouts()}
    with pytest.raises(ValueError, match="not both"):
        sync.SMTPClient("127.0.0.1", 25, timeout=1, **options)


def test_the_typed_options_are_the_constructors_keywords() -> None:
    import inspect

    from smtpcore._driver._smtp_client import BaseSMTPClient, SMTPClientOptions

    keywords = {
        name
        for name, parameter in inspect.signature(BaseSMTPClient).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(SMTPClientOptions.__annotations__) == keywords


def test_implicit_tls(tls: TLSFiles) -> None:
    handler = Recorder()
    with running_smtp_server(
        "asyncio", handler, ssl_context=tls.server_context, tls_on_connect=True
    ) as server:
        sync.send_message(
            MESSAGE,
            "a@abc.example",
            "bob@pqr.example",
            host="127.0.0.1",
            port=server.port,
            ssl_context=tls.client_context,
            tls_on_connect=True,
            timeout=10,
        )
    assert len(handler.messages) == 1


def test_a_certificate_that_does_not_verify_fails_and_closes(tls: TLSFiles) -> None:
    handler = Recorder()
    before = open_fd_count()
    with running_smtp_server("asyncio", handler, ssl_context=tls.server_context) as server:
        with pytest.raises(sync.SMTPConnectionError, match="TLS handshake failed"):
            sync.SMTPClient("127.0.0.1", server.port, timeout=10).connect()  # system CAs
        server.wait_for_sessions(0)
    assert open_fd_count() == before and not handler.messages


def test_starttls_ignores_replies_injected_before_the_handshake(tls: TLSFiles) -> None:
    from test_adapters_client import INJECTING

    with ScriptedServer(INJECTING, ssl_context=tls.server_context) as server:
        client = sync.SMTPClient(
            "127.0.0.1", server.port, ssl_context=tls.client_context, timeout=10
        )
        with client:
            extensions = dict(client.connection.extensions)
    assert "SIZE" in extensions and "AUTH" not in extensions


def test_pop3_reads_what_a_retrieve_many_left_early_owes_before_the_next_command() -> None:
    """As on asyncio and trio: the answers to the RETRs still in flight when the loop
    is left are read and dropped first, so the refused DELE is reported refused."""
    with (
        ScriptedServer(script(RETRIEVE_MANY_LEFT_EARLY)) as server,
        sync.POP3Client("127.0.0.1", server.port, timeout=10, allow_plaintext_auth=True) as pop,
    ):
        pop.login("u", "p")
        for number, content in pop.retrieve_many([1, 2, 3]):
            assert (number, content) == (1, b"one\r\n")
            break
        with pytest.raises(sync.POP3ResponseError, match="no such message"):
            pop.delete(9)
        assert pop.stat() == (3, 30)


def test_a_call_from_a_second_thread_while_one_is_in_progress_is_refused() -> None:
    """A client is for one thread at a time: a second thread's call while the first
    waits for its reply is refused at once, and the first goes on."""
    held = HeldAnswer()

    steps = [
        *script(GREET + "C: NOOP"),
        held.step,
        *script("S: 250 2.0.0 ok\nC: QUIT\nS: 221 bye"),
    ]
    replies: list[Reply] = []
    with (
        ScriptedServer(steps) as server,
        sync.SMTPClient("127.0.0.1", server.port, timeout=10) as client,
    ):
        first = threading.Thread(target=lambda: replies.append(client.noop()))
        first.start()
        try:
            assert held.asked.wait(5)
            with pytest.raises(LocalProtocolError, match="another call is in progress"):
                client.noop()
        finally:
            held.release.set()
            first.join(5)
        assert [reply.code for reply in replies] == [250]


def test_pop3_trace_masks_the_password_and_sasl(tmp_path: Path) -> None:
    from peers import running_pop3_server, write_maildir
    from smtpcore.maildrop import MaildirStore
    from smtpcore.sasl import ScramSHA256Client

    write_maildir(tmp_path / "mail" / "alice", [b"Subject: one\r\n\r\nhi\r\n"])
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})
    lines: list[tuple[str, str]] = []

    def trace(direction: str, line: str) -> None:
        lines.append((direction, line))

    with running_pop3_server("trio", store) as server:
        with sync.POP3Client(
            "127.0.0.1", server.port, timeout=10, trace=trace, allow_plaintext_auth=True
        ) as pop:
            pop.login("alice", "wonderland")
            assert pop.retrieve(1).startswith(b"Subject: one")
        with sync.POP3Client("127.0.0.1", server.port, timeout=10, trace=trace) as pop:
            pop.authenticate(ScramSHA256Client("alice", "wonderland"))  # without TLS
            assert pop.stat()[0] == 1
    sent = [line for direction, line in lines if direction == "C"]
    assert "USER alice" in sent and "PASS ****" in sent
    auth = sent.index("AUTH SCRAM-SHA-256 ****")
    assert sent[auth + 1] == "****"
    assert ("S", "Subject: one") in lines and sent[-1] == "QUIT"
    assert not any("wonderland" in line or "n,,n=" in line for _, line in lines)


def test_the_typed_pop3_options_are_the_constructors_keywords() -> None:
    import inspect

    from smtpcore._driver._pop3_client import BasePOP3Client, POP3ClientOptions

    keywords = {
        name
        for name, parameter in inspect.signature(BasePOP3Client).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(POP3ClientOptions.__annotations__) == keywords


@pytest.mark.parametrize(
    ("unasked", "error"),
    [
        (b"250 unsolicited\r\n", "SMTPProtocolError"),
        (b"421 4.3.2 going down\r\n", "SMTPConnectionError"),
    ],
)
def test_a_reply_written_while_the_client_is_idle_ends_the_session(
    unasked: bytes, error: str
) -> None:
    import select

    from test_client_stale_reply import _serve

    listener = socket.create_server(("127.0.0.1", 0))
    sent = threading.Event()
    seen: list[bytes] = []
    thread = threading.Thread(target=_serve, args=(listener, unasked, sent, seen))
    thread.start()
    try:
        client = sync.SMTPClient("127.0.0.1", listener.getsockname()[1], timeout=10)
        with client, pytest.raises(getattr(sync, error)):
            assert sent.wait(10)
            sock = client._session._transport.transport._sock  # type: ignore[union-attr]
            assert select.select([sock], [], [], 10)[0]  # the reply is in the kernel's buffer
            client.send_message(MESSAGE, "a@abc.example", "b@pqr.example")
    finally:
        thread.join(10)
        listener.close()
    assert [line[:4] for line in seen] == [b"EHLO"]  # no MAIL was paired with it


def test_a_session_that_would_wait_on_an_event_loop_is_refused() -> None:
    import asyncio

    from smtpcore._driver._blocking import run

    async def waits() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="event loop"):
        run(waits())


# 2**31 - 1 ms, the longest one poll() takes, is about 24.8 days; 9.2e9 s is past
# what a socket timeout takes; 1e300 and the largest float are past everything.
_BEYOND_THE_PLATFORMS_WAITS = [2_147_484.0, 1e10, 1e300, sys.float_info.max]


@pytest.mark.parametrize("timeout", _BEYOND_THE_PLATFORMS_WAITS)
def test_a_timeout_longer_than_the_platform_waits_at_once_still_delivers(
    tmp_path: Path, timeout: float
) -> None:
    """Any finite timeout is a deadline, however far off: the asyncio and trio
    clients take 1e308, and so does the blocking one, over plain TCP and POP3."""
    handler = Recorder()
    with (
        running_smtp_server("asyncio", handler) as server,
        sync.SMTPClient("127.0.0.1", server.port, timeout=timeout) as client,
    ):
        client.noop()
        assert client.send_message(MESSAGE, "a@abc.example", ["bob@pqr.example"]).delivered
    write_maildir(tmp_path / "mail" / "alice", [MESSAGE])
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})
    with (
        running_pop3_server("asyncio", store) as pop3,
        sync.POP3Client(pop3.host, pop3.port, timeout=timeout, allow_plaintext_auth=True) as pop,
    ):
        pop.login("alice", "wonderland")
        assert pop.stat()[0] == 1


@pytest.mark.parametrize("timeout", [1e10, sys.float_info.max])
def test_a_timeout_longer_than_a_socket_timeout_takes_still_delivers_over_tls(
    tls: TLSFiles, timeout: float
) -> None:
    """Under TLS every wait is a socket timeout (and the connect always is one)."""
    handler = Recorder()
    with running_smtp_server(
        "asyncio", handler, ssl_context=tls.server_context, tls_on_connect=True
    ) as server:
        sync.send_message(
            MESSAGE,
            "a@abc.example",
            "bob@pqr.example",
            host="127.0.0.1",
            port=server.port,
            ssl_context=tls.client_context,
            tls_on_connect=True,
            timeout=timeout,
        )
    assert len(handler.messages) == 1


def test_a_huge_timeout_does_not_hide_a_shorter_deadline() -> None:
    """The reply to NOOP is due within ``command`` (RFC 5321 §4.5.3.2.3), whatever
    the other waits of the session may take."""
    silent = [*script(GREET), Call(ScriptedConnection.read_to_close)]
    timeouts = dataclasses.replace(sync.Timeouts.uniform(1e300), command=0.3)
    with ScriptedServer(silent) as server:
        client = sync.SMTPClient("127.0.0.1", server.port, timeouts=timeouts)
        client.connect()
        started = time.monotonic()
        with pytest.raises(sync.SMTPTimeout):
            client.noop()
    assert 0.3 <= time.monotonic() - started < 5


@pytest.mark.parametrize("chunking", [None, False], ids=["BDAT", "DATA"])
def test_8bit_content_to_a_server_with_binarymime_but_no_8bitmime_is_refused(
    chunking: bool | None,
) -> None:
    """The blocking client shares the driver's check (test_client_errors): with no
    ``BODY=BINARYMIME`` 8-bit content needs 8BITMIME (RFC 6152 §3); it went as 7BIT."""
    with (
        ScriptedServer(script(GREET_BINARY_ONLY + QUIT)) as server,
        sync.SMTPClient("127.0.0.1", server.port, chunking=chunking, timeout=10) as client,
        pytest.raises(sync.ExtensionNotOffered) as refused,
    ):
        client.send_message(EIGHT_BIT, "a@abc.example", "bob@pqr.example")
    error = refused.value
    assert (error.extension, error.code, str(error.status)) == ("8BITMIME", 554, "5.6.3")
