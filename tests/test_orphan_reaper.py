"""A peer a test process started dies with that process, however it ends (issue: a
``python -m smtpcore serve`` outlived its killed pytest worker for 70 minutes).

Each test here starts a test process of its own, lets it start a peer, kills it with
SIGKILL (no ``finally`` of it runs) and waits, at most a bounded while, for the
peer to be gone: :mod:`orphan_reaper` stopped it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

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
    found: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not pids.exists():
            assert started.poll() is None, f"{argv} exited with {started.returncode}"
            assert time.monotonic() < deadline, f"{argv} started no peer"
            time.sleep(0.05)
        found = [int(word) for word in pids.read_text().split()]
        yield started, found
    finally:
        started.kill()
        started.wait()
        for pid in found:  # a test that failed must not leak them either
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


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
