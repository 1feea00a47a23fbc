"""How ``benchmarks/compare.py`` reads a server's CPU for its POP3 row, and what
``benchmarks/cold_machine.py`` feeds the machine (no timing here).

smtpcore's POP3 server is one process; Dovecot serves each session in a
process of its own under its master. The row reads the CPU of a process and
of each of its children (``tree_cpu``) before the first ``RETR`` and after
the last, and adds up what each one spent in between (``cpu_between``). A
session of 300 messages takes a few ticks of ``/proc/PID/stat``, so the
reading must come from the scheduler's count in nanoseconds.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def compare() -> Any:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("compare")


def test_what_each_process_spent_in_between_adds_up() -> None:
    before = {10: 1.0, 11: 5.0, 12: 2.0}  # 12 ends in between: what it spent is missed
    after = {10: 1.5, 11: 5.25, 13: 0.125}  # 13 starts in between: counted whole
    assert compare().cpu_between(before, after) == 0.875


def spin(seconds: float) -> None:
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass


def test_a_process_and_its_children_are_read_finer_than_a_tick() -> None:
    busy = (
        "import sys, time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.003: pass\n"
        "print(flush=True)\n"
        "sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", busy], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"  # spun
        readings = compare().tree_cpu(os.getpid())
        assert readings[child.pid] >= 0.003
        # The scheduler's nanoseconds, not /proc/PID/stat's 10 ms ticks.
        assert any(round(seconds * 100, 6) % 1 for seconds in readings.values())
        spin(0.002)
        later = compare().tree_cpu(os.getpid())
        assert compare().cpu_between(readings, later) >= 0.002
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def test_the_cold_machine_benchmark_answers_each_message_whole() -> None:
    """``benchmarks/cold_machine.py`` feeds the pipelined session's bytes: each message
    is answered with its 250, and the next envelope's 250, 250 and 354 (RFC 2920:
    the replies of a pipelined group, in order)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    cold_machine = importlib.import_module("cold_machine")
    session = cold_machine.Session()
    replies = (
        b"250 2.0.0 OK\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    for _ in range(3):
        assert session.feed(cold_machine.MESSAGE) == len(replies)
        assert session.conn.state.name == "DATA"


def test_the_pop3_benchmark_clients_log_in_to_its_loopback_server(tmp_path: Path) -> None:
    """``benchmarks/pop3_adapters.py``'s smtpcore clients fetch from its own server on
    loopback, without TLS, by USER/PASS: which the clients refuse by default (RFC 2595
    §2.2), so the benchmark allows it, or it would measure nothing."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    bench = importlib.import_module("pop3_adapters")
    messages = [bench.message_10k(n) for n in range(2)] + [bench.large_message(1)]
    bench.peers().write_maildir(tmp_path / "mail" / bench.USER, messages)
    with bench.smtpcore_server("smtpcore.asyncio", tmp_path / "mail") as port:
        for kind in ("smtpcore.asyncio", "smtpcore.trio"):
            small, large = bench.smtpcore_client(kind, port, 2)
            assert small > 0 and large > 0, kind


def idle_memory() -> Any:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("idle_memory")


def test_the_idle_resident_set_is_read_untraced_past_a_fixed_warm_up() -> None:
    """``benchmarks/idle_memory.py`` reads the resident set in a server process without
    ``tracemalloc`` (whose record of each block would count as the sessions'), and takes
    the baseline with exactly the warm-up's sessions held open, however many sessions
    are measured after it, so that what the server's start left free is taken up before
    it. The traced run takes its baseline before any session opens."""
    bench = idle_memory()
    warm_up, sessions = 12, 20
    readings = bench.resident_readings("smtpcore.asyncio", sessions, None, warm_up)
    assert not any(reading.tracing for reading in readings)
    assert readings.base.sockets - readings.idle.sockets == warm_up
    assert readings.grown.sockets - readings.base.sockets == sessions
    base, grown = bench.traced_readings("smtpcore.asyncio", sessions, False, None)
    assert base.tracing
    assert base.sockets < sessions <= grown.sockets - base.sockets


def client_kernel() -> Any:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("client_kernel")


STRACE_SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 42.24    0.077848          19      4002           sendto
 35.02    0.064537          16      4009           epoll_wait
  1.90    0.003501           2      1186        55 newfstatat
------ ----------- ----------- --------- --------- ----------------
100.00    0.184301          11      9197        55 total
"""


def test_the_kernel_benchmark_reads_calls_not_errors_from_strace(tmp_path: Path) -> None:
    """``benchmarks/client_kernel.py`` counts each kind of system call from an
    ``strace -c`` summary: the calls column, with or without an errors column
    after it, and not the total."""
    summary = tmp_path / "summary"
    summary.write_text(STRACE_SUMMARY)
    counts = client_kernel().strace_counts(summary)
    assert counts == {"sendto": 4002, "epoll_wait": 4009, "newfstatat": 1186}


def test_the_kernel_benchmark_counts_pure_acks_a_reply() -> None:
    """Between two readings of ``TCP_INFO``, a segment without data is a pure ACK (a
    delayed ACK's timer, or a write Nagle's algorithm held), counted a reply."""
    before = {"segs_out": 10, "segs_in": 10, "data_segs_out": 9, "data_segs_in": 9}
    after = {"segs_out": 30, "segs_in": 20, "data_segs_out": 24, "data_segs_in": 19}
    assert client_kernel().per_reply(before, after) == {
        "out": 2.0,
        "in": 1.0,
        "pure ACKs out": 0.5,
        "pure ACKs in": 0.0,
    }


def test_idle_memory_names_the_largest_sessions_the_open_file_limit_fits() -> None:
    """Where the hard limit of open files is lower than the warm-up and ``--sessions``
    need, the script stops before any server starts and names the largest
    ``--sessions`` that fits, rather than dying of ``EMFILE`` halfway."""
    pytest.importorskip("resource")  # the limit is POSIX's
    bench = idle_memory()
    limit = bench.open_files_needed(100)
    script = (
        "import resource, runpy, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
        f"sys.argv = ['idle_memory.py', '--sessions', '101', '--servers', 'smtpcore.asyncio']\n"
        f"runpy.run_path({str(BENCHMARKS / 'idle_memory.py')!r}, run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert f"the hard limit is {limit}" in done.stderr
    assert "--sessions 100 at most" in done.stderr
    assert "Too many open files" not in done.stderr
