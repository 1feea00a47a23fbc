"""The link between a session and its transport binds each hot-path method at its
first use, so an idle connection keeps only those its session used (issue 17,
round 3), and stands in for the optional ones a transport lacks."""

from __future__ import annotations

import asyncio
import functools
import socket

import pytest

from smtpcore._asyncio_client_socket import SocketClientTransport
from smtpcore._asyncio_raw import RawSocketTransport
from smtpcore._driver import BoundLink, Link, address
from smtpcore._driver._blocking import SocketTransport
from smtpcore._driver._transport import FastPaths
from smtpcore.asyncio import (
    AsyncioClock,
    AsyncioTransport,
    SMTPClient,
    SMTPServer,
    StreamTransport,
)
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Rcpt, Reply
from smtpcore.trio import TrioTransport


class Minimal:
    """A transport with only the methods every transport has."""

    async def receive_some(self, max_bytes: int) -> bytes:
        return b"data"[:max_bytes]

    async def send_all(self, data: bytes) -> None:
        pass


def _bound(link: Link) -> set[str]:
    """The link's slots that hold a value."""
    bound = set()
    for name in Link.__slots__:
        try:
            object.__getattribute__(link, name)
        except AttributeError:
            continue
        bound.add(name)
    return bound


def test_methods_are_bound_at_first_use_and_kept() -> None:
    async def body() -> None:
        transport = Minimal()
        link = Link(transport, AsyncioClock())  # type: ignore[arg-type]  # a stand-in
        assert _bound(link) == {"transport", "clock"}
        assert await link.receive_some(2) == b"da"
        assert _bound(link) == {"transport", "clock", "receive_some"}
        assert link.receive_some == transport.receive_some
        assert link.receive_some is link.receive_some  # kept, not bound again
        # The optional ones stand in for what the transport lacks.
        assert link.send_nowait(b"x") == 0
        assert link.receive_nowait(10) is None
        assert callable(link.within) and callable(link.deadline)

    asyncio.run(body())


def test_a_sessions_read_is_the_transports_own_unless_the_link_has_a_better_one() -> None:
    """``receive_or_wait`` over a transport with only ``receive_some``: its coroutine is
    the wait, whose result is the bytes; bound once, as the same method, for both."""

    async def body() -> None:
        transport = Minimal()
        link = Link(transport, AsyncioClock())  # type: ignore[arg-type]  # a stand-in
        got = link.receive_or_wait(2)
        assert not isinstance(got, bytes)
        assert await got == b"da"
        assert _bound(link) == {"transport", "clock", "receive_some", "receive_or_wait"}
        assert link.receive_or_wait is link.receive_some  # one bound method, not two
        assert link.receive_some == transport.receive_some

    asyncio.run(body())


def test_a_transport_without_a_required_method_fails_at_its_use() -> None:
    async def body() -> None:
        link = Link(object(), AsyncioClock())  # type: ignore[arg-type]  # a stand-in
        with pytest.raises(AttributeError):
            link.receive_some  # noqa: B018
        with pytest.raises(AttributeError):
            link.no_such_method  # type: ignore[attr-defined]  # noqa: B018

    asyncio.run(body())


def test_a_clients_link_binds_at_once_what_a_link_binds_at_first_use() -> None:
    """A :class:`BoundLink` (a client's) holds every hot-path method from the start,
    each the one a lazy :class:`Link` of the same transport and clock binds, and
    has no ``__getattr__`` for its reads to go through."""

    async def body() -> None:
        transport, clock = Minimal(), AsyncioClock()
        bound = BoundLink(transport, clock)  # type: ignore[arg-type]  # a stand-in
        lazy = Link(transport, clock)  # type: ignore[arg-type]  # a stand-in
        assert _bound(bound) == set(Link.__slots__)
        assert not hasattr(type(bound), "__getattr__")
        for name in Link.__slots__:
            mine, theirs = getattr(bound, name), getattr(lazy, name)
            if isinstance(mine, functools.partial):  # a read timer of its own
                assert isinstance(theirs, functools.partial)
                assert mine.func == theirs.func and mine.args[1:] == theirs.args[1:]
            else:
                assert mine == theirs, name
        assert bound.receive_or_wait is bound.receive_some
        assert await bound.receive_within(5, 2) == b"da"
        assert bound.send_nowait(b"x") == 0 and bound.receive_nowait(10) is None
        assert not bound.drained()
        with pytest.raises(AttributeError):  # a required method lacking: at once
            BoundLink(object(), clock)  # type: ignore[arg-type]  # a stand-in

    asyncio.run(body())


