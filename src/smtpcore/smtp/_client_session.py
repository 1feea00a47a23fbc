"""The fields of a client session, and its end.

:class:`~smtpcore.smtp.ClientConnection` is built in layers, one concern each
(see ``smtp/_client.py``); this is the lowest. It declares, once, the fields
every layer reads and writes (set by ClientConnection's constructor), takes
what the server offers (:meth:`ClientSessionLayer._offer`, kept at hand for
every command and reply) and ends a session: :meth:`ClientSessionLayer._close`,
or the ERROR state (:meth:`ClientSessionLayer._fail`).
"""

from __future__ import annotations

from collections import deque

from smtpcore._dotstuff import DotEncoder
from smtpcore._lines import ReceiveBuffer
from smtpcore.address import Mailbox
from smtpcore.smtp._client_awaited import _Awaited
from smtpcore.smtp._events import Event
from smtpcore.smtp._extensions import ServerExtensions
from smtpcore.smtp._replies import Reply, ReplyParser, known_replies
from smtpcore.smtp._state import State
from smtpcore.smtp._transaction import _Transaction


class ClientSessionLayer:
    """What every layer of a client session may read, write and call.

    The session's fields are declared here for the type checker, and set by
    :class:`~smtpcore.smtp.ClientConnection`'s constructor.
    """

    # The options, as given to the constructor.
    hostname: str
    lmtp: bool
    max_reply_line: int
    max_reply_lines: int
    normalize_line_endings: bool
    # What was received, and where the session stands.
    _buffer: ReceiveBuffer
    _received: bytearray
    _parser: ReplyParser
    _state: State
    _queue: deque[_Awaited]
    _tls: bool
    _greeting: Reply | None
    _answered: Event | None
    _answered_recipient: Mailbox | None
    _last_transaction: _Transaction | None
    # What the server offers (see _offer).
    _extensions: ServerExtensions
    _extended: bool
    _pipelining: bool
    _enhanced_status_codes: bool
    _known: dict[bytes, Reply]
    # What the commands sent so far are building.
    _transaction: _Transaction | None
    _transactions_begun: int
    _encoder: DotEncoder | None
    _content_transaction: _Transaction | None
    _bdat_due: int

    def _offer(self, extensions: ServerExtensions, *, extended: bool) -> None:
        """Take what the server offers now (after EHLO, HELO or the TLS handshake),
        keeping at hand what is asked for every command and reply."""
        self._extensions = extensions
        self._extended = extended
        self._pipelining = extensions.pipelining
        self._enhanced_status_codes = enhanced = extensions.enhanced_status_codes
        self._known = known_replies(enhanced)

    def _fail(self, *, keep_received: bool = False) -> None:
        """The ERROR state: as after a close, no reply will come for any transaction.
        ``keep_received``: a failed send keeps what :meth:`replies_left_behind` reads."""
        self._close(keep_received=keep_received)
        self._state = State.ERROR

    def _close(self, *, keep_received: bool = False) -> None:
        """The session has ended: every transaction is complete, and what is held
        unread is dropped (:meth:`_drop_received`) unless ``keep_received``."""
        self._state = State.CLOSED
        for entry in self._queue:
            if entry.transaction is not None:
                entry.transaction.complete = True
        if self._last_transaction is not None:
            self._last_transaction.complete = True
        self._encoder = None
        if not keep_received:
            self._drop_received()

    def _drop_received(self) -> None:
        """Forget the bytes received and the lines of a reply begun: none of them will
        be read as a reply (the session has ended, or they came in clear before TLS,
        RFC 3207 §4.2), and a machine kept in ERROR or CLOSED must hold no more than
        :attr:`max_buffered`."""
        self._buffer.clear()
        self._parser = ReplyParser(
            max_line_length=self.max_reply_line, max_lines=self.max_reply_lines
        )
