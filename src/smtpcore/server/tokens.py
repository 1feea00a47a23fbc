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

The line is an :class:`~collections.OrderedDict`, not a list: a stop cancels every
waiter at once, in no particular order, and each must leave the line in constant time
(a list's ``remove`` made that quadratic: 20,000 waiters held a stop for seconds); and
its first waiter is found in constant time too (a plain dict scans the slots its
earlier first waiters left). A waiter may
also be withdrawn, without a cancellation, when its round is (an operator's ``hold`` or
``delete``): it leaves the line and gets no token.

The delivery worker's disk work takes its turn in the server's threads with tokens of
the same kind (:class:`~smtpcore.server.waits.ThreadShare`).
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["SessionTokens"]


class SessionTokens:
    """``count`` tokens, and a line of the jobs waiting for one, oldest first."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("the relay needs at least one session token")
        self._free = count
        self._line: collections.OrderedDict[asyncio.Future[bool], asyncio.Future[None] | None] = (
            collections.OrderedDict()
        )
        """Waiters, oldest first, each with what withdraws it (if anything); each learns
        True (a token) or False (withdrawn). One cancelled or withdrawn leaves at once."""

    @property
    def free(self) -> int:
        """Tokens nobody holds."""
        return self._free

    @property
    def waiting(self) -> int:
        """Jobs in line for a token."""
        return sum(not waiter.done() for waiter in self._line)

    async def take(self, withdrawn: asyncio.Future[None] | None = None) -> bool:
        """A token (True), now if one is free and nobody waits, else when it is this
        one's turn; or none (False) if ``withdrawn`` is done first, or already. Cancelled
        in line, the job leaves it; cancelled as a token is handed to it, it passes that
        token on, so that none is lost.

        "First" holds within one turn of the event loop as well: a withdrawal is done
        before its callback takes the waiter out of the line, and a token given back in
        between (a session ending in the same turn) would have gone to it; it passes
        that waiter by (:meth:`give_back`). A withdrawal that comes after the token does
        not take it back: the caller, holding it, must look at ``withdrawn`` itself."""
        if withdrawn is not None and withdrawn.done():
            return False
        if self._free and not self._line:
            self._free -= 1
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._line[waiter] = withdrawn
        if withdrawn is not None:
            withdrawn.add_done_callback(lambda _: self._withdraw(waiter))
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.give_back()
            self._line.pop(waiter, None)
            raise

    def _withdraw(self, waiter: asyncio.Future[bool]) -> None:
        """``waiter`` leaves the line with no token, unless it has one already."""
        if not waiter.done():
            del self._line[waiter]
            waiter.set_result(False)

    def give_back(self) -> None:
        """A token goes to the first job in line still waiting and not withdrawn, or is
        free again. One withdrawn whose callback has not yet run leaves now, with none."""
        while self._line:
            waiter, withdrawn = self._line.popitem(last=False)
            if waiter.done():
                continue
            if withdrawn is not None and withdrawn.done():
                waiter.set_result(False)
                continue
            waiter.set_result(True)
            return
        self._free += 1
