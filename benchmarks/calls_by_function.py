"""Where the server's Python calls go, function by function, per command or message.

    .venv/bin/python benchmarks/calls_by_function.py WORKLOAD [--units N] [--bytecodes]

A ``sys.setprofile`` counter keyed by function, exact and deaf to the machine's
load, run twice and differenced so that one-time costs (imports, the first
session) drop out:

* ``params`` and ``plain``: the server machine in memory reading ``MAIL`` with
  ``SIZE=`` and ``BODY=``, ``RCPT`` with ``NOTIFY=NEVER``, and ``RSET`` (or the
  same without parameters), as ``compare.py --only params`` does; per command;
* ``pipelined``: the asyncio server (or ``--server trio``) in a thread of this
  process, one session of pipelined 1 KB messages (``adapters_smtp.pipelined``);
  per message; ``pipelined-tls``: the same session after STARTTLS (a throwaway
  certificate made with ``trustme``), smtpcore's servers only;
* ``reused``: the same server under ``smtp-source -s 20 -d`` (Postfix's tools);
  per message, each session's setup included;
* ``connect``: the same server, connect, EHLO, QUIT, one connection after
  another (``compare.py``'s connection setup); per connection;
  ``--server "asyncio floor"`` counts the bare ``asyncio.Protocol`` that
  writes the same bytes (asyncio's own share), ``--server "raw floor"`` the
  same over the raw socket on asyncio's selector (as smtpcore's asyncio
  server reads and writes), ``--server "trio floor"`` the same on a bare
  ``trio.SocketStream``;
* ``newconn``: the same server under ``smtp-source -s 20``, a new connection
  per message; per message.

Functions making at least 0.05 calls per unit are listed, the most called first.
With ``--bytecodes`` the figure is the bytecodes each function runs per unit (a
``sys.settrace`` counter of opcode events, as exact): how much work the calls do.
"""

from __future__ import annotations

import argparse
import collections
import functools
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import CodeType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import adapters_instructions  # noqa: E402
import adapters_smtp  # noqa: E402
import client_loads  # noqa: E402
import compare  # noqa: E402


def source_path_and_name(code: CodeType) -> str:
    """``smtpcore/smtp/_server.py:417:next_event``: the path below ``src/`` (or the
    interpreter's ``lib/python``), the first line and the name."""
    where = code.co_filename.rsplit("/src/", 1)[-1].rsplit("/lib/python", 1)[-1]
    return f"{where}:{code.co_firstlineno}:{code.co_name}"


def new_counter(bytecodes: bool) -> client_loads.CallCounter:
    kind = client_loads.BytecodeCounter if bytecodes else client_loads.CallCounter
    return kind(source_path_and_name)


def in_memory(batch: bytes, rounds: int, bytecodes: bool = False) -> collections.Counter[str]:
    def by_function(n: int) -> collections.Counter[str]:
        counter = new_counter(bytecodes)
        if isinstance(counter, client_loads.BytecodeCounter):
            counter.install()
            try:
                compare.machine_commands(batch, n)
            finally:
                sys.settrace(None)
            return counter.by_function
        return client_loads.counted(
            lambda: compare.machine_commands(batch, n), source_path_and_name
        ).by_function

    short, long = by_function(rounds), by_function(2 * rounds)
    long.subtract(short)
    return long


def in_server(
    load: Callable[[int, int], object],
    messages: int,
    server: str = "asyncio",
    bytecodes: bool = False,
    tls: Any = None,
) -> collections.Counter[str]:
    counter = new_counter(bytecodes)
    ready = threading.Event()
    port = adapters_smtp.free_port()

    def serve() -> None:
        if isinstance(counter, client_loads.BytecodeCounter):
            counter.install()
        adapters_instructions.serve(server, port, counter, ready, tls)

    thread = threading.Thread(target=serve, daemon=True)  # it serves until this process ends
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the server did not start")
    load(port, messages)
    before = counter.by_function.copy()
    load(port, messages)
    after = counter.by_function.copy()
    after.subtract(before)
    return after


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server's context with a throwaway certificate, and a client's that trusts it."""
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.test").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "workload",
        choices=["params", "plain", "pipelined", "pipelined-tls", "reused", "connect", "newconn"],
    )
    parser.add_argument(
        "--server",
        default="asyncio",
        choices=["asyncio", "trio", "asyncio floor", "raw floor", "trio floor"],
        help="for the loads over sockets (the floors: no smtpcore, the same bytes written)",
    )
    parser.add_argument("--units", type=int, default=200, help="rounds of 3, or messages")
    parser.add_argument(
        "--bytecodes", action="store_true", help="count bytecodes run rather than calls"
    )
    args = parser.parse_args()
    what = "bytecodes" if args.bytecodes else "Python calls"
    if args.workload in ("params", "plain"):
        batch = compare.WITH_PARAMETERS if args.workload == "params" else compare.PLAIN
        counts, units = in_memory(batch, args.units, args.bytecodes), 3 * args.units
    elif args.workload == "pipelined":
        counts, units = (
            in_server(adapters_smtp.pipelined, args.units, args.server, args.bytecodes),
            args.units,
        )
    elif args.workload == "pipelined-tls":
        server_tls, client_tls = tls_contexts()
        counts, units = (
            in_server(
                functools.partial(adapters_smtp.pipelined, tls=client_tls),
                args.units,
                args.server,
                args.bytecodes,
                server_tls,
            ),
            args.units,
        )
    elif args.workload == "connect":
        counts, units = (
            in_server(compare.connect_only, args.units, args.server, args.bytecodes),
            args.units,
        )
    else:
        reuse = args.workload == "reused"
        counts = in_server(
            lambda port, n: compare.smtp_source(port, n, 20, reuse=reuse),
            args.units,
            args.server,
            args.bytecodes,
        )
        units = args.units
    print(f"{args.workload}: {sum(counts.values()) / units:.2f} {what} per unit")
    for where, calls in counts.most_common():
        if calls / units < (1 if args.bytecodes else 0.05):
            break
        print(f"  {calls / units:7.2f}  {where}")


if __name__ == "__main__":
    main()
