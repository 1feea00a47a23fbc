"""Places at each destination: how many sessions the relay holds at one next hop.

One slow or hanging next hop must not hold every delivery (RFC 5321 §4.5.4.1 asks
for retries per destination; Postfix's qmgr gives each destination its own
``default_destination_concurrency_limit``). A destination job takes a place here
without waiting: when its destination is full, it is turned away and its message
joins that destination's line, while the message's other destinations go on.

A place given back goes to the message that has waited longest in the line, never
to a newcomer: while anyone waits, :meth:`DestinationPlaces.take` refuses whoever is
not owed a place. That is why no message starves: the line is first come, first
served, every place taken is given back when its session ends (each session is
bounded by the per-reply timeouts of RFC 5321 §4.5.3.2), and each handover moves
everyone in the line one step to the front. A message waiting at two busy
destinations waits in both lines at once and takes each place as it comes; it never
needs both free at the same moment.

Pure bookkeeping, no clock and no I/O: :class:`~smtpcore.server.delivery.DeliveryWorker`
starts the rounds and the sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smtpcore.routing import RemoteDelivery

__all__ = ["DestinationPlaces", "default_destination_concurrency", "destination"]


def destination(delivery: RemoteDelivery) -> str:
    """Where the relay connects for ``delivery``, as the per-destination limit counts it
    (Postfix's nexthop): the smart host, ``[host]:port``, when one is set, else the
    recipient's domain. Two domains served by one exchanger are two destinations, as in
    Postfix."""
    if delivery.smart_host is not None:
        host, port = delivery.smart_host
        return f"[{host}]:{port}"
    return delivery.domain


def default_destination_concurrency(concurrency: int, *, smart_host: bool) -> int:
    """Places per destination when the operator names none: half the ``concurrency``
    sessions (Postfix's ``default_destination_concurrency_limit`` is half its
    ``default_process_limit``), so one next hop that never answers cannot hold them
    all. With a smart host every remote message has that one destination, and there is
    no other to keep sessions for: it gets all ``concurrency``."""
    if smart_host:
        return concurrency
    return max(concurrency // 2, 1)


@dataclass
class DestinationPlaces:
    """``limit`` places per destination, and a line of waiting messages at each."""

    limit: int
    _taken: dict[str, int] = field(default_factory=dict)
    """Per destination, places in use or handed to a waiting message (reserved)."""
    _reserved: dict[str, set[str]] = field(default_factory=dict)
    """Per destination, the messages a place was handed to, not yet taken up."""
    _line: dict[str, dict[str, None]] = field(default_factory=dict)
    """Per destination, the messages turned away, oldest first (an ordered set)."""

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("a destination needs at least one place")

    def take(self, place: str, queue_id: str) -> bool:
        """A place at ``place`` for ``queue_id``, now or never: True if it holds one
        (one handed to it, or a free one nobody waits for); False if it is turned away,
        and then it waits in the line (keeping its turn if it was there already)."""
        reserved = self._reserved.get(place, set())
        if queue_id in reserved:
            reserved.discard(queue_id)
            return True
        line = self._line.setdefault(place, {})
        if self._taken.get(place, 0) < self.limit and not line:
            self._taken[place] = self._taken.get(place, 0) + 1
            return True
        line.setdefault(queue_id, None)
        return False

    def give_back(self, place: str) -> str | None:
        """End a session's hold on ``place``: the place goes to the first message in the
        line, which is returned (its next job there takes it), or is free again."""
        line = self._line.get(place)
        if line:
            heir = next(iter(line))
            del line[heir]
            self._reserved.setdefault(place, set()).add(heir)
            return heir
        left = self._taken.get(place, 0) - 1
        if left > 0:
            self._taken[place] = left
        else:
            self._taken.pop(place, None)
            self._line.pop(place, None)
            self._reserved.pop(place, None)
        return None

    def in_line(self, place: str, queue_id: str) -> bool:
        """Whether ``queue_id`` waits in ``place``'s line (a place handed to it is not
        a wait: its next job takes it)."""
        return queue_id in self._line.get(place, {})

    def awaited_by(self, queue_id: str) -> frozenset[str]:
        """The destinations where ``queue_id`` waits in line or has a place handed to it."""
        waiting = {p for p, line in self._line.items() if queue_id in line}
        handed = {p for p, reserved in self._reserved.items() if queue_id in reserved}
        return frozenset(waiting | handed)

    def handed(self, queue_id: str) -> bool:
        """Whether a place was handed to ``queue_id`` that its next job must take up."""
        return any(queue_id in reserved for reserved in self._reserved.values())

    def withdraw(self, queue_id: str, place: str) -> str | None:
        """``queue_id`` no longer waits at ``place`` (delivered, held, deleted, its round
        broken, or its recipients there gone): it leaves the line, and a place handed to
        it is given back, to the next in line (returned, as by :meth:`give_back`)."""
        self._line.get(place, {}).pop(queue_id, None)
        reserved = self._reserved.get(place, set())
        if queue_id not in reserved:
            return None
        reserved.discard(queue_id)
        return self.give_back(place)

    def in_use(self, place: str) -> int:
        """Places at ``place`` in use or handed over."""
        return self._taken.get(place, 0)
