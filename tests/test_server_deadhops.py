"""Dead next hops (:mod:`smtpcore.server.deadhops`): after a run of failed connections a
destination's mail waits without connecting until one probe finds the hop back; a live
destination beside it is untouched, and a message's expiry comes as before."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from smtpcore._driver import BaseSMTPClient, Timeouts
from smtpcore.routing import Router, StaticResolver
from smtpcore.server.config import ServerConfig
from smtpcore.server.deadhops import DEAD_AFTER, Admission, DeadHops
from smtpcore.server.delivery import DeliveryWorker
from smtpcore.server.exchanger import Outcome, default_client
from smtpcore.server.internal import InternalAddresses
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.maildir import Maildir
from smtpcore.server.queue import Queue, QueueEntry, RecipientStatus
from smtpcore.server.queuectl import QueueCommand

LOOPBACK = "127.0.0.1"
MESSAGE = b"From: john@abc.example\r\nSubject: hello\r\n\r\nbody\r\n"
DEAD, LIVE = "dead.example", "live.example"
# Each domain's exchanger has an address of its own, which the client factory sends to
# its own listener on loopback.
ZONE = (
    f"{DEAD} MX 10 mx.{DEAD}\nmx.{DEAD} A 127.0.0.2\n"
    f"{LIVE} MX 10 mx.{LIVE}\nmx.{LIVE} A 127.0.0.3\n"
)
RETRY = 100.0
ERROR = Outcome(RecipientStatus.PENDING, "4.4.1", "connect to mx[127.0.0.2]:25: refused")


# -- the bookkeeping alone ------------------------------------------------------------


def _hops(now: list[float], dead_after: int = 3, max_tracked: int = 100) -> DeadHops:
    return DeadHops(
        lambda: now[0],
        lambda: RETRY,
        lambda: 3 * RETRY,
        dead_after=dead_after,
        max_tracked=max_tracked,
    )


def test_a_run_of_failures_suspends_and_one_probe_at_a_time_goes_after_it() -> None:
    now = [0.0]
    hops = _hops(now)
    for _ in range(2):
        hops.failed("a.example", ERROR)
        assert hops.admit("a.example").deferral is None
    hops.failed("a.example", ERROR)
    deferral = hops.admit("a.example").deferral
    assert deferral is not None and deferral.status is RecipientStatus.PENDING
    assert deferral.detail == f"delivery temporarily suspended: {ERROR.detail}"
    assert deferral.dsn == "4.4.1" and not deferral.from_remote
    assert hops.suspended("b.example") is None  # another destination is not touched
    now[0] += RETRY
    probe = hops.admit("a.example")
    assert probe.probe and probe.deferral is None
    assert hops.admit("a.example").deferral is not None  # while the probe is out
    hops.failed("a.example", ERROR)  # the probe failed: suspended again
    hops.probe_over("a.example")
    assert hops.admit("a.example").deferral is not None
    now[0] += RETRY
    assert hops.admit("a.example").probe
    hops.reached("a.example")  # the probe got through
    hops.probe_over("a.example")
    assert hops.admit("a.example") == hops.admit("b.example")  # nothing known of either
    assert len(hops) == 0


def test_a_job_admitted_sees_a_suspension_its_probe_renewed() -> None:
    now = [0.0]
    hops = _hops(now, dead_after=1)
    hops.failed("a.example", ERROR)
    assert hops.in_force("a.example") is not None
    now[0] += RETRY
    assert hops.admit("a.example").probe
    assert hops.in_force("a.example") is None  # the probe goes on
    hops.failed("a.example", ERROR)
    assert hops.in_force("a.example") == hops.suspended("a.example")  # it stops


def test_an_exempt_job_is_let_through_and_never_halted_and_no_probe() -> None:
    """A message past its lifetime is tried for real; a probe turned away by a full
    destination lets the next job probe."""
    now = [0.0]
    hops = _hops(now, dead_after=1)
    hops.failed("a.example", ERROR)
    exempt = hops.admit("a.example", exempt=True)
    assert exempt.deferral is None and not exempt.probe
    assert hops.halted("a.example", exempt=True) is None
    assert hops.halted("a.example", exempt=False) is not None
    now[0] += RETRY
    probe = hops.admit("a.example")
    hops.job_over("a.example", probe)
    assert hops.admit("a.example").probe


def test_an_answer_ends_the_run_of_failures() -> None:
    now = [0.0]
    hops = _hops(now)
    for _ in range(5):
        hops.failed("a.example", ERROR)
        hops.failed("a.example", ERROR)
        hops.reached("a.example")
    assert hops.suspended("a.example") is None


def test_a_probe_that_connects_nowhere_lets_the_next_job_probe() -> None:
    now = [0.0]
    hops = _hops(now, dead_after=1)
    hops.failed("a.example", ERROR)
    now[0] += RETRY
    assert hops.admit("a.example").probe
    hops.probe_over("a.example")  # its DNS failed, say: no verdict
    assert hops.admit("a.example").probe


def test_the_entries_expire_and_are_capped() -> None:
    now = [0.0]
    hops = _hops(now, dead_after=1, max_tracked=10)
    for number in range(25):
        hops.failed(f"d{number}.example", ERROR)
    assert len(hops) == 10
    assert hops.suspended("d24.example") is not None  # the newest are kept
    assert hops.suspended("d0.example") is None
    now[0] += 4 * RETRY  # quiet for its memory past the end of each suspension
    assert hops.suspended("d24.example") is None
    hops.failed("new.example", ERROR)
    assert len(hops) <= 10


def test_a_failure_during_a_suspension_does_not_extend_it() -> None:
    """A session begun before the suspension that fails in it changes nothing: the
    probe still goes when the suspension ends."""
    now = [0.0]
    hops = _hops(now, dead_after=1)
    hops.failed("a.example", ERROR)
    now[0] += RETRY / 2
    hops.failed("a.example", ERROR)
    now[0] += RETRY / 2
    assert hops.admit("a.example").probe


# -- the worker against a dead hop ------------------------------------------------------


@dataclass
class Hop:
    """A next hop on loopback that counts its connections: ``dead``, it answers each
    with ``421`` and closes (a hop down, as the audit's); else it takes every message.
    ``on_connect`` runs as each connection comes, before the hop answers."""

    dead: bool = True
    connections: int = 0
    delivered: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None
    on_connect: Callable[[], None] | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.on_connect is not None:
            self.on_connect()
        with contextlib.suppress(ConnectionError):
            try:
                if self.dead:
                    writer.write(b"421 4.3.2 mx down for now\r\n")
                    await writer.drain()
                    return
                await self._smtp(reader, writer)
            finally:
                writer.close()

    async def _smtp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hop ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 go on\r\n")
                content = b""
                while (data := await reader.readline()) not in (b".\r\n", b""):
                    content += data
                self.delivered.append(content)
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()


@dataclass
class Setup:
    queue: Queue
    worker: DeliveryWorker
    mailboxes: LocalMailboxes
    now: list[float]

    def entries(self) -> list[QueueEntry]:
        """The queued messages; one the worker removes as they are read is left out."""
        found = []
        for path in (self.queue.directory / "envelopes").iterdir():
            with contextlib.suppress(FileNotFoundError):
                found.append(self.queue.load(path.name))
        return found

    def bounces(self) -> list[bytes]:
        box = Maildir(self.mailboxes.config.mailbox_path("john@abc.example"))
        return [path.read_bytes() for path in box.messages()]


def _setup(tmp_path: Path, ports: dict[str, int], *, max_queue_age: float = 5 * 86400.0) -> Setup:
    """A worker whose exchangers' addresses go to ``ports`` on loopback, one session at
    a time (so the connections a round makes do not depend on how fast each fails)."""
    now = [1_000_000.0]
    config = ServerConfig(
        domains=("abc.example",),
        users={"john@abc.example": "pw"},
        data_dir=tmp_path,
        hostname="mx.abc.example",
    )
    queue = Queue(config.queue_dir, clock=lambda: now[0])
    queue.open()
    mailboxes = LocalMailboxes(config)
    mailboxes.create_all()

    def client(
        host: str,
        port: int,
        *,
        hostname: str,
        starttls: bool | None,
        ssl_context: ssl.SSLContext,
        server_hostname: str,
        timeouts: Timeouts,
    ) -> BaseSMTPClient:
        return default_client(
            LOOPBACK,
            ports[host],
            hostname=hostname,
            starttls=starttls,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            timeouts=timeouts,
        )

    worker = DeliveryWorker(
        queue,
        router=Router(["abc.example"], hostnames=["mx.abc.example"]),
        resolver=StaticResolver.from_zone_text(ZONE),
        mailboxes=mailboxes,
        hostname="mx.abc.example",
        internal=InternalAddresses(allowed=True),
        client_factory=client,
        retry_after=RETRY,
        max_retry_after=RETRY,  # every wait RETRY: the rounds come as the test says
        max_queue_age=max_queue_age,
        concurrency=1,
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )
    return Setup(queue, worker, mailboxes, now)


async def _rounds(
    setup: Setup, done: Callable[[], bool], entries: list[QueueEntry] | None = None
) -> None:
    """Run the worker until ``done()`` and no round is under way, ``entries`` (by
    default every queued one) scheduled afresh: those due by the clock run."""
    for entry in setup.entries() if entries is None else entries:
        setup.worker.schedule(entry)
    task = asyncio.get_running_loop().create_task(setup.worker.run())

    async def settled() -> None:
        while not done() or setup.worker._running:
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(settled(), 20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _all_tried(setup: Setup, attempts: int) -> Callable[[], bool]:
    return lambda: all(e.attempts >= attempts for e in setup.entries())


def _replies(setup: Setup, domain: str) -> list[str]:
    return [
        r.reply or ""
        for e in setup.entries()
        for r in e.recipients
        if r.address.endswith("@" + domain)
    ]


def test_fifty_messages_to_a_dead_hop_make_a_few_connections_then_one_probe(
    tmp_path: Path,
) -> None:
    """Before: each of the 50 messages opened its own connection at every retry round."""

    async def main() -> None:
        hop = Hop()
        await hop.start()
        setup = _setup(tmp_path, {"127.0.0.2": hop.port})
        dead_after = DEAD_AFTER
        try:
            for number in range(50):
                setup.queue.add(MESSAGE, "john@abc.example", [f"u{number}@{DEAD}"])
            await _rounds(setup, _all_tried(setup, 1))
            assert hop.connections == dead_after
            replies = _replies(setup, DEAD)
            suspended = [r for r in replies if r.startswith("delivery temporarily suspended: ")]
            assert len(suspended) == 50 - dead_after
            assert all("421 4.3.2 mx down for now" in r for r in replies)  # the real error

            # Past the suspension, every message due again: one probe, which fails.
            setup.now[0] += 1.5 * RETRY
            await _rounds(setup, _all_tried(setup, 2))
            assert hop.connections == dead_after + 1
            assert setup.bounces() == []  # nothing bounced before its time

            # The hop is back: the probe gets through and lifts the suspension; the
            # messages deferred while it was out go at their next round.
            hop.dead = False
            setup.now[0] += 1.5 * RETRY
            await _rounds(setup, _all_tried(setup, 3))
            assert len(hop.delivered) >= 1
            setup.now[0] += 1.5 * RETRY
            await _rounds(setup, lambda: not setup.entries())
            assert len(hop.delivered) == 50
        finally:
            await setup.worker.aclose(1.0)
            await hop.close()

    asyncio.run(main())


def test_a_dead_destination_leaves_a_live_one_beside_it_alone(tmp_path: Path) -> None:
    async def main() -> None:
        dead, live = Hop(), Hop(dead=False)
        await dead.start()
        await live.start()
        setup = _setup(tmp_path, {"127.0.0.2": dead.port, "127.0.0.3": live.port})
        try:
            for number in range(20):
                recipients = [f"u{number}@{DEAD}", f"u{number}@{LIVE}"]
                setup.queue.add(MESSAGE, "john@abc.example", recipients)
            await _rounds(setup, _all_tried(setup, 1))
            assert len(live.delivered) == 20  # over fewer connections, kept between them
            assert 1 <= live.connections <= 20
            assert dead.connections == DEAD_AFTER
            live_ones = [r for e in setup.entries() for r in e.recipients if LIVE in r.address]
            assert [r.status for r in live_ones] == [RecipientStatus.SENT] * 20
            assert len([r for r in _replies(setup, DEAD) if "suspended" in r]) == 15
        finally:
            await setup.worker.aclose(1.0)
            await dead.close()
            await live.close()

    asyncio.run(main())


def test_a_refusal_of_the_mail_is_no_dead_hop(tmp_path: Path) -> None:
    """A hop that answers, even to refuse a message for now, is alive: every message is
    tried."""

    async def main() -> None:
        hop = Hop(dead=False)
        await hop.start()
        setup = _setup(tmp_path, {"127.0.0.2": hop.port})
        original = hop._smtp

        async def refusing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 hop ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                writer.write(b"451 4.3.0 busy\r\n" if verb == b"MAIL" else b"250 ok\r\n")
                await writer.drain()
                if verb == b"QUIT":
                    return

        hop._smtp = refusing  # type: ignore[method-assign]  # the hop refuses MAIL now
        try:
            for number in range(10):
                setup.queue.add(MESSAGE, "john@abc.example", [f"u{number}@{DEAD}"])
            await _rounds(setup, _all_tried(setup, 1))
            assert hop.connections == 10
            assert not any("suspended" in r for r in _replies(setup, DEAD))
        finally:
            hop._smtp = original  # type: ignore[method-assign]
            await setup.worker.aclose(1.0)
            await hop.close()

    asyncio.run(main())


@pytest.mark.parametrize("expired", [False, True])
def test_a_suspension_changes_no_expiry(tmp_path: Path, expired: bool) -> None:
    """A message past its lifetime at a suspended destination gets its real last
    attempt, and bounces with the hop's own error, as without a suspension; one within
    its lifetime waits, not bounced, its last error saying why."""

    async def main() -> None:
        hop = Hop()
        await hop.start()
        setup = _setup(tmp_path, {"127.0.0.2": hop.port}, max_queue_age=RETRY / 2)
        dead_after = DEAD_AFTER
        try:
            late = setup.queue.add(MESSAGE, "john@abc.example", [f"late@{DEAD}"])
            first = [
                setup.queue.add(MESSAGE, "john@abc.example", [f"u{number}@{DEAD}"])
                for number in range(dead_after)
            ]
            ids = [e.id for e in first]
            await _rounds(setup, lambda: all(setup.queue.load(q).attempts for q in ids), first)
            assert hop.connections == dead_after
            if expired:  # past the late message's lifetime, within the suspension
                setup.now[0] += RETRY * 3 / 4
            assert setup.worker.dead_hops.suspended(DEAD) is not None
            envelope = setup.queue.directory / "envelopes" / late.id
            await _rounds(
                setup,
                lambda: not envelope.exists() or setup.queue.load(late.id).attempts >= 1,
                [late],
            )
            if not expired:
                assert hop.connections == dead_after
                (waiting,) = setup.queue.load(late.id).recipients
                assert waiting.pending
                assert (waiting.reply or "").startswith("delivery temporarily suspended: ")
                assert setup.bounces() == []
                return
            assert hop.connections == dead_after + 1  # a real attempt, then the bounce
            assert not envelope.exists()
            (bounce,) = [b" ".join(raw.split()) for raw in setup.bounces()]
            assert b"late@" in bounce and b"421 4.3.2 mx down for now" in bounce
            assert b"suspended" not in bounce
        finally:
            await setup.worker.aclose(1.0)
            await hop.close()

    asyncio.run(main())


def _rescheduled(setup: Setup) -> Callable[[], bool]:
    """Every queued message has had its round since it was made due now: each is due
    later again."""
    return lambda: all(setup.worker._due.get(e.id, 0.0) > setup.now[0] for e in setup.entries())


def test_queue_flush_forgets_the_suspension_and_tries_every_message(tmp_path: Path) -> None:
    """Before: a flush while the destination was suspended tried nothing, each message
    deferred again without a connection, its backoff moved on, though the hop was back
    (Postfix's ``postqueue -f`` clears its dead destinations first)."""

    async def main() -> None:
        hop = Hop()
        await hop.start()
        setup = _setup(tmp_path, {"127.0.0.2": hop.port})
        try:
            for number in range(10):
                setup.queue.add(MESSAGE, "john@abc.example", [f"u{number}@{DEAD}"])
            await _rounds(setup, _all_tried(setup, 1))
            assert setup.worker.dead_hops.suspended(DEAD) is not None
            hop.dead = False
            setup.now[0] += 1.0
            await setup.worker.apply(QueueCommand("flush"))
            await _rounds(setup, _all_tried(setup, 2), [])
            assert len(hop.delivered) == 10
            assert setup.entries() == []
        finally:
            await setup.worker.aclose(1.0)
            await hop.close()

    asyncio.run(main())


def test_a_flush_deferred_by_a_renewed_suspension_keeps_its_backoff(tmp_path: Path) -> None:
    """The flushed messages find the hop still dead: the first few are tried and renew
    the suspension; the others wait without a session, and keep the attempts and the
    next attempt they had. Before: each was counted as tried, its backoff moved on."""

    async def main() -> None:
        hop = Hop()
        await hop.start()
        setup = _setup(tmp_path, {"127.0.0.2": hop.port})
        try:
            for number in range(10):
                setup.queue.add(MESSAGE, "john@abc.example", [f"u{number}@{DEAD}"])
            await _rounds(setup, _all_tried(setup, 1))
            before = {e.id: (e.attempts, e.next_attempt) for e in setup.entries()}
            setup.now[0] += 1.0
            setup.worker.active_limit = 1  # one round at a time: the last five begin suspended
            await setup.worker.apply(QueueCommand("flush"))
            await _rounds(setup, _rescheduled(setup), [])
            assert hop.connections == 2 * DEAD_AFTER  # the flush's own run of failures
            after = {e.id: (e.attempts, e.next_attempt) for e in setup.entries()}
            tried = [q for q in after if after[q][0] == 2]
            assert len(tried) == DEAD_AFTER
            assert all(after[q] == (2, setup.now[0] + RETRY) for q in tried)
            untried = after.keys() - set(tried)
            assert {q: after[q] for q in untried} == {q: before[q] for q in untried}
            assert setup.worker.dead_hops.suspended(DEAD) is not None
        finally:
            await setup.worker.aclose(1.0)
            await hop.close()

    asyncio.run(main())


def test_through_a_smart_host_a_failed_probe_opens_no_more_sessions(tmp_path: Path) -> None:
    """With a smart host every domain of a message goes in one job, one session after
    another. Before: once its own failures had begun a suspension, or the probe's
    renewed it, the job went on to connect once per remaining domain (8 connections
    a round, not 5 then 1)."""

    async def main() -> None:
        hop = Hop()
        await hop.start()
        setup = _setup(tmp_path, {"127.0.0.9": hop.port})
        setup.worker.router = Router(
            ["abc.example"], hostnames=["mx.abc.example"], smart_host=("127.0.0.9", 25)
        )
        place = "[127.0.0.9]:25"
        try:
            domains = [f"d{number}.example" for number in range(8)]
            setup.queue.add(MESSAGE, "john@abc.example", [f"u@{d}" for d in domains])
            await _rounds(setup, _all_tried(setup, 1))
            assert hop.connections == DEAD_AFTER  # the rest waited, suspended
            assert setup.worker.dead_hops.suspended(place) is not None
            setup.now[0] += 1.5 * RETRY
            await _rounds(setup, _all_tried(setup, 2))
            assert hop.connections == DEAD_AFTER + 1  # the probe's one session
            (entry,) = setup.entries()
            replies = [r.reply or "" for r in entry.recipients]
            assert len([r for r in replies if r.startswith("delivery temporarily")]) == 7
        finally:
            await setup.worker.aclose(1.0)
            await hop.close()

    asyncio.run(main())


def test_through_a_smart_host_a_message_expiring_mid_job_is_tried_at_each_domain(
    tmp_path: Path,
) -> None:
    """A job begun within the message's lifetime whose first session outlasts it and
    suspends the smart host: each domain after it is tried for real, as the message is
    past ``--max-queue-age``, and bounces with the hop's own error. Before: the job was
    judged once, at its start, and the domains not yet begun bounced untried,
    'delivery temporarily suspended'."""

    async def main() -> None:
        hop = Hop()
        await hop.start()
        setup = _setup(tmp_path, {"127.0.0.9": hop.port}, max_queue_age=RETRY / 2)
        setup.worker.router = Router(
            ["abc.example"], hostnames=["mx.abc.example"], smart_host=("127.0.0.9", 25)
        )
        setup.worker.dead_hops.dead_after = 1  # as if other messages had failed there

        def session_outlasts_the_lifetime() -> None:
            setup.now[0] += RETRY

        hop.on_connect = session_outlasts_the_lifetime
        try:
            domains = [f"d{number}.example" for number in range(3)]
            entry = setup.queue.add(MESSAGE, "john@abc.example", [f"u@{d}" for d in domains])
            envelope = setup.queue.directory / "envelopes" / entry.id
            await _rounds(setup, lambda: not envelope.exists())
            assert hop.connections == 3  # one real attempt per domain
            (bounce,) = [b" ".join(raw.split()) for raw in setup.bounces()]
            assert bounce.count(b"421 4.3.2 mx down for now") >= 3
            assert b"suspended" not in bounce
        finally:
            await setup.worker.aclose(1.0)
            await hop.close()

    asyncio.run(main())


def test_a_round_cut_short_before_its_suspended_wait_begins_records_nothing(
    tmp_path: Path,
) -> None:
    """A ``queue hold`` lands after the round's ``start`` made the task that defers its
    recipients at a suspended destination, before that task's first step (asyncio runs
    callbacks in the order they were scheduled: the cut is scheduled first). Its
    recipients stay untouched, no attempt counted, as a withdrawn session job's. Before:
    the task recorded the deferral all the same, and counted an attempt."""

    async def main() -> None:
        hop = Hop()
        await hop.start()
        setup = _setup(tmp_path, {"127.0.0.2": hop.port})
        worker = setup.worker
        worker.dead_hops.dead_after = 1
        worker.dead_hops.failed(DEAD, ERROR)
        admit = worker.dead_hops.admit
        entry = setup.queue.add(MESSAGE, "john@abc.example", [f"u@{DEAD}"])
        loop = asyncio.get_running_loop()

        def admit_then_cut(place: str, *, exempt: bool = False) -> Admission:
            admission = admit(place, exempt=exempt)
            loop.call_soon(worker._cut_round_short, entry.id)
            return admission

        worker.dead_hops.admit = admit_then_cut  # type: ignore[method-assign]  # the hold's moment
        try:
            await _rounds(setup, lambda: True)
            assert hop.connections == 0
            after = setup.queue.load(entry.id)
            assert after.attempts == 0
            (recipient,) = after.recipients
            assert recipient.pending and recipient.reply is None
        finally:
            await worker.aclose(1.0)
            await hop.close()

    asyncio.run(main())


def test_a_probe_turned_away_by_a_full_destination_lets_the_next_job_probe(
    tmp_path: Path,
) -> None:
    """The suspension has run out and the first job to ask is the probe, but every
    place at the destination is taken: it waits in line, and is no probe any more. Once
    the place comes back, the message goes. The round asks ``admit()`` before it takes
    a place: without ``job_over()`` for the job turned away, the destination would stay
    'probing' with no probe out, and its mail wait, suspended, for ever."""

    async def main() -> None:
        hop = Hop()
        await hop.start()
        setup = _setup(tmp_path, {"127.0.0.2": hop.port})
        worker = setup.worker
        try:
            worker.dead_hops.dead_after = 1
            worker.dead_hops.failed(DEAD, ERROR)
            setup.now[0] += 1.5 * RETRY
            hop.dead = False
            assert worker.places.take(DEAD, "someone")  # the only place, held
            entry = setup.queue.add(MESSAGE, "john@abc.example", [f"a@{DEAD}"])
            await _rounds(setup, lambda: True)
            assert worker.places.in_line(DEAD, entry.id)
            assert worker.dead_hops.suspended(DEAD) is None  # no probe counted out
            worker._give_back(DEAD)  # the session holding it ends
            await _rounds(setup, lambda: not setup.entries(), [])
            assert len(hop.delivered) == 1
        finally:
            await worker.aclose(1.0)
            await hop.close()

    asyncio.run(main())
