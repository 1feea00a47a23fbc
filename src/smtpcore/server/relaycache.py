"""Relay connections kept open for the next message to the same next hop, as Postfix's
smtp(8) connection cache (``CONNECTION_CACHE_README``).

A session whose transaction ended cleanly (a ``250`` after the content, no error, no
timeout) is not closed: it waits here, idle, for :data:`IDLE_TIME_LIMIT` seconds
(Postfix's ``smtp_connection_cache_time_limit``), and the next message to the *same*
next hop takes it, its TLS and EHLO extensions as negotiated, once an ``RSET`` has
verified it (:func:`verify_kept`, Postfix's ``smtp_rset_timeout``: a transaction that
ended has nothing to reset, RFC 5321 §4.1.4, but a reply the hop sent unasked while
the connection was idle must not pass for the next ``MAIL``'s). Same means every part of
:class:`HopKey`: the exchanger's name, the address and port connected to, and the TLS
that applied (the level, REQUIRETLS and the name a certificate is checked against,
sent as SNI). A connection made under one policy never carries a message that asked
for another: one opened under ``may`` has proved nothing a ``verify`` message needs
(RFC 7435 §3, RFC 8689 §4.2.1); Postfix 3.4 and later, which reuse TLS connections,
likewise put the TLS policy in their cache keys. Nor is a session kept that lacks for
now what a new connection may have (:attr:`Idle.lacking_for_now`: TLS, or the EHLO
extensions): the next message tries again.

Each connection carries at most :data:`REUSE_COUNT_LIMIT` transactions, and is not
taken once :data:`REUSE_TIME_LIMIT` seconds old (``smtp_connection_reuse_time_limit``,
``smtp_connection_reuse_count_limit``); nor is one kept that has had the ``MAIL``
commands the hop's LIMITS ``MAILMAX`` allows a session (RFC 9422 §4.1): it is QUIT.
At most :data:`MAX_IDLE` are held in all, idle or being QUIT, so that memory and
descriptors stay bounded whatever the destinations.
Idle connections do not count against the worker's ``concurrency`` nor a destination's
``destination_concurrency``: those bound sessions at work, as Postfix's bound its
delivery agents while the connections it caches are held by scache(8), apart. The relay
has at most ``concurrency`` + :data:`MAX_IDLE` connections open. Those that expire are
QUIT by a task that lives only while some wait; :meth:`RelayConnections.aclose` QUITs
the rest at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from smtpcore._driver import (
    BaseSMTPClient,
    SenderRefused,
    SMTPConnectionError,
    SMTPError,
    SMTPProtocolError,
)
from smtpcore._driver._smtp_unanswered import end_unanswered
from smtpcore.server.log import loggable, logger
from smtpcore.server.relay_tls import RelayTLS
from smtpcore.smtp import ClientConnection, Rset, TransactionResult
from smtpcore.smtp._state import State

__all__ = [
    "CachedConnectionGone",
    "IDLE_TIME_LIMIT",
    "MAX_IDLE",
    "MAX_IDLE_TIME_LIMIT",
    "REUSE_COUNT_LIMIT",
    "RSET_TIMEOUT",
    "REUSE_TIME_LIMIT",
    "HopKey",
    "Idle",
    "RelayConnections",
    "ended_cleanly",
    "gone_before_mail",
    "relay_connections",
    "verify_kept",
]

IDLE_TIME_LIMIT: Final = 2.0
"""Seconds an idle connection waits for the next message (Postfix's
``smtp_connection_cache_time_limit``): long enough for the queue's next message to the
hop, short enough not to hold a slot at the exchanger."""

REUSE_TIME_LIMIT: Final = 300.0
"""Seconds after its opening past which a connection is not taken again (Postfix's
``smtp_connection_reuse_time_limit``): a long-lived session is not kept past what an
exchanger's own limits may allow."""

REUSE_COUNT_LIMIT: Final = 100
"""Transactions one connection carries at most (Postfix's
``smtp_connection_reuse_count_limit``)."""

