"""A watchdog that stops the peers a test process started once that process is gone.

A context manager stops its peer when the block ends, but nothing ends the block
of a test process that dies: an xdist worker killed with SIGKILL, crashed, or ended
by ``os._exit``. Its peers lead sessions of their own (so that a daemon's workers
are stopped with it), so no signal sent to the worker's process group reaches them
either: a ``python -m smtpcore serve`` outlived its worker for 70 minutes.

So each test process starts one watchdog, in a session of its own, the first time
it starts a peer, and tells it each peer's process group (or a daemon's own pid)
over a pipe as the peer starts and is stopped. The watchdog reads the pipe until
end of file, which the kernel delivers whatever way the test process ended; then it
stops what is still listed: SIGTERM, and SIGKILL to whatever is left after
:data:`GRACE` seconds. Every peer still runs as its own process; the watchdog only
signals them. It needs nothing but the standard library and runs with ``-I -S``.

Run as a script, this module is the watchdog.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

__all__ = ["GRACE", "forget", "watch"]

#: Seconds between the SIGTERM that asks the orphans to stop and the SIGKILL.
GRACE = 5.0

_lock = threading.Lock()
_watchdog: subprocess.Popen[bytes] | None = None


def _tell(line: str) -> None:
    global _watchdog
    with _lock:
        if _watchdog is None:
            _watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a signal to our process group misses it
            )
            atexit.register(_close)
        assert _watchdog.stdin is not None
        # One unbuffered write: the line is in the pipe before anything can kill us.
        os.write(_watchdog.stdin.fileno(), line.encode("ascii"))


def _close() -> None:
    """At a normal exit: end of file now, and wait while the watchdog stops what a test
    left running (nothing, as a rule)."""
    if _watchdog is not None and _watchdog.stdin is not None:
        _watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            _watchdog.wait(GRACE + 5)


def watch(pid: int, *, group: bool) -> None:
    """Have the watchdog stop ``pid`` (its process group, with ``group``) if this
    process ends before :func:`forget` is called for it."""
    _tell(f"+{'g' if group else 'p'} {pid}\n")


def forget(pid: int, *, group: bool) -> None:
    """``pid`` was stopped here: the watchdog leaves it (and a reused pid) alone."""
    _tell(f"-{'g' if group else 'p'} {pid}\n")


def _signal(entry: tuple[str, int], signum: int) -> bool:
    """Send ``signum``; whether anything was there to receive it."""
    kind, pid = entry
    try:
        if kind == "g":
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # no longer ours: the pid was reused by someone else
    return True


def _stop(entries: set[tuple[str, int]]) -> None:
    live = {entry for entry in entries if _signal(entry, signal.SIGTERM)}
    deadline = time.monotonic() + GRACE
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = {entry for entry in live if _signal(entry, 0)}
    for entry in live:
        _signal(entry, signal.SIGKILL)


def _main() -> None:
    """Read ``+g PGID``, ``+p PID``, ``-g PGID``, ``-p PID`` lines until end of file,
    then stop what is still listed."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    listed: set[tuple[str, int]] = set()
    for line in sys.stdin.buffer:
        op, kind, number = line[:1], line[1:2].decode("ascii"), line[2:].strip()
        if kind not in ("g", "p") or not number.isdigit():
            continue
        entry = (kind, int(number))
        if op == b"+":
            listed.add(entry)
        elif op == b"-":
            listed.discard(entry)
    _stop(listed)


if __name__ == "__main__":
    _main()
