"""Signals that reach ``python -m smtpcore serve`` before its event loop handles them.

Importing the server and reading its configuration take a moment, and an
operator's signal may land in it: logrotate's ``kill -HUP``, ``systemctl
reload`` or ``stop``, a ``queue`` command's SIGUSR1. Unhandled, SIGHUP and
SIGUSR1 kill the process and SIGINT raises in the middle of an import. The
entry point holds them from its first line; the server's loop takes what came
once it handles them itself. Stdlib only, so that it costs no import time.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = ["HELD", "held", "take"]

HELD = tuple(
    signum
    for name in ("SIGHUP", "SIGUSR1", "SIGINT", "SIGTERM")
    if (signum := getattr(signal, name, None)) is not None  # Windows has no SIGHUP
)

_received: list[int] = []


def _note(signum: int, frame: object) -> None:
    if signum not in _received:  # one SIGHUP or one stop is all a start owes
        _received.append(signum)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Record :data:`HELD` signals instead of acting on them, until whoever runs the
    command handles them (and calls :func:`take`) or the command ends; then the
    handlers from before come back."""
    before = {signum: signal.getsignal(signum) for signum in HELD}
    for signum in HELD:
        signal.signal(signum, _note)
    try:
        yield
    finally:
        _received.clear()
        for signum, handler in before.items():
            signal.signal(signum, handler)


def take() -> list[int]:
    """The signals recorded so far, in the order they first came; none afterwards."""
    received = list(_received)
    _received.clear()
    return received
