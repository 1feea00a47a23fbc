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
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from smtpcore._dotstuff import DotEncoder, encode_whole
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._hostname import MAX_HOSTNAME
from smtpcore._lines import BYTES_LIKE, ReceiveBuffer, not_bytes
from smtpcore._sentinels import NEED_DATA, PAUSED, NoEvent
from smtpcore.address import Mailbox, format_path
from smtpcore.smtp._commands import format_command
from smtpcore.smtp._events import (
    Auth,
    AuthResponse,
    Bdat,
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Helo,
    Lhlo,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Xclient,
    Xforward,
)
from smtpcore.smtp._extensions import (
    MAX_COMMAND_LINE,
    ServerExtensions,
    check_command,
    check_content,
    command_line_limit,
)
from smtpcore.smtp._params import NO_PARAMETERS
from smtpcore.smtp._replies import Reply, ReplyParser, known_replies
from smtpcore.smtp._state import (
    DISCARDING,
    END_OF_DATA_RULE,
    RULES,
    Rule,
    State,
    next_state,
    replies_after_content,
)
from smtpcore.smtp._transaction import TransactionResult, _Transaction

__all__ = ["ClientConnection"]

# Commands after which more commands may follow in the same pipelined group
# (RFC 2920 §3.1, RFC 3030 §4.2). Every other command must be the last of its
# group, since the client has to see its reply first. Content is "the first
# command of a group", so the end of the content may be followed at once.
_GROUP_CONTINUES: Final = (Mail, Rcpt, Rset, Bdat, EndOfMessage, Xforward)

_TRANSACTION_EVENTS: Final = (Mail, Rcpt, Data, Bdat, EndOfMessage)
_SESSION_RESETS: Final = (Rset, Ehlo, Helo, Lhlo, Quit, Xclient)


_NOT_FUSED: Final[frozenset[int]] = frozenset()

_CLOSED: Final = State.CLOSED
"""Read as a global in ``_dispatch``: a member looked up on the enum costs a hook."""


@dataclass(slots=True)
class _Awaited:
    """An event that still waits for its reply (or replies, for LMTP content)."""

    event: Event | None
    """None stands for the server's greeting."""
    rule: Rule
    transaction: _Transaction | None = None
    recipient: int = -1
    """For RCPT, the recipient's index in the transaction."""
    replies_due: int = 0
    """For the end of the content in LMTP: replies still to come, once known."""
    after: State = State.READY
    """The session's state once this event and every one before it has succeeded:
    the state the next command is checked against."""
    replaced: _Transaction | None = None
    """For a command that resets the session, the transaction it ended when sent:
    open again if the server refuses the reset."""
    fused: frozenset[int] = _NOT_FUSED
    """The reply codes :meth:`ClientConnection._receive_event` records itself for
    this entry (its success, for MAIL, RCPT, DATA and the end of the content); any
    other reply goes through ``_dispatch``."""


def _awaited(event: Event, rule: Rule, transaction: _Transaction | None, after: State) -> _Awaited:
    """``_Awaited(event, rule, transaction, after=after)`` for the commands and content
    of every message: a plain call, where calling the class runs its ``__init__``
    through the interpreter's slower path for a type (a test holds the two equal)."""
    entry = _new(_Awaited)
    entry.event = event
    entry.rule = rule
    entry.transaction = transaction
    entry.recipient = -1
    entry.replies_due = 0
    entry.after = after
    entry.replaced = None
    entry.fused = _NOT_FUSED
    return entry


_new: Final = object.__new__


_END: Final = EndOfMessage()
_CONTENT_OUT_OF_PLACE: Final = (
    "message content goes after the 354 reply to DATA (or right after a BDAT)"
)
_GREETING_RULE: Final = Rule(frozenset({State.GREETING}), frozenset({220}), State.HELLO)


_PATHS: Final[dict[tuple[str, str], bytes]] = {}
"""The wire form of the paths sent so far, by local part and domain: a client
sends from the same address, and often to the same few, message after message."""
_PATHS_KEPT: Final = 256


def _wire_path(mailbox: Mailbox | None) -> bytes:
    """``<mailbox>`` (``<>`` for None) as :func:`format_command` writes it, in UTF-8."""
    if mailbox is None:
        return b"<>"
    key = (mailbox.local_part, mailbox.domain)
    path = _PATHS.get(key)
    if path is None:
        if len(_PATHS) >= _PATHS_KEPT:
            _PATHS.clear()
        path = _PATHS[key] = format_path(mailbox).encode("utf-8")
    return path


