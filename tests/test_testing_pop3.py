"""smtpcore.testing for POP3: CAPA, STLS and SASL as RFC 2449, 2595 and 5034 say.

Sessions play through a :class:`POP3ConnectionPair` without a refusal
(STLS, cancelled and completed AUTH exchanges among them), narrowed
capabilities narrow what is drawn, responses carry real capability lines
and only the response codes that apply, and the permissive peer runs the
SASL exchanges a real server would.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from smtpcore import ProtocolError, pop3
from smtpcore.testing import POP3ConnectionPair, permissive_pop3_answer, run_pop3_server
from smtpcore.testing import strategies as sst
from smtpcore.testing._numbers import malformed_numbers

SESSIONS = settings(max_examples=40)
MECHANISMS = ["PLAIN", "LOGIN"]


def full_server() -> pop3.ServerConnection:
    return pop3.ServerConnection("pop.test", stls=True, sasl_mechanisms=MECHANISMS)


# -- sessions -------------------------------------------------------------------------


@SESSIONS
@given(sst.pop3_sessions(), sst.chunk_sizes(), sst.chunk_sizes())
def test_pop3_sessions_play_through_a_pair(
    session: sst.POP3Session, up: list[int], down: list[int]
) -> None:
    """The default client learns PIPELINING from CAPA (the session asks first), starts
    TLS, runs the SASL exchange and logs in; the only -ERR is a cancelled AUTH's."""
    pair = POP3ConnectionPair(server=full_server(), client_chunks=up, server_chunks=down)
    pair.play(session)
    assert pair.server_events == [*session.commands, pop3.ConnectionClosed()]
    cancels = sum(1 for c in session.commands if isinstance(c, pop3.AuthResponse) and c.cancel)
    assert sum(isinstance(e, pop3.Err) for e in pair.client_events) == cancels
    assert pair.client.state is pop3.State.CLOSED
    assert pair.server.tls == any(isinstance(c, pop3.Stls) for c in session.commands)


@SESSIONS
@given(
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.lists(st.sampled_from(MECHANISMS), unique=True),
    st.data(),
)
def test_sessions_drawn_from_a_servers_own_capabilities_log_in(
    stls: bool, pipelining: bool, user: bool, mechanisms: list[str], data: st.DataObject
) -> None:
    def server() -> pop3.ServerConnection:
        return pop3.ServerConnection(
            "pop.test", stls=stls, pipelining=pipelining, user=user, sasl_mechanisms=mechanisms
        )

    if not user and not mechanisms:
        with pytest.raises(InvalidArgument):
            sst.pop3_sessions(capabilities=server().capabilities())
        return
    session = data.draw(sst.pop3_sessions(capabilities=server().capabilities()))
    pair = POP3ConnectionPair(server=server())
    pair.play(session)
    assert not any(isinstance(e, pop3.BadCommand) for e in pair.server_events)
    assert pair.server.state is pop3.State.CLOSED
    commands = session.commands
    if not pipelining:
        assert all(len(group) == 1 for group in session.groups)
    if not stls:
        assert not any(isinstance(c, pop3.Stls) for c in commands)
    if not user:
        assert not any(isinstance(c, pop3.User | pop3.Pass) for c in commands)
    assert {c.mechanism for c in commands if isinstance(c, pop3.Auth)} <= set(mechanisms)


SHAPES: dict[str, Callable[[sst.POP3Session], bool]] = {
    "capa": lambda s: s.groups[0] == (pop3.Capa(),),
    "stls": lambda s: (pop3.Stls(),) in s.groups,
    "cancel": lambda s: pop3.AuthResponse(cancel=True) in s.commands,
    "plain-initial": lambda s: any(
        isinstance(c, pop3.Auth) and c.initial_response for c in s.commands
    ),
    "plain-challenge": lambda s: (
        (pop3.Auth("PLAIN"),) in s.groups and pop3.AuthResponse(cancel=True) not in s.commands
    ),
    "login": lambda s: (pop3.AuthResponse(b"tan staaf"),) in s.groups,
    "user": lambda s: (pop3.User("mrose"),) in s.groups,
    "pipelined": lambda s: any(len(g) > 1 for g in s.groups),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_login_and_extension_can_be_drawn(shape: str) -> None:
    find(sst.pop3_sessions(), SHAPES[shape])


def test_a_session_without_a_playable_login_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="USER, or SASL"):
        sst.pop3_sessions(capabilities=["SASL GSSAPI", "TOP"])
    with pytest.raises(InvalidArgument, match="STLS"):
        sst.pop3_sessions(capabilities=["USER"], tls=True)
    with pytest.raises(InvalidArgument, match="cannot be sent"):
        sst.pop3_sessions(user="two words\r\n")


