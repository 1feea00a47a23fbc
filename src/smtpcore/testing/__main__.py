"""``python -m smtpcore.testing``: check an SMTP server, or fuzz smtpcore's machines.

``check HOST:PORT`` runs :mod:`smtpcore.testing.check`'s battery and prints
a report; the exit status is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _parser() -> argparse.ArgumentParser:
    from smtpcore.testing.check import CHECKS

    parser = argparse.ArgumentParser(
        prog="python -m smtpcore.testing",
        description="Check an SMTP server for smuggling, pipelining, STARTTLS and limit bugs.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="run the check battery against HOST:PORT",
        description="Run the check battery against the SMTP server at HOST:PORT. "
        "It sends a few small messages to --recipient: use a sink address.",
    )
    check.add_argument("address", type=_address, metavar="HOST:PORT")
    check.add_argument("--recipient", default="postmaster@smtpcore.test")
    check.add_argument("--sender", default="check@smtpcore.test")
    check.add_argument("--helo", default="check.smtpcore.test")
    check.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    check.add_argument("--seed", type=int, default=0, help="seed of the random chunkings")
    check.add_argument(
        "--only", action="append", choices=list(CHECKS), metavar="NAME", help="run only NAME"
    )
    check.add_argument(
        "--no-transcripts", action="store_true", help="do not print failures' transcripts"
    )
    return parser


def _check(args: argparse.Namespace) -> int:
    from smtpcore.testing.check import check_server

    host, port = args.address
    report = check_server(
        host,
        port,
        checks=args.only,
        helo=args.helo,
        sender=args.sender,
        recipient=args.recipient,
        timeout=args.timeout,
        seed=args.seed,
    )
    print(report.format(transcripts=not args.no_transcripts))
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _check(args)


if __name__ == "__main__":
    sys.exit(main())
