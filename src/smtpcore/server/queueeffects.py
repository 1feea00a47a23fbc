"""What one ``queue`` action did to one message, and the lines that say so.

One mechanism for both ways a command is carried out, by the running server
(:mod:`smtpcore.server.queueactions`) and by the tool when none runs
(:func:`smtpcore.server.queuectl.apply_offline`): the same count, only the
actions that took effect, and the same line for each message the action left
as it was.
"""

from __future__ import annotations

import enum

from smtpcore.server.plurals import messages
from smtpcore.server.queue import QueueEntry

__all__ = ["Effect", "effect_on", "messages", "not_done_line", "skipped_line", "summary_line"]


class Effect(enum.Enum):
    """What one action did to one message: only ``DONE`` counts in the command's line;
    the others but ``WAITS`` get a line saying why (:func:`not_done_line`)."""

    DONE = enum.auto()
    WAITS = enum.auto()
    """The message's delivery round is under way: the action waits for its end."""
    GONE = enum.auto()
    """The message is no longer in the queue."""
    HELD = enum.auto()
    """A flush passes a held message over (Postfix's ``postqueue -f`` too)."""


def effect_on(entry: QueueEntry, action: str) -> Effect:
    """Whether ``action`` would act on ``entry`` (``DONE``), or why not."""
    if action == "flush" and entry.held:
        return Effect.HELD
    return Effect.DONE


def summary_line(action: str, done: int, waiting: int = 0) -> str:
    """The command's line: the messages the action took effect on, not those it
    matched (``queue flush: 1 message``), and those that wait for their round
    (``queue delete: 0 messages, 1 waiting for its delivery round``)."""
    line = f"queue {action}: {messages(done)}"
    if waiting == 1:
        line += ", 1 waiting for its delivery round"
    elif waiting:
        line += f", {waiting} waiting for their delivery rounds"
    return line


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
