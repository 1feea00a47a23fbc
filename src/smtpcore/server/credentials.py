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
from dataclasses import dataclass, field, replace

from smtpcore.sasl import ScramCredentials, derive_scram_credentials, passwords_match
from smtpcore.sasl._scram_keys import DEFAULT_ITERATIONS
from smtpcore.server.config import credential_key, credential_keys
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


@dataclass
class _Generation:
    """One set of users and what is derived from it: a reload starts a new one, so that
    a derivation still running for the old set can only fill the old set's caches."""

    users: Mapping[str, str]
    logins: Mapping[str, str]
    """Each user's credential key to the user's mailbox key (:func:`credential_keys`)."""
    clear: bool = False
    """Whether any user's secret is a password in the clear (CRAM-MD5 and APOP need one)."""
    scram: dict[str, ScramCredentials] = field(default_factory=dict)
    decoy: ScramCredentials | None = None


def _generation(users: Mapping[str, str]) -> _Generation:
    clear = not all(map(is_hashed, users.values()))
    return _Generation(users, credential_keys(users), clear=clear)


class Credentials:
    """Looks up users by login and checks their secrets.

    A login finds its user by :func:`~smtpcore.server.config.credential_key`: the
    address in any case, as SASLprep writes it or as it is typed, so that SMTP AUTH
    and POP3 AUTH (which SASLprep the name), POP3 USER and APOP (which SASLprep it
    where ``UTF8 USER`` is listed, as the server lists it) and a name as typed
    find one user. Two users one login would find are a
    :class:`~smtpcore.server.config.ConfigError`.

    Thread-safe: the servers call it from worker threads, several at once, while a
    reload (``credentials.users = new``) may swap the users. Each call works on the
    users as they were when it began, and the keys it derives are kept for those
    users alone: keys of a password a reload replaced are never used after it."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._now = _generation(users)
        self._decoy_lock = threading.Lock()
        """Held while the made-up keys are made: once a generation, and logged once."""

    @property
    def users(self) -> Mapping[str, str]:
        """The users, by mailbox key: their passwords or SCRAM keys (users-file form)."""
        return self._now.users

    @users.setter
    def users(self, users: Mapping[str, str]) -> None:
        self._now = _generation(users)

    @staticmethod
    def _key(now: _Generation, username: str) -> str | None:
        login = credential_key(username)
        return None if login is None else now.logins.get(login)

    def key(self, username: str) -> str | None:
        """The mailbox key of a known user, else None."""
        return self._key(self._now, username)

    def is_user(self, username: str) -> bool:
        """Whether ``username`` names a known user (by any spelling that logs in)."""
        return self.key(username) is not None

    def has_passwords(self) -> bool:
        """Whether any user has a password in the clear: without one, CRAM-MD5 and APOP
        can log no one in, and are not offered (a client that tries them first, as
        fetchmail does, would fail a login at every poll)."""
        return self._now.clear

    def get_password(self, username: str) -> str | None:
        """The password in the clear (CRAM-MD5, APOP); None when only keys are stored."""
        now = self._now
        key = self._key(now, username)
        stored = now.users.get(key) if key is not None else None
        return None if stored is None or is_hashed(stored) else stored

    def check_password(self, username: str, password: str) -> bool:
        """Whether ``password`` is the user's. A password in the clear is compared as
        SASLprep prepares it (:func:`~smtpcore.sasl.passwords_match`, RFC 4616 §2), as
        stored keys were derived: PLAIN, LOGIN and POP3 PASS take it in any form it is
        typed in (composed or not), as SCRAM does.

        It costs one key derivation whoever
        the user is: a known user with stored keys needs one, so a user with a password
        in the clear, an unknown user and a malformed name get one too, against made-up
        keys with the iteration count the users' keys have; otherwise the time a wrong
        password takes would tell which users exist."""
        now = self._now
        key = self._key(now, username)
        stored = now.users.get(key) if key is not None else None
        keys = self._stored_keys(stored) if stored is not None and is_hashed(stored) else None
        against = keys if keys is not None else self._decoy(now)
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
        return passwords_match(plain or "", password) and plain is not None

    @staticmethod
    def _stored_keys(stored: str) -> ScramCredentials | None:
        """SCRAM-SHA-256 keys as the users file holds them; None for anything else
        (:class:`~smtpcore.server.config.ServerConfig` refuses it), which lets no one in."""
        try:
            keys = ScramCredentials.from_text(stored)
        except ValueError:
            return None
        return keys if keys.hash_name == "SHA-256" else None

    def _decoy(self, now: _Generation) -> ScramCredentials:
        """Made-up keys for a user who has none: a random salt and key, and the iteration
        count most of the users' keys have (the lowest of those most have, so that a
        guessed name costs no more than a user does; that of ``hash-password`` when no
        user has keys). Nothing is derived to make them, so the first check costs what
        the others do. A user whose keys have another count answers in another time:
        that is logged, once, for the operator to make the counts one."""
        with self._decoy_lock:
            if now.decoy is None:
                now.decoy = self._made_up(now.users)
            return now.decoy

    def _made_up(self, users: Mapping[str, str]) -> ScramCredentials:
        """:meth:`_decoy`'s keys for ``users``."""
        counts = Counter(
            keys.iterations
            for secret in users.values()
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
        return ScramCredentials(secrets.token_bytes(16), iterations, key, key)

    def decoy_iterations(self) -> int:
        """The iteration count of the made-up keys (see :meth:`_decoy`): what SCRAM shows
        for an unknown user, so that its server-first message tells no one apart."""
        return self._decoy(self._now).iterations

    def forget(self) -> None:
        """Drop the keys derived so far (the users changed): a new generation."""
        now = self._now
        self._now = replace(now, scram={}, decoy=None)

    def get_scram(self, username: str) -> ScramCredentials | None:
        """The user's SCRAM keys: stored, or derived once from a password in the clear
        and kept for the users this call began with."""
        now = self._now
        key = self._key(now, username)
        if key is None:
            return None
        keys = now.scram.get(key)
        if keys is None:
            stored = now.users[key]
            try:
                keys = (
                    ScramCredentials.from_text(stored)
                    if is_hashed(stored)
                    else derive_scram_credentials(stored)
                )
            except ValueError:
                return None
            now.scram[key] = keys
        return keys
