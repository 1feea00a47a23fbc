"""The users' secrets as SMTP AUTH and POP3 ask for them: plaintext or SCRAM keys.

A password in the users file may be given in the clear, or as the keys a
SCRAM-SHA-256 server stores (RFC 5803's ``SCRAM-SHA-256$<iterations>:<salt>$
<StoredKey>:<ServerKey>``, which ``python -m smtpcore hash-password``
prints). Those keys do not reveal the password, though whoever holds them can
log in as the user after one observed exchange (RFC 5802 §9); they serve
SCRAM-SHA-256 and the mechanisms that send the password (PLAIN, LOGIN, POP3
USER/PASS), which are checked by deriving the keys again. CRAM-MD5 and APOP need the
password itself, so a user with stored keys cannot use them.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections import Counter
from collections.abc import Mapping

from smtpcore.address import AddressError, parse_mailbox
from smtpcore.sasl import ScramCredentials, derive_scram_credentials
from smtpcore.sasl._scram import DEFAULT_ITERATIONS
from smtpcore.server.config import mailbox_key
from smtpcore.server.log import logger

__all__ = ["SCRAM_PREFIX", "Credentials", "hash_password", "is_hashed"]

SCRAM_PREFIX = "SCRAM-SHA-256$"


def is_hashed(secret: str) -> bool:
    """Whether a users-file secret is stored SCRAM keys rather than a password: anything
    that starts ``SCRAM-``, so that keys of another hash are never taken for a password
    (:class:`~smtpcore.server.config.ServerConfig` refuses all but SCRAM-SHA-256 keys)."""
    return secret.startswith("SCRAM-")


def hash_password(password: str) -> str:
    """The users-file form of ``password``: SCRAM-SHA-256 keys with a fresh salt."""
    return derive_scram_credentials(password).to_text()


class Credentials:
    """Looks up users by login (the address, in any case) and checks their secrets.

    Thread-safe: the servers call it from worker threads, several at once."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = users
        self._scram: dict[str, ScramCredentials] = {}
        self._decoy_keys: ScramCredentials | None = None
        self._decoy_lock = threading.Lock()
        """Held while the made-up keys are made: once, and logged once."""

    def key(self, username: str) -> str | None:
        """The mailbox key of a known user, else None."""
        try:
            key = mailbox_key(parse_mailbox(username))
        except (AddressError, ValueError):
            return None
        return key if key in self.users else None

    def get_password(self, username: str) -> str | None:
        """The password in the clear (CRAM-MD5, APOP); None when only keys are stored."""
        key = self.key(username)
        if key is None or is_hashed(self.users[key]):
            return None
        return self.users[key]

    def check_password(self, username: str, password: str) -> bool:
        """Whether ``password`` is the user's, at the cost of one key derivation whoever
        the user is: a known user with stored keys needs one, so a user with a password
        in the clear, an unknown user and a malformed name get one too, against made-up
        keys with the iteration count the users' keys have; otherwise the time a wrong
        password takes would tell which users exist."""
        key = self.key(username)
        stored = self.users[key] if key is not None else None
        keys = self._stored_keys(stored) if stored is not None and is_hashed(stored) else None
        against = keys if keys is not None else self._decoy()
        try:
            tried = derive_scram_credentials(
                password, salt=against.salt, iterations=against.iterations
            ).stored_key
        except ValueError:  # SASLprep refuses it: it cannot be right, but costs the same
            derive_scram_credentials("-", salt=against.salt, iterations=against.iterations)
            tried = b""
        if keys is not None:
            return hmac.compare_digest(tried, keys.stored_key)
        plain = stored if stored is not None and not is_hashed(stored) else None
        ok = hmac.compare_digest((plain or "").encode(), password.encode())
        return ok and plain is not None

    @staticmethod
    def _stored_keys(stored: str) -> ScramCredentials | None:
        """SCRAM-SHA-256 keys as the users file holds them; None for anything else
        (:class:`~smtpcore.server.config.ServerConfig` refuses it), which lets no one in."""
        try:
            keys = ScramCredentials.from_text(stored)
        except ValueError:
            return None
        return keys if keys.hash_name == "SHA-256" else None

    def _decoy(self) -> ScramCredentials:
        """Made-up keys for a user who has none: a random salt and key, and the iteration
        count most of the users' keys have (the lowest of those most have, so that a
        guessed name costs no more than a user does; that of ``hash-password`` when no
        user has keys). Nothing is derived to make them, so the first check costs what
        the others do. A user whose keys have another count answers in another time:
        that is logged, once, for the operator to make the counts one."""
        with self._decoy_lock:
            return self._decoy_made()

    def _decoy_made(self) -> ScramCredentials:
        """:meth:`_decoy`, under its lock."""
        if self._decoy_keys is None:
            counts = Counter(
                keys.iterations
                for secret in self.users.values()
                if is_hashed(secret) and (keys := self._stored_keys(secret)) is not None
            )
            iterations = max(counts, key=lambda n: (counts[n], -n), default=DEFAULT_ITERATIONS)
            if len(counts) > 1:
                logger.warning(
                    "users' keys have different iteration counts (%s): the time a failed "
                    "login takes tells apart the users whose count is not %d",
                    ", ".join(map(str, sorted(counts))),
                    iterations,
                )
            key = secrets.token_bytes(32)
            self._decoy_keys = ScramCredentials(secrets.token_bytes(16), iterations, key, key)
        return self._decoy_keys

    def decoy_iterations(self) -> int:
        """The iteration count of the made-up keys (see :meth:`_decoy`): what SCRAM shows
        for an unknown user, so that its server-first message tells no one apart."""
        return self._decoy().iterations

    def forget(self) -> None:
        """Drop the keys derived so far (the users changed)."""
        self._scram.clear()
        self._decoy_keys = None

    def get_scram(self, username: str) -> ScramCredentials | None:
        key = self.key(username)
        if key is None:
            return None
        if key not in self._scram:
            stored = self.users[key]
            try:
                self._scram[key] = (
                    ScramCredentials.from_text(stored)
                    if is_hashed(stored)
                    else derive_scram_credentials(stored)
                )
            except ValueError:
                return None
        return self._scram[key]
