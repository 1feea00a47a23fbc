"""``send``: the command-line SMTP client of the reference server, and what ``fetch``
shares with it (:mod:`smtpcore.server.fetch`)."""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from smtpcore import ProtocolError
from smtpcore._driver import (
    BaseSMTPClient,
    SMTPError,
)
from smtpcore._driver._smtp_envelope import (
    without_hidden_fields,
)
from smtpcore._driver._smtp_matching import match_results
from smtpcore._ip import host_port
from smtpcore.address import AddressError, Mailbox, normalize_domain, parse_mailbox
from smtpcore.asyncio import (
    SMTPClient,
)
from smtpcore.routing import Attempt, Rejected, resolve_exchangers
from smtpcore.server._send_checks import (
    _check_lines,
    check_address_text,
    check_header_text,
    check_helo,
)
from smtpcore.server._send_fates import (
    _SEND_TLS_OPTIONS,
    _cut_short_fates,
    _error_fate,
    _error_for_now,
    _Fate,
    _outcome_fates,
    _own_fate,
    _reply_text,
)
from smtpcore.server._send_message import (
    _envelope_form,
    _envelope_from_headers,
    _read_message,
    make_test_message,
)
from smtpcore.server._send_record import _Record
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
from smtpcore.smtp import TransactionResult

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


async def _submit(
    client: BaseSMTPClient,
    content: bytes,
    sender: str,
    rcpts: Mapping[int, Mailbox],
    where: str,
    record: _Record,
) -> None:
    """One message on a connected client; the fate of each of ``rcpts`` (by its place
    in ``record``), errors included, into ``record``: a batch's as soon as it ends
    (``on_batch``, a message split by LIMITS), the others' before QUIT. Cancelled
    (Ctrl-C: ``asyncio.run`` cancels the task), it adds those the transaction cut
    short had told (:func:`_cut_short_fates`)."""
    waiting = dict(rcpts)  # those of no transaction ended yet

    async def on_batch(result: TransactionResult) -> None:
        for place, item in match_results(waiting.items(), result.recipients).items():
            record.add(place, _own_fate(waiting.pop(place), item, where, None))

    try:
        try:
            outcome: TransactionResult | Exception = await client.send_message(
                content, sender, list(waiting.values()), on_batch=on_batch
            )
        except asyncio.CancelledError:
            for place, fate in _cut_short_fates(client, waiting, where).items():
                record.add(place, fate)
            raise
        except (SMTPError, ProtocolError, ValueError) as exc:
            outcome = exc
        fates = _outcome_fates(outcome, list(waiting.values()), where)
        for place, fate in zip(waiting, fates, strict=True):
            record.add(place, fate)
    finally:
        await client.quit()


def _say_if_plaintext(client: BaseSMTPClient, where: str) -> None:
    """One line on stderr when the server offered STARTTLS and refused it, so that
    the message goes without TLS (``starttls=None``): the user should know. And one
    when the password itself went without TLS (``--allow-plaintext-auth``)."""
    refused = client.starttls_refused
    if refused is not None:
        text = f"{where} refused STARTTLS ({_reply_text(refused)}): sending without TLS"
        print(printable(f"smtpcore send: warning: {text}"), file=sys.stderr)
    mechanism = client.authenticated_with
    if mechanism in ("PLAIN", "LOGIN") and not client.connection.tls:
        warning = plaintext_auth_warning("send", f"AUTH {mechanism}", use=_SEND_TLS_OPTIONS)
        print(warning, file=sys.stderr)


def _client(
    args: argparse.Namespace, host: str, port: int, server_hostname: str, *, exchanger: bool
) -> SMTPClient:
    """STARTTLS whenever offered unless ``--no-starttls``; required with ``--starttls``.
    The certificate is checked, except for an exchanger found by MX lookup without
    ``--starttls`` (opportunistic, RFC 7435, as the relay's ``may``)."""
    options: dict[str, Any] = {}
    if args.user is not None:
        options["username"] = args.user
        options["password"] = args.password
    starttls: bool | None = None
    if args.tls or args.no_starttls:
        starttls = False
    elif args.starttls:
        starttls = True
    insecure = args.insecure or (exchanger and not args.starttls)
    return SMTPClient(
        host,
        port,
        hostname=args.helo,
        tls_on_connect=args.tls,
        starttls=starttls,
        ssl_context=client_tls_context(args.cafile, insecure),
        server_hostname=server_hostname,
        allow_plaintext_auth=args.allow_plaintext_auth,
        **options,
    )


async def _send(
    args: argparse.Namespace, content: bytes, rcpts: list[Mailbox], record: _Record
) -> None:
    """Every recipient's fate into ``record``, each as soon as it is known: with
    ``--server``, in the order of ``rcpts``; by MX lookup, domain by domain."""
    sender = args.sender
    if args.server is not None:
        host, port = args.server
        where = host_port(host, port)
        client = _client(args, host, port, host, exchanger=False)
        try:
            await client.connect()
        except SMTPError as exc:
            name = client.server_hostname
            later = _error_for_now(exc)
            for place, r in enumerate(rcpts):
                record.add(place, _error_fate(str(r), where, exc, later, checked_name=name))
            return
        _say_if_plaintext(client, where)
        await _submit(client, content, sender, dict(enumerate(rcpts)), where, record)
        return
    resolver = make_resolver(args.resolver)
    by_domain: dict[str, list[Mailbox]] = {}
    for rcpt in rcpts:
        by_domain.setdefault(normalize_domain(rcpt.domain), []).append(rcpt)
    first = 0
    for domain, group in by_domain.items():
        placed = dict(enumerate(group, start=first))
        first += len(group)
        attempts = await resolve_exchangers(
            domain, resolver, rng=random.SystemRandom(), port=args.remote_port
        )
        if isinstance(attempts, Rejected):
            text = f"{domain}: {attempts.code} {attempts.status} {attempts.text}"
            for place, r in placed.items():
                record.add(place, _Fate(str(r), False, text, attempts.temporary))
        else:
            await _send_by_mx(args, content, domain, placed, attempts, record)


async def _send_by_mx(
    args: argparse.Namespace,
    content: bytes,
    domain: str,
    group: Mapping[int, Mailbox],
    attempts: Sequence[Attempt],
    record: _Record,
) -> None:
    """The fates of ``group`` (recipients at ``domain``, by place) into ``record``:
    each exchanger in turn, for the recipients the ones before refused for now (RFC
    5321 §5.1: an unreachable or busy one is no reason to give up)."""
    pending = dict(group)
    for attempt in attempts:
        where = f"{attempt.host}[{attempt.address}]:{attempt.port}"
        record.trying(pending, where)
        client = _client(args, str(attempt.address), attempt.port, attempt.host, exchanger=True)
        try:
            await client.connect()
        except SMTPError as exc:
            name = client.server_hostname
            for place, r in pending.items():
                record.add(place, _error_fate(str(r), where, exc, True, checked_name=name))
            continue
        _say_if_plaintext(client, where)
        await _submit(client, content, args.sender, pending, where, record)
        pending = {place: r for place, r in pending.items() if _for_later(record.fate(place))}
        if not pending:
            break
    for place, r in pending.items():
        if record.fate(place) is None:  # no exchanger to try
            text = f"{domain}: no exchanger answered"
            record.add(place, _Fate(str(r), False, text, temporary=True))


def _for_later(fate: _Fate | None) -> bool:
    """Whether the next exchanger is to be tried for a recipient of this fate."""
    return fate is None or fate.temporary


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
