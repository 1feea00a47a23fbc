"""Delivery status notifications: bounces, and the success reports DSN asks for.

A report is a ``multipart/report`` message (RFC 6522) of report type
``delivery-status`` (RFC 3464): a text part for people, a
``message/delivery-status`` part for programs, and the message (or only
its header: when it is large, when the sender asked ``RET=HDRS``, and
always in a success report, RFC 3461 §4.3). A report on an
internationalised message (SMTPUTF8, or a UTF-8 address) follows RFC 6533:
``message/global-delivery-status`` with UTF-8 fields, ``message/global``
or ``message/global-headers``, and addresses in ``utf-8;`` form. A message whose header
holds raw UTF-8, sent without SMTPUTF8 as some mailers do, comes back as
``message/global`` (or ``message/global-headers``) too, in an otherwise ASCII report
that needs no SMTPUTF8 to travel (:func:`returned_type`). It goes to the original sender
with the null reverse path, so that it can never cause a report of its own
(RFC 5321 §4.5.5), or to the postmaster on its behalf, whose report names it only
in its text; mail that arrived with the null sender gets none. So a
report that cannot be sent is lost: one that holds 8-bit content, an RFC 6533
one included, has a 7-bit form (:func:`seven_bit_form`) for a server without
8BITMIME.
"""

from __future__ import annotations

import email.utils
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Final

from smtpcore.server._bounce_fields import (
    address_field,
    field_text,
    on_behalf_text,
    one_line,
    original_recipient_field,
    shown_address,
    to_field,
)
from smtpcore.server._bounce_mime import (
    GLOBAL_TYPES,
    HEADER_ONLY,
    HEADERS_ONLY,
    WHOLE,
    Part,
    assemble,
    header_part,
    returned_type,
    seven_bit_form,
    what_follows,
)
from smtpcore.server.reportfields import diagnostic_field, mta_name
from smtpcore.smtp import decode_xtext

__all__ = [
    "FailedRecipient",
    "MAX_RETURNED_MESSAGE",
    "Report",
    "ReportedRecipient",
    "build_bounce",
    "build_delay_notice",
    "build_success_report",
    "seven_bit_form",
]


# The function moved into a private module keeps the name callers import it by in
# ``__module__``, which pickling reads (as ``_maildrop_errors`` does).
seven_bit_form.__module__ = __name__

MAX_RETURNED_MESSAGE: Final = 256 * 1024
"""A larger message comes back as its header only (``text/rfc822-headers``)."""


@dataclass(frozen=True, slots=True)
class ReportedRecipient:
    """One recipient in a report: what became of the message for it, and why."""

    address: str
    status: str
    """The enhanced status code (RFC 3463), such as ``5.1.1``."""
    diagnostic: str
    """The remote reply (``550 5.1.1 no such user``) or a local explanation."""
    remote_mta: str | None = None
    """The exchanger that answered, if one did."""
    from_remote: bool = False
    """True when ``diagnostic`` is the remote server's SMTP reply."""
    action: str = "failed"
    """RFC 3464 §2.3.3: ``failed``; ``delayed`` in a delay notice; in a success report
    ``delivered`` (into a mailbox here) or ``relayed`` (to a server that does not speak
    DSN)."""
    original_recipient: str | None = None
    """The recipient's ``ORCPT`` parameter as it came (RFC 3461 §4.2)."""
    diagnostic_breaks: tuple[int, ...] = ()
    """Where ``diagnostic``, a reply of several lines, has the spaces between its lines
    (:func:`~smtpcore.server.exchanger.transcribe`): its ``Diagnostic-Code`` folds
    there. Breaks that are not all such spaces, in increasing order, leave the field
    unfolded."""


FailedRecipient = ReportedRecipient
"""What a bounce lists: a :class:`ReportedRecipient` whose action is ``failed``."""


@dataclass(frozen=True, slots=True)
class Report:
    """A report as built: its wire form, and what the relay must know to send it."""

    content: bytes
    international: bool
    """It follows RFC 6533 (``message/global-delivery-status``): it is queued with
    SMTPUTF8, which goes on where the exchanger offers it (its own header is ASCII but
    for a UTF-8 address, so one without may take it too, RFC 6531 §3.4). Said by the
    builder, which chose it; what the returned message quotes never is."""


