"""Which of a client's results answers which recipient its caller gave.

The client names each recipient in its :class:`~smtpcore.smtp.TransactionResult`
as it sent it: to a server without SMTPUTF8, a UTF-8 domain goes in A-labels
(:attr:`~smtpcore.address.Mailbox.a_label_form`, RFC 6531 §3.4), which name the same
domain (RFC 5890 §2.3.2.1). Nor does a position say which is which: a message split
into transactions (RFC 9422 LIMITS, recipients sent again after a ``452``) lists its
results transaction by transaction. Both the ``send`` tool and the reference relay
match through here, so that no caller keys results by the text it gave.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import TypeVar

from smtpcore.address import Mailbox
from smtpcore.smtp import RecipientResult

__all__ = ["match_results", "same_address"]

Key = TypeVar("Key", bound=Hashable)


def same_address(mailbox: Mailbox) -> tuple[str, str]:
    """What identifies a recipient in the client's results, whichever form of its
    domain was sent: the local part, and the domain as DNS names it (lowercase
    A-labels)."""
    return mailbox.local_part, mailbox.ascii_domain


def match_results(
    recipients: Iterable[tuple[Key, Mailbox]], results: Iterable[RecipientResult]
) -> dict[Key, RecipientResult]:
    """Each given recipient's result, by its key: matched by :func:`same_address`, in
    order among recipients with the same address. A recipient with no result (its
    ``RCPT`` never sent) is missing from the answer."""
    waiting: dict[tuple[str, str], deque[Key]] = {}
    for key, mailbox in recipients:
        waiting.setdefault(same_address(mailbox), deque()).append(key)
    matched: dict[Key, RecipientResult] = {}
    for item in results:
        keys = waiting.get(same_address(item.recipient))
        if keys:
            matched[keys.popleft()] = item
    return matched
