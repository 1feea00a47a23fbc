"""The server side of an SMTP session, with no I/O (RFC 5321, RFC 2033 LMTP).

Feed it the client's bytes with :meth:`ServerConnection.receive_data`, take
events from :meth:`ServerConnection.next_event`, answer each command with a
:class:`Reply` through :meth:`ServerConnection.send` and write the bytes it
returns. The machine parses one command at a time and pauses until it has
been answered, so pipelined commands (RFC 2920) are answered in order.

:class:`ServerConnection` is the four verbs (``receive_data``, ``next_event``,
``send``, ``send_failed``, with ``tls_started``), its constructor and the
everyday paths of every message; the rest of the session is built in layers,
one concern a module, each a base class of the next and calling only itself
and the layers below it (the type checker holds it to that):

===========================  =================================================
``_server_answers.py``       the application's answers: legal, and applied
``_server_commands.py``      command lines read, then taken or refused
``_server_content.py``       DATA content and BDAT chunks, and their end
``_server_forwarding.py``    XCLIENT and XFORWARD
``_server_transaction.py``   MAIL, RCPT, RSET: the open transaction
``_server_hello.py``         the greeting, EHLO, the extensions in force
``_server_auth.py``          AUTH's checks and its failure count
``_server_replies.py``       enhanced status codes and the error count
``_server_options.py``       the constructor's options, read and written
``_server_session.py``       the session's fields, and its end
===========================  =================================================

Each layer declares ``__slots__ = ()``: the session's slots are
:class:`ServerConnection`'s own, and a method is found through the class's
attribute cache wherever it is defined, so the layers cost nothing per command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final

from smtpcore._content import ContentFilter
from smtpcore._dotstuff import HELD_BACK, DotDecoder, decode_whole
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._lines import BYTES_LIKE, FramingPolicy, ReceiveBuffer
from smtpcore._sentinels import NEED_DATA, PAUSED, NoEvent
from smtpcore._words import listed
from smtpcore.address import AddressPolicy
from smtpcore.smtp import _server_hello
from smtpcore.smtp._commands import (
    BARE_BY_FIRST_OCTET,
    BARE_LINES,
    everyday_command,
    match_everyday_line,
)
from smtpcore.smtp._events import (
    Bdat,
    Command,
    ConnectionClosed,
    Data,
    Event,
    Mail,
    MessageData,
    Noop,
    Rcpt,
    Rset,
    Xforward,
)
from smtpcore.smtp._ext.size import checked_message_size
from smtpcore.smtp._extension import Extension
from smtpcore.smtp._replies import MAX_REPLY_LINE, EnhancedStatus, Reply
from smtpcore.smtp._server_answers import AnswersLayer
from smtpcore.smtp._server_commands import JUNK_COMMANDS as JUNK_COMMANDS  # re-exported
from smtpcore.smtp._server_config import STRICT, ServerConfig, session_tables
from smtpcore.smtp._server_content import _END_OF_MESSAGE, _SET_DATA, _new
from smtpcore.smtp._server_options import _address_policy, _checked_mechanisms, _wire_hostname
from smtpcore.smtp._server_replies import _DEFAULT_STATUS, _STATUS_FOR
from smtpcore.smtp._server_session import (
    _STATE_AUTH,
    _STATE_CLOSED,
    _STATE_DATA,
    _STATE_TLS_PENDING,
)
from smtpcore.smtp._state import DISCARDING, RULES, State

__all__ = ["ServerConnection"]


_READING_COMMANDS: Final = frozenset(
    {State.NO_SERVICE, State.HELLO, State.READY, State.MAIL, State.RCPT, State.BDAT, State.AUTH}
)
"""States in which, with no command pending, the next line is a command (or an AUTH line)."""
_ENDED: Final = frozenset({State.CLOSED, State.ERROR})
"""States after which nothing received is read: the machine holds none of it."""


class ServerConnection(AnswersLayer):
    """A sans-I/O SMTP (or LMTP) server session.

    ``hostname`` is this host's own name, used where the machine writes a
    reply itself: one word of at most 255 octets, no white space or control
    character in it (``ValueError`` otherwise; an underscore or an address is
    taken). A non-ASCII name is taken in its A-label form (``xn--``, RFC 5890),
    as ``serve`` takes its ``--hostname``: what the machine writes before
    SMTPUTF8 is agreed is ASCII. Every limit and extension is a keyword argument with a
    safe default; the ``EHLO`` reply lists the extensions switched on.
    ``auth_mechanisms`` are SASL names (RFC 4422 §3.1: 1 to 20 of A-Z, 0-9, ``-``
    and ``_``) that fit on one EHLO line of 512 octets; ``ValueError`` otherwise
    (``TypeError`` for one ``str``, ``"PLAIN"`` for ``["PLAIN"]``; so for
    ``extra_extensions``).

    Each extension is one entry (``smtp/_ext/``) whose ``option`` is the keyword
    here that turns it on. ``extra_extensions`` adds entries of the
    application's own, or EHLO lines (``"HELP"``) that bring no parameters
    or commands. Whatever the machine would list and then refuse is a
    ``ValueError``: a built-in extension (use its option instead), a line
    that is not ``keyword *(SP param)`` (``"AUTH=PLAIN"`` reads as AUTH), a
    parameter another entry brings, or a command (the machine has no event
    for one it does not know).
    """

    # Slots: a server holds one of these per connection, mostly idle. What is the same
    # for every connection of a server (options, the tables commands are read with)
    # is one shared ServerConfig (_config); the slots hold the session. The instance
    # dict, allocated only when used, is SessionLayer's (see there).
    __slots__ = (
        "_accepted",
        "_auth_mechanisms",
        "_binary_transaction",
        "_buffer",
        "_chunk_last",
        "_chunk_left",
        "_command_line_limit",
        "_config",
        "_content",
        "_content_ended",
        "_decoder",
        "_errors",
        "_forwarded_message",
        "_junk_commands",
        "_lmtp_replies_due",
        "_overshoot",
        "_past_size_limit",
        "_pending",
        "_received",
        "_refusal",
        "_skip",
        "_state",
        "_utf8_transaction",
        "_verbs",
        "authenticated",
        "extended",
        "helo_name",
        "tls",
        "trusted_forwarder",
    )

    def __init__(
        self,
        hostname: str,
        *,
        lmtp: bool = False,
        max_command_line: int = 512,
        max_text_line: int | None = 1000,
        max_recipients: int = 100,
        max_message_size: int | None = 10_240_000,
        max_errors: int = 20,
        max_bad_commands: int = 10,
        max_junk_commands: int = 100,
        max_recipient_overshoot: int = 1000,
        framing: FramingPolicy | None = None,
        addresses: AddressPolicy | None = None,
        pipelining: bool = True,
        eight_bit_mime: bool = True,
        enhanced_status_codes: bool = True,
        smtputf8: bool = True,
        chunking: bool = True,
        binarymime: bool = False,
        size: bool = True,
        limits: bool = False,
        requiretls: bool = False,
        xclient: bool = False,
        xforward: bool = False,
        trusted_forwarder: bool = False,
        dsn: bool = False,
        starttls: bool = False,
        tls: bool = False,
        require_tls: bool = False,
        auth_mechanisms: Sequence[str] = (),
        auth_require_tls: bool = True,
        require_auth: bool = False,
        max_auth_failures: int = 3,
        max_auth_line: int = 12288,
        reject_early_content: bool = True,
        extra_extensions: Sequence[str | Extension] = (),
    ) -> None:
        # The configuration, set attribute by attribute rather than through a
        # constructor of its own: a connection_factory builds a machine per connection.
        config: ServerConfig = _new(ServerConfig)
        config.hostname = _wire_hostname(hostname)
        config.lmtp = lmtp
        config.max_command_line = max_command_line
        config.max_text_line = max_text_line
        config.max_recipients = max_recipients
        config.max_message_size = checked_message_size(max_message_size)
        config.max_errors = max_errors
        config.max_bad_commands = max_bad_commands
        config.max_junk_commands = max_junk_commands
        config.max_recipient_overshoot = max_recipient_overshoot
        config.framing = framing or STRICT
        config.addresses = _address_policy(addresses)
        config.pipelining = pipelining
        config.eight_bit_mime = eight_bit_mime
        config.enhanced_status_codes = enhanced_status_codes
        config.smtputf8 = smtputf8
        config.chunking = chunking
        config.binarymime = binarymime
        config.size = size
        config.limits = limits
        config.requiretls = requiretls
        config.xclient = xclient
        config.xforward = xforward
        config.trusted_forwarder = trusted_forwarder
        config.dsn = dsn
        config.starttls = starttls
        config.tls = tls
        config.require_tls = require_tls
        config.auth_mechanisms = _checked_mechanisms(auth_mechanisms)
        config.auth_require_tls = auth_require_tls
        config.require_auth = require_auth
        config.max_auth_failures = max_auth_failures
        config.max_auth_line = max_auth_line
        config.reject_early_content = reject_early_content
        config.extra_extensions = tuple(listed("extra_extensions", extra_extensions))
        config.first_hello = None
        config.tables = session_tables(config)
        self._begin(config)

    def _begin(self, config: ServerConfig) -> None:
        """A session's own state, at the greeting, under ``config``: what a machine
        holds besides its share of the configuration (see :class:`ServerConfig`).
        The driver starts each connection's machine here, with its server's
        configuration, rather than through the constructor."""
        self._config = config
        self._verbs = config.tables.plain_verbs
        """The commands known now: those of the extensions in force only after EHLO."""
        self._command_line_limit = config.max_command_line
        """``max_command_line`` and what the extensions in force add to it."""

        self._buffer = ReceiveBuffer()
        """The bytes received and not yet read: a bytearray, so whether any wait is
        known without a call."""
        self._state = State.GREETING
        self._pending: Event | None = None
        self.tls = config.tls
        self.trusted_forwarder = config.trusted_forwarder
        self._auth_mechanisms = config.auth_mechanisms
        self.helo_name: str | None = None
        self.extended = False
        self.authenticated = False
        self._errors = 0
        self._junk_commands = 0
        self._overshoot = 0
        self._forwarded_message: Xforward | None = None
        # The open transaction.
        self._utf8_transaction = False
        self._binary_transaction = False
        self._accepted = 0  # or _MAIL_REFUSED: read it through accepted_recipients
        self._lmtp_replies_due = 0
        # The content being read.
        self._decoder: DotDecoder | None = None
        self._content: ContentFilter | None = None
        """The framing policy's checks on the message being read, DATA or BDAT."""
        self._received = 0
        self._past_size_limit = False
        """Whether ``_received`` is past ``max_message_size``: decided where octets
        are counted, read where the message is judged."""
        self._refusal: Reply | None = None
        self._content_ended = False
        # BDAT (RFC 3030): octets of the current chunk still to come, and
        # octets of a refused chunk to skip before the next command.
        self._chunk_left = 0
        self._chunk_last = False
        self._skip = 0

    # -- the four verbs -------------------------------------------------

    if TYPE_CHECKING:

        @property
        def state(self) -> State: ...

    else:
        # Read in C, without a Python call: a server's session asks before every read.
        state = property(attrgetter("_state"), doc="The state the session is in.")

    @property
    def pending(self) -> Event | None:
        """The event waiting for the application's reply, if any.

        After a non-final ``Bdat`` and its ``MessageData``, ``next_event``
        returns ``PAUSED`` with the ``Bdat`` here: the chunk is in, answer it.
        """
        if isinstance(self._pending, Bdat) and (self._chunk_left or self._chunk_last):
            return None
        return self._pending

    @property
    def buffered(self) -> int:
        """Octets received from the client and not yet turned into events.

        Once :meth:`next_event` has returned ``NEED_DATA``, at most
        :attr:`max_buffered` beyond the last piece given to
        :meth:`receive_data`: an over-long line is dropped as it arrives, and
        content is passed on as it comes. A fuzzer asserts memory stays
        bounded with it.
        """
        return len(self._buffer)

    @property
    def max_buffered(self) -> int:
        """The bound on :attr:`buffered` in the state the session is in, once
        :meth:`next_event` has returned ``NEED_DATA``: the limit on the command
        line under way (``max_command_line`` and what the extensions in force add to
        it, or ``max_auth_line`` during AUTH), or in DATA the octets that may start
        the terminator (content is passed on as it comes). A fuzzer holds the
        machine to it, so it is the limit applied now, not the longest line of
        any state. While the machine is ``PAUSED`` it parses nothing, so what a
        loop goes on reading then is held whole: stop reading until
        ``NEED_DATA``."""
        if self._state is _STATE_DATA:
            return HELD_BACK
        return self._line_limit()

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; ``b""`` means it closed its side.

        In TLS_PENDING, bytes are plaintext from before the handshake: dropped; so
        are bytes that come once the session is CLOSED or in ERROR.
        """
        buffer = self._buffer
        if (
            type(data) in BYTES_LIKE  # no call; a subclass, or no bytes, is receive()'s to judge
            and data
            and not buffer.peer_closed
            and self._state not in DISCARDING
        ):
            self._buffer += data  # in place: what buffer.receive does, without the call
            return
        buffer.receive(data, discard=self._state in DISCARDING)

    def next_event(self) -> Event | NoEvent:
        """The next event from the client, ``NEED_DATA`` or ``PAUSED``.

        ``LocalProtocolError`` when the code of an extension entry of the
        application's own fails on a command: the command is taken, and answered
        with the error's ``reply_hint`` (``451 4.3.0``) the session goes on.
        """
        state = self._state
        if self._pending is None:  # the everyday case first: nothing awaits an answer
            if state is _STATE_DATA:
                if self._content_ended:  # the content was passed on: the end of the message
                    if self._refusal is None and not self._config.lmtp:  # _end_content's
                        self._decoder = self._content = None
                        self._content_ended = False
                        self._lmtp_replies_due = 1
                        self._pending = _END_OF_MESSAGE
                        return _END_OF_MESSAGE
                    return self._end_content()
                buffered = self._buffer
                if not buffered:
                    if not buffered.peer_closed:
                        return NEED_DATA  # nothing to read: the wait for content
                elif self._decoder is None:  # the message's first bytes
                    # The everyday message: whole in this read, and nothing to do to it.
                    config = self._config
                    data = decode_whole(buffered, config.framing, config.max_text_line)
                    if data is not None:
                        size = len(data)
                        limit = config.max_message_size
                        if not limit or size <= limit:
                            del buffered[: size + 3]  # consume's work: nothing searched
                            self._received = size
                            self._content_ended = True
                            event: MessageData = _new(MessageData)
                            _SET_DATA(event, data)
                            return event
                return self._next_content()
            if state in _READING_COMMANDS:
                buffer = self._buffer
                if not buffer:
                    if not buffer.peer_closed:
                        return NEED_DATA  # nothing to read: the wait before every command
                    return self._next_command()
                config = self._config
                # The everyday lines (MAIL, RCPT, DATA, RSET, NOOP, QUIT, commands every
                # session knows) read where they stand: a match ends at the buffer's
                # first CRLF, so it is the line ReceiveBuffer.next_line would take, read
                # with no search for its end and no copy before the match (a test holds
                # them equal). Tried only while nothing of the buffer was searched
                # (_searched 0): a line that trickles in is matched at its first read,
                # not again at each. Any other line is _next_command's.
                if (
                    state is _STATE_AUTH
                    or self._skip
                    or buffer._discarding
                    or buffer._searched
                    or config.framing.lf_ends_command
                    or self._errors >= config.max_errors
                ):
                    return self._next_command()
                limit = self._command_line_limit
                # DATA, RSET, NOOP or QUIT and CRLF as clients write them, the shortest
                # and most frequent lines, told by their first letter (the CR first: a
                # MAIL or RCPT line has a space there), with no match at all.
                if (
                    limit > 5
                    and len(buffer) > 5
                    and buffer[4] == 13
                    and buffer.startswith(BARE_LINES)
                ):
                    line, bare = BARE_BY_FIRST_OCTET[buffer[0]]
                    del buffer[:6]
                    return self._take_command(line, bare)
                match = match_everyday_line(buffer)
                if match is None or (end := match.end()) > limit:
                    return self._next_command(tried=True)
                line = match[0]
                everyday = everyday_command(match, line)  # while the line is in the buffer
                del buffer[:end]
                if everyday is None:
                    return self._next_command(line)
                return self._take_command(line, everyday)
        if state is State.ERROR:
            raise RemoteProtocolError(
                "the connection is in the ERROR state",
                reply_hint=self._error.reply_hint if self._error else None,
            )
        if state is State.CLOSED:
            return ConnectionClosed()
        if isinstance(self._pending, Bdat) and (self._chunk_left or self._chunk_last):
            return self._next_chunk_data()
        if state is _STATE_TLS_PENDING and self._buffer.peer_closed:
            self._end(_STATE_CLOSED)  # the client left before the handshake
            return ConnectionClosed()
        if self._pending is not None or state in (State.GREETING, State.TLS_PENDING):
            return PAUSED
        return self._next_command()  # DATA with nothing pending is the first branch's

    def send(self, event: Event) -> bytes:
        """Check ``event`` against the state, apply it, and return its bytes."""
        pending = self._pending
        everyday = _EVERYDAY_ANSWERS.get(type(pending))
        if everyday is not None and isinstance(event, Reply) and event._longest <= _SURE_TO_FIT:
            # A success answering MAIL, RCPT, DATA, RSET or NOOP, the commands of every
            # message, moved and written here as _answer_command and _finish would
            # (a test holds them equal). Anything else takes the general path.
            success_codes, moves, accepted, status = everyday
            if event.code in success_codes:
                target = moves.get(self._state)  # None where the rule does not allow it
                if target is not None:
                    self._state = target
                    self._pending = None
                    if accepted is not None:
                        written = accepted(self, pending, event)
                        if written is not None:
                            return written
                    # A 2xx: no error to count, and the reply's own status or the
                    # command's, if the session writes them.
                    if not self._config.enhanced_status_codes:
                        status = None
                    elif event.status is not None:
                        status = event.status
                    for known, data in event._wire:  # Reply.to_bytes's memory, no call
                        if known is status:
                            return data
                    return event.to_bytes(status)
        elif (
            pending is _END_OF_MESSAGE
            and self._state is _STATE_DATA
            and isinstance(event, Reply)
            and event.code != 421
            and event._longest <= _SURE_TO_FIT
        ):
            # The answer to every message's final dot: what _send comes to for it
            # (a test holds them equal), without its checks of other states.
            return self._answer_content(pending, event)
        if isinstance(event, Reply) and event._longest > _SURE_TO_FIT:
            return self._send_long(event)
        return self._send(pending, event)

    def _send_long(self, event: Reply) -> bytes:
        """:meth:`send` for a reply whose text may overrun a reply line once the machine
        adds its code, enhanced status or host name (RFC 5321 §4.5.3.1.5): such a line
        is ``LocalProtocolError`` from :meth:`Reply.to_bytes`, which the answering
        paths call once they have moved the session; so its fields are put back, and
        the machine is left as it was."""
        names = [
            name
            for kind in type(self).__mro__
            for name in _slot_names(kind)
            if name not in ("__dict__", "__weakref__") and hasattr(self, name)
        ]
        kept = [getattr(self, name) for name in names]
        extra = dict(vars(self))
        try:
            return self._send(self._pending, event)
        except LocalProtocolError:
            for name, value in zip(names, kept, strict=True):
                setattr(self, name, value)
            vars(self).clear()
            vars(self).update(extra)
            raise

    def _send(self, pending: Event | None, event: Event) -> bytes:
        """:meth:`send`, for every answer but the everyday successes: the ones that
        end the session (QUIT's 221, a 421) among them, so what is still held is
        dropped here, once the answer is written (:meth:`_end`)."""
        data = self._answer(pending, event)
        if self._state in _ENDED:
            self._end(self._state)
        return data

    def send_failed(self) -> None:
        """The bytes of the last ``send`` never reached the client."""
        self._end(State.ERROR)

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS is done: restart at EHLO (RFC 3207 §4.2)."""
        if self._state is not State.TLS_PENDING:
            raise LocalProtocolError("tls_started() outside the TLS_PENDING state")
        self._buffer.clear()
        self.tls = True
        self.helo_name = None
        self.extended = False
        self._verbs = self._config.tables.plain_verbs
        self._command_line_limit = self._config.max_command_line
        self.authenticated = False  # RFC 3207 §4.2: forget what plaintext taught
        self._forget_forwarded_before_tls()
        self._reset_transaction()
        self._state = State.HELLO


# The EHLO reply is remembered for this class's sessions alone (see _server_hello.py).
_server_hello._PLAIN_SERVER = ServerConnection

_SURE_TO_FIT: Final = MAX_REPLY_LINE - len("250-\r\n") - len("5.999.999 ") - 256
"""The longest text (in UTF-8 octets) whose reply lines fit whatever the machine adds:
code, separator and CRLF, an enhanced status, and before an EHLO reply's first line
the host name (a domain, at most 255 octets: RFC 5321 §4.5.3.1.2) and a space.
:meth:`ServerConnection.send` checks a longer one with care (``_send_long``)."""


def _slot_names(kind: type) -> tuple[str, ...]:
    slots = vars(kind).get("__slots__", ())
    return (slots,) if isinstance(slots, str) else tuple(slots)


_Accept = Callable[[ServerConnection, Any, Reply], bytes | None]
_EverydayAnswer = tuple[frozenset[int], dict[State, State], _Accept | None, EnhancedStatus | None]


def _everyday_answer(kind: type[Command], accepted: _Accept | None) -> _EverydayAnswer:
    """What :meth:`ServerConnection.send` needs to take a success answering ``kind``
    from its rule: the success codes, where a success leads from each state the rule
    allows (one lookup both checks the state and moves), what the success changes in
    the session, and the enhanced status a 2xx gets when the reply names none."""
    rule = RULES[kind]
    code = min(rule.success_codes)
    moves = {}
    for state in rule.allowed:
        target = rule.move(code, state)
        assert target is not None  # a success code
        moves[state] = target
    return rule.success_codes, moves, accepted, _STATUS_FOR.get(kind, _DEFAULT_STATUS)[code // 100]


_EVERYDAY_ANSWERS: Final[dict[type[object], _EverydayAnswer]] = {
    Mail: _everyday_answer(Mail, ServerConnection._mail_accepted),
    Rcpt: _everyday_answer(Rcpt, ServerConnection._rcpt_accepted),
    Data: _everyday_answer(Data, ServerConnection._start_content),
    Rset: _everyday_answer(Rset, ServerConnection._rset_accepted),
    Noop: _everyday_answer(Noop, None),
}
"""Command type -> how :meth:`ServerConnection.send` takes a success answering it."""
