"""The server side of an SMTP session, with no I/O (RFC 5321, RFC 2033 LMTP).

Feed it the client's bytes with :meth:`ServerConnection.receive_data`, take
events from :meth:`ServerConnection.next_event`, answer each command with a
:class:`Reply` through :meth:`ServerConnection.send` and write the bytes it
returns. The machine parses one command at a time and pauses until it has
been answered, so pipelined commands (RFC 2920) are answered in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final, NoReturn

from smtpcore._content import ContentFilter
from smtpcore._dotstuff import HELD_BACK, DotDecoder, decode_whole
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._lines import BYTES_LIKE, LINE_TOO_LONG, FramingPolicy, ReceiveBuffer
from smtpcore._sentinels import NEED_DATA, PAUSED, NoEvent
from smtpcore._words import ascii_upper, listed
from smtpcore.address import AddressPolicy
from smtpcore.smtp import _server_hello
from smtpcore.smtp._commands import (
    BARE_BY_FIRST_OCTET,
    BARE_LINES,
    CommandSyntaxError,
    chunk_after,
    everyday_command,
    match_everyday_line,
    parse_auth_response,
    parse_command_line,
    parse_everyday_line,
    parse_hello_line,
    reply,
    starts_bdat,
)
from smtpcore.smtp._events import (
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    RejectedMessage,
    Rset,
    StartTls,
    Vrfy,
    Xclient,
    Xforward,
)
from smtpcore.smtp._ext import BUILTIN
from smtpcore.smtp._ext.size import OVER_SIZE_LIMIT, checked_message_size
from smtpcore.smtp._extension import Extension
from smtpcore.smtp._replies import MAX_REPLY_LINE, EnhancedStatus, Reply, printable_ascii
from smtpcore.smtp._server_auth import _AUTH_FAILURE_STATUS, _CREDENTIALS_INVALID
from smtpcore.smtp._server_config import STRICT, ServerConfig, session_tables
from smtpcore.smtp._server_forwarding import ForwardingLayer
from smtpcore.smtp._server_options import _address_policy, _checked_mechanisms, _wire_hostname
from smtpcore.smtp._server_replies import _DEFAULT_STATUS, _STATUS_FOR, _SUCCESS
from smtpcore.smtp._server_session import (
    _STATE_AUTH,
    _STATE_CLOSED,
    _STATE_DATA,
    _STATE_READY,
    _STATE_TLS_PENDING,
)
from smtpcore.smtp._server_transaction import (
    _MAIL_REFUSED,
    _TOO_MANY_RECIPIENTS,
    _TRANSACTION_STATES,
)
from smtpcore.smtp._state import (
    DISCARDING,
    END_OF_DATA_RULE,
    RULES,
    Rule,
    State,
    replies_after_content,
)

__all__ = ["ServerConnection"]

_CONTENT: Final = (EndOfMessage, RejectedMessage)
_AUTH_LINE: Final = re.compile(rb"[ \t]*AUTH", re.IGNORECASE)
"""A line that starts as AUTH, whose initial response may be the password (RFC 4954
§4; a space left out after the verb included)."""
_END_OF_MESSAGE: Final = EndOfMessage()
_END_OF_DATA_SUCCESS: Final = END_OF_DATA_RULE.success_codes


_NO_VALID_RECIPIENTS: Final = reply(554, "5.5.1", "No valid recipients")
"""DATA or BDAT with no recipient accepted (RFC 5321 §3.3 allows 503 or 554)."""
_LMTP_NO_RECIPIENTS: Final = reply(503, "5.5.1", "No valid recipients")
"""The same in LMTP, where RFC 2033 §4.2 names 503."""
_SEND_EHLO_OR_HELO: Final = reply(503, "5.5.1", "Send EHLO or HELO first")
"""A command that needs the session opened first (RFC 5321 §4.1.4)."""
_SEND_LHLO: Final = reply(503, "5.5.1", "Send LHLO first")
"""The same in LMTP, which refuses EHLO and HELO (RFC 2033 §4.1)."""
_SEQUENCE_ERRORS: Final[dict[tuple[str, State], Reply]] = {
    ("MAIL", State.HELLO): _SEND_EHLO_OR_HELO,
    ("MAIL", State.MAIL): reply(503, "5.5.1", "Nested MAIL command"),
    ("MAIL", State.RCPT): reply(503, "5.5.1", "Nested MAIL command"),
    ("MAIL", State.BDAT): reply(503, "5.5.1", "Nested MAIL command"),
    ("DATA", State.MAIL): _NO_VALID_RECIPIENTS,
    ("BDAT", State.MAIL): _NO_VALID_RECIPIENTS,
    ("DATA", State.BDAT): reply(503, "5.5.1", "DATA after BDAT: end the message with BDAT LAST"),
    ("RCPT", State.BDAT): reply(503, "5.5.1", "RCPT after BDAT: end the message first"),
    ("AUTH", State.MAIL): reply(503, "5.5.1", "AUTH not allowed in a mail transaction"),
    ("AUTH", State.RCPT): reply(503, "5.5.1", "AUTH not allowed in a mail transaction"),
    **{
        (verb, state): reply(503, "5.5.1", "Mail transaction in progress")
        for verb in ("XCLIENT", "XFORWARD")
        for state in (State.MAIL, State.RCPT, State.BDAT)
    },
}
_IN_LMTP: Final[dict[Reply, Reply]] = {
    _NO_VALID_RECIPIENTS: _LMTP_NO_RECIPIENTS,
    _SEND_EHLO_OR_HELO: _SEND_LHLO,
}
"""The ``_SEQUENCE_ERRORS`` LMTP words otherwise: what it names or refuses differs."""
_READING_COMMANDS: Final = frozenset(
    {State.NO_SERVICE, State.HELLO, State.READY, State.MAIL, State.RCPT, State.BDAT, State.AUTH}
)
"""States in which, with no command pending, the next line is a command (or an AUTH line)."""
_OUTSIDE_SESSION: Final = frozenset({State.GREETING, State.CLOSED, State.ERROR})
"""States in which ``send`` answers no command: asked in one set lookup, so that the
answers to the end of a message and to a bad command compare with no member read
through its enum class."""
_ENDED: Final = frozenset({State.CLOSED, State.ERROR})
"""States after which nothing received is read: the machine holds none of it."""
_NEED_MAIL: Final = reply(503, "5.5.1", "Need MAIL command")
_IN_TRANSACTION: Final = reply(503, "5.5.1", "Mail transaction in progress")
"""What a command out of its place gets while a transaction is open (STARTTLS, say)."""
_BDAT_RULE: Final = RULES[Bdat]
_SENT_BEHIND_MAIL: Final = frozenset({Rcpt, Data, Bdat})
"""The commands a pipelining client sends behind its MAIL (RFC 2920 §3.1)."""
JUNK_COMMANDS: Final[frozenset[type[Command]]] = frozenset(
    {Ehlo, Helo, Lhlo, Rset, Noop, Vrfy, Expn, Help}
)
"""Commands that move no mail forward, whatever their arguments: the ones Postfix
counts toward ``smtpd_junk_command_limit`` (HELO, EHLO, RSET, NOOP, VRFY), and EXPN
and HELP, which Postfix does not serve at all (they count as errors there). A
``BDAT`` is junk only when its chunk is empty and not the last (see
:data:`_JUNK_TESTS`)."""


def _empty_chunk_before_the_last(command: Bdat) -> bool:
    """A ``BDAT 0`` without LAST carries no octet and ends no message: RFC 3030 §2
    names an empty chunk only as the last one ("MAY have a byte-count of zero"), and
    its grammar (``chunk-size ::= 1*DIGIT``) does not forbid it elsewhere, so it is
    answered as a chunk but counted as junk; pipelined, it would otherwise hold a
    session for ever. (Postfix refuses it, ``551 5.7.1 Null BDAT request``, and
    notes that counting it as a NOOP would do as well.) ``BDAT 0 LAST`` ends the
    message and a chunk with octets moves it forward, up to ``max_message_size``."""
    return command.size == 0 and not command.last


_JunkTest = Callable[[Any], bool]
_JUNK_TESTS: Final[dict[type[Command], bool | _JunkTest]] = {
    **dict.fromkeys(JUNK_COMMANDS, True),
    Bdat: _empty_chunk_before_the_last,
}
"""Command type -> whether one such command moves no mail forward, and so counts
toward ``max_junk_commands`` (DESIGN: limits count what the RFC counts): ``True``
for every one of that type, told with no call (RSET and NOOP are everyday), or the
test that tells for the one at hand; a type not here is never junk."""
_OUT_OF_SEQUENCE: Final = reply(503, "5.5.1", "Bad sequence of commands")
_NO_SERVICE: Final = reply(503, "5.5.1", "No service here; send QUIT")
"""Every command line whose verb is not QUIT after a 554 greeting (RFC 5321 §3.1): known
or not, well formed or not, a bad sequence of commands, which counts toward no
``max_bad_commands``. A line that is no command line (over the limit, with a bare LF,
not UTF-8) gets its ``500`` first, as in any state."""
_SEND_EHLO: Final = reply(503, "5.5.1", "Send EHLO first")
_HELLO_VERBS: Final = frozenset({"EHLO", "HELO", "LHLO"})


def _is_quit(text: str) -> bool:
    """Whether a command line that did not parse is a QUIT: its syntax error is its own,
    QUIT being the one command a session refused service still serves (RFC 5321 §3.1)."""
    return ascii_upper(text.partition(" ")[0]) == "QUIT"


class ServerConnection(ForwardingLayer):
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

    _bad_commands = 0
    _refused_chunk: BadCommand | None = None
    """The pending refusal of a BDAT line: its answer fails the transaction (see
    :meth:`_chunk_refused`)."""

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

    @property
    def replies_due(self) -> int:
        """How many replies the pending ``EndOfMessage`` or ``RejectedMessage`` still
        needs: in LMTP one per accepted recipient at the end of the content (RFC 2033
        §4.2), otherwise, and for a chunk refused before the last, one; 0 when
        neither is pending."""
        return self._lmtp_replies_due if isinstance(self._pending, _CONTENT) else 0

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

    def _answer(self, pending: Event | None, event: Event) -> bytes:
        if not isinstance(event, Reply):
            raise LocalProtocolError(f"a server sends Reply events, not {type(event).__name__}")
        rule = _FAST_RULES.get(type(pending))
        if rule is not None and self._state in rule.allowed and event.code != 421:
            return self._answer_command(pending, rule, event)  # type: ignore[arg-type]
        state = self._state
        if state in _OUTSIDE_SESSION:
            if state is State.ERROR:
                return event.to_bytes(self._status_for(None, event))
            if state is State.CLOSED:
                raise LocalProtocolError("the session is closed")
            if event.code == 421:
                return self._close_with(event, greeting=True)
            return self._greet(event)
        if event.code == 421:
            return self._close_with(event)
        if pending is None:
            raise LocalProtocolError("there is no command to answer")
        if isinstance(pending, BadCommand):
            if event.code < 400:
                raise LocalProtocolError("a bad command must be answered with 4xx or 5xx")
            self._pending = None
            if pending is self._refused_chunk:
                self._chunk_refused(event.code)
            return self._finish(pending, event)
        if isinstance(pending, _CONTENT):
            return self._answer_content(pending, event)
        assert isinstance(pending, Command | AuthResponse)
        if isinstance(pending, Bdat) and (self._chunk_left or self._chunk_last):
            raise LocalProtocolError("a BDAT chunk is answered once all its octets are read")
        if isinstance(pending, AuthResponse) and pending.cancel and event.code != 501:
            # RFC 4954 §4: the server MUST reject the cancelled AUTH with 501 (5.7.8
            # when credentials were refused before the cancel, see _auth_refused); a
            # 535 would say the cancel was a guess. A 421 was taken above, as at any
            # point.
            raise LocalProtocolError(
                "a cancelled AUTH exchange is answered with 501 (RFC 4954 §4)"
            )
        rule = RULES[Auth if isinstance(pending, AuthResponse) else type(pending)]
        return self._answer_command(pending, rule, event)

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
        self._reset_transaction()
        self._state = State.HELLO

    # -- reading commands -----------------------------------------------

    def _line_limit(self) -> int:
        """The octets the line under way may have, CRLF included: during AUTH a SASL
        response's ``max_auth_line`` (RFC 4954 §4), otherwise ``max_command_line``
        and what the extensions in force add to it (RFC 5321 §4.5.3.1.4). One
        place, read by :meth:`_next_command` and :attr:`max_buffered` alike."""
        if self._state is _STATE_AUTH:
            return self._config.max_auth_line
        return self._command_line_limit

    def _next_command(self, line: bytes | None = None, tried: bool = False) -> Event | NoEvent:
        """The next command line, read and parsed as every line is: ``line`` when
        :meth:`next_event` took it from the buffer already, ``tried`` once its
        everyday match was tried (on ``line``, or on the line still in the buffer).
        """
        if self._skip:  # never so with a line taken
            self._skip -= len(self._buffer.take(self._skip))
            if self._skip:
                return self._closed_or_need_data()
        config = self._config
        in_auth = self._state is _STATE_AUTH
        lf_ends = config.framing.lf_ends_command
        limit = self._line_limit()
        buffer = self._buffer
        if line is None:
            # ReceiveBuffer.next_line, without its call, for the line every command is:
            # whole, ended by CRLF within the limit, while no over-long line is being
            # dropped. Any other line (or only LF ending a line) is the method's (a test
            # holds them equal).
            end = -1 if lf_ends or buffer._discarding else buffer.find(b"\r\n", buffer._searched)
            if 0 <= end < limit - 1:
                line = bytes(buffer[: end + 2])
                del buffer[: end + 2]
                buffer._searched = 0
            else:  # a line the method reads, or none yet (a whole line is never either)
                if (
                    not in_auth
                    and not buffer._discarding
                    and len(buffer) > limit
                    and buffer.find(b"\n", 0, limit) < 0
                    and starts_bdat(buffer[:32])
                ):
                    # A BDAT line over the limit, about to be dropped unread: its chunk
                    # follows it (RFC 3030 §2), and no one can say where that ends.
                    self._unreadable_chunk()
                read = buffer.next_line(limit, lf_ends=lf_ends)
                if read is None:
                    if not self._buffer.peer_closed:
                        return NEED_DATA  # the wait for every command: no call for it
                    return self._closed_or_need_data()
                if read is LINE_TOO_LONG:
                    return self._line_too_long(in_auth)
                line = read
            if self._errors >= config.max_errors:
                return self._too_many_errors(line)
            if not in_auth:
                # A line the match above did not take is no everyday line: a hello?
                everyday = parse_hello_line(line) if tried else parse_everyday_line(line)
                # By its type where every session knows it (a verb read through its
                # event costs a class attribute's lookup); a hello by its verb.
                if everyday is not None and (
                    type(everyday) in _ALWAYS_KNOWN or everyday.verb in self._verbs
                ):
                    return self._take_command(line, everyday)
        if in_auth:
            # An answer to a 334 is base64 or "*": a bare LF or an octet that is not
            # UTF-8 makes it no base64, whose 501 ends the exchange (RFC 4954 §4), so
            # that the client, told 5xx, and the machine agree that it is over.
            text = line.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", "replace")
            return self._auth_response(line, text)
        if not lf_ends and line.find(b"\n", 0, len(line) - 2) >= 0:
            return self._refused(line, reply(500, "5.5.2", "Bare LF in command; use CRLF"))
        try:
            text = line.rstrip(b"\n").removesuffix(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            return self._refused(line, reply(500, "5.5.2", "Invalid UTF-8 in command"))
        try:
            command = parse_command_line(text, self._verbs)
        except CommandSyntaxError as exc:
            if self._state is State.NO_SERVICE and not _is_quit(text):
                return self._refused(line, _NO_SERVICE)
            if exc.reply.code == 500:
                early = None if self.extended else self._before_ehlo(text)
                if early is not None:
                    return self._refused(line, early)
                self._bad_commands += 1
                if self._bad_commands >= config.max_bad_commands:
                    answer = reply(421, "4.7.0", f"{config.hostname} Too many unknown commands")
                    return self._bad(line, answer)
            return self._refused(line, exc.reply)
        return self._take_command(line, command)

    def _line_too_long(self, in_auth: bool) -> BadCommand:
        """A line over the limit, dropped unread: unreadable as a bare LF or invalid
        UTF-8 is, so it counts toward ``max_errors`` as they do, and the one at the
        limit gets the 421 that ends the session (RFC 5321 §4.5.3.1.4, §3.8). RFC 3463
        X.5.2, a syntax error; X.5.6 is the AUTH exchange's line alone (RFC 4954 §6,
        the RFC 5248 registry), which ends the exchange."""
        if self._errors >= self._config.max_errors:
            return self._too_many_errors(b"")
        if not in_auth:
            return self._bad(b"", reply(500, "5.5.2", "Line too long"))
        bad = self._bad(b"", reply(500, "5.5.6", "Authentication exchange line too long"))
        self._state = State.READY
        return bad

    def _too_many_errors(self, line: bytes) -> BadCommand:
        """The line past ``max_errors``: ``421 4.7.0`` and the end of the session
        (RFC 5321 §3.8), as Postfix's ``smtpd_hard_error_limit``."""
        answer = reply(421, "4.7.0", f"{self._config.hostname} Too many errors")
        return self._bad(line, answer)

    def _before_ehlo(self, text: str) -> Reply | None:
        """What a command the session does not know yet gets, when it is one of an
        extension this server offers: the session was not opened with EHLO (or LHLO),
        which the client must send first. That is a bad sequence of commands, ``503
        5.5.1`` (RFC 5321 §4.1.4 and §4.3.2), as Postfix answers AUTH before EHLO, not
        an unknown command. None (an unknown command, ``500``) for a verb no EHLO would
        make known, and for one of an extension whose requirements the session does
        not meet (XFORWARD to a client not trusted with it: no EHLO offers it)."""
        verb = ascii_upper(text.partition(" ")[0])
        tables = self._config.tables
        owner = tables.verb_owner.get(verb)
        if owner is None or verb not in tables.extended_verbs or owner.unmet(self) is not None:
            return None
        return _SEND_LHLO if self._config.lmtp else _SEND_EHLO

    def _refused(self, line: bytes, answer: Reply) -> BadCommand:
        """A command line refused as it stands (unknown, or not its command's syntax).

        A BDAT line's chunk follows it whatever the answer (RFC 3030 §2: the server
        discards the chunks of a failed BDAT), so it is skipped, as the chunk of a BDAT
        refused for its place is. Where the size cannot be read, no one knows where
        that chunk ends: the session cannot go on, and gets 421 (RFC 5321 §3.8).
        """
        size = chunk_after(line)
        if size is None:
            self._unreadable_chunk()
        if not starts_bdat(line):
            return self._bad(line, answer)
        return self._refuse_chunk(line, answer, size)

    def _refuse_chunk(self, line: bytes, answer: Reply, size: int) -> BadCommand:
        """A BDAT line refused by the machine, whatever for (its syntax, its place, a
        limit): its chunk of ``size`` octets is skipped, and its answer, a 4xx or 5xx,
        fails the transaction as the application's refusal of a chunk does (RFC 3030
        §2, :meth:`_chunk_refused`).

        Only where CHUNKING is in force: elsewhere (not offered, or after HELO) BDAT
        is an unknown or unoffered command, whose 500 or 503 leaves the state as it
        was (RFC 5321 §4.1.4); its chunk is skipped all the same, lest its octets be
        read as commands."""
        self._skip = size
        bad = self._bad(line, answer)
        if self.in_force("CHUNKING"):
            self._refused_chunk = bad
        return bad

    def _unreadable_chunk(self) -> NoReturn:
        """A BDAT line whose chunk size cannot be read (no size, a line too long to
        read, or a BDAT that only a reader ending lines at a bare LF sees): no one
        knows where its chunk ends, so the session cannot go on (RFC 3030 §2) and ends
        with 421 (RFC 5321 §3.8)."""
        self._end(State.ERROR)
        self._error = RemoteProtocolError(
            "a BDAT line whose chunk size cannot be read (RFC 3030 §2)",
            reply_hint=reply(421, "4.5.2", f"{self._config.hostname} Unreadable BDAT chunk size"),
        )
        raise self._error from None

    def _take_command(self, line: bytes, command: Command) -> Event:
        """A parsed command: refused here (a ``BadCommand``), or pending its answer.

        Refused, in this order: a command of an extension this client may not use
        (XCLIENT: it must not tell it more), one out of sequence, then what the
        command's own check (``_CHECKS``) refuses.

        An extension entry's own code that fails on the way (an application's
        ``Parameter.check`` that raises, say) is ``LocalProtocolError``, raised with
        the line taken and refused pending: the application answers it, with the
        error's ``reply_hint`` (451 4.3.0), and the session goes on.
        """
        allowed, check, junk, owned = _TAKING[type(command)]
        if junk and (junk is True or junk(command)):
            self._junk_commands += 1
            if self._junk_commands > self._config.max_junk_commands:
                answer = reply(421, "4.7.0", f"{self._config.hostname} Too many commands")
                return self._bad(line, answer)
        problem: Reply | None = None
        failed: LocalProtocolError | None = None
        try:
            if owned is not None:
                owner = self._config.tables.verb_owner.get(owned)
                unmet = None if owner is None else owner.unmet(self)
                if unmet is not None:
                    problem = unmet.refusal
            if problem is None:
                if self._state not in allowed:
                    problem = self._out_of_sequence(command)
                elif check is not None:
                    problem = check(self, command, line)
        except LocalProtocolError as exc:  # see smtp/_extension.py's entry_failed
            problem, failed = exc.reply_hint, exc
        if problem is not None:
            if isinstance(command, Bdat):  # the chunk follows the command regardless
                bad = self._refuse_chunk(line, problem, command.size)
            else:
                bad = self._bad(line, problem)
            if isinstance(command, Mail) and self._state is _STATE_READY:
                self._accepted = _MAIL_REFUSED  # before a raise: however it was refused
            if failed is not None:
                raise failed
            if problem is _TOO_MANY_RECIPIENTS or self._behind_refused_mail(command, allowed):
                self._overshoot += 1
                if self._overshoot <= self._config.max_recipient_overshoot:
                    self._forgiven = bad
            return bad
        if isinstance(command, Bdat):
            self._start_chunk(command)
        self._pending = command
        return command

    def _behind_refused_mail(self, command: Command, allowed: frozenset[State]) -> bool:
        """Whether ``command`` is refused out of sequence only because the MAIL before
        it was (:data:`_MAIL_REFUSED`): a RCPT, DATA or BDAT a pipelining client sent
        behind it (RFC 2920 §3.1), whose ``503`` refuses nothing of its own. It counts
        toward ``max_recipient_overshoot`` as an excess recipient does, not toward
        ``max_errors``, so that a relay whose MAIL a full disk refused is not cut off
        (and banned) for the size of its batch; the MAIL's own refusal counts, unless it
        is the server's own failure (:meth:`_clients_error`)."""
        return (
            self._accepted == _MAIL_REFUSED
            and type(command) in _SENT_BEHIND_MAIL
            and self._state not in allowed
        )

    def _auth_response(self, line: bytes, text: str) -> Event:
        """A line answering a 334 challenge: base64, or ``*`` to cancel (RFC 4954 §4)."""
        try:
            event = parse_auth_response(text)
        except CommandSyntaxError as exc:
            bad = self._bad(line, exc.reply)
            self._state = State.READY  # the exchange is over
            return bad
        self._pending = event
        return event

    def _bad(self, line: bytes, answer: Reply) -> BadCommand:
        """The line refused, marked secret when it may carry a credential: read as an
        answer to a 334 (the AUTH state), or an AUTH command.

        Every refusal the machine words passes here, some quoting an exception's text
        or the client's own bytes: written in printable US-ASCII (RFC 5321 §4.2's
        ``textstring``), but in an SMTPUTF8 transaction (RFC 6531), where the UTF-8
        address or value the client gave may be quoted back as it was.
        """
        if not self._utf8_transaction and not all(map(str.isascii, answer.lines)):
            answer = Reply(
                answer.code, [printable_ascii(text) for text in answer.lines], answer.status
            )
        secret = self._state is _STATE_AUTH or _AUTH_LINE.match(line) is not None
        event = BadCommand(line, answer, secret)
        self._pending = event
        return event

    def _out_of_sequence(self, command: Command) -> Reply:
        state = self._state
        if state is State.NO_SERVICE:
            return _NO_SERVICE
        found = _SEQUENCE_ERRORS.get((command.verb, state))
        if found is not None:
            return _IN_LMTP.get(found, found) if self._config.lmtp else found
        return _IN_TRANSACTION if state in _TRANSACTION_STATES else _NEED_MAIL

    # -- reading content ------------------------------------------------

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

    # -- answering ------------------------------------------------------

    def _answer_command(self, command: Command | AuthResponse, rule: Rule, event: Reply) -> bytes:
        code = event.code
        success = code in rule.success_codes
        target = rule.on_success
        before = self._state
        if success and isinstance(target, State):  # a success's named state: no call
            self._state = target
        else:
            state = rule.move(code, self._state)
            if state is None:
                raise LocalProtocolError(f"{code} is not an answer to {type(command).__name__}")
            self._state = state
            if state is _STATE_READY and not success and before in _TRANSACTION_STATES:
                # A refusal that ends the transaction (a BDAT's, RFC 3030 §2) ends it
                # as RSET does (RFC 5321 §4.1.1.5): nothing of it reaches the next.
                self._reset_transaction()
        self._pending = None
        # A 554 to XCLIENT is the named client's greeting: the command took effect.
        if success or (code == 554 and rule.greets):
            on_accept = _ON_ACCEPT.get(type(command))
            if on_accept is not None:
                try:
                    written = on_accept(self, command, event)
                except LocalProtocolError:  # an answer it cannot write: put back as it was
                    self._state = before
                    self._pending = command
                    raise
                if written is not None:
                    return written
        elif isinstance(command, Mail):
            self._accepted = _MAIL_REFUSED
        elif isinstance(command, Auth | AuthResponse):
            if code >= 500:
                self._refused_exchange = self._exchanges
            if code in _AUTH_FAILURE_STATUS or event.status == _CREDENTIALS_INVALID:
                return self._auth_refused(command, event)
        return self._finish(command, event)

    # What an accepted command changes, one method per command (see _ON_ACCEPT): each
    # returns the bytes of its answer when they are not the plain ones (_finish's).

    def _starttls_accepted(self, command: StartTls, event: Reply) -> bytes:
        data = self._finish(command, event)  # first: a reply too long changes nothing
        self._buffer.clear()  # plaintext pipelined behind STARTTLS: never read
        return data

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


