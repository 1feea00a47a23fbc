"""``python -m smtpcore``: the command line.

``demo`` plays a scripted session through the SMTP server machine and prints
the transcript.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from smtpcore._scripted import play_scripted_session

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smtpcore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="play an SMTP session through the server machine")
    demo.add_argument(
        "--scripted",
        action="store_true",
        help="play the scripted session through the machine alone (no sockets)",
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return 0 if play_scripted_session() else 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
