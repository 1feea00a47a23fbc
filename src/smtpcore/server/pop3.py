"""The POP3 side of the reference server: the users' Maildirs as maildrops.

:class:`~smtpcore.maildrop.MaildirStore` does the POP3 work; this store adds
what the reference server promises: the login is the full address, in any
case and however SASLprep writes it (as for SMTP AUTH), and each session
that opened a maildrop leaves one line in the mail log.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence

from smtpcore._driver._logtext import loggable
from smtpcore._threads import AUTH
from smtpcore.handler import Authenticator
from smtpcore.maildrop import (
    MAX_SIZED_BY_READING,
    Maildir,
    MaildirStore,
    Maildrop,
    MaildropError,
    MechanismFactory,
    MessageInfo,
    POP3Session,
)
from smtpcore.server.config import ServerConfig
from smtpcore.server.credentials import Credentials
from smtpcore.server.log import client_text, logger

__all__ = ["POP3Store"]

_PLAINTEXT_SECRETS = frozenset({"PLAIN", "LOGIN"})


class _LoggedMaildir(Maildir):
    """A maildrop that logs its session when it closes."""

    def __init__(self, store: POP3Store, session: POP3Session, key: str, **options: object):
        super().__init__(store.root / key, **options)  # type: ignore[arg-type]  # size_cache
        self._session = session
        self._key = key
        self._listener = store.listener
        self._start = time.monotonic()
        self._deleted = 0
        self._retrieved = 0
        self._quit = False
        self._not_updated: int | None = None
        """How many messages the client marked deleted, where its UPDATE failed or was
        given up."""
        self._given_up = False
        """The UPDATE was given up (the ``store`` timeout, a shutdown): its thread may
        go on and remove the messages, or may never have started."""
        self._not_started = False
        """QUIT's wait for earlier work (:meth:`before_update`) was given up: no
        UPDATE started."""
        self._count = 0
        self._failed: MaildropError | None = None
        """Why the maildrop could not be locked or listed: the login is refused."""

    def lock(self, *, create: bool = False) -> None:
        """Lock it; one that cannot be locked is never closed, so its line is logged
        here. That line says why (``IN-USE``, say), so the refusal is ``logged``: the
        server adds no line of its own."""
        try:
            super().lock(create=create)
        except MaildropError as exc:
            self._failed = exc
            self._log()
            exc.logged = True
            raise

    async def messages(self) -> Sequence[MessageInfo]:
        """The listing; one that fails is said in the session's line, which the close
        that follows it logs (the server closes a maildrop whose listing failed)."""
        try:
            listing = await super().messages()
        except MaildropError as exc:
            self._failed = exc
            exc.logged = True
            raise
        self._count = len(listing)
        return listing

    async def before_update(self) -> None:
        """The wait before UPDATE; one given up is said in the line: QUIT was
        refused, and nothing removed."""
        self._quit = True
        try:
            await super().before_update()
        except BaseException:
            self._not_started = True
            raise

    async def update(self, deleted: Collection[int], retrieved: Collection[int]) -> None:
        """UPDATE; the line counts the deletions only once it is done, so that it never
        claims a removal an UPDATE refused, failed or given up may not have made. One
        given up (a cancellation, not an ``Exception``) is no failure: its worker
        thread runs on, so what it removed is not known when the line is logged."""
        self._quit = True
        self._retrieved = len(retrieved)
        try:
            await super().update(deleted, retrieved)
        except Exception:
            self._not_updated = len(deleted)
            raise
        except BaseException:
            self._not_updated = len(deleted)
            self._given_up = True
            raise
        self._deleted = len(deleted)

    async def close(self) -> None:
        await super().close()
        self._log()

    def _log(self) -> None:
        """The session's line: after a login refused because the maildrop could not be
        opened, how the client logged in (its password was right) and why."""
        session = self._session
        logger.info(
            "%s: disconnect from %s user=%s method=%s tls=%s messages=%d retrieved=%d "
            "deleted=%d%s duration=%.2fs",
            self._listener,
            client_text(session),
            self._key,
            session.mechanism or "-",
            (session.tls.version or "yes") if session.tls is not None else "no",
            self._count,
            self._retrieved,
            self._deleted,
            self._ending(),
            time.monotonic() - self._start,
        )

    def _ending(self) -> str:
        failed = self._failed
        if failed is not None:
            code = f"[{failed.code}] " if failed.code else ""
            return f" (maildrop failed: {code}{loggable(str(failed))}: login refused)"
        if self._not_started:
            return " (UPDATE not started: earlier work still ran, nothing removed)"
        marked = self._not_updated
        if marked is not None and self._given_up:
            return f" (UPDATE given up: {marked} marked deleted, outcome unknown)"
        if marked is not None:
            return f" (UPDATE failed: {marked} marked deleted, none counted)"
        return "" if self._quit else " (no QUIT: nothing deleted)"


def _most_sized_by_reading(config: ServerConfig) -> int:
    """The most octets a listing reads to size message files with no ``,W=``: twice
    what SMTP takes (room for the trace headers, and for a limit lowered since), or
    the library's default when SMTP takes any size. The server names each file it
    delivers with its ``,W=``, so only files put in a mailbox by another hand are
    read, and past this budget they wait for a later login, with a WARNING (see
    :class:`~smtpcore.maildrop.Maildir`)."""
    return 2 * config.max_message_size or MAX_SIZED_BY_READING


class POP3Store(MaildirStore):
    """Each local user's Maildir under ``data_dir/mailboxes/``, logged in by address."""

    def __init__(
        self,
        config: ServerConfig,
        authenticator: Authenticator,
        listener: str = "pop3",
        *,
        credentials: Credentials | None = None,
    ) -> None:
        self.credentials = credentials or Credentials(config.users)
        super().__init__(
            config.mailboxes_dir,
            config.users,
            plaintext_sasl=not config.tls,
            max_sized_by_reading=_most_sized_by_reading(config),
        )
        self.config = config
        self.authenticator = authenticator
        self.listener = listener

    @property
    def apop(self) -> bool:
        """APOP, with its greeting timestamp, only while some user has a password in the
        clear: stored SCRAM keys cannot serve it, and a client offered it may try it
        first and fail a login at every poll. Read as each session starts."""
        return self._apop and self.credentials.has_passwords()

    @apop.setter
    def apop(self, wanted: bool) -> None:
        self._apop = wanted

    def _key(self, user: str) -> str:
        """The mailbox key for a login name, as USER gives it or SASLprep'd as AUTH does
        (:meth:`~smtpcore.server.config.ServerConfig.user_key`); an unknown or malformed
        name gives one that matches no user, so that it fails like a wrong password."""
        return self.config.user_key(user) or ""

    async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
        """USER/PASS against the password or the stored SCRAM keys; an unknown user is
        checked too, so that he takes as long as a wrong password. The check is a key
        derivation: it runs in one of the credential checks' worker threads, not
        holding the other sessions, nor the threads the spool writes run in (the
        reference server runs on asyncio)."""
        check = self.credentials.check_password
        ok = await AUTH.run_asyncio(lambda: check(user, password))
        return ok and bool(self._key(user))

    async def apop_secret(self, session: POP3Session, user: str) -> str | None:
        """APOP needs the password in the clear: none for a user with stored keys."""
        known = self.apop and bool(self._key(user))
        return self.credentials.get_password(user) if known else None

    async def is_user(self, session: POP3Session, user: str) -> bool:
        """A user of the server's, by any name that logs in as one: only then does a
        failed login's line show the name."""
        return bool(self._key(user))

    def sasl_mechanisms(self, session: POP3Session) -> Mapping[str, MechanismFactory]:
        """The same mechanisms as SMTP AUTH, without those no user could use now
        (CRAM-MD5 when every user has SCRAM keys); PLAIN and LOGIN only under TLS when
        the server has TLS (RFC 2595 §6 asks that passwords not cross in the clear)."""
        authenticator = self.authenticator
        left_out = authenticator.withheld()
        if session.tls is None and self.config.tls:
            left_out |= _PLAINTEXT_SECRETS
        mechanisms = authenticator.server_mechanisms(session.hostname)
        return {name: factory for name, factory in mechanisms.items() if name not in left_out}

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        key = self._key(user)
        if not key:
            raise MaildropError("No such maildrop", "SYS/PERM")
        maildir = _LoggedMaildir(
            self,
            session,
            key,
            size_cache=self.size_cache,
            max_sized_by_reading=self.max_sized_by_reading,
        )
        return await self._open(maildir)
