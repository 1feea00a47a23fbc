"""The POP3 client machine: responses, multi-line content, pipelining, STLS, limits."""

# mypy narrows `conn.state` after an assert and does not see that send() changes it.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore import NEED_DATA, PAUSED, LocalProtocolError, RemoteProtocolError
from smtpcore.pop3 import (
    Apop,
    Auth,
    AuthMechanisms,
    AuthResponse,
    Capa,
    ClientConnection,
    Command,
    ConnectionClosed,
    Continue,
    Dele,
    EndOfResponse,
    Err,
    Event,
    List,
    Noop,
    Ok,
    Pass,
    Quit,
    ResponseData,
    Retr,
    Rset,
    Stat,
    State,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
    apop_digest,
)
from smtpcore.testing import strategies as sst


def greeted(**options: Any) -> ClientConnection:
    conn = ClientConnection("client.abc.example", **options)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n")
    assert conn.next_event() == Ok("POP3 server ready <1896.697170952@dbc.mtview.ca.us>")
    assert conn.state is State.AUTHORIZATION
    return conn


def drain(conn: ClientConnection) -> list[Event]:
    """Every event available now, multi-line content merged into one chunk."""
    out: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return out
        if isinstance(event, ConnectionClosed):
            out.append(event)
            return out
        if isinstance(event, ResponseData) and out and isinstance(out[-1], ResponseData):
            out[-1] = ResponseData(out[-1].data + event.data)
        else:
            out.append(event)


def exchange(conn: ClientConnection, command: Event, answer: bytes) -> list[Event]:
    conn.send(command)
    conn.receive_data(answer)
    return drain(conn)


def logged_in(**options: Any) -> ClientConnection:
    conn = greeted(**options)
    assert exchange(conn, User("mrose"), b"+OK\r\n") == [Ok()]
    assert exchange(conn, Pass("secret"), b"+OK ready\r\n") == [Ok("ready")]
    assert conn.state is State.TRANSACTION
    return conn


class TestGreeting:
    def test_apop_timestamp(self) -> None:
        conn = greeted()
        assert conn.apop_timestamp == "<1896.697170952@dbc.mtview.ca.us>"
        digest = apop_digest(conn.apop_timestamp, "tanstaaf")
        assert digest == "c4c9334bac560ecc979e58001b3e22fb"
        assert conn.send(Apop("mrose", digest)) == (
            b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
        )

    def test_no_command_before_the_greeting(self) -> None:
        conn = ClientConnection("client.abc.example")
        with pytest.raises(LocalProtocolError):
            conn.send(Capa())

    def test_err_greeting(self) -> None:
        conn = ClientConnection("client.abc.example")
        conn.receive_data(b"-ERR [SYS/TEMP] too busy\r\n")
        assert conn.next_event() == Err("too busy", code="SYS/TEMP")
        assert conn.state is State.CLOSED
        assert conn.next_event() == ConnectionClosed()

    @pytest.mark.parametrize("line", [b"* OK IMAP4rev1\r\n", b"220 mx ESMTP\r\n", b"+OKAY\r\n"])
    def test_not_a_pop3_server(self, line: bytes) -> None:
        conn = ClientConnection("client.abc.example")
        conn.receive_data(line)
        with pytest.raises(RemoteProtocolError):
            conn.next_event()
        assert conn.state is State.ERROR
        with pytest.raises(RemoteProtocolError):
            conn.next_event()


MULTILINE = [Capa(), List(), Uidl(), Retr(1), Top(1, 0)]
SINGLE = [Stat(), List(1), Uidl(1), Dele(1), Noop(), Rset()]


@pytest.mark.parametrize("command", MULTILINE, ids=repr)
def test_multiline_answers(command: Command) -> None:
    conn = logged_in()
    events = exchange(conn, command, b"+OK\r\n1 abc\r\n..dot\r\n.\r\n")
    assert events == [Ok(), ResponseData(b"1 abc\r\n.dot\r\n"), EndOfResponse()]
    assert conn.next_event() is PAUSED


