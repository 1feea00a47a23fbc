"""What a POP3 server serves: the :class:`Mailstore` an application writes, and Maildir.

The asyncio and trio POP3 servers drive a :class:`~smtpcore.pop3.ServerConnection`
and ask a :class:`Mailstore` two things: who the client is (USER/PASS, APOP,
or a SASL mechanism, RFC 1939 §7 and RFC 5034) and, once it has logged in,
for the user's :class:`Maildrop`, locked for the session (RFC 1939 §4). The
maildrop lists its messages with their sizes and unique ids, streams one in
chunks, and removes the ones marked deleted in the UPDATE state, which only a
QUIT reaches (RFC 1939 §6): a connection that drops deletes nothing.

:class:`MaildirStore` serves one Maildir per user (the tmp/new/cur layout of
qmail, read the way Dovecot reads it), and :class:`Maildir` is that
maildrop. One store serves both adapters: the Maildir's blocking work (its
listing, UPDATE) runs in a worker thread of whichever framework runs it.
"""

from __future__ import annotations

import abc
import os
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, TypeAlias

from smtpcore import _maildir_listing, _maildir_read
from smtpcore._maildir_content import _ReadsContent
from smtpcore._maildir_entry import _Entry
from smtpcore._maildir_found import FoundAgain
from smtpcore._maildir_listing import UID_RE, delivery_order
from smtpcore._maildir_open import _cannot_open, _Opened, _take_lock
from smtpcore._maildir_update_step import _Updates
from smtpcore._maildrop_errors import MaildropError, MaildropInUse, MessageUnavailable
from smtpcore._pop3_size import WireSize, pop3_size
from smtpcore._rarely_set import _RarelySet
from smtpcore.handler import TLSInfo
from smtpcore.sasl import (
    CramMD5Server,
    LoginServer,
    PlainServer,
    ScramCredentials,
    ScramSHA256PlusServer,
    ScramSHA256Server,
    ServerMechanism,
    derive_scram_credentials,
    passwords_match,
    saslprep_login,
)

__all__ = [
    "MAX_SIZED_BY_READING",
    "READ_SIZE",
    "Maildir",
    "MaildirStore",
    "Maildrop",
    "MaildropError",
    "MaildropInUse",
    "Mailstore",
    "MechanismFactory",
    "MessageInfo",
    "MessageUnavailable",
    "POP3Session",
    "delivery_order",
    "pop3_size",
    "WireSize",
]

# The public constants are named here, where their documentation is read.
MechanismFactory: TypeAlias = Callable[[], ServerMechanism]
"""Builds a fresh server mechanism for one ``AUTH`` command."""
READ_SIZE: Final = _maildir_read.READ_SIZE
"""Bytes read from a message file at a time: one chunk of a streamed RETR."""
MAX_SIZED_BY_READING: Final = _maildir_listing.MAX_SIZED_BY_READING
"""The default reading budget (1 GiB) of a :class:`Maildir` listing: the most octets it
reads, in all, to size the files whose names have no ``,W=`` (about 8 s of a worker
thread), and so the largest such file it reads."""


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message of a maildrop as LIST and UIDL show it (RFC 1939 §5, §7)."""

    size: int
    """Octets as the message goes over POP3: CRLF line ends, before dot-stuffing."""
    uid: str
    """The unique-id listing: 1 to 70 printable ASCII characters, the same in every
    session for as long as the message exists (RFC 1939 §7)."""

    def __post_init__(self) -> None:
        if type(self.size) is not int or self.size < 0:
            raise ValueError(f"a message size is a non-negative int: {self.size!r}")
        if not isinstance(self.uid, str) or not UID_RE.fullmatch(self.uid):
            raise ValueError(f"a unique-id is 1 to 70 printable ASCII characters: {self.uid!r}")


@dataclass(slots=True, eq=False)
class POP3Session(_RarelySet):
    """One POP3 connection, as far as the :class:`Mailstore` needs to know it."""

    hostname: str
    """This server's own name, as used in the greeting."""
    peer: tuple[str, int] | None = None
    """The client's address and port: from the connection, or a trusted proxy's PROXY
    header."""
    local: tuple[str, int] | None = None
    """The address and port the client connected to; an IPv4 address as such, as in
    ``peer``, though a dual-stack socket gives it IPv4-mapped (``::ffff:192.0.2.1``)."""
    tls: TLSInfo | None = None
    """Set once TLS is up, by STLS or on connect."""
    user: str | None = None
    """The user logged in as; ``None`` until a login succeeds."""
    mechanism: str | None = None
    """How the user logged in: ``"USER"``, ``"APOP"`` or a SASL mechanism name. Set
    once the credentials are right, before :meth:`Mailstore.open_maildrop` (which may
    read it, and whose maildrop, closed, may log it), and back to ``None`` if the
    maildrop cannot be opened and listed: the session is then still in the
    AUTHORIZATION state (RFC 1939 §4)."""


