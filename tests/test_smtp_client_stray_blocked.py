"""A reply no command asked for, sent while the application kept the client from reading.

A server may write a reply that answers nothing between two of the client's
calls: a ``421`` at its idle timeout, or a buggy or hostile server's extra
``250``. When it reaches the socket while an asyncio application blocks its
event loop between two calls (or, on trio, sits in a TLS record, which no read
that never waits decrypts), the client once took it for the next command's
reply: with a stray ``250`` a MAIL the server never answered was "accepted",
and every later reply was paired with the wrong command. The blocking client
trusted its last read in the same way before MAIL without PIPELINING. Here a
raw server on loopback writes the stray in a write of its own while the caller
blocks (waits until it has reached the client's socket), then answers whatever
comes: the next call must end the session before its command goes out.
"""

from __future__ import annotations

import importlib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

import pytest

from arrived import wait_until_arrived
from client_calls import client_of, done, run_session
from loopback_peer import LoopbackPeer
from peers import ADAPTERS, TLSFiles

STRAY = b"250 2.0.0 no command asked for this\r\n"
MESSAGE = b"Subject: x\r\n\r\nx\r\n"


class Peer(LoopbackPeer):
    """An SMTP server on loopback that answers each command as it comes (EHLO with
    PIPELINING where ``pipelining``; MAIL, RCPT, NOOP, RSET with 250; DATA with
    354 and the content's end with 250), and writes ``stray`` on its own once the
    caller sets ``go`` after ``after`` replies, then sets ``sent``; ``together``: with
    that reply instead, in one TCP segment, a TLS record each. ``context``: TLS
    from the first byte (RFC 8314 §3.3). ``seen``: the verbs of the commands read
    before the stray."""

    def __init__(
        self,
        *,
        after: int,
        pipelining: bool = False,
        stray: bytes = STRAY,
        context: ssl.SSLContext | None = None,
        together: bool = False,
    ) -> None:
        super().__init__(context)
        self.after = after
        self.pipelining = pipelining
        self.stray = stray
        self.together = together
        self.go = threading.Event()
        self.sent = threading.Event()
        self.seen: list[bytes] = []
        self.behind: list[bytes] = []
        """The verbs of the commands read after the stray."""
        self.start()

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        conn.sendall(b"220 mx.pqr.example ESMTP\r\n")
        replies = 0
        try:
            while line := reader.readline():
                verb = line[:4].upper()
                (self.behind if self.sent.is_set() else self.seen).append(verb)
                if verb == b"EHLO":
                    offer = b"250-PIPELINING\r\n" if self.pipelining else b""
                    reply = b"250-mx.pqr.example\r\n" + offer + b"250 8BITMIME\r\n"
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    while reader.readline() not in (b".\r\n", b""):
                        pass
                    reply = b"250 2.0.0 queued\r\n"
                elif verb == b"QUIT":
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    return
                else:
                    reply = b"250 2.0.0 ok\r\n"
                replies += 1
                if replies != self.after:
                    conn.sendall(reply)
                elif self.together:
                    _corked(conn, reply, self.stray)
                    self.sent.set()
                else:
                    conn.sendall(reply)
                    assert self.go.wait(10)
                    conn.sendall(self.stray)
                    self.sent.set()
        except (OSError, ValueError):
            return


def _corked(conn: socket.socket, *writes: bytes) -> None:
    """Each of ``writes`` (a TLS record each, on a TLS socket) in one TCP segment."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    for data in writes:
        conn.sendall(data)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


def _client(kind: str, port: int, tls: TLSFiles | None) -> Any:
    return client_of(kind, "SMTPClient", port, tls)


def _blocked_until_there(client: Any, peer: Peer, *, told: bool) -> None:
    """Let the peer write its stray and wait, blocking the event loop (or the
    thread), until it has reached the client's socket: nothing reads it meanwhile.
    ``told``: the client's link says so (``arrived``); elsewhere (the blocking
    client, trio in plaintext, whose link cannot tell) sendall has put it there."""
    peer.go.set()
    assert peer.sent.wait(10)
    if told:
        wait_until_arrived(client._transport, "the stray never reached the client's socket")


CALLS: dict[str, tuple[int, bool, Callable[[Any], Any], bytes]] = {
    # name: (replies before the stray, PIPELINING, the call after it, its command)
    "noop": (1, False, lambda client: client.noop(), b"NOOP"),
    "rset": (1, True, lambda client: client.rset(), b"RSET"),
    "message": (
        4,
        False,
        lambda client: client.send_message(MESSAGE, "a@abc.example", "b@pqr.example"),
        b"MAIL",
    ),
    "pipelined message": (
        4,
        True,
        lambda client: client.send_message(MESSAGE, "a@abc.example", "b@pqr.example"),
        b"MAIL",
    ),
}
"""The replies before the stray: EHLO's (1), or EHLO's and a message's three."""