@pytest.mark.parametrize("command", SINGLE, ids=repr)
def test_single_line_answers(command: Command) -> None:
    conn = logged_in()
    assert exchange(conn, command, b"+OK 1 120\r\n") == [Ok("1 120")]
    assert conn.next_event() is PAUSED


@pytest.mark.parametrize("command", [*MULTILINE, *SINGLE], ids=repr)
def test_err_answers_are_single_lines(command: Command) -> None:
    conn = logged_in()
    assert exchange(conn, command, b"-ERR no such message\r\n") == [Err("no such message")]
    assert conn.state is State.TRANSACTION


def test_response_codes() -> None:
    conn = greeted()
    assert exchange(conn, User("mrose"), b"+OK\r\n") == [Ok()]
    events = exchange(
        conn, Pass("x"), b"-ERR [IN-USE] Do you have another POP session running?\r\n"
    )
    assert events == [Err("Do you have another POP session running?", code="IN-USE")]
    assert conn.state is State.AUTHORIZATION


def test_content_split_anywhere_and_dot_lines() -> None:
    conn = logged_in()
    conn.send(Retr(1))
    wire = b"+OK 2 octets\r\n\r\n..\r\n...x\r\n.\r\n"
    out = b""
    events = []
    for i in range(len(wire)):
        conn.receive_data(wire[i : i + 1])
        for event in drain(conn):
            if isinstance(event, ResponseData):
                out += event.data
            else:
                events.append(event)
    assert events == [Ok("2 octets"), EndOfResponse()]
    assert out == b"\r\n.\r\n..x\r\n"


def test_empty_content() -> None:
    conn = logged_in()
    assert exchange(conn, List(), b"+OK 0 messages\r\n.\r\n") == [
        Ok("0 messages"),
        EndOfResponse(),
    ]


def test_status_lines_ending_in_lf_alone_are_read() -> None:
    conn = logged_in()
    assert exchange(conn, Stat(), b"+OK 2 320\n") == [Ok("2 320")]


def test_unreadable_text_is_kept_readable() -> None:
    conn = logged_in()
    assert exchange(conn, Noop(), b"+OK caf\xe9\x07 ok\r\n") == [Ok("caf\ufffd\ufffd ok")]


@pytest.mark.parametrize("char", ["\x9b", "\x85", "\u2028", "\u202e", "\u2066"])
def test_a_status_line_masks_every_character_unsafe_in_text(char: str) -> None:
    """RFC 5198 §2, as the SMTP reply parser does: a C1 control (the 8-bit CSI, which
    xterm obeys), a line separator or a bidi override is no text."""
    conn = logged_in()
    line = f"+OK a{char}b\tc\r\n".encode()
    assert exchange(conn, Noop(), line) == [Ok("a\ufffdb\tc")]