class Maildrop(abc.ABC):
    """One user's messages, opened and locked for one session.

    The server lists the messages once, at login: message ``n`` of the
    session is ``messages()[n - 1]`` until the session ends, whatever
    arrives meanwhile (RFC 1939 §5). :meth:`close` is always called at the
    end, after :meth:`update` if the client said QUIT, and alone if not.
    """

    @abc.abstractmethod
    async def messages(self) -> Sequence[MessageInfo]:
        """The messages, in order; called once per session. Each is a
        :class:`MessageInfo`, and no unique-id comes twice (RFC 1939 §7): the
        server refuses the login otherwise (``-ERR [SYS/TEMP]``, logged)."""

    @abc.abstractmethod
    def open(self, number: int) -> AsyncIterator[bytes] | Iterator[bytes]:
        """Message ``number`` (1-based) as chunks of its content.

        An async iterator (an async generator, say) when reading may wait on
        the event loop (a network store): the server reads it under the
        ``store`` timeout. A plain iterator (a generator) when reading never
        waits for the loop (a file on a local disk, as :class:`Maildir` reads):
        the server then reads it as it comes, without the cost of a deadline,
        since a blocking read could not be interrupted anyway. An object that
        is both (as :class:`Maildir` gives for a message it must seek off the
        loop first) is read, and closed, as an async one: with its ``aclose``,
        as a plain one is with its ``close``, where it has one.

        Line ends may be CRLF or bare LF: the server machine sends every line
        end as CRLF, and :func:`pop3_size` counts the size the same way. The
        server calls it and takes the first chunk before it answers ``+OK``, so
        an error raised by either (:class:`MessageUnavailable`), or a first chunk
        that is not bytes, becomes ``-ERR``. Empty chunks are skipped; 65,536 of
        them in a row are a failure to read (an iterator that never ends). The
        generator's cleanup (``aclose``) runs under the ``store`` timeout too.
        """

    @abc.abstractmethod
    async def update(self, deleted: Collection[int], retrieved: Collection[int]) -> None:
        """The UPDATE state (RFC 1939 §6): remove the messages numbered ``deleted``.

        Called only after QUIT in the TRANSACTION state. ``retrieved`` are
        the messages sent whole by RETR, for a store that marks them seen.
        Raise :class:`MaildropError` if some could not be removed.
        """

    async def before_update(self) -> None:  # noqa: B027 - most have nothing to wait for
        """Wait for what must end before :meth:`update` may start: work an earlier
        command gave up on (its ``store`` timeout passed) that still runs, say. The
        server calls it after QUIT, under the ``store`` timeout, and then
        :meth:`update` under a ``store`` timeout of its own, so that UPDATE never
        starts with a deadline this wait has used up: a QUIT refused because this
        wait passed its timeout started no UPDATE."""

    async def close(self) -> None:  # noqa: B027 - a maildrop without a lock needs nothing
        """Release the lock; the session is over. Called under the ``store``
        timeout, as every hook."""


