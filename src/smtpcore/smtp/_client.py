"""The client side of an SMTP session, with no I/O (RFC 5321, RFC 2033 LMTP).

Send commands with :meth:`ClientConnection.send` and write the bytes it
returns; feed what the server answers to :meth:`ClientConnection.receive_data`
and take :class:`Reply` events from :meth:`ClientConnection.next_event`. The
machine keeps the commands that still wait for a reply in order, so each
reply is matched to the command it answers, whether the commands went out
one at a time or in a pipelined group (RFC 2920).

The legal moves come from the table in ``_state.py`` that the server machine
uses too: a command is checked against the state the session will be in once
every command before it has succeeded, and the state moves only on the reply
codes the server sends.

:class:`ClientConnection` is three of the four verbs (``receive_data``,
``next_event``, ``send``; ``send_failed`` is in ``_client_left_behind.py``), with
``tls_started``, its constructor and what the application reads; the rest of
the session is built in layers, one concern a module, each a base class of the
next and calling only itself and the layers below it (the type checker holds it
to that), but for one call up: the content layer's whole message goes out
through ``send``, which it declares for the type checker alone:

===========================  =================================================
``_client_left_behind.py``   ``send_failed`` and the replies read after it
``_client_replies.py``       replies read, matched and recorded
``_client_content.py``       DATA content and BDAT chunks, and their end
``_client_commands.py``      commands checked, queued and written
``_client_session.py``       the session's fields, and its end
``_client_awaited.py``       the queue's entry: an event awaiting its reply
===========================  =================================================

A method is found through the class's attribute cache wherever it is defined,
so the layers cost nothing per command or reply.
"""

from __future__ import annotations

from collections import deque

from smtpcore._dotstuff import DotEncoder
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._lines import BYTES_LIKE, ReceiveBuffer
from smtpcore._sentinels import NEED_DATA, PAUSED, NoEvent
from smtpcore.address import Mailbox
from smtpcore.smtp._client_awaited import _GREETING_RULE, _Awaited, _name
from smtpcore.smtp._client_left_behind import ClientLeftBehindLayer
from smtpcore.smtp._events import (
    AuthResponse,
    Command,
    ConnectionClosed,
    EndOfMessage,
    Event,
    MessageData,
)
from smtpcore.smtp._extensions import ServerExtensions
from smtpcore.smtp._replies import Reply, ReplyParser
from smtpcore.smtp._state import DISCARDING, State
from smtpcore.smtp._transaction import TransactionResult, _Transaction

__all__ = ["ClientConnection"]


