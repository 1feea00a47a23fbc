"""One mail transaction as a server's handler sees it: the
:class:`~smtpcore.handler.Envelope` and its :class:`Recipient` entries.

Values the adapters fill in at each ``MAIL`` and ``RCPT`` and the handler's
hooks read, re-exported by :mod:`smtpcore.handler`. The mark that lets
``handle_message`` begin a commit (:meth:`~smtpcore.handler.Session.begin_commit`)
lives here, with the message it belongs to, so that no mark outlives it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from smtpcore.address import Mailbox
from smtpcore.smtp import Parameters, Xforward


@dataclass(frozen=True, slots=True)
class Recipient:
    """One accepted ``RCPT TO``: the mailbox and its ESMTP parameters (RFC 5321 §4.1.1.3)."""

    mailbox: Mailbox
    params: Parameters = field(default_factory=Parameters)


class _Commit(enum.Enum):
    """Where a message at its end stands for :meth:`Session.begin_commit` (before
    that, while its content comes, the mark is unset: :class:`_CommitMark`)."""

    ANSWERING = enum.auto()
    """``handle_message`` runs: it may begin the commit."""
    COMMITTING = enum.auto()
    """``handle_message`` began the commit: a 421 from here on would be false."""


class _CommitMark:
    """Where a message stands for :meth:`Session.begin_commit`, kept with its own
    transaction, so that no mark outlives the message it was set for. A slot set
    only just before ``handle_message`` (:func:`_answering`) and by ``begin_commit``;
    unset, the content is still coming: the adapter builds an envelope at each MAIL, and
    spends no time on it there."""

    __slots__ = ("_commit",)
    _commit: _Commit


@dataclass(slots=True, eq=False)
class Envelope(_CommitMark):
    """One mail transaction: sender, accepted recipients and, once read, the content.

    A new envelope starts with each accepted ``MAIL``. ``content`` holds the
    message (without dot-stuffing) when the handler lets the adapter collect
    it in memory; a streaming handler leaves it empty.
    """

    sender: Mailbox | None
    """The reverse-path; ``None`` is the null path ``<>`` of a bounce (RFC 5321 §4.5.5)."""
    mail_params: Parameters = field(default_factory=Parameters)
    submitter: str | None = None
    """The ``AUTH=`` mailbox of ``MAIL`` (xtext-decoded), from an authenticated client only.

    A mailbox (RFC 4954 §5), in its wire form, that holds no control or format
    character (ZWNJ and ZWJ excepted: some scripts cannot be written without them,
    as log text keeps them): an ``AUTH=`` whose xtext decodes to anything else (a bare user name, a
    CR LF) is taken as ``AUTH=<>``, and one that is no xtext gets ``501 5.5.4``.

    ``None`` when the client gave ``AUTH=<>``, no ``AUTH=``, or has not
    authenticated: RFC 4954 §5 then has the server act as if ``AUTH=<>``
    was given. Whether to trust the authenticated client's word is the
    handler's decision (``mail_params`` keeps the raw value for logging).
    """
    recipients: list[Recipient] = field(default_factory=list)
    xforward: Xforward | None = None
    """Who sent this message to the host before, as a trusted content filter said with
    XFORWARD before ``MAIL`` (Postfix); None when it said nothing."""
    content: bytes = b""
    """The message as received, once :meth:`Handler.handle_message` is called."""
    size: int = 0
    """Octets of content received so far (after unstuffing)."""
    chunks: list[bytes] = field(default_factory=list, repr=False)
    """Where the default :meth:`Handler.handle_data_chunk` collects content."""


def _answering(envelope: Envelope) -> None:
    """The adapter's call, just before ``handle_message``: from now on that hook may
    call :meth:`Session.begin_commit`."""
    mark: _CommitMark = envelope  # the slot is the base class's, not a field
    mark._commit = _Commit.ANSWERING