class Mailstore:
    """Base class of what a POP3 server serves: override the hooks you need.

    Each way of logging in is offered only when its hook is overridden:
    :meth:`check_password` offers USER/PASS, :meth:`apop_secret` offers
    APOP (while :attr:`apop` is true), and :meth:`sasl_mechanisms` offers
    AUTH. :meth:`open_maildrop` is required. Hooks run in the event loop, one
    at a time per session.
    """

    apop: bool = True
    """Whether a store that overrides :meth:`apop_secret` offers APOP: false, and the
    greeting carries no timestamp (RFC 1939 §7) and APOP is refused as a command
    the server does not know, rather than as a failed login. Read as each session
    starts, so that a store may turn it off while no user has a secret in the clear."""

    async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
        """USER/PASS (RFC 1939 §7): is ``password`` right for ``user``? Only ``True``
        logs in, and ``False`` is the client's failed login; anything else (``None``,
        an unawaited coroutine) is the store's mistake, answered ``-ERR [SYS/TEMP]``."""
        return False

    async def apop_secret(self, session: POP3Session, user: str) -> str | None:
        """APOP (RFC 1939 §7): the secret shared with ``user`` in the clear, or ``None``.

        APOP proves knowledge of the secret with an MD5 digest, so the server
        must hold the plaintext secret: offer it only from a store that does.
        Anything but a str or ``None`` is the store's mistake, answered
        ``-ERR [SYS/TEMP]``.
        """
        return None

    async def is_user(self, session: POP3Session, user: str) -> bool:
        """Whether ``user``, a name a client gave (USER, APOP, an AUTH exchange), names
        one of the store's users. A failed login's log line shows the name only then,
        and ``user=<>`` otherwise: a client may type a password where the name is
        due. Asked only after a failed login; by default no name is shown."""
        return False

    def sasl_mechanisms(
        self, session: POP3Session
    ) -> Mapping[str, MechanismFactory] | Awaitable[Mapping[str, MechanismFactory]]:
        """AUTH (RFC 5034): the SASL mechanisms to offer, by name, strongest first.

        An :class:`~smtpcore.handler.Authenticator`'s ``server_mechanisms(hostname)``
        is one answer. A successful exchange logs in as its ``authzid``. Override
        it as a plain method (a fixed table needs no wait) or, like the other
        hooks, as a coroutine (``async def``), which the server awaits.
        """
        return {}

    @abc.abstractmethod
    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        """The maildrop of ``user``, who just logged in, locked for this session.

        Raise :class:`MaildropInUse` when another session holds it, or
        :class:`MaildropError` when it cannot be opened.
        """


