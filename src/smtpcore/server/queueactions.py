"""The operator's commands (``python -m smtpcore queue``: ``hold``, ``release``,
``flush``, ``delete``) carried out on the queue of a running server, between its
delivery rounds: a message in delivery is acted on when its round ends, and actions
on one message are carried out in the order given. A ``hold`` or ``delete`` cuts the
round short first: what it has not yet begun to send is not sent (:data:`STOPPING`).
The command files themselves are :mod:`smtpcore.server.queuectl`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

from smtpcore.server.deadhops import DeadHops
from smtpcore.server.log import loggable, logger
from smtpcore.server.queue import Queue, QueueEntry
from smtpcore.server.queuectl import QueueCommand, dropped_report
from smtpcore.server.queueeffects import (
    CARRIED_OUT,
    Effect,
    already_line,
    effect_on,
    not_done_line,
)
from smtpcore.server.waits import ThreadShare

__all__ = [
    "STOPPING",
    "TRYING_NOW",
    "ActingWorker",
    "Applied",
    "QueueActions",
]

STOPPING: Final = frozenset({"hold", "delete"})
"""Actions that stop a message's delivery. Carried out when its round ends, like any
other, they first cut that round short: its destination jobs still waiting for a
session are withdrawn, their recipients left pending and not attempted, so the round
ends without sending them, and the action at once. With rounds bounded apart from
sessions, a round may wait long for one (while hanging exchangers hold them all): a
message deleted then would otherwise be sent as soon as a session came free. A job
already in a session goes on, and the action waits for it."""

TRYING_NOW: Final = frozenset({"flush", "release"})
"""Actions that ask for a message to be tried at once. They first forget every
suspended destination (:meth:`DeadHops.forget_all
<smtpcore.server.deadhops.DeadHops.forget_all>`), as Postfix's ``postqueue -f`` does:
else the mail for a hop that is back would only be deferred again, without a try,
until the suspension ran out."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`DeliveryWorker.apply <smtpcore.server.delivery.DeliveryWorker.apply>`
    did with one operator's command: ``ids``, the messages it matched; ``done``, how
    many of them the action took effect on now; ``waiting``, how many wait for their
    delivery round to end (each then gets a line if it does not take effect);
    ``already``, how many it found as it leaves them (:attr:`Effect.ALREADY
    <smtpcore.server.queueeffects.Effect.ALREADY>`), acted on but not counted done; and
    ``written``, which becomes True once every action is on disk, False if one could
    not be written (it is logged). Until True, the command's file must stay: a crash
    would lose the actions still in memory, which the tool has reported handed over."""

    ids: tuple[str, ...]
    written: asyncio.Future[bool]
    done: int = 0
    waiting: int = 0
    already: int = 0


def _all_written(waiting: Sequence[asyncio.Future[bool]]) -> asyncio.Future[bool]:
    """One future for many: True once every one is, False as soon as one is not."""
    combined: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    left = len(waiting)

    def settled(one: asyncio.Future[bool]) -> None:
        nonlocal left
        left -= 1
        if combined.done():
            return
        if one.cancelled() or not one.result():
            combined.set_result(False)
        elif not left:
            combined.set_result(True)

    if not waiting:
        combined.set_result(True)
    for one in waiting:
        one.add_done_callback(settled)
    return combined


class ActingWorker(Protocol):
    """What the operator's actions read and change of the delivery worker: its
    schedule (an action takes the message out of it, and never acts while a round
    delivers it) and its record of the queue."""

    queue: Queue
    disk: ThreadShare
    clock: Callable[[], float]
    dead_hops: DeadHops
    _due: dict[str, float]
    _running: dict[str, asyncio.Task[None]]
    _unsaved: dict[str, QueueEntry]
    _copies_begun: dict[str, set[str]]

    def schedule(self, entry: QueueEntry, *, new: bool = False) -> None: ...

    def bring_forward(self, entry: QueueEntry) -> None: ...

    def _cut_round_short(self, queue_id: str) -> None: ...

    def _forget_if_unscheduled(self, queue_id: str) -> None: ...

    async def _load(self, queue_id: str) -> QueueEntry: ...

    async def _write(self, entry: QueueEntry) -> None: ...

    async def _gone(self, queue_id: str, exc: BaseException) -> bool: ...


class QueueActions:
    """The operator's actions on the queue of one
    :class:`~smtpcore.server.delivery.DeliveryWorker` (``worker``)."""

    def __init__(self, worker: ActingWorker) -> None:
        self.worker = worker
        self.after_round: dict[str, list[tuple[str, asyncio.Future[bool]]]] = {}
        """Per message in delivery, the operator's actions that wait for its round to end,
        oldest first, each with the future that says when it is written. A message stays
        here until they are all carried out, and a newer action for it queues behind them,
        so that actions on one message are carried out in the order given."""
        self._draining: set[str] = set()
        """Messages whose waiting actions a task is carrying out (one task per message)."""
        self.control_tasks: set[asyncio.Task[None]] = set()

    def round_ended(self, queue_id: str) -> None:
        """``queue_id``'s round ended: the actions that waited for it are carried out,
        by one task per message."""
        if queue_id in self.after_round and queue_id not in self._draining:
            self._draining.add(queue_id)
            follow = asyncio.get_running_loop().create_task(self._apply_waiting(queue_id))
            self.control_tasks.add(follow)
            follow.add_done_callback(self.control_tasks.discard)

    async def apply(self, command: QueueCommand) -> Applied:
        """Carry out ``command`` on the queue. A message in delivery, or with actions that
        still wait for its round, is acted on after them, when its round ends. An action
        the disk refuses now raises (those before it stand). A ``flush`` or ``release``
        first forgets every suspended destination (:data:`TRYING_NOW`)."""
        if command.action in TRYING_NOW:
            self.worker.dead_hops.forget_all(f"queue {command.action}")
        entries = await self.worker.disk.run(self.worker.queue.entries)
        ids = []
        waiting = []
        done = already = 0
        for entry in entries:
            if not command.applies_to(entry.id):
                continue
            ids.append(entry.id)
            busy = self._in_round(entry.id, command.action) or entry.id in self.after_round
            effect = Effect.WAITS if busy else await self.act(entry.id, command.action)
            if effect is Effect.WAITS:
                written = asyncio.get_running_loop().create_future()
                self.after_round.setdefault(entry.id, []).append((command.action, written))
                waiting.append(written)
            elif effect is Effect.DONE:
                done += 1
            elif effect is Effect.ALREADY:
                already += 1
            else:
                self.not_done(entry.id, command.action, effect, after_round=False)
        return Applied(tuple(ids), _all_written(waiting), done, len(waiting), already)

    @staticmethod
    def not_done(queue_id: str, action: str, effect: Effect, *, after_round: bool) -> None:
        """Log the line for an action that matched ``queue_id`` and did nothing to it
        (:func:`~smtpcore.server.queueeffects.not_done_line`)."""
        logger.info("%s", not_done_line(queue_id, action, effect, after_round=after_round))

    async def _apply_waiting(self, queue_id: str) -> None:
        """Carry out, oldest first, the actions that waited for ``queue_id``'s round. A
        round begun meanwhile makes the rest wait for its end. An action that fails is
        logged, and it and the rest count as not written: their commands are carried
        out again, in order, at the next SIGUSR1 or start."""
        waiting = self.after_round[queue_id]
        try:
            while waiting:
                action, written = waiting[0]
                try:
                    effect = await self.act(queue_id, action)
                    if effect is Effect.WAITS:
                        return  # a round began: its end carries on from here
                    if effect is Effect.ALREADY:
                        logger.info("%s", already_line(queue_id, action))
                    elif effect is not Effect.DONE:
                        self.not_done(queue_id, action, effect, after_round=True)
                except Exception:
                    logger.exception(
                        "%s: queue %s failed after its delivery round", queue_id, action
                    )
                    for _, unwritten in waiting:
                        unwritten.set_result(False)
                    waiting.clear()
                else:
                    waiting.pop(0)
                    written.set_result(True)
            del self.after_round[queue_id]
        finally:
            self._draining.discard(queue_id)

    def _in_round(self, queue_id: str, action: str) -> bool:
        """Whether a round delivers ``queue_id``, so that ``action`` waits for its end;
        one that stops the message (:data:`STOPPING`) cuts that round short."""
        if queue_id not in self.worker._running:
            return False
        if action in STOPPING:
            self.worker._cut_round_short(queue_id)
        return True

    async def act(self, queue_id: str, action: str) -> Effect:
        """``action`` on one message now, on disk when this returns (but ``WAITS``); what
        the disk refuses is raised. ``GONE`` for a message no longer there, ``HELD`` for a
        held one a flush leaves alone. ``WAITS``, with nothing done, while a round
        delivers the message:
        the round writes its entry back at its end, over a ``hold`` made meanwhile, so
        the action must wait for that end (a ``hold`` or ``delete`` cuts it short:
        :data:`STOPPING`).

        No round begins while this acts, whatever the action: one begun, and ended,
        while the entry was read or written would have its record written over with the
        entry as read (its recipients sent again, or the envelope of the message it
        delivered and removed put back without its content).

        A ``hold`` or ``delete`` the disk refuses leaves the message out of the schedule,
        as the operator asked: it is not delivered before its command, kept, is carried
        out again (at the next SIGUSR1, which any ``queue`` command sends, or start)."""
        if self._in_round(queue_id, action):
            return Effect.WAITS
        due = self.worker._due.pop(queue_id, None)
        try:
            return await self._act_unscheduled(queue_id, action)
        except BaseException:
            if due is not None and action in ("flush", "release"):
                self.worker._due.setdefault(queue_id, due)  # not done: it goes on as it was
            raise
        finally:
            self.worker._forget_if_unscheduled(queue_id)

    async def _act_unscheduled(self, queue_id: str, action: str) -> Effect:
        """:meth:`act`, the message out of the schedule."""
        try:
            entry = await self.worker._load(queue_id)
        except FileNotFoundError as exc:
            if await self.worker._gone(queue_id, exc):
                return Effect.GONE  # delivered or deleted meanwhile: nothing left to act on
            raise
        if self._in_round(queue_id, action):  # scheduled anew, and begun, as the entry was read
            return Effect.WAITS
        if (effect := effect_on(entry, action)) not in CARRIED_OUT:
            return effect
        if action == "delete":
            await self.worker.disk.now(self._remove_by_operator, entry)
            self.worker._unsaved.pop(queue_id, None)
            self.worker._copies_begun.pop(queue_id, None)
        elif action == "hold":
            await self.worker._write(replace(entry, held=True))
            if effect is Effect.DONE:
                logger.info("%s: on hold (queue hold)", queue_id)
        elif action == "release":
            entry = replace(entry, held=False, next_attempt=self.worker.clock())
            await self.worker._write(entry)
            if effect is Effect.DONE:
                logger.info("%s: released (queue release)", queue_id)
            self.worker.schedule(entry)
        else:  # flush
            self.worker.bring_forward(entry)
        return effect

    def _remove_by_operator(self, entry: QueueEntry) -> None:
        """``queue delete``: the files removed and the operator's record of it in one
        step, in the thread. A stop that cancels the action while the files go cannot
        leave the deletion out of the log (the next start finds the message gone, and
        says nothing), nor log one that did not happen."""
        self.worker.queue.remove(entry.id)
        logger.info("%s: removed by the operator (queue delete)", entry.id)
        if (dropped := dropped_report(entry)) is not None:
            logger.warning("%s", loggable(dropped))
