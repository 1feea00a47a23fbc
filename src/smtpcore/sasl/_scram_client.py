"""SCRAM's client side (RFC 5802 §5, RFC 7677's SHA-256, RFC 5802's SHA-1): the
exchange written once for every hash, and one class per mechanism naming its hash.

The client proves knowledge of the salted password without sending it, and
checks the server's signature: a server that never sends a valid ``v=`` has not
authenticated, and ``verify_success()`` says so. A ``-PLUS`` client (RFC 5802
§6) sends the gs2 header ``p=<type>,,`` and, in its final message, the header
and the binding data of its TLS connection, which the proof covers, so a man in
the middle who runs two TLS connections fails. The data (``tls-exporter``,
RFC 9266) come from the session, never from this module. A client that could
bind but sees no ``-PLUS`` offered sends ``y,,``.

Apart from the server (:mod:`smtpcore.sasl._scram_server`) because the two share
only the keys and the grammar, which have modules of their own.
"""

from __future__ import annotations

import hmac
from typing import ClassVar, Final

from smtpcore._errors import LocalProtocolError, wrong_type
from smtpcore.sasl._base import SASLError
from smtpcore.sasl._base_checks import encode_utf8, escape_saslname, require_count, require_str
from smtpcore.sasl._base_client import _ClientFirstMechanism
from smtpcore.sasl._channel import CB_NAME, TLS_EXPORTER
from smtpcore.sasl._saslprep import saslprep_login
from smtpcore.sasl._scram_keys import (
    _MOST_ITERATIONS,
    _SHA1,
    _SHA256,
    DEFAULT_ITERATIONS,
    _b64,
    _client_key,
    _h,
    _Hash,
    _hmac,
    _prepare_password,
    _salted_password,
    _server_key,
    _unb64,
    _xor,
)
from smtpcore.sasl._scram_messages import (
    _ITERATIONS,
    _NONCE,
    _attributes,
    _check_nonce,
    _default_nonce,
    _Malformed,
    _MandatoryExtension,
    _values,
)

__all__ = [
    "ScramSHA1Client",
    "ScramSHA1PlusClient",
    "ScramSHA256Client",
    "ScramSHA256PlusClient",
]


DEFAULT_MAX_ITERATIONS: Final = 1_000_000