# Maildir keeps the Maildrop interface and its documentation; the machinery of each
# concern is a base class in a module of its own: the folders and lock file held for
# the session (_maildir_folders), the session's listing (_maildir_listed), a message
# found again under a new name (_maildir_find_again), the content RETR and TOP read
# (_maildir_content) and UPDATE (_maildir_update_step).
class Maildir(_ReadsContent, _Updates, Maildrop):
    """A Maildir (``tmp``, ``new``, ``cur``) as a POP3 maildrop.

    Opening takes an exclusive ``flock`` on ``smtpcore-pop3.lock`` in the
    Maildir, so a second session (in this process or another) gets
    ``-ERR [IN-USE]``; the kernel drops the lock if the process dies. The
    listing is taken once, from ``new`` and ``cur``. Sizes come from
    Dovecot's ``,W=`` field when the name has one (Dovecot counts a bare CR as
    one octet and adds no CRLF to an unended last line, both of which are sent
    as CRLF: such a file is listed a few octets short, and a RETR of it, sent
    whole, or a TOP that reads it to its end, logs a WARNING naming it, as does
    one of a ``,W=`` another program wrote wrong), else from reading the
    file once (remembered in ``size_cache`` by inode, size and mtime, until the
    message is deleted; at most 100,000 sizes). LIST must give exact octets (RFC
    1939 §5, §11), which no number known without reading the file is (Dovecot too
    reads the whole file for its size unless told to list a wrong one,
    ``pop3_fast_size_lookups``); and a user who can write into his Maildir makes
    sparse files of any size, as many as he likes, in a moment. So each listing
    has a reading budget, ``max_sized_by_reading`` octets (1 GiB by default): the
    files to be read (those whose size is not cached) are read the smallest first,
    each costing its ``st_size``, and one the budget has no room left for is left
    out, unread, to be listed at a later login once the sizes read before it are
    cached; a file larger than the whole budget is never listed. Such files stay
    on disk, and one WARNING a listing names the first and counts the others. The
    budget bounds what one listing reads (about 8 s of a worker thread at 1 GiB),
    not how often: each login of the user may cost it again (a ``touch`` makes the
    cached sizes stale), one at a time, since the lock admits one session.

    Files are never renamed or removed before UPDATE: then the messages
    marked deleted are removed, and the rest of ``new`` moves to ``cur``,
    with the ``S`` (seen) flag on those retrieved, as Dovecot does. A message
    another reader renamed meanwhile is found again by its unique name. Two
    files of one unique name (a copy beside a rename) are listed as one
    message, the first found that can be sized (``cur`` is read before ``new``;
    one that cannot gives way to the next), and a warning
    names both (one warning a listing, counting the other such files): a
    unique-id is one message's (RFC 1939 §7). Only
    regular files are messages: a symbolic link is not followed, nor a FIFO
    opened. Nor is a link in place of ``cur``, ``new`` or the lock file (a link
    that is the Maildir's own directory is the operator's, and is followed):
    each is opened once, at :meth:`lock` (or at the first use of a maildrop not
    locked), and every file named relative to its folder's descriptor (``openat``,
    ``renameat``: no path is checked and then used), until
    :meth:`close`. A locked maildrop holds four descriptors meanwhile.

    The listing and UPDATE, which touch every file, run in a worker thread
    (asyncio's or trio's, one of the store's own four), so that a maildrop of
    100,000 messages does not
    hold the other sessions for seconds. A wait given up (the store timeout,
    a shutdown) leaves the thread to finish; a :meth:`close` meanwhile
    releases the lock when it has, so that no other session lists a maildrop
    still being updated, and no work is left with folder descriptors closed
    under it. Whenever work of the maildrop is in flight (its caller waiting
    or not), no other starts: the next waits for it to land, within its own
    caller's deadline, so that one session holds one of the store's threads
    at most (UPDATE waits in :meth:`before_update`, so that it starts with a
    deadline of its own). Each removal is an ``lstat`` then an ``unlink`` (for each
    name of the message's file), and each move a ``link`` then such a removal of
    the old name (where hard links are refused, a ``rename`` onto a name found
    free), never replacing a file: UPDATE cut short leaves every message whole,
    deleted or not.
    Reading a message (RETR, TOP) stays in the event loop, a chunk at a time (finding
    one that another reader renamed, a listing of ``new`` and ``cur``, is the worker
    thread's: see :meth:`open`), and stops a read's worth (:data:`READ_SIZE`) past the
    listed size: a file larger than that when it is opened is ``-ERR``
    (:class:`MessageUnavailable`), one that grows past it while it is sent ends the
    session, the message unfinished; a WARNING names the file either way, once a
    session for each message, as it does a file that cannot be opened or read.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        size_cache: dict[tuple[int, int, int, int], int] | None = None,
        max_sized_by_reading: int = MAX_SIZED_BY_READING,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self._size_cache = {} if size_cache is None else size_cache
        self.max_sized_by_reading = max_sized_by_reading
        """The most octets a listing reads, in all, to size the message files with no
        ``,W=``; a file it has no room left for is left out this time, with a
        WARNING."""
        self._opened: _Opened | None = None
        """Its directories and lock file, from :meth:`lock` (or the first use of a
        maildrop not locked) to :meth:`close`."""
        self._entries: list[_Entry] | None = None
        self._listed_in: frozenset[str] = frozenset()
        """The names of the folders the listing was taken from."""
        self._refused: set[str] = set()
        """The unique-ids of the messages whose file RETR or TOP could not read, which
        a WARNING has named in this session: asked again, they are refused again with
        no new line, once a session as :class:`Unlisted` is once a listing, however
        often a client asks."""
        self._missized_uids: set[str] = set()
        """The unique-ids of the messages RETR (or a TOP to the end) read whole to another
        size than the one listed (a ``,W=`` that lies), which a WARNING has named in this
        session."""

    # -- session (the folders held: _maildir_folders) ------------------

    def lock(self, *, create: bool = False) -> None:
        """Open the Maildir and take its lock, or raise :class:`MaildropInUse`; with
        ``create``, make the Maildir and its folders first where they are missing.

        The Maildir's own directory, ``cur``, ``new`` and the lock file are opened
        here, once, and the last three never through a symbolic link (``O_NOFOLLOW``):
        a link or another file in their place is
        :class:`MaildropError` ``SYS/PERM``, logged. While a worker thread still works
        on the maildrop (a close waits for it), the lock is refused, as another
        session's is, for it would close the descriptors the thread works through.

        The lock always opens the Maildir anew, so that a maildrop first used unlocked
        (when ``cur`` was missing, say) works through what the lock made and opened; a
        refused lock closes only what it opened, and the maildrop goes on as it was.
        The listing is kept while every folder it named is there again, and taken
        anew if one is gone."""
        with self._guard:
            if self._opened is not None and self._opened.lock is not None and not self._closed:
                return
            if self._landing is not None:
                raise MaildropInUse("The maildrop is still in use by its session's last work")
            opened = self._open_anew(create=create)
            try:
                opened.lock = _take_lock(opened.root)
            except OSError as exc:
                opened.close()
                raise _cannot_open(self.path, exc) from exc
            except BaseException:
                opened.close()
                raise
            self._work_through(opened)
            self._closed = False

    async def close(self) -> None:
        """Release the lock now, or, while a worker thread still works on the maildrop
        (its caller stopped waiting), when that thread is done. A plain read blocked
        on that thread's work is refused at once ("The session is over")."""
        self._close()

    async def before_update(self) -> None:
        """Wait for the work in flight (a search given up) to land."""
        await self._no_flight(take=False)

    # -- listing (kept: _maildir_listed) --------------------------------

    async def messages(self) -> Sequence[MessageInfo]:
        if self._entries is None:
            self._entries = await self._in_thread(self._scan)
        return [MessageInfo(entry.size, entry.uid) for entry in self._entries]

    # -- content (read: _maildir_content, _maildir_find_again) ----------

    def open(self, number: int) -> Iterator[bytes]:
        """The message's file in chunks of :data:`READ_SIZE` (blocking reads), no more
        of it than its listed size and a read's worth, however the file grows: a message
        file is never changed once delivered, and the client was told its size (RFC
        1939 §5). Past that it is :class:`MessageUnavailable`: ``-ERR`` before the
        first chunk, and the session's end after it, the message unfinished (no
        ``.``: the client knows it is cut, and deletes nothing). A file that cannot be
        opened or read is refused the same way: :class:`MaildropError`, ``SYS/PERM``
        for a permission, ``SYS/TEMP`` for a cause a retry may cure (``EIO``). Either
        is ``logged``, and named in a WARNING once a session for each message.

        The file is opened here, at its listed name, and a plain generator reads it
        (closed, or dropped unread, it closes the file). One no longer there (another
        reader renamed it) is found again by its unique name, a listing of ``new/``
        and ``cur/``: the chunks are then an iterator that is an async iterator too,
        and read as one (as the server reads them) they have the listing made in the
        store's worker thread, off the event loop (once other work of the maildrop
        in flight has landed, as the class says); read plainly, on the calling
        thread, as that work too (other work in flight is waited for, blocking; on an
        event loop's thread the read is refused instead, :class:`MaildropError`). The
        file found is opened at the first read; closed before it, the
        chunks give nothing."""
        try:
            fd, size = self._open_listed(number)
        except FileNotFoundError:
            return FoundAgain(
                find=lambda: self._sought_again(number),
                read=lambda: self._found_content(number),
                in_thread=self._in_thread,
                now=self._in_this_thread,
            )
        return self._content(number, fd, size)

    # -- UPDATE (_maildir_update_step) ----------------------------------

    async def update(self, deleted: Collection[int], retrieved: Collection[int]) -> None:
        await self._in_thread(lambda: self._update(deleted, retrieved))


