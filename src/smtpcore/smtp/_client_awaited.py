"""What a client session awaits: the entry each event sent keeps until its reply.

The queue of :class:`~smtpcore.smtp.ClientConnection` (``smtp/_client.py``) holds
one :class:`_Awaited` per event that still waits for its reply, in the order
sent, so that each reply is matched to what it answers, pipelined or not. The
entry is every layer's: the commands and the content make them, the replies
read them. :func:`_awaited` makes the everyday ones at the cost of a plain call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from smtpcore.smtp._events import Command, EndOfMessage, Event
from smtpcore.smtp._state import Rule, State
from smtpcore.smtp._transaction import _Transaction

_NOT_FUSED: Final[frozenset[int]] = frozenset()


@dataclass(slots=True)
class _Awaited:
    """An event that still waits for its reply (or replies, for LMTP content)."""

    event: Event | None
    """None stands for the server's greeting."""
    rule: Rule
    transaction: _Transaction | None = None
    recipient: int = -1
    """For RCPT, the recipient's index in the transaction."""
    replies_due: int = 0
    """For the end of the content in LMTP: replies still to come, once known."""
    after: State = State.READY
    """The session's state once this event and every one before it has succeeded:
    the state the next command is checked against."""
    replaced: _Transaction | None = None
    """For a command that resets the session, the transaction it ended when sent:
    open again if the server refuses the reset."""
    fused: frozenset[int] = _NOT_FUSED
    """The reply codes :meth:`ClientConnection._receive_event` records itself for
    this entry (its success, for MAIL, RCPT, DATA and the end of the content); any
    other reply goes through ``_dispatch``."""


def _awaited(event: Event, rule: Rule, transaction: _Transaction | None, after: State) -> _Awaited:
    """``_Awaited(event, rule, transaction, after=after)`` for the commands and content
    of every message: a plain call, where calling the class runs its ``__init__``
    through the interpreter's slower path for a type (a test holds the two equal)."""
    entry = _new(_Awaited)
    entry.event = event
    entry.rule = rule
    entry.transaction = transaction
    entry.recipient = -1
    entry.replies_due = 0
    entry.after = after
    entry.replaced = None
    entry.fused = _NOT_FUSED
    return entry


_new: Final = object.__new__

_GREETING_RULE: Final = Rule(frozenset({State.GREETING}), frozenset({220}), State.HELLO)


def _name(event: Event | None) -> str:
    if event is None:
        return "the greeting"
    if isinstance(event, Command):
        return event.verb
    if isinstance(event, EndOfMessage):
        return "the end of the content"
    return type(event).__name__
