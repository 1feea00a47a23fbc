"""play_smtp_session and play_pop3_session: strategy-made sessions over a socket.

Against smtpcore's own servers every reply comes back in order and the server
closes after QUIT; against a server with a planted bug that desynchronises
its replies (SMTP smuggling: LF.LF ends DATA) the player gives a quick,
readable result, so Hypothesis finds and shrinks the bug in bounded time.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from broken_servers import (
    DataWithoutRecipientServer,
    LfDotLfDroppingServer,
    LfDotLfServer,
    SmallServer,
    raw_server,
    serve,
)
from peers import running_pop3_server, write_maildir
from smtpcore import pop3
from smtpcore.address import parse_mailbox, parse_path
from smtpcore.handler import Authenticator, Envelope, Session
from smtpcore.maildrop import MaildirStore
from smtpcore.smtp import (
    Auth,
    AuthResponse,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    Xclient,
)
from smtpcore.testing import (
    CollectingHandler,
    PlayedPOP3Session,
    PlayedSMTPSession,
    POP3ConnectionPair,
    SMTPTestServer,
    play_pop3_session,
    play_smtp_session,
    run_pop3_server,
)
from smtpcore.testing import strategies as sst
from smtpcore.testing._in_step import refused_as_a_web_request
from smtpcore.testing._wire import MAX_REPLIES, MAX_REPLY
from smtpcore.testing.strategies import ClientSession, POP3Session

OFFERED = {"PIPELINING", "8BITMIME", "SIZE"}


@contextlib.contextmanager
def listening(serve_one: Callable[[socket.socket], None]) -> Iterator[tuple[str, int]]:
    """A loopback listener whose every connection ``serve_one`` runs in a thread."""
    with raw_server(lambda sock, _stop: serve_one(sock), socket_timeout=10) as address:
        yield address


def reads(sock: socket.socket, greeting: bytes = b"220 hi\r\n") -> Iterator[bytes]:
    """Send ``greeting``, then yield what each read brings until the client closes
    (100 reads at the most)."""
    sock.sendall(greeting)
    for _ in range(100):
        data = sock.recv(65536)
        if not data:
            return
        yield data


# -- SMTP ---------------------------------------------------------------------------


def test_a_session_against_smtpcores_own_server_gets_every_reply_in_order() -> None:
    with SMTPTestServer() as server:

        @settings(max_examples=15, deadline=None)
        @given(sst.sessions(extensions=OFFERED))
        def every_reply(session: ClientSession) -> None:
            played = play_smtp_session(server.host, server.port, session)
            assert played.missing == 0 and played.surplus == 0, played
            assert played.closed, played
            assert played.codes[0] == 220 and played.codes[-1] == 221
            assert played.codes.count(354) == len(session.messages)

        every_reply()


class RefusingHandler(CollectingHandler):
    """Refuses every recipient, as a server that is no relay for the domain does."""

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(550, "relay access denied")


def test_quit_pipelined_behind_a_refused_messages_end_is_still_written() -> None:
    """Every recipient refused, DATA gets 554 (RFC 5321 §4.1.1.4): the content must not
    go, but the QUIT pipelined behind its end (RFC 2920 §3.1) still must, and the
    server that closes after it is not blamed for a QUIT it never got."""
    envelope = (Mail(None), Rcpt(parse_mailbox("0@a.example")), Data())
    session = ClientSession(
        ((Ehlo("client.test"),), envelope, (EndOfMessage(), Quit())), frozenset(OFFERED)
    )
    with SMTPTestServer(RefusingHandler()) as server:
        played = play_smtp_session(server.host, server.port, session, timeout=1)
    assert played.codes == [220, 250, 250, 550, 554, 221], played
    assert played.missing == 0 and played.surplus == 0 and played.closed, played
    assert played.stopped == "the server closed the connection after the session", played
    written = [entry.data for entry in played.transcript if entry.side == "client"]
    assert written[-1] == b"QUIT\r\n", written


def test_every_reply_comes_in_order_when_a_server_refuses_every_recipient() -> None:
    with SMTPTestServer(RefusingHandler()) as server:

        @settings(max_examples=15, deadline=None)
        @given(sst.sessions(extensions=OFFERED))
        def every_reply(session: ClientSession) -> None:
            played = play_smtp_session(server.host, server.port, session, timeout=1)
            assert played.missing == 0 and played.surplus == 0, played
            assert played.closed and played.codes[-1] == 221, played
            assert 354 not in played.codes, played

        every_reply()


def test_an_auth_response_with_no_challenge_is_left_out_and_the_rest_of_its_group_goes() -> None:
    """AUTH refused with 504: no 334 came, so the answer to one must not go (RFC 4954
    §4), but the QUIT written with it must."""

    def refuse_auth(line: bytes) -> bytes:
        if line.startswith(b"AUTH"):
            return b"504 5.5.4 unrecognized mechanism\r\n"
        return b"221 bye\r\n" if line.startswith(b"QUIT") else b"250 ok\r\n"

    session = ClientSession(
        ((Ehlo("client.test"),), (Auth("PLAIN"),), (AuthResponse(b"\0a\0b"), Quit())),
        frozenset({"PIPELINING", "AUTH"}),
    )
    with listening(line_server(b"220 hi\r\n", refuse_auth)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=1)
    assert played.codes == [220, 250, 504, 221] and played.closed, played
    assert played.missing == 0 and played.surplus == 0, played
    written = [entry.data for entry in played.transcript if entry.side == "client"]
    assert written[-1] == b"QUIT\r\n", written


def answering_each_read(answer: Callable[[bytes], bytes]) -> Callable[[socket.socket], None]:
    """A server that, like aiosmtpd, ends a command line at a bare LF, and writes its
    replies to everything one read brought in one write; it closes after QUIT."""

    def serve_one(sock: socket.socket) -> None:
        buffer = b""
        for data in reads(sock):
            *lines, buffer = (buffer + data).split(b"\n")
            sock.sendall(b"".join(answer(line.rstrip(b"\r").upper()) for line in lines))
            if any(line.upper().startswith(b"QUIT") for line in lines):
                return

    return serve_one


def smtp_answer(line: bytes) -> bytes:
    """354 to DATA, 221 to QUIT, 500 to what is no command, 250 to the rest."""
    for verb, reply in ((b"DATA", b"354 go\r\n"), (b"QUIT", b"221 bye\r\n")):
        if line.startswith(verb):
            return reply
    known = (b"EHLO", b"MAIL FROM:<>", b"RCPT", b".")
    return b"250 ok\r\n" if line.startswith(known) else b"500 what?\r\n"


def bare_lf_in_mail_session() -> ClientSession:
    """``MAIL FROM:<`` LF ``>`` CRLF, one group of its own, then a whole transaction
    a command a group, and QUIT."""
    return ClientSession(
        (
            (Ehlo("client.test"),),
            (b"MAIL FROM:<\n>\r\n",),
            (Mail(None),),
            (Rcpt(parse_mailbox("bob@pqr.example")),),
            (Data(),),
            (EndOfMessage(),),
            (Quit(),),
        ),
        frozenset(),
    )


def test_two_replies_to_one_command_line_are_counted_in_surplus() -> None:
    """The server reads ``MAIL FROM:<`` LF ``>`` CRLF as two lines and answers both
    in one write: the second reply is owed to no command. Taken as the next group's,
    it put every later reply out of step and QUIT went as message content."""
    session = bare_lf_in_mail_session()
    with listening(answering_each_read(smtp_answer)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=1)
    assert played.codes == [220, 250, 500, 500, 250, 250, 354, 250, 221], played
    assert played.surplus == 1 and played.missing == 0 and played.closed, played
    assert played.unowed == (3,), played
    assert "1 reply owed to no command, the first before group 3 (Mail)" in played.stopped


def one_reply_behind_after_a_bare_lf(
    answer: Callable[[bytes], bytes],
) -> Callable[[socket.socket], None]:
    """A server that, like aiosmtpd, ends a command line at a bare LF and writes each
    reply apart. A read's first reply goes at once; a second one, and from then on
    every reply, waits for the client's next write, as aiosmtpd's second 500 came
    after the player had looked for replies already waiting (17 runs in 20 against
    the real one). The wait makes the race go the same way every run."""

    def serve_one(sock: socket.socket) -> None:
        buffer, held, behind = b"", list[bytes](), False
        for data in reads(sock):
            if held:
                sock.sendall(held.pop(0))
            *lines, buffer = (buffer + data).split(b"\n")
            replies = [answer(line.rstrip(b"\r").upper()) for line in lines]
            if replies and not behind:
                sock.sendall(replies.pop(0))
            behind |= bool(replies)
            held += replies

    return serve_one


def test_replies_out_of_step_are_found_by_a_reply_that_cannot_answer_its_command() -> None:
    """The server answers ``MAIL FROM:<`` LF ``>`` CRLF with two 500s, the second after
    the player looked for waiting replies: it is taken for MAIL's, every later reply
    is one behind, and DATA's 354 comes back to QUIT. No correct server answers QUIT
    with 354 (RFC 5321 §4.3.2), so the play stops there and counts a reply owed to
    no command, instead of waiting for a close that cannot come (QUIT went as the
    message's content)."""
    session = bare_lf_in_mail_session()
    with listening(one_reply_behind_after_a_bare_lf(smtp_answer)) as (host, port):
        started = time.monotonic()
        played = play_smtp_session(host, port, session, timeout=2)
        took = time.monotonic() - started
    assert played.codes == [220, 250, 500, 500, 250, 250, 354], played
    assert played.stopped == (
        "replies out of step: 354 answered QUIT in group 7 (Quit), a reply no correct"
        " server gives it (RFC 5321 §4.3.2); a reply before it was owed to no command"
    ), played.stopped
    assert played.surplus == 1 and played.unowed == (6,), played
    assert not played.closed, played
    assert took < 2, "it stops at the reply, without waiting for a close"


def test_a_reply_swallowed_in_a_pipelined_group_shows_as_missing_when_steps_slip() -> None:
    """The server never answers RCPT in a pipelined MAIL, RCPT, DATA: its 354 is paired
    with RCPT. DATA, written after RCPT, can take it, so a reply is missing, not owed
    to no command."""

    def no_reply_to_rcpt(line: bytes) -> bytes | None:
        return None if line.startswith(b"RCPT") else smtp_answer(line)

    session = ClientSession(
        (
            (Ehlo("client.test"),),
            (Mail(None), Rcpt(parse_mailbox("bob@pqr.example")), Data()),
            (EndOfMessage(), Quit()),
        ),
        frozenset({"PIPELINING"}),
    )
    with listening(line_server(b"220 hi\r\n", no_reply_to_rcpt)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=1)
    assert played.codes == [220, 250, 250, 354], played
    assert played.stopped.startswith(
        "replies out of step: 354 answered RCPT TO:<bob@pqr.example> in group 2"
    ), played.stopped
    assert played.stopped.endswith("; a reply owed before it did not come"), played.stopped
    assert played.surplus == 0 and played.missing == 1, played


def sasl_reading_any_line(line: bytes) -> bytes:
    """A LOGIN exchange that reads any line after a 334 as the next answer: 334 for
    the user name, 235 for the password, as a correct server does (RFC 4954 §4)."""
    if line.startswith(b"AUTH"):
        return b"334 VXNlcm5hbWU6\r\n"
    if line.startswith(b"NOOP"):  # read as the user name: "NOOP" is base64
        return b"334 UGFzc3dvcmQ6\r\n"
    if line.startswith(b"RSET"):  # read as the password
        return b"235 2.7.0 ok\r\n"
    return smtp_answer(line)


def test_a_sasl_exchange_reading_commands_as_its_answers_is_in_step() -> None:
    """After a 334 a server reads the next line as an answer, whatever it says: 334
    and 235 to NOOP and RSET are in step there, and the play goes on to the close."""
    session = ClientSession(
        ((Ehlo("client.test"),), (Auth("LOGIN"),), (Noop(),), (Rset(),), (Quit(),)),
        frozenset({"AUTH"}),
    )
    with listening(line_server(b"220 hi\r\n", sasl_reading_any_line)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=1)
    assert played.codes == [220, 250, 334, 334, 235, 221], played
    assert played.stopped == "the server closed the connection after the session", played
    assert played.surplus == 0 and played.missing == 0, played


def test_220_to_xclient_is_in_step() -> None:
    """Postfix answers XCLIENT with a new 220 greeting (XCLIENT_README)."""

    def answer(line: bytes) -> bytes:
        return b"220 again\r\n" if line.startswith(b"XCLIENT") else smtp_answer(line)

    session = ClientSession(
        ((Ehlo("client.test"),), (Xclient(addr="192.0.2.1"),), (Ehlo("client.test"),), (Quit(),)),
        frozenset(),
    )
    with listening(line_server(b"220 hi\r\n", answer)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=1)
    assert played.codes == [220, 250, 220, 250, 221], played
    assert played.stopped == "the server closed the connection after the session", played


def test_a_line_begun_by_hostile_bytes_is_not_judged() -> None:
    """A hostile line with no CRLF of its own ends at the next command's: the server
    answers the joined line, which may be anything (here ``DATA`` and ``NOOP`` make
    ``DATA NOOP``, which this server takes as DATA), so no reply to it is judged."""
    session = ClientSession(
        ((Ehlo("client.test"),), (b"DATA ",), (Noop(),), (EndOfMessage(), Quit())),
        frozenset({"PIPELINING"}),
    )
    with listening(line_server(b"220 hi\r\n", smtp_answer)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=1)
    assert played.codes == [220, 250, 354, 250, 221], played
    assert "out of step" not in played.stopped, played


REFERENCE_OFFER = {"PIPELINING", "8BITMIME", "SIZE", "SMTPUTF8", "CHUNKING", "STARTTLS", "AUTH"}


def john_secret(username: str, password: str) -> bool:
    return (username, password) == ("john", "secret")  # what sessions() logs in with


@pytest.mark.parametrize("handler", [CollectingHandler, RefusingHandler])
def test_no_session_against_the_reference_server_is_ever_out_of_step(
    handler: Callable[[], CollectingHandler],
) -> None:
    """Three hundred drawn sessions (seeded), hostile lines, STARTTLS, AUTH, BDAT and
    pipelined groups among them, against the reference server, a correct one that
    takes every recipient or refuses every one: not one is stopped as out of step,
    none has a reply owed to no command, and none misses one but where the server
    closed on too many errors (421, RFC 5321 §3.8)."""
    played_all: list[PlayedSMTPSession] = []
    auth = Authenticator(check_password=john_secret)
    with SMTPTestServer(handler(), starttls=True, auth=auth) as server:

        @settings(
            max_examples=300,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(sst.sessions(extensions=REFERENCE_OFFER, hostile=True))
        def in_step(session: ClientSession) -> None:
            played = play_smtp_session(
                server.host, server.port, session, tls_context=server.client_context
            )
            played_all.append(played)
            assert "out of step" not in played.stopped, played
            assert played.surplus == 0, played
            assert played.missing == 0 or played.codes[-1] == 421, played

        in_step()
    assert len(played_all) == 300
    codes = [played.codes for played in played_all]
    assert sum(235 in each for each in codes) > 30, "AUTH exchanges were played"
    assert sum(220 in each[1:] for each in codes) > 30, "STARTTLS was played"
    if handler is CollectingHandler:
        assert sum(354 in each for each in codes) > 30, "DATA was played"


def smuggling_session() -> ClientSession:
    envelope = (Mail(None), Rcpt(parse_mailbox("bob@pqr.example")), Data())
    content = (MessageData(b"a\n.\nRSET\r\n"), EndOfMessage(), Quit())
    return ClientSession(((Ehlo("client.test"),), envelope, content), frozenset(OFFERED))


def test_a_smuggled_end_of_data_shows_as_replies_owed_to_no_one() -> None:
    with serve(LfDotLfServer) as server:
        played = play_smtp_session(server.host, server.port, smuggling_session(), timeout=2)
    assert played.closed
    # 250 to the end at LF.LF, 250 to the smuggled RSET, 500 to the real end's dot line.
    assert played.codes == [220, 250, 250, 250, 354, 250, 250, 500, 221]
    assert played.owed == 7 and played.surplus == 2 and played.missing == 0


def test_a_server_that_drops_replies_gives_a_bounded_result() -> None:
    """The server swallows what its read held after LF.LF: the replies to the real
    end and to QUIT never come. The player stops one deadline later and says so."""
    with serve(LfDotLfDroppingServer) as server:
        started = time.monotonic()
        played = play_smtp_session(server.host, server.port, smuggling_session(), timeout=0.5)
        took = time.monotonic() - started
    assert took < 5
    assert played.codes == [220, 250, 250, 250, 354, 250]
    assert played.missing == 1 and not played.closed
    assert "no whole reply within 0.5 s" in played.stopped


def test_a_server_that_never_greets_gives_a_bounded_result() -> None:
    def mute(sock: socket.socket) -> None:
        sock.recv(1)

    with listening(mute) as (host, port):
        started = time.monotonic()
        played = play_smtp_session(host, port, smuggling_session(), timeout=0.3)
        assert time.monotonic() - started < 5
    assert played.replies == () and played.missing == 1 and played.owed == 1


def test_hypothesis_finds_and_shrinks_smuggling_in_bounded_time() -> None:
    """The audit's property against a server that ends DATA at LF.LF: each example
    ends within its timeout, so shrinking ends (no timed assertion: the suite's
    time shows it), and the example shown is the bug alone: one message whose
    content holds LF.LF."""
    failing: list[ClientSession] = []
    with serve(LfDotLfServer) as server:

        @settings(
            max_examples=200,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(sst.sessions(extensions=OFFERED, content=sst.message_contents(smuggling=True)))
        def replies_match_commands(session: ClientSession) -> None:
            played = play_smtp_session(server.host, server.port, session, timeout=1)
            # The bug's mark is a reply too many or too few; a close slow under the
            # machine's load is not it, and would shrink to some other example.
            if played.surplus or played.missing:
                failing.append(session)
                raise AssertionError(str(played))

        try:
            replies_match_commands()
        except AssertionError:
            pass
        else:
            raise AssertionError("the planted smuggling bug was not found")
    shrunk = failing[-1]
    assert len(shrunk.messages) == 1
    assert b"\n.\n" in shrunk.messages[0] or b"\n.\r\n" in shrunk.messages[0]
    assert len(shrunk.messages[0]) <= 8, shrunk.messages
    assert len(shrunk.groups) <= 4, shrunk.groups


# -- POP3 ---------------------------------------------------------------------------


def pop3_machine() -> pop3.ServerConnection:
    return pop3.ServerConnection("pop.test", sasl_mechanisms=["PLAIN", "LOGIN"])


def serve_pop3_machine(sock: socket.socket) -> None:
    """smtpcore's own POP3 server machine, answered as a pair answers it."""
    conn = pop3_machine()
    sock.sendall(conn.send(pop3.Ok("ready <1.2@pop.test>")))
    for _ in range(1000):
        data = sock.recv(65536)
        events, out = run_pop3_server(conn, data)
        if out:
            sock.sendall(out)
        if not data or any(isinstance(event, pop3.ConnectionClosed) for event in events):
            return


def as_pair_events(played: PlayedPOP3Session) -> list[pop3.Event]:
    """The responses as :attr:`POP3ConnectionPair.client_events` shows them."""
    events: list[pop3.Event] = []
    for response in played.responses:
        events.append(response.status)
        if response.content is not None:
            if response.content:
                events.append(pop3.ResponseData(response.content))
            events.append(pop3.EndOfResponse())
    if played.closed:
        events.append(pop3.ConnectionClosed())
    return events


@settings(max_examples=25, deadline=None)
@given(sst.pop3_sessions(capabilities=pop3_machine().capabilities()))
def test_a_pop3_session_gets_what_the_server_machine_gives(session: POP3Session) -> None:
    pair = POP3ConnectionPair(server=pop3_machine())
    pair.play(session)
    with listening(serve_pop3_machine) as (host, port):
        played = play_pop3_session(host, port, session)
    assert played.unanswered == () and played.error is None, played
    assert as_pair_events(played) == pair.client_events
    assert [r.command for r in played.responses[1:]] == [
        command for command in session.commands if command in played.sent
    ]


def test_sessions_drawn_from_the_reference_servers_capa_are_answered_whole(
    tmp_path: Path,
) -> None:
    """The asyncio POP3 server over a Maildir: the player reads its CAPA, sessions
    drawn from those lines log in as alice, and every command is answered (a
    RETR of a message deleted by an earlier example gets -ERR, which is an answer)."""
    write_maildir(tmp_path / "alice", [b"Subject: one\r\n\r\n.hi\r\n", b"Subject: two\r\n\r\n"])
    store = MaildirStore(tmp_path, {"alice": "wonderland"})
    with running_pop3_server("asyncio", store) as server:
        asked = play_pop3_session(server.host, server.port, POP3Session(((pop3.Capa(),),)))
        capa = asked.responses[1].content
        assert capa is not None
        lines = [line for line in capa.decode().splitlines() if line != "STLS"]

        @settings(max_examples=10, deadline=None)
        @given(sst.pop3_sessions(capabilities=lines, user="alice", password="wonderland"))
        def every_command_is_answered(session: POP3Session) -> None:
            played = play_pop3_session(server.host, server.port, session)
            assert played.unanswered == () and played.error is None, played
            assert played.closed and played.sent == session.commands, played
            logged_in = [r for r in played.responses if isinstance(r.command, pop3.Pass)]
            assert all(isinstance(r.status, pop3.Ok) for r in logged_in), played

        every_command_is_answered()


def test_a_pop3_response_that_never_ends_gives_a_bounded_result() -> None:
    """CAPA's list never gets its terminating dot line: the player stops one
    deadline later with what came, the response marked unended."""

    def endless_capa(sock: socket.socket) -> None:
        sock.sendall(b"+OK ready\r\n")
        sock.recv(100)
        sock.sendall(b"+OK capabilities follow\r\nUSER\r\n")
        sock.recv(100)

    session = POP3Session(((pop3.Capa(),), (pop3.User("mrose"),), (pop3.Quit(),)))
    with listening(endless_capa) as (host, port):
        started = time.monotonic()
        played = play_pop3_session(host, port, session, timeout=0.3)
        assert time.monotonic() - started < 5
    greeting, capa = played.responses
    assert greeting.status == pop3.Ok("ready") and greeting.command is None
    assert capa.command == pop3.Capa() and capa.content == b"USER\r\n" and not capa.ended
    assert played.unanswered == (pop3.Capa(),) and not played.closed
    assert "CAPA" in played.stopped


# -- hostile servers: the players never raise, and say why they stopped ---------------


def line_server(
    greeting: bytes, answer: Callable[[bytes], bytes | None], *, last: bytes = b"QUIT"
) -> Callable[[socket.socket], None]:
    """A server that sends ``greeting``, then ``answer(line)`` to each line read
    (upper-cased, without CRLF), nothing to a line ``answer`` gives None; it returns
    after the line that starts with ``last``, answered."""

    def serve_one(sock: socket.socket) -> None:
        buffer = b""
        for data in reads(sock, greeting):
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                line = line.rstrip(b"\r").upper()
                reply = answer(line)
                if reply is not None:
                    sock.sendall(reply)
                if line.startswith(last):
                    return

    return serve_one


def flood(sock: socket.socket, chunk: bytes, *, past: int) -> None:
    """Send ``chunk`` until more than ``past`` of what the player's limit counts has
    gone (its octets, or ``chunk.count(b"\\n")`` lines for replies), then return, and
    the listener closes: the close comes after the limit in the stream, so a player
    that stops at the limit never sees it, and one that does not sees it at once, not
    at a deadline. (An endless flood raced the player's deadline against its count:
    on a loaded machine the deadline won after about 9,000 replies.)"""
    sent = 0
    while sent <= past:
        sock.sendall(chunk)
        sent += chunk.count(b"\n") if chunk.endswith(b"\n") else len(chunk)


def smtp_then_after_quit(after: bytes, *, past: int) -> Callable[[socket.socket], None]:
    """250 to everything, 221 to QUIT and then a :func:`flood` of ``after``, past the
    player's limit, before the close."""

    def answer(line: bytes) -> bytes:
        return b"221 bye\r\n" if line.startswith(b"QUIT") else b"250 ok\r\n"

    def serve_one(sock: socket.socket) -> None:
        line_server(b"220 hi\r\n", answer)(sock)
        flood(sock, after, past=past)

    return serve_one


SHORT_SMTP = ClientSession(((Ehlo("client.test"),), (Noop(),), (Quit(),)), frozenset())


FLOOD_TIMEOUT = 60.0
"""The players' deadline where a test floods them: only the order of the flood and the
close decides, so the deadline is made long enough never to come first."""


@pytest.mark.parametrize(
    ("after", "past", "limit"),
    [
        (b"x" * 65536, MAX_REPLY, "a reply over"),
        (b"250 x\r\n" * 1000, MAX_REPLIES, "replies on one connection"),
    ],
    ids=["endless line", "endless replies"],
)
def test_a_flood_after_quit_ends_the_smtp_play_with_a_reason(
    after: bytes, past: int, limit: str
) -> None:
    with listening(smtp_then_after_quit(after, past=past)) as (host, port):
        played = play_smtp_session(host, port, SHORT_SMTP, timeout=FLOOD_TIMEOUT)
    assert played.codes[:4] == [220, 250, 250, 221], played.codes[:4]
    assert played.stopped.startswith("the server sent more than any session is owed")
    assert limit in played.stopped
    # The server's close came after the flood: the player stopped reading at its limit,
    # before the close, which it did not see.
    assert not played.closed


def test_an_endless_smtp_greeting_line_ends_the_play_with_a_reason() -> None:
    with listening(lambda sock: flood(sock, b"x" * 65536, past=MAX_REPLY)) as (host, port):
        played = play_smtp_session(host, port, SHORT_SMTP, timeout=FLOOD_TIMEOUT)
    assert played.replies == () and played.missing == 1 and not played.closed
    assert "more than any session is owed" in played.stopped


# -- a server that ends the session on its own (RFC 5321 §3.8) -------------------------

POSTFIX_GOODBYE = b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"
"""Postfix's answer to a line its ``smtpd_forbidden_commands`` name (by default
``CONNECT``, ``GET``, ``POST`` and a line that does not start with a letter), before
it closes the connection."""
GET = b"GET / HTTP/1.1\r\n"
BOB = parse_mailbox("bob@pqr.example")


def goodbye_on(verb: bytes, goodbye: bytes | None) -> Callable[[socket.socket], None]:
    """250 to every line but one that starts with ``verb``: that one gets ``goodbye``
    (nothing if None), and then the server closes, reading on only to give the
    player an orderly end of stream rather than a reset."""

    def answer(line: bytes) -> bytes | None:
        return goodbye if line.startswith(verb) else b"250 ok\r\n"

    def serve_one(sock: socket.socket) -> None:
        line_server(b"220 hi\r\n", answer, last=verb)(sock)
        sock.shutdown(socket.SHUT_WR)
        for _ in range(1000):  # until the player hangs up
            if not sock.recv(65536):
                return

    return serve_one


@pytest.mark.parametrize(
    ("verb", "goodbye", "groups", "codes"),
    [
        (b"GET ", POSTFIX_GOODBYE, ((GET,), (Mail(None), Rcpt(BOB), Noop())), [220, 250, 221]),
        (b"GET ", POSTFIX_GOODBYE, ((Mail(None), GET, Rcpt(BOB), Noop()),), [220, 250, 250, 221]),
        (
            b"RCPT",
            b"421 4.7.0 mx.pqr.example Error: too many errors\r\n",
            ((Mail(None), Rcpt(BOB), Noop()), (Rset(),)),
            [220, 250, 250, 421],
        ),
    ],
    ids=["221 then later groups", "221 inside a pipelined group", "421"],
)
def test_a_server_that_ends_the_session_with_221_or_421_owes_nothing_after_it(
    verb: bytes, goodbye: bytes, groups: tuple[tuple[Event | bytes, ...], ...], codes: list[int]
) -> None:
    """Postfix answers ``GET / HTTP/1.1`` with 221 and closes; any server may end the
    session with 421 (RFC 5321 §3.8). The replies owed after the one that announced
    the close are owed no more: nothing is missing, and ``stopped`` says who ended
    the session, with which reply."""
    session = ClientSession(
        ((Ehlo("client.test"),), *groups, (Quit(),)),
        frozenset({"PIPELINING"}),
    )
    with listening(goodbye_on(verb, goodbye)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=2)
    assert played.codes == codes, played
    assert played.missing == 0 and played.surplus == 0 and played.closed, played
    assert played.owed == len(codes), played
    assert played.stopped.startswith(f"the server ended the session with {codes[-1]}"), played
    assert goodbye.decode().rstrip() in played.stopped, played


def test_a_221_to_a_line_the_server_split_at_a_bare_lf_ends_the_session_too() -> None:
    """Postfix reads ``NOOP`` LF ``GET ...`` as two lines: 250, then its 221 and the
    close, here written at once, so the 221 is waiting before the next group and is
    owed to no command (counted in ``surplus``); the next group's replies are owed no
    more."""

    def serve_one(sock: socket.socket) -> None:
        buffer = b""
        for data in reads(sock):
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                parts = line.split(b"\n")
                goodbye = [part.startswith(b"GET ") for part in parts]
                sock.sendall(
                    b"".join(POSTFIX_GOODBYE if bye else b"250 ok\r\n" for bye in goodbye)
                )
                if any(goodbye):
                    sock.shutdown(socket.SHUT_WR)
                    for _ in range(1000):  # until the player hangs up
                        if not sock.recv(65536):
                            return
                    return

    session = ClientSession(
        ((Ehlo("client.test"),), (b"NOOP\n" + GET,), (Mail(None), Rcpt(BOB)), (Quit(),)),
        frozenset({"PIPELINING"}),
    )
    with listening(serve_one) as (host, port):
        played = play_smtp_session(host, port, session, timeout=2)
    assert played.codes == [220, 250, 250, 221], played
    assert played.missing == 0 and played.surplus == 1 and played.closed, played
    assert played.owed == 3, played
    assert played.stopped.startswith("the server ended the session with 221"), played


def dropping(drop: bytes, goodbye: bytes = b"221 bye\r\n") -> Callable[[socket.socket], None]:
    """250 to every line, 354 to DATA and 250 to the end of its content, but nothing
    to a line that starts with ``drop`` (``.`` for the end of the content); QUIT gets
    ``goodbye``, and then the server closes."""

    def serve_one(sock: socket.socket) -> None:
        buffer, content = b"", False
        for data in reads(sock):
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                if content and line != b".":
                    continue
                reply = b"250 ok\r\n"
                if line.upper().startswith(b"QUIT"):
                    reply = goodbye
                elif line.upper().startswith(b"DATA"):
                    reply = b"354 go\r\n"
                content = line.upper().startswith(b"DATA")
                if not line.upper().startswith(drop):
                    sock.sendall(reply)
                if reply == goodbye:
                    sock.shutdown(socket.SHUT_WR)
                    for _ in range(1000):  # until the player hangs up
                        if not sock.recv(65536):
                            return
                    return

    return serve_one


@pytest.mark.parametrize(
    ("drop", "goodbye", "groups", "codes"),
    [
        (
            b".",
            b"221 bye\r\n",
            ((Mail(None), Rcpt(BOB), Data()), (MessageData(b"hi\r\n"), EndOfMessage(), Quit())),
            [220, 250, 250, 250, 354, 221],
        ),
        (b"RSET", b"221 bye\r\n", ((Rset(), Quit()),), [220, 250, 221]),
        (b"RSET", b"421 closing\r\n", ((Rset(), Quit()),), [220, 250, 421]),
        (b"RSET", b"221 bye\r\n", ((Rset(), b"XJUNK\r\n", Quit()),), [220, 250, 250, 221]),
    ],
    ids=[
        "221 after a dropped end of data",
        "221 after a dropped RSET",
        "421 after a dropped RSET",
        "221 after a dropped RSET and a hostile line",
    ],
)
def test_a_reply_dropped_before_quits_221_or_421_is_missing(
    drop: bytes,
    goodbye: bytes,
    groups: tuple[tuple[Event | bytes, ...], ...],
    codes: list[int],
) -> None:
    """A server that drops a reply and then answers the QUIT pipelined after it and
    closes: its 221 or 421 is paired with the line whose reply was dropped (or with a
    hostile line no server ends a session for), not with QUIT, so it did not end the
    session there, and a reply is missing."""
    session = ClientSession(((Ehlo("client.test"),), *groups), frozenset({"PIPELINING"}))
    with listening(dropping(drop, goodbye)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=2)
    assert played.codes == codes, played
    assert played.missing == 1 and played.closed, played
    assert played.stopped.startswith("the server closed the connection before its replies"), played


@pytest.mark.parametrize("goodbye", [b"221 bye\r\n", b"421 closing\r\n"])
def test_quits_own_221_or_421_after_every_reply_misses_nothing(goodbye: bytes) -> None:
    session = ClientSession(((Ehlo("client.test"),), (Rset(), Quit())), frozenset({"PIPELINING"}))
    with listening(dropping(b"NOTHING", goodbye)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=2)
    assert played.codes == [220, 250, 250, int(goodbye[:3])], played
    assert played.missing == 0 and played.surplus == 0 and played.closed, played


def test_a_smuggled_quit_answered_221_does_not_end_the_session() -> None:
    """LF.LF ends DATA, the smuggled QUIT gets 221 and the server closes: the 221 is
    paired with the MAIL pipelined after the end of the message, so the replies to
    it and to RCPT are missing, not owed no more."""
    session = ClientSession(
        (
            (Ehlo("client.test"),),
            (Mail(None), Rcpt(BOB), Data()),
            (MessageData(b"a\n.\nQUIT\r\nb\r\n"), EndOfMessage(), Mail(None), Rcpt(BOB)),
            (Quit(),),
        ),
        frozenset({"PIPELINING"}),
    )
    with serve(LfDotLfServer) as server:
        played = play_smtp_session(server.host, server.port, session, timeout=2)
    assert played.codes == [220, 250, 250, 250, 354, 250, 221], played
    assert played.missing == 1 and played.closed, played
    assert "ended the session" not in played.stopped, played


@pytest.mark.parametrize(
    "last_reply", [None, b"500 5.5.2 Error: command not recognized\r\n"], ids=["none", "500"]
)
def test_a_server_that_closes_without_announcing_it_is_still_reported(
    last_reply: bytes | None,
) -> None:
    """A close after no reply, or after one that does not say the session ends, leaves
    the replies owed missing: RFC 5321 §3.8 closes a session with 221 or 421."""
    session = ClientSession(
        ((Ehlo("client.test"),), (GET,), (Noop(),), (Quit(),)), frozenset({"PIPELINING"})
    )
    with listening(goodbye_on(b"GET ", last_reply)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=2)
    assert played.closed and played.missing == 1, played
    group = "group 2" if last_reply is None else "group 3"
    assert played.stopped.startswith(
        f"the server closed the connection before its replies to {group}"
    ), played


def test_a_221_to_a_command_from_a_server_that_does_not_close_is_still_reported() -> None:
    """221 to GET, but the server neither closes nor answers what follows: the
    replies owed after it are missing, as with any stall."""
    said_goodbye: list[bytes] = []

    def answer(line: bytes) -> bytes | None:
        if said_goodbye:
            return None
        if line.startswith(b"GET "):
            said_goodbye.append(line)
            return POSTFIX_GOODBYE
        return b"250 ok\r\n"

    session = ClientSession(
        ((Ehlo("client.test"),), (GET,), (Noop(),), (Quit(),)), frozenset({"PIPELINING"})
    )
    with listening(line_server(b"220 hi\r\n", answer)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=0.5)
    assert played.codes == [220, 250, 221] and played.missing == 1, played
    assert not played.closed, played
    assert played.stopped.startswith("no whole reply within 0.5 s to group 3"), played


def test_an_endless_pop3_greeting_line_ends_the_play_with_a_reason() -> None:
    with listening(lambda sock: flood(sock, b"+OK " + b"x" * 65536, past=MAX_REPLY)) as (
        host,
        port,
    ):
        played = play_pop3_session(
            host, port, POP3Session(((pop3.Quit(),),)), timeout=FLOOD_TIMEOUT
        )
    assert played.responses == () and played.sent == () and not played.closed
    assert played.stopped.startswith("the server broke the protocol"), played.stopped
    assert played.error is not None


def pop3_answer(noop: bytes, bye: bytes = b"+OK bye\r\n") -> Callable[[bytes], bytes]:
    """``+OK`` to everything, ``noop`` to NOOP and ``bye`` to QUIT."""

    def answer(line: bytes) -> bytes:
        if line.startswith(b"QUIT"):
            return bye
        return noop if line.startswith(b"NOOP") else b"+OK\r\n"

    return answer


LOGIN_NOOP_STAT = POP3Session(
    ((pop3.User("a"),), (pop3.Pass("b"),), (pop3.Noop(),), (pop3.Stat(),), (pop3.Quit(),))
)


@pytest.mark.parametrize(
    ("greeting", "noop"),
    [(b"+OK ready\r\n", b"+OK\r\n+OK\r\n"), (b"+OK ready\r\n+OK again\r\n", b"+OK\r\n")],
    ids=["NOOP answered twice", "greeting and an extra line"],
)
def test_an_extra_pop3_response_ends_the_play_with_a_reason(greeting: bytes, noop: bytes) -> None:
    with listening(line_server(greeting, pop3_answer(noop))) as (host, port):
        played = play_pop3_session(host, port, LOGIN_NOOP_STAT, timeout=2)
    assert played.stopped == (
        "the server broke the protocol: the server sent a response no command asked for"
    ), played
    assert played.error == "the server sent a response no command asked for"
    assert played.unanswered == ()
    assert pop3.Quit() not in played.sent


def test_pass_after_a_refused_user_is_left_out_and_the_rest_of_its_group_goes() -> None:
    """USER refused: PASS must not follow (RFC 1939 §7), but the QUIT pipelined with
    it (RFC 2449 §6.6) still goes, and the server that closes after it is not blamed."""

    def refuse_user(line: bytes) -> bytes:
        return b"-ERR no such mailbox\r\n" if line.startswith(b"USER") else b"+OK bye\r\n"

    session = POP3Session(((pop3.User("a"),), (pop3.Pass("b"), pop3.Quit())))
    with listening(line_server(b"+OK ready\r\n", refuse_user)) as (host, port):
        played = play_pop3_session(host, port, session, timeout=1)
    assert played.sent == (pop3.User("a"), pop3.Quit()), played
    assert played.unanswered == () and played.error is None and played.closed, played
    assert played.stopped == "the server closed the connection after the session", played


@pytest.mark.parametrize(
    "bye",
    [[b"+OK bye\r\n-ERR junk\r\n"], [b"+OK bye\r\n", b"-ERR junk\r\n"]],
    ids=["same write", "separate writes"],
)
def test_bytes_after_quits_answer_are_an_error_however_they_are_written(
    bye: list[bytes],
) -> None:
    def serve_one(sock: socket.socket) -> None:
        line_server(b"+OK ready\r\n", pop3_answer(b"+OK\r\n", bye[0]))(sock)
        for more in bye[1:]:
            time.sleep(0.05)
            sock.sendall(more)

    session = POP3Session(((pop3.User("a"),), (pop3.Quit(),)))
    with listening(serve_one) as (host, port):
        played = play_pop3_session(host, port, session, timeout=2)
    assert played.error == "the server sent 11 octets no command asked for", played
    assert played.closed


def stat_then_close(line: bytes) -> bytes | None:
    """What a server that closes after STAT answers."""
    return b"+OK 0 0\r\n" if line.startswith(b"STAT") else b"+OK\r\n"


def test_a_pop3_server_that_closes_mid_session_is_reported_at_that_group() -> None:
    """STAT answered, DELE read and the connection closed: DELE goes unanswered and
    QUIT is never sent, which is not 'closed after the session'."""
    session = POP3Session(
        ((pop3.User("a"),), (pop3.Pass("b"),), (pop3.Stat(),), (pop3.Dele(1),), (pop3.Quit(),))
    )
    unanswered_dele = line_server(
        b"+OK ready\r\n",
        lambda line: None if line.startswith(b"DELE") else stat_then_close(line),
        last=b"DELE",
    )
    with listening(unanswered_dele) as (host, port):
        played = play_pop3_session(host, port, session, timeout=2)
    assert played.closed and played.unanswered == (pop3.Dele(1),)
    assert played.stopped == (
        "the server closed the connection before answering group 4 of 5 (DELE)"
    ), played.stopped


def test_a_pop3_server_that_closes_instead_of_answering_quit_is_reported() -> None:
    session = POP3Session(((pop3.User("a"),), (pop3.Pass("b"),), (pop3.Stat(),), (pop3.Quit(),)))
    with listening(line_server(b"+OK ready\r\n", stat_then_close, last=b"STAT")) as (host, port):
        played = play_pop3_session(host, port, session, timeout=2)
    assert played.closed and played.unanswered == (pop3.Quit(),)
    assert played.stopped == (
        "the server closed the connection before answering group 4 of 4 (QUIT)"
    ), played.stopped


def test_a_pop3_server_that_closes_after_its_greeting_is_reported() -> None:
    def greet_and_close(sock: socket.socket) -> None:
        sock.sendall(b"+OK ready\r\n")

    with listening(greet_and_close) as (host, port):
        played = play_pop3_session(host, port, LOGIN_NOOP_STAT, timeout=2)
    assert played.closed and len(played.responses) == 1
    assert played.stopped in {
        # The close is read with the greeting, or USER is written first.
        "the server closed the connection after the greeting, before the session ended",
        "the server closed the connection before answering group 1 of 5 (USER)",
    }, played.stopped


# -- transcripts show every generated byte ---------------------------------------------


def smtp_challenging_auth(line: bytes) -> bytes:
    """334 to AUTH, 221 to QUIT, 354 to DATA and 250 to the rest (content lines too)."""
    for verb, reply in (
        (b"AUTH", b"334 \r\n"),
        (b"QUIT", b"221 bye\r\n"),
        (b"DATA", b"354 go\r\n"),
    ):
        if line.startswith(verb):
            return reply
    return b"250 ok\r\n"


def test_generated_auth_lines_and_content_show_byte_for_byte_in_the_smtp_transcript() -> None:
    """A fuzzed session's AUTH line, its answer to a 334 and content lines that look
    like credentials are data the player made, not secrets: the transcript shows
    each write whole, as one entry, so a server that dies on one shows what killed it."""
    content = b"Subject: x\r\n\r\nhi\n.\nauth plain AGEAYg==\r\nPASS x\r\n" * 200
    session = ClientSession(
        (
            (Ehlo("client.test"),),
            (b"AUTH PLAIN Zm9v!#\r\n",),
            (b"c2VjcmV0\r\n",),
            (Mail(parse_path("<a@b.example>")), Rcpt(parse_mailbox("c@d.example")), Data()),
            (MessageData(content), EndOfMessage()),
            (Quit(),),
        ),
        frozenset(),
    )
    with listening(line_server(b"220 hi\r\n", smtp_challenging_auth)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=2)
    written = [entry.data for entry in played.transcript if entry.side == "client"]
    assert b"AUTH PLAIN Zm9v!#\r\n" in written and b"c2VjcmV0\r\n" in written, written
    assert content + b".\r\n" in written, "the content is one write, shown whole"
    assert "C: b'AUTH PLAIN Zm9v!#\\r\\n'" in str(played)
    assert "<hidden>" not in str(played)


def test_a_generated_answer_to_a_pop3_challenge_shows_byte_for_byte() -> None:
    def answer(line: bytes) -> bytes:
        if line.startswith(b"QUIT"):
            return b"+OK bye\r\n"
        if line.startswith(b"USER"):
            return b"+OK\r\n"
        return b"+ \r\n" if line.startswith(b"AUTH") else b"-ERR no\r\n"

    response = b"\xff=\x00a\x00b"
    login = ((pop3.User("mrose"),), (pop3.Pass("hunter2"),))
    challenged = ((pop3.Auth("PLAIN"),), (pop3.AuthResponse(response),), (pop3.Quit(),))
    session = POP3Session((*login, *challenged))
    with listening(line_server(b"+OK ready\r\n", answer)) as (host, port):
        played = play_pop3_session(host, port, session, timeout=2)
    written = [entry.data for entry in played.transcript if entry.side == "client"]
    assert base64.b64encode(response) + b"\r\n" in written, written
    assert b"PASS hunter2\r\n" in written, written
    assert "<hidden>" not in str(played)


def test_each_group_has_one_deadline_so_the_play_keeps_its_bound() -> None:
    """A server that answers every reply just under the timeout: each reply would
    be in time, but a pipelined group of ten replies would take ten timeouts. The
    whole play stays within one timeout for the connection and greeting, one per
    group and one for the close."""
    timeout = 0.5

    def slow(line: bytes) -> bytes:
        time.sleep(0.8 * timeout)
        return b"354 go\r\n" if line.startswith(b"DATA") else b"250 ok\r\n"

    def serve_one(sock: socket.socket) -> None:
        time.sleep(0.8 * timeout)
        line_server(b"220 hi\r\n", slow)(sock)

    recipients = tuple(Rcpt(parse_mailbox(f"u{number}@x.example")) for number in range(8))
    session = ClientSession(
        ((Ehlo("client.test"),), (Mail(None), *recipients, Data()), (Quit(),)),
        frozenset({"PIPELINING"}),
    )
    with listening(serve_one) as (host, port):
        started = time.monotonic()
        played = play_smtp_session(host, port, session, timeout=timeout)
        took = time.monotonic() - started
    assert took <= (len(session.groups) + 2) * timeout + 0.2, took
    assert played.codes[:2] == [220, 250] and played.missing > 0, played
    assert "group 2" in played.stopped


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        (b"GET / HTTP/1.1\r\n", True),
        (b"post /x HTTP/1.0\r\n", True),
        (b"CONNECT mx:25 HTTP/1.1\r\n", True),
        (b"\x16\x03\x01\x02\x00\r\n", True),
        (b"XJUNK\r\n", False),
        (b"\r\n", False),
        (b"GETX\r\n", False),
    ],
)
def test_the_lines_a_server_may_end_the_session_for_are_postfixs_web_requests(
    line: bytes, refused: bool
) -> None:
    """Postfix's ``smtpd_forbidden_commands``: ``CONNECT``, ``GET``, ``POST`` and a
    command that starts with no letter get 221 and a close; any other line does not."""
    assert refused_as_a_web_request(line) is refused


def _data_with_no_recipient_session() -> ClientSession:
    return ClientSession(
        (
            (Ehlo("client.abc.example"),),
            (Mail(None), b"DATA x\r\n", Rcpt(parse_mailbox("bob@pqr.example")), Data()),
            (MessageData(b"Subject: x\r\n"), EndOfMessage()),
            (Quit(),),
        ),
        frozenset({"PIPELINING"}),
    )


def test_a_354_to_data_with_no_recipient_is_named_for_what_it_is() -> None:
    """The server reads the commands after its 354 as content, so a later reply never
    comes: the stop says why, not only "no whole reply within 2 s"."""
    with serve(DataWithoutRecipientServer) as server:
        played = play_smtp_session(
            server.host, server.port, _data_with_no_recipient_session(), timeout=2
        )
    assert played.codes == [220, 250, 250, 354], played
    assert played.stopped == (
        "the server accepted DATA with no recipient (a line holding hostile bytes got 354"
        " where no RCPT had been accepted since the transaction began; 503 or 554"
        " expected, RFC 5321 §3.3, §4.1.4), so it read what followed as content: no"
        " whole reply within 2 s to group 2 (Mail, b'DATA x\\r\\n', Rcpt, Data)"
    ), played.stopped
    assert played.missing == 2, played


def test_a_refused_data_with_no_recipient_plays_on() -> None:
    with serve(SmallServer) as server:
        played = play_smtp_session(
            server.host, server.port, _data_with_no_recipient_session(), timeout=2
        )
    assert played.codes == [220, 250, 250, 554, 250, 354, 250, 221], played
    assert played.missing == 0 and played.closed, played
