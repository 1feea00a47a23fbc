"""OAUTHBEARER (RFC 7628) and Google's older XOAUTH2: an OAuth 2.0 bearer token.

Both send the token once, in the initial response; a server that refuses it
answers with a JSON error challenge, the client sends a dummy response (one
%x01 for OAUTHBEARER, RFC 7628 §3.2.3; nothing for XOAUTH2, per Google's
description of the protocol), and the exchange fails. Meanwhile the server's
:attr:`~smtpcore.sasl.ServerMechanism.refusal` holds that failure: a client that
cancels in place of the dummy response still failed to log in. A bearer token is as
good as a password to whoever reads it, so both are ``requires_tls``
(RFC 7628 §5), though not ``plaintext``: the token is scoped and revocable.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from smtpcore._errors import LocalProtocolError, wrong_type
from smtpcore.sasl._base import (
    DEFAULT_MAX_RESPONSE_SIZE,
    Authorize,
    Challenge,
    Failure,
    SASLError,
    Step,
    _CallbackError,
    _Reject,
)
from smtpcore.sasl._base_checks import (
    decode_utf8,
    encode_utf8,
    escape_saslname,
    require_str,
    unescape_saslname,
)
from smtpcore.sasl._base_client import _ClientFirstMechanism, _ClientStage
from smtpcore.sasl._base_server import ServerMechanism

__all__ = [
    "CheckToken",
    "OAuthBearerClient",
    "OAuthBearerServer",
    "XOAuth2Client",
    "XOAuth2Server",
]

CheckToken: TypeAlias = Callable[[str, str], bool | str]
"""``check_token(user, token)``: ``True`` to accept the token for ``user``,
``False`` to refuse it, or a ``str``: the user the token was issued to.

``user`` is XOAUTH2's ``user=`` or OAUTHBEARER's gs2 authzid, which the
client may leave empty; returning the token's owner covers that case, and
if the owner differs from a non-empty ``user``, the mechanism's
``authorize(user, owner)`` decides. Raise :class:`CredentialsUnavailable`
when the token cannot be checked now (the outcome is a temporary failure).
"""

_KEY: Final = re.compile(rb"[A-Za-z]+")
_VALUE: Final = re.compile(rb"[\x21-\x7e \t\r\n]*")  # RFC 7628 §3.1 value
_TOKEN: Final = re.compile(r"[\x21-\x7e]+")
_SEPARATOR: Final = "\x01"


def _bearer_token(auth: str) -> str:
    """The token of an ``auth`` value ``Bearer <token>`` (RFC 6750 §2.1)."""
    scheme, _, token = auth.partition(" ")
    token = token.strip(" ")
    if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
        raise _Reject("auth is not 'Bearer <token>'")
    return token


def _key_values(data: bytes) -> dict[str, str]:
    """Parse ``key=value`` pairs separated by %x01 (RFC 7628 §3.1)."""
    pairs: dict[str, str] = {}
    for item in data.split(b"\x01"):
        key, equals, value = item.partition(b"=")
        if not equals or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
            raise _Reject("malformed key=value pair")
        name = key.decode("ascii")
        if name in pairs:
            raise _Reject(f"duplicate key {name!r}")
        pairs[name] = value.decode("ascii")
    return pairs


def _check_client_token(token: str, mechanism: str) -> str:
    if not _TOKEN.fullmatch(require_str(token, f"{mechanism} token")):
        raise LocalProtocolError("a bearer token is printable ASCII without spaces")
    return token


class _BearerClient(_ClientFirstMechanism):
    """What both token clients share: the message, the error, the dummy answer."""

    requires_tls = True
    _dummy: bytes
    _initial_part = "its token"

    def __init__(self, message: bytes) -> None:
        super().__init__()
        self._first_response = message
        self.error: str | None = None
        """The server's error challenge (JSON text), once it refused the token."""

    @property
    def error_details(self) -> dict[str, Any]:
        """The error challenge parsed as a JSON object (``{}`` if there is none)."""
        try:
            details = json.loads(self.error or "{}")
        except ValueError:
            return {}
        return details if isinstance(details, dict) else {}

    def _respond(self, challenge: bytes) -> bytes:
        if self.error is not None:
            raise SASLError(f"{self.name} server sent a challenge after its error")
        if not challenge and self._stage is not _ClientStage.ANSWERING:
            self._owed = None
            return self._first_response
        self.error = challenge.decode("utf-8", "replace")
        return self._dummy

    def _verify_success(self, data: bytes | None) -> None:
        if self.error is not None:
            raise SASLError(f"{self.name} server reported success after refusing the token")
        super()._verify_success(data)


