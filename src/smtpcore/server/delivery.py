"""The delivery worker: takes queued messages to the recipients' mail exchangers.

For each queued message whose time has come, every pending recipient is
routed (:mod:`smtpcore.routing`), the recipients of one domain go together
to that domain's exchangers, tried in the order RFC 5321 §5.1 gives, with
TLS as the relay policy says (:mod:`smtpcore.server.relay_tls`). Then each
recipient is:

- sent, and recorded so at once, so that a restart cannot send it twice (if
  the disk refuses the record, this process keeps it in memory, never sends
  it again, and writes it again at each retry);
- refused for good, and given back to the sender in a bounce at once
  (:mod:`smtpcore.server.bounce`), with the remote's own words: every 5xx
  reply (to EHLO and HELO too, where every exchanger tried gives it: while
  one deferred or could not be reached, it may take the mail later, RFC 5321
  §5.1; a 5xx greeting waits, as Postfix's default ``smtp_skip_5xx_greeting``
  has it), and what the exchanger's announcements
  rule out before a word of the message is sent, which the client refuses
  with the reply RFC 3463 names (a message over its SIZE, ``552 5.3.4``;
  UTF-8 to a server without SMTPUTF8, ``553 5.6.7``; 8-bit content without
  8BITMIME, ``554 5.6.3``, except a report of this server's, which goes in
  its 7-bit form instead, :func:`~smtpcore.server.bounce.seven_bit_form`);
- or deferred (4xx, a connection lost or refused, DNS trouble), and retried
  with exponential backoff and jitter between ``retry_after`` and
  ``max_retry_after`` (Postfix's ``minimal_backoff_time`` and
  ``maximal_backoff_time``; RFC 5321 §4.5.4.1), the sender warned once after
  ``delay_warning`` if asked (Postfix's ``delay_warning_time``), until a
  round made once the message is ``max_queue_age`` old fails temporarily
  again: then it bounces with each recipient's last error.

The waits between rounds go by the monotonic clock and a message's age is counted
on it, so a step of the wall clock (NTP, ``date -s``) neither holds the queue, nor
makes it all due at once, nor expires mail early or late; the queue files keep
wall-clock times, which a restart reads (:mod:`~smtpcore.server.clocksteps`).

This module holds the worker's settings, its public methods and its defaults; each
part of its work is a base class of its own, one job each: the scheduler
(:mod:`~smtpcore.server._delivery_schedule`), a message's round
(:mod:`~smtpcore.server._delivery_message`), its local copies
(:mod:`~smtpcore.server._delivery_local`), its destination jobs
(:mod:`~smtpcore.server._delivery_destinations`) and its entries' reads and writes
(:mod:`~smtpcore.server._delivery_envelope`).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Final

from smtpcore._driver import Timeouts
from smtpcore.routing import FailedExchangers, RandomSource, Resolver, Router
from smtpcore.server._delivery_destinations import _DestinationJobs
from smtpcore.server._delivery_envelope import _Envelope
from smtpcore.server._delivery_local import _LocalCopies
from smtpcore.server._delivery_message import _MessageRounds
from smtpcore.server._delivery_schedule import _Scheduling
from smtpcore.server.activemarks import DeliveryMarks, MarksWriter
from smtpcore.server.backoff import MAX_BACKOFF, MIN_BACKOFF, backoff
from smtpcore.server.bounce import Report
from smtpcore.server.bouncerecords import BounceCopy
from smtpcore.server.clocksteps import MessageAges
from smtpcore.server.deadhops import DEAD_AFTER, DeadHops
from smtpcore.server.exchanger import ClientFactory, ExchangerSession, default_client
from smtpcore.server.internal import InternalAddresses
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.outbound import OutboundDelivery
from smtpcore.server.places import DestinationPlaces, default_destination_concurrency, destination
from smtpcore.server.queue import Queue, QueueEntry
from smtpcore.server.queueactions import Applied, QueueActions
from smtpcore.server.queuectl import QueueCommand
from smtpcore.server.relay_tls import RelayTLS, relay_tls_context
from smtpcore.server.relaycache import IDLE_TIME_LIMIT, relay_connections
from smtpcore.server.reports import SenderReports
from smtpcore.server.settlement import RoundSettlement
from smtpcore.server.tokens import SessionTokens
from smtpcore.server.waits import Threads, ThreadShare, finish

__all__ = [
    "ACTIVE_PER_SESSION",
    "Applied",
    "ClientFactory",
    "DeliveryWorker",
    "MAX_BACKOFF",
    "MIN_BACKOFF",
    "PLACE_RETRY",
    "QUIT_TIMEOUT",
    "RESOLVE_TIMEOUT",
    "backoff",
    "destination",
    "opportunistic_tls_context",
]

RESOLVE_TIMEOUT: Final = 120.0
"""Seconds one domain's lookups (its MX records, then its exchangers' addresses) may take
in a round by default: past that, a temporary DNS failure (451 4.4.3), and the mail waits
for the next round. The dnspython resolver bounds each lookup (5 s), but a domain can
make many, and a custom resolver may bound none: one that hangs held its message, never
retried nor expired, until a restart."""

QUIT_TIMEOUT: Final = 10.0
"""Seconds the relay waits for an exchanger to answer its QUIT by default
(:attr:`Timeouts.quit <smtpcore.asyncio.Timeouts.quit>`): what the session sent is
recorded before QUIT, and the reply tells nothing more, but the round waits for it, and
with it an operator's action on the message and the message's other domains. Postfix's
``smtp_quit_timeout`` is 300 s, as every command's; an exchanger that never answers
QUIT held a round that long."""


ACTIVE_PER_SESSION: Final = 10
"""Messages in a delivery round at once by default, per outbound session: the default
``active_limit`` is 10 times ``concurrency`` (200 at the default 20), a bound apart from
the sessions (Postfix keeps them apart too: ``qmgr_message_active_limit``, and a
process limit per transport). A round waiting for a session token, or whose session
hangs, holds one of these and no more: the other rounds, local copies, LMTP and reports
among them, go on. It bounds memory: a round holds its message's envelope, never its
content, and each of its destination jobs waiting for a token costs about 4 KB (its
task and coroutine frames), so at most ``active_limit`` times the destinations per
message (no more than its recipients, 100 by default) times 4 KB: 80 MB at worst by
default, about 1 MB when messages have one or two destinations."""

PLACE_RETRY: Final = 30.0
"""Seconds after which a message turned away by a full destination tries again at the
latest. It is woken at once when a place there is handed to it
(:class:`~smtpcore.server.places.DestinationPlaces`): this is only a safety net."""


def opportunistic_tls_context() -> ssl.SSLContext:
    """TLS that encrypts without checking who answers (RFC 7435 opportunistic security):
    MX records are not authenticated, so a name check would prove nothing."""
    return relay_tls_context(RelayTLS.MAY)


class DeliveryWorker(_MessageRounds, _DestinationJobs, _LocalCopies, _Scheduling):
    """Delivers the queue in the background; :meth:`run` until cancelled or :meth:`aclose`.

    ``router`` decides local or remote and where remote mail goes (its
    ``port`` is the remote port); ``mailboxes`` takes the bounces for local
    senders and any recipient that became local. Disk work runs in threads,
    so the event loop keeps serving sessions meanwhile. What bounds it is the number
    of the worker's calls handed to the threads at once, not the threads it holds:
    ``concurrency`` calls of its share (:attr:`disk`: local copies, reads, reports),
    plus the envelope writes and removals that must land and never wait for the share
    (small, one per outcome recorded), plus the content reads of its open sessions,
    one at a time each, which the exchanger makes in threads of its own (up to
    ``concurrency`` more). The executor has ``min(32, CPUs + 4)`` threads, 5 on one
    CPU: the worker can hold them all, and an inbound session committing its message
    then waits behind up to about twice ``concurrency`` of these calls, as it did when
    rounds were bounded by ``concurrency``, never behind the work of ``active_limit``
    rounds. ``resolve_timeout`` bounds one domain's lookups in a round
    (:data:`RESOLVE_TIMEOUT`).

    The scheduler. Up to ``active_limit`` messages are in a round at once
    (:data:`ACTIVE_PER_SESSION` per session by default), a bound apart from the
    ``concurrency`` sessions, as Postfix's active queue is apart from its transports'
    process limits: a round that waits for a session, or whose session hangs, holds its
    own place among them and no other, so hanging exchangers hold neither local work
    (Maildir, LMTP, reports) nor the rounds of other messages, until ``active_limit``
    rounds all wait for sessions. A ``hold`` or ``delete`` cuts a round short
    (:meth:`_cut_round_short`). A round delivers the local recipients, then runs one job
    per remote *destination* (:func:`destination`: the smart host, or the recipient's
    domain) of the message, all at once, and waits for every one of them. A job first
    takes a place at its destination, without waiting (at most
    ``destination_concurrency`` there; by default half of ``concurrency``, as Postfix's
    ``default_destination_concurrency_limit``, or all of it with a smart host, the only
    destination: :func:`default_destination_concurrency`), then one of the worker's
    ``concurrency`` session tokens, first come first served, which it holds while its
    sessions run: the worker never has more than ``concurrency`` outbound SMTP sessions
    in use, whatever the fan-out (idle connections kept for reuse are bounded apart, by
    :mod:`~smtpcore.server.relaycache`). A destination that is full turns the job away: its
    recipients stay pending, not attempted (no attempt counted, no delay notice, no
    bounce for it), the message waits in that destination's line, and its other
    destinations go on at once. The place given back first goes to the message that
    waited longest (why none starves: :mod:`smtpcore.server.places`): started in its
    round if that round still runs, else in a round begun at once, which delivers only
    the destinations the message waited at when its next attempt is not yet due.
    Local deliveries (Maildir, LMTP) take no place: they are not remote destinations.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        router: Router,
        resolver: Resolver,
        mailboxes: LocalMailboxes,
        hostname: str,
        retry_after: float = MIN_BACKOFF,
        max_retry_after: float = MAX_BACKOFF,
        max_queue_age: float = 5 * 86400.0,
        delay_warning: float | None = None,
        relay_tls: RelayTLS = RelayTLS.MAY,
        relay_ca: Path | None = None,
        internal: InternalAddresses | None = None,
        client_factory: ClientFactory = default_client,
        timeouts: Timeouts | None = None,
        concurrency: int = 20,
        destination_concurrency: int | None = None,
        active_limit: int | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: RandomSource | None = None,
        resolve_timeout: float = RESOLVE_TIMEOUT,
        threads: Threads | None = None,
        marks: DeliveryMarks | None = None,
        dead_after: int = DEAD_AFTER,
        connection_cache_time: float = IDLE_TIME_LIMIT,
    ) -> None:
        if resolve_timeout <= 0:
            raise ValueError("resolve_timeout must be positive")
        if destination_concurrency is None:
            smart_host = router.smart_host is not None
            destination_concurrency = default_destination_concurrency(
                concurrency, smart_host=smart_host
            )
        if active_limit is None:
            active_limit = ACTIVE_PER_SESSION * concurrency
        if concurrency < 1 or destination_concurrency < 1 or active_limit < 1:
            raise ValueError(
                "concurrency, destination_concurrency and active_limit must be at least 1"
            )
        self.queue = queue
        self.router = router
        self.resolver = resolver
        self.mailboxes = mailboxes
        self.hostname = hostname
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after
        self.max_queue_age = max_queue_age
        self.delay_warning = delay_warning
        """Seconds after which the sender hears once that mail waits; None: never."""
        self.relay_tls = relay_tls
        self.internal = internal if internal is not None else InternalAddresses()
        """Which addresses the relay must not connect to (none allowed by default)."""
        self.client_factory = client_factory
        self.threads = threads if threads is not None else Threads()
        """Where the worker's disk work runs (the server's, shared with its sessions): a
        stop waits there for what it cut off before the data directory's lock goes (see
        :meth:`MailServer.aclose <smtpcore.server.mailserver.MailServer.aclose>`). The
        worker hands its own work over through :attr:`disk`, never straight here (its
        exchangers' content reads go to :func:`asyncio.to_thread`)."""
        self.marks = marks
        """Where the messages in a session or a local copy now are marked for ``queue
        list`` (:mod:`smtpcore.server.activemarks`); None: nowhere."""
        self.disk = ThreadShare(self.threads, concurrency)
        """The worker's share of :attr:`threads`: ``concurrency`` calls at once through
        its ``run``, as many as it had when rounds were bounded by ``concurrency`` too;
        its rounds, up to ``active_limit``, take turns there. The writes whose loss
        would repeat a delivery or lose a record go through its ``now``, at once (the
        rule: :class:`~smtpcore.server.waits.ThreadShare`)."""
        self.marks_writer = MarksWriter(marks, self.disk)
        """:attr:`marks` as the deliveries make them, written in :attr:`disk`."""
        self.timeouts = timeouts or Timeouts(quit=QUIT_TIMEOUT)
        self.concurrency = concurrency
        """Outbound sessions open at once (each holds one of :attr:`_sessions`)."""
        self.place_retry = PLACE_RETRY
        """Seconds a message turned away by a full destination waits at most
        (:data:`PLACE_RETRY`)."""
        self.active_limit = active_limit
        """Messages in a round at once (by default :data:`ACTIVE_PER_SESSION` times
        ``concurrency``), whatever their sessions."""
        self.destination_concurrency = destination_concurrency
        """Outbound sessions at once to one destination (above ``concurrency``: no effect)."""
        self.places = DestinationPlaces(self.destination_concurrency)
        self._sessions = SessionTokens(concurrency)
        """One token per outbound session job: the bound on sessions open at once,
        handed out first come, first served (:mod:`smtpcore.server.tokens`)."""
        self.clock = clock
        """The wall clock: the times written in queue files and reports."""
        self.monotonic = monotonic
        """The clock every wait in memory goes by (by default :func:`time.monotonic`,
        which the event loop's ``time()`` reads, whatever ``clock`` is: a fake wall
        clock alone leaves the protection on, and a test that fakes time passes both):
        a step of the wall clock neither holds nor floods the queue
        (:mod:`~smtpcore.server.clocksteps`)."""
        self.ages = MessageAges(lambda: self.clock(), lambda: self.monotonic())
        """Each scheduled message's age, which no step of the wall clock changes: its
        expiry and delay warning go by it (:meth:`age`)."""
        self.rng: RandomSource = rng or random.SystemRandom()
        self.resolve_timeout = resolve_timeout
        self.failures = FailedExchangers(lambda: self.monotonic())
        self.dead_hops = DeadHops(
            lambda: self.monotonic(),
            lambda: self.retry_after,
            lambda: self.max_retry_after,
            dead_after=dead_after,
        )
        """Destinations suspended after ``dead_after`` failed connections in a row: their
        mail waits without connecting until a probe after ``retry_after`` finds them back
        (:mod:`smtpcore.server.deadhops`)."""
        self.tls_context = relay_tls_context(relay_tls, relay_ca)
        self.exchanger = ExchangerSession(
            client_factory=client_factory,
            hostname=hostname,
            timeouts=self.timeouts,
            tls_context=self.tls_context,
            relay_tls=relay_tls,
            relay_ca=relay_ca,
            connections=relay_connections(connection_cache_time),
        )
        """One session with one exchanger; those that end cleanly wait idle for the next
        message to the same next hop (:mod:`smtpcore.server.relaycache`)."""
        self._due: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._withdrawals: dict[str, asyncio.Future[None]] = {}
        """Per message in a round, done once an operator's ``hold`` or ``delete`` cuts the
        round short (:meth:`_cut_round_short`)."""
        self._catch_up_until: dict[str, float] = {}
        """Per message waiting for a place, its next full round's time: a round begun
        before it delivers only the destinations the message waited at."""
        self._full_due: dict[str, float] = {}
        """Per scheduled message, the monotonic time its next full round is due (its
        stored next attempt as a wait, :meth:`waits_for`): a round begun before it is
        early (a ``queue flush``), and may count no attempt (:func:`_counts
        <smtpcore.server._delivery_round._counts>`). The monotonic clock decides, so a
        step of the wall clock makes no round early."""
        self._in_round: dict[str, Callable[[str], bool]] = {}
        """Per message whose round's jobs still run: how to start a job there at a
        destination whose place was just handed to it."""
        self._envelopes: weakref.WeakValueDictionary[str, _Envelope] = (
            weakref.WeakValueDictionary()
        )
        """Per message, its envelope's writer, alive while a write to it is under way."""
        self._unsaved: dict[str, QueueEntry] = {}
        """Entries as this process left them when their queue file could not take the
        change (a full disk): read in their place, so that nothing sent or reported is
        done again, and written again by each round until the disk takes them."""
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._copies_begun: dict[str, set[str]] = {}
        """For each entry this process queued, the mailboxes its rounds began to write its
        copy into: only these can hold one already (a round broken after the write), so a
        copy for any other is written without the search, which lists the whole mailbox.
        An entry not here (found on disk at start) is searched for every time."""
        # The pieces hold the worker to read it at each use (settings, and pieces, may be
        # replaced while it runs); the cycle this makes is freed by the garbage collector.
        self.reports = SenderReports(self)
        """Bounces, delay warnings and success reports (:mod:`smtpcore.server.reports`)."""
        self.actions = QueueActions(self)
        """The operator's commands (:mod:`smtpcore.server.queueactions`)."""
        self.settlement = RoundSettlement(self)
        """What each round's outcomes leave in the queue (:mod:`smtpcore.server.settlement`)."""
        self.outbound = OutboundDelivery(self)
        """Remote recipients taken to their exchangers (:mod:`smtpcore.server.outbound`)."""

    # -- the operator's commands (``python -m smtpcore queue``) -------------------

    async def apply(self, command: QueueCommand) -> Applied:
        """Carry out ``command`` on the queue, between rounds
        (:meth:`QueueActions.apply <smtpcore.server.queueactions.QueueActions.apply>`)."""
        return await self.actions.apply(command)

    async def aclose(self, grace: float = 10.0) -> None:
        """Let deliveries under way finish, then the operator's actions that waited for
        them be written, all within ``grace`` seconds (the operator's stop timeout bounds
        the whole stop); then cancel what is left
        (:func:`~smtpcore.server.waits.finish`). The success reports a round cut
        off owes are on disk with its recipients' marks: the next start makes them.
        Meanwhile, from the start and within the same grace, the relay connections
        kept idle are QUIT, and none is kept after (:meth:`RelayConnections.aclose
        <smtpcore.server.relaycache.RelayConnections.aclose>`).

        The caller cancels the :meth:`run` task; what is left stays queued, and an
        action not written stays in its command file for the next start.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        connections = self.exchanger.connections
        closing = None if connections is None else loop.create_task(connections.aclose(grace))
        try:
            await finish(set(self._running.values()), grace)
            await finish(set(self.actions.control_tasks), max(deadline - loop.time(), 0.0))
            await self.marks_writer.finish(max(deadline - loop.time(), 0.0))
        finally:
            if closing is not None:
                await closing

    async def send_report(
        self,
        queue_id: str,
        sender: str,
        report: Report,
        kind: str,
        *,
        requiretls: bool = False,
        landed: Callable[[], object] | None = None,
        copy: BounceCopy | None = None,
    ) -> None:
        """Hand a delivery status notification to ``sender``
        (:meth:`SenderReports.send_report <smtpcore.server.reports.SenderReports.send_report>`).
        Every bounce and delay warning goes through here; ``landed()`` is called in the
        thread call that made it, as it lands (a bounce copy's record): a wrapper passes
        it on, as it passes on ``copy``, the bounce copy it is."""
        await self.reports.send_report(
            queue_id, sender, report, kind, requiretls=requiretls, landed=landed, copy=copy
        )
