"""``send``: the command-line SMTP client of the reference server, and what ``fetch``
shares with it (:mod:`smtpcore.server.fetch`)."""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from smtpcore import ProtocolError
from smtpcore._driver import (
    BaseSMTPClient,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    SMTPError,
    SMTPReplyError,
)
from smtpcore._driver._smtp_envelope import (
    without_hidden_fields,
)
from smtpcore._driver._smtp_matching import match_results
from smtpcore._ip import host_port
from smtpcore.address import AddressError, Mailbox, normalize_domain, parse_mailbox
from smtpcore.asyncio import (
    AuthenticationNotAvailable,
    SMTPClient,
)
from smtpcore.routing import Attempt, Rejected, resolve_exchangers
from smtpcore.server._send_checks import (
    _check_lines,
    check_address_text,
    check_header_text,
    check_helo,
)
from smtpcore.server._send_message import (
    _envelope_form,
    _envelope_from_headers,
    _read_message,
    make_test_message,
)
from smtpcore.server._tools_printable import printable
from smtpcore.server._tools_tls import (
    client_tls_context,
    declined_certificate,
    failed_certificate_check,
    plaintext_auth_refused,
    plaintext_auth_warning,
)
from smtpcore.server.config import ConfigError, default_hostname_warning
from smtpcore.server.exchanger import reply_text
from smtpcore.server.output import OutputLost
from smtpcore.server.passwords import read_password
from smtpcore.server.resolvers import check_remote_delivery, make_resolver
from smtpcore.server.sendstatus import no_such_user, send_status
from smtpcore.smtp import RecipientResult, Reply, TransactionResult

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


def _reply_text(reply: Reply | None) -> str:
    """A server's reply as the relay's log and reports give it (each line with its
    code, RFC 3461 §9.2), or that there was none."""
    return "no reply" if reply is None else reply_text(reply)


@dataclass(frozen=True, slots=True)
class _Fate:
    recipient: str
    accepted: bool
    text: str
    temporary: bool = False
    """Refused for now (a 4xx, no answer, the connection lost before the end of the
    message): by MX lookup, the next exchanger is tried for it (RFC 5321 §5.1)."""
    local: bool = False
    """Not sent by this client's own choice (``--starttls`` and no STARTTLS offered):
    nothing was refused by the server, whatever reply the error carries."""
    unknown: bool = False
    """The end of the message went, its reply never came: the server may have taken
    it (RFC 5321 §6.1). Not ``temporary``: no other exchanger is tried, for §6.1 accepts
    a duplicate only from that unavoidable window, not from a deliberate resend."""
    no_such_user: bool = False
    """Refused for good as an unknown mailbox (``5.1.1``): what exit status 67 says."""


def _error_fate(
    recipient: str,
    where: str,
    exc: SMTPError,
    temporary: bool = False,
    *,
    checked_name: str | None = None,
) -> _Fate:
    """The fate of a recipient a client error stopped. An error the client raised on
    its own (:attr:`SMTPReplyError.local`) carries a reply the server never sent
    (``454 4.7.4``): shown as the client's refusal, without that code. So is a
    server certificate that failed this client's check (against ``checked_name``)."""
    if isinstance(exc, SMTPReplyError) and exc.local:
        reason = " ".join(exc.reply.lines)
        if isinstance(exc, AuthenticationNotAvailable) and exc.needs_tls:
            reason = plaintext_auth_refused(_SEND_PLAINTEXT_AUTH, use=_SEND_TLS_OPTIONS)
        text = f"{where}: {exc.command} not sent: this client refused to go on: {reason}"
        return _Fate(recipient, False, text, temporary, local=True)
    failure = failed_certificate_check(exc)
    if failure is not None:
        text = f"{where}: {declined_certificate(exc, failure, checked_name)}"
        return _Fate(recipient, False, text, temporary, local=True)
    return _Fate(recipient, False, f"{where}: {exc}", temporary)


def _for_now(reply: Reply | None) -> bool:
    return reply is None or 400 <= reply.code < 500


