"""The answers of a POP3 server session: made through the machine, kept in order,
written in big pieces.

:class:`SessionReplies` is the base of every part of
:class:`~smtpcore._driver._pop3_server_session.POP3ServerSession`: each answers
the client with :meth:`~SessionReplies._answer`, and the answers due are
written together once the commands already received are answered (RFC 2449
§6.6), by the session's loop or, where a listing or a message fills a write,
here. It also holds the slots of every part's fields, and declares those they
all read (the session's machine, options, store and maildrop).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from smtpcore._driver._connection_lost import ConnectionLost
from smtpcore._driver._served_session import ServedSession
from smtpcore._errors import LocalProtocolError
from smtpcore.maildrop import Maildrop, Mailstore, MessageInfo, POP3Session
from smtpcore.pop3 import (
    Continue,
    EndOfResponse,
    Err,
    MessageNumbers,
    Ok,
    ResponseData,
    ServerConnection,
    format_lines,
)

if TYPE_CHECKING:
    from smtpcore._driver._pop3_server import POP3ServerState
    from smtpcore._driver._pop3_server_auth import SessionAuth
    from smtpcore._driver._pop3_server_options import POP3ServerOptions

logger = logging.getLogger("smtpcore.pop3.server")

WRITE_SIZE: Final = 262144
"""Bytes of answers gathered before a write: a listing or a message goes out in
pieces this big, and many small pipelined answers in one. Read here and, through
its own import, by the streaming loops of ``_pop3_server_transaction``: a test
that changes it changes both."""

TEMP_ERROR: Final = Err("Internal error, try again later", code="SYS/TEMP")

END_OF_RESPONSE: Final = EndOfResponse()
"""The one every multi-line answer ends with: an event is immutable, and making one
is a Python call a RETR."""


class SessionReplies(ServedSession):
    """What every part of a POP3 server session shares: its fields, and the answers it
    makes and writes. It holds the slots of every part: its subclasses have none of
    their own."""

    # Every part's fields, here rather than in POP3ServerSession: mypy takes an
    # assignment to a field outside the slots of the class that assigns it for a
    # mistake, and only one base of a class may hold slots. The same layout.
    __slots__ = (
        "_closing",
        "_failures",
        "_out",
        "_out_size",
        "_sasl",
        "conn",
        "listing",
        "maildrop",
        "numbers",
        "options",
        "retrieved",
        "store",
        "surrogates_logged",
    )

    state: POP3ServerState
    session: POP3Session
    options: POP3ServerOptions
    store: Mailstore
    conn: ServerConnection | None
    """The session's machine, once the session has begun (see ``_open``)."""
    maildrop: Maildrop | None
    """The maildrop open and locked in TRANSACTION (RFC 1939 §4), else None."""
    listing: Sequence[MessageInfo]
    numbers: MessageNumbers
    retrieved: set[int]
    surrogates_logged: set[int]
    """The messages already logged as sent as their surrogate: one line each a
    session, however many RETR and TOP fetch it."""
    _sasl: SessionAuth
    _failures: int
    _out: list[bytes]
    """The answers due, written in one piece."""
    _out_size: int
    _closing: bool
    """The session ends once the answers due are written."""

    def _goodbye(self, response: Err) -> None:
        """Answer, then end the session (nothing is deleted: there was no QUIT).

        Where a response is part-written (a multi-line one under way, or a write
        cut off part-way: see :attr:`_write_cut`), the close alone ends it: a status
        line there would be read as its content (RFC 1939 §3), and mid-line at that."""
        assert self.conn is not None
        if not (self._write_cut or self.conn.in_multiline_response):
            self._out.append(response.to_bytes())
        self._closing = True

    async def _flush(self) -> None:
        if self._out:
            await self._write_out()

    async def _write_out(self) -> None:
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_size = 0
        try:
            sent = self.transport.send_nowait(data)
            if sent < len(data):
                async with self.transport.deadline(self.options.timeouts.send):
                    await self._send_all(data[sent:])
        except (OSError, TimeoutError):
            if self.conn is not None:
                self.conn.send_failed()
            raise ConnectionLost from None

    async def _emit(self, data: bytes) -> None:
        """Queue bytes for the client, writing once enough has gathered."""
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= WRITE_SIZE:
            await self._write_out()

    def _answer(self, response: Ok | Err | Continue) -> bool:
        """Send ``response`` through the machine; True if it went out as given."""
        assert self.conn is not None
        try:
            self._out.append(self.conn.send(response))
            return True
        except LocalProtocolError:
            logger.exception("the answer %r is not legal here", response)
            self._out.append(self.conn.send(TEMP_ERROR))
            return False

    def _lines(self, answer: Ok, lines: Sequence[str]) -> None:
        """Answer a command whose content the machine gives (CAPA, bare AUTH): ``answer``
        then ``lines``, one a line."""
        conn = self.conn
        assert conn is not None
        self._answer(answer)
        self._out.append(conn.send(ResponseData(format_lines(lines))))
        self._out.append(conn.send(END_OF_RESPONSE))
