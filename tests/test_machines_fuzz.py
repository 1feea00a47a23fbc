"""Hostile bytes in every state of the four machines raise nothing but ``ProtocolError``.

Each machine is brought into each of its states by a short real exchange, then
fed bytes from :func:`smtpcore.testing.strategies.hostile_bytes` (protocol
words mixed with non-ASCII digits, NUL, bare CR and LF, dots) in chunks cut
anywhere, while an application
answers whatever comes with a legal answer picked at random (accept, refuse,
421), and, on the client side, tries a random command between reads. Any
exception outside the ``ProtocolError`` family fails the test; so does a
machine that keeps producing events forever.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore import NEED_DATA, PAUSED, ProtocolError, pop3, smtp
from smtpcore.address import parse_mailbox
from smtpcore.testing import strategies as sst

_STEPS = 5000
"""More events than any fuzz input can hold: a machine past this loops."""

# -- SMTP server -------------------------------------------------------------

_SMTP_ENVELOPE = b"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"


def _smtp_answer(event: smtp.Event, rnd: random.Random) -> smtp.Reply:
    if isinstance(event, smtp.BadCommand | smtp.RejectedMessage):
        return event.reply
    if rnd.random() < 0.2:
        refusals = [smtp.Reply(550, "no"), smtp.Reply(452, "later"), smtp.Reply(421, "bye")]
        return rnd.choice(refusals)
    if isinstance(event, smtp.AuthResponse) and event.cancel:
        return smtp.Reply(501, "cancelled")
    if isinstance(event, smtp.Auth | smtp.AuthResponse):
        return rnd.choice([smtp.Reply.challenge(b"go on"), smtp.Reply(235, "ok")])
    answers: dict[type[smtp.Event], smtp.Reply] = {
        smtp.Data: smtp.Reply(354, "go ahead"),
        smtp.Quit: smtp.Reply(221, "bye"),
        smtp.StartTls: smtp.Reply(220, "go ahead"),
        smtp.Help: smtp.Reply(214, "help"),
    }
    return answers.get(type(event), smtp.Reply(250, "ok"))


def _serve_smtp(conn: smtp.ServerConnection, rnd: random.Random, *, handshake: bool) -> object:
    for _ in range(_STEPS):
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, smtp.ConnectionClosed):
            return event
        if event is PAUSED:
            if isinstance(conn.pending, smtp.Bdat):
                conn.send(_smtp_answer(conn.pending, rnd))
            elif conn.state is smtp.State.GREETING:
                conn.send(smtp.Reply(220, "mx.pqr.example ready"))
            elif conn.state is smtp.State.TLS_PENDING and handshake:
                conn.tls_started()
            else:
                return event
        elif not isinstance(event, smtp.Bdat | smtp.MessageData):
            conn.send(_smtp_answer(event, rnd))
    raise AssertionError("the SMTP server machine never stopped producing events")


def _smtp_server(state: smtp.State) -> smtp.ServerConnection:
    conn = smtp.ServerConnection(
        "mx.pqr.example",
        starttls=True,
        dsn=True,
        auth_mechanisms=("PLAIN",),
        auth_require_tls=False,
    )
    if state is smtp.State.GREETING:
        return conn
    conn.send(smtp.Reply(554 if state is smtp.State.NO_SERVICE else 220, "mx.pqr.example"))
    prefix = {
        smtp.State.READY: b"EHLO a.example\r\n",
        smtp.State.MAIL: b"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\n",
        smtp.State.RCPT: _SMTP_ENVELOPE,
        smtp.State.DATA: _SMTP_ENVELOPE + b"DATA\r\n",
        smtp.State.BDAT: _SMTP_ENVELOPE + b"BDAT 3\r\nabc",
        smtp.State.AUTH: b"EHLO a.example\r\nAUTH PLAIN\r\n",
        smtp.State.TLS_PENDING: b"EHLO a.example\r\nSTARTTLS\r\n",
        smtp.State.CLOSED: b"QUIT\r\n",
        smtp.State.ERROR: _SMTP_ENVELOPE + b"DATA\r\nearly content\r\n",
    }.get(state, b"")
    if prefix:
        conn.receive_data(prefix)
    with contextlib.suppress(ProtocolError):
        _serve_smtp(conn, _Always(), handshake=False)
    return conn


class _Always(random.Random):
    """A 'random' source that always takes the first, accepting answer (a 334 or a
    ``+`` continuation to AUTH), for bringing a machine into a state."""

    def random(self) -> float:
        return 1.0

    def choice(self, seq: Any) -> Any:
        return seq[0]


# -- SMTP client -------------------------------------------------------------

_EHLO_REPLY = (
    b"250-mx.pqr.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-STARTTLS\r\n"
    b"250-AUTH PLAIN\r\n250-SIZE 100000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
    b"250-SMTPUTF8\r\n250 DSN\r\n"
)
_ALICE = parse_mailbox("alice@abc.example")
_BOB = parse_mailbox("bob@pqr.example")
_SMTP_CLIENT_SENDS: tuple[smtp.Event, ...] = (
    smtp.Ehlo("client.abc.example"),
    smtp.Helo("client.abc.example"),
    smtp.Mail(_ALICE),
    smtp.Mail(_ALICE, {"SIZE": "10"}),
    smtp.Rcpt(_BOB),
    smtp.Data(),
    smtp.Bdat(3),
    smtp.Bdat(0, last=True),
    smtp.MessageData(b"abc"),
    smtp.MessageData(b".dot\r\n"),
    smtp.EndOfMessage(),
    smtp.Rset(),
    smtp.Noop(),
    smtp.Quit(),
    smtp.StartTls(),
    smtp.Auth("PLAIN", b"\x00a\x00b"),
    smtp.AuthResponse(b"x"),
    smtp.AuthResponse(cancel=True),
    smtp.Vrfy("x"),
)


def _client_smtp(conn: smtp.ClientConnection, rnd: random.Random) -> object:
    for _ in range(_STEPS):
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, smtp.ConnectionClosed):
            return event
        if event is PAUSED and conn.state is smtp.State.TLS_PENDING:
            conn.tls_started()
        elif rnd.random() < 0.5:
            with contextlib.suppress(ProtocolError):
                conn.send(rnd.choice(_SMTP_CLIENT_SENDS))
        elif event is PAUSED:
            return event
    raise AssertionError("the SMTP client machine never stopped producing events")


def _smtp_client(state: smtp.State) -> smtp.ClientConnection:
    conn = smtp.ClientConnection("client.abc.example")
    first: dict[smtp.State, list[bytes | smtp.Event]] = {
        smtp.State.GREETING: [],
        smtp.State.NO_SERVICE: [b"554 no\r\n"],
        smtp.State.HELLO: [b"220 mx\r\n"],
        smtp.State.CLOSED: [b"220 mx\r\n", smtp.Quit(), b"221 bye\r\n"],
        smtp.State.ERROR: [b"220 mx\r\n", b"garbage\r\n"],
    }
    steps = first.get(state, [b"220 mx\r\n", smtp.Ehlo("client.abc.example"), _EHLO_REPLY])
    envelope: list[bytes | smtp.Event] = [smtp.Mail(_ALICE), b"250 ok\r\n"]
    envelope += [smtp.Rcpt(_BOB), b"250 ok\r\n"]
    then: dict[smtp.State, list[bytes | smtp.Event]] = {
        smtp.State.MAIL: envelope[:2],
        smtp.State.RCPT: envelope,
        smtp.State.DATA: [*envelope, smtp.Data(), b"354 go\r\n"],
        smtp.State.BDAT: [*envelope, smtp.Bdat(1), smtp.MessageData(b"a"), b"250 ok\r\n"],
        smtp.State.AUTH: [smtp.Auth("PLAIN"), b"334 \r\n"],
        smtp.State.TLS_PENDING: [smtp.StartTls(), b"220 go\r\n"],
    }
    steps += then.get(state, [])
    for step in steps:
        if isinstance(step, bytes):
            conn.receive_data(step)
            try:
                while isinstance(conn.next_event(), smtp.Reply):
                    pass
            except ProtocolError:
                pass
        else:
            conn.send(step)
    return conn


# -- POP3 server -------------------------------------------------------------


def _pop3_answer(event: pop3.Event, rnd: random.Random) -> list[pop3.Event]:
    if isinstance(event, pop3.BadCommand):
        return [event.response]
    if isinstance(event, pop3.AuthResponse) and event.cancel:
        return [pop3.Err("cancelled")]
    if rnd.random() < 0.2:
        return [pop3.Err("no")]
    if isinstance(event, pop3.Auth | pop3.AuthResponse):
        return [rnd.choice([pop3.Continue(b"go on"), pop3.Ok("in")])]
    if isinstance(event, pop3.Command) and event.multiline:
        return [pop3.Ok("follows"), pop3.ResponseData(b"1 120\r\n.x\r\n"), pop3.EndOfResponse()]
    return [pop3.Ok("ok")]


def _serve_pop3(conn: pop3.ServerConnection, rnd: random.Random, *, handshake: bool) -> object:
    for _ in range(_STEPS):
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, pop3.ConnectionClosed):
            return event
        if event is PAUSED:
            if conn.state is pop3.State.GREETING:
                conn.send(pop3.Ok("ready"))
            elif conn.state is pop3.State.TLS_PENDING and handshake:
                conn.tls_started()
            elif conn.state is pop3.State.UPDATE:  # the QUIT that ends a transaction
                conn.send(rnd.choice([pop3.Ok("bye"), pop3.Err("some deletes failed")]))
            else:
                return event
        else:
            for answer in _pop3_answer(event, rnd):
                conn.send(answer)
    raise AssertionError("the POP3 server machine never stopped producing events")


def _pop3_server(state: pop3.State) -> pop3.ServerConnection:
    conn = pop3.ServerConnection("pop.pqr.example", sasl_mechanisms=("PLAIN",), stls=True)
    if state is pop3.State.GREETING:
        return conn
    conn.send(pop3.Ok("ready"))
    prefix = {
        pop3.State.USER: b"USER a\r\n",
        pop3.State.SASL: b"AUTH PLAIN\r\n",
        pop3.State.TLS_PENDING: b"STLS\r\n",
        pop3.State.TRANSACTION: b"USER a\r\nPASS b\r\n",
        pop3.State.CLOSED: b"QUIT\r\n",
        pop3.State.ERROR: b"BOGUS\r\n" * 10,
    }.get(state, b"")
    if state is pop3.State.UPDATE:
        prefix = b"USER a\r\nPASS b\r\n"
    if prefix:
        conn.receive_data(prefix)
    with contextlib.suppress(ProtocolError):
        _serve_pop3(conn, _Always(), handshake=False)
    if state is pop3.State.UPDATE:
        conn.receive_data(b"QUIT\r\n")
        assert isinstance(conn.next_event(), pop3.Quit)  # answered once deletions are done
    return conn


# -- POP3 client -------------------------------------------------------------

_POP3_CLIENT_SENDS: tuple[pop3.Event, ...] = (
    pop3.User("a"),
    pop3.Pass("b"),
    pop3.Capa(),
    pop3.Stls(),
    pop3.Auth("PLAIN"),
    pop3.AuthResponse(b"x"),
    pop3.AuthResponse(cancel=True),
    pop3.Stat(),
    pop3.List(),
    pop3.List(1),
    pop3.Retr(1),
    pop3.Top(1, 0),
    pop3.Uidl(),
    pop3.Dele(1),
    pop3.Noop(),
    pop3.Rset(),
    pop3.Quit(),
)


def _client_pop3(conn: pop3.ClientConnection, rnd: random.Random) -> object:
    for _ in range(_STEPS):
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, pop3.ConnectionClosed):
            return event
        if event is PAUSED and conn.state is pop3.State.TLS_PENDING:
            conn.tls_started()
        elif rnd.random() < 0.5:
            with contextlib.suppress(ProtocolError):
                conn.send(rnd.choice(_POP3_CLIENT_SENDS))
        elif event is PAUSED:
            return event
    raise AssertionError("the POP3 client machine never stopped producing events")


def _pop3_client(state: pop3.State) -> pop3.ClientConnection:
    conn = pop3.ClientConnection("client.abc.example")
    login: list[bytes | pop3.Event] = [pop3.User("a"), b"+OK\r\n", pop3.Pass("b"), b"+OK\r\n"]
    steps: list[bytes | pop3.Event] = [] if state is pop3.State.GREETING else [b"+OK hi\r\n"]
    then: dict[pop3.State, list[bytes | pop3.Event]] = {
        pop3.State.USER: login[:2],
        pop3.State.SASL: [pop3.Auth("PLAIN"), b"+ \r\n"],
        pop3.State.TLS_PENDING: [pop3.Stls(), b"+OK go\r\n"],
        pop3.State.TRANSACTION: login,
        pop3.State.UPDATE: [*login, pop3.Quit()],
        pop3.State.CLOSED: [pop3.Quit(), b"+OK bye\r\n"],
        pop3.State.ERROR: [b"+OK unasked\r\n"],
    }
    steps += then.get(state, [])
    for step in steps:
        if isinstance(step, bytes):
            conn.receive_data(step)
            try:
                event = conn.next_event()
                while isinstance(event, pop3.Event) and event != pop3.ConnectionClosed():
                    event = conn.next_event()
            except ProtocolError:
                pass
        else:
            conn.send(step)
    return conn


# -- the property ------------------------------------------------------------

Machine = Any
_MACHINES: dict[str, tuple[Callable[[Any], Machine], Callable[..., object], str]] = {
    "smtp-server": (_smtp_server, lambda c, r: _serve_smtp(c, r, handshake=True), "smtp-client"),
    "smtp-client": (_smtp_client, _client_smtp, "smtp-server"),
    "pop3-server": (_pop3_server, lambda c, r: _serve_pop3(c, r, handshake=True), "pop3-client"),
    "pop3-client": (_pop3_client, _client_pop3, "pop3-server"),
}
_CASES: list[tuple[str, smtp.State | pop3.State]] = [("smtp-server", s) for s in smtp.State]
_CASES += [("smtp-client", s) for s in smtp.State]
_CASES += [("pop3-server", s) for s in pop3.State] + [("pop3-client", s) for s in pop3.State]


@pytest.mark.parametrize(("machine", "state"), _CASES, ids=[f"{m}-{s.name}" for m, s in _CASES])
def test_every_state_is_reached(machine: str, state: Any) -> None:
    build, _, _ = _MACHINES[machine]
    assert build(state).state is state


@pytest.mark.parametrize(("machine", "state"), _CASES, ids=[f"{m}-{s.name}" for m, s in _CASES])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), close=st.booleans())
def test_hostile_bytes_raise_only_protocol_errors(
    machine: str, state: Any, data: st.DataObject, seed: int, close: bool
) -> None:
    build, drive, sent_by = _MACHINES[machine]
    conn = build(state)
    payload = data.draw(sst.hostile_bytes(sent_by=sent_by))
    rnd = random.Random(seed)
    for chunk in data.draw(sst.chunkings(payload)) + ([b""] if close else []):
        try:
            conn.receive_data(chunk)
            drive(conn, rnd)
        except ProtocolError:
            pass


# -- the bound on what a machine holds ---------------------------------------

_LONG_RUNS = st.builds(
    bytes.__mul__, st.sampled_from([b"A", b" ", b"\r", b"\x00", b"."]), st.integers(200, 14_000)
)
"""A run of one octet, no LF in it: the line under way grows past every limit."""


@pytest.mark.parametrize(("machine", "state"), _CASES, ids=[f"{m}-{s.name}" for m, s in _CASES])
@settings(max_examples=25)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_what_a_machine_holds_stays_within_its_bound(
    machine: str, state: Any, data: st.DataObject, seed: int
) -> None:
    """After ``NEED_DATA`` a machine holds at most ``max_buffered`` beyond the last piece
    fed (the fuzzer's check), a bound that follows the state: long lines and hostile
    bytes in any state never take a correct machine past it."""
    build, drive, sent_by = _MACHINES[machine]
    conn = build(state)
    pieces = st.one_of(sst.hostile_bytes(sent_by=sent_by), _LONG_RUNS)
    payload = data.draw(st.lists(pieces, min_size=1, max_size=4).map(b"".join))
    rnd = random.Random(seed)
    for chunk in data.draw(sst.chunkings(payload)):
        try:
            conn.receive_data(chunk)
            stopped = drive(conn, rnd)
        except ProtocolError:
            return
        if stopped is NEED_DATA:
            assert conn.buffered <= conn.max_buffered + len(chunk), (conn.state, len(chunk))


_ENDINGS = {
    "smtp-server": b"QUIT\r\n",
    "pop3-server": b"QUIT\r\n",
    "smtp-client": b"421 4.3.2 closing\r\n",
    "pop3-client": b"-ERR closing\r\n",
}
"""A line that may end the session, whatever state it comes in."""


@pytest.mark.parametrize(("machine", "state"), _CASES, ids=[f"{m}-{s.name}" for m, s in _CASES])
@settings(max_examples=25)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), close=st.booleans())
def test_an_ended_machine_holds_no_more_than_its_bound(
    machine: str, state: Any, data: st.DataObject, seed: int, close: bool
) -> None:
    """Once a machine is in ERROR or CLOSED nothing it holds will be read, so it holds
    at most ``max_buffered`` with no piece added (docs/testing.rst), whatever came
    behind the line that ended the session in the same piece."""
    build, drive, sent_by = _MACHINES[machine]
    conn = build(state)
    before = data.draw(sst.hostile_bytes(sent_by=sent_by))
    behind = data.draw(st.one_of(sst.hostile_bytes(sent_by=sent_by), _LONG_RUNS))
    payload = before + _ENDINGS[machine] + behind
    rnd = random.Random(seed)
    for chunk in data.draw(sst.chunkings(payload)) + ([b""] if close else []):
        with contextlib.suppress(ProtocolError):
            conn.receive_data(chunk)
            drive(conn, rnd)
        if conn.state.name in ("ERROR", "CLOSED"):
            assert conn.buffered <= conn.max_buffered, (conn.state, conn.buffered)


@pytest.mark.parametrize(
    ("state", "bound"),
    [
        (smtp.State.READY, "command"),
        (smtp.State.MAIL, "command"),
        (smtp.State.BDAT, "command"),
        (smtp.State.AUTH, 12_288),
        (smtp.State.DATA, 2),
    ],
)
def test_the_smtp_server_bound_is_the_limit_on_the_line_under_way(
    state: smtp.State, bound: int | str
) -> None:
    """A command line's limit (with what EHLO's extensions add) outside AUTH, an AUTH
    line's in it, and in DATA the two octets a terminator's start may hold back."""
    conn = _smtp_server(state)
    assert conn.state is state
    expected = conn._command_line_limit if bound == "command" else bound
    assert conn.max_buffered == expected
    assert expected == 2 or expected > 512


def test_the_pop3_server_bound_is_the_limit_on_the_line_under_way() -> None:
    """255 octets for a command line, the AUTH line's 12,288 once the line under way
    starts ``AUTH `` where AUTH may be sent, and during the SASL exchange."""
    conn = _pop3_server(pop3.State.AUTHORIZATION)
    assert conn.max_buffered == 255
    conn.receive_data(b"AUTH PLAIN " + b"A" * 1000)
    assert conn.next_event() is NEED_DATA
    assert conn.max_buffered == 12_288 and conn.buffered == 1011
    assert _pop3_server(pop3.State.SASL).max_buffered == 12_288
    assert _pop3_server(pop3.State.TRANSACTION).max_buffered == 255


def test_the_client_bounds_follow_the_reply_under_way() -> None:
    """An SMTP client between replies holds one unfinished reply line at most, and the
    lines of a multi-line reply as they come; a POP3 client one status line (an AUTH
    continuation's during AUTH), and in a multi-line response the octets a
    terminator's start may hold back and the CAPA listing it keeps."""
    smtp_client = _smtp_client(smtp.State.READY)
    assert smtp_client.max_buffered == 4096
    smtp_client.send(smtp.Noop())
    smtp_client.receive_data(b"250-one\r\n250-two\r\n250")
    assert smtp_client.next_event() is NEED_DATA
    assert smtp_client.max_buffered == 3 * 4096
    pop3_client = _pop3_client(pop3.State.AUTHORIZATION)
    assert pop3_client.max_buffered == 2048
    pop3_client.send(pop3.Auth("PLAIN"))
    assert pop3_client.max_buffered == 12_288
    pop3_client = _pop3_client(pop3.State.AUTHORIZATION)
    pop3_client.send(pop3.Capa())
    pop3_client.receive_data(b"+OK\r\nTOP\r\n")
    while pop3_client.next_event() is not NEED_DATA:
        pass
    assert pop3_client.max_buffered == 2 + 16_384
