"""The SMTP clients' CPU a message, user space and kernel apart, each run in a fresh process.

    .venv/bin/python benchmarks/client_cpu.py [--rounds 9] [--messages 2000] [--pipelining]
        [--clients smtplib,smtpcore.asyncio,...] [--instructions]

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

The split shows what a client's code can still change: a client makes the
same system calls a message whatever its code does around them, so its user
time is where one client's code differs from another's (see "Round 11" in
``docs/performance.rst``).

With ``--instructions`` each client runs instead under valgrind
(``cachegrind``, no cache simulated), once for 100 messages and once for 500,
and the difference gives the user-space instructions a message, connecting
and start-up left out: a figure the machine's load does not move. The
interpreter's hash seed is fixed for these runs: with a random one, a run
of the asyncio client now and then counts 20k instructions a message fewer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
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
}

WARM_UP = 200

CHILD = f"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
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


def run_once(function: str, port: int, messages: int) -> tuple[float, float, float]:
    """(messages a second, user µs a message, system µs a message) of one fresh process."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, function, str(port), str(messages), str(HERE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    rate, user, system = json.loads(done.stdout.strip().splitlines()[-1])
    return rate, user, system


VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]


def instructions(function: str, port: int) -> float:
    """User-space instructions a message of one client, under valgrind (see the module)."""
    counts = []
    for messages in (100, 500):
        code = (
            f"import sys; sys.path.insert(0, {str(HERE)!r}); import client_loads; "
            f"client_loads.{function}({port}, {messages})"
        )
        env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"), PYTHONHASHSEED="0")
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
        "--instructions", action="store_true", help="count instructions under valgrind instead"
    )
    args = parser.parse_args()
    names = args.clients.split(",")
    sink_args = () if args.pipelining else ("-p",)
    if args.instructions:
        with peers.smtp_sink(extra_args=sink_args) as sink:
            for name in names:
                print(f"  {name:20} {instructions(CLIENTS[name], sink.port):10,.0f} a message")
        return
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    with peers.smtp_sink(extra_args=sink_args) as sink:
        for _ in range(args.rounds):
            for name in names:
                samples[name].append(run_once(CLIENTS[name], sink.port, args.messages))
    label = "PIPELINING" if args.pipelining else "no PIPELINING (smtp-sink -p)"
    print(f"# {args.rounds} rounds of {args.messages} 1 KB messages, {label}; medians")
    print(f"  {'client':20} {'rate (/s)':>10} {'user µs':>9} {'system µs':>10} {'CPU µs':>8}")
    for name in names:
        columns = zip(*samples[name], strict=True)
        rate, user, system = (statistics.median(column) for column in columns)
        total = statistics.median(u + s for _, u, s in samples[name])
        print(f"  {name:20} {rate:10.0f} {user:9.1f} {system:10.1f} {total:8.1f}")
    peer = names[0]
    for name in names[1:]:
        pairs = list(zip(samples[peer], samples[name], strict=True))
        cpu = [(pu + ps) / (u + s) for (_, pu, ps), (_, u, s) in pairs]
        user = [pu / u for (_, pu, _ps), (_, u, _s) in pairs]
        rate = [r / pr for (pr, _pu, _ps), (r, _u, _s) in pairs]
        print(f"  {name} vs {peer}: rate {spread(rate)}; CPU peer/ours {spread(cpu)}; ", end="")
        print(f"user {spread(user)} (min/median/max)")


if __name__ == "__main__":
    main()
