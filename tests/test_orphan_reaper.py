"""A peer a test process started dies with that process, however it ends (issue: a
``python -m smtpcore serve`` outlived its killed pytest worker for 70 minutes).

Each test here starts a test process of its own, lets it start a peer, kills it with
SIGKILL (no ``finally`` of it runs) and waits, at most a bounded while, for the
peer to be gone: :mod:`orphan_reaper` stopped it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import orphan_reaper
from test_peers_smoke import _is_gone

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

#: How long a peer may take to go once its test process is killed: the watchdog's
#: grace before SIGKILL, and plenty for a loaded machine. A bound, not a measurement.
GONE_WITHIN = orphan_reaper.GRACE + 30.0


@contextlib.contextmanager
def _test_process(
    argv: list[str], pids: Path
) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """Run ``argv`` until it writes the pids of the peers it started to ``pids``; yield
    it and those pids. Whatever happens, nothing started here outlives the block."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TESTS)])}
    env["PEER_PIDS"] = str(pids)
    started = subprocess.Popen(argv, env=env, cwd=pids.parent, stdout=subprocess.DEVNULL)
    held: list[orphan_reaper.Process | orphan_reaper.Group] = []
    try:
        deadline = time.monotonic() + 60
        while not pids.exists():
            assert started.poll() is None, f"{argv} exited with {started.returncode}"
            assert time.monotonic() < deadline, f"{argv} started no peer"
            time.sleep(0.05)
        found = [int(word) for word in pids.read_text().split()]
        held = _hold(found)
        yield started, found
    finally:
        started.kill()
        started.wait()
        # A test that failed must not leak them either; one that passed saw them
        # gone, and their pids may be another's now: hence held, not by number.
        for peer in held:
            peer.signal(signal.SIGKILL)
            peer.close()


def _hold(pids: list[int]) -> list[orphan_reaper.Process | orphan_reaper.Group]:
    """Each of ``pids``, and the group it may lead, pinned while they still run."""
    held: list[orphan_reaper.Process | orphan_reaper.Group] = []
    for pid in pids:
        started = orphan_reaper.start_time(pid)
        if started is None:
            continue
        held.append(orphan_reaper.Group(pid, started))
        process = orphan_reaper.Process.pin(pid, started)
        if process is not None:
            held.append(process)
    return held


def _write_pids(name: str) -> str:
    """Python source that writes the pids it names to $PEER_PIDS, in one rename."""
    return (
        "import os\n"
        "path = os.environ['PEER_PIDS']\n"
        f"with open(path + '.tmp', 'w') as out: out.write(' '.join(map(str, {name})))\n"
        "os.rename(path + '.tmp', path)\n"
    )


def test_a_peer_and_its_children_die_with_the_process_that_ran_it(tmp_path: Path) -> None:
    """The peer leads a session of its own, so killing its starter's process group
    misses it; and the starter, killed, runs no clean-up of its own. The peer's own
    child goes too."""
    peer = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "pids = [os.getpid(), child.pid]\n" + _write_pids("pids") + "time.sleep(600)\n"
    )
    script = (
        "import sys, time\n"
        "from peers import run_process\n"
        f"with run_process([sys.executable, '-c', {peer!r}]):\n"
        "    time.sleep(600)\n"
    )
    with _test_process([sys.executable, "-c", script], tmp_path / "pids") as (starter, pids):
        assert not any(_is_gone(pid, timeout=0.2) for pid in pids)
        starter.kill()
        starter.wait()
        assert all(_is_gone(pid, GONE_WITHIN) for pid in pids), pids


