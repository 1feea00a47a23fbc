"""The replies left behind in a client session once a write failed.

A layer of :class:`~smtpcore.smtp.ClientConnection` (see ``smtp/_client.py``).
After :meth:`~smtpcore.smtp.ClientConnection.send_failed` the session is over,
but what the server sent before it went may say why (a 421, a refusal): it is
read apart from the session, answering no command, under the same bounds.
"""

from __future__ import annotations

from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._lines import BYTES_LIKE, not_bytes
from smtpcore.smtp._client_replies import ClientRepliesLayer
from smtpcore.smtp._replies import Reply
from smtpcore.smtp._state import DISCARDING


class ClientLeftBehindLayer(ClientRepliesLayer):
    """:meth:`send_failed`, and the replies read after it."""

    _left_behind: bool | None = None
    """None before :meth:`send_failed`; then whether :meth:`replies_left_behind` may
    still find a reply (a class default: the everyday session never sets it)."""

    def send_failed(self) -> None:
        """The bytes of the last ``send`` never reached the server.

        The machine enters ``ERROR``: no reply can answer what did not go out.
        What the server sent before it went can still be read, apart from the
        session, with :meth:`replies_left_behind`.
        """
        if self._left_behind is None:  # a reply was being read: what is left may be one
            self._left_behind = self._state not in DISCARDING
        self._fail(keep_received=self._left_behind)

    @property
    def more_left_behind(self) -> bool:
        """Whether :meth:`replies_left_behind` may still find a reply: true from
        :meth:`send_failed` (made while replies were being read) until it meets
        something that is not a well-formed reply, or the server's close the
        machine had already been given. A driver stops reading then."""
        return self._left_behind is True

    def replies_left_behind(self, data: bytes = b"") -> list[Reply]:
        """The whole replies the server sent before it went, once :meth:`send_failed`
        has said that a write did not reach it; ``data`` is what was read since (none
        by default: only what the machine held).

        The bytes are read by the machine's own buffer and parser, after the bytes
        and the lines of a multi-line reply it held when the send failed, under
        the same ``max_reply_line`` and ``max_reply_lines``: between calls, no more
        than :attr:`max_buffered` is held. The replies are only returned: none is
        taken as the answer to a command (it may answer data that never went out)
        or recorded in :attr:`transaction`; a ``421`` among them says why the
        server closed (RFC 5321 §3.8). The reading stops quietly, for good, at the
        first line that is not part of a well-formed reply (a malformed or
        over-long line, a reply over the limits) or at the server's close already
        given to :meth:`receive_data`: the replies before it are returned, later
        calls return ``[]``, and :attr:`more_left_behind` becomes false. After a
        :meth:`send_failed` made while no reply could be read (in ``ERROR``, or
        ``TLS_PENDING``, whose bytes are dropped) it finds none.

        Raises :class:`~smtpcore.LocalProtocolError` before :meth:`send_failed`,
        when the bytes received are the session's, read with :meth:`next_event`.
        """
        if self._left_behind is None:
            raise LocalProtocolError("replies_left_behind() is for after send_failed()")
        replies: list[Reply] = []
        if not self._left_behind:
            return replies
        buffer = self._buffer
        if not isinstance(data, BYTES_LIKE):
            raise not_bytes(data)
        if data and not buffer.peer_closed:
            self._received += data  # the buffer's own bytes (ReceiveBuffer.view)
        try:
            enhanced = self._enhanced_status_codes
            while (reply := self._parser.next_reply(buffer, enhanced=enhanced)) is not None:
                replies.append(reply)
        except RemoteProtocolError:  # not a reply: nothing after it can be read as one
            self._end_left_behind()
            return replies
        if buffer.peer_closed:
            self._end_left_behind()
        return replies

    def _end_left_behind(self) -> None:
        """No more replies left behind: drop what is held of the last."""
        self._left_behind = False
        self._drop_received()
