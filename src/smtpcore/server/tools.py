"""``send`` and ``fetch``: the command-line client side of the reference server."""

from __future__ import annotations

import argparse
import asyncio
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import random
import re
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from smtpcore import ProtocolError
from smtpcore._driver import (
    BaseSMTPClient,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    SMTPError,
    SMTPReplyError,
)
from smtpcore._ip import host_port
from smtpcore.address import AddressError, Mailbox, normalize_domain, parse_mailbox
from smtpcore.asyncio import (
    MessageListing,
    POP3Client,
    POP3Error,
    POP3ResponseError,
    SMTPClient,
)
from smtpcore.routing import Rejected, resolve_exchangers
from smtpcore.sasl import (
    ClientMechanism,
    CramMD5Client,
    LoginClient,
    PlainClient,
    ScramSHA256Client,
)
from smtpcore.server.config import ConfigError, default_hostname_warning
from smtpcore.server.fetchrecord import FetchRecord
from smtpcore.server.log import loggable
from smtpcore.server.maildir import Maildir
from smtpcore.server.passwords import read_password
from smtpcore.server.resolvers import check_remote_delivery, make_resolver
from smtpcore.smtp import Reply, TransactionResult

__all__ = ["client_tls_context", "make_test_message", "run_fetch", "run_send"]


def client_tls_context(cafile: Path | None, insecure: bool) -> ssl.SSLContext:
    """Verified TLS by default; ``cafile`` adds a CA to trust, ``insecure`` checks nothing."""
    context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_header_text(option: str, text: str) -> str:
    """``text`` for a header field, or a :class:`ConfigError` if it holds a control
    character: a CR or LF would end the field and start another (header injection)."""
    found = _CONTROL.search(text)
    if found is not None:
        raise ConfigError(
            f"{option}: control character {found.group()!r} not allowed in a header field"
        )
    return text


def make_test_message(
    sender: str, recipients: Sequence[str], subject: str, body: str, hostname: str
) -> bytes:
    """A small RFC 5322 message for ``send`` without a file; a UTF-8 subject is
    encoded as RFC 2047 says, so the header stays ASCII."""
    check_header_text("--subject", subject)
    text = body if body.endswith("\n") else body + "\n"
    if not subject.isascii():
        subject = email.header.Header(subject, "utf-8").encode()
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
    temporary: bool = False
    """Refused for now (a 4xx, no answer, the connection lost): by MX lookup, the next
    exchanger is tried for it (RFC 5321 §5.1)."""
    local: bool = False
    """Not sent by this client's own choice (``--starttls`` and no STARTTLS offered):
    nothing was refused by the server, whatever reply the error carries."""


def _error_fate(recipient: str, where: str, exc: SMTPError, temporary: bool = False) -> _Fate:
    """The fate of a recipient a client error stopped. An error the client raised on
    its own (:attr:`SMTPReplyError.local`) carries a reply the server never sent
    (``454 4.7.4``): shown as the client's refusal, without that code."""
    if isinstance(exc, SMTPReplyError) and exc.local:
        reason = " ".join(exc.reply.lines)
        text = f"{where}: {exc.command} not sent: this client refused to go on: {reason}"
        return _Fate(recipient, False, text, temporary, local=True)
    return _Fate(recipient, False, f"{where}: {exc}", temporary)


def _for_now(reply: Reply | None) -> bool:
    return reply is None or 400 <= reply.code < 500


def _fates(result: TransactionResult, where: str) -> list[_Fate]:
    fates = []
    for item in result.recipients:
        reply = item.delivery if item.accepted else item.reply
        text = f"{where}: {_reply_text(reply)}"
        later = not item.delivered and _for_now(reply)
        fates.append(_Fate(str(item.recipient), item.delivered, text, later))
    return fates


async def _submit(
    client: BaseSMTPClient, content: bytes, sender: str, rcpts: Sequence[Mailbox], where: str
) -> list[_Fate]:
    """One transaction on a connected client; every recipient's fate, errors included."""
    try:
        result = await client.send_message(content, sender, rcpts)
    except SMTPReplyError as exc:
        return _refusal_fates(exc, rcpts, where)
    except SMTPError as exc:  # no answer in time, the connection lost
        return [_error_fate(str(r), where, exc, True) for r in rcpts]
    except (ProtocolError, ValueError) as exc:  # what the server's extensions rule out
        return [_Fate(str(r), False, f"{where}: cannot send: {exc}") for r in rcpts]
    finally:
        await client.quit()
    return _fates(result, where)


