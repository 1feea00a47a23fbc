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

An entry can outlive its process: ``Served.stop()`` reaps a peer inside its block,
and a daemon's master is not our child at all. Its pid may then go to a process
that is not ours, so each entry carries the start time its process had when it was
listed, and the watchdog signals only that process (:class:`Process`, through a
pidfd) or its group (:class:`Group`, see there).

Run as a script, this module is the watchdog.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time

__all__ = ["GRACE", "Group", "Process", "forget", "pin", "start_time", "watch"]

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
    process ends before :func:`forget` is called for it. Call it while ``pid`` is
    still there (not yet reaped): its start time, read now, tells it from a later
    process given the same number."""
    started = start_time(pid)
    if started is not None:  # else gone already: nothing to stop
        _tell(f"+{'g' if group else 'p'} {pid} {started}\n")


def forget(pid: int, *, group: bool) -> None:
    """``pid`` was stopped here: the watchdog leaves it alone."""
    _tell(f"-{'g' if group else 'p'} {pid}\n")


#: Where the kernel shows its processes (a test shows the watchdog another one).
PROC = "/proc"


def start_time(pid: int, proc: str = PROC) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22),
    or None if there is no such process. With the pid it names one process for good."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2, the command name in parentheses, may itself hold spaces and ")".
    fields = text[text.rindex(b")") + 2 :].split()
    return int(fields[22 - 3])


class Process:
    """One process, held by a pidfd: a signal reaches it or nothing, even after its
    pid has gone to another process."""

    def __init__(self, pidfd: int) -> None:
        self.pidfd = pidfd

    @classmethod
    def pin(cls, pid: int, started: int) -> Process | None:
        """The process ``pid`` if it is still the one that started at ``started``."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        # The pidfd holds whoever has the pid now; same start time: the one we meant.
        if start_time(pid) != started:
            os.close(pidfd)
            return None
        return cls(pidfd)

    def signal(self, signum: int) -> bool:
        """Send ``signum``; whether the process was there to receive it."""
        try:
            signal.pidfd_send_signal(self.pidfd, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the process to end; whether it has. It
        need not be our child: the pidfd turns readable when it ends."""
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    def close(self) -> None:
        os.close(self.pidfd)


class Group:
    """A process group, named by its leader's pid and start time.

    A pid can be given to a new process once its process has been reaped, and the
    peer's leader is reaped by whoever stops it, often well before :func:`forget`
    comes. But Linux gives no new process a number that is still a live group's id,
    so: while ``/proc/PGID`` shows our leader, or no process at all, a group with
    that id is ours (the leader gone, its children still in it); once it shows
    another process, the number was free again, so our group is empty and gone.
    """

    def __init__(self, pgid: int, started: int, proc: str = PROC) -> None:
        self.pgid = pgid
        self.started = started
        self._proc = proc

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the group; whether any process of it was there."""
        holder = start_time(self.pgid, self._proc)
        if holder is not None and holder != self.started:
            return False  # the number is another process's now
        try:
            os.killpg(self.pgid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def close(self) -> None:
        """Nothing held."""


def pin(pid: int, started: int, *, group: bool) -> Process | Group | None:
    """What to signal for ``pid`` (its group, with ``group``), which started at
    ``started``: None when that process is gone already."""
    if group:
        return Group(pid, started)
    return Process.pin(pid, started)


def _stop(peers: list[Process | Group]) -> None:
    live = [peer for peer in peers if peer.signal(signal.SIGTERM)]
    deadline = time.monotonic() + GRACE
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [peer for peer in live if peer.signal(0)]
    for peer in live:
        peer.signal(signal.SIGKILL)


def _main() -> None:
    """Read ``+g PGID START``, ``+p PID START``, ``-g PGID``, ``-p PID`` lines until
    end of file, then stop what is still listed."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    listed: dict[tuple[str, int], Process | Group] = {}
    for line in sys.stdin.buffer:
        op, kind, numbers = line[:1], line[1:2].decode("ascii"), line[2:].split()
        if kind not in ("g", "p") or not numbers or not all(n.isdigit() for n in numbers):
            continue
        key = (kind, int(numbers[0]))
        if key in listed:
            listed.pop(key).close()
        if op == b"+" and len(numbers) == 2:
            peer = pin(key[1], int(numbers[1]), group=kind == "g")
            if peer is not None:
                listed[key] = peer
    _stop(list(listed.values()))


if __name__ == "__main__":
    _main()
