"""The SMTP clients' CPU a message, user space and kernel apart, each run in a fresh process.

    .venv/bin/python benchmarks/client_cpu.py [--rounds 9] [--messages 2000] [--pipelining]
        [--clients smtplib,smtpcore.asyncio,...] [--one-core] [--evict MB] [--instructions]

``compare.py`` runs the clients inside its own process, which has imported
every peer, and reports their CPU as one figure. Here each run is a process
of its own that imports only the client it runs, sends 200 messages to warm
up, then the measured ones over one connection to Postfix's ``smtp-sink``
(``-p``: no PIPELINING, unless ``--pipelining``), and reports from
``getrusage`` its CPU split in two: user space (the client's Python and the
interpreter) and the kernel (its system calls, and their waits for the
sink). The clients take turns within each round, and each ratio (peer over
ours: above 1 means less CPU than the peer) is taken within a round, given as
minimum, median and maximum over the rounds.

The total is exact (the scheduler's own account of the process's time); the
split is not. On a kernel with tick-based accounting (``CONFIG_TICK_CPU_ACCOUNTING``:
this machine's, at 250 ticks a second) the total is shared between user and
kernel time in the proportion of the ticks that found the process in each,
about 30 in a run of 2,000 messages on one core and 80 on two, so the split
moves by a factor of two from one run to the next; and the kernel's share carries the
network's receive work (softirq) for whatever packets came in while the
process ran. Read ratios of the total.

With ``--one-core`` the sink and every client run on one core. Each reply
then passes the core from the client to the sink and back, and no process
waits on an idle core for the other's packet. On this virtual machine about
100 µs of each message on two cores goes with waiting on a core gone idle
(the CPU a message falls from about 164 µs to 65 µs), the same for every
client give or take the timing of each wait, and its variation swamps the
differences between the clients' own work. One core measures that work: the
asyncio client's median ratio moved from 0.88x to 1.02x between two-core
runs, and from 1.00x to 1.01x between one-core runs (see "Round 12" in
``docs/performance.rst``).

A client named with ``+uvloop`` (``smtpcore.asyncio+uvloop``, ``asyncio
floor+uvloop``) runs on uvloop's event loop rather than asyncio's own (uvloop
comes with the ``bench`` extra; see "Round 14" in ``docs/performance.rst``).

A client named with ``@`` and a directory (``smtpcore.asyncio@../before``)
runs that checkout's library (its ``src``) rather than this one's: how a
change is measured against the code before it, in the same rounds (``git
worktree add ../before HEAD~1``).

With ``--evict MB`` the clients send to ``evicting_sink.py`` instead of
``smtp-sink``, on one core: a sink that sweeps ``MB`` of memory through the
caches before each reply, so that each client meets every reply with cold
caches, as it does when a reply wakes an idle core (two cores here) or after
a real network's round trip. On one core with ``smtp-sink`` the client and
the sink leave each other's lines in the caches, and a client pays for the
instructions it runs; with ``--evict`` it pays as well for the code and
objects it touches a reply (see "Round 13" in ``docs/performance.rst``).

With ``--instructions`` each client runs instead under valgrind
(``cachegrind``, no cache simulated), once for 100 messages and once for 500,
and the difference gives the user-space instructions a message, connecting
and start-up left out: a figure the machine's load does not move. The
interpreter's hash seed is fixed for these runs, and its cyclic garbage
collector is off: a collection of the oldest generation that falls in one of
the two runs and not in the other moves the count by 20k a message either
way, with the seed or the code's layout, which says nothing of the code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import peers  # noqa: E402

CLIENTS = {
    "smtplib": "smtplib_client",
    "smtpcore.sync": "sync_client",
    "smtpcore.asyncio": "asyncio_client",
    "asyncio floor": "asyncio_floor_client",
    "blocking floor": "blocking_floor_client",
    "asyncio minimal": "asyncio_minimal_client",
    "asyncio woken": "asyncio_woken_client",
    "asyncio callback": "asyncio_callback_client",
    "aiosmtplib": "aiosmtplib_client",
}

WARM_UP = 200

ON_UVLOOP = "import asyncio, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())"
"""What a client named ``...+uvloop`` runs first."""

CHILD = f"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
if sys.argv[5] == "uvloop":
    {ON_UVLOOP}
import client_loads
client = getattr(client_loads, sys.argv[1])
port, messages = int(sys.argv[2]), int(sys.argv[3])
client(port, {WARM_UP})
before = resource.getrusage(resource.RUSAGE_SELF)
started = time.perf_counter()
client(port, messages)
wall = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps([
    messages / wall,
    (after.ru_utime - before.ru_utime) / messages * 1e6,
    (after.ru_stime - before.ru_stime) / messages * 1e6,
]))
"""