class TestPipelining:
    def test_one_at_a_time_without_pipelining(self) -> None:
        conn = logged_in()
        conn.send(Stat())
        with pytest.raises(LocalProtocolError):
            conn.send(Stat())
        conn.receive_data(b"+OK 0 0\r\n")
        assert drain(conn) == [Ok("0 0")]
        conn.send(Retr(1))
        conn.receive_data(b"+OK\r\npart")
        assert drain(conn) == [Ok(), ResponseData(b"part")]
        with pytest.raises(LocalProtocolError):
            conn.send(Stat())  # the content is still coming

    def test_capa_turns_pipelining_on(self) -> None:
        conn = greeted()
        assert not conn.pipelining
        events = exchange(conn, Capa(), b"+OK\r\nTOP\r\nPIPELINING\r\nSASL PLAIN LOGIN\r\n.\r\n")
        assert events[-1] == EndOfResponse()
        assert conn.capabilities == {"TOP": (), "PIPELINING": (), "SASL": ("PLAIN", "LOGIN")}
        assert conn.pipelining
        wire = conn.send(User("mrose")) + conn.send(Pass("secret"))
        assert wire == b"USER mrose\r\nPASS secret\r\n"
        conn.receive_data(b"+OK\r\n+OK logged in\r\n")
        assert drain(conn) == [Ok(), Ok("logged in")]
        assert conn.state is State.TRANSACTION
        wire = b"".join(conn.send(c) for c in (Stat(), Retr(1), Dele(1), Retr(2), Quit()))
        assert wire == b"STAT\r\nRETR 1\r\nDELE 1\r\nRETR 2\r\nQUIT\r\n"
        assert len(conn.outstanding) == 5
        conn.receive_data(b"+OK 2 9\r\n+OK\r\nfirst\r\n.\r\n+OK\r\n-ERR no\r\n+OK bye\r\n")
        events = drain(conn)
        assert events == [
            Ok("2 9"),
            Ok(),
            ResponseData(b"first\r\n"),
            EndOfResponse(),
            Ok(),
            Err("no"),
            Ok("bye"),
            ConnectionClosed(),
        ]
        assert conn.answered == Quit()
        assert conn.state is State.CLOSED

    def test_quit_pipelined_while_content_streams(self) -> None:
        conn = logged_in(pipelining=True)
        conn.send(Retr(1))
        conn.receive_data(b"+OK\r\nhalf")
        assert drain(conn) == [Ok(), ResponseData(b"half")]
        conn.send(Quit())
        assert conn.state is State.TRANSACTION  # QUIT is not answered next: RETR's end is
        conn.receive_data(b"\r\n.\r\n+OK bye\r\n")
        assert drain(conn) == [
            ResponseData(b"\r\n"),
            EndOfResponse(),
            Ok("bye"),
            ConnectionClosed(),
        ]

    def test_forced_off(self) -> None:
        conn = greeted(pipelining=False)
        exchange(conn, Capa(), b"+OK\r\nPIPELINING\r\n.\r\n")
        assert not conn.pipelining
        conn.send(User("u"))
        with pytest.raises(LocalProtocolError):
            conn.send(Pass("p"))

    @pytest.mark.parametrize("barrier", [Stls(), Auth("PLAIN"), Quit()], ids=repr)
    def test_nothing_behind_a_state_changing_barrier(self, barrier: Command) -> None:
        """RFC 2449 §6.6: STLS, AUTH and QUIT end a pipeline."""
        conn = greeted(pipelining=True)
        conn.send(barrier)
        with pytest.raises(LocalProtocolError):
            conn.send(Capa())

    def test_server_answering_ok_where_it_should_not(self) -> None:
        conn = greeted(pipelining=True)
        conn.send(User("mrose"))
        conn.send(Pass("secret"))
        conn.receive_data(b"-ERR no such user\r\n+OK logged in anyway\r\n")
        assert conn.next_event() == Err("no such user")
        with pytest.raises(RemoteProtocolError):
            conn.next_event()

    def test_server_challenging_an_auth_sent_behind_an_accepted_pass(self) -> None:
        """AUTH pipelined behind PASS is for a PASS that fails; once PASS is accepted a
        challenge to it is the server's error, not an assertion of the machine's."""
        conn = greeted(pipelining=True)
        conn.send(User("mrose"))
        conn.send(Pass("secret"))
        conn.send(Auth("PLAIN"))
        conn.receive_data(b"+OK\r\n+OK logged in\r\n+ \r\n")
        assert conn.next_event() == Ok()
        assert conn.next_event() == Ok("logged in")
        with pytest.raises(RemoteProtocolError, match="continuation to Auth"):
            conn.next_event()


class TestStates:
    @pytest.mark.parametrize(
        "command", [Pass("x"), Stat(), List(), Retr(1), Dele(1), Noop(), Rset(), Top(1, 1)]
    )
    def test_not_before_login(self, command: Command) -> None:
        conn = greeted()
        with pytest.raises(LocalProtocolError):
            conn.send(command)
        assert conn.outstanding == ()

    @pytest.mark.parametrize(
        "command", [User("x"), Pass("x"), Apop("x", "0" * 32), Auth("PLAIN"), Stls(), Utf8()]
    )
    def test_not_after_login(self, command: Command) -> None:
        conn = logged_in()
        with pytest.raises(LocalProtocolError):
            conn.send(command)

    def test_quit_enters_update_until_answered(self) -> None:
        conn = logged_in()
        conn.send(Quit())
        assert conn.state is State.UPDATE
        conn.receive_data(b"+OK bye\r\n")
        assert conn.next_event() == Ok("bye")
        assert conn.state is State.CLOSED

    def test_command_line_limit(self) -> None:
        conn = greeted()
        with pytest.raises(LocalProtocolError):
            conn.send(User("u" * 260))
        assert conn.outstanding == ()

    def test_utf8(self) -> None:
        conn = greeted()
        exchange(conn, Utf8(), b"+OK UTF8 enabled\r\n")
        assert conn.utf8

    def test_only_commands_are_sent(self) -> None:
        conn = greeted()
        with pytest.raises(LocalProtocolError):
            conn.send(Ok())

    def test_send_failed(self) -> None:
        conn = greeted()
        conn.send_failed()
        assert conn.state is State.ERROR

    def test_bytes_in_error_are_not_kept(self) -> None:
        """A machine in ERROR reads no more: what comes is dropped, not buffered
        without bound."""
        conn = greeted()
        conn.send_failed()
        conn.receive_data(b"+OK " + b"x" * 100_000)
        assert conn.buffered == 0


