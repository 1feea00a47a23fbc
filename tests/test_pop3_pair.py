"""Client and server machines back to back, chunked anywhere, and fed garbage.

Property tests: whatever the chunk boundaries, the same bytes give the same
events; the two machines agree on every command, every response and every
byte of multi-line content; and arbitrary bytes make either machine raise
nothing but :class:`RemoteProtocolError` while its buffer stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator

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
    EndOfResponse,
    Err,
    Event,
    List,
    Ok,
    Pass,
    Quit,
    ResponseData,
    Retr,
    ServerConnection,
    Stat,
    State,
    Stls,
    Uidl,
    User,
)
from smtpcore.testing import POP3ConnectionPair, run_pop3_server
from smtpcore.testing import strategies as sst

SETTINGS = settings(max_examples=100, deadline=None)


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


@st.composite
def sessions(draw: st.DrawFn) -> list[tuple[Command, list[Event]]]:
    commands = draw(st.lists(sst.pop3_commands(), max_size=8))
    return [(command, draw(sst.pop3_responses(command))) for command in commands]


class Script:
    """The maildrop's side: each command answered with the next planned response."""

    def __init__(self, answers: Iterator[list[Event]]) -> None:
        self.answers = answers

    def __call__(self, conn: ServerConnection, event: Event) -> list[Event]:
        return next(self.answers)


@SETTINGS
@given(sessions(), sst.chunk_sizes(), sst.chunk_sizes())
def test_machines_agree_on_everything(
    session: list[tuple[Command, list[Event]]],
    client_sizes: list[int],
    server_sizes: list[int],
) -> None:
    login: list[tuple[Command, list[Event]]] = [
        (User("mrose"), [Ok()]),
        (Pass("tan staaf"), [Ok("2 messages")]),
    ]
    full: list[tuple[Command, list[Event]]] = [*login, *session, (Quit(), [Ok("bye")])]
    pair = POP3ConnectionPair(
        ClientConnection("client.abc.example", pipelining=True),
        ServerConnection("pop.pqr.example"),
        answer=Script(iter([answer for _, answer in full])),
        client_chunks=client_sizes,
        server_chunks=server_sizes,
        greeting=Ok("ready <1.2@pop.pqr.example>"),
    )
    assert pair.client_events == [Ok("ready <1.2@pop.pqr.example>")]
    pair.send(*[command for command, _ in full])
    assert pair.server_events == [*(command for command, _ in full), ConnectionClosed()]
    assert pair.server.state is State.CLOSED

    expected: list[Event] = [Ok("ready <1.2@pop.pqr.example>")]
    for _, answer in full:
        content = b"".join(e.data for e in answer if isinstance(e, ResponseData))
        for event in answer:
            if isinstance(event, ResponseData):
                continue
            if isinstance(event, EndOfResponse) and content:
                expected.append(ResponseData(normalized(content)))
            expected.append(event)
    assert pair.client_events == [*expected, ConnectionClosed()]
    assert pair.client.state is State.CLOSED


# -- the same bytes, any chunking -----------------------------------------


def run_server(pieces: list[bytes]) -> tuple[list[Event], str]:
    """Feed ``pieces``; answer with :func:`answer`. Returns events, outcome."""
    server = ServerConnection(
        "pop.pqr.example", sasl_mechanisms=["PLAIN"], stls=True, utf8=True, max_bad_commands=30
    )
    server.send(Ok("ready <1.2@pop.pqr.example>"))
    events: list[Event] = []
    try:
        for piece in pieces:
            new, _ = run_pop3_server(server, piece, answer=answer)
            events += new
            if events and isinstance(events[-1], ConnectionClosed):
                return events, "closed"
            assert server.buffered <= server.max_buffered + len(piece)
    except RemoteProtocolError:
        return events, "error"
    return events, server.state.name


def answer(server: ServerConnection, event: Event) -> list[Event]:
    """Accept commands, but refuse STLS and every SASL response, so that no
    handshake is needed and AUTH's continuation is reached."""
    if isinstance(event, BadCommand):
        return [event.response]
    if isinstance(event, Auth):
        return [Continue(b"challenge")]
    if isinstance(event, AuthResponse):
        return [Err("no")]
    if isinstance(event, Stls):
        return [Err("not now")]
    if isinstance(event, Command) and event.multiline:
        return [Ok(), ResponseData(b"1 2\r\n.dot\r\n"), EndOfResponse()]
    return [Ok()]


@st.composite
def split(draw: st.DrawFn, data: st.SearchStrategy[bytes]) -> tuple[bytes, list[bytes]]:
    whole = draw(data)
    return whole, draw(sst.chunkings(whole))


@SETTINGS
@given(split(st.lists(sst.pop3_command_lines(hostile=True), max_size=40).map(b"".join)))
def test_server_events_do_not_depend_on_chunking(data: tuple[bytes, list[bytes]]) -> None:
    whole, pieces = data
    assert run_server(pieces) == run_server([whole] if whole else [])


CLIENT_SCRIPT = [Capa(), User("mrose"), Pass("secret"), Stat(), List(), Retr(1), Uidl(1), Quit()]


def run_client(greeting: bytes, pieces: list[bytes]) -> tuple[list[Event], str]:
    """Greet a client, pipeline a whole session, then feed the server's bytes in pieces.

    Every command is sent before any answer arrives, so that what the client
    sends cannot depend on where the pieces break.
    """
    client = ClientConnection("client.abc.example", pipelining=True)
    events: list[Event] = []
    try:
        for piece in [greeting, *pieces]:
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
                assert client.buffered <= client.max_buffered + len(piece)
    except RemoteProtocolError:
        return merged(events), "error"
    return merged(events), client.state.name


@SETTINGS
@given(split(st.lists(sst.pop3_response_lines(hostile=True), max_size=40).map(b"".join)))
def test_client_events_do_not_depend_on_chunking(data: tuple[bytes, list[bytes]]) -> None:
    whole, pieces = data
    assert run_client(b"+OK hi\r\n", pieces) == run_client(b"+OK hi\r\n", [whole] if whole else [])


# -- garbage in -------------------------------------------------------------


@SETTINGS
@given(split(st.binary(max_size=3000)))
def test_server_survives_arbitrary_bytes(data: tuple[bytes, list[bytes]]) -> None:
    run_server(data[1])  # raises nothing but RemoteProtocolError, caught inside


@SETTINGS
@given(split(st.binary(max_size=3000)))
def test_client_survives_arbitrary_bytes(data: tuple[bytes, list[bytes]]) -> None:
    whole, pieces = data
    run_client(b"+OK hi\r\n", pieces)
    run_client(whole[:50], [whole[50:]] if whole[50:] else [])
