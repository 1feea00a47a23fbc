"""The log lines for clients a session limit turned away, bounded whatever the flood.

A refused connection costs the server a line only the first time a client meets
a limit, then one count at most every :attr:`TurnedAwayLog.interval` seconds:
one line a refusal would let a client fill the disk, and a slow log reader slow
the whole server to the log's pace. Every line, whatever it says, comes out of
one budget (:class:`LineBudget`): at most ``max_lines`` (1,000) in any
interval; the refusals past it are counted together, in one line when the
budget has room again.

Admitted sessions never come here, and nothing runs on a timer: a count waiting
is written with a later refusal that finds room, when its client is forgotten
to make room for another, or when the server stops (:meth:`TurnedAwayLog.close`).
So a count may lag its refusals by the interval or more, and the counts still
waiting are lost if the process ends without that stop: a second ``SIGTERM`` or
``SIGINT`` ends it by the signal's default action, and so does a kill.

A client is the block the per-address limit counts it under
(:func:`~smtpcore._ip.client_block`): an IPv6 client that changes the low bits
of its address each connection is still one client, with one line and a count.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

from smtpcore._plural import counted

__all__ = ["STOPPING", "LineBudget", "TurnedAwayLog"]

STOPPING: Final = ("server stopping: session", "shutting down")
"""The headline and reason of the lines for a client turned away because the server
is stopping (its ``421 4.3.2``, POP3's ``-ERR [SYS/TEMP]``)."""

_Key = tuple[str, str, str]
"""(what the client is counted under, the limit, the headline of its lines)."""


class LineBudget:
    """At most ``lines`` lines in any ``interval`` seconds, a sliding window: the
    times of the last ``lines`` lines written, so that no edge of a fixed window
    lets twice the budget through in a moment."""

    def __init__(self, lines: int, interval: float) -> None:
        self.interval = interval
        self._times: deque[float] = deque(maxlen=lines)

    def take(self, now: float) -> bool:
        """Whether a line may be written at ``now``, counted if so."""
        times = self._times
        if times.maxlen == 0:
            return False
        if len(times) == times.maxlen and now - times[0] < self.interval:
            return False
        times.append(now)
        return True


class TurnedAwayLog:
    """Per client address and limit: the first refusal's line, then a count.

    ``too many sessions from [192.0.2.7]:40312: refused (max-sessions-per-address
    50)``, then ``too many sessions from [192.0.2.7]: 1234 more refused
    (max-sessions-per-address 50) since the last line``; an IPv6 client's lines
    name its block, ``too many sessions from [2001:db8::7]:40312 in 2001:db8::/84:
    refused (...)`` and ``too many sessions from 2001:db8::/84: ...``. At most ``max_tracked``
    clients are remembered, the one refused longest ago forgotten first (its count
    written then), so memory stays bounded when the flood comes from many addresses.

    Lines stay bounded too: every line this writes, in any :attr:`interval`, comes
    out of one budget of ``max_lines``. A refusal that finds no room is counted with
    the others, in one line at most every interval, with the first refusal that finds
    room: ``sessions turned away: 5000 more from 4000 other clients since the last
    line`` (``from more than 1000 other clients`` when there were more of them than
    it remembers apart). Only :meth:`close` may write past the budget, and one line
    only: the others' count, which no later refusal would write.

    A client a stopping server turns away is logged so too, under another headline:
    ``server stopping: session from [192.0.2.7]:40312: refused (shutting down)``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        max_tracked: int = 1000,
        max_lines: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_tracked = max_tracked
        self.clock = clock
        self.budget = LineBudget(max_lines, interval)
        self._unsaid: OrderedDict[_Key, _Client] = OrderedDict()
        """What the lines have said of each client remembered, oldest refused first."""
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
        named_as = _counted(client, block)
        if named_as != _address(client):
            client = f"{client} in {named_as}"
        key = (named_as, limit, headline)
        now = self.clock()
        if self._others.sessions and now - self._others.since >= self.interval:
            self._say_others(now)  # a new self._others once written: no local copy
        seen = self._unsaid.get(key)
        if seen is None:
            named = self._first_line(now, key, client)
            self._unsaid[key] = _Client(now, named)
            if len(self._unsaid) > self.max_tracked:
                self._forget(*self._unsaid.popitem(last=False), now=now)
            return
        self._unsaid.move_to_end(key)
        if not seen.named:  # with the others until an interval after it came, and room
            if now - seen.said_at < self.interval:
                self._others.add(key, 1, now, self.max_tracked)
            elif self._first_line(now, key, client):
                seen.said_at, seen.named = now, True
            return
        seen.unsaid += 1
        if now - seen.said_at < self.interval:
            return
        if seen.unsaid == 1:  # the first since a quiet interval: a line of its own
            if not self.budget.take(now):
                return  # waits, counted, for a refusal that finds room
            self._refused_line(key, client)
        elif not self._say(key, seen, now):
            return
        seen.said_at, seen.unsaid = now, 0

    def write_waiting(self) -> None:
        """Write every count waiting that the budget has room for, and forget every
        client; the others' count too, if there is room. For a log no stop will
        :meth:`close` (the server has stopped): its refusals are written as they come,
        but never past the budget, so the others' count waits for a refusal that finds
        room, and is lost if none comes."""
        now = self._forget_all()
        if self._others.sessions:
            self._say_others(now)

    def close(self) -> None:
        """Write every count still waiting, and forget every client: the server
        stops, and no later refusal would write them. The counts the budget has no
        room for go into the others' line, written last even past the budget."""
        self._forget_all()
        if self._others.sessions:
            self._write_others()

    def _forget_all(self) -> float:
        """Forget every client, its count written (:meth:`_forget`); the time it was."""
        now = self.clock()
        while self._unsaid:
            self._forget(*self._unsaid.popitem(last=False), now=now)
        return now

    def _first_line(self, now: float, key: _Key, client: str) -> bool:
        """The client's first line, if the budget has room; else it is counted with the
        others. Whether it was written."""
        if self.budget.take(now):
            self._refused_line(key, client)
            return True
        self._others.add(key, 1, now, self.max_tracked)
        return False

    def _refused_line(self, key: _Key, client: str) -> None:
        _, limit, headline = key
        self.logger.info("%s from %s: refused (%s)", headline, client, limit)

    def _forget(self, key: _Key, seen: _Client, *, now: float) -> None:
        """Forget a client: its count in a line of its own while the budget has room
        for one, else with the others'."""
        if seen.unsaid and not self._say(key, seen, now):
            self._others.add(key, seen.unsaid, now, self.max_tracked)

    def _say(self, key: _Key, seen: _Client, now: float) -> bool:
        """The client's count, if the budget has room: whether it was written."""
        if not self.budget.take(now):
            return False
        address, limit, headline = key
        self.logger.info(
            "%s from %s: %d more refused (%s) since the last line",
            headline,
            address,
            seen.unsaid,
            limit,
        )
        return True

    def _say_others(self, now: float) -> None:
        """The others' count, if the budget has room; else it waits for a refusal
        that finds some."""
        if self.budget.take(now):
            self._write_others()

    def _write_others(self) -> None:
        others = self._others
        clients = counted(len(others.clients), "other client")
        self.logger.info(
            "sessions turned away: %d more from %s since the last line",
            others.sessions,
            f"more than {clients}" if others.more else clients,
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
    """The refusals the budget had no room for, counted together: how many, from how
    many clients (remembered apart up to a bound), and since when."""

    __slots__ = ("clients", "more", "sessions", "since")

    def __init__(self) -> None:
        self.sessions = 0
        self.clients: set[_Key] = set()
        self.more = False
        """Whether there were more clients than :attr:`clients` could hold."""
        self.since = 0.0

    def add(self, key: _Key, sessions: int, now: float, most: int) -> None:
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
