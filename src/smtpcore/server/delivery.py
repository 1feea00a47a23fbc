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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Final

from smtpcore._driver import Timeouts
from smtpcore.address import AddressError, parse_mailbox
from smtpcore.routing import (
    FailedExchangers,
    LocalDelivery,
    RandomSource,
    Rejected,
    RejectReason,
    RemoteDelivery,
    Resolver,
    Router,
)
from smtpcore.server._delivery_envelope import _Envelope, _EnvelopeKeeping
from smtpcore.server._delivery_refusals import _recipient_refusal, _sender_refusal
from smtpcore.server._delivery_round import _all_finished, _counts, _Round
from smtpcore.server.activemarks import DeliveryMarks, MarksWriter
from smtpcore.server.backoff import MAX_BACKOFF, MIN_BACKOFF, backoff
from smtpcore.server.bounce import Report
from smtpcore.server.bouncerecords import BounceCopy
from smtpcore.server.cutshort import RoundProgress, cut_short_outcomes
from smtpcore.server.deadhops import DEAD_AFTER, DeadHops
from smtpcore.server.exchanger import (
    ClientFactory,
    ExchangerSession,
    Outcome,
    Recorder,
    default_client,
)
from smtpcore.server.internal import InternalAddresses
from smtpcore.server.log import loggable, logger, printable
from smtpcore.server.mailboxes import DELIVERED, LocalMailboxes, delivered_note
from smtpcore.server.outbound import OutboundDelivery
from smtpcore.server.places import (
    DestinationPlaces,
    default_destination_concurrency,
    destination,
)
from smtpcore.server.queue import (
    Queue,
    QueuedContent,
    QueueEntry,
    RecipientStatus,
)
from smtpcore.server.queueactions import Applied, QueueActions
from smtpcore.server.queuectl import QueueCommand
from smtpcore.server.relay_tls import RelayTLS, relay_tls_context
from smtpcore.server.relaycache import IDLE_TIME_LIMIT, relay_connections
from smtpcore.server.reports import SenderReports
from smtpcore.server.settlement import RoundSettlement, local_error, rejected_outcome
from smtpcore.server.tokens import SessionTokens
from smtpcore.server.waits import Threads, ThreadShare, finish, stray_cancellation, within

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


