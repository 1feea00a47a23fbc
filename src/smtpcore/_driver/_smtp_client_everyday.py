"""The SMTP client's everyday transaction: the one most messages are, written out for speed.

No PIPELINING, no RSET due before it, no BDAT, no LMTP, content of one piece:
``MAIL``, each ``RCPT`` and ``DATA`` after the reply to the one before, then
the content with its end in one write (RFC 5321 §3.3). It does what
``SMTPClientTransaction._general_transaction`` does for such a message with
fewer calls; a property test holds the two to the same results, errors and
bytes on the wire. Kept apart so that the fast path
and its twin can be read side by side, and so that nothing else grows into it.
"""

from __future__ import annotations

from collections.abc import Sequence

from smtpcore._driver._smtp_client_content import DATA, SMTPClientContent
from smtpcore._driver._smtp_errors import (
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    recipients_refusal,
)
from smtpcore._driver._transport import Link
from smtpcore.smtp import ClientConnection, Mail, Rcpt, TransactionResult

__all__ = ["SMTPClientEveryday"]


class SMTPClientEveryday(SMTPClientContent):
    """The transaction of a plain message to a server without PIPELINING."""

    _transaction_failed: bool
    _mails: int

    async def _everyday_transaction(
        self,
        conn: ClientConnection,
        transport: Link,
        mail: Mail,
        rcpts: Sequence[Rcpt],
        content: bytes,
    ) -> TransactionResult:
        """The transaction most messages are: no PIPELINING, no RSET due before it,
        no BDAT, no LMTP, and content of one piece, each command sent after the
        reply to the one before (:meth:`_ask`) and the content with its end in one
        write. What :meth:`_one_by_one` and :meth:`_general_transaction` do for
        it, written out: a property test holds the two to the same results, errors
        and bytes on the wire, for every answer a server may give at each step.
        What came unasked since the last reply is looked at by ``_ask`` before
        every command, and before MAIL, after however long the session sat idle,
        what the socket holds too (its ``first``)."""
        timeouts = self.timeouts
        self._transaction_failed = True  # until it has been delivered
        self._mails += 1
        reply = await self._ask(conn, transport, mail, timeouts.command, first=True)
        if reply.code >= 300:
            raise SenderRefused("MAIL", reply)
        accepted = False
        for rcpt in rcpts:
            reply = await self._ask(conn, transport, rcpt, timeouts.command)
            accepted = accepted or reply.code < 300
        if not accepted:  # no DATA: it could only be refused (RFC 5321 §3.3)
            refused = conn.transaction
            assert refused is not None  # a MAIL was accepted
            raise RecipientsRefused(recipients_refusal(refused, reply), refused)
        reply = await self._ask(conn, transport, DATA, timeouts.data_initiation)
        if reply.code != 354:
            raise MessageRefused("DATA", reply, conn.transaction)
        if conn._received:  # the look only where a byte is held: the everyday cost
            await self._no_reply_before_end()
        data = conn._send_whole(content)
        last = await self._exchange(
            conn, transport, data, timeouts.data_block, timeouts.data_termination
        )
        record = conn._last_transaction  # conn.transaction, without the property's call
        assert record is not None
        result = record.snapshot()
        if last.code >= 300:  # SMTP: the one reply after the content judges the message
            raise MessageRefused("end of data", last, result)
        self._transaction_failed = False
        return result
