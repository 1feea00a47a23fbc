"""Where the SMTP clients' Python calls per message go, function by function.

    .venv/bin/python benchmarks/client_calls.py [--messages 50] [--top 40] [--bytecodes]

Runs ``smtpcore.sync``'s and the asyncio client's ``send_message`` over one
connection to Postfix's smtp-sink, with and without PIPELINING, under a
``sys.setprofile`` counter keyed by function, and prints the calls per
message (the difference between sessions of ``messages`` and twice as many
messages, so that connecting, EHLO and QUIT drop out). The count is the same
on any machine at any load: it is what ``benchmarks/compare.py`` prints in
its ``Py calls`` column, broken down. With ``--bytecodes`` the figure is the
bytecodes each function runs a message (a ``sys.settrace`` counter of opcode
events, as exact): how much work the calls do, the event loop's included.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import client_loads  # noqa: E402

import peers  # noqa: E402

CLIENTS: dict[str, Callable[[int, int], None]] = {
    "smtpcore.sync": client_loads.sync_client,
    "smtpcore.asyncio": client_loads.asyncio_client,
    "smtpcore.trio": client_loads.trio_client,
    "asyncio floor": client_loads.asyncio_floor_client,  # asyncio's own share
    "asyncio minimal": client_loads.asyncio_minimal_client,  # the least on asyncio
    "asyncio woken": client_loads.asyncio_woken_client,  # woken as smtpcore wakes
    "asyncio callback": client_loads.asyncio_callback_client,  # woken once a message
    "aiosmtplib": client_loads.aiosmtplib_client,  # the asyncio client's own kind of peer
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--top", type=int, default=40, help="functions shown per client")
    parser.add_argument("--only", default="", help="comma-separated client names")
    parser.add_argument(
        "--bytecodes", action="store_true", help="count bytecodes run rather than calls"
    )
    args = parser.parse_args()
    what = "bytecodes" if args.bytecodes else "calls"
    chosen = [name for name in CLIENTS if not args.only or name in args.only.split(",")]
    with peers.smtp_sink() as piped, peers.smtp_sink(extra_args=("-p",)) as plain:
        for label, port in (("PIPELINING", piped.port), ("no PIPELINING", plain.port)):
            for name in chosen:
                CLIENTS[name](port, 2)  # imports and first-use caches out of the way
                calls = client_loads.message_calls(
                    CLIENTS[name], port, args.messages, bytecodes=args.bytecodes
                )
                total = sum(calls.values()) / args.messages
                print(f"\n{name}, {label}: {total:.1f} {what}/message")
                for where, count in calls.most_common(args.top):
                    if count:
                        print(f"  {count / args.messages:6.1f}  {where}")


if __name__ == "__main__":
    main()
