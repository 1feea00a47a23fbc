"""What every SASL mechanism shares: the server's steps, the two base classes, errors.

A mechanism here is one exchange of RFC 4422 §3: the client side turns
challenges into responses, the server side turns responses into the next
:class:`Challenge` or an outcome. Payloads are raw octets; the base64 layer of
SMTP AUTH (RFC 4954 §4) and POP3 AUTH (RFC 5034 §4) belongs to the protocol
machines, and so does the ``*`` that cancels an exchange.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, TypeAlias, TypeVar

from smtpcore._errors import LocalProtocolError, ProtocolError, wrong_type
from smtpcore.sasl._saslprep import saslprep_login

__all__ = [
    "DEFAULT_MAX_RESPONSE_SIZE",
    "Authorize",
    "Challenge",
    "ClientMechanism",
    "CredentialsUnavailable",
    "Failure",
    "SASLError",
    "ServerMechanism",
    "Step",
    "Success",
    "UnexpectedInitialResponse",
]

DEFAULT_MAX_RESPONSE_SIZE: Final = 12288
"""Octets a server accepts in one decoded response: RFC 4954 §4 deems a line
of 12288 octets sufficient for the authentication mechanisms deployed."""

_PAYLOAD: Final = "bytes (base64 is the protocol machine's job)"
"""What every SASL payload must be, a challenge or a response, in the error for
one that is not."""

Authorize: TypeAlias = Callable[[str, str], bool]
"""``authorize(authzid, authcid)``: may ``authcid`` act as someone else? Only
``True`` says yes."""


class SASLError(ProtocolError):
    """The server's side of the exchange is malformed or cannot be verified.

    Raised by client mechanisms only. The protocol machine should cancel the
    exchange (``*`` in SMTP and POP3, RFC 4954 §4) and must not treat the
    session as authenticated.
    """


class CredentialsUnavailable(Exception):
    """Raise it from a credential callback when the credential store is down.

    The server mechanism turns it into ``Failure(..., temporary=True)``, which
    SMTP answers with 454 4.7.0 (RFC 4954 §6) instead of a permanent 535.
    """


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``data`` to the client and feed its answer to ``step()``."""

    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise wrong_type("Challenge.data", self.data, _PAYLOAD)


@dataclass(frozen=True, slots=True)
class Success:
    """The client authenticated as ``authcid`` and acts as ``authzid``.

    ``data`` is the mechanism's additional data with success (RFC 4422),
    for example SCRAM's server-final message: it must reach the client, in a
    last 334 challenge answered by an empty response or, where the protocol
    allows, with the success reply.
    """

    authzid: str
    authcid: str
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """The exchange failed; ``temporary`` when retrying later may help.

    ``callback_error`` when the application's credential callback broke its
    contract (a ``check_password`` that gave no bool, a ``get_password`` that gave
    no str: an ``async def`` one gives a coroutine), so that no credential was
    judged: the mechanisms make it temporary too. A server logs it as the
    application's error and answers as it does a callback that raised (SMTP
    ``454 4.7.0``), never as the client's wrong password, which a failed-login
    limit or fail2ban counts.
    """

    reason: str
    temporary: bool = False
    callback_error: bool = False
    named: str | None = dataclasses.field(default=None, compare=False)
    """The identity the client named before the exchange failed, as it sent it, or
    None when it named none (:attr:`ServerMechanism.named`): unproven client text,
    for a failed login's log line, which must escape it. Not part of the verdict,
    so not compared."""
    no_secret: bool = dataclasses.field(default=False, compare=False)
    """The credential lookup had no secret this mechanism can use for :attr:`named`
    (CRAM-MD5: ``get_password`` gave None): an unknown user, or one whose secret is
    SCRAM keys, whom no password could have logged in. The client is answered as
    for a wrong password; a server that knows the user exists logs the attempt as
    impossible rather than as a guess. Not compared either."""

    @property
    def failed_login(self) -> bool:
        """Whether a server takes this failure for a failed login: counts it toward its
        limit, answers after its failure delay and logs it in the line fail2ban bans
        (SMTP's 5.7.8, RFC 4954 §6; POP3's ``[AUTH]``, RFC 3206 §4). True for every
        failure that is not temporary: credentials judged and refused, and also a
        response too malformed for anything to be judged (no NUL in PLAIN's, a
        CRAM-MD5 answer with no digest), for a guesser must not get a faster answer
        by sending one: the safe side. False for a temporary failure or a callback's
        error, which judged nothing, and for an :class:`UnexpectedInitialResponse`,
        which tried nothing."""
        return not (self.temporary or self.callback_error)