class _BearerServer(ServerMechanism):
    """What both token servers share: the token check and the error round trip."""

    requires_tls = True

    def __init__(
        self,
        check_token: CheckToken,
        *,
        authorize: Authorize | None,
        max_response_size: int,
    ) -> None:
        super().__init__(authorize=authorize, max_response_size=max_response_size)
        self._check_token = check_token

    def _start(self, initial_response: bytes | None) -> Step:
        if initial_response is None:
            return Challenge(b"")  # RFC 4954 §4: ask for the initial response
        return self._step(initial_response)

    def _step(self, response: bytes) -> Step:
        if self._refusal is not None:
            return self._refusal  # whatever the dummy response held
        user, token = self._parse(response)
        self._named = user or None
        verdict = self._check_token(user, token)  # CredentialsUnavailable: temporary
        if isinstance(verdict, str) and verdict:
            return self._succeed(user, verdict)
        if verdict is True:
            if not user:
                raise _Reject("token accepted, but no user named")
            return self._succeed("", user)
        if verdict is not False and not isinstance(verdict, str):  # an async def's coroutine
            raise _CallbackError(f"check_token gave {type(verdict).__name__}, not a bool or str")
        self._refusal = Failure("invalid token", named=self._named)
        return Challenge(self._error_challenge())

    @abc.abstractmethod
    def _parse(self, response: bytes) -> tuple[str, str]:
        """The user and the bearer token, or :class:`_Reject`."""

    @abc.abstractmethod
    def _error_challenge(self) -> bytes:
        """The JSON error challenge sent when the token is refused."""


class XOAuth2Client(_BearerClient):
    """XOAUTH2, client side: ``user=U^Aauth=Bearer T^A^A`` (Google's format)."""

    name = "XOAUTH2"
    _dummy = b""

    def __init__(self, user: str, token: str) -> None:
        if not require_str(user, "XOAUTH2 user") or _SEPARATOR in user or "\x00" in user:
            raise LocalProtocolError("XOAUTH2 user must be non-empty, without %x01 or NUL")
        token = _check_client_token(token, self.name)
        message = b"user=" + encode_utf8(user, "XOAUTH2 user") + b"\x01auth=Bearer "
        super().__init__(message + token.encode("ascii") + b"\x01\x01")


