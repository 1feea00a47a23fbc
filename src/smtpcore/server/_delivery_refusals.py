"""The refusals of a queued message whose sender or recipient no longer parses (queued
under an older rule, or by hand): this server's policy, for good (RFC 3463 §3.2).
Apart because they read only the envelope's addresses."""

from __future__ import annotations

from smtpcore.address import AddressError, parse_mailbox
from smtpcore.server._exchanger_outcomes import Outcome
from smtpcore.server.log import printable
from smtpcore.server.queue import RecipientStatus

__all__ = ["_recipient_refusal", "_sender_refusal"]


def _sender_refusal(sender: str) -> Outcome | None:
    """The outcome of each remote recipient of a message whose queued sender no longer
    parses (queued under an older rule, or by hand): it cannot go out in MAIL FROM, so
    the recipient fails for good, 553 5.1.7 (RFC 3463 §3.2), rather than wait for ever.
    A local recipient needs no MAIL FROM and is delivered, with the null Return-Path
    (:func:`~smtpcore.server.trace.return_path_header`). The refusal is this server's
    policy, which changed after the message was accepted, not the sender's choice: it
    is reported whatever NOTIFY and RET asked (:attr:`Outcome.server_policy`), to the
    postmaster, since nothing can go to that sender
    (:meth:`SenderReports._postmaster_instead
    <smtpcore.server.reports.SenderReports._postmaster_instead>`).
    None for a sender that parses, and for the null sender."""
    if not sender:
        return None
    try:
        parse_mailbox(sender)
    except AddressError:
        detail = f"553 5.1.7 bad sender address {printable(sender)}"
        return Outcome(RecipientStatus.FAILED, "5.1.7", detail, server_policy=True)
    return None


def _recipient_refusal(address: str) -> Outcome | None:
    """The outcome of a queued recipient that no longer parses (queued under an older
    rule, or by hand): it fails for good, 553 5.1.3 (RFC 3463 §3.2). As for a sender
    (:func:`_sender_refusal`), the refusal is this server's policy, which changed after
    the message was accepted: the postmaster is told whatever NOTIFY and RET asked
    (:attr:`Outcome.server_policy`), the sender only if NOTIFY asked. None for a
    recipient that parses."""
    try:
        parse_mailbox(address)
    except AddressError:
        detail = f"553 5.1.3 bad recipient address {printable(address)}"
        return Outcome(RecipientStatus.FAILED, "5.1.3", detail, server_policy=True)
    return None
