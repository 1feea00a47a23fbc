"""A queue whose envelope writes wait: how a test holds a delivery round, or a queue
command, in the middle of recording, to stop the server right there."""

from __future__ import annotations

import threading
from typing import Any

import pytest


class SlowWrites:
    """Each ``queue.update`` sets :attr:`writing`, then waits for :attr:`back` (at most
    ``hold`` seconds) before it writes: a slow disk, or an NFS server's fsync."""

    def __init__(self, queue: Any, monkeypatch: pytest.MonkeyPatch, *, hold: float) -> None:
        self.writing = threading.Event()
        """Set once a write has started (and is held)."""
        self.back = threading.Event()
        """Set by the test to let the held writes go on."""
        update = queue.update

        def slow_update(entry: Any) -> None:
            self.writing.set()
            self.back.wait(hold)
            update(entry)

        monkeypatch.setattr(queue, "update", slow_update)