class TestAuth:
    def test_exchange(self) -> None:
        conn = greeted()
        assert conn.send(Auth("LOGIN")) == b"AUTH LOGIN\r\n"
        with pytest.raises(LocalProtocolError):
            conn.send(AuthResponse(b"early"))
        conn.receive_data(b"+ VXNlcm5hbWU6\r\n")
        assert conn.next_event() == Continue(b"Username:")
        assert conn.state is State.SASL
        assert conn.next_event() is PAUSED
        with pytest.raises(LocalProtocolError):
            conn.send(Stat())
        assert conn.send(AuthResponse(b"mrose")) == b"bXJvc2U=\r\n"
        with pytest.raises(LocalProtocolError):
            conn.send(AuthResponse(b"twice"))
        conn.receive_data(b"+\r\n")
        assert conn.next_event() == Continue(b"")
        conn.send(AuthResponse(b"secret"))
        conn.receive_data(b"+OK logged in\r\n")
        assert conn.next_event() == Ok("logged in")
        assert conn.state is State.TRANSACTION

    def test_cancel(self) -> None:
        conn = greeted()
        conn.send(Auth("PLAIN"))
        conn.receive_data(b"+ \r\n")
        assert conn.next_event() == Continue(b"")
        assert conn.send(AuthResponse(cancel=True)) == b"*\r\n"
        conn.receive_data(b"-ERR [AUTH] cancelled\r\n")
        assert conn.next_event() == Err("cancelled", code="AUTH")
        assert conn.state is State.AUTHORIZATION

    def test_initial_response(self) -> None:
        conn = greeted()
        assert conn.send(Auth("PLAIN", b"\x00u\x00p")) == b"AUTH PLAIN AHUAcA==\r\n"
        conn.receive_data(b"+OK\r\n")
        assert conn.next_event() == Ok()
        assert conn.state is State.TRANSACTION

    def test_invalid_challenge(self) -> None:
        conn = greeted()
        conn.send(Auth("PLAIN"))
        conn.receive_data(b"+ !!!\r\n")
        with pytest.raises(RemoteProtocolError):
            conn.next_event()

    def test_continuation_outside_auth(self) -> None:
        conn = logged_in()
        conn.send(Stat())
        conn.receive_data(b"+ abcd\r\n")
        with pytest.raises(RemoteProtocolError):
            conn.next_event()


