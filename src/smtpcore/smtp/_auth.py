"""SMTP AUTH (RFC 4954): one SASL exchange between the machines and a mechanism.

The machines carry ``AUTH``, 334 challenges and the client's answers; the
:mod:`smtpcore.sasl` mechanisms know nothing of SMTP. These two small classes
translate between them, so that every server and client (the adapters, an
embedder's own loop) runs an exchange the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._words import ascii_upper
from smtpcore.sasl import (
    Challenge,
    ChannelBindings,
    ClientMechanism,
    Failure,
    SASLError,
    ServerMechanism,
    Step,
    Success,
    UnexpectedInitialResponse,
    needs_channel_binding,
)
from smtpcore.sasl._base_client import check_client_auth_arguments, take_initial_response
from smtpcore.smtp._commands import format_command
from smtpcore.smtp._events import Auth, AuthResponse, BadCommand
from smtpcore.smtp._replies import Reply
from smtpcore.smtp._state import State

if TYPE_CHECKING:
    from smtpcore.smtp._server import ServerConnection

__all__ = ["AuthenticationFailed", "ClientAuth", "ServerAuth"]

MechanismFactory = Callable[[], ServerMechanism]


class ServerAuth:
    """Answers the ``Auth`` and ``AuthResponse`` events of one server session.

    :meth:`answer` takes every event of an exchange, the ``BadCommand`` that
    ended one included, and gives the reply to send: the one call an event loop
    needs. :meth:`start`, :meth:`step` and :meth:`abandon` are its parts.

    ``mechanisms`` maps each mechanism name the server offers to a factory
    that builds a fresh :class:`~smtpcore.sasl.ServerMechanism` (one per
    ``AUTH`` command). After a 235, :attr:`success` holds the outcome with
    the authenticated identity; after a step the mechanism failed,
    :attr:`failure` holds its :class:`~smtpcore.sasl.Failure` (whose
    ``callback_error`` is the application's mistake, to log as such), and
    :attr:`failed_login` says whether it was a failed login to delay and log as
    one. A ``*``
    that cancels the exchange gets ``501`` (RFC 4954 §4): ``5.0.0`` with no
    :attr:`failure` when the mechanism had judged nothing, and ``5.7.8``, with
    the mechanism's :attr:`~smtpcore.sasl.ServerMechanism.refusal` as
    :attr:`failure`, when it had already refused the credentials: a failed
    authentication, which the machine counts toward ``max_auth_failures``.

    ``channel_bindings`` is the channel binding data of the session's TLS
    connection, by type (``{"tls-exporter": ...}``, RFC 9266), given to every
    mechanism (:meth:`~smtpcore.sasl.ServerMechanism.bind_channel`); without
    it a ``-PLUS`` mechanism is unrecognized (504), and the machine's
    ``auth_mechanisms`` should leave it out
    (:func:`~smtpcore.sasl.offered_mechanisms`). Build a new one after a
    handshake: the data belong to one TLS connection.
    """

    def __init__(
        self,
        mechanisms: Mapping[str, MechanismFactory],
        *,
        channel_bindings: ChannelBindings | None = None,
    ) -> None:
        self.mechanisms = {ascii_upper(name): factory for name, factory in mechanisms.items()}
        self.channel_bindings = dict(channel_bindings or {})
        self._plus_offered = bool(self.channel_bindings) and any(
            needs_channel_binding(name) for name in self.mechanisms
        )
        self.success: Success | None = None
        self.failure: Failure | None = None
        self._mechanism: ServerMechanism | None = None
        self._final_data_sent: Success | None = None

    @property
    def failed_login(self) -> bool:
        """Whether the last reply ended a failed login: the mechanism judged and
        refused the credentials (:attr:`smtpcore.sasl.Failure.failed_login`), which a
        server answers after its failure delay and logs for fail2ban. Not a refusal
        that judged none: an unknown mechanism, a temporary failure, an initial
        response to a server-first mechanism (``501 5.7.0``), a plain cancel, a line
        the machine refused before any credential was tried. POP3's
        :class:`~smtpcore.pop3.ServerAuth` says the same in the same name."""
        failure = self.failure
        return failure is not None and failure.failed_login

    @property
    def exchange_under_way(self) -> bool:
        """Whether an exchange has started and not ended: the machine reads the
        client's next line as its answer to a 334 (RFC 4954 §4), so a line it refuses
        then belongs to the AUTH exchange, whatever it says."""
        return self._mechanism is not None

    def answer(self, conn: ServerConnection, event: Auth | AuthResponse | BadCommand) -> Reply:
        """The reply to ``event``, which ``conn`` gave during an exchange: ``AUTH``
        (:meth:`start`), a line answering a 334 (:meth:`step`), or a ``BadCommand``,
        whose own reply stands once the exchange it may have ended is over here too,
        and counted on ``conn`` when it was a failed authentication. Before or after
        ``conn.send`` of the reply alike; either way, one call ends every exchange
        the machine ends, so that no refused credential escapes
        ``max_auth_failures``."""
        if isinstance(event, Auth):
            return self.start(event)
        if isinstance(event, AuthResponse):
            return self.step(event)
        if isinstance(event, BadCommand):
            return self._answer_bad_command(conn, event)
        raise LocalProtocolError(f"ServerAuth answers no {type(event).__name__}")

    def _answer_bad_command(self, conn: ServerConnection, bad: BadCommand) -> Reply:
        """The reply to a line ``conn`` refused: its own. One that ended the exchange
        (the machine left its AUTH state: not base64, over ``max_auth_line``, RFC
        4954 §4) ends it here too (:meth:`abandon`); after the mechanism had refused
        the credentials (a token's error challenge, RFC 7628 §3.2.2) the exchange was
        a failed authentication however it ended, so ``conn`` counts it toward
        ``max_auth_failures`` as a 535
        (:meth:`~smtpcore.smtp.ServerConnection.count_auth_failure`), unless the
        reply, already sent, ended the session (a ``421``): there is nothing left to
        count toward. A refusal that leaves the machine in its AUTH state ended no
        exchange."""
        state = conn.state
        if state is State.AUTH:
            self.failure = None
        elif self.abandon() is not None and state not in (State.CLOSED, State.ERROR):
            conn.count_auth_failure()
        return bad.reply

    def start(self, event: Auth) -> Reply:
        """The reply to ``AUTH mechanism [initial-response]``."""
        self.failure = None
        name = ascii_upper(event.mechanism)
        factory = self.mechanisms.get(name)
        if factory is None or (needs_channel_binding(name) and not self.channel_bindings):
            return Reply(504, "Unrecognized authentication type", "5.5.4")
        self._mechanism = factory()
        self._mechanism.bind_channel(self.channel_bindings, plus_offered=self._plus_offered)
        self._final_data_sent = None
        return self._reply(self._mechanism.start(event.initial_response))

    def step(self, event: AuthResponse) -> Reply:
        """The reply to a line answering a 334 challenge."""
        if self._mechanism is None:
            raise LocalProtocolError("no AUTH exchange is under way")
        self.failure = None
        if event.cancel:
            if self.abandon() is None:
                return Reply(501, "Authentication cancelled", "5.0.0")
            # RFC 4954 §4: a cancel gets 501, even one that follows the mechanism's
            # refusal (a token's error challenge, RFC 7628 §3.2.2); but the
            # credentials were judged invalid, which RFC 4954 §6's 5.7.8 says, and
            # the machine counts as a failed authentication.
            return Reply(501, "Authentication cancelled, credentials invalid", "5.7.8")
        if self._final_data_sent is not None:
            # RFC 4954 §4: success data went out in a 334; the answer is empty, and
            # anything else fails the exchange (as POP3's does).
            success, self._final_data_sent = self._final_data_sent, None
            if event.data:
                return self._reply(Failure("unexpected data after the success data"))
            return self._succeed(success)
        return self._reply(self._mechanism.step(event.data))

    def abandon(self) -> Failure | None:
        """End the exchange under way without a step: the client cancelled it (``*``),
        or the machine refused its answer to a 334 and so ended it (``BadCommand``: not
        base64, a line over ``max_auth_line``, RFC 4954 §4). What it gives, and leaves
        in :attr:`failure`, is the mechanism's
        :attr:`~smtpcore.sasl.ServerMechanism.refusal`: once credentials were judged
        and refused (a token's error challenge, RFC 7628 §3.2.2), the exchange was a
        failed authentication however it ends, to count as one
        (:meth:`~smtpcore.smtp.ServerConnection.count_auth_failure`). None when
        nothing was judged, or no exchange is under way."""
        mechanism, self._mechanism = self._mechanism, None
        self._final_data_sent = None
        self.failure = None if mechanism is None else mechanism.refusal
        return self.failure

    def _reply(self, step: Step) -> Reply:
        if isinstance(step, Challenge):
            return Reply.challenge(step.data)
        if isinstance(step, Failure):
            self._mechanism = None
            self.failure = step
            if isinstance(step, UnexpectedInitialResponse):
                # RFC 4954 §4: "MUST reject the AUTH command with a 501 reply", status
                # 5.7.0; no credential was tried, so the machine counts no failure.
                return Reply(501, "Client initiated Authentication Exchange", "5.7.0")
            if step.temporary:
                return Reply(454, "Temporary authentication failure", "4.7.0")
            return Reply(535, "Authentication credentials invalid", "5.7.8")
        if step.data is not None:
            self._final_data_sent = step
            return Reply.challenge(step.data)
        return self._succeed(step)

    def _succeed(self, success: Success) -> Reply:
        self.success = success
        self._mechanism = None
        return Reply(235, "Authentication successful", "2.7.0")


class AuthenticationFailed(RemoteProtocolError):
    """The server refused the credentials, could not prove itself (SCRAM), or
    reported success before the client had sent its part (RFC 4422 §3.6)."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class ClientAuth:
    """Drives one client mechanism through the client machine.

    Send :meth:`start`'s event; answer each 334 with :meth:`respond`; hand the
    final reply to :meth:`finish`, which raises :class:`AuthenticationFailed`
    unless the server accepted once the mechanism had sent its part and (for
    SCRAM) proved its own identity. Once
    :meth:`respond` has cancelled the exchange (``*``), a server that goes on
    gets :class:`AuthenticationFailed` from both: the cancel ended it (RFC 4954
    §4), whatever the server answers.

    ``max_line`` is the longest ``AUTH`` command line, CRLF included: RFC 5321's
    512 octets (§4.5.3.1.4), which RFC 4954 §4 holds the command to.
    """

    def __init__(self, mechanism: ClientMechanism, *, max_line: int = 512) -> None:
        check_client_auth_arguments(mechanism, max_line)
        self.mechanism = mechanism
        self.max_line = max_line
        self._cancel_error: SASLError | RemoteProtocolError | None = None

    @property
    def cancelled(self) -> str | None:
        """Why :meth:`respond` cancelled the exchange (the text of
        :attr:`cancel_error`), or None while it has not: what a client tells its
        user, since the server's 501 answers only the ``*``."""
        error = self._cancel_error
        return None if error is None else str(error)

    @property
    def cancel_error(self) -> SASLError | RemoteProtocolError | None:
        """The error that made :meth:`respond` cancel: the mechanism's
        :class:`~smtpcore.sasl.SASLError` (a SCRAM server that could not prove
        itself), or the ``RemoteProtocolError`` of a challenge that is not base64;
        None while it has not. A client chains it to the error it raises."""
        return self._cancel_error

    def start(self) -> Auth:
        """``AUTH`` with the initial response, if the mechanism has one and the line
        fits ``max_line``. RFC 4954 §4: a client "MUST NOT use the initial response
        parameter" when it would take the command over the line limit; the
        mechanism, told it was withheld, then gives it in answer to the server's
        empty 334 (the same §), which :meth:`respond` passes on, and refuses a 235
        that comes before it."""
        command = Auth(self.mechanism.name, take_initial_response(self.mechanism))
        if command.initial_response is not None and len(format_command(command)) > self.max_line:
            self.mechanism.withhold_initial_response()
            return Auth(command.mechanism)
        return command

    def respond(self, reply: Reply) -> AuthResponse:
        """The answer to a 334: the mechanism's response, or the ``*`` that cancels
        (RFC 4954 §4) when it cannot accept the challenge: one that is not base64,
        or one the mechanism refuses (:attr:`cancelled` says why)."""
        if self._cancel_error is not None:
            # RFC 4954 §4: the server answers "*" with 501, not another challenge.
            raise self._cancelled_exchange(reply) from self._cancel_error
        try:
            return AuthResponse(self.mechanism.respond(reply.challenge_data()))
        except (SASLError, RemoteProtocolError) as exc:
            self._cancel_error = exc
            return AuthResponse(cancel=True)

    def finish(self, reply: Reply) -> None:
        """Accept the final reply, or raise :class:`AuthenticationFailed`. After a
        cancel the error names the client's reason and chains :attr:`cancel_error`:
        the server's reply answers the ``*``, not the credentials."""
        if self._cancel_error is not None:
            raise self._cancelled_exchange(reply) from self._cancel_error
        if reply.code != 235:
            raise AuthenticationFailed(f"authentication refused: {reply}", reply)
        try:
            self.mechanism.verify_success(None)
        except SASLError as exc:
            message = f"the server's success proves nothing: {exc}"
            raise AuthenticationFailed(message, reply) from exc

    def _cancelled_exchange(self, reply: Reply) -> AuthenticationFailed:
        """The error for ``reply`` to an exchange :meth:`respond` cancelled (RFC 4954
        §4): a 501 refuses the ``*``, and a 235 or a 334 goes on with an exchange
        that is over, which proves nothing."""
        if reply.code == 235:
            what = "server accepted an exchange the client cancelled"
        elif reply.code == 334:
            what = "a challenge after the client cancelled"
        else:
            what = "authentication cancelled by the client"
        return AuthenticationFailed(f"{what} ({self.cancelled}): {reply}", reply)
