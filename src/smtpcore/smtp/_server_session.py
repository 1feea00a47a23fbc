"""The fields of a server session, and the two moves every part of it makes.

:class:`~smtpcore.smtp.ServerConnection` is built in layers, one concern each
(see ``smtp/_server.py``); this is the lowest. It declares, once, the fields
every layer reads and writes (the slots that hold them are ServerConnection's,
so that a session stays as small as it was), holds the instance dict the rarely
used state lives in, and ends a session: :meth:`SessionLayer._end`, and
:meth:`SessionLayer._closed_or_need_data` where the client may have left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from smtpcore._content import ContentFilter
from smtpcore._dotstuff import DotDecoder
from smtpcore._errors import RemoteProtocolError
from smtpcore._lines import ReceiveBuffer
from smtpcore._sentinels import NEED_DATA, NoEvent
from smtpcore.smtp._events import ConnectionClosed, Event, Xforward
from smtpcore.smtp._replies import Reply
from smtpcore.smtp._server_config import ServerConfig, Verbs
from smtpcore.smtp._state import State

# States the per-command paths compare with, as globals: a member read through its
# enum class goes through the class's __getattr__ hook, several times slower.
_STATE_DATA: Final = State.DATA
_STATE_AUTH: Final = State.AUTH
_STATE_TLS_PENDING: Final = State.TLS_PENDING
_STATE_CLOSED: Final = State.CLOSED
_STATE_READY: Final = State.READY


class SessionLayer:
    """What every layer of a server session may read, write and call.

    The session's fields are declared here for the type checker, and held in
    :class:`~smtpcore.smtp.ServerConnection`'s slots: each layer above this one
    declares no slot (``__slots__ = ()``), so that it adds nothing to a session.
    The instance dict is this class's "slot": allocated only when used, it lets an
    application set an attribute of its own on a machine, or wrap one of its
    methods (as the fuzzer does), and holds the session's rarely used state once
    set (see below).
    """

    __slots__ = ("__dict__",)

    # The session, as ServerConnection._begin sets it up (see the fields' uses there).
    _config: ServerConfig
    _verbs: Verbs
    _command_line_limit: int
    _buffer: ReceiveBuffer
    _state: State
    _pending: Event | None
    _auth_mechanisms: Sequence[str]
    helo_name: str | None
    extended: bool
    authenticated: bool
    _errors: int
    _junk_commands: int
    _overshoot: int
    _forwarded_message: Xforward | None
    # The open transaction.
    _utf8_transaction: bool
    _binary_transaction: bool
    _accepted: int
    _lmtp_replies_due: int
    # The content being read.
    _decoder: DotDecoder | None
    _content: ContentFilter | None
    _received: int
    _past_size_limit: bool
    _refusal: Reply | None
    _content_ended: bool
    _chunk_left: int
    _chunk_last: bool
    _skip: int

    # Rarely used state, read from these class attributes until a session first sets
    # it (into the instance dict): most sessions never do, and hold none of it. Not
    # for state every command reads: a slot is read faster than a class attribute
    # through its instance (about 60 instructions a read on Python 3.11).
    _error: RemoteProtocolError | None = None
    """Why the session is in the ERROR state, when the machine put it there."""

    def _end(self, state: State) -> None:
        """Enter ERROR or CLOSED. No received octet is read after it (RFC 5321
        §4.1.1.10: the server reads nothing after QUIT; after a 421 or an
        unrecoverable error the session is over), and :meth:`receive_data` drops
        what comes, so what is held goes too: an ended machine holds nothing."""
        self._state = state
        self._buffer.clear()

    def _closed_or_need_data(self) -> Event | NoEvent:
        if self._buffer.peer_closed:
            self._end(State.CLOSED)  # a line the client left unfinished is never read
            return ConnectionClosed()
        return NEED_DATA