MAX_IDLE_TIME_LIMIT: Final = 60.0
"""The longest idle time ``serve --connection-cache-time`` takes: thirty times
Postfix's 2 s default. An idle connection holds a slot at the exchanger, which may
close it anyway (RFC 5321 §4.5.3.2.7 asks a server to wait 5 minutes for the next
command, many wait less), and one past :data:`REUSE_TIME_LIMIT` is never taken."""

MAX_IDLE: Final = 20
"""Connections the cache holds at once, all next hops together, idle or being QUIT
once expired (a QUIT may wait for its reply up to the relay's QUIT timeout); past it
a session is QUIT as it would be without the cache."""

RSET_TIMEOUT: Final = 20.0
"""Seconds the ``RSET`` that verifies a kept connection (:func:`verify_kept`) waits for
its reply at most, less if the relay's command timeout is shorter (Postfix's
``smtp_rset_timeout``): a hop that no longer answers costs the message that long, then
a new connection, not the command timeout's minutes."""

CLOSE_WAIT: Final = 1.0
"""Seconds :meth:`RelayConnections.aclose` waits for the idle connections' QUIT
replies before it closes them without: a stop is not held by an exchanger that no
longer answers."""


@dataclass(frozen=True, slots=True)
class HopKey:
    """The exact next hop a connection was made to, with the TLS that applied: a
    connection serves only a message whose own key is equal."""

    host: str
    """The exchanger's name (the MX host, or the smart host)."""
    address: str
    port: int
    tls_level: RelayTLS
    requiretls: bool
    tls_name: str
    """The name the certificate is checked against and SNI sends."""


@dataclass(slots=True)
class Idle:
    """A connection and what its reuse is judged by."""

    client: BaseSMTPClient
    opened: float
    """When it was opened (the cache's clock)."""
    transactions: int
    """Transactions it has carried."""
    last: int = 0
    """Its last transaction's number (the client's ``transaction_number``) as it
    was kept: a later failure that leaves it unchanged came before the new ``MAIL``
    was answered. A number, not the record: two transactions with the same envelope
    and replies have equal records."""
    idle_since: float = 0.0
    lacking_for_now: bool = False
    """Its session lacks what a new connection to the hop may have, as the relay found
    when it opened it: TLS under ``may`` (RFC 7435 §3), STARTTLS refused (any reply but
    ``220``) or a handshake that failed and this new connection made without STARTTLS;
    or the EHLO extensions, EHLO answered ``4xx`` and HELO taken, in plaintext (no
    STARTTLS to try) or after TLS (no SMTPUTF8, 8BITMIME, REQUIRETLS... a message may
    need, which the relay then takes as lacking for now and defers). Such a connection
    is never kept: kept, it would carry every message to the hop so for up to
    :data:`REUSE_TIME_LIMIT` seconds without trying TLS or EHLO again. An exchanger
    whose EHLO reply offers no STARTTLS has not failed at TLS, nor has a session a
    client factory opened without STARTTLS."""


def ended_cleanly(client: BaseSMTPClient, before: int) -> bool:
    """Whether ``client``'s session may carry another transaction: a new one since
    the one numbered ``before`` ended with a 2xx after the content, and the session
    stands between transactions, no reply due and nothing unasked for received in
    the read of the last reply (one too many after the content, which
    :func:`verify_kept` would find anyway: such a connection is not even kept)."""
    conn = client.connection
    result = conn.transaction
    return (
        conn.state is State.READY
        and not conn.pending
        and not conn.buffered
        and result is not None
        and conn.transaction_number != before
        and result.complete
        and bool(result.end_replies)
        and all(reply.is_positive for reply in result.end_replies)
    )


