"""A POP3 session that ends closes its socket at once, not at ``close()``.

A POP3 server holds the maildrop's lock until its session ends (RFC 1939 §4), and
ours reads on after its own closing ``-ERR`` until the client closes too. A client
that kept the socket of a session it found over (the server's close or closing
``-ERR``, a response no command asked for) held the server, and the lock, until the
caller called ``close()`` or ``connect()``. poplib users expect the lock released
after ``quit()``, whose socket poplib closes; here every end closes it. A raw peer
on loopback plays the server, so that it sees the client's close (or not).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

import pytest

from client_calls import client_of, done, run_session
from loopback_peer import LoopbackPeer
from peers import ADAPTERS, TLSFiles
from smtpcore.asyncio import POP3ConnectionError, POP3Error, POP3ProtocolError
from smtpcore.sasl import PlainClient

CAPA = b"+OK\r\nUSER\r\nUIDL\r\n.\r\n"
CAPA_PIPELINING = b"+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n"

ENDINGS = {
    # The server's closing -ERR (RFC 2449 §8.1.2), then its half-close, as ours does.
    "closing -ERR": (b"-ERR [SYS/TEMP] shutting down\r\n", True, POP3Error),
    # The server's close alone (an autologout, RFC 1939 §3).
    "close": (b"", True, POP3ConnectionError),
}


class Peer(LoopbackPeer):
    """A POP3 server on loopback that answers CAPA with ``capa`` and logs the client
    in (unless not ``login``), then ends the session with ``ending`` (and a
    half-close if ``half_close``) and records whether the client's close follows
    (``"eof"``) or not (``"timeout"``). ``glued`` goes out with the last answer
    before that, in the same write; a later command is answered from ``answers``
    by its first word, or read and dropped. ``held``: the end waits for ``go``.
    ``context``: TLS from the first byte (RFC 8314 §3.3) with this server context."""

    def __init__(
        self,
        ending: bytes = b"",
        half_close: bool = False,
        *,
        capa: bytes = CAPA,
        login: bool = True,
        glued: bytes = b"",
        answers: dict[bytes, bytes] | None = None,
        held: bool = False,
        context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(context)
        self.ending = ending
        self.half_close = half_close
        self.script = [(b"CAPA", capa)]
        if login:
            self.script += [
                (b"USER alice", b"+OK\r\n"),
                (b"PASS wonderland", b"+OK maildrop locked\r\n"),
                (b"CAPA", capa),
            ]
        self.glued = glued
        self.answers = answers or {}
        self.ended = threading.Event()
        self.go = threading.Event()
        if not held:
            self.go.set()
        self.seen: list[object] = []
        self.start()

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        conn.sendall(b"+OK ready\r\n")
        for index, (expected, answer) in enumerate(self.script, 1):
            assert reader.readline() == expected + b"\r\n"
            conn.sendall(answer + self.glued if index == len(self.script) else answer)
        assert self.go.wait(10)
        conn.sendall(self.ending)
        if self.half_close:
            conn.shutdown(socket.SHUT_WR)
        self.ended.set()
        try:
            while line := reader.readline():
                reply = self.answers.get(line.split()[0])
                if reply is not None:
                    conn.sendall(reply)
        except TimeoutError:
            self.seen.append("timeout")
        else:
            self.seen.append("eof")


def _client(kind: str, port: int, tls: TLSFiles | None = None) -> Any:
    return client_of(kind, "POP3Client", port, tls, stls=False, allow_plaintext_auth=True)


CALLS: dict[str, Callable[[Any], Any]] = {
    "noop": lambda client: client.noop(),
    "stat": lambda client: client.stat(),
    "list": lambda client: client.list(),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("kind", ["sync", *ADAPTERS])
def test_the_call_that_finds_the_session_ended_closes_the_socket(kind: str, ending: str) -> None:
    said, half_close, error = ENDINGS[ending]
    peer = Peer(said, half_close)
    try:
        client = _client(kind, peer.port)

        async def session() -> None:
            await done(client.connect())
            await done(client.login("alice", "wonderland"))
            assert peer.ended.wait(10)  # the end is on its way before the next command
            with pytest.raises(error):
                await done(client.noop())
            assert not client.is_connected

        run_session(kind, session)
        peer.thread.join(15)
        assert peer.seen == ["eof"]  # the client closed, without close()
        run_session(kind, lambda: done(client.close()))
    finally:
        peer.close()


@pytest.mark.parametrize("call", list(CALLS))
def test_every_command_that_finds_the_end_closes_the_socket(call: str) -> None:
    """Not NOOP alone: STAT and a listing too (which finds the end at LIST, before
    its UIDL: see the test below for a session that ends between the two)."""
    peer = Peer(*ENDINGS["closing -ERR"][:2])
    try:
        client = _client("sync", peer.port)
        client.connect()
        client.login("alice", "wonderland")
        assert peer.ended.wait(10)
        with pytest.raises(POP3Error):
            CALLS[call](client)
        peer.thread.join(15)
        assert peer.seen == ["eof"]
    finally:
        peer.close()


STRAY = b"+OK no command asked for this\r\n"
"""A response no command asked for: the session is over (RFC 1939 §3: each command
has its one response), though the server did not close (see ``_send``)."""


async def _retrieve_many(client: Any) -> list[tuple[int, bytes]]:
    """Every message :meth:`retrieve_many` gives, from the async clients or the blocking one."""
    messages = client.retrieve_many([1, 2])
    if hasattr(messages, "__aiter__"):
        return [message async for message in messages]
    return list(messages)


STRAYS: dict[str, tuple[dict[str, Any], Callable[[Any], Any]]] = {
    # Each command finds the stray where it is sent: _ask, then each call site that
    # sends commands of its own (pipelined LIST and UIDL, UIDL after LIST's listing,
    # retrieve_many's RETRs), and AUTH, before any login.
    "noop": ({"glued": STRAY}, lambda client: client.noop()),
    "pipelined list": (
        {"capa": CAPA_PIPELINING, "glued": STRAY},
        lambda client: client.list(),
    ),
    "uidl after list": (
        {"answers": {b"LIST": b"+OK\r\n1 10\r\n.\r\n" + STRAY}},
        lambda client: client.list(),
    ),
    "pipelined retrieve_many": (
        {"capa": CAPA_PIPELINING, "glued": STRAY},
        _retrieve_many,
    ),
    "retrieve_many": ({"glued": STRAY}, _retrieve_many),
    "authenticate": (
        {"capa": CAPA_PIPELINING, "login": False, "glued": STRAY},
        lambda client: client.authenticate(PlainClient("alice", "wonderland")),
    ),
}


@pytest.mark.parametrize("case", list(STRAYS))
@pytest.mark.parametrize("kind", ["sync", *ADAPTERS])
def test_a_response_no_command_asked_for_closes_the_socket(kind: str, case: str) -> None:
    """The server says something unasked and keeps the connection open: the call
    that finds it refuses to send, and closes the socket as it raises. The stray
    comes in the same write as the answer before, so that every client holds it
    when its next command is due, whatever its event loop did meanwhile."""
    options, call = STRAYS[case]
    peer = Peer(**options)
    try:
        client = _client(kind, peer.port)

        async def session() -> None:
            await done(client.connect())
            if options.get("login", True):
                await done(client.login("alice", "wonderland"))
            with pytest.raises(POP3ProtocolError, match="no command asked for"):
                await done(call(client))
            assert not client.is_connected

        run_session(kind, session)
        peer.thread.join(15)
        assert peer.seen == ["eof"]  # the client closed, without close()
        run_session(kind, lambda: done(client.close()))
    finally:
        peer.close()


@pytest.mark.parametrize("over", ["plain", "tls"])
@pytest.mark.parametrize("kind", ["sync", *ADAPTERS])
def test_a_response_that_came_while_the_loop_was_blocked_answers_no_command(
    kind: str, over: str, tls: TLSFiles
) -> None:
    """The stray comes in a write of its own while the application blocks its event
    loop between two calls (here: it lets the peer send it, and waits until it has),
    so that the loop has not read it: the next command must still find it before it
    goes out, not read it as its answer (the server refuses NOOP, the stray says
    ``+OK``). Over TLS too, where on trio a record cannot be read without a read
    that may wait: the look at what reached the socket finds it."""
    on_tls = tls if over == "tls" else None
    context = None if on_tls is None else on_tls.server_context
    peer = Peer(STRAY, answers={b"NOOP": b"-ERR refused\r\n"}, held=True, context=context)
    try:
        client = _client(kind, peer.port, on_tls)

        async def session() -> None:
            await done(client.connect())
            await done(client.login("alice", "wonderland"))
            peer.go.set()
            assert peer.ended.wait(10)  # blocks the loop: the stray waits in the socket
            with pytest.raises(POP3ProtocolError, match="no command asked for"):
                await done(client.noop())
            assert not client.is_connected

        run_session(kind, session)
        peer.thread.join(15)
        assert peer.seen == ["eof"]  # NOOP never went out, and the client closed
    finally:
        peer.close()