@dataclass(frozen=True, slots=True)
class UnexpectedInitialResponse(Failure):
    """The client sent an initial response to a server-first mechanism (CRAM-MD5).

    The exchange is over, as with any :class:`Failure`, but no credential was
    tried: it is the client's protocol error, not a failed login. SMTP answers
    it with 501 (RFC 4954 §4), POP3 with ``-ERR`` (RFC 5034 §4), and neither
    counts it toward the failed authentications a session may make.
    """

    @property
    def failed_login(self) -> bool:
        """False: no credential was tried (see :attr:`Failure.failed_login`)."""
        return False


Step: TypeAlias = Challenge | Success | Failure
"""What a server mechanism answers to ``start()`` and ``step()``."""


class _Reject(Exception):
    """Raised inside a server mechanism to end the exchange with a Failure."""


class _CallbackError(Exception):
    """Raised inside a server mechanism when a callback broke its contract: the
    exchange ends with a Failure that says so (``callback_error``)."""


class _Progress(enum.Enum):
    FRESH = "fresh"
    RUNNING = "running"
    DONE = "done"


class _ClientStage(enum.Enum):
    """Where a client exchange stands with its initial response (RFC 4954 §4): taken
    with the command, withheld from it, or past it (a challenge answered). A value
    words the stage for the error of a withholding out of turn."""

    START = "before it was taken"
    TAKEN = "after it was taken"
    WITHHELD = "after it was withheld"
    ANSWERING = "after a challenge was answered"


def _require_true(verdict: object, callback: str, refusal: str) -> None:
    """Go on only if a callback's verdict is ``True``; ``False`` ends the exchange
    with ``refusal``, and a verdict that is not a bool (``"no"``, ``None``, a
    coroutine) as the callback's mistake: a mistake must never let anyone in."""
    if verdict is not True:
        if verdict is not False:
            raise _CallbackError(f"{callback} gave {type(verdict).__name__}, not a bool")
        raise _Reject(refusal)


_Found = TypeVar("_Found")


def _require_found(found: object, kind: type[_Found], callback: str) -> _Found | None:
    """A lookup callback's result (``get_password``'s str, ``get_credentials``'s keys),
    or None for an unknown user; a result of any other type (a password as bytes, the
    coroutine an ``async def`` lookup gives) is the callback's mistake, as a verdict
    that is not a bool is in :func:`_require_true`: nothing the mechanism could use."""
    if found is None or isinstance(found, kind):
        return found
    raise _CallbackError(f"{callback} gave {type(found).__name__}, not {kind.__name__} or None")


def decode_utf8(data: bytes, what: str) -> str:
    """UTF-8 (RFC 3629) as SASL mechanisms require: no surrogates, no overlongs."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject(f"{what} is not valid UTF-8") from None


def require_str(value: object, what: str) -> str:
    """``value``, a credential or option given to a mechanism, if it is a str;
    anything else is the application's misuse, a ``LocalProtocolError`` worded as every
    public constructor words it (:func:`~smtpcore._errors.wrong_type`), before the
    ``TypeError`` a regex or ``in`` would meet further in."""
    if not isinstance(value, str):
        raise wrong_type(what, value, "a str")
    return value


def require_count(value: object, what: str, least: int, most: int | None = None) -> int:
    """``value``, a numeric option given to a mechanism, if it is an int from ``least``
    (to ``most``); anything else is the application's misuse, a ``LocalProtocolError``
    as for a value of the wrong type, when the mechanism is built: an iteration count of
    0 or a response size of -1 means nothing the protocol can carry out."""
    if not isinstance(value, int) or isinstance(value, bool):  # True is no count
        raise wrong_type(what, value, "an int")
    if value < least or (most is not None and value > most):
        bounds = f"at least {least}" if most is None else f"from {least} to {most}"
        raise LocalProtocolError(f"{what} must be {bounds}, not {value}")
    return value


def encode_utf8(text: str, what: str) -> bytes:
    """Encode a credential given to a client; a value that is no str, or holds a lone
    surrogate, is the caller's mistake (``LocalProtocolError``)."""
    if not isinstance(text, str):  # require_str's check, one call fewer per credential
        raise wrong_type(what, text, "a str")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{what} cannot be encoded in UTF-8") from None


