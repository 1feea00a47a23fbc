"""What every SASL mechanism shares: the outcomes of the server's steps, and errors.

A mechanism here is one exchange of RFC 4422 §3: the client side turns
challenges into responses, the server side turns responses into the next
:class:`Challenge` or an outcome. Payloads are raw octets; the base64 layer of
SMTP AUTH (RFC 4954 §4) and POP3 AUTH (RFC 5034 §4) belongs to the protocol
machines, and so does the ``*`` that cancels an exchange.

The two base classes build on these values in modules of their own
(:mod:`smtpcore.sasl._base_server`, :mod:`smtpcore.sasl._base_client`), and so do
the checks every mechanism makes (:mod:`smtpcore.sasl._base_checks`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from smtpcore._errors import ProtocolError, wrong_type

__all__ = [
    "DEFAULT_MAX_RESPONSE_SIZE",
    "Authorize",
    "Challenge",
    "CredentialsUnavailable",
    "Failure",
    "SASLError",
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