def _refusal_fates(exc: SMTPReplyError, rcpts: Sequence[Mailbox], where: str) -> list[_Fate]:
    """Every recipient's fate after a refusal. This client's own (:attr:`local`: a
    message it would not send, as ``ExtensionNotOffered`` or ``MessageTooLarge``)
    comes first, whatever its kind: its reply is none a server sent, and must not read
    as one. Then the server's, by the command it refused."""
    later = _for_now(exc.reply)
    if exc.local:
        return [_error_fate(str(r), where, exc, later) for r in rcpts]
    if isinstance(exc, RecipientsRefused) and exc.result is not None:
        return _fates(exc.result, where)
    if isinstance(exc, (SenderRefused, RecipientsRefused, MessageRefused)):
        text = f"{where}: {exc.command} refused: {_reply_text(exc.reply)}"
        return [_Fate(str(r), False, text, later) for r in rcpts]
    return [_error_fate(str(r), where, exc, True) for r in rcpts]


def _say_if_plaintext(client: BaseSMTPClient, where: str) -> None:
    """One line on stderr when the server offered STARTTLS and refused it, so that
    the message goes without TLS (``starttls=None``): the user should know."""
    refused = client.starttls_refused
    if refused is not None:
        text = f"{where} refused STARTTLS ({_reply_text(refused)}): sending without TLS"
        print(printable(f"smtpcore send: warning: {text}"), file=sys.stderr)


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
        **options,
    )


async def _send(args: argparse.Namespace, content: bytes, rcpts: list[Mailbox]) -> list[_Fate]:
    sender = args.sender
    if args.server is not None:
        host, port = args.server
        where = host_port(host, port)
        client = _client(args, host, port, host, exchanger=False)
        try:
            await client.connect()
        except SMTPError as exc:
            return [_error_fate(str(r), where, exc) for r in rcpts]
        _say_if_plaintext(client, where)
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
        # Each exchanger in turn, for the recipients the ones before refused for now
        # (RFC 5321 §5.1: an unreachable or busy one is no reason to give up).
        unanswered = _Fate("", False, f"{domain}: no exchanger answered", temporary=True)
        fate = {str(r): replace(unanswered, recipient=str(r)) for r in group}
        pending = group
        for attempt in attempts:
            where = f"{attempt.host}[{attempt.address}]:{attempt.port}"
            client = _client(
                args, str(attempt.address), attempt.port, attempt.host, exchanger=True
            )
            try:
                await client.connect()
            except SMTPError as exc:
                fate |= {str(r): _error_fate(str(r), where, exc, True) for r in pending}
                continue
            _say_if_plaintext(client, where)
            for result in await _submit(client, content, sender, pending, where):
                fate[result.recipient] = result
            pending = [r for r in pending if fate[str(r)].temporary]
            if not pending:
                break
        fates += [fate[str(r)] for r in group]
    return fates


def _envelope_from_headers(content: bytes) -> tuple[str | None, list[str], bytes]:
    """``From`` (or ``Sender``) and the ``To``, ``Cc`` and ``Bcc`` addresses of a message,
    as ``sendmail -t`` takes them, and the message without its ``Bcc`` field (which
    would tell every recipient who else got it)."""
    end = content.find(b"\r\n\r\n")
    if end < 0:
        end = content.find(b"\n\n")
    head = content if end < 0 else content[:end]
    header = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    senders = email.utils.getaddresses(header.get_all("Sender", []) + header.get_all("From", []))
    sender = next((address for _, address in senders if address), None)
    fields = header.get_all("To", []) + header.get_all("Cc", []) + header.get_all("Bcc", [])
    recipients = [address for _, address in email.utils.getaddresses(fields) if address]
    if header.get_all("Bcc"):
        kept: list[bytes] = []
        dropping = False
        lines = head.splitlines(keepends=True)
        for line in lines:
            if line[:1] in (b" ", b"\t") and dropping:
                continue
            dropping = line[:4].lower() == b"bcc:"
            if not dropping:
                kept.append(line)
        content = b"".join(kept) + content[len(head) :]
    return sender, recipients, content


def _read_message(args: argparse.Namespace) -> bytes | None:
    if args.message is None:
        return None
    if args.message == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(args.message).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.message}: {exc.strerror}") from None


