"""The POP3 server machine: states, commands, answers, limits (RFC 1939, 2449, 2595, 5034)."""

# mypy narrows `conn.state` after an assert and does not see that send() changes it.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from python_calls import python_calls
from smtpcore import NEED_DATA, PAUSED, LocalProtocolError, RemoteProtocolError
from smtpcore._lines import FramingPolicy
from smtpcore.pop3 import (
    Apop,
    Auth,
    AuthMechanisms,
    AuthResponse,
    BadCommand,
    Capa,
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
    ServerConnection,
    Stat,
    State,
    Stls,
    User,
    Utf8,
    apop_digest,
    format_lines,
)
from smtpcore.pop3._apop import timestamp_host
from smtpcore.testing import POP3ConnectionPair
from smtpcore.testing import strategies as sst

TIMESTAMP = "<1896.697170952@dbc.mtview.ca.us>"


def greeted(**options: Any) -> ServerConnection:
    conn = ServerConnection("pop.pqr.example", **options)
    assert conn.next_event() is PAUSED  # the server speaks first
    assert conn.send(Ok(f"POP3 server ready {TIMESTAMP}")) == (
        f"+OK POP3 server ready {TIMESTAMP}\r\n".encode()
    )
    return conn


def receive(conn: ServerConnection, line: bytes) -> Event:
    conn.receive_data(line)
    event = conn.next_event()
    assert isinstance(event, Event), event
    return event


def logged_in(**options: Any) -> ServerConnection:
    conn = greeted(**options)
    assert receive(conn, b"USER mrose\r\n") == User("mrose")
    conn.send(Ok())
    assert receive(conn, b"PASS secret\r\n") == Pass("secret")
    conn.send(Ok("mrose's maildrop has 2 messages (320 octets)"))
    assert conn.state is State.TRANSACTION
    return conn


def in_state(state: State) -> ServerConnection:
    if state is State.TRANSACTION:
        return logged_in(sasl_mechanisms=["PLAIN"], stls=True, utf8=True)
    conn = greeted(sasl_mechanisms=["PLAIN"], stls=True, utf8=True)
    if state is State.USER:
        receive(conn, b"USER mrose\r\n")
        conn.send(Ok())
    assert conn.state is state
    return conn


DIGEST = apop_digest(TIMESTAMP, "tanstaaf")
ALL_LINES = [
    b"USER mrose",
    b"PASS secret",
    f"APOP mrose {DIGEST}".encode(),
    b"AUTH PLAIN",
    b"CAPA",
    b"STLS",
    b"UTF8",
    b"STAT",
    b"LIST",
    b"LIST 1",
    b"RETR 1",
    b"DELE 1",
    b"NOOP",
    b"RSET",
    b"TOP 1 10",
    b"UIDL",
    b"UIDL 1",
    b"QUIT",
]
ALLOWED = {
    State.AUTHORIZATION: {b"USER", b"APOP", b"AUTH", b"CAPA", b"STLS", b"UTF8", b"QUIT"},
    State.USER: {b"USER", b"PASS", b"APOP", b"AUTH", b"CAPA", b"UTF8", b"QUIT"},
    State.TRANSACTION: {
        *(b"STAT", b"LIST", b"RETR", b"DELE", b"NOOP", b"RSET", b"TOP", b"UIDL"),
        *(b"CAPA", b"QUIT"),
    },
}
STATE_CASES = [(state, line) for state in ALLOWED for line in ALL_LINES]


@pytest.mark.parametrize(
    ("state", "line"), STATE_CASES, ids=[f"{s.name}-{line.decode()}" for s, line in STATE_CASES]
)
def test_commands_per_state(state: State, line: bytes) -> None:
    """RFC 1939 §4-§6: each command is valid in its states and gets -ERR elsewhere."""
    conn = in_state(state)
    event = receive(conn, line + b"\r\n")
    if line.split()[0] in ALLOWED[state]:
        assert isinstance(event, Command), event
    else:
        assert isinstance(event, BadCommand)
        assert event.line == line + b"\r\n"
        assert conn.send(event.response).startswith(b"-ERR ")
        # The session goes on where it was.
        assert conn.state is state
        assert conn.next_event() is NEED_DATA


def test_greeting() -> None:
    conn = ServerConnection("pop.pqr.example")
    with pytest.raises(LocalProtocolError):
        conn.send(Continue(b""))
    with pytest.raises(LocalProtocolError):
        conn.send(ResponseData(b"x"))
    conn.send(Ok(f"ready {TIMESTAMP}"))
    assert conn.state is State.AUTHORIZATION
    assert conn.apop_timestamp == TIMESTAMP


def test_greeting_helper() -> None:
    conn = ServerConnection("pop.pqr.example")
    assert conn.greeting() == Ok("pop.pqr.example POP3 server ready")
    greeting = conn.greeting(4242, 17)
    assert greeting == Ok("pop.pqr.example POP3 server ready <4242.17@pop.pqr.example>")
    conn.send(greeting)
    assert conn.apop_timestamp == "<4242.17@pop.pqr.example>"
    assert ServerConnection("h", apop=False).greeting(1, 2) == Ok("h POP3 server ready")


def test_err_greeting_closes() -> None:
    conn = ServerConnection("pop.pqr.example")
    assert conn.send(Err("go away", code="SYS/TEMP")) == b"-ERR [SYS/TEMP] go away\r\n"
    assert conn.state is State.CLOSED
    assert conn.next_event() == ConnectionClosed()


def test_one_str_for_a_list_of_names_is_a_type_error() -> None:
    """``sasl_mechanisms="PLAIN"`` would offer P, L, A, I and N (and
    ``extra_capabilities="X-FOO"`` list a capability a letter): refused, in the
    constructor and when the mechanisms are set during a session."""
    with pytest.raises(TypeError, match=r"sasl_mechanisms=\['PLAIN'\]"):
        ServerConnection("pop.pqr.example", sasl_mechanisms="PLAIN")
    with pytest.raises(TypeError, match=r"extra_capabilities=\['X-FOO'\]"):
        ServerConnection("pop.pqr.example", extra_capabilities="X-FOO")
    conn = greeted(sasl_mechanisms=["LOGIN"])
    with pytest.raises(TypeError, match="not one str"):
        conn.sasl_mechanisms = "PLAIN"
    assert conn.sasl_mechanisms == ("LOGIN",)


def test_commands_before_the_greeting_wait() -> None:
    conn = ServerConnection("pop.pqr.example")
    conn.receive_data(b"CAPA\r\n")
    assert conn.next_event() is PAUSED
    conn.send(Ok())
    assert conn.next_event() == Capa()


