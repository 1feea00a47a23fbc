"""What one ``queue`` action did to one message, and the lines that say so.

One mechanism for both ways a command is carried out, by the running server
(:mod:`smtpcore.server.queueactions`) and by the tool when none runs
(:func:`smtpcore.server.queuectl.apply_offline`): the same count, only the
actions that took effect, and the same line for each message the action left
as it was.
"""

from __future__ import annotations

import enum
from typing import Final

from smtpcore._plural import messages
from smtpcore.server.queue import QueueEntry

__all__ = [
    "CARRIED_OUT",
    "already_line",
    "Effect",
    "effect_on",
    "messages",
    "not_done_line",
    "skipped_line",
    "summary_line",
]


class Effect(enum.Enum):
    """What one action did to one message: only ``DONE`` counts in the command's line,
    ``ALREADY`` apart in it (or, after a delivery round, in a line of its own:
    :func:`already_line`); the others but ``WAITS`` get a line saying why
    (:func:`not_done_line`)."""

    DONE = enum.auto()
    WAITS = enum.auto()
    """The message's delivery round is under way: the action waits for its end."""
    GONE = enum.auto()
    """The message is no longer in the queue."""
    HELD = enum.auto()
    """A flush passes a held message over (Postfix's ``postqueue -f`` too)."""
    ALREADY = enum.auto()
    """The message was already as the action leaves it: a ``hold`` of a held one, a
    ``release`` of one not held. The action is carried out all the same (the entry
    written again, a released one tried at once), so that what it does, and its
    races with a delivery round, are the same whatever the message was; but it
    took no effect, and the command's line counts it apart (:func:`summary_line`)."""


CARRIED_OUT: Final = frozenset({Effect.DONE, Effect.ALREADY})
"""The effects for which the action is carried out on the message."""

_ALREADY: Final = {"hold": "already held", "release": "not held"}
"""How the command's line words the messages an action found as it leaves them."""

_TRIED_NOW: Final = frozenset({"flush", "release"})
"""The actions that have a message tried at once (by a running server)."""


def effect_on(entry: QueueEntry, action: str) -> Effect:
    """Whether ``action`` acts on ``entry`` (``DONE``, or ``ALREADY`` when the message
    is already as it leaves it), or why not."""
    if action == "flush" and entry.held:
        return Effect.HELD
    if (action == "hold" and entry.held) or (action == "release" and not entry.held):
        return Effect.ALREADY
    return Effect.DONE


def summary_line(
    action: str, done: int, waiting: int = 0, already: int = 0, *, running: bool = True
) -> str:
    """The command's line: the messages the action took effect on, not those it
    matched (``queue flush: 1 message``), those it found as it leaves them
    (``queue hold: 0 messages (1 already held)``, see :attr:`Effect.ALREADY`), and
    those that wait for their round (``queue delete: 0 messages, 1 waiting for its
    delivery round``).

    A release of a message not held still has it tried at once, as a flush would: the
    line says so (``queue release: 0 messages (1 not held, tried now)``). With no
    server ``running`` (the tool's line), a message a flush or release made due is
    ``delivered when the server starts``, in the same parenthetical (``queue release:
    1 message (1 not held; delivered when the server starts)``)."""
    notes = []
    if already:
        note = f"{already} {_ALREADY[action]}"
        notes.append(f"{note}, tried now" if running and action in _TRIED_NOW else note)
    tried = done + (already if action in _TRIED_NOW else 0)
    if not running and tried and action in _TRIED_NOW:
        notes.append("delivered when the server starts")
    line = f"queue {action}: {messages(done)}"
    if notes:
        line += f" ({'; '.join(notes)})"
    if waiting == 1:
        line += ", 1 waiting for its delivery round"
    elif waiting:
        line += f", {waiting} waiting for their delivery rounds"
    return line


def already_line(queue_id: str, action: str) -> str:
    """The line for an action that waited for ``queue_id``'s delivery round and found
    the message, after it, as the action leaves it (:attr:`Effect.ALREADY`): the
    command's line counted it waiting, so this line is all that says what became of
    it (``0123456789: queue release after its delivery round: not held, tried
    now``)."""
    what = _ALREADY[action]
    if action in _TRIED_NOW:
        what += ", tried now"
    return f"{queue_id}: queue {action} after its delivery round: {what}"


def not_done_line(queue_id: str, action: str, effect: Effect, *, after_round: bool) -> str:
    """The line for an action that matched ``queue_id`` and did nothing to it.
    ``after_round``: the action waited for a round, which ended the message first
    (delivered or returned, as a delete or hold that came too late)."""
    if effect is Effect.HELD:
        return skipped_line(queue_id, action, "on hold (queue release sends it)")
    if after_round:
        why = "its delivery round, under way when the command came, ended it first"
    else:
        why = "the message is no longer in the queue"
    return f"{queue_id}: queue {action} not done: {why}"


def skipped_line(queue_id: str, action: str, why: str) -> str:
    """The line for a message ``action`` passes over, the server's and the tool's
    alike, the id first as in every per-message line of the log
    (``0123456789: queue hold skipped: damaged (...)``)."""
    return f"{queue_id}: queue {action} skipped: {why}"