def _name(event: Event | None) -> str:
    if event is None:
        return "the greeting"
    if isinstance(event, Command):
        return event.verb
    if isinstance(event, EndOfMessage):
        return "the end of the content"
    return type(event).__name__


class ClientConnection:
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

    _left_behind: bool | None = None
    """None before :meth:`send_failed`; then whether :meth:`replies_left_behind` may
    still find a reply (a class default: the everyday session never sets it)."""

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

    def _refuse_stale_reply(self) -> None:
        """Bytes are buffered and no reply is awaited: see :meth:`send`."""
        start = bytes(self._received[:80])
        if b"421".startswith(start[:3]):
            raise LocalProtocolError("the server sent a reply: read it with next_event() first")
        refused = RemoteProtocolError(  # named in the state before
            self._out_of_turn("the server sent a reply no command asked for", repr(start))
        )
        self._fail()
        raise refused

    def _out_of_turn(self, unasked: str, shown: str) -> str:
        """Why a reply (``shown``) no command waits for is refused: ``unasked``, but after
        the 354 and before the end of the content has gone out, the one reply to come
        answers that end (RFC 5321 §3.3, §4.1.1.4): one sent earlier cannot, and read
        after the end it would pass for its answer (a message reported delivered that
        was not)."""
        if self._state is State.DATA:  # the 354 came: the content and its end are due
            return f"the server replied before the end of the message: {shown}"
        return f"{unasked}: {shown}"

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

    def _drop_received(self) -> None:
        """Forget the bytes received and the lines of a reply begun: none of them will
        be read as a reply (the session has ended, or they came in clear before TLS,
        RFC 3207 §4.2), and a machine kept in ERROR or CLOSED must hold no more than
        :attr:`max_buffered`."""
        self._buffer.clear()
        self._parser = ReplyParser(
            max_line_length=self.max_reply_line, max_lines=self.max_reply_lines
        )

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS is done: say EHLO again (RFC 3207 §4.2)."""
        if self._state is not State.TLS_PENDING:
            raise LocalProtocolError("tls_started() outside the TLS_PENDING state")
        self._drop_received()
        self._tls = True
        self._offer(ServerExtensions(), extended=False)
        self._transaction = None
        self._state = State.HELLO

    def _offer(self, extensions: ServerExtensions, *, extended: bool) -> None:
        """Take what the server offers now (after EHLO, HELO or the TLS handshake),
        keeping at hand what is asked for every command and reply."""
        self._extensions = extensions
        self._extended = extended
        self._pipelining = extensions.pipelining
        self._enhanced_status_codes = enhanced = extensions.enhanced_status_codes
        self._known = known_replies(enhanced)

    # -- sending --------------------------------------------------------

    def _send_command(self, command: Command) -> bytes:
        if self._bdat_due:
            raise LocalProtocolError(f"{self._bdat_due} octets of BDAT content are still due")
        queue = self._queue
        if queue:
            last = queue[-1]
            if not (self._pipelining and isinstance(last.event, _GROUP_CONTINUES)):
                self._check_group(command.verb)
            projected = last.after
        else:
            projected = self._state
        kind = type(command)
        rule = RULES[kind]
        if projected not in rule.allowed:
            raise LocalProtocolError(
                f"{command.verb} is not allowed in the {projected.name} state"
            )
        transaction = self._transaction
        success = rule.on_success
        entry = _awaited(
            command,
            rule,
            transaction,
            success
            if type(success) is State
            else next_state(rule, min(rule.success_codes), projected),
        )
        # The envelope of most messages, built and recorded without the general
        # checks: an ASCII address and no parameter, which no extension can refuse
        # (the general path gives the same bytes: a property test holds them equal).
        if kind is Rcpt:
            assert isinstance(command, Rcpt)
            to = command.recipient
            local, domain = to.local_part, to.domain
            if command.params is NO_PARAMETERS and local.isascii() and domain.isascii():
                assert transaction is not None  # the MAIL state implies a MAIL sent
                entry.recipient = transaction.add_recipient(to)
                entry.fused = rule.success_codes
                queue.append(entry)
                return b"RCPT TO:" + (_PATHS.get((local, domain)) or _wire_path(to)) + b"\r\n"
        elif kind is Mail:
            assert isinstance(command, Mail)
            sender = command.sender
            if command.params is NO_PARAMETERS and (
                sender is None or (sender.local_part.isascii() and sender.domain.isascii())
            ):
                entry.transaction = self._transaction = _Transaction(
                    sender, utf8=False, binary=False
                )
                entry.fused = rule.success_codes
                queue.append(entry)
                path = None if sender is None else _PATHS.get((sender.local_part, sender.domain))
                return b"MAIL FROM:" + (path or _wire_path(sender)) + b"\r\n"
        elif kind is Data and (transaction is None or not transaction.binary):
            if transaction is not None and not self.lmtp:  # LMTP's 354 is checked
                entry.fused = rule.success_codes
            queue.append(entry)
            return b"DATA\r\n"
        self._check_command(command)
        data = format_command(command)
        if len(data) > MAX_COMMAND_LINE:
            limit = command_line_limit(self._extensions, command)
            if len(data) > limit:
                raise LocalProtocolError(
                    f"{command.verb} would be a line of {len(data)} octets; a server need "
                    f"take no more than {limit} (RFC 5321 §4.5.3.1.4)"
                )
        if isinstance(command, Mail):
            params = command.params
            body = (params.get("BODY") or "").upper()
            self._transaction = _Transaction(
                command.sender, utf8="SMTPUTF8" in params, binary=body == "BINARYMIME"
            )
        elif isinstance(command, _SESSION_RESETS):
            entry.replaced = self._transaction
            self._transaction = None
        entry.transaction = self._transaction if isinstance(command, _TRANSACTION_EVENTS) else None
        if isinstance(command, Rcpt):
            assert self._transaction is not None  # the MAIL state implies a MAIL sent
            entry.recipient = self._transaction.add_recipient(command.recipient)
        elif isinstance(command, Bdat):
            self._bdat_due = command.size
            if command.last:
                entry.rule = END_OF_DATA_RULE
                entry.after = State.READY
        self._queue.append(entry)
        return data

    def _check_group(self, verb: str) -> None:
        """One command at a time, unless the server offered PIPELINING (RFC 2920 §3.1)."""
        if not self._queue:
            return
        last = self._queue[-1].event
        if last is None:
            raise LocalProtocolError("wait for the server's greeting")
        if not self._pipelining:
            raise LocalProtocolError(
                f"the server did not offer PIPELINING: wait for the reply to {_name(last)} "
                f"before sending {verb}"
            )
        if not isinstance(last, _GROUP_CONTINUES):
            raise LocalProtocolError(
                f"{_name(last)} ends a pipelined group (RFC 2920 §3.1): wait for its reply "
                f"before sending {verb}"
            )

    def _reproject(self) -> None:
        """Work out again each awaited event's state once it has succeeded, from the
        state now: after a reply that was not the success they were worked out for."""
        state = self._state
        for entry in self._queue:
            rule = entry.rule
            if entry.event is None:
                state = State.HELLO
            elif rule is END_OF_DATA_RULE or isinstance(entry.event, AuthResponse):
                state = State.READY
            elif state in rule.allowed:
                state = next_state(rule, min(rule.success_codes), state)
            entry.after = state

    def _check_command(self, command: Command) -> None:
        if isinstance(command, (Ehlo, Helo, Lhlo)):
            if isinstance(command, Lhlo) != self.lmtp:
                expected = "LHLO" if self.lmtp else "EHLO or HELO"
                raise LocalProtocolError(f"this session opens with {expected}")
            if not command.domain.isascii():
                raise LocalProtocolError("the hello domain must be ASCII (use A-labels)")
            if len(command.domain) > MAX_HOSTNAME:
                raise LocalProtocolError(
                    f"the hello domain is over {MAX_HOSTNAME} octets (RFC 5321 §4.5.3.1.2)"
                )
        elif isinstance(command, StartTls) and self._tls:
            raise LocalProtocolError("TLS is already active")
        transaction = self._transaction
        check_command(
            self._extensions,
            command,
            extended=self._extended,
            utf8=transaction is not None and transaction.utf8,
            binary=transaction is not None and transaction.binary,
        )

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

    def _send_auth_response(self, event: AuthResponse) -> bytes:
        if self._state is not State.AUTH or self._queue:
            raise LocalProtocolError("an AUTH response answers a 334 challenge")
        self._queue.append(_Awaited(event, RULES[Auth]))
        return format_command(event)

    # -- receiving ------------------------------------------------------

    def _read_reply(self) -> Reply | None:
        view = self._received
        if not self._queue and not b"421".startswith(bytes(view[:3])):
            raise RemoteProtocolError(
                self._out_of_turn("unsolicited reply", repr(bytes(view[:80])))
            )
        limit = self.max_reply_line
        if view.find(b"\n", 0, limit) < 0:
            if len(view) >= limit:
                raise RemoteProtocolError(f"reply line longer than {limit} octets")
            return None  # the line is not complete yet
        return self._parser.next_reply(self._buffer, enhanced=self._enhanced_status_codes)

    def _record_fused(self, entry: _Awaited, reply: Reply) -> None:
        """Record ``reply``, one of ``entry.fused`` (the success of MAIL, RCPT, DATA or
        the end of the content, ``entry`` at the head of the queue), as
        :meth:`_dispatch` records it, without that method's tests for the greeting,
        the unasked, the refused and LMTP: the reply most replies are. A property
        test holds the two equal."""
        queue = self._queue
        event = entry.event
        transaction = entry.transaction
        assert transaction is not None  # fused only where there is one
        if type(event) is Rcpt:
            transaction.replies[entry.recipient] = reply
            self._answered_recipient = event.recipient
        else:
            self._answered_recipient = None
            if type(event) is Mail:
                transaction.mail_reply = reply
                transaction.complete = False
            elif type(event) is Data:  # the 354
                transaction.data_reply = reply
                self._content_transaction = transaction
            else:  # after the content: SMTP's one reply for every recipient
                deliveries = transaction.deliveries
                for index, answer in enumerate(transaction.replies):
                    if answer is not None and 200 <= answer.code < 300:
                        deliveries[index] = reply
                transaction.end_replies.append(reply)
                transaction.complete = True
        queue.popleft()
        self._state = entry.rule.on_success  # type: ignore[assignment]  # a State where fused
        self._answered = event
        self._last_transaction = transaction
        if queue and self._state is not entry.after:
            self._reproject()  # not the success the commands behind it were checked for

    def _dispatch(self, reply: Reply) -> None:
        self._answered_recipient = None
        queue = self._queue
        if not queue:
            if reply.code != 421:
                raise RemoteProtocolError(self._out_of_turn("unsolicited reply", str(reply)))
            self._answered = None
            self._close()
            return
        entry = queue[0]
        event = entry.event
        if event is None:
            self._answer_greeting(reply)
            return
        code = reply.code
        rule = entry.rule
        success = rule.on_success
        if type(success) is State and code in rule.success_codes:
            moved: State | None = success  # what rule.move gives: a test holds them equal
        else:
            current = State.READY if isinstance(event, AuthResponse) else self._state
            moved = rule.move(code, current)
        if moved is None:
            raise RemoteProtocolError(f"{code} is not a reply to {_name(event)}")
        if (
            self.lmtp
            and code == 354
            and isinstance(event, Data)
            and entry.transaction is not None
            and not entry.transaction.accepted_indexes()
        ):
            raise RemoteProtocolError("354 to DATA with no accepted recipient (RFC 2033 §4.2)")
        self._answered = event
        transaction = entry.transaction
        if transaction is not None:
            self._last_transaction = transaction
        if rule is END_OF_DATA_RULE:
            self._answer_end(entry, reply, moved)
        else:
            queue.popleft()
            self._state = moved
            kind = type(event)  # an event's exact class (RULES has no subclass)
            if kind is Rcpt and transaction is not None:  # the most frequent first
                transaction.replies[entry.recipient] = reply
                self._answered_recipient = event.recipient  # type: ignore[attr-defined]  # a Rcpt
            elif kind is Mail and transaction is not None:
                transaction.mail_reply = reply
                transaction.complete = not 200 <= code < 300
            else:
                self._answer_command(entry, reply)
        if moved is _CLOSED:  # 221 to QUIT (RFC 5321 §4.1.1.10) or a 421 (§3.8)
            self._close()
        elif queue and queue[0] is not entry and self._state is not entry.after:
            self._reproject()  # not the success the commands behind it were checked for

    def _answer_greeting(self, reply: Reply) -> None:
        greeted = {220: State.HELLO, 554: State.NO_SERVICE, 421: State.CLOSED}.get(reply.code)
        if greeted is None:
            raise RemoteProtocolError(f"{reply.code} is not a greeting (RFC 5321 §4.3.1)")
        self._queue.popleft()
        self._greeting = reply
        self._answered = None
        self._state = greeted
        if greeted is State.CLOSED:
            self._close()

    def _answer_command(self, entry: _Awaited, reply: Reply) -> None:
        """A reply to a command other than ``MAIL`` and ``RCPT`` (which
        :meth:`_dispatch` records itself)."""
        command = entry.event
        transaction = entry.transaction
        positive = 200 <= reply.code < 300
        if transaction is not None and isinstance(command, (Data, Bdat)):  # once a message
            if transaction.content_refused():
                return  # a chunk pipelined behind the refused one, discarded (RFC 3030 §2)
            transaction.data_reply = reply
            if reply.code == 354:  # the content's encoder is made with its first piece
                self._content_transaction = transaction
            elif not positive:
                transaction.complete = True
                transaction.refuse_content(reply)
            return
        if isinstance(command, (Ehlo, Lhlo)) and positive:
            self._offer(ServerExtensions.from_reply(reply), extended=True)
        elif isinstance(command, Helo) and positive:
            self._offer(ServerExtensions(), extended=False)
        elif isinstance(command, StartTls) and reply.code == 220:
            # Anything behind the 220 was sent in clear before the handshake:
            # never let it pass for a reply inside TLS (response injection).
            self._buffer.clear()
        elif isinstance(command, Xclient) and reply.code == 220:
            # The session starts over for the client XCLIENT named: EHLO again, and
            # only what that reply lists may be used.
            self._offer(ServerExtensions(), extended=False)
        if isinstance(command, _SESSION_RESETS):
            if not positive and reply.code != 421 and self._transaction is None:
                # Refused: the server keeps the transaction the reset was to end.
                self._transaction = entry.replaced
            elif self._last_transaction is not None:
                self._last_transaction.complete = True

    def _answer_end(self, entry: _Awaited, reply: Reply, moved: State) -> None:
        """A reply after the content, of as many as :func:`replies_after_content` says
        (the server machine's count too): one in SMTP, one per accepted recipient in
        LMTP, one after a refused chunk; ``moved`` is the state the session goes to
        once the last one is in. The everyday reply (SMTP, content that reached its
        end) costs no call: BDAT is every message's path to a CHUNKING server."""
        transaction = entry.transaction
        assert transaction is not None
        refused = transaction.data_reply  # content_refused(), inline: once a message
        reached_end = refused is None or refused.code < 400
        # Else the reply answers a BDAT LAST whose content the server discarded (RFC
        # 3030 §2): the recipients keep the refusal of the chunk that ended the message.
        if not self.lmtp:  # one reply decides for every accepted recipient (§4.1.1.4)
            if reached_end:
                deliveries = transaction.deliveries
                for index, answer in enumerate(transaction.replies):
                    if answer is not None and 200 <= answer.code < 300:  # accepted
                        deliveries[index] = reply
            done = True
        else:
            done = self._answer_lmtp_end(entry, transaction, reply, reached_end)
        transaction.end_replies.append(reply)
        if done or reply.code == 421:
            self._queue.popleft()
            transaction.complete = True
            self._state = moved

    def _answer_lmtp_end(
        self, entry: _Awaited, transaction: _Transaction, reply: Reply, reached_end: bool
    ) -> bool:
        """One of LMTP's replies after the content, for the next accepted recipient in
        order when the content reached its end (RFC 2033 §4.2); True once the last of
        them is in."""
        accepted = transaction.accepted_indexes()
        if not entry.replies_due:
            entry.replies_due = replies_after_content(
                lmtp=True, accepted=len(accepted), reached_end=reached_end
            )
        position = len(transaction.end_replies)
        if reached_end and position < len(accepted):
            index = accepted[position]
            transaction.deliveries[index] = reply
            self._answered_recipient = transaction.recipients[index]
        entry.replies_due -= 1
        return not entry.replies_due

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
