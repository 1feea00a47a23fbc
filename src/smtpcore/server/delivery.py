"""The delivery worker: takes queued messages to the recipients' mail exchangers.

For each queued message whose time has come, every pending recipient is
routed (:mod:`smtpcore.routing`), the recipients of one domain go together
to that domain's exchangers, tried in the order RFC 5321 §5.1 gives, with
STARTTLS when the exchanger offers it (opportunistic, RFC 7435: the
certificate is not checked, as Postfix's ``may`` level does not). Then each
recipient is:

- sent, and recorded so at once, so that a restart cannot send it twice;
- refused for good (5xx), and given back to the sender in a bounce
  (:mod:`smtpcore.server.bounce`);
- or deferred (4xx, no exchanger reachable, DNS trouble), and retried after
  ``retry_after`` seconds, then twice as long each time (RFC 5321 §4.5.4.1),
  until the message is ``max_queue_age`` old and bounces as expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final, Protocol

from smtpcore._driver import (
    BaseSMTPClient,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    SMTPError,
    SMTPReplyError,
    Timeouts,
)
from smtpcore.address import AddressError, Mailbox, parse_mailbox
from smtpcore.asyncio import SMTPClient
from smtpcore.routing import (
    Attempt,
    FailedExchangers,
    LocalDelivery,
    RandomSource,
    Rejected,
    RejectReason,
    RemoteDelivery,
    Resolver,
    Router,
)
from smtpcore.server.bounce import (
    ReportedRecipient,
    build_bounce,
    build_success_report,
)
from smtpcore.server.log import delivery_line, logger
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.queue import Queue, QueuedRecipient, QueueEntry, RecipientStatus
from smtpcore.smtp import Reply

__all__ = ["ClientFactory", "DeliveryWorker", "backoff", "opportunistic_tls_context"]

MAX_BACKOFF: Final = 4000.0
"""The longest wait between two attempts (Postfix's ``maximal_backoff_time``), unless
``retry_after`` itself is longer."""


class ClientFactory(Protocol):
    """Builds the SMTP client for one connection (the demo passes one that narrates)."""

    def __call__(
        self,
        host: str,
        port: int,
        *,
        hostname: str,
        starttls: bool | None,
        ssl_context: ssl.SSLContext,
        server_hostname: str,
        timeouts: Timeouts,
    ) -> BaseSMTPClient: ...


def _default_client(
    host: str,
    port: int,
    *,
    hostname: str,
    starttls: bool | None,
    ssl_context: ssl.SSLContext,
    server_hostname: str,
    timeouts: Timeouts,
) -> BaseSMTPClient:
    return SMTPClient(
        host,
        port,
        hostname=hostname,
        starttls=starttls,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        timeouts=timeouts,
    )


def opportunistic_tls_context() -> ssl.SSLContext:
    """TLS that encrypts without checking who answers (RFC 7435 opportunistic security):
    MX records are not authenticated, so a name check would prove nothing."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def backoff(retry_after: float, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed round: ``retry_after``, doubling."""
    return min(retry_after * 2.0 ** max(attempts - 1, 0), max(retry_after, MAX_BACKOFF))


def _duration_text(seconds: float) -> str:
    """``5d``, ``1h``, ``90s``: how Postfix writes queue lifetimes."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _reply_text(reply: Reply) -> str:
    status = f" {reply.status}" if reply.status is not None else ""
    return f"{reply.code}{status} {' '.join(reply.lines)}".strip()


_STATUS_TEXT: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


def _reply_dsn(reply: Reply) -> str:
    """The reply's enhanced status; from its text when the server did not announce
    ENHANCEDSTATUSCODES but wrote one anyway, as many do; else ``X.0.0``."""
    if reply.status is not None:
        return str(reply.status)
    match = _STATUS_TEXT.match(" ".join(reply.lines))
    if match is not None and match.group(1) == str(reply.code)[0]:
        return match.group(0).strip()
    return f"{reply.code // 100}.0.0"


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one round did for one recipient."""

    status: RecipientStatus
    dsn: str
    detail: str
    relay: str = "none"
    remote_mta: str | None = None
    from_remote: bool = False
    tls: bool | None = None
    dsn_passed: bool = False
    """The next hop took the DSN parameters: reporting success is its job now."""


def _notify(recipient: QueuedRecipient, event: str) -> bool:
    """Whether the sender asked to hear of ``event`` for ``recipient`` (RFC 3461 §4.1;
    without NOTIFY, failures only)."""
    if recipient.notify is None:
        return event == "FAILURE"
    return event in recipient.notify.split(",")


class _TryNext(Exception):
    """This exchanger failed as a whole; the next one may do better."""

    def __init__(self, detail: str, dsn: str = "4.4.1", reply: Reply | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.dsn = dsn
        self.reply = reply


class DeliveryWorker:
    """Delivers the queue in the background; :meth:`run` until cancelled or :meth:`aclose`.

    ``router`` decides local or remote and where remote mail goes (its
    ``port`` is the remote port); ``mailboxes`` takes the bounces for local
    senders and any recipient that became local. Disk work runs in threads,
    so the event loop keeps serving sessions meanwhile.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        router: Router,
        resolver: Resolver,
        mailboxes: LocalMailboxes,
        hostname: str,
        retry_after: float = 300.0,
        max_queue_age: float = 5 * 86400.0,
        client_factory: ClientFactory = _default_client,
        timeouts: Timeouts | None = None,
        concurrency: int = 20,
        clock: Callable[[], float] = time.time,
        rng: RandomSource | None = None,
    ) -> None:
        self.queue = queue
        self.router = router
        self.resolver = resolver
        self.mailboxes = mailboxes
        self.hostname = hostname
        self.retry_after = retry_after
        self.max_queue_age = max_queue_age
        self.client_factory = client_factory
        self.timeouts = timeouts or Timeouts()
        self.concurrency = concurrency
        self.clock = clock
        self.rng: RandomSource = rng or random.SystemRandom()
        self.failures = FailedExchangers(time.monotonic)
        self.tls_context = opportunistic_tls_context()
        self._due: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._succeeded: dict[str, dict[str, _Outcome]] = {}
        """Per message in a round: recipients whose sender asked NOTIFY=SUCCESS."""
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None

    # -- scheduling -----------------------------------------------------------

    def schedule(self, entry: QueueEntry) -> None:
        """Deliver ``entry`` at its ``next_attempt`` (now, for a new message)."""
        self._due[entry.id] = entry.next_attempt
        if self._wakeup is not None:
            self._wakeup.set()

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
                    if len(self._running) >= self.concurrency:
                        break
                    if due <= now and queue_id not in self._running:
                        del self._due[queue_id]
                        task = asyncio.get_running_loop().create_task(self._process(queue_id))
                        self._running[queue_id] = task
                        task.add_done_callback(functools.partial(self._done, queue_id))
                waiting = [d for q, d in self._due.items() if q not in self._running]
                timeout = None
                if waiting and len(self._running) < self.concurrency:
                    timeout = max(min(waiting) - self.clock(), 0.0) + 0.01
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
        finally:
            self._wakeup = None

    def _done(self, queue_id: str, task: asyncio.Task[None]) -> None:
        self._running.pop(queue_id, None)
        if self._wakeup is not None:
            self._wakeup.set()

    async def aclose(self, grace: float = 10.0) -> None:
        """Let deliveries under way finish for up to ``grace`` seconds, then cancel them.

        The caller cancels the :meth:`run` task; what is left stays queued.
        """
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    # -- one message ----------------------------------------------------------

    async def _process(self, queue_id: str) -> None:
        try:
            await self._deliver(queue_id)
        except asyncio.CancelledError:
            raise
        except FileNotFoundError:
            logger.warning("%s: gone from the queue directory; forgotten", queue_id)
        except Exception:
            logger.exception("%s: delivery failed; retrying later", queue_id)
            self._due[queue_id] = self.clock() + self.retry_after
        finally:
            self._succeeded.pop(queue_id, None)  # reported at the end of a whole round only

    async def _deliver(self, queue_id: str) -> None:
        entry = await asyncio.to_thread(self.queue.load, queue_id)
        content = await asyncio.to_thread(self.queue.read_content, queue_id)
        if self.clock() >= entry.created + self.max_queue_age:
            await self._expire(entry, content)
            return
        failed: dict[str, _Outcome] = {}
        deferred: dict[str, _Outcome] = {}
        self._succeeded[entry.id] = {}
        groups: dict[tuple[str, tuple[str, int] | None], dict[str, RemoteDelivery]] = {}
        for recipient in entry.pending:
            decision = self._route(recipient.address)
            if isinstance(decision, RemoteDelivery):
                group = groups.setdefault((decision.domain, decision.smart_host), {})
                group[recipient.address] = decision
                continue
            if isinstance(decision, LocalDelivery):
                outcome = await self._deliver_local(entry, decision, content)
            else:
                outcome = self._rejected_outcome(decision)
            entry = await self._settle(entry, {recipient.address: outcome}, failed, deferred)
        for deliveries in groups.values():
            outcomes = await self._deliver_remote(entry, deliveries, content)
            entry = await self._settle(entry, outcomes, failed, deferred)
        await self._finish_round(entry, content, failed, deferred)

    def _route(self, address: str) -> LocalDelivery | RemoteDelivery | Rejected:
        try:
            mailbox = parse_mailbox(address)
        except AddressError:
            reason = RejectReason.NO_ROUTE
            return Rejected(553, "5.1.3", f"bad recipient address {address}", reason)
        return self.router.route(mailbox, authenticated=True)

    def _rejected_outcome(self, rejected: Rejected) -> _Outcome:
        status = RecipientStatus.PENDING if rejected.temporary else RecipientStatus.FAILED
        return _Outcome(
            status, rejected.status, f"{rejected.code} {rejected.status} {rejected.text}"
        )

    async def _settle(
        self,
        entry: QueueEntry,
        outcomes: Mapping[str, _Outcome],
        failed: dict[str, _Outcome],
        deferred: dict[str, _Outcome],
    ) -> QueueEntry:
        """Log each outcome and record what was sent at once (never twice after a crash);
        failures wait for the bounce at the end of the round."""
        sent: dict[str, QueuedRecipient] = {}
        recipients = {r.address: r for r in entry.recipients}
        succeeded = self._succeeded.setdefault(entry.id, {})
        delay = self.clock() - entry.created
        for address, outcome in outcomes.items():
            label = {
                RecipientStatus.SENT: "sent",
                RecipientStatus.FAILED: "bounced",
                RecipientStatus.PENDING: "deferred",
            }[outcome.status]
            logger.info(
                delivery_line(
                    entry.id,
                    address,
                    relay=outcome.relay,
                    delay=delay,
                    dsn=outcome.dsn,
                    status=label,
                    detail=outcome.detail,
                    tls=outcome.tls,
                )
            )
            if outcome.status is RecipientStatus.SENT:
                sent[address] = _updated(recipients[address], outcome)
                if _notify(recipients[address], "SUCCESS") and not outcome.dsn_passed:
                    succeeded[address] = outcome
            elif outcome.status is RecipientStatus.FAILED:
                failed[address] = outcome
            else:
                deferred[address] = outcome
        if sent:
            entry = entry.with_recipients(sent)
            await asyncio.to_thread(self.queue.update, entry)
        return entry

    async def _finish_round(
        self,
        entry: QueueEntry,
        content: bytes,
        failed: Mapping[str, _Outcome],
        deferred: Mapping[str, _Outcome],
    ) -> None:
        if failed:
            await self._bounce(entry, content, failed)
        succeeded = self._succeeded.pop(entry.id, {})
        if succeeded:
            await self._report_success(entry, content, succeeded)
        recipients = {r.address: r for r in entry.recipients}
        updates = {
            address: _updated(recipients[address], outcome)
            for address, outcome in {**failed, **deferred}.items()
        }
        entry = entry.with_recipients(updates)
        if not entry.pending:
            await asyncio.to_thread(self.queue.remove, entry.id)
            logger.info("%s: removed", entry.id)
            return
        attempts = entry.attempts + 1
        entry = replace(
            entry,
            attempts=attempts,
            next_attempt=self.clock() + backoff(self.retry_after, attempts),
        )
        await asyncio.to_thread(self.queue.update, entry)
        self.schedule(entry)

    async def _expire(self, entry: QueueEntry, content: bytes) -> None:
        age = _duration_text(self.max_queue_age)
        failed = {}
        for recipient in entry.pending:
            last = recipient.reply or "no attempt succeeded"
            failed[recipient.address] = _Outcome(
                RecipientStatus.FAILED,
                recipient.dsn if recipient.dsn and recipient.dsn[0] == "4" else "4.4.7",
                f"message expired after {age} in the queue; last error: {last}",
                remote_mta=recipient.remote_mta,
            )
        await self._settle(entry, failed, {}, {})
        await self._finish_round(entry, content, failed, {})

    # -- local ------------------------------------------------------------------

    async def _deliver_local(
        self, entry: QueueEntry, decision: LocalDelivery, content: bytes
    ) -> _Outcome:
        """A recipient that is local now (the domain became local after a restart)."""
        key = self.mailboxes.lookup(decision.mailbox)
        if key is None:
            return _Outcome(
                RecipientStatus.FAILED, "5.1.1", "550 5.1.1 no such mailbox here", "local"
            )
        path = await asyncio.to_thread(self.mailboxes.deliver, key, entry.sender, content)
        return _Outcome(RecipientStatus.SENT, "2.0.0", f"delivered to maildir {path}", "local")

    # -- remote -----------------------------------------------------------------

    async def _deliver_remote(
        self, entry: QueueEntry, deliveries: Mapping[str, RemoteDelivery], content: bytes
    ) -> dict[str, _Outcome]:
        addresses = list(deliveries)
        attempts = await self.router.resolve(
            next(iter(deliveries.values())), self.resolver, rng=self.rng, failures=self.failures
        )
        if isinstance(attempts, Rejected):
            outcome = self._rejected_outcome(attempts)
            return dict.fromkeys(addresses, outcome)
        last = _TryNext("no exchanger to try")
        relay = "none"
        for number, attempt in enumerate(attempts, 1):
            relay = f"{attempt.host}[{attempt.address}]:{attempt.port}"
            try:
                return await self._transaction(attempt, relay, entry, deliveries, content)
            except _TryNext as failure:
                self.failures.mark_bad(attempt.host)
                if number < len(attempts):
                    logger.info("%s: %s; trying the next exchanger", entry.id, failure.detail)
                last = failure
        return dict.fromkeys(
            addresses,
            _Outcome(
                RecipientStatus.PENDING,
                last.dsn,
                last.detail,
                relay,
                remote_mta=attempts[-1].host if attempts else None,
                from_remote=last.reply is not None,
            ),
        )

    def _client(self, attempt: Attempt, starttls: bool | None) -> BaseSMTPClient:
        return self.client_factory(
            str(attempt.address),
            attempt.port,
            hostname=self.hostname,
            starttls=starttls,
            ssl_context=self.tls_context,
            server_hostname=attempt.host,
            timeouts=self.timeouts,
        )

    async def _connect(self, attempt: Attempt, relay: str) -> BaseSMTPClient:
        client = self._client(attempt, None)
        try:
            await client.connect()
            return client
        except SMTPError as exc:
            if not isinstance(exc.__cause__, ssl.SSLError):
                raise _TryNext(self._error_text(exc, relay), reply=exc.reply) from exc
            logger.info("%s: TLS failed (%s); trying without TLS", relay, exc)
        # Opportunistic TLS falls back to plaintext when the handshake fails (RFC 7435 §3).
        client = self._client(attempt, False)
        try:
            await client.connect()
        except SMTPError as exc:
            raise _TryNext(self._error_text(exc, relay), reply=exc.reply) from exc
        return client

    def _error_text(self, exc: SMTPError, relay: str) -> str:
        if isinstance(exc, SMTPReplyError):
            return f"host {relay} refused {exc.command}: {_reply_text(exc.reply)}"
        cause = exc.__cause__
        if str(exc).startswith("cannot connect") and isinstance(cause, OSError) and cause.errno:
            return f"connect to {relay}: {os.strerror(cause.errno)}"
        return f"{relay}: {exc}"

    async def _transaction(
        self,
        attempt: Attempt,
        relay: str,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: bytes,
    ) -> dict[str, _Outcome]:
        client = await self._connect(attempt, relay)
        tls = client.connection.tls
        addresses = list(deliveries)
        rcpts = [d.mailbox for d in deliveries.values()]

        def outcome(reply: Reply) -> _Outcome:
            if reply.is_positive:
                status = RecipientStatus.SENT
            elif reply.code >= 500:
                status = RecipientStatus.FAILED
            else:
                status = RecipientStatus.PENDING
            return _Outcome(
                status,
                _reply_dsn(reply),
                _reply_text(reply),
                relay,
                attempt.host,
                from_remote=True,
                tls=tls,
                dsn_passed=passed,
            )

        sender: Mailbox | str = "" if not entry.sender else parse_mailbox(entry.sender)
        # RFC 3461 §6.2: to a server that speaks DSN, the parameters go on with the message.
        passed = client.connection.extensions.dsn
        mail_params: dict[str, str | None] = {}
        rcpt_params: dict[Mailbox, dict[str, str | None]] = {}
        if passed:
            mail_params = {k: v for k, v in entry.params if k in ("RET", "ENVID")}
            queued = {r.address: r for r in entry.recipients}
            for address, delivery in deliveries.items():
                recipient = queued[address]
                params = rcpt_params.setdefault(delivery.mailbox, {})
                if recipient.notify is not None:
                    params["NOTIFY"] = recipient.notify
                if recipient.orcpt is not None:
                    params["ORCPT"] = recipient.orcpt
        try:
            result = await client.send_message(
                content,
                sender,
                rcpts,
                mail_params=mail_params,
                rcpt_params=lambda mailbox: rcpt_params.get(mailbox, {}),
            )
        except SenderRefused as exc:
            await client.quit()
            if exc.reply.code < 500:
                raise _TryNext(
                    self._error_text(exc, relay), _reply_dsn(exc.reply), exc.reply
                ) from exc
            return dict.fromkeys(addresses, outcome(exc.reply))
        except (RecipientsRefused, MessageRefused) as exc:
            await client.quit()
            outcomes = dict.fromkeys(addresses, outcome(exc.reply))
            if exc.result is not None:
                for address, item in zip(addresses, exc.result.recipients, strict=False):
                    if item.reply is not None and not item.reply.is_positive:
                        outcomes[address] = outcome(item.reply)
            return outcomes
        except SMTPError as exc:
            await client.quit()
            raise _TryNext(self._error_text(exc, relay), reply=exc.reply) from exc
        await client.quit()
        outcomes = {}
        for address, item in zip(addresses, result.recipients, strict=True):
            reply = item.delivery if item.accepted else item.reply
            assert reply is not None
            outcomes[address] = outcome(reply)
        return outcomes

    # -- bounces ----------------------------------------------------------------

    async def _bounce(
        self, entry: QueueEntry, content: bytes, failed: Mapping[str, _Outcome]
    ) -> None:
        """Tell the sender, unless it is the null sender (RFC 5321 §4.5.5) or asked not
        to hear of these failures (``NOTIFY``, RFC 3461 §4.1)."""
        if not entry.sender:
            logger.info("%s: null sender: no bounce for %d recipients", entry.id, len(failed))
            return
        recipients = {r.address: r for r in entry.recipients}
        wanted = {a: o for a, o in failed.items() if _notify(recipients[a], "FAILURE")}
        if len(wanted) < len(failed):
            logger.info(
                "%s: no bounce for %d recipients: NOTIFY did not ask for one",
                entry.id,
                len(failed) - len(wanted),
            )
        if not wanted:
            return
        bounce = build_bounce(
            reporting_mta=self.hostname,
            recipient=entry.sender,
            queue_id=entry.id,
            arrival=entry.created,
            now=self.clock(),
            failed=[
                ReportedRecipient(
                    address,
                    outcome.dsn if outcome.dsn[0] in "45" else "5.0.0",
                    outcome.detail,
                    outcome.remote_mta,
                    outcome.from_remote,
                    original_recipient=recipients[address].orcpt,
                )
                for address, outcome in wanted.items()
            ],
            original=content,
            envid=entry.param("ENVID"),
            headers_only=(entry.param("RET") or "").upper() == "HDRS",
        )
        await self.send_report(entry.id, entry.sender, bounce, "non-delivery")

    async def _report_success(
        self, entry: QueueEntry, content: bytes, succeeded: Mapping[str, _Outcome]
    ) -> None:
        """The report ``NOTIFY=SUCCESS`` asked for: delivered here, or relayed to a
        server that does not speak DSN (RFC 3461 §6.2)."""
        if not entry.sender:
            return
        recipients = {r.address: r for r in entry.recipients}
        report = build_success_report(
            reporting_mta=self.hostname,
            recipient=entry.sender,
            queue_id=entry.id,
            arrival=entry.created,
            now=self.clock(),
            reported=[
                ReportedRecipient(
                    address,
                    outcome.dsn if outcome.dsn[:1] == "2" else "2.0.0",
                    outcome.detail,
                    outcome.remote_mta,
                    outcome.from_remote,
                    action="delivered" if outcome.relay == "local" else "relayed",
                    original_recipient=recipients[address].orcpt,
                )
                for address, outcome in succeeded.items()
            ],
            original=content,
            envid=entry.param("ENVID"),
        )
        await self.send_report(entry.id, entry.sender, report, "success")

    async def send_report(self, queue_id: str, sender: str, report: bytes, kind: str) -> None:
        """Hand a delivery status notification to ``sender``: into its mailbox when it
        is local (a postmaster's when it has none), else into the queue, from ``<>``."""
        decision = self._route(sender)
        if isinstance(decision, LocalDelivery):
            key = self.mailboxes.lookup(decision.mailbox)
            if key is None:
                key = self.mailboxes.config.postmaster_key(self.mailboxes.config.domains[0])
                logger.info("%s: sender <%s> has no mailbox; report to %s", queue_id, sender, key)
            path = await asyncio.to_thread(self.mailboxes.deliver, key, "", report)
            logger.info("%s: sender %s notification: delivered to %s", queue_id, kind, path)
            return
        queued = await asyncio.to_thread(self.queue.add, report, "", [sender])
        logger.info("%s: sender %s notification: %s", queue_id, kind, queued.id)
        self.schedule(queued)


def _updated(recipient: QueuedRecipient, outcome: _Outcome) -> QueuedRecipient:
    """``recipient`` as ``outcome`` leaves it; its DSN parameters stay."""
    return replace(
        recipient,
        status=outcome.status,
        reply=outcome.detail,
        dsn=outcome.dsn,
        remote_mta=outcome.remote_mta,
    )
