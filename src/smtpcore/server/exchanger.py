"""One delivery attempt to one exchanger: connect with the relay's TLS policy, send,
and turn each reply into a recipient's outcome.

What the exchanger says decides (RFC 5321 §4.2.1, §4.5.4.1): a 2xx delivers, a 5xx
(its own, or the client's refusal on its behalf for what it announced, such as a
SIZE overrun) fails for good, a 4xx waits, and so does a 552 to RCPT, RFC 821's
"too many recipients" (RFC 5321 §4.5.3.1.10). A 452 to RCPT for that limit goes at
once in a new transaction of the session while each transaction delivers (the
client's ``resend_too_many``: the "chunks" of §4.5.3.1.8), and waits when one
delivers to none. A failure of
the whole session (a connection refused or lost, a 4xx to MAIL, a TLS policy that
cannot be met) is a :class:`TryNext`: the next exchanger may do better, for the
recipients whose fate the session had not decided yet (those it had delivered or
refused for good are settled). So is a 5xx to EHLO and HELO (or to EHLO, then a
close), marked permanent: if every exchanger tried refuses so, the recipients fail at
once; while one of them only deferred, they wait (RFC 5321 §5.1; a 5xx greeting
waits too, as Postfix's ``smtp_skip_5xx_greeting`` has it). A session that went on
after HELO because EHLO got a 4xx lacks its extensions only for now: mail that needs
one (TLS, REQUIRETLS, SMTPUTF8, 8BITMIME or BINARYMIME) waits with that reply.
Replies are matched to recipients by the recipient they answer, never by position: a
message split into transactions (RFC 9422 LIMITS) has replies from each. The TLS
each message gets is a :class:`~smtpcore.server.relay_tls.MessageTLS` (REQUIRETLS,
``TLS-Required: No``).

This module keeps the session's sending and its reading of the replies; its parts
each have their own: opening the session (``_exchanger_connect``: TLS, REQUIRETLS,
``_lacking``), what content goes (``_exchanger_content``: 7-bit, BINARYMIME,
SMTPUTF8), the parameters that go with it (``_exchanger_params``), the outcomes
(``_exchanger_outcomes``), their recording as they come (``_exchanger_recording``) and
the replies' kept text (``_exchanger_replies``). The bound on that text,
:data:`MAX_KEPT_TEXT`, lives there with :func:`kept_text`, which reads it: setting it on
this module (as tuning it by patching ``exchanger.MAX_KEPT_TEXT`` did before the split)
changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Final

from smtpcore._driver import (
    BaseSMTPClient,
    ExtensionNotOffered,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    SMTPConnectionError,
    SMTPError,
)
from smtpcore._driver._smtp_matching import same_address
from smtpcore._driver._smtp_unanswered import end_unanswered
from smtpcore._errors import LocalProtocolError
from smtpcore.address import Mailbox, parse_mailbox
from smtpcore.routing import Attempt, RemoteDelivery
from smtpcore.server._exchanger_connect import (
    ClientFactory,
    _ExchangerConnector,
    _lacking,
    _tls_name,
    default_client,
)
from smtpcore.server._exchanger_content import _carried, _outgoing, _say_unreturnable
from smtpcore.server._exchanger_outcomes import (
    Outcome,
    TryNext,
    _OutcomeOf,
    _SessionFull,
    _too_many_recipients,
)
from smtpcore.server._exchanger_params import (
    _declared_body,
    _declared_size,
    _forwarded_mail_params,
    _passed_orcpt,
)
from smtpcore.server._exchanger_recording import (
    Recorder,
    _batch_recorder,
    _fates,
    _once,
    _own_outcome,
)
from smtpcore.server._exchanger_replies import (
    MAX_KEPT_TEXT,
    kept_text,
    reply_dsn,
    reply_text,
    transcribe,
    while_sending_end_of_data,
)
from smtpcore.server.log import loggable, logger
from smtpcore.server.queue import QueuedContent, QueueEntry, RecipientStatus
from smtpcore.server.relay_tls import MessageTLS, RelayTLS
from smtpcore.server.relaycache import (
    CachedConnectionGone,
    HopKey,
    Idle,
    ended_cleanly,
    gone_before_mail,
    verify_kept,
)
from smtpcore.smtp import (
    Reply,
    TransactionResult,
    quoted,
)

__all__ = [
    "ClientFactory",
    "ExchangerSession",
    "Outcome",
    "Recorder",
    "TryNext",
    "MAX_KEPT_TEXT",
    "default_client",
    "kept_text",
    "reply_dsn",
    "reply_text",
    "transcribe",
    "while_sending_end_of_data",
]


MAILMAX_SESSIONS: Final = 20
"""The sessions :meth:`ExchangerSession.deliver` has with one exchanger in a round when
its LIMITS MAILMAX or RCPTDOMAINMAX (RFC 9422 §4.1, §4.3) ends each before the message
is sent to all."""


class ExchangerSession(_ExchangerConnector):
    """Delivers to one exchanger at a time for the worker, as the relay is configured."""

    async def deliver(
        self,
        attempt: Attempt,
        relay: str,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        policy: MessageTLS | None = None,
        record: Recorder | None = None,
        cut_after_end: Callable[[Iterable[str]], None] | None = None,
    ) -> dict[str, Outcome]:
        """Send ``entry`` to ``deliveries`` through one exchanger, TLS as ``policy`` says
        (by default, the configured policy).

        ``cut_after_end`` is told the recipients whose end of data (the final dot, or
        BDAT LAST) had gone out with its reply not yet read when a stop cut the session
        short: the exchanger may have taken the message for them (RFC 5321 §6.1).

        ``record`` is given the outcomes (those a :class:`TryNext` settled, when the
        session fails) before QUIT, and each LIMITS transaction's as it ends: the
        exchanger has taken the message once it answered the content, and a QUIT it
        never answers, a later transaction that fails, or a stop meanwhile, must not
        leave that unrecorded (RFC 5321 §6.1: a restart would send it again).

        A session that has had the transactions or recipient domains the exchanger's
        LIMITS allow (MAILMAX, RCPTDOMAINMAX: RFC 9422 §4.1, §4.3) is followed by
        another to the same exchanger for the recipients not sent yet, up to
        :data:`MAILMAX_SESSIONS` sessions: nothing is wrong with it, and each session
        sends at least one transaction."""
        policy = policy or self.policy()
        if record is not None:
            record = _once(record)
        outcomes: dict[str, Outcome] = {}
        remaining = dict(deliveries)
        for _ in range(MAILMAX_SESSIONS):
            try:
                return outcomes | await self._session(
                    attempt, relay, entry, remaining, content, policy, record, cut_after_end
                )
            except _SessionFull as full:
                outcomes |= full.outcomes
                remaining = {a: remaining[a] for a in full.unsent}
            except TryNext as failure:
                # What the sessions before this one decided for good stands.
                done = {
                    a: o for a, o in outcomes.items() if o.status is not RecipientStatus.PENDING
                }
                failure.settled = {**done, **failure.settled}
                raise
        logger.info(
            "%s: %s took %d sessions of its LIMITS (MAILMAX, RCPTDOMAINMAX); %d recipient(s) wait",
            entry.id,
            loggable(relay),
            MAILMAX_SESSIONS,
            len(remaining),
        )
        waiting = Outcome(
            RecipientStatus.PENDING,
            "4.5.3",
            f"the exchanger takes a few transactions or domains a session (LIMITS MAILMAX, "
            f"RCPTDOMAINMAX) and "
            f"{MAILMAX_SESSIONS} sessions were had this round",
            relay,
            attempt.host,
        )
        return outcomes | dict.fromkeys(remaining, waiting)

    async def _session(
        self,
        attempt: Attempt,
        relay: str,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        policy: MessageTLS,
        record: Recorder | None,
        cut_after_end: Callable[[Iterable[str]], None] | None = None,
    ) -> dict[str, Outcome]:
        """One session of :meth:`deliver`: over a connection kept idle for this next hop
        (:mod:`smtpcore.server.relaycache`) and verified by an ``RSET``
        (:func:`verify_kept`), if there is one, else a new one. A kept connection the
        hop closed meanwhile, or that fails the ``RSET``, costs nothing: the message
        goes at once over a new one."""
        key = self._hop_key(attempt, policy)
        kept = None if self.connections is None else self.connections.take(key)
        if kept is not None:
            try:
                await verify_kept(kept.client)
                return await self._over(
                    kept, key, attempt, relay, entry, deliveries, content, policy, record,
                    cut_after_end,
                )  # fmt: skip
            except CachedConnectionGone as gone:
                logger.info(
                    "%s: the connection kept for %s was closed meanwhile (%s); connecting again",
                    entry.id,
                    loggable(relay),
                    loggable(str(gone.__cause__ or gone)),
                )
        client, lacking_for_now = await self._connect(attempt, relay, policy)
        opened = 0.0 if self.connections is None else self.connections.clock()
        connection = Idle(client, opened, 0, lacking_for_now=lacking_for_now)
        return await self._over(
            connection, key, attempt, relay, entry, deliveries, content,
            policy, record, cut_after_end,
        )  # fmt: skip

    async def _over(
        self,
        connection: Idle,
        key: HopKey,
        attempt: Attempt,
        relay: str,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        policy: MessageTLS,
        record: Recorder | None,
        cut_after_end: Callable[[Iterable[str]], None] | None = None,
    ) -> dict[str, Outcome]:
        """The message sent over ``connection``'s session, which is then kept for the
        next message to ``key`` if its transaction ended cleanly, else QUIT. Cancelled
        (a stop), it closes the connection without QUIT, whose reply tells nothing
        more: waiting for it held the stop up to
        :data:`~smtpcore.server.delivery.QUIT_TIMEOUT` seconds past its grace; and tells
        ``cut_after_end`` who the unanswered end of data was for, if one was."""
        client = connection.client
        reused = connection.last if connection.transactions else None
        polite = True
        try:
            try:
                outcomes = await self._send(
                    client, attempt, relay, entry, deliveries, content, policy, record, reused
                )
            except TryNext as failure:
                if record is not None and failure.settled:
                    await record(failure.settled)
                raise
            except _SessionFull as full:
                if record is not None:
                    await record(full.outcomes)
                raise
            if record is not None:
                await record(outcomes)
            return outcomes
        except asyncio.CancelledError:
            polite = False
            may_have_been_sent = _fates(deliveries, end_unanswered(client.connection))
            if cut_after_end is not None and may_have_been_sent:
                cut_after_end(list(may_have_been_sent))
            raise
        finally:
            # Closes the connection on every way out, or keeps it for the next message.
            if not polite:
                await client.close()
            elif not self._kept(key, connection):
                await client.quit()

    def _kept(self, key: HopKey, connection: Idle) -> bool:
        """Whether ``connection`` went into the cache for the next message to ``key``:
        only after a transaction that ended cleanly (:func:`ended_cleanly`), in a
        session that lacks nothing for now (:attr:`Idle.lacking_for_now`)."""
        if self.connections is None or connection.lacking_for_now:
            return False
        if not ended_cleanly(connection.client, connection.last):
            return False
        return self.connections.keep(key, connection)

    def _hop_key(self, attempt: Attempt, policy: MessageTLS) -> HopKey:
        """What a kept connection must have been made to, and under which TLS, to carry
        a message to ``attempt`` under ``policy``."""
        return HopKey(
            attempt.host,
            str(attempt.address),
            attempt.port,
            policy.level,
            policy.requiretls,
            _tls_name(attempt),
        )

    def _tls_field(self, client: BaseSMTPClient, policy: MessageTLS) -> str:
        """What the delivery log says of TLS: ``no``, ``yes`` (encrypted, the certificate
        not checked) or ``verified``."""
        if not client.connection.tls:
            return "no"
        return "verified" if policy.level is RelayTLS.VERIFY else "yes"

    async def _send(
        self,
        client: BaseSMTPClient,
        attempt: Attempt,
        relay: str,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        policy: MessageTLS,
        record: Recorder | None = None,
        reused: int | None = None,
    ) -> dict[str, Outcome]:
        """``reused``: the number of a kept connection's last transaction (None for a
        new one): a failure that leaves it the last found the connection closed
        (:class:`~smtpcore.server.relaycache.CachedConnectionGone`), and its record is
        the last message's, never this one's."""
        tls = self._tls_field(client, policy)
        addresses = list(deliveries)
        rcpts = [d.mailbox for d in deliveries.values()]
        # RFC 3461 §6.2: to a server that speaks DSN, the parameters go on with the message.
        passed = client.connection.extensions.dsn

        def outcome(reply: Reply, *, from_remote: bool = True, to_rcpt: bool = False) -> Outcome:
            dsn = reply_dsn(reply)
            if reply.is_positive:
                status = RecipientStatus.SENT
            elif _too_many_recipients(reply, to_rcpt=to_rcpt):
                status, dsn = RecipientStatus.PENDING, f"4{dsn[1:]}"
            elif reply.code >= 500:
                status = RecipientStatus.FAILED
            else:
                status = RecipientStatus.PENDING
            text, breaks = transcribe(reply)  # the server's own words (RFC 3464 §2.3.6)
            return Outcome(
                status,
                dsn,
                text,
                relay,
                attempt.host,
                detail_breaks=breaks,
                from_remote=from_remote,
                tls=tls,
                tls_policy=policy.label,
                dsn_passed=passed,
            )

        on_batch = None if record is None else _batch_recorder(deliveries, record, outcome)
        try:
            converted = await _carried(client, entry, content, relay)
            mail_params = (
                _forwarded_mail_params(client, entry)
                | _declared_body(entry, converted)
                | _declared_size(client, converted)
            )
            rcpt_params = self._rcpt_params(client, entry, deliveries) if passed else {}
            # A queued sender that no longer parses is refused here, as for good as any
            # other unsendable message (the worker refuses it before it comes here).
            sender: Mailbox | str = "" if not entry.sender else parse_mailbox(entry.sender)
            with await _outgoing(converted, content) as message:
                result = await client.send_message(
                    message,
                    sender,
                    rcpts,
                    mail_params=mail_params,
                    rcpt_params=lambda mailbox: rcpt_params.get(same_address(mailbox), {}),
                    on_batch=on_batch,
                    resend_too_many=True,
                )
        except LocalProtocolError as exc:
            # The client's own refusal of what it was about to send: the same message
            # is refused again on every retry, so it fails for good, alone.
            unsendable = Reply(
                554, quoted(f"the message cannot be sent on as queued: {exc}"), "5.3.0"
            )
            return dict.fromkeys(addresses, outcome(unsendable, from_remote=False))
        except SenderRefused as exc:
            if reused is not None and gone_before_mail(exc, client, reused):
                raise CachedConnectionGone from exc
            if exc.result is not None:  # per batch (LIMITS): as a refusal of recipients
                return self._refused(deliveries, exc.result, outcome(exc.reply), outcome)
            if exc.reply.code < 500:
                raise TryNext(
                    self._error_text(exc, relay), reply_dsn(exc.reply), exc.reply
                ) from exc
            return dict.fromkeys(addresses, outcome(exc.reply))
        except ExtensionNotOffered as exc:
            # What the session lacks for the message, found before MAIL by the relay
            # (_carried) or the client (a UTF-8 address): a reply on the exchanger's behalf.
            refusal = _lacking(client, relay, exc.reply)
            _say_unreturnable(entry, relay, exc)
            return dict.fromkeys(addresses, outcome(refusal, from_remote=False))
        except (RecipientsRefused, MessageRefused) as exc:
            # A local refusal (a SIZE overrun) is the client's reply on the exchanger's
            # behalf, for what it announced.
            refused = outcome(exc.reply, from_remote=not exc.local)
            if exc.result is None:
                return dict.fromkeys(addresses, refused)
            return self._refused(deliveries, exc.result, refused, outcome)
        except SMTPError as exc:
            if isinstance(exc, SMTPConnectionError) and exc.local and exc.result is not None:
                # The client's own stop at the exchanger's MAILMAX or RCPTDOMAINMAX (RFC
                # 9422 §4.1, §4.3): the recipients it did not send go in a new session to
                # the same exchanger.
                answered = self._refused(deliveries, exc.result, None, outcome)
                fates = _fates(deliveries, exc.result.recipients)
                unsent = [a for a in addresses if a not in fates or fates[a].reply is None]
                raise _SessionFull(
                    {a: o for a, o in answered.items() if a not in unsent}, unsent
                ) from exc
            if reused is not None and gone_before_mail(exc, client, reused):
                raise CachedConnectionGone from exc
            settled = self._settled(client, exc, deliveries, outcome, reused)
            reply = exc.reply
            if reply is not None and 500 <= reply.code < 600:
                # Refused for good, by the exchanger or for what it announced: bounce now.
                refused = outcome(reply, from_remote=not exc.local)
                return {address: settled.get(address, refused) for address in addresses}
            why = self._error_text(
                exc, relay, end_unanswered=bool(end_unanswered(client.connection))
            )
            raise TryNext(why, reply=reply, settled=settled, local=exc.local) from exc
        return self._refused(deliveries, result, None, outcome)

    def _rcpt_params(
        self, client: BaseSMTPClient, entry: QueueEntry, deliveries: Mapping[str, RemoteDelivery]
    ) -> dict[tuple[str, str], dict[str, str | None]]:
        """The queued DSN parameters of each recipient, by its address as
        :func:`same_address` compares it, for an exchanger that speaks DSN (RFC 3461
        §6.2)."""
        queued = {r.address: r for r in entry.recipients}
        rcpt_params: dict[tuple[str, str], dict[str, str | None]] = {}
        for address, delivery in deliveries.items():
            recipient = queued[address]
            params = rcpt_params.setdefault(same_address(delivery.mailbox), {})
            if recipient.notify is not None:
                params["NOTIFY"] = recipient.notify
            orcpt = None if recipient.orcpt is None else _passed_orcpt(client, recipient.orcpt)
            if orcpt is not None:
                params["ORCPT"] = orcpt
        return rcpt_params

    def _refused(
        self,
        deliveries: Mapping[str, RemoteDelivery],
        result: TransactionResult,
        last: Outcome | None,
        outcome: _OutcomeOf,
    ) -> dict[str, Outcome]:
        """Each recipient's outcome from its own reply in ``result`` (its RCPT's
        refusal, or the reply after the content or the refusal of the content that
        its transaction had). A recipient with no reply of its own there (a LIMITS
        batch not sent, RFC 9422 §4.2) waits: another transaction's reply, ``last``
        (the refusal raised, if any), says nothing of its fate (RFC 5321 §6.1)."""
        fates = _fates(deliveries, result.recipients)
        outcomes = {}
        for address in deliveries:
            item = fates.get(address)
            fate = None if item is None else _own_outcome(item, outcome)
            if fate is not None:
                outcomes[address] = fate
                continue
            known = "" if last is None else f" (the last refusal: {last.detail})"
            unknown = outcome(Reply(451, "no reply known", "4.0.0"), from_remote=False)
            outcomes[address] = replace(
                unknown, detail=f"no reply known for it{known}", detail_breaks=()
            )
        return outcomes

    def _settled(
        self,
        client: BaseSMTPClient,
        exc: SMTPError,
        deliveries: Mapping[str, RemoteDelivery],
        outcome: _OutcomeOf,
        reused: int | None = None,
    ) -> dict[str, Outcome]:
        """What a session that failed as a whole had decided for good, recipient by
        recipient: delivered (2xx) or refused (5xx, RFC 5321 §4.2.1). From the
        transaction record (the last transaction's RCPT replies) and what the error
        carries (each LIMITS batch's, LMTP's replies after the content). On a kept
        connection, a record still the one numbered ``reused`` is the last message's,
        not this one's: its recipients' fates say nothing of this message's."""
        record = client.connection.transaction
        if reused is not None and client.connection.transaction_number == reused:
            record = None
        fates = _fates(deliveries, record.recipients if record is not None else ())
        if exc.result is not None:
            answered = [item for item in exc.result.recipients if item.reply is not None]
            fates.update(_fates(deliveries, answered))
        settled = {}
        for address, item in fates.items():
            fate = _own_outcome(item, outcome)
            if fate is not None and fate.status is not RecipientStatus.PENDING:
                settled[address] = fate
        return settled