class TestStls:
    def test_injected_responses_after_stls_are_discarded(self) -> None:
        """RFC 2595 §4: a response queued behind the STLS +OK came from before TLS."""
        conn = greeted()
        conn.send(Stls())
        conn.receive_data(b"+OK Begin TLS\r\n+OK 99 injected\r\n-ERR x\r\n")
        assert conn.next_event() == Ok("Begin TLS")
        assert conn.state is State.TLS_PENDING
        assert conn.next_event() is PAUSED
        conn.receive_data(b"+OK more plaintext\r\n")
        with pytest.raises(LocalProtocolError):
            conn.send(Capa())
        conn.tls_started()
        assert conn.tls
        assert conn.state is State.AUTHORIZATION
        assert conn.next_event() is PAUSED
        assert exchange(conn, Capa(), b"+OK\r\nUSER\r\n.\r\n")[0] == Ok()

    def test_a_server_that_leaves_before_the_handshake_closes_the_session(self) -> None:
        """End of file while the TLS handshake is awaited: ConnectionClosed, as
        anywhere else, not PAUSED for ever."""
        conn = greeted()
        exchange(conn, Stls(), b"+OK\r\n")
        assert conn.state is State.TLS_PENDING
        conn.receive_data(b"")
        assert conn.next_event() == ConnectionClosed()
        assert conn.state.name == "CLOSED"  # .name: mypy kept the earlier narrowing

    def test_capabilities_are_forgotten(self) -> None:
        conn = greeted()
        exchange(conn, Capa(), b"+OK\r\nSTLS\r\nPIPELINING\r\n.\r\n")
        assert conn.capabilities is not None
        exchange(conn, Stls(), b"+OK\r\n")
        conn.tls_started()
        assert conn.capabilities is None
        assert not conn.pipelining

    def test_refused_stls(self) -> None:
        conn = greeted()
        assert exchange(conn, Stls(), b"-ERR not now\r\n") == [Err("not now")]
        assert conn.state is State.AUTHORIZATION
        with pytest.raises(LocalProtocolError):
            conn.tls_started()


class TestBareAuth:
    """``AUTH`` with no argument is defined by no RFC: Dovecot answers a listing, other
    servers one line. A client that pipelined behind it, or read one line as the start
    of a listing, took the next answer for the mechanisms and waited for ever."""

    def test_the_listing_is_read(self) -> None:
        conn = greeted(pipelining=True)
        events = exchange(conn, AuthMechanisms(), b"+OK\r\nPLAIN\r\nscram-sha-256\r\n.\r\n")
        assert events == [Ok(), ResponseData(b"PLAIN\r\nscram-sha-256\r\n"), EndOfResponse()]
        assert exchange(conn, Capa(), b"+OK\r\nUSER\r\n.\r\n")[0] == Ok()

    def test_nothing_is_pipelined_behind_it(self) -> None:
        """As behind STLS: until the listing has ended, no command may follow."""
        conn = greeted(pipelining=True)
        conn.send(AuthMechanisms())
        with pytest.raises(LocalProtocolError, match="behind AuthMechanisms"):
            conn.send(Capa())
        conn.receive_data(b"+OK\r\nPLA")
        assert drain(conn) == [Ok(), ResponseData(b"PLA")]
        with pytest.raises(LocalProtocolError, match="behind AuthMechanisms"):
            conn.send(Capa())  # the listing is still coming
        conn.receive_data(b"IN\r\n.\r\n")
        assert drain(conn) == [ResponseData(b"IN\r\n"), EndOfResponse()]
        conn.send(Capa())
        assert conn.outstanding == (Capa(),)

    def test_a_listing_line_under_way_is_within_max_buffered(self) -> None:
        """The part of a listing line kept until its end counts in ``buffered``, so it
        counts in the bound too (the fuzzer found ``+OK e`` held where the bound said
        2: the two changes were made apart)."""
        conn = greeted()
        conn.send(AuthMechanisms())
        conn.receive_data(b"+OK\r\nSCRAM-SHA-256-PL")
        assert drain(conn) == [Ok(), ResponseData(b"SCRAM-SHA-256-PL")]
        assert 0 < conn.buffered <= conn.max_buffered

    @pytest.mark.parametrize(
        "after",
        [
            b"+OK Capability list follows\r\n",
            b"-ERR\r\n",
            b"-ERR Unknown command\r\n",
            b"PLAIN LOGIN\r\n",
            b"A" * 30,
            b".\r\n".rjust(24, b"X"),
        ],
    )
    def test_a_line_that_is_no_mechanism_name_is_an_error(self, after: bytes) -> None:
        """RFC 4422 §3.1: 1 to 20 of A-Z, 0-9, - and _. A server that answered with
        one line shows up so, not as a listing that never ends."""
        conn = greeted()
        conn.send(AuthMechanisms())
        conn.receive_data(b"+OK\r\n" + after)
        with pytest.raises(RemoteProtocolError, match="bare AUTH"):
            drain(conn)
        assert conn.state is State.ERROR

    def test_refused(self) -> None:
        conn = greeted()
        assert exchange(conn, AuthMechanisms(), b"-ERR Unknown command\r\n") == [
            Err("Unknown command")
        ]
        assert conn.state is State.AUTHORIZATION


