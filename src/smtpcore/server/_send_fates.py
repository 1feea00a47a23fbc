"""Each recipient's fate in ``send``: accepted, refused for good or for now, not sent
by the client's own choice, or maybe delivered, told by a transaction's result or by
the error that ended it.

Apart from the sessions that produce the results: these are pure functions from
what the client returned or raised to what the user is told and to the exit status
(:func:`~smtpcore.server.sendstatus.send_status`), RFC 5321 §6.1's window of a lost
reply to the end of the message included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from smtpcore._driver import (
    BaseSMTPClient,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    SMTPError,
    SMTPReplyError,
)
from smtpcore._driver._smtp_matching import match_results
from smtpcore.address import Mailbox
from smtpcore.asyncio import AuthenticationNotAvailable
from smtpcore.server._tools_tls import (
    declined_certificate,
    failed_certificate_check,
    plaintext_auth_refused,
)
from smtpcore.server.exchanger import reply_text
from smtpcore.server.sendstatus import no_such_user
from smtpcore.smtp import RecipientResult, Reply, TransactionResult

__all__ = [
    "_SEND_TLS_OPTIONS",
    "_Fate",
    "_cut_short_fates",
    "_error_fate",
    "_error_for_now",
    "_outcome_fates",
    "_own_fate",
    "_reply_text",
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
