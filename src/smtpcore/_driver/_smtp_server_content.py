"""The message of an SMTP server session: DATA and BDAT content to the handler,
and the replies that end it.

:class:`ContentDelivery` passes the content to the handler as it comes (or
keeps it in the envelope), answers each BDAT chunk (RFC 3030 §2), asks
``handle_message`` at the end (one reply, or one per recipient under LMTP, RFC
2033 §4.2), answers a message the machine refused, and keeps a message being
committed from a shutdown's 421 (:meth:`ContentDelivery.cut_off`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import NoReturn

from smtpcore._driver._connection_lost import ConnectionLost
from smtpcore._driver._failures import LOCAL_ERROR
from smtpcore._driver._logtext import loggable_reply
from smtpcore._driver._own_timeouts import DeadlinePassed
from smtpcore._driver._proxied import client_text
from smtpcore._driver._smtp_server_hooks import HANDLER
from smtpcore._driver._smtp_server_transaction import Transaction
from smtpcore._plural import counted
from smtpcore.handler import Envelope, MessageReply, _answering
from smtpcore.smtp import Bdat, Data, EndOfMessage, MessageData, RejectedMessage, Reply, State

logger = logging.getLogger("smtpcore.server")


class ContentDelivery(Transaction):
    """The content of the message under way, and its end."""

    __slots__ = ()

    _content_failure: Reply | None
    _in_chunk: bool

    async def _rejected(self, event: RejectedMessage) -> None:
        """A message the machine refused: at its end, or at a BDAT chunk that took it
        past ``max_message_size`` (RFC 3030 §2); the handler never sees it."""
        logger.info(
            "NOQUEUE: reject: %s from %s: %s",
            "BDAT" if self._in_chunk else "DATA",
            client_text(self.session),
            loggable_reply(event.reply),
        )
        self._in_chunk = False
        for _ in range(self._replies_due()):
            self._answer(event.reply)
        await self._end_transaction()

    def _data(self, command: Data, reply: Reply | None = None) -> Awaitable[None] | None:
        if reply is None:
            reply = self.state.unasked.get("handle_data")
            if reply is None:
                session = self.session
                args = (session, session.envelope)
                asked = self._asked(ContentDelivery._data, command, "handle_data", args)
                if not isinstance(asked, tuple):
                    return asked
                reply = asked[0]
        self._content_failure = None
        self._answer(reply)  # a refusal keeps the transaction open (RFC 5321 §4.1.1.4)
        return None

    def _bdat(self, command: Bdat) -> None:
        if self.conn.state is State.RCPT:  # the first chunk of the message
            self._content_failure = None
        self._in_chunk = True
        # Answered once its octets are in (see _chunk_received), or with the
        # message itself when it is the last chunk.

    async def _chunk_received(self, command: Bdat) -> None:
        """Answer a BDAT chunk that is not the last (RFC 3030 §2)."""
        self._in_chunk = False
        failure = self._content_failure
        if failure is not None:
            self._answer(failure)  # the machine abandons the transaction
            await self._end_transaction()
        else:
            self._answer(Reply(250, f"{command.size} octets received"))

    def _content(self, event: MessageData) -> Awaitable[None] | None:
        data = event.data
        envelope = self.session.envelope
        assert envelope is not None
        envelope.size += len(data)
        if self.state.appends_chunks:
            envelope.chunks.append(data)
            return None
        return self._content_to_handler(envelope, data)

    async def _content_to_handler(self, envelope: Envelope, data: bytes) -> None:
        """Pass a chunk of content to the handler's ``handle_data_chunk``."""
        if "handle_data_chunk" not in self.state.overridden:
            await HANDLER.handle_data_chunk(self.session, envelope, data)
            return
        if self._content_failure is not None:
            return
        try:
            await self.transport.within(
                self.options.timeouts.data_block,
                self.state.handler.handle_data_chunk(self.session, envelope, data),
            )
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            self._content_failure = self._hook_failed("handle_data_chunk", exc)

    def _end_of_message(self, event: EndOfMessage) -> Awaitable[None] | None:
        session = self.session
        envelope = session.envelope
        assert envelope is not None
        self._in_chunk = False
        session.transactions += 1
        failure = self._content_failure
        if failure is not None:
            return self._message_failed(failure)
        chunks = envelope.chunks
        if chunks:
            envelope.content = b"".join(chunks)
            chunks.clear()
        accepted = self.state.unasked.get("handle_message")
        if accepted is not None and not self.options.lmtp:  # the everyday message
            session.envelope = None
            self._answer(accepted)
            return None
        return self._message_answered(envelope, accepted)

    async def _message_failed(self, failure: Reply) -> None:
        """Answer the end of a message whose content the handler failed to take with
        the reply that failure earned (``_content_failure``)."""
        for _ in range(self._replies_due()):
            self._answer(failure)
        await self._end_transaction()

    async def _message_answered(self, envelope: Envelope, accepted: Reply | None) -> None:
        """Answer the end of a message as the handler's ``handle_message`` does (or
        ``accepted`` once per recipient LMTP accepted)."""
        due = self._replies_due()
        if accepted is not None:
            replies: Sequence[Reply] = [accepted] * due
        else:
            replies = await self._message_replies(envelope, due)
        committed = self.session.committing
        self.session.envelope = None  # and the commit's mark with it
        refused = 0
        for reply in replies:
            if self.conn.state is State.CLOSED:
                break  # a 421 among LMTP's replies closed the session (RFC 2033 §4.2)
            if self._answer(reply, log_refusal=not refused) is not reply:
                refused += 1  # the first logged with its traceback, the others counted
        if refused > 1:
            logger.error(
                "the handler's replies were not legal here either for %s of the message: "
                "answered %s",
                counted(refused - 1, "more recipient"),
                LOCAL_ERROR,
            )
        if committed and self.state.cutting_off:
            super().cut_off()  # put off while the message was committed: see cut_off

    def cut_off(self) -> None:
        """Interrupt the session, for its 421 (see
        :meth:`~smtpcore._driver._served_session.ServedSession.cut_off`), unless its handler
        is committing a message (:meth:`Session.begin_commit
        <smtpcore.handler.Session.begin_commit>`): a 421 to the end of the data would
        say the message was not taken, and the client would send it again. That session
        runs on and is cut off once the message's replies are due, after them; should
        it outlive the cut-off's last words, the shutdown cancels it, and it closes with
        no reply (RFC 5321 §6.1: a lost reply may cause a duplicate, a false 4xx
        causes one)."""
        if not self.session.committing:
            super().cut_off()

    async def _message_replies(self, envelope: Envelope, due: int) -> Sequence[Reply]:
        """The replies of ``handle_message``, ``due`` of them: one
        :class:`~smtpcore.smtp.Reply` stands for every recipient; a sequence gives
        one each (LMTP, RFC 2033 §4.2). Anything else is the hook's failure, as an
        exception is: logged, and the reply an exception earns
        (:meth:`_hook_failed`) for every reply due; ``451 4.3.0`` for a bad result."""
        result: MessageReply = None
        if "handle_message" in self.state.overridden:  # as _ask does, but for LMTP's lists
            _answering(envelope)  # begin_commit may be called from here
            try:
                result = await self.transport.within(
                    self.options.timeouts.data_termination,
                    self.state.handler.handle_message(self.session, envelope),
                )
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                if isinstance(exc, DeadlinePassed) and self.session.committing:
                    self._commit_timed_out()
                result = self._hook_failed("handle_message", exc)
        if result is None:  # Handler's answer, as in _ask
            result = self.state.fixed_answers.get("handle_message")
            if result is None:
                result = await HANDLER.handle_message(self.session, envelope)
                assert result is not None, "Handler.handle_message answers"
        if isinstance(result, Reply):
            return [result] * due
        if not isinstance(result, Sequence) or not all(isinstance(r, Reply) for r in result):
            logger.error("handle_message returned %r: not a Reply or a sequence of them", result)
            return [LOCAL_ERROR] * due
        replies = list(result)
        if len(replies) != due:
            logger.error("handle_message gave %d replies for %d recipients", len(replies), due)
            return [LOCAL_ERROR] * due
        return replies

    def _commit_timed_out(self) -> NoReturn:
        """End the session with no reply: its ``handle_message`` began the commit
        (:meth:`Session.begin_commit <smtpcore.handler.Session.begin_commit>`) and did
        not answer within the ``data_termination`` timeout. Its ``451`` would say the
        message was not taken, and the client would send it again, while the write
        begun may land: as past a cut-off's last words, no reply (RFC 5321 §6.1: a lost
        reply may cause a duplicate, a false 4xx causes one). The message's fate is the
        handler's to log."""
        logger.warning(
            "handle_message began its commit and did not answer within the "
            "data_termination timeout: %s closed with no reply, which may send the "
            "message again",
            client_text(self.session),
        )
        raise ConnectionLost from None

    def _replies_due(self) -> int:
        """One reply ends a message; LMTP gives one per accepted recipient (RFC 2033
        §4.2), but to a chunk refused before the last: the machine counts them."""
        return self.conn.replies_due
