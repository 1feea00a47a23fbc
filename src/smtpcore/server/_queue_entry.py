"""A queue entry's values: where each recipient stands (:class:`RecipientStatus`,
:class:`QueuedRecipient`) and the envelope with its delivery state
(:class:`QueueEntry`), written to and read from its JSON file.

Apart from the queue's files: the relay, the reports and the queue tools read and
change entries without touching the disk. Every public name is still imported from
:mod:`smtpcore.server.queue`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from smtpcore.server._queue_fields import (
    _array,
    _flag,
    _integer,
    _integers,
    _number,
    _object,
    _optional_text,
    _param,
    _text,
    _texts,
)

__all__ = ["QueueEntry", "QueuedRecipient", "RecipientStatus", "_FORMAT", "_recipient"]

_FORMAT: Final = 1


class RecipientStatus(enum.Enum):
    """Where one recipient of a queued message stands."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    """Refused for good, or expired; a bounce was made (unless the sender was null)."""


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    """One recipient of a queued message and what its last attempt said."""

    address: str
    """The mailbox in its wire form."""
    status: RecipientStatus = RecipientStatus.PENDING
    reply: str | None = None
    """The last reply or error, one line, for logs and bounces."""
    dsn: str | None = None
    """The enhanced status (RFC 3463) that goes with ``reply``."""
    remote_mta: str | None = None
    """The exchanger that gave ``reply``, if one did."""
    notify: str | None = None
    """The sender's ``NOTIFY`` for this recipient (RFC 3461 §4.1), upper case."""
    orcpt: str | None = None
    """The ``ORCPT`` it came with (RFC 3461 §4.2), passed on and reported."""
    from_remote: bool = False
    """True when ``reply`` is the remote server's own SMTP reply (not our words)."""
    report_owed: str | None = None
    """The ``Action`` (RFC 3464 §2.3.3: ``delivered`` or ``relayed``) of the success
    report ``NOTIFY=SUCCESS`` asks for and not yet queued (RFC 3461 §6.2). Written with
    the ``sent`` status in one step, so that a crash between the delivery and the
    report cannot lose the report; cleared once the report is queued."""
    reply_breaks: tuple[int, ...] = ()
    """Where ``reply``, an exchanger's reply of several lines, has the spaces between
    its lines (:func:`~smtpcore.server.exchanger.transcribe`): a report folds there."""

    @property
    def pending(self) -> bool:
        return self.status is RecipientStatus.PENDING


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A queued message's envelope and delivery state (not its content)."""

    id: str
    sender: str
    """The reverse path, ``""`` for the null path of a bounce."""
    recipients: tuple[QueuedRecipient, ...]
    created: float
    """When the message was accepted (seconds since the epoch)."""
    size: int = 0
    attempts: int = 0
    """Delivery rounds that left recipients pending."""
    next_attempt: float = 0.0
    client: str = ""
    """Where the message came from, for logs and bounces."""
    params: tuple[tuple[str, str | None], ...] = field(default=())
    """MAIL parameters that matter downstream: ``SMTPUTF8`` (RFC 6531), ``BODY``
    (RFC 6152, RFC 3030), DSN's ``RET`` and ``ENVID`` (RFC 3461 §4.3, §4.4), and
    ``REQUIRETLS`` (RFC 8689 §4.1)."""
    delay_warned: bool = False
    """The sender was told once that the message is delayed (``Action: delayed``)."""
    held: bool = False
    """Put on hold by the operator (``queue hold``): not delivered until released."""
    report_on: str | None = None
    """For a report this server made (a bounce, a delay warning, a success report): the
    id of the entry it reports on. For a success report, its recipients in ``reported``
    owed it: :meth:`~smtpcore.server.queue.Queue.open` clears what they owe when a crash
    came between queuing the report and recording it queued, so it is never made twice."""
    reported: tuple[str, ...] = ()
    bounce_records: tuple[str, ...] = ()
    """For a bounce copy this server queued: the names of the records
    (:mod:`~smtpcore.server.bouncerecords`) that say its recipients were reported in its
    roles. :meth:`~smtpcore.server.queue.Queue.open` makes those missing for recipients
    still pending: a crash between the copy's commit and its records' creation must not
    make it again."""

    @property
    def is_report(self) -> bool:
        """A report this server made, from ``<>``: the relay may send it in its 7-bit
        form (:func:`~smtpcore.server.bounce.seven_bit_form`) where the exchanger has
        no 8BITMIME, for nothing would tell its sender otherwise (RFC 5321 §4.5.5).
        One queued by an older version, with no ``report_on``, is not known as one."""
        return not self.sender and self.report_on is not None

    @property
    def requiretls(self) -> bool:
        """The message came with REQUIRETLS (RFC 8689 §4.1): it may travel only over TLS
        with a verified certificate, to servers that offer REQUIRETLS themselves."""
        return any(keyword == "REQUIRETLS" for keyword, _ in self.params)

    def param(self, keyword: str) -> str | None:
        """The MAIL parameter ``keyword``'s value, None when absent."""
        for key, value in self.params:
            if key == keyword:
                return value
        return None

    @property
    def pending(self) -> tuple[QueuedRecipient, ...]:
        return tuple(r for r in self.recipients if r.pending)

    @property
    def reports_owed(self) -> tuple[str, ...]:
        """The recipients whose success report (RFC 3461 §6.2) is owed and not yet
        queued: an entry with none pending is still in the queue for them."""
        return tuple(r.address for r in self.recipients if r.report_owed is not None)

    def with_recipients(self, updates: Mapping[str, QueuedRecipient]) -> QueueEntry:
        """This entry with the recipients named in ``updates`` replaced."""
        return replace(self, recipients=tuple(updates.get(r.address, r) for r in self.recipients))

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "format": _FORMAT,
            "id": self.id,
            "sender": self.sender,
            "created": self.created,
            "size": self.size,
            "attempts": self.attempts,
            "next_attempt": self.next_attempt,
            "client": self.client,
            "params": [list(p) for p in self.params],
            "delay_warned": self.delay_warned,
            "held": self.held,
            "report_on": self.report_on,
            "reported": list(self.reported),
            "bounce_records": list(self.bounce_records),
            "recipients": [
                {
                    "address": r.address,
                    "status": r.status.value,
                    "reply": r.reply,
                    "reply_breaks": list(r.reply_breaks),
                    "dsn": r.dsn,
                    "remote_mta": r.remote_mta,
                    "notify": r.notify,
                    "orcpt": r.orcpt,
                    "from_remote": r.from_remote,
                    "report_owed": r.report_owed,
                }
                for r in self.recipients
            ],
        }
        return json.dumps(data, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> QueueEntry:
        """The entry a queue file holds; ``ValueError`` for one that is not one, whatever
        is wrong with it (not JSON, nested too deep to parse, a field missing or of
        another type, a number that is not finite).

        Python's JSON reader takes ``NaN``, ``Infinity`` and ``1e400`` (infinity),
        which no int can hold and no time can be, and what the file holds is data to
        check, not to convert: ``bool("no")`` is True. So every field is checked for
        its own type here, numbers for being finite, before any of it is used."""
        try:
            return cls._from_data(json.loads(text))
        except (KeyError, RecursionError) as exc:
            raise ValueError(f"malformed queue file: {exc!r}") from None

    @classmethod
    def _from_data(cls, data: object) -> QueueEntry:
        fields = _object(data)
        if fields.get("format") != _FORMAT:
            raise ValueError(f"unknown queue file format {fields.get('format')!r}")
        return cls(
            id=_text(fields, "id"),
            sender=_text(fields, "sender"),
            created=_number(fields, "created"),
            size=_integer(fields, "size"),
            attempts=_integer(fields, "attempts"),
            next_attempt=_number(fields, "next_attempt"),
            client=_text(fields, "client"),
            params=tuple(_param(item) for item in _array(fields, "params")),
            delay_warned=_flag(fields, "delay_warned"),  # absent from older files
            held=_flag(fields, "held"),
            report_on=_optional_text(fields, "report_on", absent_ok=True),
            reported=tuple(_texts(fields, "reported")),
            bounce_records=tuple(_texts(fields, "bounce_records")),  # absent from older files
            recipients=tuple(_recipient(_object(r)) for r in _array(fields, "recipients")),
        )


def _recipient(fields: Mapping[str, object]) -> QueuedRecipient:
    return QueuedRecipient(
        address=_text(fields, "address"),
        status=RecipientStatus(_text(fields, "status")),
        reply=_optional_text(fields, "reply"),
        reply_breaks=tuple(_integers(fields, "reply_breaks")),  # absent from older files
        dsn=_optional_text(fields, "dsn"),
        remote_mta=_optional_text(fields, "remote_mta"),
        notify=_optional_text(fields, "notify", absent_ok=True),  # absent from older files
        orcpt=_optional_text(fields, "orcpt", absent_ok=True),
        from_remote=_flag(fields, "from_remote"),
        report_owed=_optional_text(fields, "report_owed", absent_ok=True),
    )