class DeliveryWorker(_EnvelopeKeeping):
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
    open, whatever the fan-out. A destination that is full turns the job away: its
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
        self.rng: RandomSource = rng or random.SystemRandom()
        self.resolve_timeout = resolve_timeout
        self.failures = FailedExchangers(time.monotonic)
        self.dead_hops = DeadHops(
            lambda: self.clock(),
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

    # -- scheduling -----------------------------------------------------------

    def schedule(self, entry: QueueEntry, *, new: bool = False) -> None:
        """Deliver ``entry`` at its ``next_attempt`` (now, for a new message). ``new``:
        this process has just queued it, so none of its local copies exists yet."""
        if new:
            self._copies_begun.setdefault(entry.id, set())
        self._catch_up_until.pop(entry.id, None)
        self._due[entry.id] = entry.next_attempt
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _schedule_for_places(self, entry: QueueEntry) -> None:
        """``entry`` waits for a place at some destination: it runs again when one is
        handed to it (:meth:`_hand_over`), or after :data:`PLACE_RETRY` at the latest,
        never before its next full round is due if that is sooner. Until then, a round
        delivers only where it waited (:attr:`_catch_up_until`)."""
        now = self.clock()
        retry = now + PLACE_RETRY
        due = min(entry.next_attempt, retry) if entry.next_attempt > now else retry
        self._catch_up_until[entry.id] = entry.next_attempt
        self._due[entry.id] = now if self.places.handed(entry.id) else due
        self._wake()

    def _give_back(self, place: str) -> None:
        """A session at ``place`` ended: its place goes on (:meth:`_hand_over`)."""
        self._hand_over(place, self.places.give_back(place))

    def _hand_over(self, place: str, heir: str | None) -> None:
        """A place at ``place`` was handed to ``heir``: its round starts the job there if
        it still runs, else the message is due now, for a round that takes the place up
        (delivering only where it waited if its full round is not due yet)."""
        if heir is None:
            return
        start = self._in_round.get(heir)
        if start is not None and start(place):
            return
        due = self._due.get(heir)
        if due is not None:
            now = self.clock()
            if due > now:
                self._catch_up_until.setdefault(heir, due)
            self._due[heir] = min(due, now)
            self._wake()

    def _withdraw(self, queue_id: str, places: Collection[str]) -> None:
        """``queue_id`` waits no longer at ``places``; what was handed to it goes on."""
        for place in places:
            self._hand_over(place, self.places.withdraw(queue_id, place))

    def _forget_places(self, queue_id: str) -> None:
        """``queue_id`` left the schedule (delivered, held, deleted, gone)."""
        self._withdraw(queue_id, self.places.awaited_by(queue_id))
        self._catch_up_until.pop(queue_id, None)

    def _forget_places_if_unscheduled(self, queue_id: str) -> None:
        """Take ``queue_id`` out of every destination's line once nothing will run it
        (neither scheduled nor in a round: held, deleted, gone, or the disk refused):
        no round of it would take up a place handed to it, nor give it back, and the
        destination would be a place short for the life of the process."""
        if queue_id not in self._due and queue_id not in self._running:
            self._forget_places(queue_id)

    @property
    def queued(self) -> int:
        """Messages in the queue, in delivery or waiting."""
        return len(self._due) + len(self._running)

    async def run(self) -> None:
        """Deliver what is due, sleeping until the next due time or a new message."""
        self._wakeup = asyncio.Event()
        try:
            while True:
                self._wakeup.clear()
                now = self.clock()
                for queue_id, due in sorted(self._due.items(), key=lambda item: item[1]):
                    if len(self._running) >= self.active_limit:
                        break
                    if due <= now and queue_id not in self._running:
                        del self._due[queue_id]
                        self._begin_round(queue_id)
                waiting = [d for q, d in self._due.items() if q not in self._running]
                timeout = None
                if waiting and len(self._running) < self.active_limit:
                    timeout = max(min(waiting) - self.clock(), 0.0) + 0.01
                # within, not wait_for: on Python 3.11 wait_for loses a cancellation
                # that comes as the event is set (a round ending as the server stops),
                # and this loop then ran on, holding the stop for ever.
                with contextlib.suppress(asyncio.TimeoutError):
                    await within(self._wakeup.wait(), timeout)
        finally:
            self._wakeup = None

    def _begin_round(self, queue_id: str) -> None:
        loop = asyncio.get_running_loop()
        self._withdrawals[queue_id] = loop.create_future()
        task = loop.create_task(self._process(queue_id))
        self._running[queue_id] = task
        task.add_done_callback(functools.partial(self._done, queue_id))

    def _cut_round_short(self, queue_id: str) -> None:
        """An operator's ``hold`` or ``delete`` of ``queue_id`` while a round delivers it:
        the round's destination jobs not yet in a session are withdrawn. They leave the
        token line and give their places back, their recipients stay pending, not
        attempted (no attempt counted, no delay notice, no bounce), and no job starts
        in the round from now on: the round ends without waiting for a session, and
        the action is carried out at once. A job already in a session goes on, and the
        action waits for it (its recipients may be sent meanwhile). The message also
        leaves every destination's line at once, and a place handed to it goes on to
        the next in line: its withdrawn round would never take a place up, and the
        next message would wait as long as the session still under way. Released, it
        joins each line again at the back."""
        withdrawn = self._withdrawals.get(queue_id)
        if withdrawn is not None and not withdrawn.done():
            withdrawn.set_result(None)
            self._withdraw(queue_id, self.places.awaited_by(queue_id))

    def _done(self, queue_id: str, task: asyncio.Task[None]) -> None:
        self._running.pop(queue_id, None)
        self._withdrawals.pop(queue_id, None)
        if queue_id not in self._due:  # delivered, held or gone
            self._copies_begun.pop(queue_id, None)
        self._forget_places_if_unscheduled(queue_id)
        self.actions.round_ended(queue_id)
        if self._wakeup is not None:
            self._wakeup.set()

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

    # -- one message ----------------------------------------------------------

    def next_wait(self, attempts: int) -> float:
        """Seconds until the next round after ``attempts`` rounds left mail pending."""
        return backoff(self.retry_after, attempts, cap=self.max_retry_after, rng=self.rng)

    async def _process(self, queue_id: str) -> None:
        entry: QueueEntry | None = None
        round_: _Round | None = None
        try:
            entry = await self._load(queue_id)
            round_ = await self._open_round(entry)
            if round_ is not None:
                await self._deliver_round(round_)
        except asyncio.CancelledError as exc:
            if not stray_cancellation():
                # A stop, wherever in the round it landed: a success report owed is on
                # disk (the next start makes it), and each recipient it left pending
                # with no line gets one.
                if round_ is not None:
                    self._log_cut_short(round_)
                raise
            # Some future other code cancelled (a library's, a hook's): a broken round
            # like any other, or the message would wait unscheduled until a restart.
            logger.exception(
                "%s: delivery failed (a stray cancellation); retrying later", queue_id
            )
            self._forget_places(queue_id)
            await self.reports.report_owed(queue_id)
            await self.settlement.record_local_error(queue_id, exc)
        except Exception as exc:
            if await self._gone(queue_id, exc):
                logger.warning("%s: gone from the queue directory; forgotten", queue_id)
                self._unsaved.pop(queue_id, None)
                return
            if entry is None:  # its queue file unread: no report or outcome to record
                self._forget_places(queue_id)
                self.settlement.retry_unopened(queue_id, exc)
                return
            logger.exception("%s: delivery failed; retrying later", queue_id)
            self._forget_places(queue_id)
            await self.reports.report_owed(queue_id)
            await self.settlement.record_local_error(queue_id, exc)

    async def _open_round(self, entry: QueueEntry) -> _Round | None:
        """The round of ``entry`` (just loaded) about to begin, before anything is
        delivered (a stop anywhere in it finds what it had done: :meth:`_log_cut_short`);
        None if the message is held. A catch-up round, begun for a place handed to the
        message before its next attempt is due, delivers only at the destinations it
        waited for, and counts no attempt."""
        queue_id = entry.id
        if entry.held:
            logger.info("%s: on hold; not delivered until released", entry.id)
            return None
        content = self.queue.content(queue_id)
        if not await self.disk.run(content.path.exists):
            raise FileNotFoundError(content.path)
        now = self.clock()
        catch_up = now < self._catch_up_until.pop(queue_id, float("-inf"))
        withdrawn = self._withdrawals.get(queue_id) or asyncio.get_running_loop().create_future()
        return _Round(entry, {}, {}, withdrawn, content, catch_up, early=now < entry.next_attempt)

    async def _deliver_round(self, round_: _Round) -> None:
        """One round: its local recipients, then each remote destination at once (the
        class docstring's scheduler)."""
        queue_id = round_.entry.id
        content = round_.content
        remote: dict[str, dict[str, dict[str, RemoteDelivery]]] = {}
        refused_sender = _sender_refusal(round_.entry.sender)
        round_.progress.plan(self._planned(round_, refused_sender))
        for recipient in round_.entry.pending:
            refused = _recipient_refusal(recipient.address)
            decision = self._route(recipient.address)
            if refused is None and refused_sender is None and isinstance(decision, RemoteDelivery):
                domains = remote.setdefault(destination(decision), {})
                domains.setdefault(decision.domain, {})[recipient.address] = decision
                continue
            if round_.catch_up:
                continue  # delivered in its full round
            if refused is not None:
                logger.warning(
                    "%s: queued recipient <%s> no longer parses: failed, %s; the postmaster "
                    "is told whatever NOTIFY asked",
                    queue_id,
                    loggable(recipient.address),
                    refused.detail,
                )
                outcome = refused
            elif isinstance(decision, RemoteDelivery):
                assert refused_sender is not None  # else it went to ``remote`` above
                outcome = refused_sender
            elif isinstance(decision, LocalDelivery):
                round_.progress.trying([recipient.address], "local")
                outcome = await self._deliver_local(round_.entry, decision, content)
            else:
                outcome = rejected_outcome(decision)
            await self._record(round_, {recipient.address: outcome})
        awaited = self.places.awaited_by(queue_id)
        if round_.catch_up:
            remote = {place: domains for place, domains in remote.items() if place in awaited}
        self._withdraw(queue_id, awaited - remote.keys())  # its recipients there are gone
        await self._deliver_destinations(round_, remote, content)
        await self.settlement.finish_round(
            round_.entry,
            content,
            round_.failed,
            round_.deferred,
            counts=_counts(round_),
            progress=round_.progress,
        )

    def _planned(self, round_: _Round, refused_sender: Outcome | None) -> list[str]:
        """The recipients ``round_`` is to deliver, before it comes to any: every pending
        one, or in a catch-up round those at the destinations the message waited for
        (its others wait for its full round)."""
        if not round_.catch_up:
            return [r.address for r in round_.entry.pending]
        awaited = self.places.awaited_by(round_.entry.id)
        planned = []
        for recipient in round_.entry.pending:
            decision = self._route(recipient.address)
            if (
                isinstance(decision, RemoteDelivery)
                and refused_sender is None
                and _recipient_refusal(recipient.address) is None
                and destination(decision) in awaited
            ):
                planned.append(recipient.address)
        return planned

    async def _record(self, round_: _Round, outcomes: Mapping[str, Outcome]) -> None:
        """Put ``outcomes`` in the round's entry before any await (a stop in the write
        finds them there), then write what was sent (:meth:`_save`)."""
        entry, sent = self.settlement.apply_outcomes(
            round_.entry, outcomes, round_.failed, round_.deferred
        )
        round_.entry = entry
        if sent:
            await self._save(round_.entry)

    async def _deliver_destinations(
        self,
        round_: _Round,
        remote: Mapping[str, Mapping[str, Mapping[str, RemoteDelivery]]],
        content: QueuedContent,
    ) -> None:
        """Run one job per destination of ``remote`` that has a place, at once, and wait
        for them all, a failed one never cutting its siblings short; a job at a
        destination whose place is handed over meanwhile starts then. Each outcome an
        exchanger gives is put in the entry (and :attr:`_unsaved`) before any await, and
        its write handed to a thread at once
        (:meth:`~smtpcore.server._delivery_envelope._EnvelopeKeeping._write`). Then what a
        job raised is raised, as the domains delivered one after another raised it."""
        queue_id = round_.entry.id
        jobs: set[asyncio.Task[None]] = set()
        started: set[str] = set()
        loop = asyncio.get_running_loop()

        async def record(outcomes: Mapping[str, Outcome]) -> None:
            await self._record(round_, outcomes)

        def start(place: str) -> bool:
            if round_.withdrawn.done() or place not in remote or place in started:
                return False
            expired = self.settlement.expired(round_.entry)
            admission = self.dead_hops.admit(place, exempt=expired)
            if admission.deferral is not None:  # suspended: no place taken, no session
                started.add(place)
                addresses = [a for d in remote[place].values() for a in d]
                waits = self._wait_suspended(round_, place, addresses, admission.deferral, record)
                jobs.add(loop.create_task(waits))
                return True
            joins = not self.places.in_line(place, queue_id)
            if not self.places.take(place, queue_id):
                self.dead_hops.job_over(place, admission)  # a probe turned away probes not
                if joins:
                    self._log_waiting(queue_id, place)
                return False
            started.add(place)
            round_.progress.begin(a for d in remote[place].values() for a in d)
            job = loop.create_task(
                self._destination_job(round_, place, remote[place], content, record)
            )

            def ended(_: object) -> None:
                self.dead_hops.job_over(place, admission)
                self._give_back(place)

            # A callback, not the job's finally: a job cancelled before its first step
            # runs no code of its own, and its place (or its probe) would never end.
            job.add_done_callback(ended)
            jobs.add(job)
            return True

        for place in remote:
            start(place)
        self._in_round[queue_id] = start
        try:
            await _all_finished(jobs)
        finally:
            del self._in_round[queue_id]

    def _log_cut_short(self, round_: _Round) -> None:
        """The round was cut short by a stop, wherever it was (a local copy, a session,
        the bounce step): each recipient it leaves pending on disk with no line of its
        own gets a deferred line (:func:`~smtpcore.server.cutshort.cut_short_outcomes`).
        The next start sends them; nothing is written. Its destination jobs, if any,
        are all done by then (:func:`_all_finished` waits for them)."""
        cut = cut_short_outcomes(round_.progress, round_.entry, round_.failed, round_.deferred)
        self.settlement.log_cut_short(round_.entry, cut)

    async def _wait_suspended(
        self,
        round_: _Round,
        place: str,
        addresses: list[str],
        deferral: Outcome,
        record: Recorder,
    ) -> None:
        """``round_``'s recipients ``addresses`` at the suspended destination ``place``
        wait, with ``deferral``, without a session (:attr:`dead_hops`). The message
        leaves that destination's line: it has nothing to wait for there until its next
        round, and a place handed to it goes on to the next in line (from this task,
        not from the round's ``start``, which a handover calls: no recursion down the
        line). Withdrawn (:meth:`_cut_round_short`) before this task's first step, its
        recipients stay untouched, as a session job's would."""
        self._withdraw(round_.entry.id, [place])
        if round_.withdrawn.done():
            self._log_withdrawn(round_, [place])
            return
        round_.untried.update(addresses)
        await record(dict.fromkeys(addresses, deferral))

    async def _destination_job(
        self,
        round_: _Round,
        place: str,
        domains: Mapping[str, Mapping[str, RemoteDelivery]],
        content: QueuedContent,
        record: Recorder,
    ) -> None:
        """One destination's part of a round, holding one session token: its domains
        one after another (several go through one smart host), so a job has one session
        open at a time. Its place there is given back when the job's task is done,
        whatever ended it (:meth:`_deliver_destinations`). Withdrawn
        (:meth:`_cut_round_short`) while it waits for its token, or as the token comes
        (the withdrawal is seen only once this job runs again), it ends, its recipients
        untouched; withdrawn during a domain's session, it opens no session for the
        domains after it, whose recipients stay pending, not attempted. Let through
        (:attr:`dead_hops`), it stops once the destination is suspended
        (by its own failures or others'): the domains not yet begun wait without a
        session, unless the message is past its lifetime by then (a session may outlast
        it): each is tried for real."""
        if not await self._sessions.take(round_.withdrawn):
            self._log_withdrawn(round_, domains)
            return
        try:
            with self.marks_writer.session(round_.entry.id) as begin:
                begin()  # the token is held
                names = list(domains)
                for number, (domain, deliveries) in enumerate(domains.items()):
                    if round_.withdrawn.done():
                        self._log_withdrawn(round_, names[number:])
                        return
                    expired = self.settlement.expired(round_.entry)
                    deferral = self.dead_hops.halted(place, exempt=expired)
                    if deferral is not None:
                        rest = [a for d in names[number:] for a in domains[d]]
                        round_.untried.update(rest)
                        await record(dict.fromkeys(rest, deferral))
                        return
                    await self._deliver_domain(round_, domain, deliveries, content, record)
        finally:
            self._sessions.give_back()

    def _log_waiting(self, queue_id: str, place: str) -> None:
        """``queue_id`` has just joined ``place``'s line: said once, as it joins, not at
        each round that finds it still there (every :data:`PLACE_RETRY` seconds), nor at
        the end of a round whose message a ``hold`` or ``delete`` took out of the line.
        It is said again only if the message joins again (released, or turned away
        after a place it was handed)."""
        logger.info(
            "%s: waiting for a place at %s (destination concurrency %d)",
            queue_id,
            loggable(place),
            self.destination_concurrency,
        )

    @staticmethod
    def _log_withdrawn(round_: _Round, domains: Iterable[str]) -> None:
        logger.info(
            "%s: delivery to %s withdrawn before its session (queue hold or delete)",
            round_.entry.id,
            loggable(", ".join(domains)),
        )

    async def _deliver_domain(
        self,
        round_: _Round,
        domain: str,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        record: Recorder,
    ) -> None:
        """One domain's recipients (:meth:`_deliver_remote`). Its trouble (a hostile DNS
        answer, a bug) is its recipients' alone: they wait with the error, the other
        domains' are sent, bounced or deferred on their own; a message gone is raised."""
        try:
            await self._deliver_remote(round_.entry, deliveries, content, record, round_.progress)
        except Exception as exc:
            if await self._gone(round_.entry.id, exc):
                raise
            logger.exception("%s: delivery to %s failed; retrying later", round_.entry.id, domain)
            done = {r.address for r in round_.entry.recipients if not r.pending}
            done |= round_.failed.keys() | round_.deferred.keys()
            await record({a: local_error(exc) for a in deliveries if a not in done})

    def _route(self, address: str) -> LocalDelivery | RemoteDelivery | Rejected:
        """Where the queued address ``address`` goes. The queue keeps it as text, parsed
        again each round: one that no longer parses (queued under an older rule, or by
        hand) is refused for good, 553 5.1.3 (RFC 3463 §3.2), quoted escaped, since the
        refusal's text is one printable line and the address may hold anything. A
        recipient's refusal is the server's own policy (:func:`_recipient_refusal`)."""
        try:
            mailbox = parse_mailbox(address)
        except AddressError:
            text = f"bad recipient address {printable(address)}"
            return Rejected(553, "5.1.3", text, RejectReason.NO_ROUTE)
        return self.router.route(mailbox, authenticated=True)

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

    # -- local ------------------------------------------------------------------

    async def _deliver_local(
        self, entry: QueueEntry, decision: LocalDelivery, content: QueuedContent
    ) -> Outcome:
        """A local recipient in the queue: one that asked ``NOTIFY=SUCCESS``, a report to
        a local sender, a copy its mailbox first refused, one whose domain became local.
        The copy is delivered once a mailbox (:meth:`LocalMailboxes.deliver_queued`):
        found in place, it was delivered before a crash that kept it from being
        recorded, or for another address of this entry that names the same mailbox, and
        is not written again (RFC 5321 §6.1). It is looked for only where an earlier
        write may have left it (``_copies_begun``)."""
        key = self.mailboxes.lookup(decision.mailbox)
        if key is None:
            return Outcome(
                RecipientStatus.FAILED, "5.1.1", "550 5.1.1 no such mailbox here", "local"
            )
        begun = self._copies_begun.get(entry.id)
        search = begun is None or key in begun
        if begun is not None:
            begun.add(key)  # before the write: a round broken in it must search next time
        try:
            copy = self.mailboxes.deliver_queued
            with self.marks_writer.local_copy(entry.id, copy) as (begin, marked_copy):
                path, written = await self.disk.run_announced(
                    begin,
                    marked_copy,
                    key,
                    entry.sender,
                    content.path,
                    entry.id,
                    entry.created,
                    search=search,
                )
        except OSError as exc:  # the mailbox's trouble, not the other recipients'
            if await self._gone(entry.id, exc):
                raise
            # The error, with its paths, is the operator's; the sender's report (the
            # outcome's detail) says what happened, not where the server keeps mail.
            logger.warning("%s: cannot deliver into the mailbox of %s: %s", entry.id, key, exc)
            detail = f"cannot deliver into the mailbox ({type(exc).__name__})"
            return Outcome(RecipientStatus.PENDING, "4.2.0", detail, "local")
        if written:
            self.mailboxes.delivered(key, path, entry.id)
        else:
            logger.info("%s: the copy for %s is in its mailbox already", entry.id, key)
        # The sender hears that it was delivered; only the log says into which file.
        return Outcome(
            RecipientStatus.SENT, "2.0.0", DELIVERED, "local", logged=delivered_note(path)
        )

    # -- remote -----------------------------------------------------------------

    async def _deliver_remote(
        self,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        record: Recorder,
        progress: RoundProgress | None = None,
    ) -> None:
        """Deliver one domain's recipients, each exchanger's sent and bounced ones given
        to ``record`` as soon as it answers (before its QUIT, before the next exchanger
        is tried: the module docstring's "recorded so at once"), the deferred ones once
        no exchanger is left. Where they are goes in ``progress``."""
        await record(await self.outbound.outcomes(entry, deliveries, content, record, progress))
