"""The options of the one-shot commands: ``send``, ``fetch``, ``demo``, ``queue`` and
``hash-password``.

Apart from ``serve``'s options (:mod:`smtpcore.server._cli_serve_options`), which
configure a server, and from the commands themselves: these parse what a tool run
once is told, and each command's module reads the result (``tools.run_send``,
``fetch.run_fetch``, ``queuetool.run_queue``, ``demo.run_demo``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from smtpcore.server._cli_types import option_type, parse_port
from smtpcore.server.config import parse_server
from smtpcore.server.fetch import AUTH_CHOICES
from smtpcore.server.passwords import add_password_options

__all__ = [
    "add_demo_command",
    "add_fetch_command",
    "add_hash_password_command",
    "add_queue_command",
    "add_send_command",
]


def add_send_command(commands: Any) -> None:
    """``send`` and its options: the server or the exchangers, the envelope, TLS, the
    login and the message."""
    send = commands.add_parser(
        "send",
        help="submit a message over SMTP",
        description="Submit a message to a server, or straight to the recipients' exchangers.",
        epilog=(
            "Exit status (sendmail's sysexits.h): 0 every recipient accepted; 75 "
            "(EX_TEMPFAIL) some recipient not accepted may be delivered by trying again "
            "(a 4xx, no connection, no answer, the end of the message unanswered, no "
            "STARTTLS for --starttls or --user); 67 "
            "(EX_NOUSER) every recipient not accepted refused as unknown (5.1.1); 69 "
            "(EX_UNAVAILABLE) refused for good otherwise; some accepted and others not "
            "counts as not accepted. 2 a usage mistake; 1 an error of send's own before "
            "any recipient's fate was known; 130 Ctrl-C; 141 or 74 output lost."
        ),
    )
    send.add_argument(
        "--server",
        type=option_type(parse_server, "HOST:PORT"),
        metavar="HOST:PORT",
        help="the server to submit to (an IPv6 address in brackets: [::1]:587); without "
        "it, straight to the recipients' exchangers",
    )
    send.add_argument(
        "--from",
        dest="sender",
        metavar="ADDR",
        help=(
            "default: the message's Sender or From (Resent-Sender or Resent-From in a "
            "message resent once); '' or '<>' for the null sender of a bounce"
        ),
    )
    send.add_argument(
        "--to",
        dest="recipients",
        action="append",
        metavar="ADDR",
        help=(
            "repeatable; default: the message's To, Cc and Bcc (the Resent- ones in a "
            "message resent once); Bcc and Resent-Bcc are never sent"
        ),
    )
    security = send.add_mutually_exclusive_group()
    security.add_argument(
        "--starttls", action="store_true", help="require STARTTLS (used when offered anyway)"
    )
    security.add_argument(
        "--no-starttls", action="store_true", help="never use STARTTLS, even when offered"
    )
    security.add_argument("--tls", action="store_true", help="implicit TLS (port 465 style)")
    send.add_argument("--user", metavar="NAME", help="log in with AUTH as NAME")
    add_password_options(send)
    _add_allow_plaintext_auth(send, "AUTH PLAIN or LOGIN", "RFC 4954 §4")
    send.add_argument(
        "--cafile", type=Path, metavar="FILE", help="trust this CA for the server's certificate"
    )
    send.add_argument(
        "--insecure", action="store_true", help="do not check the server's certificate"
    )
    send.add_argument("--subject", default="smtpcore test message")
    send.add_argument("--body", default="This is a test message sent by smtpcore.\n")
    send.add_argument("--helo", metavar="NAME", help="the name to give in EHLO")
    send.add_argument(
        "--resolver",
        default="system",
        metavar="system|static:FILE|dns:HOST:PORT",
        help="for MX lookups without --server: the system's DNS, a zone file, or the DNS "
        "server at IP address HOST, an IPv6 one in brackets: dns:[::1]:53 (default system)",
    )
    send.add_argument(
        "--remote-port",
        type=option_type(parse_port, "port"),
        default=25,
        metavar="PORT",
        help="port of the exchangers without --server (default 25)",
    )
    send.add_argument(
        "message",
        nargs="?",
        metavar="FILE|-",
        help="the message (RFC 5322); - reads stdin; none sends a test message",
    )


def _add_allow_plaintext_auth(command: argparse.ArgumentParser, logins: str, rfc: str) -> None:
    """``--allow-plaintext-auth``, alike in ``send`` and ``fetch``: ``logins`` show the
    password itself, and the client refuses them without TLS unless it is given."""
    command.add_argument(
        "--allow-plaintext-auth",
        action="store_true",
        help=f"send the password itself ({logins}) without TLS; "
        f"refused by default ({rfc}), loopback included",
    )


def add_fetch_command(commands: Any) -> None:
    """``fetch`` and its options: the POP3 server, TLS, the login and where the messages go."""
    fetch = commands.add_parser(
        "fetch",
        help="retrieve a mailbox over POP3",
        description="Retrieve the messages over POP3 and print a line about each; with "
        "--to-maildir, only those not stored there before.",
    )
    fetch.add_argument(
        "--server",
        type=option_type(parse_server, "HOST:PORT"),
        required=True,
        metavar="HOST:PORT",
        help="the POP3 server (an IPv6 address in brackets: [::1]:110)",
    )
    fetch.add_argument("--user", required=True, metavar="NAME")
    add_password_options(fetch)
    security = fetch.add_mutually_exclusive_group()
    security.add_argument(
        "--stls", action="store_true", help="require STLS (RFC 2595; used when offered anyway)"
    )
    security.add_argument(
        "--no-stls", action="store_true", help="never use STLS, even when offered"
    )
    security.add_argument("--tls", action="store_true", help="implicit TLS (port 995 style)")
    fetch.add_argument("--cafile", type=Path, metavar="FILE")
    fetch.add_argument("--insecure", action="store_true")
    fetch.add_argument(
        "--auth",
        choices=AUTH_CHOICES,
        default="auto",
        help="how to log in (default auto: without TLS, SCRAM-SHA-256, APOP or CRAM-MD5 "
        "when offered, so the password does not cross in the clear; else USER/PASS); "
        "USER/PASS, plain and login are refused without TLS unless --allow-plaintext-auth",
    )
    _add_allow_plaintext_auth(fetch, "USER/PASS, AUTH PLAIN or LOGIN", "RFC 2595 §2.2")
    fetch.add_argument(
        "--delete",
        action="store_true",
        help="delete what was stored from the server (needs --to-maildir); a message "
        "stored by an earlier run is read again (one RETR) and deleted only "
        "when its unique-id, size and whole content match the record, else what was "
        "read is stored as new",
    )
    fetch.add_argument(
        "--to-maildir",
        type=Path,
        metavar="DIR",
        help="store the messages in this Maildir; those stored before (their unique-ids "
        "are kept in DIR) are not fetched again",
    )
    fetch.add_argument(
        "--all",
        action="store_true",
        help="fetch the messages stored before too, as fetchmail's --all (needs --to-maildir)",
    )


def add_demo_command(commands: Any) -> None:
    """``demo`` and its options."""
    demo = commands.add_parser(
        "demo",
        help="play the whole story on loopback: submit, relay, deliver, fetch",
        description=(
            "john@abc.example writes to brendon@pqr.example: two servers on loopback, "
            "a relay by MX lookup, delivery into a Maildir, and a POP3 fetch."
        ),
    )
    demo.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep both servers' data in DIR (made anew)"
    )
    demo.add_argument(
        "--scripted",
        action="store_true",
        help="play a scripted session through the SMTP machine alone (no sockets)",
    )


def add_queue_command(commands: Any) -> None:
    """``queue`` and its actions, each a subcommand."""
    queue = commands.add_parser(
        "queue",
        help="list the queue, retry it now, delete, hold or release messages",
        description=(
            "Look at and act on the queue of a server's data directory, as Postfix's "
            "postqueue and postsuper do; safe while the server runs (it carries the "
            "command out itself)."
        ),
    )
    queue.add_argument(
        "--data-dir",
        type=Path,
        default=Path("smtpcore-data"),
        metavar="DIR",
        help="the server's --data-dir (default ./smtpcore-data)",
    )
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="each message: id, age, size, sender, recipients, errors")
    actions.add_parser("flush", help="retry every deferred message now")
    for name, what in (
        ("delete", "remove messages from the queue, undelivered and without a bounce"),
        ("hold", "keep messages from delivery until released"),
        ("release", "deliver held messages again, at once"),
    ):
        action = actions.add_parser(name, help=what)
        action.add_argument(
            "ids", nargs="+", metavar="ID", help="queue ids, or ALL (those queued now)"
        )


def add_hash_password_command(commands: Any) -> None:
    """``hash-password``, which takes no option."""
    commands.add_parser(
        "hash-password",
        help="print SCRAM-SHA-256 keys for a password, for --users-file",
        description=(
            "Read a password (asked twice on a terminal, else one line of standard input) "
            "and print the SCRAM-SHA-256 keys to put after ADDRESS: in --users-file."
        ),
    )
