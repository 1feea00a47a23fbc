"""A second SIGTERM or SIGINT while ``serve`` stops ends the process at once.

Postfix's ``postfix abort`` after its ``stop``. The handler is a plain
:func:`signal.signal` one, not an event-loop callback: the loop may be what is
stuck (a log line blocked on a full stderr pipe nobody reads), and a callback
would then never run, nor the stop the operator asked for. So the handler goes
through no log handler (whose lock and stream that blocked write holds): it
tries its one line on file descriptor 2 without blocking, drops it if that
fails, and ends the process by the signal's default action, so that a shell or
an init system sees it killed by that signal (status 143 for SIGTERM, 130 for
SIGINT).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import Iterator
from types import FrameType

from smtpcore.server.logformat import SERVE_FORMAT, LevelWordFormatter

__all__ = ["abort_on_second_signal"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def abort_on_second_signal(loop: asyncio.AbstractEventLoop, log: logging.Logger) -> Iterator[None]:
    """While in this block, SIGTERM and SIGINT end the process at once, one line in
    ``log``'s format tried first; the handlers before it (none in ``loop``) after."""
    before = {}
    for signum in STOP_SIGNALS:
        loop.remove_signal_handler(signum)
        before[signum] = signal.signal(signum, functools.partial(_abort, log))
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _abort(log: logging.Logger, signum: int, frame: FrameType | None) -> None:
    if log.isEnabledFor(logging.WARNING):
        record = log.makeRecord(
            log.name,
            logging.WARNING,
            __file__,
            0,
            "second %s: stopping at once: sessions and deliveries cut off where they are",
            (signal.Signals(signum).name,),
            None,
        )
        _write_without_blocking(LevelWordFormatter(SERVE_FORMAT).format(record) + "\n")
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _write_without_blocking(line: str) -> None:
    """``line`` on stderr if the pipe or terminal takes it now; else nothing. The
    descriptor's mode is put back: the shell shares it."""
    blocking = os.get_blocking(2)
    try:
        os.set_blocking(2, False)
        os.write(2, line.encode("utf-8", "backslashreplace"))
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(2, blocking)
