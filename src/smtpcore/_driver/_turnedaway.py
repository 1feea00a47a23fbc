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
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["TurnedAwayLog"]


class TurnedAwayLog:
    """Per client address and limit: the first refusal's line, then a count.

    ``too many sessions from [192.0.2.7]:40312: refused (max-sessions-per-address
    50)``, then ``too many sessions from [192.0.2.7]: 1234 more refused
    (max-sessions-per-address 50) since the last line``; an IPv6 client's lines
    name its block, ``too many sessions from [2001:db8::7]:40312 in 2001:db8::/84:
    refused (...)`` and ``too many sessions from 2001:db8::/84: ...``. At most ``max_tracked``
    clients are remembered, the one refused longest ago forgotten first (its count
    written then), so memory stays bounded when the flood comes from many addresses.
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
        self._unsaid: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        """(address, limit) -> [when its last line was written, refusals since]."""

    def refused(self, client: str, limit: str, block: str | None = None) -> None:
        """``client`` (as :func:`~smtpcore._driver._proxied.client_text` names it)
        was turned away by ``limit`` (``max-sessions 2000``); ``block`` is what the
        limit counts it under (:func:`~smtpcore._ip.client_block`; None: its address)."""
        counted = _counted(client, block)
        if counted != _address(client):
            client = f"{client} in {counted}"
        key = (counted, limit)
        now = self.clock()
        seen = self._unsaid.get(key)
        if seen is None:
            self.logger.info("too many sessions from %s: refused (%s)", client, limit)
            self._unsaid[key] = [now, 0]
            if len(self._unsaid) > self.max_tracked:
                self._say(*self._unsaid.popitem(last=False))
            return
        self._unsaid.move_to_end(key)
        seen[1] += 1
        if now - seen[0] < self.interval:
            return
        if seen[1] == 1:  # the first since a quiet interval: a line of its own
            self.logger.info("too many sessions from %s: refused (%s)", client, limit)
        else:
            self._say(key, seen)
        seen[:] = [now, 0]

    def close(self) -> None:
        """Write every count still waiting, and forget every client: the server
        stops, and no later refusal would write them."""
        while self._unsaid:
            self._say(*self._unsaid.popitem(last=False))

    def _say(self, key: tuple[str, str], seen: list[float]) -> None:
        address, limit = key
        if seen[1]:
            self.logger.info(
                "too many sessions from %s: %d more refused (%s) since the last line",
                address,
                seen[1],
                limit,
            )


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
