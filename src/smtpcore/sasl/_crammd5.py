"""CRAM-MD5 (RFC 2195): an HMAC-MD5 of a server challenge, keyed with the password.

The password never crosses the wire, but the server must keep it (or an
equivalent of it), the exchange does not authenticate the server, and an
eavesdropper can run a dictionary attack on the response: it is better than
a password in the clear, no more.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from typing import Final, TypeAlias

from smtpcore._errors import LocalProtocolError
from smtpcore.sasl._base import DEFAULT_MAX_RESPONSE_SIZE, Challenge, SASLError, Step, _Reject
from smtpcore.sasl._base_checks import (
    _require_found,
    decode_utf8,
    encode_utf8,
    prepare_identity,
    require_str,
)
from smtpcore.sasl._base_client import ClientMechanism
from smtpcore.sasl._base_server import ServerMechanism

__all__ = ["CramMD5Client", "CramMD5Server", "GetPassword"]

GetPassword: TypeAlias = Callable[[str], str | None]
"""``get_password(username)``: the user's password, or ``None`` if unknown."""

_DIGEST: Final = re.compile(r"[0-9a-fA-F]{32}")
_ATOM: Final = re.compile(r"[!#-'*+\-/-9=?A-Z^-~]+(?:\.[!#-'*+\-/-9=?A-Z^-~]+)*")
_LITERAL: Final = re.compile(r"\[[!-Z^-~]*\]")  # an address literal, as in EHLO
# An unknown user is checked against this key, so that the work done, and the
# time taken, are the same as for a known user with a wrong password.
_DUMMY_KEY: Final = secrets.token_bytes(32)


def _key_of(password: str) -> bytes | None:
    """The HMAC key a stored ``password`` gives: its UTF-8 octets, or None for one
    no client can send (a lone surrogate, which is not UTF-8), which then matches no
    response."""
    try:
        return password.encode("utf-8")
    except UnicodeEncodeError:
        return None


def _digest(password: bytes, challenge: bytes) -> str:
    return hmac.new(password, challenge, hashlib.md5).hexdigest()


class CramMD5Client(ClientMechanism):
    """CRAM-MD5, client side: answers the one challenge with ``user SP digest``."""

    name = "CRAM-MD5"

    def __init__(self, username: str, password: str) -> None:
        super().__init__()
        self._username = encode_utf8(username, "CRAM-MD5 username")
        self._password = encode_utf8(password, "CRAM-MD5 password")
        if not username:
            raise LocalProtocolError("CRAM-MD5 needs a non-empty username")
        self._answered = False
        self._owed = "its digest"

    def _respond(self, challenge: bytes) -> bytes:
        if self._answered:
            raise SASLError("CRAM-MD5 server sent a second challenge")
        if not challenge:
            raise SASLError("CRAM-MD5 challenge is empty")
        self._answered = True
        self._owed = None
        return self._username + b" " + _digest(self._password, challenge).encode("ascii")


class CramMD5Server(ServerMechanism):
    """CRAM-MD5, server side (RFC 2195 §2).

    The challenge is ``<nonce@hostname>`` in msg-id form; ``nonce`` defaults
    to two random numbers (the RFC's example uses a process id and a clock,
    which this layer does not read) and is injectable for tests. The
    response is the user name, a space and 32 hex digits (matched without
    regard to case, in constant time). The user name is prepared with SASLprep
    as a query before ``get_password`` sees it, as the other mechanisms' are;
    the password is the HMAC key as it is (RFC 2195 prepares nothing, and the
    client keys with the password it has), in UTF-8: a stored password that is not
    (a lone surrogate) matches no response, an ordinary failed login, as PLAIN and
    LOGIN, which read the client's password as UTF-8, never match it either.
    ``get_password`` giving anything but a str or None is its own mistake
    (``callback_error``). CRAM-MD5 is server-first: an initial
    response ends the exchange with :class:`~smtpcore.sasl.UnexpectedInitialResponse`
    (RFC 4954 §4 answers it with 501).
    """

    name = "CRAM-MD5"
    server_first = True

    def __init__(
        self,
        get_password: GetPassword,
        hostname: str,
        *,
        nonce: str | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        super().__init__(max_response_size=max_response_size)
        if nonce is None:
            nonce = f"{secrets.randbits(48)}.{secrets.randbits(48)}"
        if not _ATOM.fullmatch(require_str(nonce, "CRAM-MD5 nonce")):
            raise LocalProtocolError("CRAM-MD5 nonce must be a dot-atom")
        require_str(hostname, "CRAM-MD5 hostname")
        if not (_ATOM.fullmatch(hostname) or _LITERAL.fullmatch(hostname)):
            raise LocalProtocolError("CRAM-MD5 hostname must be a domain or address literal")
        self._get_password = get_password
        self.challenge: Final = f"<{nonce}@{hostname}>".encode("ascii")

    def _start(self, initial_response: bytes | None) -> Step:
        return Challenge(self.challenge)

    def _step(self, response: bytes) -> Step:
        username, _, digest = decode_utf8(response, "CRAM-MD5 response").rpartition(" ")
        self._named = username or None
        if not username or not _DIGEST.fullmatch(digest):
            raise _Reject("CRAM-MD5 response is not 'user digest'")
        username = prepare_identity(username, "CRAM-MD5 user name")
        password = _require_found(self._get_password(username), str, "get_password")
        secret = None if password is None else _key_of(password)
        expected = _digest(_DUMMY_KEY if secret is None else secret, self.challenge)
        self._no_secret = password is None  # a stored password is a secret, if not UTF-8
        if not hmac.compare_digest(expected, digest.lower()) or secret is None:
            raise _Reject("invalid credentials")
        return self._succeed("", username)
