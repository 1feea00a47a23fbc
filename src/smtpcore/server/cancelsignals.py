"""SIGTERM and SIGHUP stop a one-shot command as Ctrl-C does, then end it by the signal.

Ctrl-C cancels the task ``asyncio.run`` runs, so that a command cleans up on the way
out (``fetch`` writes the record of the messages it stored). SIGTERM (``kill``, an
init system, a timeout) and SIGHUP (the terminal gone) killed the process where it
stood instead, and the messages a run stored were fetched again next time. Within
:func:`cancelled_by_stop_signals` they cancel the task the same way, and once its
cleanup is done the process ends by the signal's default action, so that whoever
waits for it sees it killed by that signal, as before (status 143 for SIGTERM, 129 for
SIGHUP in a shell). It ends from inside the loop: ``asyncio.run`` would first wait for
the default executor's threads, one of them stuck in a name lookup for as long as the
resolver's timeouts. A signal the parent set to be ignored (``nohup``) stays ignored,
and the handlers the program had before come back after the block. Only the main
thread handles signals: run in another (an embedding program), a command leaves them
as they are. A second signal while the command stops does nothing more: the cleanup
is short and runs to its end.

A signal is recorded the moment it arrives, by a plain :func:`signal.signal` handler
over the event loop's own, and the loop's callback only cancels the task. The loop
runs that callback at its next turn, and one that comes after the task's last await
(the command's last line being written) gets none before the block ends; the plain
handler's record is what makes the block end by the signal all the same.

The serve command's own stop signals are :mod:`smtpcore.server.stopsignal`'s; the
last step, the death by the signal's default action, is that module's too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import NoReturn

from smtpcore.server.stopsignal import kill_by_default_action

__all__ = ["CANCELLING_SIGNALS", "cancelled_by_stop_signals"]

CANCELLING_SIGNALS = tuple(
    signum
    for name in ("SIGTERM", "SIGHUP")
    if (signum := getattr(signal, name, None)) is not None  # Windows has no SIGHUP
)
"""The signals that cancel a one-shot command: SIGINT is ``asyncio.run``'s own
already (KeyboardInterrupt)."""

_Handler = Callable[[int, FrameType | None], object] | int | None
"""What :func:`signal.getsignal` gives (a :class:`signal.Handlers` is an int): None
for a handler set outside Python."""


class _ReceivedSignal:
    """The first cancelling signal received in the block, if one was, and whether the
    task was cancelled for it."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.cancelled = False


@contextlib.contextmanager
def cancelled_by_stop_signals() -> Iterator[None]:
    """While in this block (in a running task, in the main thread), SIGTERM and SIGHUP
    cancel that task; when the block ends after one did, the process ends killed by
    it. The handlers before come back after the block."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received = _ReceivedSignal()
    before: dict[int, _Handler] = {}
    if threading.current_thread() is threading.main_thread():  # else set_wakeup_fd fails
        for signum in CANCELLING_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is signal.SIG_IGN:
                continue
            with contextlib.suppress(NotImplementedError):  # a loop without signal handlers
                loop.add_signal_handler(signum, _cancel, received, signum, task)
                before[signum] = handler
                signal.signal(signum, functools.partial(_record, received))
                signal.siginterrupt(signum, False)  # as the loop's own handler has it
    try:
        yield
    finally:
        for signum, handler in before.items():
            loop.remove_signal_handler(signum)  # which leaves SIG_DFL
            if handler is not None:
                signal.signal(signum, handler)
        if received.signum is not None:
            _end_by_signal(received.signum)


def _record(received: _ReceivedSignal, signum: int, frame: FrameType | None) -> None:
    """Python's handler of a cancelling signal, run as it arrives; the event loop,
    woken by the same signal (:func:`signal.set_wakeup_fd`), then runs :func:`_cancel`."""
    if received.signum is None:
        received.signum = signum


def _cancel(received: _ReceivedSignal, signum: int, task: asyncio.Task[object]) -> None:
    if received.signum is None:
        received.signum = signum
    if not received.cancelled:
        received.cancelled = True
        task.cancel()


def _end_by_signal(signum: int) -> NoReturn:
    """End the process by ``signum``'s default action, what was written flushed first
    (nothing is flushed after a death by signal)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, a stream closed
            stream.flush()
    kill_by_default_action(signum)
    raise SystemExit(128 + signum)  # a signal that did not end it (it is blocked)
