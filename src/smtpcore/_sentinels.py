"""The two values ``next_event()`` returns when it has no event to give.

They are members of an :class:`enum.Enum`, so ``if event is NEED_DATA:``
narrows the type under ``mypy --strict`` (h11's metaclass sentinels do not).
"""

from __future__ import annotations

import enum
from typing import Final, Literal

__all__ = ["NEED_DATA", "PAUSED", "NoEvent", "Sentinel"]


class Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"
    """Feed more bytes with ``receive_data()`` before asking again."""

    PAUSED = "PAUSED"
    """The machine waits for the application to answer the last event."""

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA
PAUSED: Final = Sentinel.PAUSED

NoEvent = Literal[Sentinel.NEED_DATA, Sentinel.PAUSED]
"""The type of the two sentinels, for return annotations."""
