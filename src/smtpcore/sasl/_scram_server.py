"""SCRAM's server side (RFC 5802 §5, RFC 7677's SHA-256, RFC 5802's SHA-1): the
exchange written once for every hash, and one class per mechanism naming its hash
and whether it binds the channel.

The server keeps only ``StoredKey`` and ``ServerKey`` (RFC 5802 §3), from which
the password cannot be recovered nor a client impersonated, and proves itself
with its signature in the final message. An unknown user gets fabricated keys
and fails at the proof, as a wrong password does. A ``-PLUS`` server (RFC 5802
§6) compares the client's gs2 header and binding data with its own for the
connection, which the session gives it (``tls-exporter``, RFC 9266); a server
that offers ``-PLUS`` refuses a plain client's ``y`` flag as a downgrade.

Apart from the client (:mod:`smtpcore.sasl._scram_client`) because the two share only
the keys and the grammar, which have modules of their own.
"""

from __future__ import annotations

import hmac
import secrets
from typing import ClassVar, Final

from smtpcore._errors import wrong_type
from smtpcore.sasl._base import (
    DEFAULT_MAX_RESPONSE_SIZE,
    Authorize,
    Challenge,
    CredentialsUnavailable,
    Step,
    _Reject,
)
from smtpcore.sasl._base_checks import (
    _require_found,
    decode_utf8,
    prepare_identity,
    require_count,
    unescape_saslname,
)
from smtpcore.sasl._base_server import ServerMechanism
from smtpcore.sasl._channel import CB_NAME
from smtpcore.sasl._scram_keys import (
    _MOST_ITERATIONS,
    _SHA1,
    _SHA256,
    DEFAULT_ITERATIONS,
    GetCredentials,
    ScramCredentials,
    _b64,
    _h,
    _Hash,
    _hmac,
    _unb64,
    _xor,
)
from smtpcore.sasl._scram_messages import (
    _NONCE,
    _check_nonce,
    _default_nonce,
    _Malformed,
    _MandatoryExtension,
    _values,
)

__all__ = [
    "ScramSHA1PlusServer",
    "ScramSHA1Server",
    "ScramSHA256PlusServer",
    "ScramSHA256Server",
]


# Fabricated credentials for unknown users derive from this secret, so that the
# same unknown name always gets the same salt within a process.
_PROCESS_SECRET: Final = secrets.token_bytes(32)


