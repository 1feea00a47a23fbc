"""The client side of every SASL mechanism: :class:`ClientMechanism`.

It answers the server's challenges and checks its success, and keeps the books
of the initial response (RFC 4954 §4): what went with ``AUTH`` decides what the
client still owes, and a success before the client sent its part is no success
(RFC 4422 §3.6), whoever overrides :meth:`ClientMechanism.initial_response`.
The checks of ``ClientAuth``, SMTP's and POP3's, live here too.
"""

from __future__ import annotations

import abc
import enum
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Final, TypeVar

from smtpcore._errors import LocalProtocolError, wrong_type
from smtpcore.sasl._base import _PAYLOAD, SASLError

__all__ = ["ClientMechanism"]


class _ClientStage(enum.Enum):
    """Where a client exchange stands with its initial response (RFC 4954 §4): taken
    with the command, withheld from it, or past it (a challenge answered). A value
    words the stage for the error of a withholding out of turn."""

    START = "before it was taken"
    TAKEN = "after it was taken"
    WITHHELD = "after it was withheld"
    ANSWERING = "after a challenge was answered"


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