class _ScramClient(_ClientFirstMechanism):
    """The client side of every SCRAM mechanism (RFC 5802 §5); a subclass names the
    mechanism and its hash."""

    _hash: ClassVar[_Hash]

    def __init__(
        self,
        username: str,
        password: str,
        *,
        authzid: str = "",
        nonce: str | None = None,
        min_iterations: int = DEFAULT_ITERATIONS,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        channel_binding_supported: bool = False,
    ) -> None:
        supported = channel_binding_supported
        if not isinstance(supported, bool):  # "no", being true, would say it could bind
            raise wrong_type("SCRAM channel_binding_supported", supported, "a bool")
        self._setup(
            username,
            password,
            authzid=authzid,
            nonce=nonce,
            min_iterations=min_iterations,
            max_iterations=max_iterations,
            flag="y" if channel_binding_supported else "n",
            cbind_data=b"",
        )

    def _setup(
        self,
        username: str,
        password: str,
        *,
        authzid: str,
        nonce: str | None,
        min_iterations: int,
        max_iterations: int,
        flag: str,
        cbind_data: bytes,
    ) -> None:
        super().__init__()
        require_str(username, "SCRAM username")
        require_str(password, "SCRAM password")
        # Checked now, not at the server's count: a bound no count can meet would fail
        # every exchange as if the server were at fault. Only the least is capped: no
        # upper bound (sys.maxsize) is a bound every count meets.
        require_count(min_iterations, "SCRAM min_iterations", 1, _MOST_ITERATIONS)
        require_count(max_iterations, "SCRAM max_iterations", 1)
        if max_iterations < min_iterations:
            bounds = f"max_iterations ({max_iterations}) is below min_iterations"
            raise LocalProtocolError(f"SCRAM {bounds} ({min_iterations})")
        try:
            user = saslprep_login(username)  # a domain's joiners kept
            self._password = _prepare_password(password)
        except ValueError as exc:
            raise LocalProtocolError(f"SCRAM credentials refused by SASLprep: {exc}") from None
        if not user:
            raise LocalProtocolError("SCRAM username is empty after SASLprep")
        encode_utf8(authzid, "SCRAM authzid")  # a lone surrogate is the caller's mistake
        if "\x00" in authzid:
            raise LocalProtocolError("SCRAM authzid may not contain NUL")
        self._nonce = _check_nonce(_default_nonce() if nonce is None else nonce)
        self._min_iterations = min_iterations
        self._max_iterations = max_iterations
        authz = f"a={escape_saslname(authzid)}" if authzid else ""
        self._gs2_header = f"{flag},{authz},".encode()
        self._cbind_input = self._gs2_header + cbind_data
        self._first_bare = f"n={escape_saslname(user)},r={self._nonce}".encode()
        self._first_response = self._gs2_header + self._first_bare  # client-first-message
        self._state = "start"
        self._server_signature = b""

    def _respond(self, challenge: bytes) -> bytes:
        if self._state == "start" and not challenge:
            self._state = "first-sent"
            return self._first_response
        if self._state in ("start", "first-sent"):
            self._state = "final-sent"
            return self._client_final(challenge)
        if self._state == "final-sent":
            self._check_server_final(challenge)
            self._state = "verified"
            return b""
        raise SASLError("SCRAM server sent a challenge after its final message")

    def _client_final(self, server_first: bytes) -> bytes:
        """Parse server-first-message (RFC 5802 §7) and prove the password."""
        try:
            nonce, salt_text, iterations_text = _values(_decode(server_first), "rsi")
        except _MandatoryExtension:
            raise SASLError("SCRAM server requires an unsupported extension") from None
        except _Malformed:
            raise SASLError("SCRAM server-first-message is malformed") from None
        if not _NONCE.fullmatch(nonce) or not nonce.startswith(self._nonce):
            raise SASLError("SCRAM server nonce does not extend the client's")
        if len(nonce) == len(self._nonce):
            raise SASLError("SCRAM server added no nonce of its own")
        salt = _unb64(salt_text)
        if not salt:
            raise SASLError("SCRAM salt is not base64")
        if not _ITERATIONS.fullmatch(iterations_text):
            raise SASLError("SCRAM iteration count is malformed")
        iterations = int(iterations_text)
        if not self._min_iterations <= iterations <= self._max_iterations:
            raise SASLError(f"SCRAM iteration count {iterations} outside the accepted range")
        hash_ = self._hash
        salted = _salted_password(hash_, self._password, salt, iterations)
        client_key = _client_key(hash_, salted)
        without_proof = b"c=" + _b64(self._cbind_input) + b",r=" + nonce.encode("ascii")
        auth_message = self._first_bare + b"," + server_first + b"," + without_proof
        proof = _xor(client_key, _hmac(hash_, _h(hash_, client_key), auth_message))
        self._server_signature = _hmac(hash_, _server_key(hash_, salted), auth_message)
        return without_proof + b",p=" + _b64(proof)

    def _check_server_final(self, server_final: bytes) -> None:
        """Check server-final-message's ``v=`` (RFC 5802 §7); ``e=`` is a refusal."""
        try:
            name, value = _attributes(_decode(server_final))[0]
        except _Malformed:
            raise SASLError("SCRAM server-final-message is malformed") from None
        if name == "e":
            raise SASLError(f"SCRAM server refused: {value}")
        signature = _unb64(value) if name == "v" else None
        if signature is None:
            raise SASLError("SCRAM server-final-message is malformed")
        if not hmac.compare_digest(signature, self._server_signature):
            raise SASLError("SCRAM server signature does not match: not the real server")

    def _verify_success(self, data: bytes | None) -> None:
        if data and self._state in ("final-sent", "verified"):
            self._check_server_final(data)
            self._state = "verified"
        elif data:
            raise SASLError("SCRAM success before the client's proof")
        elif self._state != "verified":
            raise SASLError("SCRAM server reported success without proving its identity")


