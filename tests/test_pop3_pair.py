"""Client and server machines back to back, chunked anywhere, and fed garbage.

Property tests: whatever the chunk boundaries, the same bytes give the same
events; the two machines agree on every command, every response and every
byte of multi-line content; and arbitrary bytes make either machine raise
nothing but :class:`RemoteProtocolError` while its buffer stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore import NEED_DATA, PAUSED, RemoteProtocolError
from smtpcore.pop3 import (
    Auth,
    AuthResponse,
    BadCommand,
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
    ServerConnection,
    Stat,
    State,
    Stls,
    Top,
    Uidl,
    User,
)

SETTINGS = settings(max_examples=100, deadline=None)


def chunks(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """Split ``data`` into pieces of the given sizes, cycling through them."""
    start, index = 0, 0
    while start < len(data):
        size = sizes[index % len(sizes)]
        yield data[start : start + size]
        start += size
        index += 1


def merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if isinstance(event, ResponseData):
            if not event.data:
                continue
            if out and isinstance(out[-1], ResponseData):
                out[-1] = ResponseData(out[-1].data + event.data)
                continue
        out.append(event)
    return out


def normalized(content: bytes) -> bytes:
    """What a client reads back from content the server sent (RFC 1939 §3: CRLF lines)."""
    text = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return text


# -- back to back -----------------------------------------------------------

CONTENT_PIECES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b".", b"..", b"...", b"\r\n", b"\r", b"\n", b".\r\n", b"\r\n.\r\n", b"\r\n.", b"x"]
    ),
)
TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="[]"), max_size=30
).map(str.strip)
NUMBERS = st.integers(1, 2**31 - 1)
COMMANDS = st.one_of(
    st.just(Stat()),
    st.builds(List, st.none() | NUMBERS),
    st.builds(Uidl, st.none() | NUMBERS),
    st.builds(Retr, NUMBERS),
    st.builds(Top, NUMBERS, st.integers(0, 2**31 - 1)),
    st.builds(Dele, NUMBERS),
    st.just(Noop()),
    st.just(Rset()),
    st.just(Capa()),
)


@st.composite
def answers(draw: st.DrawFn, command: Command) -> list[Event]:
    if draw(st.booleans()):
        code = draw(st.none() | st.sampled_from(["IN-USE", "SYS/TEMP", "SYS/PERM", "AUTH"]))
        return [Err(draw(TEXT), code=code)]
    answer: list[Event] = [Ok(draw(TEXT))]
    if command.multiline:
        pieces = draw(st.lists(CONTENT_PIECES, max_size=12))
        answer += [ResponseData(piece) for piece in pieces]
        answer.append(EndOfResponse())
    return answer


@st.composite
def sessions(draw: st.DrawFn) -> list[tuple[Command, list[Event]]]:
    commands = draw(st.lists(COMMANDS, max_size=8))
    return [(command, draw(answers(command))) for command in commands]


def pump_server(
    server: ServerConnection, script: Iterator[list[Event]]
) -> tuple[list[Event], bytes]:
    """Take every event the server has, answering each with the next answer of ``script``."""
    received: list[Event] = []
    out = b""
    while True:
        event = server.next_event()
        if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
            return received, out
        received.append(event)
        for answer in next(script):
            out += server.send(answer)


def pump_client(client: ClientConnection) -> list[Event]:
    events: list[Event] = []
    while True:
        event = client.next_event()
        if event is NEED_DATA or event is PAUSED:
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


@SETTINGS
@given(
    sessions(), st.lists(st.integers(1, 64), min_size=1), st.lists(st.integers(1, 64), min_size=1)
)
def test_machines_agree_on_everything(
    session: list[tuple[Command, list[Event]]],
    client_sizes: list[int],
    server_sizes: list[int],
) -> None:
    server = ServerConnection("pop.pqr.example")
    client = ClientConnection("client.abc.example", pipelining=True)
    login: list[tuple[Command, list[Event]]] = [
        (User("mrose"), [Ok()]),
        (Pass("tan staaf"), [Ok("2 messages")]),
    ]
    full: list[tuple[Command, list[Event]]] = [*login, *session, (Quit(), [Ok("bye")])]
    script = iter([answer for _, answer in full])

    wire = server.send(Ok("ready <1.2@pop.pqr.example>"))
    for piece in chunks(wire, server_sizes):
        client.receive_data(piece)
    assert pump_client(client) == [Ok("ready <1.2@pop.pqr.example>")]

    to_server = b"".join(client.send(command) for command, _ in full)
    received: list[Event] = []
    to_client = b""
    for piece in chunks(to_server, client_sizes):
        server.receive_data(piece)
        events, out = pump_server(server, script)
        received += events
        to_client += out
    assert received == [command for command, _ in full]
    assert server.state is State.CLOSED

    got: list[Event] = []
    for piece in chunks(to_client, server_sizes):
        client.receive_data(piece)
        got += pump_client(client)
    expected: list[Event] = []
    for _, answer in full:
        content = b"".join(e.data for e in answer if isinstance(e, ResponseData))
        for event in answer:
            if isinstance(event, ResponseData):
                continue
            if isinstance(event, EndOfResponse) and content:
                expected.append(ResponseData(normalized(content)))
            expected.append(event)
    assert merged(got) == [*expected, ConnectionClosed()]
    assert client.state is State.CLOSED


# -- the same bytes, any chunking -----------------------------------------

CLIENT_TOKENS = st.one_of(
    st.sampled_from(
        [
            b"USER mrose\r\n",
            b"PASS secret\r\n",
            b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
            b"AUTH PLAIN\r\n",
            b"AUTH PLAIN AHUAcA==\r\n",
            b"AHUAcA==\r\n",
            b"*\r\n",
            b"CAPA\r\n",
            b"STLS\r\n",
            b"UTF8\r\n",
            b"STAT\r\n",
            b"LIST\r\n",
            b"LIST 1\r\n",
            b"RETR 1\r\n",
            b"TOP 1 0\r\n",
            b"DELE 0\r\n",
            b"UIDL\r\n",
            b"NOOP\r\n",
            b"RSET\r\n",
            b"QUIT\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b"RETR " + b"9" * 300 + b"\r\n",
        ]
    ),
    st.binary(max_size=30),
)


def run_server(data: bytes, sizes: Sequence[int]) -> tuple[list[Event], str]:
    """Feed ``data`` in pieces; answer like a permissive application. Returns events, outcome."""
    server = ServerConnection(
        "pop.pqr.example", sasl_mechanisms=["PLAIN"], stls=True, utf8=True, max_bad_commands=30
    )
    server.send(Ok("ready <1.2@pop.pqr.example>"))
    events: list[Event] = []
    try:
        for piece in chunks(data, sizes):
            server.receive_data(piece)
            while True:
                event = server.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                events.append(event)
                if isinstance(event, ConnectionClosed):
                    return events, "closed"
                answer(server, event)
                assert len(server._buffer) <= 12288 + len(piece)
    except RemoteProtocolError:
        return events, "error"
    return events, server.state.name


def answer(server: ServerConnection, event: Event) -> None:
    if isinstance(event, BadCommand):
        server.send(event.response)
    elif isinstance(event, Auth):
        server.send(Continue(b"challenge"))
    elif isinstance(event, AuthResponse):
        server.send(Err("no"))
    elif isinstance(event, Stls):
        server.send(Err("not now"))
    elif isinstance(event, Command):
        server.send(Ok())
        if event.multiline:
            server.send(ResponseData(b"1 2\r\n.dot\r\n"))
            server.send(EndOfResponse())


@SETTINGS
@given(
    st.lists(CLIENT_TOKENS, max_size=40).map(b"".join), st.lists(st.integers(1, 40), min_size=1)
)
def test_server_events_do_not_depend_on_chunking(data: bytes, sizes: list[int]) -> None:
    assert run_server(data, sizes) == run_server(data, [len(data) or 1])


SERVER_TOKENS = st.one_of(
    st.sampled_from(
        [
            b"+OK\r\n",
            b"+OK 2 320\r\n",
            b"-ERR [IN-USE] locked\r\n",
            b"-ERR\r\n",
            b"+ \r\n",
            b"+ AAAA\r\n",
            b".\r\n",
            b"..x\r\n",
            b"line\r\n",
            b"PIPELINING\r\n",
            b"\r\n",
            b"\r",
            b"\n",
            b"+OK " + b"x" * 3000 + b"\r\n",
        ]
    ),
    st.binary(max_size=30),
)
CLIENT_SCRIPT = [Capa(), User("mrose"), Pass("secret"), Stat(), List(), Retr(1), Uidl(1), Quit()]


def run_client(greeting: bytes, data: bytes, sizes: Sequence[int]) -> tuple[list[Event], str]:
    """Greet a client, pipeline a whole session, then feed the server's bytes in pieces.

    Every command is sent before any answer arrives, so that what the client
    sends cannot depend on where the pieces break.
    """
    client = ClientConnection("client.abc.example", pipelining=True)
    events: list[Event] = []
    try:
        for piece in [greeting, *chunks(data, sizes)]:
            client.receive_data(piece)
            while True:
                event = client.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                events.append(event)
                if isinstance(event, ConnectionClosed):
                    return merged(events), "closed"
                if client.outstanding == () and client.state is State.AUTHORIZATION:
                    for command in CLIENT_SCRIPT:
                        client.send(command)
                assert len(client._buffer) <= 12288 + len(piece)
    except RemoteProtocolError:
        return merged(events), "error"
    return merged(events), client.state.name


@SETTINGS
@given(
    st.lists(SERVER_TOKENS, max_size=40).map(b"".join), st.lists(st.integers(1, 40), min_size=1)
)
def test_client_events_do_not_depend_on_chunking(data: bytes, sizes: list[int]) -> None:
    assert run_client(b"+OK hi\r\n", data, sizes) == run_client(
        b"+OK hi\r\n", data, [len(data) or 1]
    )


# -- garbage in -------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1))
def test_server_survives_arbitrary_bytes(data: bytes, sizes: list[int]) -> None:
    run_server(data, sizes)  # raises nothing but RemoteProtocolError, caught inside


@SETTINGS
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1))
def test_client_survives_arbitrary_bytes(data: bytes, sizes: list[int]) -> None:
    run_client(b"+OK hi\r\n", data, sizes)
    run_client(data[:50], data[50:], sizes)