def run_send(args: argparse.Namespace) -> int:
    """``send``: prints each recipient's fate; 0 only when every one was accepted, and a
    one-line error with status 1 (2 for a usage mistake) for anything else."""
    for option, value in (("--subject", args.subject), ("--helo", args.helo or "")):
        check_header_text(option, value)
    for value in [args.sender or "", *(args.recipients or [])]:
        check_header_text("--from/--to", value)
    content = _read_message(args)
    if content is not None and (args.sender is None or not args.recipients):
        sender, recipients, content = _envelope_from_headers(content)
        if args.sender is None:
            args.sender = sender
        if not args.recipients:
            args.recipients = recipients
    if args.sender is None:
        raise ConfigError("no sender: give --from, or a message with a From header")
    if not args.recipients:
        raise ConfigError("no recipients: give --to, or a message with To, Cc or Bcc")
    try:
        rcpts = [parse_mailbox(r) for r in args.recipients]
        if args.sender:
            parse_mailbox(args.sender)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None
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
            args.sender, args.recipients, args.subject, args.body, args.helo
        )
    if args.server is None:
        resolver = make_resolver(args.resolver)
        check_remote_delivery(resolver, None)
    try:
        fates = asyncio.run(_send(args, content, rcpts))
    except (OSError, ProtocolError, ValueError, SMTPError) as exc:
        print(printable(f"smtpcore send: {exc}"), file=sys.stderr)
        return 1
    for fate in fates:
        verdict = "accepted by" if fate.accepted else "refused by"
        if fate.local:
            verdict = "not sent to"
        print(printable(f"<{fate.recipient}>: {verdict} {fate.text}"))
    return 0 if fates and all(f.accepted for f in fates) else 1


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters, escape sequences and bidi
    controls shown as ``\\x1b`` and the like, never sent raw, as in the server's log
    lines. Every line the tools print that holds a peer's words (a reply, an
    address, a header) goes through it."""
    return loggable(text)


def _summary(number: int, size: int, head: bytes) -> str:
    """``3: 1234 octets, from <...>, "subject"``: one line per fetched message, from its
    ``size`` and ``head``, the header as far as :class:`_Head` kept it."""
    header = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    sender = printable(_header_text(header, "From") or "(no From)")
    subject = printable(_header_text(header, "Subject") or "(no Subject)")
    date = printable(_header_text(header, "Date"))
    when = f", {date}" if date else ""
    return f'{number}: {size} octets, from {sender}{when}: "{subject}"'


HEAD_LIMIT = 64 * 1024
"""Octets of a fetched message's header kept for its summary line."""


