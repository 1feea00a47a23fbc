"""What the SMTP clients cost below Python: system calls, TCP segments and the sink's CPU.

    .venv/bin/python benchmarks/client_kernel.py [--messages 500] [--rounds 9] [--pipelining]
        [--clients smtplib,smtpcore.asyncio,"asyncio minimal"]

On one core (``client_cpu.py --one-core``) a message takes the client's CPU
plus the sink's, and the kernel's work is inside both: each write runs the
loopback's TCP path and wakes the sink, which preempts the writer; each
reply does the same the other way. This counts, a message and against
``smtp-sink`` (``-p``: no PIPELINING, unless ``--pipelining``), what a
client makes the kernel and the sink do, figures the machine's load does
not move:

* **system calls by kind**, the client's and the sink's, from ``strace -c``
  (the sink's by attaching to it), as the difference between sessions of
  ``--messages`` and twice as many, so that connecting, EHLO and QUIT drop
  out;
* **TCP segments** on the client's connection a reply, from the kernel's
  ``TCP_INFO`` as ``ss -ti`` prints it, read twice during a long session:
  segments out and in, and pure ACKs (segments without data) each way, which
  show a delayed ACK or a write split by Nagle's algorithm;
* **the sink's CPU** a message for each client, from the scheduler's count
  in nanoseconds (``/proc/PID/schedstat``), the sink and the client on one
  core, the clients taking turns within each round; the client's own CPU
  beside it, what the message's wall time leaves for neither (other
  processes on the core, or a wait on a timer: its median, and the least of
  the rounds), and the client's context switches a message, voluntary
  (it waited for a reply) and not (the sink it woke preempted it).

It needs ``strace`` and ``ss`` (Debian packages ``strace`` and ``iproute2``),
and the right to trace the sink (``ptrace``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import client_cpu  # noqa: E402

import peers  # noqa: E402

CHILD = "import sys; sys.path.insert(0, sys.argv[1]); import client_loads; "
RUN = CHILD + "getattr(client_loads, sys.argv[2])(int(sys.argv[3]), int(sys.argv[4]))"

TIMED = (
    CHILD
    + """