class _ScramServer(ServerMechanism):
    """The server side of every SCRAM mechanism (RFC 5802 §5); a subclass names the
    mechanism and its hash, and whether it binds the channel."""

    _hash: ClassVar[_Hash]
    _binds: ClassVar[bool] = False
    """Whether the client must bind the channel (the ``-PLUS`` variants)."""

    def __init__(
        self,
        get_credentials: GetCredentials,
        *,
        nonce: str | None = None,
        authorize: Authorize | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        mock_secret: bytes | None = None,
        mock_iterations: int = DEFAULT_ITERATIONS,
    ) -> None:
        super().__init__(authorize=authorize, max_response_size=max_response_size)
        self._get_credentials = get_credentials
        self._server_nonce = _check_nonce(_default_nonce() if nonce is None else nonce)
        if mock_secret is not None and not isinstance(mock_secret, bytes):
            raise wrong_type("SCRAM mock_secret", mock_secret, "None or bytes")
        self._mock_secret = _PROCESS_SECRET if mock_secret is None else mock_secret
        # Checked now: found only for an unknown user (True sent as i=True, 0 as a
        # ValueError), it would tell who exists.
        self._mock_iterations = require_count(
            mock_iterations, "SCRAM mock_iterations", 1, _MOST_ITERATIONS
        )
        self._credentials: ScramCredentials | None = None
        self._known_user = False
        self._username = ""
        self._authzid = ""
        self._cbind_input = b""
        self._nonce = ""
        self._auth_prefix = b""

    def _start(self, initial_response: bytes | None) -> Step:
        if initial_response is None:
            return Challenge(b"")
        return self._server_first(initial_response)

    def _step(self, response: bytes) -> Step:
        if self._credentials is None:
            return self._server_first(response)
        return self._finish(response, self._credentials)

    def _server_first(self, client_first: bytes) -> Step:
        """Parse client-first-message (RFC 5802 §7) and send salt and nonce."""
        text = decode_utf8(client_first, "SCRAM client-first-message")
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise _Reject("SCRAM client-first-message is malformed")
        flag, authz, bare = parts
        cbind_data = self._channel_data(flag)
        if authz:
            authzid = unescape_saslname(authz[2:]) if authz.startswith("a=") else None
            if not authzid:
                raise _Reject("SCRAM authzid is malformed")
            self._authzid = prepare_identity(authzid, "SCRAM authzid")
        try:
            name, client_nonce = _values(bare, "nr")
        except _MandatoryExtension:
            raise _Reject("SCRAM extensions-not-supported") from None
        except _Malformed:
            raise _Reject("SCRAM client-first-message is malformed") from None
        username = unescape_saslname(name)
        self._named = username or None
        if not username or not _NONCE.fullmatch(client_nonce):
            raise _Reject("SCRAM username or nonce is malformed")
        # RFC 5802 §5.1: the server "MUST either prepare it using the SASLprep
        # profile ... treating it as a query string" or compare SASLprep-aware.
        username = prepare_identity(username, "SCRAM username")
        credentials = _require_found(
            self._get_credentials(username), ScramCredentials, "get_credentials"
        )
        self._known_user = credentials is not None
        if credentials is None:
            credentials = self._mock_credentials(username)
        elif credentials.hash_name != self._hash.name:
            # The application gave keys of another hash: its mistake, not the client's.
            have, need = credentials.hash_name, self._hash.name
            raise CredentialsUnavailable(f"{self.name} needs SCRAM-{need} keys, not SCRAM-{have}")
        self._credentials = credentials
        self._username = username
        self._cbind_input = f"{flag},{authz},".encode() + cbind_data
        self._nonce = client_nonce + self._server_nonce
        salt = _b64(credentials.salt).decode("ascii")
        server_first = f"r={self._nonce},s={salt},i={credentials.iterations}".encode("ascii")
        self._auth_prefix = bare.encode("utf-8") + b"," + server_first + b","
        return Challenge(server_first)

    def _channel_data(self, flag: str) -> bytes:
        """The binding data the gs2 flag commits the client to (RFC 5802 §6)."""
        if flag.startswith("p="):
            kind = flag[2:]
            if not CB_NAME.fullmatch(kind):
                raise _Reject("SCRAM gs2 header is malformed")
            if not self._binds:
                raise _Reject(f"SCRAM channel binding asked of {self.name}, not of its -PLUS")
            data = self._channel_bindings.get(kind)
            if data is None:
                raise _Reject(f"SCRAM unsupported-channel-binding-type {kind}")
            return data
        if flag not in ("n", "y"):
            raise _Reject("SCRAM gs2 header is malformed")
        if self._binds:
            raise _Reject(f"SCRAM {self.name} without channel binding")
        if flag == "y" and self._plus_offered:
            raise _Reject("SCRAM server-does-support-channel-binding")
        return b""

    def _mock_credentials(self, username: str) -> ScramCredentials:
        hash_ = self._hash
        seed = _hmac(hash_, self._mock_secret, username.encode("utf-8"))
        return ScramCredentials(
            salt=_hmac(hash_, seed, b"salt")[:16],
            iterations=self._mock_iterations,
            stored_key=_hmac(hash_, seed, b"stored key"),
            server_key=_hmac(hash_, seed, b"server key"),
            hash_name=hash_.name,
        )

    def _finish(self, client_final: bytes, credentials: ScramCredentials) -> Step:
        """Check client-final-message's binding, nonce and proof (RFC 5802 §7)."""
        text = decode_utf8(client_final, "SCRAM client-final-message")
        try:
            binding_text, nonce, proof_text = _values(text, "cr", last="p")
        except _Malformed:
            raise _Reject("SCRAM client-final-message is malformed") from None
        without_proof = text.rpartition(",")[0]  # the proof is the last attribute
        binding = _unb64(binding_text)
        if binding is None or not hmac.compare_digest(binding, self._cbind_input):
            raise _Reject("SCRAM channel-bindings-dont-match")
        if nonce != self._nonce:
            raise _Reject("SCRAM nonce does not match")
        proof = _unb64(proof_text)
        hash_ = self._hash
        if proof is None or len(proof) != hash_.size:
            raise _Reject("SCRAM proof is malformed")
        auth_message = self._auth_prefix + without_proof.encode("utf-8")
        client_key = _xor(proof, _hmac(hash_, credentials.stored_key, auth_message))
        proven = hmac.compare_digest(_h(hash_, client_key), credentials.stored_key)
        if not (proven and self._known_user):
            raise _Reject("SCRAM invalid-proof")
        signature = _hmac(hash_, credentials.server_key, auth_message)
        return self._succeed(self._authzid, self._username, b"v=" + _b64(signature))