def _diagnostic_lines(item: ReportedRecipient, utf8: bool) -> list[str]:
    """``item``'s diagnostic as :func:`one_line` writes it, in pieces that begin where
    the reply's lines begin (:attr:`ReportedRecipient.diagnostic_breaks`), up to the
    cut: joined by spaces, they are that one line whatever the breaks say. Breaks that
    are not increasing spaces inside the text, as no queue file of ours holds, leave
    it in one piece."""
    text, breaks = item.diagnostic, item.diagnostic_breaks
    shown = one_line(text, utf8)
    if len(breaks) >= len(text):  # not increasing inside the text: a damaged file's
        return [shown]  # list, which costs no more than the text then
    edges = [-1, *breaks, len(text)]
    if not breaks or any(
        not (start < end < len(text) and text[end] == " ") for start, end in pairwise(edges[:-1])
    ):
        return [shown]
    pieces = [field_text(text[start + 1 : end], utf8) for start, end in pairwise(edges)]
    if "" in pieces or " ".join(pieces) != field_text(text, utf8):
        return [shown]
    lines: list[str] = []
    start = 0
    for piece in pieces[:-1]:
        end = start + len(piece)
        if end >= len(shown) or shown[end] != " ":
            break  # the rest was cut, or this line was cut short
        lines.append(shown[start:end])
        start = end + 1
    return [*lines, shown[start:]]


def build_bounce(
    *,
    reporting_mta: str,
    recipient: str,
    queue_id: str,
    arrival: float,
    now: float,
    failed: Sequence[ReportedRecipient],
    original: bytes,
    envid: str | None = None,
    headers_only: bool = False,
    too_large: bool = False,
    expired_after: str | None = None,
    utf8: bool = False,
    for_sender: str | None = None,
) -> Report:
    """The bounce for ``failed``, addressed to ``recipient`` (the original sender).

    ``original`` is the message as queued (wire form); ``arrival`` and
    ``now`` are seconds since the epoch; ``envid`` is the sender's ``ENVID``
    (xtext, RFC 3461 §4.4) and ``headers_only`` its ``RET=HDRS``. ``too_large``: the
    caller found the message too large to return whole (the disk would not store the
    bounce with it), as one over :data:`MAX_RETURNED_MESSAGE` is; RFC 3461 §4.3 lets
    the header alone come back, and the text then says why, where it would otherwise
    read as though the sender had asked for it.
    ``expired_after`` (``5d``) says the message spent that long in the queue;
    each recipient's diagnostic is then its last error. ``utf8`` (the message
    came with SMTPUTF8) makes an RFC 6533 report, as any non-ASCII address does.
    ``for_sender``: the report goes to the postmaster (``recipient``) instead of this
    sender, which its text names (:func:`on_behalf_text`).
    """
    if not failed:
        raise ValueError("a bounce needs at least one failed recipient")
    explanation = (
        f"This is the mail system at {reporting_mta}. Your message (queue id {queue_id}, "
        f"received {email.utils.formatdate(arrival, localtime=True)}) could not be "
        "delivered to the recipients below, and no further attempt will be made."
    )
    if expired_after is not None:
        explanation += (
            f" It was retried for {expired_after} without success; the last error "
            "for each recipient is below."
        )
    too_large = too_large or (not headers_only and len(original) > MAX_RETURNED_MESSAGE)
    if too_large:
        explanation += " It was too large to return whole: only its header comes back."
    returned, kind, description = original, "message/rfc822", WHOLE
    if headers_only or too_large:
        returned = header_part(original)
        kind, description = HEADERS_ONLY[kind], HEADER_ONLY
    return _build_report(
        subject="Undelivered Mail Returned to Sender",
        explanation=explanation,
        reporting_mta=reporting_mta,
        recipient=recipient,
        queue_id=queue_id,
        arrival=arrival,
        now=now,
        reported=failed,
        envid=envid,
        returned=(returned, kind, description),
        utf8=utf8,
        for_sender=for_sender,
    )


def build_success_report(
    *,
    reporting_mta: str,
    recipient: str,
    queue_id: str,
    arrival: float,
    now: float,
    reported: Sequence[ReportedRecipient],
    original: bytes,
    envid: str | None = None,
    utf8: bool = False,
    for_sender: str | None = None,
) -> Report:
    """The report asked for with ``NOTIFY=SUCCESS`` (RFC 3461 §4.1): ``reported`` were
    ``delivered`` here, or ``relayed`` to a server that does not speak DSN. Only the
    message's header comes back."""
    if not reported:
        raise ValueError("a report needs at least one recipient")
    explanation = (
        f"This is the mail system at {reporting_mta}. Your message (queue id {queue_id}, "
        f"received {email.utils.formatdate(arrival, localtime=True)}) was delivered to "
        "the mailboxes below, or passed on to a system that does not report delivery, "
        "as you asked."
    )
    return _build_report(
        subject="Successful Mail Delivery Report",
        explanation=explanation,
        reporting_mta=reporting_mta,
        recipient=recipient,
        queue_id=queue_id,
        arrival=arrival,
        now=now,
        reported=reported,
        envid=envid,
        returned=(header_part(original), "text/rfc822-headers", "Message headers"),
        utf8=utf8,
        for_sender=for_sender,
    )


