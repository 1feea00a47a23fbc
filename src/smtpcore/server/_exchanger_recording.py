"""Outcomes recorded as soon as an exchanger gives them: each recipient matched to the
reply that answers it (never by position: RFC 9422 LIMITS splits a message into
transactions), each LIMITS transaction's recorded as it ends. Apart from the session,
which only hands its results here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from smtpcore._driver._smtp_matching import match_results
from smtpcore.routing import RemoteDelivery
from smtpcore.server._exchanger_outcomes import Outcome, _OutcomeOf
from smtpcore.server.queue import RecipientStatus
from smtpcore.smtp import (
    RecipientResult,
    TransactionResult,
)

__all__ = ["Recorder", "_batch_recorder", "_fates", "_once", "_own_outcome"]

Recorder = Callable[[Mapping[str, Outcome]], Awaitable[None]]
"""Records outcomes as soon as an exchanger gives them (see ``ExchangerSession.deliver``)."""


def _once(record: Recorder) -> Recorder:
    """``record``, given each address once: a LIMITS transaction's outcomes are recorded
    as it ends, and again among the session's."""
    recorded: set[str] = set()

    async def once(outcomes: Mapping[str, Outcome]) -> None:
        fresh = {a: o for a, o in outcomes.items() if a not in recorded}
        recorded.update(fresh)
        if fresh:
            await record(fresh)

    return once


def _batch_recorder(
    deliveries: Mapping[str, RemoteDelivery], record: Recorder, outcome: _OutcomeOf
) -> Callable[[TransactionResult], Awaitable[None]]:
    """The client's ``on_batch``: each LIMITS transaction's delivered and refused-for-good
    recipients recorded as it ends (RFC 9422 §4.2), matched among every transaction's
    so far (``_fates``)."""
    results: list[RecipientResult] = []

    async def on_batch(result: TransactionResult) -> None:
        results.extend(result.recipients)
        mine = set(map(id, result.recipients))
        decided = {}
        for address, item in _fates(deliveries, results).items():
            fate = _own_outcome(item, outcome) if id(item) in mine else None
            if fate is not None and fate.status is not RecipientStatus.PENDING:
                decided[address] = fate
        await record(decided)

    return on_batch


def _fates(
    deliveries: Mapping[str, RemoteDelivery], results: Iterable[RecipientResult]
) -> dict[str, RecipientResult]:
    """Each address's result, matched by the recipient it answers (``match_results``,
    shared with ``send``): a message split into transactions (RFC 9422 LIMITS) may have
    results from some of them only, so a position says nothing, and a UTF-8 domain may
    have gone in A-labels."""
    return match_results(((a, d.mailbox) for a, d in deliveries.items()), results)


def _own_outcome(item: RecipientResult, outcome: _OutcomeOf) -> Outcome | None:
    """The outcome of the reply that decided a recipient's fate: its RCPT's refusal (or
    its LIMITS transaction's MAIL's, which is read as a reply to MAIL), or once accepted
    the reply after the content; None while unknown."""
    if item.accepted:
        return None if item.delivery is None else outcome(item.delivery)
    return None if item.reply is None else outcome(item.reply, to_rcpt=not item.mail_refused)
