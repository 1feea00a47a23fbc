"""The message content of a server session: DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030).

Content is streamed: unstuffed ``MessageData`` pieces as they come, then
``EndOfMessage``, or ``RejectedMessage`` for a message read to its end and
refused (over ``max_message_size``, or against the framing policy). This layer
of :class:`~smtpcore.smtp.ServerConnection` (see ``smtp/_server.py``) reads it,
judges it, and takes the answers to its end; :meth:`ServerConnection.next_event
<smtpcore.smtp.ServerConnection.next_event>` reads the everyday message, whole
in one read, itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from smtpcore._content import ContentFilter
from smtpcore._dotstuff import DotDecoder
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._sentinels import NEED_DATA, PAUSED, NoEvent
from smtpcore.smtp._commands import reply
from smtpcore.smtp._events import (
    BadCommand,
    Bdat,
    Data,
    EndOfMessage,
    Event,
    MessageData,
    RejectedMessage,
)
from smtpcore.smtp._ext.size import OVER_SIZE_LIMIT
from smtpcore.smtp._replies import Reply
from smtpcore.smtp._server_forwarding import ForwardingLayer
from smtpcore.smtp._server_replies import _SUCCESS
from smtpcore.smtp._server_session import _STATE_CLOSED, _STATE_READY
from smtpcore.smtp._server_transaction import _TRANSACTION_STATES
from smtpcore.smtp._state import END_OF_DATA_RULE, RULES, State, replies_after_content

_CONTENT: Final = (EndOfMessage, RejectedMessage)
_END_OF_MESSAGE: Final = EndOfMessage()
_END_OF_DATA_SUCCESS: Final = END_OF_DATA_RULE.success_codes
_BDAT_RULE: Final = RULES[Bdat]
_new: Final = object.__new__
_SET_DATA: Final[Callable[[MessageData, bytes], None]] = vars(MessageData)["data"].__set__


class ContentLayer(ForwardingLayer):
    """Reading DATA content and BDAT chunks, and answering the end of a message."""

    __slots__ = ()

    # Rarely used state: class attributes until a session sets its own (SessionLayer).
    _refused_chunk: BadCommand | None = None
    """The pending refusal of a BDAT line: its answer fails the transaction (see
    :meth:`_chunk_refused`)."""

    @property
    def replies_due(self) -> int:
        """How many replies the pending ``EndOfMessage`` or ``RejectedMessage`` still
        needs: in LMTP one per accepted recipient at the end of the content (RFC 2033
        §4.2), otherwise, and for a chunk refused before the last, one; 0 when
        neither is pending."""
        return self._lmtp_replies_due if isinstance(self._pending, _CONTENT) else 0

    def _chunk_refused(self, code: int) -> None:
        """A refused BDAT line answered with ``code``. RFC 3030 §2: after a 4xx or 5xx
        to any BDAT the transaction has failed, and the server discards the chunks
        still in the pipeline. So the ``Bdat`` rule's failure move applies whoever
        refused the chunk, the machine as the application: a later BDAT is out of
        sequence (503) and its chunk skipped, never the end of a message missing the
        refused chunk's octets. Outside a transaction there is none to fail.

        Failed, the transaction leaves nothing behind: what :meth:`_answer_command`
        clears when a refusal ends one is cleared here too."""
        self._refused_chunk = None
        state = self._state
        if state in _TRANSACTION_STATES:
            self._state = _BDAT_RULE.move(code, state) or state
            if self._state is _STATE_READY:
                self._reset_transaction()

    def _next_content(self) -> Event | NoEvent:
        """Content that :meth:`next_event` does not take itself, without this call:
        the end of a message whose content was passed on, and a message whole in its
        first read that needs nothing done to it (most are both); the rest of
        DATA's content, read by a decoder built here."""
        decoder = self._decoder
        buffered = self._buffer
        if decoder is None:  # the message's first bytes, not one whole everyday message
            if not buffered:
                return self._closed_or_need_data()
            config = self._config
            decoder = self._decoder = DotDecoder(
                config.framing, max_line_length=config.max_text_line
            )
            self._content = decoder.content
        while buffered:
            data, consumed, ended = decoder.decode(buffered)
            self._buffer.consume(consumed)
            # Counted and judged to the end even once refused, so that the reply names
            # the same reason however the network cut the message.
            self._received += len(data)
            content = self._content
            limit = self._config.max_message_size
            if (limit and self._received > limit) or (
                content is not None
                and (content.bad_line_ending or content.nul or content.line_too_long)
            ):
                # Decided here, where it is read: a piece within the limit costs nothing more.
                self._past_size_limit = self._received > limit if limit else False
                self._refusal = self._content_refusal()  # which words the reply
            else:
                self._refusal = None  # what _content_refusal gives, without the call
            if data and self._refusal is None:
                self._content_ended = ended
                # The decoder's bytes: built without the constructor's check, a call less.
                event = _new(MessageData)
                _SET_DATA(event, data)
                return event
            if ended:
                return self._end_content()
            if not consumed:
                break
        if not self._buffer.peer_closed:
            return NEED_DATA  # the wait for more content: no call for it
        return self._closed_or_need_data()

    def _start_chunk(self, command: Bdat) -> None:
        if self._state is State.RCPT:  # the first chunk of the message
            self._received = 0
            self._refusal = None
            # BODY=BINARYMIME content is arbitrary octets (RFC 3030 §3): no text rules.
            config = self._config
            self._content = (
                None
                if self._binary_transaction
                else ContentFilter(config.framing, max_line_length=config.max_text_line)
            )
        self._chunk_left = command.size
        self._chunk_last = command.last
        # Counted as announced: a chunk that takes the message past the size limit is
        # refused whole, none of its octets passed on, however the network cuts it.
        received = self._received = self._received + command.size
        limit = self._config.max_message_size
        self._past_size_limit = received > limit if limit else False

    def _next_chunk_data(self) -> Event | NoEvent:
        """The octets of a BDAT chunk: never unstuffed (RFC 3030 §2), and held to the
        framing policy as DATA content is, unless BINARYMIME. Once all are read, the
        chunk is answered (``PAUSED``), or ends the message (LAST, or one past the
        size limit: :meth:`_chunk_past_the_limit`)."""
        content = self._content
        if self._chunk_left:
            data = self._buffer.take(self._chunk_left)
            if not data:
                return self._closed_or_need_data()
            self._chunk_left -= len(data)
            if content is not None:
                data = content.feed(data)
            self._refusal = self._content_refusal()
            if self._refusal is None and data:
                # Bytes of the buffer's: built without the constructor's check, a call less.
                event: MessageData = _new(MessageData)
                _SET_DATA(event, data)
                return event
            if self._chunk_left:
                return self._closed_or_need_data()
        if not self._chunk_last:
            if self._past_size_limit:
                return self._chunk_past_the_limit()
            return PAUSED  # the chunk is in: the application answers its BDAT
        if content is not None:
            tail = content.end()  # judges a CR that ended the last chunk
            self._refusal = self._content_refusal()
            self._content = None
            if tail and self._refusal is None:
                return MessageData(tail)
        else:
            # BINARYMIME: no tail to judge, but an empty message had no piece judged,
            # and a negative max_message_size refuses it too.
            self._refusal = self._content_refusal()
        self._chunk_last = False
        return self._end_content()

    def _chunk_past_the_limit(self) -> Event:
        """A chunk before the last that took the message past ``max_message_size``:
        the message is refused now, with its 552 answering this chunk, not at LAST.
        RFC 3030 §2: a 5xx to a BDAT fails the transaction and the client sends no
        more chunks; a 250 to each further chunk would let a client hold the session
        for ever, one ``BDAT 1`` at a time (Postfix answers that chunk ``552 5.3.4``).
        The transaction ends with that one reply, in LMTP too (RFC 2033 §4.2 gives
        one per recipient only at the end of the content); a BDAT after it is out of
        sequence (503), its chunk still read and skipped."""
        self._content = None
        return self._end_content(reached_end=False)

    def _content_refusal(self) -> Reply | None:
        if self._past_size_limit:
            return OVER_SIZE_LIMIT
        content = self._content
        if content is None:
            return None
        if content.bad_line_ending:
            return reply(550, "5.5.2", "Message contains bare CR or LF; use CRLF")
        if content.nul:
            return reply(550, "5.6.0", "Message contains NUL octets")
        if content.line_too_long:
            # RFC 3463 X.6.0, other media error: the content breaks RFC 5321
            # §4.5.3.1.6's text line limit (X.5.6 is for AUTH lines, RFC 4954 §6).
            return reply(500, "5.6.0", "Message line too long")
        return None

    def _end_content(self, *, reached_end: bool = True) -> Event:
        """The message's end: the content's last octet read (``reached_end``), or a
        chunk before the last refused, which ends it short (RFC 3030 §2)."""
        refusal = self._refusal
        event: Event = _END_OF_MESSAGE if refusal is None else RejectedMessage(refusal)
        self._decoder = None
        self._content = None
        self._content_ended = False
        self._lmtp_replies_due = replies_after_content(
            lmtp=self._config.lmtp, accepted=self._accepted, reached_end=reached_end
        )
        self._pending = event
        return event

    def _start_content(self, command: Data, event: Reply) -> bytes:
        # The decoder is built by the first read that does not hold the whole message
        # (see _next_content): most do.
        self._received = 0
        self._refusal = None
        for known, data in event._wire:  # Reply.to_bytes's memory, read without the call
            if known is None:  # a 354 carries no enhanced status (RFC 2034 §3)
                # Built already, these bytes cannot fail: the check comes just before them.
                if self._buffer and self._config.reject_early_content:
                    self._refuse_early_content()
                return data
        written = event.to_bytes()  # first: a reply too long changes nothing
        if self._buffer and self._config.reject_early_content:
            self._refuse_early_content()
        return written

    def _refuse_early_content(self) -> None:
        """Content already received when the 354 goes out was sent before the client
        read it: a synchronization error (RFC 2920 §3.1), and the session ends (554)."""
        self._end(State.ERROR)
        self._error = RemoteProtocolError(
            "message content arrived before the 354 reply (RFC 2920 §3.1)",
            reply_hint=reply(554, "5.5.0", "Pipelining error: data sent before 354"),
        )

    def _answer_content(self, pending: Event, event: Reply) -> bytes:
        code = event.code  # the class by its range (200-599): Reply's properties cost a call
        if code < 400:
            # RFC 5321 §4.3.2 (RFC 2033 §4.2 for LMTP): 250 alone accepts a message; a
            # client takes any other code for a failure, and would send it again.
            if code not in _END_OF_DATA_SUCCESS:
                raise LocalProtocolError("the end of a message is answered with 250, 4xx or 5xx")
            if pending is not _END_OF_MESSAGE and isinstance(pending, RejectedMessage):
                raise LocalProtocolError("a rejected message cannot be accepted")
            # A message accepted forgives what came before (Postfix resets its error
            # and junk command counts when a message is queued).
            self._errors = self._junk_commands = 0
        self._lmtp_replies_due -= 1
        if self._lmtp_replies_due <= 0:
            self._pending = None
            # next_state(END_OF_DATA_RULE, code, ...), without the call (a test holds it).
            self._state = _STATE_CLOSED if code == 421 else _STATE_READY
            # _reset_transaction's fields, set without the call.
            self._utf8_transaction = self._binary_transaction = False
            self._accepted = self._overshoot = 0
            self._forwarded_message = None
        if code >= 300:
            return self._finish(pending, event)
        # _finish's work for a success, without the call (a test holds them equal): no
        # error to count, and the reply's own status or 2.0.0, an end of message having
        # no status of its own in _STATUS_FOR.
        status = None
        if self._config.enhanced_status_codes:
            status = event.status
            if status is None:
                status = _SUCCESS
        for known, data in event._wire:  # Reply.to_bytes's memory, read without the call
            if known is status:
                return data
        return event.to_bytes(status)
