"""``send``: the command-line SMTP client of the reference server, as a command: its
steps from the options to the exit status, and the line it prints per recipient.

Each step has a module of its own: the checks of what it was given
(:mod:`~smtpcore.server._send_checks`), the message and its envelope
(:mod:`~smtpcore.server._send_message`), the sessions that send it
(:mod:`~smtpcore.server._send_sessions`), each recipient's fate
(:mod:`~smtpcore.server._send_fates`) and their record
(:mod:`~smtpcore.server._send_record`). What ``fetch`` (:mod:`smtpcore.server.fetch`)
shares with it, the TLS context and its words (:mod:`~smtpcore.server._tools_tls`) and
:func:`printable`, is importable from here too, as it always was.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence

from smtpcore import ProtocolError
from smtpcore._driver import SMTPError
from smtpcore._driver._smtp_envelope_header import without_hidden_fields
from smtpcore.address import AddressError, parse_mailbox
from smtpcore.server._send_checks import (
    _check_lines,
    check_address_text,
    check_header_text,
    check_helo,
)
from smtpcore.server._send_fates import _Fate
from smtpcore.server._send_message import (
    _envelope_form,
    _envelope_from_headers,
    _read_message,
    make_test_message,
)
from smtpcore.server._send_record import _Record
from smtpcore.server._send_sessions import _send
from smtpcore.server._tools_printable import printable
from smtpcore.server._tools_tls import (
    client_tls_context,
    declined_certificate,
    failed_certificate_check,
    plaintext_auth_refused,
    plaintext_auth_warning,
)
from smtpcore.server.config import ConfigError, default_hostname_warning
from smtpcore.server.output import OutputLost
from smtpcore.server.passwords import read_password
from smtpcore.server.resolvers import check_remote_delivery, make_resolver
from smtpcore.server.sendstatus import send_status

__all__ = [
    "client_tls_context",
    "declined_certificate",
    "failed_certificate_check",
    "make_test_message",
    "plaintext_auth_refused",
    "plaintext_auth_warning",
    "printable",
    "run_send",
]


def run_send(args: argparse.Namespace) -> int:
    """``send``: prints each recipient's fate; 0 only when every one was accepted, else
    :func:`~smtpcore.server.sendstatus.send_status`'s sysexits status (75 to try again,
    69 refused, 67 unknown recipients); 2 for a usage mistake, and 1 with a one-line
    error for a failure of its own before any recipient's fate was known."""
    check_header_text("--subject", args.subject)
    if args.helo:
        check_helo(args.helo)
    check_address_text("--from", args.sender or "")
    if args.sender == "<>":  # the null reverse-path, as the clients take it
        args.sender = ""
    for recipient in args.recipients or []:
        check_address_text("--to", recipient)
    content = _read_message(args)
    if content is not None:
        _check_lines(content, "standard input" if args.message == "-" else args.message)
        if args.sender is None or not args.recipients:
            args.sender, args.recipients = _envelope_from_headers(
                content, args.sender, args.recipients or []
            )
        content = without_hidden_fields(content)  # whatever gave the envelope
    if args.sender is None:
        raise ConfigError("no sender: give --from, or a message with a From header")
    if not args.recipients:
        raise ConfigError("no recipients: give --to, or a message with To, Cc or Bcc")
    try:
        rcpts = [parse_mailbox(r) for r in args.recipients]
        if args.sender:
            parse_mailbox(args.sender)
    except AddressError as exc:  # the message's own fields quoted, maybe
        raise ConfigError(printable(str(exc))) from None
    if args.user is not None:
        args.password = read_password(
            given=args.password, password_file=args.password_file, user=args.user
        )
    if not args.helo:
        args.helo = socket.getfqdn()
        warning = default_hostname_warning(args.helo, "--helo")
        if warning is not None:
            print(f"smtpcore send: warning: {warning}", file=sys.stderr)
    if content is None:
        content = make_test_message(
            _envelope_form(args.sender),
            [str(r.a_label_form) for r in rcpts],
            args.subject,
            args.body,
            args.helo,
        )
        _check_lines(content, "the message made of --subject and --body")
    if args.server is None:
        resolver = make_resolver(args.resolver)
        check_remote_delivery(resolver, None)
    record = _Record()
    try:
        asyncio.run(_send(args, content, rcpts, record))
    except KeyboardInterrupt:  # Ctrl-C: every fate known is said, accepted ones above all
        _print_fates(record.fates_when_interrupted())
        raise
    except (OSError, ProtocolError, ValueError, SMTPError) as exc:
        print(printable(f"smtpcore send: {exc}"), file=sys.stderr)
        return 1
    fates = record.fates()
    _print_fates(fates)
    return send_status(fates)


def _print_fates(fates: Sequence[_Fate]) -> None:
    """A line per recipient on standard output, each written at once. Output that
    cannot be written (:class:`OutputLost`) comes after the message went: the lines it
    lost go to standard error, so that a script still learns each recipient's fate."""
    lines = [printable(f"<{fate.recipient}>: {_verdict(fate)} {fate.text}") for fate in fates]
    for done, line in enumerate(lines):
        try:
            print(line, flush=True)
        except OutputLost as lost:
            for left in lines[done:]:
                print(left, file=sys.stderr)
            lost.told = True
            raise


def _verdict(fate: _Fate) -> str:
    if fate.local:
        return "not sent to"
    if fate.unknown:
        return "may have been delivered by"
    return "accepted by" if fate.accepted else "refused by"