class _Head:
    """The start of a message up to the blank line that ends its header (RFC 5322
    §2.1), at most :data:`HEAD_LIMIT` octets, gathered from chunks as they come."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.complete = False

    def feed(self, chunk: bytes) -> None:
        if self.complete:
            return
        searched = max(len(self.data) - 3, 0)
        self.data += chunk[:HEAD_LIMIT]
        end = self.data.find(b"\r\n\r\n", searched)
        if self.data.startswith(b"\r\n"):
            end = 0  # no header at all
        if end >= 0 or len(self.data) >= HEAD_LIMIT:
            del self.data[end + 2 if end >= 0 else HEAD_LIMIT :]
            self.complete = True


def _header_text(header: email.message.Message, name: str) -> str:
    """A field's text as it came, RFC 2047 words decoded (what they decode to is
    escaped by :func:`printable` like the rest)."""
    raw = header.get(name)
    if raw is None:
        return ""
    text = str(raw)
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError):  # a malformed or unknown encoding
        return text


def _stls_choice(args: argparse.Namespace) -> bool | None:
    """STLS whenever the server offers it, the certificate checked, as ``send`` uses
    STARTTLS and as fetchmail does; required with ``--stls``, never with ``--no-stls``
    or over ``--tls``, where the session is TLS already."""
    if args.tls or args.no_stls:
        return False
    return True if args.stls else None


async def _fetch(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    host, port = args.server
    client = POP3Client(
        host,
        port,
        tls_on_connect=args.tls,
        stls=_stls_choice(args),
        ssl_context=client_tls_context(args.cafile, args.insecure),
    )
    target = Maildir(args.to_maildir) if args.to_maildir is not None else None
    try:
        async with client:
            await _log_in(client, args)
            listing = await client.list()
            record = None if target is None else _record_for(args, listing)
            run = _FetchRun(client, target, record, args.delete, args.all, say)
            await run.take_all(listing)
    except POP3Error as exc:
        _fetch_failed(exc)
        return 1
    say(run.summary(args.to_maildir))
    return 1 if run.refused else 0


def _record_for(args: argparse.Namespace, listing: list[MessageListing]) -> FetchRecord | None:
    """The record of what was stored from this account before, pruned to the ids the
    server lists now; None, with a warning, when the server gives no unique-ids
    (UIDL is optional, RFC 1939 §7): every message is then fetched, and the record
    is left as it is."""
    listed = [item.uid for item in listing]
    if None in listed:
        _warn(
            "the server gives no unique-ids (no UIDL, RFC 1939 §7): every message is "
            "fetched, as none can be told from one stored before"
        )
        return None
    record = FetchRecord.read_or_empty(args.to_maildir, host_port(*args.server), args.user, _warn)
    record.keep_only([uid for uid in listed if uid is not None])
    return record


@dataclass
class _FetchRun:
    """One ``fetch`` over the listing: each message stored and its unique-id recorded
    before it is deleted, so that nothing is lost whatever stops the run.

    Deletions wait for the record: a message is marked deleted (DELE) only once its
    id is on disk, which :meth:`FetchRecord.save` does for several at once (see
    :attr:`FetchRecord.due`); they take effect at QUIT alone (RFC 1939 §6)."""

    client: POP3Client
    target: Maildir | None
    record: FetchRecord | None
    delete: bool
    again: bool
    """``--all``: fetch the messages stored before too."""
    say: Callable[[str], None]
    fetched: int = 0
    octets: int = 0
    skipped: int = 0
    refused: int = 0
    _deletions_held: list[int] = field(default_factory=list)

    async def take_all(self, listing: list[MessageListing]) -> None:
        """Take each message in turn, then write what the record still lacks and send
        the deletions it held. When the run stops on an error, the record is written
        still (the messages stored are not stored again), but nothing more is deleted."""
        try:
            for item in listing:
                await self._take(item)
        except BaseException:
            self._save_after_failure()
            raise
        if self.record is not None and self.record.unsaved:
            await self._save_record(self.record)

    async def _take(self, item: MessageListing) -> None:
        if self._stored_before(item):
            self.skipped += 1
            if self.delete:
                await self.client.delete(item.number)
            return
        try:
            size, head = await _retrieve(self.client, item.number, self.target)
        except POP3ResponseError as exc:
            self._report_refused(item.number, exc)
            return
        self.fetched += 1
        self.octets += size
        self.say(_summary(item.number, size, head))
        await self._stored(item, size)

    def _stored_before(self, item: MessageListing) -> bool:
        return (
            not self.again
            and self.record is not None
            and item.uid is not None
            and item.uid in self.record
        )

    def _report_refused(self, number: int, exc: POP3ResponseError) -> None:
        """A RETR answered ``-ERR``: RFC 1939 §5 lets it fail (Dovecot and our own
        server answer it for a message whose file is gone since the listing). It is left
        on the server for the next run, and the others are still taken, as fetchmail
        does, so that QUIT commits the deletions of those stored; the exit status, 1,
        tells cron."""
        self.refused += 1
        _fetch_failed(f"message {number} not retrieved, left on the server: {exc}")

    async def _stored(self, item: MessageListing, size: int) -> None:
        """Message ``item`` is synced into the Maildir: record its id, and delete it
        once the record holding it is on disk (at once when there is no record)."""
        if self.record is None or item.uid is None:
            if self.delete:
                await self.client.delete(item.number)
            return
        self.record.add(item.uid, size)
        if self.delete:
            self._deletions_held.append(item.number)
        if self.record.due:
            await self._save_record(self.record)

    async def _save_record(self, record: FetchRecord) -> None:
        await asyncio.to_thread(record.save)
        for number in self._deletions_held:
            await self.client.delete(number)
        self._deletions_held.clear()

    def _save_after_failure(self) -> None:
        """Write the record after a failure; its own failure is only reported (the
        messages it names are then fetched again: duplicates, never a loss)."""
        if self.record is None or not self.record.unsaved:
            return
        try:
            self.record.save()
        except OSError as exc:
            _warn(f"cannot write the record of what was stored: {exc}")

    def summary(self, maildir: Path | None) -> str:
        """The last line: what was fetched, where it went, and what was not."""
        kept = f"stored in {maildir}, " if maildir is not None else ""
        deleted = "deleted from the server" if self.delete else "left on the server"
        parts = [f"{self.fetched} messages, {self.octets} octets; {kept}{deleted}"]
        if self.skipped:
            parts.append(f"{self.skipped} stored before, not fetched again (--all fetches them)")
        if self.refused:
            parts.append(f"{self.refused} the server could not give, left there")
        return printable("; ".join(parts) + ".")


async def _retrieve(client: POP3Client, number: int, target: Maildir | None) -> tuple[int, bytes]:
    """Retrieve message ``number`` into ``target`` (synced and in ``new/`` when this
    returns), or only read it without it: its size and its header. Streamed, a chunk
    at a time: memory does not grow with the message. Nothing of it stays in the
    Maildir when it fails, or runs past the size LIST gave and 10% and 64 KiB more,
    which the client refuses (``retrieve_chunks``' bound): a hostile server cannot
    fill the disk with a message it said was small."""
    staging = target.begin(b"") if target is not None else None
    head = _Head()
    size = 0
    try:
        async for chunk in client.retrieve_chunks(number):
            size += len(chunk)
            head.feed(chunk)
            if staging is not None:
                staging.write(chunk)
        if staging is not None:
            staged = await asyncio.to_thread(staging.finish)
            staging = None  # finished: a failure to commit removes the file below
            try:
                await asyncio.to_thread(staged.commit)
            except BaseException:
                staged.discard()
                raise
    finally:
        if staging is not None:
            staging.discard()
    return size, bytes(head.data)


_SASL_CLIENTS: dict[str, Callable[[str, str], ClientMechanism]] = {
    "scram-sha-256": ScramSHA256Client,
    "cram-md5": CramMD5Client,
    "plain": PlainClient,
    "login": LoginClient,
}
_IN_THE_CLEAR = {"user": "USER/PASS", "plain": "AUTH PLAIN", "login": "AUTH LOGIN"}
"""The ways of logging in that show the password itself (base64 is no cover)."""
AUTH_CHOICES = ("auto", "user", "apop", *_SASL_CLIENTS)
"""``fetch --auth``: how to log in; ``auto`` chooses as :func:`_log_in` says."""


def _auto_method(client: POP3Client) -> str:
    """Without TLS, a method that does not send the password in the clear when the
    server offers one: SCRAM-SHA-256, then APOP, then CRAM-MD5; else USER/PASS."""
    if client.tls:
        return "user"
    offered = {name.upper() for name in client.capabilities.get("SASL", ())}
    if "SCRAM-SHA-256" in offered:
        return "scram-sha-256"
    if client.connection.apop_timestamp is not None:
        return "apop"
    if "CRAM-MD5" in offered:
        return "cram-md5"
    return "user"


async def _log_in(client: POP3Client, args: argparse.Namespace) -> None:
    method = args.auth if args.auth != "auto" else _auto_method(client)
    if method in _IN_THE_CLEAR and not client.tls:
        print(
            "smtpcore fetch: warning: the password crosses the network in the clear "
            f"({_IN_THE_CLEAR[method]}); use --stls or --tls",
            file=sys.stderr,
        )
    if method in ("user", "apop"):
        await client.login(args.user, args.password, apop=method == "apop")
        return
    await client.authenticate(_SASL_CLIENTS[method](args.user, args.password))


def _fetch_failed(exc: Exception | str) -> None:
    """An error on standard error, as ``send`` reports its own: standard output is
    for the messages."""
    print(printable(f"smtpcore fetch: {exc}"), file=sys.stderr)


def _warn(text: str) -> None:
    """A warning on standard error; fetch goes on."""
    print(printable(f"smtpcore fetch: warning: {text}"), file=sys.stderr)


def run_fetch(args: argparse.Namespace, say: Callable[[str], None] = print) -> int:
    """``fetch``: a line per message; 0 when every message was retrieved, else a line
    on standard error for each failure and 1. ``--delete`` needs ``--to-maildir``: without it the
    messages are only read for their summary lines, and deleting them would throw the
    mail away (fetchmail, getmail and mpop delete only what they delivered)."""
    if args.delete and args.to_maildir is None:
        raise ConfigError(
            "--delete needs --to-maildir: the messages would be deleted from the server "
            "without being kept anywhere"
        )
    args.password = read_password(
        given=args.password, password_file=args.password_file, user=args.user
    )
    try:
        return asyncio.run(_fetch(args, say))
    except (OSError, ProtocolError, ValueError) as exc:
        _fetch_failed(exc)
        return 1