class TestUtf8Login:
    """RFC 6856 §2.1: a client MUST NOT use UTF-8 in USER, PASS or APOP unless CAPA
    lists ``UTF8 USER``. The machine sent them whatever the server listed."""

    @pytest.mark.parametrize("listing", [b"", b"UTF8\r\n", b"UTF8 LANG\r\n"])
    def test_refused_without_utf8_user(self, listing: bytes) -> None:
        conn = greeted()
        exchange(conn, Capa(), b"+OK\r\nUSER\r\n" + listing + b".\r\n")
        assert not conn.utf8_login
        for command in (User("j\u00fcrgen"), Apop("j\u00fcrgen", "0" * 32)):
            with pytest.raises(LocalProtocolError, match="UTF8 USER"):
                conn.send(command)
        assert exchange(conn, User("mrose"), b"+OK\r\n") == [Ok()]
        with pytest.raises(LocalProtocolError, match="UTF8 USER"):
            conn.send(Pass("p\u00e4ss"))
        assert conn.outstanding == ()

    def test_sent_with_utf8_user_and_auth_is_free(self) -> None:
        conn = greeted()
        assert conn.send(Auth("PLAIN", "\u00e4".encode())).startswith(b"AUTH PLAIN ")
        conn.receive_data(b"-ERR no\r\n")
        drain(conn)
        exchange(conn, Capa(), b"+OK\r\nUSER\r\nutf8 user\r\n.\r\n")
        assert conn.utf8_login
        assert conn.send(User("j\u00fcrgen")) == "USER j\u00fcrgen\r\n".encode()


def test_a_name_with_a_space_goes_in_user_and_never_in_apop() -> None:
    """``APOP ann smith <digest>`` went out, which a server that splits arguments
    refuses (RFC 1939 §7: name and digest one space apart; Dovecot answers ``-ERR
    Invalid parameters``): the client machine will not send the name in APOP, though
    the event holds it (a server reads it). USER's one argument is the rest of the
    line, as Dovecot, poplib and smtpcore's server read it: the name goes as it is."""
    conn = greeted()
    with pytest.raises(LocalProtocolError, match="APOP name may not hold a space"):
        conn.send(Apop("ann smith", "0" * 32))
    assert conn.send(User("ann smith")) == b"USER ann smith\r\n"


class TestHostileServers:
    def test_unsolicited_response(self) -> None:
        conn = logged_in()
        conn.receive_data(b"+OK nobody asked\r\n")
        with pytest.raises(RemoteProtocolError):
            conn.next_event()

    def test_unsolicited_response_noticed_on_send(self) -> None:
        """A response that arrived before the command must not answer it."""
        conn = logged_in()
        conn.receive_data(b"+OK 1 1\r\n")
        with pytest.raises(RemoteProtocolError):
            conn.send(Stat())
        assert conn.state is State.ERROR

    def test_extra_response_behind_the_real_one(self) -> None:
        conn = logged_in()
        assert exchange(conn, Noop(), b"+OK\r\n")[0] == Ok()
        conn.send(Noop())
        conn.receive_data(b"+OK\r\n+OK extra\r\n")
        assert conn.next_event() == Ok()
        with pytest.raises(RemoteProtocolError):
            conn.next_event()

    def test_over_long_status_line_is_refused_before_its_end(self) -> None:
        conn = logged_in()
        conn.send(Stat())
        conn.receive_data(b"+OK " + b"9" * 1000)
        assert conn.next_event() is NEED_DATA
        conn.receive_data(b"9" * 2000)
        with pytest.raises(RemoteProtocolError):
            conn.next_event()

    def test_status_line_limit_is_configurable(self) -> None:
        conn = logged_in(max_response_line=64)
        conn.send(Stat())
        conn.receive_data(b"+OK " + b"1" * 70 + b"\r\n")
        with pytest.raises(RemoteProtocolError):
            conn.next_event()

    def test_endless_content_stays_bounded(self) -> None:
        conn = logged_in()
        conn.send(Retr(1))
        conn.receive_data(b"+OK\r\n")
        assert conn.next_event() == Ok()
        total = 0
        for _ in range(200):
            conn.receive_data(b"x" * 50_000)  # one endless line, no terminator
            event = conn.next_event()
            assert isinstance(event, ResponseData)
            total += len(event.data)
            assert conn.next_event() is NEED_DATA
            assert len(conn._buffer) < 8
        assert total == 200 * 50_000

    def test_close_in_the_middle_of_content(self) -> None:
        conn = logged_in()
        conn.send(Retr(1))
        conn.receive_data(b"+OK\r\nhalf a message\r\n")
        drain(conn)
        conn.receive_data(b"")
        with pytest.raises(RemoteProtocolError):
            conn.next_event()

    def test_close_in_the_middle_of_a_line(self) -> None:
        conn = logged_in()
        conn.send(Stat())
        conn.receive_data(b"+OK 1")
        conn.receive_data(b"")
        with pytest.raises(RemoteProtocolError):
            conn.next_event()

    def test_close_between_responses(self) -> None:
        conn = logged_in()
        conn.receive_data(b"")
        assert conn.next_event() == ConnectionClosed()
        assert conn.state is State.CLOSED