def build_delay_notice(
    *,
    reporting_mta: str,
    recipient: str,
    queue_id: str,
    arrival: float,
    now: float,
    delayed: Sequence[ReportedRecipient],
    original: bytes,
    retry_until: float,
    envid: str | None = None,
    utf8: bool = False,
    for_sender: str | None = None,
) -> Report:
    """The warning that mail is still waiting (RFC 3464 §2.3.3 ``Action: delayed``),
    sent once, as Postfix's ``delay_warning_time`` does: each of ``delayed`` with its
    last error and ``Will-Retry-Until`` (§2.3.7). Only the message's header comes
    back; the message itself stays queued."""
    if not delayed:
        raise ValueError("a delay notice needs at least one recipient")
    until = email.utils.formatdate(retry_until, localtime=True)
    explanation = (
        f"This is the mail system at {reporting_mta}. Your message (queue id {queue_id}, "
        f"received {email.utils.formatdate(arrival, localtime=True)}) has not yet been "
        f"delivered to the recipients below. Delivery will be retried until {until}; "
        "you do not need to send it again. If it cannot be delivered by then, "
        "you will be told."
    )
    return _build_report(
        subject="Delayed Mail (still being retried)",
        explanation=explanation,
        reporting_mta=reporting_mta,
        recipient=recipient,
        queue_id=queue_id,
        arrival=arrival,
        now=now,
        reported=[replace(item, action="delayed") for item in delayed],
        envid=envid,
        returned=(header_part(original), "text/rfc822-headers", "Message headers"),
        retry_until=until,
        utf8=utf8,
        for_sender=for_sender,
    )


def _build_report(
    *,
    subject: str,
    explanation: str,
    reporting_mta: str,
    recipient: str,
    queue_id: str,
    arrival: float,
    now: float,
    reported: Sequence[ReportedRecipient],
    envid: str | None,
    returned: tuple[bytes, str, str],
    retry_until: str | None = None,
    utf8: bool = False,
    for_sender: str | None = None,
) -> Report:
    utf8 = utf8 or not recipient.isascii() or any(not r.address.isascii() for r in reported)
    if for_sender is not None:
        explanation += " " + on_behalf_text(for_sender, utf8)
    # RFC 2046 §5.1.1: 1 to 70 characters; a long host name is cut short.
    boundary = f"{queue_id}.{secrets.token_hex(8)}/{reporting_mta}"[:70]
    arrival_date = email.utils.formatdate(arrival, localtime=True)
    date = email.utils.formatdate(now, localtime=True)
    text = textwrap.wrap(explanation, 72)
    for item in reported:
        text.append("")
        shown = item.remote_mta and mta_name(item.remote_mta)
        where = f"host {shown} said" if shown and item.from_remote else ""
        # A word longer than the line is broken too: a line stays within RFC 5322's 998.
        said = f"{where}: " if where else ""
        text += textwrap.wrap(
            f"<{shown_address(item.address)}>: {said}{one_line(item.diagnostic, utf8)}",
            72,
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
    content, content_type, description = returned
    content_type = returned_type(content_type, content, utf8)
    text += ["", what_follows(content_type)]
    status_type = "message/delivery-status"
    if utf8:
        status_type = GLOBAL_TYPES[status_type]
    status = []
    if envid is not None:  # RFC 3464 §2.2.1, decoded from xtext (RFC 3461 §6.3)
        status.append(f"Original-Envelope-Id: {one_line(decode_xtext(envid), utf8)}")
    status += [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Queue-ID: {queue_id}",
        f"Arrival-Date: {arrival_date}",
    ]
    for item in reported:
        status.append("")
        if item.original_recipient is not None:
            original = original_recipient_field(item.original_recipient, utf8)
            if original is not None:
                status.append(f"Original-Recipient: {original}")
        status += [
            f"Final-Recipient: {address_field(item.address, utf8)}",
            f"Action: {item.action}",
            f"Status: {item.status}",
        ]
        if item.remote_mta:
            status.append(f"Remote-MTA: dns; {mta_name(item.remote_mta)}")
        kind = "smtp" if item.from_remote else "x-local"
        status += diagnostic_field(kind, _diagnostic_lines(item, utf8))
        if item.action in ("failed", "delayed"):
            status.append(f"Last-Attempt-Date: {date}")
        if item.action == "delayed" and retry_until is not None:
            status.append(f"Will-Retry-Until: {retry_until}")
    if content.endswith(b"\r"):  # a last line ending in CR alone: finish it, not a bare CR
        content += b"\n"
    elif content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    fields = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        to_field(recipient),
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: <{queue_id}.{secrets.token_hex(6)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: no automatic answer to this
    ]
    parts = [
        Part("text/plain; charset=utf-8", "Notification", _lines(text)),
        Part(status_type, "Delivery report", _lines(status)),
        Part(content_type, description, content),
    ]
    return Report(assemble(fields, boundary, parts), international=utf8)


def _lines(lines: Sequence[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("utf-8")
