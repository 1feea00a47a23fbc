"""Which recipients go again, at once, in a new transaction of the same session.

RFC 5321 §4.5.3.1.10: a server whose limit on recipients in one transaction is
reached answers the RCPTs past it ``452``, and the client SHOULD send those in a
new transaction (§3.3: ``MAIL`` again, the same content) rather than wait to
retry them. These pure functions decide which, from a transaction's result; the
client's loop over transactions (LIMITS batches, RFC 9422 §4.2) sends them.
"""

from __future__ import annotations

from collections.abc import Sequence

from smtpcore.smtp import EnhancedStatus, Rcpt, Reply, TransactionResult

__all__ = ["to_send_again", "too_many_recipients"]

_TOO_MANY: EnhancedStatus = EnhancedStatus(4, 5, 3)
"""RFC 3463 §3.6: X.5.3, too many recipients."""


def too_many_recipients(reply: Reply) -> bool:
    """Whether a reply to RCPT says the transaction's limit was reached: ``452``
    (RFC 5321 §4.5.3.1.10) with ``4.5.3`` or no enhanced status. A ``452 4.2.2``
    (mailbox full) or ``4.3.1`` (system storage) is about the recipient or the
    server, which a new transaction at once would not change. RFC 821's ``552``
    for the same limit is not counted: it waits, as before."""
    return reply.code == 452 and reply.status in (None, _TOO_MANY)


def to_send_again(
    batch: Sequence[Rcpt], result: TransactionResult
) -> tuple[list[Rcpt], TransactionResult]:
    """The RCPTs of ``batch`` to send at once in a new transaction, and ``result``
    without them (their fate is the new transaction's: each recipient appears once
    in a message's results). Those are the ones refused as past the server's limit,
    when the transaction delivered to someone: one that delivered to none made no
    progress, and a new one would fare no better. So each new transaction has fewer
    recipients than the one it comes of, and the sending again ends. ``result``
    answers ``batch`` in order, one entry per RCPT sent."""
    if not result.delivered:
        return [], result
    again: list[Rcpt] = []
    kept = []
    for rcpt, item in zip(batch, result.recipients, strict=False):
        if item.reply is not None and too_many_recipients(item.reply):
            again.append(rcpt)
        else:
            kept.append(item)
    if not again:
        return again, result
    rest = TransactionResult(
        result.sender,
        result.mail_reply,
        tuple(kept),
        result.data_reply,
        result.end_replies,
        complete=result.complete,
    )
    return again, rest
