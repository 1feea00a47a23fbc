"""The writes of one message's envelope, one at a time in a thread, the newest entry
winning. Apart because the worker's concurrent destination jobs share it and its lock
is its whole job."""

from __future__ import annotations

import threading
from collections.abc import Callable

from smtpcore.server.queue import QueueEntry

__all__ = ["_Envelope"]


class _Envelope:
    """The writes of one message's envelope, in a thread, one at a time, each writing
    the newest entry given (:attr:`latest`): writes handed over at once by concurrent
    jobs land in order, and none undoes a newer one. A write that finds the newest entry
    on disk already has nothing to do."""

    __slots__ = ("__weakref__", "_lock", "_on_disk", "latest")

    def __init__(self, entry: QueueEntry) -> None:
        self.latest = entry
        self._lock = threading.Lock()
        self._on_disk: QueueEntry | None = None

    def write(self, update: Callable[[QueueEntry], None]) -> QueueEntry:
        """Write :attr:`latest` with ``update`` (in a thread); the entry now on disk."""
        with self._lock:
            latest = self.latest
            if latest is not self._on_disk:
                update(latest)
                self._on_disk = latest
            return latest