def test_a_served_smtpcore_dies_with_the_pytest_that_started_it(tmp_path: Path) -> None:
    """What the gate saw: pytest running a test inside ``serve(...)``, killed."""
    (tmp_path / "test_inner.py").write_text(
        "import os, time\n"
        "from test_cli_serve import serve\n"
        "def test_serving(tmp_path):\n"
        "    with serve(tmp_path / 'abc', 'abc.example', [], listeners=('smtp',)) as abc:\n"
        "        pids = [abc.process.pid]\n"
        + textwrap.indent(_write_pids("pids"), "        ")
        + "        time.sleep(600)\n"
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
    argv += ["-p", "no:xdist", "test_inner.py"]
    with _test_process(argv, tmp_path / "pids") as (pytest_process, (served,)):
        assert not _is_gone(served, timeout=0.2)
        pytest_process.send_signal(signal.SIGKILL)
        pytest_process.wait()
        assert _is_gone(served, GONE_WITHIN)


def _fake_proc(tmp_path: Path, pid: int, started: int, name: str = "sleep") -> str:
    """A /proc that shows ``pid`` with start time ``started``, and nothing else."""
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    after_name = ["S", *["0"] * 18, str(started), *["0"] * 30]  # fields 3, 4, ..., 22, ...
    (proc / str(pid) / "stat").write_text(f"{pid} ({name}) {' '.join(after_name)}\n")
    return str(proc)


def _own_session_sleeper() -> subprocess.Popen[str]:
    """A process leading a group of its own that says which signal it got, when asked."""
    code = (
        "import signal, sys\n"
        "got = []\n"
        "signal.signal(signal.SIGTERM, lambda signum, frame: got.append('SIGTERM'))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "print(' '.join(got) or 'untouched', flush=True)\n"
    )
    sleeper = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert sleeper.stdout is not None and sleeper.stdout.readline() == "ready\n"
    return sleeper


def _what_it_got(sleeper: subprocess.Popen[str]) -> str:
    """Signals sent before this call are handled before the answer (PEP 475)."""
    answer, _ = sleeper.communicate("?\n", timeout=60)
    return answer.strip()


def test_the_start_time_is_read_past_a_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    assert orphan_reaper.start_time(4321, _fake_proc(tmp_path, 4321, 987654, "a) b (c")) == 987654
    assert orphan_reaper.start_time(4322, str(tmp_path / "proc")) is None
    assert orphan_reaper.start_time(os.getpid()) is not None


def test_a_group_whose_leader_s_pid_went_to_another_process_is_left_alone(
    tmp_path: Path,
) -> None:
    """The review's case: the leader was reaped and its pid given to a process that is
    not ours. /proc shows another start time there, so nothing is sent; the same
    group, shown as ours, gets the signal."""
    sleeper = _own_session_sleeper()
    try:
        started = orphan_reaper.start_time(sleeper.pid)
        assert started is not None
        someone_else = _fake_proc(tmp_path, sleeper.pid, started + 1)
        assert not orphan_reaper.Group(sleeper.pid, started, someone_else).signal(signal.SIGTERM)
        assert _what_it_got(sleeper) == "untouched"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_group_shown_as_ours_or_leaderless_gets_the_signal(tmp_path: Path) -> None:
    """A live group's id is never a new process's pid: with its leader gone from
    /proc, the group is still ours."""
    for proc in ("same start", "leader gone"):
        sleeper = _own_session_sleeper()
        try:
            started = orphan_reaper.start_time(sleeper.pid)
            assert started is not None
            shown = (
                _fake_proc(tmp_path / proc, sleeper.pid, started)
                if proc == "same start"
                else str(tmp_path / "empty")
            )
            assert orphan_reaper.Group(sleeper.pid, started, shown).signal(signal.SIGTERM)
            assert _what_it_got(sleeper) == "SIGTERM"
        finally:
            sleeper.kill()
            sleeper.wait()


def test_a_process_is_pinned_only_with_its_own_start_time() -> None:
    sleeper = _own_session_sleeper()
    try:
        started = orphan_reaper.start_time(sleeper.pid)
        assert started is not None
        assert orphan_reaper.Process.pin(sleeper.pid, started + 1) is None
        pinned = orphan_reaper.Process.pin(sleeper.pid, started)
        assert pinned is not None
        try:
            assert pinned.signal(signal.SIGTERM)
            assert _what_it_got(sleeper) == "SIGTERM"
            sleeper.wait()
            assert not pinned.signal(0)  # reaped: the pidfd reaches no one, whoever has the pid
        finally:
            pinned.close()
    finally:
        sleeper.kill()
        sleeper.wait()


# Run as pid 1 of a pid namespace of its own, where the next pid can be chosen.
_PID_REUSE = r"""
import os, select, subprocess, sys
test_process = subprocess.Popen([sys.executable, "-c", '''
import sys, time
import orphan_reaper
from peers import run_process
with run_process([sys.executable, "-c", "pass"]) as peer:
    peer.popen.wait()  # as Served.stop() does: the peer's pid is free again
    print(peer.popen.pid, orphan_reaper._watchdog.pid, flush=True)
    time.sleep(600)
'''], stdout=subprocess.PIPE, text=True)
freed, watchdog = map(int, test_process.stdout.readline().split())
sys.path.insert(0, os.environ["TESTS"])
from test_orphan_reaper import _own_session_sleeper, _what_it_got
with open("/proc/sys/kernel/ns_last_pid", "w") as last:
    last.write(str(freed - 1))
victim = _own_session_sleeper()  # someone else's daemon, given the freed pid
print("reused" if victim.pid == freed else "not reused", flush=True)
watchdog_ended = os.pidfd_open(watchdog)
test_process.kill()
test_process.wait()
select.select([watchdog_ended], [], [], 120)
print(_what_it_got(victim) if victim.poll() is None else "killed", flush=True)
victim.kill()
"""


def test_the_watchdog_leaves_alone_a_process_given_a_stopped_peer_s_pid() -> None:
    """The review's demonstration, in a pid namespace of its own: a peer reaped inside
    its block, its pid given to an unrelated group leader, the test process killed.
    Once the watchdog has ended, that process got no signal."""
    unshare = shutil.which("unshare")
    probe = [sys.executable, "-c", "open('/proc/sys/kernel/ns_last_pid', 'w').write('300')"]
    namespace = [unshare or "unshare", "--pid", "--fork", "--mount-proc"]
    if unshare is None or subprocess.run([*namespace, *probe], capture_output=True).returncode:
        pytest.skip("needs unshare and the right to choose the next pid in a pid namespace")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TESTS)])}
    env["TESTS"] = str(TESTS)
    run = subprocess.run(
        [*namespace, sys.executable, "-c", _PID_REUSE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.stdout.split("\n")[:2] == ["reused", "untouched"], run.stdout + run.stderr