class TestUserPass:
    def test_login(self) -> None:
        conn = greeted()
        assert receive(conn, b"USER mrose\r\n") == User("mrose")
        assert (
            conn.send(Ok("mrose is a real hoopy frood")) == b"+OK mrose is a real hoopy frood\r\n"
        )
        assert conn.state is State.USER
        assert conn.user == "mrose"
        assert receive(conn, b"PASS tan staaf\r\n") == Pass("tan staaf")
        conn.send(Ok("maildrop locked and ready"))
        assert conn.state is State.TRANSACTION

    def test_pass_needs_an_accepted_user(self) -> None:
        conn = greeted()
        event = receive(conn, b"PASS secret\r\n")
        assert isinstance(event, BadCommand)
        conn.send(event.response)
        receive(conn, b"USER frated\r\n")
        conn.send(Err("sorry, no mailbox for frated here"))
        assert conn.state is State.AUTHORIZATION
        assert conn.user is None
        assert isinstance(receive(conn, b"PASS secret\r\n"), BadCommand)

    def test_failed_pass_returns_to_the_start(self) -> None:
        """RFC 1939 §7: after a failed PASS, USER must be given again."""
        conn = greeted()
        receive(conn, b"USER mrose\r\n")
        conn.send(Ok())
        receive(conn, b"PASS wrong\r\n")
        conn.send(Err("invalid password", code="AUTH"))
        assert conn.state is State.AUTHORIZATION
        assert conn.user is None
        event = receive(conn, b"PASS again\r\n")
        assert isinstance(event, BadCommand)
        assert "USER" in event.response.text

    def test_user_can_be_switched_off(self) -> None:
        conn = greeted(user=False)
        event = receive(conn, b"USER mrose\r\n")
        assert isinstance(event, BadCommand)
        assert event.response.text == "Unknown command"
        assert "USER" not in conn.capabilities()

    def test_require_tls_refuses_login_in_plaintext(self) -> None:
        conn = greeted(stls=True, require_tls=True)
        event = receive(conn, b"USER mrose\r\n")
        assert isinstance(event, BadCommand)
        assert event.response.code == "AUTH"
        assert "USER" not in conn.capabilities()
        conn.send(event.response)
        receive(conn, b"STLS\r\n")
        conn.send(Ok())
        conn.tls_started()
        assert "USER" in conn.capabilities()
        assert receive(conn, b"USER mrose\r\n") == User("mrose")


