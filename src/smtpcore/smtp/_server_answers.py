"""The application's answers in a server session: which are legal, and what they change.

:meth:`ServerConnection.send <smtpcore.smtp.ServerConnection.send>` writes the
everyday successes itself; every other answer comes here. It is checked against
the state and the pending event (a bad command gets 4xx or 5xx, a cancelled AUTH
501), moves the session by the command's rule (``smtp/_state.py``), and applies
what a positive reply changes, one method per command (:data:`_ON_ACCEPT`, each
in the layer of its concern). The top layer under
:class:`~smtpcore.smtp.ServerConnection` (see ``smtp/_server.py``): it reaches
into every other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from smtpcore._errors import LocalProtocolError
from smtpcore.smtp._events import (
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    Command,
    Data,
    Ehlo,
    Event,
    Helo,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Xclient,
    Xforward,
)
from smtpcore.smtp._replies import Reply
from smtpcore.smtp._server_auth import _AUTH_FAILURE_STATUS, _CREDENTIALS_INVALID, AuthLayer
from smtpcore.smtp._server_commands import CommandsLayer
from smtpcore.smtp._server_content import _CONTENT, ContentLayer
from smtpcore.smtp._server_forwarding import ForwardingLayer
from smtpcore.smtp._server_hello import HelloLayer
from smtpcore.smtp._server_session import _STATE_READY
from smtpcore.smtp._server_transaction import _MAIL_REFUSED, _TRANSACTION_STATES, TransactionLayer
from smtpcore.smtp._state import RULES, Rule, State

_OUTSIDE_SESSION: Final = frozenset({State.GREETING, State.CLOSED, State.ERROR})
"""States in which ``send`` answers no command: asked in one set lookup, so that the
answers to the end of a message and to a bad command compare with no member read
through its enum class."""
_FAST_RULES: Final[dict[type[object], Rule]] = {
    command: RULES[command] for command in (Mail, Rcpt, Data, Rset, Noop, Ehlo, Helo, Lhlo, Quit)
}
"""The commands :meth:`ServerConnection.send` answers without its general checks: each
is pending only after the machine checked it against its rule, and answering one
needs nothing but the rule (the hellos and QUIT: once a connection)."""


class AnswersLayer(CommandsLayer):
    """Checking an answer against the session, and applying it."""

    __slots__ = ()

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

    # What an accepted command changes, one method per command (see _ON_ACCEPT), each in
    # the layer of its concern: each returns the bytes of its answer when they are not
    # the plain ones (_finish's). STARTTLS's is here, next to the answers it follows.

    def _starttls_accepted(self, command: StartTls, event: Reply) -> bytes:
        data = self._finish(command, event)  # first: a reply too long changes nothing
        self._buffer.clear()  # plaintext pipelined behind STARTTLS: never read
        return data


_ON_ACCEPT: Final[dict[type[Event], Callable[[AnswersLayer, Any, Reply], bytes | None]]] = {
    Ehlo: HelloLayer._hello_accepted,
    Helo: HelloLayer._hello_accepted,
    Lhlo: HelloLayer._hello_accepted,
    Mail: TransactionLayer._mail_accepted,
    Rcpt: TransactionLayer._rcpt_accepted,
    Data: ContentLayer._start_content,
    Rset: TransactionLayer._rset_accepted,
    StartTls: AnswersLayer._starttls_accepted,
    Auth: AuthLayer._auth_accepted,
    AuthResponse: AuthLayer._auth_accepted,
    Xclient: ForwardingLayer._xclient_accepted,
    Xforward: ForwardingLayer._xforward_accepted,
}
"""Command type -> what a positive reply to it changes in the session."""
