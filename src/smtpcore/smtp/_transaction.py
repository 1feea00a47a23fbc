"""The outcome of one mail transaction, as the client machine saw it.

RFC 5321 §3.3 lets a server accept some recipients and refuse others, and
RFC 2033 §4.2 gives each accepted recipient its own reply after the content
in LMTP. A :class:`TransactionResult` keeps every reply next to the envelope
part it answers, so that partial acceptance is a loop over ``recipients``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from smtpcore.address import Mailbox
from smtpcore.smtp._replies import Reply

__all__ = ["RecipientResult", "TransactionResult"]


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """One ``RCPT``: the recipient, its reply, and the reply after the content.

    ``delivery`` is the reply that decided the message's fate for this
    recipient once its ``RCPT`` was accepted: the one reply after the content
    in SMTP, this recipient's own reply in LMTP (RFC 2033 §4.2), or the refusal
    of ``DATA`` or of a ``BDAT`` chunk that ended the transaction (RFC 5321
    §4.2.1: the message was not taken). It stays None for a recipient refused
    at ``RCPT`` and until it arrives.

    ``mail_refused`` says that ``reply`` is not its ``RCPT``'s at all: the
    transaction's ``MAIL`` was refused, and that refusal answers for each of
    its recipients, whose ``RCPT`` was never sent (a LIMITS transaction of a
    message sent in several, RFC 9422 §4.2). A reply code means what the
    command it answers makes it mean (RFC 5321 §4.2.2, §4.5.3.1.10).

    Once the content has been answered, every recipient is exactly one of
    :attr:`delivered` and :attr:`refused`; :attr:`accepted` says only how its
    ``RCPT`` was answered.
    """

    recipient: Mailbox
    reply: Reply | None = None
    delivery: Reply | None = None
    mail_refused: bool = False

    @property
    def accepted(self) -> bool:
        """The server accepted the recipient (250, 251 or 252)."""
        return self.reply is not None and self.reply.is_positive

    @property
    def refused(self) -> bool:
        """The server refused the message for this recipient, 4xx or 5xx: at its
        ``RCPT``, or once accepted, in its :attr:`delivery` (so that a caller that
        retries the refused ones misses none, RFC 5321 §6.1)."""
        reply = self.reply
        if reply is None:
            return False
        if not reply.is_positive:
            return True
        delivery = self.delivery
        return delivery is not None and not delivery.is_positive

    @property
    def delivered(self) -> bool:
        """The server took responsibility for the message for this recipient."""
        return self.accepted and self.delivery is not None and self.delivery.is_positive


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """A snapshot of a mail transaction (``MAIL``, ``RCPT``..., content)."""

    sender: Mailbox | None
    """The reverse path; None for the null path ``<>``."""
    mail_reply: Reply | None
    """The reply to ``MAIL``, None while it is awaited."""
    recipients: tuple[RecipientResult, ...]
    """One entry per ``RCPT`` sent, in order."""
    data_reply: Reply | None
    """The reply to ``DATA`` (354 or a refusal), or to the last ``BDAT`` chunk
    that was not the last one; once a chunk is refused, that refusal (the
    replies to chunks pipelined behind it answer discarded content, RFC 3030 §2)."""
    end_replies: tuple[Reply, ...]
    """The replies after the content (one in SMTP, one per accepted recipient in LMTP);
    after a refused chunk, the one reply to the ``BDAT ... LAST`` pipelined behind it."""
    complete: bool
    """True once no further reply will come for this transaction (refused, ended,
    abandoned with RSET, the connection closed, or the machine in ERROR)."""

    @property
    def accepted(self) -> tuple[RecipientResult, ...]:
        return tuple(result for result in self.recipients if result.accepted)

    @property
    def refused(self) -> tuple[RecipientResult, ...]:
        """Refused at ``RCPT`` or after it (:attr:`RecipientResult.refused`)."""
        return tuple(result for result in self.recipients if result.refused)

    @property
    def delivered(self) -> tuple[RecipientResult, ...]:
        return tuple(result for result in self.recipients if result.delivered)


class _Transaction:
    """The mutable record behind :class:`TransactionResult` snapshots.

    Each recipient's replies are kept in lists beside the recipients, and a
    :class:`RecipientResult` is made only for a snapshot: replies come in
    message after message, snapshots are taken once a message.
    """

    __slots__ = (
        "binary",
        "complete",
        "data_reply",
        "deliveries",
        "end_replies",
        "mail_reply",
        "number",
        "recipients",
        "replies",
        "sender",
        "utf8",
    )

    def __init__(
        self, sender: Mailbox | None, *, utf8: bool, binary: bool, number: int = 0
    ) -> None:
        self.sender = sender
        self.number = number
        """Which of its session's transactions this is (1 for the first ``MAIL``)."""
        self.utf8 = utf8
        self.binary = binary
        self.mail_reply: Reply | None = None
        self.recipients: list[Mailbox] = []
        self.replies: list[Reply | None] = []
        """The reply to each recipient's ``RCPT``, None while it is awaited."""
        self.deliveries: list[Reply | None] = []
        """The reply after the content that decided each recipient's fate."""
        self.data_reply: Reply | None = None
        self.end_replies: list[Reply] = []
        self.complete = False

    def add_recipient(self, recipient: Mailbox) -> int:
        self.recipients.append(recipient)
        self.replies.append(None)
        self.deliveries.append(None)
        return len(self.recipients) - 1

    def accepted_indexes(self) -> list[int]:
        return [
            index
            for index, reply in enumerate(self.replies)
            if reply is not None and 200 <= reply.code < 300
        ]

    def content_refused(self) -> bool:
        """``DATA`` or a ``BDAT`` chunk was refused, which ends the transaction (RFC
        5321 §3.3, RFC 3030 §2): the content never reaches its end."""
        reply = self.data_reply
        return reply is not None and reply.code >= 400

    def refuse_content(self, reply: Reply) -> None:
        """``DATA`` or a ``BDAT`` chunk was refused: no content follows, so that
        refusal is each accepted recipient's reply after the content."""
        deliveries = self.deliveries
        for index in self.accepted_indexes():
            if deliveries[index] is None:
                deliveries[index] = reply

    def snapshot(self) -> TransactionResult:
        # Made without the dataclass's __init__ (six object.__setattr__ calls), once a
        # message: each field set through its slot (a test holds it to the constructor).
        result = _new(TransactionResult)
        _SET_SENDER(result, self.sender)
        _SET_MAIL_REPLY(result, self.mail_reply)
        _SET_RECIPIENTS(
            result, tuple(map(_recipient_result, self.recipients, self.replies, self.deliveries))
        )
        _SET_DATA_REPLY(result, self.data_reply)
        _SET_END_REPLIES(result, tuple(self.end_replies))
        _SET_COMPLETE(result, self.complete)
        return result


