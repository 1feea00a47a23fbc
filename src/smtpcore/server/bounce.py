"""Bounces: delivery status notifications for mail that could not be delivered.

A bounce is a ``multipart/report`` message (RFC 6522) of report type
``delivery-status`` (RFC 3464): a text part for people, a
``message/delivery-status`` part for programs, and the returned message (or
only its header, when it is large). It goes to the original sender with
the null reverse path, so that it can never cause a bounce of its own
(RFC 5321 §4.5.5); mail that arrived with the null sender gets none.
"""

from __future__ import annotations

import email.utils
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["FailedRecipient", "build_bounce", "MAX_RETURNED_MESSAGE"]

MAX_RETURNED_MESSAGE: Final = 256 * 1024
"""A larger message comes back as its header only (``text/rfc822-headers``)."""


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient the message could not reach, and why."""

    address: str
    status: str
    """The enhanced status code (RFC 3463), such as ``5.1.1``."""
    diagnostic: str
    """The remote reply (``550 5.1.1 no such user``) or a local explanation."""
    remote_mta: str | None = None
    """The exchanger that refused, if one did."""
    from_remote: bool = False
    """True when ``diagnostic`` is the remote server's SMTP reply."""


def _one_line(text: str, limit: int = 900) -> str:
    text = " ".join(text.split())
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _address_field(address: str) -> str:
    """``rfc822;`` for an ASCII address, ``utf-8;`` for an internationalised one (RFC 6533)."""
    kind = "rfc822" if address.isascii() else "utf-8"
    return f"{kind}; {address}"


def _header_part(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def build_bounce(
    *,
    reporting_mta: str,
    recipient: str,
    queue_id: str,
    arrival: float,
    now: float,
    failed: Sequence[FailedRecipient],
    original: bytes,
) -> bytes:
    """The bounce for ``failed``, addressed to ``recipient`` (the original sender).

    ``original`` is the message as queued (wire form); ``arrival`` and
    ``now`` are seconds since the epoch. Returns the message in wire form.
    """
    if not failed:
        raise ValueError("a bounce needs at least one failed recipient")
    boundary = f"{queue_id}.{secrets.token_hex(8)}/{reporting_mta}"
    arrival_date = email.utils.formatdate(arrival, localtime=True)
    date = email.utils.formatdate(now, localtime=True)
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{recipient}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {date}",
        f"Message-ID: <{queue_id}.{secrets.token_hex(6)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: no automatic answer to this
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification",
        "",
    ]
    explanation = (
        f"This is the mail system at {reporting_mta}. Your message (queue id {queue_id}, "
        f"received {arrival_date}) could not be delivered to the recipients below, and "
        "no further attempt will be made."
    )
    lines += textwrap.wrap(explanation, 72)
    for item in failed:
        lines.append("")
        where = f"host {item.remote_mta} said" if item.remote_mta and item.from_remote else ""
        lines += textwrap.wrap(
            f"<{item.address}>: {where + ': ' if where else ''}{_one_line(item.diagnostic)}",
            72,
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    lines += [
        "",
        "The delivery report and your message follow.",
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Queue-ID: {queue_id}",
        f"Arrival-Date: {arrival_date}",
    ]
    for item in failed:
        lines += [
            "",
            f"Final-Recipient: {_address_field(item.address)}",
            "Action: failed",
            f"Status: {item.status}",
        ]
        if item.remote_mta:
            lines.append(f"Remote-MTA: dns; {item.remote_mta}")
        kind = "smtp" if item.from_remote else "x-local"
        lines.append(f"Diagnostic-Code: {kind}; {_one_line(item.diagnostic)}")
        lines.append(f"Last-Attempt-Date: {date}")
    lines.append("")
    returned = original
    if len(original) > MAX_RETURNED_MESSAGE:
        kind = "text/rfc822-headers"
        returned = _header_part(original)
        description = "Undelivered message headers"
    else:
        kind = "message/rfc822"
        description = "Undelivered message"
    lines += [f"--{boundary}", f"Content-Type: {kind}", f"Content-Description: {description}"]
    if not returned.isascii():
        lines.append("Content-Transfer-Encoding: 8bit")
    lines.append("")
    head = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    if returned and not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    return head + returned + f"\r\n--{boundary}--\r\n".encode("ascii")