@given(sst.pop3_sessions(capabilities=["USER", "STLS"], tls=True, user="jane", password="pw"))
def test_tls_true_always_starts_tls_and_the_credentials_are_used(
    session: sst.POP3Session,
) -> None:
    assert session.groups[0] in ((pop3.Stls(),), (pop3.Capa(),))
    assert (pop3.Stls(),) in session.groups
    assert (pop3.User("jane"),) in session.groups and (pop3.Pass("pw"),) in session.groups


# -- the permissive peer ----------------------------------------------------------------


def exchange(*lines: bytes) -> bytes:
    server = full_server()
    server.send(pop3.Ok("ready"))
    _, out = run_pop3_server(server, b"".join(line + b"\r\n" for line in lines))
    return out


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_the_permissive_peer_runs_a_login_exchange() -> None:
    """AUTH LOGIN once got +OK at once, so a client that sends the user name got
    ``-ERR`` for a command it never meant to send."""
    out = exchange(b"AUTH LOGIN", b64(b"jane"), b64(b"secret"), b"STAT")
    assert out == b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK Logged in\r\n+OK 1 120\r\n"


def test_the_permissive_peer_runs_plain_cancel_and_refuses_a_malformed_message() -> None:
    out = exchange(b"AUTH PLAIN", b"*", b"AUTH PLAIN", b64(b"no nul"), b"AUTH PLAIN =")
    assert out.split(b"\r\n")[:-1] == [
        b"+ ",
        b"-ERR Authentication cancelled",
        b"+ ",
        b"-ERR [AUTH] PLAIN message needs exactly two NUL separators",
        b"-ERR [AUTH] PLAIN message needs exactly two NUL separators",
    ]
    assert exchange(b"AUTH PLAIN " + b64(b"\x00jane\x00pw"), b"STAT").endswith(b"+OK 1 120\r\n")


def test_the_permissive_peer_lists_the_machines_own_capabilities() -> None:
    server = full_server()
    server.send(pop3.Ok("ready"))
    answer = permissive_pop3_answer(server, pop3.Capa())
    assert answer is not None
    assert answer[1] == pop3.ResponseData(pop3.format_lines(server.capabilities()))
    assert b"STLS\r\n" in pop3.format_lines(server.capabilities())


# -- responses --------------------------------------------------------------------------

# RFC 2449 §9: capability = capa-tag *(SP param), cchar excludes ".", 512 octets at most.
CAPABILITY_LINE = re.compile(rb"[\x21-\x2d\x2f-\x7f]+(?: [\x21-\x7f]+)*")
TAGS = {
    "TOP",
    "USER",
    "SASL",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
    "UIDL",
    "EXPIRE",
    "LOGIN-DELAY",
    "IMPLEMENTATION",
    "STLS",
    "UTF8",
    "LANG",
}


@given(sst.pop3_capabilities(transaction=True))
def test_capability_lines_follow_rfc_2449(lines: list[str]) -> None:
    for line in lines:
        assert CAPABILITY_LINE.fullmatch(line.encode()) and len(line) + 2 <= 512
        tag, *params = line.split(" ")
        assert tag in TAGS or tag.startswith("X-"), line
        if tag in ("EXPIRE", "LOGIN-DELAY"):
            assert params[0] == "NEVER" or (params[0].isascii() and params[0].isdigit())
            assert params[1:] in ([], ["USER"])
        if tag == "SASL":
            assert params


@given(sst.pop3_responses(pop3.Capa()))
def test_capa_is_answered_with_capability_lines_a_client_reads(
    response: list[pop3.Event],
) -> None:
    pair = POP3ConnectionPair(answer=Script([response]))
    pair.send(pop3.Capa())
    if isinstance(response[0], pop3.Err):
        assert pair.client.capabilities is None
        return
    content = b"".join(e.data for e in response if isinstance(e, pop3.ResponseData))
    lines = content.decode().splitlines()
    assert pair.client.capabilities == pop3.parse_capabilities(content)
    assert all(CAPABILITY_LINE.fullmatch(line.encode()) for line in lines)


