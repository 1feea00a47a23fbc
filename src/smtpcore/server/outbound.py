"""One domain's recipients taken to its mail exchangers: where they are (resolved
within a time limit, never to an internal address unless through the smart host),
tried in the order RFC 5321 §5.1 gives, each with the TLS the relay policy and the
message ask for (:mod:`smtpcore.server.relay_tls`), until none is left to take a
recipient; what each recipient's outcome is then, with the last exchanger's words.
One session with one exchanger is :mod:`smtpcore.server.exchanger`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from smtpcore.routing import (
    Attempt,
    FailedExchangers,
    RandomSource,
    Rejected,
    RejectReason,
    RemoteDelivery,
    Resolver,
    Router,
)
from smtpcore.server.cutshort import RoundProgress
from smtpcore.server.deadhops import DeadHops
from smtpcore.server.exchanger import ExchangerSession, Outcome, Recorder, TryNext, transcribe
from smtpcore.server.internal import InternalAddresses
from smtpcore.server.log import loggable, logger
from smtpcore.server.places import destination
from smtpcore.server.queue import QueuedContent, QueueEntry, RecipientStatus
from smtpcore.server.relay_tls import RelayTLS, message_tls
from smtpcore.server.settlement import rejected_outcome
from smtpcore.server.waits import ThreadShare, stray_cancellation, within

__all__ = ["OutboundDelivery", "RelayingWorker"]


class RelayingWorker(Protocol):
    """What the outbound deliveries read of the delivery worker, at each delivery: its
    router and resolver may change while it runs."""

    router: Router
    resolver: Resolver
    rng: RandomSource
    failures: FailedExchangers
    dead_hops: DeadHops
    resolve_timeout: float
    internal: InternalAddresses
    relay_tls: RelayTLS
    exchanger: ExchangerSession
    disk: ThreadShare


class OutboundDelivery:
    """The remote deliveries of one :class:`~smtpcore.server.delivery.DeliveryWorker`
    (``worker``)."""

    def __init__(self, worker: RelayingWorker) -> None:
        self.worker = worker

    async def outcomes(
        self,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        record: Recorder,
        progress: RoundProgress | None = None,
    ) -> dict[str, Outcome]:
        """The outcomes :meth:`DeliveryWorker._deliver_remote
        <smtpcore.server.delivery.DeliveryWorker._deliver_remote>` has not recorded yet;
        each exchanger tried is named in ``progress``, and an end of data a stop left
        unanswered, for the lines a stop logs (:mod:`smtpcore.server.cutshort`)."""
        addresses = list(deliveries)
        delivery = next(iter(deliveries.values()))
        refused: list[Attempt] = []

        def internal(attempt: Attempt) -> bool:
            if self.worker.internal.refused(attempt.address):
                refused.append(attempt)
                return True
            return False

        # The internal-address rule (smtpcore.server.internal) is applied by routing,
        # before the list is cut to its length: internal addresses at the best level
        # must not take the places of a less preferred exchanger's public ones. The
        # smart host is the operator's choice, not a user's: the rule keeps users out
        # of the network, not him.
        exclude = internal if delivery.smart_host is None else None
        attempts = await self._resolve(entry, delivery, exclude)
        if refused:
            names = ", ".join(sorted({f"{a.host}[{a.address}]" for a in refused}))
            logger.info("%s: not connecting to internal addresses: %s", entry.id, loggable(names))
            if isinstance(attempts, Rejected) and attempts.reason is RejectReason.NO_ROUTE:
                return dict.fromkeys(
                    addresses,
                    Outcome(
                        RecipientStatus.FAILED,
                        "5.4.4",
                        f"554 5.4.4 the exchangers resolve only to internal addresses ({names});"
                        " relay to internal networks is not allowed here",
                    ),
                )
        if isinstance(attempts, Rejected):
            outcome = rejected_outcome(attempts)
            return dict.fromkeys(addresses, outcome)
        header = await self.worker.disk.run(content.header)
        policy = message_tls(self.worker.relay_tls, requiretls=entry.requiretls, header=header)
        failed: list[_ExchangerFailure] = []  # each exchanger that failed as a whole
        relay = "none"
        unmet: list[str] = []  # why each exchanger did not meet the message's REQUIRETLS
        unreachable = 0  # exchangers that could not be reached or would not talk
        hop = destination(delivery)
        deferred: dict[str, Outcome] = {}
        remaining = dict(deliveries)

        async def record_final(outcomes: Mapping[str, Outcome]) -> None:
            await record(
                {a: o for a, o in outcomes.items() if o.status is not RecipientStatus.PENDING}
            )

        for number, attempt in enumerate(attempts, 1):
            relay = f"{attempt.host}[{attempt.address}]:{attempt.port}"
            if progress is not None:
                progress.trying(remaining, relay)
            try:
                outcomes = await self.worker.exchanger.deliver(
                    attempt,
                    relay,
                    entry,
                    remaining,
                    content,
                    policy,
                    record_final,
                    cut_after_end=None if progress is None else progress.end_unanswered,
                )
            except TryNext as failure:
                if failure.requiretls:
                    unmet.append(failure.detail)
                else:
                    self.worker.failures.mark_bad(attempt.host)
                if failure.unreachable:
                    unreachable += 1
                else:  # it answered, and failed only this message or this session
                    self.worker.dead_hops.reached(hop)
                remaining = {a: d for a, d in remaining.items() if a not in failure.settled}
                if not remaining:
                    return {}
                if number < len(attempts):
                    logger.info(
                        "%s: %s; trying the next exchanger", entry.id, loggable(failure.detail)
                    )
                failed.append(_ExchangerFailure(failure, relay, attempt.host))
                continue
            # It answered: no longer tried last in its level (FailedExchangers).
            self.worker.failures.mark_good(attempt.host)
            self.worker.dead_hops.reached(hop)
            # A recipient this exchanger deferred (a 4xx to RCPT, or after the content)
            # goes to the next one, as Postfix keeps soft-failed recipients for the
            # next server; the last one's reply stands.
            deferred.update(
                {a: o for a, o in outcomes.items() if o.status is RecipientStatus.PENDING}
            )
            remaining = {
                a: d for a, d in remaining.items() if outcomes[a].status is RecipientStatus.PENDING
            }
            if not remaining:
                return {}
            if number < len(attempts):
                logger.info(
                    "%s: %s deferred %d recipient(s); trying the next exchanger",
                    entry.id,
                    loggable(relay),
                    len(remaining),
                )
        # Every exchanger failed for a reason that will not pass: a 5xx to EHLO and
        # HELO, or the message's REQUIRETLS unmet. No MX may take the mail later (RFC
        # 5321 §5.1), so it goes back now rather than wait for its expiry.
        never = bool(attempts) and len(failed) == len(attempts)
        never = never and all(f.failure.permanent or f.failure.requiretls for f in failed)
        if never and not unmet:
            # Refused for good everywhere: the last one's word stands, as a 5xx to
            # RCPT would (§4.2.1).
            return dict.fromkeys(remaining, _failure_outcome(failed[-1], RecipientStatus.FAILED))
        failure_outcome = _failure_outcome(_waiting_failure(failed), RecipientStatus.PENDING)
        if attempts and unreachable == len(attempts):
            # Not one exchanger of the domain would talk: a run of these suspends the
            # destination (smtpcore.server.deadhops).
            self.worker.dead_hops.failed(hop, failure_outcome)
        if len(remaining) < len(deliveries) or deferred:
            # Some exchanger answered for some: the others wait, each with its reply.
            return {a: deferred.get(a, failure_outcome) for a in remaining}
        if never:
            # RFC 8689 §4.2.1, §5: no exchanger qualifies (the others refused this client
            # for good), so the message is not sent at all, and goes back to its sender
            # (a connection that failed otherwise might qualify later: then it waits).
            detail = "; ".join(dict.fromkeys(unmet))
            return dict.fromkeys(
                addresses,
                Outcome(
                    RecipientStatus.FAILED,
                    "5.7.30",
                    f"550 5.7.30 REQUIRETLS support required: {detail}",
                    relay,
                    remote_mta=attempts[-1].host,
                    tls_policy=policy.label,
                ),
            )
        return dict.fromkeys(addresses, failure_outcome)

    async def _resolve(
        self,
        entry: QueueEntry,
        delivery: RemoteDelivery,
        exclude: Callable[[Attempt], bool] | None,
    ) -> tuple[Attempt, ...] | Rejected:
        """Where ``delivery`` goes (less what ``exclude`` leaves out, see
        :meth:`Router.resolve`), found within the worker's
        :attr:`~smtpcore.server.delivery.DeliveryWorker.resolve_timeout` seconds: a
        resolver that has not answered by then failed temporarily, as one that times
        out itself does (the ``Resolver`` contract's ``TemporaryDNSError``). So did one
        whose lookup was cancelled while this round was not (a future of its own
        cancelled): let through, that ended the round and left the message unscheduled
        until a restart. The round's own cancellation (a stop) is never lost, even as
        the answer comes (:func:`~smtpcore.server.waits.within`)."""
        name = delivery.domain if delivery.smart_host is None else delivery.smart_host[0]
        try:
            return await within(
                self.worker.router.resolve(
                    delivery,
                    self.worker.resolver,
                    rng=self.worker.rng,
                    failures=self.worker.failures,
                    exclude=exclude,
                ),
                self.worker.resolve_timeout,
            )
        except asyncio.TimeoutError:
            why = "no answer in time"
        except asyncio.CancelledError:
            if not stray_cancellation():
                raise
            why = "the lookup was cancelled"
        logger.warning("%s: resolving %s: %s", entry.id, loggable(name), why)
        return Rejected(
            451,
            "4.4.3",
            f"temporary DNS failure looking up {name}: {why}",
            RejectReason.DNS_TEMPORARY,
        )


@dataclass(frozen=True, slots=True)
class _ExchangerFailure:
    """An exchanger that failed as a whole in a round (:class:`TryNext`), and where."""

    failure: TryNext
    relay: str
    host: str | None


_NO_EXCHANGER: Final = _ExchangerFailure(TryNext("no exchanger to try"), "none", None)


def _waiting_failure(failed: Sequence[_ExchangerFailure]) -> _ExchangerFailure:
    """The failure a waiting recipient carries: the last one that may pass (a 4xx, a
    connection lost or refused), which is why the mail waits and what an expiry
    reports; the last failure of all where every one was permanent."""
    temporary = [f for f in failed if not f.failure.permanent]
    return (temporary or list(failed) or [_NO_EXCHANGER])[-1]


def _failure_outcome(failed: _ExchangerFailure, status: RecipientStatus) -> Outcome:
    """A recipient's when no exchanger took it, with ``failed``'s reply and status."""
    failure = failed.failure
    # The server's own reply for a Diagnostic-Code of type smtp (RFC 3464 §2.3.6), as
    # for a recipient's; else what went wrong.
    text, breaks = (failure.detail, ()) if failure.reply is None else transcribe(failure.reply)
    return Outcome(
        status,
        failure.dsn,
        text,
        failed.relay,
        remote_mta=failed.host,
        from_remote=failure.reply is not None and not failure.local,
        detail_breaks=breaks,
    )