def prepare_identity(name: str, what: str) -> str:
    """SASLprep a user name the client sent, as a query (RFC 4013; RFC 3454 §7:
    unassigned code points allowed), so that every way of typing it names one user
    (RFC 5802 §5.1, RFC 4616 §2); without the bidirectional rule, which would refuse
    every address with a right-to-left local part; and the domain of an address left
    as it is (:func:`~smtpcore.sasl.saslprep_login`: SASLprep would drop
    the joiner that tells one IDNA domain from another). Refused (a control or private-use
    character), or left empty, it fails the exchange, as RFC 4616 §2 says ("If
    preparation fails or results in an empty string, verification SHALL fail")."""
    try:
        prepared = saslprep_login(name)
    except ValueError as exc:
        raise _Reject(f"{what} refused by SASLprep: {exc}") from None
    if not prepared:
        raise _Reject(f"{what} is empty after SASLprep")
    return prepared


def escape_saslname(name: str) -> str:
    """RFC 5802 §5.1 / RFC 5801 §4 saslname: "=" as "=3D", "," as "=2C"."""
    return name.replace("=", "=3D").replace(",", "=2C")


def unescape_saslname(value: str) -> str | None:
    """Undo :func:`escape_saslname`; ``None`` for any other "=" or for a NUL."""
    head, *rest = value.split("=")
    parts = [head]
    for part in rest:
        if part.startswith("2C"):
            parts.append("," + part[2:])
        elif part.startswith("3D"):
            parts.append("=" + part[2:])
        else:
            return None
    name = "".join(parts)
    return None if "\x00" in name else name


def default_authorize(authzid: str, authcid: str) -> bool:
    """Nobody may act as somebody else unless the application says so."""
    return authzid == authcid


