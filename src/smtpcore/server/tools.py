"""``send`` and ``fetch``: the command-line client side of the reference server."""

from __future__ import annotations

import argparse
import asyncio
import email.parser
import email.policy
import email.utils
import random
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtpcore._driver import (
    BaseSMTPClient,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    SMTPError,
)
from smtpcore.address import AddressError, Mailbox, normalize_domain, parse_mailbox
from smtpcore.asyncio import POP3Client, POP3Error, SMTPClient
from smtpcore.routing import Rejected, resolve_exchangers
from smtpcore.sasl import ScramSHA256Client
from smtpcore.server.config import ConfigError
from smtpcore.server.maildir import Maildir
from smtpcore.server.resolvers import make_resolver
from smtpcore.smtp import Reply, TransactionResult

__all__ = ["client_tls_context", "make_test_message", "run_fetch", "run_send"]


def client_tls_context(cafile: Path | None, insecure: bool) -> ssl.SSLContext:
    """Verified TLS by default; ``cafile`` adds a CA to trust, ``insecure`` checks nothing."""
    context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def make_test_message(
    sender: str, recipients: Sequence[str], subject: str, body: str, hostname: str
) -> bytes:
    """A small RFC 5322 message for ``send`` without a file."""
    text = body if body.endswith("\n") else body + "\n"
    headers = [
        f"From: <{sender}>",
        f"To: {', '.join(f'<{r}>' for r in recipients)}",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"Message-ID: {email.utils.make_msgid(domain=hostname)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    lines = [*headers, "", *text.splitlines()]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _reply_text(reply: Reply | None) -> str:
    if reply is None:
        return "no reply"
    status = f" {reply.status}" if reply.status is not None else ""
    return f"{reply.code}{status} {' '.join(reply.lines)}".strip()


@dataclass(frozen=True, slots=True)
class _Fate:
    recipient: str
    accepted: bool
    text: str


def _fates(result: TransactionResult, where: str) -> list[_Fate]:
    fates = []
    for item in result.recipients:
        reply = item.delivery if item.accepted else item.reply
        fates.append(_Fate(str(item.recipient), item.delivered, f"{where}: {_reply_text(reply)}"))
    return fates


async def _submit(
    client: BaseSMTPClient, content: bytes, sender: str, rcpts: Sequence[Mailbox], where: str
) -> list[_Fate]:
    """One transaction on a connected client; every recipient's fate, errors included."""
    try:
        result = await client.send_message(content, sender, rcpts)
    except SenderRefused as exc:
        return [
            _Fate(str(r), False, f"{where}: MAIL refused: {_reply_text(exc.reply)}") for r in rcpts
        ]
    except (RecipientsRefused, MessageRefused) as exc:
        if exc.result is not None and isinstance(exc, RecipientsRefused):
            return _fates(exc.result, where)
        text = f"{where}: {exc.command} refused: {_reply_text(exc.reply)}"
        return [_Fate(str(r), False, text) for r in rcpts]
    except SMTPError as exc:
        return [_Fate(str(r), False, f"{where}: {exc}") for r in rcpts]
    finally:
        await client.quit()
    return _fates(result, where)


def _client(args: argparse.Namespace, host: str, port: int, server_hostname: str) -> SMTPClient:
    options: dict[str, Any] = {}
    if args.user is not None:
        if args.password is None:
            raise ConfigError("--user needs --password")
        options["username"] = args.user
        options["password"] = args.password
    return SMTPClient(
        host,
        port,
        hostname=args.helo or socket.getfqdn(),
        tls_on_connect=args.tls,
        starttls=None if args.tls else bool(args.starttls),
        ssl_context=client_tls_context(args.cafile, args.insecure),
        server_hostname=server_hostname,
        **options,
    )


async def _send(args: argparse.Namespace, content: bytes, rcpts: list[Mailbox]) -> list[_Fate]:
    sender = args.sender
    if args.server is not None:
        host, port = args.server
        where = f"{host}:{port}"
        client = _client(args, host, port, host)
        try:
            await client.connect()
        except SMTPError as exc:
            return [_Fate(str(r), False, f"{where}: {exc}") for r in rcpts]
        return await _submit(client, content, sender, rcpts, where)
    resolver = make_resolver(args.resolver)
    by_domain: dict[str, list[Mailbox]] = {}
    for rcpt in rcpts:
        by_domain.setdefault(normalize_domain(rcpt.domain), []).append(rcpt)
    fates: list[_Fate] = []
    for domain, group in by_domain.items():
        attempts = await resolve_exchangers(
            domain, resolver, rng=random.SystemRandom(), port=args.remote_port
        )
        if isinstance(attempts, Rejected):
            text = f"{domain}: {attempts.code} {attempts.status} {attempts.text}"
            fates += [_Fate(str(r), False, text) for r in group]
            continue
        last = f"{domain}: no exchanger answered"
        for attempt in attempts:
            where = f"{attempt.host}[{attempt.address}]:{attempt.port}"
            client = _client(args, str(attempt.address), attempt.port, attempt.host)
            try:
                await client.connect()
            except SMTPError as exc:
                last = f"{where}: {exc}"
                continue
            fates += await _submit(client, content, sender, group, where)
            break
        else:
            fates += [_Fate(str(r), False, last) for r in group]
    return fates


def run_send(args: argparse.Namespace) -> int:
    """``send``: prints each recipient's fate; 0 only when every one was accepted."""
    try:
        rcpts = [parse_mailbox(r) for r in args.recipients]
        if args.sender:
            parse_mailbox(args.sender)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None
    if args.message is None:
        content = make_test_message(
            args.sender, args.recipients, args.subject, args.body, args.helo or socket.getfqdn()
        )
    elif args.message == "-":
        content = sys.stdin.buffer.read()
    else:
        try:
            content = Path(args.message).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {args.message}: {exc.strerror}") from None
    fates = asyncio.run(_send(args, content, rcpts))
    for fate in fates:
        print(f"<{fate.recipient}>: {'accepted' if fate.accepted else 'refused'} by {fate.text}")
    return 0 if fates and all(f.accepted for f in fates) else 1


def _summary(number: int, content: bytes) -> str:
    """``3: 1234 octets, from <...>, "subject"``: one line per fetched message."""
    header = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(content)
    sender = str(header.get("From", "(no From)"))
    subject = str(header.get("Subject", "(no Subject)"))
    date = str(header.get("Date", ""))
    when = f", {date}" if date else ""
    return f"{number}: {len(content)} octets, from {sender}{when}: {subject!r}"


async def _fetch(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    host, port = args.server
    client = POP3Client(
        host,
        port,
        tls_on_connect=args.tls,
        stls=None if args.tls else bool(args.stls),
        ssl_context=client_tls_context(args.cafile, args.insecure),
    )
    target = Maildir(args.to_maildir) if args.to_maildir is not None else None
    try:
        async with client:
            offered = client.capabilities.get("SASL", ())
            if not client.tls and "SCRAM-SHA-256" in offered:
                # No password on the wire in the clear when the server can do better.
                await client.authenticate(ScramSHA256Client(args.user, args.password))
            else:
                await client.login(args.user, args.password)
            listing = await client.list()
            total = 0
            for item in listing:
                content = await client.retrieve(item.number)
                total += len(content)
                if target is not None:
                    await asyncio.to_thread(target.deliver, b"", [content])
                say(_summary(item.number, content))
                if args.delete:
                    await client.delete(item.number)
    except POP3Error as exc:
        say(f"fetch: {exc}")
        return 1
    kept = f"stored in {args.to_maildir}, " if target is not None else ""
    deleted = "deleted from the server" if args.delete else "left on the server"
    say(f"{len(listing)} messages, {total} octets; {kept}{deleted}.")
    return 0


def run_fetch(args: argparse.Namespace, say: Callable[[str], None] = print) -> int:
    """``fetch``: a line per message; 0 when every message was retrieved."""
    return asyncio.run(_fetch(args, say))
