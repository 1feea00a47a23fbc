"""``send``'s SMTP sessions: the client each server gets (TLS, login), the one
transaction on it, and the recipients' way to their server, ``--server`` or each
domain's exchangers by MX lookup, the next exchanger tried for those refused for now
(RFC 5321 §5.1).

Apart from the command's own steps (checks, the message, the exit status): this is
the only part that connects, and it writes each fate into the record as soon as a
transaction ends, so that a Ctrl-C loses none.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from smtpcore import ProtocolError
from smtpcore._driver import BaseSMTPClient, SMTPError
from smtpcore._driver._smtp_matching import match_results
from smtpcore._ip import host_port
from smtpcore.address import Mailbox, normalize_domain
from smtpcore.asyncio import SMTPClient
from smtpcore.routing import Attempt, Rejected, resolve_exchangers
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
from smtpcore.server._send_record import _Record
from smtpcore.server._tools_printable import printable
from smtpcore.server._tools_tls import client_tls_context, plaintext_auth_warning
from smtpcore.server.resolvers import make_resolver
from smtpcore.smtp import TransactionResult

__all__ = ["_send", "_submit"]


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
