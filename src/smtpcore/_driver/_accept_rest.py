"""What a listener does when ``accept`` fails for want of descriptors or memory: it
rests a second, logging one line, then accepts again. One policy for every adapter:
the connections keep waiting in the kernel's backlog meanwhile, and a shorter rest
would only fill the log (ten lines a second a listener, ~95 MB a day) and spin."""

from __future__ import annotations

import errno
import logging
from typing import Final

from smtpcore._driver._logtext import describe_error

__all__ = ["ACCEPT_REST", "OUT_OF_RESOURCES", "log_accept_rest"]

ACCEPT_REST: Final = 1.0
"""How long a listener out of descriptors (or memory) waits before accepting again."""
OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""A process out of descriptors (its own, the system's), memory or socket buffers: a
state of the host that passes, not a fault of the connection (or of a queued message:
the delivery worker waits these out too). The ``accept`` errors that are rested out;
any other is the listener's end."""


def log_accept_rest(logger: logging.Logger, exc: OSError) -> None:
    """The one line a rest gets, the same on every adapter."""
    reason = describe_error(exc)
    logger.error("cannot accept connections (%s); trying again in %s s", reason, ACCEPT_REST)