def _login_name(name: str) -> str:
    """How :class:`MaildirStore` compares user names: SASLprep'd as a query (RFC 4013,
    RFC 3454 §7), an address's domain aside, as its SASL mechanisms give them
    (:func:`~smtpcore.sasl.saslprep_login`); a name SASLprep refuses or
    empties is kept as it is."""
    try:
        return saslprep_login(name) or name
    except ValueError:
        return name


class MaildirStore(Mailstore):
    """Each user's Maildir under ``root`` (``root/<user>``), with passwords in memory.

    ``passwords`` maps user names to their secrets, which serve USER/PASS,
    APOP, and the SASL mechanisms PLAIN and LOGIN (offered under TLS
    only unless ``plaintext_sasl``), CRAM-MD5, SCRAM-SHA-256 and
    SCRAM-SHA-256-PLUS (offered only where the TLS layer gives channel binding
    data, see :mod:`smtpcore.transport`); PASS, PLAIN and LOGIN compare the
    password as SASLprep prepares it (:func:`~smtpcore.sasl.passwords_match`),
    as SCRAM does. ``apop`` turns APOP off. A reference implementation: subclass it, or write a
    :class:`Mailstore`, to check credentials against a real user database.

    A user is found by the name SASLprep'd as a query (RFC 4013), on every path:
    the SASL mechanisms give it prepared (RFC 5802 §5.1, RFC 4616 §2), USER and
    APOP too where ``UTF8 USER`` is listed (RFC 6856 §2.2) and as typed where it
    is not, and either way ``ｱｲ`` (halfwidth) finds the user ``アイ`` or ``ｱｲ``,
    ``ﬁona`` the user ``fiona`` or ``ﬁona``. The names in ``passwords`` are
    prepared so when it is given (a name SASLprep refuses, such as one with a
    private-use character, is kept as it is: AUTH and a ``UTF8 USER`` server's
    USER and APOP refuse it, USER and APOP without ``UTF8 USER`` find it typed as
    stored); two names that prepare alike are a
    :class:`ValueError`. The mapping is
    read-only: assign a new one to change the users. A user's Maildir is named
    as in ``passwords``, whichever way the login wrote the name.

    Each user's :class:`Maildir` is listed at login, and updated at QUIT, in a
    worker thread of the framework that serves it (asyncio or trio): the
    ``store`` timeout ends the wait, and the lock is kept until the thread is
    done. The sizes read from files are shared by all sessions in
    ``size_cache``. ``max_sized_by_reading`` is each :class:`Maildir`'s reading budget:
    the most octets one listing reads to size the message files with no ``,W=``
    (those it has no room for are left out this time, with a WARNING).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        passwords: Mapping[str, str],
        *,
        apop: bool = True,
        plaintext_sasl: bool = False,
        max_sized_by_reading: int = MAX_SIZED_BY_READING,
    ) -> None:
        self.root = Path(root)
        self.passwords = passwords
        self.apop = apop
        self.plaintext_sasl = plaintext_sasl
        self.max_sized_by_reading = max_sized_by_reading
        self.size_cache: dict[tuple[int, int, int, int], int] = {}

    @property
    def passwords(self) -> Mapping[str, str]:
        """The users' secrets, by user name as given."""
        return self._passwords

    @passwords.setter
    def passwords(self, passwords: Mapping[str, str]) -> None:
        names: dict[str, str] = {}
        for name in passwords:
            other = names.setdefault(_login_name(name), name)
            if other != name:
                raise ValueError(
                    f"users {other!r} and {name!r} log in by one name, {_login_name(name)!r} "
                    "(user names are compared as SASLprep, RFC 4013, prepares them)"
                )
        self._passwords: Mapping[str, str] = MappingProxyType(dict(passwords))
        self._names = names
        self._scram: dict[str, ScramCredentials] = {}

    def _user(self, login: str) -> str | None:
        """The name in :attr:`passwords` of the user ``login`` names, or None."""
        name = self._names.get(_login_name(login))
        return name if name is not None and self._user_ok(name) else None

    def _secret(self, login: str) -> str | None:
        name = self._user(login)
        return None if name is None else self._passwords[name]

    def _user_ok(self, user: str) -> bool:
        return bool(user) and "/" not in user and user not in (".", "..") and "\x00" not in user

    async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
        stored = self._secret(user)
        return passwords_match(stored or "", password) and stored is not None

    async def apop_secret(self, session: POP3Session, user: str) -> str | None:
        return self._secret(user) if self.apop else None

    async def is_user(self, session: POP3Session, user: str) -> bool:
        return self._user(user) is not None

    def sasl_mechanisms(self, session: POP3Session) -> Mapping[str, MechanismFactory]:
        def check(authzid: str, authcid: str, password: str) -> bool:
            stored = self._secret(authcid)
            return passwords_match(stored or "", password) and stored is not None

        def scram(user: str) -> ScramCredentials | None:
            name = self._user(user)
            if name is None:
                return None
            if name not in self._scram:
                self._scram[name] = derive_scram_credentials(self._passwords[name])
            return self._scram[name]

        mechanisms: dict[str, MechanismFactory] = {
            "SCRAM-SHA-256-PLUS": lambda: ScramSHA256PlusServer(scram),
            "SCRAM-SHA-256": lambda: ScramSHA256Server(scram),
            "CRAM-MD5": lambda: CramMD5Server(self._secret, session.hostname),
        }
        if session.tls is not None or self.plaintext_sasl:
            mechanisms["PLAIN"] = lambda: PlainServer(check)
            mechanisms["LOGIN"] = lambda: LoginServer(check)
        return mechanisms

    def maildir(self, user: str) -> Maildir:
        """The Maildir of ``user`` (not yet locked)."""
        return Maildir(
            self.root / user,
            size_cache=self.size_cache,
            max_sized_by_reading=self.max_sized_by_reading,
        )

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        """The Maildir of the user ``user`` names (see :attr:`passwords`), or of
        ``user`` as given when it names none (a subclass that checks credentials
        elsewhere)."""
        name = self._user(user) or user
        if not self._user_ok(name):
            raise MaildropError("No such maildrop", "SYS/PERM")
        return await self._open(self.maildir(name))

    async def _open(self, maildrop: Maildir) -> Maildir:
        """Lock the Maildir, made first if need be (a user with no mail yet has an empty
        maildrop), and take its listing."""
        maildrop.lock(create=True)
        try:
            await maildrop.messages()
        except BaseException:
            await maildrop.close()
            raise
        return maildrop
