"""What every server shares, whatever its protocol: the live sessions and the listening socket.

SMTP and POP3 sessions differ; counting them, refusing one past the limit,
and waking idle ones for a graceful shutdown do not. The adapters' accept
loops are written against :class:`SessionRegistry` and :class:`BaseListener`
only, so one accept loop per framework serves both protocols.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

from smtpcore._driver._logtext import describe_error
from smtpcore._driver._proxied import (
    DEFAULT_PROXY_TIMEOUT,
    Network,
    client_text,
    counted_peer,
    peer_text,
    proxied_tls,
    read_proxy_header,
    trusted,
    unnamed_client_text,
)
from smtpcore._driver._shutdown import LAST_WORDS, GracefulShutdown
from smtpcore._driver._timeouts import Watchdog
from smtpcore._driver._transport import Link, address
from smtpcore._driver._turnedaway import STOPPING, TurnedAwayLog
from smtpcore._ip import CLIENT_IPV6_PREFIX_LENGTH, client_block, unmapped
from smtpcore.handler import TLSInfo
from smtpcore.proxy import ProxyProtocolError

__all__ = [
    "LAST_WORDS",
    "LINGER",
    "LINGER_BYTES",
    "BaseListener",
    "ConnectionLost",
    "ListenedSession",
    "ListenerOptions",
    "ServedSession",
    "SessionRegistry",
    "session_address",
]


class ListenedSession(Protocol):
    """A session as the accept loop sees it: run it, or wake it when shutting down."""

    async def run(self) -> None:
        """Serve the connection to its end; never raises but for cancellation."""
        ...

    def wake_if_idle(self) -> None:
        """Interrupt a wait for the next command (graceful shutdown)."""
        ...

    def cut_off(self) -> None:
        """Interrupt whatever the session does, so that it closes with the
        shutting-down reply (the grace period of a shutdown is over)."""
        ...

    def log_failure(self) -> None:
        """Log the exception being handled as the session's failure."""
        ...


S = TypeVar("S", bound=ListenedSession)

LINGER: Final = 1.0
"""Seconds at most that a session the server ends on its own reads and drops what its
client still sends, before it closes (see :meth:`ServedSession._linger`); Apache's
lingering close waits 2 seconds a read. While the server shuts down, half of
:data:`LAST_WORDS`, so that a session cut off closes within its last words."""
LINGER_BYTES: Final = 1 << 22
"""Octets at most that a lingering session reads and drops (the CPU a client that
streams without pause can take from it)."""
_LINGER_READ: Final = 65536


def session_address(address: tuple[str, int] | None) -> tuple[str, int] | None:
    """``address`` (a socket's, the client's or the server's own) as sessions know it:
    an IPv4 address a dual-stack socket gives mapped (``::ffff:192.0.2.1``) as the
    IPv4 one (see :mod:`smtpcore._ip`), so that ``session.peer`` and
    ``session.local`` are in the same family. :meth:`SessionRegistry.admit` writes
    this out for the peer."""
    if address is not None and address[0][:7] == "::ffff:":
        return (unmapped(address[0]), address[1])
    return address


