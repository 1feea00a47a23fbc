"""SCRAM's keys (RFC 5802 §2.2, §3): the hash a mechanism is named after, the
salted password and the keys derived from it, and the credentials a server stores.

Client, server and the credential stores all derive the same keys the same way,
and a store needs them without either side of the exchange; so they stand apart
from the messages (:mod:`smtpcore.sasl._scram_messages`) and from the two sides.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from smtpcore._secret import SECRET, secret_repr
from smtpcore.sasl._saslprep import saslprep

__all__ = [
    "GetCredentials",
    "ScramCredentials",
    "derive_scram_credentials",
]


@dataclass(frozen=True, slots=True)
class _Hash:
    """The hash a SCRAM mechanism is named after: H(), HMAC() and Hi() use it, and
    the keys are as long as its digest (RFC 5802 §2.2)."""

    name: str
    """As in the mechanism's name: ``SHA-256``."""
    hashlib_name: str
    size: int


_SHA1: Final = _Hash("SHA-1", "sha1", 20)
_SHA256: Final = _Hash("SHA-256", "sha256", 32)
_HASHES: Final = {h.name: h for h in (_SHA256, _SHA1)}
DEFAULT_ITERATIONS: Final = 4096
"""RFC 7677 §4 and RFC 5802 §5.1: the iteration count SHOULD be at least 4096."""
_MOST_ITERATIONS: Final = 0xFFFFFFFF
"""The largest count stored keys may have: the 32-bit counts other servers store."""


def _hmac(hash_: _Hash, key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, hash_.hashlib_name)


def _h(hash_: _Hash, data: bytes) -> bytes:
    return hashlib.new(hash_.hashlib_name, data).digest()


def _xor(left: bytes, right: bytes) -> bytes:
    value = int.from_bytes(left, "big") ^ int.from_bytes(right, "big")
    return value.to_bytes(len(left), "big")


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _unb64(text: str) -> bytes | None:
    """Strict base64 (RFC 4648 §4, padding required) or ``None``."""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII str
        return None


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """What a SCRAM server stores for one user (RFC 5802 §3).

    ``stored_key`` is H(ClientKey) and ``server_key`` is HMAC(SaltedPassword,
    "Server Key"); neither reveals the password, but they are secrets all the
    same (RFC 5802 §9): whoever holds them can pose as the server, and with one
    exchange he observed (or one he drew from a client by posing as the server)
    he can recover the ClientKey and log in as the user; he can also guess the
    password offline. Keep them as a password is kept; the repr hides them.
    ``hash_name`` is the hash they were made with, ``"SHA-256"`` (SCRAM-SHA-256
    and its ``-PLUS``) or ``"SHA-1"`` (SCRAM-SHA-1 and its ``-PLUS``): a
    mechanism serves only keys of its own hash. Build them with
    :func:`derive_scram_credentials`; keep them with :meth:`to_text`.
    """

    salt: bytes
    iterations: int
    stored_key: bytes = field(metadata=SECRET)
    server_key: bytes = field(metadata=SECRET)
    hash_name: str = "SHA-256"

    __repr__ = secret_repr

    def __post_init__(self) -> None:
        if not self.salt:
            raise ValueError("SCRAM salt may not be empty")
        if not 1 <= self.iterations <= _MOST_ITERATIONS:
            raise ValueError("SCRAM iteration count out of range")
        hash_ = _HASHES.get(self.hash_name)
        if hash_ is None:
            raise ValueError(f"SCRAM hash is one of {', '.join(_HASHES)}, not {self.hash_name!r}")
        if len(self.stored_key) != hash_.size or len(self.server_key) != hash_.size:
            raise ValueError(f"SCRAM-{hash_.name} keys are {hash_.size} octets")

    def to_text(self) -> str:
        """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``, base64 inside
        (``SCRAM-SHA-1$...`` for SHA-1 keys).

        The layout of RFC 5803 §3 (as PostgreSQL also stores it), so a
        credentials file can hold one line per user and no password.
        """
        salt, stored, server = (
            _b64(value).decode("ascii") for value in (self.salt, self.stored_key, self.server_key)
        )
        return f"SCRAM-{self.hash_name}${self.iterations}:{salt}${stored}:{server}"

    @classmethod
    def from_text(cls, text: str) -> ScramCredentials:
        """Parse :meth:`to_text`'s form; :class:`ValueError` if it is not that."""
        match = re.fullmatch(r"SCRAM-(SHA-256|SHA-1)\$([0-9]+):([^$:]+)\$([^$:]+):([^$:]+)", text)
        if match is None:
            if not text.startswith(("SCRAM-SHA-256$", "SCRAM-SHA-1$")):
                raise ValueError("SCRAM credentials must start with 'SCRAM-SHA-256$'")
            raise ValueError("malformed SCRAM credentials")
        hash_name, iterations, *encoded = match.groups()
        salt, stored, server = (_unb64(value) for value in encoded)
        if salt is None or stored is None or server is None:
            raise ValueError("malformed base64 in SCRAM credentials")
        return cls(salt, int(iterations), stored, server, hash_name)


GetCredentials: TypeAlias = Callable[[str], ScramCredentials | None]
"""``get_credentials(username)``: the stored keys, or ``None`` for an unknown user."""


def _prepare_password(password: str) -> bytes:
    """RFC 5802 §2.2 Normalize(): SASLprep as a stored string, then UTF-8."""
    prepared = saslprep(password)
    if not prepared:
        raise ValueError("SCRAM password is empty after SASLprep")
    return prepared.encode("utf-8")


def _salted_password(hash_: _Hash, prepared: bytes, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 §2.2 Hi(), which is PBKDF2 (RFC 8018) with the mechanism's HMAC."""
    return hashlib.pbkdf2_hmac(hash_.hashlib_name, prepared, salt, iterations)


def _client_key(hash_: _Hash, salted: bytes) -> bytes:
    return _hmac(hash_, salted, b"Client Key")


def _server_key(hash_: _Hash, salted: bytes) -> bytes:
    return _hmac(hash_, salted, b"Server Key")


def derive_scram_credentials(
    password: str,
    *,
    salt: bytes | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    hash_name: str = "SHA-256",
) -> ScramCredentials:
    """The keys a server stores for ``password`` (RFC 5802 §3).

    The password is prepared with SASLprep (RFC 4013) as a stored string, as
    RFC 5802 §2.2 requires; :class:`ValueError` if it holds prohibited or
    unassigned characters or nothing is left. ``salt`` defaults to 16 random
    octets; pass one only to reproduce known keys. ``hash_name`` is ``"SHA-256"``
    (SCRAM-SHA-256 and its ``-PLUS``) or ``"SHA-1"`` (SCRAM-SHA-1 and its
    ``-PLUS``).
    """
    hash_ = _HASHES.get(hash_name)
    if hash_ is None:
        raise ValueError(f"SCRAM hash is one of {', '.join(_HASHES)}, not {hash_name!r}")
    if salt is None:
        salt = secrets.token_bytes(16)
    if not 1 <= iterations <= _MOST_ITERATIONS:
        raise ValueError("SCRAM iteration count out of range")
    salted = _salted_password(hash_, _prepare_password(password), salt, iterations)
    client_key = _client_key(hash_, salted)
    return ScramCredentials(
        salt, iterations, _h(hash_, client_key), _server_key(hash_, salted), hash_.name
    )