def _mail_max_reached(conn: ClientConnection) -> bool:
    """Whether the session has had the ``MAIL`` commands the server's LIMITS
    ``MAILMAX`` allows it (RFC 9422 §4.1: refused ones count too, as
    :attr:`~smtpcore.smtp.ClientConnection.transaction_number` does): kept, it could
    carry no other message, which would only find that out after the ``RSET`` that
    verifies it (:func:`verify_kept`) and go over a new connection anyway."""
    mail_max = conn.extensions.limits.mail_max
    return mail_max is not None and conn.transaction_number >= mail_max


class RelayConnections:
    """The idle relay connections, by :class:`HopKey`, with Postfix's limits."""

    def __init__(
        self,
        *,
        idle_time_limit: float = IDLE_TIME_LIMIT,
        reuse_time_limit: float = REUSE_TIME_LIMIT,
        reuse_count_limit: int = REUSE_COUNT_LIMIT,
        max_idle: int = MAX_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle_time_limit <= 0 or reuse_time_limit <= 0:
            raise ValueError("the connection cache's time limits must be positive")
        if reuse_count_limit < 1 or max_idle < 1:
            raise ValueError("reuse_count_limit and max_idle must be at least 1")
        self.idle_time_limit = idle_time_limit
        self.reuse_time_limit = reuse_time_limit
        self.reuse_count_limit = reuse_count_limit
        self.max_idle = max_idle
        self.clock = clock
        self._idle: dict[HopKey, list[Idle]] = {}
        self._count = 0
        self._reaper: asyncio.Task[None] | None = None
        self._wake_at = math.inf
        """When the reaper wakes next; a connection kept that expires before it wakes
        it sooner (``_sooner``)."""
        self._sooner = asyncio.Event()
        self._quitting: dict[asyncio.Task[None], Idle] = {}
        """The QUITs under way, with the connection each is for."""
        self._closed = False

    def __len__(self) -> int:
        """Idle connections waiting now."""
        return self._count

    def take(self, key: HopKey) -> Idle | None:
        """The most recently idle connection to ``key`` still within its limits, taken
        out of the cache; None when there is none. Those past their limits stay for the
        reaper to QUIT."""
        waiting = self._idle.get(key, [])
        now = self.clock()
        for index in range(len(waiting) - 1, -1, -1):
            if self._usable(waiting[index], now):
                idle = waiting.pop(index)
                self._count -= 1
                if not waiting:
                    del self._idle[key]
                return idle
        return None

    def keep(self, key: HopKey, idle: Idle) -> bool:
        """Keep ``idle``, whose last transaction ended cleanly (:func:`ended_cleanly`),
        for the next message to ``key``; False when it may not be kept (its limits or
        the hop's ``MAILMAX`` reached, the cache full or closed): then the caller QUITs
        it. Full counts the expired connections whose QUIT is under way: they are still
        open."""
        idle.transactions += 1
        now = self.clock()
        if (
            self._closed
            or self._held() >= self.max_idle
            or not self._reusable(idle, now)
            or _mail_max_reached(idle.client.connection)
        ):
            return False
        idle.idle_since = now
        idle.last = idle.client.connection.transaction_number
        self._idle.setdefault(key, []).append(idle)
        self._count += 1
        if self._reaper is None:
            self._sooner = asyncio.Event()  # the reaper's own: bound to its loop
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        elif self._expiry(idle) < self._wake_at:
            self._sooner.set()
        return True

    def _held(self) -> int:
        """The connections the cache holds open: idle, or expired with their QUIT under
        way (an exchanger slow to answer it holds its connection that long)."""
        return self._count + len(self._quitting)

    def _reusable(self, idle: Idle, now: float) -> bool:
        return (
            idle.transactions < self.reuse_count_limit
            and now - idle.opened < self.reuse_time_limit
        )

    def _usable(self, idle: Idle, now: float) -> bool:
        return self._reusable(idle, now) and now - idle.idle_since < self.idle_time_limit

    def _expiry(self, idle: Idle) -> float:
        """When ``idle`` may no longer be taken: its idle time out, or its reuse time
        (a connection past it is never taken, so it is not kept open either)."""
        return min(idle.idle_since + self.idle_time_limit, idle.opened + self.reuse_time_limit)

    async def _reap(self) -> None:
        """QUIT each idle connection as it expires (:meth:`_expiry`); ends when none is
        left. Each QUIT runs in its own task: an exchanger that never answers holds
        its own connection, never the next one's expiry. A connection kept while it
        sleeps, which expires first (opened long before), wakes it (:meth:`keep`)."""
        try:
            while self._count:
                now = self.clock()
                for key, waiting in list(self._idle.items()):
                    kept: list[Idle] = []
                    for idle in waiting:
                        if self._usable(idle, now):
                            kept.append(idle)
                        else:
                            self._count -= 1
                            self._start_quit(idle)
                    if kept:
                        self._idle[key] = kept
                    else:
                        del self._idle[key]
                if not self._count:
                    break
                soonest = min(
                    self._expiry(idle) for waiting in self._idle.values() for idle in waiting
                )
                self._wake_at = soonest
                self._sooner.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._sooner.wait(), max(soonest - self.clock(), 0.0))
        finally:
            self._reaper = None
            self._wake_at = math.inf

    def _start_quit(self, idle: Idle) -> None:
        """QUIT ``idle`` in a task of its own, kept until it ends for :meth:`aclose`."""
        task = asyncio.get_running_loop().create_task(_quit(idle))
        self._quitting[task] = idle
        task.add_done_callback(self._quitting.pop)

    async def aclose(self, wait: float = CLOSE_WAIT) -> None:
        """QUIT every idle connection (within ``wait`` seconds, at most
        :data:`CLOSE_WAIT`, then closed without the reply) and keep none from now on:
        nothing is left open, no task runs. The QUITs of connections that expired
        before get the same wait."""
        self._closed = True
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)
        idle = [entry for waiting in self._idle.values() for entry in waiting]
        self._idle.clear()
        self._count = 0
        for entry in idle:
            self._start_quit(entry)
        quits = dict(self._quitting)
        if not quits:
            return
        _, late = await asyncio.wait(quits, timeout=min(max(wait, 0.0), CLOSE_WAIT))
        for task in late:
            task.cancel()
        await asyncio.gather(*quits, return_exceptions=True)
        for task in late:  # one cancelled before it began has closed nothing
            await quits[task].client.close()


