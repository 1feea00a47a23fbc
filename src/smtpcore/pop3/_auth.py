"""POP3 AUTH (RFC 5034): one SASL exchange between the machines and a mechanism.

The machines carry ``AUTH``, the ``+`` challenges and the client's answers; the
:mod:`smtpcore.sasl` mechanisms know nothing of POP3. These two small classes
translate between them, so that every server and client (the adapters, an
embedder's own loop) runs an exchange the same way, as
:class:`smtpcore.smtp.ServerAuth` and :class:`smtpcore.smtp.ClientAuth` do for SMTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, TypeAlias

from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._words import ascii_upper
from smtpcore.pop3._commands import format_command
from smtpcore.pop3._events import Auth, AuthResponse, BadCommand, Continue, Err, Ok
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
from smtpcore.sasl._base_checks import require_count
from smtpcore.sasl._base_client import check_client_auth_arguments, take_initial_response

__all__ = ["AuthAnswer", "AuthenticationFailed", "ClientAuth", "ServerAuth"]

MechanismFactory: TypeAlias = Callable[[], ServerMechanism]

AuthAnswer: TypeAlias = Continue | Ok | Err
"""What :class:`ServerAuth` answers a step with: the response to send."""

_LOGGED_IN: Final = Ok("Logged in")
_FAILED: Final = Err("Authentication failed", code="AUTH")
_TEMPORARY: Final = Err("Temporary authentication failure", code="SYS/TEMP")
_CANCELLED: Final = Err("Authentication cancelled")
_UNSUPPORTED: Final = Err("Unsupported authentication mechanism")


class ServerAuth:
    """Answers the ``Auth`` and ``AuthResponse`` events of one POP3 server session.

    ``mechanisms`` maps each mechanism name the server offers to a factory that
    builds a fresh :class:`~smtpcore.sasl.ServerMechanism` (one per ``AUTH``).
    :meth:`answer` takes every event of an exchange, the ``BadCommand`` that ended
    one included, and gives the response to send; it is :meth:`start`,
    :meth:`step` and :meth:`abandon`, which each say what the response was in
    three attributes, reset at each of them:

    * :attr:`success`: the client logged in as its ``authzid``. The response is
      ``+OK``; open the maildrop first, and send ``-ERR [IN-USE]`` in its place
      if it is locked (RFC 1939 §4, RFC 2449 §8.1.1).
    * :attr:`failed_login`: the mechanism judged and refused the credentials
      (``-ERR [AUTH]``, RFC 3206 §4): count it, delay it, log it.
    * :attr:`bad_command`: the client broke the exchange before any credential
      was tried (an initial response to a server-first mechanism, RFC 5034 §4):
      call :meth:`~smtpcore.pop3.ServerConnection.count_bad_command`.

    :attr:`failure` holds the mechanism's :class:`~smtpcore.sasl.Failure` after
    a step that failed; one whose ``callback_error`` is set is the application's
    own mistake (answered ``-ERR [SYS/TEMP]``, as a temporary failure is).

    Additional data with success (SCRAM's server-final message) cannot ride on
    POP3's ``+OK``: it goes out in a last ``+`` line, whose answer must be empty
    (RFC 5034 §4). Mechanism names are case-insensitive (RFC 4422 §3.1): the
    keys of ``mechanisms`` are kept upper case, as CAPA lists them.
    ``channel_bindings`` (the TLS layer's channel binding data, by type, RFC
    9266) go to every mechanism; without them a ``-PLUS`` mechanism is
    unsupported, as in SMTP (RFC 5802 §6). Set both attributes anew after a
    handshake. What a mechanism or its callables raise comes out of
    :meth:`start` and :meth:`step`, for the caller to answer as its own failure.
    """

    def __init__(
        self,
        mechanisms: Mapping[str, MechanismFactory],
        *,
        channel_bindings: ChannelBindings | None = None,
    ) -> None:
        self.mechanisms = {ascii_upper(name): factory for name, factory in mechanisms.items()}
        self.channel_bindings = dict(channel_bindings or {})
        self.mechanism = ""
        """The mechanism of the exchange under way, or of the last one."""
        self.success: Success | None = None
        self.failure: Failure | None = None
        self._under_way: ServerMechanism | None = None
        self._final: Success | None = None

    @property
    def failed_login(self) -> bool:
        """Whether the last step ended a failed login: credentials judged and refused,
        not a temporary failure, nor a client that broke the exchange first
        (:attr:`smtpcore.sasl.Failure.failed_login`)."""
        failure = self.failure
        return failure is not None and failure.failed_login

    @property
    def exchange_under_way(self) -> bool:
        """Whether an exchange has started and not ended: the machine reads the client's
        next line as its answer to a ``+`` challenge (RFC 5034 §4), so a line it refuses
        then belongs to the AUTH exchange, whatever it says. As
        :attr:`smtpcore.smtp.ServerAuth.exchange_under_way`."""
        return self._under_way is not None or self._final is not None

    @property
    def bad_command(self) -> bool:
        """Whether the last step refused a client that broke the exchange before any
        credential was tried (RFC 5034 §4): a bad command, not a failed login."""
        return isinstance(self.failure, UnexpectedInitialResponse)

    def answer(self, event: Auth | AuthResponse | BadCommand) -> AuthAnswer:
        """The response to ``event``, which the machine gave during an exchange:
        ``AUTH`` (:meth:`start`), a line answering a ``+`` challenge (:meth:`step`), or
        a ``BadCommand``, whose own ``-ERR`` stands once the exchange it ended (RFC
        5034 §4) is over here too (:meth:`abandon`): so the flags count a refused
        token's exchange as the failed login it was (RFC 7628 §3.2.2), however it
        ended. The one call an event loop needs; count what the flags say after
        sending the response. Every ``BadCommand`` resets the flags, one outside an
        exchange too (``success`` included: read a login's name when it succeeds), so
        that they never tell an earlier failure twice."""
        if isinstance(event, Auth):
            return self.start(event)
        if isinstance(event, AuthResponse):
            return self.step(event)
        if isinstance(event, BadCommand):
            self.abandon()
            return event.response
        raise LocalProtocolError(f"ServerAuth answers no {type(event).__name__}")

    def start(self, event: Auth) -> AuthAnswer:
        """The response to ``AUTH mechanism [initial-response]``."""
        self.success = self.failure = None
        self._under_way = self._final = None
        name = ascii_upper(event.mechanism)
        factory = self.mechanisms.get(name)
        if factory is None or (needs_channel_binding(name) and not self.channel_bindings):
            return _UNSUPPORTED
        self.mechanism = name
        mechanism = factory()
        bindings = self.channel_bindings
        plus_offered = bool(bindings) and any(map(needs_channel_binding, self.mechanisms))
        mechanism.bind_channel(bindings, plus_offered=plus_offered)
        self._under_way = mechanism
        return self._answer(mechanism.start(event.initial_response))

    def step(self, event: AuthResponse) -> AuthAnswer:
        """The response to a line that answers a ``+`` challenge. RFC 5034 §4: ``*``
        gets ``-ERR``; after the mechanism refused the credentials (a bearer token's
        error challenge, RFC 7628 §3.2.2) that ``-ERR`` ends a failed login."""
        self.success = self.failure = None
        mechanism = self._under_way
        if event.cancel or mechanism is None:
            return _CANCELLED if self.abandon() is None else _FAILED
        final, self._final = self._final, None
        if final is not None:
            return self._answer(final if not event.data else Failure("unexpected data"))
        return self._answer(mechanism.step(event.data))

    def abandon(self) -> Failure | None:
        """End the exchange under way without a step: the client cancelled it (``*``),
        or the machine could not read its answer (a ``BadCommand``: not base64, too
        long, RFC 5034 §4). Gives, and leaves in :attr:`failure`, the mechanism's
        :attr:`~smtpcore.sasl.ServerMechanism.refusal`: once it judged and refused
        the credentials (RFC 7628 §3.2.2) the exchange was a failed login however it
        ends, so answer the ``BadCommand`` and count the :attr:`failed_login` the
        flags now say. None when nothing was judged, or no exchange is under way;
        either way the flags describe this abandonment, not an earlier step."""
        mechanism, self._under_way, self._final = self._under_way, None, None
        self.success = None
        self.failure = None if mechanism is None else mechanism.refusal
        return self.failure

    def _answer(self, step: Step) -> AuthAnswer:
        if isinstance(step, Challenge):
            return Continue(step.data)
        if isinstance(step, Success) and step.data is not None:
            self._final = Success(step.authzid, step.authcid)
            return Continue(step.data)
        self._under_way = None
        if isinstance(step, Success):
            self.success = step
            return _LOGGED_IN
        self.failure = step
        if isinstance(step, UnexpectedInitialResponse):
            return Err(f"{self.mechanism} takes no initial response")
        return _TEMPORARY if step.temporary else _FAILED


class AuthenticationFailed(RemoteProtocolError):
    """The server refused the credentials, could not prove itself (SCRAM), or
    reported success before the client had sent its part (RFC 4422 §3.6);
    ``response`` is the server's final response, if any."""

    def __init__(self, message: str, response: Ok | Err | Continue | None = None) -> None:
        super().__init__(message)
        self.response = response


class ClientAuth:
    """Drives one client mechanism through the POP3 client machine.

    Send :meth:`start`'s event; answer each ``Continue`` with :meth:`respond`;
    hand the final ``Ok`` or ``Err`` to :meth:`finish`, which raises
    :class:`AuthenticationFailed` unless the server accepted once the mechanism
    had sent its part and (for SCRAM) proved its own identity. Once :meth:`respond`
    has cancelled the exchange (``*``), the exchange is over (RFC 5034 §4):
    :meth:`finish` and a later :meth:`respond` raise, chaining :attr:`cancel_error`.

    ``max_line`` is the longest ``AUTH`` command line, CRLF included: 255
    octets (RFC 2449 §4), which RFC 5034 §4 holds the command to.
    ``max_auth_line`` is the longest answer line to a challenge, CRLF included: the
    client machine's ``max_auth_line`` (12288 octets by default), which a client
    passes on when it built its machine with another; at least 3, that the ``*``
    which cancels fits (:class:`~smtpcore.LocalProtocolError` otherwise).
    """

    def __init__(
        self, mechanism: ClientMechanism, *, max_line: int = 255, max_auth_line: int = 12288
    ) -> None:
        check_client_auth_arguments(mechanism, max_line)
        # The "*" that cancels an answer too long must fit, or no answer could go.
        require_count(max_auth_line, "ClientAuth's max_auth_line", len(b"*\r\n"))
        self.mechanism = mechanism
        self.max_line = max_line
        self.max_auth_line = max_auth_line
        self._cancel_error: SASLError | None = None

    @property
    def cancelled(self) -> str | None:
        """Why :meth:`respond` cancelled the exchange, or None while it has not: what
        a client tells its user, since the server's ``-ERR`` answers only the ``*``."""
        error = self._cancel_error
        return None if error is None else str(error)

    @property
    def cancel_error(self) -> SASLError | None:
        """The mechanism's :class:`~smtpcore.sasl.SASLError` that made :meth:`respond`
        cancel (a SCRAM server that could not prove itself); None while it has not."""
        return self._cancel_error

    def start(self) -> Auth:
        """``AUTH`` with the initial response, if the mechanism has one and the line
        fits ``max_line``; otherwise the mechanism, told it was withheld, gives it in
        answer to the server's empty challenge, which :meth:`respond` passes on (RFC
        5034 §4), and refuses a ``+OK`` that comes before it."""
        command = Auth(self.mechanism.name, take_initial_response(self.mechanism))
        if command.initial_response is not None and len(format_command(command)) > self.max_line:
            self.mechanism.withhold_initial_response()
            return Auth(command.mechanism)
        return command

    def respond(self, response: Continue) -> AuthResponse:
        """The answer to a ``+`` challenge: the mechanism's response, or the ``*``
        that cancels (RFC 5034 §4) when the mechanism refuses the challenge, or when
        the challenge makes the answer longer than ``max_auth_line`` (a SCRAM nonce
        of 9,000 octets, which the answer repeats): that is the server's doing, and
        the machine would refuse the line as the caller's mistake."""
        if self._cancel_error is not None:
            raise self._cancelled_exchange(response) from self._cancel_error
        try:
            data = self.mechanism.respond(response.data)
        except SASLError as exc:
            self._cancel_error = exc
            return AuthResponse(cancel=True)
        # format_command's length (base64 and CRLF), reckoned: formatting the answer
        # here would cost two Python calls per challenge (test_pop3_auth holds the two
        # equal).
        line = (len(data) + 2) // 3 * 4 + 2
        if line > self.max_auth_line:
            self._cancel_error = SASLError(
                f"{self.mechanism.name} answer to the server's challenge would be a line"
                f" of {line} octets, over the {self.max_auth_line} an AUTH response may have"
            )
            return AuthResponse(cancel=True)
        return AuthResponse(data)

    def finish(self, response: Ok | Err) -> None:
        """Accept the final response, or raise :class:`AuthenticationFailed`."""
        if self._cancel_error is not None:
            raise self._cancelled_exchange(response) from self._cancel_error
        if isinstance(response, Err):
            raise AuthenticationFailed(f"authentication refused: {_shown(response)}", response)
        try:
            self.mechanism.verify_success(None)
        except SASLError as exc:
            message = f"the server's success proves nothing: {exc}"
            raise AuthenticationFailed(message, response) from exc

    def _cancelled_exchange(self, response: Ok | Err | Continue) -> AuthenticationFailed:
        if isinstance(response, Ok):
            what = "server accepted an exchange the client cancelled"
        elif isinstance(response, Continue):
            what = "a challenge after the client cancelled"
        else:
            what = "authentication cancelled by the client"
        return AuthenticationFailed(f"{what} ({self.cancelled}): {_shown(response)}", response)


def _shown(response: Ok | Err | Continue) -> str:
    return response.to_bytes().decode("utf-8", "replace").strip()
