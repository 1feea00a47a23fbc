"""PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login): the password in the clear.

Both show the password itself to the server, so both are ``plaintext`` and
``requires_tls``: RFC 4616 §5 says not to offer or use them without a
security layer such as TLS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias

from smtpcore._errors import LocalProtocolError
from smtpcore.sasl._base import (
    DEFAULT_MAX_RESPONSE_SIZE,
    Authorize,
    Challenge,
    SASLError,
    Step,
    _Reject,
)
from smtpcore.sasl._base_checks import _require_true, decode_utf8, encode_utf8, prepare_identity
from smtpcore.sasl._base_client import ClientMechanism, _ClientFirstMechanism, _ClientStage
from smtpcore.sasl._base_server import ServerMechanism

__all__ = [
    "CheckPassword",
    "LoginClient",
    "LoginServer",
    "PlainClient",
    "PlainServer",
]

CheckPassword: TypeAlias = Callable[[str, str, str], bool]
"""``check_password(authzid, authcid, password) -> ok``: ``True`` authenticates,
anything else refuses (a verdict that is not a bool as the callback's mistake).

``authzid`` is what the client asked to act as ("" for itself; LOGIN always
passes ""). Both names come prepared with SASLprep; the password comes as the
client sent it: compare it with :func:`~smtpcore.sasl.passwords_match`, which
prepares both passwords (RFC 4616 §2) and compares in constant time, or with a
password hash of the prepared password. Take the same time for an unknown user
as for a wrong password. Raise :class:`CredentialsUnavailable` if the store
cannot answer.
"""

USERNAME_PROMPT: Final = b"Username:"
PASSWORD_PROMPT: Final = b"Password:"


class PlainClient(_ClientFirstMechanism):
    """PLAIN, client side: ``[authzid] NUL authcid NUL passwd`` (RFC 4616 §2)."""

    name = "PLAIN"
    plaintext = True
    requires_tls = True
    _initial_part = "its credentials"

    def __init__(self, authcid: str, password: str, authzid: str = "") -> None:
        super().__init__()
        parts = [
            encode_utf8(authzid, "PLAIN authzid"),
            encode_utf8(authcid, "PLAIN authcid"),
            encode_utf8(password, "PLAIN password"),
        ]
        if any(b"\x00" in part for part in parts):
            raise LocalProtocolError("PLAIN credentials may not contain NUL")
        if not authcid or not password:
            raise LocalProtocolError("PLAIN needs a non-empty authcid and password")
        self._first_response = b"\x00".join(parts)

    def _respond(self, challenge: bytes) -> bytes:
        # RFC 4954 §4: a client-first mechanism whose initial response was not
        # sent gets an empty challenge, answered with that response, once.
        if challenge or self._stage is _ClientStage.ANSWERING:
            raise SASLError("PLAIN expects no challenge but an empty one")
        self._owed = None
        return self._first_response


class PlainServer(ServerMechanism):
    """PLAIN, server side (RFC 4616 §2, §3).

    The message must hold exactly two NULs, valid UTF-8 and a non-empty
    authcid and password. The authcid, and the authzid if any, are prepared
    with SASLprep as queries (RFC 4616 §2; the authzid so that it compares
    with the authcid), and the exchange fails if SASLprep refuses one or
    empties it. ``check_password(authzid, authcid, password)`` decides, given
    the password as sent (see :data:`CheckPassword`); then an authzid other
    than "" or the authcid needs ``authorize(authzid, authcid)`` as well (RFC
    4616 §2: the server verifies that the authcid may act as the authzid).
    """

    name = "PLAIN"
    plaintext = True
    requires_tls = True

    def __init__(
        self,
        check_password: CheckPassword,
        *,
        authorize: Authorize | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        super().__init__(authorize=authorize, max_response_size=max_response_size)
        self._check_password = check_password

    def _start(self, initial_response: bytes | None) -> Step:
        if initial_response is None:
            return Challenge(b"")
        return self._step(initial_response)

    def _step(self, response: bytes) -> Step:
        fields = response.split(b"\x00")
        if len(fields) != 3:
            raise _Reject("PLAIN message needs exactly two NUL separators")
        authzid, authcid, password = (decode_utf8(field, "PLAIN message") for field in fields)
        self._named = authcid or None
        if not authcid or not password:
            raise _Reject("PLAIN authcid and password may not be empty")
        authcid = prepare_identity(authcid, "PLAIN authcid")
        if authzid:
            authzid = prepare_identity(authzid, "PLAIN authzid")
        verdict = self._check_password(authzid, authcid, password)
        _require_true(verdict, "check_password", "invalid credentials")
        return self._succeed(authzid, authcid)


class LoginClient(ClientMechanism):
    """LOGIN, client side: the user name, then the password, one per challenge.

    The prompts' text is ignored, as the draft says: servers word them
    differently. LOGIN has no initial response.
    """

    name = "LOGIN"
    plaintext = True
    requires_tls = True

    def __init__(self, username: str, password: str) -> None:
        super().__init__()
        answers = [
            encode_utf8(username, "LOGIN username"),
            encode_utf8(password, "LOGIN password"),
        ]
        if not username or not password:
            raise LocalProtocolError("LOGIN needs a non-empty username and password")
        if "\x00" in username or "\x00" in password:
            raise LocalProtocolError("LOGIN credentials may not contain NUL")
        self._answers = answers
        self._owed = "its username"

    def _respond(self, challenge: bytes) -> bytes:
        if not self._answers:
            raise SASLError("LOGIN server sent more than two challenges")
        answer = self._answers.pop(0)
        self._owed = "its password" if self._answers else None
        return answer


class LoginServer(ServerMechanism):
    """LOGIN, server side: prompts ``Username:`` then ``Password:``.

    Those are the prompts deployed servers send, and some clients insist on
    them. A client that sends the user name as an initial response
    (``AUTH LOGIN dXNlcg==``, as some do) is asked only for the password.
    ``check_password`` is called with an empty authzid, the user name prepared
    with SASLprep as PLAIN's authcid is, and the password as sent. NUL is
    refused in both, as PLAIN refuses it, so that no credential store sees it.
    """

    name = "LOGIN"
    plaintext = True
    requires_tls = True

    def __init__(
        self,
        check_password: CheckPassword,
        *,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        super().__init__(max_response_size=max_response_size)
        self._check_password = check_password
        self._username: str | None = None

    def _start(self, initial_response: bytes | None) -> Step:
        if not initial_response:
            return Challenge(USERNAME_PROMPT)
        return self._step(initial_response)

    def _step(self, response: bytes) -> Step:
        text = decode_utf8(response, "LOGIN response")
        if "\x00" in text:
            raise _Reject("LOGIN response may not contain NUL")
        if self._username is None:
            if not text:
                raise _Reject("LOGIN username may not be empty")
            self._named = text
            self._username = prepare_identity(text, "LOGIN username")
            return Challenge(PASSWORD_PROMPT)
        if not text:
            raise _Reject("LOGIN password may not be empty")
        verdict = self._check_password("", self._username, text)
        _require_true(verdict, "check_password", "invalid credentials")
        return self._succeed("", self._username)