def test_an_ipv4_address_is_kept_as_it_is_and_others_are_reduced() -> None:
    ipv4 = ("192.0.2.1", 25)
    assert address(ipv4) is ipv4  # no copy held per connection
    assert address(("2001:db8::1", 25, 0, 0)) == ("2001:db8::1", 25)
    assert address("/run/smtp.sock") is None
    assert address(("192.0.2.1", True)) == ("192.0.2.1", 1)  # bool is not int here
    assert type(address(("192.0.2.1", True))[1]) is int  # type: ignore[index]


class NaturalNowaits(StreamTransport):
    """A user's transport with helpers of its own under the names of the library's
    fast paths, meaning what such names often mean: neither is in the
    :class:`~smtpcore.transport.Transport` protocol."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.writer = writer

    def send_nowait(self, data: bytes) -> None:
        """Queue ``data`` without waiting; returns nothing, as ``write()`` does."""
        self.writer.write(data)

    def receive_nowait(self, max_bytes: int) -> bytes:
        """What is buffered: ``b""`` when nothing is, as a non-blocking read says."""
        return b""

    def drained(self) -> bool:
        return True

    def arrived(self) -> bool:
        return True


def test_a_users_transport_gets_the_stand_ins_whatever_its_methods_are_named() -> None:
    """Only the library's own transports (:class:`FastPaths`) have their ``send_nowait``,
    ``receive_nowait``, ``drained`` and ``arrived`` bound: another transport's methods
    of those names mean what their writer meant, not what the driver assumes."""

    async def body() -> None:
        a, b = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=a)
        transport = NaturalNowaits(reader, writer)
        for link in (Link(transport, AsyncioClock()), BoundLink(transport, AsyncioClock())):
            assert link.send_nowait(b"x") == 0 and link.receive_nowait(10) is None
            assert not link.drained() and not link.arrived()
        writer.close()
        b.close()

    asyncio.run(body())


@pytest.mark.parametrize(
    "transport_class",
    [AsyncioTransport, SocketClientTransport, SocketTransport, TrioTransport],
)
def test_the_librarys_own_transports_keep_their_fast_paths(
    transport_class: type[FastPaths],
) -> None:
    """Made without a connection: binding a method reads no field of the transport."""
    transport = transport_class.__new__(transport_class)
    link = Link(transport, object())  # type: ignore[arg-type]  # no clock is used
    for name in ("send_nowait", "receive_nowait", "drained", "arrived", "arrived_in_memory"):
        if hasattr(transport_class, name):
            assert getattr(link, name) == getattr(transport, name), name


class Inbox(Handler):
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope.content)
        return None


@pytest.mark.parametrize("side", ["client", "server"])
def test_a_session_over_a_transport_with_such_names_sends_every_byte_once(side: str) -> None:
    """Its ``send_nowait`` returning None sent each command twice; its ``receive_nowait``
    answering ``b""`` for nothing buffered was taken for the peer's close."""
    inbox = Inbox()
    messages = [b"Subject: %d\r\n\r\nbody\r\n" % n for n in range(3)]

    async def body() -> None:
        a, b = socket.socketpair()
        server_streams = await asyncio.open_connection(sock=a)
        client_streams = await asyncio.open_connection(sock=b)
        server_class = NaturalNowaits if side == "server" else StreamTransport
        client_class = NaturalNowaits if side == "client" else StreamTransport
        server = SMTPServer(inbox, hostname="mx.test")
        serving = asyncio.ensure_future(server.serve_transport(server_class(*server_streams)))
        client = SMTPClient.over_transport(client_class(*client_streams), hostname="c.test")
        async with client:
            for message in messages:
                await client.send_message(message, "a@abc.example", ["b@pqr.example"])
        await serving

    asyncio.run(asyncio.wait_for(body(), 10))
    assert inbox.messages == messages


class Keeping(Minimal):
    """A transport that says a cancelled write of its keeps every byte."""

    keeps_cancelled_sends = True


class Vague(Minimal):
    """A transport whose answer is not ``True``: taken as no answer."""

    keeps_cancelled_sends = "yes"


