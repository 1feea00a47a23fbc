"""The live sessions of one server: counted, limited, and woken when it stops.

SMTP and POP3 sessions differ; counting them, refusing one past the limit
(the whole server's, or one address's share), logging the clients turned
away, and waking idle ones for a graceful shutdown do not.
:class:`SessionRegistry` holds all that for both protocols and both adapters,
apart from where the server listens (:mod:`~smtpcore._driver._listener`) and
from the life of one session (:mod:`~smtpcore._driver._served_session`): it is
what the accept loop asks for every connection, and what a session tells when
it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import ClassVar, Generic, Protocol, TypeVar

from smtpcore._driver._proxied import DEFAULT_PROXY_TIMEOUT, Network, peer_text, trusted
from smtpcore._driver._transport import Link
from smtpcore._driver._turnedaway import STOPPING, TurnedAwayLog
from smtpcore._ip import CLIENT_IPV6_PREFIX_LENGTH, client_block, unmapped

__all__ = ["ListenedSession", "SessionRegistry", "session_address"]


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

    def forwards_for_others(self, peer: tuple[str, int]) -> bool:
        """Whether the client a trusted proxy's header names speaks for others in turn
        (SMTP's ``xclient_from``): then it is counted under no address either."""
        return False

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
        :data:`~smtpcore._driver._shutdown.LAST_WORDS` seconds for it, then cancels
        what is left."""
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
