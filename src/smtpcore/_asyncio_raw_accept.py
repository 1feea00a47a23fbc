"""A server's listening sockets on asyncio's selector event loop, accepted from
without ``asyncio.Server``.

The connections :class:`Acceptor` accepts are served over the raw socket (see
:mod:`smtpcore._asyncio_raw`). Apart from the transport because a listener
and a connection share nothing but the loop: this is the accepting, its
batches and its rest when the process is out of descriptors, and the
listening sockets made as ``loop.create_server`` would make them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Final

from smtpcore._driver._accept_rest import ACCEPT_REST, OUT_OF_RESOURCES, log_accept_rest
from smtpcore._driver._peer_hosts import shared_peer_host
from smtpcore._driver._transport import address

logger = logging.getLogger("smtpcore.server")

_ACCEPT_BATCH: Final = 100
"""At most this many connections are accepted a wake (asyncio's own default)."""
_FULL_WAKES: Final = 4
"""Wakes in a row that find every connection they try waiting before the next one tries
twice as many (see :meth:`Acceptor._accept`)."""
_bare_socket: Final = socket.SocketType
"""The socket type without socket.socket's Python layer (made and closed in C)."""
_TCP: Final = frozenset({socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET)})


Accepted = Callable[[socket.SocketType, object, "tuple[str, int] | None"], None]
"""What an :class:`Acceptor` hands each connection to: the socket, non-blocking, the
peer's address as ``accept`` gave it, and the local address when every connection
of the listener has the same one (None: ask the socket)."""


class Acceptor:
    """A server's listening sockets, watched by the loop's selector: each time one is
    readable, the connections waiting on it are accepted, at most ``backlog`` of
    them and never more than a hundred (the rest at the loop's next pass, so
    that a storm of connections does not hold up the sessions already served),
    and handed to ``accepted``.

    A wake tries as many connections as the last one found waiting, not until
    ``accept`` fails: the selector watches the listening socket by its level,
    so what is left is accepted at the loop's next pass, and a server whose
    clients come one at a time takes each with one ``accept`` where a failed
    second one cost an exception (its message decoded from the C library's
    locale) and its handling, about a fortieth of a connection's work. A
    wake that finds every connection it tried waiting, a few times in a row,
    makes the next try twice as many (Twisted's listener adapts its count in
    the same way).

    It stands where an ``asyncio.Server`` would for the listener: ``sockets``,
    :meth:`close` and :meth:`wait_closed`.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        accepted: Accepted,
        backlog: int,
    ) -> None:
        self._loop = loop
        self.sockets = sockets
        self._accepted = accepted
        self._batch = max(1, min(backlog, _ACCEPT_BATCH))
        self._tries = 1
        """How many connections the next wake tries to accept (at most ``_batch``)."""
        self._full = 0
        """Wakes in a row that accepted every connection they tried."""
        self._retries: dict[int, asyncio.TimerHandle] = {}
        """Listening sockets resting after running out of descriptors, by descriptor."""
        for sock in sockets:
            sock.listen(backlog)  # as asyncio does, for a socket given bound but not listening
            sock.setblocking(False)
            self._watch(sock)

    def _watch(self, sock: socket.socket) -> None:
        self._retries.pop(sock.fileno(), None)
        kind = (int(sock.family), int(sock.type), sock.proto, sock.family in _TCP)
        self._loop.add_reader(sock.fileno(), self._accept, sock, *kind, _local_of(sock))

    def _accept(
        self,
        listening: socket.socket,
        family: int,
        kind: int,
        proto: int,
        tcp: bool,
        local: tuple[str, int] | None,
    ) -> None:
        # The descriptor, and a bare socket made from it with the listener's family and
        # type as integers: socket.accept() converts both to enums and wraps the socket
        # in Python (eight calls a connection, three more to close it, and 40 bytes).
        accept = listening._accept  # type: ignore[attr-defined]  # _socket.socket's own
        tries = self._tries
        for taken in range(tries):
            try:
                fd, peer = accept()
            except (BlockingIOError, InterruptedError):
                # Fewer were waiting than tried: the next wake tries as many as came.
                self._tries = taken or 1
                self._full = 0
                return
            except ConnectionAbortedError:  # the client gave up while it waited
                continue
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    log_accept_rest(logger, exc)
                    fileno = listening.fileno()
                    self._loop.remove_reader(fileno)
                    self._retries[fileno] = self._loop.call_later(
                        ACCEPT_REST, self._watch, listening
                    )
                else:
                    logger.exception("accept failed")
                return
            sock = _bare_socket(family, kind, proto, fd)
            try:
                sock.setblocking(False)
                if tcp:  # a reply written in two pieces must not wait for a delayed ACK
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if type(peer) is tuple and len(peer) == 2:
                        # One string for every session from the same IPv4 address.
                        peer = (shared_peer_host(peer[0]), peer[1])
                self._accepted(sock, peer, local)
            except Exception:
                logger.exception("serving a connection from %s failed", peer)
                sock.close()
        # Every connection tried was waiting: more may be (the selector says so at the
        # loop's next pass); a listener that keeps finding them tries more at once.
        full = self._full + 1
        if full < _FULL_WAKES:
            self._full = full
        else:
            self._full = 0
            self._tries = min(2 * tries, self._batch)

    def close(self) -> None:
        """Stop accepting and close the listening sockets."""
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
                sock.close()

    async def wait_closed(self) -> None:
        """Nothing to wait for: :meth:`close` closes the sockets at once."""


def _local_of(listening: socket.socket) -> tuple[str, int] | None:
    """The local address of every connection accepted on ``listening``, when that is
    its own: bound to one IP address, not to every interface (or a Unix socket)."""
    if listening.family not in _TCP:
        return None
    where = address(listening.getsockname())
    if where is None or ipaddress.ip_address(where[0]).is_unspecified:
        return None
    return where


async def listening_sockets(
    loop: asyncio.AbstractEventLoop, host: str | None, port: int, backlog: int
) -> list[socket.socket]:
    """Sockets listening on ``host`` and ``port``, as ``loop.create_server`` makes them:
    one per address the name resolves to (all interfaces for ``None``), with
    ``SO_REUSEADDR``, and IPv6 sockets for IPv6 only."""
    infos = await loop.getaddrinfo(
        None if host == "" else host,
        port,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, where in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this host cannot make sockets of
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == getattr(socket, "AF_INET6", None) and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(where)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()  # worded as asyncio words it
                raise OSError(
                    exc.errno, f"error while attempting to bind on address {where!r}: {reason}"
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(f"no address to listen on for {host!r}")
    return sockets