class Script:
    """A maildrop that answers each event with the next planned response."""

    def __init__(self, answers: list[list[pop3.Event]]) -> None:
        self.answers: Iterator[list[pop3.Event]] = iter(answers)

    def __call__(self, conn: pop3.ServerConnection, event: pop3.Event) -> list[pop3.Event]:
        return next(self.answers)


# IANA's POP3 response codes: which commands each applies to (RFC 2449 §8, 3206, 6856).
APPLIES = {
    "LOGIN-DELAY": (pop3.User, pop3.Pass, pop3.Apop, pop3.Auth, pop3.AuthResponse),
    "IN-USE": (pop3.Pass, pop3.Apop, pop3.Auth, pop3.AuthResponse),
    "AUTH": (pop3.User, pop3.Pass, pop3.Apop, pop3.Auth, pop3.AuthResponse),
    "UTF8": (pop3.List, pop3.Top, pop3.Retr),
    "SYS/TEMP": (pop3.Command, pop3.AuthResponse),
    "SYS/PERM": (pop3.Command, pop3.AuthResponse),
}


@given(
    st.one_of(
        sst.pop3_commands(login=True),
        st.builds(pop3.AuthResponse, st.binary(max_size=10)),
        st.just(pop3.AuthResponse(cancel=True)),
    ).flatmap(lambda command: st.tuples(st.just(command), sst.pop3_responses(command)))
)
def test_responses_carry_only_the_codes_that_apply(
    case: tuple[pop3.Command | pop3.AuthResponse, list[pop3.Event]],
) -> None:
    command, response = case
    first = response[0]
    if isinstance(first, pop3.Err) and first.code is not None:
        assert isinstance(command, APPLIES[first.code]), (command, first)
    if isinstance(command, pop3.AuthResponse) and command.cancel:
        assert isinstance(first, pop3.Err)  # RFC 5034 §4
    if isinstance(first, pop3.Continue):
        assert isinstance(command, pop3.Auth | pop3.AuthResponse)
    if isinstance(command, pop3.Stat) and isinstance(first, pop3.Ok):
        assert pop3.parse_stat(first.text)
    if isinstance(command, pop3.List) and isinstance(first, pop3.Ok):
        content = b"".join(e.data for e in response if isinstance(e, pop3.ResponseData))
        assert pop3.parse_listing(content if command.message is None else first.text) is not None
    if isinstance(command, pop3.Uidl) and isinstance(first, pop3.Ok):
        content = b"".join(e.data for e in response if isinstance(e, pop3.ResponseData))
        pop3.parse_uid_listing(content if command.message is None else first.text)


@settings(max_examples=60)
@given(st.data())
def test_an_auth_exchange_of_drawn_responses_reads_back(data: st.DataObject) -> None:
    """The server machine sends each drawn answer of an AUTH exchange (challenges,
    then +OK or -ERR) and the client machine reads the same answers."""
    server = pop3.ServerConnection("pop.test", sasl_mechanisms=["PLAIN"])
    answers: list[list[pop3.Event]] = []
    pair = POP3ConnectionPair(server=server, answer=lambda conn, event: answers.pop(0))
    sent: pop3.Command | pop3.AuthResponse = pop3.Auth("PLAIN")
    for _ in range(4):
        response = data.draw(sst.pop3_responses(sent))
        answers.append(response)
        pair.send(sent)
        assert pair.client_events[-1] == response[0]
        if not isinstance(response[0], pop3.Continue):
            break
        assert pair.client.state is pop3.State.SASL
        sent = data.draw(
            st.builds(pop3.AuthResponse, st.binary(max_size=20))
            | st.just(pop3.AuthResponse(cancel=True))
        )
    expected = pop3.State.TRANSACTION if isinstance(response[0], pop3.Ok) else None
    if expected is not None:
        assert pair.client.state is expected and pair.server.state is expected


# Every command of RFC 1939 (its optional ones too), CAPA (2449), STLS (2595),
# AUTH (5034) and UTF8 (6856), as it starts a line: with its argument, or alone.
POP3_LINE_STARTS = [
    *(b"USER ", b"PASS ", b"APOP ", b"STAT\r\n", b"LIST ", b"RETR ", b"DELE "),
    *(b"NOOP\r\n", b"RSET\r\n", b"QUIT\r\n", b"TOP ", b"UIDL ", b"UIDL\r\n"),
    *(b"CAPA\r\n", b"STLS\r\n", b"AUTH ", b"UTF8\r\n", b"*\r\n"),
]


