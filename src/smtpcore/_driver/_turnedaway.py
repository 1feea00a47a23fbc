"""The log lines for clients a session limit turned away, bounded whatever the flood.

A refused connection costs the server a line only the first time a client meets
a limit, then one count at most every :attr:`TurnedAwayLog.interval` seconds:
one line a refusal would let a client fill the disk, and a slow log reader slow
the whole server to the log's pace. Admitted sessions never come here, and
nothing runs on a timer: a count waiting is written with that client's next
refusal after the interval, when it is forgotten to make room for another, or
when the server stops (:meth:`TurnedAwayLog.close`): a count may lag its
refusals by up to the interval, but none goes unwritten.

A client is the block the per-address limit counts it under
(:func:`~smtpcore._ip.client_block`): an IPv6 client that changes the low bits
of its address each connection is still one client, with one line and a count.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

__all__ = ["STOPPING", "TurnedAwayLog"]

STOPPING: Final = ("server stopping: session", "shutting down")
"""The headline and reason of the lines for a client turned away because the server
is stopping (its ``421 4.3.2``, POP3's ``-ERR [SYS/TEMP]``)."""


class TurnedAwayLog:
    """Per client address and limit: the first refusal's line, then a count.

    ``too many sessions from [192.0.2.7]:40312: refused (max-sessions-per-address
    50)``, then ``too many sessions from [192.0.2.7]: 1234 more refused
    (max-sessions-per-address 50) since the last line``; an IPv6 client's lines
    name its block, ``too many sessions from [2001:db8::7]:40312 in 2001:db8::/84:
    refused (...)`` and ``too many sessions from 2001:db8::/84: ...``. At most ``max_tracked``
    clients are remembered, the one refused longest ago forgotten first (its count
    written then), so memory stays bounded when the flood comes from many addresses.

    Lines stay bounded too: in any :attr:`interval`, at most ``max_tracked`` clients
    get a first line, and at most ``max_tracked`` forgotten ones their count. The
    clients past that are counted together, in one line at most every interval:
    ``sessions turned away: 5000 more from 4000 other clients since the last line``
    (``from more than 1000 other clients`` when there were more of them than it
    remembers apart).

    A client a stopping server turns away is logged so too, under another headline:
    ``server stopping: session from [192.0.2.7]:40312: refused (shutting down)``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        max_tracked: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_tracked = max_tracked
        self.clock = clock
        self._unsaid: OrderedDict[tuple[str, str, str], _Client] = OrderedDict()
        """(address, limit, headline) -> what its lines have said of it, oldest refused
        first."""
        self._window = [-math.inf, 0, 0]
        """[when this interval began, first lines written in it, counts written of
        clients forgotten in it]: each at most ``max_tracked`` an interval."""
        self._others = _Others()

    def refused(
        self,
        client: str,
        limit: str,
        block: str | None = None,
        *,
        headline: str = "too many sessions",
    ) -> None:
        """``client`` (as :func:`~smtpcore._driver._proxied.client_text` names it)
        was turned away by ``limit`` (``max-sessions 2000``); ``block`` is what the
        limit counts it under (:func:`~smtpcore._ip.client_block`; None: its address).
        ``headline`` begins its lines (a stopping server's: :data:`STOPPING`)."""
        counted = _counted(client, block)
        if counted != _address(client):
            client = f"{client} in {counted}"
        key = (counted, limit, headline)
        now = self.clock()
        others = self._others
        if others.sessions and now - others.since >= self.interval:
            self._say_others()
        seen = self._unsaid.get(key)
        if seen is None:
            named = self._may_write(now, 1)
            if named:
                self.logger.info("%s from %s: refused (%s)", headline, client, limit)
            else:
                others.add(key, 1, now, self.max_tracked)
            self._unsaid[key] = _Client(now, named)
            if len(self._unsaid) > self.max_tracked:
                self._forget(*self._unsaid.popitem(last=False), now=now)
            return
        self._unsaid.move_to_end(key)
        if not seen.named:  # with the others until an interval after it came, and room
            if now - seen.said_at < self.interval or not self._may_write(now, 1):
                others.add(key, 1, now, self.max_tracked)
                return
            self.logger.info("%s from %s: refused (%s)", headline, client, limit)
            seen.said_at, seen.named = now, True
            return
        seen.unsaid += 1
        if now - seen.said_at < self.interval:
            return
        if seen.unsaid == 1:  # the first since a quiet interval: a line of its own
            self.logger.info("%s from %s: refused (%s)", headline, client, limit)
        else:
            self._say(key, seen)
        seen.said_at, seen.unsaid = now, 0

    def close(self) -> None:
        """Write every count still waiting, and forget every client: the server
        stops, and no later refusal would write them."""
        while self._unsaid:
            self._say(*self._unsaid.popitem(last=False))
        if self._others.sessions:
            self._say_others()

    def _may_write(self, now: float, which: int) -> bool:
        """Whether this interval has room for one more line of kind ``which`` (1: a
        client's first line, 2: a forgotten client's count), taken if so."""
        window = self._window
        if now - window[0] >= self.interval:
            window[:] = [now, 0, 0]
        if window[which] >= self.max_tracked:
            return False
        window[which] += 1
        return True

    def _forget(self, key: tuple[str, str, str], seen: _Client, *, now: float) -> None:
        """Forget the client refused longest ago: its count in a line of its own while
        the interval has room for one, else with the others'."""
        if not seen.unsaid:
            return
        if seen.named and self._may_write(now, 2):
            self._say(key, seen)
        else:
            self._others.add(key, seen.unsaid, now, self.max_tracked)

    def _say(self, key: tuple[str, str, str], seen: _Client) -> None:
        address, limit, headline = key
        if seen.unsaid:
            self.logger.info(
                "%s from %s: %d more refused (%s) since the last line",
                headline,
                address,
                seen.unsaid,
                limit,
            )

    def _say_others(self) -> None:
        others = self._others
        clients = len(others.clients)
        self.logger.info(
            "sessions turned away: %d more from %s other clients since the last line",
            others.sessions,
            f"more than {clients}" if others.more else str(clients),
        )
        self._others = _Others()


class _Client:
    """What the lines have said of one client: when its last line was written (for
    one counted with the others, when it first came), the refusals since, and whether
    it has lines of its own."""

    __slots__ = ("named", "said_at", "unsaid")

    def __init__(self, said_at: float, named: bool) -> None:
        self.said_at = said_at
        self.unsaid = 0
        self.named = named


class _Others:
    """The refusals of clients past the lines an interval has room for, counted
    together: how many, from how many clients (remembered apart up to a bound), and
    since when."""

    __slots__ = ("clients", "more", "sessions", "since")

    def __init__(self) -> None:
        self.sessions = 0
        self.clients: set[tuple[str, str, str]] = set()
        self.more = False
        """Whether there were more clients than :attr:`clients` could hold."""
        self.since = 0.0

    def add(self, key: tuple[str, str, str], sessions: int, now: float, most: int) -> None:
        if not self.sessions:
            self.since = now
        self.sessions += sessions
        if key not in self.clients:
            if len(self.clients) < most:
                self.clients.add(key)
            else:
                self.more = True


def _counted(client: str, block: str | None) -> str:
    """The name of what ``client`` is counted under: ``[192.0.2.7]`` for an address,
    ``2001:db8::/84`` for an IPv6 block."""
    if block is None:
        return _address(client)
    return block if "/" in block else f"[{block}]"


def _address(client: str) -> str:
    """``client`` without its port: ``[192.0.2.7]`` for ``[192.0.2.7]:40312``."""
    head, bracket, _ = client.rpartition("]")
    return head + bracket if bracket else client
