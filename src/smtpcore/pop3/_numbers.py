"""Message numbers: which exist and which are marked deleted (RFC 1939 §5).

The machine checks only that a number is well formed; whether message 3
exists is a fact about the maildrop. This small helper keeps that fact for an
application that has its maildrop's message count at login.
"""

from __future__ import annotations

from collections.abc import Iterator

from smtpcore._errors import LocalProtocolError
from smtpcore.pop3._events import Err

__all__ = ["MessageNumbers"]


class MessageNumbers:
    """The numbers 1 to ``count``, and the deletion marks of one session.

    Marks are only marks: the messages go in the UPDATE state, after QUIT
    (RFC 1939 §6), and :meth:`reset` (for RSET) clears them.
    """

    __slots__ = ("_count", "_deleted")

    def __init__(self, count: int) -> None:
        if type(count) is not int or count < 0:
            raise LocalProtocolError(f"a message count is a non-negative int: {count!r}")
        self._count = count
        self._deleted: set[int] = set()

    @property
    def count(self) -> int:
        """How many messages the maildrop held at login, deleted ones included."""
        return self._count

    @property
    def deleted(self) -> frozenset[int]:
        return frozenset(self._deleted)

    def check(self, number: int) -> Err | None:
        """``None`` when ``number`` may be used, else the ``-ERR`` to answer with."""
        if not 1 <= number <= self._count:
            return Err(f"No such message: {number}")
        if number in self._deleted:
            return Err(f"Message {number} already deleted")
        return None

    def delete(self, number: int) -> Err | None:
        """Mark ``number`` deleted; ``None`` on success, else the ``-ERR`` to answer with."""
        problem = self.check(number)
        if problem is None:
            self._deleted.add(number)
        return problem

    def reset(self) -> None:
        """Unmark every message (RSET)."""
        self._deleted.clear()

    def __iter__(self) -> Iterator[int]:
        """The numbers not marked deleted, in order (for STAT, LIST and UIDL)."""
        return (n for n in range(1, self._count + 1) if n not in self._deleted)

    def __len__(self) -> int:
        """How many messages are not marked deleted."""
        return self._count - len(self._deleted)