class ClientConnection(ClientLeftBehindLayer):
    """A sans-I/O SMTP (or LMTP) client session.

    ``hostname`` is this host's own name, for ``Ehlo(conn.hostname)``. The
    first event :meth:`next_event` gives is the server's greeting. Each
    :class:`Reply` it returns answers the event in :attr:`answered`; the
    envelope and the fate of the message, recipient by recipient, are in
    :attr:`transaction`.

    Reply lines longer than ``max_reply_line`` octets (CRLF included) and
    replies of more than ``max_reply_lines`` lines are a
    :class:`RemoteProtocolError`, so a server cannot grow the client's memory
    without bound. With ``normalize_line_endings`` (the default) a bare CR or
    bare LF in the content is sent as CRLF, so that no server can read a
    message boundary the client did not mean (SMTP smuggling); turn it off
    only for content known to be in canonical CRLF form.

    ``tls=True`` says the connection is under TLS from its first byte
    (implicit TLS, RFC 8314 §3): :attr:`tls` is true from the start, so a
    mechanism that needs TLS may be chosen, and ``STARTTLS`` is refused as
    it is once :meth:`tls_started` has been called.
    """

    def __init__(
        self,
        hostname: str,
        *,
        lmtp: bool = False,
        max_reply_line: int = 4096,
        max_reply_lines: int = 100,
        normalize_line_endings: bool = True,
        tls: bool = False,
    ) -> None:
        self.hostname = hostname
        self.lmtp = lmtp
        self.max_reply_line = max_reply_line
        self.max_reply_lines = max_reply_lines
        self.normalize_line_endings = normalize_line_endings

        self._buffer = ReceiveBuffer()
        self._received = self._buffer.view()
        """The buffer's bytes (the same bytearray for its whole life), to tell at no
        cost whether anything is waiting."""
        self._parser = ReplyParser(max_line_length=max_reply_line, max_lines=max_reply_lines)
        self._state = State.GREETING
        self._queue: deque[_Awaited] = deque([_Awaited(None, _GREETING_RULE, after=State.HELLO)])
        self._offer(ServerExtensions(), extended=False)
        self._tls = tls
        self._greeting: Reply | None = None
        self._answered: Event | None = None
        self._answered_recipient: Mailbox | None = None
        self._last_transaction: _Transaction | None = None
        # What the commands sent so far are building.
        self._transaction: _Transaction | None = None
        self._transactions_begun = 0
        self._encoder: DotEncoder | None = None
        self._content_transaction: _Transaction | None = None
        self._bdat_due = 0

    # -- what the application reads -------------------------------------

    @property
    def buffered(self) -> int:
        """Octets received from the server and not yet turned into events.

        Counts the unread bytes and the lines of a multi-line reply read so
        far; once :meth:`next_event` has returned ``NEED_DATA``, at most
        :attr:`max_buffered` beyond the last piece given to
        :meth:`receive_data`. A fuzzer asserts memory stays bounded with it.
        In ERROR or CLOSED, none (after :meth:`send_failed`, only what
        :meth:`replies_left_behind` reads).
        """
        return len(self._buffer) + self._parser.held

    @property
    def max_buffered(self) -> int:
        """The bound on :attr:`buffered` now, from the limits: the lines of the
        multi-line reply under way read so far (at most ``max_reply_lines``), and
        an unfinished line, each of up to ``max_reply_line`` octets. Between
        replies that is one line: a driver reading what no command asked for
        stops there, and a fuzzer holds the machine to it."""
        held = min(len(self._parser._lines), self.max_reply_lines)
        return self.max_reply_line * (held + 1)

    @property
    def state(self) -> State:
        """Where the session stands, by the replies received so far.

        Commands sent but not answered yet have not moved it: see
        :attr:`pending`.
        """
        return self._state

    @property
    def extensions(self) -> ServerExtensions:
        """What the server offered in its last positive EHLO or LHLO reply.

        Empty before that reply, after HELO, and again after
        :meth:`tls_started` (RFC 3207 §4.2: forget what was learnt in clear).
        """
        return self._extensions

    @property
    def extended(self) -> bool:
        """Whether EHLO or LHLO was accepted, so that ESMTP parameters may be used."""
        return self._extended

    @property
    def tls(self) -> bool:
        """True after :meth:`tls_started`, or from the start given ``tls=True``."""
        return self._tls

    @property
    def greeting(self) -> Reply | None:
        """The server's greeting, once received."""
        return self._greeting

    @property
    def pending(self) -> tuple[Event, ...]:
        """The events sent that still wait for a reply, oldest first.

        Once the session has closed, what is left here was never answered.
        """
        if not self._queue:
            return ()  # the usual answer, asked before every command
        return tuple(entry.event for entry in self._queue if entry.event is not None)

    @property
    def answered(self) -> Event | None:
        """The event the reply last returned by :meth:`next_event` answers.

        A command, :class:`AuthResponse`, or :class:`EndOfMessage` for a reply
        after the content; None for the greeting and for a 421 the server sent
        on its own.
        """
        return self._answered

    @property
    def answered_recipient(self) -> Mailbox | None:
        """The recipient the last reply is about, or None.

        Set for the reply to an RCPT, and in LMTP for each reply after the
        content, which belongs to one accepted recipient (RFC 2033 §4.2).
        """
        return self._answered_recipient

    @property
    def transaction(self) -> TransactionResult | None:
        """The mail transaction the last reply belonging to one was part of.

        A snapshot, taken when this property is read. It stays on that
        transaction while replies outside any transaction (RSET, NOOP) come
        in, and moves on with the first reply to the next ``MAIL``.
        """
        if self._last_transaction is None:
            return None
        return self._last_transaction.snapshot()

    @property
    def transaction_number(self) -> int:
        """Which of the session's transactions :attr:`transaction` is: 1 for the one
        the first ``MAIL`` began, 2 for the next...; 0 while it is None. It advances
        as a ``MAIL``'s reply is read, accepted or refused (not as the ``MAIL`` is
        sent: a pipelined one's reply may be read after the last transaction's end),
        and never otherwise: ``RSET``, the rest of a transaction and its end leave
        it as it is.

        Snapshots compare by value, so two transactions with the same envelope and
        the same replies are equal: this tells a new one from the last (a relay
        reusing a connection asks whether its own ``MAIL`` was answered).
        """
        last = self._last_transaction
        return 0 if last is None else last.number

    # -- the four verbs -------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the server; ``b""`` means it closed its side.

        Bytes that arrive while the machine waits for the TLS handshake are
        plaintext that came before it, and are dropped (RFC 3207 §6).
        """
        discard = self._state in DISCARDING
        # type() costs no call; a subclass, or no bytes, is receive()'s to judge
        if type(data) in BYTES_LIKE and data and not discard and not self._buffer.peer_closed:
            self._received += data  # the buffer's own bytes (ReceiveBuffer.view)
            return
        self._buffer.receive(data, discard=discard)

    def next_event(self) -> Reply | ConnectionClosed | NoEvent:
        """The next reply from the server, or ``NEED_DATA``, or ``PAUSED``.

        ``PAUSED`` means it is the application's turn: no reply is awaited
        and no bytes are waiting (send the next command), or, after the
        reply to STARTTLS, the TLS handshake is due. Once the session has
        ended (221, 421, or the server closed), ``ConnectionClosed()``.
        """
        state = self._state
        if state in DISCARDING:  # one test for the three states no reply is read in
            if state is State.ERROR:
                raise RemoteProtocolError("the connection is in the ERROR state")
            if state is State.CLOSED:
                return ConnectionClosed()
            if self._buffer.peer_closed:  # the server left before the handshake
                self._close()
                return ConnectionClosed()
            return PAUSED  # TLS_PENDING
        received = self._received
        if received:
            try:
                reply = None
                end = received.find(b"\n", 0, self.max_reply_line)
                if end >= 0 and self._queue and not self._parser._lines:
                    # A line seen before, outside a multi-line reply: no parsing.
                    reply = self._known.get(bytes(received[: end + 1]))
                    if reply is not None:
                        self._buffer.consume(end + 1)
                        entry = self._queue[0]
                        if reply.code in entry.fused:
                            self._record_fused(entry, reply)
                            return reply
                if reply is None:
                    reply = self._read_reply()
                if reply is not None:
                    self._dispatch(reply)
                    return reply
            except RemoteProtocolError:
                self._fail()
                raise
        if self._buffer.peer_closed:
            self._close()
            return ConnectionClosed()
        if not self._queue and not self._received:
            return PAUSED
        return NEED_DATA

    def _receive_event(self, data: bytes) -> Reply | ConnectionClosed | NoEvent:
        """``receive_data(data)``, then ``next_event()``, in one call: how a driver
        takes the bytes of a read made for a reply that is due.

        Most often they are exactly one reply line read before (an everyday reply:
        see :func:`~smtpcore.smtp._replies.known_replies`) and nothing is buffered
        ahead of them; the line is then looked up as it came, without being copied
        into the buffer, searched and cut out again. Anything else takes the two
        calls. A property test holds both to the same events and state.

        The reply most often is the success the command at the head of the queue was
        sent for (MAIL, RCPT, DATA, the end of the content: the entry's ``fused``
        codes). It is recorded here as :meth:`_dispatch` records it, without that
        method's tests for the greeting, the unasked, the refused and LMTP.
        """
        if (
            not self._received
            and self._queue
            and type(data) is bytes
            and len(data) <= self.max_reply_line
            and self._state not in DISCARDING
            and not self._parser._lines
            and not self._buffer.peer_closed
        ):
            reply = self._known.get(data)
            if reply is not None:
                entry = self._queue[0]
                if reply.code in entry.fused:
                    self._record_fused(entry, reply)
                    return reply
                try:
                    self._dispatch(reply)
                except RemoteProtocolError:
                    self._fail()
                    raise
                return reply
        self.receive_data(data)
        return self.next_event()

    def send(self, event: Event) -> bytes:
        """Check ``event`` against the session, record it, and return its bytes.

        Raises :class:`LocalProtocolError`, leaving the machine unchanged,
        for anything the server would have to refuse or could misread: a
        command the shared state table does not allow once the commands
        before it have succeeded, a second command without PIPELINING, a
        parameter or address the server's extensions do not cover, 8-bit
        content without 8BITMIME, content before the 354, a command line over
        512 octets (RFC 5321 §4.5.3.1.4; MAIL and RCPT may add what the offered
        extensions' parameters take) or a hello domain over 255 (§4.5.3.1.2).

        Bytes the server sent while no reply was awaited are a reply no command
        asked for: sent now, the command would be paired with it and every
        later reply with the wrong command. Unless they may be a ``421`` (the
        server may announce its shutdown at any time, RFC 5321 §3.8; read it
        with :meth:`next_event`, which raises :class:`LocalProtocolError`
        meanwhile), that is :class:`RemoteProtocolError` and the ERROR state.
        So is a reply buffered after the 354, when :class:`MessageData` or
        :class:`EndOfMessage` is sent: it came before the end of the message,
        which only the reply after it answers (RFC 5321 §4.1.1.4).
        """
        state = self._state
        if state in DISCARDING:  # one test for the three states nothing goes out in
            if state is State.ERROR:
                raise LocalProtocolError("the connection is in the ERROR state")
            if state is State.CLOSED:
                raise LocalProtocolError("the session is closed")
            raise LocalProtocolError("finish the TLS handshake and call tls_started() first")
        if self._received and not self._queue:
            self._refuse_stale_reply()
        if isinstance(event, Command):  # the most frequent first
            return self._send_command(event)
        if isinstance(event, MessageData):
            return self._send_content(event.data)
        if isinstance(event, EndOfMessage):
            return self._send_end(event)
        if isinstance(event, AuthResponse):
            return self._send_auth_response(event)
        raise LocalProtocolError(f"a client sends commands and content, not {_name(event)}")

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS is done: say EHLO again (RFC 3207 §4.2)."""
        if self._state is not State.TLS_PENDING:
            raise LocalProtocolError("tls_started() outside the TLS_PENDING state")
        self._drop_received()
        self._tls = True
        self._offer(ServerExtensions(), extended=False)
        self._transaction = None
        self._state = State.HELLO
