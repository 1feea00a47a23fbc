"""Command lines in a server session: read, parsed, then refused or held for an answer.

A line is read within its limit (``max_command_line`` and what the extensions
in force add, ``max_auth_line`` during AUTH), parsed (``smtp/_commands.py``),
and taken: refused here as a :class:`~smtpcore.smtp.BadCommand` carrying its
reply (unknown, out of sequence, refused by its own check, past a limit), or
left pending for the application to answer. This layer of
:class:`~smtpcore.smtp.ServerConnection` (see ``smtp/_server.py``) counts what
those limits count: errors, unknown commands, junk commands and excess
recipients. :meth:`ServerConnection.next_event
<smtpcore.smtp.ServerConnection.next_event>` reads the everyday lines itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final, NoReturn

from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._lines import LINE_TOO_LONG
from smtpcore._sentinels import NEED_DATA, NoEvent
from smtpcore._words import ascii_upper
from smtpcore.smtp._commands import (
    CommandSyntaxError,
    chunk_after,
    parse_auth_response,
    parse_command_line,
    parse_everyday_line,
    parse_hello_line,
    reply,
    starts_bdat,
)
from smtpcore.smtp._events import (
    Auth,
    BadCommand,
    Bdat,
    Command,
    Data,
    Ehlo,
    Event,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    Noop,
    Rcpt,
    Rset,
    Vrfy,
)
from smtpcore.smtp._ext import BUILTIN
from smtpcore.smtp._replies import Reply, printable_ascii
from smtpcore.smtp._server_auth import AuthLayer
from smtpcore.smtp._server_content import ContentLayer
from smtpcore.smtp._server_session import _STATE_AUTH, _STATE_READY
from smtpcore.smtp._server_transaction import (
    _MAIL_REFUSED,
    _TOO_MANY_RECIPIENTS,
    _TRANSACTION_STATES,
    TransactionLayer,
)
from smtpcore.smtp._state import RULES, State

_AUTH_LINE: Final = re.compile(rb"[ \t]*AUTH", re.IGNORECASE)
"""A line that starts as AUTH, whose initial response may be the password (RFC 4954
§4; a space left out after the verb included)."""
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
_NEED_MAIL: Final = reply(503, "5.5.1", "Need MAIL command")
_IN_TRANSACTION: Final = reply(503, "5.5.1", "Mail transaction in progress")
"""What a command out of its place gets while a transaction is open (STARTTLS, say)."""
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


_Check = Callable[[TransactionLayer, Any, bytes], Reply | None]
_CHECKS: Final[dict[type[Command], _Check]] = {
    Mail: TransactionLayer._check_mail,
    Rcpt: TransactionLayer._check_rcpt,
    Data: TransactionLayer._check_data,
    Auth: AuthLayer._check_auth,
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


class CommandsLayer(ContentLayer):
    """Reading command lines, and taking or refusing the commands they hold."""

    __slots__ = ()

    # Rarely used state: class attributes until a session sets its own (SessionLayer).
    _bad_commands = 0

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