@pytest.mark.parametrize("over", ["plain", "tls"])
@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("kind", ["sync", *ADAPTERS])
def test_a_stray_that_came_while_the_client_was_kept_from_reading_answers_nothing(
    kind: str, call: str, over: str, tls: TLSFiles
) -> None:
    after, pipelining, then, verb = CALLS[call]
    peer = Peer(
        after=after,
        pipelining=pipelining,
        context=tls.server_context if over == "tls" else None,
    )
    try:
        module: Any = importlib.import_module(f"smtpcore.{kind}")
        client = _client(kind, peer.port, tls if over == "tls" else None)

        async def session() -> None:
            await done(client.connect())
            if after > 1:
                await done(then(client))  # the first message, answered as it should be
            told = kind == "asyncio" or (kind == "trio" and over == "tls")
            _blocked_until_there(client, peer, told=told)
            with pytest.raises(module.SMTPProtocolError, match=r"asked for|unsolicited"):
                await done(then(client))
            assert not client.is_connected

        run_session(kind, session)
        peer.thread.join(15)
        assert verb not in peer.behind  # it never went out behind the stray
    finally:
        peer.close()


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="needs TCP_CORK (Linux)")
@pytest.mark.parametrize("call", ["noop", "message"])
@pytest.mark.parametrize("kind", ["sync", *ADAPTERS])
def test_a_stray_in_a_tls_record_of_its_own_behind_the_reply_answers_nothing(
    kind: str, call: str, tls: TLSFiles
) -> None:
    """The stray comes in the same TCP read as the reply before it, in a record of its
    own: trio's ``SSLStream`` decrypts the reply's record only and keeps the stray's,
    undecrypted, where neither the socket nor a decrypted record shows it."""
    after, _, then, verb = CALLS[call]
    peer = Peer(after=after, context=tls.server_context, together=True)
    try:
        module: Any = importlib.import_module(f"smtpcore.{kind}")
        client = _client(kind, peer.port, tls)

        async def session() -> None:
            await done(client.connect())
            if after > 1:
                await done(then(client))
            assert peer.sent.wait(10)
            with pytest.raises(module.SMTPProtocolError, match=r"asked for|unsolicited"):
                await done(then(client))
            assert not client.is_connected

        run_session(kind, session)
        peer.thread.join(15)
        assert verb not in peer.behind
    finally:
        peer.close()


def test_trio_keeps_the_records_it_has_yet_to_decrypt_where_the_transport_looks() -> None:
    """The trio transport finds a TLS record read and not yet decrypted in the
    ``SSLStream``'s own incoming buffer, a private attribute: this fails if trio
    renames it (the test above would then fail on trio, at times)."""
    import trio
    import trio.testing

    from smtpcore import _trio_transport

    near, _ = trio.testing.memory_stream_pair()
    stream = trio.SSLStream(near, ssl.create_default_context(), server_hostname="pqr.example")
    incoming = getattr(stream, _trio_transport.UNDECRYPTED)
    assert isinstance(incoming, ssl.MemoryBIO)
    incoming.write(b"\x17\x03\x03")
    assert _trio_transport.TrioTransport(stream).arrived()


@pytest.mark.parametrize("pipelining", [False, True])
@pytest.mark.parametrize("kind", ADAPTERS)
def test_between_a_messages_own_commands_the_socket_is_not_looked_at(
    kind: str, pipelining: bool
) -> None:
    """Where the link cannot say that its last read took everything (``drained``
    false: TLS on trio, a blocking TLS socket, a user's transport), RCPT and DATA go
    out after a read that never waits, and no look at the socket (``arrived``): the
    replies there follow each other at once, and a look before each would cost every
    message and catch nothing. The socket is looked at before MAIL only."""
    peer = Peer(after=0, pipelining=pipelining)
    try:
        client = _client(kind, peer.port, None)
        looks: list[bytes] = []

        async def session() -> None:
            await done(client.connect())
            link = client._transport
            link.drained = link.settled = lambda: False
            arrived = link.arrived

            def looked() -> bool:
                looks.append(peer.seen[-1])  # the command whose reply was read last
                return bool(arrived())

            link.arrived = looked
            await done(client.send_message(MESSAGE, "a@abc.example", "b@pqr.example"))
            assert looks == [b"EHLO"]
            await done(client.quit())

        run_session(kind, session)
    finally:
        peer.close()