def _error_for_now(exc: SMTPError) -> bool:
    """Whether a session that ``exc`` ended before any transaction may go better later:
    anything but a refusal for good (a ``5xx`` greeting, hello or login, a login this
    client cannot make). A lost connection, a timeout, a garbled reply, a certificate
    that failed the check, a ``4xx`` may: Postfix defers each. So may a TLS the server
    does not offer, whether ``--starttls`` (``454 4.7.4``) or a login that needs it
    (``538 5.7.11``) asked for it: Postfix defers "TLS is required, but was not
    offered" either way, as a server's TLS may be mended."""
    if isinstance(exc, AuthenticationNotAvailable) and exc.needs_tls:
        return True
    return not isinstance(exc, SMTPReplyError) or _for_now(exc.reply)


def _fates(
    result: TransactionResult,
    rcpts: Sequence[Mailbox],
    where: str,
    refusal: Reply | None = None,
) -> list[_Fate]:
    """The fate of each of ``rcpts``, in their order and as the user wrote them, by its
    own reply in ``result``: its ``RCPT``'s, or once accepted, the reply after the
    content; ``refusal`` (the message's) for one accepted whose message was refused
    before any reply of its own came. Results are matched by address, never by the
    text given (``match_results``: the client names a UTF-8 domain sent without
    SMTPUTF8 in A-labels)."""
    matched = match_results(enumerate(rcpts), result.recipients)
    return [_own_fate(rcpt, matched.get(i), where, refusal) for i, rcpt in enumerate(rcpts)]


def _own_fate(
    rcpt: Mailbox, item: RecipientResult | None, where: str, refusal: Reply | None
) -> _Fate:
    """One recipient's fate by its result (``_fates``); with none, its ``RCPT`` never
    went, and it waits for another try."""
    if item is None:
        return _Fate(str(rcpt), False, f"{where}: not sent", temporary=True)
    reply = (item.delivery or refusal) if item.accepted else item.reply
    text = f"{where}: {_reply_text(reply)}"
    later = not item.delivered and _for_now(reply)
    unknown_user = not item.delivered and no_such_user(reply)
    return _Fate(str(rcpt), item.delivered, text, later, no_such_user=unknown_user)


class _Record:
    """Each recipient's fate as soon as it is known, shared by the steps of ``send``,
    by the recipient's place in the order the fates are printed; a later fate replaces
    an earlier one (the next exchanger's, after a refusal for now). Added as each
    transaction (each LIMITS batch, RFC 9422) ends, before QUIT, and on a Ctrl-C with
    what the interrupted transaction told: whenever the user stops ``send``, every fate
    known so far can be printed."""

    def __init__(self) -> None:
        self._fates: dict[int, _Fate] = {}
        self._trying: dict[int, str] = {}
        """The exchanger each recipient is being tried at now, until it has a fate there."""

    def add(self, place: int, fate: _Fate) -> None:
        self._fates[place] = fate
        self._trying.pop(place, None)

    def trying(self, places: Iterable[int], where: str) -> None:
        """``places`` are being tried at the exchanger ``where`` now."""
        for place in places:
            self._trying[place] = where

    def fates_when_interrupted(self) -> list[_Fate]:
        """:meth:`fates`, each one an earlier exchanger gave while a later one was being
        tried saying so: that refusal for now was not the last word, and the user must
        not read it as the recipient's fate (the next exchanger may have taken it)."""
        fates = []
        for place in sorted(self._fates):
            fate = self._fates[place]
            where = self._trying.get(place)
            if where is not None:
                text = f"{fate.text}; interrupted while {where} was being tried"
                fate = replace(fate, text=text)
            fates.append(fate)
        return fates

    def fate(self, place: int) -> _Fate | None:
        return self._fates.get(place)

    def fates(self) -> list[_Fate]:
        return [self._fates[place] for place in sorted(self._fates)]


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


def _outcome_fates(
    outcome: TransactionResult | Exception, rcpts: Sequence[Mailbox], where: str
) -> list[_Fate]:
    """Every recipient's fate, in the order of ``rcpts``, by what ``send_message``
    returned or raised."""
    if isinstance(outcome, TransactionResult):
        return _fates(outcome, rcpts, where)
    if isinstance(outcome, SMTPReplyError):
        return _refusal_fates(outcome, rcpts, where)
    if isinstance(outcome, SMTPError):  # no answer in time, the connection lost, MAILMAX
        if outcome.result is not None:
            return _interrupted_fates(outcome, outcome.result, rcpts, where)
        return [_error_fate(str(r), where, outcome, True) for r in rcpts]
    # what the server's extensions rule out (ProtocolError, ValueError)
    return [_Fate(str(r), False, f"{where}: cannot send: {outcome}") for r in rcpts]


