"""What a POP3 server asks of the application: the :class:`Mailstore` and its :class:`Maildrop`.

The asyncio and trio POP3 servers drive a :class:`~smtpcore.pop3.ServerConnection`
and ask a :class:`Mailstore` two things: who the client is (USER/PASS, APOP,
or a SASL mechanism, RFC 1939 §7 and RFC 5034) and, once it has logged in,
for the user's :class:`Maildrop`, locked for the session (RFC 1939 §4). The
classes are public as ``smtpcore.maildrop.Mailstore`` and so on, and say so in
``__module__``, as :mod:`smtpcore._maildrop_errors` does.
"""

from __future__ import annotations

import abc
import re
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
from typing import Final, TypeAlias

from smtpcore.handler import TLSInfo, _RarelySet
from smtpcore.sasl import ServerMechanism

__all__ = ["MechanismFactory", "MessageInfo", "Maildrop", "Mailstore", "POP3Session"]

MechanismFactory: TypeAlias = Callable[[], ServerMechanism]
"""See :data:`smtpcore.maildrop.MechanismFactory`."""

_UID_RE: Final = re.compile(r"[\x21-\x7e]{1,70}")


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
        if not isinstance(self.uid, str) or not _UID_RE.fullmatch(self.uid):
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


for _public in (MessageInfo, POP3Session, Maildrop, Mailstore):
    _public.__module__ = "smtpcore.maildrop"