def _recipient_result(
    recipient: Mailbox, reply: Reply | None, delivery: Reply | None
) -> RecipientResult:
    """``RecipientResult(recipient, reply, delivery)``, each field set through its slot
    (a recipient of the machine's own transaction had its RCPT sent)."""
    result = _new(RecipientResult)
    _SET_RECIPIENT(result, recipient)
    _SET_REPLY(result, reply)
    _SET_DELIVERY(result, delivery)
    _SET_MAIL_REFUSED(result, False)
    return result


_new: Final = object.__new__
_SET_SENDER: Final = vars(TransactionResult)["sender"].__set__
_SET_MAIL_REPLY: Final = vars(TransactionResult)["mail_reply"].__set__
_SET_RECIPIENTS: Final = vars(TransactionResult)["recipients"].__set__
_SET_DATA_REPLY: Final = vars(TransactionResult)["data_reply"].__set__
_SET_END_REPLIES: Final = vars(TransactionResult)["end_replies"].__set__
_SET_COMPLETE: Final = vars(TransactionResult)["complete"].__set__
_SET_RECIPIENT: Final = vars(RecipientResult)["recipient"].__set__
_SET_REPLY: Final = vars(RecipientResult)["reply"].__set__
_SET_DELIVERY: Final = vars(RecipientResult)["delivery"].__set__
_SET_MAIL_REFUSED: Final = vars(RecipientResult)["mail_refused"].__set__