async def _quit(idle: Idle) -> None:
    """QUIT ``idle``'s session; the client closes the connection whatever happens."""
    client = idle.client
    try:
        await client.quit()
    except Exception as exc:  # closed anyway: the news is only for the log
        logger.info("closing an idle relay connection to %s: %s", loggable(client.host), exc)


def relay_connections(idle_time_limit: float) -> RelayConnections | None:
    """The cache for the worker's ``connection_cache_time`` (``serve
    --connection-cache-time``): None for 0, which keeps no connection; at most
    :data:`MAX_IDLE_TIME_LIMIT`."""
    if idle_time_limit < 0:
        raise ValueError("connection_cache_time must not be negative (0: no cache)")
    if idle_time_limit > MAX_IDLE_TIME_LIMIT:
        raise ValueError(f"connection_cache_time must be at most {MAX_IDLE_TIME_LIMIT:g} seconds")
    return RelayConnections(idle_time_limit=idle_time_limit) if idle_time_limit else None


class CachedConnectionGone(Exception):
    """A kept connection turned out closed as the next message began on it: the hop
    sent 421 or closed it while it was idle. Nothing of the message was taken (its
    ``MAIL`` was never accepted), so it goes at once over a new connection, no
    attempt counted against the hop."""


async def verify_kept(client: BaseSMTPClient) -> None:
    """Check that the kept ``client`` is still usable before it carries the next
    message, as Postfix does ("The SMTP client sends RSET ... to verify that a cached
    session is still usable", ``smtp_rset_timeout``): nothing has arrived unasked while
    it was idle (the client's look at what it holds and what reached the socket), and
    an ``RSET``, sent on its own, not pipelined with the ``MAIL``, is answered ``250``
    within :data:`RSET_TIMEOUT` seconds with nothing behind it. Else
    :class:`CachedConnectionGone`, the connection closed: a reply the hop sent
    unasked (one too many after the last content, a ``421``), its close, a refusal
    or no answer; the message goes over a new connection. A reply sent unasked after
    the ``RSET`` went out, a ``250`` at that, cannot be told from its answer: Postfix
    has the same limit; the ``MAIL``'s own look (:func:`gone_before_mail`) may still
    find it."""
    saved = client.timeouts
    command = RSET_TIMEOUT if saved.command is None else min(saved.command, RSET_TIMEOUT)
    client.timeouts = replace(saved, command=command)
    try:
        await client._take_arrived()  # the look the client makes before an end of data
        reply = await client.command(Rset())
        if reply.code != 250:
            raise CachedConnectionGone(f"RSET answered: {reply}")
        if client.connection.buffered:
            raise CachedConnectionGone("a reply no command asked for came behind RSET's")
    except BaseException as exc:  # a stop's cancellation too: closed, never left open
        await client.close()
        if isinstance(exc, SMTPError):
            raise CachedConnectionGone(str(exc)) from exc
        raise
    finally:
        client.timeouts = saved


