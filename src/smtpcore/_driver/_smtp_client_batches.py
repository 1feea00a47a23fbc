"""A message in several transactions: the server's LIMITS batches, and recipients sent again.

A server's LIMITS (RFC 9422) may take fewer recipients a transaction
(``RCPTMAX``), transactions a session (``MAILMAX``) or recipient domains a
session (``RCPTDOMAINMAX``) than a message has: its recipients go in batches,
the content sent again for each, and those past a session's limit are left for
a new connection. Recipients refused ``452`` as too many go again in a new
transaction (RFC 5321 §4.5.3.1.8). The batches' results are merged into one, so
that each recipient has one fate. Kept apart from the single transaction,
which knows nothing of the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

from smtpcore._driver._content import Content, ReadAhead, replayable
from smtpcore._driver._smtp_client_commands import SMTPClientCommands
from smtpcore._driver._smtp_client_transaction import SMTPClientTransaction
from smtpcore._driver._smtp_errors import (
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    SMTPConnectionError,
    SMTPError,
    batches_refusal,
)
from smtpcore._driver._smtp_resend import any_too_many, to_send_again
from smtpcore._errors import LocalProtocolError
from smtpcore.smtp import Limits, Mail, Rcpt, RecipientResult, Reply, TransactionResult, Xforward

__all__ = ["SMTPClientBatches", "mailmax_reason", "start_of"]


def start_of(content: Content) -> int | None:
    """Where a file's content begins, for a transaction that may have to send it
    again (``resend_too_many``); None for bytes, and for content that cannot be
    sent again (:func:`replayable`), whose ``tell`` may fail."""
    if isinstance(content, bytes) or not replayable(content):
        return None
    start: int = content.tell()  # type: ignore[union-attr]  # replayable
    return start


def _merged(results: Sequence[TransactionResult]) -> TransactionResult:
    """The results of one message's transactions (its batches of recipients) as one."""
    return TransactionResult(
        results[0].sender,
        results[0].mail_reply,
        tuple(recipient for result in results for recipient in result.recipients),
        results[-1].data_reply,
        tuple(reply for result in results for reply in result.end_replies),
        complete=True,
    )


def mailmax_reason(mail_max: int) -> str:
    """Why a session that has had the ``MAIL`` commands its ``MAILMAX`` allows stops."""
    return f"the server takes {mail_max} transaction(s) a session (LIMITS MAILMAX)"


