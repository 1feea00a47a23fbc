"""Session tokens: the bound on the relay's outbound SMTP sessions open at once, handed
out first come, first served.

A destination job waits here once it holds a place at its destination
(:mod:`smtpcore.server.places`), and keeps its token while its sessions run. A token
given back goes straight to the job that has waited longest, never to one that just
asked: :class:`asyncio.Semaphore` before Python 3.11 let a newcomer take a token
between its release and the waiter's wake-up, and sent that waiter to the back of the
line, so while hanging exchangers hold most tokens a steady flow of new mail could keep
an older message waiting for ever. Every session is bounded by the per-reply timeouts
of RFC 5321 §4.5.3.2, so each waiter's turn comes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

__all__ = ["SessionTokens"]


class SessionTokens:
    """``count`` tokens, and a line of the jobs waiting for one, oldest first."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("the relay needs at least one session token")
        self._free = count
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def free(self) -> int:
        """Tokens nobody holds."""
        return self._free

    @property
    def waiting(self) -> int:
        """Jobs in line for a token."""
        return sum(not waiter.done() for waiter in self._line)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """A token for the block: taken (:meth:`take`), and given back however it ends."""
        await self.take()
        try:
            yield
        finally:
            self.give_back()

    async def take(self) -> None:
        """A token, now if one is free and nobody waits, else when it is this one's turn.
        Cancelled in line, the job leaves it; cancelled as a token is handed to it, it
        passes that token on, so that none is lost."""
        if self._free and not self._line:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give_back()
            else:
                with contextlib.suppress(ValueError):
                    self._line.remove(waiter)
            raise

    def give_back(self) -> None:
        """A token goes to the first job in line still waiting, or is free again."""
        while self._line:
            waiter = self._line.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
