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
from collections.abc import Mapping

from smtpcore.address import AddressError, parse_mailbox
from smtpcore.sasl import ScramCredentials, derive_scram_credentials
from smtpcore.server.config import mailbox_key

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
    """Looks up users by login (the address, in any case) and checks their secrets."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = users
        self._scram: dict[str, ScramCredentials] = {}

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
        key = self.key(username)
        stored = self.users.get(key, "") if key is not None else ""
        if key is not None and is_hashed(stored):
            keys = self.get_scram(username)
            if keys is None:
                return False
            try:
                tried = derive_scram_credentials(
                    password, salt=keys.salt, iterations=keys.iterations
                )
            except ValueError:  # a password SASLprep refuses cannot be right
                return False
            return hmac.compare_digest(tried.stored_key, keys.stored_key)
        ok = hmac.compare_digest(stored.encode(), password.encode())
        return ok and key is not None

    def forget(self) -> None:
        """Drop the keys derived so far (the users changed)."""
        self._scram.clear()

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
