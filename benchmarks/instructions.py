"""User-space instructions a server process runs per message or connection, counted
by valgrind: a figure as exact as a call count, for the whole process.

    .venv/bin/python benchmarks/instructions.py [--loads reused,pipelined,newconn,connect]
        [--servers smtpcore.asyncio,twisted,"raw floor"] [--units 400]

CPU time on a shared machine swings by a third from one run to the next; the
instructions a process executes do not (two runs agree to 0.1%). Each server
runs in its own process under ``valgrind --tool=callgrind`` (about fifty times
slower, which only the load's length notices); the count is zeroed after a
warm-up of 40 units and read after ``--units`` more, so that start-up and first
use drop out. What it leaves out is the kernel's share: the reads, writes and
waits, which ``strace -c`` counts (the same for smtpcore and the raw floor).

The loads are ``compare.py``'s: ``connect`` (connect, EHLO, QUIT), ``newconn``
(smtp-source, a new connection per message), ``reused`` (smtp-source, 20
reused sessions) and ``pipelined`` (one session). It needs valgrind (the test
setup's Debian packages install it), Postfix's smtp-source, and Twisted for
its row (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import adapters_smtp  # noqa: E402
import compare  # noqa: E402

LOADS: dict[str, Callable[[int, int], object]] = {
    "connect": compare.connect_only,
    "newconn": lambda port, n: compare.smtp_source(port, n, 20, reuse=False),
    "reused": lambda port, n: compare.smtp_source(port, n, 20, reuse=True),
    "pipelined": adapters_smtp.pipelined,
}
WARM_UP = 40


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed (the test setup's Debian packages have it)")
    return found


def instructions(kind: str, load: Callable[[int, int], object], units: int) -> float:
    """Instructions per unit of a fresh ``kind`` server (``adapters_smtp.serve``)."""
    valgrind, control = tool("valgrind"), tool("callgrind_control")
    port = adapters_smtp.free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        child = subprocess.Popen(
            [
                *(valgrind, "--tool=callgrind", f"--callgrind-out-file={out}"),
                *(sys.executable, str(HERE / "adapters_smtp.py"), "--serve", kind, str(port)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"{kind} did not start")
            load(port, WARM_UP)
            subprocess.run([control, "--zero", str(child.pid)], check=True, capture_output=True)
            load(port, units)
            subprocess.run([control, "--dump", str(child.pid)], check=True, capture_output=True)
        finally:
            child.kill()
            child.wait()
        dumped = [path for path in Path(scratch).iterdir() if path.name.endswith(".1")]
        if len(dumped) != 1:
            raise RuntimeError(f"callgrind wrote {sorted(p.name for p in dumped)}")
        total = re.search(r"^(?:summary|totals): (\d+)", dumped[0].read_text(), re.MULTILINE)
        if total is None:
            raise RuntimeError("no total in callgrind's dump")
        return int(total.group(1)) / units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", default="connect,newconn,reused,pipelined")
    parser.add_argument("--servers", default="smtpcore.asyncio,twisted,raw floor")
    parser.add_argument("--units", type=int, default=400, help="messages or connections")
    args = parser.parse_args()
    if not 20 <= args.units <= 5000:
        parser.error("--units is 20 to 5000")
    servers = args.servers.split(",")
    for name in args.loads.split(","):
        print(f"{name}, {args.units} units: instructions per unit")
        counts = {kind: instructions(kind, LOADS[name], args.units) for kind in servers}
        ours = counts.get("smtpcore.asyncio")
        for kind, count in counts.items():
            ratio = (
                f"  ({count / ours:.2f}x smtpcore's)"
                if ours and kind != "smtpcore.asyncio"
                else ""
            )
            print(f"  {kind:18} {count:12,.0f}{ratio}")


if __name__ == "__main__":
    main()
