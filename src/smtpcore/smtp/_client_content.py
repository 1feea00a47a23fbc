"""The message's content in a client session: DATA's, dot-stuffed, and BDAT's chunks.

A layer of :class:`~smtpcore.smtp.ClientConnection` (see ``smtp/_client.py``).
Content goes after the 354 to DATA (RFC 5321 §4.1.1.4), dot-stuffed and, by
default, with bare CR and LF made CRLF (no smuggled message boundary), or as
the octets a BDAT announced (RFC 3030); 8-bit content needs the extension that
allows it. The end of the content awaits one reply in SMTP, one per accepted
recipient in LMTP (RFC 2033 §4.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from smtpcore._dotstuff import DotEncoder, encode_whole
from smtpcore._errors import LocalProtocolError
from smtpcore.smtp._client_awaited import _Awaited, _awaited
from smtpcore.smtp._client_commands import ClientCommandsLayer
from smtpcore.smtp._events import EndOfMessage, Event, MessageData
from smtpcore.smtp._extensions import check_content
from smtpcore.smtp._state import END_OF_DATA_RULE, State

_END: Final = EndOfMessage()

_CONTENT_OUT_OF_PLACE: Final = (
    "message content goes after the 354 reply to DATA (or right after a BDAT)"
)


class ClientContentLayer(ClientCommandsLayer):
    """Sending the content and its end."""

    if TYPE_CHECKING:

        def send(self, event: Event) -> bytes:
            """ClientConnection's: the general path of :meth:`_send_whole`."""
            ...

    def _send_content(self, data: bytes) -> bytes:
        if self._bdat_due:
            if len(data) > self._bdat_due:
                raise LocalProtocolError(
                    f"{len(data)} octets of content, but BDAT announced only {self._bdat_due} more"
                )
            if not data.isascii():  # 8-bit: needs 8BITMIME, or BODY=BINARYMIME
                transaction = self._transaction
                binary = transaction is not None and transaction.binary
                check_content(self._extensions, data, binary=binary)
            self._bdat_due -= len(data)
            return data
        # The DATA state with nothing awaited: the 354 came, the end has not gone out.
        if self._queue or self._state is not State.DATA:
            raise LocalProtocolError(_CONTENT_OUT_OF_PLACE)
        if not data.isascii():  # DATA: never a BINARYMIME transaction
            check_content(self._extensions, data, binary=False)
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = DotEncoder(normalize=self.normalize_line_endings)
        return encoder.encode(data)

    def _send_end(self, event: EndOfMessage) -> bytes:
        if self._queue or self._state is not State.DATA:
            raise LocalProtocolError(_CONTENT_OUT_OF_PLACE)
        encoder = self._encoder
        self._encoder = None
        self._queue.append(self._awaited_end(event))
        return b".\r\n" if encoder is None else encoder.end()  # no content: a fresh encoder's

    def _send_whole(self, data: bytes) -> bytes:
        """``send(MessageData(data)) + send(EndOfMessage())`` in one call, for content
        of one piece: dot-stuffed by :func:`~smtpcore._dotstuff.encode_whole`, with
        the checks of :meth:`send` (a property test holds the two equal)."""
        if (
            type(data) is not bytes
            or self._encoder is not None
            or self._bdat_due
            or self._queue
            or self._received
            or self._state is not State.DATA
        ):
            return self.send(MessageData(data)) + self.send(_END)
        if not data.isascii():  # DATA: never a BINARYMIME transaction
            check_content(self._extensions, data, binary=False)
        self._queue.append(self._awaited_end(_END))
        return encode_whole(data, normalize=self.normalize_line_endings)

    def _awaited_end(self, event: EndOfMessage) -> _Awaited:
        """The entry for the end of the content; its success is fused (see
        :meth:`_receive_event`) in SMTP, where one reply answers for every recipient."""
        transaction = self._content_transaction
        entry = _awaited(event, END_OF_DATA_RULE, transaction, State.READY)
        if transaction is not None and not self.lmtp:
            entry.fused = END_OF_DATA_RULE.success_codes
        return entry
