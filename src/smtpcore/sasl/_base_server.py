"""The server side of every SASL mechanism: :class:`ServerMechanism`.

It runs one exchange of RFC 4422 §3, turning each response into the next
:class:`~smtpcore.sasl.Challenge` or an outcome, and owns what every mechanism
shares there: the exchange's progress, the response size limit, channel bindings
(RFC 5056), the authorization rule (RFC 4422 §3.4.1) and turning a refusal or a
callback's mistake into a :class:`~smtpcore.sasl.Failure`, never an exception.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import ClassVar, Final

from smtpcore._errors import LocalProtocolError, wrong_type
from smtpcore.sasl._base import (
    _PAYLOAD,
    DEFAULT_MAX_RESPONSE_SIZE,
    Authorize,
    Challenge,
    CredentialsUnavailable,
    Failure,
    Step,
    Success,
    UnexpectedInitialResponse,
    _CallbackError,
    _Reject,
)
from smtpcore.sasl._base_checks import _require_true, require_count

__all__ = ["ServerMechanism"]


class _Progress(enum.Enum):
    FRESH = "fresh"
    RUNNING = "running"
    DONE = "done"


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
