"""SIGTERM and SIGHUP stop a one-shot command as Ctrl-C does, then end it by the signal.

Ctrl-C cancels the task ``asyncio.run`` runs, so that a command cleans up on the way
out (``fetch`` writes the record of the messages it stored). SIGTERM (``kill``, an
init system, a timeout) and SIGHUP (the terminal gone) killed the process where it
stood instead, and the messages a run stored were fetched again next time. With
:func:`cancelled_by_stop_signals` they cancel the task the same way, and
:func:`end_by_signal` then ends the process by the signal's default action, so that
whoever waits for it sees it killed by that signal, as before (status 143 for
SIGTERM, 129 for SIGHUP in a shell). A signal the parent set to be ignored
(``nohup``) stays ignored. A second signal while the command stops does nothing more:
the cleanup is short and runs to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn

__all__ = ["StopSignal", "cancelled_by_stop_signals", "end_by_signal"]

STOP_SIGNALS = tuple(
    signum
    for name in ("SIGTERM", "SIGHUP")
    if (signum := getattr(signal, name, None)) is not None  # Windows has no SIGHUP
)


class StopSignal:
    """The first stop signal received, if one was."""

    def __init__(self) -> None:
        self.received: int | None = None


@contextlib.contextmanager
def cancelled_by_stop_signals(stop: StopSignal) -> Iterator[None]:
    """While in this block (in a running task), SIGTERM and SIGHUP cancel that task,
    noting the signal in ``stop``; their handling before comes back after it."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    installed = []
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        with contextlib.suppress(NotImplementedError):  # a loop without signal handlers
            loop.add_signal_handler(signum, _stopped, stop, signum, task)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _stopped(stop: StopSignal, signum: int, task: asyncio.Task[object]) -> None:
    if stop.received is None:
        stop.received = signum
        task.cancel()


def end_by_signal(signum: int) -> NoReturn:
    """End the process by ``signum``'s default action, what was written flushed
    first (nothing is flushed after a death by signal)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, a stream closed
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    raise SystemExit(128 + signum)  # a signal that did not end it (it is blocked)