_server_hello._PLAIN_SERVER = ServerConnection

_SURE_TO_FIT: Final = MAX_REPLY_LINE - len("250-\r\n") - len("5.999.999 ") - 256
"""The longest text (in UTF-8 octets) whose reply lines fit whatever the machine adds:
code, separator and CRLF, an enhanced status, and before an EHLO reply's first line
the host name (a domain, at most 255 octets: RFC 5321 §4.5.3.1.2) and a space.
:meth:`ServerConnection.send` checks a longer one with care (``_send_long``)."""


def _slot_names(kind: type) -> tuple[str, ...]:
    slots = vars(kind).get("__slots__", ())
    return (slots,) if isinstance(slots, str) else tuple(slots)


_new: Final = object.__new__
_SET_DATA: Final[Callable[[MessageData, bytes], None]] = vars(MessageData)["data"].__set__

_FAST_RULES: Final[dict[type[object], Rule]] = {
    command: RULES[command] for command in (Mail, Rcpt, Data, Rset, Noop, Ehlo, Helo, Lhlo, Quit)
}
"""The commands :meth:`ServerConnection.send` answers without its general checks: each
is pending only after the machine checked it against its rule, and answering one
needs nothing but the rule (the hellos and QUIT: once a connection)."""

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

_Check = Callable[[ServerConnection, Any, bytes], Reply | None]
_CHECKS: Final[dict[type[Command], _Check]] = {
    Mail: ServerConnection._check_mail,
    Rcpt: ServerConnection._check_rcpt,
    Data: ServerConnection._check_data,
    Auth: ServerConnection._check_auth,
}
"""Command type -> its own check, once it is known and in sequence, given the command
and its line: the reply that refuses it here, or None."""