class XOAuth2Server(_BearerServer):
    """XOAUTH2, server side.

    A refused token gets Google's error challenge, ``{"status":"401",
    "schemes":"Bearer","scope":...}`` (``scope`` when given), and whatever
    the client answers, a :class:`Failure`. A malformed message fails at once.
    """

    name = "XOAUTH2"

    def __init__(
        self,
        check_token: CheckToken,
        *,
        scope: str = "",
        authorize: Authorize | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        super().__init__(check_token, authorize=authorize, max_response_size=max_response_size)
        self._scope = require_str(scope, "XOAUTH2 scope")

    def _parse(self, response: bytes) -> tuple[str, str]:
        if not response.endswith(b"\x01\x01"):
            raise _Reject("XOAUTH2 message must end with two %x01")
        user, auth = _user_and_auth(response[:-2])
        name = decode_utf8(user, "XOAUTH2 user")
        if "\x00" in name:
            raise _Reject("XOAUTH2 user may not contain NUL")
        return name, _bearer_token(auth.decode("ascii"))

    def _error_challenge(self) -> bytes:
        error = {"status": "401", "schemes": "Bearer"}
        if self._scope:
            error["scope"] = self._scope
        return json.dumps(error, separators=(",", ":")).encode("utf-8")


def _user_and_auth(body: bytes) -> tuple[bytes, bytes]:
    """XOAUTH2's two fields; its ``user`` may hold any UTF-8, unlike RFC 7628 values."""
    fields: dict[bytes, bytes] = {}
    for item in body.split(b"\x01"):
        key, equals, value = item.partition(b"=")
        if not equals or key in fields:
            raise _Reject("XOAUTH2 message is malformed")
        fields[key] = value
    if fields.keys() != {b"user", b"auth"} or not fields[b"user"]:
        raise _Reject("XOAUTH2 message needs exactly user= and auth=")
    if not _VALUE.fullmatch(fields[b"auth"]):
        raise _Reject("XOAUTH2 auth is malformed")
    return fields[b"user"], fields[b"auth"]


class OAuthBearerClient(_BearerClient):
    """OAUTHBEARER, client side (RFC 7628 §3.1).

    ``user`` becomes the gs2 authzid (``n,a=user,``), which RFC 7628 lets a
    client omit (pass ""); ``host`` and ``port`` are the optional keys a
    server may use to check the token's audience.
    """

    name = "OAUTHBEARER"
    _dummy = b"\x01"

    def __init__(
        self, user: str, token: str, *, host: str | None = None, port: int | None = None
    ) -> None:
        token = _check_client_token(token, self.name)
        if "\x00" in require_str(user, "OAUTHBEARER user"):
            raise LocalProtocolError("OAUTHBEARER user may not contain NUL")
        pairs = []
        if host is not None:
            if not _TOKEN.fullmatch(require_str(host, "OAUTHBEARER host")):
                raise LocalProtocolError("OAUTHBEARER host must be printable ASCII")
            pairs.append(f"host={host}")
        if port is not None:
            if not isinstance(port, int) or isinstance(port, bool):  # port=True is no 1
                raise wrong_type("OAUTHBEARER port", port, "an int or None")
            if not 0 < port < 65536:
                raise LocalProtocolError("OAUTHBEARER port out of range")
            pairs.append(f"port={port}")
        pairs.append(f"auth=Bearer {token}")
        header = (
            b"n," + (b"a=" + encode_utf8(escape_saslname(user), "user") if user else b"") + b","
        )
        body = "".join(f"\x01{pair}" for pair in pairs).encode("ascii")
        super().__init__(header + body + b"\x01\x01")


class OAuthBearerServer(_BearerServer):
    """OAUTHBEARER, server side (RFC 7628 §3).

    The gs2 header must be ``n`` or ``y`` (no channel binding); its authzid
    is passed to ``check_token`` as the user. A refused token gets the
    error challenge of RFC 7628 §3.2.2, ``{"status":"invalid_token",...}``
    with ``scope`` and ``openid-configuration`` when given, then the
    client's dummy %x01 gets a :class:`Failure`.
    """

    name = "OAUTHBEARER"

    def __init__(
        self,
        check_token: CheckToken,
        *,
        scope: str = "",
        openid_configuration: str = "",
        authorize: Authorize | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        super().__init__(check_token, authorize=authorize, max_response_size=max_response_size)
        self._scope = require_str(scope, "OAUTHBEARER scope")
        self._openid_configuration = require_str(
            openid_configuration, "OAUTHBEARER openid_configuration"
        )
        self.fields: dict[str, str] = {}
        """The client's key=value pairs (``host``, ``port``, ``auth``, ...)."""

    def _parse(self, response: bytes) -> tuple[str, str]:
        # The gs2 header ends at its second comma (an authzid escapes its own
        # commas as =2C, RFC 5801 §4), and may itself hold %x01 (RFC 5801's
        # UTF8-1-safe), so it is cut by commas, not at the first kvsep.
        first = response.find(b",")
        second = response.find(b",", first + 1) if first >= 0 else -1
        rest = response[second + 1 :] if second >= 0 else b""
        if not rest.startswith(b"\x01") or len(rest) < 2 or not rest.endswith(b"\x01\x01"):
            raise _Reject("OAUTHBEARER message is malformed")
        header = response[: second + 1]
        user = self._gs2_authzid(decode_utf8(header, "OAUTHBEARER gs2 header"))
        self.fields = _key_values(rest[1:-2])
        if "auth" not in self.fields:
            raise _Reject("OAUTHBEARER message has no auth")
        return user, _bearer_token(self.fields["auth"])

    @staticmethod
    def _gs2_authzid(header: str) -> str:
        """The authzid of an RFC 5801 §4 gs2 header without channel binding."""
        parts = header.split(",")
        if len(parts) != 3 or parts[2]:
            raise _Reject("OAUTHBEARER gs2 header is malformed")
        flag, authz, _ = parts
        if flag not in ("n", "y"):
            raise _Reject("OAUTHBEARER channel binding is not supported")
        if not authz:
            return ""
        user = unescape_saslname(authz[2:]) if authz.startswith("a=") else None
        if not user:
            raise _Reject("OAUTHBEARER authzid is malformed")
        return user

    def _error_challenge(self) -> bytes:
        error = {"status": "invalid_token"}
        if self._scope:
            error["scope"] = self._scope
        if self._openid_configuration:
            error["openid-configuration"] = self._openid_configuration
        return json.dumps(error, separators=(",", ":")).encode("utf-8")