@pytest.mark.parametrize("start", POP3_LINE_STARTS)
def test_every_pop3_command_is_drawn_as_a_valid_line(start: bytes) -> None:
    """``pop3_command_lines`` draws every command (DELE was only ever drawn as the
    hostile ``DELE 0``), and the ``*`` that cancels an AUTH exchange."""
    line = find(sst.pop3_command_lines(), lambda line: line.startswith(start))
    assert line.endswith(b"\r\n")


# -- hostile lines from the grammar ---------------------------------------------------

FIND_ONCE = settings(database=None, derandomize=True, max_examples=5000)
FIND_RARE = settings(database=None, derandomize=True, max_examples=50_000)
"""For a line about one draw in 2,000 (a negative count in a TOP line): the search
stops at the first one found."""


@pytest.mark.parametrize(
    "count", [rb"-[0-9]+", rb"0+", rb"[1-9][0-9]{9,}"], ids=["negative", "zero", "huge"]
)
def test_hostile_lines_put_hostile_counts_in_top(count: bytes) -> None:
    """The hostile lines were a fixed list and random octets: TOP's line count was
    never negative (none in 5,000 draws). Built from the grammar, every number slot
    gets the shared hostile numbers, one slot a line, so that a valid message number
    precedes a hostile count (``TOP 1 -1``): with both slots hostile, the message
    number's refusal hid the count's from the parser."""
    pattern = re.compile(rb"TOP [1-9][0-9]{0,8} " + count + rb"\r\n")
    line = find(
        sst.pop3_command_lines(hostile=True),
        lambda line: pattern.fullmatch(line) is not None,
        settings=FIND_RARE,
    )
    assert line.startswith(b"TOP ")


def test_hostile_lines_put_over_long_numbers_inside_the_line_limit() -> None:
    """A number slot was 255 digits wide whatever else the line held, so its over-long
    runs made lines past POP3's 255 octets (RFC 2449 §4), which the line limit refuses
    before any number parser reads them. The width is now the room left on the line."""
    pattern = re.compile(rb"(?:LIST|RETR|DELE|UIDL|TOP 1|TOP) [0-9]{21,}(?: 1)?\r\n")
    line = find(
        sst.pop3_command_lines(hostile=True),
        lambda line: len(line) <= 255 and pattern.fullmatch(line) is not None,
        settings=FIND_ONCE,
    )
    assert len(line) <= 255


def logged_in_server() -> pop3.ServerConnection:
    server = pop3.ServerConnection("pop.test")
    server.send(pop3.Ok("ready"))
    run_pop3_server(server, b"USER mrose\r\nPASS secret\r\n")
    assert server.state is pop3.State.TRANSACTION
    return server


NUMBER_SLOTS = ["LIST {}", "RETR {}", "DELE {}", "UIDL {}", "TOP {} 1", "TOP 1 {}"]


@given(st.sampled_from(NUMBER_SLOTS), malformed_numbers(max_digits=255))
def test_a_malformed_number_in_any_slot_is_answered_err(slot: str, number: str) -> None:
    """Signed, other scripts' digits, trailing garbage, too many digits: wherever
    POP3 wants a number (RFC 1939 §5, §7), the machine answers -ERR itself, and
    the session goes on."""
    server = logged_in_server()
    events, out = run_pop3_server(server, (slot.format(number) + "\r\n").encode())
    assert [type(event) for event in events] == [pop3.BadCommand], events
    assert out.startswith(b"-ERR ") and out.count(b"\r\n") == 1, out
    assert server.state is pop3.State.TRANSACTION


@given(st.lists(sst.pop3_command_lines(hostile=True), max_size=8))
def test_the_server_machine_takes_hostile_lines_after_login(lines: list[bytes]) -> None:
    """Logged in, where the numbers are read: nothing but a ProtocolError escapes,
    and a line the machine cannot read gets its -ERR."""
    server = logged_in_server()
    for line in lines:
        try:
            events, out = run_pop3_server(server, line)
        except ProtocolError:
            return
        if any(isinstance(event, pop3.BadCommand) for event in events):
            assert b"-ERR" in out
        if server.state is not pop3.State.TRANSACTION:
            return