class SessionRegistry(Generic[S]):
    """The live sessions of one server, its session limits, and whether it is stopping.

    A subclass says how to build a session for a connection
    (:meth:`new_session`) and what to write to a client turned away
    (``busy_reply`` when the server is full, ``address_busy_reply`` when the
    client's address has its share already, ``stopping_reply`` when it is
    shutting down; ``b""`` just closes, as a TLS-on-connect port must).

    ``max_per_address`` keeps one address from taking every slot, as Postfix's
    ``smtpd_client_connection_count_limit`` does: sessions are counted by the
    peer's IP address (a connection without one, over a Unix socket say, is
    not counted), an IPv6 peer by its network of ``ipv6_prefix_length`` bits
    (:func:`~smtpcore._ip.client_block`). A connection from a proxy that names
    its client later (the PROXY protocol header) is not counted under the
    proxy's address: the session calls :meth:`readdress` once it knows whose it
    is, so that one proxy in front does not cap every client behind it at one
    client's share.
    A connection from one of ``proxy_networks`` is such a connection (a
    subclass may say otherwise in :meth:`client_named_later`).

    A client turned away by either limit is logged in :attr:`logger`
    (:meth:`log_turned_away`), whoever named it: the connection, a proxy's
    header, XCLIENT.
    """

    logger: ClassVar[logging.Logger] = logging.getLogger("smtpcore")
    """Where :meth:`log_turned_away` writes: the sessions' own logger."""

    def __init__(
        self,
        max_sessions: int,
        busy_reply: bytes,
        *,
        max_per_address: int | None = None,
        address_busy_reply: bytes = b"",
        stopping_reply: bytes = b"",
        proxy_networks: Sequence[Network] = (),
        proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
        ipv6_prefix_length: int = CLIENT_IPV6_PREFIX_LENGTH,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if max_per_address is not None and max_per_address < 1:
            raise ValueError("max_sessions_per_address must be at least 1 (or None)")
        self.max_sessions = max_sessions
        self.busy_reply = busy_reply
        self.max_per_address = max_per_address
        self.ipv6_prefix_length = ipv6_prefix_length
        self.address_busy_reply = address_busy_reply
        self.stopping_reply = stopping_reply
        self.proxy_networks = tuple(proxy_networks)
        """The proxies whose PROXY header names the client (``proxy_protocol_from``)."""
        self.proxy_timeout = proxy_timeout
        """Seconds a proxy has to send its whole header (``proxy_protocol_timeout``)."""
        self.sessions: dict[S, str | None] = {}
        """The live sessions, each with the address (an IPv6 network) it is counted
        under (None: none).
        One dictionary for both, rather than a set and a dictionary of the counted
        ones: a set's table takes more room a session than a dictionary's."""
        self.per_address: dict[str, int] = {}
        """Live sessions by peer address, an IPv6 peer's by its network (only with
        ``max_per_address``)."""
        self.stopping = False
        self.cutting_off = False
        """True once the grace period of the shutdown is over (see :meth:`cut_off`)."""
        self.proxied = bool(self.proxy_networks)
        """Whether a connection may name its real client later (see
        :meth:`client_named_later`, asked only then: a subclass that says otherwise
        there sets this too)."""
        self.on_empty: Callable[[], None] | None = None
        """Called when the last session ends while the server is stopping."""
        self.turned_away = TurnedAwayLog(self.logger)
        """The lines for clients the limits, or a shutdown, turned away: this server's
        own budget of lines, so a program with several listeners has one each."""
        self.stopped = False
        """True once the shutdown is over (see :meth:`end_shutdown`)."""

    def new_session(self, transport: Link, peer: tuple[str, int] | None) -> S:
        """A session for a connection just accepted from ``peer`` (its
        ``transport.peer_address``, read once)."""
        raise NotImplementedError

    @property
    def full(self) -> bool:
        """No room for one more session: refuse the connection."""
        return len(self.sessions) >= self.max_sessions or self.stopping

    def client_named_later(self, peer: tuple[str, int]) -> bool:
        """Whether a connection from ``peer`` names its real client itself (a trusted
        proxy's header): then it is counted by address only from :meth:`readdress`."""
        return trusted(peer, self.proxy_networks)

    def admit(self, transport: Link) -> S | bytes:
        """A session for a new connection, counted from now on; or, when there is no
        room for it, what to write to the client before closing."""
        # What full and readdress say, and the count, written out: this runs for every connection.
        sessions = self.sessions
        if len(sessions) >= self.max_sessions or self.stopping:
            # A client turned away by a shutdown is told so, not that the server is full.
            if self.stopping:
                self.log_stopping(session_address(transport.peer_address))
                return self.stopping_reply
            full = session_address(transport.peer_address)
            self.log_turned_away(peer_text(full), False, self.block_of(full))
            return self.busy_reply
        peer = counted = transport.peer_address
        if peer is not None and peer[0][:7] == "::ffff:":  # session_address(peer), inline
            peer = counted = (unmapped(peer[0]), peer[1])
        if peer is not None and self.proxied and self.client_named_later(peer):
            counted = None
        limit = self.max_per_address
        host = None
        if limit is not None and counted is not None:
            host = counted[0]
            if ":" in host:  # IPv6: counted by its network (client_block)
                host = client_block(host, self.ipv6_prefix_length)
            count = self.per_address.get(host, 0)
            if count >= limit:
                self.log_turned_away(peer_text(peer), True, host)
                return self.address_busy_reply
        session = self.new_session(transport, peer)
        if host is not None:
            self.per_address[host] = count + 1
        sessions[session] = host
        return session

    def readdress(self, session: S, peer: tuple[str, int] | None) -> bool:
        """Count ``session`` under ``peer`` from now on (the client a proxy's header
        named, or None, no address, when the header names none). False, and the
        session counted under no address, when that address has its share already:
        the session then writes :attr:`address_busy_reply` and ends."""
        sessions = self.sessions
        self._uncount(sessions.get(session))
        sessions[session] = None
        limit = self.max_per_address
        if limit is None or peer is None:
            return True
        host = client_block(peer[0], self.ipv6_prefix_length)
        count = self.per_address.get(host, 0)
        if count >= limit:
            return False
        sessions[session] = host
        self.per_address[host] = count + 1
        return True

    def block_of(self, peer: tuple[str, int] | None) -> str | None:
        """What the per-address limit counts ``peer`` under (None: no address)."""
        return None if peer is None else client_block(peer[0], self.ipv6_prefix_length)

    def log_turned_away(self, client: str, per_address: bool, block: str | None = None) -> None:
        """Log a client a session limit turned away (``client`` as
        :func:`~smtpcore._driver._proxied.client_text` names it), naming the limit:
        ``too many sessions from [192.0.2.7]:40312: refused (max-sessions-per-address
        50)`` the first time, then a count now and then (:class:`TurnedAwayLog`): a
        flood must not cost a line a connection. An admitted client never comes here.
        Not a ``reject:`` line: a busy server is no client's abuse. ``block`` is what
        the client is counted under (:meth:`block_of`), so that an IPv6 client is one
        client however it varies its address within its block."""
        if per_address:
            limit = f"max-sessions-per-address {self.max_per_address}"
        else:
            limit = f"max-sessions {self.max_sessions}"
        self.turned_away.refused(client, limit, block)

    def log_stopping(self, peer: tuple[str, int] | None) -> None:
        """Log a client turned away because the server is stopping (it was told
        ``421 4.3.2``, POP3's ``-ERR [SYS/TEMP]``), as Postfix logs the connections
        it refuses: ``server stopping: session from [192.0.2.7]:40312: refused
        (shutting down)`` the first time, then a count (:class:`TurnedAwayLog`, as
        :meth:`log_turned_away`), so that clients retrying at once during a long grace
        period do not cost a line a connection. Once the shutdown is over (a
        ``serve_transport`` after ``aclose``), no stop is left to write a count: each
        refusal is written at once, within the same budget of lines
        (:meth:`TurnedAwayLog.write_waiting`): the count of those past it waits for
        a later refusal that finds room, and is lost if none comes."""
        headline, reason = STOPPING
        self.turned_away.refused(peer_text(peer), reason, self.block_of(peer), headline=headline)
        if self.stopped:
            self.turned_away.write_waiting()

    def _uncount(self, host: str | None) -> None:
        """One session less under ``host`` (None: a session counted under none)."""
        if host is not None:
            left = self.per_address[host] - 1
            if left:
                self.per_address[host] = left
            else:
                del self.per_address[host]

    def begin_shutdown(self) -> None:
        """Stop taking work; idle sessions are woken to say goodbye now."""
        self.stopping = True
        for session in list(self.sessions):
            session.wake_if_idle()
        if not self.sessions and self.on_empty is not None:
            self.on_empty()

    def cut_off(self) -> None:
        """The grace period is over: every session still there is interrupted, and says
        the shutting-down reply as it closes (SMTP's 421 4.3.2, POP3's ``-ERR
        [SYS/TEMP]``), for RFC 5321 §3.8 lets a server close a connection only after
        QUIT, a timeout, or a 421 that says it shuts down. The adapter gives them
        :data:`LAST_WORDS` seconds for it, then cancels what is left."""
        self.cutting_off = True
        for session in list(self.sessions):
            session.cut_off()

    def end_shutdown(self) -> None:
        """The shutdown is over: write the counts of refused clients still waiting
        (:meth:`TurnedAwayLog.close`), which no later refusal would write."""
        self.stopped = True
        self.turned_away.close()

    def remove(self, session: S) -> None:
        """Stop counting ``session`` (it ended, or its task never ran); safe twice."""
        host = self.sessions.pop(session, None)
        if host is not None:
            self._uncount(host)
        if self.stopping and not self.sessions and self.on_empty is not None:
            self.on_empty()


class ListenerOptions(Protocol):
    """What the accept loop reads of a server's options, whatever its protocol."""

    @property
    def tls_on_connect(self) -> bool:
        """Whether connections speak TLS from their first byte."""
        ...

    @property
    def timeouts(self) -> HandshakeTimeouts:
        """The session timeouts; the accept loop reads the TLS handshake's."""
        ...


class HandshakeTimeouts(Protocol):
    """The one timeout every server's options have that the accept loop reads."""

    @property
    def tls_handshake(self) -> float | None: ...


class BaseListener(GracefulShutdown, Generic[S]):
    """Where a server listens, what it reports about itself, and how it shuts down
    (:class:`~smtpcore._driver._shutdown.GracefulShutdown`).

    The server listens on ``host`` and ``port`` (port 0 picks a free one;
    read :attr:`port`), or on ``sock``, a socket already bound and
    listening, or on the Unix socket ``unix_path`` (a stale socket file
    there is replaced, and the file is removed when the server closes). The
    adapter's server class adds the accept loop.
    """

    state: SessionRegistry[S]
    options: ListenerOptions

    def __init__(
        self,
        host: str | None,
        port: int,
        *,
        sock: socket.socket | None,
        unix_path: str | os.PathLike[str] | None = None,
        backlog: int,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.sock = sock
        self.unix_path = None if unix_path is None else os.fspath(unix_path)
        """The Unix socket path listened on, if any."""
        self.backlog = backlog

    def _unix_socket(self) -> socket.socket:
        """A listening socket bound to :attr:`unix_path`, replacing a stale socket file."""
        path = self.unix_path
        assert path is not None
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(self.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _unix_socket_closed(self) -> None:
        """Remove the socket file once the server no longer listens on it."""
        if self.unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unix_path)

    @property
    def active_sessions(self) -> int:
        """Sessions being served now."""
        return len(self.state.sessions)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs the server listens on."""
        return [addr for name in self._listening_addresses() if (addr := address(name))]

    @property
    def port(self) -> int:
        """The port listened on (the first one, if several)."""
        addresses = self.addresses
        if not addresses:
            raise RuntimeError("the server is not listening")
        return addresses[0][1]

    def _listening_addresses(self) -> list[object]:
        """The socket names of the listening sockets (the adapter knows them)."""
        raise NotImplementedError


class _Client(Protocol):
    """A session as its hooks see it (``Session``, ``POP3Session``)."""

    peer: tuple[str, int] | None
    """The client: the one a trusted proxy's header named, once it has."""
    peer_stands_in_for: str | None
    """The client ``peer`` stands in for, when it is the proxy's (see
    :func:`~smtpcore._driver._proxied.client_text`)."""
    local: tuple[str, int] | None
    """The address the client reached."""
    tls: TLSInfo | None
    """The session's TLS: its own handshake's, or the client's to a trusted proxy that
    terminated it (:func:`~smtpcore._driver._proxied.proxied_tls`)."""


class ConnectionLost(Exception):
    """The transport failed or the session must end: close without another word."""


class ServedSession:
    """The life of one accepted connection, the same for SMTP and POP3.

    Each protocol's :meth:`run` serves it in one coroutine: it counts the
    session in the registry, opens it (:meth:`_open`: the greeting), answers
    the client in its loop under the watchdog, and then hands whatever ended
    the loop to :meth:`_end`, which closes the session (:meth:`_close`: a last
    reply; :meth:`_linger` after a server's own goodbye), logs a failure, leaves
    the registry, lets the protocol tidy up (:meth:`_ended`: a maildrop lock),
    closes the transport and then tells the application (:meth:`_after_close`:
    an abandoned transaction, ``handle_close``), whatever happened. The loop
    is written out in :meth:`run`, not called as a coroutine of its own, and
    it reads its client with ``receive_or_wait``
    (:class:`~smtpcore._driver._transport.Link`): so a session waiting for
    its client is suspended one coroutine deep, where an idle session's
    memory, and each wake-up's calls, grow with every level.
    """

    # Slots, here and in the protocols' sessions: an idle session keeps its fields for
    # minutes, and an instance dictionary costs more than the fields themselves.
    __slots__ = (
        "_waiting_idle",
        "_watchdog",
        "_write_cut",
        "_write_unfinished",
        "session",
        "state",
        "transport",
    )

    logger: ClassVar[logging.Logger] = logging.getLogger("smtpcore")
    protocol: ClassVar[str] = ""

    transport: Link
    state: SessionRegistry[Any]
    session: _Client
    """What the protocol's hooks are told about the connection."""
    _watchdog: Watchdog
    """The timer of the waits for the client; the protocol enters it around its loop."""
    _waiting_idle: bool
    """True while the session waits for a command outside a transaction (False from
    the start: each protocol's session sets it in its constructor)."""
    _write_unfinished: bool
    """True while a write to the client is under way (:meth:`_send_all`), and so still
    True after a cancellation (the watchdog, a send timeout, a shutdown's cut-off)
    or a lost connection ended one: the client did not take it in the time it had.
    What SMTP writes after it gets :data:`LAST_WORDS` at most (its session's
    ``_write_within``; POP3 writes nothing more), and the close does not wait for
    room to send what is left, where the transport allows it
    (:meth:`_close_transport`). (False from the start, as
    :attr:`_waiting_idle`.)"""

    _write_cut: bool
    """True while a write that a cancellation may cut part-way is under way, over a
    transport that may drop the rest of a cancelled write (trio's), and so still True
    after one was cut: the client may hold part of a reply. A last word written
    after it would land inside it, mid-line: each protocol's :meth:`_close` says
    nothing then, and the close alone ends the session. Never so over a transport
    that keeps a cancelled write's bytes (asyncio's), where the last word goes out
    after them. Asked of the transport as the write starts. (False from the start,
    as :attr:`_waiting_idle`.)"""

    async def run(self) -> None:
        """Serve the connection to its end; never raises but for cancellation.

        The protocol's own, in this shape (see the class's description)::

            self.state.sessions.setdefault(self)  # None: under no address, unless admitted
            watching = None
            try:
                await self._open()
                block = self.transport.watchdog()
                self._watchdog = await block.__aenter__()
                watching = block
                ...  # the loop: answer the client until the session ends
            except BaseException as exc:
                ended: BaseException | None = exc
            else:
                ended = None
            await self._end(ended, watching)

        The watchdog's block is entered there and left by :meth:`_end`, as
        ``async with`` would leave it, rather than with ``async with``, which
        keeps the block's bound ``__aexit__`` (64 bytes) for the session's life.
        """
        raise NotImplementedError

    async def _end(
        self,
        ended: BaseException | None,
        watching: AbstractAsyncContextManager[Watchdog] | None,
    ) -> None:
        """End the session, whatever ended its loop: ``ended`` is what the protocol's
        :meth:`run` raised (``None``: the session came to its end), ``watching`` the
        watchdog's block once the loop entered it, which is left first. It says
        goodbye (:meth:`_close`, told whether the watchdog went off), and lingers
        when the goodbye was the server's own (:meth:`_linger`), unless the
        connection was lost; after a failure (logged) it still writes the replies
        already made, and says nothing more; then, in any case, the
        session leaves the registry, the protocol tidies up, the transport
        closes and the application is told. A cancellation is raised again once
        all that is done."""
        if watching is not None:  # what leaving ``async with`` does
            try:
                if ended is None:
                    await watching.__aexit__(None, None, None)
                elif await watching.__aexit__(type(ended), ended, ended.__traceback__):
                    ended = None  # the block swallowed it
            except BaseException as exc:
                ended = exc
        try:
            try:
                if ended is not None and not (
                    isinstance(ended, TimeoutError)
                    and watching is not None  # else _open's
                    and self._watchdog.expired
                ):
                    raise ended
                if await self._close(ended is not None):
                    await self._linger()
            except ConnectionLost:
                pass
            except Exception:
                self.log_failure()
                # The replies the machine made before the failure are the client's: a
                # pipelined message's 250 among them, else the message is sent again.
                with contextlib.suppress(Exception):
                    await self._close(False)
        finally:
            self.state.remove(self)
            try:
                await self._ended()
            finally:
                try:
                    await self._close_transport()
                except (ConnectionError, ssl.SSLError) as exc:
                    self.log_lost_in_close(exc)
                except Exception:  # run() raises only cancellations (a transport's own bug)
                    self.log_failure()
                finally:
                    told = self._after_close()
                    if told is not None:
                        try:
                            await told
                        finally:
                            self.transport.clock.close()  # its deadlines set the timer again

    async def _send_all(self, data: bytes) -> None:
        """Write ``data`` to the client, however long it takes; a write a cancellation
        ended leaves :attr:`_write_unfinished` set (and :attr:`_write_cut`, where the
        transport may drop the rest: see
        :meth:`~smtpcore._driver._transport.LinkBase.cancelled_send_may_cut`)."""
        transport = self.transport
        self._write_cut = transport.cancelled_send_may_cut()
        self._write_unfinished = True
        await transport.send_all(data)
        self._write_cut = self._write_unfinished = False

    async def _close_transport(self) -> None:
        """Close the transport; after a write the client did not take in its time
        (:attr:`_write_unfinished`), without waiting for room to send what is left,
        where a cancelled close still closes (the transport's
        ``closes_when_cancelled``:
        :meth:`~smtpcore._driver._transport.LinkBase.cancelled_close_closes`). Room
        that did not come in the write's timeout will not come in the transport's
        close timeout either, which would hold the session (and its place under the
        session limits) for that long again. The close is cancelled as it first
        waits: the asyncio transports abort the connection then; trio's drops what
        it still holds for the end of trio's scheduler batch (what the kernel takes
        at once aside), or the rest of a held write another task was finishing,
        and closes its stream, shielded. Any other transport closes as it
        does, within the bound it sets itself: cancelled, one that gives up waiting
        and then aborts would never abort, and the connection would stay open.
        Nor while the server stops: a write its shutdown cut off still gets the
        transport's close to send what it kept, within the shutdown's own cut-off
        rounds (see :mod:`smtpcore._driver._shutdown`), as before."""
        transport = self.transport
        if (
            not self._write_unfinished
            or self.state.stopping
            or not transport.cancelled_close_closes()
        ):
            await transport.aclose()
            return
        with contextlib.suppress(TimeoutError):
            async with transport.deadline(0):
                await transport.aclose()

    def log_failure(self) -> None:
        """Log the exception being handled as the session's failure (one that ended
        :meth:`run`, or escaped it: see the trio adapter's ``_run_contained``)."""
        self.logger.exception(
            "%s session with %s failed", self.protocol, client_text(self.session)
        )

    def tls_from_the_start(self, handshake_timeout: float | None) -> Awaitable[None] | None:
        """What a transport given under TLS (a ``trio.SSLStream``, asyncio's
        ``start_server(ssl=...)``) still has to do before its ``tls`` can be read: its
        optional ``finish_handshake`` (a handshake made lazily, on first use), run as a
        client's is, so that ``tls`` describes the session from its first byte (RFC 8314
        §3.3); read before the handshake, it says None and the session runs as if in
        plaintext. None when there is nothing to finish, the everyday case, which then
        costs no coroutine. One place for both protocols and both adapters."""
        finish_handshake = self.transport.finish_handshake
        if finish_handshake is None:
            return None
        return self._shake_hands(finish_handshake, handshake_timeout)

    async def _shake_hands(
        self, handshake: Callable[[], Awaitable[None]], timeout: float | None
    ) -> None:
        """Run ``handshake`` under ``timeout``: one place for every handshake a server
        session makes (STARTTLS, STLS, ``tls_on_connect``, a given transport's). A
        failed one is the client's connection lost (RFC 3207 §4.1: the session
        cannot go on in plaintext), logged at INFO."""
        try:
            async with self.transport.deadline(timeout):
                await handshake()
        except (OSError, TimeoutError) as exc:
            self.logger.info(
                "TLS handshake with %s failed: %s", client_text(self.session), describe_error(exc)
            )
            raise ConnectionLost from None

    def log_lost_in_close(self, exc: ConnectionError | ssl.SSLError) -> None:
        """Log the connection lost as the transport closed (a last flush that found the
        client gone): what ends a session in any case, as a client's reset does, so
        one INFO line without a traceback; the session's replies were all made."""
        self.logger.info(
            "%s session with %s: connection lost as it closed: %s",
            self.protocol,
            client_text(self.session),
            describe_error(exc),
        )

    def _call_failed(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised out of the application's code (a handler's hook, a
        mailstore's method), is that code's failure, logged and answered as one: an
        ``Exception``, or a cancellation that does not cancel the session (the
        clock's ``stray_cancellation``). Anything else (the session's own
        cancellation: a timeout, a shutdown) must end the session."""
        return isinstance(exc, Exception) or self.transport.stray_cancellation(exc)

    def wake_if_idle(self) -> None:
        """Interrupt a wait for the next command (graceful shutdown)."""
        if self._waiting_idle:
            self._watchdog.expire()

    async def _known_client(self, send_timeout: float | None) -> tuple[str, int] | None:
        """Who the client is, as far as the server knows, for what trusts a client by
        its address (a loopback client's login without TLS, XCLIENT): the connection's
        peer, or the client a trusted proxy's header names (see
        :meth:`_client_from_proxy`).

        None when the header names no client (v1 ``UNKNOWN``, a v2 ``LOCAL`` command
        or unspecified family: HAProxy sends ``UNKNOWN`` for a client on a Unix
        socket) or names a Unix socket's path (v2 UNIX family), never an address:
        the peer is then the proxy's address, which the log shows with the client
        it stands in for (the session is counted under no address), but the client
        behind it is unknown, never loopback or trusted because its proxy is."""
        if not self.state.proxy_networks:
            return self.session.peer
        return await self._client_from_proxy(send_timeout)

    def cut_off(self) -> None:
        """Interrupt the session wherever it is, as its watchdog going off does: its
        :meth:`_close` then writes the shutting-down reply. A session not yet in
        its loop (a TLS handshake, the greeting) has no watchdog to go off: the
        adapter's cancellation ends it."""
        watchdog = getattr(self, "_watchdog", None)  # unset before the loop
        if watchdog is not None:
            watchdog.expire()

    async def _client_from_proxy(self, send_timeout: float | None) -> tuple[str, int] | None:
        """The client named by the PROXY header a trusted proxy opens the connection
        with, if it names one: from now on the session's
        peer (and ``local`` the address it reached) and counted under it.

        A header that names the client by no address (its ``source`` is None: the
        UNIX family names a socket's path, v1 ``UNKNOWN`` and v2 ``LOCAL`` name
        none) leaves the proxy's address as the peer, a stand-in the session knows
        for one (its ``peer_stands_in_for``), so that the log never names the
        proxy as the client (:func:`~smtpcore._driver._proxied.client_text`), and is
        counted under no address (:func:`counted_peer`).
        A client whose TLS the proxy terminated, as its header says, is under TLS
        from the start (the session's ``tls``: :func:`proxied_tls`).

        The header is read within the registry's ``proxy_timeout``, not the greeting's
        timeout: a proxy sends it at once, and a trickled one would hold a session
        slot for minutes (Postfix's ``smtpd_upstream_proxy_timeout``).

        A connection from anywhere else, a bad header, or a client over its share
        (told so with the registry's ``address_busy_reply``, written within
        ``send_timeout``) ends the session: :class:`ConnectionLost`.
        """
        transport = self.transport
        proxy = transport.peer_address
        if not trusted(proxy, self.state.proxy_networks):
            self.logger.info("connection from %s, not a trusted proxy: closed", peer_text(proxy))
            raise ConnectionLost
        try:
            header = await read_proxy_header(transport, self.state.proxy_timeout)
        except (ProxyProtocolError, OSError, TimeoutError) as exc:
            self.logger.info("bad PROXY header from %s: %s", peer_text(proxy), describe_error(exc))
            raise ConnectionLost from None
        session = self.session
        session.tls = proxied_tls(header)
        if header.source is None:
            session.peer_stands_in_for = unnamed_client_text(header)
        else:
            session.peer = header.source
            session.local = header.destination
        if header.source_path is not None:
            self.logger.info("connection from %s", client_text(session))
        counted = counted_peer(header)
        if not self.state.readdress(self, counted):
            self.state.log_turned_away(client_text(session), True, self.state.block_of(counted))
            if self.state.address_busy_reply:
                with contextlib.suppress(OSError, TimeoutError):
                    async with transport.deadline(send_timeout):
                        await transport.send_all(self.state.address_busy_reply)
            raise ConnectionLost
        return header.source

    async def _open(self) -> None:
        """Start the session: what comes before the client's first command (a PROXY
        header, TLS on connect, the greeting)."""
        raise NotImplementedError

    async def _close(self, timed_out: bool) -> bool:
        """End the session: its last replies (``timed_out``: the watchdog went off,
        a wait for the client timed out or a shutdown woke an idle session). True
        when the server ends it on its own (SMTP's 421, POP3's closing ``-ERR``),
        with the client perhaps still sending: :meth:`_end` then lingers. False
        after the client's QUIT, or its own close: nothing is left to read."""
        raise NotImplementedError

    async def _linger(self) -> None:
        """Close gracefully after the server's own goodbye: half-close (the transport's
        ``send_eof``, where it can), then read and drop what the client still sends,
        until it closes too, for :data:`LINGER` seconds and :data:`LINGER_BYTES`
        at most (Apache's lingering close).

        A socket closed with bytes of its peer unread is reset (RFC 1122 §4.2.2.13),
        and a reset makes the client's kernel drop what it had not read yet: the
        421 that RFC 5321 §3.8 has the server send before it closes, when the client
        pipelined commands behind the one that ended the session, or a chunk's
        content. Half-closed, the client reads the reply and then the end."""
        transport = self.transport
        left = LINGER_BYTES
        with contextlib.suppress(OSError, TimeoutError):
            async with transport.deadline(LAST_WORDS / 2 if self.state.stopping else LINGER):
                await transport.send_eof()
                while left > 0:
                    data = await transport.receive_to_drop(min(left, _LINGER_READ))
                    if not data:
                        break
                    left -= len(data)

    async def _ended(self) -> None:
        """Tidy up after the session, before the transport closes (POP3: the maildrop's
        lock, released before the client sees the end)."""

    def _after_close(self) -> Awaitable[None] | None:
        """What tells the application that the session is over, to await once the
        transport is closed (SMTP: ``handle_reset`` of an abandoned transaction,
        ``handle_close``), so that its code, however long it takes within its
        deadline, never holds the client's connection; None when there is nothing
        to tell."""
        return None