class SMTPClientBatches(SMTPClientTransaction, SMTPClientCommands):
    """A message's transactions, as the server's LIMITS and its ``452`` refusals make them."""

    _domains: set[str]

    async def _plan(
        self, rcpts: Sequence[Rcpt], content: Content, limits: Limits
    ) -> tuple[list[list[Rcpt]], list[Rcpt], set[str]]:
        """:meth:`_batches`, and an async iterator of content closed when they refuse it
        (one that cannot be sent twice): the caller's mistake ends the message before
        anything is sent, and its ``finally`` runs now (PEP 525)."""
        try:
            return self._batches(rcpts, content, limits)
        except ValueError:
            if type(content) is ReadAhead:
                await content.aclose()
            raise

    def _batches(
        self, rcpts: Sequence[Rcpt], content: Content, limits: Limits
    ) -> tuple[list[list[Rcpt]], list[Rcpt], set[str]]:
        """The RCPTs this session may still take, in groups the server's LIMITS allow
        in one transaction (RFC 9422 §4.2: RCPTMAX), those of recipient domains past
        its RCPTDOMAINMAX (§4.3), for a new session, and the session's recipient
        domains once the groups are sent; one group and none left when it announced
        neither. The session's own count is the caller's to update: a message
        refused here (``ValueError``) sends no RCPT, and its domains do not count."""
        recipients = [rcpt.recipient for rcpt in rcpts]
        domains = set(self._domains)
        taken, left = limits.admit(recipients, domains)
        later = [rcpts[index] for index in left]
        if left:
            rcpts = [rcpts[index] for index in taken]
            recipients = [recipients[index] for index in taken]
        groups = limits.split(recipients)
        if len(groups) == 1:
            return [list(rcpts)], later, domains
        if len(groups) > 1 and not replayable(content):
            raise ValueError(
                f"the server takes {len(groups[0])} recipients a transaction (LIMITS), "
                "so the content is sent more than once: give bytes or a seekable file"
            )
        remaining = iter(rcpts)
        return [[next(remaining) for _ in group] for group in groups], later, domains

    async def _send_again(
        self,
        mail: Mail,
        rcpts: Sequence[Rcpt],
        content: Content,
        first: TransactionResult,
        *,
        start: int | None,
        chunked: bool,
        forward: Sequence[Xforward],
        on_batch: Callable[[TransactionResult], Awaitable[None]] | None,
    ) -> TransactionResult:
        """What follows a transaction (``first``, of ``rcpts``) that had RCPTs refused
        ``452``: those the server's limit refused go in new transactions (RFC 5321
        §4.5.3.1.8), :meth:`_transactions` sending them, once ``on_batch`` has heard
        of ``first`` (a caller records what it delivered before the next begins).
        Content that cannot be sent again leaves ``first`` as it is; ``start`` is
        where a file's content began (:func:`start_of`)."""
        if not replayable(content):
            return first
        again, first = to_send_again(rcpts, first)
        if not again:  # 452s of another kind (4.2.2, a full mailbox)
            return first
        if on_batch is not None:  # the message goes in several transactions now
            await on_batch(first)
        return await self._transactions(
            mail,
            [again],
            content,
            chunked=chunked,
            forward=forward,
            on_batch=on_batch,
            resend=True,
            start=start,
            before=[first],
        )

    async def _transactions(
        self,
        mail: Mail,
        batches: Sequence[Sequence[Rcpt]],
        content: Content,
        *,
        chunked: bool,
        forward: Sequence[Xforward] = (),
        on_batch: Callable[[TransactionResult], Awaitable[None]] | None = None,
        later: Sequence[Rcpt] = (),
        resend: bool = False,
        start: int | None = None,
        before: Sequence[TransactionResult] = (),
    ) -> TransactionResult:
        """One transaction per batch of recipients, the content sent again for each
        (RFC 9422 §4.2); their results in one. A batch refused whole (its MAIL, every
        RCPT, or the content) does not stop the others, and its recipients carry the
        refusal in the result; if none is delivered, the batches' refusal is raised
        (:func:`batches_refusal`: the last, or the last temporary one), its ``result``
        every batch's, so that no recipient is judged by another batch's reply. Any
        other error part way (a session lost or timed out, a malformed reply, a
        :class:`LocalProtocolError`) carries in ``result`` the batches done
        and, unanswered, the recipients of the others, so that a retry goes to those
        only (as LMTP's lost session does); so does a session that reaches the
        server's MAILMAX (RFC 9422 §4.1) before the last batch, and one that has
        ``later`` recipients, of domains past its RCPTDOMAINMAX (§4.3), once the
        batches are done.

        With ``resend`` (for content that can be sent again), a batch's recipients
        refused as past the server's limit make a new batch at the end
        (:func:`to_send_again`, RFC 5321 §4.5.3.1.8). Only a batch whose transaction
        delivered to someone gets that far (one that delivers to none is refused
        whole), so each new batch is smaller than the one it comes of: at most one per
        recipient. ``start`` is where the content begins (read here when not given),
        ``before`` the results of the transactions already sent for this message."""
        # Content sent more than once is replayable; once (a batch, and the rest of
        # the recipients for a new session) it may be any.
        resend = resend and replayable(content)
        if start is None and (len(batches) > 1 or resend):
            start = start_of(content)
        offer = self._offer
        mail_max = None if offer is None or offer.limits is None else offer.limits.mail_max
        results: list[TransactionResult] = list(before)
        refusals: list[SenderRefused | RecipientsRefused | MessageRefused] = []
        batches = list(batches)  # grows by the batches sent again, bounded as said
        for done, batch in enumerate(batches):
            if mail_max is not None and self._mails >= mail_max:
                await self._no_more_mail(
                    mailmax_reason(mail_max), mail, [*batches[done:], later], results
                )
            if start is not None:
                content.seek(start)  # type: ignore[union-attr]  # replayable
            try:
                result = await self._transaction(
                    mail, batch, content, chunked=chunked, forward=forward
                )
                if resend and any_too_many(result):
                    again, result = to_send_again(batch, result)
                    if again:
                        batches.append(again)
                results.append(result)
            except SenderRefused as exc:  # for this batch: each of its recipients refused so
                refusals.append(exc)
                refused = tuple(
                    RecipientResult(rcpt.recipient, exc.reply, mail_refused=True) for rcpt in batch
                )
                results.append(
                    TransactionResult(mail.sender, exc.reply, refused, None, (), complete=True)
                )
            except (RecipientsRefused, MessageRefused) as exc:
                if exc.result is None:
                    raise
                refusals.append(exc)
                results.append(exc.result)
            except (SMTPError, LocalProtocolError) as exc:
                # Any other failure (a lost session, a timeout, a malformed reply, the
                # client's own refusal of content that changed since the last batch):
                # this batch's fate as far as it is known (LMTP's replies so far),
                # else unknown; the batches after it, not begun.
                known = exc.result.recipients if exc.result is not None else ()
                unanswered = [rcpt.recipient for rest in batches[done:] for rcpt in rest]
                recipients = (*known, *map(RecipientResult, unanswered[len(known) :]))
                results.append(
                    TransactionResult(mail.sender, None, recipients, None, (), complete=True)
                )
                exc.result = _merged(results)
                raise
            if on_batch is not None:  # this batch ended, delivered or refused
                await on_batch(results[-1])
        if later:
            assert offer is not None and offer.limits is not None  # later comes of them
            domain_max = offer.limits.rcpt_domain_max
            reason = (
                f"the server takes recipients of {domain_max} domain(s) a session "
                "(LIMITS RCPTDOMAINMAX)"
            )
            await self._no_more_mail(reason, mail, [later], results)
        merged = _merged(results)
        if not merged.delivered and refusals:
            refusal = batches_refusal(refusals)
            refusal.result = merged
            raise refusal
        return merged

    async def _no_more_mail(
        self,
        reason: str,
        mail: Mail,
        unsent: Sequence[Sequence[Rcpt]],
        results: Sequence[TransactionResult] = (),
    ) -> NoReturn:
        """End a session that has had what the server's LIMITS allow (MAILMAX, RFC
        9422 §4.1; RCPTDOMAINMAX, §4.3), where more would be refused or the
        connection closed: say QUIT and raise :class:`SMTPConnectionError` with the
        ``421`` a server closes with (``4.5.3``: RFC 3463 asks for the rest of the
        recipients in another attempt), ``reason`` its text. Its ``result`` holds the
        transactions done and, unanswered, the ``unsent`` recipients, to go over a
        new connection."""
        recipients = tuple(RecipientResult(rcpt.recipient) for batch in unsent for rcpt in batch)
        rest = TransactionResult(mail.sender, None, recipients, None, (), complete=True)
        reply = Reply(421, f"{reason}: the rest need a new connection", "4.5.3")
        exc = SMTPConnectionError("MAIL not sent", reply)
        exc.local = True
        exc.result = _merged([*results, rest])
        await self._quit()
        raise exc
