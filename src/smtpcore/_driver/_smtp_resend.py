"""Which recipients go again, at once, in a new transaction of the same session.

A server whose limit on recipients in one transaction is reached answers the
RCPTs past it ``452`` (RFC 5321 §4.5.3.1.10, which corrects RFC 821's ``552``),
and a client with more recipients than the server takes in one transaction
SHOULD send them in "chunks" (§4.5.3.1.8, of 100, the least a server must take):
the rest in a new transaction (§3.3: ``MAIL`` again, the same content) rather
than wait to retry them. These pure functions decide which, from a transaction's
result; the client's loop over transactions (LIMITS batches, RFC 9422 §4.2)
sends them.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from smtpcore.smtp import EnhancedStatus, Rcpt, Reply, TransactionResult

__all__ = ["any_too_many", "to_send_again", "too_many_recipients"]

_TOO_MANY: EnhancedStatus = EnhancedStatus(4, 5, 3)
"""RFC 3463 §3.6: X.5.3, too many recipients."""

_REPLY = attrgetter("reply")
_CODE = attrgetter("code")


def any_too_many(result: TransactionResult) -> bool:
    """Whether any RCPT of ``result`` was answered ``452``: the test every transaction
    of a ``resend_too_many`` message pays, made in C over the replies' codes (a
    transaction that needs no more stops here, however many its recipients)."""
    return 452 in map(_CODE, filter(None, map(_REPLY, result.recipients)))


def too_many_recipients(reply: Reply) -> bool:
    """Whether a reply to RCPT says the transaction's limit was reached: ``452``
    (RFC 5321 §4.5.3.1.10: the code for too many recipients) with ``4.5.3`` or no
    enhanced status. A ``452 4.2.2`` (mailbox full) or ``4.3.1`` (system storage)
    is about the recipient or the server, which a new transaction at once would
    not change. RFC 821's ``552`` for the same limit is not counted: it waits, as
    before."""
    return reply.code == 452 and reply.status in (None, _TOO_MANY)


def to_send_again(
    batch: Sequence[Rcpt], result: TransactionResult
) -> tuple[list[Rcpt], TransactionResult]:
    """The RCPTs of ``batch`` to send at once in a new transaction, and ``result``
    without them (their fate is the new transaction's: each recipient appears once
    in a message's results): those refused as past the server's limit.

    ``result`` answers ``batch`` in order, one entry per RCPT sent, and is of a
    transaction that delivered to someone (the client raises for one that
    delivered to none): so the RCPTs to send again are fewer than ``batch``'s, and
    sending again ends."""
    again: list[Rcpt] = []
    kept = []
    for rcpt, item in zip(batch, result.recipients, strict=False):
        if item.reply is not None and too_many_recipients(item.reply):
            again.append(rcpt)
        else:
            kept.append(item)
    if not again:
        return again, result
    assert kept, "a transaction that delivered to none is refused, never sent again"
    rest = TransactionResult(
        result.sender,
        result.mail_reply,
        tuple(kept),
        result.data_reply,
        result.end_replies,
        complete=result.complete,
    )
    return again, rest
