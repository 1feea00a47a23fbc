"""``python -m smtpcore``: ``serve``, ``send``, ``fetch`` and ``demo``.

``serve`` runs the reference mail server; ``send`` submits a message over
SMTP (to a server, or straight to the recipients' exchangers); ``fetch``
retrieves a mailbox over POP3; ``demo`` plays the whole story on loopback.

This module keeps the parser's assembly, the dispatch to each command, and
``hash-password``. Its parts each have a module of their own: the options' types
(``_cli_types``), ``serve``'s options (``_cli_serve_options``), the other commands'
options (``_cli_tool_options``), the configuration ``serve``'s options describe
(``_cli_config``: :func:`config_from_args`, still imported from here) and running
``serve`` (``_cli_serve``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from smtpcore._version import __version__
from smtpcore.server._cli_config import config_from_args as config_from_args  # public here
from smtpcore.server._cli_serve import run_serve
from smtpcore.server._cli_serve_options import add_serve_command
from smtpcore.server._cli_tool_options import (
    add_demo_command,
    add_fetch_command,
    add_hash_password_command,
    add_queue_command,
    add_send_command,
)
from smtpcore.server.config import ConfigError
from smtpcore.server.logformat import log_to_stderr, tool_format
from smtpcore.server.output import OutputLost, forgiving_stderr, output_lost, watched_stdout

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smtpcore",
        description="smtpcore's reference mail server and tools.",
    )
    parser.add_argument("--version", action="version", version=f"smtpcore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_command(commands)
    add_send_command(commands)
    add_fetch_command(commands)
    add_demo_command(commands)
    add_hash_password_command(commands)
    add_queue_command(commands)
    return parser


def _run_hash_password() -> int:
    from smtpcore.server.credentials import hash_password
    from smtpcore.server.passwords import ask_password

    if sys.stdin.isatty():
        password = ask_password("Password: ")
        if ask_password("Again: ") != password:
            print("smtpcore hash-password: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        print(hash_password(password))
    except ValueError as exc:
        print(f"smtpcore hash-password: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. Its standard output is watched (:mod:`smtpcore.server.output`):
    one that cannot be written ends it here, whatever the command, with no traceback.
    A standard error that cannot be written is forgiven, from the parsing of ``argv``
    on: there is no one left to tell."""
    with forgiving_stderr():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with watched_stdout():
            return _run_command(args)
    except OutputLost as lost:
        return output_lost(args.command, lost)
    except ConfigError as exc:
        print(f"smtpcore {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return run_serve(args)
    # What the library logs under a one-shot command (a damaged queue file met by
    # `queue`, say) reads as the command's own warnings do, never as a bare line.
    log_to_stderr(logging.WARNING, tool_format(args.command))
    if args.command == "send":
        from smtpcore.server.tools import run_send

        return run_send(args)
    if args.command == "queue":
        from smtpcore.server.queuetool import run_queue

        return run_queue(args)
    if args.command == "hash-password":
        return _run_hash_password()
    if args.command == "fetch":
        from smtpcore.server.fetch import run_fetch

        return run_fetch(args)
    if args.scripted:
        from smtpcore._scripted import play_scripted_session

        return 0 if play_scripted_session() else 1
    from smtpcore.server.demo import run_demo

    return run_demo(args.keep)