class ScramSHA256Server(_ScramServer):
    """SCRAM-SHA-256, server side (RFC 5802 §5, RFC 7677), from stored keys only.

    ``get_credentials(username)`` returns the user's :class:`ScramCredentials`
    or ``None``. For an unknown user the server goes on with fabricated
    credentials (a salt derived from the name and ``mock_secret``, so that it
    does not change between attempts, and ``mock_iterations``), and the
    exchange fails at the proof, exactly as with a wrong password. Several
    processes serving the same users should share one ``mock_secret`` and
    set ``mock_iterations`` to the count real users have.

    The user name, and the authzid if any, are prepared with SASLprep as
    queries before ``get_credentials`` and ``authorize`` see them (RFC 5802
    §5.1: a client that did not prepare its name still names its user), and
    the exchange fails if SASLprep refuses one or empties it; the proof
    covers the name as sent. A ``Success`` carries the server-final message
    (``v=...``), which must reach the client.

    Channel binding comes from :meth:`bind_channel`: this plain variant
    refuses a client that asks to bind (``p=``, that is for ``-PLUS``) and,
    when the session offers ``-PLUS``, one that says it could bind but saw
    no ``-PLUS`` (``y``: a downgrade, RFC 5802 §6). Keys of another hash
    fail the exchange as temporary (:class:`CredentialsUnavailable`).
    """

    name = "SCRAM-SHA-256"
    _hash = _SHA256


class ScramSHA256PlusServer(_ScramServer):
    """SCRAM-SHA-256-PLUS, server side: SCRAM-SHA-256 bound to the TLS channel.

    The client must send ``p=<type>`` for a type the session gave to
    :meth:`bind_channel` (``tls-exporter``, RFC 9266), and its final message
    must carry the gs2 header followed by this server's binding data for
    the connection, octet for octet (RFC 5802 §6); anything else fails, as a
    wrong password does. Offer it only where the session has the data.
    Options as for :class:`ScramSHA256Server`.
    """

    name = "SCRAM-SHA-256-PLUS"
    _hash = _SHA256
    _binds = True


class ScramSHA1Server(_ScramServer):
    """SCRAM-SHA-1, server side (RFC 5802 §5), from SHA-1 keys
    (``derive_scram_credentials(password, hash_name="SHA-1")``), for clients that know
    nothing newer. Options as for :class:`ScramSHA256Server`."""

    name = "SCRAM-SHA-1"
    _hash = _SHA1


class ScramSHA1PlusServer(_ScramServer):
    """SCRAM-SHA-1-PLUS, server side (RFC 5802 §6): SCRAM-SHA-1 bound to the TLS
    channel, from SHA-1 keys. Options as for :class:`ScramSHA256PlusServer`."""

    name = "SCRAM-SHA-1-PLUS"
    _hash = _SHA1
    _binds = True
