"""The SMTP client's mail transaction: MAIL, RCPT, DATA or BDAT, whatever the session calls for.

One message to one batch of recipients (RFC 5321 §3.3): an RSET first after a
failed transaction, XFORWARD, the commands in one write with PIPELINING (RFC
2920 §3.1) or one at a time without, DATA or BDAT content, LMTP's replies
after it (RFC 2033 §4.2). :meth:`SMTPClientTransaction._transaction` picks the
everyday path where it applies. Kept apart from what a message is split into
(LIMITS batches, a resend) above it, and from the content below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Final

from smtpcore._driver._content import Content
from smtpcore._driver._smtp_client_content import DATA, END
from smtpcore._driver._smtp_client_everyday import SMTPClientEveryday
from smtpcore._driver._smtp_envelope import Offer
from smtpcore._driver._smtp_errors import (
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    SMTPConnectionError,
    SMTPReplyError,
    lmtp_refusal,
    recipients_refusal,
)
from smtpcore._errors import RemoteProtocolError
from smtpcore._sentinels import NEED_DATA
from smtpcore.smtp import (
    Body,
    Command,
    Data,
    Mail,
    Rcpt,
    Reply,
    Rset,
    TransactionResult,
    Xforward,
)
from smtpcore.smtp._state import State

__all__ = ["BINARYMIME", "SMTPClientTransaction"]

BINARYMIME: Final = Body.BINARYMIME.value


class SMTPClientTransaction(SMTPClientEveryday):
    """One transaction of a message, with whatever the session and message call for."""

    _offer: Offer | None

    def _transaction(
        self,
        mail: Mail,
        rcpts: Sequence[Rcpt],
        content: Content,
        *,
        chunked: bool,
        forward: Sequence[Xforward] = (),
    ) -> Awaitable[TransactionResult]:
        """One message's transaction: :meth:`_everyday_transaction` where it applies,
        else :meth:`_general_transaction`. A plain function that picks the coroutine
        the caller awaits: a coroutine in between would be resumed with every reply."""
        conn = self._conn
        transport = self._transport
        offer = self._offer
        if (
            not (offer is not None and offer.pipelining)
            and not chunked
            and not forward
            and not self._transaction_failed
            and conn is not None
            and conn._state is State.READY
            and type(content) is bytes
            and len(content) <= self.chunk_size
            and not self.lmtp
            and transport is not None
            and (transport is self._exchanging or self._exchanges())
        ):
            return self._everyday_transaction(conn, transport, mail, rcpts, content)
        return self._general_transaction(mail, rcpts, content, chunked=chunked, forward=forward)

    async def _general_transaction(
        self,
        mail: Mail,
        rcpts: Sequence[Rcpt],
        content: Content,
        *,
        chunked: bool,
        forward: Sequence[Xforward],
    ) -> TransactionResult:
        """A transaction with whatever the session and message call for: an RSET
        after a failed one, XFORWARD, PIPELINING, BDAT, LMTP, content in pieces.

        The session may have sat idle since the last reply: what came unasked is
        looked at first, in the socket too, as ``_ask`` does for a first command."""
        conn = self._conn
        transport = self._transport
        if conn is None or transport is None:
            raise SMTPConnectionError("not connected")
        if conn._received or not transport.settled():  # _ask's first, inline: a call less
            await self._take_unasked(look=True)
        offer = self._offer
        pipelining = offer is not None and offer.pipelining
        commands: list[Rset | Mail | Rcpt | Data] = []
        if self._transaction_failed or conn._state is not State.READY:  # conn.state
            # Only after a failure: a finished transaction is closed.
            if forward:  # answered before MAIL, so that a refusal leaves no transaction open
                await self._forward([Rset(), *forward])
            else:
                commands.append(Rset())
        elif forward:
            await self._forward(forward)
        commands.append(mail)
        commands += rcpts
        if not chunked:
            commands.append(DATA)
        self._transaction_failed = True  # until it has been delivered
        self._mails += 1
        timeouts = self.timeouts
        if pipelining:
            # In one write (RFC 2920 §3.1), and a reply read for each.
            await self._write(timeouts.command, *commands)
            replies = []
            for command in commands:  # a loop: an awaiting comprehension is one coroutine more
                try:
                    event = conn.next_event()  # a reply that came with the one before
                except RemoteProtocolError as exc:
                    raise self._garbled(exc) from exc
                if type(event) is Reply and event.code != 421:
                    replies.append(event)
                    continue
                due = timeouts.data_initiation if isinstance(command, Data) else timeouts.command
                replies.append(await self._reply(due, event))
        else:
            replies = await self._one_by_one(commands, checked=not forward)
        offset = 1 if isinstance(commands[0], Rset) else 0
        mail_reply = replies[offset]
        data_reply = replies[-1] if len(replies) == len(commands) else None
        rcpt_replies = replies[offset + 1 : offset + 1 + len(rcpts)]
        accepted = any(reply.code < 300 for reply in rcpt_replies)
        refused = mail_reply.code >= 300 or not accepted
        if refused and data_reply is not None and data_reply.code == 354:
            # MAIL or every RCPT refused, yet a pipelined DATA got its 354 (RFC 2920
            # §3.1 allows it): end the empty message so the session can go on.
            await self._no_reply_before_end()
            await self._write(self.timeouts.data_block, END)
            await self._reply(self.timeouts.data_termination)
        if mail_reply.code >= 300:
            raise SenderRefused("MAIL", mail_reply)
        if not accepted:
            result = conn.transaction
            assert result is not None
            raise RecipientsRefused(
                recipients_refusal(result, result.recipients[-1].reply or mail_reply), result
            )
        if chunked:
            binary = (mail.params.get("BODY") or "").upper() == BINARYMIME
            last = await self._send_chunks(content, binary=binary)
        else:
            if data_reply is None or data_reply.code != 354:
                raise MessageRefused("DATA", data_reply or mail_reply, conn.transaction)
            if conn._received:  # the look only where a byte is held: the everyday cost
                await self._no_reply_before_end()
            if (
                type(content) is bytes
                and len(content) <= self.chunk_size
                and not self.lmtp
                and transport is not None
                and (transport is self._exchanging or self._exchanges())
            ):
                # One piece, its end, and the one reply: as _send_data and _reply do.
                data = conn._send_whole(content)
                last = await self._exchange(
                    conn, transport, data, timeouts.data_block, timeouts.data_termination
                )
            else:
                await self._send_data(content)  # looks again before its end, if streamed
                last = (
                    await self._final_replies()
                    if self.lmtp
                    else await self._reply(timeouts.data_termination)
                )
        record = conn._last_transaction  # conn.transaction, without the property's call
        assert record is not None
        result = record.snapshot()
        # In SMTP the one reply after the content decides for every accepted recipient.
        if (last.code >= 300) if not self.lmtp else not result.delivered:
            refusal = lmtp_refusal(result, last) if self.lmtp else last
            raise MessageRefused("end of data", refusal, result)
        self._transaction_failed = False
        return result

    async def _one_by_one(self, commands: Sequence[Command], *, checked: bool) -> list[Reply]:
        """Send ``commands`` one at a time, each after the reply to the one before,
        and stop where the rest would be refused: no RCPT after a refused MAIL, no
        DATA when no RCPT was accepted. The replies, in order. ``checked``: nothing
        came unasked since the caller last looked."""
        timeouts = self.timeouts
        conn = self._conn
        transport = self._transport
        assert conn is not None and transport is not None  # the caller's _take_unasked
        # A stand-in for a Link (a wrapper that shows the wire) may not have it.
        drained = getattr(transport, "drained", None)
        exchanges = transport is self._exchanging or self._exchanges()
        replies: list[Reply] = []
        accepted = False
        for command in commands:
            if isinstance(command, Data):
                if not accepted:
                    break
                timeout = timeouts.data_initiation
            else:
                timeout = timeouts.command
            if exchanges:
                reply = await self._ask(conn, transport, command, timeout)
            else:
                if not (replies and drained is not None and drained()):
                    if replies or not checked:
                        await self._take_unasked(idle=True)  # each reply before was read
                else:
                    await self._unasked_held()
                await self._write(timeout, command)
                reply = await self._reply(timeout, NEED_DATA)  # nothing held: looked
            replies.append(reply)
            if reply.code < 300:
                accepted = accepted or isinstance(command, Rcpt)
            elif isinstance(command, Mail):
                break
        return replies

    async def _forward(self, commands: Sequence[Rset | Xforward]) -> None:
        """XFORWARD (and the RSET before it), answered before ``MAIL`` goes out: a
        refusal stops the message while no transaction is open."""
        timeout = self.timeouts.command
        if self.connection.extensions.pipelining:
            await self._write(timeout, *commands)
            replies = [await self._reply(timeout) for _ in commands]
        else:
            replies = [await self._command(command, timeout) for command in commands]
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(command, Xforward) and not reply.is_positive:
                raise SMTPReplyError("XFORWARD", reply)