@pytest.mark.parametrize(
    ("transport", "may_cut"), [(Minimal(), True), (Keeping(), False), (Vague(), True)]
)
def test_a_transport_that_does_not_say_it_keeps_a_cancelled_write_is_taken_to_cut_it(
    transport: object, may_cut: bool
) -> None:
    """The safe default: without ``keeps_cancelled_sends = True`` a cancelled write may
    have left half a reply with the client, so the session adds no last word."""

    async def body() -> None:
        link = Link(transport, AsyncioClock())  # type: ignore[arg-type]  # a stand-in
        assert link.cancelled_send_may_cut() is may_cut

    asyncio.run(body())


def test_the_librarys_transports_say_what_a_cancelled_write_keeps() -> None:
    """asyncio's transports take every byte before they wait; trio's streams drop what
    a cancelled write had not sent. (Only a server reads it: the client-only
    transports do not say.)"""
    assert AsyncioTransport.keeps_cancelled_sends is True
    assert StreamTransport.keeps_cancelled_sends is True
    assert RawSocketTransport.keeps_cancelled_sends is True
    assert TrioTransport.keeps_cancelled_sends is False


class OwnDropping(Minimal):
    """A user's transport with a method of the name the library's own read to drop."""

    async def receive_to_drop(self, max_bytes: int) -> bytes:
        raise AssertionError("a method of the user's, not the library's fast path")


class LibraryDropping(FastPaths, Minimal):
    """One of the library's transports, as the link sees it."""

    async def receive_to_drop(self, max_bytes: int) -> bytes:
        return b"raw"[:max_bytes]


@pytest.mark.parametrize(
    ("transport", "read"),
    [(Minimal(), b"data"), (OwnDropping(), b"data"), (LibraryDropping(), b"raw")],
)
def test_a_linger_reads_through_receive_to_drop_only_on_the_librarys_transports(
    transport: object, read: bytes
) -> None:
    """The linger's read (trio's reads under a broken TLS layer) is the transport's own
    only where it is a :class:`FastPaths` one; any other transport's ``receive_some``."""

    async def body() -> bytes:
        link = Link(transport, AsyncioClock())  # type: ignore[arg-type]  # a stand-in
        return await link.receive_to_drop(100)

    assert asyncio.run(body()) == read


class _Waiting:
    """A user's transport whose ``waiting_to_send`` and ``unacknowledged`` answer
    ``answer``, or raise it."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def waiting_to_send(self) -> object:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    unacknowledged = waiting_to_send


@pytest.mark.parametrize(
    ("answer", "count"),
    [
        (True, 1),
        (False, 0),
        (None, 0),
        (-5, 0),
        (3.0, 0),
        ("7", 0),
        (4096, 4096),
        (RuntimeError("a transport's own bug"), 0),
    ],
)
def test_what_a_users_transport_says_waits_is_a_count_or_nothing(
    answer: object, count: int
) -> None:
    """Asked at a session's timeout: a count, True for some of one unknown, and nothing
    for anything else it answers; a transport that raises is taken to have nothing
    waiting (it raised out of the session's end, which then logged it as failed and
    lost its goodbye)."""

    async def body() -> None:
        link = Link(_Waiting(answer), AsyncioClock())  # type: ignore[arg-type]  # a stand-in
        assert link.waiting_to_send() == count

    asyncio.run(body())


@pytest.mark.parametrize(
    ("answer", "count"),
    [
        (0, 0),
        (4096, 4096),
        (True, None),
        (None, None),
        (-5, None),
        (3.0, None),
        ("7", None),
        (RuntimeError("a transport's own bug"), None),
    ],
)
def test_what_a_users_transport_says_is_unacknowledged_is_a_count_or_none(
    answer: object, count: int | None
) -> None:
    """Asked with ``waiting_to_send`` at a session's timeout: a count (0 too: the peer
    acknowledged everything), and None, the kernel cannot say, for anything else it
    answers or when it raises."""

    async def body() -> None:
        link = Link(_Waiting(answer), AsyncioClock())  # type: ignore[arg-type]  # a stand-in
        assert link.unacknowledged() == count

    asyncio.run(body())


class _OnlyWaiting:
    def waiting_to_send(self) -> int:
        return 10


def test_a_transport_without_the_kernels_count_says_none() -> None:
    """A transport with no ``unacknowledged`` method: the probe then looks as it did,
    once, at ``waiting_to_send`` alone."""

    async def body() -> None:
        link = Link(_OnlyWaiting(), AsyncioClock())  # type: ignore[arg-type]  # a stand-in
        assert link.unacknowledged() is None

    asyncio.run(body())
