"""A second SIGTERM or SIGINT while ``serve`` stops ends the process at once.

Postfix's ``postfix abort`` after its ``stop``. The handler is a plain
:func:`signal.signal` one, not an event-loop callback: the loop may be what is
stuck (a log line blocked on a full stderr pipe nobody reads), and a callback
would then never run, nor the stop the operator asked for. So the handler goes
through no log handler (whose lock and stream that blocked write holds): it
writes its one line to file descriptor 2 only, whatever handlers the program
configured, and only if a poll says the descriptor takes it now, in one write
of at most ``PIPE_BUF`` bytes, which POSIX says does not block then (else the
line is dropped). It never sets the descriptor non-blocking: the terminal or
pipe is shared with the shell and its other children, and a process killed
in between would leave it so for them. Its first step gives both stop signals
their default action back, so that a third one, or one of the other kind, kills
at once, even during the write. Then it ends the process by the signal's default
action, so that a shell or an init system sees it killed by that signal (status
143 for SIGTERM, 130 for SIGINT).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import select
import signal
from collections.abc import Iterator
from types import FrameType

from smtpcore.server.logformat import SERVE_FORMAT, LevelWordFormatter

__all__ = ["abort_on_second_signal", "kill_by_default_action"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def abort_on_second_signal(loop: asyncio.AbstractEventLoop, log: logging.Logger) -> Iterator[None]:
    """While in this block, SIGTERM and SIGINT end the process at once, one line in
    ``serve``'s format tried first on file descriptor 2 only (``log`` gives its name
    and whether WARNING is on, not its handlers); the handlers before it (none in
    ``loop``) after."""
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
    for stop_signal in STOP_SIGNALS:  # another one during the line kills at once
        signal.signal(stop_signal, signal.SIG_DFL)
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
        _write_if_room(LevelWordFormatter(SERVE_FORMAT).format(record) + "\n")
    kill_by_default_action(signum)


def kill_by_default_action(signum: int) -> None:
    """End the process by ``signum``'s default action, so that whoever waits for it (a
    shell, an init system) sees it killed by that signal, status 128 and the signal's
    number in a shell. Returns only while the signal is blocked. Shared with the
    one-shot commands a stop signal cancels (:mod:`smtpcore.server.cancelsignals`)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _write_if_room(line: str) -> None:
    """``line`` on file descriptor 2 if a poll says it takes a write now, cut to
    ``PIPE_BUF`` bytes (a write that size then does not block); else nothing. A
    closed descriptor, or one that refuses the write, drops the line."""
    data = line.encode("utf-8", "backslashreplace")[: select.PIPE_BUF]
    try:
        poll = select.poll()
        poll.register(2, select.POLLOUT)
        ready = poll.poll(0)
        if ready and ready[0][1] == select.POLLOUT:
            os.write(2, data)
    except OSError:
        pass