def _unknown_fate(rcpt: Mailbox, where: str, why: object) -> _Fate:
    """The fate of a recipient accepted whose reply to the end of the message never
    came: it may have been delivered (RFC 5321 §6.1)."""
    text = f"{where}: no readable reply to the end of the message ({why})"
    return _Fate(str(rcpt), False, text, unknown=True)


def _cut_short_fates(
    client: BaseSMTPClient, rcpts: Mapping[int, Mailbox], where: str
) -> dict[int, _Fate]:
    """The fates known of ``rcpts`` (by place) when the user stopped ``send`` in the
    middle of a transaction: each refused at its ``RCPT`` (or answered after the
    content) in the client's transaction, and each that the end of the message, sent
    with its reply not come, may have been delivered to (the client's
    :attr:`~BaseSMTPClient.unanswered_end`, what a connection lost there reports too,
    :attr:`SMTPError.may_have_been_delivered`). The others' fates are unknown."""
    try:
        transaction = client.connection.transaction
    except SMTPError:  # the session already closed
        transaction = None
    known: dict[int, _Fate] = {}
    if transaction is not None:
        for place, item in match_results(rcpts.items(), transaction.recipients).items():
            if item.reply is not None and (not item.accepted or item.delivery is not None):
                known[place] = _own_fate(rcpts[place], item, where, None)
    for place in match_results(rcpts.items(), client.unanswered_end):
        known[place] = _unknown_fate(rcpts[place], where, "interrupted")
    return known


def _interrupted_fates(
    exc: SMTPError, result: TransactionResult, rcpts: Sequence[Mailbox], where: str
) -> list[_Fate]:
    """Every recipient's fate when the session ended part way with ``result`` so far
    (:attr:`SMTPError.result`: the connection lost or timed out, the server's MAILMAX
    reached between the transactions of a message split for RFC 9422 LIMITS). Each
    recipient with a reply is decided by it, so that one delivered in an earlier
    transaction goes to no other exchanger. One accepted whose reply to the end of
    the message never came (:attr:`SMTPError.may_have_been_delivered`) may have been
    delivered: it goes nowhere else either, as RFC 5321 §6.1 accepts a duplicate from
    that window only. The others, unanswered, have the error's fate: for now."""
    fates = [_error_fate(str(r), where, exc, True) for r in rcpts]
    for i, item in match_results(enumerate(rcpts), result.recipients).items():
        if item.accepted and item.delivery is None:
            if exc.may_have_been_delivered:
                fates[i] = _unknown_fate(rcpts[i], where, exc)
        elif item.reply is not None:
            fates[i] = _own_fate(rcpts[i], item, where, None)
    return fates


def _refusal_fates(exc: SMTPReplyError, rcpts: Sequence[Mailbox], where: str) -> list[_Fate]:
    """Every recipient's fate after a refusal. This client's own (:attr:`local`: a
    message it would not send, as ``ExtensionNotOffered`` or ``MessageTooLarge``)
    comes first, whatever its kind: its reply is none a server sent, and must not read
    as one. Then the server's: each recipient by its own reply in the transaction's
    result, where there is one (a summary such as :class:`MessageRefused`'s ``reply``
    says nothing of a recipient refused at ``RCPT``, RFC 5321 §4.2.1), else by the
    command refused."""
    later = _for_now(exc.reply)
    if exc.local:
        return [_error_fate(str(r), where, exc, later) for r in rcpts]
    refusals = (SenderRefused, RecipientsRefused, MessageRefused)
    if isinstance(exc, refusals) and exc.result is not None:
        return _fates(exc.result, rcpts, where, exc.reply)
    if isinstance(exc, refusals):
        text = f"{where}: {exc.command} refused: {_reply_text(exc.reply)}"
        unknown_user = isinstance(exc, RecipientsRefused) and no_such_user(exc.reply)
        return [_Fate(str(r), False, text, later, no_such_user=unknown_user) for r in rcpts]
    return [_error_fate(str(r), where, exc, True) for r in rcpts]


_SEND_PLAINTEXT_AUTH: Final = "AUTH PLAIN or LOGIN"
"""The mechanisms ``send`` may log in with that show the password itself: the ones
its client refuses without TLS unless ``--allow-plaintext-auth``."""
_SEND_TLS_OPTIONS: Final = "--starttls or --tls"


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