def gone_before_mail(exc: SMTPError, client: BaseSMTPClient, last: int) -> bool:
    """Whether ``exc``, raised by a message on a kept connection whose last
    transaction was numbered ``last`` before it, is that connection found unusable
    before the message's first ``MAIL`` was accepted: nothing of the message was
    taken, so it may go over a new connection, in one transaction or split by LIMITS
    (RFC 9422) alike. That is: the server's close, or its 421 (read while idle, or as
    the answer to ``MAIL``, RFC 5321 §3.8), no ``MAIL`` of the message answered yet or
    its first answered 421; or replies out of step, or one that cannot be read
    (:class:`SMTPProtocolError`), before a second ``MAIL``: a reply the hop sent
    unasked after the verifying ``RSET`` went out (:func:`verify_kept`) is read as its
    answer, each reply after it as the next command's, until one cannot be (a ``250``
    to ``DATA``).

    Never when something of the message may have been taken or a transaction of it
    has ended (:func:`_taken`): an end of its content sent (its reply read, unreadable
    or still due), a recipient's ``RCPT`` answered, or a batch's ``MAIL`` refused; a
    new connection would send the message again to recipients already recorded as
    delivered, bounced or deferred. A timeout is not either: the hop is slow, and
    would be as slow to a new connection."""
    if not isinstance(exc, (SMTPConnectionError, SenderRefused, SMTPProtocolError)):
        return False
    if isinstance(exc, SMTPConnectionError) and exc.local:
        return False
    conn = client.connection
    if _taken(conn, exc.result):
        return False
    mails = conn.transaction_number - last  # the message's MAIL commands answered
    if mails == 0:
        return True
    if mails > 1:
        return False
    if isinstance(exc, SMTPProtocolError):
        return True
    record = conn.transaction
    mail = None if record is None else record.mail_reply
    return mail is not None and mail.code == 421


def _taken(conn: ClientConnection, result: TransactionResult | None) -> bool:
    """Whether the hop may have taken something of a message that failed with
    ``result`` (the error's: its transactions, a LIMITS batch's each) on ``conn``: an
    end of content sent with its reply due (:func:`end_unanswered`), a reply to one,
    a recipient's ``RCPT`` answered, or a transaction that ended with its ``MAIL``
    refused: its recipients were recorded bounced or deferred as it ended (and, with
    PIPELINING, its ``RCPT`` and an end of data may have gone out behind the ``MAIL``).
    Only a ``MAIL`` answered ``421`` leaves its recipients unanswered: the client
    raises :class:`SMTPConnectionError` for it, never a refusal of the batch."""
    if end_unanswered(conn):
        return True
    if result is None:
        return False
    return (
        bool(result.end_replies)
        or result.data_reply is not None
        or any(item.reply is not None for item in result.recipients)
    )