_EXTENSION_VERBS: Final = frozenset({verb for entry in BUILTIN for verb in entry.verbs})
"""Verbs an extension brings (BDAT: CHUNKING): known only where it is offered."""
_TAKING: Final[
    dict[
        type[Command],
        tuple[frozenset[State], _Check | None, bool | _JunkTest, str | None],
    ]
] = {
    kind: (
        rule.allowed,
        _CHECKS.get(kind),
        _JUNK_TESTS.get(kind, False),
        kind.verb if kind.verb in _EXTENSION_VERBS else None,
    )
    for kind, rule in RULES.items()
}
"""Command type -> what :meth:`ServerConnection._take_command` asks of it, in one
lookup: the states its rule allows it in, its own check (``_CHECKS``), the test of
whether it counts toward the junk command limit (``_JUNK_TESTS``), and its verb if
an extension brings it (then the extension's requirements must be met)."""
_ALWAYS_KNOWN: Final = frozenset(
    {kind for kind in RULES if kind.verb not in _EXTENSION_VERBS | _HELLO_VERBS}
)
"""The commands every session knows, whatever its server offers and whether it said
EHLO, HELO or LHLO: those of RFC 5321 but the hellos (LMTP has LHLO alone)."""

_ON_ACCEPT: Final[dict[type[Event], Callable[[ServerConnection, Any, Reply], bytes | None]]] = {
    Ehlo: ServerConnection._hello_accepted,
    Helo: ServerConnection._hello_accepted,
    Lhlo: ServerConnection._hello_accepted,
    Mail: ServerConnection._mail_accepted,
    Rcpt: ServerConnection._rcpt_accepted,
    Data: ServerConnection._start_content,
    Rset: ServerConnection._rset_accepted,
    StartTls: ServerConnection._starttls_accepted,
    Auth: ServerConnection._auth_accepted,
    AuthResponse: ServerConnection._auth_accepted,
    Xclient: ServerConnection._xclient_accepted,
    Xforward: ServerConnection._xforward_accepted,
}
"""Command type -> what a positive reply to it changes in the session."""
