"""The standard library's poplib against the server machine, over a socket pair.

A small blocking loop drives :class:`ServerConnection` in a thread, with a
maildrop held in memory; poplib speaks to it through a connected socket pair,
so nothing listens on any address.
"""

from __future__ import annotations

import poplib
import socket
import threading
from collections.abc import Iterator

import pytest

from smtpcore import NEED_DATA
from smtpcore.pop3 import (
    Apop,
    BadCommand,
    Capa,
    ConnectionClosed,
    Dele,
    EndOfResponse,
    Err,
    Event,
    List,
    MessageNumbers,
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
    Top,
    Uidl,
    User,
    Utf8,
    apop_matches,
    format_lines,
)

MESSAGES = [
    b"Subject: one\n\nbody\n.leading dot\n..two dots\n.\nend\n",
    # poplib reads lines of at most 2048 octets.
    b"Subject: two\r\nX-Long: " + b"y" * 1500 + b"\r\n\r\n" + b"line\r\n" * 500,
    b"Subject: three\n\nlast",
]
SECRET = "tanstaaf"


class Maildrop:
    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages
        self.numbers = MessageNumbers(len(messages))
        self.removed: list[int] = []

    def size(self, number: int) -> int:
        return len(self.messages[number - 1].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def serve(sock: socket.socket, drop: Maildrop) -> None:
    conn = ServerConnection("pop.pqr.example", utf8=True)
    sock.sendall(conn.send(conn.greeting(4242, 1)))
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        if isinstance(event, ConnectionClosed):
            break
        assert isinstance(event, Event)
        for answer in respond(conn, drop, event):
            sock.sendall(conn.send(answer))
        if conn.state is State.CLOSED:
            break
    sock.close()


def respond(conn: ServerConnection, drop: Maildrop, event: Event) -> Iterator[Event]:
    numbers = drop.numbers
    if isinstance(event, BadCommand):
        yield event.response
    elif isinstance(event, (User, Utf8, Noop)):
        yield Ok()
    elif isinstance(event, Pass):
        yield Ok("logged in") if event.password == SECRET else Err("no", code="AUTH")
    elif isinstance(event, Apop):
        stamp = conn.apop_timestamp or ""
        ok = apop_matches(stamp, SECRET, event.digest)
        yield Ok("logged in") if ok else Err("no", code="AUTH")
    elif isinstance(event, Capa):
        yield Ok("Capability list follows")
        yield ResponseData(format_lines(conn.capabilities()))
        yield EndOfResponse()
    elif isinstance(event, Stat):
        yield Ok(f"{len(numbers)} {sum(drop.size(n) for n in numbers)}")
    elif isinstance(event, (List, Uidl)):
        values = {n: str(drop.size(n)) if isinstance(event, List) else f"uid{n}" for n in numbers}
        if event.message is None:
            yield Ok()
            yield ResponseData(format_lines(f"{n} {value}" for n, value in values.items()))
            yield EndOfResponse()
        else:
            problem = numbers.check(event.message)
            yield problem or Ok(f"{event.message} {values[event.message]}")
    elif isinstance(event, (Retr, Top)):
        problem = numbers.check(event.message)
        if problem is not None:
            yield problem
            return
        content = drop.messages[event.message - 1]
        if isinstance(event, Top):
            header, _, body = content.replace(b"\r\n", b"\n").partition(b"\n\n")
            content = header + b"\n\n" + b"".join(body.splitlines(True)[: event.lines])
        yield Ok()
        for start in range(0, len(content), 1000):
            yield ResponseData(content[start : start + 1000])
        yield EndOfResponse()
    elif isinstance(event, Dele):
        yield drop.numbers.delete(event.message) or Ok("deleted")
    elif isinstance(event, Rset):
        numbers.reset()
        yield Ok()
    elif isinstance(event, Quit):
        if conn.state is State.UPDATE:
            drop.removed = sorted(numbers.deleted)
        yield Ok("bye")
    else:
        yield Err("not served here")


class Client(poplib.POP3):
    """poplib over a ready socket instead of a TCP connection."""

    def __init__(self, sock: socket.socket) -> None:
        self._given = sock
        super().__init__("pop.pqr.example", 110, timeout=10)

    def _create_socket(self, timeout: float) -> socket.socket:
        return self._given


@pytest.fixture
def session() -> Iterator[tuple[Client, Maildrop]]:
    ours, theirs = socket.socketpair()
    drop = Maildrop(list(MESSAGES))
    thread = threading.Thread(target=serve, args=(ours, drop), daemon=True)
    thread.start()
    client = Client(theirs)
    yield client, drop
    client.close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def wire_lines(message: bytes) -> list[bytes]:
    """The lines poplib returns for a message: CRLF lines, dot-stuffing undone."""
    return message.replace(b"\r\n", b"\n").removesuffix(b"\n").split(b"\n")


def test_poplib_session(session: tuple[Client, Maildrop]) -> None:
    client, drop = session
    assert client.getwelcome().startswith(b"+OK pop.pqr.example POP3 server ready <4242.1@")
    capabilities = client.capa()
    assert "PIPELINING" in capabilities and "UIDL" in capabilities
    client.user("mrose")
    with pytest.raises(poplib.error_proto):
        client.pass_("wrong")
    client.user("mrose")
    client.pass_(SECRET)
    assert client.stat() == (3, sum(drop.size(n) for n in (1, 2, 3)))
    _, listing, _ = client.list()
    assert listing == [f"{n} {drop.size(n)}".encode() for n in (1, 2, 3)]
    assert client.uidl(2) == b"+OK 2 uid2"
    for number, message in enumerate(MESSAGES, 1):
        _, lines, _ = client.retr(number)
        assert lines == wire_lines(message)
    _, lines, _ = client.top(1, 1)
    assert lines == [b"Subject: one", b"", b"body"]
    with pytest.raises(poplib.error_proto):
        client.retr(4)
    client.dele(1)
    with pytest.raises(poplib.error_proto):
        client.retr(1)
    client.rset()
    client.dele(3)
    client.noop()
    assert drop.removed == []  # nothing goes before QUIT
    client.quit()
    assert drop.removed == [3]


def test_poplib_apop_and_utf8(session: tuple[Client, Maildrop]) -> None:
    client, drop = session
    client.utf8()
    client.apop("mrose", SECRET)
    assert client.stat()[0] == 3
    client.quit()
    assert drop.removed == []