import json, time
def cpu(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9
def switches():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    kinds = ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
    return [int(fields[kind]) for kind in kinds]
client = getattr(client_loads, sys.argv[2])
port, messages, sink = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
client(port, 200)
ours, theirs, switched, started = cpu("self"), cpu(sink), switches(), time.perf_counter()
client(port, messages)
wall = time.perf_counter() - started
print(json.dumps([wall / messages * 1e6, (cpu("self") - ours) / messages * 1e6,
    (cpu(sink) - theirs) / messages * 1e6,
    *((now - then) / messages for now, then in zip(switches(), switched))]))
"""
)
"""A client run's wall time, its CPU and the sink's CPU a message (µs), and its voluntary and
involuntary context switches a message."""

_STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def strace_counts(path: Path) -> Counter[str]:
    """The calls of each kind in an ``strace -c`` summary."""
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        row = _STRACE_ROW.match(line)
        if row and row.group(2) != "total":
            counts[row.group(2)] += int(row.group(1))
    return counts


def traced_session(name: str, port: int, sink: int, messages: int) -> tuple[Counter[str], ...]:
    """The system calls of one session of ``messages``: the client's and the sink's."""
    function, source, _ = client_cpu.client_of(name)
    with tempfile.TemporaryDirectory() as scratch:
        ours, theirs = Path(scratch, "client"), Path(scratch, "sink")
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", str(theirs), "-p", str(sink)], stderr=subprocess.PIPE
        )
        try:
            assert tracer.stderr is not None
            tracer.stderr.readline()  # "Process N attached": the sink is traced from here
            session = [sys.executable, "-c", RUN, str(HERE), function, str(port), str(messages)]
            subprocess.run(
                ["strace", "-c", "-f", "-o", str(ours), *session],
                check=True,
                env=dict(os.environ, PYTHONPATH=str(source)),
            )
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
        return strace_counts(ours), strace_counts(theirs)


def syscalls(name: str, port: int, sink: int, messages: int) -> tuple[Counter[str], ...]:
    """The client's and the sink's system calls a message, by kind (see the module)."""
    short = traced_session(name, port, sink, messages)
    long = traced_session(name, port, sink, 2 * messages)
    return tuple(
        Counter({kind: (big[kind] - small[kind]) / messages for kind in big | small})
        for small, big in zip(short, long, strict=True)
    )


_TCP_FIELDS = ("segs_out", "segs_in", "data_segs_out", "data_segs_in")


def tcp_info(port: int) -> dict[str, int]:
    """The segment counts of the one connection to ``port`` on loopback (``ss -ti``)."""
    shown = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {field: re.search(rf"\b{field}:(\d+)", shown) for field in _TCP_FIELDS}
    return {field: int(match.group(1)) if match else 0 for field, match in found.items()}


def segments(name: str, port: int, seconds: float = 1.0) -> dict[str, float]:
    """Segments a reply on a client's connection, read twice during a long session."""
    function, source, _ = client_cpu.client_of(name)
    session = subprocess.Popen(
        [sys.executable, "-c", RUN, str(HERE), function, str(port), "1000000"],
        env=dict(os.environ, PYTHONPATH=str(source)),
    )
    try:
        time.sleep(seconds)  # connected, and past EHLO
        before = tcp_info(port)
        time.sleep(seconds)
        after = tcp_info(port)
    finally:
        session.kill()
        session.wait()
    return per_reply(before, after)


def per_reply(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Segments each way a reply between two readings of ``TCP_INFO``, and of them the
    pure ACKs (no data): a reply is one segment of data in, without PIPELINING."""
    moved = {field: after[field] - before[field] for field in _TCP_FIELDS}
    replies = moved["data_segs_in"] or 1
    return {
        "out": moved["segs_out"] / replies,
        "in": moved["segs_in"] / replies,
        "pure ACKs out": (moved["segs_out"] - moved["data_segs_out"]) / replies,
        "pure ACKs in": (moved["segs_in"] - moved["data_segs_in"]) / replies,
    }


def timed(name: str, port: int, sink: int, messages: int) -> list[float]:
    """Wall time, the client's CPU and the sink's CPU a message (µs), and the client's
    context switches a message, voluntary and not, of one session (see ``TIMED``)."""
    function, source, _ = client_cpu.client_of(name)
    done = subprocess.run(
        [sys.executable, "-c", TIMED, str(HERE), function, str(port), str(messages), str(sink)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(source)),
    )
    return [float(value) for value in json.loads(done.stdout.strip().splitlines()[-1])]


def shown(counts: Counter[str]) -> str:
    kept = {kind: count for kind, count in sorted(counts.items()) if abs(count) >= 0.05}
    total = sum(kept.values())
    return f"{total:5.1f}: " + ", ".join(f"{kind} {count:g}" for kind, count in kept.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="for the system calls")
    parser.add_argument("--rounds", type=int, default=9, help="of 2,000 messages, for the CPU")
    parser.add_argument("--pipelining", action="store_true", help="a sink that offers it")
    parser.add_argument("--clients", default="smtplib,smtpcore.asyncio,asyncio minimal")
    args = parser.parse_args()
    for program in ("strace", "ss"):
        if shutil.which(program) is None:
            raise SystemExit(f"{program} is not installed")
    names = args.clients.split(",")
    width = max(map(len, names))
    with peers.smtp_sink(extra_args=() if args.pipelining else ("-p",)) as sink:
        pid = sink.process.popen.pid
        label = "PIPELINING" if args.pipelining else "no PIPELINING (smtp-sink -p)"
        print(f"# {label}; system calls a message (strace -c), the client's and the sink's")
        for name in names:
            client, server = syscalls(name, sink.port, pid, args.messages)
            print(f"  {name:{width}} client {shown(client)}")
            print(f"  {'':{width}} sink   {shown(server)}")
        print("# TCP segments a reply on the client's connection (ss -ti)")
        for name in names:
            counts = segments(name, sink.port)
            print(f"  {name:{width}} " + ", ".join(f"{k} {v:.2f}" for k, v in counts.items()))
        core = min(os.sched_getaffinity(0))  # the clients inherit this process's core
        os.sched_setaffinity(pid, {core})
        os.sched_setaffinity(0, {core})
        samples: dict[str, list[list[float]]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                samples[name].append(timed(name, sink.port, pid, 2000))
    print(f"# {args.rounds} rounds of 2,000 messages on one core: µs a message, medians")
    print(f"  {'client':{width}} {'wall':>7} {'client':>7} {'sink':>7} {'neither':>8}", end="")
    print(f" {'least':>6} {'switches':>9} {'preempted':>10}")
    for name in names:
        columns = zip(*samples[name], strict=True)
        wall, ours, theirs, slept, preempted = (statistics.median(c) for c in columns)
        rest = [w - o - t for w, o, t, *_ in samples[name]]
        print(f"  {name:{width}} {wall:7.1f} {ours:7.1f} {theirs:7.1f} ", end="")
        print(f"{statistics.median(rest):8.1f} {min(rest):6.1f} {slept:9.2f} {preempted:10.2f}")
    peer = names[0]
    for name in names[1:]:
        pairs = zip(samples[peer], samples[name], strict=True)
        ratios = [theirs[2] / ours[2] for theirs, ours in pairs]
        print(f"  the sink's CPU with {peer} over with {name}: {client_cpu.spread(ratios)}")


if __name__ == "__main__":
    main()