class _ScramPlusClient(_ScramClient):
    """The client side of every SCRAM ``-PLUS`` mechanism (RFC 5802 §6)."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        channel_binding: bytes,
        channel_binding_type: str = TLS_EXPORTER,
        authzid: str = "",
        nonce: str | None = None,
        min_iterations: int = DEFAULT_ITERATIONS,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
    ) -> None:
        if not isinstance(channel_binding, bytes) or not channel_binding:
            raise LocalProtocolError("SCRAM-PLUS needs the channel binding data, as bytes")
        if not CB_NAME.fullmatch(require_str(channel_binding_type, "SCRAM channel_binding_type")):
            raise LocalProtocolError(f"not a channel binding type: {channel_binding_type!r}")
        self._setup(
            username,
            password,
            authzid=authzid,
            nonce=nonce,
            min_iterations=min_iterations,
            max_iterations=max_iterations,
            flag=f"p={channel_binding_type}",
            cbind_data=channel_binding,
        )


class ScramSHA256Client(_ScramClient):
    """SCRAM-SHA-256, client side (RFC 5802 §5, RFC 7677).

    The user name is prepared with SASLprep as a query and the password as
    a stored string (RFC 5802 §5.1, §2.2); :class:`LocalProtocolError` if
    either is refused. The server's iteration count must lie between
    ``min_iterations`` (RFC 7677 §4's 4096 by default, so a man in the
    middle cannot make a captured proof cheap to attack) and
    ``max_iterations`` (so a hostile server cannot make the client burn CPU).

    ``channel_binding_supported`` says the client could have bound the
    channel but the server offered no ``-PLUS`` (the gs2 flag ``y``, RFC 5802
    §6): a server that did offer it then refuses, which defeats an attacker
    who struck ``-PLUS`` from the list. Leave it off when the session has
    no binding data (the flag is then ``n``).
    """

    name = "SCRAM-SHA-256"
    _hash = _SHA256


class ScramSHA256PlusClient(_ScramPlusClient):
    """SCRAM-SHA-256-PLUS, client side: SCRAM-SHA-256 bound to the TLS channel.

    ``channel_binding`` is the binding data of the connection the exchange
    runs over, of type ``channel_binding_type`` (by default ``tls-exporter``,
    RFC 9266: 32 octets the TLS layer exports with the label
    ``EXPORTER-Channel-Binding``). They go into the client-final-message
    (RFC 5802 §7 ``c=``) under the proof, so a server on another TLS
    connection (a man in the middle) refuses the proof. Other options as for
    :class:`ScramSHA256Client`.
    """

    name = "SCRAM-SHA-256-PLUS"
    _hash = _SHA256


class ScramSHA1Client(_ScramClient):
    """SCRAM-SHA-1, client side (RFC 5802 §5): SCRAM-SHA-256 with SHA-1 for its hash,
    for servers that offer nothing newer. Options as for :class:`ScramSHA256Client`."""

    name = "SCRAM-SHA-1"
    _hash = _SHA1


class ScramSHA1PlusClient(_ScramPlusClient):
    """SCRAM-SHA-1-PLUS, client side (RFC 5802 §6): SCRAM-SHA-1 bound to the TLS
    channel. Options as for :class:`ScramSHA256PlusClient`."""

    name = "SCRAM-SHA-1-PLUS"
    _hash = _SHA1


def _decode(message: bytes) -> str:
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError("SCRAM message is not valid UTF-8") from None
