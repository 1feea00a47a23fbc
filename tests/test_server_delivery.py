"""The delivery worker against scripted exchangers: retries, bounces, expiry, MX order."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import email
import email.policy
import errno
import logging
import math
import os
import pickle
import quopri
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest

from peers import free_port
from smtpcore.routing import MXRecord, Resolver, Router, StaticResolver
from smtpcore.server.config import ServerConfig
from smtpcore.server.delivery import MAX_BACKOFF, DeliveryWorker, backoff
from smtpcore.server.internal import InternalAddresses
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.maildir import Maildir
from smtpcore.server.queue import (
    Queue,
    QueuedContent,
    QueuedRecipient,
    QueueEntry,
    RecipientStatus,
)
from smtpcore.server.queuectl import QueueCommand

LOOPBACK = "127.0.0.1"
MESSAGE = b"From: john@abc.example\r\nSubject: hello\r\n\r\n.leading dot\r\nbody\r\n"


@dataclass
class Transaction:
    sender: str
    recipients: list[str]
    content: bytes
    reply: bytes
    mail_line: bytes = b""
    rcpt_lines: list[bytes] = field(default_factory=list)


@dataclass
class ScriptedSMTP:
    """A tiny SMTP server on loopback that answers from a script, in its own threads.

    ``data_replies`` answer the end of each message in turn (the last one
    repeats); ``rcpt_replies`` answer RCPT for the recipients named.
    Transactions that reached the end of their content are recorded.
    """

    data_replies: list[bytes]
    rcpt_replies: dict[str, bytes] = field(default_factory=dict)
    dsn: bool = False
    """Offer DSN in the EHLO reply."""
    mail_reply: bytes = b"250 2.1.0 ok"
    """The answer to every MAIL."""
    limits: bytes = b""
    """The LIMITS to offer in the EHLO reply (RFC 9422), such as ``RCPTMAX=1``."""
    offers: tuple[bytes, ...] = (b"8BITMIME",)
    """The other extensions the EHLO reply names (none: a 7-bit-only server)."""
    max_recipients: int | tuple[int, ...] | None = None
    """Recipients taken in one transaction; RCPTs past them get ``452 4.5.3`` (RFC 5321
    §4.5.3.1.10), without LIMITS saying so. A tuple gives each transaction of a
    connection its own, in turn (the last repeats)."""
    at_mail: Callable[[int], None] | None = None
    """Called with the number of each MAIL on its connection (1 for the first),
    before it is answered: to look at the client's side while it waits."""
    hang_up_at_data: int | None = None
    """The transaction of a connection (1 for its first) whose DATA is answered by
    closing the connection."""
    transactions: list[Transaction] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self.listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 scripted ESMTP\r\n")
            sender, recipients = "", list[str]()
            mail_line, rcpt_lines = b"", list[bytes]()
            mails = 0
            for line in lines:
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    words = [b"scripted", *([b"DSN"] if self.dsn else [])]
                    words += [b"LIMITS " + self.limits] if self.limits else []
                    words += self.offers
                    conn.sendall(
                        b"".join(b"250-" + w + b"\r\n" for w in words[:-1])
                        + b"250 "
                        + words[-1]
                        + b"\r\n"
                    )
                elif verb == b"MAIL":
                    sender = line.decode().split(":", 1)[1].strip().split()[0].strip("<>")
                    recipients, mail_line, rcpt_lines = [], line, []
                    mails += 1
                    if self.at_mail is not None:
                        self.at_mail(mails)
                    conn.sendall(self.mail_reply + b"\r\n")
                elif verb == b"RCPT":
                    rcpt_lines.append(line)
                    address = line.decode().split(":", 1)[1].strip().split()[0].strip("<>")
                    reply = self.rcpt_replies.get(address, b"250 2.1.5 ok")
                    if len(recipients) >= self._recipients_taken(mails):
                        reply = b"452 4.5.3 too many recipients"
                    if reply.startswith(b"2"):
                        recipients.append(address)
                    conn.sendall(reply + b"\r\n")
                elif verb == b"DATA":
                    if mails == self.hang_up_at_data:
                        return
                    conn.sendall(b"354 go on\r\n")
                    content = b""
                    for data_line in lines:
                        if data_line == b".\r\n":
                            break
                        content += data_line[1:] if data_line.startswith(b".") else data_line
                    with self._lock:
                        index = min(len(self.transactions), len(self.data_replies) - 1)
                        reply = self.data_replies[index]
                        self.transactions.append(
                            Transaction(sender, recipients, content, reply, mail_line, rcpt_lines)
                        )
                    conn.sendall(reply + b"\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    def _recipients_taken(self, mails: int) -> float:
        """The ``max_recipients`` of a connection's transaction ``mails`` (1 for its first)."""
        taken = self.max_recipients
        if taken is None:
            return math.inf
        if isinstance(taken, int):
            return taken
        return taken[min(mails, len(taken)) - 1]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedSMTP]]:
    servers: list[ScriptedSMTP] = []

    def start(
        data_replies: list[bytes],
        rcpt_replies: dict[str, bytes] | None = None,
        dsn: bool = False,
        **options: Any,
    ) -> ScriptedSMTP:
        server = ScriptedSMTP(data_replies, rcpt_replies or {}, dsn, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@dataclass
class Setup:
    queue: Queue
    worker: DeliveryWorker
    mailboxes: LocalMailboxes

    def raw_bounces(self) -> list[bytes]:
        box = Maildir(self.mailboxes.config.mailbox_path("john@abc.example"))
        return [path.read_bytes() for path in box.messages()]

    def bounces(self) -> list[email.message.Message]:
        return [
            email.message_from_bytes(raw, policy=email.policy.default)
            for raw in self.raw_bounces()
        ]


def _setup(
    tmp_path: Path,
    zone: str,
    port: int,
    *,
    retry_after: float = 0.1,
    max_queue_age: float = 60.0,
    clock: Callable[[], float] | None = None,
    monotonic: Callable[[], float] | None = None,
) -> Setup:
    """A worker on ``tmp_path``; ``clock`` fakes the wall clock, and the monotonic one
    too unless ``monotonic`` is given (a test that moves time moves both)."""
    config = ServerConfig(
        domains=("abc.example",),
        users={"john@abc.example": "pw"},
        data_dir=tmp_path,
        hostname="mx.abc.example",
    )
    queue = Queue(config.queue_dir) if clock is None else Queue(config.queue_dir, clock=clock)
    queue.open()
    mailboxes = LocalMailboxes(config)
    mailboxes.create_all()
    options = {} if clock is None else {"clock": clock, "monotonic": monotonic or clock}
    worker = DeliveryWorker(
        queue,
        router=Router(["abc.example"], hostnames=["mx.abc.example"], port=port),
        resolver=StaticResolver.from_zone_text(zone),
        mailboxes=mailboxes,
        hostname="mx.abc.example",
        internal=InternalAddresses(allowed=True),  # the scripted exchangers are on loopback
        retry_after=retry_after,
        max_queue_age=max_queue_age,
        **options,  # type: ignore[arg-type]  # only the clocks
    )
    return Setup(queue, worker, mailboxes)


ZONE = "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"


async def _until(done: Callable[[], bool]) -> None:
    while not done():
        await asyncio.sleep(0.02)


async def _stop_runs(worker: DeliveryWorker, runs: list[asyncio.Task[None]]) -> None:
    """End the worker's ``run`` tasks a test started, then the worker itself."""
    for task in runs:
        task.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
    await worker.aclose(1.0)


async def _run_until(setup: Setup, done: Callable[[], bool], timeout: float = 10.0) -> None:
    task = asyncio.get_running_loop().create_task(setup.worker.run())
    try:
        await asyncio.wait_for(_until(done), timeout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await setup.worker.aclose(1.0)


async def _deliver(worker: DeliveryWorker, queue_id: str) -> None:
    """One round of ``queue_id``, as the worker's task runs it, its errors raised."""
    round_ = await worker._open_round(await worker._load(queue_id))
    if round_ is not None:
        await worker._deliver_round(round_)


def _enqueue(setup: Setup, sender: str, recipients: list[str]) -> QueueEntry:
    entry = setup.queue.add(MESSAGE, sender, recipients)
    setup.worker.schedule(entry)
    return entry


def _enqueue_dsn(
    setup: Setup,
    recipients: list[QueuedRecipient],
    params: tuple[tuple[str, str | None], ...] = (),
    *,
    new: bool = False,
) -> QueueEntry:
    """Queue MESSAGE from john@abc.example as the SMTP listener does, DSN parameters kept
    (``new``: scheduled as the listener schedules it, as queued by this process)."""
    spool = setup.queue.spool()
    spool.write(MESSAGE)
    entry = setup.queue.prepare(spool, "john@abc.example", recipients, params=params).commit()
    setup.worker.schedule(entry, new=new)
    return entry


def _queue_empty(setup: Setup) -> bool:
    return not any((setup.queue.directory / "envelopes").iterdir())


async def _attempts_by_round(
    setup: Setup, entry: QueueEntry, now: list[float], rounds: int
) -> list[int]:
    """Run ``rounds`` rounds of ``entry``, each at the time the last one set for the
    next (the clock ``now[0]``, which each must move on): its attempts after each."""
    counted = []
    for _ in range(rounds):
        await setup.worker._process(entry.id)
        entry = setup.queue.load(entry.id)
        assert entry.next_attempt > now[0]
        counted.append(entry.attempts)
        now[0] = entry.next_attempt
    return counted


def _deliver_all(setup: Setup, sender: str, recipients: list[str]) -> None:
    """Queue MESSAGE from ``sender`` and run the worker until the queue is empty."""

    async def main() -> None:
        _enqueue(setup, sender, recipients)
        await _run_until(setup, lambda: _queue_empty(setup))

    asyncio.run(main())


@pytest.mark.parametrize(
    ("attempts", "wait"),
    [(0, 300.0), (1, 300.0), (2, 600.0), (3, 1200.0), (4, 2400.0), (5, MAX_BACKOFF), (20, 4000.0)],
)
def test_backoff_doubles_up_to_a_ceiling(attempts: int, wait: float) -> None:
    assert backoff(300.0, attempts) == wait
    assert backoff(10_000.0, 3) == 10_000.0


def test_4xx_then_250_is_retried_and_delivered_once(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"451 4.3.0 try again later", b"250 2.0.0 queued as X"])
    setup = _setup(tmp_path, ZONE, server.port)

    _deliver_all(setup, "john@abc.example", ["brendon@pqr.example"])
    assert [t.reply[:3] for t in server.transactions] == [b"451", b"250"]
    delivered = server.transactions[-1]
    assert delivered.content == MESSAGE and delivered.sender == "john@abc.example"
    assert setup.bounces() == []
    lines = [
        r.getMessage() for r in caplog.records if "to=<brendon@pqr.example>" in r.getMessage()
    ]
    assert "status=deferred (451 4.3.0 try again later)" in lines[0]
    assert re.search(r"relay=mx\.pqr\.example\[127\.0\.0\.1\]:\d+, delay=[\d.]+, tls=no", lines[1])
    assert "dsn=2.0.0, status=sent (250 2.0.0 queued as X)" in lines[1]
    # one recipient is '1 recipient' (it said '1 recipients deferred')
    assert re.search(r": 1 recipient deferred; next attempt in [\d.]+s$", caplog.text, re.M)


def test_5xx_bounces_to_a_local_sender(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    server = scripted([b"250 ok"], rcpt_replies={"nobody@pqr.example": b"550 5.1.1 no such user"})
    setup = _setup(tmp_path, ZONE, server.port)

    _deliver_all(setup, "john@abc.example", ["brendon@pqr.example", "nobody@pqr.example"])
    assert [t.recipients for t in server.transactions] == [["brendon@pqr.example"]]
    (bounce,) = setup.bounces()
    assert bounce["Return-Path"] == "<>"
    assert bounce.get_content_type() == "multipart/report"
    (raw,) = setup.raw_bounces()
    assert b"Final-Recipient: rfc822; nobody@pqr.example" in raw
    assert b"Status: 5.1.1" in raw and b"Diagnostic-Code: smtp; 550 5.1.1 no such user" in raw
    assert b"brendon@pqr.example" not in raw.split(b"message/delivery-status")[1].split(b"--")[0]


def test_5xx_at_end_of_data_bounces_every_recipient(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    server = scripted([b"554 5.6.0 content refused"])
    setup = _setup(tmp_path, ZONE, server.port)

    _deliver_all(setup, "john@abc.example", ["a@pqr.example", "b@pqr.example"])
    (raw,) = setup.raw_bounces()
    assert raw.count(b"Status: 5.6.0") == 2


@pytest.mark.parametrize(
    ("reply", "dsn"),
    [(b"552 5.5.3 Too many recipients", "4.5.3"), (b"552 too many recipients", "4.0.0")],
)
def test_a_552_to_rcpt_is_deferred_as_452(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], reply: bytes, dsn: str
) -> None:
    """RFC 5321 §4.5.3.1.10: RFC 821 wrongly gave 552 for too many recipients, and a
    client SHOULD take a 552 to RCPT as temporary (Postfix reads it as 452). It was
    bounced; it waits now, its status class 4, the server's own reply kept."""
    server = scripted([b"250 2.0.0 ok"], rcpt_replies={"c@pqr.example": reply})
    setup = _setup(tmp_path, ZONE, server.port, retry_after=300)

    async def main() -> QueueEntry:
        entry = _enqueue(setup, "john@abc.example", ["a@pqr.example", "c@pqr.example"])
        await _deliver(setup.worker, entry.id)
        return setup.queue.load(entry.id)

    entry = asyncio.run(main())
    assert [t.recipients for t in server.transactions] == [["a@pqr.example"]]
    assert setup.bounces() == []
    (waiting,) = entry.pending
    assert (waiting.address, waiting.dsn, waiting.reply) == ("c@pqr.example", dsn, reply.decode())


def test_a_552_to_the_content_still_bounces(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    """Only RCPT's 552 is RFC 821's misnumbered 452: after the content it is "exceeded
    storage allocation" (RFC 5321 §4.2.2), for good."""
    server = scripted([b"552 5.3.4 message too big for me"])
    setup = _setup(tmp_path, ZONE, server.port)

    _deliver_all(setup, "john@abc.example", ["a@pqr.example"])
    (raw,) = setup.raw_bounces()
    assert b"Status: 5.3.4" in raw


@pytest.mark.parametrize("limits", [b"", b"RCPTMAX=1"])
def test_a_552_to_mail_bounces(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], limits: bytes
) -> None:
    """A 552 to MAIL is "exceeded storage allocation" (RFC 5321 §4.2.2), for good: only
    RCPT's 552 is RFC 821's misnumbered 452 (§4.5.3.1.10). With LIMITS RCPTMAX (RFC
    9422 §4.2) each batch's recipients carry their MAIL's refusal, and it was read as
    their RCPT's: both waited as 4.3.4 until the message's lifetime."""
    server = scripted(
        [b"250 2.0.0 ok"],
        mail_reply=b"552 5.3.4 message size exceeds fixed maximum",
        limits=limits,
    )
    setup = _setup(tmp_path, ZONE, server.port, retry_after=300)

    async def main() -> None:
        entry = _enqueue(setup, "john@abc.example", ["a@pqr.example", "b@pqr.example"])
        await _deliver(setup.worker, entry.id)

    asyncio.run(main())
    assert _queue_empty(setup)
    (raw,) = setup.raw_bounces()
    assert raw.count(b"Status: 5.3.4") == 2


def _logged(caplog: pytest.LogCaptureFixture, address: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"to=<{address}>" in r.getMessage()]


TEN = [f"r{index}@pqr.example" for index in range(10)]


def test_recipients_refused_452_go_at_once_in_new_transactions(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 5321 §4.5.3.1.8, .10: a 452 to RCPT past the server's limit asks for the
    rest in "chunks", new transactions, sent as Exim does on the same connection
    (§3.3: MAIL again). They waited for the next exchanger or the queue's backoff:
    one round per 4 here."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"250 2.0.0 ok"], max_recipients=4)
    setup = _setup(tmp_path, ZONE, server.port, retry_after=300)

    async def main() -> None:
        entry = _enqueue(setup, "john@abc.example", TEN)
        await _deliver(setup.worker, entry.id)

    asyncio.run(main())
    assert [t.recipients for t in server.transactions] == [TEN[:4], TEN[4:8], TEN[8:]]
    assert all(t.content == MESSAGE for t in server.transactions)
    assert server.connections == 1
    assert _queue_empty(setup) and setup.bounces() == []
    for address in TEN:
        (line,) = _logged(caplog, address)
        assert "status=sent (250 2.0.0 ok)" in line


def test_a_452_to_every_recipient_defers_them_without_a_loop(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], caplog: pytest.LogCaptureFixture
) -> None:
    """No progress, no new transaction: a server that takes none waits as before."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"250 2.0.0 ok"], max_recipients=0)
    setup = _setup(tmp_path, ZONE, server.port, retry_after=300)

    async def main() -> QueueEntry:
        entry = _enqueue(setup, "john@abc.example", TEN[:3])
        await _deliver(setup.worker, entry.id)
        return setup.queue.load(entry.id)

    entry = asyncio.run(main())
    assert server.transactions == [] and server.connections == 1
    assert [(r.address, r.dsn, r.reply) for r in entry.pending] == [
        (address, "4.5.3", "452 4.5.3 too many recipients") for address in TEN[:3]
    ]
    for address in TEN[:3]:
        (line,) = _logged(caplog, address)
        assert "status=deferred (452 4.5.3 too many recipients)" in line


def test_a_452_after_a_refusal_of_the_content_is_not_sent_again(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    """Only a transaction that delivered makes progress: one whose content was refused
    leaves its 452 recipients waiting, and its own refused for good."""
    server = scripted([b"554 5.6.0 content refused"], max_recipients=1)
    setup = _setup(tmp_path, ZONE, server.port, retry_after=300)

    async def main() -> QueueEntry:
        entry = _enqueue(setup, "john@abc.example", TEN[:2])
        await _deliver(setup.worker, entry.id)
        return setup.queue.load(entry.id)

    entry = asyncio.run(main())
    assert [t.recipients for t in server.transactions] == [TEN[:1]]
    assert [(r.address, r.reply) for r in entry.pending] == [
        (TEN[1], "452 4.5.3 too many recipients")
    ]
    (raw,) = setup.raw_bounces()
    assert b"Final-Recipient: rfc822; r0@pqr.example" in raw


def test_a_session_lost_in_the_new_transaction_keeps_what_was_delivered(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], caplog: pytest.LogCaptureFixture
) -> None:
    """The first transaction's recipients are recorded sent in the queue before the
    second transaction's MAIL (RFC 5321 §6.1: a worker stopped in it, where nothing
    else records them, must not send them again); the second's wait, and go once
    the exchanger takes them, the first ones never sent twice."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    recorded: dict[int, list[str]] = {}
    server = scripted([b"250 2.0.0 ok"], max_recipients=2, hang_up_at_data=2)
    setup = _setup(tmp_path, ZONE, server.port, retry_after=300)
    entry = _enqueue(setup, "john@abc.example", TEN[:3])

    def at_mail(mails: int) -> None:
        recipients = setup.queue.load(entry.id).recipients
        recorded[mails] = [r.address for r in recipients if r.status is RecipientStatus.SENT]

    server.at_mail = at_mail

    async def main() -> QueueEntry:
        await _deliver(setup.worker, entry.id)
        waiting = setup.queue.load(entry.id)
        server.hang_up_at_data = None
        await _deliver(setup.worker, entry.id)
        return waiting

    waiting = asyncio.run(main())
    assert recorded[2] == TEN[:2]
    assert [r.address for r in waiting.pending] == [TEN[2]]
    assert [t.recipients for t in server.transactions] == [TEN[:2], TEN[2:3]]
    assert _queue_empty(setup)
    for address in TEN[:2]:
        (line,) = _logged(caplog, address)
        assert "status=sent" in line
    deferred, sent = _logged(caplog, TEN[2])
    assert "status=deferred" in deferred and "status=sent" in sent


def test_a_452_to_every_recipient_of_the_new_transaction_defers_them(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], caplog: pytest.LogCaptureFixture
) -> None:
    """The first transaction delivers, the second delivers to none (every RCPT 452):
    no progress, so no third; its recipients wait with the 452, each logged once,
    and the first ones are sent."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    mails: list[int] = []
    server = scripted([b"250 2.0.0 ok"], max_recipients=(2, 0), at_mail=mails.append)
    setup = _setup(tmp_path, ZONE, server.port, retry_after=300)

    async def main() -> QueueEntry:
        entry = _enqueue(setup, "john@abc.example", TEN[:5])
        await _deliver(setup.worker, entry.id)
        return setup.queue.load(entry.id)

    entry = asyncio.run(main())
    assert [t.recipients for t in server.transactions] == [TEN[:2]]
    assert mails == [1, 2] and server.connections == 1
    assert [(r.address, r.dsn, r.reply) for r in entry.pending] == [
        (address, "4.5.3", "452 4.5.3 too many recipients") for address in TEN[2:5]
    ]
    for address in TEN[:2]:
        (line,) = _logged(caplog, address)
        assert "status=sent (250 2.0.0 ok)" in line
    for address in TEN[2:5]:
        (line,) = _logged(caplog, address)
        assert "status=deferred (452 4.5.3 too many recipients)" in line


def test_no_bounce_for_the_null_sender(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"550 5.7.1 go away"])
    setup = _setup(tmp_path, ZONE, server.port)

    _deliver_all(setup, "", ["brendon@pqr.example"])
    assert setup.bounces() == []
    assert any("null sender: no bounce" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("report_on", "named"),
    [("ORIGINAL1", "a lost report on ORIGINAL1"), (None, "a lost report (")],
)
def test_a_report_that_fails_for_good_is_logged_lost_as_a_warning(
    tmp_path: Path,
    scripted: Callable[..., ScriptedSMTP],
    caplog: pytest.LogCaptureFixture,
    report_on: str | None,
    named: str,
) -> None:
    """Mail from <> is a report, never bounced (RFC 5321 §4.5.5, RFC 3461 §6.2): when it
    fails for good, nobody is told, so the operator is, above the INFO of any bounce,
    with the message it reported on when the server made it."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"550 5.7.1 go away"])
    setup = _setup(tmp_path, ZONE, server.port)

    async def main() -> None:
        entry = setup.queue.add(MESSAGE, "", ["brendon@pqr.example"], report_on=report_on)
        setup.worker.schedule(entry)
        await _run_until(setup, lambda: _queue_empty(setup))

    asyncio.run(main())
    (lost,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert lost.levelno == logging.WARNING
    assert named in lost.getMessage()
    assert "null sender: no bounce for 1 recipients" in lost.getMessage()


def test_a_remote_sender_gets_its_bounce_queued(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    server = scripted([b"550 5.1.1 unknown"])
    zone = ZONE + "xyz.example MX 10 mx.pqr.example\n"
    setup = _setup(tmp_path, zone, server.port)

    async def main() -> None:
        _enqueue(setup, "mary@xyz.example", ["brendon@pqr.example"])
        await _run_until(setup, lambda: len(server.transactions) == 2 and _queue_empty(setup))

    asyncio.run(main())
    _, bounce = server.transactions
    assert bounce.sender == "" and bounce.recipients == ["mary@xyz.example"]
    assert b"multipart/report" in bounce.content


def _bounce_from(
    tmp_path: Path,
    server: ScriptedSMTP,
    message: bytes,
    params: tuple[tuple[str, str | None], ...] = (),
    orcpt: str | None = None,
) -> Transaction:
    """Queue ``message`` from mary@xyz.example to nobody@pqr.example (with ``orcpt``) as
    the SMTP listener does; both domains' exchanger is ``server``, which refuses it: the
    bounce it gets."""
    zone = ZONE + "xyz.example MX 10 mx.pqr.example\n"
    setup = _setup(tmp_path, zone, server.port)

    def bounced() -> list[Transaction]:
        return [t for t in server.transactions if t.recipients == ["mary@xyz.example"]]

    async def main() -> None:
        spool = setup.queue.spool()
        spool.write(message)
        recipients = [QueuedRecipient("nobody@pqr.example", orcpt=orcpt)]
        entry = setup.queue.prepare(spool, "mary@xyz.example", recipients, params=params).commit()
        setup.worker.schedule(entry, new=True)
        await _run_until(setup, lambda: _queue_empty(setup) and bool(bounced()), timeout=6)

    asyncio.run(main())
    (bounce,) = bounced()
    assert bounce.sender == ""
    return bounce


EIGHT_BIT_BODY = (
    b"From: mary@xyz.example\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + "Café au lait\r\n".encode()
)


@pytest.mark.parametrize(
    ("message", "returned_header", "status", "returned_type"),
    [
        # The 8-bit body goes converted (quoted-printable); the recipient is refused.
        (EIGHT_BIT_BODY, b"Subject: =?utf-8?q?caf=C3=A9?=\r\n", "5.1.1", "text/rfc822-headers"),
        # Raw UTF-8 in the header of mail sent without SMTPUTF8, as some mailers send
        # it: no 7-bit form (5.6.3), and the header comes back quoted-printable as
        # message/global-headers (RFC 6533 §6.3), the header of a message/global.
        (
            EIGHT_BIT_BODY.replace(b"=?utf-8?q?caf=C3=A9?=", "café".encode()),
            "Subject: café\r\n".encode(),
            "5.6.3",
            "message/global-headers",
        ),
        # Latin-1 octets from an old mailer are no UTF-8 header: text/rfc822-headers.
        (
            EIGHT_BIT_BODY.replace(b"=?utf-8?q?caf=C3=A9?=", b"caf\xe9"),
            b"Subject: caf\xe9\r\n",
            "5.6.3",
            "text/rfc822-headers",
        ),
    ],
)
def test_the_bounce_of_8bit_mail_reaches_a_7bit_only_exchanger_with_the_header_only(
    tmp_path: Path,
    scripted: Callable[..., ScriptedSMTP],
    caplog: pytest.LogCaptureFixture,
    message: bytes,
    returned_header: bytes,
    status: str,
    returned_type: str,
) -> None:
    """RFC 5321 §6.1: the sender must hear of the failure, and the bounce (from <>) of a
    failed bounce is never made. Returned whole, the 8-bit message made the bounce 8-bit,
    which the relay cannot send as it is to an exchanger without 8BITMIME (RFC 6152 §3).
    The report the server made goes as RFC 3461 §4.3 lets it, with the header only,
    never asking for SMTPUTF8 (its own header is ASCII)."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    refused = {"nobody@pqr.example": b"550 5.1.1 no such user"}
    server = scripted([b"250 2.0.0 ok"], refused, offers=())
    bounce = _bounce_from(tmp_path, server, message, params=(("BODY", "8BITMIME"),))
    assert bounce.content.isascii()
    assert bounce.mail_line == b"MAIL FROM:<>\r\n"
    report = email.message_from_bytes(bounce.content, policy=email.policy.default)
    assert isinstance(report, email.message.EmailMessage)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    _text, status_part, returned = report.iter_parts()
    assert f"Status: {status}" in status_part.as_string()
    assert returned.get_content_type() == returned_type
    assert returned["Content-Description"] == "Undelivered message headers"
    if returned_type == "text/rfc822-headers":
        header = returned.get_payload(decode=True)
    else:  # the email package parses a message/* part as a message whatever its encoding
        assert returned["Content-Transfer-Encoding"] == "quoted-printable"
        raw = returned.get_content()
        assert isinstance(raw, bytes)
        header = quopri.decodestring(raw)
    assert isinstance(header, bytes)
    header = header.replace(b"\r\n", b"\n")  # as the parser gives a message/* part
    assert returned_header.replace(b"\r\n", b"\n") in header and b"au lait" not in header
    assert "goes in its 7-bit form, the message returned with the header only" in caplog.text


def test_the_bounce_of_smtputf8_mail_reaches_a_7bit_only_exchanger_quoted_printable(
    tmp_path: Path,
    scripted: Callable[..., ScriptedSMTP],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An RFC 6533 report (UTF-8 status and returned header) to a sender whose exchanger
    offers neither SMTPUTF8 nor 8BITMIME: its own header is ASCII, so SMTPUTF8 is not
    needed, and its 8-bit parts go quoted-printable (RFC 6533 §6.1, §6.3), the message
    cut to its header as ``message/global-headers``, instead of a 554 5.6.3 that would
    lose it (RFC 5321 §4.5.5)."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"250 2.0.0 ok"], offers=())
    message = "From: mary@xyz.example\r\nSubject: café\r\n\r\nCafé au lait\r\n".encode()
    params = (("BODY", "8BITMIME"), ("SMTPUTF8", None))
    bounce = _bounce_from(tmp_path, server, message, params, orcpt="utf-8;jösé@pqr.example")
    assert bounce.content.isascii()
    assert bounce.mail_line == b"MAIL FROM:<>\r\n"
    report = email.message_from_bytes(bounce.content, policy=email.policy.default)
    assert isinstance(report, email.message.EmailMessage)
    assert report.get_param("report-type") == "global-delivery-status"
    text, status, returned = report.iter_parts()
    assert "the header of your message follow" in text.get_content()
    assert status.get_content_type() == "message/global-delivery-status"
    assert returned.get_content_type() == "message/global-headers"
    assert returned["Content-Description"] == "Undelivered message headers"

    def decoded(part: email.message.MIMEPart) -> str:
        # The email package parses a message/* part as a message whatever its encoding.
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        raw = part.get_content()
        assert isinstance(raw, bytes)
        return quopri.decodestring(raw).decode("utf-8")

    fields = decoded(status)
    assert "Original-Recipient: utf-8; jösé@pqr.example" in fields
    assert "Final-Recipient: rfc822; nobody@pqr.example" in fields
    assert "Status: 5.6.7" in fields
    header = decoded(returned)
    assert "Subject: café" in header and "au lait" not in header
    assert "goes in its 7-bit form" in caplog.text


@pytest.mark.parametrize(
    ("message", "params", "smtputf8"),
    [
        # An ASCII message that quotes an RFC 6533 report's part header.
        (MESSAGE + b"Content-Type: message/global\r\n", (), False),
        ("Subject: grüße\r\n\r\nx\r\n".encode(), (("SMTPUTF8", None),), True),
        # A raw UTF-8 header without SMTPUTF8: returned as message/global, in a report
        # whose own fields are ASCII (message/delivery-status), so no SMTPUTF8.
        ("Subject: grüße\r\n\r\nx\r\n".encode(), (("BODY", "8BITMIME"),), False),
    ],
)
def test_a_bounce_asks_for_smtputf8_when_it_is_an_rfc_6533_report(
    tmp_path: Path,
    scripted: Callable[..., ScriptedSMTP],
    message: bytes,
    params: tuple[tuple[str, str | None], ...],
    smtputf8: bool,
) -> None:
    """The report says whether it follows RFC 6533 (its builder knows): what the returned
    message quotes does not make it one."""
    refused = {"nobody@pqr.example": b"550 5.1.1 no such user"}
    server = scripted([b"250 2.0.0 ok"], refused, offers=(b"8BITMIME", b"SMTPUTF8"))
    bounce = _bounce_from(tmp_path, server, message, params)
    assert (b" SMTPUTF8" in bounce.mail_line) is smtputf8
    assert (b"message/global-delivery-status" in bounce.content) is smtputf8


class _AiosmtpdSink:
    """aiosmtpd's handler: refuses nobody@pqr.example, keeps every message it takes."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address == "nobody@pqr.example":
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.mark.interop
def test_aiosmtpd_without_smtputf8_takes_the_global_bounce_of_a_raw_utf8_header(
    tmp_path: Path,
) -> None:
    """A message sent without SMTPUTF8 whose header holds raw UTF-8 bounces as
    ``message/global`` (RFC 6533 §6.3); the bounce's own header is ASCII, so aiosmtpd,
    which offers 8BITMIME but not SMTPUTF8, takes it, and the standard library's parser
    reads the returned message whole."""
    from aiosmtpd.controller import Controller

    sink = _AiosmtpdSink()
    controller = Controller(sink, hostname=LOOPBACK, port=free_port(LOOPBACK))
    controller.start()
    try:
        zone = ZONE + "xyz.example MX 10 mx.pqr.example\n"
        setup = _setup(tmp_path, zone, controller.port)
        message = "From: mary@xyz.example\r\nSubject: grüße\r\n\r\nbody\r\n".encode()

        async def main() -> None:
            spool = setup.queue.spool()
            spool.write(message)
            recipients = [QueuedRecipient("nobody@pqr.example")]
            params = (("BODY", "8BITMIME"),)
            entry = setup.queue.prepare(spool, "mary@xyz.example", recipients, params=params)
            setup.worker.schedule(entry.commit(), new=True)
            await _run_until(setup, lambda: _queue_empty(setup) and bool(sink.envelopes))

        asyncio.run(main())
    finally:
        controller.stop()
    (envelope,) = sink.envelopes
    assert envelope.mail_from in ("", "<>")  # aiosmtpd versions differ
    assert envelope.rcpt_tos == ["mary@xyz.example"]
    assert "SMTPUTF8" not in envelope.mail_options
    report = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert isinstance(report, email.message.EmailMessage)
    assert report.get_param("report-type") == "delivery-status"
    _text, status, returned = report.iter_parts()
    assert status.get_content_type() == "message/delivery-status"
    assert returned.get_content_type() == "message/global"
    (enclosed,) = returned.iter_parts()  # parsed as the message it encloses
    assert enclosed["Subject"] == "grüße"
    assert enclosed.get_content().rstrip() == "body"


def test_the_next_exchanger_is_tried_when_one_is_down(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    server = scripted([b"250 ok"])
    # The preferred exchanger's address has nothing listening on the port.
    zone = (
        "pqr.example MX 10 dead.pqr.example\n"
        "pqr.example MX 20 mx.pqr.example\n"
        "dead.pqr.example A 127.0.0.254\n"
        "mx.pqr.example A 127.0.0.1\n"
    )
    setup = _setup(tmp_path, zone, server.port)

    _deliver_all(setup, "john@abc.example", ["brendon@pqr.example"])
    assert len(server.transactions) == 1
    assert setup.bounces() == []


def test_unreachable_mail_expires_into_a_bounce(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    port = free_port(LOOPBACK)  # nothing listens there
    now = [1000.0]
    setup = _setup(
        tmp_path, ZONE, port, retry_after=0.05, max_queue_age=3600, clock=lambda: now[0]
    )

    async def main() -> None:
        _enqueue(setup, "john@abc.example", ["brendon@pqr.example"])
        task = asyncio.get_running_loop().create_task(setup.worker.run())
        try:
            while not any("status=deferred" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.02)
            now[0] += 7200  # two hours later: past the queue lifetime
            (path,) = (setup.queue.directory / "envelopes").iterdir()
            # load, not open(): open() clears tmp/, where the worker may be rewriting.
            setup.worker.schedule(setup.queue.load(path.name))
            while not _queue_empty(setup):
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await setup.worker.aclose(1.0)

    asyncio.run(asyncio.wait_for(main(), 10))
    (raw,) = setup.raw_bounces()
    text = b" ".join(raw.split())
    assert b"It was retried for 1h without success" in text
    assert b"Action: failed\nStatus: 4.4.1" in raw  # a Maildir file has LF line ends
    # The last real error, not a generic phrase.
    assert b"Diagnostic-Code: x-local; connect to mx.pqr.example[127.0.0.1]" in raw


def test_a_message_past_its_lifetime_gets_one_more_attempt(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    """Postfix's maximal_queue_lifetime: a message is returned when delivery fails with
    a temporary error and its time in the queue has reached the limit. A round due past
    the lifetime bounced before connecting, though the exchanger would now take it."""
    server = scripted([b"451 4.3.0 busy", b"451 4.3.0 busy", b"250 2.0.0 ok"])
    now = [1000.0]
    setup = _setup(
        tmp_path, ZONE, server.port, retry_after=3000, max_queue_age=3600, clock=lambda: now[0]
    )

    async def main() -> None:
        entry = _enqueue(setup, "john@abc.example", ["brendon@pqr.example"])
        for _ in range(3):
            await _deliver(setup.worker, entry.id)
            if _queue_empty(setup):
                return
            now[0] = setup.queue.load(entry.id).next_attempt
        raise AssertionError("still queued after three rounds")

    asyncio.run(main())
    assert now[0] - 1000.0 >= 3600  # the last round came past the lifetime
    assert [t.reply[:3] for t in server.transactions] == [b"451", b"451", b"250"]
    assert setup.bounces() == []


@pytest.mark.parametrize(
    ("zone", "status"),
    [
        ("pqr.example SERVFAIL\n", b"Status: 4.4.3"),  # no exchanger found
        (ZONE + "pqr.example MX 20 mx2.pqr.example\n", b"Status: 4.3.0"),  # the last one's
    ],
)
def test_a_temporary_failure_past_the_lifetime_bounces_with_its_last_error(
    tmp_path: Path,
    scripted: Callable[..., ScriptedSMTP],
    caplog: pytest.LogCaptureFixture,
    zone: str,
    status: bytes,
) -> None:
    """The attempt past the lifetime that fails temporarily, found or not, is the last:
    the recipient bounces with that error (logged ``status=bounced``), not waits again."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"451 4.3.0 busy"])
    now = [1000.0]
    setup = _setup(tmp_path, zone, server.port, max_queue_age=3600, clock=lambda: now[0])

    async def main() -> None:
        entry = _enqueue(setup, "john@abc.example", ["brendon@pqr.example"])
        now[0] += 3600
        await _deliver(setup.worker, entry.id)

    asyncio.run(main())
    assert _queue_empty(setup)
    (raw,) = setup.raw_bounces()
    assert b"It was retried for 1h without success" in b" ".join(raw.split())
    assert status in raw
    assert "status=bounced" in caplog.text and "status=deferred" not in caplog.text


def test_a_permanent_failure_past_the_lifetime_does_not_say_it_was_retried(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    """The bounce's "retried for" sentence is for recipients whose time ran out (a
    temporary failure past the lifetime); a 550 in that round was said to have been
    retried for the lifetime, though the exchanger refused it at once. With both in one
    bounce the sentence, which speaks for every recipient listed, is left out."""
    server = scripted(
        [b"250 2.0.0 ok"],
        rcpt_replies={"a@pqr.example": b"550 5.1.1 no such user", "c@pqr.example": b"451 busy"},
    )
    now = [1000.0]
    setup = _setup(tmp_path, ZONE, server.port, max_queue_age=3600, clock=lambda: now[0])

    async def main() -> None:
        entry = _enqueue(setup, "john@abc.example", ["a@pqr.example", "c@pqr.example"])
        now[0] += 3600
        await _deliver(setup.worker, entry.id)

    asyncio.run(main())
    (raw,) = setup.raw_bounces()
    assert b"Status: 5.1.1" in raw and b"Status: 4.0.0" in raw
    assert b"retried for" not in b" ".join(raw.split())


def test_a_notice_that_cannot_be_made_does_not_freeze_the_backoff(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round whose delay warning cannot be made (a full disk) breaks, and the broken
    round is recorded: it counts as an attempt, so the backoff grows (RFC 5321
    §4.5.4.1). Recording it went through the same round's end, which broke again, and
    the fallback waited ``next_wait(1)`` every time without counting the attempt: a
    retry every five minutes for days."""
    server = scripted([b"451 4.3.0 busy"])
    now = [1000.0]
    setup = _setup(
        tmp_path, ZONE, server.port, retry_after=300, max_queue_age=5 * 86400, clock=lambda: now[0]
    )
    setup.worker.delay_warning = 600

    refused: list[str] = []

    async def disk_full(
        queue_id: str, sender: str, report: object, kind: str, **_: object
    ) -> None:
        refused.append(kind)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(setup.worker, "send_report", disk_full)

    async def main() -> list[int]:
        entry = _enqueue(setup, "john@abc.example", ["brendon@pqr.example"])
        return await _attempts_by_round(setup, entry, now, 4)

    assert asyncio.run(main()) == [1, 2, 3, 4]
    assert server.connections == 4
    assert refused and set(refused) == {"delay"}  # the warning was tried, and failed


_BIG_MESSAGE = b"From: john@abc.example\r\nSubject: big\r\n\r\n" + b"x" * 70 * 300 + b"\r\n"


def _file_size_limited(setup: Setup, limit: int | None) -> Callable[..., Any]:
    """The worker's ``send_report`` as ``RLIMIT_FSIZE`` leaves it: a report over
    ``limit`` octets (every one, when None) fails with ``EFBIG`` as it is written."""
    send_report = setup.worker.send_report

    async def limited(queue_id: str, to: str, report: Any, kind: str, **options: Any) -> None:
        if limit is None or len(report.content) > limit:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        await send_report(queue_id, to, report, kind, **options)

    return limited


def test_a_bounce_too_large_for_the_disk_returns_the_header_only(
    tmp_path: Path,
    scripted: Callable[..., ScriptedSMTP],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bounce that returns the message whole does not fit on the disk: the sender
    gets one that returns its header (RFC 3461 §4.3, as RET=HDRS asks), logged in one
    warning, where he got none and each round logged a traceback."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"250 2.0.0 ok"], rcpt_replies={"nobody@pqr.example": b"550 5.1.1 no"})
    setup = _setup(tmp_path, ZONE, server.port, retry_after=300)
    monkeypatch.setattr(setup.worker, "send_report", _file_size_limited(setup, 8 * 1024))

    async def main() -> None:
        entry = setup.queue.add(_BIG_MESSAGE, "john@abc.example", ["nobody@pqr.example"])
        await setup.worker._process(entry.id)

    asyncio.run(main())
    (bounce,) = setup.bounces()
    assert bounce.get_content_type() == "multipart/report"
    assert [part.get_content_type() for part in bounce.walk()][-1] == "text/rfc822-headers"
    assert "550 5.1.1 no" in setup.raw_bounces()[0].decode()
    words = " ".join(setup.raw_bounces()[0].decode().split())
    assert "It was too large to return whole: only its header comes back." in words
    assert _queue_empty(setup)
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    assert "returns the header only" in warning.getMessage()


def test_a_bounce_the_disk_refuses_keeps_the_exchanger_s_reply_and_logs_no_traceback(
    tmp_path: Path,
    scripted: Callable[..., ScriptedSMTP],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No bounce fits (a file size limit, a full disk): the recipient waits, to bounce
    once the disk takes it, as before; but its last error was the disk's (``deferred
    (local error in delivery: OSError: File too large)``) in place of the exchanger's
    550, and each round logged an ERROR with a traceback. The 550 stays its last error
    now, each round counts (the backoff grows) and says so in one warning."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"250 2.0.0 ok"], rcpt_replies={"nobody@pqr.example": b"550 5.1.1 no"})
    now = [1000.0]
    setup = _setup(tmp_path, ZONE, server.port, retry_after=300, clock=lambda: now[0])
    monkeypatch.setattr(setup.worker, "send_report", _file_size_limited(setup, None))

    async def main() -> list[int]:
        entry = _enqueue(setup, "john@abc.example", ["nobody@pqr.example"])
        return await _attempts_by_round(setup, entry, now, 2)

    assert asyncio.run(main()) == [1, 2]
    (entry,) = setup.queue.entries()
    (recipient,) = entry.recipients
    assert recipient.pending
    assert recipient.reply == "550 5.1.1 no" and recipient.from_remote
    assert recipient.dsn == "4.3.0"  # waiting: a temporary status, whatever the reply
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(w.exc_info is None for w in warnings)
    assert "cannot store the bounce for 1 recipients" in warnings[0].getMessage()
    assert os.strerror(errno.EFBIG) in warnings[0].getMessage()
    assert "status=bounced" not in caplog.text
    assert "dsn=4.3.0, status=deferred (550 5.1.1 no)" in caplog.text
    assert "dsn=5.1.1" not in caplog.text


def test_a_message_that_cannot_be_read_for_its_bounce_is_no_disk_refusal(
    tmp_path: Path,
    scripted: Callable[..., ScriptedSMTP],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``EACCES`` reading the queued message the bounce returns is a fault, not the
    disk refusing to store the bounce: it was logged ``cannot store the bounce ...:
    they wait, and bounce once the disk takes it``, at WARNING with no traceback. It
    is the broken round's ERROR with its traceback now, and says nothing of storing."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"250 2.0.0 ok"], rcpt_replies={"nobody@pqr.example": b"550 5.1.1 no"})
    setup = _setup(tmp_path, ZONE, server.port, retry_after=300)

    def unreadable(self: QueuedContent, *args: object) -> bytes:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "content")

    monkeypatch.setattr(QueuedContent, "returned", unreadable)
    entry = setup.queue.add(MESSAGE, "john@abc.example", ["nobody@pqr.example"])
    asyncio.run(setup.worker._process(entry.id))
    assert setup.bounces() == []
    assert setup.queue.load(entry.id).recipients[0].pending
    assert "cannot store the bounce" not in caplog.text
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.exc_info is not None and "delivery failed" in error.getMessage()


def test_a_damaged_message_past_its_lifetime_is_not_said_bounced(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], caplog: pytest.LogCaptureFixture
) -> None:
    """A content file that cannot be read makes no bounce either: past the lifetime, each
    round logged ``status=bounced`` though none was made, and its backoff stood still
    (attempts 0, the next attempt on disk in the past). It waits, counted, as before."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"250 2.0.0 ok"])
    now = [1000.0]
    setup = _setup(
        tmp_path, ZONE, server.port, retry_after=300, max_queue_age=3600, clock=lambda: now[0]
    )

    async def main() -> list[int]:
        entry = _enqueue(setup, "john@abc.example", ["brendon@pqr.example"])
        content = setup.queue.content(entry.id).path
        content.unlink()
        content.mkdir()
        now[0] += 4000
        return await _attempts_by_round(setup, entry, now, 3)

    assert asyncio.run(main()) == [1, 2, 3]
    assert setup.raw_bounces() == []
    assert "status=bounced" not in caplog.text


def test_dns_failures(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No such domain bounces; a temporary DNS failure defers."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    zone = "flaky.example SERVFAIL\nother.example EXISTS\n"
    setup = _setup(tmp_path, zone, 25)

    async def main() -> None:
        _enqueue(setup, "john@abc.example", ["x@nowhere.example", "y@flaky.example"])
        await _run_until(
            setup, lambda: any("status=deferred" in r.getMessage() for r in caplog.records)
        )

    asyncio.run(main())
    (raw,) = setup.raw_bounces()
    assert b"Status: 5.1.2" in raw
    (entry,) = setup.queue.open()
    assert [r.address for r in entry.pending] == ["y@flaky.example"]
    assert entry.attempts == 1 and entry.pending[0].dsn == "4.4.3"


def test_what_the_queue_cannot_record_on_a_full_disk_is_not_done_twice(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the queue file cannot be rewritten, the worker goes by what it knows: the
    recipient sent is not sent again, nor the bounce or the success report made again,
    and the waits between attempts still grow. Once the disk has room, the last
    recipient goes and the entry ends."""
    server = scripted(
        [b"250 2.0.0 ok"],
        rcpt_replies={"b@pqr.example": b"451 4.2.1 later", "c@pqr.example": b"550 5.1.1 no"},
    )
    setup = _setup(tmp_path, ZONE, server.port, retry_after=0.05)
    full = [True]
    update = setup.queue.update

    def update_unless_full(entry: QueueEntry) -> None:
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        update(entry)

    monkeypatch.setattr(setup.queue, "update", update_unless_full)
    attempts: list[int] = []
    schedule = setup.worker.schedule

    def recorded(entry: QueueEntry, *, new: bool = False) -> None:
        if entry.report_on is None:  # the message's rounds, not its success report's
            attempts.append(entry.attempts)
        schedule(entry, new=new)

    monkeypatch.setattr(setup.worker, "schedule", recorded)

    def done() -> bool:
        if full and server.connections >= 3:
            full.clear()  # the disk has room again, and b's server takes it
            server.rcpt_replies.pop("b@pqr.example")
        return not full and _queue_empty(setup)

    async def main() -> None:
        _enqueue_dsn(
            setup,
            [
                QueuedRecipient("a@pqr.example", notify="SUCCESS"),
                QueuedRecipient("b@pqr.example"),
                QueuedRecipient("c@pqr.example"),
            ],
        )
        await _run_until(setup, done)

    asyncio.run(main())
    assert [t.recipients for t in server.transactions] == [["a@pqr.example"], ["b@pqr.example"]]
    reports = setup.raw_bounces()
    assert sum(b"Final-Recipient: rfc822; a@pqr.example" in r for r in reports) == 1
    assert sum(b"Final-Recipient: rfc822; c@pqr.example" in r for r in reports) == 1
    assert len(reports) == 2
    assert attempts[:3] == [0, 1, 2] and attempts == sorted(set(attempts))


def test_the_worker_tells_on_delivery_of_what_it_delivers_locally(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    """``on_delivery`` hears of every local delivery, the worker's too: a queued local
    recipient's copy and a bounce to a local sender (it heard of the SMTP session's
    alone); what the hook raises is logged, the delivery stands."""
    server = scripted([b"250 ok"], rcpt_replies={"nobody@pqr.example": b"550 5.1.1 no such user"})
    setup = _setup(tmp_path, ZONE, server.port)
    told: list[tuple[str, Path]] = []

    def hook(key: str, path: Path) -> None:
        told.append((key, path))
        raise RuntimeError("the hook's own trouble")

    setup.mailboxes.on_delivery = hook

    _deliver_all(setup, "john@abc.example", ["john@abc.example", "nobody@pqr.example"])
    assert [key for key, _ in told] == ["john@abc.example", "john@abc.example"]
    assert all(path.exists() for _, path in told)
    kinds = sorted(message.get_content_type() for message in setup.bounces())
    assert kinds == ["multipart/report", "text/plain"]  # the bounce, and the copy


def test_a_mailbox_that_fails_defers_only_its_own_recipient(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local recipient in the queue (its mailbox refused the copy when the message
    came) whose mailbox fails again waits for the next round with a 4.2.0; the
    round goes on to the other recipients."""
    server = scripted([b"250 2.0.0 ok"])
    setup = _setup(tmp_path, ZONE, server.port)
    replace = os.replace
    john = setup.mailboxes.config.mailbox_path("john@abc.example")

    def refused(source: Path, target: Path) -> None:
        if Path(target).parent == john / "new":
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        replace(source, target)

    monkeypatch.setattr(os, "replace", refused)

    async def main() -> None:
        _enqueue(setup, "", ["john@abc.example", "brendon@pqr.example"])
        await _run_until(setup, lambda: [e.attempts for e in setup.queue.entries()] == [1])

    asyncio.run(main())
    assert [t.recipients for t in server.transactions] == [["brendon@pqr.example"]]
    (entry,) = setup.queue.entries()
    (waiting,) = entry.pending
    assert waiting.address == "john@abc.example" and waiting.dsn == "4.2.0"
    assert list((john / "tmp").iterdir()) == []
    # What a report would tell the sender: not the server's paths or its error text.
    assert waiting.reply == "cannot deliver into the mailbox (PermissionError)"


def test_an_entry_removed_by_hand_is_forgotten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = _setup(tmp_path, ZONE, 25)
    entry = setup.queue.add(MESSAGE, "john@abc.example", ["brendon@pqr.example"])
    setup.queue.remove(entry.id)

    async def main() -> None:
        setup.worker.schedule(entry)
        await _run_until(setup, lambda: "forgotten" in caplog.text)

    asyncio.run(main())
    assert setup.worker.queued == 0


def test_a_hold_of_a_held_message_and_a_release_of_one_not_held_count_apart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``queue hold`` of a message already held counted it done (``queue hold: 1
    message``), and so did ``release`` of one not held. They are carried out as before
    (the entry written, a released one tried at once), but counted apart, with no
    ``on hold`` or ``released`` line for a message that was so already."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    setup = _setup(tmp_path, ZONE, 25)
    entry = setup.queue.add(MESSAGE, "john@abc.example", ["brendon@pqr.example"])
    worker = setup.worker

    async def main() -> list[tuple[int, int]]:
        counts = []
        for action in ("release", "hold", "hold", "release"):
            applied = await worker.apply(QueueCommand(action, (entry.id,)))
            assert await applied.written
            counts.append((applied.done, applied.already))
        return counts

    assert asyncio.run(main()) == [(0, 1), (1, 0), (0, 1), (1, 0)]
    assert caplog.text.count(f"{entry.id}: on hold (queue hold)") == 1
    assert caplog.text.count(f"{entry.id}: released (queue release)") == 1
    assert not setup.queue.load(entry.id).held
    assert entry.id in worker._due  # the release tried it at once, as before


@pytest.mark.parametrize(
    ("first", "second", "line"),
    [
        (None, "release", "queue release after its delivery round: not held, tried now"),
        ("hold", "hold", "queue hold after its delivery round: already held"),
    ],
    ids=["release-not-held", "second-hold"],
)
def test_an_action_that_waited_for_a_round_and_found_it_done_has_its_line(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    first: str | None,
    second: str,
    line: str,
) -> None:
    """A ``release`` of a message not held (or a second ``hold`` behind a first), given
    while a round delivered it, was counted ``1 waiting for its delivery round``, then
    found the message as it leaves it after the round and wrote no line at all: what
    became of it was said nowhere. It has a line of its own now."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    setup = _setup(tmp_path, ZONE, 25)
    entry = setup.queue.add(MESSAGE, "john@abc.example", ["brendon@pqr.example"])
    worker = setup.worker

    async def main() -> None:
        round_ = asyncio.get_running_loop().create_future()
        worker._running[entry.id] = round_  # type: ignore[assignment]
        for action in (first, second):
            if action is not None:
                applied = await worker.apply(QueueCommand(action, (entry.id,)))
                assert (applied.done, applied.waiting, applied.already) == (0, 1, 0)
        worker._done(entry.id, round_)  # type: ignore[arg-type]
        assert await applied.written
        while worker.actions.control_tasks:
            await asyncio.wait(worker.actions.control_tasks)

    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(entry.id)]
    assert lines[-1] == f"{entry.id}: {line}"


def test_a_hold_while_a_round_begins_waits_for_the_round_to_end(tmp_path: Path) -> None:
    """A round that starts while ``hold`` reads the entry writes its own copy back at
    its end, over the hold: the hold is carried out after the round instead (the
    operator's ``flush`` then ``hold ID`` left the message not held, and a later
    flush delivered it)."""
    setup = _setup(tmp_path, ZONE, 25)
    entry = setup.queue.add(MESSAGE, "john@abc.example", ["brendon@pqr.example"])
    worker = setup.worker
    load = worker._load

    async def load_as_a_round_begins(queue_id: str) -> QueueEntry:
        loaded = await load(queue_id)
        worker._running[queue_id] = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
        return loaded

    async def main() -> tuple[tuple[str, ...], bool]:
        worker._load = load_as_a_round_begins  # type: ignore[method-assign]
        applied = await worker.apply(QueueCommand("hold", (entry.id,)))
        return applied.ids, applied.written.done()

    assert asyncio.run(main()) == ((entry.id,), False)  # not written until after the round
    assert [action for action, _ in worker.actions.after_round[entry.id]] == ["hold"]
    assert not setup.queue.load(entry.id).held  # written by the round's end, then held


def test_deleting_an_entry_that_owes_a_success_report_logs_the_report_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``queue delete`` on a message whose recipients are all sent but whose success
    report (RFC 3461 §6.2) is not yet queued drops the report with it: the operator
    decides, but the log must say so, naming whom it was for."""
    from smtpcore.server.queue import RecipientStatus

    setup = _setup(tmp_path, ZONE, 25)
    entry = setup.queue.add(MESSAGE, "john@abc.example", ["brendon@pqr.example"])
    sent = replace(entry.recipients[0], status=RecipientStatus.SENT, report_owed="relayed")
    setup.queue.update(entry.with_recipients({"brendon@pqr.example": sent}))

    async def main() -> None:
        applied = await setup.worker.apply(QueueCommand("delete", (entry.id,)))
        assert await applied.written

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert not setup.queue.entries()
    assert (
        f"{entry.id}: the success report owed for <brendon@pqr.example> is dropped with it"
        in caplog.text
    )


def test_an_action_given_as_a_round_ends_comes_after_those_that_waited_for_it(
    tmp_path: Path,
) -> None:
    """``hold`` given while a round delivers the message waits for the round's end; a
    ``release`` given just as the round ended was carried out at once, while the hold
    was still reading the entry, and the hold then wrote over it: the message ended
    held. Actions on one message are carried out in the order given."""
    setup = _setup(tmp_path, ZONE, 25)
    entry = setup.queue.add(MESSAGE, "john@abc.example", ["brendon@pqr.example"])
    worker = setup.worker
    load = worker._load
    slow = [0.2]

    async def slow_first_load(queue_id: str) -> QueueEntry:
        if slow:
            await asyncio.sleep(slow.pop())
        return await load(queue_id)

    async def main() -> None:
        round_ = asyncio.get_running_loop().create_future()
        worker._running[entry.id] = round_  # type: ignore[assignment]
        await worker.apply(QueueCommand("hold", (entry.id,)))
        worker._load = slow_first_load  # type: ignore[method-assign]
        worker._done(entry.id, round_)  # type: ignore[arg-type]
        await worker.apply(QueueCommand("release", (entry.id,)))
        while worker.actions.control_tasks:
            await asyncio.wait(worker.actions.control_tasks)

    asyncio.run(main())
    assert not setup.queue.load(entry.id).held


def test_a_release_reading_the_entry_as_a_round_begins_and_ends_does_not_write_it_back(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    """``release`` (and ``flush``) left the message in the schedule while it read the
    entry: a round that began and ended meanwhile delivered the message and removed it,
    and the release then wrote the entry as read back, an envelope without its content.
    No round begins while an operator's action is carried out."""
    server = scripted([b"250 2.0.0 ok"])
    setup = _setup(tmp_path, ZONE, server.port)
    worker = setup.worker
    load = worker._load
    runs: list[asyncio.Task[None]] = []

    def round_over() -> bool:
        return bool(server.transactions) and not worker._running

    async def load_as_the_worker_runs(queue_id: str) -> QueueEntry:
        loaded = await load(queue_id)
        if not runs:  # the release's reading: a round due now may begin and end
            runs.append(asyncio.get_running_loop().create_task(worker.run()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_until(round_over), 0.5)
        return loaded

    async def main() -> None:
        entry = _enqueue(setup, "john@abc.example", ["brendon@pqr.example"])
        worker._load = load_as_the_worker_runs  # type: ignore[method-assign]
        try:
            applied = await worker.apply(QueueCommand("release", (entry.id,)))
            assert await applied.written
            await asyncio.wait_for(_until(lambda: not worker.queued), 5)
        finally:
            await _stop_runs(worker, runs)

    asyncio.run(main())
    assert [t.recipients for t in server.transactions] == [["brendon@pqr.example"]]
    assert _queue_empty(setup)


def test_a_release_written_as_a_round_keeps_the_record_the_disk_refused_the_round(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that began while ``release`` wrote the entry, and whose own record the
    disk refused (kept in memory for the next write), lost it when the release's write
    ended, which cleared that memory: the entry on disk, the release's, still had the
    recipient the round sent to send, and the next round sent it again."""
    server = scripted([b"250 2.0.0 ok"], rcpt_replies={"b@pqr.example": b"451 4.2.1 later"})
    setup = _setup(tmp_path, ZONE, server.port, retry_after=3600)
    worker = setup.worker
    update = setup.queue.update
    runs: list[asyncio.Task[None]] = []
    full = [True]
    loops: list[asyncio.AbstractEventLoop] = []

    def start_the_worker() -> None:
        runs.append(asyncio.get_running_loop().create_task(worker.run()))

    def update_as_a_round_runs(entry: QueueEntry) -> None:
        if runs:
            if full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            update(entry)
            return
        # The release's write, in its thread: a round due now may begin and end.
        loops[0].call_soon_threadsafe(start_the_worker)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and not (server.transactions and not worker._running):
            time.sleep(0.01)
        update(entry)
        full.clear()

    monkeypatch.setattr(setup.queue, "update", update_as_a_round_runs)

    def waiting_for_the_retry() -> bool:
        later = all(due > worker.monotonic() for due in worker._due.values())
        return bool(server.transactions) and not worker._running and later

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        entry = _enqueue(setup, "john@abc.example", ["a@pqr.example", "b@pqr.example"])
        try:
            applied = await worker.apply(QueueCommand("release", (entry.id,)))
            assert await applied.written
            await asyncio.wait_for(_until(waiting_for_the_retry), 5)
        finally:
            await _stop_runs(worker, runs)

    asyncio.run(main())
    assert [t.recipients for t in server.transactions] == [["a@pqr.example"]]
    (left,) = setup.queue.entries()
    assert [r.address for r in left.pending] == ["b@pqr.example"]


def test_a_delete_cut_off_by_a_stop_as_the_files_go_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop cancels the operator's commands being carried out. A ``delete`` cancelled
    while its thread removed the files went on removing them, but its log line was
    never written, and the next start, finding the message gone, wrote none: the
    operator's record lost a deletion. The removal and its log line are one step."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    setup = _setup(tmp_path, ZONE, 25)
    entry = setup.queue.add(MESSAGE, "john@abc.example", ["brendon@pqr.example"])
    remove = setup.queue.remove
    removing, go_on = threading.Event(), threading.Event()

    def slow_remove(queue_id: str) -> None:
        removing.set()
        go_on.wait(5)
        remove(queue_id)

    monkeypatch.setattr(setup.queue, "remove", slow_remove)

    async def main() -> None:
        command = QueueCommand("delete", (entry.id,))
        task = asyncio.get_running_loop().create_task(setup.worker.apply(command))
        await asyncio.to_thread(removing.wait, 5)
        task.cancel()  # the stop
        with pytest.raises(asyncio.CancelledError):
            await task
        go_on.set()  # asyncio.run waits for the removal's thread to end

    asyncio.run(main())
    assert not setup.queue.entries()
    assert f"{entry.id}: removed by the operator (queue delete)" in caplog.text


def test_rewrites_of_one_envelope_at_once_leave_a_whole_one(tmp_path: Path) -> None:
    """An operator's command and a delivery round may rewrite one envelope at the same
    time: each through a temporary file of its own, so the envelope in place is always
    one of them, whole (they shared one, and the rename put a mix of both in place, or
    failed)."""
    setup = _setup(tmp_path, ZONE, 25)
    entry = setup.queue.add(MESSAGE, "john@abc.example", ["brendon@pqr.example"])
    failures: list[BaseException] = []

    def rewrite(held: bool) -> None:
        changed = replace(entry, held=held)  # one octet longer or shorter
        for _ in range(300):
            try:
                setup.queue.update(changed)
                setup.queue.load(entry.id)
            except (OSError, ValueError) as exc:
                failures.append(exc)

    threads = [threading.Thread(target=rewrite, args=(held,)) for held in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert list((setup.queue.directory / "tmp").iterdir()) == []


# -- delivery status notifications (RFC 3461) ---------------------------------------------


def test_notify_never_and_notify_without_failure_get_no_bounce(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    server = scripted([b"550 5.7.1 go away"])
    setup = _setup(tmp_path, ZONE, server.port)

    async def main() -> None:
        _enqueue_dsn(
            setup,
            [
                QueuedRecipient("a@pqr.example", notify="NEVER"),
                QueuedRecipient("b@pqr.example", notify="SUCCESS,DELAY"),
            ],
        )
        await _run_until(setup, lambda: _queue_empty(setup))

    asyncio.run(main())
    assert setup.bounces() == []
    assert any("no bounce for 2 recipients: NOTIFY" in r.getMessage() for r in caplog.records)


def test_a_bounce_honours_ret_hdrs_envid_and_orcpt(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    server = scripted([b"250 ok"], rcpt_replies={"nobody@pqr.example": b"550 5.1.1 no such user"})
    setup = _setup(tmp_path, ZONE, server.port)

    async def main() -> None:
        _enqueue_dsn(
            setup,
            [
                QueuedRecipient(
                    "nobody@pqr.example", notify="FAILURE", orcpt="rfc822;nb+2Bx@q.example"
                )
            ],
            params=(("RET", "HDRS"), ("ENVID", "ID+3D1")),
        )
        await _run_until(setup, lambda: _queue_empty(setup))

    asyncio.run(main())
    (raw,) = setup.raw_bounces()
    assert b"Original-Envelope-Id: ID=1" in raw
    assert b"Original-Recipient: rfc822; nb+x@q.example" in raw
    assert b"Content-Type: text/rfc822-headers" in raw and b".leading dot" not in raw


def test_notify_success_to_a_server_without_dsn_is_reported_relayed(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    server = scripted([b"250 2.0.0 queued as X"])
    setup = _setup(tmp_path, ZONE, server.port)

    async def main() -> None:
        _enqueue_dsn(setup, [QueuedRecipient("brendon@pqr.example", notify="SUCCESS")])
        await _run_until(setup, lambda: _queue_empty(setup) and bool(setup.raw_bounces()))

    asyncio.run(main())
    (raw,) = setup.raw_bounces()
    assert b"Subject: Successful Mail Delivery Report" in raw
    assert b"Action: relayed" in raw and b"Status: 2.0.0" in raw
    assert b"Remote-MTA: dns; mx.pqr.example" in raw
    [transaction] = server.transactions
    assert b"NOTIFY" not in transaction.rcpt_lines[0]  # the server does not speak DSN


def test_dsn_parameters_go_on_to_a_server_that_speaks_dsn(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    """RFC 3461 §6.2: the next hop reports now; this one says nothing."""
    server = scripted([b"250 2.0.0 queued as X"], dsn=True)
    setup = _setup(tmp_path, ZONE, server.port)

    async def main() -> None:
        _enqueue_dsn(
            setup,
            [
                QueuedRecipient(
                    "a@pqr.example", notify="SUCCESS,FAILURE", orcpt="rfc822;a@x.example"
                ),
                QueuedRecipient("b@pqr.example"),
            ],
            params=(("RET", "HDRS"), ("ENVID", "QQ314")),
        )
        await _run_until(setup, lambda: _queue_empty(setup))

    asyncio.run(main())
    assert setup.bounces() == []
    [transaction] = server.transactions
    assert b" RET=HDRS" in transaction.mail_line and b" ENVID=QQ314" in transaction.mail_line
    a_line, b_line = transaction.rcpt_lines
    assert b"NOTIFY=SUCCESS,FAILURE" in a_line and b"ORCPT=rfc822;a@x.example" in a_line
    assert b"NOTIFY" not in b_line and b"ORCPT" not in b_line


class _BrokenFor:
    """The zone's answers, but ``broken``'s MX lookup raises, as a resolver with a bug."""

    def __init__(self, inner: Resolver, broken: str) -> None:
        self.inner = inner
        self.broken = broken

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        if domain == self.broken:
            raise RuntimeError("resolver bug")
        return await self.inner.mx(domain)

    async def addresses(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        return await self.inner.addresses(host)


class _MissingFileFor(_BrokenFor):
    """The zone's answers, but ``broken``'s MX lookup needs a file that is not there,
    as the relay's CA bundle removed while the server runs."""

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        if domain == self.broken:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/gone/ca.pem")
        return await self.inner.mx(domain)


def test_a_missing_file_not_the_messages_own_is_a_local_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Any FileNotFoundError in a round was read as the message gone: it was dropped
    from the schedule, its files left in the queue, never retried nor bounced until a
    restart. Only its own files missing mean that; another is retried with backoff,
    and the message bounces at ``max_queue_age`` saying what was wrong, though not
    where: the file's path is the operator's, in the log, not the sender's."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    now = [1000.0]
    setup = _setup(tmp_path, ZONE, 25, max_queue_age=3600, clock=lambda: now[0])
    setup.worker.resolver = _MissingFileFor(setup.worker.resolver, "pqr.example")

    async def main() -> None:
        entry = _enqueue(setup, "john@abc.example", ["brendon@pqr.example"])
        await _run_until(setup, lambda: [e.attempts for e in setup.queue.entries()] == [1])
        assert entry.id in setup.worker._due  # scheduled for a retry, not forgotten
        now[0] += 7200  # past the queue lifetime
        setup.worker.schedule(setup.queue.load(entry.id))
        await _run_until(setup, lambda: _queue_empty(setup))

    asyncio.run(main())
    assert "forgotten" not in caplog.text
    assert "/gone/ca.pem" in caplog.text
    (raw,) = setup.raw_bounces()
    assert b"FileNotFoundError: No such file or directory" in raw
    assert b"/gone/ca.pem" not in raw and b"ca.pem" not in raw


def test_a_queue_file_that_is_no_regular_file_is_said_without_its_path(
    tmp_path: Path,
) -> None:
    """A round broken by a queue file that became a link says what broke, as for an
    OSError, not where: the text is a recipient's last error, which a report quotes."""
    from smtpcore.server.safefiles import NotRegularFile, open_regular
    from smtpcore.server.settlement import local_error

    target = tmp_path / "elsewhere"
    target.write_bytes(b"x")
    (tmp_path / "content").symlink_to(target)
    with pytest.raises(NotRegularFile) as caught:
        open_regular(tmp_path / "content")
    assert str(tmp_path) in str(caught.value)  # the operator's log has it
    detail = local_error(caught.value).detail
    assert detail == "local error in delivery: NotRegularFile: a symbolic link, not followed"


@pytest.mark.parametrize(
    "rebuilt",
    [copy.copy, copy.deepcopy, lambda exc: pickle.loads(pickle.dumps(exc))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_a_not_regular_file_error_is_copied_and_pickled_whole(
    rebuilt: Callable[[BaseException], BaseException],
) -> None:
    """Its ``__init__`` takes the path and the reason, where ``ValueError``'s ``args``
    hold one text: copied or pickled (as a process pool does), it must come back."""
    from smtpcore.server.safefiles import NotRegularFile

    error = NotRegularFile(Path("/var/spool/q/ABC"), "a symbolic link, not followed")
    again = rebuilt(error)
    assert isinstance(again, NotRegularFile)
    assert str(again) == str(error) and again.args == error.args
    assert again.reason == error.reason and again.path == error.path


def test_a_file_missing_in_a_mailbox_defers_its_recipient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file missing in a local recipient's mailbox is that mailbox's trouble (4.2.0,
    retried), not the message gone."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    setup = _setup(tmp_path, ZONE, 25)

    def deliver_queued(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/mail/john/tmp")

    monkeypatch.setattr(setup.mailboxes, "deliver_queued", deliver_queued)

    async def main() -> None:
        _enqueue(setup, "", ["john@abc.example"])
        await _run_until(setup, lambda: [e.attempts for e in setup.queue.entries()] == [1])

    asyncio.run(main())
    assert "forgotten" not in caplog.text and "/mail/john/tmp" in caplog.text
    (entry,) = setup.queue.entries()
    assert entry.pending[0].dsn == "4.2.0"


def test_an_action_on_a_message_whose_files_are_there_is_not_taken_as_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FileNotFoundError while an operator's action reads the entry counts as done
    (the message gone) only when the message's own files are missing: otherwise the
    action failed, and its command is kept for the next SIGUSR1 or start."""
    setup = _setup(tmp_path, ZONE, 25)
    entry = setup.queue.add(MESSAGE, "john@abc.example", ["brendon@pqr.example"])

    def load(queue_id: str) -> QueueEntry:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/elsewhere")

    async def main() -> None:
        with monkeypatch.context() as patched:
            patched.setattr(setup.queue, "load", load)
            with pytest.raises(FileNotFoundError):
                await setup.worker.actions.act(entry.id, "hold")
        setup.queue.remove(entry.id)
        assert await setup.worker.actions.act(entry.id, "hold")  # gone: nothing left to do

    asyncio.run(main())


def test_a_success_report_owed_is_made_though_another_domain_breaks(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    """RFC 3461 §5.2.2: brendon@ was relayed to a server without DSN and recorded sent;
    the round's trouble with another domain does not lose the report owed for him."""
    server = scripted([b"250 2.0.0 queued as X"])
    setup = _setup(tmp_path, ZONE + "xyz.example MX 10 mx.pqr.example\n", server.port)
    setup.worker.resolver = _BrokenFor(setup.worker.resolver, "pqr.example")

    async def main() -> None:
        _enqueue_dsn(
            setup,
            [
                QueuedRecipient("brendon@xyz.example", notify="SUCCESS"),
                QueuedRecipient("ok@pqr.example", notify="NEVER"),
            ],
        )
        await _run_until(setup, lambda: bool(setup.raw_bounces()))

    asyncio.run(main())
    (raw,) = setup.raw_bounces()
    assert b"Action: relayed" in raw and b"brendon@xyz.example" in raw


def test_a_success_report_owed_is_made_though_the_round_then_breaks(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = scripted([b"250 2.0.0 queued as X"], {"gone@pqr.example": b"550 5.1.1 no"})
    setup = _setup(tmp_path, ZONE, server.port)

    broken: list[bool] = []

    async def broken_bounce(*args: object, **kwargs: object) -> None:
        broken.append(True)
        raise RuntimeError("cannot bounce")

    monkeypatch.setattr(setup.worker.reports, "bounce", broken_bounce)

    async def main() -> None:
        _enqueue_dsn(
            setup,
            [
                QueuedRecipient("brendon@pqr.example", notify="SUCCESS"),
                QueuedRecipient("gone@pqr.example"),
            ],
        )
        await _run_until(setup, lambda: bool(setup.raw_bounces()))

    asyncio.run(main())
    assert broken  # the bounce step was reached, and broke
    (raw,) = setup.raw_bounces()
    assert b"Action: relayed" in raw and b"gone@pqr.example" not in raw


class _SlowFor(_BrokenFor):
    """The zone's answers, but ``broken``'s MX lookup takes longer than any test."""

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        if domain == self.broken:
            await asyncio.sleep(30)
        return await self.inner.mx(domain)


def test_a_success_report_owed_is_made_though_the_round_is_stopped(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    """RFC 3461 §5.2.2: brendon@ was relayed to a server without DSN and recorded sent;
    a stop while the round waits on another domain does not lose his report."""
    server = scripted([b"250 2.0.0 queued as X"])
    setup = _setup(tmp_path, ZONE + "xyz.example MX 10 mx.pqr.example\n", server.port)
    setup.worker.resolver = _SlowFor(setup.worker.resolver, "pqr.example")

    async def main() -> None:
        entry = _enqueue_dsn(
            setup,
            [
                QueuedRecipient("brendon@xyz.example", notify="SUCCESS"),
                QueuedRecipient("later@pqr.example", notify="NEVER"),
            ],
        )
        task = asyncio.get_running_loop().create_task(setup.worker.run())
        try:
            await asyncio.wait_for(
                _until(lambda: not setup.queue.load(entry.id).recipients[0].pending), 5
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await setup.worker.aclose(0.1)

    asyncio.run(main())
    assert setup.raw_bounces() == []  # owed on disk, for the next start
    restarted = _setup(tmp_path, ZONE + "xyz.example MX 10 mx.pqr.example\n", server.port)

    async def start_again() -> None:
        for entry in restarted.queue.open():
            restarted.worker.schedule(entry)
        await _run_until(restarted, lambda: _queue_empty(restarted))

    asyncio.run(start_again())
    (raw,) = restarted.raw_bounces()
    assert b"Action: relayed" in raw and b"brendon@xyz.example" in raw
    assert [t.recipients for t in server.transactions].count(["brendon@xyz.example"]) == 1


def test_a_round_cancelled_as_its_lookup_answers_ends(
    tmp_path: Path, scripted: Callable[..., ScriptedSMTP]
) -> None:
    """On Python 3.11, ``asyncio.wait_for`` lost a cancellation that came as the lookup
    it waited on answered: a round the stop cancelled then connected and relayed after
    the stop had begun, and the stop waited for it without limit. Here the round is
    cancelled in the loop iteration in which the exchanger's address comes."""
    server = scripted([b"250 2.0.0 queued as X"])
    setup = _setup(tmp_path, ZONE, server.port)
    zone = setup.worker.resolver
    cancelled: list[asyncio.Task[None]] = []

    class AnswerAsCancelled:
        async def mx(self, domain: str) -> Sequence[MXRecord]:
            return await zone.mx(domain)

        async def addresses(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
            found = await zone.addresses(host)
            for task in setup.worker._running.values():
                asyncio.get_running_loop().call_soon(task.cancel)
                cancelled.append(task)
            return found

    setup.worker.resolver = AnswerAsCancelled()

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(setup.worker.run())
        try:
            await asyncio.wait_for(_until(lambda: bool(cancelled)), 5)
            (delivery_round,) = cancelled
            await asyncio.wait((delivery_round,), timeout=5)
            assert delivery_round.cancelled()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await setup.worker.aclose(0.1)

    entry = _enqueue(setup, "john@abc.example", ["brendon@pqr.example"])
    asyncio.run(main())
    assert server.connections == 0
    assert setup.queue.load(entry.id).recipients[0].pending


def test_a_round_that_lost_its_cancellation_is_cancelled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop cancelled a round once and then waited for it without limit: a round
    that lost that cancellation (as ``wait_for`` lost them) held the stop for ever. It is
    cancelled again now, and the stop ends within its grace and a second."""
    setup = _setup(tmp_path, ZONE, 1)
    began = asyncio.Event()

    async def deaf(round_: object) -> None:
        began.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)  # the first cancellation, lost
        await asyncio.sleep(30)

    monkeypatch.setattr(setup.worker, "_deliver_round", deaf)

    async def main() -> float:
        task = asyncio.get_running_loop().create_task(setup.worker.run())
        await asyncio.wait_for(began.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(setup.worker.aclose(0.1), 10)
        return loop.time() - started

    _enqueue(setup, "john@abc.example", ["brendon@pqr.example"])
    assert asyncio.run(main()) < 0.1 + 2


class _Crash(BaseException):
    """A kill -9 or a power loss: no handler takes it, so nothing after it is done."""


@pytest.mark.parametrize("when", ["before the report", "once the report is queued"])
def test_a_success_report_owed_outlives_a_crash_and_is_made_once(
    tmp_path: Path,
    scripted: Callable[..., ScriptedSMTP],
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    """RFC 3461 §6.2: the report owed for a recipient relayed to a server without DSN is
    written with its ``sent`` record, so a crash before the report is made does not
    lose it, and one after it is queued does not make it twice: the next start makes
    or finds it, and the message is not sent again."""
    server = scripted([b"250 2.0.0 queued as X"])
    setup = _setup(tmp_path, ZONE, server.port)
    crashed: list[bool] = []

    def crash(*args: object, **kwargs: object) -> None:
        crashed.append(True)
        raise _Crash

    if when == "before the report":
        monkeypatch.setattr("smtpcore.server.reports.build_success_report", crash)
    else:
        add = setup.queue.add

        def add_then_crash(content: bytes, sender: str, *args: Any, **kwargs: Any) -> Any:
            entry = add(content, sender, *args, **kwargs)
            if not sender:  # the report, from <>
                crash()
            return entry

        monkeypatch.setattr(setup.queue, "add", add_then_crash)

    async def until_the_crash() -> None:
        _enqueue_dsn(setup, [QueuedRecipient("brendon@pqr.example", notify="SUCCESS")])
        await _run_until(setup, lambda: bool(crashed))

    asyncio.run(until_the_crash())
    monkeypatch.undo()
    restarted = _setup(tmp_path, ZONE, server.port)

    async def start_again() -> None:
        for entry in restarted.queue.open():
            restarted.worker.schedule(entry)
        await _run_until(restarted, lambda: _queue_empty(restarted))

    asyncio.run(start_again())
    assert len(server.transactions) == 1
    (raw,) = restarted.raw_bounces()
    assert b"Action: relayed" in raw and b"Final-Recipient: rfc822; brendon@pqr.example" in raw


_REPORT_ACTIONS = {
    "bounce": b"Action: failed",
    "delay": b"Action: delayed",
    "success": b"Action: relayed",
}


@pytest.mark.parametrize(
    ("recipients", "held_after", "reports"),
    [
        (["x", "y"], "bounce", ["bounce", "delay"]),
        (["x", "z"], "bounce", ["bounce", "success"]),
        (["z", "y"], "success", ["success", "delay"]),
    ],
)
def test_a_stop_after_a_report_is_made_does_not_make_it_again(
    tmp_path: Path,
    scripted: Callable[..., ScriptedSMTP],
    monkeypatch: pytest.MonkeyPatch,
    recipients: list[str],
    held_after: str,
    reports: list[str],
) -> None:
    """Once a round's report is made, what it covered is recorded before the round's
    next disk work: here every later step waits on the disk (other work holds the
    share) until the server stops. The next start made the bounce again (its
    recipients' FAILED marks had been in memory only), as Postfix does not: its
    bounce logs record a recipient's fate as the report is made. x@ is refused for
    good, y@ deferred with a delay warning due, z@ relayed and owed a success report
    (RFC 3461 §6.2)."""
    server = scripted(
        [b"250 2.0.0 queued as X"],
        rcpt_replies={"x@pqr.example": b"550 5.1.1 no such user", "y@pqr.example": b"451 4.3.0"},
    )
    setup = _setup(tmp_path, ZONE, server.port, retry_after=60)
    setup.worker.delay_warning = 0.0
    made: list[str] = []
    stuck = asyncio.Event()
    run, send_report, add = setup.worker.disk.run, setup.worker.send_report, setup.queue.add

    async def held_run(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if held_after in made:
            stuck.set()
            await asyncio.Event().wait()  # until the stop cancels the round
        return await run(func, *args, **kwargs)

    async def sent(queue_id: str, to: str, report: Any, kind: str, **options: Any) -> None:
        await send_report(queue_id, to, report, kind, **options)
        made.append({"non-delivery": "bounce"}.get(kind, kind))

    def added(content: bytes, sender: str, *args: Any, **kwargs: Any) -> QueueEntry:
        entry = add(content, sender, *args, **kwargs)
        if kwargs.get("reported"):
            made.append("success")
        return entry

    monkeypatch.setattr(setup.worker.disk, "run", held_run)
    monkeypatch.setattr(setup.worker, "send_report", sent)
    monkeypatch.setattr(setup.queue, "add", added)
    notify = {"x": None, "y": None, "z": "SUCCESS"}

    async def until_the_stop() -> None:
        queued = [QueuedRecipient(f"{r}@pqr.example", notify=notify[r]) for r in recipients]
        _enqueue_dsn(setup, queued)
        task = asyncio.get_running_loop().create_task(setup.worker.run())
        try:
            await asyncio.wait_for(stuck.wait(), 5)
        finally:
            await _stop_runs(setup.worker, [task])

    asyncio.run(until_the_stop())
    monkeypatch.undo()
    restarted = _setup(tmp_path, ZONE, server.port, retry_after=60)
    restarted.worker.delay_warning = 0.0

    def counts() -> list[int]:
        raw = restarted.raw_bounces()
        return [sum(_REPORT_ACTIONS[kind] in r for r in raw) for kind in reports]

    async def start_again() -> None:
        for entry in restarted.queue.open():
            restarted.worker.schedule(entry)
        await _run_until(restarted, lambda: all(counts()))

    asyncio.run(start_again())
    assert counts() == [1, 1]


@pytest.mark.parametrize("crashed_in", ["the message", "the success report"])
def test_a_local_copy_whose_record_a_crash_stopped_is_not_delivered_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crashed_in: str
) -> None:
    """RFC 5321 §6.1: a kill -9 between the rename into the Maildir and the ``sent``
    record leaves the recipient pending; the next start finds the copy in the mailbox
    (moved to ``cur/`` by its reader meanwhile) by its name and does not deliver it
    again, whether it was a local recipient that asked ``NOTIFY=SUCCESS`` or the
    report to a local sender."""
    setup = _setup(tmp_path, ZONE, 9)
    crashed: list[bool] = []
    update = setup.queue.update

    def update_or_crash(entry: QueueEntry) -> None:
        delivered = any(
            (r.reply or "").startswith("delivered to maildir") for r in entry.recipients
        )
        if delivered and (entry.report_on is None) == (crashed_in == "the message"):
            crashed.append(True)
            raise _Crash
        update(entry)

    monkeypatch.setattr(setup.queue, "update", update_or_crash)

    async def until_the_crash() -> None:
        _enqueue_dsn(
            setup, [QueuedRecipient("postmaster@abc.example", notify="SUCCESS")], new=True
        )
        await _run_until(setup, lambda: bool(crashed))

    asyncio.run(until_the_crash())
    monkeypatch.undo()
    for box in ("postmaster@abc.example", "john@abc.example"):
        for path in Maildir(setup.mailboxes.config.mailbox_path(box)).messages():
            path.rename(path.parent.parent / "cur" / f"{path.name}:2,S")
    restarted = _setup(tmp_path, ZONE, 9)

    async def start_again() -> None:
        for entry in restarted.queue.open():
            restarted.worker.schedule(entry)
        await _run_until(restarted, lambda: _queue_empty(restarted))

    asyncio.run(start_again())
    postmaster = Maildir(setup.mailboxes.config.mailbox_path("postmaster@abc.example"))
    (copy,) = postmaster.messages()
    assert copy.read_bytes().endswith(b"\n.leading dot\nbody\n")
    (raw,) = restarted.raw_bounces()
    assert b"Action: delivered" in raw
    assert b"Final-Recipient: rfc822; postmaster@abc.example" in raw


def test_a_success_report_says_delivered_and_only_the_log_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Maildir file's name holds this machine's own host name (not the server's
    ``hostname``) and how it stores mail: the sender, maybe remote, reads
    ``delivered to maildir`` (Postfix's words) in both parts of the report; the
    operator's log names the file, and the queue keeps what the report says."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    setup = _setup(tmp_path, ZONE, 9)
    kept: list[str | None] = []
    update = setup.queue.update

    def keep_replies(entry: QueueEntry) -> None:
        kept.extend(r.reply for r in entry.recipients if r.status is RecipientStatus.SENT)
        update(entry)

    setup.queue.update = keep_replies  # type: ignore[method-assign]  # watching its writes

    async def deliver() -> None:
        _enqueue_dsn(
            setup, [QueuedRecipient("postmaster@abc.example", notify="SUCCESS")], new=True
        )
        await _run_until(setup, lambda: _queue_empty(setup) and bool(setup.raw_bounces()))

    asyncio.run(deliver())
    postmaster = Maildir(setup.mailboxes.config.mailbox_path("postmaster@abc.example"))
    (copy,) = postmaster.messages()
    (raw,) = setup.raw_bounces()
    assert copy.name.encode() not in raw
    assert raw.count(b"delivered to maildir\n") == 2  # the text part and Diagnostic-Code
    assert b"Diagnostic-Code: x-local; delivered to maildir\n" in raw
    assert set(kept) == {"delivered to maildir"}
    (line,) = [r.getMessage() for r in caplog.records if "to=<postmaster@" in r.getMessage()]
    assert line.endswith(f"status=sent (delivered to maildir {copy.name})")


def _count_listings(monkeypatch: pytest.MonkeyPatch, under: Path) -> list[str]:
    """The directories under ``under`` that ``os.listdir`` or ``os.scandir`` reads from now."""
    listed: list[str] = []
    for name in ("listdir", "scandir"):
        real = getattr(os, name)

        def counted(path: Any = ".", *, real: Any = real) -> Any:
            if Path(path).is_relative_to(under):
                listed.append(Path(path).name)
            return real(path)

        monkeypatch.setattr(os, name, counted)
    return listed


def test_a_new_entrys_local_copies_are_written_without_listing_the_mailbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message this process queued cannot have a copy in a mailbox yet, so its copies
    (a recipient that asked NOTIFY=SUCCESS, then the success report) are written
    without the search for one, which listed the whole mailbox at every delivery. A
    second address naming a mailbox this round wrote into does look, and finds it."""
    setup = _setup(tmp_path, ZONE, 9)
    box = Maildir(setup.mailboxes.config.mailbox_path("john@abc.example"))
    listed = _count_listings(monkeypatch, box.path)

    async def main() -> None:
        recipients = [QueuedRecipient("john@abc.example", notify="SUCCESS")]
        _enqueue_dsn(setup, [*recipients, QueuedRecipient("John@abc.example")], new=True)
        await _run_until(setup, lambda: _queue_empty(setup))

    asyncio.run(main())
    assert listed == ["new"]  # the second address's search, finding the copy there
    monkeypatch.undo()
    copy, report = sorted(box.messages(), key=lambda p: b"Action: delivered" in p.read_bytes())
    assert copy.read_bytes().endswith(b"\n.leading dot\nbody\n")
    assert b"Final-Recipient: rfc822; john@abc.example" in report.read_bytes()


def test_a_copy_a_broken_round_wrote_is_found_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 5321 §6.1: a new message's round that breaks after its copy is written, before
    the record, leaves the recipient pending; the retry in this process looks for the
    copy (moved to ``cur/`` by its reader meanwhile), finds it, and does not write it
    twice."""
    setup = _setup(tmp_path, ZONE, 9, retry_after=0.01)
    broken: list[Path] = []

    def break_once(key: str, path: Path, queue_id: str) -> None:
        if not broken:
            broken.append(path.rename(path.parent.parent / "cur" / f"{path.name}:2,S"))
            raise RuntimeError("a bug between the write and its record")

    monkeypatch.setattr(setup.mailboxes, "delivered", break_once)

    async def main() -> None:
        _enqueue_dsn(setup, [QueuedRecipient("john@abc.example")], new=True)
        await _run_until(setup, lambda: _queue_empty(setup))

    asyncio.run(main())
    (copy,) = Maildir(setup.mailboxes.config.mailbox_path("john@abc.example")).messages()
    assert broken == [copy]


def test_a_worker_cancelled_as_it_is_woken_stops(tmp_path: Path) -> None:
    """On Python 3.11, ``asyncio.wait_for`` lost a cancellation that came as the event it
    waited on was set, and the worker's loop ran on: a round ending as the server
    stopped held the stop for ever (one run in fifteen of the success report tests).
    Woken, then cancelled one to four passes of the loop later: each run stops."""
    setup = _setup(tmp_path, ZONE, 1)
    setup.worker._due["later"] = setup.worker.monotonic() + 60  # a wait with a timeout

    async def main() -> None:
        for passes in range(1, 5):
            task = asyncio.get_running_loop().create_task(setup.worker.run())
            for _ in range(3):
                await asyncio.sleep(0)
            wakeup = setup.worker._wakeup
            assert wakeup is not None
            wakeup.set()
            for _ in range(passes):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)

    asyncio.run(main())