def _quit_sent() -> ClientConnection:
    conn = logged_in(max_response_line=64)
    conn.send(Quit())
    return conn


def _greeting_awaited() -> ClientConnection:
    return ClientConnection("client.abc.example", max_response_line=64)


@pytest.mark.parametrize(
    ("make", "end"),
    [
        (_quit_sent, b"+OK bye\r\n"),
        (_quit_sent, b"-ERR some deleted messages not removed\r\n"),
        (_greeting_awaited, b"-ERR [SYS/TEMP] too busy\r\n"),
    ],
    ids=["ok-to-quit", "err-to-quit", "err-greeting"],
)
@pytest.mark.parametrize(
    "behind", [b"X" * 10_000, b"+OK\r\n-ERR\r\n+OK 2 320\r\n"], ids=["endless-line", "lines"]
)
def test_what_comes_behind_the_end_of_the_session_is_dropped(
    make: Callable[[], ClientConnection], end: bytes, behind: bytes
) -> None:
    """The answer to QUIT, either way (RFC 1939 §6), and a ``-ERR`` greeting (§4) end
    the session: what came in the same read behind them will never be read, so a
    CLOSED machine holds nothing (the property below reaches these ends rarely). It
    counts what it dropped, and what comes after, in ``unread_after_end``."""
    conn = make()
    conn.receive_data(end + behind)
    assert isinstance(conn.next_event(), (Ok, Err))
    assert conn.state is State.CLOSED
    assert conn.buffered == 0
    assert conn.unread_after_end == len(behind)
    conn.receive_data(b"more")
    assert conn.unread_after_end == len(behind) + 4
    assert conn.next_event() == ConnectionClosed()


@given(
    lines=st.lists(sst.pop3_response_lines(hostile=True), min_size=1, max_size=10),
    data=st.data(),
    fail_at=st.none() | st.integers(min_value=0, max_value=10),
    close=st.booleans(),
)
def test_an_ended_machine_holds_no_more_than_max_buffered(
    lines: list[bytes], data: st.DataObject, fail_at: int | None, close: bool
) -> None:
    """Once the session has ended (ERROR or CLOSED) nothing held will be read, so the
    machine holds no more than its ``max_buffered``, whatever came in one piece behind
    the end."""
    conn = logged_in(pipelining=True, max_response_line=64)
    for command in (Capa(), Retr(1), Stat(), Quit()):
        conn.send(command)
    pieces = data.draw(sst.chunkings(b"".join(lines)))
    for index, piece in enumerate([*pieces, b""] if close else pieces):
        if index == fail_at:
            conn.send_failed()
        conn.receive_data(piece)
        with contextlib.suppress(RemoteProtocolError):
            drain(conn)
        if conn.state in (State.ERROR, State.CLOSED):
            assert conn.buffered <= conn.max_buffered, conn.state