def client_of(name: str) -> tuple[str, Path, str]:
    """The function of ``client_loads`` a client's name gives, the source tree whose
    library it runs (``name@directory``: that checkout's), and its event loop
    (``name+uvloop``: uvloop's, else asyncio's own)."""
    client, _, checkout = name.partition("@")
    client, _, loop = client.partition("+")
    tree = Path(checkout).resolve() if checkout else HERE.parent
    if not (tree / "src" / "smtpcore").is_dir():
        raise SystemExit(f"{name}: no src/smtpcore in {tree}")
    if loop not in ("", "uvloop"):
        raise SystemExit(f"{name}: the loop is asyncio's (no suffix) or +uvloop")
    return CLIENTS[client], tree / "src", loop


def run_once(name: str, port: int, messages: int) -> tuple[float, float, float]:
    """(messages a second, user µs a message, system µs a message) of one fresh process."""
    function, source, loop = client_of(name)
    env = dict(os.environ, PYTHONPATH=str(source))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, function, str(port), str(messages), str(HERE), loop],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    rate, user, system = json.loads(done.stdout.strip().splitlines()[-1])
    return rate, user, system


VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]


def instructions(name: str, port: int) -> float:
    """User-space instructions a message of one client, under valgrind (see the module)."""
    function, source, loop = client_of(name)
    policy = f"{ON_UVLOOP}; " if loop == "uvloop" else ""
    counts = []
    for messages in (100, 500):
        code = (
            "import gc; gc.disable(); "  # see the module's docstring
            f"{policy}import sys; sys.path.insert(0, {str(HERE)!r}); import client_loads; "
            f"client_loads.{function}({port}, {messages})"
        )
        env = dict(os.environ, PYTHONPATH=str(source), PYTHONHASHSEED="0")
        done = subprocess.run(
            [*VALGRIND, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
            check=True,
        )
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        assert found is not None, done.stderr[-500:]
        counts.append(int(found.group(1).replace(",", "")))
    return (counts[1] - counts[0]) / 400


@contextlib.contextmanager
def sink_for(args: argparse.Namespace) -> Iterator[tuple[int, int]]:
    """The sink the clients send to, as its port and pid: ``smtp-sink``, or with
    ``--evict`` the sink that sweeps the caches before each reply."""
    if not args.evict:
        with peers.smtp_sink(extra_args=() if args.pipelining else ("-p",)) as sink:
            yield sink.port, sink.process.popen.pid
        return
    port = peers.free_port()
    program = [sys.executable, str(HERE / "evicting_sink.py"), str(port), str(args.evict)]
    if args.pipelining:
        program.append("--pipelining")
    with peers.run_process(program) as process:
        peers.wait_for_port(peers.LOOPBACK, port, 10.0, process=process)
        yield port, process.popen.pid


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}x / {statistics.median(values):.2f}x / {max(values):.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--pipelining", action="store_true", help="a sink that offers it")
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help="comma-separated; the first is the peer"
    )
    parser.add_argument(
        "--one-core", action="store_true", help="the sink and the clients on one core"
    )
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind instead"
    )
    parser.add_argument(
        "--evict",
        type=float,
        metavar="MB",
        help="evicting_sink.py instead of smtp-sink, sweeping MB before each reply (one core)",
    )
    args = parser.parse_args()
    names = args.clients.split(",")
    width = max(20, *map(len, names))
    if args.instructions:
        with sink_for(args) as (port, _):
            for name in names:
                print(f"  {name:{width}} {instructions(name, port):10,.0f} a message")
        return
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    with sink_for(args) as (port, pid):
        if args.one_core or args.evict:  # the clients inherit this process's core
            core = min(os.sched_getaffinity(0))
            os.sched_setaffinity(pid, {core})
            os.sched_setaffinity(0, {core})
        for _ in range(args.rounds):
            for name in names:
                samples[name].append(run_once(name, port, args.messages))
    label = "PIPELINING" if args.pipelining else "no PIPELINING (smtp-sink -p)"
    if args.evict:
        label += f", {args.evict:g} MB swept before each reply (evicting_sink.py)"
    where = ", all on one core" if args.one_core or args.evict else ""
    print(f"# {args.rounds} rounds of {args.messages} 1 KB messages, {label}{where}; medians")
    print(f"  {'client':{width}} {'rate (/s)':>10} {'user µs':>9} {'system µs':>10} {'CPU µs':>8}")
    for name in names:
        columns = zip(*samples[name], strict=True)
        rate, user, system = (statistics.median(column) for column in columns)
        total = statistics.median(u + s for _, u, s in samples[name])
        print(f"  {name:{width}} {rate:10.0f} {user:9.1f} {system:10.1f} {total:8.1f}")
    peer = names[0]
    for name in names[1:]:
        pairs = list(zip(samples[peer], samples[name], strict=True))
        cpu = [(pu + ps) / (u + s) for (_, pu, ps), (_, u, s) in pairs]
        user = [pu / u for (_, pu, _ps), (_, u, _s) in pairs if u] or [0.0]  # ticks: may be 0
        rate = [r / pr for (pr, _pu, _ps), (r, _u, _s) in pairs]
        print(f"  {name} vs {peer}: rate {spread(rate)}; CPU peer/ours {spread(cpu)}; ", end="")
        print(f"user {spread(user)} (min/median/max)")


if __name__ == "__main__":
    main()