class TestApop:
    def test_rfc1939_example(self) -> None:
        conn = greeted()
        event = receive(conn, b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n")
        assert event == Apop("mrose", "c4c9334bac560ecc979e58001b3e22fb")
        assert event.digest == apop_digest(conn.apop_timestamp or "", "tanstaaf")
        conn.send(Ok("maildrop has 1 message (369 octets)"))
        assert conn.state is State.TRANSACTION

    def test_a_name_with_a_space_is_read_up_to_the_digest(self) -> None:
        """``APOP ann smith <digest>``: the digest is 32 hex digits, always the last
        word, so the name is the rest, as mpop and fetchmail send it and as the
        machine read it before (our client refuses to send it: Dovecot does not)."""
        conn = greeted()
        event = receive(conn, b"APOP  ann smith c4c9334bac560ecc979e58001b3e22fb \r\n")
        assert event == Apop("ann smith", "c4c9334bac560ecc979e58001b3e22fb")
        conn.send(Ok("maildrop has 0 messages (0 octets)"))
        assert conn.state is State.TRANSACTION

    def test_failed_apop(self) -> None:
        conn = greeted()
        receive(conn, f"APOP mrose {'0' * 32}\r\n".encode())
        conn.send(Err("permission denied", code="AUTH"))
        assert conn.state is State.AUTHORIZATION

    def test_no_timestamp_no_apop(self) -> None:
        conn = ServerConnection("pop.pqr.example")
        conn.send(Ok("POP3 server ready"))
        event = receive(conn, f"APOP mrose {DIGEST}\r\n".encode())
        assert isinstance(event, BadCommand)
        assert "APOP" in event.response.text

    def test_apop_can_be_switched_off(self) -> None:
        conn = greeted(apop=False)
        assert conn.apop_timestamp is None
        event = receive(conn, f"APOP mrose {DIGEST}\r\n".encode())
        assert isinstance(event, BadCommand)
        assert event.response.text == "Unknown command"


class TestAuth:
    def test_exchange_with_continuations(self) -> None:
        conn = greeted(sasl_mechanisms=["plain", "SCRAM-SHA-256"])
        assert "SASL PLAIN SCRAM-SHA-256" in conn.capabilities()
        assert receive(conn, b"AUTH PLAIN\r\n") == Auth("PLAIN")
        assert conn.send(Continue(b"")) == b"+ \r\n"
        assert conn.state is State.SASL
        event = receive(conn, b"AHRlc3QAdGVzdA==\r\n")
        assert event == AuthResponse(b"\x00test\x00test")
        assert conn.next_event() is PAUSED
        conn.send(Ok("logged in"))
        assert conn.state is State.TRANSACTION

    def test_several_rounds_then_failure(self) -> None:
        conn = greeted(sasl_mechanisms=["SCRAM-SHA-256"])
        receive(conn, b"AUTH SCRAM-SHA-256 =\r\n")
        conn.send(Continue(b"r=abc"))
        receive(conn, b"\r\n")
        conn.send(Continue(b"v=xyz"))
        assert receive(conn, b"\r\n") == AuthResponse(b"")
        conn.send(Err("authentication failed", code="AUTH"))
        assert conn.state is State.AUTHORIZATION

    def test_initial_response_completes_at_once(self) -> None:
        conn = greeted(sasl_mechanisms=["PLAIN"])
        event = receive(conn, b"AUTH PLAIN AHRlc3QAdGVzdA==\r\n")
        assert event == Auth("PLAIN", b"\x00test\x00test")
        conn.send(Ok())
        assert conn.state is State.TRANSACTION

    def test_cancel_must_be_refused(self) -> None:
        """RFC 5034 §4: ``*`` cancels, and the server answers -ERR."""
        conn = greeted(sasl_mechanisms=["LOGIN"])
        receive(conn, b"AUTH LOGIN\r\n")
        conn.send(Continue(b"Username:"))
        assert receive(conn, b"*\r\n") == AuthResponse(cancel=True)
        with pytest.raises(LocalProtocolError):
            conn.send(Ok())
        with pytest.raises(LocalProtocolError):
            conn.send(Continue(b"Password:"))
        conn.send(Err("authentication cancelled"))
        assert conn.state is State.AUTHORIZATION

    @pytest.mark.parametrize(
        "answer",
        # A cancel is the client's own doing whatever the answer's code says.
        [Err("Authentication cancelled"), Err("cancelled", code="AUTH")],
    )
    def test_a_cancelled_exchange_counts_as_a_bad_command(self, answer: Err) -> None:
        """An AUTH cancelled with ``*`` (RFC 5034 §4) counted toward no limit: a client
        repeated it forever, holding the session and a credential lookup each round.
        The machine sees the cancel itself, so it counts it, however it is answered;
        the session ends at ``max_bad_commands`` as for any other bad command."""
        conn = greeted(sasl_mechanisms=["LOGIN"], max_bad_commands=3)
        for _ in range(3):
            assert conn.state is State.AUTHORIZATION
            receive(conn, b"AUTH LOGIN\r\n")
            conn.send(Continue(b"Username:"))
            assert receive(conn, b"*\r\n") == AuthResponse(cancel=True)
            conn.send(answer)
        with pytest.raises(RemoteProtocolError) as info:
            conn.next_event()
        assert conn.state is State.ERROR
        assert info.value.reply_hint == Err("Too many bad commands, closing")

    def test_the_application_counts_an_exchange_only_it_knows_is_broken(self) -> None:
        """An initial response sent to CRAM-MD5 (server-first, RFC 5034 §4) is a
        mistake only the mechanism knows of: the application answers it and says so
        with :meth:`~ServerConnection.count_bad_command`, which counts it as the lines
        the machine refuses itself are counted."""
        conn = greeted(sasl_mechanisms=["CRAM-MD5"], max_bad_commands=3)
        for _ in range(3):
            assert conn.state is State.AUTHORIZATION
            assert receive(conn, b"AUTH CRAM-MD5 eA==\r\n") == Auth("CRAM-MD5", b"x")
            conn.send(Err("CRAM-MD5 takes no initial response"))
            conn.count_bad_command()
        with pytest.raises(RemoteProtocolError) as info:
            conn.next_event()
        assert conn.state is State.ERROR
        assert info.value.reply_hint == Err("Too many bad commands, closing")

    @pytest.mark.parametrize("code", ["AUTH", "SYS/TEMP", None])
    def test_a_failed_login_is_no_bad_command(self, code: str | None) -> None:
        """An ``-ERR`` that ends an exchange the client ran by the rules judges no
        protocol error, with a response code or without one: RFC 3206's codes are
        optional (``resp_codes=False`` advertises none), so a plain ``-ERR`` is a
        failed login as well as ``[AUTH]``, and a maildrop that cannot be opened
        after one (a ``MaildropError`` with no code) no bad command either. Only the
        application's failed-login count judges them, never ``max_bad_commands``."""
        conn = greeted(sasl_mechanisms=["PLAIN"], max_bad_commands=2, resp_codes=False)
        for _ in range(10):
            receive(conn, b"AUTH PLAIN AHRlc3QAdGVzdA==\r\n")
            conn.send(Err("no", code=code))
        assert conn.state is State.AUTHORIZATION
        receive(conn, b"AUTH PLAIN AHRlc3QAdGVzdA==\r\n")
        conn.send(Ok())
        assert conn.state is State.TRANSACTION

    def test_a_failed_multi_step_login_is_no_bad_command(self) -> None:
        """The same for an exchange of several steps that ends in a plain ``-ERR``."""
        conn = greeted(sasl_mechanisms=["LOGIN"], max_bad_commands=2)
        for _ in range(10):
            receive(conn, b"AUTH LOGIN\r\n")
            conn.send(Continue(b"Username:"))
            assert receive(conn, b"dGVzdA==\r\n") == AuthResponse(b"test")
            conn.send(Err("Authentication failed"))
        assert conn.state is State.AUTHORIZATION

    def test_counting_a_bad_command_is_refused_once_the_session_is_over(self) -> None:
        conn = greeted(sasl_mechanisms=["PLAIN"], max_bad_commands=1)
        receive(conn, b"AUTH PLAIN AHRlc3QAdGVzdA==\r\n")
        conn.send(Err("no"))
        conn.count_bad_command()
        assert conn.state is State.ERROR
        with pytest.raises(LocalProtocolError, match="ERROR"):
            conn.count_bad_command()

    def test_invalid_base64_ends_the_exchange(self) -> None:
        conn = greeted(sasl_mechanisms=["LOGIN"])
        receive(conn, b"AUTH LOGIN\r\n")
        conn.send(Continue(b"Username:"))
        event = receive(conn, b"RETR 1\r\n")  # pipelined behind AUTH: not base64
        assert isinstance(event, BadCommand)
        conn.send(event.response)
        assert conn.state is State.AUTHORIZATION

    def test_a_refused_line_that_may_carry_a_credential_is_hidden(self) -> None:
        """A BadCommand's repr showed an answer that was not base64 (a password sent
        as it is), or a PASS refused out of sequence: such lines are marked secret and
        hidden in the repr; the field keeps them, and other lines show."""
        conn = greeted(sasl_mechanisms=["LOGIN"])
        receive(conn, b"AUTH LOGIN\r\n")
        conn.send(Continue(b"Username:"))

        def refused(line: bytes) -> BadCommand:
            event = receive(conn, line)
            assert isinstance(event, BadCommand)
            conn.send(Err("no"))
            return event

        lines = (b"hunter2!\r\n", b"PASS hunter2\r\n", b"pass\r\n", b"RETR 1\r\n")
        bad = [refused(line) for line in lines]  # not base64, then out of sequence
        assert [event.secret for event in bad] == [True, True, True, False]
        assert bad[0] == BadCommand(b"hunter2!\r\n", bad[0].response, secret=True)
        for event in bad[:3]:
            assert repr(event).startswith("BadCommand(line=<hidden>, response=Err(")
        assert "hunter2" not in repr(bad[:3]) and "RETR 1" in repr(bad[3])

    def test_unsupported_mechanism(self) -> None:
        conn = greeted(sasl_mechanisms=["PLAIN"])
        event = receive(conn, b"AUTH GSSAPI\r\n")
        assert isinstance(event, BadCommand)
        assert "mechanism" in event.response.text

    def test_without_mechanisms_auth_is_unknown(self) -> None:
        conn = greeted()
        event = receive(conn, b"AUTH PLAIN\r\n")
        assert isinstance(event, BadCommand)
        assert event.response.text == "Unknown command"

    def test_mechanisms_offered_later_turn_auth_on(self) -> None:
        """A store may offer mechanisms only under TLS (RFC 2595 §6): setting them
        mid-session makes AUTH a command and lists them in CAPA, and clearing them
        turns it off again."""
        conn = greeted()
        assert not any(line.startswith("SASL") for line in conn.capabilities())
        conn.sasl_mechanisms = ["plain", "SCRAM-SHA-256"]
        assert conn.sasl_mechanisms == ("PLAIN", "SCRAM-SHA-256")
        assert "SASL PLAIN SCRAM-SHA-256" in conn.capabilities()
        event = receive(conn, b"AUTH PLAIN\r\n")
        assert isinstance(event, Auth)
        conn.send(Err("not now"))
        conn.sasl_mechanisms = ()
        event = receive(conn, b"AUTH PLAIN\r\n")
        assert isinstance(event, BadCommand)
        assert event.response.text == "Unknown command"

    def test_connections_share_their_command_tables_and_turn_auth_on_alone(self) -> None:
        """The commands a session knows are one table per configuration, shared by
        every connection: AUTH turned on for one (its mechanisms set) is a command
        for that one alone."""
        first, second = greeted(), greeted()
        assert first._keywords is second._keywords
        first.sasl_mechanisms = ["PLAIN"]
        assert isinstance(receive(first, b"AUTH PLAIN\r\n"), Auth)
        assert isinstance(receive(second, b"AUTH PLAIN\r\n"), BadCommand)
        assert "AUTH" not in greeted()._keywords

    def test_offered_logins_and_stls_may_be_set_before_the_greeting(self) -> None:
        """A server learns per session what its mailstore serves: USER and APOP set
        on the machine before the greeting count, the APOP timestamp included (RFC
        1939 §7); STLS set off is no command."""
        conn = ServerConnection("pop.pqr.example", user=False, apop=False, stls=True)
        conn.offers_user = conn.offers_apop = True
        conn.stls = False
        assert conn.offers_user and conn.offers_apop and not conn.stls
        conn.send(conn.greeting(4242, 17))
        assert conn.apop_timestamp == "<4242.17@pop.pqr.example>"
        assert isinstance(receive(conn, b"USER mrose\r\n"), User)
        conn.send(Err("no"))
        assert isinstance(receive(conn, b"STLS\r\n"), BadCommand)
        conn.send(Err("no"))
        assert "STLS" not in conn.capabilities() and "USER" in conn.capabilities()
        conn.offers_user = False
        assert "USER" not in conn.capabilities() and not conn.offers_utf8

    def test_continuation_only_answers_auth(self) -> None:
        conn = logged_in()
        receive(conn, b"STAT\r\n")
        with pytest.raises(LocalProtocolError):
            conn.send(Continue(b"x"))
        assert conn.send(Ok("0 0")) == b"+OK 0 0\r\n"

    def test_long_initial_response_and_long_responses(self) -> None:
        """RFC 5034 §4: only AUTH (and SASL responses) may pass the 255-octet limit."""
        conn = greeted(sasl_mechanisms=["XOAUTH2"])
        token = b"A" * 2000
        assert receive(conn, b"AUTH XOAUTH2 " + token + b"\r\n") == Auth("XOAUTH2", b"\x00" * 1500)
        conn.send(Continue(b""))
        assert receive(conn, token + b"\r\n") == AuthResponse(b"\x00" * 1500)
        conn.send(Err())
        event = receive(conn, b"USER " + b"u" * 300 + b"\r\n")
        assert isinstance(event, BadCommand)
        assert event.response.text == "Line too long"

    def test_over_long_lines_end_the_session_at_max_bad_commands(self) -> None:
        """A line past 255 octets (RFC 2449 §4) is a bad command like any other: a
        flood of them ends the session at ``max_bad_commands`` with the closing
        ``-ERR``, never answered one by one without end."""
        conn = greeted(max_bad_commands=3)
        for _ in range(2):
            event = receive(conn, b"N" * 300 + b"\r\n")
            assert isinstance(event, BadCommand) and event.response.text == "Line too long"
            conn.send(event.response)
        conn.receive_data(b"N" * 300 + b"\r\n")
        with pytest.raises(RemoteProtocolError) as info:
            conn.next_event()
        assert conn.state is State.ERROR
        assert info.value.reply_hint == Err("Too many bad commands, closing")

    @pytest.mark.parametrize("verb", [b"USER", b"PASS", b"AUTHX", b"NOOP"])
    def test_other_lines_are_cut_off_at_the_command_limit_where_auth_is_offered(
        self, verb: bytes
    ) -> None:
        """With AUTH offered, only an AUTH line may run to ``max_auth_line``: any other
        command line is dropped past 255 octets (RFC 2449 §4) as it comes, not
        buffered to 12,288 first, and refused whole at its end."""
        conn = greeted(sasl_mechanisms=["PLAIN"])
        for _ in range(5):
            conn.receive_data(verb + b" " + b"u" * 2000)
            assert conn.next_event() is NEED_DATA
            assert conn.buffered <= conn.max_command_line
        assert receive(conn, b"\r\n") == BadCommand(b"", Err("Line too long"))
        conn.send(Err("Line too long"))
        token = b"A" * 2000  # an AUTH line is still taken past 255 octets
        assert receive(conn, b"auth PLAIN " + token + b"\r\n") == Auth("PLAIN", b"\x00" * 1500)


class TestStls:
    def test_plaintext_pipelined_behind_stls_is_never_executed(self) -> None:
        """RFC 2595 §4 and the CVE-2011-0411 class: commands sent with STLS are dropped."""
        conn = greeted(stls=True)
        conn.receive_data(b"STLS\r\nUSER evil\r\nPASS evil\r\nDELE 1\r\n")
        assert conn.next_event() == Stls()
        assert conn.next_event() is PAUSED
        conn.send(Ok("Begin TLS negotiation"))
        assert conn.state is State.TLS_PENDING
        assert conn.next_event() is PAUSED
        conn.receive_data(b"RETR 1\r\n")  # still plaintext, before the handshake
        assert conn.next_event() is PAUSED
        conn.tls_started()
        assert conn.tls
        assert conn.state is State.AUTHORIZATION
        assert conn.next_event() is NEED_DATA
        assert receive(conn, b"CAPA\r\n") == Capa()

    def test_a_client_that_leaves_before_the_handshake_closes_the_session(self) -> None:
        """End of file while the TLS handshake is awaited: ConnectionClosed, as
        anywhere else, not PAUSED for ever."""
        conn = greeted(stls=True)
        receive(conn, b"STLS\r\n")
        conn.send(Ok())
        assert conn.state is State.TLS_PENDING
        conn.receive_data(b"")
        assert conn.next_event() == ConnectionClosed()
        assert conn.state.name == "CLOSED"  # .name: mypy kept the earlier narrowing

    def test_refused_stls_keeps_the_plaintext_session(self) -> None:
        conn = greeted(stls=True)
        conn.receive_data(b"STLS\r\nCAPA\r\n")
        assert conn.next_event() == Stls()
        conn.send(Err("TLS not available now"))
        assert conn.state is State.AUTHORIZATION
        assert conn.next_event() == Capa()

    def test_stls_once_and_only_before_login(self) -> None:
        conn = greeted(stls=True)
        assert "STLS" in conn.capabilities()
        receive(conn, b"STLS\r\n")
        conn.send(Ok())
        conn.tls_started()
        assert "STLS" not in conn.capabilities()
        event = receive(conn, b"STLS\r\n")
        assert isinstance(event, BadCommand)
        assert "TLS" in event.response.text

    def test_after_user_stls_is_neither_listed_nor_taken_for_a_login_problem(self) -> None:
        """RFC 2449 §5: CAPA lists what the state allows; once USER is accepted STLS is
        refused (as documented), so it is not listed, and its refusal says why."""
        conn = greeted(stls=True, require_tls=False)
        receive(conn, b"USER alice\r\n")
        conn.send(Ok())
        assert "STLS" not in conn.capabilities()
        event = receive(conn, b"STLS\r\n")
        assert isinstance(event, BadCommand)
        assert event.response.text == "STLS is only valid before USER"

    def test_stls_must_be_configured(self) -> None:
        conn = greeted()
        event = receive(conn, b"STLS\r\n")
        assert isinstance(event, BadCommand)
        assert "STLS" not in conn.capabilities()

    def test_tls_started_only_when_pending(self) -> None:
        conn = greeted(stls=True)
        with pytest.raises(LocalProtocolError):
            conn.tls_started()
        assert conn.state is State.AUTHORIZATION


class TestMultiline:
    def test_retr_streams_dot_stuffed_content(self) -> None:
        conn = logged_in()
        assert receive(conn, b"RETR 1\r\n") == Retr(1)
        assert conn.send(Ok("120 octets")) == b"+OK 120 octets\r\n"
        assert conn.next_event() is PAUSED
        with pytest.raises(LocalProtocolError):
            conn.send(Ok())
        out = conn.send(ResponseData(b".starts with a dot\r\nline\r"))
        out += conn.send(ResponseData(b"\n.\r\n"))
        out += conn.send(EndOfResponse())
        assert out == b"..starts with a dot\r\nline\r\n..\r\n.\r\n"
        assert conn.next_event() is NEED_DATA

    def test_in_multiline_response_from_the_ok_to_the_end(self) -> None:
        """The session asks this before a goodbye: no -ERR inside an answer (RFC 1939 §3)."""
        conn = logged_in()
        assert not conn.in_multiline_response
        assert receive(conn, b"RETR 1\r\n") == Retr(1)
        assert not conn.in_multiline_response  # not answered yet: an -ERR may still go
        conn.send(Ok())
        assert conn.in_multiline_response
        conn.send(ResponseData(b"line\r\n"))
        assert conn.in_multiline_response
        conn.send(EndOfResponse())
        assert not conn.in_multiline_response
        assert receive(conn, b"STAT\r\n") == Stat()
        conn.send(Ok("2 320"))
        assert not conn.in_multiline_response

    def test_bare_lf_content_becomes_crlf(self) -> None:
        """A Maildir stores LF line ends; the wire wants CRLF (RFC 1939 §3)."""
        conn = logged_in()
        receive(conn, b"TOP 1 0\r\n")
        conn.send(Ok())
        out = conn.send(ResponseData(b"Subject: x\n\n")) + conn.send(EndOfResponse())
        assert out == b"Subject: x\r\n\r\n.\r\n"

    def test_content_without_final_crlf_gets_one(self) -> None:
        conn = logged_in()
        receive(conn, b"RETR 1\r\n")
        conn.send(Ok())
        assert conn.send(ResponseData(b"no newline")) + conn.send(EndOfResponse()) == (
            b"no newline\r\n.\r\n"
        )

    def test_err_to_a_multiline_command_has_no_content(self) -> None:
        conn = logged_in()
        receive(conn, b"RETR 9\r\n")
        conn.send(Err("no such message"))
        with pytest.raises(LocalProtocolError):
            conn.send(ResponseData(b"x"))
        with pytest.raises(LocalProtocolError):
            conn.send(EndOfResponse())
        assert conn.next_event() is NEED_DATA

    def test_single_line_commands_get_no_content(self) -> None:
        conn = logged_in()
        receive(conn, b"LIST 1\r\n")
        conn.send(Ok("1 120"))
        with pytest.raises(LocalProtocolError):
            conn.send(ResponseData(b"2 200\r\n"))

    def test_capa(self) -> None:
        conn = greeted(
            stls=True,
            utf8=True,
            sasl_mechanisms=["PLAIN"],
            expire="NEVER",
            login_delay="900",
            implementation="smtpcore",
            extra_capabilities=["X-EXAMPLE"],
        )
        receive(conn, b"CAPA\r\n")
        out = conn.send(Ok("Capability list follows"))
        out += conn.send(ResponseData(format_lines(conn.capabilities())))
        out += conn.send(EndOfResponse())
        assert out == (
            b"+OK Capability list follows\r\n"
            b"TOP\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
            b"UIDL\r\nSTLS\r\nUTF8 USER\r\nEXPIRE NEVER\r\nLOGIN-DELAY 900\r\n"
            b"IMPLEMENTATION smtpcore\r\nX-EXAMPLE\r\n.\r\n"
        )

    @pytest.mark.parametrize(
        "options",
        [
            {"expire": "-1"},
            {"expire": ""},
            {"expire": "30 days"},
            {"expire": "NEVER USER"},
            {"expire": "\u0663\u0660"},  # Arabic-Indic digits: no ASCII DIGIT (RFC 2449 §9)
            {"expire": "30  USER"},
            {"expire": "30\r\nSTLS"},
            {"login_delay": "soon"},
            {"login_delay": ""},
            {"login_delay": "NEVER"},
            {"login_delay": "+900"},
            {"login_delay": -1},
            {"expire": "NEVER "},
            {"expire": "30 u\u017fer"},  # LONG S: no ASCII letter, though upper() gives S
        ],
    )
    def test_capa_policy_values_it_cannot_write_are_refused(self, options: Any) -> None:
        """RFC 2449 §9: ``expire-policy = (1*DIGIT [SP "USER"]) / "NEVER"``, ``delay-secs =
        1*DIGIT [SP "USER"]``. What the machine could not write in CAPA it refuses when
        configured, and when set later."""
        with pytest.raises(ValueError, match="RFC 2449"):
            greeted(**options)
        conn = greeted()
        with pytest.raises(ValueError, match="RFC 2449"):
            setattr(conn, *next(iter(options.items())))

    @pytest.mark.parametrize(
        ("options", "written"),
        [
            ({"expire": "never"}, ["EXPIRE NEVER"]),
            ({"expire": "Never"}, ["EXPIRE NEVER"]),
            ({"expire": "30 user"}, ["EXPIRE 30 USER"]),
            ({"login_delay": "900 uSeR"}, ["LOGIN-DELAY 900 USER"]),
            ({"expire": 0, "login_delay": 900}, ["EXPIRE 0", "LOGIN-DELAY 900"]),
        ],
    )
    def test_capa_policy_values_are_written_as_the_grammar_has_them(
        self, options: Any, written: list[str]
    ) -> None:
        """RFC 2449 §9's literals ``USER`` and ``NEVER`` are case-insensitive (RFC 5234
        §2.3): taken in any case, written upper-case. An int is its decimal digits."""
        conn = greeted(**options)
        assert conn.capabilities()[-len(written) :] == written
        conn = greeted()
        for name, value in options.items():
            setattr(conn, name, value)
        assert conn.capabilities()[-len(written) :] == written

    @given(st.integers(min_value=0, max_value=10**30), st.booleans())
    def test_a_non_negative_int_policy_is_its_decimal_digits(self, days: int, user: bool) -> None:
        """``expire=30`` is ``EXPIRE 30``, as ``"30"`` is; so for ``login_delay``."""
        conn = greeted(expire=days, login_delay=days)
        assert conn.expire == conn.login_delay == str(days)
        assert conn.capabilities()[-2:] == [f"EXPIRE {days}", f"LOGIN-DELAY {days}"]

    @pytest.mark.parametrize("value", [True, False, 30.0, b"30", ["30"]])
    @pytest.mark.parametrize("name", ["expire", "login_delay"])
    def test_a_capa_policy_of_another_type_is_a_type_error(self, name: str, value: object) -> None:
        """A bool is no number of days (``True`` is no ``EXPIRE 1``), nor is anything
        but a str or an int a value CAPA can write."""
        with pytest.raises(TypeError, match=name):
            greeted(**{name: value})
        conn = greeted()
        with pytest.raises(TypeError, match=name):
            setattr(conn, name, value)

    def test_the_user_tag_is_written_in_the_authorization_state_alone(self) -> None:
        """RFC 2449 §6.5, §6.7: EXPIRE and LOGIN-DELAY are "optionally followed by USER
        in AUTHORIZATION state", where the policy may vary by user; once logged in, the
        value is this user's, with no tag (the configured minimum unless the application
        sets the user's own)."""
        conn = greeted(expire="30 USER", login_delay="900 USER")
        assert conn.capabilities()[-2:] == ["EXPIRE 30 USER", "LOGIN-DELAY 900 USER"]
        conn = logged_in(expire="30 USER", login_delay="900 USER")
        assert conn.capabilities()[-2:] == ["EXPIRE 30", "LOGIN-DELAY 900"]
        conn.expire, conn.login_delay = "60", "1800"
        assert conn.capabilities()[-2:] == ["EXPIRE 60", "LOGIN-DELAY 1800"]

    def test_optional_commands_can_be_switched_off(self) -> None:
        conn = logged_in(top=False, uidl=False)
        assert conn.capabilities() == ["USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        for line in (b"TOP 1 1\r\n", b"UIDL\r\n"):
            event = receive(conn, line)
            assert isinstance(event, BadCommand)
            conn.send(event.response)


class TestQuit:
    def test_quit_in_transaction_enters_update(self) -> None:
        """RFC 1939 §6: deletions happen in UPDATE, after QUIT, before the +OK."""
        conn = logged_in()
        assert receive(conn, b"QUIT\r\n") == Quit()
        assert conn.state is State.UPDATE
        assert conn.send(Ok("dewey POP3 server signing off")) == (
            b"+OK dewey POP3 server signing off\r\n"
        )
        assert conn.state is State.CLOSED
        assert conn.next_event() == ConnectionClosed()
        with pytest.raises(LocalProtocolError):
            conn.send(Ok())

    def test_failed_update_still_closes(self) -> None:
        conn = logged_in()
        receive(conn, b"QUIT\r\n")
        conn.send(Err("some deleted messages not removed"))
        assert conn.state is State.CLOSED

    def test_quit_in_authorization_skips_update(self) -> None:
        conn = greeted()
        receive(conn, b"QUIT\r\n")
        assert conn.state is State.AUTHORIZATION
        conn.send(Ok("bye"))
        assert conn.state is State.CLOSED

    def test_client_going_away_never_enters_update(self) -> None:
        conn = logged_in()
        conn.receive_data(b"DELE 1\r\nQU")
        assert conn.next_event() == Dele(1)
        conn.send(Ok("message 1 deleted"))
        conn.receive_data(b"")
        assert conn.next_event() == ConnectionClosed()
        assert conn.state is State.CLOSED  # not UPDATE: the deletion must not happen


def test_pipelined_commands_are_answered_in_order() -> None:
    """RFC 2449 §6.6: one command at a time, each paused until answered."""
    conn = logged_in()
    conn.receive_data(b"STAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n")
    wire = b""
    assert conn.next_event() == Stat()
    assert conn.next_event() is PAUSED
    wire += conn.send(Ok("1 5"))
    assert conn.next_event() == List()
    wire += conn.send(Ok())
    assert conn.next_event() is PAUSED
    wire += conn.send(ResponseData(b"1 5\r\n"))
    assert conn.next_event() is PAUSED
    wire += conn.send(EndOfResponse())
    assert conn.next_event() == Retr(1)
    wire += conn.send(Ok()) + conn.send(ResponseData(b"hello\r\n")) + conn.send(EndOfResponse())
    assert conn.next_event() == Dele(1)
    wire += conn.send(Ok())
    assert conn.next_event() == Quit()
    wire += conn.send(Ok())
    assert wire == (b"+OK 1 5\r\n+OK\r\n1 5\r\n.\r\n+OK\r\nhello\r\n.\r\n+OK\r\n+OK\r\n")


class TestLimits:
    def test_command_line_limit(self) -> None:
        """RFC 2449 §4: commands are at most 255 octets; longer ones get -ERR."""
        conn = logged_in()
        line = b"RETR " + b"1" * 248 + b"\r\n"
        assert len(line) == 255
        event = receive(conn, line)
        assert isinstance(event, BadCommand)
        assert "Invalid message number" in event.response.text
        conn.send(event.response)
        event = receive(conn, b"NOOP " + b"x" * 300 + b"\r\n")
        assert event == BadCommand(b"", Err("Line too long"))
        conn.send(event.response)
        assert receive(conn, b"NOOP\r\n") == Noop()

    def test_configurable_command_line_limit(self) -> None:
        conn = logged_in(max_command_line=13)
        event = receive(conn, b"RETR 1234567\r\n")
        assert isinstance(event, BadCommand)

    def test_an_unterminated_line_does_not_grow_memory(self) -> None:
        conn = logged_in()
        for _ in range(100):
            conn.receive_data(b"x" * 10_000)
            assert conn.next_event() is NEED_DATA
            assert len(conn._buffer) < 300
        event = receive(conn, b"\r\n")
        assert isinstance(event, BadCommand)

    def test_too_many_bad_commands(self) -> None:
        conn = logged_in(max_bad_commands=3)
        for _ in range(2):
            event = receive(conn, b"FOO\r\n")
            assert isinstance(event, BadCommand)
            conn.send(event.response)
        conn.receive_data(b"FOO\r\n")
        with pytest.raises(RemoteProtocolError) as info:
            conn.next_event()
        assert conn.state is State.ERROR
        hint = info.value.reply_hint
        assert isinstance(hint, Err)
        assert conn.send(hint).startswith(b"-ERR ")
        with pytest.raises(RemoteProtocolError):
            conn.next_event()

    def test_status_line_limit(self) -> None:
        conn = logged_in()
        receive(conn, b"NOOP\r\n")
        with pytest.raises(LocalProtocolError):
            conn.send(Ok("x" * 600))
        assert conn.send(Ok()) == b"+OK\r\n"


class TestFraming:
    def test_bare_lf_command_is_refused_by_default(self) -> None:
        # Only CRLF ends a line (RFC 1939 §3): a bare LF ends none, so what follows
        # it is the same line, refused with it, never run as a command of its own.
        conn = logged_in()
        conn.receive_data(b"STAT\n")
        assert conn.next_event() is NEED_DATA
        event = receive(conn, b"DELE 1\r\n")
        assert isinstance(event, BadCommand) and event.line == b"STAT\nDELE 1\r\n"
        assert "CRLF" in event.response.text
        conn.send(event.response)
        assert receive(conn, b"NOOP\r\n") == Noop()

    def test_bare_lf_command_with_a_lenient_policy(self) -> None:
        conn = logged_in(framing=FramingPolicy(lf_ends_command=True))
        assert receive(conn, b"STAT\n") == Stat()

    def test_invalid_utf8(self) -> None:
        conn = greeted()
        event = receive(conn, b"USER \xff\r\n")
        assert isinstance(event, BadCommand)
        assert event.response.code == "UTF8"

    def test_utf8_user_names(self) -> None:
        conn = greeted(utf8=True)
        assert receive(conn, b"UTF8\r\n") == Utf8()
        conn.send(Ok())
        assert conn.utf8
        assert receive(conn, "USER j\u00fcrgen\r\n".encode()) == User("j\u00fcrgen")

    def test_utf8_user_is_listed_and_holds_without_the_utf8_command(self) -> None:
        """RFC 6856 §2.1: ``UTF8 USER`` says USER, PASS and APOP take UTF-8, and a client
        needs no UTF8 command first to use it. The server took them and listed UTF8
        alone, so a careful client never sent them."""
        conn = greeted(utf8=True)
        assert "UTF8 USER" in conn.capabilities()
        assert receive(conn, "USER j\u00fcrgen\r\n".encode()) == User("j\u00fcrgen")
        conn.send(Ok())
        assert receive(conn, "PASS p\u00e4ss\r\n".encode()) == Pass("p\u00e4ss")

    @pytest.mark.parametrize(
        "line",
        [
            "USER j\u00fcrgen\r\n",
            "APOP j\u00fcrgen c4c9334bac560ecc979e58001b3e22fb\r\n",
        ],
    )
    def test_a_utf8_login_is_taken_where_utf8_user_is_not_listed(self, line: str) -> None:
        """RFC 6856 §2.1 holds the client to ``UTF8 USER``; the server stays liberal, as
        Dovecot, which lists no UTF8, takes a UTF-8 name: a name a client sends anyway
        gets the mailstore's answer, not a syntax error."""
        conn = greeted()
        assert "UTF8 USER" not in conn.capabilities()
        event = receive(conn, line.encode())
        assert not isinstance(event, BadCommand)


class TestApplicationMistakes:
    def test_answer_without_a_command(self) -> None:
        conn = logged_in()
        with pytest.raises(LocalProtocolError):
            conn.send(Ok())

    def test_bad_command_needs_an_err(self) -> None:
        conn = logged_in()
        event = receive(conn, b"FOO\r\n")
        with pytest.raises(LocalProtocolError):
            conn.send(Ok())
        assert isinstance(event, BadCommand)
        conn.send(event.response)

    def test_commands_are_not_sent_by_a_server(self) -> None:
        conn = logged_in()
        with pytest.raises(LocalProtocolError):
            conn.send(Stat())

    def test_send_failed_is_sticky(self) -> None:
        conn = logged_in()
        conn.send_failed()
        assert conn.state is State.ERROR
        with pytest.raises(RemoteProtocolError):
            conn.next_event()

    def test_bytes_after_the_session_ended_are_not_kept(self) -> None:
        """A closed session or one in ERROR reads no more: what comes is dropped, not
        buffered without bound."""
        failed = logged_in()
        failed.send_failed()
        failed.receive_data(b"NOOP\r\n" * 20_000)
        assert failed.buffered == 0
        conn = logged_in()
        receive(conn, b"QUIT\r\n")
        conn.send(Ok())
        conn.receive_data(b"STAT\r\n" * 20_000)
        assert conn.buffered == 0 and conn.next_event() == ConnectionClosed()


@pytest.mark.parametrize("hostname", ["h" * 256, "pop host", "pop.test\r\n+OK", ""])
def test_a_hostname_that_cannot_head_the_greeting_is_refused(hostname: str) -> None:
    """The POP3 greeting names the host, as the SMTP one does, under the same rule: one
    word of at most 255 octets; a longer one was taken, and every client then got
    -ERR with a traceback logged."""
    with pytest.raises(ValueError, match="cannot name this server"):
        ServerConnection(hostname)
    assert ServerConnection("build_host.example").hostname == "build_host.example"
    conn = ServerConnection("pop.test")
    with pytest.raises(ValueError, match="cannot name this server"):
        conn.hostname = hostname  # set after construction: the same check
    assert conn.hostname == "pop.test"


def test_a_status_line_is_made_once_and_sent_as_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes of a ``+OK`` or ``-ERR`` answer are made once, for the length check of
    RFC 2449 §4 and to be sent: the line sent is the line checked, at one call a
    command (issue 17)."""
    conn = logged_in()
    made: list[Ok | Err] = []
    ok_bytes, err_bytes = Ok.to_bytes, Err.to_bytes

    def counted_ok(self: Ok) -> bytes:
        made.append(self)
        return ok_bytes(self)

    def counted_err(self: Err) -> bytes:
        made.append(self)
        return err_bytes(self)

    monkeypatch.setattr(Ok, "to_bytes", counted_ok)
    monkeypatch.setattr(Err, "to_bytes", counted_err)
    receive(conn, b"RETR 1\r\n")
    assert conn.send(Ok("120 octets")) == b"+OK 120 octets\r\n"
    assert conn.send(EndOfResponse()) == b".\r\n"
    receive(conn, b"DELE 9\r\n")
    assert conn.send(Err("No such message")) == b"-ERR No such message\r\n"
    assert made == [Ok("120 octets"), Err("No such message")]


def test_the_state_is_read_without_a_python_call() -> None:
    """The server's session reads ``state`` before every read: a property read in C,
    as the SMTP machine's (a Python call twice a RETR, issue 17)."""
    conn = logged_in()
    with python_calls() as calls:
        state = conn.state
    assert state is State.TRANSACTION
    assert calls == []


@settings(max_examples=200)
@given(sst.hostnames(), st.booleans())
def test_the_greeting_is_sendable_for_every_hostname_the_machine_takes(
    hostname: str, apop: bool
) -> None:
    """A status line is at most 512 octets (RFC 2449 §4) and a hostname may have 255:
    the greeting named the host twice (first, and in the APOP timestamp), so a name of
    some 230 octets made a greeting that send() refused, and every client got -ERR. The
    timestamp (RFC 1939 §7) stays whole and last; a non-ASCII name stands in it in its
    A-label form, for a timestamp is ASCII."""
    conn = ServerConnection(hostname, apop=apop)
    greeting = conn.greeting(4_194_304, "1796546431629259475.1")
    assert len(conn.send(greeting)) <= 512
    assert conn.state is State.AUTHORIZATION
    if apop:
        assert conn.apop_timestamp is not None
        assert greeting.text.endswith(conn.apop_timestamp)
        assert conn.apop_timestamp.startswith("<4194304.1796546431629259475.1@")
    assert greeting.text.isascii()  # UTF-8 only in UTF8 mode (RFC 6856 §2)
    if len(timestamp_host(hostname)) < 200:  # an A-label may run longer than its UTF-8
        assert greeting.text.startswith(f"{timestamp_host(hostname)} POP3 server ready")


def test_a_long_hostname_leaves_the_head_of_the_greeting() -> None:
    hostname = ("a" * 63 + ".") * 3 + "b" * 40  # 232 octets: the audit's name
    greeting = ServerConnection(hostname).greeting(12345, "1796546431629259475.1")
    assert greeting == Ok(f"POP3 server ready <12345.1796546431629259475.1@{hostname}>")
    assert ServerConnection(hostname).greeting() == Ok(f"{hostname} POP3 server ready")
    assert ServerConnection("mäil.example").greeting(1, 2) == Ok(
        "xn--mil-qla.example POP3 server ready <1.2@xn--mil-qla.example>"
    )


def test_a_non_ascii_hostname_heads_the_greeting_in_its_a_label_form() -> None:
    """A server sends UTF-8 in a response only in UTF8 mode (RFC 6856 §2), and the
    greeting comes before any command: the name that heads it went as UTF-8."""
    conn = ServerConnection("MÄIL.Example", utf8=True)
    wire = conn.send(conn.greeting())
    assert wire == b"+OK xn--mil-qla.example POP3 server ready\r\n"


class TestBareAuth:
    """``AUTH`` with no argument: the RFC 1734-era probe some clients still send before
    choosing a mechanism. RFC 5034 does not define it; Dovecot answers ``+OK`` and the
    mechanisms one a line, as CAPA's SASL line names them. It got ``-ERR Syntax``."""

    def test_is_a_multiline_command_answered_from_the_sasl_line(self) -> None:
        conn = greeted(sasl_mechanisms=["plain", "LOGIN"])
        event = receive(conn, b"AUTH\r\n")
        assert event == AuthMechanisms()
        assert conn.offered_mechanisms() == ("PLAIN", "LOGIN")
        assert "SASL PLAIN LOGIN" in conn.capabilities()
        conn.send(Ok())
        conn.send(ResponseData(format_lines(conn.offered_mechanisms())))
        assert conn.send(EndOfResponse()) == b".\r\n"
        assert conn.state is State.AUTHORIZATION  # no SASL exchange was entered
        assert receive(conn, b"auth  \r\n") == AuthMechanisms()

    def test_is_refused_where_auth_is(self) -> None:
        assert isinstance(receive(greeted(), b"AUTH\r\n"), BadCommand)  # no mechanisms
        event = receive(greeted(sasl_mechanisms=["PLAIN"], require_tls=True), b"AUTH\r\n")
        assert isinstance(event, BadCommand) and event.response.code == "AUTH"
        event = receive(logged_in(sasl_mechanisms=["PLAIN"]), b"AUTH\r\n")
        assert isinstance(event, BadCommand) and event.response.text == "Already logged in"

    def test_the_client_machine_reads_the_listing(self) -> None:
        server = ServerConnection("pop.test", sasl_mechanisms=["PLAIN", "LOGIN"])
        pair = POP3ConnectionPair(server=server)
        pair.send(AuthMechanisms())
        assert pair.server_events[-1] == AuthMechanisms()
        assert pair.client_events[-3:] == [
            Ok(),
            ResponseData(b"PLAIN\r\nLOGIN\r\n"),
            EndOfResponse(),
        ]
        assert pair.client.state is State.AUTHORIZATION