class ServerMechanism(abc.ABC):
    """The server side of one exchange: create one instance per AUTH command.

    ``start()`` takes the client's initial response (``None`` when the client
    sent none), ``step()`` each later response. Both return a :data:`Step`;
    after a :class:`Success` or :class:`Failure` the exchange is over. Any
    malformed or oversized response is a :class:`Failure`, never an exception.

    ``authorize(authzid, authcid)`` decides whether a client that proved it
    is ``authcid`` may act as a different ``authzid``; by default it may not.
    An empty authzid always means "myself" (RFC 4422 §3.4.1).
    """

    name: ClassVar[str]
    """The IANA SASL mechanism name."""
    plaintext: ClassVar[bool] = False
    """True when the mechanism shows the password itself to the server."""
    requires_tls: ClassVar[bool] = False
    """True when an eavesdropper could reuse what is sent, so the mechanism
    is to be offered only over TLS (RFC 4616 §5, RFC 7628 §5)."""
    server_first: ClassVar[bool] = False
    """True when the server sends the first challenge (RFC 4422 §5): :meth:`start`
    answers an initial response with :class:`UnexpectedInitialResponse`."""

    def __init__(
        self,
        *,
        authorize: Authorize | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        require_count(max_response_size, "max_response_size", 1)
        self._authorize: Authorize = authorize or default_authorize
        self.max_response_size: Final = max_response_size
        self._progress = _Progress.FRESH
        self._channel_bindings: Mapping[str, bytes] = {}
        self._plus_offered = False
        self._named: str | None = None
        self._no_secret = False
        self._refusal: Failure | None = None

    @property
    def refusal(self) -> Failure | None:
        """The :class:`Failure` the exchange ends in once the mechanism has judged and
        refused the client's credentials but still waits on an answer its protocol
        asks for (a bearer token's error challenge, RFC 7628 §3.2.2); None until then,
        and in every mechanism that fails at once. A ``*`` that cancels the exchange
        then (RFC 4954 §4, RFC 5034 §4) is still a failed authentication: the protocol
        bridge reports this failure, not a cancel that judged nothing."""
        return self._refusal

    @property
    def named(self) -> str | None:
        """The identity the client's responses named so far (PLAIN's and CRAM-MD5's
        authcid, LOGIN's and SCRAM's user name, the OAuth user), as sent; None until
        one is read. Unproven: a :class:`Failure` carries it for the log line that
        tells the operator who was tried, as Dovecot's ``user=`` does."""
        return self._named

    def bind_channel(self, bindings: Mapping[str, bytes], *, plus_offered: bool) -> None:
        """Tell the mechanism about the session's channel, before :meth:`start`.

        ``bindings`` is the channel binding data the session's TLS layer
        gives, by type (RFC 5056; ``{"tls-exporter": ...}``, RFC 9266), and
        ``plus_offered`` whether the server advertised a ``-PLUS`` mechanism
        on this session. A ``-PLUS`` mechanism checks the client's binding
        against this data; the plain SCRAM mechanism refuses a client that
        says it could bind but saw no ``-PLUS`` when one was offered (a
        downgrade, RFC 5802 §6). Without a call the session has no binding.
        """
        if self._progress is not _Progress.FRESH:
            raise LocalProtocolError(f"{self.name}: bind the channel before the exchange starts")
        if not isinstance(bindings, Mapping):
            raise wrong_type("channel bindings", bindings, "a mapping")
        for kind, data in bindings.items():
            if not isinstance(kind, str):
                raise wrong_type("a channel binding type", kind, "a str")
            if not isinstance(data, bytes):
                raise wrong_type(f"channel binding {kind!r}", data, "bytes")
            if not data:
                raise LocalProtocolError(f"channel binding {kind!r} is empty")
        if not isinstance(plus_offered, bool):
            raise wrong_type("plus_offered", plus_offered, "a bool")
        self._channel_bindings = dict(bindings)
        self._plus_offered = plus_offered

    @property
    def done(self) -> bool:
        """True once the exchange has ended in a Success or a Failure."""
        return self._progress is _Progress.DONE

    def start(self, initial_response: bytes | None) -> Step:
        """Begin the exchange, with the initial response if any (RFC 4954 §4)."""
        if self._progress is not _Progress.FRESH:
            raise LocalProtocolError(f"{self.name} exchange already started")
        if initial_response is not None:
            _check_bytes(initial_response, f"{self.name} initial response")
            if self.server_first:
                self._progress = _Progress.DONE
                return UnexpectedInitialResponse(f"{self.name} takes no initial response")
        self._progress = _Progress.RUNNING
        return self._run(initial_response, lambda: self._start(initial_response))

    def step(self, response: bytes) -> Step:
        """Feed the client's response to the last :class:`Challenge`."""
        if self._progress is _Progress.FRESH:
            raise LocalProtocolError(f"{self.name} exchange not started")
        if self._progress is _Progress.DONE:
            raise LocalProtocolError(f"{self.name} exchange already finished")
        _check_bytes(response, f"{self.name} response")
        return self._run(response, lambda: self._step(response))

    def _run(self, data: bytes | None, handler: Callable[[], Step]) -> Step:
        result: Step
        if data is not None and len(data) > self.max_response_size:
            result = Failure(f"response longer than {self.max_response_size} octets")
        else:
            try:
                result = handler()
            except _Reject as exc:
                result = Failure(str(exc))
            except _CallbackError as exc:
                result = Failure(str(exc), temporary=True, callback_error=True)
            except CredentialsUnavailable as exc:
                result = Failure(str(exc) or "credentials unavailable", temporary=True)
        if isinstance(result, Failure) and result.named is None and self._named is not None:
            result = dataclasses.replace(result, named=self._named, no_secret=self._no_secret)
        if not isinstance(result, Challenge):
            self._progress = _Progress.DONE
        return result

    def _succeed(self, authzid: str, authcid: str, data: bytes | None = None) -> Success:
        """Apply the authorization rule once the client has proved ``authcid``."""
        if authzid and authzid != authcid:
            verdict = self._authorize(authzid, authcid)
            _require_true(verdict, "authorize", f"{authcid!r} may not act as {authzid!r}")
        return Success(authzid or authcid, authcid, data)

    @abc.abstractmethod
    def _start(self, initial_response: bytes | None) -> Step: ...

    @abc.abstractmethod
    def _step(self, response: bytes) -> Step: ...


def _check_bytes(data: object, what: str) -> None:
    """A payload given to a server mechanism must be bytes; the client's checks, inline
    on its hot path, word it alike."""
    if not isinstance(data, bytes):
        raise wrong_type(what, data, _PAYLOAD)


class ClientMechanism(abc.ABC):
    """The client side of one exchange: create one instance per AUTH command.

    Send ``initial_response()`` with the command when it is not ``None`` (and
    fits the line; if not, call ``withhold_initial_response()``), answer each
    server challenge with ``respond()``, and when the server reports success
    call ``verify_success()`` with the additional data, if any: only then is
    the client authenticated (``complete``). ``verify_success()`` raises
    :class:`SASLError` for a success that comes before the client has sent its
    part (RFC 4422 §3.6: an exchange the mechanism has not completed is no
    success), and, for a mechanism that authenticates the server (SCRAM), if
    the server never proved itself.
    """

    name: ClassVar[str]
    """The IANA SASL mechanism name."""
    plaintext: ClassVar[bool] = False
    """True when the mechanism shows the password itself to the server."""
    requires_tls: ClassVar[bool] = False
    """True when an eavesdropper could reuse what is sent: use it only over TLS."""

    _initial_part: ClassVar[str | None] = None
    """What the initial response carries, when it is the client's whole part
    (PLAIN's credentials, a bearer token): owed until it is taken, and again when it
    is withheld."""
    _first_response: bytes | None = None
    """What :meth:`initial_response` gives: a mechanism with one sets it in its
    constructor."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Count what an override of :meth:`initial_response` gives: see
        :func:`_counting`."""
        super().__init_subclass__(**kwargs)
        override = cls.__dict__.get("initial_response")
        if inspect.isfunction(override):
            counting = _counting(override)
            cls.initial_response = counting  # type: ignore[method-assign, assignment]

    def __init__(self) -> None:
        self._complete = False
        self._failed = False
        self._stage = _ClientStage.START
        self._owed: str | None = self._initial_part
        """What the client has still to send before a success can be its own (``"its
        password"``), or None once its part is sent: a mechanism keeps it as it goes."""

    @property
    def complete(self) -> bool:
        """True once ``verify_success()`` has accepted the server's success."""
        return self._complete

    def initial_response(self) -> bytes | None:
        """The initial response (RFC 4954 §4), or ``None`` if there is none.

        Calling it counts the response as sent with the command. If the command
        goes without it (the line would be too long), call
        :meth:`withhold_initial_response`: the server's empty challenge then
        makes ``respond(b"")`` return it. So must a loop that takes it only to
        look at it (its length, say) and then sends a bare ``AUTH``: otherwise a
        server's success to that bare command would be taken for one after the
        credentials. Only the first call, before any challenge, counts: a later
        one gives the same bytes and leaves owed what is owed. A subclass may
        override it, calling ``super().initial_response()`` or not: what the
        override gives is counted as it returns, by whoever calls it (a None as
        nothing sent), and after a withhold answers the empty challenge.
        """
        response = self._first_response
        stage = self._stage
        if stage is _ClientStage.START or stage is _ClientStage.TAKEN:  # _count_taken's
            self._stage = _ClientStage.TAKEN  # count, inline: one call fewer per AUTH
            if self._initial_part is not None:
                self._owed = None if response is not None else self._initial_part
        return response

    def withhold_initial_response(self) -> None:
        """Say that the command went without :meth:`initial_response`'s bytes.

        Call it before answering any challenge or success; after one it is
        :class:`~smtpcore.LocalProtocolError`, for then it could only mark as owed
        what was sent. A mechanism whose whole part is the initial response (PLAIN,
        the bearer tokens) then owes it again, so that a server's success to the
        bare ``AUTH PLAIN``, before the credentials, is refused by
        :meth:`verify_success` as any early success is (RFC 4422 §3.6). Before the
        response was taken nothing was sent: what is owed stays owed.
        """
        self._check_usable()
        stage = self._stage
        if stage is _ClientStage.ANSWERING:
            raise LocalProtocolError(f"{self.name} initial response withheld {stage.value}")
        self._stage = _ClientStage.WITHHELD
        if stage is _ClientStage.TAKEN and self._initial_part is not None:
            # Only what the take marked sent is owed again: LOGIN's password and
            # CRAM-MD5's digest, owed all along, must stay so.
            self._owed = self._initial_part

    def respond(self, challenge: bytes) -> bytes:
        """The response to a server challenge; :class:`SASLError` if it is bad."""
        if not isinstance(challenge, bytes):
            raise wrong_type("a SASL challenge", challenge, _PAYLOAD)  # _check_bytes inline
        self._check_usable()
        try:
            response = self._respond(challenge)
        except SASLError:
            self._failed = True
            raise
        self._stage = _ClientStage.ANSWERING
        return response

    def verify_success(self, data: bytes | None = None) -> None:
        """Accept the server's success, checking its additional data, if any;
        :class:`SASLError` if it came before the client sent its part."""
        if data is not None and not isinstance(data, bytes):
            raise wrong_type("additional data with success", data, f"None or {_PAYLOAD}")
        self._check_usable()
        try:
            if self._owed is not None:
                # RFC 4422 §3.6: the mechanism has not completed, so this is no success.
                raise SASLError(
                    f"{self.name} server reported success before the client sent {self._owed}"
                )
            self._verify_success(data)
        except SASLError:
            self._failed = True
            raise
        self._complete = True

    def _check_usable(self) -> None:
        if self._failed:
            raise LocalProtocolError(f"{self.name} exchange already failed")
        if self._complete:
            raise LocalProtocolError(f"{self.name} exchange already complete")

    @abc.abstractmethod
    def _respond(self, challenge: bytes) -> bytes: ...

    def _verify_success(self, data: bytes | None) -> None:
        if data:
            raise SASLError(f"{self.name} defines no additional data with success")


def _count_taken(mechanism: ClientMechanism, response: bytes | None) -> None:
    """Count ``response``, what the mechanism's ``initial_response()`` gave, as what
    went with ``AUTH``, while nothing was answered: bytes are sent (and answer the
    server's empty challenge if they are then withheld), and a None sends a bare
    ``AUTH``, so the part the initial response carries is still owed (RFC 4422
    §3.6)."""
    stage = mechanism._stage
    if stage is _ClientStage.START or stage is _ClientStage.TAKEN:
        mechanism._stage = _ClientStage.TAKEN
        if response is not None:
            mechanism._first_response = response
        if mechanism._initial_part is not None:
            mechanism._owed = None if response is not None else mechanism._initial_part


_Taking = TypeVar("_Taking", bound=ClientMechanism)


def _counting(
    method: Callable[[_Taking], bytes | None],
) -> Callable[[_Taking], bytes | None]:
    """A subclass's ``initial_response()``, counting what it gives as taken: the base's
    count, when the override calls it, sees the base's bytes, not the override's own
    or the None it gives instead, and an override that does not call it counts
    nothing. So a loop of your own, which calls the override with no
    :func:`take_initial_response`, has it counted as ``ClientAuth`` does: a success to
    the bare ``AUTH`` a None sends is refused, and one to the override's own bytes is
    taken."""

    @functools.wraps(method)
    def initial_response(self: _Taking) -> bytes | None:
        response = method(self)
        _count_taken(self, response)
        return response

    return initial_response


def take_initial_response(mechanism: ClientMechanism) -> bytes | None:
    """The initial response ``ClientAuth`` sends with ``AUTH``, counted as taken (see
    :func:`_count_taken`): what goes with the command decides what is owed (RFC 4422
    §3.6). The mechanism's method is always asked, once, whoever overrode it. The
    base's method and a subclass's override count themselves; a method set on the
    instance (``mock.patch.object``) or on the class after it was made is counted
    here. A class ``ClientMechanism.register()`` vouches for keeps its own books: it
    is only asked."""
    response = mechanism.initial_response()
    if ClientMechanism not in type(mechanism).__mro__:
        return response
    # The base's method and a subclass's override (_counting) have counted it; only
    # a method set on the instance or the class after it was made is counted here:
    # told apart by their code, with no Python call more per AUTH.
    code = getattr(mechanism.initial_response, "__code__", None)
    if code is not _BASE_CODE and code is not _COUNTING_CODE:
        _count_taken(mechanism, response)
    return response


_BASE_CODE: Final = ClientMechanism.initial_response.__code__
_COUNTING_CODE: Final = _counting(ClientMechanism.initial_response).__code__


def check_client_auth_arguments(mechanism: object, max_line: object) -> None:
    """The checks of ``ClientAuth``, SMTP's and POP3's alike: a name (``"PLAIN"``) is
    no mechanism, and ``isinstance`` so that a class ``ClientMechanism.register()``
    vouches for is one."""
    if not isinstance(mechanism, ClientMechanism):
        raise wrong_type("ClientAuth's mechanism", mechanism, "a ClientMechanism")
    if not isinstance(max_line, int) or isinstance(max_line, bool):
        raise wrong_type("ClientAuth's max_line", max_line, "an int")


class _ClientFirstMechanism(ClientMechanism):
    """A mechanism whose client speaks first (RFC 4422 §5: PLAIN, SCRAM, the bearer
    tokens): its constructor sets the initial response, always bytes."""

    _first_response: bytes

    if TYPE_CHECKING:  # the type its callers see; the base's method gives it

        def initial_response(self) -> bytes: ...
